//! Privacy gate for a pseudonymised feed: a whole run through the real
//! binary at the most verbose log level (`trace`), with refused documents
//! whose file names contain hetus, objections and restrictions imported (and
//! an import refused for a bad row), a delivery that fails, the audit trail
//! exported, verified and queried for a person, and the daemon started to
//! scrape `/metrics`, leaves no hetu-shaped string and no corpus name in any
//! log line, error, printed output, metric, audit entry, batch file or file
//! name.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regfeed::decode::hetu::find_hetu_shaped;

fn regfeed(args: &[&str], config: &Path) -> (bool, String) {
    regfeed_with_stdin(args, config, b"")
}

fn regfeed_with_stdin(args: &[&str], config: &Path, stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("REGFEED_LOG", "trace")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run regfeed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("regfeed ends");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Hetu-shaped text even inside a longer word (`find_hetu_shaped` wants a
/// boundary on each side): `DDMMYY`, a century sign of DOMAIN §3
/// (`+`, `-`, `Y`–`U`, `A`–`F`), `NNN`, a check character `[0-9A-Y]`.
fn find_embedded_hetu(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(10))
        .filter(|&i| {
            let w = &b[i..i + 11];
            w[..6].iter().all(u8::is_ascii_digit)
                && w[0] <= b'3'
                && w[2] <= b'1'
                && b"+-YXWVUABCDEF".contains(&w[6])
                && w[7..10].iter().all(u8::is_ascii_digit)
                && (w[10].is_ascii_digit() || (b'A'..=b'Y').contains(&w[10]))
        })
        .collect()
}

fn assert_clean(what: &str, text: &str, names: &[String]) {
    let mut hits = find_hetu_shaped(text);
    hits.extend(find_embedded_hetu(text));
    assert!(
        hits.is_empty(),
        "{what}: hetu-shaped text at {:?}: {:?}",
        hits,
        hits.iter()
            .map(|&i| &text[i.saturating_sub(30)..(i + 41).min(text.len())])
            .collect::<Vec<_>>()
    );
    for n in names {
        assert!(
            !text.contains(n.as_str()),
            "{what}: the corpus name {n:?} appears"
        );
    }
}

#[test]
fn a_verbose_run_leaks_no_identity_or_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(300, 7);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let truth = regfeed::synth::truth::compute(&plan);
    // Names of at least three letters: a two-letter name could occur by
    // chance inside an OID-free word.
    let names: Vec<String> = truth
        .names
        .iter()
        .filter(|n| n.len() >= 3)
        .cloned()
        .collect();

    // Refused and odd documents, named by hetus as producers sometimes do.
    let person = &truth.persons[0].hetu;
    let hostile = corpus.join("docs/incoming");
    std::fs::create_dir_all(&hostile).expect("dir");
    std::fs::write(
        hostile.join(format!("{person}.xml")),
        b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><unclosed>",
    )
    .expect("write");
    std::fs::write(
        hostile.join("010101-900R-doctype.xml"),
        b"<!DOCTYPE x [<!ENTITY a \"010101-900R\">]><x>&a;</x>",
    )
    .expect("write");
    if let Some(data) = common::shared_data_if_present() {
        // A real document whose patient has a wrong check character.
        let f02 =
            std::fs::read_to_string(data.join("fixtures/f02-visit-decorated-and-negated.xml"))
                .expect("fixture");
        std::fs::write(
            hostile.join("050658-9335-bad-check.xml"),
            f02.replace("050658-9334", "050658-9335").replace(
                "1.2.246.10.32213086.93.2026.102",
                "1.2.246.10.32213086.93.2026.902",
            ),
        )
        .expect("write");
    }

    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    // Deliveries retried every second while the daemon runs, below.
    let text = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(
        &setup.config,
        text.replacen("[daemon]\n", "[daemon]\ndelivery_interval = \"1s\"\n", 1),
    )
    .expect("config");
    // Policy inputs (objections, restriction, turvakielto), and a file whose
    // second row has a hetu with a wrong check character: refused whole.
    let inputs = tmp.path().join("policy-inputs.csv");
    std::fs::write(&inputs, regfeed::demo::policy_inputs(&plan)).expect("inputs");
    let bad_inputs = tmp.path().join("bad-inputs.csv");
    let good_row = regfeed::demo::policy_inputs(&plan)
        .lines()
        .nth(1)
        .expect("a row")
        .to_owned();
    std::fs::write(
        &bad_inputs,
        format!(
            "kind,hetu,made_to,purposes,effective_from,controller,start,since,source,reference\r\n{good_row}\r\nobjection,050658-9335,findata,all,2026-01-01,,,,demo,BAD-1\r\n"
        ),
    )
    .expect("bad inputs");
    // The vaccination feed's drop folder is a file: its delivery fails.
    let blocked = setup.delivered.join("thl-vaccination");
    let _ = std::fs::remove_dir_all(&blocked);
    std::fs::write(&blocked, b"not a folder").expect("blocker");

    let bad = bad_inputs.to_string_lossy().into_owned();
    let good = inputs.to_string_lossy().into_owned();
    let mut transcript = String::new();
    for (args, must_succeed) in [
        // The blocked drop folder: validate names it (exit 78).
        (&["validate"][..], false),
        (&["objections", "import", &bad], false),
        (&["objections", "import", &good], true),
        (&["objections", "list"], true),
        (&["once", "--feed", "thl-diabetes"], true),
        (&["once", "--feed", "thl-vaccination"], false),
        (&["preview", "--feed", "thl-diabetes"], true),
        (&["held", "list"], true),
        (&["outbox", "list"], true),
        (&["quarantine", "list"], true),
        (&["quarantine", "list", "--json"], true),
        (&["status"], true),
        (&["audit", "verify"], true),
        (&["once", "--feed", "no-such-feed"], false),
    ] {
        let (ok, text) = regfeed(args, &setup.config);
        assert_eq!(ok, must_succeed, "{args:?}:\n{text}");
        transcript.push_str(&text);
    }
    // The document named after a person, shown by its digest: its locator
    // is masked.
    let named = regfeed::feed::sha256_hex(b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><unclosed>");
    let (ok, text) = regfeed(&["quarantine", "show", &named[..16]], &setup.config);
    assert!(ok && text.contains("[hetu].xml"), "quarantine show: {text}");
    transcript.push_str(&text);
    let (ok, text) = regfeed_with_stdin(
        &["audit", "subject"],
        &setup.config,
        format!("{person}\n").as_bytes(),
    );
    assert!(ok, "audit subject: {text}");
    transcript.push_str(&text);
    assert!(
        transcript.contains("quarantined"),
        "the hostile files were seen"
    );
    assert!(
        transcript.contains("line 3:") && transcript.contains("nothing imported"),
        "the bad import row was reported"
    );
    assert_clean("logs and output", &transcript, &names);

    let (ok, export) = regfeed(&["audit", "export"], &setup.config);
    assert!(ok, "audit export: {export}");
    assert!(export.lines().count() > 5, "the audit trail was exported");
    assert_clean("audit export", &export, &names);

    let (metrics, daemon_log) = scrape_metrics(&setup.config);
    assert!(
        metrics.contains("regfeed_delivery_attempts_total"),
        "the failing delivery was counted:\n{metrics}"
    );
    assert_clean("/metrics", &metrics, &names);
    assert_clean("daemon log", &daemon_log, &names);
    std::fs::remove_file(&blocked).expect("unblock");

    // Every file the run wrote: names and, for batches, contents.
    let mut files = Vec::new();
    walk(&setup.dir, &mut files);
    let mut batches = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&setup.dir)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        assert_clean("a file name", &rel, &names);
        if rel.starts_with("delivered/") || rel.starts_with("state/outbox/") {
            batches += 1;
            let body = std::fs::read_to_string(f).expect("utf-8");
            assert_clean(&rel, &body, &names);
        }
    }
    assert!(
        batches >= 4,
        "batches and manifests were written: {batches}"
    );
}

/// Starts `regfeed run` at `trace` with its telemetry endpoint on a free
/// port, waits until a delivery attempt (the failing one) is counted, and
/// returns the `/metrics` text and the daemon's log after SIGTERM.
fn scrape_metrics(config: &Path) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("REGFEED_LOG", "trace")
        .env("REGFEED_TELEMETRY__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("regfeed run starts");
    let stderr = child.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().expect("log lock");
            l.push_str(&line);
            l.push('\n');
        }
    });
    let start = Instant::now();
    let patience = Duration::from_secs(90);
    let addr = loop {
        let found = log.lock().expect("log lock").lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "Telemetry endpoint listening.")
                .then(|| v["listen"].as_str().map(str::to_owned))?
        });
        if let Some(a) = found {
            break a;
        }
        assert!(start.elapsed() < patience, "no telemetry endpoint");
        std::thread::sleep(Duration::from_millis(100));
    };
    let metrics = loop {
        let m = common::http_get(&addr, "/metrics").1;
        if m.contains("regfeed_delivery_attempts_total") || start.elapsed() > patience {
            break m;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = child.wait().expect("daemon exits");
    reader.join().expect("log reader");
    let log = log.lock().expect("log lock").clone();
    assert!(status.success(), "daemon exit {status}:\n{log}");
    (metrics, log)
}

#[test]
fn the_embedded_scan_finds_hetus_inside_words() {
    assert_eq!(find_embedded_hetu("file_150245-987R.xml"), vec![5]);
    assert_eq!(find_embedded_hetu("ab010101A900Rcd"), vec![2]);
    assert!(find_embedded_hetu("2026-11-22T23:09:27Z 1.2.246.21 e3b0c44298fc1c14").is_empty());
}

/// Where a document was read is stored sealed (`store::locator`): a
/// document and a refused file named after their hetus leave no trace of
/// the hetu in the SQLite file (its pages and its WAL) or in any row, and
/// the run still re-reads documents through the sealed locators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hetu_named_file_leaves_no_hetu_in_the_store() {
    use regfeed::store::locator::{LocatorKey, SEALED_PREFIX};
    use sqlx::Row as _;

    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(12, 5);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let truth = regfeed::synth::truth::compute(&plan);
    // A decodable document renamed after its patient's hetu, and a refused
    // one named after another person's.
    let mut docs = common::files_under(&corpus.join("docs"));
    docs.retain(|p| p.extension().is_some_and(|e| e == "xml"));
    let doc = docs.first().expect("a document").clone();
    let text = std::fs::read_to_string(&doc).expect("document");
    let at = *find_hetu_shaped(&text)
        .first()
        .expect("the document names its patient");
    let hetu = text[at..at + 11].to_owned();
    let individual: u32 = hetu[7..10].parse().expect("digits");
    assert!((900..=999).contains(&individual), "synthetic: {hetu}");
    let named = doc.with_file_name(format!("{hetu}.xml"));
    std::fs::rename(&doc, &named).expect("rename");
    let other = truth
        .persons
        .iter()
        .map(|p| p.hetu.clone())
        .find(|h| *h != hetu)
        .expect("another person");
    let refused = corpus.join("docs").join(format!("{other}-refused.xml"));
    std::fs::write(
        &refused,
        b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><unclosed>",
    )
    .expect("write");

    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let app = regfeed::app::App::open(
        regfeed::config::Config::load(&setup.config).expect("config validates"),
    )
    .await
    .expect("app");
    let first = app.once("thl-diabetes").await.expect("first feed runs");
    assert!(first.run.upserts > 0, "the first feed delivered rows");
    // The second feed maps documents the first one ingested: it re-reads
    // each through its sealed locator; a locator that did not open would
    // leave it nothing to send.
    let second = app.once("thl-vaccination").await.expect("second feed runs");
    assert!(
        second.run.upserts > 0,
        "documents were re-read through their sealed locators"
    );

    // Every stored locator is sealed and opens to a file that can be read.
    let key = LocatorKey::new(app.keys.index());
    let src = corpus.clone();
    let mut opened = Vec::new();
    for table in ["seen", "documents", "quarantine"] {
        let rows = sqlx::query(&format!("SELECT path FROM {table}"))
            .fetch_all(app.store.pool())
            .await
            .expect("rows");
        assert!(!rows.is_empty(), "{table} has rows");
        for r in rows {
            let sealed: String = r.get(0);
            assert!(sealed.starts_with(SEALED_PREFIX), "{table}: {sealed}");
            assert!(!sealed.contains(&hetu) && !sealed.contains(&other));
            assert!(find_embedded_hetu(&sealed).is_empty(), "{table}: {sealed}");
            let path = key.open(&sealed).expect("the locator opens");
            let file = src.join(&path);
            assert!(file.is_file(), "{table}: {path} names a file of the source");
            opened.push((table, path));
        }
    }
    let name = |p: &Path| {
        p.strip_prefix(&src)
            .expect("inside")
            .to_string_lossy()
            .into_owned()
    };
    assert!(opened.contains(&("documents", name(&named))), "{opened:?}");
    assert!(
        opened.contains(&("quarantine", name(&refused))),
        "{opened:?}"
    );
    assert!(opened.contains(&("seen", name(&named))), "{opened:?}");
    // Closed: its write-ahead log is folded into the file (what is left of
    // a log or its index is read too).
    app.store.pool().close().await;
    drop(app);

    // The store's bytes, main file and write-ahead log alike.
    let state = setup.dir.join("state");
    let mut store_files = 0;
    for e in std::fs::read_dir(&state).expect("state dir") {
        let p = e.expect("entry").path();
        let file_name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !file_name.starts_with("regfeed.db") {
            continue;
        }
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{file_name}: {e}"),
        };
        store_files += 1;
        for h in [&hetu, &other] {
            assert!(
                !bytes.windows(h.len()).any(|w| w == h.as_bytes()),
                "{file_name} holds a hetu"
            );
        }
    }
    assert!(
        store_files >= 1,
        "the SQLite store was found in {}",
        state.display()
    );
}

/// A store written before locators were sealed: the migration marks it and
/// the first open with the keys seals every stored locator, once (SQLite,
/// and PostgreSQL when `REGFEED_TEST_DATABASE_URL` is set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locators_stored_in_clear_are_sealed_once_by_the_migration() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sqlite = format!("sqlite://{}", tmp.path().join("s.db").display());
    legacy_locators_sealed(
        &sqlite,
        include_str!("../../src/store/migrations/sqlite/0010_sealed_locators.sql"),
    )
    .await;
    match common::PgDb::create("locators") {
        Some(db) => {
            legacy_locators_sealed(
                &db.url,
                include_str!("../../src/store/migrations/postgres/0006_sealed_locators.sql"),
            )
            .await
        }
        None => eprintln!("NOTICE: PostgreSQL half skipped (REGFEED_TEST_DATABASE_URL unset)"),
    }
}

async fn legacy_locators_sealed(url: &str, migration: &str) {
    use regfeed::identity::{Key, KeyRole};
    use regfeed::store::locator::{LocatorKey, seal_legacy_locators};
    use regfeed::store::{NewDocument, Quarantined, Seen, Store};
    use sqlx::Executor as _;

    let store = Store::open(url).await.expect("store");
    let key = LocatorKey::new(&Key::from_bytes(&KeyRole::Index, &[9u8; 32]).expect("key"));
    // As an older regfeed left it: the migration not yet run, paths in clear.
    store
        .pool()
        .execute("DROP TABLE locator_sealing_pending")
        .await
        .expect("drop");
    let clear = "incoming/010101A999R.xml";
    let mut tx = store.begin().await.expect("tx");
    tx.put_seen(
        "archive",
        &[Seen {
            path: clear.into(),
            size: 1,
            mtime_ns: 1,
            sha256: "00".into(),
        }],
    )
    .await
    .expect("seen");
    tx.insert_documents(&[NewDocument {
        doc_id: "1.2.3^1".into(),
        set_id: "1.2.3".into(),
        version: 1,
        person: None,
        source: "archive".into(),
        path: clear.into(),
        sha256: "00".into(),
        packaging: "plain".into(),
        controller: None,
        service_event: None,
        code_system: None,
        code: None,
        withdrawal: false,
        invalidates: None,
        sensitive: false,
        records: 0,
        patient_id: regfeed::codes::PatientIdKind::Other,
    }])
    .await
    .expect("document");
    tx.quarantine(&[Quarantined {
        source: "archive".into(),
        path: clear.into(),
        sha256: "00".into(),
        class: "malformed".into(),
        detail: "-".into(),
    }])
    .await
    .expect("quarantine");
    tx.commit().await.expect("commit");

    store
        .pool()
        .execute(migration)
        .await
        .expect("the migration runs");
    assert_eq!(seal_legacy_locators(&store, &key).await.expect("seal"), 3);
    for table in ["seen", "documents", "quarantine"] {
        let paths: Vec<String> = sqlx::query_scalar(&format!("SELECT path FROM {table}"))
            .fetch_all(store.pool())
            .await
            .expect("rows");
        assert_eq!(paths.len(), 1, "{table}");
        assert_eq!(key.open(&paths[0]).expect("opens"), clear, "{table}");
    }
    // Once: a second open finds nothing to do and seals nothing twice.
    assert_eq!(seal_legacy_locators(&store, &key).await.expect("again"), 0);
    let seen: String = sqlx::query_scalar("SELECT path FROM seen")
        .fetch_one(store.pool())
        .await
        .expect("seen");
    assert_eq!(key.open(&seen).expect("opens"), clear);
}
