//! `directorctl vrrp`: one line per instance, then the driver's counters.
//! The operator's questions first: who is master, is it the box that
//! should be (wanted state), with what priority, and since when and why.
//!
//! `directorctl vrrp --follow`: that table, then one line per event as the
//! daemon executes it ([`vrrp_event`]), and a [`vrrp_lost`] line where the
//! stream has a hole.

use std::fmt::Write;
use std::net::IpAddr;
use vrrp::driver::{HostEvent, Snapshot};
use vrrp::machine::{Action, Anomaly, State};

fn upper(s: State) -> String {
    s.as_str().to_uppercase()
}

/// The text `directorctl vrrp` prints.
pub fn vrrp(snap: &Snapshot) -> String {
    let mut out = String::new();
    if snap.instances.is_empty() {
        out.push_str("no vrrp_instance configured\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:>4} {:<7} {:<7} {:>9}  {:<26} {:<5} Last transition",
        "Instance",
        "Interface",
        "VRID",
        "State",
        "Wanted",
        "Prio b/e",
        "Master (prio, last heard)",
        "VIPs",
    );
    for i in &snap.instances {
        let st = &i.status;
        let master = match (st.state, &st.last_advert) {
            (State::Master, _) => format!("{} (self)", i.primary_address),
            (_, Some(h)) => format!(
                "{} ({}, {:.1}s ago)",
                h.address,
                h.priority,
                snap.now.saturating_since(h.at).as_secs_f64()
            ),
            (_, None) => "-".to_string(),
        };
        let transition = match &st.last_transition {
            Some(t) => format!(
                "{} -> {} {:.1}s ago ({})",
                upper(t.old),
                upper(t.new),
                snap.now.saturating_since(t.at).as_secs_f64(),
                t.reason
            ),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:>4} {:<7} {:<7} {:>9}  {:<26} {:<5} {}",
            i.name,
            i.interface,
            st.vrid,
            upper(st.state),
            upper(st.wanted_state),
            format!("{}/{}", st.base_priority, st.effective_priority),
            master,
            if st.vips_set { "set" } else { "-" },
            transition
        );
        let vips: Vec<String> = i.vips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  VIPs {}; advert {} ms; {}{}",
            vips.join(", "),
            i.advert_interval_ms,
            if i.preempt { "preempt" } else { "nopreempt" },
            match &i.group {
                Some(g) => format!("; sync group {g}"),
                None => String::new(),
            }
        );
        if !st.faults.is_empty() {
            let _ = writeln!(out, "  faults: {}", st.faults.join(", "));
        }
        let s = &st.stats;
        let _ = writeln!(
            out,
            "  adverts rx {} tx {}; became master {}, released {}; errors: checksum {} ttl {} version {} vrid {} interval {} address-list {} auth {} length {}",
            s.adverts_rx,
            s.adverts_tx,
            s.became_master,
            s.released_master,
            s.checksum_errors,
            s.ttl_errors,
            s.version_errors,
            s.vrid_errors,
            s.interval_errors,
            s.address_list_errors,
            s.auth_errors,
            s.packet_length_errors
        );
    }
    let l = &snap.lateness;
    let _ = writeln!(
        out,
        "timers: {} fired, lateness max {} ms, last {} ms; packets for unknown VRIDs {}; advert send errors {}",
        l.fired, l.max_ms, l.last_ms, snap.unknown_vrid, snap.advert_send_errors
    );
    out
}

/// `directorctl vrrp --follow`: the line before the first event.
pub fn vrrp_follow_banner(after: u64) -> String {
    format!("--- events after seq {after} (Ctrl-C to stop) ---\n")
}

/// `2024-05-01T12:00:00.123Z` (UTC, RFC 3339): the same instant on both
/// boxes of a pair whatever their time zones. Times a reader cannot place
/// (negative, NaN, past year 9999) print as raw seconds instead.
fn utc_millis(unix_time: f64) -> String {
    const YEAR_10000: f64 = 253_402_300_800.0;
    if unix_time.is_finite() && (0.0..YEAR_10000).contains(&unix_time) {
        if let Ok(d) = std::time::Duration::try_from_secs_f64(unix_time) {
            let mut out = String::new();
            // humantime's Display fails (rather than panics) on what it
            // cannot print; `write!` hands that back instead of panicking.
            let t = std::time::UNIX_EPOCH + d;
            if write!(out, "{}", humantime::format_rfc3339_millis(t)).is_ok() {
                return out;
            }
        }
    }
    format!("@{unix_time:?}")
}

fn list(addresses: &[IpAddr]) -> String {
    let v: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    v.join(", ")
}

/// What one event did, in words: what an operator used to grep
/// keepalived's syslog lines for.
fn what(action: &Action) -> String {
    match action {
        Action::StateChange { old, new, reason } => {
            format!("{} -> {} ({reason})", upper(*old), upper(*new))
        }
        Action::AddVips { addresses, accept } => format!(
            "VIPs added: {}{}",
            list(addresses),
            // keepalived's no_accept: the addresses are up for ARP but
            // traffic to them is dropped (RFC 5798 6.1 Accept_Mode).
            if *accept { "" } else { " (accept_mode off)" }
        ),
        Action::RemoveVips { addresses } => format!("VIPs removed: {}", list(addresses)),
        Action::SendGratuitous { addresses, repeat } => {
            let kind = match (
                addresses.iter().any(IpAddr::is_ipv4),
                addresses.iter().any(IpAddr::is_ipv6),
            ) {
                (true, false) => "gratuitous ARP",
                (false, true) => "unsolicited NA",
                _ => "gratuitous ARP/NA",
            };
            format!("{kind} sent x{repeat}: {}", list(addresses))
        }
        Action::SendAdvert { advert, dst, .. } => format!(
            "advert sent, priority {}, to {}",
            advert.priority,
            list(dst)
        ),
        Action::Anomaly {
            from,
            anomaly,
            discarded,
        } => {
            let problem = match anomaly {
                Anomaly::Ttl { ttl } => format!("TTL/hop limit {ttl} (not 255)"),
                Anomaly::Malformed { error } => format!("malformed packet ({error})"),
                Anomaly::VersionMismatch { version } => {
                    format!("VRRP version {version} advert (other version configured)")
                }
                Anomaly::VridMismatch { vrid } => format!("advert for VRID {vrid}"),
                Anomaly::AuthTypeMismatch { auth_type } => {
                    format!("auth type {auth_type} (other type configured)")
                }
                Anomaly::AuthFailure => "authentication failure (wrong password)".to_string(),
                Anomaly::AddressListMismatch { received } => {
                    format!("address list mismatch (it advertises {})", list(received))
                }
                Anomaly::IntervalMismatch { centis } => {
                    format!("advert interval mismatch ({} ms)", u64::from(*centis) * 10)
                }
            };
            format!(
                "{problem} from {from}, {}",
                if *discarded { "discarded" } else { "accepted" }
            )
        }
    }
}

/// One line per followed event: time, sequence number, instance,
/// interface, and what happened.
pub fn vrrp_event(unix_time: f64, ev: &HostEvent) -> String {
    format!(
        "{} seq={} {} {}: {}\n",
        utc_millis(unix_time),
        ev.seq,
        ev.instance,
        ev.interface,
        what(&ev.action)
    )
}

/// The line for events a follower will never see (never skipped
/// silently: the sequence numbers name them).
pub fn vrrp_lost(first_seq: u64, last_seq: u64) -> String {
    let missed = last_seq.saturating_sub(first_seq).saturating_add(1);
    let range = if first_seq == last_seq {
        format!("seq {first_seq}")
    } else {
        format!("seq {first_seq}-{last_seq}")
    };
    format!(
        "lost {missed} event{} ({range}): this follower fell behind or asked for more history than is kept; `directorctl vrrp` shows the current state\n",
        if missed == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrrp::codec::DecodeError;
    use vrrp::machine::Reason;
    use vrrp::Time;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn line(seq: u64, action: Action) -> String {
        let ev = HostEvent {
            seq,
            at: Time::from_millis(5),
            instance: "VI_1".into(),
            interface: "eth0".into(),
            action,
        };
        // 2023-11-14T22:13:20.250Z
        vrrp_event(1_700_000_000.25, &ev)
    }

    #[test]
    fn each_event_is_one_line_with_time_seq_instance_and_what_happened() {
        let vip = vec![ip("192.0.2.100")];
        let cases = [
            (
                Action::StateChange {
                    old: State::Backup,
                    new: State::Master,
                    reason: Reason::MasterDownTimer,
                },
                "BACKUP -> MASTER (master_down_timer)",
            ),
            (
                Action::AddVips {
                    addresses: vip.clone(),
                    accept: true,
                },
                "VIPs added: 192.0.2.100",
            ),
            (
                Action::AddVips {
                    addresses: vec![ip("192.0.2.100"), ip("192.0.2.101")],
                    accept: false,
                },
                "VIPs added: 192.0.2.100, 192.0.2.101 (accept_mode off)",
            ),
            (
                Action::SendGratuitous {
                    addresses: vip.clone(),
                    repeat: 5,
                },
                "gratuitous ARP sent x5: 192.0.2.100",
            ),
            (
                Action::SendGratuitous {
                    addresses: vec![ip("2001:db8::1")],
                    repeat: 1,
                },
                "unsolicited NA sent x1: 2001:db8::1",
            ),
            (
                Action::RemoveVips { addresses: vip },
                "VIPs removed: 192.0.2.100",
            ),
            (
                Action::Anomaly {
                    from: ip("10.0.0.2"),
                    anomaly: Anomaly::IntervalMismatch { centis: 200 },
                    discarded: false,
                },
                "advert interval mismatch (2000 ms) from 10.0.0.2, accepted",
            ),
            (
                Action::Anomaly {
                    from: ip("10.0.0.2"),
                    anomaly: Anomaly::AddressListMismatch {
                        received: vec![ip("169.55.8.93")],
                    },
                    discarded: true,
                },
                "address list mismatch (it advertises 169.55.8.93) from 10.0.0.2, discarded",
            ),
            (
                Action::Anomaly {
                    from: ip("10.0.0.2"),
                    anomaly: Anomaly::Malformed {
                        error: DecodeError::BadType { packet_type: 3 },
                    },
                    discarded: true,
                },
                "malformed packet (unknown VRRP packet type 3) from 10.0.0.2, discarded",
            ),
            (
                Action::Anomaly {
                    from: ip("10.0.0.2"),
                    anomaly: Anomaly::Ttl { ttl: 64 },
                    discarded: true,
                },
                "TTL/hop limit 64 (not 255) from 10.0.0.2, discarded",
            ),
        ];
        for (seq, (action, what)) in cases.into_iter().enumerate() {
            assert_eq!(
                line(seq as u64 + 1, action),
                format!(
                    "2023-11-14T22:13:20.250Z seq={} VI_1 eth0: {what}\n",
                    seq + 1
                )
            );
        }
    }

    #[test]
    fn lost_events_are_named_by_sequence_number() {
        assert_eq!(
            vrrp_lost(7, 7),
            "lost 1 event (seq 7): this follower fell behind or asked for more history than is kept; `directorctl vrrp` shows the current state\n"
        );
        assert!(vrrp_lost(3, 9).starts_with("lost 7 events (seq 3-9): "));
        // A hostile range from a confused daemon neither panics nor wraps.
        assert!(vrrp_lost(9, 3).starts_with("lost 1 event"));
        assert!(vrrp_lost(0, u64::MAX).starts_with(&format!("lost {} events", u64::MAX)));
    }

    #[test]
    fn times_a_reader_cannot_place_print_raw_instead_of_panicking() {
        assert_eq!(utc_millis(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(-1.0), "@-1.0");
        assert_eq!(utc_millis(f64::NAN), "@NaN");
        assert_eq!(utc_millis(f64::INFINITY), "@inf");
        assert_eq!(utc_millis(1e300), "@1e300");
        assert_eq!(utc_millis(253_402_300_799.5), "9999-12-31T23:59:59.500Z");
    }
}
