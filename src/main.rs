//! The `regfeed` binary: parse the command line, start telemetry, hand over
//! to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = regfeed::cli::Cli::parse();
    regfeed::deliver::http::install_crypto_provider();
    if let Err(e) = regfeed::telemetry::init(cli.log_format, &regfeed::telemetry::filter_from_env())
    {
        eprintln!("regfeed: {e}");
        // The same code clap uses for a usage error: the invocation is wrong.
        return ExitCode::from(2);
    }
    regfeed::cli::run(cli)
}
