//! The subject lookup: for one person (by audit pseudonym), which feeds and
//! batches received their data, when and under which basis, and which of
//! their records were excluded or held, and why — answered from the trail
//! alone (batch entries commit to their people; decisions are per person).
//!
//! Each batch tells what happened to the person's rows in it: delivered
//! (with how many rows and what went out under an exemption), removed at
//! sealing (staged but never sent), still waiting, or dead. Decisions tell
//! what never reached a batch: excluded, held, or left out because the only
//! cohort evidence may not be used. An objection after sealing is told
//! where it binds the feed.
//!
//! It takes an audit pseudonym, never a hetu: the command line derives it.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::AnyPool;

use super::{AuditError, Basis, Entry};

/// One batch staged with the person's data, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disclosure {
    pub feed: String,
    pub seq: i64,
    /// `delivered`; `sealed` (not delivered yet); `staged` (not sealed
    /// yet); `dead` (not accepted by the register); `removed_at_sealing`
    /// (sealed without any of the person's rows: none went out).
    pub status: String,
    pub staged_at: String,
    pub basis: Basis,
    /// Sealing times (a dead batch re-sealed has more than one).
    pub sealed_at: Vec<String>,
    /// The person's rows in the sealed data file (the latest sealing);
    /// absent before sealing, or for batches sealed before it was audited.
    pub rows: Option<u64>,
    /// Of those, the rows that went out although an objection applies,
    /// with the basis (`exempt: <statute>`).
    pub exempt: Vec<BasisCount>,
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
pub struct BasisCount {
    pub basis: String,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub at: String,
    pub outcome: String,
}

/// Records of the person a feed excluded, held, left out or sent under an
/// exemption or an override, as decided when a batch was built.
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

/// A batch sealed before an objection that binds its feed: not recalled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AfterSealing {
    pub feed: String,
    pub seq: i64,
    pub at: String,
    /// The rule the objection would have excluded the rows under (absent
    /// in entries written before it was audited).
    pub rule: Option<String>,
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
        &["batch_staged", "decisions", "objection_after_sealing"],
        Some(person),
    )
    .await?;
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
                    status: "staged".into(),
                    staged_at: s.at.clone(),
                    basis: legal_basis,
                    sealed_at: Vec::new(),
                    rows: None,
                    exempt: Vec::new(),
                    removed_at_sealing: Vec::new(),
                    deliveries: Vec::new(),
                });
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
                rule,
            } if p == person => {
                report.objections_after_sealing.push(AfterSealing {
                    feed,
                    seq,
                    at: s.at.clone(),
                    rule,
                });
            }
            _ => {}
        }
    }
    if report.disclosures.is_empty() {
        return Ok(report);
    }
    // Sealing and delivery of those batches. A sealing entry names the
    // people it sent and those whose rows it removed; a delivery names none.
    // Batches whose sealing says who went out and what went under an
    // exemption: the staging-time exemptions of those batches are replaced
    // by the sealing's, which describe what was sent.
    let mut sealed_with_people: BTreeSet<(String, i64)> = BTreeSet::new();
    for s in super::entries_mentioning(pool, &["batch_sealed", "delivery"], None).await? {
        let entry = Entry::from_parts(&s.kind, s.feed.as_deref(), &s.data)?;
        let key = match &entry {
            Entry::BatchSealed { feed, seq, .. } | Entry::Delivery { feed, seq, .. } => {
                (feed.clone(), *seq)
            }
            _ => continue,
        };
        let Some(&i) = index.get(&key) else {
            continue;
        };
        let d = &mut report.disclosures[i];
        match entry {
            Entry::BatchSealed {
                removed_at_sealing,
                people,
                exempt,
                ..
            } => {
                d.sealed_at.push(s.at);
                d.removed_at_sealing.extend(
                    removed_at_sealing
                        .into_iter()
                        .filter(|r| r.person == person)
                        .map(|r| RuleCount {
                            rule: r.rule,
                            records: r.records,
                        }),
                );
                if let Some(people) = people {
                    sealed_with_people.insert(key);
                    d.rows = Some(
                        people
                            .iter()
                            .find(|p| p.person == person)
                            .map_or(0, |p| p.rows),
                    );
                    d.exempt = exempt
                        .into_iter()
                        .filter(|x| x.person == person)
                        .map(|x| BasisCount {
                            basis: x.basis,
                            records: x.records,
                        })
                        .collect();
                }
            }
            Entry::Delivery { outcome, .. } => d.deliveries.push(Delivery { at: s.at, outcome }),
            _ => {}
        }
    }
    for d in &mut report.disclosures {
        d.status = if d.sealed_at.is_empty() {
            "staged"
        } else if d.rows == Some(0) {
            "removed_at_sealing"
        } else if d.deliveries.iter().any(|x| x.outcome == "delivered") {
            "delivered"
        } else if d.deliveries.last().is_some_and(|x| x.outcome == "dead") {
            "dead"
        } else {
            "sealed"
        }
        .into();
    }
    report.decisions.retain(|x| {
        x.outcome != "exempt"
            || !x
                .seq
                .is_some_and(|seq| sealed_with_people.contains(&(x.feed.clone(), seq)))
    });
    Ok(report)
}

/// What a rule means, for a reader.
fn rule_words(rule: &str) -> String {
    match rule {
        "objection_to_controller" => "an objection made to the records' controller".into(),
        "objection_to_findata" => "an objection made to Findata, through which this feed goes".into(),
        "restriction_active" => {
            "processing is restricted; held and re-evaluated on every run".into()
        }
        "denial_of_disclosure" => "a denial of disclosure to another controller".into(),
        "no_usable_cohort_evidence" => "the only evidence that puts this person in the feed's cohort may not be used, so their other records are left out with it".into(),
        "exempt_legal_obligation" => {
            "an objection applies, but the feed rests on a legal obligation".into()
        }
        "restriction_overridden" => {
            "a restriction applies, but the feed rests on a legal obligation".into()
        }
        "derogation" => "an objection yields to the feed's documented derogation".into(),
        other => match other.strip_prefix("mapping.hold.") {
            Some(reason) => format!("held back by the feed's mapping ({reason})"),
            None => other.to_owned(),
        },
    }
}

/// The report in plain words.
pub fn render(r: &SubjectReport) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    if r.disclosures.is_empty() {
        t.push_str("No feed received this person's data.\n");
    } else {
        let removed = r
            .disclosures
            .iter()
            .filter(|d| d.status == "removed_at_sealing")
            .count();
        let went = r.disclosures.len() - removed;
        let _ = write!(
            t,
            "This person's data was staged in {} batch(es)",
            r.disclosures.len()
        );
        if removed > 0 {
            let _ = write!(
                t,
                "; {removed} of them were sealed without any of it (removed at sealing)"
            );
        }
        let _ = writeln!(
            t,
            "; {went} batch(es) carry it{}",
            if went > 0 { ":" } else { "." }
        );
        for d in &r.disclosures {
            let sealed = d.sealed_at.join(", ");
            let rows = d
                .rows
                .map(|n| format!(": {n} row(s) of this person"))
                .unwrap_or_default();
            let what = match d.status.as_str() {
                "staged" => "not sealed yet".to_owned(),
                "removed_at_sealing" => format!(
                    "sealed {sealed} without this person's rows: every one was removed at sealing, none went out"
                ),
                "dead" => format!(
                    "sealed {sealed}; not accepted by the register (dead), not delivered{rows}"
                ),
                "delivered" => {
                    let at: Vec<&str> = d
                        .deliveries
                        .iter()
                        .filter(|x| x.outcome == "delivered")
                        .map(|x| x.at.as_str())
                        .collect();
                    format!("sealed {sealed}; delivered {}{rows}", at.join(", "))
                }
                _ => format!("sealed {sealed}; not delivered yet{rows}"),
            };
            let _ = writeln!(
                t,
                "  feed {} batch {}: staged {}; {what}",
                d.feed, d.seq, d.staged_at
            );
            let b = &d.basis;
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
            for x in &d.exempt {
                let _ = writeln!(
                    t,
                    "    {} of them sent under an exemption ({}): {}",
                    x.records,
                    x.basis,
                    rule_words("exempt_legal_obligation")
                );
            }
            for rc in &d.removed_at_sealing {
                let _ = writeln!(
                    t,
                    "    {} record(s) removed at sealing under rule {}: {}",
                    rc.records,
                    rc.rule,
                    rule_words(&rc.rule)
                );
            }
        }
    }
    let told_in_batches = r
        .disclosures
        .iter()
        .any(|d| !d.exempt.is_empty() || !d.removed_at_sealing.is_empty());
    if r.decisions.is_empty() {
        if !told_in_batches {
            t.push_str("No record of this person was excluded, held or exempted.\n");
        }
    } else {
        t.push_str("Decisions about this person's records when batches were built:\n");
        for d in &r.decisions {
            let _ = writeln!(
                t,
                "  feed {}, {} ({}): {} record(s) {} under rule {} ({}): {}",
                d.feed,
                d.seq
                    .map(|s| format!("when batch {s} was built"))
                    .unwrap_or_else(|| "in a run that staged no batch".into()),
                d.at,
                d.records,
                match (d.outcome.as_str(), d.rule.as_str()) {
                    ("exclude", "no_usable_cohort_evidence") => "left out",
                    ("exclude", _) => "excluded",
                    ("hold", _) => "held",
                    ("exempt", _) => "sent under an exemption",
                    ("include", _) => "included",
                    (other, _) => other,
                },
                d.rule,
                d.basis,
                rule_words(&d.rule)
            );
        }
    }
    for a in &r.objections_after_sealing {
        let _ = writeln!(
            t,
            "An objection arrived after feed {} batch {} was sealed and binds that feed{}: what the batch sent is not recalled (recorded {}).",
            a.feed,
            a.seq,
            a.rule
                .as_deref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default(),
            a.at
        );
    }
    t
}
