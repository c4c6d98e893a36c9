//! How a transaction's statements run on each backend.
//!
//! On PostgreSQL through sqlx (its `Any` driver). On SQLite through a
//! connection of our own (rusqlite) that the run's thread drives directly:
//! each statement text is prepared once per connection and reused (the bulk
//! statements come from a small fixed set, `sql::statement_chunks`), values
//! are bound by position with no conversion layer, and no statement crosses
//! to another thread and back. sqlx's SQLite driver, behind `Any`, copied
//! every bound value twice and handed every statement to its worker thread;
//! a profile of a feed run put a third of the store's time there.
//!
//! [`Val`] is a bound or read value; [`Row`] a result row of either backend,
//! read with the same `get::<T>(i)`.

use std::borrow::Cow;
use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::Any;
use sqlx::any::AnyRow;

/// A value bound to, or read from, a SQLite statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Real(x) => ToSqlOutput::Borrowed(ValueRef::Real(*x)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// A Rust value as a SQLite value (what sqlx's encoders would bind).
pub trait ToVal {
    fn to_val(&self) -> Val;
}

impl ToVal for i64 {
    fn to_val(&self) -> Val {
        Val::Int(*self)
    }
}

impl ToVal for i32 {
    fn to_val(&self) -> Val {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for bool {
    fn to_val(&self) -> Val {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for f64 {
    fn to_val(&self) -> Val {
        Val::Real(*self)
    }
}

impl ToVal for str {
    fn to_val(&self) -> Val {
        Val::Text(self.to_owned())
    }
}

impl ToVal for String {
    fn to_val(&self) -> Val {
        Val::Text(self.clone())
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> Val {
        (**self).to_val()
    }
}

impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val {
        self.as_ref().map_or(Val::Null, ToVal::to_val)
    }
}

/// A SQLite value as a Rust value. Like sqlx's `Row::get`, a value of
/// another type is a programming error and panics (naming both).
pub trait FromVal: Sized {
    fn from_val(v: &Val) -> Self;
}

fn mismatch(v: &Val, want: &str) -> ! {
    let got = match v {
        Val::Null => "NULL",
        Val::Int(_) => "INTEGER",
        Val::Real(_) => "REAL",
        Val::Text(_) => "TEXT",
    };
    panic!("store: a {got} column read as {want}")
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Self {
        match v {
            Val::Int(i) => *i,
            _ => mismatch(v, "an integer"),
        }
    }
}

impl FromVal for f64 {
    fn from_val(v: &Val) -> Self {
        match v {
            Val::Real(x) => *x,
            Val::Int(i) => *i as f64,
            _ => mismatch(v, "a number"),
        }
    }
}

impl FromVal for bool {
    fn from_val(v: &Val) -> Self {
        i64::from_val(v) != 0
    }
}

impl FromVal for String {
    fn from_val(v: &Val) -> Self {
        match v {
            Val::Text(s) => s.clone(),
            _ => mismatch(v, "text"),
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Self {
        match v {
            Val::Null => None,
            v => Some(T::from_val(v)),
        }
    }
}

/// A result row of either backend.
pub enum Row {
    Any(AnyRow),
    Lite(Vec<Val>),
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: they may be index pseudonyms.
        f.write_str("Row")
    }
}

impl Row {
    /// Column `i` as a `T`; panics when the column's type is not `T`'s (as
    /// sqlx's `Row::get` does).
    pub fn get<T>(&self, i: usize) -> T
    where
        T: FromVal + for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
    {
        match self {
            Row::Any(r) => sqlx::Row::get(r, i),
            Row::Lite(v) => T::from_val(&v[i]),
        }
    }
}

/// Prepared statements kept per SQLite connection: every bulk statement's
/// text (`sql::statement_chunks` sizes × tables) and every other statement
/// of a run fit, so each is parsed once.
const STATEMENT_CACHE: usize = 256;

/// Page cache of the run's writing connection, KiB (as the pool's): a
/// chunk's writes touch more index pages than SQLite's default 2 MiB.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// Page cache of the connection for bulk reads, KiB: it reads a listing's
/// `seen` rows and a batch's rows once each, in key order.
pub const READER_CACHE_KIB: i64 = 2 * 1024;

/// Opens a connection of the run's to the SQLite store at `path`, set up
/// as the pool's connections are, with a page cache of `cache_kib`.
pub fn open_sqlite(path: &Path, cache_kib: i64) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A short busy timeout: `Store::begin_run` waits for the write lock
    // itself, between attempts, instead of blocking its thread in SQLite.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA busy_timeout = 20; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -{cache_kib}; PRAGMA temp_store = MEMORY;"
    ))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// `$n` placeholders (the SQL both backends read) as SQLite's `?n`: SQLite
/// takes `$n` for a *named* parameter, numbered by first appearance.
fn sqlite_text(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Runs a statement that returns no rows; the number of rows it changed.
pub fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    vals: &[Val],
) -> rusqlite::Result<u64> {
    let mut st = conn.prepare_cached(&sqlite_text(sql))?;
    let n = st.execute(rusqlite::params_from_iter(vals))?;
    Ok(n as u64)
}

/// Runs a statement and reads every row it returns.
pub fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    vals: &[Val],
) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare_cached(&sqlite_text(sql))?;
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(vals))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            v.push(match r.get_ref(i)? {
                ValueRef::Null => Val::Null,
                ValueRef::Integer(i) => Val::Int(i),
                ValueRef::Real(x) => Val::Real(x),
                ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Val::Text(String::from_utf8_lossy(b).into_owned()),
            });
        }
        out.push(Row::Lite(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_placeholders_become_sqlites() {
        assert_eq!(
            sqlite_text("UPDATE t SET a = $2 WHERE b = $1 AND c = '$'"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = '$'"
        );
        assert!(matches!(sqlite_text("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c REAL)")
            .expect("table");
        sqlite_execute(
            &conn,
            "INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6)",
            &[
                7_i64.to_val(),
                "x".to_val(),
                1.5_f64.to_val(),
                None::<i64>.to_val(),
                Some("y".to_owned()).to_val(),
                true.to_val(),
            ],
        )
        .expect("insert");
        let rows = sqlite_query(&conn, "SELECT a, b, c FROM t ORDER BY rowid", &[]).expect("rows");
        assert_eq!(rows[0].get::<i64>(0), 7);
        assert_eq!(rows[0].get::<String>(1), "x");
        assert_eq!(rows[0].get::<f64>(2), 1.5);
        assert_eq!(rows[1].get::<Option<i64>>(0), None);
        assert_eq!(rows[1].get::<Option<String>>(1).as_deref(), Some("y"));
    }
}
