//! The cost of a feed lease: take + release, renew, and a fenced empty
//! commit, on SQLite (a temporary file) and on PostgreSQL when
//! `REGFEED_TEST_DATABASE_URL` is set (in a schema-less scratch database of
//! its own). `cargo bench --bench lease`.

use std::time::{Duration, Instant};

use regfeed::store::{Store, fenced};

const N: u32 = 500;

async fn measure(name: &str, store: &Store) {
    let ttl = Duration::from_secs(60);
    let t = Instant::now();
    for i in 0..N {
        let l = store
            .acquire_lease("bench", &format!("bench:{i}"), ttl)
            .await
            .expect("acquire");
        assert!(store.release_lease(&l).await.expect("release"));
    }
    let take_release = t.elapsed() / N;
    let l = store
        .acquire_lease("bench", "bench:x", ttl)
        .await
        .expect("acquire");
    let t = Instant::now();
    for _ in 0..N {
        assert!(store.renew_lease(&l).await.expect("renew"));
    }
    let renew = t.elapsed() / N;
    let t = Instant::now();
    for _ in 0..N {
        fenced(l.clone(), async {
            let tx = store.begin().await.expect("begin");
            tx.commit().await.expect("commit");
        })
        .await;
    }
    let fenced_commit = t.elapsed() / N;
    let t = Instant::now();
    for _ in 0..N {
        let tx = store.begin().await.expect("begin");
        tx.commit().await.expect("commit");
    }
    let plain_commit = t.elapsed() / N;
    println!(
        "{name:<10} take+release {:>8.3} ms   renew {:>8.3} ms   empty write transaction {:>8.3} ms, fenced {:>8.3} ms",
        take_release.as_secs_f64() * 1e3,
        renew.as_secs_f64() * 1e3,
        plain_commit.as_secs_f64() * 1e3,
        fenced_commit.as_secs_f64() * 1e3,
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("lease.db").display());
        let store = Store::open(&url).await.expect("sqlite");
        measure("sqlite", &store).await;
        match std::env::var("REGFEED_TEST_DATABASE_URL") {
            Ok(admin) => {
                use sqlx::Connection as _;
                let name = format!("regfeed_bench_lease_{}", std::process::id());
                let mut c = sqlx::PgConnection::connect(&admin).await.expect("server");
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .expect("create");
                let (scheme, rest) = admin.split_once("://").expect("url");
                let host = rest.split('/').next().unwrap_or(rest);
                let url = format!("{scheme}://{host}/{name}");
                let store = Store::open(&url).await.expect("postgres");
                measure("postgres", &store).await;
                drop(store);
                sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .expect("drop");
            }
            Err(_) => println!("postgres   (REGFEED_TEST_DATABASE_URL unset: skipped)"),
        }
    });
}
