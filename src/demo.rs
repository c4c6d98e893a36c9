//! The embedded default, ready to run: writes keys (mode 0600), the shipped
//! mappings and a config into a folder, for `regfeed demo` and for tests.
//! Everything it writes is synthetic; the keys are fresh random keys.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::identity;

/// The shipped mappings, embedded so a demo folder is self-contained.
pub const MAPPINGS: &[(&str, &str)] = &[
    ("diabetes.toml", include_str!("../mappings/diabetes.toml")),
    (
        "vaccination.toml",
        include_str!("../mappings/vaccination.toml"),
    ),
    (
        "diabetes-research.toml",
        include_str!("../mappings/diabetes-research.toml"),
    ),
    (
        "county-statistics.toml",
        include_str!("../mappings/county-statistics.toml"),
    ),
];

/// Controllers the demo config knows: every organisation of the synthetic
/// corpus (and of the fixtures), by its organisation number, and Kela.
pub fn controllers() -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = crate::synth::plan::ORGS
        .iter()
        .map(|o| {
            (
                format!("org-{}", o.number),
                format!("{} (synthetic)", o.name),
                vec![format!("1.2.246.10.{}", o.number)],
            )
        })
        .collect();
    out.push((
        "kela".into(),
        "Kela".into(),
        vec!["1.2.246.10.2462460".into()],
    ));
    out
}

/// A feed the demo configures.
#[derive(Debug, Clone)]
pub struct DemoFeed {
    pub name: &'static str,
    pub register: &'static str,
    pub mapping: &'static str,
    pub recipient: &'static str,
    pub purpose: &'static str,
    pub art6: &'static str,
    pub art9: &'static str,
    pub statute: Option<&'static str>,
    pub channel: &'static str,
    pub discloses_to_other_controller: bool,
    /// The recipient is this controller (a county), and the feed uses only
    /// the records it controls (`scope = "recipient_controller"`).
    pub recipient_controller: Option<&'static str>,
}

pub const FEEDS: &[DemoFeed] = &[
    DemoFeed {
        name: "thl-diabetes",
        register: "thl-diabetes",
        mapping: "diabetes.toml",
        recipient: "thl",
        purpose: "statistics",
        art6: "6.1.c",
        art9: "9.2.i",
        statute: Some("THL Act 668/2008 §5"),
        channel: "direct",
        discloses_to_other_controller: true,
        recipient_controller: None,
    },
    DemoFeed {
        name: "thl-vaccination",
        register: "thl-vaccination",
        mapping: "vaccination.toml",
        recipient: "thl-vaccination",
        purpose: "statistics",
        art6: "6.1.c",
        art9: "9.2.i",
        statute: Some("Communicable Diseases Act 1227/2016 §49"),
        channel: "direct",
        discloses_to_other_controller: true,
        recipient_controller: None,
    },
    DemoFeed {
        name: "research-diabetes",
        register: "findata-permit-2026-017",
        mapping: "diabetes-research.toml",
        recipient: "findata-permit-2026-017",
        purpose: "scientific_research",
        art6: "6.1.e",
        art9: "9.2.j",
        statute: None,
        channel: "findata",
        discloses_to_other_controller: true,
        recipient_controller: None,
    },
    DemoFeed {
        name: "county-statistics",
        register: "pirkanmaa-statistics",
        mapping: "county-statistics.toml",
        recipient: "pirkanmaa",
        purpose: "statistics",
        art6: "6.1.e",
        art9: "9.2.h",
        statute: None,
        channel: "direct",
        discloses_to_other_controller: false,
        recipient_controller: Some("org-32213086"),
    },
];

/// Paths of a written setup.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub corpus: PathBuf,
    pub delivered: PathBuf,
}

/// Writes keys, mappings and `regfeed.toml` into `dir` for a corpus folder.
/// Existing keys are kept (a re-run keeps pseudonyms stable).
pub fn write_setup(dir: &Path, corpus: &Path) -> anyhow::Result<Setup> {
    let dir = std::path::absolute(dir).context("demo folder")?;
    let corpus = std::path::absolute(corpus).context("corpus folder")?;
    let keys = dir.join("keys");
    let mappings = dir.join("mappings");
    let delivered = dir.join("delivered");
    for d in [&keys, &mappings, &delivered] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut key_names = vec!["index.key".to_owned(), "audit.key".to_owned()];
    for f in FEEDS {
        key_names.push(format!("{}.pseudonym.key", f.recipient));
        key_names.push(format!("{}.record.key", f.name));
    }
    for k in &key_names {
        let p = keys.join(k);
        if !p.exists() {
            identity::generate_key_file(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    for (name, text) in MAPPINGS {
        std::fs::write(mappings.join(name), text).context("writing a mapping")?;
    }
    let config = dir.join("regfeed.toml");
    std::fs::write(&config, config_text(&corpus)).context("writing the config")?;
    Ok(Setup {
        dir,
        config,
        corpus,
        delivered,
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The demo config; paths other than the corpus are relative to its folder.
pub fn config_text(corpus: &Path) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# regfeed demo configuration (synthetic data, fresh keys).\n\n[daemon]\nstate_dir = \"state\"\n\n[keys]\nindex = \"keys/index.key\"\naudit = \"keys/audit.key\"\n"
    );
    for (id, name, oids) in controllers() {
        let oids: Vec<String> = oids.iter().map(|o| toml_str(o)).collect();
        let _ = writeln!(
            t,
            "[[controllers]]\nid = {}\nname = {}\noids = [{}]\n",
            toml_str(&id),
            toml_str(&name),
            oids.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "[[sources]]\nname = \"kanta-archive\"\nkind = \"archive_dir\"\npath = {}\n",
        toml_str(&corpus.to_string_lossy())
    );
    let mut recipients: Vec<&str> = FEEDS.iter().map(|f| f.recipient).collect();
    recipients.dedup();
    for r in recipients {
        let _ = writeln!(
            t,
            "[[recipients]]\nname = {}\npseudonym_key = {}\n",
            toml_str(r),
            toml_str(&format!("keys/{r}.pseudonym.key"))
        );
    }
    for f in FEEDS {
        let _ = writeln!(
            t,
            "[[feeds]]\nname = {name}\nregister = {reg}\nmapping = {map}\nsource = \"kanta-archive\"\nrecipient = {rec}\nrecord_key = {rk}\ntest = true  # synthetic data: its manifests say so\n{scope}\n[feeds.legal_basis]\npurpose = {p}\ngdpr_art6 = {a6}\ngdpr_art9 = {a9}\n{statute}channel = {ch}\nidentity = \"pseudonym\"\ndiscloses_to_other_controller = {disc}\n{rc}\n[feeds.sink]\nkind = \"file_drop\"\ndir = {sink}\n",
            name = toml_str(f.name),
            reg = toml_str(f.register),
            map = toml_str(&format!("mappings/{}", f.mapping)),
            rec = toml_str(f.recipient),
            rk = toml_str(&format!("keys/{}.record.key", f.name)),
            p = toml_str(f.purpose),
            a6 = toml_str(f.art6),
            a9 = toml_str(f.art9),
            statute = f
                .statute
                .map(|s| format!("statute = {}\n", toml_str(s)))
                .unwrap_or_default(),
            ch = toml_str(f.channel),
            disc = f.discloses_to_other_controller,
            scope = if f.recipient_controller.is_some() {
                "# Only the records its recipient controls (a county's own data).\nscope = \"recipient_controller\"\n"
            } else {
                ""
            },
            rc = f
                .recipient_controller
                .map(|c| format!("recipient_controller = {}\n", toml_str(c)))
                .unwrap_or_default(),
            sink = toml_str(&format!("delivered/{}", f.name)),
        );
    }
    t
}

/// The demo's policy inputs, as an import CSV: five people of the synthetic
/// cohort, each showing one cell of the decision table.
///
/// 1. an objection made to the controller of their records;
/// 2. an objection made to a controller that holds none of their records;
/// 3. an objection made to Findata;
/// 4. a restriction of processing (every controller);
/// 5. turvakielto.
pub fn policy_inputs(plan: &crate::synth::Plan) -> String {
    let truth = crate::synth::truth::compute(plan);
    let org_of = |oid: &str| -> Option<String> {
        crate::synth::plan::ORGS
            .iter()
            .find(|o| oid.starts_with(&format!("1.2.246.10.{}.", o.number)))
            .map(|o| format!("org-{}", o.number))
    };
    let members: Vec<&crate::synth::truth::PersonTruth> = truth
        .persons
        .iter()
        .filter(|p| p.in_cohort && p.rows.len() >= 3)
        .collect();
    let mut csv = String::from(
        "kind,hetu,made_to,purposes,effective_from,controller,start,since,source,reference\r\n",
    );
    // Objection 1 goes to someone all of whose records one controller holds,
    // so the research extract shows none of theirs (an objection binds only
    // the controller it was made to).
    let single = members.iter().position(|p| {
        p.rows
            .first()
            .is_some_and(|f| p.rows.iter().all(|r| r.controller == f.controller))
    });
    let mut members = members;
    let first = single.map(|i| members.remove(i));
    let mut it = first.into_iter().chain(members);
    if let Some(p) = it.next()
        && let Some(ctl) = p.rows.first().and_then(|r| org_of(&r.controller))
    {
        csv.push_str(&format!(
            "objection,{},{ctl},all,2026-01-01,,,,demo,OBJ-1\r\n",
            p.hetu
        ));
    }
    if let Some(p) = it.next() {
        let theirs: Vec<String> = p
            .rows
            .iter()
            .filter_map(|r| org_of(&r.controller))
            .collect();
        if let Some(other) = crate::synth::plan::ORGS
            .iter()
            .map(|o| format!("org-{}", o.number))
            .find(|id| !theirs.contains(id))
        {
            csv.push_str(&format!(
                "objection,{},{other},all,2026-01-01,,,,demo,OBJ-2\r\n",
                p.hetu
            ));
        }
    }
    if let Some(p) = it.next() {
        csv.push_str(&format!(
            "objection,{},findata,all,2026-01-01,,,,demo,OBJ-3\r\n",
            p.hetu
        ));
    }
    if let Some(p) = it.next() {
        csv.push_str(&format!(
            "restriction,{},,,,,2026-01-01,,demo,RES-1\r\n",
            p.hetu
        ));
    }
    if let Some(p) = it.next() {
        csv.push_str(&format!(
            "turvakielto,{},,,,,,2026-01-01,demo,TK-1\r\n",
            p.hetu
        ));
    }
    csv
}
