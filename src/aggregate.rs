//! Statistics tables with small-cell suppression: the cells of one period of
//! an aggregate feed, computed from its input rows (the rows its mapping
//! makes, as a row feed would deliver them).
//!
//! **The table.** Each person falls in exactly one cell per period: their
//! dimension values are those of their latest input row in the period. Every
//! combination of dimensions replaced by [`TOTAL`] is a cell too (the
//! margins), so every count is published at every level of aggregation.
//! Cells without a person are not published (a structural zero).
//!
//! **Disclosure control**, for each count measure separately:
//! - *primary*: a count from 1 to k−1 is hidden; so is a count whose
//!   difference to the count it is part of (`within`) is from 1 to k−1
//!   (8 of 10 measured at target would show that 2 are not);
//! - *complementary*: the published counts of the table, zeros included,
//!   and its margin equations (a margin is the sum of its cells along one
//!   dimension) must leave every hidden count undetermined. Whether a
//!   hidden count is determined is decided by linear algebra: it is iff its
//!   unit vector lies in the row space of the margin equations restricted to
//!   the hidden cells (reduced row echelon form). While one is, the smallest
//!   published non-zero count on one of its margin lines is hidden too.
//! - every measure computed from a hidden count (a share, a mean, a median)
//!   is hidden, and so is a mean or median of fewer than k values.
//!
//! The whole table of a period is computed again whenever an input row of
//! that period changes, and published as the difference to what was
//! published before (`pipeline`), so the register's current table for a
//! period is always one this module checked as a whole.
//!
//! This module reads no store and writes no log: nothing below k leaves it
//! except as [`Cell::values`] with the hidden measures null.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::feed::Value;
use crate::mapping::aggregate::{Aggregate, Condition, MeasureKind, PeriodUnit, TOTAL, UNKNOWN};

/// One input row: a row the aggregate's mapping made for a person.
#[derive(Debug, Clone)]
pub struct InputRow {
    pub record_id: String,
    pub person: String,
    /// The mapping's columns, as JSON values (`pipeline::row_json`).
    pub values: Vec<serde_json::Value>,
}

/// One published cell of a period's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Dimension values, [`TOTAL`] for a margin.
    pub dims: Vec<String>,
    /// One value per measure; `Null` where hidden (or undefined).
    pub measures: Vec<Value>,
    /// A count of this cell is hidden because it is small.
    pub primary: bool,
    /// A count of this cell is hidden, for whatever reason.
    pub suppressed: bool,
}

/// A period's table, cells in a fixed order (by dimension values).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub cells: Vec<Cell>,
}

impl Table {
    /// Cells with a count hidden because it is small, and cells with a
    /// count hidden only to protect another.
    pub fn hidden(&self) -> (u64, u64) {
        let primary = self.cells.iter().filter(|c| c.primary).count() as u64;
        let all = self.cells.iter().filter(|c| c.suppressed).count() as u64;
        (primary, all - primary)
    }
}

/// The period an input row falls in, from its date column.
pub fn period_of(agg: &Aggregate, values: &[serde_json::Value]) -> Option<String> {
    values
        .get(agg.date_column)
        .and_then(|v| v.as_str())
        .and_then(|d| agg.period.of(d))
}

fn text_of(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn age_band(bands: &[i64], birth_year: Option<i64>, year: Option<i64>) -> String {
    let (Some(b), Some(y)) = (birth_year, year) else {
        return UNKNOWN.to_owned();
    };
    let age = y - b;
    if age < 0 {
        return UNKNOWN.to_owned();
    }
    let i = bands.iter().rposition(|&lo| lo <= age).unwrap_or(0);
    match bands.get(i + 1) {
        Some(next) => format!("{}-{}", bands[i], next - 1),
        None => format!("{}+", bands[i]),
    }
}

/// What one person contributes to their cell.
#[derive(Default, Clone)]
struct Contribution {
    counts: Vec<u64>,
    /// Per mean/median measure: the person's value, if exact.
    values: Vec<Option<f64>>,
}

/// The sums of one cell before suppression.
#[derive(Default, Clone)]
struct Sums {
    counts: Vec<u64>,
    values: Vec<Vec<f64>>,
}

fn row_date(r: &InputRow, agg: &Aggregate) -> String {
    text_of(r.values.get(agg.date_column)).unwrap_or_default()
}

fn row_item<'a>(r: &'a InputRow, agg: &Aggregate) -> Option<&'a str> {
    agg.item_column
        .and_then(|i| r.values.get(i))
        .and_then(|v| v.as_str())
}

/// A row's value and comparator (`None` for an exact value).
fn row_value(r: &InputRow, agg: &Aggregate, col: usize) -> Option<(f64, Option<String>)> {
    let v = r.values.get(col)?.as_f64()?;
    let cmp = agg
        .comparator_column
        .and_then(|i| r.values.get(i))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Some((v, cmp))
}

/// Whether a (possibly censored) value certainly meets the condition; an
/// undecidable one (`<60` for "below 53") does not.
fn meets(cond: Condition, value: f64, cmp: Option<&str>) -> bool {
    match (cond, cmp) {
        (Condition::Below(t), None) => value < t,
        (Condition::Below(t), Some("<")) => value <= t,
        (Condition::Below(t), Some("<=")) => value < t,
        (Condition::Below(_), Some(_)) => false,
        (Condition::AtLeast(t), None) => value >= t,
        (Condition::AtLeast(t), Some(">" | ">=")) => value >= t,
        (Condition::AtLeast(_), Some(_)) => false,
    }
}

fn contribution(agg: &Aggregate, rows: &[&InputRow]) -> Contribution {
    let measures = &agg.measures;
    let mut c = Contribution {
        counts: vec![0; measures.len()],
        values: vec![None; measures.len()],
    };
    // The latest row of an item: by date, then record id (a total order).
    let latest = |item: &str| -> Option<&InputRow> {
        rows.iter()
            .copied()
            .filter(|r| row_item(r, agg) == Some(item))
            .max_by(|a, b| {
                row_date(a, agg)
                    .cmp(&row_date(b, agg))
                    .then_with(|| a.record_id.cmp(&b.record_id))
            })
    };
    for (i, m) in measures.iter().enumerate() {
        match &m.kind {
            MeasureKind::Persons {
                item, condition, ..
            } => {
                let yes = match (item, condition) {
                    (None, _) => true,
                    (Some(item), None) => latest(item).is_some(),
                    (Some(item), Some((cond, col))) => latest(item)
                        .and_then(|r| row_value(r, agg, *col))
                        .is_some_and(|(v, cmp)| meets(*cond, v, cmp.as_deref())),
                };
                c.counts[i] = u64::from(yes);
            }
            MeasureKind::Events { item } => {
                c.counts[i] = rows
                    .iter()
                    .filter(|r| {
                        item.as_deref()
                            .is_none_or(|it| row_item(r, agg) == Some(it))
                    })
                    .count() as u64;
            }
            MeasureKind::Mean { item, value, .. } | MeasureKind::Median { item, value, .. } => {
                c.values[i] = latest(item)
                    .and_then(|r| row_value(r, agg, *value))
                    .and_then(|(v, cmp)| cmp.is_none().then_some(v));
            }
            MeasureKind::Share { .. } => {}
        }
    }
    c
}

/// Computes a period's table from its input rows.
pub fn table(agg: &Aggregate, period: &str, rows: &[InputRow]) -> Table {
    let year = PeriodUnit::year(period);
    let mut by_person: BTreeMap<&str, Vec<&InputRow>> = BTreeMap::new();
    for r in rows {
        by_person.entry(r.person.as_str()).or_default().push(r);
    }
    let n_dims = agg.dimensions.len();
    let n_measures = agg.measures.len();
    let mut cube: BTreeMap<Vec<String>, Sums> = BTreeMap::new();
    for prows in by_person.values() {
        let Some(last) = prows.iter().copied().max_by(|a, b| {
            row_date(a, agg)
                .cmp(&row_date(b, agg))
                .then_with(|| a.record_id.cmp(&b.record_id))
        }) else {
            continue;
        };
        let dims: Vec<String> = agg
            .dimensions
            .iter()
            .map(|d| match &d.age_bands {
                Some(bands) => {
                    let by = last.values.get(d.column).and_then(|v| v.as_i64());
                    age_band(bands, by, year)
                }
                None => text_of(last.values.get(d.column)).unwrap_or_else(|| UNKNOWN.to_owned()),
            })
            .collect();
        let c = contribution(agg, prows);
        // The person's cell and every margin above it.
        for mask in 0u32..(1 << n_dims) {
            let key: Vec<String> = dims
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    if mask & (1 << j) != 0 {
                        TOTAL.to_owned()
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let s = cube.entry(key).or_insert_with(|| Sums {
                counts: vec![0; n_measures],
                values: vec![Vec::new(); n_measures],
            });
            for i in 0..n_measures {
                s.counts[i] += c.counts[i];
                if let Some(v) = c.values[i] {
                    s.values[i].push(v);
                }
            }
        }
    }
    suppress(agg, cube)
}

fn suppress(agg: &Aggregate, cube: BTreeMap<Vec<String>, Sums>) -> Table {
    let k = agg.k;
    let keys: Vec<&Vec<String>> = cube.keys().collect();
    let index: HashMap<&Vec<String>, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let lines = margin_lines(&keys, &index, agg.dimensions.len());
    let n = keys.len();
    let sums: Vec<&Sums> = cube.values().collect();
    // hidden[m][cell], primary[cell]
    let mut hidden = vec![vec![false; n]; agg.measures.len()];
    let mut primary = vec![false; n];
    for (m, measure) in agg.measures.iter().enumerate() {
        if !measure.kind.is_count() {
            continue;
        }
        let within = match measure.kind {
            MeasureKind::Persons { within, .. } => within,
            _ => None,
        };
        let values: Vec<u64> = sums.iter().map(|s| s.counts[m]).collect();
        for c in 0..n {
            let small = |v: u64| (1..k).contains(&v);
            let complement = within.map(|w| sums[c].counts[w].saturating_sub(values[c]));
            if small(values[c]) || complement.is_some_and(small) {
                hidden[m][c] = true;
                primary[c] = true;
            }
        }
        complementary(&values, &lines, &keys, &mut hidden[m]);
    }
    let cells = (0..n)
        .map(|c| {
            let mut suppressed = false;
            let measures = agg
                .measures
                .iter()
                .enumerate()
                .map(|(m, measure)| {
                    let s = sums[c];
                    match &measure.kind {
                        MeasureKind::Persons { .. } | MeasureKind::Events { .. } => {
                            if hidden[m][c] {
                                suppressed = true;
                                Value::Null
                            } else {
                                Value::Integer(s.counts[m] as i64)
                            }
                        }
                        MeasureKind::Share { of, per, decimals } => {
                            if hidden[*of][c] || hidden[*per][c] || s.counts[*per] == 0 {
                                Value::Null
                            } else {
                                let x = s.counts[*of] as f64 / s.counts[*per] as f64;
                                Value::Number(round(x, *decimals))
                            }
                        }
                        MeasureKind::Mean {
                            count, decimals, ..
                        }
                        | MeasureKind::Median {
                            count, decimals, ..
                        } => {
                            let v = &s.values[m];
                            if hidden[*count][c] || (v.len() as u64) < k {
                                Value::Null
                            } else if matches!(measure.kind, MeasureKind::Mean { .. }) {
                                let mean = v.iter().sum::<f64>() / v.len() as f64;
                                Value::Number(round(mean, *decimals))
                            } else {
                                Value::Number(round(median(v), *decimals))
                            }
                        }
                    }
                })
                .collect();
            Cell {
                dims: keys[c].clone(),
                measures,
                primary: primary[c],
                suppressed,
            }
        })
        .collect();
    Table { cells }
}

fn round(x: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    let r = (x * f).abs().round() / f;
    if x < 0.0 { -r } else { r }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The margin equations of a cube: for every cell with a margin in
/// dimension j, that cell and the cells that sum to it (the same values
/// elsewhere, each concrete value in j). `(margin, parts)`.
fn margin_lines(
    keys: &[&Vec<String>],
    index: &HashMap<&Vec<String>, usize>,
    n_dims: usize,
) -> Vec<(usize, Vec<usize>)> {
    let mut values: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n_dims];
    for k in keys {
        for (j, v) in k.iter().enumerate() {
            if v != TOTAL {
                values[j].insert(v.as_str());
            }
        }
    }
    let mut lines = Vec::new();
    for (c, key) in keys.iter().enumerate() {
        for j in 0..n_dims {
            if key[j] != TOTAL {
                continue;
            }
            let mut part_key = (*key).clone();
            let parts: Vec<usize> = values[j]
                .iter()
                .filter_map(|v| {
                    part_key[j] = (*v).to_owned();
                    index.get(&part_key).copied()
                })
                .collect();
            lines.push((c, parts));
        }
    }
    lines
}

/// Hides further counts until no hidden count is determined by the
/// published ones and the margin equations.
fn complementary(
    values: &[u64],
    lines: &[(usize, Vec<usize>)],
    keys: &[&Vec<String>],
    hidden: &mut [bool],
) {
    // The lines each cell is on.
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); values.len()];
    for (l, (margin, parts)) in lines.iter().enumerate() {
        on[*margin].push(l);
        for p in parts {
            on[*p].push(l);
        }
    }
    let margins_of = |c: usize| keys[c].iter().filter(|v| *v == TOTAL).count();
    let cells_of = |l: usize| std::iter::once(lines[l].0).chain(lines[l].1.iter().copied());
    loop {
        let determined = determined(lines, hidden);
        let Some(&x) = determined.first() else {
            return;
        };
        // Where to hide one more: a line on which x is the only hidden
        // cell (it gives x away by itself), else any line of x, else any
        // line of a determined cell, else any line with a hidden cell. On
        // it, an inner cell before a margin, then the smallest published
        // count, zeros last; ties by order.
        let alone: Vec<usize> = on[x]
            .iter()
            .copied()
            .filter(|&l| cells_of(l).filter(|&c| hidden[c]).count() == 1)
            .collect();
        let of_determined: Vec<usize> = determined.iter().flat_map(|&d| on[d].clone()).collect();
        let with_hidden: Vec<usize> = (0..lines.len())
            .filter(|&l| cells_of(l).any(|c| hidden[c]))
            .collect();
        let pick = [alone, on[x].clone(), of_determined, with_hidden]
            .into_iter()
            .find_map(|ls| {
                ls.iter()
                    .flat_map(|&l| cells_of(l))
                    .filter(|&c| !hidden[c])
                    .min_by_key(|&c| (margins_of(c), values[c] == 0, values[c], c))
            });
        match pick {
            Some(c) => hidden[c] = true,
            // Every cell on a line with a hidden one is hidden: nothing
            // published is left that could give a hidden cell away.
            None => return,
        }
    }
}

/// The hidden cells whose values the margin equations determine, given
/// every published value: those whose unit vector is in the row space of
/// the equations restricted to the hidden cells.
pub fn determined(lines: &[(usize, Vec<usize>)], hidden: &[bool]) -> Vec<usize> {
    let vars: Vec<usize> = (0..hidden.len()).filter(|&c| hidden[c]).collect();
    if vars.is_empty() {
        return Vec::new();
    }
    let col: HashMap<usize, usize> = vars.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (margin, parts) in lines {
        let mut row = vec![0.0; vars.len()];
        let mut any = false;
        if let Some(&i) = col.get(margin) {
            row[i] += 1.0;
            any = true;
        }
        for p in parts {
            if let Some(&i) = col.get(p) {
                row[i] -= 1.0;
                any = true;
            }
        }
        if any {
            rows.push(row);
        }
    }
    let pivots = rref(&mut rows, vars.len());
    pivots
        .into_iter()
        .filter(|&(r, p)| {
            rows[r]
                .iter()
                .enumerate()
                .all(|(j, x)| j == p || x.abs() < EPS)
        })
        .map(|(_, p)| vars[p])
        .collect()
}

const EPS: f64 = 1e-9;

/// Reduced row echelon form in place; returns (row, pivot column) pairs.
fn rref(rows: &mut [Vec<f64>], n_cols: usize) -> Vec<(usize, usize)> {
    let mut pivots = Vec::new();
    let mut r = 0;
    for c in 0..n_cols {
        if r == rows.len() {
            break;
        }
        let Some(best) = (r..rows.len())
            .max_by(|&a, &b| rows[a][c].abs().total_cmp(&rows[b][c].abs()))
            .filter(|&i| rows[i][c].abs() > EPS)
        else {
            continue;
        };
        rows.swap(r, best);
        let p = rows[r][c];
        for x in rows[r].iter_mut() {
            *x /= p;
        }
        let pivot_row = rows[r].clone();
        for (i, row) in rows.iter_mut().enumerate() {
            if i != r && row[c].abs() > EPS {
                let f = row[c];
                for (x, y) in row.iter_mut().zip(&pivot_row) {
                    *x -= f * y;
                }
            }
        }
        pivots.push((r, c));
        r += 1;
    }
    pivots
}

#[cfg(test)]
mod tests;
