//! Objections through real feed runs (issue 4): evaluated when a batch is
//! staged and again when it is sealed; an objection after sealing recalls
//! nothing and is audited; a person who leaves a feed by objection gets no
//! retractions; a dead batch retried later is re-checked and re-sealed; the
//! exempt register feed keeps delivering, audited as exempt.

use crate::common;
use crate::common::delivery as helpers;
use crate::receiver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use regfeed::app::App;
use regfeed::decode::hetu::Hetu;
use regfeed::feed::{self, Op, Row, Value};
use regfeed::identity::{self, Key, KeyRole, KeySource};
use regfeed::loaded::Config;
use regfeed::pipeline::{self, FeedKeys, Mode};

const RESEARCH: &str = "research-diabetes";
const THL: &str = "thl-diabetes";
/// P1 of the fixtures: every document from the Pirkanmaa county.
const P1: &str = "140372-912E";
/// P2: documents from Pirkanmaa and from a private provider.
const P2: &str = "050658-9334";

fn copy_fixtures(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("corpus");
    for e in std::fs::read_dir(from).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "xml") {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

async fn open(config: &Path) -> App {
    App::open(Config::load(config).expect("config validates"))
        .await
        .expect("app")
}

fn pseudonym(setup_dir: &Path, recipient: &str, hetu: &str) -> String {
    let key = Key::load(
        &KeyRole::Pseudonym(recipient.into()),
        &KeySource::File(setup_dir.join(format!("keys/{recipient}.pseudonym.key"))),
    )
    .expect("key");
    identity::pseudonym(&key, &Hetu::parse(hetu).expect("hetu"))
}

fn import(app: &App, dir: &Path, name: &str, csv: &str) -> impl std::future::Future<Output = ()> {
    let file = dir.join(name);
    std::fs::write(&file, csv).expect("write import");
    async move {
        let r = app.import_policy(&file).await.expect("import runs");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
}

fn objection_csv(hetu: &str, made_to: &str) -> String {
    format!(
        "kind,hetu,made_to,purposes,effective_from,source,reference\r\nobjection,{hetu},{made_to},all,{},test,OBJ-T\r\n",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

fn rows_of(dir: &Path, app: &App, feed_name: &str, seq: u64) -> Vec<Row> {
    let fc = app.cfg.feed(feed_name).expect("feed");
    let path = dir.join(format!("{feed_name}-{seq:08}.csv"));
    let f = std::io::BufReader::new(std::fs::File::open(&path).expect("batch file"));
    feed::csv::read(f, &fc.mapping.feed_columns()).expect("reads back")
}

fn persons_in(rows: &[Row], app: &App, feed_name: &str) -> Vec<String> {
    let fc = app.cfg.feed(feed_name).expect("feed");
    let i = fc
        .mapping
        .columns
        .iter()
        .position(|c| c.name == "person")
        .expect("person column");
    rows.iter()
        .filter_map(|r| match r.values.get(i) {
            Some(Value::Text(p)) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    corpus: PathBuf,
    app: App,
}

async fn world() -> Option<World> {
    let fixtures = common::shared_data()?.join("fixtures");
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    copy_fixtures(&fixtures, &corpus);
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let app = open(&setup.config).await;
    Some(World {
        dir: setup.dir,
        corpus,
        app,
        _tmp: tmp,
    })
}

async fn stage_only(app: &App, feed_name: &str) -> pipeline::RunReport {
    let fc = app.cfg.feed(feed_name).expect("feed");
    let keys = FeedKeys::for_feed(&app.keys, fc).expect("keys");
    pipeline::stage(&app.cfg, fc, &app.store, keys, Utc::now(), Mode::Commit)
        .await
        .expect("stage")
}

async fn audit_kinds(app: &App) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT kind, COALESCE(feed, '') || ' ' || data FROM audit ORDER BY seq",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("audit rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn an_objection_between_staging_and_sealing_removes_the_rows_at_sealing() {
    let Some(w) = world().await else { return };
    let staged = stage_only(&w.app, RESEARCH).await;
    assert_eq!(staged.staged, vec![1]);
    // P1 objects to the county that holds all their records, after staging.
    import(&w.app, &w.dir, "o.csv", &objection_csv(P1, "org-32213086")).await;
    let fc = w.app.cfg.feed(RESEARCH).expect("feed");
    let d = w.app.deliver_feed(fc).await.expect("deliver");
    assert_eq!(d.delivered, vec![1]);

    let out = w.dir.join("delivered").join(RESEARCH);
    let rows = rows_of(&out, &w.app, RESEARCH, 1);
    let p1 = pseudonym(&w.dir, "findata-permit-2026-017", P1);
    assert!(
        !persons_in(&rows, &w.app, RESEARCH).contains(&p1),
        "P1's rows were removed at sealing"
    );
    assert!(!rows.is_empty(), "others' rows still go out");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("{RESEARCH}-00000001.manifest.json"))).expect("manifest"),
    )
    .expect("json");
    assert!(
        manifest["counts"]["excluded"]["objection_to_controller_at_sealing"].as_u64() > Some(0),
        "{manifest}"
    );
    let sealed = audit_kinds(&w.app)
        .await
        .into_iter()
        .find(|(k, _)| k == "batch_sealed")
        .expect("a batch_sealed entry");
    assert!(
        sealed.1.contains("objection_to_controller"),
        "audited: {}",
        sealed.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn an_objection_after_sealing_recalls_nothing_is_audited_and_sends_no_retractions() {
    let Some(w) = world().await else { return };
    let first = w.app.once(RESEARCH).await.expect("first run");
    assert_eq!(first.sealed, vec![1]);
    let out = w.dir.join("delivered").join(RESEARCH);
    let before = std::fs::read(out.join(format!("{RESEARCH}-00000001.csv"))).expect("batch");
    let p2 = pseudonym(&w.dir, "findata-permit-2026-017", P2);
    assert!(persons_in(&rows_of(&out, &w.app, RESEARCH, 1), &w.app, RESEARCH).contains(&p2));

    // P2 objects to Findata after the batch was sealed and delivered.
    import(&w.app, &w.dir, "o.csv", &objection_csv(P2, "findata")).await;
    let kinds = audit_kinds(&w.app).await;
    assert!(
        kinds
            .iter()
            .any(|(k, d)| k == "objection_after_sealing" && d.contains(RESEARCH)),
        "the sealed batch holding P2 is audited, not recalled"
    );
    assert_eq!(
        std::fs::read(out.join(format!("{RESEARCH}-00000001.csv"))).expect("batch"),
        before,
        "the delivered batch is unchanged"
    );

    // A new document of P2 arrives: their rows are excluded now, and their
    // earlier rows are not retracted (leaving by objection recalls nothing).
    let f03 = std::fs::read_to_string(w.corpus.join("f03-lab-panel.xml")).expect("f03");
    std::fs::write(
        w.corpus.join("f03b.xml"),
        f03.replace("140372-912E", P2).replace(
            "1.2.246.10.32213086.93.2026.103",
            "1.2.246.10.32213086.93.2026.903",
        ),
    )
    .expect("write");
    let second = w.app.once(RESEARCH).await.expect("second run");
    assert!(
        second
            .run
            .excluded
            .get("objection_to_findata")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        second.run
    );
    assert_eq!(
        second.run.retracts, 0,
        "no retractions for a departure by objection"
    );
    assert!(second.sealed.is_empty(), "nothing else changed: no batch");

    // The statutory register feed delivers P2's new rows, audited as exempt.
    let thl = w.app.once(THL).await.expect("thl run");
    assert!(thl.run.exempt > 0, "{:?}", thl.run);
    let thl_rows = rows_of(&w.dir.join("delivered").join(THL), &w.app, THL, 1);
    let p2_thl = pseudonym(&w.dir, "thl", P2);
    assert!(persons_in(&thl_rows, &w.app, THL).contains(&p2_thl));
    assert!(thl_rows.iter().all(|r| r.op == Op::Upsert));
    let kinds = audit_kinds(&w.app).await;
    assert!(
        kinds
            .iter()
            .any(|(k, d)| k == "decisions" && d.contains("exempt: THL Act 668/2008")),
        "the exemption is audited with its statute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn a_dead_batch_retried_after_an_objection_is_rechecked_and_resealed() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let broken = Arc::new(AtomicBool::new(true));
    let mut opts = receiver::Options::new(&tmp.path().join("received"));
    let b2 = Arc::clone(&broken);
    opts.injector = Arc::new(move |_r: &receiver::Req| {
        if b2.load(Ordering::SeqCst) {
            receiver::Fault::BadRequest("rejected by the test register".into())
        } else {
            receiver::Fault::None
        }
    });
    let reg = receiver::start(opts).await;
    let corpus = tmp.path().join("corpus");
    copy_fixtures(&data.join("fixtures"), &corpus);
    let config = helpers::write_http_setup(
        &tmp.path().join("demo"),
        &corpus,
        &helpers::SinkSpec::new(&reg.base_url),
    );
    let app = open(&config).await;
    let first = app.once(RESEARCH).await;
    assert!(
        first.is_err() || first.as_ref().is_ok_and(|r| !r.dead.is_empty()),
        "the batch dies: {first:?}"
    );
    let before = app
        .store
        .batch(RESEARCH, 1)
        .await
        .expect("batch")
        .expect("exists");
    assert_eq!(before.state, "dead");

    // The cause is fixed, but P1 objected in the meantime.
    let demo_dir = tmp.path().join("demo");
    import(&app, &demo_dir, "o.csv", &objection_csv(P1, "org-32213086")).await;
    broken.store(false, Ordering::SeqCst);
    let d = app.retry_dead(RESEARCH, 1).await.expect("retry");
    assert_eq!(d.delivered, vec![1]);
    let after = app
        .store
        .batch(RESEARCH, 1)
        .await
        .expect("batch")
        .expect("exists");
    assert_eq!(after.state, "delivered");
    assert_ne!(
        after.data_sha256, before.data_sha256,
        "re-sealed under the same sequence with a new digest"
    );
    let snap = reg.snapshot();
    let sent = std::fs::read_dir(tmp.path().join("received"))
        .expect("received")
        .count();
    assert!(sent > 0, "{snap:?}");
}

// ---------------------------------------------------------------------------
// Issue 13: sealing re-decides the cohort; held records are re-evaluated
// every run; "objection after sealing" only where it binds; a feed whose
// recipient is the controller is not blocked by denials.

/// The county of the fixtures (Pirkanmaa) and a second one (Vantaa-Kerava).
const K1: &str = "32213086";
const K2: &str = "32213094";

/// A synthetic hetu (individual number 900–999) born on `ddmmyy` in the 1900s.
fn synthetic_hetu(ddmmyy: &str, n: u32) -> String {
    assert!(
        (900..1000).contains(&n),
        "synthetic individual numbers only"
    );
    let nnn = format!("{n:03}");
    let c = regfeed::decode::hetu::check_char(ddmmyy, &nnn).expect("check char");
    format!("{ddmmyy}-{nnn}{c}")
}

/// A fixture document re-issued for `hetu` by county `county` under the
/// document number `no` (unique per corpus): ids, set id, custodian and
/// service event rewritten.
fn doc_for(fixtures: &Path, fixture: &str, hetu: &str, county: &str, no: u32) -> String {
    let text = std::fs::read_to_string(fixtures.join(fixture)).expect("fixture");
    let orig_no = match fixture {
        "f01-visit-diagnoses.xml" => "101",
        "f03-lab-panel.xml" => "103",
        other => panic!("no rewrite rule for {other}"),
    };
    text.replace("140372-912E", hetu)
        .replace(
            &format!("1.2.246.10.32213086.93.2026.{orig_no}"),
            &format!("1.2.246.10.{county}.93.2026.{no}"),
        )
        .replace(
            &format!("1.2.246.10.32213086.14011.2026.{orig_no}"),
            &format!("1.2.246.10.{county}.14011.2026.{no}"),
        )
        .replace(
            "1.2.246.10.32213086.19.0",
            &format!("1.2.246.10.{county}.19.0"),
        )
}

/// A world whose corpus holds only the given documents (file name, text),
/// on SQLite or on the PostgreSQL database at `database_url`.
async fn small_world(database_url: Option<&str>, docs: &[(String, String)]) -> Option<World> {
    common::shared_data()?;
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    for (name, text) in docs {
        std::fs::write(corpus.join(name), text).expect("doc");
    }
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let mut cfg = Config::load(&setup.config).expect("config validates");
    if let Some(url) = database_url {
        cfg.database_url = url.to_owned().into();
    }
    let app = App::open(cfg).await.expect("app");
    Some(World {
        dir: setup.dir,
        corpus,
        app,
        _tmp: tmp,
    })
}

fn manifest_of(dir: &Path, feed_name: &str, seq: u64) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(
            dir.join("delivered")
                .join(feed_name)
                .join(format!("{feed_name}-{seq:08}.manifest.json")),
        )
        .expect("manifest"),
    )
    .expect("json")
}

/// Issue 13.1: a person's only cohort evidence is a diagnosis recorded by
/// K1; K2 holds their laboratory results. An objection to K1 arrives between
/// staging and sealing: at sealing the person leaves the research cohort, so
/// none of their rows go out (not K2's either), and the manifest and the
/// audit say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn a_late_objection_to_the_only_cohort_evidence_takes_every_row_out_at_sealing() {
    a_late_objection_to_the_only_cohort_evidence_takes_every_row_out_at_sealing_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(no_pg, no_shared_data),
    ignore = "needs REGFEED_TEST_DATABASE_URL and ../shared/data"
)]
async fn a_late_objection_to_the_only_cohort_evidence_takes_every_row_out_at_sealing_on_postgresql()
{
    let Some(db) = common::PgDb::create("policy") else {
        return;
    };
    a_late_objection_to_the_only_cohort_evidence_takes_every_row_out_at_sealing_on(Some(&db.url))
        .await;
    drop(db);
}

async fn a_late_objection_to_the_only_cohort_evidence_takes_every_row_out_at_sealing_on(
    database_url: Option<&str>,
) {
    let Some(fixtures) = common::shared_data().map(|d| d.join("fixtures")) else {
        return;
    };
    let h = synthetic_hetu("120480", 931);
    let Some(w) = small_world(
        database_url,
        &[
            (
                "dx.xml".into(),
                doc_for(&fixtures, "f01-visit-diagnoses.xml", &h, K1, 501),
            ),
            (
                "lab.xml".into(),
                doc_for(&fixtures, "f03-lab-panel.xml", &h, K2, 502),
            ),
        ],
    )
    .await
    else {
        return;
    };
    let staged = stage_only(&w.app, RESEARCH).await;
    assert_eq!(staged.staged, vec![1]);
    assert!(staged.upserts >= 3, "diagnosis and labs staged: {staged:?}");
    import(
        &w.app,
        &w.dir,
        "o.csv",
        &objection_csv(&h, &format!("org-{K1}")),
    )
    .await;
    let fc = w.app.cfg.feed(RESEARCH).expect("feed");
    let d = w.app.deliver_feed(fc).await.expect("deliver");
    assert_eq!(d.sealed, vec![1]);

    let rows = rows_of(&w.dir.join("delivered").join(RESEARCH), &w.app, RESEARCH, 1);
    let p = pseudonym(&w.dir, "findata-permit-2026-017", &h);
    assert!(
        !persons_in(&rows, &w.app, RESEARCH).contains(&p),
        "no row of a person who left the cohort at sealing goes out ({} rows)",
        rows.len()
    );
    let m = manifest_of(&w.dir, RESEARCH, 1);
    let excluded = &m["counts"]["excluded"];
    assert_eq!(
        excluded["objection_to_controller_at_sealing"].as_u64(),
        Some(1),
        "{m}"
    );
    assert!(
        excluded["no_usable_cohort_evidence_at_sealing"].as_u64() >= Some(3),
        "{m}"
    );
    let sealed = audit_kinds(&w.app)
        .await
        .into_iter()
        .find(|(k, _)| k == "batch_sealed")
        .expect("a batch_sealed entry");
    assert!(
        sealed.1.contains("no_usable_cohort_evidence"),
        "audited per rule: {}",
        sealed.1
    );
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The person's held rows in a feed: (record id, reason, since).
async fn held_rows(app: &App, feed_name: &str) -> Vec<(String, String, String)> {
    sqlx::query_as::<_, (String, String, String)>(
        "SELECT record_id, reason, since FROM held WHERE feed = $1 ORDER BY record_id",
    )
    .bind(feed_name)
    .fetch_all(app.store.pool())
    .await
    .expect("held rows")
}

/// Issue 13.2: a restriction ends; the next run, with no new document of
/// that person, re-evaluates the held rows and releases them into its batch.
/// While they stay held, a re-evaluation keeps the time the hold began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn held_records_are_released_by_a_run_without_new_documents_once_the_restriction_ends() {
    held_records_are_released_by_a_run_without_new_documents_once_the_restriction_ends_on(None)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(no_pg, no_shared_data),
    ignore = "needs REGFEED_TEST_DATABASE_URL and ../shared/data"
)]
async fn held_records_are_released_by_a_run_without_new_documents_once_the_restriction_ends_on_postgresql()
 {
    let Some(db) = common::PgDb::create("policy") else {
        return;
    };
    held_records_are_released_by_a_run_without_new_documents_once_the_restriction_ends_on(Some(
        &db.url,
    ))
    .await;
    drop(db);
}

async fn held_records_are_released_by_a_run_without_new_documents_once_the_restriction_ends_on(
    database_url: Option<&str>,
) {
    let Some(fixtures) = common::shared_data().map(|d| d.join("fixtures")) else {
        return;
    };
    let h = synthetic_hetu("030590", 944);
    let Some(w) = small_world(
        database_url,
        &[
            (
                "dx.xml".into(),
                doc_for(&fixtures, "f01-visit-diagnoses.xml", &h, K1, 511),
            ),
            (
                "lab.xml".into(),
                doc_for(&fixtures, "f03-lab-panel.xml", &h, K1, 512),
            ),
        ],
    )
    .await
    else {
        return;
    };
    let now = Utc::now();
    let end = now + chrono::Duration::seconds(4);
    import(
        &w.app,
        &w.dir,
        "r.csv",
        &format!(
            "kind,hetu,controller,start,end,source,reference\r\nrestriction,{h},,{},{},test,RES-T\r\n",
            rfc3339(now - chrono::Duration::days(1)),
            rfc3339(end)
        ),
    )
    .await;
    let first = w.app.once(RESEARCH).await.expect("first run");
    assert!(first.sealed.is_empty(), "everything held: {:?}", first.run);
    let held1 = held_rows(&w.app, RESEARCH).await;
    assert_eq!(held1.len(), 5, "{held1:?}");
    assert!(held1.iter().all(|(_, r, _)| r == "restriction_active"));

    // Still restricted: the rows stay held, and since when is kept.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = w.app.once(RESEARCH).await.expect("second run");
    assert!(second.sealed.is_empty());
    assert_eq!(held_rows(&w.app, RESEARCH).await, held1, "since is kept");

    // The restriction ends: a run with no new document releases the rows.
    while Utc::now() <= end {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let third = w.app.once(RESEARCH).await.expect("third run");
    assert_eq!(third.run.files_new, 0, "no new document");
    assert_eq!(third.sealed, vec![1], "{:?}", third.run);
    let rows = rows_of(&w.dir.join("delivered").join(RESEARCH), &w.app, RESEARCH, 1);
    assert_eq!(rows.len(), 5);
    let p = pseudonym(&w.dir, "findata-permit-2026-017", &h);
    assert!(persons_in(&rows, &w.app, RESEARCH).iter().all(|x| *x == p));
    assert!(held_rows(&w.app, RESEARCH).await.is_empty());
    assert!(w.app.store.held_counts().await.expect("held").is_empty());
}

/// Issue 13.3: "objection after sealing" entries only for feeds the
/// objection binds: none for an objection to a controller that holds none
/// of the person's records, none for the exempt statutory feed; one for the
/// research feed, naming its batch and rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn objection_after_sealing_is_audited_only_for_the_feeds_it_binds() {
    objection_after_sealing_is_audited_only_for_the_feeds_it_binds_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(no_pg, no_shared_data),
    ignore = "needs REGFEED_TEST_DATABASE_URL and ../shared/data"
)]
async fn objection_after_sealing_is_audited_only_for_the_feeds_it_binds_on_postgresql() {
    let Some(db) = common::PgDb::create("policy") else {
        return;
    };
    objection_after_sealing_is_audited_only_for_the_feeds_it_binds_on(Some(&db.url)).await;
    drop(db);
}

async fn objection_after_sealing_is_audited_only_for_the_feeds_it_binds_on(
    database_url: Option<&str>,
) {
    let Some(fixtures) = common::shared_data().map(|d| d.join("fixtures")) else {
        return;
    };
    let h = synthetic_hetu("170766", 952);
    let Some(w) = small_world(
        database_url,
        &[
            (
                "dx.xml".into(),
                doc_for(&fixtures, "f01-visit-diagnoses.xml", &h, K1, 521),
            ),
            (
                "lab.xml".into(),
                doc_for(&fixtures, "f03-lab-panel.xml", &h, K1, 522),
            ),
        ],
    )
    .await
    else {
        return;
    };
    assert_eq!(w.app.once(THL).await.expect("thl").sealed, vec![1]);
    assert_eq!(
        w.app.once(RESEARCH).await.expect("research").sealed,
        vec![1]
    );
    let after = |kinds: Vec<(String, String)>| -> Vec<String> {
        kinds
            .into_iter()
            .filter(|(k, _)| k == "objection_after_sealing")
            .map(|(_, d)| d)
            .collect()
    };
    // To a controller that holds none of their records: binds nobody.
    import(
        &w.app,
        &w.dir,
        "o1.csv",
        &objection_csv(&h, &format!("org-{K2}")),
    )
    .await;
    assert_eq!(after(audit_kinds(&w.app).await), Vec::<String>::new());
    // To the controller of their records: binds the research feed only.
    import(
        &w.app,
        &w.dir,
        "o2.csv",
        &objection_csv(&h, &format!("org-{K1}")),
    )
    .await;
    let entries = after(audit_kinds(&w.app).await);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].starts_with(&format!("{RESEARCH} ")),
        "{entries:?}"
    );
    assert!(entries[0].contains("\"seq\":1"), "{entries:?}");
    assert!(
        entries[0].contains("objection_to_controller"),
        "{entries:?}"
    );
}

/// Issue 13.5: a county's own statistics. The research feed is turned into a
/// statistics feed whose recipient is county K1 itself; the person denied
/// disclosure of K1's and K2's records. K1's records reach K1's own feed (a
/// denial does not restrict use within the same controller); K2's do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn a_denial_of_disclosure_does_not_block_a_feed_to_the_records_own_controller() {
    let Some(fixtures) = common::shared_data().map(|d| d.join("fixtures")) else {
        return;
    };
    let h = synthetic_hetu("250873", 967);
    let Some(w) = small_world(
        None,
        &[
            (
                "dx.xml".into(),
                doc_for(&fixtures, "f01-visit-diagnoses.xml", &h, K1, 531),
            ),
            (
                "lab1.xml".into(),
                doc_for(&fixtures, "f03-lab-panel.xml", &h, K1, 532),
            ),
            (
                "lab2.xml".into(),
                doc_for(&fixtures, "f03-lab-panel.xml", &h, K2, 533),
            ),
        ],
    )
    .await
    else {
        return;
    };
    let config = w.dir.join("regfeed.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let from = "purpose = \"scientific_research\"\n";
    assert!(text.contains(from));
    std::fs::write(
        &config,
        text.replacen(
            from,
            &format!("{from}recipient_controller = \"org-{K1}\"\n"),
            1,
        ),
    )
    .expect("write config");
    let app = open(&config).await;
    import(
        &app,
        &w.dir,
        "d.csv",
        &format!(
            "kind,hetu,provider,all_registers,effective_from,source,reference\r\n\
             denial,{h},1.2.246.10.{K1},true,2026-01-01,test,DEN-T\r\n\
             denial,{h},1.2.246.10.{K2},true,2026-01-01,test,DEN-T\r\n"
        ),
    )
    .await;
    let r = app.once(RESEARCH).await.expect("run");
    assert_eq!(r.sealed, vec![1], "{:?}", r.run);
    assert_eq!(
        r.run.excluded.get("denial_of_disclosure").copied(),
        Some(4),
        "K2's laboratory rows are denied: {:?}",
        r.run
    );
    let rows = rows_of(&w.dir.join("delivered").join(RESEARCH), &app, RESEARCH, 1);
    assert_eq!(rows.len(), 5, "K1's diagnosis and laboratory rows go out");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{RESEARCH}: recipient controller org-{K1}")),
        "validate explains the setting: {stdout}"
    );
}
/// `regfeed audit subject` for a hetu (on standard input), text or JSON.
fn subject_out(config: &Path, database_url: Option<&str>, hetu: &str, json: bool) -> String {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regfeed"));
    cmd.args(["audit", "subject", "--config"]).arg(config);
    if let Some(url) = database_url {
        cmd.env("REGFEED_DATABASE__URL", url);
    }
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{hetu}\n").as_bytes())
        .expect("write hetu");
    let out = child.wait_with_output().expect("subject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!text.contains(hetu), "the hetu is never echoed");
    if json {
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        format!("{}\n", serde_json::to_string_pretty(&v).expect("pretty"))
    } else {
        text
    }
}

/// Times and keyed digests vary from run to run: masked, so goldens are
/// deterministic.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // An RFC 3339 UTC time: 2026-12-07T14:02:03Z, 2026-12-07T14:02:03.123Z.
        if b.len() - i >= 20
            && b[i..i + 4].iter().all(u8::is_ascii_digit)
            && b[i + 4] == b'-'
            && b[i + 10] == b'T'
        {
            let mut j = i + 19;
            if b.get(j) == Some(&b'.') {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            if b.get(j) == Some(&b'Z') {
                out.push_str("<time>");
                i = j + 1;
                continue;
            }
        }
        let hex = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(*c))
            .count();
        if hex == 64 {
            out.push_str("<hex>");
            i += 64;
            continue;
        }
        if hex > 0 {
            out.push_str(&text[i..i + hex]);
            i += hex;
            continue;
        }
        let c = text[i..].chars().next().expect("a char");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Compares `actual` with the golden file `tests/golden/<name>`, showing a
/// line diff; `REGFEED_BLESS=1` rewrites the golden instead.
fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("REGFEED_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("folder")).expect("golden folder");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (REGFEED_BLESS=1 writes it)", path.display()));
    if expected == actual {
        return;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut diff = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => diff.push_str(&format!("  {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    diff.push_str(&format!("- {x}\n"));
                }
                if let Some(y) = y {
                    diff.push_str(&format!("+ {y}\n"));
                }
            }
        }
    }
    panic!(
        "{} differs from the golden (- golden, + actual):\n{diff}",
        path.display()
    );
}

/// Issue 13.4: `audit subject` tells each person's story exactly, for six
/// stories, in text and JSON (goldens under `tests/golden/subject/`):
/// delivered; exempt (objection to the controller, statutory feed);
/// excluded (a denial of disclosure); removed at sealing (an objection
/// between staging and sealing); left out for lack of usable cohort
/// evidence; an objection after sealing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
async fn audit_subject_tells_six_stories_exactly() {
    audit_subject_tells_six_stories_exactly_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(no_pg, no_shared_data),
    ignore = "needs REGFEED_TEST_DATABASE_URL and ../shared/data"
)]
async fn audit_subject_tells_six_stories_exactly_on_postgresql() {
    let Some(db) = common::PgDb::create("policy") else {
        return;
    };
    audit_subject_tells_six_stories_exactly_on(Some(&db.url)).await;
    drop(db);
}

async fn audit_subject_tells_six_stories_exactly_on(database_url: Option<&str>) {
    let Some(fixtures) = common::shared_data().map(|d| d.join("fixtures")) else {
        return;
    };
    let people: Vec<(&str, String, &str)> = vec![
        ("delivered", synthetic_hetu("010170", 901), K1),
        ("exempt", synthetic_hetu("020270", 902), K1),
        ("excluded", synthetic_hetu("030370", 903), K1),
        ("removed-at-sealing", synthetic_hetu("040470", 904), K1),
        ("left-out", synthetic_hetu("050570", 905), K2),
        ("objection-after-sealing", synthetic_hetu("060670", 906), K1),
    ];
    let mut docs = Vec::new();
    for (i, (_, h, lab_county)) in people.iter().enumerate() {
        let no = 600 + 2 * i as u32;
        docs.push((
            format!("dx{i}.xml"),
            doc_for(&fixtures, "f01-visit-diagnoses.xml", h, K1, no),
        ));
        docs.push((
            format!("lab{i}.xml"),
            doc_for(&fixtures, "f03-lab-panel.xml", h, lab_county, no + 1),
        ));
    }
    let Some(w) = small_world(database_url, &docs).await else {
        return;
    };
    let hetu = |story: &str| {
        people
            .iter()
            .find(|(s, _, _)| *s == story)
            .map(|(_, h, _)| h.clone())
            .expect("story")
    };
    let k1 = format!("org-{K1}");
    // Before staging.
    import(
        &w.app,
        &w.dir,
        "before.csv",
        &format!(
            "kind,hetu,made_to,purposes,effective_from,provider,all_registers,source,reference\r\n\
             objection,{},{k1},all,2026-01-01,,,test,OBJ-1\r\n\
             denial,{},,,2026-01-01,1.2.246.10.{K1},true,test,DEN-1\r\n\
             objection,{},{k1},all,2026-01-01,,,test,OBJ-2\r\n",
            hetu("exempt"),
            hetu("excluded"),
            hetu("left-out"),
        ),
    )
    .await;
    assert_eq!(stage_only(&w.app, THL).await.staged, vec![1]);
    assert_eq!(stage_only(&w.app, RESEARCH).await.staged, vec![1]);
    // Between staging and sealing.
    import(
        &w.app,
        &w.dir,
        "between.csv",
        &objection_csv(&hetu("removed-at-sealing"), &k1),
    )
    .await;
    for f in [THL, RESEARCH] {
        let fc = w.app.cfg.feed(f).expect("feed");
        assert_eq!(
            w.app.deliver_feed(fc).await.expect("deliver").delivered,
            vec![1]
        );
    }
    // After sealing.
    import(
        &w.app,
        &w.dir,
        "after.csv",
        &objection_csv(&hetu("objection-after-sealing"), &k1),
    )
    .await;

    // The manifests count what went out under an exemption, also for the
    // objection that arrived between staging and sealing.
    let thl = manifest_of(&w.dir, THL, 1);
    assert_eq!(
        thl["counts"]["exempt"].as_u64(),
        Some(1 + 5 + 5),
        "exempt: the left-out person's diagnosis, and every row of the \
         exempt and removed-at-sealing people: {thl}"
    );

    let config = w.dir.join("regfeed.toml");
    for (story, h, _) in &people {
        assert_golden(
            &format!("subject/{story}.txt"),
            &masked(&subject_out(&config, database_url, h, false)),
        );
        assert_golden(
            &format!("subject/{story}.json"),
            &masked(&subject_out(&config, database_url, h, true)),
        );
    }
}
