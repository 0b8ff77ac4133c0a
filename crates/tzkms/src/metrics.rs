//! The counters behind `GET /metrics` and the Prometheus text format (the listener is in `ops`). Metrics: requests by route, kind, key and outcome, latency histograms, backend
//! calls, watermark positions, refusals by limit, connection counters, and each backend's and store's own
//! (Key Vault calls, retries, throttling, tokens, estimated cost). Every label takes values from a small
//! fixed set, the configuration or the keys the signer serves, so series stay bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use crate::audit::{AuditRecord, Decision};

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets (seconds), 1 ms to 5 s.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observed latencies, in seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// Writes the Prometheus text format: one `# HELP`/`# TYPE` header per family, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram series.
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, h.counts[i]);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A request's key for metrics: the address if this signer serves it, else "other" (any string can
/// be put in a URL, so unknown addresses must not become series), "none" for routes without a key.
pub const KEY_OTHER: &str = "other";
pub const KEY_NONE: &str = "none";

/// (route, kind, key, outcome) of `tzkms_requests_total`.
type RequestLabels = (&'static str, &'static str, String, &'static str);

/// A (chain-independent) watermark position: the highest level and round signed by a key for a kind.
type Position = (u32, u32);

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, u64>>,
    /// route -> latency
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (key, kind) -> signatures returned (signed or replayed)
    signatures: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (backend, result) -> backend sign calls, and backend -> their latency.
    backend_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    backend_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (key, kind) -> highest (level, round) over chains.
    watermarks: Mutex<BTreeMap<(String, &'static str), Position>>,
    /// Requests answered 408 by the request timeout.
    request_timeouts: std::sync::atomic::AtomicU64,
    /// Configuration reloads (SIGHUP) that were applied, and that failed and changed nothing.
    reloads_ok: std::sync::atomic::AtomicU64,
    reloads_failed: std::sync::atomic::AtomicU64,
    /// Unix time of the last successful load of the configuration: startup, then each applied reload.
    config_loaded_at: std::sync::atomic::AtomicU64,
}

/// The kind label: the audit's kind name in Prometheus style (`generic operation` -> `generic_operation`).
fn kind_label(kind: Option<&'static str>) -> &'static str {
    match kind {
        None => "none",
        Some("generic operation") => "generic_operation",
        Some("michelson data") => "michelson_data",
        Some(k) if !k.contains(' ') => k,
        Some(_) => "other",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts a reload; a successful one (or the load at startup, `startup`) also sets the time of the
    /// last successful load.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            self.config_loaded_now();
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the time of the last successful configuration load to now (at startup).
    pub fn config_loaded_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.config_loaded_at.store(now, Ordering::Relaxed);
    }

    pub(crate) fn count_request_timeout(&self) {
        self.request_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished request under its `outcome` label (given by the server, see
    /// `server::Meaning`). `key` is the address if this signer serves it, else [`KEY_OTHER`].
    pub fn record(
        &self,
        record: &AuditRecord,
        key: String,
        decision: Decision,
        out: &'static str,
        latency: Duration,
    ) {
        let kind = kind_label(record.kind);
        if matches!(decision, Decision::Signed | Decision::Replayed) {
            *lock(&self.signatures).entry((key.clone(), kind)).or_default() += 1;
        }
        *lock(&self.requests)
            .entry((record.route, kind, key, out))
            .or_default() += 1;
        lock(&self.latency)
            .entry(record.route)
            .or_default()
            .observe(latency);
    }

    /// Creates, at 0, the series alerts compute increases on, so the first event is an increase (a
    /// series that appears with value 1 is no increase to Prometheus): for a key that may sign `kinds`
    /// (consensus kind names), its signatures, errors and watermark refusals; its backend's calls.
    pub(crate) fn init_key(&self, pkh: &tezos::PublicKeyHash, backend: &'static str, kinds: &[&'static str]) {
        let key = pkh.to_string();
        let mut requests = lock(&self.requests);
        let mut signatures = lock(&self.signatures);
        for kind in kinds {
            for outcome in ["signed", "error", "refused_watermark"] {
                requests.entry(("sign", kind, key.clone(), outcome)).or_default();
            }
            signatures.entry((key.clone(), kind)).or_default();
        }
        let mut calls = lock(&self.backend_calls);
        for result in ["ok", "error"] {
            calls.entry((backend, result)).or_default();
        }
    }

    /// Signatures returned (signed or replayed) so far, by (key, kind).
    pub fn signatures(&self) -> BTreeMap<(String, &'static str), u64> {
        lock(&self.signatures).clone()
    }

    /// Counts one call to a backend's `sign`.
    pub(crate) fn backend_call(&self, backend: &'static str, ok: bool, latency: Duration) {
        let result = if ok { "ok" } else { "error" };
        *lock(&self.backend_calls).entry((backend, result)).or_default() += 1;
        lock(&self.backend_latency)
            .entry(backend)
            .or_default()
            .observe(latency);
    }

    /// Raises the watermark gauges of (key, kind) to (level, round) if higher.
    pub fn watermark(&self, pkh: &tezos::PublicKeyHash, kind: tezos::ConsensusKind, level: u32, round: u32) {
        let mut marks = lock(&self.watermarks);
        let entry = marks.entry((pkh.to_string(), kind.name())).or_default();
        if (level, round) > *entry {
            *entry = (level, round);
        }
    }

    /// The build, request, signature, backend-call and watermark families.
    pub(crate) fn write_requests(&self, e: &mut Exposition) {
        e.family(
            "tzkms_build_info",
            "gauge",
            "Always 1; the labels say which build is running.",
        );
        e.sample(
            "tzkms_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", crate::BUILD_COMMIT),
            ],
            1,
        );
        e.family(
            "tzkms_requests_total",
            "counter",
            "Requests by route, payload kind, key and outcome.",
        );
        for ((route, kind, key, outcome), n) in lock(&self.requests).iter() {
            e.sample(
                "tzkms_requests_total",
                &[
                    ("route", route),
                    ("kind", kind),
                    ("key", key),
                    ("outcome", outcome),
                ],
                n,
            );
        }
        e.family(
            "tzkms_request_duration_seconds",
            "histogram",
            "Time from request to answer, by route.",
        );
        for (route, h) in lock(&self.latency).iter() {
            e.histogram("tzkms_request_duration_seconds", &[("route", route)], h);
        }
        e.family(
            "tzkms_signatures_total",
            "counter",
            "Signatures returned (signed or replayed), by key and kind.",
        );
        for ((key, kind), n) in lock(&self.signatures).iter() {
            e.sample("tzkms_signatures_total", &[("key", key), ("kind", kind)], n);
        }
        e.family(
            "tzkms_backend_sign_total",
            "counter",
            "Calls to a key backend's sign, by backend and result (ok, error).",
        );
        for ((backend, result), n) in lock(&self.backend_calls).iter() {
            e.sample(
                "tzkms_backend_sign_total",
                &[("backend", backend), ("result", result)],
                n,
            );
        }
        e.family(
            "tzkms_backend_sign_duration_seconds",
            "histogram",
            "Time a key backend took to sign (retries included), by backend.",
        );
        for (backend, h) in lock(&self.backend_latency).iter() {
            e.histogram("tzkms_backend_sign_duration_seconds", &[("backend", backend)], h);
        }
        e.family(
            "tzkms_watermark_level",
            "gauge",
            "Highest level signed (high watermark), by key and consensus kind, over all chains.",
        );
        let marks = lock(&self.watermarks).clone();
        for ((key, kind), (level, _)) in &marks {
            e.sample("tzkms_watermark_level", &[("key", key), ("kind", kind)], level);
        }
        e.family(
            "tzkms_watermark_round",
            "gauge",
            "Round of the highest watermark, by key and consensus kind.",
        );
        for ((key, kind), (_, round)) in &marks {
            e.sample("tzkms_watermark_round", &[("key", key), ("kind", kind)], round);
        }
    }

    /// The request-timeout and reload families.
    pub(crate) fn write_lifecycle(&self, e: &mut Exposition) {
        e.family(
            "tzkms_request_timeouts_total",
            "counter",
            "Requests answered 408 (request_timeout_ms).",
        );
        e.sample(
            "tzkms_request_timeouts_total",
            &[],
            self.request_timeouts.load(Ordering::Relaxed),
        );
        e.family(
            "tzkms_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP), by result: ok (applied) or failed (nothing changed; the log says why).",
        );
        for (result, counter) in [("ok", &self.reloads_ok), ("failed", &self.reloads_failed)] {
            e.sample(
                "tzkms_reloads_total",
                &[("result", result)],
                counter.load(Ordering::Relaxed),
            );
        }
        e.family(
            "tzkms_reload_last_success_timestamp_seconds",
            "gauge",
            "Unix time the configuration was last loaded successfully (startup or reload).",
        );
        e.sample(
            "tzkms_reload_last_success_timestamp_seconds",
            &[],
            self.config_loaded_at.load(Ordering::Relaxed),
        );
    }
}
