//! The seam between decisions and the kernel's IPVS table.
//!
//! The reconciler only ever talks to an [`IpvsKernel`]; the real one speaks
//! generic netlink (`crate::ipvs`), the [`fake::FakeIpvs`] one keeps the
//! table in memory with the kernel's EEXIST/ENOENT semantics and records every
//! op, so all of the logic above it is tested without root or IPVS.

use crate::model::{IpvsInfo, IpvsOp, KernelTable, SyncDaemon, Timeouts};
use thiserror::Error;

/// Who is at fault when a kernel call fails, and how to treat it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// The "IPVS" generic netlink family is not registered: no `ip_vs`
    /// module in this kernel (or it is not loaded and cannot be).
    #[error("the kernel has no IPVS (generic netlink family \"IPVS\" not found; is the ip_vs module available?)")]
    Unavailable,
    /// The kernel refused a request with an errno.
    #[error("kernel refused {what}: {message} (errno {errno})")]
    Refused {
        what: String,
        errno: i32,
        message: String,
    },
    /// The kernel sent something we cannot decode (never a panic).
    #[error("cannot decode kernel reply to {what}: {detail}")]
    Decode { what: String, detail: String },
    /// The netlink socket itself failed.
    #[error("netlink socket error during {what}: {detail}")]
    Io { what: String, detail: String },
}

impl KernelError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Everything the director does to the IPVS table.
pub trait IpvsKernel {
    fn info(&mut self) -> Result<IpvsInfo, KernelError>;
    /// One consistent-enough dump: all services, each with its destinations.
    fn dump(&mut self) -> Result<KernelTable, KernelError>;
    /// Applies `ops` in order and returns one result per op. A refused op
    /// does not stop the ones after it (the reconciler decides what a
    /// failure means; the next pass retries).
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>>;
    /// `ipvsadm -C`.
    fn flush(&mut self) -> Result<(), KernelError>;
    fn timeouts(&mut self) -> Result<Timeouts, KernelError>;
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError>;
    fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, KernelError>;
    fn start_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError>;
    fn stop_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError>;
}

pub mod fake;

/// A borrowed kernel is a kernel: lets a test keep the fake while a
/// short-lived `Reconciler` (a "daemon process") uses it.
impl<K: IpvsKernel + ?Sized> IpvsKernel for &mut K {
    fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        (**self).info()
    }
    fn dump(&mut self) -> Result<KernelTable, KernelError> {
        (**self).dump()
    }
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        (**self).apply(ops)
    }
    fn flush(&mut self) -> Result<(), KernelError> {
        (**self).flush()
    }
    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        (**self).timeouts()
    }
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        (**self).set_timeouts(t)
    }
    fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, KernelError> {
        (**self).sync_daemons()
    }
    fn start_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        (**self).start_sync_daemon(d)
    }
    fn stop_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        (**self).stop_sync_daemon(d)
    }
}
