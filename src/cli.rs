//! The command line (DESIGN.md §8). Parses arguments with clap and calls the
//! library; prints results. Owns no logic of its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "regfeed",
    version,
    about = "Feeds national health registers from Kanta records"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode documents and print their header and records as JSON lines.
    Decode {
        /// Files to decode (bare CDA or RCMR archive messages).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode { paths } => {
            let _ = paths;
            ExitCode::SUCCESS
        }
    }
}
