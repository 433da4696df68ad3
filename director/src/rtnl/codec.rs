//! rtnetlink messages for addresses and links: pure encode / decode, no
//! sockets. Constants are spelled out here with the header they come from
//! (the kernel's UAPI is stable; `libc`'s copies are incomplete for
//! `IFA_*`), and every decoder bounds-checks through
//! [`super::nl::AttrIter`], so no input panics.
//!
//! ```text
//! include/uapi/linux/if_addr.h, struct ifaddrmsg (after struct nlmsghdr):
//!  0               8               16              24              32
//! +---------------+---------------+---------------+---------------+
//! |  ifa_family   | ifa_prefixlen |   ifa_flags   |   ifa_scope   |
//! +---------------+---------------+---------------+---------------+
//! |                    ifa_index (host order)                     |
//! +---------------+---------------+---------------+---------------+
//! then attributes: IFA_ADDRESS (1), IFA_LOCAL (2), IFA_LABEL (3, string),
//! IFA_CACHEINFO (6), IFA_FLAGS (8, u32: all IFA_F_* bits; ifa_flags only
//! has room for the low 8), IFA_PROTO (11, u8), ...
//!
//! include/uapi/linux/rtnetlink.h, struct ifinfomsg:
//! +---------------+---------------+---------------+---------------+
//! |  ifi_family   |    (pad)      |     ifi_type (ARPHRD_*)       |
//! +---------------+---------------+---------------+---------------+
//! |                     ifi_index (int, host order)               |
//! +---------------+---------------+---------------+---------------+
//! |                  ifi_flags (IFF_*, include/uapi/linux/if.h)    |
//! +---------------+---------------+---------------+---------------+
//! |                  ifi_change (0 in GET requests)               |
//! +---------------+---------------+---------------+---------------+
//! then attributes: IFLA_IFNAME (3, string), IFLA_EXT_MASK (29, u32), ...
//! ```
//!
//! Address semantics worth knowing (linux/net/ipv4/devinet.c,
//! net/ipv6/addrconf.c):
//! - IPv4 identifies an address by (local, prefix length): 192.0.2.1/24 and
//!   192.0.2.1/32 can coexist. IFA_LOCAL is the address itself, IFA_ADDRESS
//!   the peer on point-to-point links (equal to IFA_LOCAL otherwise).
//! - IPv6 identifies an address by the address alone: `NLM_F_REPLACE` of an
//!   existing address with another prefix length succeeds and keeps the old
//!   prefix length (observed on 6.x). IFA_ADDRESS is the address (IFA_LOCAL
//!   appears only with a peer).
//! - Deleting needs the prefix length the address has (both families):
//!   another one is answered with EADDRNOTAVAIL, "not there".

use super::nl::{self, AttrIter, FrameError, TooLong, Writer, NLM_F_ACK, NLM_F_REQUEST};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// include/uapi/linux/rtnetlink.h message types.
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;

/// include/uapi/linux/rtnetlink.h `enum rtnetlink_groups`: link events.
pub const RTNLGRP_LINK: u32 = 1;
/// `RTEXT_FILTER_SKIP_STATS` (rtnetlink.h): leave the link statistics out
/// of RTM_GETLINK answers; we only read the flags and the name, and the
/// stats are most of a 1.5 KiB link message.
pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// include/uapi/linux/netlink.h: `NLM_F_REPLACE`, `NLM_F_CREATE` (new
/// requests); `NLM_F_ROOT | NLM_F_MATCH` is `NLM_F_DUMP`.
pub const NLM_F_REPLACE: u16 = 0x100;

/// include/linux/socket.h address families.
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// `sizeof(struct ifaddrmsg)`.
pub const IFADDRMSG_LEN: usize = 8;
/// `sizeof(struct ifinfomsg)`.
pub const IFINFOMSG_LEN: usize = 16;

/// include/uapi/linux/if_addr.h attribute types.
pub mod ifa {
    pub const ADDRESS: u16 = 1;
    pub const LOCAL: u16 = 2;
    pub const LABEL: u16 = 3;
    pub const FLAGS: u16 = 8;
}

/// include/uapi/linux/if_addr.h `IFA_F_*` address flags.
pub mod ifa_f {
    pub const SECONDARY: u32 = 0x01;
    /// No duplicate address detection (RFC 4862 5.4): usable at once.
    pub const NODAD: u32 = 0x02;
    pub const DADFAILED: u32 = 0x08;
    /// DAD still running: the address cannot be used as a source, and
    /// packets to it are not accepted yet (RFC 4862 5.4).
    pub const TENTATIVE: u32 = 0x40;
    pub const PERMANENT: u32 = 0x80;
}

/// include/uapi/linux/if_link.h attribute types.
pub mod ifla {
    pub const IFNAME: u16 = 3;
    pub const EXT_MASK: u16 = 29;
}

/// include/uapi/linux/if.h `IFF_*` device flags.
pub mod iff {
    /// Administratively up (`ip link set X up`).
    pub const UP: u32 = 0x1;
    /// Operationally up (RFC 2863 operstate UP or UNKNOWN): set by
    /// `dev_get_flags()` only while the device runs and has carrier.
    pub const RUNNING: u32 = 0x40;
    /// Carrier (physical layer) up.
    pub const LOWER_UP: u32 = 0x10000;
}

/// `IFNAMSIZ` (include/uapi/linux/if.h), including the NUL.
pub const IFNAMSIZ: usize = 16;

/// A reply we cannot parse: which message part and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub path: String,
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

fn derr(path: &str, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        path: path.to_string(),
        detail: detail.into(),
    }
}

impl From<FrameError> for DecodeError {
    fn from(e: FrameError) -> Self {
        derr("attributes", e.0)
    }
}

/// The request could not be built (an attribute too long: a caller bug,
/// since names and addresses are bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError;

impl From<TooLong> for EncodeError {
    fn from(_: TooLong) -> Self {
        EncodeError
    }
}

/// Starts an rtnetlink message: `struct nlmsghdr` (length patched by
/// `Writer::end_msg`, pid 0 so the kernel fills in our port) and the
/// family header `fixed` (`struct ifaddrmsg` / `struct ifinfomsg`).
fn begin(w: &mut Writer, kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> usize {
    let start = w.buf.len();
    w.buf.extend_from_slice(&0u32.to_ne_bytes());
    w.buf.extend_from_slice(&kind.to_ne_bytes());
    w.buf.extend_from_slice(&flags.to_ne_bytes());
    w.buf.extend_from_slice(&seq.to_ne_bytes());
    w.buf.extend_from_slice(&0u32.to_ne_bytes());
    w.buf.extend_from_slice(fixed);
    start
}

fn ifaddrmsg(family: u8, prefix_len: u8, flags: u8, scope: u8, index: u32) -> [u8; IFADDRMSG_LEN] {
    let i = index.to_ne_bytes();
    [family, prefix_len, flags, scope, i[0], i[1], i[2], i[3]]
}

fn ifinfomsg(index: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    // Everything else 0: with NETLINK_GET_STRICT_CHK the kernel refuses a
    // GETLINK whose pad, type, flags or change are set
    // (rtnl_valid_getlink_req).
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

fn family_of(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Which address request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrCmd {
    /// RTM_NEWADDR with `NLM_F_CREATE | NLM_F_REPLACE`: present afterwards,
    /// whether or not it was before (`ip addr replace`).
    Add,
    /// RTM_DELADDR.
    Delete,
}

/// An address request, `NLM_F_ACK` set so that success is answered too.
///
/// IPv4: IFA_LOCAL then IFA_ADDRESS, both the address (what `ip addr
/// replace A/N dev X` sends, byte for byte; see the tests). IPv6:
/// IFA_ADDRESS only, and on add `IFA_F_NODAD` both in `ifa_flags` and in
/// IFA_FLAGS: RFC 4862 5.4 duplicate address detection would keep a VIP
/// tentative (unusable) for DupAddrDetectTransmits x RetransTimer, one
/// second by default, after every failover. keepalived adds its IPv6 VIPs
/// with NODAD for the same reason. The kernel's prefix route is kept (no
/// `IFA_F_NOPREFIXROUTE`), as keepalived does.
///
/// The caller has checked `prefix_len` against the family.
pub fn encode_addr(
    w: &mut Writer,
    cmd: AddrCmd,
    seq: u32,
    ifindex: u32,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<(), EncodeError> {
    let (kind, flags) = match cmd {
        AddrCmd::Add => (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | nl::NLM_F_CREATE | NLM_F_REPLACE,
        ),
        AddrCmd::Delete => (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK),
    };
    let v6_add = addr.is_ipv6() && cmd == AddrCmd::Add;
    let ifa_flags = if v6_add { ifa_f::NODAD as u8 } else { 0 };
    // Scope 0 = RT_SCOPE_UNIVERSE ("global"); IPv6 derives the scope from
    // the address itself.
    let hdr = ifaddrmsg(family_of(&addr), prefix_len, ifa_flags, 0, ifindex);
    let start = begin(w, kind, flags, seq, &hdr);
    let r = (|| {
        let bytes = octets(&addr);
        if addr.is_ipv4() {
            w.put(ifa::LOCAL, &bytes)?;
        }
        w.put(ifa::ADDRESS, &bytes)?;
        if v6_add {
            w.put_u32(ifa::FLAGS, ifa_f::NODAD)?;
        }
        w.end_msg(start)
    })();
    if r.is_err() {
        w.truncate(start);
    }
    Ok(r?)
}

/// RTM_GETADDR dump of both families, asking for `ifindex` only. The
/// kernel filters by index only on sockets with `NETLINK_GET_STRICT_CHK`
/// (4.20+); the decoder's caller filters again, so older kernels work too.
pub fn encode_addr_dump(w: &mut Writer, seq: u32, ifindex: u32) -> Result<(), EncodeError> {
    let hdr = ifaddrmsg(AF_UNSPEC, 0, 0, 0, ifindex);
    let start = begin(w, RTM_GETADDR, NLM_F_REQUEST | nl::NLM_F_DUMP, seq, &hdr);
    w.end_msg(start)?;
    Ok(())
}

/// RTM_GETLINK for one link, by name (`index` 0) or by index (`name`
/// `None`); `NLM_F_ACK` so that the answer ends with an ACK.
pub fn encode_getlink(
    w: &mut Writer,
    seq: u32,
    index: u32,
    name: Option<&str>,
) -> Result<(), EncodeError> {
    let start = begin(
        w,
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &ifinfomsg(index),
    );
    let r = (|| {
        if let Some(n) = name {
            w.put_str(ifla::IFNAME, n)?;
        }
        w.put_u32(ifla::EXT_MASK, RTEXT_FILTER_SKIP_STATS)?;
        w.end_msg(start)
    })();
    if r.is_err() {
        w.truncate(start);
    }
    Ok(r?)
}

/// RTM_GETLINK dump of every link of the namespace.
pub fn encode_link_dump(w: &mut Writer, seq: u32) -> Result<(), EncodeError> {
    let start = begin(
        w,
        RTM_GETLINK,
        NLM_F_REQUEST | nl::NLM_F_DUMP,
        seq,
        &ifinfomsg(0),
    );
    let r = (|| {
        w.put_u32(ifla::EXT_MASK, RTEXT_FILTER_SKIP_STATS)?;
        w.end_msg(start)
    })();
    if r.is_err() {
        w.truncate(start);
    }
    Ok(r?)
}

/// One address of an RTM_NEWADDR / RTM_DELADDR message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrEntry {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// All `IFA_F_*` bits: IFA_FLAGS when present (it has the bits above
    /// 0xff), else `ifa_flags`.
    pub flags: u32,
    /// `ifa_scope` (`RT_SCOPE_*`: 0 global, 253 link, 254 host).
    pub scope: u8,
    /// IFA_LABEL (IPv4 only; the interface name, or `name:alias`).
    pub label: Option<String>,
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn ip_of(family: u8, v: &[u8], path: &str) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => <[u8; 4]>::try_from(v)
            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .map_err(|_| {
                derr(
                    path,
                    format!("{} bytes for an IPv4 address, need 4", v.len()),
                )
            }),
        _ => <[u8; 16]>::try_from(v)
            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            .map_err(|_| {
                derr(
                    path,
                    format!("{} bytes for an IPv6 address, need 16", v.len()),
                )
            }),
    }
}

/// Decodes the payload (after `struct nlmsghdr`) of an address message.
/// `Ok(None)`: a family other than IPv4/IPv6 (e.g. AF_MCTP), or no address
/// attribute, which is not ours to manage.
pub fn decode_addr(p: &[u8]) -> Result<Option<AddrEntry>, DecodeError> {
    let fixed = p.get(..IFADDRMSG_LEN).ok_or_else(|| {
        derr(
            "ifaddrmsg",
            format!("{} bytes, need {IFADDRMSG_LEN}", p.len()),
        )
    })?;
    let family = fixed[0];
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let max = if family == AF_INET { 32 } else { 128 };
    let prefix_len = fixed[1];
    if prefix_len > max {
        return Err(derr(
            "ifaddrmsg",
            format!("prefix length {prefix_len} for a family of {max}-bit addresses"),
        ));
    }
    let mut flags = u32::from(fixed[2]);
    let scope = fixed[3];
    let index = read_u32(fixed, 4).unwrap_or_default();
    let (mut address, mut local, mut label) = (None, None, None);
    for a in AttrIter::new(p.get(IFADDRMSG_LEN..).unwrap_or_default()) {
        let a = a?;
        match a.kind {
            ifa::ADDRESS => address = Some(ip_of(family, a.value, "IFA_ADDRESS")?),
            ifa::LOCAL => local = Some(ip_of(family, a.value, "IFA_LOCAL")?),
            ifa::LABEL => label = Some(nl::c_string(a.value)),
            ifa::FLAGS => {
                flags = read_u32(a.value, 0)
                    .filter(|_| a.value.len() == 4)
                    .ok_or_else(|| derr("IFA_FLAGS", format!("{} bytes, need 4", a.value.len())))?
            }
            _ => {}
        }
    }
    // IFA_LOCAL is our address when present (IFA_ADDRESS is then the peer
    // of a point-to-point link); as iproute2 reads it.
    let Some(addr) = local.or(address) else {
        return Ok(None);
    };
    Ok(Some(AddrEntry {
        index,
        addr,
        prefix_len,
        flags,
        scope,
        label,
    }))
}

/// One link of an RTM_NEWLINK / RTM_DELLINK message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// `ifi_family`: 0 for the link itself; AF_BRIDGE (7) messages describe
    /// a bridge port's bridge state and must not be taken for the link.
    pub family: u8,
    pub index: u32,
    pub flags: u32,
    pub name: Option<String>,
}

/// Decodes the payload of a link message.
pub fn decode_link(p: &[u8]) -> Result<LinkEntry, DecodeError> {
    let fixed = p.get(..IFINFOMSG_LEN).ok_or_else(|| {
        derr(
            "ifinfomsg",
            format!("{} bytes, need {IFINFOMSG_LEN}", p.len()),
        )
    })?;
    let family = fixed[0];
    let index = read_u32(fixed, 4).unwrap_or_default();
    let flags = read_u32(fixed, 8).unwrap_or_default();
    let mut name = None;
    for a in AttrIter::new(p.get(IFINFOMSG_LEN..).unwrap_or_default()) {
        let a = a?;
        if a.kind == ifla::IFNAME {
            name = Some(nl::c_string(a.value));
        }
    }
    Ok(LinkEntry {
        family,
        index,
        flags,
        name,
    })
}
