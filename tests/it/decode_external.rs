//! Documents nobody here shaped: every full CDA document of `external/cda`
//! decodes into records in its own code systems; the 13 section-level
//! snippets are fragments (not well-formed as they stand: they use an
//! unbound `xsi:` prefix), which this test decodes inside a minimal
//! `ClinicalDocument` wrapper to check their content; and no external file
//! makes the decoder panic.

use crate::common;

use std::path::{Path, PathBuf};

use regfeed::codes;
use regfeed::decode::{ErrorClass, Limits, decode};
use regfeed::record::{DecodedDocument, MedicationEvent, ObsValue, RecordBody, RecordKind};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("listable")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// A full document, by content: its root is a `ClinicalDocument`.
fn is_full_document(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains("<ClinicalDocument")
}

fn decode_ok(path: &Path) -> DecodedDocument {
    let bytes = std::fs::read(path).expect("readable");
    decode(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cda(name: &str) -> DecodedDocument {
    let dir = common::shared_data()
        .expect("checked by the caller")
        .join("external/cda");
    decode_ok(&dir.join(name))
}

/// A snippet inside a minimal document: the namespaces it assumes declared,
/// a section root wrapped in a `component`.
fn wrapped(snippet: &str) -> Vec<u8> {
    let body = match snippet.find("?>") {
        Some(i) if snippet.trim_start().starts_with("<?xml") => &snippet[i + 2..],
        _ => snippet,
    };
    let root_is_section = body
        .trim_start()
        .trim_start_matches(|c| c != '<')
        .starts_with("<section")
        || body
            .find("<section")
            .zip(body.find("<component"))
            .is_some_and(|(s, c)| s < c);
    let inner = if root_is_section {
        format!("<component>{body}</component>")
    } else {
        body.to_owned()
    };
    format!(
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:sdtc=\"urn:hl7-org:sdtc\"><id root=\"2.25.1\"/><recordTarget><patientRole><id root=\"2.25.2\" \
         extension=\"wrapper\"/></patientRole></recordTarget><component><structuredBody>{inner}\
         </structuredBody></component></ClinicalDocument>"
    )
    .into_bytes()
}

fn fragment(name: &str) -> DecodedDocument {
    let dir = common::shared_data()
        .expect("checked by the caller")
        .join("external/cda");
    let text = std::fs::read_to_string(dir.join(name)).expect("readable");
    decode(&wrapped(&text), &Limits::default()).unwrap_or_else(|e| panic!("{name} wrapped: {e}"))
}

fn kinds(d: &DecodedDocument, kind: RecordKind) -> Vec<&RecordBody> {
    d.records
        .iter()
        .map(|r| &r.body)
        .filter(|b| b.kind() == kind)
        .collect()
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn every_full_document_decodes_into_records() {
    let dir = shared_or_skip!("external/cda");
    let mut full = 0;
    for path in files(&dir) {
        let bytes = std::fs::read(&path).expect("readable");
        if !is_full_document(&bytes) {
            continue;
        }
        full += 1;
        let d = decode_ok(&path);
        if d.document.structured_body {
            assert!(!d.records.is_empty(), "{}: no records", path.display());
        }
        for (i, r) in d.records.iter().enumerate() {
            assert_eq!(r.ordinal as usize, i + 1);
        }
    }
    assert_eq!(full, 21, "21 full documents (one of them .ccd)");
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn a_problem_keeps_its_snomed_value_and_icd10cm_translation() {
    shared_or_skip!("external/cda");
    let d = cda("sample-ccdas__EMERGE_Patient-170.xml");
    let dm = kinds(&d, RecordKind::Diagnosis)
        .into_iter()
        .find_map(|b| match b {
            RecordBody::Diagnosis(x) if x.code == "44054006" => Some(x),
            _ => None,
        })
        .expect("type 2 diabetes as SNOMED");
    assert_eq!(dm.system, codes::SNOMED_CT);
    assert!(
        dm.translations
            .iter()
            .any(|t| t.is(codes::ICD10_CM, "E11.9"))
    );
    assert!(
        dm.translations
            .iter()
            .any(|t| t.is(codes::ICD9_CM, "250.00"))
    );
    assert!(!dm.negated);
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn hba1c_is_a_lab_result_and_blood_pressure_a_measurement() {
    shared_or_skip!("external/cda");
    for name in [
        "sample-ccdas__EMERGE_Patient-1.xml",
        "sample-ccdas__EMERGE_Patient-170.xml",
        "sample-ccdas__EMERGE_Patient-70.xml",
    ] {
        let d = cda(name);
        let a1c: Vec<_> = d
            .records
            .iter()
            .filter(|r| r.body.code() == Some((codes::LOINC, "4548-4")))
            .collect();
        assert!(!a1c.is_empty(), "{name}: HbA1c");
        for r in a1c {
            let RecordBody::LabResult(o) = &r.body else {
                panic!("{name}: HbA1c must be a lab result")
            };
            assert!(matches!(o.value, Some(ObsValue::Number(_))));
            assert_eq!(o.unit.as_deref(), Some("%"));
        }
        for code in ["8480-6", "8462-4"] {
            let bp: Vec<_> = d
                .records
                .iter()
                .filter(|r| r.body.code() == Some((codes::LOINC, code)))
                .collect();
            assert!(!bp.is_empty(), "{name}: {code}");
            assert!(
                bp.iter().all(|r| r.body.kind() == RecordKind::Measurement),
                "{name}: {code}"
            );
        }
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn medications_come_from_manufactured_material_in_rxnorm() {
    shared_or_skip!("external/cda");
    let d = cda("sample-ccdas__ToC_CCDA_CCD_CompGuideSample_FullXML.xml");
    let meds = kinds(&d, RecordKind::Medication);
    assert!(meds.len() >= 10, "{}", meds.len());
    assert!(
        meds.iter()
            .any(|b| matches!(b, RecordBody::Medication(m) if m.system == codes::RXNORM))
    );
    for b in meds {
        let RecordBody::Medication(m) = b else {
            unreachable!()
        };
        assert!(matches!(
            m.event,
            MedicationEvent::Statement | MedicationEvent::Administration
        ));
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn immunisations_in_cvx_are_vaccinations() {
    shared_or_skip!("external/cda");
    let d = cda("sample-ccdas__EMERGE_Patient-170.xml");
    let vac = kinds(&d, RecordKind::Vaccination);
    assert_eq!(vac.len(), 22);
    assert!(
        vac.iter()
            .all(|b| matches!(b, RecordBody::Vaccination(v) if v.system == codes::CVX))
    );
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn an_unstructured_document_has_a_header_and_no_records() {
    shared_or_skip!("external/cda");
    let d = cda("ccda-ex__Unstructured_Document_embedded_PDF.xml");
    assert!(!d.document.structured_body);
    assert!(d.records.is_empty());
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn the_snippets_are_fragments() {
    let dir = shared_or_skip!("external/cda");
    let mut n = 0;
    for path in files(&dir) {
        let bytes = std::fs::read(&path).expect("readable");
        if is_full_document(&bytes) {
            continue;
        }
        n += 1;
        // As they stand: a fragment, or (with the unbound xsi: prefix, which
        // is checked first) not well-formed. Never a document.
        let e = decode(&bytes, &Limits::default()).expect_err("a fragment is not a document");
        assert!(
            matches!(e.class, ErrorClass::Fragment | ErrorClass::NotWellFormed),
            "{}: {e}",
            path.display()
        );
        let text = String::from_utf8(bytes).expect("UTF-8");
        decode(&wrapped(&text), &Limits::default())
            .unwrap_or_else(|e| panic!("{} wrapped: {e}", path.display()));
    }
    assert_eq!(n, 13);
    // Declared namespaces, section root: exactly `fragment`.
    let e = decode(
        b"<section xmlns=\"urn:hl7-org:v3\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><entry/></section>",
        &Limits::default(),
    )
    .expect_err("fragment");
    assert_eq!(e.class, ErrorClass::Fragment);
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn fragment_content_decodes_in_a_wrapper() {
    shared_or_skip!("external/cda");
    let refused = fragment("ccda-ex__Medication_Refused.xml");
    let meds = kinds(&refused, RecordKind::Medication);
    assert_eq!(meds.len(), 1);
    let RecordBody::Medication(m) = meds[0] else {
        unreachable!()
    };
    assert!(m.negated, "a refused medication is negated");
    assert_eq!(m.system, codes::RXNORM);

    let flu = fragment("ccda-ex__Influenza_Vaccination.xml");
    let vac = kinds(&flu, RecordKind::Vaccination);
    assert_eq!(vac.len(), 1);
    assert!(matches!(vac[0], RecordBody::Vaccination(v) if v.system == codes::CVX));

    let less = fragment("ccda-ex__Results_with_less_than_value.xml");
    // "<=5" written as the interval [0, 5]: kept as written, no comparator invented.
    assert!(less.records.iter().any(|r| matches!(&r.body,
        RecordBody::LabResult(o) if o.unit.as_deref() == Some("pg/mL")
            && o.value == Some(ObsValue::Interval { comparator: None, low: Some(0.0), high: Some(5.0) }))));

    let vitals = fragment("ccda-ex__Vital_Signs_Metric.xml");
    assert!(!kinds(&vitals, RecordKind::Measurement).is_empty());
    assert!(kinds(&vitals, RecordKind::LabResult).is_empty());

    let problem = fragment("ccda-ex__Active_Problem.xml");
    assert_eq!(kinds(&problem, RecordKind::Diagnosis).len(), 1);

    // value nullFlavor="OTH": the meaning is its ICD-9-CM translation.
    let billable = fragment("ccda-ex__Hospital_Discharge_Billable_Diagnoses.xml");
    assert!(kinds(&billable, RecordKind::Diagnosis).iter().any(
        |b| matches!(b, RecordBody::Diagnosis(d) if d.system == codes::ICD9_CM && d.code == "428.0")
    ));

    let procs = fragment("ccda-ex__Procedures_Section_Procedure.xml");
    assert!(!kinds(&procs, RecordKind::Procedure).is_empty());

    let none = fragment("ccda-ex__No_Information_Problems.xml");
    assert!(
        kinds(&none, RecordKind::Diagnosis)
            .iter()
            .all(|b| b.negated()),
        "no positive problem from 'no information'"
    );
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn no_external_file_makes_the_decoder_panic() {
    let root = shared_or_skip!("external");
    for sub in ["cda", "fhir", "bad-xml"] {
        for path in files(&root.join(sub)) {
            let bytes = std::fs::read(&path).expect("readable");
            let _ = decode(&bytes, &Limits::default());
            // Truncations are a cheap source of hostile input.
            for cut in [
                1,
                bytes.len() / 3,
                bytes.len() / 2,
                bytes.len().saturating_sub(1),
            ] {
                let _ = decode(&bytes[..cut.min(bytes.len())], &Limits::default());
            }
        }
    }
}
