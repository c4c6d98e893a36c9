#!/usr/bin/env bash
# Builds target/debian/regfeed_<version>_<arch>.deb with cargo-deb and lists
# it. Not part of .ci/run (a release build plus cargo-deb is slow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo deb --locked
deb=$(ls -t target/debian/regfeed_*.deb | head -1)
dpkg-deb -I "$deb"
dpkg-deb -c "$deb"
