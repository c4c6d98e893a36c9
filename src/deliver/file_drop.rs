//! The file-drop sink: copies a sealed batch into a receiver's directory
//! (a mounted share, an SFTP chroot, an inbox watched by the register).
//!
//! # Protocol a receiver can rely on
//! - Each file is written as `.<name>.tmp-<pid>` in the target directory,
//!   fsynced, then given its final name, then the directory is fsynced. A
//!   final name therefore only ever shows a complete file. Receivers must
//!   ignore dot-files.
//! - The **data file goes first, the manifest last**. A receiver that sees
//!   `<feed>-<seq>.manifest.json` can trust that the data file it names is
//!   complete, and check it against the manifest's `data.sha256`.
//! - Idempotent: a final file that already exists with the sealed bytes
//!   counts as delivered (a retry after a crash or a lost receipt); one that
//!   exists with other bytes is a permanent [`DeliverError::Conflict`] and is
//!   never overwritten.
//! - The final name is made with a hard link, which fails rather than replace
//!   a file that appeared meanwhile; on file systems without hard links the
//!   sink falls back to a rename after checking the name is still free.
//! - Every byte copied is hashed: a sealed file that no longer matches its
//!   sealed digest is refused ([`DeliverError::SealBroken`]), never sent.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::DeliverError;
use crate::feed::durable::{TempFile, sync_dir};

/// A sealed batch as the outbox holds it: two files in `dir` and their
/// sealed digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    pub dir: PathBuf,
    pub data_file: String,
    pub data_sha256: String,
    pub manifest_file: String,
    pub manifest_sha256: String,
}

/// What a file drop returns: where the files are, their digests, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDropReceipt {
    pub data_path: PathBuf,
    pub manifest_path: PathBuf,
    pub data_sha256: String,
    pub manifest_sha256: String,
    pub delivered_at: DateTime<Utc>,
    /// Both files were already there with the sealed bytes.
    pub already_delivered: bool,
}

/// A file-drop sink delivering into one directory.
#[derive(Debug, Clone)]
pub struct FileDrop {
    target: PathBuf,
}

impl FileDrop {
    pub fn new(target: impl Into<PathBuf>) -> FileDrop {
        FileDrop {
            target: target.into(),
        }
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Delivers `batch` (see the module docs). Blocking I/O: call it from
    /// `spawn_blocking` in async code.
    pub fn deliver(&self, batch: &SealedBatch) -> Result<FileDropReceipt, DeliverError> {
        let data_there = self.place(&batch.dir, &batch.data_file, &batch.data_sha256)?;
        let manifest_there =
            self.place(&batch.dir, &batch.manifest_file, &batch.manifest_sha256)?;
        Ok(FileDropReceipt {
            data_path: self.target.join(&batch.data_file),
            manifest_path: self.target.join(&batch.manifest_file),
            data_sha256: batch.data_sha256.clone(),
            manifest_sha256: batch.manifest_sha256.clone(),
            delivered_at: Utc::now(),
            already_delivered: data_there && manifest_there,
        })
    }

    /// Puts one file in place. `Ok(true)` when it was already there.
    fn place(&self, src_dir: &Path, name: &str, expected: &str) -> Result<bool, DeliverError> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(DeliverError::BadName(name.to_string()));
        }
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| DeliverError::Io { op, path, source }
        };
        let target = self.target.join(name);
        if let Some(there) = self.existing(&target, name, expected)? {
            return Ok(there);
        }

        let src = src_dir.join(name);
        let mut input = File::open(&src).map_err(io_err("opening", &src))?;
        let (tmp, mut out) =
            TempFile::create(&self.target, name).map_err(io_err("creating in", &self.target))?;
        let found = copy_hashing(&mut input, &mut out).map_err(io_err("copying to", tmp.path()))?;
        if found != expected {
            return Err(DeliverError::SealBroken {
                file: name.to_string(),
                found,
                expected: expected.to_string(),
            });
        }
        out.sync_all().map_err(io_err("fsyncing", tmp.path()))?;
        drop(out);

        match std::fs::hard_link(tmp.path(), &target) {
            Ok(()) => drop(tmp), // removes the temporary name
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Someone else delivered it between our check and now.
                return self
                    .existing(&target, name, expected)?
                    .ok_or_else(|| io_err("linking", &target)(e));
            }
            Err(_) => {
                // No hard links here (some network and FAT file systems).
                if let Some(there) = self.existing(&target, name, expected)? {
                    return Ok(there);
                }
                std::fs::rename(tmp.path(), &target).map_err(io_err("renaming to", &target))?;
                tmp.disarm();
            }
        }
        sync_dir(&self.target).map_err(io_err("fsyncing directory", &self.target))?;
        Ok(false)
    }

    /// `Some(true)` if `target` holds the expected bytes, a conflict if it
    /// holds others, `None` if it does not exist.
    fn existing(
        &self,
        target: &Path,
        name: &str,
        expected: &str,
    ) -> Result<Option<bool>, DeliverError> {
        let mut f = match File::open(target) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DeliverError::Io {
                    op: "opening",
                    path: target.to_path_buf(),
                    source: e,
                });
            }
        };
        let existing = copy_hashing(&mut f, &mut io::sink()).map_err(|e| DeliverError::Io {
            op: "reading",
            path: target.to_path_buf(),
            source: e,
        })?;
        if existing == expected {
            Ok(Some(true))
        } else {
            Err(DeliverError::Conflict {
                file: name.to_string(),
                existing,
                expected: expected.to_string(),
            })
        }
    }
}

/// Copies `r` to `w`, returning the lowercase hex SHA-256 of what passed.
fn copy_hashing(r: &mut impl Read, w: &mut impl Write) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    w.flush()?;
    Ok(hex::encode(hasher.finalize()))
}
