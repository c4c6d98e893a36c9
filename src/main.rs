//! The `regfeed` binary: parse the command line, start telemetry, hand over
//! to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = regfeed::cli::Cli::parse();
    regfeed::deliver::http::install_crypto_provider();
    let filter = regfeed::telemetry::filter_from_env_or(cli.default_log_filter());
    if let Err(e) = regfeed::telemetry::init(cli.log_format, &filter) {
        let line = regfeed::cli::report::fatal_line(cli.log_format, &e.to_string());
        eprintln!("{line}");
        // The same code clap uses for a usage error: the invocation is wrong.
        return ExitCode::from(2);
    }
    regfeed::cli::run(cli)
}
