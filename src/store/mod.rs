//! The store: SQLite (a file in the state directory, WAL) or PostgreSQL,
//! with its own migrations. It keeps what regfeed has seen, the header facts
//! and locators of every document version, per-feed cohort state and row
//! index, held records, runs, and the outbox of staged and sealed batches.
//!
//! Statements run through sqlx (its `Any` driver), except on SQLite a run's
//! staging transaction ([`Store::begin_run`]) and its bulk reads, which run
//! on connections of the store's own ([`exec`]): one SQL text for both
//! backends, each transaction method written once against [`Tx`].
//!
//! People appear only as index pseudonyms. Writes go in multi-row statements
//! (never one row per statement in a hot loop). This module knows SQL and
//! nothing of documents' clinical meaning.

mod policy;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Executor as _, Row};

mod aggregate;
pub mod exec;
mod lease;
pub mod locator;
mod outbox;
mod quarantine;
mod sql;
pub use aggregate::{AggregateInput, PublishedCell};
use exec::ToVal as _;
pub use lease::{Lease, LeaseError, RunSummary, fenced, for_fire};
pub use outbox::{Attempt, AttemptEnd, OutboxCounts, OutboxEntry, OutboxSummary, RunTimes};
pub use policy::{DenialRow, DenialSnapshot, FlagRow, ObjectionRow, PolicyRows, RestrictionRow};
pub use quarantine::QuarantineRow;
pub use sql::QueryBuilder;
use sql::{list_chunks, statement_chunks};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the lease of feed {0} was lost before this transaction committed (fenced): it rolled back"
    )]
    Fenced(String),
    #[error(
        "the lease of feed {0} was lost during the run (fenced): the run is recorded as fenced, not as its fire's run"
    )]
    RunFenced(String),
    #[error("store: {0}")]
    Other(String),
    #[error(transparent)]
    Foreign(#[from] crate::ownership::ForeignOwner),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The two store backends, chosen by the scheme of `database.url`. Queries
/// are written once, in the SQL both understand (`$n` placeholders,
/// `ON CONFLICT`, `RETURNING`); the few statements that differ (how a
/// writer takes the store's write lock) ask [`Store::backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file on this machine (the embedded default): one node.
    Sqlite,
    /// A PostgreSQL database: several replicas may share it.
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    /// The expiry a lease must be past for its holder to renew it or commit
    /// under it (Unix ms). SQLite: none (any). A long staging transaction
    /// holds SQLite's write lock, so a renewal may wait past the expiry,
    /// but no one can take the lease meanwhile: the token alone tells. On
    /// PostgreSQL nothing blocks a renewal, so a lease past its expiry means
    /// its holder was paused or cut off: it is lost.
    fn lease_still_running_after(self, now: chrono::DateTime<chrono::Utc>) -> i64 {
        match self {
            Backend::Sqlite => i64::MIN,
            Backend::Postgres => now.timestamp_millis(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The advisory lock a PostgreSQL writer takes for the length of its
/// transaction: what `BEGIN IMMEDIATE` is to SQLite. Writers of the document
/// table and the cursors must commit in the order they took it (a feed's
/// cursor is a document key), so they take it one at a time; readers never
/// wait for it. (`0x7265_6766` is "regf".)
const PG_WRITE_LOCK: i64 = 0x7265_6766;

/// The SQLite migrations, in order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "outbox",
        include_str!("migrations/sqlite/0002_outbox.sql"),
    ),
    (
        3,
        "schedule",
        include_str!("migrations/sqlite/0003_schedule.sql"),
    ),
    (
        4,
        "policy",
        include_str!("migrations/sqlite/0004_policy.sql"),
    ),
    (5, "audit", include_str!("migrations/sqlite/0005_audit.sql")),
    (
        6,
        "replicas",
        include_str!("migrations/sqlite/0006_replicas.sql"),
    ),
    (
        7,
        "seen high water",
        include_str!("migrations/sqlite/0007_seen_high_water.sql"),
    ),
    (
        8,
        "held by reason",
        include_str!("migrations/sqlite/0008_held_by_reason.sql"),
    ),
    (
        9,
        "store probe",
        include_str!("migrations/sqlite/0009_store_probe.sql"),
    ),
    (
        10,
        "sealed locators",
        include_str!("migrations/sqlite/0010_sealed_locators.sql"),
    ),
    (
        11,
        "aggregates",
        include_str!("migrations/sqlite/0011_aggregates.sql"),
    ),
];

/// The PostgreSQL migrations: the SQLite schema up to 0005 in one step, then
/// the same steps as SQLite's.
const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "replicas",
        include_str!("migrations/postgres/0002_replicas.sql"),
    ),
    (
        3,
        "seen high water",
        include_str!("migrations/postgres/0003_seen_high_water.sql"),
    ),
    (
        4,
        "held by reason",
        include_str!("migrations/postgres/0004_held_by_reason.sql"),
    ),
    (
        5,
        "store probe",
        include_str!("migrations/postgres/0005_store_probe.sql"),
    ),
    (
        6,
        "sealed locators",
        include_str!("migrations/postgres/0006_sealed_locators.sql"),
    ),
    (
        7,
        "aggregates",
        include_str!("migrations/postgres/0007_aggregates.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => MIGRATIONS,
        Backend::Postgres => PG_MIGRATIONS,
    };
    let migrations = list
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// Binds `values` as the items of an `IN (` list the query has just opened,
/// padded to [`sql::padded_len`] by repeating the last, and closes it.
fn push_list<'a, T>(q: &mut QueryBuilder<'a>, values: &'a [T])
where
    &'a T: sqlx::Encode<'a, Any> + sqlx::Type<Any> + exec::ToVal,
{
    let mut sep = q.separated(", ");
    for v in values {
        sep.push_bind(v);
    }
    if let Some(last) = values.last() {
        for _ in values.len()..sql::padded_len(values.len()) {
            sep.push_bind(last);
        }
    }
    q.push(")");
}

/// SQLite has one writer at a time: a statement that waits for the write
/// lock (a lease renewal while a run stages a 20,000-document chunk) is
/// expected to take seconds, and sqlx's default warning for every statement
/// over a second filled an operator's log with "slow statement" lines during
/// any backfill. Such statements are logged at debug level instead (the
/// run's own timings say where its time went).
fn sqlite_statement_logging(opts: sqlx::any::AnyConnectOptions) -> sqlx::any::AnyConnectOptions {
    use sqlx::ConnectOptions as _;
    opts.log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(1))
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite: the connection transactions run on ([`exec`]), one at a
    /// time (SQLite has one writer).
    sqlite: Option<std::sync::Arc<tokio::sync::Mutex<rusqlite::Connection>>>,
    /// SQLite: a connection for the run's bulk reads outside a transaction
    /// (a listing against `seen`, a batch's rows at sealing): a reader
    /// never waits for the writer in WAL mode.
    sqlite_reader: Option<std::sync::Arc<tokio::sync::Mutex<rusqlite::Connection>>>,
    backend: Backend,
    /// What errors and readiness call the store: its backend and where it
    /// is (a file, or host, port and database; never a user name).
    label: std::sync::Arc<str>,
}

/// The store's name for operators: `SQLite store /var/lib/regfeed/regfeed.db`,
/// `PostgreSQL store db.example:5432/regfeed`. No user name or password.
fn store_label(backend: Backend, url: &str) -> String {
    match backend {
        Backend::Sqlite => {
            let path = SqliteConnectOptions::from_str(url)
                .map(|o| o.get_filename().display().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("SQLite store {path}")
        }
        Backend::Postgres => {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let rest = rest.split('?').next().unwrap_or(rest);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("PostgreSQL store {rest}")
        }
    }
}

/// A file an `archive_dir` source has looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub sha256: String,
}

/// A decoded document version to record.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub doc_id: String,
    pub set_id: String,
    pub version: i64,
    pub person: Option<String>,
    pub source: String,
    pub path: String,
    pub sha256: String,
    pub packaging: String,
    pub controller: Option<String>,
    pub service_event: Option<String>,
    pub code_system: Option<String>,
    pub code: Option<String>,
    pub withdrawal: bool,
    pub invalidates: Option<String>,
    pub sensitive: bool,
    pub records: i64,
    /// The kind of the patient id (not stored: counted by the run).
    pub patient_id: crate::codes::PatientIdKind,
}

#[derive(Debug, Clone)]
pub struct Quarantined {
    pub source: String,
    pub path: String,
    pub sha256: String,
    pub class: String,
    pub detail: String,
}

/// A document of a person, with this feed's view of it.
#[derive(Debug, Clone)]
pub struct PersonDoc {
    pub doc_key: i64,
    pub doc_id: String,
    pub set_id: String,
    pub version: i64,
    pub person: String,
    pub source: String,
    pub path: String,
    pub sha256: String,
    pub withdrawal: bool,
    pub invalidates: Option<String>,
    /// `None` when the feed has not mapped the document yet.
    pub evidence: Option<bool>,
    /// The custodian OID and service event: what the policy gate needs.
    pub controller: Option<String>,
    pub service_event: Option<String>,
}

/// One mapped row of a document, as the feed indexes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRow {
    pub doc_key: i64,
    pub ordinal: i64,
    pub record_id: String,
    pub row_hash: String,
    pub event_date: Option<String>,
    pub held: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    pub record_id: String,
    pub person: String,
    pub row_hash: String,
}

#[derive(Debug, Clone)]
pub struct BatchRow {
    pub record_id: String,
    pub op: String,
    /// The row's column values as a JSON array.
    pub row: String,
    /// Whose row it is (index pseudonym) and the document it came from
    /// (none for a retract): the sealing-time policy re-check needs them.
    pub person: Option<String>,
    pub doc_key: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewBatch {
    pub feed: String,
    pub seq: i64,
    pub window_from: Option<i64>,
    pub window_to: i64,
    pub upserts: i64,
    pub retracts: i64,
    /// Held records by reason, as a JSON object.
    pub held: String,
    /// Policy counts for the manifest: `{"excluded": {rule: n}, "exempt": n}`.
    pub policy: String,
}

/// What sealing froze: the data file and the manifest's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRecord {
    pub data_file: String,
    pub data_bytes: i64,
    pub data_sha256: String,
    pub manifest_sha256: String,
    pub sealed_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchInfo {
    pub feed: String,
    pub seq: i64,
    pub state: String,
    pub created_at: String,
    pub sealed_at: Option<String>,
    pub delivered_at: Option<String>,
    pub window_from: Option<i64>,
    pub window_to: i64,
    pub upserts: i64,
    pub retracts: i64,
    pub held: String,
    pub policy: String,
    pub data_file: Option<String>,
    pub data_bytes: Option<i64>,
    pub data_sha256: Option<String>,
    pub manifest_sha256: Option<String>,
    pub receipt: Option<String>,
}

impl Store {
    /// Opens the store at `url` and runs its migrations: `sqlite://PATH`
    /// (created if needed) or `postgres://...` (the database must exist).
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, std::time::Duration::from_secs(60)).await
    }

    /// [`Store::open`], where `stall` bounds how long a PostgreSQL session
    /// may sit idle inside a transaction (`idle_in_transaction_session_timeout`):
    /// a replica paused or cut off mid-transaction would otherwise hold the
    /// write lock, and stall every other replica, until its connection died.
    /// The daemon passes its lease time: past it the paused replica's work is
    /// fenced anyway. A statement waiting for a lock gives up after twice
    /// `stall` (`lock_timeout`).
    pub async fn open_with(url: &str, stall: std::time::Duration) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let Some(backend) = Backend::of_url(url) else {
            return Err(StoreError::Other(
                "database.url must start with sqlite:// or postgres://".into(),
            ));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?;
                crate::ownership::check_sqlite_store(opts.get_filename())?;
                if let Some(parent) = opts.get_filename().parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StoreError::Other(format!("cannot create the store's folder: {e}"))
                    })?;
                }
                // The Any driver takes a URL only: create the file if
                // missing, and set the rest per connection.
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // A 16 MiB page cache (the default is 2 MiB):
                            // a chunk's writes touch more index pages than
                            // that, which spilled to the WAL and were read
                            // back within the same transaction.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; \
                                 PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(sqlite_statement_logging(
                        sqlx::any::AnyConnectOptions::from_str(&url)?,
                    ))
                    .await?
            }
            Backend::Postgres => {
                let stall_ms = stall.as_millis().max(1000);
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(std::time::Duration::from_secs(60))
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                format!("SET idle_in_transaction_session_timeout = {stall_ms}")
                                    .as_str(),
                            )
                            .await?;
                            // No wait for a lock (the write lock, a row) is
                            // endless: past two lease times the statement
                            // fails, the run fails and the next fire retries,
                            // instead of a replica hanging on a lock cycle
                            // nobody detects.
                            conn.execute(format!("SET lock_timeout = {}", 2 * stall_ms).as_str())
                                .await?;
                            // Statements are prepared once and reused (see
                            // `sql`); PostgreSQL would switch them to a
                            // generic plan after five runs, and for the
                            // `IN` lists and key ranges of a run that plan
                            // was slower (a 5,000-patient backfill took 12.9 s
                            // instead of 8.0 s). The statements are bulk:
                            // planning each run costs little beside it.
                            conn.execute("SET plan_cache_mode = force_custom_plan")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        migrator(backend).run(&pool).await?;
        let (sqlite, sqlite_reader) = match backend {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?;
                let open = |cache_kib| -> Result<_> {
                    let conn = exec::open_sqlite(opts.get_filename(), cache_kib)?;
                    Ok(Some(std::sync::Arc::new(tokio::sync::Mutex::new(conn))))
                };
                (open(exec::WRITER_CACHE_KIB)?, open(exec::READER_CACHE_KIB)?)
            }
            Backend::Postgres => (None, None),
        };
        Ok(Store {
            pool,
            sqlite,
            sqlite_reader,
            backend,
            label: store_label(backend, url).into(),
        })
    }

    /// The store's name for operators (see [`store_label`]).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Proves that the store takes writes: one small write transaction
    /// (this process's row in `store_probe`), committed like any other.
    pub async fn probe_write(&self, holder: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO store_probe (holder, at) VALUES ($1, $2)
             ON CONFLICT (holder) DO UPDATE SET at = excluded.at",
        )
        .bind(holder)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Upkeep after a run stages a chunk, outside its transaction.
    ///
    /// SQLite: copies the write-ahead log back into the database and
    /// truncates it, waiting (up to the busy timeout) for readers of older
    /// snapshots to finish. While a run's producer keeps reading, SQLite's
    /// automatic checkpoints never reach the end of the log, which then grew
    /// by every page the run wrote (1 GB over a 50,000-patient backfill),
    /// and every read searched it.
    ///
    /// PostgreSQL: refreshes the planner's statistics of the tables a run
    /// fills. A backfill grows them faster than autovacuum analyses them,
    /// and on statistics from when they were small the planner read every
    /// person's documents with a (parallel) scan of the whole table.
    ///
    /// Best effort: what cannot finish now is left to the next chunk.
    pub async fn after_chunk(&self) {
        let sql = match self.backend {
            Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
            Backend::Postgres => {
                "ANALYZE documents, feed_docs, feed_doc_rows, feed_rows, seen, held, cohort"
            }
        };
        if let Err(e) = sqlx::raw_sql(sql).execute(&self.pool).await {
            tracing::debug!(error = %e, "Store upkeep after a chunk did not finish; the next chunk's will.");
        }
    }

    /// A write transaction, holding the store's write lock until it ends.
    /// SQLite: `BEGIN IMMEDIATE` (a deferred transaction that reads and then
    /// writes while another writer commits fails with "database is locked"
    /// instead of waiting). PostgreSQL: an advisory transaction lock, so that
    /// documents and cursors commit in the order their keys were drawn.
    /// A run's staging transaction: on SQLite on the store's own connection
    /// ([`exec`]: statements prepared once, run on this thread), on
    /// PostgreSQL as [`Store::begin`]. Its statements go through the
    /// transaction's methods only ([`Tx::conn`] is for `begin`'s).
    pub async fn begin_run(&self) -> Result<Tx> {
        if let Some(sqlite) = &self.sqlite {
            let conn = std::sync::Arc::clone(sqlite).lock_owned().await;
            // SQLite's write lock, waited for here, between attempts, and not
            // inside SQLite: a blocked thread could be the one that would
            // let another connection of this process finish its transaction.
            let give_up = std::time::Instant::now() + SQLITE_WRITE_LOCK_WAIT;
            let mut pause = std::time::Duration::from_millis(1);
            loop {
                match conn.execute_batch("BEGIN IMMEDIATE") {
                    Ok(()) => break,
                    Err(e)
                        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                            && std::time::Instant::now() < give_up =>
                    {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_millis(50));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Tx {
                conn: TxConn::Sqlite(conn),
                backend: self.backend,
                open: true,
            });
        }
        self.begin().await
    }

    pub async fn begin(&self) -> Result<Tx> {
        let conn = self.pool.acquire().await?;
        let mut tx = Tx {
            conn: TxConn::Pool(conn),
            backend: self.backend,
            // Until it is known to have begun: a failed BEGIN closes it.
            open: true,
        };
        match self.backend {
            Backend::Sqlite => tx.execute_sql("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                tx.execute_sql("BEGIN").await?;
                let mut q = tx.builder("SELECT 1 FROM pg_advisory_xact_lock($1)");
                q.bind(PG_WRITE_LOCK);
                tx.fetch_one(q).await?;
            }
        }
        Ok(tx)
    }

    /// A read-only transaction on a pooled connection (no write lock): one
    /// consistent view for [`Tx`]'s readers.
    pub async fn begin_read(&self) -> Result<Tx> {
        let conn = self.pool.acquire().await?;
        let mut tx = Tx {
            conn: TxConn::Pool(conn),
            backend: self.backend,
            open: true,
        };
        tx.execute_sql("BEGIN").await?;
        Ok(tx)
    }

    pub async fn seen(&self, source: &str) -> Result<HashMap<String, Seen>> {
        let rows = sqlx::query("SELECT path, size, mtime_ns, sha256 FROM seen WHERE source = $1")
            .bind(source)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let s = Seen {
                    path: r.get(0),
                    size: r.get(1),
                    mtime_ns: r.get(2),
                    sha256: r.get(3),
                };
                (s.path.clone(), s)
            })
            .collect())
    }

    /// Which listed files of a source are new or changed since the store
    /// last saw them: the index of each in `listed` (sealed path, size,
    /// mtime), with the digest recorded for its path if there is one.
    ///
    /// The comparison runs in the store, so a file seen before costs no
    /// returned row: an idle run's listing (every file unchanged) fetched
    /// each `seen` row to compare it here, one row at a time across the
    /// driver's thread. The list travels as one JSON text (`json_each` on
    /// SQLite, `jsonb_array_elements` on PostgreSQL), so the statement's
    /// text never changes and is prepared once.
    pub async fn seen_changed(
        &self,
        source: &str,
        listed: &[(&str, i64, i64)],
    ) -> Result<Vec<(usize, Option<String>)>> {
        const SQLITE: &str = "SELECT CAST(j.key AS INTEGER), s.sha256 FROM json_each($2) j \
             LEFT JOIN seen s ON s.source = $1 AND s.path = json_extract(j.value, '$[0]') \
             WHERE s.path IS NULL OR s.size <> json_extract(j.value, '$[1]') \
                OR s.mtime_ns <> json_extract(j.value, '$[2]') \
             ORDER BY 1";
        const POSTGRES: &str = "SELECT (j.ord - 1)::BIGINT, s.sha256 \
             FROM jsonb_array_elements($2::TEXT::JSONB) WITH ORDINALITY AS j(v, ord) \
             LEFT JOIN seen s ON s.source = $1 AND s.path = (j.v->>0) \
             WHERE s.path IS NULL OR s.size <> (j.v->>1)::BIGINT \
                OR s.mtime_ns <> (j.v->>2)::BIGINT \
             ORDER BY 1";
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(listed)
            .map_err(|e| StoreError::Other(format!("listing as JSON: {e}")))?;
        let rows: Vec<exec::Row> = match &self.sqlite_reader {
            Some(reader) => {
                let conn = reader.lock().await;
                exec::sqlite_query(&conn, SQLITE, &[source.to_val(), list.to_val()])?
            }
            None => sqlx::query(POSTGRES)
                .bind(source)
                .bind(list)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(exec::Row::Any)
                .collect(),
        };
        rows.into_iter()
            .map(|r| {
                let i: i64 = r.get(0);
                let i = usize::try_from(i)
                    .ok()
                    .filter(|&i| i < listed.len())
                    .ok_or_else(|| {
                        StoreError::Other(format!("seen: listing index {i} out of range"))
                    })?;
                Ok((i, r.get(1)))
            })
            .collect()
    }

    /// The latest `mtime_ns` seen for a source, if any: a `sql` source's
    /// high-water mark (there, `mtime_ns` is the row's `archived_at`).
    pub async fn seen_high_water(&self, source: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(mtime_ns) FROM seen WHERE source = $1")
                .bind(source)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn batch(&self, feed: &str, seq: i64) -> Result<Option<BatchInfo>> {
        let row = sqlx::query(BATCH_SELECT_WHERE)
            .bind(feed)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(batch_info))
    }

    pub async fn batches(&self, feed: Option<&str>) -> Result<Vec<BatchInfo>> {
        let rows = match feed {
            Some(f) => {
                sqlx::query(&format!(
                    "{BATCH_SELECT} WHERE feed = $1 ORDER BY feed, seq"
                ))
                .bind(f)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{BATCH_SELECT} ORDER BY feed, seq"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.into_iter().map(batch_info).collect())
    }

    /// The rows of a staged batch in file order, `limit` from line `from`.
    pub async fn batch_rows(
        &self,
        feed: &str,
        seq: i64,
        from: i64,
        limit: i64,
    ) -> Result<Vec<BatchRow>> {
        const SQL: &str = "SELECT record_id, op, row, person, doc_key FROM batch_rows WHERE feed = $1 AND seq = $2 AND line >= $3 ORDER BY line LIMIT $4";
        let rows: Vec<exec::Row> = match &self.sqlite_reader {
            Some(reader) => {
                let conn = reader.lock().await;
                exec::sqlite_query(
                    &conn,
                    SQL,
                    &[feed.to_val(), seq.to_val(), from.to_val(), limit.to_val()],
                )?
            }
            None => sqlx::query(SQL)
                .bind(feed)
                .bind(seq)
                .bind(from)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(exec::Row::Any)
                .collect(),
        };
        Ok(rows
            .into_iter()
            .map(|r| BatchRow {
                record_id: r.get(0),
                op: r.get(1),
                row: r.get(2),
                person: r.get(3),
                doc_key: r.get(4),
            })
            .collect())
    }

    pub async fn mark_sealed(&self, feed: &str, seq: i64, s: &SealRecord) -> Result<()> {
        sqlx::query(
            "UPDATE batches SET state = 'sealed', sealed_at = $1, data_file = $2, data_bytes = $3, data_sha256 = $4, manifest_sha256 = $5 WHERE feed = $6 AND seq = $7 AND state = 'staged'",
        )
        .bind(&s.sealed_at)
        .bind(&s.data_file)
        .bind(s.data_bytes)
        .bind(&s.data_sha256)
        .bind(&s.manifest_sha256)
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_delivered(&self, feed: &str, seq: i64, receipt: &str) -> Result<()> {
        sqlx::query(
            "UPDATE batches SET state = 'delivered', delivered_at = $1, receipt = $2 WHERE feed = $3 AND seq = $4 AND state = 'sealed'",
        )
        .bind(now())
        .bind(receipt)
        .bind(feed)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Controller OID and service event of documents, by key.
    pub async fn doc_meta(
        &self,
        keys: &[i64],
    ) -> Result<HashMap<i64, (Option<String>, Option<String>)>> {
        let mut out = HashMap::new();
        for chunk in list_chunks(keys) {
            let mut q = QueryBuilder::for_backend(
                self.backend,
                "SELECT doc_key, controller, service_event FROM documents WHERE doc_key IN (",
            );
            push_list(&mut q, chunk);
            for r in q.build()?.fetch_all(&self.pool).await? {
                out.insert(r.get(0), (r.get(1), r.get(2)));
            }
        }
        Ok(out)
    }

    /// Rows removed from a batch before it went out: the register never got
    /// them, so they are not live.
    pub async fn forget_rows(&self, feed: &str, record_ids: &[String]) -> Result<()> {
        for chunk in list_chunks(record_ids) {
            let mut q =
                QueryBuilder::for_backend(self.backend, "DELETE FROM feed_rows WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            q.build()?.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// The manifest digest of the batch sealed before `seq` (the chain link).
    pub async fn previous_manifest(&self, feed: &str, seq: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT manifest_sha256 FROM batches WHERE feed = $1 AND seq < $2 AND manifest_sha256 IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .bind(feed)
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Held records: counts by feed and reason.
    pub async fn held_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT feed, reason, COUNT(*) FROM held GROUP BY feed, reason ORDER BY feed, reason",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Quarantined documents: counts by error class.
    pub async fn quarantine_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT class, COUNT(*) FROM quarantine GROUP BY class ORDER BY class")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Records how a run ended. Inside [`fenced`] work whose lease was lost
    /// meanwhile, the run is recorded as `fenced` whatever it says, and the
    /// error is [`StoreError::RunFenced`]: only a run that held its lease to the
    /// end counts as the run of its fire. Such a run for a scheduled fire
    /// that this holder still has marks the fire done in the same
    /// transaction: a replica killed after this commit leaves nothing to
    /// take over, one killed before it leaves a fire that another replica
    /// runs once.
    pub async fn finish_run(&self, id: i64, outcome: &str, counts: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let lost = match lease::current_fence() {
            Some(lease) if !tx.holds(&lease).await? => Some(lease.feed),
            _ => None,
        };

        sqlx::query("UPDATE runs SET finished_at = $1, outcome = $2, counts = $3 WHERE id = $4")
            .bind(now())
            .bind(if lost.is_some() { "fenced" } else { outcome })
            .bind(counts)
            .bind(id)
            .execute(tx.conn())
            .await?;
        if lost.is_none() {
            let run = sqlx::query("SELECT feed, fire_at, holder FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(tx.conn())
                .await?;
            if let Some(r) = run {
                let (feed, fire_at, holder): (String, Option<String>, Option<String>) =
                    (r.get(0), r.get(1), r.get(2));
                if let (Some(fire_at), Some(holder)) = (fire_at, holder) {
                    // Compare-and-set on this holder: a fire taken over
                    // meanwhile is the taker's to finish.
                    sqlx::query(
                        "UPDATE fires SET state = 'done' WHERE feed = $1 AND fire_at = $2 AND holder = $3 AND state = 'running'",
                    )
                    .bind(feed)
                    .bind(fire_at)
                    .bind(holder)
                    .execute(tx.conn())
                    .await?;
                }
            }
        }
        tx.commit_now().await?;
        match lost {
            Some(feed) => Err(StoreError::RunFenced(feed)),
            None => Ok(()),
        }
    }

    /// Records a run as started. Under the feed's lease ([`fenced`] work),
    /// any run of the feed still marked running is a dead or fenced-off
    /// process's: it is closed as `interrupted` in the same (fenced)
    /// transaction, so the run log never shows two runs of a feed at once.
    pub async fn start_run(&self, feed: &str) -> Result<i64> {
        let fence = lease::current_fence();
        let mut tx = self.begin().await?;
        if fence.is_some() {
            sqlx::query(
                "UPDATE runs SET outcome = 'interrupted', finished_at = $1 WHERE feed = $2 AND outcome = 'running'",
            )
            .bind(now())
            .bind(feed)
            .execute(tx.conn())
            .await?;
        }
        let row = sqlx::query(
            "INSERT INTO runs (feed, started_at, outcome, holder, fire_at) VALUES ($1, $2, 'running', $3, $4) RETURNING id",
        )
        .bind(feed)
        .bind(now())
        // Who ran it (the holder of the lease the run is fenced by), and for
        // which scheduled fire.
        .bind(fence.map(|l| l.holder))
        .bind(lease::current_fire())
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    pub async fn feed_cursor(&self, feed: &str) -> Result<i64> {
        let row = sqlx::query("SELECT doc_key FROM feed_cursor WHERE feed = $1")
            .bind(feed)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

const BATCH_SELECT: &str = "SELECT feed, seq, state, created_at, sealed_at, delivered_at, window_from, window_to, upserts, retracts, held, data_file, data_bytes, data_sha256, manifest_sha256, receipt, policy FROM batches";
const BATCH_SELECT_WHERE: &str = "SELECT feed, seq, state, created_at, sealed_at, delivered_at, window_from, window_to, upserts, retracts, held, data_file, data_bytes, data_sha256, manifest_sha256, receipt, policy FROM batches WHERE feed = $1 AND seq = $2";

fn batch_info(r: sqlx::any::AnyRow) -> BatchInfo {
    BatchInfo {
        feed: r.get(0),
        seq: r.get(1),
        state: r.get(2),
        created_at: r.get(3),
        sealed_at: r.get(4),
        delivered_at: r.get(5),
        window_from: r.get(6),
        window_to: r.get(7),
        upserts: r.get(8),
        retracts: r.get(9),
        held: r.get(10),
        data_file: r.get(11),
        data_bytes: r.get(12),
        data_sha256: r.get(13),
        manifest_sha256: r.get(14),
        receipt: r.get(15),
        policy: r.get(16),
    }
}

/// One store transaction: a feed run's staging is all or nothing.
///
/// It owns its pooled connection and says `BEGIN`, `COMMIT` and `ROLLBACK`
/// itself, so that a connection whose transaction state is in doubt never
/// goes back to the pool: a commit or rollback that fails (SQLite rolls a
/// transaction back by itself when the disk is full, PostgreSQL when the
/// session breaks), and a transaction dropped unfinished (an error, a
/// cancelled run), close their connection, which ends the transaction on
/// both backends. The pool opens a fresh one for the next transaction.
/// (sqlx's own transactions kept such a connection, marked as inside a
/// transaction that was gone: every later `BEGIN` on it failed with
/// "attempted to call begin_with at non-zero transaction depth".)
#[derive(Debug)]
pub struct Tx {
    conn: TxConn,
    backend: Backend,
    open: bool,
}

/// How long a SQLite transaction waits for the write lock (as the pool's
/// `busy_timeout`).
const SQLITE_WRITE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for TxConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxConn::Pool(_) => "Pool",
            TxConn::Sqlite(_) => "Sqlite",
        })
    }
}

enum TxConn {
    /// PostgreSQL: a pooled sqlx connection.
    Pool(PoolConnection<Any>),
    /// SQLite: the store's own connection, held for the transaction.
    Sqlite(tokio::sync::OwnedMutexGuard<rusqlite::Connection>),
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            match &mut self.conn {
                // Unfinished: closing the connection rolls the transaction
                // back (and frees the locks) without waiting for it.
                TxConn::Pool(c) => c.close_on_drop(),
                // Rolled back at once: the write lock is freed before the
                // connection goes back to the next transaction.
                TxConn::Sqlite(c) => {
                    let _ = c.execute_batch("ROLLBACK");
                }
            }
        }
    }
}

impl Tx {
    /// The transaction's sqlx connection, for code that owns its own SQL
    /// and runs in a transaction from [`Store::begin`]. A run's SQLite
    /// transaction ([`Store::begin_run`]) has none: its statements go
    /// through [`Tx::execute`] and [`Tx::fetch_all`].
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match &mut self.conn {
            TxConn::Pool(c) => c,
            TxConn::Sqlite(_) => {
                panic!("a run's SQLite transaction has no sqlx connection (use Tx::execute)")
            }
        }
    }

    /// A statement builder for this transaction's connection.
    pub fn builder<'a>(&self, init: impl Into<String>) -> QueryBuilder<'a> {
        match self.conn {
            TxConn::Sqlite(_) => QueryBuilder::for_sqlite_connection(init),
            TxConn::Pool(_) => QueryBuilder::for_backend(self.backend, init),
        }
    }

    /// Runs a statement that returns no rows; the rows it changed.
    pub async fn execute(&mut self, mut q: QueryBuilder<'_>) -> Result<u64> {
        match &mut self.conn {
            TxConn::Sqlite(c) => {
                debug_assert!(q.is_for_sqlite_connection());
                let (sql, vals) = q.sqlite_parts();
                Ok(exec::sqlite_execute(c, sql, vals)?)
            }
            TxConn::Pool(c) => Ok(q.build()?.execute(&mut **c).await?.rows_affected()),
        }
    }

    /// Runs a statement and reads every row it returns.
    pub async fn fetch_all(&mut self, mut q: QueryBuilder<'_>) -> Result<Vec<exec::Row>> {
        match &mut self.conn {
            TxConn::Sqlite(c) => {
                debug_assert!(q.is_for_sqlite_connection());
                let (sql, vals) = q.sqlite_parts();
                Ok(exec::sqlite_query(c, sql, vals)?)
            }
            TxConn::Pool(c) => Ok(q
                .build()?
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(exec::Row::Any)
                .collect()),
        }
    }

    /// The first row a statement returns, if any.
    pub async fn fetch_optional(&mut self, q: QueryBuilder<'_>) -> Result<Option<exec::Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// The first row a statement returns; none is an error.
    pub async fn fetch_one(&mut self, q: QueryBuilder<'_>) -> Result<exec::Row> {
        self.fetch_optional(q)
            .await?
            .ok_or_else(|| StoreError::Sql(sqlx::Error::RowNotFound))
    }

    /// Runs statement text with no values (`BEGIN`, `COMMIT`, `ROLLBACK`).
    async fn execute_sql(&mut self, sql: &str) -> Result<()> {
        match &mut self.conn {
            TxConn::Sqlite(c) => c.execute_batch(sql)?,
            TxConn::Pool(c) => {
                (&mut **c).execute(sql).await?;
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`); on failure
    /// a pooled connection is closed, not pooled, and SQLite's is rolled
    /// back.
    async fn end(&mut self, sql: &'static str) -> Result<()> {
        let r = self.execute_sql(sql).await;
        if r.is_err() {
            match &mut self.conn {
                TxConn::Pool(c) => c.close_on_drop(),
                TxConn::Sqlite(c) => {
                    if !c.is_autocommit() {
                        let _ = c.execute_batch("ROLLBACK");
                    }
                }
            }
        }
        self.open = false;
        r
    }

    /// Rolls back at once (a dropped transaction closes its connection).
    pub async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    /// Commits. Inside [`fenced`] work it first checks, holding the lease
    /// row's lock until the commit, that the lease is still this holder's
    /// (and on PostgreSQL, unexpired); if not it rolls back with
    /// [`StoreError::Fenced`].
    pub async fn commit(mut self) -> Result<()> {
        for lease in lease::current_fences() {
            if !self.holds(&lease).await? {
                self.end("ROLLBACK").await?;
                return Err(StoreError::Fenced(lease.feed));
            }
        }
        self.commit_now().await
    }

    /// `COMMIT`, with no fence check.
    async fn commit_now(&mut self) -> Result<()> {
        if crate::failpoint::failing("store_full") {
            // What SQLite does when the disk is full at commit: it rolls the
            // transaction back itself and answers SQLITE_FULL.
            let _ = self.end("ROLLBACK").await;
            return Err(StoreError::Sql(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "database or disk is full (failpoint store_full)",
            ))));
        }
        self.end("COMMIT").await
    }

    async fn holds(&mut self, lease: &Lease) -> Result<bool> {
        let done = {
            let mut q = self.builder("UPDATE leases SET token = token WHERE feed = $1 AND holder = $2 AND token = $3 AND expires_at > $4");
            q.bind(&lease.feed);
            q.bind(&lease.holder);
            q.bind(lease.token);
            q.bind(self.backend.lease_still_running_after(chrono::Utc::now()));
            self.execute(q).await
        }?;
        Ok(done == 1)
    }

    /// [`Store::mark_sealed`] inside this transaction (with its audit entry).
    pub async fn mark_sealed(&mut self, feed: &str, seq: i64, s: &SealRecord) -> Result<()> {
        {
            let mut q = self.builder("UPDATE batches SET state = 'sealed', sealed_at = $1, data_file = $2, data_bytes = $3, data_sha256 = $4, manifest_sha256 = $5 WHERE feed = $6 AND seq = $7 AND state = 'staged'");
            q.bind(&s.sealed_at);
            q.bind(&s.data_file);
            q.bind(s.data_bytes);
            q.bind(&s.data_sha256);
            q.bind(&s.manifest_sha256);
            q.bind(feed);
            q.bind(seq);
            self.execute(q).await
        }?;
        Ok(())
    }

    pub async fn put_seen(&mut self, source: &str, rows: &[Seen]) -> Result<()> {
        let at = now();
        for chunk in statement_chunks(rows) {
            let mut q =
                self.builder("INSERT INTO seen (source, path, size, mtime_ns, sha256, seen_at) ");
            q.push_values(chunk, |mut b, s| {
                b.push_bind(source)
                    .push_bind(&s.path)
                    .push_bind(s.size)
                    .push_bind(s.mtime_ns)
                    .push_bind(&s.sha256)
                    .push_bind(&at);
            });
            q.push(
                " ON CONFLICT (source, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, seen_at = excluded.seen_at",
            );
            self.execute(q).await?;
        }
        Ok(())
    }

    /// Digests of documents already recorded, by document id.
    pub async fn known_documents(&mut self, ids: &[&str]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in list_chunks(ids) {
            let mut q = self.builder("SELECT doc_id, sha256 FROM documents WHERE doc_id IN (");
            push_list(&mut q, chunk);
            for r in self.fetch_all(q).await? {
                out.insert(r.get(0), r.get(1));
            }
        }
        Ok(out)
    }

    /// Records documents; returns their keys in input order.
    pub async fn insert_documents(&mut self, docs: &[NewDocument]) -> Result<Vec<i64>> {
        let at = now();
        let mut keys = Vec::with_capacity(docs.len());
        for chunk in statement_chunks(docs) {
            let mut q = self.builder(
                "INSERT INTO documents (doc_id, set_id, version, person, source, path, sha256, packaging, controller, service_event, code_system, code, withdrawal, invalidates, sensitive, records, ingested_at) ",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.doc_id)
                    .push_bind(&d.set_id)
                    .push_bind(d.version)
                    .push_bind(&d.person)
                    .push_bind(&d.source)
                    .push_bind(&d.path)
                    .push_bind(&d.sha256)
                    .push_bind(&d.packaging)
                    .push_bind(&d.controller)
                    .push_bind(&d.service_event)
                    .push_bind(&d.code_system)
                    .push_bind(&d.code)
                    .push_bind(i64::from(d.withdrawal))
                    .push_bind(&d.invalidates)
                    .push_bind(i64::from(d.sensitive))
                    .push_bind(d.records)
                    .push_bind(&at);
            });
            q.push(" RETURNING doc_key");
            let rows = self.fetch_all(q).await?;
            keys.extend(rows.into_iter().map(|r| r.get::<i64>(0)));
        }
        Ok(keys)
    }

    pub async fn quarantine(&mut self, rows: &[Quarantined]) -> Result<()> {
        let at = now();
        for chunk in statement_chunks(rows) {
            let mut q =
                self.builder("INSERT INTO quarantine (source, path, sha256, class, detail, at) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.source)
                    .push_bind(&r.path)
                    .push_bind(&r.sha256)
                    .push_bind(&r.class)
                    .push_bind(&r.detail)
                    .push_bind(&at);
            });
            self.execute(q).await?;
        }
        Ok(())
    }

    pub async fn cursor(&mut self, feed: &str) -> Result<i64> {
        let row = {
            let mut q = self.builder("SELECT doc_key FROM feed_cursor WHERE feed = $1");
            q.bind(feed);
            self.fetch_optional(q).await
        }?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    pub async fn set_cursor(&mut self, feed: &str, doc_key: i64) -> Result<()> {
        {
            let mut q = self.builder("INSERT INTO feed_cursor (feed, doc_key) VALUES ($1, $2) ON CONFLICT (feed) DO UPDATE SET doc_key = excluded.doc_key");
            q.bind(feed);
            q.bind(doc_key);
            self.execute(q).await
        }?;
        Ok(())
    }

    pub async fn max_doc_key(&mut self) -> Result<i64> {
        let row = {
            let q = self.builder("SELECT COALESCE(MAX(doc_key), 0) FROM documents");
            self.fetch_one(q).await
        }?;
        Ok(row.get(0))
    }

    /// People with documents in `(after, upto]`.
    pub async fn persons_between(&mut self, after: i64, upto: i64) -> Result<Vec<String>> {
        let rows = {
            let mut q = self.builder("SELECT DISTINCT person FROM documents WHERE doc_key > $1 AND doc_key <= $2 AND person IS NOT NULL ORDER BY person");
            q.bind(after);
            q.bind(upto);
            self.fetch_all(q).await
        }?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Every document of these people (up to `upto`), with the feed's
    /// evidence flag where the feed has mapped it.
    pub async fn person_docs(
        &mut self,
        feed: &str,
        persons: &[String],
        upto: i64,
    ) -> Result<Vec<PersonDoc>> {
        self.person_docs_except(feed, persons, upto, None).await
    }

    /// [`Tx::person_docs`], leaving out the documents whose keys lie in
    /// `except` (inclusive): those a run has just written and still holds.
    pub async fn person_docs_except(
        &mut self,
        feed: &str,
        persons: &[String],
        upto: i64,
        except: Option<(i64, i64)>,
    ) -> Result<Vec<PersonDoc>> {
        let mut out = Vec::new();
        for chunk in list_chunks(persons) {
            let mut q = self.builder(
                "SELECT d.doc_key, d.doc_id, d.set_id, d.version, d.person, d.source, d.path, d.sha256, d.withdrawal, d.invalidates, f.evidence, d.controller, d.service_event FROM documents d LEFT JOIN feed_docs f ON f.feed = ",
            );
            q.push_bind(feed);
            q.push(" AND f.doc_key = d.doc_key WHERE d.doc_key <= ");
            q.push_bind(upto);
            if let Some((lo, hi)) = except {
                q.push(" AND (d.doc_key < ");
                q.push_bind(lo);
                q.push(" OR d.doc_key > ");
                q.push_bind(hi);
                q.push(")");
            }
            q.push(" AND d.person IN (");
            push_list(&mut q, chunk);
            q.push(" ORDER BY d.doc_key");
            for r in self.fetch_all(q).await? {
                out.push(PersonDoc {
                    doc_key: r.get(0),
                    doc_id: r.get(1),
                    set_id: r.get(2),
                    version: r.get(3),
                    person: r.get(4),
                    source: r.get(5),
                    path: r.get(6),
                    sha256: r.get(7),
                    withdrawal: r.get::<i64>(8) != 0,
                    invalidates: r.get(9),
                    evidence: r.get::<Option<i64>>(10).map(|e| e != 0),
                    controller: r.get(11),
                    service_event: r.get(12),
                });
            }
        }
        Ok(out)
    }

    pub async fn doc_rows(&mut self, feed: &str, doc_keys: &[i64]) -> Result<Vec<DocRow>> {
        let mut out = Vec::new();
        for chunk in list_chunks(doc_keys) {
            let mut q = self.builder(
                "SELECT doc_key, ordinal, record_id, row_hash, event_date, held FROM feed_doc_rows WHERE feed = ",
            );
            q.push_bind(feed);
            q.push(" AND doc_key IN (");
            push_list(&mut q, chunk);
            q.push(" ORDER BY doc_key, ordinal");
            for r in self.fetch_all(q).await? {
                out.push(DocRow {
                    doc_key: r.get(0),
                    ordinal: r.get(1),
                    record_id: r.get(2),
                    row_hash: r.get(3),
                    event_date: r.get(4),
                    held: r.get(5),
                });
            }
        }
        Ok(out)
    }

    /// Records a feed's mapping of documents: evidence flags and row index.
    pub async fn put_feed_docs(
        &mut self,
        feed: &str,
        docs: &[(i64, String, bool)],
        rows: &[DocRow],
    ) -> Result<()> {
        for chunk in statement_chunks(docs) {
            let mut q = self.builder("INSERT INTO feed_docs (feed, doc_key, person, evidence)");
            q.push_values(chunk, |mut b, (k, p, e)| {
                b.push_bind(feed)
                    .push_bind(*k)
                    .push_bind(p)
                    .push_bind(i64::from(*e));
            });
            q.push(" ON CONFLICT (feed, doc_key) DO UPDATE SET person = excluded.person, evidence = excluded.evidence");
            self.execute(q).await?;
        }
        for chunk in statement_chunks(rows) {
            let mut q = self.builder(
                "INSERT INTO feed_doc_rows (feed, doc_key, ordinal, record_id, row_hash, event_date, held)",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(feed)
                    .push_bind(r.doc_key)
                    .push_bind(r.ordinal)
                    .push_bind(&r.record_id)
                    .push_bind(&r.row_hash)
                    .push_bind(&r.event_date)
                    .push_bind(&r.held);
            });
            q.push(" ON CONFLICT (feed, doc_key, ordinal) DO UPDATE SET record_id = excluded.record_id, row_hash = excluded.row_hash, event_date = excluded.event_date, held = excluded.held");
            self.execute(q).await?;
        }
        Ok(())
    }

    /// The rows the register currently holds for these people.
    pub async fn live_rows(&mut self, feed: &str, persons: &[String]) -> Result<Vec<LiveRow>> {
        let mut out = Vec::new();
        for chunk in list_chunks(persons) {
            // Without statistics SQLite prefers the primary key (feed,
            // record_id) and scans the whole feed; the person index is the
            // right one. PostgreSQL's planner has statistics.
            let mut q = self.builder(
                match self.backend {
                    Backend::Sqlite => {
                        "SELECT record_id, person, row_hash FROM feed_rows INDEXED BY feed_rows_person WHERE live = 1 AND feed = "
                    }
                    Backend::Postgres => {
                        "SELECT record_id, person, row_hash FROM feed_rows WHERE live = 1 AND feed = "
                    }
                },
            );
            q.push_bind(feed);
            q.push(" AND person IN (");
            push_list(&mut q, chunk);
            for r in self.fetch_all(q).await? {
                out.push(LiveRow {
                    record_id: r.get(0),
                    person: r.get(1),
                    row_hash: r.get(2),
                });
            }
        }
        Ok(out)
    }

    /// Marks rows as sent (live) or retracted in batch `seq`.
    pub async fn apply_rows(
        &mut self,
        feed: &str,
        seq: i64,
        upserts: &[LiveRow],
        retracts: &[String],
    ) -> Result<()> {
        for chunk in statement_chunks(upserts) {
            let mut q = self.builder(
                "INSERT INTO feed_rows (feed, record_id, person, row_hash, live, batch_seq) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(feed)
                    .push_bind(&r.record_id)
                    .push_bind(&r.person)
                    .push_bind(&r.row_hash)
                    .push_bind(1_i64)
                    .push_bind(seq);
            });
            q.push(
                " ON CONFLICT (feed, record_id) DO UPDATE SET person = excluded.person, row_hash = excluded.row_hash, live = 1, batch_seq = excluded.batch_seq",
            );
            self.execute(q).await?;
        }
        for chunk in list_chunks(retracts) {
            let mut q = self.builder("UPDATE feed_rows SET live = 0, batch_seq = ");
            q.push_bind(seq);
            q.push(" WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND record_id IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
        }
        Ok(())
    }

    /// Replaces the held records of these people with `held`
    /// (record id, person, reason).
    pub async fn replace_held(
        &mut self,
        feed: &str,
        persons: &[String],
        held: &[(String, String, String)],
    ) -> Result<()> {
        // A record held again for the same reason keeps the time its hold
        // began: `held list` reports the oldest hold's age.
        let mut since_of: HashMap<(String, String), String> = HashMap::new();
        for chunk in list_chunks(persons) {
            let mut q = self.builder("SELECT record_id, reason, since FROM held WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND person IN (");
            push_list(&mut q, chunk);
            for r in self.fetch_all(q).await? {
                since_of.insert((r.get(0), r.get(1)), r.get(2));
            }
        }
        for chunk in list_chunks(persons) {
            let mut q = self.builder("DELETE FROM held WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND person IN (");
            push_list(&mut q, chunk);
            self.execute(q).await?;
        }
        let at = now();
        // One row per record id (the last wins): PostgreSQL refuses a
        // statement that would update the same row twice.
        let mut last = HashMap::with_capacity(held.len());
        for (i, h) in held.iter().enumerate() {
            last.insert(h.0.as_str(), i);
        }
        let held: Vec<&(String, String, String)> = held
            .iter()
            .enumerate()
            .filter(|(i, h)| last.get(h.0.as_str()) == Some(i))
            .map(|(_, h)| h)
            .collect();
        for chunk in statement_chunks(&held) {
            let mut q = self.builder("INSERT INTO held (feed, record_id, person, reason, since)");
            q.push_values(chunk, |mut b, (id, p, r)| {
                let since = since_of
                    .get(&(id.clone(), r.clone()))
                    .unwrap_or(&at)
                    .clone();
                b.push_bind(feed)
                    .push_bind(id)
                    .push_bind(p)
                    .push_bind(r)
                    .push_bind(since);
            });
            q.push(" ON CONFLICT (feed, record_id) DO UPDATE SET person = excluded.person, reason = excluded.reason, since = CASE WHEN held.reason = excluded.reason THEN held.since ELSE excluded.since END");
            self.execute(q).await?;
        }
        Ok(())
    }

    /// Current cohort membership of these people, as stored.
    pub async fn cohort(
        &mut self,
        feed: &str,
        persons: &[String],
    ) -> Result<HashMap<String, bool>> {
        let mut out = HashMap::new();
        for chunk in list_chunks(persons) {
            let mut q = self.builder("SELECT person, member FROM cohort WHERE feed = ");
            q.push_bind(feed);
            q.push(" AND person IN (");
            push_list(&mut q, chunk);
            for r in self.fetch_all(q).await? {
                out.insert(r.get(0), r.get::<i64>(1) != 0);
            }
        }
        Ok(out)
    }

    pub async fn set_cohort(&mut self, feed: &str, changes: &[(String, bool)]) -> Result<()> {
        let at = now();
        for chunk in statement_chunks(changes) {
            let mut q = self.builder("INSERT INTO cohort (feed, person, member, changed_at) ");
            q.push_values(chunk, |mut b, (p, m)| {
                b.push_bind(feed)
                    .push_bind(p)
                    .push_bind(i64::from(*m))
                    .push_bind(&at);
            });
            q.push(" ON CONFLICT (feed, person) DO UPDATE SET member = excluded.member, changed_at = excluded.changed_at");
            self.execute(q).await?;
        }
        Ok(())
    }

    pub async fn next_seq(&mut self, feed: &str) -> Result<i64> {
        let row = {
            let mut q =
                self.builder("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE feed = $1");
            q.bind(feed);
            self.fetch_one(q).await
        }?;
        Ok(row.get(0))
    }

    pub async fn insert_batch(&mut self, b: &NewBatch, rows: &[BatchRow]) -> Result<()> {
        {
            let mut q = self.builder("INSERT INTO batches (feed, seq, state, created_at, window_from, window_to, upserts, retracts, held, policy) VALUES ($1, $2, 'staged', $3, $4, $5, $6, $7, $8, $9)");
            q.bind(&b.feed);
            q.bind(b.seq);
            q.bind(now());
            q.bind(b.window_from);
            q.bind(b.window_to);
            q.bind(b.upserts);
            q.bind(b.retracts);
            q.bind(&b.held);
            q.bind(&b.policy);
            self.execute(q).await
        }?;
        let mut line = 0i64;
        for chunk in statement_chunks(rows) {
            let mut q = self.builder(
                "INSERT INTO batch_rows (feed, seq, line, record_id, op, row, person, doc_key) ",
            );
            q.push_values(chunk, |mut bld, r| {
                line += 1;
                bld.push_bind(&b.feed)
                    .push_bind(b.seq)
                    .push_bind(line)
                    .push_bind(&r.record_id)
                    .push_bind(&r.op)
                    .push_bind(&r.row)
                    .push_bind(&r.person)
                    .push_bind(r.doc_key);
            });
            self.execute(q).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_high_water_mark_is_read_from_an_index_not_a_scan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.expect("store opens");
        let plan: Vec<String> =
            sqlx::query("EXPLAIN QUERY PLAN SELECT MAX(mtime_ns) FROM seen WHERE source = $1")
                .bind("platform")
                .fetch_all(store.pool())
                .await
                .expect("plan")
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect();
        assert!(
            plan.iter().any(|d| d.contains("seen_source_mtime")),
            "{plan:?}"
        );
        assert_eq!(store.seen_high_water("platform").await.expect("read"), None);
    }
}
