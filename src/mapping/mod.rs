//! Mappings: a register's feed described as data (`mappings/*.toml`) —
//! who belongs to its cohort, which records of cohort members go in, how each
//! output column is computed, the output format and the mapping's version.
//! [`load`] parses and validates a file into a compiled [`Mapping`], naming
//! file, line and field for every problem; [`eval`] applies it to records.
//!
//! No register-specific Rust lives here: the diabetes register and the
//! vaccination feed are two files run by the same engine. This module does
//! not touch the store, keys or policy.

pub mod aggregate;
pub mod eval;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::config::Problem;
use crate::feed::{ColumnType, Format};
use crate::record::{MedicationEvent, RecordKind};

pub use eval::{Held, Selected};

// ---------------------------------------------------------------- raw shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    mapping: RawHeader,
    cohort: RawCohort,
    #[serde(default)]
    select: Vec<RawSelect>,
    #[serde(default)]
    column: Vec<RawColumn>,
    /// Statistics instead of rows (see [`aggregate`]).
    aggregate: Option<aggregate::RawAggregate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: String,
    format: Spanned<String>,
    lookback_years: Spanned<u32>,
    #[serde(default)]
    sensitive_documents: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCohort {
    /// Everyone with a hetu belongs (a feed of all people's records of a kind).
    #[serde(default)]
    everyone: bool,
    #[serde(default)]
    any: Vec<RawMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    kind: Spanned<String>,
    system: Option<Spanned<String>>,
    #[serde(default)]
    codes: Vec<Spanned<String>>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    item: Spanned<String>,
    kind: Spanned<String>,
    system: Option<Spanned<String>>,
    #[serde(default)]
    codes: Vec<Spanned<String>>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
    /// The unit values are delivered in; others need a conversion.
    unit: Option<Spanned<String>>,
    /// Numeric values without a unit are held (never guessed). Default true.
    require_unit: Option<bool>,
    #[serde(default)]
    convert: Vec<RawConvert>,
    /// The value forms delivered (number, censored, coded, boolean, none);
    /// any other form is held with its reason. Default: number.
    #[serde(default)]
    accept: Vec<Spanned<String>>,
    /// g/mol: bridges mass and substance concentrations (mg/dL ↔ mmol/L).
    molar_mass: Option<Spanned<f64>>,
    /// Decimals a value converted by the unit table is rounded to (half
    /// away from zero); values already in the item's unit are left as written.
    decimals: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConvert {
    from: Spanned<String>,
    #[serde(default)]
    offset: f64,
    factor: f64,
    round: Option<Spanned<String>>,
    #[serde(default)]
    decimals: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    value: Spanned<String>,
    /// The statute that requires this column even for people under
    /// turvakielto (address and municipality columns are otherwise
    /// suppressed for them).
    statute: Option<Spanned<String>>,
}

// ---------------------------------------------------------- compiled form

/// What a feed does with documents flagged `sensitiveDocument` or carrying a
/// `basisForNondisclosure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensitivePolicy {
    /// Deliver them (the statutory register feed).
    Include,
    /// Hold their records back with the reason `sensitive_document`.
    Hold,
}

/// A code pattern: exact, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodePattern {
    Exact(String),
    Prefix(String),
}

impl CodePattern {
    fn parse(s: &str) -> CodePattern {
        match s.strip_suffix('*') {
            Some(p) => CodePattern::Prefix(p.to_owned()),
            None => CodePattern::Exact(s.to_owned()),
        }
    }

    pub fn matches(&self, code: &str) -> bool {
        match self {
            CodePattern::Exact(c) => c == code,
            CodePattern::Prefix(p) => code.starts_with(p.as_str()),
        }
    }
}

/// Which records a cohort rule or a selector takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub kind: RecordKind,
    /// Canonical OID; `None` matches any system.
    pub system: Option<String>,
    /// Empty matches any code.
    pub codes: Vec<CodePattern>,
    /// Medication events; empty matches any.
    pub events: Vec<MedicationEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Keep the converted value as computed.
    None,
    HalfAwayFromZero,
}

/// `to = (from + offset) × factor`, then rounded to `decimals`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub from_unit: String,
    pub offset: f64,
    pub factor: f64,
    pub round: Rounding,
    pub decimals: u32,
}

/// A form an observation's value can take, as a mapping item accepts it.
/// A text result is never delivered (it may be free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueForm {
    /// A number (possibly converted to the item's unit).
    Number,
    /// A one-sided bound with its comparator (`<5`, `>130`): delivered as
    /// the limit in the value column and the comparator beside it.
    Censored,
    /// A coded result: its code in the value column.
    Coded,
    /// A boolean result: `true` / `false` in the value column.
    Boolean,
    /// No value at all (an exam recorded as done).
    None,
}

impl ValueForm {
    const ALL: &'static [(ValueForm, &'static str)] = &[
        (ValueForm::Number, "number"),
        (ValueForm::Censored, "censored"),
        (ValueForm::Coded, "coded"),
        (ValueForm::Boolean, "boolean"),
        (ValueForm::None, "none"),
    ];

    fn parse(s: &str) -> Option<ValueForm> {
        ValueForm::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub item: String,
    pub matcher: Matcher,
    pub unit: Option<String>,
    pub require_unit: bool,
    pub conversions: Vec<Conversion>,
    /// Value forms delivered; the rest are held.
    pub accept: Vec<ValueForm>,
    /// g/mol, for conversions between mass and substance concentrations.
    pub molar_mass: Option<f64>,
    /// Rounding of values converted through the unit table.
    pub decimals: Option<u32>,
}

/// What a column is computed from: a closed set, checked against the
/// column's declared type when the mapping is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expr {
    /// The person as the feed identifies them: pseudonym or hetu.
    PersonId,
    PersonBirthYear,
    PersonBirthDate,
    PersonSex,
    DocumentController,
    DocumentControllerId,
    DocumentMunicipality,
    /// The home municipality generalised to its region (maakunta).
    DocumentRegion,
    DocumentServiceEvent,
    DocumentSensitive,
    RecordItem,
    RecordKind,
    RecordSystem,
    RecordCode,
    RecordSymptomCode,
    RecordDate,
    RecordMonth,
    RecordValue,
    RecordComparator,
    RecordUnit,
    RecordValueRaw,
    RecordUnitRaw,
    RecordEvent,
    RecordPackage,
}

impl Expr {
    /// Every expression, its name in mapping files, and the column types it
    /// can fill.
    pub const ALL: &'static [(Expr, &'static str, &'static [ColumnType])] = &[
        (Expr::PersonId, "person.id", &[ColumnType::Text]),
        (
            Expr::PersonBirthYear,
            "person.birth_year",
            &[ColumnType::Integer],
        ),
        (
            Expr::PersonBirthDate,
            "person.birth_date",
            &[ColumnType::Date],
        ),
        (Expr::PersonSex, "person.sex", &[ColumnType::Text]),
        (
            Expr::DocumentController,
            "document.controller",
            &[ColumnType::Text],
        ),
        (
            Expr::DocumentControllerId,
            "document.controller_id",
            &[ColumnType::Text],
        ),
        (
            Expr::DocumentMunicipality,
            "document.municipality",
            &[ColumnType::Text],
        ),
        (Expr::DocumentRegion, "document.region", &[ColumnType::Text]),
        (
            Expr::DocumentServiceEvent,
            "document.service_event",
            &[ColumnType::Text],
        ),
        (
            Expr::DocumentSensitive,
            "document.sensitive",
            &[ColumnType::Boolean],
        ),
        (Expr::RecordItem, "record.item", &[ColumnType::Text]),
        (Expr::RecordKind, "record.kind", &[ColumnType::Text]),
        (Expr::RecordSystem, "record.system", &[ColumnType::Text]),
        (Expr::RecordCode, "record.code", &[ColumnType::Text]),
        (
            Expr::RecordSymptomCode,
            "record.symptom_code",
            &[ColumnType::Text],
        ),
        (
            Expr::RecordDate,
            "record.date",
            &[ColumnType::Date, ColumnType::Text],
        ),
        (Expr::RecordMonth, "record.month", &[ColumnType::Text]),
        (
            Expr::RecordValue,
            "record.value",
            &[ColumnType::Number, ColumnType::Text],
        ),
        (
            Expr::RecordComparator,
            "record.comparator",
            &[ColumnType::Text],
        ),
        (Expr::RecordUnit, "record.unit", &[ColumnType::Text]),
        (
            Expr::RecordValueRaw,
            "record.value_raw",
            &[ColumnType::Text],
        ),
        (Expr::RecordUnitRaw, "record.unit_raw", &[ColumnType::Text]),
        (Expr::RecordEvent, "record.event", &[ColumnType::Text]),
        (Expr::RecordPackage, "record.package", &[ColumnType::Text]),
    ];

    fn parse(s: &str) -> Option<(Expr, &'static [ColumnType])> {
        Expr::ALL
            .iter()
            .find(|(_, name, _)| *name == s)
            .map(|(e, _, t)| (*e, *t))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub expr: Expr,
    /// A statute requiring the column even under turvakielto.
    pub statute: Option<String>,
}

impl Expr {
    /// Whether the value says where a person lives: suppressed for people
    /// under turvakielto unless the column names a statute requiring it.
    pub fn locates_person(self) -> bool {
        matches!(self, Expr::DocumentMunicipality | Expr::DocumentRegion)
    }
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub description: String,
    /// SHA-256 of the mapping file's bytes (the manifest carries it).
    pub sha256: String,
    pub format: Format,
    pub lookback_years: u32,
    pub sensitive: SensitivePolicy,
    pub cohort_everyone: bool,
    pub cohort: Vec<Matcher>,
    pub selects: Vec<Select>,
    /// The rows' columns: delivered by a row feed, the statistics' inputs
    /// of an aggregate feed.
    pub columns: Vec<Column>,
    /// An aggregate feed's tables; `None` for a row feed.
    pub aggregate: Option<aggregate::Aggregate>,
}

impl Mapping {
    /// Indexes of the columns suppressed for people under turvakielto.
    pub fn safety_columns(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.expr.locates_person() && c.statute.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    /// The delivered columns, after `record_id` and `op`.
    pub fn feed_columns(&self) -> Vec<crate::feed::Column> {
        if let Some(a) = &self.aggregate {
            return a.output_columns();
        }
        self.columns
            .iter()
            .map(|c| crate::feed::Column {
                name: c.name.clone(),
                ty: c.ty,
            })
            .collect()
    }
}

// -------------------------------------------------------------- validation

use crate::config::Collector as Ctx;

/// Reads and validates a mapping file.
pub fn load(path: &Path) -> Result<Mapping, Vec<Problem>> {
    let bytes = std::fs::read(path).map_err(|e| {
        vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            field: "-".into(),
            message: format!("cannot read mapping: {e}"),
        }]
    })?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| {
        vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            field: "-".into(),
            message: "mapping is not UTF-8".into(),
        }]
    })?;
    let mut m = parse(&text, path)?;
    m.sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(m)
}

const KNOWN_KINDS: &str = "diagnosis, lab_result, measurement, medication, vaccination, procedure";

fn kind_of(s: &Spanned<String>, field: &str, cx: &mut Ctx<'_>) -> Option<RecordKind> {
    match RecordKind::parse(s.get_ref()) {
        Some(RecordKind::Prohibition) | None => {
            cx.at(
                s.span(),
                field,
                format!("unknown record kind (known: {KNOWN_KINDS})"),
            );
            None
        }
        Some(k) => Some(k),
    }
}

fn system_of(s: &Option<Spanned<String>>, field: &str, cx: &mut Ctx<'_>) -> Option<String> {
    let s = s.as_ref()?;
    let table = crate::codes::default_table();
    let name = s.get_ref();
    if let Some(sys) = table.by_name(name) {
        return Some(sys.oid.clone());
    }
    if crate::codes::is_oid(name) {
        return Some(table.normalise(name).to_owned());
    }
    cx.at(
        s.span(),
        field,
        "neither a known code-system name (config/code-systems.toml) nor an OID",
    );
    None
}

fn matcher(
    kind: &Spanned<String>,
    system: &Option<Spanned<String>>,
    codes: &[Spanned<String>],
    events: &[Spanned<String>],
    section: &str,
    cx: &mut Ctx<'_>,
) -> Option<Matcher> {
    let k = kind_of(kind, &format!("{section}.kind"), cx);
    let sys = system_of(system, &format!("{section}.system"), cx);
    let mut pats = Vec::new();
    for c in codes {
        let s = c.get_ref().trim();
        if s.is_empty() || s == "*" || s[..s.len().saturating_sub(1)].contains('*') {
            cx.at(
                c.span(),
                &format!("{section}.codes"),
                "a code is exact, or a non-empty prefix ending in one '*'",
            );
        }
        pats.push(CodePattern::parse(s));
    }
    let mut evs = Vec::new();
    for e in events {
        match parse_event(e.get_ref()) {
            Some(ev) => evs.push(ev),
            None => cx.at(
                e.span(),
                &format!("{section}.events"),
                "unknown medication event (prescription, dispensing, dispensing_invalidation, dispensing_correction, prescription_centre_other, statement, administration)",
            ),
        }
    }
    if !evs.is_empty() && k.is_some_and(|k| k != RecordKind::Medication) {
        cx.at(
            kind.span(),
            &format!("{section}.events"),
            "events apply to medication only",
        );
    }
    Some(Matcher {
        kind: k?,
        system: sys.or(None),
        codes: pats,
        events: evs,
    })
}

fn parse_event(s: &str) -> Option<MedicationEvent> {
    MedicationEvent::deserialize(
        serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
    )
    .ok()
}

fn column_type(s: &str) -> Option<ColumnType> {
    match s {
        "text" => Some(ColumnType::Text),
        "integer" => Some(ColumnType::Integer),
        "number" => Some(ColumnType::Number),
        "date" => Some(ColumnType::Date),
        "boolean" => Some(ColumnType::Boolean),
        _ => None,
    }
}

/// Parses and validates mapping text (as if read from `path`).
pub fn parse(text: &str, path: &Path) -> Result<Mapping, Vec<Problem>> {
    let mut cx = Ctx::new(path, text);
    let raw: RawMapping = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            cx.at(e.span().unwrap_or(0..0), "-", e.message().to_owned());
            return Err(cx.problems);
        }
    };
    let h = &raw.mapping;
    if h.name.get_ref().is_empty() {
        cx.at(h.name.span(), "mapping.name", "must not be empty");
    }
    if h.version.get_ref().is_empty() {
        cx.at(h.version.span(), "mapping.version", "must not be empty");
    }
    let format = match h.format.get_ref().as_str() {
        "csv" => Some(Format::Csv),
        "jsonl" => Some(Format::Jsonl),
        "xml" => {
            cx.at(
                h.format.span(),
                "mapping.format",
                "xml output is not supported yet (csv, jsonl)",
            );
            None
        }
        _ => {
            cx.at(h.format.span(), "mapping.format", "must be csv or jsonl");
            None
        }
    };
    if *h.lookback_years.get_ref() == 0 {
        cx.at(
            h.lookback_years.span(),
            "mapping.lookback_years",
            "must be at least 1",
        );
    }
    let sensitive = match h
        .sensitive_documents
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None => {
            cx.at(
                h.name.span(),
                "mapping.sensitive_documents",
                "every mapping must state whether it takes sensitive documents (\"include\" or \"hold\")",
            );
            None
        }
        Some(("include", _)) => Some(SensitivePolicy::Include),
        Some(("hold", _)) => Some(SensitivePolicy::Hold),
        Some((_, span)) => {
            cx.at(
                span,
                "mapping.sensitive_documents",
                "must be \"include\" or \"hold\"",
            );
            None
        }
    };

    let mut cohort = Vec::new();
    for r in &raw.cohort.any {
        if let Some(m) = matcher(
            &r.kind,
            &r.system,
            &r.codes,
            &r.events,
            "cohort.any",
            &mut cx,
        ) {
            cohort.push(m);
        }
    }
    if !raw.cohort.everyone && raw.cohort.any.is_empty() {
        cx.at(
            h.name.span(),
            "cohort",
            "a cohort needs at least one [[cohort.any]] rule, or everyone = true",
        );
    }

    let mut selects = Vec::new();
    for s in &raw.select {
        let m = matcher(&s.kind, &s.system, &s.codes, &s.events, "select", &mut cx);
        let mut conversions = Vec::new();
        for c in &s.convert {
            let round = match c.round.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
                None | Some(("none", _)) => Rounding::None,
                Some(("half_away_from_zero", _)) => Rounding::HalfAwayFromZero,
                Some((_, span)) => {
                    cx.at(
                        span,
                        "select.convert.round",
                        "must be \"none\" or \"half_away_from_zero\"",
                    );
                    Rounding::None
                }
            };
            if !c.factor.is_finite() || c.factor == 0.0 || !c.offset.is_finite() {
                cx.at(
                    c.from.span(),
                    "select.convert.factor",
                    "factor must be a non-zero number",
                );
            }
            if s.unit.is_none() {
                cx.at(
                    c.from.span(),
                    "select.unit",
                    "a conversion needs the target unit",
                );
            }
            conversions.push(Conversion {
                from_unit: c.from.get_ref().clone(),
                offset: c.offset,
                factor: c.factor,
                round,
                decimals: c.decimals,
            });
        }
        if selects.iter().any(|x: &Select| &x.item == s.item.get_ref()) {
            cx.at(s.item.span(), "select.item", "duplicate item name");
        }
        let observation = m
            .as_ref()
            .is_some_and(|m| matches!(m.kind, RecordKind::LabResult | RecordKind::Measurement));
        if !observation
            && m.is_some()
            && (!s.accept.is_empty() || s.molar_mass.is_some() || s.decimals.is_some())
        {
            cx.at(
                s.kind.span(),
                "select.accept",
                "accept, molar_mass and decimals apply to lab_result and measurement items only",
            );
        }
        let mut accept = Vec::new();
        for a in &s.accept {
            match ValueForm::parse(a.get_ref()) {
                Some(f) if !accept.contains(&f) => accept.push(f),
                Some(_) => cx.at(a.span(), "select.accept", "listed twice"),
                None => cx.at(
                    a.span(),
                    "select.accept",
                    "unknown value form (number, censored, coded, boolean, none; a text result is never delivered)",
                ),
            }
        }
        if s.accept.is_empty() {
            accept.push(ValueForm::Number);
        }
        let molar_mass = s.molar_mass.as_ref().map(|m| {
            let v = *m.get_ref();
            if !(v.is_finite() && v > 0.0) {
                cx.at(
                    m.span(),
                    "select.molar_mass",
                    "must be a positive number (g/mol)",
                );
            }
            if s.unit.is_none() {
                cx.at(
                    m.span(),
                    "select.unit",
                    "a molar mass needs the item's unit",
                );
            }
            v
        });
        if let Some(u) = &s.unit
            && (molar_mass.is_some() || s.decimals.is_some())
            && crate::units::default_table().lookup(u.get_ref()).is_none()
        {
            cx.at(
                u.span(),
                "select.unit",
                "not in the unit table (config/units.toml): nothing converts to it",
            );
        }
        if let Some(m) = m {
            selects.push(Select {
                item: s.item.get_ref().clone(),
                matcher: m,
                unit: s.unit.as_ref().map(|u| u.get_ref().clone()),
                require_unit: s.require_unit.unwrap_or(true),
                conversions,
                accept,
                molar_mass,
                decimals: s.decimals,
            });
        }
    }
    if raw.select.is_empty() {
        cx.at(
            h.name.span(),
            "select",
            "a mapping needs at least one [[select]]",
        );
    }

    let mut columns = Vec::new();
    for c in &raw.column {
        let name = c.name.get_ref();
        if name == "record_id" || name == "op" {
            cx.at(
                c.name.span(),
                "column.name",
                "record_id and op are written by regfeed itself",
            );
        }
        if columns.iter().any(|x: &Column| &x.name == name) {
            cx.at(c.name.span(), "column.name", "duplicate column name");
        }
        let ty = column_type(c.ty.get_ref());
        if ty.is_none() {
            cx.at(
                c.ty.span(),
                "column.type",
                "must be text, integer, number, date or boolean",
            );
        }
        let expr = Expr::parse(c.value.get_ref());
        match (&expr, ty) {
            (None, _) => {
                let known: Vec<&str> = Expr::ALL.iter().map(|(_, n, _)| *n).collect();
                cx.at(
                    c.value.span(),
                    "column.value",
                    format!("unknown value (known: {})", known.join(", ")),
                );
            }
            (Some((_, types)), Some(t)) if !types.contains(&t) => cx.at(
                c.ty.span(),
                "column.type",
                format!("{} cannot fill a column of this type", c.value.get_ref()),
            ),
            _ => {}
        }
        if let (Some((e, _)), Some(t)) = (expr, ty) {
            let statute = c.statute.as_ref().map(|s| s.get_ref().trim().to_owned());
            if let Some(st) = &c.statute
                && st.get_ref().trim().is_empty()
            {
                cx.at(
                    st.span(),
                    "column.statute",
                    "must name the statute (or be left out)",
                );
            }
            columns.push(Column {
                name: name.clone(),
                ty: t,
                expr: e,
                statute,
            });
        }
    }
    if raw.column.is_empty() {
        cx.at(
            h.name.span(),
            "column",
            "a mapping needs at least one [[column]]",
        );
    }

    let aggregate = raw.aggregate.as_ref().and_then(|a| {
        let items: Vec<String> = selects.iter().map(|s| s.item.clone()).collect();
        aggregate::compile(a, &columns, &items, &mut cx)
    });

    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    Ok(Mapping {
        path: path.to_path_buf(),
        name: h.name.get_ref().clone(),
        version: h.version.get_ref().clone(),
        description: h.description.clone(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        format: format.ok_or_else(Vec::new)?,
        lookback_years: *h.lookback_years.get_ref(),
        sensitive: sensitive.ok_or_else(Vec::new)?,
        cohort_everyone: raw.cohort.everyone,
        cohort,
        selects,
        columns,
        aggregate,
    })
}
