//! `regfeed decode PATH...`: decodes each file and prints one JSON line per
//! argument: the document's header and records with the patient id replaced
//! by a per-call pseudonym, or the refusal's class.
//!
//! It must not print a path or file name (a file name may contain a hetu), a
//! patient id, or a birth date finer than the year; and it must not hold more
//! than one file in memory at a time.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decode::hetu::find_hetu_shaped;
use crate::decode::{self, DecodeError, ErrorClass, Limits};
use crate::record::{
    Code, DecodedDocument, Document, Flags, Packaging, PatientId, Record, RelatedDocument, Sex, Ts,
};

/// `regfeed decode --help`.
pub const LONG_ABOUT: &str = "\
Decode documents and print their header and records as JSON Lines on standard \
output: one line per PATH, in argument order. Files are read one at a time.

A decoded document:
  {\"arg\": N, \"sha256\": \"<16 hex>\", \"packaging\": ..., \"document\": {...}, \"records\": [...]}
with the fields of the canonical record model (DESIGN.md §2). In \"document\" the \
patient id is replaced by {\"root\": ..., \"pseudonym\": \"<32 hex>\"}: HMAC-SHA-256 \
of \"<root>:<EXTENSION>\" under a key drawn at random for this call and never \
stored. The same patient gets the same pseudonym throughout one call and a \
different one in every other call: pseudonyms cannot be linked across calls or \
to any feed. The birth time is reduced to \"birth_year\"; sex and home \
municipality are shown as decoded.

A refused file:
  {\"arg\": N, \"sha256\": \"<16 hex>\", \"error\": {\"class\": \"<class>\", \"detail\": \"...\"}}
class: encoding, doctype, not_well_formed, limit_exceeded, not_cda, fragment, \
packaging or invalid_patient_id. A file that cannot be read:
  {\"arg\": N, \"error\": {\"class\": \"io\", \"detail\": \"<kind of I/O error>\"}}

N is the file's 1-based position among the PATH arguments; sha256 is the first \
16 hex digits of the SHA-256 of its bytes. No path or file name is ever printed \
(a file name may contain a hetu): find a file by its position, or by its digest \
with `sha256sum PATH... | grep PREFIX`. As a safety net, hetu-shaped text left \
in a line is replaced by \"[redacted]\" and a warning (without the text) is logged.

Exit status: 0 when every file was decoded; 1 when any file was refused or \
unreadable (the others are still decoded); 2 on a usage error.";

/// Hex digits of a file's SHA-256 shown to name it.
pub const DIGEST_HEX_LEN: usize = 16;
/// Hex digits of a pseudonym (128 bits).
pub const PSEUDONYM_HEX_LEN: usize = 32;
/// What replaces hetu-shaped text found in an output line.
pub const REDACTED: &str = "[redacted]";

/// Pseudonyms for one call: HMAC-SHA-256 under a key that lives only in this
/// value.
pub struct Pseudonymiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with a fresh key from the operating system's RNG.
    pub fn random() -> Result<Pseudonymiser, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Pseudonymiser { key })
    }

    /// A pseudonymiser with a given key (tests; never a stored key).
    pub fn with_key(key: [u8; 32]) -> Pseudonymiser {
        Pseudonymiser { key }
    }

    /// Lowercase hex of HMAC-SHA-256 over `"<root>:<EXTENSION>"`, truncated to
    /// [`PSEUDONYM_HEX_LEN`].
    pub fn pseudonym(&self, id: &PatientId) -> String {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC-SHA-256 takes a key of any length");
        mac.update(id.root.as_bytes());
        mac.update(b":");
        mac.update(id.extension.to_uppercase().as_bytes());
        let mut hex = hex::encode(mac.finalize().into_bytes());
        hex.truncate(PSEUDONYM_HEX_LEN);
        hex
    }
}

/// What one call did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub decoded: usize,
    pub refused: usize,
    pub unreadable: usize,
}

impl Summary {
    /// 0 when every file was decoded, else 1.
    pub fn exit_code(&self) -> ExitCode {
        if self.refused == 0 && self.unreadable == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The `decode` command: decodes `paths` to standard output.
pub fn main(paths: &[PathBuf]) -> ExitCode {
    let pseudonymiser = match Pseudonymiser::random() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("regfeed: cannot draw a pseudonym key from the operating system: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = run(paths, &Limits::default(), &pseudonymiser, &mut out)
        .and_then(|summary| out.flush().map(|()| summary));
    match result {
        Ok(summary) => {
            tracing::info!(
                decoded = summary.decoded,
                refused = summary.refused,
                unreadable = summary.unreadable,
                peak_rss_kib = crate::telemetry::peak_rss_bytes().map(|b| b / 1024),
                "Decode finished."
            );
            summary.exit_code()
        }
        // A reader that went away (`| head`) is not worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("regfeed: cannot write to standard output: {}", e.kind());
            ExitCode::FAILURE
        }
    }
}

/// Decodes each of `paths` in turn and writes one JSON line per path to
/// `out`. Errors are only those of writing to `out`; a file that cannot be
/// read or decoded is a line, not an error.
pub fn run(
    paths: &[PathBuf],
    limits: &Limits,
    pseudonymiser: &Pseudonymiser,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for (i, path) in paths.iter().enumerate() {
        let arg = i + 1;
        let line = match read_input(path, limits.max_document_bytes) {
            Err(e) => {
                summary.unreadable += 1;
                tracing::debug!(arg, kind = %e.kind(), "File unreadable.");
                line_json(&Line::Unreadable {
                    arg,
                    error: ErrorView {
                        class: "io",
                        detail: e.kind().to_string(),
                    },
                })
            }
            Ok(Input::TooLarge { sha256 }) => {
                summary.refused += 1;
                let e = DecodeError::new(
                    ErrorClass::LimitExceeded,
                    format!(
                        "input is larger than max_document_bytes ({})",
                        limits.max_document_bytes
                    ),
                );
                refused_line(arg, &sha256, &e)
            }
            Ok(Input::Bytes { bytes, sha256 }) => match decode::decode(&bytes, limits) {
                Ok(doc) => {
                    summary.decoded += 1;
                    line_json(&document_line(arg, &sha256, &doc, pseudonymiser))
                }
                Err(e) => {
                    summary.refused += 1;
                    refused_line(arg, &sha256, &e)
                }
            },
        };
        let (line, redactions) = redact_hetu_shaped(line);
        if redactions > 0 {
            tracing::warn!(
                arg,
                redactions,
                "Hetu-shaped text redacted from an output line: the decoder emitted an identifier."
            );
        }
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(summary)
}

enum Input {
    Bytes { bytes: Vec<u8>, sha256: String },
    TooLarge { sha256: String },
}

/// Reads one file, refusing (without holding it) one larger than `max`.
fn read_input(path: &Path, max: usize) -> io::Result<Input> {
    let mut file = File::open(path)?;
    let max = u64::try_from(max).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    // A file whose metadata already says it is too large is hashed without
    // keeping any of it (keeping up to `max` bytes first doubled the peak
    // RSS of refusing an oversized file: benches/hostile_rss.rs).
    let fits = file.metadata()?.len() <= max;
    if fits {
        (&mut file)
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)?;
    }
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    if bytes.is_empty() || bytes.len() as u64 > max {
        // Too large (by its metadata, or it grew while read), or empty (which
        // may be a special file whose length metadata does not tell): hash
        // the rest in chunks without keeping it.
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = bytes.len() as u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            total += n as u64;
            if fits && total <= max {
                bytes.extend_from_slice(&buf[..n]);
            } else {
                bytes = Vec::new();
            }
        }
        let sha256 = digest_prefix(hasher);
        if total > max {
            return Ok(Input::TooLarge { sha256 });
        }
        return Ok(Input::Bytes { bytes, sha256 });
    }
    Ok(Input::Bytes {
        bytes,
        sha256: digest_prefix(hasher),
    })
}

fn digest_prefix(hasher: Sha256) -> String {
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(DIGEST_HEX_LEN);
    hex
}

#[derive(Serialize)]
struct ErrorView {
    class: &'static str,
    detail: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Decoded {
        arg: usize,
        sha256: &'a str,
        packaging: Packaging,
        document: DocumentView<'a>,
        records: &'a [Record],
    },
    Refused {
        arg: usize,
        sha256: &'a str,
        error: ErrorView,
    },
    Unreadable {
        arg: usize,
        error: ErrorView,
    },
}

#[derive(Serialize)]
struct PatientView<'a> {
    root: &'a str,
    pseudonym: String,
}

/// A [`Document`] as `decode` prints it: the patient as a pseudonym, the
/// birth time as a year.
#[derive(Serialize)]
struct DocumentView<'a> {
    id: &'a str,
    set_id: &'a str,
    version: u32,
    code: &'a Option<Code>,
    effective_time: &'a Option<Ts>,
    controller: &'a Option<String>,
    service_event: &'a Option<String>,
    view: &'a Option<String>,
    record_status: &'a Option<String>,
    home_municipality: &'a Option<String>,
    flags: &'a Flags,
    patient: PatientView<'a>,
    sex: &'a Option<Sex>,
    birth_year: Option<i32>,
    replaces: &'a Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    related: &'a Vec<RelatedDocument>,
    structured_body: bool,
}

impl<'a> DocumentView<'a> {
    fn new(doc: &'a Document, pseudonymiser: &Pseudonymiser) -> DocumentView<'a> {
        // Exhaustive on purpose (no `..`): a field added to `Document` does
        // not compile here until someone decides whether `decode` may show it.
        let Document {
            id,
            set_id,
            version,
            code,
            effective_time,
            controller,
            service_event,
            view,
            record_status,
            home_municipality,
            flags,
            patient,
            sex,
            birth_time,
            replaces,
            related,
            structured_body,
        } = doc;
        DocumentView {
            id,
            set_id,
            version: *version,
            code,
            effective_time,
            controller,
            service_event,
            view,
            record_status,
            home_municipality,
            flags,
            patient: PatientView {
                root: &patient.root,
                pseudonym: pseudonymiser.pseudonym(patient),
            },
            sex,
            birth_year: birth_time.as_ref().and_then(Ts::year),
            replaces,
            related,
            structured_body: *structured_body,
        }
    }
}

fn document_line<'a>(
    arg: usize,
    sha256: &'a str,
    doc: &'a DecodedDocument,
    pseudonymiser: &Pseudonymiser,
) -> Line<'a> {
    Line::Decoded {
        arg,
        sha256,
        packaging: doc.packaging,
        document: DocumentView::new(&doc.document, pseudonymiser),
        records: &doc.records,
    }
}

fn refused_line(arg: usize, sha256: &str, e: &DecodeError) -> String {
    tracing::debug!(arg, class = %e.class, "Document refused.");
    line_json(&Line::Refused {
        arg,
        sha256,
        error: ErrorView {
            class: e.class.as_str(),
            detail: e.detail.clone(),
        },
    })
}

fn line_json(line: &Line<'_>) -> String {
    match serde_json::to_string(line) {
        Ok(s) => s,
        // Only a non-finite float or a map with non-string keys can fail, and
        // the record model has no maps; say so rather than panic.
        Err(e) => {
            let arg = match line {
                Line::Decoded { arg, .. }
                | Line::Refused { arg, .. }
                | Line::Unreadable { arg, .. } => *arg,
            };
            serde_json::json!({
                "arg": arg,
                "error": {"class": "output", "detail": format!("cannot serialise: {:?}", e.classify())},
            })
            .to_string()
        }
    }
}

/// Replaces every hetu-shaped substring of a JSON line by [`REDACTED`];
/// returns the line and the number of replacements. Hetu-shaped text is
/// ASCII digits, letters, `+` and `-` between non-alphanumeric boundaries, so
/// the replacement never touches JSON syntax.
fn redact_hetu_shaped(line: String) -> (String, usize) {
    let hits = find_hetu_shaped(&line);
    if hits.is_empty() {
        return (line, 0);
    }
    let mut redacted = String::with_capacity(line.len());
    let mut from = 0;
    for &at in &hits {
        redacted.push_str(&line[from..at]);
        redacted.push_str(REDACTED);
        from = at + 11;
    }
    redacted.push_str(&line[from..]);
    (redacted, hits.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HETU_ROOT;

    fn pid(root: &str, ext: &str) -> PatientId {
        PatientId {
            root: root.into(),
            extension: ext.into(),
        }
    }

    fn document(patient: PatientId, birth: Option<&str>) -> DecodedDocument {
        DecodedDocument {
            packaging: Packaging::Cda,
            document: Document {
                id: "1.2.246.10.1.93.1".into(),
                set_id: "1.2.246.10.1.93.1".into(),
                version: 1,
                code: None,
                effective_time: Some(Ts("20260112093000".into())),
                controller: None,
                service_event: None,
                view: None,
                record_status: None,
                home_municipality: Some("092".into()),
                flags: Flags::default(),
                patient,
                sex: Some(Sex::Female),
                birth_time: birth.map(|b| Ts(b.into())),
                replaces: None,
                related: Vec::new(),
                structured_body: true,
            },
            records: Vec::new(),
        }
    }

    #[test]
    fn pseudonyms_are_keyed_case_blind_and_root_bound() {
        let a = Pseudonymiser::with_key([1; 32]);
        let b = Pseudonymiser::with_key([2; 32]);
        let h = pid(HETU_ROOT, "010105a9767");
        let p = a.pseudonym(&h);
        assert_eq!(p.len(), PSEUDONYM_HEX_LEN);
        assert!(
            p.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(p, a.pseudonym(&pid(HETU_ROOT, "010105A9767")));
        assert_ne!(p, b.pseudonym(&h), "another key, another pseudonym");
        assert_ne!(
            p,
            a.pseudonym(&pid("1.2.3", "010105A9767")),
            "root is bound"
        );
    }

    #[test]
    fn pseudonym_is_hmac_over_root_colon_upper_extension() {
        let key = [7u8; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(b"1.2.246.21:010105A9767");
        let full = hex::encode(mac.finalize().into_bytes());
        let p = Pseudonymiser::with_key(key).pseudonym(&pid(HETU_ROOT, "010105a9767"));
        assert_eq!(p, full[..PSEUDONYM_HEX_LEN]);
    }

    #[test]
    fn random_keys_differ() {
        let h = pid(HETU_ROOT, "010105A9767");
        let a = Pseudonymiser::random().expect("OS RNG").pseudonym(&h);
        let b = Pseudonymiser::random().expect("OS RNG").pseudonym(&h);
        assert_ne!(a, b);
        assert!(!format!("{:?}", Pseudonymiser::with_key([9; 32])).contains("9"));
    }

    #[test]
    fn a_document_line_hides_the_patient_and_the_birth_date() {
        let p = Pseudonymiser::with_key([3; 32]);
        let doc = document(pid(HETU_ROOT, "010105A9767"), Some("20050101"));
        let line = line_json(&document_line(4, "00112233aabbccdd", &doc, &p));
        assert!(!line.contains("010105"), "{line}");
        assert!(!line.contains("20050101"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["arg"], 4);
        assert_eq!(v["sha256"], "00112233aabbccdd");
        assert_eq!(v["packaging"], "cda");
        assert_eq!(v["document"]["patient"]["root"], HETU_ROOT);
        assert_eq!(
            v["document"]["patient"]["pseudonym"],
            p.pseudonym(&doc.document.patient)
        );
        assert!(v["document"]["patient"].get("extension").is_none());
        assert!(v["document"].get("birth_time").is_none());
        assert_eq!(v["document"]["birth_year"], 2005);
        assert_eq!(v["document"]["home_municipality"], "092");
        assert_eq!(v["records"], serde_json::json!([]));
    }

    #[test]
    fn refused_and_unreadable_lines_have_their_shape() {
        let e = DecodeError::new(ErrorClass::Doctype, "DOCTYPE is refused");
        let v: serde_json::Value =
            serde_json::from_str(&refused_line(2, "0123456789abcdef", &e)).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"arg": 2, "sha256": "0123456789abcdef",
                "error": {"class": "doctype", "detail": "DOCTYPE is refused"}})
        );
    }

    #[test]
    fn hetu_shaped_text_is_redacted_and_counted() {
        let (line, n) =
            redact_hetu_shaped(r#"{"a":"150245-987R","b":"x 010105A9767;","c":"1.2.246"}"#.into());
        assert_eq!(n, 2);
        assert_eq!(
            line,
            r#"{"a":"[redacted]","b":"x [redacted];","c":"1.2.246"}"#
        );
        let clean = r#"{"t":"20260112093000","id":"1.2.246.10.1"}"#;
        assert_eq!(redact_hetu_shaped(clean.into()), (clean.to_owned(), 0));
    }

    #[test]
    fn run_names_files_by_position_and_digest_never_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refused = dir.path().join("010101-900R.xml");
        std::fs::write(&refused, b"<not-cda/>").expect("write");
        let missing = dir.path().join("150245-987R.xml");
        let paths = vec![refused.clone(), missing];
        let mut out = Vec::new();
        let p = Pseudonymiser::with_key([0; 32]);
        let summary = run(&paths, &Limits::default(), &p, &mut out).expect("writes");
        assert_eq!(summary.decoded, 0);
        assert_eq!(summary.refused, 1);
        assert_eq!(summary.unreadable, 1);
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(!text.contains("010101"), "{text}");
        assert!(!text.contains("150245"), "{text}");
        assert!(!text.contains(&*dir.path().to_string_lossy()), "{text}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["arg"], 1);
        let digest = hex::encode(Sha256::digest(b"<not-cda/>"));
        assert_eq!(lines[0]["sha256"], digest[..DIGEST_HEX_LEN]);
        assert!(lines[0]["error"]["class"].is_string());
        assert_eq!(
            lines[1],
            serde_json::json!({"arg": 2, "error": {"class": "io", "detail": io::ErrorKind::NotFound.to_string()}})
        );
    }

    #[test]
    fn an_oversized_file_is_refused_without_being_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.xml");
        let content = vec![b'x'; 10_000];
        std::fs::write(&big, &content).expect("write");
        let limits = Limits {
            max_document_bytes: 1000,
            ..Limits::default()
        };
        let mut out = Vec::new();
        let p = Pseudonymiser::with_key([0; 32]);
        let summary = run(&[big], &limits, &p, &mut out).expect("writes");
        assert_eq!(summary.refused, 1);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["error"]["class"], "limit_exceeded");
        let digest = hex::encode(Sha256::digest(&content));
        assert_eq!(v["sha256"], digest[..DIGEST_HEX_LEN]);
    }
}
