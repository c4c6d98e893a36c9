//! Units of measure with UCUM semantics, from the table in
//! `config/units.toml`: which written units name the same unit, which are
//! commensurable (same dimension) and the factor between them. Conversions
//! that need a molar mass take it from the caller (a mapping item declares
//! it); this module knows no analyte.
//!
//! Data, not code: a unit that turns up is a row in the table. This module
//! does not decide what a feed does with a unit it cannot convert.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

pub const DEFAULT_TABLE: &str = include_str!("../config/units.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    unit: Vec<RawUnit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    ucum: String,
    dimension: String,
    factor: f64,
    #[serde(default)]
    spellings: Vec<String>,
}

const MASS_CONCENTRATION: &str = "mass_concentration";
const SUBSTANCE_CONCENTRATION: &str = "substance_concentration";

/// One unit: its UCUM code, dimension and factor to the dimension's base.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub ucum: String,
    pub dimension: String,
    pub factor: f64,
}

/// The validated table.
#[derive(Debug)]
pub struct Units {
    by_spelling: HashMap<String, usize>,
    units: Vec<Unit>,
}

/// Why a value cannot be expressed in the wanted unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotConvertible {
    /// The written unit is not in the table.
    Unknown,
    /// Different dimensions, and no molar mass bridges them.
    Incommensurable,
}

impl Units {
    pub fn parse(text: &str) -> Result<Units, String> {
        let raw: RawTable = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_spelling = HashMap::new();
        let mut units = Vec::new();
        for (i, u) in raw.unit.into_iter().enumerate() {
            if !(u.factor.is_finite() && u.factor > 0.0) {
                return Err(format!("unit {}: factor must be a positive number", u.ucum));
            }
            if u.dimension.trim().is_empty() {
                return Err(format!("unit {}: dimension must not be empty", u.ucum));
            }
            for s in std::iter::once(&u.ucum).chain(&u.spellings) {
                if by_spelling.insert(s.trim().to_owned(), i).is_some() {
                    return Err(format!("unit spelling {s:?} is listed twice"));
                }
            }
            units.push(Unit {
                ucum: u.ucum,
                dimension: u.dimension,
                factor: u.factor,
            });
        }
        Ok(Units { by_spelling, units })
    }

    /// The unit a written form names (exact after trimming spaces: UCUM is
    /// case-sensitive, so case variants are listed as spellings).
    pub fn lookup(&self, written: &str) -> Option<&Unit> {
        self.by_spelling
            .get(written.trim())
            .map(|&i| &self.units[i])
    }

    /// Whether two written forms name the same unit.
    pub fn same(&self, a: &str, b: &str) -> bool {
        a.trim() == b.trim()
            || matches!((self.lookup(a), self.lookup(b)), (Some(x), Some(y)) if x == y)
    }

    /// `value` in unit `from` expressed in unit `to`. `molar_mass` (g/mol)
    /// bridges mass and substance concentrations.
    pub fn convert(
        &self,
        value: f64,
        from: &str,
        to: &str,
        molar_mass: Option<f64>,
    ) -> Result<f64, NotConvertible> {
        let (Some(f), Some(t)) = (self.lookup(from), self.lookup(to)) else {
            return Err(NotConvertible::Unknown);
        };
        let base = value * f.factor;
        let base = if f.dimension == t.dimension {
            base
        } else {
            match (f.dimension.as_str(), t.dimension.as_str(), molar_mass) {
                // g/L ÷ g/mol = mol/L
                (MASS_CONCENTRATION, SUBSTANCE_CONCENTRATION, Some(m)) => base / m,
                (SUBSTANCE_CONCENTRATION, MASS_CONCENTRATION, Some(m)) => base * m,
                _ => return Err(NotConvertible::Incommensurable),
            }
        };
        Ok(base / t.factor)
    }
}

/// The shipped table.
pub fn default_table() -> &'static Units {
    static TABLE: OnceLock<Units> = OnceLock::new();
    TABLE.get_or_init(|| {
        Units::parse(DEFAULT_TABLE).expect("the embedded unit table is validated by the unit tests")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn the_shipped_table_is_valid() {
        Units::parse(DEFAULT_TABLE).expect("valid");
    }

    #[test]
    fn imperial_vital_signs_convert() {
        let u = default_table();
        assert!(close(
            u.convert(239.9, "[lb_av]", "kg", None).expect("converts"),
            108.816809563
        ));
        assert!(close(
            u.convert(67.0, "[in_us]", "cm", None).expect("converts"),
            170.18
        ));
        assert!(close(
            u.convert(1.0, "[ft_i]", "cm", None).expect("converts"),
            30.48
        ));
    }

    #[test]
    fn molar_conversions_need_a_molar_mass() {
        let u = default_table();
        // Glucose 180.156 g/mol: 126 mg/dL ≈ 6.99 mmol/L.
        let g = u
            .convert(126.0, "mg/dL", "mmol/l", Some(180.156))
            .expect("converts");
        assert!(close(g, 6.993938586558316), "{g}");
        // Cholesterol 386.65 g/mol: 100 mg/dL ≈ 2.586 mmol/L.
        let c = u
            .convert(100.0, "mg/dL", "mmol/L", Some(386.65))
            .expect("converts");
        assert!(close(c, 2.586318376), "{c}");
        assert_eq!(
            u.convert(126.0, "mg/dL", "mmol/l", None),
            Err(NotConvertible::Incommensurable)
        );
    }

    #[test]
    fn spellings_name_the_same_unit_and_unknowns_do_not_convert() {
        let u = default_table();
        assert!(u.same("mmol/l", "mmol/L"));
        assert!(u.same("mmHg", "mm[Hg]"));
        assert!(!u.same("mg/dL", "mmol/L"));
        assert!(close(
            u.convert(5.0, "mmol/l", "mmol/L", None).expect("converts"),
            5.0
        ));
        assert_eq!(
            u.convert(1.0, "furlong", "cm", None),
            Err(NotConvertible::Unknown)
        );
        assert_eq!(
            u.convert(1.0, "kg", "cm", None),
            Err(NotConvertible::Incommensurable)
        );
    }

    #[test]
    fn a_spelling_listed_twice_is_refused() {
        let t = "[[unit]]\nucum = \"a\"\ndimension = \"d\"\nfactor = 1.0\nspellings = [\"b\"]\n[[unit]]\nucum = \"b\"\ndimension = \"d\"\nfactor = 2.0\n";
        assert!(Units::parse(t).is_err());
    }
}
