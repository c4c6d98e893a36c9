//! `regfeed validate`: exit 0 on a good config; 78 with messages naming
//! file, line and field for a bad config, a bad mapping or an unsafe key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn validate(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn setup() -> (tempfile::TempDir, regfeed::demo::Setup) {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus");
    let s = regfeed::demo::write_setup(&tmp.path().join("demo"), &corpus).expect("setup");
    (tmp, s)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

/// The 1-based line of the first occurrence of `needle`.
fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn the_demo_config_is_valid() {
    let (_t, s) = setup();
    let (code, out) = validate(&s.config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn a_legal_obligation_without_its_statute_is_refused_with_file_line_and_field() {
    let (_t, s) = setup();
    edit(&s.config, "statute = \"THL Act 668/2008 §5\"\n", "");
    let line = line_of(&s.config, "[feeds.legal_basis]");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    let want = format!("{}:{line}: feeds.legal_basis.statute:", s.config.display());
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
}

#[test]
fn a_feed_that_leaves_its_channel_unsaid_is_refused() {
    let (_t, s) = setup();
    edit(&s.config, "channel = \"direct\"\n", "");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("feeds.legal_basis.channel: must be stated"),
        "{out}"
    );
}

#[test]
fn unknown_keys_and_unknown_references_name_their_line() {
    let (_t, s) = setup();
    edit(
        &s.config,
        "source = \"kanta-archive\"",
        "source = \"nowhere\"",
    );
    let line = line_of(&s.config, "source = \"nowhere\"");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains(&format!(
            "{}:{line}: feeds.source: no source of that name",
            s.config.display()
        )),
        "{out}"
    );

    let (_t2, s2) = setup();
    edit(&s2.config, "[daemon]\n", "[daemon]\nstate_dri = \"x\"\n");
    let (code, out) = validate(&s2.config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains(&format!(
            "{}:{}:",
            s2.config.display(),
            line_of(&s2.config, "state_dri")
        )),
        "{out}"
    );
}

#[test]
fn a_mapping_error_names_the_mapping_file_line_and_field() {
    let (_t, s) = setup();
    let mapping = s.dir.join("mappings/diabetes.toml");
    edit(
        &mapping,
        "value = \"record.unit_raw\"",
        "value = \"record.unit_rwa\"",
    );
    edit(&mapping, "kind = \"procedure\"", "kind = \"procedur\"");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    let l1 = line_of(&mapping, "record.unit_rwa");
    let l2 = line_of(&mapping, "kind = \"procedur\"");
    assert!(
        out.contains(&format!(
            "{}:{l1}: column.value: unknown value",
            mapping.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}:{l2}: select.kind: unknown record kind",
            mapping.display()
        )),
        "{out}"
    );
}

#[test]
fn a_mapping_item_s_value_declarations_are_checked() {
    let (_t, s) = setup();
    let mapping = s.dir.join("mappings/diabetes.toml");
    // A text result is never delivered; a molar mass must be positive; a
    // unit nothing converts to cannot take a molar mass.
    edit(
        &mapping,
        "accept = [\"number\", \"censored\"]\n[[select.convert]]",
        "accept = [\"number\", \"text\"]\n[[select.convert]]",
    );
    edit(
        &mapping,
        "molar_mass = 180.156 # glucose",
        "molar_mass = -1.0 # glucose",
    );
    edit(
        &mapping,
        "unit = \"umol/l\"\nmolar_mass",
        "unit = \"umol/x\"\nmolar_mass",
    );
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    for (needle, field, message) in [
        ("\"text\"]", "select.accept", "unknown value form"),
        (
            "molar_mass = -1.0",
            "select.molar_mass",
            "must be a positive number",
        ),
        ("unit = \"umol/x\"", "select.unit", "not in the unit table"),
    ] {
        let l = line_of(&mapping, needle);
        assert!(
            out.contains(&format!("{}:{l}: {field}: {message}", mapping.display())),
            "{needle}: {out}"
        );
    }
}

#[test]
fn a_group_readable_key_is_refused() {
    let (_t, s) = setup();
    let key = s.dir.join("keys/thl.pseudonym.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("pseudonym:thl"),
        "the key is named by its role: {out}"
    );
    let secret = std::fs::read_to_string(&key).expect("key");
    assert!(
        !out.contains(secret.trim()),
        "the key itself is never printed"
    );
}

#[test]
fn a_recipient_controller_must_be_a_configured_controller() {
    let (_t, s) = setup();
    edit(
        &s.config,
        "purpose = \"scientific_research\"\n",
        "purpose = \"scientific_research\"\nrecipient_controller = \"org-nowhere\"\n",
    );
    let line = line_of(&s.config, "recipient_controller");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains(&format!(
            "regfeed.toml:{line}: feeds.legal_basis.recipient_controller: no controller of that id"
        )),
        "{out}"
    );
}

#[test]
fn validate_explains_a_recipient_controller() {
    let (_t, s) = setup();
    edit(
        &s.config,
        "purpose = \"scientific_research\"\n",
        "purpose = \"scientific_research\"\nrecipient_controller = \"org-32213086\"\n",
    );
    let (code, out) = validate(&s.config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("research-diabetes: recipient controller org-32213086 (Pirkanmaan hyvinvointialue (synthetic)): its own records reach this feed despite a denial of disclosure"),
        "{out}"
    );
}

#[test]
fn a_missing_source_folder_is_a_problem_at_its_line() {
    let (t, s) = setup();
    std::fs::remove_dir_all(t.path().join("corpus")).expect("rm corpus");
    let line = line_of(&s.config, "kind = \"archive_dir\"") + 1;
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    let want = format!(
        "{}:{line}: sources.path: source kanta-archive: folder {} cannot be read: No such file or directory",
        s.config.display(),
        t.path().join("corpus").display()
    );
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    assert!(!out.contains("valid ("), "{out}");
}

#[test]
fn an_unwritable_sink_folder_is_a_problem_at_its_line() {
    let (t, s) = setup();
    // A file where the sink's folder (or one above it) should be: nothing
    // can be delivered there, whoever runs it.
    let blocker = t.path().join("not-a-folder");
    std::fs::write(&blocker, "x").expect("file");
    edit(
        &s.config,
        "dir = \"delivered/thl-diabetes\"",
        &format!("dir = \"{}/thl-diabetes\"", blocker.display()),
    );
    let line = line_of(&s.config, "not-a-folder");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    let want = format!(
        "{}:{line}: feeds.sink.dir: feed thl-diabetes: ",
        s.config.display()
    );
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    assert!(out.contains("Not a directory"), "{out}");
    // A sink folder that does not exist yet is fine: delivery makes it.
    edit(
        &s.config,
        &format!("dir = \"{}/thl-diabetes\"", blocker.display()),
        "dir = \"delivered/later/thl-diabetes\"",
    );
    let (code, out) = validate(&s.config);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_key_readable_by_others_is_a_problem_at_its_line() {
    let (_t, s) = setup();
    let key = s.dir.join("keys/thl-diabetes.record.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let line = line_of(&s.config, "record_key = \"keys/thl-diabetes.record.key\"");
    let (code, out) = validate(&s.config);
    assert_eq!(code, 78, "{out}");
    let want = format!(
        "{}:{line}: feeds.record_key: record:thl-diabetes key file {} is accessible to group or others (mode 0644)",
        s.config.display(),
        key.display()
    );
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    assert_eq!(out.lines().count(), 1, "one problem, one line: {out}");
}

#[test]
fn credentials_without_their_directory_are_one_line_with_a_hint() {
    let (_t, s) = setup();
    edit(
        &s.config,
        "index = \"keys/index.key\"",
        "index = \"credential:index.key\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["validate", "--config"])
        .arg(&s.config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let want = format!(
        "{}: keys: 1 key is a systemd credential (credential:NAME) and CREDENTIALS_DIRECTORY is not set; outside systemd set it",
        s.config.display()
    );
    assert!(err.starts_with(&want), "wanted {want:?} in:\n{err}");
    // Pointed at the folder that holds the key files, it validates.
    let out = Command::new(env!("CARGO_BIN_EXE_regfeed"))
        .args(["validate", "--config"])
        .arg(&s.config)
        .env("CREDENTIALS_DIRECTORY", s.dir.join("keys"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
