//! The dataplane seam: one desired state, two kernels that can carry it.
//!
//! The daemon's kernel worker owns one `Box<dyn Dataplane>` and asks it for
//! passes (level-triggered: dump, diff, apply) and for the table as
//! `ipvsadm -Ln` would show it. Both implementations compile the same
//! [`DesiredTable`]:
//!
//! - [`IpvsDataplane`]: the IPVS table over generic netlink
//!   ([`crate::reconcile::Reconciler`] + [`crate::kernel::IpvsKernel`]), plus
//!   the nftables table that carries `[[snat]]` and forward rules (IPVS has no
//!   SNAT of its own; keepalived users keep an iptables rule for it today).
//! - `crate::nft::NftDataplane`: the whole service table as nftables rules in
//!   the `inet director` table.
//!
//! `global.dataplane = "auto"` picks IPVS when the kernel has it and nftables
//! otherwise ([`choose`]); the choice is logged and shown by
//! `directorctl status --json`.

use crate::config::{DataplaneChoice, Snat};
use crate::desired::DesiredTable;
use crate::kernel::{IpvsKernel, KernelError};
use crate::model::{DestKey, KernelTable, ServiceKey, SyncDaemon, Timeouts};
use crate::reconcile::{PassReport, Reconciler};
use serde::{Deserialize, Serialize};

/// Which kernel machinery carries the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneKind {
    Ipvs,
    Nftables,
}

impl std::fmt::Display for DataplaneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataplaneKind::Ipvs => "ipvs",
            DataplaneKind::Nftables => "nftables",
        })
    }
}

/// Everything one pass needs to know about what should be.
#[derive(Debug, Clone, Copy)]
pub struct PassInput<'a> {
    pub desired: &'a DesiredTable,
    pub snat: &'a [Snat],
    /// Delete services the director does not own (IPVS only: the nftables
    /// dataplane owns its whole table by construction).
    pub exclusive: bool,
    /// IPVS connection timeouts (IPVS only).
    pub timeouts: Option<Timeouts>,
    /// The IPVS sync daemon this box should run now (its role follows
    /// VRRP, `crate::ipvs_sync`); `None`: leave the kernel's daemons
    /// alone, unless this dataplane ran them under keys a reload removed
    /// (then they are stopped once). IPVS only: the nftables dataplane
    /// ignores it.
    pub sync_daemon: Option<&'a SyncDaemon>,
}

/// The table in `ipvsadm` terms, plus the IPVS-only extras.
#[derive(Debug, Clone)]
pub struct DataplaneStatus {
    pub table: KernelTable,
    /// `ipvsadm -L --timeout`; `None` when the dataplane has no such thing.
    pub timeouts: Option<Timeouts>,
    /// `ipvsadm -L --daemon`; empty on nftables.
    pub sync_daemons: Vec<SyncDaemon>,
}

/// A kernel that can carry the director's services.
pub trait Dataplane: Send {
    fn kind(&self) -> DataplaneKind;
    /// One level-triggered pass: read what the kernel holds, compare with
    /// `input`, apply only the difference. Never panics; failures are in
    /// the report and the next pass retries.
    fn pass(&mut self, input: &PassInput<'_>) -> PassReport;
    /// The table as `ipvsadm -Ln` shows it (fresh from the kernel).
    fn status(&mut self) -> Result<DataplaneStatus, KernelError>;
    /// Just the table (metrics scrapes).
    fn table(&mut self) -> Result<KernelTable, KernelError> {
        self.status().map(|s| s.table)
    }
    /// Cleans up the established connections of real servers that health
    /// checks found dead (`on_down_connections = "reset"`), one result per
    /// `(service, destination)`. Called right after the pass that took them
    /// out of the selection, so no new connection can land on them again.
    fn reset_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<ConnectionReset>, KernelError>;
    /// Active (TCP ESTABLISHED) connections of each `(service, destination)`
    /// as `ipvsadm` counts `ActiveConn`: when a real server removed from
    /// the config has none left, it is deleted.
    fn active_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<u64>, KernelError>;
}

/// What [`Dataplane::reset_connections`] did for one real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionReset {
    /// nftables: this many conntrack entries were deleted over ctnetlink.
    /// The client's next segment finds no state, is picked up as a new
    /// flow (`nf_conntrack_tcp_loose = 1`), goes through the service's
    /// selection to a live real server, which has no such connection and
    /// answers with a reset; the reset travels back through the new entry's
    /// NAT, so the client sees it from the VIP and fails at once.
    Deleted(usize),
    /// IPVS: the destination was removed and `net.ipv4.vs.expire_nodest_conn
    /// = 1` (set at every pass). Since Linux 5.9 removing a destination
    /// then queues a sweep that expires every connection to it at once
    /// (ip_vs_conn.c, `ip_vs_expire_nodest_conn_flush`); older kernels
    /// expire each one when its next packet arrives (ipvs-sysctl.rst,
    /// `expire_nodest_conn`), dropping that packet. Expiring an entry drops
    /// its conntrack entry too (`vs.conntrack = 1`), so the client's next
    /// segment finds no IPVS connection, is not scheduled (it is no SYN)
    /// and reaches the director's own stack, which resets it. IPVS has no
    /// netlink command to delete connection entries, so there is no count.
    KernelExpires,
}

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionReset::Deleted(n) => write!(f, "{n} conntrack entries deleted"),
            ConnectionReset::KernelExpires => {
                f.write_str("expired by IPVS (destination removed, expire_nodest_conn = 1)")
            }
        }
    }
}

/// The IPVS dataplane: services in IPVS, SNAT and forward rules in nftables.
pub struct IpvsDataplane<K> {
    reconciler: Reconciler<K>,
    /// The nftables side (`[[snat]]`, forward accepts); `None` in tests and
    /// on hosts where nftables cannot be driven (then `[[snat]]` is an error
    /// reported by every pass).
    nat_rules: Option<Box<dyn Dataplane>>,
    /// A pass ran the sync daemons (`PassInput::sync_daemon` was set) and
    /// they have not been stopped since.
    runs_sync_daemons: bool,
}

impl<K: IpvsKernel + Send> IpvsDataplane<K> {
    pub fn new(kernel: K, nat_rules: Option<Box<dyn Dataplane>>) -> Self {
        IpvsDataplane {
            reconciler: Reconciler::new(kernel),
            nat_rules,
            runs_sync_daemons: false,
        }
    }

    pub fn kernel(&mut self) -> &mut K {
        &mut self.reconciler.kernel
    }
}

impl<K: IpvsKernel + Send> Dataplane for IpvsDataplane<K> {
    fn kind(&self) -> DataplaneKind {
        DataplaneKind::Ipvs
    }

    fn pass(&mut self, input: &PassInput<'_>) -> PassReport {
        let mut report = self
            .reconciler
            .pass(input.desired, input.exclusive, input.timeouts);
        if let Some(want) = input.sync_daemon {
            let out = crate::ipvs_sync::ensure(&mut self.reconciler.kernel, want);
            report.repairs.extend(out.changes);
            report.sync_daemon_errors.extend(out.errors);
            self.runs_sync_daemons = true;
        } else if self.runs_sync_daemons {
            let out = crate::ipvs_sync::stop_all(&mut self.reconciler.kernel);
            // Retried at the next pass until the kernel runs none.
            self.runs_sync_daemons = !out.errors.is_empty();
            report.repairs.extend(out.changes);
            report.sync_daemon_errors.extend(out.errors);
        }
        match &mut self.nat_rules {
            Some(nat) => {
                let nat_report = nat.pass(input);
                report.repairs.extend(nat_report.repairs);
                report.nat_errors.extend(nat_report.nat_errors);
                report.nat_errors.extend(nat_report.dump_error);
                report
                    .nat_errors
                    .extend(nat_report.failed.into_iter().map(|f| f.error));
            }
            None if !input.snat.is_empty() => report.nat_errors.push(
                "[[snat]] is configured but nftables cannot be driven on this host (is `nft` installed?)"
                    .to_string(),
            ),
            None => {}
        }
        report
    }

    fn status(&mut self) -> Result<DataplaneStatus, KernelError> {
        let k = &mut self.reconciler.kernel;
        let table = k.dump()?;
        Ok(DataplaneStatus {
            table,
            timeouts: k.timeouts().ok(),
            sync_daemons: k.sync_daemons().unwrap_or_default(),
        })
    }

    fn table(&mut self) -> Result<KernelTable, KernelError> {
        self.reconciler.kernel.dump()
    }

    /// Nothing to send: the pass removed the destinations and the sysctls
    /// hold `expire_nodest_conn = 1`; see [`ConnectionReset::KernelExpires`].
    /// (The config refuses, on IPVS, `on_down = "inhibit"` with `"reset"`,
    /// where a weight-0 destination stays available and its connections
    /// live on, and `"remove"` with `"keep"`, whose connections the kernel
    /// expires all the same.)
    fn reset_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<ConnectionReset>, KernelError> {
        Ok(vec![ConnectionReset::KernelExpires; targets.len()])
    }

    /// From one dump: each destination's `ActiveConn` (0 when it is gone).
    fn active_connections(
        &mut self,
        targets: &[(ServiceKey, DestKey)],
    ) -> Result<Vec<u64>, KernelError> {
        let table = self.reconciler.kernel.dump()?;
        Ok(active_in_table(&table, targets))
    }
}

/// `ActiveConn` of each `(service, destination)` in a dump; 0 for one the
/// table does not have.
pub fn active_in_table(table: &KernelTable, targets: &[(ServiceKey, DestKey)]) -> Vec<u64> {
    targets
        .iter()
        .map(|(s, d)| {
            table
                .services
                .iter()
                .filter(|ks| ks.service.key == *s)
                .flat_map(|ks| &ks.dests)
                .filter(|kd| kd.dest.key == *d)
                .map(|kd| u64::from(kd.active_conns))
                .sum()
        })
        .collect()
}

/// Resolves `global.dataplane`: `auto` takes IPVS when `ipvs_available`
/// (the "IPVS" generic-netlink family exists), else nftables.
pub fn choose(choice: DataplaneChoice, ipvs_available: bool) -> DataplaneKind {
    match choice {
        DataplaneChoice::Ipvs => DataplaneKind::Ipvs,
        DataplaneChoice::Nftables => DataplaneKind::Nftables,
        DataplaneChoice::Auto if ipvs_available => DataplaneKind::Ipvs,
        DataplaneChoice::Auto => DataplaneKind::Nftables,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removing the `ipvs_sync_*` keys on reload stops the daemons the
    /// director ran, once; daemons it never ran are left alone.
    #[test]
    fn sync_daemons_stop_when_their_keys_are_removed() {
        use crate::kernel::fake::FakeIpvs;
        use crate::model::{SyncDaemon, SyncRole};
        let want = crate::ipvs_sync::wanted(
            &crate::config::IpvsSync {
                interface: "eth2".into(),
                syncid: 7,
            },
            SyncRole::Master,
        );
        fn input<'a>(
            desired: &'a DesiredTable,
            sync_daemon: Option<&'a SyncDaemon>,
        ) -> PassInput<'a> {
            PassInput {
                desired,
                snat: &[],
                exclusive: false,
                timeouts: None,
                sync_daemon,
            }
        }
        let d = DesiredTable::default();
        // Someone else's daemon, without keys: left alone.
        let mut k = FakeIpvs::new();
        k.daemons = vec![want.clone()];
        let mut dp = IpvsDataplane::new(k, None);
        let r = dp.pass(&input(&d, None));
        assert!(r.sync_daemon_errors.is_empty(), "{r:?}");
        assert_eq!(dp.kernel().daemons.len(), 1, "not ours: left alone");
        // With the keys it is ours; a reload removes them: stopped, once.
        dp.pass(&input(&d, Some(&want)));
        assert_eq!(dp.kernel().daemons.len(), 1);
        let r = dp.pass(&input(&d, None));
        assert!(r.sync_daemon_errors.is_empty(), "{r:?}");
        assert!(dp.kernel().daemons.is_empty());
        assert!(
            r.repairs.iter().any(|c| c.contains("keys removed")),
            "{:?}",
            r.repairs
        );
        // Started by hand afterwards: left alone again.
        dp.kernel().daemons.push(want.clone());
        dp.pass(&input(&d, None));
        assert_eq!(dp.kernel().daemons.len(), 1);
    }

    #[test]
    fn auto_prefers_ipvs_and_falls_back_to_nftables() {
        assert_eq!(choose(DataplaneChoice::Auto, true), DataplaneKind::Ipvs);
        assert_eq!(
            choose(DataplaneChoice::Auto, false),
            DataplaneKind::Nftables
        );
        assert_eq!(choose(DataplaneChoice::Ipvs, false), DataplaneKind::Ipvs);
        assert_eq!(
            choose(DataplaneChoice::Nftables, true),
            DataplaneKind::Nftables
        );
    }
}
