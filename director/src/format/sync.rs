//! `directorctl sync`: replication at a glance, in the spirit of
//! `conntrackd -s` (cache, traffic, errors), with this protocol's own
//! figures: origin of changes (local kernel events vs the peer), resyncs,
//! rejected frames, and the ack lag of the master's changes.
//!
//! ```text
//! ctsync: master, link established (this side dials 10.1.0.2:3780)
//! peer: lb-02 (backup), connected 10.1.0.2:3780, in sync
//! entries in table:                1200
//!
//!                        created    updated  destroyed
//! local events              1500        300        300
//! from peer                    0          0          0
//! ...
//! ```

use crate::control::SyncReply;
use ctsync::session::LinkState;
use std::fmt::Write;

fn link_word(l: LinkState) -> &'static str {
    match l {
        LinkState::Down => "down",
        LinkState::Handshake => "handshake",
        LinkState::Established => "established",
    }
}

fn lag(q: Option<u64>, samples: u64) -> String {
    match (q, samples) {
        (_, 0) => "-".into(),
        (Some(ms), _) => format!("<={ms}ms"),
        (None, _) => ">16s".into(),
    }
}

/// The text of `directorctl sync`.
pub fn sync(reply: &SyncReply) -> String {
    let mut o = String::new();
    let Some(st) = &reply.running else {
        if !reply.configured {
            o.push_str("ctsync: not configured (no [ctsync] section): connection state is not replicated\n");
        } else {
            let why = reply.error.as_deref().unwrap_or("unknown reason");
            let _ = writeln!(o, "ctsync: configured but NOT running: {why}");
        }
        return o;
    };
    let s = &st.session;
    let n = &s.stats;
    let d = &st.driver;
    let _ = writeln!(
        o,
        "ctsync: {}, link {} ({} {}, local {})",
        s.role.as_str(),
        link_word(s.link),
        if st.dials {
            "this side dials"
        } else {
            "this side listens for"
        },
        st.peer,
        st.local
    );
    match &s.peer {
        Some(p) => {
            let _ = writeln!(
                o,
                "peer: {} ({}), connected {}, {}",
                p.node_id,
                p.role.as_str(),
                st.connected_to
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                if s.in_sync {
                    "in sync"
                } else {
                    "resync in progress"
                }
            );
        }
        None => o.push_str("peer: not connected\n"),
    }
    let _ = writeln!(o, "entries in table: {:>14}", n.entries);
    let _ = writeln!(
        o,
        "pending changes:  {:>14}   unacked frames: {} ({} bytes)   queued bytes: {}   kernel writes queued: {}",
        n.pending, n.unacked_frames, n.unacked_bytes, d.queued_bytes, d.apply_backlog
    );
    o.push('\n');
    let _ = writeln!(
        o,
        "{:<18}{:>11}{:>11}{:>11}",
        "", "created", "updated", "destroyed"
    );
    let _ = writeln!(
        o,
        "{:<18}{:>11}{:>11}{:>11}",
        "local events", n.events_new, n.events_update, n.events_destroy
    );
    let _ = writeln!(
        o,
        "{:<18}{:>11}{:>11}{:>11}",
        "from peer", n.created, n.updated, n.destroyed
    );
    o.push('\n');
    let _ = writeln!(o, "{:<18}{:>11}{:>15}", "", "messages", "bytes");
    let _ = writeln!(o, "{:<18}{:>11}{:>15}", "sent", n.frames_sent, n.bytes_sent);
    let _ = writeln!(
        o,
        "{:<18}{:>11}{:>15}",
        "received", n.frames_received, n.bytes_received
    );
    o.push('\n');
    let _ = writeln!(
        o,
        "resent: {}   lost: {}   rejected auth: {}   replays: {}   malformed: {}   refused connections: {} (+{} from the peer's address without a fresh Hello)",
        n.resent,
        n.lost,
        n.rejected_auth,
        n.rejected_replay,
        n.malformed + n.oversized + n.bad_version + n.unknown_type + n.truncated,
        d.refused_connections,
        d.refused_replacements
    );
    let _ = writeln!(
        o,
        "resyncs: {} sent ({} partial), {} received ({} partial); digests {} matched, {} differed",
        n.bulk_sent,
        n.partial_bulk_sent,
        n.bulk_received,
        n.partial_bulk_received,
        n.digest_matches,
        n.digest_mismatches
    );
    let _ = writeln!(
        o,
        "event overruns: {}   events subscribed: {}   dump failures: {}   kernel refused: {} (table full {})",
        n.overruns,
        if d.events_subscribed { "yes" } else { "no" },
        n.dump_failures,
        d.apply_refused,
        n.table_full
    );
    let samples = n.lag.samples();
    let _ = writeln!(
        o,
        "lag: p50 {}  p99 {}  max {}ms  now {}ms  ({} acked frames)",
        lag(n.lag.quantile_upper_ms(0.5), samples),
        lag(n.lag.quantile_upper_ms(0.99), samples),
        n.max_lag_ms,
        n.lag_ms,
        samples
    );
    let _ = writeln!(
        o,
        "connections: {} established, {} disconnects, {} peer timeouts, {} dials ({} failed), {} role changes",
        n.established, n.disconnects, n.peer_timeouts, d.dials, d.dial_failures, n.role_changes
    );
    // Window tracking turned off on entries this box forwarded, at start
    // and on each step down (ctsync_host::kernel, "Loosening").
    let _ = writeln!(
        o,
        "loosened: {} entries in {} passes (TCP window tracking off for entries the peer now forwards)",
        d.entries_loosened, d.loosenings
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctsync_host::driver::{DriverStats, SyncStatus};
    use ctsync::session::{PeerStatus, Status};
    use ctsync::{Role, Stats};

    fn reply() -> SyncReply {
        let mut stats = Stats {
            entries: 1200,
            pending: 3,
            unacked_frames: 1,
            unacked_bytes: 512,
            lag_ms: 2,
            events_new: 1500,
            events_update: 300,
            events_destroy: 300,
            frames_sent: 4100,
            bytes_sent: 2_345_678,
            frames_received: 4000,
            bytes_received: 96_000,
            resent: 12,
            lost: 0,
            rejected_auth: 1,
            rejected_replay: 2,
            malformed: 1,
            bulk_sent: 2,
            partial_bulk_sent: 1,
            digest_matches: 40,
            digest_mismatches: 1,
            overruns: 1,
            established: 2,
            disconnects: 1,
            role_changes: 1,
            max_lag_ms: 9,
            ..Stats::default()
        };
        for ms in [1, 1, 1, 3, 3, 3, 3, 3, 3, 9] {
            stats.lag.record(ms);
        }
        SyncReply {
            configured: true,
            error: None,
            running: Some(SyncStatus {
                local: "10.1.0.1:3780".parse().unwrap(),
                peer: "10.1.0.2:3780".parse().unwrap(),
                dials: true,
                connected_to: Some("10.1.0.2:3780".parse().unwrap()),
                session: Status {
                    node_id: "lb-01".into(),
                    role: Role::Master,
                    link: LinkState::Established,
                    peer: Some(PeerStatus {
                        node_id: "lb-02".into(),
                        role: Role::Backup,
                    }),
                    in_sync: true,
                    bulk_out: None,
                    bulk_in: None,
                    stats,
                },
                driver: DriverStats {
                    refused_connections: 3,
                    refused_replacements: 1,
                    loosenings: 2,
                    entries_loosened: 40,
                    dials: 2,
                    dial_failures: 1,
                    apply_refused: 0,
                    events_subscribed: true,
                    ..DriverStats::default()
                },
            }),
        }
    }

    #[test]
    fn golden_text() {
        assert_eq!(
            sync(&reply()),
            "\
ctsync: master, link established (this side dials 10.1.0.2:3780, local 10.1.0.1:3780)
peer: lb-02 (backup), connected 10.1.0.2:3780, in sync
entries in table:           1200
pending changes:               3   unacked frames: 1 (512 bytes)   queued bytes: 0   kernel writes queued: 0

                      created    updated  destroyed
local events             1500        300        300
from peer                   0          0          0

                     messages          bytes
sent                     4100        2345678
received                 4000          96000

resent: 12   lost: 0   rejected auth: 1   replays: 2   malformed: 1   refused connections: 3 (+1 from the peer's address without a fresh Hello)
resyncs: 2 sent (1 partial), 0 received (0 partial); digests 40 matched, 1 differed
event overruns: 1   events subscribed: yes   dump failures: 0   kernel refused: 0 (table full 0)
lag: p50 <=4ms  p99 <=16ms  max 9ms  now 2ms  (10 acked frames)
connections: 2 established, 1 disconnects, 0 peer timeouts, 2 dials (1 failed), 1 role changes
loosened: 40 entries in 2 passes (TCP window tracking off for entries the peer now forwards)
"
        );
    }

    #[test]
    fn not_configured_and_not_running_say_so() {
        let off = SyncReply {
            configured: false,
            running: None,
            error: None,
        };
        assert_eq!(
            sync(&off),
            "ctsync: not configured (no [ctsync] section): connection state is not replicated\n"
        );
        let failed = SyncReply {
            configured: true,
            running: None,
            error: Some("[ctsync]: cannot open the conntrack table: EPERM".into()),
        };
        assert_eq!(
            sync(&failed),
            "ctsync: configured but NOT running: [ctsync]: cannot open the conntrack table: EPERM\n"
        );
    }

    #[test]
    fn golden_json() {
        let json = serde_json::to_value(crate::control::Response::Sync(Box::new(reply()))).unwrap();
        assert_eq!(json["result"], "sync");
        assert_eq!(json["configured"], true);
        let r = &json["running"];
        assert_eq!(r["peer"], "10.1.0.2:3780");
        assert_eq!(r["dials"], true);
        assert_eq!(r["session"]["role"], "master");
        assert_eq!(r["session"]["link"], "established");
        assert_eq!(r["session"]["peer"]["node_id"], "lb-02");
        assert_eq!(r["session"]["stats"]["entries"], 1200);
        assert_eq!(r["session"]["stats"]["rejected_auth"], 1);
        assert_eq!(r["driver"]["refused_connections"], 3);
        // And back: directorctl parses what the daemon sends.
        let back: crate::control::Response = serde_json::from_value(json).unwrap();
        assert_eq!(back, crate::control::Response::Sync(Box::new(reply())));
    }
}
