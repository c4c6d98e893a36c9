//! The truth file: what the diabetes register feed must contain for a
//! generated corpus, computed from the generator's own plan of each person.
//! It never runs the project's decoder, code table or mappings: a decoder and
//! a feed that agree with it are not merely agreeing with themselves.
//!
//! # Rules (the feed's, applied to the plan)
//! - Only documents whose patient id is a hetu (root `1.2.246.21`) count;
//!   temporary-id documents never count.
//! - Only the current version of each set (highest `versionNumber`) counts; a
//!   set whose current version is a withdrawal (register code 11) counts for
//!   nothing; a dispensing set named (by any version id) by an invalidation
//!   (Prescription Centre type 11) counts for nothing.
//! - Cohort (whole history, no look-back): a non-negated ICD-10 diagnosis
//!   whose reason code (before `+`, `&`, `#`) starts with E10–E14 or O24, or
//!   ICPC-2 T89/T90; or an A10 dispensing (type 10) or dispensing correction
//!   (type 12). Prescriptions never count.
//! - Rows for cohort members (current versions, non-negated): cohort
//!   diagnoses; lab results with national codes 6128, 1560, 4599, 4515, 4516,
//!   4568, 4600, 6354, 4511, 1468 (laboratory-local codes never);
//!   measurements 8480-6, 8462-4, 29463-7, 8302-2, 39156-5; A10 dispensings
//!   and corrections; procedures CKC10. A numeric result without a unit is
//!   *held* (reason `missing_unit`) instead. HbA1c in `%` converts to
//!   `round_half_away_from_zero((pct − 2.15) × 10.929)` mmol/mol.
//!
//! # Format (JSON, `format: 1`)
//! ```text
//! { "format": 1, "seed": S, "patients": N, "anchor": "2026-11-01",
//!   "lookback_years": 10,
//!   "names": [every given and family name used, sorted],
//!   "controllers": [{"oid", "name", "kind"}],   // kind: wellbeing_county |
//!                                                // private | occupational_health | kela
//!   "documents": n, "files": n,                 // document versions; files (one each)
//!   "temporary_id_documents": n, "prohibition_documents": n,
//!   "cohort_size": n,
//!   "persons": [{                               // every hetu person, in plan order
//!     "hetu", "sex": "male"|"female", "birth_date": "YYYY-MM-DD",
//!     "in_cohort": bool, "cohort_by": "diagnosis"|"dispensing"|null,
//!     "rows": [{                                // only for cohort members
//!       "set_id", "ordinal",                    // 1-based <entry> position in the
//!                                               // current version
//!       "document_id",                          // that current version's id
//!       "kind": "diagnosis"|"lab_result"|"measurement"|"medication"|"procedure",
//!       "system",                               // canonical OID (no version suffix)
//!       "code",                                 // diagnosis: the reason code
//!       "code_raw",                             // diagnosis code as written, if decorated
//!       "value", "unit",                        // numbers; HbA1c always mmol/mol
//!       "value_raw", "unit_raw",                // as written (always, for a value)
//!       "effective": "YYYYMMDDhhmmss",          // the entry's effectiveTime
//!       "controller",                           // custodian OID
//!       "event": "dispensing"|"dispensing_correction"|null,
//!       "package": VNR|null }],
//!     "held": [{"set_id", "ordinal", "document_id", "reason": "missing_unit",
//!               "kind", "system", "code", "value_raw", "effective"}] }] }
//! ```
//! The look-back is not applied here: every row carries its `effective` time
//! so a test applies the look-back at its own run time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::codes;

use super::cda::ts;
use super::plan::{
    self, Doc, DocCode, Entry, ICD10_WRITTEN, KELA_CONTROLLER, LAB_WRITTEN, ORGS, ObsKind,
    PatientId, PcType, Plan, Sex,
};

pub const FORMAT: u32 = 1;
pub const LOOKBACK_YEARS: u32 = 10;

pub const LAB_CODES: &[&str] = &[
    "6128", "1560", "4599", "4515", "4516", "4568", "4600", "6354", "4511", "1468",
];
pub const HBA1C_CODES: &[&str] = &["6128", "1560"];
pub const MEASUREMENT_CODES: &[&str] = &["8480-6", "8462-4", "29463-7", "8302-2", "39156-5"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub format: u32,
    pub seed: u64,
    pub patients: u32,
    pub anchor: String,
    pub lookback_years: u32,
    pub names: Vec<String>,
    pub controllers: Vec<Controller>,
    pub documents: u64,
    pub files: u64,
    pub temporary_id_documents: u64,
    pub prohibition_documents: u64,
    pub cohort_size: u64,
    pub persons: Vec<PersonTruth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    pub oid: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonTruth {
    pub hetu: String,
    pub sex: Sex,
    pub birth_date: String,
    pub in_cohort: bool,
    pub cohort_by: Option<String>,
    pub rows: Vec<Row>,
    pub held: Vec<Held>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub set_id: String,
    pub ordinal: u32,
    pub document_id: String,
    pub kind: String,
    pub system: String,
    pub code: String,
    pub code_raw: Option<String>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub value_raw: Option<String>,
    pub unit_raw: Option<String>,
    pub effective: String,
    pub controller: String,
    pub event: Option<String>,
    pub package: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub set_id: String,
    pub ordinal: u32,
    pub document_id: String,
    pub reason: String,
    pub kind: String,
    pub system: String,
    pub code: String,
    pub value_raw: String,
    pub effective: String,
}

/// The canonical system for a system as the generator writes it (its own
/// list of versioned forms, not the project's code table).
pub fn canonical_system(written: &str) -> &str {
    if written == ICD10_WRITTEN[1] {
        ICD10_WRITTEN[0]
    } else if written == LAB_WRITTEN[1] {
        LAB_WRITTEN[0]
    } else {
        written
    }
}

/// The reason code of a (possibly decorated) diagnosis code.
pub fn reason_code(code: &str) -> &str {
    code.split(['+', '&', '#']).next().unwrap_or(code)
}

/// Whether a diagnosis (system as written, code as written) is cohort evidence.
pub fn is_cohort_diagnosis(system: &str, code: &str) -> bool {
    let reason = reason_code(code);
    match canonical_system(system) {
        codes::ICD10_FI => ["E10", "E11", "E12", "E13", "E14", "O24"]
            .iter()
            .any(|p| reason.starts_with(p)),
        codes::ICPC2 => reason == "T89" || reason == "T90",
        _ => false,
    }
}

/// `(pct − 2.15) × 10.929` rounded half away from zero, in exact decimal
/// arithmetic on the value as written.
pub fn hba1c_percent_to_mmol_mol(written: &str) -> Option<i64> {
    let (int, frac) = written.split_once('.').unwrap_or((written, ""));
    let neg = int.starts_with('-');
    let digits = format!("{}{frac}", int.trim_start_matches('-'));
    let mut m: i128 = digits.parse().ok()?;
    if neg {
        m = -m;
    }
    let scale = 10i128.pow(frac.len() as u32);
    // (m / scale − 215/100) × 10929/1000 = (100 m − 215 scale) × 10929 / (100 000 scale)
    let num = (100 * m - 215 * scale) * 10_929;
    let den = 100_000 * scale;
    let q = num / den;
    let r = num % den;
    let rounded = if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    };
    i64::try_from(rounded).ok()
}

fn kind_name(k: plan::OrgKind) -> &'static str {
    match k {
        plan::OrgKind::WellbeingCounty => "wellbeing_county",
        plan::OrgKind::Private => "private",
        plan::OrgKind::OccupationalHealth => "occupational_health",
    }
}

/// The current versions and what voids what, over the whole plan.
struct Versions<'a> {
    current: HashMap<&'a str, &'a Doc>,
    invalidated: HashSet<&'a str>,
}

impl<'a> Versions<'a> {
    fn of(plan: &'a Plan) -> Versions<'a> {
        let mut current: HashMap<&str, &Doc> = HashMap::new();
        let mut set_of: HashMap<&str, &str> = HashMap::new();
        for (_, d) in plan.documents() {
            set_of.insert(&d.id, &d.set_id);
            let slot = current.entry(&d.set_id).or_insert(d);
            if d.version > slot.version {
                *slot = d;
            }
        }
        let mut invalidated = HashSet::new();
        for (_, d) in plan.documents() {
            let counts = d.patient == PatientId::Hetu
                && d.code == DocCode::Prescription(PcType::Invalidation)
                && current.get(d.set_id.as_str()).is_some_and(|c| c.id == d.id);
            if let (true, Some(target)) = (counts, &d.appends)
                && let Some(set) = set_of.get(target.id.as_str())
            {
                invalidated.insert(*set);
            }
        }
        Versions {
            current,
            invalidated,
        }
    }

    /// Whether `d` counts: current, hetu, not withdrawn, not invalidated.
    fn counts(&self, d: &Doc) -> bool {
        d.patient == PatientId::Hetu
            && self
                .current
                .get(d.set_id.as_str())
                .is_some_and(|c| c.id == d.id)
            && !d.is_withdrawal()
            && !self.invalidated.contains(d.set_id.as_str())
    }
}

/// The ids of the document versions that count under the rules above.
pub fn counting_documents(plan: &Plan) -> HashSet<&str> {
    let versions = Versions::of(plan);
    plan.documents()
        .filter(|(_, d)| versions.counts(d))
        .map(|(_, d)| d.id.as_str())
        .collect()
}

fn a10_event(d: &Doc, e: &Entry) -> Option<&'static str> {
    match (d.code, e) {
        (DocCode::Prescription(PcType::Dispensing), Entry::Medication { atc, .. })
            if atc.starts_with("A10") =>
        {
            Some("dispensing")
        }
        (DocCode::Prescription(PcType::Correction), Entry::Medication { atc, .. })
            if atc.starts_with("A10") =>
        {
            Some("dispensing_correction")
        }
        _ => None,
    }
}

enum Out {
    Row(Row),
    Held(Held),
}

fn evaluate(d: &Doc, ordinal: u32, e: &Entry) -> Option<Out> {
    let base = |kind: &str, system: &str, code: &str, at| Row {
        set_id: d.set_id.clone(),
        ordinal,
        document_id: d.id.clone(),
        kind: kind.to_owned(),
        system: system.to_owned(),
        code: code.to_owned(),
        code_raw: None,
        value: None,
        unit: None,
        value_raw: None,
        unit_raw: None,
        effective: ts(at),
        controller: d.controller(),
        event: None,
        package: None,
    };
    match e {
        Entry::Diagnosis {
            system,
            code,
            negated: false,
            at,
        } if is_cohort_diagnosis(system, code) => {
            let reason = reason_code(code);
            let mut row = base("diagnosis", canonical_system(system), reason, *at);
            if reason != *code {
                row.code_raw = Some((*code).to_owned());
            }
            Some(Out::Row(row))
        }
        Entry::Observation {
            kind,
            system,
            code,
            value,
            unit,
            at,
        } => {
            let system = canonical_system(system);
            let (kind, in_scope) = match kind {
                ObsKind::Lab => (
                    "lab_result",
                    system == codes::LAB_FI && LAB_CODES.contains(code),
                ),
                ObsKind::Measurement => (
                    "measurement",
                    system == codes::LOINC && MEASUREMENT_CODES.contains(code),
                ),
            };
            if !in_scope {
                return None;
            }
            let Some(unit) = unit else {
                return Some(Out::Held(Held {
                    set_id: d.set_id.clone(),
                    ordinal,
                    document_id: d.id.clone(),
                    reason: "missing_unit".to_owned(),
                    kind: kind.to_owned(),
                    system: system.to_owned(),
                    code: (*code).to_owned(),
                    value_raw: value.clone(),
                    effective: ts(*at),
                }));
            };
            let mut row = base(kind, system, code, *at);
            if HBA1C_CODES.contains(code) && *unit == "%" {
                row.value = hba1c_percent_to_mmol_mol(value).map(|v| v as f64);
                row.unit = Some("mmol/mol".to_owned());
                row.value_raw = Some(value.clone());
                row.unit_raw = Some("%".to_owned());
            } else {
                row.value = value.parse::<f64>().ok();
                row.unit = Some((*unit).to_owned());
                row.value_raw = Some(value.clone());
                row.unit_raw = Some((*unit).to_owned());
            }
            Some(Out::Row(row))
        }
        Entry::Medication { atc, package, at } => {
            let event = a10_event(d, e)?;
            let mut row = base("medication", codes::ATC, atc, *at);
            row.event = Some(event.to_owned());
            row.package = package.clone();
            Some(Out::Row(row))
        }
        Entry::Procedure { code, at } if *code == plan::RETINOPATHY_SCREENING => {
            Some(Out::Row(base("procedure", codes::PROCEDURES_FI, code, *at)))
        }
        _ => None,
    }
}

/// Computes the truth for every document in the plan (both batches).
pub fn compute(plan: &Plan) -> Truth {
    let versions = Versions::of(plan);
    let mut names = BTreeSet::new();
    let mut controllers: BTreeMap<String, Controller> = BTreeMap::new();
    let (mut documents, mut temporary, mut prohibitions) = (0u64, 0u64, 0u64);
    let mut persons = Vec::with_capacity(plan.persons.len());
    for p in &plan.persons {
        names.insert(p.given.to_owned());
        names.insert(p.family.to_owned());
        let mut by_diagnosis = false;
        let mut by_dispensing = false;
        for d in &p.docs {
            documents += 1;
            if d.patient != PatientId::Hetu {
                temporary += 1;
            }
            if d.prohibition.is_some() {
                prohibitions += 1;
            }
            let oid = d.controller();
            controllers
                .entry(oid.clone())
                .or_insert_with(|| match d.org {
                    Some(i) => Controller {
                        oid,
                        name: ORGS[i].name.to_owned(),
                        kind: kind_name(ORGS[i].kind).to_owned(),
                    },
                    None => Controller {
                        oid: KELA_CONTROLLER.to_owned(),
                        name: "Kansaneläkelaitos".to_owned(),
                        kind: "kela".to_owned(),
                    },
                });
            if !versions.counts(d) {
                continue;
            }
            for e in &d.entries {
                match e {
                    Entry::Diagnosis {
                        system,
                        code,
                        negated: false,
                        ..
                    } if is_cohort_diagnosis(system, code) => by_diagnosis = true,
                    Entry::Medication { .. } if a10_event(d, e).is_some() => by_dispensing = true,
                    _ => {}
                }
            }
        }
        let in_cohort = by_diagnosis || by_dispensing;
        let mut rows = Vec::new();
        let mut held = Vec::new();
        if in_cohort {
            for d in p.docs.iter().filter(|d| versions.counts(d)) {
                for (i, e) in d.entries.iter().enumerate() {
                    match evaluate(d, i as u32 + 1, e) {
                        Some(Out::Row(r)) => rows.push(r),
                        Some(Out::Held(h)) => held.push(h),
                        None => {}
                    }
                }
            }
        }
        persons.push(PersonTruth {
            hetu: p.hetu.clone(),
            sex: p.sex,
            birth_date: p.birth.format("%Y-%m-%d").to_string(),
            in_cohort,
            cohort_by: if by_diagnosis {
                Some("diagnosis".to_owned())
            } else if by_dispensing {
                Some("dispensing".to_owned())
            } else {
                None
            },
            rows,
            held,
        });
    }
    Truth {
        format: FORMAT,
        seed: plan.seed,
        patients: plan.patients,
        anchor: plan::ANCHOR.to_owned(),
        lookback_years: LOOKBACK_YEARS,
        names: names.into_iter().collect(),
        controllers: controllers.into_values().collect(),
        documents,
        files: documents,
        temporary_id_documents: temporary,
        prohibition_documents: prohibitions,
        cohort_size: persons.iter().filter(|p| p.in_cohort).count() as u64,
        persons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hba1c_conversion_rounds_half_away_from_zero() {
        assert_eq!(hba1c_percent_to_mmol_mol("7.5"), Some(58)); // 58.47
        assert_eq!(hba1c_percent_to_mmol_mol("6.5"), Some(48)); // 47.54
        assert_eq!(hba1c_percent_to_mmol_mol("2.15"), Some(0));
        // (2.2 − 2.15) × 10.929 = 0.54645 → 1
        assert_eq!(hba1c_percent_to_mmol_mol("2.2"), Some(1));
        // An exact half: pct = 2.15 + 0.5/10.929 is not a short decimal, so
        // check the rule on the integer path: 10.929 × 0.5 = 5.4645 → 5.
        assert_eq!(hba1c_percent_to_mmol_mol("2.65"), Some(5));
        assert_eq!(hba1c_percent_to_mmol_mol("1.15"), Some(-11)); // −10.929
    }

    #[test]
    fn reason_codes_split_before_anything_is_stripped() {
        assert_eq!(reason_code("E11.3+H36.0"), "E11.3");
        assert_eq!(reason_code("E11.9&Z99.9"), "E11.9");
        assert!(is_cohort_diagnosis("1.2.246.537.6.1.1999", "E10.4+G63.2*"));
        assert!(is_cohort_diagnosis(codes::ICPC2, "T90"));
        assert!(!is_cohort_diagnosis(codes::ICD10_FI, "I10"));
        assert!(!is_cohort_diagnosis(codes::ICPC2, "E11.9"));
    }
}
