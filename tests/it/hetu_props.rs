//! Properties of the henkilötunnus (DOMAIN.md §3): what `hetu::make` builds
//! `Hetu::parse` accepts; any single-character change to the checksummed part
//! or to the check character is refused; another sign of the same century is
//! another valid hetu; distinct parts give distinct hetus.

use std::collections::HashSet;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;
use regfeed::decode::hetu::{CENTURY_SIGNS, CHECK_CHARS, Hetu, HetuError, make};

/// A valid (date, century sign, individual number) triple: any sign, a date in
/// that sign's century, an individual number in 2..=999.
fn parts() -> impl Strategy<Value = (NaiveDate, u8, u32)> {
    (0..CENTURY_SIGNS.len(), 0..100i32, 1..=366u32, 2..=999u32).prop_map(
        |(sign_index, yy, ordinal, individual)| {
            let (sign, century) = CENTURY_SIGNS[sign_index];
            let year = century + yy;
            let date = NaiveDate::from_yo_opt(year, ordinal)
                .or_else(|| NaiveDate::from_yo_opt(year, 365))
                .expect("day 365 exists in every year");
            (date, sign, individual)
        },
    )
}

fn century_of(sign: u8) -> i32 {
    CENTURY_SIGNS
        .iter()
        .find(|(s, _)| *s == sign)
        .map(|(_, c)| *c)
        .expect("a century sign")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn made_hetus_parse_and_keep_their_parts((date, sign, individual) in parts()) {
        let h = make(date, sign, individual).expect("valid parts make a hetu");
        let s = h.as_str();
        prop_assert_eq!(s.len(), 11);
        prop_assert_eq!(s.as_bytes()[6], sign);
        prop_assert_eq!(Hetu::parse(s), Ok(h.clone()));
        prop_assert_eq!(h.birth_date(), date);
        prop_assert_eq!(h.individual_number(), individual);
        prop_assert_eq!(h.is_male(), individual % 2 == 1);
        prop_assert_eq!(h.is_test_range(), individual >= 900);
        // Lower case is accepted and normalised.
        prop_assert_eq!(Hetu::parse(&s.to_ascii_lowercase()), Ok(h.clone()));
    }

    /// Changing one digit of `DDMMYYNNN` changes the number by `d * 10^k`
    /// with `1 <= |d| <= 9`. 31 is prime and divides neither `|d|` (< 31) nor
    /// `10^k` (= 2^k 5^k), so it does not divide the change: the number mod 31
    /// changes, the check character no longer matches, and the hetu is
    /// refused (or refused earlier, for a date that no longer exists or an
    /// individual number below 002). No single-digit change is ever accepted.
    #[test]
    fn any_single_digit_change_is_refused(
        (date, sign, individual) in parts(),
        position in prop::sample::select(vec![0usize, 1, 2, 3, 4, 5, 7, 8, 9]),
        delta in 1u8..=9,
    ) {
        let h = make(date, sign, individual).expect("valid parts make a hetu");
        let mut bytes = h.as_str().as_bytes().to_vec();
        let old = bytes[position] - b'0';
        bytes[position] = b'0' + (old + delta) % 10;
        let changed = String::from_utf8(bytes).expect("ASCII");
        prop_assert_ne!(&changed, h.as_str());
        let e = Hetu::parse(&changed).expect_err("a single-digit change must be refused");
        prop_assert!(
            matches!(e, HetuError::CheckCharacter | HetuError::Date | HetuError::IndividualNumber),
            "{:?}", e
        );
        // The individual-number digits leave the date valid: there the check
        // character (or the 002 floor) is what refuses it.
        if position >= 7 {
            prop_assert!(
                matches!(e, HetuError::CheckCharacter | HetuError::IndividualNumber),
                "{:?}", e
            );
        }
    }

    #[test]
    fn any_other_check_character_is_refused(
        (date, sign, individual) in parts(),
        other in prop::sample::select(
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec()
        ),
    ) {
        let h = make(date, sign, individual).expect("valid parts make a hetu");
        let s = h.as_str();
        prop_assume!(s.as_bytes()[10] != other);
        let changed = format!("{}{}", &s[..10], other as char);
        prop_assert_eq!(Hetu::parse(&changed), Err(HetuError::CheckCharacter));
    }

    /// The century sign is outside the checksum: another sign of the same
    /// century is another valid hetu (since 2023, another person).
    #[test]
    fn another_sign_of_the_same_century_is_another_valid_hetu(
        (date, sign, individual) in parts(),
        other_index in 0..CENTURY_SIGNS.len(),
    ) {
        let (other, other_century) = CENTURY_SIGNS[other_index];
        let h = make(date, sign, individual).expect("valid parts make a hetu");
        let s = h.as_str();
        let swapped = format!("{}{}{}", &s[..6], other as char, &s[7..]);
        if other == sign {
            prop_assert_eq!(swapped.as_str(), s);
        } else if other_century == century_of(sign) {
            let g = Hetu::parse(&swapped).expect("same century: still valid");
            prop_assert_ne!(g.as_str(), s);
            prop_assert_eq!(g.birth_date(), date);
            prop_assert_eq!(Some(g.clone()), make(date, other, individual));
        } else {
            // Another century: the same DDMMYY is another date, which may not
            // exist (29 February); when it does, it is another birth date.
            match Hetu::parse(&swapped) {
                Ok(g) => {
                    prop_assert_ne!(g.birth_date(), date);
                    prop_assert_eq!(g.birth_date().year() - date.year(), other_century - century_of(sign));
                }
                Err(e) => prop_assert_eq!(e, HetuError::Date),
            }
        }
    }

    #[test]
    fn distinct_parts_give_distinct_hetus(
        triples in prop::collection::hash_set(parts(), 1..300),
    ) {
        let made: HashSet<String> = triples
            .iter()
            .map(|&(d, s, i)| make(d, s, i).expect("valid parts make a hetu").as_str().to_owned())
            .collect();
        prop_assert_eq!(made.len(), triples.len());
    }
}

#[test]
fn the_check_alphabet_has_31_characters_without_g_i_o_q_z() {
    assert_eq!(CHECK_CHARS.len(), 31);
    for c in b"GIOQZ" {
        assert!(!CHECK_CHARS.contains(c));
    }
}

#[test]
fn make_refuses_parts_outside_its_contract() {
    let d = NaiveDate::from_ymd_opt(1999, 12, 31).expect("date");
    assert!(make(d, b'A', 950).is_none(), "2000s sign on a 1900s date");
    assert!(make(d, b'-', 1).is_none(), "individual number below 002");
    assert!(make(d, b'-', 1000).is_none(), "individual number above 999");
    assert!(make(d, b'Q', 950).is_none(), "not a century sign");
}
