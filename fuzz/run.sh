#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another,
# outside CI. Needs a nightly-capable toolchain (RUSTC_BOOTSTRAP=1 is set, so
# stable works) and cargo-fuzz (installed when missing). Seeds the corpora
# first (seed.sh). A crash stops the run; the input is left under
# fuzz/artifacts/<target>/. Keep every crashing input as a regression test:
# copy it to tests/data/fuzz/<target>/ and it is run by
# tests/it/fuzz_regressions.rs.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${1:-600}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(decode_cda decode_archive mapping_parse config_parse)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
./seed.sh
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    echo "==== $t: ${secs}s ===="
    # -rss_limit_mb: a decode that needs more than this is a finding too.
    # -max_len: the external CDA seeds reach 0.9 MB; 32 kB keeps the decode
    # targets at hundreds of executions a second (FUZZ_ARGS adds or overrides).
    extra=()
    case "$t" in decode_*) extra=(-max_len=32768) ;; esac
    # shellcheck disable=SC2086
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        "${extra[@]}" ${FUZZ_ARGS:-}
done
