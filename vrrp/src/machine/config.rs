//! Configuration of one VRRP instance, with defaults that mirror keepalived's
//! where keepalived has the knob (so an operator's keepalived.conf habits
//! carry over), and RFC 5798's otherwise.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{Auth, Family};

/// v2 authentication to send and require (RFC 2338 5.3.6). RFC 3768 removed
/// it and v3 has none; keepalived still offers it for v2. IPsec AH is not
/// supported: a peer using it is counted in `auth_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", content = "password", rename_all = "snake_case")]
pub enum V2Auth {
    #[default]
    None,
    /// keepalived `auth_type PASS`: only the first 8 bytes are used.
    SimpleText(String),
}

impl V2Auth {
    /// The Auth Type and Authentication Data this produces on the wire.
    pub fn to_wire(&self) -> Auth {
        match self {
            V2Auth::None => Auth::NONE,
            V2Auth::SimpleText(p) => Auth::simple_text(p.as_bytes()),
        }
    }
}

/// Gratuitous ARP (IPv4) / unsolicited Neighbour Advertisement (IPv6)
/// schedule. Defaults are keepalived's (keepalived.conf(5), `vrrp_garp_*`):
/// 5 messages on becoming master, 5 more 5 s later, no periodic refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GarpConfig {
    /// Delay of the second burst after becoming master; zero: no second
    /// burst. keepalived `garp_master_delay`, default 5 s.
    pub master_delay: Duration,
    /// Messages per burst after becoming master. keepalived
    /// `garp_master_repeat`, default 5.
    pub master_repeat: u32,
    /// Period of refresh bursts while master; `None`: no refresh.
    /// keepalived `garp_master_refresh`, default 0 (off).
    pub master_refresh: Option<Duration>,
    /// Messages per refresh burst. keepalived `garp_master_refresh_repeat`,
    /// default 1.
    pub master_refresh_repeat: u32,
    /// Minimum time between two bursts sent because a lower-priority master
    /// was heard (split-brain heal). keepalived `garp_lower_prio_delay`,
    /// default `garp_master_delay`.
    pub lower_prio_delay: Duration,
    /// Messages per split-brain heal burst. keepalived
    /// `garp_lower_prio_repeat`, default `garp_master_repeat`.
    pub lower_prio_repeat: u32,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            master_delay: Duration::from_secs(5),
            master_repeat: 5,
            master_refresh: None,
            master_refresh_repeat: 1,
            lower_prio_delay: Duration::from_secs(5),
            lower_prio_repeat: 5,
        }
    }
}

/// What a master does on `Input::Shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// RFC 5798 6.4.3: send an advert with priority 0 (a backup takes over
    /// after Skew_Time) and remove the VIPs. keepalived does this on SIGTERM.
    #[default]
    Release,
    /// Send nothing and leave the VIPs in place, for a daemon restart that
    /// should not move traffic: a backup takes over only if we are not back
    /// within Master_Down_Interval.
    Retain,
}

/// One VRRP instance (one VRID on one interface, one address family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Virtual Router Identifier, 1..=255.
    pub vrid: u8,
    /// 2 (RFC 3768, IPv4 only) or 3 (RFC 5798).
    pub version: u8,
    /// 1..=254, or 255 for the address owner (RFC 5798 5.2.4), which goes
    /// straight to Master and whose priority tracking cannot lower.
    pub priority: u8,
    /// Advertisement_Interval: v3 in centiseconds (a multiple of 10 ms, at
    /// most 40.95 s, RFC 5798 5.2.7), v2 in whole seconds (1..=255 s, RFC
    /// 3768 5.3.7).
    pub advert_interval: Duration,
    /// Preempt_Mode (RFC 5798 6.1): a higher-priority backup takes over from
    /// a lower-priority master. `false` is keepalived's `nopreempt`.
    pub preempt: bool,
    /// keepalived `preempt_delay`: extra wait before taking over at startup
    /// (and after a fault), or from a lower-priority master. Ignored when
    /// `preempt` is false.
    pub preempt_delay: Duration,
    /// Accept_Mode (RFC 5798 6.1): a non-owner master accepts packets
    /// addressed to the VIPs. Default true, keepalived's default outside
    /// strict mode (RFC 5798's default is false); a load balancer needs it.
    pub accept_mode: bool,
    /// The virtual addresses, all of the family of `primary_address`.
    pub vips: Vec<IpAddr>,
    /// Source of our adverts and the election tie-breaker (RFC 5798 6.4.3):
    /// the interface's primary IPv4 address, or its IPv6 link-local one.
    pub primary_address: IpAddr,
    /// Unicast peers; empty: multicast to 224.0.0.18 / ff02::12.
    pub unicast_peers: Vec<IpAddr>,
    /// v2 only.
    pub auth: V2Auth,
    pub garp: GarpConfig,
    /// As master, answer an advert from a lower-priority master at once with
    /// our own advert and a gratuitous burst (split-brain heal). keepalived's
    /// default (`lower_prio_no_advert` false); RFC 5798 6.4.3 would discard.
    pub lower_prio_advert: bool,
    /// As master, send one last advert (with our priority) before stepping
    /// down for a higher-priority one, so that the winner hears a lower
    /// master and re-sends gratuitous ARP/NA (see `lower_prio_advert`):
    /// after a partition heals, the loser's GARPs may be the last ones the
    /// switches and neighbours saw. keepalived's `higher_prio_send_advert`;
    /// on by default here (off in keepalived) so that the heal does not
    /// depend on which master's advert crosses first.
    pub higher_prio_send_advert: bool,
    /// Require TTL/Hop Limit 255 on unicast adverts too. RFC 5798 says
    /// always; keepalived checks multicast only, and its IPv6 unicast adverts
    /// leave with the default hop limit (64 in our captures), so the default
    /// is false for interop.
    pub unicast_ttl_check: bool,
    pub shutdown: ShutdownMode,
}

impl Config {
    /// A v3 instance with the defaults: priority 100, 1 s interval, preempt
    /// without delay, accept mode, multicast, keepalived's GARP schedule.
    pub fn new(vrid: u8, primary_address: IpAddr, vips: Vec<IpAddr>) -> Config {
        Config {
            vrid,
            version: 3,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            vips,
            primary_address,
            unicast_peers: Vec::new(),
            auth: V2Auth::None,
            garp: GarpConfig::default(),
            lower_prio_advert: true,
            higher_prio_send_advert: true,
            unicast_ttl_check: false,
            shutdown: ShutdownMode::Release,
        }
    }

    /// Address family of the instance.
    pub fn family(&self) -> Family {
        Family::of(self.primary_address)
    }

    /// Advertisement_Interval in centiseconds, once validated.
    pub(crate) fn advert_centis(&self) -> u16 {
        u16::try_from(self.advert_interval.as_millis() / 10).unwrap_or(u16::MAX)
    }

    /// Check everything the machine relies on. Errors are the operator's.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        let ms = self.advert_interval.as_millis();
        match self.version {
            3 => {
                if ms % 10 != 0 || !(10..=40950).contains(&ms) {
                    return Err(ConfigError::Interval(self.advert_interval));
                }
                if self.auth != V2Auth::None {
                    return Err(ConfigError::AuthOnV3);
                }
            }
            2 => {
                if ms % 1000 != 0 || !(1000..=255_000).contains(&ms) {
                    return Err(ConfigError::Interval(self.advert_interval));
                }
                if self.family() == Family::V6 {
                    return Err(ConfigError::V2OverIpv6);
                }
                if let V2Auth::SimpleText(p) = &self.auth {
                    if p.is_empty() {
                        return Err(ConfigError::EmptyPassword);
                    }
                }
            }
            v => return Err(ConfigError::Version(v)),
        }
        if self.vips.is_empty() {
            return Err(ConfigError::NoVips);
        }
        if self.vips.len() > 255 {
            return Err(ConfigError::TooManyVips(self.vips.len()));
        }
        let family = self.family();
        if let Some(a) = self.vips.iter().find(|a| Family::of(**a) != family) {
            return Err(ConfigError::VipFamily(*a));
        }
        let mut seen = BTreeSet::new();
        if let Some(a) = self.vips.iter().find(|a| !seen.insert(**a)) {
            return Err(ConfigError::DuplicateVip(*a));
        }
        if let Some(a) = self
            .unicast_peers
            .iter()
            .find(|a| Family::of(**a) != family)
        {
            return Err(ConfigError::PeerFamily(*a));
        }
        if self.garp.master_refresh == Some(Duration::ZERO) {
            return Err(ConfigError::GarpRefresh);
        }
        Ok(())
    }
}

/// Why a [`Config`] was refused. Always a configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("vrid must be 1..=255")]
    Vrid,
    #[error("priority must be 1..=255")]
    Priority,
    #[error("VRRP version {0} unsupported: use 2 or 3")]
    Version(u8),
    #[error("advert interval {0:?} out of range: v3 takes 10ms..=40.95s in centiseconds, v2 1s..=255s in whole seconds")]
    Interval(Duration),
    #[error("authentication is VRRPv2 only")]
    AuthOnV3,
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    #[error("empty simple text password")]
    EmptyPassword,
    #[error("at least one virtual address is needed")]
    NoVips,
    #[error("{0} virtual addresses, at most 255 fit an advert")]
    TooManyVips(usize),
    #[error("virtual address {0} is not of the family of the primary address")]
    VipFamily(IpAddr),
    #[error("virtual address {0} listed twice")]
    DuplicateVip(IpAddr),
    #[error("unicast peer {0} is not of the family of the primary address")]
    PeerFamily(IpAddr),
    #[error("garp master_refresh of zero: use None to disable")]
    GarpRefresh,
}
