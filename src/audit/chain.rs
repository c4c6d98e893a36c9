//! The hash chain: the canonical encoding of an entry, appending in the
//! caller's transaction, the head, and verification.
//!
//! # Canonical encoding and hash
//! An entry's `hash` is the lowercase hex SHA-256 of the UTF-8 bytes of
//!
//! ```text
//! {"at":AT,"data":DATA,"feed":FEED,"kind":KIND,"prev":PREV,"seq":SEQ}
//! ```
//!
//! with no whitespace anywhere, keys in this (sorted) order, where `AT`,
//! `KIND` and `PREV` are JSON strings, `FEED` is a JSON string or `null`,
//! `SEQ` is the decimal integer without sign or leading zeros, and `DATA` is
//! the entry's `data` column **verbatim** (itself canonical JSON: object keys
//! sorted by byte order, no whitespace, integers only). Strings are escaped
//! as `serde_json` writes them: `"` and `\` backslash-escaped, `\b \f \n \r
//! \t` short forms, other control characters as `\u00XX` (lowercase hex),
//! everything else as UTF-8. The whole preimage is therefore itself canonical
//! JSON, and anyone can recompute a hash with a JSON library that sorts keys.
//! `PREV` of entry 1 is 64 zeros ([`GENESIS`]); of entry n it is the hash of
//! entry n − 1.

use std::fmt;

use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use crate::store::{Store, Tx};

use super::{AuditError, Entry};

/// The `prev_hash` of entry 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Entries read per page while verifying (memory stays bounded).
const VERIFY_PAGE: i64 = 2_000;

/// The end of the chain: how many entries, and the hash of the last one
/// ([`GENESIS`] when empty). Logged after every batch; the outside anchor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Head {
    pub entries: u64,
    pub hash: String,
}

/// One stored entry, as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub at: String,
    pub kind: String,
    pub feed: Option<String>,
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The canonical preimage of an entry (see the module docs).
pub fn canonical(
    seq: u64,
    at: &str,
    kind: &str,
    feed: Option<&str>,
    data: &str,
    prev: &str,
) -> String {
    format!(
        "{{\"at\":{},\"data\":{},\"feed\":{},\"kind\":{},\"prev\":{},\"seq\":{}}}",
        json_str(at),
        data,
        feed.map_or_else(|| "null".to_owned(), json_str),
        json_str(kind),
        json_str(prev),
        seq
    )
}

/// The hash of an entry: lowercase hex SHA-256 of [`canonical`].
pub fn entry_hash(
    seq: u64,
    at: &str,
    kind: &str,
    feed: Option<&str>,
    data: &str,
    prev: &str,
) -> String {
    hex::encode(Sha256::digest(
        canonical(seq, at, kind, feed, data, prev).as_bytes(),
    ))
}

/// A JSON value as canonical text: object keys sorted by byte order, no
/// whitespace. Does not depend on `serde_json`'s `preserve_order` feature.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_str(k));
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const HEAD_SQL: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";

/// The head from the last entry's (seq, hash), or the genesis.
fn head_of(last: Option<(i64, String)>) -> Head {
    match last {
        Some((seq, hash)) => Head {
            entries: u64::try_from(seq).unwrap_or(0),
            hash,
        },
        None => Head {
            entries: 0,
            hash: GENESIS.to_owned(),
        },
    }
}

async fn last(tx: &mut Tx) -> Result<Head, AuditError> {
    let q = tx.builder(HEAD_SQL);
    let row = tx.fetch_optional(q).await?;
    Ok(head_of(row.map(|r| (r.get(0), r.get(1)))))
}

/// Appends `entries` in order, in the caller's transaction, after the head
/// as that transaction sees it; returns the new head.
///
/// The first statement is a write, so a transaction that has not written yet
/// takes SQLite's write lock (waiting out the busy timeout) before it reads
/// the head: two appenders never chain onto the same entry.
pub async fn append(tx: &mut Tx, entries: &[Entry]) -> Result<Head, AuditError> {
    // PostgreSQL writers hold the store's write lock already; the table
    // lock also keeps out any writer that does not.
    let lock = match tx.backend() {
        crate::store::Backend::Postgres => "LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE",
        crate::store::Backend::Sqlite => "UPDATE audit SET seq = seq WHERE seq < 0",
    };
    let q = tx.builder(lock);
    tx.execute(q).await?;
    let mut head = last(tx).await?;
    if entries.is_empty() {
        return Ok(head);
    }
    let at = now();
    for e in entries {
        let seq = head.entries + 1;
        let (kind, feed, data) = e.parts()?;
        let hash = entry_hash(seq, &at, kind, feed.as_deref(), &data, &head.hash);
        let mut q = tx.builder(
            "INSERT INTO audit (seq, at, kind, feed, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        q.bind(
            i64::try_from(seq).map_err(|_| AuditError::Other("audit sequence overflow".into()))?,
        )
        .bind(&at)
        .bind(kind)
        .bind(feed.as_deref())
        .bind(&data)
        .bind(&head.hash)
        .bind(&hash);
        tx.execute(q).await?;
        head = Head { entries: seq, hash };
    }
    Ok(head)
}

/// Appends `entries` in a transaction of their own.
pub async fn record(store: &Store, entries: &[Entry]) -> Result<Head, AuditError> {
    let mut tx = store.begin().await?;
    let head = append(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(head)
}

/// The current head, as stored (not verified).
pub async fn head(pool: &AnyPool) -> Result<Head, AuditError> {
    let row = sqlx::query(HEAD_SQL).fetch_optional(pool).await?;
    Ok(head_of(row.map(|r| (r.get(0), r.get(1)))))
}

/// Stored entries with `seq > after`, at most `limit`, in order.
pub async fn page(pool: &AnyPool, after: u64, limit: i64) -> Result<Vec<StoredEntry>, AuditError> {
    let rows = sqlx::query(
        "SELECT seq, at, kind, feed, data, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(stored).collect())
}

pub(crate) fn stored(r: sqlx::any::AnyRow) -> StoredEntry {
    StoredEntry {
        // A negative seq is tampering; u64::MAX never matches the expected seq.
        seq: u64::try_from(r.get::<i64, _>(0)).unwrap_or(u64::MAX),
        at: r.get(1),
        kind: r.get(2),
        feed: r.get(3),
        data: r.get(4),
        prev_hash: r.get(5),
        hash: r.get(6),
    }
}

/// What is wrong with the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The entry's content does not hash to its stored hash (edited, or
    /// moved to another position).
    HashMismatch,
    /// The entry's `prev_hash` is not the hash of the entry before it.
    PrevLinkBroken,
    /// Entry `seq` is missing: the next entry found has `found`.
    SeqGap { found: u64 },
    /// The trail has fewer entries than the anchor says it had.
    CountBelowAnchor { expected: u64, found: u64 },
    /// The anchor's head hash is not the hash of entry `seq` (or, with no
    /// expected count, of any entry).
    HeadDiffers {
        expected: String,
        found: Option<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HashMismatch => f.write_str("hash mismatch (the entry was changed or moved)"),
            Problem::PrevLinkBroken => {
                f.write_str("prev link broken (does not chain onto the entry before it)")
            }
            Problem::SeqGap { found } => {
                write!(f, "missing (seq gap: the next entry found is {found})")
            }
            Problem::CountBelowAnchor { expected, found } => write!(
                f,
                "missing (the trail has {found} entries; the anchor says {expected}: its tail was cut)"
            ),
            Problem::HeadDiffers { expected, found } => match found {
                Some(h) => write!(
                    f,
                    "head differs from the anchor (anchor {expected}, found {h})"
                ),
                None => write!(
                    f,
                    "head differs from the anchor ({expected} is no entry's hash)"
                ),
            },
        }
    }
}

/// The first bad entry and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub problem: Problem,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.problem)
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Entries checked before the first bad one (all of them when intact).
    pub entries: u64,
    /// The hash of the last good entry.
    pub head: String,
    /// `None` when the trail is intact (and matches the anchor, if given).
    pub first_bad: Option<BadEntry>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Walks the whole trail from entry 1: every seq present in order, every
/// `prev_hash` the hash of the entry before, every hash recomputed. Then the
/// outside anchor, when given:
/// - `expect_entries = N`: the trail must have at least N entries (it may
///   have grown since the anchor was taken); fewer is a cut tail, reported
///   at the first missing seq.
/// - `expect_head = H`: with N, entry N's hash must be H; without N, some
///   entry's hash must be H. Since the chain checked out, H then pins every
///   entry up to it: a tail cut and regrown is caught here.
///
/// Reports the FIRST bad entry only. Store errors are `Err`; tampering is a
/// report.
pub async fn verify(
    pool: &AnyPool,
    expect_entries: Option<u64>,
    expect_head: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut n = 0u64;
    let mut head_seen: Option<String> = None;
    let anchor_at = expect_entries;
    let bad = |seq, problem| Some(BadEntry { seq, problem });
    loop {
        let rows = page(pool, n, VERIFY_PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for e in rows {
            let expected = n + 1;
            let first_bad = if e.seq != expected {
                bad(expected, Problem::SeqGap { found: e.seq })
            } else if e.prev_hash != prev {
                bad(e.seq, Problem::PrevLinkBroken)
            } else if entry_hash(
                e.seq,
                &e.at,
                &e.kind,
                e.feed.as_deref(),
                &e.data,
                &e.prev_hash,
            ) != e.hash
            {
                bad(e.seq, Problem::HashMismatch)
            } else {
                None
            };
            if first_bad.is_some() {
                return Ok(VerifyReport {
                    entries: n,
                    head: prev,
                    first_bad,
                });
            }
            if let Some(h) = expect_head
                && (anchor_at == Some(e.seq) || (anchor_at.is_none() && e.hash == h))
            {
                head_seen = Some(e.hash.clone());
            }
            n = e.seq;
            prev = e.hash;
        }
    }
    let mut report = VerifyReport {
        entries: n,
        head: prev,
        first_bad: None,
    };
    if let Some(expected) = expect_entries
        && n < expected
    {
        report.first_bad = bad(n + 1, Problem::CountBelowAnchor { expected, found: n });
        return Ok(report);
    }
    if let Some(h) = expect_head
        && head_seen.as_deref() != Some(h)
    {
        report.first_bad = bad(
            anchor_at.unwrap_or(n + 1),
            Problem::HeadDiffers {
                expected: h.to_owned(),
                found: head_seen,
            },
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preimage_is_canonical_json() {
        let c = canonical(
            1,
            "2026-01-01T00:00:00.000Z",
            "run_started",
            Some("f"),
            "{}",
            GENESIS,
        );
        let v: serde_json::Value = serde_json::from_str(&c).expect("json");
        assert_eq!(canonical_json(&v), c);
        let c = canonical(2, "t", "config", None, "{\"a\":[1,\"x\"]}", GENESIS);
        assert!(c.contains("\"feed\":null"));
        let v: serde_json::Value = serde_json::from_str(&c).expect("json");
        assert_eq!(canonical_json(&v), c);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": "\n", "y": [ {"d": null, "c": true} ]}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"y":[{"c":true,"d":null}],"z":"\n"},"b":1}"#
        );
    }

    #[test]
    fn a_known_hash_stays_the_same() {
        // Pins the encoding: changing it breaks every stored trail.
        let h = entry_hash(
            1,
            "2026-01-01T00:00:00.000Z",
            "run_started",
            Some("thl-diabetes"),
            "{}",
            GENESIS,
        );
        let pre = r#"{"at":"2026-01-01T00:00:00.000Z","data":{},"feed":"thl-diabetes","kind":"run_started","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":1}"#;
        assert_eq!(h, hex::encode(Sha256::digest(pre.as_bytes())));
    }
}
