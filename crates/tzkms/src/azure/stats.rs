//! What one Key Vault client has seen, for metrics and readiness: every HTTP attempt by operation and
//! result, retries by cause, attempt latency, billable operations (and their estimated cost), and when the
//! vault last answered or failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::{Exposition, Histogram};

/// How one HTTP attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttemptResult {
    Ok,
    /// 429.
    Throttled,
    /// 401: the token was refused.
    Unauthorized,
    /// 403: the identity lacks a permission (RBAC or access policy).
    Forbidden,
    /// Other 4xx (a missing key, a bad request): the vault answered.
    ClientError,
    ServerError,
    Timeout,
    Connection,
}

impl AttemptResult {
    pub fn name(self) -> &'static str {
        match self {
            AttemptResult::Ok => "ok",
            AttemptResult::Throttled => "throttled",
            AttemptResult::Unauthorized => "unauthorized",
            AttemptResult::Forbidden => "forbidden",
            AttemptResult::ClientError => "client_error",
            AttemptResult::ServerError => "server_error",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Connection => "connection",
        }
    }

    /// Whether the vault is working from where we stand (it answered, even if to refuse this one call).
    fn answered(self) -> bool {
        matches!(
            self,
            AttemptResult::Ok | AttemptResult::Throttled | AttemptResult::ClientError
        )
    }

    pub(crate) fn from_status(status: u16) -> Self {
        match status {
            200..=299 => AttemptResult::Ok,
            429 => AttemptResult::Throttled,
            401 => AttemptResult::Unauthorized,
            403 => AttemptResult::Forbidden,
            500..=599 => AttemptResult::ServerError,
            _ => AttemptResult::ClientError,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    attempts: BTreeMap<(&'static str, AttemptResult), u64>,
    retries: BTreeMap<&'static str, u64>,
    latency: BTreeMap<&'static str, Histogram>,
    billable: BTreeMap<&'static str, u64>,
    last_answer: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

impl Inner {
    /// The last failure, if nothing answered after it.
    fn unanswered_failure(&self) -> Option<&(Instant, String)> {
        self.last_failure
            .as_ref()
            .filter(|(failed, _)| self.last_answer.is_none_or(|a| *failed > a))
    }
}

#[derive(Debug)]
pub struct KvStats {
    /// The vault's host, the `vault` label.
    vault: String,
    inner: Mutex<Inner>,
    /// USD per 10,000 billable operations, as f64 bits.
    price_per_10k: AtomicU64,
}

/// Key Vault Premium's price for operations on HSM-protected EC keys (USD per 10,000), as quoted in
/// docs/azure.md; Managed HSM bills by the hour instead, so its operations cost 0 here.
pub const PREMIUM_EC_PRICE_PER_10K: f64 = 0.15;

/// An operation name as a label value: `list keys` -> `list_keys`.
fn label(operation: &str) -> String {
    operation.replace(' ', "_")
}

fn ago(t: Instant) -> String {
    format!("{:.1}s ago", t.elapsed().as_secs_f64())
}

impl KvStats {
    pub fn new(base_url: &str) -> Self {
        let vault = base_url
            .split_once("://")
            .map_or(base_url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let price = if vault.contains(".managedhsm.") {
            0.0
        } else {
            PREMIUM_EC_PRICE_PER_10K
        };
        // Sign's outcomes exist at 0 from the start, so an alert on their increase sees the first one.
        let mut inner = Inner::default();
        for result in [
            AttemptResult::Ok,
            AttemptResult::Throttled,
            AttemptResult::ServerError,
            AttemptResult::Timeout,
        ] {
            inner.attempts.insert(("sign", result), 0);
        }
        Self {
            vault,
            inner: Mutex::new(inner),
            price_per_10k: AtomicU64::new(price.to_bits()),
        }
    }

    pub fn vault(&self) -> &str {
        &self.vault
    }

    /// Sets the price used for the estimated cost (USD per 10,000 operations).
    pub(crate) fn set_price_per_10k(&self, price: f64) {
        self.price_per_10k.store(price.to_bits(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one HTTP attempt of `operation`.
    pub fn attempt(&self, operation: &'static str, result: AttemptResult, latency: Duration, detail: &str) {
        let mut i = self.lock();
        *i.attempts.entry((operation, result)).or_default() += 1;
        i.latency.entry(operation).or_default().observe(latency);
        if result == AttemptResult::Ok {
            *i.billable.entry(operation).or_default() += 1;
        }
        let now = Instant::now();
        if result.answered() {
            i.last_answer = Some(now);
        } else if result != AttemptResult::Unauthorized {
            // A 401 is retried once with a fresh token; only a failure that stands counts.
            i.last_failure = Some((now, format!("{operation}: {detail}")));
        }
    }

    /// Records a call that failed for good after its attempts (a 401 after a token refresh included).
    pub fn failed(&self, operation: &'static str, detail: &str) {
        self.lock().last_failure = Some((Instant::now(), format!("{operation}: {detail}")));
    }

    /// Records a retry and why.
    pub fn retry(&self, cause: &'static str) {
        *self.lock().retries.entry(cause).or_default() += 1;
    }

    /// When the vault last answered.
    pub(crate) fn last_answer(&self) -> Option<Instant> {
        self.lock().last_answer
    }

    /// Whether a failure came after the last answer.
    pub fn failing(&self) -> bool {
        self.lock().unanswered_failure().is_some()
    }

    /// Readiness: the vault answered within `max_silence` and nothing failed since.
    pub fn check(&self, max_silence: Duration) -> Result<String, String> {
        let i = self.lock();
        if let Some((failed, why)) = i.unanswered_failure() {
            return Err(format!(
                "the last call failed {}: {why}{}",
                ago(*failed),
                i.last_answer.map_or_else(
                    || "; it never answered".into(),
                    |a| format!("; last answer {}", ago(a))
                )
            ));
        }
        match i.last_answer {
            Some(answered) if answered.elapsed() <= max_silence => Ok(format!("answered {}", ago(answered))),
            Some(answered) => Err(format!(
                "no answer for {} (more than {}s)",
                ago(answered),
                max_silence.as_secs()
            )),
            None => Err("the vault has not answered yet".into()),
        }
    }

    /// The price used for the estimated cost (USD per 10,000 operations).
    pub(crate) fn price_per_10k(&self) -> f64 {
        f64::from_bits(self.price_per_10k.load(Ordering::Relaxed))
    }

    /// Mean time of one HTTP attempt so far, by operation (label form), in milliseconds.
    pub(crate) fn mean_latency_ms(&self) -> BTreeMap<String, f64> {
        self.lock()
            .latency
            .iter()
            .filter(|(_, h)| h.count() > 0)
            .map(|(op, h)| (label(op), h.sum() * 1000.0 / h.count() as f64))
            .collect()
    }

    /// Billable operations so far (successful calls).
    pub fn billable(&self) -> u64 {
        self.lock().billable.values().sum()
    }

    pub(crate) fn write_metrics(&self, e: &mut Exposition) {
        let i = self.lock();
        let vault = self.vault.as_str();
        e.family(
            "tzkms_azure_requests_total",
            "counter",
            "Key Vault HTTP attempts (retries included), by operation and result.",
        );
        for ((op, result), n) in &i.attempts {
            e.sample(
                "tzkms_azure_requests_total",
                &[
                    ("vault", vault),
                    ("operation", &label(op)),
                    ("result", result.name()),
                ],
                n,
            );
        }
        e.family(
            "tzkms_azure_request_duration_seconds",
            "histogram",
            "Time of one Key Vault HTTP attempt, by operation.",
        );
        for (op, h) in &i.latency {
            e.histogram(
                "tzkms_azure_request_duration_seconds",
                &[("vault", vault), ("operation", &label(op))],
                h,
            );
        }
        e.family(
            "tzkms_azure_retries_total",
            "counter",
            "Key Vault attempts retried, by cause (throttled, server_error, timeout, connection, token).",
        );
        for (cause, n) in &i.retries {
            e.sample(
                "tzkms_azure_retries_total",
                &[("vault", vault), ("cause", cause)],
                n,
            );
        }
        e.family(
            "tzkms_azure_billable_operations_total",
            "counter",
            "Key Vault operations that succeeded (what Azure bills), by operation.",
        );
        for (op, n) in &i.billable {
            e.sample(
                "tzkms_azure_billable_operations_total",
                &[("vault", vault), ("operation", &label(op))],
                n,
            );
        }
        let total: u64 = i.billable.values().sum();
        let price = f64::from_bits(self.price_per_10k.load(Ordering::Relaxed));
        e.family(
            "tzkms_azure_estimated_cost_usd_total",
            "counter",
            "Billable operations times azure.price_per_10k_operations / 10000 (USD; key and pool fees not included).",
        );
        e.sample(
            "tzkms_azure_estimated_cost_usd_total",
            &[("vault", vault)],
            total as f64 * price / 10_000.0,
        );
        e.family(
            "tzkms_azure_last_answer_age_seconds",
            "gauge",
            "Seconds since the vault last answered (-1: never).",
        );
        e.sample(
            "tzkms_azure_last_answer_age_seconds",
            &[("vault", vault)],
            i.last_answer.map_or(-1.0, |t| t.elapsed().as_secs_f64()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_last_outcome() {
        let s = KvStats::new("https://v.vault.azure.net");
        assert!(s
            .check(Duration::from_secs(60))
            .unwrap_err()
            .contains("not answered yet"));
        s.attempt("sign", AttemptResult::Ok, Duration::from_millis(5), "");
        assert!(s.check(Duration::from_secs(60)).is_ok());
        s.attempt(
            "sign",
            AttemptResult::ServerError,
            Duration::from_millis(5),
            "HTTP 503",
        );
        let err = s.check(Duration::from_secs(60)).unwrap_err();
        assert!(err.contains("sign: HTTP 503"), "{err}");
        s.attempt("sign", AttemptResult::Throttled, Duration::from_millis(5), "");
        assert!(s.check(Duration::from_secs(60)).is_ok(), "a 429 is an answer");
        assert!(s.check(Duration::ZERO).unwrap_err().contains("no answer for"));
        assert_eq!(s.billable(), 1);
    }

    #[test]
    fn cost_uses_the_price_and_managed_hsm_is_free_per_operation() {
        let s = KvStats::new("https://v.vault.azure.net/");
        assert_eq!(s.vault(), "v.vault.azure.net");
        for _ in 0..4 {
            s.attempt("sign", AttemptResult::Ok, Duration::from_millis(1), "");
        }
        s.set_price_per_10k(1.0);
        let mut e = Exposition::default();
        s.write_metrics(&mut e);
        let text = e.finish();
        assert!(
            text.contains("tzkms_azure_estimated_cost_usd_total{vault=\"v.vault.azure.net\"} 0.0004"),
            "{text}"
        );
        let hsm = KvStats::new("https://h.managedhsm.azure.net");
        hsm.attempt("sign", AttemptResult::Ok, Duration::from_millis(1), "");
        let mut e = Exposition::default();
        hsm.write_metrics(&mut e);
        assert!(e
            .finish()
            .contains("tzkms_azure_estimated_cost_usd_total{vault=\"h.managedhsm.azure.net\"} 0\n"));
    }
}
