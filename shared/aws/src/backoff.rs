//! Exponential backoff with full jitter: the wait before attempt `n` is uniform in
//! `0..=min(max, base * 2^n)`, which spreads retries of many clients apart.

use std::time::Duration;

use rand::Rng;

/// The delay before retry number `attempt` (0 = first retry).
pub fn full_jitter(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = exponential_cap(attempt, base, max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// The upper bound of the delay before retry number `attempt`.
pub fn exponential_cap(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_caps() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(500);
        assert_eq!(exponential_cap(0, base, max), Duration::from_millis(10));
        assert_eq!(exponential_cap(3, base, max), Duration::from_millis(80));
        assert_eq!(exponential_cap(40, base, max), max);
        for attempt in 0..50 {
            assert!(full_jitter(attempt, base, max) <= max);
        }
    }
}
