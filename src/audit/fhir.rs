//! Audit entries as FHIR R4 `AuditEvent` resources (one per entry, NDJSON).
//!
//! - `type`: DICOM (`http://dicom.nema.org/resources/ontology/DCM`):
//!   110100 Application Activity (runs, configuration), 110106 Export
//!   (batches staged, sealed, delivered), 110107 Import (quarantined
//!   documents, policy imports), 110110 Patient Record (policy decisions,
//!   objections after sealing).
//! - `subtype`: the entry kind in the local code system [`KIND_SYSTEM`]
//!   (codes: `run_started`, `run_finished`, `quarantined`, `decisions`,
//!   `batch_staged`, `batch_sealed`, `objection_after_sealing`, `delivery`,
//!   `config`, `import`).
//! - `action` (C/R/U/D/E) and `outcome` (0 success, 4 minor failure, 8
//!   serious failure) from the entry; `recorded` = the entry's `at`.
//! - `agent`: regfeed itself (`requestor: true`); `source.observer`: regfeed.
//! - `entity[0]`: the chain position — identifier `seq` in
//!   [`CHAIN_SYSTEM`], details `seq`, `hash`, `prev_hash`, `feed` and `data`
//!   (the canonical entry data, base64), so the chain can be re-verified
//!   from the export alone.
//! - further entities: each person the entry names, as an opaque identifier
//!   in [`PSEUDONYM_SYSTEM`] (the audit pseudonym; never a hetu), role
//!   Patient.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{AuditError, Entry, StoredEntry};

/// The local code system of entry kinds.
pub const KIND_SYSTEM: &str = "urn:regfeed:audit-entry-kind";
/// Identifiers of positions in the hash chain (the entry's seq).
pub const CHAIN_SYSTEM: &str = "urn:regfeed:audit-chain";
/// Audit pseudonyms (HMAC under the audit key; see `audit_pseudonym`).
pub const PSEUDONYM_SYSTEM: &str = "urn:regfeed:audit-pseudonym";

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// The people an entry names (audit pseudonyms), deduplicated, in order.
pub fn people(e: &Entry) -> Vec<&str> {
    let mut out: Vec<&str> = match e {
        Entry::Decisions { items, .. } => items.iter().map(|d| d.person.as_str()).collect(),
        Entry::BatchStaged { people, .. } => people.iter().map(String::as_str).collect(),
        Entry::BatchSealed {
            removed_at_sealing,
            people,
            exempt,
            ..
        } => removed_at_sealing
            .iter()
            .map(|r| r.person.as_str())
            .chain(people.iter().flatten().map(|p| p.person.as_str()))
            .chain(exempt.iter().map(|x| x.person.as_str()))
            .collect(),
        Entry::ObjectionAfterSealing { person, .. } => vec![person.as_str()],
        _ => Vec::new(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// One stored entry as an `AuditEvent`.
pub fn audit_event(s: &StoredEntry) -> Result<Value, AuditError> {
    let entry = Entry::from_parts(&s.kind, s.feed.as_deref(), &s.data)?;
    let (ty, action, outcome) = match &entry {
        Entry::RunStarted { .. } => (("110100", "Application Activity"), "E", "0"),
        Entry::RunFinished { outcome, .. } => (
            ("110100", "Application Activity"),
            "E",
            if outcome == "ok" { "0" } else { "8" },
        ),
        Entry::Config { .. } => (("110100", "Application Activity"), "U", "0"),
        Entry::Quarantined { .. } => (("110107", "Import"), "C", "4"),
        Entry::Import { .. } => (("110107", "Import"), "C", "0"),
        Entry::Decisions { .. } => (("110110", "Patient Record"), "E", "0"),
        Entry::ObjectionAfterSealing { .. } => (("110110", "Patient Record"), "R", "0"),
        Entry::BatchStaged { .. } => (("110106", "Export"), "C", "0"),
        Entry::BatchSealed { .. } => (("110106", "Export"), "U", "0"),
        Entry::BatchPruned { .. } => (("110106", "Export"), "D", "0"),
        Entry::Delivery { outcome, .. } => (
            ("110106", "Export"),
            "E",
            if outcome == "delivered" { "0" } else { "4" },
        ),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(s.data.as_bytes());
    let mut detail = vec![
        json!({"type": "seq", "valueString": s.seq.to_string()}),
        json!({"type": "hash", "valueString": s.hash}),
        json!({"type": "prev_hash", "valueString": s.prev_hash}),
    ];
    if let Some(f) = &s.feed {
        detail.push(json!({"type": "feed", "valueString": f}));
    }
    detail.push(json!({"type": "data", "valueBase64Binary": b64}));
    let mut entities = vec![json!({
        "what": {"identifier": {"system": CHAIN_SYSTEM, "value": s.seq.to_string()}},
        "type": coding(
            "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "2",
            "System Object"
        ),
        "name": format!("regfeed audit entry {}", s.seq),
        "detail": detail,
    })];
    for p in people(&entry) {
        entities.push(json!({
            "what": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": p}},
            "type": coding(
                "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "1",
                "Person"
            ),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    Ok(json!({
        "resourceType": "AuditEvent",
        "id": format!("regfeed-audit-{}", s.seq),
        "type": coding(DCM, ty.0, ty.1),
        "subtype": [{"system": KIND_SYSTEM, "code": s.kind}],
        "action": action,
        "recorded": s.at,
        "outcome": outcome,
        "agent": [{
            "type": {"coding": [coding(
                "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "datacollector",
                "data collector"
            )]},
            "who": {"display": "regfeed"},
            "requestor": true
        }],
        "source": {
            "observer": {"display": "regfeed"},
            "type": [coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                "Application Server"
            )]
        },
        "entity": entities,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_entry_names_its_people_as_opaque_identifiers() {
        let e = Entry::ObjectionAfterSealing {
            feed: "f".into(),
            seq: 2,
            person: "ab12".into(),
            rule: None,
        };
        let (kind, feed, data) = e.parts().expect("parts");
        let s = StoredEntry {
            seq: 7,
            at: "2026-01-01T00:00:00.000Z".into(),
            kind: kind.into(),
            feed,
            data,
            prev_hash: super::super::GENESIS.into(),
            hash: "00".into(),
        };
        let v = audit_event(&s).expect("event");
        assert_eq!(v["resourceType"], "AuditEvent");
        assert_eq!(v["recorded"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["entity"][1]["what"]["identifier"]["value"], "ab12");
        assert_eq!(v["entity"][0]["what"]["identifier"]["value"], "7");
    }
}
