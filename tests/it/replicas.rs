//! Three `regfeed run` replicas on one PostgreSQL store (issue 7), with the
//! real binary: fast schedules for the three demo feeds while documents keep
//! arriving. Every scheduled fire runs exactly once across the replicas;
//! at least two replicas do work; one replica is SIGKILLed while it holds a
//! lease and another finishes its fire; a replica paused inside a run past
//! its lease cannot commit when resumed (fencing); the audit trail verifies;
//! batch sequences are gapless; and what the diabetes register received,
//! folded, equals what one node on SQLite delivers for the same documents.
//!
//! Needs `REGFEED_TEST_DATABASE_URL` (skips with a notice without it; fails
//! under CI). `REGFEED_LONG_TESTS=1` runs it for longer.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regfeed::feed::{self, Op};
use regfeed::loaded::Config;
use regfeed::synth;
use sqlx::Row as _;

const FEEDS: [&str; 3] = ["thl-diabetes", "thl-vaccination", "research-diabetes"];
const LEASE_TTL_S: u64 = 4;

struct Replica {
    child: Child,
    log: PathBuf,
    mark: PathBuf,
}

/// A replica left running by a failed assertion is killed (a paused one
/// too), so that it neither outlives the test nor keeps its database open.
impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn regfeed() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regfeed"));
    c.env_remove("RUST_LOG").env_remove("REGFEED_FAILPOINT");
    c
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
        .unwrap_or(false)
}

fn pid_of(holder: &str) -> Option<u32> {
    holder.split_once(':')?.1.split('@').next()?.parse().ok()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Moves the documents of patients `range` of the full corpus into the
/// watched folder (rename: what a producer does).
fn release(all: &Path, corpus: &Path, files: &[PathBuf]) {
    for f in files {
        let rel = f.strip_prefix(all).expect("under all");
        let to = corpus.join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::rename(f, &to).expect("move");
    }
}

/// The register's view after every delivered batch of `feed` in `dir`, in
/// order: record id → row.
fn folded(dir: &Path, cfg: &Config, feed_name: &str) -> (BTreeMap<String, String>, Vec<u64>) {
    let fc = cfg.feed(feed_name).expect("feed");
    let cols = fc.mapping.feed_columns();
    let mut seqs = Vec::new();
    let mut state = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    for p in files {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{feed_name}-")) else {
            continue;
        };
        let Some((seq, ext)) = rest.split_once('.') else {
            continue;
        };
        if ext == "manifest.json" {
            continue;
        }
        seqs.push(seq.parse::<u64>().expect("seq"));
        let f = std::io::BufReader::new(std::fs::File::open(&p).expect("open"));
        let rows = match ext {
            "csv" => feed::csv::read(f, &cols).expect("csv"),
            "jsonl" => feed::jsonl::read(f, &cols).expect("jsonl"),
            other => panic!("unexpected data file .{other}"),
        };
        for r in rows {
            match r.op {
                Op::Upsert => {
                    state.insert(r.record_id.clone(), format!("{:?}", r.values));
                }
                Op::Retract => {
                    state.remove(&r.record_id);
                }
            }
        }
    }
    (state, seqs)
}

#[test]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
fn three_replicas_share_the_work_exactly_once() {
    let Some(db) = common::PgDb::create("replicas") else {
        return;
    };
    let long = std::env::var_os("REGFEED_LONG_TESTS").is_some();
    let rounds = if long { 24 } else { 8 };
    // REGFEED_TEST_KEEP=1 keeps the logs, the corpus and the setup after
    // the test (to read a failure).
    let tmp = tempfile::tempdir().expect("tmp");
    let (_tmp, root) = if std::env::var_os("REGFEED_TEST_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("NOTICE: keeping {}", kept.display());
        (None, kept)
    } else {
        let root = tmp.path().to_owned();
        (Some(tmp), root)
    };
    let all = root.join("all");
    let corpus = root.join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let plan = synth::plan(if long { 900 } else { 300 }, 7);
    synth::write_corpus(&plan, &all).expect("write corpus");
    let pending = common::files_under(&all);
    let per_round = pending.len().div_ceil(rounds);
    let mut batches = pending.chunks(per_round).map(<[PathBuf]>::to_vec);

    // The demo's setup (keys, mappings, three feeds), with fast schedules
    // and a short lease.
    let setup = regfeed::demo::write_setup(&root.join("setup"), &corpus).expect("setup");
    let mut text = std::fs::read_to_string(&setup.config).expect("config");
    text = text.replace(
        "[daemon]\nstate_dir = \"state\"\n",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nlease_ttl = \"{LEASE_TTL_S}s\"\ndelivery_interval = \"2s\"\n"
        ),
    );
    for (i, f) in FEEDS.iter().enumerate() {
        let at = format!("[[feeds]]\nname = \"{f}\"\n");
        assert!(text.contains(&at), "feed {f} in the demo config");
        let cron = ["*/5 * * * * *", "2/5 * * * * *", "4/7 * * * * *"][i];
        text = text.replace(&at, &format!("{at}schedule = \"{cron}\"\n"));
    }
    std::fs::write(&setup.config, &text).expect("write config");
    let config = setup.config.to_string_lossy().into_owned();
    // The single-node reference reads the same setup on SQLite afterwards.
    let cfg = Config::load(&setup.config).expect("config validates");

    let start = |i: usize, extra: &[(&str, String)]| -> Replica {
        let log = root.join(format!("replica-{i}.log"));
        let mark = root.join(format!("replica-{i}.mark"));
        let mut c = regfeed();
        c.args(["run", "--config", &config])
            .env("REGFEED_DATABASE__URL", &db.url)
            .env("REGFEED_TELEMETRY__LISTEN", "127.0.0.1:0")
            .env("REGFEED_LOG", "info")
            .env("REGFEED_FAILPOINT_MARK", &mark)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join(format!("replica-{i}.out"))).expect("out"))
            .stderr(std::fs::File::create(&log).expect("log"));
        for (k, v) in extra {
            c.env(k, v);
        }
        Replica {
            child: c.spawn().expect("start a replica"),
            log,
            mark,
        }
    };
    release(&all, &corpus, &batches.next().expect("first round"));
    let mut replicas = [
        start(0, &[]),
        start(1, &[]),
        // Replica 2 stops itself just before its second staging commit.
        start(
            2,
            &[
                ("REGFEED_FAILPOINT", "commit:2".into()),
                ("REGFEED_FAILPOINT_ACTION", "stop".into()),
            ],
        ),
    ];

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pool = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(&db.url),
        )
        .expect("connect");
    let q = |sql: &str| -> Vec<sqlx::postgres::PgRow> {
        rt.block_on(sqlx::query(sql).fetch_all(&pool))
            .unwrap_or_default()
    };

    let deadline = Instant::now() + Duration::from_secs(if long { 600 } else { 150 });
    let mut killed: Option<(u32, String, String)> = None; // pid, holder, feed
    let mut paused: Option<(u32, Instant)> = None;
    let mut resumed = false;
    let mut round_at = Instant::now();
    let mut released_all = false;
    loop {
        if Instant::now() > deadline {
            let logs: Vec<String> = replicas
                .iter()
                .map(|r| {
                    let l = r.log();
                    let mut tail: Vec<&str> = l.lines().rev().take(12).collect();
                    tail.reverse();
                    tail.join("\n")
                })
                .collect();
            let seen = q("SELECT 1 FROM seen").len();
            let cursors: Vec<(String, i64)> = q("SELECT feed, doc_key FROM feed_cursor")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let open: Vec<(String, i64, String)> =
                q("SELECT feed, seq, state FROM batches WHERE state <> 'delivered'")
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
            let fires: Vec<(String, String, String)> =
                q("SELECT feed, fire_at, holder FROM fires WHERE state <> 'done'")
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
            // What every session of the store is doing, and waiting for.
            let sessions: Vec<String> = q(
                "SELECT a.pid::text || ' ' || COALESCE(a.state, '') || ' ' || COALESCE(a.wait_event_type, '') || '/' || COALESCE(a.wait_event, '')
                        || ' xact=' || COALESCE(a.xact_start::text, '-') || ' blocked_by=' || COALESCE(pg_blocking_pids(a.pid)::text, '')
                        || ' q=' || left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160)
                   FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            )
            .iter()
            .map(|r| r.get(0))
            .collect();
            panic!(
                "the replicas did not finish in time: released_all={released_all} killed={killed:?} paused={paused:?} resumed={resumed} seen={seen} of {} cursors={cursors:?} open={open:?} open_fires={fires:?}\nsessions:\n{}\n{}",
                pending.len(),
                sessions.join("\n"),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        if !released_all && round_at.elapsed() > Duration::from_secs(4) {
            match batches.next() {
                Some(b) => release(&all, &corpus, &b),
                None => released_all = true,
            }
            round_at = Instant::now();
        }
        // Kill a replica (not the one that pauses) while it holds a lease
        // for a run in progress.
        if killed.is_none() && round_at.elapsed() > Duration::from_secs(1) {
            let rows = q(&format!(
                "SELECT l.holder, l.feed FROM leases l JOIN runs r ON r.holder = l.holder AND r.feed = l.feed AND r.outcome = 'running' WHERE l.expires_at > {}",
                now_ms()
            ));
            for r in rows {
                let holder: String = r.get(0);
                let feed: String = r.get(1);
                let Some(pid) = pid_of(&holder) else { continue };
                if pid == replicas[0].pid() || pid == replicas[1].pid() {
                    signal(pid, "-KILL");
                    killed = Some((pid, holder, feed));
                    break;
                }
            }
        }
        // Replica 2 paused itself: resume it once another took its lease.
        if paused.is_none() && replicas[2].mark.exists() && stopped(replicas[2].pid()) {
            paused = Some((replicas[2].pid(), Instant::now()));
        }
        if let Some((pid, since)) = paused
            && !resumed
            && since.elapsed() > Duration::from_secs(LEASE_TTL_S * 2 + 2)
        {
            signal(pid, "-CONT");
            resumed = true;
        }
        if released_all && killed.is_some() && (resumed || paused.is_none()) {
            // Done once every feed has taken in every document, nothing is
            // running, and the outbox is empty.
            let max_doc: i64 = q("SELECT COALESCE(MAX(doc_key), 0) FROM documents")
                .first()
                .map_or(0, |r| r.get(0));
            let seen: i64 = q("SELECT COUNT(*) FROM seen")
                .first()
                .map_or(0, |r| r.get(0));
            let behind = q(&format!(
                "SELECT feed FROM feed_cursor WHERE doc_key < {max_doc}"
            ));
            let cursors = q("SELECT feed FROM feed_cursor").len();
            let open = q("SELECT feed FROM batches WHERE state <> 'delivered'").len();
            let open_fires = q("SELECT feed FROM fires WHERE state <> 'done'").len();
            if seen as usize == pending.len()
                && cursors == FEEDS.len()
                && behind.is_empty()
                && open == 0
                && open_fires == 0
            {
                break;
            }
        }
    }
    // Enough fires to judge, however fast the work went.
    while q("SELECT 1 FROM fires").len() < 24 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let one more fire of each feed pass, then stop the survivors. A run
    // cut short by SIGTERM leaves its fire claimed (for another replica):
    // fires from just before the stop are not judged.
    std::thread::sleep(Duration::from_secs(8));
    let cutoff = (chrono::Utc::now() - chrono::Duration::seconds(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (i, r) in replicas.iter_mut().enumerate() {
        if killed.as_ref().is_some_and(|k| k.0 == r.pid()) {
            let _ = r.child.wait();
            continue;
        }
        signal(r.pid(), "-TERM");
        let status = r.child.wait().expect("wait");
        assert!(
            status.success(),
            "replica {i} exited with {status}: {}",
            r.log()
        );
    }

    // The killed replica held a lease for a running run when it was killed.
    let (kpid, kholder, kfeed) = killed.expect("a replica was killed");
    assert!(kpid > 0 && !kholder.is_empty(), "{kholder} held {kfeed}");
    // Its fire was taken over, once, and finished by another replica.
    let taken = q(&format!(
        "SELECT f.feed, f.fire_at, f.holder FROM fires f WHERE f.takeovers > 0 AND f.feed = '{kfeed}'"
    ));
    assert!(
        !taken.is_empty(),
        "the killed replica's fire was taken over"
    );
    for t in &taken {
        let holder: String = t.get(2);
        assert_ne!(holder, kholder);
        let fire: String = t.get(1);
        let ok = q(&format!(
            "SELECT holder FROM runs WHERE feed = '{kfeed}' AND fire_at = '{fire}' AND outcome = 'ok'"
        ));
        let runs: Vec<(String, String, Option<String>, String)> = q(&format!(
            "SELECT holder, started_at, finished_at, outcome FROM runs WHERE feed = '{kfeed}' AND fire_at = '{fire}' ORDER BY id"
        ))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
        assert_eq!(
            ok.len(),
            1,
            "the taken-over fire {fire} ran to the end once; killed {kholder}, taken by {holder}; its runs: {runs:?}"
        );
    }

    // Every fire ran exactly once: one finished run per fire, never two.
    let fires = q(&format!(
        "SELECT feed, fire_at, state FROM fires WHERE fire_at < '{cutoff}' ORDER BY feed, fire_at"
    ));
    assert!(fires.len() >= 20, "fires: {}", fires.len());
    let mut ok_per_fire: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in q("SELECT feed, fire_at FROM runs WHERE fire_at IS NOT NULL AND outcome = 'ok'") {
        *ok_per_fire.entry((r.get(0), r.get(1))).or_default() += 1;
    }
    let mut never = Vec::new();
    for f in &fires {
        let key: (String, String) = (f.get(0), f.get(1));
        let state: String = f.get(2);
        assert_eq!(state, "done", "{key:?}");
        match ok_per_fire.get(&key).copied().unwrap_or(0) {
            1 => {}
            0 => never.push(key),
            n => panic!("fire {key:?} ran {n} times"),
        }
    }
    // A fire with no finished run is the paused replica's (it could not
    // commit) and nothing else.
    assert!(
        never.len() <= 1,
        "fires that never ran to the end: {never:?}"
    );

    // At least two replicas did work.
    let workers: BTreeSet<String> = q("SELECT DISTINCT holder FROM runs WHERE outcome = 'ok'")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(workers.len() >= 2, "runs by {workers:?}");

    // The paused replica resumed after losing its lease and did not commit.
    let (ppid, _) = paused.expect("replica 2 paused itself inside a run");
    let plog = replicas[2].log();
    assert!(
        plog.contains("fenced") || plog.contains("lease lost"),
        "the paused replica noticed it lost its lease: {plog}"
    );
    let pholder = q(&format!(
        "SELECT holder FROM replicas WHERE holder LIKE 'daemon:{ppid}@%'"
    ));
    assert_eq!(pholder.len(), 1);

    // The audit trail verifies.
    let out = regfeed()
        .args(["audit", "verify", "--config", &config])
        .env("REGFEED_DATABASE__URL", &db.url)
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Gapless sequences, every batch delivered; nothing lost or doubled:
    // the diabetes register's folded view equals one SQLite node's.
    for f in FEEDS {
        let (_, seqs) = folded(&setup.delivered.join(f), &cfg, f);
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "{f}: delivered sequences");
    }
    let (replicated, _) = folded(&setup.delivered.join("thl-diabetes"), &cfg, "thl-diabetes");
    drop(pool);
    drop(rt);
    let single = root.join("single");
    let mut single_text = text.replace("state_dir = \"state\"", "state_dir = \"single-state\"");
    single_text = single_text.replace("delivered/", "single-delivered/");
    let single_cfg = setup.dir.join("single.toml");
    std::fs::write(&single_cfg, single_text).expect("single config");
    let out = regfeed()
        .args([
            "once",
            "--config",
            &single_cfg.to_string_lossy(),
            "--feed",
            "thl-diabetes",
        ])
        .output()
        .expect("single node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (alone, _) = folded(
        &setup.dir.join("single-delivered").join("thl-diabetes"),
        &cfg,
        "thl-diabetes",
    );
    assert!(alone.len() > 50, "a meaningful comparison: {}", alone.len());
    assert_eq!(replicated, alone, "replicas vs one node");
    let _ = single;
    drop(db);
}

/// Replicas that find the same silent replica's fires at the same moment:
/// each fire goes to exactly one of them. (On PostgreSQL a take-over that
/// waited on another's row lock must see that the fire changed hands.)
#[test]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
fn concurrent_take_overs_have_one_winner_per_fire() {
    use regfeed::store::Store;
    let Some(db) = common::PgDb::create("takeover") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // Migrated once, then one store (pool) per replica.
        let first = Store::open(&db.url).await.expect("open");
        // No session waits endlessly: idle in a transaction past a lease,
        // or for a lock past two.
        let limits: (String, String) = sqlx::query_as(
            "SELECT current_setting('idle_in_transaction_session_timeout'), current_setting('lock_timeout')",
        )
        .fetch_one(first.pool())
        .await
        .expect("settings");
        assert_eq!(limits, ("1min".to_owned(), "2min".to_owned()));
        let mut stores = vec![first];
        for _ in 1..8 {
            stores.push(Store::open(&db.url).await.expect("open"));
        }
        let stores: Vec<std::sync::Arc<Store>> =
            stores.into_iter().map(std::sync::Arc::new).collect();
        let base = chrono::DateTime::parse_from_rfc3339("2026-11-23T01:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        for round in 0..5 {
            // A replica that fell silent (it never beat) left 20 claimed fires.
            let dead = format!("daemon:{}@00dead00", 10 + round);
            let fires: Vec<_> = (0..20)
                .map(|i| base + chrono::Duration::seconds(i64::from(round * 100 + i)))
                .collect();
            for t in &fires {
                assert!(stores[0].claim_fire("f", *t, &dead).await.expect("claim"));
            }
            let takers: Vec<String> = (0..stores.len())
                .map(|i| format!("daemon:{}@0000{round:04}", 100 + i))
                .collect();
            for (s, h) in stores.iter().zip(&takers) {
                s.heartbeat(h).await.expect("beat");
            }
            let tasks: Vec<_> = stores
                .iter()
                .zip(&takers)
                .map(|(s, h)| {
                    let (s, h) = (s.clone(), h.clone());
                    tokio::spawn(async move {
                        s.take_over_fires("f", &h, Duration::from_secs(60))
                            .await
                            .expect("take over")
                    })
                })
                .collect();
            let mut won: BTreeMap<chrono::DateTime<chrono::Utc>, usize> = BTreeMap::new();
            for t in tasks {
                for f in t.await.expect("task") {
                    *won.entry(f).or_default() += 1;
                }
            }
            let want: BTreeMap<_, usize> = fires.iter().map(|f| (*f, 1)).collect();
            assert_eq!(won, want, "round {round}: takers per fire");
        }
    });
    drop(rt);
    drop(db);
}
