//! The feed format (DESIGN §5): manifests against the shared schema, CSV and
//! JSON Lines writers and readers, and the file-drop sink.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use regfeed::deliver::DeliverError;
use regfeed::deliver::file_drop::{FileDrop, SealedBatch};
use regfeed::feed::manifest::{
    Art6, Art9, Counts, DataRef, Identity, IdentityKind, LegalBasis, MappingRef, Purpose, Window,
};
use regfeed::feed::{
    self, Column, ColumnType, DataFileInfo, FeedError, Format, Manifest, Row, Value, csv, jsonl,
};

// ---------------------------------------------------------------- helpers

fn id(c: char) -> String {
    c.to_string().repeat(64)
}

fn golden_columns() -> Vec<Column> {
    vec![
        Column::new("person", ColumnType::Text),
        Column::new("code", ColumnType::Text),
        Column::new("note", ColumnType::Text),
        Column::new("hba1c", ColumnType::Number),
        Column::new("visits", ColumnType::Integer),
        Column::new("onset", ColumnType::Date),
        Column::new("smoker", ColumnType::Boolean),
    ]
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("test dates are valid")
}

fn golden_rows() -> Vec<Row> {
    vec![
        Row::upsert(
            id('a'),
            vec![
                Value::Text("p1".into()),
                Value::Text("E11.9".into()),
                Value::Text("first visit".into()),
                Value::Number(53.5),
                Value::Integer(3),
                Value::Date(date(2024, 5, 1)),
                Value::Bool(false),
            ],
        ),
        Row::upsert(
            id('b'),
            vec![
                Value::Text(String::new()),
                Value::Text("=HYPERLINK(x)".into()),
                Value::Text("a, \"b\"".into()),
                Value::Null,
                Value::Integer(-2),
                Value::Date(date(2023, 12, 31)),
                Value::Bool(true),
            ],
        ),
        Row::retract(id('c')),
    ]
}

const GOLDEN_CSV: &str = "record_id,op,person,code,note,hba1c,visits,onset,smoker\r\n\
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,upsert,p1,E11.9,first visit,53.5,3,2024-05-01,false\r\n\
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb,upsert,\"\",'=HYPERLINK(x),\"a, \"\"b\"\"\",,-2,2023-12-31,true\r\n\
cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc,retract,,,,,,,\r\n";

const GOLDEN_JSONL: &str = "\
{\"record_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"op\":\"upsert\",\"person\":\"p1\",\"code\":\"E11.9\",\"note\":\"first visit\",\"hba1c\":53.5,\"visits\":3,\"onset\":\"2024-05-01\",\"smoker\":false}\n\
{\"record_id\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"op\":\"upsert\",\"person\":\"\",\"code\":\"=HYPERLINK(x)\",\"note\":\"a, \\\"b\\\"\",\"hba1c\":null,\"visits\":-2,\"onset\":\"2023-12-31\",\"smoker\":true}\n\
{\"record_id\":\"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\",\"op\":\"retract\",\"person\":null,\"code\":null,\"note\":null,\"hba1c\":null,\"visits\":null,\"onset\":null,\"smoker\":null}\n";

fn write_to_vec(format: Format, columns: &[Column], rows: &[Row]) -> Result<Vec<u8>, FeedError> {
    let mut w = feed::RowWriter::new(format, Vec::new(), columns.to_vec())?;
    for r in rows {
        w.write_row(r)?;
    }
    Ok(w.finish()?.0)
}

/// An RFC 4180 unquoter written independently of `feed::csv`, so the
/// properties below do not trust the reader they test. Returns each record's
/// fields as (text, was quoted).
fn unquote_all(text: &str) -> Vec<Vec<(String, bool)>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_q = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_q {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => in_q = false,
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                in_q = true;
            }
            ',' => fields.push((
                std::mem::take(&mut cur),
                std::mem::replace(&mut quoted, false),
            )),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "bare CR outside quotes");
                fields.push((
                    std::mem::take(&mut cur),
                    std::mem::replace(&mut quoted, false),
                ));
                records.push(std::mem::take(&mut fields));
            }
            _ => cur.push(c),
        }
    }
    assert!(
        cur.is_empty() && fields.is_empty(),
        "file must end with CRLF"
    );
    records
}

fn tricky_text() -> impl Strategy<Value = String> {
    let edge = prop::sample::select(vec![
        "", "=", "+", "-", "@", "'", "''", "\t", "\r", "\n", "\r\n", "\"", ",", " ", "=1+2", "-5",
    ]);
    (edge.clone(), any::<String>(), edge).prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

// ---------------------------------------------------------------- CSV / JSONL

#[test]
fn golden_csv_is_byte_exact() {
    let bytes = write_to_vec(Format::Csv, &golden_columns(), &golden_rows()).expect("writes");
    assert_eq!(String::from_utf8(bytes).expect("utf-8"), GOLDEN_CSV);
}

#[test]
fn golden_jsonl_is_byte_exact() {
    let bytes = write_to_vec(Format::Jsonl, &golden_columns(), &golden_rows()).expect("writes");
    assert_eq!(String::from_utf8(bytes).expect("utf-8"), GOLDEN_JSONL);
}

#[test]
fn golden_files_read_back_to_the_rows() {
    let cols = golden_columns();
    let from_csv = csv::read(GOLDEN_CSV.as_bytes(), &cols).expect("reads csv");
    assert!(from_csv == golden_rows(), "CSV rows differ");
    let from_jsonl = jsonl::read(GOLDEN_JSONL.as_bytes(), &cols).expect("reads jsonl");
    assert!(from_jsonl == golden_rows(), "JSONL rows differ");
}

#[test]
fn empty_batch_is_a_header_only() {
    let bytes = write_to_vec(Format::Csv, &golden_columns(), &[]).expect("writes");
    assert_eq!(
        bytes,
        b"record_id,op,person,code,note,hba1c,visits,onset,smoker\r\n"
    );
    assert!(
        write_to_vec(Format::Jsonl, &golden_columns(), &[])
            .expect("writes")
            .is_empty()
    );
}

#[test]
fn numbers_never_use_exponents() {
    let cols = vec![Column::new("x", ColumnType::Number)];
    let cases = [
        (1e6, "1000000"),
        (1e-6, "0.000001"),
        (0.1, "0.1"),
        (3.0, "3"),
        (-0.0, "0"),
        (123456.789, "123456.789"),
    ];
    for (x, want) in cases {
        let rows = [Row::upsert(id('a'), vec![Value::Number(x)])];
        let out = String::from_utf8(write_to_vec(Format::Csv, &cols, &rows).expect("writes"))
            .expect("utf-8");
        let line = out.lines().nth(1).expect("a data line");
        assert_eq!(line.rsplit(',').next(), Some(want), "for {x}");
    }
}

#[test]
fn writers_refuse_bad_rows_without_showing_values() {
    let hetu = "010203A904M";
    let cols = vec![Column::new("n", ColumnType::Integer)];
    let bad: Vec<Vec<Row>> = vec![
        vec![Row::upsert(id('a'), vec![Value::Text(hetu.into())])],
        vec![Row::upsert(id('a'), vec![])],
        vec![Row::upsert(hetu, vec![Value::Integer(1)])],
        vec![Row::upsert(id('A'), vec![Value::Integer(1)])],
        vec![Row::retract(id('a')), Row::retract(id('a'))],
    ];
    for rows in bad {
        for format in [Format::Csv, Format::Jsonl] {
            let err = write_to_vec(format, &cols, &rows).expect_err("refused");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(hetu), "error shows a value: {shown}");
        }
    }
    let nan = [Row::upsert(id('a'), vec![Value::Number(f64::NAN)])];
    let cols = vec![Column::new("x", ColumnType::Number)];
    assert!(write_to_vec(Format::Csv, &cols, &nan).is_err());
}

#[test]
fn bad_column_lists_are_refused() {
    for cols in [
        vec![Column::new("op", ColumnType::Text)],
        vec![Column::new("a,b", ColumnType::Text)],
        vec![Column::new("=x", ColumnType::Text)],
        vec![
            Column::new("a", ColumnType::Text),
            Column::new("a", ColumnType::Integer),
        ],
    ] {
        assert!(feed::check_columns(&cols).is_err());
    }
}

#[test]
fn value_debug_hides_text_and_dates() {
    let shown = format!(
        "{:?}",
        Row::upsert(
            id('a'),
            vec![
                Value::Text("010203A904M".into()),
                Value::Date(date(1903, 2, 1))
            ]
        )
    );
    assert!(
        !shown.contains("010203A904M") && !shown.contains("1903"),
        "{shown}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csv_round_trips_any_text(
        texts in prop::collection::vec(tricky_text(), 1..6),
        n in any::<i64>(),
        x in any::<f64>().prop_filter("finite", |x| x.is_finite()),
    ) {
        let cols = vec![
            Column::new("t", ColumnType::Text),
            Column::new("n", ColumnType::Integer),
            Column::new("x", ColumnType::Number),
        ];
        let rows: Vec<Row> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let rid = format!("{:064x}", i + 1);
                Row::upsert(rid, vec![Value::Text(t.clone()), Value::Integer(n), Value::Number(x)])
            })
            .collect();
        let bytes = write_to_vec(Format::Csv, &cols, &rows).expect("writes");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        prop_assert!(!text.starts_with('\u{feff}'), "BOM written");

        let back = csv::read(&bytes[..], &cols).expect("reads back");
        prop_assert_eq!(back.len(), rows.len());
        for (a, b) in back.iter().zip(&rows) {
            let (Value::Text(ta), Value::Text(tb)) = (&a.values[0], &b.values[0]) else {
                return Err(TestCaseError::fail("text column did not read back as text"));
            };
            prop_assert!(ta == tb, "text did not round-trip");
            prop_assert!(a == b, "row did not round-trip");
        }

        // Independent unquoting: formula guard and unquoted numbers.
        let records = unquote_all(&text);
        prop_assert_eq!(records.len(), rows.len() + 1);
        for (rec, row) in records[1..].iter().zip(&rows) {
            let (t, _) = &rec[2];
            if let Some(first) = t.chars().next() {
                prop_assert!(!matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r'),
                    "text field starts with a formula character");
            }
            let Value::Text(orig) = &row.values[0] else { unreachable!() };
            if orig.starts_with(['=', '+', '-', '@', '\'', '\t', '\r']) {
                prop_assert!(t.starts_with('\''));
            }
            let (nf, nq) = &rec[3];
            let (xf, xq) = &rec[4];
            prop_assert!(!nq && !xq, "numeric field quoted");
            prop_assert_eq!(nf.parse::<i64>().ok(), Some(n));
            prop_assert!(!xf.contains(['e', 'E']), "exponent in a number");
            prop_assert_eq!(xf.parse::<f64>().ok(), Some(x));
        }
    }

    #[test]
    fn jsonl_round_trips_any_text(t in tricky_text(), x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let cols = vec![Column::new("t", ColumnType::Text), Column::new("x", ColumnType::Number)];
        let rows = vec![Row::upsert(id('d'), vec![Value::Text(t), Value::Number(x)])];
        let bytes = write_to_vec(Format::Jsonl, &cols, &rows).expect("writes");
        let back = jsonl::read(&bytes[..], &cols).expect("reads back");
        prop_assert!(back == rows, "row did not round-trip");
    }
}

#[test]
fn data_file_is_sealed_with_its_digest_and_no_temp_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = feed::write_data_file(
        dir.path(),
        "diabetes",
        7,
        Format::Csv,
        &golden_columns(),
        golden_rows(),
    )
    .expect("sealed");
    assert_eq!(info.file, "diabetes-00000007.csv");
    let bytes = fs::read(dir.path().join(&info.file)).expect("file");
    assert_eq!(bytes, GOLDEN_CSV.as_bytes());
    assert_eq!(info.bytes, bytes.len() as u64);
    assert_eq!(info.sha256, feed::sha256_hex(&bytes));
    assert_eq!((info.records, info.upserts, info.retracts), (3, 2, 1));
    assert_eq!(names_in(dir.path()), vec![info.file.clone()]);
}

#[test]
fn a_failed_seal_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![Row::retract(id('a')), Row::retract(id('a'))];
    let res = feed::write_data_file(dir.path(), "f", 1, Format::Jsonl, &golden_columns(), rows);
    assert!(res.is_err());
    assert!(names_in(dir.path()).is_empty());
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- manifests

fn schema_validator() -> Option<jsonschema::Validator> {
    let data = common::shared_data()?;
    let path = data
        .parent()
        .expect("shared/data has a parent")
        .join("feed-manifest.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("schema readable")).expect("schema JSON");
    Some(
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles"),
    )
}

fn assert_valid(v: &jsonschema::Validator, bytes: &[u8]) {
    let instance: serde_json::Value = serde_json::from_slice(bytes).expect("manifest is JSON");
    let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}");
}

fn data_ref(info: &DataFileInfo) -> DataRef {
    DataRef::from(info)
}

fn manifest(
    seq: u64,
    previous: Option<String>,
    kind: IdentityKind,
    info: &DataFileInfo,
) -> Manifest {
    Manifest {
        format: Default::default(),
        feed: "diabetes".into(),
        register: "thl-diabetes".into(),
        seq,
        created_at: Utc
            .with_ymd_and_hms(2026, 11, 22, 19, 40, 0)
            .single()
            .expect("time"),
        sealed_at: Utc
            .with_ymd_and_hms(2026, 11, 22, 19, 45, 0)
            .single()
            .expect("time")
            + chrono::Duration::nanoseconds(123_456_789),
        window: Window {
            from: (seq > 1).then(|| "2026-11-21T00:00:00Z/doc-17".to_string()),
            to: "2026-11-22T00:00:00Z/doc-99".into(),
        },
        mapping: MappingRef {
            name: "diabetes".into(),
            version: "1.0.0".into(),
            sha256: feed::sha256_hex(b"mapping"),
        },
        rules_version: "none".into(),
        legal_basis: LegalBasis {
            purpose: Purpose::Statistics,
            gdpr_art6: Art6::LegalObligation,
            gdpr_art9: Art9::HealthOrSocialCare,
            statute: None,
            derogation: None,
        },
        identity: Identity {
            kind,
            key_id: (kind == IdentityKind::Pseudonym).then(|| "0123456789abcdef".to_string()),
            record_key_id: "fedcba9876543210".into(),
        },
        data: data_ref(info),
        counts: Counts {
            upserts: info.upserts,
            retracts: info.retracts,
            ..Counts::default()
        },
        previous_manifest_sha256: previous,
        test: false,
    }
}

#[test]
#[cfg_attr(no_shared_data, ignore = "needs ../shared/data")]
fn manifests_validate_against_the_shared_schema_and_chain() {
    let Some(validator) = schema_validator() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let info1 = feed::write_data_file(
        dir.path(),
        "diabetes",
        1,
        Format::Csv,
        &golden_columns(),
        golden_rows(),
    )
    .expect("sealed 1");
    let m1 = manifest(1, None, IdentityKind::Pseudonym, &info1);
    let sha1 = feed::write_manifest(dir.path(), &m1).expect("manifest 1");
    let bytes1 = fs::read(dir.path().join("diabetes-00000001.manifest.json")).expect("file");
    assert_eq!(sha1, feed::sha256_hex(&bytes1));
    assert_valid(&validator, &bytes1);
    assert!(bytes1.ends_with(b"}\n"));
    let text1 = String::from_utf8(bytes1.clone()).expect("utf-8");
    assert!(
        text1.contains("\"sealed_at\": \"2026-11-22T19:45:00Z\""),
        "{text1}"
    );
    assert!(text1.contains("\"previous_manifest_sha256\": null"));
    assert!(!text1.contains("held") && !text1.contains("statute"));

    // seq 2: JSON Lines, hetu identity, every optional key, chained.
    let info2 = feed::write_data_file(
        dir.path(),
        "diabetes",
        2,
        Format::Jsonl,
        &golden_columns(),
        golden_rows(),
    )
    .expect("sealed 2");
    let mut m2 = manifest(2, Some(sha1.clone()), IdentityKind::Hetu, &info2);
    m2.legal_basis.statute =
        Some("Laki terveydenhuollon valtakunnallisista henkilörekistereistä 556/1989".into());
    m2.legal_basis.derogation = Some("none".into());
    m2.legal_basis.purpose = Purpose::AuthorityPlanningAndReporting;
    m2.legal_basis.gdpr_art6 = Art6::PublicTask;
    m2.legal_basis.gdpr_art9 = Art9::ResearchOrStatistics;
    m2.counts.held = Some(BTreeMap::from([
        ("restriction".into(), 2),
        ("age".into(), 1),
    ]));
    m2.counts.excluded = Some(BTreeMap::from([("objection".into(), 4)]));
    m2.counts.exempt = Some(1);
    m2.test = true;
    let sha2 = feed::write_manifest(dir.path(), &m2).expect("manifest 2");
    let bytes2 = fs::read(dir.path().join("diabetes-00000002.manifest.json")).expect("file");
    assert_eq!(sha2, feed::sha256_hex(&bytes2));
    assert_valid(&validator, &bytes2);
    let parsed = Manifest::from_bytes(&bytes2).expect("parses back");
    assert_eq!(
        parsed.previous_manifest_sha256.as_deref(),
        Some(sha1.as_str())
    );
    assert_eq!(parsed.identity.key_id, None);
    assert_eq!(parsed.counts, m2.counts);
    // Deterministic: re-serialising the parsed manifest gives the same bytes.
    assert_eq!(parsed.to_bytes().expect("serialises"), bytes2);

    // Sanity: the validator does reject an extra key.
    let mut v: serde_json::Value = serde_json::from_slice(&bytes2).expect("json");
    v["identity"]["extra"] = serde_json::json!(1);
    assert!(!validator.is_valid(&v));
}

#[test]
fn manifest_validation_refuses_broken_chains_and_identities() {
    let info = DataFileInfo {
        file: "diabetes-00000001.csv".into(),
        media_type: feed::MediaType::Csv,
        bytes: 10,
        records: 3,
        sha256: feed::sha256_hex(b"x"),
        upserts: 2,
        retracts: 1,
    };
    let ok = manifest(1, None, IdentityKind::Pseudonym, &info);
    assert!(ok.validate().is_ok());
    let mut m = ok.clone();
    m.previous_manifest_sha256 = Some(feed::sha256_hex(b"y"));
    assert!(m.validate().is_err(), "seq 1 with a previous manifest");
    let mut m = ok.clone();
    m.identity.kind = IdentityKind::Hetu;
    assert!(m.validate().is_err(), "hetu feed with a pseudonym key id");
    let mut m = ok.clone();
    m.counts.upserts = 5;
    assert!(m.validate().is_err(), "counts not adding up");
    let mut m = ok.clone();
    m.feed = "Diabetes".into();
    assert!(m.to_bytes().is_err(), "feed name pattern");
    let mut m = ok;
    m.seq = 2;
    assert!(
        m.validate().is_err(),
        "seq 2 without previous (and file name mismatch)"
    );
}

// ---------------------------------------------------------------- file drop

fn sealed_batch(outbox: &Path, data: &[u8]) -> SealedBatch {
    fs::write(outbox.join("f-00000001.csv"), data).expect("data");
    let manifest = b"{\"pretend\": \"manifest\"}\n";
    fs::write(outbox.join("f-00000001.manifest.json"), manifest).expect("manifest");
    SealedBatch {
        dir: outbox.to_path_buf(),
        data_file: "f-00000001.csv".into(),
        data_sha256: feed::sha256_hex(data),
        manifest_file: "f-00000001.manifest.json".into(),
        manifest_sha256: feed::sha256_hex(manifest),
    }
}

#[test]
fn file_drop_delivers_both_files_and_leaves_no_temp_files() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let target = tempfile::tempdir().expect("tempdir");
    let batch = sealed_batch(outbox.path(), GOLDEN_CSV.as_bytes());
    let sink = FileDrop::new(target.path());
    let receipt = sink.deliver(&batch).expect("delivered");
    assert!(!receipt.already_delivered);
    assert_eq!(receipt.data_sha256, batch.data_sha256);
    assert_eq!(
        names_in(target.path()),
        vec![
            "f-00000001.csv".to_string(),
            "f-00000001.manifest.json".to_string()
        ]
    );
    assert_eq!(
        fs::read(&receipt.data_path).expect("data"),
        GOLDEN_CSV.as_bytes()
    );

    let again = sink.deliver(&batch).expect("identical re-delivery is fine");
    assert!(again.already_delivered);
    assert_eq!(names_in(target.path()).len(), 2);
}

#[test]
fn file_drop_never_overwrites_different_bytes() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let target = tempfile::tempdir().expect("tempdir");
    let batch = sealed_batch(outbox.path(), b"new bytes\r\n");
    fs::write(target.path().join("f-00000001.csv"), b"old bytes\r\n").expect("old");
    let err = FileDrop::new(target.path())
        .deliver(&batch)
        .expect_err("conflict");
    assert!(matches!(err, DeliverError::Conflict { .. }), "{err}");
    assert!(err.is_permanent());
    assert_eq!(
        fs::read(target.path().join("f-00000001.csv")).expect("old"),
        b"old bytes\r\n"
    );
    assert_eq!(
        names_in(target.path()),
        vec!["f-00000001.csv".to_string()],
        "no manifest"
    );
}

#[test]
fn file_drop_refuses_a_sealed_file_that_changed() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let target = tempfile::tempdir().expect("tempdir");
    let batch = sealed_batch(outbox.path(), b"sealed\r\n");
    fs::write(outbox.path().join("f-00000001.csv"), b"tampered\r\n").expect("tamper");
    let err = FileDrop::new(target.path())
        .deliver(&batch)
        .expect_err("seal broken");
    assert!(matches!(err, DeliverError::SealBroken { .. }) && err.is_permanent());
    assert!(names_in(target.path()).is_empty());
}

#[test]
fn a_concurrent_reader_never_sees_a_partial_file() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let target = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let batch = sealed_batch(outbox.path(), &data);
    let data_path = target.path().join(&batch.data_file);
    let manifest_path = target.path().join(&batch.manifest_file);
    // Compared byte for byte: as strict as its digest, and cheap enough that
    // the reader looks many times while the file is written.
    let want = data.clone();

    let watcher = {
        let (data_path, manifest_path) = (data_path.clone(), manifest_path.clone());
        std::thread::spawn(move || {
            let mut sightings = 0u32;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let manifest_seen = manifest_path.exists();
                if let Ok(bytes) = fs::read(&data_path) {
                    sightings += 1;
                    assert!(
                        bytes == want,
                        "partial data file seen: {} of {} bytes",
                        bytes.len(),
                        want.len()
                    );
                } else {
                    assert!(!manifest_seen, "manifest before the data file");
                }
                if manifest_seen || std::time::Instant::now() > deadline {
                    return sightings;
                }
            }
        })
    };
    FileDrop::new(target.path())
        .deliver(&batch)
        .expect("delivered");
    let sightings = watcher.join().expect("watcher found no partial file");
    assert!(sightings >= 1);
}

#[test]
fn batch_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let info = feed::write_data_file(
        dir.path(),
        "f",
        1,
        Format::Csv,
        &golden_columns(),
        golden_rows(),
    )
    .expect("sealed");
    let mode = fs::metadata(dir.path().join(&info.file))
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "mode {mode:o}");
}

#[test]
fn jsonl_reader_refuses_nested_and_malformed_lines() {
    let cols = vec![Column::new("t", ColumnType::Text)];
    let rid = id('a');
    for line in [
        format!("{{\"record_id\":\"{rid}\",\"op\":\"upsert\",\"t\":[1]}}"),
        format!("{{\"record_id\":\"{rid}\",\"op\":\"upsert\",\"t\":\"x\",\"t\":\"y\"}}"),
        format!("{{\"record_id\":\"{rid}\",\"op\":\"upsert\",\"t\":\"x\"}} trailing"),
        format!("{{\"record_id\":\"{rid}\",\"op\":\"delete\",\"t\":null}}"),
    ] {
        assert!(jsonl::read(line.as_bytes(), &cols).is_err());
    }
    let ok = format!("{{ \"record_id\" : \"{rid}\", \"op\":\"upsert\", \"t\":\"\\u00e4\\\"\" }}");
    let rows = jsonl::read(ok.as_bytes(), &cols).expect("reads");
    assert!(rows[0].values[0] == Value::Text("ä\"".into()));
}
