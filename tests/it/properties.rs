//! Property tests for OID normalisation against the shipped code-system
//! table (`config/code-systems.toml`). Pseudonym stability, key separation
//! and record ids across a pseudonym-key rotation are in `tests/identity.rs`;
//! the CSV writer's properties (round trip through the documented reader,
//! `'`-prefixed text included; no formula; numeric columns unquoted and
//! numeric) are in `tests/feed_format.rs`.

use proptest::prelude::*;
use regfeed::codes::{self, CodeSystems, default_table, is_oid};

/// Every OID the table lists (canonical or versioned form) → its canonical OID.
fn listed() -> Vec<(String, String)> {
    default_table()
        .systems()
        .iter()
        .flat_map(|s| {
            std::iter::once(&s.oid)
                .chain(&s.forms)
                .map(|f| (f.clone(), s.oid.clone()))
        })
        .collect()
}

fn listed_form() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(listed())
}

/// Well-formed OIDs: listed ones, listed ones with an extra arc (a
/// "version" the table does not know), and random ones.
fn any_oid() -> impl Strategy<Value = String> {
    let arc = prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,5}"];
    prop_oneof![
        listed_form().prop_map(|(f, _)| f),
        (listed_form(), arc.clone()).prop_map(|((f, _), a)| format!("{f}.{a}")),
        prop::collection::vec(arc, 1..12).prop_map(|arcs| arcs.join(".")),
    ]
}

#[test]
fn the_table_lists_versioned_forms() {
    // The properties below would be vacuous on a table without forms.
    let forms: usize = default_table()
        .systems()
        .iter()
        .map(|s| s.forms.len())
        .sum();
    assert!(forms > 0, "the shipped table lists no versioned forms");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every listed form, bare, as `urn:oid:` and with surrounding blanks,
    /// normalises to its system's canonical OID.
    #[test]
    fn listed_forms_normalise_to_their_canonical_oid(
        (form, canonical) in listed_form(),
        urn in any::<bool>(),
        pad in prop::sample::select(vec!["", " ", "\t", " \n"]),
    ) {
        let written = format!("{pad}{}{form}{pad}", if urn { "urn:oid:" } else { "" });
        let t = default_table();
        prop_assert_eq!(t.normalise(&written), canonical.as_str());
        prop_assert_eq!(codes::normalise(&written), canonical.clone());
        prop_assert_eq!(t.lookup(&written).map(|s| s.oid.as_str()), Some(canonical.as_str()));
    }

    /// A well-formed OID the table does not list comes back exactly as
    /// written (no trailing arc is stripped by rule); `urn:oid:` is dropped.
    #[test]
    fn unlisted_oids_are_unchanged(oid in any_oid(), urn in any::<bool>()) {
        prop_assume!(default_table().lookup(&oid).is_none());
        prop_assert!(is_oid(&oid));
        let written = if urn { format!("urn:oid:{oid}") } else { oid.clone() };
        prop_assert_eq!(default_table().normalise(&written), oid.as_str());
    }

    /// Normalising twice is normalising once, for any text at all.
    #[test]
    fn normalisation_is_idempotent(s in prop_oneof![
        any_oid(),
        any::<String>(),
        "(urn:oid:| |\t){0,4}[0-9.]{0,20}( |\n)?",
    ]) {
        let once = codes::normalise(&s);
        prop_assert_eq!(codes::normalise(&once), once.clone());
    }

    /// The canonical OID is a fixed point and names the same system.
    #[test]
    fn canonical_oids_are_fixed_points((form, canonical) in listed_form()) {
        let t = default_table();
        prop_assert_eq!(t.normalise(&canonical), canonical.as_str());
        prop_assert_eq!(
            t.lookup(&form).map(|s| &s.name),
            t.lookup(&canonical).map(|s| &s.name)
        );
    }
}

#[test]
fn a_table_that_lists_a_form_twice_is_refused() {
    let text = r#"
[[system]]
oid = "1.2.3"
name = "a"
title = "A"
forms = ["1.2.3.1"]

[[system]]
oid = "1.2.4"
name = "b"
title = "B"
forms = ["1.2.3.1"]
"#;
    assert!(CodeSystems::parse(text).is_err());
}
