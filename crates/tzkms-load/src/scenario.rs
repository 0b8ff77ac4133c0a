//! The three ways of driving a signer: baker mode (levels, each a burst of N preattestations then N
//! attestations, optionally a block first), open loop (a constant request rate whatever the answers) and
//! closed loop (a fixed number of clients, each sending its next request when the last is answered).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tezos::{ConsensusKind, Curve, PublicKeyHash};

use crate::client::{Client, Conn};
use crate::payloads;
use crate::report::{Burst, Tally};

/// A key the load is signed with.
#[derive(Debug, Clone)]
pub struct Delegate {
    pub pkh: PublicKeyHash,
}

impl Delegate {
    fn curve(&self) -> Curve {
        self.pkh.curve()
    }
}

/// What open- and closed-loop modes sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// Generic operations (0x03 transactions): no watermark involved.
    Transaction,
    /// Attestations at increasing levels, one delegate per client (closed loop only): the watermark path.
    Attestation,
}

/// Baker mode's plan.
#[derive(Debug, Clone)]
pub struct BakerPlan {
    pub levels: u32,
    pub start_level: u32,
    /// Time from one level's start to the next's (0: the next level starts when the last burst is answered).
    pub level_time: Duration,
    pub blocks: bool,
    /// Every this many levels, a second round (round 1) follows round 0 (0: never).
    pub extra_round_every: u32,
}

#[derive(Debug, Default)]
pub struct BakerResult {
    pub tally: Tally,
    pub bursts: Vec<Burst>,
    pub elapsed: Duration,
}

/// Baker mode: `delegates` keys, levels advancing; per level and round a burst of one request per delegate
/// for each consensus kind, all sent at the same instant, the next burst when the last answer is in.
pub async fn baker(client: &Client, delegates: &[Delegate], plan: &BakerPlan, keep: bool) -> BakerResult {
    let mut result = BakerResult::default();
    let mut conns: Vec<Conn> = delegates.iter().map(|_| Conn::default()).collect();
    let started = Instant::now();
    for i in 0..plan.levels {
        let level_start = Instant::now();
        let level = plan.start_level + i;
        let rounds = if plan.extra_round_every > 0 && i % plan.extra_round_every == plan.extra_round_every - 1
        {
            2
        } else {
            1
        };
        for round in 0..rounds {
            if plan.blocks {
                let proposer = (level as usize + round as usize) % delegates.len();
                let payload = payloads::block(payloads::MAINNET, level, round);
                burst(
                    client,
                    delegates,
                    &mut conns,
                    &[proposer],
                    ConsensusKind::Block,
                    level,
                    round,
                    |_| payload.clone(),
                    keep,
                    &mut result,
                )
                .await;
            }
            let all: Vec<usize> = (0..delegates.len()).collect();
            for kind in [ConsensusKind::Preattestation, ConsensusKind::Attestation] {
                burst(
                    client,
                    delegates,
                    &mut conns,
                    &all,
                    kind,
                    level,
                    round,
                    |d| {
                        payloads::consensus(
                            kind,
                            delegates[d].curve(),
                            payloads::MAINNET,
                            level,
                            round,
                            d as u16,
                        )
                    },
                    keep,
                    &mut result,
                )
                .await;
            }
        }
        if let Some(rest) = plan.level_time.checked_sub(level_start.elapsed()) {
            if i + 1 < plan.levels {
                tokio::time::sleep(rest).await;
            }
        }
    }
    result.elapsed = started.elapsed();
    result
}

#[allow(clippy::too_many_arguments)]
async fn burst(
    client: &Client,
    delegates: &[Delegate],
    conns: &mut [Conn],
    who: &[usize],
    kind: ConsensusKind,
    level: u32,
    round: u32,
    payload: impl Fn(usize) -> Vec<u8>,
    keep: bool,
    result: &mut BakerResult,
) {
    let started = Instant::now();
    let tasks: Vec<_> = who
        .iter()
        .map(|&d| {
            let client = client.clone();
            let pkh = delegates[d].pkh;
            let mut conn = std::mem::take(&mut conns[d]);
            let bytes = payload(d);
            tokio::spawn(async move {
                let t = Instant::now();
                let outcome = client.sign(&mut conn, &pkh, &bytes).await;
                (d, conn, bytes, t.elapsed(), outcome)
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok((d, conn, bytes, latency, outcome)) => {
                conns[d] = conn;
                tally.record(d, bytes, latency, outcome, keep);
            }
            Err(e) => tally.record(
                0,
                vec![],
                started.elapsed(),
                crate::client::Outcome::Failed(format!("task: {e}")),
                false,
            ),
        }
    }
    result.bursts.push(Burst {
        kind: kind.name(),
        level,
        round,
        size: who.len(),
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        p99_ms: crate::report::Latency::of(&tally.latencies_us).p99,
        errors: tally.error_count(),
    });
    result.tally.merge(tally);
}

/// When open- and closed-loop runs stop: after `requests` requests if given, else after `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub requests: Option<u64>,
    pub duration: Duration,
}

fn transaction_for(delegates: &[Delegate], seq: u64) -> (usize, Vec<u8>) {
    let d = (seq % delegates.len() as u64) as usize;
    (d, payloads::transaction(&delegates[d].pkh, seq))
}

/// Open loop: request `i` starts at `i / rate` seconds whether or not earlier ones were answered, and its
/// latency counts from that scheduled instant (so a stalled signer's queue shows in the percentiles).
/// Transactions only: concurrent consensus requests for one key could overtake each other.
pub async fn open_loop(
    client: &Client,
    delegates: &[Delegate],
    rate: f64,
    bound: Bound,
    keep: bool,
) -> (Tally, Duration) {
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let started = Instant::now();
    let total = bound
        .requests
        .unwrap_or_else(|| (rate * bound.duration.as_secs_f64()).round() as u64);
    let mut tasks = Vec::with_capacity(total as usize);
    for seq in 0..total {
        let at = started + Duration::from_secs_f64(seq as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (d, bytes) = transaction_for(delegates, seq);
        let (client, pool, pkh) = (client.clone(), pool.clone(), delegates[d].pkh);
        tasks.push(tokio::spawn(async move {
            let mut conn = pool
                .lock()
                .map(|mut p| p.pop())
                .ok()
                .flatten()
                .unwrap_or_default();
            let outcome = client.sign(&mut conn, &pkh, &bytes).await;
            let latency = at.elapsed();
            if let Ok(mut p) = pool.lock() {
                p.push(conn);
            }
            (d, bytes, latency, outcome)
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        if let Ok((d, bytes, latency, outcome)) = task.await {
            tally.record(d, bytes, latency, outcome, keep);
        }
    }
    (tally, started.elapsed())
}

/// Closed loop: `concurrency` clients, each sending its next request as soon as the last is answered.
/// With attestations, client `c` signs for delegate `c` at levels `start_level`, `start_level + 1`, …
pub async fn closed_loop(
    client: &Client,
    delegates: &[Delegate],
    concurrency: usize,
    kind: PayloadKind,
    start_level: u32,
    bound: Bound,
    keep: bool,
) -> (Tally, Duration) {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bound.duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (client, issued) = (client.clone(), issued.clone());
            let delegates = delegates.to_vec();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = Conn::default();
                let mut level = start_level;
                loop {
                    let seq = issued.fetch_add(1, Ordering::Relaxed);
                    let stop = match bound.requests {
                        Some(n) => seq >= n,
                        None => Instant::now() >= deadline,
                    };
                    if stop {
                        break;
                    }
                    let (d, bytes) = match kind {
                        PayloadKind::Transaction => transaction_for(&delegates, seq),
                        PayloadKind::Attestation => {
                            level += 1;
                            let d = c % delegates.len();
                            let bytes = payloads::consensus(
                                ConsensusKind::Attestation,
                                delegates[d].curve(),
                                payloads::MAINNET,
                                level,
                                0,
                                d as u16,
                            );
                            (d, bytes)
                        }
                    };
                    let t = Instant::now();
                    let outcome = client.sign(&mut conn, &delegates[d].pkh, &bytes).await;
                    tally.record(d, bytes, t.elapsed(), outcome, keep);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tally.merge(t);
        }
    }
    (tally, started.elapsed())
}
