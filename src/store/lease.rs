//! Feed leases and the scheduler's memory: who may run a feed now (the
//! daemon or `regfeed once`, never both), the last fire time the scheduler
//! handled, and the facts `regfeed status` shows.
//!
//! A lease is a row taken, renewed and released by compare-and-set on
//! (holder, token); its token grows by one at every acquisition so that a
//! holder that lost its lease can tell. Only feed names, holder ids (process
//! ids) and times are stored here.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Result, Store};

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub feed: String,
    pub holder: String,
    /// The fencing token: larger than every earlier holder's.
    pub token: i64,
}

/// Why a lease was not granted.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it until the given time.
    #[error("feed {feed} is being run by {holder} (lease until {until})")]
    Held {
        feed: String,
        holder: String,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// The latest run of a feed, as `regfeed status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A holder id `<role>:<pid>` names a process on this machine; it is gone
/// when `/proc/<pid>` is (Linux). Anything else is never presumed gone.
fn holder_is_gone(holder: &str) -> bool {
    let Some(pid) = holder
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u32>().ok())
    else {
        return false;
    };
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && pid != std::process::id() && !proc.join(pid.to_string()).exists()
}

impl Store {
    /// Takes the feed's lease for `ttl` if it is free (never taken, released
    /// or expired).
    pub async fn acquire_lease(
        &self,
        feed: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> std::result::Result<Lease, LeaseError> {
        let now = Utc::now();
        let until = millis(now) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let row = sqlx::query(
            "INSERT INTO leases (feed, holder, token, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (feed) DO UPDATE
                SET holder = excluded.holder, token = leases.token + 1,
                    expires_at = excluded.expires_at
                WHERE leases.expires_at <= ?4
             RETURNING token",
        )
        .bind(feed)
        .bind(holder)
        .bind(until)
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map_err(super::StoreError::from)?;
        if let Some(row) = row {
            return Ok(Lease {
                feed: feed.to_owned(),
                holder: holder.to_owned(),
                token: row.get(0),
            });
        }
        let row = sqlx::query("SELECT holder, expires_at FROM leases WHERE feed = ?")
            .bind(feed)
            .fetch_one(self.pool())
            .await
            .map_err(super::StoreError::from)?;
        // The SQLite store is one machine's: a holder whose process is gone
        // (killed, crashed) cannot renew, so its lease is taken over at once
        // instead of waiting for it to expire. Compare-and-set on the holder
        // keeps two takers from both winning.
        let current: String = row.get(0);
        if holder_is_gone(&current) {
            let taken = sqlx::query(
                "UPDATE leases SET holder = ?1, token = token + 1, expires_at = ?2
                 WHERE feed = ?3 AND holder = ?4 RETURNING token",
            )
            .bind(holder)
            .bind(until)
            .bind(feed)
            .bind(&current)
            .fetch_optional(self.pool())
            .await
            .map_err(super::StoreError::from)?;
            if let Some(t) = taken {
                tracing::warn!(feed = %feed, previous = %current, "Took over the lease of a process that is gone.");
                return Ok(Lease {
                    feed: feed.to_owned(),
                    holder: holder.to_owned(),
                    token: t.get(0),
                });
            }
        }
        Err(LeaseError::Held {
            feed: feed.to_owned(),
            holder: row.get(0),
            until: DateTime::from_timestamp_millis(row.get(1)).unwrap_or(now),
        })
    }

    /// Extends a lease this holder still has; `false` if it was lost.
    pub async fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Result<bool> {
        let now = Utc::now();
        let until = millis(now) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // The token proves the lease is still ours: every acquisition by
        // anyone raises it. A lease that ran past its expiry while the store
        // was busy (a long staging transaction holds SQLite's write lock) but
        // that nobody took is still ours, and is renewed.
        let done = sqlx::query(
            "UPDATE leases SET expires_at = ? WHERE feed = ? AND holder = ? AND token = ?",
        )
        .bind(until)
        .bind(&lease.feed)
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease back; `false` if it had already been lost.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE feed = ? AND holder = ? AND token = ?",
        )
        .bind(&lease.feed)
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The last fire time the scheduler handled for the feed, and the
    /// schedule it was computed from.
    pub async fn last_fire(&self, feed: &str) -> Result<Option<(DateTime<Utc>, String)>> {
        let row = sqlx::query("SELECT last_fire, schedule FROM schedule_state WHERE feed = ?")
            .bind(feed)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(|r| {
            let t: String = r.get(0);
            DateTime::parse_from_rfc3339(&t)
                .ok()
                .map(|t| (t.with_timezone(&Utc), r.get(1)))
        }))
    }

    pub async fn set_last_fire(&self, feed: &str, at: DateTime<Utc>, schedule: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_state (feed, last_fire, schedule) VALUES (?, ?, ?)
             ON CONFLICT (feed) DO UPDATE SET last_fire = excluded.last_fire, schedule = excluded.schedule",
        )
        .bind(feed)
        .bind(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .bind(schedule)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The feed's latest run, if it ever ran.
    pub async fn last_run(&self, feed: &str) -> Result<Option<RunSummary>> {
        let row = sqlx::query(
            "SELECT started_at, finished_at, outcome FROM runs WHERE feed = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(feed)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| RunSummary {
            started_at: r.get(0),
            finished_at: r.get(1),
            outcome: r.get(2),
        }))
    }

    /// Batches per feed and state.
    pub async fn batch_state_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT feed, state, COUNT(*) FROM batches GROUP BY feed, state ORDER BY feed, state",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Closes the feed's runs still marked running (the process stopped
    /// them, or died): they rolled back and are recorded as `outcome`.
    pub async fn close_open_runs(&self, feed: &str, outcome: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = ?, finished_at = ? WHERE feed = ? AND outcome = 'running'",
        )
        .bind(outcome)
        .bind(super::now())
        .bind(feed)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Who holds the feed's lease now, if anyone.
    pub async fn lease_holder(&self, feed: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT holder FROM leases WHERE feed = ? AND expires_at > ?")
            .bind(feed)
            .bind(millis(Utc::now()))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.expect("store opens");
        (dir, store)
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_and_each_acquisition_a_larger_token() {
        let (_d, s) = store().await;
        let ttl = Duration::from_secs(60);
        let a = s.acquire_lease("f", "daemon:1", ttl).await.expect("free");
        assert_eq!(a.token, 1);
        let refused = s.acquire_lease("f", "once:2", ttl).await;
        assert!(
            matches!(&refused, Err(LeaseError::Held { holder, .. }) if holder == "daemon:1"),
            "{refused:?}"
        );
        // Other feeds are independent.
        assert!(s.acquire_lease("g", "once:2", ttl).await.is_ok());
        assert!(s.renew_lease(&a, ttl).await.expect("renew"));
        assert!(s.release_lease(&a).await.expect("release"));
        let b = s.acquire_lease("f", "once:2", ttl).await.expect("released");
        assert_eq!(b.token, 2);
        // The old holder is fenced off: it can neither renew nor release.
        assert!(!s.renew_lease(&a, ttl).await.expect("renew"));
        assert!(!s.release_lease(&a).await.expect("release"));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let (_d, s) = store().await;
        let a = s
            .acquire_lease("f", "daemon:1", Duration::ZERO)
            .await
            .expect("free");
        let b = s
            .acquire_lease("f", "once:2", Duration::from_secs(60))
            .await
            .expect("expired");
        assert!(b.token > a.token);
        assert!(
            !s.renew_lease(&a, Duration::from_secs(60))
                .await
                .expect("renew")
        );
    }

    #[tokio::test]
    async fn the_last_fire_is_remembered() {
        let (_d, s) = store().await;
        assert_eq!(s.last_fire("f").await.expect("read"), None);
        let t = DateTime::parse_from_rfc3339("2027-03-28T01:00:00.250Z")
            .expect("time")
            .with_timezone(&Utc);
        s.set_last_fire("f", t, "0 3 * * *").await.expect("write");
        assert_eq!(
            s.last_fire("f").await.expect("read"),
            Some((t, "0 3 * * *".to_owned()))
        );
    }
}
