//! HTTP(S) server speaking the Octez remote-signer protocol: `GET/POST /keys/<pkh>`, `GET /authorized_keys`,
//! and, when enabled, `GET /known_keys` and `GET /bls_prove_possession/<pkh>`. Errors are Octez error
//! lists (`[{"kind":"temporary","id":"failure","msg":…}]`) with meaningful statuses. Every request
//! leaves one audit line.

mod activity;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tezos::{BlsScheme, PublicKey, PublicKeyHash, SignatureVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

use crate::audit::{AuditRecord, Decision};
use crate::config::ServerConfig;
use crate::limits::RouteClass;
use crate::signer::{Outcome, SignError, SignRequest, SignRoute, Signed, Signer};
use tls::{ClientCertificate, Tls, TlsError};

/// A TLS handshake not finished in this time closes the connection.

#[derive(Debug, Clone)]
struct AppState {
    signer: Arc<Signer>,
    max_body_bytes: usize,
    allow_list_known_keys: bool,
    allow_prove_possession: bool,
}

/// Who is on the other end of a connection; put in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate on an mTLS listener.
    pub certificate: Option<ClientCertificate>,
}

/// What an [`Outcome`] is at the edge: its HTTP status, its audit decision (which also says whether the
/// answer is the handler's JSON or an Octez error list, see [`answer`]) and its `outcome` label in
/// `tzkms_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meaning {
    status: StatusCode,
    decision: Decision,
    metric: &'static str,
}

/// The one place outcomes are mapped: a new [`Outcome`] does not compile until it has a row here.
fn meaning(outcome: Outcome) -> Meaning {
    let (status, decision, metric) = match outcome {
        Outcome::Signed => (StatusCode::OK, Decision::Signed, "signed"),
        Outcome::Replayed => (StatusCode::OK, Decision::Replayed, "replayed"),
        Outcome::Served => (StatusCode::OK, Decision::Served, "served"),
        Outcome::Unauthenticated => (StatusCode::UNAUTHORIZED, Decision::Refused, "unauthenticated"),
        Outcome::RefusedAuth => (StatusCode::FORBIDDEN, Decision::Refused, "unauthenticated"),
        Outcome::RefusedPolicy => (StatusCode::FORBIDDEN, Decision::Refused, "refused_policy"),
        Outcome::RefusedWatermark => (StatusCode::CONFLICT, Decision::Refused, "refused_watermark"),
        Outcome::RateLimited => (StatusCode::TOO_MANY_REQUESTS, Decision::Refused, "rate_limited"),
        Outcome::NotFound => (StatusCode::NOT_FOUND, Decision::Refused, "not_found"),
        Outcome::BadRequest => (StatusCode::BAD_REQUEST, Decision::Refused, "bad_request"),
        Outcome::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Decision::Refused, "too_large"),
        Outcome::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, Decision::Refused, "bad_request"),
        Outcome::Failed => (StatusCode::INTERNAL_SERVER_ERROR, Decision::Refused, "error"),
    };
    Meaning {
        status,
        decision,
        metric,
    }
}

/// A refusal, answered in Octez's error-list format with the status of its outcome.
#[derive(Debug)]
pub struct ApiError {
    outcome: Outcome,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::limits::Limited> for ApiError {
    fn from(l: crate::limits::Limited) -> Self {
        Self {
            retry_after: Some(l.retry_after),
            ..Self::new(Outcome::RateLimited, l.to_string())
        }
    }
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        Self {
            retry_after: e.retry_after(),
            ..Self::new(e.outcome(), e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!([{ "kind": "temporary", "id": "failure", "msg": self.message }]);
        let mut response = (meaning(self.outcome).status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

fn parse_pkh(text: &str) -> Result<PublicKeyHash, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            Outcome::BadRequest,
            format!("invalid public key hash {text:?}: {e}"),
        )
    })
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
                query.version = Some(
                    value
                        .parse()
                        .map_err(|e: String| ApiError::new(Outcome::BadRequest, e))?,
                );
            }
            "authentication" => query.authentication = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(query)
}

/// Reads the body (a JSON string of hex) within the size limit and decodes it.
async fn read_payload(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            Outcome::TooLarge,
            format!("request body larger than {limit} bytes"),
        )
    };
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
            ApiError::new(Outcome::BadRequest, format!("cannot read request body: {e}"))
        }
    })?;
    decode_body(&bytes).map_err(|e| ApiError::new(Outcome::BadRequest, e))
}

/// The JSON string a signing request's body holds.
pub fn body_text(body: &[u8]) -> Result<String, String> {
    if body.is_empty() {
        return Err("empty body: expected a JSON string of hex bytes".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not a JSON string of hex bytes: {e}"))
}

/// The bytes to sign from a request body (a JSON string of hex).
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, String> {
    let text = body_text(body)?;
    if text.is_empty() {
        return Err("can't sign empty data".into());
    }
    hex::decode(&text).map_err(|e| format!("body is not valid hex: {e}"))
}

/// What a handler learned about its request, attached to its answer for [`audit_layer`].
#[derive(Debug, Clone)]
struct Audit {
    record: AuditRecord,
    outcome: Outcome,
    /// The error message of a refusal.
    reason: Option<String>,
}

/// The answer to a request, carrying its audit facts: `done` is the outcome when it succeeded (the
/// handler's JSON is the answer, with the outcome's status), a refusal is answered with an Octez error
/// list.
fn answer(record: AuditRecord, done: Outcome, result: Result<Response, ApiError>) -> Response {
    let (mut response, outcome, reason) = match result {
        Ok(mut response) => {
            *response.status_mut() = meaning(done).status;
            (response, done, None)
        }
        Err(e) => {
            let (outcome, reason) = (e.outcome, Some(e.message.clone()));
            (e.into_response(), outcome, reason)
        }
    };
    response.extensions_mut().insert(Audit {
        record,
        outcome,
        reason,
    });
    response
}

/// The one place a request is recorded: every answer a route handler gives (see [`answer`]) leaves one
/// audit line and one count in the metrics, with the client's address and certificate and the time from
/// request to answer. Answers no handler gave (no such route, the per-client limit, the request timeout)
/// are counted elsewhere.
async fn audit_layer(
    State(signer): State<Arc<Signer>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let peer = request.extensions().get::<Peer>().cloned();
    let mut response = next.run(request).await;
    if let Some(Audit {
        mut record,
        outcome,
        reason,
    }) = response.extensions_mut().remove::<Audit>()
    {
        if let Some(peer) = peer {
            record.client = Some(peer.addr);
            record.tls_client = peer.certificate;
        }
        let meaning = meaning(outcome);
        let latency = started.elapsed();
        record.emit(
            meaning.decision,
            response.status().as_u16(),
            reason.as_deref(),
            latency,
        );
        signer.observe(&record, meaning.decision, meaning.metric, latency);
    }
    response
}

async fn get_public_key(State(state): State<AppState>, Path(pkh): Path<String>) -> Response {
    let result: Result<Response, ApiError> = async {
        let pkh = parse_pkh(&pkh)?;
        let pk = state.signer.public_key(&pkh).await?;
        Ok(Json(json!({ "public_key": pk.to_string() })).into_response())
    }
    .await;
    let mut record = AuditRecord::new("public_key", None, None);
    record.pkh = Some(pkh);
    answer(record, Outcome::Served, result)
}

async fn post_sign(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    Path(pkh): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = AuditRecord::new("sign", None, None);
    record.pkh = Some(pkh.clone());
    let result = sign(
        &state,
        SignRoute::Keys,
        peer,
        &pkh,
        query.as_deref(),
        &headers,
        body,
        &mut record,
    )
    .await;
    signed_answer(
        record,
        result,
        |signed| json!({ "signature": signed.signature.to_string() }),
    )
}

/// The answer of a signing route: `body` gives the JSON of a signature; a refusal's rule goes into the
/// audit record.
fn signed_answer(
    mut record: AuditRecord,
    result: Result<Signed, (ApiError, Option<String>)>,
    body: impl FnOnce(&Signed) -> serde_json::Value,
) -> Response {
    match result {
        Ok(signed) => {
            let response = Json(body(&signed)).into_response();
            answer(record, signed.outcome(), Ok(response))
        }
        Err((e, rule)) => {
            record.rule = rule.or(record.rule.take());
            answer(record, e.outcome, Err(e))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn sign(
    state: &AppState,
    route: SignRoute,
    peer: Option<Extension<Peer>>,
    pkh: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    record: &mut AuditRecord,
) -> Result<Signed, (ApiError, Option<String>)> {
    let pkh = parse_pkh(pkh).map_err(|e| (e, None))?;
    let query = parse_query(query).map_err(|e| (e, None))?;
    if let Some(version) = query.version {
        version
            .check_curve(pkh.curve())
            .map_err(|e| (ApiError::new(Outcome::BadRequest, e), None))?;
    }
    let payload = read_payload(headers, body, state.max_body_bytes)
        .await
        .map_err(|e| (e, None))?;
    let request = SignRequest {
        pkh,
        route,
        payload,
        scheme: BlsScheme::for_version(query.version),
        authentication: query.authentication,
        client: peer.as_ref().map(|Extension(p)| p.addr.ip()),
        certificate: peer.and_then(|Extension(p)| p.certificate),
    };
    match state.signer.sign(&request, record).await {
        Ok(signed) => Ok(signed),
        Err(e) => {
            let rule = e.rule();
            Err((e.into(), rule))
        }
    }
}

async fn get_authorized_keys(State(state): State<AppState>) -> Response {
    let record = AuditRecord::new("authorized_keys", None, None);
    // octez-client treats a list (even an empty one) as "authentication required"; `{}` means none.
    let response = match state.signer.rules().auth.advertised() {
        None => Json(json!({})).into_response(),
        Some(hashes) => {
            let list: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
            Json(json!({ "authorized_keys": list })).into_response()
        }
    };
    answer(record, Outcome::Served, Ok(response))
}

async fn get_known_keys(State(state): State<AppState>) -> Response {
    let mut record = AuditRecord::new("known_keys", None, None);
    let result = if state.allow_list_known_keys {
        record.rule = Some("server.allow_list_known_keys".into());
        let keys: Vec<String> = state
            .signer
            .rules()
            .keyring
            .sorted()
            .into_iter()
            .map(|(pkh, _)| pkh.to_string())
            .collect();
        Ok(Json(json!({ "known_keys": keys })).into_response())
    } else {
        record.rule = Some("server.allow_list_known_keys".into());
        Err(ApiError::new(
            Outcome::RefusedPolicy,
            "List known keys request not allowed (server.allow_list_known_keys is off)",
        ))
    };
    answer(record, Outcome::Served, result)
}

async fn get_bls_prove_possession(
    State(state): State<AppState>,
    Path(pkh): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut record = AuditRecord::new("bls_prove_possession", None, None);
    record.pkh = Some(pkh.clone());
    record.rule = Some("server.allow_prove_possession".into());
    let result = prove_possession(&state, &pkh, query.as_deref());
    answer(record, Outcome::Served, result)
}

fn prove_possession(state: &AppState, pkh: &str, query: Option<&str>) -> Result<Response, ApiError> {
    if !state.allow_prove_possession {
        return Err(ApiError::new(
            Outcome::RefusedPolicy,
            "Request to prove possession is not allowed (server.allow_prove_possession is off)",
        ));
    }
    let pkh = parse_pkh(pkh)?;
    let mut override_pk: Option<PublicKey> = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if let Some(("bls_pk", value)) = pair.split_once('=') {
            let pk: PublicKey = value
                .parse()
                .map_err(|e| ApiError::new(Outcome::BadRequest, format!("invalid bls_pk {value:?}: {e}")))?;
            if pk.curve() != tezos::Curve::Bls {
                return Err(ApiError::new(
                    Outcome::BadRequest,
                    "bls_pk must be a BLS public key (BLpk…)",
                ));
            }
            override_pk = Some(pk);
        }
    }
    let key = state
        .signer
        .rules()
        .keyring
        .get(&pkh)
        .ok_or(SignError::UnknownKey(pkh))?;
    if pkh.curve() != tezos::Curve::Bls {
        return Err(ApiError::new(
            Outcome::BadRequest,
            format!("{pkh} is not a BLS key: only tz4 keys have proofs of possession"),
        ));
    }
    let proof = key
        .backend
        .bls_prove_possession(&pkh, override_pk.as_ref())
        .ok_or_else(|| {
            ApiError::new(
                Outcome::Failed,
                format!("the backend of {pkh} cannot make a proof of possession"),
            )
        })?;
    Ok(Json(json!({ "bls_prove_possession": proof.to_string() })).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(Outcome::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Outcome::MethodNotAllowed, "method not allowed on this route")
}

/// Counts the 408s of the request timeout, which no handler sees.
async fn count_timeouts(State(signer): State<Arc<Signer>>, response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        signer.metrics().count_request_timeout();
    }
    response
}

/// The per-client bucket a request counts against before its body is read; `None` for signing requests,
/// which the signer counts once it knows whether the payload is consensus (never limited) or not.
fn route_class(method: &axum::http::Method, path: &str) -> Option<RouteClass> {
    use axum::http::Method;
    let keys = path.starts_with("/keys/");
    match *method {
        // Signing and cosigning requests: the signer counts generic ones, never consensus ones.
        Method::POST if keys || path.starts_with("/cosign/") => None,
        Method::GET if keys || path == "/authorized_keys" => Some(RouteClass::Reads),
        _ => Some(RouteClass::Other),
    }
}

/// Refuses a client over its request rate for the route's class before anything else is done for it.
async fn per_client_limit(
    State(signer): State<Arc<Signer>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let class = route_class(request.method(), request.uri().path());
    if let (Some(peer), Some(class)) = (request.extensions().get::<Peer>(), class) {
        if let Err(limited) = signer.limits().admit_client(peer.addr.ip(), class) {
            tracing::warn!(client = %peer.addr, "{limited}");
            return ApiError::from(limited).into_response();
        }
    }
    next.run(request).await
}

pub fn router(signer: Arc<Signer>, config: &ServerConfig) -> Router {
    let state = AppState {
        signer: signer.clone(),
        max_body_bytes: config.max_body_bytes,
        allow_list_known_keys: config.allow_list_known_keys,
        allow_prove_possession: config.allow_prove_possession,
    };
    Router::new()
        .route("/keys/{pkh}", get(get_public_key).post(post_sign))
        .route("/authorized_keys", get(get_authorized_keys))
        .route("/known_keys", get(get_known_keys))
        .route("/bls_prove_possession/{pkh}", get(get_bls_prove_possession))
        .route("/cosign/{pkh}", get(get_cosign).post(post_cosign))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(signer.clone(), audit_layer))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        .layer(axum::middleware::map_response_with_state(
            signer.clone(),
            count_timeouts,
        ))
        .layer(axum::middleware::from_fn_with_state(signer, per_client_limit))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("a listener task failed: {0}")]
    Task(String),
}

/// One bound listening socket.
#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    tls: Option<Arc<Tls>>,
}

/// The bound server: listeners are open (so their ports are known) but not yet serving.
#[derive(Debug)]
pub struct App {
    listeners: Vec<Listener>,
    tls: Option<Arc<Tls>>,
    router: Router,
    connections: Arc<Connections>,
}

/// Bounds on connections: how many at once, how long a client may take to send headers or complete a TLS
/// handshake, how long an idle connection stays open, how large a request head may be.
#[derive(Debug)]
pub struct Connections {
    slots: Arc<tokio::sync::Semaphore>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    /// Connections refused because all slots were taken.
    pub refused: std::sync::atomic::AtomicU64,
    /// Connections closed for idleness or a slow request head.
    pub timed_out: std::sync::atomic::AtomicU64,
    /// Connections that ended in a protocol error: a request head too slow (header_read_timeout) or too
    /// large (431), bytes that are not HTTP.
    pub protocol_errors: std::sync::atomic::AtomicU64,
}

impl Connections {
    fn new(config: &ServerConfig) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            handshake_timeout: Duration::from_millis(config.tls_handshake_timeout_ms),
            // hyper needs at least 8 KiB of read buffer.
            max_header_bytes: config.max_header_bytes.max(8192),
            refused: Default::default(),
            timed_out: Default::default(),
            protocol_errors: Default::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self, max: usize) -> usize {
        max - self.slots.available_permits()
    }
}

impl App {
    /// Binds every configured address, HTTP then HTTPS. Port 0 picks a free port; see
    /// [`App::endpoints`].
    pub async fn bind(signer: Arc<Signer>, config: &ServerConfig) -> Result<Self, ServerError> {
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let mut listeners = Vec::new();
        let https = config
            .tls
            .iter()
            .flat_map(|t| t.listen.iter().map(|a| (*a, tls.clone())));
        for (addr, tls) in config.listen.iter().map(|a| (*a, None)).chain(https) {
            let socket = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
            listeners.push(Listener { socket, tls });
        }
        Ok(Self {
            listeners,
            tls,
            router: router(signer, config),
            connections: Arc::new(Connections::new(config)),
        })
    }

    /// Every listening address (HTTP first).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints().into_iter().map(|(_, a)| a).collect()
    }

    /// `("http" | "https", address)` of every listener.
    pub fn endpoints(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let scheme = if l.tls.is_some() { "https" } else { "http" };
                l.socket.local_addr().ok().map(|a| (scheme, a))
            })
            .collect()
    }

    /// Connection bounds and their counters.
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// The HTTPS configuration, to reload it (SIGHUP) while serving.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for in-flight requests.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection task holds a sender; when all are dropped, every connection has ended.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut tasks = Vec::new();
        for listener in self.listeners {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                self.router.clone(),
                self.connections.clone(),
                stop_rx.clone(),
                alive_tx.clone(),
            )));
        }
        drop(alive_tx);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        for task in tasks {
            task.await.map_err(|e| ServerError::Task(e.to_string()))?;
        }
        let _ = alive_rx.recv().await;
        Ok(())
    }
}

/// Pending connections the kernel holds for us (capped by `net.core.somaxconn`). A baker's burst opens one
/// connection per delegate at the same instant (octez-client keeps none); with tokio's default of 128 the
/// rest were dropped and retried by TCP a second later, which was most of a 500-delegate burst's p99.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds like `TcpListener::bind` (SO_REUSEADDR included) but with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long the accept loop waits after a failed accept: 10 ms doubling to 1 s while failures go on,
/// back to nothing after a success. Each wait logs one warning that counts the failures since the last.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    failures: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.failures += 1;
        let pause = self.pause.map_or(Self::FIRST, |p| (p * 2).min(Self::MAX));
        self.pause = Some(pause);
        tracing::warn!(
            error = %error,
            failures = self.failures,
            retry_in_ms = pause.as_millis() as u64,
            "accept failed (out of file descriptors? raise LimitNOFILE / ulimit -n, or lower server.max_connections)"
        );
        pause
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        *self = Self::default();
    }
}

/// Accepts connections until told to stop; each connection is served on its own task.
async fn accept_loop(
    listener: Listener,
    router: Router,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.socket.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: the listener stays usable, but accept fails again
                // at once until a descriptor is freed. Waiting (and logging once per wait) keeps a loop
                // that would spin a core and flood the log down to a few lines a second.
                let pause = backoff.failed(&e);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = connections.slots.clone().try_acquire_owned() else {
            connections
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(client = %addr, "too many connections: refused");
            if listener.tls.is_none() {
                tokio::spawn(refuse_connection(stream));
            }
            continue;
        };
        let connections = connections.clone();
        let router = router.clone();
        let stop = stop.clone();
        let alive = alive.clone();
        let acceptor = listener.tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _alive = alive;
            let _slot = slot;
            match acceptor {
                None => {
                    let peer = Peer {
                        addr,
                        certificate: None,
                    };
                    serve_connection(stream, peer, router, &connections, stop).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(connections.handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let certificate = tls::client_certificate(tls.get_ref().1);
                            let peer = Peer { addr, certificate };
                            serve_connection(tls, peer, router, &connections, stop).await;
                        }
                        Ok(Err(e)) => match tls::handshake_failure(&e) {
                            tls::HandshakeFailure::ClientCertificate(why) => {
                                tracing::warn!(client = %addr, error = %e, "TLS handshake refused: {why}")
                            }
                            tls::HandshakeFailure::Other(_) => {
                                tracing::info!(client = %addr, error = %e, "TLS handshake refused")
                            }
                        },
                        Err(_) => tracing::info!(client = %addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Answers a connection over the limit with a 503 and closes it, without waiting on the client long.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"[{"kind":"temporary","id":"failure","msg":"too many connections; try again"}]"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response.as_bytes())).await;
}

async fn serve_connection<I>(
    io: I,
    peer: Peer,
    router: Router,
    connections: &Connections,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = activity::Tracked::new(io);
    let last_active = activity.last_active();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(connections.header_read_timeout)
        .max_buf_size(connections.max_header_bytes);
    builder
        .http2()
        .max_header_list_size(u32::try_from(connections.max_header_bytes).unwrap_or(u32::MAX));
    let connection = builder.serve_connection(TokioIo::new(activity), service);
    tokio::pin!(connection);
    // Checks for idleness a few times per idle period; an idle connection is shut down gracefully (a
    // request in flight still finishes).
    let mut idle_check = tokio::time::interval((connections.idle_timeout / 4).max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    connections.protocol_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => break,
            _ = idle_check.tick() => {
                if last_active.idle_for() >= connections.idle_timeout {
                    connections.timed_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    // Shutting down: finish the request in flight, then close.
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended with an error while shutting down");
    }
}

// The cosigner route of threshold keys: `POST /cosign/<group>` answers this machine's partial signature
// (`{"signature", "share_id"}`) after its own policy and watermark, to a coordinator that presents a
// verified client certificate; `GET /cosign/<group>` describes the share.

/// Why a cosigning request without a verified client certificate is refused.
const NEEDS_MTLS: &str = "/cosign needs mTLS: serve it on an HTTPS listener ([server.tls]) with client_ca \
     set, and call it with the coordinator's client certificate ([threshold.client] on the coordinator)";

async fn post_cosign(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    Path(pkh): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = AuditRecord::new("cosign", None, None);
    record.pkh = Some(pkh.clone());
    if peer
        .as_ref()
        .and_then(|Extension(p)| p.certificate.as_ref())
        .is_none()
    {
        record.rule = Some("threshold.mtls".into());
        return answer(
            record,
            Outcome::RefusedAuth,
            Err(ApiError::new(Outcome::RefusedAuth, NEEDS_MTLS)),
        );
    }
    let result = sign(
        &state,
        SignRoute::Cosign,
        peer,
        &pkh,
        query.as_deref(),
        &headers,
        body,
        &mut record,
    )
    .await;
    signed_answer(
        record,
        result,
        |signed| json!({ "signature": signed.signature.to_string(), "share_id": signed_share(&state, &pkh) }),
    )
}

fn signed_share(state: &AppState, pkh: &str) -> Option<u8> {
    let pkh = pkh.parse().ok()?;
    state
        .signer
        .rules()
        .keyring
        .get(&pkh)?
        .backend
        .share(&pkh)
        .map(|s| s.id)
}

async fn get_cosign(State(state): State<AppState>, Path(pkh): Path<String>) -> Response {
    let mut record = AuditRecord::new("cosign_info", None, None);
    record.pkh = Some(pkh.clone());
    let result = (|| {
        let pkh = parse_pkh(&pkh)?;
        let share = state
            .signer
            .rules()
            .keyring
            .get(&pkh)
            .and_then(|k| k.backend.share(&pkh))
            .ok_or(SignError::NotAShare(pkh))?;
        Ok::<_, ApiError>(
            Json(json!({
                "share_id": share.id,
                "share_public_key": share.public_key.to_string(),
                "threshold": share.threshold,
                "shares": share.shares,
            }))
            .into_response(),
        )
    })();
    answer(record, Outcome::Served, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;
    use crate::policy::PolicyError;
    use crate::watermark::WatermarkError;

    /// (status, metrics label) of a refusal.
    fn edge(e: SignError) -> (u16, &'static str) {
        let m = meaning(e.outcome());
        assert_eq!(m.decision, Decision::Refused);
        (m.status.as_u16(), m.metric)
    }

    #[test]
    fn outcomes_cover_every_status() {
        let pkh: PublicKeyHash = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap();
        let refused = |rule: &str| {
            SignError::Policy(PolicyError::Refused {
                rule: rule.into(),
                message: "no".into(),
            })
        };
        assert_eq!(
            edge(WatermarkError::UnknownHistory { pkh }.into()),
            (409, "refused_watermark")
        );
        assert_eq!(edge(SignError::ReplayVersionMismatch), (409, "refused_watermark"));
        assert_eq!(edge(refused("policy.default.allow")), (403, "refused_policy"));
        assert_eq!(edge(AuthError::NotAuthorized.into()), (403, "unauthenticated"));
        assert_eq!(edge(AuthError::Missing.into()), (401, "unauthenticated"));
        assert_eq!(
            edge(AuthError::Malformed("x".into()).into()),
            (403, "unauthenticated")
        );
        assert_eq!(
            edge(AuthError::NotBound { auth: pkh, pkh }.into()),
            (403, "unauthenticated")
        );
        // The policy's refusal of an authentication request keeps the label it always had.
        assert_eq!(
            edge(refused("authentication requests are never signed")),
            (403, "unauthenticated")
        );
        let limited = crate::limits::Limited {
            what: "per_client".into(),
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(edge(limited.into()), (429, "rate_limited"));
        assert_eq!(edge(SignError::UnknownKey(pkh)), (404, "not_found"));
        assert_eq!(edge(SignError::BadRequest("no".into())), (400, "bad_request"));
        assert_eq!(
            edge(SignError::Backend {
                pkh,
                message: "down".into()
            }),
            (500, "error")
        );
        assert_eq!(edge(SignError::VerificationFailed(pkh)), (500, "error"));
        let signed = meaning(Outcome::Signed);
        assert_eq!(
            (signed.status.as_u16(), signed.decision, signed.metric),
            (200, Decision::Signed, "signed")
        );
        let replayed = meaning(Outcome::Replayed);
        assert_eq!(
            (replayed.status.as_u16(), replayed.decision, replayed.metric),
            (200, Decision::Replayed, "replayed")
        );
        let served = meaning(Outcome::Served);
        assert_eq!(
            (served.status.as_u16(), served.decision, served.metric),
            (200, Decision::Served, "served")
        );
    }
}
