//! Hostile input: every file of `external/bad-xml` is refused with its own
//! error class (checked in the order encoding → DOCTYPE → not well-formed →
//! limit exceeded), and generated resource attacks are refused quickly with
//! bounded memory.
#![allow(unsafe_code)] // getrusage has no safe wrapper

mod common;

use std::time::{Duration, Instant};

use regfeed::decode::{ErrorClass, Limits, decode};

/// Each file and the class it must get, decided from its content.
const EXPECTED: &[(&str, ErrorClass)] = &[
    // Entity tricks: all carry a DOCTYPE, refused whatever it declares.
    ("defusedxml__cyclic.xml", ErrorClass::Doctype),
    ("defusedxml__dtd.xml", ErrorClass::Doctype),
    ("defusedxml__external.xml", ErrorClass::Doctype),
    ("defusedxml__external_file.xml", ErrorClass::Doctype),
    ("defusedxml__xmlbomb.xml", ErrorClass::Doctype),
    ("libxml2__754946.xml", ErrorClass::Doctype),
    ("libxml2__comment1.xml", ErrorClass::Doctype), // its bad comment comes after a DOCTYPE
    ("libxml2__content1.xml", ErrorClass::Doctype),
    ("libxml2__doctype1.xml", ErrorClass::Doctype),
    ("libxml2__ent_redecl.xml", ErrorClass::Doctype),
    ("libxml2__quadratic-defattr.xml", ErrorClass::Doctype),
    // 0x16 in an attribute value.
    ("libxml2__attr4.xml", ErrorClass::NotWellFormed),
    // The byte E1 followed by an ASCII letter inside CDATA: not UTF-8.
    ("libxml2__cdata.xml", ErrorClass::Encoding),
    // A decimal character reference far beyond U+10FFFF.
    ("libxml2__charref1.xml", ErrorClass::NotWellFormed),
    ("libxml2__empty.xml", ErrorClass::NotWellFormed),
    ("libxml2__extra-content.xml", ErrorClass::NotWellFormed),
    (
        "libxml2__invalid-start-tag-1.xml",
        ErrorClass::NotWellFormed,
    ),
    ("libxml2__issue151.xml", ErrorClass::NotWellFormed),
    ("libxml2__ns-undeclared.xml", ErrorClass::NotWellFormed),
    ("libxml2__unclosed-element.xml", ErrorClass::NotWellFormed),
    ("libxml2__unsupported-encoding.xml", ErrorClass::Encoding),
    // Its bytes are valid UTF-8 (C3 84 is U+00C4); what is wrong is the
    // unclosed element ending in "<<": not well-formed, not an encoding error.
    ("libxml2__utf8-1.xml", ErrorClass::NotWellFormed),
];

#[test]
fn every_bad_xml_file_is_refused_with_its_class() {
    let dir = shared_or_skip!("external/bad-xml");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("bad-xml is listable")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut listed: Vec<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    listed.sort();
    assert_eq!(names, listed, "the table names every file exactly once");
    for (name, class) in EXPECTED {
        let bytes = std::fs::read(dir.join(name)).expect("readable");
        match decode(&bytes, &Limits::default()) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => {
                assert_eq!(e.class, *class, "{name}: {e}");
                assert!(!e.detail.is_empty());
            }
        }
    }
}

fn max_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    ru.ru_maxrss
}

/// Decodes `doc`, expecting `limit_exceeded` within a time bound and a peak
/// RSS growth of at most `max_growth_mib` beyond the input itself.
fn refused_cheaply(doc: &[u8], max_growth_mib: i64) {
    let before = max_rss_kib();
    let start = Instant::now();
    let result = decode(doc, &Limits::default());
    let elapsed = start.elapsed();
    let growth_mib = (max_rss_kib() - before) / 1024;
    let e = result.expect_err("refused");
    assert_eq!(e.class, ErrorClass::LimitExceeded, "{e}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        growth_mib <= max_growth_mib,
        "peak RSS grew by {growth_mib} MiB"
    );
}

#[test]
fn a_hundred_thousand_attributes_on_one_element() {
    let mut doc = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"");
    for i in 0..100_000 {
        doc.push_str(&format!(" a{i}=\"v\""));
    }
    doc.push_str("/>");
    refused_cheaply(doc.as_bytes(), 32);
}

#[test]
fn a_hundred_thousand_namespace_declarations() {
    let mut doc = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"");
    for i in 0..100_000 {
        doc.push_str(&format!(" xmlns:p{i}=\"urn:x:{i}\""));
    }
    doc.push_str("/>");
    refused_cheaply(doc.as_bytes(), 32);
}

#[test]
fn namespace_declarations_spread_over_many_elements() {
    let mut doc = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\">");
    for i in 0..5_000 {
        doc.push_str(&format!("<x xmlns:p=\"urn:x:{i}\"/>"));
    }
    doc.push_str("</ClinicalDocument>");
    let e = decode(doc.as_bytes(), &Limits::default()).expect_err("refused");
    assert_eq!(e.class, ErrorClass::LimitExceeded, "{e}");
}

#[test]
fn nesting_past_max_depth() {
    let depth = 100_000;
    let doc = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    refused_cheaply(doc.as_bytes(), 32);
    let limits = Limits::default();
    let just = limits.max_depth;
    let ok_depth = format!("{}{}", "<a>".repeat(just), "</a>".repeat(just));
    let e = decode(ok_depth.as_bytes(), &limits).expect_err("not a CDA document");
    assert_eq!(
        e.class,
        ErrorClass::NotCda,
        "depth == max_depth is allowed: {e}"
    );
}

#[test]
fn oversized_input_and_oversized_text() {
    let limits = Limits {
        max_document_bytes: 100,
        max_text_bytes: 10,
        ..Limits::default()
    };
    let big = format!("<a>{}</a>", "x".repeat(200));
    let e = decode(big.as_bytes(), &limits).expect_err("refused");
    assert_eq!(e.class, ErrorClass::LimitExceeded);
    let text = format!("<a>{}</a>", "x".repeat(50));
    let e = decode(text.as_bytes(), &limits).expect_err("refused");
    assert_eq!(e.class, ErrorClass::LimitExceeded);
}

#[test]
fn errors_never_quote_document_content() {
    let docs = [
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><x a=\"200243-9807\" a=\"200243-9807\"/></ClinicalDocument>",
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><x>200243-9807 &bogus;</x></ClinicalDocument>",
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><recordTarget><patientRole><id root=\"1.2.246.21\" extension=\"200243-9808\"/></patientRole></recordTarget><id root=\"1.2\"/></ClinicalDocument>",
    ];
    for d in docs {
        let e = decode(d.as_bytes(), &Limits::default()).expect_err("refused");
        assert!(!e.to_string().contains("200243"), "{e}");
    }
    let e = decode(docs[2].as_bytes(), &Limits::default()).expect_err("refused");
    assert_eq!(e.class, ErrorClass::InvalidPatientId, "{e}");
}
