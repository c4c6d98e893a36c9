//! One feed run: source → decode → (policy, later) → cohort & mapping →
//! staged batch, with its counts. Staging the batch, recording the documents
//! seen and advancing the feed's cursor happen in one store transaction per
//! chunk: a crash leaves all or nothing.
//!
//! How a run decides rows: every new document is decoded once and its records
//! mapped (cohort evidence, and the rows it would contribute, indexed by hash
//! in the store). Then every person with a new document, and everyone with a
//! held record (through the held rows' index), is re-evaluated over
//! their whole history from the store's index: current versions only, withdrawn
//! sets and invalidated dispensings ignored. The rows they should have are
//! compared with the rows the register holds: new or changed rows are upserted,
//! rows no longer wanted are retracted. Row content the run does not have in
//! memory (a person entering the cohort late) is re-read through the source's
//! locator. The store never keeps clinical content outside staged batches.
//!
//! Logs name feeds, counts and document digests, never paths or people.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Months, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::codes::PatientIdKind;
use crate::config::IdentityKind;
use crate::decode::{self, hetu::Hetu};
use crate::feed::{ColumnType, Value};
use crate::identity::{self, Key, KeyRing};
use crate::loaded::{Config, FeedConfig};
use crate::mapping::Mapping;
use crate::mapping::eval::Person;
use crate::policy::{self, PersonPolicy};
use crate::record::{DecodedDocument, MedicationEvent, RecordBody};
use crate::source::Source;
use crate::store::locator::LocatorKey;
use crate::store::{
    self, BatchRow, DocRow, LiveRow, NewBatch, NewDocument, Quarantined, Seen, Store,
};

/// Awaits a store call, adding its wall time to `$acc` (nanoseconds).
macro_rules! timed {
    ($acc:expr, $e:expr) => {{
        let t = std::time::Instant::now();
        let r = $e.await;
        $acc += t.elapsed().as_nanos() as u64;
        r
    }};
}

mod ahead;

/// People evaluated per store round trip.
const PERSON_GROUP: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("source {source_name}: {error}")]
    Source {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Worker(String),
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunReport {
    pub feed: String,
    pub files_listed: u64,
    pub files_new: u64,
    pub files_unreadable: u64,
    pub documents_decoded: u64,
    pub documents_duplicate: u64,
    pub documents_quarantined: u64,
    /// Documents whose patient id is a Finnish organisation's temporary id.
    pub documents_temporary_id: u64,
    /// Documents whose patient id is neither a hetu nor a temporary id (a
    /// foreign record number, an unknown root).
    pub documents_other_id: u64,
    /// Documents whose patient id is a hetu.
    pub documents_hetu: u64,
    pub bytes_decoded: u64,
    pub persons_evaluated: u64,
    pub cohort_entered: u64,
    pub cohort_left: u64,
    pub upserts: u64,
    pub retracts: u64,
    pub held: BTreeMap<String, u64>,
    pub quarantined: BTreeMap<String, u64>,
    /// Sequences of the batches this run staged.
    pub staged: Vec<i64>,
    /// Time spent reading, decoding and mapping source files, summed over
    /// the worker threads: with more than one worker it can exceed the
    /// run's wall time, and it overlaps the store's.
    pub decode_ns: u64,
    /// Wall time waiting for the store.
    pub store_ns: u64,
    /// Wall time of the whole run.
    pub total_ns: u64,
    /// A dry run's rows (empty when committing).
    #[serde(skip)]
    pub preview: Vec<PreviewRow>,
    /// Records the policy gate excluded, by rule.
    pub excluded: BTreeMap<String, u64>,
    /// Records delivered although an objection exists (legal obligation).
    pub exempt: u64,
    /// Policy decisions other than a plain include, per person and rule.
    #[serde(skip)]
    pub decisions: Vec<DecisionCount>,
    /// Where every entry of the documents new to the feed went.
    pub entries: Accounting,
}

/// The fate of every entry (record) of the documents new to a feed in one
/// run, so that none is ever dropped without a reason:
/// `decoded = delivered + not in scope + held + excluded`, each of the last
/// three by reason or rule. A document is new to the feed when the feed had
/// not evaluated it before: decoded by this run, or read by another feed's
/// run and re-read through its locator by this one. An entry's fate is the
/// one decided when its document is staged (its chunk's transaction); a
/// later document can change it (a late cohort entry upserts earlier
/// entries: `redelivered`), as it can in a later run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Accounting {
    /// Entries of the documents new to the feed.
    pub decoded: u64,
    /// In the register's current state (upserted by this run).
    pub delivered: u64,
    /// Not for this feed: `patient_id_temporary`, `patient_id_other` (no
    /// person to link), `not_selected` (no item of the mapping),
    /// `negated`, `superseded_or_withdrawn` (not the current version of its
    /// set, withdrawn or invalidated), `not_in_cohort`, `outside_lookback`.
    pub not_in_scope: BTreeMap<String, u64>,
    /// Held back, by the mapping's or the policy gate's reason.
    pub held: BTreeMap<String, u64>,
    /// Excluded by a policy rule.
    pub excluded: BTreeMap<String, u64>,
    /// Not part of the identity: entries of documents staged before (by an
    /// earlier run, or an earlier chunk of this one) upserted again because
    /// their person's state changed (cohort entry, a changed row). With
    /// `delivered` it makes up the run's upserts.
    pub redelivered: u64,
}

impl Accounting {
    /// Entries given a fate.
    pub fn accounted(&self) -> u64 {
        self.delivered
            + self.not_in_scope.values().sum::<u64>()
            + self.held.values().sum::<u64>()
            + self.excluded.values().sum::<u64>()
    }

    /// Whether every decoded entry has exactly one fate.
    pub fn balanced(&self) -> bool {
        self.decoded == self.accounted()
    }

    fn not_in_scope(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.not_in_scope.entry(reason.to_owned()).or_default() += n;
        }
    }
}

/// Records of one person decided by one rule (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCount {
    /// Index pseudonym.
    pub person: String,
    pub outcome: policy::Outcome,
    pub rule: policy::Rule,
    pub basis: String,
    pub records: u64,
}

/// A staged batch's policy counts (its manifest's `excluded` and `exempt`):
/// what the chunk's evaluation added to the run's.
fn chunk_policy(
    report: &RunReport,
    excluded_before: &BTreeMap<String, u64>,
    exempt_before: u64,
) -> String {
    serde_json::json!({
        "excluded": chunk_excluded(report, excluded_before),
        "exempt": report.exempt - exempt_before,
    })
    .to_string()
}

fn chunk_excluded(report: &RunReport, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    report
        .excluded
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Whether a run commits what it stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stage batches, record documents seen, advance the cursor.
    Commit,
    /// Compute the first chunk's rows and roll everything back.
    DryRun,
}

/// A row a dry run would stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PreviewRow {
    pub record_id: String,
    pub op: String,
    /// include, exempt, exclude or hold (exclude/hold rows are not staged).
    pub decision: String,
    pub rule: String,
    /// The row's values, as JSON, in column order (empty for a retract).
    pub values: serde_json::Value,
}

/// The keys one feed run needs.
#[derive(Debug, Clone, Copy)]
pub struct FeedKeys<'a> {
    pub index: &'a Key,
    pub record: &'a Key,
    /// The recipient's pseudonym key (pseudonym feeds).
    pub pseudonym: Option<&'a Key>,
    /// The audit key: people in audit entries. Required to commit a run.
    pub audit: Option<&'a Key>,
}

impl<'a> FeedKeys<'a> {
    pub fn for_feed(keys: &'a KeyRing, feed: &FeedConfig) -> Result<FeedKeys<'a>, PipelineError> {
        let record = keys.record_key(&feed.name).ok_or_else(|| {
            PipelineError::Config(format!("feed {}: record key not loaded", feed.name))
        })?;
        let pseudonym = match feed.legal_basis.identity {
            IdentityKind::Hetu => None,
            IdentityKind::Pseudonym => {
                let r = feed.recipient.as_deref().unwrap_or_default();
                Some(keys.pseudonym_key(r).ok_or_else(|| {
                    PipelineError::Config(format!(
                        "feed {}: pseudonym key of recipient {r} not loaded",
                        feed.name
                    ))
                })?)
            }
        };
        Ok(FeedKeys {
            index: keys.index(),
            record,
            pseudonym,
            audit: keys.audit(),
        })
    }
}

/// A document's contribution to one feed, computed from its records.
#[derive(Debug, Clone, Default)]
struct Mapped {
    evidence: bool,
    rows: Vec<(DocRow, Vec<Value>)>,
    /// Entries of the document.
    records: u64,
    /// Entries no item selected: negated, and the rest.
    negated: u64,
    not_selected: u64,
}

/// What mapping a decoded document for one feed needs, owned, so that the
/// run's worker threads share it.
#[derive(Debug)]
struct Mapper {
    cfg: Config,
    feed: FeedConfig,
    index: Key,
    record: Key,
    pseudonym: Option<Key>,
    /// Seals locators where they enter the store, opens them where they
    /// leave it (`store::locator`).
    locator: LocatorKey,
}

impl Mapper {
    fn new(cfg: &Config, feed: &FeedConfig, keys: &FeedKeys<'_>) -> Mapper {
        Mapper {
            cfg: cfg.clone(),
            feed: feed.clone(),
            locator: LocatorKey::new(keys.index),
            index: keys.index.clone(),
            record: keys.record.clone(),
            pseudonym: keys.pseudonym.cloned(),
        }
    }
}

/// Everything a run needs to map and stage.
struct Ctx<'a> {
    feed: &'a FeedConfig,
    mapping: &'a Mapping,
    cfg: &'a Config,
    keys: FeedKeys<'a>,
    mapper: std::sync::Arc<Mapper>,
    source: &'a Source,
    cutoff: NaiveDate,
    mode: Mode,
    /// The moment the gate decides at (the run's start).
    at: DateTime<Utc>,
    feed_policy: policy::FeedPolicy,
    /// Columns suppressed for people under turvakielto.
    safety_columns: Vec<usize>,
    /// People with held records are still to be re-evaluated in this run
    /// (once, with its first chunk).
    held_pending: std::sync::atomic::AtomicBool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A value as JSON, for staging and row hashes.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Text(s) => serde_json::Value::String(s.clone()),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Number(x) => serde_json::Number::from_f64(*x)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Date(d) => serde_json::Value::String(d.format("%Y-%m-%d").to_string()),
        Value::Bool(b) => serde_json::Value::Bool(*b),
    }
}

/// A staged JSON value back into its column's type.
pub fn json_to_value(j: &serde_json::Value, ty: ColumnType) -> Value {
    match (j, ty) {
        (serde_json::Value::Null, _) => Value::Null,
        (serde_json::Value::String(s), ColumnType::Date) => {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_or(Value::Null, Value::Date)
        }
        (serde_json::Value::String(s), _) => Value::Text(s.clone()),
        (serde_json::Value::Number(n), ColumnType::Integer) => {
            n.as_i64().map_or(Value::Null, Value::Integer)
        }
        (serde_json::Value::Number(n), _) => n.as_f64().map_or(Value::Null, Value::Number),
        (serde_json::Value::Bool(b), _) => Value::Bool(*b),
        _ => Value::Null,
    }
}

fn row_json(values: &[Value]) -> String {
    serde_json::Value::Array(values.iter().map(value_to_json).collect()).to_string()
}

impl Mapper {
    fn person(&self, hetu: &Hetu) -> Person {
        let id = match (self.feed.legal_basis.identity, self.pseudonym.as_ref()) {
            (IdentityKind::Pseudonym, Some(k)) => identity::pseudonym(k, hetu),
            // validate() refuses a pseudonym feed without a key: a hetu
            // feed is the only way here.
            _ => hetu.as_str().to_owned(),
        };
        Person {
            id,
            birth_date: Some(hetu.birth_date()),
            sex: Some(if hetu.is_male() { "male" } else { "female" }),
        }
    }

    /// Maps one decoded document (whose patient is a valid hetu) for the feed.
    fn map(&self, doc_key: i64, dd: &DecodedDocument, hetu: &Hetu) -> Mapped {
        let person = self.person(hetu);
        let controller_id = dd
            .document
            .controller
            .as_deref()
            .and_then(|o| self.cfg.controller_of(o))
            .map(|c| c.id.as_str());
        let mut out = Mapped {
            records: dd.records.len() as u64,
            ..Mapped::default()
        };
        for rec in &dd.records {
            if self.feed.mapping.is_evidence(rec) {
                out.evidence = true;
            }
            let Some(sel) = self.feed.mapping.select(&dd.document, rec) else {
                if rec.body.negated() {
                    out.negated += 1;
                } else {
                    out.not_selected += 1;
                }
                continue;
            };
            let values = self
                .feed
                .mapping
                .row(&person, &dd.document, controller_id, rec, &sel);
            let json = row_json(&values);
            out.rows.push((
                DocRow {
                    doc_key,
                    ordinal: i64::from(rec.ordinal),
                    record_id: identity::record_id(&self.record, &dd.document.set_id, rec.ordinal),
                    row_hash: sha256_hex(json.as_bytes()),
                    event_date: sel.date.map(|d| d.format("%Y-%m-%d").to_string()),
                    held: sel.held.map(|h| h.as_str().to_owned()),
                },
                values,
            ));
        }
        out
    }
}

impl Ctx<'_> {
    fn map(&self, doc_key: i64, dd: &DecodedDocument, hetu: &Hetu) -> Mapped {
        self.mapper.map(doc_key, dd, hetu)
    }

    /// Re-reads a document through the source's locator and maps it.
    async fn remap(&self, doc_key: i64, sealed: &str, sha256: &str) -> Option<Mapped> {
        let located = match self.mapper.locator.open(sealed) {
            Ok(path) => self.source.locate(&path).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        let bytes = match located {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(feed = %self.feed.name, doc_sha256 = %&sha256[..16.min(sha256.len())], error = %e, "A document could not be re-read through its locator.");
                return None;
            }
        };
        if sha256_hex(&bytes) != sha256 {
            tracing::warn!(feed = %self.feed.name, doc_sha256 = %&sha256[..16.min(sha256.len())], "A document changed after it was read: sources must keep documents immutable.");
            return None;
        }
        let dd = decode::decode(&bytes, &self.cfg.limits).ok()?;
        let hetu = Hetu::parse(&dd.document.patient.extension).ok()?;
        Some(self.map(doc_key, &dd, &hetu))
    }
}

/// The invalidation target of a Prescription Centre invalidation document.
fn invalidates(dd: &DecodedDocument) -> Option<String> {
    dd.records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Medication(m) if m.event == MedicationEvent::DispensingInvalidation => {
                m.invalidates.clone()
            }
            _ => None,
        })
        .or_else(|| {
            (dd.document.prescription_centre_type() == Some("11"))
                .then(|| {
                    dd.document
                        .related
                        .iter()
                        .find(|r| r.type_code == "APND")
                        .and_then(|r| r.id.clone())
                })
                .flatten()
        })
}

/// The decision for one person, from the store's index.
struct PersonPlan {
    member: bool,
    /// record id → (doc key, ordinal, row hash) of rows the register should hold.
    desired: HashMap<String, (i64, i64, String)>,
    /// (record id, reason) of rows held back.
    held: Vec<(String, String)>,
    /// Record ids the policy gate keeps from the register now: neither sent
    /// nor retracted (a departure by policy recalls nothing).
    blocked: HashMap<String, (policy::Outcome, policy::Rule)>,
    /// The person would be a member but for the policy gate: nothing of
    /// theirs is retracted.
    left_by_policy: bool,
    /// Records excluded, by rule; records delivered as exempt.
    excluded: BTreeMap<String, u64>,
    exempt: u64,
    /// What the audit says of exempt records (`exempt: <statute>`).
    exempt_basis: Option<String>,
    /// Decisions to audit: (outcome, rule, basis) → records.
    decisions: BTreeMap<(policy::Outcome, policy::Rule, String), u64>,
    /// Each document's decision.
    by_doc: HashMap<i64, (policy::Outcome, policy::Rule)>,
    /// Documents of another controller than the feed's scope.
    out_of_scope: HashSet<i64>,
}

/// The gate's view of one evaluation: feed basis, the person, the moment.
struct Gate<'a> {
    feed: &'a policy::FeedPolicy,
    person: &'a PersonPolicy,
    at: DateTime<Utc>,
    cfg: &'a Config,
    /// The only controller whose records the feed may use (`feeds.scope`).
    scope: Option<&'a str>,
}

impl Gate<'_> {
    /// Whether a document's records are the feed's to use at all.
    fn in_scope(&self, controller_oid: Option<&str>) -> bool {
        let Some(scope) = self.scope else {
            return true;
        };
        controller_oid
            .and_then(|o| self.cfg.controller_of(o))
            .is_some_and(|c| c.id == scope)
    }

    fn decide(
        &self,
        controller_oid: Option<&str>,
        service_event: Option<&str>,
    ) -> policy::Decision {
        let controller = controller_oid
            .and_then(|o| self.cfg.controller_of(o))
            .map(|c| c.id.as_str());
        policy::decide(
            self.feed,
            self.person,
            &policy::RecordContext {
                controller,
                service_event,
            },
            self.at,
        )
    }
}

fn plan_person(
    docs: &[&store::PersonDoc],
    rows: &HashMap<i64, Vec<DocRow>>,
    live: &HashSet<&str>,
    cutoff: NaiveDate,
    everyone: bool,
    gate: &Gate<'_>,
) -> PersonPlan {
    // The current version of each set.
    let mut current: HashMap<&str, &store::PersonDoc> = HashMap::new();
    for d in docs {
        let e = current.entry(d.set_id.as_str()).or_insert(d);
        if d.version > e.version || (d.version == e.version && d.doc_key > e.doc_key) {
            *e = d;
        }
    }
    // Dispensings voided by a current (not withdrawn) invalidation.
    let voided_ids: HashSet<&str> = current
        .values()
        .filter(|d| !d.withdrawal)
        .filter_map(|d| d.invalidates.as_deref())
        .collect();
    let voided_sets: HashSet<&str> = docs
        .iter()
        .filter(|d| voided_ids.contains(d.doc_id.as_str()))
        .map(|d| d.set_id.as_str())
        .collect();
    let out_of_scope: HashSet<i64> = docs
        .iter()
        .filter(|d| !gate.in_scope(d.controller.as_deref()))
        .map(|d| d.doc_key)
        .collect();
    let mut valid: Vec<&&store::PersonDoc> = current
        .values()
        .filter(|d| !d.withdrawal && !voided_sets.contains(d.set_id.as_str()))
        .filter(|d| !out_of_scope.contains(&d.doc_key))
        .collect();
    valid.sort_by_key(|d| d.doc_key);

    // The policy gate, per document (a record's controller and service
    // event are its document's), before the cohort rules see anything:
    // excluded or held documents are not cohort evidence.
    let decided: Vec<(&&store::PersonDoc, policy::Decision)> = valid
        .iter()
        .map(|d| {
            (
                *d,
                gate.decide(d.controller.as_deref(), d.service_event.as_deref()),
            )
        })
        .collect();
    let member = everyone
        || decided
            .iter()
            .any(|(d, dec)| dec.delivers() && d.evidence == Some(true));
    let member_but_for_policy = everyone || valid.iter().any(|d| d.evidence == Some(true));

    let mut plan = PersonPlan {
        member,
        desired: HashMap::new(),
        held: Vec::new(),
        blocked: HashMap::new(),
        left_by_policy: !member && member_but_for_policy,
        excluded: BTreeMap::new(),
        exempt: 0,
        exempt_basis: None,
        decisions: BTreeMap::new(),
        by_doc: decided
            .iter()
            .map(|(d, dec)| (d.doc_key, (dec.outcome, dec.rule)))
            .collect(),
        out_of_scope,
    };
    if !member_but_for_policy {
        return plan;
    }
    // Records the gate lets through but that stay out because the person's
    // only cohort evidence may not be used.
    let mut left_out = 0u64;
    for (d, dec) in &decided {
        let doc_rows = rows.get(&d.doc_key).map(Vec::as_slice).unwrap_or_default();
        if doc_rows.is_empty() {
            continue;
        }
        let n = doc_rows.len() as u64;
        if dec.rule != policy::Rule::NoObjection || !dec.delivers() {
            *plan
                .decisions
                .entry((dec.outcome, dec.rule, dec.basis.clone()))
                .or_default() += n;
        }
        match dec.outcome {
            policy::Outcome::Exclude => {
                *plan
                    .excluded
                    .entry(dec.rule.as_str().to_owned())
                    .or_default() += n;
                plan.blocked.extend(
                    doc_rows
                        .iter()
                        .map(|r| (r.record_id.clone(), (dec.outcome, dec.rule))),
                );
                continue;
            }
            policy::Outcome::Hold => {
                for r in doc_rows {
                    plan.held
                        .push((r.record_id.clone(), dec.rule.as_str().to_owned()));
                    plan.blocked
                        .insert(r.record_id.clone(), (dec.outcome, dec.rule));
                }
                continue;
            }
            policy::Outcome::Exempt if member => {
                plan.exempt += n;
                plan.exempt_basis.get_or_insert_with(|| dec.basis.clone());
            }
            _ => {}
        }
        if !member {
            left_out += n;
            continue;
        }
        for r in doc_rows {
            if let Some(reason) = &r.held {
                plan.held.push((r.record_id.clone(), reason.clone()));
                continue;
            }
            let recent = r
                .event_date
                .as_deref()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .is_some_and(|date| date >= cutoff);
            if recent || live.contains(r.record_id.as_str()) {
                plan.desired.insert(
                    r.record_id.clone(),
                    (r.doc_key, r.ordinal, r.row_hash.clone()),
                );
            }
        }
    }
    if left_out > 0 {
        let rule = policy::Rule::NoUsableCohortEvidence;
        *plan.excluded.entry(rule.as_str().to_owned()).or_default() += left_out;
        *plan
            .decisions
            .entry((
                policy::Outcome::Exclude,
                rule,
                "no cohort evidence this feed may use".to_owned(),
            ))
            .or_default() += left_out;
    }
    plan
}

/// The fate of each entry of a person's documents new to the feed
/// (`doc_key > cursor`), in the order [`plan_person`] decides it.
fn account_new_rows(
    acc: &mut Accounting,
    plan: &PersonPlan,
    docs: &[&store::PersonDoc],
    rows: &HashMap<i64, Vec<DocRow>>,
    cursor: i64,
) {
    let member_but_for_policy = plan.member || plan.left_by_policy;
    for d in docs.iter().filter(|d| d.doc_key > cursor) {
        let doc_rows = rows.get(&d.doc_key).map(Vec::as_slice).unwrap_or_default();
        if doc_rows.is_empty() {
            continue;
        }
        let n = doc_rows.len() as u64;
        if plan.out_of_scope.contains(&d.doc_key) {
            acc.not_in_scope("other_controller", n);
            continue;
        }
        let Some((outcome, rule)) = plan.by_doc.get(&d.doc_key) else {
            acc.not_in_scope("superseded_or_withdrawn", n);
            continue;
        };
        if !member_but_for_policy {
            acc.not_in_scope("not_in_cohort", n);
            continue;
        }
        match outcome {
            policy::Outcome::Exclude => {
                *acc.excluded.entry(rule.as_str().to_owned()).or_default() += n;
                continue;
            }
            policy::Outcome::Hold => {
                *acc.held.entry(rule.as_str().to_owned()).or_default() += n;
                continue;
            }
            _ => {}
        }
        if !plan.member {
            *acc.excluded
                .entry(policy::Rule::NoUsableCohortEvidence.as_str().to_owned())
                .or_default() += n;
            continue;
        }
        for r in doc_rows {
            if let Some(reason) = &r.held {
                *acc.held.entry(reason.clone()).or_default() += 1;
            } else if plan
                .desired
                .get(&r.record_id)
                .is_some_and(|(k, _, _)| *k == d.doc_key)
            {
                acc.delivered += 1;
            } else {
                acc.not_in_scope("outside_lookback", 1);
            }
        }
    }
}

/// A person's stored policy rows as the gate's input. Times that do not
/// parse are treated as "now or earlier" for starts and "never" for ends,
/// erring towards applying an objection or restriction.
pub fn person_policy(cfg: &Config, rows: &store::PolicyRows, at: DateTime<Utc>) -> PersonPolicy {
    let t = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    };
    let objections = rows
        .objections
        .iter()
        .map(|o| policy::Objection {
            made_to: if o.made_to == "findata" {
                policy::MadeTo::Findata
            } else {
                policy::MadeTo::Controller(o.made_to.clone())
            },
            purposes: serde_json::from_str::<Vec<crate::config::Purpose>>(&o.purposes).ok(),
            effective_from: t(&o.effective_from).unwrap_or(DateTime::<Utc>::MIN_UTC),
            withdrawn: o.withdrawn_at.as_deref().and_then(t),
        })
        .collect();
    let restrictions = rows
        .restrictions
        .iter()
        .map(|r| policy::Restriction {
            controller: r.controller.clone(),
            start: t(&r.start_at).unwrap_or(DateTime::<Utc>::MIN_UTC),
            end: r.end_at.as_deref().and_then(t),
        })
        .collect();
    let denials = rows.denials.as_ref().map(|s| policy::Denials {
        none_valid: s.none_valid,
        service_events: s
            .denials
            .iter()
            .filter_map(|d| d.service_event.clone())
            .collect(),
        controllers: s
            .denials
            .iter()
            .filter(|d| d.service_event.is_none() && d.all_registers)
            .filter_map(|d| d.provider.as_deref())
            .filter_map(|p| cfg.controller_of(p).map(|c| c.id.clone()))
            .collect(),
    });
    let turvakielto = rows.flags.iter().any(|f| {
        f.flag == "turvakielto"
            && t(&f.since).is_none_or(|s| s <= at)
            && f.until.as_deref().and_then(t).is_none_or(|u| at < u)
    });
    PersonPolicy {
        objections,
        restrictions,
        denials,
        turvakielto,
    }
}

/// What sealing does with one person's upserts in a staged batch, from the
/// same evaluation as staging ([`plan_person`]) on the policy state at
/// sealing: rows the person should no longer get are removed (they were
/// never disclosed, so nothing is retracted), each with its rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealVerdict {
    /// Record ids removed at sealing, with the rule (`objection_to_controller`,
    /// `restriction_active`, ..., or `no_usable_cohort_evidence` when the
    /// person left the cohort because their evidence may no longer be used).
    pub removed: Vec<(String, String)>,
    /// Removed rows that are held (re-evaluated every run): (record id, reason).
    pub held: Vec<(String, String)>,
    /// Rows that go out although an objection exists (legal obligation).
    pub exempt: u64,
    /// What the audit says of them (`exempt: <statute>`).
    pub exempt_basis: Option<String>,
    /// Whether the person is still in the feed's cohort.
    pub member: bool,
}

/// The sealing verdict for one person's `upserts` (record id, document key)
/// given their plan at sealing. A row the plan still wants goes out; one it
/// keeps back goes out of the batch under the gate's rule, or under
/// `no_usable_cohort_evidence` when the person is out of the cohort by
/// policy. A row not wanted for any other reason (nothing the policy
/// decided) is left as staged.
fn seal_verdict(plan: &PersonPlan, upserts: &[(&str, i64)]) -> SealVerdict {
    let mut v = SealVerdict {
        member: plan.member,
        ..SealVerdict::default()
    };
    for (id, doc_key) in upserts {
        if plan.desired.contains_key(*id) {
            if plan
                .by_doc
                .get(doc_key)
                .is_some_and(|(o, _)| *o == policy::Outcome::Exempt)
            {
                v.exempt += 1;
                v.exempt_basis.clone_from(&plan.exempt_basis);
            }
            continue;
        }
        let rule = match plan.blocked.get(*id) {
            Some((outcome, rule)) => {
                if *outcome == policy::Outcome::Hold {
                    v.held.push(((*id).to_owned(), rule.as_str().to_owned()));
                }
                *rule
            }
            None if plan.left_by_policy => policy::Rule::NoUsableCohortEvidence,
            None => continue,
        };
        v.removed.push(((*id).to_owned(), rule.as_str().to_owned()));
    }
    v
}

/// The sealing-time re-check of a staged batch (DESIGN §1 step 8).
#[derive(Debug, Clone, Default)]
pub struct BatchRecheck {
    /// Per person (index pseudonym) re-evaluated: what sealing does.
    pub verdicts: BTreeMap<String, SealVerdict>,
    /// People whose location columns turvakielto shields at sealing.
    pub turvakielto: HashSet<String>,
}

/// Re-runs the staging evaluation (policy gate → cohort → rows, through
/// [`plan_person`]) at `at` for every person among a staged batch's
/// `upserts` (record id, person, document key) who has any policy input:
/// only they can be decided otherwise than at staging, and judging them all
/// at sealing also catches an objection or restriction imported before
/// staging whose effective time fell between staging and sealing. Their
/// documents are read up to the batch's window (`upto`); the look-back is
/// measured from `staged_at`, as it was when the batch was built. Reads only.
pub async fn recheck_batch(
    cfg: &Config,
    feed: &FeedConfig,
    tx: &mut store::Tx,
    upserts: &[(String, String, i64)],
    upto: i64,
    staged_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<BatchRecheck, PipelineError> {
    let mut by_person: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for (id, person, doc_key) in upserts {
        by_person
            .entry(person.as_str())
            .or_default()
            .push((id.as_str(), *doc_key));
    }
    let persons: Vec<String> = by_person.keys().map(|p| (*p).to_owned()).collect();
    let policies = tx.policy_rows(&persons).await?;
    let mut out = BatchRecheck::default();
    let mut replan: Vec<String> = Vec::new();
    for p in &persons {
        let Some(rows) = policies.get(p) else {
            continue;
        };
        if rows.objections.is_empty()
            && rows.restrictions.is_empty()
            && rows.flags.is_empty()
            && rows.denials.is_none()
        {
            continue;
        }
        if person_policy(cfg, rows, at).turvakielto {
            out.turvakielto.insert(p.clone());
        }
        replan.push(p.clone());
    }
    let feed_policy = crate::policy::FeedPolicy::of(&feed.legal_basis);
    let cutoff = lookback_cutoff(feed, staged_at);
    for group in replan.chunks(PERSON_GROUP) {
        let docs = tx.person_docs(&feed.name, group, upto).await?;
        let keys: Vec<i64> = docs.iter().map(|d| d.doc_key).collect();
        let mut rows_by_doc: HashMap<i64, Vec<DocRow>> = HashMap::new();
        for r in tx.doc_rows(&feed.name, &keys).await? {
            rows_by_doc.entry(r.doc_key).or_default().push(r);
        }
        let live = tx.live_rows(&feed.name, group).await?;
        let mut docs_by_person: HashMap<&str, Vec<&store::PersonDoc>> = HashMap::new();
        for d in &docs {
            docs_by_person.entry(d.person.as_str()).or_default().push(d);
        }
        for person in group {
            let pp = person_policy(
                cfg,
                policies
                    .get(person)
                    .expect("re-planned people have policy rows"),
                at,
            );
            let gate = Gate {
                feed: &feed_policy,
                person: &pp,
                at,
                cfg,
                scope: scope_of(feed),
            };
            let live_ids: HashSet<&str> = live
                .iter()
                .filter(|r| r.person == *person)
                .map(|r| r.record_id.as_str())
                .collect();
            let plan = plan_person(
                docs_by_person
                    .get(person.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                &rows_by_doc,
                &live_ids,
                cutoff,
                feed.mapping.cohort_everyone,
                &gate,
            );
            let rows = by_person
                .get(person.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            out.verdicts
                .insert(person.clone(), seal_verdict(&plan, rows));
        }
    }
    Ok(out)
}

/// The oldest effective date a feed run at `at` sends for the first time.
/// The controller a feed's records are limited to (`feeds.scope`).
fn scope_of(feed: &FeedConfig) -> Option<&str> {
    match feed.scope {
        crate::config::Scope::All => None,
        crate::config::Scope::RecipientController => {
            feed.legal_basis.recipient_controller.as_deref()
        }
    }
}

fn lookback_cutoff(feed: &FeedConfig, at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
        .checked_sub_months(Months::new(feed.mapping.lookback_years.saturating_mul(12)))
        .unwrap_or(NaiveDate::MIN)
}

/// Runs one feed once: stages zero or more batches (one per chunk of new
/// documents that changes anything). Sealing and delivery are separate.
pub async fn stage(
    cfg: &Config,
    feed: &FeedConfig,
    store: &Store,
    keys: FeedKeys<'_>,
    at: DateTime<Utc>,
    mode: Mode,
) -> Result<RunReport, PipelineError> {
    let source_cfg = cfg
        .source(&feed.source)
        .ok_or_else(|| PipelineError::Config(format!("feed {}: unknown source", feed.name)))?;
    let source = Source::build(source_cfg).map_err(|error| PipelineError::Source {
        source_name: source_cfg.name.clone(),
        error,
    })?;
    let cutoff = lookback_cutoff(feed, at);
    let mapper = std::sync::Arc::new(Mapper::new(cfg, feed, &keys));
    let cx = Ctx {
        feed,
        mapping: &feed.mapping,
        cfg,
        keys,
        mapper: std::sync::Arc::clone(&mapper),
        source: &source,
        cutoff,
        mode,
        at,
        feed_policy: crate::policy::FeedPolicy::of(&feed.legal_basis),
        safety_columns: feed.mapping.safety_columns(),
        held_pending: std::sync::atomic::AtomicBool::new(true),
    };
    let mut report = RunReport {
        feed: feed.name.clone(),
        ..RunReport::default()
    };

    let started = std::time::Instant::now();
    // The producer lists the source group by group (a folder, or a page of
    // rows), decides from the `seen` entries what is new or changed, and
    // decodes it ahead of the run in chunks, each staged as it completes.
    // A `sql` source lists from its high-water mark less its look-back, so
    // rows it lists again are found in `seen` (see `source::sql`). Memory
    // holds the chunk being staged and at most the next one, decoded.
    let chunk_size = cfg.max_documents_per_batch.max(1);
    let workers = cfg.daemon.workers.max(1);
    let pool = if workers > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("regfeed-decode-{i}"))
            .build()
            .map_err(|e| {
                PipelineError::Worker(format!("cannot start the decoding threads: {e}"))
            })?;
        Some(std::sync::Arc::new(pool))
    } else {
        None
    };
    let producer = ahead::Producer {
        source: source.clone(),
        store: store.clone(),
        mapper,
        pool: pool.clone(),
        chunk_size,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(ahead::Producer::channel_bound(chunk_size));
    let consumed = if pool.is_some() {
        // On a task of its own, so that it lists and hands out work while
        // this one waits for the store.
        let producing = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(producer.run(tx)));
        let r = consume(&cx, store, &mut rx, &mut report).await;
        rx.close();
        drop(producing);
        r
    } else {
        // One worker: the producer decodes inline, interleaved with the
        // run on this task.
        let run = async {
            let r = consume(&cx, store, &mut rx, &mut report).await;
            rx.close();
            r
        };
        tokio::join!(producer.run(tx), run).1
    };
    consumed?;
    report.total_ns = started.elapsed().as_nanos() as u64;
    Ok(report)
}

/// What one chunk brought: `seen` entries, refused documents, and the
/// decoded documents' header facts, mappings and denial snapshots, side by
/// side, in listing order.
#[derive(Default)]
struct ChunkInput {
    seen_rows: Vec<Seen>,
    quarantined: Vec<Quarantined>,
    new_docs: Vec<NewDocument>,
    new_mapped: Vec<Option<Mapped>>,
    new_snapshots: Vec<Option<store::DenialSnapshot>>,
}

/// Takes the producer's work in order: counts, units into the chunk being
/// gathered, and at each chunk's end stages it.
async fn consume(
    cx: &Ctx<'_>,
    store: &Store,
    rx: &mut tokio::sync::mpsc::Receiver<ahead::AheadResult>,
    report: &mut RunReport,
) -> Result<(), PipelineError> {
    let feed = &cx.feed.name;
    let source_name = cx.source.name().to_owned();
    let mut chunk = ChunkInput::default();
    while let Some(msg) = rx.recv().await {
        match msg? {
            ahead::Ahead::Listed {
                files,
                new,
                store_ns,
            } => {
                report.files_listed += files;
                report.files_new += new;
                report.store_ns += store_ns;
            }
            ahead::Ahead::Unit { items, busy_ns } => {
                report.decode_ns += busy_ns;
                for (c, outcome) in items {
                    let (seen, decoded) = match outcome {
                        ahead::Outcome::Unreadable(e) => {
                            report.files_unreadable += 1;
                            tracing::warn!(feed = %feed, error = %e, "A source file could not be read; it will be tried again.");
                            continue;
                        }
                        ahead::Outcome::Read(seen, decoded) => (seen, decoded),
                    };
                    chunk.seen_rows.push(seen);
                    match decoded {
                        ahead::Decoded::Unchanged => {}
                        ahead::Decoded::Document(d) => {
                            let ahead::NewDocumentAhead {
                                bytes,
                                doc,
                                mapped,
                                snapshot,
                            } = *d;
                            report.bytes_decoded += bytes;
                            report.documents_decoded += 1;
                            chunk.new_docs.push(doc);
                            chunk.new_mapped.push(mapped);
                            chunk.new_snapshots.push(snapshot);
                        }
                        ahead::Decoded::Refused { sha256, error: e } => {
                            tracing::warn!(feed = %feed, doc_sha256 = %&sha256[..16], class = %e.class, detail = %e.detail, "A document was quarantined.");
                            *report
                                .quarantined
                                .entry(e.class.as_str().to_owned())
                                .or_default() += 1;
                            report.documents_quarantined += 1;
                            chunk.quarantined.push(Quarantined {
                                source: source_name.clone(),
                                path: c.listed.path,
                                sha256,
                                class: e.class.as_str().to_owned(),
                                detail: e.detail,
                            });
                        }
                    }
                }
            }
            ahead::Ahead::EndChunk => {
                // A chunk that read no document (a run with nothing new)
                // grew nothing that needs upkeep.
                let read_any = !chunk.seen_rows.is_empty();
                stage_chunk(cx, store, std::mem::take(&mut chunk), report).await?;
                if cx.mode != Mode::DryRun && read_any {
                    timed!(report.store_ns, store.after_chunk());
                }
                allocator::release_freed_memory();
                if cx.mode == Mode::DryRun {
                    return Ok(());
                }
            }
            ahead::Ahead::Done { late_ns } => {
                if let Source::Sql(s) = cx.source {
                    s.note_lateness(late_ns);
                }
                return Ok(());
            }
        }
    }
    // The producer ended without `Done`: its task was cancelled.
    Err(PipelineError::Worker(
        "the listing stopped before it was done".into(),
    ))
}

impl Mapper {
    /// Header facts of a decoded document for the store, and its mapping for the
    /// feed when its patient is a person (the document key is filled in later).
    fn ingest(
        &self,
        source_name: &str,
        path: &str,
        sha256: String,
        dd: &DecodedDocument,
    ) -> (NewDocument, Option<Mapped>, Option<store::DenialSnapshot>) {
        let hetu = if dd.document.patient.is_hetu() {
            Hetu::parse(&dd.document.patient.extension).ok()
        } else {
            None
        };
        let person = hetu
            .as_ref()
            .map(|h| identity::person_index(&self.index, h).into_string());
        let mapped = hetu.as_ref().map(|h| self.map(0, dd, h));
        let doc = &dd.document;
        let new = NewDocument {
            doc_id: doc.id.clone(),
            set_id: doc.set_id.clone(),
            version: i64::from(doc.version),
            person,
            source: source_name.to_owned(),
            path: path.to_owned(),
            sha256,
            packaging: serde_json::to_value(dd.packaging)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            controller: doc.controller.clone(),
            service_event: doc.service_event.clone(),
            code_system: doc.code.as_ref().map(|c| c.system.clone()),
            code: doc.code.as_ref().map(|c| c.code.clone()),
            withdrawal: doc.is_withdrawal(),
            invalidates: invalidates(dd),
            sensitive: doc.flags.sensitive,
            records: dd.records.len() as i64,
            patient_id: crate::codes::patient_id_kind(&doc.patient.root),
        };
        // A prohibition document is the person's denial snapshot as of its time.
        let snapshot = new.person.as_ref().and_then(|person| {
            dd.records.iter().find_map(|r| match &r.body {
                RecordBody::Prohibition(p) => Some(store::DenialSnapshot {
                    person: person.clone(),
                    origin: "document".into(),
                    doc_key: None,
                    effective_at: doc
                        .effective_time
                        .as_ref()
                        .and_then(|t| t.start())
                        .map(|t| {
                            t.and_utc()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        })
                        .unwrap_or_else(store::now),
                    none_valid: p.no_valid_prohibitions,
                    emergency: p.emergency_disclosure_allowed,
                    denials: p
                        .service_events
                        .iter()
                        .map(|d| store::DenialRow {
                            service_event: d.service_event.clone(),
                            provider: d.provider.clone(),
                            all_registers: false,
                            from_at: d.from.as_ref().map(|t| t.0.clone()),
                            to_at: d.to.as_ref().map(|t| t.0.clone()),
                        })
                        .chain(p.providers.iter().map(|d| store::DenialRow {
                            service_event: None,
                            provider: Some(d.provider.clone()),
                            all_registers: d.all_registers,
                            from_at: None,
                            to_at: None,
                        }))
                        .collect(),
                }),
                _ => None,
            })
        });
        (new, mapped, snapshot)
    }
}

/// A chunk's just-written documents, by person, and their row index, for
/// the evaluation of the chunk's people (see [`stage_chunk`]).
struct FreshDocs {
    /// The documents' keys, when they form one range (they do: a chunk
    /// draws them in one transaction holding the write lock); the store
    /// then leaves them out of what it reads. `None` with no document, or
    /// were they ever not contiguous: the store reads them too and the
    /// copies it returns are dropped.
    keys: Option<(i64, i64)>,
    set: HashSet<i64>,
    docs: HashMap<String, Vec<store::PersonDoc>>,
    rows: HashMap<i64, Vec<DocRow>>,
}

impl FreshDocs {
    fn new(
        new_docs: Vec<NewDocument>,
        doc_keys: &[i64],
        feed_docs: &[(i64, String, bool)],
        feed_rows: Vec<DocRow>,
    ) -> FreshDocs {
        let evidence: HashMap<i64, bool> = feed_docs.iter().map(|(k, _, e)| (*k, *e)).collect();
        let set: HashSet<i64> = doc_keys.iter().copied().collect();
        let keys = match (doc_keys.iter().min(), doc_keys.iter().max()) {
            (Some(&lo), Some(&hi)) if (hi - lo + 1) as usize == set.len() => Some((lo, hi)),
            _ => None,
        };
        let mut docs: HashMap<String, Vec<store::PersonDoc>> = HashMap::new();
        for (d, &doc_key) in new_docs.into_iter().zip(doc_keys) {
            let Some(person) = d.person else {
                continue;
            };
            docs.entry(person.clone())
                .or_default()
                .push(store::PersonDoc {
                    doc_key,
                    doc_id: d.doc_id,
                    set_id: d.set_id,
                    version: d.version,
                    person,
                    source: d.source,
                    path: d.path,
                    sha256: d.sha256,
                    withdrawal: d.withdrawal,
                    invalidates: d.invalidates,
                    evidence: evidence.get(&doc_key).copied(),
                    controller: d.controller,
                    service_event: d.service_event,
                });
        }
        let mut rows: HashMap<i64, Vec<DocRow>> = HashMap::new();
        for r in feed_rows {
            rows.entry(r.doc_key).or_default().push(r);
        }
        FreshDocs {
            keys,
            set,
            docs,
            rows,
        }
    }

    fn holds(&self, doc_key: i64) -> bool {
        self.set.contains(&doc_key)
    }

    /// Adds the group's fresh documents to those the store returned, in
    /// document order as the store would have returned them all.
    fn take_docs(&mut self, group: &[String], docs: &mut Vec<store::PersonDoc>) {
        if self.keys.is_none() {
            docs.retain(|d| !self.set.contains(&d.doc_key));
        }
        for person in group {
            if let Some(mine) = self.docs.remove(person) {
                docs.extend(mine);
            }
        }
        docs.sort_by_key(|d| d.doc_key);
    }
}

/// Keeps the items whose mark is set (`keep` runs parallel to `items`).
fn retain_marked<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut marks = keep.iter();
    items.retain(|_| marks.next().copied().unwrap_or(false));
}

async fn stage_chunk(
    cx: &Ctx<'_>,
    store: &Store,
    input: ChunkInput,
    report: &mut RunReport,
) -> Result<(), PipelineError> {
    let feed = &cx.feed.name;
    let source_name = cx.source.name().to_owned();
    // A chunk holds header facts and mapped rows, never whole documents,
    // and filters them in place rather than copying them.
    let ChunkInput {
        mut seen_rows,
        mut quarantined,
        mut new_docs,
        mut new_mapped,
        mut new_snapshots,
    } = input;
    let mut tx = timed!(report.store_ns, store.begin_run())?;
    // The same document id and version arriving twice: a copy with the same
    // bytes is a duplicate; different bytes are quarantined.
    let ids: Vec<&str> = new_docs.iter().map(|d| d.doc_id.as_str()).collect();
    let mut known = timed!(report.store_ns, tx.known_documents(&ids))?;
    drop(ids);
    let mut keep = Vec::with_capacity(new_docs.len());
    for doc in &new_docs {
        match known.get(&doc.doc_id) {
            Some(existing) if *existing == doc.sha256 => {
                report.documents_duplicate += 1;
                keep.push(false);
                continue;
            }
            Some(_) => {
                tracing::warn!(feed = %feed, doc_sha256 = %&doc.sha256[..16], "A document id and version arrived again with different content; quarantined.");
                *report
                    .quarantined
                    .entry("conflicting_version".into())
                    .or_default() += 1;
                report.documents_quarantined += 1;
                quarantined.push(Quarantined {
                    source: source_name.clone(),
                    path: doc.path.clone(),
                    sha256: doc.sha256.clone(),
                    class: "conflicting_version".into(),
                    detail:
                        "a document with this id and version but other content was recorded before"
                            .into(),
                });
                keep.push(false);
                continue;
            }
            None => {}
        }
        known.insert(doc.doc_id.clone(), doc.sha256.clone());
        match doc.patient_id {
            PatientIdKind::Hetu => report.documents_hetu += 1,
            PatientIdKind::Temporary => report.documents_temporary_id += 1,
            PatientIdKind::Other => report.documents_other_id += 1,
        }
        report.entries.decoded += doc.records as u64;
        if doc.person.is_none() {
            // No person to link the entries to.
            report.entries.not_in_scope(
                &format!("patient_id_{}", doc.patient_id.as_str()),
                doc.records as u64,
            );
        }
        keep.push(true);
    }
    drop(known);
    retain_marked(&mut new_docs, &keep);
    retain_marked(&mut new_mapped, &keep);
    retain_marked(&mut new_snapshots, &keep);
    drop(keep);
    let locator = &cx.mapper.locator;
    locator.seal_in_place(new_docs.iter_mut().map(|d| &mut d.path));
    locator.seal_in_place(seen_rows.iter_mut().map(|s| &mut s.path));
    locator.seal_in_place(quarantined.iter_mut().map(|q| &mut q.path));
    let doc_keys = timed!(report.store_ns, tx.insert_documents(&new_docs))?;
    let snapshots: Vec<store::DenialSnapshot> = new_snapshots
        .into_iter()
        .zip(&doc_keys)
        .filter_map(|(s, k)| {
            s.map(|mut s| {
                s.doc_key = Some(*k);
                s
            })
        })
        .collect();
    timed!(report.store_ns, tx.insert_denial_snapshots(&snapshots))?;

    // This chunk's mapped rows, now under their document keys.
    let mut contents: HashMap<(i64, i64), Vec<Value>> = HashMap::new();
    let mut feed_docs = Vec::new();
    let mut feed_rows = Vec::new();
    for ((mapped, key), nd) in new_mapped.into_iter().zip(&doc_keys).zip(&new_docs) {
        let (Some(m), Some(person)) = (mapped, &nd.person) else {
            continue;
        };
        report.entries.not_in_scope("negated", m.negated);
        report.entries.not_in_scope("not_selected", m.not_selected);
        feed_docs.push((*key, person.clone(), m.evidence));
        for (mut r, values) in m.rows {
            r.doc_key = *key;
            contents.insert((r.doc_key, r.ordinal), values);
            feed_rows.push(r);
        }
    }
    timed!(
        report.store_ns,
        tx.put_feed_docs(feed, &feed_docs, &feed_rows)
    )?;
    timed!(report.store_ns, tx.put_seen(&source_name, &seen_rows))?;
    timed!(report.store_ns, tx.quarantine(&quarantined))?;
    drop(seen_rows);
    // The chunk's documents and row index as the evaluation below reads
    // them: asking the store would only hand back, copied, what was just
    // written (in a backfill, nearly every document it reads). The store
    // is asked for the rest, the documents outside this chunk's keys.
    let mut fresh = FreshDocs::new(new_docs, &doc_keys, &feed_docs, feed_rows);
    drop((doc_keys, feed_docs));

    // Re-evaluate everyone with a document this feed has not processed.
    let cursor = timed!(report.store_ns, tx.cursor(feed))?;
    let upto = timed!(report.store_ns, tx.max_doc_key())?;
    let mut persons = timed!(report.store_ns, tx.persons_between(cursor, upto))?;
    // Held records are re-evaluated every run, new documents or not: a
    // restriction that ended releases them into this run's batch.
    if cx
        .held_pending
        .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        persons.extend(timed!(
            report.store_ns,
            tx.held_persons(feed, policy::Rule::HOLDING)
        )?);
        // An aggregate feed's inputs follow the policy as it stands: an
        // objection takes a person's rows out of the statistics.
        if cx.mapping.aggregate.is_some() {
            persons.extend(timed!(report.store_ns, tx.aggregate_policy_persons(feed))?);
        }
        persons.sort_unstable();
        persons.dedup();
    }
    let excluded_before = report.excluded.clone();
    let decisions_before = report.decisions.len();
    let mut preview_blocked: Vec<PreviewRow> = Vec::new();
    let mut preview_decisions: HashMap<String, (policy::Outcome, policy::Rule)> = HashMap::new();
    let exempt_before = report.exempt;
    let mut batch_rows: Vec<BatchRow> = Vec::new();
    let mut upserts: Vec<LiveRow> = Vec::new();
    let mut retracts: Vec<String> = Vec::new();
    let mut held_all: Vec<(String, String, String)> = Vec::new();
    let mut held_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut cohort_changes = Vec::new();
    // Index pseudonyms of everyone with a row in the batch (for the audit).
    let mut batch_people: Vec<String> = Vec::new();
    for group in persons.chunks(PERSON_GROUP) {
        report.persons_evaluated += group.len() as u64;
        let mut docs = timed!(
            report.store_ns,
            tx.person_docs_except(feed, group, upto, fresh.keys)
        )?;
        fresh.take_docs(group, &mut docs);
        // Documents this feed never mapped (ingested by another feed's run,
        // or before this feed existed): re-read and map them now.
        let mut late_docs = Vec::new();
        let mut late_rows = Vec::new();
        for d in docs.iter().filter(|d| d.evidence.is_none()) {
            let m = cx
                .remap(d.doc_key, &d.path, &d.sha256)
                .await
                .unwrap_or_default();
            if d.doc_key > cursor {
                // New to this feed, read by another feed's run.
                report.entries.decoded += m.records;
                report.entries.not_in_scope("negated", m.negated);
                report.entries.not_in_scope("not_selected", m.not_selected);
            }
            late_docs.push((d.doc_key, d.person.clone(), m.evidence));
            for (r, values) in m.rows {
                contents.insert((r.doc_key, r.ordinal), values);
                late_rows.push(r);
            }
        }
        timed!(
            report.store_ns,
            tx.put_feed_docs(feed, &late_docs, &late_rows)
        )?;
        let late_evidence: HashMap<i64, bool> =
            late_docs.iter().map(|(k, _, e)| (*k, *e)).collect();

        // The row index: the store's for documents mapped before, this
        // run's (in memory) for the chunk's and the late ones.
        let mut rows_by_doc: HashMap<i64, Vec<DocRow>> = HashMap::new();
        let stored_keys: Vec<i64> = docs
            .iter()
            .map(|d| d.doc_key)
            .filter(|k| !fresh.holds(*k) && !late_evidence.contains_key(k))
            .collect();
        for r in timed!(report.store_ns, tx.doc_rows(feed, &stored_keys))? {
            rows_by_doc.entry(r.doc_key).or_default().push(r);
        }
        for d in &docs {
            if let Some(rows) = fresh.rows.remove(&d.doc_key) {
                rows_by_doc.insert(d.doc_key, rows);
            }
        }
        for r in late_rows {
            rows_by_doc.entry(r.doc_key).or_default().push(r);
        }
        for rows in rows_by_doc.values_mut() {
            rows.sort_by_key(|r| r.ordinal);
        }
        let docs: Vec<store::PersonDoc> = docs
            .into_iter()
            .map(|mut d| {
                if d.evidence.is_none() {
                    d.evidence = late_evidence.get(&d.doc_key).copied();
                }
                d
            })
            .collect();
        let live = timed!(report.store_ns, tx.live_rows(feed, group))?;
        let was_member = timed!(report.store_ns, tx.cohort(feed, group))?;
        let policies = timed!(report.store_ns, tx.policy_rows(group))?;
        let no_policy = store::PolicyRows::default();
        let mut docs_by_person: HashMap<&str, Vec<&store::PersonDoc>> = HashMap::new();
        for d in &docs {
            docs_by_person.entry(d.person.as_str()).or_default().push(d);
        }
        let mut live_by_person: HashMap<&str, Vec<&LiveRow>> = HashMap::new();
        for r in &live {
            live_by_person.entry(r.person.as_str()).or_default().push(r);
        }
        let path_of: HashMap<i64, (&str, &str)> = docs
            .iter()
            .map(|d| (d.doc_key, (d.path.as_str(), d.sha256.as_str())))
            .collect();

        for person in group {
            let rows_before = batch_rows.len();
            let pdocs = docs_by_person
                .get(person.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let plive = live_by_person
                .get(person.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let live_ids: HashSet<&str> = plive.iter().map(|r| r.record_id.as_str()).collect();
            let pp = person_policy(
                cx.cfg,
                policies.get(person.as_str()).unwrap_or(&no_policy),
                cx.at,
            );
            let gate = Gate {
                feed: &cx.feed_policy,
                person: &pp,
                at: cx.at,
                cfg: cx.cfg,
                scope: scope_of(cx.feed),
            };
            let plan = plan_person(
                pdocs,
                &rows_by_doc,
                &live_ids,
                cx.cutoff,
                cx.mapping.cohort_everyone,
                &gate,
            );
            if cx.mode == Mode::DryRun {
                let mut blocked: Vec<(&String, &(policy::Outcome, policy::Rule))> =
                    plan.blocked.iter().collect();
                blocked.sort();
                for (id, (outcome, rule)) in blocked {
                    preview_blocked.push(PreviewRow {
                        record_id: id.clone(),
                        op: "none".into(),
                        decision: serde_json::to_value(outcome)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        rule: rule.as_str().into(),
                        values: serde_json::Value::Null,
                    });
                }
            }
            account_new_rows(&mut report.entries, &plan, pdocs, &rows_by_doc, cursor);
            for (rule, n) in &plan.excluded {
                *report.excluded.entry(rule.clone()).or_default() += n;
            }
            report.exempt += plan.exempt;
            for ((outcome, rule, basis), n) in &plan.decisions {
                report.decisions.push(DecisionCount {
                    person: person.clone(),
                    outcome: *outcome,
                    rule: *rule,
                    basis: basis.clone(),
                    records: *n,
                });
            }
            let before = was_member.get(person).copied().unwrap_or(false);
            if plan.member != before {
                cohort_changes.push((person.clone(), plan.member));
                if plan.member {
                    report.cohort_entered += 1;
                } else {
                    report.cohort_left += 1;
                }
            }
            for (id, reason) in &plan.held {
                *held_counts.entry(reason.clone()).or_default() += 1;
                held_all.push((id.clone(), person.clone(), reason.clone()));
            }
            // Retract what the register holds and should not — never because
            // of the policy gate: a departure by objection recalls nothing.
            // An aggregate feed's rows are its statistics' inputs, never
            // delivered: what the gate keeps out leaves them at once.
            let aggregate = cx.mapping.aggregate.is_some();
            let mut retract_ids: Vec<&str> = plive
                .iter()
                .filter(|r| {
                    (aggregate
                        || (!plan.left_by_policy && !plan.blocked.contains_key(&r.record_id)))
                        && !plan.desired.contains_key(&r.record_id)
                })
                .map(|r| r.record_id.as_str())
                .collect();
            retract_ids.sort_unstable();
            for id in retract_ids {
                retracts.push(id.to_owned());
                batch_rows.push(BatchRow {
                    record_id: id.to_owned(),
                    op: "retract".into(),
                    row: "[]".into(),
                    person: Some(person.clone()),
                    doc_key: None,
                });
            }
            // Upsert what is new or changed, in document order.
            let live_hash: HashMap<&str, &str> = plive
                .iter()
                .map(|r| (r.record_id.as_str(), r.row_hash.as_str()))
                .collect();
            // A document new to this feed upserts every entry it has (a
            // superseding version resends unchanged entries too: DESIGN §2);
            // older documents only where the register's copy differs.
            let mut wanted: Vec<(&String, &(i64, i64, String))> = plan
                .desired
                .iter()
                .filter(|(id, (doc_key, _, hash))| {
                    *doc_key > cursor || live_hash.get(id.as_str()) != Some(&hash.as_str())
                })
                .collect();
            wanted.sort_by_key(|(_, (k, o, _))| (*k, *o));
            for (id, (doc_key, ordinal, hash)) in wanted {
                if !contents.contains_key(&(*doc_key, *ordinal))
                    && let Some((path, sha)) = path_of.get(doc_key)
                    && let Some(m) = cx.remap(*doc_key, path, sha).await
                {
                    for (r, values) in m.rows {
                        contents.insert((r.doc_key, r.ordinal), values);
                    }
                }
                let Some(values) = contents.get(&(*doc_key, *ordinal)) else {
                    // The locator failed: leave the row for a later run.
                    continue;
                };
                if *doc_key <= cursor {
                    report.entries.redelivered += 1;
                }
                upserts.push(LiveRow {
                    record_id: id.clone(),
                    person: person.clone(),
                    row_hash: hash.clone(),
                });
                let row = if pp.turvakielto && !cx.safety_columns.is_empty() {
                    let mut v = values.clone();
                    for &i in &cx.safety_columns {
                        if let Some(x) = v.get_mut(i) {
                            *x = Value::Null;
                        }
                    }
                    row_json(&v)
                } else {
                    row_json(values)
                };
                if cx.mode == Mode::DryRun {
                    let (o, r) = plan
                        .by_doc
                        .get(doc_key)
                        .copied()
                        .unwrap_or((policy::Outcome::Include, policy::Rule::NoObjection));
                    preview_decisions.insert(id.clone(), (o, r));
                }
                batch_rows.push(BatchRow {
                    record_id: id.clone(),
                    op: "upsert".into(),
                    row,
                    person: Some(person.clone()),
                    doc_key: Some(*doc_key),
                });
            }
            if batch_rows.len() > rows_before {
                batch_people.push(person.clone());
            }
        }
    }

    for (reason, n) in &held_counts {
        *report.held.entry(reason.clone()).or_default() += n;
    }
    // What the chunk changed in a statistics feed's inputs.
    let aggregate_change = AggregateChange {
        rows: &batch_rows,
        upserts: &upserts,
        retracts: &retracts,
        held: &held_counts,
        excluded_before: &excluded_before,
        exempt_before,
        window: (cursor, upto),
    };
    if cx.mode == Mode::DryRun
        && let Some(agg) = &cx.mapping.aggregate
    {
        // The cells the run would stage, computed in this transaction and
        // rolled back with it: a statistics feed's preview shows cells,
        // never its input rows.
        if !batch_rows.is_empty() {
            let (staged, cells) =
                stage_aggregate(cx, &mut tx, agg, report, aggregate_change).await?;
            if let Some((_, up, ret)) = staged {
                report.upserts += up;
                report.retracts += ret;
            }
            report.preview = cells
                .into_iter()
                .map(|r| {
                    let upsert = r.op == "upsert";
                    PreviewRow {
                        values: serde_json::from_str(&r.row).unwrap_or_default(),
                        decision: if upsert { "include" } else { "retract" }.to_owned(),
                        rule: if upsert { "cell_changed" } else { "cell_gone" }.to_owned(),
                        record_id: r.record_id,
                        op: r.op,
                    }
                })
                .collect();
        }
        timed!(report.store_ns, tx.rollback())?;
        return Ok(());
    }
    if cx.mode == Mode::DryRun {
        report.upserts += upserts.len() as u64;
        report.retracts += retracts.len() as u64;
        report.preview = batch_rows
            .into_iter()
            .map(|r| {
                let (decision, rule) = match preview_decisions.get(&r.record_id) {
                    Some((o, rule)) => (
                        serde_json::to_value(o)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        rule.as_str().to_owned(),
                    ),
                    None => ("retract".to_owned(), "data_changed".to_owned()),
                };
                PreviewRow {
                    values: serde_json::from_str(&r.row).unwrap_or_default(),
                    record_id: r.record_id,
                    op: r.op,
                    decision,
                    rule,
                }
            })
            .chain(preview_blocked)
            .collect();
        // A dry run changes nothing.
        timed!(report.store_ns, tx.rollback())?;
        return Ok(());
    }
    let audit_key = cx.keys.audit.ok_or_else(|| {
        PipelineError::Config(format!("feed {feed}: the audit key is not loaded"))
    })?;
    let mut audit_entries: Vec<crate::audit::Entry> = quarantined
        .iter()
        .map(|q| crate::audit::Entry::Quarantined {
            feed: feed.clone(),
            doc_sha256: q.sha256.chars().take(16).collect(),
            class: q.class.clone(),
        })
        .collect();
    timed!(report.store_ns, tx.replace_held(feed, &persons, &held_all))?;
    timed!(report.store_ns, tx.set_cohort(feed, &cohort_changes))?;
    if let Some(agg) = &cx.mapping.aggregate {
        if !batch_rows.is_empty() {
            let staged = stage_aggregate(cx, &mut tx, agg, report, aggregate_change)
                .await?
                .0;
            if let Some((seq, upserts, retracts)) = staged {
                report.upserts += upserts;
                report.retracts += retracts;
                report.staged.push(seq);
                audit_entries.push(crate::audit::Entry::batch_staged(
                    cx.feed,
                    seq,
                    upserts,
                    retracts,
                    batch_people
                        .iter()
                        .map(|p| crate::audit::audit_pseudonym(audit_key, p))
                        .collect(),
                ));
            }
        }
    } else if !batch_rows.is_empty() {
        let seq = timed!(report.store_ns, tx.next_seq(feed))?;
        let held_json = serde_json::to_string(&held_counts).unwrap_or_else(|_| "{}".into());
        let policy_json = chunk_policy(report, &excluded_before, exempt_before);
        timed!(
            report.store_ns,
            tx.insert_batch(
                &NewBatch {
                    feed: feed.clone(),
                    seq,
                    window_from: (cursor > 0).then_some(cursor),
                    window_to: upto,
                    upserts: upserts.len() as i64,
                    retracts: retracts.len() as i64,
                    held: held_json,
                    policy: policy_json,
                },
                &batch_rows,
            )
        )?;
        timed!(
            report.store_ns,
            tx.apply_rows(feed, seq, &upserts, &retracts)
        )?;
        report.upserts += upserts.len() as u64;
        report.retracts += retracts.len() as u64;
        report.staged.push(seq);
        audit_entries.push(crate::audit::Entry::batch_staged(
            cx.feed,
            seq,
            upserts.len() as u64,
            retracts.len() as u64,
            batch_people
                .iter()
                .map(|p| crate::audit::audit_pseudonym(audit_key, p))
                .collect(),
        ));
    }
    // Decisions of this chunk, per person and rule: the policy gate's
    // (exclusions, holds, exemptions, overrides, derogations) and the
    // mapping's holds (e.g. a value without a unit). Re-evaluated every
    // run, so audited each time they are made.
    let policy_rules: HashSet<&str> = report.decisions[decisions_before..]
        .iter()
        .map(|d| d.rule.as_str())
        .collect();
    let mut items: Vec<crate::audit::Decision> = report.decisions[decisions_before..]
        .iter()
        .map(|d| crate::audit::Decision {
            person: crate::audit::audit_pseudonym(audit_key, &d.person),
            outcome: match d.outcome {
                policy::Outcome::Include => crate::audit::Outcome::Include,
                policy::Outcome::Exempt => crate::audit::Outcome::Exempt,
                policy::Outcome::Exclude => crate::audit::Outcome::Exclude,
                policy::Outcome::Hold => crate::audit::Outcome::Hold,
            },
            rule: d.rule.as_str().to_owned(),
            basis: d.basis.clone(),
            records: d.records,
        })
        .collect();
    let mut holds: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (_, person, reason) in &held_all {
        if !policy_rules.contains(reason.as_str()) {
            *holds.entry((person, reason)).or_default() += 1;
        }
    }
    items.extend(
        holds
            .into_iter()
            .map(|((person, reason), records)| crate::audit::Decision {
                person: crate::audit::audit_pseudonym(audit_key, person),
                outcome: crate::audit::Outcome::Hold,
                rule: format!("mapping.hold.{reason}"),
                basis: format!("held: {reason}"),
                records,
            }),
    );
    if !items.is_empty() {
        audit_entries.push(crate::audit::Entry::Decisions {
            feed: feed.clone(),
            seq: audit_entries.iter().find_map(|e| match e {
                crate::audit::Entry::BatchStaged { seq, .. } => Some(*seq),
                _ => None,
            }),
            items,
        });
    }
    // The chunk's decisions are in the trail now; a run keeps no per-person
    // state across chunks.
    report.decisions.truncate(decisions_before);
    // In the staging transaction: the trail holds what was staged, or neither.
    timed!(
        report.store_ns,
        crate::audit::append(&mut tx, &audit_entries)
    )?;
    timed!(report.store_ns, tx.set_cursor(feed, upto))?;
    crate::failpoint::hit("commit");
    timed!(report.store_ns, tx.commit())?;
    crate::failpoint::hit("staged");
    Ok(())
}

/// What a chunk changed in an aggregate feed's inputs.
struct AggregateChange<'a> {
    /// The input rows' upserts and retracts, as a row feed would deliver them.
    rows: &'a [BatchRow],
    upserts: &'a [LiveRow],
    retracts: &'a [String],
    /// Input rows held back, by reason.
    held: &'a BTreeMap<String, u64>,
    excluded_before: &'a BTreeMap<String, u64>,
    exempt_before: u64,
    /// (cursor, upto): the documents the chunk covers.
    window: (i64, i64),
}

/// Applies a chunk's input changes to an aggregate feed, computes the
/// tables of every period they touch, and stages the cells that differ from
/// what was published (upserts) and those that are gone (retracts) as one
/// batch. Returns its (seq, upserts, retracts), or `None` when no cell
/// changed, and its rows.
async fn stage_aggregate(
    cx: &Ctx<'_>,
    tx: &mut store::Tx,
    agg: &crate::mapping::aggregate::Aggregate,
    report: &mut RunReport,
    change: AggregateChange<'_>,
) -> Result<(Option<(i64, u64, u64)>, Vec<BatchRow>), PipelineError> {
    let feed = &cx.feed.name;
    let mut inputs = Vec::new();
    let mut removed: Vec<String> = change.retracts.to_vec();
    for r in change.rows.iter().filter(|r| r.op == "upsert") {
        let values: Vec<serde_json::Value> = serde_json::from_str(&r.row).unwrap_or_default();
        match crate::aggregate::period_of(agg, &values) {
            Some(period) => inputs.push(store::AggregateInput {
                record_id: r.record_id.clone(),
                period,
                person: r.person.clone().unwrap_or_default(),
                row_json: r.row.clone(),
            }),
            // No date, no period: in no table.
            None => removed.push(r.record_id.clone()),
        }
    }
    let periods: Vec<String> =
        timed!(report.store_ns, tx.aggregate_apply(feed, &inputs, &removed))?
            .into_iter()
            .collect();
    drop(inputs);
    let stored = timed!(report.store_ns, tx.aggregate_inputs(feed, &periods))?;
    let published = timed!(report.store_ns, tx.published_cells(feed, &periods))?;
    let before: HashMap<&str, &str> = published
        .iter()
        .map(|c| (c.cell_id.as_str(), c.row_hash.as_str()))
        .collect();
    let mut now: HashSet<String> = HashSet::new();
    let mut upsert_rows = Vec::new();
    let mut cells = Vec::new();
    let (mut primary, mut complementary) = (0u64, 0u64);
    for period in &periods {
        let rows: Vec<crate::aggregate::InputRow> = stored
            .get(period)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| crate::aggregate::InputRow {
                record_id: r.record_id.clone(),
                person: r.person.clone(),
                values: serde_json::from_str(&r.row_json).unwrap_or_default(),
            })
            .collect();
        let table = crate::aggregate::table(agg, period, &rows);
        let (p, c) = table.hidden();
        primary += p;
        complementary += c;
        for cell in table.cells {
            let id = crate::identity::cell_id(cx.keys.record, period, &cell.dims);
            let mut values = Vec::with_capacity(2 + cell.dims.len() + cell.measures.len());
            values.push(Value::Text(period.clone()));
            values.extend(cell.dims.into_iter().map(Value::Text));
            values.extend(cell.measures);
            values.push(Value::Bool(cell.suppressed));
            let row = row_json(&values);
            let hash = sha256_hex(row.as_bytes());
            if before.get(id.as_str()) != Some(&hash.as_str()) {
                cells.push(store::PublishedCell {
                    cell_id: id.clone(),
                    period: period.clone(),
                    row_hash: hash,
                });
                upsert_rows.push(BatchRow {
                    record_id: id.clone(),
                    op: "upsert".into(),
                    row,
                    person: None,
                    doc_key: None,
                });
            }
            now.insert(id);
        }
    }
    let mut gone: Vec<String> = published
        .iter()
        .filter(|c| !now.contains(&c.cell_id))
        .map(|c| c.cell_id.clone())
        .collect();
    gone.sort_unstable();
    let mut batch_rows: Vec<BatchRow> = gone
        .iter()
        .map(|id| BatchRow {
            record_id: id.clone(),
            op: "retract".into(),
            row: "[]".into(),
            person: None,
            doc_key: None,
        })
        .collect();
    batch_rows.extend(upsert_rows);
    let staged = if batch_rows.is_empty() {
        None
    } else {
        let seq = timed!(report.store_ns, tx.next_seq(feed))?;
        // The manifest's counts.held: the input rows held, and the cells
        // hidden in the batch's periods, under names that state k.
        let mut held: BTreeMap<String, u64> = change.held.clone();
        held.insert(format!("cells_suppressed_below_k{}", agg.k), primary);
        held.insert(
            format!("cells_suppressed_complementary_k{}", agg.k),
            complementary,
        );
        let held_json = serde_json::to_string(&held).unwrap_or_else(|_| "{}".into());
        let policy_json = chunk_policy(report, change.excluded_before, change.exempt_before);
        let (n_up, n_ret) = (cells.len() as u64, gone.len() as u64);
        timed!(
            report.store_ns,
            tx.insert_batch(
                &NewBatch {
                    feed: feed.clone(),
                    seq,
                    window_from: (change.window.0 > 0).then_some(change.window.0),
                    window_to: change.window.1,
                    upserts: n_up as i64,
                    retracts: n_ret as i64,
                    held: held_json,
                    policy: policy_json,
                },
                &batch_rows,
            )
        )?;
        timed!(report.store_ns, tx.publish_cells(feed, &cells, &gone))?;
        Some((seq, n_up, n_ret))
    };
    // The input rows the feed now holds (the row index's "live" rows).
    timed!(
        report.store_ns,
        tx.apply_rows(
            feed,
            staged.map(|(s, _, _)| s).unwrap_or(0),
            change.upserts,
            change.retracts
        )
    )?;
    Ok((staged, batch_rows))
}

/// Keeps a run's resident memory at one chunk's, however many chunks the
/// corpus fills (DESIGN §4): at every chunk boundary the memory the chunk
/// freed goes back to the operating system instead of staying with the
/// allocator's per-thread heaps (the store's connection threads included),
/// where each chunk left the resident size higher. The binary allocates
/// with mimalloc (see `main.rs`; glibc's malloc and free were a fifth of a
/// feed run's CPU time); in a process that does not, this frees nothing.
mod allocator {
    pub(super) fn release_freed_memory() {
        // SAFETY: mi_collect takes a flag and only walks mimalloc's own
        // heaps, under its own synchronisation; any thread may call it.
        #[allow(unsafe_code)] // mi_collect has no safe wrapper; see SAFETY.
        unsafe {
            libmimalloc_sys::mi_collect(true);
        }
    }
}

#[cfg(test)]
mod policy_props;
