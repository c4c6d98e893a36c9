//! The bytes of every shipped feed's batches for one generated corpus, fixed
//! keys and a fixed run time, held as SHA-256 digests taken before the store
//! and the decoder were rebuilt for speed. Whatever changes inside (bulk
//! writes, threads, one-pass decoding), the same input gives the same data
//! files and the same manifests but for their timestamps. On SQLite always,
//! and on PostgreSQL when `REGFEED_TEST_DATABASE_URL` is set.
//!
//! A digest that changes on purpose (a format change an issue asks for) is
//! updated here in the same commit, with the reason in its message.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use regfeed::app::App;
use regfeed::loaded::Config;
use regfeed::pipeline::{self, FeedKeys, Mode};

const PATIENTS: u32 = 400;
const SEED: u64 = 7;
/// Small chunks, so that a run stages several batches and the manifest
/// chain is exercised.
const CHUNK: usize = 700;

/// Feeds (and recipients) shipped after the first digests were taken.
const LATER_FEEDS: &[&str] = &["county-statistics.", "pirkanmaa."];

/// Data file and normalised manifest digests of every batch, by file name.
const GOLDEN: &[(&str, &str)] = &[
    (
        "county-statistics-00000001.csv",
        "62c8f61bdb74bbe96ea7d0d1ea4802895865420ef57009a02fa6f51835d34705",
    ),
    (
        "county-statistics-00000001.manifest.json",
        "3d929a6d1bf1b5a70fdacf2f6c1bca35d5dfa68dfdc63085315cc118237329d5",
    ),
    (
        "research-diabetes-00000001.csv",
        "63fe9c1e91f19ec7a5526230f282eb763e346bcb0f180ebd9f41cb6cf0ad0c88",
    ),
    (
        "research-diabetes-00000001.manifest.json",
        "86f5489a72b3e17e68732c8d6e4f3da05fc6658c2eaaf9be905bf36fbbbdaf5f",
    ),
    (
        "thl-diabetes-00000001.csv",
        "787d2f40a9f5ba616c149ef7bb1b81c671abb4ceb2e09be3fd90c5acb62b3132",
    ),
    (
        "thl-diabetes-00000001.manifest.json",
        "9a84575da93b187e1aef2e9177625fce06dcd447de70c7a5508138ed5749cb53",
    ),
    (
        "thl-diabetes-00000002.csv",
        "3250251722bfed1a7307758d6fc59579d143ce578f20af722f309fa2fb68dbcb",
    ),
    (
        "thl-diabetes-00000002.manifest.json",
        "a2c34dba1ac97ce465ced41f480dd08ad5a476eefa06624b72b65dea3a5a8ea3",
    ),
    (
        "thl-diabetes-00000003.csv",
        "ab4fcdbded6587ca8d192be01ff0af0ab7ae04c5e52f1901d9b9320e3f60a584",
    ),
    (
        "thl-diabetes-00000003.manifest.json",
        "a64953d0ed30900323cbda920c288289ecb9d0c7f60e1060400252c89139951c",
    ),
    (
        "thl-diabetes-00000004.csv",
        "e54ae5b24af8cd9d923f49bf2bdd9deaa01b2f95b1e9e8f7ddd492eb31463f89",
    ),
    (
        "thl-diabetes-00000004.manifest.json",
        "389877701122425b34bf6e5f7905616269cc3a762cf8d2a6da92f5164673bc6b",
    ),
    (
        "thl-vaccination-00000001.jsonl",
        "a0aa208b7a64804e5a57f7e26de67b03a1d2ca3c98ef6ca9ff8bd8292dfec1b2",
    ),
    (
        "thl-vaccination-00000001.manifest.json",
        "73b5e79576e070f52c44296bdffbd6c9c2540f5562633c1421c75962678e7f71",
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
    // Keys of feeds shipped after the digests were taken come last, so
    // that the earlier feeds keep their keys (and their bytes).
    let later = |n: &String| LATER_FEEDS.iter().any(|f| n.starts_with(f));
    let (mut names, added): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| !later(n));
    names.extend(added);
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
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn batches_are_byte_identical_on_postgres() {
    let Some(db) = common::PgDb::create("golden") else {
        return;
    };
    check(&digests(Some(&db.url), 2).await);
}
