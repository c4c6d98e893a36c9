//! The composition root: loads keys, opens the store and runs feeds — stage,
//! seal, deliver. The command line and (later) the daemon call into here;
//! nothing below knows about either.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;

use crate::audit::{self, Entry};
use crate::config::{Config, FeedConfig, IdentityKind, SinkConfig};
use crate::deliver::file_drop::{FileDrop, SealedBatch};
use crate::feed::manifest::{Counts, DataRef, Identity, LegalBasis, Manifest, MappingRef, Window};
use crate::feed::{self, Op, Row};
use crate::identity::{KeyRing, KeyRole};
use crate::pipeline::{self, FeedKeys, Mode, RunReport};
use crate::store::{BatchInfo, SealRecord, Store};

/// Rows read from the store per page while sealing.
const SEAL_PAGE: i64 = 10_000;

/// The version of the policy rule set; "none" until objections land.
pub const RULES_VERSION: &str = "none";

/// A configured, opened regfeed: config, store and keys.
#[derive(Debug)]
pub struct App {
    pub cfg: Config,
    pub store: Store,
    pub keys: KeyRing,
}

/// What `once` did for one feed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnceReport {
    pub run: RunReport,
    pub sealed: Vec<i64>,
    pub delivered: Vec<PathBuf>,
}

/// Loads every key the config names: the index and audit keys, each recipient's
/// pseudonym key and each feed's record key.
pub fn load_keys(cfg: &Config) -> anyhow::Result<KeyRing> {
    let mut sources = BTreeMap::new();
    sources.insert(KeyRole::Index, cfg.index_key.clone());
    sources.insert(KeyRole::Audit, cfg.audit_key.clone());
    for r in &cfg.recipients {
        sources.insert(KeyRole::Pseudonym(r.name.clone()), r.pseudonym_key.clone());
    }
    for f in &cfg.feeds {
        sources.insert(KeyRole::Record(f.name.clone()), f.record_key.clone());
    }
    KeyRing::load(&sources).map_err(|e| anyhow::anyhow!("{e}"))
}

impl App {
    pub async fn open(cfg: Config) -> anyhow::Result<App> {
        let keys = load_keys(&cfg)?;
        let store = Store::open(&cfg.database_url)
            .await
            .context("opening the store")?;
        // Configuration, mapping versions and key ids: audited when changed.
        audit::record_config_if_changed(store.pool(), &cfg, &keys, RULES_VERSION).await?;
        Ok(App { cfg, store, keys })
    }

    fn feed(&self, name: &str) -> anyhow::Result<&FeedConfig> {
        match self.cfg.feed(name) {
            Some(f) => Ok(f),
            None => bail!("no feed named {name:?} in {}", self.cfg.path.display()),
        }
    }

    /// One run of one feed now: stage, seal, deliver.
    pub async fn once(&self, feed_name: &str) -> anyhow::Result<OnceReport> {
        let feed = self.feed(feed_name)?;
        let keys = FeedKeys::for_feed(&self.keys, feed)?;
        let today = Utc::now().date_naive();
        let run_id = self.store.start_run(&feed.name).await?;
        self.audit(Entry::RunStarted {
            feed: feed.name.clone(),
        })
        .await?;
        let run =
            match pipeline::stage(&self.cfg, feed, &self.store, keys, today, Mode::Commit).await {
                Ok(r) => r,
                Err(e) => {
                    self.store.finish_run(run_id, "failed", "{}").await?;
                    self.audit(audit_run_finished(&feed.name, "failed", None))
                        .await?;
                    return Err(e.into());
                }
            };
        let counts = serde_json::to_string(&run).unwrap_or_else(|_| "{}".into());
        self.store.finish_run(run_id, "ok", &counts).await?;
        self.audit(audit_run_finished(&feed.name, "ok", Some(&run)))
            .await?;
        if !run.staged.is_empty() {
            audit::log_head(self.store.pool()).await?;
        }
        tracing::info!(
            feed = %feed.name,
            decoded = run.documents_decoded,
            quarantined = run.documents_quarantined,
            upserts = run.upserts,
            retracts = run.retracts,
            staged = run.staged.len(),
            "Run staged."
        );
        let sealed = self.seal_pending(feed).await?;
        let delivered = self.deliver_pending(feed).await?;
        Ok(OnceReport {
            run,
            sealed,
            delivered,
        })
    }

    /// Appends one audit entry in a transaction of its own.
    async fn audit(&self, entry: Entry) -> anyhow::Result<()> {
        audit::record(self.store.pool(), &[entry]).await?;
        Ok(())
    }

    /// A dry run of one feed: the rows its next run would stage, changing
    /// nothing.
    pub async fn preview(&self, feed_name: &str) -> anyhow::Result<RunReport> {
        let feed = self.feed(feed_name)?;
        let keys = FeedKeys::for_feed(&self.keys, feed)?;
        let today = Utc::now().date_naive();
        Ok(pipeline::stage(&self.cfg, feed, &self.store, keys, today, Mode::DryRun).await?)
    }

    /// The outbox folder of a feed: sealed files wait here until delivered.
    pub fn outbox_dir(&self, feed: &str) -> PathBuf {
        self.cfg.state_dir.join("outbox").join(feed)
    }

    /// Seals every staged batch of the feed, in sequence order.
    pub async fn seal_pending(&self, feed: &FeedConfig) -> anyhow::Result<Vec<i64>> {
        let mut sealed = Vec::new();
        for b in self.store.batches(Some(&feed.name)).await? {
            if b.state == "staged" {
                self.seal(feed, &b).await?;
                sealed.push(b.seq);
            }
        }
        Ok(sealed)
    }

    async fn seal(&self, feed: &FeedConfig, b: &BatchInfo) -> anyhow::Result<()> {
        let dir = self.outbox_dir(&feed.name);
        std::fs::create_dir_all(&dir).context("creating the outbox folder")?;
        let columns = feed.mapping.feed_columns();
        let format = feed.mapping.format;
        let seq = u64::try_from(b.seq).context("batch sequence")?;

        // Stream the staged rows from the store into the data file.
        let store = self.store.clone();
        let (feed_name, dir2, cols) = (feed.name.clone(), dir.clone(), columns.clone());
        let handle = tokio::runtime::Handle::current();
        let info = tokio::task::spawn_blocking(move || {
            let mut from = 1i64;
            let mut page: std::vec::IntoIter<crate::store::BatchRow> = Vec::new().into_iter();
            let mut failed: Option<anyhow::Error> = None;
            let rows = std::iter::from_fn(|| {
                loop {
                    if let Some(r) = page.next() {
                        let op = Op::parse(&r.op)?;
                        let values = match op {
                            Op::Retract => Vec::new(),
                            Op::Upsert => {
                                let json: Vec<serde_json::Value> =
                                    serde_json::from_str(&r.row).unwrap_or_default();
                                json.iter()
                                    .zip(&cols)
                                    .map(|(j, c)| pipeline::json_to_value(j, c.ty))
                                    .collect()
                            }
                        };
                        return Some(Row {
                            record_id: r.record_id,
                            op,
                            values,
                        });
                    }
                    match handle.block_on(store.batch_rows(&feed_name, seq as i64, from, SEAL_PAGE))
                    {
                        Ok(next) if !next.is_empty() => {
                            from += next.len() as i64;
                            page = next.into_iter();
                        }
                        Ok(_) => return None,
                        Err(e) => {
                            failed = Some(e.into());
                            return None;
                        }
                    }
                }
            });
            let info = feed::write_data_file(&dir2, &feed_name, seq, format, &cols, rows);
            match failed {
                Some(e) => Err(e),
                None => info.map_err(anyhow::Error::from),
            }
        })
        .await
        .context("sealing task")??;

        let previous = self.store.previous_manifest(&feed.name, b.seq).await?;
        let sealed_at = Utc::now();
        let created_at = chrono::DateTime::parse_from_rfc3339(&b.created_at)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(sealed_at);
        let held: BTreeMap<String, u64> = serde_json::from_str(&b.held).unwrap_or_default();
        let lb = &feed.legal_basis;
        let manifest = Manifest {
            format: Default::default(),
            feed: feed.name.clone(),
            register: feed.register.clone(),
            seq,
            created_at,
            sealed_at,
            window: Window {
                from: b.window_from.map(|w| w.to_string()),
                to: b.window_to.to_string(),
            },
            mapping: MappingRef {
                name: feed.mapping.name.clone(),
                version: feed.mapping.version.clone(),
                sha256: feed.mapping.sha256.clone(),
            },
            rules_version: RULES_VERSION.into(),
            legal_basis: LegalBasis {
                purpose: lb.purpose,
                gdpr_art6: lb.art6,
                gdpr_art9: lb.art9,
                statute: lb.statute.clone(),
                derogation: None,
            },
            identity: Identity {
                kind: lb.identity,
                key_id: match lb.identity {
                    IdentityKind::Hetu => None,
                    IdentityKind::Pseudonym => feed
                        .recipient
                        .as_deref()
                        .and_then(|r| self.keys.pseudonym_key(r))
                        .map(|k| k.id().as_str().to_owned()),
                },
                record_key_id: self
                    .keys
                    .record_key(&feed.name)
                    .map(|k| k.id().as_str().to_owned())
                    .unwrap_or_default(),
            },
            data: DataRef {
                file: info.file.clone(),
                media_type: info.media_type,
                bytes: info.bytes,
                records: info.records,
                sha256: info.sha256.clone(),
            },
            counts: Counts {
                upserts: info.upserts,
                retracts: info.retracts,
                held: (!held.is_empty()).then_some(held),
                excluded: None,
                exempt: None,
            },
            previous_manifest_sha256: previous,
            test: feed.test,
        };
        let manifest_sha = feed::write_manifest(&dir, &manifest)?;
        let mut tx = self.store.begin().await?;
        tx.mark_sealed(
            &feed.name,
            b.seq,
            &SealRecord {
                data_file: info.file.clone(),
                data_bytes: info.bytes as i64,
                data_sha256: info.sha256.clone(),
                manifest_sha256: manifest_sha.clone(),
                sealed_at: sealed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        )
        .await?;
        audit::append(
            tx.conn(),
            &[Entry::BatchSealed {
                feed: feed.name.clone(),
                seq: b.seq,
                data_sha256: info.sha256.clone(),
                manifest_sha256: manifest_sha.clone(),
                removed_at_sealing: Vec::new(),
            }],
        )
        .await?;
        tx.commit().await?;
        audit::log_head(self.store.pool()).await?;
        tracing::info!(feed = %feed.name, seq, records = info.records, manifest_sha256 = %manifest_sha, "Batch sealed.");
        Ok(())
    }

    /// Delivers every sealed batch of the feed, in sequence order; stops at
    /// the first failure so batches never arrive out of order.
    pub async fn deliver_pending(&self, feed: &FeedConfig) -> anyhow::Result<Vec<PathBuf>> {
        let mut delivered = Vec::new();
        let dir = self.outbox_dir(&feed.name);
        for b in self.store.batches(Some(&feed.name)).await? {
            if b.state != "sealed" {
                continue;
            }
            let (Some(data_file), Some(data_sha), Some(manifest_sha)) = (
                b.data_file.clone(),
                b.data_sha256.clone(),
                b.manifest_sha256.clone(),
            ) else {
                bail!(
                    "feed {}: batch {} is sealed without its digests",
                    feed.name,
                    b.seq
                );
            };
            let sealed = SealedBatch {
                dir: dir.clone(),
                data_file,
                data_sha256: data_sha,
                manifest_file: feed::manifest_file_name(&feed.name, b.seq as u64),
                manifest_sha256: manifest_sha,
            };
            let receipt = match &feed.sink {
                SinkConfig::FileDrop { dir: target } => {
                    std::fs::create_dir_all(target).context("creating the file-drop folder")?;
                    let sink = FileDrop::new(target.clone());
                    tokio::task::spawn_blocking(move || sink.deliver(&sealed))
                        .await
                        .context("delivery task")??
                }
            };
            let receipt_json = serde_json::json!({
                "sink": "file_drop",
                "data_sha256": receipt.data_sha256,
                "manifest_sha256": receipt.manifest_sha256,
                "delivered_at": receipt.delivered_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "already_delivered": receipt.already_delivered,
            });
            self.store
                .mark_delivered(&feed.name, b.seq, &receipt_json.to_string())
                .await?;
            self.audit(Entry::Delivery {
                feed: feed.name.clone(),
                seq: b.seq,
                outcome: "delivered".into(),
                receipt: receipt_json,
            })
            .await?;
            audit::log_head(self.store.pool()).await?;
            tracing::info!(feed = %feed.name, seq = b.seq, "Batch delivered.");
            delivered.push(receipt.data_path);
        }
        Ok(delivered)
    }
}

/// A `run_finished` entry: the run's counts (no timings: they are not facts
/// an auditor needs, and they would make entries unrepeatable).
fn audit_run_finished(feed: &str, outcome: &str, run: Option<&RunReport>) -> Entry {
    let mut counts = BTreeMap::new();
    if let Some(r) = run {
        for (k, v) in [
            ("files_new", r.files_new),
            ("documents_decoded", r.documents_decoded),
            ("documents_duplicate", r.documents_duplicate),
            ("documents_quarantined", r.documents_quarantined),
            ("documents_temporary_id", r.documents_temporary_id),
            ("persons_evaluated", r.persons_evaluated),
            ("cohort_entered", r.cohort_entered),
            ("cohort_left", r.cohort_left),
            ("upserts", r.upserts),
            ("retracts", r.retracts),
            ("batches_staged", r.staged.len() as u64),
        ] {
            counts.insert(k.to_owned(), v);
        }
        for (reason, n) in &r.held {
            counts.insert(format!("held:{reason}"), *n);
        }
    }
    Entry::RunFinished {
        feed: feed.to_owned(),
        outcome: outcome.to_owned(),
        counts,
    }
}
