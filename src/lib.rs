//! regfeed: feeds Finland's national health registers from Kanta patient
//! records.
//!
//! # Layout
//! - [`record`]: the canonical record model every stage speaks.
//! - [`codes`]: the table of code systems and their versioned OIDs.
//! - [`units`]: units of measure with UCUM semantics (`config/units.toml`).
//! - [`decode`]: CDA R2 and RCMR archive messages → records; hetu;
//!   well-formedness and limits.
//! - [`config`]: the TOML shape → validated config, with file/line/field errors.
//! - [`loaded`]: the validated config with every feed's mapping compiled (what
//!   a run takes); above `config` and `mapping`.
//! - [`source`]: where documents come from (`archive_dir`, `sql`); every
//!   source is also a locator that re-reads what it yielded.
//! - [`mapping`]: register feeds as data — cohort, selection, columns.
//! - [`aggregate`]: statistics tables of aggregate feeds, with small-cell
//!   suppression.
//! - [`identity`]: keys from files or systemd credentials; person index,
//!   pseudonyms and record ids (keyed HMAC-SHA-256).
//! - [`store`]: SQLite or PostgreSQL state: seen files, documents, cohort,
//!   row index, held records, runs, the outbox, statistics cells.
//! - [`policy`]: the objection/exception decision table, one pure function.
//! - [`pipeline`]: one feed run, source to staged batch.
//! - [`preflight`]: what a run will need (sources readable, sinks writable
//!   or resolvable, keys safe), for `validate` and `/readyz`.
//! - [`quarantine`]: refused documents for operators: list, show, retry.
//! - [`feed`]: batch data files (CSV, JSON Lines) and manifests, sealed to disk.
//! - [`deliver`]: getting sealed batches to registers: outbox, retry, file
//!   drop and HTTP sinks.
//! - [`failpoint`]: named crash points for tests (`REGFEED_FAILPOINT`).
//! - [`demo`]: the embedded default: keys, mappings and a config in a folder.
//! - [`audit`]: the hash-chained audit trail; verify, subject lookup, FHIR
//!   AuditEvent export.
//! - [`app`]: the composition root: keys, store, stage → seal → deliver.
//! - [`daemon`]: `regfeed run`: scheduler, outbox loops, readiness, leases, reload,
//!   graceful stop, systemd notify.
//! - [`synth`]: `regfeed gen`, the deterministic synthetic Kanta corpus and
//!   its truth file (synthetic identities only).
//! - [`cli`]: the command line (clap); the binary is a thin shell over it.
//!   [`cli::decode`] prints decoded documents with pseudonymised patients.
//! - [`telemetry`]: tracing subscriber (plain or JSON, to stderr); peak RSS;
//!   metric names; the `/metrics`, `/healthz`, `/readyz` endpoint.
//! - [`schedule`]: cron expressions and `next_fire`, the one function that
//!   decides every fire time (Europe/Helsinki, DST rules of DESIGN.md §7).

pub mod aggregate;
pub mod app;
pub mod audit;
pub mod cli;
pub mod codes;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod deliver;
pub mod demo;
pub mod failpoint;
pub mod feed;
pub mod identity;
pub mod loaded;
pub mod mapping;
pub mod ownership;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod quarantine;
pub mod record;
pub mod schedule;
pub mod source;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod units;
