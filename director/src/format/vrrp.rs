//! `directorctl vrrp`: one line per instance, then the driver's counters.
//! The operator's questions first: who is master, is it the box that
//! should be (wanted state), with what priority, and since when and why.

use std::fmt::Write;
use vrrp::driver::Snapshot;
use vrrp::machine::State;

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
