//! The audit trail (DESIGN.md §6) through the real binary: `audit verify`
//! passes an intact trail and names the first bad entry of an edited, a
//! deleted-from or a reordered copy; a cut tail is caught by the outside
//! anchor; `audit subject` answers for a person read from standard input
//! and never shows the hetu; `audit export` is FHIR AuditEvent NDJSON with
//! no hetu in it. Plus the library: concurrent appenders keep one chain, and
//! a key rotation shows up as a `config` entry.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use regfeed::decode::hetu::{Hetu, find_hetu_shaped};
use sqlx::Connection as _;

const PATIENTS: u32 = 200;
const SEED: u64 = 1;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn regfeed(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .env("REGFEED_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run regfeed");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One demo run (200 patients) shared by every test of this binary; tests
/// work on copies of it.
fn demo() -> &'static Path {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-demo"); // demo replaces its own earlier folder
        let out = regfeed(
            &[
                "demo",
                "--dir",
                dir.to_str().expect("utf-8 path"),
                "--patients",
                &PATIENTS.to_string(),
                "--seed",
                &SEED.to_string(),
            ],
            None,
        );
        assert_eq!(out.code, 0, "demo failed: {}{}", out.stdout, out.stderr);
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            // Keeps the mode: key files stay 0600. SQLite's -wal/-shm files
            // may vanish while another test's process checkpoints: skip them.
            match std::fs::copy(e.path(), &target) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy: {err}"),
            }
        }
    }
}

/// A copy of the demo's config, keys, mappings and store (the SQLite file
/// with its -wal and -shm, if any: the copy sees every committed entry).
fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let src = demo();
    let tmp = tempfile::tempdir().expect("tmp");
    for d in ["keys", "mappings", "state"] {
        copy_dir(&src.join(d), &tmp.path().join(d));
    }
    std::fs::copy(src.join("regfeed.toml"), tmp.path().join("regfeed.toml")).expect("config");
    let config = tmp.path().join("regfeed.toml");
    (tmp, config)
}

fn db_of(config: &Path) -> PathBuf {
    config
        .parent()
        .expect("folder")
        .join("state")
        .join("regfeed.db")
}

/// Runs SQL on a store copy, as someone with write access to the file
/// would: the append-only triggers are only a guard against accidents.
fn tamper(config: &Path, sql: &str) {
    let db = db_of(config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open copy");
        sqlx::raw_sql(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
        )
        .execute(&mut c)
        .await
        .expect("drop triggers");
        sqlx::raw_sql(sql).execute(&mut c).await.expect("tamper");
        c.close().await.expect("close");
    });
}

fn query_i64(config: &Path, sql: &str) -> i64 {
    let db = db_of(config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open copy");
        let v: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("query");
        c.close().await.expect("close");
        v
    })
}

fn verify(config: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "audit",
        "verify",
        "--config",
        config.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    regfeed(&args, None)
}

fn assert_first_bad(out: &Out, seq: i64) {
    assert_ne!(out.code, 0, "verify passed a damaged trail: {}", out.stdout);
    let want = format!("first bad entry {seq}:");
    assert!(
        out.stderr.contains(&want),
        "wanted {want:?} in:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// `(entries, head)` from an intact trail's verify line.
fn intact(config: &Path) -> (i64, String) {
    let out = verify(config, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rest = out
        .stdout
        .strip_prefix("audit trail intact: ")
        .expect("verify line");
    let (n, rest) = rest.split_once(" entries, head ").expect("entries");
    (
        n.parse().expect("count"),
        rest.split_whitespace().next().expect("head").to_owned(),
    )
}

#[test]
fn verify_passes_an_intact_trail_with_its_anchor() {
    let (_t, config) = demo_copy();
    let (n, head) = intact(&config);
    assert!(
        n >= 8,
        "a demo run of two feeds audits at least 8 entries: {n}"
    );
    let out = verify(
        &config,
        &["--expect-entries", &n.to_string(), "--expect-head", &head],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // An older anchor still holds after the trail has grown.
    let h3: String = {
        let db = db_of(&config);
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .expect("open");
            sqlx::query_scalar("SELECT hash FROM audit WHERE seq = 3")
                .fetch_one(&mut c)
                .await
                .expect("hash")
        })
    };
    let out = verify(&config, &["--expect-entries", "3", "--expect-head", &h3]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn verify_names_an_edited_entry() {
    let (_t, config) = demo_copy();
    let seq = query_i64(
        &config,
        "SELECT MIN(seq) FROM audit WHERE kind = 'batch_staged'",
    );
    // Take one person out of a batch's committed set of people.
    tamper(
        &config,
        &format!(
            "UPDATE audit SET data = replace(data, '\"people\":[\"', '\"people\":[\"0') WHERE seq = {seq}"
        ),
    );
    assert_first_bad(&verify(&config, &[]), seq);
}

#[test]
fn verify_names_an_edited_time() {
    let (_t, config) = demo_copy();
    tamper(
        &config,
        "UPDATE audit SET at = '2020-01-01T00:00:00.000Z' WHERE seq = 2",
    );
    assert_first_bad(&verify(&config, &[]), 2);
}

#[test]
fn verify_names_a_deleted_entry() {
    let (_t, config) = demo_copy();
    let (n, _) = intact(&config);
    let k = n / 2;
    tamper(&config, &format!("DELETE FROM audit WHERE seq = {k}"));
    let out = verify(&config, &[]);
    assert_first_bad(&out, k);
    assert!(out.stdout.contains("missing"), "{}", out.stdout);
}

#[test]
fn verify_names_the_first_of_two_swapped_entries() {
    let (_t, config) = demo_copy();
    let (n, _) = intact(&config);
    let k = n / 2;
    tamper(
        &config,
        &format!(
            "UPDATE audit SET seq = -1 WHERE seq = {k};
             UPDATE audit SET seq = {k} WHERE seq = {k1};
             UPDATE audit SET seq = {k1} WHERE seq = -1;",
            k1 = k + 1
        ),
    );
    assert_first_bad(&verify(&config, &[]), k);
}

#[test]
fn a_cut_tail_passes_plain_verify_but_not_the_anchor() {
    let (_t, config) = demo_copy();
    let (n, head) = intact(&config);
    let cut = 3;
    tamper(
        &config,
        &format!("DELETE FROM audit WHERE seq > {}", n - cut),
    );
    // What is left is a consistent chain: only the anchor can tell.
    let (left, _) = intact(&config);
    assert_eq!(left, n - cut);
    let first_missing = n - cut + 1;
    assert_first_bad(
        &verify(&config, &["--expect-entries", &n.to_string()]),
        first_missing,
    );
    assert_first_bad(&verify(&config, &["--expect-head", &head]), first_missing);
}

fn cohort_hetu() -> String {
    let truth = regfeed::synth::truth::compute(&regfeed::synth::plan(PATIENTS, SEED));
    truth
        .persons
        .iter()
        .find(|p| p.in_cohort && !p.rows.is_empty())
        .expect("a diabetes cohort member with rows")
        .hetu
        .clone()
}

/// A valid test-range hetu of nobody in the corpus.
fn stranger_hetu() -> String {
    const CHECK: &[u8] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";
    let truth = regfeed::synth::truth::compute(&regfeed::synth::plan(PATIENTS, SEED));
    (900..1000)
        .map(|n| {
            let num: u64 = format!("311299{n}").parse().expect("digits");
            format!("311299-{n}{}", CHECK[(num % 31) as usize] as char)
        })
        .find(|h| Hetu::parse(h).is_ok() && !truth.persons.iter().any(|p| &p.hetu == h))
        .expect("a free hetu")
}

fn subject(config: &Path, hetu: &str, json: bool) -> Out {
    let mut args = vec![
        "audit",
        "subject",
        "--config",
        config.to_str().expect("utf-8"),
    ];
    if json {
        args.push("--json");
    }
    regfeed(&args, Some(&format!("{hetu}\n")))
}

fn assert_no_hetu(what: &str, out: &Out, hetu: &str) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains(hetu), "{what}: the hetu appears on {stream}");
        assert!(
            find_hetu_shaped(text).is_empty(),
            "{what}: hetu-shaped text on {stream}"
        );
    }
}

#[test]
fn subject_names_the_batches_that_received_a_person() {
    let config = demo().join("regfeed.toml");
    let hetu = cohort_hetu();
    let out = subject(&config, &hetu, false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("feed thl-diabetes batch 1: staged "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("statute THL Act 668/2008 §5"),
        "{}",
        out.stdout
    );
    assert_no_hetu("subject", &out, &hetu);

    let out = subject(&config, &hetu, true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["found"], true);
    let feeds: Vec<&str> = v["report"]["disclosures"]
        .as_array()
        .expect("disclosures")
        .iter()
        .filter_map(|d| d["feed"].as_str())
        .collect();
    assert!(feeds.contains(&"thl-diabetes"), "{feeds:?}");
    let d = &v["report"]["disclosures"][0];
    assert!(d["deliveries"][0]["outcome"] == "delivered", "{d}");
    assert_no_hetu("subject --json", &out, &hetu);
}

#[test]
fn subject_says_when_no_feed_received_a_person() {
    let config = demo().join("regfeed.toml");
    let hetu = stranger_hetu();
    let out = subject(&config, &hetu, false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("No feed received this person's data."),
        "{}",
        out.stdout
    );
    assert_no_hetu("subject (stranger)", &out, &hetu);
    let out = subject(&config, &hetu, true);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["found"], false);
}

#[test]
fn subject_refuses_a_hetu_on_the_command_line_without_echoing_it() {
    let config = demo().join("regfeed.toml");
    let hetu = cohort_hetu();
    let c = config.to_str().expect("utf-8");
    for args in [
        vec!["audit", "subject", "--config", c, &hetu],
        vec!["audit", "subject", "--hetu", &hetu, "--config", c],
        vec!["audit", "subject", "--config", c, "--", &hetu],
    ] {
        let out = regfeed(&args, Some(&format!("{hetu}\n")));
        assert_ne!(out.code, 0, "{args:?} was accepted");
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_no_hetu("subject with an argument", &out, &hetu);
    }
    // Not a hetu on standard input: refused, and the input is not quoted.
    let out = subject(&config, "311299-9001", false);
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("311299-9001"), "{}", out.stderr);
}

#[test]
fn export_is_fhir_audit_events_without_a_hetu() {
    let (_t, config) = demo_copy();
    let (n, _) = intact(&config);
    let out = regfeed(
        &[
            "audit",
            "export",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len() as i64, n);
    let mut people = 0;
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object per line");
        assert_eq!(v["resourceType"], "AuditEvent", "line {}", i + 1);
        assert_eq!(
            v["entity"][0]["what"]["identifier"]["value"],
            (i + 1).to_string()
        );
        assert!(v["recorded"].as_str().is_some_and(|r| r.ends_with('Z')));
        people += v["entity"].as_array().expect("entities").len() - 1;
    }
    assert!(people > 0, "batch entries name their people");
    assert!(
        find_hetu_shaped(&out.stdout).is_empty(),
        "hetu-shaped text in the export"
    );
}

// ------------------------------------------------------------ the library

fn setup_store() -> (tempfile::TempDir, regfeed::loaded::Config) {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let s = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let cfg = regfeed::loaded::Config::load(&s.config).expect("config");
    (tmp, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_keep_one_chain() {
    let (_t, cfg) = setup_store();
    let store = regfeed::store::Store::open(&cfg.database_url)
        .await
        .expect("store");
    let mut tasks = Vec::new();
    for t in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15u64 {
                regfeed::audit::record(
                    &store,
                    &[regfeed::audit::Entry::Import {
                        import_kind: format!("test-{t}"),
                        rows: i,
                        source_sha256: "00".into(),
                    }],
                )
                .await
                .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let r = regfeed::audit::verify(store.pool(), None, None)
        .await
        .expect("verify");
    assert!(r.is_intact(), "{:?}", r.first_bad);
    assert_eq!(r.entries, 90);
    assert_eq!(
        regfeed::audit::head(store.pool()).await.expect("head").hash,
        r.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_appends_a_config_entry() {
    let (t, cfg) = setup_store();
    let count = |store: regfeed::store::Store| async move {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE kind = 'config'")
            .fetch_one(store.pool())
            .await
            .expect("count");
        n
    };
    let app = regfeed::app::App::open(cfg.clone()).await.expect("open");
    assert_eq!(count(app.store.clone()).await, 1);
    drop(app);
    let app = regfeed::app::App::open(cfg.clone()).await.expect("reopen");
    assert_eq!(count(app.store.clone()).await, 1, "unchanged: no new entry");
    drop(app);
    let key = t.path().join("demo/keys/thl.pseudonym.key");
    std::fs::remove_file(&key).expect("rm");
    regfeed::identity::generate_key_file(&key).expect("new key");
    let app = regfeed::app::App::open(cfg).await.expect("reopen");
    assert_eq!(count(app.store.clone()).await, 2, "rotation audited");
    let r = regfeed::audit::verify(app.store.pool(), Some(2), None)
        .await
        .expect("verify");
    assert!(r.is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_rewritten_chain_is_caught_by_the_head_anchor() {
    use regfeed::audit::chain::entry_hash;
    let (_t, cfg) = setup_store();
    let store = regfeed::store::Store::open(&cfg.database_url)
        .await
        .expect("store");
    let entries: Vec<regfeed::audit::Entry> = (0..10)
        .map(|i| regfeed::audit::Entry::Import {
            import_kind: "objections".into(),
            rows: i,
            source_sha256: "00".into(),
        })
        .collect();
    let anchor = regfeed::audit::record(&store, &entries)
        .await
        .expect("append");
    assert_eq!(anchor.entries, 10);
    // Edit entry 3 and recompute every hash after it, as an attacker with
    // the file (but not the anchor) could.
    let mut c = store.pool().acquire().await.expect("conn");
    sqlx::raw_sql("DROP TRIGGER audit_no_update;")
        .execute(&mut *c)
        .await
        .expect("drop");
    let rows = regfeed::audit::chain::page(store.pool(), 0, 100)
        .await
        .expect("page");
    let mut prev = regfeed::audit::GENESIS.to_owned();
    for mut e in rows {
        if e.seq == 3 {
            e.data = e.data.replace("\"rows\":2", "\"rows\":0");
        }
        let h = entry_hash(e.seq, &e.at, &e.kind, e.feed.as_deref(), &e.data, &prev);
        sqlx::query("UPDATE audit SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&e.data)
            .bind(&prev)
            .bind(&h)
            .bind(e.seq as i64)
            .execute(&mut *c)
            .await
            .expect("rewrite");
        prev = h;
    }
    drop(c);
    let plain = regfeed::audit::verify(store.pool(), None, None)
        .await
        .expect("verify");
    assert!(
        plain.is_intact(),
        "a consistent rewrite passes the chain alone"
    );
    let anchored = regfeed::audit::verify(store.pool(), Some(10), Some(&anchor.hash))
        .await
        .expect("verify");
    let bad = anchored.first_bad.expect("caught by the anchor");
    assert_eq!(bad.seq, 10);
    assert!(matches!(
        bad.problem,
        regfeed::audit::Problem::HeadDiffers { .. }
    ));
}

#[test]
fn validate_refuses_a_config_without_an_audit_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let s = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let text = std::fs::read_to_string(&s.config).expect("read");
    assert!(text.contains("audit = \"keys/audit.key\"\n"));
    std::fs::write(&s.config, text.replace("audit = \"keys/audit.key\"\n", "")).expect("write");
    let out = regfeed(
        &["validate", "--config", s.config.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(out.code, 78, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("keys.audit: an audit key is required"),
        "{}",
        out.stderr
    );
}

#[test]
fn subject_says_which_records_were_held_and_why() {
    let config = demo().join("regfeed.toml");
    let truth = regfeed::synth::truth::compute(&regfeed::synth::plan(PATIENTS, SEED));
    let person = truth
        .persons
        .iter()
        .find(|p| p.in_cohort && !p.held.is_empty())
        .expect("a cohort member with held records");
    let out = subject(&config, &person.hetu, true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let held: u64 = v["report"]["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["feed"] == "thl-diabetes" && d["outcome"] == "hold")
        .filter_map(|d| d["records"].as_u64())
        .sum();
    assert_eq!(held, person.held.len() as u64, "{}", out.stdout);
    let out = subject(&config, &person.hetu, false);
    assert!(
        out.stdout.contains("held under rule mapping.hold."),
        "{}",
        out.stdout
    );
    assert_no_hetu("subject (held)", &out, &person.hetu);
}
