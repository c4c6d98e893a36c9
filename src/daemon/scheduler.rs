//! The scheduler. Fire times come from [`next_fire`] only; a fire whose feed is still running is skipped and
//! counted; a fire missed while the daemon was down is caught up once or
//! skipped, per feed. Runs are tasks on the daemon's tracker, each with the
//! configuration that was current when it started.
//!
//! Several replicas may share one store (PostgreSQL). Each computes the same
//! fire times; each fire is claimed in the store by exactly one of them
//! (`fires`), and runs under the feed's lease. A replica beats in the
//! `replicas` table; the fires of one silent for longer than a lease are
//! taken over by another, once.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::Health;
use super::lease::{Leased, acquire, holder_id, under_lease};
use super::outbox::Loops;
use crate::app::App;
use crate::config::CatchUp;
use crate::schedule::{HELSINKI, Schedule, next_fire};
use crate::telemetry::metrics::{self, RunOutcome};

/// The longest the scheduler sleeps at once, so that a wall-clock step
/// (NTP, suspend) is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How long a scheduled run waits for a lease held briefly elsewhere (a
/// `regfeed once`) before its start counts as skipped.
const RUN_LEASE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(super) struct Ctx {
    pub(super) app: watch::Receiver<Arc<App>>,
    pub(super) shutdown: CancellationToken,
    pub(super) hard_stop: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) health: Arc<Health>,
    /// Feeds with a run going on in this process.
    busy: Arc<Mutex<HashSet<String>>>,
    pub(super) holder: String,
    /// The feeds' outbox loops ([`super::outbox`]).
    pub(super) outboxes: Loops,
}

impl Ctx {
    pub(super) fn new(
        app: watch::Receiver<Arc<App>>,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
        tracker: TaskTracker,
        health: Arc<Health>,
    ) -> Ctx {
        Ctx {
            app,
            shutdown,
            hard_stop,
            tracker,
            health,
            busy: Arc::default(),
            holder: holder_id("daemon"),
            outboxes: Loops::default(),
        }
    }

    /// Marks the feed busy; `None` if it already is.
    fn claim(&self, feed: &str) -> Option<Busy> {
        let mut set = self.busy.lock().ok()?;
        set.insert(feed.to_owned()).then(|| Busy {
            set: self.busy.clone(),
            feed: feed.to_owned(),
        })
    }
}

/// A feed marked busy until dropped.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    feed: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.feed);
        }
    }
}

#[derive(Debug)]
struct Plan {
    schedule: Schedule,
    next: DateTime<Utc>,
}

/// Plans every scheduled feed of `app`, keeping the next fire time of a
/// feed whose schedule did not change.
fn plan(app: &App, old: &BTreeMap<String, Plan>, now: DateTime<Utc>) -> BTreeMap<String, Plan> {
    let mut plans = BTreeMap::new();
    for f in &app.cfg.feeds {
        let Some(schedule) = &f.schedule else {
            continue;
        };
        let next = match old.get(&f.name) {
            Some(p) if p.schedule == *schedule => Some(p.next),
            _ => next_fire(schedule, HELSINKI, now),
        };
        if let Some(next) = next {
            metrics::record_next_run(&f.name, next);
            tracing::info!(feed = %f.name, schedule = %schedule, next = %next.to_rfc3339(), "Feed scheduled.");
            plans.insert(
                f.name.clone(),
                Plan {
                    schedule: schedule.clone(),
                    next,
                },
            );
        }
    }
    plans
}

/// The scheduler: catches up at start, then fires feeds at their times.
pub(super) async fn schedule_loop(ctx: Ctx) {
    let mut rx = ctx.app.clone();
    let mut app = rx.borrow_and_update().clone();
    close_stale_runs(&ctx, &app).await;
    catch_up(&ctx, &app).await;
    let mut plans = plan(&app, &BTreeMap::new(), Utc::now());
    ctx.health.scheduler_running.store(true, Ordering::Relaxed);
    loop {
        heartbeat(&ctx, &app).await;
        take_over(&ctx, &app, &plans).await;
        let now = Utc::now();
        for (feed, p) in plans.iter_mut() {
            if p.next > now {
                continue;
            }
            fire(&ctx, &app, feed, "schedule", p.next);
            if let Err(e) = app
                .store
                .set_last_fire(feed, p.next, p.schedule.as_str())
                .await
            {
                tracing::warn!(feed = %feed, error = %e, "Could not record the fire time.");
            }
            match next_fire(&p.schedule, HELSINKI, p.next.max(now)) {
                Some(n) => {
                    p.next = n;
                    metrics::record_next_run(feed, n);
                }
                None => p.next = DateTime::<Utc>::MAX_UTC,
            }
        }
        let wake = plans.values().map(|p| p.next).min();
        let sleep = wake
            .and_then(|w| (w - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        let sleep = if wake.is_none() { MAX_SLEEP } else { sleep };
        // Beat, and look for a silent replica's fires, every third of a lease.
        let sleep = sleep.min(app.cfg.daemon.lease_ttl / 3);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                ctx.health.scheduler_running.store(false, Ordering::Relaxed);
                tracing::info!("Scheduler stopped.");
                return;
            }
            _ = tokio::time::sleep(sleep) => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                app = rx.borrow_and_update().clone();
                plans = plan(&app, &plans, Utc::now());
            }
        }
    }
}

/// Runs still marked running from an earlier process that died: they rolled
/// back; close them as `interrupted` (only where no one holds the lease).
async fn close_stale_runs(ctx: &Ctx, app: &App) {
    for f in &app.cfg.feeds {
        let Ok(lease) = app
            .store
            .acquire_lease(&f.name, &ctx.holder, Duration::from_secs(5))
            .await
        else {
            continue;
        };
        match app
            .store
            .close_open_runs(&f.name, None, "interrupted")
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(feed = %f.name, runs = n, "Runs left open by an earlier process closed as interrupted.")
            }
            Err(e) => tracing::warn!(feed = %f.name, error = %e, "Could not close stale runs."),
        }
        let _ = app.store.release_lease(&lease).await;
    }
}

/// A fire time missed while the daemon was down: run once now, or skip,
/// per the feed's `catch_up`. However many fire times were missed, at most
/// one run.
async fn catch_up(ctx: &Ctx, app: &Arc<App>) {
    let now = Utc::now();
    for f in &app.cfg.feeds {
        let Some(schedule) = &f.schedule else {
            continue;
        };
        match app.store.last_fire(&f.name).await {
            Ok(Some((last, _))) => {
                if let Some(missed) = next_fire(schedule, HELSINKI, last).filter(|m| *m <= now) {
                    match f.catch_up {
                        CatchUp::Once => {
                            tracing::info!(feed = %f.name, missed = %missed.to_rfc3339(), "Catching up a run missed while the daemon was down.");
                            metrics::record_catch_up(&f.name, true);
                            fire(ctx, app, &f.name, "catch_up", missed);
                        }
                        CatchUp::Skip => {
                            tracing::info!(feed = %f.name, missed = %missed.to_rfc3339(), "A run missed while the daemon was down is skipped (catch_up = \"skip\").");
                            metrics::record_catch_up(&f.name, false);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(feed = %f.name, error = %e, "Could not read the last fire time.");
            }
        }
        // Nothing before now is owed any more.
        if let Err(e) = app
            .store
            .set_last_fire(&f.name, now, schedule.as_str())
            .await
        {
            tracing::warn!(feed = %f.name, error = %e, "Could not record the fire time.");
        }
    }
}

/// Says in the store that this replica is alive.
async fn heartbeat(ctx: &Ctx, app: &App) {
    if let Err(e) = app.store.heartbeat(&ctx.holder).await {
        tracing::warn!(error = %e, "Could not record this replica's heartbeat.");
    }
}

/// Runs the fires that a replica which fell silent claimed and never
/// finished (it was killed, or cut off), each once.
async fn take_over(ctx: &Ctx, app: &Arc<App>, plans: &BTreeMap<String, Plan>) {
    for feed in plans.keys() {
        // Only a feed this replica is not running now: the fires taken over
        // run at once, in order, in one task.
        let Some(busy) = ctx.claim(feed) else {
            continue;
        };
        match app
            .store
            .take_over_fires(feed, &ctx.holder, app.cfg.daemon.lease_ttl)
            .await
        {
            Ok(fires) if fires.is_empty() => {}
            Ok(fires) => {
                let (ctx, app, feed) = (ctx.clone(), app.clone(), feed.clone());
                ctx.tracker.clone().spawn(async move {
                    for at in fires {
                        tracing::warn!(feed = %feed, fire = %at.to_rfc3339(), "Taking over a fire whose replica fell silent.");
                        run_fire(&ctx, &app, &feed, "takeover", at).await;
                    }
                    drop(busy);
                });
            }
            Err(e) => {
                tracing::warn!(feed = %feed, error = %e, "Could not look for fires to take over.")
            }
        }
    }
}

/// Starts the run of a scheduled fire of `feed` as a tracked task, unless
/// the feed's previous run is still going here; the fire is claimed first
/// (another replica may have it).
fn fire(ctx: &Ctx, app: &Arc<App>, feed: &str, trigger: &'static str, at: DateTime<Utc>) {
    let Some(busy) = ctx.claim(feed) else {
        tracing::warn!(feed = %feed, trigger, "Start skipped: the feed's previous run is still going.");
        metrics::record_skipped_start(feed, "overlap");
        return;
    };
    let (ctx, app, feed) = (ctx.clone(), app.clone(), feed.to_owned());
    ctx.tracker.clone().spawn(async move {
        match app.store.claim_fire(&feed, at, &ctx.holder).await {
            Ok(true) => run_fire(&ctx, &app, &feed, trigger, at).await,
            Ok(false) => {
                tracing::debug!(feed = %feed, trigger, "Fire claimed by another replica.");
            }
            Err(e) => {
                tracing::warn!(feed = %feed, trigger, error = %e, "Start skipped: could not claim the fire.");
                metrics::record_skipped_start(&feed, "store");
            }
        }
        drop(busy);
    });
}

/// How one run of a feed ended, for the fire it ran for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    /// Finished, failed, or skipped because the lease was held elsewhere:
    /// the fire is done.
    Ended,
    /// Cut short by shutdown: the fire stays claimed, for another replica
    /// once this one falls silent.
    Stopped,
    /// The run lost the feed's lease (this replica was paused or cut off)
    /// and committed nothing after the loss.
    LeaseLost,
}

/// How many times a fire is run when its runs keep losing their lease.
const FIRE_TRIES: u32 = 2;

/// Runs a fire this replica has claimed, and records it done. A run that
/// lost its lease did not run the fire: unless another replica took the
/// fire over meanwhile, it is run again (at most [`FIRE_TRIES`] times).
async fn run_fire(ctx: &Ctx, app: &App, feed: &str, trigger: &'static str, at: DateTime<Utc>) {
    for attempt in 1..=FIRE_TRIES {
        match crate::store::for_fire(at, run_feed(ctx, app, feed, trigger, at)).await {
            RunEnd::Ended => break,
            RunEnd::Stopped => return,
            RunEnd::LeaseLost => match app.store.fire_is_held_by(feed, at, &ctx.holder).await {
                Ok(true) if attempt < FIRE_TRIES && !ctx.shutdown.is_cancelled() => {
                    tracing::warn!(feed = %feed, trigger, fire = %at.to_rfc3339(), "Running the fire again: its run lost the feed's lease.");
                }
                Ok(true) => break,
                Ok(false) => {
                    tracing::info!(feed = %feed, trigger, fire = %at.to_rfc3339(), "The fire was taken over by another replica.");
                    return;
                }
                Err(e) => {
                    tracing::warn!(feed = %feed, error = %e, "Could not read the fire's holder; it stays claimed.");
                    return;
                }
            },
        }
    }
    if let Err(e) = app.store.finish_fire(feed, at, &ctx.holder).await {
        tracing::warn!(feed = %feed, error = %e, "Could not record the fire as done.");
    }
}

/// Runs the feed under its lease, for the fire at `at`.
async fn run_feed(
    ctx: &Ctx,
    app: &App,
    feed: &str,
    trigger: &'static str,
    at: DateTime<Utc>,
) -> RunEnd {
    let lease = match acquire(
        &app.store,
        feed,
        &ctx.holder,
        app.cfg.daemon.lease_ttl,
        RUN_LEASE_WAIT,
        &ctx.hard_stop,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(feed = %feed, trigger, error = %format!("{e:#}"), "Start skipped: the feed's lease is held elsewhere.");
            metrics::record_skipped_start(feed, "lease_held");
            return if ctx.hard_stop.is_cancelled() {
                RunEnd::Stopped
            } else {
                RunEnd::Ended
            };
        }
    };
    // The fire may have been taken over between this replica's decision to
    // run it (again) and its lease: another replica took it while this one
    // was silent and held no live lease. Holding the lease now, no one can
    // take it any more; if it is already another's, it is theirs to run.
    match app.store.fire_is_held_by(feed, at, &ctx.holder).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(feed = %feed, trigger, fire = %at.to_rfc3339(), "Run not started: the fire was taken over by another replica.");
            if let Err(e) = app.store.release_lease(&lease).await {
                tracing::warn!(feed = %feed, error = %e, "Could not release the feed's lease; it expires by itself.");
            }
            return RunEnd::Ended;
        }
        // Unknown: run it (as before this check) rather than leave a fire
        // nobody runs.
        Err(e) => {
            tracing::warn!(feed = %feed, error = %e, "Could not read the fire's holder; running it.");
        }
    }
    tracing::info!(feed = %feed, trigger, "Run started.");
    let started = Instant::now();
    let outcome = under_lease(&app.store, lease, &ctx.hard_stop, app.stage_run(feed)).await;
    let took = started.elapsed();
    match outcome {
        Leased::Done(Ok(report)) => {
            tracing::info!(
                feed = %feed,
                trigger,
                took_ms = took.as_millis() as u64,
                decoded = report.run.documents_decoded,
                quarantined = report.run.documents_quarantined,
                upserts = report.run.upserts,
                retracts = report.run.retracts,
                staged = report.run.staged.len(),
                "Run finished."
            );
            metrics::record_run(feed, RunOutcome::Ok, took, Some(&report));
            // Its batches are the outbox loop's now.
            ctx.outboxes.wake(feed);
            RunEnd::Ended
        }
        Leased::Done(Err(e)) if is_fenced(&e) => {
            // Not a failure of the run's input: this replica lost the feed's
            // lease (it was paused or cut off); another one has the feed.
            tracing::warn!(feed = %feed, trigger, error = %format!("{e:#}"), "Run fenced: its lease was lost; nothing after the loss was committed.");
            metrics::record_run(feed, RunOutcome::Aborted, took, None);
            RunEnd::LeaseLost
        }
        Leased::Done(Err(e)) => {
            tracing::error!(feed = %feed, trigger, error = %describe(app, &e), "Run failed.");
            metrics::record_run(feed, RunOutcome::Failed, took, None);
            RunEnd::Ended
        }
        Leased::Aborted(why) => {
            tracing::warn!(feed = %feed, trigger, why, "Run aborted; its open transaction rolled back.");
            if let Err(e) = app
                .store
                .close_open_runs(feed, Some(&ctx.holder), "aborted")
                .await
            {
                tracing::warn!(feed = %feed, error = %e, "Could not record the aborted run.");
            }
            metrics::record_run(feed, RunOutcome::Aborted, took, None);
            if why == "stopped" {
                RunEnd::Stopped
            } else {
                RunEnd::LeaseLost
            }
        }
    }
}

/// An error for the log: one from the store is prefixed with the store's
/// name (`SQLite store /var/lib/regfeed/regfeed.db: ...`).
pub(super) fn describe(app: &App, e: &anyhow::Error) -> String {
    if store_error(e) {
        format!("{}: {e:#}", app.store.label())
    } else {
        format!("{e:#}")
    }
}

/// Whether the store failed somewhere in the error's chain.
fn store_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::store::StoreError>().is_some()
            || matches!(
                c.downcast_ref::<crate::pipeline::PipelineError>(),
                Some(crate::pipeline::PipelineError::Store(_))
            )
            || matches!(
                c.downcast_ref::<crate::audit::AuditError>(),
                Some(crate::audit::AuditError::Store(_))
            )
    })
}

/// Whether a run ended because its lease was lost (a fenced commit).
fn is_fenced(e: &anyhow::Error) -> bool {
    use crate::store::StoreError;
    let fenced = |s: &StoreError| matches!(s, StoreError::Fenced(_) | StoreError::RunFenced(_));
    e.chain().any(|c| {
        c.downcast_ref::<StoreError>().is_some_and(fenced)
            || matches!(c.downcast_ref::<crate::pipeline::PipelineError>(),
                Some(crate::pipeline::PipelineError::Store(s)) if fenced(s))
            || matches!(c.downcast_ref::<crate::audit::AuditError>(),
                Some(crate::audit::AuditError::Store(s)) if fenced(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_lost_lease_is_told_apart_from_a_failed_run_however_it_is_wrapped() {
        let feed = || "f".to_owned();
        let fenced: Vec<anyhow::Error> = vec![
            StoreError::Fenced(feed()).into(),
            anyhow::Error::from(StoreError::RunFenced(feed())).context("finishing the run"),
            anyhow::Error::from(crate::pipeline::PipelineError::Store(StoreError::Fenced(
                feed(),
            )))
            .context("staging"),
            crate::audit::AuditError::Store(StoreError::Fenced(feed())).into(),
        ];
        for e in &fenced {
            assert!(is_fenced(e), "{e:#}");
        }
        let failed: anyhow::Error = StoreError::Other("disk full".into()).into();
        assert!(!is_fenced(&failed));
        assert!(!is_fenced(&anyhow::anyhow!("fenced, says the text only")));
    }
}
