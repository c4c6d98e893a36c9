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
//! With `REGFEED_FAILPOINT_ACTION=fail` the point is a fault instead: from
//! its `n`-th hit on, [`failing`] says yes (and the code there fails as the
//! point describes) while the file named by `REGFEED_FAILPOINT_WHILE` exists
//! (unset: for good). The process goes on: this is how a test shows that it
//! recovers once the fault is gone.
//!
//! Points: `decode` (pipeline, while decoding a chunk), `commit` (just
//! before the staging transaction commits), `staged` (after the
//! staging transaction commits), `sealed` (after sealing, before the first
//! attempt), `upload` (HTTP sink, after the first part of the body went
//! out), `receipt` (after the register's receipt arrived, before it is
//! recorded). Fault points: `store_full` (every store transaction's commit
//! fails as SQLite's does on a full disk: the transaction is rolled back
//! and the error is `SQLITE_FULL`'s).
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
/// With the `fail` action: the file whose existence keeps the fault on.
pub const WHILE_ENV: &str = "REGFEED_FAILPOINT_WHILE";

/// Every failpoint name, for tests and docs.
pub const POINTS: &[&str] = &["decode", "commit", "staged", "sealed", "upload", "receipt"];

/// Every fault point name ([`failing`]).
pub const FAULTS: &[&str] = &["store_full"];

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

fn mark(name: &str) {
    if let Some(path) = std::env::var_os(MARK_ENV)
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{name}");
        let _ = f.sync_all();
    }
}

/// Whether the fault point `name` is failing now: armed with the `fail`
/// action, hit at least `n` times, and its `REGFEED_FAILPOINT_WHILE` file
/// there (if one is named). Each failing hit after one that did not fail
/// leaves its mark.
#[inline]
pub fn failing(name: &str) -> bool {
    let Some(a) = armed() else { return false };
    if a.name != name || !std::env::var(ACTION_ENV).is_ok_and(|v| v == "fail") {
        return false;
    }
    static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let seen = a.seen.fetch_add(1, Ordering::Relaxed) + 1;
    let on = seen >= a.nth
        && std::env::var_os(WHILE_ENV).is_none_or(|p| std::path::Path::new(&p).exists());
    if on && !ON.swap(true, Ordering::Relaxed) {
        mark(name);
        eprintln!("regfeed: failpoint {name} failing");
    } else if !on && ON.swap(false, Ordering::Relaxed) {
        eprintln!("regfeed: failpoint {name} no longer failing");
    }
    on
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
    mark(name);
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
