//! A checked streaming XML reader over `&[u8]`: quick-xml's `NsReader` with
//! the well-formedness and resource checks quick-xml leaves out, and events
//! whose element and attribute names are resolved to namespace + local name
//! (callers match namespaces, never prefixes).
//!
//! Checks run in the order of the error classes, so one input gets one class:
//! [`Prechecked`] refuses the input as a whole (byte limit, then encoding)
//! before anything is parsed, and answers DOCTYPE (deferred, see `precheck`)
//! before any class the reader gives; [`XmlReader`] then refuses what is not
//! well-formed and what exceeds a limit while it streams. The byte limit is
//! checked first of all: an oversized input is not read further, whatever
//! else is wrong with it. Elsewhere a limit can trip before a later
//! well-formedness error in the same input: stopping early is what keeps
//! memory and time bounded.
//!
//! Encodings: the whole input must be UTF-8; a UTF-8 byte-order mark is
//! allowed; a UTF-16/UTF-32 byte-order mark, or an XML declaration naming an
//! encoding other than `UTF-8` (compared case-insensitively; aliases such as
//! `utf8` are refused), is class `encoding`.
//!
//! Errors name the problem and a byte position, never document content.

use std::borrow::Cow;

use quick_xml::errors::{Error as QxError, IllFormedError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceError, QName, ResolveResult};
use quick_xml::reader::NsReader;

pub(crate) use super::precheck::Prechecked;
#[cfg(test)]
use super::precheck::precheck;
use super::{DecodeError, ErrorClass, Limits};

pub(crate) const NS_V3: &str = "urn:hl7-org:v3";
pub(crate) const NS_FI: &str = "urn:hl7finland";
pub(crate) const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespaces the decoder tells apart; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    None,
    V3,
    Fi,
    Xsi,
    Xml,
    Other,
}

impl Ns {
    fn of(uri: &str) -> Ns {
        match uri {
            "" => Ns::None,
            NS_V3 => Ns::V3,
            NS_FI => Ns::Fi,
            NS_XSI => Ns::Xsi,
            NS_XML => Ns::Xml,
            _ => Ns::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attr<'a> {
    pub ns: Ns,
    pub local: &'a str,
    /// The value with references resolved and whitespace normalised:
    /// borrowed from the input unless that changed it.
    pub value: Cow<'a, str>,
}

/// A start tag, its names borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element<'a> {
    pub ns: Ns,
    pub local: &'a str,
    /// Attributes other than namespace declarations (empty when the reader
    /// was told the element is read past).
    pub attrs: Vec<Attr<'a>>,
}

impl<'a> Element<'a> {
    /// The value of the attribute with no namespace named `local`.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == Ns::None && a.local == local)
            .map(|a| a.value.as_ref())
    }

    /// `xsi:type` without any prefix on its value (`v3:PQ` → `PQ`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == Ns::Xsi && a.local == "type")
            .map(|a| {
                let v = a.value.as_ref();
                v.rsplit(':').next().unwrap_or(v).trim()
            })
    }

    pub fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    pub fn is_v3(&self, local: &str) -> bool {
        self.is(Ns::V3, local)
    }
}

#[derive(Debug)]
pub(crate) enum XmlEvent<'a> {
    Start(Element<'a>),
    End,
    /// A piece of character data (text, a resolved reference or CDATA).
    Text(Cow<'a, str>),
    Eof,
}

fn err(class: ErrorClass, detail: impl Into<String>) -> DecodeError {
    DecodeError::new(class, detail)
}

fn nwf(detail: impl Into<String>) -> DecodeError {
    err(ErrorClass::NotWellFormed, detail)
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z' | '_'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

fn is_ncname(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_ascii() {
        return b
            .first()
            .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    }
    let mut cs = s.chars();
    cs.next().is_some_and(is_name_start) && cs.all(is_name_char)
}

/// A namespace-well-formed QName: `NCName` or `NCName:NCName` (the
/// reference [`qname`] is checked against).
#[cfg(test)]
fn is_qname(s: &str) -> bool {
    match s.split_once(':') {
        Some((p, l)) => is_ncname(p) && is_ncname(l),
        None => is_ncname(s),
    }
}

/// What an ASCII byte may be in a name: 1 a name start character, 2 a name
/// character only, 0 neither (`:` is handled apart).
const NAME_ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() || b == b'_' {
            1
        } else if b.is_ascii_digit() || b == b'-' || b == b'.' {
            2
        } else {
            0
        };
        c += 1;
    }
    t
};

/// A namespace-well-formed QName (`NCName` or `NCName:NCName`): the byte
/// position of its colon (`Some(None)` without one), or `None` when `s` is
/// not one. One pass over ASCII names.
fn qname(s: &str) -> Option<Option<usize>> {
    let mut colon = None;
    let mut at_start = true;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if c >= 0x80 {
            return qname_unicode(s);
        }
        if c == b':' {
            if colon.is_some() || at_start {
                return None;
            }
            colon = Some(i);
            at_start = true;
            continue;
        }
        let kind = NAME_ASCII[usize::from(c)];
        if at_start {
            if kind != 1 {
                return None;
            }
            at_start = false;
        } else if kind == 0 {
            return None;
        }
    }
    if at_start {
        return None;
    }
    Some(colon)
}

fn qname_unicode(s: &str) -> Option<Option<usize>> {
    let colon = s.find(':');
    let ok = match colon {
        Some(i) => is_ncname(&s[..i]) && is_ncname(&s[i + 1..]),
        None => is_ncname(s),
    };
    ok.then_some(colon)
}

/// The local part of a QName whose colon is at `colon`.
fn local_part(qname: &str, colon: Option<usize>) -> &str {
    match colon {
        Some(i) => &qname[i + 1..],
        None => qname,
    }
}

/// The first character that is not an XML `Char`, by byte position. In a
/// `str` those are the ASCII controls other than tab, LF and CR (always one
/// byte) and U+FFFE/U+FFFF (`EF BF BE`/`EF BF BF`; `EF` is only ever a lead
/// byte); surrogates cannot occur.
fn bad_char(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    // Most text is printable ASCII, line ends and letters below U+F000:
    // one branch-free pass says so.
    if b.iter()
        .all(|&c| (0x20..0xEF).contains(&c) | (c == b'\n') | (c == b'\t') | (c == b'\r'))
    {
        return None;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x20 {
            if !matches!(c, b'\t' | b'\n' | b'\r') {
                return Some(i);
            }
        } else if c == 0xEF
            && b.get(i + 1) == Some(&0xBF)
            && matches!(b.get(i + 2), Some(0xBE | 0xBF))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `s` as a slice of `text` when it is one (every name and value of a
/// reader over a slice is).
fn rebase<'a>(text: &'a str, s: &str) -> Option<&'a str> {
    let start = (s.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let piece = text.get(start..start.checked_add(s.len())?)?;
    (piece.as_ptr() == s.as_ptr()).then_some(piece)
}

/// Resolves one reference body (between `&` and `;`).
fn resolve_ref(name: &str) -> Result<char, String> {
    match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => {}
    }
    let Some(num) = name.strip_prefix('#') else {
        return Err(
            "reference to an undeclared entity (only the five predefined ones exist without a DTD)"
                .into(),
        );
    };
    let (digits, radix) = match num.strip_prefix('x') {
        Some(hex) => (hex, 16),
        None => (num, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err("malformed character reference".into());
    }
    let code = u32::from_str_radix(digits, radix)
        .map_err(|_| "character reference out of range".to_string())?;
    match char::from_u32(code) {
        Some(c) if is_xml_char(c) => Ok(c),
        _ => Err("character reference to a character XML does not allow".into()),
    }
}

/// An attribute value as written → its normalised value, borrowed when
/// normalising changes nothing.
fn attr_value(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw
        .bytes()
        .any(|c| matches!(c, b'&' | b'<' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        match c {
            b'<' => return Err("'<' in an attribute value".into()),
            b'&' => {
                let tail = &rest[i + 1..];
                let end = tail
                    .find(';')
                    .filter(|&e| e <= 12)
                    .ok_or_else(|| "unterminated reference in an attribute value".to_string())?;
                out.push(resolve_ref(&tail[..end])?);
                rest = &tail[end + 1..];
                continue;
            }
            b'\r' if rest.as_bytes().get(i + 1) == Some(&b'\n') => {
                out.push(' ');
                rest = &rest[i + 2..];
                continue;
            }
            _ => out.push(' '),
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// The checked reader. Yields `Start`/`End` pairs (an empty element gives
/// both), text inside the root, and `Eof` once the document is complete.
pub(crate) struct XmlReader<'a> {
    inner: NsReader<&'a [u8]>,
    /// The input: every name and value is borrowed from it.
    text: &'a str,
    limits: Limits,
    /// Scratch for one start tag: the attribute names seen (duplicates) and
    /// the attributes other than namespace declarations, with their values.
    keys: Vec<&'a str>,
    pending: Vec<(&'a str, Option<usize>, Cow<'a, str>)>,
    depth: usize,
    root_seen: bool,
    pending_end: bool,
    ns_total: usize,
    text_run: usize,
    events: usize,
    done: bool,
    /// A `<` inside a processing instruction or the XML declaration: the
    /// deferred DOCTYPE scan must run (see `precheck`).
    lt_in_pi: bool,
}

impl std::fmt::Debug for XmlReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmlReader")
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl<'a> XmlReader<'a> {
    /// A reader over `text`, which has passed [`precheck`].
    pub fn new(text: &'a str, limits: &Limits) -> XmlReader<'a> {
        let mut inner = NsReader::from_str(text);
        let cfg = inner.config_mut();
        cfg.check_end_names = true;
        cfg.check_comments = true;
        cfg.allow_unmatched_ends = false;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
        inner
            .resolver_mut()
            .set_max_namespace_bindings(limits.max_namespace_declarations_total);
        XmlReader {
            inner,
            text,
            limits: limits.clone(),
            keys: Vec::new(),
            pending: Vec::new(),
            depth: 0,
            root_seen: false,
            pending_end: false,
            ns_total: 0,
            text_run: 0,
            events: 0,
            done: false,
            lt_in_pi: false,
        }
    }

    /// Whether the deferred DOCTYPE scan must run even on success.
    pub fn doctype_scan_needed(&self) -> bool {
        self.lt_in_pi
    }

    fn pos(&self) -> u64 {
        self.inner.buffer_position()
    }

    fn map_err(&self, e: QxError) -> DecodeError {
        let pos = self.pos();
        match e {
            QxError::Namespace(NamespaceError::TooManyBindings(n)) => err(
                ErrorClass::LimitExceeded,
                format!("more than {n} namespace declarations in scope at byte {pos}"),
            ),
            QxError::Namespace(NamespaceError::TooDeeplyNested(n)) => err(
                ErrorClass::LimitExceeded,
                format!("elements nested deeper than {n} at byte {pos}"),
            ),
            QxError::Namespace(_) => nwf(format!(
                "reserved namespace prefix or name misused at byte {pos}"
            )),
            QxError::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => nwf(
                format!("end tag </{found}> does not match open <{expected}> at byte {pos}"),
            ),
            QxError::IllFormed(IllFormedError::UnmatchedEndTag(name)) => nwf(format!(
                "end tag </{name}> without a start tag at byte {pos}"
            )),
            QxError::IllFormed(IllFormedError::DoubleHyphenInComment) => {
                nwf(format!("'--' inside a comment at byte {pos}"))
            }
            QxError::IllFormed(_) => nwf(format!("ill-formed markup at byte {pos}")),
            QxError::Syntax(s) => nwf(format!("syntax error ({s}) at byte {pos}")),
            QxError::InvalidAttr(_) => nwf(format!("malformed attribute at byte {pos}")),
            QxError::Escape(_) => nwf(format!("malformed reference at byte {pos}")),
            QxError::Encoding(_) => err(
                ErrorClass::Encoding,
                format!("encoding error at byte {pos}"),
            ),
            QxError::Io(_) => nwf(format!("read error at byte {pos}")),
        }
    }

    fn check_text_len(&mut self, n: usize) -> Result<(), DecodeError> {
        self.text_run = self.text_run.saturating_add(n);
        if self.text_run > self.limits.max_text_bytes {
            return Err(err(
                ErrorClass::LimitExceeded,
                format!(
                    "text node longer than {} bytes at byte {}",
                    self.limits.max_text_bytes,
                    self.pos()
                ),
            ));
        }
        Ok(())
    }

    /// `s`, a name or value of the current event, as a slice of the input.
    fn borrow(&self, s: &str) -> Result<&'a str, DecodeError> {
        rebase(self.text, s).ok_or_else(|| {
            nwf(format!(
                "internal: a name outside the input at byte {}",
                self.pos()
            ))
        })
    }

    /// Checks a start tag and resolves its names; keeps its attributes
    /// only when `build`.
    fn element(&mut self, e: &BytesStart<'_>, build: bool) -> Result<Element<'a>, DecodeError> {
        let pos = self.pos();
        let name = e.name();
        let Some(name_colon) = qname(name.0) else {
            return Err(nwf(format!("malformed element name at byte {pos}")));
        };
        if name.0.starts_with("xmlns:") {
            return Err(nwf(format!(
                "element with the reserved prefix xmlns at byte {pos}"
            )));
        }
        self.keys.clear();
        self.pending.clear();
        let mut ns_decls = 0usize;
        for a in e.attributes().with_checks(false) {
            if self.keys.len() >= self.limits.max_attributes {
                return Err(err(
                    ErrorClass::LimitExceeded,
                    format!(
                        "more than {} attributes on one element at byte {pos}",
                        self.limits.max_attributes
                    ),
                ));
            }
            let a = a.map_err(|_| nwf(format!("malformed attribute at byte {pos}")))?;
            let key = a.key.0;
            let Some(colon) = qname(key) else {
                return Err(nwf(format!("malformed attribute name at byte {pos}")));
            };
            let key = self.borrow(key)?;
            if self.keys.contains(&key) {
                return Err(nwf(format!(
                    "duplicate attribute on one element at byte {pos}"
                )));
            }
            self.keys.push(key);
            // One pass over the value says whether either check below
            // has anything to look at.
            let (odd, special) = a.value.bytes().fold((false, false), |(odd, special), c| {
                (
                    odd | !(0x20..0xEF).contains(&c),
                    special | matches!(c, b'&' | b'<' | b'\t' | b'\n' | b'\r'),
                )
            });
            if odd && bad_char(&a.value).is_some() {
                return Err(nwf(format!(
                    "character not allowed in XML in an attribute value at byte {pos}"
                )));
            }
            let value = match a.value {
                Cow::Borrowed(v) if !special => Cow::Borrowed(self.borrow(v)?),
                Cow::Borrowed(v) => {
                    let v = self.borrow(v)?;
                    attr_value(v).map_err(|m| nwf(format!("{m} at byte {pos}")))?
                }
                Cow::Owned(v) => Cow::Owned(
                    attr_value(&v)
                        .map_err(|m| nwf(format!("{m} at byte {pos}")))?
                        .into_owned(),
                ),
            };
            if key == "xmlns" || key.starts_with("xmlns:") {
                ns_decls += 1;
                self.ns_total += 1;
                if ns_decls > self.limits.max_namespace_declarations {
                    return Err(err(
                        ErrorClass::LimitExceeded,
                        format!(
                            "more than {} namespace declarations on one element at byte {pos}",
                            self.limits.max_namespace_declarations
                        ),
                    ));
                }
                if self.ns_total > self.limits.max_namespace_declarations_total {
                    return Err(err(
                        ErrorClass::LimitExceeded,
                        format!(
                            "more than {} namespace declarations in the document at byte {pos}",
                            self.limits.max_namespace_declarations_total
                        ),
                    ));
                }
                if key != "xmlns" && value.is_empty() {
                    return Err(nwf(format!(
                        "namespace prefix bound to an empty name at byte {pos}"
                    )));
                }
                continue;
            }
            self.pending.push((key, colon, value));
        }
        let resolver = self.inner.resolver();
        let ns = match resolver.resolve_element(name).0 {
            ResolveResult::Bound(n) => Ns::of(n.0),
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(_) => {
                return Err(nwf(format!(
                    "element prefix not bound to a namespace at byte {pos}"
                )));
            }
        };
        let local = local_part(
            rebase(self.text, name.0)
                .ok_or_else(|| nwf(format!("internal: a name outside the input at byte {pos}")))?,
            name_colon,
        );
        let mut attrs: Vec<Attr<'a>> = if build {
            Vec::with_capacity(self.pending.len())
        } else {
            Vec::new()
        };
        for j in 0..self.pending.len() {
            let (key, colon, _) = self.pending[j];
            let alocal = local_part(key, colon);
            let ans = if colon.is_none() {
                Ns::None
            } else {
                match resolver.resolve_attribute(QName(key)).0 {
                    ResolveResult::Bound(n) => {
                        // Two prefixes bound to one namespace name the same
                        // attribute: compare expanded names with the
                        // prefixed attributes before this one.
                        for &(earlier, ecolon, _) in &self.pending[..j] {
                            if ecolon.is_some()
                                && local_part(earlier, ecolon) == alocal
                                && let ResolveResult::Bound(m) =
                                    resolver.resolve_attribute(QName(earlier)).0
                                && m.0 == n.0
                            {
                                return Err(nwf(format!(
                                    "duplicate attribute on one element at byte {pos}"
                                )));
                            }
                        }
                        Ns::of(n.0)
                    }
                    ResolveResult::Unbound => Ns::None,
                    ResolveResult::Unknown(_) => {
                        return Err(nwf(format!(
                            "attribute prefix not bound to a namespace at byte {pos}"
                        )));
                    }
                }
            };
            if build {
                attrs.push(Attr {
                    ns: ans,
                    local: alocal,
                    value: std::mem::take(&mut self.pending[j].2),
                });
            }
        }
        Ok(Element { ns, local, attrs })
    }

    /// The next event. After an error the reader must not be used again.
    pub fn next(&mut self) -> Result<XmlEvent<'a>, DecodeError> {
        self.next_event(true)
    }

    /// The next event; with every check, but a `Start` carries its
    /// attributes and a reference its character only when `build`.
    fn next_event(&mut self, build: bool) -> Result<XmlEvent<'a>, DecodeError> {
        if self.pending_end {
            self.pending_end = false;
            self.depth -= 1;
            return Ok(XmlEvent::End);
        }
        if self.done {
            return Ok(XmlEvent::Eof);
        }
        loop {
            let ev = match self.inner.read_event() {
                Ok(ev) => ev,
                Err(e) => return Err(self.map_err(e)),
            };
            self.events += 1;
            let first = self.events == 1;
            let pos = self.pos();
            match ev {
                Event::Decl(d) => {
                    self.lt_in_pi |= d.contains('<');
                    if !first {
                        return Err(nwf(format!(
                            "XML declaration not at the start at byte {pos}"
                        )));
                    }
                    match d.version() {
                        Ok(v) if v.as_ref() == "1.0" => {}
                        _ => return Err(nwf("XML declaration without version 1.0")),
                    }
                }
                Event::DocType(_) => {
                    return Err(err(
                        ErrorClass::Doctype,
                        format!("DOCTYPE declaration at byte {pos}"),
                    ));
                }
                Event::PI(pi) => {
                    self.lt_in_pi |= pi.contains('<');
                    let target = pi.target();
                    if !is_ncname(target) || target.eq_ignore_ascii_case("xml") {
                        return Err(nwf(format!(
                            "malformed processing instruction at byte {pos}"
                        )));
                    }
                    if bad_char(pi.content()).is_some() {
                        return Err(nwf(format!(
                            "character not allowed in XML in a processing instruction at byte {pos}"
                        )));
                    }
                    self.text_run = 0;
                }
                Event::Comment(c) => {
                    let body = c.into_inner();
                    if body.ends_with('-') {
                        return Err(nwf(format!("comment ending in '-' at byte {pos}")));
                    }
                    if bad_char(&body).is_some() {
                        return Err(nwf(format!(
                            "character not allowed in XML in a comment at byte {pos}"
                        )));
                    }
                }
                Event::Start(e) | Event::Empty(e) if self.depth == 0 && self.root_seen => {
                    let _ = e;
                    return Err(nwf(format!("second root element at byte {pos}")));
                }
                Event::Start(e) => {
                    let el = self.open(&e, build)?;
                    return Ok(XmlEvent::Start(el));
                }
                Event::Empty(e) => {
                    let el = self.open(&e, build)?;
                    self.pending_end = true;
                    return Ok(XmlEvent::Start(el));
                }
                Event::End(_) => {
                    self.text_run = 0;
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(XmlEvent::End);
                }
                Event::Text(t) => {
                    let body = t.into_inner();
                    // Text with no control character, no `]` and nothing
                    // from U+F000 up (most text, the base64 of an archive
                    // message included) needs neither check below.
                    let plain = body.bytes().all(|c| {
                        ((0x20..0xEF).contains(&c) & (c != b']'))
                            | (c == b'\n')
                            | (c == b'\t')
                            | (c == b'\r')
                    });
                    if !plain && bad_char(&body).is_some() {
                        return Err(nwf(format!(
                            "character not allowed in XML in text at byte {pos}"
                        )));
                    }
                    if !plain && body.contains("]]>") {
                        return Err(nwf(format!("']]>' in text at byte {pos}")));
                    }
                    if self.depth == 0 {
                        if !body.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
                            return Err(nwf(format!(
                                "text outside the root element at byte {pos}"
                            )));
                        }
                        continue;
                    }
                    self.check_text_len(body.len())?;
                    return Ok(XmlEvent::Text(body));
                }
                Event::CData(t) => {
                    if self.depth == 0 {
                        return Err(nwf(format!("CDATA outside the root element at byte {pos}")));
                    }
                    let body = t.into_inner();
                    if bad_char(&body).is_some() {
                        return Err(nwf(format!(
                            "character not allowed in XML in CDATA at byte {pos}"
                        )));
                    }
                    self.check_text_len(body.len())?;
                    return Ok(XmlEvent::Text(body));
                }
                Event::GeneralRef(r) => {
                    if self.depth == 0 {
                        return Err(nwf(format!(
                            "reference outside the root element at byte {pos}"
                        )));
                    }
                    let name = r.into_inner();
                    let c = resolve_ref(&name).map_err(|m| nwf(format!("{m} at byte {pos}")))?;
                    self.check_text_len(c.len_utf8())?;
                    if !build {
                        return Ok(XmlEvent::Text(Cow::Borrowed("")));
                    }
                    return Ok(XmlEvent::Text(Cow::Owned(c.to_string())));
                }
                Event::Eof => {
                    if !self.root_seen {
                        return Err(nwf("no root element"));
                    }
                    if self.depth > 0 {
                        return Err(nwf(format!(
                            "{} element(s) not closed at the end of the input",
                            self.depth
                        )));
                    }
                    self.done = true;
                    return Ok(XmlEvent::Eof);
                }
            }
        }
    }

    fn open(&mut self, e: &BytesStart<'_>, build: bool) -> Result<Element<'a>, DecodeError> {
        self.text_run = 0;
        if self.depth >= self.limits.max_depth {
            return Err(err(
                ErrorClass::LimitExceeded,
                format!(
                    "elements nested deeper than {} at byte {}",
                    self.limits.max_depth,
                    self.pos()
                ),
            ));
        }
        let el = self.element(e, build)?;
        self.depth += 1;
        self.root_seen = true;
        Ok(el)
    }

    /// Reads to the end of the element whose `Start` was just returned,
    /// checking everything on the way.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        let mut open = 1usize;
        while open > 0 {
            match self.next_event(false)? {
                XmlEvent::Start(_) => open += 1,
                XmlEvent::End => open -= 1,
                XmlEvent::Text(_) => {}
                XmlEvent::Eof => return Err(nwf("element not closed at the end of the input")),
            }
        }
        Ok(())
    }

    /// Reads the rest of the document, checking it.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        loop {
            if let XmlEvent::Eof = self.next_event(false)? {
                return Ok(());
            }
        }
    }
}

/// Checks a whole input: pre-checks plus a full streaming pass.
#[cfg(test)]
pub(crate) fn check(bytes: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    let input = Prechecked::new(bytes, limits.max_document_bytes)?;
    let mut r = XmlReader::new(input.text, limits);
    let result = r.finish();
    let scan = r.doctype_scan_needed();
    let deferred = input.finish(result, scan);
    // The deferred scan answers as the whole-input pre-check did.
    let eager = precheck(bytes, limits).and_then(|text| XmlReader::new(text, limits).finish());
    assert_eq!(
        deferred.as_ref().err().map(|e| e.class),
        eager.as_ref().err().map(|e| e.class)
    );
    deferred
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(doc: &str) -> Option<ErrorClass> {
        check(doc.as_bytes(), &Limits::default())
            .err()
            .map(|e| e.class)
    }

    #[test]
    fn well_formed_documents_pass() {
        assert_eq!(class("<a/>"), None);
        assert_eq!(
            class(
                "\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<a x='1'>t&amp;&#x41;&#65;<![CDATA[<>]]><!-- c --><?pi x?></a>\n"
            ),
            None
        );
        assert_eq!(class("<a xmlns:p='u'><p:b p:c='1'/></a>"), None);
        assert_eq!(class("<a xml:lang='fi'/>"), None);
    }

    #[test]
    fn well_formedness_errors() {
        let nwf = Some(ErrorClass::NotWellFormed);
        assert_eq!(class("<a><b></a></b>"), nwf, "mismatched end tag");
        assert_eq!(class("<a><b></b>"), nwf, "unclosed at EOF");
        assert_eq!(class("<a/><b/>"), nwf, "two roots");
        assert_eq!(class("<a/>text"), nwf, "text after root");
        assert_eq!(class("<a>&#xFFFFFFFFFF;</a>"), nwf, "char ref overflow");
        assert_eq!(class("<a>&#0;</a>"), nwf, "char ref to NUL");
        assert_eq!(class("<a>&nbsp;</a>"), nwf, "undeclared entity");
        assert_eq!(class("<a x='\u{16}'/>"), nwf, "control char in attribute");
        assert_eq!(class("<a p:x='1'/>"), nwf, "unbound attribute prefix");
        assert_eq!(class("<p:a/>"), nwf, "unbound element prefix");
        assert_eq!(class("<a x='1' x='2'/>"), nwf, "duplicate attribute");
        assert_eq!(
            class("<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>"),
            nwf,
            "duplicate expanded attribute"
        );
        assert_eq!(class("<a x='<'/>"), nwf, "lt in attribute");
        assert_eq!(class(""), nwf, "empty");
        assert_eq!(class("<a><<b/></a>"), nwf, "stray <<");
        assert_eq!(
            class("<a><!-- x -- y --></a>"),
            nwf,
            "double hyphen in comment"
        );
        assert_eq!(class("<a>\u{1}</a>"), nwf, "control char in text");
        assert_eq!(class(" <?xml version='1.0'?><a/>"), nwf, "late declaration");
    }

    #[test]
    fn encoding_and_doctype_come_first() {
        assert_eq!(
            class("<?xml version='1.0' encoding='ISO-8859-1'?><a/>"),
            Some(ErrorClass::Encoding)
        );
        assert_eq!(
            check(b"<a>\xff</a>", &Limits::default())
                .err()
                .map(|e| e.class),
            Some(ErrorClass::Encoding)
        );
        assert_eq!(
            check(b"\xff\xfe<\0a\0/\0>\0", &Limits::default())
                .err()
                .map(|e| e.class),
            Some(ErrorClass::Encoding)
        );
        assert_eq!(class("<!DOCTYPE a><a></b>"), Some(ErrorClass::Doctype));
        assert_eq!(class("<a><!-- <!DOCTYPE x> --></a>"), None);
        assert_eq!(class("<a><![CDATA[<!DOCTYPE x>]]></a>"), None);
        // A DOCTYPE anywhere outside comments and CDATA, even where the
        // parser would accept the text, or after a later error.
        assert_eq!(
            class("<a><?pi <!DOCTYPE x> ?></a>"),
            Some(ErrorClass::Doctype)
        );
        assert_eq!(
            class("<?xml version='1.0' <!doctype?><a/>"),
            Some(ErrorClass::Doctype)
        );
        assert_eq!(class("<a x='<!DOCTYPE'/>"), Some(ErrorClass::Doctype));
        assert_eq!(class("<a></b><!DOCTYPE a>"), Some(ErrorClass::Doctype));
        assert_eq!(
            class("<a><?pi <!-- ?><!DOCTYPE a><!-- --></a>"),
            Some(ErrorClass::Doctype)
        );
        assert_eq!(class("<a><?pi <!-- ?></a><!-- <!DOCTYPE a> -->"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// `check` asserts that the deferred DOCTYPE scan gives the class
        /// the eager whole-input scan gave, on markup built to desynchronise
        /// the scan (a `<` in processing instructions, comments, CDATA).
        #[test]
        fn the_deferred_doctype_scan_answers_as_the_eager_one(
            s in "(<a>|</a>|<a/>|<\\?p[ <!x-]{0,6}\\?>|<!--[ <!x]{0,4}-->|<!\\[CDATA\\[[<!x]{0,3}\\]\\]>|<!DOCTYPE a>|<!doctype|<!DOCTYPE|<\\?xml version='1.0'[ <!]{0,3}\\?>|[ x<!>-]){0,14}"
        ) {
            let _ = check(s.as_bytes(), &Limits::default());
        }
    }

    proptest::proptest! {
        #[test]
        fn qname_agrees_with_the_reference(s in "[a-zA-Z_:0-9.\\-\u{B7}\u{C0}\u{300}\u{2070}é ]{0,8}") {
            let got = qname(&s);
            proptest::prop_assert_eq!(got.is_some(), is_qname(&s));
            if let Some(colon) = got {
                proptest::prop_assert_eq!(colon, s.find(':'));
            }
        }
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let e = check(b"<a><b><c><d/></c></b></a>", &limits).err();
        assert_eq!(e.map(|e| e.class), Some(ErrorClass::LimitExceeded));
        let many: String = (0..300).map(|i| format!(" a{i}='1'")).collect();
        assert_eq!(
            class(&format!("<a{many}/>")),
            Some(ErrorClass::LimitExceeded)
        );
    }

    #[test]
    fn names_resolve_to_namespaces() {
        let doc = "<x:a xmlns:x='urn:hl7-org:v3' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'><b xmlns='urn:hl7finland' xsi:type='v3:PQ' v='a&amp;b'/></x:a>";
        let limits = Limits::default();
        let mut r = XmlReader::new(doc, &limits);
        let XmlEvent::Start(a) = r.next().expect("ok") else {
            panic!("start")
        };
        assert!(a.is_v3("a"));
        let XmlEvent::Start(b) = r.next().expect("ok") else {
            panic!("start")
        };
        assert!(b.is(Ns::Fi, "b"));
        assert_eq!(b.xsi_type(), Some("PQ"));
        assert_eq!(b.attr("v"), Some("a&b"));
    }
}
