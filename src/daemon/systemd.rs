//! Talking to systemd (`Type=notify`): READY, RELOADING, STOPPING, STATUS
//! and the watchdog. Outside systemd (no `NOTIFY_SOCKET`) every call does
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::health::Health;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed.");
    }
}

pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub(super) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Half the watchdog period systemd asked for, if it asked.
pub(super) fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog while the scheduler runs: a wedged runtime or a dead
/// scheduler stops the pings and systemd restarts the service.
pub(super) async fn watchdog(every: Duration, health: Arc<Health>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if health.scheduler_running.load(Ordering::Relaxed) {
                    send(&[NotifyState::Watchdog]);
                }
            }
        }
    }
}
