//! The HTTP sink: `PUT`s a sealed batch to a register over HTTPS, streamed
//! from disk, and reads the register's receipt (protocol in
//! `docs/FEED-FORMAT.md`, "Delivery over HTTP").
//!
//! One request per batch, `PUT {base}/feeds/{feed}/batches/{seq}` (seq
//! unpadded), carrying the data file as the body and the manifest in the
//! `Regfeed-Manifest` header (base64 of its exact bytes), so the register
//! receives a batch and the manifest that vouches for it atomically.
//!
//! TLS is rustls with the `ring` provider only; certificates are always
//! verified (against the configured CA bundle only, when one is given, else
//! the system's roots). Plain `http://` is refused unless the config says
//! `allow_insecure_http = true` (tests). The bearer token is read from a
//! file or a systemd credential that group and others cannot read, and is
//! never logged (`Debug` redacts it). Errors carry the HTTP status and the
//! register's message (truncated, control characters removed), never a row.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::stream;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::DeliverError;
use super::retry::{RetryPolicy, parse_retry_after};
use crate::failpoint;
use crate::feed::MediaType;
use crate::identity::KeySource;

/// Longest register message kept (after sanitising).
pub const MAX_MESSAGE: usize = 512;
/// Body chunk read from disk and sent at a time.
const CHUNK: usize = 256 * 1024;

/// Installs `ring` as the process-wide rustls crypto provider (one provider
/// for the whole binary). Idempotent; the binary calls it at startup, tests
/// before they start TLS.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: by an earlier call of ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A validated HTTP sink configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// `https://host[:port]/path` (no query or fragment).
    pub base_url: Url,
    /// The bearer token: a file, or `credential:NAME`.
    pub token: Option<KeySource>,
    /// PEM bundle of the CAs that may sign the register's certificate
    /// (only these are trusted when set).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain for mTLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate: a file, or
    /// `credential:NAME`, permission-checked like keys.
    pub client_key: Option<KeySource>,
    pub allow_insecure_http: bool,
    pub retry: RetryPolicy,
}

/// Checks a `base_url`: absolute, `https` (or `http` when allowed), no
/// query, fragment or credentials.
pub fn parse_base_url(raw: &str, allow_insecure_http: bool) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http => {}
        "http" => {
            return Err(
                "plain http is refused (use https; allow_insecure_http = true is for tests only)"
                    .into(),
            );
        }
        other => return Err(format!("scheme {other:?} is not https")),
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use token)".into());
    }
    Ok(url)
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret file: a regular file that group and others cannot access.
pub(crate) fn read_secret_file(what: &str, source: &KeySource) -> Result<Vec<u8>, DeliverError> {
    use std::os::unix::fs::MetadataExt;
    let path = match source {
        KeySource::File(p) => p.clone(),
        KeySource::Credential(name) => {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(DeliverError::Setup(format!(
                    "{what}: credential name {name:?} is not a plain file name"
                )));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                DeliverError::Setup(format!(
                    "{what}: credential {name} cannot be read: CREDENTIALS_DIRECTORY is not set"
                ))
            })?;
            Path::new(&dir).join(name)
        }
    };
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |e: std::io::Error| DeliverError::Setup(format!("{what} {}: {e}", path.display()));
    // Opened once and checked on the open file (the file checked is the file
    // read, as for keys); O_NONBLOCK so a FIFO put in its place cannot hang
    // the daemon.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(DeliverError::Setup(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DeliverError::Setup(format!(
            "{what} {} is accessible to group or others (mode {mode:04o}); chmod 600 it",
            path.display()
        )));
    }
    if meta.len() > SECRET_FILE_MAX_BYTES {
        return Err(DeliverError::Setup(format!(
            "{what} {} is larger than {SECRET_FILE_MAX_BYTES} bytes",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(SECRET_FILE_MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    Ok(bytes)
}

/// A token or a PEM private key is a few KiB at most.
const SECRET_FILE_MAX_BYTES: u64 = 64 * 1024;

fn load_token(source: &KeySource) -> Result<Secret, DeliverError> {
    let bytes = read_secret_file("bearer token", source)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DeliverError::Setup("bearer token is not UTF-8".into()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DeliverError::Setup(
            "bearer token must be one line of visible ASCII".into(),
        ));
    }
    Ok(Secret(token.to_owned()))
}

fn read_pem_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, DeliverError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DeliverError::Setup(format!("{what} {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| DeliverError::Setup(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(DeliverError::Setup(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls client configuration: `ring`, verification always on.
fn tls_config(cfg: &HttpSinkConfig) -> Result<rustls::ClientConfig, DeliverError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca {
        Some(ca) => {
            for c in read_pem_certs("CA bundle", ca)? {
                roots
                    .add(c)
                    .map_err(|e| DeliverError::Setup(format!("CA bundle {}: {e}", ca.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A broken system certificate only removes itself.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(DeliverError::Setup(
                    "no CA configured and no system root certificates found".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DeliverError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_pem_certs("client certificate", cert)?;
            let key_bytes = read_secret_file("client key", key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_bytes)
                .map_err(|e| DeliverError::Setup(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| DeliverError::Setup(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// What the register answers when it accepts a batch (see the protocol doc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpReceipt {
    pub feed: String,
    pub seq: u64,
    /// The data file's SHA-256 as the register computed it (lowercase hex).
    pub sha256: String,
    pub received_at: String,
    pub receipt_id: String,
}

/// A batch to put: paths and sealed digests.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    pub feed: &'a str,
    pub seq: u64,
    pub data_path: PathBuf,
    pub data_bytes: u64,
    pub data_sha256: &'a str,
    pub media_type: MediaType,
    pub manifest: Vec<u8>,
    pub manifest_sha256: &'a str,
}

/// An accepted upload: the receipt, its raw JSON and the status.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub receipt: HttpReceipt,
    pub raw: String,
    pub status: u16,
}

/// An HTTP sink, ready to send.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    base: Url,
    token: Option<Secret>,
    timeout: Duration,
}

impl HttpSink {
    /// Builds the client: reads the token, CA, client certificate and key.
    /// Errors are setup problems (the batch is not touched).
    pub fn build(cfg: &HttpSinkConfig) -> Result<HttpSink, DeliverError> {
        install_crypto_provider();
        let token = cfg.token.as_ref().map(load_token).transpose()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.retry.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!cfg.allow_insecure_http)
            .user_agent(concat!("regfeed/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if cfg.base_url.scheme() == "https" {
            builder = builder.tls_backend_preconfigured(tls_config(cfg)?);
        }
        let client = builder
            .build()
            .map_err(|e| DeliverError::Setup(format!("HTTP client: {e}")))?;
        let mut base = cfg.base_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(HttpSink {
            client,
            base,
            token,
            timeout: cfg.retry.attempt_timeout,
        })
    }

    /// `{base}/feeds/{feed}/batches/{seq}`.
    pub fn batch_url(&self, feed: &str, seq: u64) -> Result<Url, DeliverError> {
        self.base
            .join(&format!("feeds/{feed}/batches/{seq}"))
            .map_err(|e| DeliverError::Setup(format!("batch URL: {e}")))
    }

    /// One attempt: streams the data file, returns the verified receipt.
    pub async fn put(&self, up: &Upload<'_>) -> Result<Accepted, DeliverError> {
        let url = self.batch_url(up.feed, up.seq)?;
        let digest = hex::decode(up.data_sha256).map_err(|_| DeliverError::SealBroken {
            file: up
                .data_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            found: "not hex".into(),
            expected: up.data_sha256.to_owned(),
        })?;
        let file_name = up
            .data_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = tokio::fs::File::open(&up.data_path)
            .await
            .map_err(|source| DeliverError::Io {
                op: "opening",
                path: up.data_path.clone(),
                source,
            })?;
        let broken: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let body = streamed_body(
            file,
            up.data_bytes,
            up.data_sha256.to_owned(),
            Arc::clone(&broken),
        );
        let mut req = self
            .client
            .put(url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, up.media_type.as_str())
            .header(CONTENT_LENGTH, up.data_bytes)
            .header(
                "Content-Digest",
                format!("sha-256=:{}:", B64.encode(&digest)),
            )
            .header(
                "Idempotency-Key",
                format!("{}:{}:{}", up.feed, up.seq, up.data_sha256),
            )
            .header("Regfeed-Manifest", B64.encode(&up.manifest))
            .header("Regfeed-Manifest-Sha256", up.manifest_sha256)
            .body(body);
        if let Some(t) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", t.0))
                .map_err(|_| DeliverError::Setup("bearer token is not a header value".into()))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(found) = broken.lock().ok().and_then(|g| g.clone()) {
                    return Err(DeliverError::SealBroken {
                        file: file_name,
                        found,
                        expected: up.data_sha256.to_owned(),
                    });
                }
                return Err(transport_error(&e));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Err(transport_error(&e)),
        };
        match status {
            200 | 201 => {
                let receipt: HttpReceipt = serde_json::from_str(&text).map_err(|e| {
                    DeliverError::BadReceipt(format!("status {status}, not a receipt: {e}"))
                })?;
                if receipt.feed != up.feed
                    || receipt.seq != up.seq
                    || receipt.sha256 != up.data_sha256
                {
                    return Err(DeliverError::BadReceipt(format!(
                        "receipt names feed {:?} seq {} sha256 {} for feed {:?} seq {} sha256 {}",
                        sanitise(&receipt.feed),
                        receipt.seq,
                        sanitise(&receipt.sha256),
                        up.feed,
                        up.seq,
                        up.data_sha256
                    )));
                }
                Ok(Accepted {
                    receipt,
                    raw: text,
                    status,
                })
            }
            409 => Err(DeliverError::RegisterConflict {
                message: sanitise(&text),
            }),
            _ => Err(DeliverError::Http {
                status,
                message: sanitise(&text),
                retry_after,
            }),
        }
    }
}

fn transport_error(e: &reqwest::Error) -> DeliverError {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // The chain names hosts and causes, never content.
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    DeliverError::Transport {
        class,
        message: sanitise(&message),
    }
}

/// Keeps at most [`MAX_MESSAGE`] characters, control characters replaced.
pub fn sanitise(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if s.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}

/// The data file as a body stream: read in chunks (never whole in memory),
/// hashed on the way; a file that no longer matches its sealed digest ends
/// the stream with an error (so the request is aborted) and says so in
/// `broken`. The `upload` failpoint fires after the first chunk went out.
fn streamed_body(
    file: tokio::fs::File,
    bytes: u64,
    expected: String,
    broken: Arc<Mutex<Option<String>>>,
) -> reqwest::Body {
    struct State {
        file: tokio::fs::File,
        hasher: Sha256,
        sent: u64,
        chunks: u64,
        done: bool,
    }
    // The first chunk is at most half the file, so a crash after it is
    // always mid-upload.
    let first = usize::try_from((bytes / 2).max(1))
        .unwrap_or(CHUNK)
        .min(CHUNK);
    let state = State {
        file,
        hasher: Sha256::new(),
        sent: 0,
        chunks: 0,
        done: false,
    };
    let s = stream::unfold(state, move |mut st| {
        let expected = expected.clone();
        let broken = Arc::clone(&broken);
        async move {
            if st.done {
                return None;
            }
            if st.chunks == 1 {
                failpoint::hit("upload");
            }
            let want = if st.chunks == 0 { first } else { CHUNK };
            let mut buf = vec![0u8; want];
            let n = match st.file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            if n == 0 {
                st.done = true;
                let found = hex::encode(std::mem::take(&mut st.hasher).finalize());
                if found != expected || st.sent != bytes {
                    if let Ok(mut g) = broken.lock() {
                        *g = Some(found);
                    }
                    return Some((
                        Err(std::io::Error::other("sealed file changed on disk")),
                        st,
                    ));
                }
                return None;
            }
            buf.truncate(n);
            st.hasher.update(&buf);
            st.sent += n as u64;
            st.chunks += 1;
            Some((Ok(buf), st))
        }
    });
    reqwest::Body::wrap_stream(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_https_unless_allowed() {
        assert!(parse_base_url("https://register.example/api", false).is_ok());
        assert!(parse_base_url("http://127.0.0.1:8080", false).is_err());
        assert!(parse_base_url("http://127.0.0.1:8080", true).is_ok());
        assert!(parse_base_url("ftp://x", true).is_err());
        assert!(parse_base_url("https://u:p@x", false).is_err());
        assert!(parse_base_url("https://x/?a=b", false).is_err());
    }

    #[test]
    fn messages_are_truncated_and_sanitised() {
        assert_eq!(sanitise("bad\r\nrow"), "bad  row");
        let long = "x".repeat(2000);
        assert_eq!(sanitise(&long).chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        assert_eq!(
            format!("{:?}", Secret("s3cret".into())),
            "Secret(<redacted>)"
        );
    }
}
