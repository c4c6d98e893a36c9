//! Aggregate (statistics) feeds, issue 17: a county's statistics on the data
//! it stores itself, with small cells suppressed.
//!
//! - The published table of every period is checked by an attacker's
//!   linear algebra, written here from the published rows alone (exact
//!   rational arithmetic, nothing of `regfeed::aggregate`): no hidden count
//!   can be recomputed from the published counts and margins, and no
//!   published count is from 1 to k−1; with k = 5 and k = 10.
//! - The golden table is computed here from the rows a row-level diabetes
//!   feed with the same scope and legal basis delivers, and every published
//!   value equals it.
//! - New documents of one year change only that year's cells; an objection
//!   takes its person out of the statistics (retracts and upserts).

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use regfeed::app::App;
use regfeed::feed::{self, Op, Value};
use regfeed::loaded::Config;
use regfeed::synth;

const PATIENTS: u32 = 1500;
const SEED: u64 = 20261208;
/// The county the demo's statistics feed is for (Pirkanmaa).
const COUNTY: &str = "org-32213086";
/// The year whose laboratory documents arrive late.
const LATE_YEAR: i32 = 2023;

/// The statistics feed of the tests: the shipped county mapping without the
/// municipality dimension (the row-level diabetes feed has no municipality
/// column to compute the golden from), taking sensitive documents as the
/// diabetes mapping does.
fn test_mapping(shipped: &str) -> String {
    let without_municipality = shipped.replace(
        "[[aggregate.dimension]]\nname = \"municipality\"\ncolumn = \"municipality\"\n\n",
        "",
    );
    assert_ne!(without_municipality, shipped, "the mapping changed shape");
    without_municipality.replace(
        "sensitive_documents = \"hold\"",
        "sensitive_documents = \"include\"",
    )
}

fn feed_toml(name: &str, mapping: &str, extra: &str) -> String {
    format!(
        "\n[[feeds]]\nname = \"{name}\"\nregister = \"{name}\"\nmapping = \"{mapping}\"\nsource = \"kanta-archive\"\nrecipient = \"pirkanmaa\"\nrecord_key = \"keys/{name}.record.key\"\ntest = true\nscope = \"recipient_controller\"\n{extra}\n[feeds.legal_basis]\npurpose = \"statistics\"\ngdpr_art6 = \"6.1.e\"\ngdpr_art9 = \"9.2.h\"\nchannel = \"direct\"\nidentity = \"pseudonym\"\ndiscloses_to_other_controller = false\nrecipient_controller = \"{COUNTY}\"\n\n[feeds.sink]\nkind = \"file_drop\"\ndir = \"delivered/{name}\"\n"
    )
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    late: PathBuf,
    corpus_docs: PathBuf,
    late_files: Vec<PathBuf>,
    app: App,
}

/// A corpus with the county's single-version laboratory documents of
/// [`LATE_YEAR`] held back in `late/`, and a config with three more feeds:
/// `county-rows` (the diabetes mapping, row level), `county-stats` (k = 5)
/// and `county-stats-k10`.
async fn world(database_url: Option<&str>) -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = synth::plan(PATIENTS, SEED);
    synth::write_corpus(&plan, &corpus).expect("corpus");
    let late = tmp.path().join("late");
    std::fs::create_dir_all(&late).expect("late folder");
    let mut versions: HashMap<&str, usize> = HashMap::new();
    for p in &plan.persons {
        for d in &p.docs {
            *versions.entry(d.set_id.as_str()).or_default() += 1;
        }
    }
    let county_org = regfeed::synth::plan::ORGS
        .iter()
        .position(|o| format!("org-{}", o.number) == COUNTY)
        .expect("county in the corpus");
    let mut late_files = Vec::new();
    for p in &plan.persons {
        for d in &p.docs {
            use chrono::Datelike as _;
            if d.view == "LAB"
                && d.org == Some(county_org)
                && d.effective.year() == LATE_YEAR
                && versions[d.set_id.as_str()] == 1
            {
                let from = synth::doc_path(&corpus, &d.id);
                let to = late.join(from.file_name().expect("name"));
                std::fs::rename(&from, &to).expect("hold back");
                late_files.push(to);
            }
        }
    }
    assert!(
        late_files.len() >= 5,
        "the corpus has laboratory documents of the county in {LATE_YEAR}"
    );
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &synth::docs_dir(&corpus))
        .expect("setup");
    let shipped = std::fs::read_to_string(setup.dir.join("mappings/county-statistics.toml"))
        .expect("shipped mapping");
    std::fs::write(
        setup.dir.join("mappings/county-test.toml"),
        test_mapping(&shipped),
    )
    .expect("test mapping");
    let mut text = std::fs::read_to_string(&setup.config).expect("config");
    text.push_str(&feed_toml("county-rows", "mappings/diabetes.toml", ""));
    text.push_str(&feed_toml("county-stats", "mappings/county-test.toml", ""));
    text.push_str(&feed_toml(
        "county-stats-k10",
        "mappings/county-test.toml",
        "small_cell_k = 10\n",
    ));
    std::fs::write(&setup.config, text).expect("config");
    for name in ["county-rows", "county-stats", "county-stats-k10"] {
        regfeed::identity::generate_key_file(&setup.dir.join(format!("keys/{name}.record.key")))
            .expect("record key");
    }
    let mut cfg = Config::load(&setup.config).expect("config validates");
    if let Some(url) = database_url {
        cfg.database_url = url.to_owned().into();
    }
    let app = App::open(cfg).await.expect("app");
    World {
        dir: setup.dir.clone(),
        late,
        corpus_docs: synth::docs_dir(&corpus),
        late_files,
        app,
        _tmp: tmp,
    }
}

/// Every batch of a feed delivered so far, in order: (seq, rows).
fn batches(w: &World, feed_name: &str) -> Vec<(u64, Vec<feed::Row>)> {
    let fc = w.app.cfg.feed(feed_name).expect("feed");
    let dir = w.dir.join("delivered").join(feed_name);
    let mut out = Vec::new();
    for seq in 1.. {
        let path = dir.join(format!("{feed_name}-{seq:08}.csv"));
        if !path.exists() {
            break;
        }
        let f = std::io::BufReader::new(std::fs::File::open(path).expect("batch"));
        out.push((
            seq,
            feed::csv::read(f, &fc.mapping.feed_columns()).expect("reads back"),
        ));
    }
    out
}

fn manifest(w: &World, feed_name: &str, seq: u64) -> serde_json::Value {
    let p = w
        .dir
        .join("delivered")
        .join(feed_name)
        .join(format!("{feed_name}-{seq:08}.manifest.json"));
    serde_json::from_str(&std::fs::read_to_string(p).expect("manifest")).expect("json")
}

/// The register's current table: record id → values.
fn current(batches: &[(u64, Vec<feed::Row>)]) -> BTreeMap<String, Vec<Value>> {
    let mut t = BTreeMap::new();
    for (_, rows) in batches {
        for r in rows {
            match r.op {
                Op::Upsert => {
                    t.insert(r.record_id.clone(), r.values.clone());
                }
                Op::Retract => {
                    assert!(t.remove(&r.record_id).is_some(), "retract of a held id");
                }
            }
        }
    }
    t
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => panic!("text expected, got {other:?}"),
    }
}

/// A published statistics row: (period, age band, sex) → measures by name.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    counts: BTreeMap<&'static str, Option<i64>>,
    numbers: BTreeMap<&'static str, Option<f64>>,
    suppressed: bool,
}

const COUNTS: [&str; 4] = [
    "persons",
    "hba1c_measured",
    "hba1c_at_target",
    "hba1c_tests",
];
const NUMBERS: [&str; 3] = ["hba1c_at_target_share", "hba1c_mean", "hba1c_median"];

type CellKey = (String, String, String);

fn published(w: &World, feed_name: &str) -> BTreeMap<CellKey, Published> {
    let fc = w.app.cfg.feed(feed_name).expect("feed");
    let cols: Vec<String> = fc
        .mapping
        .feed_columns()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let at = |name: &str| cols.iter().position(|c| c == name).expect("column");
    let mut out = BTreeMap::new();
    for v in current(&batches(w, feed_name)).into_values() {
        let key = (
            text(&v[at("period")]),
            text(&v[at("age_band")]),
            text(&v[at("sex")]),
        );
        let counts = COUNTS
            .iter()
            .map(|m| {
                (
                    *m,
                    match &v[at(m)] {
                        Value::Integer(i) => Some(*i),
                        Value::Null => None,
                        other => panic!("{m}: {other:?}"),
                    },
                )
            })
            .collect();
        let numbers = NUMBERS
            .iter()
            .map(|m| {
                (
                    *m,
                    match &v[at(m)] {
                        Value::Number(x) => Some(*x),
                        Value::Null => None,
                        other => panic!("{m}: {other:?}"),
                    },
                )
            })
            .collect();
        let suppressed = v[at("suppressed")] == Value::Bool(true);
        assert!(
            out.insert(
                key.clone(),
                Published {
                    counts,
                    numbers,
                    suppressed
                }
            )
            .is_none(),
            "one row per cell: {key:?}"
        );
    }
    out
}

// ------------------------------------------------------ the attacker's algebra

/// An exact fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Q(i128, i128);

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

impl Q {
    fn new(n: i128, d: i128) -> Q {
        let g = gcd(n, d).max(1);
        let s = if d < 0 { -1 } else { 1 };
        Q(s * n / g, s * d / g)
    }
    fn zero(self) -> bool {
        self.0 == 0
    }
    fn sub(self, o: Q) -> Q {
        Q::new(self.0 * o.1 - o.0 * self.1, self.1 * o.1)
    }
    fn mul(self, o: Q) -> Q {
        Q::new(self.0 * o.0, self.1 * o.1)
    }
    fn div(self, o: Q) -> Q {
        Q::new(self.0 * o.1, self.1 * o.0)
    }
}

/// The rank of a matrix, by exact Gaussian elimination.
fn rank(mut m: Vec<Vec<Q>>) -> usize {
    let cols = m.first().map_or(0, Vec::len);
    let mut r = 0;
    for c in 0..cols {
        let Some(p) = (r..m.len()).find(|&i| !m[i][c].zero()) else {
            continue;
        };
        m.swap(r, p);
        for i in 0..m.len() {
            if i != r && !m[i][c].zero() {
                let f = m[i][c].div(m[r][c]);
                let pivot = m[r].clone();
                for (x, y) in m[i].iter_mut().zip(pivot) {
                    *x = x.sub(f.mul(y));
                }
            }
        }
        r += 1;
    }
    r
}

/// For one period and one count, the hidden cells the attacker can
/// recompute: every published margin is the sum of the cells below it along
/// one dimension (a cell missing from the table is 0). A hidden cell x is
/// recomputed iff its column is not a combination of the other hidden
/// cells' columns in the equations (removing it lowers the rank).
fn recomputable(cells: &BTreeMap<(String, String), Option<i64>>) -> Vec<(String, String)> {
    let hidden: Vec<&(String, String)> = cells
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    let col: HashMap<&(String, String), usize> =
        hidden.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let ages: BTreeSet<&String> = cells
        .keys()
        .map(|k| &k.0)
        .filter(|a| *a != "total")
        .collect();
    let sexes: BTreeSet<&String> = cells
        .keys()
        .map(|k| &k.1)
        .filter(|s| *s != "total")
        .collect();
    let mut rows: Vec<Vec<Q>> = Vec::new();
    let mut equation = |margin: (String, String), parts: Vec<(String, String)>| {
        let mut row = vec![Q(0, 1); hidden.len()];
        if let Some(&i) = col.get(&margin) {
            row[i] = Q(1, 1);
        }
        for p in &parts {
            if let Some(&i) = col.get(p) {
                row[i] = row[i].sub(Q(1, 1));
            }
        }
        if cells.contains_key(&margin) {
            rows.push(row);
        }
    };
    for a in ages
        .iter()
        .copied()
        .chain(std::iter::once(&"total".to_owned()))
    {
        equation(
            (a.clone(), "total".into()),
            sexes.iter().map(|s| (a.clone(), (*s).clone())).collect(),
        );
    }
    for s in sexes
        .iter()
        .copied()
        .chain(std::iter::once(&"total".to_owned()))
    {
        equation(
            ("total".into(), s.clone()),
            ages.iter().map(|a| ((*a).clone(), s.clone())).collect(),
        );
    }
    let full = rank(rows.clone());
    hidden
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let without: Vec<Vec<Q>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .filter(|(j, _)| j != i)
                        .map(|(_, q)| *q)
                        .collect()
                })
                .collect();
            rank(without) < full
        })
        .map(|(_, k)| (*k).clone())
        .collect()
}

fn attack(table: &BTreeMap<CellKey, Published>, k: i64) -> usize {
    let periods: BTreeSet<&String> = table.keys().map(|k| &k.0).collect();
    let mut hidden = 0;
    for period in periods {
        for m in COUNTS {
            let cells: BTreeMap<(String, String), Option<i64>> = table
                .iter()
                .filter(|(key, _)| &key.0 == period)
                .map(|(key, p)| ((key.1.clone(), key.2.clone()), p.counts[m]))
                .collect();
            for v in cells.values().flatten() {
                assert!(
                    *v == 0 || *v >= k,
                    "a published count below k in {period} ({m})"
                );
            }
            hidden += cells.values().filter(|v| v.is_none()).count();
            let found = recomputable(&cells);
            assert!(
                found.is_empty(),
                "{period} {m}: hidden cells recomputed from the margins: {}",
                found.len()
            );
        }
    }
    hidden
}

// ------------------------------------------------------------- the golden

/// The table computed from the row-level feed's current rows, as the
/// mapping describes it (docs/FEED-FORMAT.md §5), before suppression.
fn golden(w: &World) -> BTreeMap<CellKey, (BTreeMap<&'static str, i64>, Vec<f64>)> {
    let fc = w.app.cfg.feed("county-rows").expect("feed");
    let cols: Vec<String> = fc.mapping.columns.iter().map(|c| c.name.clone()).collect();
    let at = |name: &str| cols.iter().position(|c| c == name).expect("column");
    let items = [
        "diabetes_diagnosis",
        "diabetes_diagnosis_primary_care",
        "a10_dispensing",
        "hba1c",
    ];
    // (year, person) → rows (date, item, value, comparator, birth year, sex)
    type In = (
        String,
        String,
        Option<f64>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let mut by: BTreeMap<(String, String), Vec<In>> = BTreeMap::new();
    for v in current(&batches(w, "county-rows")).into_values() {
        let item = text(&v[at("item")]);
        if !items.contains(&item.as_str()) {
            continue;
        }
        let Value::Date(date) = v[at("event_date")] else {
            continue;
        };
        let person = text(&v[at("person")]);
        let value = match v[at("value")] {
            Value::Number(x) => Some(x),
            _ => None,
        };
        let comparator = match &v[at("comparator")] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        let birth = match v[at("birth_year")] {
            Value::Integer(y) => Some(y),
            _ => None,
        };
        let sex = match &v[at("sex")] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        by.entry((date.format("%Y").to_string(), person))
            .or_default()
            .push((date.to_string(), item, value, comparator, birth, sex));
    }
    let band = |birth: Option<i64>, year: i64| -> String {
        let Some(b) = birth else {
            return "unknown".into();
        };
        match year - b {
            a if a < 0 => "unknown".into(),
            0..=17 => "0-17".into(),
            18..=39 => "18-39".into(),
            40..=64 => "40-64".into(),
            65..=74 => "65-74".into(),
            _ => "75+".into(),
        }
    };
    let mut out: BTreeMap<CellKey, (BTreeMap<&'static str, i64>, Vec<f64>)> = BTreeMap::new();
    for ((year, _), mut rows) in by {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let last = rows.last().expect("rows");
        let age = band(last.4, year.parse().expect("year"));
        let sex = last.5.clone().unwrap_or_else(|| "unknown".into());
        let hba1c: Vec<&In> = rows.iter().filter(|r| r.1 == "hba1c").collect();
        let latest = hba1c.last();
        let at_target = latest.is_some_and(|r| match (r.2, r.3.as_deref()) {
            (Some(x), None) => x < 53.0,
            (Some(x), Some("<")) => x <= 53.0,
            (Some(x), Some("<=")) => x < 53.0,
            _ => false,
        });
        let exact = latest.and_then(|r| if r.3.is_none() { r.2 } else { None });
        for a in [age.clone(), "total".into()] {
            for s in [sex.clone(), "total".into()] {
                let e = out.entry((year.clone(), a.clone(), s)).or_default();
                *e.0.entry("persons").or_default() += 1;
                *e.0.entry("hba1c_measured").or_default() += i64::from(latest.is_some());
                *e.0.entry("hba1c_at_target").or_default() += i64::from(at_target);
                *e.0.entry("hba1c_tests").or_default() += hba1c.len() as i64;
                e.1.extend(exact);
            }
        }
    }
    out
}

fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f
}

fn compare_with_golden(w: &World, feed_name: &str, k: i64) {
    let golden = golden(w);
    let table = published(w, feed_name);
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "{feed_name}: the same cells as the golden"
    );
    let mut shown = 0;
    for (key, p) in &table {
        let (counts, values) = &golden[key];
        for m in COUNTS {
            let g = counts.get(m).copied().unwrap_or(0);
            // Hidden: small, a small complement (0 of 3 at target tells
            // of all 3), or protecting another cell.
            if let Some(v) = p.counts[m] {
                assert_eq!(v, g, "{feed_name} {key:?} {m}");
                shown += 1;
            }
            if (1..k).contains(&g) {
                assert_eq!(p.counts[m], None, "{feed_name} {key:?} {m}: small");
            }
        }
        let measured = counts["hba1c_measured"];
        let at_target = counts["hba1c_at_target"];
        if (1..k).contains(&(measured - at_target)) {
            assert_eq!(p.counts["hba1c_at_target"], None, "small complement");
        }
        if let Some(share) = p.numbers["hba1c_at_target_share"] {
            assert_eq!(
                share,
                round(at_target as f64 / measured as f64, 3),
                "{key:?}"
            );
        }
        if let Some(mean) = p.numbers["hba1c_mean"] {
            assert!(values.len() as i64 >= k);
            let m = values.iter().sum::<f64>() / values.len() as f64;
            assert_eq!(mean, round(m, 1), "{key:?} mean");
        }
        if let Some(median) = p.numbers["hba1c_median"] {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let m = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            assert_eq!(median, round(m, 1), "{key:?} median");
        }
        assert_eq!(
            p.suppressed,
            COUNTS.iter().any(|m| p.counts[m].is_none()),
            "{key:?}"
        );
    }
    assert!(
        shown > 20,
        "{feed_name}: the table publishes something ({shown})"
    );
}

fn changed_periods(w: &World, feed_name: &str, seq: u64) -> (BTreeSet<String>, usize, usize) {
    let all = batches(w, feed_name);
    let before = current(&all[..(seq as usize - 1)]);
    let fc = w.app.cfg.feed(feed_name).expect("feed");
    let period_col = fc
        .mapping
        .feed_columns()
        .iter()
        .position(|c| c.name == "period")
        .expect("period");
    let (_, rows) = &all[seq as usize - 1];
    let mut periods = BTreeSet::new();
    let (mut up, mut ret) = (0, 0);
    for r in rows {
        let values = match r.op {
            Op::Upsert => {
                up += 1;
                &r.values
            }
            Op::Retract => {
                ret += 1;
                before
                    .get(&r.record_id)
                    .expect("retract of a published cell")
            }
        };
        periods.insert(text(&values[period_col]));
    }
    (periods, up, ret)
}

#[test]
fn county_statistics_match_the_row_feed_and_resist_recomputation() {
    story(None);
}

#[test]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
fn county_statistics_on_postgresql() {
    let Some(db) = common::PgDb::create("statistics") else {
        return;
    };
    story(Some(&db.url));
}

fn story(database_url: Option<&str>) {
    tokio::runtime::Runtime::new().expect("rt").block_on(async {
        let w = world(database_url).await;
        // A preview of a statistics feed shows the cells it would stage,
        // never its input rows, and stages nothing.
        let preview = w.app.preview("county-stats").await.expect("preview");
        let width = w
            .app
            .cfg
            .feed("county-stats")
            .expect("feed")
            .mapping
            .feed_columns()
            .len();
        assert!(!preview.preview.is_empty());
        for row in &preview.preview {
            assert_eq!(row.rule, "cell_changed");
            assert_eq!(row.values.as_array().map(Vec::len), Some(width));
        }
        assert!(preview.staged.is_empty());
        for feed_name in [
            "county-rows",
            "county-stats",
            "county-stats-k10",
            "county-statistics",
        ] {
            let r = w.app.once(feed_name).await.expect("run");
            assert_eq!(r.sealed, vec![1], "{feed_name}");
        }
        // The golden, and the attacker, for k = 5 and k = 10.
        compare_with_golden(&w, "county-stats", 5);
        compare_with_golden(&w, "county-stats-k10", 10);
        let hidden5 = attack(&published(&w, "county-stats"), 5);
        let hidden10 = attack(&published(&w, "county-stats-k10"), 10);
        assert!(hidden5 > 0, "some cells are small");
        assert!(hidden10 > hidden5, "k = 10 hides more ({hidden10} > {hidden5})");
        // The manifest states k and what was hidden.
        let m = manifest(&w, "county-stats-k10", 1);
        let held = &m["counts"]["held"];
        assert!(held["cells_suppressed_below_k10"].as_u64().expect("stated") > 0);
        assert!(held.get("cells_suppressed_complementary_k10").is_some());
        assert!(m["counts"]["upserts"].as_u64().expect("upserts") > 0);

        // The year's laboratory documents arrive: only that year's cells
        // change.
        for f in &w.late_files {
            std::fs::rename(f, w.corpus_docs.join(f.file_name().expect("name")))
                .expect("arrive");
        }
        assert!(std::fs::read_dir(&w.late).expect("late").next().is_none());
        w.app.once("county-rows").await.expect("rows again");
        let r = w.app.once("county-stats").await.expect("stats again");
        assert_eq!(r.sealed, vec![2]);
        let (periods, up, _) = changed_periods(&w, "county-stats", 2);
        assert_eq!(
            periods,
            BTreeSet::from([LATE_YEAR.to_string()]),
            "only {LATE_YEAR} changed"
        );
        assert!(up > 0);
        // The shipped feed, by municipality too: the same.
        let r = w.app.once("county-statistics").await.expect("shipped again");
        assert_eq!(r.sealed, vec![2]);
        let (periods, up, _) = changed_periods(&w, "county-statistics", 2);
        assert_eq!(periods, BTreeSet::from([LATE_YEAR.to_string()]));
        assert!(up > 0);
        compare_with_golden(&w, "county-stats", 5);
        attack(&published(&w, "county-stats"), 5);

        // An objection to the county: the person leaves the statistics.
        // Someone alone in a cell of some year: that cell is retracted.
        let rows_fc = w.app.cfg.feed("county-rows").expect("feed");
        let person_col = rows_fc
            .mapping
            .columns
            .iter()
            .position(|c| c.name == "person")
            .expect("person");
        let lonely = golden(&w)
            .into_iter()
            .find(|(k, (c, _))| k.1 != "total" && k.2 != "total" && c["persons"] == 1)
            .map(|(k, _)| k)
            .expect("a cell of one person");
        let plan = synth::plan(PATIENTS, SEED);
        let pkey = regfeed::identity::Key::load(
            &regfeed::identity::KeyRole::Pseudonym("pirkanmaa".into()),
            &regfeed::identity::KeySource::File(w.dir.join("keys/pirkanmaa.pseudonym.key")),
        )
        .expect("key");
        let rows = current(&batches(&w, "county-rows"));
        let in_cell: BTreeSet<String> = rows
            .values()
            .filter(|v| matches!(&v[rows_fc.mapping.columns.iter().position(|c| c.name == "event_date").expect("date")], Value::Date(d) if d.format("%Y").to_string() == lonely.0))
            .map(|v| text(&v[person_col]))
            .collect();
        let hetu = plan
            .persons
            .iter()
            .map(|p| p.hetu.clone())
            .find(|h| {
                let h = regfeed::decode::hetu::Hetu::parse(h).expect("hetu");
                let pseudonym = regfeed::identity::pseudonym(&pkey, &h);
                in_cell.contains(&pseudonym)
                    && golden_cell_of(&w, &pseudonym, &lonely.0) == Some((lonely.1.clone(), lonely.2.clone()))
            })
            .expect("the lonely person");
        let csv = w.dir.join("objection.csv");
        std::fs::write(
            &csv,
            format!(
                "kind,hetu,made_to,purposes,effective_from,controller,start,since,source,reference\nobjection,{hetu},{COUNTY},all,2026-01-01,,,,test,OBJ-T\n"
            ),
        )
        .expect("csv");
        w.app.import_policy(&csv).await.expect("import");
        let r = w.app.once("county-stats").await.expect("stats after objection");
        assert_eq!(r.sealed, vec![3]);
        let (_, up, ret) = changed_periods(&w, "county-stats", 3);
        assert!(ret > 0, "the lonely cell is retracted");
        assert!(up > 0, "the margins change");
        let after = published(&w, "county-stats");
        assert!(!after.contains_key(&lonely), "the cell is gone");
        attack(&after, 5);
    });
}

/// The (age band, sex) cell a person falls in in a year, from the row feed.
fn golden_cell_of(w: &World, pseudonym: &str, year: &str) -> Option<(String, String)> {
    let fc = w.app.cfg.feed("county-rows").expect("feed");
    let at = |name: &str| {
        fc.mapping
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("column")
    };
    let rows = current(&batches(w, "county-rows"));
    let mine: Vec<&Vec<Value>> = rows
        .values()
        .filter(|v| text(&v[at("person")]) == pseudonym)
        .filter(|v| matches!(&v[at("event_date")], Value::Date(d) if d.format("%Y").to_string() == year))
        .collect();
    let v = mine.first()?;
    let birth = match v[at("birth_year")] {
        Value::Integer(y) => y,
        _ => return None,
    };
    let age = year.parse::<i64>().ok()? - birth;
    let band = match age {
        0..=17 => "0-17",
        18..=39 => "18-39",
        40..=64 => "40-64",
        65..=74 => "65-74",
        a if a >= 75 => "75+",
        _ => "unknown",
    };
    Some((band.into(), text(&v[at("sex")])))
}

#[test]
fn an_aggregate_mapping_names_file_line_and_field_of_each_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let shipped = include_str!("../../mappings/county-statistics.toml");
    let bad = shipped
        .replace(
            "latest_below = 53\n",
            "latest_below = 53\nlatest_at_least = 40\n",
        )
        .replace("of = \"hba1c_at_target\"", "of = \"nonesuch\"")
        .replace("column = \"birth_year\"", "column = \"sex\"")
        .replace("k = 5\n", "k = 1\n");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &bad).expect("write");
    let problems = regfeed::mapping::load(&path).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).expect("line") + 1;
    for (needle, field) in [
        ("k = 1", "aggregate.k"),
        ("latest_at_least", "aggregate.measure.latest_at_least"),
        ("of = \"nonesuch\"", "aggregate.measure.of"),
    ] {
        let want = format!("{}:{}: {field}:", path.display(), line_of(needle));
        assert!(
            text.iter().any(|t| t.starts_with(&want)),
            "{want} in {text:#?}"
        );
    }
    assert!(
        text.iter()
            .any(|t| t.contains("aggregate.dimension.column") && t.contains("this needs integer")),
        "{text:#?}"
    );
}
