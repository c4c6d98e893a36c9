//! Delivery of sealed batches to registers (DESIGN §1 steps 8–9, §5).
//!
//! This module owns getting a sealed batch's bytes to a receiver unchanged
//! and saying whether a failure is worth retrying. It never re-encodes or
//! re-seals a batch and never overwrites what a receiver already has.
//! Sinks: [`file_drop`] and [`http`]; [`retry`] times retries; [`outbox`]
//! drives each feed's batches through sealed → sending → delivered or dead.

pub mod file_drop;
pub mod http;
pub mod outbox;
pub mod prune;
pub mod retry;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The register answered 409: it holds this sequence with other
    /// content. Permanent; raises an alert; nothing is overwritten.
    #[error("the register holds this sequence with different content (409): {message}")]
    RegisterConflict { message: String },
    /// The register answered with another error status. 408, 425, 429 and
    /// 5xx are retried (honouring `Retry-After`); other statuses are
    /// permanent, with the register's message kept.
    #[error("the register answered {status}: {message}")]
    Http {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: timeout, refused or reset connection, TLS failure.
    /// Retried.
    #[error("{class}: {message}")]
    Transport {
        class: &'static str,
        message: String,
    },
    /// A 2xx answer that is not a receipt for this batch. Permanent: an
    /// operator must look (the register may or may not hold the batch;
    /// `outbox retry` re-sends it idempotently).
    #[error("the register's receipt is not valid: {0}")]
    BadReceipt(String),
    /// The sink cannot be set up (token, CA, client certificate). The batch
    /// is left as it is.
    #[error("sink setup: {0}")]
    Setup(String),
}

impl DeliverError {
    /// Permanent errors make the batch dead at once; the rest are retried.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliverError::Conflict { .. }
            | DeliverError::SealBroken { .. }
            | DeliverError::BadName(_)
            | DeliverError::RegisterConflict { .. }
            | DeliverError::BadReceipt(_)
            | DeliverError::Setup(_) => true,
            DeliverError::Http { status, .. } => !is_retryable_status(*status),
            DeliverError::Io { .. } | DeliverError::Transport { .. } => false,
        }
    }

    /// A low-cardinality class for attempt records and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            DeliverError::Conflict { .. } | DeliverError::RegisterConflict { .. } => "conflict",
            DeliverError::SealBroken { .. } => "seal_broken",
            DeliverError::BadName(_) => "bad_name",
            DeliverError::Io { .. } => "io",
            DeliverError::Http { status, .. } if *status >= 500 => "http_5xx",
            DeliverError::Http { .. } => "http_4xx",
            DeliverError::Transport { class, .. } => class,
            DeliverError::BadReceipt(_) => "bad_receipt",
            DeliverError::Setup(_) => "setup",
        }
    }

    /// The HTTP status, when the register answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliverError::Http { status, .. } => Some(*status),
            DeliverError::RegisterConflict { .. } => Some(409),
            _ => None,
        }
    }

    /// The register's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliverError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A conflict: the receiver holds this sequence with other bytes.
    pub fn is_conflict(&self) -> bool {
        self.class() == "conflict"
    }
}

/// 408, 425, 429 and 5xx are worth another attempt.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}
