//! `regfeed audit verify | subject | export`.
//!
//! `subject` reads one hetu from standard input — never from the command
//! line, where it would land in shell history and process listings — and
//! never echoes it: not on success, not in an error.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::app;
use crate::audit::{self, chain, fhir, subject};
use crate::decode::hetu::Hetu;
use crate::identity::{self, KeyRing};
use crate::loaded::Config;
use crate::store::Store;

/// Exit status of `audit verify` on a damaged trail (sysexits EX_DATAERR).
pub const EXIT_TAMPERED: u8 = 65;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain; exit 0 on an intact trail, 65 naming the
    /// first bad entry otherwise.
    Verify {
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// The entry count of an anchor kept outside the store (the gauge):
        /// fewer entries means the tail was cut.
        #[arg(long, value_name = "N")]
        expect_entries: Option<u64>,
        /// The head hash of that anchor (from the "Audit head." log line):
        /// entry N (or, without N, some entry) must have this hash.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Read ONE hetu from standard input and say which feeds and batches
    /// received this person's data, when, under which basis, and which of
    /// their records were excluded or held, and why.
    Subject {
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Anything else on the command line is refused without being
        /// echoed (clap's own error would quote it, and it may be a hetu).
        #[arg(
            hide = true,
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        refused: Vec<std::ffi::OsString>,
    },
    /// Every entry as a FHIR R4 AuditEvent, one JSON object per line.
    Export {
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify {
            config,
            expect_entries,
            expect_head,
        } => verify(config.as_deref(), expect_entries, expect_head.as_deref()),
        AuditCommand::Subject {
            config,
            json,
            refused,
        } => {
            if !refused.is_empty() {
                super::report::fatal(
                    "audit subject takes no arguments besides --config and --json; \
                     the hetu is read from standard input, never from the command line \
                     (what was given is not repeated here)",
                );
                return ExitCode::from(2);
            }
            subject_cmd(config.as_deref(), json)
        }
        AuditCommand::Export { config } => export(config.as_deref()),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    super::report::fatal(&format!("{e:#}"));
    crate::ownership::exit_code(e).map_or(ExitCode::FAILURE, ExitCode::from)
}

/// Config, store and keys, without `App::open`: these commands only read
/// the trail (a damaged trail must not grow a `config` entry).
fn open(config: Option<&Path>) -> Result<(tokio::runtime::Runtime, Store, KeyRing), ExitCode> {
    let cfg = Config::load(&Config::locate(config)).map_err(|e| {
        super::report::fatal_unprefixed(&e.to_string());
        ExitCode::from(super::feeds::EXIT_CONFIG)
    })?;
    let keys = app::load_keys(&cfg).map_err(|e| fail(&e))?;
    app::check_state_owner(&cfg).map_err(|e| fail(&e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail(&e.into()))?;
    let store = rt
        .block_on(Store::open(&cfg.database_url))
        .map_err(|e| fail(&e.into()))?;
    Ok((rt, store, keys))
}

fn verify(config: Option<&Path>, entries: Option<u64>, head: Option<&str>) -> ExitCode {
    let (rt, store, _keys) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    match rt.block_on(audit::verify(store.pool(), entries, head)) {
        Ok(r) => match &r.first_bad {
            None => {
                println!(
                    "audit trail intact: {} entries, head {} ({:.2} s)",
                    r.entries,
                    r.head,
                    started.elapsed().as_secs_f64()
                );
                ExitCode::SUCCESS
            }
            Some(bad) => {
                println!(
                    "audit trail damaged: {bad}; {} entries before it verified",
                    r.entries
                );
                super::report::fatal(&format!("audit trail damaged: first bad {bad}"));
                ExitCode::from(EXIT_TAMPERED)
            }
        },
        Err(e) => fail(&e.into()),
    }
}

/// Reads one line (the hetu) from standard input, bounded.
fn read_hetu() -> Result<Hetu, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(64)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let text = line.trim();
    if text.is_empty() {
        return Err("no hetu on standard input (give exactly one, on one line)".into());
    }
    // The parse error could quote its input: report only that it failed.
    Hetu::parse(text).map_err(|_| "standard input does not hold a valid hetu".into())
}

fn subject_cmd(config: Option<&Path>, json: bool) -> ExitCode {
    let hetu = match read_hetu() {
        Ok(h) => h,
        Err(msg) => {
            super::report::fatal(&msg);
            return ExitCode::FAILURE;
        }
    };
    let (rt, store, keys) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(audit_key) = keys.audit() else {
        super::report::fatal("no audit key is loaded");
        return ExitCode::FAILURE;
    };
    let index = identity::person_index(keys.index(), &hetu);
    drop(hetu);
    let person = audit::audit_pseudonym(audit_key, index.as_str());
    match rt.block_on(subject::lookup(store.pool(), &person)) {
        Ok(r) => {
            if json {
                let v = serde_json::json!({
                    "audit_pseudonym": person,
                    "found": !r.is_empty(),
                    "report": r,
                });
                println!("{v}");
            } else {
                print!("{}", subject::render(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

fn export(config: Option<&Path>) -> ExitCode {
    let (rt, store, _keys) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = 0u64;
    loop {
        let page = match rt.block_on(chain::page(store.pool(), after, 2_000)) {
            Ok(p) => p,
            Err(e) => return fail(&e.into()),
        };
        let Some(last) = page.last() else { break };
        after = last.seq;
        for s in &page {
            let line = match fhir::audit_event(s) {
                Ok(v) => v.to_string(),
                Err(e) => return fail(&e.into()),
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
