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

    /// Re-reads a document this source yielded before.
    pub fn locate(&self, path: &str) -> std::io::Result<Vec<u8>> {
        match self {
            Source::ArchiveDir(a) => a.read(path),
        }
    }
}
