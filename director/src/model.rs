//! The IPVS table as data: the one vocabulary shared by the config compiler,
//! the reconciler, the netlink codec and the `ipvsadm`-compatible printers.
//!
//! The shapes follow the kernel's own (`/usr/include/linux/ip_vs.h`): a
//! service is keyed either by (protocol, address, port) or by (family,
//! firewall mark); a destination is keyed by (address, port) within its
//! service. Everything else is a setting that can be edited in place.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Address family of a service or destination (`AF_INET` / `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// `AF_INET` (2) or `AF_INET6` (10), as carried in `IPVS_SVC_ATTR_AF`.
    pub fn af(self) -> u16 {
        match self {
            Family::V4 => libc::AF_INET as u16,
            Family::V6 => libc::AF_INET6 as u16,
        }
    }
    pub fn from_af(af: u16) -> Option<Family> {
        match i32::from(af) {
            libc::AF_INET => Some(Family::V4),
            libc::AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// L4 protocol of an address-keyed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IANA protocol number, as carried in `IPVS_SVC_ATTR_PROTOCOL`.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
    pub fn from_number(n: u16) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// The label `ipvsadm -Ln` prints in its first column.
    pub fn ipvsadm_label(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKey {
    /// `-t|-u|--sctp-service addr:port`
    Inet {
        protocol: Protocol,
        addr: SocketAddr,
    },
    /// `-f mark` (with `-6` for IPv6)
    Fwmark { family: Family, mark: u32 },
}

impl ServiceKey {
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Inet { addr, .. } => Family::of(&addr.ip()),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet { protocol, addr } => {
                write!(f, "{} {}", protocol.ipvsadm_label(), addr)
            }
            ServiceKey::Fwmark {
                family: Family::V4,
                mark,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                family: Family::V6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// Service flags (`IP_VS_SVC_F_*` in ip_vs.h). `HASHED` is kernel-internal and
/// is masked out of everything we compare or send.
pub mod svc_flags {
    pub const PERSISTENT: u32 = 0x0001;
    pub const HASHED: u32 = 0x0002;
    pub const ONEPACKET: u32 = 0x0004;
    pub const SCHED1: u32 = 0x0008;
    pub const SCHED2: u32 = 0x0010;
    pub const SCHED3: u32 = 0x0020;
    /// Flags a user can set; the rest are the kernel's business.
    pub const USER_MASK: u32 = PERSISTENT | ONEPACKET | SCHED1 | SCHED2 | SCHED3;
}

/// Everything about a service that is not its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// Scheduler module name without the `ip_vs_` prefix (`wlc`, `mh`, ...).
    pub scheduler: String,
    /// `svc_flags::USER_MASK` bits only.
    pub flags: u32,
    /// Persistence timeout in seconds (meaningful with `PERSISTENT`).
    pub timeout: u32,
    /// Persistence granularity. IPv4: the netmask as a host-order u32
    /// (`0xffffffff` is the kernel default). IPv6: the prefix length (128).
    pub netmask: u32,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
}

impl ServiceSettings {
    /// The kernel's defaults for a service with `scheduler`: no flags, no
    /// persistence, full-length mask.
    pub fn new(scheduler: &str, family: Family) -> Self {
        ServiceSettings {
            scheduler: scheduler.to_string(),
            flags: 0,
            timeout: 0,
            netmask: default_netmask(family),
            pe_name: None,
        }
    }
    pub fn persistent(&self) -> bool {
        self.flags & svc_flags::PERSISTENT != 0
    }
}

/// The netmask the kernel reports for a service that set none.
pub fn default_netmask(family: Family) -> u32 {
    match family {
        Family::V4 => 0xffff_ffff,
        Family::V6 => 128,
    }
}

/// A virtual service: key plus settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub settings: ServiceSettings,
}

/// Packet forwarding method (`IP_VS_CONN_F_FWD_MASK` values in ip_vs.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// `IP_VS_CONN_F_MASQ` (0): NAT. `ipvsadm` prints `Masq`.
    Masq,
    /// `IP_VS_CONN_F_LOCALNODE` (1): `Local`.
    Local,
    /// `IP_VS_CONN_F_TUNNEL` (2): `Tunnel`.
    Tunnel,
    /// `IP_VS_CONN_F_DROUTE` (3): direct routing, `Route`.
    Route,
    /// `IP_VS_CONN_F_BYPASS` (4): cache bypass, `Bypass`.
    Bypass,
}

impl Forward {
    pub fn code(self) -> u32 {
        match self {
            Forward::Masq => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
        }
    }
    pub fn from_code(c: u32) -> Option<Forward> {
        match c & 0x7 {
            0 => Some(Forward::Masq),
            1 => Some(Forward::Local),
            2 => Some(Forward::Tunnel),
            3 => Some(Forward::Route),
            4 => Some(Forward::Bypass),
            _ => None,
        }
    }
    pub fn ipvsadm_label(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::Route => "Route",
            Forward::Bypass => "Bypass",
        }
    }
}

/// Tunnel encapsulation (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    Ipip,
    Gue,
    Gre,
}

impl TunnelType {
    pub fn code(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<TunnelType> {
        match c {
            0 => Some(TunnelType::Ipip),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }
}

/// Tunnel checksum mode (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelCsum {
    NoCsum,
    Csum,
    RemCsum,
}

impl TunnelCsum {
    pub fn code(self) -> u16 {
        match self {
            TunnelCsum::NoCsum => 0,
            TunnelCsum::Csum => 1,
            TunnelCsum::RemCsum => 2,
        }
    }
    pub fn from_code(c: u16) -> Option<TunnelCsum> {
        match c {
            0 => Some(TunnelCsum::NoCsum),
            1 => Some(TunnelCsum::Csum),
            2 => Some(TunnelCsum::RemCsum),
            _ => None,
        }
    }
}

/// Tunnel settings of a `Tunnel` destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tunnel {
    pub kind: TunnelType,
    /// UDP port for GUE; 0 otherwise.
    pub port: u16,
    pub csum: TunnelCsum,
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel {
            kind: TunnelType::Ipip,
            port: 0,
            csum: TunnelCsum::NoCsum,
        }
    }
}

/// What identifies a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.addr, self.port))
    }
}

/// Everything about a destination that is not its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DestSettings {
    pub forward: Forward,
    /// 0 ..= i32::MAX; 0 means quiesced (no new connections).
    pub weight: i32,
    /// Upper connection threshold, 0 = unlimited.
    pub upper_threshold: u32,
    /// Lower connection threshold, 0 = unset.
    pub lower_threshold: u32,
    /// Only meaningful when `forward == Tunnel`; the kernel reports IPIP
    /// defaults for other methods and we normalise to those.
    pub tunnel: Tunnel,
}

impl DestSettings {
    pub fn new(forward: Forward, weight: i32) -> Self {
        DestSettings {
            forward,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
        }
    }
}

/// A real server of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub key: DestKey,
    pub settings: DestSettings,
}

/// Traffic counters of a service or destination (`IPVS_STATS_ATTR_*`,
/// 64-bit `IPVS_*_ATTR_STATS64` when the kernel offers it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A destination as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDest {
    pub dest: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

/// A service as the kernel reports it, with its destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelService {
    pub service: Service,
    pub stats: Stats,
    pub dests: Vec<KernelDest>,
}

/// `IPVS_CMD_GET_INFO`: version and connection-table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsInfo {
    /// `(major << 16) | (minor << 8) | patch`, e.g. 0x010201 for 1.2.1.
    pub version: u32,
    pub conn_tab_size: u32,
}

/// One dump of the whole kernel table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTable {
    pub info: IpvsInfo,
    pub services: Vec<KernelService>,
}

/// Connection timeouts (`ipvsadm --set tcp tcpfin udp`), seconds; 0 = leave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// Kernel sync daemon state (`IPVS_CMD_*_DAEMON`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemon {
    pub role: SyncRole,
    pub mcast_ifn: String,
    pub syncid: u8,
    /// Optional extras of newer kernels (0 / None = kernel default).
    pub sync_maxlen: u16,
    pub mcast_group: Option<IpAddr>,
    pub mcast_port: u16,
    pub mcast_ttl: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    Master,
    Backup,
}

impl SyncRole {
    /// `IP_VS_STATE_MASTER` / `IP_VS_STATE_BACKUP`.
    pub fn code(self) -> u32 {
        match self {
            SyncRole::Master => 1,
            SyncRole::Backup => 2,
        }
    }
}

/// One change to the kernel table: what the reconciler emits and the IPVS
/// executor applies (kernel effects as data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IpvsOp {
    AddService(Service),
    EditService(Service),
    DelService(ServiceKey),
    AddDest {
        service: ServiceKey,
        dest: Destination,
    },
    EditDest {
        service: ServiceKey,
        dest: Destination,
    },
    DelDest {
        service: ServiceKey,
        dest: DestKey,
    },
}

impl IpvsOp {
    /// Metric label for "ops applied by kind".
    pub fn kind(&self) -> &'static str {
        match self {
            IpvsOp::AddService(_) => "add_service",
            IpvsOp::EditService(_) => "edit_service",
            IpvsOp::DelService(_) => "del_service",
            IpvsOp::AddDest { .. } => "add_dest",
            IpvsOp::EditDest { .. } => "edit_dest",
            IpvsOp::DelDest { .. } => "del_dest",
        }
    }
    pub fn service_key(&self) -> ServiceKey {
        match self {
            IpvsOp::AddService(s) | IpvsOp::EditService(s) => s.key,
            IpvsOp::DelService(k) => *k,
            IpvsOp::AddDest { service, .. }
            | IpvsOp::EditDest { service, .. }
            | IpvsOp::DelDest { service, .. } => *service,
        }
    }
}

impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOp::AddService(s) => write!(f, "add service {} ({})", s.key, s.settings.scheduler),
            IpvsOp::EditService(s) => {
                write!(f, "edit service {} ({})", s.key, s.settings.scheduler)
            }
            IpvsOp::DelService(k) => write!(f, "delete service {k}"),
            IpvsOp::AddDest { service, dest } => {
                write!(f, "add destination {} to service {service}", dest.key)
            }
            IpvsOp::EditDest { service, dest } => {
                write!(f, "edit destination {} of service {service}", dest.key)
            }
            IpvsOp::DelDest { service, dest } => {
                write!(f, "delete destination {dest} from service {service}")
            }
        }
    }
}
