//! `regfeed decode` as a user runs it: the real binary on the shipped
//! fixtures and on crafted files. The promises under test: one JSON line per
//! argument, files named by position and digest and never by path, patients
//! as pseudonyms stable within a call and not across calls, no hetu or name in
//! any output, and the documented exit codes.
//!
//! Tests in `with_real_decoder` need the real CDA decoder (they expect every
//! fixture to decode); the others hold whatever the decoder does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use regfeed::decode::hetu::find_hetu_shaped;
use serde_json::Value;
use sha2::{Digest, Sha256};

const ERROR_CLASSES: [&str; 8] = [
    "encoding",
    "doctype",
    "not_well_formed",
    "limit_exceeded",
    "not_cda",
    "fragment",
    "packaging",
    "invalid_patient_id",
];

/// Names of people in the fixtures and the Kanta files (family and given).
const NAMES: [&str; 15] = [
    "Testinen",
    "Koekäyttäjä",
    "TESTI",
    "Esimerkki",
    "Näytelmä",
    "Testaaja",
    "Arramaa",
    "Aino",
    "Eino",
    "Onni",
    "Siiri",
    "TIINA",
    "Testi-Ester",
    "Testaaja2007",
    "Koek\\u00e4ytt\\u00e4j\\u00e4",
];

/// People's ids in the Kanta files beyond the patients `expected.json` names:
/// the legal representative of the prohibition document and the author of
/// the archive message.
const OTHER_KANTA_IDS: [&str; 4] = ["150245-987R", "200243-9807", "010100A998F", "150848-999B"];

/// What the command printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }

    /// Fails when stdout or stderr contains any of `secrets` or hetu-shaped
    /// text.
    fn assert_reveals_none_of(&self, secrets: &[String]) {
        for (stream, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            for s in secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{stream} contains {s:?}:\n{text}"
                );
            }
            let shaped = find_hetu_shaped(text);
            assert!(
                shaped.is_empty(),
                "{stream} contains hetu-shaped text at {shaped:?}:\n{text}"
            );
        }
    }
}

/// Runs `regfeed decode` with every log line enabled, so logs are checked too.
fn regfeed_decode<P: AsRef<Path>>(paths: &[P]) -> Run {
    regfeed(std::iter::once("decode".as_ref()).chain(paths.iter().map(|p| p.as_ref().as_os_str())))
}

fn regfeed<'a>(args: impl IntoIterator<Item = &'a std::ffi::OsStr>) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("REGFEED_LOG_FORMAT")
        .env("REGFEED_LOG", "regfeed=trace")
        .stdin(Stdio::null())
        .output()
        .expect("the regfeed binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn sha256_prefix(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("readable");
    hex::encode(Sha256::digest(bytes))[..16].to_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("readable")).expect("JSON")
}

/// The shipped documents that must decode: fixtures/*.xml and the two Kanta
/// files, with what `expected-records.json` / `kanta/expected.json` say of
/// each.
fn shipped_documents(shared: &Path) -> Vec<(PathBuf, Value)> {
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for file in ["fixtures/expected-records.json", "kanta/expected.json"] {
        let Value::Object(map) = read_json(&shared.join(file)) else {
            panic!("{file} is an object");
        };
        expected.extend(map);
    }
    let mut docs: Vec<(PathBuf, Value)> = Vec::new();
    for dir in ["fixtures", "kanta"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(shared.join(dir))
            .expect("readable dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().and_then(|n| n.to_str()).expect("UTF-8 name");
            let exp = expected
                .get(name)
                .unwrap_or_else(|| panic!("{name} has an expected answer"))
                .clone();
            docs.push((p, exp));
        }
    }
    assert!(docs.len() >= 20, "18 fixtures and 2 Kanta files");
    docs
}

/// Every id and name that must never be printed.
fn secrets(shared: &Path, docs: &[(PathBuf, Value)]) -> Vec<String> {
    let mut s: BTreeSet<String> = NAMES.iter().map(|n| n.to_string()).collect();
    s.extend(OTHER_KANTA_IDS.iter().map(|n| n.to_string()));
    let persons = &read_json(&shared.join("fixtures/expected-diabetes.json"))["persons"];
    for v in persons.as_object().expect("persons").values() {
        s.insert(v.as_str().expect("a hetu").to_owned());
    }
    for (_, exp) in docs {
        let ext = exp["document"]["patient"]["extension"]
            .as_str()
            .expect("expected patient extension");
        s.insert(ext.to_owned());
    }
    s.into_iter().collect()
}

/// The comparison rule of `fixtures/README.md`: every key present in the
/// expected JSON must match; an absent key means null or empty; keys beyond
/// the expected ones are ignored; numbers compare as numbers.
fn assert_matches_expected(got: &Value, want: &Value, ctx: &str) {
    match want {
        Value::Object(fields) => {
            for (key, w) in fields {
                let g = got.get(key).unwrap_or(&Value::Null);
                assert_matches_expected(g, w, &format!("{ctx}.{key}"));
            }
        }
        Value::Null => assert!(
            got.is_null() || got.as_array().is_some_and(Vec::is_empty),
            "{ctx}: expected nothing, got {got}"
        ),
        Value::Number(w) => assert_eq!(got.as_f64(), w.as_f64(), "{ctx}: got {got}"),
        Value::Array(ws) => {
            let gs = got.as_array().map(Vec::as_slice).unwrap_or_default();
            assert_eq!(gs.len(), ws.len(), "{ctx}: length, got {got}");
            for (i, (g, w)) in gs.iter().zip(ws).enumerate() {
                assert_matches_expected(g, w, &format!("{ctx}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{ctx}"),
    }
}

#[test]
fn help_documents_the_output_the_pseudonyms_and_the_exit_codes() {
    let run = regfeed(["decode".as_ref(), "--help".as_ref()]);
    assert_eq!(run.code, Some(0));
    for promise in [
        "JSON Lines",
        "\"arg\"",
        "sha256",
        "pseudonym",
        "at random for this call",
        "birth_year",
        "No path or file name is ever printed",
        "\"io\"",
        "Exit status: 0",
        "2 on a usage error",
    ] {
        let flat = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(promise) || run.stdout.contains(promise),
            "--help lacks {promise:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(regfeed(["decode".as_ref()]).code, Some(2), "no PATH");
    assert_eq!(
        regfeed(["decode".as_ref(), "--bogus".as_ref()]).code,
        Some(2)
    );
    assert_eq!(regfeed(std::iter::empty()).code, Some(2), "no command");
}

#[test]
fn refused_and_unreadable_files_are_named_by_position_and_digest_never_by_path() {
    let dir = tempfile::Builder::new()
        .prefix("150245-987R-")
        .tempdir()
        .expect("tempdir");
    // File names that carry a hetu and a name: they must never be printed.
    let doctype = dir.path().join("010101-900R.xml");
    std::fs::write(&doctype, "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>").expect("write");
    let fragment = dir.path().join("Testinen 200243-9807.xml");
    std::fs::write(&fragment, "<section><code code=\"1\"/></section>").expect("write");
    let missing = dir.path().join("221190Y951Y.xml");
    let a_dir = dir.path().join("050658-9334");
    std::fs::create_dir(&a_dir).expect("mkdir");

    let paths = [&doctype, &fragment, &missing, &a_dir];
    let run = regfeed_decode(&paths);

    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    let secrets: Vec<String> = [
        "010101-900R",
        "200243-9807",
        "221190Y951Y",
        "050658-9334",
        "150245-987R",
        "Testinen",
        ".xml",
    ]
    .into_iter()
    .map(String::from)
    .chain([dir.path().to_string_lossy().into_owned()])
    .collect();
    run.assert_reveals_none_of(&secrets);

    let lines = run.lines();
    assert_eq!(lines.len(), 4, "one line per argument:\n{}", run.stdout);
    for (i, (line, path)) in lines.iter().zip(paths).enumerate().take(2) {
        let obj = line.as_object().expect("an object");
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["arg", "sha256", "error"]), "{line}");
        assert_eq!(line["arg"], i + 1);
        assert_eq!(line["sha256"], sha256_prefix(path));
        let class = line["error"]["class"].as_str().expect("a class");
        assert!(ERROR_CLASSES.contains(&class), "{line}");
        assert!(line["error"]["detail"].is_string(), "{line}");
    }
    for (i, line) in lines.iter().enumerate().skip(2) {
        let obj = line.as_object().expect("an object");
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["arg", "error"]), "{line}");
        assert_eq!(line["arg"], i + 1);
        assert_eq!(line["error"]["class"], "io", "{line}");
        assert!(
            !line["error"]["detail"]
                .as_str()
                .expect("a detail")
                .is_empty()
        );
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn hostile_xml_is_refused_line_by_line() {
    let bad = shared_or_skip!("external/bad-xml");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&bad)
        .expect("readable dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 20);
    let run = regfeed_decode(&paths);
    assert_eq!(run.code, Some(1));
    run.assert_reveals_none_of(&["bad-xml".into(), "defusedxml".into()]);
    let lines = run.lines();
    assert_eq!(lines.len(), paths.len());
    for (i, (line, path)) in lines.iter().zip(&paths).enumerate() {
        assert_eq!(line["arg"], i + 1);
        assert_eq!(line["sha256"], sha256_prefix(path), "{line}");
        let class = line["error"]["class"].as_str();
        assert!(
            class.is_some_and(|c| ERROR_CLASSES.contains(&c)),
            "arg {}: every hostile file is refused with a class: {line}",
            i + 1
        );
    }
}

#[test]
fn json_logs_are_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.xml");
    std::fs::write(&file, "<x/>").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["--log-format", "json", "decode"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .env("REGFEED_LOG", "regfeed=trace")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8");
    assert!(!stderr.trim().is_empty(), "the summary is logged");
    for l in stderr.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string(), "{l}");
    }
    assert!(stderr.contains("\"refused\":1"), "{stderr}");
}

/// These need the real decoder: every shipped fixture decodes.
mod with_real_decoder {
    use super::*;

    #[test]
    #[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
    fn every_shipped_document_yields_a_document_line_without_ids_or_names() {
        let shared = shared_or_skip!("");
        let docs = shipped_documents(&shared);
        let paths: Vec<&PathBuf> = docs.iter().map(|(p, _)| p).collect();
        let run = regfeed_decode(&paths);
        run.assert_reveals_none_of(&secrets(&shared, &docs));
        assert_eq!(
            run.code,
            Some(0),
            "every shipped document decodes:\n{}",
            run.stdout
        );
        let lines = run.lines();
        assert_eq!(lines.len(), docs.len());
        for (i, (line, (path, exp))) in lines.iter().zip(&docs).enumerate() {
            let name = path.file_name().expect("name").to_string_lossy();
            assert_eq!(line["arg"], i + 1, "{name}");
            assert_eq!(line["sha256"], sha256_prefix(path), "{name}");
            assert!(line.get("error").is_none(), "{name}: {line}");
            assert_eq!(line["packaging"], exp["packaging"], "{name}");
            let doc = &line["document"];
            for key in [
                "id",
                "set_id",
                "version",
                "code",
                "controller",
                "service_event",
                "view",
                "replaces",
                "home_municipality",
            ] {
                if let Some(want) = exp["document"].get(key) {
                    assert_matches_expected(
                        doc.get(key).unwrap_or(&Value::Null),
                        want,
                        &format!("{name}: document.{key}"),
                    );
                }
            }
            let patient = doc["patient"].as_object().expect("patient object");
            let keys: BTreeSet<&str> = patient.keys().map(String::as_str).collect();
            assert_eq!(keys, BTreeSet::from(["root", "pseudonym"]), "{name}");
            assert_eq!(
                doc["patient"]["root"], exp["document"]["patient"]["root"],
                "{name}"
            );
            let pseudonym = doc["patient"]["pseudonym"].as_str().expect("a string");
            assert!(
                pseudonym.len() >= 16 && pseudonym.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: {pseudonym}"
            );
            assert!(doc.get("birth_time").is_none(), "{name}: only the year");
            if let Some(records) = exp.get("records").and_then(Value::as_array) {
                let got = line["records"].as_array().expect("records array");
                assert_eq!(got.len(), records.len(), "{name}: record count");
                for (i, (g, w)) in got.iter().zip(records).enumerate() {
                    assert_matches_expected(g, w, &format!("{name}: records[{i}]"));
                }
            }
            if let Some(want) = exp.get("prohibitions") {
                let got: Vec<&Value> = line["records"]
                    .as_array()
                    .expect("records array")
                    .iter()
                    .filter(|r| r["kind"] == "prohibition")
                    .collect();
                assert_eq!(got.len(), 1, "{name}: one prohibition record");
                assert_matches_expected(got[0], want, &format!("{name}: prohibition"));
            }
        }
    }

    #[test]
    #[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
    fn pseudonyms_are_stable_within_a_call_and_differ_between_calls() {
        let shared = shared_or_skip!("");
        let docs = shipped_documents(&shared);
        let fixtures: Vec<&(PathBuf, Value)> = docs
            .iter()
            .filter(|(p, _)| p.parent().is_some_and(|d| d.ends_with("fixtures")))
            .collect();
        // Every fixture twice: the same file in one call, the same pseudonym.
        let paths: Vec<&PathBuf> = fixtures
            .iter()
            .chain(fixtures.iter())
            .map(|(p, _)| p)
            .collect();
        let first = regfeed_decode(&paths);
        assert_eq!(first.code, Some(0), "{}", first.stdout);
        let lines = first.lines();
        assert_eq!(lines.len(), paths.len());

        // Group pseudonyms by the patient the fixture is about.
        let mut by_person: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (line, (_, exp)) in lines.iter().zip(fixtures.iter().chain(fixtures.iter())) {
            let person = format!(
                "{}:{}",
                exp["document"]["patient"]["root"].as_str().expect("root"),
                exp["document"]["patient"]["extension"]
                    .as_str()
                    .expect("extension")
            );
            let p = line["document"]["patient"]["pseudonym"]
                .as_str()
                .expect("pseudonym")
                .to_owned();
            by_person.entry(person).or_default().insert(p);
        }
        assert!(by_person.len() >= 5, "the fixtures have five patients");
        let mut all = BTreeSet::new();
        for (person, ps) in &by_person {
            assert_eq!(ps.len(), 1, "one pseudonym per person within a call");
            assert!(
                all.insert(ps.clone()),
                "{person} shares another's pseudonym"
            );
        }

        // A second call: every person gets another pseudonym.
        let second = regfeed_decode(&paths[..fixtures.len()]);
        assert_eq!(second.code, Some(0));
        let again: BTreeSet<String> = second
            .lines()
            .iter()
            .map(|l| {
                l["document"]["patient"]["pseudonym"]
                    .as_str()
                    .expect("pseudonym")
                    .to_owned()
            })
            .collect();
        let before: BTreeSet<String> = by_person.values().flatten().cloned().collect();
        assert!(
            again.is_disjoint(&before),
            "pseudonyms must not repeat across calls"
        );
    }

    #[test]
    #[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
    fn a_refused_file_among_decoded_ones_keeps_its_position_and_the_exit_code_is_1() {
        let fixtures = shared_or_skip!("fixtures");
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("010101-900R.xml");
        std::fs::write(&bad, "<!DOCTYPE x><x/>").expect("write");
        let good = fixtures.join("f01-visit-diagnoses.xml");
        let run = regfeed_decode(&[&good, &bad, &good]);
        assert_eq!(run.code, Some(1));
        run.assert_reveals_none_of(&["010101-900R".into(), "140372-912E".into()]);
        let lines = run.lines();
        assert_eq!(lines.len(), 3);
        assert!(lines[0]["document"].is_object(), "{}", lines[0]);
        assert_eq!(lines[1]["arg"], 2);
        assert_eq!(lines[1]["error"]["class"], "doctype");
        assert_eq!(lines[1]["sha256"], sha256_prefix(&bad));
        assert_eq!(lines[2]["arg"], 3);
        assert_eq!(
            lines[0]["document"]["patient"],
            lines[2]["document"]["patient"]
        );
    }
}
