//! PLACEHOLDER: replaced by the decoder work.
use super::{DecodeError, ErrorClass, Limits};
use crate::codes::CodeSystems;
use crate::record::DecodedDocument;

pub(super) fn decode(
    _bytes: &[u8],
    _limits: &Limits,
    _codes: &CodeSystems,
) -> Result<DecodedDocument, DecodeError> {
    Err(DecodeError::new(ErrorClass::NotCda, "decoder not written yet"))
}
