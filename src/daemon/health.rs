//! What `/readyz` checks, and what `/metrics` reads from the store just
//! before each scrape.
//!
//! Ready means: the config is loaded, the scheduler runs, the store takes a
//! write (a one-row transaction, committed like any other) and the state
//! directory a file, every source can be read and every file-drop sink's
//! folder takes a file (the probes of [`crate::preflight`], which `regfeed
//! validate` runs too), and no feed's delivery has
//! failed continuously for longer than `telemetry.unready_after_delivery_failing`.
//! The same probes set `regfeed_store_up` and `regfeed_source_up`. Answers
//! name the store, a source or a feed, never a person or a source path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::schedule::{HELSINKI, next_fire};
use crate::source::Source;
use crate::telemetry::http::{BoxFuture, Checks};
use crate::telemetry::metrics::{self, OutboxGauges};

/// How long one probe (or the store reads before a scrape) may take before
/// it counts as not answering: a scrape stays well within Prometheus's
/// default 10 s timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probe results this fresh are reused (a scrape and a readiness check
/// together probe once).
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// A store write that waits (SQLite's write lock, held by a run staging a
/// large chunk) is not a failure until the store has taken no write for this
/// long.
const STORE_SILENT: Duration = Duration::from_secs(120);

/// The least age a feed's oldest undelivered batch is allowed
/// (`regfeed_outbox_age_limit_seconds`).
const MIN_AGE_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Probed {
    at: Instant,
    /// The store and the state directory: `Err` says what is wrong.
    store: Result<(), String>,
    sources: Vec<(String, Result<(), String>)>,
    /// What is wrong with file-drop sink folders.
    sinks: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    app: Option<Arc<App>>,
    sources: Vec<Source>,
    /// Per feed: since when its delivery has been failing.
    failing: BTreeMap<String, DateTime<Utc>>,
    /// The last store write that succeeded.
    store_ok_at: Option<Instant>,
    probed: Option<Probed>,
}

/// The daemon's health, kept up to date by its tasks and read by the
/// telemetry endpoint ([`Checks`]).
#[derive(Debug)]
pub struct Health {
    pub config_loaded: AtomicBool,
    pub scheduler_running: AtomicBool,
    holder: String,
    started: DateTime<Utc>,
    created: Instant,
    inner: Mutex<Inner>,
    /// One probe at a time.
    probing: tokio::sync::Mutex<()>,
}

impl Health {
    pub fn new(holder: &str) -> Health {
        Health {
            config_loaded: AtomicBool::new(false),
            scheduler_running: AtomicBool::new(false),
            holder: holder.to_owned(),
            started: Utc::now(),
            created: Instant::now(),
            inner: Mutex::default(),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration (store, sources, feeds) now running.
    pub fn set_app(&self, app: Arc<App>) {
        let sources = app
            .cfg
            .sources
            .iter()
            .filter_map(|s| match Source::build(s) {
                Ok(src) => Some(src),
                Err(e) => {
                    tracing::warn!(source = %s.name, error = %e, "Source cannot be set up for readiness checks.");
                    None
                }
            })
            .collect();
        let mut i = self.lock();
        let names: Vec<&str> = app.cfg.feeds.iter().map(|f| f.name.as_str()).collect();
        i.failing.retain(|f, _| names.contains(&f.as_str()));
        i.app = Some(app);
        i.sources = sources;
        i.probed = None;
    }

    /// Since when the feed's delivery has been failing (`None`: it is not).
    pub fn set_failing(&self, feed: &str, since: Option<DateTime<Utc>>) {
        metrics::record_failing_since(feed, since);
        let mut i = self.lock();
        match since {
            Some(t) => {
                i.failing.insert(feed.to_owned(), t);
            }
            None => {
                i.failing.remove(feed);
            }
        }
    }

    /// Probes the store, the state directory and the sources (or reuses a
    /// probe less than [`PROBE_FRESH`] old).
    async fn probe(&self) -> Option<Probed> {
        let _one = self.probing.lock().await;
        let (app, sources) = {
            let i = self.lock();
            if let Some(p) = &i.probed
                && p.at.elapsed() < PROBE_FRESH
            {
                return Some(p.clone());
            }
            (i.app.clone()?, i.sources.clone())
        };
        let store = async {
            let written = tokio::time::timeout(PROBE_TIMEOUT, app.store.probe_write(&self.holder));
            match written.await {
                Ok(Ok(())) => {
                    self.lock().store_ok_at = Some(Instant::now());
                    probe_state_dir(&app.cfg.state_dir).await
                }
                Ok(Err(e)) => Err(format!("{} does not take writes: {e}", app.store.label())),
                // Waiting for the write lock a run holds is not a failure,
                // until the store has taken no write for a long while.
                Err(_) => {
                    let since = self.lock().store_ok_at.unwrap_or(self.created);
                    if since.elapsed() < STORE_SILENT {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} has taken no write for {} s",
                            app.store.label(),
                            since.elapsed().as_secs()
                        ))
                    }
                }
            }
        };
        let sources = futures_util::future::join_all(sources.iter().map(|s| async move {
            let r = match tokio::time::timeout(PROBE_TIMEOUT, s.probe()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("source {} cannot be read: {e}", s.name())),
                Err(_) => Err(format!("source {} does not answer", s.name())),
            };
            (s.name().to_owned(), r)
        }));
        // File-drop sinks take a file (the check `regfeed validate` makes;
        // the folder is the operator's configuration, not a source path).
        let sinks = futures_util::future::join_all(app.cfg.feeds.iter().filter_map(|f| {
            let crate::config::SinkConfig::FileDrop { dir, .. } = &f.sink else {
                return None;
            };
            let (dir, feed) = (dir.clone(), f.name.clone());
            Some(probe_blocking("a sink folder", move || {
                crate::preflight::sink_folder_writable(&dir)
                    .map_err(|e| format!("the sink of feed {feed}: {e}"))
            }))
        }));
        let (store, probed_sources, sinks) = tokio::join!(store, sources, sinks);
        let p = Probed {
            at: Instant::now(),
            store,
            sources: probed_sources,
            sinks: sinks.into_iter().filter_map(Result::err).collect(),
        };
        self.lock().probed = Some(p.clone());
        Some(p)
    }

    async fn check(&self) -> Result<(), String> {
        if !self.config_loaded.load(Ordering::Relaxed) {
            return Err("config not loaded".into());
        }
        if !self.scheduler_running.load(Ordering::Relaxed) {
            return Err("scheduler not running".into());
        }
        let Some(p) = self.probe().await else {
            return Err("store not open".into());
        };
        let mut why: Vec<String> = Vec::new();
        if let Err(e) = &p.store {
            why.push(e.clone());
        }
        why.extend(p.sources.iter().filter_map(|(_, r)| r.clone().err()));
        why.extend(p.sinks.iter().cloned());
        let (limit, failing) = {
            let i = self.lock();
            let limit = i.app.as_ref().map_or(Duration::ZERO, |a| {
                a.cfg.daemon.unready_after_delivery_failing
            });
            (limit, i.failing.clone())
        };
        if !limit.is_zero() {
            let now = Utc::now();
            for (feed, since) in failing {
                let for_ = (now - since).to_std().unwrap_or_default();
                if for_ >= limit {
                    why.push(format!(
                        "delivery of feed {feed} has failed for {} s (since {})",
                        for_.as_secs(),
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ));
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The gauges that come from the store and the process, read now.
    async fn refresh(&self) {
        metrics::record_process();
        let Some(p) = self.probe().await else { return };
        metrics::record_store_up(p.store.is_ok());
        for (name, r) in &p.sources {
            metrics::record_source_up(name, r.is_ok());
        }
        let Some(app) = self.lock().app.clone() else {
            return;
        };
        let read = async {
            refresh_outbox(&app).await?;
            refresh_runs(&app, self.started).await?;
            let head = crate::audit::head(app.store.pool())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            metrics::record_audit_entries(head.entries);
            anyhow::Ok(())
        };
        match tokio::time::timeout(PROBE_TIMEOUT, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(store = %app.store.label(), error = %format!("{e:#}"), "Metrics: could not read the store; the gauges keep their last values.")
            }
            Err(_) => {
                tracing::warn!(store = %app.store.label(), "Metrics: the store did not answer in time; the gauges keep their last values.")
            }
        }
    }
}

impl Checks for Health {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.check())
    }

    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.refresh())
    }
}

/// Writes, syncs and removes a small file in the state directory (where
/// sealed batches are written).
async fn probe_state_dir(dir: &std::path::Path) -> Result<(), String> {
    let dir = dir.to_path_buf();
    probe_blocking("the state directory", move || {
        crate::preflight::folder_writable(&dir)
            .map_err(|e| format!("the state directory is not writable: {e}"))
    })
    .await
}

/// Runs a blocking probe within [`PROBE_TIMEOUT`]; `what` names what it
/// probes when it fails to answer.
async fn probe_blocking(
    what: &str,
    probe: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::task::spawn_blocking(probe)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("{what} probe failed: {e}")),
        Err(_) => Err(format!("{what} does not answer")),
    }
}

fn unix(t: &str) -> Option<f64> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// The outbox gauges of every configured feed, from the store.
async fn refresh_outbox(app: &App) -> anyhow::Result<()> {
    let now = Utc::now();
    let summary: BTreeMap<String, crate::store::OutboxSummary> = app
        .store
        .outbox_summary()
        .await?
        .into_iter()
        .map(|s| (s.feed.clone(), s))
        .collect();
    for f in &app.cfg.feeds {
        let s = summary.get(&f.name).cloned().unwrap_or_default();
        let oldest = s
            .oldest_undelivered
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let age_limit = match (&f.schedule, oldest) {
            (Some(schedule), Some(staged)) => next_fire(schedule, HELSINKI, staged)
                .and_then(|n| (n - staged).to_std().ok())
                .unwrap_or(f.sink.retry().max_elapsed),
            (Some(schedule), None) => next_fire(schedule, HELSINKI, now)
                .and_then(|n| next_fire(schedule, HELSINKI, n).map(|m| (n, m)))
                .and_then(|(n, m)| (m - n).to_std().ok())
                .unwrap_or(f.sink.retry().max_elapsed),
            (None, _) => f.sink.retry().max_elapsed,
        }
        .max(MIN_AGE_LIMIT);
        metrics::record_outbox(
            &f.name,
            &OutboxGauges {
                backlog: s.backlog.max(0) as u64,
                dead: s.dead.max(0) as u64,
                conflicts: s.conflicts.max(0) as u64,
                oldest_age_s: oldest
                    .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
                age_limit_s: age_limit.as_secs_f64(),
                last_delivered: s.last_delivered.as_deref().and_then(unix).unwrap_or(0.0),
                dead_total: s.dead_total.max(0) as u64,
                conflicts_total: s.conflicts_total.max(0) as u64,
            },
        );
    }
    Ok(())
}

/// Each feed's last successful and failed run, and when a successful run is
/// due, from the store (so they survive restarts and agree across
/// replicas).
async fn refresh_runs(app: &App, started: DateTime<Utc>) -> anyhow::Result<()> {
    let times: BTreeMap<String, crate::store::RunTimes> = app
        .store
        .run_times()
        .await?
        .into_iter()
        .map(|t| (t.feed.clone(), t))
        .collect();
    for f in &app.cfg.feeds {
        let t = times.get(&f.name).cloned().unwrap_or_default();
        let last_ok = t.last_ok.as_deref().and_then(unix);
        let due = f.schedule.as_ref().and_then(|schedule| {
            // After the last success; a feed that never had one is due at
            // the first fire after it first ran, or after this start.
            let base = t
                .last_ok
                .as_deref()
                .or(t.first_started.as_deref())
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map_or(started, |d| d.with_timezone(&Utc));
            next_fire(schedule, HELSINKI, base).map(|d| d.timestamp() as f64)
        });
        metrics::record_run_times(
            &f.name,
            last_ok.unwrap_or(0.0),
            t.last_failed.as_deref().and_then(unix).unwrap_or(0.0),
            due,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_state_directory_that_cannot_take_a_file_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(probe_state_dir(dir.path()).await, Ok(()));
        let gone = dir.path().join("missing");
        let e = probe_state_dir(&gone).await.expect_err("no such folder");
        assert!(e.starts_with("the state directory is not writable"), "{e}");
        assert!(!e.contains(gone.to_string_lossy().as_ref()), "no path: {e}");
    }
}
