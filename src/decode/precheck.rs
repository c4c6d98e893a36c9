//! Whole-input checks, in the order of the error classes: the byte limit
//! (an oversized input is not read further), then encoding (the whole input
//! is UTF-8; a UTF-8 byte-order mark is allowed; a UTF-16/32 byte-order
//! mark or an XML declaration naming an encoding other than `UTF-8`,
//! compared case-insensitively, is refused — aliases such as `utf8`
//! included), then DOCTYPE (any `<!DOCTYPE`, in any case, outside comments
//! and CDATA sections).
//!
//! The DOCTYPE scan is the one check that needs a pass of its own, so it is
//! deferred: [`Prechecked::finish`] runs it only when the decode of the
//! input failed (any class: the DOCTYPE class comes first) or when the
//! reader saw a `<` inside a processing instruction or the XML declaration.
//! Otherwise it cannot find anything: in an input the reader accepted,
//! every other `<` opens markup, a comment or a CDATA section (which the
//! scan skips exactly as the parser does), and a DOCTYPE is refused by the
//! reader itself.

use super::{DecodeError, ErrorClass};

fn err(class: ErrorClass, detail: impl Into<String>) -> DecodeError {
    DecodeError::new(class, detail)
}

/// Whole-input checks before any parsing: byte limit, encoding, DOCTYPE.
/// Returns the text after an optional UTF-8 byte-order mark.
#[cfg(test)]
pub(crate) fn precheck<'a>(
    bytes: &'a [u8],
    limits: &super::Limits,
) -> Result<&'a str, DecodeError> {
    let p = Prechecked::new(bytes, limits.max_document_bytes)?;
    p.finish(Ok(()), true)?;
    Ok(p.text)
}

/// An input that passed the byte limit and the encoding checks; its DOCTYPE
/// check is still to come ([`Prechecked::finish`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prechecked<'a> {
    /// The text after an optional UTF-8 byte-order mark.
    pub text: &'a str,
}

impl<'a> Prechecked<'a> {
    pub fn new(bytes: &'a [u8], max_bytes: usize) -> Result<Prechecked<'a>, DecodeError> {
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
        Ok(Prechecked { text })
    }

    /// The outcome of decoding the text, with the DOCTYPE check applied
    /// first: when `result` is an error, or `scan` (the reader saw a `<`
    /// inside a processing instruction or declaration), the text is scanned
    /// and a DOCTYPE in it is the answer.
    pub fn finish<T>(&self, result: Result<T, DecodeError>, scan: bool) -> Result<T, DecodeError> {
        if (result.is_err() || scan)
            && let Some(pos) = find_doctype(self.text)
        {
            return Err(err(
                ErrorClass::Doctype,
                format!("DOCTYPE declaration at byte {pos}: DTDs are refused"),
            ));
        }
        result
    }
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
    while let Some(off) = text[i..].find('<') {
        let at = i + off;
        let rest = &b[at..];
        if rest.starts_with(b"<!--") {
            match text[at + 4..].find("-->") {
                Some(end) => i = at + 4 + end + 3,
                None => return None,
            }
        } else if rest.starts_with(b"<![CDATA[") {
            match text[at + 9..].find("]]>") {
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
