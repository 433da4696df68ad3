//! ctnetlink messages (`include/uapi/linux/netfilter/nfnetlink_conntrack.h`):
//! pure encode / decode between [`Conntrack`] and bytes. No sockets here.
//!
//! Decoding is view then repr: [`super::nl::AttrIter`] is the view (every
//! length checked once against what remains), the `*_repr` functions
//! validate it into values (exact value sizes, address family consistent
//! with `nfgen_family`, required attributes present). Attributes we do not
//! model are kept as [`RawAttr`] with their type bits as received, so an
//! entry decoded from one kernel can be written to another without losing
//! them. Nothing here panics on any input; every failure is a
//! [`DecodeError`] naming the attribute path.
//!
//! Byte order: every integer attribute of ctnetlink is big endian (the
//! kernel uses `nla_put_be*`; it does not set `NLA_F_NET_BYTEORDER`), except
//! the u8 ones and the two-byte `struct nf_ct_tcp_flags`.
//!
//! ```text
//! One conntrack entry (IPCTNL_MSG_CT_NEW reply to a dump, 6.x order):
//! nlmsghdr | nfgenmsg{family=AF_INET|AF_INET6}
//!   CTA_TUPLE_ORIG (nest)                       CTA_TUPLE_REPLY (nest)
//!     CTA_TUPLE_IP (nest)                         (same layout)
//!       CTA_IP_V4_SRC / CTA_IP_V6_SRC  4|16 bytes
//!       CTA_IP_V4_DST / CTA_IP_V6_DST  4|16 bytes
//!     CTA_TUPLE_PROTO (nest)
//!       CTA_PROTO_NUM         u8
//!       CTA_PROTO_SRC_PORT    be16   (tcp, udp, sctp, dccp, udplite, gre)
//!       CTA_PROTO_DST_PORT    be16
//!       CTA_PROTO_ICMP_ID     be16   (or CTA_PROTO_ICMPV6_* for 58)
//!       CTA_PROTO_ICMP_TYPE   u8
//!       CTA_PROTO_ICMP_CODE   u8
//!     CTA_TUPLE_ZONE          be16   (directional zones only)
//!   CTA_ZONE be16 | CTA_STATUS be32 | CTA_MARK be32 | CTA_ID be32
//!   CTA_USE be32 | CTA_TIMEOUT be32 (seconds left)
//!   CTA_PROTOINFO (nest)
//!     CTA_PROTOINFO_TCP (nest)
//!       CTA_PROTOINFO_TCP_STATE u8, _WSCALE_ORIGINAL u8, _WSCALE_REPLY u8,
//!       _FLAGS_ORIGINAL / _FLAGS_REPLY  struct nf_ct_tcp_flags {u8 flags; u8 mask}
//!   CTA_COUNTERS_ORIG / _REPLY (nest): CTA_COUNTERS_PACKETS be64, _BYTES be64
//!   CTA_HELP (nest): CTA_HELP_NAME string | CTA_SECCTX (nest): _NAME string
//!   CTA_SEQ_ADJ_ORIG / _REPLY (nest): CORRECTION_POS, OFFSET_BEFORE, OFFSET_AFTER be32
//!   CTA_LABELS bytes | CTA_TIMESTAMP (nest): START be64, STOP be64 (ns)
//!   CTA_SYNPROXY, CTA_TIMESTAMP_EVENT, ...: kept as RawAttr
//! Requests only: CTA_NAT_SRC / CTA_NAT_DST (nest):
//!   CTA_NAT_V4_MINIP be32 | CTA_NAT_V4_MAXIP | CTA_NAT_V6_MINIP 16 | _V6_MAXIP
//!   CTA_NAT_PROTO (nest): CTA_PROTONAT_PORT_MIN be16, CTA_PROTONAT_PORT_MAX be16
//! ```

use super::nl::{self, Attr, AttrIter, TooLong, Writer, NFGEN_HDRLEN};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// include/uapi/linux/netfilter/nfnetlink.h `NFNL_SUBSYS_CTNETLINK`.
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;

/// `enum cntl_msg_types`.
pub mod msg {
    pub const NEW: u8 = 0;
    pub const GET: u8 = 1;
    pub const DELETE: u8 = 2;
}

/// `nlmsg_type` of a ctnetlink message.
pub fn msg_type(m: u8) -> u16 {
    (u16::from(NFNL_SUBSYS_CTNETLINK) << 8) | u16::from(m)
}

/// `enum ctattr_type`.
pub mod cta {
    pub const TUPLE_ORIG: u16 = 1;
    pub const TUPLE_REPLY: u16 = 2;
    pub const STATUS: u16 = 3;
    pub const PROTOINFO: u16 = 4;
    pub const HELP: u16 = 5;
    pub const NAT_SRC: u16 = 6;
    pub const TIMEOUT: u16 = 7;
    pub const MARK: u16 = 8;
    pub const COUNTERS_ORIG: u16 = 9;
    pub const COUNTERS_REPLY: u16 = 10;
    pub const USE: u16 = 11;
    pub const ID: u16 = 12;
    pub const NAT_DST: u16 = 13;
    pub const TUPLE_MASTER: u16 = 14;
    pub const SEQ_ADJ_ORIG: u16 = 15;
    pub const SEQ_ADJ_REPLY: u16 = 16;
    pub const ZONE: u16 = 18;
    pub const SECCTX: u16 = 19;
    pub const TIMESTAMP: u16 = 20;
    pub const LABELS: u16 = 22;
    pub const SYNPROXY: u16 = 24;
}

/// `enum ctattr_tuple`, `enum ctattr_ip`, `enum ctattr_l4proto`.
pub mod tuple_attr {
    pub const IP: u16 = 1;
    pub const PROTO: u16 = 2;
    pub const ZONE: u16 = 3;
    pub const IP_V4_SRC: u16 = 1;
    pub const IP_V4_DST: u16 = 2;
    pub const IP_V6_SRC: u16 = 3;
    pub const IP_V6_DST: u16 = 4;
    pub const PROTO_NUM: u16 = 1;
    pub const PROTO_SRC_PORT: u16 = 2;
    pub const PROTO_DST_PORT: u16 = 3;
    pub const PROTO_ICMP_ID: u16 = 4;
    pub const PROTO_ICMP_TYPE: u16 = 5;
    pub const PROTO_ICMP_CODE: u16 = 6;
    pub const PROTO_ICMPV6_ID: u16 = 7;
    pub const PROTO_ICMPV6_TYPE: u16 = 8;
    pub const PROTO_ICMPV6_CODE: u16 = 9;
}

/// `enum ctattr_protoinfo`, `enum ctattr_protoinfo_tcp`.
pub mod protoinfo_attr {
    pub const TCP: u16 = 1;
    pub const TCP_STATE: u16 = 1;
    pub const TCP_WSCALE_ORIGINAL: u16 = 2;
    pub const TCP_WSCALE_REPLY: u16 = 3;
    pub const TCP_FLAGS_ORIGINAL: u16 = 4;
    pub const TCP_FLAGS_REPLY: u16 = 5;
}

/// `enum ctattr_counters`, `ctattr_tstamp`, `ctattr_seqadj`, `ctattr_nat`,
/// `ctattr_protonat`, `ctattr_help`, `ctattr_secctx`.
pub mod sub_attr {
    pub const COUNTERS_PACKETS: u16 = 1;
    pub const COUNTERS_BYTES: u16 = 2;
    pub const COUNTERS32_PACKETS: u16 = 3;
    pub const COUNTERS32_BYTES: u16 = 4;
    pub const COUNTERS_PAD: u16 = 5;
    pub const TIMESTAMP_START: u16 = 1;
    pub const TIMESTAMP_STOP: u16 = 2;
    pub const TIMESTAMP_PAD: u16 = 3;
    pub const SEQADJ_CORRECTION_POS: u16 = 1;
    pub const SEQADJ_OFFSET_BEFORE: u16 = 2;
    pub const SEQADJ_OFFSET_AFTER: u16 = 3;
    pub const NAT_V4_MINIP: u16 = 1;
    pub const NAT_V4_MAXIP: u16 = 2;
    pub const NAT_PROTO: u16 = 3;
    pub const NAT_V6_MINIP: u16 = 4;
    pub const NAT_V6_MAXIP: u16 = 5;
    pub const PROTONAT_PORT_MIN: u16 = 1;
    pub const PROTONAT_PORT_MAX: u16 = 2;
    pub const HELP_NAME: u16 = 1;
    pub const SECCTX_NAME: u16 = 1;
}

/// include/uapi/linux/netfilter/nf_conntrack_common.h `enum ip_conntrack_status`.
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const SEQ_ADJUST: u32 = 1 << 6;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DST_NAT_DONE: u32 = 1 << 8;
    pub const DYING: u32 = 1 << 9;
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    pub const TEMPLATE: u32 = 1 << 11;
    pub const UNTRACKED: u32 = 1 << 12;
    pub const HELPER: u32 = 1 << 13;
    pub const OFFLOAD: u32 = 1 << 14;
    pub const HW_OFFLOAD: u32 = 1 << 15;
    /// `IPS_UNCHANGEABLE_MASK`: bits only the kernel sets.
    /// [`super::encode_new`] drops them (and sends CONFIRMED, see
    /// `encode_attrs`); the NAT bits come back from CTA_NAT_SRC/DST.
    pub const UNCHANGEABLE: u32 = SRC_NAT_DONE
        | DST_NAT_DONE
        | SRC_NAT
        | DST_NAT
        | EXPECTED
        | CONFIRMED
        | DYING
        | SEQ_ADJUST
        | TEMPLATE
        | UNTRACKED
        | OFFLOAD
        | HW_OFFLOAD;
}

/// IPPROTO_* numbers the codec treats specially.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// The layer-3 family of an entry (`nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// AF_INET / AF_INET6.
    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => libc::AF_INET as u8,
            Family::Ipv6 => libc::AF_INET6 as u8,
        }
    }
    pub fn from_af(af: u8) -> Option<Family> {
        match i32::from(af) {
            libc::AF_INET => Some(Family::Ipv4),
            libc::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// An attribute we do not model, kept verbatim (`kind` with the
/// NLA_F_NESTED / NLA_F_NET_BYTEORDER bits as received).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawAttr {
    pub kind: u16,
    pub value: Vec<u8>,
}

/// ICMP / ICMPv6 identity of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Icmp {
    pub id: u16,
    pub kind: u8,
    pub code: u8,
}

/// `CTA_TUPLE_ORIG` / `CTA_TUPLE_REPLY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPPROTO_*.
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp: Option<Icmp>,
    /// `CTA_TUPLE_ZONE` (directional zones; `Conntrack::zone` otherwise).
    pub zone: Option<u16>,
    /// Unknown attributes inside the tuple, CTA_TUPLE_IP and CTA_TUPLE_PROTO.
    pub unknown: Vec<RawAttr>,
    pub ip_unknown: Vec<RawAttr>,
    pub proto_unknown: Vec<RawAttr>,
}

impl Tuple {
    /// A port-based tuple (tcp, udp, sctp, ...).
    pub fn ports(protocol: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple {
        Tuple {
            src,
            dst,
            protocol,
            src_port: Some(sport),
            dst_port: Some(dport),
            icmp: None,
            zone: None,
            unknown: Vec::new(),
            ip_unknown: Vec::new(),
            proto_unknown: Vec::new(),
        }
    }

    /// The same flow seen from the other end, without NAT (what the kernel
    /// computes for an entry without translation). ICMP echo requests
    /// (type 8 / 128) become echo replies (0 / 129).
    pub fn inverted(&self) -> Tuple {
        let icmp = self.icmp.map(|i| Icmp {
            kind: match (self.protocol, i.kind) {
                (proto::ICMP, 8) => 0,
                (proto::ICMP, 0) => 8,
                (proto::ICMPV6, 128) => 129,
                (proto::ICMPV6, 129) => 128,
                (_, k) => k,
            },
            ..i
        });
        Tuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            icmp,
            ..self.clone()
        }
    }
}

/// `struct nf_ct_tcp_flags` (IP_CT_TCP_FLAG_* bits and which are meant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFlags {
    pub flags: u8,
    pub mask: u8,
}

/// include/uapi/linux/netfilter/nf_conntrack_tcp.h `enum tcp_conntrack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpState(pub u8);

impl TcpState {
    pub const NONE: TcpState = TcpState(0);
    pub const SYN_SENT: TcpState = TcpState(1);
    pub const SYN_RECV: TcpState = TcpState(2);
    pub const ESTABLISHED: TcpState = TcpState(3);
    pub const FIN_WAIT: TcpState = TcpState(4);
    pub const CLOSE_WAIT: TcpState = TcpState(5);
    pub const LAST_ACK: TcpState = TcpState(6);
    pub const TIME_WAIT: TcpState = TcpState(7);
    pub const CLOSE: TcpState = TcpState(8);
    pub const SYN_SENT2: TcpState = TcpState(9);
    /// `TCP_CONNTRACK_MAX`: the kernel refuses states from here on.
    pub const MAX: u8 = 10;

    /// The name the conntrack CLI prints.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 10] = [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ];
        NAMES.get(usize::from(self.0)).copied()
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "UNKNOWN({})", self.0),
        }
    }
}

/// `CTA_PROTOINFO_TCP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfo {
    pub state: TcpState,
    pub wscale_orig: Option<u8>,
    pub wscale_reply: Option<u8>,
    pub flags_orig: Option<TcpFlags>,
    pub flags_reply: Option<TcpFlags>,
    pub unknown: Vec<RawAttr>,
}

/// `CTA_COUNTERS_ORIG` / `_REPLY` (needs net.netfilter.nf_conntrack_acct).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// `CTA_SEQ_ADJ_ORIG` / `_REPLY` (NAT helpers that resize payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqAdj {
    pub correction_pos: u32,
    pub offset_before: u32,
    pub offset_after: u32,
}

/// `CTA_TIMESTAMP` (needs net.netfilter.nf_conntrack_timestamp), in
/// nanoseconds of CLOCK_REALTIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub start: u64,
    pub stop: Option<u64>,
}

/// `CTA_NAT_SRC` / `CTA_NAT_DST`: a NAT binding to set up when creating an
/// entry. The kernel never dumps these (the translation is visible in the
/// reply tuple); see [`Conntrack::with_nat_from_tuples`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRange {
    pub min_ip: IpAddr,
    pub max_ip: Option<IpAddr>,
    pub min_port: Option<u16>,
    pub max_port: Option<u16>,
}

/// One conntrack entry: the validated repr of an IPCTNL_MSG_CT_* message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conntrack {
    pub family: Family,
    pub orig: Tuple,
    pub reply: Tuple,
    /// `CTA_ZONE`.
    pub zone: Option<u16>,
    /// `CTA_STATUS`, [`status`] bits.
    pub status: Option<u32>,
    /// `CTA_TIMEOUT`, seconds left.
    pub timeout: Option<u32>,
    pub mark: Option<u32>,
    /// `CTA_ID`: the kernel's id of the entry (not stable across hosts).
    pub id: Option<u32>,
    /// `CTA_USE`: reference count.
    pub use_count: Option<u32>,
    pub tcp: Option<TcpInfo>,
    /// Other `CTA_PROTOINFO_*` (DCCP, SCTP) kept verbatim.
    pub protoinfo_unknown: Vec<RawAttr>,
    pub counters_orig: Option<Counters>,
    pub counters_reply: Option<Counters>,
    /// `CTA_HELP` name.
    pub helper: Option<String>,
    /// `CTA_SECCTX` name.
    pub secctx: Option<String>,
    /// `CTA_LABELS` bitmap.
    pub labels: Option<Vec<u8>>,
    pub seq_adj_orig: Option<SeqAdj>,
    pub seq_adj_reply: Option<SeqAdj>,
    pub timestamp: Option<Timestamp>,
    pub nat_src: Option<NatRange>,
    pub nat_dst: Option<NatRange>,
    /// Top-level attributes not modelled (CTA_SYNPROXY, CTA_TUPLE_MASTER,
    /// newer ones), verbatim and in order.
    pub unknown: Vec<RawAttr>,
}

impl Conntrack {
    /// An entry with both tuples and nothing else (the family is the
    /// original tuple's).
    pub fn new(orig: Tuple, reply: Tuple) -> Conntrack {
        Conntrack {
            family: Family::of(&orig.src),
            orig,
            reply,
            zone: None,
            status: None,
            timeout: None,
            mark: None,
            id: None,
            use_count: None,
            tcp: None,
            protoinfo_unknown: Vec::new(),
            counters_orig: None,
            counters_reply: None,
            helper: None,
            secctx: None,
            labels: None,
            seq_adj_orig: None,
            seq_adj_reply: None,
            timestamp: None,
            nat_src: None,
            nat_dst: None,
            unknown: Vec::new(),
        }
    }

    /// TCP ESTABLISHED (what IPVS counts as an active connection).
    pub fn is_tcp_established(&self) -> bool {
        self.orig.protocol == proto::TCP
            && self.tcp.as_ref().map(|t| t.state) == Some(TcpState::ESTABLISHED)
    }

    /// Rewrites an entry read from one kernel so that another kernel,
    /// given it in a NEW, sets up the same translation: `nat_dst` /
    /// `nat_src` from what the tuples show (destination NAT: the reply
    /// comes from somewhere other than the original destination; source
    /// NAT: it goes to somewhere other than the original source), and the
    /// reply tuple un-translated. Observed on 6.x: given the translated
    /// reply tuple the kernel finds nothing to translate and leaves
    /// IPS_SRC_NAT / IPS_DST_NAT clear, and nf_nat_packet() then mangles
    /// nothing; from the plain reply tuple plus CTA_NAT_* it derives the
    /// same reply tuple and sets the bits.
    pub fn with_nat_from_tuples(mut self) -> Conntrack {
        if self.reply.src != self.orig.dst || self.reply.src_port != self.orig.dst_port {
            self.nat_dst = Some(NatRange {
                min_ip: self.reply.src,
                max_ip: Some(self.reply.src),
                min_port: self.reply.src_port,
                max_port: self.reply.src_port,
            });
        }
        if self.reply.dst != self.orig.src || self.reply.dst_port != self.orig.src_port {
            self.nat_src = Some(NatRange {
                min_ip: self.reply.dst,
                max_ip: Some(self.reply.dst),
                min_port: self.reply.dst_port,
                max_port: self.reply.dst_port,
            });
        }
        if self.nat_src.is_some() || self.nat_dst.is_some() {
            self.reply = self.orig.inverted();
        }
        self
    }
}

/// A malformed ctnetlink message: where (attribute path) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct DecodeError {
    pub path: String,
    pub detail: String,
}

fn derr(path: &str, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        path: path.to_string(),
        detail: detail.into(),
    }
}

/// An entry that cannot be encoded: the caller's value is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode conntrack entry: {0}")]
pub struct EncodeError(pub String);

impl From<TooLong> for EncodeError {
    fn from(_: TooLong) -> Self {
        EncodeError("an attribute exceeds the 65535-byte netlink attribute limit".into())
    }
}

// ---------------------------------------------------------------- decode

fn attrs<'a>(
    path: &str,
    buf: &'a [u8],
) -> impl Iterator<Item = Result<Attr<'a>, DecodeError>> + 'a {
    let path = path.to_string();
    AttrIter::new(buf).map(move |r| r.map_err(|e| derr(&path, e.0)))
}

fn exact<const N: usize>(path: &str, name: &str, v: &[u8]) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(v).map_err(|_| {
        derr(
            &format!("{path}/{name}"),
            format!("{} bytes, expected {N}", v.len()),
        )
    })
}

fn be16(path: &str, name: &str, v: &[u8]) -> Result<u16, DecodeError> {
    exact::<2>(path, name, v).map(u16::from_be_bytes)
}
fn be32(path: &str, name: &str, v: &[u8]) -> Result<u32, DecodeError> {
    exact::<4>(path, name, v).map(u32::from_be_bytes)
}
fn be64(path: &str, name: &str, v: &[u8]) -> Result<u64, DecodeError> {
    exact::<8>(path, name, v).map(u64::from_be_bytes)
}
fn u8v(path: &str, name: &str, v: &[u8]) -> Result<u8, DecodeError> {
    exact::<1>(path, name, v).map(|b| b[0])
}

fn raw(a: &Attr<'_>) -> RawAttr {
    RawAttr {
        kind: a.raw_kind,
        value: a.value.to_vec(),
    }
}

/// Decodes one ctnetlink entry message payload (what follows the
/// nlmsghdr: nfgenmsg, then attributes).
pub fn decode(payload: &[u8]) -> Result<Conntrack, DecodeError> {
    let Some((hdr, body)) = payload.split_first_chunk::<NFGEN_HDRLEN>() else {
        return Err(derr(
            "nfgenmsg",
            format!("payload of {} bytes, need 4", payload.len()),
        ));
    };
    let family = Family::from_af(hdr[0])
        .ok_or_else(|| derr("nfgenmsg", format!("unsupported family {}", hdr[0])))?;
    decode_attrs(family, body)
}

/// Decodes the attributes of one entry of the given family.
pub fn decode_attrs(family: Family, body: &[u8]) -> Result<Conntrack, DecodeError> {
    let mut orig = None;
    let mut reply = None;
    let mut ct = Conntrack::new(placeholder(family), placeholder(family));
    ct.family = family;
    for a in attrs("entry", body) {
        let a = a?;
        let p = "entry";
        match a.kind {
            cta::TUPLE_ORIG => orig = Some(tuple_repr(family, "CTA_TUPLE_ORIG", a.value)?),
            cta::TUPLE_REPLY => reply = Some(tuple_repr(family, "CTA_TUPLE_REPLY", a.value)?),
            cta::ZONE => ct.zone = Some(be16(p, "CTA_ZONE", a.value)?),
            cta::STATUS => ct.status = Some(be32(p, "CTA_STATUS", a.value)?),
            cta::TIMEOUT => ct.timeout = Some(be32(p, "CTA_TIMEOUT", a.value)?),
            cta::MARK => ct.mark = Some(be32(p, "CTA_MARK", a.value)?),
            cta::ID => ct.id = Some(be32(p, "CTA_ID", a.value)?),
            cta::USE => ct.use_count = Some(be32(p, "CTA_USE", a.value)?),
            cta::PROTOINFO => {
                for b in attrs("CTA_PROTOINFO", a.value) {
                    let b = b?;
                    if b.kind == protoinfo_attr::TCP {
                        ct.tcp = Some(tcp_repr(b.value)?);
                    } else {
                        ct.protoinfo_unknown.push(raw(&b));
                    }
                }
            }
            cta::COUNTERS_ORIG => {
                ct.counters_orig = Some(counters_repr("CTA_COUNTERS_ORIG", a.value)?)
            }
            cta::COUNTERS_REPLY => {
                ct.counters_reply = Some(counters_repr("CTA_COUNTERS_REPLY", a.value)?)
            }
            cta::HELP => ct.helper = Some(name_repr("CTA_HELP", a.value)?),
            cta::SECCTX => ct.secctx = Some(name_repr("CTA_SECCTX", a.value)?),
            cta::LABELS => ct.labels = Some(a.value.to_vec()),
            cta::SEQ_ADJ_ORIG => ct.seq_adj_orig = Some(seqadj_repr("CTA_SEQ_ADJ_ORIG", a.value)?),
            cta::SEQ_ADJ_REPLY => {
                ct.seq_adj_reply = Some(seqadj_repr("CTA_SEQ_ADJ_REPLY", a.value)?)
            }
            cta::TIMESTAMP => ct.timestamp = Some(timestamp_repr(a.value)?),
            cta::NAT_SRC => ct.nat_src = Some(nat_repr(family, "CTA_NAT_SRC", a.value)?),
            cta::NAT_DST => ct.nat_dst = Some(nat_repr(family, "CTA_NAT_DST", a.value)?),
            _ => ct.unknown.push(raw(&a)),
        }
    }
    ct.orig = orig.ok_or_else(|| derr("entry", "no CTA_TUPLE_ORIG"))?;
    ct.reply = reply.ok_or_else(|| derr("entry", "no CTA_TUPLE_REPLY"))?;
    Ok(ct)
}

fn placeholder(family: Family) -> Tuple {
    let any = match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Tuple::ports(0, any, 0, any, 0)
}

fn tuple_repr(family: Family, path: &str, v: &[u8]) -> Result<Tuple, DecodeError> {
    let mut src = None;
    let mut dst = None;
    let mut protocol = None;
    let mut t = placeholder(family);
    t.src_port = None;
    t.dst_port = None;
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    for a in attrs(path, v) {
        let a = a?;
        match a.kind {
            tuple_attr::IP => {
                let ip_path = format!("{path}/CTA_TUPLE_IP");
                for b in attrs(&ip_path, a.value) {
                    let b = b?;
                    let p = ip_path.as_str();
                    match (family, b.kind) {
                        (Family::Ipv4, tuple_attr::IP_V4_SRC) => {
                            src = Some(IpAddr::from(exact::<4>(p, "CTA_IP_V4_SRC", b.value)?))
                        }
                        (Family::Ipv4, tuple_attr::IP_V4_DST) => {
                            dst = Some(IpAddr::from(exact::<4>(p, "CTA_IP_V4_DST", b.value)?))
                        }
                        (Family::Ipv6, tuple_attr::IP_V6_SRC) => {
                            src = Some(IpAddr::from(exact::<16>(p, "CTA_IP_V6_SRC", b.value)?))
                        }
                        (Family::Ipv6, tuple_attr::IP_V6_DST) => {
                            dst = Some(IpAddr::from(exact::<16>(p, "CTA_IP_V6_DST", b.value)?))
                        }
                        (_, tuple_attr::IP_V4_SRC..=tuple_attr::IP_V6_DST) => {
                            return Err(derr(
                                p,
                                format!(
                                    "address attribute {} does not match family {family:?}",
                                    b.kind
                                ),
                            ))
                        }
                        _ => t.ip_unknown.push(raw(&b)),
                    }
                }
            }
            tuple_attr::PROTO => {
                let pp = format!("{path}/CTA_TUPLE_PROTO");
                let p = pp.as_str();
                for b in attrs(p, a.value) {
                    let b = b?;
                    match b.kind {
                        tuple_attr::PROTO_NUM => protocol = Some(u8v(p, "CTA_PROTO_NUM", b.value)?),
                        tuple_attr::PROTO_SRC_PORT => {
                            t.src_port = Some(be16(p, "CTA_PROTO_SRC_PORT", b.value)?)
                        }
                        tuple_attr::PROTO_DST_PORT => {
                            t.dst_port = Some(be16(p, "CTA_PROTO_DST_PORT", b.value)?)
                        }
                        tuple_attr::PROTO_ICMP_ID | tuple_attr::PROTO_ICMPV6_ID => {
                            icmp_id = Some(be16(p, "CTA_PROTO_ICMP_ID", b.value)?)
                        }
                        tuple_attr::PROTO_ICMP_TYPE | tuple_attr::PROTO_ICMPV6_TYPE => {
                            icmp_type = Some(u8v(p, "CTA_PROTO_ICMP_TYPE", b.value)?)
                        }
                        tuple_attr::PROTO_ICMP_CODE | tuple_attr::PROTO_ICMPV6_CODE => {
                            icmp_code = Some(u8v(p, "CTA_PROTO_ICMP_CODE", b.value)?)
                        }
                        _ => t.proto_unknown.push(raw(&b)),
                    }
                }
            }
            tuple_attr::ZONE => t.zone = Some(be16(path, "CTA_TUPLE_ZONE", a.value)?),
            _ => t.unknown.push(raw(&a)),
        }
    }
    t.src = src.ok_or_else(|| derr(path, "no source address"))?;
    t.dst = dst.ok_or_else(|| derr(path, "no destination address"))?;
    t.protocol = protocol.ok_or_else(|| derr(path, "no CTA_PROTO_NUM"))?;
    t.icmp = match (icmp_id, icmp_type, icmp_code) {
        (None, None, None) => None,
        (Some(id), Some(kind), Some(code)) => Some(Icmp { id, kind, code }),
        _ => return Err(derr(path, "incomplete ICMP id/type/code")),
    };
    Ok(t)
}

fn tcp_repr(v: &[u8]) -> Result<TcpInfo, DecodeError> {
    const P: &str = "CTA_PROTOINFO/CTA_PROTOINFO_TCP";
    let mut state = None;
    let mut t = TcpInfo {
        state: TcpState::NONE,
        wscale_orig: None,
        wscale_reply: None,
        flags_orig: None,
        flags_reply: None,
        unknown: Vec::new(),
    };
    let flags = |name: &str, v: &[u8]| {
        exact::<2>(P, name, v).map(|b| TcpFlags {
            flags: b[0],
            mask: b[1],
        })
    };
    for a in attrs(P, v) {
        let a = a?;
        match a.kind {
            protoinfo_attr::TCP_STATE => state = Some(TcpState(u8v(P, "STATE", a.value)?)),
            protoinfo_attr::TCP_WSCALE_ORIGINAL => {
                t.wscale_orig = Some(u8v(P, "WSCALE_ORIGINAL", a.value)?)
            }
            protoinfo_attr::TCP_WSCALE_REPLY => {
                t.wscale_reply = Some(u8v(P, "WSCALE_REPLY", a.value)?)
            }
            protoinfo_attr::TCP_FLAGS_ORIGINAL => {
                t.flags_orig = Some(flags("FLAGS_ORIGINAL", a.value)?)
            }
            protoinfo_attr::TCP_FLAGS_REPLY => t.flags_reply = Some(flags("FLAGS_REPLY", a.value)?),
            _ => t.unknown.push(raw(&a)),
        }
    }
    t.state = state.ok_or_else(|| derr(P, "no CTA_PROTOINFO_TCP_STATE"))?;
    Ok(t)
}

fn counters_repr(path: &str, v: &[u8]) -> Result<Counters, DecodeError> {
    let mut c = Counters::default();
    for a in attrs(path, v) {
        let a = a?;
        match a.kind {
            sub_attr::COUNTERS_PACKETS => c.packets = be64(path, "PACKETS", a.value)?,
            sub_attr::COUNTERS_BYTES => c.bytes = be64(path, "BYTES", a.value)?,
            sub_attr::COUNTERS32_PACKETS => c.packets = be32(path, "PACKETS32", a.value)?.into(),
            sub_attr::COUNTERS32_BYTES => c.bytes = be32(path, "BYTES32", a.value)?.into(),
            // Alignment padding of nla_put_be64: carries nothing.
            _ => {}
        }
    }
    Ok(c)
}

fn name_repr(path: &str, v: &[u8]) -> Result<String, DecodeError> {
    for a in attrs(path, v) {
        let a = a?;
        if a.kind == sub_attr::HELP_NAME {
            return Ok(nl::c_string(a.value));
        }
    }
    Err(derr(path, "no name"))
}

fn seqadj_repr(path: &str, v: &[u8]) -> Result<SeqAdj, DecodeError> {
    let (mut c, mut b, mut f) = (None, None, None);
    for a in attrs(path, v) {
        let a = a?;
        match a.kind {
            sub_attr::SEQADJ_CORRECTION_POS => c = Some(be32(path, "CORRECTION_POS", a.value)?),
            sub_attr::SEQADJ_OFFSET_BEFORE => b = Some(be32(path, "OFFSET_BEFORE", a.value)?),
            sub_attr::SEQADJ_OFFSET_AFTER => f = Some(be32(path, "OFFSET_AFTER", a.value)?),
            _ => {}
        }
    }
    match (c, b, f) {
        (Some(correction_pos), Some(offset_before), Some(offset_after)) => Ok(SeqAdj {
            correction_pos,
            offset_before,
            offset_after,
        }),
        _ => Err(derr(path, "incomplete sequence adjustment")),
    }
}

fn timestamp_repr(v: &[u8]) -> Result<Timestamp, DecodeError> {
    const P: &str = "CTA_TIMESTAMP";
    let (mut start, mut stop) = (None, None);
    for a in attrs(P, v) {
        let a = a?;
        match a.kind {
            sub_attr::TIMESTAMP_START => start = Some(be64(P, "START", a.value)?),
            sub_attr::TIMESTAMP_STOP => stop = Some(be64(P, "STOP", a.value)?),
            _ => {}
        }
    }
    Ok(Timestamp {
        start: start.ok_or_else(|| derr(P, "no CTA_TIMESTAMP_START"))?,
        stop,
    })
}

fn nat_repr(family: Family, path: &str, v: &[u8]) -> Result<NatRange, DecodeError> {
    let (mut min_ip, mut max_ip, mut min_port, mut max_port) = (None, None, None, None);
    for a in attrs(path, v) {
        let a = a?;
        match (family, a.kind) {
            (Family::Ipv4, sub_attr::NAT_V4_MINIP) => {
                min_ip = Some(IpAddr::from(exact::<4>(path, "V4_MINIP", a.value)?))
            }
            (Family::Ipv4, sub_attr::NAT_V4_MAXIP) => {
                max_ip = Some(IpAddr::from(exact::<4>(path, "V4_MAXIP", a.value)?))
            }
            (Family::Ipv6, sub_attr::NAT_V6_MINIP) => {
                min_ip = Some(IpAddr::from(exact::<16>(path, "V6_MINIP", a.value)?))
            }
            (Family::Ipv6, sub_attr::NAT_V6_MAXIP) => {
                max_ip = Some(IpAddr::from(exact::<16>(path, "V6_MAXIP", a.value)?))
            }
            (_, sub_attr::NAT_PROTO) => {
                let pp = format!("{path}/CTA_NAT_PROTO");
                for b in attrs(&pp, a.value) {
                    let b = b?;
                    match b.kind {
                        sub_attr::PROTONAT_PORT_MIN => min_port = Some(be16(&pp, "MIN", b.value)?),
                        sub_attr::PROTONAT_PORT_MAX => max_port = Some(be16(&pp, "MAX", b.value)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(NatRange {
        min_ip: min_ip.ok_or_else(|| derr(path, "no minimum address"))?,
        max_ip,
        min_port,
        max_port,
    })
}

// ---------------------------------------------------------------- encode

/// Which attributes [`encode_attrs`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrSet {
    /// Everything in the repr, in the kernel's dump order, unknown
    /// attributes last (round trips of what the kernel sent).
    All,
    /// What `ctnetlink_create_conntrack` accepts for a new entry: tuples,
    /// zone, status without the kernel-only bits, timeout, mark,
    /// protoinfo, helper, NAT, sequence adjustments, labels. No id, use
    /// count, counters, timestamps or unknown attributes (the receiving
    /// kernel has its own).
    Create,
    /// What `ctnetlink_change_conntrack` accepts for an existing entry:
    /// as `Create` but without CTA_NAT_SRC / CTA_NAT_DST (it answers
    /// EOPNOTSUPP to any NAT attribute: "only allow NAT changes and master
    /// assignation for new conntracks", net/netfilter/nf_conntrack_netlink.c)
    /// and without CTA_HELP (a helper change is refused with EBUSY);
    /// the timeout is optional.
    Update,
}

fn check_family(ct: &Conntrack) -> Result<(), EncodeError> {
    let ips = [ct.orig.src, ct.orig.dst, ct.reply.src, ct.reply.dst];
    if ips.iter().any(|ip| Family::of(ip) != ct.family) {
        return Err(EncodeError(format!(
            "tuple addresses do not all match family {:?}",
            ct.family
        )));
    }
    for n in [&ct.nat_src, &ct.nat_dst].into_iter().flatten() {
        if n.max_ip
            .iter()
            .chain([&n.min_ip])
            .any(|ip| Family::of(ip) != ct.family)
        {
            return Err(EncodeError("NAT address of the wrong family".into()));
        }
    }
    Ok(())
}

fn put_raw(w: &mut Writer, attrs: &[RawAttr]) -> Result<(), TooLong> {
    attrs.iter().try_for_each(|a| w.put(a.kind, &a.value))
}

fn put_ip(w: &mut Writer, v4: u16, v6: u16, ip: &IpAddr) -> Result<(), TooLong> {
    match ip {
        IpAddr::V4(a) => w.put(v4, &a.octets()),
        IpAddr::V6(a) => w.put(v6, &a.octets()),
    }
}

/// Writes one tuple nest.
pub fn encode_tuple(w: &mut Writer, kind: u16, t: &Tuple) -> Result<(), TooLong> {
    use tuple_attr::*;
    let n = w.begin_nest_marked(kind);
    let ip = w.begin_nest_marked(IP);
    put_ip(w, IP_V4_SRC, IP_V6_SRC, &t.src)?;
    put_ip(w, IP_V4_DST, IP_V6_DST, &t.dst)?;
    put_raw(w, &t.ip_unknown)?;
    w.end_nest(ip)?;
    let p = w.begin_nest_marked(PROTO);
    w.put_u8(PROTO_NUM, t.protocol)?;
    if let Some(v) = t.src_port {
        w.put_be16(PROTO_SRC_PORT, v)?;
    }
    if let Some(v) = t.dst_port {
        w.put_be16(PROTO_DST_PORT, v)?;
    }
    if let Some(i) = t.icmp {
        // The kernel's ICMP and ICMPv6 handlers read different attribute
        // numbers; order as icmp_tuple_to_nlattr(): id, type, code.
        let (id, ty, code) = if t.protocol == proto::ICMPV6 {
            (PROTO_ICMPV6_ID, PROTO_ICMPV6_TYPE, PROTO_ICMPV6_CODE)
        } else {
            (PROTO_ICMP_ID, PROTO_ICMP_TYPE, PROTO_ICMP_CODE)
        };
        w.put_be16(id, i.id)?;
        w.put_u8(ty, i.kind)?;
        w.put_u8(code, i.code)?;
    }
    put_raw(w, &t.proto_unknown)?;
    w.end_nest(p)?;
    if let Some(z) = t.zone {
        w.put_be16(ZONE, z)?;
    }
    put_raw(w, &t.unknown)?;
    w.end_nest(n)
}

fn encode_tcp(w: &mut Writer, t: &TcpInfo, all: bool) -> Result<(), TooLong> {
    use protoinfo_attr::*;
    let n = w.begin_nest_marked(cta::PROTOINFO);
    let tn = w.begin_nest_marked(TCP);
    w.put_u8(TCP_STATE, t.state.0)?;
    if let Some(v) = t.wscale_orig {
        w.put_u8(TCP_WSCALE_ORIGINAL, v)?;
    }
    if let Some(v) = t.wscale_reply {
        w.put_u8(TCP_WSCALE_REPLY, v)?;
    }
    if let Some(f) = t.flags_orig {
        w.put(TCP_FLAGS_ORIGINAL, &[f.flags, f.mask])?;
    }
    if let Some(f) = t.flags_reply {
        w.put(TCP_FLAGS_REPLY, &[f.flags, f.mask])?;
    }
    if all {
        put_raw(w, &t.unknown)?;
    }
    w.end_nest(tn)?;
    w.end_nest(n)
}

fn encode_counters(w: &mut Writer, kind: u16, c: &Counters) -> Result<(), TooLong> {
    let n = w.begin_nest_marked(kind);
    w.put_be64(sub_attr::COUNTERS_PACKETS, c.packets)?;
    w.put_be64(sub_attr::COUNTERS_BYTES, c.bytes)?;
    w.end_nest(n)
}

fn encode_name(w: &mut Writer, kind: u16, name: &str) -> Result<(), TooLong> {
    let n = w.begin_nest_marked(kind);
    w.put_str(sub_attr::HELP_NAME, name)?;
    w.end_nest(n)
}

fn encode_seqadj(w: &mut Writer, kind: u16, s: &SeqAdj) -> Result<(), TooLong> {
    let n = w.begin_nest_marked(kind);
    w.put_be32(sub_attr::SEQADJ_CORRECTION_POS, s.correction_pos)?;
    w.put_be32(sub_attr::SEQADJ_OFFSET_BEFORE, s.offset_before)?;
    w.put_be32(sub_attr::SEQADJ_OFFSET_AFTER, s.offset_after)?;
    w.end_nest(n)
}

fn encode_nat(w: &mut Writer, kind: u16, r: &NatRange) -> Result<(), TooLong> {
    use sub_attr::*;
    let n = w.begin_nest_marked(kind);
    put_ip(w, NAT_V4_MINIP, NAT_V6_MINIP, &r.min_ip)?;
    if let Some(ip) = &r.max_ip {
        put_ip(w, NAT_V4_MAXIP, NAT_V6_MAXIP, ip)?;
    }
    if r.min_port.is_some() || r.max_port.is_some() {
        let p = w.begin_nest_marked(NAT_PROTO);
        if let Some(v) = r.min_port {
            w.put_be16(PROTONAT_PORT_MIN, v)?;
        }
        if let Some(v) = r.max_port {
            w.put_be16(PROTONAT_PORT_MAX, v)?;
        }
        w.end_nest(p)?;
    }
    w.end_nest(n)
}

/// Writes the attributes of one entry (no headers).
pub fn encode_attrs(w: &mut Writer, ct: &Conntrack, set: AttrSet) -> Result<(), EncodeError> {
    check_family(ct)?;
    let all = set == AttrSet::All;
    encode_tuple(w, cta::TUPLE_ORIG, &ct.orig)?;
    encode_tuple(w, cta::TUPLE_REPLY, &ct.reply)?;
    if let Some(z) = ct.zone {
        w.put_be16(cta::ZONE, z)?;
    }
    if let Some(s) = ct.status {
        // For a new entry the kernel compares our status with the one it
        // holds, which already has IPS_CONFIRMED (the CLI's NEW carries
        // it too); a difference in EXPECTED/CONFIRMED/DYING is EBUSY
        // (observed on 6.x), other kernel-only bits are refused by older
        // kernels. So: the changeable bits, plus CONFIRMED.
        let s = if all {
            s
        } else {
            (s & !status::UNCHANGEABLE) | status::CONFIRMED
        };
        w.put_be32(cta::STATUS, s)?;
    }
    if let Some(m) = ct.mark {
        w.put_be32(cta::MARK, m)?;
    }
    if all {
        if let Some(v) = ct.id {
            w.put_be32(cta::ID, v)?;
        }
        if let Some(v) = ct.use_count {
            w.put_be32(cta::USE, v)?;
        }
    }
    match ct.timeout {
        Some(t) => w.put_be32(cta::TIMEOUT, t)?,
        // ctnetlink_create_conntrack: "if (!cda[CTA_TIMEOUT]) goto err1".
        None if set == AttrSet::Create => {
            return Err(EncodeError("a new entry needs a timeout".into()))
        }
        None => {}
    }
    if let Some(t) = &ct.tcp {
        if !all && t.state.0 >= TcpState::MAX {
            return Err(EncodeError(format!(
                "TCP state {} is not one the kernel accepts",
                t.state.0
            )));
        }
        encode_tcp(w, t, all)?;
    } else if all && !ct.protoinfo_unknown.is_empty() {
        let n = w.begin_nest_marked(cta::PROTOINFO);
        put_raw(w, &ct.protoinfo_unknown)?;
        w.end_nest(n)?;
    }
    if all {
        if let Some(c) = &ct.counters_orig {
            encode_counters(w, cta::COUNTERS_ORIG, c)?;
        }
        if let Some(c) = &ct.counters_reply {
            encode_counters(w, cta::COUNTERS_REPLY, c)?;
        }
    }
    if let Some(h) = ct.helper.as_ref().filter(|_| set != AttrSet::Update) {
        encode_name(w, cta::HELP, h)?;
    }
    if all {
        if let Some(s) = &ct.secctx {
            encode_name(w, cta::SECCTX, s)?;
        }
    }
    if let Some(s) = &ct.seq_adj_orig {
        encode_seqadj(w, cta::SEQ_ADJ_ORIG, s)?;
    }
    if let Some(s) = &ct.seq_adj_reply {
        encode_seqadj(w, cta::SEQ_ADJ_REPLY, s)?;
    }
    if let Some(l) = &ct.labels {
        w.put(cta::LABELS, l)?;
    }
    if all {
        if let Some(t) = &ct.timestamp {
            let n = w.begin_nest_marked(cta::TIMESTAMP);
            w.put_be64(sub_attr::TIMESTAMP_START, t.start)?;
            if let Some(s) = t.stop {
                w.put_be64(sub_attr::TIMESTAMP_STOP, s)?;
            }
            w.end_nest(n)?;
        }
    }
    if set != AttrSet::Update {
        if let Some(n) = &ct.nat_src {
            encode_nat(w, cta::NAT_SRC, n)?;
        }
        if let Some(n) = &ct.nat_dst {
            encode_nat(w, cta::NAT_DST, n)?;
        }
    }
    if all {
        put_raw(w, &ct.unknown)?;
    }
    Ok(())
}

/// Appends one whole message for an entry (e.g. `msg::NEW` with
/// `AttrSet::All` is what the kernel sends in a dump).
pub fn encode_entry(
    w: &mut Writer,
    m: u8,
    flags: u16,
    seq: u32,
    ct: &Conntrack,
    set: AttrSet,
) -> Result<(), EncodeError> {
    let start = w.begin_nfnl(msg_type(m), flags, seq, ct.family.af());
    let r = encode_attrs(w, ct, set).and_then(|()| Ok(w.end_msg(start)?));
    if r.is_err() {
        w.truncate(start);
    }
    r
}

/// IPCTNL_MSG_CT_NEW creating `ct` (NLM_F_CREATE|NLM_F_EXCL: an existing
/// entry is EEXIST, not updated).
pub fn encode_new(w: &mut Writer, seq: u32, ct: &Conntrack) -> Result<(), EncodeError> {
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE | nl::NLM_F_EXCL;
    encode_entry(w, msg::NEW, flags, seq, ct, AttrSet::Create)
}

/// IPCTNL_MSG_CT_GET dump of one family (`None`: AF_UNSPEC, all).
pub fn encode_dump(w: &mut Writer, seq: u32, family: Option<Family>) -> Result<(), EncodeError> {
    let start = w.begin_nfnl(
        msg_type(msg::GET),
        nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
        seq,
        family.map_or(0, Family::af),
    );
    Ok(w.end_msg(start)?)
}

/// IPCTNL_MSG_CT_NEW with NLM_F_CREATE but without NLM_F_EXCL: creates
/// `ct`, or, if an entry with its original tuple exists, changes that one
/// (`ctnetlink_change_conntrack`). The kernel refuses NAT attributes on
/// the change path (EOPNOTSUPP), so an entry with `nat_src` / `nat_dst`
/// that already exists fails instead of being updated.
pub fn encode_upsert(w: &mut Writer, seq: u32, ct: &Conntrack) -> Result<(), EncodeError> {
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_CREATE;
    encode_entry(w, msg::NEW, flags, seq, ct, AttrSet::Create)
}

/// IPCTNL_MSG_CT_NEW without NLM_F_CREATE: changes the existing entry
/// with `ct`'s original tuple (ENOENT if there is none), without NAT
/// attributes ([`AttrSet::Update`]).
pub fn encode_update(w: &mut Writer, seq: u32, ct: &Conntrack) -> Result<(), EncodeError> {
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK;
    encode_entry(w, msg::NEW, flags, seq, ct, AttrSet::Update)
}

/// IPCTNL_MSG_CT_DELETE of the entry whose original tuple is `orig`, in
/// `zone` (the kernel looks entries up per zone; `None` is zone 0).
pub fn encode_delete(
    w: &mut Writer,
    seq: u32,
    orig: &Tuple,
    zone: Option<u16>,
) -> Result<(), EncodeError> {
    encode_lookup(w, msg::DELETE, seq, orig, zone)
}

/// IPCTNL_MSG_CT_GET of the one entry whose original tuple is `orig` in
/// `zone`: answered with that entry (message type NEW) then the ACK, or
/// ENOENT.
pub fn encode_get(
    w: &mut Writer,
    seq: u32,
    orig: &Tuple,
    zone: Option<u16>,
) -> Result<(), EncodeError> {
    encode_lookup(w, msg::GET, seq, orig, zone)
}

fn encode_lookup(
    w: &mut Writer,
    m: u8,
    seq: u32,
    orig: &Tuple,
    zone: Option<u16>,
) -> Result<(), EncodeError> {
    let family = Family::of(&orig.src);
    if Family::of(&orig.dst) != family {
        return Err(EncodeError("tuple mixes IPv4 and IPv6".into()));
    }
    let start = w.begin_nfnl(
        msg_type(m),
        nl::NLM_F_REQUEST | nl::NLM_F_ACK,
        seq,
        family.af(),
    );
    let r = (|| {
        encode_tuple(w, cta::TUPLE_ORIG, orig)?;
        if let Some(z) = zone {
            w.put_be16(cta::ZONE, z)?;
        }
        w.end_msg(start)
    })();
    if r.is_err() {
        w.truncate(start);
    }
    Ok(r?)
}
