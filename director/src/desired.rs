//! Config -> desired IPVS table: a pure function.
//!
//! The desired table is exactly what the kernel should hold for the services
//! the director owns, in the kernel's own terms (flags, netmask, forwarding
//! codes), so that the diff in [`crate::reconcile`] is a plain comparison.
//! Health results and drains narrow it here too ([`PoolInputs`]), never in
//! the executor:
//!
//! - a real server whose checks fail is left out (`on_down = "remove"`) or
//!   kept at weight 0 (`"inhibit"`);
//! - a drained one (`directorctl drain`) keeps its connections at weight 0;
//! - one removed from the config stays at weight 0 while it finishes its
//!   connections ([`PoolInputs::leaving`]);
//! - below `quorum` healthy servers a virtual server with a `sorry_server`
//!   sends new connections there, and keeps the survivors at weight 0 so
//!   their established connections live on.

use crate::config::{Config, RealServer, VirtualServer};
use crate::model::{
    default_netmask, svc_flags, DestKey, DestSettings, Forward, Service, ServiceKey,
    ServiceSettings, Tunnel,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One owned service and its destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredService {
    /// The `virtual_server.name` it came from (metrics and logs use it).
    pub name: String,
    pub service: Service,
    /// Maglev table size for `mh` on the nftables dataplane (prime).
    pub maglev_table_size: u32,
    pub dests: BTreeMap<DestKey, DestSettings>,
}

/// Everything the director owns, keyed like the kernel keys it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredTable {
    pub services: BTreeMap<ServiceKey, DesiredService>,
}

impl DesiredTable {
    pub fn dest_count(&self) -> usize {
        self.services.values().map(|s| s.dests.len()).sum()
    }
    /// The name the operator gave a service, if the director owns it.
    pub fn name_of(&self, key: &ServiceKey) -> Option<&str> {
        self.services.get(key).map(|s| s.name.as_str())
    }
}

/// The kernel settings a virtual server compiles to.
pub fn service_settings(vs: &VirtualServer) -> ServiceSettings {
    let family = vs.key.family();
    let mut settings = ServiceSettings::new(&vs.scheduler, family);
    settings.flags =
        vs.scheduler_flags & (svc_flags::SCHED1 | svc_flags::SCHED2 | svc_flags::SCHED3);
    if let Some(p) = &vs.persistence {
        settings.flags |= svc_flags::PERSISTENT;
        // ipvsadm -p takes whole seconds and so does the kernel (it stores
        // timeout * HZ and reports timeout / HZ).
        settings.timeout = u32::try_from(p.timeout.as_secs()).unwrap_or(u32::MAX);
        settings.netmask = p.netmask;
        settings.pe_name = vs.persistence_engine.clone();
    } else {
        settings.netmask = default_netmask(family);
    }
    if vs.one_packet {
        settings.flags |= svc_flags::ONEPACKET;
    }
    settings
}

/// A real server of a virtual server, by the names operators use.
pub type PoolMember = (String, SocketAddr);

/// What narrows the config's pools at a moment: health and drains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolInputs {
    /// Real servers whose checks say down.
    pub down: BTreeSet<PoolMember>,
    /// Drained by the operator: weight 0, connections kept.
    pub drained: BTreeSet<PoolMember>,
    /// Removed from the config, finishing their connections at weight 0
    /// (their last settings).
    pub leaving: BTreeMap<PoolMember, DestSettings>,
}

/// How a virtual server's pool stands, for `directorctl health` and
/// metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Configured real servers whose checks pass.
    pub up: usize,
    pub total: usize,
    /// Up and taking new connections (not drained, weight > 0).
    pub serving: usize,
    pub quorum: u32,
    pub quorum_met: bool,
    /// New connections go to the sorry server.
    pub sorry_active: bool,
}

fn dest_settings(rs: &RealServer) -> DestSettings {
    DestSettings {
        forward: rs.forwarding,
        weight: rs.weight,
        upper_threshold: rs.upper_threshold,
        lower_threshold: rs.lower_threshold,
        // The kernel reports IPIP/0/nocsum for every non-tunnel
        // destination; desire the same so the comparison with a dump is
        // exact.
        tunnel: if rs.forwarding == Forward::Tunnel {
            rs.tunnel
        } else {
            Tunnel::default()
        },
    }
}

/// Compiles the whole config with every real server healthy and nothing
/// drained.
pub fn desired_table(config: &Config) -> DesiredTable {
    desired_table_with(config, &PoolInputs::default()).0
}

/// Compiles the config narrowed by health and drains; also returns each
/// virtual server's pool status, by name.
pub fn desired_table_with(
    config: &Config,
    inputs: &PoolInputs,
) -> (DesiredTable, BTreeMap<String, PoolStatus>) {
    let mut services = BTreeMap::new();
    let mut pools = BTreeMap::new();
    for vs in &config.virtual_servers {
        let (dests, pool) = pool_of(vs, inputs);
        let desired = DesiredService {
            name: vs.name.clone(),
            maglev_table_size: vs.maglev_table_size,
            service: Service {
                key: vs.key,
                settings: service_settings(vs),
            },
            dests,
        };
        services.insert(vs.key, desired);
        pools.insert(vs.name.clone(), pool);
    }
    (DesiredTable { services }, pools)
}

fn pool_of(
    vs: &VirtualServer,
    inputs: &PoolInputs,
) -> (BTreeMap<DestKey, DestSettings>, PoolStatus) {
    let member = |addr: SocketAddr| (vs.name.clone(), addr);
    let mut dests = BTreeMap::new();
    let mut pool = PoolStatus {
        total: vs.real_servers.len(),
        quorum: vs.quorum,
        ..PoolStatus::default()
    };
    for rs in &vs.real_servers {
        let addr = SocketAddr::new(rs.address, rs.port);
        let key = DestKey {
            addr: rs.address,
            port: rs.port,
        };
        let mut settings = dest_settings(rs);
        let down = inputs.down.contains(&member(addr));
        if down {
            match vs.on_down {
                crate::config::OnDown::Remove => continue,
                crate::config::OnDown::Inhibit => settings.weight = 0,
            }
        } else {
            pool.up += 1;
        }
        if inputs.drained.contains(&member(addr)) {
            settings.weight = 0;
        }
        if !down && settings.weight > 0 {
            pool.serving += 1;
        }
        dests.insert(key, settings);
    }
    // Removed from the config, still finishing: weight 0, unless the
    // config has it again (then the config's settings above win).
    for ((name, addr), settings) in &inputs.leaving {
        if name != &vs.name {
            continue;
        }
        let key = DestKey {
            addr: addr.ip(),
            port: addr.port(),
        };
        dests.entry(key).or_insert(DestSettings {
            weight: 0,
            ..*settings
        });
    }
    pool.quorum_met = pool.serving >= vs.quorum as usize;
    if let (false, Some(sorry)) = (pool.quorum_met, vs.sorry_server) {
        // keepalived switches new connections to the sorry server; the
        // survivors keep their established ones at weight 0.
        for settings in dests.values_mut() {
            settings.weight = 0;
        }
        let key = DestKey {
            addr: sorry.ip(),
            port: sorry.port(),
        };
        dests.insert(
            key,
            DestSettings {
                forward: vs.forwarding,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
                tunnel: Tunnel::default(),
            },
        );
        pool.sorry_active = true;
    }
    (dests, pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_vs: &str) -> Config {
        let text = format!(
            "[global]\nrouter_id = \"lb\"\n[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.1:80\"\n{extra_vs}\n\
             health = {{ kind = \"tcp\" }}\n\
             [[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nweight = 5\n\
             [[virtual_server.real_server]]\naddress = \"10.0.0.2:80\"\nweight = 5\n\
             [[virtual_server.real_server]]\naddress = \"10.0.0.3:80\"\nweight = 5\n"
        );
        crate::config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn member(rs: &str) -> PoolMember {
        ("web".into(), rs.parse().unwrap())
    }

    /// The pool as "addr:weight" strings.
    fn weights(t: &DesiredTable) -> Vec<String> {
        let s = t.services.values().next().unwrap();
        s.dests
            .iter()
            .map(|(k, v)| format!("{}:{}={}", k.addr, k.port, v.weight))
            .collect()
    }

    #[test]
    fn down_servers_are_removed_or_inhibited() {
        let mut inputs = PoolInputs::default();
        inputs.down.insert(member("10.0.0.2:80"));
        let (t, pools) = desired_table_with(&config(""), &inputs);
        assert_eq!(weights(&t), ["10.0.0.1:80=5", "10.0.0.3:80=5"]);
        assert_eq!(
            pools["web"],
            PoolStatus {
                up: 2,
                total: 3,
                serving: 2,
                quorum: 1,
                quorum_met: true,
                sorry_active: false
            }
        );
        let (t, _) = desired_table_with(&config("on_down = \"inhibit\""), &inputs);
        assert_eq!(
            weights(&t),
            ["10.0.0.1:80=5", "10.0.0.2:80=0", "10.0.0.3:80=5"]
        );
    }

    #[test]
    fn drained_and_leaving_servers_keep_weight_zero() {
        let mut inputs = PoolInputs::default();
        inputs.drained.insert(member("10.0.0.1:80"));
        let gone = DestSettings {
            forward: Forward::Masq,
            weight: 7,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
        };
        inputs.leaving.insert(member("10.0.0.9:80"), gone);
        // A leaving entry of another virtual server is not ours.
        inputs
            .leaving
            .insert(("other".into(), "10.0.0.8:80".parse().unwrap()), gone);
        let (t, pools) = desired_table_with(&config(""), &inputs);
        assert_eq!(
            weights(&t),
            [
                "10.0.0.1:80=0",
                "10.0.0.2:80=5",
                "10.0.0.3:80=5",
                "10.0.0.9:80=0"
            ]
        );
        assert_eq!((pools["web"].up, pools["web"].serving), (3, 2));
    }

    #[test]
    fn below_quorum_new_connections_go_to_the_sorry_server() {
        let cfg = config("quorum = 2\nsorry_server = \"10.0.0.99:8080\"");
        let mut inputs = PoolInputs::default();
        inputs.down.insert(member("10.0.0.1:80"));
        let (t, pools) = desired_table_with(&cfg, &inputs);
        assert_eq!(weights(&t), ["10.0.0.2:80=5", "10.0.0.3:80=5"]);
        assert!(pools["web"].quorum_met && !pools["web"].sorry_active);
        inputs.drained.insert(member("10.0.0.2:80"));
        let (t, pools) = desired_table_with(&cfg, &inputs);
        assert_eq!(
            weights(&t),
            ["10.0.0.2:80=0", "10.0.0.3:80=0", "10.0.0.99:8080=1"]
        );
        assert!(!pools["web"].quorum_met && pools["web"].sorry_active);
        // Without a sorry server, quorum is only reported.
        let (t, pools) = desired_table_with(&config("quorum = 2"), &inputs);
        assert_eq!(weights(&t), ["10.0.0.2:80=0", "10.0.0.3:80=5"]);
        assert!(!pools["web"].quorum_met && !pools["web"].sorry_active);
    }

    #[test]
    fn no_inputs_is_the_plain_config() {
        let cfg = config("");
        assert_eq!(
            desired_table(&cfg),
            desired_table_with(&cfg, &PoolInputs::default()).0
        );
        assert_eq!(
            weights(&desired_table(&cfg)),
            ["10.0.0.1:80=5", "10.0.0.2:80=5", "10.0.0.3:80=5"]
        );
    }
}
