//! regfeed: feeds Finland's national health registers from Kanta patient
//! records.
//!
//! # Layout
//! - [`record`]: the canonical record model every stage speaks.
//! - [`codes`]: the table of code systems and their versioned OIDs.
//! - [`decode`]: CDA R2 and RCMR archive messages → records; hetu;
//!   well-formedness and limits.
//! - [`cli`]: the command line (clap); the binary is a thin shell over it.
//!   [`cli::decode`] prints decoded documents with pseudonymised patients.
//! - [`telemetry`]: tracing subscriber (plain or JSON, to stderr); peak RSS.

pub mod cli;
pub mod codes;
pub mod decode;
pub mod record;
pub mod telemetry;
