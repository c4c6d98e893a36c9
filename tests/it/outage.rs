//! The daemon through an outage (issue 14), with the real binary and the
//! test register:
//!
//! - a register that fails for a while, then recovers: while it is down the
//!   failed-attempt counter rises, the backlog's age grows, runs go on (the
//!   outbox loop waits out its backoff, not the run) and `/readyz` turns
//!   false once delivery has failed for the configured time; afterwards
//!   everything arrives once, in order, and the gauges return;
//! - a daemon killed with a batch `sending`, and one killed with a batch
//!   `staged`: the restarted daemon delivers both with no run at all (one
//!   feed without a schedule, one whose schedule does not fire);
//! - a register that asks for ten minutes' patience: the loop waits, runs go
//!   on, and SIGTERM ends the wait at once;
//! - a store that fails as a full disk does (the `store_full` failpoint):
//!   runs fail naming the store, `/readyz` says the store takes no writes,
//!   and once the fault is gone the next run works, with no SIGHUP; a source
//!   folder that vanishes makes `/readyz` fail too, naming the source.
//!
//! A `/metrics` scrape taken during the outage is written to
//! `$CARGO_TARGET_TMPDIR/outage-scrape.txt`.

use crate::common;
use crate::common::delivery as helpers;
use crate::receiver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{SinkSpec, write_http_setup};
use receiver::{Fault, Options, Req};

const BIN: &str = env!("CARGO_BIN_EXE_regfeed");
const DIABETES: &str = "thl-diabetes";
const VACCINATION: &str = "thl-vaccination";

/// Generous bounds for a loaded 2-core machine; nothing asserts speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running `regfeed run` with its JSON log lines collected.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_daemon(config: &Path, env: &[(&str, String)]) -> Daemon {
    let mut c = Command::new(BIN);
    c.args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("REGFEED_LOG", "info")
        .env("REGFEED_TELEMETRY__LISTEN", "127.0.0.1:0")
        .env_remove("REGFEED_FAILPOINT")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("regfeed run starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|_| serde_json::json!({ "message": line }));
            sink.lock().expect("log lock").push(v);
        }
    });
    Daemon { child, lines }
}

impl Daemon {
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -{sig}");
    }

    fn count(&self, message: &str, feed: Option<&str>) -> usize {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|v| v["message"] == message)
            .filter(|v| feed.is_none_or(|f| v["feed"] == f))
            .count()
    }

    fn lines_with(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|v| v["message"] == message)
            .cloned()
            .collect()
    }

    fn log_text(&self) -> String {
        let lines = self.lines.lock().expect("log lock");
        lines
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_for(&self, what: &str, mut ok: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn telemetry(&self) -> String {
        self.wait_for("the telemetry endpoint", |d| {
            d.count("Telemetry endpoint listening.", None) > 0
        })
        .await;
        let line = self
            .lines_with("Telemetry endpoint listening.")
            .pop()
            .expect("listening line");
        line["listen"].as_str().expect("listen field").to_owned()
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                start.elapsed() < within,
                "daemon still running; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A sample's value from Prometheus text, by its exact series name.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn scrape(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || common::http_get(&addr, "/metrics"))
        .await
        .expect("join")
        .1
}

async fn ready(addr: &str) -> (u16, String) {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || common::http_get(&addr, "/readyz"))
        .await
        .expect("join")
}

/// A generated corpus in `dir`.
fn gen_corpus(dir: &Path, patients: u32, seed: u32) {
    let out = Command::new(BIN)
        .args([
            "gen",
            "--patients",
            &patients.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("regfeed gen runs");
    assert!(out.status.success(), "gen: {out:?}");
}

/// The config text with `schedule` (and `catch_up = "skip"`) given to `feed`.
fn with_schedule(text: &str, feed: &str, schedule: &str) -> String {
    let key = format!("record_key = \"keys/{feed}.record.key\"\n");
    assert!(text.contains(&key), "feed {feed} in the config");
    text.replacen(
        &key,
        &format!("{key}schedule = \"{schedule}\"\ncatch_up = \"skip\"\n"),
        1,
    )
}

/// The daemon settings the tests use: deliveries looked at every second.
fn with_daemon(text: &str) -> String {
    text.replacen(
        "[daemon]\n",
        "[daemon]\nshutdown_grace = \"10s\"\ndelivery_interval = \"1s\"\n",
        1,
    )
}

/// The store's file, from the config.
fn database(config: &Path) -> String {
    regfeed::loaded::Config::load(config)
        .expect("config")
        .database_url
        .to_string()
}

/// Batches of a feed as the store has them: (seq, state).
async fn states(config: &Path, feed: &str) -> Vec<(i64, String)> {
    let store = regfeed::store::Store::open(&database(config))
        .await
        .expect("store");
    store
        .batches(Some(feed))
        .await
        .expect("batches")
        .into_iter()
        .map(|b| (b.seq, b.state))
        .collect()
}

/// Checks what the register got for `feed`: every sequence once, in order,
/// gapless from 1 to `n`, and the store says all of them are delivered.
async fn assert_delivered_once(reg: &receiver::Receiver, config: &Path, feed: &str, n: usize) {
    let s = reg.snapshot();
    let seqs: Vec<u64> = s
        .log
        .iter()
        .filter(|(f, _)| f == feed)
        .map(|(_, q)| *q)
        .collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "{feed}: accepted once each, in order, gapless"
    );
    assert!(
        s.accepts
            .iter()
            .filter(|((f, _, _), _)| f == feed)
            .all(|(_, n)| *n == 1),
        "{feed}: nothing accepted twice"
    );
    assert_eq!(s.conflicts, 0);
    assert!(s.refused.is_empty(), "{:?}", s.refused);
    let st = states(config, feed).await;
    assert_eq!(st.len(), n, "{feed}: {st:?}");
    assert!(st.iter().all(|(_, s)| s == "delivered"), "{feed}: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_outage_is_counted_shown_and_recovered_from() {
    let tmp = tempfile::tempdir().expect("tmp");
    let down = Arc::new(AtomicBool::new(true));
    let mut opts = Options::new(&tmp.path().join("received"));
    let d2 = down.clone();
    opts.injector = Arc::new(move |_: &Req| {
        if d2.load(Ordering::SeqCst) {
            Fault::Unavailable
        } else {
            Fault::None
        }
    });
    let reg = receiver::start(opts).await;

    let corpus = tmp.path().join("corpus");
    gen_corpus(&corpus, 40, 14);
    let mut spec = SinkSpec::new(&reg.base_url);
    spec.base = "200ms";
    spec.cap = "1s";
    spec.max_elapsed = "10m";
    spec.max_documents_per_batch = Some(25);
    let config = write_http_setup(&tmp.path().join("setup"), &corpus, &spec);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = with_schedule(&with_daemon(&text), DIABETES, "*/2 * * * * *");
    std::fs::write(&config, text).expect("config");

    let unready_after = 4.0;
    let mut d = spawn_daemon(
        &config,
        &[(
            "REGFEED_TELEMETRY__UNREADY_AFTER_DELIVERY_FAILING",
            "4s".into(),
        )],
    );
    let addr = d.telemetry().await;
    let failed = |m: &str| {
        sum(
            m,
            "regfeed_delivery_attempts_total",
            &[
                "feed=\"thl-diabetes\"",
                "outcome=\"failed\"",
                "class=\"http_5xx\"",
            ],
        )
    };
    let series = |m: &str, name: &str| sample(m, &format!("{name}{{feed=\"thl-diabetes\"}}"));

    // The register is down: attempts fail and are counted.
    let start = Instant::now();
    let m1 = loop {
        let m = scrape(&addr).await;
        if failed(&m) >= 3.0 {
            break m;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no failed attempts counted:\n{m}\nlog:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runs_before = d.count("Run finished.", Some(DIABETES));
    // Readiness turns false once delivery has failed for 4 s, not before.
    let start = Instant::now();
    let body = loop {
        let m = scrape(&addr).await;
        let since =
            series(&m, "regfeed_delivery_failing_since_timestamp_seconds").expect("failing since");
        assert!(since > 0.0, "{m}");
        let (code, body) = ready(&addr).await;
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        if code == 503 {
            assert!(
                now - since >= unready_after - 0.5,
                "not ready after {:.1} s only: {body}",
                now - since
            );
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            now - since < unready_after + 3.0,
            "still ready {:.1} s into the outage",
            now - since
        );
        assert!(start.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        body.contains("delivery of feed thl-diabetes has failed for"),
        "{body}"
    );
    // Runs go on meanwhile: the backoff is the outbox loop's, not the run's.
    d.wait_for("runs during the outage", |d| {
        d.count("Run finished.", Some(DIABETES)) >= runs_before + 2
    })
    .await;
    let m2 = scrape(&addr).await;
    assert!(failed(&m2) > failed(&m1), "the failed attempts rise");
    let age1 = series(&m1, "regfeed_outbox_oldest_undelivered_age_seconds").expect("age");
    let age2 = series(&m2, "regfeed_outbox_oldest_undelivered_age_seconds").expect("age");
    assert!(
        age2 > age1 && age1 > 0.0,
        "the backlog ages: {age1} → {age2}"
    );
    let backlog = series(&m2, "regfeed_outbox_backlog_batches").expect("backlog");
    assert!(backlog >= 1.0, "{m2}");
    assert_eq!(
        sample(
            &m2,
            "regfeed_run_starts_skipped_total{feed=\"thl-diabetes\",reason=\"overlap\"}"
        ),
        Some(0.0),
        "no fire skipped behind a delivery"
    );
    assert_eq!(sample(&m2, "regfeed_store_up"), Some(1.0));
    assert_eq!(
        sample(
            &m2,
            "regfeed_delivery_attempts_total{feed=\"thl-diabetes\",outcome=\"ok\",class=\"none\"}"
        ),
        Some(0.0)
    );
    let scrape_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outage-scrape.txt");
    let during: String = m2
        .lines()
        .filter(|l| l.starts_with("regfeed_") || l.starts_with("process_"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&scrape_file, format!("{during}\n")).expect("scrape file");
    eprintln!("outage scrape written to {}", scrape_file.display());

    // The register is back: everything arrives, once, and the gauges return.
    down.store(false, Ordering::SeqCst);
    let start = Instant::now();
    let m3 = loop {
        let m = scrape(&addr).await;
        if series(&m, "regfeed_outbox_backlog_batches") == Some(0.0)
            && series(&m, "regfeed_outbox_oldest_undelivered_age_seconds") == Some(0.0)
            && series(&m, "regfeed_delivery_failing_since_timestamp_seconds") == Some(0.0)
        {
            break m;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "not recovered:\n{m}\nlog:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (code, body) = ready(&addr).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let staged = sum(
        &m3,
        "regfeed_batches_staged_total",
        &["feed=\"thl-diabetes\""],
    );
    let delivered = sum(
        &m3,
        "regfeed_batches_delivered_total",
        &["feed=\"thl-diabetes\""],
    );
    assert!(staged >= 2.0, "{m3}");
    assert_eq!(delivered, staged, "{m3}");
    let ok = sample(
        &m3,
        "regfeed_delivery_attempts_total{feed=\"thl-diabetes\",outcome=\"ok\",class=\"none\"}",
    )
    .expect("ok attempts");
    assert_eq!(ok, staged, "one successful attempt per batch");
    assert_eq!(
        sample(
            &m3,
            "regfeed_delivery_duration_seconds_count{feed=\"thl-diabetes\",outcome=\"ok\"}"
        ),
        Some(ok),
        "the latency histogram fills"
    );
    assert!(series(&m3, "regfeed_delivery_last_success_timestamp_seconds").unwrap_or(0.0) > 0.0);
    assert!(sample(&m3, "regfeed_audit_chain_entries").unwrap_or(0.0) > 0.0);
    assert!(sample(&m3, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&m3, "process_open_fds").unwrap_or(0.0) > 0.0);
    assert_eq!(
        sample(&m3, "regfeed_outbox_dead_batches{feed=\"thl-diabetes\"}"),
        Some(0.0)
    );
    assert_delivered_once(&reg, &config, DIABETES, staged as usize).await;

    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    let corpus_text = corpus.to_string_lossy().into_owned();
    assert!(
        !d.log_text().contains(&corpus_text),
        "a source path was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_left_sending_or_staged_by_a_kill_are_delivered_at_restart_with_no_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The first attempt at vaccination batch 2 is accepted, but answered
    // only after a minute: the daemon is killed meanwhile.
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.injector = Arc::new(|r: &Req| {
        if r.feed == VACCINATION && r.seq == 2 && r.tries == 1 {
            Fault::Slow(Duration::from_secs(60))
        } else {
            Fault::None
        }
    });
    let reg = receiver::start(opts).await;
    let corpus = tmp.path().join("corpus");
    gen_corpus(&corpus, 40, 15);
    let mut spec = SinkSpec::new(&reg.base_url);
    spec.attempt_timeout = "90s";
    spec.max_documents_per_batch = Some(25);
    let config = write_http_setup(&tmp.path().join("setup"), &corpus, &spec);
    let base = with_daemon(&std::fs::read_to_string(&config).expect("config"));
    let mark = tmp.path().join("failpoints.hit");

    // 1. Killed right after a run of the diabetes feed staged a batch: it
    // stays `staged`. (A chunk may stage no batch: then again, from the
    // next chunk.)
    std::fs::write(&config, with_schedule(&base, DIABETES, "*/2 * * * * *")).expect("config");
    let mut kills = 0;
    while states(&config, DIABETES).await.is_empty() {
        kills += 1;
        assert!(kills <= 3, "no diabetes batch staged");
        let mut d = spawn_daemon(
            &config,
            &[
                ("REGFEED_FAILPOINT", "staged:1".into()),
                (
                    "REGFEED_FAILPOINT_MARK",
                    mark.to_string_lossy().into_owned(),
                ),
            ],
        );
        let st = d.wait_exit(PATIENCE).await;
        assert!(st.code().is_none(), "aborted by the failpoint: {st:?}");
        assert_eq!(
            std::fs::read_to_string(&mark).expect("mark"),
            "staged\n".repeat(kills)
        );
    }
    assert_eq!(states(&config, DIABETES).await, vec![(1, "staged".into())]);

    // 2. Vaccination batches staged (the feed has no schedule), and a
    // daemon whose diabetes schedule does not fire for a year: killed while
    // vaccination batch 2 is being sent.
    {
        let app = helpers::open(&config).await;
        helpers::stage_synthetic(&app, VACCINATION, 3).await;
    }
    let quiet = with_schedule(&base, DIABETES, "0 0 1 1 *");
    std::fs::write(&config, &quiet).expect("config");
    let d = spawn_daemon(&config, &[]);
    let start = Instant::now();
    loop {
        let v = states(&config, VACCINATION).await;
        if reg.snapshot().injected.get("slow").copied().unwrap_or(0) >= 1
            && v.get(1).is_some_and(|(_, s)| s == "sending")
        {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{v:?}\nlog:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.count("Run started.", None), 0, "{}", d.log_text());
    d.signal("KILL");
    drop(d);
    let v = states(&config, VACCINATION).await;
    assert_eq!(
        v,
        vec![
            (1, "delivered".into()),
            (2, "sending".into()),
            (3, "staged".into())
        ]
    );
    // The staged diabetes batch went out with no run: the loop took it.
    assert_eq!(
        states(&config, DIABETES).await,
        vec![(1, "delivered".into())]
    );

    // 3. Restarted: the batch left `sending` (and the one behind it) is
    // delivered with no schedule fire and no run.
    let mut d = spawn_daemon(&config, &[]);
    let start = Instant::now();
    while states(&config, VACCINATION)
        .await
        .iter()
        .any(|(_, s)| s != "delivered")
    {
        assert!(start.elapsed() < PATIENCE, "log:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.count("Run started.", None), 0, "{}", d.log_text());
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    assert_delivered_once(&reg, &config, VACCINATION, 3).await;
    assert_delivered_once(&reg, &config, DIABETES, 1).await;
    let s = reg.snapshot();
    assert!(
        s.duplicates >= 1,
        "batch 2 was sent again and answered idempotently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_store_fault_the_daemon_recovers_by_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = receiver::start(Options::new(&tmp.path().join("received"))).await;
    let all = tmp.path().join("all");
    gen_corpus(&all, 60, 16);
    let corpus = tmp.path().join("corpus");
    let files = common::files_under(&all);
    let (first, later) = files.split_at(files.len() / 2);
    let release = |files: &[PathBuf]| {
        for f in files {
            let to = corpus.join(f.strip_prefix(&all).expect("under all"));
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::rename(f, to).expect("move");
        }
    };
    release(first);
    let spec = SinkSpec::new(&reg.base_url);
    let config = write_http_setup(&tmp.path().join("setup"), &corpus, &spec);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        with_schedule(&with_daemon(&text), DIABETES, "*/2 * * * * *"),
    )
    .expect("config");
    let full = tmp.path().join("disk-full");
    let mark = tmp.path().join("failpoints.hit");
    let mut d = spawn_daemon(
        &config,
        &[
            ("REGFEED_FAILPOINT", "store_full".into()),
            ("REGFEED_FAILPOINT_ACTION", "fail".into()),
            (
                "REGFEED_FAILPOINT_WHILE",
                full.to_string_lossy().into_owned(),
            ),
            (
                "REGFEED_FAILPOINT_MARK",
                mark.to_string_lossy().into_owned(),
            ),
        ],
    );
    let addr = d.telemetry().await;
    d.wait_for("a run that delivers", |d| {
        d.count("Outbox delivered.", Some(DIABETES)) >= 1
    })
    .await;
    let delivered_before = states(&config, DIABETES).await.len();
    assert!(delivered_before >= 1);

    // The disk fills up: runs fail, naming the store; readiness says so.
    std::fs::write(&full, "").expect("fault on");
    d.wait_for("runs failing on the store", |d| {
        d.count("Run failed.", Some(DIABETES)) >= 2
    })
    .await;
    let failure = d.lines_with("Run failed.").pop().expect("a failed run");
    let error = failure["error"].as_str().unwrap_or_default().to_owned();
    let db = database(&config);
    let db_path = db.trim_start_matches("sqlite://");
    assert!(
        error.starts_with("SQLite store ") && error.contains(db_path),
        "the error names the store: {error}"
    );
    assert!(error.contains("database or disk is full"), "{error}");
    let (code, body) = ready(&addr).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("does not take writes"), "{body}");
    let m = scrape(&addr).await;
    assert_eq!(sample(&m, "regfeed_store_up"), Some(0.0), "{m}");
    // New documents arrive meanwhile.
    release(later);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The disk is freed: the next run works, with no SIGHUP and no restart.
    std::fs::remove_file(&full).expect("fault off");
    let failed_runs = d.count("Run failed.", Some(DIABETES));
    let finished = d.count("Run finished.", Some(DIABETES));
    d.wait_for("a run after the fault", |d| {
        d.count("Run finished.", Some(DIABETES)) > finished
    })
    .await;
    let start = Instant::now();
    loop {
        let st = states(&config, DIABETES).await;
        if st.len() > delivered_before && st.iter().all(|(_, s)| s == "delivered") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{st:?}\nlog:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = ready(&addr).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let m = scrape(&addr).await;
    assert_eq!(sample(&m, "regfeed_store_up"), Some(1.0), "{m}");
    // At most the run under way when the fault ended failed after it.
    assert!(d.count("Run failed.", Some(DIABETES)) <= failed_runs + 1);
    // A source that cannot be read is not ready either, and is named.
    let gone = tmp.path().join("corpus-gone");
    std::fs::rename(&corpus, &gone).expect("hide the source");
    // (Probes are reused for a second.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, body) = ready(&addr).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("source kanta-archive cannot be read"),
        "{body}"
    );
    assert!(!body.contains(corpus.to_string_lossy().as_ref()), "{body}");
    let m = scrape(&addr).await;
    assert_eq!(
        sample(&m, "regfeed_source_up{source=\"kanta-archive\"}"),
        Some(0.0),
        "{m}"
    );
    std::fs::rename(&gone, &corpus).expect("restore the source");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, body) = ready(&addr).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let log = d.log_text();
    assert!(!log.contains("non-zero transaction depth"), "{log}");
    assert!(!log.contains("Run fenced"), "{log}");
    assert_eq!(d.count("Configuration reloaded.", None), 0);
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    let n = states(&config, DIABETES).await.len();
    assert_delivered_once(&reg, &config, DIABETES, n).await;
    assert!(
        std::fs::read_to_string(&mark)
            .unwrap_or_default()
            .contains("store_full")
    );
    let corpus_text = corpus.to_string_lossy().into_owned();
    assert!(!log.contains(&corpus_text), "a source path was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backoff_holds_no_run_and_ends_at_once_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The register asks for ten minutes' patience, every time.
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.injector = Arc::new(|_: &Req| Fault::TooMany("600".into()));
    let reg = receiver::start(opts).await;
    let corpus = tmp.path().join("corpus");
    gen_corpus(&corpus, 40, 17);
    let mut spec = SinkSpec::new(&reg.base_url);
    spec.max_elapsed = "1h";
    let config = write_http_setup(&tmp.path().join("setup"), &corpus, &spec);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        with_schedule(&with_daemon(&text), DIABETES, "*/2 * * * * *"),
    )
    .expect("config");
    let mut d = spawn_daemon(&config, &[]);
    d.wait_for("an attempt told to wait", |d| {
        d.count("Delivery failed; retrying.", Some(DIABETES)) >= 1
    })
    .await;
    let retry = d
        .lines_with("Delivery failed; retrying.")
        .pop()
        .expect("retry line");
    assert!(
        retry["delay_ms"].as_u64().unwrap_or(0) >= 600_000,
        "Retry-After honoured: {retry}"
    );
    // Runs go on while the loop waits.
    let runs = d.count("Run finished.", Some(DIABETES));
    d.wait_for("two more runs", |d| {
        d.count("Run finished.", Some(DIABETES)) >= runs + 2
    })
    .await;
    assert_eq!(reg.snapshot().requests, 1, "one attempt, then the wait");
    // SIGTERM ends the wait at once (the grace period is 10 s).
    let stop = Instant::now();
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stop.elapsed()
    );
    assert_eq!(
        states(&config, DIABETES)
            .await
            .first()
            .map(|(_, s)| s.clone()),
        Some("sending".into()),
        "the batch waits, `sending`, for the next daemon"
    );
}
