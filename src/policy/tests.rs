//! Table-driven tests: every cell of DOMAIN.md §4's two tables, and the
//! edges (effective exactly now, withdrawn, restriction ended, denials by
//! service event, a snapshot with no valid denials, purposes).

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;

const HERE: &str = "pirkanmaa";
const OTHER: &str = "uusimaa";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("time")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// 6.1.c with a statute.
    Exempt,
    /// 6.1.e with a derogation reference.
    Derogation,
    /// 6.1.e, no derogation, direct.
    Direct,
    /// 6.1.e, no derogation, through Findata.
    Findata,
}

fn feed(kind: Kind, discloses: bool) -> FeedPolicy {
    let (art6, statute, derogation, channel, purpose) = match kind {
        Kind::Exempt => (
            Art6::LegalObligation,
            Some("THL Act 668/2008 §5".to_owned()),
            None,
            Channel::Direct,
            Purpose::Statistics,
        ),
        Kind::Derogation => (
            Art6::PublicTask,
            None,
            Some("DPIA 2026/17".to_owned()),
            Channel::Findata,
            Purpose::ScientificResearch,
        ),
        Kind::Direct => (
            Art6::PublicTask,
            None,
            None,
            Channel::Direct,
            Purpose::Statistics,
        ),
        Kind::Findata => (
            Art6::PublicTask,
            None,
            None,
            Channel::Findata,
            Purpose::ScientificResearch,
        ),
    };
    FeedPolicy {
        purpose,
        art6,
        statute,
        derogation,
        channel,
        discloses_to_other_controller: discloses,
        recipient_controller: None,
    }
}

fn objection(to: MadeTo) -> Objection {
    Objection {
        made_to: to,
        purposes: None,
        effective_from: t0() - Duration::days(30),
        withdrawn: None,
    }
}

fn rec() -> RecordContext<'static> {
    RecordContext {
        controller: Some(HERE),
        service_event: Some("1.2.246.10.32213086.14011.2026.1"),
    }
}

fn with_objection(to: MadeTo) -> PersonPolicy {
    PersonPolicy {
        objections: vec![objection(to)],
        ..PersonPolicy::default()
    }
}

#[test]
fn objection_table_every_cell() {
    use Outcome::*;
    // (made to, feed kind, expected outcome, expected rule)
    let cells = [
        (
            MadeTo::Controller(HERE.into()),
            Kind::Direct,
            Exclude,
            Rule::ObjectionToController,
        ),
        (
            MadeTo::Controller(HERE.into()),
            Kind::Findata,
            Exclude,
            Rule::ObjectionToController,
        ),
        (
            MadeTo::Controller(HERE.into()),
            Kind::Exempt,
            Exempt,
            Rule::ExemptLegalObligation,
        ),
        (
            MadeTo::Controller(OTHER.into()),
            Kind::Direct,
            Include,
            Rule::NoObjection,
        ),
        (
            MadeTo::Controller(OTHER.into()),
            Kind::Findata,
            Include,
            Rule::NoObjection,
        ),
        (
            MadeTo::Controller(OTHER.into()),
            Kind::Exempt,
            Include,
            Rule::NoObjection,
        ),
        (MadeTo::Findata, Kind::Direct, Include, Rule::NoObjection),
        (
            MadeTo::Findata,
            Kind::Findata,
            Exclude,
            Rule::ObjectionToFindata,
        ),
        (
            MadeTo::Findata,
            Kind::Exempt,
            Exempt,
            Rule::ExemptLegalObligation,
        ),
    ];
    for (to, kind, outcome, rule) in cells {
        let d = decide(
            &feed(kind, false),
            &with_objection(to.clone()),
            &rec(),
            t0(),
        );
        assert_eq!((d.outcome, d.rule), (outcome, rule), "{to:?} × {kind:?}");
        if outcome == Exempt {
            assert_eq!(d.basis, "exempt: THL Act 668/2008 §5");
        }
    }
}

#[test]
fn legal_obligation_ignores_objections_restrictions_and_denials() {
    let p = PersonPolicy {
        restrictions: vec![Restriction {
            controller: None,
            start: t0() - Duration::days(1),
            end: None,
        }],
        denials: Some(Denials {
            none_valid: false,
            service_events: vec![rec().service_event.expect("se").into()],
            controllers: vec![HERE.into()],
        }),
        ..PersonPolicy::default()
    };
    let d = decide(&feed(Kind::Exempt, true), &p, &rec(), t0());
    assert_eq!(d.outcome, Outcome::Include);
    assert_eq!(
        d.rule,
        Rule::RestrictionOverridden,
        "the override is logged"
    );
    assert_eq!(d.basis, "exempt: THL Act 668/2008 §5");
}

#[test]
fn derogation_row() {
    // Objection ignored, audited as a derogation.
    let d = decide(
        &feed(Kind::Derogation, true),
        &with_objection(MadeTo::Controller(HERE.into())),
        &rec(),
        t0(),
    );
    assert_eq!((d.outcome, d.rule), (Outcome::Include, Rule::Derogation));
    assert_eq!(d.basis, "derogation: DPIA 2026/17");
    // Restriction holds.
    let restricted = PersonPolicy {
        restrictions: vec![Restriction {
            controller: Some(HERE.into()),
            start: t0() - Duration::days(1),
            end: None,
        }],
        ..PersonPolicy::default()
    };
    let d = decide(&feed(Kind::Derogation, true), &restricted, &rec(), t0());
    assert_eq!(
        (d.outcome, d.rule),
        (Outcome::Hold, Rule::RestrictionActive)
    );
    // Denial per feed setting.
    let denied = PersonPolicy {
        denials: Some(Denials {
            service_events: vec![rec().service_event.expect("se").into()],
            ..Denials::default()
        }),
        ..PersonPolicy::default()
    };
    let d = decide(&feed(Kind::Derogation, true), &denied, &rec(), t0());
    assert_eq!(
        (d.outcome, d.rule),
        (Outcome::Exclude, Rule::DenialOfDisclosure)
    );
    let d = decide(&feed(Kind::Derogation, false), &denied, &rec(), t0());
    assert_eq!(
        d.outcome,
        Outcome::Include,
        "a feed within the controller ignores denials"
    );
}

#[test]
fn no_derogation_row() {
    for kind in [Kind::Direct, Kind::Findata] {
        let d = decide(
            &feed(kind, true),
            &with_objection(MadeTo::Controller(HERE.into())),
            &rec(),
            t0(),
        );
        assert_eq!(d.outcome, Outcome::Exclude, "{kind:?}");
        let restricted = PersonPolicy {
            restrictions: vec![Restriction {
                controller: None,
                start: t0(),
                end: Some(t0() + Duration::days(1)),
            }],
            ..PersonPolicy::default()
        };
        let d = decide(&feed(kind, true), &restricted, &rec(), t0());
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Hold, Rule::RestrictionActive),
            "{kind:?}"
        );
    }
}

#[test]
fn an_objection_counts_from_its_effective_time_exactly() {
    let f = feed(Kind::Direct, false);
    let mut p = with_objection(MadeTo::Controller(HERE.into()));
    // Effective exactly at the moment of staging or sealing: it applies.
    p.objections[0].effective_from = t0();
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Exclude);
    // One second later: not yet.
    p.objections[0].effective_from = t0() + Duration::seconds(1);
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Include);
    // The record's own date plays no part: decide() takes none.
}

#[test]
fn a_withdrawn_objection_no_longer_applies() {
    let f = feed(Kind::Direct, false);
    let mut p = with_objection(MadeTo::Controller(HERE.into()));
    p.objections[0].withdrawn = Some(t0());
    assert_eq!(
        decide(&f, &p, &rec(), t0()).outcome,
        Outcome::Include,
        "withdrawn at t0"
    );
    p.objections[0].withdrawn = Some(t0() + Duration::seconds(1));
    assert_eq!(
        decide(&f, &p, &rec(), t0()).outcome,
        Outcome::Exclude,
        "withdrawn later"
    );
}

#[test]
fn an_objection_for_other_purposes_does_not_apply() {
    let f = feed(Kind::Findata, false);
    let mut p = with_objection(MadeTo::Findata);
    p.objections[0].purposes = Some(vec![Purpose::Education]);
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Include);
    p.objections[0].purposes = Some(vec![Purpose::Education, Purpose::ScientificResearch]);
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Exclude);
}

#[test]
fn an_ended_restriction_releases_the_hold() {
    let f = feed(Kind::Direct, false);
    let p = PersonPolicy {
        restrictions: vec![Restriction {
            controller: None,
            start: t0() - Duration::days(10),
            end: Some(t0()),
        }],
        ..PersonPolicy::default()
    };
    assert_eq!(
        decide(&f, &p, &rec(), t0()).outcome,
        Outcome::Include,
        "ended at t0"
    );
    assert_eq!(
        decide(&f, &p, &rec(), t0() - Duration::seconds(1)).outcome,
        Outcome::Hold,
        "still in force just before"
    );
}

#[test]
fn a_denial_covers_one_service_event_but_not_another() {
    let f = feed(Kind::Direct, true);
    let p = PersonPolicy {
        denials: Some(Denials {
            service_events: vec!["1.2.246.10.32213086.14011.2026.1".into()],
            ..Denials::default()
        }),
        ..PersonPolicy::default()
    };
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Exclude);
    let other = RecordContext {
        controller: Some(HERE),
        service_event: Some("1.2.246.10.32213086.14011.2026.2"),
    };
    assert_eq!(decide(&f, &p, &other, t0()).outcome, Outcome::Include);
    // A provider denial covers all of that controller's records.
    let by_provider = PersonPolicy {
        denials: Some(Denials {
            controllers: vec![HERE.into()],
            ..Denials::default()
        }),
        ..PersonPolicy::default()
    };
    assert_eq!(
        decide(&f, &by_provider, &other, t0()).outcome,
        Outcome::Exclude
    );
    // Within the controller's own register, denials do not restrict use.
    assert_eq!(
        decide(&feed(Kind::Direct, false), &p, &rec(), t0()).outcome,
        Outcome::Include
    );
}

#[test]
fn a_snapshot_with_no_valid_denials_lifts_them_all() {
    let f = feed(Kind::Direct, true);
    let p = PersonPolicy {
        denials: Some(Denials {
            none_valid: true,
            service_events: Vec::new(),
            controllers: Vec::new(),
        }),
        ..PersonPolicy::default()
    };
    assert_eq!(decide(&f, &p, &rec(), t0()).outcome, Outcome::Include);
}

#[test]
fn an_objection_outranks_a_restriction_and_is_the_rule_named() {
    let f = feed(Kind::Direct, false);
    let mut p = with_objection(MadeTo::Controller(HERE.into()));
    p.restrictions.push(Restriction {
        controller: None,
        start: t0() - Duration::days(1),
        end: None,
    });
    let d = decide(&f, &p, &rec(), t0());
    assert_eq!(d.rule, Rule::ObjectionToController);
    assert!(
        d.rule.is_objection(),
        "leaving by objection sends no retractions"
    );
}

#[test]
fn a_denial_does_not_apply_to_records_of_the_feeds_recipient_controller() {
    let denied = PersonPolicy {
        denials: Some(Denials {
            controllers: vec![HERE.into(), OTHER.into()],
            ..Denials::default()
        }),
        ..PersonPolicy::default()
    };
    let mut f = feed(Kind::Direct, true);
    f.recipient_controller = Some(HERE.into());
    // The recipient's own records: use within the same controller.
    let d = decide(&f, &denied, &rec(), t0());
    assert_eq!((d.outcome, d.rule), (Outcome::Include, Rule::NoObjection));
    // Another controller's records are still disclosed to the recipient.
    let other = RecordContext {
        controller: Some(OTHER),
        service_event: None,
    };
    let d = decide(&f, &denied, &other, t0());
    assert_eq!(
        (d.outcome, d.rule),
        (Outcome::Exclude, Rule::DenialOfDisclosure)
    );
    // An objection to the recipient controller still binds: only denials
    // of disclosure are about another controller.
    let objecting = PersonPolicy {
        objections: vec![objection(MadeTo::Controller(HERE.into()))],
        ..denied.clone()
    };
    let d = decide(&f, &objecting, &rec(), t0());
    assert_eq!(
        (d.outcome, d.rule),
        (Outcome::Exclude, Rule::ObjectionToController)
    );
}

/// Every rule under which `decide` holds a record, over every feed kind and
/// every combination of objection, restriction and denial, is one a run
/// re-reads each time (`Rule::HOLDING`): a rule that held but was missing
/// there would keep its records held until the person's next document.
#[test]
fn every_rule_that_holds_is_listed_for_the_runs_re_evaluation() {
    let mut holding = std::collections::BTreeSet::new();
    for kind in [Kind::Exempt, Kind::Derogation, Kind::Direct, Kind::Findata] {
        for discloses in [false, true] {
            for objection_to in [
                None,
                Some(MadeTo::Controller(HERE.into())),
                Some(MadeTo::Findata),
            ] {
                for restricted in [false, true] {
                    for denied in [false, true] {
                        let person = PersonPolicy {
                            objections: objection_to.clone().map(objection).into_iter().collect(),
                            restrictions: if restricted {
                                vec![Restriction {
                                    controller: None,
                                    start: t0() - Duration::days(1),
                                    end: None,
                                }]
                            } else {
                                Vec::new()
                            },
                            denials: denied.then(|| Denials {
                                none_valid: false,
                                service_events: Vec::new(),
                                controllers: vec![HERE.into()],
                            }),
                            ..PersonPolicy::default()
                        };
                        let d = decide(&feed(kind, discloses), &person, &rec(), t0());
                        if d.outcome == Outcome::Hold {
                            holding.insert(d.rule.as_str());
                        }
                    }
                }
            }
        }
    }
    let listed: std::collections::BTreeSet<&str> = Rule::HOLDING.iter().copied().collect();
    assert_eq!(holding, listed);
}
