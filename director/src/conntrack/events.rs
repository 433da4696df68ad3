//! [`EventSocket`]: the kernel's conntrack events (NEW / UPDATE /
//! DESTROY) on a NETLINK_NETFILTER socket of their own.
//!
//! ```text
//! include/uapi/linux/netfilter/nfnetlink.h enum nfnetlink_groups:
//!   NFNLGRP_CONNTRACK_NEW = 1, _UPDATE = 2, _DESTROY = 3
//! one event = nlmsghdr | nfgenmsg | the attributes of a dump entry
//!   nlmsg_type  = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW    new, update
//!                                          | IPCTNL_MSG_CT_DELETE  destroy
//!   nlmsg_flags = NLM_F_CREATE|NLM_F_EXCL for a new entry, 0 otherwise
//!   nlmsg_pid   = port id of the netlink socket whose request caused it
//! ```
//!
//! What the kernel does (net/netfilter/nf_conntrack_netlink.c,
//! `ctnetlink_conntrack_event`): the message type is DELETE for
//! IPCT_DESTROY; otherwise NEW, with `NLM_F_CREATE|NLM_F_EXCL` when the
//! event mask has IPCT_NEW or IPCT_RELATED, else no flags (an update).
//! The header is built by `nfnl_msg_put(skb, item->portid, ...)`, where
//! `item->portid` is what the caller of `nf_conntrack_eventmask_report()`
//! passed: `NETLINK_CB(skb).portid` of the request in
//! `ctnetlink_new_conntrack` (create and change) and, through
//! `nf_ct_delete(ct, portid, report)`, in `ctnetlink_del_conntrack`;
//! 0 for everything packets or timers cause. So an event whose
//! `nlmsg_pid` is the port id of our own request socket is the echo of
//! our own write (verified on 6.18 by the netns test
//! `events_of_our_own_writes_carry_our_portid`). The kernel only
//! excludes the writer from the multicast when the request had
//! NLM_F_ECHO (`nlmsg_notify`), which we never set: the echo arrives on
//! this (other) socket and has to be recognised by the port id.
//!
//! Overruns: when the socket's receive buffer is full the kernel drops
//! the event and the next `recv` fails with ENOBUFS (`netlink_overrun`).
//! That is reported as [`EventBatch::overrun`], never skipped: the
//! consumer must reconcile against a dump. The buffer is large
//! (SO_RCVBUFFORCE, [`DEFAULT_RCVBUF`]) so that a burst fits.

use super::codec::{self, msg, Conntrack};
use super::nl::{self, MsgIter};
use super::socket::{set_rcvbuf, ConntrackError};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// include/uapi/linux/netfilter/nfnetlink.h `enum nfnetlink_groups`.
pub mod group {
    pub const CONNTRACK_NEW: u32 = 1;
    pub const CONNTRACK_UPDATE: u32 = 2;
    pub const CONNTRACK_DESTROY: u32 = 3;
}

/// Receive buffer asked for by default (conntrackd's
/// `NetlinkBufferSize` is 2 MiB growing to 8 MiB; a busy master makes
/// tens of thousands of events a second, about 300-400 bytes of
/// truesize each).
pub const DEFAULT_RCVBUF: usize = 32 * 1024 * 1024;
/// Events per batch at most; the rest stays queued for the next read.
pub const DEFAULT_MAX_BATCH: usize = 65_536;

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// IPCTNL_MSG_CT_NEW with NLM_F_CREATE.
    New,
    /// IPCTNL_MSG_CT_NEW without NLM_F_CREATE.
    Update,
    /// IPCTNL_MSG_CT_DELETE.
    Destroy,
}

/// One conntrack event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEvent {
    pub kind: EventKind,
    /// `nlmsg_pid`: the port id of the netlink socket whose request
    /// caused the change, 0 for changes caused by packets or timers.
    pub portid: u32,
    pub entry: Conntrack,
}

/// What one [`EventSocket::next_batch`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// Events in kernel order.
    pub events: Vec<CtEvent>,
    /// The socket overran (ENOBUFS) after `events`: events were lost.
    pub overrun: bool,
    /// Messages that could not be decoded (a kernel or codec bug); they
    /// are lost just like an overrun's, with the first reason here.
    pub undecodable: usize,
    pub first_decode_error: Option<String>,
    /// Messages of the port id set with [`EventSocket::skip_portid`],
    /// dropped undecoded.
    pub skipped: u64,
}

impl EventBatch {
    /// Events were lost in this batch (overrun or undecodable ones).
    pub fn lost(&self) -> bool {
        self.overrun || self.undecodable > 0
    }
}

/// The conntrack groups an [`EventSocket`] joins.
const GROUPS: [u32; 3] = [
    group::CONNTRACK_NEW,
    group::CONNTRACK_UPDATE,
    group::CONNTRACK_DESTROY,
];

/// A NETLINK_NETFILTER socket subscribed to the conntrack groups, in the
/// network namespace of the thread that opened it.
pub struct EventSocket {
    sock: Arc<Socket>,
    rbuf: Vec<u8>,
    max_batch: usize,
    rcvbuf: usize,
    skip_portid: Option<u32>,
}

impl EventSocket {
    /// Opens the socket with a [`DEFAULT_RCVBUF`] receive buffer.
    pub fn open() -> Result<EventSocket, ConntrackError> {
        EventSocket::with_rcvbuf(DEFAULT_RCVBUF)
    }

    /// Opens the socket asking for `rcvbuf` bytes of receive buffer
    /// (SO_RCVBUFFORCE: root may exceed net.core.rmem_max; otherwise
    /// SO_RCVBUF, capped by it).
    pub fn with_rcvbuf(rcvbuf: usize) -> Result<EventSocket, ConntrackError> {
        let io = |what: &'static str| move |source| ConntrackError::Io { what, source };
        let mut sock =
            Socket::new(NETLINK_NETFILTER).map_err(io("opening the conntrack event socket"))?;
        sock.bind_auto()
            .map_err(io("binding the conntrack event socket"))?;
        set_rcvbuf(&sock, rcvbuf).map_err(io("setting the event socket's receive buffer"))?;
        for g in GROUPS {
            sock.add_membership(g)
                .map_err(io("joining the NFNLGRP_CONNTRACK_* groups"))?;
        }
        let rcvbuf = sock
            .get_rx_buf_sz()
            .map_err(io("reading the event socket's receive buffer"))?;
        Ok(EventSocket {
            sock: Arc::new(sock),
            rbuf: Vec::with_capacity(64 * 1024),
            max_batch: DEFAULT_MAX_BATCH,
            rcvbuf,
            skip_portid: None,
        })
    }

    /// A handle that leaves and rejoins the groups from another thread
    /// while this one reads.
    pub fn membership(&self) -> Membership {
        Membership {
            sock: self.sock.clone(),
        }
    }

    /// At most `n` (≥ 1) events per batch.
    pub fn set_max_batch(&mut self, n: usize) {
        self.max_batch = n.max(1);
    }

    /// Drop the events caused by requests of the socket with port id
    /// `portid` (never 0, the kernel's own) before decoding them: a
    /// replicating backup writes tens of thousands of entries a second
    /// and each write comes back here as an event it discards anyway
    /// (in ctsync-bench the backup's event thread, which only sees
    /// those, used about a third of the apply thread's CPU).
    pub fn skip_portid(&mut self, portid: u32) {
        self.skip_portid = (portid != 0).then_some(portid);
    }

    /// The receive buffer the kernel granted (SO_RCVBUF as read back:
    /// twice what was set, the kernel's bookkeeping share included).
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// This socket's port id.
    pub fn portid(&self) -> Result<u32, ConntrackError> {
        let mut addr = SocketAddr::new(0, 0);
        self.sock
            .get_address(&mut addr)
            .map_err(|source| ConntrackError::Io {
                what: "reading the event socket's port id",
                source,
            })?;
        Ok(addr.port_number())
    }

    /// Waits up to `timeout` for events, then reads everything queued (up
    /// to the batch limit) without waiting again. `Ok(None)`: nothing came.
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Option<EventBatch>, ConntrackError> {
        if !self.readable(timeout)? {
            return Ok(None);
        }
        let mut batch = EventBatch::default();
        while batch.events.len() + (batch.skipped as usize) < self.max_batch {
            match nl::recv_datagram(&self.sock, &mut self.rbuf, libc::MSG_DONTWAIT) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // netlink_overrun(): events were dropped. What came
                    // before is still valid; what follows is read by the
                    // next call.
                    batch.overrun = true;
                    break;
                }
                Err(source) => {
                    return Err(ConntrackError::Io {
                        what: "reading conntrack events",
                        source,
                    })
                }
            }
            decode_datagram_skipping(&self.rbuf, self.skip_portid, &mut batch);
        }
        let empty = batch.events.is_empty()
            && batch.skipped == 0
            && !batch.overrun
            && batch.undecodable == 0;
        Ok((!empty).then_some(batch))
    }

    fn readable(&self, timeout: Duration) -> Result<bool, ConntrackError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        loop {
            let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                // POLLERR (a pending ENOBUFS) counts too: recv reports it.
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(ConntrackError::Io {
                        what: "waiting for conntrack events",
                        source: e.into(),
                    })
                }
            }
        }
    }
}

/// Joins or leaves the conntrack groups of an [`EventSocket`]. A member
/// that leaves stops costing anything: `ctnetlink_conntrack_event` builds
/// no event for a group without listeners (`nfnetlink_has_listeners`),
/// and none is queued for us to wake up for. Events queued before
/// leaving stay readable. Adding a group already joined, or dropping
/// one not joined, is not an error (`netlink_setsockopt`).
#[derive(Clone)]
pub struct Membership {
    sock: Arc<Socket>,
}

impl Membership {
    /// Joins (`true`) or leaves (`false`) all three groups.
    pub fn set(&self, on: bool) -> Result<(), ConntrackError> {
        for g in GROUPS {
            let r = if on {
                self.sock.add_membership(g)
            } else {
                self.sock.drop_membership(g)
            };
            r.map_err(|source| ConntrackError::Io {
                what: if on {
                    "joining the NFNLGRP_CONNTRACK_* groups"
                } else {
                    "leaving the NFNLGRP_CONNTRACK_* groups"
                },
                source,
            })?;
        }
        Ok(())
    }
}

/// Decodes the events of one datagram into `batch`; nothing here panics,
/// a bad message is counted in `undecodable`.
pub fn decode_datagram(buf: &[u8], batch: &mut EventBatch) {
    decode_datagram_skipping(buf, None, batch)
}

/// [`decode_datagram`], counting the messages of port id `skip` in
/// [`EventBatch::skipped`] instead of decoding them.
pub fn decode_datagram_skipping(buf: &[u8], skip: Option<u32>, batch: &mut EventBatch) {
    let bad = |batch: &mut EventBatch, why: String| {
        batch.undecodable += 1;
        batch.first_decode_error.get_or_insert(why);
    };
    for m in MsgIter::new(buf) {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                // Nothing after a bad length can be trusted.
                bad(batch, format!("event datagram: {}", e.0));
                return;
            }
        };
        let kind = match m.header.kind {
            k if k == codec::msg_type(msg::NEW) => {
                if m.header.flags & nl::NLM_F_CREATE != 0 {
                    EventKind::New
                } else {
                    EventKind::Update
                }
            }
            k if k == codec::msg_type(msg::DELETE) => EventKind::Destroy,
            // Expectation events (subsystem CTNETLINK_EXP) are not
            // subscribed; anything else is not an entry.
            _ => continue,
        };
        if skip == Some(m.header.pid) {
            batch.skipped += 1;
            continue;
        }
        match codec::decode(m.payload) {
            Ok(entry) => batch.events.push(CtEvent {
                kind,
                portid: m.header.pid,
                entry,
            }),
            Err(e) => bad(batch, format!("{kind:?} event: {e}")),
        }
    }
}
