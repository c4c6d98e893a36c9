//! Delivery figures (not a timed test): `cargo bench --bench delivery`.
//!
//! 1. Throughput: 1,000 staged batches (200 rows each) sealed and sent over
//!    HTTPS (TLS 1.3, ring) to the local test register: batches/s and MB/s.
//! 2. Memory: one 1 GB batch sent from disk; peak RSS of the whole process
//!    (sender and receiver) measured from a reset high-water mark
//!    (`/proc/self/clear_refs`), to show the body is streamed.
//!
//! `REGFEED_BENCH_BATCHES` and `REGFEED_BENCH_BIG_MB` change the sizes.

#[path = "../tests/it/common/delivery.rs"]
mod helpers;
#[path = "../tests/it/receiver/mod.rs"]
mod receiver;

use std::io::Write;
use std::time::Instant;

use chrono::Utc;
use regfeed::deliver::http::{HttpSink, HttpSinkConfig, Upload};
use regfeed::feed::MediaType;
use regfeed::feed::manifest::{
    Art6, Art9, Counts, DataRef, Identity, IdentityKind, LegalBasis, Manifest, MappingRef, Purpose,
    Window,
};
use sha2::{Digest, Sha256};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_reset() {
    // "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        let pki = receiver::pki(&tmp.path().join("pki"));
        let mut opts = receiver::Options::new(&tmp.path().join("received"));
        opts.tls = Some(pki.clone());
        let reg = receiver::start(opts).await;
        let mut spec = helpers::SinkSpec::new(&reg.base_url);
        spec.ca = Some(pki.ca.clone());
        spec.attempt_timeout = "600s";
        let config =
            helpers::write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
        let app = helpers::open(&config).await;

        // 1. Throughput.
        let n = env_num("REGFEED_BENCH_BATCHES", 1000);
        let feed = "thl-diabetes";
        stage_rows(&app, feed, n, 200).await;
        let t = Instant::now();
        let d = app
            .deliver_feed(app.cfg.feed(feed).expect("feed"))
            .await
            .expect("delivery");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(d.delivered.len(), n);
        let bytes: i64 = app
            .store
            .outbox(Some(feed))
            .await
            .expect("outbox")
            .iter()
            .filter_map(|e| e.data_bytes)
            .sum();
        println!(
            "throughput: {n} batches, {:.1} MB in {secs:.2} s (seal + send, HTTPS, one feed): {:.0} batches/s, {:.1} MB/s",
            bytes as f64 / 1e6,
            n as f64 / secs,
            bytes as f64 / 1e6 / secs
        );

        // 2. A 1 GB batch, streamed.
        let mb = env_num("REGFEED_BENCH_BIG_MB", 1024);
        let dir = tmp.path().join("big");
        std::fs::create_dir_all(&dir).expect("dir");
        let (file, bytes, records, sha) = write_big(&dir, "big-feed", mb);
        let manifest = big_manifest(&file, bytes, records, &sha);
        let manifest_bytes = manifest.to_bytes().expect("manifest");
        let manifest_sha = hex::encode(Sha256::digest(&manifest_bytes));
        let HttpSinkConfigOrPanic(cfg) = http_cfg(&app);
        let sink = HttpSink::build(&cfg).expect("sink");
        rss_reset();
        let before = regfeed::telemetry::peak_rss_bytes().unwrap_or(0);
        let t = Instant::now();
        let ok = sink
            .put(&Upload {
                feed: "big-feed",
                seq: 1,
                data_path: dir.join(&file),
                data_bytes: bytes,
                data_sha256: &sha,
                media_type: MediaType::Csv,
                manifest: manifest_bytes,
                manifest_sha256: &manifest_sha,
            })
            .await
            .expect("1 GB batch accepted");
        let secs = t.elapsed().as_secs_f64();
        let peak = regfeed::telemetry::peak_rss_bytes().unwrap_or(0);
        println!(
            "1 GB batch: {:.0} MB sent in {secs:.1} s ({:.0} MB/s), receipt {}; peak RSS {:.1} MB (before the send {:.1} MB; growth {:.1} MB)",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs,
            ok.receipt.receipt_id,
            peak as f64 / 1e6,
            before as f64 / 1e6,
            (peak.saturating_sub(before)) as f64 / 1e6
        );
    });
}

struct HttpSinkConfigOrPanic(HttpSinkConfig);

fn http_cfg(app: &regfeed::app::App) -> HttpSinkConfigOrPanic {
    match &app.cfg.feeds[0].sink {
        regfeed::config::SinkConfig::Http(h) => HttpSinkConfigOrPanic(h.clone()),
        other => panic!("not an http sink: {other:?}"),
    }
}

async fn stage_rows(app: &regfeed::app::App, feed: &str, batches: usize, rows: usize) {
    use regfeed::store::{BatchRow, NewBatch};
    let cols = app
        .cfg
        .feed(feed)
        .expect("feed")
        .mapping
        .feed_columns()
        .len();
    let row = serde_json::to_string(&vec![serde_json::Value::Null; cols]).expect("json");
    for _ in 0..batches {
        let mut tx = app.store.begin().await.expect("tx");
        let seq = tx.next_seq(feed).await.expect("seq");
        let r: Vec<BatchRow> = (0..rows)
            .map(|i| BatchRow {
                record_id: hex::encode(Sha256::digest(format!("{seq}:{i}"))),
                op: "upsert".into(),
                row: row.clone(),
                person: None,
                doc_key: None,
            })
            .collect();
        tx.insert_batch(
            &NewBatch {
                feed: feed.into(),
                seq,
                window_from: None,
                window_to: seq,
                upserts: rows as i64,
                retracts: 0,
                held: "{}".into(),
                policy: "{}".into(),
            },
            &r,
        )
        .await
        .expect("batch");
        tx.commit().await.expect("commit");
    }
}

/// Writes a CSV data file of about `mb` MB; returns name, bytes, rows, sha256.
fn write_big(dir: &std::path::Path, feed: &str, mb: usize) -> (String, u64, u64, String) {
    let name = format!("{feed}-00000001.csv");
    let f = std::fs::File::create(dir.join(&name)).expect("create");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut put = |b: &[u8], w: &mut std::io::BufWriter<std::fs::File>| {
        h.update(b);
        w.write_all(b).expect("write");
    };
    let header = b"record_id,op,note\n";
    put(header, &mut w);
    let mut bytes = header.len() as u64;
    let mut rows = 0u64;
    let target = mb as u64 * 1_000_000;
    while bytes < target {
        let line = format!(
            "{},upsert,{}\n",
            hex::encode(Sha256::digest(rows.to_le_bytes())),
            "x".repeat(60)
        );
        put(line.as_bytes(), &mut w);
        bytes += line.len() as u64;
        rows += 1;
    }
    w.flush().expect("flush");
    (name, bytes, rows, hex::encode(h.finalize()))
}

fn big_manifest(file: &str, bytes: u64, records: u64, sha: &str) -> Manifest {
    Manifest {
        format: Default::default(),
        feed: "big-feed".into(),
        register: "bench".into(),
        seq: 1,
        created_at: Utc::now(),
        sealed_at: Utc::now(),
        window: Window {
            from: None,
            to: "1".into(),
        },
        mapping: MappingRef {
            name: "bench".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
        },
        rules_version: "none".into(),
        legal_basis: LegalBasis {
            purpose: Purpose::Statistics,
            gdpr_art6: Art6::LegalObligation,
            gdpr_art9: Art9::PublicHealth,
            statute: Some("bench".into()),
            derogation: None,
        },
        identity: Identity {
            kind: IdentityKind::Hetu,
            key_id: None,
            record_key_id: "bench".into(),
        },
        data: DataRef {
            file: file.into(),
            media_type: MediaType::Csv,
            bytes,
            records,
            sha256: sha.into(),
        },
        counts: Counts {
            upserts: records,
            retracts: 0,
            ..Counts::default()
        },
        previous_manifest_sha256: None,
        test: true,
    }
}
