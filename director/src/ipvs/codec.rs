//! The "IPVS" generic netlink family (`/usr/include/linux/ip_vs.h`, "IPVS
//! Generic Netlink interface definitions"): pure encode / decode between the
//! model (`crate::model`) and message bytes. No sockets here.
//!
//! Requests are a [`Request`] value; [`encode`] appends one netlink message
//! for it to a [`Writer`], [`decode_request`] reads one back (for tests and
//! for the capture comparisons). Replies are decoded by [`decode_service`],
//! [`decode_dest`], [`decode_info`], [`decode_config`], [`decode_daemon`],
//! each taking the generic netlink payload (genlmsghdr + attributes).
//!
//! Decoding is view then repr: [`AttrTable`] is the view (attributes of one
//! level indexed by type, bounds-checked once, unknown types kept aside), and
//! the `*_repr` functions validate it into model values. Nothing here panics
//! on any input; every failure is a `KernelError::Decode { what, detail }`.

use super::nl::{
    self, Attr, AttrIter, TooLong, Writer, GENL_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::kernel::KernelError;
use crate::model::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// ip_vs.h: `IPVS_GENL_NAME`, `IPVS_GENL_VERSION`.
pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

/// ip_vs.h `enum { IPVS_CMD_* }`.
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const NEW_DAEMON: u8 = 9;
    pub const DEL_DAEMON: u8 = 10;
    pub const GET_DAEMON: u8 = 11;
    pub const SET_CONFIG: u8 = 12;
    pub const GET_CONFIG: u8 = 13;
    /// "only used in GET_INFO reply".
    pub const SET_INFO: u8 = 14;
    pub const GET_INFO: u8 = 15;
    pub const ZERO: u8 = 16;
    pub const FLUSH: u8 = 17;
}

/// ip_vs.h `IPVS_CMD_ATTR_*`: first level of every IPVS message.
pub mod cmd_attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
    pub const MAX: u16 = 6;
}

/// ip_vs.h `IPVS_SVC_ATTR_*`: inside `IPVS_CMD_ATTR_SERVICE`.
pub mod svc_attr {
    /// u16 AF_INET / AF_INET6.
    pub const AF: u16 = 1;
    /// u16 IPPROTO_*.
    pub const PROTOCOL: u16 = 2;
    /// 16 bytes, `union nf_inet_addr` (IPv4 in the first 4).
    pub const ADDR: u16 = 3;
    /// __be16.
    pub const PORT: u16 = 4;
    /// u32.
    pub const FWMARK: u16 = 5;
    /// NUL-terminated, at most IP_VS_SCHEDNAME_MAXLEN (16) with the NUL.
    pub const SCHED_NAME: u16 = 6;
    /// `struct ip_vs_flags { __u32 flags; __u32 mask; }`.
    pub const FLAGS: u16 = 7;
    /// u32 seconds.
    pub const TIMEOUT: u16 = 8;
    /// __be32: IPv4 netmask in network order; IPv6 prefix length (the
    /// kernel keeps it in the same __be32 field without byte swapping).
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const PE_NAME: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const MAX: u16 = 12;
}

/// ip_vs.h `IPVS_DEST_ATTR_*`: inside `IPVS_CMD_ATTR_DEST`.
pub mod dest_attr {
    /// 16 bytes `union nf_inet_addr`.
    pub const ADDR: u16 = 1;
    /// __be16.
    pub const PORT: u16 = 2;
    /// u32, `IP_VS_CONN_F_FWD_MASK` bits.
    pub const FWD_METHOD: u16 = 3;
    /// u32 (the kernel refuses negative weights).
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    /// u16 AF of the destination (may differ from the service's).
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    /// u8 `IP_VS_CONN_F_TUNNEL_TYPE_*`.
    pub const TUN_TYPE: u16 = 13;
    /// __be16.
    pub const TUN_PORT: u16 = 14;
    /// u16 `IP_VS_TUNNEL_ENCAP_FLAG_*`.
    pub const TUN_FLAGS: u16 = 15;
    pub const MAX: u16 = 15;
}

/// ip_vs.h `IPVS_DAEMON_ATTR_*`: inside `IPVS_CMD_ATTR_DAEMON`.
pub mod daemon_attr {
    /// u32 IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP.
    pub const STATE: u16 = 1;
    /// NUL-terminated interface name (IP_VS_IFNAME_MAXLEN 16 with NUL).
    pub const MCAST_IFN: u16 = 2;
    /// u32.
    pub const SYNC_ID: u16 = 3;
    /// u16.
    pub const SYNC_MAXLEN: u16 = 4;
    /// __be32 (an in_addr).
    pub const MCAST_GROUP: u16 = 5;
    /// 16 bytes in6_addr.
    pub const MCAST_GROUP6: u16 = 6;
    /// u16 (host order; ip_vs_ctl.c converts with htons).
    pub const MCAST_PORT: u16 = 7;
    /// u8.
    pub const MCAST_TTL: u16 = 8;
    pub const MAX: u16 = 8;
}

/// ip_vs.h `IPVS_STATS_ATTR_*`: inside `*_ATTR_STATS` (u32 counters, u64
/// bytes) and `*_ATTR_STATS64` (all u64).
pub mod stats_attr {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
    pub const PAD: u16 = 11;
    pub const MAX: u16 = 11;
}

/// ip_vs.h `IPVS_INFO_ATTR_*`: first level of the GET_INFO reply.
pub mod info_attr {
    pub const VERSION: u16 = 1;
    pub const CONN_TAB_SIZE: u16 = 2;
    pub const MAX: u16 = 2;
}

/// ip_vs.h `IP_VS_SCHEDNAME_MAXLEN` / `IP_VS_PENAME_MAXLEN` /
/// `IP_VS_IFNAME_MAXLEN`, all 16 including the NUL.
pub const NAME_MAXLEN: usize = 16;

/// libnl's `nla_nest_start()` (what ipvsadm uses) marks nests with
/// `NLA_F_NESTED` (seen in the nlmon captures: type 0x8001 for
/// IPVS_CMD_ATTR_SERVICE); the kernel's own dumps do not. The kernel parses
/// IPVS nests either way (`nla_parse_nested_deprecated`); we send what
/// ipvsadm sends.
const NEST_FLAG: u16 = nl::NLA_F_NESTED;

/// One IPVS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    GetInfo,
    GetConfig,
    SetConfig(Timeouts),
    Flush,
    DumpServices,
    /// `GET_DEST` dump of one service's destinations. The kernel only needs
    /// the key; ipvsadm sends the whole service it got from the dump.
    DumpDests(ServiceKey),
    NewService(Service),
    SetService(Service),
    DelService(ServiceKey),
    NewDest {
        service: ServiceKey,
        dest: Destination,
    },
    SetDest {
        service: ServiceKey,
        dest: Destination,
    },
    DelDest {
        service: ServiceKey,
        dest: DestKey,
    },
    NewDaemon(SyncDaemon),
    /// Stops the daemon of that role (ip_vs_genl_del_daemon reads only
    /// IPVS_DAEMON_ATTR_STATE).
    DelDaemon(SyncRole),
    DumpDaemons,
}

impl Request {
    pub fn from_op(op: &IpvsOp) -> Request {
        match op {
            IpvsOp::AddService(s) => Request::NewService(s.clone()),
            IpvsOp::EditService(s) => Request::SetService(s.clone()),
            IpvsOp::DelService(k) => Request::DelService(*k),
            IpvsOp::AddDest { service, dest } => Request::NewDest {
                service: *service,
                dest: *dest,
            },
            IpvsOp::EditDest { service, dest } => Request::SetDest {
                service: *service,
                dest: *dest,
            },
            IpvsOp::DelDest { service, dest } => Request::DelDest {
                service: *service,
                dest: *dest,
            },
        }
    }

    pub fn cmd(&self) -> u8 {
        match self {
            Request::GetInfo => cmd::GET_INFO,
            Request::GetConfig => cmd::GET_CONFIG,
            Request::SetConfig(_) => cmd::SET_CONFIG,
            Request::Flush => cmd::FLUSH,
            Request::DumpServices => cmd::GET_SERVICE,
            Request::DumpDests(_) => cmd::GET_DEST,
            Request::NewService(_) => cmd::NEW_SERVICE,
            Request::SetService(_) => cmd::SET_SERVICE,
            Request::DelService(_) => cmd::DEL_SERVICE,
            Request::NewDest { .. } => cmd::NEW_DEST,
            Request::SetDest { .. } => cmd::SET_DEST,
            Request::DelDest { .. } => cmd::DEL_DEST,
            Request::NewDaemon(_) => cmd::NEW_DAEMON,
            Request::DelDaemon(_) => cmd::DEL_DAEMON,
            Request::DumpDaemons => cmd::GET_DAEMON,
        }
    }

    pub fn is_dump(&self) -> bool {
        matches!(
            self,
            Request::DumpServices | Request::DumpDests(_) | Request::DumpDaemons
        )
    }

    /// Netlink header flags: `NLM_F_REQUEST`, plus `NLM_F_DUMP` for dumps,
    /// plus `NLM_F_ACK` when asked (ipvsadm, through libnl, always asks).
    pub fn flags(&self, ack: bool) -> u16 {
        let mut f = NLM_F_REQUEST;
        if self.is_dump() {
            f |= NLM_F_DUMP;
        }
        if ack {
            f |= NLM_F_ACK;
        }
        f
    }
}

/// Why a request could not be encoded (never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl From<TooLong> for EncodeError {
    fn from(_: TooLong) -> Self {
        EncodeError("attribute longer than 65535 bytes".into())
    }
}

fn check_name(what: &str, s: &str) -> Result<(), EncodeError> {
    if s.len() >= NAME_MAXLEN || s.as_bytes().contains(&0) {
        return Err(EncodeError(format!(
            "{what} {s:?} must be 1..={} bytes without NUL (ip_vs.h *_MAXLEN = {NAME_MAXLEN} with the NUL)",
            NAME_MAXLEN - 1
        )));
    }
    Ok(())
}

/// Appends one complete netlink message for `req`. On error nothing is
/// appended.
pub fn encode(
    w: &mut Writer,
    family: u16,
    seq: u32,
    pid: u32,
    ack: bool,
    req: &Request,
) -> Result<(), EncodeError> {
    let start = w.begin_genl(
        family,
        req.flags(ack),
        seq,
        pid,
        req.cmd(),
        IPVS_GENL_VERSION,
    );
    let r = encode_attrs(w, req).and_then(|()| w.end_msg(start).map_err(EncodeError::from));
    if r.is_err() {
        w.truncate(start);
    }
    r
}

/// Convenience: one request as its own byte vector.
pub fn encode_one(
    family: u16,
    seq: u32,
    pid: u32,
    ack: bool,
    req: &Request,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new();
    encode(&mut w, family, seq, pid, ack, req)?;
    Ok(w.buf)
}

fn encode_attrs(w: &mut Writer, req: &Request) -> Result<(), EncodeError> {
    match req {
        Request::GetInfo
        | Request::GetConfig
        | Request::Flush
        | Request::DumpServices
        | Request::DumpDaemons => {}
        Request::SetConfig(t) => {
            // libipvs ipvs_set_timeout(): a zero timeout is left out, which
            // the kernel reads as "leave unchanged".
            if t.tcp != 0 {
                w.put_u32(cmd_attr::TIMEOUT_TCP, t.tcp)?;
            }
            if t.tcp_fin != 0 {
                w.put_u32(cmd_attr::TIMEOUT_TCP_FIN, t.tcp_fin)?;
            }
            if t.udp != 0 {
                w.put_u32(cmd_attr::TIMEOUT_UDP, t.udp)?;
            }
        }
        Request::DumpDests(k) | Request::DelService(k) => put_service(w, k, None)?,
        Request::NewService(s) | Request::SetService(s) => {
            put_service(w, &s.key, Some(&s.settings))?
        }
        Request::NewDest { service, dest } | Request::SetDest { service, dest } => {
            put_service(w, service, None)?;
            put_dest(w, &dest.key, Some(&dest.settings))?;
        }
        Request::DelDest { service, dest } => {
            put_service(w, service, None)?;
            put_dest(w, dest, None)?;
        }
        Request::NewDaemon(d) => put_daemon(w, d)?,
        Request::DelDaemon(role) => {
            // What ipvsadm sends: the state, an empty interface name and
            // sync id 0.
            let n = w.begin_nest(cmd_attr::DAEMON | NEST_FLAG);
            w.put_u32(daemon_attr::STATE, role.code())?;
            w.put_str(daemon_attr::MCAST_IFN, "")?;
            w.put_u32(daemon_attr::SYNC_ID, 0)?;
            w.end_nest(n)?;
        }
    }
    Ok(())
}

/// ```text
/// IPVS_CMD_ATTR_SERVICE (nested), ip_vs.h IPVS_SVC_ATTR_*, in libipvs order:
///   AF u16 | FWMARK u32                        (fwmark service)
///   AF u16 | PROTOCOL u16 | ADDR [16] | PORT be16  (inet service)
///   then, for NEW/SET only (ip_vs_genl_parse_service full_entry):
///   SCHED_NAME "..\0" | [PE_NAME "..\0"] | FLAGS {u32 flags, u32 mask}
///   | TIMEOUT u32 | NETMASK be32
/// ```
fn put_service(
    w: &mut Writer,
    key: &ServiceKey,
    settings: Option<&ServiceSettings>,
) -> Result<(), EncodeError> {
    let n = w.begin_nest(cmd_attr::SERVICE | NEST_FLAG);
    w.put_u16(svc_attr::AF, key.family().af())?;
    match key {
        ServiceKey::Fwmark { mark, .. } => w.put_u32(svc_attr::FWMARK, *mark)?,
        ServiceKey::Inet { protocol, addr } => {
            w.put_u16(svc_attr::PROTOCOL, protocol.number())?;
            w.put(svc_attr::ADDR, &inet_addr(&addr.ip()))?;
            w.put_be16(svc_attr::PORT, addr.port())?;
        }
    }
    if let Some(s) = settings {
        check_name("scheduler", &s.scheduler)?;
        w.put_str(svc_attr::SCHED_NAME, &s.scheduler)?;
        if let Some(pe) = &s.pe_name {
            check_name("persistence engine", pe)?;
            w.put_str(svc_attr::PE_NAME, pe)?;
        }
        // struct ip_vs_flags: the mask says which bits to take; like
        // ipvsadm we send ~0 so the kernel's flags become exactly ours
        // (ip_vs_ctl.c keeps HASHED itself).
        let mut f = [0u8; 8];
        f[..4].copy_from_slice(&(s.flags & !svc_flags::HASHED).to_ne_bytes());
        f[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        w.put(svc_attr::FLAGS, &f)?;
        w.put_u32(svc_attr::TIMEOUT, s.timeout)?;
        w.put(svc_attr::NETMASK, &netmask_bytes(key.family(), s.netmask))?;
    }
    w.end_nest(n)?;
    Ok(())
}

/// The `IPVS_SVC_ATTR_NETMASK` value. The attribute is a `__be32`: for IPv4
/// the mask in network order (model: host-order u32, so big-endian bytes);
/// for IPv6 ip_vs_ctl.c stores the prefix length in that same field with no
/// byte swap, so it travels in host order.
fn netmask_bytes(f: Family, netmask: u32) -> [u8; 4] {
    match f {
        Family::V4 => netmask.to_be_bytes(),
        Family::V6 => netmask.to_ne_bytes(),
    }
}

fn netmask_from(f: Family, b: [u8; 4]) -> u32 {
    match f {
        Family::V4 => u32::from_be_bytes(b),
        Family::V6 => u32::from_ne_bytes(b),
    }
}

/// `union nf_inet_addr` (include/uapi/linux/netfilter.h): 16 bytes, an IPv4
/// address in the first 4 (network order), the rest zero.
fn inet_addr(ip: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b = a.octets(),
    }
    b
}

/// ```text
/// IPVS_CMD_ATTR_DEST (nested), ip_vs.h IPVS_DEST_ATTR_*, libipvs order:
///   ADDR_FAMILY u16 | ADDR [16] | PORT be16
///   then, for NEW/SET only (ip_vs_genl_parse_dest full_entry):
///   FWD_METHOD u32 | WEIGHT u32 | TUN_TYPE u8 | TUN_PORT be16 |
///   TUN_FLAGS u16 | U_THRESH u32 | L_THRESH u32
/// ```
fn put_dest(
    w: &mut Writer,
    key: &DestKey,
    settings: Option<&DestSettings>,
) -> Result<(), EncodeError> {
    let n = w.begin_nest(cmd_attr::DEST | NEST_FLAG);
    w.put_u16(dest_attr::ADDR_FAMILY, Family::of(&key.addr).af())?;
    w.put(dest_attr::ADDR, &inet_addr(&key.addr))?;
    w.put_be16(dest_attr::PORT, key.port)?;
    if let Some(s) = settings {
        w.put_u32(dest_attr::FWD_METHOD, s.forward.code())?;
        w.put_u32(dest_attr::WEIGHT, s.weight as u32)?;
        // Always sent (ipvsadm does too): editing a GUE destination into a
        // NAT one then also resets the kernel's tunnel settings.
        w.put_u8(dest_attr::TUN_TYPE, s.tunnel.kind.code())?;
        w.put_be16(dest_attr::TUN_PORT, s.tunnel.port)?;
        w.put_u16(dest_attr::TUN_FLAGS, s.tunnel.csum.code())?;
        w.put_u32(dest_attr::U_THRESH, s.upper_threshold)?;
        w.put_u32(dest_attr::L_THRESH, s.lower_threshold)?;
    }
    w.end_nest(n)?;
    Ok(())
}

/// ```text
/// IPVS_CMD_ATTR_DAEMON (nested), ip_vs.h IPVS_DAEMON_ATTR_*, libipvs order:
///   STATE u32 | MCAST_IFN "..\0" | SYNC_ID u32
///   then each only when set: SYNC_MAXLEN u16 | MCAST_PORT u16 (host order)
///   | MCAST_TTL u8 | MCAST_GROUP6 [16] or MCAST_GROUP be32
/// ```
fn put_daemon(w: &mut Writer, d: &SyncDaemon) -> Result<(), EncodeError> {
    check_name("multicast interface", &d.mcast_ifn)?;
    let n = w.begin_nest(cmd_attr::DAEMON | NEST_FLAG);
    w.put_u32(daemon_attr::STATE, d.role.code())?;
    w.put_str(daemon_attr::MCAST_IFN, &d.mcast_ifn)?;
    w.put_u32(daemon_attr::SYNC_ID, u32::from(d.syncid))?;
    if d.sync_maxlen != 0 {
        w.put_u16(daemon_attr::SYNC_MAXLEN, d.sync_maxlen)?;
    }
    if d.mcast_port != 0 {
        w.put_u16(daemon_attr::MCAST_PORT, d.mcast_port)?;
    }
    if d.mcast_ttl != 0 {
        w.put_u8(daemon_attr::MCAST_TTL, d.mcast_ttl)?;
    }
    match d.mcast_group {
        Some(IpAddr::V6(a)) => w.put(daemon_attr::MCAST_GROUP6, &a.octets())?,
        Some(IpAddr::V4(a)) => w.put(daemon_attr::MCAST_GROUP, &a.octets())?,
        None => {}
    }
    w.end_nest(n)?;
    Ok(())
}

// ---------------------------------------------------------------- decoding

fn derr(what: &str, detail: impl Into<String>) -> KernelError {
    KernelError::Decode {
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// The view: one level of attributes, indexed by type (like the kernel's
/// `nla_parse`: the last occurrence wins). Types above `max` are not errors;
/// they are kept in `unknown` so a newer kernel's additions pass through.
#[derive(Debug, Clone)]
pub struct AttrTable<'a> {
    slots: Vec<Option<&'a [u8]>>,
    pub unknown: Vec<Attr<'a>>,
    what: &'static str,
}

impl<'a> AttrTable<'a> {
    pub fn parse(what: &'static str, buf: &'a [u8], max: u16) -> Result<Self, KernelError> {
        let mut slots = vec![None; usize::from(max) + 1];
        let mut unknown = Vec::new();
        for a in AttrIter::new(buf) {
            let a = a.map_err(|e| derr(what, e.0))?;
            match slots.get_mut(usize::from(a.kind)) {
                Some(slot) if a.kind != 0 => *slot = Some(a.value),
                _ => unknown.push(a),
            }
        }
        Ok(AttrTable {
            slots,
            unknown,
            what,
        })
    }

    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.slots.get(usize::from(kind)).copied().flatten()
    }

    fn req(&self, kind: u16, name: &str) -> Result<&'a [u8], KernelError> {
        self.get(kind)
            .ok_or_else(|| derr(self.what, format!("missing {name}")))
    }

    fn fixed<const N: usize>(&self, kind: u16, name: &str) -> Result<Option<[u8; N]>, KernelError> {
        match self.get(kind) {
            None => Ok(None),
            Some(v) => v
                .get(..N)
                .and_then(|s| <[u8; N]>::try_from(s).ok())
                .map(Some)
                .ok_or_else(|| derr(self.what, format!("{name}: {} bytes, need {N}", v.len()))),
        }
    }

    fn opt_u8(&self, kind: u16, name: &str) -> Result<Option<u8>, KernelError> {
        Ok(self.fixed::<1>(kind, name)?.map(|b| b[0]))
    }
    fn opt_u16(&self, kind: u16, name: &str) -> Result<Option<u16>, KernelError> {
        Ok(self.fixed::<2>(kind, name)?.map(u16::from_ne_bytes))
    }
    fn opt_be16(&self, kind: u16, name: &str) -> Result<Option<u16>, KernelError> {
        Ok(self.fixed::<2>(kind, name)?.map(u16::from_be_bytes))
    }
    fn opt_u32(&self, kind: u16, name: &str) -> Result<Option<u32>, KernelError> {
        Ok(self.fixed::<4>(kind, name)?.map(u32::from_ne_bytes))
    }
    fn u16(&self, kind: u16, name: &str) -> Result<u16, KernelError> {
        self.opt_u16(kind, name)?
            .ok_or_else(|| derr(self.what, format!("missing {name}")))
    }
    fn be16(&self, kind: u16, name: &str) -> Result<u16, KernelError> {
        self.opt_be16(kind, name)?
            .ok_or_else(|| derr(self.what, format!("missing {name}")))
    }
    fn u32(&self, kind: u16, name: &str) -> Result<u32, KernelError> {
        self.opt_u32(kind, name)?
            .ok_or_else(|| derr(self.what, format!("missing {name}")))
    }
    /// A counter that is u32 in `IPVS_*_ATTR_STATS` and u64 in `STATS64`
    /// (and u64 for the byte counters in both): accept either width.
    fn counter(&self, kind: u16, name: &str) -> Result<u64, KernelError> {
        let Some(v) = self.get(kind) else {
            return Ok(0);
        };
        if let Ok(b) = <[u8; 4]>::try_from(v) {
            Ok(u64::from(u32::from_ne_bytes(b)))
        } else if let Ok(b) = <[u8; 8]>::try_from(v) {
            Ok(u64::from_ne_bytes(b))
        } else {
            Err(derr(
                self.what,
                format!("{name}: {} bytes, need 4 or 8", v.len()),
            ))
        }
    }
    fn string(&self, kind: u16, name: &str) -> Result<Option<String>, KernelError> {
        match self.get(kind) {
            None => Ok(None),
            Some(v) => {
                let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
                let s = std::str::from_utf8(v.get(..end).unwrap_or_default())
                    .map_err(|_| derr(self.what, format!("{name}: not UTF-8")))?;
                Ok(Some(s.to_string()))
            }
        }
    }
}

/// The genl header of a message payload, and its attributes.
fn genl_split<'a>(what: &str, payload: &'a [u8]) -> Result<(u8, &'a [u8]), KernelError> {
    let cmd = *payload.first().ok_or_else(|| {
        derr(
            what,
            format!(
                "payload of {} bytes, shorter than genlmsghdr",
                payload.len()
            ),
        )
    })?;
    let attrs = payload.get(GENL_HDRLEN..).ok_or_else(|| {
        derr(
            what,
            format!(
                "payload of {} bytes, shorter than genlmsghdr",
                payload.len()
            ),
        )
    })?;
    Ok((cmd, attrs))
}

fn addr_from(what: &str, f: Family, v: &[u8]) -> Result<IpAddr, KernelError> {
    match f {
        Family::V4 => v
            .get(..4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .ok_or_else(|| derr(what, format!("IPv4 address: {} bytes", v.len()))),
        Family::V6 => v
            .get(..16)
            .and_then(|s| <[u8; 16]>::try_from(s).ok())
            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .ok_or_else(|| derr(what, format!("IPv6 address: {} bytes", v.len()))),
    }
}

fn family_from(what: &str, af: u16) -> Result<Family, KernelError> {
    Family::from_af(af).ok_or_else(|| derr(what, format!("unknown address family {af}")))
}

/// The key part of `IPVS_SVC_ATTR_*`.
fn service_key_repr(t: &AttrTable<'_>) -> Result<ServiceKey, KernelError> {
    let what = t.what;
    let family = family_from(what, t.u16(svc_attr::AF, "IPVS_SVC_ATTR_AF")?)?;
    // ip_vs_genl_parse_service(): a fwmark service has FWMARK; otherwise
    // PROTOCOL, ADDR and PORT. The kernel's dumps only send FWMARK when
    // it is non-zero.
    if let Some(mark) = t.opt_u32(svc_attr::FWMARK, "IPVS_SVC_ATTR_FWMARK")? {
        if mark != 0 {
            return Ok(ServiceKey::Fwmark { family, mark });
        }
    }
    let proto = t.u16(svc_attr::PROTOCOL, "IPVS_SVC_ATTR_PROTOCOL")?;
    let protocol = Protocol::from_number(proto)
        .ok_or_else(|| derr(what, format!("unsupported protocol {proto}")))?;
    let ip = addr_from(what, family, t.req(svc_attr::ADDR, "IPVS_SVC_ATTR_ADDR")?)?;
    let port = t.be16(svc_attr::PORT, "IPVS_SVC_ATTR_PORT")?;
    Ok(ServiceKey::Inet {
        protocol,
        addr: SocketAddr::new(ip, port),
    })
}

fn service_settings_repr(
    t: &AttrTable<'_>,
    family: Family,
) -> Result<ServiceSettings, KernelError> {
    let what = t.what;
    let scheduler = t
        .string(svc_attr::SCHED_NAME, "IPVS_SVC_ATTR_SCHED_NAME")?
        .ok_or_else(|| derr(what, "missing IPVS_SVC_ATTR_SCHED_NAME"))?;
    let flags = t
        .fixed::<8>(svc_attr::FLAGS, "IPVS_SVC_ATTR_FLAGS")?
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| derr(what, "missing IPVS_SVC_ATTR_FLAGS"))?;
    let timeout = t.u32(svc_attr::TIMEOUT, "IPVS_SVC_ATTR_TIMEOUT")?;
    let netmask = t
        .fixed::<4>(svc_attr::NETMASK, "IPVS_SVC_ATTR_NETMASK")?
        .map(|b| netmask_from(family, b))
        .ok_or_else(|| derr(what, "missing IPVS_SVC_ATTR_NETMASK"))?;
    let pe_name = t
        .string(svc_attr::PE_NAME, "IPVS_SVC_ATTR_PE_NAME")?
        .filter(|s| !s.is_empty());
    Ok(ServiceSettings {
        scheduler,
        // IP_VS_SVC_F_HASHED is the kernel's bookkeeping, not a setting.
        flags: flags & !svc_flags::HASHED,
        timeout,
        netmask,
        pe_name,
    })
}

/// `IPVS_*_ATTR_STATS` / `STATS64` nested counters.
fn stats_repr(what: &'static str, v: &[u8]) -> Result<Stats, KernelError> {
    let t = AttrTable::parse(what, v, stats_attr::MAX)?;
    Ok(Stats {
        conns: t.counter(stats_attr::CONNS, "CONNS")?,
        inpkts: t.counter(stats_attr::INPKTS, "INPKTS")?,
        outpkts: t.counter(stats_attr::OUTPKTS, "OUTPKTS")?,
        inbytes: t.counter(stats_attr::INBYTES, "INBYTES")?,
        outbytes: t.counter(stats_attr::OUTBYTES, "OUTBYTES")?,
        cps: t.counter(stats_attr::CPS, "CPS")?,
        inpps: t.counter(stats_attr::INPPS, "INPPS")?,
        outpps: t.counter(stats_attr::OUTPPS, "OUTPPS")?,
        inbps: t.counter(stats_attr::INBPS, "INBPS")?,
        outbps: t.counter(stats_attr::OUTBPS, "OUTBPS")?,
    })
}

/// Prefer `STATS64` (ip_vs.h: 64-bit, since Linux 4.1); fall back to
/// `STATS` on older kernels.
fn best_stats(
    what: &'static str,
    t: &AttrTable<'_>,
    stats: u16,
    stats64: u16,
) -> Result<Stats, KernelError> {
    if let Some(v) = t.get(stats64) {
        stats_repr(what, v)
    } else if let Some(v) = t.get(stats) {
        stats_repr(what, v)
    } else {
        Ok(Stats::default())
    }
}

fn nested<'a>(
    what: &'static str,
    payload: &'a [u8],
    kind: u16,
    name: &str,
) -> Result<AttrTable<'a>, KernelError> {
    let (_, attrs) = genl_split(what, payload)?;
    let top = AttrTable::parse(what, attrs, cmd_attr::MAX)?;
    let v = top.req(kind, name)?;
    let max = match kind {
        cmd_attr::SERVICE => svc_attr::MAX,
        cmd_attr::DEST => dest_attr::MAX,
        _ => daemon_attr::MAX,
    };
    AttrTable::parse(what, v, max)
}

/// Decodes one `IPVS_CMD_NEW_SERVICE` message of a `GET_SERVICE` dump (the
/// genl payload). The result has no destinations yet.
pub fn decode_service(payload: &[u8]) -> Result<KernelService, KernelError> {
    const WHAT: &str = "service dump";
    let t = nested(WHAT, payload, cmd_attr::SERVICE, "IPVS_CMD_ATTR_SERVICE")?;
    let key = service_key_repr(&t)?;
    let settings = service_settings_repr(&t, key.family())?;
    let stats = best_stats(WHAT, &t, svc_attr::STATS, svc_attr::STATS64)?;
    Ok(KernelService {
        service: Service { key, settings },
        stats,
        dests: Vec::new(),
    })
}

fn dest_key_repr(t: &AttrTable<'_>, svc_family: Family) -> Result<DestKey, KernelError> {
    // IPVS_DEST_ATTR_ADDR_FAMILY (Linux 4.x+): a destination may be of the
    // other family than its service (IPv6 service, IPv4 tunnel dest);
    // without it the service's family applies.
    let family = match t.opt_u16(dest_attr::ADDR_FAMILY, "IPVS_DEST_ATTR_ADDR_FAMILY")? {
        Some(af) => family_from(t.what, af)?,
        None => svc_family,
    };
    let addr = addr_from(
        t.what,
        family,
        t.req(dest_attr::ADDR, "IPVS_DEST_ATTR_ADDR")?,
    )?;
    let port = t.be16(dest_attr::PORT, "IPVS_DEST_ATTR_PORT")?;
    Ok(DestKey { addr, port })
}

fn dest_settings_repr(t: &AttrTable<'_>) -> Result<DestSettings, KernelError> {
    let what = t.what;
    let fwd = t.u32(dest_attr::FWD_METHOD, "IPVS_DEST_ATTR_FWD_METHOD")?;
    let forward = Forward::from_code(fwd)
        .ok_or_else(|| derr(what, format!("unknown forwarding method {fwd}")))?;
    // The kernel refuses negative weights, so a u32 above i32::MAX cannot
    // come from it; keep the bits rather than fail the whole dump.
    let weight = t.u32(dest_attr::WEIGHT, "IPVS_DEST_ATTR_WEIGHT")? as i32;
    let upper_threshold = t.u32(dest_attr::U_THRESH, "IPVS_DEST_ATTR_U_THRESH")?;
    let lower_threshold = t.u32(dest_attr::L_THRESH, "IPVS_DEST_ATTR_L_THRESH")?;
    let tunnel = if forward == Forward::Tunnel {
        let kind = t
            .opt_u8(dest_attr::TUN_TYPE, "IPVS_DEST_ATTR_TUN_TYPE")?
            .unwrap_or(0);
        let kind = TunnelType::from_code(kind)
            .ok_or_else(|| derr(what, format!("unknown tunnel type {kind}")))?;
        let port = t
            .opt_be16(dest_attr::TUN_PORT, "IPVS_DEST_ATTR_TUN_PORT")?
            .unwrap_or(0);
        let flags = t
            .opt_u16(dest_attr::TUN_FLAGS, "IPVS_DEST_ATTR_TUN_FLAGS")?
            .unwrap_or(0);
        let csum = TunnelCsum::from_code(flags)
            .ok_or_else(|| derr(what, format!("unknown tunnel flags {flags:#x}")))?;
        Tunnel { kind, port, csum }
    } else {
        // Model: tunnel settings only mean something for Tunnel dests; the
        // kernel keeps whatever it was given, we normalise to the default.
        Tunnel::default()
    };
    Ok(DestSettings {
        forward,
        weight,
        upper_threshold,
        lower_threshold,
        tunnel,
    })
}

/// Decodes one `IPVS_CMD_NEW_DEST` message of a `GET_DEST` dump.
/// `svc_family` is used when the kernel omits `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub fn decode_dest(payload: &[u8], svc_family: Family) -> Result<KernelDest, KernelError> {
    const WHAT: &str = "destination dump";
    let t = nested(WHAT, payload, cmd_attr::DEST, "IPVS_CMD_ATTR_DEST")?;
    let key = dest_key_repr(&t, svc_family)?;
    let settings = dest_settings_repr(&t)?;
    Ok(KernelDest {
        dest: Destination { key, settings },
        active_conns: t
            .opt_u32(dest_attr::ACTIVE_CONNS, "ACTIVE_CONNS")?
            .unwrap_or(0),
        inactive_conns: t
            .opt_u32(dest_attr::INACT_CONNS, "INACT_CONNS")?
            .unwrap_or(0),
        persist_conns: t
            .opt_u32(dest_attr::PERSIST_CONNS, "PERSIST_CONNS")?
            .unwrap_or(0),
        stats: best_stats(WHAT, &t, dest_attr::STATS, dest_attr::STATS64)?,
    })
}

/// Decodes the `IPVS_CMD_SET_INFO` reply to `GET_INFO`.
pub fn decode_info(payload: &[u8]) -> Result<IpvsInfo, KernelError> {
    const WHAT: &str = "IPVS info";
    let (_, attrs) = genl_split(WHAT, payload)?;
    let t = AttrTable::parse(WHAT, attrs, info_attr::MAX)?;
    Ok(IpvsInfo {
        version: t.u32(info_attr::VERSION, "IPVS_INFO_ATTR_VERSION")?,
        conn_tab_size: t.u32(info_attr::CONN_TAB_SIZE, "IPVS_INFO_ATTR_CONN_TAB_SIZE")?,
    })
}

/// Decodes the `IPVS_CMD_SET_CONFIG` reply to `GET_CONFIG` (also the body
/// of a `SET_CONFIG` request).
pub fn decode_config(payload: &[u8]) -> Result<Timeouts, KernelError> {
    const WHAT: &str = "IPVS timeouts";
    let (_, attrs) = genl_split(WHAT, payload)?;
    let t = AttrTable::parse(WHAT, attrs, cmd_attr::MAX)?;
    Ok(Timeouts {
        tcp: t
            .opt_u32(cmd_attr::TIMEOUT_TCP, "IPVS_CMD_ATTR_TIMEOUT_TCP")?
            .unwrap_or(0),
        tcp_fin: t
            .opt_u32(cmd_attr::TIMEOUT_TCP_FIN, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?
            .unwrap_or(0),
        udp: t
            .opt_u32(cmd_attr::TIMEOUT_UDP, "IPVS_CMD_ATTR_TIMEOUT_UDP")?
            .unwrap_or(0),
    })
}

/// `IPVS_DAEMON_ATTR_STATE`: IP_VS_STATE_MASTER (1) / IP_VS_STATE_BACKUP (2).
fn role_repr(t: &AttrTable<'_>) -> Result<SyncRole, KernelError> {
    match t.u32(daemon_attr::STATE, "IPVS_DAEMON_ATTR_STATE")? {
        1 => Ok(SyncRole::Master),
        2 => Ok(SyncRole::Backup),
        s => Err(derr(t.what, format!("unknown daemon state {s}"))),
    }
}

fn daemon_repr(t: &AttrTable<'_>) -> Result<SyncDaemon, KernelError> {
    let what = t.what;
    let role = role_repr(t)?;
    let mcast_ifn = t
        .string(daemon_attr::MCAST_IFN, "IPVS_DAEMON_ATTR_MCAST_IFN")?
        .unwrap_or_default();
    let syncid = t
        .opt_u32(daemon_attr::SYNC_ID, "IPVS_DAEMON_ATTR_SYNC_ID")?
        .unwrap_or(0);
    let syncid =
        u8::try_from(syncid).map_err(|_| derr(what, format!("sync id {syncid} above 255")))?;
    let mcast_group = if let Some(b) =
        t.fixed::<16>(daemon_attr::MCAST_GROUP6, "IPVS_DAEMON_ATTR_MCAST_GROUP6")?
    {
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        t.fixed::<4>(daemon_attr::MCAST_GROUP, "IPVS_DAEMON_ATTR_MCAST_GROUP")?
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
    };
    Ok(SyncDaemon {
        role,
        mcast_ifn,
        syncid,
        sync_maxlen: t
            .opt_u16(daemon_attr::SYNC_MAXLEN, "IPVS_DAEMON_ATTR_SYNC_MAXLEN")?
            .unwrap_or(0),
        mcast_group,
        mcast_port: t
            .opt_u16(daemon_attr::MCAST_PORT, "IPVS_DAEMON_ATTR_MCAST_PORT")?
            .unwrap_or(0),
        mcast_ttl: t
            .opt_u8(daemon_attr::MCAST_TTL, "IPVS_DAEMON_ATTR_MCAST_TTL")?
            .unwrap_or(0),
    })
}

/// Decodes one `IPVS_CMD_NEW_DAEMON` message of a `GET_DAEMON` dump.
pub fn decode_daemon(payload: &[u8]) -> Result<SyncDaemon, KernelError> {
    let t = nested(
        "sync daemon dump",
        payload,
        cmd_attr::DAEMON,
        "IPVS_CMD_ATTR_DAEMON",
    )?;
    daemon_repr(&t)
}

/// Reads a request back: the inverse of [`encode_attrs`] for everything we
/// send (and for what ipvsadm sends, which carries extra attributes that
/// are simply not needed for the key-only requests). `payload` is the genl
/// payload, `flags` the netlink header flags (to tell dumps apart).
pub fn decode_request(payload: &[u8], flags: u16) -> Result<Request, KernelError> {
    const WHAT: &str = "IPVS request";
    let (c, attrs) = genl_split(WHAT, payload)?;
    let top = AttrTable::parse(WHAT, attrs, cmd_attr::MAX)?;
    let svc = || -> Result<AttrTable<'_>, KernelError> {
        AttrTable::parse(
            WHAT,
            top.req(cmd_attr::SERVICE, "IPVS_CMD_ATTR_SERVICE")?,
            svc_attr::MAX,
        )
    };
    let dst = || -> Result<AttrTable<'_>, KernelError> {
        AttrTable::parse(
            WHAT,
            top.req(cmd_attr::DEST, "IPVS_CMD_ATTR_DEST")?,
            dest_attr::MAX,
        )
    };
    let full_service = || -> Result<Service, KernelError> {
        let t = svc()?;
        let key = service_key_repr(&t)?;
        Ok(Service {
            key,
            settings: service_settings_repr(&t, key.family())?,
        })
    };
    let key = || -> Result<ServiceKey, KernelError> { service_key_repr(&svc()?) };
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    Ok(match c {
        cmd::GET_INFO => Request::GetInfo,
        cmd::GET_CONFIG => Request::GetConfig,
        cmd::FLUSH => Request::Flush,
        cmd::SET_CONFIG => Request::SetConfig(decode_config(payload)?),
        cmd::GET_SERVICE if dump => Request::DumpServices,
        cmd::GET_DEST if dump => Request::DumpDests(key()?),
        cmd::GET_DAEMON if dump => Request::DumpDaemons,
        cmd::NEW_SERVICE => Request::NewService(full_service()?),
        cmd::SET_SERVICE => Request::SetService(full_service()?),
        cmd::DEL_SERVICE => Request::DelService(key()?),
        cmd::NEW_DEST | cmd::SET_DEST => {
            let service = key()?;
            let t = dst()?;
            let dest = Destination {
                key: dest_key_repr(&t, service.family())?,
                settings: dest_settings_repr(&t)?,
            };
            if c == cmd::NEW_DEST {
                Request::NewDest { service, dest }
            } else {
                Request::SetDest { service, dest }
            }
        }
        cmd::DEL_DEST => {
            let service = key()?;
            Request::DelDest {
                service,
                dest: dest_key_repr(&dst()?, service.family())?,
            }
        }
        cmd::NEW_DAEMON | cmd::DEL_DAEMON => {
            let t = AttrTable::parse(
                WHAT,
                top.req(cmd_attr::DAEMON, "IPVS_CMD_ATTR_DAEMON")?,
                daemon_attr::MAX,
            )?;
            if c == cmd::NEW_DAEMON {
                Request::NewDaemon(daemon_repr(&t)?)
            } else {
                Request::DelDaemon(role_repr(&t)?)
            }
        }
        other => {
            return Err(derr(
                WHAT,
                format!("unsupported command {other} (flags {flags:#x})"),
            ))
        }
    })
}

/// `CTRL_CMD_GETFAMILY` for "IPVS" (include/uapi/linux/genetlink.h):
/// `CTRL_ATTR_FAMILY_NAME` as a NUL-terminated string.
pub fn encode_get_family(w: &mut Writer, seq: u32, pid: u32) -> Result<(), EncodeError> {
    let start = w.begin_genl(
        nl::GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        pid,
        nl::CTRL_CMD_GETFAMILY,
        1,
    );
    w.put_str(nl::CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME)?;
    w.end_msg(start)?;
    Ok(())
}

/// The family id from a `CTRL_CMD_NEWFAMILY` reply (`CTRL_ATTR_FAMILY_ID`,
/// u16).
pub fn decode_family_id(payload: &[u8]) -> Result<u16, KernelError> {
    const WHAT: &str = "generic netlink family lookup";
    let (_, attrs) = genl_split(WHAT, payload)?;
    let t = AttrTable::parse(
        WHAT,
        attrs,
        nl::CTRL_ATTR_FAMILY_ID.max(nl::CTRL_ATTR_FAMILY_NAME),
    )?;
    t.u16(nl::CTRL_ATTR_FAMILY_ID, "CTRL_ATTR_FAMILY_ID")
}
