//! The JSON Lines batch format and its reader.
//!
//! One JSON object per line, each line ending in `\n` (LF), UTF-8, no BOM,
//! no header. Keys in fixed order: `record_id`, `op`, then the columns as
//! declared; every line has every key. Values are typed JSON: text as a
//! string (no formula guard: JSON is not opened by spreadsheets), integers
//! and numbers as JSON numbers (see [`crate::feed`] for their form), dates as
//! `"YYYY-MM-DD"` strings, booleans as `true`/`false`, null as `null`. A
//! retract row has `null` in every column. Strings are escaped as serde_json
//! does (non-ASCII written as UTF-8, not `\u` escapes).

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::NaiveDate;

use super::{
    Column, ColumnType, FeedError, Op, Row, RowCheck, RowCounts, Value, check_columns, format_date,
    format_number,
};

/// Streams rows as JSON Lines into `W`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    columns: Vec<Column>,
    /// `,"<name>":` for each column, escaped once.
    keys: Vec<String>,
    check: RowCheck,
    line: String,
}

fn json_string(s: &str) -> String {
    // Serialising a str cannot fail; the fallback is never taken.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, columns: Vec<Column>) -> Result<Self, FeedError> {
        check_columns(&columns)?;
        let keys = columns
            .iter()
            .map(|c| format!(",{}:", json_string(&c.name)))
            .collect();
        Ok(Writer {
            out,
            columns,
            keys,
            check: RowCheck::new(),
            line: String::new(),
        })
    }

    pub fn write_row(&mut self, row: &Row) -> Result<(), FeedError> {
        self.check.check(&self.columns, row)?;
        let line = &mut self.line;
        line.clear();
        line.push_str("{\"record_id\":");
        line.push_str(&json_string(&row.record_id));
        line.push_str(",\"op\":\"");
        line.push_str(row.op.as_str());
        line.push('"');
        for (i, key) in self.keys.iter().enumerate() {
            line.push_str(key);
            match (row.op, row.values.get(i)) {
                (Op::Upsert, Some(v)) => push_value(line, v),
                _ => line.push_str("null"),
            }
        }
        line.push_str("}\n");
        self.out.write_all(line.as_bytes())?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(W, RowCounts), FeedError> {
        self.out.flush()?;
        Ok((self.out, self.check.counts()))
    }
}

fn push_value(line: &mut String, v: &Value) {
    match v {
        Value::Null => line.push_str("null"),
        Value::Text(s) => line.push_str(&json_string(s)),
        Value::Integer(i) => line.push_str(&i.to_string()),
        Value::Number(x) => line.push_str(&format_number(*x)),
        Value::Date(d) => {
            line.push('"');
            line.push_str(&format_date(*d));
            line.push('"');
        }
        Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
    }
}

/// Reads a whole JSON Lines batch, checking every line's keys against
/// `columns`.
///
/// Lines are parsed as flat JSON objects (string, number, boolean or null
/// values: the shape the writer produces; nested values are refused). Number
/// tokens go through Rust's correctly rounded `f64`/`i64` parsing, so every
/// number the writer wrote reads back exactly.
pub fn read<R: BufRead>(r: R, columns: &[Column]) -> Result<Vec<Row>, FeedError> {
    let mut rows = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line_no = i as u64 + 1;
        let err = |reason: String| FeedError::Parse {
            line: line_no,
            reason,
        };
        let line = line.map_err(FeedError::Write)?;
        let obj = flat_object(&line).map_err(|r| err(r.into()))?;
        if obj.len() != columns.len() + 2 {
            return Err(err("keys do not match the declared columns".into()));
        }
        let Some(Token::String(record_id)) = obj.get("record_id") else {
            return Err(err("record_id is not a string".into()));
        };
        let op = match obj.get("op") {
            Some(Token::String(s)) => Op::parse(s),
            _ => None,
        }
        .ok_or_else(|| err("op is not upsert or retract".into()))?;
        let mut values = Vec::with_capacity(columns.len());
        for c in columns {
            let v = obj
                .get(&c.name)
                .ok_or_else(|| err(format!("column {} is missing", c.name)))?;
            let value = parse_value(v, c.ty)
                .ok_or_else(|| err(format!("column {} is not {}", c.name, c.ty.as_str())))?;
            values.push(value);
        }
        rows.push(match op {
            Op::Upsert => Row::upsert(record_id.clone(), values),
            Op::Retract => {
                if values.iter().any(|v| *v != Value::Null) {
                    return Err(err("retract row has values".into()));
                }
                Row::retract(record_id.clone())
            }
        });
    }
    Ok(rows)
}

/// A scalar JSON value, numbers kept as their text.
#[derive(Debug, PartialEq)]
enum Token {
    String(String),
    Number(String),
    Bool(bool),
    Null,
}

/// Parses a flat JSON object. Strings are unescaped by serde_json; number
/// tokens are checked against the JSON grammar's alphabet and kept as text.
fn flat_object(line: &str) -> Result<HashMap<String, Token>, &'static str> {
    let b = line.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n') {
            *i += 1;
        }
    };
    // The end (exclusive) of the JSON string starting at `start` (a quote).
    let string_end = |start: usize| -> Result<usize, &'static str> {
        let mut j = start + 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => return Ok(j + 1),
                _ => j += 1,
            }
        }
        Err("unterminated string")
    };
    let string = |s: &str| serde_json::from_str::<String>(s).map_err(|_| "invalid string");
    let mut out = HashMap::new();
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err("not a JSON object");
    }
    i += 1;
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            ws(&mut i);
            if b.get(i) != Some(&b'"') {
                return Err("expected a key");
            }
            let end = string_end(i)?;
            let key = string(&line[i..end])?;
            i = end;
            ws(&mut i);
            if b.get(i) != Some(&b':') {
                return Err("expected ':'");
            }
            i += 1;
            ws(&mut i);
            let token = match b.get(i) {
                Some(b'"') => {
                    let end = string_end(i)?;
                    let t = Token::String(string(&line[i..end])?);
                    i = end;
                    t
                }
                Some(_) => {
                    let start = i;
                    while i < b.len() && !matches!(b[i], b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
                    {
                        i += 1;
                    }
                    match &line[start..i] {
                        "null" => Token::Null,
                        "true" => Token::Bool(true),
                        "false" => Token::Bool(false),
                        t if !t.is_empty()
                            && t.bytes()
                                .all(|c| c.is_ascii_digit() || b"-+.eE".contains(&c)) =>
                        {
                            Token::Number(t.to_string())
                        }
                        _ => return Err("unsupported value (only flat scalars)"),
                    }
                }
                None => return Err("truncated object"),
            };
            if out.insert(key, token).is_some() {
                return Err("duplicate key");
            }
            ws(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err("expected ',' or '}'"),
            }
        }
    }
    ws(&mut i);
    if i != b.len() {
        return Err("text after the object");
    }
    Ok(out)
}

fn parse_value(v: &Token, ty: ColumnType) -> Option<Value> {
    Some(match (v, ty) {
        (Token::Null, _) => Value::Null,
        (Token::String(s), ColumnType::Text) => Value::Text(s.clone()),
        (Token::Number(n), ColumnType::Integer) => Value::Integer(n.parse().ok()?),
        (Token::Number(n), ColumnType::Number) => {
            let x: f64 = n.parse().ok()?;
            if !x.is_finite() {
                return None;
            }
            Value::Number(x)
        }
        (Token::String(s), ColumnType::Date) if s.len() == 10 => {
            Value::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?)
        }
        (Token::Bool(b), ColumnType::Boolean) => Value::Bool(*b),
        _ => return None,
    })
}
