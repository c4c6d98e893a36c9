//! Helpers for delivery tests: a demo setup whose sinks point at a test
//! receiver, and synthetic batches staged straight through the store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use regfeed::app::App;
use regfeed::loaded::Config;
use regfeed::store::{BatchRow, NewBatch};
use sha2::{Digest, Sha256};

/// How the feeds' HTTP sinks are configured.
#[derive(Debug, Clone, Default)]
pub struct SinkSpec {
    pub base_url: String,
    pub token: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
    pub base: &'static str,
    pub cap: &'static str,
    pub attempt_timeout: &'static str,
    pub max_elapsed: &'static str,
    pub max_documents_per_batch: Option<usize>,
}

impl SinkSpec {
    pub fn new(base_url: &str) -> SinkSpec {
        SinkSpec {
            base_url: base_url.to_owned(),
            base: "1ms",
            cap: "20ms",
            attempt_timeout: "2s",
            max_elapsed: "120s",
            ..SinkSpec::default()
        }
    }

    fn toml(&self) -> String {
        let q = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
        let mut t = format!(
            "kind = \"http\"\nbase_url = {}\n",
            toml::Value::String(self.base_url.clone())
        );
        if self.base_url.starts_with("http://") {
            t.push_str("allow_insecure_http = true\n");
        }
        if let Some(p) = &self.token {
            t.push_str(&format!("token = {}\n", q(p)));
        }
        if let Some(p) = &self.ca {
            t.push_str(&format!("ca = {}\n", q(p)));
        }
        if let Some((c, k)) = &self.client {
            t.push_str(&format!("client_cert = {}\nclient_key = {}\n", q(c), q(k)));
        }
        t.push_str(&format!(
            "\n[feeds.sink.retry]\nbase = \"{}\"\ncap = \"{}\"\nattempt_timeout = \"{}\"\nmax_elapsed = \"{}\"\n",
            self.base, self.cap, self.attempt_timeout, self.max_elapsed
        ));
        t
    }
}

/// Writes a demo setup for `corpus` into `dir` whose feeds deliver to an
/// HTTP sink; returns the config path.
pub fn write_http_setup(dir: &Path, corpus: &Path, spec: &SinkSpec) -> PathBuf {
    std::fs::create_dir_all(corpus).expect("corpus dir");
    let setup = regfeed::demo::write_setup(dir, corpus).expect("setup");
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l == "kind = \"file_drop\"" {
            lines.next(); // dir = ...
            out.push_str(&spec.toml());
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if let Some(n) = spec.max_documents_per_batch {
        out = out.replacen(
            "[daemon]\n",
            &format!("[daemon]\nmax_documents_per_batch = {n}\n"),
            1,
        );
    }
    std::fs::write(&setup.config, out).expect("write config");
    setup.config
}

pub async fn open(config: &Path) -> App {
    App::open(Config::load(config).expect("config validates"))
        .await
        .expect("app")
}

/// Stages `n` one-row batches for `feed` straight through the store.
pub async fn stage_synthetic(app: &App, feed: &str, n: usize) {
    stage_salted(app, feed, n, "").await
}

/// Like [`stage_synthetic`], with record ids that also depend on `salt`.
pub async fn stage_salted(app: &App, feed: &str, n: usize, salt: &str) {
    let cols = app
        .cfg
        .feed(feed)
        .expect("feed")
        .mapping
        .feed_columns()
        .len();
    let nulls = serde_json::to_string(&vec![serde_json::Value::Null; cols]).expect("json");
    for _ in 0..n {
        let mut tx = app.store.begin().await.expect("tx");
        let seq = tx.next_seq(feed).await.expect("seq");
        let record_id = hex::encode(Sha256::digest(format!("{feed}:{seq}{salt}")));
        tx.insert_batch(
            &NewBatch {
                feed: feed.to_owned(),
                seq,
                window_from: None,
                window_to: seq,
                upserts: 1,
                retracts: 0,
                held: "{}".into(),
                policy: "{}".into(),
            },
            &[BatchRow {
                record_id,
                op: "upsert".into(),
                row: nulls.clone(),
                person: None,
                doc_key: None,
            }],
        )
        .await
        .expect("batch");
        tx.commit().await.expect("commit");
    }
}

/// Writes a secret file (mode 0600).
pub fn secret_file(path: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}
