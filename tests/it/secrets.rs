//! Secrets (issue 8): keys, the bearer token and the mTLS client key come
//! only from files or systemd credentials that group and others cannot read,
//! and no type that holds or names one shows it in `Debug` or `Display`:
//! the config and every part of it, the key ring and each key, the opened
//! app, an HTTP sink built with a token and a client certificate, and key
//! errors. A database URL's password is redacted too.

use crate::common::delivery as helpers;
use crate::receiver;

use std::os::unix::fs::PermissionsExt;

use helpers::{SinkSpec, secret_file, write_http_setup};
use regfeed::app::App;
use regfeed::config::{DatabaseUrl, SinkConfig};
use regfeed::deliver::http::HttpSink;
use regfeed::identity::{Key, KeyRole, KeySource};
use regfeed::loaded::Config;

/// Every form of a secret that could leak through formatting: the text as
/// stored, upper-cased, and (for hex keys) the raw bytes as `Debug` of a
/// byte slice prints them.
fn forms(secret: &str) -> Vec<String> {
    let t = secret.trim().to_owned();
    let mut out = vec![t.clone(), t.to_ascii_uppercase()];
    if let Ok(bytes) = hex::decode(&t) {
        out.push(
            format!("{:?}", &bytes[..8])
                .trim_end_matches(']')
                .to_owned(),
        );
        out.push(
            format!("{:02X?}", &bytes[..8])
                .trim_end_matches(']')
                .to_owned(),
        );
    }
    out
}

fn assert_hidden(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} shows a secret:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_debug_or_display() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let token = "regfeed-token-5b1f0c2a9e7d4b3c8a6f";
    let mut spec = SinkSpec::new("https://127.0.0.1:9/register");
    spec.token = Some(secret_file(&tmp.path().join("token"), token));
    spec.ca = Some(pki.ca.clone());
    spec.client = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);

    // The secrets: every key file, the token, the client key's PEM body.
    let mut secrets = forms(token);
    for e in std::fs::read_dir(tmp.path().join("demo/keys")).expect("keys") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("key");
        secrets.extend(forms(&text));
    }
    let pem = std::fs::read_to_string(&pki.client_key).expect("client key");
    secrets.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(str::to_owned),
    );
    assert!(secrets.len() > 20, "the secrets were collected");

    let cfg = Config::load(&config).expect("config");
    assert_hidden("Config", &format!("{cfg:?}"), &secrets);
    assert_hidden("Config (pretty)", &format!("{cfg:#?}"), &secrets);
    for f in &cfg.feeds {
        assert_hidden("FeedConfig", &format!("{f:?}"), &secrets);
        assert_hidden("SinkConfig", &format!("{:?}", f.sink), &secrets);
        let SinkConfig::Http(h) = &f.sink else {
            panic!("the feeds deliver over HTTP");
        };
        let sink = HttpSink::build(h).expect("the sink builds with token and client key");
        assert_hidden("HttpSink", &format!("{sink:?}"), &secrets);
    }
    for r in &cfg.recipients {
        assert_hidden("Recipient", &format!("{r:?}"), &secrets);
    }

    let app = App::open(cfg.clone()).await.expect("app");
    assert_hidden("App", &format!("{app:?}"), &secrets);
    assert_hidden("KeyRing", &format!("{:?}", app.keys), &secrets);
    let mut keys: Vec<&Key> = vec![app.keys.index()];
    keys.extend(app.keys.audit());
    keys.extend(
        cfg.recipients
            .iter()
            .filter_map(|r| app.keys.pseudonym_key(&r.name)),
    );
    keys.extend(
        cfg.feeds
            .iter()
            .filter_map(|f| app.keys.record_key(&f.name)),
    );
    assert_eq!(keys.len(), 2 + cfg.recipients.len() + cfg.feeds.len());
    for k in keys {
        assert_hidden("Key (Debug)", &format!("{k:?}"), &secrets);
        assert_hidden("Key (Display)", &format!("{k}"), &secrets);
    }
}

#[test]
fn key_errors_name_the_role_and_path_never_the_content() {
    let tmp = tempfile::tempdir().expect("tmp");
    let hex_key = "ab".repeat(32);
    for (mode, content) in [(0o640, hex_key.clone()), (0o600, format!("{hex_key}zz"))] {
        let p = tmp.path().join(format!("k{mode:o}"));
        std::fs::write(&p, &content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let e = Key::load(&KeyRole::Index, &KeySource::File(p)).expect_err("refused");
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&hex_key[..16]), "{text}");
        }
    }
}

#[test]
fn a_client_key_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = receiver::pki(&tmp.path().join("pki"));
    let mut spec = SinkSpec::new("https://127.0.0.1:9/register");
    spec.ca = Some(pki.ca.clone());
    spec.client = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
    std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    let cfg = Config::load(&config).expect("config");
    let SinkConfig::Http(h) = &cfg.feeds[0].sink else {
        panic!("an HTTP sink");
    };
    let e = HttpSink::build(h).expect_err("refused");
    assert!(e.to_string().contains("group or others"), "{e}");
}

#[test]
fn a_fifo_in_place_of_a_token_is_refused_without_hanging() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fifo = tmp.path().join("token");
    let st = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let mut spec = SinkSpec::new("https://127.0.0.1:9/register");
    spec.token = Some(fifo);
    let config = write_http_setup(&tmp.path().join("demo"), &tmp.path().join("corpus"), &spec);
    let cfg = Config::load(&config).expect("config");
    let SinkConfig::Http(h) = &cfg.feeds[0].sink else {
        panic!("an HTTP sink");
    };
    let e = HttpSink::build(h).expect_err("refused");
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn database_url_passwords_are_redacted() {
    for (url, shown) in [
        (
            "postgres://regfeed:pa55-w0rd@db.example:5432/regfeed",
            "postgres://regfeed:<redacted>@db.example:5432/regfeed",
        ),
        (
            "postgres://db.example/regfeed?user=regfeed&password=pa55-w0rd&sslmode=require",
            "postgres://db.example/regfeed?user=regfeed&password=<redacted>&sslmode=require",
        ),
        (
            "sqlite:///var/lib/regfeed/regfeed.db",
            "sqlite:///var/lib/regfeed/regfeed.db",
        ),
    ] {
        let u = DatabaseUrl::from(url.to_owned());
        assert_eq!(u.to_string(), shown);
        assert!(!format!("{u:?}").contains("pa55"), "{u:?}");
        assert_eq!(&*u, url, "the store still gets the whole URL");
    }
}
