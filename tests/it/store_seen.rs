//! What a listing asks the store: which files are new or changed since they
//! were last seen (`Store::seen_changed`), on both backends.

use regfeed::store::{Seen, Store};

use crate::common;

async fn story(url: &str) {
    let store = Store::open(url).await.expect("store opens");
    let mut tx = store.begin().await.expect("tx");
    let seen = |path: &str, size: i64, mtime_ns: i64, sha: &str| Seen {
        path: path.into(),
        size,
        mtime_ns,
        sha256: sha.into(),
    };
    tx.put_seen(
        "archive",
        &[
            seen("a", 10, 1_700_000_000_000_000_001, "aa"),
            seen("b", 20, 2, "bb"),
            seen("c", 30, 3, "cc"),
            seen("\"quoted\" \\ path ä", 40, 4, "dd"),
        ],
    )
    .await
    .expect("put seen");
    // The same path under another source is another file.
    tx.put_seen("other", &[seen("e", 50, 5, "ee")])
        .await
        .expect("put seen");
    tx.commit().await.expect("commit");

    let listed = [
        ("a", 10, 1_700_000_000_000_000_001), // unchanged (a large mtime)
        ("b", 21, 2),                         // size changed
        ("c", 30, 4),                         // mtime changed
        ("e", 50, 5),                         // seen under another source only
        ("\"quoted\" \\ path ä", 40, 4),      // unchanged, JSON-escaped
        ("new", 1, 1),                        // never seen
    ];
    let changed = store
        .seen_changed("archive", &listed)
        .await
        .expect("compare");
    assert_eq!(
        changed,
        vec![
            (1, Some("bb".to_owned())),
            (2, Some("cc".to_owned())),
            (3, None),
            (5, None),
        ]
    );
    assert!(
        store
            .seen_changed("archive", &[])
            .await
            .expect("empty")
            .is_empty(),
        "an empty listing asks nothing"
    );
    // A whole listing of unchanged files returns nothing.
    let unchanged: Vec<(&str, i64, i64)> = listed
        .iter()
        .copied()
        .filter(|(p, _, _)| *p == "a" || p.starts_with('"'))
        .collect();
    assert!(
        store
            .seen_changed("archive", &unchanged)
            .await
            .expect("same")
            .is_empty()
    );
}

#[tokio::test]
async fn a_listing_is_compared_with_what_was_seen_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    story(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test]
#[cfg_attr(no_pg, ignore = "needs REGFEED_TEST_DATABASE_URL")]
async fn a_listing_is_compared_with_what_was_seen_on_postgres() {
    let Some(db) = common::PgDb::create("seen") else {
        return;
    };
    story(&db.url).await;
}
