//! Sources yield documents not yet processed and re-read documents they
//! yielded before (every source is also a locator). Kinds: `archive_dir`
//! (a folder; the embedded default) and `sql` (a PostgreSQL table). A source
//! lists and reads; what is new is decided by the pipeline against the
//! store's `seen` table. A source never decodes and never logs a path or a
//! row id: file names may contain a hetu.

pub mod archive_dir;
pub mod sql;

use std::io;

use crate::config::{SourceConfig, SourceKind};

pub use archive_dir::{ArchiveDir, Listed, Walk};
pub use sql::{Scan, SqlSource};

/// Documents an `archive_dir` source reads per group: one file at a time
/// (a `sql` source reads a page per query).
const FILE_GROUP: usize = 1;

/// A running source, built from its validated config.
#[derive(Debug, Clone)]
pub enum Source {
    ArchiveDir(ArchiveDir),
    Sql(SqlSource),
}

/// One listing of a source, in groups: a folder's files, or a page of rows.
/// Each entry's `path` is what [`Source::locate`] takes.
#[derive(Debug)]
pub enum Listing<'a> {
    Walk(Walk),
    Sql(Scan<'a>),
}

impl Listing<'_> {
    /// The next group, or `None` when the listing is done.
    pub async fn next_group(&mut self) -> Option<io::Result<Vec<Listed>>> {
        match self {
            Listing::Walk(w) => w.next(),
            Listing::Sql(s) => s.next_page().await.transpose(),
        }
    }
}

impl Source {
    /// Builds the running source. A `sql` source reads its password file
    /// here; nothing connects yet.
    pub fn build(cfg: &SourceConfig) -> io::Result<Source> {
        Ok(match &cfg.kind {
            SourceKind::ArchiveDir { path } => Source::ArchiveDir(ArchiveDir::new(&cfg.name, path)),
            SourceKind::Sql(sql) => Source::Sql(SqlSource::new(&cfg.name, sql)?),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Source::ArchiveDir(a) => a.name(),
            Source::Sql(s) => s.name(),
        }
    }

    /// Whether the source can be read now (readiness): its folder listed, or
    /// its table queried. The error names no path.
    pub async fn probe(&self) -> io::Result<()> {
        match self {
            Source::ArchiveDir(a) => {
                let a = a.clone();
                tokio::task::spawn_blocking(move || a.probe())
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?
            }
            Source::Sql(s) => s.probe().await,
        }
    }

    /// Whether a listing starts from a high-water mark (the latest `mtime_ns`
    /// the store has seen for the source).
    pub fn uses_high_water(&self) -> bool {
        matches!(self, Source::Sql(_))
    }

    /// Lists the source; `high_water_ns` is the latest `mtime_ns` seen
    /// (ignored by `archive_dir`, which lists everything each run).
    pub async fn list(&self, high_water_ns: Option<i64>) -> io::Result<Listing<'_>> {
        Ok(match self {
            Source::ArchiveDir(a) => Listing::Walk(a.walk()),
            Source::Sql(s) => Listing::Sql(s.scan(high_water_ns).await?),
        })
    }

    /// How many documents [`Source::read_many`] should be given at once.
    pub fn read_group(&self) -> usize {
        match self {
            Source::ArchiveDir(_) => FILE_GROUP,
            Source::Sql(s) => s.page_size(),
        }
    }

    /// Reads listed documents, in order: one result each (a file or row that
    /// vanished is an error of its own), or an error for the whole group.
    /// A document over `max` bytes is not held: a file is hashed in chunks
    /// (tests/decode_hostile.rs); a row, fetched whole with its page, is
    /// hashed and dropped.
    pub async fn read_many(
        &self,
        paths: &[&str],
        max: usize,
    ) -> io::Result<Vec<io::Result<Located>>> {
        match self {
            Source::ArchiveDir(a) => Ok(paths.iter().map(|p| a.read_bounded(p, max)).collect()),
            Source::Sql(s) => Ok(s
                .fetch(paths)
                .await?
                .into_iter()
                .map(|r| {
                    r.map(|b| {
                        if b.len() > max {
                            Located::TooLarge {
                                sha256: crate::feed::sha256_hex(&b),
                            }
                        } else {
                            Located::Bytes(b)
                        }
                    })
                })
                .collect()),
        }
    }

    /// Re-reads a document this source yielded before.
    pub async fn locate(&self, path: &str) -> io::Result<Vec<u8>> {
        match self {
            Source::ArchiveDir(a) => a.read(path),
            Source::Sql(s) => s.read(path).await,
        }
    }
}

/// A document as read, or only its digest when it is too large to hold.
#[derive(Debug)]
pub enum Located {
    Bytes(Vec<u8>),
    /// Larger than the limit: hashed in chunks, never held. The SHA-256 is
    /// lowercase hex.
    TooLarge {
        sha256: String,
    },
}
