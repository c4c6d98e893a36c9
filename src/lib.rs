//! regfeed: feeds Finland's national health registers from Kanta patient
//! records.
//!
//! # Layout
//! - [`record`]: the canonical record model every stage speaks.
//! - [`codes`]: the table of code systems and their versioned OIDs.
//! - [`decode`]: CDA R2 and RCMR archive messages → records; hetu;
//!   well-formedness and limits.
//! - [`identity`]: keys from files or systemd credentials; person index,
//!   pseudonyms and record ids (keyed HMAC-SHA-256).
//! - [`feed`]: batch data files (CSV, JSON Lines) and manifests, sealed to disk.
//! - [`deliver`]: getting sealed batches to registers (file drop).
//! - [`cli`]: the command line (clap); the binary is a thin shell over it.

pub mod cli;
pub mod codes;
pub mod decode;
pub mod deliver;
pub mod feed;
pub mod identity;
pub mod record;
