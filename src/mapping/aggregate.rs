//! An aggregate mapping's `[aggregate]` section: statistics instead of rows.
//!
//! The mapping's cohort, selectors and `[[column]]`s work as for a row feed,
//! but their rows stay in the store as the statistics' inputs; what is
//! delivered are cells: one per period and combination of dimension values,
//! margins ("total") included, each with the declared measures, small counts
//! hidden with complementary suppression (`crate::aggregate`).
//!
//! ```toml
//! [aggregate]
//! k = 5                         # counts 1..k-1 are never shown
//! period = "year"               # year, quarter or month, of date_column
//! date_column = "event_date"
//!
//! [[aggregate.dimension]]
//! name = "age_band"
//! column = "birth_year"
//! age_bands = [0, 18, 40, 65, 75]
//!
//! [[aggregate.measure]]
//! name = "hba1c_at_target"
//! kind = "persons"
//! item = "hba1c"
//! latest_below = 53
//! within = "hba1c_measured"
//! ```

use serde::Deserialize;
use toml::Spanned;

use super::Column;
use crate::config::Collector as Ctx;
use crate::feed::ColumnType;

/// The label of a margin: every value of its dimension together.
pub const TOTAL: &str = "total";
/// The label of a dimension value the inputs do not carry.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAggregate {
    k: Option<Spanned<i64>>,
    period: Spanned<String>,
    date_column: Spanned<String>,
    item_column: Option<Spanned<String>>,
    comparator_column: Option<Spanned<String>>,
    #[serde(default)]
    dimension: Vec<RawDimension>,
    #[serde(default)]
    measure: Vec<RawMeasure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    name: Spanned<String>,
    column: Spanned<String>,
    age_bands: Option<Spanned<Vec<i64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasure {
    name: Spanned<String>,
    kind: Spanned<String>,
    item: Option<Spanned<String>>,
    value_column: Option<Spanned<String>>,
    latest_below: Option<Spanned<f64>>,
    latest_at_least: Option<Spanned<f64>>,
    within: Option<Spanned<String>>,
    of: Option<Spanned<String>>,
    per: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
    decimals: Option<Spanned<u32>>,
}

/// How dates group into periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodUnit {
    Year,
    Quarter,
    Month,
}

impl PeriodUnit {
    /// The period of a `YYYY-MM-DD` date: `2024`, `2024-Q2`, `2024-05`.
    pub fn of(self, date: &str) -> Option<String> {
        let d = chrono::NaiveDate::parse_from_str(date.get(..10)?, "%Y-%m-%d").ok()?;
        use chrono::Datelike as _;
        Some(match self {
            PeriodUnit::Year => format!("{:04}", d.year()),
            PeriodUnit::Quarter => format!("{:04}-Q{}", d.year(), d.month0() / 3 + 1),
            PeriodUnit::Month => format!("{:04}-{:02}", d.year(), d.month()),
        })
    }

    /// The calendar year a period lies in (ages are counted at it).
    pub fn year(period: &str) -> Option<i64> {
        period.get(..4)?.parse().ok()
    }
}

/// A condition on a person's latest value of an item in the period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Below(f64),
    AtLeast(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    pub name: String,
    /// Index into the mapping's columns.
    pub column: usize,
    /// Lower bounds of age bands, ascending, from the column's birth year.
    pub age_bands: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MeasureKind {
    /// Distinct persons: all in the cell, or those with a record of `item`,
    /// or those whose latest value of `item` meets `condition`. A count:
    /// small values are hidden. `within`: a count this one is part of; their
    /// difference must not be small either.
    Persons {
        item: Option<String>,
        condition: Option<(Condition, usize)>,
        within: Option<usize>,
    },
    /// Records (of `item`, or all). A count.
    Events { item: Option<String> },
    /// `of / per`, two counts of the same cell; hidden when either is.
    Share {
        of: usize,
        per: usize,
        decimals: u32,
    },
    /// Of each person's latest (exact) value of `item`; hidden when `count`
    /// is, or when fewer than k values make it.
    Mean {
        item: String,
        value: usize,
        count: usize,
        decimals: u32,
    },
    Median {
        item: String,
        value: usize,
        count: usize,
        decimals: u32,
    },
}

impl MeasureKind {
    /// Whether the measure is a count, added up along every margin.
    pub fn is_count(&self) -> bool {
        matches!(
            self,
            MeasureKind::Persons { .. } | MeasureKind::Events { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub name: String,
    pub kind: MeasureKind,
}

/// A validated `[aggregate]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub k: u64,
    pub period: PeriodUnit,
    pub date_column: usize,
    pub item_column: Option<usize>,
    pub comparator_column: Option<usize>,
    pub dimensions: Vec<Dimension>,
    pub measures: Vec<Measure>,
}

impl Aggregate {
    /// The delivered columns, after `record_id` and `op`: `period`, each
    /// dimension, each measure, `suppressed`.
    pub fn output_columns(&self) -> Vec<crate::feed::Column> {
        let mut cols = vec![crate::feed::Column::new("period", ColumnType::Text)];
        for d in &self.dimensions {
            cols.push(crate::feed::Column::new(d.name.clone(), ColumnType::Text));
        }
        for m in &self.measures {
            let ty = if m.kind.is_count() {
                ColumnType::Integer
            } else {
                ColumnType::Number
            };
            cols.push(crate::feed::Column::new(m.name.clone(), ty));
        }
        cols.push(crate::feed::Column::new("suppressed", ColumnType::Boolean));
        cols
    }
}

/// The most dimensions a table may have: every combination of margins is
/// published (2^n cells per combination of values).
const MAX_DIMENSIONS: usize = 4;
/// The most measures of one table.
const MAX_MEASURES: usize = 16;

pub(super) fn compile(
    raw: &RawAggregate,
    columns: &[Column],
    items: &[String],
    cx: &mut Ctx<'_>,
) -> Option<Aggregate> {
    let before = cx.problems.len();
    let column = |name: &Spanned<String>,
                  field: &str,
                  types: &[ColumnType],
                  cx: &mut Ctx<'_>|
     -> Option<usize> {
        match columns.iter().position(|c| &c.name == name.get_ref()) {
            None => {
                cx.at(
                    name.span(),
                    field,
                    format!("no [[column]] is named {:?}", name.get_ref()),
                );
                None
            }
            Some(i) if !types.contains(&columns[i].ty) => {
                let want: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                cx.at(
                    name.span(),
                    field,
                    format!(
                        "column {:?} is {}; this needs {}",
                        name.get_ref(),
                        columns[i].ty.as_str(),
                        want.join(" or ")
                    ),
                );
                None
            }
            Some(i) => Some(i),
        }
    };
    let k = match raw.k.as_ref() {
        None => 5,
        Some(k) if (2..=1000).contains(k.get_ref()) => *k.get_ref() as u64,
        Some(k) => {
            cx.at(k.span(), "aggregate.k", "must be between 2 and 1000");
            5
        }
    };
    let period = match raw.period.get_ref().as_str() {
        "year" => PeriodUnit::Year,
        "quarter" => PeriodUnit::Quarter,
        "month" => PeriodUnit::Month,
        _ => {
            cx.at(
                raw.period.span(),
                "aggregate.period",
                "must be year, quarter or month",
            );
            PeriodUnit::Year
        }
    };
    let date_column = column(
        &raw.date_column,
        "aggregate.date_column",
        &[ColumnType::Date],
        cx,
    );
    let item_column = match &raw.item_column {
        Some(c) => column(c, "aggregate.item_column", &[ColumnType::Text], cx),
        None => columns.iter().position(|c| c.name == "item"),
    };
    let comparator_column = raw
        .comparator_column
        .as_ref()
        .and_then(|c| column(c, "aggregate.comparator_column", &[ColumnType::Text], cx));

    let mut dimensions = Vec::new();
    for d in &raw.dimension {
        let name = d.name.get_ref();
        if !is_column_name(name) {
            cx.at(
                d.name.span(),
                "aggregate.dimension.name",
                "must be lowercase letters, digits and _ (a column name)",
            );
        }
        if name == "period" || name == "suppressed" {
            cx.at(
                d.name.span(),
                "aggregate.dimension.name",
                "period and suppressed are written by regfeed itself",
            );
        }
        let types: &[ColumnType] = if d.age_bands.is_some() {
            &[ColumnType::Integer]
        } else {
            &[ColumnType::Text, ColumnType::Integer]
        };
        let col = column(&d.column, "aggregate.dimension.column", types, cx);
        let bands = d.age_bands.as_ref().map(|b| {
            let v = b.get_ref().clone();
            if v.is_empty() || v[0] != 0 || v.windows(2).any(|w| w[0] >= w[1]) || v.len() > 30 {
                cx.at(
                    b.span(),
                    "aggregate.dimension.age_bands",
                    "lower bounds of the bands: ascending, starting at 0, at most 30",
                );
            }
            v
        });
        if let Some(col) = col {
            dimensions.push(Dimension {
                name: name.clone(),
                column: col,
                age_bands: bands,
            });
        }
    }
    if raw.dimension.len() > MAX_DIMENSIONS {
        cx.at(
            raw.period.span(),
            "aggregate.dimension",
            format!("at most {MAX_DIMENSIONS} dimensions (every margin of them is published)"),
        );
    }

    // Measures may name earlier measures only (`within`, `of`, `per`, `count`).
    let mut measures: Vec<Measure> = Vec::new();
    for m in &raw.measure {
        let name = m.name.get_ref();
        if !is_column_name(name) {
            cx.at(
                m.name.span(),
                "aggregate.measure.name",
                "must be lowercase letters, digits and _ (a column name)",
            );
        }
        if measures.iter().any(|x| &x.name == name)
            || raw.dimension.iter().any(|d| d.name.get_ref() == name)
            || name == "period"
            || name == "suppressed"
        {
            cx.at(
                m.name.span(),
                "aggregate.measure.name",
                "duplicate column name",
            );
        }
        let item = |cx: &mut Ctx<'_>| -> Option<String> {
            let it = m.item.as_ref()?;
            if !items.contains(it.get_ref()) {
                cx.at(
                    it.span(),
                    "aggregate.measure.item",
                    format!("no [[select]] has item {:?}", it.get_ref()),
                );
            }
            if item_column.is_none() {
                cx.at(
                    it.span(),
                    "aggregate.item_column",
                    "an item needs the column that carries it (a column named item, or item_column)",
                );
            }
            Some(it.get_ref().clone())
        };
        let earlier = |r: &Option<Spanned<String>>,
                       field: &str,
                       counts_only: bool,
                       cx: &mut Ctx<'_>|
         -> Option<usize> {
            let r = r.as_ref()?;
            match measures.iter().position(|x| &x.name == r.get_ref()) {
                Some(i) if !counts_only || measures[i].kind.is_count() => Some(i),
                Some(_) => {
                    cx.at(
                        r.span(),
                        field,
                        "must name a count (kind persons or events)",
                    );
                    None
                }
                None => {
                    cx.at(
                        r.span(),
                        field,
                        format!("no earlier measure is named {:?}", r.get_ref()),
                    );
                    None
                }
            }
        };
        let need = |v: &Option<Spanned<String>>, what: &str, cx: &mut Ctx<'_>| {
            if v.is_none() {
                cx.at(
                    m.kind.span(),
                    &format!("aggregate.measure.{what}"),
                    format!("kind {} needs {what}", m.kind.get_ref()),
                );
            }
        };
        let value_col = m.value_column.as_ref().and_then(|c| {
            column(
                c,
                "aggregate.measure.value_column",
                &[ColumnType::Number],
                cx,
            )
        });
        let decimals = m.decimals.as_ref().map(|d| *d.get_ref()).unwrap_or(2);
        if decimals > 6 {
            cx.at(
                m.decimals
                    .as_ref()
                    .map(|d| d.span())
                    .unwrap_or(m.kind.span()),
                "aggregate.measure.decimals",
                "at most 6",
            );
        }
        let kind = match m.kind.get_ref().as_str() {
            "persons" => {
                let condition = match (&m.latest_below, &m.latest_at_least) {
                    (Some(_), Some(b)) => {
                        cx.at(
                            b.span(),
                            "aggregate.measure.latest_at_least",
                            "one condition per measure: latest_below or latest_at_least",
                        );
                        None
                    }
                    (Some(x), None) => Some(Condition::Below(*x.get_ref())),
                    (None, Some(x)) => Some(Condition::AtLeast(*x.get_ref())),
                    (None, None) => None,
                };
                let item = item(cx);
                if condition.is_some() {
                    need(&m.item, "item", cx);
                    need(&m.value_column, "value_column", cx);
                }
                Some(MeasureKind::Persons {
                    item,
                    condition: condition.zip(value_col),
                    within: earlier(&m.within, "aggregate.measure.within", true, cx),
                })
            }
            "events" => Some(MeasureKind::Events { item: item(cx) }),
            "share" => {
                need(&m.of, "of", cx);
                need(&m.per, "per", cx);
                let of = earlier(&m.of, "aggregate.measure.of", true, cx);
                let per = earlier(&m.per, "aggregate.measure.per", true, cx);
                of.zip(per)
                    .map(|(of, per)| MeasureKind::Share { of, per, decimals })
            }
            kind @ ("mean" | "median") => {
                need(&m.item, "item", cx);
                need(&m.value_column, "value_column", cx);
                need(&m.count, "count", cx);
                let item = item(cx);
                let count = earlier(&m.count, "aggregate.measure.count", true, cx);
                match (item, value_col, count) {
                    (Some(item), Some(value), Some(count)) if kind == "mean" => {
                        Some(MeasureKind::Mean {
                            item,
                            value,
                            count,
                            decimals,
                        })
                    }
                    (Some(item), Some(value), Some(count)) => Some(MeasureKind::Median {
                        item,
                        value,
                        count,
                        decimals,
                    }),
                    _ => None,
                }
            }
            _ => {
                cx.at(
                    m.kind.span(),
                    "aggregate.measure.kind",
                    "must be persons, events, share, mean or median",
                );
                None
            }
        };
        if let Some(kind) = kind {
            measures.push(Measure {
                name: name.clone(),
                kind,
            });
        }
    }
    if raw.measure.is_empty() {
        cx.at(
            raw.period.span(),
            "aggregate.measure",
            "an aggregate needs at least one [[aggregate.measure]]",
        );
    } else if !raw.measure.iter().any(|m| m.kind.get_ref() == "persons") {
        cx.at(
            raw.period.span(),
            "aggregate.measure",
            "an aggregate needs a persons count",
        );
    }
    if raw.measure.len() > MAX_MEASURES {
        cx.at(
            raw.period.span(),
            "aggregate.measure",
            format!("at most {MAX_MEASURES} measures"),
        );
    }
    if cx.problems.len() > before {
        return None;
    }
    Some(Aggregate {
        k,
        period,
        date_column: date_column?,
        item_column,
        comparator_column,
        dimensions,
        measures,
    })
}

fn is_column_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
