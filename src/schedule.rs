//! Cron schedules and the one function that decides every fire time,
//! [`next_fire`] (DESIGN.md §7).
//!
//! A schedule is 5 fields (minute hour day-of-month month day-of-week) or 6
//! with seconds first, evaluated in local time (Europe/Helsinki for regfeed).
//! Around daylight-saving changes:
//! - a local time skipped by the spring change fires once, at the first valid
//!   instant after the gap (03:30 on 2027-03-28 fires at 04:00 EEST);
//! - a local time repeated by the autumn change fires once, at its first
//!   occurrence.
//!
//! This module parses and computes; it keeps no state, sleeps on nothing and
//! knows no feed. The scheduler asks it and nothing else.

use std::fmt;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// The time zone regfeed's schedules are written in.
pub const HELSINKI: Tz = chrono_tz::Europe::Helsinki;

/// How far ahead [`next_fire`] looks before it gives up (a schedule such as
/// "31 February" never fires; 29 February needs up to 8 years with a weekday).
const HORIZON_YEARS: i32 = 30;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// Whether day-of-month / day-of-week were written starting with `*`:
    /// when both are restricted, a day matches if either matches (cron).
    days_star: bool,
    weekdays_star: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is accepted as Sunday and folded onto 0.
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, CronError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            let base = if self.min == 1 { 1 } else { 0 };
            return Ok(i as u32 + base);
        }
        let v: u32 = s.parse().map_err(|_| {
            CronError(format!(
                "{}: {s:?} is not a number{}",
                self.name,
                if self.names.is_empty() {
                    String::new()
                } else {
                    format!(" or a name ({})", self.names.join(", "))
                }
            ))
        })?;
        if v < self.min || v > self.max {
            return Err(CronError(format!(
                "{}: {v} is out of range {}-{}",
                self.name, self.min, self.max
            )));
        }
        Ok(v)
    }

    /// Parses one field into a bit set (bit n = value n).
    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let mut bits = 0u64;
        for part in text.split(',') {
            if part.is_empty() {
                return Err(CronError(format!("{}: empty list item", self.name)));
            }
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().map_err(|_| {
                        CronError(format!("{}: step {s:?} is not a number", self.name))
                    })?;
                    if step == 0 || step > self.max {
                        return Err(CronError(format!(
                            "{}: step {step} must be between 1 and {}",
                            self.name, self.max
                        )));
                    }
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(CronError(format!(
                        "{}: range {a}-{b} runs backwards",
                        self.name
                    )));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // "5/15" means from 5 to the end in steps of 15.
                (a, if part.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl Schedule {
    /// Parses a 5-field (minute hour day-of-month month day-of-week) or
    /// 6-field (second first) cron expression. Names (`jan`, `mon`), lists,
    /// ranges and steps are accepted; `@`-macros, `?`, `L`, `W` and `#` are not.
    pub fn parse(expr: &str) -> Result<Schedule, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(CronError(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), found {n}"
                )));
            }
        };
        let mut weekdays = WEEKDAY.parse(rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let s = Schedule {
            expr: fields.join(" "),
            seconds: SECOND.parse(sec)?,
            minutes: MINUTE.parse(rest[0])?,
            hours: HOUR.parse(rest[1])? as u32,
            days: DAY.parse(rest[2])? as u32,
            months: MONTH.parse(rest[3])? as u16,
            weekdays: weekdays as u8,
            days_star: rest[2].starts_with('*'),
            weekdays_star: rest[4].starts_with('*'),
        };
        // A schedule that can never fire (30 February) is a mistake, not a
        // quiet feed.
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if probe.and_then(|p| next_fire(&s, HELSINKI, p)).is_none() {
            return Err(CronError(format!("{:?} never fires", s.expr)));
        }
        Ok(s)
    }

    /// The expression as written (whitespace normalised).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first local (wall-clock) time at or after `t` that matches, or
    /// `None` past `until`.
    fn next_local(&self, mut t: NaiveDateTime, until: i32) -> Option<NaiveDateTime> {
        loop {
            if t.year() > until {
                return None;
            }
            let date = t.date();
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(date) {
                t = date.succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = date.and_hms_opt(t.hour(), 0, 0)? + chrono::Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = date.and_hms_opt(t.hour(), t.minute(), 0)? + chrono::Duration::minutes(1);
                continue;
            }
            if self.seconds & (1 << t.second()) == 0 {
                t += chrono::Duration::seconds(1);
                continue;
            }
            return Some(t);
        }
    }
}

/// The instant a local wall-clock time stands for: itself when it exists
/// once; its first occurrence when the autumn change repeats it; the end of
/// the gap (the first valid instant after it) when the spring change skips it.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // The gap ends at the smallest instant whose local time is later
            // than `local`. Bracket it with the two offsets either side (a
            // gap is never longer than a day) and bisect on whole seconds.
            let mut lo = (local - chrono::Duration::days(1)).and_utc().timestamp();
            let mut hi = (local + chrono::Duration::days(1)).and_utc().timestamp();
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let at = DateTime::from_timestamp(mid, 0)?;
                if at.with_timezone(&tz).naive_local() > local {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            DateTime::from_timestamp(hi, 0)
        }
    }
}

/// The first fire time of `schedule` strictly after `after`, in UTC, with the
/// schedule read in `tz`; `None` if it never fires again (within decades).
///
/// Every fire time the daemon uses comes from here.
pub fn next_fire(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Local wall-clock times map onto instants in order (a skipped time onto
    // the end of its gap, a repeated one onto its first occurrence), so the
    // answer is the first matching local time whose instant is later than
    // `after`. No local time more than the largest offset change (an hour;
    // two for safety) before `after`'s own can map past it.
    let start = after.with_timezone(&tz).naive_local() - chrono::Duration::hours(2);
    let start = start.with_nanosecond(0)?;
    let until = start.year() + HORIZON_YEARS;
    let mut cursor = start;
    loop {
        let local = schedule.next_local(cursor, until)?;
        let at = resolve(tz, local)?;
        if at > after {
            return Some(at);
        }
        cursor = local + chrono::Duration::seconds(1);
    }
}

/// Parses a duration: the one grammar of every duration in the config and
/// on the command line (humantime's). One or more parts, each a whole number
/// and a unit, optionally separated by spaces: `250ms`, `30s`, `1min` (or
/// `1m`), `1h30m`, `2h 15min`, `1day`. Units: `ms`; `s`, `sec`, `second`; `m`,
/// `min`, `minute`; `h`, `hr`, `hour`; `d`, `day`; `w`, `week` (and their
/// plurals). A bare number has no unit and is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. 30s, 1min, 1h30m, 250ms)".into());
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{text:?} is not a duration: {e} (write e.g. 30s, 1min, 1h30m, 250ms)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn fires(expr: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr).expect("valid expression");
        let mut t = utc(after);
        let mut out = Vec::new();
        for _ in 0..n {
            t = next_fire(&s, HELSINKI, t).expect("fires");
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    #[test]
    fn the_helsinki_changes_are_where_the_tests_assume() {
        // 2027-03-28 03:00 EET → 04:00 EEST at 01:00 UTC.
        let before = utc("2027-03-28T00:59:59Z").with_timezone(&HELSINKI);
        let after = utc("2027-03-28T01:00:00Z").with_timezone(&HELSINKI);
        assert_eq!(before.to_rfc3339(), "2027-03-28T02:59:59+02:00");
        assert_eq!(after.to_rfc3339(), "2027-03-28T04:00:00+03:00");
        // 2027-10-31 04:00 EEST → 03:00 EET at 01:00 UTC.
        let before = utc("2027-10-31T00:59:59Z").with_timezone(&HELSINKI);
        let after = utc("2027-10-31T01:00:00Z").with_timezone(&HELSINKI);
        assert_eq!(before.to_rfc3339(), "2027-10-31T03:59:59+03:00");
        assert_eq!(after.to_rfc3339(), "2027-10-31T03:00:00+02:00");
    }

    #[test]
    fn daily_0330_fires_at_the_end_of_the_spring_gap() {
        assert_eq!(
            fires("30 3 * * *", "2027-03-26T12:00:00Z", 3),
            [
                "2027-03-27T01:30:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-29T00:30:00Z"
            ]
        );
    }

    #[test]
    fn daily_0330_fires_once_on_the_autumn_day_at_its_first_occurrence() {
        assert_eq!(
            fires("30 3 * * *", "2027-10-30T12:00:00Z", 2),
            ["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"]
        );
        // Asked from inside the repeated hour, it does not fire again.
        assert_eq!(
            fires("30 3 * * *", "2027-10-31T01:15:00Z", 1),
            ["2027-11-01T01:30:00Z"]
        );
    }

    #[test]
    fn daily_0200_is_untouched_by_either_change() {
        assert_eq!(
            fires("0 2 * * *", "2027-03-27T12:00:00Z", 1),
            ["2027-03-28T00:00:00Z"]
        );
        assert_eq!(
            fires("0 2 * * *", "2027-10-30T12:00:00Z", 1),
            ["2027-10-30T23:00:00Z"]
        );
    }

    #[test]
    fn hourly_on_the_spring_day_loses_and_doubles_no_utc_hour() {
        assert_eq!(
            fires("0 * * * *", "2027-03-27T21:30:00Z", 6),
            [
                "2027-03-27T22:00:00Z",
                "2027-03-27T23:00:00Z",
                "2027-03-28T00:00:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-28T02:00:00Z",
                "2027-03-28T03:00:00Z"
            ]
        );
    }

    #[test]
    fn hourly_on_the_autumn_day_fires_the_repeated_hour_once() {
        assert_eq!(
            fires("0 * * * *", "2027-10-30T22:30:00Z", 4),
            [
                "2027-10-30T23:00:00Z",
                "2027-10-31T00:00:00Z",
                "2027-10-31T02:00:00Z",
                "2027-10-31T03:00:00Z"
            ]
        );
    }

    #[test]
    fn six_fields_have_seconds_first_and_five_fire_on_the_minute() {
        assert_eq!(
            fires("*/20 * * * * *", "2027-01-01T10:00:05Z", 3),
            [
                "2027-01-01T10:00:20Z",
                "2027-01-01T10:00:40Z",
                "2027-01-01T10:01:00Z"
            ]
        );
        assert_eq!(
            fires("* * * * *", "2027-01-01T10:00:05Z", 2),
            ["2027-01-01T10:01:00Z", "2027-01-01T10:02:00Z"]
        );
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        // 09:15 and 09:45 local (EET, +2) on weekdays.
        assert_eq!(
            fires("15,45 9 * * mon-fri", "2027-01-01T08:00:00Z", 4),
            [
                "2027-01-04T07:15:00Z",
                "2027-01-04T07:45:00Z",
                "2027-01-05T07:15:00Z",
                "2027-01-05T07:45:00Z"
            ]
        );
        // Every 6 hours from 1 to 13: 01, 07, 13 local.
        assert_eq!(
            fires("0 1-13/6 * * *", "2027-01-01T00:00:00Z", 3),
            [
                "2027-01-01T05:00:00Z",
                "2027-01-01T11:00:00Z",
                "2027-01-01T23:00:00Z"
            ]
        );
        // "5/20" is 5, 25, 45.
        assert_eq!(
            fires("5/20 0 1 jan *", "2027-01-01T00:00:00Z", 1),
            ["2027-12-31T22:05:00Z"]
        );
        // Sunday as 0 and as 7.
        assert_eq!(
            fires("0 12 * * 7", "2027-01-01T00:00:00Z", 1),
            fires("0 12 * * sun", "2027-01-01T00:00:00Z", 1)
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            fires("0 0 13 * fri", "2027-01-01T00:00:00Z", 3),
            [
                "2027-01-07T22:00:00Z",
                "2027-01-12T22:00:00Z",
                "2027-01-14T22:00:00Z"
            ]
        );
        // 29 February fires in leap years only.
        assert_eq!(
            fires("0 0 29 2 *", "2027-01-01T00:00:00Z", 1),
            ["2028-02-28T22:00:00Z"]
        );
    }

    #[test]
    fn invalid_expressions_are_refused_with_a_clear_message() {
        let err = |e: &str| Schedule::parse(e).expect_err("must be refused").to_string();
        assert!(
            err("* * * *").contains("expected 5 fields"),
            "{}",
            err("* * * *")
        );
        assert!(err("* * * * * * *").contains("found 7"));
        assert_eq!(err("61 * * * *"), "minute: 61 is out of range 0-59");
        assert_eq!(err("0 24 * * *"), "hour: 24 is out of range 0-23");
        assert_eq!(err("0 0 0 * *"), "day of month: 0 is out of range 1-31");
        assert_eq!(err("0 0 * 13 *"), "month: 13 is out of range 1-12");
        assert!(err("0 0 * foo *").starts_with("month: \"foo\" is not a number or a name"));
        assert_eq!(
            err("*/0 * * * *"),
            "minute: step 0 must be between 1 and 59"
        );
        assert_eq!(err("0 5-1 * * *"), "hour: range 5-1 runs backwards");
        assert_eq!(err("0,,1 * * * *"), "minute: empty list item");
        assert!(err("@daily").contains("expected 5 fields"));
        assert_eq!(err("0 0 30 2 *"), "\"0 0 30 2 *\" never fires");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        // The two examples of issue 15, refused by one parser or the other
        // before there was one grammar.
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "30", "s", "-1s", "ms5", "a while", "3 fortnights"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
