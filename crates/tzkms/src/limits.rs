//! Limits in front of the key backends, so that a flood cannot burn the vault's throttling budget or
//! starve the baker's consensus signatures: token buckets per client address and route class (generic
//! signing, reads, other routes; consensus signing has none), a token bucket per key for generic
//! (non-consensus) signing, and a cap on signatures in flight at the backend of which generic requests may
//! only use a share. Consensus requests wait for a backend slot (bounded by the request timeout); generic
//! ones are refused at once when their share is used.
//!
//! The promise is per route, not per address: a generic flood from the baker's own address (or from the
//! proxy it shares) empties that address's generic-signing bucket only, never its reads (the `GET
//! /authorized_keys` octez-client sends before each signature) and never its consensus signatures, which
//! the watermark bounds to one per level, round and kind.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tezos::PublicKeyHash;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A rate: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second per client address, counted separately for each route class: generic
    /// (non-consensus) signing, reads (`GET /authorized_keys`, `GET /keys/<pkh>`), other routes.
    /// Consensus signing requests are never counted.
    #[serde(default = "default_per_client")]
    pub per_client: Option<Rate>,
    /// Generic (0x03, 0x05) signing requests per second per key.
    #[serde(default = "default_generic_per_key")]
    pub generic_per_key: Option<Rate>,
    /// Signatures in flight at the backends at once.
    #[serde(default = "default_backend_concurrency")]
    pub backend_concurrency: usize,
    /// The share of `backend_concurrency` that generic requests may hold.
    #[serde(default = "default_generic_share")]
    pub generic_share: f64,
}

fn default_per_client() -> Option<Rate> {
    Some(Rate {
        rate: 500.0,
        burst: 2000.0,
    })
}
fn default_generic_per_key() -> Option<Rate> {
    Some(Rate {
        rate: 50.0,
        burst: 200.0,
    })
}
fn default_backend_concurrency() -> usize {
    256
}
fn default_generic_share() -> f64 {
    0.25
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_client: default_per_client(),
            generic_per_key: default_generic_per_key(),
            backend_concurrency: default_backend_concurrency(),
            generic_share: default_generic_share(),
        }
    }
}

/// The routes a client's requests are counted under, each class in its own bucket, so a flood of one
/// class does not starve another. Consensus signing is in none: it is never rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `POST /keys/<pkh>` with a payload that is not a consensus operation (0x03, 0x05, …), counted
    /// after the payload is classified.
    GenericSigning,
    /// `GET /authorized_keys` and `GET /keys/<pkh>`, which octez-client sends before signing.
    Reads,
    /// Every other route (`/known_keys`, `/bls_prove_possession`, unknown paths).
    Other,
}

impl RouteClass {
    pub fn describe(self) -> &'static str {
        match self {
            RouteClass::GenericSigning => "generic signing requests",
            RouteClass::Reads => "reads (authorized_keys, public keys)",
            RouteClass::Other => "requests to other routes",
        }
    }
}

/// A refusal: what was limited and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: {what}; retry in {} s", retry_after.as_secs().max(1))]
pub struct Limited {
    pub what: String,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key, pruned so the map stays bounded whatever the number of clients.
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    map: Mutex<HashMap<K, Bucket>>,
}

const MAX_BUCKETS: usize = 65_536;

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    fn take(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            // Forget the buckets that have refilled: they carry no state.
            let rate = self.rate;
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate.rate < rate.burst);
            if map.len() >= MAX_BUCKETS {
                // Every bucket is busy (a flood from very many addresses): start over rather than grow.
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate.rate).min(self.rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate.rate.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

/// Counts of refusals, for metrics and logs.
#[derive(Debug, Default)]
pub struct LimitCounters {
    pub per_client: AtomicU64,
    pub generic_per_key: AtomicU64,
    pub generic_backend_share: AtomicU64,
}

#[derive(Debug)]
pub struct Limits {
    per_client: Option<Buckets<(IpAddr, RouteClass)>>,
    generic_per_key: Option<Buckets<PublicKeyHash>>,
    backend: Arc<Semaphore>,
    generic_backend: Arc<Semaphore>,
    pub counters: LimitCounters,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&LimitsConfig::default())
    }
}

/// Held while a signature is at the backend.
#[derive(Debug)]
pub struct BackendSlot {
    _all: OwnedSemaphorePermit,
    _generic: Option<OwnedSemaphorePermit>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Self {
        let total = config.backend_concurrency.max(1);
        let generic = ((total as f64 * config.generic_share.clamp(0.0, 1.0)) as usize).max(1);
        Self {
            per_client: config.per_client.map(Buckets::new),
            generic_per_key: config.generic_per_key.map(Buckets::new),
            backend: Arc::new(Semaphore::new(total)),
            generic_backend: Arc::new(Semaphore::new(generic)),
            counters: LimitCounters::default(),
        }
    }

    /// Takes a token from the bucket of (`ip`, `class`). Consensus signing requests are never asked.
    pub(crate) fn admit_client(&self, ip: IpAddr, class: RouteClass) -> Result<(), Limited> {
        let Some(b) = &self.per_client else { return Ok(()) };
        b.take((ip, class)).map_err(|retry_after| {
            self.counters.per_client.fetch_add(1, Ordering::Relaxed);
            Limited {
                what: format!(
                    "client {ip} is over its request rate for {} (limits.per_client)",
                    class.describe()
                ),
                retry_after,
            }
        })
    }

    pub(crate) fn admit_generic(&self, pkh: &PublicKeyHash) -> Result<(), Limited> {
        let Some(b) = &self.generic_per_key else {
            return Ok(());
        };
        b.take(*pkh).map_err(|retry_after| {
            self.counters.generic_per_key.fetch_add(1, Ordering::Relaxed);
            Limited {
                what: format!("key {pkh} is over its rate of generic signing requests"),
                retry_after,
            }
        })
    }

    /// A slot at the backend. Consensus requests wait for one; generic requests get one only while their
    /// share is not used up, and are refused otherwise, so consensus signing always has room.
    pub(crate) async fn backend_slot(&self, consensus: bool) -> Result<BackendSlot, Limited> {
        let generic = if consensus {
            None
        } else {
            match self.generic_backend.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.counters
                        .generic_backend_share
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Limited {
                        what: "the backend is busy: generic requests are using their whole share".into(),
                        retry_after: Duration::from_secs(1),
                    });
                }
            }
        };
        let all = self.backend.clone().acquire_owned().await.map_err(|_| Limited {
            what: "shutting down".into(),
            retry_after: Duration::from_secs(1),
        })?;
        Ok(BackendSlot {
            _all: all,
            _generic: generic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_the_burst_then_the_rate() {
        let b = Buckets::new(Rate {
            rate: 10.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            b.take(1u8).unwrap();
        }
        let wait = b.take(1u8).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another key has its own bucket.
        b.take(2u8).unwrap();
    }

    #[test]
    fn each_route_class_of_a_client_has_its_own_bucket() {
        let limits = Limits::new(&LimitsConfig {
            per_client: Some(Rate {
                rate: 0.001,
                burst: 2.0,
            }),
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            limits.admit_client(ip, RouteClass::GenericSigning).unwrap();
        }
        let refused = limits.admit_client(ip, RouteClass::GenericSigning).unwrap_err();
        assert!(refused.what.contains("generic signing requests"), "{refused}");
        // The same address still reads and reaches other routes.
        for class in [RouteClass::Reads, RouteClass::Reads, RouteClass::Other] {
            limits.admit_client(ip, class).unwrap();
        }
        assert_eq!(limits.counters.per_client.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn generic_requests_cannot_take_the_consensus_share() {
        let limits = Limits::new(&LimitsConfig {
            backend_concurrency: 4,
            generic_share: 0.5,
            ..LimitsConfig::default()
        });
        let g1 = limits.backend_slot(false).await.unwrap();
        let g2 = limits.backend_slot(false).await.unwrap();
        assert!(limits.backend_slot(false).await.is_err());
        // Consensus still gets the remaining slots.
        let c1 = limits.backend_slot(true).await.unwrap();
        let c2 = limits.backend_slot(true).await.unwrap();
        drop((g1, g2, c1, c2));
        assert_eq!(limits.counters.generic_backend_share.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_bucket_map_stays_bounded() {
        let b = Buckets::new(Rate {
            rate: 1000.0,
            burst: 1.0,
        });
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            let _ = b.take(i);
        }
        assert!(b.map.lock().unwrap().len() <= MAX_BUCKETS + 1);
    }
}
