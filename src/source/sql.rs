//! `sql`: archived documents in a PostgreSQL table (the data-platform case;
//! columns and indexes in `docs/SQL-SOURCE.md`). This module reads the table
//! with its own small pool; it never writes to it and never decides what is
//! new: the pipeline does, against the store's `seen` table.
//!
//! The cursor. A run lists the rows at or above `min(high-water, now) −
//! lookback` in keyset order `(archived_at, id)`, one page per query, and
//! the pipeline drops the rows the store has already seen (row id as the
//! path, `archived_at` as the mtime, `octet_length(document)` as the size).
//! The high-water mark is the latest `archived_at` the store has seen for the
//! source. Why this is tie-safe:
//! - within a run, `(archived_at, id) > (last archived_at, last id)` with a
//!   unique `id` is a strict total order: rows sharing a timestamp are split
//!   across pages without a gap or an overlap;
//! - across runs, a row that commits late (its writer's transaction began
//!   earlier, so its `archived_at` is below rows already read) is still
//!   inside the next run's window as long as it commits less than `lookback`
//!   after the high-water mark passed it; the `seen` table makes re-listed
//!   rows a no-op, so nothing is read twice;
//! - the mark is capped by the database's clock, so a row stamped in the
//!   future cannot push the window past rows still to come.
//!
//! The one limit is the look-back: a transaction that stays open longer than
//! `lookback` after later rows were read commits rows the window no longer
//! covers. The pipeline warns when late rows come within half of it.
//!
//! Nothing here logs or returns the URL (it could name a user and host only,
//! never a password: config refuses those), nor document content.

use std::collections::HashMap;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::OnceCell;

use super::Listed;
use crate::config::SqlSourceConfig;

/// A `sql` source: the table, its page size and look-back, and a lazily
/// connected pool of its own.
#[derive(Debug, Clone)]
pub struct SqlSource {
    name: String,
    /// The quoted table name, for SQL text (validated identifiers).
    table: String,
    lookback: Duration,
    page_size: u32,
    pool: PgPool,
    /// The `id` column's type, checked once: the keyset cursor and the
    /// locator compare ids in it, so that its index and ordering apply.
    id_type: Arc<OnceCell<String>>,
}

fn db(e: sqlx::Error) -> io::Error {
    match e {
        sqlx::Error::Io(e) => e,
        sqlx::Error::PoolTimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "the source database did not answer",
        ),
        other => io::Error::other(format!("source database: {other}")),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `archived_at` as nanoseconds since the epoch (saturating outside
/// 1677–2262): the `seen` table's mtime.
pub fn nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

impl SqlSource {
    /// Builds the source; reads the password file, connects nothing yet.
    pub fn new(name: &str, cfg: &SqlSourceConfig) -> io::Result<SqlSource> {
        // The URL is not repeated in the error: it names a user and host.
        let mut opts = PgConnectOptions::from_str(&cfg.url).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the source url is not a PostgreSQL URL",
            )
        })?;
        if opts.get_application_name().is_none() {
            opts = opts.application_name("regfeed");
        }
        if let Some(p) = &cfg.password {
            let bytes = crate::deliver::http::read_secret_file("sql source password", p)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid("sql source password is not UTF-8".into()))?;
            opts = opts.password(text.trim_end_matches(['\r', '\n']));
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(opts);
        let table = match &cfg.table {
            (Some(schema), name) => format!("\"{schema}\".\"{name}\""),
            (None, name) => format!("\"{name}\""),
        };
        Ok(SqlSource {
            name: name.to_owned(),
            table,
            lookback: cfg.lookback,
            page_size: cfg.page_size,
            pool,
            id_type: Arc::new(OnceCell::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the table can be read (readiness): a query that reads no row.
    pub async fn probe(&self) -> io::Result<()> {
        sqlx::query(&format!("SELECT 1 FROM {} LIMIT 0", self.table))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub fn page_size(&self) -> usize {
        self.page_size as usize
    }

    pub fn lookback(&self) -> Duration {
        self.lookback
    }

    /// The `id` column's type, after checking the table once.
    async fn id_type(&self) -> io::Result<&str> {
        self.id_type
            .get_or_try_init(|| self.inspect())
            .await
            .map(String::as_str)
    }

    /// Checks the table's shape: the columns the source reads, `NOT NULL`
    /// (a null would drop out of the keyset order unseen), and `id` unique
    /// (the cursor's tie-breaker). Warns when the `(archived_at, id)` index
    /// is missing. Returns the type of `id`.
    async fn inspect(&self) -> io::Result<String> {
        let cols = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attnum \
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&self.table)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if cols.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("table {} does not exist or is not visible", self.table),
            ));
        }
        let col = |name: &str| {
            cols.iter()
                .find(|r| r.get::<String, _>(0) == name)
                .map(|r| {
                    (
                        r.get::<String, _>(1),
                        r.get::<bool, _>(2),
                        r.get::<i16, _>(3),
                    )
                })
        };
        let mut attnum = HashMap::new();
        for (name, want) in [
            ("id", None),
            ("archived_at", Some("timestamp with time zone")),
            ("document", Some("bytea")),
        ] {
            let Some((ty, not_null, num)) = col(name) else {
                return Err(invalid(format!(
                    "table {} has no column {name}",
                    self.table
                )));
            };
            if let Some(want) = want
                && ty != want
            {
                return Err(invalid(format!(
                    "table {}: column {name} is {ty}, not {want}",
                    self.table
                )));
            }
            if !not_null {
                return Err(invalid(format!(
                    "table {}: column {name} must be NOT NULL",
                    self.table
                )));
            }
            attnum.insert(name, num);
        }
        let (unique, ordered): (bool, bool) = sqlx::query_as(
            "SELECT \
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                       AND i.indpred IS NULL AND i.indnkeyatts = 1 AND i.indkey[0] = $2), \
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) \
                       AND i.indpred IS NULL AND i.indnkeyatts >= 2 AND i.indkey[0] = $3 AND i.indkey[1] = $2)",
        )
        .bind(&self.table)
        .bind(attnum["id"])
        .bind(attnum["archived_at"])
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        if !unique {
            return Err(invalid(format!(
                "table {}: id must be unique (a primary key or a unique index on id alone)",
                self.table
            )));
        }
        if !ordered {
            tracing::warn!(source = %self.name, "The source table has no index on (archived_at, id): every page is a sort of the look-back window.");
        }
        col("id")
            .map(|(ty, _, _)| ty)
            .ok_or_else(|| invalid("id column vanished".into()))
    }

    /// Starts a listing: every row at or above `min(high_water, now) −
    /// lookback` (the whole table when nothing was seen yet), page by page.
    pub async fn scan(&self, high_water_ns: Option<i64>) -> io::Result<Scan<'_>> {
        let id_type = self.id_type().await?.to_owned();
        let from = match high_water_ns {
            None => None,
            Some(ns) => {
                let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)?;
                let mark = DateTime::from_timestamp_nanos(ns).min(now);
                let back = TimeDelta::from_std(self.lookback).unwrap_or(TimeDelta::MAX);
                // Below the earliest representable time: read everything.
                mark.checked_sub_signed(back)
            }
        };
        Ok(Scan {
            src: self,
            id_type,
            from,
            after: None,
            done: false,
        })
    }

    /// Reads documents by id, in the order asked; a row no longer in the
    /// table is `NotFound`. Fails as a whole when the query does.
    pub async fn fetch(&self, ids: &[&str]) -> io::Result<Vec<io::Result<Vec<u8>>>> {
        let id_type = self.id_type().await?;
        // Cast to the column's type so that the unique index on id applies.
        let sql = format!(
            "SELECT id::text, document FROM {} WHERE id = ANY(CAST($1 AS text[])::{id_type}[])",
            self.table
        );
        let rows = sqlx::query(&sql)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut by_id: HashMap<String, Vec<u8>> = rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                by_id.remove(*id).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the row is no longer in the table")
                })
            })
            .collect())
    }

    /// The locator: one document by row id.
    pub async fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        self.fetch(&[id])
            .await?
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("fetch answered nothing")))
    }

    /// Warns when a row arrived `late_ns` after the high-water mark had
    /// passed its `archived_at`, and that is more than half the look-back.
    pub fn note_lateness(&self, late_ns: i64) {
        let late = Duration::from_nanos(u64::try_from(late_ns).unwrap_or(0));
        if late > self.lookback / 2 {
            tracing::warn!(
                source = %self.name,
                late_seconds = late.as_secs_f64(),
                lookback_seconds = self.lookback.as_secs_f64(),
                "A row committed late, near the source's lookback; one later than the lookback would be missed: raise it."
            );
        }
    }
}

/// One listing of a `sql` source, page by page in `(archived_at, id)` order.
#[derive(Debug)]
pub struct Scan<'a> {
    src: &'a SqlSource,
    id_type: String,
    from: Option<DateTime<Utc>>,
    /// The keyset cursor: the last row listed.
    after: Option<(DateTime<Utc>, String)>,
    done: bool,
}

impl Scan<'_> {
    /// The next page of rows (id, size, `archived_at`), or `None` at the end.
    pub async fn next_page(&mut self) -> io::Result<Option<Vec<Listed>>> {
        if self.done {
            return Ok(None);
        }
        let head = format!(
            "SELECT id::text, archived_at, octet_length(document)::int8 FROM {}",
            self.src.table
        );
        let order = "ORDER BY archived_at, id LIMIT";
        let limit = i64::from(self.src.page_size);
        let rows = match (&self.after, self.from) {
            (Some((at, id)), _) => {
                let sql = format!(
                    "{head} WHERE (archived_at, id) > ($1, CAST($2 AS {ty})) {order} $3",
                    ty = self.id_type
                );
                sqlx::query(&sql)
                    .bind(at)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.src.pool)
                    .await
            }
            (None, Some(from)) => {
                sqlx::query(&format!("{head} WHERE archived_at >= $1 {order} $2"))
                    .bind(from)
                    .bind(limit)
                    .fetch_all(&self.src.pool)
                    .await
            }
            (None, None) => {
                sqlx::query(&format!("{head} {order} $1"))
                    .bind(limit)
                    .fetch_all(&self.src.pool)
                    .await
            }
        }
        .map_err(db)?;
        if rows.len() < self.src.page_size as usize {
            self.done = true;
        }
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get(0).map_err(db)?;
            let at: DateTime<Utc> = r.try_get(1).map_err(db)?;
            let size: i64 = r.try_get(2).map_err(db)?;
            page.push(Listed {
                size: u64::try_from(size).unwrap_or(0),
                mtime_ns: nanos(at),
                path: id.clone(),
            });
            self.after = Some((at, id));
        }
        Ok((!page.is_empty()).then_some(page))
    }
}
