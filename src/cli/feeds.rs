//! Commands that run feeds: `demo`, `gen`, `validate`, `once`, `preview`,
//! `held list`. Each prints a short human summary; none prints a hetu, a
//! name or a source path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::report;
use crate::app::{self, App};
use crate::config::{ConfigError, IdentityKind};
use crate::loaded::Config;

/// Exit status for an invalid configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// Exit status when a feed's lease is held elsewhere (sysexits EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: u8 = 75;

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

pub(crate) fn fail(e: &anyhow::Error) -> ExitCode {
    report::fatal(&format!("{e:#}"));
    crate::ownership::exit_code(e).map_or(ExitCode::FAILURE, ExitCode::from)
}

pub(crate) fn load(config: Option<&Path>) -> Result<Config, ExitCode> {
    let path = Config::locate(config);
    Config::load(&path).map_err(|e: ConfigError| {
        report::fatal_unprefixed(&e.to_string());
        ExitCode::from(EXIT_CONFIG)
    })
}

pub(crate) fn open(config: Option<&Path>) -> Result<(tokio::runtime::Runtime, App), ExitCode> {
    let cfg = load(config)?;
    let rt = runtime().map_err(|e| fail(&e.into()))?;
    let app = rt.block_on(App::open(cfg)).map_err(|e| fail(&e))?;
    Ok((rt, app))
}

/// `regfeed validate`: config, every mapping, and every key it names.
pub fn validate(config: Option<&Path>) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // What a run will need: sources, sinks, keys; one problem a line.
    let problems = crate::preflight::check(&cfg);
    for p in &problems {
        eprintln!("{p}");
    }
    if !problems.is_empty() {
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(e) = app::load_keys(&cfg) {
        report::fatal_unprefixed(&format!("{}: keys: {e:#}", cfg.path.display()));
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}: valid ({}, {}, {})",
        cfg.path.display(),
        report::count(cfg.feeds.len() as u64, "feed", "feeds"),
        report::count(cfg.sources.len() as u64, "source", "sources"),
        report::count(cfg.controllers.len() as u64, "controller", "controllers")
    );
    // What a recipient controller changes, in words.
    for f in &cfg.feeds {
        let Some(id) = &f.legal_basis.recipient_controller else {
            continue;
        };
        let name = cfg
            .controllers
            .iter()
            .find(|c| &c.id == id)
            .map(|c| c.name.as_str())
            .unwrap_or_default();
        println!(
            "  {}: recipient controller {id} ({name}): its own records reach this feed despite a denial of disclosure (use within the same controller); {}",
            f.name,
            if f.legal_basis.discloses_to_other_controller {
                "other controllers' records stay subject to denials"
            } else {
                "denials do not apply to this feed at all (discloses_to_other_controller = false)"
            }
        );
    }
    ExitCode::SUCCESS
}

fn count_line(report: &crate::pipeline::RunReport) -> String {
    let held: Vec<String> = report
        .held
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let excluded: Vec<String> = report
        .excluded
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let policy = format!(
        "{}{}",
        if excluded.is_empty() {
            String::new()
        } else {
            format!(", excluded {}", excluded.join(", "))
        },
        if report.exempt > 0 {
            format!(", exempt {}", report.exempt)
        } else {
            String::new()
        }
    );
    let secs = |ns: u64| ns as f64 / 1e9;
    let e = &report.entries;
    // " (3 a, 1 b)", or nothing when no entry took that way.
    let by = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!(" ({})", parts.join(", "))
    };
    let entries = format!(
        "; entries {} = delivered {} + not in scope {}{} + held {}{} + excluded {}{}{}; earlier entries delivered again {}",
        e.decoded,
        e.delivered,
        e.not_in_scope.values().sum::<u64>(),
        by(&e.not_in_scope),
        e.held.values().sum::<u64>(),
        by(&e.held),
        e.excluded.values().sum::<u64>(),
        by(&e.excluded),
        if e.balanced() { "" } else { " UNBALANCED" },
        e.redelivered,
    );
    // Documents another feed's run decoded are read from the store, not
    // decoded again: "0 new" then says nothing was new, not nothing read.
    format!(
        "new documents decoded {} (from {} new or changed files, {:.1} MB; documents decoded before come from the store), quarantined {}, patient ids: hetu {}, temporary {}, other {}, cohort +{} -{}, upserts {}, retracts {}{}{}{entries}; {:.2} s (decoding {:.2} s, store {:.2} s)",
        report.documents_decoded,
        report.files_new,
        report.bytes_decoded as f64 / 1e6,
        report.documents_quarantined,
        report.documents_hetu,
        report.documents_temporary_id,
        report.documents_other_id,
        report.cohort_entered,
        report.cohort_left,
        report.upserts,
        report.retracts,
        if held.is_empty() {
            String::new()
        } else {
            format!(", held {}", held.join(", "))
        },
        policy,
        secs(report.total_ns),
        secs(report.decode_ns),
        secs(report.store_ns),
    )
}

/// `regfeed once --feed NAME`: one run now, including delivery.
pub fn once(config: Option<&Path>, feed: &str, wait: std::time::Duration) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match rt.block_on(crate::daemon::once_leased(&app, feed, wait)) {
        Ok(r) => {
            report::say(format_args!("{feed}: {}", count_line(&r.run)));
            if r.sealed.is_empty() {
                report::say(format_args!("{feed}: nothing new to deliver"));
            }
            for p in &r.delivered {
                report::say(format_args!("{feed}: delivered {}", p.display()));
            }
            if r.delivered.is_empty() && !r.delivered_seqs.is_empty() {
                let seqs: Vec<String> = r.delivered_seqs.iter().map(|s| s.to_string()).collect();
                report::say(format_args!(
                    "{feed}: delivered batches {}",
                    seqs.join(", ")
                ));
            }
            if let Some(seq) = r.waiting_on {
                report::fatal(&format!(
                    "{feed}: batch {seq} is dead; later batches wait (see `regfeed outbox list --feed {feed}`)"
                ));
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is::<crate::daemon::LeaseRefused>() => {
            report::fatal(&format!("{e:#}"));
            ExitCode::from(EXIT_TEMPFAIL)
        }
        Err(e) => fail(&e),
    }
}

/// `regfeed preview --feed NAME [--limit N]`: the rows the next run would
/// stage, as JSON lines; changes nothing. The person column of a hetu feed
/// is masked.
pub fn preview(config: Option<&Path>, feed: &str, limit: usize) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(fc) = app.cfg.feed(feed) else {
        return fail(&anyhow::anyhow!("no feed named {feed:?}"));
    };
    // A statistics feed's preview is of its cells (no person column).
    let masked: Vec<usize> =
        if fc.legal_basis.identity == IdentityKind::Hetu && fc.mapping.aggregate.is_none() {
            fc.mapping
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.expr == crate::mapping::Expr::PersonId)
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
    let names: Vec<String> = fc
        .mapping
        .feed_columns()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    match rt.block_on(app.preview(feed)) {
        Ok(r) => {
            for row in r.preview.iter().take(limit) {
                let mut obj = serde_json::Map::new();
                obj.insert("record_id".into(), row.record_id.clone().into());
                obj.insert("op".into(), row.op.clone().into());
                obj.insert("decision".into(), row.decision.clone().into());
                obj.insert("rule".into(), row.rule.clone().into());
                if let Some(values) = row.values.as_array() {
                    for (i, (n, v)) in names.iter().zip(values).enumerate() {
                        let v = if masked.contains(&i) {
                            serde_json::Value::String("[hetu]".into())
                        } else {
                            v.clone()
                        };
                        obj.insert(n.clone(), v);
                    }
                }
                println!("{}", serde_json::Value::Object(obj));
            }
            eprintln!(
                "{feed}: preview of the next run (nothing changed): {}; {} rows shown of {}",
                count_line(&r),
                r.preview.len().min(limit),
                r.preview.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `regfeed held list [--json]`: held records by feed and reason, under a
/// header (or one JSON object per line).
pub fn held_list(config: Option<&Path>, json: bool) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match rt.block_on(app.store.held_summary()) {
        Ok(rows) => {
            let now = chrono::Utc::now();
            if !json {
                println!(
                    "{:<24} {:<28} {:>8}  {:<10}  oldest_since",
                    "feed", "reason", "records", "oldest_age"
                );
            }
            for (feed, reason, n, since) in rows {
                let age = chrono::DateTime::parse_from_rfc3339(&since)
                    .map(|s| held_age(now - s.with_timezone(&chrono::Utc)))
                    .unwrap_or_else(|_| "unknown".into());
                let since = report::utc_text(&since);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "feed": feed,
                            "reason": reason,
                            "records": n,
                            "oldest_since": since,
                        })
                    );
                } else {
                    println!("{feed:<24} {reason:<28} {n:>8}  {age:<10}  {since}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

/// A hold's age in the largest whole unit: `3 d`, `5 h`, `12 min`, `40 s`.
fn held_age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// `regfeed objections import FILE`: one transaction; bad rows by line.
pub fn objections_import(config: Option<&Path>, file: &Path) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match rt.block_on(app.import_policy(file)) {
        Ok(r) if r.errors.is_empty() => {
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!("imported {} rows ({})", r.rows, counts.join(", "));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for e in &r.errors {
                eprintln!("{}: {e}", file.display());
            }
            eprintln!("nothing imported: {} bad rows", r.errors.len());
            ExitCode::from(65) // EX_DATAERR
        }
        Err(e) => fail(&e),
    }
}

/// `regfeed objections list [--json]`: counts by kind and party under a
/// header (or one JSON object per line), never identities.
pub fn objections_list(config: Option<&Path>, json: bool) -> ExitCode {
    let (rt, app) = match open(config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match rt.block_on(app.store.policy_counts()) {
        Ok(rows) => {
            if !json {
                println!("{:<24} {:<24} {:>8}", "kind", "made_to", "count");
            }
            for (kind, to, n) in rows {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "kind": kind, "made_to": to, "count": n })
                    );
                } else {
                    println!("{kind:<24} {to:<24} {n:>8}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

/// `regfeed gen`: a deterministic synthetic corpus and its truth.
pub fn gen_corpus(patients: u32, seed: u64, out: &Path, truth: Option<&Path>) -> ExitCode {
    let started = std::time::Instant::now();
    match crate::synth::run_gen(patients, seed, out, truth) {
        Ok(s) => {
            println!(
                "wrote {} documents in {} files ({:.1} MB) for {} synthetic patients ({} in the diabetes cohort) in {:.1} s",
                s.written.documents,
                s.written.files,
                s.written.bytes as f64 / 1e6,
                s.patients,
                s.cohort,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

/// Marks a folder as made by `regfeed demo`, so a re-run may replace it.
const DEMO_MARKER: &str = ".regfeed-demo";

/// What `regfeed demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub dir: PathBuf,
    pub patients: u32,
    pub seed: u64,
    /// An existing folder of documents to use instead of a generated corpus.
    pub corpus: Option<PathBuf>,
    pub setup_only: bool,
}

/// `regfeed demo`: a synthetic corpus, keys and a config in DIR, every
/// shipped feed run once on SQLite with a file-drop sink.
pub fn demo(args: &DemoArgs) -> ExitCode {
    match run_demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let (dir, patients, seed) = (args.dir.as_path(), args.patients, args.seed);
    use anyhow::Context;
    if dir.exists() {
        anyhow::ensure!(
            dir.join(DEMO_MARKER).exists() || std::fs::read_dir(dir)?.next().is_none(),
            "{} exists and was not made by regfeed demo; choose another --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).context("removing the previous demo")?;
    }
    std::fs::create_dir_all(dir).context("creating the demo folder")?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        b"made by regfeed demo; safe to delete\n",
    )?;
    let started = std::time::Instant::now();
    let mut scenario: Option<String> = None;
    let corpus = match &args.corpus {
        Some(c) => c.clone(),
        None => {
            let corpus = dir.join("corpus");
            let plan = crate::synth::plan(patients, seed);
            let written =
                crate::synth::write_corpus(&plan, &corpus).context("writing the corpus")?;
            println!(
                "regfeed demo: {} synthetic patients (test-range identities, seed {seed}), {} documents ({:.1} MB) in {}",
                patients,
                written.documents,
                written.bytes as f64 / 1e6,
                corpus.display()
            );
            scenario = Some(crate::demo::policy_inputs(&plan));
            corpus
        }
    };
    let setup = crate::demo::write_setup(dir, &corpus)?;
    if args.setup_only {
        report::say(format_args!("Config: {}", setup.config.display()));
        return Ok(());
    }
    let cfg = Config::load(&setup.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let feeds: Vec<String> = cfg.feeds.iter().map(|f| f.name.clone()).collect();
    let rt = runtime()?;
    let app = rt.block_on(App::open(cfg))?;
    if let Some(csv) = &scenario {
        let file = dir.join("policy-inputs.csv");
        std::fs::write(&file, csv).context("writing the demo's policy inputs")?;
        let r = rt.block_on(app.import_policy(&file))?;
        anyhow::ensure!(
            r.errors.is_empty(),
            "the demo's policy inputs did not import"
        );
        report::say(format_args!(
            "Imported {} policy inputs ({}): objections to a person's own controller, to another controller and to Findata, a restriction, a turvakielto.",
            r.rows,
            file.display()
        ));
    }
    for feed in &feeds {
        let r = rt.block_on(app.once(feed))?;
        report::say(format_args!("  {feed}: {}", count_line(&r.run)));
        for p in &r.delivered {
            report::say(format_args!("  {feed}: batch → {}", p.display()));
        }
    }
    report::say(format_args!(
        "Batches (data file + manifest) are in {}/<feed>/. Config: {}",
        setup.delivered.display(),
        setup.config.display()
    ));
    report::say(format_args!(
        "Next: {} once --feed thl-diabetes --config {}   (nothing new: no batch)   ·   {:.1} s",
        command_name(),
        setup.config.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// How to run this binary again from here: `regfeed` when that is what
/// PATH finds, else its path (`target/release/regfeed` after `cargo run`).
fn command_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "regfeed".into();
    };
    let exe = exe.canonicalize().unwrap_or(exe);
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            d.join("regfeed")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return "regfeed".into();
    }
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|d| exe.strip_prefix(d).ok()) {
        Some(rel) => rel.display().to_string(),
        None => exe.display().to_string(),
    }
}

/// The default demo folder: `regfeed-demo` in the current directory.
pub fn default_demo_dir() -> PathBuf {
    PathBuf::from("regfeed-demo")
}
