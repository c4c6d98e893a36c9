//! Any UTF-8 text → `Config::from_str_at` with no environment overrides:
//! errors are fine, a panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = regfeed::config::Config::from_str_at(
            text,
            Path::new("/etc/regfeed/regfeed.toml"),
            |_| None,
        );
    }
});
