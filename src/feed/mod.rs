//! Batch files (DESIGN §5): the row model, the CSV and JSON Lines writers
//! (and their documented readers), manifests, and sealing a batch's data file
//! into a directory.
//!
//! This module owns bytes on disk and their digests. It does not decide which
//! rows go in a batch, does not deliver, and never puts a value into an error
//! message or a `Debug` string: errors name the row number and column only,
//! and [`Value`]'s `Debug` hides text and dates.
//!
//! # Rows
//! Every row is `record_id` (64 lowercase hex digits, at most once per
//! batch), `op` (`upsert` or `retract`), then the mapping's [`Column`]s in
//! declared order. An upsert carries one [`Value`] per column, each either
//! `Null` or of the column's type. A retract carries no values (any it has are
//! ignored): its columns are written empty (CSV) or `null` (JSON Lines).
//!
//! Column names match `[A-Za-z_][A-Za-z0-9_.-]*`, are unique, and are not
//! `record_id` or `op`; so the header never needs quoting.
//!
//! # Numbers
//! Both formats write numbers the same way: integers in decimal; `Number`s in
//! the shortest decimal that reads back as the same `f64`, never with an
//! exponent (Rust's `Display` for `f64`: `0.1`, `3` for 3.0, `1000000` for 1e6,
//! `0.000001` for 1e-6), `-0` written `0`. NaN and infinities are refused.
//! Dates are `YYYY-MM-DD`, years 0000–9999; booleans `true`/`false`.

pub mod csv;
pub mod durable;
pub mod jsonl;
pub mod manifest;
pub mod verify;

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

pub use manifest::{Manifest, MediaType};

/// A column's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Number,
    Date,
    Boolean,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Number => "number",
            ColumnType::Date => "date",
            ColumnType::Boolean => "boolean",
        }
    }
}

/// One output column: name and type, as the mapping declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

impl Column {
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }
}

/// One cell. `Debug` hides `Text` and `Date` contents (they may be a hetu,
/// a pseudonym or a birth date).
#[derive(Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Integer(i64),
    Number(f64),
    Date(NaiveDate),
    Bool(bool),
}

impl Value {
    /// Whether this value may stand in a column of type `ty`.
    pub fn fits(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Value::Null, _)
                | (Value::Text(_), ColumnType::Text)
                | (Value::Integer(_), ColumnType::Integer)
                | (Value::Number(_), ColumnType::Number)
                | (Value::Date(_), ColumnType::Date)
                | (Value::Bool(_), ColumnType::Boolean)
        )
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Text(s) => write!(f, "Text(<redacted, {} bytes>)", s.len()),
            Value::Integer(i) => write!(f, "Integer({i})"),
            Value::Number(n) => write!(f, "Number({n})"),
            Value::Date(_) => f.write_str("Date(<redacted>)"),
            Value::Bool(b) => write!(f, "Bool({b})"),
        }
    }
}

/// What a row does to the register's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Upsert,
    Retract,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Retract => "retract",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "upsert" => Some(Op::Upsert),
            "retract" => Some(Op::Retract),
            _ => None,
        }
    }
}

/// One output row. `Debug` shows the record id (keyed) and hides values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub record_id: String,
    pub op: Op,
    pub values: Vec<Value>,
}

impl Row {
    pub fn upsert(record_id: impl Into<String>, values: Vec<Value>) -> Row {
        Row {
            record_id: record_id.into(),
            op: Op::Upsert,
            values,
        }
    }

    pub fn retract(record_id: impl Into<String>) -> Row {
        Row {
            record_id: record_id.into(),
            op: Op::Retract,
            values: Vec::new(),
        }
    }
}

/// The data file formats written today. XML is allowed by the manifest
/// schema but not implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    pub fn media_type(self) -> MediaType {
        match self {
            Format::Csv => MediaType::Csv,
            Format::Jsonl => MediaType::Ndjson,
        }
    }
}

/// Why a batch file could not be written or read. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing batch: {0}")]
    Write(#[source] io::Error),
    #[error("invalid columns: {0}")]
    Columns(String),
    #[error("row {row}: {reason}")]
    Row { row: u64, reason: String },
    #[error("line {line}: {reason}")]
    Parse { line: u64, reason: String },
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("feed name {0:?} does not match ^[a-z0-9][a-z0-9-]{{0,62}}$")]
    FeedName(String),
}

impl From<io::Error> for FeedError {
    fn from(e: io::Error) -> Self {
        FeedError::Write(e)
    }
}

/// Whether `name` is a valid feed name (the manifest schema's pattern).
pub fn is_valid_feed_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `<feed>-<seq as 8 digits>.<csv|jsonl>`.
pub fn data_file_name(feed: &str, seq: u64, format: Format) -> String {
    format!("{feed}-{seq:08}.{}", format.extension())
}

/// `<feed>-<seq as 8 digits>.manifest.json`.
pub fn manifest_file_name(feed: &str, seq: u64) -> String {
    format!("{feed}-{seq:08}.manifest.json")
}

/// Checks a column list (see the module docs).
pub fn check_columns(columns: &[Column]) -> Result<(), FeedError> {
    let mut seen = HashSet::new();
    for c in columns {
        let b = c.name.as_bytes();
        let ok = !b.is_empty()
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !ok {
            return Err(FeedError::Columns(format!(
                "column name {:?} does not match [A-Za-z_][A-Za-z0-9_.-]*",
                c.name
            )));
        }
        if c.name == "record_id" || c.name == "op" {
            return Err(FeedError::Columns(format!(
                "column name {:?} is reserved",
                c.name
            )));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(FeedError::Columns(format!(
                "column {:?} is declared twice",
                c.name
            )));
        }
    }
    Ok(())
}

/// Per-batch row checks shared by both writers: record id shape and
/// uniqueness, arity and types, counts.
#[derive(Debug)]
struct RowCheck {
    ids: HashSet<[u8; 32]>,
    rows: u64,
    upserts: u64,
    retracts: u64,
}

impl RowCheck {
    fn new() -> RowCheck {
        RowCheck {
            ids: HashSet::new(),
            rows: 0,
            upserts: 0,
            retracts: 0,
        }
    }

    fn check(&mut self, columns: &[Column], row: &Row) -> Result<(), FeedError> {
        let n = self.rows + 1;
        let err = |reason: String| FeedError::Row { row: n, reason };
        let id = &row.record_id;
        let mut raw = [0u8; 32];
        if id.len() != 64
            || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            || hex::decode_to_slice(id, &mut raw).is_err()
        {
            return Err(err("record_id is not 64 lowercase hex digits".into()));
        }
        if !self.ids.insert(raw) {
            return Err(err("record_id appears twice in the batch".into()));
        }
        match row.op {
            Op::Upsert => {
                if row.values.len() != columns.len() {
                    return Err(err(format!(
                        "{} values for {} columns",
                        row.values.len(),
                        columns.len()
                    )));
                }
                for (c, v) in columns.iter().zip(&row.values) {
                    if !v.fits(c.ty) {
                        return Err(err(format!(
                            "column {} is {} but the value is not",
                            c.name,
                            c.ty.as_str()
                        )));
                    }
                    match v {
                        Value::Number(x) if !x.is_finite() => {
                            return Err(err(format!("column {} is not a finite number", c.name)));
                        }
                        Value::Date(d) if !(0..=9999).contains(&d.year()) => {
                            return Err(err(format!(
                                "column {} has a year outside 0000-9999",
                                c.name
                            )));
                        }
                        _ => {}
                    }
                }
                self.upserts += 1;
            }
            Op::Retract => self.retracts += 1,
        }
        self.rows += 1;
        Ok(())
    }

    fn counts(&self) -> RowCounts {
        RowCounts {
            records: self.rows,
            upserts: self.upserts,
            retracts: self.retracts,
        }
    }
}

/// Rows written by a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub records: u64,
    pub upserts: u64,
    pub retracts: u64,
}

/// Formats a finite `f64` as documented in the module docs.
pub(crate) fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    format!("{x}")
}

pub(crate) fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Passes bytes through to `inner`, counting them and hashing them with
/// SHA-256, so a batch's digest is known when its last byte is written.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the byte count and the lowercase hex SHA-256.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer of either format, chosen at run time.
#[derive(Debug)]
pub enum RowWriter<W: Write> {
    Csv(csv::Writer<W>),
    Jsonl(jsonl::Writer<W>),
}

impl<W: Write> RowWriter<W> {
    /// Starts a batch (the CSV header is written here).
    pub fn new(format: Format, out: W, columns: Vec<Column>) -> Result<Self, FeedError> {
        Ok(match format {
            Format::Csv => RowWriter::Csv(csv::Writer::new(out, columns)?),
            Format::Jsonl => RowWriter::Jsonl(jsonl::Writer::new(out, columns)?),
        })
    }

    pub fn write_row(&mut self, row: &Row) -> Result<(), FeedError> {
        match self {
            RowWriter::Csv(w) => w.write_row(row),
            RowWriter::Jsonl(w) => w.write_row(row),
        }
    }

    /// Flushes and returns the output and the counts.
    pub fn finish(self) -> Result<(W, RowCounts), FeedError> {
        match self {
            RowWriter::Csv(w) => w.finish(),
            RowWriter::Jsonl(w) => w.finish(),
        }
    }
}

/// A data file as sealed: what its manifest's `data` and `counts` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFileInfo {
    /// File name (no directory).
    pub file: String,
    pub media_type: MediaType,
    pub bytes: u64,
    pub records: u64,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub upserts: u64,
    pub retracts: u64,
}

/// Streams `rows` into `dir/<feed>-<seq>.<ext>`: written under a temporary
/// dot-name, fsynced, renamed into place (replacing an earlier seal of the
/// same batch), directory fsynced. Memory stays bounded whatever the row
/// count, apart from one 32-byte entry per record id for the uniqueness check.
pub fn write_data_file<I>(
    dir: &Path,
    feed: &str,
    seq: u64,
    format: Format,
    columns: &[Column],
    rows: I,
) -> Result<DataFileInfo, FeedError>
where
    I: IntoIterator<Item = Row>,
{
    if !is_valid_feed_name(feed) {
        return Err(FeedError::FeedName(feed.to_string()));
    }
    if seq == 0 {
        return Err(FeedError::Manifest("seq starts at 1".into()));
    }
    let file = data_file_name(feed, seq, format);
    let (counts, bytes, sha256) = durable::write_replacing(dir, &file, |f| {
        let out = io::BufWriter::with_capacity(256 * 1024, HashingWriter::new(f));
        let mut w = RowWriter::new(format, out, columns.to_vec())?;
        for row in rows {
            w.write_row(&row)?;
        }
        let (out, counts) = w.finish()?;
        let hashing = out
            .into_inner()
            .map_err(|e| FeedError::Write(e.into_error()))?;
        let (_, bytes, sha256) = hashing.finish();
        Ok((counts, bytes, sha256))
    })?;
    Ok(DataFileInfo {
        file,
        media_type: format.media_type(),
        bytes,
        records: counts.records,
        sha256,
        upserts: counts.upserts,
        retracts: counts.retracts,
    })
}

/// Validates `manifest` and writes it as `dir/<feed>-<seq>.manifest.json`
/// (temporary name, fsync, rename, directory fsync). Returns the lowercase
/// hex SHA-256 of the bytes written: the next batch's
/// `previous_manifest_sha256`.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<String, FeedError> {
    let bytes = manifest.to_bytes()?;
    let name = manifest_file_name(&manifest.feed, manifest.seq);
    durable::write_replacing(dir, &name, |f| {
        let mut f = f;
        f.write_all(&bytes)?;
        Ok(())
    })?;
    Ok(sha256_hex(&bytes))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
