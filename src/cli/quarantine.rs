//! `regfeed quarantine list | show | retry`: documents the decoder refused,
//! by digest. Prints digests, error classes, the decoder's messages (which
//! never quote a document), feeds, times and masked locators; never a hetu.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Subcommand;

use super::feeds::{fail, load, runtime};
use super::report;
use crate::quarantine::{self, Entry, Filter, Retried};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined documents, one per digest: class, feeds, first and last
    /// refusal. A header line, or one JSON object per line with --json.
    List {
        /// Only documents of this feed's source.
        #[arg(long)]
        feed: Option<String>,
        /// Only this error class (e.g. `xml_malformed`, `limit_exceeded`).
        #[arg(long)]
        class: Option<String>,
        /// Only digests starting with these hex digits.
        #[arg(long, value_name = "HEX")]
        digest: Option<String>,
        /// Only documents last refused at or after this time (RFC 3339, or
        /// a date, read as midnight UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only documents first refused before this time (RFC 3339, or a
        /// date, read as midnight UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// One JSON object per document instead of a table.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// One quarantined document: digest, error class and message, feeds,
    /// first and last refusal, and where it is (hetu-shaped parts masked).
    Show {
        /// Its digest, or a prefix of it that names one document.
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// The entry as JSON.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Re-read a quarantined document at its locator (after its file was
    /// corrected) and decode it again: when it decodes, it leaves quarantine
    /// and the next run reads and stages it; exit 1 when it is still refused.
    Retry {
        /// Its digest, or a prefix of it that names one document.
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// An RFC 3339 time, or a date (midnight UTC).
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"))
}

pub fn run(cmd: QuarantineCommand) -> ExitCode {
    let config = match &cmd {
        QuarantineCommand::List { config, .. }
        | QuarantineCommand::Show { config, .. }
        | QuarantineCommand::Retry { config, .. } => config.clone(),
    };
    // Reads the store and the source; the index key opens the stored
    // (sealed) locators.
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let locator = match crate::app::load_keys(&cfg) {
        Ok(keys) => crate::store::locator::LocatorKey::new(keys.index()),
        Err(e) => return fail(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(&e.into()),
    };
    rt.block_on(async {
        let store = match Store::open(&cfg.database_url).await {
            Ok(s) => s,
            Err(e) => return fail(&e.into()),
        };
        let entries = match store.quarantine_rows().await {
            Ok(rows) => quarantine::entries(&cfg, &locator, rows),
            Err(e) => return fail(&e.into()),
        };
        match cmd {
            QuarantineCommand::List {
                feed,
                class,
                digest,
                since,
                until,
                json,
                config: _,
            } => {
                if let Some(f) = &feed
                    && cfg.feed(f).is_none()
                {
                    return fail(&anyhow::anyhow!("no feed named {f:?}"));
                }
                let filter = Filter {
                    feed,
                    class,
                    digest,
                    since,
                    until,
                };
                list(&quarantine::filtered(entries, &filter), json)
            }
            QuarantineCommand::Show { digest, json, .. } => {
                match quarantine::find(&entries, &digest) {
                    Ok(e) => show(e, json),
                    Err(msg) => {
                        report::fatal(&msg);
                        ExitCode::FAILURE
                    }
                }
            }
            QuarantineCommand::Retry { digest, .. } => {
                let e = match quarantine::find(&entries, &digest) {
                    Ok(e) => e,
                    Err(msg) => {
                        report::fatal(&msg);
                        return ExitCode::FAILURE;
                    }
                };
                match quarantine::retry(&cfg, &store, e).await {
                    Ok(Retried::Released { digest: now, .. }) => {
                        println!(
                            "{}: decodes now (as {now}); released from quarantine, the next run of {} reads it",
                            e.digest,
                            if e.feeds.is_empty() {
                                "a feed on its source".to_owned()
                            } else {
                                e.feeds.join(", ")
                            }
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(Retried::Refused { class, message }) => {
                        report::fatal(&format!(
                            "{}: still refused: {class}: {message}",
                            e.digest
                        ));
                        ExitCode::FAILURE
                    }
                    Err(err) => fail(&err),
                }
            }
        }
    })
}

fn list(entries: &[Entry], json: bool) -> ExitCode {
    if json {
        return match report::json_lines(entries) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.into()),
        };
    }
    println!(
        "{:<64}  {:<22} {:<20}  {:<20}  {:>8}  feeds",
        "digest", "class", "first_seen", "last_seen", "refusals"
    );
    for e in entries {
        println!(
            "{:<64}  {:<22} {:<20}  {:<20}  {:>8}  {}",
            e.digest,
            e.class,
            e.first_seen,
            e.last_seen,
            e.refusals,
            e.feeds.join(",")
        );
    }
    ExitCode::SUCCESS
}

fn show(e: &Entry, json: bool) -> ExitCode {
    if json {
        return match serde_json::to_string_pretty(e) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err.into()),
        };
    }
    println!("digest      {}", e.digest);
    println!("class       {}", e.class);
    println!("message     {}", e.message);
    println!(
        "feeds       {}",
        if e.feeds.is_empty() {
            "none (no feed reads its source now)".to_owned()
        } else {
            e.feeds.join(", ")
        }
    );
    println!("first seen  {}", e.first_seen);
    println!(
        "last seen   {}  ({})",
        e.last_seen,
        report::count(e.refusals as u64, "refusal", "refusals")
    );
    println!("locator     {}", e.locator);
    ExitCode::SUCCESS
}
