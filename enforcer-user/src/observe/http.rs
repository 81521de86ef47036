//! The agent's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`, on localhost by default.
//!
//! - `/metrics`: OpenMetrics text, collected at scrape time ([`MetricsSource::render`] on a
//!   blocking thread).
//! - `/healthz`: 200 while the agent loop's heartbeat is recent (younger than
//!   [`HttpOptions::liveness_timeout`], default 10 s), 503 otherwise: a stuck loop fails the
//!   liveness probe and the kubelet restarts the agent (enforcement continues from the pins).
//! - `/readyz`: 200 once the first full sync is programmed ([`AgentStatus::is_ready`]), 503
//!   before.
//!
//! hyper 1 with HTTP/1.1 only; each connection is its own task, with a header read timeout so
//! a stalled client cannot hold one forever.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{MetricsSource, metrics::CONTENT_TYPE, time::human_duration};
use crate::agent::status::AgentStatus;

/// Where the agent listens unless told otherwise (localhost: probes and a node-local
/// Prometheus agent reach it with `hostNetwork`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9466";
/// `/healthz` fails when the loop's heartbeat is older than this.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    pub liveness_timeout: Duration,
    /// A connection that has not sent its request headers by then is closed.
    pub header_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            header_timeout: Duration::from_secs(10),
        }
    }
}

struct Shared {
    status: Arc<AgentStatus>,
    source: MetricsSource,
    opts: HttpOptions,
}

/// A bound server (bind first to learn the port, e.g. with port 0 in tests).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn plain(status: StatusCode, body: String) -> Response<Body> {
    text(status, "text/plain; charset=utf-8", body)
}

/// `/healthz`: (status, body).
pub fn health(status: &AgentStatus, timeout: Duration) -> (StatusCode, String) {
    let age = status.since_heartbeat();
    if age < timeout {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the agent loop last went round {} ago (limit {})\n",
                human_duration(age),
                human_duration(timeout)
            ),
        )
    }
}

/// `/readyz`: (status, body).
pub fn readiness(status: &AgentStatus) -> (StatusCode, String) {
    if status.is_ready() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first full sync is not programmed yet\n".into(),
        )
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let response = match req.uri().path() {
        "/metrics" => {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || s.source.render(&s.status)).await {
                Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("collecting metrics failed: {e}\n"),
                ),
            }
        }
        "/healthz" | "/livez" => {
            let (code, body) = health(&shared.status, shared.opts.liveness_timeout);
            plain(code, body)
        }
        "/readyz" => {
            let (code, body) = readiness(&shared.status);
            plain(code, body)
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    };
    Ok(response)
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        status: Arc<AgentStatus>,
        source: MetricsSource,
        opts: HttpOptions,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding the metrics/health address {addr}: {e}"),
            )
        })?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                status,
                source,
                opts,
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the listener fails (accept errors on one connection are logged and
    /// skipped). Drop the future to stop.
    pub async fn run(self) -> io::Result<()> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            let header_timeout = shared.opts.header_timeout;
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(shared.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "HTTP connection");
                }
            });
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` with default options until
/// the listener fails. Binding errors are returned when the future is first polled.
pub fn serve(
    addr: SocketAddr,
    status: Arc<AgentStatus>,
    source: MetricsSource,
) -> impl Future<Output = io::Result<()>> + Send {
    serve_with(addr, status, source, HttpOptions::default())
}

/// [`serve`] with options.
pub async fn serve_with(
    addr: SocketAddr,
    status: Arc<AgentStatus>,
    source: MetricsSource,
    opts: HttpOptions,
) -> io::Result<()> {
    Server::bind(addr, status, source, opts).await?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_first_sync() {
        let status = AgentStatus::new();
        assert_eq!(readiness(&status).0, StatusCode::SERVICE_UNAVAILABLE);
        status.heartbeat();
        assert_eq!(health(&status, Duration::from_secs(10)).0, StatusCode::OK);
        let (code, body) = health(&status, Duration::ZERO);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("limit 0ms"), "{body}");
    }
}
