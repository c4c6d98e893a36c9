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
        (&["validate"][..], true),
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
