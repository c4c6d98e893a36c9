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
pub const BATCHES_PRUNED_TOTAL: &str = "regfeed_batches_pruned_total";
pub const OUTBOX_BACKLOG_BATCHES: &str = "regfeed_outbox_backlog_batches";
pub const OUTBOX_DEAD_BATCHES: &str = "regfeed_outbox_dead_batches";
pub const OUTBOX_CONFLICT_BATCHES: &str = "regfeed_outbox_conflict_batches";
pub const OUTBOX_OLDEST_UNDELIVERED_AGE_SECONDS: &str =
    "regfeed_outbox_oldest_undelivered_age_seconds";
pub const OUTBOX_AGE_LIMIT_SECONDS: &str = "regfeed_outbox_age_limit_seconds";
pub const BATCHES_DEAD_TOTAL: &str = "regfeed_batches_dead_total";
pub const DELIVERY_CONFLICTS_TOTAL: &str = "regfeed_delivery_conflicts_total";
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "regfeed_delivery_attempts_total";
pub const DELIVERY_DURATION_SECONDS: &str = "regfeed_delivery_duration_seconds";
pub const DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "regfeed_delivery_last_success_timestamp_seconds";
pub const DELIVERY_FAILING_SINCE_TIMESTAMP_SECONDS: &str =
    "regfeed_delivery_failing_since_timestamp_seconds";
pub const RUN_LAST_FAILURE_TIMESTAMP_SECONDS: &str = "regfeed_run_last_failure_timestamp_seconds";
pub const RUN_SUCCESS_DUE_TIMESTAMP_SECONDS: &str = "regfeed_run_success_due_timestamp_seconds";
pub const STORE_UP: &str = "regfeed_store_up";
pub const SOURCE_UP: &str = "regfeed_source_up";
pub const AUDIT_CHAIN_ENTRIES: &str = "regfeed_audit_chain_entries";
pub const CONFIG_RELOADS_TOTAL: &str = "regfeed_config_reloads_total";

/// Process metrics, under the names every Prometheus client library uses
/// (so that stock dashboards find them).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";

/// Every process metric regfeed exports.
pub const PROCESS: &[&str] = &[
    PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_VIRTUAL_MEMORY_BYTES,
    PROCESS_CPU_SECONDS_TOTAL,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME_SECONDS,
];

/// The error classes of a failed delivery attempt
/// ([`crate::deliver::DeliverError::class`]): the `class` label's values.
pub const ATTEMPT_CLASSES: &[&str] = &[
    "http_5xx",
    "http_4xx",
    "timeout",
    "connect",
    "transport",
    "io",
    "conflict",
    "bad_receipt",
    "seal_broken",
    "bad_name",
    "setup",
];

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
    BATCHES_PRUNED_TOTAL,
    OUTBOX_BACKLOG_BATCHES,
    OUTBOX_DEAD_BATCHES,
    OUTBOX_CONFLICT_BATCHES,
    OUTBOX_OLDEST_UNDELIVERED_AGE_SECONDS,
    OUTBOX_AGE_LIMIT_SECONDS,
    BATCHES_DEAD_TOTAL,
    DELIVERY_CONFLICTS_TOTAL,
    DELIVERY_ATTEMPTS_TOTAL,
    DELIVERY_DURATION_SECONDS,
    DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS,
    DELIVERY_FAILING_SINCE_TIMESTAMP_SECONDS,
    RUN_LAST_FAILURE_TIMESTAMP_SECONDS,
    RUN_SUCCESS_DUE_TIMESTAMP_SECONDS,
    STORE_UP,
    SOURCE_UP,
    AUDIT_CHAIN_ENTRIES,
    CONFIG_RELOADS_TOTAL,
];

/// Histogram buckets for run durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Histogram buckets for one delivery attempt, in seconds (an attempt is
/// bounded by `retry.attempt_timeout`, 60 s by default).
const ATTEMPT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return
/// the same handle) and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(RUN_DURATION_SECONDS.to_owned()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(DELIVERY_DURATION_SECONDS.to_owned()),
            ATTEMPT_BUCKETS,
        )?;
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
    gauge!(PROCESS_START_TIME_SECONDS).set(unix_now());
    record_process();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_counter!(RUNS_TOTAL, "Feed runs by outcome (ok, failed, aborted).");
    describe_histogram!(
        RUN_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of a feed run (the daemon's runs stage; the outbox loop seals and delivers)."
    );
    describe_gauge!(
        RUN_LAST_FAILURE_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the feed's last failed run finished (Unix time; 0: never), from the store."
    );
    describe_gauge!(
        RUN_SUCCESS_DUE_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When a successful run of the feed is next due (Unix time): its schedule's first fire after its last successful run, or after the daemon started if it never had one. Scheduled feeds only."
    );
    describe_gauge!(
        RUN_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the feed's last successful run finished (Unix time; 0: never), from the store."
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
    describe_counter!(
        BATCHES_PRUNED_TOTAL,
        "Delivered batches whose sealed data file was pruned after retention.delivered_batches."
    );
    describe_gauge!(
        OUTBOX_BACKLOG_BATCHES,
        "Batches staged, sealed or being sent, not yet delivered (dead ones not included)."
    );
    describe_gauge!(
        OUTBOX_OLDEST_UNDELIVERED_AGE_SECONDS,
        Unit::Seconds,
        "Age of the feed's oldest batch not yet delivered, dead ones included (0: none)."
    );
    describe_gauge!(
        OUTBOX_AGE_LIMIT_SECONDS,
        Unit::Seconds,
        "How old the feed's oldest undelivered batch may be: until the schedule's next fire after it was staged (the retry budget for a feed without a schedule), at least an hour."
    );
    describe_gauge!(OUTBOX_DEAD_BATCHES, "Batches given up on (dead letters).");
    describe_gauge!(
        OUTBOX_CONFLICT_BATCHES,
        "Dead batches the receiver holds with other content under the same sequence."
    );
    describe_counter!(
        BATCHES_DEAD_TOTAL,
        "Batches that became dead, ever (from the store)."
    );
    describe_counter!(
        DELIVERY_CONFLICTS_TOTAL,
        "Attempts the receiver refused as a conflict, ever (from the store)."
    );
    describe_counter!(
        DELIVERY_ATTEMPTS_TOTAL,
        "Delivery attempts (one each HTTP upload or file drop) by outcome (ok, failed) and error class (none when ok)."
    );
    describe_histogram!(
        DELIVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of one delivery attempt, by outcome."
    );
    describe_gauge!(
        DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When a batch of the feed was last delivered (Unix time; 0: never)."
    );
    describe_gauge!(
        DELIVERY_FAILING_SINCE_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Since when every delivery attempt of the feed has failed, or it has waited on a dead batch (Unix time; 0: delivery is not failing)."
    );
    describe_gauge!(
        STORE_UP,
        "1 while the store takes writes and the state directory is writable, else 0."
    );
    describe_gauge!(SOURCE_UP, "1 while the source can be read, else 0.");
    describe_gauge!(
        AUDIT_CHAIN_ENTRIES,
        "Entries in the audit chain (its head's position), from the store."
    );
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident memory size."
    );
    describe_gauge!(
        PROCESS_VIRTUAL_MEMORY_BYTES,
        Unit::Bytes,
        "Virtual memory size."
    );
    describe_counter!(
        PROCESS_CPU_SECONDS_TOTAL,
        Unit::Seconds,
        "User and system CPU time spent."
    );
    describe_gauge!(PROCESS_OPEN_FDS, "Open file descriptors.");
    describe_gauge!(PROCESS_MAX_FDS, "The limit of open file descriptors.");
    describe_gauge!(
        PROCESS_START_TIME_SECONDS,
        Unit::Seconds,
        "When the process started its telemetry (Unix time)."
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
    counter!(DELIVERY_ATTEMPTS_TOTAL, "feed" => f.clone(), "outcome" => "ok", "class" => "none")
        .increment(0);
    for class in ATTEMPT_CLASSES {
        counter!(DELIVERY_ATTEMPTS_TOTAL, "feed" => f.clone(), "outcome" => "failed", "class" => *class)
            .increment(0);
    }
    gauge!(DELIVERY_FAILING_SINCE_TIMESTAMP_SECONDS, "feed" => f.clone()).set(0.0);
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
        BATCHES_PRUNED_TOTAL,
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
    counter!(BATCHES_STAGED_TOTAL, "feed" => f).increment(run.staged.len() as u64);
}

/// Records one delivery attempt (an HTTP upload or a file drop): its
/// outcome, the error class of a failure, its wall time. Called by the
/// outbox for every attempt, wherever it runs.
pub fn record_attempt(feed: &str, failed: Option<&'static str>, took: Duration) {
    let f = feed.to_owned();
    let (outcome, class) = match failed {
        None => ("ok", "none"),
        Some(c) => ("failed", c),
    };
    counter!(DELIVERY_ATTEMPTS_TOTAL, "feed" => f.clone(), "outcome" => outcome, "class" => class)
        .increment(1);
    histogram!(DELIVERY_DURATION_SECONDS, "feed" => f, "outcome" => outcome)
        .record(took.as_secs_f64());
}

/// A batch sealed.
pub fn record_sealed(feed: &str) {
    counter!(BATCHES_SEALED_TOTAL, "feed" => feed.to_owned()).increment(1);
}

/// A delivered batch's sealed data file pruned.
pub fn record_pruned(feed: &str) {
    counter!(BATCHES_PRUNED_TOTAL, "feed" => feed.to_owned()).increment(1);
}

/// A batch delivered.
pub fn record_delivered(feed: &str) {
    counter!(BATCHES_DELIVERED_TOTAL, "feed" => feed.to_owned()).increment(1);
    gauge!(DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS, "feed" => feed.to_owned()).set(unix_now());
}

/// Since when the feed's delivery has been failing (`None`: it is not).
pub fn record_failing_since(feed: &str, since: Option<chrono::DateTime<chrono::Utc>>) {
    gauge!(DELIVERY_FAILING_SINCE_TIMESTAMP_SECONDS, "feed" => feed.to_owned())
        .set(since.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0));
}

/// One feed's outbox as the store has it, for [`record_outbox`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxGauges {
    /// Staged, sealed or sending.
    pub backlog: u64,
    pub dead: u64,
    /// Dead by a conflict.
    pub conflicts: u64,
    /// Of the oldest batch not delivered (dead included), 0 when none.
    pub oldest_age_s: f64,
    pub age_limit_s: f64,
    /// Unix time of the last delivery, 0 when never.
    pub last_delivered: f64,
    /// Ever, from the store's attempts.
    pub dead_total: u64,
    pub conflicts_total: u64,
}

/// The outbox as the store has it, per feed.
pub fn record_outbox(feed: &str, g: &OutboxGauges) {
    let f = feed.to_owned();
    gauge!(OUTBOX_BACKLOG_BATCHES, "feed" => f.clone()).set(g.backlog as f64);
    gauge!(OUTBOX_DEAD_BATCHES, "feed" => f.clone()).set(g.dead as f64);
    gauge!(OUTBOX_CONFLICT_BATCHES, "feed" => f.clone()).set(g.conflicts as f64);
    gauge!(OUTBOX_OLDEST_UNDELIVERED_AGE_SECONDS, "feed" => f.clone()).set(g.oldest_age_s);
    gauge!(OUTBOX_AGE_LIMIT_SECONDS, "feed" => f.clone()).set(g.age_limit_s);
    gauge!(DELIVERY_LAST_SUCCESS_TIMESTAMP_SECONDS, "feed" => f.clone()).set(g.last_delivered);
    counter!(BATCHES_DEAD_TOTAL, "feed" => f.clone()).absolute(g.dead_total);
    counter!(DELIVERY_CONFLICTS_TOTAL, "feed" => f).absolute(g.conflicts_total);
}

/// A feed's runs as the store has them: the last success and failure (Unix
/// time, 0 when never) and, for a scheduled feed, when a success is due.
pub fn record_run_times(feed: &str, last_ok: f64, last_failed: f64, due: Option<f64>) {
    let f = feed.to_owned();
    gauge!(RUN_LAST_SUCCESS_TIMESTAMP_SECONDS, "feed" => f.clone()).set(last_ok);
    gauge!(RUN_LAST_FAILURE_TIMESTAMP_SECONDS, "feed" => f.clone()).set(last_failed);
    if let Some(d) = due {
        gauge!(RUN_SUCCESS_DUE_TIMESTAMP_SECONDS, "feed" => f).set(d);
    }
}

/// Whether the store takes writes (and the state directory is writable).
pub fn record_store_up(up: bool) {
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
}

/// Whether a source can be read.
pub fn record_source_up(source: &str, up: bool) {
    gauge!(SOURCE_UP, "source" => source.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// The audit chain's length.
pub fn record_audit_entries(entries: u64) {
    gauge!(AUDIT_CHAIN_ENTRIES).set(entries as f64);
}

/// Resident and virtual memory, CPU time and open files of this process
/// (Linux: `/proc/self`; elsewhere CPU time only).
pub fn record_process() {
    let p = crate::telemetry::process_stats();
    if let Some(v) = p.resident_bytes {
        gauge!(PROCESS_RESIDENT_MEMORY_BYTES).set(v as f64);
    }
    if let Some(v) = p.virtual_bytes {
        gauge!(PROCESS_VIRTUAL_MEMORY_BYTES).set(v as f64);
    }
    if let Some(v) = p.cpu_seconds {
        // A counter set to the kernel's running total.
        counter!(PROCESS_CPU_SECONDS_TOTAL).absolute(v.round() as u64);
    }
    if let Some(v) = p.open_fds {
        gauge!(PROCESS_OPEN_FDS).set(v as f64);
    }
    if let Some(v) = p.max_fds {
        gauge!(PROCESS_MAX_FDS).set(v as f64);
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
            let unit_ok = ["_total", "_seconds", "_batches", "_entries", "_info", "_up"]
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
