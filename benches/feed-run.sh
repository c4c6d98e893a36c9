#!/usr/bin/env bash
# Figures for one diabetes feed run on the embedded default (SQLite, file
# drop): generate N synthetic patients, run `once --feed thl-diabetes`, and
# report the run's own summary (documents, MB, decoding and store time) and
# the process's peak RSS (getrusage, via GNU time).
# Usage: benches/feed-run.sh [PATIENTS ...]      (default: 5000 20000)
# FEEDS="thl-diabetes county-statistics" runs each of those feeds from a
# fresh store of its own, one after the other (default: thl-diabetes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/regfeed
work=${REGFEED_BENCH_DIR:-$PWD/target/feed-run-bench}
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(5000 20000)
for patients in "${sizes[@]}"; do
  dir=$work/p$patients
  rm -rf "$dir"; mkdir -p "$dir"
  $bin gen --patients "$patients" --seed 1 --out "$dir/corpus"
  $bin demo --dir "$dir/setup" --corpus "$dir/corpus/docs" --setup-only >/dev/null
  for feed in ${FEEDS:-thl-diabetes}; do
    rm -rf "$dir/setup/state"
    echo "== $patients patients: once --feed $feed (fresh store)"
    REGFEED_LOG=warn /usr/bin/time -f "peak RSS %M KiB, wall %e s, user %U s, sys %S s" \
      $bin once --feed "$feed" --config "$dir/setup/regfeed.toml" | grep -v delivered
  done
done
