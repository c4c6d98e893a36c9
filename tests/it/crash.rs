//! Crash test with the real binary: `regfeed once` against a generated
//! corpus and an HTTPS test register, killed (`abort`) at each named
//! failpoint in turn — while decoding, after staging, after sealing, mid
//! upload, after the receipt but before recording it — and restarted each
//! time. Afterwards every batch reached the register exactly once with the
//! content regfeed sealed, sequences are gapless, every source document is
//! accounted for, and `regfeed feed verify` passes on what the register
//! stored.
//!
//! By default 20 kills (four per point); `REGFEED_LONG_TESTS=1` runs 50
//! (ten per point) on a larger corpus (`scripts/long-tests.sh`).

use crate::common::delivery as helpers;
use crate::receiver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use helpers::{SinkSpec, secret_file, write_http_setup};
use receiver::Options;
use sqlx::Row;

const FEED: &str = "thl-diabetes";
const BIN: &str = env!("CARGO_BIN_EXE_regfeed");

fn long() -> bool {
    std::env::var_os("REGFEED_LONG_TESTS").is_some_and(|v| v == "1")
}

async fn run(args: Vec<String>, failpoint: Option<String>, mark: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(BIN);
        c.args(&args)
            .env("REGFEED_FAILPOINT_MARK", &mark)
            .env_remove("REGFEED_FAILPOINT")
            .env("REGFEED_LOG", "warn");
        if let Some(f) = failpoint {
            c.env("REGFEED_FAILPOINT", f);
        }
        c.output().expect("run regfeed")
    })
    .await
    .expect("join")
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("prefix").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Moves the next `n` files from `pending` into the source folder (rename:
/// producers write under another name, then rename).
fn feed_files(pending: &mut Vec<PathBuf>, from: &Path, to: &Path, n: usize) {
    for rel in pending.drain(..n.min(pending.len())) {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::rename(from.join(&rel), target).expect("move");
    }
}

fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_failpoint_and_restarted_nothing_is_lost_nothing_is_sent_twice() {
    let (patients, kills_per_point) = if long() { (400, 10) } else { (120, 4) };
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let received = tmp.path().join("received");
    let mut opts = Options::new(&received);
    opts.tls = Some(pki.clone());
    opts.token = Some("crash-token".into());
    let reg = receiver::start(opts).await;

    // A generated corpus, fed to the source folder a slice at a time.
    let all = tmp.path().join("all");
    let out = run(
        vec![
            "gen".into(),
            "--patients".into(),
            patients.to_string(),
            "--seed".into(),
            "20261122".into(),
            "--out".into(),
            all.to_string_lossy().into_owned(),
        ],
        None,
        tmp.path().join("unused"),
    )
    .await;
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let corpus = tmp.path().join("corpus");
    let mut pending = files(&all);
    let total_files = pending.len();

    let mut spec = SinkSpec::new(&reg.base_url);
    spec.ca = Some(pki.ca.clone());
    spec.token = Some(secret_file(&tmp.path().join("token"), "crash-token\n"));
    spec.max_documents_per_batch = Some(25);
    let config = write_http_setup(&tmp.path().join("setup"), &corpus, &spec);
    let once: Vec<String> = vec![
        "once".into(),
        "--feed".into(),
        FEED.into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ];
    let mark = tmp.path().join("failpoints.hit");

    let points = regfeed::failpoint::POINTS.len();
    let slice = total_files / (kills_per_point * points + 2) + 1;
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut runs = 0;
    for round in 0..kills_per_point {
        for point in regfeed::failpoint::POINTS {
            // Each point gets a few tries: a run with nothing to seal or
            // send does not reach the later points.
            let mut hit = false;
            for _ in 0..6 {
                if *point == "decode" || !hit {
                    feed_files(&mut pending, &all, &corpus, slice);
                }
                runs += 1;
                let before = marks(&mark).len();
                let out = run(once.clone(), Some(format!("{point}:1")), mark.clone()).await;
                if out.status.code().is_none() {
                    let m = marks(&mark);
                    assert_eq!(m.len(), before + 1, "{point}: the abort left its mark");
                    assert_eq!(m.last().map(String::as_str), Some(*point));
                    *kills.entry(point).or_default() += 1;
                    hit = true;
                    break;
                }
                assert!(
                    out.status.success(),
                    "round {round}, {point}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(hit, "round {round}: failpoint {point} was never reached");
        }
    }
    let total_kills: usize = kills.values().sum();
    eprintln!("crash test: {total_kills} kills over {runs} runs: {kills:?}");
    assert!(kills.len() == points && total_kills >= kills_per_point * points);

    // Everything else arrives; restarts until a clean run.
    feed_files(&mut pending, &all, &corpus, usize::MAX);
    let out = run(once.clone(), None, mark.clone()).await;
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(once.clone(), None, mark.clone()).await;
    assert!(
        out.status.success(),
        "idle run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The store: every batch delivered, gapless from 1.
    let app = helpers::open(&config).await;
    let outbox = app.store.outbox(Some(FEED)).await.expect("outbox");
    let seqs: Vec<i64> = outbox.iter().map(|e| e.seq).collect();
    assert!(!seqs.is_empty());
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    assert!(outbox.iter().all(|e| e.state == "delivered"), "{outbox:?}");

    // The register: each sequence once, with the bytes regfeed sealed.
    let s = reg.snapshot();
    assert_eq!(s.conflicts, 0, "no sequence was offered with other content");
    assert!(s.refused.is_empty(), "{:?}", s.refused);
    assert!(
        s.accepts.values().all(|&n| n == 1),
        "nothing accepted twice"
    );
    let at_register: Vec<(i64, String)> = s
        .accepted
        .iter()
        .filter(|((f, _), _)| f == FEED)
        .map(|((_, q), (d, _, _))| (*q as i64, d.clone()))
        .collect();
    let sealed: Vec<(i64, String)> = outbox
        .iter()
        .map(|e| (e.seq, e.data_sha256.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        at_register, sealed,
        "every batch reached the register as sealed"
    );
    eprintln!(
        "crash test: {} batches, {} idempotent repeats at the register",
        sealed.len(),
        s.duplicates
    );

    // Every source file is accounted for: decoded (then in a batch, held,
    // excluded or outside the cohort, as the feed decided) or quarantined.
    let pool = app.store.pool();
    let seen: i64 = sqlx::query("SELECT COUNT(*) FROM seen")
        .fetch_one(pool)
        .await
        .expect("seen")
        .get(0);
    assert_eq!(seen as usize, total_files, "every file was looked at");
    let unaccounted: i64 = sqlx::query(
        "SELECT COUNT(*) FROM seen s WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.path = s.path) AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.path = s.path)",
    )
    .fetch_one(pool)
    .await
    .expect("accounted")
    .get(0);
    assert_eq!(unaccounted, 0, "every file is a document or quarantined");
    let cursor = app.store.feed_cursor(FEED).await.expect("cursor");
    let max_doc: i64 = sqlx::query("SELECT COALESCE(MAX(doc_key), 0) FROM documents")
        .fetch_one(pool)
        .await
        .expect("max")
        .get(0);
    assert_eq!(cursor, max_doc, "the feed has processed every document");

    // What the register stored passes the receiver's offline check.
    let out = run(
        vec![
            "feed".into(),
            "verify".into(),
            received.join(FEED).to_string_lossy().into_owned(),
        ],
        None,
        mark.clone(),
    )
    .await;
    assert!(
        out.status.success(),
        "feed verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The operator commands, through the binary.
    let cfg = config.to_string_lossy().into_owned();
    let args = |v: &[&str]| -> Vec<String> {
        v.iter()
            .map(|s| s.to_string())
            .chain(["--config".into(), cfg.clone()])
            .collect()
    };
    let out = run(
        args(&["outbox", "list", "--feed", FEED, "--json"]),
        None,
        mark.clone(),
    )
    .await;
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.lines().count(), sealed.len());
    assert!(
        listed
            .lines()
            .all(|l| l.contains("\"state\":\"delivered\"")),
        "{listed}"
    );
    let out = run(
        args(&["outbox", "replay", "--feed", FEED, "--seq", "1"]),
        None,
        mark.clone(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        args(&["outbox", "retry", "--feed", FEED, "--seq", "1"]),
        None,
        mark.clone(),
    )
    .await;
    assert!(!out.status.success(), "only a dead batch is retried");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not dead"));
    assert_eq!(
        reg.snapshot().accepts.len(),
        sealed.len(),
        "a replay is not a new acceptance"
    );
}
