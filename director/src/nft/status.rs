//! Dump -> `KernelTable` (what `directorctl status` prints).
//!
//! - Services: one per chain `svc_<id>`; the key is the id
//!   ([`super::model::parse_service_id`]), the settings are the comment of
//!   the chain's last rule ([`super::compile::spec_comment`]).
//! - Destinations: the registry map `reg_<id>` (address . port -> weight),
//!   drained ones included; forwarding is always `Masq` (NAT is the only
//!   method this dataplane has).
//! - Stats: the element counters of the sets `cin4`/`cout4`/`cnew4` (and
//!   `6`), keyed VIP . proto . port . dest . dport (packets and bytes in the original direction, in the reply direction, and the number
//!   of connections); a service's stats are the sum of its destinations'.
//!   Rates are 0: nothing in nftables estimates them (IPVS's estimator is a
//!   kernel timer, ip_vs_est.c); a reader wanting rates differentiates
//!   successive samples.
//! - ActiveConn/InActConn: conntrack entries from the [`FlowSource`]
//!   (TCP ESTABLISHED = active, every other entry inactive, as IPVS counts).
//!   PersistConn: the entries of the affinity map pointing at the server.

use super::compile::{counter_key, parse_spec_comment};
use super::exec::Flow;
use super::model::{parse_service_id, service_id, Ruleset};
use crate::model::{
    DestKey, DestSettings, Destination, Forward, IpvsInfo, KernelDest, KernelService, KernelTable,
    Service, ServiceKey, Stats,
};
use std::net::{IpAddr, SocketAddr};

/// `info` of a table that is not IPVS's (the caller prints its own header).
pub const NFT_INFO: IpvsInfo = IpvsInfo {
    version: 0,
    conn_tab_size: 0,
};

/// Rebuilds the table. `rs == None` (no table): no services.
pub fn table(rs: Option<&Ruleset>, flows: &[Flow]) -> KernelTable {
    let mut services = Vec::new();
    let Some(rs) = rs else {
        return KernelTable {
            info: NFT_INFO,
            services,
        };
    };
    for (name, chain) in &rs.chains {
        let Some(id) = name.strip_prefix("svc_") else {
            continue;
        };
        let Some(key) = parse_service_id(id) else {
            continue;
        };
        let Some(settings) = chain
            .rules
            .last()
            .and_then(|r| r.comment.as_deref())
            .and_then(parse_spec_comment)
        else {
            continue;
        };
        let mut dests = Vec::new();
        if let Some(reg) = rs.sets.get(&format!("reg_{id}")) {
            for (k, e) in &reg.elements {
                let Some(dk) = parse_dest(k) else { continue };
                let Ok(weight) = e.value.parse::<i32>() else {
                    continue;
                };
                dests.push(KernelDest {
                    dest: Destination {
                        key: dk,
                        settings: DestSettings::new(Forward::Masq, weight),
                    },
                    active_conns: 0,
                    inactive_conns: 0,
                    persist_conns: 0,
                    stats: dest_stats(rs, &key, &dk),
                });
            }
        }
        if let Some(aff) = rs.sets.get(&format!("aff_{id}")) {
            let ports = rs.sets.get(&format!("affp_{id}"));
            for (client, e) in &aff.elements {
                let Ok(addr) = e.value.parse::<IpAddr>() else {
                    continue;
                };
                let port = ports
                    .and_then(|p| p.elements.get(client))
                    .and_then(|p| p.value.parse::<u16>().ok());
                if let Some(d) = dests
                    .iter_mut()
                    .find(|d| d.dest.key.addr == addr && port.is_none_or(|p| p == d.dest.key.port))
                {
                    d.persist_conns += 1;
                }
            }
        }
        let mut stats = Stats::default();
        for d in &dests {
            add(&mut stats, &d.stats);
        }
        services.push(KernelService {
            service: Service { key, settings },
            stats,
            dests,
        });
    }
    count_flows(&mut services, flows);
    KernelTable {
        info: NFT_INFO,
        services,
    }
}

/// `10.0.0.1 . 8080` (canonical element text) -> destination key.
fn parse_dest(s: &str) -> Option<DestKey> {
    let (a, p) = s.split_once(" . ")?;
    Some(DestKey {
        addr: a.trim().parse().ok()?,
        port: p.trim().parse().ok()?,
    })
}

fn dest_stats(rs: &Ruleset, key: &ServiceKey, d: &DestKey) -> Stats {
    let Some(ck) = counter_key(key, d) else {
        return Stats::default();
    };
    let v = if key.family() == crate::model::Family::V4 {
        "4"
    } else {
        "6"
    };
    let get = |dir: &str| {
        rs.sets
            .get(&format!("c{dir}{v}"))
            .and_then(|s| s.counters.get(&ck))
            .copied()
            .unwrap_or_default()
    };
    let (i, o, n) = (get("in"), get("out"), get("new"));
    Stats {
        conns: n.packets,
        inpkts: i.packets,
        outpkts: o.packets,
        inbytes: i.bytes,
        outbytes: o.bytes,
        ..Stats::default()
    }
}

fn add(to: &mut Stats, s: &Stats) {
    to.conns += s.conns;
    to.inpkts += s.inpkts;
    to.outpkts += s.outpkts;
    to.inbytes += s.inbytes;
    to.outbytes += s.outbytes;
}

/// Attributes each flow to (service, destination). Address services match
/// on (protocol, original destination); a flow no address service claims is
/// given to a fwmark service of the same family holding its reply source
/// (the mark is not in conntrack's tuple, so that is all there is to match).
fn count_flows(services: &mut [KernelService], flows: &[Flow]) {
    for f in flows {
        let inet = services.iter().position(|s| match s.service.key {
            ServiceKey::Inet { protocol, addr } => {
                u16::from(f.protocol) == protocol.number() && addr == f.orig_dst
            }
            ServiceKey::Fwmark { .. } => false,
        });
        let idx = inet.or_else(|| {
            services.iter().position(|s| {
                matches!(s.service.key, ServiceKey::Fwmark { .. })
                    && s.service.key.family() == crate::model::Family::of(&f.reply_src.ip())
                    && s.dests
                        .iter()
                        .any(|d| matches_dest(&d.dest.key, f.reply_src))
            })
        });
        let Some(idx) = idx else { continue };
        if let Some(d) = services[idx]
            .dests
            .iter_mut()
            .find(|d| matches_dest(&d.dest.key, f.reply_src))
        {
            if f.protocol == 6 && f.tcp_established {
                d.active_conns += 1;
            } else {
                d.inactive_conns += 1;
            }
        }
    }
}

fn matches_dest(d: &DestKey, reply_src: SocketAddr) -> bool {
    d.addr == reply_src.ip() && (d.port == 0 || d.port == reply_src.port())
}

/// The service id of a key (re-exported for callers building names).
pub fn id_of(key: &ServiceKey) -> String {
    service_id(key)
}
