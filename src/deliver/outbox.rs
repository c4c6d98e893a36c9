//! The outbox driver: takes each feed's batches, in sequence order, through
//! seal → send (with retry) → delivered, or dead.
//!
//! # Ordering and independence
//! - A feed's batches are sealed and sent strictly in sequence order, one at
//!   a time. A batch is sealed just before its first attempt, so the
//!   manifest chain never needs rewriting.
//! - A **dead** batch stops its feed: later batches stay where they are
//!   (staged or sealed) and wait until an operator retries the dead one
//!   (`regfeed outbox retry`). Sending them would leave a gap the register
//!   cannot apply past.
//! - Feeds are delivered concurrently ([`App::deliver_all`]); one feed's
//!   outage, backoff or dead batch never holds back another.
//! - Crash-safe: every state change is in the store before the next step; a
//!   batch found `sending` after a restart is sent again with the same bytes
//!   (the register answers idempotently).
//! - Cancel-safe: dropping a delivery future leaves batches `sealed` or
//!   `sending`, which the next run resumes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::DeliverError;
use super::file_drop::{FileDrop, SealedBatch};
use super::http::{HttpSink, Upload};
use crate::app::App;
use crate::config::SinkConfig;
use crate::failpoint;
use crate::feed;
use crate::loaded::FeedConfig;
use crate::store::{AttemptEnd, BatchInfo};
use crate::telemetry::metrics;

/// Whether this process has not yet warned that dead batch `seq` of `feed`
/// holds the feed back: the warning is logged once per batch, not at every
/// run that finds it still dead.
fn first_warning(feed: &str, seq: i64) -> bool {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<(String, i64)>>> = OnceLock::new();
    WARNED
        .get_or_init(Default::default)
        .lock()
        .map(|mut w| w.insert((feed.to_owned(), seq)))
        .unwrap_or(true)
}

/// Rows read per page when digesting a batch's staged rows.
const ROWS_PAGE: i64 = 10_000;

/// What delivering one feed did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedDelivery {
    pub feed: String,
    pub sealed: Vec<i64>,
    pub delivered: Vec<i64>,
    /// Where a file-drop sink put the data files.
    pub delivered_paths: Vec<PathBuf>,
    /// Batches that became dead in this call.
    pub dead: Vec<i64>,
    /// The dead batch the feed now waits on, if any.
    pub waiting_on: Option<i64>,
    /// [`App::deliver_step`] only: the batch whose attempt failed, when to
    /// try it again, and when its first attempt started (RFC 3339): the
    /// feed's delivery has been failing since then.
    #[serde(skip)]
    pub retry: Option<RetryAt>,
}

/// A failed attempt to be tried again ([`App::deliver_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAt {
    pub seq: i64,
    pub after: Duration,
    pub class: &'static str,
    pub first_attempt_at: String,
}

/// The backoff of a feed's failing batch, carried from one delivery pass to
/// the next ([`App::deliver_step`]): it grows while the same batch keeps
/// failing and starts again from `retry.base` with the next batch.
#[derive(Default)]
pub struct Backoff {
    seq: Option<i64>,
    delays: Option<Box<dyn Iterator<Item = Duration> + Send + Sync>>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff").field("seq", &self.seq).finish()
    }
}

impl Backoff {
    /// The next backoff step for batch `seq`.
    fn next(&mut self, seq: i64, policy: &super::retry::RetryPolicy) -> Option<Duration> {
        if self.seq != Some(seq) || self.delays.is_none() {
            self.seq = Some(seq);
            self.delays = Some(Box::new(policy.backoff()));
        }
        self.delays.as_mut().and_then(Iterator::next)
    }
}

/// Delivery events for the audit trail. [`App::audit_delivery`] is where the
/// audit module records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent<'a> {
    Sealed {
        feed: &'a str,
        seq: i64,
    },
    Delivered {
        feed: &'a str,
        seq: i64,
        receipt: &'a str,
    },
    Dead {
        feed: &'a str,
        seq: i64,
        class: &'a str,
        reason: &'a str,
    },
    Replayed {
        feed: &'a str,
        seq: i64,
        receipt: &'a str,
    },
    RetriedByOperator {
        feed: &'a str,
        seq: i64,
        resealed: bool,
    },
}

/// A running sink.
#[derive(Debug)]
enum Sink {
    FileDrop(FileDrop),
    Http(HttpSink),
}

struct Sent {
    receipt: String,
    receipt_id: Option<String>,
    status: Option<u16>,
    path: Option<PathBuf>,
}

enum Outcome {
    Delivered(Option<PathBuf>),
    Dead,
    /// Failed; try again after `after` (the attempt is recorded as `retry`).
    Retry {
        after: Duration,
        class: &'static str,
        first_attempt_at: String,
    },
}

impl Sink {
    fn build(cfg: &SinkConfig) -> Result<Sink, DeliverError> {
        match cfg {
            SinkConfig::FileDrop { dir, .. } => {
                std::fs::create_dir_all(dir).map_err(|source| DeliverError::Io {
                    op: "creating",
                    path: dir.clone(),
                    source,
                })?;
                Ok(Sink::FileDrop(FileDrop::new(dir.clone())))
            }
            SinkConfig::Http(h) => Ok(Sink::Http(HttpSink::build(h)?)),
        }
    }

    async fn send(&self, app: &App, f: &FeedConfig, b: &BatchInfo) -> Result<Sent, DeliverError> {
        let dir = app.outbox_dir(&f.name);
        let broken = |what: &str| DeliverError::SealBroken {
            file: what.to_owned(),
            found: "missing".into(),
            expected: "sealed digests".into(),
        };
        let data_file = b.data_file.clone().ok_or_else(|| broken("data file"))?;
        let data_sha = b.data_sha256.clone().ok_or_else(|| broken("data digest"))?;
        let manifest_sha = b
            .manifest_sha256
            .clone()
            .ok_or_else(|| broken("manifest digest"))?;
        let manifest_file = feed::manifest_file_name(&f.name, b.seq as u64);
        match self {
            Sink::FileDrop(sink) => {
                let sealed = SealedBatch {
                    dir,
                    data_file,
                    data_sha256: data_sha,
                    manifest_file,
                    manifest_sha256: manifest_sha,
                };
                let sink = sink.clone();
                let r = tokio::task::spawn_blocking(move || sink.deliver(&sealed))
                    .await
                    .map_err(|e| DeliverError::Transport {
                        class: "io",
                        message: format!("delivery task: {e}"),
                    })??;
                let receipt = serde_json::json!({
                    "sink": "file_drop",
                    "data_sha256": r.data_sha256,
                    "manifest_sha256": r.manifest_sha256,
                    "delivered_at": r.delivered_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "already_delivered": r.already_delivered,
                });
                Ok(Sent {
                    receipt: receipt.to_string(),
                    receipt_id: None,
                    status: None,
                    path: Some(r.data_path),
                })
            }
            Sink::Http(sink) => {
                let manifest_path = dir.join(&manifest_file);
                let manifest =
                    tokio::fs::read(&manifest_path)
                        .await
                        .map_err(|source| DeliverError::Io {
                            op: "reading",
                            path: manifest_path.clone(),
                            source,
                        })?;
                let found = hex::encode(Sha256::digest(&manifest));
                if found != manifest_sha {
                    return Err(DeliverError::SealBroken {
                        file: manifest_file,
                        found,
                        expected: manifest_sha,
                    });
                }
                let media_type = match data_file.rsplit('.').next() {
                    Some("csv") => feed::MediaType::Csv,
                    Some("jsonl") => feed::MediaType::Ndjson,
                    _ => feed::MediaType::Xml,
                };
                let up = Upload {
                    feed: &f.name,
                    seq: b.seq as u64,
                    data_path: dir.join(&data_file),
                    data_bytes: b.data_bytes.unwrap_or(0) as u64,
                    data_sha256: &data_sha,
                    media_type,
                    manifest,
                    manifest_sha256: &manifest_sha,
                };
                let ok = sink.put(&up).await?;
                Ok(Sent {
                    receipt: ok.raw,
                    receipt_id: Some(ok.receipt.receipt_id),
                    status: Some(ok.status),
                    path: None,
                })
            }
        }
    }
}

fn elapsed_since(first_attempt_at: &str) -> std::time::Duration {
    chrono::DateTime::parse_from_rfc3339(first_attempt_at)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

impl App {
    /// Delivers every configured feed, concurrently: a feed's trouble
    /// never holds back another. One result per feed, in config order.
    pub async fn deliver_all(&self) -> Vec<(String, anyhow::Result<FeedDelivery>)> {
        let runs = self
            .cfg
            .feeds
            .iter()
            .map(|f| async move { (f.name.clone(), self.deliver_feed(f).await) });
        futures_util::future::join_all(runs).await
    }

    /// Seals and sends the feed's pending batches in sequence order (see the
    /// module docs). Returns when every batch is delivered, or one is dead;
    /// a failed attempt is retried here, after its backoff (`regfeed once`,
    /// `outbox retry`). An error (store, setup) leaves batches where they
    /// were.
    pub async fn deliver_feed(&self, f: &FeedConfig) -> anyhow::Result<FeedDelivery> {
        let mut backoff = Backoff::default();
        let mut out = self.deliver_pass(f, &mut backoff, true).await?;
        if let Some(seq) = out.waiting_on
            && first_warning(&f.name, seq)
        {
            tracing::warn!(feed = %f.name, seq, "A dead batch holds back this feed's later batches until an operator retries it.");
        }
        out.retry = None;
        Ok(out)
    }

    /// One pass of the daemon's outbox loop over the feed: seals and sends
    /// its pending batches in sequence order, as [`App::deliver_feed`] does,
    /// but returns at the first failed attempt that is to be retried, with
    /// when ([`FeedDelivery::retry`]): the loop waits out the backoff
    /// itself, holding nothing. `backoff` carries the failing batch's
    /// backoff from pass to pass.
    pub async fn deliver_step(
        &self,
        f: &FeedConfig,
        backoff: &mut Backoff,
    ) -> anyhow::Result<FeedDelivery> {
        self.deliver_pass(f, backoff, false).await
    }

    async fn deliver_pass(
        &self,
        f: &FeedConfig,
        backoff: &mut Backoff,
        wait: bool,
    ) -> anyhow::Result<FeedDelivery> {
        let mut out = FeedDelivery {
            feed: f.name.clone(),
            ..FeedDelivery::default()
        };
        let pending: Vec<BatchInfo> = self
            .store
            .batches(Some(&f.name))
            .await?
            .into_iter()
            .filter(|b| b.state != "delivered")
            .collect();
        if pending.is_empty() {
            return Ok(out);
        }
        let sink = Sink::build(&f.sink).map_err(|e| anyhow::anyhow!("feed {}: {e}", f.name))?;
        for b in pending {
            let b = match b.state.as_str() {
                "dead" => {
                    tracing::debug!(feed = %f.name, seq = b.seq, "A dead batch holds back this feed's later batches until an operator retries it.");
                    out.waiting_on = Some(b.seq);
                    break;
                }
                "staged" => {
                    self.seal(f, &b).await?;
                    // After sealing: a sealing-time re-check may change the
                    // rows, and the digest must describe what was sealed. A
                    // crash before it is stored leaves it unknown, which a
                    // later operator retry treats as unchanged.
                    let digest = self.rows_digest(&f.name, b.seq).await?;
                    self.store.set_rows_digest(&f.name, b.seq, &digest).await?;
                    out.sealed.push(b.seq);
                    metrics::record_sealed(&f.name);
                    self.audit_delivery(DeliveryEvent::Sealed {
                        feed: &f.name,
                        seq: b.seq,
                    })
                    .await?;
                    failpoint::hit("sealed");
                    self.store
                        .batch(&f.name, b.seq)
                        .await?
                        .context("a sealed batch vanished")?
                }
                _ => b,
            };
            loop {
                match self.send_once(&sink, f, &b, backoff).await? {
                    Outcome::Delivered(path) => {
                        out.delivered.push(b.seq);
                        out.delivered_paths.extend(path);
                        break;
                    }
                    Outcome::Dead => {
                        out.dead.push(b.seq);
                        out.waiting_on = Some(b.seq);
                        return Ok(out);
                    }
                    Outcome::Retry {
                        after,
                        class,
                        first_attempt_at,
                    } => {
                        if wait {
                            tokio::time::sleep(after).await;
                            continue;
                        }
                        out.retry = Some(RetryAt {
                            seq: b.seq,
                            after,
                            class,
                            first_attempt_at,
                        });
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One attempt at sending a sealed batch: recorded before and after,
    /// counted in the metrics (feed, outcome, error class, latency). A
    /// failure is retried (`Retry`, after the backoff or the register's
    /// `Retry-After`) until the retry budget is spent; then, or at once for
    /// a permanent error, the batch is dead.
    async fn send_once(
        &self,
        sink: &Sink,
        f: &FeedConfig,
        b: &BatchInfo,
        backoff: &mut Backoff,
    ) -> anyhow::Result<Outcome> {
        let policy = f.sink.retry();
        let data_sha = b.data_sha256.clone().unwrap_or_default();
        let (attempt, first_at) = self
            .store
            .begin_attempt(&f.name, b.seq, "send", &data_sha)
            .await?;
        let started = Instant::now();
        let result = sink.send(self, f, b).await;
        let took = started.elapsed();
        let latency_ms = took.as_millis() as i64;
        let e = match result {
            Ok(sent) => {
                metrics::record_attempt(&f.name, None, took);
                failpoint::hit("receipt");
                let end = AttemptEnd {
                    outcome: "delivered",
                    http_status: sent.status,
                    error_class: None,
                    detail: None,
                    latency_ms,
                };
                self.store
                    .record_delivered(
                        &f.name,
                        b.seq,
                        attempt,
                        &end,
                        &sent.receipt,
                        sent.receipt_id.as_deref(),
                    )
                    .await?;
                metrics::record_delivered(&f.name);
                tracing::info!(feed = %f.name, seq = b.seq, attempt, latency_ms, "Batch delivered.");
                self.audit_delivery(DeliveryEvent::Delivered {
                    feed: &f.name,
                    seq: b.seq,
                    receipt: &sent.receipt,
                })
                .await?;
                return Ok(Outcome::Delivered(sent.path));
            }
            Err(e) => e,
        };
        let class = e.class();
        metrics::record_attempt(&f.name, Some(class), took);
        let detail = e.to_string();
        let give_up = if e.is_permanent() {
            detail.clone()
        } else {
            match policy.next_delay(
                backoff.next(b.seq, policy),
                e.retry_after(),
                elapsed_since(&first_at),
            ) {
                Some(delay) => {
                    let end = AttemptEnd {
                        outcome: "retry",
                        http_status: e.status(),
                        error_class: Some(class.to_owned()),
                        detail: Some(detail.clone()),
                        latency_ms,
                    };
                    self.store
                        .end_attempt(&f.name, b.seq, attempt, &end, None)
                        .await?;
                    tracing::warn!(feed = %f.name, seq = b.seq, attempt, class, status = e.status(), delay_ms = delay.as_millis() as u64, error = %detail, "Delivery failed; retrying.");
                    return Ok(Outcome::Retry {
                        after: delay,
                        class,
                        first_attempt_at: first_at,
                    });
                }
                None => format!(
                    "still failing after the retry budget ({:?}): {detail}",
                    policy.max_elapsed
                ),
            }
        };
        let end = AttemptEnd {
            outcome: "dead",
            http_status: e.status(),
            error_class: Some(class.to_owned()),
            detail: Some(detail.clone()),
            latency_ms,
        };
        let reason = format!("{class}: {give_up}");
        self.store
            .mark_dead(&f.name, b.seq, attempt, &end, &reason)
            .await?;
        if e.is_conflict() {
            tracing::error!(alert = "delivery_conflict", feed = %f.name, seq = b.seq, error = %detail, "ALERT: the receiver holds this batch sequence with different content; nothing was overwritten. The batch is dead.");
        } else {
            tracing::error!(alert = "batch_dead", feed = %f.name, seq = b.seq, class, status = e.status(), error = %detail, "A batch is dead; this feed's later batches wait until an operator retries it.");
        }
        self.audit_delivery(DeliveryEvent::Dead {
            feed: &f.name,
            seq: b.seq,
            class,
            reason: &reason,
        })
        .await?;
        Ok(Outcome::Dead)
    }

    /// The audit hook for delivery events. Today it logs at debug level;
    /// the audit trail records each event here.
    pub async fn audit_delivery(&self, event: DeliveryEvent<'_>) -> anyhow::Result<()> {
        tracing::debug!(?event, "Delivery event.");
        let receipt_json = |r: &str| {
            serde_json::from_str::<serde_json::Value>(r)
                .unwrap_or_else(|_| serde_json::Value::String(r.to_owned()))
        };
        let entry = match event {
            // Sealing is audited by the seal itself, in its transaction.
            DeliveryEvent::Sealed { .. } => return Ok(()),
            DeliveryEvent::Delivered { feed, seq, receipt } => crate::audit::Entry::Delivery {
                feed: feed.to_owned(),
                seq,
                outcome: "delivered".into(),
                receipt: receipt_json(receipt),
            },
            DeliveryEvent::Replayed { feed, seq, receipt } => crate::audit::Entry::Delivery {
                feed: feed.to_owned(),
                seq,
                outcome: "replayed".into(),
                receipt: receipt_json(receipt),
            },
            DeliveryEvent::Dead {
                feed,
                seq,
                class,
                reason,
            } => crate::audit::Entry::Delivery {
                feed: feed.to_owned(),
                seq,
                outcome: "dead".into(),
                receipt: serde_json::json!({ "class": class, "reason": reason }),
            },
            DeliveryEvent::RetriedByOperator {
                feed,
                seq,
                resealed,
            } => crate::audit::Entry::Delivery {
                feed: feed.to_owned(),
                seq,
                outcome: if resealed {
                    "retried_by_operator_resealed".into()
                } else {
                    "retried_by_operator".into()
                },
                receipt: serde_json::Value::Null,
            },
        };
        crate::audit::record(&self.store, &[entry]).await?;
        crate::audit::log_head(self.store.pool()).await?;
        Ok(())
    }

    /// SHA-256 over a batch's staged rows, line by line.
    pub async fn rows_digest(&self, feed: &str, seq: i64) -> anyhow::Result<String> {
        // What would go out if sealed now: the staged rows less those the
        // policy gate now keeps back, with turvakielto shielding marked. An
        // objection that arrived since sealing changes the digest, so a dead
        // batch retried by an operator is re-sealed.
        let recheck = self
            .recheck(self.feed_config(feed)?, seq, chrono::Utc::now())
            .await?;
        let mut h = Sha256::new();
        let mut from = 1i64;
        loop {
            let rows = self.store.batch_rows(feed, seq, from, ROWS_PAGE).await?;
            if rows.is_empty() {
                break;
            }
            from += rows.len() as i64;
            for r in rows {
                if r.op == crate::app::REMOVED || recheck.dropped.contains_key(&r.record_id) {
                    continue;
                }
                if r.person
                    .as_ref()
                    .is_some_and(|p| recheck.turvakielto.contains(p))
                {
                    h.update(b"turvakielto");
                }
                for part in [&r.record_id, &r.op, &r.row] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Before an operator's retry of a dead batch: re-checks it and, if its
    /// rows changed since sealing, unseals it (and every later undelivered
    /// batch of the feed, whose chain link would change) so it is sealed
    /// again under the same sequence with a new digest. Returns whether it
    /// will be re-sealed. The policy re-check at sealing time (objections)
    /// plugs in here and in sealing.
    pub async fn recheck_and_reseal(&self, feed: &FeedConfig, seq: i64) -> anyhow::Result<bool> {
        let sealed_from = self.store.rows_digest(&feed.name, seq).await?;
        let now = self.rows_digest(&feed.name, seq).await?;
        if sealed_from.as_deref().is_none_or(|d| d == now) {
            return Ok(false);
        }
        for b in self.store.batches(Some(&feed.name)).await? {
            if b.seq >= seq && b.state != "delivered" && b.state != "staged" {
                self.store.reset_to_staged(&feed.name, b.seq).await?;
            }
        }
        Ok(true)
    }

    /// `outbox retry`: a dead batch, once its cause is fixed, is re-checked
    /// (re-sealed if its rows changed), given a fresh retry budget and sent
    /// again with the feed's later batches.
    pub async fn retry_dead(&self, feed_name: &str, seq: i64) -> anyhow::Result<FeedDelivery> {
        let feed = self.feed_config(feed_name)?;
        let Some(b) = self.store.batch(&feed.name, seq).await? else {
            bail!("feed {feed_name} has no batch {seq}");
        };
        if b.state != "dead" {
            bail!(
                "feed {feed_name} batch {seq} is {}, not dead: only a dead batch is retried",
                b.state
            );
        }
        let resealed = self.recheck_and_reseal(feed, seq).await?;
        if !resealed {
            self.store.reopen_dead(&feed.name, seq).await?;
        }
        tracing::info!(feed = %feed.name, seq, resealed, "Operator retry of a dead batch.");
        self.audit_delivery(DeliveryEvent::RetriedByOperator {
            feed: &feed.name,
            seq,
            resealed,
        })
        .await?;
        self.deliver_feed(feed).await
    }

    /// `outbox replay`: sends a delivered batch's sealed bytes again
    /// (idempotent at the register), with retries. Its state stays
    /// delivered; the attempts are recorded as `replay`.
    pub async fn replay(&self, feed_name: &str, seq: i64) -> anyhow::Result<String> {
        let feed = self.feed_config(feed_name)?;
        let Some(b) = self.store.batch(&feed.name, seq).await? else {
            bail!("feed {feed_name} has no batch {seq}");
        };
        if b.state != "delivered" {
            bail!(
                "feed {feed_name} batch {seq} is {}: only a delivered batch is replayed",
                b.state
            );
        }
        if let Some(file) = &b.data_file
            && !self.outbox_dir(&feed.name).join(file).exists()
        {
            bail!(
                "feed {feed_name} batch {seq}: its sealed data file is gone (pruned after retention.delivered_batches?); it cannot be replayed"
            );
        }
        let sink = Sink::build(&feed.sink).map_err(|e| anyhow::anyhow!("feed {feed_name}: {e}"))?;
        let policy = feed.sink.retry();
        let mut backoff = policy.backoff();
        let data_sha = b.data_sha256.clone().unwrap_or_default();
        let began = Instant::now();
        loop {
            let (attempt, _) = self
                .store
                .begin_attempt(&feed.name, seq, "replay", &data_sha)
                .await?;
            let started = Instant::now();
            let result = sink.send(self, feed, &b).await;
            let latency_ms = started.elapsed().as_millis() as i64;
            let (outcome, e) = match result {
                Ok(sent) => {
                    let end = AttemptEnd {
                        outcome: "delivered",
                        http_status: sent.status,
                        error_class: None,
                        detail: None,
                        latency_ms,
                    };
                    self.store
                        .end_attempt(&feed.name, seq, attempt, &end, Some(&sent.receipt))
                        .await?;
                    self.audit_delivery(DeliveryEvent::Replayed {
                        feed: &feed.name,
                        seq,
                        receipt: &sent.receipt,
                    })
                    .await?;
                    return Ok(sent.receipt);
                }
                Err(e) => {
                    let delay = if e.is_permanent() {
                        None
                    } else {
                        policy.next_delay(backoff.next(), e.retry_after(), began.elapsed())
                    };
                    (if delay.is_some() { "retry" } else { "failed" }, (e, delay))
                }
            };
            let (e, delay) = e;
            let end = AttemptEnd {
                outcome,
                http_status: e.status(),
                error_class: Some(e.class().to_owned()),
                detail: Some(e.to_string()),
                latency_ms,
            };
            self.store
                .end_attempt(&feed.name, seq, attempt, &end, None)
                .await?;
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    if e.is_conflict() {
                        tracing::error!(alert = "delivery_conflict", feed = %feed.name, seq, error = %e, "ALERT: replay refused: the receiver holds this sequence with different content.");
                    }
                    bail!("replay of feed {feed_name} batch {seq} failed: {e}");
                }
            }
        }
    }

    fn feed_config(&self, name: &str) -> anyhow::Result<&FeedConfig> {
        match self.cfg.feed(name) {
            Some(f) => Ok(f),
            None => bail!("no feed named {name:?} in {}", self.cfg.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dead_batch_is_warned_about_once() {
        assert!(super::first_warning("warned-once", 3));
        assert!(!super::first_warning("warned-once", 3));
        assert!(super::first_warning("warned-once", 4));
        assert!(super::first_warning("warned-once-other", 3));
    }
}
