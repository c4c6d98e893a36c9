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
pub(super) async fn under_lease<T>(
    store: &Store,
    lease: Lease,
    stop: &CancellationToken,
    work: impl Future<Output = T>,
) -> Leased<T> {
    let mut work = Box::pin(crate::store::fenced(lease.clone(), work));
    let mut renew = tokio::time::interval(lease.ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    // The renewal is polled beside the work, never instead of it: a renewal
    // waits for SQLite's write lock, which the work's staging transaction may
    // hold, and the work must keep going meanwhile.
    let mut renewing: Option<std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>> = None;
    let out = loop {
        tokio::select! {
            biased;
            r = &mut work => break Leased::Done(r),
            _ = stop.cancelled() => break Leased::Aborted("stopped"),
            res = async {
                match renewing.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            } => {
                renewing = None;
                match res {
                    Ok(true) => {}
                    Ok(false) => break Leased::Aborted("lease lost"),
                    Err(e) => {
                        tracing::warn!(feed = %lease.feed, error = %e, "Could not renew the feed's lease.");
                    }
                }
            }
            _ = renew.tick(), if renewing.is_none() => {
                renewing = Some(Box::pin(store.renew_lease(&lease)));
            }
        }
    };
    drop(renewing);
    // Drop the work (and any transaction it holds) before the lease goes.
    drop(work);
    if let Err(e) = store.release_lease(&lease).await {
        tracing::warn!(feed = %lease.feed, error = %e, "Could not release the feed's lease; it expires on its own.");
    }
    out
}

/// `regfeed once` under the feed's lease: waits up to `wait` for a run of
/// the daemon to finish, else refuses ([`LeaseRefused`]).
pub async fn once_leased(app: &App, feed: &str, wait: Duration) -> anyhow::Result<OnceReport> {
    let stop = CancellationToken::new();
    let holder = holder_id("once");
    let lease = acquire(
        &app.store,
        feed,
        &holder,
        app.cfg.daemon.lease_ttl,
        wait,
        &stop,
    )
    .await?;
    match under_lease(&app.store, lease, &stop, app.once(feed)).await {
        Leased::Done(r) => r,
        Leased::Aborted(why) => {
            let _ = app
                .store
                .close_open_runs(feed, Some(&holder), "aborted")
                .await;
            anyhow::bail!("run of {feed} aborted: {why}")
        }
    }
}
