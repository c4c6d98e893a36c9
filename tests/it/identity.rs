//! Keys and keyed identities (DESIGN §2, §4).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use regfeed::decode::hetu::{self, Hetu};
use regfeed::identity::{
    Key, KeyError, KeyRing, KeyRole, KeySource, generate_key_file, person_index, pseudonym,
    record_id,
};
use sha2::Sha256;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn fixed_key() -> Key {
    Key::from_bytes(&KeyRole::Index, &(0u8..32).collect::<Vec<_>>()).expect("32 bytes")
}

fn key_of(byte: u8) -> Key {
    Key::from_bytes(&KeyRole::Index, &[byte; 32]).expect("32 bytes")
}

fn test_hetu() -> Hetu {
    Hetu::parse("010203A9046").expect("valid test hetu")
}

fn write_key(dir: &Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).expect("write key");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn load(path: &Path) -> Result<Key, KeyError> {
    Key::load(
        &KeyRole::Pseudonym("thl".into()),
        &KeySource::File(path.to_path_buf()),
    )
}

#[test]
fn known_answers() {
    let key = fixed_key();
    let h = test_hetu();
    // Computed independently (Python hmac/hashlib) for this key and hetu.
    assert_eq!(
        pseudonym(&key, &h),
        "08b43a832f35094d50976016bc057a8bd3870aae0a066cc87a486d52f72d36a8"
    );
    assert_eq!(person_index(&key, &h).as_str(), pseudonym(&key, &h));
    assert_eq!(
        record_id(&key, "1.2.246.10.1234.1.abc", 7),
        "cf0313ac28b5ea3c1a35900711063b1b77f9d90bb3fbd11e2c2cea9b9ae6f81a"
    );
    assert_eq!(key.id().as_str(), "12b2e18279b61908");

    // And against the hmac crate directly, spelling out the construction.
    let mut mac = Hmac::<Sha256>::new_from_slice(&(0u8..32).collect::<Vec<_>>()).expect("key");
    mac.update(format!("1.2.246.21:{}", h.as_str().to_uppercase()).as_bytes());
    assert_eq!(
        pseudonym(&key, &h),
        hex::encode(mac.finalize().into_bytes())
    );
}

#[test]
fn pseudonym_is_stable() {
    let h = test_hetu();
    assert_eq!(pseudonym(&key_of(7), &h), pseudonym(&key_of(7), &h));
    let p = pseudonym(&key_of(7), &h);
    assert_eq!(p.len(), 64);
    assert!(p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
}

fn test_hetus() -> impl Strategy<Value = Hetu> {
    (0i64..36_500, 900u32..=999).prop_filter_map("a valid test-range hetu", |(days, n)| {
        let d = NaiveDate::from_ymd_opt(1930, 1, 1)? + chrono::Duration::days(days);
        let sign = if d.year() < 2000 { b'-' } else { b'A' };
        hetu::make(d, sign, n)
    })
}

proptest! {
    #[test]
    fn two_recipients_never_share_a_pseudonym(h in test_hetus(), a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        prop_assume!(a != b);
        let ka = Key::from_bytes(&KeyRole::Pseudonym("a".into()), &a).expect("key");
        let kb = Key::from_bytes(&KeyRole::Pseudonym("b".into()), &b).expect("key");
        prop_assert_ne!(pseudonym(&ka, &h), pseudonym(&kb, &h));
        prop_assert!(h.is_test_range());
    }

    #[test]
    fn rotating_a_pseudonym_key_leaves_record_ids(set in "[0-9.]{1,40}", ord in 1u32..10_000, old in any::<[u8; 32]>(), new in any::<[u8; 32]>()) {
        let mut ring = KeyRing::new(key_of(1));
        ring.insert(KeyRole::Record("diabetes".into()), key_of(2));
        ring.insert(KeyRole::Pseudonym("thl".into()), Key::from_bytes(&KeyRole::Index, &old).expect("key"));
        let before = record_id(ring.record_key("diabetes").expect("record key"), &set, ord);
        ring.insert(KeyRole::Pseudonym("thl".into()), Key::from_bytes(&KeyRole::Index, &new).expect("key"));
        let after = record_id(ring.record_key("diabetes").expect("record key"), &set, ord);
        prop_assert_eq!(before, after);
    }
}

#[test]
fn key_file_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
        let p = write_key(dir.path(), &format!("k{mode:o}"), KEY_HEX, mode);
        let err = load(&p).expect_err("refused");
        assert!(
            matches!(err, KeyError::Permissions { .. }),
            "{mode:o}: {err}"
        );
        let shown = err.to_string();
        assert!(shown.contains("pseudonym:thl"), "names the role: {shown}");
        assert!(!shown.contains(KEY_HEX));
    }
    for mode in [0o600, 0o400] {
        let p = write_key(
            dir.path(),
            &format!("ok{mode:o}"),
            &format!("{KEY_HEX}\n"),
            mode,
        );
        let key = load(&p).expect("accepted");
        assert_eq!(key.id(), fixed_key().id());
    }
}

#[test]
fn key_file_content_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = write_key(dir.path(), "short", &KEY_HEX[..62], 0o600);
    assert!(matches!(load(&short), Err(KeyError::TooShort { .. })));
    let not_hex = write_key(dir.path(), "nothex", &"zz".repeat(32), 0o600);
    let err = load(&not_hex).expect_err("not hex");
    assert!(matches!(err, KeyError::NotHex { .. }) && !err.to_string().contains("zz"));
    let upper = write_key(
        dir.path(),
        "upper",
        &format!("  {}\r\n", KEY_HEX.to_uppercase()),
        0o600,
    );
    assert_eq!(load(&upper).expect("upper hex").id(), fixed_key().id());
    assert!(matches!(
        load(dir.path()),
        Err(KeyError::NotRegularFile { .. })
    ));
    assert!(matches!(
        load(&dir.path().join("absent")),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn short_keys_are_refused() {
    assert!(Key::from_bytes(&KeyRole::Audit, &[1u8; 31]).is_err());
    assert!(Key::from_bytes(&KeyRole::Audit, &[1u8; 32]).is_ok());
}

#[test]
fn debug_never_shows_key_bytes() {
    let key = fixed_key();
    let mut ring = KeyRing::new(key.clone());
    ring.insert(KeyRole::Audit, key_of(0xab));
    ring.insert(KeyRole::Pseudonym("thl".into()), key_of(0xcd));
    ring.insert(KeyRole::Record("diabetes".into()), key_of(0xef));
    let shown = format!("{key:?} {key} {ring:?} {ring:#?}");
    assert!(!shown.contains(KEY_HEX), "{shown}");
    for b in ["ab", "cd", "ef"] {
        assert!(!shown.contains(&b.repeat(8)), "{shown}");
    }
    assert!(shown.contains(key.id().as_str()));
    assert!(shown.contains("pseudonym:thl"));
}

#[test]
fn generated_key_files_load_and_are_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("thl.key");
    let id = generate_key_file(&p).expect("generated");
    let meta = fs::metadata(&p).expect("exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&p).expect("readable");
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert_eq!(load(&p).expect("loads").id(), &id);
    assert!(matches!(
        generate_key_file(&p),
        Err(KeyError::Exists { .. })
    ));
    assert_eq!(fs::read_to_string(&p).expect("unchanged"), text);
    let other = generate_key_file(&dir.path().join("other.key")).expect("second");
    assert_ne!(other, id, "two generated keys differ");
}

#[test]
fn keyring_loads_roles_and_reports_every_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = dir.path().join("index.key");
    let thl = dir.path().join("thl.key");
    let rec = dir.path().join("rec.key");
    for p in [&index, &thl, &rec] {
        generate_key_file(p).expect("generated");
    }
    let mut sources: BTreeMap<KeyRole, KeySource> = BTreeMap::new();
    sources.insert(
        "index".parse().expect("role"),
        KeySource::File(index.clone()),
    );
    sources.insert(
        "pseudonym:thl".parse().expect("role"),
        KeySource::parse(&thl.to_string_lossy()),
    );
    sources.insert(
        "record:diabetes".parse().expect("role"),
        KeySource::File(rec.clone()),
    );
    let ring = KeyRing::load(&sources).expect("loads");
    assert!(ring.pseudonym_key("thl").is_some());
    assert!(ring.record_key("diabetes").is_some());
    assert!(ring.audit().is_none());
    assert_eq!(ring.key_ids().len(), 3);

    fs::set_permissions(&thl, fs::Permissions::from_mode(0o644)).expect("chmod");
    sources.insert(KeyRole::Audit, KeySource::File(dir.path().join("absent")));
    let err = KeyRing::load(&sources).expect_err("two failures");
    assert_eq!(err.errors.len(), 2, "{err}");
    assert!(err.to_string().contains("pseudonym:thl") && err.to_string().contains("audit"));

    let mut no_index = BTreeMap::new();
    no_index.insert(KeyRole::Record("diabetes".into()), KeySource::File(rec));
    let err = KeyRing::load(&no_index).expect_err("index is required");
    assert!(matches!(err.errors[0], KeyError::NoIndexKey));
}

#[test]
fn credentials_resolve_under_the_credentials_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_key_file(&dir.path().join("regfeed-index")).expect("generated");
    let src = KeySource::parse("credential:regfeed-index");
    let path = src
        .resolve_in(&KeyRole::Index, Some(dir.path().as_os_str()))
        .expect("resolves");
    assert_eq!(path, dir.path().join("regfeed-index"));
    assert!(Key::load(&KeyRole::Index, &KeySource::File(path)).is_ok());
    assert_eq!(src.to_string(), "credential:regfeed-index");
}
