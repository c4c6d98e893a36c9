//! Reliable delivery (issue 5): the outbox through a faulty register —
//! every batch accepted exactly once, in order per feed; a permanent 400
//! kills one batch and holds back only its own feed; a conflict is dead and
//! alerted, never overwritten; mTLS refuses the wrong client; the operator
//! retries and replays.

use crate::common::delivery as helpers;
use crate::receiver;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use helpers::{SinkSpec, open, secret_file, stage_synthetic, write_http_setup};
use receiver::{Fault, Options, Req};
use sha2::{Digest, Sha256};

const A: &str = "thl-diabetes";
const B: &str = "thl-vaccination";

/// A deterministic, well-mixed number in 0..100 for request `n`.
fn roll(n: u64) -> u64 {
    let h = Sha256::digest(n.to_le_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % 100
}

/// About 40 % of requests fail, in mixed ways.
fn flaky(r: &Req) -> Fault {
    match roll(r.n) {
        0..15 => Fault::Unavailable,
        15..25 => Fault::TooMany("0".into()),
        25..35 => Fault::Reset,
        35..40 => Fault::Slow(Duration::from_millis(700)),
        _ => Fault::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_batches_through_a_register_failing_forty_percent_arrive_exactly_once_in_order()
 {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.tls = Some(pki.clone());
    opts.token = Some("test-token-1".into());
    opts.injector = Arc::new(flaky);
    let reg = receiver::start(opts).await;

    let mut spec = SinkSpec::new(&reg.base_url);
    spec.ca = Some(pki.ca.clone());
    spec.token = Some(secret_file(&tmp.path().join("token"), "test-token-1\n"));
    spec.attempt_timeout = "300ms";
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
    let app = open(&config).await;
    stage_synthetic(&app, A, 250).await;
    stage_synthetic(&app, B, 250).await;

    for (feed, r) in app.deliver_all().await {
        let d = r.expect("delivery runs");
        // Only feeds A and B had batches staged.
        let want = if feed == A || feed == B { 250 } else { 0 };
        assert_eq!(d.delivered.len(), want, "{feed}: {d:?}");
        assert!(d.dead.is_empty() && d.waiting_on.is_none(), "{feed}: {d:?}");
    }

    let s = reg.snapshot();
    for feed in [A, B] {
        let seqs: Vec<u64> = s
            .log
            .iter()
            .filter(|(f, _)| f == feed)
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(
            seqs,
            (1..=250).collect::<Vec<_>>(),
            "{feed}: accepted once each, in order"
        );
    }
    assert_eq!(s.accepts.len(), 500);
    assert!(
        s.accepts.values().all(|&n| n == 1),
        "no batch accepted twice"
    );
    assert_eq!(s.conflicts, 0);
    assert!(s.refused.is_empty(), "protocol refusals: {:?}", s.refused);
    let failed: u64 = s.injected.values().sum();
    let share = failed as f64 / s.requests as f64;
    eprintln!(
        "fault test: {} requests, {} injected faults ({:.0} %): {:?}; {} idempotent repeats",
        s.requests,
        failed,
        share * 100.0,
        s.injected,
        s.duplicates
    );
    assert!((0.3..0.5).contains(&share), "about 40 % failed: {share}");
    for k in ["503", "429", "reset", "slow"] {
        assert!(s.injected.get(k).copied().unwrap_or(0) > 0, "{k} injected");
    }

    let counts = app.store.outbox_counts().await.expect("counts");
    for c in &counts {
        assert_eq!(
            (c.delivered, c.dead, c.sealed, c.sending, c.staged),
            (250, 0, 0, 0, 0),
            "{c:?}"
        );
    }
    let attempts: i64 = counts.iter().map(|c| c.attempts_total).sum();
    assert!(attempts > 500, "retries are recorded: {attempts}");
    let tries = app.store.attempts(A, 1).await.expect("attempts");
    assert_eq!(tries.last().map(|t| t.outcome.as_str()), Some("delivered"));
    assert!(
        tries
            .iter()
            .all(|t| t.finished_at.is_some() && t.latency_ms.is_some())
    );

    // What the register stored passes the receiver's offline check.
    for feed in [A, B] {
        let report = regfeed::feed::verify::verify_dir(&tmp.path().join("received").join(feed));
        assert!(report.problems.is_empty(), "{feed}: {:?}", report.problems);
        assert_eq!(report.batches, 250);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_400_kills_one_batch_holds_back_its_feed_only_and_an_operator_retry_finishes_it()
 {
    let tmp = tempfile::tempdir().expect("tmp");
    let broken = Arc::new(AtomicBool::new(true));
    let mut opts = Options::new(&tmp.path().join("received"));
    let b2 = Arc::clone(&broken);
    opts.injector = Arc::new(move |r: &Req| {
        if r.feed == A && r.seq == 3 && b2.load(Ordering::SeqCst) {
            Fault::BadRequest("row 1: column \"code\" is not in code list ICD-10\r\n".into())
        } else if r.n.is_multiple_of(3) {
            Fault::Unavailable
        } else {
            Fault::None
        }
    });
    let reg = receiver::start(opts).await;
    let config = write_http_setup(
        &tmp.path().join("demo"),
        &tmp.path().join("corpus"),
        &SinkSpec::new(&reg.base_url),
    );
    let app = open(&config).await;
    stage_synthetic(&app, A, 5).await;
    stage_synthetic(&app, B, 5).await;

    let results = app.deliver_all().await;
    let a = results[0].1.as_ref().expect("feed A runs");
    let b = results[1].1.as_ref().expect("feed B runs");
    assert_eq!(a.delivered, vec![1, 2]);
    assert_eq!((a.dead.clone(), a.waiting_on), (vec![3], Some(3)));
    assert_eq!(
        b.delivered,
        vec![1, 2, 3, 4, 5],
        "the other feed is not held back"
    );

    let list = app.store.outbox(Some(A)).await.expect("outbox");
    let states: Vec<&str> = list.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(
        states,
        ["delivered", "delivered", "dead", "staged", "staged"]
    );
    let reason = list[2].dead_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("400") && reason.contains("is not in code list ICD-10"),
        "{reason}"
    );
    assert!(
        !reason.contains('\r') && !reason.contains('\n'),
        "sanitised: {reason:?}"
    );
    let tries = app.store.attempts(A, 3).await.expect("attempts");
    assert_eq!(
        tries.last().map(|t| (t.outcome.as_str(), t.http_status)),
        Some(("dead", Some(400)))
    );
    let c = app.store.outbox_counts().await.expect("counts");
    assert_eq!(
        c.iter()
            .find(|c| c.feed == A)
            .map(|c| (c.dead, c.dead_total)),
        Some((1, 1))
    );

    // A later run does not skip past the dead batch.
    let again = app
        .deliver_feed(app.cfg.feed(A).expect("A"))
        .await
        .expect("runs");
    assert!(
        again.delivered.is_empty() && again.waiting_on == Some(3),
        "{again:?}"
    );

    // The register fixes its code list; the operator retries.
    broken.store(false, Ordering::SeqCst);
    let done = app.retry_dead(A, 3).await.expect("retry");
    assert_eq!(done.delivered, vec![3, 4, 5]);
    let seqs: Vec<u64> = reg
        .snapshot()
        .log
        .iter()
        .filter(|(f, _)| f == A)
        .map(|(_, q)| *q)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    // Replay re-sends a delivered batch; the register answers idempotently.
    let receipt = app.replay(A, 2).await.expect("replay");
    assert!(receipt.contains("\"seq\":2"), "{receipt}");
    let s = reg.snapshot();
    assert_eq!(s.duplicates, 1);
    assert!(s.accepts.values().all(|&n| n == 1));
    assert!(app.replay(A, 9).await.is_err(), "no such batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sequence_with_other_content_is_a_dead_conflict_never_an_overwrite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = receiver::start(Options::new(&tmp.path().join("received"))).await;
    let spec = SinkSpec::new(&reg.base_url);
    // First regfeed: delivers batch 1.
    let c1 = write_http_setup(&tmp.path().join("one"), &tmp.path().join("corpus"), &spec);
    let app1 = open(&c1).await;
    stage_synthetic(&app1, A, 1).await;
    assert_eq!(
        app1.deliver_feed(app1.cfg.feed(A).expect("A"))
            .await
            .expect("runs")
            .delivered,
        [1]
    );
    // A second regfeed (other keys, so other bytes) sends its own batch 1.
    let c2 = write_http_setup(&tmp.path().join("two"), &tmp.path().join("corpus"), &spec);
    let app2 = open(&c2).await;
    helpers::stage_salted(&app2, A, 1, ":other").await;
    let d = app2
        .deliver_feed(app2.cfg.feed(A).expect("A"))
        .await
        .expect("runs");
    assert_eq!((d.dead.clone(), d.waiting_on), (vec![1], Some(1)));
    let e = &app2.store.outbox(Some(A)).await.expect("outbox")[0];
    assert!(
        e.dead_reason
            .as_deref()
            .unwrap_or("")
            .starts_with("conflict:"),
        "{e:?}"
    );
    let c = app2.store.outbox_counts().await.expect("counts");
    assert_eq!(c[0].conflicts_total, 1);
    let s = reg.snapshot();
    assert_eq!(
        (s.conflicts, s.accepts.len()),
        (1, 1),
        "nothing overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_the_right_client_certificate_and_refuses_a_wrong_one_or_none() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.tls = Some(pki.clone());
    opts.require_client_cert = true;
    let reg = receiver::start(opts).await;

    let mut refused = Vec::new();
    for (name, client) in [
        ("none", None),
        (
            "rogue",
            Some((pki.rogue_client_cert.clone(), pki.rogue_client_key.clone())),
        ),
    ] {
        let mut spec = SinkSpec::new(&reg.base_url);
        spec.ca = Some(pki.ca.clone());
        spec.client = client;
        spec.max_elapsed = "200ms";
        let config = write_http_setup(&tmp.path().join(name), &tmp.path().join("corpus"), &spec);
        let app = open(&config).await;
        stage_synthetic(&app, A, 1).await;
        let d = app
            .deliver_feed(app.cfg.feed(A).expect("A"))
            .await
            .expect("runs");
        assert!(d.delivered.is_empty(), "{name}: {d:?}");
        let e = &app.store.outbox(Some(A)).await.expect("outbox")[0];
        assert_ne!(e.state, "delivered", "{name}");
        assert!(e.delivered_at.is_none() && e.receipt_id.is_none(), "{name}");
        refused.push(e.dead_reason.clone().unwrap_or_default());
    }
    assert!(
        reg.snapshot().accepts.is_empty(),
        "nothing accepted without the right client certificate"
    );

    let mut spec = SinkSpec::new(&reg.base_url);
    spec.ca = Some(pki.ca.clone());
    spec.client = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let config = write_http_setup(&tmp.path().join("right"), &tmp.path().join("corpus"), &spec);
    let app = open(&config).await;
    stage_synthetic(&app, A, 1).await;
    let d = app
        .deliver_feed(app.cfg.feed(A).expect("A"))
        .await
        .expect("runs");
    assert_eq!(
        d.delivered,
        [1],
        "the right certificate is accepted ({refused:?})"
    );
    assert_eq!(
        app.store.outbox(Some(A)).await.expect("outbox")[0].state,
        "delivered"
    );
}

#[tokio::test]
async fn certificate_verification_is_always_on_and_plain_http_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let other = receiver::pki(&tmp.path().join("other"));
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.tls = Some(pki.clone());
    let reg = receiver::start(opts).await;
    // Trusting another CA: the register's certificate is refused.
    let mut spec = SinkSpec::new(&reg.base_url);
    spec.ca = Some(other.ca.clone());
    spec.max_elapsed = "100ms";
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
    let app = open(&config).await;
    stage_synthetic(&app, A, 1).await;
    let d = app
        .deliver_feed(app.cfg.feed(A).expect("A"))
        .await
        .expect("runs");
    assert_eq!(d.dead, [1]);
    assert!(reg.snapshot().accepts.is_empty());

    // http:// without allow_insecure_http does not validate.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("https://", "http://");
    std::fs::write(&config, text).expect("write");
    let err = regfeed::loaded::Config::load(&config).expect_err("plain http refused");
    assert!(err.to_string().contains("feeds.sink.base_url"), "{err}");
}

#[tokio::test]
async fn a_token_file_readable_by_others_is_refused_and_the_batch_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = receiver::start(Options::new(&tmp.path().join("received"))).await;
    let mut spec = SinkSpec::new(&reg.base_url);
    let token = secret_file(&tmp.path().join("token"), "s3cret-token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    spec.token = Some(token);
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
    let app = open(&config).await;
    stage_synthetic(&app, A, 1).await;
    let err = app
        .deliver_feed(app.cfg.feed(A).expect("A"))
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("group or others") && !msg.contains("s3cret"),
        "{msg}"
    );
    assert_eq!(
        app.store.outbox(Some(A)).await.expect("outbox")[0].state,
        "staged"
    );
}

#[tokio::test]
async fn feed_verify_says_precisely_what_is_missing_or_wrong() {
    let tmp = tempfile::tempdir().expect("tmp");
    let got = tmp.path().join("received");
    let reg = receiver::start(Options::new(&got)).await;
    let config = write_http_setup(
        &tmp.path().join("demo"),
        &tmp.path().join("corpus"),
        &SinkSpec::new(&reg.base_url),
    );
    let app = open(&config).await;
    stage_synthetic(&app, A, 4).await;
    assert_eq!(
        app.deliver_feed(app.cfg.feed(A).expect("A"))
            .await
            .expect("runs")
            .delivered
            .len(),
        4
    );
    let dir = got.join(A);
    let clean = regfeed::feed::verify::verify_dir(&dir);
    assert!(clean.problems.is_empty() && clean.batches == 4, "{clean:?}");

    let name = |seq: u64, ext: &str| format!("{A}-{seq:08}.{ext}");
    // Batch 2 lost; batch 3's data altered; batch 4's manifest re-chained.
    std::fs::remove_file(dir.join(name(2, "manifest.json"))).expect("rm");
    let mut data = std::fs::read(dir.join(name(3, "csv"))).expect("data");
    let last = data.len() - 2;
    data[last] ^= 1;
    std::fs::write(dir.join(name(3, "csv")), data).expect("write");
    let m4 = std::fs::read_to_string(dir.join(name(4, "manifest.json"))).expect("m4");
    let prev =
        serde_json::from_str::<serde_json::Value>(&m4).expect("json")["previous_manifest_sha256"]
            .as_str()
            .expect("link")
            .to_owned();
    std::fs::write(
        dir.join(name(4, "manifest.json")),
        m4.replace(&prev, &"0".repeat(64)),
    )
    .expect("write");
    std::fs::write(dir.join("stray.csv"), "x").expect("stray");

    let r = regfeed::feed::verify::verify_dir(&dir);
    let has = |file: &str, what: &str| {
        r.problems
            .iter()
            .any(|p| p.file == file && p.problem.contains(what))
    };
    assert!(
        has(&name(3, "manifest.json"), "batch(es) 2 of feed"),
        "{:?}",
        r.problems
    );
    assert!(
        has(&name(2, "csv"), "no manifest names this file"),
        "{:?}",
        r.problems
    );
    assert!(has(&name(3, "csv"), "SHA-256 is"), "{:?}", r.problems);
    assert!(
        has(&name(4, "manifest.json"), "previous_manifest_sha256"),
        "{:?}",
        r.problems
    );
    assert!(
        has("stray.csv", "no manifest names this file"),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn an_operator_retry_reseals_a_dead_batch_whose_rows_changed_under_the_same_sequence() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broken = Arc::new(AtomicBool::new(true));
    let b2 = Arc::clone(&broken);
    let mut opts = Options::new(&tmp.path().join("received"));
    opts.injector = Arc::new(move |r: &Req| {
        if r.seq == 2 && b2.load(Ordering::SeqCst) {
            Fault::BadRequest("refused".into())
        } else {
            Fault::None
        }
    });
    let reg = receiver::start(opts).await;
    let config = write_http_setup(
        &tmp.path().join("demo"),
        &tmp.path().join("corpus"),
        &SinkSpec::new(&reg.base_url),
    );
    let app = open(&config).await;
    stage_synthetic(&app, A, 3).await;
    let feed = app.cfg.feed(A).expect("A");
    let d = app.deliver_feed(feed).await.expect("runs");
    assert_eq!((d.delivered.clone(), d.dead.clone()), (vec![1], vec![2]));
    let before = app.store.batch(A, 2).await.expect("b").expect("2");

    // Unchanged rows: no re-seal.
    assert!(!app.recheck_and_reseal(feed, 2).await.expect("recheck"));

    // The staged rows change (as a sealing-time policy re-check would make
    // them): the retry re-seals batch 2 under the same sequence.
    sqlx::query("UPDATE batch_rows SET op = 'retract', row = '[]' WHERE feed = ? AND seq = 2")
        .bind(A)
        .execute(app.store.pool())
        .await
        .expect("change rows");
    broken.store(false, Ordering::SeqCst);
    let d = app.retry_dead(A, 2).await.expect("retry");
    assert_eq!(d.sealed, vec![2, 3]);
    assert_eq!(d.delivered, vec![2, 3]);
    let after = app.store.batch(A, 2).await.expect("b").expect("2");
    assert_ne!(before.data_sha256, after.data_sha256, "new digest");
    let e = &app.store.outbox(Some(A)).await.expect("outbox")[1];
    assert_eq!(e.reseals, 1);
    let s = reg.snapshot();
    assert_eq!(
        s.accepted.get(&(A.to_owned(), 2)).map(|a| a.0.clone()),
        after.data_sha256
    );
    // The register's copy still chains; the retract of an id batch 1 never
    // upserted is flagged, as it should be.
    let r = regfeed::feed::verify::verify_dir(&tmp.path().join("received").join(A));
    assert_eq!(r.batches, 3);
    assert!(
        r.problems.len() == 1 && r.problems[0].problem.contains("retracts a record_id"),
        "{:?}",
        r.problems
    );
}
