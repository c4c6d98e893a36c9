//! Archive messages: the input travels inside an RCMR_IN100002FI01 message.
//! First byte even: the rest is a CDA document, base64-encoded as the MIME
//! part's body (the normal case). First byte odd: the rest is the whole
//! MIME text (headers, boundaries, body), XML-escaped, so the MIME and
//! base64 parsing are fuzzed too.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use regfeed::decode::{Limits, decode};

const HEAD: &str = r#"<RCMR_IN100002FI01 ITSVersion="XML_1.0" xmlns="urn:hl7-org:v3"><id root="1.2.246.10.32213086.10.0.13.112"/><creationTime value="20260301120000"/><interactionId extension="RCMR_IN100002FI01" root="2.16.840.1.113883.1.6"/><processingCode code="P"/><processingModeCode code="T"/><acceptAckCode code="ER"/><controlActProcess moodCode="RQO"><subject typeCode="SUBJ"><clinicalDocument><id root="1.2.246.10.32213086.93.2026.112"/><text mediaType="multipart/related">"#;
const TAIL: &str = "</text></clinicalDocument></subject></controlActProcess></RCMR_IN100002FI01>";
const MIME_HEAD: &str = "MIME-Version: 1.0\nContent-Type: multipart/related;\nboundary=\"----=_Part_1_1\"\n\n------=_Part_1_1\nContent-Type: text/xml; charset=UTF-8\nContent-Transfer-Encoding: BASE64\n\n";
const MIME_TAIL: &str = "\n------=_Part_1_1--\n";

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut msg = String::from(HEAD);
    if mode & 1 == 0 {
        msg.push_str(MIME_HEAD);
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        for line in b64.as_bytes().chunks(76) {
            msg.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            msg.push('\n');
        }
        msg.push_str(MIME_TAIL);
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        escape(text, &mut msg);
    }
    msg.push_str(TAIL);
    let _ = decode(msg.as_bytes(), &Limits::default());
});
