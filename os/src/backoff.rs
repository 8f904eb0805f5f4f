//! Waits between retries: exponential, capped, with jitter, so that a server that is down is
//! never hammered and a fleet that lost it together does not come back in step.

use std::time::Duration;

/// A retry schedule: attempt `n` (from 0) waits a random time between half and all of
/// `min(first × 2ⁿ, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The base wait of the first attempt.
    pub first: Duration,
    /// The largest base wait.
    pub max: Duration,
}

impl Backoff {
    /// A schedule from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The base wait of attempt `attempt` (from 0), before jitter: `min(first × 2^attempt,
    /// max)`.
    pub fn base(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1 << attempt.min(30))
            .min(self.max)
    }

    /// How long to wait before attempt `attempt` (from 0): uniformly random in
    /// `[base / 2, base]` (the lower half when the system has no randomness to give).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base(attempt);
        let half_ms = u64::try_from(base.as_millis() / 2).unwrap_or(u64::MAX);
        let jitter = getrandom::u64().unwrap_or(0) % (half_ms + 1);
        base / 2 + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.base(0), Duration::from_secs(1));
        assert_eq!(b.base(3), Duration::from_secs(8));
        assert_eq!(b.base(6), Duration::from_secs(60));
        assert_eq!(b.base(u32::MAX), Duration::from_secs(60));
        for attempt in [0, 1, 5, 10, 1000] {
            let d = b.delay(attempt);
            assert!(d >= b.base(attempt) / 2 && d <= b.base(attempt), "{d:?}");
        }
    }
}
