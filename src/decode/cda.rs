//! CDA R2 semantics over the checked event stream: the root decides the
//! kind of input (document, archive message, fragment, something else); the
//! header's elements are captured one at a time into [`Document`]; the body
//! is streamed section by section, each `entry` captured alone and turned
//! into records by `entries`. Section narrative is read past, never kept.
//!
//! Document ids: an `id` with only a root is the root; with an extension it
//! is `root^extension` (a `.` would make it look like a longer OID).

use super::entries::{self, Ctx};
use super::prohibition::ProhibitionAcc;
use super::tree::{Node, capture};
use super::xml::{Element, Ns, Prechecked, XmlEvent, XmlReader};
use super::{DecodeError, ErrorClass, Limits, archive, hetu};
use crate::codes::{self, CodeSystems};
use crate::record::{
    Code, DecodedDocument, Document, Flags, HETU_ROOT, MedicationEvent, Packaging, PatientId,
    Record, RelatedDocument, Sex, Ts,
};

/// Roots that are a piece of a CDA body rather than a document.
const FRAGMENT_ROOTS: &[&str] = &[
    "structuredBody",
    "component",
    "section",
    "entry",
    "entryRelationship",
    "observation",
    "organizer",
    "substanceAdministration",
    "supply",
    "procedure",
    "act",
    "encounter",
];

/// Decodes one input: a CDA document, an archive message or anything else
/// (refused with its class).
pub(super) fn decode(
    bytes: &[u8],
    limits: &Limits,
    codes: &CodeSystems,
) -> Result<DecodedDocument, DecodeError> {
    let input = Prechecked::new(bytes, limits.max_document_bytes)?;
    let mut r = XmlReader::new(input.text, limits);
    let result = decode_root(&mut r, limits, codes);
    input.finish(result, r.doctype_scan_needed())
}

fn decode_root(
    r: &mut XmlReader<'_>,
    limits: &Limits,
    codes: &CodeSystems,
) -> Result<DecodedDocument, DecodeError> {
    let root = first_start(r)?;
    if root.is_v3("ClinicalDocument") {
        return decode_document(r, limits, codes, Packaging::Cda);
    }
    let packaging = match (root.ns, root.local) {
        (Ns::V3, "RCMR_IN100002FI01") => Some(Packaging::ArchiveNew),
        (Ns::V3, "RCMR_IN100016FI01") => Some(Packaging::ArchiveReplacement),
        _ => None,
    };
    if let Some(p) = packaging {
        let inner = archive::extract(r, p, limits)?;
        return decode_embedded(&inner, limits, codes, p);
    }
    r.finish()?;
    if matches!(root.ns, Ns::V3 | Ns::None) && FRAGMENT_ROOTS.contains(&root.local) {
        return Err(DecodeError::new(
            ErrorClass::Fragment,
            format!("a CDA <{}> fragment, not a ClinicalDocument", root.local),
        ));
    }
    Err(DecodeError::new(
        ErrorClass::NotCda,
        "the root element is not a CDA R2 ClinicalDocument or an archive message",
    ))
}

/// The CDA document carried by an archive message: the same checks apply,
/// but it must be a `ClinicalDocument`.
fn decode_embedded(
    bytes: &[u8],
    limits: &Limits,
    codes: &CodeSystems,
    packaging: Packaging,
) -> Result<DecodedDocument, DecodeError> {
    let input = Prechecked::new(bytes, limits.max_archive_decoded_bytes)?;
    let mut r = XmlReader::new(input.text, limits);
    let result = decode_embedded_root(&mut r, limits, codes, packaging);
    input.finish(result, r.doctype_scan_needed())
}

fn decode_embedded_root(
    r: &mut XmlReader<'_>,
    limits: &Limits,
    codes: &CodeSystems,
    packaging: Packaging,
) -> Result<DecodedDocument, DecodeError> {
    let root = first_start(r)?;
    if root.is_v3("ClinicalDocument") {
        return decode_document(r, limits, codes, packaging);
    }
    r.finish()?;
    Err(DecodeError::new(
        ErrorClass::Packaging,
        "the archive message does not carry a ClinicalDocument",
    ))
}

fn first_start<'a>(r: &mut XmlReader<'a>) -> Result<Element<'a>, DecodeError> {
    loop {
        match r.next()? {
            XmlEvent::Start(el) => return Ok(el),
            XmlEvent::Text(_) => {}
            XmlEvent::End | XmlEvent::Eof => {
                return Err(DecodeError::new(
                    ErrorClass::NotWellFormed,
                    "no root element",
                ));
            }
        }
    }
}

/// What the header says, gathered while streaming.
#[derive(Debug, Default)]
struct Header {
    id: Option<String>,
    set_id: Option<String>,
    version: Option<u32>,
    code: Option<Code>,
    effective_time: Option<Ts>,
    controller: Option<String>,
    service_event: Option<String>,
    contents_code: Option<String>,
    top_section_code: Option<String>,
    record_status: Option<String>,
    home_municipality: Option<String>,
    flags: Flags,
    patient: Option<PatientId>,
    sex: Option<Sex>,
    birth_time: Option<Ts>,
    related: Vec<RelatedDocument>,
    structured_body: bool,
}

/// The canonical string form of an `II`: root, or `root^extension`.
pub(crate) fn id_string(n: &Node) -> Option<String> {
    let root = n.attr("root")?;
    Some(match n.attr("extension") {
        Some(ext) => format!("{root}^{ext}"),
        None => root.to_owned(),
    })
}

pub(crate) fn code_of(n: &Node, codes: &CodeSystems) -> Option<Code> {
    let (system, code, raw) = code_ref(n, codes)?;
    Some(Code {
        system: system.to_owned(),
        code: code.to_owned(),
        system_raw: (system != raw).then(|| raw.to_owned()),
    })
}

/// [`code_of`] without copying: (normalised system, code, system as
/// written).
pub(crate) fn code_ref<'n>(
    n: &'n Node<'_>,
    codes: &'n CodeSystems,
) -> Option<(&'n str, &'n str, &'n str)> {
    if n.null_flavored() && n.attr("code").is_none() {
        return None;
    }
    let code = n.attr("code")?;
    let raw = n.attr("codeSystem")?;
    Some((codes.normalise(raw), code, raw))
}

fn ts_of(n: Option<&Node>) -> Option<Ts> {
    n.and_then(|n| n.attr("value")).map(|v| Ts(v.to_owned()))
}

impl Header {
    fn take(&mut self, n: &Node, codes: &CodeSystems) {
        match (n.el.ns, n.el.local) {
            (Ns::V3, "id") => self.id = id_string(n),
            (Ns::V3, "setId") => self.set_id = id_string(n),
            (Ns::V3, "versionNumber") => {
                self.version = n.attr("value").and_then(|v| v.parse().ok());
            }
            (Ns::V3, "code") => self.code = code_of(n, codes),
            (Ns::V3, "effectiveTime") => self.effective_time = ts_of(Some(n)),
            (Ns::V3, "recordTarget") => self.take_patient(n),
            (Ns::V3, "custodian") => {
                self.controller = n
                    .path(&[
                        "assignedCustodian",
                        "representedCustodianOrganization",
                        "id",
                    ])
                    .and_then(|i| i.attr("root"))
                    .map(str::to_owned);
            }
            (Ns::V3, "componentOf") => {
                self.service_event = n
                    .path(&["encompassingEncounter", "id"])
                    .and_then(|i| i.attr("root"))
                    .map(str::to_owned);
            }
            (Ns::V3, "relatedDocument") => {
                let parent = n.child("parentDocument");
                self.related.push(RelatedDocument {
                    type_code: n.attr("typeCode").unwrap_or("").to_owned(),
                    id: parent.and_then(|p| p.child("id")).and_then(id_string),
                    set_id: parent.and_then(|p| p.child("setId")).and_then(id_string),
                    version: parent
                        .and_then(|p| p.child("versionNumber"))
                        .and_then(|v| v.attr("value"))
                        .and_then(|v| v.parse().ok()),
                });
            }
            (Ns::Fi, "localHeader") => self.take_local(n),
            _ => {}
        }
    }

    fn take_patient(&mut self, n: &Node) {
        let Some(role) = n.child("patientRole") else {
            return;
        };
        let ids: Vec<&Node> = role
            .all("id")
            .filter(|i| i.attr("root").is_some())
            .collect();
        let chosen = ids
            .iter()
            .find(|i| i.attr("root") == Some(HETU_ROOT))
            .or_else(|| ids.first());
        if let Some(id) = chosen {
            self.patient = Some(PatientId {
                root: id.attr("root").unwrap_or("").to_owned(),
                extension: id.attr("extension").unwrap_or("").to_owned(),
            });
        }
        if let Some(p) = role.child("patient") {
            self.sex = p.child("administrativeGenderCode").and_then(|g| {
                if g.null_flavored() {
                    return None;
                }
                Some(match g.attr("code") {
                    Some("1" | "M") => Sex::Male,
                    Some("2" | "F") => Sex::Female,
                    _ => Sex::Unknown,
                })
            });
            self.birth_time = ts_of(p.child("birthTime"));
        }
    }

    fn take_local(&mut self, n: &Node) {
        let fi = |name: &str| n.children.iter().find(|c| c.el.is(Ns::Fi, name));
        self.contents_code = fi("tableOfContents")
            .and_then(|t| t.children.iter().find(|c| c.el.is(Ns::Fi, "contentsCode")))
            .and_then(|c| c.attr("code"))
            .map(str::to_owned);
        self.record_status = fi("recordStatus")
            .and_then(|c| c.attr("code"))
            .map(str::to_owned);
        self.home_municipality = fi("patientHomeMunicipality")
            .and_then(|c| c.attr("code"))
            .map(str::to_owned);
        self.flags.sensitive = fi("sensitiveDocument").is_some_and(|s| {
            let text = s.text.trim();
            matches!(
                s.attr("value")
                    .or(s.attr("code"))
                    .or((!text.is_empty()).then_some(text))
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("true" | "1")
            )
        });
        self.flags.basis_for_nondisclosure = n
            .children
            .iter()
            .filter(|c| c.el.is(Ns::Fi, "basisForNondisclosure"))
            .filter_map(|c| c.attr("code"))
            .map(str::to_owned)
            .collect();
        self.flags.release_date_for_patient_viewing = fi("releaseDateForPatientViewing")
            .and_then(|c| c.attr("value"))
            .map(|v| Ts(v.to_owned()));
        self.flags.retention_period_class = fi("retentionPeriodClass")
            .and_then(|c| c.attr("code"))
            .map(str::to_owned);
    }
}

/// Header children worth capturing.
fn header_wanted(el: &Element) -> bool {
    match el.ns {
        Ns::V3 => matches!(
            el.local,
            "id" | "setId"
                | "versionNumber"
                | "code"
                | "effectiveTime"
                | "recordTarget"
                | "custodian"
                | "componentOf"
                | "relatedDocument"
        ),
        Ns::Fi => el.local == "localHeader",
        _ => false,
    }
}

/// One open element of the body.
#[derive(Debug)]
enum Frame {
    Section {
        code: Option<Code>,
        immunization: bool,
        /// A prohibition-form field number, when the section is one.
        field: Option<u32>,
    },
    Other,
}

/// Section templates and codes that make their entries immunisations.
const IMMUNIZATION_SECTION_TEMPLATES: &[&str] = &[
    "2.16.840.1.113883.10.20.22.2.2",
    "2.16.840.1.113883.10.20.22.2.2.1",
];
const IMMUNIZATION_SECTION_LOINC: &str = "11369-6";

/// Prohibition-form fields whose entries the prohibition record reads; every
/// other field (names, hetus, signatures, ...) is read past unread.
const PROHIBITION_FIELDS_READ: &[u32] = &[5, 7, 8, 9, 11, 12, 15];

struct Body<'c> {
    codes: &'c CodeSystems,
    limits: &'c Limits,
    records: Vec<Record>,
    prohibition: ProhibitionAcc,
    entries: usize,
}

fn decode_document(
    r: &mut XmlReader<'_>,
    limits: &Limits,
    codes: &CodeSystems,
    packaging: Packaging,
) -> Result<DecodedDocument, DecodeError> {
    let mut h = Header::default();
    let mut body = Body {
        codes,
        limits,
        records: Vec::new(),
        prohibition: ProhibitionAcc::default(),
        entries: 0,
    };
    loop {
        match r.next()? {
            XmlEvent::Start(el) => {
                if el.is_v3("component") {
                    walk_component(r, &mut h, &mut body)?;
                } else if header_wanted(&el) {
                    let n = capture(r, el)?;
                    h.take(&n, codes);
                } else {
                    r.skip()?;
                }
            }
            XmlEvent::Text(_) => {}
            XmlEvent::End => break,
            XmlEvent::Eof => {
                return Err(DecodeError::new(
                    ErrorClass::NotWellFormed,
                    "unexpected end of input",
                ));
            }
        }
    }
    r.finish()?;
    let Body {
        mut records,
        prohibition,
        ..
    } = body;
    prohibition.finish_into(&mut records);
    build(h, records, packaging)
}

fn build(
    h: Header,
    records: Vec<Record>,
    packaging: Packaging,
) -> Result<DecodedDocument, DecodeError> {
    let id =
        h.id.ok_or_else(|| DecodeError::new(ErrorClass::NotCda, "the ClinicalDocument has no id"))?;
    let patient = h.patient.ok_or_else(|| {
        DecodeError::new(
            ErrorClass::NotCda,
            "the ClinicalDocument has no recordTarget patient id",
        )
    })?;
    if patient.is_hetu()
        && let Err(e) = hetu::Hetu::parse(&patient.extension)
    {
        return Err(DecodeError::new(
            ErrorClass::InvalidPatientId,
            format!("patient id under {HETU_ROOT}: {e}"),
        ));
    }
    let replaces = h
        .related
        .iter()
        .find(|r| r.type_code == "RPLC")
        .and_then(|r| r.id.clone());
    let document = Document {
        set_id: h.set_id.unwrap_or_else(|| id.clone()),
        id,
        version: h.version.unwrap_or(1),
        code: h.code,
        effective_time: h.effective_time,
        controller: h.controller,
        service_event: h.service_event,
        view: h.contents_code.or(h.top_section_code),
        record_status: h.record_status,
        home_municipality: h.home_municipality,
        flags: h.flags,
        patient,
        sex: h.sex,
        birth_time: h.birth_time,
        replaces,
        related: h.related,
        structured_body: h.structured_body,
    };
    Ok(DecodedDocument {
        packaging,
        document,
        records,
    })
}

/// The Prescription Centre event a document's code names, if it is one.
fn prescription_centre_event(code: Option<&Code>) -> Option<MedicationEvent> {
    let c = code.filter(|c| c.system == codes::PRESCRIPTION_CENTRE_MESSAGE_TYPE)?;
    Some(match c.code.as_str() {
        "1" => MedicationEvent::Prescription,
        "10" => MedicationEvent::Dispensing,
        "11" => MedicationEvent::DispensingInvalidation,
        "12" => MedicationEvent::DispensingCorrection,
        _ => MedicationEvent::PrescriptionCentreOther,
    })
}

/// Streams `ClinicalDocument/component`: a structured body, or a
/// `nonXMLBody` read past.
fn walk_component(
    r: &mut XmlReader<'_>,
    h: &mut Header,
    body: &mut Body<'_>,
) -> Result<(), DecodeError> {
    let pc_event = prescription_centre_event(h.code.as_ref());
    let invalidates = h
        .related
        .iter()
        .find(|r| r.type_code == "APND")
        .and_then(|r| r.id.clone());
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        match r.next()? {
            XmlEvent::Start(el) => {
                let parent_is_section = matches!(frames.last(), Some(Frame::Section { .. }));
                if frames.is_empty() {
                    if el.is_v3("structuredBody") {
                        h.structured_body = true;
                        frames.push(Frame::Other);
                    } else {
                        r.skip()?;
                    }
                    continue;
                }
                if el.is_v3("section") {
                    let outer_immunization = frames.iter().rev().any(|f| {
                        matches!(
                            f,
                            Frame::Section {
                                immunization: true,
                                ..
                            }
                        )
                    });
                    frames.push(Frame::Section {
                        code: None,
                        immunization: outer_immunization,
                        field: None,
                    });
                } else if parent_is_section && el.is_v3("code") {
                    let n = capture(r, el)?;
                    let code = code_of(&n, body.codes);
                    let top = frames
                        .iter()
                        .filter(|f| matches!(f, Frame::Section { .. }))
                        .count()
                        == 1;
                    if let Some(Frame::Section {
                        code: slot,
                        immunization,
                        field,
                    }) = frames.last_mut()
                    {
                        if let Some(c) = &code {
                            if top && h.top_section_code.is_none() {
                                h.top_section_code = Some(c.code.clone());
                            }
                            if c.system == codes::LOINC && c.code == IMMUNIZATION_SECTION_LOINC {
                                *immunization = true;
                            }
                            if c.system == codes::PROHIBITION_FORM {
                                *field = c.code.parse().ok();
                                if let Some(f) = *field {
                                    body.prohibition.open_field(f);
                                }
                            }
                        }
                        *slot = code;
                    }
                } else if parent_is_section && el.is_v3("templateId") {
                    if IMMUNIZATION_SECTION_TEMPLATES.contains(&el.attr("root").unwrap_or(""))
                        && let Some(Frame::Section { immunization, .. }) = frames.last_mut()
                    {
                        *immunization = true;
                    }
                    r.skip()?;
                } else if parent_is_section && el.is_v3("text") {
                    r.skip()?;
                } else if el.is_v3("entry") {
                    body.entries += 1;
                    if body.entries > body.limits.max_entries {
                        return Err(DecodeError::new(
                            ErrorClass::LimitExceeded,
                            format!(
                                "more than {} entries in one document",
                                body.limits.max_entries
                            ),
                        ));
                    }
                    let (field, immunization) = frames
                        .iter()
                        .rev()
                        .find_map(|f| match f {
                            Frame::Section {
                                field,
                                immunization,
                                ..
                            } => Some((*field, *immunization)),
                            Frame::Other => None,
                        })
                        .unwrap_or((None, false));
                    match field {
                        Some(f) if PROHIBITION_FIELDS_READ.contains(&f) => {
                            let n = capture(r, el)?;
                            body.prohibition.entry(f, &n, &mut body.records);
                        }
                        Some(_) => r.skip()?,
                        None => {
                            let n = capture(r, el)?;
                            let ctx = Ctx {
                                codes: body.codes,
                                pc_event,
                                invalidates: invalidates.as_deref(),
                                immunization_section: immunization,
                            };
                            entries::records_of_entry(&n, &ctx, &mut body.records);
                        }
                    }
                } else {
                    frames.push(Frame::Other);
                }
            }
            XmlEvent::Text(_) => {}
            XmlEvent::End => match frames.pop() {
                None => return Ok(()),
                Some(Frame::Section { field, .. }) => {
                    if let Some(f) = field {
                        body.prohibition.close_field(f);
                    }
                }
                Some(Frame::Other) => {}
            },
            XmlEvent::Eof => {
                return Err(DecodeError::new(
                    ErrorClass::NotWellFormed,
                    "unexpected end of input",
                ));
            }
        }
    }
}
