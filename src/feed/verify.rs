//! `regfeed feed verify DIR`: a receiver's offline check of a folder of
//! received batches (DESIGN §5, docs/FEED-FORMAT.md). It needs no
//! configuration, key or mapping: it checks what the format promises.
//!
//! Per batch: the manifest parses and follows format 1 (every schema rule:
//! required keys, no unknown keys, enums, patterns, RFC 3339 UTC times,
//! plus the chain rules of [`Manifest::validate`]); its file name matches
//! its feed and seq; the data file it names exists with the stated byte
//! count and SHA-256; its rows count to `records`, `upserts` and `retracts`;
//! every `record_id` is 64 lowercase hex digits and at most once per batch;
//! every `op` is `upsert` or `retract`; a retract carries no values.
//! Per feed: sequences are gapless from 1, each manifest's
//! `previous_manifest_sha256` is the SHA-256 of the previous manifest file,
//! and a retract of an id never upserted in an earlier batch is flagged.
//! Stray data files without a manifest are flagged too.
//!
//! Problems name the file and what is wrong; never a row's values.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::csv::RecordReader;
use super::manifest::{Manifest, MediaType};

/// One thing wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file name (within DIR) the problem is in or about.
    pub file: String,
    pub problem: String,
}

/// What `verify_dir` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Manifests that parsed.
    pub batches: usize,
    /// Feeds seen, with their highest sequence.
    pub feeds: BTreeMap<String, u64>,
    pub records: u64,
    pub problems: Vec<Problem>,
}

struct Parsed {
    file: String,
    manifest: Manifest,
    sha256: String,
}

/// When `dir` is a folder of feed folders rather than one feed's folder (it
/// holds no manifest but holds folders, as a file-drop sink's parent does):
/// each feed folder, by name, checked as [`verify_dir`] checks one. `None`
/// for one feed's folder (or one that cannot be listed).
pub fn verify_tree(dir: &Path) -> Option<BTreeMap<String, VerifyReport>> {
    let mut folders = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if e.file_type().ok()?.is_dir() {
            folders.push(name);
        } else if name.ends_with(".manifest.json") {
            return None;
        }
    }
    if folders.is_empty() {
        return None;
    }
    folders.sort();
    Some(
        folders
            .into_iter()
            .map(|f| {
                let r = verify_dir(&dir.join(&f));
                (f, r)
            })
            .collect(),
    )
}

/// Checks every batch in `dir` (see the module docs).
pub fn verify_dir(dir: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    let problem = |r: &mut VerifyReport, file: &str, p: String| {
        r.problems.push(Problem {
            file: file.to_owned(),
            problem: p,
        })
    };
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            v.sort();
            v
        }
        Err(e) => {
            problem(&mut report, ".", format!("cannot list the folder: {e}"));
            return report;
        }
    };
    let mut claimed: HashSet<String> = HashSet::new();
    let mut by_feed: BTreeMap<String, Vec<Parsed>> = BTreeMap::new();
    for name in names.iter().filter(|n| n.ends_with(".manifest.json")) {
        claimed.insert(name.clone());
        let bytes = match std::fs::read(dir.join(name)) {
            Ok(b) => b,
            Err(e) => {
                problem(&mut report, name, format!("cannot read: {e}"));
                continue;
            }
        };
        let m = match Manifest::from_bytes(&bytes) {
            Ok(m) => m,
            Err(e) => {
                problem(
                    &mut report,
                    name,
                    format!("not a valid format-1 manifest: {e}"),
                );
                continue;
            }
        };
        for p in schema_extras(&bytes) {
            problem(&mut report, name, p);
        }
        let expected = super::manifest_file_name(&m.feed, m.seq);
        if *name != expected {
            problem(
                &mut report,
                name,
                format!(
                    "names feed {} seq {}, so it should be called {expected}",
                    m.feed, m.seq
                ),
            );
        }
        report.batches += 1;
        by_feed.entry(m.feed.clone()).or_default().push(Parsed {
            file: name.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            manifest: m,
        });
    }

    for (feed, mut batches) in by_feed {
        batches.sort_by_key(|b| b.manifest.seq);
        let mut upserted: HashSet<String> = HashSet::new();
        let mut prev: Option<&Parsed> = None;
        let mut expect_seq = 1u64;
        for b in &batches {
            let m = &b.manifest;
            if m.seq < expect_seq {
                problem(
                    &mut report,
                    &b.file,
                    format!("sequence {} appears twice", m.seq),
                );
            } else if m.seq > expect_seq {
                let missing = if m.seq - 1 == expect_seq {
                    format!("{expect_seq}")
                } else {
                    format!("{expect_seq}–{}", m.seq - 1)
                };
                problem(
                    &mut report,
                    &b.file,
                    format!("sequence gap: batch(es) {missing} of feed {feed} are missing"),
                );
            }
            expect_seq = m.seq + 1;
            match (prev, &m.previous_manifest_sha256) {
                (Some(p), Some(link)) if p.manifest.seq + 1 == m.seq && *link != p.sha256 => {
                    problem(
                        &mut report,
                        &b.file,
                        format!(
                            "previous_manifest_sha256 {link} is not the SHA-256 of {} ({})",
                            p.file, p.sha256
                        ),
                    )
                }
                _ => {}
            }
            prev = Some(b);

            claimed.insert(m.data.file.clone());
            check_data(dir, b, &mut upserted, &mut report);
        }
        report
            .feeds
            .insert(feed, batches.last().map_or(0, |b| b.manifest.seq));
    }

    for name in names.iter().filter(|n| !claimed.contains(*n)) {
        problem(&mut report, name, "no manifest names this file".into());
    }
    report
}

/// Schema rules serde does not enforce by type: RFC 3339 UTC times.
fn schema_extras(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return out;
    };
    for key in ["created_at", "sealed_at"] {
        match v.get(key).and_then(|t| t.as_str()) {
            Some(t) if t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok() => {}
            _ => out.push(format!("{key} is not an RFC 3339 UTC time (…Z)")),
        }
    }
    out
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One data row, schema-free: id, op, whether it has any value.
struct RawRow {
    record_id: String,
    op: String,
    has_values: bool,
}

fn check_data(dir: &Path, b: &Parsed, upserted: &mut HashSet<String>, report: &mut VerifyReport) {
    let m = &b.manifest;
    let file = m.data.file.clone();
    let mut problem = |p: String| {
        report.problems.push(Problem {
            file: file.clone(),
            problem: p,
        })
    };
    let path: PathBuf = dir.join(&m.data.file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problem(format!("missing (named by {})", b.file));
            return;
        }
        Err(e) => {
            problem(format!("cannot read: {e}"));
            return;
        }
    };
    if bytes.len() as u64 != m.data.bytes {
        problem(format!(
            "{} bytes, the manifest says {}",
            bytes.len(),
            m.data.bytes
        ));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != m.data.sha256 {
        problem(format!(
            "SHA-256 is {sha}, the manifest says {}",
            m.data.sha256
        ));
        return; // rows of a corrupt file prove nothing
    }
    let rows = match m.data.media_type {
        MediaType::Csv => csv_rows(&bytes),
        MediaType::Ndjson => jsonl_rows(&bytes),
        MediaType::Xml => Err("XML batches are not checked row by row yet".to_owned()),
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            problem(e);
            return;
        }
    };
    report.records += rows.len() as u64;
    let (mut ups, mut rets) = (0u64, 0u64);
    let mut ids: HashSet<&str> = HashSet::new();
    for (i, r) in rows.iter().enumerate() {
        let row = i + 1;
        if !is_hex64(&r.record_id) {
            problem(format!(
                "row {row}: record_id is not 64 lowercase hex digits"
            ));
        }
        if !ids.insert(&r.record_id) {
            problem(format!(
                "row {row}: record_id appears more than once in the batch"
            ));
        }
        match r.op.as_str() {
            "upsert" => {
                ups += 1;
                upserted.insert(r.record_id.clone());
            }
            "retract" => {
                rets += 1;
                if r.has_values {
                    problem(format!("row {row}: a retract carries values"));
                }
                if !upserted.contains(&r.record_id) {
                    problem(format!(
                        "row {row}: retracts a record_id no earlier batch upserted"
                    ));
                }
            }
            _ => problem(format!("row {row}: op is not upsert or retract")),
        }
    }
    if rows.len() as u64 != m.data.records {
        problem(format!(
            "{} rows, the manifest says records = {}",
            rows.len(),
            m.data.records
        ));
    }
    if ups != m.counts.upserts || rets != m.counts.retracts {
        problem(format!(
            "{ups} upserts and {rets} retracts, the manifest says {} and {}",
            m.counts.upserts, m.counts.retracts
        ));
    }
}

fn csv_rows(bytes: &[u8]) -> Result<Vec<RawRow>, String> {
    let mut r = RecordReader::new(bytes);
    let header = r
        .next_record()
        .map_err(|e| format!("CSV: {e}"))?
        .ok_or("CSV: no header row")?;
    let names: Vec<&str> = header.iter().map(|f| f.text.as_str()).collect();
    if names.first() != Some(&"record_id") || names.get(1) != Some(&"op") {
        return Err("CSV: the header does not start with record_id,op".into());
    }
    let mut rows = Vec::new();
    while let Some(rec) = r.next_record().map_err(|e| format!("CSV: {e}"))? {
        if rec.len() != header.len() {
            return Err(format!(
                "CSV line {}: {} fields, the header has {}",
                r.line(),
                rec.len(),
                header.len()
            ));
        }
        rows.push(RawRow {
            record_id: rec[0].text.clone(),
            op: rec[1].text.clone(),
            has_values: rec[2..].iter().any(|f| !f.text.is_empty() || f.quoted),
        });
    }
    Ok(rows)
}

fn jsonl_rows(bytes: &[u8]) -> Result<Vec<RawRow>, String> {
    let mut rows = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(|e| format!("JSON Lines: {e}"))?;
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)
            .map_err(|_| format!("JSON Lines line {}: not a JSON object", i + 1))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        rows.push(RawRow {
            record_id: s("record_id"),
            op: s("op"),
            has_values: v
                .iter()
                .any(|(k, x)| k != "record_id" && k != "op" && !x.is_null()),
        });
    }
    Ok(rows)
}
