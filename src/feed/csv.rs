//! The CSV batch format and its documented reader.
//!
//! # Writing (RFC 4180)
//! - UTF-8 without a byte-order mark; every line, the last included, ends in
//!   CRLF. The first line is the header: `record_id,op,` and the column names.
//! - A field is quoted (`"`, inner `"` doubled) when it contains `,` `"` CR or
//!   LF, starts or ends with a space, or is an empty text value. Otherwise
//!   fields are bare.
//! - **Null** is an empty bare field, in every column type. In a text column
//!   the empty string is a quoted empty field `""`, so the two stay distinct
//!   (readers that ignore quoting will read both as empty).
//! - Integer, number, date and boolean fields are never quoted: numbers as
//!   described in [`crate::feed`] (no exponent, no thousands separator, `.`
//!   as decimal point), dates `YYYY-MM-DD`, booleans `true`/`false`.
//! - **Formula guard**: a text value that begins with `=`, `+`, `-`, `@`,
//!   `'`, tab or carriage return is written with one extra leading `'`, so no
//!   spreadsheet evaluates it. `'` itself is in the list so the guard can be
//!   undone without ambiguity.
//! - A retract row is `record_id,retract` followed by empty fields.
//!
//! # Reading ([`read`], [`Reader`])
//! RFC 4180 unquoting (CRLF or a bare LF ends a record outside quotes; a file
//! may end without a final line break), then per column: a bare empty field is
//! null; in a **text** column a value starting with `'` loses exactly that
//! one `'` (the writer added it: every `'`-initial text value gets one), and
//! `""` is the empty string; other types are parsed as written.

use std::io::{BufRead, Write};

use chrono::NaiveDate;

use super::{
    Column, ColumnType, FeedError, Op, Row, RowCheck, RowCounts, Value, check_columns, format_date,
    format_number,
};

/// First characters a spreadsheet may treat as a formula (plus `'`, the
/// guard itself).
pub const FORMULA_PREFIXES: [char; 7] = ['=', '+', '-', '@', '\'', '\t', '\r'];

/// Streams rows as CSV into `W`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    columns: Vec<Column>,
    check: RowCheck,
    line: String,
}

impl<W: Write> Writer<W> {
    /// Checks the columns and writes the header.
    pub fn new(mut out: W, columns: Vec<Column>) -> Result<Self, FeedError> {
        check_columns(&columns)?;
        let mut line = String::from("record_id,op");
        for c in &columns {
            line.push(',');
            line.push_str(&c.name);
        }
        line.push_str("\r\n");
        out.write_all(line.as_bytes())?;
        Ok(Writer {
            out,
            columns,
            check: RowCheck::new(),
            line,
        })
    }

    pub fn write_row(&mut self, row: &Row) -> Result<(), FeedError> {
        self.check.check(&self.columns, row)?;
        let line = &mut self.line;
        line.clear();
        line.push_str(&row.record_id);
        line.push(',');
        line.push_str(row.op.as_str());
        match row.op {
            Op::Retract => {
                for _ in &self.columns {
                    line.push(',');
                }
            }
            Op::Upsert => {
                for v in &row.values {
                    line.push(',');
                    push_value(line, v);
                }
            }
        }
        line.push_str("\r\n");
        self.out.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Flushes; returns the output and the row counts.
    pub fn finish(mut self) -> Result<(W, RowCounts), FeedError> {
        self.out.flush()?;
        Ok((self.out, self.check.counts()))
    }
}

fn push_value(line: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::Text(s) => push_text(line, s),
        Value::Integer(i) => line.push_str(&i.to_string()),
        Value::Number(x) => line.push_str(&format_number(*x)),
        Value::Date(d) => line.push_str(&format_date(*d)),
        Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
    }
}

/// Appends a text value: formula guard, then RFC 4180 quoting if needed.
fn push_text(line: &mut String, s: &str) {
    let guard = s.starts_with(FORMULA_PREFIXES);
    let quote = s.is_empty()
        || s.contains([',', '"', '\r', '\n'])
        || (!guard && s.starts_with(' '))
        || s.ends_with(' ');
    if quote {
        line.push('"');
    }
    if guard {
        line.push('\'');
    }
    if quote {
        for ch in s.chars() {
            if ch == '"' {
                line.push('"');
            }
            line.push(ch);
        }
        line.push('"');
    } else {
        line.push_str(s);
    }
}

/// One CSV field after RFC 4180 unquoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub text: String,
    /// The field was written in quotes (distinguishes `""` from empty).
    pub quoted: bool,
}

/// The RFC 4180 layer: yields records as fields, nothing typed.
#[derive(Debug)]
pub struct RecordReader<R> {
    r: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(r: R) -> Self {
        RecordReader {
            r,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The physical line the last record ended on (1-based).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next record, or `None` at the end of input.
    pub fn next_record(&mut self) -> Result<Option<Vec<Field>>, FeedError> {
        let mut fields = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        let mut after_quote = false;
        let mut started = false;
        loop {
            self.buf.clear();
            let n = self
                .r
                .read_until(b'\n', &mut self.buf)
                .map_err(FeedError::Write)?;
            if n == 0 {
                if in_quotes {
                    return Err(self.parse_err("quoted field not closed at end of file"));
                }
                if !started {
                    return Ok(None);
                }
                fields.push(self.field(cur, quoted)?);
                return Ok(Some(fields));
            }
            started = true;
            self.line += 1;
            let line = std::mem::take(&mut self.buf);
            let mut i = 0;
            while i < line.len() {
                let b = line[i];
                if in_quotes {
                    if b == b'"' {
                        if line.get(i + 1) == Some(&b'"') {
                            cur.push(b'"');
                            i += 2;
                            continue;
                        }
                        in_quotes = false;
                        after_quote = true;
                    } else {
                        cur.push(b);
                    }
                    i += 1;
                    continue;
                }
                match b {
                    b',' => {
                        fields.push(self.field(std::mem::take(&mut cur), quoted)?);
                        quoted = false;
                        after_quote = false;
                    }
                    b'\r' if line.get(i + 1) == Some(&b'\n') => {
                        fields.push(self.field(cur, quoted)?);
                        self.buf = line;
                        return Ok(Some(fields));
                    }
                    b'\n' => {
                        fields.push(self.field(cur, quoted)?);
                        self.buf = line;
                        return Ok(Some(fields));
                    }
                    _ if after_quote => {
                        return Err(self.parse_err("characters after a closing quote"));
                    }
                    b'"' if cur.is_empty() && !quoted => {
                        quoted = true;
                        in_quotes = true;
                    }
                    b'"' => return Err(self.parse_err("quote inside an unquoted field")),
                    b'\r' => return Err(self.parse_err("carriage return inside an unquoted field")),
                    _ => cur.push(b),
                }
                i += 1;
            }
            self.buf = line;
        }
    }

    fn field(&self, bytes: Vec<u8>, quoted: bool) -> Result<Field, FeedError> {
        let text = String::from_utf8(bytes).map_err(|_| self.parse_err("field is not UTF-8"))?;
        Ok(Field { text, quoted })
    }

    fn parse_err(&self, reason: &str) -> FeedError {
        FeedError::Parse {
            line: self.line,
            reason: reason.to_string(),
        }
    }
}

/// Reads a CSV batch back into rows, checking the header against `columns`.
#[derive(Debug)]
pub struct Reader<R> {
    records: RecordReader<R>,
    columns: Vec<Column>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(r: R, columns: Vec<Column>) -> Result<Self, FeedError> {
        let mut records = RecordReader::new(r);
        let header = records.next_record()?.ok_or(FeedError::Parse {
            line: 1,
            reason: "no header row".into(),
        })?;
        let expected = ["record_id", "op"]
            .into_iter()
            .chain(columns.iter().map(|c| c.name.as_str()));
        if !header.iter().map(|f| f.text.as_str()).eq(expected) {
            return Err(FeedError::Parse {
                line: 1,
                reason: "header does not match the declared columns".into(),
            });
        }
        Ok(Reader { records, columns })
    }

    fn row(&self, fields: Vec<Field>) -> Result<Row, FeedError> {
        let line = self.records.line();
        let err = |reason: String| FeedError::Parse { line, reason };
        if fields.len() != self.columns.len() + 2 {
            return Err(err(format!(
                "{} fields, expected {}",
                fields.len(),
                self.columns.len() + 2
            )));
        }
        let mut it = fields.into_iter();
        let record_id = it.next().map(|f| f.text).unwrap_or_default();
        let op_text = it.next().map(|f| f.text).unwrap_or_default();
        let op = Op::parse(&op_text).ok_or_else(|| err("op is not upsert or retract".into()))?;
        if op == Op::Retract {
            if it.any(|f| !f.text.is_empty() || f.quoted) {
                return Err(err("retract row has values".into()));
            }
            return Ok(Row::retract(record_id));
        }
        let values = it
            .zip(&self.columns)
            .map(|(f, c)| parse_value(f, c).map_err(|r| err(format!("column {}: {r}", c.name))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Row::upsert(record_id, values))
    }
}

fn parse_value(f: Field, c: &Column) -> Result<Value, &'static str> {
    if f.text.is_empty() && !f.quoted {
        return Ok(Value::Null);
    }
    let t = f.text;
    match c.ty {
        ColumnType::Text => Ok(Value::Text(match t.strip_prefix('\'') {
            Some(rest) => rest.to_string(),
            None => t,
        })),
        ColumnType::Integer => t
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| "not an integer"),
        ColumnType::Number => match t.parse::<f64>() {
            Ok(x)
                if x.is_finite() && t.bytes().all(|b| b.is_ascii_digit() || b"-.".contains(&b)) =>
            {
                Ok(Value::Number(x))
            }
            _ => Err("not a plain decimal number"),
        },
        ColumnType::Date => {
            if t.len() != 10 {
                return Err("not a YYYY-MM-DD date");
            }
            NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .map(Value::Date)
                .map_err(|_| "not a YYYY-MM-DD date")
        }
        ColumnType::Boolean => match t.as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("not true or false"),
        },
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Row, FeedError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.records.next_record() {
            Ok(None) => None,
            Ok(Some(fields)) => Some(self.row(fields)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Reads a whole CSV batch (see the module docs). For large files iterate a
/// [`Reader`] instead.
pub fn read<R: BufRead>(r: R, columns: &[Column]) -> Result<Vec<Row>, FeedError> {
    Reader::new(r, columns.to_vec())?.collect()
}
