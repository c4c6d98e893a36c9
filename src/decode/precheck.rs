//! Whole-input checks before any parsing, in the order of the error
//! classes: the byte limit (an oversized input is not read further), then
//! encoding (the whole input is UTF-8; a UTF-8 byte-order mark is allowed; a
//! UTF-16/32 byte-order mark or an XML declaration naming an encoding other
//! than `UTF-8`, compared case-insensitively, is refused — aliases such as
//! `utf8` included), then DOCTYPE (any `<!DOCTYPE`, in any case, outside
//! comments and CDATA sections).

use super::{DecodeError, ErrorClass, Limits};

fn err(class: ErrorClass, detail: impl Into<String>) -> DecodeError {
    DecodeError::new(class, detail)
}

/// Whole-input checks before any parsing: byte limit, encoding, DOCTYPE.
/// Returns the text after an optional UTF-8 byte-order mark.
pub(crate) fn precheck<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, DecodeError> {
    precheck_sized(bytes, limits.max_document_bytes)
}

pub(crate) fn precheck_sized(bytes: &[u8], max_bytes: usize) -> Result<&str, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(err(
            ErrorClass::LimitExceeded,
            format!(
                "document of {} bytes exceeds the limit of {max_bytes} bytes",
                bytes.len()
            ),
        ));
    }
    if bytes.starts_with(&[0xFE, 0xFF])
        || bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0, 0, 0xFE, 0xFF])
    {
        return Err(err(
            ErrorClass::Encoding,
            "UTF-16 or UTF-32 byte-order mark: only UTF-8 is accepted",
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(err(
                ErrorClass::Encoding,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            ));
        }
    };
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if let Some(enc) = declared_encoding(text)
        && !enc.eq_ignore_ascii_case("utf-8")
    {
        return Err(err(
            ErrorClass::Encoding,
            "the XML declaration names an encoding other than UTF-8",
        ));
    }
    if let Some(pos) = find_doctype(text) {
        return Err(err(
            ErrorClass::Doctype,
            format!("DOCTYPE declaration at byte {pos}: DTDs are refused"),
        ));
    }
    Ok(text)
}

/// The `encoding` pseudo-attribute of a leading XML declaration, if any.
fn declared_encoding(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("<?xml")?;
    if !rest.starts_with([' ', '\t', '\r', '\n']) {
        return None;
    }
    let decl = &rest[..rest.find("?>")?];
    let at = decl.find("encoding")?;
    let after = decl[at + "encoding".len()..].trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let quote = after.chars().next()?;
    if quote != '"' && quote != '\'' {
        return Some("");
    }
    let body = &after[1..];
    Some(body.find(quote).map_or(body, |end| &body[..end]))
}

/// The byte position of a `<!DOCTYPE` (any case) outside comments and CDATA
/// sections.
fn find_doctype(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = memchr(b'<', &b[i..]) {
        let at = i + off;
        let rest = &b[at..];
        if rest.starts_with(b"<!--") {
            match find_sub(&rest[4..], b"-->") {
                Some(end) => i = at + 4 + end + 3,
                None => return None,
            }
        } else if rest.starts_with(b"<![CDATA[") {
            match find_sub(&rest[9..], b"]]>") {
                Some(end) => i = at + 9 + end + 3,
                None => return None,
            }
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!DOCTYPE") {
            return Some(at);
        } else {
            i = at + 1;
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
