//! The `regfeed` binary: parse the command line, start telemetry, hand over
//! to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = regfeed::cli::Cli::command().get_matches();
    let cli = regfeed::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    regfeed::deliver::http::install_crypto_provider();
    // The config's [log] settings, under the command line's and RUST_LOG's.
    let config = regfeed::cli::config_of(&matches);
    let log = regfeed::config::log_settings(config.as_deref(), &regfeed::config::env_overrides());
    let format = regfeed::telemetry::format_or(cli.log_format, log.format);
    let filter = regfeed::telemetry::filter_or(log.level.as_deref());
    if let Err(e) = regfeed::telemetry::init(format, &filter) {
        eprintln!("regfeed: {e}");
        // The same code clap uses for a usage error: the invocation is wrong.
        return ExitCode::from(2);
    }
    regfeed::cli::run(cli)
}
