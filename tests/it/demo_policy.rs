//! The demo end to end (issue 4): its objecting people have zero rows in the
//! research extract where their objection applies and every row in the
//! exempt register feed; no hetu-shaped string or corpus name appears in the
//! demo's logs, its audit trail export, or any file name it wrote.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chrono::{Months, NaiveDate, Utc};
use regfeed::decode::hetu::{Hetu, find_hetu_shaped};
use regfeed::feed::{self, Value};
use regfeed::identity::{self, Key, KeyRole, KeySource};

const PATIENTS: u32 = 400;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .env("REGFEED_LOG", "trace")
        .env_remove("RUST_LOG")
        .output()
        .expect("run regfeed");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn person_rows(
    dir: &Path,
    feed_name: &str,
    cfg: &regfeed::loaded::Config,
) -> Vec<(String, String)> {
    let fc = cfg.feed(feed_name).expect("feed");
    let cols = fc.mapping.feed_columns();
    let i = fc
        .mapping
        .columns
        .iter()
        .position(|c| c.name == "person")
        .expect("person");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("delivered").join(feed_name)).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "csv") {
            let f = std::io::BufReader::new(std::fs::File::open(&p).expect("open"));
            for r in feed::csv::read(f, &cols).expect("reads") {
                if let Some(Value::Text(person)) = r.values.get(i) {
                    out.push((person.clone(), r.record_id.clone()));
                }
            }
        }
    }
    out
}

fn key(dir: &Path, role: KeyRole, file: &str) -> Key {
    Key::load(&role, &KeySource::File(dir.join("keys").join(file))).expect("key")
}

#[test]
fn the_demo_honours_objections_and_leaks_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("demo");
    let d = dir.to_string_lossy().into_owned();
    let mut transcript = run(&["demo", "--dir", &d, "--patients", &PATIENTS.to_string()]);
    let config = dir.join("regfeed.toml");
    let c = config.to_string_lossy().into_owned();
    transcript.push_str(&run(&["objections", "list", "--config", &c]));
    transcript.push_str(&run(&["held", "list", "--config", &c]));
    transcript.push_str(&run(&["audit", "verify", "--config", &c]));
    let export = run(&["audit", "export", "--config", &c]);

    let cfg = regfeed::loaded::Config::load(&config).expect("config");
    let inputs = std::fs::read_to_string(dir.join("policy-inputs.csv")).expect("inputs");
    let lines: Vec<Vec<&str>> = inputs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let hetu_of = |reference: &str| -> String {
        lines
            .iter()
            .find(|l| l.last() == Some(&reference))
            .map(|l| l[1].to_owned())
            .expect("scenario person")
    };
    let truth = regfeed::synth::truth::compute(&regfeed::synth::plan(PATIENTS, 1));
    let cutoff: NaiveDate = Utc::now()
        .date_naive()
        .checked_sub_months(Months::new(120))
        .expect("date");
    let research_key = key(
        &dir,
        KeyRole::Pseudonym("findata-permit-2026-017".into()),
        "findata-permit-2026-017.pseudonym.key",
    );
    let thl_key = key(&dir, KeyRole::Pseudonym("thl".into()), "thl.pseudonym.key");
    let thl_record = key(
        &dir,
        KeyRole::Record("thl-diabetes".into()),
        "thl-diabetes.record.key",
    );
    let research = person_rows(&dir, "research-diabetes", &cfg);
    let thl = person_rows(&dir, "thl-diabetes", &cfg);

    // OBJ-1 (to the controller of their records) and OBJ-3 (to Findata):
    // nothing of theirs in the research extract; all of it in the register
    // feed, which rests on a legal obligation.
    for reference in ["OBJ-1", "OBJ-3"] {
        let hetu = hetu_of(reference);
        let h = Hetu::parse(&hetu).expect("hetu");
        let in_research = identity::pseudonym(&research_key, &h);
        assert!(
            !research.iter().any(|(p, _)| *p == in_research),
            "{reference}: rows of an objecting person in the research extract"
        );
        let in_thl = identity::pseudonym(&thl_key, &h);
        let got: BTreeSet<&str> = thl
            .iter()
            .filter(|(p, _)| *p == in_thl)
            .map(|(_, id)| id.as_str())
            .collect();
        let person = truth
            .persons
            .iter()
            .find(|p| p.hetu == hetu)
            .expect("in truth");
        let want: BTreeSet<String> = person
            .rows
            .iter()
            .filter(|r| {
                NaiveDate::parse_from_str(&r.effective[..8], "%Y%m%d").expect("date") >= cutoff
            })
            .map(|r| identity::record_id(&thl_record, &r.set_id, r.ordinal))
            .collect();
        assert!(
            !want.is_empty(),
            "{reference}: the scenario person has rows"
        );
        let got: BTreeSet<String> = got.into_iter().map(str::to_owned).collect();
        assert_eq!(
            got, want,
            "{reference}: every row in the exempt register feed"
        );
    }
    // OBJ-2 (to another controller): delivered in both.
    let h2 = Hetu::parse(&hetu_of("OBJ-2")).expect("hetu");
    assert!(
        research
            .iter()
            .any(|(p, _)| *p == identity::pseudonym(&research_key, &h2))
    );

    // Nothing identifying in what the demo printed, logged or exported, or
    // in the names of the files it wrote (the import file and the corpus are
    // inputs, not outputs).
    let names: Vec<&str> = truth
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| n.len() >= 3)
        .collect();
    for (what, text) in [("logs and output", &transcript), ("audit export", &export)] {
        assert!(
            find_hetu_shaped(text).is_empty(),
            "{what}: hetu-shaped text"
        );
        for n in &names {
            assert!(!text.contains(n), "{what}: a corpus name");
        }
    }
    assert!(export.lines().count() > 5, "the audit trail was exported");
    let mut stack = vec![dir.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).expect("dir") {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                find_hetu_shaped(&name).is_empty(),
                "a hetu-shaped file name"
            );
            if path.is_dir() && name != "corpus" {
                stack.push(path);
            }
        }
    }
}

/// The command line as a newcomer and a script meet it (issue 15): the demo
/// prints its summary on standard output with no log line beside it unless
/// asked, and its "Next:" hint names a command that runs; `feed verify`
/// takes the demo's tree of feed folders, reporting per feed; the demo's
/// manifests say they are test data; listings have a header and `--json`;
/// a fatal error under `--log-format json` is one JSON object.
#[test]
fn the_demo_and_its_commands_are_quiet_and_scriptable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["demo", "--patients", "40", "--dir"])
        .arg(&dir)
        .env_remove("REGFEED_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains(" INFO ") && !stderr.contains("Audit head"),
        "the demo logged below warn without being asked:\n{stderr}"
    );
    assert!(
        !stdout.contains("Audit head") && stdout.contains("Next: "),
        "{stdout}"
    );
    // The hint's command is this binary, by a name that runs from here.
    let next = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Next: "))
        .expect("Next line");
    let program = next.split_whitespace().next().expect("program");
    assert!(
        program == "regfeed" || Path::new(program).is_file(),
        "{program:?} does not run"
    );

    // Every manifest of the demo says its data is synthetic.
    let delivered = dir.join("delivered");
    let mut manifests = 0;
    for feed in std::fs::read_dir(&delivered).expect("delivered") {
        for e in std::fs::read_dir(feed.expect("feed").path()).expect("feed dir") {
            let p = e.expect("entry").path();
            if p.to_string_lossy().ends_with(".manifest.json") {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("JSON");
                assert_eq!(m["test"], true, "{}", p.display());
                manifests += 1;
            }
        }
    }
    assert!(manifests > 1, "the demo delivered batches");

    // The tree the demo points to verifies, per feed; so does one feed.
    let verify = |dir: &Path, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfeed"));
        cmd.args(["feed", "verify"]).arg(dir);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = verify(&delivered, false);
    assert!(ok, "{text}");
    let cfg = regfeed::config::Config::load(&dir.join("regfeed.toml")).expect("config");
    for f in &cfg.feeds {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{}: ", f.name)) && l.ends_with(" 0 problems")),
            "{}: no line of its own:\n{text}",
            f.name
        );
    }
    let (ok, json) = verify(&delivered, true);
    assert!(ok, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        v["feeds"].as_object().expect("feeds").len(),
        cfg.feeds.len()
    );
    let (ok, one) = verify(&delivered.join("thl-diabetes"), false);
    assert!(ok && one.contains("batch"), "{one}");
    // A tree with a broken feed fails, naming the feed folder.
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(copy.join("thl-diabetes")).expect("copy");
    for e in std::fs::read_dir(delivered.join("thl-diabetes")).expect("dir") {
        let p = e.expect("entry").path();
        std::fs::copy(
            &p,
            copy.join("thl-diabetes").join(p.file_name().expect("name")),
        )
        .expect("copy");
    }
    std::fs::create_dir_all(copy.join("empty-feed")).expect("empty");
    let (ok, text) = verify(&copy, false);
    assert!(!ok, "{text}");
    assert!(text.contains("empty-feed: 0 batches"), "{text}");
    assert!(
        text.contains("thl-diabetes: ") && text.contains(" 0 problems"),
        "{text}"
    );

    // Listings: a header line, or one JSON object per line.
    let c = dir.join("regfeed.toml").to_string_lossy().into_owned();
    for list in [
        &["held", "list"][..],
        &["objections", "list"],
        &["outbox", "list"],
    ] {
        let table = run(&[list, &["--config", &c]].concat());
        let header = table.lines().next().expect("a header line");
        assert!(
            header.split_whitespace().next() == Some("feed")
                || header.split_whitespace().next() == Some("kind"),
            "{list:?}: {table}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
            .args(list)
            .args(["--json", "--config", &c])
            .env("REGFEED_LOG", "error")
            .output()
            .expect("run");
        assert!(out.status.success(), "{list:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        if list[0] != "held" {
            assert!(text.lines().count() > 0, "{list:?}: no rows in the demo");
        }
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            assert!(v.is_object(), "{list:?}: {l}");
        }
    }

    // A fatal error under the JSON log format: one JSON object on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["--log-format", "json", "once", "--feed", "no-such-feed"])
        .args(["--config", &c])
        .env("REGFEED_LOG", "warn")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().expect("an error line");
    let v: serde_json::Value = serde_json::from_str(last).expect("the error is JSON");
    assert_eq!(v["level"], "ERROR", "{stderr}");
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("no-such-feed"),
        "{stderr}"
    );
    for l in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("every stderr line is JSON");
    }
    // And a config that does not load, the same.
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["--log-format", "json", "status", "--config"])
        .arg(tmp.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stderr.trim()).expect("JSON");
    assert_eq!(v["level"], "ERROR");
}
