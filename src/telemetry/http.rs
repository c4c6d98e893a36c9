//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (the
//! process answers) and `/readyz` (what [`Checks::ready`] says: the daemon's
//! checks are in `crate::daemon`), plain HTTP/1.1 on one configured address,
//! no TLS (bind it to loopback or a management network).
//!
//! It serves what it is given; it decides nothing about the daemon.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the endpoint asks of the daemon: whether it is ready (and why not),
/// and to bring the gauges read from the store up to date before a scrape.
pub trait Checks: Send + Sync + 'static {
    /// `Ok`, or what is not ready (operator text: no person, no source path).
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Called before each `/metrics` render.
    fn before_scrape(&self) -> BoxFuture<'_, ()>;
}

/// A boxed future, as [`Checks`] returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn route(
    req: Request<hyper::body::Incoming>,
    metrics: PrometheusHandle,
    health: Arc<dyn Checks>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", PLAIN));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            health.before_scrape().await;
            metrics.run_upkeep();
            text(
                StatusCode::OK,
                metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        "/healthz" => text(StatusCode::OK, "ok\n", PLAIN),
        "/readyz" => match health.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n", PLAIN),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
                PLAIN,
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n", PLAIN),
    })
}

/// Serves the endpoint on `listener` until `shutdown`; each connection is a
/// task on `tracker`, dropped at shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<dyn Checks>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Telemetry endpoint: accept failed.");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let (metrics, health, shutdown) = (metrics.clone(), health.clone(), shutdown.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| route(req, metrics.clone(), health.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "Telemetry endpoint: connection ended.");
                    }
                }
            }
        });
    }
}
