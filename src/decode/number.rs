//! Number forms as laboratories write them: `6,5` (decimal comma), ` 6.5 `
//! (stray spaces, also no-break spaces), `< 5`, `≥7`, `>=130`. A literal
//! that is none of these is not guessed at: the caller keeps it as written
//! and the mapping holds it (`unparseable_value`).
//!
//! Deliberately strict: a sign, digits, at most one decimal separator (`.`
//! or `,`), no exponent, no thousands separator, no `NaN`/`inf`. `1,234.5`
//! or `1 000` could be read two ways, so they are not read at all.

use crate::record::Comparator;

/// Spaces a laboratory system may put around or inside a value.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{a0}' || c == '\u{202f}'
}

/// A plain decimal number (`6,5`, `-0.25`, ` 7 `).
pub(crate) fn plain(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_space);
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    let mut seps = 0;
    let mut any_digit = false;
    for c in digits.chars() {
        match c {
            '0'..='9' => any_digit = true,
            '.' | ',' => seps += 1,
            _ => return None,
        }
    }
    if !any_digit || seps > 1 {
        return None;
    }
    let n: f64 = s.replace(',', ".").parse().ok()?;
    n.is_finite().then_some(n)
}

/// A number with an optional comparator in front (`<5`, `< 5`, `≤ 0,5`,
/// `>=130`). `None` when the text is not one of these forms.
pub(crate) fn compared(s: &str) -> Option<(Option<Comparator>, f64)> {
    let s = s.trim_matches(is_space);
    const PREFIXES: &[(&str, Comparator)] = &[
        ("<=", Comparator::Le),
        (">=", Comparator::Ge),
        ("=<", Comparator::Le),
        ("=>", Comparator::Ge),
        ("≤", Comparator::Le),
        ("≥", Comparator::Ge),
        ("<", Comparator::Lt),
        (">", Comparator::Gt),
    ];
    for (p, c) in PREFIXES {
        if let Some(rest) = s.strip_prefix(p) {
            return Some((Some(*c), plain(rest)?));
        }
    }
    Some((None, plain(s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finnish_laboratory_forms() {
        assert_eq!(plain("6,5"), Some(6.5));
        assert_eq!(plain("6.5 "), Some(6.5));
        assert_eq!(plain("\u{a0}48\u{a0}"), Some(48.0));
        assert_eq!(plain("-0,25"), Some(-0.25));
        assert_eq!(plain(",5"), Some(0.5));
        assert_eq!(compared("< 5"), Some((Some(Comparator::Lt), 5.0)));
        assert_eq!(compared("≥7"), Some((Some(Comparator::Ge), 7.0)));
        assert_eq!(compared("≤ 0,5"), Some((Some(Comparator::Le), 0.5)));
        assert_eq!(compared(">130"), Some((Some(Comparator::Gt), 130.0)));
        assert_eq!(compared(">=500"), Some((Some(Comparator::Ge), 500.0)));
        assert_eq!(compared("58"), Some((None, 58.0)));
    }

    #[test]
    fn ambiguous_or_foreign_forms_are_not_read() {
        for s in [
            "", " ", "NaN", "inf", "1e3", "1,234.5", "1 000", "6,5,1", "pos", "<", "< x", "+", ".",
            "5-7", "<<5",
        ] {
            assert_eq!(compared(s), None, "{s:?}");
        }
    }
}
