//! The outbox's delivery half: batch states after sealing and the record
//! of every delivery attempt (migration 0002). States: `staged` → `sealed`
//! → `sending` → `delivered` | `dead`; a dead batch goes back to `sealed`
//! (or `staged`, to be re-sealed) only by an operator's retry.

use sqlx::Row;

use super::{Result, Store, now};

fn now_ms() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub attempt: i64,
    pub kind: String,
    pub data_sha256: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub error_class: Option<String>,
    pub detail: Option<String>,
    pub latency_ms: Option<i64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    /// `delivered`, `retry` or `dead`.
    pub outcome: &'static str,
    pub http_status: Option<u16>,
    pub error_class: Option<String>,
    /// Sanitised error text (no content, no secrets).
    pub detail: Option<String>,
    pub latency_ms: i64,
}

/// A feed's batches by state, and dead letters and conflicts ever seen
/// (for metrics and `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    pub feed: String,
    pub staged: i64,
    pub sealed: i64,
    pub sending: i64,
    pub delivered: i64,
    pub dead: i64,
    /// Attempts that made a batch dead, ever.
    pub dead_total: i64,
    /// Attempts the receiver refused as a conflict (409), ever.
    pub conflicts_total: i64,
    pub attempts_total: i64,
}

/// A batch as `outbox list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxEntry {
    pub feed: String,
    pub seq: i64,
    pub state: String,
    pub created_at: String,
    pub sealed_at: Option<String>,
    pub delivered_at: Option<String>,
    pub records: i64,
    pub data_bytes: Option<i64>,
    pub data_sha256: Option<String>,
    pub attempts: i64,
    pub first_attempt_at: Option<String>,
    pub dead_at: Option<String>,
    pub dead_reason: Option<String>,
    pub receipt_id: Option<String>,
    pub reseals: i64,
}

impl Store {
    /// Starts an attempt: records it as running and, for a `send`, moves the
    /// batch to `sending` (starting its retry budget on the first attempt).
    /// Returns the attempt number and when the first attempt started.
    pub async fn begin_attempt(
        &self,
        feed: &str,
        seq: i64,
        kind: &str,
        data_sha256: &str,
    ) -> Result<(i64, String)> {
        let mut tx = self.begin().await?;
        let started = now_ms();
        // Write first, so the transaction takes SQLite's write lock (and
        // waits for it) instead of failing to upgrade a read.
        let attempt: i64 = sqlx::query(
            "INSERT INTO delivery_attempts (feed, seq, attempt, kind, data_sha256, started_at, outcome) SELECT $1, $2, COALESCE(MAX(attempt), 0) + 1, $3, $4, $5, 'running' FROM delivery_attempts WHERE feed = $1 AND seq = $2 RETURNING attempt",
        )
        .bind(feed)
        .bind(seq)
        .bind(kind)
        .bind(data_sha256)
        .bind(&started)
        .fetch_one(tx.conn())
        .await?
        .get(0);
        if kind == "send" {
            sqlx::query(
                "UPDATE batches SET state = 'sending', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, $1) WHERE feed = $2 AND seq = $3 AND state IN ('sealed', 'sending')",
            )
            .bind(&started)
            .bind(feed)
            .bind(seq)
            .execute(tx.conn())
            .await?;
        }
        let first: Option<String> =
            sqlx::query("SELECT first_attempt_at FROM batches WHERE feed = $1 AND seq = $2")
                .bind(feed)
                .bind(seq)
                .fetch_optional(tx.conn())
                .await?
                .and_then(|r| r.get(0));
        tx.commit().await?;
        Ok((attempt, first.unwrap_or(started)))
    }

    /// Ends an attempt that neither delivered nor killed the batch (or a
    /// replay attempt).
    pub async fn end_attempt(
        &self,
        feed: &str,
        seq: i64,
        attempt: i64,
        end: &AttemptEnd,
        receipt: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE delivery_attempts SET finished_at = $1, outcome = $2, http_status = $3, error_class = $4, detail = $5, latency_ms = $6, receipt = $7 WHERE feed = $8 AND seq = $9 AND attempt = $10",
        )
        .bind(now_ms())
        .bind(end.outcome)
        .bind(end.http_status.map(i64::from))
        .bind(&end.error_class)
        .bind(&end.detail)
        .bind(end.latency_ms)
        .bind(receipt)
        .bind(feed)
        .bind(seq)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the register's receipt: the attempt and the batch, together.
    pub async fn record_delivered(
        &self,
        feed: &str,
        seq: i64,
        attempt: i64,
        end: &AttemptEnd,
        receipt: &str,
        receipt_id: Option<&str>,
    ) -> Result<()> {
        self.end_attempt(feed, seq, attempt, end, Some(receipt))
            .await?;
        sqlx::query(
            "UPDATE batches SET state = 'delivered', delivered_at = $1, receipt = $2, receipt_id = $3 WHERE feed = $4 AND seq = $5 AND state IN ('sealed', 'sending')",
        )
        .bind(now())
        .bind(receipt)
        .bind(receipt_id)
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes a batch dead: it is not retried until an operator says so.
    pub async fn mark_dead(
        &self,
        feed: &str,
        seq: i64,
        attempt: i64,
        end: &AttemptEnd,
        reason: &str,
    ) -> Result<()> {
        self.end_attempt(feed, seq, attempt, end, None).await?;
        sqlx::query(
            "UPDATE batches SET state = 'dead', dead_at = $1, dead_reason = $2 WHERE feed = $3 AND seq = $4 AND state IN ('sealed', 'sending')",
        )
        .bind(now())
        .bind(reason)
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An operator's retry of a dead batch whose sealed bytes stand: back to
    /// `sealed` with a fresh retry budget. False if it was not dead.
    pub async fn reopen_dead(&self, feed: &str, seq: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE batches SET state = 'sealed', first_attempt_at = NULL, dead_at = NULL, dead_reason = NULL WHERE feed = $1 AND seq = $2 AND state = 'dead'",
        )
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Unseals a never-delivered batch so it is sealed again (same
    /// sequence, new digests). False if it was delivered or staged.
    pub async fn reset_to_staged(&self, feed: &str, seq: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE batches SET state = 'staged', sealed_at = NULL, data_file = NULL, data_bytes = NULL, data_sha256 = NULL, manifest_sha256 = NULL, first_attempt_at = NULL, dead_at = NULL, dead_reason = NULL, reseals = reseals + 1 WHERE feed = $1 AND seq = $2 AND state IN ('sealed', 'sending', 'dead')",
        )
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every attempt of a batch, in order.
    pub async fn attempts(&self, feed: &str, seq: i64) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT attempt, kind, data_sha256, started_at, finished_at, outcome, http_status, error_class, detail, latency_ms FROM delivery_attempts WHERE feed = $1 AND seq = $2 ORDER BY attempt",
        )
        .bind(feed)
        .bind(seq)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Attempt {
                attempt: r.get(0),
                kind: r.get(1),
                data_sha256: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
                outcome: r.get(5),
                http_status: r.get(6),
                error_class: r.get(7),
                detail: r.get(8),
                latency_ms: r.get(9),
            })
            .collect())
    }

    /// The outbox as `outbox list` shows it.
    pub async fn outbox(&self, feed: Option<&str>) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT feed, seq, state, created_at, sealed_at, delivered_at, upserts + retracts, data_bytes, data_sha256, attempts, first_attempt_at, dead_at, dead_reason, receipt_id, reseals FROM batches WHERE ($1 IS NULL OR feed = $1) ORDER BY feed, seq",
        )
        .bind(feed)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxEntry {
                feed: r.get(0),
                seq: r.get(1),
                state: r.get(2),
                created_at: r.get(3),
                sealed_at: r.get(4),
                delivered_at: r.get(5),
                records: r.get(6),
                data_bytes: r.get(7),
                data_sha256: r.get(8),
                attempts: r.get(9),
                first_attempt_at: r.get(10),
                dead_at: r.get(11),
                dead_reason: r.get(12),
                receipt_id: r.get(13),
                reseals: r.get(14),
            })
            .collect())
    }

    /// Per feed: batches by state, dead letters and conflicts ever. What the
    /// metrics exporter and `status` read.
    pub async fn outbox_counts(&self) -> Result<Vec<OutboxCounts>> {
        let mut out: std::collections::BTreeMap<String, OutboxCounts> = Default::default();
        for r in sqlx::query("SELECT feed, state, COUNT(*) FROM batches GROUP BY feed, state")
            .fetch_all(&self.pool)
            .await?
        {
            let feed: String = r.get(0);
            let state: String = r.get(1);
            let n: i64 = r.get(2);
            let c = out.entry(feed.clone()).or_insert_with(|| OutboxCounts {
                feed,
                ..OutboxCounts::default()
            });
            match state.as_str() {
                "staged" => c.staged = n,
                "sealed" => c.sealed = n,
                "sending" => c.sending = n,
                "delivered" => c.delivered = n,
                "dead" => c.dead = n,
                _ => {}
            }
        }
        for r in sqlx::query(
            "SELECT feed, COUNT(*), SUM(CASE WHEN outcome = 'dead' THEN 1 ELSE 0 END), SUM(CASE WHEN error_class = 'conflict' THEN 1 ELSE 0 END) FROM delivery_attempts GROUP BY feed",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let feed: String = r.get(0);
            let c = out.entry(feed.clone()).or_insert_with(|| OutboxCounts {
                feed,
                ..OutboxCounts::default()
            });
            c.attempts_total = r.get(1);
            c.dead_total = r.get::<Option<i64>, _>(2).unwrap_or(0);
            c.conflicts_total = r.get::<Option<i64>, _>(3).unwrap_or(0);
        }
        Ok(out.into_values().collect())
    }
}

impl Store {
    /// Remembers the digest of the rows a batch was sealed from.
    pub async fn set_rows_digest(&self, feed: &str, seq: i64, digest: &str) -> Result<()> {
        sqlx::query("UPDATE batches SET rows_sha256 = $1 WHERE feed = $2 AND seq = $3")
            .bind(digest)
            .bind(feed)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The digest of the rows a batch was sealed from, if recorded.
    pub async fn rows_digest(&self, feed: &str, seq: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT rows_sha256 FROM batches WHERE feed = $1 AND seq = $2")
                .bind(feed)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?
                .and_then(|r| r.get(0)),
        )
    }
}

/// One feed's outbox in brief, for the metrics ([`Store::outbox_summary`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    pub feed: String,
    /// Staged, sealed or sending.
    pub backlog: i64,
    pub dead: i64,
    /// Dead batches the receiver holds with other content.
    pub conflicts: i64,
    /// When the oldest batch not delivered (dead included) was staged.
    pub oldest_undelivered: Option<String>,
    pub last_delivered: Option<String>,
    /// Batches that became dead, and attempts refused as a conflict, ever.
    pub dead_total: i64,
    pub conflicts_total: i64,
}

/// A feed's runs in brief, for the metrics ([`Store::run_times`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTimes {
    pub feed: String,
    /// When its last successful (`ok` or `waiting`) run finished.
    pub last_ok: Option<String>,
    pub last_failed: Option<String>,
    /// When its first run started.
    pub first_started: Option<String>,
}

impl Store {
    /// Every feed's outbox in brief: a few grouped queries, cheap enough to
    /// run at every scrape.
    pub async fn outbox_summary(&self) -> Result<Vec<OutboxSummary>> {
        let mut out: std::collections::BTreeMap<String, OutboxSummary> = Default::default();
        fn entry(
            out: &mut std::collections::BTreeMap<String, OutboxSummary>,
            feed: String,
        ) -> &mut OutboxSummary {
            out.entry(feed.clone()).or_insert_with(|| OutboxSummary {
                feed,
                ..OutboxSummary::default()
            })
        }
        for r in sqlx::query(
            "SELECT feed, state, COUNT(*), MIN(created_at), SUM(CASE WHEN dead_reason LIKE 'conflict:%' THEN 1 ELSE 0 END) FROM batches WHERE state <> 'delivered' GROUP BY feed, state",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let state: String = r.get(1);
            let n: i64 = r.get(2);
            let oldest: Option<String> = r.get(3);
            let conflicts: Option<i64> = r.get(4);
            let s = entry(&mut out, r.get(0));
            if state == "dead" {
                s.dead += n;
                s.conflicts += conflicts.unwrap_or(0);
            } else {
                s.backlog += n;
            }
            if let Some(o) = oldest
                && s.oldest_undelivered.as_ref().is_none_or(|m| o < *m)
            {
                s.oldest_undelivered = Some(o);
            }
        }
        for r in sqlx::query(
            "SELECT feed, MAX(delivered_at) FROM batches WHERE state = 'delivered' GROUP BY feed",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let last: Option<String> = r.get(1);
            entry(&mut out, r.get(0)).last_delivered = last;
        }
        for r in sqlx::query(
            "SELECT feed, outcome, error_class, COUNT(*) FROM delivery_attempts WHERE outcome IN ('dead', 'failed') GROUP BY feed, outcome, error_class",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let outcome: String = r.get(1);
            let class: Option<String> = r.get(2);
            let n: i64 = r.get(3);
            let s = entry(&mut out, r.get(0));
            if outcome == "dead" {
                s.dead_total += n;
            }
            if class.as_deref() == Some("conflict") {
                s.conflicts_total += n;
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every feed's last successful and failed run, and its first run.
    pub async fn run_times(&self) -> Result<Vec<RunTimes>> {
        let rows = sqlx::query(
            "SELECT feed, MAX(CASE WHEN outcome IN ('ok', 'waiting') THEN finished_at END), MAX(CASE WHEN outcome = 'failed' THEN finished_at END), MIN(started_at) FROM runs GROUP BY feed",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RunTimes {
                feed: r.get(0),
                last_ok: r.get(1),
                last_failed: r.get(2),
                first_started: r.get(3),
            })
            .collect())
    }
}
