//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::{Path, PathBuf};

/// `../shared/data` beside the clone, when present. Absent, the test skips
/// with a visible notice, except under CI (`CI` set), where absence fails.
pub fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but ../shared/data is missing: the reference data must be present in CI");
    }
    eprintln!("NOTICE: ../shared/data is absent; skipping a test that needs the reference data");
    None
}

/// Shorthand: the directory `sub` of the shared data, or return from the test.
#[macro_export]
macro_rules! shared_or_skip {
    ($sub:expr) => {
        match $crate::common::shared_data() {
            Some(p) => p.join($sub),
            None => return,
        }
    };
}
