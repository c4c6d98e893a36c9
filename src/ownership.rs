//! Every command refuses a state directory or SQLite store owned by another
//! user than the one it runs as. Run as root on an installed host, a
//! command would otherwise create `/var/lib/regfeed/regfeed.db` (or its
//! write-ahead log, or an outbox folder) owned by root, and the service,
//! running as `regfeed`, then fails with "attempt to write a readonly
//! database". The fix the refusal names: run the command as the service
//! user (`regfeedctl`, installed by the package; docs/OPERATIONS.md).
//!
//! A path that does not exist yet is checked at its nearest existing
//! ancestor only when that is the folder it would be created in (the state
//! directory itself may be made by whoever runs first: it is then theirs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Exit status of a command refused for ownership (sysexits EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;

/// A state directory or store owned by someone else than this process's
/// effective user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {path} belongs to {owner}, but this command runs as {me}: run it as \
     the service user, `regfeedctl <command> ...` (it runs regfeed as {owner_name} \
     with the service's keys; docs/OPERATIONS.md), so that nothing in it comes to \
     belong to {me}"
)]
pub struct ForeignOwner {
    pub what: &'static str,
    pub path: PathBuf,
    pub owner: String,
    owner_name: String,
    pub me: String,
}

/// The effective user id of this process.
#[allow(unsafe_code)] // geteuid has no safe wrapper in std; see SAFETY below.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() }
}

/// `name (uid N)`, or `uid N` when /etc/passwd does not name it.
fn describe(uid: u32) -> (String, String) {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        })
    });
    match name {
        Some(n) => (format!("{n} (uid {uid})"), n),
        None => (format!("uid {uid}"), format!("#{uid}")),
    }
}

/// Refuses `path` (`what` names it: "state directory", "SQLite store")
/// when it exists and belongs to another user than `uid`.
pub fn check_as(uid: u32, what: &'static str, path: &Path) -> Result<(), ForeignOwner> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.uid() == uid {
        return Ok(());
    }
    let (owner, owner_name) = describe(meta.uid());
    Err(ForeignOwner {
        what,
        path: path.to_path_buf(),
        owner,
        owner_name,
        me: describe(uid).0,
    })
}

/// [`check_as`] for this process.
pub fn check(what: &'static str, path: &Path) -> Result<(), ForeignOwner> {
    check_as(effective_uid(), what, path)
}

/// The state directory, and a SQLite store's file, its write-ahead log and
/// the folder it would be created in.
pub fn check_sqlite_store(db: &Path) -> Result<(), ForeignOwner> {
    check("SQLite store", db)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        check("SQLite store", Path::new(&side))?;
    }
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => check("store folder", dir),
        _ => Ok(()),
    }
}

/// The exit status for an error refused here, if it is one.
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.chain()
        .any(|c| {
            c.downcast_ref::<ForeignOwner>().is_some()
                || matches!(
                    c.downcast_ref::<crate::store::StoreError>(),
                    Some(crate::store::StoreError::Foreign(_))
                )
        })
        .then_some(EXIT_NOPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_of_this_user_or_a_missing_one_passes() {
        let dir = tempfile::tempdir().expect("tmp");
        let me = effective_uid();
        assert_eq!(check_as(me, "state directory", dir.path()), Ok(()));
        assert_eq!(
            check_as(me, "state directory", &dir.path().join("absent")),
            Ok(())
        );
        assert_eq!(check_sqlite_store(&dir.path().join("regfeed.db")), Ok(()));
    }

    #[test]
    fn a_path_of_another_user_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().expect("tmp");
        let other = effective_uid().wrapping_add(4242);
        let e = check_as(other, "state directory", dir.path()).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("run it as the service user"), "{text}");
        assert!(text.contains("regfeedctl"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains(&format!("uid {other}")), "{text}");
        assert_eq!(
            exit_code(&anyhow::Error::new(e).context("opening")),
            Some(EXIT_NOPERM)
        );
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), None);
    }
}
