//! The bytes of every shipped feed's batches for one generated corpus, fixed
//! keys and a fixed run time, held as SHA-256 digests taken before the store
//! and the decoder were rebuilt for speed. Whatever changes inside (bulk
//! writes, threads, one-pass decoding), the same input gives the same data
//! files and the same manifests but for their timestamps. On SQLite always,
//! and on PostgreSQL when `REGFEED_TEST_DATABASE_URL` is set.
//!
//! A digest that changes on purpose (a format change an issue asks for) is
//! updated here in the same commit, with the reason in its message.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use regfeed::app::App;
use regfeed::config::Config;
use regfeed::pipeline::{self, FeedKeys, Mode};

const PATIENTS: u32 = 400;
const SEED: u64 = 7;
/// Small chunks, so that a run stages several batches and the manifest
/// chain is exercised.
const CHUNK: usize = 700;

/// Data file and normalised manifest digests of every batch, by file name.
const GOLDEN: &[(&str, &str)] = &[
    (
        "research-diabetes-00000001.csv",
        "310008dfaceac836ce0f55f5eaf55c740ce8f17ec976a61e3447c980b4e0fc82",
    ),
    (
        "research-diabetes-00000001.manifest.json",
        "82fde6fcf2ef062e9a0f2feaa96149a1fa876fd267fc8a747a30ffeb93553607",
    ),
    (
        "thl-diabetes-00000001.csv",
        "e5c679a5c0899a508f309f7cab580d0d2233645cece322b5845430fa0a80233f",
    ),
    (
        "thl-diabetes-00000001.manifest.json",
        "cb37b1021ab9ed13e2c17eee5bb66dc29719e885f81a6b9f0c966a54ee22ca60",
    ),
    (
        "thl-diabetes-00000002.csv",
        "116c467ba9f264de6933ba5046dfede316798fa2297aa0e9d9a8fe82d1dfa55b",
    ),
    (
        "thl-diabetes-00000002.manifest.json",
        "0148f1206b664ae3ca570d63a322a6e37172fc75f52acff130aed64602f31ea3",
    ),
    (
        "thl-diabetes-00000003.csv",
        "9d0552339e17b502f706eb25a624732f410c8195fb1652c0d4fdf5f0a68c36ef",
    ),
    (
        "thl-diabetes-00000003.manifest.json",
        "6278dba7e06701711293a9133898696240fd90d7489fc9fe71502c5449813c78",
    ),
    (
        "thl-diabetes-00000004.csv",
        "768c36dcb26981fa1fc102a83a51f9dd919338ab46801f208fcd711879afeb9c",
    ),
    (
        "thl-diabetes-00000004.manifest.json",
        "0d4ba85f3ec3374e7b3d6f2824c3088414a7a2a54ababa7db03344f8966f32db",
    ),
    (
        "thl-vaccination-00000001.jsonl",
        "a0aa208b7a64804e5a57f7e26de67b03a1d2ca3c98ef6ca9ff8bd8292dfec1b2",
    ),
    (
        "thl-vaccination-00000001.manifest.json",
        "65dfaa1ba899c1ad75e4cc5069b543e03b20fd32dcb970620bbe43713e05e9f2",
    ),
];

fn write_key(path: &Path, byte: u8) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    writeln!(f, "{}", hex::encode([byte; 32])).expect("write key");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A manifest without the facts that differ between two runs of the same
/// input: when it was staged and sealed, and so the previous manifest's
/// digest (kept as whether there is one).
fn normalised_manifest(bytes: &[u8]) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(bytes).expect("manifest JSON");
    let o = m.as_object_mut().expect("manifest object");
    o.remove("created_at");
    o.remove("sealed_at");
    if let Some(prev) = o.get_mut("previous_manifest_sha256") {
        *prev = serde_json::Value::Bool(!prev.is_null());
    }
    serde_json::to_vec(&m).expect("JSON")
}

async fn digests(database_url: Option<&str>, workers: usize) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(PATIENTS, SEED);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let demo = tmp.path().join("demo");
    let keys = demo.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let mut names = vec!["index.key".to_owned(), "audit.key".to_owned()];
    for f in regfeed::demo::FEEDS {
        names.push(format!("{}.pseudonym.key", f.recipient));
        names.push(format!("{}.record.key", f.name));
    }
    names.sort();
    names.dedup();
    for (i, n) in names.iter().enumerate() {
        write_key(&keys.join(n), i as u8 + 1);
    }
    let setup = regfeed::demo::write_setup(&demo, &corpus).expect("setup");
    let mut cfg = Config::load(&setup.config).expect("config validates");
    cfg.max_documents_per_batch = CHUNK;
    cfg.daemon.workers = workers;
    if let Some(url) = database_url {
        cfg.database_url = url.to_owned().into();
    }
    let app = App::open(cfg).await.expect("app");
    let at: DateTime<Utc> = "2026-12-01T06:00:00Z".parse().expect("time");
    let mut out = BTreeMap::new();
    for f in regfeed::demo::FEEDS {
        let feed = app.cfg.feed(f.name).expect("feed");
        let keys = FeedKeys::for_feed(&app.keys, feed).expect("keys");
        let report = pipeline::stage(&app.cfg, feed, &app.store, keys, at, Mode::Commit)
            .await
            .expect("stage");
        assert!(!report.staged.is_empty(), "{}: nothing staged", f.name);
        app.seal_pending(feed).await.expect("seal");
        let dir = app.outbox_dir(f.name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("outbox")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for p in files {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).expect("read");
            let digest = if name.ends_with(".manifest.json") {
                sha256_hex(&normalised_manifest(&bytes))
            } else {
                sha256_hex(&bytes)
            };
            out.insert(name, digest);
        }
    }
    out
}

fn check(got: &BTreeMap<String, String>) {
    let want: BTreeMap<String, String> = GOLDEN
        .iter()
        .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
        .collect();
    if *got != want {
        let mut listing = String::new();
        for (n, d) in got {
            listing.push_str(&format!("    (\"{n}\", \"{d}\"),\n"));
        }
        panic!(
            "the batches differ from the golden digests ({} files now, {} golden); now:\n{listing}",
            got.len(),
            want.len()
        );
    }
}

/// The same bytes whatever the number of decoding threads: one (the run in
/// sequence), two, and more threads than cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_byte_identical_on_sqlite_with_any_number_of_workers() {
    for workers in [1, 2, 5] {
        let got = digests(None, workers).await;
        eprintln!("daemon.workers = {workers}: {} files", got.len());
        check(&got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_byte_identical_on_postgres() {
    let Some(db) = common::PgDb::create("golden") else {
        return;
    };
    check(&digests(Some(&db.url), 2).await);
}
