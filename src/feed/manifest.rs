//! The batch manifest, format 1: exactly `shared/feed-manifest.schema.json`.
//!
//! Serialisation is deterministic, so a manifest's SHA-256 (the next batch's
//! `previous_manifest_sha256`) depends only on its content: pretty JSON
//! (two-space indent, serde_json's pretty printer) with keys in the schema's
//! order, map keys (`counts.held`, `counts.excluded`) sorted, optional keys
//! omitted when absent (never written as `null`), and a trailing newline.
//! Times are RFC 3339 UTC with whole seconds, `2026-11-22T19:45:00Z`;
//! sub-second parts are truncated when written.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FeedError, is_valid_feed_name};

/// The manifest format this module writes.
pub const FORMAT: u32 = 1;

/// The `format` key: always 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatVersion;

impl Serialize for FormatVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(FORMAT)
    }
}

impl<'de> Deserialize<'de> for FormatVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == FORMAT {
            Ok(FormatVersion)
        } else {
            Err(serde::de::Error::custom(format!(
                "manifest format {v} is not supported (expected {FORMAT})"
            )))
        }
    }
}

mod rfc3339_seconds {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: FormatVersion,
    pub feed: String,
    /// The receiving register, as configured (e.g. `thl-diabetes`).
    pub register: String,
    /// Gapless per feed, from 1.
    pub seq: u64,
    #[serde(with = "rfc3339_seconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339_seconds")]
    pub sealed_at: DateTime<Utc>,
    pub window: Window,
    pub mapping: MappingRef,
    /// Policy rule set version; `"none"` before any policy exists.
    pub rules_version: String,
    pub legal_basis: LegalBasis,
    pub identity: Identity,
    pub data: DataRef,
    pub counts: Counts,
    /// SHA-256 of the previous manifest's file bytes; `None` for seq 1.
    pub previous_manifest_sha256: Option<String>,
    /// A test submission the register must not load.
    pub test: bool,
}

/// Source positions covered (opaque to receivers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: Option<String>,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRef {
    pub name: String,
    pub version: String,
    /// SHA-256 of the mapping file.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Statistics,
    ScientificResearch,
    DevelopmentAndInnovation,
    Education,
    KnowledgeManagement,
    SteeringAndSupervision,
    AuthorityPlanningAndReporting,
}

impl Purpose {
    /// The purpose as the config and manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Statistics => "statistics",
            Purpose::ScientificResearch => "scientific_research",
            Purpose::DevelopmentAndInnovation => "development_and_innovation",
            Purpose::Education => "education",
            Purpose::KnowledgeManagement => "knowledge_management",
            Purpose::SteeringAndSupervision => "steering_and_supervision",
            Purpose::AuthorityPlanningAndReporting => "authority_planning_and_reporting",
        }
    }
}

/// GDPR Art. 6(1) basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Art6 {
    /// 6(1)(c): legal obligation.
    #[serde(rename = "6.1.c")]
    LegalObligation,
    /// 6(1)(e): public task.
    #[serde(rename = "6.1.e")]
    PublicTask,
}

/// GDPR Art. 9(2) condition for health data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Art9 {
    /// 9(2)(g): substantial public interest.
    #[serde(rename = "9.2.g")]
    SubstantialPublicInterest,
    /// 9(2)(h): health or social care.
    #[serde(rename = "9.2.h")]
    HealthOrSocialCare,
    /// 9(2)(i): public health.
    #[serde(rename = "9.2.i")]
    PublicHealth,
    /// 9(2)(j): archiving, research, statistics.
    #[serde(rename = "9.2.j")]
    ResearchOrStatistics,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalBasis {
    pub purpose: Purpose,
    pub gdpr_art6: Art6,
    pub gdpr_art9: Art9,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derogation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Pseudonym,
    Hetu,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub kind: IdentityKind,
    /// The recipient's pseudonym key id; `None` for a hetu feed.
    pub key_id: Option<String>,
    /// The feed's record key id.
    pub record_key_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MediaType {
    #[serde(rename = "text/csv")]
    Csv,
    #[serde(rename = "application/x-ndjson")]
    Ndjson,
    #[serde(rename = "application/xml")]
    Xml,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Csv => "text/csv",
            MediaType::Ndjson => "application/x-ndjson",
            MediaType::Xml => "application/xml",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    pub file: String,
    pub media_type: MediaType,
    pub bytes: u64,
    pub records: u64,
    pub sha256: String,
}

impl From<&super::DataFileInfo> for DataRef {
    fn from(d: &super::DataFileInfo) -> Self {
        DataRef {
            file: d.file.clone(),
            media_type: d.media_type,
            bytes: d.bytes,
            records: d.records,
            sha256: d.sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub upserts: u64,
    pub retracts: u64,
    /// Records held back in this window, by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<BTreeMap<String, u64>>,
    /// Records excluded in this window, by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<BTreeMap<String, u64>>,
    /// Rows delivered despite an objection, under a legal obligation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt: Option<u64>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Checks what the schema and the batch chain require beyond types:
    /// feed name pattern, seq ≥ 1, hex digests, previous digest present iff
    /// seq > 1, pseudonym key id present iff the feed is pseudonymous,
    /// counts adding up to the data file's records.
    pub fn validate(&self) -> Result<(), FeedError> {
        let bad = |m: &str| Err(FeedError::Manifest(m.to_string()));
        if !is_valid_feed_name(&self.feed) {
            return Err(FeedError::FeedName(self.feed.clone()));
        }
        if self.seq == 0 {
            return bad("seq starts at 1");
        }
        if !is_sha256_hex(&self.mapping.sha256) {
            return bad("mapping.sha256 is not 64 lowercase hex digits");
        }
        if !is_sha256_hex(&self.data.sha256) {
            return bad("data.sha256 is not 64 lowercase hex digits");
        }
        match (&self.previous_manifest_sha256, self.seq) {
            (None, 1) => {}
            (Some(_), 1) => return bad("seq 1 has no previous manifest"),
            (None, _) => return bad("previous_manifest_sha256 is required after seq 1"),
            (Some(p), _) if !is_sha256_hex(p) => {
                return bad("previous_manifest_sha256 is not 64 lowercase hex digits");
            }
            (Some(_), _) => {}
        }
        match (self.identity.kind, &self.identity.key_id) {
            (IdentityKind::Hetu, Some(_)) => return bad("a hetu feed has no pseudonym key id"),
            (IdentityKind::Pseudonym, None) => return bad("a pseudonym feed needs its key id"),
            _ => {}
        }
        if self.counts.upserts + self.counts.retracts != self.data.records {
            return bad("counts.upserts + counts.retracts differ from data.records");
        }
        let expected_ext = match self.data.media_type {
            MediaType::Csv => "csv",
            MediaType::Ndjson => "jsonl",
            MediaType::Xml => "xml",
        };
        if self.data.file != format!("{}-{:08}.{expected_ext}", self.feed, self.seq) {
            return bad("data.file is not <feed>-<seq, 8 digits>.<extension of media_type>");
        }
        Ok(())
    }

    /// The manifest file's bytes (validated; see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FeedError> {
        self.validate()?;
        let mut out = serde_json::to_vec_pretty(self)
            .map_err(|e| FeedError::Manifest(format!("serialising: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses and validates a manifest file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, FeedError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| FeedError::Manifest(format!("parsing: {e}")))?;
        m.validate()?;
        Ok(m)
    }
}
