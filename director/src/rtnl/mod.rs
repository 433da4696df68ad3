//! rtnetlink (NETLINK_ROUTE) for what VRRP needs from the kernel: the
//! virtual IPs on an interface, and whether the tracked interfaces are up.
//! The VRRP driver decides; this module only applies (DESIGN.md principle
//! 2) and reports.
//!
//! Map:
//! - [`Addresses`]: add / delete / list the addresses of an interface, as a
//!   trait with the real [`RtnlSocket`] and the recording fake
//!   [`RecordingAddresses`] (the state the kernel would hold, plus every
//!   call as an [`AddrOp`]).
//! - [`ifindex`] / [`RtnlSocket::ifindex`]: interface name -> index
//!   (RTM_GETLINK by IFLA_IFNAME).
//! - [`LinkWatch`]: link up/down events (group RTNLGRP_LINK) as
//!   [`LinkEvent`]s, plus a [`LinkWatch::snapshot`] (an RTM_GETLINK dump),
//!   for keepalived's `track_interface`.
//! - `codec`: the byte layouts (`struct ifaddrmsg`, `struct ifinfomsg`),
//!   encode and decode, pure; `nl` (= `crate::netlink`) the shared framing.
//! - `tests`: bytes pinned against what iproute2 sends (`testdata/rtnl.txt`,
//!   recorded by `testdata/capture.sh` with strace), hostile input, the
//!   fake; `netns_tests`: the real sockets in a network namespace of their
//!   own (root only).
//!
//! Reconcile semantics (DESIGN.md principle 3): adding an address that is
//! there, and deleting one that is not (EADDRNOTAVAIL, or ENODEV: the
//! interface and so its addresses are gone), are successes. Callers
//! compare [`Addresses::list`] with what they want and apply the
//! difference; they never need to know whether an address was there.
//!
//! Sockets belong to the network namespace of the thread that opens them
//! (`open()`); `open_in_netns(name)` opens one inside `/run/netns/NAME` from
//! a short-lived thread, leaving the caller's namespace alone. Everything
//! is blocking and `Send`: a [`LinkWatch`] is meant to sit in
//! [`LinkWatch::next`] on a `std::thread` (or `spawn_blocking`) of its own.

mod codec;
mod fake;
mod socket;

use crate::netlink as nl;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::IpAddr;

pub use codec::{ifa_f, iff, AddrEntry};
pub use fake::{AddrOp, RecordingAddresses};
pub use socket::{ifindex, LinkWatch, RtnlSocket};

/// The addresses of interfaces, by index. Implemented over rtnetlink by
/// [`RtnlSocket`] and in memory by [`RecordingAddresses`].
pub trait Addresses: Send {
    /// Puts `addr/prefix_len` on interface `ifindex` (RTM_NEWADDR with
    /// NLM_F_CREATE | NLM_F_REPLACE). Already there: success. IPv6 is added
    /// with IFA_F_NODAD, usable at once (RFC 4862 DAD would hold a VIP back
    /// for a second or more after a failover). An IPv6 address that is
    /// there with another prefix length stays as it is (the kernel
    /// identifies IPv6 addresses without their prefix): delete it first.
    fn add(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError>;
    /// Removes `addr/prefix_len` from interface `ifindex` (RTM_DELADDR).
    /// Not there (also: there with another prefix length, or the interface
    /// is gone): success.
    fn delete(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError>;
    /// Every IPv4 and IPv6 address of interface `ifindex`, link-local ones
    /// included, in the kernel's order.
    fn list(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, RtnlError>;
}

/// A link's state, from an event or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkEvent {
    pub index: u32,
    pub name: String,
    /// `IFF_UP` and `IFF_RUNNING`: administratively up and operationally
    /// up (carrier), which is what keepalived's `track_interface` calls up
    /// (its `IF_ISUP`). A deleted link (RTM_DELLINK) is not up.
    pub up: bool,
}

/// What went wrong, and whose fault it is (the `Display` says so).
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// Our side: the socket could not be opened, sent on or read from.
    #[error("rtnetlink I/O failed while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (errno and its explanation).
    #[error("kernel refused {what}: {message} (errno {errno})")]
    Refused {
        what: String,
        errno: i32,
        message: String,
    },
    /// The interface does not exist (ENODEV): gone, or a wrong name in the
    /// configuration.
    #[error("no such interface {interface} while {what}")]
    NoSuchInterface { what: String, interface: String },
    /// The caller's request cannot be expressed (a prefix length longer
    /// than the address, an interface name longer than IFNAMSIZ).
    #[error("invalid request {what}: {why}")]
    Invalid { what: String, why: String },
    /// The kernel sent something we cannot parse (kernel or codec bug).
    #[error("malformed rtnetlink reply while {what}: {detail}")]
    Decode { what: String, detail: String },
    /// The table kept changing under a dump (NLM_F_DUMP_INTR every time).
    #[error("rtnetlink dump interrupted by changes {attempts} times in a row while {what}")]
    DumpInterrupted { what: String, attempts: usize },
}

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod tests;
