//! [`ConntrackSocket`]: blocking ctnetlink requests over a NETLINK_NETFILTER
//! socket (netlink-sys; no unsafe here).
//!
//! The socket belongs to the network namespace of the thread that opened
//! it: conntrack tables are per netns, so open it where the table is.
//!
//! Events (a later issue) need a second socket bound to the groups
//! NFNLGRP_CONNTRACK_NEW / _UPDATE / _DESTROY (1, 2, 3), whose messages are
//! the same entries as a dump (`codec::decode`, message type NEW for new
//! and update, DELETE for destroy); requests and events are kept on
//! separate sockets so that an event burst cannot interleave with, or
//! overrun, a dump.

use super::codec::{self, Conntrack, DecodeError, EncodeError, Family, Tuple};
use super::nl::{self, ErrorMsg, MsgIter, Reply, Writer, NLM_F_DUMP_INTR};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;

/// A dump datagram is at most 32 KiB (netlink_dump's cap); more is free.
const RECV_BUF: usize = 64 * 1024;
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

/// A ctnetlink request socket.
pub struct ConntrackSocket {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
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
        Ok(ConntrackSocket {
            sock,
            seq: 0,
            rbuf: Vec::with_capacity(RECV_BUF),
        })
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
