//! Running one feed under its lease: take the lease (waiting a bounded time),
//! renew it while the run goes on, stop the run if the lease is lost or the
//! daemon's grace period is over, give it back. Both `regfeed run` and
//! `regfeed once` go through here, so the two never run a feed at once.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{App, OnceReport};
use crate::store::{Lease, LeaseError, Store};

/// How long a lease lasts unless renewed (`daemon.lease_ttl`'s default);
/// renewed every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a waiting taker asks again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// A process's lease holder id: its role, process id and a random tag drawn
/// once per process (`daemon:4711@9f3a01c2`). Replicas on other machines may
/// share a process id; the tag tells them apart. No host or user name:
/// nothing personal.
pub fn holder_id(role: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static TAG: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish() as u32
    });
    format!("{role}:{}@{tag:08x}", std::process::id())
}

/// The feed's lease is someone else's.
#[derive(Debug, thiserror::Error)]
#[error("feed {feed} is being run by {holder}; try again later")]
pub struct LeaseRefused {
    pub feed: String,
    pub holder: String,
}

/// Takes the feed's lease, asking again for up to `wait`.
pub(super) async fn acquire(
    store: &Store,
    feed: &str,
    holder: &str,
    ttl: Duration,
    wait: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<Lease> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match store.acquire_lease(feed, holder, ttl).await {
            Ok(l) => return Ok(l),
            Err(LeaseError::Held { feed, holder, .. }) => {
                if tokio::time::Instant::now() + LEASE_POLL > deadline {
                    return Err(LeaseRefused { feed, holder }.into());
                }
                tokio::select! {
                    _ = stop.cancelled() => return Err(LeaseRefused { feed, holder }.into()),
                    _ = tokio::time::sleep(LEASE_POLL) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How work under a lease ended.
#[derive(Debug)]
pub(super) enum Leased<T> {
    Done(T),
    /// `stop` fired or the lease was lost: the work was dropped (its open
    /// transaction rolled back).
    Aborted(&'static str),
}

/// Runs `work` while renewing `lease`, its commits fenced by it
/// ([`crate::store::fenced`]); gives the lease back after.
///
/// The renewal is a task of its own, not polled inside the work's: a run
/// that computes for a while between two awaits (decoding a group of
/// documents) or waits for the store's write lock keeps its lease all the
/// same, while the process lives. It stops before the lease is given back,
/// so a late renewal can never extend a released lease.
pub(super) async fn under_lease<T>(
    store: &Store,
    lease: Lease,
    stop: &CancellationToken,
    work: impl Future<Output = T>,
) -> Leased<T> {
    let lost = CancellationToken::new();
    let done = CancellationToken::new();
    let renewer = tokio::spawn(renew_until(
        store.clone(),
        lease.clone(),
        done.clone(),
        lost.clone(),
    ));
    let out = {
        let work = crate::store::fenced(lease.clone(), work);
        tokio::select! {
            biased;
            r = work => Leased::Done(r),
            _ = stop.cancelled() => Leased::Aborted("stopped"),
            _ = lost.cancelled() => Leased::Aborted("lease lost"),
        }
        // The work (and any transaction it holds) is dropped here, before
        // the lease goes.
    };
    done.cancel();
    // A renewal stuck on an unreachable store is not waited for past a
    // lease: the lease is over by then anyway.
    let abort = renewer.abort_handle();
    if tokio::time::timeout(lease.ttl, renewer).await.is_err() {
        abort.abort();
    }
    if !lost.is_cancelled()
        && let Err(e) = store.release_lease(&lease).await
    {
        tracing::warn!(feed = %lease.feed, error = %e, "Could not release the feed's lease; it expires on its own.");
    }
    out
}

/// Renews `lease` every third of its time until `done`; cancels `lost` and
/// returns if it was lost. A renewal under way when `done` fires is finished
/// first. A renewal that fails (the store unreachable) is tried again at the
/// next tick: the lease lasts until its time is out.
async fn renew_until(store: Store, lease: Lease, done: CancellationToken, lost: CancellationToken) {
    let mut tick = tokio::time::interval(lease.ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.renew_lease(&lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(feed = %lease.feed, error = %e, "Could not renew the feed's lease.");
            }
        }
    }
}

/// `regfeed once` under the feed's lease and its outbox's: waits up to
/// `wait` for each (a daemon's run of the feed, its outbox loop's pass),
/// else refuses ([`LeaseRefused`]).
pub async fn once_leased(app: &App, feed: &str, wait: Duration) -> anyhow::Result<OnceReport> {
    let stop = CancellationToken::new();
    let holder = holder_id("once");
    let ttl = app.cfg.daemon.lease_ttl;
    let lease = acquire(&app.store, feed, &holder, ttl, wait, &stop).await?;
    let outbox = super::outbox::outbox_lease(feed);
    let delivery = match acquire(&app.store, &outbox, &holder, ttl, wait, &stop).await {
        Ok(l) => l,
        Err(e) => {
            let _ = app.store.release_lease(&lease).await;
            return Err(e);
        }
    };
    let work = under_lease(&app.store, delivery, &stop, app.once(feed));
    match under_lease(&app.store, lease, &stop, work).await {
        Leased::Done(Leased::Done(r)) => r,
        Leased::Done(Leased::Aborted(why)) | Leased::Aborted(why) => {
            let _ = app
                .store
                .close_open_runs(feed, Some(&holder), "aborted")
                .await;
            anyhow::bail!("run of {feed} aborted: {why}")
        }
    }
}

/// An operator's `outbox retry` or `outbox replay` under the feed's outbox
/// lease, so that it never sends or reseals a batch while the daemon's
/// outbox loop works on the same feed: waits up to `wait` for a pass to end,
/// else refuses ([`LeaseRefused`]).
pub async fn outbox_leased<T>(
    app: &App,
    feed: &str,
    wait: Duration,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let stop = CancellationToken::new();
    let holder = holder_id("outbox-cli");
    let outbox = super::outbox::outbox_lease(feed);
    let lease = acquire(
        &app.store,
        &outbox,
        &holder,
        app.cfg.daemon.lease_ttl,
        wait,
        &stop,
    )
    .await?;
    match under_lease(&app.store, lease, &stop, work).await {
        Leased::Done(r) => r,
        Leased::Aborted(why) => anyhow::bail!("outbox command for {feed} aborted: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        (dir, Store::open(&url).await.expect("store opens"))
    }

    const TTL: Duration = Duration::from_millis(600);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_computes_past_the_lease_time_keeps_its_lease() {
        let (_d, s) = store().await;
        let lease = s.acquire_lease("f", "daemon:1@a", TTL).await.expect("free");
        let stop = CancellationToken::new();
        let out = under_lease(&s, lease, &stop, async {
            // Busy without an await for well over the lease time.
            std::thread::sleep(TTL * 3);
            s.acquire_lease("f", "once:2@b", TTL).await
        })
        .await;
        match out {
            Leased::Done(Err(LeaseError::Held { holder, .. })) => assert_eq!(holder, "daemon:1@a"),
            other => panic!("the lease was not kept: {other:?}"),
        }
        // Given back at the end: free at once.
        assert!(s.acquire_lease("f", "once:2@b", TTL).await.is_ok());
    }

    #[tokio::test]
    async fn work_whose_lease_is_lost_is_aborted() {
        let (_d, s) = store().await;
        let lease = s.acquire_lease("f", "daemon:1@a", TTL).await.expect("free");
        // Another holder takes it (as after an expiry on PostgreSQL).
        sqlx::query("UPDATE leases SET holder = 'daemon:2@b', token = token + 1 WHERE feed = 'f'")
            .execute(s.pool())
            .await
            .expect("steal");
        let stop = CancellationToken::new();
        let out = tokio::time::timeout(
            TTL * 10,
            under_lease(&s, lease, &stop, std::future::pending::<()>()),
        )
        .await
        .expect("aborted in time");
        assert!(matches!(out, Leased::Aborted("lease lost")), "{out:?}");
        // The new holder's lease is untouched (not given back by the loser).
        let row: (String, i64) =
            sqlx::query_as("SELECT holder, expires_at FROM leases WHERE feed = 'f'")
                .fetch_one(s.pool())
                .await
                .expect("read");
        assert_eq!(row.0, "daemon:2@b");
        assert!(row.1 > 0, "released by the loser");
    }

    #[tokio::test]
    async fn a_stop_aborts_the_work_and_gives_the_lease_back() {
        let (_d, s) = store().await;
        let lease = s.acquire_lease("f", "daemon:1@a", TTL).await.expect("free");
        let stop = CancellationToken::new();
        stop.cancel();
        let out = under_lease(&s, lease, &stop, std::future::pending::<()>()).await;
        assert!(matches!(out, Leased::Aborted("stopped")), "{out:?}");
        assert!(s.acquire_lease("f", "once:2@b", TTL).await.is_ok());
    }
}
