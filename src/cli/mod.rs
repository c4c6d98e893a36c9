//! The command line (DESIGN.md §8): clap types and the dispatch to each
//! command's module. Parses arguments and prints results; the work itself is
//! the library's.
//!
//! It must not print a source path, a hetu or a name: a file name may contain
//! a hetu, so files are named by argument position and digest.

pub mod audit;
pub mod decode;
pub mod feeds;
pub mod outbox;
pub mod quarantine;
pub mod report;
pub mod run;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "regfeed",
    version,
    about = "Feeds national health registers from Kanta records",
    after_help = "Logs go to standard error. Format: --log-format (or REGFEED_LOG_FORMAT), else the \
                  config's [log] format (REGFEED_LOG__FORMAT), else plain. Filter: REGFEED_LOG, \
                  else RUST_LOG, else the config's [log] level (REGFEED_LOG__LEVEL), else info."
)]
pub struct Cli {
    /// How log lines on standard error are written (default: the config's
    /// `[log] format`, else plain).
    #[arg(long, global = true, value_enum, env = "REGFEED_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// The config a command will read, for the log settings read before it runs:
/// `None` when the command takes no `--config`, else where it is
/// ([`crate::loaded::Config::locate`]).
pub fn config_of(matches: &clap::ArgMatches) -> Option<PathBuf> {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let flag = m.try_get_one::<PathBuf>("config").ok()?;
    Some(crate::config::locate(flag.map(PathBuf::as_path)))
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
        /// Seed of the synthetic corpus: the same seed, the same documents.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Use this folder of documents instead of generating a corpus.
        #[arg(long, value_name = "DIR")]
        corpus: Option<PathBuf>,
        /// Write keys, mappings and the config, and run nothing.
        #[arg(long)]
        setup_only: bool,
        /// Log at `info` on standard error (default `warn`, unless
        /// REGFEED_LOG or RUST_LOG says otherwise).
        #[arg(short, long)]
        verbose: bool,
    },
    /// Write a deterministic synthetic Kanta corpus (test-range hetus only).
    Gen {
        /// Synthetic patients to generate.
        #[arg(long)]
        patients: u32,
        /// Seed of the corpus: the same seed, the same documents.
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
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// One run of one feed now, including delivery; non-zero exit if it failed.
    Once {
        /// The feed to run (its `name` in the config).
        #[arg(long)]
        feed: String,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to wait while the daemon (or another `once`) runs or
        /// delivers the feed, e.g. `30s`; after that, refuse (exit 75).
        /// Default: refuse at once.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::schedule::parse_duration)]
        wait: std::time::Duration,
    },
    /// The daemon: run each feed on its schedule, deliver continuously,
    /// serve /metrics, /healthz and /readyz. SIGTERM stops, SIGHUP reloads.
    Run {
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Feeds with their last and next run, outcome, backlog and dead batches.
    Status {
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON document for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A dry run: the rows the feed's next run would stage, as JSON lines
    /// (the person column of a hetu feed masked). Changes nothing.
    Preview {
        /// The feed to preview (its `name` in the config).
        #[arg(long)]
        feed: String,
        /// Rows to print at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Objections, restrictions, denials of disclosure and turvakielto
    /// flags: import from a file (the hetu is read from the file, never from
    /// the command line), list counts.
    Objections {
        #[command(subcommand)]
        command: ObjectionsCommand,
    },
    /// Held records.
    Held {
        #[command(subcommand)]
        command: HeldCommand,
    },
    /// The outbox: list batches, retry a dead one, replay a delivered one.
    Outbox {
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    /// Documents the decoder refused: list, show one, retry a corrected one.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// For receivers: check received batches.
    Feed {
        #[command(subcommand)]
        command: outbox::FeedCommand,
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
pub enum ObjectionsCommand {
    /// Import a CSV (header row) or JSON Lines file in one transaction;
    /// columns are documented in README.md.
    Import {
        /// The CSV or JSON Lines file to import.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Counts by kind and party; never identities.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HeldCommand {
    /// Counts of held records by feed and reason.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Runs a parsed command line (telemetry already started) and returns the
/// process exit code.
pub fn run(cli: Cli) -> ExitCode {
    report::set_format(cli.log_format.unwrap_or_default());
    match cli.command {
        Command::Decode { paths } => decode::main(&paths),
        Command::Demo {
            dir,
            patients,
            seed,
            corpus,
            setup_only,
            verbose: _,
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
        Command::Once { feed, config, wait } => feeds::once(config.as_deref(), &feed, wait),
        Command::Run { config } => run::main(config.as_deref()),
        Command::Status { config, json } => status::main(config.as_deref(), json),
        Command::Preview {
            feed,
            limit,
            config,
        } => feeds::preview(config.as_deref(), &feed, limit),
        Command::Held {
            command: HeldCommand::List { config, json },
        } => feeds::held_list(config.as_deref(), json),
        Command::Objections { command } => match command {
            ObjectionsCommand::Import { file, config } => {
                feeds::objections_import(config.as_deref(), &file)
            }
            ObjectionsCommand::List { config, json } => {
                feeds::objections_list(config.as_deref(), json)
            }
        },
        Command::Outbox { command } => outbox::outbox(command),
        Command::Quarantine { command } => quarantine::run(command),
        Command::Feed { command } => outbox::feed(command),
        Command::Audit { command } => audit::run(command),
    }
}

impl Cli {
    /// Whether standard output closing early (`regfeed outbox list | head
    /// -1`) may end the process at once, as it ends `ls` or `cat` (the
    /// binary then restores SIGPIPE's default action): true for every
    /// command that prints what is already done, a listing or the outcome of
    /// a step it has committed (`objections import`, `quarantine retry`,
    /// `outbox prune`), so being cut off there loses nothing. Not for `run`,
    /// `once` and `demo`, which print between steps and must finish: they
    /// keep SIGPIPE ignored (a daemon must not die because a log reader went
    /// away) and drop lines nobody reads ([`report::say`]).
    pub fn output_may_end_the_process(&self) -> bool {
        !matches!(
            self.command,
            Command::Run { .. } | Command::Once { .. } | Command::Demo { .. }
        )
    }

    /// The log filter when neither REGFEED_LOG nor RUST_LOG is set: the
    /// demo logs only warnings unless asked (`-v`), so its summary on
    /// standard output stands alone; everything else logs at `info`.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo { verbose: false, .. } => "warn",
            _ => crate::telemetry::DEFAULT_FILTER,
        }
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

    /// Every flag and argument of every subcommand says what it is for in
    /// `--help` (hidden ones aside).
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "regfeed", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }
}
