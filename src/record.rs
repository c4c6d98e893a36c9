//! The canonical record model (DESIGN.md §2): what every stage after `decode`
//! speaks. A [`DecodedDocument`] is one CDA document version: its header
//! ([`Document`]) and the clinical [`Record`]s of its structured body.
//!
//! These types carry identifiable data (the patient's hetu sits in
//! [`PatientId`]). Their `Debug` output therefore never shows a person
//! identifier; `Serialize` does, and is only used by the library API, golden
//! tests and the store, never by logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The OID under which a patient id is a henkilötunnus.
pub const HETU_ROOT: &str = "1.2.246.21";

/// How the document travelled to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packaging {
    /// A bare CDA R2 `ClinicalDocument`.
    #[serde(rename = "cda")]
    Cda,
    /// Inside an HL7 V3 archive message "archive a new document".
    #[serde(rename = "RCMR_IN100002FI01")]
    ArchiveNew,
    /// Inside an HL7 V3 archive message "archive a replacement version".
    #[serde(rename = "RCMR_IN100016FI01")]
    ArchiveReplacement,
}

/// A coded value: a normalised code-system OID and a code, with the OID as
/// written when normalisation changed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Code {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
}

impl Code {
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system == system && self.code == code
    }
}

/// A patient identifier (`recordTarget/patientRole/id`). When `root` is
/// [`HETU_ROOT`], `extension` is a validated hetu.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatientId {
    pub root: String,
    pub extension: String,
}

impl PatientId {
    /// True when the id is a henkilötunnus (as opposed to an organisation's
    /// temporary id, which cannot be linked to a person).
    pub fn is_hetu(&self) -> bool {
        self.root == HETU_ROOT
    }
}

impl fmt::Debug for PatientId {
    // Never print the extension: it is a hetu or an organisation's id for a
    // real patient.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientId")
            .field("root", &self.root)
            .field("extension", &"<redacted>")
            .finish()
    }
}

/// Administrative sex (`1.2.246.537.5.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
    Unknown,
}

/// An HL7 TS literal as written (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`).
/// Its length is its precision; it is kept verbatim and interpreted on
/// demand so nothing is lost.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ts(pub String);

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// How precisely a [`Ts`] names its moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Ts {
    /// The digits before any fraction or zone offset.
    fn digits(&self) -> &str {
        let end = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        &self.0[..end]
    }

    pub fn precision(&self) -> Option<Precision> {
        match self.digits().len() {
            4 => Some(Precision::Year),
            6 => Some(Precision::Month),
            8 => Some(Precision::Day),
            10 => Some(Precision::Hour),
            12 => Some(Precision::Minute),
            n if n >= 14 => Some(Precision::Second),
            _ => None,
        }
    }

    /// The calendar date, when the literal names at least a day.
    pub fn date(&self) -> Option<chrono::NaiveDate> {
        let d = self.digits();
        if d.len() < 8 {
            return None;
        }
        chrono::NaiveDate::from_ymd_opt(
            d[0..4].parse().ok()?,
            d[4..6].parse().ok()?,
            d[6..8].parse().ok()?,
        )
    }

    /// The year, when the literal has one.
    pub fn year(&self) -> Option<i32> {
        let d = self.digits();
        if d.len() < 4 {
            return None;
        }
        d[0..4].parse().ok()
    }

    /// The moment as a naive local date-time, missing parts at their start
    /// (a day becomes its midnight). Zone offsets are ignored: Kanta writes
    /// Finnish local time, and feeds generalise to days or months anyway.
    pub fn start(&self) -> Option<chrono::NaiveDateTime> {
        let d = self.digits();
        let part = |a: usize, b: usize, default: u32| -> Option<u32> {
            if d.len() >= b {
                d[a..b].parse().ok()
            } else {
                Some(default)
            }
        };
        let year: i32 = d.get(0..4)?.parse().ok()?;
        let date = chrono::NaiveDate::from_ymd_opt(year, part(4, 6, 1)?, part(6, 8, 1)?)?;
        date.and_hms_opt(part(8, 10, 0)?, part(10, 12, 0)?, part(12, 14, 0)?)
    }

    pub fn is_valid(&self) -> bool {
        self.precision().is_some() && self.start().is_some()
    }
}

/// When a record happened: a point or an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Effective {
    Point(Ts),
    Interval {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        low: Option<Ts>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        high: Option<Ts>,
    },
}

impl Effective {
    /// The moment a feed dates the record by: the point, or the interval's
    /// start (its end when it has no start).
    pub fn anchor(&self) -> Option<&Ts> {
        match self {
            Effective::Point(ts) => Some(ts),
            Effective::Interval { low, high } => low.as_ref().or(high.as_ref()),
        }
    }
}

/// The comparator of an open-ended result such as `<5` or `>500`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

/// An observation's value, by its HL7 data type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ObsValue {
    /// PQ, INT, REAL: a number (its unit sits on the record).
    Number(f64),
    /// BL.
    Boolean(bool),
    /// CD, CE, CV, CO: a coded result.
    Coded(Code),
    /// IVL_PQ: an interval, or a one-sided bound with its comparator.
    Interval {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comparator: Option<Comparator>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        low: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        high: Option<f64>,
    },
    /// ST: a short textual result (e.g. "negatiivinen"). Never free text of
    /// the document's narrative.
    Text(String),
}

/// A diagnosis or problem. Its meaning sits in `observation/value`; primacy
/// (`1.2.246.537.5.40005`) and permanence (`1.2.246.537.5.40003`) when the
/// document states them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub system: String,
    pub code: String,
    /// Set when normalisation changed the OID as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
    /// The code as written, when it was decorated (`E11.3+H36.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_raw: Option<String>,
    /// The manifestation code after `+` (its trailing `*` dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_code: Option<String>,
    /// The ATC code of a causing medicine after `#` (verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_atc: Option<String>,
    /// The part after `&`, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_code: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primacy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub negated: bool,
}

/// A laboratory result or a physiological measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<Code>,
    pub value: Option<ObsValue>,
    /// The value exactly as written (`value/@value`, or `<5`), beside the
    /// parsed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_raw: Option<String>,
    /// The unit as written; `None` when the document gives none.
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<String>,
    pub negated: bool,
}

/// What a medication record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MedicationEvent {
    /// Prescription Centre type 1: not a purchase.
    Prescription,
    /// Prescription Centre type 10.
    Dispensing,
    /// Prescription Centre type 11: voids the dispensing it names.
    DispensingInvalidation,
    /// Prescription Centre type 12: a new version of the dispensing's set.
    DispensingCorrection,
    /// Another Prescription Centre message type (renewal, cancellation, ...).
    PrescriptionCentreOther,
    /// Outside the Prescription Centre: the patient takes it.
    Statement,
    /// Outside the Prescription Centre: it was given (moodCode EVN).
    Administration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Medication {
    pub event: MedicationEvent,
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<Code>,
    /// The package number (VNR), from a `supply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    /// For an invalidation: the id of the dispensing document it voids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidates: Option<String>,
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vaccination {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Code>,
    /// A refused or not-given vaccination.
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Procedure {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<Code>,
    pub negated: bool,
}

/// A denial of disclosure of one service event's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEventDenial {
    pub service_event: Option<String>,
    pub provider: Option<String>,
    pub from: Option<Ts>,
    pub to: Option<Ts>,
}

/// A denial of disclosure of one service provider's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDenial {
    pub provider: String,
    /// All of the provider's registers are denied.
    pub all_registers: bool,
}

/// The denials of consent to disclosure valid at the time of a prohibition
/// document (a snapshot: the latest version replaces the person's whole set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prohibition {
    /// Field 5: no denial is valid (every earlier one withdrawn).
    pub no_valid_prohibitions: bool,
    pub service_events: Vec<ServiceEventDenial>,
    pub providers: Vec<ProviderDenial>,
    /// Field 15: denied data may be disclosed in an emergency.
    pub emergency_disclosure_allowed: Option<bool>,
}

/// What a record is, with its kind-specific content. Serialised with a
/// `kind` tag: `diagnosis`, `lab_result`, `measurement`, `medication`,
/// `vaccination`, `procedure`, `prohibition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    Diagnosis(Diagnosis),
    LabResult(Observation),
    Measurement(Observation),
    Medication(Medication),
    Vaccination(Vaccination),
    Procedure(Procedure),
    Prohibition(Prohibition),
}

/// The kind of a record, without its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Diagnosis,
    LabResult,
    Measurement,
    Medication,
    Vaccination,
    Procedure,
    Prohibition,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Diagnosis,
        RecordKind::LabResult,
        RecordKind::Measurement,
        RecordKind::Medication,
        RecordKind::Vaccination,
        RecordKind::Procedure,
        RecordKind::Prohibition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Diagnosis => "diagnosis",
            RecordKind::LabResult => "lab_result",
            RecordKind::Measurement => "measurement",
            RecordKind::Medication => "medication",
            RecordKind::Vaccination => "vaccination",
            RecordKind::Procedure => "procedure",
            RecordKind::Prohibition => "prohibition",
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl RecordBody {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::Diagnosis(_) => RecordKind::Diagnosis,
            RecordBody::LabResult(_) => RecordKind::LabResult,
            RecordBody::Measurement(_) => RecordKind::Measurement,
            RecordBody::Medication(_) => RecordKind::Medication,
            RecordBody::Vaccination(_) => RecordKind::Vaccination,
            RecordBody::Procedure(_) => RecordKind::Procedure,
            RecordBody::Prohibition(_) => RecordKind::Prohibition,
        }
    }

    /// The record's primary code (system, code), when it has one.
    pub fn code(&self) -> Option<(&str, &str)> {
        match self {
            RecordBody::Diagnosis(d) => Some((&d.system, &d.code)),
            RecordBody::LabResult(o) | RecordBody::Measurement(o) => Some((&o.system, &o.code)),
            RecordBody::Medication(m) => Some((&m.system, &m.code)),
            RecordBody::Vaccination(v) => Some((&v.system, &v.code)),
            RecordBody::Procedure(p) => Some((&p.system, &p.code)),
            RecordBody::Prohibition(_) => None,
        }
    }

    pub fn negated(&self) -> bool {
        match self {
            RecordBody::Diagnosis(d) => d.negated,
            RecordBody::LabResult(o) | RecordBody::Measurement(o) => o.negated,
            RecordBody::Medication(m) => m.negated,
            RecordBody::Vaccination(v) => v.negated,
            RecordBody::Procedure(p) => p.negated,
            RecordBody::Prohibition(_) => false,
        }
    }
}

/// One clinical statement of a document, tied to it by `ordinal` (1-based
/// position among the document's records, stable across versions of a set
/// as long as the producer keeps entry order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub ordinal: u32,
    pub effective: Option<Effective>,
    #[serde(flatten)]
    pub body: RecordBody,
}

/// Document-level flags of the Finnish local header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// `sensitiveDocument`.
    pub sensitive: bool,
    /// `basisForNondisclosure` code(s), as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basis_for_nondisclosure: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_date_for_patient_viewing: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_period_class: Option<String>,
}

/// How a document relates to an earlier one (`relatedDocument`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedDocument {
    /// `RPLC` (replaces), `APND` (appends: our profile's invalidation), `XFRM`.
    pub type_code: String,
    pub id: Option<String>,
    pub set_id: Option<String>,
    pub version: Option<u32>,
}

/// The header of one document version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// This version's id (root, or root + "." ... when an extension is given:
    /// see `decode`).
    pub id: String,
    /// The set's id: the first version's id.
    pub set_id: String,
    pub version: u32,
    /// The register code (`1.2.246.537.5.40150`) or Prescription Centre
    /// message type (`1.2.246.537.5.40105`), or the producer's document code.
    pub code: Option<Code>,
    pub effective_time: Option<Ts>,
    /// The custodian organisation's OID.
    pub controller: Option<String>,
    /// The service event (palvelutapahtuma) OID.
    pub service_event: Option<String>,
    /// The view (`contentsCode`, else the top section's code).
    pub view: Option<String>,
    pub record_status: Option<String>,
    pub home_municipality: Option<String>,
    pub flags: Flags,
    pub patient: PatientId,
    pub sex: Option<Sex>,
    pub birth_time: Option<Ts>,
    /// The parent id of a replacement (`relatedDocument typeCode="RPLC"`).
    pub replaces: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<RelatedDocument>,
    /// False for a document with only a `nonXMLBody` (or no body).
    pub structured_body: bool,
}

impl Document {
    /// Register code 11 (withdrawn documents): this version withdraws its set.
    pub fn is_withdrawal(&self) -> bool {
        self.code
            .as_ref()
            .is_some_and(|c| c.is(crate::codes::REGISTER_CODE, "11"))
    }

    /// A Prescription Centre document (`1.2.246.537.5.40105`).
    pub fn prescription_centre_type(&self) -> Option<&str> {
        self.code
            .as_ref()
            .filter(|c| c.system == crate::codes::PRESCRIPTION_CENTRE_MESSAGE_TYPE)
            .map(|c| c.code.as_str())
    }
}

/// A decoded document version: what `decode` yields for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodedDocument {
    pub packaging: Packaging,
    pub document: Document,
    pub records: Vec<Record>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_precision_and_start() {
        let ts = Ts("20260112093000".into());
        assert_eq!(ts.precision(), Some(Precision::Second));
        assert_eq!(ts.date(), chrono::NaiveDate::from_ymd_opt(2026, 1, 12));
        let day = Ts("19720314".into());
        assert_eq!(day.precision(), Some(Precision::Day));
        assert_eq!(day.year(), Some(1972));
        let frac = Ts("20170922151558.936+0200".into());
        assert_eq!(frac.precision(), Some(Precision::Second));
        assert!(frac.is_valid());
        assert!(!Ts("2026013".into()).is_valid());
        assert!(!Ts("20261340".into()).is_valid());
    }

    #[test]
    fn patient_id_debug_never_shows_the_extension() {
        let p = PatientId {
            root: HETU_ROOT.into(),
            extension: "010101-900R".into(),
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("010101"), "{shown}");
    }

    #[test]
    fn record_serialises_with_kind_tag_and_number_value() {
        let r = Record {
            ordinal: 1,
            effective: Some(Effective::Point(Ts("20260203101500".into()))),
            body: RecordBody::LabResult(Observation {
                system: "1.2.246.537.6.3".into(),
                code: "6128".into(),
                value: Some(ObsValue::Number(58.0)),
                value_raw: Some("58".into()),
                unit: Some("mmol/mol".into()),
                ..Default::default()
            }),
        };
        let v = serde_json::to_value(&r).expect("serialises");
        assert_eq!(v["kind"], "lab_result");
        assert_eq!(v["value"], 58.0);
        assert_eq!(v["effective"], "20260203101500");
        let back: Record = serde_json::from_value(v).expect("round-trips");
        assert_eq!(back, r);
    }
}
