//! Phase one: the file's shape, as serde sees it.
//!
//! Every field is `Option<Spanned<_>>` so that serde only rejects what is
//! structurally wrong (TOML syntax, unknown keys, wrong value types) and the
//! semantic pass can report a *missing* key as one of many collected errors,
//! at the position of its table header. Integers are `i64` so that ranges are
//! checked (and explained) by the semantic pass rather than by serde's terse
//! `expected u8`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::fmt;

pub(crate) type S<T> = Spanned<T>;
pub(crate) type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub global: Opt<RawGlobal>,
    pub vrrp_instance: Option<Vec<S<RawVrrp>>>,
    pub vrrp_script: Option<Vec<S<RawVrrpScript>>>,
    pub sync_group: Option<Vec<S<RawSyncGroup>>>,
    pub virtual_server: Option<Vec<S<RawVirtualServer>>>,
    pub snat: Option<Vec<S<RawSnat>>>,
    pub ctsync: Opt<RawCtSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub router_id: Opt<String>,
    pub control_socket: Opt<String>,
    pub metrics_listen: Opt<String>,
    pub dataplane: Opt<String>,
    pub ipvs_exclusive: Opt<bool>,
    pub reconcile_interval: Opt<RawDuration>,
    pub ipvs_timeouts: Opt<RawTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub tcp: Opt<RawDuration>,
    pub tcp_fin: Opt<RawDuration>,
    pub udp: Opt<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrp {
    pub name: Opt<String>,
    pub interface: Opt<String>,
    pub vrid: Opt<i64>,
    pub priority: Opt<i64>,
    pub advert_interval: Opt<RawDuration>,
    pub version: Opt<i64>,
    pub preempt: Opt<bool>,
    pub preempt_delay: Opt<RawDuration>,
    pub unicast_peers: Opt<Vec<S<String>>>,
    pub virtual_ipaddresses: Opt<Vec<S<String>>>,
    pub track_interfaces: Opt<Vec<S<RawTrack>>>,
    pub accept: Opt<bool>,
    pub garp_master_delay: Opt<RawDuration>,
    pub garp_master_repeat: Opt<i64>,
    pub garp_master_refresh: Opt<RawDuration>,
    pub garp_master_refresh_repeat: Opt<i64>,
    pub garp_lower_prio_delay: Opt<RawDuration>,
    pub garp_lower_prio_repeat: Opt<i64>,
    pub unicast_src_ip: Opt<String>,
    pub authentication: Opt<RawAuth>,
    pub track_scripts: Opt<Vec<S<RawTrack>>>,
    pub shutdown_priority_zero: Opt<bool>,
    pub notify_master: Opt<RawArgv>,
    pub notify_backup: Opt<RawArgv>,
    pub notify_fault: Opt<RawArgv>,
    pub notify_stop: Opt<RawArgv>,
    pub notify: Opt<RawArgv>,
}

/// `authentication = { auth_type = "PASS", auth_pass = "..." }` (VRRPv2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub auth_type: Opt<String>,
    pub auth_pass: Opt<String>,
}

/// `[[vrrp_script]]`: a check whose result moves instances' priority
/// (keepalived `vrrp_script` + `track_script`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrpScript {
    pub name: Opt<String>,
    pub script: Opt<RawArgv>,
    pub interval: Opt<RawDuration>,
    pub timeout: Opt<RawDuration>,
    pub weight: Opt<i64>,
    pub rise: Opt<i64>,
    pub fall: Opt<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrack {
    pub name: Opt<String>,
    pub weight: Opt<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncGroup {
    pub name: Opt<String>,
    pub instances: Opt<Vec<S<String>>>,
    pub notify_master: Opt<RawArgv>,
    pub notify_backup: Opt<RawArgv>,
    pub notify_fault: Opt<RawArgv>,
    pub notify_stop: Opt<RawArgv>,
    pub notify: Opt<RawArgv>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtualServer {
    pub name: Opt<String>,
    pub address: Opt<String>,
    pub protocol: Opt<String>,
    pub fwmark: Opt<i64>,
    pub family: Opt<String>,
    pub scheduler: Opt<String>,
    pub scheduler_flags: Opt<Vec<S<String>>>,
    pub persistence_timeout: Opt<RawDuration>,
    pub persistence_granularity: Opt<StrOrInt>,
    pub persistence_engine: Opt<String>,
    pub one_packet: Opt<bool>,
    pub maglev_table_size: Opt<i64>,
    pub forwarding: Opt<String>,
    pub tunnel: Opt<RawTunnel>,
    pub health: Opt<RawHealthList>,
    pub on_down: Opt<String>,
    pub on_down_connections: Opt<String>,
    pub quorum: Opt<i64>,
    pub sorry_server: Opt<String>,
    pub drain_timeout: Opt<RawDuration>,
    pub real_server: Option<Vec<S<RawRealServer>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTunnel {
    #[serde(rename = "type")]
    pub kind: Opt<String>,
    pub port: Opt<i64>,
    pub csum: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub kind: Opt<String>,
    pub interval: Opt<RawDuration>,
    pub timeout: Opt<RawDuration>,
    pub rise: Opt<i64>,
    pub fall: Opt<i64>,
    pub port: Opt<i64>,
    pub address: Opt<String>,
    pub method: Opt<String>,
    pub path: Opt<String>,
    pub host: Opt<String>,
    pub expect_status: Opt<Vec<S<StrOrInt>>>,
    pub body_regex: Opt<String>,
    pub digest: Opt<String>,
    pub sni: Opt<String>,
    pub verify: Opt<bool>,
    pub ca_file: Opt<String>,
    pub command: Opt<RawArgv>,
}

/// `health = { ... }` (one check) or `health = [{ ... }, { ... }]` (all
/// must pass); on a real server `health = []` turns checks off for it.
#[derive(Debug)]
pub(crate) enum RawHealthList {
    One(Box<RawHealth>),
    Many(Vec<S<RawHealth>>),
}

impl<'de> Deserialize<'de> for RawHealthList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHealthList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table like { kind = \"tcp\" } or an array of them")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawHealthList, A::Error> {
                let one = RawHealth::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawHealthList::One(Box::new(one)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawHealthList, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<S<RawHealth>>()? {
                    out.push(h);
                }
                Ok(RawHealthList::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    pub address: Opt<String>,
    pub weight: Opt<i64>,
    pub health: Opt<RawHealthList>,
    pub forwarding: Opt<String>,
    pub tunnel: Opt<RawTunnel>,
    pub upper_threshold: Opt<i64>,
    pub lower_threshold: Opt<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSnat {
    pub match_vip: Opt<String>,
    pub to_source: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCtSync {
    pub local: Opt<String>,
    pub peer: Opt<String>,
    pub key_file: Opt<String>,
    pub ignore: Opt<Vec<S<String>>>,
    pub follow: Opt<String>,
    pub ipvs_sync_interface: Opt<String>,
    pub ipvs_syncid: Opt<i64>,
}

/// A duration as written (`"1s"`, `"500ms"`); parsed by the semantic pass so
/// a bad one is one collected error, not the end of parsing. The custom
/// visitor exists for the type-error wording: `expected a duration string
/// like "1s"` tells a keepalived user who wrote `advert_interval = 1` what to
/// write instead.
#[derive(Debug, Clone)]
pub(crate) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"1s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A program to run, as written: an argv array (what we run), or a string,
/// which the semantic pass refuses with the array to write instead (a
/// keepalived habit: `notify_master "/path/script.sh primary"` went through
/// a shell). Accepting the string here, rather than failing serde's type
/// check, is what lets that message name the fix.
#[derive(Debug, Clone)]
pub(crate) enum RawArgv {
    Shell(String),
    Argv(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for RawArgv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArgv;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings like [\"/path\", \"arg\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArgv, E> {
                Ok(RawArgv::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgv, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<S<String>>()? {
                    out.push(s);
                }
                Ok(RawArgv::Argv(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `persistence_granularity`: a netmask string (`"255.255.255.0"`), a
/// prefix string (`"/64"`) or a bare prefix length (`64`).
#[derive(Debug, Clone)]
pub(crate) enum StrOrInt {
    Str(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a netmask string or a prefix length")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}
