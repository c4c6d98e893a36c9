//! The `sql` source (docs/SQL-SOURCE.md): config validation; a generated
//! corpus read from a PostgreSQL table through `once` gives exactly what the
//! same corpus gives from a folder (first run, an idle second run, follow-ups
//! with a late cohort entry re-read through the locator); rows that share a
//! timestamp or commit out of order while runs read are read exactly once,
//! through the source API and through `once`; the locator.
//!
//! Needs `REGFEED_TEST_DATABASE_URL` (e.g. postgres://postgres@127.0.0.1/test):
//! without it each database test skips with a notice, and fails under CI.
//! Each test makes its own schema and drops it afterwards.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use regfeed::app::App;
use regfeed::config::{SourceConfig, SourceKind, SqlSourceConfig};
use regfeed::feed;
use regfeed::loaded::Config;
use regfeed::source::Source;
use sqlx::postgres::{PgPool, PgPoolOptions};

const FEED: &str = "thl-diabetes";

// ------------------------------------------------------------------ helpers

macro_rules! database_or_skip {
    () => {
        match common::pg_server() {
            Some(u) => u,
            None => return,
        }
    };
}

/// A schema of its own for one test, dropped (with its tables) on drop,
/// even when the test fails.
struct TestSchema {
    url: String,
    name: String,
    pool: PgPool,
}

impl TestSchema {
    async fn create(url: &str, tag: &str) -> TestSchema {
        let name = format!(
            "regfeed_t_{tag}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .expect("connect to REGFEED_TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&pool)
            .await
            .expect("create schema");
        TestSchema {
            url: url.to_owned(),
            name,
            pool,
        }
    }

    /// The archive table as docs/SQL-SOURCE.md describes it, with `id` of
    /// type `id_type`.
    async fn archive_table(&self, id_type: &'static str) -> Table {
        let t = format!("{}.archived_documents", self.name);
        sqlx::query(&format!(
            "CREATE TABLE {t} (
                id          {id_type} PRIMARY KEY,
                archived_at timestamptz NOT NULL DEFAULT now(),
                set_id      text NOT NULL,
                version     integer NOT NULL,
                controller  text,
                document    bytea NOT NULL
            )"
        ))
        .execute(&self.pool)
        .await
        .expect("create table");
        sqlx::query(&format!("CREATE INDEX ON {t} (archived_at, id)"))
            .execute(&self.pool)
            .await
            .expect("create index");
        Table { name: t, id_type }
    }
}

/// An archive table: its qualified name and the type of its `id`.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    id_type: &'static str,
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A runtime of its own: Drop cannot await, and the test's runtime
        // may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A row to archive.
#[derive(Debug, Clone)]
struct ArchiveRow {
    id: String,
    archived_at: DateTime<Utc>,
    document: Vec<u8>,
}

/// Inserts rows in one statement.
async fn insert<'e, E>(exec: E, table: &Table, rows: &[ArchiveRow])
where
    E: sqlx::PgExecutor<'e>,
{
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|r| r.archived_at).collect();
    let docs: Vec<&[u8]> = rows.iter().map(|r| r.document.as_slice()).collect();
    sqlx::query(&format!(
        "INSERT INTO {} (id, archived_at, set_id, version, controller, document)
         SELECT CAST(i AS {}), a, 'set', 1, NULL, d
         FROM unnest($1::text[], $2::timestamptz[], $3::bytea[]) AS u(i, a, d)",
        table.name, table.id_type
    ))
    .bind(&ids)
    .bind(&ats)
    .bind(&docs)
    .execute(exec)
    .await
    .expect("insert rows");
}

/// Archives the files under `docs` not archived yet (ids from their paths),
/// four per timestamp from `at0` on (ties). Returns how many.
async fn archive_new_files(
    db: &TestSchema,
    table: &Table,
    docs: &Path,
    loaded: &mut BTreeSet<String>,
    at0: DateTime<Utc>,
) -> usize {
    let mut rows = Vec::new();
    for (rel, p) in files_under(docs) {
        if loaded.insert(rel.clone()) {
            rows.push(ArchiveRow {
                id: rel.replace('/', "-"),
                archived_at: at0 + TimeDelta::milliseconds((rows.len() / 4) as i64),
                document: std::fs::read(p).expect("read"),
            });
        }
    }
    for chunk in rows.chunks(500) {
        insert(&db.pool, table, chunk).await;
    }
    rows.len()
}

/// Every file under `dir`, by path relative to it.
fn files_under(dir: &Path) -> BTreeMap<String, PathBuf> {
    common::files_under(dir)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(dir)
                .expect("under")
                .to_string_lossy()
                .into_owned();
            (rel, p)
        })
        .collect()
}

/// A millisecond-aligned instant (timestamptz keeps microseconds).
fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now")
        - TimeDelta::hours(1)
}

/// Config text for `corpus` with the demo's folder source replaced by a
/// `sql` source on `table`.
fn sql_config_text(corpus: &Path, url: &str, table: &str, page_size: u32) -> String {
    let text = regfeed::demo::config_text(corpus);
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "kind = \"archive_dir\"" {
            let _ = lines.next(); // its path
            out.push_str(&format!(
                "kind = \"sql\"\nurl = \"{url}\"\ntable = \"{table}\"\nlookback = \"10m\"\npage_size = {page_size}\n"
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("kind = \"sql\""),
        "the demo config changed shape"
    );
    out
}

/// The demo setup in `dir` for `corpus`, with the keys of `keys_from` (so
/// two setups pseudonymise alike) and, given a table, a `sql` source.
async fn open_setup(
    dir: &Path,
    corpus: &Path,
    keys_from: Option<&Path>,
    sql: Option<(&str, &str, u32)>,
) -> (regfeed::demo::Setup, App) {
    if let Some(from) = keys_from {
        std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
        for (rel, p) in files_under(&from.join("keys")) {
            std::fs::copy(p, dir.join("keys").join(rel)).expect("copy key");
        }
    }
    let setup = regfeed::demo::write_setup(dir, corpus).expect("setup");
    if let Some((url, table, page_size)) = sql {
        std::fs::write(
            &setup.config,
            sql_config_text(corpus, url, table, page_size),
        )
        .expect("config");
    }
    let cfg = Config::load(&setup.config).expect("config validates");
    let app = App::open(cfg).await.expect("app");
    (setup, app)
}

/// Rows of the data files a run delivered, sorted (two sources list in
/// different orders, so batches differ in row order only).
fn delivered_rows(app: &App, report: &regfeed::app::OnceReport) -> Vec<String> {
    let columns = app.cfg.feed(FEED).expect("feed").mapping.feed_columns();
    let mut rows = Vec::new();
    for p in &report.delivered {
        let f = std::io::BufReader::new(std::fs::File::open(p).expect("batch file"));
        for r in feed::csv::read(f, &columns).expect("csv reads back") {
            rows.push(format!("{} {:?} {:?}", r.record_id, r.op, r.values));
        }
    }
    rows.sort();
    rows
}

fn sql_source(name: &str, url: &str, table: &str, page_size: u32, lookback: Duration) -> Source {
    let (schema, name_part) = table.split_once('.').expect("schema.table");
    Source::build(&SourceConfig {
        name: name.to_owned(),
        kind: SourceKind::Sql(SqlSourceConfig {
            url: url.to_owned(),
            password: None,
            table: (Some(schema.to_owned()), name_part.to_owned()),
            lookback,
            page_size,
        }),
    })
    .expect("source builds")
}

/// What the pipeline does with a listing, over a map instead of the store:
/// the high-water mark is the latest `archived_at` seen; a listed row the
/// map holds with the same size and time is not new. Returns the new ids
/// and how many of them arrived below the mark (late).
async fn read_new(source: &Source, seen: &mut HashMap<String, (u64, i64)>) -> (Vec<String>, usize) {
    let mark = seen.values().map(|(_, t)| *t).max();
    let mut listing = source.list(mark).await.expect("list");
    let (mut new, mut late) = (Vec::new(), 0);
    while let Some(page) = listing.next_group().await {
        for l in page.expect("page") {
            if seen.get(&l.path) == Some(&(l.size, l.mtime_ns)) {
                continue;
            }
            if mark.is_some_and(|m| l.mtime_ns < m) {
                late += 1;
            }
            seen.insert(l.path.clone(), (l.size, l.mtime_ns));
            new.push(l.path);
        }
    }
    (new, late)
}

// -------------------------------------------------------------------- tests

fn config_problems(sources: &str) -> String {
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\n\n[keys]\nindex = \"k/index.key\"\naudit = \"k/audit.key\"\n\n{sources}"
    );
    match Config::from_str_at(&text, Path::new("/etc/regfeed/regfeed.toml"), &[]) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_validates_sql_sources_and_never_echoes_a_password() {
    let ok = "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://regfeed@db/kanta?sslmode=require\"\ntable = \"kanta.archived_documents\"\npassword = \"credential:db-password\"\nlookback = \"15m\"\npage_size = 500\n";
    assert_eq!(config_problems(ok), "");
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\n\n[keys]\nindex = \"k/index.key\"\naudit = \"k/audit.key\"\n\n{ok}"
    );
    let cfg =
        Config::from_str_at(&text, Path::new("/etc/regfeed/regfeed.toml"), &[]).expect("valid");
    let SourceKind::Sql(sql) = &cfg.sources[0].kind else {
        panic!("not a sql source");
    };
    assert_eq!(
        sql.table,
        (Some("kanta".into()), "archived_documents".into())
    );
    assert_eq!(sql.lookback, Duration::from_secs(900));
    assert_eq!(sql.page_size, 500);

    for (source, line_field, needle) in [
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u:hunter2@db/kanta\"\ntable = \"t\"\n",
            "regfeed.toml:11: sources.url",
            "must not contain a password",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/kanta?sslmode=require&password=hunter2\"\ntable = \"t\"\n",
            "regfeed.toml:11: sources.url",
            "must not contain a password",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"mysql://u@db/kanta\"\ntable = \"t\"\n",
            "regfeed.toml:11: sources.url",
            "postgres://",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/k\"\ntable = \"t; DROP TABLE x\"\n",
            "regfeed.toml:12: sources.table",
            "lowercase SQL identifier",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/k\"\ntable = \"a.b.c\"\n",
            "regfeed.toml:12: sources.table",
            "schema-qualified",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/k\"\ntable = \"t\"\nlookback = \"0s\"\n",
            "regfeed.toml:13: sources.lookback",
            "more than zero",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/k\"\ntable = \"t\"\npage_size = 0\n",
            "regfeed.toml:13: sources.page_size",
            "between 1 and",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\ntable = \"t\"\n",
            "regfeed.toml:10: sources.url",
            "needs a url",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"sql\"\nurl = \"postgres://u@db/k\"\ntable = \"t\"\npath = \"/srv\"\n",
            "regfeed.toml:13: sources.path",
            "has no path",
        ),
        (
            "[[sources]]\nname = \"p\"\nkind = \"archive_dir\"\npath = \"/srv\"\ntable = \"t\"\n",
            "regfeed.toml:12: sources.table",
            "only a sql source",
        ),
    ] {
        let problems = config_problems(source);
        assert!(
            problems.contains(line_field) && problems.contains(needle),
            "{source}\n→ {problems}"
        );
        assert!(
            !problems.contains("hunter2"),
            "a password was echoed: {problems}"
        );
    }
}

/// (a) A generated corpus from a table equals the same corpus from a folder,
/// run by run: the first run, an idle second run (nothing new read), and the
/// follow-ups (replacement, withdrawal, invalidation, correction, a late
/// cohort entry whose earlier documents are re-read through the locator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn generated_corpus_from_a_table_equals_the_same_corpus_from_a_folder() {
    let url = database_or_skip!();
    let db = TestSchema::create(&url, "equal").await;
    let table = db.archive_table("text").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let seed = 20260707;
    let plan = regfeed::synth::plan(300, seed);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");

    // Rows in groups of four per timestamp (ties), ids from file names.
    let at0 = base_time();
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    let docs = corpus.join("docs");
    let n = archive_new_files(&db, &table, &docs, &mut loaded, at0).await;
    assert!(n > 1000, "a meaningful corpus: {n} documents");

    let (_, folder) = open_setup(&tmp.path().join("folder"), &corpus, None, None).await;
    let (_, sql) = open_setup(
        &tmp.path().join("sql"),
        &corpus,
        Some(&tmp.path().join("folder")),
        Some((&url, &table.name, 97)),
    )
    .await;

    let f1 = folder.once(FEED).await.expect("folder: first run");
    let s1 = sql.once(FEED).await.expect("sql: first run");
    assert_eq!(s1.run.files_listed, n as u64);
    assert_eq!(s1.run.files_new, n as u64);
    assert_eq!(s1.run.documents_decoded, f1.run.documents_decoded);
    assert_eq!(s1.run.documents_quarantined, f1.run.documents_quarantined);
    assert_eq!(s1.run.cohort_entered, f1.run.cohort_entered);
    let rows = delivered_rows(&sql, &s1);
    assert!(rows.len() > 300, "{} rows", rows.len());
    assert_eq!(rows, delivered_rows(&folder, &f1));

    // Nothing new: the window is listed again, nothing is read.
    let s2 = sql.once(FEED).await.expect("sql: second run");
    assert_eq!(s2.run.files_new, 0, "{:?}", s2.run);
    assert_eq!(s2.run.documents_decoded, 0);
    assert!(s2.run.staged.is_empty() && s2.sealed.is_empty(), "{s2:?}");

    // Follow-ups, archived later.
    regfeed::synth::write_followups(&plan, &corpus, seed).expect("follow-ups");
    let m = archive_new_files(&db, &table, &docs, &mut loaded, at0 + TimeDelta::seconds(5)).await;
    assert!(m > 0);
    let f3 = folder.once(FEED).await.expect("folder: third run");
    let s3 = sql.once(FEED).await.expect("sql: third run");
    assert_eq!(s3.run.files_new, m as u64);
    assert!(
        s3.run.cohort_entered > 0,
        "a late cohort entry: {:?}",
        s3.run
    );
    assert_eq!(s3.run.cohort_entered, f3.run.cohort_entered);
    let rows3 = delivered_rows(&sql, &s3);
    assert!(!rows3.is_empty());
    assert_eq!(rows3, delivered_rows(&folder, &f3));
}

/// The writer of (b): per round, a transaction that takes the earliest
/// timestamp (and the lower ids) stays open while rows with the same and later
/// timestamps commit, latest first; it commits only after a reader run has
/// passed its timestamp. Returns every id written.
async fn out_of_order_writer(
    pool: PgPool,
    table: Table,
    rounds: usize,
    documents: Arc<Vec<Vec<u8>>>,
    reader_runs: tokio::sync::watch::Receiver<u64>,
) -> Vec<String> {
    let mut next_id = 0usize;
    let mut all = Vec::new();
    let mut take = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|_| {
                next_id += 1;
                (
                    next_id.to_string(),
                    documents[(next_id - 1) % documents.len()].clone(),
                )
            })
            .collect()
    };
    let at0 = base_time();
    for round in 0..rounds {
        let t = at0 + TimeDelta::seconds(round as i64);
        let early = take(3);
        let tied = take(4);
        let later = take(3);
        let mut held = pool.begin().await.expect("begin");
        let rows = |ids: &[(String, Vec<u8>)], at: DateTime<Utc>| -> Vec<ArchiveRow> {
            ids.iter()
                .map(|(id, d)| ArchiveRow {
                    id: id.clone(),
                    archived_at: at,
                    document: d.clone(),
                })
                .collect()
        };
        insert(&mut *held, &table, &rows(&early, t)).await;
        // Later rows commit first, one transaction each, latest first.
        for (i, r) in rows(&later, t + TimeDelta::milliseconds(1))
            .into_iter()
            .enumerate()
            .rev()
        {
            let r = ArchiveRow {
                archived_at: r.archived_at + TimeDelta::microseconds(i as i64),
                ..r
            };
            insert(&pool, &table, &[r]).await;
        }
        // Rows tied with the open transaction's timestamp, but higher ids.
        for r in rows(&tied, t) {
            insert(&pool, &table, &[r]).await;
        }
        // Let a reader run pass the open transaction's rows.
        let mut runs = reader_runs.clone();
        let seen_runs = *runs.borrow_and_update();
        while *runs.borrow_and_update() < seen_runs + 2 {
            if runs.changed().await.is_err() {
                break;
            }
        }
        held.commit().await.expect("commit");
        for (id, _) in early.into_iter().chain(tied).chain(later) {
            all.push(id);
        }
    }
    all
}

/// (b) Rows with equal timestamps, committed out of order while the source
/// reads repeatedly, are each read exactly once (source API, page size 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn rows_tied_or_committed_out_of_order_are_read_exactly_once() {
    let url = database_or_skip!();
    let db = TestSchema::create(&url, "order").await;
    let table = db.archive_table("bigint").await;
    let source = sql_source("platform", &url, &table.name, 3, Duration::from_secs(600));
    let documents: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..17)
            .map(|i| format!("<doc n=\"{i}\">{}</doc>", "x".repeat(i)).into_bytes())
            .collect(),
    );
    let (runs_tx, runs_rx) = tokio::sync::watch::channel(0u64);
    let writer = tokio::spawn(out_of_order_writer(
        db.pool.clone(),
        table.clone(),
        12,
        documents,
        runs_rx,
    ));

    let mut seen = HashMap::new();
    let mut read: BTreeMap<String, u32> = BTreeMap::new();
    let (mut runs, mut late) = (0u64, 0usize);
    loop {
        let finished = writer.is_finished();
        let (new, l) = read_new(&source, &mut seen).await;
        late += l;
        for id in new {
            *read.entry(id).or_default() += 1;
        }
        runs += 1;
        runs_tx.send_replace(runs);
        if finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let written = writer.await.expect("writer");
    assert_eq!(written.len(), 120);
    let twice: Vec<_> = read.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    let written: BTreeSet<String> = written.into_iter().collect();
    let got: BTreeSet<String> = read.into_keys().collect();
    let missed: Vec<_> = written.difference(&got).collect();
    assert!(missed.is_empty(), "skipped: {missed:?}");
    assert_eq!(got, written);
    // The scenario happened: rows arrived below the mark of an earlier run.
    assert!(late >= 12 * 3, "late rows read: {late}");
    // And one more run reads nothing.
    assert!(read_new(&source, &mut seen).await.0.is_empty());
}

/// (b) Through `once`: generated documents written by the same out-of-order
/// writer while `once` runs repeatedly are each decoded exactly once, and
/// the store has seen every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn documents_committed_out_of_order_go_through_once_exactly_once() {
    let url = database_or_skip!();
    let db = TestSchema::create(&url, "once").await;
    let table = db.archive_table("bigint").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(40, 7);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let documents: Vec<Vec<u8>> = files_under(&corpus.join("docs"))
        .values()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let rounds = documents.len() / 10;
    assert!(rounds >= 5, "{} documents", documents.len());
    let (_, app) = open_setup(
        &tmp.path().join("sql"),
        &corpus,
        None,
        Some((&url, &table.name, 4)),
    )
    .await;

    let (runs_tx, runs_rx) = tokio::sync::watch::channel(0u64);
    let writer = tokio::spawn(out_of_order_writer(
        db.pool.clone(),
        table.clone(),
        rounds,
        Arc::new(documents),
        runs_rx,
    ));
    let (mut runs, mut new, mut decoded, mut other) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let finished = writer.is_finished();
        let r = app.once(FEED).await.expect("once");
        new += r.run.files_new;
        decoded += r.run.documents_decoded;
        other += r.run.documents_quarantined + r.run.documents_duplicate + r.run.files_unreadable;
        runs += 1;
        runs_tx.send_replace(runs);
        if finished {
            break;
        }
    }
    let written = writer.await.expect("writer").len() as u64;
    assert_eq!(written, rounds as u64 * 10);
    assert_eq!(new, written, "rows read over {runs} runs");
    assert_eq!(decoded, written);
    assert_eq!(other, 0);
    let seen = app.store.seen("kanta-archive").await.expect("seen");
    assert_eq!(seen.len() as u64, written);
}

/// (c) The locator re-reads a row by id; a missing or malformed id is an
/// error, not a panic. A table the source cannot trust is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn the_locator_rereads_rows_and_a_table_without_a_unique_id_is_refused() {
    let url = database_or_skip!();
    let db = TestSchema::create(&url, "locate").await;
    let table = db.archive_table("bigint").await;
    let at = base_time();
    let rows: Vec<ArchiveRow> = (1..=5)
        .map(|i| ArchiveRow {
            id: i.to_string(),
            archived_at: at,
            document: format!("<d>{i}</d>").into_bytes(),
        })
        .collect();
    insert(&db.pool, &table, &rows).await;
    let source = sql_source("platform", &url, &table.name, 2, Duration::from_secs(600));
    for r in &rows {
        assert_eq!(source.locate(&r.id).await.expect("locate"), r.document);
    }
    let missing = source.locate("42").await.expect_err("no such row");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    assert!(source.locate("not-a-number").await.is_err());
    let many = source
        .read_many(&["3", "99", "1"], 1 << 20)
        .await
        .expect("one query");
    let bytes = |r: &std::io::Result<regfeed::source::Located>| match r {
        Ok(regfeed::source::Located::Bytes(b)) => Some(b.clone()),
        _ => None,
    };
    assert_eq!(bytes(&many[0]).as_deref(), Some(&b"<d>3</d>"[..]));
    assert!(many[1].is_err());
    assert_eq!(bytes(&many[2]).as_deref(), Some(&b"<d>1</d>"[..]));
    // A row over the limit is not held: only its digest comes back.
    let small = source.read_many(&["3"], 4).await.expect("one query");
    assert!(matches!(
        &small[0],
        Ok(regfeed::source::Located::TooLarge { sha256 }) if sha256 == &regfeed::feed::sha256_hex(b"<d>3</d>")
    ));

    // Text ids too.
    let text_table = format!("{}.by_text", db.name);
    sqlx::query(&format!(
        "CREATE TABLE {text_table} (id text PRIMARY KEY, archived_at timestamptz NOT NULL, document bytea NOT NULL)"
    ))
    .execute(&db.pool)
    .await
    .expect("table");
    sqlx::query(&format!(
        "INSERT INTO {text_table} VALUES ('a/b.xml', now(), 'x'), ('a''c', now(), 'y')"
    ))
    .execute(&db.pool)
    .await
    .expect("insert");
    let by_text = sql_source("platform", &url, &text_table, 2, Duration::from_secs(600));
    assert_eq!(by_text.locate("a'c").await.expect("locate"), b"y");
    assert_eq!(by_text.locate("a/b.xml").await.expect("locate"), b"x");

    // No unique id: the cursor's tie-breaker would not hold.
    let loose = format!("{}.loose", db.name);
    sqlx::query(&format!(
        "CREATE TABLE {loose} (id bigint NOT NULL, archived_at timestamptz NOT NULL, document bytea NOT NULL)"
    ))
    .execute(&db.pool)
    .await
    .expect("table");
    let src = sql_source("platform", &url, &loose, 2, Duration::from_secs(600));
    let e = src.list(None).await.expect_err("refused");
    assert!(e.to_string().contains("id must be unique"), "{e}");
    let absent = sql_source(
        "platform",
        &url,
        &format!("{}.absent", db.name),
        2,
        Duration::from_secs(600),
    );
    let e = absent.list(None).await.expect_err("refused");
    assert!(e.to_string().contains("does not exist"), "{e}");
}
