//! Decode throughput: documents/s, MB/s and peak RSS of `regfeed::decode`
//! over a corpus of at least 200 MiB, beside a bare quick-xml event loop and
//! a namespace-resolving (`NsReader`) one (no checks, no records) over the
//! same files, and the ratios.
//!
//! Run: `cargo bench --bench decode`. The corpus is `REGFEED_BENCH_CORPUS`
//! (a directory, searched recursively for `*.xml`) when set; otherwise it is
//! built once under `target/bench-corpus` (reused while complete) from the
//! shipped documents in `../shared/data`, copied with varied ids until it
//! holds 200 MiB. Files are read one at a time, so RSS reflects the work on
//! one document, not the corpus.
//!
//! `REGFEED_BENCH_PROFILE=<rounds>` runs only the decoder, over the corpus
//! held in memory, for `perf record`.
//!
//! Peak RSS is a process-wide high-water mark: the bare pass runs first, so
//! the decoder's figure is the larger of both (reported as such).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "common/scan.rs"]
mod scan;

use regfeed::decode::{Limits, decode};
use regfeed::telemetry::peak_rss_bytes;
use scan::{bare_scan, ns_scan};

const CORPUS_MIN_BYTES: u64 = 200 * 1024 * 1024;
/// Bump when the corpus recipe changes, so an old corpus is rebuilt.
const CORPUS_RECIPE: &str = "regfeed-bench-corpus v1";
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument names nothing here.
    let corpus = match std::env::var_os("REGFEED_BENCH_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => match build_corpus() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("decode bench: cannot build the corpus: {e}");
                std::process::exit(1);
            }
        },
    };
    let mut files = Vec::new();
    if let Err(e) = collect_xml(&corpus, &mut files) {
        eprintln!("decode bench: cannot list the corpus: {e}");
        std::process::exit(1);
    }
    files.sort();
    if files.is_empty() {
        eprintln!("decode bench: no *.xml files in the corpus");
        std::process::exit(1);
    }
    let bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "corpus: {} files, {:.1} MiB{}",
        files.len(),
        bytes as f64 / MIB,
        if std::env::var_os("REGFEED_BENCH_CORPUS").is_some() {
            " (REGFEED_BENCH_CORPUS)"
        } else {
            " (built from ../shared/data)"
        }
    );

    if let Some(rounds) = std::env::var("REGFEED_BENCH_PROFILE")
        .ok()
        .and_then(|r| r.parse::<u32>().ok())
    {
        profile_decode(&files, rounds);
        return;
    }

    // Warm the page cache so neither pass pays for the disk.
    let warm = pass(&files, |_| true);
    let rss_start = peak_rss_bytes();
    let bare = pass(&files, bare_scan);
    let rss_bare = peak_rss_bytes();
    let ns = pass(&files, |b| ns_scan(b, true));
    let rss_ns = peak_rss_bytes();
    let limits = Limits::default();
    let decoder = pass(&files, |b| decode(b, &limits).is_ok());
    let rss_decoder = peak_rss_bytes();

    println!();
    println!(
        "{:<16} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>13}",
        "pass", "docs", "ok", "refused", "seconds", "docs/s", "MB/s", "peak RSS MiB"
    );
    for (name, p, rss) in [
        ("read only", &warm, rss_start),
        ("bare quick-xml", &bare, rss_bare),
        ("NsReader scan", &ns, rss_ns),
        ("regfeed decode", &decoder, rss_decoder),
    ] {
        let secs = p.elapsed.as_secs_f64();
        println!(
            "{:<16} {:>7} {:>7} {:>8} {:>9.3} {:>9.0} {:>8.1} {:>13}",
            name,
            p.docs,
            p.ok,
            p.docs - p.ok,
            secs,
            p.docs as f64 / secs,
            p.bytes as f64 / 1e6 / secs,
            rss.map_or_else(|| "n/a".to_owned(), |r| format!("{:.1}", r as f64 / MIB)),
        );
    }
    println!();
    println!(
        "ratio decoder/bare (time): {:.2}x",
        decoder.elapsed.as_secs_f64() / bare.elapsed.as_secs_f64()
    );
    println!(
        "ratio decoder/NsReader scan (time): {:.2}x",
        decoder.elapsed.as_secs_f64() / ns.elapsed.as_secs_f64()
    );
    if decoder.ok < decoder.docs {
        println!(
            "note: {} of {} documents were refused; refused documents stop early, so the \
             decoder figure is not a full-decode figure.",
            decoder.docs - decoder.ok,
            decoder.docs
        );
    }
}

struct Pass {
    docs: u64,
    ok: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Reads each file in turn and applies `work` to its bytes.
fn pass(files: &[PathBuf], mut work: impl FnMut(&[u8]) -> bool) -> Pass {
    let mut p = Pass {
        docs: 0,
        ok: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    let start = Instant::now();
    for f in files {
        let Ok(bytes) = fs::read(f) else {
            continue;
        };
        p.docs += 1;
        p.bytes += bytes.len() as u64;
        if work(std::hint::black_box(&bytes)) {
            p.ok += 1;
        }
    }
    p.elapsed = start.elapsed();
    p
}

/// `REGFEED_BENCH_PROFILE=<rounds>`: only the decoder, over the corpus held
/// in memory, `rounds` times: a loop for `perf record` with no file reading
/// in the samples.
fn profile_decode(files: &[PathBuf], rounds: u32) {
    let docs: Vec<Vec<u8>> = files.iter().filter_map(|f| fs::read(f).ok()).collect();
    let bytes: usize = docs.iter().map(Vec::len).sum();
    let limits = Limits::default();
    let start = Instant::now();
    let mut ok = 0u64;
    for _ in 0..rounds {
        for d in &docs {
            if decode(std::hint::black_box(d), &limits).is_ok() {
                ok += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "decode in memory: {rounds} rounds, {ok} ok, {:.1} MB/s",
        (bytes as f64 * f64::from(rounds)) / 1e6 / secs
    );
}

fn collect_xml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_xml(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `target/bench-corpus`, built unless a complete one of this recipe exists.
fn build_corpus() -> Result<PathBuf, String> {
    let dir = target_dir().join("bench-corpus");
    let marker = dir.join("COMPLETE");
    if fs::read_to_string(&marker).is_ok_and(|m| m.starts_with(CORPUS_RECIPE)) {
        return Ok(dir);
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !shared.is_dir() {
        return Err(format!(
            "{} is absent; set REGFEED_BENCH_CORPUS to a directory of documents",
            shared.display()
        ));
    }
    let templates = templates(&shared).map_err(|e| format!("reading templates: {e}"))?;
    if templates.is_empty() {
        return Err("no template documents found".into());
    }
    let staging = target_dir().join("bench-corpus.partial");
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    eprintln!(
        "decode bench: building a {} MiB corpus from {} templates under {} (once)",
        CORPUS_MIN_BYTES / 1024 / 1024,
        templates.len(),
        dir.display()
    );
    let mut total = 0u64;
    let mut copy = 0usize;
    while total < CORPUS_MIN_BYTES {
        copy += 1;
        // Ten copies per folder keeps directories small.
        let sub = staging.join(format!("{:04}", copy / 10));
        fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
        for (i, t) in templates.iter().enumerate() {
            let doc = vary(t, copy);
            let path = sub.join(format!("{copy:06}-{i:03}.xml"));
            let mut f = fs::File::create(&path).map_err(|e| e.to_string())?;
            f.write_all(doc.as_bytes()).map_err(|e| e.to_string())?;
            total += doc.len() as u64;
        }
    }
    fs::write(
        staging.join("COMPLETE"),
        format!("{CORPUS_RECIPE}\n{total} bytes, {copy} copies\n"),
    )
    .map_err(|e| e.to_string())?;
    fs::rename(&staging, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The shipped documents: fixtures, the two Kanta files, and the full
/// documents among the external CDA files (fragments have no
/// `ClinicalDocument`).
fn templates(shared: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for sub in ["fixtures", "kanta", "external/cda"] {
        let mut paths: Vec<PathBuf> = fs::read_dir(shared.join(sub))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "xml" || e == "ccd"))
            .collect();
        paths.sort();
        for p in paths {
            let text = fs::read_to_string(&p)?;
            if text.contains("<ClinicalDocument") || text.contains("<RCMR_IN1000") {
                out.push(text);
            }
        }
    }
    Ok(out)
}

/// Copy `n` of a template: the root of its first `<id>` (the document's id,
/// or an archive message's id) gets `.n` appended wherever it occurs, so
/// copies differ the way versions of a corpus do. Roots that are not OIDs
/// (UUIDs) are left alone.
fn vary(template: &str, n: usize) -> String {
    let Some(at) = template.find("<id ") else {
        return template.to_owned();
    };
    let tag_end = template[at..].find('>').map_or(template.len(), |e| at + e);
    let tag = &template[at..tag_end];
    let Some(r) = tag.find("root=\"") else {
        return template.to_owned();
    };
    let value_start = r + "root=\"".len();
    let Some(len) = tag[value_start..].find('"') else {
        return template.to_owned();
    };
    let root = &tag[value_start..value_start + len];
    if root.is_empty() || !root.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return template.to_owned();
    }
    template.replace(&format!("\"{root}\""), &format!("\"{root}.{n}\""))
}
