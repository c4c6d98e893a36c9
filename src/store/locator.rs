//! Sealed locators: where a document was read (`seen.path`,
//! `documents.path`, `quarantine.path`) is stored sealed, never in clear, so
//! that a file named after a person (a hetu in the name) leaves no trace of
//! it in the store (DESIGN: the store holds no hetu).
//!
//! The seal is deterministic authenticated encryption (the SIV construction,
//! RFC 5297's idea, with HMAC-SHA-256 as its PRF) under two keys derived from
//! the index key:
//!
//! - `iv = HMAC(k_iv, path)[..16]`, the synthetic IV;
//! - `ct = path XOR HMAC(k_enc, iv ‖ 0u32) ‖ HMAC(k_enc, iv ‖ 1u32) ‖ …`;
//! - sealed: `L1.` and the unpadded URL-safe base64 of `iv ‖ ct`.
//!
//! The same path always seals to the same text, so the store still finds a
//! listed file by equality (`seen`'s primary key, `IN` lists); equal paths
//! are all the sealed form shows, besides their length. Opening recomputes
//! the IV from the decrypted path and refuses a locator that was not sealed
//! under this index key, or was altered. The index key is never rotated
//! under a store (docs/KEYS.md), so sealed locators stay readable for the
//! store's life.
//!
//! Callers seal a path where it enters the store and open it where it
//! leaves (the pipeline: [`LocatorKey::seal_in_place`] before the chunk's
//! writes, [`LocatorKey::open`] before a document is re-read). Rows written
//! before locators were sealed are converted once, by
//! [`seal_legacy_locators`], when the store is first opened with the keys.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::identity::Key;

use super::{Result, Store, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// What every sealed locator starts with (the format's version).
pub const SEALED_PREFIX: &str = "L1.";
const IV_BYTES: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The two keys locators are sealed under, derived from the index key.
#[derive(Clone)]
pub struct LocatorKey {
    iv: HmacSha256,
    enc: HmacSha256,
}

impl std::fmt::Debug for LocatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocatorKey(<redacted>)")
    }
}

/// A stored locator that does not open under this index key.
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored document locator does not open under this index key \
     (not sealed by regfeed, altered, or sealed under another index key)"
)]
pub struct LocatorError;

impl LocatorKey {
    pub fn new(index: &Key) -> LocatorKey {
        let mut iv = index.derive(b"regfeed/locator/v1/iv");
        let mut enc = index.derive(b"regfeed/locator/v1/enc");
        let key = LocatorKey {
            iv: HmacSha256::new_from_slice(&iv).expect("HMAC accepts keys of any length"),
            enc: HmacSha256::new_from_slice(&enc).expect("HMAC accepts keys of any length"),
        };
        iv.fill(0);
        enc.fill(0);
        key
    }

    fn synthetic_iv(&self, path: &[u8]) -> HmacSha256 {
        let mut mac = self.iv.clone();
        mac.update(path);
        mac
    }

    /// XORs `data` with the keystream of `iv`.
    fn apply_keystream(&self, iv: &[u8], data: &mut [u8]) {
        for (block, chunk) in data.chunks_mut(32).enumerate() {
            let mut mac = self.enc.clone();
            mac.update(iv);
            mac.update(&(block as u32).to_be_bytes());
            let stream = mac.finalize().into_bytes();
            for (b, s) in chunk.iter_mut().zip(stream.iter()) {
                *b ^= s;
            }
        }
    }

    /// The sealed form of a locator (a path, or a `sql` source's row id).
    pub fn seal(&self, path: &str) -> String {
        let iv = self.synthetic_iv(path.as_bytes()).finalize().into_bytes();
        let mut out = Vec::with_capacity(IV_BYTES + path.len());
        out.extend_from_slice(&iv[..IV_BYTES]);
        out.extend_from_slice(path.as_bytes());
        let (iv, ct) = out.split_at_mut(IV_BYTES);
        self.apply_keystream(iv, ct);
        let mut s = String::with_capacity(SEALED_PREFIX.len() + (out.len() * 4).div_ceil(3));
        s.push_str(SEALED_PREFIX);
        B64.encode_string(&out, &mut s);
        s
    }

    /// The locator a sealed form holds.
    pub fn open(&self, sealed: &str) -> std::result::Result<String, LocatorError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or(LocatorError)?;
        let mut raw = B64.decode(body).map_err(|_| LocatorError)?;
        if raw.len() < IV_BYTES {
            return Err(LocatorError);
        }
        let (iv, ct) = raw.split_at_mut(IV_BYTES);
        self.apply_keystream(iv, ct);
        self.synthetic_iv(ct)
            .verify_truncated_left(iv)
            .map_err(|_| LocatorError)?;
        let plain = ct.to_vec();
        String::from_utf8(plain).map_err(|_| LocatorError)
    }

    /// Seals each locator in place (rows about to be written).
    pub fn seal_in_place<'a>(&self, paths: impl IntoIterator<Item = &'a mut String>) {
        for p in paths {
            *p = self.seal(p);
        }
    }
}

/// Seals the locators of rows written before locators were sealed
/// (migration `sealed_locators` left a mark when it found any), once, in
/// one transaction; a second process finds the mark gone and does nothing.
/// Returns how many rows it converted.
pub async fn seal_legacy_locators(store: &Store, key: &LocatorKey) -> Result<u64> {
    // Every command opens the store through here: without a mark, a plain
    // read answers, and no write lock is taken (a read-only `status` or
    // `quarantine list` must not wait behind, or hold up, a running feed).
    let marks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM locator_sealing_pending")
        .fetch_one(store.pool())
        .await?;
    if marks == 0 {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let marked = sqlx::query("DELETE FROM locator_sealing_pending")
        .execute(tx.conn())
        .await?
        .rows_affected();
    if marked == 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut converted = 0u64;
    let seen: Vec<(String, String)> = sqlx::query_as("SELECT source, path FROM seen")
        .fetch_all(tx.conn())
        .await?;
    for (source, path) in seen {
        sqlx::query("UPDATE seen SET path = $1 WHERE source = $2 AND path = $3")
            .bind(key.seal(&path))
            .bind(&source)
            .bind(&path)
            .execute(tx.conn())
            .await?;
        converted += 1;
    }
    for table in ["documents", "quarantine"] {
        let id = if table == "documents" {
            "doc_key"
        } else {
            "id"
        };
        let rows: Vec<(i64, String)> = sqlx::query_as(&format!("SELECT {id}, path FROM {table}"))
            .fetch_all(tx.conn())
            .await?;
        for (row, path) in rows {
            sqlx::query(&format!("UPDATE {table} SET path = $1 WHERE {id} = $2"))
                .bind(key.seal(&path))
                .bind(row)
                .execute(tx.conn())
                .await?;
            converted += 1;
        }
    }
    tx.commit().await?;
    if converted > 0 {
        tracing::info!(
            rows = converted,
            "Sealed the document locators stored in clear."
        );
    }
    Ok(converted)
}

impl From<LocatorError> for StoreError {
    fn from(e: LocatorError) -> StoreError {
        StoreError::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::KeyRole;

    fn key(b: u8) -> LocatorKey {
        LocatorKey::new(&Key::from_bytes(&KeyRole::Index, &[b; 32]).expect("key"))
    }

    #[test]
    fn a_sealed_locator_opens_to_the_path_and_shows_none_of_it() {
        let k = key(7);
        for path in [
            "",
            "a",
            "311299-999A/kertomus.xml",
            "deep/folder/with a long name that spans more than one keystream block of 32 bytes/131052-9981.xml",
            "ääkköset/ö.xml",
        ] {
            let sealed = k.seal(path);
            assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
            assert_eq!(k.open(&sealed).expect("opens"), path);
            if path.len() >= 4 {
                for w in path.as_bytes().windows(4) {
                    let w = String::from_utf8_lossy(w);
                    assert!(!sealed.contains(&*w), "{sealed} shows {w:?} of {path}");
                }
            }
        }
    }

    #[test]
    fn sealing_is_deterministic_per_key_and_distinct_per_path() {
        let (a, b) = (key(7), key(8));
        let p = "archive/311299-999A.xml";
        assert_eq!(a.seal(p), a.seal(p));
        assert_ne!(a.seal(p), a.seal("archive/311299-998A.xml"));
        assert_ne!(a.seal(p), b.seal(p));
    }

    #[test]
    fn a_locator_of_another_key_or_altered_or_in_clear_does_not_open() {
        let (a, b) = (key(7), key(8));
        let sealed = a.seal("archive/311299-999A.xml");
        assert!(b.open(&sealed).is_err());
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(a.open(&String::from_utf8(bytes).expect("ascii")).is_err());
        assert!(a.open("archive/311299-999A.xml").is_err());
        assert!(a.open("L1.").is_err());
        assert!(a.open("L1.!!").is_err());
    }
}
