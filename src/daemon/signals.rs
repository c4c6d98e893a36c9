//! Signals for the binary: the first SIGTERM or SIGINT cancels the shutdown
//! token (stop scheduling, finish within the grace period); a second one
//! exits at once; SIGHUP asks for a reload.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Exit status after a second stop signal (the work in flight is dropped;
/// every write regfeed makes is a transaction or a temp file plus rename).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Listens for signals until the returned task is aborted (the caller does,
/// after [`super::run`] returns).
pub fn listen(
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "Reload requested.");
                    if reload.try_send(()).is_err() {
                        tracing::info!("A reload is already pending.");
                    }
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                tracing::warn!(signal = name, "Second stop signal: exiting at once.");
                std::process::exit(EXIT_INTERRUPTED);
            }
            tracing::info!(signal = name, "Stop requested.");
            shutdown.cancel();
        }
    }))
}
