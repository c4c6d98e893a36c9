//! Renders one planned document version as a CDA R2 document in our Kanta
//! profile (the shapes of `shared/data/fixtures/` and of the real prohibition
//! document). Pure: plan in, bytes out; it decides nothing.

use std::fmt::Write as _;

use chrono::NaiveDateTime;

use crate::codes;

use super::plan::{Doc, DocCode, Entry, ORGS, PatientId, Person, Prohibition, Sex};

/// `YYYYMMDDhhmmss`.
pub fn ts(t: NaiveDateTime) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// Escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

const ORG_NAME_KELA: &str = "Kansaneläkelaitos";

/// Writes `doc` of `person` into `out` (cleared first).
pub fn render(person: &Person, doc: &Doc, out: &mut String) {
    out.clear();
    let hl7fi = doc.prefixed_header || doc.prohibition.is_some();
    // `write!` into a String cannot fail.
    let w = out;
    w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#);
    if hl7fi {
        w.push_str(r#" xmlns:hl7fi="urn:hl7finland""#);
    }
    w.push_str(r#"><realmCode code="FI"/><typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/><templateId root="1.2.246.777.11.2023.1"/>"#);
    let eff = ts(doc.effective);
    let (code, system, title) = match doc.code {
        DocCode::Register(c) => (
            c,
            format!("{}.2009", codes::REGISTER_CODE),
            if c == "12" {
                "Kieltoasiakirja"
            } else {
                "Asiakirja"
            },
        ),
        DocCode::Prescription(t) => (
            t.code(),
            format!("{}.2006", codes::PRESCRIPTION_CENTRE_MESSAGE_TYPE),
            "Lääkemääräys",
        ),
    };
    let _ = write!(
        w,
        r#"<id root="{id}"/><code code="{code}" codeSystem="{system}"/><title>{title}</title><effectiveTime value="{eff}"/><confidentialityCode code="5" codeSystem="1.2.246.777.5.99902.2006"/><languageCode code="fi"/><setId root="{set}"/><versionNumber value="{v}"/>"#,
        id = doc.id,
        set = doc.set_id,
        v = doc.version,
    );
    let (root, ext) = match &doc.patient {
        PatientId::Hetu => (codes::HETU.to_owned(), person.hetu.clone()),
        PatientId::Temporary { root, extension } => (root.clone(), extension.clone()),
    };
    let sex = match person.sex {
        Sex::Male => "1",
        Sex::Female => "2",
    };
    let _ = write!(
        w,
        r#"<recordTarget><patientRole><id root="{root}" extension="{ext}"/><patient><name><given>{g}</given><family>{f}</family></name><administrativeGenderCode code="{sex}" codeSystem="{sexsys}.1997"/><birthTime value="{birth}"/></patient></patientRole></recordTarget>"#,
        g = esc(person.given),
        f = esc(person.family),
        sexsys = codes::SEX,
        birth = person.birth.format("%Y%m%d"),
    );
    if doc.prohibition.is_some() {
        w.push_str(r#"<author nullFlavor="NA"><time nullFlavor="NA"/><assignedAuthor><id nullFlavor="NA"/></assignedAuthor></author>"#);
    } else {
        let _ = write!(
            w,
            r#"<author><time value="{eff}"/><assignedAuthor><id root="1.2.246.537.26" extension="99001"/></assignedAuthor></author>"#
        );
    }
    let custodian_name = doc.org.map_or(ORG_NAME_KELA, |i| ORGS[i].name);
    let _ = write!(
        w,
        r#"<custodian><assignedCustodian><representedCustodianOrganization><id root="{}"/><name>{}</name></representedCustodianOrganization></assignedCustodian></custodian>"#,
        doc.controller(),
        esc(custodian_name)
    );
    for (kind, r) in [("RPLC", &doc.replaces), ("APND", &doc.appends)] {
        if let Some(r) = r {
            let _ = write!(
                w,
                r#"<relatedDocument typeCode="{kind}"><parentDocument><id root="{}"/><setId root="{}"/><versionNumber value="{}"/></parentDocument></relatedDocument>"#,
                r.id, r.set_id, r.version
            );
        }
    }
    match &doc.service_event {
        Some(se) => {
            let _ = write!(
                w,
                r#"<componentOf><encompassingEncounter><id root="{se}"/><effectiveTime value="{eff}"/></encompassingEncounter></componentOf>"#
            );
        }
        None => w.push_str(
            r#"<componentOf><encompassingEncounter><effectiveTime nullFlavor="NA"/></encompassingEncounter></componentOf>"#,
        ),
    }
    local_header(doc, hl7fi, w);
    let _ = write!(
        w,
        r#"<component><structuredBody><component><section><code code="{view}" codeSystem="{views}"/><title>Merkintä</title><text>{name}: vapaa teksti, jota rekisteri ei saa.</text>"#,
        view = doc.view,
        views = codes::VIEWS,
        name = esc(&person.full_name()),
    );
    if let Some(p) = &doc.prohibition {
        prohibition_fields(person, p, doc, w);
    }
    for e in &doc.entries {
        entry(e, w);
    }
    w.push_str("</section></component></structuredBody></component></ClinicalDocument>");
}

fn local_header(doc: &Doc, hl7fi: bool, w: &mut String) {
    let p = if hl7fi { "hl7fi:" } else { "" };
    if hl7fi {
        w.push_str("<hl7fi:localHeader>");
    } else {
        w.push_str(r#"<localHeader xmlns="urn:hl7finland">"#);
    }
    let _ = write!(
        w,
        r#"<{p}tableOfContents><{p}contentsCode code="{}" codeSystem="{}"/></{p}tableOfContents><{p}fileFormat code="1" codeSystem="1.2.246.537.5.40179.2008"/>"#,
        doc.view,
        codes::VIEWS
    );
    if let Some(m) = doc.municipality {
        let _ = write!(
            w,
            r#"<{p}patientHomeMunicipality code="{m}" codeSystem="{}.2003"/>"#,
            codes::MUNICIPALITY
        );
    }
    if doc.sensitive {
        let _ = write!(w, "<{p}sensitiveDocument>true</{p}sensitiveDocument>");
    }
    let _ = write!(
        w,
        r#"<{p}recordStatus code="3" codeSystem="{}.2008"/></{p}localHeader>"#,
        codes::RECORD_STATUS
    );
}

fn entry(e: &Entry, w: &mut String) {
    match e {
        Entry::Diagnosis {
            system,
            code,
            negated,
            at,
        } => {
            let neg = if *negated {
                r#" negationInd="true""#
            } else {
                ""
            };
            let _ = write!(
                w,
                r#"<entry><observation classCode="OBS" moodCode="EVN"{neg}><code code="1" codeSystem="{views}.166"/><effectiveTime value="{t}"/><value xsi:type="CV" code="{code}" codeSystem="{system}"/></observation></entry>"#,
                views = codes::VIEWS,
                t = ts(*at),
                code = esc(code),
            );
        }
        Entry::Observation {
            system,
            code,
            value,
            unit,
            at,
            ..
        } => {
            let unit = unit
                .map(|u| format!(r#" unit="{}""#, esc(u)))
                .unwrap_or_default();
            let _ = write!(
                w,
                r#"<entry><observation classCode="OBS" moodCode="EVN"><code code="{code}" codeSystem="{system}"/><statusCode code="completed"/><effectiveTime value="{t}"/><value xsi:type="PQ" value="{value}"{unit}/></observation></entry>"#,
                code = esc(code),
                t = ts(*at),
            );
        }
        Entry::Medication { atc, package, at } => {
            product(atc, package.as_deref(), *at, w);
        }
        Entry::Vaccination { atc, package, at } => {
            product(atc, Some(package), *at, w);
        }
        Entry::Procedure { code, at } => {
            let _ = write!(
                w,
                r#"<entry><procedure classCode="PROC" moodCode="EVN"><code code="{code}" codeSystem="{}"/><effectiveTime value="{}"/></procedure></entry>"#,
                codes::PROCEDURES_FI,
                ts(*at)
            );
        }
    }
}

fn product(atc: &str, package: Option<&str>, at: NaiveDateTime, w: &mut String) {
    let _ = write!(
        w,
        r#"<entry><substanceAdministration classCode="SBADM" moodCode="EVN"><effectiveTime value="{}"/><consumable><manufacturedProduct><manufacturedLabeledDrug><code code="{atc}" codeSystem="{}"/></manufacturedLabeledDrug></manufacturedProduct></consumable>"#,
        ts(at),
        codes::ATC
    );
    if let Some(vnr) = package {
        let _ = write!(
            w,
            r#"<entryRelationship typeCode="COMP"><supply classCode="SPLY" moodCode="EVN"><product><manufacturedProduct><manufacturedLabeledDrug><code code="{vnr}" codeSystem="{}"/></manufacturedLabeledDrug></manufacturedProduct></product></supply></entryRelationship>"#,
            codes::VNR
        );
    }
    w.push_str("</substanceAdministration></entry>");
}

/// One form field of the prohibition document: a section coded in
/// `1.2.246.537.6.12.2002.331`, with optional text and one `nullFlavor` entry.
fn field(
    w: &mut String,
    code: &str,
    title: &str,
    text: Option<&str>,
    value: Option<&str>,
    at: &str,
    inner: &str,
) {
    let _ = write!(
        w,
        r#"<component><section><code code="{code}" codeSystem="{}"/><title>{}</title>"#,
        codes::PROHIBITION_FORM,
        esc(title)
    );
    if let Some(t) = text {
        let _ = write!(w, "<text><content>{}</content></text>", esc(t));
    }
    if let Some(v) = value {
        let _ = write!(
            w,
            r#"<entry><observation classCode="COND" moodCode="EVN"><code nullFlavor="NA"/><effectiveTime value="{at}"/>{v}</observation></entry>"#
        );
    }
    w.push_str(inner);
    w.push_str("</section></component>");
}

fn prohibition_fields(person: &Person, p: &Prohibition, doc: &Doc, w: &mut String) {
    let at = ts(doc.effective);
    let bl = |b: bool| format!(r#"<value xsi:type="BL" value="{b}"/>"#);
    let mut s = String::new();
    field(
        &mut s,
        "1",
        "Tietojen luovutuskielto / luovutuskiellon peruuttaminen",
        None,
        None,
        &at,
        "",
    );
    w.push_str(&s);

    let mut inner = String::new();
    field(
        &mut inner,
        "5",
        "Ei voimassa olevia tietojen luovutuskieltoja",
        Some(if p.none_valid { "Kyllä" } else { "Ei" }),
        Some(&bl(p.none_valid)),
        &at,
        "",
    );
    let mut s = String::new();
    field(
        &mut s,
        "4",
        "Voimassa olevat kiellot",
        None,
        None,
        &at,
        &inner,
    );
    w.push_str(&s);

    for ev in &p.service_events {
        let mut inner = String::new();
        field(
            &mut inner,
            "7",
            "Palvelutapahtuman ajankohta",
            None,
            Some(&format!(
                r#"<value xsi:type="IVL_TS"><low value="{}"/><high value="{}"/></value>"#,
                ts(ev.from),
                ts(ev.to)
            )),
            &at,
            "",
        );
        field(
            &mut inner,
            "8",
            "Palvelujen antaja",
            None,
            Some(&format!(r#"<value xsi:type="II" root="{}"/>"#, ev.provider)),
            &at,
            "",
        );
        field(
            &mut inner,
            "9",
            "Palvelutapahtuman oid",
            Some(&ev.service_event),
            Some(&format!(
                r#"<value xsi:type="II" root="{}"/>"#,
                ev.service_event
            )),
            &at,
            "",
        );
        let mut s = String::new();
        field(
            &mut s,
            "6",
            "Palvelutapahtumat, joiden tietojen luovuttaminen on kielletty",
            None,
            None,
            &at,
            &inner,
        );
        w.push_str(&s);
    }
    for provider in &p.providers {
        let mut inner = String::new();
        field(
            &mut inner,
            "11",
            "Palvelujen antaja",
            None,
            Some(&format!(r#"<value xsi:type="II" root="{provider}"/>"#)),
            &at,
            "",
        );
        field(
            &mut inner,
            "12",
            "Kaikki palvelujen antajan rekisterit kielletty",
            Some("Kyllä"),
            Some(&bl(true)),
            &at,
            "",
        );
        let mut s = String::new();
        field(
            &mut s,
            "10",
            "Terveydenhuollon palvelujen antajat ja näiden rekisterit, joiden tietojen luovuttaminen on kielletty",
            None,
            None,
            &at,
            &inner,
        );
        w.push_str(&s);
    }
    if !p.none_valid {
        let mut inner = String::new();
        field(
            &mut inner,
            "15",
            "Kielletyt tiedot voidaan luovuttaa hätätilanteessa",
            None,
            Some(&bl(p.emergency_disclosure_allowed)),
            &at,
            "",
        );
        let mut s = String::new();
        field(
            &mut s,
            "14",
            "Luovuttaminen hätätilanteessa",
            None,
            None,
            &at,
            &inner,
        );
        w.push_str(&s);
    }
    // Field 16: the patient's own details, repeated as on the real form (a
    // decoder must not turn them into records).
    let mut inner = String::new();
    field(
        &mut inner,
        "17",
        "Sukunimi, etunimet",
        Some(&format!("{}, {}", person.family, person.given)),
        None,
        &at,
        "",
    );
    field(
        &mut inner,
        "18",
        "Henkilötunnus",
        Some(&person.hetu),
        Some(&format!(
            r#"<value xsi:type="II" root="{}" extension="{}"/>"#,
            codes::HETU,
            person.hetu
        )),
        &at,
        "",
    );
    let mut s = String::new();
    field(
        &mut s,
        "16",
        "Potilaan henkilötiedot",
        None,
        None,
        &at,
        &inner,
    );
    w.push_str(&s);
}
