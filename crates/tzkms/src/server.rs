//! HTTP server speaking the Octez remote-signer protocol: `GET/POST /keys/<pkh>`, `GET /authorized_keys`.
//! Errors are Octez error lists (`[{"kind":"temporary","id":"failure","msg":…}]`) with meaningful statuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tezos::payload::magic_byte_name;
use tezos::{BlsScheme, PublicKeyHash, SignatureVersion};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::config::ServerConfig;
use crate::signer::{SignError, SignRequest, Signer};

#[derive(Debug, Clone)]
struct AppState {
    signer: Arc<Signer>,
    max_body_bytes: usize,
}

/// An error answered in Octez's error-list format.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!([{ "kind": "temporary", "id": "failure", "msg": self.message }]);
        (self.status, Json(body)).into_response()
    }
}

fn parse_pkh(text: &str) -> Result<PublicKeyHash, ApiError> {
    text.parse()
        .map_err(|e| ApiError::new(400, format!("invalid public key hash {text:?}: {e}")))
}

/// The query parameters of a signing request. Unknown parameters are ignored, as Octez does.
#[derive(Debug, Default)]
struct SignQuery {
    version: Option<SignatureVersion>,
    authentication: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<SignQuery, ApiError> {
    let mut query = SignQuery::default();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "version" => {
                query.version = Some(value.parse().map_err(|e: String| ApiError::new(400, e))?);
            }
            "authentication" => query.authentication = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(query)
}

/// Reads the body (a JSON string of hex) within the size limit and decodes it.
async fn read_payload(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::new(413, format!("request body larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit =
            std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else {
            ApiError::new(400, format!("cannot read request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            400,
            "empty body: expected a JSON string of hex bytes",
        ));
    }
    let text: String = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(400, format!("body is not a JSON string of hex bytes: {e}")))?;
    if text.is_empty() {
        return Err(ApiError::new(400, "can't sign empty data"));
    }
    hex::decode(&text).map_err(|e| ApiError::new(400, format!("body is not valid hex: {e}")))
}

async fn get_public_key(
    State(state): State<AppState>,
    Path(pkh): Path<String>,
) -> Result<Response, ApiError> {
    let pkh = parse_pkh(&pkh)?;
    let pk = state.signer.public_key(&pkh).await?;
    Ok(Json(json!({ "public_key": pk.to_string() })).into_response())
}

async fn post_sign(
    State(state): State<AppState>,
    Path(pkh): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let pkh = parse_pkh(&pkh)?;
    let query = parse_query(query.as_deref())?;
    let payload = read_payload(&headers, body, state.max_body_bytes).await?;
    let request = SignRequest {
        pkh,
        payload,
        scheme: BlsScheme::for_version(query.version),
    };
    let digest = hex::encode(tezos::blake2b_256(&request.payload));
    let magic = request.payload[0];
    match state.signer.sign(&request).await {
        Ok(signed) => {
            let (kind, chain, level, round) = match &signed.consensus {
                Some((k, r)) => (
                    k.kind.name(),
                    k.chain.to_string(),
                    r.level.0.to_string(),
                    r.round.0.to_string(),
                ),
                None => (
                    magic_byte_name(magic),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
            };
            tracing::info!(
                target: "tzkms::audit",
                %pkh, kind, chain, level, round, payload_blake2b = %digest,
                decision = if signed.replayed { "replayed" } else { "signed" },
                latency_us = started.elapsed().as_micros() as u64,
            );
            Ok(Json(json!({ "signature": signed.signature.to_string() })).into_response())
        }
        Err(e) => {
            tracing::warn!(
                target: "tzkms::audit",
                %pkh, kind = magic_byte_name(magic), payload_blake2b = %digest,
                decision = "refused", status = e.status(), reason = %e,
                latency_us = started.elapsed().as_micros() as u64,
            );
            Err(e.into())
        }
    }
}

async fn get_authorized_keys() -> Response {
    // octez-client treats a list (even an empty one) as "authentication required"; `{}` means none.
    Json(json!({})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(404, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method not allowed on this route")
}

pub fn router(signer: Arc<Signer>, config: &ServerConfig) -> Router {
    let state = AppState {
        signer,
        max_body_bytes: config.max_body_bytes,
    };
    Router::new()
        .route("/keys/{pkh}", get(get_public_key).post(post_sign))
        .route("/authorized_keys", get(get_authorized_keys))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        .with_state(state)
}

/// The bound server: listeners are open (so their ports are known) but not yet serving.
#[derive(Debug)]
pub struct App {
    listeners: Vec<TcpListener>,
    router: Router,
}

impl App {
    /// Binds every configured address. Port 0 picks a free port; see [`App::local_addrs`].
    pub async fn bind(signer: Arc<Signer>, config: &ServerConfig) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.push(listener);
        }
        Ok(Self {
            listeners,
            router: router(signer, config),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for in-flight requests.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for listener in self.listeners {
            let mut rx = stop_rx.clone();
            let router = self.router.clone();
            tasks.push(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await
            }));
        }
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        for task in tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}
