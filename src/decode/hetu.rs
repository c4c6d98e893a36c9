//! The henkilötunnus (hetu): `DDMMYY` + century sign + individual number
//! `NNN` + check character (DOMAIN.md §3). Validation, century, sex, birth
//! date, and the test range (individual numbers 900–999).
//!
//! A hetu never appears in an error message: [`HetuError`] says what is wrong,
//! never with which value.

use chrono::NaiveDate;

/// The 31 check characters, indexed by `DDMMYYNNN mod 31`.
pub const CHECK_CHARS: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";

/// Century signs and the century they mean.
pub const CENTURY_SIGNS: [(u8, i32); 13] = [
    (b'+', 1800),
    (b'-', 1900),
    (b'Y', 1900),
    (b'X', 1900),
    (b'W', 1900),
    (b'V', 1900),
    (b'U', 1900),
    (b'A', 2000),
    (b'B', 2000),
    (b'C', 2000),
    (b'D', 2000),
    (b'E', 2000),
    (b'F', 2000),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HetuError {
    #[error("hetu has the wrong length (expected 11 characters)")]
    Length,
    #[error("hetu date part is not six digits")]
    DateDigits,
    #[error("hetu century sign is not one of + - Y X W V U A B C D E F")]
    CenturySign,
    #[error("hetu individual number is not three digits in 002-999")]
    IndividualNumber,
    #[error("hetu date part is not a calendar date")]
    Date,
    #[error("hetu check character does not match")]
    CheckCharacter,
}

/// A validated hetu. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hetu(String);

impl std::fmt::Debug for Hetu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hetu(<redacted>)")
    }
}

fn century(sign: u8) -> Option<i32> {
    CENTURY_SIGNS
        .iter()
        .find(|(s, _)| *s == sign)
        .map(|(_, c)| *c)
}

/// The check character for `DDMMYY` and `NNN` (both all digits).
pub fn check_char(ddmmyy: &str, nnn: &str) -> Option<char> {
    let digits: String = [ddmmyy, nnn].concat();
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(CHECK_CHARS[(n % 31) as usize] as char)
}

impl Hetu {
    /// Validates a hetu as written (upper case; lower-case check characters
    /// are accepted and normalised).
    pub fn parse(s: &str) -> Result<Hetu, HetuError> {
        let s = s.trim();
        if s.len() != 11 || !s.is_ascii() {
            return Err(HetuError::Length);
        }
        let upper = s.to_ascii_uppercase();
        let b = upper.as_bytes();
        let ddmmyy = &upper[0..6];
        if !ddmmyy.bytes().all(|c| c.is_ascii_digit()) {
            return Err(HetuError::DateDigits);
        }
        let century = century(b[6]).ok_or(HetuError::CenturySign)?;
        let nnn = &upper[7..10];
        if !nnn.bytes().all(|c| c.is_ascii_digit()) {
            return Err(HetuError::IndividualNumber);
        }
        let individual: u32 = nnn.parse().map_err(|_| HetuError::IndividualNumber)?;
        if individual < 2 {
            return Err(HetuError::IndividualNumber);
        }
        let day: u32 = ddmmyy[0..2].parse().map_err(|_| HetuError::DateDigits)?;
        let month: u32 = ddmmyy[2..4].parse().map_err(|_| HetuError::DateDigits)?;
        let yy: i32 = ddmmyy[4..6].parse().map_err(|_| HetuError::DateDigits)?;
        NaiveDate::from_ymd_opt(century + yy, month, day).ok_or(HetuError::Date)?;
        let expected = check_char(ddmmyy, nnn).ok_or(HetuError::DateDigits)?;
        if b[10] as char != expected {
            return Err(HetuError::CheckCharacter);
        }
        Ok(Hetu(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn birth_date(&self) -> NaiveDate {
        let s = &self.0;
        let century = century(s.as_bytes()[6]).unwrap_or(1900);
        let parse = |a: usize, b: usize| s[a..b].parse::<u32>().unwrap_or(1);
        NaiveDate::from_ymd_opt(
            century + parse(4, 6) as i32,
            parse(2, 4),
            parse(0, 2),
        )
        .unwrap_or_default()
    }

    pub fn individual_number(&self) -> u32 {
        self.0[7..10].parse().unwrap_or(0)
    }

    /// Odd individual numbers are male, even female.
    pub fn is_male(&self) -> bool {
        self.individual_number() % 2 == 1
    }

    /// Individual numbers 900–999 are never given to real people as permanent
    /// identity codes.
    pub fn is_test_range(&self) -> bool {
        self.individual_number() >= 900
    }
}

/// Builds a valid hetu from its parts (the synthetic generator's only way to
/// make one). `individual` must be 2..=999, `sign` a century sign matching the
/// date's century.
pub fn make(date: NaiveDate, sign: u8, individual: u32) -> Option<Hetu> {
    use chrono::Datelike;
    let c = century(sign)?;
    if date.year() < c || date.year() >= c + 100 || !(2..=999).contains(&individual) {
        return None;
    }
    let ddmmyy = format!(
        "{:02}{:02}{:02}",
        date.day(),
        date.month(),
        date.year() - c
    );
    let nnn = format!("{individual:03}");
    let check = check_char(&ddmmyy, &nnn)?;
    Hetu::parse(&format!("{ddmmyy}{}{nnn}{check}", sign as char)).ok()
}

/// Finds hetu-shaped substrings (valid or not) in `text`: the shape a leak
/// check looks for. Returns the byte offsets of each match.
pub fn find_hetu_shaped(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut hits = Vec::new();
    if b.len() < 11 {
        return hits;
    }
    for i in 0..=b.len() - 11 {
        let w = &b[i..i + 11];
        let boundary_before = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let boundary_after = i + 11 == b.len() || !b[i + 11].is_ascii_alphanumeric();
        if boundary_before
            && boundary_after
            && w[..6].iter().all(u8::is_ascii_digit)
            && century(w[6]).is_some()
            && w[7..10].iter().all(u8::is_ascii_digit)
            && w[10].is_ascii_alphanumeric()
            && (w[0] <= b'3')
            && (w[2] <= b'1')
        {
            hits.push(i);
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_test_identities() {
        for ok in [
            "150245-987R",
            "150245Y987R",
            "140372-912E",
            "050658-9334",
            "221190Y951Y",
            "010105A9767",
        ] {
            assert!(Hetu::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Hetu::parse("150848-999B"),
            Err(HetuError::CheckCharacter),
            "the author id of the real archive message has a wrong check character"
        );
        assert_eq!(Hetu::parse("150245Q987R"), Err(HetuError::CenturySign));
        assert_eq!(Hetu::parse("310245-987R"), Err(HetuError::Date));
        assert_eq!(Hetu::parse("150245-98R"), Err(HetuError::Length));
    }

    #[test]
    fn errors_never_contain_the_value() {
        let e = Hetu::parse("150245-987X").expect_err("bad check");
        assert!(!e.to_string().contains("150245"));
        let h = Hetu::parse("150245-987R").expect("valid");
        assert!(!format!("{h:?}").contains("150245"));
    }

    #[test]
    fn make_and_parts() {
        let d = NaiveDate::from_ymd_opt(2005, 1, 1).expect("date");
        let h = make(d, b'A', 976).expect("valid");
        assert_eq!(h.as_str(), "010105A9767", "the fixture identity P4");
        assert_eq!(h.birth_date(), d);
        assert!(!h.is_male());
        assert!(h.is_test_range());
        assert!(make(d, b'-', 976).is_none(), "century sign must match the year");
    }

    #[test]
    fn shaped_finder() {
        let text = "x 150245-987R y,010105A9767;abc150245-987Rdef";
        assert_eq!(find_hetu_shaped(text).len(), 2);
    }
}
