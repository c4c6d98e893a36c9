//! Retry timing for deliveries: exponential backoff with jitter (the
//! `backon` crate), bounded per attempt and in total, honouring the
//! register's `Retry-After`.
//!
//! # Defaults (sized for a register that is down for hours)
//! | key | default | meaning |
//! |---|---|---|
//! | `retry.base` | 1 s | first delay; doubles after each failed attempt |
//! | `retry.cap` | 10 min | longest delay between two attempts (before jitter) |
//! | `retry.attempt_timeout` | 60 s | one whole attempt (connect, upload, response) |
//! | `retry.max_elapsed` | 24 h | since the batch's first attempt; then it is dead |
//!
//! Jitter adds up to one more delay at random (full jitter on top of the
//! exponential step), so many regfeeds restarted together do not hammer a
//! register in step. A `Retry-After` longer than the backoff wins. A batch
//! whose next attempt would start after `max_elapsed` is dead: nothing loops
//! forever. The elapsed time is measured from the first attempt recorded in
//! the store, so it survives restarts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How one sink retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub attempt_timeout: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delays between attempts: exponential from `base` (factor 2), at
    /// most `cap`, with jitter; endless (the elapsed budget ends it).
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .without_max_times()
            .build()
    }

    /// The wait before the next attempt, or `None` when the batch must be
    /// given up: `backoff` (or the register's `retry_after` if longer), as
    /// long as the attempt after it still starts within `max_elapsed` of the
    /// first attempt (`elapsed` ago).
    pub fn next_delay(
        &self,
        backoff: Option<Duration>,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        let delay = backoff?.max(retry_after.unwrap_or_default());
        (elapsed.saturating_add(delay) <= self.max_elapsed).then_some(delay)
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date
/// (a date in the past means now). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = p.backoff().take(12).collect();
        assert_eq!(delays.len(), 12, "endless until the elapsed budget ends it");
        for d in &delays {
            assert!(
                *d >= Duration::from_millis(100) && *d <= Duration::from_millis(2000),
                "{d:?}"
            );
        }
        assert!(delays[8] >= Duration::from_millis(1000), "reaches the cap");
    }

    #[test]
    fn retry_after_wins_and_the_elapsed_budget_ends_retries() {
        let p = RetryPolicy {
            max_elapsed: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let s = Duration::from_secs;
        assert_eq!(p.next_delay(Some(s(2)), Some(s(30)), s(0)), Some(s(30)));
        assert_eq!(p.next_delay(Some(s(2)), None, s(10)), Some(s(2)));
        assert_eq!(p.next_delay(Some(s(2)), Some(s(30)), s(40)), None);
        assert_eq!(p.next_delay(Some(s(2)), None, s(59)), None);
        assert_eq!(p.next_delay(None, None, s(0)), None);
    }
}
