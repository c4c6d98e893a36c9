//! `regfeed outbox list | retry | replay | prune` (operators) and `regfeed feed
//! verify` (receivers). Prints feeds, sequences, states, digests and the
//! register's sanitised messages; never a row.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::feeds::{fail, open};

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Batches by feed and sequence: state, attempts, receipt, why dead.
    List {
        /// Only this feed's batches.
        #[arg(long)]
        feed: Option<String>,
        /// One JSON object per batch instead of a table.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Retry a dead batch once its cause is fixed: re-checked (re-sealed
    /// under the same sequence if its rows changed), then sent with the
    /// feed's later batches.
    Retry {
        /// The batch's feed.
        #[arg(long)]
        feed: String,
        /// The batch's sequence number in its feed.
        #[arg(long)]
        seq: i64,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// How long to wait while the daemon's outbox loop works on the
        /// feed, e.g. `30s`; after that, refuse (exit 75). Default: refuse
        /// at once.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::schedule::parse_duration)]
        wait: std::time::Duration,
    },
    /// Send a delivered batch's sealed bytes again (idempotent at the
    /// register); its state stays delivered.
    Replay {
        /// The batch's feed.
        #[arg(long)]
        feed: String,
        /// The batch's sequence number in its feed.
        #[arg(long)]
        seq: i64,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// How long to wait while the daemon's outbox loop works on the
        /// feed, e.g. `30s`; after that, refuse (exit 75). Default: refuse
        /// at once.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::schedule::parse_duration)]
        wait: std::time::Duration,
    },
    /// Remove the sealed data files of batches delivered (with a receipt)
    /// longer ago than `retention.delivered_batches`; manifests and receipts
    /// stay, each prune is audited. The daemon does this on its own.
    Prune {
        /// Only this feed's batches (default: every feed).
        #[arg(long)]
        feed: Option<String>,
        /// Say what would be pruned; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object per batch instead of a table.
        #[arg(long)]
        json: bool,
        /// The config file (default: $REGFEED_CONFIG, else
        /// /etc/regfeed/regfeed.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Check a folder of received batches offline: manifests, digests, byte
    /// and row counts, the manifest chain, gapless sequences, record ids and
    /// ops. Exit 0 when all is well, 1 with one line per problem.
    Verify {
        /// One feed's folder of batches, or a folder holding one such
        /// folder per feed (each checked on its own).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn outbox(cmd: OutboxCommand) -> ExitCode {
    match cmd {
        OutboxCommand::Prune {
            feed,
            dry_run,
            json,
            config,
        } => prune(config.as_deref(), feed.as_deref(), dry_run, json),
        OutboxCommand::List { feed, json, config } => {
            list(config.as_deref(), feed.as_deref(), json)
        }
        OutboxCommand::Retry {
            feed,
            seq,
            config,
            wait,
        } => {
            let (rt, app) = match open(config.as_deref()) {
                Ok(x) => x,
                Err(c) => return c,
            };
            match rt.block_on(crate::daemon::outbox_leased(
                &app,
                &feed,
                wait,
                app.retry_dead(&feed, seq),
            )) {
                Ok(d) => {
                    let seqs: Vec<String> = d.delivered.iter().map(|s| s.to_string()).collect();
                    println!(
                        "{feed}: delivered {}",
                        if seqs.is_empty() {
                            "nothing".into()
                        } else {
                            seqs.join(", ")
                        }
                    );
                    match d.waiting_on {
                        Some(s) => {
                            super::report::fatal(&format!(
                                "{feed}: batch {s} is dead again; see `regfeed outbox list --feed {feed}`"
                            ));
                            ExitCode::FAILURE
                        }
                        None => ExitCode::SUCCESS,
                    }
                }
                Err(e) if e.is::<crate::daemon::LeaseRefused>() => {
                    super::report::fatal(&format!("{e:#}"));
                    ExitCode::from(super::feeds::EXIT_TEMPFAIL)
                }
                Err(e) => fail(&e),
            }
        }
        OutboxCommand::Replay {
            feed,
            seq,
            config,
            wait,
        } => {
            let (rt, app) = match open(config.as_deref()) {
                Ok(x) => x,
                Err(c) => return c,
            };
            match rt.block_on(crate::daemon::outbox_leased(
                &app,
                &feed,
                wait,
                app.replay(&feed, seq),
            )) {
                Ok(receipt) => {
                    println!("{feed}: batch {seq} replayed; receipt {receipt}");
                    ExitCode::SUCCESS
                }
                Err(e) if e.is::<crate::daemon::LeaseRefused>() => {
                    super::report::fatal(&format!("{e:#}"));
                    ExitCode::from(super::feeds::EXIT_TEMPFAIL)
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn prune(config: Option<&Path>, feed: Option<&str>, dry_run: bool, json: bool) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let feeds: Vec<&crate::loaded::FeedConfig> = match feed {
        Some(name) => match app.cfg.feed(name) {
            Some(f) => vec![f],
            None => return fail(&anyhow::anyhow!("no feed named {name:?}")),
        },
        None => app.cfg.feeds.iter().collect(),
    };
    let now = chrono::Utc::now();
    let mut all = Vec::new();
    for f in feeds {
        match rt.block_on(app.prune_delivered(f, now, dry_run)) {
            Ok(p) => all.extend(p),
            Err(e) => return fail(&e),
        }
    }
    if json {
        return match super::report::json_lines(&all) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.into()),
        };
    }
    println!(
        "{:<24} {:>8}  {:>12}  {:<20}  data_file",
        "feed", "seq", "bytes", "delivered_at"
    );
    for p in &all {
        println!(
            "{:<24} {:>8}  {:>12}  {:<20}  {}",
            p.feed,
            p.seq,
            p.data_bytes,
            super::report::utc_text(&p.delivered_at),
            p.data_file
        );
    }
    eprintln!(
        "{} {} (retention.delivered_batches = {})",
        if dry_run { "would prune" } else { "pruned" },
        super::report::count(all.len() as u64, "batch", "batches"),
        humanish(app.cfg.retention.delivered_batches)
    );
    ExitCode::SUCCESS
}

/// A retention as whole hours (`720h`), or seconds below an hour.
fn humanish(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

fn list(config: Option<&Path>, feed: Option<&str>, json: bool) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let entries = match rt.block_on(app.store.outbox(feed)) {
        Ok(e) => e,
        Err(e) => return fail(&e.into()),
    };
    if json {
        return match super::report::json_lines(&entries) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.into()),
        };
    }
    println!(
        "{:<24} {:>8}  {:<9} {:>8} {:>8}  {:<20}  detail",
        "feed", "seq", "state", "records", "attempts", "delivered_at"
    );
    for e in &entries {
        let detail = match e.state.as_str() {
            "dead" => e.dead_reason.clone().unwrap_or_default(),
            "delivered" => e
                .receipt_id
                .clone()
                .map(|r| format!("receipt {r}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        println!(
            "{:<24} {:>8}  {:<9} {:>8} {:>8}  {:<20}  {}",
            e.feed,
            e.seq,
            e.state,
            e.records,
            e.attempts,
            e.delivered_at.as_deref().unwrap_or("-"),
            detail
        );
    }
    ExitCode::SUCCESS
}

pub fn feed(cmd: FeedCommand) -> ExitCode {
    use crate::feed::verify;
    match cmd {
        FeedCommand::Verify { dir, json } => {
            // A folder of feed folders (what a file-drop sink fills, one
            // folder per feed): each is checked on its own.
            if let Some(tree) = verify::verify_tree(&dir) {
                if json {
                    let doc = serde_json::json!({ "feeds": tree });
                    match serde_json::to_string_pretty(&doc) {
                        Ok(s) => println!("{s}"),
                        Err(e) => return fail(&e.into()),
                    }
                } else {
                    for (folder, r) in &tree {
                        for p in &r.problems {
                            println!("{folder}/{}: {}", p.file, p.problem);
                        }
                        println!("{folder}: {}", verify_summary(r));
                    }
                }
                let ok = tree
                    .values()
                    .all(|r| r.problems.is_empty() && r.batches > 0);
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            let r = verify::verify_dir(&dir);
            if json {
                match serde_json::to_string_pretty(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(&e.into()),
                }
            } else {
                for p in &r.problems {
                    println!("{}: {}", p.file, p.problem);
                }
                println!("{}", verify_summary(&r));
            }
            if r.problems.is_empty() && r.batches > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `3 batches (thl-diabetes 1..3), 120 records, 0 problems`.
fn verify_summary(r: &crate::feed::verify::VerifyReport) -> String {
    use super::report::count;
    let feeds: Vec<String> = r.feeds.iter().map(|(f, s)| format!("{f} 1..{s}")).collect();
    format!(
        "{} ({}), {}, {}",
        count(r.batches as u64, "batch", "batches"),
        if feeds.is_empty() {
            "no feeds".into()
        } else {
            feeds.join(", ")
        },
        count(r.records, "record", "records"),
        count(r.problems.len() as u64, "problem", "problems")
    )
}
