//! Tells the integration tests (`tests/it`) which of the two things some of
//! them need from outside is missing, so that libtest reports those tests as
//! `ignored`, with the reason, instead of `ok` without having run:
//!
//! - `no_pg`: `REGFEED_TEST_DATABASE_URL` is unset (the PostgreSQL tests);
//! - `no_shared_data`: `../shared/data` is absent (the reference data).
//!
//! Under CI (`CI` set) neither is set: the tests run, and a missing database
//! or reference data fails them. The library and the binary do not use
//! these cfgs.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_pg)");
    println!("cargo::rustc-check-cfg=cfg(no_shared_data)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=REGFEED_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=CI");

    let ci = std::env::var_os("CI").is_some();
    let pg = std::env::var_os("REGFEED_TEST_DATABASE_URL").is_some_and(|u| !u.is_empty());
    if !pg && !ci {
        println!("cargo::rustc-cfg=no_pg");
    }

    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let data = Path::new(&manifest).join("../shared/data");
    if data.is_dir() {
        // Its removal reruns this script. (Its later arrival does not: a
        // missing path would rerun it, and rebuild the crate, every time;
        // `touch build.rs` after adding the data.)
        println!("cargo::rerun-if-changed={}", data.display());
    } else if !ci {
        println!("cargo::rustc-cfg=no_shared_data");
    }
}
