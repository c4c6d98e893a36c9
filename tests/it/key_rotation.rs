//! Key rotation end to end through the binary (docs/KEYS.md): a recipient's
//! pseudonym key rotated between two runs changes the manifest's key id and
//! every pseudonym sent afterwards, leaves record ids (the feed's record key)
//! unchanged, and keeps pseudonyms stable within each key period. The index
//! and record keys cannot be swapped under an existing store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use regfeed::decode::hetu::Hetu;
use regfeed::feed::{self, Op, Value};
use regfeed::identity::{self, Key, KeyRole, KeySource};
use regfeed::loaded::Config;
use regfeed::synth;

const FEED: &str = "thl-diabetes";
const SEED: u64 = 808;

fn regfeed(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("REGFEED_LOG", "warn")
        .env_remove("RUST_LOG")
        .output()
        .expect("run regfeed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn key(path: &Path, role: KeyRole) -> Key {
    Key::load(&role, &KeySource::File(path.to_path_buf())).expect("key")
}

/// Batch `seq` of the feed: its manifest and its rows as (record id, op,
/// person).
fn batch(
    delivered: &Path,
    cfg: &Config,
    seq: u64,
) -> (serde_json::Value, Vec<(String, Op, Option<String>)>) {
    let fc = cfg.feed(FEED).expect("feed");
    let person = fc
        .mapping
        .columns
        .iter()
        .position(|c| c.name == "person")
        .expect("a person column");
    let base = delivered.join(format!("{FEED}-{seq:08}"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(base.with_extension("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    let f = std::io::BufReader::new(std::fs::File::open(base.with_extension("csv")).expect("csv"));
    let rows = feed::csv::read(f, &fc.mapping.feed_columns())
        .expect("reads")
        .into_iter()
        .map(|r| {
            let p = match r.values.get(person) {
                Some(Value::Text(p)) => Some(p.clone()),
                _ => None,
            };
            (r.record_id, r.op, p)
        })
        .collect();
    (manifest, rows)
}

#[test]
fn rotating_a_recipient_key_changes_pseudonyms_and_key_id_not_record_ids() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = synth::plan(300, SEED);
    synth::write_corpus(&plan, &corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let keys = setup.dir.join("keys");
    let delivered = setup.delivered.join(FEED);

    // Period 1.
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(ok, "first run: {text}");
    let old = key(
        &keys.join("thl.pseudonym.key"),
        KeyRole::Pseudonym("thl".into()),
    );

    // Rotate as docs/KEYS.md says: a new file, the config pointed at it.
    let new_path = keys.join("thl.pseudonym.2027.key");
    identity::generate_key_file(&new_path).expect("new key");
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let rotated = text.replace(
        "pseudonym_key = \"keys/thl.pseudonym.key\"",
        "pseudonym_key = \"keys/thl.pseudonym.2027.key\"",
    );
    assert_ne!(rotated, text, "the config names the thl key");
    std::fs::write(&setup.config, rotated).expect("config written");
    let (ok, text) = regfeed(&["validate"], &setup.config);
    assert!(ok, "validate after rotation: {text}");
    let new = key(&new_path, KeyRole::Pseudonym("thl".into()));
    assert_ne!(old.id(), new.id());

    // Period 2: new documents (replacement versions resend their entries).
    let fu = synth::write_followups(&plan, &corpus, SEED).expect("follow-ups");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(ok, "second run: {text}");

    let cfg = Config::load(&setup.config).expect("config");
    let record_key = key(
        &keys.join(format!("{FEED}.record.key")),
        KeyRole::Record(FEED.into()),
    );
    // Record id → hetu, over every row the truths know (before and after).
    let before = synth::truth::compute(&plan);
    let mut hetu_of: BTreeMap<String, String> = BTreeMap::new();
    for p in before.persons.iter().chain(&fu.truth.persons) {
        for r in &p.rows {
            hetu_of.insert(
                identity::record_id(&record_key, &r.set_id, r.ordinal),
                p.hetu.clone(),
            );
        }
    }

    let (m1, rows1) = batch(&delivered, &cfg, 1);
    let (m2, rows2) = batch(&delivered, &cfg, 2);
    // The manifests name the key of their period; the record key is the same.
    assert_eq!(m1["identity"]["key_id"], old.id().as_str());
    assert_eq!(m2["identity"]["key_id"], new.id().as_str());
    assert_eq!(
        m1["identity"]["record_key_id"],
        m2["identity"]["record_key_id"]
    );
    assert_eq!(m2["identity"]["record_key_id"], record_key.id().as_str());

    // Every upsert carries its person's pseudonym under its period's key:
    // one pseudonym per person within a period, another across periods.
    let mut per_period: Vec<BTreeMap<String, BTreeSet<String>>> = Vec::new();
    for (rows, k) in [(&rows1, &old), (&rows2, &new)] {
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, op, person) in rows.iter().filter(|r| r.1 == Op::Upsert) {
            let hetu = hetu_of
                .get(id)
                .unwrap_or_else(|| panic!("record id {id} is not HMAC(record key, set id, ordinal) of any truth row ({op:?})"));
            let want = identity::pseudonym(k, &Hetu::parse(hetu).expect("hetu"));
            assert_eq!(person.as_deref(), Some(want.as_str()), "{id}");
            seen.entry(hetu.clone()).or_default().insert(want.clone());
        }
        assert!(
            seen.values().all(|p| p.len() == 1),
            "one pseudonym per person within a key period"
        );
        per_period.push(seen);
    }
    // The same records, re-sent after the rotation: same ids, new pseudonyms.
    let ids1: BTreeSet<&str> = rows1.iter().map(|r| r.0.as_str()).collect();
    let resent: Vec<&(String, Op, Option<String>)> = rows2
        .iter()
        .filter(|r| r.1 == Op::Upsert && ids1.contains(r.0.as_str()))
        .collect();
    assert!(
        !resent.is_empty(),
        "a replacement version resent rows of period 1 under their record ids"
    );
    let both: Vec<&String> = per_period[1]
        .keys()
        .filter(|h| per_period[0].contains_key(*h))
        .collect();
    assert!(!both.is_empty(), "someone has rows in both periods");
    for h in both {
        assert!(
            per_period[0][h].is_disjoint(&per_period[1][h]),
            "a person's pseudonym changed across periods"
        );
    }
}

#[test]
fn the_index_and_record_keys_cannot_be_swapped_under_a_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    synth::write_corpus(&synth::plan(20, SEED), &corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(ok, "first run: {text}");
    for (file, role) in [
        ("index.key".to_owned(), "index"),
        (format!("{FEED}.record.key"), "record:thl-diabetes"),
    ] {
        let path = setup.dir.join("keys").join(&file);
        let saved = std::fs::read(&path).expect("key");
        let mut perms = std::fs::metadata(&path).expect("key").permissions();
        std::fs::remove_file(&path).expect("rm");
        identity::generate_key_file(&path).expect("another key");
        let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
        assert!(!ok, "a run with another {role} key was refused");
        assert!(
            text.contains(&format!("the {role} key changed")),
            "{role}: {text}"
        );
        // Put it back: the store opens again.
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(&path, &saved).expect("restore");
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&path, perms.clone()).expect("chmod");
        let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
        assert!(ok, "{role} key restored: {text}");
    }
}

#[test]
fn a_pseudonym_key_is_not_rotated_under_undelivered_batches() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    synth::write_corpus(&synth::plan(20, SEED), &corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    // The drop folder is a file: the batch is sealed but cannot be delivered.
    let drop_dir = setup.delivered.join(FEED);
    let _ = std::fs::remove_dir_all(&drop_dir);
    std::fs::write(&drop_dir, b"not a folder").expect("blocker");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(!ok, "the delivery failed: {text}");

    let key = setup.dir.join("keys/thl.pseudonym.key");
    let saved = std::fs::read(&key).expect("key");
    let mut perms = std::fs::metadata(&key).expect("key").permissions();
    std::fs::remove_file(&key).expect("rm");
    identity::generate_key_file(&key).expect("new key");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(!ok, "rotation with an undelivered batch was refused");
    assert!(
        text.contains("the pseudonym:thl key changed") && text.contains("undelivered batches 1"),
        "{text}"
    );

    // With the old key back, the batch goes out; then the rotation is taken.
    std::fs::remove_file(&key).expect("rm");
    std::fs::write(&key, &saved).expect("restore");
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&key, perms).expect("chmod");
    std::fs::remove_file(&drop_dir).expect("rm blocker");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(ok, "delivered with the old key: {text}");
    std::fs::remove_file(&key).expect("rm");
    identity::generate_key_file(&key).expect("new key");
    let (ok, text) = regfeed(&["once", "--feed", FEED], &setup.config);
    assert!(ok, "rotation after the outbox drained: {text}");
}
