//! `regfeed status`: per feed, the schedule, the last run (start, end,
//! outcome), the next fire time, who holds its lease, the outbox backlog and
//! dead batches, and the last delivery. A table for people, `--json` for
//! scripts. Reads the store; loads no key and changes nothing but running
//! the store's migrations.

use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use serde::Serialize;

use super::feeds::{load, runtime};
use crate::config::CatchUp;
use crate::loaded::Config;
use crate::schedule::{HELSINKI, next_fire};
use crate::store::{RunSummary, Store};

#[derive(Debug, Serialize)]
pub struct FeedStatus {
    pub feed: String,
    pub schedule: Option<String>,
    pub catch_up: CatchUp,
    pub last_run: Option<RunSummary>,
    pub next_run: Option<String>,
    /// Who runs the feed right now (`daemon:PID`, `once:PID`).
    pub running: Option<String>,
    pub backlog: i64,
    pub dead: i64,
    pub delivered: i64,
    pub last_delivered_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub config: String,
    pub now: String,
    pub feeds: Vec<FeedStatus>,
}

pub async fn collect(cfg: &Config, store: &Store) -> anyhow::Result<Status> {
    let now = Utc::now();
    let counts = store.batch_state_counts().await?;
    let mut feeds = Vec::new();
    for f in &cfg.feeds {
        let count = |pred: &dyn Fn(&str) -> bool| -> i64 {
            counts
                .iter()
                .filter(|(feed, state, _)| feed == &f.name && pred(state))
                .map(|(_, _, n)| n)
                .sum()
        };
        let last_delivered_at = store
            .batches(Some(&f.name))
            .await?
            .into_iter()
            .filter_map(|b| b.delivered_at)
            .max();
        feeds.push(FeedStatus {
            feed: f.name.clone(),
            schedule: f.schedule.as_ref().map(|s| s.to_string()),
            catch_up: f.catch_up,
            last_run: store.last_run(&f.name).await?,
            next_run: f
                .schedule
                .as_ref()
                .and_then(|s| next_fire(s, HELSINKI, now))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            running: store.lease_holder(&f.name).await?,
            backlog: count(&|s| s != "delivered" && s != "dead"),
            dead: count(&|s| s == "dead"),
            delivered: count(&|s| s == "delivered"),
            last_delivered_at,
        });
    }
    Ok(Status {
        config: cfg.path.display().to_string(),
        now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        feeds,
    })
}

/// A time as UTC RFC 3339 (the form of every machine-readable time).
fn at(t: &str) -> String {
    super::report::utc_text(t)
}

/// The next fire in UTC, and in Helsinki time (the schedules' zone),
/// labelled.
fn next_fire_text(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(d) => format!(
            "{}  (Helsinki local time {})",
            super::report::utc_text(t),
            d.with_timezone(&HELSINKI).format("%Y-%m-%d %H:%M %Z")
        ),
        Err(_) => t.to_owned(),
    }
}

fn print_table(s: &Status) {
    println!("config {}  (times in UTC)", s.config);
    for f in &s.feeds {
        println!();
        println!("{}", f.feed);
        match &f.schedule {
            Some(sch) => println!(
                "  schedule   {sch}  (Europe/Helsinki; catch-up: {})",
                match f.catch_up {
                    CatchUp::Once => "once",
                    CatchUp::Skip => "skip",
                }
            ),
            None => println!("  schedule   none (runs only with `regfeed once`)"),
        }
        match &f.last_run {
            Some(r) => println!(
                "  last run   {} → {}  {}",
                at(&r.started_at),
                r.finished_at
                    .as_deref()
                    .map(at)
                    .unwrap_or_else(|| "…".into()),
                r.outcome
            ),
            None => println!("  last run   never"),
        }
        println!(
            "  next run   {}",
            f.next_run
                .as_deref()
                .map(next_fire_text)
                .unwrap_or_else(|| "-".into())
        );
        if let Some(h) = &f.running {
            println!("  running    yes ({h})");
        }
        println!(
            "  outbox     {} waiting, {} dead, {} delivered; last delivery {}",
            f.backlog,
            f.dead,
            f.delivered,
            f.last_delivered_at
                .as_deref()
                .map(at)
                .unwrap_or_else(|| "never".into())
        );
    }
}

pub fn main(config: Option<&Path>, json: bool) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            super::report::fatal(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let status = rt.block_on(async {
        crate::app::check_state_owner(&cfg)?;
        let store = Store::open(&cfg.database_url).await?;
        collect(&cfg, &store).await
    });
    match status {
        Ok(s) if json => match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                super::report::fatal(&e.to_string());
                ExitCode::FAILURE
            }
        },
        Ok(s) => {
            print_table(&s);
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::report::fatal(&format!("{e:#}"));
            crate::ownership::exit_code(&e).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}
