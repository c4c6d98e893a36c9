//! The environment-override rule and the one duration grammar.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The shipped production config, its mappings taken from this checkout.
fn shipped() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("config/regfeed.toml"))
        .expect("config/regfeed.toml")
        .replace(
            "/usr/share/regfeed/mappings/",
            &format!("{}/mappings/", root.display()),
        )
}

const AT: &str = "/etc/regfeed/regfeed.toml";

fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The config alone: mappings are not compiled here (the config does not
/// depend on the mapping compiler).
fn load(text: &str, env: &[(&str, &str)]) -> Result<Config<()>, ConfigError> {
    Config::from_str_with(text, Path::new(AT), &vars(env), |_: &Path| Ok(()))
}

#[test]
fn any_key_of_any_section_is_overridden_by_one_rule() {
    let cfg = load(
        &shipped(),
        &[
            ("REGFEED_DAEMON__WORKERS", "3"),
            ("REGFEED_DAEMON__DELIVERY_INTERVAL", "1min"),
            ("REGFEED_DAEMON__MAX_DOCUMENTS_PER_BATCH", "500"),
            ("REGFEED_TELEMETRY__LISTEN", "127.0.0.1:9999"),
            ("REGFEED_LOG__FORMAT", "plain"),
            ("REGFEED_LOG__LEVEL", "regfeed=debug"),
            ("REGFEED_KEYS__AUDIT", "/keys/audit.key"),
            ("REGFEED_DATABASE__URL", "sqlite:///tmp/other.db"),
            // Not overrides: no `__` after the prefix.
            ("REGFEED_LOG", "warn"),
            ("REGFEED_CONFIG", "/nowhere"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.daemon.workers, 3);
    assert_eq!(cfg.daemon.delivery_interval, Duration::from_secs(60));
    assert_eq!(cfg.max_documents_per_batch, 500);
    assert_eq!(cfg.daemon.telemetry_listen.to_string(), "127.0.0.1:9999");
    // The file says json.
    assert_eq!(cfg.log_format, LogFormat::Plain);
    assert_eq!(cfg.log_level, "regfeed=debug");
    assert_eq!(
        cfg.audit_key,
        KeySource::File(PathBuf::from("/keys/audit.key"))
    );
    assert_eq!(cfg.database_url.as_str(), "sqlite:///tmp/other.db");
    // What no variable named stays as the file has it.
    assert_eq!(cfg.daemon.shutdown_grace, Duration::from_secs(30));
    assert_eq!(
        cfg.index_key,
        KeySource::Credential("keys_index.key".to_owned())
    );
}

#[test]
fn nested_keys_and_entries_of_arrays_are_addressed_by_name() {
    let cfg = load(
        &shipped(),
        &[
            // [feeds.sink.retry] is not in the file: the override adds it.
            ("REGFEED_FEEDS__THL_DIABETES__SINK__RETRY__CAP", "1h30m"),
            (
                "REGFEED_FEEDS__THL_VACCINATION__SINK__DIR",
                "/srv/drop/vacc",
            ),
            ("REGFEED_FEEDS__THL_VACCINATION__SCHEDULE", "0 3 * * *"),
            ("REGFEED_SOURCES__KANTA_ARCHIVE__PATH", "/srv/other"),
            ("REGFEED_CONTROLLERS__PIRKANMAA__NAME", "Pirkanmaa"),
            ("REGFEED_FEEDS__1__CATCH_UP", "once"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let diabetes = cfg.feed("thl-diabetes").expect("feed");
    assert_eq!(diabetes.sink.retry().cap, Duration::from_secs(5400));
    let vacc = cfg.feed("thl-vaccination").expect("feed");
    assert_eq!(
        vacc.sink,
        SinkConfig::FileDrop {
            dir: PathBuf::from("/srv/drop/vacc"),
            retry: RetryPolicy::default(),
        }
    );
    assert_eq!(vacc.catch_up, CatchUp::Once);
    assert_eq!(
        vacc.schedule,
        Some(crate::schedule::Schedule::parse("0 3 * * *").expect("cron"))
    );
    assert_eq!(
        cfg.source("kanta-archive").expect("source").kind,
        SourceKind::ArchiveDir {
            path: PathBuf::from("/srv/other")
        }
    );
    assert_eq!(cfg.controllers[0].name, "Pirkanmaa");
}

#[test]
fn an_unknown_key_or_entry_is_refused_naming_the_variable() {
    let err = load(&shipped(), &[("REGFEED_DAEMON__WORKRES", "2")])
        .expect_err("unknown key")
        .to_string();
    assert!(
        err.contains(&format!(
            "{AT}: REGFEED_DAEMON__WORKRES: unknown field `workres`"
        )),
        "{err}"
    );
    let err = load(&shipped(), &[("REGFEED_DEAMON__WORKERS", "2")])
        .expect_err("unknown section")
        .to_string();
    assert!(
        err.contains("REGFEED_DEAMON__WORKERS: unknown field `deamon`"),
        "{err}"
    );
    let err = load(
        &shipped(),
        &[("REGFEED_FEEDS__THL_NOPE__SCHEDULE", "0 3 * * *")],
    )
    .expect_err("unknown entry")
    .to_string();
    assert!(
        err.contains("REGFEED_FEEDS__THL_NOPE__SCHEDULE: no [[feeds]] entry is named THL_NOPE"),
        "{err}"
    );
    let err = load(&shipped(), &[("REGFEED_DAEMON__STATE_DIR__X", "1")])
        .expect_err("below a value")
        .to_string();
    assert!(
        err.contains("REGFEED_DAEMON__STATE_DIR__X: state_dir is a value, not a table"),
        "{err}"
    );
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable_not_a_line() {
    let err = load(
        &shipped(),
        &[
            ("REGFEED_DAEMON__WORKERS", "0"),
            ("REGFEED_DAEMON__DELIVERY_INTERVAL", "soon"),
        ],
    )
    .expect_err("bad values")
    .to_string();
    assert!(
        err.contains(&format!("{AT}: REGFEED_DAEMON__WORKERS: must be from 1 to")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{AT}: REGFEED_DAEMON__DELIVERY_INTERVAL: \"soon\" is not a duration"
        )),
        "{err}"
    );
    // A string in the file stays a string, whatever the variable looks like.
    let err = load(&shipped(), &[("REGFEED_LOG__FORMAT", "1")])
        .expect_err("not a format")
        .to_string();
    assert!(
        err.contains("REGFEED_LOG__FORMAT: must be \"plain\" or \"json\""),
        "{err}"
    );
}

#[test]
fn both_duration_examples_of_the_issue_are_read() {
    let text = shipped()
        .replace("delivery_interval = \"30s\"", "delivery_interval = \"1min\"")
        .replace(
            "dir = \"/var/lib/regfeed/outgoing/thl-diabetes\"",
            "dir = \"/var/lib/regfeed/outgoing/thl-diabetes\"\n\n[feeds.sink.retry]\nbase = \"250ms\"\ncap = \"1h30m\"\nmax_elapsed = \"2days\"",
        );
    let cfg = load(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.daemon.delivery_interval, Duration::from_secs(60));
    let retry = *cfg.feed("thl-diabetes").expect("feed").sink.retry();
    assert_eq!(retry.base, Duration::from_millis(250));
    assert_eq!(retry.cap, Duration::from_secs(90 * 60));
    assert_eq!(retry.max_elapsed, Duration::from_secs(2 * 86400));

    let bad = text.replace("cap = \"1h30m\"", "cap = \"90\"");
    let err = load(&bad, &[]).expect_err("no unit").to_string();
    let line = bad
        .lines()
        .position(|l| l.starts_with("cap = "))
        .expect("cap")
        + 1;
    assert!(
        err.contains(&format!(
            "{AT}:{line}: feeds.sink.retry.cap: \"90\" is not a duration"
        )),
        "{err}"
    );
}

#[test]
fn log_settings_are_read_from_the_file_and_its_overrides() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("regfeed.toml");
    std::fs::write(&path, "[log]\nformat = \"json\"\nlevel = \"warn\"\n").expect("write");
    let got = log_settings(Some(&path), &[]);
    assert_eq!(got.format, Some(LogFormat::Json));
    assert_eq!(got.level.as_deref(), Some("warn"));
    let got = log_settings(
        Some(&path),
        &vars(&[
            ("REGFEED_LOG__FORMAT", "plain"),
            ("REGFEED_LOG__LEVEL", "debug"),
        ]),
    );
    assert_eq!(got.format, Some(LogFormat::Plain));
    assert_eq!(got.level.as_deref(), Some("debug"));
    // No config (or none readable): the environment alone.
    let got = log_settings(None, &vars(&[("REGFEED_LOG__FORMAT", "json")]));
    assert_eq!(got.format, Some(LogFormat::Json));
    assert_eq!(got.level, None);
    assert_eq!(
        log_settings(Some(&dir.path().join("missing.toml")), &[]),
        LogSettings::default()
    );
    // The command line's flag outranks the config.
    use crate::telemetry::{LogFormat as Flag, format_or};
    assert_eq!(
        format_or(Some(Flag::Plain), Some(LogFormat::Json)),
        Flag::Plain
    );
    assert_eq!(format_or(None, Some(LogFormat::Json)), Flag::Json);
    assert_eq!(format_or(None, None), Flag::Plain);
}
