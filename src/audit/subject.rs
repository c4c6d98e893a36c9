//! The subject lookup: for one person (by audit pseudonym), which feeds and
//! batches received their data, when and under which basis, and which of
//! their records were excluded or held, and why — answered from the trail
//! alone (batch entries commit to their people; decisions are per person).
//!
//! It takes an audit pseudonym, never a hetu: the command line derives it.

use std::collections::BTreeMap;

use sqlx::AnyPool;

use super::{AuditError, Basis, Entry};

/// One batch that carried the person's data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disclosure {
    pub feed: String,
    pub seq: i64,
    pub staged_at: String,
    pub basis: Basis,
    /// Sealing times (a dead batch re-sealed has more than one).
    pub sealed_at: Vec<String>,
    /// Rows of this person removed at sealing, per rule.
    pub removed_at_sealing: Vec<RuleCount>,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleCount {
    pub rule: String,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub at: String,
    pub outcome: String,
}

/// Records of the person a feed excluded, held or sent under an exemption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecisionSeen {
    pub feed: String,
    pub seq: Option<i64>,
    pub at: String,
    pub outcome: String,
    pub rule: String,
    pub basis: String,
    pub records: u64,
}

/// A batch sealed before the person's objection: not recalled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AfterSealing {
    pub feed: String,
    pub seq: i64,
    pub at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubjectReport {
    pub disclosures: Vec<Disclosure>,
    pub decisions: Vec<DecisionSeen>,
    pub objections_after_sealing: Vec<AfterSealing>,
}

impl SubjectReport {
    pub fn is_empty(&self) -> bool {
        self.disclosures.is_empty()
            && self.decisions.is_empty()
            && self.objections_after_sealing.is_empty()
    }
}

/// Everything the trail says about `person` (an audit pseudonym).
pub async fn lookup(pool: &AnyPool, person: &str) -> Result<SubjectReport, AuditError> {
    let mut report = SubjectReport::default();
    let mut index: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mentioning = super::entries_mentioning(
        pool,
        &[
            "batch_staged",
            "batch_sealed",
            "decisions",
            "objection_after_sealing",
        ],
        Some(person),
    )
    .await?;
    let mut removed: Vec<(String, i64, Vec<RuleCount>)> = Vec::new();
    for s in mentioning {
        match Entry::from_parts(&s.kind, s.feed.as_deref(), &s.data)? {
            Entry::BatchStaged {
                feed,
                seq,
                people,
                legal_basis,
                ..
            } if people.iter().any(|p| p == person) => {
                index.insert((feed.clone(), seq), report.disclosures.len());
                report.disclosures.push(Disclosure {
                    feed,
                    seq,
                    staged_at: s.at.clone(),
                    basis: legal_basis,
                    sealed_at: Vec::new(),
                    removed_at_sealing: Vec::new(),
                    deliveries: Vec::new(),
                });
            }
            Entry::BatchSealed {
                feed,
                seq,
                removed_at_sealing,
                ..
            } => {
                let mine: Vec<RuleCount> = removed_at_sealing
                    .into_iter()
                    .filter(|r| r.person == person)
                    .map(|r| RuleCount {
                        rule: r.rule,
                        records: r.records,
                    })
                    .collect();
                if !mine.is_empty() {
                    removed.push((feed, seq, mine));
                }
            }
            Entry::Decisions { feed, seq, items } => {
                for d in items.into_iter().filter(|d| d.person == person) {
                    report.decisions.push(DecisionSeen {
                        feed: feed.clone(),
                        seq,
                        at: s.at.clone(),
                        outcome: d.outcome.as_str().to_owned(),
                        rule: d.rule,
                        basis: d.basis,
                        records: d.records,
                    });
                }
            }
            Entry::ObjectionAfterSealing {
                feed,
                seq,
                person: p,
                ..
            } if p == person => {
                report.objections_after_sealing.push(AfterSealing {
                    feed,
                    seq,
                    at: s.at.clone(),
                });
            }
            _ => {}
        }
    }
    for (feed, seq, mine) in removed {
        if let Some(&i) = index.get(&(feed, seq)) {
            report.disclosures[i].removed_at_sealing.extend(mine);
        }
    }
    if report.disclosures.is_empty() {
        return Ok(report);
    }
    // Sealing and delivery of those batches (these entries name no people).
    for s in super::entries_mentioning(pool, &["batch_sealed", "delivery"], None).await? {
        let (feed, seq, delivery) = match Entry::from_parts(&s.kind, s.feed.as_deref(), &s.data)? {
            Entry::BatchSealed { feed, seq, .. } => (feed, seq, None),
            Entry::Delivery {
                feed, seq, outcome, ..
            } => (feed, seq, Some(outcome)),
            _ => continue,
        };
        let Some(&i) = index.get(&(feed, seq)) else {
            continue;
        };
        let d = &mut report.disclosures[i];
        match delivery {
            None => d.sealed_at.push(s.at),
            Some(outcome) => d.deliveries.push(Delivery { at: s.at, outcome }),
        }
    }
    Ok(report)
}

/// The report in plain words.
pub fn render(r: &SubjectReport) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    if r.disclosures.is_empty() {
        t.push_str("No feed received this person's data.\n");
    } else {
        let _ = writeln!(
            t,
            "This person's data went into {} batch(es):",
            r.disclosures.len()
        );
        for d in &r.disclosures {
            let b = &d.basis;
            let _ = writeln!(
                t,
                "  feed {} batch {}: staged {}; sealed {}; delivered {}",
                d.feed,
                d.seq,
                d.staged_at,
                if d.sealed_at.is_empty() {
                    "not yet".to_owned()
                } else {
                    d.sealed_at.join(", ")
                },
                {
                    let ok: Vec<&str> = d
                        .deliveries
                        .iter()
                        .filter(|x| x.outcome == "delivered")
                        .map(|x| x.at.as_str())
                        .collect();
                    if ok.is_empty() {
                        "not yet".to_owned()
                    } else {
                        ok.join(", ")
                    }
                }
            );
            let _ = writeln!(
                t,
                "    basis: purpose {}, GDPR Art. {} and Art. {}{}{}, channel {}",
                b.purpose,
                b.art6,
                b.art9,
                b.statute
                    .as_deref()
                    .map(|s| format!(", statute {s}"))
                    .unwrap_or_default(),
                b.derogation
                    .as_deref()
                    .map(|s| format!(", derogation {s}"))
                    .unwrap_or_default(),
                b.channel
            );
            for rc in &d.removed_at_sealing {
                let _ = writeln!(
                    t,
                    "    {} record(s) removed at sealing (rule {})",
                    rc.records, rc.rule
                );
            }
        }
    }
    if r.decisions.is_empty() {
        t.push_str("No record of this person was excluded, held or exempted.\n");
    } else {
        t.push_str("Decisions about this person's records:\n");
        for d in &r.decisions {
            let _ = writeln!(
                t,
                "  feed {}{} at {}: {} record(s) {} under rule {} ({})",
                d.feed,
                d.seq.map(|s| format!(" batch {s}")).unwrap_or_default(),
                d.at,
                d.records,
                match d.outcome.as_str() {
                    "exclude" => "excluded",
                    "hold" => "held",
                    "exempt" => "sent under an exemption",
                    "include" => "included",
                    other => other,
                },
                d.rule,
                d.basis
            );
        }
    }
    for a in &r.objections_after_sealing {
        let _ = writeln!(
            t,
            "Objection arrived after feed {} batch {} was sealed (not recalled; recorded {}).",
            a.feed, a.seq, a.at
        );
    }
    t
}
