//! A generated corpus through `once` equals the generator's truth, person by
//! person and record by record; follow-ups (replacement, withdrawal,
//! invalidation, correction, late cohort entry) produce exactly the expected
//! upserts and retracts; every manifest validates against the schema; nothing
//! identifying reaches logs, errors, batch files or file names.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Months, NaiveDate, Utc};
use regfeed::app::App;
use regfeed::decode::hetu::Hetu;
use regfeed::feed::{self, Op, Row, Value};
use regfeed::identity::{self, Key, KeyRole, KeySource};
use regfeed::loaded::Config;
use regfeed::synth::{self, Truth};

/// The corpus of the story on SQLite, where the generator's variety is the
/// point.
const PATIENTS: u32 = 1500;
/// The corpus of the same story on PostgreSQL, where the backend is the
/// point (the store's statements are the same at any size).
const PATIENTS_ON_POSTGRESQL: u32 = 600;
const SEED: u64 = 20261122;

struct World {
    _tmp: tempfile::TempDir,
    corpus: PathBuf,
    setup: regfeed::demo::Setup,
    app: App,
    plan: synth::Plan,
    truth: Truth,
    pseudonym_key: Key,
    record_key: Key,
}

async fn world(database_url: Option<&str>, patients: u32) -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = synth::plan(patients, SEED);
    synth::write_corpus(&plan, &corpus).expect("corpus");
    let truth = synth::truth::compute(&plan);
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let mut cfg = Config::load(&setup.config).expect("config validates");
    if let Some(url) = database_url {
        cfg.database_url = url.to_owned().into();
    }
    let app = App::open(cfg).await.expect("app");
    let key = |role: KeyRole, file: &str| {
        Key::load(&role, &KeySource::File(setup.dir.join("keys").join(file))).expect("key")
    };
    World {
        pseudonym_key: key(KeyRole::Pseudonym("thl".into()), "thl.pseudonym.key"),
        record_key: key(
            KeyRole::Record("thl-diabetes".into()),
            "thl-diabetes.record.key",
        ),
        _tmp: tmp,
        corpus,
        setup,
        app,
        plan,
        truth,
    }
}

fn cutoff() -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_sub_months(Months::new(120))
        .expect("date")
}

fn in_lookback(effective: &str) -> bool {
    NaiveDate::parse_from_str(&effective[..8], "%Y%m%d").expect("date") >= cutoff()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        Value::Number(x) => Some(format!("{x}")),
        Value::Integer(i) => Some(i.to_string()),
        Value::Date(d) => Some(d.format("%Y%m%d").to_string()),
        Value::Bool(b) => Some(b.to_string()),
    }
}

/// One batch file's rows.
fn read_batch(dir: &Path, w: &World, seq: u64) -> Vec<Row> {
    let fc = w.app.cfg.feed("thl-diabetes").expect("feed");
    let path = dir.join(format!("thl-diabetes-{seq:08}.csv"));
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("batch file"));
    feed::csv::read(f, &fc.mapping.feed_columns()).expect("reads back")
}

/// A comparable view of a delivered row.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    person: String,
    kind: String,
    code: String,
    value: Option<String>,
    unit: Option<String>,
    value_raw: Option<String>,
    unit_raw: Option<String>,
    date: String,
    event: Option<String>,
    package: Option<String>,
    controller: String,
}

fn seen_of(w: &World, r: &Row) -> Seen {
    let fc = w.app.cfg.feed("thl-diabetes").expect("feed");
    let get = |name: &str| {
        let i = fc
            .mapping
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("column");
        text(&r.values[i])
    };
    Seen {
        person: get("person").expect("person"),
        kind: get("kind").expect("kind"),
        code: get("code").expect("code"),
        value: get("value"),
        unit: get("unit"),
        value_raw: get("value_raw"),
        unit_raw: get("unit_raw"),
        date: get("event_date").expect("date"),
        event: get("medication_event"),
        package: get("package"),
        controller: get("controller").expect("controller"),
    }
}

fn expected_of(w: &World, hetu: &str, r: &synth::truth::Row) -> Seen {
    let h = Hetu::parse(hetu).expect("valid hetu");
    Seen {
        person: identity::pseudonym(&w.pseudonym_key, &h),
        kind: r.kind.clone(),
        code: r.code.clone(),
        value: r.value.map(|x| format!("{x}")),
        unit: r.unit.clone(),
        value_raw: r.value_raw.clone(),
        unit_raw: r.unit_raw.clone(),
        date: r.effective[..8].to_owned(),
        event: r.event.clone(),
        package: r.package.clone(),
        controller: r.controller.clone(),
    }
}

/// The register's state after applying batches in order.
fn apply(state: &mut BTreeMap<String, Row>, rows: Vec<Row>) {
    for r in rows {
        match r.op {
            Op::Upsert => {
                state.insert(r.record_id.clone(), r);
            }
            Op::Retract => {
                state.remove(&r.record_id);
            }
        }
    }
}

/// Expected register state from a truth: record id → row.
fn expected_state(w: &World, truth: &Truth) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    for p in truth.persons.iter().filter(|p| p.in_cohort) {
        for r in p.rows.iter().filter(|r| in_lookback(&r.effective)) {
            let id = identity::record_id(&w.record_key, &r.set_id, r.ordinal);
            out.insert(id, expected_of(w, &p.hetu, r));
        }
    }
    out
}

fn compare(w: &World, got: &BTreeMap<String, Row>, want: &BTreeMap<String, Seen>) {
    let mut problems = Vec::new();
    for (id, exp) in want {
        match got.get(id) {
            None => problems.push(format!("missing {id}: {exp:?}")),
            Some(r) => {
                let s = seen_of(w, r);
                if &s != exp {
                    problems.push(format!("differs {id}:\n  got  {s:?}\n  want {exp:?}"));
                }
            }
        }
    }
    for id in got.keys().filter(|id| !want.contains_key(*id)) {
        problems.push(format!("unexpected {id}: {:?}", seen_of(w, &got[id])));
    }
    assert!(
        problems.is_empty(),
        "{} of {} rows differ from the truth; first ones:\n{}",
        problems.len(),
        want.len(),
        problems
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn schema_validator() -> Option<jsonschema::Validator> {
    let data = common::shared_data_if_present()?;
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("../feed-manifest.schema.json")).expect("schema"),
    )
    .expect("json");
    Some(jsonschema::validator_for(&schema).expect("schema compiles"))
}

fn check_manifests(dir: &Path) {
    let Some(v) = schema_validator() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".manifest.json") {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            let errors: Vec<String> = v.iter_errors(&m).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", p.display());
            n += 1;
        }
    }
    assert!(n > 0, "no manifest to validate");
}

// The store's test story: the same on both backends (issue 7). Runs,
// cursors, staged, sealed and delivered batches, held records, the outbox,
// the audit trail, policy inputs and fenced commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_corpus_equals_truth_and_follow_ups_give_exact_deltas() {
    story(None, PATIENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn the_same_story_on_postgresql() {
    let Some(db) = common::PgDb::create("story") else {
        return;
    };
    story(Some(&db.url), PATIENTS_ON_POSTGRESQL).await;
    drop(db);
}

async fn story(database_url: Option<&str>, patients: u32) {
    let w = world(database_url, patients).await;
    let delivered = w.setup.delivered.join("thl-diabetes");

    // First run: the batch equals the truth.
    let first = w.app.once("thl-diabetes").await.expect("first run");
    assert_eq!(
        first.run.documents_quarantined, 0,
        "{:?}",
        first.run.quarantined
    );
    assert_eq!(first.sealed, vec![1]);
    let mut state = BTreeMap::new();
    apply(&mut state, read_batch(&delivered, &w, 1));
    assert!(state.values().all(|r| r.op == Op::Upsert));
    let want = expected_state(&w, &w.truth);
    assert!(
        want.len() > patients as usize / 3,
        "a meaningful corpus: {} rows",
        want.len()
    );
    compare(&w, &state, &want);

    // Cohort: people with rows are exactly the truth's members with rows in
    // the look-back.
    let members: BTreeSet<String> = w
        .truth
        .persons
        .iter()
        .filter(|p| p.in_cohort)
        .map(|p| identity::pseudonym(&w.pseudonym_key, &Hetu::parse(&p.hetu).expect("hetu")))
        .collect();
    let with_rows: BTreeSet<String> = state.values().map(|r| seen_of(&w, r).person).collect();
    assert!(with_rows.is_subset(&members));
    assert_eq!(
        first.run.cohort_entered as usize,
        members.len(),
        "cohort size"
    );

    // Held: every unit-less in-scope value of a member, and only those.
    let held_truth: usize = w
        .truth
        .persons
        .iter()
        .filter(|p| p.in_cohort)
        .map(|p| p.held.len())
        .sum();
    assert_eq!(
        first.run.held.get("missing_unit").copied().unwrap_or(0) as usize,
        held_truth
    );

    // Nothing new: no batch.
    let second = w.app.once("thl-diabetes").await.expect("second run");
    assert!(
        second.run.staged.is_empty() && second.sealed.is_empty(),
        "{second:?}"
    );

    // Follow-ups: exactly the expected upserts and retracts.
    let fu = synth::write_followups(&w.plan, &w.corpus, SEED).expect("follow-ups");
    assert_eq!(fu.cases.len(), 5);
    let third = w.app.once("thl-diabetes").await.expect("third run");
    assert_eq!(third.sealed, vec![2], "{third:?}");
    let batch2 = read_batch(&delivered, &w, 2);
    let rid =
        |r: &synth::followup::RowRef| identity::record_id(&w.record_key, &r.set_id, r.ordinal);
    let want_up: BTreeSet<String> = fu
        .upserts
        .iter()
        .filter(|r| in_lookback(&r.effective))
        .map(rid)
        .collect();
    // A retract is due only for what was delivered: rows in the look-back.
    let want_re: BTreeSet<String> = fu
        .retracts
        .iter()
        .filter(|r| in_lookback(&r.effective))
        .map(rid)
        .collect();
    let got_up: BTreeSet<String> = batch2
        .iter()
        .filter(|r| r.op == Op::Upsert)
        .map(|r| r.record_id.clone())
        .collect();
    let got_re: BTreeSet<String> = batch2
        .iter()
        .filter(|r| r.op == Op::Retract)
        .map(|r| r.record_id.clone())
        .collect();
    assert_eq!(
        got_up,
        want_up,
        "upserts of the follow-ups ({:?})",
        fu.cases.iter().map(|c| &c.kind).collect::<Vec<_>>()
    );
    assert_eq!(got_re, want_re, "retracts of the follow-ups");
    apply(&mut state, batch2);
    compare(&w, &state, &expected_state(&w, &fu.truth));

    check_manifests(&delivered);
    let m2: serde_json::Value = serde_json::from_slice(
        &std::fs::read(delivered.join("thl-diabetes-00000002.manifest.json")).expect("m2"),
    )
    .expect("json");
    let m1 = std::fs::read(delivered.join("thl-diabetes-00000001.manifest.json")).expect("m1");
    assert_eq!(
        m2["previous_manifest_sha256"],
        regfeed::feed::sha256_hex(&m1),
        "the chain"
    );

    // No hetu-shaped string or corpus name in a batch file or a file name.
    let names: Vec<&str> = w.truth.names.iter().map(String::as_str).collect();
    for e in std::fs::read_dir(&delivered).expect("dir") {
        let p = e.expect("entry").path();
        let body = std::fs::read_to_string(&p).expect("utf-8");
        let file = p.file_name().expect("name").to_string_lossy().into_owned();
        assert!(
            regfeed::decode::hetu::find_hetu_shaped(&body).is_empty(),
            "hetu-shaped text in {file}"
        );
        assert!(regfeed::decode::hetu::find_hetu_shaped(&file).is_empty());
        for n in &names {
            assert!(!body.contains(n), "a corpus name in {file}");
        }
    }

    // The outbox: every batch delivered, in order, gapless.
    let outbox = w
        .app
        .store
        .outbox(Some("thl-diabetes"))
        .await
        .expect("outbox");
    assert_eq!(
        outbox
            .iter()
            .map(|e| (e.seq, e.state.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "delivered"), (2, "delivered")]
    );
    // Held records are in the store by reason.
    let held = w.app.store.held_counts().await.expect("held");
    assert_eq!(
        held.iter()
            .filter(|(f, r, _)| f == "thl-diabetes" && r == "missing_unit")
            .map(|(_, _, n)| *n as usize)
            .sum::<usize>(),
        fu.truth
            .persons
            .iter()
            .filter(|p| p.in_cohort)
            .map(|p| p.held.len())
            .sum::<usize>(),
        "held records after the follow-ups"
    );

    // Policy inputs and a feed they apply to.
    let inputs = w._tmp.path().join("policy-inputs.csv");
    std::fs::write(&inputs, regfeed::demo::policy_inputs(&w.plan)).expect("inputs");
    let imported = w.app.import_policy(&inputs).await.expect("import");
    assert!(imported.errors.is_empty(), "{:?}", imported.errors);
    assert!(
        !w.app
            .store
            .policy_counts()
            .await
            .expect("counts")
            .is_empty()
    );
    let research = w.app.once("research-diabetes").await.expect("research run");
    assert_eq!(research.sealed, vec![1], "{research:?}");

    // The audit trail is intact and covers the runs and deliveries.
    let v = regfeed::audit::verify(w.app.store.pool(), None, None)
        .await
        .expect("verify");
    assert!(v.first_bad.is_none() && v.entries > 5, "{v:?}");

    // Leases fence commits: a holder whose lease was taken cannot commit.
    let store = &w.app.store;
    let ttl = std::time::Duration::ZERO;
    let lost = store
        .acquire_lease("fence-test", "a:1", ttl)
        .await
        .expect("take");
    let _taken = store
        .acquire_lease("fence-test", "b:2", std::time::Duration::from_secs(60))
        .await
        .expect("expired lease taken");
    let refused = regfeed::store::fenced(lost, async {
        let tx = store.begin().await.expect("begin");
        tx.commit().await
    })
    .await;
    assert!(
        matches!(refused, Err(regfeed::store::StoreError::Fenced(_))),
        "{refused:?}"
    );
}
