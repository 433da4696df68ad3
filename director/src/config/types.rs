//! The validated configuration: what `config::parse` returns once every
//! check has passed. Types here are already typed values (addresses,
//! durations, enums); nothing downstream re-validates them.

use crate::model::{Forward, ServiceKey, Timeouts, Tunnel};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub global: Global,
    pub vrrp_instances: Vec<VrrpInstance>,
    /// `[[vrrp_script]]`: checks that instances track by name.
    pub vrrp_scripts: Vec<VrrpScript>,
    pub sync_groups: Vec<SyncGroup>,
    pub virtual_servers: Vec<VirtualServer>,
    pub snat: Vec<Snat>,
    pub ctsync: Option<CtSync>,
    /// The kernel's IPVS sync daemons (`[ctsync] ipvs_sync_interface`,
    /// `ipvs_syncid`), kept apart from [`CtSync`] so that changing them
    /// does not restart the ctsync session (a reload compares sections).
    pub ipvs_sync: Option<IpvsSync>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneChoice {
    Auto,
    Ipvs,
    Nftables,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Global {
    pub router_id: String,
    /// default `/run/director/director.sock`
    pub control_socket: PathBuf,
    /// `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// default `auto`
    pub dataplane: DataplaneChoice,
    /// Delete kernel services that are not in the config (default false).
    pub ipvs_exclusive: bool,
    /// Periodic reconcile pass (`reconcile_interval`, default 5s, >= 100ms).
    pub reconcile_interval: Duration,
    /// `ipvs_timeouts = { tcp = "900s", tcp_fin = "120s", udp = "300s" }`
    pub ipvs_timeouts: Option<Timeouts>,
}

/// `track_interfaces = [{ name = "eth0", weight = -60 }]`: an interface
/// whose state (up = IFF_UP and IFF_RUNNING, see `crate::rtnl::LinkEvent`)
/// moves the instance (keepalived `track_interface`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackInterface {
    pub name: String,
    /// -253..=253. While the interface is down, the priority changes by
    /// this much (a negative weight lowers it). 0 (the default): the
    /// instance goes to FAULT while the interface is down.
    pub weight: i32,
}

/// `track_scripts = [{ name = "chk", weight = -20 }]` on an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackScript {
    /// A `[[vrrp_script]]` name (checked to exist).
    pub name: String,
    /// The weight in effect for this instance: the entry's own `weight` if
    /// given, else the script's. Same meaning as [`VrrpScript::weight`].
    pub weight: i32,
}

/// `[[vrrp_script]]`: a program run every `interval`; exit status 0 is
/// success. keepalived `vrrp_script`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VrrpScript {
    pub name: String,
    /// argv, run without a shell; `script[0]` is an absolute path.
    pub script: Vec<String>,
    /// default 1s
    pub interval: Duration,
    /// A run that takes longer has failed (and is killed). Default: the
    /// interval; at most the interval.
    pub timeout: Duration,
    /// -253..=253, default 0. Negative: the priority drops by |weight|
    /// while the script fails; positive: it rises by weight while the
    /// script succeeds; 0: the instance goes to FAULT while it fails.
    pub weight: i32,
    /// Consecutive successes before a failed script counts as succeeding
    /// (default 1).
    pub rise: u32,
    /// Consecutive failures before a succeeding script counts as failed
    /// (default 1).
    pub fall: u32,
}

/// keepalived's notify hooks: programs run (argv, no shell) on a state
/// change of an instance or a sync group. All optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Notify {
    /// `notify_master`: on becoming MASTER.
    pub master: Option<Vec<String>>,
    /// `notify_backup`: on becoming BACKUP.
    pub backup: Option<Vec<String>>,
    /// `notify_fault`: on entering FAULT.
    pub fault: Option<Vec<String>>,
    /// `notify_stop`: when the director stops the instance (shutdown).
    pub stop: Option<Vec<String>>,
    /// `notify`: on every state change, with four arguments appended:
    /// `"INSTANCE"` or `"GROUP"`, the name, the new state (`MASTER`,
    /// `BACKUP`, `FAULT`, `STOP`) and the priority (keepalived's generic
    /// notify).
    pub generic: Option<Vec<String>>,
}

/// VRRPv2 authentication (RFC 2338 5.3.6; removed by RFC 3768, kept by
/// keepalived): `auth_type = "PASS"` only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "auth_type")]
pub enum VrrpAuth {
    /// Simple text password, 1 to 8 bytes, sent in clear in every advert.
    #[serde(rename = "PASS")]
    Pass { auth_pass: Secret },
}

/// A secret from the configuration: kept as written, but shown (Debug,
/// serde) as `"<redacted>"` so that it cannot leak into logs or JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that needs it (the wire).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Gratuitous ARP (IPv4) / unsolicited Neighbour Advertisement (IPv6)
/// schedule of a master: the `garp_*` keys (`garp_master_delay`,
/// `garp_master_repeat`, `garp_master_refresh`, `garp_master_refresh_repeat`,
/// `garp_lower_prio_delay`, `garp_lower_prio_repeat`) straight into the
/// state machine's own type, defaults and all (keepalived's).
pub use vrrp::machine::GarpConfig as Garp;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub version: u8,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub unicast_peers: Vec<IpAddr>,
    /// (address, prefix length)
    pub virtual_ipaddresses: Vec<(IpAddr, u8)>,
    pub track_interfaces: Vec<TrackInterface>,
    /// `accept`: Accept_Mode (RFC 5798 6.1), a master that does not own
    /// the VIPs still accepts packets addressed to them. Default true,
    /// keepalived's default outside `vrrp_strict` (RFC 5798's is false); a
    /// load balancer needs it.
    pub accept: bool,
    pub garp: Garp,
    /// `unicast_src_ip`: source of unicast adverts; default the
    /// interface's primary address. Only with `unicast_peers`; same family
    /// as the VIPs.
    pub unicast_src_ip: Option<IpAddr>,
    /// `authentication` (version 2 only).
    pub authentication: Option<VrrpAuth>,
    pub track_scripts: Vec<TrackScript>,
    pub notify: Notify,
    /// `shutdown_priority_zero`: on shutdown a master sends priority 0
    /// (RFC 5798 6.4.3) so a backup takes over after Skew_Time instead of
    /// Master_Down_Interval. Default true; false keeps the VIPs in place
    /// for a restart that should not move traffic.
    pub shutdown_priority_zero: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncGroup {
    pub name: String,
    pub instances: Vec<String>,
    /// Hooks run for the group's state (generic `notify` gets `"GROUP"`).
    pub notify: Notify,
}

/// One health check as configured on a virtual server (the default for its
/// real servers) or on one real server. The probe is a template: the
/// target is filled in per real server by [`HealthSpec::check_for`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    pub probe: healthcheck::Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// `health.port`: the port to check instead of the real server's own
    /// (keepalived's `connect_port`); needed when real servers use port 0.
    pub port: Option<u16>,
    /// `health.address`: the address to check instead of the real
    /// server's (keepalived's `connect_ip`).
    pub address: Option<IpAddr>,
}

impl HealthSpec {
    /// The check of real server `rs`: its address and port unless this
    /// check overrides them.
    pub fn check_for(&self, rs_address: IpAddr, rs_port: u16) -> healthcheck::CheckSpec {
        healthcheck::CheckSpec {
            target: SocketAddr::new(
                self.address.unwrap_or(rs_address),
                self.port.unwrap_or(rs_port),
            ),
            probe: self.probe.clone(),
            interval: self.interval,
            timeout: self.timeout,
            rise: self.rise,
            fall: self.fall,
        }
    }
}

/// What a failed real server becomes (`on_down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDown {
    /// Removed from the service (keepalived's default).
    Remove,
    /// Kept with weight 0: no new connections (keepalived's
    /// `inhibit_on_failure`).
    Inhibit,
}

/// What happens to a failed real server's established connections
/// (`on_down_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDownConnections {
    /// Expired at once, so the next client segment gets a reset instead of
    /// retransmitting into a dead server for ~15 minutes.
    Reset,
    /// Left to time out.
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Persistence {
    pub timeout: Duration,
    /// IPv4: netmask as host-order u32; IPv6: prefix length. Defaults to
    /// all-ones / 128 when `persistence_granularity` is absent.
    pub netmask: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealServer {
    pub address: IpAddr,
    pub port: u16,
    /// 0 ..= 65535 (ipvsadm's range); 0 = quiesced.
    pub weight: i32,
    /// Per-server override, else the virtual server's `forwarding`.
    pub forwarding: Forward,
    pub tunnel: Tunnel,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// This server's own checks (all must pass); `None`: the virtual
    /// server's. `Some([])`: not checked.
    pub health: Option<Vec<HealthSpec>>,
}

impl RealServer {
    /// The checks that decide this server's health on `vs`.
    pub fn checks<'a>(&'a self, vs: &'a VirtualServer) -> &'a [HealthSpec] {
        self.health.as_deref().unwrap_or(&vs.health)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualServer {
    pub name: String,
    /// From `address` + `protocol`, or `fwmark` (+ `family`).
    pub key: ServiceKey,
    pub scheduler: String,
    /// `sh-fallback`, `sh-port`, `mh-fallback`, `mh-port` (`flag-1..3`
    /// accepted too), as `model::svc_flags` bits.
    pub scheduler_flags: u32,
    pub persistence: Option<Persistence>,
    pub persistence_engine: Option<String>,
    pub one_packet: bool,
    /// Slots in the Maglev table of the `mh` scheduler on the nftables
    /// dataplane (prime; default 65537). IPVS's own `mh` uses its build-time
    /// size and ignores this.
    pub maglev_table_size: u32,
    pub forwarding: Forward,
    /// Default checks of its real servers (all must pass); empty: none.
    pub health: Vec<HealthSpec>,
    pub on_down: OnDown,
    pub on_down_connections: OnDownConnections,
    /// Fewer healthy real servers than this switch the service to its
    /// sorry server (when it has one). At least 1.
    pub quorum: u32,
    /// keepalived's `sorry_server`: the one destination while quorum is
    /// not met.
    pub sorry_server: Option<SocketAddr>,
    /// How long a real server removed from the config keeps serving its
    /// established connections (weight 0) before it is deleted.
    pub drain_timeout: Duration,
    pub real_servers: Vec<RealServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snat {
    pub match_vip: IpAddr,
    pub to_source: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtSync {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub key_file: PathBuf,
    /// Flows with an address in one of these are never replicated (the
    /// boxes' own addresses, management networks): the ctnetlink filter
    /// drops them before the session sees them.
    pub ignore: Vec<Cidr>,
    /// Which VRRP instance or sync group makes this box the ctsync
    /// master; `None`: master while any instance is MASTER (see
    /// `ctsync_host::role`).
    pub follow: Option<String>,
}

/// The kernel's IPVS connection synchronisation (ipvsadm
/// `--start-daemon`, keepalived `lvs_sync_daemon IFACE VRRP_INSTANCE id N`),
/// written in `[ctsync]` as `ipvs_sync_interface` and `ipvs_syncid`. On
/// the IPVS dataplane the director runs the master daemon while the
/// followed VRRP instances are MASTER and the backup daemon otherwise
/// (`crate::ipvs_sync`), so IPVS connection entries reach the peer as
/// conntrack entries do through ctsync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsSync {
    /// Interface the sync multicast (224.0.0.81:8848, ip_vs_sync.c) is
    /// sent and received on: the private sync link.
    pub interface: String,
    /// `IPVS_DAEMON_ATTR_SYNC_ID`: the backup drops messages of another
    /// id (ip_vs_sync.c `ip_vs_process_message`), so two pairs can share
    /// a link. 0 (default) makes the backup accept any id.
    pub syncid: u8,
}

/// An address prefix (`10.1.0.0/24`, `2001:db8::/64`) with its host bits
/// zero (validation refuses `10.1.0.1/24`, which is ambiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `None` when `prefix` is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let c = Cidr { addr, prefix };
        (prefix <= c.max_prefix() && c.network() == addr).then_some(c)
    }

    fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn mask(bits: u32, prefix: u8) -> u128 {
        match prefix {
            0 => 0,
            p if u32::from(p) >= bits => u128::MAX >> (128 - bits),
            p => (u128::MAX >> (128 - bits)) & !((1u128 << (bits - u32::from(p))) - 1),
        }
    }

    /// `addr` with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = Self::mask(32, self.prefix) as u32;
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = Self::mask(128, self.prefix);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is inside (never across families).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = Self::mask(32, self.prefix) as u32;
                u32::from(*a) & m == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = Self::mask(128, self.prefix);
                u128::from(*a) & m == u128::from(n)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
