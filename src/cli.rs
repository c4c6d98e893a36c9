//! The command line (DESIGN.md §8). Parses arguments with clap and calls the
//! library; prints results. Owns no logic of its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "regfeed", version, about = "Feeds national health registers from Kanta records")]
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
    /// Write a deterministic synthetic Kanta corpus (test-range hetus only).
    Gen {
        #[arg(long)]
        patients: u32,
        #[arg(long)]
        seed: u64,
        /// Corpus folder (documents go under DIR/docs/).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Where to write the truth file (JSON).
        #[arg(long)]
        truth: Option<std::path::PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode { paths } => {
            let _ = paths;
            ExitCode::SUCCESS
        }
        Command::Gen {
            patients,
            seed,
            out,
            truth,
        } => match crate::synth::run_gen(patients, seed, &out, truth.as_deref()) {
            Ok(s) => {
                println!(
                    "wrote {} documents ({} files, {:.1} MB) for {} patients (cohort {}) under {}",
                    s.written.documents,
                    s.written.files,
                    s.written.bytes as f64 / 1e6,
                    s.patients,
                    s.cohort,
                    crate::synth::docs_dir(&out).display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("regfeed gen: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
