//! Desired table + `[[snat]]` -> the `inet director` table as data
//! ([`Ruleset`]). Pure; every shape decision of the dataplane is here.
//!
//! See the module docs of [`super`] for the ruleset shape and why.

use super::model::{
    proto_name, service_id, BaseChain, ChainObj, Elem, Owner, Rule, Ruleset, SetKind, SetObj, Shape,
};
use super::nfnl::NumgenRule;
use crate::config::Snat;
use crate::desired::{DesiredService, DesiredTable};
use crate::maglev;
use crate::model::{svc_flags, DestKey, Family, Forward, ServiceKey, ServiceSettings};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The jhash seed of the `sh` and `mh` schedulers: the ASCII bytes "dir1".
/// Frozen: two directors with the same config must hash a flow to the same
/// slot (nft_hash.c: `jhash(data, len, priv->seed)`; without an explicit
/// seed nft picks a random one per rule and the two would disagree).
pub const JHASH_SEED: u32 = 0x6469_7231;
/// `sh` table size: IPVS's `IP_VS_SH_TAB_SIZE` (1 << 8, ip_vs_sh.c).
pub const SH_TABLE_SIZE: u32 = 256;
/// Upper bound of a `wrr` selection map; weights whose reduced sum exceeds
/// it are scaled down proportionally (each active server keeps >= 1 slot).
pub const MAX_WRR_SLOTS: u64 = 4096;
/// Maximum number of affinity entries per persistent service.
pub const AFFINITY_SIZE: u32 = 262_144;

/// What the table carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: services, affinity, counters, `[[snat]]`, forward rules.
    Services,
    /// Only `[[snat]]` and forward accepts (services live in IPVS).
    NatOnly,
}

/// The compiler's output.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// `None`: the table should not exist.
    pub ruleset: Option<Ruleset>,
    /// Services that could not be compiled, with why. Their objects in the
    /// kernel are left as they are (the pass does not delete what it cannot
    /// replace).
    pub errors: BTreeMap<ServiceKey, String>,
    /// `[[snat]]` entries that could not be compiled.
    pub snat_errors: Vec<String>,
}

/// The selection of one service: an expression yielding a slot number and
/// the real server of every slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `numgen inc mod N` or `jhash ip saddr mod M seed 0x...`.
    pub expr: String,
    pub slots: Vec<DestKey>,
}

/// Compiles everything. Never panics; per-service problems land in
/// `errors` and the rest still compiles.
pub fn compile(desired: &DesiredTable, snat: &[Snat], scope: Scope) -> Compiled {
    let mut out = Compiled::default();
    let mut rs = Ruleset::default();
    let mut b = Builder { rs: &mut rs };
    match scope {
        Scope::Services => {
            b.service_globals();
            for (key, svc) in &desired.services {
                if let Err(e) = b.service(svc) {
                    out.errors.insert(*key, e);
                }
            }
        }
        Scope::NatOnly => {
            if snat.is_empty() && desired.services.is_empty() {
                return out;
            }
        }
    }
    b.nat_globals(scope);
    for key in desired.services.keys() {
        if let ServiceKey::Inet { addr, .. } = key {
            b.elem(vip_set(addr.ip()), addr.ip().to_string(), "", Owner::Global);
        }
    }
    for s in snat {
        if Family::of(&s.match_vip) != Family::of(&s.to_source) {
            out.snat_errors.push(format!(
                "[[snat]] match_vip {} and to_source {} are of different families",
                s.match_vip, s.to_source
            ));
            continue;
        }
        let v = if s.match_vip.is_ipv4() { "4" } else { "6" };
        let vip = s.match_vip.to_string();
        b.elem(
            &format!("snat{v}"),
            vip.clone(),
            &s.to_source.to_string(),
            Owner::Global,
        );
        b.elem(&format!("snatvip{v}"), vip.clone(), "", Owner::Global);
        b.elem(vip_set(s.match_vip), vip, "", Owner::Global);
    }
    out.ruleset = Some(rs);
    out
}

fn vip_set(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "vip4"
    } else {
        "vip6"
    }
}

fn fam(f: Family) -> (&'static str, &'static str, &'static str) {
    // (nft payload protocol, address type, nfproto)
    match f {
        Family::V4 => ("ip", "ipv4_addr", "ipv4"),
        Family::V6 => ("ip6", "ipv6_addr", "ipv6"),
    }
}

/// The `settings` as the comment of a service chain's last rule: the dump
/// rebuilds `ServiceSettings` from it (the chain name gives the key).
pub fn spec_comment(s: &ServiceSettings) -> String {
    format!(
        "director sched={} flags={:#x} timeout={} mask={}",
        s.scheduler, s.flags, s.timeout, s.netmask
    )
}

/// Inverse of [`spec_comment`].
pub fn parse_spec_comment(c: &str) -> Option<ServiceSettings> {
    let rest = c.strip_prefix("director ")?;
    let mut sched = None;
    let mut flags = None;
    let mut timeout = None;
    let mut mask = None;
    for part in rest.split(' ') {
        let (k, v) = part.split_once('=')?;
        match k {
            "sched" => sched = Some(v.to_string()),
            "flags" => flags = u32::from_str_radix(v.strip_prefix("0x")?, 16).ok(),
            "timeout" => timeout = v.parse().ok(),
            "mask" => mask = v.parse().ok(),
            _ => return None,
        }
    }
    Some(ServiceSettings {
        scheduler: sched?,
        flags: flags?,
        timeout: timeout?,
        netmask: mask?,
        pe_name: None,
    })
}

/// Smooth weighted round robin (nginx's algorithm): over `sum(weights)`
/// picks, index `i` is picked exactly `weights[i]` times and the picks are
/// spread out (weights 2,1 give 0,1,0), so consecutive connections
/// alternate between servers instead of arriving in bursts.
pub fn smooth_wrr(weights: &[u64]) -> Vec<usize> {
    let total: u64 = weights.iter().sum();
    let mut current: Vec<i128> = vec![0; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i128::from(*w);
            if *w > 0 && best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        current[b] -= i128::from(total);
        out.push(b);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Reduced (and if needed scaled) weights for `wrr`.
fn wrr_weights(ws: &[u64]) -> Vec<u64> {
    let g = ws.iter().copied().fold(0, gcd).max(1);
    let mut reduced: Vec<u64> = ws.iter().map(|w| w / g).collect();
    let sum: u64 = reduced.iter().sum();
    if sum > MAX_WRR_SLOTS {
        reduced = reduced
            .iter()
            .map(|w| (u128::from(*w) * u128::from(MAX_WRR_SLOTS) / u128::from(sum)).max(1) as u64)
            .collect();
    }
    reduced
}

/// The hash input of `sh`/`mh`: the client address, plus its port with the
/// `sh-port`/`mh-port` flag (`IP_VS_SVC_F_SCHED_SH_PORT` and
/// `IP_VS_SVC_F_SCHED_MH_PORT` are both `IP_VS_SVC_F_SCHED2`, ip_vs.h).
fn hash_input(family: Family, flags: u32) -> String {
    let (p, _, _) = fam(family);
    if flags & svc_flags::SCHED2 != 0 {
        format!("{p} saddr . th sport")
    } else {
        format!("{p} saddr")
    }
}

/// The selection of `svc`: which expression picks a slot and which real
/// server each slot holds. Drained servers (weight 0) are in no slot.
pub fn selection(svc: &DesiredService) -> Result<Option<Selection>, String> {
    let s = &svc.service.settings;
    let family = svc.service.key.family();
    let active: Vec<(DestKey, u64)> = svc
        .dests
        .iter()
        .filter(|(_, d)| d.weight > 0)
        .map(|(k, d)| (*k, u64::try_from(d.weight).unwrap_or(0)))
        .collect();
    let sel = match s.scheduler.as_str() {
        "rr" => {
            if active.is_empty() {
                return Ok(None);
            }
            let slots: Vec<DestKey> = active.iter().map(|(k, _)| *k).collect();
            Selection {
                expr: format!("numgen inc mod {}", slots.len()),
                slots,
            }
        }
        "wrr" => {
            if active.is_empty() {
                return Ok(None);
            }
            let ws = wrr_weights(&active.iter().map(|(_, w)| *w).collect::<Vec<_>>());
            let slots: Vec<DestKey> = smooth_wrr(&ws).into_iter().map(|i| active[i].0).collect();
            Selection {
                expr: format!("numgen inc mod {}", slots.len()),
                slots,
            }
        }
        "sh" => {
            if active.is_empty() {
                return Ok(None);
            }
            // ip_vs_sh.c ip_vs_sh_reassign: walk the servers, giving each
            // `weight` consecutive buckets, round and round until all
            // IP_VS_SH_TAB_SIZE buckets are taken.
            let mut slots = Vec::with_capacity(SH_TABLE_SIZE as usize);
            'fill: loop {
                for (k, w) in &active {
                    for _ in 0..*w {
                        if slots.len() == SH_TABLE_SIZE as usize {
                            break 'fill;
                        }
                        slots.push(*k);
                    }
                }
            }
            Selection {
                expr: format!(
                    "jhash {} mod {} seed {:#010x}",
                    hash_input(family, s.flags),
                    SH_TABLE_SIZE,
                    JHASH_SEED
                ),
                slots,
            }
        }
        "mh" => {
            let backends: Vec<maglev::Backend> = svc
                .dests
                .iter()
                .map(|(k, d)| maglev::Backend {
                    addr: std::net::SocketAddr::new(k.addr, k.port),
                    weight: u32::try_from(d.weight).unwrap_or(0),
                })
                .collect();
            let table =
                maglev::build(&backends, svc.maglev_table_size).map_err(|e| e.to_string())?;
            if table.is_empty() {
                return Ok(None);
            }
            let mut slots = Vec::with_capacity(table.slots().len());
            for idx in table.slots() {
                let b = usize::try_from(*idx)
                    .ok()
                    .and_then(|i| table.backends().get(i))
                    .ok_or_else(|| "maglev table refers to a missing backend".to_string())?;
                slots.push(DestKey {
                    addr: b.addr.ip(),
                    port: b.addr.port(),
                });
            }
            Selection {
                expr: format!(
                    "jhash {} mod {} seed {:#010x}",
                    hash_input(family, s.flags),
                    table.table_size(),
                    JHASH_SEED
                ),
                slots,
            }
        }
        other => {
            return Err(format!(
                "scheduler {other:?} is not supported on the nftables dataplane (rr, wrr, sh and mh are)"
            ))
        }
    };
    Ok(Some(sel))
}

/// Canonical text of a destination as a map value (`10.0.0.1 . 8080` or,
/// for port-0 destinations that keep the client's port, `10.0.0.1`).
fn dest_value(d: &DestKey, ported: bool) -> String {
    if ported {
        format!("{} . {}", d.addr, d.port)
    } else {
        d.addr.to_string()
    }
}

fn ipv4_mask(m: u32) -> String {
    std::net::Ipv4Addr::from(m).to_string()
}

fn ipv6_mask(prefix: u32) -> String {
    let p = prefix.min(128);
    let bits: u128 = if p == 0 { 0 } else { u128::MAX << (128 - p) };
    std::net::Ipv6Addr::from(bits).to_string()
}

struct Builder<'a> {
    rs: &'a mut Ruleset,
}

impl Builder<'_> {
    fn set(&mut self, name: &str, kind: SetKind, owner: Owner, shape: Shape, decl: String) {
        self.rs.sets.insert(
            name.to_string(),
            SetObj {
                kind,
                owner,
                shape,
                decl,
                elements: BTreeMap::new(),
                dynamic: false,
                allowed_values: Vec::new(),
                follows: None,
                counters: BTreeMap::new(),
            },
        );
    }

    /// A `type` map/set: `key` and `data` are nft type names joined by ` . `.
    fn typed(&mut self, name: &str, key: &str, data: Option<&str>, owner: Owner) {
        let (kind, decl) = match data {
            Some(d) => (SetKind::Map, format!("type {key} : {d};")),
            None => (SetKind::Set, format!("type {key};")),
        };
        self.set(
            name,
            kind,
            owner,
            Shape {
                key: key.to_string(),
                data: data.map(str::to_string),
                timeout: None,
            },
            decl,
        );
    }

    fn elem(&mut self, set: &str, key: String, value: &str, owner: Owner) {
        if let Some(s) = self.rs.sets.get_mut(set) {
            s.elements.insert(
                key,
                Elem {
                    value: value.to_string(),
                    owner,
                },
            );
        }
    }

    fn chain(&mut self, name: &str, owner: Owner, base: Option<BaseChain>, rules: Vec<String>) {
        let rules = rules
            .into_iter()
            .map(|r| {
                // Every rule ends with `comment "..."`: its identity.
                let comment = r
                    .rsplit_once(" comment \"")
                    .map(|(_, c)| c.trim_end_matches('"').to_string());
                Rule {
                    comment,
                    text: r,
                    handle: None,
                    fast: None,
                }
            })
            .collect();
        self.rs
            .chains
            .insert(name.to_string(), ChainObj { owner, base, rules });
    }

    fn service_globals(&mut self) {
        let g = Owner::Global;
        for (v, a) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
            let tuple = format!("{a} . inet_proto . inet_service");
            self.typed(&format!("svc{v}"), &tuple, Some("verdict"), g.clone());
            self.typed(&format!("fwm{v}"), "mark", Some("verdict"), g.clone());
            self.typed(&format!("affd{v}"), &tuple, Some("verdict"), g.clone());
            self.typed(&format!("affm{v}"), "mark", Some("verdict"), g.clone());
            let ckey = format!("{a} . inet_proto . inet_service . {a} . inet_service");
            // Per-destination counters are element counters of these sets
            // (`counter` flag): tens of thousands of named counter objects
            // made `nft -j list table` take seconds (each object is dumped
            // on its own); set elements are dumped in bulk.
            for dir in ["in", "out", "new"] {
                self.set(
                    &format!("c{dir}{v}"),
                    SetKind::Set,
                    g.clone(),
                    Shape {
                        key: ckey.clone(),
                        data: None,
                        timeout: None,
                    },
                    format!("type {ckey}; counter;"),
                );
            }
        }
        // IPVS looks fwmark services up first (ip_vs_core.c ip_vs_service_find:
        // `if (skb->mark) ... __ip_vs_svc_fwm_find` before the address).
        let dispatch = vec![
            "meta nfproto ipv4 meta mark vmap @fwm4 comment \"fwm4\"".to_string(),
            "meta nfproto ipv6 meta mark vmap @fwm6 comment \"fwm6\"".to_string(),
            "ip daddr . meta l4proto . th dport vmap @svc4 comment \"svc4\"".to_string(),
            "ip6 daddr . meta l4proto . th dport vmap @svc6 comment \"svc6\"".to_string(),
        ];
        self.chain("dispatch", Owner::Global, None, dispatch);
        let jump = vec!["jump dispatch comment \"dispatch\"".to_string()];
        // NF_IP_PRI_NAT_DST = -100 for both prerouting (remote clients) and
        // output (clients on the director itself).
        self.chain(
            "prerouting",
            g.clone(),
            Some(base("nat", "prerouting", -100)),
            jump.clone(),
        );
        self.chain("output", g.clone(), Some(base("nat", "output", -100)), jump);
        // After DNAT (-100 + 10): the packet's daddr is the real server
        // (ct status dnat), which is what the affinity entry must remember.
        let mut post = Vec::new();
        for (p, v) in [("ip", "4"), ("ip6", "6")] {
            post.push(format!(
                "meta l4proto {{ tcp, udp, sctp }} ct direction original ct status dnat ct original {p} daddr . meta l4proto . ct original proto-dst vmap @affd{v} comment \"affd{v}\""
            ));
        }
        for (n, v) in [("ipv4", "4"), ("ipv6", "6")] {
            post.push(format!(
                "meta nfproto {n} ct direction original ct status dnat meta mark vmap @affm{v} comment \"affm{v}\""
            ));
        }
        self.chain(
            "postnat",
            g.clone(),
            Some(base("filter", "prerouting", -90)),
            post.clone(),
        );
        self.chain("postnat_out", g, Some(base("filter", "output", -90)), post);
    }

    fn nat_globals(&mut self, scope: Scope) {
        let g = Owner::Global;
        for (v, a) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
            self.typed(&format!("vip{v}"), a, None, g.clone());
            self.typed(&format!("snat{v}"), a, Some(a), g.clone());
            self.typed(&format!("snatvip{v}"), a, None, g.clone());
        }
        let mut fwd = Vec::new();
        if scope == Scope::Services {
            // Per-destination counters (status --stats). The key names the
            // service by the conntrack original tuple and the real server by
            // the packet (daddr on the way in, saddr on the way back).
            for (p, n, v) in [("ip", "ipv4", "4"), ("ip6", "ipv6", "6")] {
                let svc = format!("ct original {p} daddr . meta l4proto . ct original proto-dst");
                fwd.push(format!("meta nfproto {n} meta l4proto {{ tcp, udp, sctp }} ct direction original {svc} . {p} daddr . th dport @cin{v} comment \"cin{v}\""));
                fwd.push(format!("meta nfproto {n} meta l4proto {{ tcp, udp, sctp }} ct direction reply {svc} . {p} saddr . th sport @cout{v} comment \"cout{v}\""));
                fwd.push(format!("meta nfproto {n} meta l4proto {{ tcp, udp, sctp }} ct state new {svc} . {p} daddr . th dport @cnew{v} comment \"cnew{v}\""));
            }
        }
        fwd.push("ct state established,related counter accept comment \"established\"".into());
        fwd.push("meta nfproto ipv4 ct state new ct original ip daddr @vip4 counter accept comment \"new4\"".into());
        fwd.push("meta nfproto ipv6 ct state new ct original ip6 daddr @vip6 counter accept comment \"new6\"".into());
        self.chain(
            "forward",
            g.clone(),
            Some(base("filter", "forward", 0)),
            fwd,
        );
        // Source NAT for connections to a [[snat]] VIP that left towards a
        // real server: the conntrack original daddr is the VIP (DNAT by
        // nftables, or IPVS with net.ipv4.vs.conntrack=1), the packet's
        // daddr is not (it was rewritten). NF_IP_PRI_NAT_SRC = 100.
        let snat = vec![
            "meta nfproto ipv4 ct direction original ip daddr != @snatvip4 snat ip to ct original ip daddr map @snat4 comment \"snat4\"".to_string(),
            "meta nfproto ipv6 ct direction original ip6 daddr != @snatvip6 snat ip6 to ct original ip6 daddr map @snat6 comment \"snat6\"".to_string(),
        ];
        self.chain(
            "postrouting",
            g,
            Some(base("nat", "postrouting", 100)),
            snat,
        );
    }

    fn service(&mut self, svc: &DesiredService) -> Result<(), String> {
        let key = svc.service.key;
        let s = &svc.service.settings;
        let family = key.family();
        let (p, addr_t, _) = fam(family);
        let id = service_id(&key);
        let owner = Owner::Service(id.clone());

        // Refuse what nftables cannot express, before emitting anything.
        if let ServiceKey::Inet { addr, .. } = key {
            if addr.port() == 0 {
                return Err(
                    "port-0 services are not supported on the nftables dataplane \
                            (use a fwmark service to match several ports)"
                        .into(),
                );
            }
        }
        if s.flags & svc_flags::ONEPACKET != 0 {
            return Err("one-packet scheduling is not supported on the nftables dataplane".into());
        }
        if let Some(pe) = &s.pe_name {
            return Err(format!(
                "persistence engine {pe:?} is not supported on the nftables dataplane"
            ));
        }
        if s.persistent() && s.timeout == 0 {
            return Err("persistent service with timeout 0".into());
        }
        let mut ported = None;
        for (dk, ds) in &svc.dests {
            if ds.forward != Forward::Masq {
                return Err(format!(
                    "real server {dk}: forwarding {} is not supported on the nftables dataplane (NAT only)",
                    ds.forward.ipvsadm_label()
                ));
            }
            if ds.upper_threshold != 0 || ds.lower_threshold != 0 {
                return Err(format!(
                    "real server {dk}: connection thresholds are not supported on the nftables dataplane"
                ));
            }
            if Family::of(&dk.addr) != family {
                return Err(format!(
                    "real server {dk} is not of the service's address family (DNAT cannot change family)"
                ));
            }
            if ds.weight < 0 {
                return Err(format!("real server {dk}: negative weight {}", ds.weight));
            }
            let this = dk.port != 0;
            if *ported.get_or_insert(this) != this {
                return Err(
                    "real servers mix port 0 (keep the client's port) and explicit ports; \
                            one selection map cannot hold both"
                        .into(),
                );
            }
        }
        let ported = ported.unwrap_or(true);
        let sel = selection(svc)?;

        let (ctx, proto_ctx) = match key {
            ServiceKey::Inet { protocol, .. } => {
                let n = proto_name(protocol);
                (format!("meta l4proto {n}"), n)
            }
            ServiceKey::Fwmark { .. } => ("meta l4proto { tcp, udp, sctp }".to_string(), ""),
        };
        let _ = proto_ctx;
        let target = if ported {
            format!("{p} addr . port to")
        } else {
            format!("{p} to")
        };
        let dest_t = if ported {
            format!("{addr_t} . inet_service")
        } else {
            addr_t.to_string()
        };
        // The port half must name the service's protocol: with `th dport`
        // nft 1.0.6 re-evaluates the stored typeof against the rule's
        // `meta l4proto` and refuses the next transaction ("conflicting
        // protocols specified: udp vs. th"). A fwmark service spans
        // protocols, so it can only keep the client's port.
        let dest_typeof = match (ported, key) {
            (false, _) => format!("{p} daddr"),
            (true, ServiceKey::Inet { protocol, .. }) => {
                format!("{p} daddr . {} dport", proto_name(protocol))
            }
            (true, ServiceKey::Fwmark { .. }) => {
                return Err("fwmark services need port-0 real servers on the nftables \
                            dataplane (the client's destination port is kept)"
                    .into())
            }
        };
        let saddr = if s.persistent() {
            let full = s.netmask == crate::model::default_netmask(family);
            match (family, full) {
                (_, true) => format!("{p} saddr"),
                (Family::V4, false) => format!("{p} saddr & {}", ipv4_mask(s.netmask)),
                (Family::V6, false) => format!("{p} saddr & {}", ipv6_mask(s.netmask)),
            }
        } else {
            String::new()
        };

        let mut rules = Vec::new();
        if s.persistent() {
            // Address and port of the affinity live in two maps: nft 1.0.6
            // aborts (netlink_linearize.c: `dreg < ctx->reg_low`) on an
            // `update` whose data is `ip6 daddr . th dport`, and `dnat to
            // A : P` takes the two halves from two lookups.
            let port = if ported {
                format!(" : {saddr} map @affp_{id}")
            } else {
                String::new()
            };
            rules.push(format!(
                "{ctx} dnat {p} to {saddr} map @aff_{id}{port} comment \"aff\""
            ));
        }
        // Selection map: `typeof numgen` gives the 32-bit integer key both
        // numgen and jhash produce (a `mark` key is refused by the type check).
        self.set(
            &format!("sel_{id}"),
            SetKind::Map,
            owner.clone(),
            Shape {
                key: "integer".into(),
                data: Some(dest_t.clone()),
                timeout: None,
            },
            format!("typeof numgen inc mod 2 : {dest_typeof};"),
        );
        if let Some(sel) = &sel {
            rules.push(format!(
                "{ctx} dnat {target} {} map @sel_{id} comment \"sel {}\"",
                sel.expr, sel.expr
            ));
            for (i, d) in sel.slots.iter().enumerate() {
                self.elem(
                    &format!("sel_{id}"),
                    i.to_string(),
                    &dest_value(d, ported),
                    owner.clone(),
                );
            }
        }
        // No slot picked (everything drained, or a slot element missing):
        // drop rather than deliver to the VIP locally. The comment carries
        // the service's settings for the dump.
        rules.push(format!("{ctx} drop comment \"{}\"", spec_comment(s)));
        self.chain(&format!("svc_{id}"), owner.clone(), None, rules);
        // rr/wrr rewrite their selector rule when the slot count changes:
        // that one rule can also be written over netlink (nfnl::NumgenRule).
        if let (Some(sel), ServiceKey::Inet { protocol, .. }) = (&sel, key) {
            let modulus = sel
                .expr
                .strip_prefix("numgen inc mod ")
                .and_then(|m| m.parse::<u32>().ok());
            if let (Some(modulus), Some(chain)) =
                (modulus, self.rs.chains.get_mut(&format!("svc_{id}")))
            {
                let comment = format!("sel {}", sel.expr);
                for r in &mut chain.rules {
                    if r.comment.as_deref() == Some(comment.as_str()) {
                        r.fast = Some(NumgenRule {
                            l4proto: protocol.number() as u8,
                            ipv6: family == Family::V6,
                            ported,
                            modulus,
                            set: format!("sel_{id}"),
                            comment: comment.clone(),
                        });
                    }
                }
            }
        }

        // Registry: every real server with its weight, drained ones included
        // (they are in no selection slot but still in `status`).
        self.typed(
            &format!("reg_{id}"),
            &format!("{addr_t} . inet_service"),
            Some("mark"),
            owner.clone(),
        );
        for (dk, ds) in &svc.dests {
            self.elem(
                &format!("reg_{id}"),
                format!("{} . {}", dk.addr, dk.port),
                &ds.weight.to_string(),
                owner.clone(),
            );
        }

        let jump = format!("jump svc_{id}");
        let v = if family == Family::V4 { "4" } else { "6" };
        match key {
            ServiceKey::Inet { protocol, addr } => {
                let k = format!("{} . {} . {}", addr.ip(), proto_name(protocol), addr.port());
                self.elem(&format!("svc{v}"), k.clone(), &jump, owner.clone());
                if s.persistent() {
                    self.elem(
                        &format!("affd{v}"),
                        k,
                        &format!("jump affu_{id}"),
                        owner.clone(),
                    );
                }
                if ported {
                    for dk in svc.dests.keys() {
                        let ck = format!(
                            "{} . {} . {} . {} . {}",
                            addr.ip(),
                            proto_name(protocol),
                            addr.port(),
                            dk.addr,
                            dk.port
                        );
                        for dir in ["in", "out", "new"] {
                            self.elem(&format!("c{dir}{v}"), ck.clone(), "", owner.clone());
                        }
                    }
                }
            }
            ServiceKey::Fwmark { mark, .. } => {
                self.elem(&format!("fwm{v}"), mark.to_string(), &jump, owner.clone());
                if s.persistent() {
                    self.elem(
                        &format!("affm{v}"),
                        mark.to_string(),
                        &format!("jump affu_{id}"),
                        owner.clone(),
                    );
                }
            }
        }

        if s.persistent() {
            let aff = format!("aff_{id}");
            let affp = format!("affp_{id}");
            let dynamic = |name: &str, data: &str| {
                (
                    Shape {
                        key: addr_t.to_string(),
                        data: Some(data.to_string()),
                        timeout: Some(u64::from(s.timeout)),
                    },
                    format!(
                        "type {addr_t} : {data}; flags dynamic,timeout; timeout {}s; size {AFFINITY_SIZE};",
                        s.timeout
                    ),
                    name.to_string(),
                )
            };
            let mut maps = vec![dynamic(&aff, addr_t)];
            if ported {
                maps.push(dynamic(&affp, "inet_service"));
            }
            let active: Vec<String> = sel
                .as_ref()
                .map(|sel| {
                    let mut v: Vec<String> = sel.slots.iter().map(|d| d.addr.to_string()).collect();
                    v.sort();
                    v.dedup();
                    v
                })
                .unwrap_or_default();
            for (shape, decl, name) in maps {
                self.set(&name, SetKind::Map, owner.clone(), shape, decl);
                if let Some(a) = self.rs.sets.get_mut(&name) {
                    a.dynamic = true;
                    if name == aff {
                        a.allowed_values = active.clone();
                    } else {
                        a.follows = Some(aff.clone());
                    }
                }
            }
            // Refreshed by every original-direction packet: an entry expires
            // `timeout` after the client's last packet, like an IPVS
            // persistence template outliving its last connection.
            let mut upd = vec![format!(
                "update @{aff} {{ {saddr} : {p} daddr }} comment \"affu\""
            )];
            if ported {
                upd.push(format!(
                    "update @{affp} {{ {saddr} : th dport }} comment \"affup\""
                ));
            }
            self.chain(&format!("affu_{id}"), owner, None, upd);
        }
        Ok(())
    }
}

/// The key of a destination's counters in `cin4`/`cout4`/`cnew4` (and 6).
pub fn counter_key(key: &ServiceKey, d: &DestKey) -> Option<String> {
    match key {
        ServiceKey::Inet { protocol, addr } => Some(format!(
            "{} . {} . {} . {} . {}",
            addr.ip(),
            proto_name(*protocol),
            addr.port(),
            d.addr,
            d.port
        )),
        ServiceKey::Fwmark { .. } => None,
    }
}

fn base(kind: &str, hook: &str, prio: i32) -> BaseChain {
    BaseChain {
        kind: kind.into(),
        hook: hook.into(),
        prio,
        policy: "accept".into(),
    }
}

#[cfg(test)]
mod tests;
