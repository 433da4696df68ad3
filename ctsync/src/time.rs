//! The session's clock: milliseconds since an epoch the driver picks.
//!
//! Time is an input (DESIGN.md principle 1), so it is a plain number: the
//! tokio driver maps `tokio::time::Instant` to it as `now - start`, the
//! simulation tests run a virtual clock, and the value serialises into
//! recorded inputs. The same shape as `vrrp::Time`, kept separate so this
//! crate stays free of the VRRP crate's socket dependencies.

use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, milliseconds since the driver's epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time(self.0.saturating_add(millis(rhs)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, rhs: Duration) -> Time {
        Time(self.0.saturating_sub(millis(rhs)))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, rhs: Time) -> Duration {
        self.saturating_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_millis(1500);
        assert_eq!(t + Duration::from_secs(1), Time::from_millis(2500));
        assert_eq!(t - Duration::from_secs(2), Time::ZERO);
        assert_eq!(Time::ZERO - t, Duration::ZERO);
        assert_eq!(t - Time::from_millis(500), Duration::from_secs(1));
        assert_eq!(
            Time::from_millis(u64::MAX) + Duration::from_secs(1),
            Time::from_millis(u64::MAX)
        );
    }
}
