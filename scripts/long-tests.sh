#!/usr/bin/env bash
# The long variants of the test suite: the crash test with 50 kills on a
# larger corpus. Run from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REGFEED_LONG_TESTS=1 cargo test --release --test it crash:: -- --nocapture
