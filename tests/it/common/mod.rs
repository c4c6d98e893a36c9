//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod delivery;
pub mod hostile;

use std::path::{Path, PathBuf};

/// `../shared/data` beside the clone, for a test that needs it. Such a test
/// is marked `#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]`:
/// `build.rs` sets `no_shared_data` when the data is absent (never under
/// CI), so libtest reports the test as ignored. Reaching this without the
/// data fails the test (under CI, or an unmarked test), except when the data
/// went away after the build (a binary run by hand): then `None`, with a
/// notice.
pub fn shared_data() -> Option<PathBuf> {
    if let Some(p) = shared_data_if_present() {
        return Some(p);
    }
    if cfg!(no_shared_data) {
        panic!(
            "../shared/data is absent: a test that needs it is marked \
             #[cfg_attr(no_shared_data, ignore = \"needs ../shared/data\")] so that it is \
             reported as ignored (a test that only partly needs it uses shared_data_if_present)"
        );
    }
    eprintln!("NOTICE: ../shared/data is absent; skipping a test that needs the reference data");
    None
}

/// `../shared/data` if present, for the part of a test that uses it when
/// it is there (the rest runs either way). Absent under CI fails.
pub fn shared_data_if_present() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but ../shared/data is missing: the reference data must be present in CI");
    }
    None
}

/// Shorthand: the directory `sub` of the shared data, or return from the
/// test (see [`shared_data`]: only when the data went away after the build).
#[macro_export]
macro_rules! shared_or_skip {
    ($sub:expr) => {
        match $crate::common::shared_data() {
            Some(p) => p.join($sub),
            None => return,
        }
    };
}

/// A PostgreSQL database of its own for one test, on the server named by
/// `REGFEED_TEST_DATABASE_URL`; dropped (with its connections) when this is.
#[derive(Debug)]
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

/// The PostgreSQL test server's URL (`REGFEED_TEST_DATABASE_URL`). A test
/// that needs it is marked
/// `#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]`:
/// `build.rs` sets `no_pg` when the variable is unset (never under CI), so
/// libtest reports the test as ignored. Reaching this without it fails the
/// test (under CI, or an unmarked test), except when the variable was set
/// at build time and is not now (a binary run by hand): then `None`, with a
/// notice.
pub fn pg_server() -> Option<String> {
    match std::env::var("REGFEED_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but REGFEED_TEST_DATABASE_URL is not: the PostgreSQL tests must run in CI"
                );
            }
            if cfg!(no_pg) {
                panic!(
                    "REGFEED_TEST_DATABASE_URL is unset: a test that needs PostgreSQL is marked \
                     #[cfg_attr(no_pg, ignore = \"needs REGFEED_TEST_DATABASE_URL\")] so that it \
                     is reported as ignored"
                );
            }
            eprintln!("NOTICE: REGFEED_TEST_DATABASE_URL is unset; skipping a PostgreSQL test");
            None
        }
    }
}

/// Runs SQL on the server (outside any runtime the caller may be in).
fn pg_admin(admin: &str, sql: String) -> Result<(), String> {
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        use sqlx::Connection as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(&sql)
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

impl PgDb {
    /// A fresh database; `None` only as [`pg_server`] says.
    pub fn create(tag: &str) -> Option<PgDb> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = pg_server()?;
        let name = format!(
            "regfeed_t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            tag.replace('-', "_")
        );
        pg_admin(&admin, format!("CREATE DATABASE {name}")).expect("create the test database");
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
        let host = rest.split('/').next().unwrap_or(rest);
        let url = format!("{scheme}://{host}/{name}{query}");
        Some(PgDb { url, admin, name })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = pg_admin(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Every file under `dir` (recursively), sorted; names ending in `.tmp`
/// (a producer's file not yet renamed) are left out.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".tmp") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// GET over plain HTTP/1.1 (the telemetry endpoint): (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the endpoint");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_owned())
}

/// Whether the test `name` (its path in this binary, such as
/// `decode_hostile::nesting_past_max_depth`) was just run, and passed, alone
/// in a fresh process of this test binary: `true` here (the caller returns;
/// a failure there fails it here), `false` in that fresh process (the
/// caller goes on with the test). For a test that measures peak RSS: this
/// process's own, or a child's (Linux folds the parent's peak into a
/// child's at `execve`); here the other tests run in the same process, in
/// parallel, and would inflate it.
pub fn ran_in_a_fresh_process(name: &str) -> bool {
    const ENV: &str = "REGFEED_TEST_FRESH_PROCESS";
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ENV, name)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" 1 passed;"),
        "{name}, alone in a fresh process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
