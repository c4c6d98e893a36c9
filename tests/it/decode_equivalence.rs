//! The decoder's answers, pinned: a SHA-256 over what `decode` returns (the
//! JSON of the decoded document, or the error class of a refusal) for a
//! fixed, ordered set of inputs: a small generated corpus, every file of
//! `../shared/data`, the kept fuzz inputs, deterministic mutations of small
//! documents (truncations, stray bytes, inserted markup, cut spans) and
//! documents decoded under tight limits.
//!
//! The digests were taken from the decoder before its single-pass rewrite
//! (issue 12): a rewrite must give the same answer for every one of these
//! inputs. A change that means to change an answer updates the digest in
//! the same commit and says why. On a mismatch, set
//! `REGFEED_EQUIVALENCE_DUMP=<file>` to write one line per input and diff
//! it against a dump from the previous commit.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use regfeed::decode::{Limits, decode};
use sha2::{Digest, Sha256};

/// Generated corpus: patients and seed.
const SYNTH: (u32, u64) = (120, 7);

const GOLDEN_SYNTH: &str = "77543201ef74e37420a3b41101b886016cfb24317f6aef1c37284ae354a200c1";
const GOLDEN_SHARED: &str = "617a9b5ba3f7614b92f6116f654b3a13bd9f222e9a66c2f46a12f53a24b95184";
const GOLDEN_MUTATED: &str = "cc5ce44740077dd7c65e0c058e49553df33f94d6bf126bda60f9ef751d2367d1";
const GOLDEN_LIMITS: &str = "df42f19ae4ec9fac650331d33de2d1d4f8db85227f7fd4b42fb7b52de44040b1";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One line per input: its label, then the decoded JSON or the class.
fn answer(label: &str, bytes: &[u8], limits: &Limits) -> String {
    match decode(bytes, limits) {
        Ok(d) => format!(
            "{label}\tok\t{}",
            serde_json::to_string(&d).expect("a decoded document serialises")
        ),
        Err(e) => format!("{label}\terr\t{}", e.class),
    }
}

/// A deterministic xorshift: the mutations must be the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const STRAY_BYTES: &[u8] = &[
    b'<', b'>', b'&', b'"', b'\'', b'/', b'=', b':', 0x00, 0xFF, b' ', b'x', 0xC3, b'!', b'?',
    b';', b'#', b'\t', 0x7F, b']',
];

const SNIPPETS: &[&str] = &[
    "<!DOCTYPE a>",
    "<!doctype a [<!ENTITY e 'x'>]>",
    "<!-- c -->",
    "<!-- a -- b -->",
    "<![CDATA[x<y]]>",
    "]]>",
    "&amp;",
    "&nbsp;",
    "&#0;",
    "&#x1F600;",
    "&#xD800;",
    "&lt",
    "<x:y/>",
    "</a>",
    "<a>",
    "<a/>",
    " xmlns:p='u'",
    " xmlns:p=''",
    " a='1' a='2'",
    " p:a='1'",
    " xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:type='ST'",
    "<?pi x?>",
    "<?xml version='1.0'?>",
    "\u{FEFF}",
    "\u{1}",
    "<entry><observation><code code='1' codeSystem='2.16.840.1.113883.6.1'/><value value='5'/></observation></entry>",
    "<component><section><code code='11369-6' codeSystem='2.16.840.1.113883.6.1'/></section></component>",
    "<text>t</text>",
    "<value xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:type='ST'>a&amp;b</value>",
    " encoding='latin1'",
    "\r\n",
];

/// Mutations of one document, with labels.
fn mutations(seed: u64, bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::new();
    let n = bytes.len();
    for k in 1..8 {
        let at = n * k / 8;
        out.push((format!("trunc@{at}"), bytes[..at].to_vec()));
    }
    for _ in 0..16 {
        let at = rng.below(n);
        let b = STRAY_BYTES[rng.below(STRAY_BYTES.len())];
        let mut m = bytes.to_vec();
        if let Some(slot) = m.get_mut(at) {
            *slot = b;
        }
        out.push((format!("byte@{at}={b:02x}"), m));
    }
    for (i, s) in SNIPPETS.iter().enumerate() {
        // Each snippet once at a random position and once just after a `<`
        // or `>` (inside markup or between elements).
        let at = rng.below(n + 1);
        let mut m = bytes[..at].to_vec();
        m.extend_from_slice(s.as_bytes());
        m.extend_from_slice(&bytes[at..]);
        out.push((format!("ins{i}@{at}"), m));
        let start = rng.below(n + 1);
        if let Some(off) = bytes[start..].iter().position(|&c| c == b'>' || c == b'<') {
            let at = start + off + usize::from(bytes[start + off] == b'>');
            let mut m = bytes[..at].to_vec();
            m.extend_from_slice(s.as_bytes());
            m.extend_from_slice(&bytes[at..]);
            out.push((format!("ins{i}@{at}m"), m));
        }
    }
    for _ in 0..6 {
        let from = rng.below(n);
        let len = 1 + rng.below(64);
        let to = (from + len).min(n);
        let mut m = bytes[..from].to_vec();
        m.extend_from_slice(&bytes[to..]);
        out.push((format!("cut{from}..{to}"), m));
    }
    out
}

fn tight_limits() -> Vec<(&'static str, Limits)> {
    let d = Limits::default();
    vec![
        (
            "depth8",
            Limits {
                max_depth: 8,
                ..d.clone()
            },
        ),
        (
            "attrs3",
            Limits {
                max_attributes: 3,
                ..d.clone()
            },
        ),
        (
            "ns1",
            Limits {
                max_namespace_declarations: 1,
                ..d.clone()
            },
        ),
        (
            "nstotal2",
            Limits {
                max_namespace_declarations_total: 2,
                ..d.clone()
            },
        ),
        (
            "entries2",
            Limits {
                max_entries: 2,
                ..d.clone()
            },
        ),
        (
            "text40",
            Limits {
                max_text_bytes: 40,
                ..d.clone()
            },
        ),
        (
            "bytes4k",
            Limits {
                max_document_bytes: 4096,
                ..d.clone()
            },
        ),
        (
            "archive2k",
            Limits {
                max_archive_decoded_bytes: 2048,
                ..d.clone()
            },
        ),
    ]
}

struct Section {
    name: &'static str,
    golden: &'static str,
    lines: Vec<String>,
}

impl Section {
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.lines {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn decode_answers_match_the_pinned_digests() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let limits = Limits::default();

    let dir = tempfile::tempdir().expect("tempdir");
    let plan = regfeed::synth::plan(SYNTH.0, SYNTH.1);
    regfeed::synth::write_corpus(&plan, dir.path()).expect("write corpus");
    let synth_files = files_under(dir.path());
    let synth_docs: Vec<(String, Vec<u8>)> = synth_files
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(dir.path())
                .expect("under the corpus")
                .display()
                .to_string();
            (rel, fs::read(p).expect("readable"))
        })
        .collect();
    let mut synth = Section {
        name: "synth",
        golden: GOLDEN_SYNTH,
        lines: Vec::new(),
    };
    for (rel, bytes) in &synth_docs {
        synth.lines.push(answer(rel, bytes, &limits));
    }

    let mut shared_docs: Vec<(String, Vec<u8>)> = files_under(&shared)
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&shared)
                .expect("under shared")
                .display()
                .to_string();
            (rel, fs::read(p).expect("readable"))
        })
        .collect();
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    for p in files_under(&fuzz) {
        let rel = format!("fuzz/{}", p.strip_prefix(&fuzz).expect("under").display());
        shared_docs.push((rel, fs::read(&p).expect("readable")));
    }
    let mut shared_section = Section {
        name: "shared",
        golden: GOLDEN_SHARED,
        lines: Vec::new(),
    };
    for (rel, bytes) in &shared_docs {
        shared_section.lines.push(answer(rel, bytes, &limits));
    }

    // Seeds for mutation: the small XML files of the shared data and every
    // 25th generated document.
    let seeds: Vec<&(String, Vec<u8>)> = shared_docs
        .iter()
        .filter(|(rel, b)| {
            (rel.ends_with(".xml") || rel.ends_with(".ccd") || rel.starts_with("fuzz/"))
                && b.len() <= 40_000
        })
        .chain(synth_docs.iter().step_by(25))
        .collect();
    let mut mutated = Section {
        name: "mutated",
        golden: GOLDEN_MUTATED,
        lines: Vec::new(),
    };
    for (i, (rel, bytes)) in seeds.iter().enumerate() {
        for (label, m) in mutations(i as u64 + 1, bytes) {
            mutated
                .lines
                .push(answer(&format!("{rel}#{label}"), &m, &limits));
        }
    }

    let mut limited = Section {
        name: "limits",
        golden: GOLDEN_LIMITS,
        lines: Vec::new(),
    };
    for (rel, bytes) in &seeds {
        for (name, l) in tight_limits() {
            limited
                .lines
                .push(answer(&format!("{rel}@{name}"), bytes, &l));
        }
    }

    let sections = [synth, shared_section, mutated, limited];
    if let Some(path) = std::env::var_os("REGFEED_EQUIVALENCE_DUMP") {
        let mut all = String::new();
        for s in &sections {
            for l in &s.lines {
                all.push_str(s.name);
                all.push('\t');
                all.push_str(l);
                all.push('\n');
            }
        }
        fs::write(&path, all).expect("write the dump");
    }
    let mut wrong = Vec::new();
    for s in &sections {
        let got = s.digest();
        eprintln!("{}: {} inputs, digest {got}", s.name, s.lines.len());
        if got != s.golden {
            wrong.push(format!("{}: expected {}, got {got}", s.name, s.golden));
        }
    }
    assert!(
        wrong.is_empty(),
        "decode answers changed:\n{}",
        wrong.join("\n")
    );
}
