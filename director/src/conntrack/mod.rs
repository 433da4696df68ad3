//! Conntrack over ctnetlink (`include/uapi/linux/netfilter/
//! nfnetlink_conntrack.h`): read the kernel's connection tracking table,
//! create and delete entries. Used by `directorctl status` on the nftables
//! dataplane (connection counts, [`summary`]) and by conntrack replication
//! (ctsync writes the master's entries on the backup with [`ConntrackSocket::create`]).
//!
//! Map:
//! - [`codec`]: pure encode/decode between [`Conntrack`] and ctnetlink
//!   messages. View + validated repr; never panics on kernel input; unknown
//!   attributes kept; layout diagram at the top.
//! - `nl` (= `crate::netlink`): the shared, bounds-checked netlink framing.
//! - [`ConntrackSocket`] (`socket`): blocking dump / create / delete with a
//!   typed [`ConntrackError`] that says whose fault a failure is, and
//!   [`ConntrackSocket::batch`]: many create / upsert / update / delete /
//!   get requests per `sendmsg`, each answer mapped back to its request
//!   by sequence number.
//! - [`events`]: [`EventSocket`], the NEW / UPDATE / DESTROY events with
//!   the port id of the writer that caused them, overruns reported.
//! - [`summary`]: entries -> IPVS-style active/inactive counts.
//! - `tests`: round trips, garbage/truncation, proptest, and comparison with
//!   real conntrack CLI traffic in `testdata/conntrack.txt` (recorded in a
//!   netns by `testdata/capture.sh` with strace hex dumps; the CLI's own
//!   output is in the same file).
//! - `netns_tests`: the real socket against the running kernel, each test
//!   in a network namespace of its own (root only; skipped otherwise).
//!
//! What the captures showed about the kernel (6.x) and conntrack-tools
//! 1.4.7: every integer attribute is big endian without
//! NLA_F_NET_BYTEORDER, every nest has NLA_F_NESTED; a dump entry is
//! ORIG, REPLY, [ZONE], STATUS, MARK, ID, USE, TIMEOUT, [PROTOINFO],
//! [COUNTERS_ORIG, COUNTERS_REPLY], then CTA_SYNPROXY for entries created
//! over netlink; the CLI's NEW carries the tuples, status, timeout, mark,
//! protoinfo and zone, with NLM_F_CREATE|NLM_F_EXCL|NLM_F_ACK.

pub mod codec;
pub mod events;
use crate::netlink as nl;
mod socket;
pub mod summary;

pub use codec::{
    AttrSet, Conntrack, Counters, DecodeError, EncodeError, Family, Icmp, NatRange, RawAttr,
    SeqAdj, TcpFlags, TcpInfo, TcpState, Timestamp, Tuple,
};
pub use events::{CtEvent, EventBatch, EventKind, EventSocket};
pub use socket::{
    errno_of, refusal, Answer, BatchAcks, ConntrackError, ConntrackSocket, Request, ACK_RCVBUF,
    BATCH_BYTES,
};
pub use summary::{flow_counts, flow_summary, FlowCount, FlowSummary};

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod tests;
