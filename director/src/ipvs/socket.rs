//! [`IpvsSocket`]: the real [`IpvsKernel`] over a synchronous generic
//! netlink socket (netlink-sys, no unsafe here).
//!
//! Batching. Generic netlink processes a sendmsg synchronously in the
//! sender's context (netlink_unicast_kernel -> genl_rcv -> netlink_rcv_skb),
//! one message after the other, queueing each reply on our socket. So we
//! pack up to `window` requests (and at most [`SEND_BYTES`]) into one
//! sendmsg, each with its own sequence number, and then read the replies.
//! netlink_rcv_skb() always answers a failed request with NLMSG_ERROR
//! (negative errno) and a successful one only if it asked for NLM_F_ACK; we
//! ask for the ACK on the last message of the batch only (see
//! [`AckMode`]), so a batch of N successful ops costs one sendmsg and one
//! recvmsg instead of N of each. A request with no error before that final
//! ACK succeeded: the kernel answers in order.
//!
//! The window is sized so that even if every request in it fails, all the
//! NLMSG_ERROR skbs fit in the socket's receive buffer: if they did not, the
//! kernel would drop them (netlink_overrun, ENOBUFS on our next recv) and
//! we could not tell which ops failed. Should that still happen the ops
//! without a known outcome are reported as `KernelError::Io` ("outcome
//! unknown") and the window is halved; the reconciler's next dump repairs.

use super::codec::{self, Request};
use super::nl::{self, ErrorMsg, MsgIter, Reply, Writer, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK};
use crate::kernel::{IpvsKernel, KernelError};
use crate::model::*;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use std::io;

/// Bytes of requests per sendmsg.
pub const SEND_BYTES: usize = 64 * 1024;
/// What we ask for with SO_RCVBUF; the kernel caps it at
/// net.core.rmem_max (and doubles it for bookkeeping).
const RCVBUF_WANTED: i32 = 8 * 1024 * 1024;
/// Upper bound of the truesize of one NLMSG_ERROR skb with NETLINK_CAP_ACK
/// and a short extended-ack message (~36..300 bytes of data in a small
/// kmalloc head plus struct sk_buff and skb_shared_info). Measured on 6.1
/// in the kernel lab: an 8 KiB receive buffer holds 10 of them (~820 B).
const ERR_SKB_TRUESIZE: usize = 1280;
/// A dump datagram is at most 32 KiB (netlink_dump's max_recvmsg_len cap);
/// a larger buffer costs nothing.
const RECV_BUF: usize = 128 * 1024;
const MAX_WINDOW: usize = 4096;
const MIN_WINDOW: usize = 8;

/// Which requests of a batch carry NLM_F_ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Only the last one: successes are silent (fastest, the default).
    Last,
    /// Every one, like ipvsadm: one NLMSG_ERROR(0) per successful op.
    Every,
}

/// The "IPVS" generic netlink family on a netlink socket.
pub struct IpvsSocket {
    sock: Socket,
    family: u16,
    pid: u32,
    seq: u32,
    rbuf: Vec<u8>,
    window: usize,
    ack_mode: AckMode,
}

fn io_err(what: &str, e: io::Error) -> KernelError {
    KernelError::Io {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// The errno of an NLMSG_ERROR, with strerror and the kernel's extended
/// ack message if any.
fn refused(what: &str, e: &ErrorMsg) -> KernelError {
    let errno = e.error.checked_neg().unwrap_or(i32::MAX);
    let mut message = io::Error::from_raw_os_error(errno).to_string();
    if let Some(m) = e.ext_msg.as_deref().filter(|m| !m.is_empty()) {
        message = format!("{message}; kernel says: {m}");
    }
    KernelError::Refused {
        what: what.to_string(),
        errno,
        message,
    }
}

fn decode_frame(what: &str, e: super::nl::FrameError) -> KernelError {
    KernelError::Decode {
        what: what.to_string(),
        detail: e.0,
    }
}

impl IpvsSocket {
    /// Opens a socket and resolves the "IPVS" family
    /// (`KernelError::Unavailable` when the kernel has no IPVS).
    pub fn open() -> Result<IpvsSocket, KernelError> {
        const WHAT: &str = "opening the generic netlink socket";
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(|e| io_err(WHAT, e))?;
        let addr = sock.bind_auto().map_err(|e| io_err(WHAT, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err(WHAT, e))?;
        // Best effort: older kernels lack these, and a smaller buffer only
        // means a smaller window.
        let _ = sock.set_rx_buf_sz(RCVBUF_WANTED);
        // NETLINK_EXT_ACK: the kernel's reason text in NLMSGERR_ATTR_MSG.
        let _ = sock.set_ext_ack(true);
        // NETLINK_CAP_ACK: errors do not echo our whole request back, which
        // keeps each error skb small.
        let _ = sock.set_cap_ack(true);
        let rcvbuf = sock.get_rx_buf_sz().unwrap_or(0);
        let mut s = IpvsSocket {
            sock,
            family: 0,
            pid: addr.port_number(),
            seq: 0,
            rbuf: Vec::with_capacity(RECV_BUF),
            window: window_for(rcvbuf),
            ack_mode: AckMode::Last,
        };
        s.family = s.resolve_family()?;
        Ok(s)
    }

    /// The resolved generic netlink id of "IPVS".
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Requests per sendmsg in [`IpvsKernel::apply`].
    pub fn window(&self) -> usize {
        self.window
    }

    /// Overrides the batch size (clamped to at least 1; tests and
    /// benchmarks).
    pub fn set_window(&mut self, n: usize) {
        self.window = n.max(1);
    }

    /// Asks for a receive buffer of `bytes` (SO_RCVBUF, capped by
    /// net.core.rmem_max) and sizes the window from what the kernel
    /// granted. Returns the window.
    pub fn set_rcvbuf(&mut self, bytes: i32) -> Result<usize, KernelError> {
        const WHAT: &str = "setting SO_RCVBUF";
        self.sock
            .set_rx_buf_sz(bytes)
            .map_err(|e| io_err(WHAT, e))?;
        let got = self.sock.get_rx_buf_sz().map_err(|e| io_err(WHAT, e))?;
        self.window = window_for(got);
        Ok(self.window)
    }

    pub fn set_ack_mode(&mut self, m: AckMode) {
        self.ack_mode = m;
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send(&self, what: &str, buf: &[u8]) -> Result<(), KernelError> {
        crate::netlink::send_all(&self.sock, buf).map_err(|e| io_err(what, e))
    }

    fn recv(&mut self, flags: libc::c_int) -> io::Result<()> {
        crate::netlink::recv_datagram(&self.sock, &mut self.rbuf, flags)
    }

    fn resolve_family(&mut self) -> Result<u16, KernelError> {
        const WHAT: &str = "looking up generic netlink family \"IPVS\"";
        let seq = self.next_seq();
        let mut w = Writer::new();
        codec::encode_get_family(&mut w, seq, self.pid).map_err(|e| KernelError::Decode {
            what: WHAT.into(),
            detail: e.0,
        })?;
        self.send(WHAT, &w.buf)?;
        let mut family = None;
        loop {
            self.recv(0).map_err(|e| io_err(WHAT, e))?;
            for m in MsgIter::new(&self.rbuf) {
                let m = m.map_err(|e| decode_frame(WHAT, e))?;
                if m.header.seq != seq {
                    continue;
                }
                match m.header.kind {
                    NLMSG_ERROR => {
                        let e = ErrorMsg::parse(&m.header, m.payload)
                            .map_err(|e| decode_frame(WHAT, e))?;
                        return match (e.error, family) {
                            (0, Some(f)) => Ok(f),
                            (0, None) => Err(KernelError::Decode {
                                what: WHAT.into(),
                                detail: "acknowledged without a family id".into(),
                            }),
                            // genl_ctrl: no such family.
                            (e, _) if e == -libc::ENOENT => Err(KernelError::Unavailable),
                            _ => Err(refused(WHAT, &e)),
                        };
                    }
                    NLMSG_DONE => {}
                    _ => family = Some(codec::decode_family_id(m.payload)?),
                }
            }
        }
    }

    /// One request and its replies: calls `each` with every reply payload
    /// (genl header + attributes) until the terminating NLMSG_DONE (dumps)
    /// or ACK (everything else, sent with NLM_F_ACK).
    fn transact(
        &mut self,
        what: &str,
        req: &Request,
        mut each: impl FnMut(&[u8]) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let seq = self.next_seq();
        let mut w = Writer::new();
        // A dump is ended by NLMSG_DONE; the kernel never ACKs a dump
        // (netlink_dump_start returns -EINTR to skip the ack).
        codec::encode(&mut w, self.family, seq, self.pid, !req.is_dump(), req).map_err(|e| {
            KernelError::Refused {
                what: what.to_string(),
                errno: libc::EINVAL,
                message: e.0,
            }
        })?;
        self.send(what, &w.buf)?;
        // Decode errors are remembered, not returned at once: the rest of
        // the dump must still be drained so the next request on this
        // socket does not read it.
        let mut first_err: Option<KernelError> = None;
        loop {
            self.recv(0).map_err(|e| io_err(what, e))?;
            let mut done = false;
            for m in MsgIter::new(&self.rbuf) {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        first_err.get_or_insert(decode_frame(what, e));
                        break;
                    }
                };
                // Replies to earlier requests (e.g. after an ENOBUFS) are
                // not ours.
                if m.header.seq != seq {
                    continue;
                }
                let r = nl::reply(&m);
                done |= r.is_final();
                match r {
                    Reply::Data(payload) => {
                        if first_err.is_none() {
                            if let Err(e) = each(payload) {
                                first_err = Some(e);
                            }
                        }
                    }
                    Reply::Done => {}
                    Reply::Refused(e) => {
                        first_err.get_or_insert(refused(what, &e));
                    }
                    Reply::Malformed(e) => {
                        first_err.get_or_insert(decode_frame(what, e));
                    }
                }
            }
            if done {
                return match first_err {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }

    /// `GET_DEST` dump of one service.
    fn dests_of(&mut self, key: ServiceKey) -> Result<Vec<KernelDest>, KernelError> {
        let what = format!("dumping destinations of service {key}");
        let mut dests = Vec::new();
        let fam = key.family();
        self.transact(&what, &Request::DumpDests(key), |p| {
            dests.push(codec::decode_dest(p, fam)?);
            Ok(())
        })?;
        Ok(dests)
    }

    /// Sends one batch (`ops[idx]` for each index) and fills `results`.
    fn apply_batch(
        &mut self,
        ops: &[IpvsOp],
        idx: &[usize],
        results: &mut [Option<Result<(), KernelError>>],
    ) {
        if idx.is_empty() {
            return;
        }
        // Sequence numbers first..first+n, no wrap inside a batch.
        if self.seq > u32::MAX - (MAX_WINDOW as u32) * 2 {
            self.seq = 0;
        }
        let first = self.seq.wrapping_add(1);
        let mut w = Writer {
            buf: Vec::with_capacity(SEND_BYTES + 1024),
        };
        let mut last_start = 0;
        let mut sent: Vec<usize> = Vec::with_capacity(idx.len());
        for &i in idx {
            let Some(op) = ops.get(i) else { continue };
            let seq = first.wrapping_add(sent.len() as u32);
            let start = w.buf.len();
            match codec::encode(
                &mut w,
                self.family,
                seq,
                self.pid,
                self.ack_mode == AckMode::Every,
                &Request::from_op(op),
            ) {
                Ok(()) => {
                    sent.push(i);
                    last_start = start;
                }
                // Not sendable (a name too long for the kernel's fixed
                // arrays): the kernel would say EINVAL, so do we.
                Err(e) => {
                    if let Some(r) = results.get_mut(i) {
                        *r = Some(Err(KernelError::Refused {
                            what: op.to_string(),
                            errno: libc::EINVAL,
                            message: format!("{} (not sent)", e.0),
                        }))
                    }
                }
            }
        }
        if sent.is_empty() {
            return;
        }
        self.seq = first.wrapping_add(sent.len() as u32 - 1);
        // NLM_F_ACK on the last message: nlmsg_flags is at offset 6.
        if let Some(f) = w.buf.get_mut(last_start + 6..last_start + 8) {
            let flags = u16::from_ne_bytes([f[0], f[1]]) | NLM_F_ACK;
            f.copy_from_slice(&flags.to_ne_bytes());
        }
        let what = |i: usize| ops.get(i).map(|o| o.to_string()).unwrap_or_default();
        let mut batch = Batch::new(first, sent, self.ack_mode);
        if let Err(e) = self.send("sending IPVS requests", &w.buf) {
            batch.lost(&e.to_string());
        } else {
            let mut flags = 0;
            loop {
                match self.recv(flags) {
                    Ok(()) => {
                        if batch.feed(&self.rbuf, &what) && flags == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ENOBUFS: the kernel dropped answers. Take what is
                    // still queued without blocking, then give up on the
                    // rest, and use smaller batches from now on.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && flags == 0 => {
                        batch.lost(&e.to_string());
                        flags = libc::MSG_DONTWAIT;
                        self.window = (self.window / 2).max(MIN_WINDOW);
                    }
                    Err(e) => {
                        batch.lost(&e.to_string());
                        break;
                    }
                }
            }
        }
        for (i, r) in batch.finish(&what) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
}

/// Sans-IO bookkeeping of one batch: which op each sequence number stands
/// for, and what the kernel answered. Sequence numbers are `first ..
/// first + ops.len()`, in op order.
#[derive(Debug)]
pub(crate) struct Batch {
    first: u32,
    /// Index (into the caller's op list) of each sent request.
    ops: Vec<usize>,
    results: Vec<Option<Result<(), KernelError>>>,
    ack_mode: AckMode,
    answered: usize,
    done: bool,
    lost: Option<String>,
}

impl Batch {
    pub(crate) fn new(first: u32, ops: Vec<usize>, ack_mode: AckMode) -> Batch {
        let results = vec![None; ops.len()];
        Batch {
            first,
            ops,
            results,
            ack_mode,
            answered: 0,
            done: false,
            lost: None,
        }
    }

    fn last_seq(&self) -> u32 {
        self.first
            .wrapping_add(self.ops.len().saturating_sub(1) as u32)
    }

    /// Takes one received datagram. Returns true once the batch is
    /// complete: the last request is answered (the kernel answers in
    /// order), or every request is. Messages that are not ours (other
    /// sequence numbers, stale answers) are ignored.
    pub(crate) fn feed(&mut self, datagram: &[u8], what: &dyn Fn(usize) -> String) -> bool {
        for m in MsgIter::new(datagram) {
            let Ok(m) = m else { break };
            if m.header.kind != NLMSG_ERROR {
                continue;
            }
            let off = m.header.seq.wrapping_sub(self.first) as usize;
            let (Some(&i), Some(slot)) = (self.ops.get(off), self.results.get_mut(off)) else {
                continue;
            };
            let res = match ErrorMsg::parse(&m.header, m.payload) {
                Ok(e) if e.error == 0 => Ok(()),
                Ok(e) => Err(refused(&what(i), &e)),
                Err(e) => Err(decode_frame(&what(i), e)),
            };
            if slot.is_none() {
                self.answered += 1;
            }
            *slot = Some(res);
            if m.header.seq == self.last_seq() {
                self.done = true;
            }
        }
        self.done || self.answered == self.ops.len()
    }

    /// Answers were lost (ENOBUFS) or never came (a failed send).
    pub(crate) fn lost(&mut self, detail: &str) {
        self.lost.get_or_insert_with(|| detail.to_string());
    }

    /// One result per sent request, as `(op index, result)`.
    pub(crate) fn finish(
        self,
        what: &dyn Fn(usize) -> String,
    ) -> Vec<(usize, Result<(), KernelError>)> {
        let (lost, ack_mode, done) = (self.lost, self.ack_mode, self.done);
        self.ops
            .into_iter()
            .zip(self.results)
            .map(|(i, r)| {
                let r = r.unwrap_or_else(|| match (&lost, ack_mode, done) {
                    // Successes are silent; the final ACK came after them.
                    (None, AckMode::Last, true) => Ok(()),
                    (Some(d), _, _) => Err(KernelError::Io {
                        what: what(i),
                        detail: format!("outcome unknown, answer lost: {d}"),
                    }),
                    _ => Err(KernelError::Io {
                        what: what(i),
                        detail: "the kernel did not answer this request".into(),
                    }),
                });
                (i, r)
            })
            .collect()
    }
}

/// Requests per batch for a (doubled, as getsockopt reports it) receive
/// buffer of `rcvbuf` bytes: all-failed answers must fit with room to spare.
fn window_for(rcvbuf: usize) -> usize {
    (rcvbuf / 2 / ERR_SKB_TRUESIZE).clamp(MIN_WINDOW, MAX_WINDOW)
}

impl IpvsKernel for IpvsSocket {
    fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        let mut info = None;
        self.transact("getting IPVS info", &Request::GetInfo, |p| {
            info = Some(codec::decode_info(p)?);
            Ok(())
        })?;
        info.ok_or_else(|| KernelError::Decode {
            what: "getting IPVS info".into(),
            detail: "no reply".into(),
        })
    }

    fn dump(&mut self) -> Result<KernelTable, KernelError> {
        let info = self.info()?;
        let mut services = Vec::new();
        self.transact("dumping IPVS services", &Request::DumpServices, |p| {
            services.push(codec::decode_service(p)?);
            Ok(())
        })?;
        for s in &mut services {
            match self.dests_of(s.service.key) {
                Ok(d) => s.dests = d,
                // Deleted between the two dumps: it is gone, and the
                // next dump will not list it.
                Err(KernelError::Refused { errno, .. }) if errno == libc::ESRCH => s.dests.clear(),
                Err(e) => return Err(e),
            }
        }
        Ok(KernelTable { info, services })
    }

    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        let mut results: Vec<Option<Result<(), KernelError>>> = vec![None; ops.len()];
        // A rough size of each encoded op, so a batch stays under SEND_BYTES.
        const OP_BYTES_MAX: usize = 160;
        let per_batch = self.window.clamp(1, SEND_BYTES / OP_BYTES_MAX);
        let all: Vec<usize> = (0..ops.len()).collect();
        for chunk in all.chunks(per_batch) {
            self.apply_batch(ops, chunk, &mut results);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(KernelError::Io {
                        what: "applying IPVS ops".into(),
                        detail: "no result".into(),
                    })
                })
            })
            .collect()
    }

    fn flush(&mut self) -> Result<(), KernelError> {
        self.transact("flushing the IPVS table", &Request::Flush, |_| Ok(()))
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        let mut t = None;
        self.transact("getting IPVS timeouts", &Request::GetConfig, |p| {
            t = Some(codec::decode_config(p)?);
            Ok(())
        })?;
        t.ok_or_else(|| KernelError::Decode {
            what: "getting IPVS timeouts".into(),
            detail: "no reply".into(),
        })
    }

    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        self.transact("setting IPVS timeouts", &Request::SetConfig(t), |_| Ok(()))
    }

    fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, KernelError> {
        let mut v = Vec::new();
        self.transact("dumping IPVS sync daemons", &Request::DumpDaemons, |p| {
            v.push(codec::decode_daemon(p)?);
            Ok(())
        })?;
        Ok(v)
    }

    fn start_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        let what = format!("starting the {:?} sync daemon on {}", d.role, d.mcast_ifn);
        self.transact(&what, &Request::NewDaemon(d.clone()), |_| Ok(()))
    }

    fn stop_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        let what = format!("stopping the {:?} sync daemon", d.role);
        self.transact(&what, &Request::DelDaemon(d.role), |_| Ok(()))
    }
}
