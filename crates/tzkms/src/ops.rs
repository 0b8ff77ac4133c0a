//! The operations listener (off the signing port): Prometheus metrics (`/metrics`), liveness
//! (`/healthz`), readiness (`/readyz`) and `GET /status`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::config::HealthConfig;
use crate::health::{Check, Observers};
use crate::metrics::Exposition;
use crate::server::Connections;
use crate::signer::Signer;
use crate::status::readiness;

/// The Prometheus text exposition: the signer's counters, the limits, the connections, the keys, each
/// observed backend's and the watermark store's own families, and readiness.
pub(crate) fn render(
    signer: &Signer,
    observers: &Observers,
    connections: Option<&Connections>,
    checks: &[Check],
) -> String {
    let mut e = Exposition::default();
    let metrics = signer.metrics();
    metrics.write_requests(&mut e);
    let limits = &signer.limits().counters;
    e.family(
        "tzkms_rate_limited_total",
        "counter",
        "Requests refused by a rate limit.",
    );
    for (limit, counter) in [
        ("per_client", &limits.per_client),
        ("generic_per_key", &limits.generic_per_key),
        ("generic_backend_share", &limits.generic_backend_share),
    ] {
        e.sample(
            "tzkms_rate_limited_total",
            &[("limit", limit)],
            counter.load(Ordering::Relaxed),
        );
    }
    metrics.write_lifecycle(&mut e);
    if let Some(c) = connections {
        e.family(
            "tzkms_connection_errors_total",
            "counter",
            "Connections ended by a protocol error (slow or oversized head, not HTTP).",
        );
        e.sample(
            "tzkms_connection_errors_total",
            &[],
            c.protocol_errors.load(Ordering::Relaxed),
        );
        e.family(
            "tzkms_connections_refused_total",
            "counter",
            "Connections refused over max_connections.",
        );
        e.sample(
            "tzkms_connections_refused_total",
            &[],
            c.refused.load(Ordering::Relaxed),
        );
        e.family(
            "tzkms_connections_timed_out_total",
            "counter",
            "Connections closed for idleness.",
        );
        e.sample(
            "tzkms_connections_timed_out_total",
            &[],
            c.timed_out.load(Ordering::Relaxed),
        );
    }
    e.family("tzkms_keys", "gauge", "Keys served, by backend.");
    let mut by_backend: BTreeMap<&'static str, usize> = BTreeMap::new();
    let rules = signer.rules();
    for (backend, n) in rules.keyring.keys_per_backend() {
        *by_backend.entry(backend.kind()).or_default() += n;
    }
    for (backend, n) in by_backend {
        e.sample("tzkms_keys", &[("backend", backend)], n);
    }
    for observed in observers.iter() {
        observed.write_metrics(&mut e);
    }
    signer.watermarks().write_metrics(&mut e);
    e.family(
        "tzkms_ready",
        "gauge",
        "1 when every readiness check passes (see /readyz), else 0.",
    );
    e.sample("tzkms_ready", &[], u8::from(checks.iter().all(|c| c.ok)));
    e.family(
        "tzkms_health_check_ok",
        "gauge",
        "One readiness check: 1 passing, 0 failing (the reason is in /readyz).",
    );
    for c in checks {
        e.sample("tzkms_health_check_ok", &[("check", &c.name)], u8::from(c.ok));
    }
    e.finish()
}

#[derive(Clone)]
struct OpsState {
    signer: Arc<Signer>,
    observers: Observers,
    connections: Option<Arc<Connections>>,
    health: HealthConfig,
}

const TEXT: &str = "text/plain; version=0.0.4";

async fn metrics(State(state): State<OpsState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let checks = readiness(&state.signer, &state.observers, &state.health).await;
    (
        [(axum::http::header::CONTENT_TYPE, TEXT)],
        render(
            &state.signer,
            &state.observers,
            state.connections.as_deref(),
            &checks,
        ),
    )
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive", "version": env!("CARGO_PKG_VERSION") }))
}

/// Readiness: 200 when every check passes, else 503; the body lists every check and its detail.
async fn readyz(State(state): State<OpsState>) -> (StatusCode, Json<serde_json::Value>) {
    let checks = readiness(&state.signer, &state.observers, &state.health).await;
    let ready = checks.iter().all(|c| c.ok);
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "failed": failed,
            "checks": checks,
        })),
    )
}

/// What `tzkms status` shows: keys, marks, readiness, vaults, signatures and cost (always 200).
async fn status(State(state): State<OpsState>) -> Json<crate::status::Status> {
    Json(crate::status::collect(&state.signer, &state.observers, &state.health).await)
}

/// What the operations endpoints read: the signer, the observed backends, the signing listeners'
/// connection counters (when there are listeners), and the readiness thresholds.
#[derive(Debug, Clone)]
pub(crate) struct Ops {
    pub signer: Arc<Signer>,
    pub observers: Observers,
    pub connections: Option<Arc<Connections>>,
    pub health: HealthConfig,
}

/// The operations router: `/metrics`, `/healthz`, `/readyz`, `/status`.
pub(crate) fn router(ops: Ops) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(OpsState {
            signer: ops.signer,
            observers: ops.observers,
            connections: ops.connections,
            health: ops.health,
        })
}

/// Serves the operations endpoints on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener, ops: Ops) {
    if let Err(e) = axum::serve(listener, router(ops)).await {
        tracing::error!(error = %e, "operations listener stopped");
    }
}
