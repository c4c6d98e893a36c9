//! The `regfeed` binary: parse the command line, start telemetry, hand over
//! to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

// mimalloc, not glibc's malloc: a feed run allocates and frees small
// strings by the million, across the decoding and store threads, and glibc's
// malloc and free took a fifth of its CPU time (with mimalloc a 5,000-patient
// backfill needs 15 % less CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: 15 in `mi_option_e` of the v2
/// header the bindings build (right after `mi_option_eager_commit_delay`,
/// 14), which the bindings do not export.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Memory a run frees goes back to the system at once rather than after
    // mimalloc's default 10 ms: a 5,000-patient backfill peaked at 149 MiB
    // with the delay and at 126 MiB without, for the same CPU time.
    // SAFETY: mi_option_set stores an integer in mimalloc's option table;
    // it is called once, before any other thread starts.
    #[allow(unsafe_code)] // mi_option_set has no safe wrapper; see SAFETY.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
    let matches = regfeed::cli::Cli::command().get_matches();
    let mut cli = regfeed::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.output_may_end_the_process() {
        // SAFETY: signal() only sets this process's disposition of SIGPIPE
        // back to the default; no other thread runs yet.
        #[allow(unsafe_code)] // libc::signal has no safe wrapper; see SAFETY.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    regfeed::deliver::http::install_crypto_provider();
    // The config's [log] settings, under the command line's and RUST_LOG's.
    let config = regfeed::cli::config_of(&matches);
    let log = regfeed::config::log_settings(config.as_deref(), &regfeed::config::env_overrides());
    let format = regfeed::telemetry::format_or(cli.log_format, log.format);
    let filter = regfeed::telemetry::filter_or(log.level.as_deref(), cli.default_log_filter());
    if let Err(e) = regfeed::telemetry::init(format, &filter) {
        let line = regfeed::cli::report::fatal_line(format, &e.to_string());
        eprintln!("{line}");
        // The same code clap uses for a usage error: the invocation is wrong.
        return ExitCode::from(2);
    }
    // Fatal errors are written in the format the logs are.
    cli.log_format = Some(format);
    regfeed::cli::run(cli)
}
