//! Quarantined documents for operators (`regfeed quarantine list | show |
//! retry`): the store's refusals grouped by document version (its SHA-256),
//! with the feeds that read its source, when it was first and last refused,
//! and where it is; and `retry`, which re-reads a document whose file was
//! corrected and releases it when it decodes now, so the next run reads it
//! again and stages it as any new document.
//!
//! Nothing here prints or logs a hetu or document text: the decoder's
//! messages never quote content, and a locator is shown with anything
//! hetu-shaped in it masked ([`masked_locator`]).

use chrono::{DateTime, Utc};

use crate::loaded::Config;
use crate::store::locator::LocatorKey;
use crate::store::{QuarantineRow, Store};

/// One quarantined document version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The SHA-256 of the refused bytes (lowercase hex).
    pub digest: String,
    /// The error class of its latest refusal.
    pub class: String,
    /// The decoder's message (never document content).
    pub message: String,
    pub source: String,
    /// The feeds that read its source.
    pub feeds: Vec<String>,
    /// When it was first and last refused (RFC 3339 UTC).
    pub first_seen: String,
    pub last_seen: String,
    /// How many times it was refused.
    pub refusals: usize,
    /// Where it is: `source:locator`, hetu-shaped text masked.
    pub locator: String,
    /// The locator as stored, sealed (what `retry` releases); never printed.
    #[serde(skip)]
    pub path: String,
    /// The locator opened (where `retry` reads); never printed.
    #[serde(skip)]
    pub file: String,
}

/// What `list` keeps; every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub feed: Option<String>,
    pub class: Option<String>,
    /// A prefix of the digest.
    pub digest: Option<String>,
    /// Last refused at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// First refused before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn keeps(&self, e: &Entry) -> bool {
        let time = |t: &str| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc));
        self.feed.as_ref().is_none_or(|f| e.feeds.contains(f))
            && self.class.as_ref().is_none_or(|c| &e.class == c)
            && self
                .digest
                .as_ref()
                .is_none_or(|d| e.digest.starts_with(&d.to_ascii_lowercase()))
            && self
                .since
                .is_none_or(|s| time(&e.last_seen).is_ok_and(|t| t >= s))
            && self
                .until
                .is_none_or(|u| time(&e.first_seen).is_ok_and(|t| t < u))
    }
}

/// The store's refusals as entries, one per digest (the latest refusal's
/// source and locator), oldest first.
///
/// Locators are stored sealed (`store::locator`); `locator` opens them. One
/// that does not open (sealed under another index key) is shown as such.
pub fn entries(cfg: &Config, locator: &LocatorKey, rows: Vec<QuarantineRow>) -> Vec<Entry> {
    let open = |stored: &str| {
        locator
            .open(stored)
            .unwrap_or_else(|_| "(a locator sealed under another index key)".to_owned())
    };
    let mut out: Vec<Entry> = Vec::new();
    for r in rows {
        let at = crate::cli::report::utc_text(&r.at);
        if let Some(e) = out.iter_mut().find(|e| e.digest == r.sha256) {
            e.refusals += 1;
            // Rows come oldest first: the latest refusal's class and text.
            e.class = r.class;
            e.message = r.detail;
            e.last_seen = at;
            e.file = open(&r.path);
            e.path = r.path;
            e.source = r.source;
            continue;
        }
        let feeds = cfg
            .feeds
            .iter()
            .filter(|f| f.source == r.source)
            .map(|f| f.name.clone())
            .collect();
        let file = open(&r.path);
        out.push(Entry {
            locator: masked_locator(&r.source, &file),
            file,
            digest: r.sha256,
            class: r.class,
            message: mask_hetu_shaped(&r.detail),
            source: r.source,
            feeds,
            first_seen: at.clone(),
            last_seen: at,
            refusals: 1,
            path: r.path,
        });
    }
    for e in &mut out {
        e.message = mask_hetu_shaped(&e.message);
        e.locator = masked_locator(&e.source, &e.file);
    }
    out
}

/// The entries `filter` keeps.
pub fn filtered(entries: Vec<Entry>, filter: &Filter) -> Vec<Entry> {
    entries.into_iter().filter(|e| filter.keeps(e)).collect()
}

/// The one entry whose digest starts with `prefix`, or why not.
pub fn find<'a>(entries: &'a [Entry], prefix: &str) -> Result<&'a Entry, String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{prefix:?} is not a digest or a prefix of one (hex digits)"
        ));
    }
    let hits: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.digest.starts_with(&prefix))
        .collect();
    match hits.as_slice() {
        [] => Err(format!(
            "no quarantined document has a digest starting {prefix}"
        )),
        [one] => Ok(one),
        _ => Err(format!(
            "{} quarantined documents have a digest starting {prefix}; give more digits",
            hits.len()
        )),
    }
}

/// `source:path` with every hetu-shaped run of the path replaced by
/// `[hetu]`: a file may be named after a person.
pub fn masked_locator(source: &str, path: &str) -> String {
    format!("{source}:{}", mask_hetu_shaped(path))
}

/// `text` with every hetu-shaped run (`DDMMYY`, a century sign, `NNN`, a
/// check character), even inside a longer word, replaced by `[hetu]`.
pub fn mask_hetu_shaped(text: &str) -> String {
    let b = text.as_bytes();
    let shaped = |w: &[u8]| {
        w[..6].iter().all(u8::is_ascii_digit)
            && b"+-YXWVUABCDEF".contains(&w[6])
            && w[7..10].iter().all(u8::is_ascii_digit)
            && (w[10].is_ascii_digit() || w[10].is_ascii_uppercase())
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i + 11 <= b.len() {
        if shaped(&b[i..i + 11]) {
            out.push_str(&text[copied..i]);
            out.push_str("[hetu]");
            i += 11;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// What `retry` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// It decodes now: released (the rows under its old digest), and the
    /// next run reads it again.
    Released { digest: String, rows: u64 },
    /// Still refused (class and message).
    Refused { class: String, message: String },
}

/// Re-reads the quarantined document `e` at its locator and decodes it;
/// releases it when it decodes. Errors: the source is gone from the
/// config, or the document cannot be read at its locator.
pub async fn retry(cfg: &Config, store: &Store, e: &Entry) -> anyhow::Result<Retried> {
    use anyhow::Context;
    let sc = cfg
        .sources
        .iter()
        .find(|s| s.name == e.source)
        .with_context(|| format!("source {:?} is no longer in the config", e.source))?;
    let source = crate::source::Source::build(sc)
        .with_context(|| format!("source {:?} cannot be opened", e.source))?;
    let bytes = source.locate(&e.file).await.map_err(|err| {
        anyhow::anyhow!(
            "document {} cannot be read at {}: {}",
            short(&e.digest),
            e.locator,
            err.kind()
        )
    })?;
    let digest = crate::feed::sha256_hex(&bytes);
    // The decoder checks `max_document_bytes` itself.
    let decoded = crate::decode::decode(&bytes, &cfg.limits).map(|_| ());
    drop(bytes);
    match decoded {
        Ok(()) => {
            let rows = store
                .release_quarantined(&e.source, &e.path, &e.digest)
                .await?;
            tracing::info!(
                doc_sha256 = %e.digest,
                now_sha256 = %digest,
                rows,
                "A quarantined document decodes now; released for the next run."
            );
            Ok(Retried::Released { digest, rows })
        }
        Err(err) => Ok(Retried::Refused {
            class: err.class.as_str().to_owned(),
            message: mask_hetu_shaped(&err.detail),
        }),
    }
}

/// The first 16 digits of a digest, for messages.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hetu_shaped_runs_are_masked_even_inside_words() {
        assert_eq!(
            mask_hetu_shaped("incoming/010101-900R.xml"),
            "incoming/[hetu].xml"
        );
        assert_eq!(mask_hetu_shaped("x050658A9335y-doc"), "x[hetu]y-doc");
        assert_eq!(mask_hetu_shaped("docs/2026/a.xml"), "docs/2026/a.xml");
        assert_eq!(mask_hetu_shaped("äö010101-900R"), "äö[hetu]");
    }

    fn entry(digest: &str, source: &str) -> Entry {
        Entry {
            digest: digest.into(),
            class: "xml_malformed".into(),
            message: String::new(),
            source: source.into(),
            feeds: vec!["thl-diabetes".into()],
            first_seen: "2026-12-01T00:00:00Z".into(),
            last_seen: "2026-12-02T00:00:00Z".into(),
            refusals: 1,
            locator: String::new(),
            path: String::new(),
            file: String::new(),
        }
    }

    #[test]
    fn a_digest_prefix_finds_one_entry_or_says_why_not() {
        let es = vec![entry("abc1", "a"), entry("abc2", "a"), entry("ffff", "a")];
        assert_eq!(find(&es, "ff").expect("unique").digest, "ffff");
        assert_eq!(find(&es, "ABC2").expect("case").digest, "abc2");
        assert!(
            find(&es, "abc")
                .expect_err("ambiguous")
                .contains("2 quarantined")
        );
        assert!(
            find(&es, "00")
                .expect_err("none")
                .contains("no quarantined")
        );
        assert!(find(&es, "zz").is_err());
    }

    #[test]
    fn filters_by_feed_class_digest_and_time() {
        let es = vec![entry("abc1", "a"), entry("ffff", "a")];
        let f = |f: Filter| filtered(es.clone(), &f).len();
        assert_eq!(f(Filter::default()), 2);
        assert_eq!(
            f(Filter {
                feed: Some("other".into()),
                ..Filter::default()
            }),
            0
        );
        assert_eq!(
            f(Filter {
                class: Some("xml_malformed".into()),
                digest: Some("ab".into()),
                ..Filter::default()
            }),
            1
        );
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().expect("time"));
        assert_eq!(
            f(Filter {
                since: t("2026-12-03T00:00:00Z"),
                ..Filter::default()
            }),
            0
        );
        assert_eq!(
            f(Filter {
                until: t("2026-12-01T00:00:01Z"),
                ..Filter::default()
            }),
            2
        );
    }
}
