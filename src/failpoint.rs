//! Named failpoints for crash tests: `REGFEED_FAILPOINT=name[:n]` makes the
//! process abort (`std::process::abort`, no unwinding, no destructors, as a
//! power cut or `kill -9` would) the `n`-th time (default: first) execution
//! reaches `hit("name")`. Just before aborting it appends `name` and a
//! newline to the file named by `REGFEED_FAILPOINT_MARK` (if set, fsynced) and
//! prints `regfeed: failpoint NAME hit` to standard error, so a test can
//! assert that the point was reached.
//!
//! With `REGFEED_FAILPOINT_ACTION=stop` the process stops itself instead
//! (SIGSTOP, as a paused VM or a long GC pause would) and goes on where it
//! was once sent SIGCONT: the replica tests use it to show fencing.
//!
//! Points: `decode` (pipeline, while decoding a chunk), `commit` (just
//! before the staging transaction commits), `staged` (after the
//! staging transaction commits), `sealed` (after sealing, before the first
//! attempt), `upload` (HTTP sink, after the first part of the body went
//! out), `receipt` (after the register's receipt arrived, before it is
//! recorded).
//!
//! Unset, a hit is one relaxed load of an initialised `OnceLock`.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the armed point.
pub const ENV: &str = "REGFEED_FAILPOINT";
/// The environment variable choosing what a hit does: `abort` (default) or
/// `stop`.
pub const ACTION_ENV: &str = "REGFEED_FAILPOINT_ACTION";
/// The environment variable naming the marker file.
pub const MARK_ENV: &str = "REGFEED_FAILPOINT_MARK";

/// Every failpoint name, for tests and docs.
pub const POINTS: &[&str] = &["decode", "commit", "staged", "sealed", "upload", "receipt"];

struct Armed {
    name: String,
    nth: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((n, c)) => (n.to_owned(), c.parse().ok()?),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth: u64::max(nth, 1),
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process here if `name` is the armed point and this is its
/// `n`-th hit; otherwise does nothing.
#[inline]
pub fn hit(name: &str) {
    let Some(a) = armed() else { return };
    if a.name != name {
        return;
    }
    // The n-th hit only (a stopped process that resumes goes on).
    if a.seen.fetch_add(1, Ordering::Relaxed) + 1 != a.nth {
        return;
    }
    if let Some(path) = std::env::var_os(MARK_ENV)
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{name}");
        let _ = f.sync_all();
    }
    eprintln!("regfeed: failpoint {name} hit");
    if std::env::var(ACTION_ENV).is_ok_and(|a| a == "stop") {
        // No unsafe code here: kill(1) stops this process, which resumes
        // after this call once it is continued.
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        eprintln!("regfeed: failpoint {name} resumed");
        return;
    }
    std::process::abort();
}
