//! The IPVS executor: programs the kernel's IP Virtual Server table over the
//! "IPVS" generic netlink family (`/usr/include/linux/ip_vs.h`).
//!
//! Map:
//! - [`codec`]: pure encode/decode between `crate::model` and IPVS messages
//!   (requests, dump replies, info, timeouts, sync daemons). View + validated
//!   repr; never panics on kernel input; every layout has its ip_vs.h diagram.
//! - `nl` (= `crate::netlink`): the shared netlink framing (headers,
//!   attributes, NLMSG_ERROR with extended ack), bounds-checked by hand.
//! - [`IpvsSocket`] (`socket`): the real [`crate::kernel::IpvsKernel`].
//! - `tests`: round trips, garbage/truncation, proptest, and byte-level
//!   comparison with real ipvsadm traffic in `testdata/ipvsadm.txt`
//!   (recorded over nlmon in the kernel lab by `testdata/capture.sh`,
//!   cut per command by `testdata/extract.py`).
//! - `lab`: `#[ignore]`d tests of the real socket against a real IPVS kernel
//!   (run in the kernel lab; they fail when IPVS is absent).
//!
//! What the captures showed about the kernel's (6.1) and ipvsadm's (1.31)
//! encoding: libnl marks request nests `NLA_F_NESTED`, the kernel's dump
//! replies do not; `IPVS_SVC_ATTR_NETMASK` is the IPv4 mask in network
//! order but the IPv6 prefix length in host order; dumps carry both STATS and
//! STATS64; destinations are listed newest first; ipvsadm always sends the
//! TUN_* attributes, the full service with every destination command, and
//! opens one socket per request (all with the same sequence number).
//!
//! Why pipelining. `ipvsadm -R` (libipvs over libnl) does one sendmsg and
//! waits for one ACK per rule, so a cold start of 5,000 services x 4
//! destinations is 25,000 round trips through the scheduler. Generic
//! netlink handles every message of a sendmsg synchronously and in order, so
//! [`IpvsSocket`] packs a window of requests (distinct sequence numbers) into
//! one send and maps each NLMSG_ERROR back to its op by sequence number. Only
//! the last request of a window asks for an ACK: failures are always
//! answered, successes are silent, and the final ACK says the window is done.
//! The window is sized from the socket's receive buffer so that a window of
//! failures cannot overrun it (an overrun would lose errors). A refused op
//! does not stop the others: one result per op, as `IpvsKernel::apply`
//! requires.
//!
//! Dumps cannot be pipelined on one socket (a second dump request while one
//! runs gets EBUSY), so `dump()` is GET_INFO, one GET_SERVICE dump and one
//! small GET_DEST dump per service, each a sendmsg plus two recvmsg.

pub mod codec;
use crate::netlink as nl;
mod socket;

pub use socket::{AckMode, IpvsSocket};

#[cfg(test)]
mod lab;
#[cfg(test)]
mod tests;
