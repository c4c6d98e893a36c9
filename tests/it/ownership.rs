//! Every command refuses a state directory or SQLite store that belongs to
//! another user than the one it runs as (exit 77, naming the fix), and
//! creates nothing in it. Needs root to give a folder away (`chown`); as
//! another user the test says so and checks only what it can.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// The uid the folders are given to (`nobody` on Debian).
const OTHER: u32 = 65534;

fn regfeed(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("REGFEED_DATABASE__URL")
        .output()
        .expect("run regfeed");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}

#[test]
fn a_state_directory_or_store_of_another_user_is_refused_naming_the_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let state = setup.dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    let me = std::fs::metadata(&state).expect("state").uid();
    // As its owner, a command opens the state directory and makes the store.
    let (code, text) = regfeed(&["status"], &setup.config);
    assert_eq!(code, 0, "{text}");
    let db = state.join("regfeed.db");
    assert!(db.is_file(), "status made the store");
    if me != 0 {
        eprintln!(
            "NOTICE: ownership refusal not exercised: giving a folder to uid {OTHER} needs root (running as uid {me})"
        );
        return;
    }

    // The store's file belongs to the service user: refused, untouched.
    chown(&db, OTHER);
    let before = std::fs::read(&db).expect("db");
    for args in [
        &["status"][..],
        &["once", "--feed", "thl-diabetes"],
        &["audit", "verify"],
    ] {
        let (code, text) = regfeed(args, &setup.config);
        assert_eq!(code, 77, "{args:?}: {text}");
        assert!(
            text.contains("run it as the service user"),
            "{args:?}: {text}"
        );
        assert!(text.contains("regfeedctl"), "{args:?}: {text}");
        assert!(text.contains(&db.display().to_string()), "{args:?}: {text}");
        assert!(text.contains(&format!("uid {OTHER}")), "{args:?}: {text}");
    }
    assert_eq!(
        std::fs::read(&db).expect("db"),
        before,
        "the store is untouched"
    );

    // A fresh state directory of the service user: no store is created in it.
    std::fs::remove_dir_all(&state).expect("clear");
    std::fs::create_dir_all(&state).expect("state");
    chown(&state, OTHER);
    for args in [&["status"][..], &["once", "--feed", "thl-diabetes"]] {
        let (code, text) = regfeed(args, &setup.config);
        assert_eq!(code, 77, "{args:?}: {text}");
        assert!(text.contains("state directory"), "{args:?}: {text}");
        assert!(
            text.contains("run it as the service user"),
            "{args:?}: {text}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&state).expect("state").collect();
    assert!(left.is_empty(), "nothing was created in it: {left:?}");
}
