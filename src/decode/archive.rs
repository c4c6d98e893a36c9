//! RCMR archive messages (`RCMR_IN100002FI01` new, `RCMR_IN100016FI01`
//! replacement): the CDA document travels base64-encoded inside a MIME
//! `multipart/related` body in `controlActProcess/subject/clinicalDocument/
//! text`. This module streams the message (every XML check applies), then
//! unpacks the MIME body; the CDA inside is decoded by `cda` with the same
//! checks as a bare document.
//!
//! MIME headers are parsed leniently: proper folding (a line starting with
//! whitespace) and a continuation line without leading whitespace after a
//! header ending in `;` (the real Kanta message puts `boundary="..."` alone
//! on the next line) are both accepted. The part taken is the first with
//! Content-Type `text/xml` (or `application/xml`), else the first part.
//! Transfer encodings: base64 (any case; whitespace ignored), and 7bit, 8bit
//! and binary (taken as is). A broken package is class `packaging`.

use base64::Engine;

use super::xml::{Ns, XmlEvent, XmlReader};
use super::{DecodeError, ErrorClass, Limits};
use crate::record::Packaging;

fn packaging(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(ErrorClass::Packaging, detail)
}

const TEXT_PATH: &[&str] = &["controlActProcess", "subject", "clinicalDocument", "text"];

/// Streams the rest of an archive message whose root `Start` was just read
/// and returns the bytes of the document it carries.
pub(super) fn extract(
    r: &mut XmlReader<'_>,
    p: Packaging,
    limits: &Limits,
) -> Result<Vec<u8>, DecodeError> {
    let expected = match p {
        Packaging::ArchiveNew => "RCMR_IN100002FI01",
        Packaging::ArchiveReplacement => "RCMR_IN100016FI01",
        Packaging::Cda => "",
    };
    // Path below the root: Some(name) for CDA-namespace elements.
    let mut path: Vec<Option<&str>> = Vec::new();
    let mut body: Option<String> = None;
    let mut in_text = false;
    let mut interaction: Option<String> = None;
    loop {
        match r.next()? {
            XmlEvent::Start(el) => {
                let name = (el.ns == Ns::V3).then_some(el.local);
                if path.is_empty() && el.is_v3("interactionId") {
                    interaction = el.attr("extension").map(str::to_owned);
                }
                path.push(name);
                in_text = body.is_none()
                    && path.len() == TEXT_PATH.len()
                    && path.iter().zip(TEXT_PATH).all(|(a, b)| *a == Some(*b));
                if in_text {
                    body = Some(String::new());
                }
            }
            XmlEvent::Text(t) => {
                if in_text && let Some(b) = body.as_mut() {
                    b.push_str(&t);
                }
            }
            XmlEvent::End => {
                in_text = false;
                if path.pop().is_none() {
                    break;
                }
            }
            XmlEvent::Eof => break,
        }
    }
    r.finish()?;
    if interaction.as_deref().is_some_and(|i| i != expected) {
        return Err(packaging(
            "the interactionId does not match the message's root element",
        ));
    }
    let body = body.ok_or_else(|| {
        packaging("no controlActProcess/subject/clinicalDocument/text in the archive message")
    })?;
    unpack_mime(&body, limits.max_archive_decoded_bytes)
}

/// Splits off the header block: header lines up to a blank line or the
/// first line that is neither a header nor a continuation.
fn headers(text: &str) -> (Vec<(String, String)>, &str) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    loop {
        let (line, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if out.is_empty() && !next.is_empty() {
                rest = next;
                continue;
            }
            return (out, next);
        }
        let folded = line.starts_with([' ', '\t']);
        let after_semicolon = out.last().is_some_and(|(_, v)| v.trim_end().ends_with(';'));
        if let Some(last) = out
            .last_mut()
            .filter(|_| folded || (after_semicolon && !line.starts_with("--")))
        {
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else if let Some((name, value)) = line.split_once(':').filter(|(n, _)| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        } else {
            return (out, rest);
        }
        if next.is_empty() {
            return (out, "");
        }
        rest = next;
    }
}

fn header<'h>(hs: &'h [(String, String)], name: &str) -> Option<&'h str> {
    hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A parameter of a structured header value (`boundary="x"`).
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(name) {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_owned())
    })
}

fn unpack_mime(text: &str, max_decoded: usize) -> Result<Vec<u8>, DecodeError> {
    let (hs, body) = headers(text);
    let ctype =
        header(&hs, "content-type").ok_or_else(|| packaging("MIME body without Content-Type"))?;
    let boundary = param(ctype, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| packaging("multipart MIME body without a boundary"))?;
    let delimiter = format!("--{boundary}");
    let closing = format!("{delimiter}--");
    let mut parts: Vec<&str> = Vec::new();
    let mut current: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == delimiter || bare == closing {
            if let Some(start) = current {
                parts.push(&body[start..offset]);
            }
            if bare.ends_with("--") && bare.len() == delimiter.len() + 2 {
                current = None;
                break;
            }
            current = Some(offset + line.len());
        }
        offset += line.len();
    }
    if current.is_some() {
        return Err(packaging("multipart MIME body without a closing boundary"));
    }
    if parts.is_empty() {
        return Err(packaging("multipart MIME body without parts"));
    }
    let parsed: Vec<(Vec<(String, String)>, &str)> = parts.iter().map(|p| headers(p)).collect();
    let (phs, content) = parsed
        .iter()
        .find(|(h, _)| {
            header(h, "content-type").is_some_and(|c| {
                let c = c.to_ascii_lowercase();
                c.starts_with("text/xml") || c.starts_with("application/xml")
            })
        })
        .or_else(|| parsed.first())
        .ok_or_else(|| packaging("multipart MIME body without parts"))?;
    let cte = header(phs, "content-transfer-encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match cte.as_str() {
        "base64" => {
            // Whitespace is ignored; line by line, a line without any other
            // whitespace (all of them, in practice) is copied whole.
            let mut clean: Vec<u8> = Vec::with_capacity(content.len());
            for line in content.split('\n') {
                let line = line.as_bytes();
                if line
                    .iter()
                    .fold(false, |ws, c| ws | c.is_ascii_whitespace())
                {
                    clean.extend(line.iter().copied().filter(|c| !c.is_ascii_whitespace()));
                } else {
                    clean.extend_from_slice(line);
                }
            }
            if clean.len() / 4 * 3 > max_decoded.saturating_add(3) {
                return Err(DecodeError::new(
                    ErrorClass::LimitExceeded,
                    format!("embedded document larger than {max_decoded} bytes"),
                ));
            }
            base64::engine::general_purpose::STANDARD
                .decode(&clean)
                .map_err(|_| packaging("the embedded document is not valid base64"))?
        }
        "7bit" | "8bit" | "binary" => content.as_bytes().to_vec(),
        _ => {
            return Err(packaging(
                "unsupported Content-Transfer-Encoding in the MIME part",
            ));
        }
    };
    if bytes.len() > max_decoded {
        return Err(DecodeError::new(
            ErrorClass::LimitExceeded,
            format!("embedded document larger than {max_decoded} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_headers_and_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("<a/>");
        for sep in ["\n", "\n ", "\r\n\t"] {
            let mime = format!(
                "MIME-Version: 1.0\nContent-Type: multipart/related;{sep}boundary=\"b1\"\n\n--b1\nContent-Type: text/xml\nContent-Transfer-Encoding: BASE64\n\n{b64}\n--b1--\n"
            );
            assert_eq!(unpack_mime(&mime, 1000).expect("unpacks"), b"<a/>");
        }
    }

    #[test]
    fn broken_packages() {
        let c = |m: &str| unpack_mime(m, 1000).err().map(|e| e.class);
        assert_eq!(c("no headers here"), Some(ErrorClass::Packaging));
        assert_eq!(
            c(
                "Content-Type: multipart/related; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n!!!\n--b--\n"
            ),
            Some(ErrorClass::Packaging)
        );
        assert_eq!(
            c("Content-Type: multipart/related; boundary=b\n\n--b\n\nabc\n"),
            Some(ErrorClass::Packaging)
        );
    }
}
