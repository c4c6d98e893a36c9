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
pub fn read<R: BufRead>(r: R, columns: &[Column]) -> Result<Vec<Row>, FeedError> {
    let mut rows = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line_no = i as u64 + 1;
        let err = |reason: String| FeedError::Parse {
            line: line_no,
            reason,
        };
        let line = line.map_err(FeedError::Write)?;
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line).map_err(|_| err("not a JSON object".into()))?;
        if obj.len() != columns.len() + 2 {
            return Err(err("keys do not match the declared columns".into()));
        }
        let Some(serde_json::Value::String(record_id)) = obj.get("record_id") else {
            return Err(err("record_id is not a string".into()));
        };
        let op = obj
            .get("op")
            .and_then(|v| v.as_str())
            .and_then(Op::parse)
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

fn parse_value(v: &serde_json::Value, ty: ColumnType) -> Option<Value> {
    use serde_json::Value as J;
    Some(match (v, ty) {
        (J::Null, _) => Value::Null,
        (J::String(s), ColumnType::Text) => Value::Text(s.clone()),
        (J::Number(n), ColumnType::Integer) => Value::Integer(n.as_i64()?),
        (J::Number(n), ColumnType::Number) => Value::Number(n.as_f64()?),
        (J::String(s), ColumnType::Date) if s.len() == 10 => {
            Value::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?)
        }
        (J::Bool(b), ColumnType::Boolean) => Value::Bool(*b),
        _ => return None,
    })
}
