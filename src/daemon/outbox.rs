//! The outbox loops: one task per feed, started with the daemon, that owns
//! the feed's delivery. A run stages and returns; the loop seals what is
//! staged, sends what is sealed (or was `sending` when a process died) in
//! sequence order, and waits out a failed attempt's backoff itself, holding
//! no lease meanwhile and listening for shutdown. So a crash anywhere leaves
//! work the loop picks up at its first pass, with no schedule fire needed
//! (a feed without a schedule too), and a register outage never holds a
//! feed's runs.
//!
//! A pass runs under the feed's outbox lease (`outbox:<feed>` in the lease
//! table, apart from the lease its runs take): one process delivers a feed
//! at a time, across replicas and `regfeed once`, and a pass's commits are
//! fenced by it. A pass starts when the loop starts, when a run of the feed
//! in this process has staged, after a failed attempt's backoff, and every
//! `daemon.delivery_interval` (batches staged by another process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::lease::{Leased, acquire, under_lease};
use super::scheduler::{Ctx, describe};
use crate::app::App;
use crate::deliver::outbox::Backoff;
use crate::loaded::FeedConfig;

/// The lease row a feed's outbox loop holds while it delivers.
pub fn outbox_lease(feed: &str) -> String {
    format!("outbox:{feed}")
}

/// The running outbox loops, by feed: each one's wake-up.
#[derive(Debug, Clone, Default)]
pub(super) struct Loops {
    running: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Loops {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the feed's loop (a run has staged): its next pass starts now,
    /// unless it is waiting out a backoff.
    pub(super) fn wake(&self, feed: &str) {
        if let Some(n) = self.lock().get(feed) {
            n.notify_one();
        }
    }
}

/// Starts a loop for every configured feed that has none, now and after
/// every reload; a loop whose feed left the configuration ends by itself.
pub(super) async fn supervise(ctx: Ctx) {
    let mut rx = ctx.app.clone();
    loop {
        let app = rx.borrow_and_update().clone();
        for f in &app.cfg.feeds {
            let notify = {
                let mut running = ctx.outboxes.lock();
                if running.contains_key(&f.name) {
                    continue;
                }
                let n = Arc::new(Notify::new());
                running.insert(f.name.clone(), n.clone());
                n
            };
            let (ctx, feed) = (ctx.clone(), f.name.clone());
            ctx.tracker.clone().spawn(async move {
                feed_loop(&ctx, &feed, notify).await;
                ctx.outboxes.lock().remove(&feed);
            });
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// How a pass ended: when the next one starts.
enum Next {
    /// Nothing to send now (or the lease is elsewhere): at the next wake-up
    /// or after `delivery_interval`.
    Idle,
    /// After this long, whatever happens meanwhile.
    After(Duration),
    Stop,
}

/// What a feed's outbox loop remembers from one pass to the next.
#[derive(Debug, Default)]
struct State {
    /// The failing batch's backoff.
    backoff: Backoff,
    /// Since when delivery has been failing (readiness, the gauge).
    failing: Option<DateTime<Utc>>,
    /// The dead batch the feed waits on (logged once).
    waiting_on: Option<i64>,
    /// Store or setup errors in a row: their retries back off too.
    errors: u32,
    /// When delivered batches were last pruned (retention).
    pruned_at: Option<std::time::Instant>,
}

impl State {
    fn delivering(&mut self) {
        self.errors = 0;
        self.failing = None;
        self.waiting_on = None;
    }

    /// The feed waits on dead batch `seq`: its delivery is failing.
    async fn waiting(&mut self, app: &App, feed: &str, seq: i64) {
        self.errors = 0;
        if self.waiting_on != Some(seq) {
            tracing::warn!(feed = %feed, seq, "A dead batch holds back this feed's later batches until an operator retries it (`regfeed outbox retry`).");
            self.waiting_on = Some(seq);
        }
        if self.failing.is_none() {
            self.failing = Some(dead_since(app, feed, seq).await);
        }
    }

    /// A pass failed on the store or the sink's setup.
    fn error(&mut self, feed: &str, what: &str, error: String, interval: Duration) -> Next {
        self.errors += 1;
        tracing::warn!(feed = %feed, error = %error, "Outbox: {what}; trying again.");
        Next::After(error_backoff(self.errors, interval))
    }
}

/// One feed's outbox loop.
async fn feed_loop(ctx: &Ctx, feed: &str, notify: Arc<Notify>) {
    let mut st = State::default();
    tracing::debug!(feed = %feed, "Outbox loop started.");
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let app = ctx.app.borrow().clone();
        let Some(fc) = app.cfg.feed(feed) else {
            tracing::info!(feed = %feed, "Outbox loop ended: the feed is no longer configured.");
            ctx.health.set_failing(feed, None);
            return;
        };
        prune_if_due(&app, fc, &mut st).await;
        let next = pass(ctx, &app, fc, &mut st).await;
        ctx.health.set_failing(feed, st.failing);
        match next {
            Next::Stop => return,
            Next::After(d) => {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
            Next::Idle => {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(app.cfg.daemon.delivery_interval) => {}
                }
            }
        }
    }
}

/// Prunes the feed's delivered batches past their retention, at most once
/// per [`PRUNE_EVERY`](crate::deliver::prune::PRUNE_EVERY); a failure is
/// logged and tried again then.
async fn prune_if_due(app: &App, fc: &FeedConfig, st: &mut State) {
    use crate::deliver::prune::PRUNE_EVERY;
    if st.pruned_at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
        return;
    }
    st.pruned_at = Some(std::time::Instant::now());
    match app.prune_delivered(fc, Utc::now(), false).await {
        Ok(p) if !p.is_empty() => {
            tracing::info!(feed = %fc.name, pruned = p.len(), "Delivered batches pruned after their retention.");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(feed = %fc.name, error = %describe(app, &e), "Pruning delivered batches failed; trying again later.");
        }
    }
}

/// One pass over the feed's outbox.
async fn pass(ctx: &Ctx, app: &App, fc: &FeedConfig, st: &mut State) -> Next {
    let feed = fc.name.as_str();
    let interval = app.cfg.daemon.delivery_interval;
    // A look first, without the lease: most passes find nothing to do, or
    // only the dead batch the feed waits on.
    match first_pending(app, feed).await {
        Err(e) => {
            let e = format!("{}: {e}", app.store.label());
            return st.error(feed, "could not read the feed's batches", e, interval);
        }
        Ok(None) => {
            st.delivering();
            return Next::Idle;
        }
        Ok(Some((seq, state))) if state == "dead" => {
            st.waiting(app, feed, seq).await;
            return Next::Idle;
        }
        Ok(Some(_)) => {}
    }
    let lease = match acquire(
        &app.store,
        &outbox_lease(feed),
        &ctx.holder,
        app.cfg.daemon.lease_ttl,
        Duration::ZERO,
        &ctx.hard_stop,
    )
    .await
    {
        Ok(l) => l,
        // Another process delivers the feed now (a replica, `regfeed once`).
        Err(e) if e.is::<super::LeaseRefused>() => return Next::Idle,
        Err(e) => {
            let e = format!("{}: {e:#}", app.store.label());
            return st.error(feed, "could not take the feed's outbox lease", e, interval);
        }
    };
    let work = app.deliver_step(fc, &mut st.backoff);
    let d = match under_lease(&app.store, lease, &ctx.hard_stop, work).await {
        Leased::Done(Ok(d)) => d,
        Leased::Done(Err(e)) => {
            return st.error(feed, "the pass failed", describe(app, &e), interval);
        }
        Leased::Aborted("stopped") => return Next::Stop,
        Leased::Aborted(why) => {
            tracing::warn!(feed = %feed, why, "Outbox pass aborted; its open transaction rolled back.");
            return Next::After(error_backoff(1, interval));
        }
    };
    if !d.delivered.is_empty() {
        tracing::info!(feed = %feed, delivered = ?d.delivered, "Outbox delivered.");
    }
    match (d.retry, d.waiting_on) {
        (Some(r), _) => {
            st.errors = 0;
            st.waiting_on = None;
            // Failing since the failing batch's first attempt; a batch
            // delivered in this pass means the failure began with this one.
            if st.failing.is_none() || !d.delivered.is_empty() {
                let since = DateTime::parse_from_rfc3339(&r.first_attempt_at)
                    .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc));
                st.failing = Some(since);
            }
            Next::After(r.after)
        }
        (None, Some(seq)) => {
            st.waiting(app, feed, seq).await;
            Next::Idle
        }
        (None, None) => {
            st.delivering();
            Next::Idle
        }
    }
}

/// The wait after the `n`-th failed pass in a row (not an attempt: the
/// store, the sink's setup): one second, doubling, at most
/// `delivery_interval`.
fn error_backoff(n: u32, interval: Duration) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(10)).min(interval)
}

/// The feed's first batch not yet delivered: (seq, state).
async fn first_pending(app: &App, feed: &str) -> crate::store::Result<Option<(i64, String)>> {
    Ok(app
        .store
        .batches(Some(feed))
        .await?
        .into_iter()
        .find(|b| b.state != "delivered")
        .map(|b| (b.seq, b.state)))
}

/// When the dead batch the feed waits on became dead.
async fn dead_since(app: &App, feed: &str, seq: i64) -> DateTime<Utc> {
    app.store
        .outbox(Some(feed))
        .await
        .ok()
        .and_then(|o| o.into_iter().find(|e| e.seq == seq))
        .and_then(|e| e.dead_at)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_passes_back_off_to_the_delivery_interval() {
        let i = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=8).map(|n| error_backoff(n, i).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(error_backoff(1000, i), i);
    }
}
