//! Wraps a rendered CDA document in an HL7 V3 archive message
//! (`RCMR_IN100002FI01` new, `RCMR_IN100016FI01` replacement): base64 in
//! 76-character lines inside a MIME `multipart/related` body, as in
//! `shared/data/kanta/RCMR_IN100002FI01.xml` and fixtures f12/f13.

use std::fmt::Write as _;

use base64::Engine as _;

use super::cda::ts;
use super::plan::{Doc, Folding, ORGS, Packaging};

/// Writes the archive message for `doc`, whose CDA bytes are `cda`, into `out`
/// (cleared first). `packaging` must be one of the archive kinds.
pub fn wrap(doc: &Doc, cda: &str, out: &mut String) {
    out.clear();
    let (interaction, control_act) = match doc.packaging {
        Packaging::ArchiveReplacement => ("RCMR_IN100016FI01", "RCMR_TE000910UV01"),
        _ => ("RCMR_IN100002FI01", "RCMR_TE000102UV01"),
    };
    let org = doc.org.map_or("2462460", |i| ORGS[i].number);
    // The message id reuses the document's number: unique like it.
    let n = doc.id.rsplit('.').next().unwrap_or("0");
    let boundary = format!("----=_Part_{n}_{}", doc.version);
    let _ = write!(
        out,
        r#"<{interaction} ITSVersion="XML_1.0" xmlns="urn:hl7-org:v3"><id root="1.2.246.10.{org}.10.0.13.{n}"/><creationTime value="{t}"/><interactionId extension="{interaction}" root="2.16.840.1.113883.1.6"/><processingCode code="P"/><processingModeCode code="T"/><acceptAckCode code="ER"/><receiver typeCode="RCV"><device><id root="1.2.246.556.18007.2"/></device></receiver><sender typeCode="SND"><device><id root="1.2.246.10.{org}.10.0.13.2.1"/></device></sender><controlActProcess moodCode="RQO"><code code="{control_act}" codeSystem="2.16.840.1.113883.1.18"/><subject typeCode="SUBJ"><clinicalDocument><id root="{id}"/><text mediaType="multipart/related">"#,
        t = ts(doc.effective),
        id = doc.id,
    );
    let _ = write!(
        out,
        "Message-ID: &lt;synth.{n}.{v}@example.invalid&gt;\nMIME-Version: 1.0\n",
        v = doc.version
    );
    match doc.folding {
        Folding::Unindented => {
            let _ = write!(
                out,
                "Content-Type: multipart/related;\nboundary=\"{boundary}\"\n"
            );
        }
        Folding::Folded => {
            let _ = write!(
                out,
                "Content-Type: multipart/related;\n\tboundary=\"{boundary}\"\n"
            );
        }
        Folding::OneLine => {
            let _ = writeln!(
                out,
                "Content-Type: multipart/related; boundary=\"{boundary}\""
            );
        }
    }
    let _ = write!(
        out,
        "\n--{boundary}\nContent-Type: text/xml; charset=UTF-8\nContent-Transfer-Encoding: BASE64\nContent-ID: &lt;{id}&gt;\n\n",
        id = doc.id
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(cda.as_bytes());
    for line in b64.as_bytes().chunks(76) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = write!(
        out,
        "\n--{boundary}--\n</text></clinicalDocument></subject></controlActProcess></{interaction}>"
    );
}
