//! Any UTF-8 text → `mapping::parse`: problems are fine, a panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = regfeed::mapping::parse(text, Path::new("fuzz.toml"));
    }
});
