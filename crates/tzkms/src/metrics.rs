//! Prometheus metrics on their own listener (off the signing port): requests by route, kind and outcome,
//! latency histograms, signatures per key, refusals by limit, connection counters. Every label takes
//! values from a small fixed set or from the keys the signer serves, so series stay bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::audit::{AuditRecord, Decision};
use crate::server::Connections;
use crate::signer::Signer;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, kind, outcome) -> count
    requests: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// route -> latency
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (key, kind) -> signatures returned (signed or replayed)
    signatures: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Requests answered 408 by the request timeout.
    request_timeouts: std::sync::atomic::AtomicU64,
}

/// The outcome label of a finished request.
pub fn outcome(decision: Decision, status: u16, rule: Option<&str>) -> &'static str {
    match (decision, status) {
        (Decision::Signed, _) => "signed",
        (Decision::Replayed, _) => "replayed",
        (Decision::Served, _) => "served",
        (_, 401) => "unauthenticated",
        (_, 403) if rule.is_some_and(|r| r.starts_with("auth")) => "unauthenticated",
        (_, 403) => "refused_policy",
        (_, 409) => "refused_watermark",
        (_, 429) => "rate_limited",
        (_, 404) => "not_found",
        (_, 408) => "timeout",
        (_, 413) | (_, 431) => "too_large",
        (_, s) if s < 500 => "bad_request",
        _ => "error",
    }
}

impl Metrics {
    pub fn count_request_timeout(&self) {
        self.request_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished request.
    pub fn record(&self, record: &AuditRecord, decision: Decision, status: u16, latency: Duration) {
        let kind = record.kind.unwrap_or("none");
        let out = outcome(decision, status, record.rule.as_deref());
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((record.route, kind, out))
            .or_default() += 1;
        {
            let mut latency_map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            let h = latency_map.entry(record.route).or_default();
            let secs = latency.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
        if matches!(decision, Decision::Signed | Decision::Replayed) {
            if let Some(pkh) = &record.pkh {
                *self
                    .signatures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((pkh.clone(), kind))
                    .or_default() += 1;
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, signer: &Signer, connections: Option<&Connections>) -> String {
        let mut out = String::new();
        out.push_str("# HELP tzkms_requests_total Requests by route, payload kind and outcome.\n");
        out.push_str("# TYPE tzkms_requests_total counter\n");
        for ((route, kind, outcome), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "tzkms_requests_total{{route=\"{route}\",kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP tzkms_request_duration_seconds Time from request to answer.\n");
        out.push_str("# TYPE tzkms_request_duration_seconds histogram\n");
        for (route, h) in self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tzkms_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "tzkms_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "tzkms_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "tzkms_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP tzkms_signatures_total Signatures returned, by key and kind.\n");
        out.push_str("# TYPE tzkms_signatures_total counter\n");
        for ((pkh, kind), n) in self.signatures.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "tzkms_signatures_total{{key=\"{pkh}\",kind=\"{kind}\"}} {n}");
        }
        let limits = &signer.limits().counters;
        out.push_str("# HELP tzkms_rate_limited_total Requests refused by a rate limit.\n");
        out.push_str("# TYPE tzkms_rate_limited_total counter\n");
        for (limit, counter) in [
            ("per_client", &limits.per_client),
            ("generic_per_key", &limits.generic_per_key),
            ("generic_backend_share", &limits.generic_backend_share),
        ] {
            let _ = writeln!(
                out,
                "tzkms_rate_limited_total{{limit=\"{limit}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tzkms_request_timeouts_total Requests answered 408 (request_timeout_ms).\n");
        out.push_str("# TYPE tzkms_request_timeouts_total counter\n");
        let _ = writeln!(
            out,
            "tzkms_request_timeouts_total {}",
            self.request_timeouts.load(Ordering::Relaxed)
        );
        if let Some(c) = connections {
            out.push_str(
                "# HELP tzkms_connection_errors_total Connections ended by a protocol error (slow or oversized head, not HTTP).\n",
            );
            out.push_str("# TYPE tzkms_connection_errors_total counter\n");
            let _ = writeln!(
                out,
                "tzkms_connection_errors_total {}",
                c.protocol_errors.load(Ordering::Relaxed)
            );
            out.push_str(
                "# HELP tzkms_connections_refused_total Connections refused over max_connections.\n",
            );
            out.push_str("# TYPE tzkms_connections_refused_total counter\n");
            let _ = writeln!(
                out,
                "tzkms_connections_refused_total {}",
                c.refused.load(Ordering::Relaxed)
            );
            out.push_str("# HELP tzkms_connections_timed_out_total Connections closed for idleness.\n");
            out.push_str("# TYPE tzkms_connections_timed_out_total counter\n");
            let _ = writeln!(
                out,
                "tzkms_connections_timed_out_total {}",
                c.timed_out.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tzkms_keys Keys served, by backend.\n");
        out.push_str("# TYPE tzkms_keys gauge\n");
        let mut by_backend: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (_, key) in signer.keyring().sorted() {
            *by_backend.entry(key.backend.kind()).or_default() += 1;
        }
        for (backend, n) in by_backend {
            let _ = writeln!(out, "tzkms_keys{{backend=\"{backend}\"}} {n}");
        }
        out
    }
}

#[derive(Clone)]
struct MetricsState {
    signer: Arc<Signer>,
    connections: Option<Arc<Connections>>,
}

async fn metrics(State(state): State<MetricsState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .signer
            .metrics()
            .render(&state.signer, state.connections.as_deref()),
    )
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, signer: Arc<Signer>, connections: Option<Arc<Connections>>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsState { signer, connections });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_cover_every_status() {
        assert_eq!(
            outcome(Decision::Refused, 409, Some("watermark")),
            "refused_watermark"
        );
        assert_eq!(
            outcome(Decision::Refused, 403, Some("policy.default.allow")),
            "refused_policy"
        );
        assert_eq!(
            outcome(Decision::Refused, 403, Some("auth.required")),
            "unauthenticated"
        );
        assert_eq!(outcome(Decision::Refused, 429, Some("limits")), "rate_limited");
        assert_eq!(outcome(Decision::Refused, 500, None), "error");
        assert_eq!(outcome(Decision::Signed, 200, None), "signed");
    }
}
