//! `regfeed run`: loads the config, wires signals to the daemon and runs it.
//! Exit 0 after a clean stop, 78 for an invalid config, 1 if it could not
//! start.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::feeds::{EXIT_CONFIG, load, runtime};

/// How long the runtime waits for blocking work (a data file being
/// written) after the daemon returned.
const BLOCKING_DRAIN: Duration = Duration::from_secs(5);

pub fn main(config: Option<&Path>) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = crate::daemon::check_keys(&cfg) {
        super::report::fatal_unprefixed(&format!("{}: keys: {e:#}", cfg.path.display()));
        return ExitCode::from(EXIT_CONFIG);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            super::report::fatal(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let signals = crate::daemon::signals::listen(shutdown.clone(), reload_tx)?;
        let r = crate::daemon::run(cfg, reload_rx, shutdown).await;
        signals.abort();
        r
    });
    rt.shutdown_timeout(BLOCKING_DRAIN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "The daemon could not run.");
            super::report::fatal(&format!("{e:#}"));
            crate::ownership::exit_code(&e).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}
