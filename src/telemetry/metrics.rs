//! Metric names and where they are recorded (DESIGN.md §7, STYLE item 8).
//!
//! Every name is a constant here, `regfeed_<noun>_<unit>[_total]`; labels
//! are bounded: a feed name, an outcome, a decision, a reason (a quarantine
//! class or a held reason from the mapping's closed set) — never a person, a
//! document or a path. Values are recorded from what a run or a delivery
//! reports ([`record_run`], [`record_delivery`], [`record_outbox`]), not from
//! inside the stages. The dashboard and alert rules under `monitoring/` may
//! only name metrics listed in [`ALL`] (a test checks).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::OnceReport;

pub const BUILD_INFO: &str = "regfeed_build_info";
pub const RUNS_TOTAL: &str = "regfeed_runs_total";
pub const RUN_DURATION_SECONDS: &str = "regfeed_run_duration_seconds";
pub const RUN_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "regfeed_run_last_success_timestamp_seconds";
pub const RUN_NEXT_TIMESTAMP_SECONDS: &str = "regfeed_run_next_timestamp_seconds";
pub const RUN_STARTS_SKIPPED_TOTAL: &str = "regfeed_run_starts_skipped_total";
pub const CATCH_UPS_TOTAL: &str = "regfeed_catch_ups_total";
pub const DOCUMENTS_DECODED_TOTAL: &str = "regfeed_documents_decoded_total";
pub const DOCUMENTS_QUARANTINED_TOTAL: &str = "regfeed_documents_quarantined_total";
pub const ROWS_TOTAL: &str = "regfeed_rows_total";
/// Documents decoded, by the kind of their patient id
/// (personal_identity_code, temporary, other).
pub const DOCUMENTS_PATIENT_ID_TOTAL: &str = "regfeed_documents_patient_id_total";
/// Entries of documents new to a feed, by fate (delivered, not_in_scope,
/// held, excluded) and reason.
pub const ENTRIES_TOTAL: &str = "regfeed_entries_total";
pub const BATCHES_STAGED_TOTAL: &str = "regfeed_batches_staged_total";
pub const BATCHES_SEALED_TOTAL: &str = "regfeed_batches_sealed_total";
pub const BATCHES_DELIVERED_TOTAL: &str = "regfeed_batches_delivered_total";
pub const OUTBOX_BACKLOG_BATCHES: &str = "regfeed_outbox_backlog_batches";
pub const OUTBOX_DEAD_BATCHES: &str = "regfeed_outbox_dead_batches";
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "regfeed_delivery_attempts_total";
pub const DELIVERY_DURATION_SECONDS: &str = "regfeed_delivery_duration_seconds";
pub const DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "regfeed_delivery_last_success_timestamp_seconds";
pub const AUDIT_CHAIN_ENTRIES: &str = "regfeed_audit_chain_entries";
pub const CONFIG_RELOADS_TOTAL: &str = "regfeed_config_reloads_total";

/// Every metric regfeed exports.
pub const ALL: &[&str] = &[
    BUILD_INFO,
    RUNS_TOTAL,
    RUN_DURATION_SECONDS,
    RUN_LAST_SUCCESS_TIMESTAMP_SECONDS,
    RUN_NEXT_TIMESTAMP_SECONDS,
    RUN_STARTS_SKIPPED_TOTAL,
    CATCH_UPS_TOTAL,
    DOCUMENTS_DECODED_TOTAL,
    DOCUMENTS_QUARANTINED_TOTAL,
    ROWS_TOTAL,
    DOCUMENTS_PATIENT_ID_TOTAL,
    ENTRIES_TOTAL,
    BATCHES_STAGED_TOTAL,
    BATCHES_SEALED_TOTAL,
    BATCHES_DELIVERED_TOTAL,
    OUTBOX_BACKLOG_BATCHES,
    OUTBOX_DEAD_BATCHES,
    DELIVERY_ATTEMPTS_TOTAL,
    DELIVERY_DURATION_SECONDS,
    DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS,
    AUDIT_CHAIN_ENTRIES,
    CONFIG_RELOADS_TOTAL,
];

/// Histogram buckets for run and delivery durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return
/// the same handle) and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for name in [RUN_DURATION_SECONDS, DELIVERY_DURATION_SECONDS] {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), DURATION_BUCKETS)?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for outcome in ["applied", "refused"] {
        counter!(CONFIG_RELOADS_TOTAL, "outcome" => outcome).increment(0);
    }
    // The audit trail arrives with the objections work; until then its head
    // is the empty chain.
    gauge!(AUDIT_CHAIN_ENTRIES).set(0.0);
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_counter!(RUNS_TOTAL, "Feed runs by outcome (ok, failed, aborted).");
    describe_histogram!(
        RUN_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of a feed run: stage, seal and deliver."
    );
    describe_gauge!(
        RUN_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the feed's last successful run finished (Unix time)."
    );
    describe_gauge!(
        RUN_NEXT_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the feed runs next (Unix time)."
    );
    describe_counter!(
        RUN_STARTS_SKIPPED_TOTAL,
        "Scheduled starts skipped because the feed was still running (overlap) or another process held its lease (lease_held)."
    );
    describe_counter!(
        CATCH_UPS_TOTAL,
        "Runs missed while the daemon was down: caught up (ran) or skipped by policy."
    );
    describe_counter!(DOCUMENTS_DECODED_TOTAL, "Documents decoded.");
    describe_counter!(
        DOCUMENTS_QUARANTINED_TOTAL,
        "Documents quarantined, by error class."
    );
    describe_counter!(
        ROWS_TOTAL,
        "Rows staged by decision (upsert, retract, held) and reason."
    );
    describe_counter!(
        DOCUMENTS_PATIENT_ID_TOTAL,
        "Documents new to a feed by the kind of their patient id (personal_identity_code, temporary, other)."
    );
    describe_counter!(
        ENTRIES_TOTAL,
        "Entries of documents new to a feed by fate (delivered, not_in_scope, held, excluded) and reason; their sum is the entries decoded."
    );
    describe_counter!(BATCHES_STAGED_TOTAL, "Batches staged.");
    describe_counter!(BATCHES_SEALED_TOTAL, "Batches sealed.");
    describe_counter!(BATCHES_DELIVERED_TOTAL, "Batches delivered.");
    describe_gauge!(
        OUTBOX_BACKLOG_BATCHES,
        "Batches staged or sealed and not yet delivered."
    );
    describe_gauge!(OUTBOX_DEAD_BATCHES, "Batches given up on (dead letters).");
    describe_counter!(
        DELIVERY_ATTEMPTS_TOTAL,
        "Delivery attempts by outcome (ok, failed)."
    );
    describe_histogram!(
        DELIVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of a delivery attempt."
    );
    describe_gauge!(
        DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When a batch of the feed was last delivered (Unix time)."
    );
    describe_gauge!(
        AUDIT_CHAIN_ENTRIES,
        "Entries in the audit chain (its head's position)."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads by outcome (applied, refused)."
    );
}

/// Registers a feed's counters at zero so that dashboards and `rate()` see
/// the series before the first event.
pub fn register_feed(feed: &str) {
    let f = feed.to_owned();
    for outcome in ["ok", "failed", "aborted"] {
        counter!(RUNS_TOTAL, "feed" => f.clone(), "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(DELIVERY_ATTEMPTS_TOTAL, "feed" => f.clone(), "outcome" => outcome).increment(0);
    }
    for reason in ["overlap", "lease_held"] {
        counter!(RUN_STARTS_SKIPPED_TOTAL, "feed" => f.clone(), "reason" => reason).increment(0);
    }
    for outcome in ["ran", "skipped"] {
        counter!(CATCH_UPS_TOTAL, "feed" => f.clone(), "outcome" => outcome).increment(0);
    }
    for name in [
        DOCUMENTS_DECODED_TOTAL,
        BATCHES_STAGED_TOTAL,
        BATCHES_SEALED_TOTAL,
        BATCHES_DELIVERED_TOTAL,
    ] {
        counter!(name, "feed" => f.clone()).increment(0);
    }
    counter!(DOCUMENTS_QUARANTINED_TOTAL, "feed" => f.clone(), "reason" => "none").increment(0);
    for kind in ["personal_identity_code", "temporary", "other"] {
        counter!(DOCUMENTS_PATIENT_ID_TOTAL, "feed" => f.clone(), "kind" => kind).increment(0);
    }
    counter!(ENTRIES_TOTAL, "feed" => f.clone(), "fate" => "delivered", "reason" => "none")
        .increment(0);
    for decision in ["upsert", "retract"] {
        counter!(ROWS_TOTAL, "feed" => f.clone(), "decision" => decision, "reason" => "none")
            .increment(0);
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Ok,
    Failed,
    /// Stopped by shutdown after the grace period, or its lease was lost.
    Aborted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Aborted => "aborted",
        }
    }
}

/// Records one feed run from its report: the single place run counts become
/// metrics.
pub fn record_run(feed: &str, outcome: RunOutcome, took: Duration, report: Option<&OnceReport>) {
    let f = feed.to_owned();
    counter!(RUNS_TOTAL, "feed" => f.clone(), "outcome" => outcome.as_str()).increment(1);
    histogram!(RUN_DURATION_SECONDS, "feed" => f.clone()).record(took.as_secs_f64());
    if outcome == RunOutcome::Ok {
        gauge!(RUN_LAST_SUCCESS_TIMESTAMP_SECONDS, "feed" => f.clone()).set(unix_now());
    }
    let Some(r) = report else { return };
    let run = &r.run;
    counter!(DOCUMENTS_DECODED_TOTAL, "feed" => f.clone()).increment(run.documents_decoded);
    for (class, n) in &run.quarantined {
        counter!(DOCUMENTS_QUARANTINED_TOTAL, "feed" => f.clone(), "reason" => class.clone())
            .increment(*n);
    }
    counter!(ROWS_TOTAL, "feed" => f.clone(), "decision" => "upsert", "reason" => "none")
        .increment(run.upserts);
    counter!(ROWS_TOTAL, "feed" => f.clone(), "decision" => "retract", "reason" => "none")
        .increment(run.retracts);
    for (reason, n) in &run.held {
        counter!(ROWS_TOTAL, "feed" => f.clone(), "decision" => "held", "reason" => reason.clone())
            .increment(*n);
    }
    for (kind, n) in [
        // Not "hetu": no metric names a person's identifier, even as a word.
        ("personal_identity_code", run.documents_hetu),
        ("temporary", run.documents_temporary_id),
        ("other", run.documents_other_id),
    ] {
        counter!(DOCUMENTS_PATIENT_ID_TOTAL, "feed" => f.clone(), "kind" => kind).increment(n);
    }
    let e = &run.entries;
    counter!(ENTRIES_TOTAL, "feed" => f.clone(), "fate" => "delivered", "reason" => "none")
        .increment(e.delivered);
    for (fate, m) in [
        ("not_in_scope", &e.not_in_scope),
        ("held", &e.held),
        ("excluded", &e.excluded),
    ] {
        for (reason, n) in m {
            counter!(ENTRIES_TOTAL, "feed" => f.clone(), "fate" => fate, "reason" => reason.clone())
                .increment(*n);
        }
    }
    counter!(BATCHES_STAGED_TOTAL, "feed" => f.clone()).increment(run.staged.len() as u64);
    counter!(BATCHES_SEALED_TOTAL, "feed" => f.clone()).increment(r.sealed.len() as u64);
    counter!(BATCHES_DELIVERED_TOTAL, "feed" => f).increment(r.delivered.len() as u64);
}

/// Records one delivery attempt of the continuous delivery loop.
pub fn record_delivery(feed: &str, ok: bool, took: Duration, delivered: usize) {
    let f = feed.to_owned();
    let outcome = if ok { "ok" } else { "failed" };
    counter!(DELIVERY_ATTEMPTS_TOTAL, "feed" => f.clone(), "outcome" => outcome).increment(1);
    histogram!(DELIVERY_DURATION_SECONDS, "feed" => f.clone()).record(took.as_secs_f64());
    counter!(BATCHES_DELIVERED_TOTAL, "feed" => f).increment(delivered as u64);
}

/// The outbox as the store has it: backlog, dead letters and the last
/// delivery (Unix time), per feed.
pub fn record_outbox(feed: &str, backlog: u64, dead: u64, last_delivered: Option<f64>) {
    let f = feed.to_owned();
    gauge!(OUTBOX_BACKLOG_BATCHES, "feed" => f.clone()).set(backlog as f64);
    gauge!(OUTBOX_DEAD_BATCHES, "feed" => f.clone()).set(dead as f64);
    if let Some(t) = last_delivered {
        gauge!(DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS, "feed" => f).set(t);
    }
}

pub fn record_next_run(feed: &str, at: chrono::DateTime<chrono::Utc>) {
    gauge!(RUN_NEXT_TIMESTAMP_SECONDS, "feed" => feed.to_owned()).set(at.timestamp() as f64);
}

pub fn record_skipped_start(feed: &str, reason: &'static str) {
    counter!(RUN_STARTS_SKIPPED_TOTAL, "feed" => feed.to_owned(), "reason" => reason).increment(1);
}

pub fn record_catch_up(feed: &str, ran: bool) {
    let outcome = if ran { "ran" } else { "skipped" };
    counter!(CATCH_UPS_TOTAL, "feed" => feed.to_owned(), "outcome" => outcome).increment(1);
}

pub fn record_reload(applied: bool) {
    let outcome = if applied { "applied" } else { "refused" };
    counter!(CONFIG_RELOADS_TOTAL, "outcome" => outcome).increment(1);
}

fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        for name in ALL {
            let rest = name.strip_prefix("regfeed_").expect("regfeed_ prefix");
            assert!(
                rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            let unit_ok = ["_total", "_seconds", "_batches", "_entries", "_info"]
                .iter()
                .any(|u| name.ends_with(u));
            assert!(unit_ok, "{name} must end in a unit or _total");
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "duplicate names");
    }
}
