//! Decode: bytes of one Kanta document (a bare CDA R2 `ClinicalDocument`, or
//! an RCMR archive message carrying one) into a [`DecodedDocument`].
//!
//! The decoder streams with quick-xml and enforces XML well-formedness and
//! resource limits itself (quick-xml is lenient). Every refusal is one
//! [`DecodeError`] of exactly one [`ErrorClass`], checked in the order
//! encoding → DOCTYPE → not well-formed → limit exceeded → not a CDA document
//! (or a fragment, or a broken archive package) → invalid patient id.
//!
//! It must not: read files, log, or put document content (a hetu, a name,
//! text) into an error. Errors name the problem; the caller names the
//! document (by position or digest, never by a path).

pub mod hetu;

mod archive;
mod cda;
mod entries;
mod number;
mod precheck;
mod prohibition;
mod tree;
mod xml;

use serde::{Deserialize, Serialize};

use crate::codes::CodeSystems;
use crate::record::DecodedDocument;

/// Resource limits for one document. Defaults are sized for real Kanta
/// documents (tens of kB, a few MB with attachments) with a wide margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of the input as read (document or archive message).
    pub max_document_bytes: usize,
    /// Bytes of a CDA document decoded from an archive message's base64.
    pub max_archive_decoded_bytes: usize,
    /// Element nesting depth.
    pub max_depth: usize,
    /// Attributes on one element (namespace declarations included).
    pub max_attributes: usize,
    /// Namespace declarations on one element.
    pub max_namespace_declarations: usize,
    /// Namespace declarations in the whole document.
    pub max_namespace_declarations_total: usize,
    /// `entry` elements in one document.
    pub max_entries: usize,
    /// Bytes of one text node (the base64 of an archive message included).
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 64 * 1024 * 1024,
            max_archive_decoded_bytes: 48 * 1024 * 1024,
            max_depth: 256,
            max_attributes: 256,
            max_namespace_declarations: 32,
            max_namespace_declarations_total: 1024,
            max_entries: 100_000,
            max_text_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a document was refused. The order of the variants is the order in
/// which the classes are checked: one document gets exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Not UTF-8, or an encoding declaration other than UTF-8.
    Encoding,
    /// A DOCTYPE declaration (refused whatever it declares).
    Doctype,
    /// Not well-formed XML (or namespace-well-formed).
    NotWellFormed,
    /// A resource limit was exceeded.
    LimitExceeded,
    /// Well-formed, but not a CDA R2 document or archive message.
    NotCda,
    /// A CDA section-level fragment (no `ClinicalDocument`).
    Fragment,
    /// An archive message whose MIME or base64 package is broken.
    Packaging,
    /// The patient's id (`recordTarget`) is under the hetu root but invalid.
    InvalidPatientId,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Encoding => "encoding",
            ErrorClass::Doctype => "doctype",
            ErrorClass::NotWellFormed => "not_well_formed",
            ErrorClass::LimitExceeded => "limit_exceeded",
            ErrorClass::NotCda => "not_cda",
            ErrorClass::Fragment => "fragment",
            ErrorClass::Packaging => "packaging",
            ErrorClass::InvalidPatientId => "invalid_patient_id",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused document: its class and a description of the problem that
/// never quotes document content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {detail}")]
pub struct DecodeError {
    pub class: ErrorClass,
    pub detail: String,
}

impl DecodeError {
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            class,
            detail: detail.into(),
        }
    }
}

/// Decodes one document with the shipped code-system table.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<DecodedDocument, DecodeError> {
    decode_with(bytes, limits, crate::codes::default_table())
}

/// Decodes one document: a bare CDA R2 document or an RCMR_IN100002FI01 /
/// RCMR_IN100016FI01 archive message.
pub fn decode_with(
    bytes: &[u8],
    limits: &Limits,
    codes: &CodeSystems,
) -> Result<DecodedDocument, DecodeError> {
    cda::decode(bytes, limits, codes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &Limits::default());
        }

        #[test]
        fn arbitrary_markup_never_panics(s in "(<[a-z:]{0,3}( [a-z:]{1,3}=['\"][^<]{0,4}['\"])?/?>|</[a-z:]{0,3}>|&[#a-z0-9]{0,5};|[a-z <>&;]){0,40}") {
            let _ = decode(s.as_bytes(), &Limits::default());
        }
    }
}
