//! When probes start: pure functions of the spec and the clock.
//!
//! - The first probe of a check starts at a stable offset inside its
//!   interval, derived from a hash of the spec, so 10,000 checks created at
//!   once (a daemon start, a reload) spread over the interval instead of
//!   all connecting in the same millisecond — and a restart keeps the same
//!   phases.
//! - After that, probes run at a fixed rate: start `n` is at
//!   `first + n * interval` whatever the previous probe took. A start that
//!   was missed (the runtime was starved for longer than an interval) is
//!   skipped, not run late in a burst.

use crate::spec::CheckSpec;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Offset of the first probe, in `[0, interval)`.
pub fn first_offset(spec: &CheckSpec) -> Duration {
    let interval_ns = spec.interval.as_nanos().max(1);
    // SipHash with the fixed keys of `DefaultHasher::new()`: stable within
    // a build, so a restart keeps the phases.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut h);
    let offset = (u128::from(h.finish()) * interval_ns) >> 64;
    Duration::from_nanos(u64::try_from(offset).unwrap_or(0))
}

/// The next start after the probe scheduled at `scheduled` ran, given the
/// time is now `now`: the first `scheduled + k * interval` (k >= 1) later
/// than `now`.
pub fn next_start(scheduled: Duration, now: Duration, interval: Duration) -> Duration {
    let interval = interval.max(Duration::from_millis(1));
    let next = scheduled + interval;
    if next > now {
        return next;
    }
    let behind = (now - next).as_nanos() / interval.as_nanos();
    let skip = u32::try_from(behind + 1).unwrap_or(u32::MAX);
    next + interval.saturating_mul(skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Probe;

    fn spec(port: u16, interval_ms: u64) -> CheckSpec {
        CheckSpec {
            target: format!("10.0.0.1:{port}").parse().unwrap(),
            probe: Probe::Tcp,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms / 2),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn first_offsets_are_stable_and_spread_over_the_interval() {
        assert_eq!(first_offset(&spec(1, 1000)), first_offset(&spec(1, 1000)));
        // 10,000 checks into 10 buckets of 100 ms: each within 20% of the
        // mean (a thundering herd would put them all in one).
        let mut buckets = [0u32; 10];
        for port in 0..10_000u16 {
            let off = first_offset(&spec(port, 1000));
            assert!(off < Duration::from_secs(1));
            buckets[(off.as_millis() / 100) as usize] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((800..=1200).contains(n), "bucket {i}: {n} of 10000");
        }
    }

    #[test]
    fn fixed_rate_with_missed_starts_skipped() {
        let s = Duration::from_millis;
        // On time: the next slot.
        assert_eq!(next_start(s(1000), s(1005), s(2000)), s(3000));
        // The probe took longer than the slot gap but not a whole interval.
        assert_eq!(next_start(s(1000), s(2999), s(2000)), s(3000));
        // Exactly at the slot: the one after (the slot is "now", already
        // being late by 0 would run twice).
        assert_eq!(next_start(s(1000), s(3000), s(2000)), s(5000));
        // Starved for 7 s: slots 3000, 5000, 7000 are skipped.
        assert_eq!(next_start(s(1000), s(8000), s(2000)), s(9000));
        // A zero interval cannot spin.
        assert_eq!(next_start(s(0), s(0), s(0)), s(1));
    }
}
