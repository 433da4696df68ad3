//! [`RecordingAddresses`]: the [`Addresses`] trait in memory, for tests of
//! the logic that decides which VIPs go where. It keeps what the kernel
//! would hold, with the kernel's identity rules (see `codec`), and records
//! every call as an [`AddrOp`] (serde, so a test can compare JSON lines).

use super::{Addresses, RtnlError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

/// One call made on a [`RecordingAddresses`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AddrOp {
    Add {
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    },
    Delete {
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    },
    List {
        ifindex: u32,
    },
}

/// The recording fake. Interfaces exist once something was added to them
/// or they were named with [`RecordingAddresses::with_interface`]; only
/// then does `list` answer (else `NoSuchInterface`, as the kernel would).
#[derive(Debug, Default)]
pub struct RecordingAddresses {
    /// Every call, in order (including those answered with an error).
    pub ops: Vec<AddrOp>,
    /// What the "kernel" holds, per interface index, in insertion order.
    pub state: BTreeMap<u32, Vec<(IpAddr, u8)>>,
    /// Errors to answer the next calls with, first in first out (the call
    /// is recorded but has no effect).
    pub fail: VecDeque<RtnlError>,
}

impl RecordingAddresses {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares interface `ifindex` (with no addresses).
    pub fn with_interface(mut self, ifindex: u32) -> Self {
        self.state.entry(ifindex).or_default();
        self
    }

    /// The next call fails with `e`.
    pub fn fail_next(&mut self, e: RtnlError) {
        self.fail.push_back(e);
    }

    /// The operations recorded so far, and forget them.
    pub fn take_ops(&mut self) -> Vec<AddrOp> {
        std::mem::take(&mut self.ops)
    }

    fn record(&mut self, op: AddrOp) -> Result<(), RtnlError> {
        self.ops.push(op);
        match self.fail.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn check(addr: IpAddr, prefix_len: u8, ifindex: u32, verb: &str) -> Result<(), RtnlError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(RtnlError::Invalid {
            what: format!("{verb} {addr}/{prefix_len} on interface index {ifindex}"),
            why: format!("prefix length {prefix_len} is longer than the {max} bits of {addr}"),
        });
    }
    Ok(())
}

impl Addresses for RecordingAddresses {
    fn add(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
        self.record(AddrOp::Add {
            ifindex,
            addr,
            prefix_len,
        })?;
        check(addr, prefix_len, ifindex, "adding")?;
        let list = self.state.entry(ifindex).or_default();
        // The kernel's identity: IPv4 (address, prefix length), IPv6 the
        // address alone (a REPLACE with another length keeps the old one).
        let present = list
            .iter()
            .any(|&(a, l)| a == addr && (addr.is_ipv6() || l == prefix_len));
        if !present {
            list.push((addr, prefix_len));
        }
        Ok(())
    }

    fn delete(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
        self.record(AddrOp::Delete {
            ifindex,
            addr,
            prefix_len,
        })?;
        check(addr, prefix_len, ifindex, "deleting")?;
        // Both families delete only with the matching prefix length; not
        // there (or no such interface) is success.
        if let Some(list) = self.state.get_mut(&ifindex) {
            list.retain(|&(a, l)| !(a == addr && l == prefix_len));
        }
        Ok(())
    }

    fn list(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, RtnlError> {
        self.record(AddrOp::List { ifindex })?;
        self.state
            .get(&ifindex)
            .cloned()
            .ok_or_else(|| RtnlError::NoSuchInterface {
                what: format!("listing the addresses of interface index {ifindex}"),
                interface: format!("index {ifindex}"),
            })
    }
}
