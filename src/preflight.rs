//! What a run will need, checked before it: every `archive_dir` source's
//! folder readable, every `file_drop` sink's folder writable and every `http`
//! sink's host resolvable, every key present with a safe mode.
//!
//! `regfeed validate` reports each finding on its own `file:line: field:
//! problem` line (the line of the key in the config file). `/readyz` uses the
//! same probes for what can change while the daemon runs (source and sink
//! folders); keys are read once at start or reload, and a register's host is
//! judged by delivery itself.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::config::{Problem, SinkConfig, SourceKind};
use crate::identity::{Key, KeyRole, KeySource};
use crate::loaded::Config;

/// How long a host name may take to resolve.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a folder can be listed: its first entry is read (what a run does
/// first with an `archive_dir` source).
pub fn folder_readable(dir: &Path) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?;
    match entries.next() {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Whether a folder takes a file: a small file is written, synced and
/// removed (what sealing into the state directory and a file-drop delivery
/// do).
pub fn folder_writable(dir: &Path) -> io::Result<()> {
    use std::io::Write as _;
    // A name of its own: probes of several sinks may share a folder.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".regfeed-probe.{}.{n}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(b"regfeed\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&path)
}

/// Whether a sink folder takes a file: the folder itself when it exists,
/// else the nearest folder above it that exists (delivery creates the
/// folders below it). The error names the folder that refused.
pub fn sink_folder_writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a folder", at.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(up) if !up.as_os_str().is_empty() => at = up,
                _ => return Err(format!("{}: {e}", dir.display())),
            },
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    folder_writable(at).map_err(|e| {
        if at == dir {
            format!("folder {} is not writable: {e}", dir.display())
        } else {
            format!(
                "folder {} does not exist and cannot be made in {}: {e}",
                dir.display(),
                at.display()
            )
        }
    })
}

/// Resolves `host` by DNS within `timeout` (the lookup runs on its own
/// thread, which is left behind if it hangs).
pub fn resolves(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    use std::net::ToSocketAddrs as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (host.to_owned(), port);
    std::thread::Builder::new()
        .name("regfeed-dns".into())
        .spawn(move || {
            let r = target.to_socket_addrs().map(|mut a| a.next().is_some());
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a lookup: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!("host {host} resolves to no address")),
        Ok(Err(e)) => Err(format!("host {host} does not resolve: {e}")),
        Err(_) => Err(format!(
            "host {host} did not resolve within {} s",
            timeout.as_secs()
        )),
    }
}

/// Everything [`check`] found wrong, each at its key's line in the config.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
    let mut out = Vec::new();
    let mut at = |path: &[&str], field: &str, message: String| {
        out.push(Problem {
            file: cfg.path.clone(),
            line: crate::config::line_of_key(&text, path),
            field: field.to_owned(),
            message,
        });
    };
    for (i, s) in cfg.sources.iter().enumerate() {
        if let SourceKind::ArchiveDir { path } = &s.kind
            && let Err(e) = folder_readable(path)
        {
            let i = i.to_string();
            at(
                &["sources", &i, "path"],
                "sources.path",
                format!(
                    "source {}: folder {} cannot be read: {e}",
                    s.name,
                    path.display()
                ),
            );
        }
    }
    for (i, f) in cfg.feeds.iter().enumerate() {
        let i = i.to_string();
        match &f.sink {
            SinkConfig::FileDrop { dir, .. } => {
                if let Err(e) = sink_folder_writable(dir) {
                    at(
                        &["feeds", &i, "sink", "dir"],
                        "feeds.sink.dir",
                        format!("feed {}: {e}", f.name),
                    );
                }
            }
            SinkConfig::Http(h) => {
                let host = h.base_url.host_str().unwrap_or_default();
                let port = h.base_url.port_or_known_default().unwrap_or(443);
                if let Err(e) = resolves(host, port, DNS_TIMEOUT) {
                    at(
                        &["feeds", &i, "sink", "base_url"],
                        "feeds.sink.base_url",
                        format!("feed {}: {e}", f.name),
                    );
                }
            }
        }
    }
    let (keys, credentials) = keys_of(cfg);
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY");
    if credentials_dir.is_none() && !credentials.is_empty() {
        at(
            &[],
            "keys",
            format!(
                "{} (credential:NAME) and CREDENTIALS_DIRECTORY is not set; \
                 outside systemd set it to the folder holding the key files under those names, as the \
                 unit's LoadCredential= lines name them (CREDENTIALS_DIRECTORY=/etc/regfeed/keys regfeed validate)",
                match credentials.len() {
                    1 => "1 key is a systemd credential".to_owned(),
                    n => format!("{n} keys are systemd credentials"),
                }
            ),
        );
    }
    for k in keys
        .iter()
        .chain(credentials.iter().filter(|_| credentials_dir.is_some()))
    {
        if let Err(e) = Key::load(&k.role, &k.source) {
            let path: Vec<&str> = k.path.iter().map(String::as_str).collect();
            at(&path, &k.field, e.to_string());
        }
    }
    out
}

/// The keys a run loads (as `app::load_keys`): files, then credentials.
fn keys_of(cfg: &Config) -> (Vec<KeyAtPath>, Vec<KeyAtPath>) {
    let mut all = vec![
        KeyAtPath::new(
            KeyRole::Index,
            &cfg.index_key,
            &["keys", "index"],
            "keys.index",
        ),
        KeyAtPath::new(
            KeyRole::Audit,
            &cfg.audit_key,
            &["keys", "audit"],
            "keys.audit",
        ),
    ];
    for (i, r) in cfg.recipients.iter().enumerate() {
        all.push(KeyAtPath::new(
            KeyRole::Pseudonym(r.name.clone()),
            &r.pseudonym_key,
            &["recipients", &i.to_string(), "pseudonym_key"],
            "recipients.pseudonym_key",
        ));
    }
    for (i, f) in cfg.feeds.iter().enumerate() {
        all.push(KeyAtPath::new(
            KeyRole::Record(f.name.clone()),
            &f.record_key,
            &["feeds", &i.to_string(), "record_key"],
            "feeds.record_key",
        ));
    }
    all.into_iter()
        .partition(|k| matches!(k.source, KeySource::File(_)))
}

/// A key the config names, and the path of its key in the file.
struct KeyAtPath {
    role: KeyRole,
    source: KeySource,
    path: Vec<String>,
    field: String,
}

impl KeyAtPath {
    fn new(role: KeyRole, source: &KeySource, path: &[&str], field: &str) -> KeyAtPath {
        KeyAtPath {
            role,
            source: source.clone(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            field: field.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_folder_is_writable_made_below_a_folder_or_refused_under_a_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert_eq!(sink_folder_writable(tmp.path()), Ok(()));
        // Not there yet: delivery makes it below the existing folder.
        assert_eq!(sink_folder_writable(&tmp.path().join("a/b/c")), Ok(()));
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").expect("file");
        let e = sink_folder_writable(&file).expect_err("a file");
        assert!(e.ends_with("is not a folder"), "{e}");
        let e = sink_folder_writable(&file.join("below")).expect_err("under a file");
        assert!(e.contains("Not a directory"), "{e}");
        // The probe leaves nothing behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn a_source_folder_that_is_missing_cannot_be_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(folder_readable(tmp.path()).is_ok());
        let e = folder_readable(&tmp.path().join("missing")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn keys_are_found_at_their_line_through_arrays_of_tables() {
        let text = "[keys]\nindex = \"a\"\n\n[[feeds]]\nname = \"x\"\n\n[[feeds]]\nname = \"y\"\nrecord_key = \"k\"\n[feeds.sink]\ndir = \"d\"\n";
        let line = crate::config::line_of_key;
        assert_eq!(line(text, &["keys", "index"]), 2);
        assert_eq!(line(text, &["feeds", "1", "record_key"]), 9);
        assert_eq!(line(text, &["feeds", "1", "sink", "dir"]), 11);
        assert_eq!(line(text, &["feeds", "0", "record_key"]), 0);
        assert_eq!(line(text, &["feeds", "2", "name"]), 0);
    }
}
