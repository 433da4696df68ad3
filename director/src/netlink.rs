//! Netlink framing shared by every kernel API the director speaks (generic
//! netlink for IPVS and nlctrl, nfnetlink for conntrack): message and
//! attribute views that never panic, and an append-only writer with a
//! `begin_*` per family header (`struct genlmsghdr`, `struct nfgenmsg`).
//!
//! The constants come from `netlink-packet-core` / `netlink-packet-generic`;
//! the walking is done here by hand because their `NlaBuffer` accessors
//! `unwrap()` internally and we want one place that bounds-checks every
//! offset of kernel input.
//!
//! ```text
//! include/uapi/linux/netlink.h, struct nlmsghdr (host byte order):
//!  0               8               16              24              32
//! +---------------+---------------+---------------+---------------+
//! |                  nlmsg_len (header + payload)                  |
//! +---------------+---------------+---------------+---------------+
//! |          nlmsg_type           |          nlmsg_flags          |
//! +---------------+---------------+---------------+---------------+
//! |                           nlmsg_seq                            |
//! +---------------+---------------+---------------+---------------+
//! |                           nlmsg_pid                            |
//! +---------------+---------------+---------------+---------------+
//! include/uapi/linux/genetlink.h, struct genlmsghdr:
//! |      cmd      |    version    |           reserved            |
//! +---------------+---------------+---------------+---------------+
//! struct nlattr, then value, padded to 4 bytes (NLA_ALIGNTO):
//! |            nla_len            |  nla_type (N|O|type:14 bits)  |
//! +---------------+---------------+---------------+---------------+
//! ```

pub use netlink_packet_core::{
    NLA_F_NESTED, NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
pub use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_CMD_GETFAMILY, GENL_HDRLEN, GENL_ID_CTRL,
};

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nfgenmsg)` (include/uapi/linux/netfilter/nfnetlink.h).
pub const NFGEN_HDRLEN: usize = 4;
/// include/uapi/linux/netlink.h: the dump was interrupted by a change of
/// the table; its content may be inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;
/// include/uapi/linux/netlink.h `enum nlmsgerr_attrs`: NLMSGERR_ATTR_MSG.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// Rounds up to the 4-byte netlink alignment, saturating instead of
/// overflowing (a saturated length is then rejected by the bounds checks).
pub fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// A framing problem in kernel input: what was being read and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// A netlink message header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    pub len: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl MsgHeader {
    pub fn parse(b: &[u8]) -> Option<MsgHeader> {
        Some(MsgHeader {
            len: read_u32(b, 0)?,
            kind: read_u16(b, 4)?,
            flags: read_u16(b, 6)?,
            seq: read_u32(b, 8)?,
            pid: read_u32(b, 12)?,
        })
    }
}

/// One netlink message inside a receive buffer (a view: header + payload).
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub header: MsgHeader,
    pub payload: &'a [u8],
}

/// Iterates the messages of one datagram. Stops at the first malformed one
/// (yielding an error once): after a bad length nothing behind it can be
/// trusted.
pub struct MsgIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> MsgIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        MsgIter { buf, pos: 0 }
    }
}

impl<'a> Iterator for MsgIter<'a> {
    type Item = Result<Msg<'a>, FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let fail = |this: &mut Self, why: String| {
            this.pos = this.buf.len();
            Some(Err(FrameError(why)))
        };
        let Some(header) = MsgHeader::parse(rest) else {
            return fail(
                self,
                format!(
                    "{} trailing bytes, shorter than a netlink header",
                    rest.len()
                ),
            );
        };
        let len = header.len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return fail(
                self,
                format!("netlink message length {len} outside 16..={}", rest.len()),
            );
        }
        let payload = rest.get(NLMSG_HDRLEN..len).unwrap_or_default();
        self.pos = self.pos.saturating_add(align4(len));
        Some(Ok(Msg { header, payload }))
    }
}

/// An `NLMSG_ERROR` payload (include/uapi/linux/netlink.h `struct
/// nlmsgerr`): `int error; struct nlmsghdr msg;` then, unless the ack is
/// `NLM_F_CAPPED`, the rest of the request; then, with `NLM_F_ACK_TLVS`,
/// extended-ack attributes (`NLMSGERR_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// 0 for an ACK, a negative errno for a NACK.
    pub error: i32,
    /// Header of the request being answered.
    pub request: Option<MsgHeader>,
    /// `NLMSGERR_ATTR_MSG`, if the kernel explained itself.
    pub ext_msg: Option<String>,
}

impl ErrorMsg {
    pub fn parse(header: &MsgHeader, p: &[u8]) -> Result<ErrorMsg, FrameError> {
        let error = read_u32(p, 0).map(|v| v as i32).ok_or_else(|| {
            FrameError(format!("NLMSG_ERROR payload of {} bytes, need 4", p.len()))
        })?;
        let request = p.get(4..).and_then(MsgHeader::parse);
        let mut ext_msg = None;
        if header.flags & NLM_F_ACK_TLVS != 0 {
            let tlv_at = if header.flags & NLM_F_CAPPED != 0 {
                Some(4 + NLMSG_HDRLEN)
            } else {
                request.map(|r| 4usize.saturating_add(align4(r.len as usize)))
            };
            if let Some(tlvs) = tlv_at.and_then(|at| p.get(at..)) {
                for a in AttrIter::new(tlvs).flatten() {
                    if a.kind == NLMSGERR_ATTR_MSG {
                        ext_msg = Some(c_string(a.value));
                    }
                }
            }
        }
        Ok(ErrorMsg {
            error,
            request,
            ext_msg,
        })
    }
}

/// What one reply message to a request means to the loop waiting for it.
#[derive(Debug)]
pub enum Reply<'a> {
    /// A message of the request's own type (a dump entry, a GET answer).
    Data(&'a [u8]),
    /// `NLMSG_ERROR` with error 0, or `NLMSG_DONE` with status 0: finished.
    Done,
    /// `NLMSG_ERROR` with an errno, or `NLMSG_DONE` whose final status is a
    /// negative errno (a dump that failed part way): finished, refused.
    Refused(ErrorMsg),
    /// An `NLMSG_ERROR` too short to read: finished, undecodable.
    Malformed(FrameError),
}

impl Reply<'_> {
    /// The request has its final answer (nothing more will come for it).
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Data(_))
    }
}

/// Classifies one message of a reply (the caller checks the sequence).
pub fn reply<'a>(m: &Msg<'a>) -> Reply<'a> {
    match m.header.kind {
        NLMSG_ERROR => match ErrorMsg::parse(&m.header, m.payload) {
            Ok(e) if e.error == 0 => Reply::Done,
            Ok(e) => Reply::Refused(e),
            Err(e) => Reply::Malformed(e),
        },
        NLMSG_DONE => {
            // The DONE payload is the dump's final int status.
            match read_u32(m.payload, 0).map(|v| v as i32) {
                Some(s) if s < 0 => Reply::Refused(ErrorMsg {
                    error: s,
                    request: None,
                    ext_msg: None,
                }),
                _ => Reply::Done,
            }
        }
        _ => Reply::Data(m.payload),
    }
}

/// A string attribute value: up to the first NUL, lossily decoded.
pub fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(v.get(..end).unwrap_or_default()).into_owned()
}

/// One attribute (a view). `kind` has the `NLA_F_NESTED` /
/// `NLA_F_NET_BYTEORDER` bits masked off; `raw_kind` has them (conntrack
/// re-encodes unknown attributes exactly as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub raw_kind: u16,
    pub value: &'a [u8],
}

/// Iterates the attributes of a payload; yields one error then stops on a
/// malformed attribute.
pub struct AttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> AttrIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        AttrIter { buf, pos: 0 }
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<Attr<'a>, FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let (Some(len), Some(raw_kind)) = (read_u16(rest, 0), read_u16(rest, 2)) else {
            self.pos = self.buf.len();
            return Some(Err(FrameError(format!(
                "{} trailing bytes, shorter than an attribute header",
                rest.len()
            ))));
        };
        let len = len as usize;
        let Some(value) = rest.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN) else {
            self.pos = self.buf.len();
            return Some(Err(FrameError(format!(
                "attribute type {} claims length {len}, but only {} bytes remain (minimum 4)",
                raw_kind & NLA_TYPE_MASK,
                rest.len()
            ))));
        };
        self.pos = self.pos.saturating_add(align4(len));
        Some(Ok(Attr {
            kind: raw_kind & NLA_TYPE_MASK,
            raw_kind,
            value,
        }))
    }
}

/// Moves the calling thread into the network namespace `/run/netns/NAME`
/// for good (setns(2) through rustix): sockets it creates afterwards
/// belong there. Threads that live in a namespace (benchmarks' samplers
/// and generators) call this first; [`in_netns`] for a one-off.
pub fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{name}");
    let enter = || -> std::io::Result<()> {
        let fd = std::fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(
            fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok(())
    };
    enter().map_err(|e| {
        std::io::Error::new(e.kind(), format!("entering network namespace {path}: {e}"))
    })
}

/// Runs `open` on a short-lived thread that entered the network namespace
/// `/run/netns/NAME` ([`enter_netns`]): a socket belongs to the namespace
/// it was created in, so this opens sockets there while the caller's
/// thread stays where it is. The outer error is entering it.
pub fn in_netns<T: Send, E: Send>(
    name: &str,
    open: impl FnOnce() -> Result<T, E> + Send,
) -> std::io::Result<Result<T, E>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(name)?;
            Ok(open())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    })
}

/// Sends one whole request on `sock` (EINTR retried). Netlink sends a
/// datagram whole or not at all; a short count would be a kernel bug, and
/// is an error rather than half a request.
pub fn send_all(sock: &netlink_sys::Socket, buf: &[u8]) -> std::io::Result<()> {
    loop {
        match sock.send(buf, 0) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(std::io::Error::other(format!(
                    "short netlink send: {n} of {} bytes",
                    buf.len()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one whole datagram into `rbuf` (EINTR retried): peeked first
/// with `MSG_TRUNC`, which makes the kernel report its real size, the
/// buffer grown to fit, then read. `flags` (`MSG_DONTWAIT`) apply to both.
pub fn recv_datagram(
    sock: &netlink_sys::Socket,
    rbuf: &mut Vec<u8>,
    flags: libc::c_int,
) -> std::io::Result<()> {
    loop {
        rbuf.clear();
        let cap = rbuf.capacity();
        match sock.recv(rbuf, flags | libc::MSG_PEEK | libc::MSG_TRUNC) {
            Ok(n) if n > cap => {
                rbuf.clear();
                rbuf.reserve(n);
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        rbuf.clear();
        match sock.recv(rbuf, flags) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Appends netlink messages and attributes to a byte buffer. Lengths are
/// patched in when a message or nest is closed.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

/// An attribute or message too large for its 16-bit (attr) length field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong;

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// Starts a generic netlink message; returns its start offset for
    /// [`Writer::end_msg`].
    pub fn begin_genl(
        &mut self,
        family: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        cmd: u8,
        version: u8,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&family.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&pid.to_ne_bytes());
        self.buf.extend_from_slice(&[cmd, version, 0, 0]);
        start
    }

    /// Starts an nfnetlink message (`kind` = subsystem << 8 | message, then
    /// `struct nfgenmsg`: family, NFNETLINK_V0, res_id 0); returns its
    /// start offset for [`Writer::end_msg`].
    pub fn begin_nfnl(&mut self, kind: u16, flags: u16, seq: u32, family: u8) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the kernel fills in our port id.
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0, 0, 0]);
        start
    }

    pub fn end_msg(&mut self, start: usize) -> Result<(), TooLong> {
        let len = u32::try_from(self.buf.len() - start).map_err(|_| TooLong)?;
        if let Some(s) = self.buf.get_mut(start..start + 4) {
            s.copy_from_slice(&len.to_ne_bytes());
        }
        Ok(())
    }

    /// Drops everything from `start` on (a message that failed to encode).
    pub fn truncate(&mut self, start: usize) {
        self.buf.truncate(start);
    }

    pub fn put(&mut self, kind: u16, value: &[u8]) -> Result<(), TooLong> {
        let len = u16::try_from(NLA_HDRLEN + value.len()).map_err(|_| TooLong)?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        Ok(())
    }

    pub fn put_u8(&mut self, kind: u16, v: u8) -> Result<(), TooLong> {
        self.put(kind, &[v])
    }
    pub fn put_u16(&mut self, kind: u16, v: u16) -> Result<(), TooLong> {
        self.put(kind, &v.to_ne_bytes())
    }
    pub fn put_be16(&mut self, kind: u16, v: u16) -> Result<(), TooLong> {
        self.put(kind, &v.to_be_bytes())
    }
    pub fn put_u32(&mut self, kind: u16, v: u32) -> Result<(), TooLong> {
        self.put(kind, &v.to_ne_bytes())
    }
    pub fn put_u64(&mut self, kind: u16, v: u64) -> Result<(), TooLong> {
        self.put(kind, &v.to_ne_bytes())
    }
    pub fn put_be32(&mut self, kind: u16, v: u32) -> Result<(), TooLong> {
        self.put(kind, &v.to_be_bytes())
    }
    pub fn put_be64(&mut self, kind: u16, v: u64) -> Result<(), TooLong> {
        self.put(kind, &v.to_be_bytes())
    }
    /// A NUL-terminated string (`NLA_PUT_STRING`: strlen + 1 bytes).
    pub fn put_str(&mut self, kind: u16, s: &str) -> Result<(), TooLong> {
        let len = u16::try_from(NLA_HDRLEN + s.len() + 1).map_err(|_| TooLong)?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    /// Opens a nest without `NLA_F_NESTED`, as libnl (and so ipvsadm)
    /// writes them; IPVS requests stay byte-identical to ipvsadm's.
    pub fn begin_nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    /// Opens a nest marked `NLA_F_NESTED`, as the kernel's
    /// `nla_nest_start()` and libmnl (the conntrack CLI) write them.
    pub fn begin_nest_marked(&mut self, kind: u16) -> usize {
        self.begin_nest(kind | NLA_F_NESTED)
    }

    pub fn end_nest(&mut self, start: usize) -> Result<(), TooLong> {
        let len = u16::try_from(self.buf.len() - start).map_err(|_| TooLong)?;
        if let Some(s) = self.buf.get_mut(start..start + 2) {
            s.copy_from_slice(&len.to_ne_bytes());
        }
        Ok(())
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend(std::iter::repeat_n(0u8, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_iter_rejects_bad_lengths() {
        // len 2 < header
        let b = [2u8, 0, 1, 0];
        assert!(AttrIter::new(&b).next().unwrap().is_err());
        // len 8 > buffer
        let b = [8u8, 0, 1, 0, 0];
        assert!(AttrIter::new(&b).next().unwrap().is_err());
        // unpadded final attribute is accepted
        let b = [5u8, 0, 1, 0, 7];
        let a = AttrIter::new(&b).next().unwrap().unwrap();
        assert_eq!(a.value, &[7]);
    }

    #[test]
    fn msg_iter_rejects_bad_lengths() {
        let mut b = vec![0u8; 20];
        b[0] = 200;
        let mut it = MsgIter::new(&b);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn writer_nests_and_pads() {
        let mut w = Writer::new();
        let m = w.begin_genl(30, NLM_F_REQUEST, 7, 0, 1, 1);
        let n = w.begin_nest(1);
        w.put_str(6, "rr").unwrap();
        w.end_nest(n).unwrap();
        w.end_msg(m).unwrap();
        assert_eq!(w.buf.len(), 16 + 4 + 4 + 8);
        let msg = MsgIter::new(&w.buf).next().unwrap().unwrap();
        assert_eq!(msg.header.seq, 7);
        let outer: Vec<_> = AttrIter::new(&msg.payload[4..]).collect();
        assert_eq!(outer.len(), 1);
    }
}
