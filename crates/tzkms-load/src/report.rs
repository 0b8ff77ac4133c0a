//! What a run measured: per-request outcomes and latencies, their percentiles, per-burst figures for baker
//! mode, and the text and JSON forms of the report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tezos::Signature;

use crate::client::Outcome;

/// A signature the signer returned, kept for verification after the run.
#[derive(Debug, Clone)]
pub struct Signed {
    pub delegate: usize,
    pub payload: Vec<u8>,
    pub signature: Signature,
}

/// Outcomes and latencies of a set of signing requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// Microseconds from the request's start (its scheduled start in open-loop mode) to its answer.
    pub latencies_us: Vec<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// The first few error messages, to say what went wrong.
    pub examples: Vec<String>,
    pub signed: Vec<Signed>,
}

impl Tally {
    pub fn record(
        &mut self,
        delegate: usize,
        payload: Vec<u8>,
        latency: Duration,
        outcome: Outcome,
        keep: bool,
    ) {
        self.latencies_us.push(latency.as_micros() as u64);
        match outcome {
            Outcome::Signed(signature) => {
                self.ok += 1;
                if keep {
                    self.signed.push(Signed {
                        delegate,
                        payload,
                        signature,
                    });
                }
            }
            other => {
                *self.errors.entry(other.label()).or_default() += 1;
                if self.examples.len() < 5 {
                    self.examples.push(match other {
                        Outcome::Failed(e) => e,
                        other => format!("status {}", other.label()),
                    });
                }
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
        self.signed.extend(other.signed);
    }

    pub fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples_us: &[u64]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        let mut sorted = samples_us.to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample at or above the fraction p of all samples.
        let pick = |p: f64| {
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1] as f64 / 1000.0
        };
        Self {
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            p999: pick(0.999),
            max: sorted[sorted.len() - 1] as f64 / 1000.0,
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// One burst of baker mode: every delegate's preattestation (or attestation, or the level's block).
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    pub kind: &'static str,
    pub level: u32,
    pub round: u32,
    pub size: usize,
    /// From the burst's start to its last answer.
    pub duration_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Signature verification, done after the run so it does not compete with the signer for the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub checked: u64,
    pub bad: u64,
    pub first_bad: Option<String>,
}

/// The figures of one measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub error_examples: Vec<String>,
    pub seconds: f64,
    pub throughput_per_s: f64,
    pub latency_ms: Latency,
}

impl Phase {
    pub fn of(tally: &Tally, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            requests: tally.requests(),
            ok: tally.ok,
            errors: tally.errors.clone(),
            error_examples: tally.examples.clone(),
            seconds,
            throughput_per_s: if seconds > 0.0 {
                tally.ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&tally.latencies_us),
        }
    }
}

pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        let l = Latency::of(&samples);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        let one = Latency::of(&[2500]);
        assert_eq!((one.p50, one.max), (2.5, 2.5));
    }

    #[test]
    fn errors_are_counted_by_status() {
        let mut t = Tally::default();
        t.record(0, vec![], Duration::from_millis(1), Outcome::Status(409), true);
        t.record(0, vec![], Duration::from_millis(1), Outcome::Status(409), true);
        t.record(
            0,
            vec![],
            Duration::from_millis(1),
            Outcome::Failed("connect: refused".into()),
            true,
        );
        assert_eq!(t.errors.get("409"), Some(&2));
        assert_eq!(t.errors.get("failed (connect)"), Some(&1));
        assert_eq!((t.requests(), t.ok, t.error_count()), (3, 0, 3));
    }
}
