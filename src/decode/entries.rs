//! One captured `entry` → records, by what each clinical statement is and
//! the code system of its coded meaning (DOMAIN.md §2), never by section
//! titles or view codes.
//!
//! Rules where the domain leaves a choice:
//! - Containers: an `organizer` yields its components' statements; an `act`
//!   (a concern) yields the statements of its `SUBJ` entryRelationships; an
//!   `encounter` yields those of the acts in its entryRelationships (encounter
//!   diagnoses). Statements nested in an observation's, a
//!   substanceAdministration's or a procedure's entryRelationship only
//!   qualify their parent.
//! - Diagnosis: an `observation` with a coded `value` (CD/CE/CV/CO) whose
//!   `code` marks it as a diagnosis (Kanta's view-166 field system
//!   `1.2.246.537.6.12.2002.166`; SNOMED 55607006, 282291009, 64572001; LOINC
//!   29308-4), or which carries the C-CDA problem-observation template, or
//!   whose value is in a diagnosis system (ICD-10 FI/WHO/CM, ICPC-2,
//!   ICD-9-CM).
//! - Lab result / measurement: any other `observation` whose test is a code
//!   and whose value is a result type, except assertions (`code` in HL7
//!   ActCode, e.g. allergies) and C-CDA social-history / allergy templates.
//!   It is a measurement when the test is LOINC and either the observation
//!   sits in a vital-signs organizer, carries the vital-sign observation
//!   template, or its code is in [`VITAL_SIGN_LOINC`]; otherwise a lab
//!   result (so HbA1c 4548-4 is a lab result).
//! - Medication: in a Prescription Centre document, a medication event of
//!   the document's message type; elsewhere a vaccination when the product
//!   is ATC J07*, CVX, or the statement carries the immunisation-activity
//!   template or sits in an immunisation section; any other product is an
//!   administration (moodCode EVN) or a statement (any other mood).

use super::cda::{code_of, code_ref};
use super::tree::Node;
use crate::codes::{self, CodeSystems};
use crate::record::{
    Code, Comparator, Diagnosis, Effective, Medication, MedicationEvent, ObsValue, Observation,
    Procedure, Quantity, Record, RecordBody, Ts, Vaccination,
};

pub(crate) struct Ctx<'c> {
    pub codes: &'c CodeSystems,
    /// The Prescription Centre event of the document, when it is one.
    pub pc_event: Option<MedicationEvent>,
    /// For an invalidation: the dispensing document it voids.
    pub invalidates: Option<&'c str>,
    pub immunization_section: bool,
}

/// LOINC codes of vital signs and physiological measurements.
pub(crate) const VITAL_SIGN_LOINC: &[&str] = &[
    "8480-6", "8462-4", "8478-0", "55284-4", "85354-9", "35094-2", "8867-4", "9279-1", "8310-5",
    "2708-6", "59408-5", "29463-7", "3141-9", "8302-2", "8306-3", "8308-9", "39156-5", "8287-5",
    "9843-4", "8280-0", "3140-1", "56086-2",
];

const DIAGNOSIS_SYSTEMS: &[&str] = &[
    codes::ICD10_FI,
    codes::ICD10_WHO,
    codes::ICD10_CM,
    codes::ICPC2,
    codes::ICD9_CM,
];
const KANTA_DIAGNOSIS_FIELD: &str = "1.2.246.537.6.12.2002.166";
const PROBLEM_OBSERVATION: &str = "2.16.840.1.113883.10.20.22.4.4";
const PROBLEM_STATUS: &str = "2.16.840.1.113883.10.20.22.4.6";
const VITAL_SIGNS_ORGANIZER: &str = "2.16.840.1.113883.10.20.22.4.26";
const VITAL_SIGN_OBSERVATION: &str = "2.16.840.1.113883.10.20.22.4.27";
const IMMUNIZATION_ACTIVITY: &str = "2.16.840.1.113883.10.20.22.4.52";
const ACT_CODE: &str = "2.16.840.1.113883.5.4";
/// Allergy, social history, smoking status, tobacco use: not results.
const NOT_RESULT_TEMPLATES: &[&str] = &[
    "2.16.840.1.113883.10.20.22.4.7",
    "2.16.840.1.113883.10.20.22.4.38",
    "2.16.840.1.113883.10.20.22.4.78",
    "2.16.840.1.113883.10.20.22.4.85",
];

fn is_diagnosis_marker(c: &Code) -> bool {
    c.system == KANTA_DIAGNOSIS_FIELD
        || (c.system == codes::SNOMED_CT
            && matches!(c.code.as_str(), "55607006" | "282291009" | "64572001"))
        || (c.system == codes::LOINC && c.code == "29308-4")
}

fn negated(n: &Node) -> bool {
    n.attr("negationInd") == Some("true")
}

/// Records of one `entry`, appended in document order (ordinals are set
/// when the document is complete).
pub(crate) fn records_of_entry(entry: &Node, ctx: &Ctx<'_>, out: &mut Vec<Record>) {
    for s in &entry.children {
        statement(s, ctx, false, None, out);
    }
}

fn push(out: &mut Vec<Record>, effective: Option<Effective>, body: RecordBody) {
    out.push(Record {
        ordinal: 0,
        effective,
        body,
    });
}

fn statement(
    n: &Node,
    ctx: &Ctx<'_>,
    in_vitals: bool,
    inherited: Option<&Effective>,
    out: &mut Vec<Record>,
) {
    match n.el.local {
        _ if n.el.ns != super::xml::Ns::V3 => {}
        "observation" => observation(n, ctx, in_vitals, inherited, out),
        "substanceAdministration" => substance(n, ctx, out),
        "procedure" => procedure(n, ctx, out),
        "organizer" => {
            let vitals = in_vitals || n.has_template(VITAL_SIGNS_ORGANIZER);
            let eff = effective_of(n.child("effectiveTime"));
            for c in n.all("component") {
                for s in &c.children {
                    statement(s, ctx, vitals, eff.as_ref().or(inherited), out);
                }
            }
        }
        "act" => {
            for er in n
                .all("entryRelationship")
                .filter(|e| e.attr("typeCode") == Some("SUBJ"))
            {
                for s in &er.children {
                    statement(s, ctx, in_vitals, None, out);
                }
            }
        }
        "encounter" => {
            for er in n.all("entryRelationship") {
                for s in er.all("act") {
                    statement(s, ctx, in_vitals, None, out);
                }
            }
        }
        _ => {}
    }
}

/// `effectiveTime` (or `low`/`high`) → a point or an interval; periodic
/// times (PIVL_TS, EIVL_TS) are not an effective time.
fn effective_of(t: Option<&Node>) -> Option<Effective> {
    let t = t?;
    if matches!(t.el.xsi_type(), Some("PIVL_TS" | "EIVL_TS" | "SXPR_TS")) {
        return None;
    }
    if let Some(v) = t.attr("value") {
        return Some(Effective::Point(Ts(v.to_owned())));
    }
    let bound = |name: &str| {
        t.child(name)
            .and_then(|b| b.attr("value"))
            .map(|v| Ts(v.to_owned()))
    };
    let (low, high) = (bound("low"), bound("high"));
    if low.is_none() && high.is_none() {
        return None;
    }
    Some(Effective::Interval { low, high })
}

/// The coded meaning of `n` (a `code` or `value`): itself when coded, else
/// its first coded translation; plus the remaining translations.
fn coded_with_translations(n: &Node, codes: &CodeSystems) -> Option<(Code, Vec<Code>)> {
    let mut translations: Vec<Code> = n
        .all("translation")
        .filter_map(|t| code_of(t, codes))
        .collect();
    let primary = match code_of(n, codes) {
        Some(c) => c,
        None if !translations.is_empty() => translations.remove(0),
        None => return None,
    };
    Some((primary, translations))
}

fn is_coded_type(v: &Node) -> bool {
    match v.el.xsi_type() {
        Some(t) => matches!(t, "CD" | "CE" | "CV" | "CO" | "CS"),
        None => v.attr("code").is_some(),
    }
}

fn observation(
    n: &Node,
    ctx: &Ctx<'_>,
    in_vitals: bool,
    inherited: Option<&Effective>,
    out: &mut Vec<Record>,
) {
    let codes = ctx.codes;
    let effective = effective_of(n.child("effectiveTime")).or_else(|| inherited.cloned());
    let test = n
        .child("code")
        .and_then(|c| coded_with_translations(c, codes));
    let value = n.child("value");
    if let Some(value) = value
        && is_coded_type(value)
        && let Some((vcode, translations)) = coded_with_translations(value, codes)
    {
        let marked = test.as_ref().is_some_and(|(c, _)| is_diagnosis_marker(c))
            || n.has_template(PROBLEM_OBSERVATION)
            || DIAGNOSIS_SYSTEMS.contains(&vcode.system.as_str());
        if marked {
            push(
                out,
                effective,
                RecordBody::Diagnosis(diagnosis(n, vcode, translations, codes)),
            );
            return;
        }
    }
    let Some((test, translations)) = test else {
        return;
    };
    if test.system == ACT_CODE || NOT_RESULT_TEMPLATES.iter().any(|t| n.has_template(t)) {
        return;
    }
    // An observation with a test and no value (an exam recorded as done)
    // is a record too: a mapping may select it.
    let (value, value_raw, unit) = result_value(value, codes);
    let measurement = test.system == codes::LOINC
        && (in_vitals
            || n.has_template(VITAL_SIGN_OBSERVATION)
            || VITAL_SIGN_LOINC.contains(&test.code.as_str()));
    let obs = Observation {
        system: test.system,
        code: test.code,
        system_raw: test.system_raw,
        translations,
        value,
        value_raw,
        unit,
        status: n
            .child("statusCode")
            .and_then(|s| s.attr("code"))
            .map(str::to_owned),
        interpretation: n
            .child("interpretationCode")
            .and_then(|s| s.attr("code"))
            .map(str::to_owned),
        negated: negated(n),
    };
    let body = if measurement {
        RecordBody::Measurement(obs)
    } else {
        RecordBody::LabResult(obs)
    };
    push(out, effective, body);
}

fn diagnosis(n: &Node, v: Code, translations: Vec<Code>, codes: &CodeSystems) -> Diagnosis {
    let mut d = Diagnosis {
        system: v.system,
        system_raw: v.system_raw,
        translations,
        negated: negated(n),
        ..Diagnosis::default()
    };
    let decorated = matches!(d.system.as_str(), codes::ICD10_FI | codes::ICD10_WHO)
        && v.code.contains(['+', '&', '#']);
    if decorated {
        split_decorated(&v.code, &mut d);
        d.code_raw = Some(v.code);
    } else {
        d.code = v.code;
    }
    n.for_each_descendant(&mut |q| {
        let Some((system, code, _)) = code_ref(q, codes) else {
            return;
        };
        match system {
            codes::DIAGNOSIS_PRIMACY => d.primacy = Some(code.to_owned()),
            codes::DIAGNOSIS_PERMANENCE => d.permanence = Some(code.to_owned()),
            _ => {}
        }
    });
    d.status = n
        .all("entryRelationship")
        .flat_map(|er| er.all("observation"))
        .find(|o| {
            o.has_template(PROBLEM_STATUS)
                || o.child("code").and_then(|c| c.attr("code")) == Some("33999-4")
        })
        .and_then(|o| o.child("value"))
        .and_then(|v| v.attr("code"))
        .map(str::to_owned);
    d
}

/// `E11.3+H36.0`: the reason is the part before `+`, `&` or `#`; after `+`
/// the symptom code (its trailing `*` dropped), after `#` an ATC code,
/// after `&` an additional code.
fn split_decorated(raw: &str, d: &mut Diagnosis) {
    let first = raw.find(['+', '&', '#']).unwrap_or(raw.len());
    d.code = raw[..first].trim().to_owned();
    let mut rest = &raw[first..];
    while let Some(sep) = rest.chars().next() {
        let body = &rest[1..];
        let end = body.find(['+', '&', '#']).unwrap_or(body.len());
        let part = body[..end].trim();
        if !part.is_empty() {
            match sep {
                '+' => d.symptom_code = Some(part.trim_end_matches('*').to_owned()),
                '#' => d.cause_atc = Some(part.to_owned()),
                _ => d.additional_code = Some(part.to_owned()),
            }
        }
        rest = &body[end..];
    }
}

fn number(s: &str) -> Option<f64> {
    super::number::plain(s)
}

/// (value, value as written, unit as written). The value is `None` when
/// the observation states none (no `value`, a null flavour) or when what is
/// written is not a value we read: then the text as written is kept, so
/// the mapping can hold it with a reason rather than drop it.
type Result3 = (Option<ObsValue>, Option<String>, Option<String>);

/// Whether an `originalText` is a unit as laboratories write one
/// (`THOUS/MCL`, `10^3/uL`), not narrative: short, no spaces, only the
/// characters units are written with. Anything else is not kept.
fn looks_like_unit(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= 24
        && s.chars()
            .all(|c| c.is_alphanumeric() || "/*^.%[]{}_-()µμ".contains(c))
}

/// A literal number, possibly with a comparator, as an [`ObsValue`].
fn literal(raw: &str) -> Option<ObsValue> {
    let (cmp, n) = super::number::compared(raw)?;
    Some(match cmp {
        None => ObsValue::Number(n),
        Some(c @ (Comparator::Lt | Comparator::Le)) => ObsValue::Interval {
            comparator: Some(c),
            low: None,
            high: Some(n),
        },
        Some(c) => ObsValue::Interval {
            comparator: Some(c),
            low: Some(n),
            high: None,
        },
    })
}

/// A `value` → (value, value as written, unit as written).
fn result_value(v: Option<&Node>, codes: &CodeSystems) -> Result3 {
    let Some(v) = v else {
        return (None, None, None);
    };
    if v.null_flavored() && v.attr("value").is_none() && v.attr("code").is_none() {
        // A quantity in a unit outside UCUM (C-CDA: nullFlavor OTH) travels
        // in a translation whose originalText names the unit as written.
        if matches!(v.el.xsi_type(), Some("PQ"))
            && v.attr("nullFlavor") == Some("OTH")
            && let Some(t) = v.all("translation").find(|t| t.attr("value").is_some())
            && let Some(raw) = t.attr("value")
        {
            let unit = t
                .child("originalText")
                .map(|o| o.text.trim())
                .filter(|u| looks_like_unit(u))
                .map(str::to_owned);
            return (literal(raw), Some(raw.to_owned()), unit);
        }
        return (None, None, None);
    }
    let unit = v.attr("unit").map(str::to_owned);
    match v.el.xsi_type().unwrap_or("") {
        "PQ" | "INT" | "REAL" | "" => {
            let Some(raw) = v.attr("value") else {
                return (None, None, unit);
            };
            (literal(raw), Some(raw.to_owned()), unit)
        }
        "IVL_PQ" => {
            let low = v.child("low").filter(|b| !b.null_flavored());
            let high = v.child("high").filter(|b| !b.null_flavored());
            let lv = low.and_then(|b| b.attr("value")).and_then(number);
            let hv = high.and_then(|b| b.attr("value")).and_then(number);
            let unit = low
                .and_then(|b| b.attr("unit"))
                .or(high.and_then(|b| b.attr("unit")))
                .map(str::to_owned);
            let inclusive = |b: Option<&Node>| b.and_then(|b| b.attr("inclusive")) != Some("false");
            fn written<'n>(b: Option<&'n Node<'_>>) -> &'n str {
                b.and_then(|b| b.attr("value")).unwrap_or_default()
            }
            let (comparator, raw) = match (lv, hv) {
                (None, Some(_)) if inclusive(high) => {
                    (Some(Comparator::Le), format!("<={}", written(high)))
                }
                (None, Some(_)) => (Some(Comparator::Lt), format!("<{}", written(high))),
                (Some(_), None) if inclusive(low) => {
                    (Some(Comparator::Ge), format!(">={}", written(low)))
                }
                (Some(_), None) => (Some(Comparator::Gt), format!(">{}", written(low))),
                (Some(_), Some(_)) => (None, format!("{}..{}", written(low), written(high))),
                (None, None) => {
                    // Bounds written but not readable: kept as written.
                    let raw = format!("{}..{}", written(low), written(high));
                    return if raw == ".." {
                        (None, None, unit)
                    } else {
                        (None, Some(raw), unit)
                    };
                }
            };
            (
                Some(ObsValue::Interval {
                    comparator,
                    low: lv,
                    high: hv,
                }),
                Some(raw),
                unit,
            )
        }
        "ST" => {
            let t = v.text.trim();
            if t.is_empty() {
                return (None, None, None);
            }
            // A number written as a string (`<5`, `6,5`) is still a number;
            // anything else is a text result, which never travels as such.
            match literal(t) {
                Some(value) => (Some(value), Some(t.to_owned()), unit),
                None => (Some(ObsValue::Text(t.to_owned())), None, None),
            }
        }
        "CD" | "CE" | "CV" | "CO" | "CS" => (
            coded_with_translations(v, codes).map(|(c, _)| ObsValue::Coded(c)),
            None,
            None,
        ),
        "BL" => match v.attr("value") {
            Some("true") => (Some(ObsValue::Boolean(true)), Some("true".into()), None),
            Some("false") => (Some(ObsValue::Boolean(false)), Some("false".into()), None),
            Some(other) => (None, Some(other.to_owned()), None),
            None => (None, None, None),
        },
        // A data type we do not read (RTO, SC, ...): nothing invented, the
        // record stays with no value and the mapping decides.
        _ => (None, None, unit),
    }
}

/// The product code of a substanceAdministration, with translations.
fn product(n: &Node, codes: &CodeSystems) -> Option<(Code, Vec<Code>)> {
    let mp = n.path(&["consumable", "manufacturedProduct"])?;
    let holder = mp
        .child("manufacturedLabeledDrug")
        .or_else(|| mp.child("manufacturedMaterial"))?;
    coded_with_translations(holder.child("code")?, codes)
}

/// Package (VNR) and quantity from a `supply` in an entryRelationship.
fn supply_of(n: &Node, codes: &CodeSystems) -> (Option<String>, Option<Quantity>) {
    let mut package = None;
    let mut quantity = None;
    for s in n.all("entryRelationship").flat_map(|er| er.all("supply")) {
        if package.is_none() {
            package = s
                .path(&["product", "manufacturedProduct"])
                .and_then(|mp| {
                    mp.child("manufacturedLabeledDrug")
                        .or_else(|| mp.child("manufacturedMaterial"))
                })
                .and_then(|d| d.child("code"))
                .and_then(|c| code_of(c, codes))
                .filter(|c| c.system == codes::VNR)
                .map(|c| c.code);
        }
        if quantity.is_none() {
            quantity = s.child("quantity").and_then(|q| {
                Some(Quantity {
                    value: number(q.attr("value")?)?,
                    unit: q.attr("unit").map(str::to_owned),
                })
            });
        }
    }
    (package, quantity)
}

fn substance(n: &Node, ctx: &Ctx<'_>, out: &mut Vec<Record>) {
    let codes = ctx.codes;
    let Some((code, translations)) = product(n, codes) else {
        return;
    };
    let effective = n.all("effectiveTime").find_map(|t| effective_of(Some(t)));
    let (package, quantity) = supply_of(n, codes);
    let vaccine = (code.system == codes::ATC && code.code.starts_with("J07"))
        || code.system == codes::CVX
        || n.has_template(IMMUNIZATION_ACTIVITY)
        || ctx.immunization_section;
    let event = match ctx.pc_event {
        Some(e) => e,
        None if vaccine => {
            let vac = Vaccination {
                system: code.system,
                code: code.code,
                system_raw: code.system_raw,
                translations,
                package,
                site: n.child("approachSiteCode").and_then(|c| code_of(c, codes)),
                route: n.child("routeCode").and_then(|c| code_of(c, codes)),
                negated: negated(n),
            };
            push(out, effective, RecordBody::Vaccination(vac));
            return;
        }
        None if n.attr("moodCode") == Some("EVN") => MedicationEvent::Administration,
        None => MedicationEvent::Statement,
    };
    let invalidates = (event == MedicationEvent::DispensingInvalidation)
        .then(|| ctx.invalidates.map(str::to_owned))
        .flatten();
    let med = Medication {
        event,
        system: code.system,
        code: code.code,
        system_raw: code.system_raw,
        translations,
        package,
        quantity,
        invalidates,
        negated: negated(n),
    };
    push(out, effective, RecordBody::Medication(med));
}

fn procedure(n: &Node, ctx: &Ctx<'_>, out: &mut Vec<Record>) {
    let Some((code, translations)) = n
        .child("code")
        .and_then(|c| coded_with_translations(c, ctx.codes))
    else {
        return;
    };
    let p = Procedure {
        system: code.system,
        code: code.code,
        system_raw: code.system_raw,
        translations,
        negated: negated(n),
    };
    push(
        out,
        effective_of(n.child("effectiveTime")),
        RecordBody::Procedure(p),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decorated_codes_split_before_stripping() {
        let mut d = Diagnosis::default();
        split_decorated("E11.3+H36.0*", &mut d);
        assert_eq!(d.code, "E11.3");
        assert_eq!(d.symptom_code.as_deref(), Some("H36.0"));
        let mut d = Diagnosis::default();
        split_decorated("T88.7#N02BE01&Y57", &mut d);
        assert_eq!(d.code, "T88.7");
        assert_eq!(d.cause_atc.as_deref(), Some("N02BE01"));
        assert_eq!(d.additional_code.as_deref(), Some("Y57"));
    }

    #[test]
    fn literals_keep_their_comparator() {
        assert_eq!(
            literal("<5"),
            Some(ObsValue::Interval {
                comparator: Some(Comparator::Lt),
                low: None,
                high: Some(5.0)
            })
        );
        assert_eq!(
            literal("≥ 7,5"),
            Some(ObsValue::Interval {
                comparator: Some(Comparator::Ge),
                low: Some(7.5),
                high: None
            })
        );
        assert_eq!(literal("6,5"), Some(ObsValue::Number(6.5)));
        assert_eq!(literal("pos"), None);
        assert!(looks_like_unit("THOUS/MCL"));
        assert!(looks_like_unit("10^3/uL"));
        assert!(!looks_like_unit("Aino Testinen"));
        assert!(!looks_like_unit("see the comment in the lab report"));
        assert!(number("NaN").is_none());
    }
}
