//! Retention of sealed batches: a batch the register accepted (delivered,
//! with its receipt) keeps its sealed data file under
//! `state_dir/outbox/<feed>/` for `retention.delivered_batches` after its
//! delivery; then the file is pruned. Its manifest stays beside it (the
//! chain of manifests is what the next batch and a receiver's check rest
//! on), its receipt stays in the store, and each prune is an audit entry
//! (`batch_pruned`) and counted (`regfeed_batches_pruned_total`). Batches
//! not delivered are never pruned. A pruned batch can no longer be
//! replayed.
//!
//! The daemon prunes from each feed's outbox loop ([`PRUNE_EVERY`]);
//! `regfeed outbox prune [--dry-run]` prunes now.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::loaded::FeedConfig;
use crate::telemetry::metrics;

/// How often a feed's outbox loop looks for batches to prune.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One batch pruned (or, in a dry run, to be pruned).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub feed: String,
    pub seq: i64,
    pub data_file: String,
    pub data_bytes: i64,
    pub delivered_at: String,
}

impl App {
    /// Prunes the sealed data files of the feed's batches delivered (with
    /// a receipt) at least `retention.delivered_batches` before `now`,
    /// auditing and counting each; with `dry_run`, only says which. A file
    /// already gone is skipped (pruned before).
    pub async fn prune_delivered(
        &self,
        feed: &FeedConfig,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Pruned>> {
        let keep = chrono::Duration::from_std(self.cfg.retention.delivered_batches)
            .unwrap_or(chrono::Duration::MAX);
        let dir = self.outbox_dir(&feed.name);
        let mut pruned = Vec::new();
        for b in self.store.batches(Some(&feed.name)).await? {
            if b.state != "delivered" || b.receipt.is_none() {
                continue;
            }
            let (Some(at), Some(file), Some(sha)) = (&b.delivered_at, &b.data_file, &b.data_sha256)
            else {
                continue;
            };
            let Ok(delivered) = DateTime::parse_from_rfc3339(at) else {
                continue;
            };
            if now.signed_duration_since(delivered.with_timezone(&Utc)) < keep {
                continue;
            }
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            let p = Pruned {
                feed: feed.name.clone(),
                seq: b.seq,
                data_file: file.clone(),
                data_bytes: b.data_bytes.unwrap_or_default(),
                delivered_at: at.clone(),
            };
            if !dry_run {
                // Audited first: a crash between the two leaves an entry
                // for a file the next pass prunes (and audits) again, never
                // a file gone without its entry.
                crate::audit::record(
                    &self.store,
                    &[crate::audit::Entry::BatchPruned {
                        feed: feed.name.clone(),
                        seq: b.seq,
                        data_sha256: sha.clone(),
                        data_bytes: p.data_bytes,
                        delivered_at: at.clone(),
                    }],
                )
                .await?;
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => anyhow::bail!(
                        "feed {} batch {}: cannot prune {file}: {e}",
                        feed.name,
                        b.seq
                    ),
                }
                metrics::record_pruned(&feed.name);
                tracing::info!(feed = %feed.name, seq = b.seq, "A delivered batch's data file was pruned after its retention.");
            }
            pruned.push(p);
        }
        Ok(pruned)
    }
}
