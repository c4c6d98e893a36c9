#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/, git-ignored) from the
# reference data beside the clone (../shared/data) and the repository's own
# mappings and config. Idempotent: files are named by content digest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
data="${REGFEED_SHARED_DATA:-../../shared/data}"
if [[ ! -d "$data" ]]; then
    echo "seed.sh: $data is missing (set REGFEED_SHARED_DATA)" >&2
    exit 1
fi

add() { # add TARGET FILE [PREFIX-BYTE-OCTAL]: copy FILE into the corpus.
    local dir="corpus/$1" tmp
    mkdir -p "$dir"
    tmp="$(mktemp)"
    if [[ -n "${3:-}" ]]; then printf "\\$3" >"$tmp"; fi
    cat "$2" >>"$tmp"
    mv "$tmp" "$dir/$(sha1sum "$tmp" | cut -c1-40)"
}

shopt -s nullglob
docs=("$data"/fixtures/*.xml "$data"/kanta/*.xml "$data"/external/cda/* "$data"/external/bad-xml/*)
for f in "${docs[@]}"; do
    add decode_cda "$f"
    add decode_archive "$f" 000   # even first byte: f is base64-encoded as the MIME body
done
# Odd first byte: the input is the whole MIME text. One per fixture document.
for f in "$data"/fixtures/f0*.xml "$data"/kanta/KIE*.xml; do
    tmp="$(mktemp)"
    {
        printf 'MIME-Version: 1.0\nContent-Type: multipart/related;\nboundary="----=_Part_1_1"\n\n------=_Part_1_1\nContent-Type: text/xml; charset=UTF-8\nContent-Transfer-Encoding: BASE64\n\n'
        base64 -w 76 "$f"
        printf '\n------=_Part_1_1--\n'
    } >"$tmp"
    add decode_archive "$tmp" 001
    rm -f "$tmp"
done
for f in ../mappings/*.toml; do add mapping_parse "$f"; done
for f in ../config/*.toml; do add config_parse "$f"; done
for t in corpus/*; do echo "$t: $(ls "$t" | wc -l) inputs"; done
