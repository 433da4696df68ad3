//! The director's nftables table as data: one shape for what the compiler
//! wants ([`super::compile`]) and what the dump shows ([`super::dump`]), so
//! the physical diff ([`super::plan`]) is a plain comparison.
//!
//! Elements are kept as canonical nft script text (`10.0.0.1 . tcp . 80`,
//! `jump svc_tcp_0a000001_80`), valid both as something to compare and as
//! something to write back in an `add`/`delete element` command. Rules are
//! identified by their comment (every rule the director writes carries one
//! that is a function of the rule's text): the JSON dump does not round-trip
//! every statement (nft 1.0.6 prints `update @map {...}` as an opaque string
//! and loses `addr . port` in `dnat`), so comparing rule bodies would be
//! comparing two renderings, not two rules.

use crate::model::{Family, Protocol, ServiceKey};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who an object or element belongs to: per-service transactions (the
/// fallback when a whole-pass transaction fails) group commands by owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Global,
    /// A service, by its object id ([`service_id`]).
    Service(String),
}

/// `set` or `map` (nft keeps them apart in commands and in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Set,
    Map,
}

/// What makes two sets the same object (the rest is contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Key type, components joined by ` . ` (`ipv4_addr . inet_service`;
    /// `integer` for a `typeof numgen` key).
    pub key: String,
    /// Data type for maps (`verdict`, `ipv4_addr . inet_service`, ...).
    pub data: Option<String>,
    /// Default element timeout in seconds.
    pub timeout: Option<u64>,
}

/// One element's value and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    /// Data (maps) in canonical text; empty for sets.
    pub value: String,
    pub owner: Owner,
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetObj {
    pub kind: SetKind,
    pub owner: Owner,
    pub shape: Shape,
    /// The declaration body for `add map inet director NAME { ... }`
    /// (desired side only).
    pub decl: String,
    /// Canonical key -> element.
    pub elements: BTreeMap<String, Elem>,
    /// Filled by the packet path (`update @map`): the pass never adds
    /// elements, it only deletes those whose value is not in
    /// `allowed_values` (affinity to a drained or removed real server).
    pub dynamic: bool,
    pub allowed_values: Vec<String>,
    /// A dynamic map whose keys live and die with another's (the port half
    /// of an affinity): its elements go when the other's do.
    pub follows: Option<String>,
    /// Element counters (sets declared with `counter`), dump side only.
    pub counters: BTreeMap<String, CounterVal>,
}

/// Base-chain attributes (`type nat hook prerouting priority -100`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: String,
    pub hook: String,
    pub prio: i32,
    pub policy: String,
}

/// One rule: `comment` is its identity, `text` what the compiler writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub comment: Option<String>,
    pub text: String,
    /// Kernel handle (dump side only).
    pub handle: Option<u64>,
    /// The same rule as netlink bytecode, for the rules the director can
    /// write without nft (desired side only; see [`super::nfnl`]).
    pub fast: Option<super::nfnl::NumgenRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainObj {
    pub owner: Owner,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// Packets and bytes of a named counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterVal {
    pub packets: u64,
    pub bytes: u64,
}

/// The whole `inet director` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: BTreeMap<String, SetObj>,
    pub chains: BTreeMap<String, ChainObj>,
    pub counters: BTreeMap<String, (Owner, CounterVal)>,
}

impl Ruleset {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty() && self.counters.is_empty()
    }
}

/// The object id of a service: `tcp_0a000001_80` (protocol, address in hex,
/// port), `fwm4_100` / `fwm6_100`. A pure function of the key, so a restarted
/// daemon finds (adopts) its objects, and reversible ([`parse_service_id`]),
/// so the service key is readable from the dump.
pub fn service_id(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Inet { protocol, addr } => format!(
            "{}_{}_{}",
            proto_name(*protocol),
            hex_addr(&addr.ip()),
            addr.port()
        ),
        ServiceKey::Fwmark { family, mark } => match family {
            Family::V4 => format!("fwm4_{mark}"),
            Family::V6 => format!("fwm6_{mark}"),
        },
    }
}

/// Inverse of [`service_id`].
pub fn parse_service_id(id: &str) -> Option<ServiceKey> {
    let mut parts = id.split('_');
    let first = parts.next()?;
    match first {
        "fwm4" | "fwm6" => {
            let mark = parts.next()?.parse().ok()?;
            if parts.next().is_some() {
                return None;
            }
            let family = if first == "fwm4" {
                Family::V4
            } else {
                Family::V6
            };
            Some(ServiceKey::Fwmark { family, mark })
        }
        _ => {
            let protocol = match first {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            let ip = parse_hex_addr(parts.next()?)?;
            let port = parts.next()?.parse().ok()?;
            if parts.next().is_some() {
                return None;
            }
            Some(ServiceKey::Inet {
                protocol,
                addr: std::net::SocketAddr::new(ip, port),
            })
        }
    }
}

pub fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Address as lowercase hex of its network-order bytes (8 or 32 digits).
pub fn hex_addr(ip: &IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_addr(s: &str) -> Option<IpAddr> {
    if !s.is_ascii() || s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    let bytes = bytes?;
    match bytes.len() {
        4 => {
            let a: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// The id in an object name `PREFIX_ID` for the per-service prefixes.
pub fn owner_of_name(name: &str) -> Owner {
    for prefix in SERVICE_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if parse_service_id(id).is_some() {
                return Owner::Service(id.to_string());
            }
        }
    }
    if let Some(rest) = name.strip_prefix("c_") {
        // Counter names: c_<id>_<hexaddr>_<port>_<in|out|new>.
        let parts: Vec<&str> = rest.split('_').collect();
        for cut in [2usize, 3] {
            if parts.len() == cut + 3 {
                let id = parts[..cut].join("_");
                if parse_service_id(&id).is_some() {
                    return Owner::Service(id);
                }
            }
        }
    }
    Owner::Global
}

/// Per-service object name prefixes.
pub const SERVICE_PREFIXES: [&str; 6] = ["svc_", "sel_", "reg_", "aff_", "affp_", "affu_"];

/// Owner of an element from its value (`jump svc_X`, `"c_X_..."`).
pub fn owner_of_value(value: &str) -> Owner {
    let name = value
        .strip_prefix("jump ")
        .or_else(|| value.strip_prefix("goto "))
        .unwrap_or(value)
        .trim_matches('"');
    owner_of_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_round_trip() {
        let keys = [
            ServiceKey::Inet {
                protocol: Protocol::Tcp,
                addr: "192.0.2.100:80".parse().unwrap(),
            },
            ServiceKey::Inet {
                protocol: Protocol::Sctp,
                addr: "[2001:db8::1]:443".parse().unwrap(),
            },
            ServiceKey::Fwmark {
                family: Family::V6,
                mark: 100,
            },
        ];
        for k in keys {
            let id = service_id(&k);
            assert_eq!(parse_service_id(&id), Some(k), "{id}");
            assert_eq!(
                owner_of_name(&format!("sel_{id}")),
                Owner::Service(id.clone())
            );
        }
        assert_eq!(service_id(&keys[0]), "tcp_c0000264_80");
        assert_eq!(owner_of_name("dispatch"), Owner::Global);
        assert_eq!(owner_of_name("svc_bogus_1"), Owner::Global);
        assert_eq!(
            owner_of_value("\"c_tcp_c0000264_80_0a000001_8080_in\""),
            Owner::Service("tcp_c0000264_80".into())
        );
        assert_eq!(
            owner_of_value("jump svc_fwm4_7"),
            Owner::Service("fwm4_7".into())
        );
    }
}
