//! Level-triggered reconcile: desired table vs one fresh kernel dump.
//!
//! [`diff`] is a pure function from (desired, dump) to the minimal list of
//! [`IpvsOp`]s; it is property-tested below: applying the ops to the dump
//! with kernel semantics yields the desired table, touches nothing the
//! director does not own (unless `exclusive`), and a second diff is empty.
//!
//! Startup needs no special case: a service already in the kernel with the
//! desired settings produces no op at all, so it is adopted in place and its
//! counters and connection entries survive a daemon restart (no flush, ever).
//!
//! [`Reconciler::pass`] runs one dump -> diff -> apply cycle against any
//! [`IpvsKernel`]. `EEXIST`, `ENOENT` and `ESRCH` mean someone changed the
//! table between our dump and our write: they are reconcile signals (the
//! pass asks to be re-run), not errors. Anything else is an error that names
//! the service and the op; the rest of the diff is still applied and the
//! next pass retries.

use crate::desired::DesiredTable;
use crate::kernel::{IpvsKernel, KernelError};
use crate::model::{IpvsOp, KernelTable, ServiceKey, Timeouts};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The minimal ops that turn `kernel` into `desired` for owned services.
///
/// Order matters for traffic, not for correctness: services are created or
/// edited first, then new destinations are added before old ones are
/// removed, so a service being re-pointed is never momentarily empty.
/// Services that are not desired are deleted last, and only when
/// `exclusive` is set (otherwise they belong to someone else: an operator's
/// `ipvsadm`, another tool).
pub fn diff(desired: &DesiredTable, kernel: &KernelTable, exclusive: bool) -> Vec<IpvsOp> {
    let in_kernel: BTreeMap<ServiceKey, &crate::model::KernelService> =
        kernel.services.iter().map(|s| (s.service.key, s)).collect();

    let mut service_ops = Vec::new();
    let mut add_dests = Vec::new();
    let mut edit_dests = Vec::new();
    let mut del_dests = Vec::new();

    for (key, want) in &desired.services {
        match in_kernel.get(key) {
            None => {
                service_ops.push(IpvsOp::AddService(want.service.clone()));
                for (dk, ds) in &want.dests {
                    add_dests.push(IpvsOp::AddDest {
                        service: *key,
                        dest: crate::model::Destination {
                            key: *dk,
                            settings: *ds,
                        },
                    });
                }
            }
            Some(have) => {
                if have.service.settings != want.service.settings {
                    service_ops.push(IpvsOp::EditService(want.service.clone()));
                }
                let mut seen = BTreeSet::new();
                for kd in &have.dests {
                    let dk = kd.dest.key;
                    seen.insert(dk);
                    match want.dests.get(&dk) {
                        None => del_dests.push(IpvsOp::DelDest {
                            service: *key,
                            dest: dk,
                        }),
                        Some(ds) if *ds != kd.dest.settings => edit_dests.push(IpvsOp::EditDest {
                            service: *key,
                            dest: crate::model::Destination {
                                key: dk,
                                settings: *ds,
                            },
                        }),
                        Some(_) => {}
                    }
                }
                for (dk, ds) in &want.dests {
                    if !seen.contains(dk) {
                        add_dests.push(IpvsOp::AddDest {
                            service: *key,
                            dest: crate::model::Destination {
                                key: *dk,
                                settings: *ds,
                            },
                        });
                    }
                }
            }
        }
    }

    let mut ops = service_ops;
    ops.append(&mut add_dests);
    ops.append(&mut edit_dests);
    ops.append(&mut del_dests);
    if exclusive {
        for key in in_kernel.keys() {
            if !desired.services.contains_key(key) {
                ops.push(IpvsOp::DelService(*key));
            }
        }
    }
    ops
}

/// The timeouts to set, if the config asks for some that differ.
pub fn diff_timeouts(want: Option<Timeouts>, have: Timeouts) -> Option<Timeouts> {
    let want = want?;
    let differs = |w: u32, h: u32| w != 0 && w != h;
    (differs(want.tcp, have.tcp)
        || differs(want.tcp_fin, have.tcp_fin)
        || differs(want.udp, have.udp))
    .then_some(want)
}

/// A refused op, named for logs, metrics and `directorctl`.
#[derive(Debug, Clone, Serialize)]
pub struct OpFailure {
    pub op: IpvsOp,
    /// The owning virtual server's name, when the director owns it.
    pub service_name: Option<String>,
    pub error: String,
    pub errno: Option<i32>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// The dump failed: nothing was applied.
    pub dump_error: Option<String>,
    pub applied: Vec<IpvsOp>,
    pub failed: Vec<OpFailure>,
    /// EEXIST/ENOENT/ESRCH: the table moved under us; run again.
    pub conflicts: Vec<OpFailure>,
    pub timeouts_set: Option<Timeouts>,
    pub timeouts_error: Option<String>,
    /// Changes below the service model that a pass made: a restored nft map
    /// element or rule, a SNAT rule, a sysctl. One human line each.
    pub repairs: Vec<String>,
    /// Failures of the nftables side (SNAT and forward rules on IPVS, or the
    /// whole table on nftables) that are not tied to one op.
    pub nat_errors: Vec<String>,
    /// Failures starting, stopping or reading the IPVS sync daemons
    /// (`crate::ipvs_sync`); their changes are in `repairs`.
    pub sync_daemon_errors: Vec<String>,
    /// The dump the pass started from (stats for metrics and status).
    #[serde(skip)]
    pub dump: Option<KernelTable>,
}

impl PassReport {
    pub fn changed(&self) -> bool {
        !self.applied.is_empty() || !self.repairs.is_empty()
    }
    pub fn wants_rerun(&self) -> bool {
        !self.conflicts.is_empty()
    }
}

/// Whether a refusal only says the table moved between our dump and our
/// write (net/netfilter/ipvs/ip_vs_ctl.c: a missing service is `ESRCH`, an
/// existing one `EEXIST`, a missing destination `ENOENT`). On a service add
/// or edit, `ENOENT` means the scheduler or persistence-engine module does
/// not exist: a real error, not a signal.
fn is_signal(op: &IpvsOp, e: &KernelError) -> bool {
    let Some(errno) = e.errno() else { return false };
    match op {
        IpvsOp::AddService(_) => errno == libc::EEXIST,
        IpvsOp::EditService(_) | IpvsOp::DelService(_) => errno == libc::ESRCH,
        IpvsOp::AddDest { .. } => errno == libc::EEXIST || errno == libc::ESRCH,
        IpvsOp::EditDest { .. } | IpvsOp::DelDest { .. } => {
            errno == libc::ENOENT || errno == libc::ESRCH
        }
    }
}

/// Drives passes against a kernel.
pub struct Reconciler<K> {
    pub kernel: K,
}

impl<K: IpvsKernel> Reconciler<K> {
    pub fn new(kernel: K) -> Self {
        Reconciler { kernel }
    }

    /// One level-triggered pass: dump, diff, apply.
    pub fn pass(
        &mut self,
        desired: &DesiredTable,
        exclusive: bool,
        timeouts: Option<Timeouts>,
    ) -> PassReport {
        let mut report = PassReport::default();
        let dump = match self.kernel.dump() {
            Ok(d) => d,
            Err(e) => {
                report.dump_error = Some(e.to_string());
                return report;
            }
        };
        let ops = diff(desired, &dump, exclusive);
        if !ops.is_empty() {
            let results = self.kernel.apply(&ops);
            for (op, result) in ops.into_iter().zip(results) {
                match result {
                    Ok(()) => report.applied.push(op),
                    Err(e) => {
                        let signal = is_signal(&op, &e);
                        let failure = OpFailure {
                            service_name: desired.name_of(&op.service_key()).map(str::to_string),
                            errno: e.errno(),
                            error: e.to_string(),
                            op,
                        };
                        if signal {
                            report.conflicts.push(failure);
                        } else {
                            report.failed.push(failure);
                        }
                    }
                }
            }
        }
        if timeouts.is_some() {
            match self.kernel.timeouts() {
                Ok(have) => {
                    if let Some(t) = diff_timeouts(timeouts, have) {
                        match self.kernel.set_timeouts(t) {
                            Ok(()) => report.timeouts_set = Some(t),
                            Err(e) => report.timeouts_error = Some(e.to_string()),
                        }
                    }
                }
                Err(e) => report.timeouts_error = Some(e.to_string()),
            }
        }
        report.dump = Some(dump);
        report
    }
}

#[cfg(test)]
mod tests;
