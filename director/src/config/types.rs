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
    pub sync_groups: Vec<SyncGroup>,
    pub virtual_servers: Vec<VirtualServer>,
    pub snat: Vec<Snat>,
    pub ctsync: Option<CtSync>,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackInterface {
    pub name: String,
    pub weight: i32,
}

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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncGroup {
    pub name: String,
    pub instances: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Tcp,
    Http,
    Https,
    Script,
}

/// A health-check spec as written; the checkers arrive with the
/// health-check issue, the keys are validated from day one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// `health.port`: the port to check instead of the real server's own
    /// (keepalived's `connect_port`); needed when real servers use port 0.
    pub port: Option<u16>,
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
    pub health: Option<HealthSpec>,
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
}
