//! Runtime fault injection (latency, throttling, 5xx, dropped/stalled connections, token and key faults) and
//! per-operation call counters.

use crate::state::Shared;
use crate::vault::store::KeyEntry;
use axum::http::StatusCode;
use rand_core::{OsRng, RngCore};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every operation the emulator distinguishes, for counters and fault targeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    CreateKey,
    ImportKey,
    GetKey,
    ListKeys,
    ListKeyVersions,
    UpdateKey,
    Sign,
    Verify,
    WrapKey,
    UnwrapKey,
    BackupKey,
    RestoreKey,
    DeleteKey,
    ListDeletedKeys,
    GetDeletedKey,
    PurgeDeletedKey,
    RecoverDeletedKey,
    GetRandomBytes,
    /// Entra ID token endpoint (v1 or v2.0).
    EntraToken,
    /// Entra ID OpenID / instance discovery documents.
    EntraDiscovery,
    /// IMDS `/metadata/identity/oauth2/token`.
    ImdsToken,
    /// App Service / Container Apps identity endpoint.
    AppServiceToken,
    /// Anything else (unknown path or method).
    Unknown,
}

impl Operation {
    /// Is this a Key Vault / Managed HSM data-plane operation (bearer token required)?
    pub fn is_data_plane(self) -> bool {
        !matches!(
            self,
            Operation::EntraToken
                | Operation::EntraDiscovery
                | Operation::ImdsToken
                | Operation::AppServiceToken
                | Operation::Unknown
        )
    }

    /// Is this one of the token-issuing endpoints?
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            Operation::EntraToken
                | Operation::EntraDiscovery
                | Operation::ImdsToken
                | Operation::AppServiceToken
        )
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every request.
    All,
    /// Every data-plane operation.
    DataPlane,
    /// Every identity (token) endpoint.
    Identity,
    /// One operation.
    Op(Operation),
}

impl Target {
    fn matches(self, op: Operation) -> bool {
        match self {
            Target::All => true,
            Target::DataPlane => op.is_data_plane(),
            Target::Identity => op.is_identity(),
            Target::Op(o) => o == op,
        }
    }
}

impl From<Operation> for Target {
    fn from(op: Operation) -> Self {
        Target::Op(op)
    }
}

/// Counts for one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Requests received (including those answered 401, 429, 5xx or dropped).
    pub received: u64,
    /// Requests answered with a 2xx status.
    pub succeeded: u64,
    /// Requests answered with a non-2xx status.
    pub failed: u64,
}

/// Per-operation call counters, shared with the server. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<Mutex<BTreeMap<Operation, OpStats>>>,
}

impl Counters {
    /// Requests received for `op` (every attempt, whatever the answer).
    pub fn get(&self, op: Operation) -> u64 {
        self.stats(op).received
    }

    /// Requests for `op` answered with 2xx.
    pub fn succeeded(&self, op: Operation) -> u64 {
        self.stats(op).succeeded
    }

    /// Requests for `op` answered with a non-2xx status.
    pub fn failed(&self, op: Operation) -> u64 {
        self.stats(op).failed
    }

    pub fn stats(&self, op: Operation) -> OpStats {
        self.lock().get(&op).copied().unwrap_or_default()
    }

    /// All counters, by operation.
    pub fn snapshot(&self) -> BTreeMap<Operation, OpStats> {
        self.lock().clone()
    }

    pub fn reset(&self) {
        self.lock().clear();
    }

    pub(crate) fn record_received(&self, op: Operation) {
        self.lock().entry(op).or_default().received += 1;
    }

    pub(crate) fn record_status(&self, op: Operation, status: StatusCode) {
        let mut map = self.lock();
        let entry = map.entry(op).or_default();
        if status.is_success() {
            entry.succeeded += 1;
        } else {
            entry.failed += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Operation, OpStats>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What to do with one request, decided before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    /// Close the connection without answering.
    Drop,
    /// Hold the request, answer nothing, then close the connection.
    Stall(Duration),
    /// 429 Throttled with an optional `Retry-After` (seconds).
    Throttle(Option<u64>),
    /// A 5xx (or any status) error.
    Fail(StatusCode),
}

#[derive(Debug)]
struct Latency {
    target: Target,
    fixed: Duration,
    jitter: Duration,
}

#[derive(Debug)]
struct Counted<T> {
    target: Target,
    remaining: u64,
    what: T,
}

#[derive(Debug)]
struct RateLimit {
    target: Target,
    max: usize,
    per: Duration,
    retry_after: Option<u64>,
    admitted: VecDeque<Instant>,
}

/// The mutable fault configuration.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    latency: Vec<Latency>,
    drop_next: Vec<Counted<()>>,
    stall_next: Vec<Counted<Duration>>,
    throttle_next: Vec<Counted<Option<u64>>>,
    rate_limits: Vec<RateLimit>,
    fail_next: Vec<Counted<StatusCode>>,
    pub(crate) force_high_s: bool,
    /// (lowercase key name, operation or `None` for every operation).
    denied_keys: BTreeSet<(String, Option<Operation>)>,
}

fn take<T: Copy>(rules: &mut Vec<Counted<T>>, op: Operation) -> Option<T> {
    let idx = rules
        .iter()
        .position(|r| r.target.matches(op) && r.remaining > 0)?;
    let rule = &mut rules[idx];
    rule.remaining -= 1;
    let what = rule.what;
    if rule.remaining == 0 {
        rules.remove(idx);
    }
    Some(what)
}

impl FaultState {
    /// Added latency for this request (fixed + uniform jitter, summed over matching rules).
    pub(crate) fn latency(&self, op: Operation) -> Duration {
        self.latency
            .iter()
            .filter(|l| l.target.matches(op))
            .map(|l| {
                let jitter_ms = u64::try_from(l.jitter.as_millis()).unwrap_or(u64::MAX);
                let extra = if jitter_ms == 0 {
                    0
                } else {
                    OsRng.next_u64() % (jitter_ms + 1)
                };
                l.fixed.saturating_add(Duration::from_millis(extra))
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    pub(crate) fn verdict(&mut self, op: Operation, now: Instant) -> Verdict {
        if take(&mut self.drop_next, op).is_some() {
            return Verdict::Drop;
        }
        if let Some(d) = take(&mut self.stall_next, op) {
            return Verdict::Stall(d);
        }
        if let Some(retry) = take(&mut self.throttle_next, op) {
            return Verdict::Throttle(retry);
        }
        for limit in self.rate_limits.iter_mut().filter(|l| l.target.matches(op)) {
            while limit
                .admitted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.per)
            {
                limit.admitted.pop_front();
            }
            if limit.admitted.len() >= limit.max {
                // Throttled requests do not count toward the limit, as in Key Vault.
                return Verdict::Throttle(limit.retry_after);
            }
        }
        for limit in self.rate_limits.iter_mut().filter(|l| l.target.matches(op)) {
            limit.admitted.push_back(now);
        }
        if let Some(status) = take(&mut self.fail_next, op) {
            return Verdict::Fail(status);
        }
        Verdict::Proceed
    }

    pub(crate) fn is_denied(&self, key_name: &str, op: Operation) -> bool {
        let name = key_name.to_ascii_lowercase();
        self.denied_keys.contains(&(name.clone(), None)) || self.denied_keys.contains(&(name, Some(op)))
    }
}

/// Runtime fault control for one emulator. Cheap to clone; changes apply to the next request.
///
/// Faults on data-plane operations consume only requests that passed authentication, so a client's
/// unauthenticated challenge round trip never eats a "next N calls" fault.
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut FaultState) -> R) -> R {
        f(&mut self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Add `fixed` plus a uniformly random `0..=jitter` delay before answering matching requests.
    pub fn set_latency(&self, target: impl Into<Target>, fixed: Duration, jitter: Duration) {
        let target = target.into();
        self.with(|s| {
            s.latency.retain(|l| l.target != target);
            s.latency.push(Latency {
                target,
                fixed,
                jitter,
            });
        });
    }

    pub fn clear_latency(&self) {
        self.with(|s| s.latency.clear());
    }

    /// Answer the next `n` matching requests with 429 `Throttled` (and `Retry-After` when given).
    pub fn throttle_next(&self, target: impl Into<Target>, n: u64, retry_after: Option<Duration>) {
        let target = target.into();
        self.with(|s| {
            s.throttle_next.push(Counted {
                target,
                remaining: n,
                what: retry_after.map(secs_ceil),
            })
        });
    }

    /// Admit at most `max` matching requests per sliding window `per`; answer the rest 429 `Throttled`.
    pub fn throttle_above_rate(
        &self,
        target: impl Into<Target>,
        max: usize,
        per: Duration,
        retry_after: Option<Duration>,
    ) {
        let target = target.into();
        self.with(|s| {
            s.rate_limits.retain(|l| l.target != target);
            s.rate_limits.push(RateLimit {
                target,
                max,
                per,
                retry_after: retry_after.map(secs_ceil),
                admitted: VecDeque::new(),
            });
        });
    }

    /// Answer the next `n` matching requests with `status` (e.g. 500, 502, 503) and an Azure error body.
    pub fn fail_next(&self, target: impl Into<Target>, n: u64, status: u16) {
        let target = target.into();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.with(|s| {
            s.fail_next.push(Counted {
                target,
                remaining: n,
                what: status,
            })
        });
    }

    /// Close the connection of the next `n` matching requests without answering.
    pub fn drop_next(&self, target: impl Into<Target>, n: u64) {
        let target = target.into();
        self.with(|s| {
            s.drop_next.push(Counted {
                target,
                remaining: n,
                what: (),
            })
        });
    }

    /// Hold the next `n` matching requests for `duration` without answering, then close their connections.
    pub fn stall_next(&self, target: impl Into<Target>, n: u64, duration: Duration) {
        let target = target.into();
        self.with(|s| {
            s.stall_next.push(Counted {
                target,
                remaining: n,
                what: duration,
            })
        });
    }

    /// Return every signature with the high `s` (`s > n/2`) instead of a random half.
    pub fn force_high_s(&self, on: bool) {
        self.with(|s| s.force_high_s = on);
    }

    /// Refuse every data-plane operation on this key with 403 `Forbidden` / `ForbiddenByRbac`.
    pub fn deny_key(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.with(|s| s.denied_keys.insert((name, None)));
    }

    /// Refuse one operation on this key with 403 `ForbiddenByRbac` (e.g. a role that may read but not sign).
    pub fn deny_key_operation(&self, name: &str, op: Operation) {
        let name = name.to_ascii_lowercase();
        self.with(|s| s.denied_keys.insert((name, Some(op))));
    }

    /// Lift every denial on this key.
    pub fn allow_key(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.with(|s| s.denied_keys.retain(|(n, _)| *n != name));
    }

    /// Tokens issued from now on stop being accepted after `after` although they advertise the full lifetime;
    /// `None` restores normal expiry.
    pub fn tokens_expire_after(&self, after: Option<Duration>) {
        self.shared.tokens.set_early_expiry(after);
    }

    /// Every token issued so far is rejected (401) from now on, as if it had expired.
    pub fn expire_issued_tokens(&self) {
        self.shared.tokens.expire_all_issued();
    }

    /// Disable (or re-enable) every version of a key, as an operator would mid-run. Returns false if unknown.
    pub fn set_key_enabled(&self, name: &str, enabled: bool) -> bool {
        let now = crate::clock::now();
        self.shared
            .store
            .mutate(|s| {
                let found = s
                    .keys
                    .get_mut(&name.to_ascii_lowercase())
                    .map(|e: &mut KeyEntry| {
                        for v in &mut e.versions {
                            v.attributes.enabled = enabled;
                            v.attributes.updated = now;
                        }
                    });
                Ok(found.is_some())
            })
            .unwrap_or(false)
    }

    /// Remove every fault (latency, throttling, failures, drops, stalls, high-S, denials, early expiry).
    pub fn reset(&self) {
        self.with(|s| *s = FaultState::default());
        self.shared.tokens.set_early_expiry(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rules_fire_exactly_n_times_for_their_target() {
        let mut s = FaultState::default();
        s.throttle_next.push(Counted {
            target: Target::Op(Operation::Sign),
            remaining: 2,
            what: Some(3),
        });
        let now = Instant::now();
        assert_eq!(s.verdict(Operation::GetKey, now), Verdict::Proceed);
        assert_eq!(s.verdict(Operation::Sign, now), Verdict::Throttle(Some(3)));
        assert_eq!(s.verdict(Operation::Sign, now), Verdict::Throttle(Some(3)));
        assert_eq!(s.verdict(Operation::Sign, now), Verdict::Proceed);
    }

    #[test]
    fn rate_limit_admits_max_per_window_and_recovers() {
        let mut s = FaultState::default();
        s.rate_limits.push(RateLimit {
            target: Target::DataPlane,
            max: 2,
            per: Duration::from_secs(10),
            retry_after: Some(1),
            admitted: VecDeque::new(),
        });
        let t0 = Instant::now();
        assert_eq!(s.verdict(Operation::Sign, t0), Verdict::Proceed);
        assert_eq!(s.verdict(Operation::GetKey, t0), Verdict::Proceed);
        assert_eq!(s.verdict(Operation::Sign, t0), Verdict::Throttle(Some(1)));
        assert_eq!(s.verdict(Operation::ImdsToken, t0), Verdict::Proceed);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(s.verdict(Operation::Sign, later), Verdict::Proceed);
    }

    #[test]
    fn latency_is_fixed_plus_bounded_jitter() {
        let mut s = FaultState::default();
        s.latency.push(Latency {
            target: Target::Op(Operation::Sign),
            fixed: Duration::from_millis(5),
            jitter: Duration::from_millis(3),
        });
        for _ in 0..50 {
            let d = s.latency(Operation::Sign);
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(8));
        }
        assert_eq!(s.latency(Operation::GetKey), Duration::ZERO);
        s.latency.push(Latency {
            target: Target::All,
            fixed: Duration::MAX,
            jitter: Duration::from_millis(3),
        });
        assert_eq!(s.latency(Operation::Sign), Duration::MAX);
    }
}
