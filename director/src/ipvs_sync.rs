//! The kernel's IPVS sync daemons, following VRRP.
//!
//! ctsync moves conntrack entries; IPVS keeps its own connection table
//! (`ipvsadm -Lnc`) that decides which real server a packet of an
//! established connection goes to. Without that entry on the new master,
//! a non-SYN packet of an old connection finds no IPVS connection and
//! never reaches its real server. The kernel replicates that table itself
//! (net/netfilter/ipvs/ip_vs_sync.c): a *master* sync daemon multicasts
//! entries of connections it forwards (224.0.0.81:8848 by default) on one
//! interface, a *backup* daemon on the peer inserts what it hears. This
//! module decides which daemon should run and repairs what the kernel runs.
//!
//! ## Switching, not both
//!
//! The kernel lets one box run both daemons at once (`ipvs->sync_state`
//! is a bit mask of IP_VS_STATE_MASTER | IP_VS_STATE_BACKUP). keepalived's
//! `lvs_sync_daemon` switches instead (ipvswrapper.c `ipvs_syncd_master`:
//! stop the backup daemon, start the master; `ipvs_syncd_backup` the
//! reverse), and so do we: the box runs the **master daemon while the
//! followed VRRP instances are MASTER, the backup daemon otherwise**,
//! because
//! - a box that owns the VIPs must not take connection updates from the
//!   other one: after a split brain heals, both would otherwise overwrite
//!   each other's entries for the same connections (ip_vs_sync.c
//!   `ip_vs_proc_conn` updates an existing entry's flags and state);
//! - a backup has nothing to send: it forwards no traffic, so a master
//!   daemon there would only hold a thread and a socket;
//! - entries the backup daemon inserted stay when it is stopped (stopping
//!   a daemon only ends its thread), so at takeover they are all there.
//!
//! The followed instances are ctsync's (`[ctsync] follow`, see
//! `crate::ctsync_host::role`): the two replications switch together.
//!
//! ## Level-triggered
//!
//! [`plan`] compares the wanted daemon with what `IPVS_CMD_GET_DAEMON`
//! reports and returns the stops and the start that make them equal;
//! [`ensure`] runs it through an [`IpvsKernel`] at every reconcile pass
//! (so an `ipvsadm --stop-daemon` is repaired by the next pass) and at
//! once on every VRRP state change. With the keys configured the director
//! owns the sync daemons: one it did not start (another interface, id or
//! role) is stopped. Without them it leaves the kernel's daemons alone,
//! except once after a reload removed the keys: the daemons it ran then
//! are stopped ([`stop_all`], from the IPVS dataplane), as removing any
//! other configured thing removes it from the kernel.

use crate::config::{Config, IpvsSync};
use crate::ctsync_host::role::RoleRule;
use crate::kernel::IpvsKernel;
use crate::model::{SyncDaemon, SyncRole};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};
use vrrp::machine::{Action, State};

/// The VRRP state of each instance as last reported by the executor.
pub type VrrpStates = Arc<Mutex<BTreeMap<String, State>>>;

/// The daemon wanted now: `None` without the keys. The role follows the
/// same instances as ctsync (`[ctsync] follow`; every instance without
/// it): master while one of them is MASTER.
pub fn wanted_now(config: &Config, states: &BTreeMap<String, State>) -> Option<SyncDaemon> {
    let cfg = config.ipvs_sync.as_ref()?;
    let role = match RoleRule::from_config(config).role(states) {
        ctsync::Role::Master => SyncRole::Master,
        ctsync::Role::Backup => SyncRole::Backup,
    };
    Some(wanted(cfg, role))
}

/// Follows VRRP for the sync daemons: records every instance's state in
/// `states` and calls `changed` after each state change (the daemon
/// triggers a pass, which runs [`ensure`]). HostEvents are published
/// after the executor carried them out, so at a takeover the VIPs are
/// already up when the master daemon starts: its first packets are new
/// connections. Returns when VRRP stops.
pub async fn follow(
    vrrp: Arc<crate::vrrp_host::VrrpHandle>,
    states: VrrpStates,
    changed: impl Fn(),
) {
    let mut rx = vrrp.subscribe();
    // Subscribed first, then the snapshot: a change between the two is
    // in both, and states are absolute, so applying it twice is harmless.
    resync(&vrrp, &states).await;
    changed();
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if let Action::StateChange { new, .. } = ev.action {
                    if let Ok(mut s) = states.lock() {
                        s.insert(ev.instance.clone(), new);
                    }
                    changed();
                }
            }
            Err(RecvError::Lagged(n)) => {
                warn!(
                    event = "ipvs_sync_vrrp_lagged",
                    missed = n,
                    note = "re-reading the VRRP states"
                );
                resync(&vrrp, &states).await;
                changed();
            }
            Err(RecvError::Closed) => {
                info!(event = "ipvs_sync_vrrp_closed");
                return;
            }
        }
    }
}

async fn resync(vrrp: &crate::vrrp_host::VrrpHandle, states: &VrrpStates) {
    match vrrp.status().await {
        Ok(snap) => {
            if let Ok(mut s) = states.lock() {
                for i in snap.instances {
                    s.insert(i.name, i.status.state);
                }
            }
        }
        Err(e) => warn!(event = "ipvs_sync_vrrp_status_failed", error = %e),
    }
}

/// The daemon this box should run in `role`.
pub fn wanted(cfg: &IpvsSync, role: SyncRole) -> SyncDaemon {
    SyncDaemon {
        role,
        mcast_ifn: cfg.interface.clone(),
        syncid: cfg.syncid,
        // 0 / None: the kernel's defaults (ip_vs_sync.c: maxlen from the
        // interface MTU, group 224.0.0.81 / ff02::81, port 8848, ttl 1),
        // which newer kernels report back filled in; see `same`.
        sync_maxlen: 0,
        mcast_group: None,
        mcast_port: 0,
        mcast_ttl: 0,
    }
}

/// Whether a running daemon is the wanted one. Only what we set is
/// compared: since Linux 4.3 GET_DAEMON also reports the defaults the
/// kernel filled in (maxlen, group, port, ttl), which we left at 0.
pub fn same(running: &SyncDaemon, want: &SyncDaemon) -> bool {
    running.role == want.role
        && running.mcast_ifn == want.mcast_ifn
        && running.syncid == want.syncid
        && (want.sync_maxlen == 0 || running.sync_maxlen == want.sync_maxlen)
        && (want.mcast_group.is_none() || running.mcast_group == want.mcast_group)
        && (want.mcast_port == 0 || running.mcast_port == want.mcast_port)
        && (want.mcast_ttl == 0 || running.mcast_ttl == want.mcast_ttl)
}

/// What to do to get from `running` to `want`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Daemons to stop first (the other role, or ours with other settings).
    pub stop: Vec<SyncDaemon>,
    pub start: Option<SyncDaemon>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_none()
    }
}

/// Pure: the stops and the start that make `running` equal to `want`.
/// Stops come first: at takeover the backup daemon is gone before the
/// master starts (as keepalived does), and a daemon of our role with other
/// settings must be stopped before ours can start (the kernel refuses a
/// second one of a role with EEXIST).
pub fn plan(want: &SyncDaemon, running: &[SyncDaemon]) -> Plan {
    let mut p = Plan::default();
    let mut have = false;
    for d in running {
        if same(d, want) && !have {
            have = true;
        } else {
            p.stop.push(d.clone());
        }
    }
    if !have {
        p.start = Some(want.clone());
    }
    p
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// One human line per change made.
    pub changes: Vec<String>,
    /// One line per failure, naming the request and the interface.
    pub errors: Vec<String>,
}

fn describe(d: &SyncDaemon) -> String {
    let role = match d.role {
        SyncRole::Master => "master",
        SyncRole::Backup => "backup",
    };
    format!(
        "IPVS {role} sync daemon on {} (syncid {})",
        if d.mcast_ifn.is_empty() {
            "-"
        } else {
            &d.mcast_ifn
        },
        d.syncid
    )
}

/// One level-triggered step: read the kernel's daemons, stop the wrong
/// ones, start the wanted one. Never panics; failures are in the outcome
/// and the next pass retries.
pub fn ensure<K: IpvsKernel + ?Sized>(k: &mut K, want: &SyncDaemon) -> Outcome {
    converge(k, Some(want))
}

/// Stops every sync daemon the kernel runs: the keys were removed from
/// the config while the director ran them.
pub fn stop_all<K: IpvsKernel + ?Sized>(k: &mut K) -> Outcome {
    converge(k, None)
}

/// [`ensure`] (`Some`) or [`stop_all`] (`None`).
fn converge<K: IpvsKernel + ?Sized>(k: &mut K, want: Option<&SyncDaemon>) -> Outcome {
    let mut out = Outcome::default();
    let running = match k.sync_daemons() {
        Ok(r) => r,
        Err(e) => {
            out.errors
                .push(format!("reading the IPVS sync daemons (GET_DAEMON): {e}"));
            return out;
        }
    };
    let p = match want {
        Some(w) => plan(w, &running),
        None => Plan {
            stop: running,
            start: None,
        },
    };
    let why = if want.is_some() {
        ""
    } else {
        " (ipvs_sync keys removed from the config)"
    };
    for d in &p.stop {
        match k.stop_sync_daemon(d) {
            Ok(()) => out
                .changes
                .push(format!("stopped the {}{why}", describe(d))),
            // ESRCH: it stopped under us; the goal is reached all the same.
            Err(e) if e.errno() == Some(libc::ESRCH) => {}
            Err(e) => out
                .errors
                .push(format!("stopping the {}: {e}", describe(d))),
        }
    }
    if let Some(d) = &p.start {
        match k.start_sync_daemon(d) {
            Ok(()) => out.changes.push(format!("started the {}", describe(d))),
            Err(e) => {
                let hint = match e.errno() {
                    Some(libc::ENODEV) => {
                        " (no such interface in this network namespace: check [ctsync] ipvs_sync_interface)"
                    }
                    _ => "",
                };
                out.errors
                    .push(format!("starting the {}: {e}{hint}", describe(d)))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::{Call, FakeIpvs};

    #[test]
    fn the_role_follows_the_ctsync_rule() {
        let text = "[global]\nrouter_id = \"lb\"\n\
            [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.100/32\"]\n\
            [[vrrp_instance]]\nname = \"VI_2\"\ninterface = \"eth1\"\nvrid = 52\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.101/32\"]\n\
            [ctsync]\nlocal = \"10.1.0.1:3780\"\npeer = \"10.1.0.2:3780\"\nkey_file = \"k\"\nfollow = \"VI_2\"\n";
        let c = crate::config::parse(
            &format!("{text}ipvs_sync_interface = \"eth2\"\nipvs_syncid = 7\n"),
            "t.toml",
        )
        .unwrap();
        let mut st = BTreeMap::new();
        // Before VRRP says anything: backup.
        assert_eq!(wanted_now(&c, &st).unwrap().role, SyncRole::Backup);
        st.insert("VI_1".to_string(), State::Master);
        assert_eq!(wanted_now(&c, &st).unwrap().role, SyncRole::Backup);
        st.insert("VI_2".to_string(), State::Master);
        assert_eq!(wanted_now(&c, &st), Some(wanted(&cfg(), SyncRole::Master)));
        st.insert("VI_2".to_string(), State::Fault);
        assert_eq!(wanted_now(&c, &st).unwrap().role, SyncRole::Backup);
        // Without the keys: nothing is managed.
        let c = crate::config::parse(text, "t.toml").unwrap();
        assert_eq!(wanted_now(&c, &st), None);
    }

    fn cfg() -> IpvsSync {
        IpvsSync {
            interface: "eth2".into(),
            syncid: 7,
        }
    }

    /// What a 6.1 kernel reports for `wanted(..)`: the defaults filled in.
    fn reported(role: SyncRole) -> SyncDaemon {
        SyncDaemon {
            sync_maxlen: 1472,
            mcast_group: Some("224.0.0.81".parse().unwrap()),
            mcast_port: 8848,
            mcast_ttl: 1,
            ..wanted(&cfg(), role)
        }
    }

    #[test]
    fn kernel_defaults_count_as_the_same_daemon() {
        let want = wanted(&cfg(), SyncRole::Backup);
        assert!(plan(&want, &[reported(SyncRole::Backup)]).is_empty());
        // Another id, interface or role is not ours.
        let mut other = reported(SyncRole::Backup);
        other.syncid = 8;
        assert_eq!(
            plan(&want, &[other.clone()]),
            Plan {
                stop: vec![other],
                start: Some(want.clone())
            }
        );
        let mut other = reported(SyncRole::Backup);
        other.mcast_ifn = "eth0".into();
        assert_eq!(plan(&want, &[other.clone()]).stop, vec![other]);
    }

    #[test]
    fn takeover_stops_the_backup_daemon_then_starts_the_master() {
        let mut k = FakeIpvs::new();
        k.daemons = vec![reported(SyncRole::Backup)];
        let out = ensure(&mut k, &wanted(&cfg(), SyncRole::Master));
        assert!(out.errors.is_empty(), "{out:?}");
        assert_eq!(
            k.calls,
            vec![
                Call::StopSync(reported(SyncRole::Backup)),
                Call::StartSync(wanted(&cfg(), SyncRole::Master)),
            ]
        );
        assert_eq!(k.daemons, vec![wanted(&cfg(), SyncRole::Master)]);
        assert_eq!(
            out.changes,
            vec![
                "stopped the IPVS backup sync daemon on eth2 (syncid 7)",
                "started the IPVS master sync daemon on eth2 (syncid 7)"
            ]
        );
        // Level-triggered: the next pass changes nothing.
        k.calls.clear();
        let out = ensure(&mut k, &wanted(&cfg(), SyncRole::Master));
        assert_eq!(out, Outcome::default());
        assert!(k.calls.is_empty());
    }

    #[test]
    fn an_external_stop_is_repaired_and_a_stray_daemon_stopped() {
        let mut k = FakeIpvs::new();
        // `ipvsadm --stop-daemon backup` left nothing: started again.
        let out = ensure(&mut k, &wanted(&cfg(), SyncRole::Backup));
        assert_eq!(
            out.changes,
            vec!["started the IPVS backup sync daemon on eth2 (syncid 7)"]
        );
        // Someone started a master daemon beside ours while we are backup.
        let stray = SyncDaemon {
            mcast_ifn: "eth9".into(),
            ..reported(SyncRole::Master)
        };
        k.daemons.push(stray.clone());
        k.calls.clear();
        let out = ensure(&mut k, &wanted(&cfg(), SyncRole::Backup));
        assert_eq!(k.calls, vec![Call::StopSync(stray)]);
        assert_eq!(
            out.changes,
            vec!["stopped the IPVS master sync daemon on eth9 (syncid 7)"]
        );
    }

    #[test]
    fn failures_name_the_daemon_and_the_request() {
        let mut k = FakeIpvs::new();
        k.available = false;
        let out = ensure(&mut k, &wanted(&cfg(), SyncRole::Master));
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0].starts_with("reading the IPVS sync daemons (GET_DAEMON): "),
            "{out:?}"
        );
        // A daemon of our role with another id is replaced: stopped
        // first, else the kernel would refuse the start with EEXIST.
        let mut k = FakeIpvs::new();
        k.daemons = vec![reported(SyncRole::Master)];
        let mut other = wanted(&cfg(), SyncRole::Master);
        other.syncid = 9;
        let out = ensure(&mut k, &other);
        assert!(out.errors.is_empty(), "{out:?}");
        assert_eq!(k.daemons, vec![other]);
    }
}
