//! Hostile input: every file of `external/bad-xml` is refused with its own
//! error class (checked in the order encoding → DOCTYPE → not well-formed →
//! limit exceeded), and generated resource attacks are refused quickly with
//! bounded memory. Each of them, decoded by `regfeed decode FILE` in a fresh
//! process, is refused with its class below a peak RSS ceiling
//! (`benches/hostile_rss.rs` prints the figures).
#![allow(unsafe_code)] // getrusage has no safe wrapper

use crate::common;
use crate::common::hostile;

use std::time::Instant;

use hostile::{BAD_XML, RSS_CEILING_KIB, class_name, decode_in_child, write_generated};
use regfeed::decode::{ErrorClass, Limits, decode};

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
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
    let mut listed: Vec<&str> = BAD_XML.iter().map(|(n, _)| *n).collect();
    listed.sort();
    assert_eq!(names, listed, "the table names every file exactly once");
    for (name, class) in BAD_XML {
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

/// Decodes `doc`, expecting `limit_exceeded` and a peak RSS growth of at
/// most `max_growth_mib` beyond the input itself (the time it took is
/// printed, not asserted: tests never judge wall time; the benchmark
/// `benches/hostile_rss.rs` measures it). The
/// tests that call it run alone in a process
/// ([`common::ran_in_a_fresh_process`]): the peak is the whole process's.
fn refused_cheaply(doc: &[u8], max_growth_mib: i64) {
    let before = max_rss_kib();
    let start = Instant::now();
    let result = decode(doc, &Limits::default());
    let elapsed = start.elapsed();
    let growth_mib = (max_rss_kib() - before) / 1024;
    let e = result.expect_err("refused");
    assert_eq!(e.class, ErrorClass::LimitExceeded, "{e}");
    eprintln!("refused in {elapsed:?}");
    assert!(
        growth_mib <= max_growth_mib,
        "peak RSS grew by {growth_mib} MiB"
    );
}

#[test]
fn a_hundred_thousand_attributes_on_one_element() {
    if common::ran_in_a_fresh_process(
        "decode_hostile::a_hundred_thousand_attributes_on_one_element",
    ) {
        return;
    }
    let mut doc = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"");
    for i in 0..100_000 {
        doc.push_str(&format!(" a{i}=\"v\""));
    }
    doc.push_str("/>");
    refused_cheaply(doc.as_bytes(), 32);
}

#[test]
fn a_hundred_thousand_namespace_declarations() {
    if common::ran_in_a_fresh_process("decode_hostile::a_hundred_thousand_namespace_declarations") {
        return;
    }
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
    if common::ran_in_a_fresh_process("decode_hostile::nesting_past_max_depth") {
        return;
    }
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

/// Every hostile file (bad-xml and the generated attacks), decoded by the
/// real binary in a process of its own: refused with its class, exit 1, and
/// the whole process's peak RSS below [`RSS_CEILING_KIB`]. No timing.
#[test]
fn each_hostile_file_is_refused_in_a_fresh_process_below_the_rss_ceiling() {
    if common::ran_in_a_fresh_process(
        "decode_hostile::each_hostile_file_is_refused_in_a_fresh_process_below_the_rss_ceiling",
    ) {
        return;
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_regfeed"));
    let generated = tempfile::tempdir().expect("tmp");
    let mut cases: Vec<(std::path::PathBuf, String, ErrorClass)> =
        write_generated(generated.path())
            .into_iter()
            .map(|(n, c)| (generated.path().join(&n), n, c))
            .collect();
    if let Some(data) = common::shared_data_if_present() {
        let dir = data.join("external/bad-xml");
        cases.extend(
            BAD_XML
                .iter()
                .map(|(n, c)| (dir.join(n), (*n).to_owned(), *c)),
        );
    }
    for (path, name, class) in &cases {
        let m = decode_in_child(bin, path);
        eprintln!(
            "{name}\t{}\t{} KiB (own {:?} KiB)",
            m.class, m.max_rss_kib, m.own_peak_kib
        );
        assert_eq!(m.class, class_name(*class), "{name}");
        assert_eq!(m.exit, 1, "{name}: a refused file exits 1");
        assert!(
            m.max_rss_kib < RSS_CEILING_KIB,
            "{name}: peak RSS {} KiB, ceiling {RSS_CEILING_KIB} KiB",
            m.max_rss_kib
        );
    }
}

/// The daemon's path, not only `decode`: a feed run over a folder holding a
/// document larger than `max_document_bytes` quarantines it as
/// `limit_exceeded` without holding it (it is hashed in chunks), so the
/// run's peak RSS stays below the ceiling.
#[test]
fn a_feed_run_quarantines_an_oversized_document_without_holding_it() {
    if common::ran_in_a_fresh_process(
        "decode_hostile::a_feed_run_quarantines_an_oversized_document_without_holding_it",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(20, 3);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let incoming = corpus.join("docs/incoming");
    std::fs::create_dir_all(&incoming).expect("dir");
    let generated = write_generated(&incoming);
    // Only the oversized one: the others are covered by decode above.
    for (name, _) in &generated {
        if name != "gen__oversized-65mib.xml" {
            std::fs::remove_file(incoming.join(name)).expect("rm");
        }
    }
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let run = hostile::run_measured(
        std::process::Command::new(env!("CARGO_BIN_EXE_regfeed"))
            .args([
                "--log-format",
                "json",
                "once",
                "--feed",
                "thl-diabetes",
                "--config",
            ])
            .arg(&setup.config)
            .env("REGFEED_LOG", "warn")
            .env_remove("RUST_LOG"),
    );
    assert_eq!(run.exit, 0, "once failed:\n{}", run.stderr);
    let quarantined: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "A document was quarantined.")
        .collect();
    assert_eq!(quarantined.len(), 1, "{}", run.stderr);
    assert_eq!(quarantined[0]["class"], "limit_exceeded");
    eprintln!(
        "once with a 65 MiB document: peak RSS {} KiB",
        run.max_rss_kib
    );
    assert!(
        run.max_rss_kib < RSS_CEILING_KIB,
        "peak RSS {} KiB, ceiling {RSS_CEILING_KIB} KiB",
        run.max_rss_kib
    );
}
