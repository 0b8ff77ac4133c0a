//! The one retry policy of the Azure clients (Key Vault / Managed HSM and Table Storage): which waits come
//! between attempts and whether another attempt fits the call's time budget.

use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

/// Jittered exponential backoff, the server's `Retry-After` when it gives one, inside a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt (before jitter).
    pub first: Duration,
    /// The longest wait backoff reaches (before jitter).
    pub max: Duration,
}

impl RetryPolicy {
    /// What both Azure clients use: 50 ms after the first failure, doubling up to 800 ms, each wait
    /// stretched by up to half again at random so that instances retrying together spread out.
    pub const AZURE: Self = Self {
        first: Duration::from_millis(50),
        max: Duration::from_millis(800),
    };

    /// The wait after failed attempt number `attempt` (1 for the first): `retry_after` if the server
    /// named one (429 with Retry-After), else the jittered backoff.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let doublings = attempt.saturating_sub(1).min(16);
        let base = self.first.saturating_mul(1 << doublings).min(self.max);
        let spread = base.as_millis() as u64 / 2 + 1;
        base + Duration::from_millis(OsRng.next_u64() % spread)
    }

    /// Whether a wait of `wait` from now still leaves room for an attempt before `deadline`.
    pub fn fits(&self, wait: Duration, deadline: Instant) -> bool {
        Instant::now() + wait < deadline
    }
}

/// The attempts of one call under a [`RetryPolicy`]: its deadline, how many were started, and why the last
/// one failed (for the error once the budget is spent).
#[derive(Debug)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    deadline: Instant,
    started: u32,
    /// Why the last attempt failed; "no attempt" before the first.
    pub(crate) last: String,
}

impl Attempts {
    pub(crate) fn new(policy: RetryPolicy, budget: Duration) -> Self {
        Self {
            policy,
            deadline: Instant::now() + budget,
            started: 0,
            last: String::from("no attempt"),
        }
    }

    /// Starts the next attempt: the time left for it, or `Err` with why the last failed once none is left.
    pub(crate) fn start(&mut self) -> Result<Duration, String> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(std::mem::take(&mut self.last));
        }
        self.started += 1;
        Ok(remaining)
    }

    /// How many attempts were started.
    pub(crate) fn started(&self) -> u32 {
        self.started
    }

    /// The wait before another attempt (`retry_after` if the server named one), or `Err` with why the last
    /// failed when that wait would leave no room for it before the deadline.
    pub(crate) fn back_off(&mut self, retry_after: Option<Duration>) -> Result<Duration, String> {
        let wait = self.policy.wait(self.started, retry_after);
        if self.policy.fits(wait, self.deadline) {
            Ok(wait)
        } else {
            Err(std::mem::take(&mut self.last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_first_to_max_with_at_most_half_again_of_jitter() {
        let p = RetryPolicy::AZURE;
        for (attempt, base) in [
            (1, 50),
            (2, 100),
            (3, 200),
            (4, 400),
            (5, 800),
            (6, 800),
            (40, 800),
        ] {
            for _ in 0..50 {
                let w = p.wait(attempt, None).as_millis() as u64;
                assert!(w >= base && w <= base + base / 2, "attempt {attempt}: {w} ms");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_and_the_budget_is_checked() {
        let p = RetryPolicy::AZURE;
        assert_eq!(p.wait(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(p.fits(Duration::from_millis(10), deadline));
        assert!(!p.fits(Duration::from_secs(2), deadline));
    }

    #[test]
    fn attempts_count_and_give_up_with_the_last_cause_when_the_budget_is_spent() {
        let mut a = Attempts::new(RetryPolicy::AZURE, Duration::from_secs(5));
        assert!(a.start().unwrap() <= Duration::from_secs(5));
        assert_eq!(a.started(), 1);
        a.last = "HTTP 503".into();
        assert!(a.back_off(None).unwrap() >= Duration::from_millis(50));
        assert_eq!(a.back_off(Some(Duration::from_secs(60))), Err("HTTP 503".into()));
        let mut spent = Attempts::new(RetryPolicy::AZURE, Duration::ZERO);
        assert_eq!(spent.start(), Err("no attempt".into()));
        assert_eq!(spent.started(), 0);
    }
}
