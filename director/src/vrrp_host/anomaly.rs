//! Logging of received-packet anomalies, rate-limited (pure: time is an
//! input).
//!
//! RFC 5798 7.1 and RFC 3768 7.1: a receiver that discards an advert
//! (wrong TTL, checksum, VRID, authentication, interval) "SHOULD log the
//! event". The machine counts each one ([`vrrp::machine::Stats`]) and
//! reports it as an [`Action::Anomaly`](vrrp::machine::Action::Anomaly);
//! this decides which of those reach the log at warning level. A
//! misconfigured peer repeats the same anomaly with every advert (ten a
//! second at 100 ms), so each (instance, sender, kind) is logged when first
//! seen and then at most once per [`PERIOD`], with the number left out in
//! between. Without this, a password mismatch with a keepalived peer made
//! both boxes master with nothing in the log at the default level.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use vrrp::machine::Anomaly;
use vrrp::Time;

/// At most one warning per (instance, sender, kind) per period.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Keys kept before old ones are dropped (senders can be spoofed; the
/// table must not grow without bound).
const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Seen {
    logged_at: Time,
    suppressed: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AnomalyLog {
    seen: HashMap<(String, IpAddr, &'static str), Seen>,
}

impl AnomalyLog {
    /// One anomaly at `now`: `Some(n)` when it is to be logged, `n` being
    /// how many of the same were left out since it was last logged;
    /// `None` when it is to be left out.
    pub fn admit(
        &mut self,
        instance: &str,
        from: IpAddr,
        anomaly: &Anomaly,
        now: Time,
    ) -> Option<u64> {
        let mut key = (instance.to_string(), from, anomaly.as_str());
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_KEYS {
            self.seen
                .retain(|_, s| now.saturating_since(s.logged_at) < PERIOD);
            if self.seen.len() >= MAX_KEYS {
                // Still full (many senders at once, spoofed or not): one
                // shared entry per instance and kind from now on.
                key.1 = unspecified(from);
            }
        }
        if let Some(seen) = self.seen.get_mut(&key) {
            if now.saturating_since(seen.logged_at) < PERIOD {
                seen.suppressed += 1;
                return None;
            }
            let suppressed = seen.suppressed;
            *seen = Seen {
                logged_at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        self.seen.insert(
            key,
            Seen {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn first_of_a_kind_is_logged_then_once_per_period_with_the_count() {
        let mut log = AnomalyLog::default();
        let peer: IpAddr = "198.51.100.10".parse().unwrap();
        let other: IpAddr = "198.51.100.12".parse().unwrap();
        let auth = Anomaly::AuthFailure;
        assert_eq!(log.admit("VI_1", peer, &auth, at(0)), Some(0));
        for i in 1..=59 {
            assert_eq!(log.admit("VI_1", peer, &auth, at(i * 1000)), None);
        }
        // Another kind, sender or instance is news.
        let ttl = Anomaly::Ttl { ttl: 64 };
        assert_eq!(log.admit("VI_1", peer, &ttl, at(1000)), Some(0));
        assert_eq!(log.admit("VI_1", other, &auth, at(1000)), Some(0));
        assert_eq!(log.admit("VI_2", peer, &auth, at(1000)), Some(0));
        // A period after the first: logged, with the 59 left out.
        assert_eq!(log.admit("VI_1", peer, &auth, at(60_000)), Some(59));
        assert_eq!(log.admit("VI_1", peer, &auth, at(61_000)), None);
        assert_eq!(log.admit("VI_1", peer, &auth, at(120_000)), Some(1));
    }

    #[test]
    fn many_senders_at_once_share_one_entry_once_the_table_is_full() {
        let mut log = AnomalyLog::default();
        let auth = Anomaly::AuthFailure;
        let mut logged = 0;
        for i in 0..(MAX_KEYS as u32 * 3) {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            logged += log.admit("VI_1", from, &auth, at(u64::from(i))).is_some() as usize;
            assert!(log.seen.len() <= MAX_KEYS + 1);
        }
        // One line per sender until full, then one for all the others.
        assert_eq!(logged, MAX_KEYS + 1);
        // Later, expired entries make room again.
        let late: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(log.admit("VI_1", late, &auth, at(200_000)), Some(0));
        assert!(log.seen.len() <= 2);
    }
}
