//! The composition root: loads keys, opens the store and runs feeds — stage,
//! seal, deliver. The command line and (later) the daemon call into here;
//! nothing below knows about either.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;

use crate::audit::{self, Entry};
use crate::config::IdentityKind;
use crate::feed::manifest::{Counts, DataRef, Identity, LegalBasis, Manifest, MappingRef, Window};
use crate::feed::{self, Op, Row};
use crate::identity::{KeyRing, KeyRole};
use crate::loaded::{Config, FeedConfig};
use crate::pipeline::{self, FeedKeys, Mode, RunReport};
use crate::store::{BatchInfo, SealRecord, Store};

/// Rows read from the store per page while sealing.
const SEAL_PAGE: i64 = 10_000;

/// The `op` of a staged row taken out of its batch at sealing.
pub const REMOVED: &str = "removed";

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
    /// Data files a file-drop sink delivered.
    pub delivered: Vec<PathBuf>,
    /// Sequences delivered (any sink).
    pub delivered_seqs: Vec<i64>,
    /// Sequences that became dead.
    pub dead: Vec<i64>,
    /// The dead batch the feed waits on, if any.
    pub waiting_on: Option<i64>,
}

/// The sealing-time re-check of a staged batch.
#[derive(Debug, Clone, Default)]
pub struct Recheck {
    /// Upserts that may no longer go out: record id → rule.
    pub dropped: BTreeMap<String, String>,
    /// The same, per person (index pseudonym) and rule: records removed.
    pub removed: BTreeMap<(String, String), u64>,
    /// People (index pseudonyms) whose location columns are shielded.
    pub turvakielto: std::collections::HashSet<String>,
    /// Per person: rows that go out although an objection applies, and
    /// the basis (`exempt: <statute>`).
    pub exempt: BTreeMap<String, (String, u64)>,
    /// Removed rows that are held, re-evaluated every run: (record id,
    /// person, reason).
    pub held: Vec<(String, String, String)>,
    /// People who are no longer in the feed's cohort.
    pub left_cohort: Vec<String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub rows: u64,
    pub counts: BTreeMap<String, usize>,
    /// Bad rows (nothing was imported when there are any).
    pub errors: Vec<crate::policy::import::LineError>,
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

/// Refuses keys that must never change under an existing store (see
/// docs/KEYS.md), compared with the key ids of the last audited
/// configuration: the index key (every person, objection and restriction in
/// the store is keyed by it; another key would silently split people and
/// lose their objections) and each feed's record key (the register would get
/// the same entries again under new ids). Pseudonym and audit keys may
/// rotate; their change is audited. A recipient's pseudonym key may rotate
/// only while none of its feeds has an undelivered batch: such a batch holds
/// pseudonyms made with the old key and may be sealed (again) later, when
/// its manifest would name the new key.
async fn refuse_swapped_keys(store: &Store, cfg: &Config, keys: &KeyRing) -> anyhow::Result<()> {
    let last: Option<String> = sqlx::query_scalar(
        "SELECT data FROM audit WHERE kind = 'config' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(store.pool())
    .await
    .context("reading the last audited key ids")?;
    let Some(last) = last else {
        return Ok(());
    };
    let Entry::Config { key_ids, .. } = Entry::from_parts("config", None, &last)? else {
        bail!("the last config entry of the audit trail does not decode as one");
    };
    let before: BTreeMap<&str, &str> = key_ids
        .iter()
        .map(|k| (k.role.as_str(), k.id.as_str()))
        .collect();
    for (role, id) in keys.key_ids() {
        let name = role.to_string();
        let Some(old) = before.get(name.as_str()).filter(|old| **old != id.as_str()) else {
            continue;
        };
        if let KeyRole::Pseudonym(recipient) = &role {
            for f in cfg
                .feeds
                .iter()
                .filter(|f| f.recipient.as_deref() == Some(recipient.as_str()))
            {
                let waiting: Vec<String> = store
                    .batches(Some(&f.name))
                    .await?
                    .into_iter()
                    .filter(|b| b.state != "delivered")
                    .map(|b| format!("{} ({})", b.seq, b.state))
                    .collect();
                if !waiting.is_empty() {
                    bail!(
                        "the {name} key changed (key id {old} in the audit trail, {id} now) \
                         while feed {} has undelivered batches {}: their rows hold pseudonyms \
                         of the old key; deliver them with the old key first (docs/KEYS.md)",
                        f.name,
                        waiting.join(", ")
                    );
                }
            }
        }
        if matches!(role, KeyRole::Index | KeyRole::Record(_)) {
            bail!(
                "the {name} key changed (key id {old} in the audit trail, {id} now): \
                 this key is never rotated under an existing store (docs/KEYS.md); \
                 restore the key file, or start a new state directory"
            );
        }
    }
    Ok(())
}

/// Refuses a state directory (or its outbox) that belongs to another user
/// than the one this command runs as (`ownership`).
pub fn check_state_owner(cfg: &Config) -> Result<(), crate::ownership::ForeignOwner> {
    crate::ownership::check("state directory", &cfg.state_dir)?;
    crate::ownership::check("outbox folder", &cfg.state_dir.join("outbox"))
}

impl App {
    pub async fn open(cfg: Config) -> anyhow::Result<App> {
        let keys = load_keys(&cfg)?;
        check_state_owner(&cfg)?;
        let store = Store::open_with(&cfg.database_url, cfg.daemon.lease_ttl)
            .await
            .context("opening the store")?;
        refuse_swapped_keys(&store, &cfg, &keys).await?;
        // Rows from before locators were sealed: sealed now, once.
        let locator = crate::store::locator::LocatorKey::new(keys.index());
        crate::store::locator::seal_legacy_locators(&store, &locator)
            .await
            .context("sealing the stored document locators")?;
        // Configuration, mapping versions and key ids: audited when changed.
        audit::record_config_if_changed(&store, &cfg, &keys, crate::policy::RULES_VERSION).await?;
        Ok(App { cfg, store, keys })
    }

    /// Records a run's end in the store and the audit trail, with its
    /// counts when it got as far as staging.
    async fn finish_run(
        &self,
        feed: &str,
        run_id: i64,
        outcome: &str,
        run: Option<&RunReport>,
    ) -> anyhow::Result<()> {
        let counts = run.map_or_else(
            || "{}".to_owned(),
            |r| serde_json::to_string(r).unwrap_or_else(|_| "{}".into()),
        );
        self.store.finish_run(run_id, outcome, &counts).await?;
        self.audit(audit_run_finished(feed, outcome, run)).await?;
        Ok(())
    }

    fn feed(&self, name: &str) -> anyhow::Result<&FeedConfig> {
        match self.cfg.feed(name) {
            Some(f) => Ok(f),
            None => bail!("no feed named {name:?} in {}", self.cfg.path.display()),
        }
    }

    /// One run of one feed now: stage, seal, deliver (`regfeed once`). The
    /// run is recorded with its outcome once delivery has been tried: "ok",
    /// "waiting" (a dead batch holds the feed back) or "failed".
    pub async fn once(&self, feed_name: &str) -> anyhow::Result<OnceReport> {
        let feed = self.feed(feed_name)?;
        let (run_id, run) = self.stage_step(feed).await?;
        // Sealing happens in delivery, just before each batch's first attempt.
        let d = match self.deliver_feed(feed).await {
            Ok(d) => d,
            Err(e) => {
                self.finish_run(&feed.name, run_id, "failed", Some(&run))
                    .await?;
                return Err(e);
            }
        };
        let outcome = if d.waiting_on.is_some() {
            "waiting"
        } else {
            "ok"
        };
        self.finish_run(&feed.name, run_id, outcome, Some(&run))
            .await?;
        Ok(OnceReport {
            run,
            sealed: d.sealed,
            delivered: d.delivered_paths,
            delivered_seqs: d.delivered,
            dead: d.dead,
            waiting_on: d.waiting_on,
        })
    }

    /// One run of one feed as the daemon runs it: stage, and return. The
    /// feed's outbox loop seals and delivers what it staged. The run is
    /// "ok", or "waiting" when a dead batch of the feed holds its later
    /// batches back.
    pub async fn stage_run(&self, feed_name: &str) -> anyhow::Result<OnceReport> {
        let feed = self.feed(feed_name)?;
        let (run_id, run) = self.stage_step(feed).await?;
        let waiting_on = match self.store.batches(Some(&feed.name)).await {
            Ok(b) => b.iter().find(|b| b.state == "dead").map(|b| b.seq),
            Err(e) => {
                self.finish_run(&feed.name, run_id, "failed", Some(&run))
                    .await?;
                return Err(e.into());
            }
        };
        let outcome = if waiting_on.is_some() {
            "waiting"
        } else {
            "ok"
        };
        self.finish_run(&feed.name, run_id, outcome, Some(&run))
            .await?;
        Ok(OnceReport {
            run,
            sealed: Vec::new(),
            delivered: Vec::new(),
            delivered_seqs: Vec::new(),
            dead: Vec::new(),
            waiting_on,
        })
    }

    /// Starts a run of the feed and stages: the run's id and report. A
    /// failed staging is recorded as a failed run.
    async fn stage_step(&self, feed: &FeedConfig) -> anyhow::Result<(i64, RunReport)> {
        let keys = FeedKeys::for_feed(&self.keys, feed)?;
        let now = Utc::now();
        let run_id = self.store.start_run(&feed.name).await?;
        self.audit(Entry::RunStarted {
            feed: feed.name.clone(),
        })
        .await?;
        let run = match pipeline::stage(&self.cfg, feed, &self.store, keys, now, Mode::Commit).await
        {
            Ok(r) => r,
            Err(e) => {
                self.finish_run(&feed.name, run_id, "failed", None).await?;
                return Err(e.into());
            }
        };
        if !run.staged.is_empty() {
            audit::log_head(self.store.pool()).await?;
        }
        tracing::info!(
            feed = %feed.name,
            decoded = run.documents_decoded,
            quarantined = run.documents_quarantined,
            patient_id_hetu = run.documents_hetu,
            patient_id_temporary = run.documents_temporary_id,
            patient_id_other = run.documents_other_id,
            upserts = run.upserts,
            retracts = run.retracts,
            staged = run.staged.len(),
            entries_decoded = run.entries.decoded,
            entries_accounted = run.entries.accounted(),
            "Run staged."
        );
        if !run.entries.balanced() {
            // Never expected: every entry is given a fate where it is decided.
            tracing::error!(
                feed = %feed.name,
                entries_decoded = run.entries.decoded,
                entries_accounted = run.entries.accounted(),
                "Entries decoded and entries accounted for differ."
            );
        }
        Ok((run_id, run))
    }

    /// Appends one audit entry in a transaction of its own.
    async fn audit(&self, entry: Entry) -> anyhow::Result<()> {
        audit::record(&self.store, &[entry]).await?;
        Ok(())
    }

    /// A dry run of one feed: the rows its next run would stage, changing
    /// nothing.
    pub async fn preview(&self, feed_name: &str) -> anyhow::Result<RunReport> {
        let feed = self.feed(feed_name)?;
        let keys = FeedKeys::for_feed(&self.keys, feed)?;
        Ok(pipeline::stage(&self.cfg, feed, &self.store, keys, Utc::now(), Mode::DryRun).await?)
    }

    /// Imports objections, restrictions, denials and turvakielto flags from
    /// a CSV or JSON Lines file in one transaction: every row good, or
    /// nothing imported and every bad row reported by line.
    pub async fn import_policy(&self, path: &std::path::Path) -> anyhow::Result<ImportReport> {
        const MAX_IMPORT_BYTES: u64 = 512 * 1024 * 1024;
        let meta = std::fs::metadata(path).context("reading the import file")?;
        anyhow::ensure!(
            meta.len() <= MAX_IMPORT_BYTES,
            "the import file is larger than 512 MiB"
        );
        let bytes = std::fs::read(path).context("reading the import file")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("the import file is not UTF-8"))?;
        let sha = feed::sha256_hex(text.as_bytes());
        let parsed = match crate::policy::import::parse(&text, &self.cfg, self.keys.index()) {
            Ok(p) => p,
            Err(errors) => {
                return Ok(ImportReport {
                    rows: 0,
                    counts: BTreeMap::new(),
                    errors,
                });
            }
        };
        let counts: BTreeMap<String, usize> = parsed
            .counts()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut tx = self.store.begin().await?;
        let id = tx
            .insert_import(&sha, parsed.rows as i64, &serde_json::to_string(&counts)?)
            .await?;
        tx.insert_objections(id, &parsed.objections).await?;
        tx.insert_restrictions(id, &parsed.restrictions).await?;
        tx.upsert_flags(id, &parsed.flags).await?;
        tx.insert_denial_snapshots(&parsed.denials).await?;
        // The trail records the import, and every sealed batch that already
        // holds data of a person who now objects, where the objection binds
        // that batch's feed: not recalled, but known.
        let audit_key = self
            .keys
            .audit()
            .ok_or_else(|| anyhow::anyhow!("the audit key is not loaded"))?;
        let mut entries: Vec<Entry> = counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| Entry::Import {
                import_kind: kind.clone(),
                rows: *n as u64,
                source_sha256: sha.clone(),
            })
            .collect();
        let mut objections: BTreeMap<&str, Vec<&crate::store::ObjectionRow>> = BTreeMap::new();
        for o in &parsed.objections {
            objections.entry(o.person.as_str()).or_default().push(o);
        }
        let objectors: Vec<String> = objections.keys().map(|p| (*p).to_owned()).collect();
        let mut bound: BTreeMap<(String, i64, String), crate::policy::Rule> = BTreeMap::new();
        let now = Utc::now();
        for (feed, seq, person, controller, service_event) in tx.sealed_rows_of(&objectors).await? {
            let Some(fc) = self.cfg.feed(&feed) else {
                continue;
            };
            let Some(rule) = objections.get(person.as_str()).and_then(|os| {
                binding_objection(
                    &self.cfg,
                    fc,
                    os,
                    controller.as_deref(),
                    service_event.as_deref(),
                    now,
                )
            }) else {
                continue;
            };
            let e = bound.entry((feed, seq, person)).or_insert(rule);
            *e = (*e).min(rule);
        }
        for ((feed, seq, person), rule) in bound {
            entries.push(Entry::ObjectionAfterSealing {
                feed,
                seq,
                person: audit::audit_pseudonym(audit_key, &person),
                rule: Some(rule.as_str().to_owned()),
            });
        }
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        tracing::info!(rows = parsed.rows, import_sha256 = %sha, "Policy inputs imported.");
        Ok(ImportReport {
            rows: parsed.rows,
            counts,
            errors: Vec::new(),
        })
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

    pub(crate) async fn seal(&self, feed: &FeedConfig, b: &BatchInfo) -> anyhow::Result<()> {
        let dir = self.outbox_dir(&feed.name);
        std::fs::create_dir_all(&dir).context("creating the outbox folder")?;
        let columns = feed.mapping.feed_columns();
        let format = feed.mapping.format;
        let seq = u64::try_from(b.seq).context("batch sequence")?;
        let sealed_at = Utc::now();

        // The policy is evaluated again just before sealing: an objection,
        // restriction or flag that arrived since staging changes the rows.
        let recheck = self.recheck(feed, b.seq, sealed_at).await?;
        let dropped: std::collections::HashSet<String> = recheck.dropped.keys().cloned().collect();
        let safety = feed.mapping.safety_columns();
        let shielded = recheck.turvakielto.clone();

        // Stream the staged rows from the store into the data file.
        let store = self.store.clone();
        let (feed_name, dir2, cols) = (feed.name.clone(), dir.clone(), columns.clone());
        let handle = tokio::runtime::Handle::current();
        let (info, people_rows) = tokio::task::spawn_blocking(move || {
            let mut from = 1i64;
            let mut page: std::vec::IntoIter<crate::store::BatchRow> = Vec::new().into_iter();
            let mut failed: Option<anyhow::Error> = None;
            // Rows per person in the data file: what the batch disclosed.
            let mut people: BTreeMap<String, u64> = BTreeMap::new();
            let rows = std::iter::from_fn(|| {
                loop {
                    if let Some(r) = page.next() {
                        if r.op == REMOVED || dropped.contains(&r.record_id) {
                            continue;
                        }
                        if let Some(p) = &r.person {
                            *people.entry(p.clone()).or_default() += 1;
                        }
                        let op = Op::parse(&r.op)?;
                        let shield = r.person.as_ref().is_some_and(|p| shielded.contains(p));
                        let values = match op {
                            Op::Retract => Vec::new(),
                            Op::Upsert => {
                                let json: Vec<serde_json::Value> =
                                    serde_json::from_str(&r.row).unwrap_or_default();
                                json.iter()
                                    .zip(&cols)
                                    .enumerate()
                                    .map(|(i, (j, c))| {
                                        if shield && safety.contains(&i) {
                                            crate::feed::Value::Null
                                        } else {
                                            pipeline::json_to_value(j, c.ty)
                                        }
                                    })
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
                None => info.map_err(anyhow::Error::from).map(|i| (i, people)),
            }
        })
        .await
        .context("sealing task")??;

        let previous = self.store.previous_manifest(&feed.name, b.seq).await?;
        let created_at = chrono::DateTime::parse_from_rfc3339(&b.created_at)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(sealed_at);
        let held: BTreeMap<String, u64> = serde_json::from_str(&b.held).unwrap_or_default();
        let staged_policy: serde_json::Value = serde_json::from_str(&b.policy).unwrap_or_default();
        let mut excluded: BTreeMap<String, u64> =
            serde_json::from_value(staged_policy["excluded"].clone()).unwrap_or_default();
        for rule in recheck.dropped.values() {
            *excluded.entry(format!("{rule}_at_sealing")).or_default() += 1;
        }
        // Decided at sealing for everyone with a policy input (an exemption
        // needs an objection): the rows that go out although one applies.
        let exempt: u64 = recheck.exempt.values().map(|(_, n)| *n).sum();
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
            rules_version: crate::policy::RULES_VERSION.into(),
            legal_basis: LegalBasis {
                purpose: lb.purpose,
                gdpr_art6: lb.art6,
                gdpr_art9: lb.art9,
                statute: lb.statute.clone(),
                derogation: lb.derogation.clone(),
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
                excluded: (!excluded.is_empty()).then_some(excluded),
                exempt: Some(exempt),
            },
            previous_manifest_sha256: previous,
            test: feed.test,
        };
        let manifest_sha = feed::write_manifest(&dir, &manifest)?;
        let audit_key = self
            .keys
            .audit()
            .ok_or_else(|| anyhow::anyhow!("the audit key is not loaded"))?;
        let removed_at_sealing: Vec<audit::Removed> = recheck
            .removed
            .iter()
            .map(|((person, rule), records)| audit::Removed {
                person: audit::audit_pseudonym(audit_key, person),
                rule: rule.clone(),
                records: *records,
            })
            .collect();
        let mut people: Vec<audit::PersonRows> = people_rows
            .iter()
            .map(|(p, rows)| audit::PersonRows {
                person: audit::audit_pseudonym(audit_key, p),
                rows: *rows,
            })
            .collect();
        people.sort_by(|a, b| a.person.cmp(&b.person));
        let mut exempted: Vec<audit::Exempted> = recheck
            .exempt
            .iter()
            .map(|(p, (basis, records))| audit::Exempted {
                person: audit::audit_pseudonym(audit_key, p),
                basis: basis.clone(),
                records: *records,
            })
            .collect();
        exempted.sort_by(|a, b| a.person.cmp(&b.person));
        let mut tx = self.store.begin().await?;
        // What the re-check decided, in the sealing transaction: removed
        // rows are marked in the batch and are not live; removed rows that
        // are held are re-evaluated every run; people out of the cohort.
        if !recheck.dropped.is_empty() {
            let ids: Vec<String> = recheck.dropped.keys().cloned().collect();
            tx.remove_at_sealing(&feed.name, b.seq, &ids).await?;
            tx.replace_held(&feed.name, &[], &recheck.held).await?;
            let left: Vec<(String, bool)> = recheck
                .left_cohort
                .iter()
                .map(|p| (p.clone(), false))
                .collect();
            tx.set_cohort(&feed.name, &left).await?;
            tracing::info!(feed = %feed.name, seq, removed = ids.len(), "Rows removed at sealing by the policy gate.");
        }
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
            &mut tx,
            &[Entry::BatchSealed {
                feed: feed.name.clone(),
                seq: b.seq,
                data_sha256: info.sha256.clone(),
                manifest_sha256: manifest_sha.clone(),
                removed_at_sealing: removed_at_sealing.clone(),
                people: Some(people),
                exempt: exempted,
            }],
        )
        .await?;
        tx.commit().await?;
        audit::log_head(self.store.pool()).await?;
        tracing::info!(feed = %feed.name, seq, records = info.records, manifest_sha256 = %manifest_sha, "Batch sealed.");
        Ok(())
    }

    /// Re-evaluates a staged batch at `at` as staging did (policy gate →
    /// cohort → rows, [`pipeline::recheck_batch`]) for everyone in it with
    /// a policy input: which upserts may no longer go out (record id →
    /// rule), whose columns turvakielto now shields, and what goes out
    /// under an exemption. Rows already removed at an earlier sealing stay
    /// out. Changes nothing.
    pub async fn recheck(
        &self,
        feed: &FeedConfig,
        seq: i64,
        at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<Recheck> {
        let Some(batch) = self.store.batch(&feed.name, seq).await? else {
            bail!("feed {} has no batch {seq}", feed.name);
        };
        let staged_at = chrono::DateTime::parse_from_rfc3339(&batch.created_at)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(at);
        // Who and which documents the batch's upserts are about.
        let mut rows: Vec<(String, String, i64)> = Vec::new();
        let mut from = 1i64;
        loop {
            let page = self
                .store
                .batch_rows(&feed.name, seq, from, SEAL_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            from += page.len() as i64;
            for r in page {
                if let (Some(p), Some(k)) = (r.person, r.doc_key)
                    && r.op == "upsert"
                {
                    rows.push((r.record_id, p, k));
                }
            }
        }
        let mut tx = self.store.begin().await?;
        let checked = pipeline::recheck_batch(
            &self.cfg,
            feed,
            &mut tx,
            &rows,
            batch.window_to,
            staged_at,
            at,
        )
        .await;
        tx.rollback().await?;
        let checked = checked?;
        let mut out = Recheck {
            turvakielto: checked.turvakielto,
            ..Recheck::default()
        };
        for (person, v) in checked.verdicts {
            for (id, rule) in &v.removed {
                out.dropped.insert(id.clone(), rule.clone());
                *out.removed
                    .entry((person.clone(), rule.clone()))
                    .or_default() += 1;
            }
            out.held.extend(
                v.held
                    .iter()
                    .map(|(id, reason)| (id.clone(), person.clone(), reason.clone())),
            );
            if v.exempt > 0 {
                out.exempt.insert(
                    person.clone(),
                    (v.exempt_basis.clone().unwrap_or_default(), v.exempt),
                );
            }
            if !v.member && !v.removed.is_empty() {
                out.left_cohort.push(person);
            }
        }
        Ok(out)
    }
}

/// Whether one of a person's newly imported `objections` binds `feed` for a
/// record of `controller` and `service_event` that a sealed batch sent: the
/// decision table with only that objection, judged when it is in force (now,
/// or from its effective time if later). The rule it would exclude under, or
/// none: made to another controller, to Findata for a direct feed, a purpose
/// it does not cover, a feed that rests on a legal obligation (exempt) or on
/// a derogation, or withdrawn already.
fn binding_objection(
    cfg: &Config,
    feed: &FeedConfig,
    objections: &[&crate::store::ObjectionRow],
    controller: Option<&str>,
    service_event: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Option<crate::policy::Rule> {
    let fp = crate::policy::FeedPolicy::of(&feed.legal_basis);
    let controller = controller
        .and_then(|o| cfg.controller_of(o))
        .map(|c| c.id.as_str());
    objections
        .iter()
        .filter_map(|o| {
            let rows = crate::store::PolicyRows {
                objections: vec![(*o).clone()],
                ..Default::default()
            };
            let pp = pipeline::person_policy(cfg, &rows, now);
            let at = pp
                .objections
                .first()
                .map_or(now, |x| x.effective_from.max(now));
            let d = crate::policy::decide(
                &fp,
                &pp,
                &crate::policy::RecordContext {
                    controller,
                    service_event,
                },
                at,
            );
            (d.outcome == crate::policy::Outcome::Exclude && d.rule.is_objection())
                .then_some(d.rule)
        })
        .min()
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
            ("documents_hetu", r.documents_hetu),
            ("documents_temporary_id", r.documents_temporary_id),
            ("documents_other_id", r.documents_other_id),
            ("entries_decoded", r.entries.decoded),
            ("entries_delivered", r.entries.delivered),
            ("entries_redelivered", r.entries.redelivered),
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
        for (prefix, m) in [
            ("entries_not_in_scope", &r.entries.not_in_scope),
            ("entries_held", &r.entries.held),
            ("entries_excluded", &r.entries.excluded),
        ] {
            for (reason, n) in m {
                counts.insert(format!("{prefix}:{reason}"), *n);
            }
        }
    }
    Entry::RunFinished {
        feed: feed.to_owned(),
        outcome: outcome.to_owned(),
        counts,
    }
}
