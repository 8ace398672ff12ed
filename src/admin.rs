//! The admin HTTP server (DESIGN §6): a small hyper HTTP/1 server on `[admin] address`, apart
//! from the memcached port, so scrapes and probes never queue behind client traffic.
//!
//! | path            | answer                                                               |
//! |-----------------|----------------------------------------------------------------------|
//! | `/metrics`      | every series, Prometheus text format 0.0.4                           |
//! | `/healthz`      | `200 ok`: the process runs and answers                               |
//! | `/readyz`       | `200 ready`, or `503` and one line saying why ([`readiness`])        |
//! | `/config`       | the running config, its hash and load time, as JSON ([`config_json`]) |
//! | `/route?key=K`  | the route and, per tier, the pool and server K maps to ([`key_route`]) |
//!
//! Only `GET` and `HEAD` are served (`405` otherwise), unknown paths get `404`. Every answer is
//! computed from the current snapshot on each request; nothing here is on the request path of
//! memcached clients.
//!
//! The address is bound once at start-up: a reload that changes `[admin] address` takes effect
//! only after a restart.

pub mod config_json;
pub mod key_route;
pub mod readiness;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::Shared;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A response with its whole body in memory (every admin answer is small).
pub type Page = Response<Full<Bytes>>;

/// Binds `address` and serves the admin endpoints on a background task. Returns the bound
/// address (useful with port 0). Must run inside the tokio runtime.
pub async fn spawn(address: &str, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "admin server listening");
    tokio::spawn(serve(listener, shared));
    Ok(bound)
}

/// Accepts admin connections forever, one task per connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let reply = handle(&shared, req.method(), req.uri());
                async move { Ok::<_, Infallible>(reply) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Answers one request. (hyper leaves the body out of `HEAD` answers by itself.)
pub fn handle(shared: &Shared, method: &Method, uri: &hyper::Uri) -> Page {
    let path = uri.path();
    if !matches!(
        path,
        "/metrics" | "/healthz" | "/readyz" | "/config" | "/route"
    ) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        reply
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    match path {
        "/metrics" => metrics(shared),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness::check(shared) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n")),
        },
        "/config" => json(StatusCode::OK, &config_json::render(&shared.snapshot())),
        _ => match key_route::render(&shared.snapshot(), uri.query()) {
            Ok(body) => json(StatusCode::OK, &body),
            Err(problem) => text(StatusCode::BAD_REQUEST, &format!("{problem}\n")),
        },
    }
}

/// `/metrics`: the registry in the text exposition format.
fn metrics(shared: &Shared) -> Page {
    use prometheus::Encoder;
    let mut body = Vec::with_capacity(16 * 1024);
    if let Err(e) =
        prometheus::TextEncoder::new().encode(&shared.metrics.registry.gather(), &mut body)
    {
        tracing::error!(error = %e, "cannot encode metrics");
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    }
    reply(StatusCode::OK, METRICS_CONTENT_TYPE, body.into())
}

fn text(status: StatusCode, body: &str) -> Page {
    reply(status, TEXT, Bytes::copy_from_slice(body.as_bytes()))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Page {
    // Pretty: these answers are read by people (`curl …/config`) far more often than by programs.
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    reply(status, JSON, body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Page {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
