//! Listeners and the request pipeline: accept (TLS or plain), route, count, authenticate, inject faults, answer.

use crate::error::{IdentityError, VaultError};
use crate::faults::{Operation, Verdict};
use crate::routes::Route;
use crate::state::Shared;
use crate::{identity, vault};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Largest request body the emulator reads (Key Vault's own limit is far above what keys need).
const BODY_LIMIT: usize = 1024 * 1024;

/// Per-connection context handed to the handler through request extensions.
#[derive(Debug, Clone)]
struct Connection {
    scheme: &'static str,
    /// Notified to close the connection without answering (drop/stall faults).
    abort: Arc<Notify>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Accept connections until `shutdown` flips; each connection is served on its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = Connection {
                scheme,
                abort: Arc::new(Notify::new()),
            };
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => serve(tls_stream, router, conn, shutdown).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
                None => serve(stream, router, conn, shutdown).await,
            }
        });
    }
}

async fn serve<I>(io: I, router: Router, conn: Connection, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let abort = conn.abort.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(conn.clone());
        router.clone().oneshot(req.map(Body::new))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without a response.
        _ = abort.notified() => {}
        _ = shutdown.changed() => {}
    }
}

/// Request-scoped facts the handlers need.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    /// `scheme://host[:port]` as the client addressed us; used for `kid`s and `nextLink`s.
    pub base: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: axum::body::Bytes,
}

impl RequestCtx {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let conn = parts.extensions.get::<Connection>().cloned();
    let scheme = conn.as_ref().map_or("http", |c| c.scheme);
    let route = Route::parse(&parts.method, parts.uri.path());
    if let Route::Control(c) = route {
        // The test-control API is neither counted nor subject to faults.
        return if shared.config.control_api {
            crate::control::dispatch(&shared, c, body).await
        } else {
            VaultError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested URI does not represent any resource on the server.",
            )
            .into_response()
        };
    }
    let op = route.operation();
    shared.counters.record_received(op);

    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let base = match host {
        Some(h) => format!("{scheme}://{h}"),
        None => shared.main_base.clone(),
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let client_request_id = parts.headers.get("x-ms-client-request-id").cloned();

    let mut response = match pipeline(&shared, route, op, base, query, parts.headers, body, conn).await {
        Ok(r) | Err(r) => r,
    };
    shared.counters.record_status(op, response.status());
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&crate::clock::request_id()) {
        headers.insert("x-ms-request-id", v);
    }
    if let Some(id) = client_request_id {
        headers.insert("x-ms-client-request-id", id);
    }
    if op.is_data_plane() {
        headers.insert(
            "x-ms-keyvault-service-version",
            HeaderValue::from_static("1.9.2750.1"),
        );
        headers.insert("x-ms-keyvault-region", HeaderValue::from_static("emulator"));
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    shared: &Arc<Shared>,
    route: Route,
    op: Operation,
    base: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Body,
    conn: Option<Connection>,
) -> Result<Response, Response> {
    let caller = if op.is_data_plane() {
        Some(vault::authenticate(shared, &headers).map_err(IntoResponse::into_response)?)
    } else {
        None
    };

    let (latency, verdict) = {
        let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        (faults.latency(op), faults.verdict(op, Instant::now()))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match verdict {
        Verdict::Proceed => {}
        Verdict::Drop => return Err(abandon(conn).await),
        Verdict::Stall(d) => {
            tokio::time::sleep(d).await;
            return Err(abandon(conn).await);
        }
        Verdict::Throttle(retry_after) => return Err(injected_throttle(op, retry_after)),
        Verdict::Fail(status) => return Err(injected_failure(op, status)),
    }

    let body = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        VaultError::bad_parameter("The request body is too large or could not be read.").into_response()
    })?;
    let ctx = RequestCtx {
        base,
        query,
        headers,
        body,
    };
    Ok(match route {
        Route::Vault(v) => match caller {
            Some(caller) => vault::dispatch(shared, &ctx, &caller, v).into_response(),
            None => {
                VaultError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "missing caller").into_response()
            }
        },
        Route::Identity(i) => identity::dispatch(shared, &ctx, i),
        Route::NotFound => VaultError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested URI does not represent any resource on the server.",
        )
        .into_response(),
        Route::Control(_) => StatusCode::NOT_FOUND.into_response(),
        Route::MethodNotAllowed => VaultError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The requested resource does not support this HTTP method.",
        )
        .into_response(),
    })
}

/// 429 in the shape of the service that was called: Key Vault's error body, or an OAuth-style one.
fn injected_throttle(op: Operation, retry_after: Option<u64>) -> Response {
    let mut response = if op.is_identity() {
        IdentityError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "Too many requests; retry later (injected fault).",
        )
        .into_response()
    } else {
        VaultError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: \
             VaultRequestTypeLimitReached",
        )
        .into_response()
    };
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

/// An injected error status with a body in the shape of the service that was called.
fn injected_failure(op: Operation, status: StatusCode) -> Response {
    if op.is_identity() {
        return IdentityError::new(
            status,
            "server_error",
            "The service encountered an internal error (injected fault).",
        )
        .into_response();
    }
    let code = match status {
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::BAD_GATEWAY => "BadGateway",
        StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
        _ => "InternalServerError",
    };
    VaultError::new(
        status,
        code,
        "The service encountered an internal error (injected fault).",
    )
    .into_response()
}

/// Close the connection without a response; the handler never completes (its future is dropped with the
/// connection). Without a connection handle (should not happen) answer 503 instead.
async fn abandon(conn: Option<Connection>) -> Response {
    match conn {
        Some(c) => {
            c.abort.notify_one();
            std::future::pending::<Response>().await
        }
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
