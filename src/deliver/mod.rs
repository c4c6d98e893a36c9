//! Delivery of sealed batches to registers (DESIGN §1 steps 8–9, §5).
//!
//! This module owns getting a sealed batch's bytes to a receiver unchanged
//! and saying whether a failure is worth retrying. It never re-encodes or
//! re-seals a batch and never overwrites what a receiver already has.
//! Today: the file-drop sink ([`file_drop`]); HTTP, outbox and retry come
//! next.

pub mod file_drop;

use std::io;
use std::path::PathBuf;

/// Why a delivery failed. [`DeliverError::is_permanent`] tells the caller
/// whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The receiver already holds this batch's file with other bytes: a
    /// permanent error that must raise an alert; nothing is overwritten.
    #[error(
        "{file} already exists at the receiver with different content \
         (sha256 {existing}, sealed {expected}); not overwritten"
    )]
    Conflict {
        file: String,
        existing: String,
        expected: String,
    },
    /// The sealed file no longer matches its sealed digest.
    #[error(
        "sealed file {file} does not match its sealed sha256 (found {found}, sealed {expected})"
    )]
    SealBroken {
        file: String,
        found: String,
        expected: String,
    },
    /// A file name that is not a plain file name.
    #[error("file name {0:?} is not a plain file name")]
    BadName(String),
    /// An I/O failure (full disk, unmounted share, ...): transient.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DeliverError {
    /// Permanent errors make the batch dead at once; the rest are retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliverError::Conflict { .. }
            | DeliverError::SealBroken { .. }
            | DeliverError::BadName(_) => true,
            DeliverError::Io { .. } => false,
        }
    }
}
