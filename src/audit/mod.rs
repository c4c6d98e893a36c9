//! The audit trail (DESIGN.md §6): an append-only, hash-chained log in the
//! store of what regfeed did — runs, quarantines, policy decisions, batches
//! staged and sealed (each committing to the set of people it disclosed),
//! deliveries, configuration and key-id changes, imports.
//!
//! This module owns the `audit` table and its SQL, the entry types, the
//! chain ([`chain`]), the subject lookup ([`subject`]) and the FHIR export
//! ([`fhir`]). It must never hold a hetu, a name, a key or free text: people
//! appear only as [`audit_pseudonym`]s, documents only as digest prefixes.
//! Its size grows with batches and decisions, not with rows delivered.
//!
//! Entries are written in the transaction of the change they describe
//! ([`append`] takes the transaction's connection), so a crash leaves both
//! or neither.

pub mod chain;
pub mod fhir;
pub mod subject;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sqlx::AnyPool;

pub use chain::{
    BadEntry, GENESIS, Head, Problem, StoredEntry, VerifyReport, append, head, record, verify,
};

use crate::identity::{Key, KeyRing};
use crate::loaded::{Config, FeedConfig};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("audit trail: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("audit trail: {0}")]
    Other(String),
}

/// A person as the audit trail knows them: lowercase hex HMAC-SHA-256 under
/// the **audit key** over the UTF-8 string `"person:" + index_person`, where
/// `index_person` is the store's index pseudonym
/// ([`crate::identity::person_index`]). Two keyed steps: the store only ever
/// knows index pseudonyms, and the trail cannot be joined with the store, a
/// batch or another trail without the audit key. To find a person, derive
/// hetu → index pseudonym (index key) → audit pseudonym (audit key).
pub fn audit_pseudonym(audit_key: &Key, index_person: &str) -> String {
    crate::identity::audit_pseudonym(audit_key, index_person)
}

/// SHA-256 over a set of audit pseudonyms: each, in sorted order, followed
/// by `"\n"`; lowercase hex. A batch entry commits to its people with it.
pub fn people_sha256(sorted_people: &[String]) -> String {
    let mut h = Sha256::new();
    for p in sorted_people {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// What the policy decided for a person's records under one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Include,
    Exclude,
    Hold,
    Exempt,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Include => "include",
            Outcome::Exclude => "exclude",
            Outcome::Hold => "hold",
            Outcome::Exempt => "exempt",
        }
    }
}

/// Decisions aggregated per person and rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// Audit pseudonym.
    pub person: String,
    pub outcome: Outcome,
    pub rule: String,
    /// Why, for a reader: `"exempt: THL Act 668/2008 §5"`,
    /// `"derogation: <ref>"`, or the reason (never free text from a record).
    pub basis: String,
    pub records: u64,
}

/// Rows taken out of a staged batch at sealing, per person and rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    pub person: String,
    pub rule: String,
    pub records: u64,
}

/// A person's rows in a sealed data file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersonRows {
    pub person: String,
    pub rows: u64,
}

/// Rows of a person that went out although an objection exists, and why
/// (`exempt: <statute>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exempted {
    pub person: String,
    pub basis: String,
    pub records: u64,
}

/// The legal basis a batch was disclosed under, as the feed declared it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Basis {
    pub purpose: String,
    pub art6: String,
    pub art9: String,
    pub statute: Option<String>,
    pub derogation: Option<String>,
    pub channel: String,
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Basis {
    /// The basis the feed declares (no derogation until policy lands).
    pub fn of(feed: &FeedConfig) -> Basis {
        let lb = &feed.legal_basis;
        Basis {
            purpose: enum_text(&lb.purpose),
            art6: enum_text(&lb.art6),
            art9: enum_text(&lb.art9),
            statute: lb.statute.clone(),
            derogation: None,
            channel: enum_text(&lb.channel),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MappingVersion {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyIdEntry {
    /// `index`, `audit`, `pseudonym:<recipient>`, `record:<feed>`.
    pub role: String,
    pub id: String,
}

/// One audit entry. `kind` is the variant name in snake_case; `feed`, where
/// a variant has it, goes into the entry's `feed` column; every other field
/// is the entry's `data` (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    RunStarted {
        feed: String,
    },
    RunFinished {
        feed: String,
        /// `ok` or `failed`.
        outcome: String,
        counts: BTreeMap<String, u64>,
    },
    Quarantined {
        feed: String,
        /// First 16 hex digits of the document's SHA-256.
        doc_sha256: String,
        class: String,
    },
    Decisions {
        feed: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        items: Vec<Decision>,
    },
    BatchStaged {
        feed: String,
        seq: i64,
        upserts: u64,
        retracts: u64,
        /// Audit pseudonyms of everyone with a row in the batch, sorted.
        people: Vec<String>,
        /// [`people_sha256`] of `people`.
        people_sha256: String,
        legal_basis: Basis,
    },
    BatchSealed {
        feed: String,
        seq: i64,
        data_sha256: String,
        manifest_sha256: String,
        removed_at_sealing: Vec<Removed>,
        /// Everyone with a row in the sealed data file, with their rows,
        /// sorted: what the batch disclosed, which can be less than it
        /// staged. Absent in entries written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        people: Option<Vec<PersonRows>>,
        /// Rows that went out although an objection applies (the feed rests
        /// on a legal obligation), per person, as decided at sealing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exempt: Vec<Exempted>,
    },
    /// An objection imported after a batch holding the person's rows was
    /// sealed, that binds the batch's feed for those rows: not recalled.
    ObjectionAfterSealing {
        feed: String,
        seq: i64,
        person: String,
        /// The rule the objection would have excluded the rows under
        /// (absent in entries written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    Delivery {
        feed: String,
        seq: i64,
        /// `delivered`, `failed`, ...
        outcome: String,
        /// The sink's receipt (digests, times; never a path).
        receipt: serde_json::Value,
    },
    /// A delivered batch's sealed data file removed from the outbox after
    /// its retention; its manifest and receipt stay.
    BatchPruned {
        feed: String,
        seq: i64,
        data_sha256: String,
        data_bytes: i64,
        delivered_at: String,
    },
    Config {
        config_sha256: String,
        mappings: Vec<MappingVersion>,
        key_ids: Vec<KeyIdEntry>,
        rules_version: String,
    },
    Import {
        /// What was imported: `objections`, `restrictions`, ... (named
        /// `import_kind` because `kind` is the entry's own).
        import_kind: String,
        rows: u64,
        source_sha256: String,
    },
}

impl Entry {
    /// A `batch_staged` entry: sorts and de-duplicates `people` (audit
    /// pseudonyms) and commits to them.
    pub fn batch_staged(
        feed: &FeedConfig,
        seq: i64,
        upserts: u64,
        retracts: u64,
        mut people: Vec<String>,
    ) -> Entry {
        people.sort_unstable();
        people.dedup();
        Entry::BatchStaged {
            feed: feed.name.clone(),
            seq,
            upserts,
            retracts,
            people_sha256: people_sha256(&people),
            people,
            legal_basis: Basis::of(feed),
        }
    }

    /// A `config` entry for this configuration and these keys.
    pub fn config(cfg: &Config, keys: &KeyRing, rules_version: &str) -> Entry {
        Entry::Config {
            config_sha256: cfg.sha256.clone(),
            mappings: cfg
                .feeds
                .iter()
                .map(|f| MappingVersion {
                    name: f.mapping.name.clone(),
                    version: f.mapping.version.clone(),
                    sha256: f.mapping.sha256.clone(),
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            key_ids: keys
                .key_ids()
                .into_iter()
                .map(|(role, id)| KeyIdEntry {
                    role: role.to_string(),
                    id: id.as_str().to_owned(),
                })
                .collect(),
            rules_version: rules_version.to_owned(),
        }
    }

    /// The stored parts: kind, feed column, canonical data.
    pub fn parts(&self) -> Result<(&'static str, Option<String>, String), AuditError> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| AuditError::Other(format!("encoding an entry: {e}")))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| AuditError::Other("an entry is not an object".into()))?;
        obj.remove("kind");
        let feed = match obj.remove("feed") {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        Ok((self.kind(), feed, chain::canonical_json(&v)))
    }

    /// Rebuilds an entry from its stored parts.
    pub fn from_parts(kind: &str, feed: Option<&str>, data: &str) -> Result<Entry, AuditError> {
        let mut v: serde_json::Value = serde_json::from_str(data)
            .map_err(|e| AuditError::Other(format!("entry data is not JSON: {e}")))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| AuditError::Other("entry data is not an object".into()))?;
        obj.insert("kind".into(), kind.into());
        if let Some(f) = feed {
            obj.insert("feed".into(), f.into());
        }
        serde_json::from_value(v)
            .map_err(|e| AuditError::Other(format!("entry of kind {kind:?} does not parse: {e}")))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Entry::RunStarted { .. } => "run_started",
            Entry::RunFinished { .. } => "run_finished",
            Entry::Quarantined { .. } => "quarantined",
            Entry::Decisions { .. } => "decisions",
            Entry::BatchStaged { .. } => "batch_staged",
            Entry::BatchSealed { .. } => "batch_sealed",
            Entry::ObjectionAfterSealing { .. } => "objection_after_sealing",
            Entry::Delivery { .. } => "delivery",
            Entry::BatchPruned { .. } => "batch_pruned",
            Entry::Config { .. } => "config",
            Entry::Import { .. } => "import",
        }
    }

    pub fn feed(&self) -> Option<&str> {
        match self {
            Entry::RunStarted { feed }
            | Entry::RunFinished { feed, .. }
            | Entry::Quarantined { feed, .. }
            | Entry::Decisions { feed, .. }
            | Entry::BatchStaged { feed, .. }
            | Entry::BatchSealed { feed, .. }
            | Entry::ObjectionAfterSealing { feed, .. }
            | Entry::Delivery { feed, .. }
            | Entry::BatchPruned { feed, .. } => Some(feed),
            Entry::Config { .. } | Entry::Import { .. } => None,
        }
    }
}

/// Appends a `config` entry when the configuration digest, the mapping
/// versions, the key ids or the rules version differ from the last `config`
/// entry (so key rotations show up); returns whether it did.
pub async fn record_config_if_changed(
    store: &Store,
    cfg: &Config,
    keys: &KeyRing,
    rules_version: &str,
) -> Result<bool, AuditError> {
    let entry = Entry::config(cfg, keys, rules_version);
    let (_, _, data) = entry.parts()?;
    // The store's write lock first, so two processes opening at once append
    // once.
    let mut tx = store.begin().await?;
    let _ = append(&mut tx, &[]).await?;
    let last: Option<String> = sqlx::query_scalar(
        "SELECT data FROM audit WHERE kind = 'config' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(tx.conn())
    .await?;
    if last.as_deref() == Some(data.as_str()) {
        // Roll back now: the transaction holds SQLite's write lock, and a
        // dropped one is rolled back only when its connection is next used.
        tx.rollback().await?;
        return Ok(false);
    }
    append(&mut tx, &[entry]).await?;
    tx.commit().await?;
    Ok(true)
}

/// Logs the head: the outside anchor of DESIGN.md §6. Call after every
/// batch; the count is also the `entries` gauge.
pub async fn log_head(pool: &AnyPool) -> Result<Head, AuditError> {
    let h = head(pool).await?;
    tracing::info!(entries = h.entries, head = %h.hash, "Audit head.");
    Ok(h)
}

/// Every stored entry whose kind is one of `kinds` and whose data contains
/// `needle` (an audit pseudonym), in order. A prefilter: callers parse and
/// check the entry.
pub(crate) async fn entries_mentioning(
    pool: &AnyPool,
    kinds: &[&str],
    needle: Option<&str>,
) -> Result<Vec<StoredEntry>, AuditError> {
    let mut q = crate::store::QueryBuilder::new(
        "SELECT seq, at, kind, feed, data, prev_hash, hash FROM audit WHERE kind IN (",
    );
    let mut sep = q.separated(", ");
    for k in kinds {
        sep.push_bind(*k);
    }
    q.push(")");
    if let Some(n) = needle {
        // Audit pseudonyms are hex: nothing in them is a LIKE wildcard.
        q.push(" AND data LIKE '%' || ");
        q.push_bind(n);
        q.push(" || '%'");
    }
    q.push(" ORDER BY seq");
    let rows = q.build()?.fetch_all(pool).await?;
    Ok(rows.into_iter().map(chain::stored).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_stored_parts() {
        let e = Entry::Decisions {
            feed: "f".into(),
            seq: Some(3),
            items: vec![Decision {
                person: "ab".into(),
                outcome: Outcome::Exempt,
                rule: "objection".into(),
                basis: "exempt: THL Act 668/2008 §5".into(),
                records: 2,
            }],
        };
        let (kind, feed, data) = e.parts().expect("parts");
        assert_eq!(kind, "decisions");
        assert_eq!(feed.as_deref(), Some("f"));
        assert!(!data.contains("\"feed\"") && !data.contains("\"kind\""));
        assert_eq!(
            Entry::from_parts(kind, feed.as_deref(), &data).expect("parse"),
            e
        );
        let c = Entry::Import {
            import_kind: "objections".into(),
            rows: 4,
            source_sha256: "00".into(),
        };
        let (kind, feed, data) = c.parts().expect("parts");
        assert_eq!((kind, feed), ("import", None));
        assert_eq!(
            data,
            r#"{"import_kind":"objections","rows":4,"source_sha256":"00"}"#
        );
    }
}
