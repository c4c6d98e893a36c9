//! Applying a compiled [`Mapping`] to records: cohort evidence, selection
//! with unit normalisation (values without a unit are held, never guessed),
//! and output columns. Pure functions of the record, its document and the
//! person; the pipeline decides which documents are current.

use chrono::{Datelike, NaiveDate};

use super::{Column, Conversion, Expr, Mapping, Matcher, Rounding, Select, SensitivePolicy};
use crate::feed::{ColumnType, Value};
use crate::record::{Document, ObsValue, Record, RecordBody};

/// Why a selected record is held back instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Held {
    /// A numeric value without a unit: never guessed.
    MissingUnit,
    /// A unit the mapping has no conversion for.
    UnexpectedUnit,
    /// The record has no date to place it in time.
    MissingDate,
    /// The document is flagged sensitive and the feed holds such documents.
    SensitiveDocument,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::MissingUnit => "missing_unit",
            Held::UnexpectedUnit => "unexpected_unit",
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
    pub unit: Option<String>,
    /// Set when normalisation changed the value or unit.
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

/// A value after unit normalisation: (value, unit, value_raw, unit_raw, held).
type Normalised = (
    Option<NormValue>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Held>,
);

impl Select {
    fn normalise(
        &self,
        value: &Option<ObsValue>,
        raw: &Option<String>,
        unit: &Option<String>,
    ) -> Normalised {
        match value {
            Some(ObsValue::Number(x)) => {
                let Some(u) = unit.as_deref().filter(|u| !u.trim().is_empty()) else {
                    let held = self.require_unit.then_some(Held::MissingUnit);
                    return (Some(NormValue::Number(*x)), None, raw.clone(), None, held);
                };
                match &self.unit {
                    None => (
                        Some(NormValue::Number(*x)),
                        Some(u.to_owned()),
                        None,
                        None,
                        None,
                    ),
                    Some(target) if unit_eq(u, target) => (
                        Some(NormValue::Number(*x)),
                        Some(target.clone()),
                        None,
                        None,
                        None,
                    ),
                    Some(target) => {
                        match self.conversions.iter().find(|c| unit_eq(&c.from_unit, u)) {
                            Some(c) => (
                                Some(NormValue::Number(c.apply(*x))),
                                Some(target.clone()),
                                Some(raw.clone().unwrap_or_else(|| fmt_number(*x))),
                                Some(u.to_owned()),
                                None,
                            ),
                            None => (
                                Some(NormValue::Number(*x)),
                                Some(u.to_owned()),
                                raw.clone(),
                                Some(u.to_owned()),
                                Some(Held::UnexpectedUnit),
                            ),
                        }
                    }
                }
            }
            Some(ObsValue::Interval {
                comparator,
                low,
                high,
            }) => {
                // An open-ended result travels as written ("<5"); a closed
                // interval as "low-high".
                let text = raw
                    .clone()
                    .unwrap_or_else(|| match (comparator, low, high) {
                        (Some(c), _, _) => {
                            let bound = low.or(*high).map(fmt_number).unwrap_or_default();
                            let c = serde_json::to_value(c)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default();
                            format!("{c}{bound}")
                        }
                        (None, l, h) => format!(
                            "{}-{}",
                            l.map(fmt_number).unwrap_or_default(),
                            h.map(fmt_number).unwrap_or_default()
                        ),
                    });
                let held = (self.require_unit && unit.is_none()).then_some(Held::MissingUnit);
                (Some(NormValue::Text(text)), unit.clone(), None, None, held)
            }
            Some(ObsValue::Boolean(b)) => {
                (Some(NormValue::Text(b.to_string())), None, None, None, None)
            }
            Some(ObsValue::Coded(c)) => (
                Some(NormValue::Text(c.code.clone())),
                None,
                None,
                None,
                None,
            ),
            // A textual result may carry free text: it never leaves the daemon.
            Some(ObsValue::Text(_)) | None => (None, unit.clone(), None, None, None),
        }
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
        let (value, unit, value_raw, unit_raw, mut held) = match &rec.body {
            RecordBody::LabResult(o) | RecordBody::Measurement(o) => {
                sel.normalise(&o.value, &o.value_raw, &o.unit)
            }
            _ => (None, None, None, None, None),
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
}
