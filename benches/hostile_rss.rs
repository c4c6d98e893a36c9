//! Peak RSS of refusing each hostile input: every file of
//! `../shared/data/external/bad-xml` and the generated resource attacks of
//! `tests/it/common/hostile.rs`, each decoded by `regfeed decode FILE` in a
//! fresh process. Prints a table file → class → peak RSS → wall time, and
//! marks any file whose class is not the expected one or whose RSS passes
//! the documented ceiling. Two RSS figures: `VmHWM`, the child's own peak as
//! it reports it in its "Decode finished." line, and `maxrss`, `ru_maxrss`
//! from `wait4` (an upper bound: Linux folds in this parent's peak at the
//! child's `execve`).
//!
//! Run: `cargo bench --bench hostile_rss` (release build), or
//! `cargo bench --bench hostile_rss --profile dev` to reuse a debug build.
//! The generated files (about 90 MiB) go to a temporary folder removed at
//! the end. The assertions live in `tests/it/decode_hostile.rs`; this only
//! reports.

#[path = "../tests/it/common/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};

use hostile::{BAD_XML, RSS_CEILING_KIB, class_name, decode_in_child, write_generated};

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let bin = Path::new(env!("CARGO_BIN_EXE_regfeed"));
    let generated = tempfile::tempdir().expect("tmp");
    let mut cases: Vec<(PathBuf, String, String)> = write_generated(generated.path())
        .into_iter()
        .map(|(n, c)| (generated.path().join(&n), n, class_name(c)))
        .collect();
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/external/bad-xml");
    if bad.is_dir() {
        cases.extend(
            BAD_XML
                .iter()
                .map(|(n, c)| (bad.join(n), (*n).to_owned(), class_name(*c))),
        );
    } else {
        eprintln!("NOTICE: {} is absent; generated inputs only", bad.display());
    }
    println!(
        "{:<46} {:>10} {:<16} {:>12} {:>12} {:>8}",
        "file", "bytes", "class", "VmHWM KiB", "maxrss KiB", "wall ms"
    );
    let mut worst = 0;
    let mut bad_rows = 0;
    for (path, name, want) in &cases {
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let m = decode_in_child(bin, path);
        let mut note = String::new();
        if m.class != *want {
            note.push_str(&format!("  UNEXPECTED (want {want})"));
        }
        if m.max_rss_kib >= RSS_CEILING_KIB {
            note.push_str("  OVER CEILING");
        }
        if !note.is_empty() {
            bad_rows += 1;
        }
        worst = worst.max(m.max_rss_kib);
        println!(
            "{name:<46} {bytes:>10} {:<16} {:>12} {:>12} {:>8}{note}",
            m.class,
            m.own_peak_kib.map_or("?".to_owned(), |k| k.to_string()),
            m.max_rss_kib,
            m.wall.as_millis()
        );
    }
    println!(
        "{} files; largest peak RSS {worst} KiB; ceiling {RSS_CEILING_KIB} KiB; {bad_rows} marked",
        cases.len()
    );
}
