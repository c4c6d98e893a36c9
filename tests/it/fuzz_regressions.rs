//! Every input a fuzz target (`fuzz/`) ever crashed on, kept under
//! `tests/data/fuzz/<target>/` and fed through the same harness as the
//! target: it must now return (an error is fine) without panicking.
//!
//! To keep a new finding: copy `fuzz/artifacts/<target>/crash-*` to
//! `tests/data/fuzz/<target>/` under a name that says what it found.

use std::path::{Path, PathBuf};

use base64::Engine;
use regfeed::decode::{Limits, decode};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read input");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Runs `f` on every kept input of `target`, naming the input that panics.
fn each(target: &str, f: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    for (path, bytes) in inputs(target) {
        if std::panic::catch_unwind(|| f(&bytes)).is_err() {
            panic!("{} panics again", path.display());
        }
    }
}

// The same template as fuzz/fuzz_targets/decode_archive.rs.
const HEAD: &str = r#"<RCMR_IN100002FI01 ITSVersion="XML_1.0" xmlns="urn:hl7-org:v3"><id root="1.2.246.10.32213086.10.0.13.112"/><creationTime value="20260301120000"/><interactionId extension="RCMR_IN100002FI01" root="2.16.840.1.113883.1.6"/><processingCode code="P"/><processingModeCode code="T"/><acceptAckCode code="ER"/><controlActProcess moodCode="RQO"><subject typeCode="SUBJ"><clinicalDocument><id root="1.2.246.10.32213086.93.2026.112"/><text mediaType="multipart/related">"#;
const TAIL: &str = "</text></clinicalDocument></subject></controlActProcess></RCMR_IN100002FI01>";
const MIME_HEAD: &str = "MIME-Version: 1.0\nContent-Type: multipart/related;\nboundary=\"----=_Part_1_1\"\n\n------=_Part_1_1\nContent-Type: text/xml; charset=UTF-8\nContent-Transfer-Encoding: BASE64\n\n";
const MIME_TAIL: &str = "\n------=_Part_1_1--\n";

fn archive_message(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    let mut msg = String::from(HEAD);
    if mode & 1 == 0 {
        msg.push_str(MIME_HEAD);
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        for line in b64.as_bytes().chunks(76) {
            msg.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            msg.push('\n');
        }
        msg.push_str(MIME_TAIL);
    } else {
        for c in std::str::from_utf8(rest).ok()?.chars() {
            match c {
                '<' => msg.push_str("&lt;"),
                '>' => msg.push_str("&gt;"),
                '&' => msg.push_str("&amp;"),
                c => msg.push(c),
            }
        }
    }
    msg.push_str(TAIL);
    Some(msg)
}

#[test]
fn decode_cda() {
    each("decode_cda", |b| {
        let _ = decode(b, &Limits::default());
    });
}

#[test]
fn decode_archive() {
    each("decode_archive", |b| {
        if let Some(msg) = archive_message(b) {
            let _ = decode(msg.as_bytes(), &Limits::default());
        }
    });
}

#[test]
fn mapping_parse() {
    each("mapping_parse", |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            let _ = regfeed::mapping::parse(text, Path::new("fuzz.toml"));
        }
    });
}

#[test]
fn config_parse() {
    each("config_parse", |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            let _ = regfeed::loaded::Config::from_str_at(
                text,
                Path::new("/etc/regfeed/regfeed.toml"),
                &[],
            );
        }
    });
}

/// The archive template itself decodes as an archive message, so that the
/// `decode_archive` target reaches the CDA decoder and not only the
/// packaging checks.
#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn the_archive_template_reaches_the_cda_decoder() {
    let dir = shared_or_skip!("fixtures");
    let doc = std::fs::read(dir.join("f03-lab-panel.xml")).expect("fixture");
    let mut input = vec![0u8];
    input.extend_from_slice(&doc);
    let msg = archive_message(&input).expect("message");
    let decoded = decode(msg.as_bytes(), &Limits::default());
    assert!(decoded.is_ok(), "{:?}", decoded.err());
}
