//! The policy gate: DOMAIN.md §4's decision table as one pure function.
//! Per record × feed, at a moment (staging or sealing): include, exclude or
//! hold, with the rule that decided and the basis an auditor reads.
//!
//! Inputs are plain data — the feed's declared basis, the person's
//! objections, restrictions, denials of disclosure and turvakielto, the
//! record's controller and service event. This module reads no store, no
//! clock and no config: callers pass the moment.

use chrono::{DateTime, Utc};

use crate::config::{Art6, Channel, Purpose};

/// The rule set's version, named in every manifest and audit entry.
pub const RULES_VERSION: &str = "policy-1";

/// To whom an objection was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MadeTo {
    /// A configured controller (its id in the controller table).
    Controller(String),
    /// Findata: binds what is disclosed through Findata, whoever the controller.
    Findata,
}

/// An objection to secondary use (GDPR Art. 21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objection {
    pub made_to: MadeTo,
    /// The purposes it covers; `None` covers every purpose.
    pub purposes: Option<Vec<Purpose>>,
    pub effective_from: DateTime<Utc>,
    pub withdrawn: Option<DateTime<Utc>>,
}

impl Objection {
    /// In force at `at`: effective from `effective_from` (inclusive) until
    /// withdrawn (exclusive).
    pub fn active(&self, at: DateTime<Utc>) -> bool {
        self.effective_from <= at && self.withdrawn.is_none_or(|w| at < w)
    }

    fn covers(&self, purpose: Purpose) -> bool {
        self.purposes
            .as_ref()
            .is_none_or(|ps| ps.contains(&purpose))
    }
}

/// A restriction of processing (Art. 18), e.g. while an objection is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// The controller it binds; `None` binds every controller.
    pub controller: Option<String>,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl Restriction {
    pub fn active(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && self.end.is_none_or(|e| at < e)
    }
}

/// The denials of disclosure valid for a person (the latest snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denials {
    /// Field 5: no denial is valid.
    pub none_valid: bool,
    /// Service events whose data may not be disclosed.
    pub service_events: Vec<String>,
    /// Controllers (ids) all of whose registers may not be disclosed.
    pub controllers: Vec<String>,
}

/// Everything the gate knows about one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonPolicy {
    pub objections: Vec<Objection>,
    pub restrictions: Vec<Restriction>,
    pub denials: Option<Denials>,
    /// Non-disclosure for personal safety: address and municipality columns
    /// are suppressed unless a mapping column requires them under a statute.
    pub turvakielto: bool,
}

/// What the gate needs of a feed's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPolicy {
    pub purpose: Purpose,
    pub art6: Art6,
    pub statute: Option<String>,
    pub derogation: Option<String>,
    pub channel: Channel,
    /// The feed discloses to a controller other than the data's own, so
    /// denials of disclosure apply.
    pub discloses_to_other_controller: bool,
    /// The recipient is this controller (its id): a denial of disclosure
    /// does not apply to records it controls, since use within the same
    /// controller's register is not a disclosure.
    pub recipient_controller: Option<String>,
}

impl FeedPolicy {
    /// What the gate needs of a feed's declared legal basis.
    pub fn of(lb: &crate::config::LegalBasis) -> FeedPolicy {
        FeedPolicy {
            purpose: lb.purpose,
            art6: lb.art6,
            statute: lb.statute.clone(),
            derogation: lb.derogation.clone(),
            channel: lb.channel,
            discloses_to_other_controller: lb.discloses_to_other_controller,
            recipient_controller: lb.recipient_controller.clone(),
        }
    }
}

/// What the gate needs of a record: its document's controller (the
/// configured controller id, when the custodian OID is configured) and
/// service event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordContext<'a> {
    pub controller: Option<&'a str>,
    pub service_event: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Include,
    /// Delivered although an objection exists: the feed rests on a legal
    /// obligation.
    Exempt,
    Exclude,
    Hold,
}

/// The rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Nothing applies.
    NoObjection,
    /// Legal obligation: an objection made to the controller or Findata is
    /// overridden.
    ExemptLegalObligation,
    /// Legal obligation: an active restriction is overridden (logged).
    RestrictionOverridden,
    /// Public task with a documented derogation: an objection yields.
    Derogation,
    ObjectionToController,
    ObjectionToFindata,
    RestrictionActive,
    DenialOfDisclosure,
    /// Not a decision of the table: the person's only cohort evidence for
    /// the feed is excluded or held, so their other records, which the gate
    /// would let through, are left out with them (DOMAIN §4: excluded
    /// records are not cohort evidence).
    NoUsableCohortEvidence,
}

impl Rule {
    /// The names of the rules under which the gate holds a record (a
    /// mapping's holds have reasons of their own), as they stand in the
    /// held rows. Only a restriction holds; its end can come with time
    /// alone. A person whose only cohort evidence is held is found through
    /// that evidence's hold.
    pub const HOLDING: &'static [&'static str] = &["restriction_active"];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoObjection => "no_objection",
            Rule::ExemptLegalObligation => "exempt_legal_obligation",
            Rule::RestrictionOverridden => "restriction_overridden",
            Rule::Derogation => "derogation",
            Rule::ObjectionToController => "objection_to_controller",
            Rule::ObjectionToFindata => "objection_to_findata",
            Rule::RestrictionActive => "restriction_active",
            Rule::DenialOfDisclosure => "denial_of_disclosure",
            Rule::NoUsableCohortEvidence => "no_usable_cohort_evidence",
        }
    }

    /// Whether the person leaves the feed because of an objection: such a
    /// departure sends no retractions (disclosed data is not recalled).
    pub fn is_objection(self) -> bool {
        matches!(self, Rule::ObjectionToController | Rule::ObjectionToFindata)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub rule: Rule,
    /// What the audit says: `exempt: <statute>`, `derogation: <reference>`,
    /// or the legal basis the row went out under.
    pub basis: String,
}

impl Decision {
    pub fn delivers(&self) -> bool {
        matches!(self.outcome, Outcome::Include | Outcome::Exempt)
    }
}

fn art6_str(a: Art6) -> &'static str {
    match a {
        Art6::LegalObligation => "6.1.c",
        Art6::PublicTask => "6.1.e",
    }
}

/// The decision table of DOMAIN.md §4 for one record of `person` in `feed`,
/// evaluated at `at`.
pub fn decide(
    feed: &FeedPolicy,
    person: &PersonPolicy,
    rec: &RecordContext<'_>,
    at: DateTime<Utc>,
) -> Decision {
    let active = person
        .objections
        .iter()
        .filter(|o| o.active(at) && o.covers(feed.purpose));
    // Which objection binds this record in this feed: one made to the
    // record's controller, or to Findata for a Findata channel. Objections
    // made to another controller never bind.
    let mut to_controller = false;
    let mut to_findata = false;
    for o in active {
        match &o.made_to {
            MadeTo::Controller(c) => to_controller |= rec.controller == Some(c.as_str()),
            MadeTo::Findata => to_findata = true,
        }
    }
    let restricted = person.restrictions.iter().any(|r| {
        r.active(at)
            && r.controller
                .as_deref()
                .is_none_or(|c| rec.controller == Some(c))
    });
    let to_own_controller =
        rec.controller.is_some() && rec.controller == feed.recipient_controller.as_deref();
    let denied = feed.discloses_to_other_controller
        && !to_own_controller
        && person.denials.as_ref().is_some_and(|d| {
            !d.none_valid
                && (rec
                    .service_event
                    .is_some_and(|se| d.service_events.iter().any(|x| x == se))
                    || rec
                        .controller
                        .is_some_and(|c| d.controllers.iter().any(|x| x == c)))
        });
    let lawful = || format!("{}: {}", art6_str(feed.art6), feed.purpose.as_str());

    // Legal obligation with a named statute: objections, restrictions and
    // denials are all ignored; exemptions and overrides are audited.
    if feed.art6 == Art6::LegalObligation
        && let Some(statute) = &feed.statute
    {
        let basis = format!("exempt: {statute}");
        return if to_controller || to_findata {
            Decision {
                outcome: Outcome::Exempt,
                rule: Rule::ExemptLegalObligation,
                basis,
            }
        } else if restricted {
            Decision {
                outcome: Outcome::Include,
                rule: Rule::RestrictionOverridden,
                basis,
            }
        } else {
            Decision {
                outcome: Outcome::Include,
                rule: Rule::NoObjection,
                basis: format!("statute: {statute}"),
            }
        };
    }
    let binding_objection = to_controller || (to_findata && feed.channel == Channel::Findata);
    let objection_rule = if to_controller {
        Rule::ObjectionToController
    } else {
        Rule::ObjectionToFindata
    };
    // Public task with a documented derogation: an objection yields, a
    // restriction holds, a denial excludes where the feed discloses to
    // another controller.
    if let Some(reference) = &feed.derogation {
        return if denied {
            Decision {
                outcome: Outcome::Exclude,
                rule: Rule::DenialOfDisclosure,
                basis: lawful(),
            }
        } else if restricted {
            Decision {
                outcome: Outcome::Hold,
                rule: Rule::RestrictionActive,
                basis: lawful(),
            }
        } else if binding_objection {
            Decision {
                outcome: Outcome::Include,
                rule: Rule::Derogation,
                basis: format!("derogation: {reference}"),
            }
        } else {
            Decision {
                outcome: Outcome::Include,
                rule: Rule::NoObjection,
                basis: lawful(),
            }
        };
    }
    // Everything else: an objection that binds excludes; a denial excludes
    // where the feed discloses to another controller; a restriction holds.
    if binding_objection {
        Decision {
            outcome: Outcome::Exclude,
            rule: objection_rule,
            basis: lawful(),
        }
    } else if denied {
        Decision {
            outcome: Outcome::Exclude,
            rule: Rule::DenialOfDisclosure,
            basis: lawful(),
        }
    } else if restricted {
        Decision {
            outcome: Outcome::Hold,
            rule: Rule::RestrictionActive,
            basis: lawful(),
        }
    } else {
        Decision {
            outcome: Outcome::Include,
            rule: Rule::NoObjection,
            basis: lawful(),
        }
    }
}

pub mod import;

#[cfg(test)]
mod tests;
