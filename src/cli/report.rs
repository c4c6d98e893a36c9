//! How the command line reports: fatal errors (plain text, or one JSON
//! object under `--log-format json`, so a script or a log collector reading
//! standard error sees the same shape as the log lines), counts with their
//! plural, and times in UTC RFC 3339.

use std::sync::OnceLock;

use crate::telemetry::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets how [`fatal`] writes (once, from the parsed command line).
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// The text of a fatal error as written to standard error: `regfeed: TEXT`
/// for people, or one JSON object on one line, shaped like a log line
/// (`timestamp`, `level`, `message`, `target`).
pub fn fatal_line(format: LogFormat, text: &str) -> String {
    match format {
        LogFormat::Plain => format!("regfeed: {text}"),
        LogFormat::Json => serde_json::json!({
            "timestamp": utc(chrono::Utc::now()),
            "level": "ERROR",
            "message": text,
            "target": "regfeed",
            "fatal": true,
        })
        .to_string(),
    }
}

/// Writes a fatal error to standard error (see [`fatal_line`]).
pub fn fatal(text: &str) {
    eprintln!("{}", fatal_line(format(), text));
}

/// As [`fatal`], but plain text goes out as it is, without the `regfeed: `
/// prefix (config problems start with their file name).
pub fn fatal_unprefixed(text: &str) {
    match format() {
        LogFormat::Plain => eprintln!("{text}"),
        LogFormat::Json => eprintln!("{}", fatal_line(LogFormat::Json, text)),
    }
}

/// Writes one line to standard output for a command that has more to do
/// than print (`once`, `demo`): when the reader has gone (`regfeed once ...
/// | head -1`) the line is dropped and the work goes on. `println!` would
/// panic there, half-way through a run. (The listings need no such care:
/// [`Cli::output_may_end_the_process`](super::Cli::output_may_end_the_process).)
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
}

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// `1 source`, `2 sources`: `n` and the word in the number it needs.
/// A listing's `--json` form: one JSON object per line on standard output.
pub fn json_lines<T: serde::Serialize>(items: &[T]) -> serde_json::Result<()> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A time as UTC RFC 3339 with seconds (`2026-12-07T19:00:00Z`), the form of
/// every time in machine output.
pub fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stored RFC 3339 time, whatever its offset, as [`utc`]; unparsable text
/// as it is.
pub fn utc_text(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| utc(d.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_their_plural() {
        assert_eq!(count(1u32, "source", "sources"), "1 source");
        assert_eq!(count(0u32, "source", "sources"), "0 sources");
        assert_eq!(count(2u64, "batch", "batches"), "2 batches");
    }

    #[test]
    fn a_fatal_error_under_json_is_one_json_object_on_one_line() {
        let line = fatal_line(LogFormat::Json, "config.toml:3: daemon: bad\nsecond line");
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["message"], "config.toml:3: daemon: bad\nsecond line");
        assert!(v["timestamp"].as_str().expect("time").ends_with('Z'));
        assert_eq!(fatal_line(LogFormat::Plain, "x"), "regfeed: x");
    }

    #[test]
    fn stored_times_are_shown_in_utc() {
        assert_eq!(
            utc_text("2026-12-07T21:00:00+02:00"),
            "2026-12-07T19:00:00Z"
        );
        assert_eq!(utc_text("garbage"), "garbage");
    }
}
