//! Parsing an import of policy inputs (CSV with a header row, or JSON Lines)
//! into store rows keyed by index pseudonym. The hetu is read from the file,
//! turned into the index pseudonym at once and never kept, echoed or put in
//! an error: a bad row is reported by line and column with the reason.
//!
//! Columns (CSV header names = JSON keys; unknown columns are refused):
//!
//! | column | kinds | meaning |
//! |---|---|---|
//! | `kind` | all | `objection` (default), `restriction`, `denial`, `turvakielto` |
//! | `hetu` | all | the person (validated; test range in tests) |
//! | `made_to` | objection | a configured controller id, or `findata` |
//! | `purposes` | objection | `all`, or purposes separated by `;` (JSON: an array) |
//! | `received` | objection | when it was received |
//! | `effective_from` | objection, denial | from when it counts (a denial snapshot's time) |
//! | `withdrawn` | objection | when it was withdrawn (empty: in force) |
//! | `controller` | restriction | a configured controller id (empty: every controller) |
//! | `start`, `end` | restriction | the restriction's period (`end` empty: open) |
//! | `service_event`, `provider`, `all_registers` | denial | one denial; all denial rows of a person in one import form one snapshot |
//! | `none_valid` | denial | `true`: the snapshot withdraws every earlier denial |
//! | `since`, `until` | turvakielto | the flag's period |
//! | `source`, `reference` | all | where it came from (free text is refused: identifiers only) |
//!
//! Times are RFC 3339 (`2026-11-01T08:00:00Z`) or a date (`2026-11-01`,
//! meaning 00:00 UTC).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{Config, Controller, Purpose};
use crate::decode::hetu::Hetu;
use crate::identity::{self, Key};
use crate::store::{DenialRow, DenialSnapshot, FlagRow, ObjectionRow, RestrictionRow};

const COLUMNS: &[&str] = &[
    "kind",
    "hetu",
    "made_to",
    "purposes",
    "received",
    "effective_from",
    "withdrawn",
    "controller",
    "start",
    "end",
    "service_event",
    "provider",
    "all_registers",
    "none_valid",
    "since",
    "until",
    "source",
    "reference",
];

/// One bad row: its line, and what is wrong (never its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parsed import, ready for one store transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub objections: Vec<ObjectionRow>,
    pub restrictions: Vec<RestrictionRow>,
    pub flags: Vec<FlagRow>,
    pub denials: Vec<DenialSnapshot>,
    pub rows: u64,
}

impl Parsed {
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("objection", self.objections.len()),
            ("restriction", self.restrictions.len()),
            ("turvakielto", self.flags.len()),
            ("denial_snapshot", self.denials.len()),
        ])
    }
}

/// Parses a time column: RFC 3339, or a date at 00:00 UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A row as column → value (empty values dropped).
type Fields = BTreeMap<String, String>;

fn get<'a>(f: &'a Fields, k: &str) -> Option<&'a str> {
    f.get(k)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn identifier_only(v: &str) -> bool {
    v.len() <= 200
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/#".contains(c))
}

struct RowCx<'a> {
    controllers: &'a [Controller],
    index_key: &'a Key,
}

fn parse_row(
    cx: &RowCx<'_>,
    f: &Fields,
    out: &mut Parsed,
    snapshot_of: &mut BTreeMap<String, usize>,
) -> Result<(), String> {
    for k in f.keys() {
        if !COLUMNS.contains(&k.as_str()) {
            return Err(format!("unknown column {k:?}"));
        }
    }
    let kind = get(f, "kind").unwrap_or("objection");
    let hetu = get(f, "hetu").ok_or("hetu is missing")?;
    let hetu = Hetu::parse(hetu).map_err(|e| format!("hetu: {e}"))?;
    let person = identity::person_index(cx.index_key, &hetu).into_string();
    let time = |k: &str, required: bool| -> Result<Option<String>, String> {
        match get(f, k) {
            None if required => Err(format!("{k} is missing")),
            None => Ok(None),
            Some(v) => parse_time(v)
                .map(|t| Some(rfc3339(t)))
                .ok_or_else(|| format!("{k} is not an RFC 3339 time or a YYYY-MM-DD date")),
        }
    };
    let text = |k: &str| -> Result<Option<String>, String> {
        match get(f, k) {
            None => Ok(None),
            Some(v) if identifier_only(v) => Ok(Some(v.trim().to_owned())),
            Some(_) => Err(format!(
                "{k} must be an identifier (letters, digits, - _ . : / #), not free text"
            )),
        }
    };
    let controller = |k: &str| -> Result<Option<String>, String> {
        match get(f, k) {
            None => Ok(None),
            Some(id) if cx.controllers.iter().any(|c| c.id == id.trim()) => {
                Ok(Some(id.trim().to_owned()))
            }
            Some(_) => Err(format!("{k} is not a configured controller id")),
        }
    };
    let boolean = |k: &str| -> Result<bool, String> {
        match get(f, k).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(_) => Err(format!("{k} must be true or false")),
        }
    };
    let (source, reference) = (text("source")?, text("reference")?);
    match kind {
        "objection" => {
            let made_to = match get(f, "made_to").map(str::trim) {
                None => return Err("made_to is missing (a controller id or findata)".into()),
                Some("findata") => "findata".to_owned(),
                Some(_) => controller("made_to")?.unwrap_or_default(),
            };
            let purposes = match get(f, "purposes").map(str::trim) {
                None | Some("all") => "\"all\"".to_owned(),
                Some(list) => {
                    let mut ps = Vec::new();
                    for p in list.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                        let parsed: Purpose = serde_json::from_value(serde_json::Value::String(p.into()))
                            .map_err(|_| "purposes: an unknown purpose (statistics, scientific_research, development_and_innovation, education, knowledge_management, steering_and_supervision, authority_planning_and_reporting, or all)".to_string())?;
                        ps.push(parsed);
                    }
                    serde_json::to_string(&ps).map_err(|e| e.to_string())?
                }
            };
            let effective_from = time("effective_from", true)?.unwrap_or_default();
            let withdrawn_at = time("withdrawn", false)?;
            if let (Some(w), Some(e)) = (
                withdrawn_at.as_deref().and_then(parse_time),
                parse_time(&effective_from),
            ) && w < e
            {
                return Err("withdrawn is before effective_from".into());
            }
            out.objections.push(ObjectionRow {
                person,
                made_to,
                purposes,
                received_at: time("received", false)?,
                effective_from,
                withdrawn_at,
                source,
                reference,
            });
        }
        "restriction" => {
            let start_at = time("start", true)?.unwrap_or_default();
            let end_at = time("end", false)?;
            out.restrictions.push(RestrictionRow {
                person,
                controller: controller("controller")?,
                start_at,
                end_at,
                source,
                reference,
            });
        }
        "turvakielto" => out.flags.push(FlagRow {
            person,
            flag: "turvakielto".into(),
            since: time("since", false)?.unwrap_or_else(|| rfc3339(Utc::now())),
            until: time("until", false)?,
            source,
            reference,
        }),
        "denial" => {
            let none_valid = boolean("none_valid")?;
            let effective_at = time("effective_from", true)?.unwrap_or_default();
            let service_event = text("service_event")?;
            let provider = text("provider")?;
            if !none_valid && service_event.is_none() && provider.is_none() {
                return Err(
                    "a denial names a service_event or a provider (or none_valid = true)".into(),
                );
            }
            let i = *snapshot_of.entry(person.clone()).or_insert_with(|| {
                out.denials.push(DenialSnapshot {
                    person: person.clone(),
                    origin: "import".into(),
                    doc_key: None,
                    effective_at: effective_at.clone(),
                    none_valid: false,
                    emergency: None,
                    denials: Vec::new(),
                });
                out.denials.len() - 1
            });
            let snap = &mut out.denials[i];
            snap.none_valid |= none_valid;
            if service_event.is_some() || provider.is_some() {
                snap.denials.push(DenialRow {
                    service_event,
                    provider,
                    all_registers: boolean("all_registers")? || get(f, "all_registers").is_none(),
                    from_at: None,
                    to_at: None,
                });
            }
        }
        _ => return Err("kind must be objection, restriction, denial or turvakielto".into()),
    }
    out.rows += 1;
    Ok(())
}

/// Parses an import file's text: JSON Lines when the first non-blank
/// character is `{`, else CSV with a header row. Every bad row is reported;
/// nothing is returned unless every row is good.
pub fn parse<M>(text: &str, cfg: &Config<M>, index_key: &Key) -> Result<Parsed, Vec<LineError>> {
    let cx = RowCx {
        controllers: &cfg.controllers,
        index_key,
    };
    let mut out = Parsed::default();
    let mut errors = Vec::new();
    let mut snapshots = BTreeMap::new();
    if text.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line_no = i as u64 + 1;
            let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
                Ok(o) => o,
                Err(e) => {
                    errors.push(LineError {
                        line: line_no,
                        message: format!("not a JSON object (column {})", e.column()),
                    });
                    continue;
                }
            };
            let mut fields = Fields::new();
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(";"),
                    other => other.to_string(),
                };
                fields.insert(k, s);
            }
            if let Err(message) = parse_row(&cx, &fields, &mut out, &mut snapshots) {
                errors.push(LineError {
                    line: line_no,
                    message,
                });
            }
        }
    } else {
        let mut r = crate::feed::csv::RecordReader::new(text.as_bytes());
        let header: Vec<String> = match r.next_record() {
            Ok(Some(h)) => h.into_iter().map(|f| f.text.trim().to_owned()).collect(),
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(vec![LineError {
                    line: 1,
                    message: format!("header: {e}"),
                }]);
            }
        };
        loop {
            let rec = match r.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    errors.push(LineError {
                        line: r.line(),
                        message: format!("not CSV: {e}"),
                    });
                    break;
                }
            };
            if rec.iter().all(|f| f.text.trim().is_empty()) {
                continue;
            }
            if rec.len() != header.len() {
                errors.push(LineError {
                    line: r.line(),
                    message: format!("{} fields for {} columns", rec.len(), header.len()),
                });
                continue;
            }
            let fields: Fields = header
                .iter()
                .cloned()
                .zip(rec.into_iter().map(|f| f.text))
                .collect();
            if let Err(message) = parse_row(&cx, &fields, &mut out, &mut snapshots) {
                errors.push(LineError {
                    line: r.line(),
                    message,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> (tempfile::TempDir, crate::loaded::Config) {
        let tmp = tempfile::tempdir().expect("tmp");
        let corpus = tmp.path().join("corpus");
        std::fs::create_dir_all(&corpus).expect("corpus");
        let s = crate::demo::write_setup(&tmp.path().join("d"), &corpus).expect("setup");
        let c = Config::load(&s.config).expect("config");
        (tmp, c)
    }

    fn key() -> Key {
        Key::from_bytes(&crate::identity::KeyRole::Index, &[7u8; 32]).expect("key")
    }

    #[test]
    fn good_rows_of_every_kind_parse_and_hetus_become_pseudonyms() {
        let (_t, c) = cfg();
        let csv = "kind,hetu,made_to,purposes,effective_from,withdrawn,controller,start,end,service_event,provider,since,source,reference\r\n\
objection,010101-900R,org-32213086,statistics;scientific_research,2026-01-01,,,,,,,,kirjaamo,OBJ-1\r\n\
objection,010101-900R,findata,all,2026-01-01T08:00:00Z,2026-06-01,,,,,,,,\r\n\
restriction,020202-902H,,,,,org-32213086,2026-02-01,2026-03-01,,,,,\r\n\
denial,020202-902H,,,2026-01-01,,,,,1.2.246.10.32213086.14011.2026.1,,,,\r\n\
turvakielto,030303-9049,,,,,,,,,,2026-01-01,,\r\n";
        let p = parse(csv, &c, &key()).expect("parses");
        assert_eq!(p.rows, 5);
        assert_eq!(p.objections.len(), 2);
        assert_eq!(
            p.objections[0].purposes,
            "[\"statistics\",\"scientific_research\"]"
        );
        assert_eq!(
            p.restrictions[0].controller.as_deref(),
            Some("org-32213086")
        );
        assert_eq!(p.denials[0].denials.len(), 1);
        assert_eq!(p.flags[0].flag, "turvakielto");
        let dump = format!("{p:?}");
        assert!(
            !dump.contains("010101-900R"),
            "only index pseudonyms are kept"
        );
        // JSON Lines reads the same.
        let jsonl = "{\"hetu\":\"010101-900R\",\"made_to\":\"findata\",\"purposes\":[\"statistics\"],\"effective_from\":\"2026-01-01\"}\n";
        assert_eq!(parse(jsonl, &c, &key()).expect("jsonl").objections.len(), 1);
    }

    #[test]
    fn every_bad_row_is_reported_by_line_without_its_content_and_nothing_is_kept() {
        let (_t, c) = cfg();
        let csv = "kind,hetu,made_to,purposes,effective_from,withdrawn\r\n\
objection,010101-900R,org-32213086,all,2026-01-01,\r\n\
objection,010101-900X,org-32213086,all,2026-01-01,\r\n\
objection,010101-900R,no-such-controller,all,2026-01-01,\r\n\
objection,010101-900R,findata,all,yesterday,\r\n\
objection,010101-900R,findata,all,2026-02-01,2026-01-01\r\n\
objection,010101-900R,findata,gossip,2026-01-01,\r\n\
parking,010101-900R,findata,all,2026-01-01,\r\n";
        let errors = parse(csv, &c, &key()).expect_err("bad rows");
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8], "{errors:?}");
        let text: String = errors.iter().map(|e| e.to_string() + "\n").collect();
        assert!(text.contains("check character"), "{text}");
        assert!(!text.contains("010101-900"), "no hetu in an error: {text}");
        let unknown = "kind,hetu,notes\r\nobjection,010101-900R,hello\r\n";
        assert!(
            parse(unknown, &c, &key()).expect_err("column")[0]
                .message
                .contains("unknown column")
        );
    }
}
