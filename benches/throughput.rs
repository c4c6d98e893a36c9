//! Throughput, the whole story in one run (issue 12, deliverable 5): on the
//! same generated files, the bare and the namespace-resolving quick-xml
//! scans (one thread, in this process), then `regfeed once --feed
//! thl-diabetes` end to end from a fresh store (SQLite, and PostgreSQL when
//! `REGFEED_TEST_DATABASE_URL` is set) with `daemon.workers` = 1 and 2, each
//! in a child process, then the 1 % incremental run and the idle run on the
//! SQLite store of the workers = 2 backfill. It measures and prints; it
//! asserts nothing about times.
//!
//! Run: `cargo bench --bench throughput` (release build). Environment:
//!
//! - `REGFEED_BENCH_PATIENTS`: sizes, default `"5000 50000"`.
//! - `REGFEED_BENCH_REPEAT`: runs per measurement, default 3; the table
//!   shows the median and `[min–max]`.
//! - `REGFEED_BENCH_DIR`: work folder, default `target/throughput-bench`.
//!   The corpus of each size (`pN/corpus`, `regfeed gen --patients N --seed
//!   1`) is kept there and reused while its marker matches; the stores of
//!   each run are made afresh under it (the last SQLite workers = 2 setup is
//!   kept, `pN/setup-sqlite-w2`).
//! - `REGFEED_TEST_DATABASE_URL`: a PostgreSQL server (e.g.
//!   `postgres://postgres@127.0.0.1:5432/test`); each PostgreSQL run gets a
//!   database of its own, created before and dropped after.
//!
//! What is measured:
//!
//! - The corpus minus every 100th file in sorted path order (held back in
//!   `pN/held`): the backfill's files. The scans read the same files.
//! - Scans: the files are read into memory 8 MiB at a time and only the
//!   parse loop over the chunk is timed (wall, and this thread's CPU from
//!   `CLOCK_THREAD_CPUTIME_ID`); reading is reported on its own row. Each
//!   file is parsed as it lies on disk (an archive message's base64 body is
//!   text to the scan). "bare" is the loop of `benches/decode.rs`
//!   (`Reader`, end-name and comment checks off); "NsReader" is
//!   `NsReader::read_resolved_event` with default checks, every element's
//!   namespace resolved: the scan every ratio is taken to; "NsReader +
//!   attributes" also iterates every attribute (default checks) and resolves
//!   its namespace with `resolve_attribute`, for reference.
//! - Feed runs: wall from spawn to reap; CPU = `ru_utime + ru_stime` and
//!   peak RSS = `ru_maxrss`, both from `wait4`, so the child's own (not the
//!   PostgreSQL server's). Linux folds this process's peak RSS into a
//!   child's `ru_maxrss` at `execve`; this process stays small (it never
//!   holds a listing of the corpus) and its own peak is printed: a figure not
//!   above it is a bound, marked `*`. The store's share is the run's own
//!   summary line: `store s / run s`.
//! - docs/s and MB/s are over the backfill's files for every row (the same
//!   denominator); a run that decoded a different number of documents is
//!   noted under the table.
#![allow(unsafe_code)] // clock_gettime and wait4 have no safe wrapper

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

#[path = "../tests/it/common/hostile.rs"]
mod hostile;
#[path = "common/scan.rs"]
mod scan;

use scan::{bare_scan, ns_scan};

/// Bump when the corpus or its hold-back changes, so an old one is rebuilt.
const RECIPE: &str = "regfeed-throughput-corpus v1";
const SEED: u64 = 1;
/// Every this-many-th file (sorted path order) is held back for the
/// incremental run: 1 %.
const HOLD_EVERY: u64 = 100;
const FEED: &str = "thl-diabetes";
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

type Res<T> = Result<T, String>;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    if let Err(e) = run() {
        eprintln!("throughput bench: FAILED: {e}");
        std::process::exit(1);
    }
}

struct Settings {
    bin: PathBuf,
    dir: PathBuf,
    sizes: Vec<u32>,
    repeat: usize,
    pg: Option<String>,
}

fn settings() -> Res<Settings> {
    let sizes_text =
        std::env::var("REGFEED_BENCH_PATIENTS").unwrap_or_else(|_| "5000 50000".to_owned());
    let sizes = sizes_text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("REGFEED_BENCH_PATIENTS: {s:?} is not a positive number"))
        })
        .collect::<Res<Vec<u32>>>()?;
    if sizes.is_empty() {
        return Err("REGFEED_BENCH_PATIENTS names no size".into());
    }
    let repeat = match std::env::var("REGFEED_BENCH_REPEAT") {
        Ok(r) => r
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("REGFEED_BENCH_REPEAT: {r:?} is not a positive number"))?,
        Err(_) => 3,
    };
    let dir = match std::env::var_os("REGFEED_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => target_dir().join("throughput-bench"),
    };
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pg = std::env::var("REGFEED_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    Ok(Settings {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_regfeed")),
        dir,
        sizes,
        repeat,
        pg,
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn run() -> Res<()> {
    let s = settings()?;
    fs::create_dir_all(&s.dir).map_err(|e| format!("{}: {e}", s.dir.display()))?;
    print_machine(&s);
    let mut done = Vec::new();
    for &n in &s.sizes {
        let r = one_size(&s, n)?;
        print_table(&s, &r);
        done.push(r);
    }
    println!();
    println!("== summary");
    let parent_peak = self_peak_kib();
    for r in &done {
        println!("{}", summary_line(r));
    }
    if let (Some(first), Some(last)) = (done.first(), done.last())
        && done.len() > 1
    {
        let (a, b) = (max_rss_of(first), max_rss_of(last));
        if a > 0 && b > 0 {
            println!(
                "peak RSS {} patients / {} patients: {:+.1} % (target: within 10 %)",
                last.patients,
                first.patients,
                (b as f64 / a as f64 - 1.0) * 100.0
            );
        }
    }
    println!(
        "this bench process's own peak RSS: {:.1} MiB (a child's figure at or below it is only a bound)",
        parent_peak as f64 / 1024.0
    );
    println!("load average at the end: {}", loadavg());
    Ok(())
}

// ---------------------------------------------------------------- machine

fn print_machine(s: &Settings) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or("?".to_owned(), |k| {
            format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0)
        });
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("?".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    println!("== throughput bench (regfeed {commit}, {FEED})");
    println!(
        "machine: nproc {nproc}, {model}, {mem} RAM, Linux {}; load average {}",
        kernel.trim(),
        loadavg()
    );
    println!(
        "sizes {:?} patients, {} runs per measurement (median [min–max]), work folder {}",
        s.sizes,
        s.repeat,
        s.dir.display()
    );
    match &s.pg {
        Some(url) => println!(
            "PostgreSQL: {} ({})",
            redact(url),
            pg_version(url).unwrap_or_else(|e| format!("version unknown: {e}"))
        ),
        None => println!("PostgreSQL: REGFEED_TEST_DATABASE_URL unset; SQLite only"),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The URL without a password, if it has one.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (cred, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------- corpus

/// One size's corpus: the backfill's folder and the held-back 1 %.
struct Corpus {
    docs: PathBuf,
    held_dir: PathBuf,
    /// Paths relative to `docs` (and to `held_dir`).
    held: Vec<PathBuf>,
    files: u64,
    bytes: u64,
    held_bytes: u64,
}

impl Corpus {
    /// Moves the held-back files into the corpus, with fresh mtimes.
    fn bring_in(&self) -> Res<()> {
        let now = SystemTime::now();
        for rel in &self.held {
            let (from, to) = (self.held_dir.join(rel), self.docs.join(rel));
            fs::rename(&from, &to).map_err(|e| format!("moving {}: {e}", from.display()))?;
            fs::File::options()
                .write(true)
                .open(&to)
                .and_then(|f| f.set_modified(now))
                .map_err(|e| format!("touching {}: {e}", to.display()))?;
        }
        Ok(())
    }

    /// Moves the held-back files (any that are in the corpus) aside again;
    /// false if one is in neither place.
    fn put_aside(&self) -> Res<bool> {
        let mut complete = true;
        for rel in &self.held {
            let (aside, inside) = (self.held_dir.join(rel), self.docs.join(rel));
            if aside.is_file() {
                continue;
            }
            if inside.is_file() {
                if let Some(parent) = aside.parent() {
                    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                fs::rename(&inside, &aside)
                    .map_err(|e| format!("moving {}: {e}", inside.display()))?;
            } else {
                complete = false;
            }
        }
        Ok(complete)
    }
}

/// The corpus of `patients`, generated unless a complete one of this recipe
/// is there; the held-back files are put aside either way.
fn corpus(s: &Settings, patients: u32) -> Res<Corpus> {
    let root = s.dir.join(format!("p{patients}"));
    let marker = root.join("corpus.ok");
    let want = format!("{RECIPE}\npatients {patients}\nseed {SEED}\n");
    let docs = root.join("corpus").join("docs");
    let held_dir = root.join("held");
    let held_list = root.join("held.txt");
    if fs::read_to_string(&marker).is_ok_and(|m| m.starts_with(&want)) {
        let held: Vec<PathBuf> = fs::read_to_string(&held_list)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect();
        let mut c = Corpus {
            docs: docs.clone(),
            held_dir: held_dir.clone(),
            held,
            files: 0,
            bytes: 0,
            held_bytes: 0,
        };
        if !c.held.is_empty() && c.put_aside()? {
            let (files, bytes) = count(&c.docs)?;
            let (_, held_bytes) = count(&c.held_dir)?;
            c.files = files;
            c.bytes = bytes;
            c.held_bytes = held_bytes;
            println!(
                "{patients} patients: reusing the corpus in {}",
                root.display()
            );
            return Ok(c);
        }
        println!(
            "{patients} patients: the corpus in {} is incomplete; generating it again",
            root.display()
        );
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| format!("removing {}: {e}", root.display()))?;
    }
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let started = Instant::now();
    let out = run_child(
        Command::new(&s.bin)
            .args(["gen", "--patients", &patients.to_string()])
            .args(["--seed", &SEED.to_string(), "--out"])
            .arg(root.join("corpus")),
        "regfeed gen",
    )?;
    println!(
        "{patients} patients: generated in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        out.stdout.trim()
    );
    // Hold back every HOLD_EVERY-th file in sorted path order.
    let mut i = 0u64;
    let mut held = Vec::new();
    let (mut files, mut bytes, mut held_bytes) = (0u64, 0u64, 0u64);
    walk_sorted(&docs, &mut |p| {
        i += 1;
        let len = fs::metadata(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .len();
        if i.is_multiple_of(HOLD_EVERY) {
            let rel = p
                .strip_prefix(&docs)
                .map_err(|e| e.to_string())?
                .to_path_buf();
            let aside = held_dir.join(&rel);
            if let Some(parent) = aside.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            fs::rename(p, &aside).map_err(|e| format!("moving {}: {e}", p.display()))?;
            held.push(rel);
            held_bytes += len;
        } else {
            files += 1;
            bytes += len;
        }
        Ok(())
    })?;
    let mut list = String::new();
    for rel in &held {
        let _ = writeln!(list, "{}", rel.display());
    }
    fs::write(&held_list, list).map_err(|e| format!("{}: {e}", held_list.display()))?;
    fs::write(
        &marker,
        format!(
            "{want}files {files}, {bytes} bytes; held back {}\n",
            held.len()
        ),
    )
    .map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(Corpus {
        docs,
        held_dir,
        held,
        files,
        bytes,
        held_bytes,
    })
}

/// Calls `f` on every file under `dir` (recursively) in sorted path order,
/// one folder's listing in memory at a time; names ending in `.tmp` are
/// left out.
fn walk_sorted(dir: &Path, f: &mut dyn FnMut(&Path) -> Res<()>) -> Res<()> {
    let mut entries = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let kind = e.file_type().map_err(|e| e.to_string())?;
        entries.push((e.file_name(), kind.is_dir()));
    }
    entries.sort();
    for (name, is_dir) in entries {
        let p = dir.join(&name);
        if is_dir {
            walk_sorted(&p, f)?;
        } else if !name.to_string_lossy().ends_with(".tmp") {
            f(&p)?;
        }
    }
    Ok(())
}

fn count(dir: &Path) -> Res<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    walk_sorted(dir, &mut |p| {
        files += 1;
        bytes += fs::metadata(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .len();
        Ok(())
    })?;
    Ok((files, bytes))
}

// ---------------------------------------------------------------- scans

#[derive(Default, Clone, Copy)]
struct ScanTimes {
    read_wall: Duration,
    read_cpu: Duration,
    bare_wall: Duration,
    bare_cpu: Duration,
    ns_wall: Duration,
    ns_cpu: Duration,
    attr_wall: Duration,
    attr_cpu: Duration,
    files: u64,
    bytes: u64,
    /// Files a scan failed on (it stops early): bare, NsReader, + attributes.
    failed: [u64; 3],
}

#[derive(Clone, Copy)]
enum Scan {
    Bare,
    Ns,
    NsAttributes,
}

/// One pass over the corpus: read a chunk, then scan it with each scan (the
/// order rotates by chunk), each timed on its own.
fn scan_pass(docs: &Path) -> Res<ScanTimes> {
    let mut t = ScanTimes::default();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut chunk_bytes = 0usize;
    let mut chunks = 0u64;
    let mut read_started: Option<(Instant, Duration)> = None;
    walk_sorted(docs, &mut |p| {
        let (w0, c0) = *read_started.get_or_insert_with(|| (Instant::now(), thread_cpu()));
        let bytes = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        t.files += 1;
        t.bytes += bytes.len() as u64;
        chunk_bytes += bytes.len();
        chunk.push(bytes);
        if chunk_bytes >= CHUNK_BYTES {
            t.read_wall += w0.elapsed();
            t.read_cpu += thread_cpu().saturating_sub(c0);
            read_started = None;
            scan_chunk(&chunk, chunks, &mut t);
            chunks += 1;
            chunk.clear();
            chunk_bytes = 0;
        }
        Ok(())
    })?;
    if let Some((w0, c0)) = read_started {
        t.read_wall += w0.elapsed();
        t.read_cpu += thread_cpu().saturating_sub(c0);
    }
    if !chunk.is_empty() {
        scan_chunk(&chunk, chunks, &mut t);
    }
    Ok(t)
}

/// Scans the documents of one chunk with each scan, starting with a
/// different one for each chunk, each pass timed on its own.
fn scan_chunk(chunk: &[Vec<u8>], n: u64, t: &mut ScanTimes) {
    let order = [Scan::Bare, Scan::Ns, Scan::NsAttributes];
    for i in 0..order.len() {
        let scan = order[(i + n as usize) % order.len()];
        let (w0, c0) = (Instant::now(), thread_cpu());
        let mut failed = 0u64;
        for doc in chunk {
            let doc = std::hint::black_box(doc.as_slice());
            let ok = match scan {
                Scan::Bare => bare_scan(doc),
                Scan::Ns => ns_scan(doc, false),
                Scan::NsAttributes => ns_scan(doc, true),
            };
            failed += u64::from(!ok);
        }
        let (w, c) = (w0.elapsed(), thread_cpu().saturating_sub(c0));
        let (wall, cpu, k) = match scan {
            Scan::Bare => (&mut t.bare_wall, &mut t.bare_cpu, 0),
            Scan::Ns => (&mut t.ns_wall, &mut t.ns_cpu, 1),
            Scan::NsAttributes => (&mut t.attr_wall, &mut t.attr_cpu, 2),
        };
        *wall += w;
        *cpu += c;
        t.failed[k] += failed;
    }
}

/// This thread's CPU time (user + system), from the scheduler's clock
/// (`getrusage(RUSAGE_THREAD)` is only tick-precise).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

// ---------------------------------------------------------------- children

/// A measured child (`wait4`), and an error with the tail of its output
/// unless it exited 0.
fn run_child(cmd: &mut Command, what: &str) -> Res<hostile::Child> {
    let c = hostile::try_run_measured(cmd)?;
    if c.exit != 0 {
        return Err(format!(
            "{what} exited with {} after {:.1} s\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
            c.exit,
            c.wall.as_secs_f64(),
            tail(&c.stdout, 10),
            tail(&c.stderr, 40)
        ));
    }
    Ok(c)
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A command for the regfeed binary with no configuration override from
/// this environment.
fn regfeed_cmd(s: &Settings) -> Command {
    let mut c = Command::new(&s.bin);
    for (k, _) in regfeed::config::env_overrides() {
        c.env_remove(k);
    }
    c.env_remove("RUST_LOG").env("REGFEED_LOG", "warn");
    c
}

/// A run's own summary line: `thl-diabetes: new documents decoded N (from F
/// new or changed files, X MB; ...), ...; T s (decoding D s, store S s)`.
#[derive(Debug, Clone, Copy)]
struct Summary {
    decoded: u64,
    new_files: u64,
    mb: f64,
    total_s: f64,
    store_s: f64,
}

fn parse_summary(stdout: &str) -> Option<Summary> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{FEED}:")) && l.contains(" decoded "))?;
    let number = |after: &str, from: &str| -> Option<f64> {
        let at = from.find(after)? + after.len();
        let s = &from[at..];
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let times = &line[line.rfind("; ")?..];
    Some(Summary {
        decoded: number(" decoded ", line)? as u64,
        new_files: number("(from ", line)? as u64,
        mb: number(", ", &line[line.find("(from ")?..])?,
        total_s: number("; ", times)?,
        store_s: number("store ", times)?,
    })
}

/// One `once` run, measured.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
    summary: Summary,
}

fn once(s: &Settings, setup: &Path, workers: u32, pg_url: Option<&str>) -> Res<Run> {
    let mut cmd = regfeed_cmd(s);
    cmd.args(["once", "--feed", FEED, "--config"])
        .arg(setup.join("regfeed.toml"))
        .env("REGFEED_DAEMON__WORKERS", workers.to_string());
    if let Some(url) = pg_url {
        cmd.env("REGFEED_DATABASE__URL", url);
    }
    let what = format!(
        "regfeed once ({}, workers {workers}, {})",
        if pg_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        setup.display()
    );
    let c = run_child(&mut cmd, &what)?;
    let summary = parse_summary(&c.stdout).ok_or_else(|| {
        format!(
            "{what}: no summary line in its output\n--- stdout (tail)\n{}",
            tail(&c.stdout, 10)
        )
    })?;
    Ok(Run {
        wall: c.wall,
        cpu: c.cpu,
        max_rss_kib: c.max_rss_kib,
        summary,
    })
}

/// A fresh setup (keys, mappings, config; no store yet) in `dir`.
fn fresh_setup(s: &Settings, dir: &Path, docs: &Path) -> Res<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    run_child(
        regfeed_cmd(s)
            .arg("demo")
            .arg("--dir")
            .arg(dir)
            .arg("--corpus")
            .arg(docs)
            .arg("--setup-only"),
        "regfeed demo --setup-only",
    )?;
    Ok(())
}

// ---------------------------------------------------------------- PostgreSQL

/// Runs SQL on the server named by `admin` (on a thread of its own with a
/// runtime of its own); returns the first column of the first row, if any.
fn pg_admin(admin: &str, sql: String) -> Res<Option<String>> {
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        use sqlx::Connection as _;
        use sqlx::Row as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            if sql.starts_with("SELECT") || sql.starts_with("SHOW") {
                let row = sqlx::query(&sql)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                return row
                    .try_get::<String, _>(0)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            sqlx::raw_sql(&sql)
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        })
    })
    .join()
    .map_err(|_| "PostgreSQL admin thread panicked".to_owned())?
}

fn pg_version(admin: &str) -> Res<String> {
    Ok(pg_admin(admin, "SHOW server_version".into())?.unwrap_or_default())
}

/// `admin` with its database replaced by `name`.
fn pg_url_for(admin: &str, name: &str) -> Res<String> {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let (scheme, rest) = base
        .split_once("://")
        .ok_or("REGFEED_TEST_DATABASE_URL is not a postgres:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(format!("{scheme}://{host}/{name}{query}"))
}

/// A `once` on a database made for it and dropped after it.
fn once_on_fresh_pg(s: &Settings, admin: &str, setup: &Path, workers: u32, n: usize) -> Res<Run> {
    let name = format!("regfeed_bench_{}_{n}", std::process::id());
    pg_admin(admin, format!("CREATE DATABASE {name}"))
        .map_err(|e| format!("creating database {name}: {e}"))?;
    let run = pg_url_for(admin, &name).and_then(|url| once(s, setup, workers, Some(&url)));
    let dropped = pg_admin(
        admin,
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    let run = run?;
    dropped.map_err(|e| format!("dropping database {name}: {e}"))?;
    Ok(run)
}

// ---------------------------------------------------------------- one size

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }
}

struct SizeResult {
    patients: u32,
    files: u64,
    bytes: u64,
    held_files: u64,
    held_bytes: u64,
    scans: Vec<ScanTimes>,
    /// (store, workers) → runs.
    backfills: Vec<((Store, u32), Vec<Run>)>,
    incremental: Vec<Run>,
    idle: Vec<Run>,
    notes: Vec<String>,
}

fn one_size(s: &Settings, patients: u32) -> Res<SizeResult> {
    println!();
    let c = corpus(s, patients)?;
    let root = s.dir.join(format!("p{patients}"));
    println!(
        "{patients} patients: backfill {} files, {:.1} MB; held back {} files, {:.1} MB",
        c.files,
        c.bytes as f64 / 1e6,
        c.held.len(),
        c.held_bytes as f64 / 1e6
    );
    let mut r = SizeResult {
        patients,
        files: c.files,
        bytes: c.bytes,
        held_files: c.held.len() as u64,
        held_bytes: c.held_bytes,
        scans: Vec::new(),
        backfills: Vec::new(),
        incremental: Vec::new(),
        idle: Vec::new(),
        notes: Vec::new(),
    };
    // Warm the page cache: every measurement reads the same files.
    scan_pass_read_only(&c.docs)?;
    for rep in 1..=s.repeat {
        let t = scan_pass(&c.docs)?;
        println!(
            "  [{rep}/{}] scans: read {:.3} s, bare {:.3} s, NsReader {:.3} s, NsReader + attributes {:.3} s",
            s.repeat,
            t.read_wall.as_secs_f64(),
            t.bare_wall.as_secs_f64(),
            t.ns_wall.as_secs_f64(),
            t.attr_wall.as_secs_f64()
        );
        if t.failed.iter().any(|f| *f > 0) && rep == 1 {
            r.notes.push(format!(
                "scans: files failed (bare, NsReader, + attributes): {:?}; a failed file stops early",
                t.failed
            ));
        }
        r.scans.push(t);
    }
    let mut configs = vec![(Store::Sqlite, 1u32), (Store::Sqlite, 2)];
    if s.pg.is_some() {
        configs.extend([(Store::Postgres, 1), (Store::Postgres, 2)]);
    }
    r.backfills = configs.iter().map(|k| (*k, Vec::new())).collect();
    let mut pg_n = 0usize;
    for rep in 1..=s.repeat {
        for (i, &(store, workers)) in configs.iter().enumerate() {
            let setup = root.join(format!("setup-{}-w{workers}", store.name().to_lowercase()));
            fresh_setup(s, &setup, &c.docs)?;
            let run = match (store, &s.pg) {
                (Store::Postgres, Some(admin)) => {
                    pg_n += 1;
                    once_on_fresh_pg(s, admin, &setup, workers, pg_n)?
                }
                _ => once(s, &setup, workers, None)?,
            };
            println!(
                "  [{rep}/{}] backfill {} w{workers}: {:.2} s wall, {:.2} s CPU, {:.1} MiB, {}",
                s.repeat,
                store.name(),
                run.wall.as_secs_f64(),
                run.cpu.as_secs_f64(),
                run.max_rss_kib as f64 / 1024.0,
                summary_text(&run.summary)
            );
            if run.summary.decoded != c.files {
                r.notes.push(format!(
                    "backfill {} w{workers} run {rep}: decoded {} documents of {} files ({:.1} MB of {:.1})",
                    store.name(),
                    run.summary.decoded,
                    c.files,
                    run.summary.mb,
                    c.bytes as f64 / 1e6
                ));
            }
            r.backfills[i].1.push(run);
            if store == Store::Sqlite && workers == 2 {
                let (incr, idle) = incremental_and_idle(s, &c, &setup)?;
                println!(
                    "  [{rep}/{}] incremental: {:.2} s ({}); idle: {:.2} s ({})",
                    s.repeat,
                    incr.wall.as_secs_f64(),
                    summary_text(&incr.summary),
                    idle.wall.as_secs_f64(),
                    summary_text(&idle.summary)
                );
                if incr.summary.new_files != c.held.len() as u64 {
                    r.notes.push(format!(
                        "incremental run {rep}: {} new files, {} held back",
                        incr.summary.new_files,
                        c.held.len()
                    ));
                }
                if idle.summary.new_files != 0 {
                    r.notes.push(format!(
                        "idle run {rep}: {} new files",
                        idle.summary.new_files
                    ));
                }
                r.incremental.push(incr);
                r.idle.push(idle);
            } else {
                // Only the SQLite workers = 2 setup is kept.
                let _ = fs::remove_dir_all(&setup);
            }
        }
    }
    Ok(r)
}

/// The held-back 1 % into the corpus, `once`; `once` again with nothing new;
/// the held-back files aside again (also when a run failed).
fn incremental_and_idle(s: &Settings, c: &Corpus, setup: &Path) -> Res<(Run, Run)> {
    let runs = c.bring_in().and_then(|()| {
        let incr = once(s, setup, 2, None)?;
        let idle = once(s, setup, 2, None)?;
        Ok((incr, idle))
    });
    let aside = c.put_aside();
    let runs = runs?;
    if !aside? {
        return Err("a held-back file is missing".into());
    }
    Ok(runs)
}

fn scan_pass_read_only(docs: &Path) -> Res<()> {
    walk_sorted(docs, &mut |p| {
        let b = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::hint::black_box(b);
        Ok(())
    })
}

fn summary_text(s: &Summary) -> String {
    format!(
        "decoded {} (new files {}, {:.1} MB), run {:.2} s, store {:.2} s",
        s.decoded, s.new_files, s.mb, s.total_s, s.store_s
    )
}

// ---------------------------------------------------------------- report

/// Median and range of some figures.
#[derive(Clone, Copy)]
struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Stat {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let m = v.len() / 2;
    let med = if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    };
    Stat {
        med,
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn fmt_stat(s: Stat, decimals: usize) -> String {
    if s.min == s.max {
        format!("{:.*}", decimals, s.med)
    } else {
        format!(
            "{:.*} [{:.*}–{:.*}]",
            decimals, s.med, decimals, s.min, decimals, s.max
        )
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn self_peak_kib() -> i64 {
    regfeed::telemetry::peak_rss_bytes().map_or(0, |b| (b / 1024) as i64)
}

fn ns_wall(r: &SizeResult) -> f64 {
    stat(r.scans.iter().map(|t| secs(t.ns_wall)).collect()).med
}

fn backfill(r: &SizeResult, store: Store, workers: u32) -> Option<&[Run]> {
    r.backfills
        .iter()
        .find(|(k, _)| *k == (store, workers))
        .map(|(_, v)| v.as_slice())
}

fn wall_med(runs: &[Run]) -> f64 {
    stat(runs.iter().map(|r| secs(r.wall)).collect()).med
}

fn max_rss_of(r: &SizeResult) -> i64 {
    r.backfills
        .iter()
        .flat_map(|(_, v)| v.iter())
        .chain(r.incremental.iter())
        .chain(r.idle.iter())
        .map(|x| x.max_rss_kib)
        .max()
        .unwrap_or(0)
}

fn print_table(s: &Settings, r: &SizeResult) {
    let parent_kib = self_peak_kib();
    let ns = ns_wall(r);
    let mb = r.bytes as f64 / 1e6;
    let docs = r.files as f64;
    println!();
    println!(
        "== {} patients: {} files, {:.1} MB (the backfill: corpus minus 1 %), {} runs each; median [min–max]",
        r.patients, r.files, mb, s.repeat
    );
    println!(
        "{:<32} {:>9} {:>8} {:>22} {:>20} {:>20} {:>13} {:>11}",
        "pass", "docs/s", "MB/s", "wall s", "CPU s", "peak RSS MiB", "store share", "× NsReader"
    );
    let row = |name: &str, wall: Stat, cpu: Stat, rss: &str, share: &str| {
        println!(
            "{:<32} {:>9.0} {:>8.1} {:>22} {:>20} {:>20} {:>13} {:>11}",
            name,
            docs / wall.med,
            mb / wall.med,
            fmt_stat(wall, 3),
            fmt_stat(cpu, 2),
            rss,
            share,
            format!("{:.2}", wall.med / ns)
        );
    };
    let scan = |f: fn(&ScanTimes) -> Duration| stat(r.scans.iter().map(|t| secs(f(t))).collect());
    row(
        "read files (page cache)",
        scan(|t| t.read_wall),
        scan(|t| t.read_cpu),
        "—",
        "—",
    );
    row(
        "bare quick-xml scan, 1 thread",
        scan(|t| t.bare_wall),
        scan(|t| t.bare_cpu),
        "—",
        "—",
    );
    row(
        "NsReader scan, 1 thread",
        scan(|t| t.ns_wall),
        scan(|t| t.ns_cpu),
        "—",
        "—",
    );
    row(
        "NsReader + attributes, 1 thread",
        scan(|t| t.attr_wall),
        scan(|t| t.attr_cpu),
        "—",
        "—",
    );
    let mut bounded = false;
    let rss_text = |runs: &[Run], bounded: &mut bool| {
        let st = stat(runs.iter().map(|x| x.max_rss_kib as f64 / 1024.0).collect());
        let mark = if runs.iter().any(|x| x.max_rss_kib <= parent_kib) {
            *bounded = true;
            "*"
        } else {
            ""
        };
        format!("{}{mark}", fmt_stat(st, 1))
    };
    for ((store, workers), runs) in &r.backfills {
        let share = stat(
            runs.iter()
                .map(|x| x.summary.store_s / x.summary.total_s.max(1e-9))
                .collect(),
        );
        row(
            &format!("once {} workers={workers}", store.name()),
            stat(runs.iter().map(|x| secs(x.wall)).collect()),
            stat(runs.iter().map(|x| secs(x.cpu)).collect()),
            &rss_text(runs, &mut bounded),
            &format!("{:.0} %", share.med * 100.0),
        );
    }
    let base = backfill(r, Store::Sqlite, 2).map_or(f64::NAN, wall_med);
    for (name, runs, files, bytes) in [
        (
            "incremental (+1 %), SQLite w2",
            &r.incremental,
            r.held_files,
            r.held_bytes,
        ),
        ("idle (nothing new), SQLite w2", &r.idle, 0, 0),
    ] {
        let wall = stat(runs.iter().map(|x| secs(x.wall)).collect());
        let cpu = stat(runs.iter().map(|x| secs(x.cpu)).collect());
        let share = stat(
            runs.iter()
                .map(|x| x.summary.store_s / x.summary.total_s.max(1e-9))
                .collect(),
        );
        println!(
            "{:<32} {:>9} {:>8} {:>22} {:>20} {:>20} {:>13} {:>11}",
            name,
            if files > 0 {
                format!("{:.0}", files as f64 / wall.med)
            } else {
                "—".to_owned()
            },
            if bytes > 0 {
                format!("{:.1}", bytes as f64 / 1e6 / wall.med)
            } else {
                "—".to_owned()
            },
            fmt_stat(wall, 3),
            fmt_stat(cpu, 2),
            rss_text(runs, &mut bounded),
            format!("{:.0} %", share.med * 100.0),
            "—"
        );
    }
    let incr = wall_med(&r.incremental);
    println!(
        "incremental run: {} files, {:.1} MB; {:.2} % of the SQLite workers=2 backfill's wall (target ≤ 5 %); idle run {:.3} s",
        r.held_files,
        r.held_bytes as f64 / 1e6,
        incr / base * 100.0,
        wall_med(&r.idle)
    );
    println!(
        "scans: files read into memory 8 MiB at a time, only the parse loop timed (reading is its own row); \
         feed runs: child process, wall spawn to reap, CPU and peak RSS from wait4 (regfeed's own, not the server's); \
         store share from the run's summary line; × NsReader = wall / NsReader scan wall (elements resolved, attributes not)"
    );
    if bounded {
        println!(
            "* at or below this bench process's own peak RSS ({:.1} MiB), which Linux folds into a child's ru_maxrss: an upper bound only",
            parent_kib as f64 / 1024.0
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn summary_line(r: &SizeResult) -> String {
    let mut out = format!("{} patients:", r.patients);
    let w1 = backfill(r, Store::Sqlite, 1).map_or(f64::NAN, wall_med);
    let w2 = backfill(r, Store::Sqlite, 2).map_or(f64::NAN, wall_med);
    let ns = ns_wall(r);
    let _ = write!(
        out,
        " backfill SQLite w1 {w1:.2} s, w2 {w2:.2} s, w2/w1 speed-up {:.2}× (target ≥ 1.7×), SQLite w2 / NsReader scan {:.1}× (target ≤ 2.5×);",
        w1 / w2,
        w2 / ns
    );
    match (
        backfill(r, Store::Postgres, 1),
        backfill(r, Store::Postgres, 2),
    ) {
        (Some(p1), Some(p2)) => {
            let _ = write!(
                out,
                " PostgreSQL/SQLite w1 {:.2}×, w2 {:.2}× (target ≤ 2×);",
                wall_med(p1) / w1,
                wall_med(p2) / w2
            );
        }
        _ => out.push_str(" PostgreSQL not run;"),
    }
    let _ = write!(
        out,
        " peak RSS {:.1} MiB (largest of all runs; target ≤ 256 MiB); incremental {:.2} % of backfill (target ≤ 5 %); idle {:.3} s",
        max_rss_of(r) as f64 / 1024.0,
        wall_med(&r.incremental) / w2 * 100.0,
        wall_med(&r.idle)
    );
    out
}
