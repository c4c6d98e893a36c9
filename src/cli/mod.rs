//! The command line (DESIGN.md §8): clap types and the dispatch to each
//! command's module. Parses arguments and prints results; the work itself is
//! the library's.
//!
//! It must not print a source path, a hetu or a name: a file name may contain
//! a hetu, so files are named by argument position and digest.

pub mod audit;
pub mod decode;
pub mod feeds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "regfeed",
    version,
    about = "Feeds national health registers from Kanta records",
    after_help = "Logs go to standard error; their filter is read from REGFEED_LOG, else RUST_LOG \
                  (default: info)."
)]
pub struct Cli {
    /// How log lines on standard error are written.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "REGFEED_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a synthetic corpus, keys and a config in DIR, run every shipped
    /// feed once (SQLite, file-drop sink) and say where the batches are.
    Demo {
        /// Folder for the demo (replaced if an earlier demo made it).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Synthetic patients to generate.
        #[arg(long, default_value_t = 2000)]
        patients: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Use this folder of documents instead of generating a corpus.
        #[arg(long, value_name = "DIR")]
        corpus: Option<PathBuf>,
        /// Write keys, mappings and the config, and run nothing.
        #[arg(long)]
        setup_only: bool,
    },
    /// Write a deterministic synthetic Kanta corpus (test-range hetus only).
    Gen {
        #[arg(long)]
        patients: u32,
        #[arg(long)]
        seed: u64,
        /// Corpus folder (documents go under DIR/docs/).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Where to write the truth file (JSON): what the diabetes feed must
        /// contain, from the generator's own plan.
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
    },
    /// Check the config, every mapping and every key; exit 0, or 78 with
    /// messages naming file, line and field.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// One run of one feed now, including delivery; non-zero exit if it failed.
    Once {
        #[arg(long)]
        feed: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// A dry run: the rows the feed's next run would stage, as JSON lines
    /// (the person column of a hetu feed masked). Changes nothing.
    Preview {
        #[arg(long)]
        feed: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Held records.
    Held {
        #[command(subcommand)]
        command: HeldCommand,
    },
    /// The audit trail: verify the hash chain, answer for one person, export.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Decode documents and print their header and records as JSON lines.
    #[command(long_about = decode::LONG_ABOUT)]
    Decode {
        /// Files to decode (bare CDA R2 documents or RCMR archive messages).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HeldCommand {
    /// Counts of held records by feed and reason.
    List {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Runs a parsed command line (telemetry already started) and returns the
/// process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Decode { paths } => decode::main(&paths),
        Command::Demo {
            dir,
            patients,
            seed,
            corpus,
            setup_only,
        } => feeds::demo(&feeds::DemoArgs {
            dir: dir.unwrap_or_else(feeds::default_demo_dir),
            patients,
            seed,
            corpus,
            setup_only,
        }),
        Command::Gen {
            patients,
            seed,
            out,
            truth,
        } => feeds::gen_corpus(patients, seed, &out, truth.as_deref()),
        Command::Validate { config } => feeds::validate(config.as_deref()),
        Command::Once { feed, config } => feeds::once(config.as_deref(), &feed),
        Command::Preview {
            feed,
            limit,
            config,
        } => feeds::preview(config.as_deref(), &feed, limit),
        Command::Held {
            command: HeldCommand::List { config },
        } => feeds::held_list(config.as_deref()),
        Command::Audit { command } => audit::run(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
