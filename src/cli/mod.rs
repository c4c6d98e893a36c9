//! The command line (DESIGN.md §8): clap types and the dispatch to each
//! command's module. Parses arguments and prints results; the work itself is
//! the library's.
//!
//! It must not print a source path, a hetu or a name: a file name may contain
//! a hetu, so files are named by argument position and digest.

pub mod decode;

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
    /// Decode documents and print their header and records as JSON lines.
    #[command(long_about = decode::LONG_ABOUT)]
    Decode {
        /// Files to decode (bare CDA R2 documents or RCMR archive messages).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

/// Runs a parsed command line (telemetry already started) and returns the
/// process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Decode { paths } => decode::main(&paths),
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
