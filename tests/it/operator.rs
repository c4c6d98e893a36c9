//! What an operator does with the store day to day (issue 15): find a
//! quarantined document, fix it and retry it (`regfeed quarantine`), and
//! keep `state/outbox` from growing for ever (retention of delivered
//! batches, audited).

use crate::common;
use crate::common::delivery as helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use regfeed::store::Store;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Configs whose commands use a PostgreSQL database (its URL) instead of
/// the config's SQLite file.
static DB: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

fn use_db(config: &Path, db: Option<&str>) {
    if let Some(url) = db {
        DB.lock()
            .expect("lock")
            .push((config.to_path_buf(), url.to_owned()));
    }
}

fn regfeed(args: &[&str], config: &Path) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfeed"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("REGFEED_LOG", "warn")
        .env_remove("RUST_LOG");
    let url = DB
        .lock()
        .expect("lock")
        .iter()
        .find(|(c, _)| c == config)
        .map(|(_, u)| u.clone());
    if let Some(url) = url {
        cmd.env("REGFEED_DATABASE__URL", url);
    }
    let out = cmd.output().expect("run regfeed");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The number after `new documents decoded ` in a run's summary.
fn decoded(out: &Out) -> u64 {
    let at = out
        .stdout
        .find("new documents decoded ")
        .unwrap_or_else(|| panic!("no summary:\n{}\n{}", out.stdout, out.stderr));
    out.stdout[at + "new documents decoded ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

fn quarantine_json(config: &Path) -> Vec<serde_json::Value> {
    let out = regfeed(&["quarantine", "list", "--json"], config);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Writes `bytes` over `path` and gives it back its modification time: the
/// listing sees the same size and time, so only `retry` can make a run read
/// it again.
fn overwrite_keeping_mtime(path: &Path, bytes: &[u8], mtime: std::time::SystemTime) {
    std::fs::write(path, bytes).expect("write");
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
}

#[test]
fn a_quarantined_document_is_listed_fixed_retried_and_then_decoded() {
    quarantine_case(None);
}

#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
#[test]
fn a_quarantined_document_is_retried_on_postgres() {
    if let Some(db) = common::PgDb::create("quarantine") {
        quarantine_case(Some(&db.url));
    }
}

fn quarantine_case(db: Option<&str>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    regfeed::synth::write_corpus(&regfeed::synth::plan(30, 5), &corpus).expect("corpus");
    // One document is broken before the first run: same length, same time.
    let victim: PathBuf = common::files_under(&corpus.join("docs"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "xml"))
        .expect("a document");
    let good = std::fs::read(&victim).expect("read");
    let mtime = std::fs::metadata(&victim)
        .expect("meta")
        .modified()
        .expect("mtime");
    let broken = vec![b'#'; good.len()];
    overwrite_keeping_mtime(&victim, &broken, mtime);
    let broken_sha = regfeed::feed::sha256_hex(&broken);
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let config = setup.config.as_path();
    use_db(config, db);

    let first = regfeed(&["once", "--feed", "thl-diabetes"], config);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(decoded(&first) > 0);

    // Listed, by digest, class, feeds and times; filters narrow it.
    let listed = quarantine_json(config);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let e = &listed[0];
    assert_eq!(e["digest"], broken_sha.as_str());
    assert!(!e["class"].as_str().expect("class").is_empty());
    assert!(
        e["feeds"]
            .as_array()
            .expect("feeds")
            .iter()
            .any(|f| f == "thl-diabetes"),
        "{e}"
    );
    assert!(e["first_seen"].as_str().expect("time").ends_with('Z'));
    assert_eq!(e.get("path"), None, "the raw locator is never printed");
    let class = e["class"].as_str().expect("class").to_owned();
    let none = regfeed(
        &["quarantine", "list", "--json", "--class", "no_such_class"],
        config,
    );
    assert_eq!(none.stdout.trim(), "", "the class filter keeps nothing");
    let since = regfeed(
        &["quarantine", "list", "--json", "--since", "2999-01-01"],
        config,
    );
    assert_eq!(since.stdout.trim(), "", "the time filter keeps nothing");
    let table = regfeed(&["quarantine", "list", "--feed", "thl-diabetes"], config);
    assert!(
        table.stdout.starts_with("digest"),
        "a header: {}",
        table.stdout
    );
    assert!(table.stdout.contains(&broken_sha), "{}", table.stdout);

    // Shown by a prefix of its digest.
    let prefix = &broken_sha[..12];
    let shown = regfeed(&["quarantine", "show", prefix], config);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains(&class) && shown.stdout.contains("locator"));
    assert!(shown.stdout.contains("kanta-archive:"), "{}", shown.stdout);

    // Retried while still broken: refused, still in quarantine.
    let still = regfeed(&["quarantine", "retry", prefix], config);
    assert_eq!(still.code, 1, "{}", still.stdout);
    assert!(still.stderr.contains("still refused"), "{}", still.stderr);
    assert_eq!(quarantine_json(config).len(), 1);

    // Fixed on disk with the same size and time: a run alone does not see it.
    overwrite_keeping_mtime(&victim, &good, mtime);
    let unseen = regfeed(&["once", "--feed", "thl-diabetes"], config);
    assert_eq!(unseen.code, 0, "{}", unseen.stderr);
    assert_eq!(decoded(&unseen), 0, "{}", unseen.stdout);

    // Retried: it decodes, leaves quarantine, and the next run decodes it.
    let retried = regfeed(&["quarantine", "retry", prefix], config);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert!(retried.stdout.contains("decodes now"), "{}", retried.stdout);
    assert!(quarantine_json(config).is_empty());
    let after = regfeed(&["once", "--feed", "thl-diabetes"], config);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(decoded(&after), 1, "{}", after.stdout);
    assert!(quarantine_json(config).is_empty());

    // A digest no document has.
    let missing = regfeed(&["quarantine", "show", "0000000000"], config);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no quarantined document"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_batches_are_pruned_after_their_retention_and_audited() {
    prune_case(None).await;
}

#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_batches_are_pruned_on_postgres() {
    if let Some(db) = common::PgDb::create("prune") {
        prune_case(Some(&db.url)).await;
    }
}

async fn prune_case(db: Option<&str>) {
    use helpers::stage_synthetic;
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let text = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        format!("{text}\n[retention]\ndelivered_batches = \"24h\"\n"),
    )
    .expect("config");
    use_db(&setup.config, db);
    let mut cfg = regfeed::config::Config::load(&setup.config).expect("config validates");
    if let Some(url) = db {
        cfg.database_url = url.to_owned().into();
    }
    let app = regfeed::app::App::open(cfg).await.expect("app");
    let feed = "thl-diabetes";
    let fc = app.cfg.feed(feed).expect("feed").clone();

    // Batches 1 and 2 delivered; 3 sealed and not delivered.
    stage_synthetic(&app, feed, 2).await;
    let d = app.deliver_feed(&fc).await.expect("deliver");
    assert_eq!(d.delivered, vec![1, 2]);
    stage_synthetic(&app, feed, 1).await;
    app.seal_pending(&fc).await.expect("seal");
    // Batch 1 was delivered two days ago (past the configured 24h, within
    // the default 30 days); 2 just now; 3 (never delivered) was sealed two
    // days ago.
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::hours(48))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (sql, seq) in [
        (
            "UPDATE batches SET delivered_at = $1 WHERE feed = $2 AND seq = $3",
            1,
        ),
        (
            "UPDATE batches SET sealed_at = $1, created_at = $1 WHERE feed = $2 AND seq = $3",
            3,
        ),
    ] {
        sqlx::query(sql)
            .bind(&two_days_ago)
            .bind(feed)
            .bind(seq)
            .execute(app.store.pool())
            .await
            .expect("update");
    }
    let dir = app.outbox_dir(feed);
    let batches = app.store.batches(Some(feed)).await.expect("batches");
    let data = |seq: i64| {
        dir.join(
            batches[(seq - 1) as usize]
                .data_file
                .as_deref()
                .expect("sealed"),
        )
    };
    let manifest = |seq: i64| dir.join(regfeed::feed::manifest_file_name(feed, seq as u64));
    for seq in 1..=3 {
        assert!(data(seq).is_file(), "batch {seq} sealed");
    }
    let pruned_entries = |store: &Store| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM audit WHERE kind = 'batch_pruned' AND feed = $1",
            )
            .bind(feed)
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };

    // A dry run says which and removes nothing.
    let now = chrono::Utc::now();
    let dry = app.prune_delivered(&fc, now, true).await.expect("dry run");
    assert_eq!(dry.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![1]);
    assert!(data(1).is_file());
    assert_eq!(pruned_entries(&app.store).await, 0);

    // Pruned: batch 1's data file; its manifest stays, as do batches 2
    // (delivered within the retention) and 3 (not delivered).
    let pruned = app.prune_delivered(&fc, now, false).await.expect("prune");
    assert_eq!(pruned.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![1]);
    assert!(!data(1).exists(), "batch 1's data file pruned");
    assert!(manifest(1).is_file(), "its manifest kept");
    assert!(data(2).is_file() && manifest(2).is_file(), "batch 2 kept");
    assert!(data(3).is_file(), "the undelivered batch kept");
    assert_eq!(pruned_entries(&app.store).await, 1, "the prune is audited");
    let receipt = app.store.batches(Some(feed)).await.expect("batches")[0]
        .receipt
        .clone();
    assert!(receipt.is_some(), "the receipt is kept");

    // Again: nothing more, no second entry; the pruned batch cannot be
    // replayed, and says why.
    assert!(
        app.prune_delivered(&fc, now, false)
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(pruned_entries(&app.store).await, 1);
    let err = app
        .replay(feed, 1)
        .await
        .expect_err("replay of a pruned batch");
    assert!(format!("{err:#}").contains("pruned"), "{err:#}");

    // The audit trail stays intact; the command line finds nothing left.
    let verify = regfeed(&["audit", "verify"], &setup.config);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    let cli = regfeed(&["outbox", "prune", "--dry-run", "--json"], &setup.config);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    assert_eq!(cli.stdout.trim(), "", "{}", cli.stdout);
}

/// Runs `regfeed ARGS --config CONFIG` with a standard output whose reader
/// is already gone (`regfeed ... | head -0`): every write to it fails.
fn with_output_closed(args: &[&str], config: &Path) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("REGFEED_LOG", "warn")
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run regfeed")
}

#[test]
fn a_closed_output_ends_a_listing_quietly_and_a_run_still_finishes() {
    use std::os::unix::process::ExitStatusExt as _;

    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    regfeed::synth::write_corpus(&regfeed::synth::plan(20, 3), &corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let config = setup.config.as_path();

    // A run whose summary nobody reads still stages and delivers its batch.
    let once = with_output_closed(&["once", "--feed", "thl-diabetes"], config);
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert!(once.status.success(), "{:?}: {stderr}", once.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let delivered = common::files_under(&setup.delivered.join("thl-diabetes"));
    assert!(
        delivered
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".manifest.json")),
        "the batch was delivered: {delivered:?}"
    );

    // Listings end as `ls | head` ends: by SIGPIPE, without a panic or a
    // backtrace on standard error.
    for args in [
        &["outbox", "list"][..],
        &["outbox", "list", "--json"],
        &["status"],
        &["quarantine", "list"],
    ] {
        let out = with_output_closed(args, config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || out.status.signal() == Some(13),
            "{args:?}: {:?}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
