//! Applying a compiled [`Mapping`] to records: cohort evidence, selection
//! with unit normalisation (values without a unit are held, never guessed),
//! and output columns. Pure functions of the record, its document and the
//! person; the pipeline decides which documents are current.

use chrono::{Datelike, NaiveDate};

use super::{
    Column, Conversion, Expr, Mapping, Matcher, Rounding, Select, SensitivePolicy, ValueForm,
};
use crate::feed::{ColumnType, Value};
use crate::record::{Comparator, Document, ObsValue, Observation, Record, RecordBody};

/// Why a selected record is held back instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Held {
    /// A numeric value without a unit: never guessed.
    MissingUnit,
    /// A unit that neither the item's conversions nor the unit table turn
    /// into the item's unit.
    UnitNotConvertible,
    /// A one-sided value (`<5`, `>130`) for an item that does not accept
    /// censored values.
    CensoredValue,
    /// A closed interval (`4..6`) where one value was expected.
    IntervalValue,
    /// A text result (it may be free text: never delivered).
    TextValue,
    /// A coded result for an item that does not accept one.
    CodedValue,
    /// A boolean result for an item that does not accept one.
    BooleanValue,
    /// A value written in a form that is not read (`1,234.5`, `pos` in a
    /// quantity): kept as written, held.
    UnparseableValue,
    /// An observation with no value, for an item that needs one.
    MissingValue,
    /// A number for an item that takes only records without a value.
    NumericValue,
    /// The record has no date to place it in time.
    MissingDate,
    /// The document is flagged sensitive and the feed holds such documents.
    SensitiveDocument,
}

impl Held {
    pub const ALL: &'static [Held] = &[
        Held::MissingUnit,
        Held::UnitNotConvertible,
        Held::CensoredValue,
        Held::IntervalValue,
        Held::TextValue,
        Held::CodedValue,
        Held::BooleanValue,
        Held::UnparseableValue,
        Held::MissingValue,
        Held::NumericValue,
        Held::MissingDate,
        Held::SensitiveDocument,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Held::MissingUnit => "missing_unit",
            Held::UnitNotConvertible => "unit_not_convertible",
            Held::CensoredValue => "censored_value",
            Held::IntervalValue => "interval_value",
            Held::TextValue => "text_value",
            Held::CodedValue => "coded_value",
            Held::BooleanValue => "boolean_value",
            Held::UnparseableValue => "unparseable_value",
            Held::MissingValue => "missing_value",
            Held::NumericValue => "numeric_value",
            Held::MissingDate => "missing_date",
            Held::SensitiveDocument => "sensitive_document",
        }
    }
}

/// A normalised value ready for the value column.
#[derive(Debug, Clone, PartialEq)]
pub enum NormValue {
    Number(f64),
    Text(String),
}

/// A record a mapping's selector took.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// Index into `Mapping::selects`.
    pub select: usize,
    pub value: Option<NormValue>,
    /// The comparator of a censored value (`<`, `<=`, `>`, `>=`): the value
    /// is then its limit.
    pub comparator: Option<Comparator>,
    pub unit: Option<String>,
    /// The value and unit as written (always, beside the normalised ones).
    pub value_raw: Option<String>,
    pub unit_raw: Option<String>,
    pub date: Option<NaiveDate>,
    pub held: Option<Held>,
}

/// Who a row is about, as the feed may show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Pseudonym or hetu, by the feed's identity kind.
    pub id: String,
    pub birth_date: Option<NaiveDate>,
    /// "male" / "female".
    pub sex: Option<&'static str>,
}

impl Matcher {
    pub fn matches(&self, rec: &Record) -> bool {
        if rec.body.kind() != self.kind {
            return false;
        }
        let Some((system, code)) = rec.body.code() else {
            return false;
        };
        if self.system.as_deref().is_some_and(|s| s != system) {
            return false;
        }
        if !self.codes.is_empty() && !self.codes.iter().any(|p| p.matches(code)) {
            return false;
        }
        if !self.events.is_empty() {
            match &rec.body {
                RecordBody::Medication(m) if self.events.contains(&m.event) => {}
                _ => return false,
            }
        }
        true
    }
}

fn round_half_away(x: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    let y = (x * f).abs();
    // Guard against representation error (7.5 % × 10.929 …): nudge by a
    // relative epsilon before rounding half away from zero.
    let r = (y + y * 1e-12).round();
    (r / f).copysign(x)
}

impl Conversion {
    pub fn apply(&self, x: f64) -> f64 {
        let y = (x + self.offset) * self.factor;
        match self.round {
            Rounding::None => y,
            Rounding::HalfAwayFromZero => round_half_away(y, self.decimals),
        }
    }
}

fn unit_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn fmt_number(x: f64) -> String {
    let mut s = format!("{x}");
    if s.ends_with(".0") {
        s.truncate(s.len() - 2);
    }
    s
}

/// A value after normalisation, before the record's date and document are
/// considered.
#[derive(Debug, Default)]
struct Normalised {
    value: Option<NormValue>,
    comparator: Option<Comparator>,
    unit: Option<String>,
    value_raw: Option<String>,
    unit_raw: Option<String>,
    held: Option<Held>,
}

fn flip(c: Comparator) -> Comparator {
    match c {
        Comparator::Lt => Comparator::Gt,
        Comparator::Le => Comparator::Ge,
        Comparator::Gt => Comparator::Lt,
        Comparator::Ge => Comparator::Le,
    }
}

impl Select {
    fn accepts(&self, f: ValueForm) -> bool {
        self.accept.contains(&f)
    }

    fn normalise(&self, o: &Observation) -> Normalised {
        let written_unit = o.unit.as_deref().filter(|u| !u.trim().is_empty());
        let mut n = Normalised {
            value_raw: o.value_raw.clone(),
            unit_raw: written_unit.map(str::to_owned),
            ..Normalised::default()
        };
        let hold = |mut n: Normalised, h: Held| {
            n.held = Some(h);
            n
        };
        match &o.value {
            None if o.value_raw.is_some() => hold(n, Held::UnparseableValue),
            None if self.accepts(ValueForm::None) => n,
            None => hold(n, Held::MissingValue),
            // A textual result may carry free text: it never leaves the daemon.
            Some(ObsValue::Text(_)) => hold(n, Held::TextValue),
            Some(ObsValue::Coded(c)) => {
                n.value = Some(NormValue::Text(c.code.clone()));
                if self.accepts(ValueForm::Coded) {
                    n
                } else {
                    hold(n, Held::CodedValue)
                }
            }
            Some(ObsValue::Boolean(b)) => {
                n.value = Some(NormValue::Text(b.to_string()));
                if self.accepts(ValueForm::Boolean) {
                    n
                } else {
                    hold(n, Held::BooleanValue)
                }
            }
            Some(ObsValue::Number(x)) => self.number(n, *x, None, written_unit),
            Some(ObsValue::Interval {
                comparator: Some(c),
                low,
                high,
            }) => {
                let Some(limit) = low.or(*high) else {
                    return hold(n, Held::UnparseableValue);
                };
                let n = self.number(n, limit, Some(*c), written_unit);
                if self.accepts(ValueForm::Censored) || n.held.is_some() {
                    n
                } else {
                    hold(n, Held::CensoredValue)
                }
            }
            Some(ObsValue::Interval {
                comparator: None, ..
            }) => hold(n, Held::IntervalValue),
        }
    }

    /// A number (or a censored value's limit) in the item's unit.
    fn number(
        &self,
        mut n: Normalised,
        x: f64,
        comparator: Option<Comparator>,
        written_unit: Option<&str>,
    ) -> Normalised {
        n.value = Some(NormValue::Number(x));
        n.comparator = comparator;
        if !self.accepts(ValueForm::Number) && comparator.is_none() {
            // An item of "done" records only: a number is not what it takes.
            n.held = Some(Held::NumericValue);
            return n;
        }
        let Some(u) = written_unit else {
            if self.require_unit {
                n.held = Some(Held::MissingUnit);
            }
            return n;
        };
        n.unit = Some(u.to_owned());
        let Some(target) = &self.unit else {
            return n;
        };
        let units = crate::units::default_table();
        if unit_eq(u, target) || units.same(u, target) {
            n.unit = Some(target.clone());
            return n;
        }
        // An item's own formula first (HbA1c % → mmol/mol is not a unit
        // conversion, whatever UCUM says of % and mmol/mol).
        if let Some(c) = self.conversions.iter().find(|c| unit_eq(&c.from_unit, u)) {
            n.value = Some(NormValue::Number(c.apply(x)));
            n.comparator = comparator.map(|k| if c.factor < 0.0 { flip(k) } else { k });
            n.unit = Some(target.clone());
            return n;
        }
        match units.convert(x, u, target, self.molar_mass) {
            Ok(y) => {
                let y = match self.decimals {
                    Some(d) => round_half_away(y, d),
                    None => y,
                };
                n.value = Some(NormValue::Number(y));
                n.unit = Some(target.clone());
            }
            Err(_) => n.held = Some(Held::UnitNotConvertible),
        }
        n
    }
}

impl Mapping {
    /// Whether this record puts its person in the cohort. Negated records
    /// are never evidence.
    pub fn is_evidence(&self, rec: &Record) -> bool {
        !rec.body.negated() && self.cohort.iter().any(|m| m.matches(rec))
    }

    /// The selector that takes this record, with its normalised value, or
    /// `None` when the record is not in the feed. Negated records are never
    /// selected.
    pub fn select(&self, doc: &Document, rec: &Record) -> Option<Selected> {
        if rec.body.negated() {
            return None;
        }
        let (i, sel) = self
            .selects
            .iter()
            .enumerate()
            .find(|(_, s)| s.matcher.matches(rec))?;
        let Normalised {
            value,
            comparator,
            unit,
            value_raw,
            unit_raw,
            mut held,
        } = match &rec.body {
            RecordBody::LabResult(o) | RecordBody::Measurement(o) => sel.normalise(o),
            _ => Normalised::default(),
        };
        let date = rec
            .effective
            .as_ref()
            .and_then(|e| e.anchor())
            .or(doc.effective_time.as_ref())
            .and_then(|ts| ts.date());
        if date.is_none() {
            held = held.or(Some(Held::MissingDate));
        }
        if self.sensitive == SensitivePolicy::Hold
            && (doc.flags.sensitive || !doc.flags.basis_for_nondisclosure.is_empty())
        {
            held = Some(Held::SensitiveDocument);
        }
        Some(Selected {
            select: i,
            value,
            comparator,
            unit,
            value_raw,
            unit_raw,
            date,
            held,
        })
    }

    /// The output columns of one selected record, in the mapping's order.
    pub fn row(
        &self,
        person: &Person,
        doc: &Document,
        controller_id: Option<&str>,
        rec: &Record,
        sel: &Selected,
    ) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| column_value(self, c, person, doc, controller_id, rec, sel))
            .collect()
    }
}

fn comparator_str(c: Comparator) -> &'static str {
    match c {
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
    }
}

fn text(s: Option<&str>) -> Value {
    match s {
        Some(s) if !s.is_empty() => Value::Text(s.to_owned()),
        _ => Value::Null,
    }
}

fn column_value(
    m: &Mapping,
    c: &Column,
    person: &Person,
    doc: &Document,
    controller_id: Option<&str>,
    rec: &Record,
    sel: &Selected,
) -> Value {
    match c.expr {
        Expr::PersonId => Value::Text(person.id.clone()),
        Expr::PersonBirthYear => person
            .birth_date
            .map_or(Value::Null, |d| Value::Integer(i64::from(d.year()))),
        Expr::PersonBirthDate => person.birth_date.map_or(Value::Null, Value::Date),
        Expr::PersonSex => text(person.sex),
        Expr::DocumentController => text(doc.controller.as_deref()),
        Expr::DocumentControllerId => text(controller_id.or(doc.controller.as_deref())),
        Expr::DocumentMunicipality => text(doc.home_municipality.as_deref()),
        Expr::DocumentRegion => text(
            doc.home_municipality
                .as_deref()
                .and_then(crate::codes::region_of),
        ),
        Expr::DocumentServiceEvent => text(doc.service_event.as_deref()),
        Expr::DocumentSensitive => Value::Bool(doc.flags.sensitive),
        Expr::RecordItem => Value::Text(m.selects[sel.select].item.clone()),
        Expr::RecordKind => Value::Text(rec.body.kind().as_str().to_owned()),
        Expr::RecordSystem => text(rec.body.code().map(|(s, _)| s)),
        Expr::RecordCode => text(rec.body.code().map(|(_, c)| c)),
        Expr::RecordSymptomCode => match &rec.body {
            RecordBody::Diagnosis(d) => text(d.symptom_code.as_deref()),
            _ => Value::Null,
        },
        Expr::RecordDate => match (sel.date, c.ty) {
            (Some(d), ColumnType::Date) => Value::Date(d),
            (Some(d), _) => Value::Text(d.format("%Y-%m-%d").to_string()),
            (None, _) => Value::Null,
        },
        Expr::RecordMonth => sel
            .date
            .map_or(Value::Null, |d| Value::Text(d.format("%Y-%m").to_string())),
        Expr::RecordValue => match (&sel.value, c.ty) {
            (Some(NormValue::Number(x)), ColumnType::Number) => Value::Number(*x),
            (Some(NormValue::Number(x)), _) => Value::Text(fmt_number(*x)),
            (Some(NormValue::Text(t)), ColumnType::Text) => Value::Text(t.clone()),
            _ => Value::Null,
        },
        Expr::RecordComparator => text(sel.comparator.map(comparator_str)),
        Expr::RecordUnit => text(sel.unit.as_deref()),
        Expr::RecordValueRaw => text(sel.value_raw.as_deref()),
        Expr::RecordUnitRaw => text(sel.unit_raw.as_deref()),
        Expr::RecordEvent => match &rec.body {
            RecordBody::Medication(med) => serde_json::to_value(med.event)
                .ok()
                .and_then(|v| v.as_str().map(|s| Value::Text(s.to_owned())))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        },
        Expr::RecordPackage => match &rec.body {
            RecordBody::Medication(med) => text(med.package.as_deref()),
            RecordBody::Vaccination(v) => text(v.package.as_deref()),
            _ => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcct_to_ifcc_rounds_half_away_from_zero() {
        let c = Conversion {
            from_unit: "%".into(),
            offset: -2.15,
            factor: 10.929,
            round: Rounding::HalfAwayFromZero,
            decimals: 0,
        };
        assert_eq!(c.apply(7.5), 58.0);
        assert_eq!(c.apply(6.5), 48.0);
        assert_eq!(c.apply(2.15), 0.0);
        // (x - 2.15) * 10.929 = 0.5 exactly at x ≈ 2.19575…: half goes away from zero.
        assert_eq!(round_half_away(0.5, 0), 1.0);
        assert_eq!(round_half_away(-0.5, 0), -1.0);
        assert_eq!(round_half_away(2.5, 0), 3.0);
    }

    fn diabetes() -> Mapping {
        crate::mapping::parse(
            include_str!("../../mappings/diabetes.toml"),
            std::path::Path::new("mappings/diabetes.toml"),
        )
        .expect("the shipped mapping is valid")
    }

    fn item<'m>(m: &'m Mapping, name: &str) -> &'m Select {
        m.selects
            .iter()
            .find(|s| s.item == name)
            .expect("item exists")
    }

    fn obs(value: Option<ObsValue>, raw: Option<&str>, unit: Option<&str>) -> Observation {
        Observation {
            value,
            value_raw: raw.map(str::to_owned),
            unit: unit.map(str::to_owned),
            ..Observation::default()
        }
    }

    fn num(n: &Normalised) -> Option<f64> {
        match n.value {
            Some(NormValue::Number(x)) => Some(x),
            _ => None,
        }
    }

    #[test]
    fn censored_values_keep_their_comparator_and_convert_their_limit() {
        let m = diabetes();
        let hba1c = item(&m, "hba1c");
        let gt = |x| {
            Some(ObsValue::Interval {
                comparator: Some(Comparator::Gt),
                low: Some(x),
                high: None,
            })
        };
        let n = hba1c.normalise(&obs(gt(130.0), Some(">130"), Some("mmol/mol")));
        assert_eq!(
            (n.held, num(&n), n.comparator),
            (None, Some(130.0), Some(Comparator::Gt))
        );
        assert_eq!(n.value_raw.as_deref(), Some(">130"));
        // >14 % is > 129.5 → 130 mmol/mol, the raw value and unit beside it.
        let n = hba1c.normalise(&obs(gt(14.0), Some(">14"), Some("%")));
        assert_eq!(
            (n.held, num(&n), n.comparator),
            (None, Some(130.0), Some(Comparator::Gt))
        );
        assert_eq!(n.unit.as_deref(), Some("mmol/mol"));
        assert_eq!(n.unit_raw.as_deref(), Some("%"));
        // An item that does not accept censored values holds them.
        let bp = item(&m, "systolic_bp");
        let n = bp.normalise(&obs(gt(250.0), Some(">250"), Some("mm[Hg]")));
        assert_eq!(n.held, Some(Held::CensoredValue));
    }

    #[test]
    fn units_normalise_to_the_item_unit_or_hold() {
        let m = diabetes();
        let n = item(&m, "weight").normalise(&obs(
            Some(ObsValue::Number(239.9)),
            Some("239.9"),
            Some("[lb_av]"),
        ));
        assert_eq!((n.held, num(&n)), (None, Some(108.8)));
        assert_eq!(
            (n.unit.as_deref(), n.unit_raw.as_deref()),
            (Some("kg"), Some("[lb_av]"))
        );
        let n = item(&m, "height").normalise(&obs(
            Some(ObsValue::Number(67.0)),
            Some("67"),
            Some("[in_us]"),
        ));
        assert_eq!((n.held, num(&n)), (None, Some(170.2)));
        let n = item(&m, "ldl_cholesterol").normalise(&obs(
            Some(ObsValue::Number(100.0)),
            Some("100"),
            Some("mg/dL"),
        ));
        assert_eq!((n.held, num(&n)), (None, Some(2.59)));
        let n = item(&m, "fasting_glucose").normalise(&obs(
            Some(ObsValue::Number(126.0)),
            Some("126"),
            Some("mg/dl"),
        ));
        assert_eq!((n.held, num(&n)), (None, Some(7.0)));
        // The same unit written otherwise is the item's unit, value untouched.
        let n = item(&m, "ldl_cholesterol").normalise(&obs(
            Some(ObsValue::Number(2.94)),
            Some("2.94"),
            Some("mmol/L"),
        ));
        assert_eq!(
            (n.held, num(&n), n.unit.as_deref()),
            (None, Some(2.94), Some("mmol/l"))
        );
        for u in ["mg/g", "furlong", "kg"] {
            let n = item(&m, "ldl_cholesterol").normalise(&obs(
                Some(ObsValue::Number(1.0)),
                Some("1"),
                Some(u),
            ));
            assert_eq!(n.held, Some(Held::UnitNotConvertible), "{u}");
            assert_eq!(n.unit_raw.as_deref(), Some(u));
        }
    }

    #[test]
    fn value_forms_an_item_does_not_take_are_held_with_their_reason() {
        let m = diabetes();
        let hba1c = item(&m, "hba1c");
        let held = |o: Observation| hba1c.normalise(&o).held;
        assert_eq!(
            held(obs(Some(ObsValue::Text("pos".into())), None, None)),
            Some(Held::TextValue)
        );
        assert_eq!(
            held(obs(None, Some("1,234.5"), Some("mmol/mol"))),
            Some(Held::UnparseableValue)
        );
        assert_eq!(held(obs(None, None, None)), Some(Held::MissingValue));
        assert_eq!(
            held(obs(Some(ObsValue::Boolean(true)), Some("true"), None)),
            Some(Held::BooleanValue)
        );
        assert_eq!(
            held(obs(
                Some(ObsValue::Interval {
                    comparator: None,
                    low: Some(4.0),
                    high: Some(6.0)
                }),
                Some("4..6"),
                Some("mmol/mol")
            )),
            Some(Held::IntervalValue)
        );
        assert_eq!(
            held(obs(Some(ObsValue::Number(48.0)), Some("48"), None)),
            Some(Held::MissingUnit)
        );
        // A decimal comma read by the decoder is an ordinary number here.
        let n = hba1c.normalise(&obs(Some(ObsValue::Number(6.5)), Some("6,5"), Some("%")));
        assert_eq!(
            (n.held, num(&n), n.value_raw.as_deref()),
            (None, Some(48.0), Some("6,5"))
        );
        // "Done" records: no value is what the item takes; a number is not.
        let done = item(&m, "retinopathy_screening_recorded");
        assert_eq!(done.normalise(&obs(None, None, None)).held, None);
        assert_eq!(
            done.normalise(&obs(Some(ObsValue::Number(1.0)), Some("1"), Some("kg")))
                .held,
            Some(Held::NumericValue)
        );
    }

    #[test]
    fn every_hold_reason_has_a_distinct_name() {
        let names: std::collections::BTreeSet<_> = Held::ALL.iter().map(|h| h.as_str()).collect();
        assert_eq!(names.len(), Held::ALL.len());
    }
}
