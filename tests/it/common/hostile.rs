//! Hostile inputs and what each must be refused as, shared by
//! `tests/decode_hostile.rs` and `benches/hostile_rss.rs`: the files of
//! `external/bad-xml`, generated resource attacks (written to a folder on
//! demand, some tens of MiB), and a measurement of one `regfeed decode FILE`
//! in a fresh process (its class and its own peak RSS, from `wait4`).
#![allow(dead_code)] // the test and the bench use different subsets
#![allow(unsafe_code)] // wait4 has no safe wrapper

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regfeed::decode::{ErrorClass, Limits};

/// The documented ceiling of a refused hostile file's peak RSS, for the
/// whole `regfeed decode FILE` process (README, "Hostile input").
pub const RSS_CEILING_KIB: i64 = 64 * 1024;

/// Each file of `external/bad-xml` and the class it must get, decided from
/// its content.
pub const BAD_XML: &[(&str, ErrorClass)] = &[
    // Entity tricks: all carry a DOCTYPE, refused whatever it declares.
    ("defusedxml__cyclic.xml", ErrorClass::Doctype),
    ("defusedxml__dtd.xml", ErrorClass::Doctype),
    ("defusedxml__external.xml", ErrorClass::Doctype),
    ("defusedxml__external_file.xml", ErrorClass::Doctype),
    ("defusedxml__xmlbomb.xml", ErrorClass::Doctype),
    ("libxml2__754946.xml", ErrorClass::Doctype),
    ("libxml2__comment1.xml", ErrorClass::Doctype), // its bad comment comes after a DOCTYPE
    ("libxml2__content1.xml", ErrorClass::Doctype),
    ("libxml2__doctype1.xml", ErrorClass::Doctype),
    ("libxml2__ent_redecl.xml", ErrorClass::Doctype),
    ("libxml2__quadratic-defattr.xml", ErrorClass::Doctype),
    // 0x16 in an attribute value.
    ("libxml2__attr4.xml", ErrorClass::NotWellFormed),
    // The byte E1 followed by an ASCII letter inside CDATA: not UTF-8.
    ("libxml2__cdata.xml", ErrorClass::Encoding),
    // A decimal character reference far beyond U+10FFFF.
    ("libxml2__charref1.xml", ErrorClass::NotWellFormed),
    ("libxml2__empty.xml", ErrorClass::NotWellFormed),
    ("libxml2__extra-content.xml", ErrorClass::NotWellFormed),
    (
        "libxml2__invalid-start-tag-1.xml",
        ErrorClass::NotWellFormed,
    ),
    ("libxml2__issue151.xml", ErrorClass::NotWellFormed),
    ("libxml2__ns-undeclared.xml", ErrorClass::NotWellFormed),
    ("libxml2__unclosed-element.xml", ErrorClass::NotWellFormed),
    ("libxml2__unsupported-encoding.xml", ErrorClass::Encoding),
    // Its bytes are valid UTF-8 (C3 84 is U+00C4); what is wrong is the
    // unclosed element ending in "<<": not well-formed, not an encoding error.
    ("libxml2__utf8-1.xml", ErrorClass::NotWellFormed),
];

const CDA_OPEN: &str = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"";

/// Writes the generated resource attacks into `dir`; returns each file's
/// name and the class it must get.
pub fn write_generated(dir: &Path) -> Vec<(String, ErrorClass)> {
    let limits = Limits::default();
    let mut out = Vec::new();
    let mut put = |name: &str, class: ErrorClass, write: &dyn Fn(&mut dyn Write)| {
        let f = std::fs::File::create(dir.join(name)).expect("create a generated file");
        let mut w = std::io::BufWriter::new(f);
        write(&mut w);
        w.flush().expect("write a generated file");
        out.push((name.to_owned(), class));
    };
    put(
        "gen__attributes-100k.xml",
        ErrorClass::LimitExceeded,
        &|w| {
            write!(w, "{CDA_OPEN}").expect("w");
            for i in 0..100_000 {
                write!(w, " a{i}=\"v\"").expect("w");
            }
            write!(w, "/>").expect("w");
        },
    );
    put(
        "gen__namespace-declarations-100k.xml",
        ErrorClass::LimitExceeded,
        &|w| {
            write!(w, "{CDA_OPEN}").expect("w");
            for i in 0..100_000 {
                write!(w, " xmlns:p{i}=\"urn:x:{i}\"").expect("w");
            }
            write!(w, "/>").expect("w");
        },
    );
    put(
        "gen__namespace-declarations-spread-100k.xml",
        ErrorClass::LimitExceeded,
        &|w| {
            write!(w, "{CDA_OPEN}>").expect("w");
            for i in 0..100_000 {
                write!(w, "<x xmlns:p=\"urn:x:{i}\"/>").expect("w");
            }
            write!(w, "</ClinicalDocument>").expect("w");
        },
    );
    put("gen__depth-1m.xml", ErrorClass::LimitExceeded, &|w| {
        let depth = 1_000_000;
        write!(w, "{CDA_OPEN}>").expect("w");
        for _ in 0..depth {
            w.write_all(b"<a>").expect("w");
        }
        for _ in 0..depth {
            w.write_all(b"</a>").expect("w");
        }
        write!(w, "</ClinicalDocument>").expect("w");
    });
    put(
        "gen__oversized-65mib.xml",
        ErrorClass::LimitExceeded,
        &|w| {
            let chunk = [b'x'; 64 * 1024];
            write!(w, "{CDA_OPEN}><text>").expect("w");
            let mut left = limits.max_document_bytes + 1024 * 1024;
            while left > 0 {
                let n = left.min(chunk.len());
                w.write_all(&chunk[..n]).expect("w");
                left -= n;
            }
            write!(w, "</text></ClinicalDocument>").expect("w");
        },
    );
    put("gen__doctype-laughs-1mib.xml", ErrorClass::Doctype, &|w| {
        // A billion laughs whose DTD alone is a MiB: refused at the
        // DOCTYPE, before any of it is read as declarations.
        write!(
            w,
            "<?xml version=\"1.0\"?>\n<!DOCTYPE ClinicalDocument [\n<!ENTITY l0 \"lol\">\n"
        )
        .expect("w");
        let mut i = 1;
        let mut written = 0;
        while written < 1024 * 1024 {
            let line = format!(
                "<!ENTITY l{i} \"{}\">\n",
                format!("&l{};", i - 1).repeat(10)
            );
            written += line.len();
            w.write_all(line.as_bytes()).expect("w");
            i += 1;
        }
        write!(w, "]>\n{CDA_OPEN}>&l{};</ClinicalDocument>", i - 1).expect("w");
    });
    out
}

/// One `regfeed decode FILE` in a fresh process.
#[derive(Debug)]
pub struct Measured {
    /// The refusal class it printed (`decoded` if it decoded, `?` if its
    /// line did not parse).
    pub class: String,
    /// The exit status (1 for a refused file).
    pub exit: i32,
    /// The child's peak RSS (`ru_maxrss` from `wait4`), KiB. An upper
    /// bound: Linux folds in the parent's peak at the child's `execve`
    /// (std spawns with `CLONE_VM`), so a large parent inflates it.
    pub max_rss_kib: i64,
    /// The peak RSS the child reported for itself (`VmHWM` of its own
    /// address space, in its "Decode finished." line), KiB.
    pub own_peak_kib: Option<i64>,
    pub wall: Duration,
}

/// What a measured child printed, how it ended and its own peak RSS.
#[derive(Debug)]
pub struct Child {
    pub stdout: String,
    pub stderr: String,
    /// The exit status, or -1 if it was killed by a signal.
    pub exit: i32,
    /// `ru_maxrss` from `wait4`: this child alone, in KiB.
    pub max_rss_kib: i64,
    /// User and system CPU time, from `wait4`.
    pub cpu: Duration,
    pub wall: Duration,
}

/// Runs `cmd` to its end and measures that process alone.
pub fn run_measured(cmd: &mut Command) -> Child {
    try_run_measured(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_measured`], with an error instead of a panic when the child cannot
/// be started or reaped.
// The child is reaped by `wait4` (which returns its rusage), not by
// `Child::wait`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn try_run_measured(cmd: &mut Command) -> Result<Child, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let mut err_pipe = child.stderr.take().ok_or("no piped stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .ok_or("no piped stdout")?
        .read_to_end(&mut out)
        .map_err(|e| format!("reading stdout: {e}"))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 writes only into the status and the zeroed rusage we
    // pass; the child is ours and not waited for by anything else (std's
    // `Child` does not reap on drop).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    let wall = start.elapsed();
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(Child {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: err_reader.join().unwrap_or_default(),
        exit,
        max_rss_kib: ru.ru_maxrss,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        wall,
    })
}

/// Runs `bin decode file` and measures that process alone.
pub fn decode_in_child(bin: &Path, file: &Path) -> Measured {
    let c = run_measured(
        Command::new(bin)
            .args(["--log-format", "json", "decode"])
            .arg(file)
            .env("REGFEED_LOG", "info")
            .env_remove("RUST_LOG"),
    );
    let class = serde_json::from_str::<serde_json::Value>(c.stdout.trim())
        .ok()
        .and_then(|v| {
            if v.get("document").is_some() {
                Some("decoded".to_owned())
            } else {
                v["error"]["class"].as_str().map(str::to_owned)
            }
        })
        .unwrap_or_else(|| "?".to_owned());
    let own_peak_kib = c
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Decode finished.")
        .and_then(|v| v["peak_rss_kib"].as_i64());
    Measured {
        class,
        exit: c.exit,
        max_rss_kib: c.max_rss_kib,
        own_peak_kib,
        wall: c.wall,
    }
}

/// The class as `regfeed decode` prints it.
pub fn class_name(c: ErrorClass) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("an error class serialises as a string")
}
