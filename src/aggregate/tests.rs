use super::*;
use crate::mapping::aggregate::{Dimension, Measure};

fn agg(k: u64) -> Aggregate {
    // Columns: 0 person, 1 birth_year, 2 sex, 3 municipality, 4 item,
    // 5 event_date, 6 value, 7 comparator.
    Aggregate {
        k,
        period: PeriodUnit::Year,
        date_column: 5,
        item_column: Some(4),
        comparator_column: Some(7),
        dimensions: vec![
            Dimension {
                name: "municipality".into(),
                column: 3,
                age_bands: None,
            },
            Dimension {
                name: "sex".into(),
                column: 2,
                age_bands: None,
            },
        ],
        measures: vec![
            Measure {
                name: "persons".into(),
                kind: MeasureKind::Persons {
                    item: None,
                    condition: None,
                    within: None,
                },
            },
            Measure {
                name: "measured".into(),
                kind: MeasureKind::Persons {
                    item: Some("hba1c".into()),
                    condition: None,
                    within: None,
                },
            },
            Measure {
                name: "at_target".into(),
                kind: MeasureKind::Persons {
                    item: Some("hba1c".into()),
                    condition: Some((Condition::Below(53.0), 6)),
                    within: Some(1),
                },
            },
            Measure {
                name: "share".into(),
                kind: MeasureKind::Share {
                    of: 2,
                    per: 1,
                    decimals: 3,
                },
            },
            Measure {
                name: "median".into(),
                kind: MeasureKind::Median {
                    item: "hba1c".into(),
                    value: 6,
                    count: 1,
                    decimals: 1,
                },
            },
        ],
    }
}

/// `n` people in (municipality, sex), each with one HbA1c row of `value`.
fn people(rows: &mut Vec<InputRow>, municipality: &str, sex: &str, n: usize, value: f64) {
    for _ in 0..n {
        let i = rows.len();
        rows.push(InputRow {
            record_id: format!("r{i:05}"),
            person: format!("p{i:05}"),
            values: vec![
                serde_json::json!(format!("p{i:05}")),
                serde_json::json!(1960),
                serde_json::json!(sex),
                serde_json::json!(municipality),
                serde_json::json!("hba1c"),
                serde_json::json!("2024-05-01"),
                serde_json::json!(value),
                serde_json::Value::Null,
            ],
        });
    }
}

fn cell<'a>(t: &'a Table, m: &str, s: &str) -> &'a Cell {
    t.cells
        .iter()
        .find(|c| c.dims == [m, s])
        .expect("cell present")
}

#[test]
fn periods_and_age_bands() {
    assert_eq!(PeriodUnit::Year.of("2024-05-31").as_deref(), Some("2024"));
    assert_eq!(
        PeriodUnit::Quarter.of("2024-05-31").as_deref(),
        Some("2024-Q2")
    );
    assert_eq!(
        PeriodUnit::Month.of("2024-05-31").as_deref(),
        Some("2024-05")
    );
    assert_eq!(PeriodUnit::Year.of("2024-02-30"), None);
    let bands = [0, 18, 40, 65, 75];
    assert_eq!(age_band(&bands, Some(2006), Some(2024)), "18-39");
    assert_eq!(age_band(&bands, Some(2007), Some(2024)), "0-17");
    assert_eq!(age_band(&bands, Some(1949), Some(2024)), "75+");
    assert_eq!(age_band(&bands, None, Some(2024)), UNKNOWN);
    assert_eq!(age_band(&bands, Some(2030), Some(2024)), UNKNOWN);
}

#[test]
fn censored_values_meet_a_condition_only_when_certain() {
    let below = Condition::Below(53.0);
    assert!(meets(below, 40.0, None));
    assert!(!meets(below, 53.0, None));
    assert!(meets(below, 53.0, Some("<")));
    assert!(!meets(below, 60.0, Some("<")));
    assert!(!meets(below, 20.0, Some(">")));
    let at_least = Condition::AtLeast(130.0);
    assert!(meets(at_least, 130.0, Some(">")));
    assert!(!meets(at_least, 130.0, Some("<")));
}

#[test]
fn a_small_cell_is_hidden_with_a_partner_on_each_of_its_lines() {
    let mut rows = Vec::new();
    people(&mut rows, "091", "female", 2, 40.0); // small
    people(&mut rows, "091", "male", 9, 40.0);
    people(&mut rows, "049", "female", 12, 40.0);
    people(&mut rows, "049", "male", 7, 40.0);
    let t = table(&agg(5), "2024", &rows);
    // 4 cells, 2 + 2 margins, 1 total.
    assert_eq!(t.cells.len(), 9);
    let small = cell(&t, "091", "female");
    assert!(small.primary && small.suppressed);
    assert_eq!(small.measures[0], Value::Null);
    // Its row (091) and column (female) each got a second hidden count,
    // and the smallest such: 091/male (9) and 049/female (12); the
    // rectangle closes with 049/male.
    assert_eq!(cell(&t, "091", "male").measures[0], Value::Null);
    assert_eq!(cell(&t, "049", "female").measures[0], Value::Null);
    assert_eq!(cell(&t, "049", "male").measures[0], Value::Null);
    // Margins stay published.
    assert_eq!(cell(&t, "091", TOTAL).measures[0], Value::Integer(11));
    assert_eq!(cell(&t, TOTAL, TOTAL).measures[0], Value::Integer(30));
    assert_eq!(t.hidden(), (1, 3));
}

#[test]
fn measures_of_a_hidden_count_are_hidden_and_a_small_complement_hides_a_count() {
    let mut rows = Vec::new();
    people(&mut rows, "091", "female", 8, 40.0);
    people(&mut rows, "091", "female", 2, 60.0); // 8 of 10 at target: 2 are not
    people(&mut rows, "091", "male", 10, 40.0);
    people(&mut rows, "049", "female", 10, 60.0);
    people(&mut rows, "049", "male", 10, 60.0);
    let t = table(&agg(5), "2024", &rows);
    let c = cell(&t, "091", "female");
    assert_eq!(c.measures[0], Value::Integer(10), "persons are not small");
    assert_eq!(c.measures[2], Value::Null, "8 at target would show 2 not");
    assert_eq!(c.measures[3], Value::Null, "share of a hidden count");
    assert_eq!(c.measures[4], Value::Number(40.0), "median of 10 values");
    assert!(c.primary);
    // No hidden at-target count is determined by the published ones.
    let keys: Vec<&Vec<String>> = t.cells.iter().map(|c| &c.dims).collect();
    let index: HashMap<&Vec<String>, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let lines = margin_lines(&keys, &index, 2);
    let hidden: Vec<bool> = t
        .cells
        .iter()
        .map(|c| c.measures[2] == Value::Null)
        .collect();
    assert!(hidden.iter().filter(|h| **h).count() >= 2);
    assert!(determined(&lines, &hidden).is_empty());
}

#[test]
fn determinacy_is_decided_by_the_margin_equations() {
    // A 2×2 table with margins: cells 0..4 = (a,x) (a,y) (b,x) (b,y),
    // 4 = (a,T), 5 = (b,T), 6 = (T,x), 7 = (T,y), 8 = (T,T).
    let lines = vec![
        (4, vec![0, 1]),
        (5, vec![2, 3]),
        (6, vec![0, 2]),
        (7, vec![1, 3]),
        (8, vec![4, 5]),
        (8, vec![6, 7]),
    ];
    let mut hidden = vec![false; 9];
    hidden[0] = true;
    assert_eq!(determined(&lines, &hidden), vec![0]);
    hidden[1] = true;
    // a,x and a,y hidden: column margins give each.
    let mut d = determined(&lines, &hidden);
    d.sort_unstable();
    assert_eq!(d, vec![0, 1]);
    hidden[2] = true;
    hidden[3] = true;
    assert!(determined(&lines, &hidden).is_empty());
}

#[test]
fn a_larger_k_hides_more() {
    let mut rows = Vec::new();
    people(&mut rows, "091", "female", 7, 40.0);
    people(&mut rows, "091", "male", 30, 40.0);
    people(&mut rows, "049", "female", 30, 40.0);
    people(&mut rows, "049", "male", 30, 40.0);
    let five = table(&agg(5), "2024", &rows);
    let ten = table(&agg(10), "2024", &rows);
    assert_eq!(cell(&five, "091", "female").measures[0], Value::Integer(7));
    assert_eq!(cell(&ten, "091", "female").measures[0], Value::Null);
    assert!(ten.hidden().0 > five.hidden().0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the counts, no hidden count of any measure is determined by
    /// the published counts and the margins, and no published count is
    /// from 1 to k−1.
    #[test]
    fn no_hidden_count_is_determined(
        counts in proptest::collection::vec(0usize..14, 12),
        k in 3u64..8,
    ) {
        let munis = ["091", "049", "092", "853"];
        let sexes = ["female", "male", "unknown"];
        let mut rows = Vec::new();
        for (i, n) in counts.iter().enumerate() {
            people(&mut rows, munis[i / 3], sexes[i % 3], *n, if i % 2 == 0 { 40.0 } else { 60.0 });
        }
        let t = table(&agg(k), "2024", &rows);
        let keys: Vec<&Vec<String>> = t.cells.iter().map(|c| &c.dims).collect();
        let index: HashMap<&Vec<String>, usize> =
            keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let lines = margin_lines(&keys, &index, 2);
        for m in [0usize, 1, 2] {
            let hidden: Vec<bool> = t.cells.iter().map(|c| c.measures[m] == Value::Null).collect();
            proptest::prop_assert!(determined(&lines, &hidden).is_empty());
            for c in &t.cells {
                if let Value::Integer(v) = c.measures[m] {
                    proptest::prop_assert!(v == 0 || v as u64 >= k);
                }
            }
        }
    }
}
