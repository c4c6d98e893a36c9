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
    /// How long the lease lasts unless renewed.
    pub ttl: std::time::Duration,
}

tokio::task_local! {
    static FENCE: Vec<Lease>;
    static FIRE: String;
}

/// Runs `work` as the run for the scheduled fire `at`: the run it starts
/// records the fire ([`Store::start_run`]), so the run log shows each fire's
/// runs.
pub async fn for_fire<F: std::future::Future>(at: DateTime<Utc>, work: F) -> F::Output {
    FIRE.scope(fire_key(at), work).await
}

pub(super) fn current_fire() -> Option<String> {
    FIRE.try_with(String::clone).ok()
}

/// Runs `work` fenced by `lease`: every store transaction committed inside
/// it (on this task) first checks, under a lock on the lease's row, that the
/// lease is still this holder's ([`super::Tx::commit`]). A holder that was
/// paused or cut off past its lease while another took over cannot commit.
/// Fenced work inside fenced work is fenced by both leases (`regfeed once`
/// holds the feed's lease and its outbox's).
pub async fn fenced<F: std::future::Future>(lease: Lease, work: F) -> F::Output {
    let mut all = current_fences();
    all.push(lease);
    FENCE.scope(all, work).await
}

/// The outermost lease the current task's commits are fenced by, if any:
/// the one a run holds.
pub(super) fn current_fence() -> Option<Lease> {
    FENCE.try_with(|f| f.first().cloned()).ok().flatten()
}

/// Every lease the current task's commits are fenced by.
pub(super) fn current_fences() -> Vec<Lease> {
    FENCE.try_with(Vec::clone).unwrap_or_default()
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

/// A fire time as the `fires` table keys it.
fn fire_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A holder id `<role>:<pid>[@<tag>]` names a process on this machine; it is gone
/// when `/proc/<pid>` is (Linux). Anything else is never presumed gone.
fn holder_is_gone(holder: &str) -> bool {
    let Some(pid) = holder
        .rsplit_once(':')
        .and_then(|(_, p)| p.split('@').next()?.parse::<u32>().ok())
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
            "INSERT INTO leases (feed, holder, token, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (feed) DO UPDATE
                SET holder = excluded.holder, token = leases.token + 1,
                    expires_at = excluded.expires_at
                WHERE leases.expires_at <= $4
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
                ttl,
            });
        }
        let row = sqlx::query("SELECT holder, expires_at FROM leases WHERE feed = $1")
            .bind(feed)
            .fetch_one(self.pool())
            .await
            .map_err(super::StoreError::from)?;
        // The SQLite store is one machine's: a holder whose process is gone
        // (killed, crashed) cannot renew, so its lease is taken over at once
        // instead of waiting for it to expire. Compare-and-set on the holder
        // keeps two takers from both winning. Replicas sharing PostgreSQL run
        // on other machines: there a lease is only ever taken once expired.
        let current: String = row.get(0);
        if self.backend == super::Backend::Sqlite && holder_is_gone(&current) {
            let taken = sqlx::query(
                "UPDATE leases SET holder = $1, token = token + 1, expires_at = $2
                 WHERE feed = $3 AND holder = $4 RETURNING token",
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
                    ttl,
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
    pub async fn renew_lease(&self, lease: &Lease) -> Result<bool> {
        let now = Utc::now();
        let until = millis(now) + i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // The token proves the lease is still ours: every acquisition by
        // anyone raises it. Whether an expired one may still be renewed is
        // the backend's (`Backend::lease_still_running_after`).
        let done = sqlx::query(
            "UPDATE leases SET expires_at = $1 WHERE feed = $2 AND holder = $3 AND token = $4 AND expires_at > $5",
        )
        .bind(until)
        .bind(&lease.feed)
        .bind(&lease.holder)
        .bind(lease.token)
        .bind(self.backend.lease_still_running_after(now))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease back; `false` if it had already been lost.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE feed = $1 AND holder = $2 AND token = $3",
        )
        .bind(&lease.feed)
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Says this process is alive (the daemon does so every third of its
    /// lease time); a replica whose last word is older than a lease is
    /// presumed gone, and its claimed fires are taken over.
    pub async fn heartbeat(&self, holder: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (holder, started_at, seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (holder) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(holder)
        .bind(super::now())
        .bind(millis(Utc::now()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Claims one scheduled fire of a feed for `holder`. Every replica
    /// computes the same fire times; exactly one claim of each succeeds.
    pub async fn claim_fire(
        &self,
        feed: &str,
        fire_at: DateTime<Utc>,
        holder: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "INSERT INTO fires (feed, fire_at, holder, state, claimed_at) VALUES ($1, $2, $3, 'running', $4)
             ON CONFLICT (feed, fire_at) DO NOTHING RETURNING holder",
        )
        .bind(feed)
        .bind(fire_key(fire_at))
        .bind(holder)
        .bind(super::now())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Marks a claimed fire as done (its run finished, whatever the outcome).
    pub async fn finish_fire(
        &self,
        feed: &str,
        fire_at: DateTime<Utc>,
        holder: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE fires SET state = 'done' WHERE feed = $1 AND fire_at = $2 AND holder = $3",
        )
        .bind(feed)
        .bind(fire_key(fire_at))
        .bind(holder)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether the fire is still claimed by `holder` and not done (not
    /// taken over by another replica meanwhile).
    pub async fn fire_is_held_by(
        &self,
        feed: &str,
        fire_at: DateTime<Utc>,
        holder: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM fires WHERE feed = $1 AND fire_at = $2 AND holder = $3 AND state = 'running'",
        )
        .bind(feed)
        .bind(fire_key(fire_at))
        .bind(holder)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Takes over the fires of `feed` claimed by a replica that stopped
    /// beating more than `silence` ago, holds no live lease of the feed, and
    /// never finished them; returns the fire times now this holder's. A run
    /// that ends marks its fire done in the same transaction
    /// ([`Store::finish_run`]), so a fire whose run finished is never taken.
    ///
    /// Each take-over is a compare-and-set on the fire's old holder, read
    /// first: one taker wins each fire. (Not one `UPDATE` with the silence
    /// test correlated to the row: under PostgreSQL's read committed, a
    /// second taker that waited on the first one's row lock re-checks only
    /// the row, not a correlated `NOT EXISTS`, and would win too.)
    pub async fn take_over_fires(
        &self,
        feed: &str,
        holder: &str,
        silence: std::time::Duration,
    ) -> Result<Vec<DateTime<Utc>>> {
        let now = millis(Utc::now());
        let before = now - i64::try_from(silence.as_millis()).unwrap_or(i64::MAX / 2);
        // A replica that is slow to beat (a busy machine) but still renews
        // its lease is alive: its fire is left to it.
        let silent = "NOT EXISTS (SELECT 1 FROM replicas r WHERE r.holder = fires.holder AND r.seen_at > $3)
              AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.feed = fires.feed AND l.holder = fires.holder AND l.expires_at > $4)";
        let candidates = sqlx::query(&format!(
            "SELECT fire_at, holder FROM fires
             WHERE feed = $1 AND state = 'running' AND holder <> $2 AND {silent}
             ORDER BY fire_at"
        ))
        .bind(feed)
        .bind(holder)
        .bind(before)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut taken = Vec::new();
        for c in candidates {
            let (fire_at, old): (String, String) = (c.get(0), c.get(1));
            let won = sqlx::query(
                "UPDATE fires SET holder = $1, takeovers = takeovers + 1
                 WHERE feed = $2 AND fire_at = $3 AND holder = $4 AND state = 'running'
                   AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.holder = $4 AND r.seen_at > $5)
                   AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.feed = $2 AND l.holder = $4 AND l.expires_at > $6)",
            )
            .bind(holder)
            .bind(feed)
            .bind(&fire_at)
            .bind(&old)
            .bind(before)
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected()
                == 1;
            if won && let Ok(t) = DateTime::parse_from_rfc3339(&fire_at) {
                taken.push(t.with_timezone(&Utc));
            }
        }
        Ok(taken)
    }

    /// The last fire time the scheduler handled for the feed, and the
    /// schedule it was computed from.
    pub async fn last_fire(&self, feed: &str) -> Result<Option<(DateTime<Utc>, String)>> {
        let row = sqlx::query("SELECT last_fire, schedule FROM schedule_state WHERE feed = $1")
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
            "INSERT INTO schedule_state (feed, last_fire, schedule) VALUES ($1, $2, $3)
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
            "SELECT started_at, finished_at, outcome FROM runs WHERE feed = $1 ORDER BY id DESC LIMIT 1",
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
    /// them, or died): they rolled back and are recorded as `outcome`. With
    /// a holder, only that holder's runs (a replica closing its own aborted
    /// run must not touch another's); without, every one (at start, under
    /// the feed's lease, when any run still open is a dead process's).
    pub async fn close_open_runs(
        &self,
        feed: &str,
        holder: Option<&str>,
        outcome: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = $1, finished_at = $2 WHERE feed = $3 AND outcome = 'running'
               AND ($4 IS NULL OR holder = $4)",
        )
        .bind(outcome)
        .bind(super::now())
        .bind(feed)
        .bind(holder)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Who holds the feed's lease now, if anyone.
    pub async fn lease_holder(&self, feed: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT holder FROM leases WHERE feed = $1 AND expires_at > $2")
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
        assert!(s.renew_lease(&a).await.expect("renew"));
        assert!(s.release_lease(&a).await.expect("release"));
        let b = s.acquire_lease("f", "once:2", ttl).await.expect("released");
        assert_eq!(b.token, 2);
        // The old holder is fenced off: it can neither renew nor release.
        assert!(!s.renew_lease(&a).await.expect("renew"));
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
        assert!(!s.renew_lease(&a).await.expect("renew"));
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// Starts (and with `outcome`, finishes) the run of fire `t` as `holder`
    /// under its lease of feed "f", then gives the lease back.
    async fn run_for(s: &Store, holder: &str, t: DateTime<Utc>, outcome: Option<&str>) {
        let lease = s
            .acquire_lease("f", holder, Duration::from_secs(60))
            .await
            .expect("lease");
        fenced(
            lease.clone(),
            for_fire(t, async {
                let id = s.start_run("f").await.expect("start");
                if let Some(o) = outcome {
                    s.finish_run(id, o, "{}").await.expect("finish");
                }
            }),
        )
        .await;
        assert!(s.release_lease(&lease).await.expect("release"));
    }

    #[tokio::test]
    async fn each_fire_is_claimed_once() {
        let (_d, s) = store().await;
        let t = at("2026-11-23T00:53:00Z");
        assert!(s.claim_fire("f", t, "daemon:1@a").await.expect("claim"));
        assert!(!s.claim_fire("f", t, "daemon:2@b").await.expect("claim"));
        // Another feed's fire at the same time is another fire.
        assert!(s.claim_fire("g", t, "daemon:2@b").await.expect("claim"));
    }

    #[tokio::test]
    async fn a_fire_is_held_until_it_is_done_or_taken_over() {
        let (_d, s) = store().await;
        let (t1, t2) = (at("2026-11-23T00:53:00Z"), at("2026-11-23T00:54:00Z"));
        for t in [t1, t2] {
            assert!(s.claim_fire("f", t, "daemon:1@a").await.expect("claim"));
            assert!(s.fire_is_held_by("f", t, "daemon:1@a").await.expect("read"));
            assert!(!s.fire_is_held_by("f", t, "daemon:2@b").await.expect("read"));
        }
        s.finish_fire("f", t1, "daemon:1@a").await.expect("done");
        assert!(
            !s.fire_is_held_by("f", t1, "daemon:1@a")
                .await
                .expect("read")
        );
        s.heartbeat("daemon:2@b").await.expect("beat");
        let taken = s
            .take_over_fires("f", "daemon:2@b", Duration::ZERO)
            .await
            .expect("take over");
        assert_eq!(taken, vec![t2]);
        assert!(
            !s.fire_is_held_by("f", t2, "daemon:1@a")
                .await
                .expect("read")
        );
        assert!(
            s.fire_is_held_by("f", t2, "daemon:2@b")
                .await
                .expect("read")
        );
    }

    #[tokio::test]
    async fn a_fire_whose_run_finished_is_never_taken_over() {
        let (_d, s) = store().await;
        let silence = Duration::ZERO;
        // Holder a claims two fires and falls silent: it finishes the run of
        // the first (and is killed before it could say anything else), and
        // dies inside the run of the second.
        let (t1, t2) = (at("2026-11-23T00:53:00Z"), at("2026-11-23T00:54:00Z"));
        for t in [t1, t2] {
            assert!(s.claim_fire("f", t, "daemon:1@a").await.expect("claim"));
        }
        run_for(&s, "daemon:1@a", t1, Some("ok")).await;
        run_for(&s, "daemon:1@a", t2, None).await;
        s.heartbeat("daemon:2@b").await.expect("beat");
        let taken = s
            .take_over_fires("f", "daemon:2@b", silence)
            .await
            .expect("take over");
        assert_eq!(taken, vec![t2], "only the unfinished fire");
        // Taken once: a third replica finds nothing while b beats.
        s.heartbeat("daemon:2@b").await.expect("beat");
        let again = s
            .take_over_fires("f", "daemon:3@c", Duration::from_secs(60))
            .await
            .expect("take over");
        assert!(again.is_empty(), "{again:?}");
        // The old holder's run, should it still end, does not mark the fire
        // that is now b's; b's own does.
        run_for(&s, "daemon:2@b", t2, Some("ok")).await;
        let states: Vec<(String, String)> =
            sqlx::query("SELECT fire_at, state FROM fires ORDER BY fire_at")
                .fetch_all(s.pool())
                .await
                .expect("fires")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        assert_eq!(
            states,
            [
                ("2026-11-23T00:53:00Z".to_owned(), "done".to_owned()),
                ("2026-11-23T00:54:00Z".to_owned(), "done".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_fire_whose_holder_still_has_its_lease_is_left_to_it() {
        let (_d, s) = store().await;
        let t = at("2026-11-23T00:53:00Z");
        assert!(s.claim_fire("f", t, "daemon:1@a").await.expect("claim"));
        // No heartbeat from a (a busy machine), but its lease is live.
        let lease = s
            .acquire_lease("f", "daemon:1@a", Duration::from_secs(60))
            .await
            .expect("lease");
        let taken = s
            .take_over_fires("f", "daemon:2@b", Duration::ZERO)
            .await
            .expect("take over");
        assert!(taken.is_empty(), "{taken:?}");
        assert!(s.release_lease(&lease).await.expect("release"));
        let taken = s
            .take_over_fires("f", "daemon:2@b", Duration::ZERO)
            .await
            .expect("take over");
        assert_eq!(taken, vec![t]);
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
