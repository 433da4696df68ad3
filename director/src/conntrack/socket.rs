//! [`ConntrackSocket`]: blocking ctnetlink requests over a NETLINK_NETFILTER
//! socket (netlink-sys; no unsafe here).
//!
//! The socket belongs to the network namespace of the thread that opened
//! it: conntrack tables are per netns, so open it where the table is.
//!
//! Events are read on a second socket ([`super::events::EventSocket`]);
//! requests and events are kept on separate sockets so that an event
//! burst cannot interleave with, or overrun, a dump.
//!
//! Batches ([`ConntrackSocket::batch`]): many requests are concatenated
//! into one `sendmsg` of at most [`BATCH_BYTES`]. nfnetlink has no
//! transaction for ctnetlink (NFNL_MSG_BATCH_BEGIN is for nf_tables
//! only): `netlink_rcv_skb` runs each message in turn, synchronously in
//! our `sendmsg`, and queues its answers on our socket before `sendmsg`
//! returns. `netlink_rcv_skb` (net/netlink/af_netlink.c) sends a NACK
//! for every failing message but an ACK only for one that asked with
//! NLM_F_ACK; so only the last message of each send (the fence) and GETs
//! ask. Each answer carries the request's sequence number, which is how
//! an error finds its entry; a failing message does not stop the ones
//! after it; once the fence's answer is read, every silent message
//! before it succeeded. That spares the kernel an ACK skb and us a
//! `recvmsg` per entry (see the ctnetlink write benchmark in the README).
//! Answers are separate skbs of about 1 KiB truesize each, so the
//! socket's receive buffer is raised ([`ACK_RCVBUF`]) or the NACKs of a
//! failing batch would be dropped (the kernel counts an overrun, we
//! would see ENOBUFS).

use super::codec::{self, Conntrack, DecodeError, EncodeError, Family, Tuple};
use super::nl::{self, ErrorMsg, MsgIter, Reply, Writer, NLM_F_DUMP_INTR};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;

/// A dump datagram is at most 32 KiB (netlink_dump's cap); more is free.
const RECV_BUF: usize = 64 * 1024;
/// Requests per `sendmsg` of a batch, in bytes. The kernel's limit is
/// the socket's send buffer; 64 KiB (a few hundred entries) keeps the
/// answers of one send well inside [`ACK_RCVBUF`].
pub const BATCH_BYTES: usize = 64 * 1024;
/// Receive buffer of the request socket (SO_RCVBUFFORCE, falling back to
/// SO_RCVBUF capped by net.core.rmem_max when not privileged): room for
/// the answers of one [`BATCH_BYTES`] send (≤ ~700 skbs of ≤ 2 KiB
/// truesize, GET answers included) several times over.
pub const ACK_RCVBUF: usize = 8 * 1024 * 1024;
/// A dump the kernel marks inconsistent (NLM_F_DUMP_INTR: the table changed
/// during it) is restarted this many times before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// What went wrong, and whose fault it is (the `Display` says so).
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// Our side: the socket could not be opened, sent on or read from.
    #[error("conntrack netlink I/O failed while {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (errno and its explanation).
    #[error("kernel refused {what}: {message} (errno {errno})")]
    Refused {
        what: &'static str,
        errno: i32,
        message: String,
    },
    /// The entry already exists (NEW with NLM_F_EXCL): a reconcile
    /// signal, not a failure.
    #[error("conntrack entry already exists")]
    Exists,
    /// No such entry (DELETE): a reconcile signal, not a failure.
    #[error("no such conntrack entry")]
    NotFound,
    /// ENOMEM on a create: `nf_conntrack_max` entries are in the table
    /// and none could be early-dropped (`__nf_conntrack_alloc`,
    /// net/netfilter/nf_conntrack_core.c; ctnetlink_create_conntrack
    /// turns every allocation failure into ENOMEM).
    #[error("conntrack table full (ENOMEM: nf_conntrack_max reached)")]
    TableFull,
    /// The kernel did not answer every request of a batch (a bug on one
    /// side, or its answers were dropped for lack of buffer space).
    #[error("kernel answered {answered} of {sent} requests of a batch while {what}")]
    Unanswered {
        what: &'static str,
        sent: usize,
        answered: usize,
    },
    /// The kernel sent something we cannot parse (kernel or codec bug).
    #[error("malformed ctnetlink reply while {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: DecodeError,
    },
    /// The caller's entry cannot be expressed as a request.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The table kept changing under the dump.
    #[error("conntrack dump interrupted by table changes {0} times in a row")]
    DumpInterrupted(usize),
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> ConntrackError {
    move |source| ConntrackError::Io { what, source }
}

fn frame_err(what: &'static str, e: super::nl::FrameError) -> ConntrackError {
    ConntrackError::Decode {
        what,
        source: DecodeError {
            path: "netlink".into(),
            detail: e.0,
        },
    }
}

fn refused(what: &'static str, e: &ErrorMsg) -> ConntrackError {
    let errno = e.error.checked_neg().unwrap_or(i32::MAX);
    match errno {
        libc::EEXIST => return ConntrackError::Exists,
        libc::ENOENT => return ConntrackError::NotFound,
        libc::ENOMEM => return ConntrackError::TableFull,
        _ => {}
    }
    let mut message = io::Error::from_raw_os_error(errno).to_string();
    if let Some(m) = e.ext_msg.as_deref().filter(|m| !m.is_empty()) {
        message = format!("{message}; kernel says: {m}");
    }
    ConntrackError::Refused {
        what,
        errno,
        message,
    }
}

/// The errno of a kernel refusal, if it is one (`Exists`, `NotFound` and
/// `TableFull` are the errnos EEXIST, ENOENT and ENOMEM).
pub fn errno_of(e: &ConntrackError) -> Option<i32> {
    match e {
        ConntrackError::Refused { errno, .. } => Some(*errno),
        ConntrackError::Exists => Some(libc::EEXIST),
        ConntrackError::NotFound => Some(libc::ENOENT),
        ConntrackError::TableFull => Some(libc::ENOMEM),
        _ => None,
    }
}

/// Maps a kernel NACK to the error (public for the tests of the mapping).
pub fn refusal(what: &'static str, errno: i32, ext_msg: Option<&str>) -> ConntrackError {
    refused(
        what,
        &ErrorMsg {
            error: errno.saturating_neg(),
            request: None,
            ext_msg: ext_msg.map(str::to_string),
        },
    )
}

/// Sets SO_RCVBUFFORCE (root: above net.core.rmem_max), else SO_RCVBUF.
pub(super) fn set_rcvbuf(sock: &Socket, bytes: usize) -> io::Result<()> {
    // The kernel doubles the value for bookkeeping overhead; ask for half.
    let half = bytes / 2;
    rustix::net::sockopt::set_socket_recv_buffer_size_force(sock, half)
        .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(sock, half))
        .map_err(io::Error::from)
}

/// Sets or clears NLM_F_ACK in the header of the message at `at` of
/// `buf` (`struct nlmsghdr`: `nlmsg_flags` is the native-endian u16 at
/// byte 6, include/uapi/linux/netlink.h).
fn set_ack(buf: &mut [u8], at: usize, on: bool) {
    let Some(field) = buf.get_mut(at + 6..at + 8) else {
        return;
    };
    let mut flags = u16::from_ne_bytes([field[0], field[1]]);
    if on {
        flags |= nl::NLM_F_ACK;
    } else {
        flags &= !nl::NLM_F_ACK;
    }
    field.copy_from_slice(&flags.to_ne_bytes());
}

/// One request of [`ConntrackSocket::batch`].
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// NEW with NLM_F_CREATE|NLM_F_EXCL: EEXIST if the entry exists.
    Create(&'a Conntrack),
    /// NEW with NLM_F_CREATE: create, or change the existing entry (the
    /// kernel refuses NAT attributes then: EOPNOTSUPP).
    Upsert(&'a Conntrack),
    /// NEW without NLM_F_CREATE, without NAT attributes: change the
    /// existing entry, ENOENT if there is none.
    Update(&'a Conntrack),
    /// DELETE by original tuple and zone.
    Delete { orig: &'a Tuple, zone: Option<u16> },
    /// GET by original tuple and zone: the entry as the kernel holds it.
    Get { orig: &'a Tuple, zone: Option<u16> },
}

impl Request<'_> {
    fn encode(&self, w: &mut Writer, seq: u32) -> Result<(), EncodeError> {
        match *self {
            Request::Create(ct) => codec::encode_new(w, seq, ct),
            Request::Upsert(ct) => codec::encode_upsert(w, seq, ct),
            Request::Update(ct) => codec::encode_update(w, seq, ct),
            Request::Delete { orig, zone } => codec::encode_delete(w, seq, orig, zone),
            Request::Get { orig, zone } => codec::encode_get(w, seq, orig, zone),
        }
    }

    /// A GET's answer is the entry: it keeps its NLM_F_ACK, so that a
    /// missing answer is noticed instead of read as success.
    fn answers_with_data(&self) -> bool {
        matches!(self, Request::Get { .. })
    }

    fn what(&self) -> &'static str {
        match self {
            Request::Create(_) => "creating a conntrack entry",
            Request::Upsert(_) => "creating or updating a conntrack entry",
            Request::Update(_) => "updating a conntrack entry",
            Request::Delete { .. } => "deleting a conntrack entry",
            Request::Get { .. } => "reading a conntrack entry",
        }
    }
}

/// The answer to one request of a batch: `Ok(Some(entry))` for a GET,
/// `Ok(None)` for an ACK.
pub type Answer = Result<Option<Conntrack>, ConntrackError>;

/// A ctnetlink request socket.
pub struct ConntrackSocket {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
    acks: BatchAcks,
}

/// Which messages of a [`ConntrackSocket::batch`] ask for an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchAcks {
    /// Only the last of each send and GETs (module doc): the default.
    #[default]
    Fence,
    /// Every message, as one-at-a-time tools do; kept to measure what
    /// the fence saves (`ctsync-bench write`).
    Every,
}

enum Outcome {
    Done,
    Interrupted,
}

impl ConntrackSocket {
    /// Opens and connects a NETLINK_NETFILTER socket in the calling
    /// thread's network namespace.
    pub fn open() -> Result<ConntrackSocket, ConntrackError> {
        const WHAT: &str = "opening the NETLINK_NETFILTER socket";
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io_err(WHAT))?;
        sock.bind_auto().map_err(io_err(WHAT))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io_err(WHAT))?;
        // Best effort (older kernels): the kernel's reason text, and errors
        // that do not echo the whole request back.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // Room for the answers of a batch (module doc); without privilege
        // the smaller SO_RCVBUF still works for single requests.
        let _ = set_rcvbuf(&sock, ACK_RCVBUF);
        Ok(ConntrackSocket {
            sock,
            seq: 0,
            rbuf: Vec::with_capacity(RECV_BUF),
            acks: BatchAcks::Fence,
        })
    }

    /// This socket's netlink port id. The kernel puts it in the
    /// `nlmsg_pid` of the conntrack events our writes cause (see
    /// [`super::events`]), which is how their echo is recognised.
    pub fn portid(&self) -> Result<u32, ConntrackError> {
        let mut addr = SocketAddr::new(0, 0);
        self.sock
            .get_address(&mut addr)
            .map_err(io_err("reading the netlink port id"))?;
        Ok(addr.port_number())
    }

    /// Chooses which messages of a batch ask for an ACK.
    pub fn set_batch_acks(&mut self, acks: BatchAcks) {
        self.acks = acks;
    }

    /// Sends `reqs` in as few `sendmsg` calls as [`BATCH_BYTES`] allows
    /// and returns one answer per request, in order. A request that
    /// cannot be encoded is answered with its `Encode` error and not sent.
    /// The outer error means the socket failed and the answers of the
    /// requests from the failing send on are unknown.
    pub fn batch(&mut self, reqs: &[Request<'_>]) -> Result<Vec<Answer>, ConntrackError> {
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(reqs.len());
        answers.resize_with(reqs.len(), || None);
        let mut w = Writer::new();
        // The messages in `w`, in sequence order from `base`: their index
        // into `reqs` and their offset in `w.buf`.
        let mut sent: Vec<(usize, usize)> = Vec::new();
        let mut base = self.seq.wrapping_add(1);
        for (i, r) in reqs.iter().enumerate() {
            let seq = base.wrapping_add(sent.len() as u32);
            let before = w.buf.len();
            match r.encode(&mut w, seq) {
                Ok(()) => {
                    // Only the fence asks for an ACK (module doc).
                    if self.acks == BatchAcks::Fence && !r.answers_with_data() {
                        set_ack(&mut w.buf, before, false);
                    }
                    sent.push((i, before));
                }
                Err(e) => {
                    answers[i] = Some(Err(e.into()));
                    continue;
                }
            }
            if w.buf.len() >= BATCH_BYTES && !sent.is_empty() {
                // Over the limit: send what came before this message (if
                // anything did), keep this one for the next send.
                if before > 0 {
                    sent.pop();
                    let tail = w.buf.split_off(before);
                    self.flush(reqs, &mut w.buf, base, &sent, &mut answers)?;
                    base = base.wrapping_add(sent.len() as u32);
                    sent.clear();
                    w.buf = tail;
                    // Renumber the kept message: it was encoded with the
                    // next sequence number after the flushed ones, which
                    // is now `base`.
                    debug_assert_eq!(seq, base);
                    sent.push((i, 0));
                } else {
                    self.flush(reqs, &mut w.buf, base, &sent, &mut answers)?;
                    base = base.wrapping_add(sent.len() as u32);
                    sent.clear();
                    w.buf.clear();
                }
            }
        }
        if !sent.is_empty() {
            self.flush(reqs, &mut w.buf, base, &sent, &mut answers)?;
            base = base.wrapping_add(sent.len() as u32);
        }
        self.seq = base.wrapping_sub(1);
        Ok(answers
            .into_iter()
            .map(|a| {
                a.unwrap_or(Err(ConntrackError::Unanswered {
                    what: "collecting batch answers",
                    sent: 1,
                    answered: 0,
                }))
            })
            .collect())
    }

    /// One `sendmsg` of a batch, then its answers: every message was
    /// handled before `sendmsg` returned (module doc), so they are read
    /// without blocking, and a missing one is an error, not a hang. The
    /// last message is the fence: it carries NLM_F_ACK, and once its
    /// answer is read every earlier message that was not refused was
    /// done.
    fn flush(
        &mut self,
        reqs: &[Request<'_>],
        buf: &mut [u8],
        base: u32,
        sent: &[(usize, usize)],
        answers: &mut [Option<Answer>],
    ) -> Result<(), ConntrackError> {
        const WHAT: &str = "sending a batch of conntrack requests";
        let Some(&(_, fence_at)) = sent.last() else {
            return Ok(());
        };
        set_ack(buf, fence_at, true);
        self.send(WHAT, buf)?;
        let fence = sent.len() - 1;
        let mut entries: Vec<Option<Conntrack>> = vec![None; sent.len()];
        let mut answered = 0;
        let mut fenced = false;
        while !fenced {
            match nl::recv_datagram(&self.sock, &mut self.rbuf, libc::MSG_DONTWAIT) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(ConntrackError::Unanswered {
                        what: WHAT,
                        sent: sent.len(),
                        answered,
                    })
                }
                Err(source) => {
                    return Err(ConntrackError::Io {
                        what: "reading the answers to a batch",
                        source,
                    })
                }
            }
            for m in MsgIter::new(&self.rbuf) {
                let m = m.map_err(|e| frame_err(WHAT, e))?;
                let k = m.header.seq.wrapping_sub(base) as usize;
                // Late replies to an earlier request are not ours.
                let Some(&(i, _)) = sent.get(k) else { continue };
                let reply = nl::reply(&m);
                fenced |= k == fence && reply.is_final();
                if answers[i].is_some() {
                    continue;
                }
                let what = reqs[i].what();
                let answer = match reply {
                    Reply::Data(payload) => {
                        match codec::decode(payload) {
                            Ok(ct) => entries[k] = Some(ct),
                            Err(source) => {
                                answers[i] = Some(Err(ConntrackError::Decode { what, source }));
                                answered += 1;
                            }
                        }
                        continue;
                    }
                    Reply::Done => Ok(entries[k].take()),
                    Reply::Refused(e) => Err(refused(what, &e)),
                    Reply::Malformed(e) => Err(frame_err(what, e)),
                };
                answers[i] = Some(answer);
                answered += 1;
            }
        }
        // Messages without NLM_F_ACK are answered only when refused: the
        // silent ones before the fence succeeded. A GET always answers,
        // so a silent one is a lost answer (reported by `batch`).
        for &(i, _) in sent {
            if answers[i].is_none() && !reqs[i].answers_with_data() {
                answers[i] = Some(Ok(None));
            }
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Every entry of the table (`None`) or of one family.
    pub fn dump(&mut self, family: Option<Family>) -> Result<Vec<Conntrack>, ConntrackError> {
        const WHAT: &str = "dumping the conntrack table";
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            let mut w = Writer::new();
            codec::encode_dump(&mut w, seq, family)?;
            let mut out = Vec::new();
            let mut first_err = None;
            let outcome = self.transact(WHAT, seq, &w.buf, |payload| {
                match codec::decode(payload) {
                    Ok(ct) => out.push(ct),
                    // Keep draining: the rest of the dump must not be left
                    // for the next request to read.
                    Err(source) => {
                        first_err.get_or_insert(ConntrackError::Decode { what: WHAT, source });
                    }
                }
            })?;
            if let Some(e) = first_err {
                return Err(e);
            }
            match outcome {
                Outcome::Done => return Ok(out),
                Outcome::Interrupted => continue,
            }
        }
        Err(ConntrackError::DumpInterrupted(DUMP_ATTEMPTS))
    }

    /// Creates `ct` (IPCTNL_MSG_CT_NEW with NLM_F_CREATE|NLM_F_EXCL).
    /// [`ConntrackError::Exists`] if an entry with that tuple is there.
    pub fn create(&mut self, ct: &Conntrack) -> Result<(), ConntrackError> {
        const WHAT: &str = "creating a conntrack entry";
        let seq = self.next_seq();
        let mut w = Writer::new();
        codec::encode_new(&mut w, seq, ct)?;
        self.transact(WHAT, seq, &w.buf, |_| {}).map(|_| ())
    }

    /// Deletes the entry whose original tuple is `orig` in `zone`.
    /// [`ConntrackError::NotFound`] if there is none.
    pub fn delete(&mut self, orig: &Tuple, zone: Option<u16>) -> Result<(), ConntrackError> {
        const WHAT: &str = "deleting a conntrack entry";
        let seq = self.next_seq();
        let mut w = Writer::new();
        codec::encode_delete(&mut w, seq, orig, zone)?;
        self.transact(WHAT, seq, &w.buf, |_| {}).map(|_| ())
    }

    fn send(&self, what: &'static str, buf: &[u8]) -> Result<(), ConntrackError> {
        nl::send_all(&self.sock, buf).map_err(|source| ConntrackError::Io { what, source })
    }

    fn recv(&mut self) -> io::Result<()> {
        nl::recv_datagram(&self.sock, &mut self.rbuf, 0)
    }

    /// Sends one request and reads its replies until NLMSG_DONE (dumps) or
    /// the ACK/NACK (everything else is sent with NLM_F_ACK), calling
    /// `each` with the payload of every entry message.
    fn transact(
        &mut self,
        what: &'static str,
        seq: u32,
        request: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<Outcome, ConntrackError> {
        self.send(what, request)?;
        let mut first_err: Option<ConntrackError> = None;
        let mut interrupted = false;
        loop {
            self.recv().map_err(io_err(what))?;
            let mut done = false;
            for m in MsgIter::new(&self.rbuf) {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        // Nothing after a bad length can be trusted, and we
                        // cannot tell whether DONE was in it: give up on
                        // this socket's request.
                        return Err(frame_err(what, e));
                    }
                };
                // Late replies to an earlier request are not ours.
                if m.header.seq != seq {
                    continue;
                }
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                let r = nl::reply(&m);
                done |= r.is_final();
                match r {
                    Reply::Data(payload) => each(payload),
                    Reply::Done => {}
                    Reply::Refused(e) => {
                        first_err.get_or_insert(refused(what, &e));
                    }
                    Reply::Malformed(e) => {
                        first_err.get_or_insert(frame_err(what, e));
                    }
                }
            }
            if done {
                return match first_err {
                    Some(e) => Err(e),
                    None if interrupted => Ok(Outcome::Interrupted),
                    None => Ok(Outcome::Done),
                };
            }
        }
    }
}
