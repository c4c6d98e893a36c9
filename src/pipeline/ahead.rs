//! Reading, hashing, decoding and mapping documents ahead of the store, on
//! `daemon.workers` threads.
//!
//! A [`Producer`] lists the source, decides what is new from the store's
//! `seen` entries, and cuts the new documents into the same chunks a run
//! always staged (`daemon.max_documents_per_batch` each, in listing order).
//! Each chunk goes out in units of at most [`UNIT`] documents; with more than
//! one worker a unit is read and decoded on a rayon pool while the run
//! stages the previous chunk. Results travel back in listing order, whatever
//! thread finished first, so a run's batches do not depend on the number of
//! threads. With one worker every unit is decoded inline, on the run's own
//! task: the whole run is one thread, in sequence.
//!
//! It must not write to the store, log anything about a person, or hold
//! more than [`AHEAD_DOCUMENTS`] decoded documents and [`IN_FLIGHT`] units
//! ahead of the run (the channel's bound).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::{Mapped, Mapper, PipelineError, sha256_hex};
use crate::decode::{self, DecodeError};
use crate::source::{ArchiveDir, Listed, Located, Source};
use crate::store::{self, NewDocument, Seen, Store};

/// Documents in one unit of work handed to the pool.
pub(super) const UNIT: usize = 256;
/// Listed files compared with the store's `seen` entries in one query, at
/// least (the listing's last files excepted).
const SEEN_BATCH: usize = 2048;
/// Units dispatched and not yet handed on, at most.
const IN_FLIGHT: usize = 4;
/// Decoded documents waiting for the run, at most (besides the chunk it is
/// staging): enough to keep the workers busy while the run writes, and the
/// same for any corpus, so peak memory does not grow with the number of
/// chunks a run stages.
const AHEAD_DOCUMENTS: usize = 8 * 1024;

/// A listed file that is new or changed since the store last saw it.
#[derive(Debug)]
pub(super) struct Candidate {
    pub listed: Listed,
    /// The digest the store recorded for this path, if any.
    pub seen_sha: Option<String>,
}

/// What became of one candidate.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Could not be read: not marked seen, tried again next run.
    Unreadable(io::Error),
    /// Read: its `seen` entry, and what decoding made of it.
    Read(Seen, Decoded),
}

#[derive(Debug)]
pub(super) enum Decoded {
    /// The same bytes as when last seen (touched, or copied over).
    Unchanged,
    /// Boxed: most outcomes are documents, and the box keeps the unit's
    /// vector of outcomes small to move between threads.
    Document(Box<NewDocumentAhead>),
    Refused {
        sha256: String,
        error: DecodeError,
    },
}

/// A decoded document's header facts, mapping and denial snapshot.
#[derive(Debug)]
pub(super) struct NewDocumentAhead {
    pub bytes: u64,
    pub doc: NewDocument,
    pub mapped: Option<Mapped>,
    pub snapshot: Option<store::DenialSnapshot>,
}

/// What the producer hands the run, in order.
#[derive(Debug)]
pub(super) enum Ahead {
    /// One listing group: files listed, how many are new or changed, and
    /// the store time spent deciding that.
    Listed { files: u64, new: u64, store_ns: u64 },
    /// Candidates with their outcomes, in listing order, and the thread
    /// time spent reading and decoding them.
    Unit {
        items: Vec<(Candidate, Outcome)>,
        busy_ns: u64,
    },
    /// The chunk is complete: stage it.
    EndChunk,
    /// The listing is done; how long after the high-water mark the latest
    /// new row arrived (a `sql` source).
    Done { late_ns: i64 },
}

pub(super) type AheadResult = Result<Ahead, PipelineError>;

/// A unit's results, now or later.
enum InFlight {
    Ready(Vec<(Candidate, Outcome)>, u64),
    Pending(oneshot::Receiver<(Vec<(Candidate, Outcome)>, u64)>),
    EndChunk,
}

/// Reads one candidate, hashes it and decodes it.
fn decode_one(
    mapper: &Mapper,
    source_name: &str,
    c: &Candidate,
    located: io::Result<Located>,
) -> Outcome {
    crate::failpoint::hit("decode");
    let limits = &mapper.cfg.limits;
    let (bytes, sha, too_large) = match located {
        Ok(Located::Bytes(b)) => {
            let sha = sha256_hex(&b);
            (b, sha, false)
        }
        Ok(Located::TooLarge { sha256 }) => (Vec::new(), sha256, true),
        Err(e) => return Outcome::Unreadable(e),
    };
    let seen = Seen {
        path: c.listed.path.clone(),
        size: c.listed.size as i64,
        mtime_ns: c.listed.mtime_ns,
        sha256: sha.clone(),
    };
    if c.seen_sha.as_deref() == Some(sha.as_str()) {
        return Outcome::Read(seen, Decoded::Unchanged);
    }
    let result = if too_large {
        Err(DecodeError::new(
            decode::ErrorClass::LimitExceeded,
            format!(
                "document is larger than max_document_bytes ({})",
                limits.max_document_bytes
            ),
        ))
    } else {
        decode::decode(&bytes, limits)
    };
    let decoded = match result {
        Ok(dd) => {
            let (doc, mapped, snapshot) = mapper.ingest(source_name, &c.listed.path, sha, &dd);
            Decoded::Document(Box::new(NewDocumentAhead {
                bytes: bytes.len() as u64,
                doc,
                mapped,
                snapshot,
            }))
        }
        Err(error) => Decoded::Refused { sha256: sha, error },
    };
    Outcome::Read(seen, decoded)
}

/// Where a unit's bytes come from: a folder the workers read themselves,
/// or documents the producer already fetched (a `sql` page).
enum Bytes {
    Dir(ArchiveDir),
    Given(Vec<io::Result<Located>>),
}

/// Decodes a unit, in parallel on the current rayon pool when `parallel`;
/// the results stay in the unit's order.
fn decode_unit(
    mapper: &Mapper,
    source_name: &str,
    unit: Vec<Candidate>,
    bytes: Bytes,
    parallel: bool,
) -> (Vec<(Candidate, Outcome)>, u64) {
    let max = mapper.cfg.limits.max_document_bytes;
    let (dir, mut given) = match bytes {
        Bytes::Dir(d) => (Some(d), Vec::new()),
        Bytes::Given(v) => (None, v.into_iter().map(Some).collect::<Vec<_>>()),
    };
    given.resize_with(unit.len(), || None);
    let work: Vec<(Candidate, Option<io::Result<Located>>)> = unit.into_iter().zip(given).collect();
    let one = |(c, given): (Candidate, Option<io::Result<Located>>)| {
        let t = std::time::Instant::now();
        let located = match (given, &dir) {
            (Some(l), _) => l,
            (None, Some(d)) => d.read_bounded(&c.listed.path, max),
            (None, None) => Err(io::Error::other(
                "the source returned fewer documents than were asked for",
            )),
        };
        let out = decode_one(mapper, source_name, &c, located);
        ((c, out), t.elapsed().as_nanos() as u64)
    };
    let timed: Vec<((Candidate, Outcome), u64)> = if parallel {
        work.into_par_iter().map(one).collect()
    } else {
        work.into_iter().map(one).collect()
    };
    let busy = timed.iter().map(|(_, t)| t).sum();
    (timed.into_iter().map(|(x, _)| x).collect(), busy)
}

/// Lists the source and decodes what is new, ahead of the run.
pub(super) struct Producer {
    pub source: Source,
    pub store: Store,
    pub mapper: Arc<Mapper>,
    /// `None`: decode inline (one worker).
    pub pool: Option<Arc<rayon::ThreadPool>>,
    pub chunk_size: usize,
}

/// Where the cutting into chunks stands.
#[derive(Default)]
struct Cut {
    in_chunk: usize,
    chunks: u64,
    in_flight: VecDeque<InFlight>,
}

impl Producer {
    /// The channel's bound, in messages: [`AHEAD_DOCUMENTS`] in units (or
    /// a whole chunk, when chunks are smaller), and a few more for listing
    /// counts and chunk ends.
    pub fn channel_bound(chunk_size: usize) -> usize {
        chunk_size.min(AHEAD_DOCUMENTS).div_ceil(UNIT) + 4
    }

    /// Produces until the listing is done, the run stops listening, or an
    /// error (sent as the last message).
    pub async fn run(self, tx: mpsc::Sender<AheadResult>) {
        if let Err(e) = self.produce(&tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    /// The sealed form of each listed locator, on the pool when there is
    /// one (sealing is a keyed hash and a keystream per path: an idle run
    /// of a large folder seals every file it lists).
    fn seal_all(&self, files: &[Listed]) -> Vec<String> {
        let locator = &self.mapper.locator;
        match &self.pool {
            Some(pool) if files.len() > UNIT => {
                pool.install(|| files.par_iter().map(|l| locator.seal(&l.path)).collect())
            }
            _ => files.iter().map(|l| locator.seal(&l.path)).collect(),
        }
    }

    fn source_err(&self, error: io::Error) -> PipelineError {
        PipelineError::Source {
            source_name: self.source.name().to_owned(),
            error,
        }
    }

    /// `Ok(false)` when the run stopped listening.
    async fn produce(&self, tx: &mpsc::Sender<AheadResult>) -> Result<bool, PipelineError> {
        let mut store_ns = 0u64;
        let name = self.source.name();
        let high_water = if self.source.uses_high_water() {
            timed!(store_ns, self.store.seen_high_water(name))?
        } else {
            None
        };
        let mut listing = self
            .source
            .list(high_water)
            .await
            .map_err(|e| self.source_err(e))?;
        // How long after the high-water mark the latest new row arrived.
        let mut late_ns = 0i64;
        let mut pending: VecDeque<Candidate> = VecDeque::new();
        let mut cut = Cut::default();
        // Groups (a folder's files, a page of rows) are compared with the
        // store together, [`SEEN_BATCH`] files or more at a time: a folder
        // of a few files should not cost a query of its own.
        let mut batch: Vec<Listed> = Vec::new();
        let mut more = true;
        while more {
            match listing.next_group().await {
                Some(files) => batch.extend(files.map_err(|e| self.source_err(e))?),
                None => more = false,
            }
            if batch.is_empty() || (more && batch.len() < SEEN_BATCH) {
                continue;
            }
            let files = std::mem::take(&mut batch);
            let listed = files.len() as u64;
            // The store knows locators sealed (`store::locator`).
            let sealed: Vec<String> = self.seal_all(&files);
            let keys: Vec<(&str, i64, i64)> = files
                .iter()
                .zip(&sealed)
                .map(|(l, s)| (s.as_str(), l.size as i64, l.mtime_ns))
                .collect();
            let changed = timed!(store_ns, self.store.seen_changed(name, &keys))?;
            drop(keys);
            drop(sealed);
            let new = changed.len() as u64;
            let mut files: Vec<Option<Listed>> = files.into_iter().map(Some).collect();
            for (i, seen_sha) in changed {
                let Some(l) = files[i].take() else { continue };
                if let Some(hw) = high_water
                    && seen_sha.is_none()
                {
                    late_ns = late_ns.max(hw.saturating_sub(l.mtime_ns));
                }
                pending.push_back(Candidate {
                    seen_sha,
                    listed: l,
                });
            }
            drop(files);
            let counts = Ahead::Listed {
                files: listed,
                new,
                store_ns: std::mem::take(&mut store_ns),
            };
            if tx.send(Ok(counts)).await.is_err()
                || !self.dispatch(&mut pending, &mut cut, false, tx).await?
            {
                return Ok(false);
            }
        }
        if !self.dispatch(&mut pending, &mut cut, true, tx).await? {
            return Ok(false);
        }
        // Even with no new files, other feeds may have ingested documents
        // this feed has not processed yet: one chunk at least.
        if cut.in_chunk > 0 || cut.chunks == 0 {
            cut.in_flight.push_back(InFlight::EndChunk);
        }
        while let Some(f) = cut.in_flight.pop_front() {
            if !self.forward(f, tx).await {
                return Ok(false);
            }
        }
        Ok(tx.send(Ok(Ahead::Done { late_ns })).await.is_ok())
    }

    /// Starts units of whole pending candidates (the rest too when `last`),
    /// closing a chunk every `chunk_size`; hands on the oldest units while
    /// more than [`IN_FLIGHT`] are under way.
    async fn dispatch(
        &self,
        pending: &mut VecDeque<Candidate>,
        cut: &mut Cut,
        last: bool,
        tx: &mpsc::Sender<AheadResult>,
    ) -> Result<bool, PipelineError> {
        loop {
            let want = UNIT.min(self.chunk_size - cut.in_chunk);
            let k = if pending.len() >= want {
                want
            } else if last && !pending.is_empty() {
                pending.len()
            } else {
                return Ok(true);
            };
            let unit: Vec<Candidate> = pending.drain(..k).collect();
            let started = self.start(unit).await?;
            cut.in_flight.push_back(started);
            cut.in_chunk += k;
            if cut.in_chunk == self.chunk_size {
                cut.in_flight.push_back(InFlight::EndChunk);
                cut.in_chunk = 0;
                cut.chunks += 1;
            }
            while cut
                .in_flight
                .iter()
                .filter(|f| !matches!(f, InFlight::EndChunk))
                .count()
                > IN_FLIGHT
            {
                let Some(f) = cut.in_flight.pop_front() else {
                    break;
                };
                if !self.forward(f, tx).await {
                    return Ok(false);
                }
            }
        }
    }

    /// Reads (a `sql` page) and starts decoding one unit.
    async fn start(&self, unit: Vec<Candidate>) -> Result<InFlight, PipelineError> {
        let bytes = match &self.source {
            Source::ArchiveDir(d) => Bytes::Dir(d.clone()),
            other => {
                let max = self.mapper.cfg.limits.max_document_bytes;
                let mut got = Vec::with_capacity(unit.len());
                for group in unit.chunks(other.read_group().max(1)) {
                    let paths: Vec<&str> = group.iter().map(|c| c.listed.path.as_str()).collect();
                    got.extend(
                        other
                            .read_many(&paths, max)
                            .await
                            .map_err(|e| self.source_err(e))?,
                    );
                }
                Bytes::Given(got)
            }
        };
        let Some(pool) = &self.pool else {
            let (items, busy) = decode_unit(&self.mapper, self.source.name(), unit, bytes, false);
            return Ok(InFlight::Ready(items, busy));
        };
        let (done, rx) = oneshot::channel();
        let mapper = Arc::clone(&self.mapper);
        let name = self.source.name().to_owned();
        pool.spawn(move || {
            // A panic drops `done`: the run fails with a worker error
            // instead of the pool aborting the process.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decode_unit(&mapper, &name, unit, bytes, true)
            }));
            if let Ok(out) = out {
                let _ = done.send(out);
            }
        });
        Ok(InFlight::Pending(rx))
    }

    /// Hands one unit (waiting for it) or a chunk's end to the run.
    async fn forward(&self, f: InFlight, tx: &mpsc::Sender<AheadResult>) -> bool {
        let msg = match f {
            InFlight::Ready(items, busy_ns) => Ok(Ahead::Unit { items, busy_ns }),
            InFlight::Pending(rx) => match rx.await {
                Ok((items, busy_ns)) => Ok(Ahead::Unit { items, busy_ns }),
                Err(_) => Err(PipelineError::Worker(
                    "a decoding worker stopped without a result".into(),
                )),
            },
            InFlight::EndChunk => Ok(Ahead::EndChunk),
        };
        tx.send(msg).await.is_ok()
    }
}
