//! The first feed end to end on the embedded default: the reference fixtures
//! through `once` agree with `fixtures/expected-diabetes.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regfeed::app::App;
use regfeed::decode::hetu::Hetu;
use regfeed::feed::{self, Op, Row, Value};
use regfeed::identity::{self, Key, KeyRole, KeySource};
use regfeed::loaded::Config;

fn copy_xml(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("corpus dir");
    for e in std::fs::read_dir(from).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "xml") {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

fn read_batches(dir: &Path, feed: &str, app: &App) -> Vec<Row> {
    let cfg = app.cfg.feed(feed).expect("feed");
    let columns = cfg.mapping.feed_columns();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("delivered")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv") || n.ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for n in names {
        let f = std::io::BufReader::new(std::fs::File::open(dir.join(&n)).expect("open"));
        let got = if n.ends_with(".csv") {
            feed::csv::read(f, &columns).expect("csv reads back")
        } else {
            feed::jsonl::read(f, &columns).expect("jsonl reads back")
        };
        rows.extend(got);
    }
    rows
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Number(x) => format!("{x}"),
        Value::Integer(i) => i.to_string(),
        Value::Date(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn fixtures_through_once_agree_with_expected_diabetes() {
    let fixtures = shared_or_skip!("fixtures");
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("expected-diabetes.json")).expect("expected"),
    )
    .expect("json");
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    copy_xml(&fixtures, &corpus);
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let cfg = Config::load(&setup.config).expect("config validates");
    let app = App::open(cfg).await.expect("app");

    let report = app.once("thl-diabetes").await.expect("once");
    assert_eq!(report.run.documents_decoded, 18, "{report:?}");
    assert_eq!(report.run.documents_quarantined, 0);
    assert_eq!(report.sealed.len(), 1);

    let key = Key::load(
        &KeyRole::Pseudonym("thl".into()),
        &KeySource::File(setup.dir.join("keys/thl.pseudonym.key")),
    )
    .expect("key");
    let persons: BTreeMap<String, String> = expected["persons"]
        .as_object()
        .expect("persons")
        .iter()
        .map(|(p, h)| {
            let hetu = Hetu::parse(h.as_str().expect("hetu")).expect("valid");
            (identity::pseudonym(&key, &hetu), p.clone())
        })
        .collect();

    let feed_cfg = app.cfg.feed("thl-diabetes").expect("feed");
    let col = |name: &str| {
        feed_cfg
            .mapping
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("column")
    };
    let (c_person, c_item, c_code, c_value, c_unit_raw, c_package, c_symptom) = (
        col("person"),
        col("item"),
        col("code"),
        col("value"),
        col("unit_raw"),
        col("package"),
        col("symptom_code"),
    );
    let rows = read_batches(&setup.delivered.join("thl-diabetes"), "thl-diabetes", &app);
    assert!(
        rows.iter().all(|r| r.op == Op::Upsert),
        "a first batch only upserts"
    );

    let mut by_person: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        let p = persons
            .get(&text(&r.values[c_person]))
            .unwrap_or_else(|| panic!("a row of someone not in the fixtures (temporary id?)"));
        by_person.entry(p.clone()).or_default().push(r);
    }

    // Cohort: exactly the people expected.
    let in_cohort: BTreeSet<String> = expected["cohort"]
        .as_object()
        .expect("cohort")
        .iter()
        .filter(|(_, v)| v.as_bool() == Some(true))
        .map(|(p, _)| p.clone())
        .collect();
    let with_rows: BTreeSet<String> = by_person.keys().cloned().collect();
    assert_eq!(with_rows, in_cohort, "the cohort is P1, P2, P4; never P3");

    let items = |p: &str, item: &str| -> Vec<&Row> {
        by_person
            .get(p)
            .map(|rs| {
                rs.iter()
                    .copied()
                    .filter(|r| text(&r.values[c_item]) == item)
                    .collect()
            })
            .unwrap_or_default()
    };
    // HbA1c in mmol/mol, % converted, superseded and withdrawn values gone.
    for (p, values) in expected["hba1c_mmol_mol"].as_object().expect("hba1c") {
        let mut want: Vec<f64> = values
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        want.sort_by(f64::total_cmp);
        let mut got: Vec<f64> = items(p, "hba1c")
            .iter()
            .map(|r| match r.values[c_value] {
                Value::Number(x) => x,
                ref v => panic!("hba1c value is not a number: {v:?}"),
            })
            .collect();
        got.sort_by(f64::total_cmp);
        assert_eq!(got, want, "HbA1c of {p}");
    }
    let p2_hba1c = items("P2", "hba1c");
    assert_eq!(
        text(&p2_hba1c[0].values[c_unit_raw]),
        "%",
        "the raw unit travels beside"
    );

    // Diagnoses: the diabetes diagnoses only, decorated pairs split.
    for (p, codes) in expected["diagnoses_delivered"].as_object().expect("dx") {
        let got: Vec<String> = items(p, "diabetes_diagnosis")
            .iter()
            .map(|r| text(&r.values[c_code]))
            .collect();
        let want: Vec<String> = codes
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c.as_str().expect("code").to_owned())
            .collect();
        assert_eq!(got, want, "diagnoses of {p}");
    }
    assert_eq!(
        text(&items("P2", "diabetes_diagnosis")[0].values[c_symptom]),
        "H36.0"
    );

    // Dispensings: f08 invalidated; f14 corrected by f18, delivered once.
    assert!(
        items("P1", "a10_dispensing").is_empty(),
        "f08 is invalidated by f09"
    );
    let p4 = items("P4", "a10_dispensing");
    assert_eq!(p4.len(), 1, "the corrected dispensing is delivered once");
    assert_eq!(text(&p4[0].values[c_code]), "A10BJ02");
    assert_eq!(text(&p4[0].values[c_package]), "112233");

    // Held: P2's unit-less HbA1c.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            setup
                .delivered
                .join("thl-diabetes/thl-diabetes-00000001.manifest.json"),
        )
        .expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["counts"]["held"]["missing_unit"], 1, "{manifest}");
    assert_eq!(manifest["rules_version"], regfeed::policy::RULES_VERSION);
    assert_eq!(manifest["legal_basis"]["gdpr_art6"], "6.1.c");
    assert_eq!(
        manifest["previous_manifest_sha256"],
        serde_json::Value::Null
    );
    let held = app.store.held_counts().await.expect("held");
    assert!(
        held.contains(&("thl-diabetes".into(), "missing_unit".into(), 1)),
        "{held:?}"
    );

    // Nothing identifying in the batch files or their names.
    for e in std::fs::read_dir(setup.delivered.join("thl-diabetes")).expect("dir") {
        let p = e.expect("entry").path();
        let body = std::fs::read_to_string(&p).expect("utf-8");
        for h in expected["persons"].as_object().expect("persons").values() {
            let h = h.as_str().expect("hetu");
            assert!(!body.contains(h), "a hetu in a batch file");
            assert!(!p.to_string_lossy().contains(h), "a hetu in a file name");
        }
        for name in ["Testinen", "Koekäyttäjä", "vapaa teksti"] {
            assert!(!body.contains(name), "a name or free text in a batch file");
        }
    }

    // A second run with nothing new seals no batch.
    let again = app.once("thl-diabetes").await.expect("second run");
    assert!(again.run.staged.is_empty(), "{again:?}");
    assert!(again.sealed.is_empty());
}
