//! Property test of the evaluation that staging and sealing share (issue
//! 13): random people with documents from several controllers, random
//! objections, restrictions, denials of disclosure and turvakielto arriving
//! before staging, between staging and sealing, or after sealing, for four
//! kinds of feed. Staging is [`plan_person`] on the inputs known at staging;
//! sealing is [`plan_person`] again on the inputs known at sealing, with
//! [`seal_verdict`] over the staged rows — exactly what `stage_chunk` and
//! `recheck_batch` run. The result is compared with [`reference`], a
//! deliberately simple evaluator written here from DOMAIN.md §4 that calls
//! none of the pipeline's or the policy module's code.
//!
//! What is checked, per feed:
//! - staged rows = the reference on the policy state at staging;
//! - delivered rows = the reference on the policy state at sealing, among
//!   the staged rows (sealing only removes: a row the state at sealing would
//!   allow but staging kept back, e.g. when a restriction ended in between,
//!   is released by a later run, not added to a staged batch); when the
//!   policy only tightens between staging and sealing, that is the whole
//!   reference at sealing;
//! - each removed row's rule, the rows sent under an exemption, the removed
//!   rows that stay held, and turvakielto's shielding, as the reference says;
//! - inputs arriving after sealing change nothing.
//!
//! This drives the pure layer (10,000 cases, about a second in a debug
//! build); the store, the SQL that loads a batch's people and the "only
//! people with a policy input are re-planned" shortcut are exercised end to
//! end by `tests/policy_feed.rs` through the real store, not here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;

use super::{Gate, PersonPlan, plan_person, seal_verdict};
use crate::config::{Art6, Channel, Purpose};
use crate::loaded::Config;
use crate::policy::FeedPolicy;
use crate::store::{self, DocRow, PolicyRows};

/// The organisation numbers of three configured counties (the demo's).
const ORGS: [&str; 3] = ["32213086", "32213094", "32213102"];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("time")
}

/// When the batch is built and when it is sealed.
fn t_stage() -> DateTime<Utc> {
    t0()
}
fn t_seal() -> DateTime<Utc> {
    t0() + Duration::minutes(10)
}

fn config() -> &'static Config {
    static CFG: OnceLock<(tempfile::TempDir, Config)> = OnceLock::new();
    &CFG.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tmp");
        let corpus = tmp.path().join("corpus");
        std::fs::create_dir_all(&corpus).expect("corpus");
        let s = crate::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
        let cfg = Config::load(&s.config).expect("config");
        (tmp, cfg)
    })
    .1
}

// ----- the generated world -------------------------------------------------

/// When an input reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    BeforeStaging,
    Between,
    AfterSealing,
}

/// A moment relative to staging and sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    LongBefore,
    JustBeforeStaging,
    Between,
    AfterSealing,
}

impl When {
    fn at(self) -> DateTime<Utc> {
        match self {
            When::LongBefore => t0() - Duration::days(30),
            When::JustBeforeStaging => t0() - Duration::hours(1),
            When::Between => t0() + Duration::minutes(5),
            When::AfterSealing => t0() + Duration::days(1),
        }
    }
}

#[derive(Debug, Clone)]
enum MadeTo {
    Org(usize),
    Findata,
}

#[derive(Debug, Clone)]
enum Input {
    Objection {
        made_to: MadeTo,
        /// `None`: every purpose.
        purpose: Option<Purpose>,
        from: When,
        withdrawn: Option<When>,
    },
    Restriction {
        org: Option<usize>,
        start: When,
        end: Option<When>,
    },
    /// A denial snapshot: the latest one replaces the person's whole set.
    Denials {
        none_valid: bool,
        /// Service events (indexes) whose data may not be disclosed.
        events: Vec<usize>,
        /// Controllers (indexes) all of whose registers may not be disclosed.
        orgs: Vec<usize>,
    },
    Turvakielto {
        since: When,
    },
}

#[derive(Debug, Clone)]
struct Doc {
    /// 0..3: a configured county; 3: an organisation not in the table.
    org: usize,
    event: usize,
    evidence: bool,
    rows: usize,
    recent: bool,
    /// The mapping holds the first row back (e.g. a value without a unit).
    first_row_held: bool,
}

#[derive(Debug, Clone, Copy)]
enum FeedKind {
    /// 6.1.c with a statute (the THL register).
    Statutory,
    /// 6.1.e through Findata (a research permit).
    Findata,
    /// 6.1.e, direct (e.g. a county's statistics).
    Direct,
    /// 6.1.e through Findata with a documented derogation.
    Derogation,
}

#[derive(Debug, Clone)]
struct FeedSpec {
    kind: FeedKind,
    purpose: Purpose,
    discloses: bool,
    recipient: Option<usize>,
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        Just(When::LongBefore),
        Just(When::JustBeforeStaging),
        Just(When::Between),
        Just(When::AfterSealing),
    ]
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop_oneof![Just(Purpose::Statistics), Just(Purpose::ScientificResearch),]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (
            prop_oneof![(0..4usize).prop_map(MadeTo::Org), Just(MadeTo::Findata)],
            proptest::option::of(purpose()),
            when(),
            proptest::option::weighted(0.25, when()),
        )
            .prop_map(|(made_to, purpose, from, withdrawn)| Input::Objection {
                made_to,
                purpose,
                from,
                withdrawn,
            }),
        2 => (
            proptest::option::of(0..4usize),
            when(),
            proptest::option::weighted(0.5, when()),
        )
            .prop_map(|(org, start, end)| Input::Restriction { org, start, end }),
        2 => (
            proptest::bool::weighted(0.2),
            proptest::collection::vec(0..3usize, 0..3),
            proptest::collection::vec(0..4usize, 0..3),
        )
            .prop_map(|(none_valid, events, orgs)| Input::Denials {
                none_valid,
                events,
                orgs,
            }),
        1 => when().prop_map(|since| Input::Turvakielto { since }),
    ]
}

fn arrival() -> impl Strategy<Value = Arrival> {
    prop_oneof![
        Just(Arrival::BeforeStaging),
        Just(Arrival::Between),
        Just(Arrival::AfterSealing),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        0..4usize,
        0..3usize,
        proptest::bool::weighted(0.4),
        0..4usize,
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(org, event, evidence, rows, recent, first_row_held)| Doc {
            org,
            event,
            evidence,
            rows,
            recent,
            first_row_held,
        })
}

fn feed() -> impl Strategy<Value = FeedSpec> {
    (
        prop_oneof![
            Just(FeedKind::Statutory),
            Just(FeedKind::Findata),
            Just(FeedKind::Direct),
            Just(FeedKind::Derogation),
        ],
        purpose(),
        any::<bool>(),
        proptest::option::weighted(0.3, 0..4usize),
    )
        .prop_map(|(kind, purpose, discloses, recipient)| FeedSpec {
            kind,
            purpose,
            discloses,
            recipient,
        })
}

fn org_id(i: usize) -> String {
    match ORGS.get(i) {
        Some(n) => format!("org-{n}"),
        None => "org-nowhere".into(),
    }
}

/// A register OID of the organisation (on documents); index 3 is not in
/// the controllers table.
fn register_oid(i: usize) -> String {
    format!(
        "1.2.246.10.{}.19.0",
        ORGS.get(i).copied().unwrap_or("99999999")
    )
}

fn event_oid(e: usize) -> String {
    format!("1.2.246.10.32213086.14011.2026.{e}")
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ----- the pipeline's side ---------------------------------------------------

fn feed_policy(f: &FeedSpec) -> FeedPolicy {
    let (art6, statute, derogation, channel) = match f.kind {
        FeedKind::Statutory => (
            Art6::LegalObligation,
            Some("THL Act 668/2008 §5".to_owned()),
            None,
            Channel::Direct,
        ),
        FeedKind::Findata => (Art6::PublicTask, None, None, Channel::Findata),
        FeedKind::Direct => (Art6::PublicTask, None, None, Channel::Direct),
        FeedKind::Derogation => (
            Art6::PublicTask,
            None,
            Some("DPIA 2026/17".to_owned()),
            Channel::Findata,
        ),
    };
    FeedPolicy {
        purpose: f.purpose,
        art6,
        statute,
        derogation,
        channel,
        discloses_to_other_controller: f.discloses,
        recipient_controller: f.recipient.filter(|&r| r < ORGS.len()).map(org_id),
    }
}

/// The store's policy rows of the inputs that have arrived by `upto`.
fn policy_rows(inputs: &[(Arrival, Input)], upto: Arrival) -> PolicyRows {
    let mut rows = PolicyRows::default();
    for (n, (arrived, input)) in inputs.iter().enumerate() {
        if *arrived == Arrival::AfterSealing
            || (*arrived == Arrival::Between && upto == Arrival::BeforeStaging)
        {
            continue;
        }
        match input {
            Input::Objection {
                made_to,
                purpose,
                from,
                withdrawn,
            } => rows.objections.push(store::ObjectionRow {
                person: "p".into(),
                made_to: match made_to {
                    MadeTo::Org(i) => org_id(*i),
                    MadeTo::Findata => "findata".into(),
                },
                purposes: match purpose {
                    None => "\"all\"".into(),
                    Some(p) => format!("[\"{}\"]", p.as_str()),
                },
                received_at: None,
                effective_from: rfc(from.at()),
                withdrawn_at: withdrawn.map(|w| rfc(w.at())),
                source: None,
                reference: None,
            }),
            Input::Restriction { org, start, end } => {
                rows.restrictions.push(store::RestrictionRow {
                    person: "p".into(),
                    controller: org.map(org_id),
                    start_at: rfc(start.at()),
                    end_at: end.map(|e| rfc(e.at())),
                    source: None,
                    reference: None,
                })
            }
            Input::Denials {
                none_valid,
                events,
                orgs,
            } => {
                rows.denials = Some(store::DenialSnapshot {
                    person: "p".into(),
                    origin: "import".into(),
                    doc_key: None,
                    effective_at: rfc(t0() - Duration::days(60) + Duration::minutes(n as i64)),
                    none_valid: *none_valid,
                    emergency: None,
                    denials: events
                        .iter()
                        .map(|e| store::DenialRow {
                            service_event: Some(event_oid(*e)),
                            provider: None,
                            all_registers: false,
                            from_at: None,
                            to_at: None,
                        })
                        .chain(orgs.iter().map(|o| store::DenialRow {
                            service_event: None,
                            provider: Some(format!(
                                "1.2.246.10.{}",
                                ORGS.get(*o).copied().unwrap_or("99999999")
                            )),
                            all_registers: true,
                            from_at: None,
                            to_at: None,
                        }))
                        .collect(),
                })
            }
            Input::Turvakielto { since } => rows.flags.push(store::FlagRow {
                person: "p".into(),
                flag: "turvakielto".into(),
                since: rfc(since.at()),
                until: None,
                source: None,
                reference: None,
            }),
        }
    }
    rows
}

struct World {
    docs: Vec<store::PersonDoc>,
    rows: HashMap<i64, Vec<DocRow>>,
}

fn world(docs: &[Doc]) -> World {
    let mut out = World {
        docs: Vec::new(),
        rows: HashMap::new(),
    };
    for (i, d) in docs.iter().enumerate() {
        let key = i as i64 + 1;
        out.docs.push(store::PersonDoc {
            doc_key: key,
            doc_id: format!("doc{key}"),
            set_id: format!("set{key}"),
            version: 1,
            person: "p".into(),
            source: "s".into(),
            path: format!("d{key}.xml"),
            sha256: String::new(),
            withdrawal: false,
            invalidates: None,
            evidence: Some(d.evidence),
            controller: Some(register_oid(d.org)),
            service_event: Some(event_oid(d.event)),
        });
        let date = if d.recent { "2026-05-01" } else { "2010-01-01" };
        out.rows.insert(
            key,
            (0..d.rows)
                .map(|o| DocRow {
                    doc_key: key,
                    ordinal: o as i64,
                    record_id: format!("r{key}.{o}"),
                    row_hash: format!("h{key}.{o}"),
                    event_date: Some(date.into()),
                    held: (o == 0 && d.first_row_held).then(|| "missing_unit".to_owned()),
                })
                .collect(),
        );
    }
    out
}

fn cutoff() -> NaiveDate {
    NaiveDate::from_ymd_opt(2016, 6, 1).expect("date")
}

fn plan(
    w: &World,
    fp: &FeedPolicy,
    rows: &PolicyRows,
    at: DateTime<Utc>,
    live: &HashSet<&str>,
) -> (PersonPlan, bool) {
    let cfg = config();
    let pp = super::person_policy(cfg, rows, at);
    let gate = Gate {
        feed: fp,
        person: &pp,
        at,
        cfg,
        scope: None,
    };
    let docs: Vec<&store::PersonDoc> = w.docs.iter().collect();
    (
        plan_person(&docs, &w.rows, live, cutoff(), false, &gate),
        pp.turvakielto,
    )
}

// ----- the reference evaluator (DOMAIN.md §4) ---------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Deliver { exempt: bool },
    Exclude(&'static str),
    Hold,
}

/// The inputs known at a moment, as plain facts.
struct Known<'a> {
    inputs: Vec<&'a Input>,
}

fn known(inputs: &[(Arrival, Input)], upto: Arrival) -> Known<'_> {
    Known {
        inputs: inputs
            .iter()
            .filter(|(a, _)| match upto {
                Arrival::BeforeStaging => *a == Arrival::BeforeStaging,
                _ => *a != Arrival::AfterSealing,
            })
            .map(|(_, i)| i)
            .collect(),
    }
}

fn in_force(from: When, until: Option<When>, at: DateTime<Utc>) -> bool {
    from.at() <= at && until.is_none_or(|u| at < u.at())
}

/// One record of a document of organisation `org` (index; 3 = not
/// configured) and service event `event`, in feed `f`, at `at`.
fn reference(f: &FeedSpec, k: &Known<'_>, org: usize, event: usize, at: DateTime<Utc>) -> Verdict {
    let configured = org < ORGS.len();
    let findata_channel = matches!(f.kind, FeedKind::Findata | FeedKind::Derogation);
    // Objections in force for this purpose: to the record's controller, to
    // Findata.
    let mut to_controller = false;
    let mut to_findata = false;
    for i in &k.inputs {
        if let Input::Objection {
            made_to,
            purpose,
            from,
            withdrawn,
        } = i
            && in_force(*from, *withdrawn, at)
            && purpose.is_none_or(|p| p == f.purpose)
        {
            match made_to {
                MadeTo::Org(o) => to_controller |= configured && *o == org,
                MadeTo::Findata => to_findata = true,
            }
        }
    }
    let restricted = k.inputs.iter().any(|i| {
        matches!(i, Input::Restriction { org: o, start, end }
            if in_force(*start, *end, at) && o.is_none_or(|o| configured && o == org))
    });
    // The latest denial snapshot is the person's set.
    let snapshot = k.inputs.iter().rev().find_map(|i| match i {
        Input::Denials {
            none_valid,
            events,
            orgs,
        } => Some((none_valid, events, orgs)),
        _ => None,
    });
    let own_controller = configured && f.recipient == Some(org);
    let denied = f.discloses
        && !own_controller
        && snapshot.is_some_and(|(none_valid, events, orgs)| {
            !*none_valid && (events.contains(&event) || (configured && orgs.contains(&org)))
        });
    match f.kind {
        // Legal obligation: objections, restrictions and denials ignored;
        // an objection to the controller or to Findata makes it exempt.
        FeedKind::Statutory => Verdict::Deliver {
            exempt: to_controller || to_findata,
        },
        FeedKind::Derogation => {
            if denied {
                Verdict::Exclude("denial_of_disclosure")
            } else if restricted {
                Verdict::Hold
            } else {
                Verdict::Deliver { exempt: false }
            }
        }
        FeedKind::Findata | FeedKind::Direct => {
            if to_controller {
                Verdict::Exclude("objection_to_controller")
            } else if to_findata && findata_channel {
                Verdict::Exclude("objection_to_findata")
            } else if denied {
                Verdict::Exclude("denial_of_disclosure")
            } else if restricted {
                Verdict::Hold
            } else {
                Verdict::Deliver { exempt: false }
            }
        }
    }
}

/// What the reference delivers: record id → (doc verdict). Excluded and
/// held records are not cohort evidence; a person is in the cohort when a
/// delivered document is evidence; members get their recent rows, less
/// those the mapping holds back.
fn reference_rows(
    f: &FeedSpec,
    docs: &[Doc],
    k: &Known<'_>,
    at: DateTime<Utc>,
) -> (BTreeMap<String, Verdict>, Vec<Verdict>, bool) {
    let verdicts: Vec<Verdict> = docs
        .iter()
        .map(|d| reference(f, k, d.org, d.event, at))
        .collect();
    let member = docs
        .iter()
        .zip(&verdicts)
        .any(|(d, v)| d.evidence && matches!(v, Verdict::Deliver { .. }));
    let mut out = BTreeMap::new();
    if member {
        for (i, (d, v)) in docs.iter().zip(&verdicts).enumerate() {
            if !matches!(v, Verdict::Deliver { .. }) || !d.recent {
                continue;
            }
            for o in 0..d.rows {
                if o == 0 && d.first_row_held {
                    continue;
                }
                out.insert(format!("r{}.{o}", i + 1), *v);
            }
        }
    }
    (out, verdicts, member)
}

fn turvakielto(k: &Known<'_>, at: DateTime<Utc>) -> bool {
    k.inputs
        .iter()
        .any(|i| matches!(i, Input::Turvakielto { since } if since.at() <= at))
}

// ----- the property ------------------------------------------------------------

fn check(docs: &[Doc], inputs: &[(Arrival, Input)], f: &FeedSpec) -> Result<(), TestCaseError> {
    let w = world(docs);
    let fp = feed_policy(f);

    // Staging: the inputs that arrived before it.
    let at_staging = policy_rows(inputs, Arrival::BeforeStaging);
    let (staged_plan, _) = plan(&w, &fp, &at_staging, t_stage(), &HashSet::new());
    let staged: BTreeSet<&str> = staged_plan.desired.keys().map(String::as_str).collect();
    let k_stage = known(inputs, Arrival::BeforeStaging);
    let (ref_stage, _, _) = reference_rows(f, docs, &k_stage, t_stage());
    let ref_staged: BTreeSet<&str> = ref_stage.keys().map(String::as_str).collect();
    prop_assert_eq!(&staged, &ref_staged, "staged rows");

    // Sealing: the inputs that arrived before it; the staged rows are live.
    let at_sealing = policy_rows(inputs, Arrival::Between);
    let live: HashSet<&str> = staged.iter().copied().collect();
    let (seal_plan, shielded) = plan(&w, &fp, &at_sealing, t_seal(), &live);
    let mut upserts: Vec<(&str, i64)> = staged_plan
        .desired
        .iter()
        .map(|(id, (k, _, _))| (id.as_str(), *k))
        .collect();
    upserts.sort_unstable();
    let verdict = seal_verdict(&seal_plan, &upserts);
    let removed: BTreeMap<&str, &str> = verdict
        .removed
        .iter()
        .map(|(id, r)| (id.as_str(), r.as_str()))
        .collect();
    let delivered: BTreeSet<&str> = staged
        .iter()
        .copied()
        .filter(|id| !removed.contains_key(id))
        .collect();

    let k_seal = known(inputs, Arrival::Between);
    let (ref_seal, doc_verdicts, member) = reference_rows(f, docs, &k_seal, t_seal());
    let expected: BTreeSet<&str> = ref_seal
        .keys()
        .map(String::as_str)
        .filter(|id| staged.contains(id))
        .collect();
    prop_assert_eq!(&delivered, &expected, "delivered rows");
    if ref_seal.keys().all(|id| staged.contains(id.as_str())) {
        prop_assert_eq!(
            delivered.len(),
            ref_seal.len(),
            "policy only tightened: all of it"
        );
    }

    // Each removed row's rule, and the held ones.
    let mut held_expected = BTreeSet::new();
    for (id, rule) in &removed {
        let doc: usize = id[1..id.find('.').expect("dot")].parse().expect("key");
        let want = match doc_verdicts[doc - 1] {
            Verdict::Exclude(r) => r,
            Verdict::Hold => {
                held_expected.insert(*id);
                "restriction_active"
            }
            Verdict::Deliver { .. } => {
                prop_assert!(
                    !member,
                    "a row of a member's delivered document was removed"
                );
                "no_usable_cohort_evidence"
            }
        };
        prop_assert_eq!(*rule, want, "rule of {}", id);
    }
    let held: BTreeSet<&str> = verdict.held.iter().map(|(id, _)| id.as_str()).collect();
    prop_assert_eq!(held, held_expected, "held at sealing");

    // Exempt: the delivered rows an objection would have excluded.
    let exempt = delivered
        .iter()
        .filter(|id| matches!(ref_seal.get(**id), Some(Verdict::Deliver { exempt: true })))
        .count() as u64;
    prop_assert_eq!(verdict.exempt, exempt, "exempt rows");
    prop_assert_eq!(shielded, turvakielto(&k_seal, t_seal()), "turvakielto");

    // Inputs after sealing change nothing: the same, without them.
    let before: Vec<(Arrival, Input)> = inputs
        .iter()
        .filter(|(a, _)| *a != Arrival::AfterSealing)
        .cloned()
        .collect();
    let (again, _) = plan(
        &w,
        &fp,
        &policy_rows(&before, Arrival::Between),
        t_seal(),
        &live,
    );
    prop_assert_eq!(seal_verdict(&again, &upserts), verdict, "after sealing");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Delivered rows of every kind of feed = the reference on the policy
    /// state at sealing (among the staged rows); see the module comment.
    #[test]
    fn sealing_delivers_what_the_reference_allows_on_the_state_at_sealing(
        docs in proptest::collection::vec(doc(), 1..6),
        inputs in proptest::collection::vec((arrival(), input()), 0..6),
        feeds in proptest::collection::vec(feed(), 1..4),
    ) {
        for f in &feeds {
            check(&docs, &inputs, f)?;
        }
    }
}
