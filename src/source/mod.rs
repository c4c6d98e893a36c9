//! Sources yield documents not yet processed and re-read documents they
//! yielded before (every source is also a locator). Kinds: `archive_dir`
//! (a folder; the embedded default). A source never decodes and never logs
//! a path: file names may contain a hetu.

pub mod archive_dir;

use crate::config::{SourceConfig, SourceKind};

pub use archive_dir::{ArchiveDir, Listed};

/// A running source, built from its validated config.
#[derive(Debug, Clone)]
pub enum Source {
    ArchiveDir(ArchiveDir),
}

impl Source {
    pub fn build(cfg: &SourceConfig) -> Source {
        match &cfg.kind {
            SourceKind::ArchiveDir { path } => Source::ArchiveDir(ArchiveDir::new(&cfg.name, path)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Source::ArchiveDir(a) => a.name(),
        }
    }

    /// Reads (or re-reads) a document this source yielded, holding it only
    /// if it is at most `max` bytes.
    pub fn locate_bounded(&self, path: &str, max: usize) -> std::io::Result<Located> {
        match self {
            Source::ArchiveDir(a) => a.read_bounded(path, max),
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
