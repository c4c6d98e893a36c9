//! Code systems: the explicit table of known systems and their versioned OIDs
//! (`config/code-systems.toml`, embedded as the default), OID normalisation,
//! and the OIDs the rest of the crate names. Normalisation never strips
//! trailing numbers by rule: only forms listed in the table map to their
//! canonical OID; anything else stays as written.
//!
//! This module knows nothing of documents or feeds.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

pub const HETU: &str = "1.2.246.21";
pub const ICD10_FI: &str = "1.2.246.537.6.1";
pub const ICPC2: &str = "1.2.246.537.6.31";
pub const DIAGNOSIS_PRIMACY: &str = "1.2.246.537.5.40005";
pub const DIAGNOSIS_PERMANENCE: &str = "1.2.246.537.5.40003";
pub const PROCEDURES_FI: &str = "1.2.246.537.6.2";
pub const LAB_FI: &str = "1.2.246.537.6.3";
pub const LOINC: &str = "2.16.840.1.113883.6.1";
pub const ATC: &str = "1.2.246.537.6.32";
pub const VNR: &str = "1.2.246.537.6.55";
pub const VACCINATION_SITE: &str = "1.2.246.537.6.110";
pub const VACCINATION_ROUTE: &str = "1.2.246.537.6.111";
pub const REGISTER_CODE: &str = "1.2.246.537.5.40150";
pub const PRESCRIPTION_CENTRE_MESSAGE_TYPE: &str = "1.2.246.537.5.40105";
pub const SEX: &str = "1.2.246.537.5.1";
pub const MUNICIPALITY: &str = "1.2.246.537.6.21";
pub const RECORD_STATUS: &str = "1.2.246.537.5.40154";
pub const RETENTION_PERIOD_CLASS: &str = "1.2.246.537.5.40158";
pub const VIEWS: &str = "1.2.246.537.6.12.2002";
pub const PROHIBITION_FORM: &str = "1.2.246.537.6.12.2002.331";
pub const ICD10_CM: &str = "2.16.840.1.113883.6.90";
pub const ICD10_WHO: &str = "2.16.840.1.113883.6.3";
pub const SNOMED_CT: &str = "2.16.840.1.113883.6.96";
pub const ICD9_CM: &str = "2.16.840.1.113883.6.103";
pub const RXNORM: &str = "2.16.840.1.113883.6.88";
pub const CVX: &str = "2.16.840.1.113883.12.292";

/// The table shipped with the binary.
pub const DEFAULT_TABLE: &str = include_str!("../config/code-systems.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    system: Vec<RawSystem>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    oid: String,
    name: String,
    title: String,
    #[serde(default)]
    forms: Vec<String>,
}

/// One known code system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSystem {
    pub oid: String,
    pub name: String,
    pub title: String,
    pub forms: Vec<String>,
}

/// The validated table: every OID and form is a well-formed OID, names are
/// unique, and no form names two systems.
#[derive(Debug, Clone)]
pub struct CodeSystems {
    systems: Vec<CodeSystem>,
    /// Every canonical OID and every form → index into `systems`.
    by_oid: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("code-system table is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("code-system table: {0:?} is not a well-formed OID")]
    BadOid(String),
    #[error("code-system table: {0:?} names more than one system")]
    Duplicate(String),
}

/// Whether `s` is a dotted sequence of decimal arcs (`1.2.246.21`).
pub fn is_oid(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        })
}

/// `oid` without surrounding whitespace and `urn:oid:` prefixes (repeated
/// ones too, so that normalising is idempotent).
fn bare(oid: &str) -> &str {
    let mut s = oid.trim();
    while let Some(rest) = s.strip_prefix("urn:oid:") {
        s = rest.trim();
    }
    s
}

impl CodeSystems {
    pub fn parse(text: &str) -> Result<CodeSystems, TableError> {
        let raw: RawTable = toml::from_str(text)?;
        let mut systems = Vec::with_capacity(raw.system.len());
        let mut by_oid = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, s) in raw.system.into_iter().enumerate() {
            for oid in std::iter::once(&s.oid).chain(&s.forms) {
                if !is_oid(oid) {
                    return Err(TableError::BadOid(oid.clone()));
                }
                if by_oid.insert(oid.clone(), i).is_some() {
                    return Err(TableError::Duplicate(oid.clone()));
                }
            }
            if by_name.insert(s.name.clone(), i).is_some() {
                return Err(TableError::Duplicate(s.name.clone()));
            }
            systems.push(CodeSystem {
                oid: s.oid,
                name: s.name,
                title: s.title,
                forms: s.forms,
            });
        }
        Ok(CodeSystems {
            systems,
            by_oid,
            by_name,
        })
    }

    /// The canonical OID for `oid` as written: a listed versioned form maps to
    /// its system; `urn:oid:` is dropped (repeatedly); anything else is returned trimmed
    /// but otherwise unchanged.
    pub fn normalise<'a>(&'a self, oid: &'a str) -> &'a str {
        let bare = bare(oid);
        match self.by_oid.get(bare) {
            Some(&i) => &self.systems[i].oid,
            None => bare,
        }
    }

    /// The known system an OID (canonical or versioned) names.
    pub fn lookup(&self, oid: &str) -> Option<&CodeSystem> {
        self.by_oid.get(bare(oid)).map(|&i| &self.systems[i])
    }

    /// The system with this short name (`icd10-fi`, `atc`, ...).
    pub fn by_name(&self, name: &str) -> Option<&CodeSystem> {
        self.by_name.get(name).map(|&i| &self.systems[i])
    }

    pub fn systems(&self) -> &[CodeSystem] {
        &self.systems
    }
}

/// The shipped table, parsed once.
pub fn default_table() -> &'static CodeSystems {
    static TABLE: OnceLock<CodeSystems> = OnceLock::new();
    TABLE.get_or_init(|| {
        CodeSystems::parse(DEFAULT_TABLE)
            .expect("the embedded code-system table is validated by the unit tests")
    })
}

/// Municipality → region table (`config/municipality-regions.toml`).
pub const MUNICIPALITY_REGIONS: &str = include_str!("../config/municipality-regions.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionTable {
    regions: HashMap<String, String>,
    municipalities: HashMap<String, String>,
}

/// The region (maakunta) code of a municipality code, when the shipped
/// table lists it.
pub fn region_of(municipality: &str) -> Option<&'static str> {
    static TABLE: OnceLock<RegionTable> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        toml::from_str(MUNICIPALITY_REGIONS)
            .expect("the embedded municipality table is validated by the unit tests")
    });
    let region = t.municipalities.get(municipality.trim())?;
    t.regions.contains_key(region).then_some(region.as_str())
}

/// Patient-id classes (`config/patient-ids.toml`).
pub const PATIENT_IDS: &str = include_str!("../config/patient-ids.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientIdTable {
    hetu_root: String,
    temporary_root_prefixes: Vec<String>,
}

fn patient_id_table() -> &'static PatientIdTable {
    static TABLE: OnceLock<PatientIdTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        toml::from_str(PATIENT_IDS)
            .expect("the embedded patient-id table is validated by the unit tests")
    })
}

/// What kind of id a patient id root names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatientIdKind {
    /// A henkilötunnus.
    Hetu,
    /// A Finnish organisation's temporary id.
    Temporary,
    /// Anything else (a foreign record number, an unknown root).
    Other,
}

impl PatientIdKind {
    pub const ALL: [PatientIdKind; 3] = [
        PatientIdKind::Hetu,
        PatientIdKind::Temporary,
        PatientIdKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PatientIdKind::Hetu => "hetu",
            PatientIdKind::Temporary => "temporary",
            PatientIdKind::Other => "other",
        }
    }
}

/// The kind of a patient id by its root, from the shipped table.
pub fn patient_id_kind(root: &str) -> PatientIdKind {
    let t = patient_id_table();
    let root = root.trim();
    if root == t.hetu_root {
        PatientIdKind::Hetu
    } else if t
        .temporary_root_prefixes
        .iter()
        .any(|p| root.starts_with(p.as_str()))
    {
        PatientIdKind::Temporary
    } else {
        PatientIdKind::Other
    }
}

/// Normalise with the shipped table.
pub fn normalise(oid: &str) -> String {
    default_table().normalise(oid).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_are_hetu_temporary_or_other() {
        let t: PatientIdTable = toml::from_str(PATIENT_IDS).expect("valid");
        assert_eq!(t.hetu_root, HETU);
        assert_eq!(patient_id_kind("1.2.246.21"), PatientIdKind::Hetu);
        // The reference documents' temporary ids (f17, the archive message).
        assert_eq!(
            patient_id_kind("1.2.246.10.32213086.22.2026"),
            PatientIdKind::Temporary
        );
        assert_eq!(
            patient_id_kind("1.2.246.537.10.15675350.22.2003"),
            PatientIdKind::Temporary
        );
        // A C-CDA medical record number, a Finnish non-organisation root.
        assert_eq!(
            patient_id_kind("2.16.840.1.113883.19.5.99999.2"),
            PatientIdKind::Other
        );
        assert_eq!(patient_id_kind("1.2.246.537.26"), PatientIdKind::Other);
        assert_eq!(patient_id_kind("1.2.246.210"), PatientIdKind::Other);
    }

    #[test]
    fn shipped_table_parses_and_names_every_constant() {
        let t = CodeSystems::parse(DEFAULT_TABLE).expect("valid");
        for oid in [
            ICD10_FI,
            ICPC2,
            DIAGNOSIS_PRIMACY,
            DIAGNOSIS_PERMANENCE,
            PROCEDURES_FI,
            LAB_FI,
            LOINC,
            ATC,
            VNR,
            VACCINATION_SITE,
            VACCINATION_ROUTE,
            REGISTER_CODE,
            PRESCRIPTION_CENTRE_MESSAGE_TYPE,
            SEX,
            MUNICIPALITY,
            RECORD_STATUS,
            RETENTION_PERIOD_CLASS,
            VIEWS,
            PROHIBITION_FORM,
            ICD10_CM,
            ICD10_WHO,
            SNOMED_CT,
            ICD9_CM,
            RXNORM,
            CVX,
        ] {
            let s = t.lookup(oid).unwrap_or_else(|| panic!("{oid} missing"));
            assert_eq!(s.oid, oid, "{oid} must be canonical");
        }
    }

    #[test]
    fn versioned_forms_map_to_their_system_and_nothing_else_is_stripped() {
        let t = default_table();
        assert_eq!(t.normalise("1.2.246.537.6.1.1999"), ICD10_FI);
        assert_eq!(t.normalise("1.2.246.537.6.3.2006"), LAB_FI);
        assert_eq!(t.normalise("1.2.246.537.5.40150.2009"), REGISTER_CODE);
        assert_eq!(t.normalise("urn:oid:1.2.246.537.6.32"), ATC);
        // A year in the middle is part of the OID.
        assert_eq!(t.normalise(PROHIBITION_FORM), PROHIBITION_FORM);
        assert_eq!(t.normalise(VIEWS), VIEWS);
        // An unknown trailing number is not stripped.
        assert_eq!(t.normalise("1.2.246.537.6.1.2042"), "1.2.246.537.6.1.2042");
        assert_eq!(
            t.normalise("1.2.246.10.99999912.12.1"),
            "1.2.246.10.99999912.12.1"
        );
    }

    #[test]
    fn municipalities_generalise_to_their_region() {
        assert_eq!(region_of("092"), Some("01"));
        assert_eq!(region_of("837"), Some("06"));
        assert_eq!(region_of("999"), None);
    }

    #[test]
    fn table_errors_are_refused() {
        let dup = "[[system]]\noid=\"1.2\"\nname=\"a\"\ntitle=\"a\"\nforms=[]\n[[system]]\noid=\"1.3\"\nname=\"b\"\ntitle=\"b\"\nforms=[\"1.2\"]\n";
        assert!(matches!(
            CodeSystems::parse(dup),
            Err(TableError::Duplicate(_))
        ));
        let bad = "[[system]]\noid=\"1.02\"\nname=\"a\"\ntitle=\"a\"\n";
        assert!(matches!(
            CodeSystems::parse(bad),
            Err(TableError::BadOid(_))
        ));
        assert!(is_oid("1.2.246.21"));
        assert!(!is_oid("1..2"));
        assert!(!is_oid("1.2a"));
        assert!(!is_oid(""));
    }
}
