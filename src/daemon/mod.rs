//! `regfeed run`, the daemon (DESIGN.md §7): runs each scheduled feed at the
//! fire times [`crate::schedule::next_fire`] gives, delivers every feed's
//! batches from an outbox loop of its own ([`outbox`]), reloads its
//! configuration on request, serves `/metrics`, `/healthz` and `/readyz`
//! ([`health`]), talks to systemd, and stops within a grace period.
//!
//! [`run`] takes its shutdown token and reload requests as parameters, so a
//! test can start and stop the whole daemon; the binary wires them to
//! signals ([`signals`]). Every task is on one `TaskTracker` and watches a
//! cancellation token. What a run does is [`App::once`]'s business; this
//! module decides when, makes sure one feed never runs twice at once (a lease
//! in the store, shared with `regfeed once`), and turns reports into metrics.

pub mod health;
mod lease;
pub mod outbox;
mod scheduler;
pub mod signals;
mod systemd;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{self, App};
use crate::loaded::Config;
use crate::telemetry::http;
use crate::telemetry::metrics;
use health::Health;

pub use lease::{LEASE_TTL, LeaseRefused, holder_id, once_leased, outbox_leased};

/// Runs the daemon until `shutdown` is cancelled: then it stops scheduling,
/// gives running steps `daemon.shutdown_grace` to finish (after that they
/// are dropped, which rolls their transaction back) and returns `Ok`.
/// Each message on `reload` re-reads the config file.
pub async fn run(
    cfg: Config,
    mut reload: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = metrics::install()?;
    let listen = cfg.daemon.telemetry_listen;
    let app = Arc::new(App::open(cfg).await?);
    for f in &app.cfg.feeds {
        metrics::register_feed(&f.name);
    }
    let health = Arc::new(Health::new(&holder_id("daemon")));
    health.set_app(app.clone());
    health.config_loaded.store(true, Ordering::Relaxed);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the telemetry endpoint to {listen}"))?;
    let bound = listener
        .local_addr()
        .context("telemetry endpoint address")?;
    tracing::info!(listen = %bound, "Telemetry endpoint listening.");

    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: running steps stop at once.
    let hard_stop = CancellationToken::new();
    let (app_tx, app_rx) = watch::channel(app.clone());
    let ctx = scheduler::Ctx::new(
        app_rx,
        shutdown.clone(),
        hard_stop.clone(),
        tracker.clone(),
        health.clone(),
    );
    tracker.spawn(http::serve(
        listener,
        prometheus,
        health.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(scheduler::schedule_loop(ctx.clone()));
    tracker.spawn(outbox::supervise(ctx.clone()));
    if let Some(every) = systemd::watchdog_interval() {
        tracker.spawn(systemd::watchdog(every, health.clone(), shutdown.clone()));
    }
    let feeds = app.cfg.feeds.len();
    systemd::ready(&format!("running {feeds} feeds"));
    tracing::info!(feeds, "Daemon started.");

    let mut reloads_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = reload.recv(), if reloads_open => match msg {
                Some(()) => reload_config(&app_tx, &health).await,
                None => reloads_open = false,
            },
        }
    }

    systemd::stopping();
    health.scheduler_running.store(false, Ordering::Relaxed);
    tracker.close();
    let grace = app_tx.borrow().cfg.daemon.shutdown_grace;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "Stopping: no new runs; waiting for running steps."
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("Grace period over: aborting running steps (their transactions roll back).");
        hard_stop.cancel();
        // Dropped futures end at their next await; bound it all the same.
        if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Some tasks did not end after the abort; exiting anyway.");
        }
    }
    tracing::info!("Daemon stopped.");
    Ok(())
}

/// Re-reads the config file the running one came from; validates it, its
/// mappings and its keys; swaps it in (runs already going finish with the
/// old one). A config that does not validate is refused and counted.
async fn reload_config(app_tx: &watch::Sender<Arc<App>>, health: &Health) {
    systemd::reloading();
    let path = app_tx.borrow().cfg.path.clone();
    tracing::info!("Reloading the configuration.");
    let loaded = match Config::load(&path) {
        Ok(cfg) => App::open(cfg).await,
        Err(e) => Err(anyhow::Error::new(e)),
    };
    match loaded {
        Ok(new) => {
            for f in &new.cfg.feeds {
                metrics::register_feed(&f.name);
            }
            let new = Arc::new(new);
            health.set_app(new.clone());
            let feeds = new.cfg.feeds.len();
            app_tx.send_replace(new);
            metrics::record_reload(true);
            tracing::info!(feeds, "Configuration reloaded.");
            systemd::ready(&format!("running {feeds} feeds"));
        }
        Err(e) => {
            metrics::record_reload(false);
            // Config problems name the config file, a line and a field:
            // operator text, never a source path or a person.
            // One log line: the problems, one per line in the error, are
            // joined with "; ".
            let error = one_line(&format!("{e:#}"));
            tracing::error!(error = %error, "Configuration refused; the running one stays.");
            let feeds = app_tx.borrow().cfg.feeds.len();
            systemd::ready(&format!("running {feeds} feeds; last reload refused"));
        }
    }
}

/// `text` on one line: its lines, trimmed, joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks that a config's keys load (what `validate` and a reload check
/// besides the file itself).
pub fn check_keys(cfg: &Config) -> anyhow::Result<()> {
    app::load_keys(cfg).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_reload_is_logged_on_one_line() {
        let text = "regfeed.toml:3: daemon.lease_ttl: must be at least 3s\n  regfeed.toml:9: feeds.name: missing\n";
        assert_eq!(
            super::one_line(text),
            "regfeed.toml:3: daemon.lease_ttl: must be at least 3s; regfeed.toml:9: feeds.name: missing"
        );
    }
}
