//! Documents per second of the `sql` source (docs/SQL-SOURCE.md) over a
//! table of generated documents:
//!
//! ```sh
//! REGFEED_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --bench sql_source
//! ```
//!
//! Loads `REGFEED_BENCH_SQL_DOCS` documents (default 200,000) of a generated
//! corpus into a table of a schema of its own (archived one per 400 ms, so a
//! day's worth), then measures:
//! 1. read-only: one listing from scratch and a fetch of every page, as a
//!    first run reads (no decoding);
//! 2. an idle listing: the look-back window (10 min) listed again, as every
//!    later run does;
//! 3. through `once` (decode, map, stage, seal, deliver on SQLite and a file
//!    drop), unless `REGFEED_BENCH_SQL_ONCE=0`.
//!
//! Prints documents/s, MB/s and peak RSS; drops its schema at the end.
//! Without the database URL it prints a notice and does nothing.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use regfeed::config::{SourceConfig, SourceKind, SqlSourceConfig};
use regfeed::source::Source;
use regfeed::synth;
use sqlx::postgres::PgPoolOptions;

const MB: f64 = 1_000_000.0;

fn main() {
    let Some(url) = std::env::var("REGFEED_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("NOTICE: REGFEED_TEST_DATABASE_URL is unset; the sql source bench does nothing");
        return;
    };
    let docs: usize = std::env::var("REGFEED_BENCH_SQL_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let through_once = std::env::var("REGFEED_BENCH_SQL_ONCE").as_deref() != Ok("0");
    regfeed::deliver::http::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(url, docs, through_once));
}

fn rss() -> String {
    regfeed::telemetry::peak_rss_bytes()
        .map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

fn report(what: &str, n: u64, bytes: u64, took: Duration) {
    let s = took.as_secs_f64();
    println!(
        "{what:<44} {n:>8} docs {:>8.1} MB {:>7.2} s {:>9.0} docs/s {:>7.1} MB/s  peak RSS {}",
        bytes as f64 / MB,
        s,
        n as f64 / s,
        bytes as f64 / MB / s,
        rss()
    );
}

async fn run(url: String, docs: usize, through_once: bool) {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("connect");
    let schema = format!("regfeed_bench_{}", std::process::id());
    let table = format!("{schema}.archived_documents");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .expect("schema");
    sqlx::query(&format!(
        "CREATE TABLE {table} (
            id bigint PRIMARY KEY, archived_at timestamptz NOT NULL,
            set_id text NOT NULL, version integer NOT NULL, controller text,
            document bytea NOT NULL)"
    ))
    .execute(&pool)
    .await
    .expect("table");

    // Load: the generated corpus rendered in memory, 1,000 rows a statement.
    let started = Instant::now();
    // About 5.6 documents per generated patient.
    let patients = u32::try_from(docs / 4 + 100).unwrap_or(u32::MAX);
    let plan = synth::plan(patients, 1);
    let at0: DateTime<Utc> = Utc::now() - TimeDelta::days(1);
    let (mut cda, mut msg) = (String::new(), String::new());
    let mut rows = Rows::default();
    let (mut loaded, mut loaded_bytes) = (0usize, 0u64);
    let insert = format!(
        "INSERT INTO {table} (id, archived_at, set_id, version, document)
         SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::int4[], $5::bytea[])"
    );
    for (person, doc) in plan.documents().filter(|(_, d)| d.batch == 0).take(docs) {
        synth::cda::render(person, doc, &mut cda);
        let bytes = if doc.packaging == synth::plan::Packaging::Bare {
            cda.as_bytes().to_vec()
        } else {
            synth::archive::wrap(doc, &cda, &mut msg);
            msg.as_bytes().to_vec()
        };
        loaded += 1;
        loaded_bytes += bytes.len() as u64;
        rows.ids.push(loaded as i64);
        rows.ats
            .push(at0 + TimeDelta::milliseconds(loaded as i64 * 400));
        rows.sets.push(doc.set_id.clone());
        rows.versions.push(doc.version as i32);
        rows.bodies.push(bytes);
        if rows.ids.len() == 1000 {
            rows.flush(&pool, &insert).await;
        }
    }
    rows.flush(&pool, &insert).await;
    sqlx::query(&format!("CREATE INDEX ON {table} (archived_at, id)"))
        .execute(&pool)
        .await
        .expect("index");
    sqlx::query(&format!("VACUUM ANALYZE {table}"))
        .execute(&pool)
        .await
        .expect("analyze");
    report(
        "load (render + insert, not the source)",
        loaded as u64,
        loaded_bytes,
        started.elapsed(),
    );
    if loaded < docs {
        println!("NOTE: the plan had only {loaded} documents");
    }

    let source = Source::build(&SourceConfig {
        name: "platform".into(),
        kind: SourceKind::Sql(SqlSourceConfig {
            url: url.clone(),
            password: None,
            table: (Some(schema.clone()), "archived_documents".into()),
            lookback: Duration::from_secs(600),
            page_size: 1000,
        }),
    })
    .expect("source");

    // 1. Read-only, as a first run: list every page and fetch its documents.
    let started = Instant::now();
    let mut listing = source.list(None).await.expect("list");
    let (mut n, mut bytes, mut mark) = (0u64, 0u64, 0i64);
    while let Some(page) = listing.next_group().await {
        let page = page.expect("page");
        let ids: Vec<&str> = page.iter().map(|l| l.path.as_str()).collect();
        for d in source.read_many(&ids, usize::MAX).await.expect("fetch") {
            bytes += match d.expect("row") {
                regfeed::source::Located::Bytes(b) => b.len() as u64,
                regfeed::source::Located::TooLarge { .. } => 0,
            };
            n += 1;
        }
        mark = mark.max(page.iter().map(|l| l.mtime_ns).max().unwrap_or(0));
    }
    report(
        "read-only: list + fetch, page 1000",
        n,
        bytes,
        started.elapsed(),
    );
    assert_eq!(n, loaded as u64);

    // 2. An idle run's listing: the look-back window below the mark.
    let started = Instant::now();
    let mut listing = source.list(Some(mark)).await.expect("list");
    let mut listed = 0u64;
    while let Some(page) = listing.next_group().await {
        listed += page.expect("page").len() as u64;
    }
    println!(
        "idle listing of the 10 min look-back window: {listed} rows in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // 3. Through `once`.
    if through_once {
        let tmp = tempfile::tempdir().expect("tmp");
        let corpus = tmp.path().join("unused-corpus");
        std::fs::create_dir_all(&corpus).expect("corpus dir");
        let setup = regfeed::demo::write_setup(&tmp.path().join("setup"), &corpus).expect("setup");
        let text = regfeed::demo::config_text(&corpus);
        let mut out = String::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line == "kind = \"archive_dir\"" {
                let _ = lines.next();
                out.push_str(&format!(
                    "kind = \"sql\"\nurl = \"{url}\"\ntable = \"{table}\"\n"
                ));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        std::fs::write(&setup.config, out).expect("config");
        let cfg = regfeed::loaded::Config::load(&setup.config).expect("config");
        let app = regfeed::app::App::open(cfg).await.expect("app");
        let started = Instant::now();
        let r = app.once("thl-diabetes").await.expect("once");
        let took = started.elapsed();
        report(
            "once --feed thl-diabetes (sql source)",
            r.run.documents_decoded,
            r.run.bytes_decoded,
            took,
        );
        println!(
            "  read+decode {:.1} s, store {:.1} s, {} quarantined, {} upserts, {} batches",
            r.run.decode_ns as f64 / 1e9,
            r.run.store_ns as f64 / 1e9,
            r.run.documents_quarantined,
            r.run.upserts,
            r.sealed.len()
        );
    }

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
}

/// Rows waiting to be inserted, column by column (one `UNNEST` insert).
#[derive(Default)]
struct Rows {
    ids: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    sets: Vec<String>,
    versions: Vec<i32>,
    bodies: Vec<Vec<u8>>,
}

impl Rows {
    async fn flush(&mut self, pool: &sqlx::PgPool, sql: &str) {
        if self.ids.is_empty() {
            return;
        }
        sqlx::query(sql)
            .bind(&self.ids)
            .bind(&self.ats)
            .bind(&self.sets)
            .bind(&self.versions)
            .bind(&self.bodies)
            .execute(pool)
            .await
            .expect("insert");
        *self = Rows::default();
    }
}
