//! Telemetry: the tracing subscriber (plain or JSON lines, to standard error,
//! filtered by `REGFEED_LOG` or else `RUST_LOG`) and the process's peak
//! resident memory.
//!
//! It must not decide what is logged: callers log key/value fields that never
//! carry a hetu, a name, free text or a source path (DESIGN.md §7). Metric
//! names live in [`metrics`]; `/metrics`, `/healthz` and `/readyz` in [`http`].

pub mod http;
pub mod metrics;

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The environment variables read for the log filter, first match wins.
pub const FILTER_ENV: [&str; 2] = ["REGFEED_LOG", "RUST_LOG"];

/// The filter used when neither variable is set.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (journald-friendly: no colours when not a tty).
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

/// The log filter directive from the environment (`REGFEED_LOG`, then
/// `RUST_LOG`), or [`DEFAULT_FILTER`].
pub fn filter_from_env() -> String {
    filter_or(None, DEFAULT_FILTER)
}

/// The log filter: `REGFEED_LOG`, then `RUST_LOG`, then `config_level` (the
/// config's `[log] level`, with its `REGFEED_LOG__LEVEL` override), then
/// `default` (the command's: [`DEFAULT_FILTER`], or `warn` for the demo).
pub fn filter_or(config_level: Option<&str>, default: &str) -> String {
    FILTER_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
        .or_else(|| config_level.map(str::to_owned))
        .unwrap_or_else(|| default.to_owned())
}

/// The log format: the command line's `--log-format` (or
/// `REGFEED_LOG_FORMAT`), then the config's `[log] format` (with its
/// `REGFEED_LOG__FORMAT` override), then plain.
pub fn format_or(flag: Option<LogFormat>, config: Option<crate::config::LogFormat>) -> LogFormat {
    flag.or(config.map(|f| match f {
        crate::config::LogFormat::Plain => LogFormat::Plain,
        crate::config::LogFormat::Json => LogFormat::Json,
    }))
    .unwrap_or_default()
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directive does not parse (its text is the operator's own
    /// configuration, so it may be shown).
    #[error("invalid log filter {directive:?}: {reason}")]
    Filter { directive: String, reason: String },
    /// A global subscriber is already installed (a second `init`).
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global tracing subscriber: `format` lines on standard error,
/// filtered by `filter` (an `EnvFilter` directive such as `info` or
/// `regfeed=debug`).
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::from_str(filter).map_err(|e| TelemetryError::Filter {
        directive: filter.to_owned(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// The peak resident set size of this process so far, in bytes, or `None`
/// where the platform does not report it.
///
/// On Linux this is `VmHWM` from `/proc/self/status`: `getrusage`'s
/// `ru_maxrss` survives `execve`, so a process started by a large parent
/// (`cargo bench`, ~75 MiB) would report the parent's peak. Elsewhere, and
/// when `/proc` is not mounted, it is `getrusage(RUSAGE_SELF)`.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    if let Some(hwm) = linux_vm_hwm_bytes() {
        return Some(hwm);
    }
    getrusage_max_rss_bytes()
}

#[cfg(target_os = "linux")]
fn linux_vm_hwm_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What `/metrics` says about the process itself ([`metrics::record_process`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// User and system CPU time.
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// This process's memory, CPU time and open files: from `/proc/self` on
/// Linux (`status`, `fd`, `limits`), CPU time from `getrusage`.
pub fn process_stats() -> ProcessStats {
    let kib = |status: &str, key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let n: u64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(n * 1024)
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?;
            line["Max open files".len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
    ProcessStats {
        resident_bytes: kib(&status, "VmRSS:"),
        virtual_bytes: kib(&status, "VmSize:"),
        cpu_seconds: getrusage_self().map(|u| {
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(u.ru_utime) + t(u.ru_stime)
        }),
        open_fds,
        max_fds,
    }
}

#[allow(unsafe_code)] // getrusage has no safe wrapper in std or libc; see SAFETY below.
fn getrusage_self() -> Option<libc::rusage> {
    // SAFETY: `rusage` is a plain C struct for which all-zero bytes is a valid
    // value, and getrusage only writes into the pointer we pass, which points
    // to a live, properly aligned `rusage` on our stack.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        Some(usage)
    }
}

fn getrusage_max_rss_bytes() -> Option<u64> {
    let usage = getrusage_self()?;
    let maxrss = u64::try_from(usage.ru_maxrss).ok()?;
    // Linux and the BSDs report kilobytes, macOS bytes.
    if cfg!(target_os = "macos") {
        Some(maxrss)
    } else {
        Some(maxrss * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_reported_and_grows() {
        let before = peak_rss_bytes().expect("getrusage works on this platform");
        assert!(before > 0);
        // Touch more than the peak so far: the peak must then be at least
        // that much, whatever other test threads did meanwhile.
        let size = usize::try_from(before).expect("fits") + 16 * 1024 * 1024;
        let big = vec![1u8; size];
        assert_eq!(big.iter().map(|&b| u64::from(b)).sum::<u64>(), size as u64);
        let after = peak_rss_bytes().expect("getrusage works on this platform");
        assert!(
            after >= size as u64,
            "{before} -> {after} after touching {size}"
        );
    }

    #[test]
    fn process_stats_report_memory_cpu_and_files() {
        let p = process_stats();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0));
        if cfg!(target_os = "linux") {
            assert!(p.resident_bytes.is_some_and(|r| r > 0), "{p:?}");
            assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
            assert!(
                p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
                "{p:?}"
            );
        }
    }

    #[test]
    fn getrusage_reports_a_peak() {
        let peak = getrusage_max_rss_bytes().expect("getrusage works on this platform");
        assert!(peak > 0);
    }

    #[test]
    fn a_bad_filter_is_an_error_not_a_panic() {
        let e = init(LogFormat::Plain, "regfeed=notalevel").expect_err("invalid directive");
        assert!(matches!(e, TelemetryError::Filter { .. }), "{e}");
    }
}
