//! Retry backoff, in one place: the long-poll and the MQTT link wait by it after a failure.

use std::time::Duration;

/// Exponential backoff with jitter for the `attempt`-th retry (0-based): half of
/// `min(1 s × 2^attempt, 60 s)` plus a random part of up to as much again, so a down cloud is
/// never hammered, and a fleet that lost it together does not come back in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(60));
    let jitter = getrandom::u64().unwrap_or(0) % (base.as_millis() as u64 / 2 + 1);
    base / 2 + Duration::from_millis(jitter)
}
