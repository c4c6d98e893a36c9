//! A test register: an HTTPS (or HTTP) server implementing the receiving
//! side of the delivery protocol (docs/FEED-FORMAT.md), with fault
//! injection. It verifies each upload (Content-Digest, manifest header,
//! order, chain), stores accepted batches under `store_dir/<feed>/` so
//! `regfeed feed verify` can check them, and counts what it accepts per
//! (feed, seq, digest). Shared by the delivery tests.
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Certificates for one test: a CA that signs the server (localhost,
/// 127.0.0.1) and a client; a rogue CA with its own client.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("ca key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = p.self_signed(&key).expect("ca cert").pem();
    (p, key, pem)
}

fn leaf(names: &[&str], issuer: &Issuer<'_, &KeyPair>, client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = p.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

/// Generates the certificates into `dir` (keys mode 0600).
pub fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("pki dir");
    let (ca_params, ca_key, ca_pem) = ca("regfeed test CA");
    let issuer = Issuer::new(ca_params, &ca_key);
    let (srv, srv_key) = leaf(&["localhost", "127.0.0.1"], &issuer, false);
    let (cli, cli_key) = leaf(&["regfeed-client"], &issuer, true);
    let (rogue_params, rogue_key, _) = ca("rogue CA");
    let rogue_issuer = Issuer::new(rogue_params, &rogue_key);
    let (rcli, rcli_key) = leaf(&["regfeed-client"], &rogue_issuer, true);
    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_client_cert: dir.join("rogue-client.pem"),
        rogue_client_key: dir.join("rogue-client.key"),
    };
    std::fs::write(&p.ca, ca_pem).expect("ca");
    std::fs::write(&p.server_cert, srv).expect("srv");
    write_secret(&p.server_key, &srv_key);
    std::fs::write(&p.client_cert, cli).expect("cli");
    write_secret(&p.client_key, &cli_key);
    std::fs::write(&p.rogue_client_cert, rcli).expect("rcli");
    write_secret(&p.rogue_client_key, &rcli_key);
    p
}

/// What the receiver does with one request (decided before reading the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 503.
    Unavailable,
    /// 429 with this `Retry-After`.
    TooMany(String),
    /// Accepts, then answers only after this long (past the client's timeout).
    Slow(Duration),
    /// Closes the connection without an answer.
    Reset,
    /// 400 with this message.
    BadRequest(String),
    /// 409.
    Conflict,
}

/// The request the injector decides on.
#[derive(Debug, Clone)]
pub struct Req {
    pub feed: String,
    pub seq: u64,
    /// 1-based, over all requests.
    pub n: u64,
    /// 1-based, requests for this (feed, seq).
    pub tries: u64,
}

pub type Injector = Arc<dyn Fn(&Req) -> Fault + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub tls: Option<Pki>,
    pub require_client_cert: bool,
    pub token: Option<String>,
    pub store_dir: PathBuf,
    pub injector: Injector,
}

impl Options {
    pub fn new(store_dir: &Path) -> Options {
        Options {
            tls: None,
            require_client_cert: false,
            token: None,
            store_dir: store_dir.to_path_buf(),
            injector: Arc::new(|_| Fault::None),
        }
    }
}

/// Everything the receiver saw.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub requests: u64,
    /// Accepted batches: (feed, seq) → (data sha256, manifest sha256, receipt id).
    pub accepted: BTreeMap<(String, u64), (String, String, String)>,
    /// Acceptances per (feed, seq, digest): must never exceed 1.
    pub accepts: HashMap<(String, u64, String), u32>,
    /// Acceptance order.
    pub log: Vec<(String, u64)>,
    /// Repeats answered idempotently.
    pub duplicates: u64,
    /// Same sequence, other digest: refused with 409.
    pub conflicts: u64,
    /// Requests refused for a protocol reason (status, reason).
    pub refused: Vec<(u16, String)>,
    /// Faults injected, by kind.
    pub injected: BTreeMap<&'static str, u64>,
    tries: HashMap<(String, u64), u64>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub base_url: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state").clone()
    }
}

fn server_tls(pki: &Pki, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .expect("server cert")
        .collect::<Result<_, _>>()
        .expect("server cert pem");
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("server key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&pki.ca).expect("ca") {
            roots.add(c.expect("ca pem")).expect("ca add");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(builder.with_single_cert(certs, key).expect("server cert"))
}

/// Starts a receiver on 127.0.0.1 (port 0).
pub async fn start(opts: Options) -> Receiver {
    regfeed::deliver::http::install_crypto_provider();
    std::fs::create_dir_all(&opts.store_dir).expect("store dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://127.0.0.1:{}/register", addr.port());
    let state = Arc::new(Mutex::new(State::default()));
    let acceptor = opts
        .tls
        .as_ref()
        .map(|p| tokio_rustls::TlsAcceptor::from(server_tls(p, opts.require_client_cert)));
    let opts = Arc::new(opts);
    let st = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (opts, st, acceptor) = (Arc::clone(&opts), Arc::clone(&st), acceptor.clone());
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (opts, st) = (Arc::clone(&opts), Arc::clone(&st));
                    async move { handle(req, &opts, &st).await }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Receiver {
        addr,
        base_url,
        state,
        task,
    }
}

type Resp = Response<Full<Bytes>>;

fn answer(status: u16, body: impl Into<String>) -> Result<Resp, std::io::Error> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(r)
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn refuse(st: &Mutex<State>, status: u16, why: &str) -> Result<Resp, std::io::Error> {
    st.lock()
        .expect("state")
        .refused
        .push((status, why.to_owned()));
    answer(status, why.to_owned())
}

async fn handle(
    req: Request<Incoming>,
    opts: &Options,
    st: &Mutex<State>,
) -> Result<Resp, std::io::Error> {
    let _: Option<Infallible> = None;
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (feed, seq) = match parts.as_slice() {
        ["register", "feeds", feed, "batches", seq] => match seq.parse::<u64>() {
            Ok(s) => (feed.to_string(), s),
            Err(_) => return answer(404, "no such batch"),
        },
        _ => return answer(404, "not found"),
    };
    if req.method() != hyper::Method::PUT {
        return answer(405, "PUT only");
    }
    if let Some(t) = &opts.token
        && header(&req, "authorization") != Some(&format!("Bearer {t}"))
    {
        return refuse(st, 401, "bad or missing bearer token");
    }
    let fault = {
        let mut s = st.lock().expect("state");
        s.requests += 1;
        let tries = {
            let t = s.tries.entry((feed.clone(), seq)).or_default();
            *t += 1;
            *t
        };
        let r = Req {
            feed: feed.clone(),
            seq,
            n: s.requests,
            tries,
        };
        let f = (opts.injector)(&r);
        let kind = match &f {
            Fault::None => None,
            Fault::Unavailable => Some("503"),
            Fault::TooMany(_) => Some("429"),
            Fault::Slow(_) => Some("slow"),
            Fault::Reset => Some("reset"),
            Fault::BadRequest(_) => Some("400"),
            Fault::Conflict => Some("409"),
        };
        if let Some(k) = kind {
            *s.injected.entry(k).or_default() += 1;
        }
        f
    };
    match &fault {
        Fault::Unavailable => return answer(503, "register under maintenance"),
        Fault::TooMany(after) => {
            let mut r = answer(429, "slow down")?;
            r.headers_mut()
                .insert("retry-after", after.parse().map_err(std::io::Error::other)?);
            return Ok(r);
        }
        Fault::Reset => return Err(std::io::Error::other("injected reset")),
        Fault::BadRequest(m) => return answer(400, m.clone()),
        Fault::Conflict => return answer(409, "injected conflict"),
        Fault::None | Fault::Slow(_) => {}
    }

    // The manifest header and the digest header.
    let Some(manifest) = header(&req, "regfeed-manifest").and_then(|m| B64.decode(m).ok()) else {
        return refuse(st, 400, "missing or bad Regfeed-Manifest");
    };
    let manifest_sha = hex::encode(Sha256::digest(&manifest));
    if header(&req, "regfeed-manifest-sha256") != Some(manifest_sha.as_str()) {
        return refuse(st, 400, "Regfeed-Manifest-Sha256 does not match");
    }
    let m = match regfeed::feed::Manifest::from_bytes(&manifest) {
        Ok(m) => m,
        Err(e) => return refuse(st, 400, &format!("manifest: {e}")),
    };
    if m.feed != feed || m.seq != seq {
        return refuse(st, 400, "manifest names another batch");
    }
    let Some(digest) = header(&req, "content-digest")
        .and_then(|d| d.strip_prefix("sha-256=:"))
        .and_then(|d| d.strip_suffix(':'))
        .and_then(|d| B64.decode(d).ok())
        .map(hex::encode)
    else {
        return refuse(st, 400, "missing or bad Content-Digest");
    };
    if header(&req, "idempotency-key") != Some(&format!("{feed}:{seq}:{digest}")) {
        return refuse(st, 400, "bad Idempotency-Key");
    }

    // The body, streamed to a temporary file and hashed.
    let dir = opts.store_dir.join(&feed);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{seq}.{}.part", rand_suffix()));
    let mut file = tokio::fs::File::create(&tmp).await?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(std::io::Error::other(e));
            }
        };
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            bytes += data.len() as u64;
            file.write_all(&data).await?;
        }
    }
    file.flush().await?;
    drop(file);
    let found = hex::encode(hasher.finalize());
    if found != digest {
        let _ = std::fs::remove_file(&tmp);
        return refuse(st, 400, "body does not match Content-Digest");
    }
    if m.data.sha256 != digest || m.data.bytes != bytes {
        let _ = std::fs::remove_file(&tmp);
        return refuse(st, 400, "body does not match the manifest");
    }

    let receipt = {
        let mut s = st.lock().expect("state");
        if let Some((d, _, rid)) = s.accepted.get(&(feed.clone(), seq)).cloned() {
            let _ = std::fs::remove_file(&tmp);
            if d != digest {
                s.conflicts += 1;
                return answer(
                    409,
                    format!("batch {seq} of {feed} is held with other content"),
                );
            }
            s.duplicates += 1;
            receipt_json(&feed, seq, &digest, &rid)
        } else {
            let last = s
                .accepted
                .range((feed.clone(), 0)..(feed.clone(), u64::MAX))
                .next_back()
                .map(|((_, q), (_, ms, _))| (*q, ms.clone()));
            let in_order = match &last {
                None => seq == 1 && m.previous_manifest_sha256.is_none(),
                Some((q, ms)) => {
                    seq == q + 1 && m.previous_manifest_sha256.as_deref() == Some(ms.as_str())
                }
            };
            if !in_order {
                let _ = std::fs::remove_file(&tmp);
                drop(s);
                return refuse(st, 400, "out of order or broken chain");
            }
            std::fs::rename(&tmp, dir.join(&m.data.file))?;
            std::fs::write(
                dir.join(format!("{feed}-{seq:08}.manifest.json")),
                &manifest,
            )?;
            let rid = format!("r-{feed}-{seq}-{}", &digest[..12]);
            s.accepted.insert(
                (feed.clone(), seq),
                (digest.clone(), manifest_sha, rid.clone()),
            );
            *s.accepts
                .entry((feed.clone(), seq, digest.clone()))
                .or_default() += 1;
            s.log.push((feed.clone(), seq));
            receipt_json(&feed, seq, &digest, &rid)
        }
    };
    if let Fault::Slow(d) = fault {
        tokio::time::sleep(d).await;
    }
    answer(201, receipt)
}

fn receipt_json(feed: &str, seq: u64, sha: &str, rid: &str) -> String {
    serde_json::json!({
        "feed": feed,
        "seq": seq,
        "sha256": sha,
        "received_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "receipt_id": rid,
    })
    .to_string()
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
