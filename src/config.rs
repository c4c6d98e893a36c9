//! Configuration: the raw TOML shape (`deny_unknown_fields`) in one place,
//! converted once into a validated [`Config`] that the rest of the crate
//! takes. Every problem is reported with the file, line and field it is in.
//!
//! Every key can be overridden from the environment by one rule (see
//! [`env_overrides`]): `REGFEED_<SECTION>__<KEY>`, a nested table by a
//! further `__<KEY>`, an entry of `[[feeds]]`, `[[sources]]` or
//! `[[recipients]]` by its name and one of `[[controllers]]` by its id. The
//! overrides are applied to the parsed TOML tree before it is read into the
//! typed shape, so a wrong value or an unknown key is reported like one in
//! the file, naming the variable. This module reads files and the
//! environment; it opens no database and loads no key.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::decode::Limits;
pub use crate::deliver::http::HttpSinkConfig;
pub use crate::deliver::retry::RetryPolicy;
pub use crate::feed::manifest::{Art6, Art9, IdentityKind, Purpose};
use crate::identity::KeySource;

mod env;

/// Default config path.
pub const DEFAULT_PATH: &str = "/etc/regfeed/regfeed.toml";

/// The prefix of every environment override (`REGFEED_<SECTION>__<KEY>`).
pub const ENV_PREFIX: &str = "REGFEED_";

/// Whether an environment variable is a config override: `REGFEED_` followed
/// by a path with at least one `__` (`REGFEED_LOG`, `REGFEED_CONFIG` and
/// the like are not).
pub fn is_env_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.contains("__"))
}

/// The config overrides in this process's environment, by name.
pub fn env_overrides() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| is_env_override(k))
        .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
        .collect();
    vars.sort();
    vars
}

// ---------------------------------------------------------------- raw shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: RawDaemon,
    #[serde(default)]
    database: RawDatabase,
    keys: RawKeys,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    controllers: Vec<RawController>,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    recipients: Vec<RawRecipient>,
    #[serde(default)]
    feeds: Vec<RawFeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Spanned<String>,
    /// Documents decoded per staged batch at most (bounds memory).
    #[serde(default = "default_max_documents_per_batch")]
    max_documents_per_batch: usize,
    /// How long a running step may take to finish after SIGTERM (`30s`).
    shutdown_grace: Option<Spanned<String>>,
    /// How often the daemon retries sealed, undelivered batches (`30s`).
    delivery_interval: Option<Spanned<String>>,
    /// How long a feed's lease lasts unless renewed (`60s`): how soon
    /// another replica takes over the work of one that died.
    lease_ttl: Option<Spanned<String>>,
    /// Threads that read, decode and map documents (default: the cores
    /// available to the process). 1 runs a feed run on one thread, in
    /// sequence.
    workers: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    /// Address of `/metrics`, `/healthz` and `/readyz` (`127.0.0.1:9464`).
    listen: Option<Spanned<String>>,
    /// `/readyz` fails once a feed's delivery has failed continuously this
    /// long (`30m`; `0s`: never for this reason).
    unready_after_delivery_failing: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    /// How long a delivered batch's sealed data file stays in
    /// `state_dir/outbox` after its delivery (`720h`).
    delivered_batches: Option<Spanned<String>>,
}

fn default_max_documents_per_batch() -> usize {
    20_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    index: Spanned<String>,
    /// Optional in the shape so that its absence is reported with our
    /// message; required by validation.
    audit: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    id: Spanned<String>,
    name: String,
    oids: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    kind: Spanned<String>,
    /// `archive_dir`: the folder.
    path: Option<Spanned<String>>,
    /// `sql`: `postgres://user@host/db` (never with a password).
    url: Option<Spanned<String>>,
    /// `sql`: where the password is: a file, or `credential:NAME`. Absent:
    /// `PGPASSWORD` or the passfile (`PGPASSFILE`, `~/.pgpass`), as libpq.
    password: Option<Spanned<String>>,
    /// `sql`: the table, `name` or `schema.name`.
    table: Option<Spanned<String>>,
    /// `sql`: how far below the high-water mark each run re-reads (`10m`).
    lookback: Option<Spanned<String>>,
    /// `sql`: rows per query (1000).
    page_size: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    name: Spanned<String>,
    pseudonym_key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: Spanned<String>,
    register: Option<Spanned<String>>,
    mapping: Spanned<String>,
    source: Spanned<String>,
    recipient: Option<Spanned<String>>,
    record_key: Spanned<String>,
    #[serde(default)]
    test: bool,
    legal_basis: Option<Spanned<RawLegalBasis>>,
    sink: Option<Spanned<RawSink>>,
    /// Cron (5 fields, or 6 with seconds) in Europe/Helsinki; no schedule:
    /// the daemon only delivers, runs come from `regfeed once`.
    schedule: Option<Spanned<String>>,
    /// A run missed while the daemon was down: `once` (default) or `skip`.
    catch_up: Option<Spanned<String>>,
    /// Which records the feed may use: `all` (default), or
    /// `recipient_controller` (only those its recipient controller holds).
    scope: Option<Spanned<String>>,
    /// An aggregate feed's small-cell threshold k (counts 1..k-1 hidden),
    /// overriding its mapping's `aggregate.k`.
    small_cell_k: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLegalBasis {
    purpose: Option<Spanned<String>>,
    gdpr_art6: Option<Spanned<String>>,
    gdpr_art9: Option<Spanned<String>>,
    statute: Option<Spanned<String>>,
    /// A documented derogation (research plan, DPIA) under which objections
    /// yield for a public-task feed.
    derogation: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    /// Whether the feed discloses data to a controller other than the
    /// data's own (denials of disclosure then apply). Must be stated.
    discloses_to_other_controller: Option<bool>,
    /// The configured controller id of the feed's recipient, when the
    /// recipient is itself a controller (a county receiving statistics on
    /// data it stores): denials of disclosure do not apply to its own
    /// records.
    recipient_controller: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    kind: Spanned<String>,
    dir: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    retry: Option<Spanned<RawRetry>>,
}

/// Retry timings of a sink, as durations like `"250ms"`, `"1s"`, `"1min"`,
/// `"1h30m"` (the grammar of [`crate::schedule::parse_duration`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    base: Option<Spanned<String>>,
    cap: Option<Spanned<String>>,
    attempt_timeout: Option<Spanned<String>>,
    max_elapsed: Option<Spanned<String>>,
}

// ---------------------------------------------------------- validated form

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config<M> {
    /// The file it was read from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub index_key: KeySource,
    /// The key of audit pseudonyms (people in the audit trail).
    pub audit_key: KeySource,
    /// SHA-256 of the config file's text, lowercase hex (audited on change).
    pub sha256: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub max_documents_per_batch: usize,
    pub daemon: DaemonSettings,
    pub retention: Retention,
    pub controllers: Vec<Controller>,
    pub sources: Vec<SourceConfig>,
    pub recipients: Vec<Recipient>,
    /// Each feed with its mapping as the layer above compiled it
    /// (`crate::loaded`); this module does not know the mapping compiler.
    pub feeds: Vec<FeedConfig<M>>,
}

/// The store's URL. A URL may carry a password (`postgres://u:pw@host/db`,
/// `?password=`), so `Debug` and `Display` show it with the password
/// replaced by `<redacted>`; the URL itself derefs to `&str` for the store.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        const R: &str = "<redacted>";
        let url = &self.0;
        let mut out = url.clone();
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            if let Some(at) = authority.rfind('@')
                && let Some(colon) = authority[..at].find(':')
            {
                let start = scheme_end + 3 + colon + 1;
                out.replace_range(start..scheme_end + 3 + at, R);
            }
        }
        if let Some(q) = out.find('?') {
            let (head, query) = out.split_at(q + 1);
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={R}"),
                    _ => kv.to_owned(),
                })
                .collect();
            out = format!("{head}{}", query.join("&"));
        }
        out
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url)
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How `regfeed run` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    pub shutdown_grace: std::time::Duration,
    pub delivery_interval: std::time::Duration,
    /// How long a feed's lease lasts unless renewed (renewed every third).
    pub lease_ttl: std::time::Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub telemetry_listen: std::net::SocketAddr,
    /// `/readyz` fails once a feed's delivery has failed continuously for
    /// this long (every attempt failed, or it waits on a dead batch). Zero:
    /// never for this reason.
    pub unready_after_delivery_failing: std::time::Duration,
    /// Threads that read, decode and map documents in a feed run (1: the
    /// whole run on one thread, in sequence).
    pub workers: usize,
}

/// What is kept how long (`[retention]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// A delivered batch's sealed data file is pruned from
    /// `state_dir/outbox` this long after its delivery; its manifest, its
    /// receipt (in the store) and its audit entries stay.
    pub delivered_batches: std::time::Duration,
}

/// The default of `retention.delivered_batches`: 30 days.
pub const DEFAULT_DELIVERED_BATCHES_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// Most `daemon.workers` accepted.
pub const MAX_WORKERS: usize = 256;

/// The default `daemon.workers`: the cores available to this process.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .min(MAX_WORKERS)
}

/// Default `telemetry.listen`.
pub const DEFAULT_TELEMETRY_LISTEN: &str = "127.0.0.1:9464";

/// Default `telemetry.unready_after_delivery_failing`: 30 minutes.
pub const DEFAULT_UNREADY_AFTER_DELIVERY_FAILING: std::time::Duration =
    std::time::Duration::from_secs(30 * 60);

/// What the daemon does at start about a scheduled run it missed while down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run once now, however many fire times were missed.
    #[default]
    Once,
    /// Wait for the next fire time.
    Skip,
}

/// A data controller and every OID (or OID prefix) that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub id: String,
    pub name: String,
    pub oids: Vec<String>,
}

impl Controller {
    /// An OID names this controller when it equals one of its OIDs or
    /// continues one with a further arc.
    pub fn matches(&self, oid: &str) -> bool {
        self.oids.iter().any(|p| {
            oid == p
                || (oid.len() > p.len()
                    && oid.starts_with(p.as_str())
                    && oid.as_bytes()[p.len()] == b'.')
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A folder of documents (bare CDA or archive messages).
    ArchiveDir { path: PathBuf },
    /// A PostgreSQL table of archived documents (see `docs/SQL-SOURCE.md`).
    Sql(SqlSourceConfig),
}

/// A validated `sql` source: its URL holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlSourceConfig {
    pub url: String,
    pub password: Option<KeySource>,
    /// `(schema, name)`: lowercase SQL identifiers.
    pub table: (Option<String>, String),
    /// How far below the high-water mark each run re-reads.
    pub lookback: std::time::Duration,
    /// Rows per query: bounds memory.
    pub page_size: u32,
}

/// Default `lookback` of a `sql` source.
pub const DEFAULT_SQL_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(600);
/// Default `page_size` of a `sql` source.
pub const DEFAULT_SQL_PAGE_SIZE: u32 = 1000;
/// Largest `page_size` of a `sql` source.
pub const MAX_SQL_PAGE_SIZE: u32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    pub pseudonym_key: KeySource,
}

/// How the feed reaches its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Straight to the register.
    Direct,
    /// Through Findata (a data permit): objections made to Findata apply.
    Findata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalBasis {
    pub purpose: Purpose,
    pub art6: Art6,
    pub art9: Art9,
    pub statute: Option<String>,
    pub derogation: Option<String>,
    pub channel: Channel,
    pub identity: IdentityKind,
    pub discloses_to_other_controller: bool,
    /// The recipient's own controller id, if the recipient is a controller:
    /// records it controls are not disclosed to *another* controller.
    pub recipient_controller: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// Write sealed batches into a folder (temporary name, fsync, rename).
    FileDrop { dir: PathBuf, retry: RetryPolicy },
    /// `PUT` sealed batches to a register over HTTPS
    /// ([`crate::deliver::http`]).
    Http(HttpSinkConfig),
}

impl SinkConfig {
    /// How failed deliveries to this sink are retried.
    pub fn retry(&self) -> &RetryPolicy {
        match self {
            SinkConfig::FileDrop { retry, .. } => retry,
            SinkConfig::Http(h) => &h.retry,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FeedConfig<M> {
    pub name: String,
    pub register: String,
    pub mapping_path: PathBuf,
    pub mapping: M,
    pub source: String,
    /// The recipient whose pseudonym key this feed uses (pseudonym feeds).
    pub recipient: Option<String>,
    pub record_key: KeySource,
    pub test: bool,
    pub legal_basis: LegalBasis,
    pub sink: SinkConfig,
    /// When the daemon runs it (`None`: never on its own).
    pub schedule: Option<crate::schedule::Schedule>,
    pub catch_up: CatchUp,
    pub scope: Scope,
    /// An aggregate feed's small-cell threshold, over its mapping's.
    pub small_cell_k: Option<u64>,
}

/// Which records a feed may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every record its mapping selects.
    #[default]
    All,
    /// Only records whose document's controller is the feed's recipient
    /// controller (`legal_basis.recipient_controller`): a county's
    /// statistics on the data it stores itself.
    RecipientController,
}

// ------------------------------------------------------------------ errors

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file.
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.field,
                self.message
            )
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

/// Everything wrong with a configuration (and its mappings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Byte offset → 1-based line number.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The 1-based line of a key in config text, by its path: table keys, and
/// array entries by position (`["feeds", "0", "sink", "dir"]`); 0 when the
/// key is not in the text (a default, or set from the environment).
pub fn line_of_key(text: &str, path: &[&str]) -> usize {
    fn walk(t: &dyn toml_edit::TableLike, path: &[&str]) -> Option<Range<usize>> {
        let (seg, rest) = path.split_first()?;
        let (k, v) = t.get_key_value(seg)?;
        if rest.is_empty() {
            return k.span();
        }
        match v {
            toml_edit::Item::ArrayOfTables(a) => {
                let (i, rest) = rest.split_first()?;
                let entry = a.get(i.parse().ok()?)?;
                if rest.is_empty() {
                    return entry.span();
                }
                walk(entry, rest)
            }
            other => walk(other.as_table_like()?, rest),
        }
    }
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 0;
    };
    walk(doc.as_table(), path).map_or(0, |s| line_of(text, s.start))
}

/// Gathers located problems while a file is validated (config and
/// mappings alike).
pub(crate) struct Collector<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) problems: Vec<Problem>,
    /// Where environment overrides were placed (past the end of `text`).
    env: Vec<env::Placed>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Collector {
            file,
            text,
            problems: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A problem at `span` of the text; one in a value set from the
    /// environment is the variable's (no line, the variable as the field).
    pub(crate) fn at(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        if span.start > self.text.len()
            && let Some(p) = self.env.iter().find(|p| p.span.contains(&span.start))
        {
            self.problems.push(Problem {
                file: self.file.to_path_buf(),
                line: 0,
                field: p.var.clone(),
                message: message.into(),
            });
            return;
        }
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span.start),
            field: field.to_owned(),
            message: message.into(),
        });
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).ok()
}

/// `credential:NAME` names a systemd credential; anything else is a file,
/// relative to the config file's folder.
fn key_ref(raw: &str, base: &Path) -> KeySource {
    match KeySource::parse(raw) {
        KeySource::File(p) => KeySource::File(resolve(base, &p.to_string_lossy())),
        cred => cred,
    }
}

/// A relative path in a config file is relative to the file's folder.
fn resolve(base: &Path, raw: &str) -> PathBuf {
    let p = Path::new(raw);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses `text`, applies the environment overrides in `env` to its tree and
/// reads the result into `T`; problems go to `c`.
fn parse_with_env<T: serde::de::DeserializeOwned>(
    text: &str,
    env: &[(String, String)],
    c: &mut Collector<'_>,
) -> Option<T> {
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            c.at(e.span().unwrap_or(0..0), "-", e.message().to_owned());
            return None;
        }
    };
    let mut root = doc.into_item().into_table().ok()?;
    let (placed, refused) = env::apply(&mut root, text.len(), env);
    c.env = placed;
    for r in refused {
        c.problems.push(Problem {
            file: c.file.to_path_buf(),
            line: 0,
            field: r.var,
            message: r.message,
        });
    }
    if !c.problems.is_empty() {
        return None;
    }
    match toml_edit::de::from_document(toml_edit::DocumentMut::from(root)) {
        Ok(r) => Some(r),
        Err(e) => {
            c.at(e.span().unwrap_or(0..0), "-", e.message().to_owned());
            None
        }
    }
}

/// The `[log]` settings of the config at `path` (none: no config) with the
/// environment's overrides applied, read to start logging before the config
/// is loaded. Best effort: a file that cannot be read or parsed gives none of
/// them (its problems are reported when the command loads it).
pub fn log_settings(path: Option<&Path>, env: &[(String, String)]) -> LogSettings {
    #[derive(Default, Deserialize)]
    struct OnlyLog {
        #[serde(default)]
        log: AnyLog,
    }
    #[derive(Default, Deserialize)]
    struct AnyLog {
        level: Option<String>,
        format: Option<String>,
    }
    let text = path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut c = Collector::new(path.unwrap_or(Path::new("-")), &text);
    let log = parse_with_env::<OnlyLog>(&text, env, &mut c)
        .unwrap_or_default()
        .log;
    LogSettings {
        format: match log.format.as_deref() {
            Some("plain") => Some(LogFormat::Plain),
            Some("json") => Some(LogFormat::Json),
            _ => None,
        },
        level: log.level.filter(|l| !l.trim().is_empty()),
    }
}

/// `[log]` as read by [`log_settings`]: what the file (or its overrides) set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

/// Where the config is: `--config`, else `REGFEED_CONFIG`, else the default.
pub fn locate(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("REGFEED_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(DEFAULT_PATH),
    }
}

/// What compiles a feed's mapping file, given its path (the layer above
/// passes the mapping compiler; `|_| Ok(())` checks the config alone).
pub trait CompileMapping<M>: FnMut(&Path) -> Result<M, Vec<Problem>> {}

impl<M, F: FnMut(&Path) -> Result<M, Vec<Problem>>> CompileMapping<M> for F {}

impl<M> Config<M> {
    /// Where the config is: `--config`, else `REGFEED_CONFIG`, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        locate(flag)
    }

    /// Reads, parses and validates a config file, compiling every mapping it
    /// names with `compile`.
    pub fn load_with(
        path: &Path,
        compile: impl CompileMapping<M>,
    ) -> Result<Config<M>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                line: 0,
                field: "-".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::from_str_with(&text, path, &env_overrides(), compile)
    }

    /// Parses `text` as if read from `path`, with `env` the environment's
    /// variables (those that are not overrides are ignored).
    pub fn from_str_with(
        text: &str,
        path: &Path,
        env: &[(String, String)],
        mut compile: impl CompileMapping<M>,
    ) -> Result<Config<M>, ConfigError> {
        let mut c = Collector::new(path, text);
        let raw: RawConfig = match parse_with_env(text, env, &mut c) {
            Some(r) => r,
            None => {
                return Err(ConfigError {
                    problems: c.problems,
                });
            }
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();

        let state_dir = raw.daemon.state_dir.get_ref().clone();
        if state_dir.is_empty() {
            c.at(
                raw.daemon.state_dir.span(),
                "daemon.state_dir",
                "must not be empty",
            );
        }
        let state_dir = resolve(&base, &state_dir);
        let database_url = match raw.database.url.as_ref().map(|u| u.get_ref().clone()) {
            Some(u) => u,
            None => format!("sqlite://{}", state_dir.join("regfeed.db").display()),
        };
        let span = raw.database.url.as_ref().map(|u| u.span()).unwrap_or(0..0);
        match crate::store::Backend::of_url(&database_url) {
            None => c.at(
                span,
                "database.url",
                "must be sqlite://PATH or postgres://[USER@]HOST[:PORT]/DATABASE",
            ),
            Some(crate::store::Backend::Postgres) if url_has_password(&database_url) => c.at(
                span,
                "database.url",
                "must not carry a password: put it in a pgpass file (PGPASSFILE, e.g. a systemd credential) instead",
            ),
            Some(_) => {}
        }
        let index_key = key_ref(raw.keys.index.get_ref(), &base);
        let audit_key = match raw.keys.audit.as_ref().map(|a| a.get_ref().clone()) {
            Some(a) => key_ref(&a, &base),
            None => {
                c.at(
                    raw.keys.index.span(),
                    "keys.audit",
                    "an audit key is required (people in the audit trail are pseudonymised with it)",
                );
                KeySource::File(PathBuf::new())
            }
        };
        let log_level = raw
            .log
            .level
            .as_ref()
            .map_or_else(|| "info".to_owned(), |l| l.get_ref().clone());
        if let Some(l) = &raw.log.level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(l.get_ref())
        {
            c.at(
                l.span(),
                "log.level",
                format!("not a log level or filter: {e}"),
            );
        }
        let log_format = match raw.log.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(_) => {
                let span = raw.log.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
                c.at(span, "log.format", "must be \"plain\" or \"json\"");
                LogFormat::Plain
            }
        };
        if raw.daemon.max_documents_per_batch == 0 {
            c.at(
                raw.daemon.state_dir.span(),
                "daemon.max_documents_per_batch",
                "must be at least 1",
            );
        }

        let daemon = validate_daemon(&raw, &mut c);
        let retention = validate_retention(&raw, &mut c);

        let mut controllers = Vec::new();
        let mut ids = BTreeSet::new();
        for ctl in &raw.controllers {
            if !ids.insert(ctl.id.get_ref().clone()) {
                c.at(ctl.id.span(), "controllers.id", "duplicate controller id");
            }
            let mut oids = Vec::new();
            for o in &ctl.oids {
                if !crate::codes::is_oid(o.get_ref()) {
                    c.at(o.span(), "controllers.oids", "not a well-formed OID");
                }
                oids.push(o.get_ref().clone());
            }
            if oids.is_empty() {
                c.at(
                    ctl.id.span(),
                    "controllers.oids",
                    "a controller needs at least one OID",
                );
            }
            controllers.push(Controller {
                id: ctl.id.get_ref().clone(),
                name: ctl.name.clone(),
                oids,
            });
        }

        let mut sources = Vec::new();
        for s in &raw.sources {
            if sources
                .iter()
                .any(|x: &SourceConfig| &x.name == s.name.get_ref())
            {
                c.at(s.name.span(), "sources.name", "duplicate source name");
            }
            let kind = match s.kind.get_ref().as_str() {
                "archive_dir" => {
                    let sql_only = [
                        ("sources.url", s.url.as_ref().map(|v| v.span())),
                        ("sources.password", s.password.as_ref().map(|v| v.span())),
                        ("sources.table", s.table.as_ref().map(|v| v.span())),
                        ("sources.lookback", s.lookback.as_ref().map(|v| v.span())),
                        ("sources.page_size", s.page_size.as_ref().map(|v| v.span())),
                    ];
                    for (field, span) in sql_only {
                        if let Some(span) = span {
                            c.at(span, field, "only a sql source has this key");
                        }
                    }
                    match &s.path {
                        Some(p) => SourceKind::ArchiveDir {
                            path: resolve(&base, p.get_ref()),
                        },
                        None => {
                            c.at(s.kind.span(), "sources.path", "archive_dir needs a path");
                            continue;
                        }
                    }
                }
                "sql" => match validate_sql_source(s, &base, &mut c) {
                    Some(sql) => SourceKind::Sql(sql),
                    None => continue,
                },
                other => {
                    c.at(
                        s.kind.span(),
                        "sources.kind",
                        format!("unknown source kind {other:?} (known: archive_dir, sql)"),
                    );
                    continue;
                }
            };
            sources.push(SourceConfig {
                name: s.name.get_ref().clone(),
                kind,
            });
        }

        let mut recipients = Vec::new();
        for r in &raw.recipients {
            if recipients
                .iter()
                .any(|x: &Recipient| &x.name == r.name.get_ref())
            {
                c.at(r.name.span(), "recipients.name", "duplicate recipient name");
            }
            recipients.push(Recipient {
                name: r.name.get_ref().clone(),
                pseudonym_key: key_ref(r.pseudonym_key.get_ref(), &base),
            });
        }

        let mut feeds = Vec::new();
        for f in &raw.feeds {
            if let Some(feed) = validate_feed(
                f,
                &base,
                &sources,
                &recipients,
                &controllers,
                &mut compile,
                &mut c,
            ) {
                if feeds.iter().any(|x: &FeedConfig<M>| x.name == feed.name) {
                    c.at(f.name.span(), "feeds.name", "duplicate feed name");
                }
                feeds.push(feed);
            }
        }

        if !c.problems.is_empty() {
            return Err(ConfigError {
                problems: c.problems,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            database_url: DatabaseUrl(database_url),
            index_key,
            audit_key,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
            log_level,
            log_format,
            limits: raw.limits,
            max_documents_per_batch: raw.daemon.max_documents_per_batch,
            daemon,
            retention,
            controllers,
            sources,
            recipients,
            feeds,
        })
    }

    pub fn feed(&self, name: &str) -> Option<&FeedConfig<M>> {
        self.feeds.iter().find(|f| f.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The configured controller an OID names, if any.
    pub fn controller_of(&self, oid: &str) -> Option<&Controller> {
        self.controllers.iter().find(|c| c.matches(oid))
    }
}

/// A lowercase SQL identifier: safe to quote and means the same quoted or not.
fn sql_ident_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Whether a `postgres://` URL carries a password (in its user info or as a
/// `password` parameter). Checked by hand so that nothing echoes the URL.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, q)| {
        q.split('#')
            .next()
            .unwrap_or_default()
            .split('&')
            .any(|kv| kv.split('=').next() == Some("password"))
    });
    in_userinfo || in_query
}

fn validate_sql_source(
    s: &RawSource,
    base: &Path,
    c: &mut Collector<'_>,
) -> Option<SqlSourceConfig> {
    let before = c.problems.len();
    if let Some(p) = &s.path {
        c.at(
            p.span(),
            "sources.path",
            "a sql source has no path (it has a url and a table)",
        );
    }
    let url = match &s.url {
        None => {
            c.at(s.kind.span(), "sources.url", "a sql source needs a url");
            None
        }
        Some(u) => {
            let text = u.get_ref();
            // The URL is never repeated in a message: it might hold a password.
            if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
                c.at(
                    u.span(),
                    "sources.url",
                    "must be a postgres:// or postgresql:// URL",
                );
            } else if url_has_password(text) {
                c.at(
                    u.span(),
                    "sources.url",
                    "must not contain a password: set sources.password to a file or credential:NAME, or use PGPASSFILE",
                );
            } else if <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(text)
                .is_err()
            {
                c.at(u.span(), "sources.url", "is not a valid PostgreSQL URL");
            }
            Some(text.clone())
        }
    };
    let table = match &s.table {
        None => {
            c.at(s.kind.span(), "sources.table", "a sql source needs a table");
            None
        }
        Some(t) => {
            let parts: Vec<&str> = t.get_ref().split('.').collect();
            match parts.as_slice() {
                [name] if sql_ident_ok(name) => Some((None, (*name).to_owned())),
                [schema, name] if sql_ident_ok(schema) && sql_ident_ok(name) => {
                    Some((Some((*schema).to_owned()), (*name).to_owned()))
                }
                _ => {
                    c.at(
                        t.span(),
                        "sources.table",
                        "must be a lowercase SQL identifier ([a-z_][a-z0-9_]*), optionally schema-qualified (kanta.archived_documents)",
                    );
                    None
                }
            }
        }
    };
    let lookback = match &s.lookback {
        None => DEFAULT_SQL_LOOKBACK,
        Some(l) => match crate::schedule::parse_duration(l.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                c.at(l.span(), "sources.lookback", "must be more than zero");
                DEFAULT_SQL_LOOKBACK
            }
            Err(e) => {
                c.at(l.span(), "sources.lookback", e);
                DEFAULT_SQL_LOOKBACK
            }
        },
    };
    let page_size = match &s.page_size {
        None => DEFAULT_SQL_PAGE_SIZE,
        Some(p) if (1..=MAX_SQL_PAGE_SIZE).contains(p.get_ref()) => *p.get_ref(),
        Some(p) => {
            c.at(
                p.span(),
                "sources.page_size",
                format!("must be between 1 and {MAX_SQL_PAGE_SIZE}"),
            );
            DEFAULT_SQL_PAGE_SIZE
        }
    };
    if c.problems.len() > before {
        return None;
    }
    Some(SqlSourceConfig {
        url: url?,
        password: s.password.as_ref().map(|p| key_ref(p.get_ref(), base)),
        table: table?,
        lookback,
        page_size,
    })
}

fn feed_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn validate_feed<M>(
    f: &RawFeed,
    base: &Path,
    sources: &[SourceConfig],
    recipients: &[Recipient],
    controllers: &[Controller],
    compile: &mut impl CompileMapping<M>,
    c: &mut Collector<'_>,
) -> Option<FeedConfig<M>> {
    let name = f.name.get_ref().clone();
    let before = c.problems.len();
    if !feed_name_ok(&name) {
        c.at(
            f.name.span(),
            "feeds.name",
            "must match ^[a-z0-9][a-z0-9-]{0,62}$",
        );
    }
    let register = match &f.register {
        Some(r) if !r.get_ref().is_empty() => r.get_ref().clone(),
        _ => {
            c.at(
                f.name.span(),
                "feeds.register",
                "every feed must name its register",
            );
            String::new()
        }
    };
    if !sources.iter().any(|s| &s.name == f.source.get_ref()) {
        c.at(
            f.source.span(),
            "feeds.source",
            "no source of that name is configured",
        );
    }

    let legal = match &f.legal_basis {
        None => {
            c.at(
                f.name.span(),
                "feeds.legal_basis",
                "every feed must declare its legal basis (purpose, gdpr_art6, gdpr_art9, statute, channel, identity)",
            );
            None
        }
        Some(lb) => validate_legal_basis(lb, controllers, c),
    };

    let recipient = f.recipient.as_ref().map(|r| r.get_ref().clone());
    if let Some(l) = &legal {
        match (l.identity, &f.recipient) {
            (IdentityKind::Pseudonym, None) => c.at(
                f.name.span(),
                "feeds.recipient",
                "a pseudonym feed must name the recipient whose pseudonym key it uses",
            ),
            (IdentityKind::Pseudonym, Some(r))
                if !recipients.iter().any(|x| &x.name == r.get_ref()) =>
            {
                c.at(
                    r.span(),
                    "feeds.recipient",
                    "no recipient of that name is configured",
                )
            }
            (IdentityKind::Hetu, _) if l.art6 != Art6::LegalObligation => c.at(
                f.name.span(),
                "feeds.legal_basis.identity",
                "only a statutory feed (gdpr_art6 = \"6.1.c\" with a statute) may carry the hetu",
            ),
            _ => {}
        }
    }

    let sink = match &f.sink {
        None => {
            c.at(f.name.span(), "feeds.sink", "every feed needs a sink");
            None
        }
        Some(s) => validate_sink(s, base, c),
    };

    let schedule = f.schedule.as_ref().and_then(|s| {
        crate::schedule::Schedule::parse(s.get_ref())
            .map_err(|e| c.at(s.span(), "feeds.schedule", e.to_string()))
            .ok()
    });
    let catch_up = match f.catch_up.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "once")) => CatchUp::Once,
        Some((_, "skip")) => CatchUp::Skip,
        Some((s, _)) => {
            c.at(s.span(), "feeds.catch_up", "must be \"once\" or \"skip\"");
            CatchUp::Once
        }
    };

    let scope = match f.scope.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "all")) => Scope::All,
        Some((s, "recipient_controller")) => {
            if legal
                .as_ref()
                .is_some_and(|l| l.recipient_controller.is_none())
            {
                c.at(
                    s.span(),
                    "feeds.scope",
                    "recipient_controller needs legal_basis.recipient_controller (the controller whose records the feed may use)",
                );
            }
            Scope::RecipientController
        }
        Some((s, _)) => {
            c.at(
                s.span(),
                "feeds.scope",
                "must be \"all\" or \"recipient_controller\"",
            );
            Scope::All
        }
    };

    let small_cell_k = f.small_cell_k.as_ref().map(|k| {
        if !(2..=1000).contains(k.get_ref()) {
            c.at(k.span(), "feeds.small_cell_k", "must be between 2 and 1000");
        }
        (*k.get_ref()).clamp(2, 1000) as u64
    });

    let mapping_path = resolve(base, f.mapping.get_ref());
    let mapping = match compile(&mapping_path) {
        Ok(m) => Some(m),
        Err(problems) => {
            if problems.is_empty() {
                c.at(f.mapping.span(), "feeds.mapping", "mapping is invalid");
            }
            c.problems.extend(problems);
            None
        }
    };

    if c.problems.len() > before {
        return None;
    }
    Some(FeedConfig {
        name,
        register,
        mapping_path,
        mapping: mapping?,
        source: f.source.get_ref().clone(),
        recipient,
        record_key: key_ref(f.record_key.get_ref(), base),
        test: f.test,
        legal_basis: legal?,
        sink: sink?,
        schedule,
        catch_up,
        scope,
        small_cell_k,
    })
}

fn validate_daemon(raw: &RawConfig, c: &mut Collector<'_>) -> DaemonSettings {
    let mut duration = |v: &Option<Spanned<String>>, field: &str, default: u64| match v {
        None => std::time::Duration::from_secs(default),
        Some(s) => crate::schedule::parse_duration(s.get_ref()).unwrap_or_else(|e| {
            c.at(s.span(), field, e);
            std::time::Duration::from_secs(default)
        }),
    };
    let shutdown_grace = duration(&raw.daemon.shutdown_grace, "daemon.shutdown_grace", 30);
    let delivery_interval = duration(
        &raw.daemon.delivery_interval,
        "daemon.delivery_interval",
        30,
    );
    let lease_ttl = duration(&raw.daemon.lease_ttl, "daemon.lease_ttl", 60);
    if delivery_interval.is_zero() {
        let span = raw.daemon.delivery_interval.as_ref().map(|s| s.span());
        c.at(
            span.unwrap_or(0..0),
            "daemon.delivery_interval",
            "must be more than zero",
        );
    }
    if lease_ttl < std::time::Duration::from_secs(3) {
        let span = raw.daemon.lease_ttl.as_ref().map(|s| s.span());
        c.at(
            span.unwrap_or(0..0),
            "daemon.lease_ttl",
            "must be at least 3s (it is renewed every third)",
        );
    }
    let span = raw
        .telemetry
        .listen
        .as_ref()
        .map(|s| s.span())
        .unwrap_or(0..0);
    let listen = raw.telemetry.listen.as_ref().map_or_else(
        || DEFAULT_TELEMETRY_LISTEN.to_owned(),
        |s| s.get_ref().clone(),
    );
    let telemetry_listen = listen.parse().unwrap_or_else(|_| {
        c.at(
            span,
            "telemetry.listen",
            format!("{listen:?} is not an address such as 127.0.0.1:9464"),
        );
        std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let unready_after_delivery_failing = match &raw.telemetry.unready_after_delivery_failing {
        None => DEFAULT_UNREADY_AFTER_DELIVERY_FAILING,
        Some(s) => crate::schedule::parse_duration(s.get_ref()).unwrap_or_else(|e| {
            c.at(s.span(), "telemetry.unready_after_delivery_failing", e);
            DEFAULT_UNREADY_AFTER_DELIVERY_FAILING
        }),
    };
    let workers = raw
        .daemon
        .workers
        .as_ref()
        .map_or(default_workers() as i64, |w| *w.get_ref());
    let workers = if (1..=MAX_WORKERS as i64).contains(&workers) {
        workers as usize
    } else {
        let span = raw.daemon.workers.as_ref().map(|s| s.span());
        c.at(
            span.unwrap_or(0..0),
            "daemon.workers",
            format!("must be from 1 to {MAX_WORKERS} (threads that decode and map documents)"),
        );
        1
    };
    DaemonSettings {
        shutdown_grace,
        delivery_interval,
        lease_ttl,
        telemetry_listen,
        unready_after_delivery_failing,
        workers,
    }
}

fn validate_retention(raw: &RawConfig, c: &mut Collector<'_>) -> Retention {
    let delivered_batches = match &raw.retention.delivered_batches {
        None => DEFAULT_DELIVERED_BATCHES_RETENTION,
        Some(s) => crate::schedule::parse_duration(s.get_ref()).unwrap_or_else(|e| {
            c.at(s.span(), "retention.delivered_batches", e);
            DEFAULT_DELIVERED_BATCHES_RETENTION
        }),
    };
    Retention { delivered_batches }
}

fn validate_sink(s: &Spanned<RawSink>, base: &Path, c: &mut Collector<'_>) -> Option<SinkConfig> {
    let before = c.problems.len();
    let raw = s.get_ref();
    let retry = validate_retry(raw.retry.as_ref(), c);
    let http_only = [
        ("feeds.sink.base_url", raw.base_url.as_ref()),
        ("feeds.sink.token", raw.token.as_ref()),
        ("feeds.sink.ca", raw.ca.as_ref()),
        ("feeds.sink.client_cert", raw.client_cert.as_ref()),
        ("feeds.sink.client_key", raw.client_key.as_ref()),
    ];
    let sink = match raw.kind.get_ref().as_str() {
        "file_drop" => {
            for (field, v) in http_only {
                if let Some(v) = v {
                    c.at(v.span(), field, "only an http sink has this key");
                }
            }
            match &raw.dir {
                Some(d) => Some(SinkConfig::FileDrop {
                    dir: resolve(base, d.get_ref()),
                    retry,
                }),
                None => {
                    c.at(s.span(), "feeds.sink.dir", "a file_drop sink needs a dir");
                    None
                }
            }
        }
        "http" => {
            if let Some(d) = &raw.dir {
                c.at(
                    d.span(),
                    "feeds.sink.dir",
                    "an http sink has no dir (it has a base_url)",
                );
            }
            let base_url = match &raw.base_url {
                None => {
                    c.at(
                        s.span(),
                        "feeds.sink.base_url",
                        "an http sink needs a base_url",
                    );
                    None
                }
                Some(u) => {
                    match crate::deliver::http::parse_base_url(u.get_ref(), raw.allow_insecure_http)
                    {
                        Ok(url) => Some(url),
                        Err(m) => {
                            c.at(u.span(), "feeds.sink.base_url", m);
                            None
                        }
                    }
                }
            };
            match (&raw.client_cert, &raw.client_key) {
                (Some(x), None) => c.at(
                    x.span(),
                    "feeds.sink.client_key",
                    "a client_cert needs its client_key",
                ),
                (None, Some(x)) => c.at(
                    x.span(),
                    "feeds.sink.client_cert",
                    "a client_key needs its client_cert",
                ),
                _ => {}
            }
            base_url.map(|base_url| {
                SinkConfig::Http(HttpSinkConfig {
                    base_url,
                    token: raw.token.as_ref().map(|t| key_ref(t.get_ref(), base)),
                    ca: raw.ca.as_ref().map(|p| resolve(base, p.get_ref())),
                    client_cert: raw.client_cert.as_ref().map(|p| resolve(base, p.get_ref())),
                    client_key: raw.client_key.as_ref().map(|k| key_ref(k.get_ref(), base)),
                    allow_insecure_http: raw.allow_insecure_http,
                    retry,
                })
            })
        }
        other => {
            c.at(
                raw.kind.span(),
                "feeds.sink.kind",
                format!("unknown sink kind {other:?} (known: file_drop, http)"),
            );
            None
        }
    };
    if c.problems.len() > before {
        return None;
    }
    sink
}

fn validate_retry(r: Option<&Spanned<RawRetry>>, c: &mut Collector<'_>) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    let Some(r) = r else { return p };
    let r = r.get_ref();
    for (field, raw, slot) in [
        ("feeds.sink.retry.base", &r.base, &mut p.base),
        ("feeds.sink.retry.cap", &r.cap, &mut p.cap),
        (
            "feeds.sink.retry.attempt_timeout",
            &r.attempt_timeout,
            &mut p.attempt_timeout,
        ),
        (
            "feeds.sink.retry.max_elapsed",
            &r.max_elapsed,
            &mut p.max_elapsed,
        ),
    ] {
        if let Some(v) = raw {
            match crate::schedule::parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => c.at(v.span(), field, "must be more than zero"),
                Err(e) => c.at(v.span(), field, e),
            }
        }
    }
    if p.base > p.cap {
        c.at(
            r.cap
                .as_ref()
                .or(r.base.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0),
            "feeds.sink.retry.cap",
            "must not be below retry.base",
        );
    }
    p
}

fn validate_legal_basis(
    lb: &Spanned<RawLegalBasis>,
    controllers: &[Controller],
    c: &mut Collector<'_>,
) -> Option<LegalBasis> {
    let span = lb.span();
    let lb = lb.get_ref();
    fn req<T: for<'de> Deserialize<'de>>(
        v: &Option<Spanned<String>>,
        span: &Range<usize>,
        field: &str,
        allowed: &str,
        c: &mut Collector<'_>,
    ) -> Option<T> {
        match v {
            None => {
                c.at(span.clone(), field, format!("must be stated ({allowed})"));
                None
            }
            Some(s) => {
                let parsed = parse_enum::<T>(s.get_ref());
                if parsed.is_none() {
                    c.at(s.span(), field, format!("must be one of {allowed}"));
                }
                parsed
            }
        }
    }
    let purpose: Option<Purpose> = req(
        &lb.purpose,
        &span,
        "feeds.legal_basis.purpose",
        "statistics, scientific_research, development_and_innovation, education, knowledge_management, steering_and_supervision, authority_planning_and_reporting",
        c,
    );
    let art6: Option<Art6> = req(
        &lb.gdpr_art6,
        &span,
        "feeds.legal_basis.gdpr_art6",
        "\"6.1.c\", \"6.1.e\"",
        c,
    );
    let art9: Option<Art9> = req(
        &lb.gdpr_art9,
        &span,
        "feeds.legal_basis.gdpr_art9",
        "\"9.2.g\", \"9.2.h\", \"9.2.i\", \"9.2.j\"",
        c,
    );
    let channel: Option<Channel> = req(
        &lb.channel,
        &span,
        "feeds.legal_basis.channel",
        "direct, findata",
        c,
    );
    let identity: Option<IdentityKind> = req(
        &lb.identity,
        &span,
        "feeds.legal_basis.identity",
        "pseudonym, hetu",
        c,
    );
    let statute = lb.statute.as_ref().map(|s| s.get_ref().trim().to_owned());
    match (art6, &statute) {
        (Some(Art6::LegalObligation), None) => c.at(
            span.clone(),
            "feeds.legal_basis.statute",
            "a legal obligation (6.1.c) must name its statute",
        ),
        (_, Some(s)) if s.is_empty() => c.at(
            lb.statute
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(span.clone()),
            "feeds.legal_basis.statute",
            "must not be empty (leave it out, or name the statute)",
        ),
        _ => {}
    }
    let derogation = lb
        .derogation
        .as_ref()
        .map(|s| s.get_ref().trim().to_owned());
    if let Some(d) = &lb.derogation {
        if d.get_ref().trim().is_empty() {
            c.at(
                d.span(),
                "feeds.legal_basis.derogation",
                "must not be empty (leave it out, or name the documented basis)",
            );
        } else if art6 == Some(Art6::LegalObligation) {
            c.at(d.span(), "feeds.legal_basis.derogation", "a legal obligation (6.1.c) needs no derogation; derogations are for public-task (6.1.e) feeds");
        }
    }
    if lb.discloses_to_other_controller.is_none() {
        c.at(
            span.clone(),
            "feeds.legal_basis.discloses_to_other_controller",
            "must be stated (true or false): denials of disclosure apply to feeds that disclose to another controller",
        );
    }
    let recipient_controller = lb.recipient_controller.as_ref().and_then(|r| {
        let id = r.get_ref().trim();
        if controllers.iter().any(|x| x.id == id) {
            Some(id.to_owned())
        } else {
            c.at(
                r.span(),
                "feeds.legal_basis.recipient_controller",
                "no controller of that id is configured (name one of [[controllers]] ids: the recipient's own controller, whose records denials of disclosure do not block)",
            );
            None
        }
    });
    Some(LegalBasis {
        recipient_controller,
        purpose: purpose?,
        art6: art6?,
        art9: art9?,
        statute,
        derogation,
        channel: channel?,
        identity: identity?,
        discloses_to_other_controller: lb.discloses_to_other_controller?,
    })
}

#[cfg(test)]
mod tests;
