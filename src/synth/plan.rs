//! The plan: every synthetic person and their clinical history as the
//! generator intends it, document by document and entry by entry. The CDA
//! writer renders it and the truth is computed from it; nothing here reads a
//! document back.
//!
//! Each person draws from their own random stream (seed, person index), so
//! the plan of one person does not depend on how many draws another made.
//! The only shared state is the hetu uniqueness check and the document
//! counter, both walked in person order.

use std::collections::HashSet;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::decode::hetu;

use super::rng::Rng;

/// The fixed "now" of every corpus: dates run back about twelve years from it.
pub const ANCHOR: &str = "2026-11-01";
/// How far back documents go, in years before [`ANCHOR`].
pub const HISTORY_YEARS: i32 = 12;

pub fn anchor() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid constant date")
}

/// Kela, custodian of prohibition documents.
pub const KELA_CONTROLLER: &str = "1.2.246.10.2462460.19.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    WellbeingCounty,
    Private,
    OccupationalHealth,
}

/// A controller (custodian) of documents.
#[derive(Debug, Clone, Copy)]
pub struct Org {
    /// The 8-digit organisation part of its OIDs.
    pub number: &'static str,
    pub name: &'static str,
    pub kind: OrgKind,
}

impl Org {
    /// The register OID that appears as the custodian.
    pub fn controller(&self) -> String {
        format!("1.2.246.10.{}.19.0", self.number)
    }

    /// The service-provider OID that prohibitions name.
    pub fn provider(&self) -> String {
        format!("1.2.246.10.{}.10.0", self.number)
    }

    /// Register code (`1.2.246.537.5.40150`) of this organisation's documents.
    pub fn register_code(&self) -> &'static str {
        match self.kind {
            OrgKind::WellbeingCounty => "2",
            OrgKind::Private => "3",
            OrgKind::OccupationalHealth => "4",
        }
    }
}

/// Every controller the generator uses, in a fixed order.
pub const ORGS: &[Org] = &[
    Org {
        number: "32213086",
        name: "Pirkanmaan hyvinvointialue",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "32213094",
        name: "Vantaan ja Keravan hyvinvointialue",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "32213102",
        name: "Pohjois-Pohjanmaan hyvinvointialue",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "32213110",
        name: "Varsinais-Suomen hyvinvointialue",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "32213128",
        name: "Keski-Suomen hyvinvointialue",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "32213136",
        name: "Helsingin kaupunki",
        kind: OrgKind::WellbeingCounty,
    },
    Org {
        number: "99999912",
        name: "Yksityinen Lääkäriasema Oy",
        kind: OrgKind::Private,
    },
    Org {
        number: "99999913",
        name: "Testiklinikka Oy",
        kind: OrgKind::Private,
    },
    Org {
        number: "99999914",
        name: "Työterveys Esimerkki Oy",
        kind: OrgKind::OccupationalHealth,
    },
];

const PRIVATE_ORGS: [usize; 3] = [6, 7, 8];

/// Home municipalities (`1.2.246.537.6.21`) and the county that serves them.
const MUNICIPALITIES: &[(&str, usize, u32)] = &[
    ("091", 5, 12),
    ("049", 5, 5),
    ("092", 1, 5),
    ("245", 1, 2),
    ("837", 0, 5),
    ("536", 0, 2),
    ("564", 2, 4),
    ("853", 3, 4),
    ("179", 4, 3),
];

/// Invented given names (the leak tests look for them in outputs).
pub const GIVEN_MALE: &[&str] = &[
    "Eino", "Onni", "Väinö", "Arvo", "Toivo", "Ilmari", "Kalevi", "Eelis", "Aatos", "Tapsa",
    "Oiva", "Urho", "Jorma", "Pentti", "Seppo", "Mauno",
];
pub const GIVEN_FEMALE: &[&str] = &[
    "Aino", "Siiri", "Helmi", "Lempi", "Ilona", "Kerttu", "Tyyne", "Sanelma", "Hilja", "Elli",
    "Impi", "Martta", "Raili", "Pirkko", "Aili", "Tuulikki",
];
/// Invented family names.
pub const FAMILY: &[&str] = &[
    "Testinen",
    "Koekäyttäjä",
    "Esimerkki",
    "Näytelmä",
    "Kuvitelma",
    "Harjoitus",
    "Malliniemi",
    "Lumelainen",
    "Keksitty",
    "Tekaistu",
    "Sepitelmä",
    "Kokeilu",
    "Luonnosmaa",
    "Mallikas",
    "Testilä",
    "Kuvajainen",
    "Harhala",
    "Unelmala",
    "Satunen",
    "Vedoskari",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
}

/// The code of a document (`ClinicalDocument/code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocCode {
    /// Register code, `1.2.246.537.5.40150` (2, 3, 4, 11 withdrawn, 12).
    Register(&'static str),
    /// Prescription Centre message type, `1.2.246.537.5.40105`.
    Prescription(PcType),
}

/// Prescription Centre message types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcType {
    Prescription,
    Dispensing,
    Invalidation,
    Correction,
}

impl PcType {
    pub fn code(self) -> &'static str {
        match self {
            PcType::Prescription => "1",
            PcType::Dispensing => "10",
            PcType::Invalidation => "11",
            PcType::Correction => "12",
        }
    }
}

/// How a document travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// A bare CDA file.
    Bare,
    /// `RCMR_IN100002FI01`.
    ArchiveNew,
    /// `RCMR_IN100016FI01`.
    ArchiveReplacement,
}

/// How the MIME `Content-Type` header of an archive message names its boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folding {
    /// `boundary=` on a continuation line without leading whitespace, as in
    /// the real Kanta message.
    Unindented,
    /// RFC 5322 folding (a tab).
    Folded,
    /// One line.
    OneLine,
}

/// A reference to another document version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRef {
    pub id: String,
    pub set_id: String,
    pub version: u32,
}

/// Whose document it is: the person's hetu, or an organisation's temporary id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientId {
    Hetu,
    Temporary { root: String, extension: String },
}

/// Whether an observation is a laboratory result or a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsKind {
    Lab,
    Measurement,
}

/// One `<entry>`: exactly one record each.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Diagnosis {
        /// Code system as written (possibly with a version suffix).
        system: &'static str,
        /// Code as written (possibly decorated, `E11.3+H36.0`).
        code: &'static str,
        negated: bool,
        at: NaiveDateTime,
    },
    Observation {
        kind: ObsKind,
        system: String,
        code: &'static str,
        /// Value as written (`7.5`).
        value: String,
        unit: Option<&'static str>,
        at: NaiveDateTime,
    },
    Medication {
        atc: &'static str,
        package: Option<String>,
        at: NaiveDateTime,
    },
    Vaccination {
        atc: &'static str,
        package: String,
        at: NaiveDateTime,
    },
    Procedure {
        code: &'static str,
        at: NaiveDateTime,
    },
}

/// A denied service event in a prohibition document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedEvent {
    pub service_event: String,
    pub provider: String,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

/// The content of a prohibition document (view 331): the denials valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prohibition {
    /// Field 5: no valid denials.
    pub none_valid: bool,
    pub service_events: Vec<DeniedEvent>,
    /// Service-provider OIDs whose registers are all denied.
    pub providers: Vec<String>,
    pub emergency_disclosure_allowed: bool,
}

/// One document version.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The custodian: an index into [`ORGS`], or `None` for Kela.
    pub org: Option<usize>,
    pub id: String,
    pub set_id: String,
    pub version: u32,
    /// `relatedDocument typeCode="RPLC"`.
    pub replaces: Option<DocRef>,
    /// `relatedDocument typeCode="APND"` (an invalidation's dispensing).
    pub appends: Option<DocRef>,
    pub code: DocCode,
    /// View code (`166`, `LAB`, `FYS`, `ROK`, `1`, `331`).
    pub view: &'static str,
    pub effective: NaiveDateTime,
    pub service_event: Option<String>,
    pub patient: PatientId,
    /// `hl7fi:` prefix on the local header instead of a default namespace.
    pub prefixed_header: bool,
    pub sensitive: bool,
    pub municipality: Option<&'static str>,
    pub packaging: Packaging,
    pub folding: Folding,
    pub entries: Vec<Entry>,
    pub prohibition: Option<Prohibition>,
    /// 0: the corpus; 1: the follow-up batch.
    pub batch: u8,
}

impl Doc {
    pub fn controller(&self) -> String {
        match self.org {
            Some(i) => ORGS[i].controller(),
            None => KELA_CONTROLLER.to_owned(),
        }
    }

    pub fn is_withdrawal(&self) -> bool {
        self.code == DocCode::Register("11")
    }

    pub fn as_ref(&self) -> DocRef {
        DocRef {
            id: self.id.clone(),
            set_id: self.set_id.clone(),
            version: self.version,
        }
    }
}

/// One synthetic person. `Debug` hides the hetu and the name.
#[derive(Clone)]
pub struct Person {
    pub hetu: String,
    pub sex: Sex,
    pub birth: NaiveDate,
    pub given: &'static str,
    pub family: &'static str,
    pub municipality: Option<&'static str>,
    /// Planned as a diabetic (the truth is still computed from the documents).
    pub diabetic: bool,
    pub docs: Vec<Doc>,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("hetu", &"<redacted>")
            .field("docs", &self.docs.len())
            .finish_non_exhaustive()
    }
}

impl Person {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }
}

/// The whole corpus as intended.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub patients: u32,
    pub persons: Vec<Person>,
    /// The next free document number (the `<n>` of `...93.<year>.<n>`).
    pub next_number: u64,
}

impl Plan {
    pub fn documents(&self) -> impl Iterator<Item = (&Person, &Doc)> {
        self.persons
            .iter()
            .flat_map(|p| p.docs.iter().map(move |d| (p, d)))
    }
}

/// Birth decades and their weights (roughly the Finnish age pyramid).
const BIRTH_DECADES: &[(i32, u32)] = &[
    (1930, 3),
    (1940, 9),
    (1950, 12),
    (1960, 13),
    (1970, 13),
    (1980, 13),
    (1990, 12),
    (2000, 11),
    (2010, 11),
    (2020, 4),
];

/// Century signs with weights: the classic sign is commonest.
const SIGNS_1900: &[(u8, u32)] = &[
    (b'-', 5),
    (b'Y', 1),
    (b'X', 1),
    (b'W', 1),
    (b'V', 1),
    (b'U', 1),
];
const SIGNS_2000: &[(u8, u32)] = &[
    (b'A', 5),
    (b'B', 1),
    (b'C', 1),
    (b'D', 1),
    (b'E', 1),
    (b'F', 1),
];

pub const ICD10_WRITTEN: [&str; 2] = [crate::codes::ICD10_FI, "1.2.246.537.6.1.1999"];
pub const LAB_WRITTEN: [&str; 2] = [crate::codes::LAB_FI, "1.2.246.537.6.3.2006"];

const DIABETES_T1: &[(&str, u32)] = &[
    ("E10.9", 12),
    ("E10.4+G63.2*", 3),
    ("E10.3+H36.0", 3),
    ("T89", 2),
];
const DIABETES_T2: &[(&str, u32)] = &[
    ("E11.9", 50),
    ("E11.3+H36.0", 8),
    ("E11.4+G63.2*", 6),
    ("E11.2+N08.3*", 5),
    ("E11.9&Z99.9", 1),
    ("T90", 12),
    ("E13.9", 3),
    ("E14.9", 3),
];
const GESTATIONAL: &str = "O24.4";
const OTHER_DIAGNOSES: &[&str] = &[
    "I10", "J06.9", "M54.5", "J45.9", "F32.1", "K21.0", "E78.0", "M17.1", "H52.1", "L20.9",
    "N39.0", "R51", "Z00.0", "J20.9", "I48.9", "E03.9",
];

const A10_T1: &[&str] = &["A10AE04", "A10AB05", "A10AB04"];
const A10_T2: &[&str] = &["A10BA02", "A10BJ02", "A10BK01", "A10BH01", "A10BD07"];
const OTHER_MEDICINES: &[&str] = &[
    "C09AA05", "C10AA01", "C07AB02", "N06AB04", "R03AK07", "M01AE01", "H03AA01", "B01AC06",
];
const VACCINES: &[&str] = &["J07BB02", "J07BX03", "J07AL02", "J07BC02", "J07AM51"];
const OTHER_PROCEDURES: &[&str] = &["JAB10", "NGB20", "HAB00", "TFX00"];
/// Diabetic retinopathy screening (verify).
pub const RETINOPATHY_SCREENING: &str = "CKC10";
const LOCAL_LAB_CODES: &[(&str, &str)] = &[("GLUK-PIKA", "mmol/l"), ("CRP-LOC", "mg/l")];

/// Per-person planning context.
struct Ctx<'a> {
    rng: Rng,
    counter: &'a mut u64,
    birth: NaiveDate,
    municipality: Option<&'static str>,
    home_org: usize,
}

impl Ctx<'_> {
    fn window_start(&self) -> NaiveDate {
        let start = anchor()
            .with_year(anchor().year() - HISTORY_YEARS)
            .expect("1 November exists every year");
        start.max(self.birth)
    }

    fn random_time(&mut self) -> NaiveDateTime {
        let from = self.window_start();
        let to = anchor() - Duration::days(1);
        let days = (to - from).num_days().max(0);
        let day = from + Duration::days(self.rng.range(0, days));
        let secs = self.rng.range(7 * 3600, 17 * 3600 + 3599) as u32;
        day.and_time(
            NaiveTime::from_num_seconds_from_midnight_opt(secs - secs % 60, 0)
                .expect("seconds within a day"),
        )
    }

    /// A time `lo..=hi` days after `t`, but before the anchor.
    fn later(&mut self, t: NaiveDateTime, lo: i64, hi: i64) -> NaiveDateTime {
        let limit = (anchor() - Duration::days(1))
            .and_hms_opt(23, 0, 0)
            .expect("valid");
        let cand =
            t + Duration::days(self.rng.range(lo, hi)) + Duration::minutes(self.rng.range(5, 300));
        cand.min(limit).max(t)
    }

    fn pick_org(&mut self) -> usize {
        let r = self.rng.below(100);
        if r < 75 {
            self.home_org
        } else if r < 80 {
            self.rng.below(6) as usize
        } else {
            *self.rng.pick(&PRIVATE_ORGS)
        }
    }

    fn number(&mut self) -> u64 {
        let n = *self.counter;
        *self.counter += 1;
        n
    }

    fn new_doc(&mut self, org: usize, code: DocCode, view: &'static str, at: NaiveDateTime) -> Doc {
        let n = self.number();
        let number = ORGS[org].number;
        let id = format!("1.2.246.10.{number}.93.{}.{n}", at.year());
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
            prefixed_header: self.rng.chance(0.5),
            sensitive: self.rng.chance(0.03),
            municipality: if self.rng.chance(0.95) {
                self.municipality
            } else {
                None
            },
            packaging: if self.rng.chance(0.3) {
                Packaging::ArchiveNew
            } else {
                Packaging::Bare
            },
            folding: *self
                .rng
                .pick(&[Folding::Unindented, Folding::Folded, Folding::OneLine]),
            entries: Vec::new(),
            prohibition: None,
            batch: 0,
        }
    }

    fn clinical_doc(&mut self, view: &'static str, at: NaiveDateTime) -> Doc {
        let org = self.pick_org();
        self.new_doc(org, DocCode::Register(ORGS[org].register_code()), view, at)
    }

    fn pc_doc(&mut self, ty: PcType, at: NaiveDateTime) -> Doc {
        let org = self.pick_org();
        self.new_doc(org, DocCode::Prescription(ty), "1", at)
    }

    /// A new version of `parent`'s set (`RPLC`), same custodian.
    fn next_version(&mut self, parent: &Doc, code: DocCode, at: NaiveDateTime) -> Doc {
        let org = parent.org.unwrap_or(0);
        let mut d = self.new_doc(org, code, parent.view, at);
        d.set_id = parent.set_id.clone();
        d.version = parent.version + 1;
        d.replaces = Some(parent.as_ref());
        d.service_event = parent.service_event.clone();
        d.municipality = parent.municipality;
        if self.rng.chance(0.5) {
            d.packaging = Packaging::ArchiveReplacement;
        }
        d
    }

    fn icd_system(&mut self) -> &'static str {
        if self.rng.chance(0.2) {
            ICD10_WRITTEN[1]
        } else {
            ICD10_WRITTEN[0]
        }
    }

    fn diagnosis(&mut self, code: &'static str, negated: bool, at: NaiveDateTime) -> Entry {
        let system = if code.starts_with('T') && !code.contains('.') {
            crate::codes::ICPC2
        } else {
            self.icd_system()
        };
        Entry::Diagnosis {
            system,
            code,
            negated,
            at,
        }
    }

    fn lab(
        &mut self,
        code: &'static str,
        value: String,
        unit: &'static str,
        at: NaiveDateTime,
    ) -> Entry {
        let system = if self.rng.chance(0.3) {
            LAB_WRITTEN[1]
        } else {
            LAB_WRITTEN[0]
        };
        let unit = if self.rng.chance(0.02) {
            None
        } else {
            Some(unit)
        };
        Entry::Observation {
            kind: ObsKind::Lab,
            system: system.to_owned(),
            code,
            value,
            unit,
            at,
        }
    }

    fn measurement(
        &mut self,
        code: &'static str,
        value: String,
        unit: &'static str,
        at: NaiveDateTime,
    ) -> Entry {
        let unit = if self.rng.chance(0.01) {
            None
        } else {
            Some(unit)
        };
        Entry::Observation {
            kind: ObsKind::Measurement,
            system: crate::codes::LOINC.to_owned(),
            code,
            value,
            unit,
            at,
        }
    }

    /// A decimal in `lo..=hi` (in tenths), written with one decimal.
    fn tenths(&mut self, lo: i64, hi: i64) -> String {
        let v = self.rng.range(lo, hi);
        format!("{}.{}", v / 10, v % 10)
    }

    fn int(&mut self, lo: i64, hi: i64) -> String {
        self.rng.range(lo, hi).to_string()
    }

    fn package(&mut self) -> String {
        format!("{:06}", self.rng.range(100_000, 599_999))
    }

    fn lab_panel(&mut self, diabetic: bool, at: NaiveDateTime) -> Doc {
        let mut d = self.clinical_doc("LAB", at);
        let t = at - Duration::minutes(self.rng.range(30, 240));
        let mut e = Vec::new();
        if diabetic || self.rng.chance(0.3) {
            let (lo, hi) = if diabetic { (44, 96) } else { (30, 42) };
            let r = self.rng.below(100);
            if r < 70 {
                let v = self.int(lo, hi);
                e.push(self.lab("6128", v, "mmol/mol", t));
            } else {
                // The same range in % (DCCT): mmol/mol / 10.929 + 2.15.
                let pct_lo = (lo * 10 / 11 + 22).min(120);
                let pct_hi = hi * 10 / 11 + 22;
                let v = self.tenths(pct_lo, pct_hi);
                let code = if r < 85 || at.year() >= 2019 {
                    "6128"
                } else {
                    "1560"
                };
                e.push(self.lab(code, v, "%", t));
            }
        }
        if diabetic || self.rng.chance(0.6) {
            let v = self.tenths(15, 49);
            e.push(self.lab("4599", v, "mmol/l", t));
        }
        if self.rng.chance(0.5) {
            let v = self.tenths(32, 72);
            e.push(self.lab("4515", v, "mmol/l", t));
            let v = self.tenths(8, 24);
            e.push(self.lab("4516", v, "mmol/l", t));
            let v = self.tenths(5, 40);
            e.push(self.lab("4568", v, "mmol/l", t));
        }
        if diabetic || self.rng.chance(0.5) {
            let v = self.int(45, 140);
            e.push(self.lab("4600", v, "umol/l", t));
        }
        if diabetic && self.rng.chance(0.8) {
            let v = self.int(25, 118);
            e.push(self.lab("6354", v, "ml/min/1.73m2", t));
        }
        if diabetic && self.rng.chance(0.6) {
            let v = self.tenths(1, 80);
            e.push(self.lab("4511", v, "mg/mmol", t));
        }
        if self.rng.chance(if diabetic { 0.6 } else { 0.3 }) {
            let v = if diabetic {
                self.tenths(55, 140)
            } else {
                self.tenths(45, 60)
            };
            e.push(self.lab("1468", v, "mmol/l", t));
        }
        if self.rng.chance(0.2) {
            let (code, unit) = *self.rng.pick(LOCAL_LAB_CODES);
            let v = self.tenths(30, 120);
            let org = d.org.map_or("99999912", |o| ORGS[o].number);
            e.push(Entry::Observation {
                kind: ObsKind::Lab,
                system: format!("1.2.246.10.{org}.12.1"),
                code,
                value: v,
                unit: Some(unit),
                at: t,
            });
        }
        if e.is_empty() {
            let v = self.int(45, 100);
            e.push(self.lab("4600", v, "umol/l", t));
        }
        d.entries = e;
        d
    }

    fn measurements(&mut self, at: NaiveDateTime) -> Doc {
        let mut d = self.clinical_doc("FYS", at);
        let sys = self.rng.range(105, 175);
        let dia = self.rng.range(60, 105).min(sys - 30);
        let weight10 = self.rng.range(480, 1300);
        let height = self.rng.range(150, 196);
        let mut e = vec![
            self.measurement("8480-6", sys.to_string(), "mm[Hg]", at),
            self.measurement("8462-4", dia.to_string(), "mm[Hg]", at),
            self.measurement(
                "29463-7",
                format!("{}.{}", weight10 / 10, weight10 % 10),
                "kg",
                at,
            ),
        ];
        if self.rng.chance(0.4) {
            e.push(self.measurement("8302-2", height.to_string(), "cm", at));
        }
        if self.rng.chance(0.6) {
            // BMI in tenths, from the same weight and height.
            let bmi10 = (weight10 * 10_000 * 10 / (height * height) + 5) / 10;
            e.push(self.measurement(
                "39156-5",
                format!("{}.{}", bmi10 / 10, bmi10 % 10),
                "kg/m2",
                at,
            ));
        }
        d.entries = e;
        d
    }

    fn visit(&mut self, codes: &[(&'static str, bool)], at: NaiveDateTime) -> Doc {
        let mut d = self.clinical_doc("166", at);
        d.entries = codes
            .iter()
            .map(|&(c, neg)| self.diagnosis(c, neg, at))
            .collect();
        d
    }

    fn other_diagnoses(&mut self) -> Vec<(&'static str, bool)> {
        let n = self.rng.range(1, 3);
        (0..n)
            .map(|_| (*self.rng.pick(OTHER_DIAGNOSES), self.rng.chance(0.04)))
            .collect()
    }

    fn procedure(&mut self, code: &'static str, at: NaiveDateTime) -> Doc {
        let mut d = self.clinical_doc("166", at);
        d.entries = vec![Entry::Procedure { code, at }];
        d
    }

    fn vaccination(&mut self, at: NaiveDateTime) -> Doc {
        let mut d = self.clinical_doc("ROK", at);
        let atc = *self.rng.pick(VACCINES);
        let package = self.package();
        d.entries = vec![Entry::Vaccination { atc, package, at }];
        d
    }

    fn prescription(&mut self, atc: &'static str, at: NaiveDateTime) -> Doc {
        let mut d = self.pc_doc(PcType::Prescription, at);
        d.entries = vec![Entry::Medication {
            atc,
            package: None,
            at,
        }];
        d
    }

    fn dispensing(&mut self, atc: &'static str, at: NaiveDateTime) -> Doc {
        let mut d = self.pc_doc(PcType::Dispensing, at);
        let package = self.package();
        d.entries = vec![Entry::Medication {
            atc,
            package: Some(package),
            at,
        }];
        d
    }

    fn invalidation(&mut self, of: &Doc) -> Doc {
        let at = self.later(of.effective, 1, 20);
        let mut d = self.pc_doc(PcType::Invalidation, at);
        d.appends = Some(of.as_ref());
        if let Some(Entry::Medication { atc, at, .. }) = of.entries.first() {
            d.entries = vec![Entry::Medication {
                atc,
                package: None,
                at: *at,
            }];
        }
        d
    }

    fn correction(&mut self, of: &Doc) -> Doc {
        let at = self.later(of.effective, 1, 20);
        let mut d = self.next_version(of, DocCode::Prescription(PcType::Correction), at);
        let package = self.package();
        if let Some(Entry::Medication { atc, at, .. }) = of.entries.first() {
            d.entries = vec![Entry::Medication {
                atc,
                package: Some(package),
                at: *at,
            }];
        }
        d
    }

    /// A replacement version with changed values (and sometimes one entry fewer).
    fn replacement(&mut self, of: &Doc) -> Doc {
        let at = self.later(of.effective, 1, 60);
        let mut d = self.next_version(of, of.code, at);
        let mut entries = of.entries.clone();
        if entries.len() > 1 && self.rng.chance(0.3) {
            entries.pop();
        }
        if let Some(i) =
            (!entries.is_empty()).then(|| self.rng.below(entries.len() as u64) as usize)
        {
            change_value(&mut entries[i], &mut self.rng);
        }
        d.entries = entries;
        d
    }

    fn withdrawal(&mut self, of: &Doc) -> Doc {
        let at = self.later(of.effective, 1, 90);
        let mut d = self.next_version(of, DocCode::Register("11"), at);
        d.entries = Vec::new();
        d
    }

    fn temporary(&mut self, doc: &mut Doc) {
        let org = ORGS[doc.org.unwrap_or(0)].number;
        let year = doc.effective.year();
        doc.patient = PatientId::Temporary {
            root: format!("1.2.246.10.{org}.22.{year}"),
            extension: format!("T{year}{:04}", self.rng.below(10_000)),
        };
    }
}

/// Changes the value of an entry the way a corrected record would.
pub fn change_value(e: &mut Entry, rng: &mut Rng) {
    match e {
        Entry::Observation { value, .. } => {
            let changed = match value.split_once('.') {
                Some((i, f)) => {
                    let tenths: i64 =
                        i.parse::<i64>().unwrap_or(0) * 10 + f.parse::<i64>().unwrap_or(0);
                    let t = tenths + rng.range(1, 9);
                    format!("{}.{}", t / 10, t % 10)
                }
                None => (value.parse::<i64>().unwrap_or(0) + rng.range(1, 9)).to_string(),
            };
            *value = changed;
        }
        Entry::Diagnosis { code, .. } => {
            *code = match *code {
                "E11.9" => "E11.3+H36.0",
                "E10.9" => "E10.4+G63.2*",
                "I10" => "I11.9",
                "J06.9" => "J20.9",
                _ => "M54.5",
            };
        }
        Entry::Medication { package, .. } => {
            *package = Some(format!("{:06}", rng.range(600_000, 699_999)));
        }
        Entry::Vaccination { package, .. } => {
            *package = format!("{:06}", rng.range(600_000, 699_999));
        }
        Entry::Procedure { code, .. } => *code = "TFX00",
    }
}

/// Builds the plan of `patients` people for `seed`.
pub fn plan(patients: u32, seed: u64) -> Plan {
    let mut persons = Vec::with_capacity(patients as usize);
    let mut used: HashSet<String> = HashSet::with_capacity(patients as usize);
    let mut counter: u64 = 1;
    for i in 0..patients {
        let mut rng = Rng::new(seed, u64::from(i) + 1);
        let (hetu, birth) = draw_hetu(&mut rng, &used);
        used.insert(hetu.clone());
        let individual: u32 = hetu[7..10].parse().unwrap_or(900);
        let sex = if individual % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        };
        let given = *rng.pick(if sex == Sex::Male {
            GIVEN_MALE
        } else {
            GIVEN_FEMALE
        });
        let family = *rng.pick(FAMILY);
        let (municipality, home_org) = {
            let &(m, org, _) = rng.weighted(
                &MUNICIPALITIES
                    .iter()
                    .map(|&(m, o, w)| ((m, o, w), w))
                    .collect::<Vec<_>>(),
            );
            (if rng.chance(0.9) { Some(m) } else { None }, org)
        };
        let mut ctx = Ctx {
            rng,
            counter: &mut counter,
            birth,
            municipality,
            home_org,
        };
        let (diabetic, docs) = history(&mut ctx, sex, birth);
        persons.push(Person {
            hetu,
            sex,
            birth,
            given,
            family,
            municipality,
            diabetic,
            docs,
        });
    }
    Plan {
        seed,
        patients,
        persons,
        next_number: counter,
    }
}

fn draw_hetu(rng: &mut Rng, used: &HashSet<String>) -> (String, NaiveDate) {
    loop {
        let decade = *rng.weighted(BIRTH_DECADES);
        let last_year = if decade == 2020 { 2024 } else { decade + 9 };
        let year = rng.range(i64::from(decade), i64::from(last_year)) as i32;
        let start = NaiveDate::from_ymd_opt(year, 1, 1).expect("valid");
        let days = if NaiveDate::from_ymd_opt(year, 12, 31)
            .expect("valid")
            .ordinal()
            == 366
        {
            366
        } else {
            365
        };
        let birth = start + Duration::days(rng.below(days) as i64);
        let signs = if year >= 2000 { SIGNS_2000 } else { SIGNS_1900 };
        // A few tries on this date before drawing a new one.
        for _ in 0..8 {
            let sign = *rng.weighted(signs);
            let individual = 900 + rng.below(100) as u32;
            if let Some(h) = hetu::make(birth, sign, individual) {
                let s = h.as_str().to_owned();
                if !used.contains(&s) {
                    return (s, birth);
                }
            }
        }
    }
}

/// Probability of (planned) diabetes by age at the anchor.
fn diabetes_probability(age: i32) -> f64 {
    match age {
        ..20 => 0.012,
        20..40 => 0.03,
        40..55 => 0.08,
        55..65 => 0.14,
        65..75 => 0.2,
        _ => 0.22,
    }
}

fn history(ctx: &mut Ctx<'_>, sex: Sex, birth: NaiveDate) -> (bool, Vec<Doc>) {
    let age = anchor().year() - birth.year();
    let diabetic = ctx.rng.chance(diabetes_probability(age));
    let type1 = diabetic && (age < 30 || ctx.rng.chance(0.08));
    let mut docs: Vec<Doc> = Vec::new();

    // Visits with diagnoses.
    if diabetic {
        let code = if sex == Sex::Female && (20..45).contains(&age) && ctx.rng.chance(0.15) {
            GESTATIONAL
        } else if type1 {
            *ctx.rng.weighted(DIABETES_T1)
        } else {
            *ctx.rng.weighted(DIABETES_T2)
        };
        let n = ctx.rng.range(1, 3);
        for k in 0..n {
            let at = ctx.random_time();
            let mut codes = Vec::new();
            if k == 0 || ctx.rng.chance(0.6) {
                codes.push((code, false));
            }
            codes.extend(ctx.other_diagnoses());
            // Diagnosis order within the visit is part of the plan.
            if ctx.rng.chance(0.3) {
                codes.reverse();
            }
            docs.push(ctx.visit(&codes, at));
        }
    }
    let visits = ctx.rng.range(1, 3);
    for _ in 0..visits {
        let at = ctx.random_time();
        let mut codes = ctx.other_diagnoses();
        if !diabetic && ctx.rng.chance(0.012) {
            // Ruled out: a negated E11 must not make anyone a diabetic.
            codes.push(("E11.9", true));
        }
        docs.push(ctx.visit(&codes, at));
    }

    // Laboratory panels.
    let panels = if diabetic {
        ctx.rng.range(2, 5)
    } else if ctx.rng.chance(0.45) {
        ctx.rng.range(1, 2)
    } else {
        0
    };
    for _ in 0..panels {
        let at = ctx.random_time();
        docs.push(ctx.lab_panel(diabetic, at));
    }

    // Measurements.
    let fys = if diabetic {
        ctx.rng.range(1, 2)
    } else if ctx.rng.chance(0.3) {
        1
    } else {
        0
    };
    for _ in 0..fys {
        let at = ctx.random_time();
        docs.push(ctx.measurements(at));
    }

    // Vaccinations.
    if ctx.rng.chance(0.4) {
        let at = ctx.random_time();
        docs.push(ctx.vaccination(at));
    }

    // Procedures.
    if diabetic && ctx.rng.chance(0.5) {
        for _ in 0..ctx.rng.range(1, 2) {
            let at = ctx.random_time();
            docs.push(ctx.procedure(RETINOPATHY_SCREENING, at));
        }
    } else if ctx.rng.chance(0.15) {
        let at = ctx.random_time();
        let code = *ctx.rng.pick(OTHER_PROCEDURES);
        docs.push(ctx.procedure(code, at));
    }

    // Prescription Centre.
    if diabetic && !ctx.rng.chance(0.15) {
        let atc = *ctx.rng.pick(if type1 { A10_T1 } else { A10_T2 });
        let at = ctx.random_time();
        docs.push(ctx.prescription(atc, at));
        let mut t = at;
        for _ in 0..ctx.rng.range(1, 3) {
            t = ctx.later(t, 1, 120);
            let d = ctx.dispensing(atc, t);
            let fix = ctx.rng.below(100);
            let follow = if fix < 8 {
                Some(ctx.correction(&d))
            } else if fix < 13 {
                Some(ctx.invalidation(&d))
            } else {
                None
            };
            docs.push(d);
            docs.extend(follow);
        }
    } else if !diabetic {
        let r = ctx.rng.below(1000);
        if r < 6 {
            // Cohort entry by an A10 dispensing alone.
            let at = ctx.random_time();
            let atc = *ctx.rng.pick(A10_T2);
            docs.push(ctx.dispensing(atc, at));
        } else if r < 12 {
            // An A10 dispensing that was invalidated: no cohort entry by it.
            let at = ctx.random_time();
            let atc = *ctx.rng.pick(A10_T2);
            let d = ctx.dispensing(atc, at);
            let inv = ctx.invalidation(&d);
            docs.push(d);
            docs.push(inv);
        }
    }
    if ctx.rng.chance(0.4) {
        let atc = *ctx.rng.pick(OTHER_MEDICINES);
        let at = ctx.random_time();
        docs.push(ctx.prescription(atc, at));
        let t = ctx.later(at, 0, 30);
        docs.push(ctx.dispensing(atc, t));
    }

    // Replacement versions and withdrawals of clinical documents.
    let originals = docs.len();
    for i in 0..originals {
        if !matches!(docs[i].code, DocCode::Register(_)) {
            continue;
        }
        let r = ctx.rng.below(1000);
        if r < 40 {
            let rep = ctx.replacement(&docs[i]);
            let withdraw_too = ctx.rng.chance(0.1);
            let wd = withdraw_too.then(|| ctx.withdrawal(&rep));
            docs.push(rep);
            docs.extend(wd);
        } else if r < 55 {
            let wd = ctx.withdrawal(&docs[i]);
            docs.push(wd);
        }
    }

    // Temporary ids: a document the producer could not tie to a hetu.
    if ctx.rng.chance(0.07) {
        let at = ctx.random_time();
        let mut d = if diabetic || ctx.rng.chance(0.3) {
            ctx.visit(&[("E11.9", false)], at)
        } else {
            ctx.lab_panel(false, at)
        };
        ctx.temporary(&mut d);
        docs.push(d);
    }

    // Prohibition documents.
    if ctx.rng.chance(0.01) {
        prohibitions(ctx, &mut docs);
    }
    (diabetic, docs)
}

fn prohibitions(ctx: &mut Ctx<'_>, docs: &mut Vec<Doc>) {
    let mut events: Vec<DeniedEvent> = Vec::new();
    let candidates: Vec<(String, usize, NaiveDateTime)> = docs
        .iter()
        .filter(|d| d.patient == PatientId::Hetu && d.version == 1)
        .filter_map(|d| Some((d.service_event.clone()?, d.org?, d.effective)))
        .collect();
    if !candidates.is_empty() && ctx.rng.chance(0.7) {
        for _ in 0..ctx.rng.range(1, 2) {
            let (se, org, at) = ctx.rng.pick(&candidates).clone();
            if events.iter().any(|e| e.service_event == se) {
                continue;
            }
            events.push(DeniedEvent {
                service_event: se,
                provider: ORGS[org].provider(),
                from: at - Duration::hours(1),
                to: at + Duration::hours(2),
            });
        }
    }
    let mut providers = Vec::new();
    if events.is_empty() || ctx.rng.chance(0.4) {
        let org = ctx.rng.below(ORGS.len() as u64) as usize;
        providers.push(ORGS[org].provider());
    }
    let at = ctx.random_time();
    let n = ctx.number();
    let id = format!("1.2.246.10.2462460.93.{}.{n}", at.year());
    let first = Doc {
        org: None,
        set_id: id.clone(),
        id,
        version: 1,
        replaces: None,
        appends: None,
        code: DocCode::Register("12"),
        view: "331",
        effective: at,
        service_event: None,
        patient: PatientId::Hetu,
        prefixed_header: true,
        sensitive: false,
        municipality: None,
        packaging: Packaging::Bare,
        folding: Folding::Unindented,
        entries: Vec::new(),
        prohibition: Some(Prohibition {
            none_valid: false,
            service_events: events,
            providers,
            emergency_disclosure_allowed: ctx.rng.chance(0.7),
        }),
        batch: 0,
    };
    let withdrawn_all = ctx.rng.chance(0.3).then(|| {
        let at2 = ctx.later(at, 10, 400);
        let n = ctx.number();
        Doc {
            id: format!("1.2.246.10.2462460.93.{}.{n}", at2.year()),
            version: 2,
            replaces: Some(first.as_ref()),
            effective: at2,
            prohibition: Some(Prohibition {
                none_valid: true,
                service_events: Vec::new(),
                providers: Vec::new(),
                emergency_disclosure_allowed: false,
            }),
            ..first.clone()
        }
    });
    docs.push(first);
    docs.extend(withdrawn_all);
}
