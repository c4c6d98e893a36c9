//! Keys and the keyed identities derived from them (DESIGN §2, §4; DOMAIN §5):
//! the store's internal person index, recipients' pseudonyms and feeds' row
//! ids. All are lowercase hex HMAC-SHA-256.
//!
//! This module owns reading key files and never lets a key out: `Debug` and
//! `Display` of [`Key`] and [`KeyRing`] are redacted, and no error names a
//! key's content or a hetu — only the key's *role* (`index`, `audit`,
//! `pseudonym:<recipient>`, `record:<feed>`) and its path (operator-chosen,
//! not person data). It must not log, and it knows nothing of feeds or stores.
//!
//! # Key files
//! A key file holds the key as **hex** (upper or lower case), at least 64 hex
//! digits (32 bytes); surrounding ASCII whitespace (a trailing newline) is
//! ignored. Raw binary key files are not accepted: one format, no guessing.
//! [`generate_key_file`] writes 32 random bytes as 64 lowercase hex digits and
//! a newline, mode 0600. Loading refuses a file that is not a regular file or
//! that group or others may read or write (`mode & 0o077 != 0`); 0600 and 0400
//! are fine. Symbolic links are followed; the checks apply to the file opened.
//!
//! # systemd credentials
//! A key location written `credential:NAME` is read from
//! `$CREDENTIALS_DIRECTORY/NAME`, the directory systemd fills from
//! `LoadCredential=`/`LoadCredentialEncrypted=` (files there are mode 0400).
//! `NAME` must be a plain file name (no `/`, not `.` or `..`).
//!
//! # Key ids
//! Manifests and audit entries name keys by [`KeyId`]: the first 16 lowercase
//! hex digits (64 bits) of SHA-256 over the ASCII bytes `regfeed-key-id:v1:`
//! followed by the raw key bytes. The key is 256 bits of randomness, so the id
//! reveals nothing usable about it; the prefix keeps the id from being any
//! other hash of the key.
//!
//! # Derivations
//! - [`person_index`] / [`pseudonym`]: HMAC-SHA-256(key, `"1.2.246.21:" +
//!   uppercase hetu`), lowercase hex. The same construction with different
//!   keys: the index key for the store, a recipient's key for its feeds.
//! - [`record_id`]: HMAC-SHA-256(record key, `"rec:" + set id + ":" +
//!   ordinal`), the ordinal in decimal without padding, lowercase hex.
//! - [`audit_pseudonym`]: HMAC-SHA-256(audit key, `"person:" + index
//!   pseudonym`), lowercase hex: people in the audit trail.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::decode::hetu::Hetu;

/// The shortest key accepted, in bytes.
pub const KEY_MIN_BYTES: usize = 32;
/// Bytes of randomness in a generated key.
pub const KEY_GENERATED_BYTES: usize = 32;
/// Key files larger than this are refused unread (a key is ~65 bytes).
const KEY_FILE_MAX_BYTES: u64 = 4096;
/// The OID of the hetu, the namespace every person identity is derived in.
pub const HETU_OID: &str = "1.2.246.21";
const KEY_ID_DOMAIN: &[u8] = b"regfeed-key-id:v1:";

type HmacSha256 = Hmac<Sha256>;

/// What a key is for. Shown in errors and in audit entries, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyRole {
    /// The store's internal person pseudonyms.
    Index,
    /// People in the audit trail.
    Audit,
    /// One recipient's pseudonyms (rotatable).
    Pseudonym(String),
    /// One feed's row identities (never rotated).
    Record(String),
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRole::Index => f.write_str("index"),
            KeyRole::Audit => f.write_str("audit"),
            KeyRole::Pseudonym(r) => write!(f, "pseudonym:{r}"),
            KeyRole::Record(feed) => write!(f, "record:{feed}"),
        }
    }
}

impl std::str::FromStr for KeyRole {
    type Err = KeyError;

    /// Parses the `Display` form: `index`, `audit`, `pseudonym:<recipient>`,
    /// `record:<feed>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::BadRole {
            role: s.to_string(),
        };
        match s.split_once(':') {
            None if s == "index" => Ok(KeyRole::Index),
            None if s == "audit" => Ok(KeyRole::Audit),
            Some(("pseudonym", r)) if !r.is_empty() => Ok(KeyRole::Pseudonym(r.to_string())),
            Some(("record", f)) if !f.is_empty() => Ok(KeyRole::Record(f.to_string())),
            _ => Err(bad()),
        }
    }
}

/// Where a key comes from: a file path, or a systemd credential name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    /// Resolved under `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

impl KeySource {
    /// `credential:NAME` is a systemd credential; anything else a path.
    pub fn parse(s: &str) -> KeySource {
        match s.strip_prefix("credential:") {
            Some(name) => KeySource::Credential(name.to_string()),
            None => KeySource::File(PathBuf::from(s)),
        }
    }

    /// The file this source names, with `$CREDENTIALS_DIRECTORY` as it is now.
    pub fn resolve(&self, role: &KeyRole) -> Result<PathBuf, KeyError> {
        self.resolve_in(role, std::env::var_os("CREDENTIALS_DIRECTORY").as_deref())
    }

    /// The file this source names, credentials resolved under
    /// `credentials_dir` (what `$CREDENTIALS_DIRECTORY` holds, if set).
    pub fn resolve_in(
        &self,
        role: &KeyRole,
        credentials_dir: Option<&std::ffi::OsStr>,
    ) -> Result<PathBuf, KeyError> {
        match self {
            KeySource::File(p) => Ok(p.clone()),
            KeySource::Credential(name) => {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(KeyError::BadCredentialName {
                        role: role.clone(),
                        name: name.clone(),
                    });
                }
                let dir = credentials_dir.ok_or_else(|| KeyError::NoCredentialsDirectory {
                    role: role.clone(),
                    name: name.clone(),
                })?;
                Ok(Path::new(dir).join(name))
            }
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "{}", p.display()),
            KeySource::Credential(n) => write!(f, "credential:{n}"),
        }
    }
}

/// Why a key could not be loaded or made. Names the role and path, never
/// the content.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{role} key file {path}: {source}")]
    Io {
        role: KeyRole,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{role} key file {path} is not a regular file")]
    NotRegularFile { role: KeyRole, path: PathBuf },
    #[error(
        "{role} key file {path} is accessible to group or others (mode {mode:04o}); \
         make it 0600 or 0400"
    )]
    Permissions {
        role: KeyRole,
        path: PathBuf,
        mode: u32,
    },
    #[error("{role} key file {path} is larger than {KEY_FILE_MAX_BYTES} bytes")]
    TooLarge { role: KeyRole, path: PathBuf },
    #[error("{role} key file {path} does not hold an even number of hex digits")]
    NotHex { role: KeyRole, path: PathBuf },
    #[error("{role} key is {bytes} bytes; at least {KEY_MIN_BYTES} are required")]
    TooShort { role: KeyRole, bytes: usize },
    #[error("{role} key: credential {name} cannot be read: CREDENTIALS_DIRECTORY is not set")]
    NoCredentialsDirectory { role: KeyRole, name: String },
    #[error("{role} key: credential name {name:?} is not a plain file name")]
    BadCredentialName { role: KeyRole, name: String },
    #[error("key role {role:?} is not index, audit, pseudonym:<recipient> or record:<feed>")]
    BadRole { role: String },
    #[error("no index key is configured")]
    NoIndexKey,
    #[error("key file {path} already exists; not overwritten")]
    Exists { path: PathBuf },
    #[error("generating key file {path}: {source}")]
    Generate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A short public name of a key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret key of at least [`KEY_MIN_BYTES`] bytes. `Debug` and `Display`
/// show only its [`KeyId`]. The bytes are overwritten on drop (best effort:
/// copies the allocator or the OS made earlier are out of reach).
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    id: KeyId,
}

impl Key {
    /// A key from raw bytes; `role` only names it in the error.
    pub fn from_bytes(role: &KeyRole, bytes: &[u8]) -> Result<Key, KeyError> {
        if bytes.len() < KEY_MIN_BYTES {
            return Err(KeyError::TooShort {
                role: role.clone(),
                bytes: bytes.len(),
            });
        }
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        h.update(bytes);
        let digest = hex::encode(h.finalize());
        Ok(Key {
            bytes: bytes.to_vec(),
            id: KeyId(digest[..16].to_string()),
        })
    }

    /// Reads a key file (see the module docs for format and checks).
    pub fn load(role: &KeyRole, source: &KeySource) -> Result<Key, KeyError> {
        let path = source.resolve(role)?;
        let io_err = |source| KeyError::Io {
            role: role.clone(),
            path: path.clone(),
            source,
        };
        // O_NONBLOCK: opening a FIFO placed where a key should be must not
        // hang the daemon; it has no effect on regular files.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err)?;
        // Checked on the opened file, so the file checked is the file read.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotRegularFile {
                role: role.clone(),
                path,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                role: role.clone(),
                path,
                mode,
            });
        }
        if meta.len() > KEY_FILE_MAX_BYTES {
            return Err(KeyError::TooLarge {
                role: role.clone(),
                path,
            });
        }
        let mut text = Vec::with_capacity(meta.len() as usize);
        file.take(KEY_FILE_MAX_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(io_err)?;
        let trimmed = text.trim_ascii();
        let decoded = hex::decode(trimmed);
        text.fill(0);
        let mut bytes = decoded.map_err(|_| KeyError::NotHex {
            role: role.clone(),
            path: path.clone(),
        })?;
        let key = Key::from_bytes(role, &bytes);
        bytes.fill(0);
        key
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; the error type exists only for
        // fixed-size MACs.
        HmacSha256::new_from_slice(&self.bytes).expect("HMAC accepts keys of any length")
    }

    /// A 32-byte subkey for one purpose, `HMAC-SHA-256(key, label)`: keys
    /// derived under different labels are independent of each other and of
    /// the key's other uses (which never MAC a bare label).
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// Lowercase hex HMAC-SHA-256 of `parts` concatenated.
    fn hmac_hex(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac();
        for p in parts {
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.fill(0);
        std::hint::black_box(&self.bytes);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id={}, <redacted>)", self.id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", self.id)
    }
}

/// A person's identity in the store: keyed, so showing it reveals nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey(String);

impl PersonKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for PersonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hetu_identity(key: &Key, hetu: &Hetu) -> String {
    // `Hetu` is stored upper-case (see `Hetu::parse`); uppercasing again
    // keeps the contract explicit.
    let upper = hetu.as_str().to_ascii_uppercase();
    key.hmac_hex(&[HETU_OID.as_bytes(), b":", upper.as_bytes()])
}

/// The store's internal pseudonym of a person, under the index key.
pub fn person_index(index_key: &Key, hetu: &Hetu) -> PersonKey {
    PersonKey(hetu_identity(index_key, hetu))
}

/// A recipient's pseudonym of a person, under that recipient's key.
pub fn pseudonym(recipient_key: &Key, hetu: &Hetu) -> String {
    hetu_identity(recipient_key, hetu)
}

/// A row's stable id (DESIGN §2), under the feed's record key.
pub fn record_id(record_key: &Key, set_id: &str, ordinal: u32) -> String {
    let ordinal = ordinal.to_string();
    record_key.hmac_hex(&[b"rec:", set_id.as_bytes(), b":", ordinal.as_bytes()])
}

/// A statistics cell's stable id, under the feed's record key: the same
/// period and dimension values keep the same id across batches. Values are
/// separated by U+001F, which no dimension value contains.
pub fn cell_id(record_key: &Key, period: &str, dims: &[String]) -> String {
    let mut parts: Vec<&[u8]> = vec![b"cell:", period.as_bytes()];
    for d in dims {
        parts.push(b"\x1f");
        parts.push(d.as_bytes());
    }
    record_key.hmac_hex(&parts)
}

/// A person in the audit trail, derived from their index pseudonym (the
/// store knows no hetu) under the audit key.
pub fn audit_pseudonym(audit_key: &Key, index_person: &str) -> String {
    audit_key.hmac_hex(&[b"person:", index_person.as_bytes()])
}

/// Writes a new key file: 32 bytes from `/dev/urandom` as hex and a newline,
/// created with mode 0600 and `O_EXCL` (an existing file is never touched),
/// then fsynced. Returns the new key's id.
pub fn generate_key_file(path: &Path) -> Result<KeyId, KeyError> {
    let gen_err = |source| KeyError::Generate {
        path: path.to_path_buf(),
        source,
    };
    let mut raw = [0u8; KEY_GENERATED_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(gen_err)?;
    let key = Key::from_bytes(&KeyRole::Index, &raw);
    let mut text = hex::encode(raw).into_bytes();
    raw.fill(0);
    text.push(b'\n');
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            text.fill(0);
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            text.fill(0);
            return Err(gen_err(e));
        }
    };
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    text.fill(0);
    if let Err(e) = written {
        // A half-written key must not survive to be loaded later.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(gen_err(e));
    }
    Ok(key?.id().clone())
}

/// Every key the daemon holds: built once at start (and on reload), then
/// shared read-only. `Debug` shows roles and key ids only.
#[derive(Clone)]
pub struct KeyRing {
    index: Key,
    audit: Option<Key>,
    pseudonym: BTreeMap<String, Key>,
    record: BTreeMap<String, Key>,
}

/// One or more keys failed to load; every failure is listed so that
/// `validate` reports them all at once.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct KeyRingError {
    pub errors: Vec<KeyError>,
}

impl KeyRing {
    pub fn new(index: Key) -> KeyRing {
        KeyRing {
            index,
            audit: None,
            pseudonym: BTreeMap::new(),
            record: BTreeMap::new(),
        }
    }

    /// Adds or replaces the key of `role`.
    pub fn insert(&mut self, role: KeyRole, key: Key) {
        match role {
            KeyRole::Index => self.index = key,
            KeyRole::Audit => self.audit = Some(key),
            KeyRole::Pseudonym(r) => {
                self.pseudonym.insert(r, key);
            }
            KeyRole::Record(f) => {
                self.record.insert(f, key);
            }
        }
    }

    /// Loads every key of `sources`; the index key is required.
    pub fn load(sources: &BTreeMap<KeyRole, KeySource>) -> Result<KeyRing, KeyRingError> {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for (role, source) in sources {
            match Key::load(role, source) {
                Ok(k) => loaded.push((role.clone(), k)),
                Err(e) => errors.push(e),
            }
        }
        let index = loaded
            .iter()
            .position(|(r, _)| *r == KeyRole::Index)
            .map(|i| loaded.swap_remove(i).1);
        let Some(index) = index else {
            if !sources.contains_key(&KeyRole::Index) {
                errors.insert(0, KeyError::NoIndexKey);
            }
            return Err(KeyRingError { errors });
        };
        if !errors.is_empty() {
            return Err(KeyRingError { errors });
        }
        let mut ring = KeyRing::new(index);
        for (role, key) in loaded {
            ring.insert(role, key);
        }
        Ok(ring)
    }

    pub fn index(&self) -> &Key {
        &self.index
    }

    pub fn audit(&self) -> Option<&Key> {
        self.audit.as_ref()
    }

    pub fn pseudonym_key(&self, recipient: &str) -> Option<&Key> {
        self.pseudonym.get(recipient)
    }

    pub fn record_key(&self, feed: &str) -> Option<&Key> {
        self.record.get(feed)
    }

    /// Every role with its key id, for audit entries on start and reload.
    pub fn key_ids(&self) -> Vec<(KeyRole, KeyId)> {
        let mut out = vec![(KeyRole::Index, self.index.id().clone())];
        if let Some(a) = &self.audit {
            out.push((KeyRole::Audit, a.id().clone()));
        }
        out.extend(
            self.pseudonym
                .iter()
                .map(|(r, k)| (KeyRole::Pseudonym(r.clone()), k.id().clone())),
        );
        out.extend(
            self.record
                .iter()
                .map(|(f, k)| (KeyRole::Record(f.clone()), k.id().clone())),
        );
        out
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (role, id) in self.key_ids() {
            m.entry(&format_args!("{role}"), &format_args!("{id}"));
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_text() {
        for r in [
            KeyRole::Index,
            KeyRole::Audit,
            KeyRole::Pseudonym("thl".into()),
            KeyRole::Record("diabetes".into()),
        ] {
            assert_eq!(r.to_string().parse::<KeyRole>().ok(), Some(r));
        }
        assert!("pseudonym:".parse::<KeyRole>().is_err());
        assert!("master".parse::<KeyRole>().is_err());
    }

    #[test]
    fn credential_source_refuses_paths() {
        let role = KeyRole::Index;
        for bad in [
            "credential:../x",
            "credential:a/b",
            "credential:",
            "credential:..",
        ] {
            assert!(matches!(
                KeySource::parse(bad).resolve(&role),
                Err(KeyError::BadCredentialName { .. })
            ));
        }
        let ok = KeySource::parse("credential:thl.key").resolve_in(
            &role,
            Some(std::ffi::OsStr::new("/run/credentials/regfeed.service")),
        );
        assert_eq!(
            ok.ok(),
            Some(PathBuf::from("/run/credentials/regfeed.service/thl.key"))
        );
        assert!(matches!(
            KeySource::parse("credential:thl.key").resolve_in(&role, None),
            Err(KeyError::NoCredentialsDirectory { .. })
        ));
    }
}
