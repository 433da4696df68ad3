//! An in-memory IPVS table with the kernel's error semantics
//! (net/netfilter/ipvs/ip_vs_ctl.c): adding what exists is `EEXIST`, a
//! service that is not there is `ESRCH`, a destination that is not there is
//! `ENOENT`, an unknown scheduler is `ENOENT`, a negative weight or a lower
//! threshold above the upper one is `EINVAL`. Every call is recorded so tests
//! can assert on exactly what reached "the kernel".

use super::{IpvsKernel, KernelError};
use crate::model::*;

/// Schedulers the stock kernel ships (`ip_vs_*.ko`).
pub const KERNEL_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

const EEXIST: i32 = libc::EEXIST;
const ESRCH: i32 = libc::ESRCH;
const ENOENT: i32 = libc::ENOENT;
const EINVAL: i32 = libc::EINVAL;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Dump,
    Apply(Vec<IpvsOp>),
    Flush,
    SetTimeouts(Timeouts),
    StartSync(SyncDaemon),
    StopSync(SyncDaemon),
}

#[derive(Debug, Clone)]
pub struct FakeIpvs {
    pub table: KernelTable,
    pub timeouts: Timeouts,
    pub daemons: Vec<SyncDaemon>,
    pub calls: Vec<Call>,
    /// When false, behaves like a kernel without IPVS.
    pub available: bool,
}

impl Default for FakeIpvs {
    fn default() -> Self {
        FakeIpvs {
            table: KernelTable {
                info: IpvsInfo {
                    version: 0x010201,
                    conn_tab_size: 4096,
                },
                services: Vec::new(),
            },
            timeouts: Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            },
            daemons: Vec::new(),
            calls: Vec::new(),
            available: true,
        }
    }
}

fn refused(op: &IpvsOp, errno: i32) -> KernelError {
    KernelError::Refused {
        what: op.to_string(),
        errno,
        message: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

fn check_dest(d: &DestSettings) -> bool {
    d.weight >= 0 && !(d.upper_threshold != 0 && d.lower_threshold > d.upper_threshold)
}

impl FakeIpvs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one op to `table` with kernel semantics. Public so property
    /// tests can apply a diff to a dump without going through `IpvsKernel`.
    pub fn apply_one(table: &mut KernelTable, op: &IpvsOp) -> Result<(), KernelError> {
        let find =
            |t: &KernelTable, k: &ServiceKey| t.services.iter().position(|s| s.service.key == *k);
        match op {
            IpvsOp::AddService(s) => {
                if find(table, &s.key).is_some() {
                    return Err(refused(op, EEXIST));
                }
                if !KERNEL_SCHEDULERS.contains(&s.settings.scheduler.as_str()) {
                    return Err(refused(op, ENOENT));
                }
                table.services.push(KernelService {
                    service: s.clone(),
                    stats: Stats::default(),
                    dests: Vec::new(),
                });
            }
            IpvsOp::EditService(s) => {
                let Some(i) = find(table, &s.key) else {
                    return Err(refused(op, ESRCH));
                };
                if !KERNEL_SCHEDULERS.contains(&s.settings.scheduler.as_str()) {
                    return Err(refused(op, ENOENT));
                }
                table.services[i].service.settings = s.settings.clone();
            }
            IpvsOp::DelService(k) => {
                let Some(i) = find(table, k) else {
                    return Err(refused(op, ESRCH));
                };
                table.services.remove(i);
            }
            IpvsOp::AddDest { service, dest } => {
                let Some(i) = find(table, service) else {
                    return Err(refused(op, ESRCH));
                };
                if !check_dest(&dest.settings) {
                    return Err(refused(op, EINVAL));
                }
                let dests = &mut table.services[i].dests;
                if dests.iter().any(|d| d.dest.key == dest.key) {
                    return Err(refused(op, EEXIST));
                }
                dests.push(KernelDest {
                    dest: *dest,
                    active_conns: 0,
                    inactive_conns: 0,
                    persist_conns: 0,
                    stats: Stats::default(),
                });
            }
            IpvsOp::EditDest { service, dest } => {
                let Some(i) = find(table, service) else {
                    return Err(refused(op, ESRCH));
                };
                if !check_dest(&dest.settings) {
                    return Err(refused(op, EINVAL));
                }
                let Some(d) = table.services[i]
                    .dests
                    .iter_mut()
                    .find(|d| d.dest.key == dest.key)
                else {
                    return Err(refused(op, ENOENT));
                };
                d.dest.settings = dest.settings;
            }
            IpvsOp::DelDest { service, dest } => {
                let Some(i) = find(table, service) else {
                    return Err(refused(op, ESRCH));
                };
                let dests = &mut table.services[i].dests;
                let Some(j) = dests.iter().position(|d| d.dest.key == *dest) else {
                    return Err(refused(op, ENOENT));
                };
                dests.remove(j);
            }
        }
        Ok(())
    }

    fn ensure(&self) -> Result<(), KernelError> {
        if self.available {
            Ok(())
        } else {
            Err(KernelError::Unavailable)
        }
    }
}

impl IpvsKernel for FakeIpvs {
    fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        self.ensure()?;
        Ok(self.table.info)
    }
    fn dump(&mut self) -> Result<KernelTable, KernelError> {
        self.ensure()?;
        self.calls.push(Call::Dump);
        Ok(self.table.clone())
    }
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        if let Err(e) = self.ensure() {
            return ops.iter().map(|_| Err(e.clone())).collect();
        }
        self.calls.push(Call::Apply(ops.to_vec()));
        ops.iter()
            .map(|op| Self::apply_one(&mut self.table, op))
            .collect()
    }
    fn flush(&mut self) -> Result<(), KernelError> {
        self.ensure()?;
        self.calls.push(Call::Flush);
        self.table.services.clear();
        Ok(())
    }
    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        self.ensure()?;
        Ok(self.timeouts)
    }
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        self.ensure()?;
        self.calls.push(Call::SetTimeouts(t));
        // ipvsadm --set: a zero leaves that timeout as it was.
        if t.tcp != 0 {
            self.timeouts.tcp = t.tcp;
        }
        if t.tcp_fin != 0 {
            self.timeouts.tcp_fin = t.tcp_fin;
        }
        if t.udp != 0 {
            self.timeouts.udp = t.udp;
        }
        Ok(())
    }
    fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, KernelError> {
        self.ensure()?;
        Ok(self.daemons.clone())
    }
    fn start_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        self.ensure()?;
        self.calls.push(Call::StartSync(d.clone()));
        if self.daemons.iter().any(|x| x.role == d.role) {
            return Err(KernelError::Refused {
                what: format!("start {:?} sync daemon", d.role),
                errno: EEXIST,
                message: "File exists".into(),
            });
        }
        self.daemons.push(d.clone());
        Ok(())
    }
    fn stop_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        self.ensure()?;
        self.calls.push(Call::StopSync(d.clone()));
        let before = self.daemons.len();
        self.daemons.retain(|x| x.role != d.role);
        if self.daemons.len() == before {
            return Err(KernelError::Refused {
                what: format!("stop {:?} sync daemon", d.role),
                errno: ESRCH,
                message: "No such process".into(),
            });
        }
        Ok(())
    }
}
