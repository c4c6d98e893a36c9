//! What ships beside the binary: every metric the Grafana dashboard and the
//! Prometheus alert rules name is one regfeed exports, and the production
//! example config validates.

use std::collections::BTreeSet;
use std::path::Path;

use regfeed::telemetry::metrics::ALL;

/// Every `regfeed_…` metric name in a text, histogram series suffixes
/// folded onto their metric.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("regfeed_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| ALL.contains(b)))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let dashboard = read("monitoring/regfeed-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    for (file, text) in [
        ("dashboard", dashboard),
        ("alerts", read("monitoring/regfeed-alerts.yml")),
        ("alert tests", read("monitoring/regfeed-alerts.test.yml")),
    ] {
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !ALL.contains(&n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics regfeed does not export: {unknown:?}"
        );
    }
}

#[test]
fn every_alert_has_promtool_cases_and_the_dashboard_a_feed_variable() {
    let rules = read("monitoring/regfeed-alerts.yml");
    let tests = read("monitoring/regfeed-alerts.test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        let cases = tests
            .lines()
            .filter(|l| l.trim() == format!("alertname: {a}"))
            .count();
        assert!(cases >= 2, "alert {a} has {cases} promtool cases");
        // At least one case where it fires.
        let fires = tests.split("alertname: ").skip(1).any(|case| {
            case.starts_with(&format!("{a}\n"))
                && case
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.trim() == "exp_alerts:")
        });
        assert!(fires, "no promtool case where {a} fires");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("monitoring/regfeed-dashboard.json")).expect("JSON");
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(vars.iter().any(|v| v["name"] == "feed"), "a feed variable");
    for name in [
        "regfeed_delivery_failing_since_timestamp_seconds",
        "regfeed_outbox_oldest_undelivered_age_seconds",
        "regfeed_store_up",
        "process_resident_memory_bytes",
    ] {
        assert!(
            dashboard.to_string().contains(name),
            "the dashboard shows {name}"
        );
    }
}

#[test]
fn the_name_scanner_finds_names_and_folds_histogram_series() {
    let names = metric_names(
        "rate(regfeed_run_duration_seconds_bucket[5m]) + regfeed_runs_total{x=\"y\"} job=\"regfeed\" xregfeed_no",
    );
    let want: BTreeSet<String> = ["regfeed_run_duration_seconds", "regfeed_runs_total"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

#[test]
fn the_production_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = read("config/regfeed.toml").replace(
        "/usr/share/regfeed/mappings/",
        &format!("{}/mappings/", root.display()),
    );
    let cfg =
        regfeed::loaded::Config::from_str_at(&text, Path::new("/etc/regfeed/regfeed.toml"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.feeds.len(), 2);
    assert!(cfg.feeds.iter().all(|f| f.schedule.is_some()));
    assert_eq!(
        cfg.daemon.shutdown_grace,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(cfg.daemon.telemetry_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(
        cfg.daemon.unready_after_delivery_failing,
        std::time::Duration::from_secs(30 * 60)
    );
}

#[test]
fn readiness_after_failing_delivery_is_configured_overridden_and_checked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = read("config/regfeed.toml").replace(
        "/usr/share/regfeed/mappings/",
        &format!("{}/mappings/", root.display()),
    );
    let at = Path::new("/etc/regfeed/regfeed.toml");
    let key = "REGFEED_TELEMETRY__UNREADY_AFTER_DELIVERY_FAILING";
    assert!(regfeed::config::is_env_override(key));
    let cfg =
        regfeed::loaded::Config::from_str_at(&text, at, &[(key.to_owned(), "90s".to_owned())])
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.daemon.unready_after_delivery_failing,
        std::time::Duration::from_secs(90)
    );
    let off = text.replace(
        "unready_after_delivery_failing = \"30m\"",
        "unready_after_delivery_failing = \"0s\"",
    );
    let cfg = regfeed::loaded::Config::from_str_at(&off, at, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.daemon.unready_after_delivery_failing.is_zero());
    let bad = text.replace(
        "unready_after_delivery_failing = \"30m\"",
        "unready_after_delivery_failing = \"a while\"",
    );
    let err = regfeed::loaded::Config::from_str_at(&bad, at, &[])
        .expect_err("invalid")
        .to_string();
    assert!(
        err.contains("telemetry.unready_after_delivery_failing"),
        "{err}"
    );
}

#[test]
fn a_bad_schedule_or_catch_up_is_refused_with_file_line_and_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = read("config/regfeed.toml")
        .replace(
            "/usr/share/regfeed/mappings/",
            &format!("{}/mappings/", root.display()),
        )
        .replace("schedule = \"15 2 * * *\"", "schedule = \"15 25 * * *\"")
        .replace("catch_up = \"skip\"", "catch_up = \"sometimes\"")
        .replace("shutdown_grace = \"30s\"", "shutdown_grace = \"soon\"");
    let err =
        regfeed::loaded::Config::from_str_at(&text, Path::new("/etc/regfeed/regfeed.toml"), &[])
            .expect_err("invalid")
            .to_string();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    assert!(
        err.contains(&format!(
            "/etc/regfeed/regfeed.toml:{}: feeds.schedule: hour: 25 is out of range 0-23",
            line_of("15 25 * * *")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "/etc/regfeed/regfeed.toml:{}: feeds.catch_up: must be \"once\" or \"skip\"",
            line_of("sometimes")
        )),
        "{err}"
    );
    assert!(
        err.contains("daemon.shutdown_grace: \"soon\" is not a duration"),
        "{err}"
    );
}
