//! Privacy gate for a pseudonymised feed: a whole run through the real
//! binary at the most verbose log level, with refused documents whose file
//! names contain hetus, leaves no hetu-shaped string and no corpus name in
//! any log line, error, printed output, batch file or file name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use regfeed::decode::hetu::find_hetu_shaped;

fn regfeed(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("REGFEED_LOG", "trace")
        .env_remove("RUST_LOG")
        .output()
        .expect("run regfeed");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn assert_clean(what: &str, text: &str, names: &[String]) {
    let hits = find_hetu_shaped(text);
    assert!(
        hits.is_empty(),
        "{what}: hetu-shaped text at {:?}: {:?}",
        hits,
        hits.iter()
            .map(|&i| &text[i.saturating_sub(30)..(i + 41).min(text.len())])
            .collect::<Vec<_>>()
    );
    for n in names {
        assert!(
            !text.contains(n.as_str()),
            "{what}: the corpus name {n:?} appears"
        );
    }
}

#[test]
fn a_verbose_run_leaks_no_identity_or_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    let plan = regfeed::synth::plan(300, 7);
    regfeed::synth::write_corpus(&plan, &corpus).expect("corpus");
    let truth = regfeed::synth::truth::compute(&plan);
    // Names of at least three letters: a two-letter name could occur by
    // chance inside an OID-free word.
    let names: Vec<String> = truth
        .names
        .iter()
        .filter(|n| n.len() >= 3)
        .cloned()
        .collect();

    // Refused and odd documents, named by hetus as producers sometimes do.
    let person = &truth.persons[0].hetu;
    let hostile = corpus.join("docs/incoming");
    std::fs::create_dir_all(&hostile).expect("dir");
    std::fs::write(
        hostile.join(format!("{person}.xml")),
        b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><unclosed>",
    )
    .expect("write");
    std::fs::write(
        hostile.join("010101-900R-doctype.xml"),
        b"<!DOCTYPE x [<!ENTITY a \"010101-900R\">]><x>&a;</x>",
    )
    .expect("write");
    if let Some(data) = common::shared_data() {
        // A real document whose patient has a wrong check character.
        let f02 =
            std::fs::read_to_string(data.join("fixtures/f02-visit-decorated-and-negated.xml"))
                .expect("fixture");
        std::fs::write(
            hostile.join("050658-9335-bad-check.xml"),
            f02.replace("050658-9334", "050658-9335").replace(
                "1.2.246.10.32213086.93.2026.102",
                "1.2.246.10.32213086.93.2026.902",
            ),
        )
        .expect("write");
    }

    let setup = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    let mut transcript = String::new();
    for args in [
        &["validate"][..],
        &["once", "--feed", "thl-diabetes"],
        &["once", "--feed", "thl-vaccination"],
        &["preview", "--feed", "thl-diabetes"],
        &["held", "list"],
        &["once", "--feed", "no-such-feed"],
    ] {
        let (ok, text) = regfeed(args, &setup.config);
        assert!(
            ok || args.contains(&"no-such-feed"),
            "{args:?} failed:\n{text}"
        );
        transcript.push_str(&text);
    }
    assert!(
        transcript.contains("quarantined"),
        "the hostile files were seen"
    );
    assert_clean("logs and output", &transcript, &names);

    // Every file the run wrote: names and, for batches, contents.
    let mut files = Vec::new();
    walk(&setup.dir, &mut files);
    let mut batches = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&setup.dir)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        assert_clean("a file name", &rel, &names);
        if rel.starts_with("delivered/") || rel.starts_with("state/outbox/") {
            batches += 1;
            let body = std::fs::read_to_string(f).expect("utf-8");
            assert_clean(&rel, &body, &names);
        }
    }
    assert!(
        batches >= 4,
        "batches and manifests were written: {batches}"
    );
}
