//! `regfeed gen`: the deterministic synthetic Kanta corpus and its truth.
//!
//! A seed makes the same corpus forever: the generator has its own PRNG
//! ([`rng`]), walks everything in plan order and never iterates a hash map
//! where order shows in the output. Identities are synthetic only (hetu
//! individual numbers 900–999, invented names). File names derive from a
//! hash of the document id and never contain a hetu or a name.
//!
//! - [`plan`]: the people and their clinical history, document by document.
//! - [`cda`] / [`archive`]: rendering a planned document (bare CDA or an
//!   RCMR archive message).
//! - [`truth`]: what the diabetes register feed must contain, from the plan.
//! - [`followup`]: a second batch of documents for incremental tests.
//!
//! This module never runs the project's decoder or mappings.

pub mod archive;
pub mod cda;
pub mod followup;
pub mod plan;
pub mod rng;
pub mod truth;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use followup::{FollowupTruth, write_followups};
pub use plan::{Plan, plan};
pub use truth::Truth;

/// What a write produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub documents: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The corpus folder's document tree.
pub fn docs_dir(out: &Path) -> PathBuf {
    out.join("docs")
}

/// `docs/<shard>/<name>.xml` for a document id: the name is the first 32 hex
/// digits of SHA-256 of the id, the shard its first two.
pub fn doc_path(out: &Path, doc_id: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(doc_id.as_bytes()));
    docs_dir(out)
        .join(&h[..2])
        .join(format!("{}.xml", &h[..32]))
}

/// Writes every corpus document (batch 0) of `plan` under `out/docs/`.
pub fn write_corpus(plan: &Plan, out: &Path) -> io::Result<WriteSummary> {
    write_batch(plan, out, 0)
}

/// Writes the documents of one batch. Each file is written under a `.tmp`
/// name and renamed, so a watcher never sees half a file. Work is spread
/// over a few threads; each file's bytes depend only on the plan.
pub(crate) fn write_batch(plan: &Plan, out: &Path, batch: u8) -> io::Result<WriteSummary> {
    let docs = docs_dir(out);
    for shard in 0..=255u8 {
        fs::create_dir_all(docs.join(format!("{shard:02x}")))?;
    }
    let items: Vec<_> = plan.documents().filter(|(_, d)| d.batch == batch).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let results: Vec<io::Result<WriteSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let items = &items;
                s.spawn(move || {
                    let mut sum = WriteSummary::default();
                    let mut cda = String::with_capacity(8192);
                    let mut msg = String::with_capacity(16384);
                    for (person, doc) in items.iter().skip(t).step_by(threads) {
                        cda::render(person, doc, &mut cda);
                        let bytes = if doc.packaging == plan::Packaging::Bare {
                            cda.as_bytes()
                        } else {
                            archive::wrap(doc, &cda, &mut msg);
                            msg.as_bytes()
                        };
                        write_atomically(&doc_path(out, &doc.id), bytes)?;
                        sum.documents += 1;
                        sum.files += 1;
                        sum.bytes += bytes.len() as u64;
                    }
                    Ok(sum)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a writer thread panicked")))
            })
            .collect()
    });
    let mut total = WriteSummary::default();
    for r in results {
        let s = r?;
        total.documents += s.documents;
        total.files += s.files;
        total.bytes += s.bytes;
    }
    Ok(total)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = io::BufWriter::new(fs::File::create(&tmp)?);
        f.write_all(bytes)?;
        f.flush()?;
    }
    fs::rename(&tmp, path)
}

/// Writes `value` as pretty JSON to `path` (via a `.tmp` file and a rename).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = io::BufWriter::new(fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.flush()?;
    }
    fs::rename(&tmp, path)
}

/// What `regfeed gen` did (no identities in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSummary {
    pub patients: u32,
    pub cohort: u64,
    pub written: WriteSummary,
}

/// `regfeed gen`: plans, writes the corpus under `out/docs/` and, if asked,
/// the truth. Refuses a folder that already holds documents, so that a
/// corpus never mixes two seeds under one truth.
pub fn run_gen(
    patients: u32,
    seed: u64,
    out: &Path,
    truth_path: Option<&Path>,
) -> io::Result<GenSummary> {
    let docs = docs_dir(out);
    if docs.is_dir() && fs::read_dir(&docs)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already holds a corpus; choose an empty folder",
                docs.display()
            ),
        ));
    }
    let plan = plan(patients, seed);
    let written = write_corpus(&plan, out)?;
    let truth = truth::compute(&plan);
    if let Some(p) = truth_path {
        write_json(p, &truth)?;
    }
    Ok(GenSummary {
        patients,
        cohort: truth.cohort_size,
        written,
    })
}
