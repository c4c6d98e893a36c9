//! The follow-up batch: a second set of documents written into an existing
//! corpus folder, for incremental tests. Five cases, each for a different
//! person chosen by the seed:
//! - `replacement`: a new version of an in-cohort lab document with one value
//!   changed and its last entry dropped (upsert of the changed ordinal,
//!   retract of the dropped one);
//! - `withdrawal`: a withdrawal (register code 11) of an in-cohort document
//!   (retracts of its rows; more if it was the person's only evidence);
//! - `invalidation`: an invalidation of a delivered A10 dispensing, preferably
//!   of a person whose only cohort evidence it is (they leave the cohort: all
//!   their rows are retracted);
//! - `correction`: a correction of an A10 dispensing with another package
//!   (upsert);
//! - `late_cohort_entry`: a new E11.9 diagnosis for a person outside the
//!   cohort who has earlier in-scope lab results (upserts of the diagnosis and
//!   of every earlier in-scope row).
//!
//! The expected upserts and retracts are the difference between the truth
//! before and after, both computed from the plan; a set that got a new
//! current version has all its rows upserted (a superseding version re-sends
//! the entries it has).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::plan::{self, Doc, DocCode, Entry, ObsKind, PatientId, PcType, Plan};
use super::rng::Rng;
use super::truth::{self, Truth};

/// A row named by its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRef {
    pub hetu: String,
    pub set_id: String,
    pub ordinal: u32,
    /// The entry's effective time, so a test can apply its look-back.
    pub effective: String,
}

/// One follow-up case as carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// `replacement`, `withdrawal`, `invalidation`, `correction`,
    /// `late_cohort_entry`.
    pub kind: String,
    pub hetu: String,
    /// The set the new document belongs to (for an invalidation: the voided
    /// dispensing's set).
    pub set_id: String,
    /// The new document's id.
    pub document_id: String,
}

/// What the feed must do after the follow-up batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowupTruth {
    pub format: u32,
    pub seed: u64,
    pub cases: Vec<Case>,
    /// Documents written by the follow-up.
    pub documents: u64,
    /// Rows the feed must (re)send, in truth order.
    pub upserts: Vec<RowRef>,
    /// Rows the feed must retract (delivered before, gone now).
    pub retracts: Vec<RowRef>,
    /// The full expected truth after the follow-up.
    pub truth: Truth,
}

/// The anchor's eve: follow-ups happen just before the corpus's "now".
fn followup_time(rng: &mut Rng) -> NaiveDateTime {
    (plan::anchor() - Duration::days(1))
        .and_hms_opt(8, 0, 0)
        .expect("valid time")
        + Duration::minutes(rng.range(0, 600))
}

struct Builder {
    next: u64,
}

impl Builder {
    fn id(&mut self, org_number: &str, at: NaiveDateTime) -> (u64, String) {
        use chrono::Datelike;
        let n = self.next;
        self.next += 1;
        (n, format!("1.2.246.10.{org_number}.93.{}.{n}", at.year()))
    }

    fn version_of(&mut self, parent: &Doc, code: DocCode, at: NaiveDateTime) -> Doc {
        let org = parent.org.map_or("2462460", |i| plan::ORGS[i].number);
        let (_, id) = self.id(org, at);
        Doc {
            id,
            version: parent.version + 1,
            replaces: Some(parent.as_ref()),
            appends: None,
            code,
            effective: at,
            packaging: plan::Packaging::ArchiveReplacement,
            batch: 1,
            ..parent.clone()
        }
    }

    fn new_doc(&mut self, org: usize, code: DocCode, view: &'static str, at: NaiveDateTime) -> Doc {
        use chrono::Datelike;
        let number = plan::ORGS[org].number;
        let (n, id) = self.id(number, at);
        Doc {
            org: Some(org),
            set_id: id.clone(),
            id,
            version: 1,
            replaces: None,
            appends: None,
            code,
            view,
            effective: at,
            service_event: Some(format!("1.2.246.10.{number}.14011.{}.{n}", at.year())),
            patient: PatientId::Hetu,
            prefixed_header: n % 2 == 0,
            sensitive: false,
            municipality: None,
            packaging: plan::Packaging::Bare,
            folding: plan::Folding::Unindented,
            entries: Vec::new(),
            prohibition: None,
            batch: 1,
        }
    }
}

fn is_in_scope_lab(e: &Entry) -> bool {
    matches!(e, Entry::Observation { kind: ObsKind::Lab, system, code, unit: Some(_), .. }
        if truth::canonical_system(system) == crate::codes::LAB_FI && truth::LAB_CODES.contains(code))
}

fn is_a10_dispensing(d: &Doc) -> bool {
    matches!(
        d.code,
        DocCode::Prescription(PcType::Dispensing | PcType::Correction)
    ) && d
        .entries
        .iter()
        .any(|e| matches!(e, Entry::Medication { atc, .. } if atc.starts_with("A10")))
}

/// The plan with the follow-up documents added (batch 1), and the cases.
pub fn followup_plan(base: &Plan, seed: u64) -> (Plan, Vec<Case>) {
    let before = truth::compute(base);
    let mut plan = base.clone();
    let mut rng = Rng::new(seed, u64::MAX);
    let mut b = Builder {
        next: plan.next_number,
    };
    let n = plan.persons.len();
    let start = if n == 0 {
        0
    } else {
        rng.below(n as u64) as usize
    };
    let order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
    let mut used: HashSet<usize> = HashSet::new();
    let mut cases = Vec::new();

    // Current, counting documents per person (hetu, latest, not withdrawn,
    // not invalidated), from the truth's own rules.
    let counting = truth::counting_documents(base);
    let rows_by_set: HashSet<&str> = before
        .persons
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| r.set_id.as_str()))
        .collect();
    let doc_counts = |d: &Doc| counting.contains(d.id.as_str());

    // (a) replacement of an in-cohort lab document with rows.
    let pick = order.iter().copied().find_map(|i| {
        if used.contains(&i) || !before.persons[i].in_cohort {
            return None;
        }
        let p = &plan.persons[i];
        // The last entry is an in-scope row (its retract is part of the case)
        // and another in-scope entry gets the changed value.
        let d = p.docs.iter().position(|d| {
            doc_counts(d)
                && d.view == "LAB"
                && d.entries.len() >= 2
                && d.entries.last().is_some_and(is_in_scope_lab)
                && d.entries[..d.entries.len() - 1].iter().any(is_in_scope_lab)
        })?;
        Some((i, d))
    });
    if let Some((i, di)) = pick {
        used.insert(i);
        let at = followup_time(&mut rng);
        let parent = plan.persons[i].docs[di].clone();
        let mut d = b.version_of(&parent, parent.code, at);
        d.entries.pop();
        if let Some(e) = d.entries.iter_mut().find(|e| is_in_scope_lab(e)) {
            plan::change_value(e, &mut rng);
        }
        push_case(&mut plan, &mut cases, i, "replacement", d);
    }

    // (b) withdrawal of an in-cohort document with rows.
    let pick = order.iter().copied().find_map(|i| {
        if used.contains(&i) || !before.persons[i].in_cohort {
            return None;
        }
        let p = &plan.persons[i];
        let d = p.docs.iter().position(|d| {
            doc_counts(d)
                && matches!(d.code, DocCode::Register(_))
                && (d.view == "LAB" || d.view == "FYS")
                && rows_by_set.contains(d.set_id.as_str())
        })?;
        Some((i, d))
    });
    if let Some((i, di)) = pick {
        used.insert(i);
        let at = followup_time(&mut rng);
        let parent = plan.persons[i].docs[di].clone();
        let mut d = b.version_of(&parent, DocCode::Register("11"), at);
        d.entries.clear();
        push_case(&mut plan, &mut cases, i, "withdrawal", d);
    }

    // (c) invalidation of a delivered A10 dispensing: preferably the only
    // evidence of a person in the cohort by dispensing.
    let find_dispensing = |i: usize, plan: &Plan| {
        plan.persons[i]
            .docs
            .iter()
            .position(|d| doc_counts(d) && is_a10_dispensing(d))
    };
    let pick = order
        .iter()
        .copied()
        .filter(|i| {
            !used.contains(i) && before.persons[*i].cohort_by.as_deref() == Some("dispensing")
        })
        .find_map(|i| Some((i, find_dispensing(i, &plan)?)))
        .or_else(|| {
            order
                .iter()
                .copied()
                .filter(|i| !used.contains(i) && before.persons[*i].in_cohort)
                .find_map(|i| Some((i, find_dispensing(i, &plan)?)))
        });
    if let Some((i, di)) = pick {
        used.insert(i);
        let at = followup_time(&mut rng);
        let target = plan.persons[i].docs[di].clone();
        let org = target.org.unwrap_or(0);
        let mut d = b.new_doc(org, DocCode::Prescription(PcType::Invalidation), "1", at);
        d.appends = Some(target.as_ref());
        d.entries = target
            .entries
            .iter()
            .map(|e| match e {
                Entry::Medication { atc, at, .. } => Entry::Medication {
                    atc,
                    package: None,
                    at: *at,
                },
                other => other.clone(),
            })
            .collect();
        let set = target.set_id.clone();
        let hetu = plan.persons[i].hetu.clone();
        cases.push(Case {
            kind: "invalidation".to_owned(),
            hetu,
            set_id: set,
            document_id: d.id.clone(),
        });
        plan.persons[i].docs.push(d);
    }

    // (d) correction of an A10 dispensing.
    let pick = order
        .iter()
        .copied()
        .filter(|i| !used.contains(i) && before.persons[*i].in_cohort)
        .find_map(|i| Some((i, find_dispensing(i, &plan)?)));
    if let Some((i, di)) = pick {
        used.insert(i);
        let at = followup_time(&mut rng);
        let parent = plan.persons[i].docs[di].clone();
        let mut d = b.version_of(&parent, DocCode::Prescription(PcType::Correction), at);
        for e in &mut d.entries {
            plan::change_value(e, &mut rng);
        }
        push_case(&mut plan, &mut cases, i, "correction", d);
    }

    // (e) late cohort entry.
    let pick = order.iter().copied().find(|&i| {
        !used.contains(&i)
            && !before.persons[i].in_cohort
            && plan.persons[i]
                .docs
                .iter()
                .any(|d| doc_counts(d) && d.entries.iter().any(is_in_scope_lab))
    });
    if let Some(i) = pick {
        used.insert(i);
        let at = followup_time(&mut rng);
        let org = rng.below(6) as usize;
        let code = DocCode::Register(plan::ORGS[org].register_code());
        let mut d = b.new_doc(org, code, "166", at);
        d.entries = vec![Entry::Diagnosis {
            system: crate::codes::ICD10_FI,
            code: "E11.9",
            negated: false,
            at,
        }];
        push_case(&mut plan, &mut cases, i, "late_cohort_entry", d);
    }

    plan.next_number = b.next;
    (plan, cases)
}

fn push_case(plan: &mut Plan, cases: &mut Vec<Case>, i: usize, kind: &str, d: Doc) {
    cases.push(Case {
        kind: kind.to_owned(),
        hetu: plan.persons[i].hetu.clone(),
        set_id: d.set_id.clone(),
        document_id: d.id.clone(),
    });
    plan.persons[i].docs.push(d);
}

/// The follow-up truth for `base` and the plan after it, without writing.
pub fn followup_truth(base: &Plan, after: &Plan, cases: Vec<Case>, seed: u64) -> FollowupTruth {
    let before = truth::compute(base);
    let truth = truth::compute(after);
    let touched: HashSet<&str> = after
        .documents()
        .filter(|(_, d)| d.batch == 1 && d.version > 1)
        .map(|(_, d)| d.set_id.as_str())
        .collect();
    let old: HashMap<(&str, u32), &truth::Row> = before
        .persons
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| ((r.set_id.as_str(), r.ordinal), r)))
        .collect();
    let new: HashSet<(&str, u32)> = truth
        .persons
        .iter()
        .flat_map(|p| p.rows.iter().map(|r| (r.set_id.as_str(), r.ordinal)))
        .collect();
    let mut upserts = Vec::new();
    for p in &truth.persons {
        for r in &p.rows {
            let key = (r.set_id.as_str(), r.ordinal);
            if touched.contains(r.set_id.as_str()) || old.get(&key).is_none_or(|o| *o != r) {
                upserts.push(RowRef {
                    hetu: p.hetu.clone(),
                    set_id: r.set_id.clone(),
                    ordinal: r.ordinal,
                    effective: r.effective.clone(),
                });
            }
        }
    }
    let mut retracts = Vec::new();
    for p in &before.persons {
        for r in &p.rows {
            if !new.contains(&(r.set_id.as_str(), r.ordinal)) {
                retracts.push(RowRef {
                    hetu: p.hetu.clone(),
                    set_id: r.set_id.clone(),
                    ordinal: r.ordinal,
                    effective: r.effective.clone(),
                });
            }
        }
    }
    let documents = after.documents().filter(|(_, d)| d.batch == 1).count() as u64;
    FollowupTruth {
        format: truth::FORMAT,
        seed,
        cases,
        documents,
        upserts,
        retracts,
        truth,
    }
}

/// Writes the follow-up batch for `base` into the corpus folder `out` (the
/// one [`super::write_corpus`] wrote) and returns what the feed must do.
pub fn write_followups(base: &Plan, out: &Path, seed: u64) -> io::Result<FollowupTruth> {
    let (after, cases) = followup_plan(base, seed);
    super::write_batch(&after, out, 1)?;
    Ok(followup_truth(base, &after, cases, seed))
}
