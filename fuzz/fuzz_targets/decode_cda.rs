//! Any bytes → `decode` with the default limits: an error is fine, a panic,
//! an abort or unbounded memory is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfeed::decode::{Limits, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, &Limits::default());
});
