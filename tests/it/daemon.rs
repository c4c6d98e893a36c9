//! The daemon end to end with the real binary: scheduled runs every few
//! seconds delivering to a file-drop receiver, `/metrics` scraped, a broken
//! config refused on SIGHUP, a good one applied, SIGTERM → exit 0, and a
//! restart catching up the missed run once. Also `regfeed once` refused
//! while another process holds the feed's lease, and `regfeed status`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_regfeed");

/// Generous bounds for a loaded 2-core machine; nothing asserts speed.
const PATIENCE: Duration = Duration::from_secs(90);

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    base_config: String,
}

/// A corpus from `regfeed gen`, keys, mappings and a config whose diabetes
/// feed runs every 3 seconds.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let corpus = root.join("corpus");
    let out = Command::new(BIN)
        .args(["gen", "--patients", "40", "--seed", "6", "--out"])
        .arg(&corpus)
        .output()
        .expect("regfeed gen runs");
    assert!(out.status.success(), "gen: {out:?}");
    let s = regfeed::demo::write_setup(&root, &corpus).expect("setup written");
    let text = std::fs::read_to_string(&s.config).expect("config");
    let text = text.replacen(
        "[daemon]\nstate_dir = \"state\"\n",
        "[daemon]\nstate_dir = \"state\"\nshutdown_grace = \"20s\"\ndelivery_interval = \"1s\"\n\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
        1,
    );
    let text = with_schedule(&text, "thl-diabetes", "*/3 * * * * *");
    std::fs::write(&s.config, &text).expect("config written");
    Setup {
        _dir: dir,
        root,
        config: s.config,
        base_config: text,
    }
}

/// The config text with `schedule` added to the named feed.
fn with_schedule(text: &str, feed: &str, schedule: &str) -> String {
    let key = format!("record_key = \"keys/{feed}.record.key\"\n");
    assert!(text.contains(&key), "feed {feed} in the config");
    text.replacen(
        &key,
        &format!("{key}schedule = \"{schedule}\"\ncatch_up = \"once\"\n"),
        1,
    )
}

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

fn spawn_daemon(config: &Path) -> Daemon {
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("REGFEED_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("regfeed run starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    // Ends when the daemon closes its stderr (exits).
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
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -{sig}");
    }

    /// Log lines with this message (and, if given, this feed and trigger).
    fn count(&self, message: &str, feed: Option<&str>, trigger: Option<&str>) -> usize {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|v| v["message"] == message)
            .filter(|v| feed.is_none_or(|f| v["feed"] == f))
            .filter(|v| trigger.is_none_or(|t| v["trigger"] == t))
            .count()
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        let lines = self.lines.lock().expect("log lock");
        lines
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The telemetry address from the "listening" log line.
    fn telemetry(&self) -> String {
        self.wait_for("the telemetry endpoint", |d| {
            d.count("Telemetry endpoint listening.", None, None) > 0
        });
        let lines = self.lines.lock().expect("log lock");
        let line = lines
            .iter()
            .find(|v| v["message"] == "Telemetry endpoint listening.")
            .expect("listening line");
        line["listen"].as_str().expect("listen field").to_owned()
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
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
            std::thread::sleep(Duration::from_millis(50));
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

fn delivered_files(root: &Path, feed: &str) -> usize {
    std::fs::read_dir(root.join("delivered").join(feed))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_daemon_runs_on_schedule_reloads_stops_and_catches_up() {
    let s = setup();
    let mut d = spawn_daemon(&s.config);
    let addr = d.telemetry();

    // A few cycles: the first run stages the corpus and delivers it.
    d.wait_for("three scheduled runs of thl-diabetes", |d| {
        d.count("Run finished.", Some("thl-diabetes"), Some("schedule")) >= 3
    });
    assert!(delivered_files(&s.root, "thl-diabetes") >= 1);

    let (code, _) = common::http_get(&addr, "/healthz");
    assert_eq!(code, 200);
    let (code, body) = common::http_get(&addr, "/readyz");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, m) = common::http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "regfeed_build_info",
        "regfeed_runs_total",
        "regfeed_run_duration_seconds_bucket",
        "regfeed_documents_decoded_total",
        "regfeed_rows_total",
        "regfeed_batches_staged_total",
        "regfeed_batches_sealed_total",
        "regfeed_batches_delivered_total",
        "regfeed_outbox_backlog_batches",
        "regfeed_outbox_dead_batches",
        "regfeed_delivery_last_success_timestamp_seconds",
        "regfeed_run_next_timestamp_seconds",
        "regfeed_run_starts_skipped_total",
        "regfeed_audit_chain_entries",
        "regfeed_config_reloads_total",
        "regfeed_delivery_attempts_total",
        "regfeed_delivery_duration_seconds_bucket",
        "regfeed_outbox_oldest_undelivered_age_seconds",
        "regfeed_run_success_due_timestamp_seconds",
        "regfeed_store_up",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics:\n{m}");
    }
    // Every delivery (a file drop here) is an attempt, timed.
    let attempts = sample(
        &m,
        "regfeed_delivery_attempts_total{feed=\"thl-diabetes\",outcome=\"ok\",class=\"none\"}",
    )
    .unwrap_or(0.0);
    assert!(attempts >= 1.0, "{m}");
    assert_eq!(
        sample(
            &m,
            "regfeed_delivery_duration_seconds_count{feed=\"thl-diabetes\",outcome=\"ok\"}"
        ),
        Some(attempts)
    );
    assert!(sample(&m, "regfeed_audit_chain_entries").unwrap_or(0.0) > 0.0);
    let runs = |m: &str| {
        sample(
            m,
            "regfeed_runs_total{feed=\"thl-diabetes\",outcome=\"ok\"}",
        )
        .unwrap_or(0.0)
    };
    assert!(runs(&m) >= 3.0, "{m}");
    let decoded = sample(&m, "regfeed_documents_decoded_total{feed=\"thl-diabetes\"}");
    assert!(decoded.is_some_and(|n| n > 0.0), "{m}");
    let delivered = sample(&m, "regfeed_batches_delivered_total{feed=\"thl-diabetes\"}");
    assert!(delivered.is_some_and(|n| n >= 1.0), "{m}");
    assert!(
        !m.contains("hetu") && !m.contains(s.root.to_string_lossy().as_ref()),
        "no person and no path in metrics"
    );

    // A broken config is refused, counted, and the old one keeps running.
    std::fs::write(
        &s.config,
        with_schedule(&s.base_config, "thl-vaccination", "61 * * * *"),
    )
    .expect("broken config");
    d.signal("HUP");
    d.wait_for("the refusal", |d| {
        d.count("Configuration refused; the running one stays.", None, None) == 1
    });
    let (_, m) = common::http_get(&addr, "/metrics");
    assert_eq!(
        sample(&m, "regfeed_config_reloads_total{outcome=\"refused\"}"),
        Some(1.0)
    );
    let before = d.count("Run finished.", Some("thl-diabetes"), None);
    d.wait_for("runs going on after the refusal", |d| {
        d.count("Run finished.", Some("thl-diabetes"), None) > before
    });

    // A good one is applied: the vaccination feed gets a schedule.
    std::fs::write(
        &s.config,
        with_schedule(&s.base_config, "thl-vaccination", "*/2 * * * * *"),
    )
    .expect("good config");
    d.signal("HUP");
    d.wait_for("the reload", |d| {
        d.count("Configuration reloaded.", None, None) == 1
    });
    d.wait_for("a scheduled run of the newly scheduled feed", |d| {
        d.count("Run finished.", Some("thl-vaccination"), Some("schedule")) >= 1
    });
    let (_, m) = common::http_get(&addr, "/metrics");
    assert_eq!(
        sample(&m, "regfeed_config_reloads_total{outcome=\"applied\"}"),
        Some(1.0)
    );

    // SIGTERM: exit 0 within the grace period (20 s) and a margin.
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    assert_eq!(d.count("Daemon stopped.", None, None), 1);

    // Down long enough to miss at least two fire times of */3.
    std::thread::sleep(Duration::from_millis(6500));
    let mut d = spawn_daemon(&s.config);
    let addr = d.telemetry();
    d.wait_for("the catch-up run", |d| {
        d.count("Run finished.", Some("thl-diabetes"), Some("catch_up")) == 1
    });
    d.wait_for("a scheduled run after the catch-up", |d| {
        d.count("Run finished.", Some("thl-diabetes"), Some("schedule")) >= 1
    });
    // Once, however many fire times were missed.
    assert_eq!(
        d.count(
            "Catching up a run missed while the daemon was down.",
            Some("thl-diabetes"),
            None
        ),
        1
    );
    let (_, m) = common::http_get(&addr, "/metrics");
    assert_eq!(
        sample(
            &m,
            "regfeed_catch_ups_total{feed=\"thl-diabetes\",outcome=\"ran\"}"
        ),
        Some(1.0)
    );

    // status while the daemon runs.
    let out = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(&s.config)
        .output()
        .expect("status runs");
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let diabetes = status["feeds"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["feed"] == "thl-diabetes"))
        .expect("diabetes in status");
    assert_eq!(diabetes["schedule"], "*/3 * * * * *");
    assert_eq!(diabetes["last_run"]["outcome"], "ok");
    assert!(diabetes["next_run"].is_string());
    assert_eq!(diabetes["dead"], 0);
    assert!(diabetes["delivered"].as_i64().is_some_and(|n| n >= 1));

    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0));
    // No log line carries a source path.
    let corpus = s.root.join("corpus").to_string_lossy().into_owned();
    assert!(!d.log_text().contains(&corpus), "a source path was logged");
}

/// A lease held by another process (`daemon:1`), as a running daemon would.
struct HeldLease {
    rt: tokio::runtime::Runtime,
    store: regfeed::store::Store,
    lease: regfeed::store::Lease,
}

impl HeldLease {
    fn take(config: &Path, name: &str) -> HeldLease {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = regfeed::loaded::Config::load(config).expect("config");
        let store = rt
            .block_on(regfeed::store::Store::open(&cfg.database_url))
            .expect("store");
        let lease = rt
            .block_on(store.acquire_lease(name, "daemon:1", Duration::from_secs(300)))
            .expect("lease taken");
        HeldLease { rt, store, lease }
    }

    fn release(self) {
        self.rt
            .block_on(self.store.release_lease(&self.lease))
            .expect("released");
    }
}

#[test]
fn once_is_refused_while_another_process_holds_the_feeds_lease() {
    let s = setup();
    let held = HeldLease::take(&s.config, "thl-diabetes");
    let out = Command::new(BIN)
        .args(["once", "--feed", "thl-diabetes", "--config"])
        .arg(&s.config)
        .output()
        .expect("once runs");
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is being run by daemon:1"), "{err}");

    // With the lease back, it runs.
    held.release();
    let out = Command::new(BIN)
        .args(["once", "--feed", "thl-diabetes", "--config"])
        .arg(&s.config)
        .output()
        .expect("once runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn outbox_commands_wait_for_the_outbox_loop_of_their_feed() {
    let s = setup();
    let out = Command::new(BIN)
        .args(["once", "--feed", "thl-diabetes", "--config"])
        .arg(&s.config)
        .output()
        .expect("once runs");
    assert!(out.status.success(), "{out:?}");
    // A daemon's outbox loop is in a pass over the feed.
    let held = HeldLease::take(&s.config, "outbox:thl-diabetes");
    let replay = || {
        Command::new(BIN)
            .args(["outbox", "replay", "--feed", "thl-diabetes", "--seq", "1"])
            .arg("--config")
            .arg(&s.config)
            .output()
            .expect("outbox replay runs")
    };
    let out = replay();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is being run by daemon:1"), "{err}");
    let out = Command::new(BIN)
        .args(["outbox", "retry", "--feed", "thl-diabetes", "--seq", "1"])
        .arg("--config")
        .arg(&s.config)
        .output()
        .expect("outbox retry runs");
    assert_eq!(out.status.code(), Some(75), "{out:?}");

    // The pass over, the replay goes out.
    held.release();
    let out = replay();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("batch 1 replayed"),
        "{out:?}"
    );
}

#[test]
fn status_prints_every_feed_for_a_person() {
    let s = setup();
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&s.config)
        .output()
        .expect("status runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "thl-diabetes\n  schedule   */3 * * * * *  (Europe/Helsinki; catch-up: once)"
        ),
        "{text}"
    );
    // Times in UTC RFC 3339; Helsinki time only where labelled.
    assert!(text.contains("(times in UTC)"), "{text}");
    let next = text
        .lines()
        .find(|l| l.trim_start().starts_with("next run") && !l.ends_with('-'))
        .expect("a next run");
    let at = next.split_whitespace().nth(2).expect("a time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
        "{next}"
    );
    assert!(next.contains("(Helsinki local time "), "{next}");
    assert!(
        text.contains("thl-vaccination\n  schedule   none"),
        "{text}"
    );
    assert!(text.contains("last run   never"), "{text}");
}

/// Retention from the daemon: a batch delivered longer ago than
/// `[retention] delivered_batches` loses its sealed data file when the
/// feed's outbox loop starts, audited; its manifest stays.
#[test]
fn the_daemon_prunes_a_delivered_batch_past_its_retention() {
    let s = setup();
    std::fs::write(
        &s.config,
        format!(
            "{}\n[retention]\ndelivered_batches = \"1h\"\n",
            s.base_config
        ),
    )
    .expect("config");
    let feed = "thl-vaccination";
    let out = Command::new(BIN)
        .args(["once", "--feed", feed, "--config"])
        .arg(&s.config)
        .output()
        .expect("once runs");
    assert!(out.status.success(), "{out:?}");
    let cfg = regfeed::config::Config::load(&s.config).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(regfeed::store::Store::open(&cfg.database_url))
        .expect("store");
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    rt.block_on(
        sqlx::query("UPDATE batches SET delivered_at = $1 WHERE feed = $2 AND seq = 1")
            .bind(&two_hours_ago)
            .bind(feed)
            .execute(store.pool()),
    )
    .expect("backdate");
    let b = rt.block_on(store.batches(Some(feed))).expect("batches");
    assert_eq!(b[0].state, "delivered");
    let dir = cfg.state_dir.join("outbox").join(feed);
    let data = dir.join(b[0].data_file.as_deref().expect("sealed"));
    let manifest = dir.join(regfeed::feed::manifest_file_name(feed, 1));
    assert!(data.is_file() && manifest.is_file());

    let d = spawn_daemon(&s.config);
    d.wait_for("the prune", |d| {
        d.count(
            "A delivered batch's data file was pruned after its retention.",
            Some(feed),
            None,
        ) == 1
    });
    assert!(!data.exists(), "the data file is pruned");
    assert!(manifest.is_file(), "the manifest stays");
    let audited: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit WHERE kind = 'batch_pruned' AND feed = $1",
            )
            .bind(feed)
            .fetch_one(store.pool()),
        )
        .expect("count");
    assert_eq!(audited, 1);
}
