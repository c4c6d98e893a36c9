//! regfeed: feeds Finland's national health registers from Kanta patient
//! records.
//!
//! # Layout
//! - [`record`]: the canonical record model every stage speaks.
//! - [`codes`]: the table of code systems and their versioned OIDs.
//! - [`decode`]: CDA R2 and RCMR archive messages → records; hetu;
//!   well-formedness and limits.
//! - [`synth`]: `regfeed gen`, the deterministic synthetic Kanta corpus and
//!   its truth file (synthetic identities only).
//! - [`cli`]: the command line (clap); the binary is a thin shell over it.

pub mod cli;
pub mod codes;
pub mod decode;
pub mod record;
pub mod synth;
