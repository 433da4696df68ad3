//! The real NETLINK_ROUTE sockets (netlink-sys; no unsafe here):
//! [`RtnlSocket`] for requests, [`LinkWatch`] for link events. They are
//! separate sockets so that an event burst can never interleave with, or
//! overrun, an address request's answer.

use super::codec::{self, AddrCmd, AddrEntry, LinkEntry};
use super::nl::{self, ErrorMsg, Msg, MsgIter, Reply, Writer, NLM_F_DUMP_INTR};
use super::{Addresses, LinkEvent, RtnlError};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// First receive buffer; grown to the size of a larger datagram (peeked
/// with MSG_TRUNC), so nothing is ever truncated.
const RECV_BUF: usize = 32 * 1024;
/// A dump the kernel marks inconsistent (NLM_F_DUMP_INTR: the table changed
/// during it) is restarted this many times before giving up.
const DUMP_ATTEMPTS: usize = 3;
/// Receive buffer asked for the event socket (capped by net.core.rmem_max):
/// link events come in bursts (a bond or a bridge with many ports going
/// down), and an overrun costs a full resync.
const WATCH_RCVBUF: usize = 1 << 20;

fn io_err(what: &str, source: io::Error) -> RtnlError {
    RtnlError::Io {
        what: what.to_string(),
        source,
    }
}

fn decode_err(what: &str, detail: impl std::fmt::Display) -> RtnlError {
    RtnlError::Decode {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn encode_err(what: &str) -> RtnlError {
    RtnlError::Invalid {
        what: what.to_string(),
        why: "request does not fit a netlink attribute".to_string(),
    }
}

/// Why the kernel said no, with its extended-ack text when it gave one.
pub(super) fn refused(what: &str, interface: &str, e: &ErrorMsg) -> RtnlError {
    let errno = e.error.checked_neg().unwrap_or(i32::MAX);
    if errno == libc::ENODEV {
        return RtnlError::NoSuchInterface {
            what: what.to_string(),
            interface: interface.to_string(),
        };
    }
    let mut message = io::Error::from_raw_os_error(errno).to_string();
    if let Some(m) = e.ext_msg.as_deref().filter(|m| !m.is_empty()) {
        message = format!("{message}; kernel says: {m}");
    }
    RtnlError::Refused {
        what: what.to_string(),
        errno,
        message,
    }
}

/// Reconcile signals, not errors (DESIGN.md principle 3): on add, the
/// address is already there (EEXIST: only without NLM_F_REPLACE, but
/// harmless to accept); on delete, it is not there (EADDRNOTAVAIL), or the
/// interface with all its addresses is gone (ENODEV).
pub(super) fn tolerate(cmd: AddrCmd, r: Result<(), RtnlError>) -> Result<(), RtnlError> {
    match r {
        Err(e) if cmd == AddrCmd::Add && errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e)
            if cmd == AddrCmd::Delete
                && (errno_of(&e) == Some(libc::EADDRNOTAVAIL)
                    || matches!(e, RtnlError::NoSuchInterface { .. })) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn errno_of(e: &RtnlError) -> Option<i32> {
    match e {
        RtnlError::Refused { errno, .. } => Some(*errno),
        _ => None,
    }
}

/// [`crate::netlink::in_netns`] with rtnl's error type.
fn in_netns<T: Send>(
    name: &str,
    open: impl FnOnce() -> Result<T, RtnlError> + Send,
) -> Result<T, RtnlError> {
    crate::netlink::in_netns(name, open)
        .map_err(|e| io_err(&format!("opening rtnetlink in network namespace {name}"), e))?
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Done,
    Interrupted,
}

/// The answer to one request, as its datagrams come in (kept apart from
/// the socket so that hostile datagrams can be fed to it in tests).
#[derive(Debug, Default)]
pub(super) struct Answer {
    first_err: Option<RtnlError>,
    interrupted: bool,
}

impl Answer {
    /// Takes in one datagram. `Ok(Some(_))` once the final answer (ACK,
    /// NACK or NLMSG_DONE) to request `seq` was in it; the first refusal or
    /// malformed reply is returned then, after the rest was drained.
    pub(super) fn absorb(
        &mut self,
        datagram: &[u8],
        seq: u32,
        what: &str,
        interface: &str,
        each: &mut impl FnMut(&Msg<'_>),
        other: &mut impl FnMut(&Msg<'_>),
    ) -> Result<Option<Outcome>, RtnlError> {
        let mut done = false;
        for m in MsgIter::new(datagram) {
            // Nothing after a bad length can be trusted, and we cannot tell
            // whether the final answer was in it.
            let m = m.map_err(|e| decode_err(what, e.0))?;
            if m.header.seq != seq {
                other(&m);
                continue;
            }
            self.interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
            let r = nl::reply(&m);
            done |= r.is_final();
            match r {
                Reply::Data(_) => each(&m),
                Reply::Done => {}
                Reply::Refused(e) => {
                    self.first_err.get_or_insert(refused(what, interface, &e));
                }
                Reply::Malformed(e) => {
                    self.first_err.get_or_insert(decode_err(what, e.0));
                }
            }
        }
        if !done {
            return Ok(None);
        }
        match self.first_err.take() {
            Some(e) => Err(e),
            None if self.interrupted => Ok(Some(Outcome::Interrupted)),
            None => Ok(Some(Outcome::Done)),
        }
    }
}

/// One NETLINK_ROUTE socket with its sequence numbers and receive buffer.
struct Conn {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
}

impl Conn {
    fn open(what: &str) -> Result<Conn, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| io_err(what, e))?;
        sock.bind_auto().map_err(|e| io_err(what, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err(what, e))?;
        // Best effort (older kernels): the kernel's reason text; errors
        // that do not echo the whole request back; dumps filtered by the
        // kernel (we filter again).
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Conn {
            sock,
            seq: 0,
            rbuf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, what: &str, buf: &[u8]) -> Result<(), RtnlError> {
        crate::netlink::send_all(&self.sock, buf).map_err(|e| io_err(what, e))
    }

    fn recv(&mut self) -> io::Result<()> {
        crate::netlink::recv_datagram(&self.sock, &mut self.rbuf, 0)
    }

    /// Sends one request and reads until its final answer (NLMSG_DONE of a
    /// dump, or the ACK/NACK: every other request is sent with NLM_F_ACK),
    /// calling `each` with every data message of the answer and `other`
    /// with messages that are not part of it (multicast events on a watch
    /// socket, late answers to an earlier request).
    fn transact(
        &mut self,
        what: &str,
        interface: &str,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&Msg<'_>),
        mut other: impl FnMut(&Msg<'_>),
    ) -> Result<Outcome, RtnlError> {
        self.send(what, request)?;
        let mut answer = Answer::default();
        loop {
            self.recv().map_err(|e| io_err(what, e))?;
            if let Some(outcome) =
                answer.absorb(&self.rbuf, seq, what, interface, &mut each, &mut other)?
            {
                return Ok(outcome);
            }
        }
    }

    /// A dump, restarted while the kernel marks it interrupted.
    fn dump<T>(
        &mut self,
        what: &str,
        interface: &str,
        encode: impl Fn(&mut Writer, u32) -> Result<(), codec::EncodeError>,
        decode: impl Fn(&Msg<'_>) -> Result<Option<T>, codec::DecodeError>,
        mut other: impl FnMut(&Msg<'_>),
    ) -> Result<Vec<T>, RtnlError> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            let mut w = Writer::new();
            encode(&mut w, seq).map_err(|_| encode_err(what))?;
            let mut out = Vec::new();
            let mut first_err = None;
            let outcome = self.transact(
                what,
                interface,
                &w.buf,
                seq,
                // Keep draining after a bad entry: the rest of the dump must
                // not be left for the next request to read.
                |m| match decode(m) {
                    Ok(Some(v)) => out.push(v),
                    Ok(None) => {}
                    Err(e) => {
                        first_err.get_or_insert(decode_err(what, e));
                    }
                },
                &mut other,
            )?;
            if let Some(e) = first_err {
                return Err(e);
            }
            match outcome {
                Outcome::Done => return Ok(out),
                Outcome::Interrupted => continue,
            }
        }
        Err(RtnlError::DumpInterrupted {
            what: what.to_string(),
            attempts: DUMP_ATTEMPTS,
        })
    }
}

/// The link state a message reports, if it is about a link itself:
/// RTM_NEWLINK / RTM_DELLINK of family AF_UNSPEC. The bridge also sends
/// RTM_NEWLINK / RTM_DELLINK of family AF_BRIDGE to RTNLGRP_LINK for its
/// ports (a port leaving the bridge is a DELLINK of a link that stays);
/// those are not link states.
pub(super) fn link_event(m: &Msg<'_>) -> Result<Option<LinkEvent>, codec::DecodeError> {
    let deleted = match m.header.kind {
        codec::RTM_NEWLINK => false,
        codec::RTM_DELLINK => true,
        _ => return Ok(None),
    };
    let LinkEntry {
        family,
        index,
        flags,
        name,
    } = codec::decode_link(m.payload)?;
    if family != codec::AF_UNSPEC {
        return Ok(None);
    }
    let up = !deleted && flags & codec::iff::UP != 0 && flags & codec::iff::RUNNING != 0;
    Ok(Some(LinkEvent {
        index,
        name: name.unwrap_or_default(),
        up,
    }))
}

/// Checks a prefix length against the address family.
pub(super) fn check_prefix(what: &str, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(RtnlError::Invalid {
            what: what.to_string(),
            why: format!("prefix length {prefix_len} is longer than the {max} bits of {addr}"),
        });
    }
    Ok(())
}

/// Interface names are 1 to IFNAMSIZ - 1 bytes (include/uapi/linux/if.h),
/// without '/' or NUL (net/core/dev.c `dev_valid_name`); the kernel would
/// refuse a longer one with a less helpful EINVAL.
pub(super) fn check_ifname(what: &str, name: &str) -> Result<(), RtnlError> {
    if name.is_empty() || name.len() >= codec::IFNAMSIZ || name.contains(['\0', '/']) {
        return Err(RtnlError::Invalid {
            what: what.to_string(),
            why: format!(
                "an interface name is 1 to {} bytes without '/' or NUL",
                codec::IFNAMSIZ - 1
            ),
        });
    }
    Ok(())
}

/// A NETLINK_ROUTE request socket: addresses (the [`Addresses`] trait) and
/// interface lookups, in the network namespace it was opened in.
pub struct RtnlSocket {
    conn: Conn,
}

impl RtnlSocket {
    /// Opens a request socket in the calling thread's network namespace.
    pub fn open() -> Result<RtnlSocket, RtnlError> {
        Ok(RtnlSocket {
            conn: Conn::open("opening a NETLINK_ROUTE socket")?,
        })
    }

    /// Opens a request socket inside the named network namespace
    /// (`/run/netns/NAME`, as `ip netns add` makes them).
    pub fn open_in_netns(name: &str) -> Result<RtnlSocket, RtnlError> {
        in_netns(name, RtnlSocket::open)
    }

    /// The index of interface `name` (RTM_GETLINK by IFLA_IFNAME; altnames
    /// work too). [`RtnlError::NoSuchInterface`] if there is none.
    pub fn ifindex(&mut self, name: &str) -> Result<u32, RtnlError> {
        let what = format!("looking up interface {name:?}");
        check_ifname(&what, name)?;
        let link = self.getlink(&what, name, 0, Some(name))?;
        Ok(link.index)
    }

    /// The state of the link with index `index`.
    pub fn link(&mut self, index: u32) -> Result<LinkEvent, RtnlError> {
        let what = format!("reading the state of interface index {index}");
        self.getlink(&what, &format!("index {index}"), index, None)
    }

    fn getlink(
        &mut self,
        what: &str,
        interface: &str,
        index: u32,
        name: Option<&str>,
    ) -> Result<LinkEvent, RtnlError> {
        let seq = self.conn.next_seq();
        let mut w = Writer::new();
        codec::encode_getlink(&mut w, seq, index, name).map_err(|_| encode_err(what))?;
        let mut found: Option<Result<Option<LinkEvent>, codec::DecodeError>> = None;
        self.conn.transact(
            what,
            interface,
            &w.buf,
            seq,
            |m| {
                found.get_or_insert_with(|| link_event(m));
            },
            |_| {},
        )?;
        match found {
            Some(Ok(Some(ev))) => Ok(ev),
            Some(Err(e)) => Err(decode_err(what, e)),
            _ => Err(decode_err(what, "the kernel acknowledged without a link")),
        }
    }

    /// Every address of interface `ifindex` with its flags (tentative,
    /// DAD failed, ...), scope and label.
    pub fn list_detailed(&mut self, ifindex: u32) -> Result<Vec<AddrEntry>, RtnlError> {
        let what = format!("listing the addresses of interface index {ifindex}");
        let interface = format!("index {ifindex}");
        let mut all = self.conn.dump(
            &what,
            &interface,
            |w, seq| codec::encode_addr_dump(w, seq, ifindex),
            |m| match m.header.kind {
                codec::RTM_NEWADDR => codec::decode_addr(m.payload),
                _ => Ok(None),
            },
            |_| {},
        )?;
        // Kernels without strict checking ignore the index of the request.
        all.retain(|a| a.index == ifindex);
        Ok(all)
    }

    /// "eth1 (index 3)", or "index 3" if the name cannot be had: errors
    /// name the interface the way operators know it.
    fn describe(&mut self, ifindex: u32) -> String {
        match self.link(ifindex) {
            Ok(l) if !l.name.is_empty() => format!("{} (index {ifindex})", l.name),
            _ => format!("index {ifindex}"),
        }
    }

    fn addr_request(
        &mut self,
        cmd: AddrCmd,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        let verb = |interface: &str| match cmd {
            AddrCmd::Add => format!("adding {addr}/{prefix_len} to interface {interface}"),
            AddrCmd::Delete => format!("deleting {addr}/{prefix_len} from interface {interface}"),
        };
        check_prefix(&verb(&format!("index {ifindex}")), addr, prefix_len)?;
        let seq = self.conn.next_seq();
        let mut w = Writer::new();
        let interface = format!("index {ifindex}");
        codec::encode_addr(&mut w, cmd, seq, ifindex, addr, prefix_len)
            .map_err(|_| encode_err(&verb(&interface)))?;
        let r = self
            .conn
            .transact(&verb(&interface), &interface, &w.buf, seq, |_| {}, |_| {})
            .map(|_| ());
        match tolerate(cmd, r) {
            Ok(()) => Ok(()),
            // Name the interface as the operator knows it (one more
            // request, on the error path only).
            Err(RtnlError::Refused { errno, message, .. }) => Err(RtnlError::Refused {
                what: verb(&self.describe(ifindex)),
                errno,
                message,
            }),
            Err(e) => Err(e),
        }
    }
}

impl Addresses for RtnlSocket {
    fn add(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
        self.addr_request(AddrCmd::Add, ifindex, addr, prefix_len)
    }

    fn delete(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
        self.addr_request(AddrCmd::Delete, ifindex, addr, prefix_len)
    }

    fn list(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, RtnlError> {
        Ok(self
            .list_detailed(ifindex)?
            .into_iter()
            .map(|a| (a.addr, a.prefix_len))
            .collect())
    }
}

/// The index of interface `name` in the calling thread's network
/// namespace (one RTM_GETLINK on a socket of its own).
pub fn ifindex(name: &str) -> Result<u32, RtnlError> {
    RtnlSocket::open()?.ifindex(name)
}

/// Link events: a NETLINK_ROUTE socket subscribed to RTNLGRP_LINK.
///
/// Events are levels, not edges: each carries the link's whole state, the
/// kernel sends RTM_NEWLINK for changes the watch does not report (MTU,
/// address, ...), so the same state can come several times; consumers
/// keep the last state per index. When the socket overran (ENOBUFS: the
/// kernel dropped events), [`LinkWatch::next`] resynchronises by itself
/// with a dump and returns every link's state; [`LinkWatch::overruns`]
/// counts how often.
pub struct LinkWatch {
    conn: Conn,
    pending: VecDeque<Result<LinkEvent, RtnlError>>,
    overruns: u64,
}

impl LinkWatch {
    /// Subscribes in the calling thread's network namespace. Subscribe
    /// first, then [`LinkWatch::snapshot`]: a change between the two is
    /// then seen as an event after the snapshot.
    pub fn open() -> Result<LinkWatch, RtnlError> {
        const WHAT: &str = "subscribing to link events (RTNLGRP_LINK)";
        let conn = Conn::open(WHAT)?;
        let _ = conn.sock.set_rx_buf_sz(WATCH_RCVBUF);
        conn.sock
            .add_membership(codec::RTNLGRP_LINK)
            .map_err(|e| io_err(WHAT, e))?;
        Ok(LinkWatch {
            conn,
            pending: VecDeque::new(),
            overruns: 0,
        })
    }

    /// [`LinkWatch::open`] inside the named network namespace.
    pub fn open_in_netns(name: &str) -> Result<LinkWatch, RtnlError> {
        in_netns(name, LinkWatch::open)
    }

    /// The current state of every link (RTM_GETLINK dump), in index order.
    /// Events that arrive during the dump are kept for [`LinkWatch::next`]:
    /// apply the snapshot, then the events. An event queued before a link's
    /// dump entry was sent before the dump read that link, so the dump
    /// already shows its state; one queued after it is newer. Either way
    /// the last state applied per link is the kernel's.
    pub fn snapshot(&mut self) -> Result<Vec<LinkEvent>, RtnlError> {
        let mut events = Vec::new();
        let links = self.conn.dump(
            "dumping the links",
            "(all)",
            codec::encode_link_dump,
            link_event,
            |m| {
                if let Some(ev) = event_of(m) {
                    events.push(ev);
                }
            },
        )?;
        self.pending.extend(events);
        Ok(links)
    }

    /// Blocks until the next link event.
    // Not `Iterator::next`: the stream never ends, and every item would be
    // a Result anyway; the blocking read is the point.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<LinkEvent, RtnlError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return ev;
            }
            self.receive()?;
        }
    }

    /// Like [`LinkWatch::next`], but gives up after `timeout` with
    /// `Ok(None)`, so a thread can check whether it should stop.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LinkEvent>, RtnlError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return ev.map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.readable(left)? {
                return Ok(None);
            }
            self.receive()?;
        }
    }

    /// How many times the kernel dropped events for this socket (each
    /// answered with a full resync).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Waits up to `timeout` for a datagram (poll(2)).
    fn readable(&self, timeout: Duration) -> Result<bool, RtnlError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        loop {
            let mut fds = [PollFd::new(&self.conn.sock, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err("waiting for link events", e.into())),
            }
        }
    }

    /// Reads one datagram of events into `pending`; on overrun, queues a
    /// fresh snapshot instead.
    fn receive(&mut self) -> Result<(), RtnlError> {
        const WHAT: &str = "reading link events";
        match self.conn.recv() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overruns = self.overruns.saturating_add(1);
                // The dump's states first, then the events that came in
                // during it: they are at least as new (see `snapshot`).
                let all = self.snapshot()?;
                let during: Vec<_> = self.pending.drain(..).collect();
                self.pending.extend(all.into_iter().map(Ok));
                self.pending.extend(during);
                return Ok(());
            }
            Err(e) => return Err(io_err(WHAT, e)),
        }
        for m in MsgIter::new(&self.conn.rbuf) {
            match m {
                Ok(m) => {
                    if let Some(ev) = event_of(&m) {
                        self.pending.push_back(ev);
                    }
                }
                Err(e) => self.pending.push_back(Err(decode_err(WHAT, e.0))),
            }
        }
        Ok(())
    }
}

/// A multicast link event (sent by the kernel: port id 0), decoded.
pub(super) fn event_of(m: &Msg<'_>) -> Option<Result<LinkEvent, RtnlError>> {
    if m.header.pid != 0 {
        return None;
    }
    link_event(m)
        .map_err(|e| decode_err("reading link events", e))
        .transpose()
}
