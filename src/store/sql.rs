//! A query builder for the two backends. sqlx's own `QueryBuilder` writes
//! the placeholders of its database type, and for `Any` that is `?`, which
//! PostgreSQL does not accept. This one writes `$1, $2, ...`, which both
//! SQLite and PostgreSQL read, or, built [`QueryBuilder::for_backend`] on
//! SQLite, anonymous `?`: SQLite looks a named parameter up by a linear scan
//! of the statement's names, when it parses the statement and again when
//! sqlx binds each value, so a statement with n `$k` parameters cost O(n²)
//! (a profile of a feed run put 56 % of all CPU time there). It keeps the
//! same small API (`push`, `push_bind`, `separated`, `push_values`, `build`).
//!
//! Bulk statements go through [`statement_chunks`], so that their texts come
//! from a small fixed set and each is prepared once per connection.

use std::fmt::{Display, Write as _};

use super::exec::{ToVal, Val};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Arguments as _, Encode, Type};

pub struct QueryBuilder<'a> {
    sql: String,
    args: AnyArguments<'a>,
    /// The values, for a statement run on the run's own SQLite connection
    /// (`exec`): then `args` stays empty.
    vals: Vec<Val>,
    sqlite_connection: bool,
    n: usize,
    anonymous: bool,
    error: Option<sqlx::error::BoxDynError>,
}

/// Rows of one multi-row statement, at most.
pub const ROWS_PER_STATEMENT: usize = 128;
/// Items of one `IN (...)` list, at most.
pub const LIST_ITEMS: usize = 256;
/// The lengths an `IN (...)` list is padded to.
const LIST_SIZES: [usize; 5] = [1, 4, 16, 64, LIST_ITEMS];

/// `items` cut into slices of [`ROWS_PER_STATEMENT`] rows, the rest into
/// powers of two: a bulk statement's text (its number of value groups) is
/// one of eight, so each connection prepares it once and reuses it, instead
/// of parsing a new text for every call, and a remainder costs at most seven
/// statements.
pub fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// `items` cut into `IN (...)` lists of at most [`LIST_ITEMS`]; each is
/// bound padded (see [`padded_len`]), so one statement serves a whole list.
pub fn list_chunks<T>(items: &[T]) -> std::slice::Chunks<'_, T> {
    items.chunks(LIST_ITEMS)
}

/// The length a list of `n` items is padded to by repeating its last item
/// (which changes nothing an `IN` list matches): one of five, so that the
/// statement's text repeats and is prepared once.
pub fn padded_len(n: usize) -> usize {
    LIST_SIZES.into_iter().find(|&s| s >= n).unwrap_or(n)
}

impl std::fmt::Debug for QueryBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SQL only: bound values may be index pseudonyms.
        f.debug_struct("QueryBuilder")
            .field("sql", &self.sql)
            .field("binds", &self.n)
            .finish()
    }
}

impl<'a> QueryBuilder<'a> {
    pub fn new(init: impl Into<String>) -> QueryBuilder<'a> {
        QueryBuilder {
            sql: init.into(),
            args: AnyArguments::default(),
            vals: Vec::new(),
            sqlite_connection: false,
            n: 0,
            anonymous: false,
            error: None,
        }
    }

    /// A builder whose placeholders suit `backend`: anonymous `?` on SQLite
    /// (bound by position, in O(1) each), `$n` on PostgreSQL.
    pub fn for_backend(backend: super::Backend, init: impl Into<String>) -> QueryBuilder<'a> {
        let mut q = QueryBuilder::new(init);
        q.anonymous = backend == super::Backend::Sqlite;
        q
    }

    /// A builder for a statement run on the store's own SQLite connection
    /// ([`super::exec`]): anonymous `?`, values kept as [`Val`]s.
    pub(super) fn for_sqlite_connection(init: impl Into<String>) -> QueryBuilder<'a> {
        let mut q = QueryBuilder::new(init);
        q.anonymous = true;
        q.sqlite_connection = true;
        q
    }

    /// The text and values of a statement built [`Self::for_sqlite_connection`].
    pub(super) fn sqlite_parts(&self) -> (&str, &[Val]) {
        (&self.sql, &self.vals)
    }

    pub(super) fn is_for_sqlite_connection(&self) -> bool {
        self.sqlite_connection
    }

    /// Binds a value for a `$n` the statement's text already holds (the
    /// n-th value bound).
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, Any> + Type<Any> + ToVal,
    {
        if self.sqlite_connection {
            self.vals.push(value.to_val());
        } else if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self.n += 1;
        self
    }

    pub fn push(&mut self, sql: impl Display) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = write!(self.sql, "{sql}");
        self
    }

    /// Binds a value and writes its placeholder.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, Any> + Type<Any> + ToVal,
    {
        self.bind(value);
        if self.anonymous {
            self.sql.push('?');
        } else {
            let _ = write!(self.sql, "${}", self.n);
        }
        self
    }

    pub fn separated<'b>(&'b mut self, separator: &'static str) -> Separated<'b, 'a> {
        Separated {
            builder: self,
            separator,
            first: true,
        }
    }

    /// ` VALUES (..), (..)`: one parenthesised group per item, its values
    /// pushed by `push` through a [`Separated`].
    pub fn push_values<I, F>(&mut self, items: I, mut push: F) -> &mut Self
    where
        I: IntoIterator,
        F: FnMut(Separated<'_, 'a>, I::Item),
    {
        self.push(" VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(");
            push(self.separated(", "), item);
            self.push(")");
        }
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The query, taking the bound values (the builder is spent).
    pub fn build(&mut self) -> Result<Query<'_, Any, AnyArguments<'_>>, sqlx::Error> {
        if let Some(e) = self.error.take() {
            return Err(sqlx::Error::Encode(e));
        }
        let args = std::mem::take(&mut self.args);
        Ok(sqlx::query_with(self.sql.as_str(), args))
    }
}

#[derive(Debug)]
pub struct Separated<'b, 'a> {
    builder: &'b mut QueryBuilder<'a>,
    separator: &'static str,
    first: bool,
}

impl<'a> Separated<'_, 'a> {
    fn sep(&mut self) {
        if !self.first {
            self.builder.push(self.separator);
        }
        self.first = false;
    }

    pub fn push(&mut self, sql: impl Display) -> &mut Self {
        self.sep();
        self.builder.push(sql);
        self
    }

    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, Any> + Type<Any> + ToVal,
    {
        self.sep();
        self.builder.push_bind(value);
        self
    }

    pub fn push_unseparated(&mut self, sql: impl Display) -> &mut Self {
        self.builder.push(sql);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        let mut q = QueryBuilder::new("SELECT x FROM t WHERE a = ");
        q.push_bind(1_i64);
        q.push(" AND b IN (");
        let mut s = q.separated(", ");
        s.push_bind("x");
        s.push_bind("y");
        q.push(")");
        assert_eq!(q.sql(), "SELECT x FROM t WHERE a = $1 AND b IN ($2, $3)");
        let mut v = QueryBuilder::new("INSERT INTO t (a, b)");
        v.push_values([(1_i64, "p"), (2, "q")], |mut b, (x, y)| {
            b.push_bind(x).push_bind(y);
        });
        assert_eq!(v.sql(), "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)");
    }

    #[test]
    fn sqlite_placeholders_are_anonymous() {
        let mut q =
            QueryBuilder::for_backend(super::super::Backend::Sqlite, "INSERT INTO t (a, b)");
        q.push_values([(1_i64, "p"), (2, "q")], |mut b, (x, y)| {
            b.push_bind(x).push_bind(y);
        });
        assert_eq!(q.sql(), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        let mut p =
            QueryBuilder::for_backend(super::super::Backend::Postgres, "SELECT 1 WHERE a = ");
        p.push_bind(1_i64);
        assert_eq!(p.sql(), "SELECT 1 WHERE a = $1");
    }

    #[test]
    fn statement_sizes_come_from_a_fixed_set() {
        for len in [0usize, 1, 15, 16, 17, 127, 128, 129, 300, 1000] {
            let items: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&items).collect();
            assert!(
                chunks
                    .iter()
                    .all(|c| [128, 64, 32, 16, 8, 4, 2, 1].contains(&c.len())),
                "{len}"
            );
            assert!(
                chunks.len() <= len / 128 + 7,
                "{len}: {} statements",
                chunks.len()
            );
            let joined: Vec<usize> = chunks.concat();
            assert_eq!(joined, items, "{len}: every item once, in order");
        }
    }
}
