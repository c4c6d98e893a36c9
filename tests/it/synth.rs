//! `regfeed gen`: determinism, identities, layout, well-formedness and the
//! truth's internal consistency. Uses quick-xml directly as a basic
//! well-formedness check; never the project's decoder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use quick_xml::Reader;
use quick_xml::events::Event;
use regfeed::decode::hetu::{self, Hetu};
use regfeed::synth::{self, plan::PatientId, truth};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readable folder") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn corpus(patients: u32, seed: u64) -> (tempfile::TempDir, synth::Plan, synth::Truth) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = synth::plan(patients, seed);
    synth::write_corpus(&plan, dir.path()).expect("write corpus");
    let truth = truth::compute(&plan);
    (dir, plan, truth)
}

/// Parses `bytes` as XML with quick-xml, checking that every element closes
/// and there is exactly one root. Returns the root's local name.
fn well_formed(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let mut r = Reader::from_str(text);
    r.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0;
    let mut root = String::new();
    loop {
        match r
            .read_event()
            .map_err(|e| format!("{e} at {}", r.buffer_position()))?
        {
            Event::Start(e) => {
                if depth == 0 {
                    roots += 1;
                    root = e.local_name().into_inner().to_owned();
                }
                depth += 1;
            }
            Event::Empty(e) if depth == 0 => {
                roots += 1;
                root = e.local_name().into_inner().to_owned();
            }
            Event::End(_) => depth = depth.checked_sub(1).ok_or("stray end tag")?,
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 || roots != 1 {
        return Err(format!("depth {depth} at EOF, {roots} roots"));
    }
    Ok(root)
}

/// The base64 part of an archive message, joined.
fn archive_payload(text: &str) -> String {
    let start = text.find("Content-ID:").expect("a Content-ID header");
    let body = &text[start..];
    let b = body
        .find("\n\n")
        .expect("blank line after the part headers")
        + 2;
    let end = body[b..]
        .find("\n\n")
        .expect("blank line after the payload")
        + b;
    let block = &body[b..end];
    for line in block.lines() {
        assert!(line.len() <= 76, "base64 lines are at most 76 characters");
    }
    block.lines().collect()
}

#[test]
fn same_seed_same_bytes_and_truth_other_seed_differs() {
    let (a, _, ta) = corpus(300, 7);
    let (b, _, tb) = corpus(300, 7);
    let (c, _, tc) = corpus(300, 8);
    let fa = files_under(a.path());
    let fb = files_under(b.path());
    let rel = |d: &Path, f: &[PathBuf]| -> Vec<PathBuf> {
        f.iter()
            .map(|p| p.strip_prefix(d).expect("under").to_path_buf())
            .collect()
    };
    assert_eq!(rel(a.path(), &fa), rel(b.path(), &fb));
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(
            fs::read(x).expect("read"),
            fs::read(y).expect("read"),
            "{}",
            x.display()
        );
    }
    let ja = serde_json::to_string(&ta).expect("json");
    assert_eq!(ja, serde_json::to_string(&tb).expect("json"));
    assert_ne!(ja, serde_json::to_string(&tc).expect("json"));
    assert_ne!(rel(a.path(), &fa), rel(c.path(), &files_under(c.path())));

    // run_gen writes the same truth and refuses a folder that holds a corpus.
    let d = tempfile::tempdir().expect("tempdir");
    let tp = d.path().join("truth.json");
    synth::run_gen(300, 7, d.path(), Some(&tp)).expect("gen");
    let back: synth::Truth = serde_json::from_slice(&fs::read(&tp).expect("truth")).expect("parse");
    assert_eq!(back, ta);
    assert!(synth::run_gen(300, 7, d.path(), None).is_err());
}

#[test]
fn hetus_are_unique_valid_test_range_and_match_the_header() {
    let plan = synth::plan(20_000, 3);
    let mut seen = HashSet::new();
    let mut signs = HashSet::new();
    for p in &plan.persons {
        let h = Hetu::parse(&p.hetu).expect("valid hetu");
        assert!(h.is_test_range());
        assert!((900..=999).contains(&h.individual_number()));
        assert!(seen.insert(p.hetu.clone()), "hetus are unique");
        signs.insert(p.hetu.as_bytes()[6]);
        assert_eq!(h.birth_date(), p.birth);
        assert_eq!(h.is_male(), p.sex == synth::plan::Sex::Male);
        assert!((1930..=2024).contains(&chrono::Datelike::year(&p.birth)));
    }
    let expected: HashSet<u8> = hetu::CENTURY_SIGNS
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != b'+')
        .collect();
    assert_eq!(signs, expected, "all twelve 1900s and 2000s signs are used");

    // The header agrees with the hetu.
    let mut buf = String::new();
    for p in plan.persons.iter().take(200) {
        let d = &p.docs[0];
        synth::cda::render(p, d, &mut buf);
        let sex = if p.sex == synth::plan::Sex::Male {
            "1"
        } else {
            "2"
        };
        assert!(buf.contains(&format!(r#"administrativeGenderCode code="{sex}""#)));
        assert!(buf.contains(&format!(
            r#"<birthTime value="{}"/>"#,
            p.birth.format("%Y%m%d")
        )));
        assert!(buf.contains(&format!("{}: vapaa teksti", p.full_name())));
    }
}

#[test]
fn prevalence_is_about_ten_percent() {
    let plan = synth::plan(5000, 11);
    let t = truth::compute(&plan);
    let share = t.cohort_size as f64 / f64::from(t.patients);
    assert!((0.07..=0.14).contains(&share), "cohort share {share}");
    let by_dispensing = t
        .persons
        .iter()
        .filter(|p| p.cohort_by.as_deref() == Some("dispensing"))
        .count();
    assert!(
        by_dispensing > 0,
        "some enter the cohort by a dispensing alone"
    );
    let docs = t.documents as f64 / f64::from(t.patients);
    assert!((5.0..=8.0).contains(&docs), "{docs} documents per person");
    assert!(t.temporary_id_documents > 0 && t.prohibition_documents > 0);
}

#[test]
fn files_are_well_formed_and_named_without_identities() {
    let (dir, plan, t) = corpus(600, 21);
    let files = files_under(dir.path());
    assert_eq!(files.len() as u64, t.files);
    let hetus: Vec<&str> = plan.persons.iter().map(|p| p.hetu.as_str()).collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut foldings = HashSet::new();
    for f in &files {
        let rel = f
            .strip_prefix(dir.path())
            .expect("under")
            .to_string_lossy()
            .into_owned();
        assert!(hetu::find_hetu_shaped(&rel).is_empty(), "{rel}");
        for n in &t.names {
            assert!(!rel.to_lowercase().contains(&n.to_lowercase()), "{rel}");
        }
        assert!(!hetus.iter().any(|h| rel.contains(h)));
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        let shard = f
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .expect("shard");
        assert!(name.ends_with(".xml") && name.starts_with(shard), "{rel}");

        let bytes = fs::read(f).expect("read");
        let root = well_formed(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
        *kinds.entry(root.clone()).or_default() += 1;
        if root.starts_with("RCMR_IN") {
            let text = String::from_utf8(bytes).expect("utf-8");
            if text.contains("multipart/related;\nboundary=") {
                foldings.insert("unindented");
            } else if text.contains("multipart/related;\n\tboundary=") {
                foldings.insert("folded");
            } else {
                foldings.insert("one line");
            }
            if root == "RCMR_IN100016FI01" {
                assert!(text.contains("RCMR_TE000910UV01"));
            }
            let cda = base64::engine::general_purpose::STANDARD
                .decode(archive_payload(&text))
                .expect("base64");
            assert_eq!(
                well_formed(&cda).unwrap_or_else(|e| panic!("{rel} inner: {e}")),
                "ClinicalDocument"
            );
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(foldings.len(), 3, "{foldings:?}");
}

#[test]
fn truth_is_internally_consistent() {
    let plan = synth::plan(4000, 5);
    let t = truth::compute(&plan);
    let mut latest: HashMap<&str, u32> = HashMap::new();
    let mut by_id = HashMap::new();
    for (_, d) in plan.documents() {
        let v = latest.entry(d.set_id.as_str()).or_insert(0);
        *v = (*v).max(d.version);
        by_id.insert(d.id.as_str(), d);
    }
    let mut keys = HashSet::new();
    let mut converted = 0;
    assert_eq!(t.persons.len(), plan.persons.len());
    for p in &t.persons {
        if !p.in_cohort {
            assert!(p.rows.is_empty() && p.held.is_empty());
            assert!(p.cohort_by.is_none());
        }
        for (set_id, ordinal, doc_id) in p
            .rows
            .iter()
            .map(|r| (&r.set_id, r.ordinal, &r.document_id))
            .chain(
                p.held
                    .iter()
                    .map(|h| (&h.set_id, h.ordinal, &h.document_id)),
            )
        {
            let d = by_id
                .get(doc_id.as_str())
                .expect("the row's document exists");
            assert_eq!(&d.set_id, set_id);
            assert_eq!(
                latest[set_id.as_str()],
                d.version,
                "rows come from current versions"
            );
            assert!(matches!(d.patient, PatientId::Hetu));
            assert!((1..=d.entries.len() as u32).contains(&ordinal));
            assert!(
                keys.insert((set_id.clone(), ordinal)),
                "no (set_id, ordinal) twice"
            );
        }
        for r in &p.rows {
            if r.unit_raw.as_deref() == Some("%") {
                converted += 1;
                let pct: f64 = r
                    .value_raw
                    .as_deref()
                    .expect("raw")
                    .parse()
                    .expect("number");
                let x = (pct - 2.15) * 10.929;
                let expected = x.signum() * (x.abs() + 0.5).floor();
                assert_eq!(r.value, Some(expected));
                assert_eq!(r.unit.as_deref(), Some("mmol/mol"));
            }
            assert!(
                r.unit.is_some()
                    || matches!(r.kind.as_str(), "diagnosis" | "medication" | "procedure")
            );
        }
    }
    assert!(converted > 0);
    assert!(t.persons.iter().any(|p| !p.held.is_empty()));
}

#[test]
fn followups_change_the_truth_as_planned() {
    let (dir, plan, before) = corpus(3000, 5);
    let f = synth::write_followups(&plan, dir.path(), 9).expect("followups");
    let kinds: Vec<&str> = f.cases.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "replacement",
            "withdrawal",
            "invalidation",
            "correction",
            "late_cohort_entry"
        ]
    );
    assert_eq!(f.documents, 5);
    assert_eq!(files_under(dir.path()).len() as u64, before.files + 5);
    for c in &f.cases {
        let bytes = fs::read(synth::doc_path(dir.path(), &c.document_id)).expect("written");
        well_formed(&bytes).expect("well-formed");
    }
    let person = |t: &synth::Truth, h: &str| {
        t.persons
            .iter()
            .find(|p| p.hetu == h)
            .cloned()
            .expect("person")
    };
    let has = |v: &[synth::followup::RowRef], set: &str| v.iter().any(|r| r.set_id == set);
    for c in &f.cases {
        let (b, a) = (person(&before, &c.hetu), person(&f.truth, &c.hetu));
        match c.kind.as_str() {
            "replacement" => {
                assert!(has(&f.upserts, &c.set_id));
                assert!(
                    has(&f.retracts, &c.set_id),
                    "the dropped last entry is retracted"
                );
            }
            "withdrawal" => {
                assert!(has(&f.retracts, &c.set_id));
                assert!(!a.rows.iter().any(|r| r.set_id == c.set_id));
            }
            "invalidation" => {
                assert!(has(&f.retracts, &c.set_id));
                if b.cohort_by.as_deref() == Some("dispensing") && !a.in_cohort {
                    let retracted = f.retracts.iter().filter(|r| r.hetu == c.hetu).count();
                    assert_eq!(
                        retracted,
                        b.rows.len(),
                        "leaving the cohort retracts everything"
                    );
                }
            }
            "correction" => assert!(has(&f.upserts, &c.set_id)),
            "late_cohort_entry" => {
                assert!(!b.in_cohort && a.in_cohort);
                let n = f.upserts.iter().filter(|r| r.hetu == c.hetu).count();
                assert_eq!(n, a.rows.len());
                assert!(n >= 2, "the new diagnosis and earlier in-scope rows");
            }
            other => panic!("unexpected case {other}"),
        }
    }
    // Deterministic too.
    let (again, _) = synth::followup::followup_plan(&plan, 9);
    assert_eq!(synth::truth::compute(&again), f.truth);
}

#[test]
fn traps_do_not_enter_the_cohort() {
    use synth::plan::{DocCode, Entry, PcType};
    let plan = synth::plan(5000, 13);
    let t = truth::compute(&plan);
    let (mut negated, mut invalidated, mut temporary) = (0, 0, 0);
    for (p, pt) in plan.persons.iter().zip(&t.persons) {
        if p.diabetic {
            continue;
        }
        let a10_dispensings = p
            .docs
            .iter()
            .filter(|d| d.code == DocCode::Prescription(PcType::Dispensing))
            .filter(|d| {
                d.entries
                    .iter()
                    .any(|e| matches!(e, Entry::Medication { atc, .. } if atc.starts_with("A10")))
            })
            .count();
        let invalidations = p
            .docs
            .iter()
            .filter(|d| d.code == DocCode::Prescription(PcType::Invalidation))
            .count();
        let negated_e11 = p.docs.iter().any(|d| {
            d.entries.iter().any(|e| {
                matches!(
                    e,
                    Entry::Diagnosis {
                        code: "E11.9",
                        negated: true,
                        ..
                    }
                )
            })
        });
        let temp_e11 = p.docs.iter().any(|d| {
            !matches!(d.patient, PatientId::Hetu)
                && d.entries
                    .iter()
                    .any(|e| matches!(e, Entry::Diagnosis { code: "E11.9", .. }))
        });
        if a10_dispensings == 0 {
            if negated_e11 {
                negated += 1;
                assert!(!pt.in_cohort, "a negated E11 is not evidence");
            }
            if temp_e11 {
                temporary += 1;
                assert!(!pt.in_cohort, "a temporary-id document is not evidence");
            }
        } else if a10_dispensings == invalidations {
            invalidated += 1;
            assert!(!pt.in_cohort, "an invalidated dispensing is not evidence");
        }
    }
    assert!(
        negated > 0 && invalidated > 0 && temporary > 0,
        "{negated} {invalidated} {temporary}"
    );
}
