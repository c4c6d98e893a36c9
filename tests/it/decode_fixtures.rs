//! Golden tests: every reference document decodes, through the library API,
//! into the answer its expected JSON gives (fixtures/README.md says how to
//! compare), and no personal data or narrative leaks into the output.

use std::path::Path;

use regfeed::decode::{Limits, decode};
use regfeed::record::{DecodedDocument, RecordBody};
use serde_json::Value;

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("expected JSON is readable");
    serde_json::from_str(&text).expect("expected JSON parses")
}

fn decode_file(path: &Path) -> DecodedDocument {
    let bytes = std::fs::read(path).expect("document is readable");
    decode(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `expected` vs `actual` under the fixtures' rules: null means absent,
/// null or empty; numbers compare as numbers; objects compare key by key
/// over the expected keys only.
fn matches(expected: &Value, actual: Option<&Value>) -> bool {
    match (expected, actual) {
        (Value::Null, None | Some(Value::Null)) => true,
        (Value::Null, Some(Value::Array(a))) => a.is_empty(),
        (Value::Null, Some(Value::String(s))) => s.is_empty(),
        (Value::Array(e), None) => e.is_empty(),
        (Value::Number(e), Some(Value::Number(a))) => e.as_f64() == a.as_f64(),
        (Value::Object(e), Some(Value::Object(a))) => e.iter().all(|(k, v)| matches(v, a.get(k))),
        (Value::Array(e), Some(Value::Array(a))) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, Some(y)))
        }
        (e, Some(a)) => e == a,
        (_, None) => false,
    }
}

fn assert_object(what: &str, expected: &Value, actual: &Value) {
    let Value::Object(e) = expected else {
        panic!("{what}: expected an object")
    };
    for (k, v) in e {
        assert!(
            matches(v, actual.get(k)),
            "{what}: key {k:?} expected {v} got {}",
            actual.get(k).map_or("absent".into(), Value::to_string)
        );
    }
}

/// The document object as the expected JSON shows it: our `Document` plus
/// the top-level packaging.
fn document_value(d: &DecodedDocument) -> Value {
    let mut v = serde_json::to_value(&d.document).expect("document serialises");
    v["packaging"] = serde_json::to_value(d.packaging).expect("packaging serialises");
    v
}

fn check_document(name: &str, want: &Value, got: &DecodedDocument) {
    assert_eq!(
        want["packaging"],
        serde_json::to_value(got.packaging).expect("serialises"),
        "{name}: packaging"
    );
    assert_object(
        &format!("{name} document"),
        &want["document"],
        &document_value(got),
    );
    if let Some(records) = want.get("records").and_then(Value::as_array) {
        assert_eq!(
            records.len(),
            got.records.len(),
            "{name}: number of records: {:#?}",
            got.records
        );
        for (i, (w, g)) in records.iter().zip(&got.records).enumerate() {
            let g = serde_json::to_value(g).expect("record serialises");
            assert_object(&format!("{name} record {}", i + 1), w, &g);
            assert_eq!(g["ordinal"], i + 1, "{name}: ordinal");
        }
    }
}

/// Nothing a register must not get: other people's hetus, names, narrative.
fn assert_no_leaks(name: &str, got: &DecodedDocument) {
    let all = serde_json::to_string(got).expect("serialises");
    for needle in [
        "200243-9807",
        "Testaaja",
        "TESTI",
        "Testi",
        "Koekäyttäjä",
        "Testinen",
        "Arramaa",
        "vapaa teksti",
        "rekisteri ei saa",
    ] {
        assert!(!all.contains(needle), "{name}: output contains {needle:?}");
    }
    let records = serde_json::to_string(&got.records).expect("serialises");
    assert!(
        !records.contains(&got.document.patient.extension),
        "{name}: a record contains the patient id"
    );
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn fixtures_decode_to_their_expected_records() {
    let dir = shared_or_skip!("fixtures");
    let expected = load(&dir.join("expected-records.json"));
    let Value::Object(docs) = &expected else {
        panic!("expected-records.json is an object")
    };
    assert_eq!(docs.len(), 18, "eighteen fixtures");
    for (name, want) in docs {
        let got = decode_file(&dir.join(name));
        check_document(name, want, &got);
        assert_no_leaks(name, &got);
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn fixture_details_beyond_the_expected_keys() {
    let dir = shared_or_skip!("fixtures");
    let f02 = decode_file(&dir.join("f02-visit-decorated-and-negated.xml"));
    let RecordBody::Diagnosis(d) = &f02.records[0].body else {
        panic!("f02 starts with a diagnosis")
    };
    assert_eq!(d.code_raw.as_deref(), Some("E11.3+H36.0"));
    assert_eq!(d.system_raw.as_deref(), Some("1.2.246.537.6.1.1999"));
    let f05 = decode_file(&dir.join("f05-lab-no-unit.xml"));
    let RecordBody::LabResult(o) = &f05.records[0].body else {
        panic!("f05 is a lab result")
    };
    assert_eq!(o.unit, None, "a missing unit is never guessed");
    let f01 = decode_file(&dir.join("f01-visit-diagnoses.xml"));
    assert!(f01.document.structured_body);
    assert_eq!(f01.document.record_status.as_deref(), Some("3"));
    assert_eq!(
        f01.document.birth_time.as_ref().map(|t| t.0.as_str()),
        Some("19720314")
    );
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn kanta_documents_decode_to_their_expected_answer() {
    let dir = shared_or_skip!("kanta");
    let expected = load(&dir.join("expected.json"));
    let Value::Object(docs) = &expected else {
        panic!("expected.json is an object")
    };
    for (name, want) in docs {
        let got = decode_file(&dir.join(name));
        check_document(name, want, &got);
        assert_no_leaks(name, &got);
        if let Some(p) = want.get("prohibitions") {
            assert_eq!(
                got.records.len(),
                1,
                "{name}: one prohibition record: {:#?}",
                got.records
            );
            assert!(matches!(got.records[0].body, RecordBody::Prohibition(_)));
            let g = serde_json::to_value(&got.records[0]).expect("serialises");
            assert_object(&format!("{name} prohibitions"), p, &g);
        }
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn the_archive_messages_patient_id_is_not_validated_as_a_hetu() {
    let dir = shared_or_skip!("kanta");
    let got = decode_file(&dir.join("RCMR_IN100002FI01.xml"));
    assert!(!got.document.patient.is_hetu());
    assert_eq!(got.document.home_municipality.as_deref(), Some("092"));
    assert!(got.records.is_empty());
}
