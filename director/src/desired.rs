//! Config -> desired IPVS table: a pure function.
//!
//! The desired table is exactly what the kernel should hold for the services
//! the director owns, in the kernel's own terms (flags, netmask, forwarding
//! codes), so that the diff in [`crate::reconcile`] is a plain comparison.
//! Later inputs (health results, drains) narrow it here too, never in the
//! executor.

use crate::config::{Config, VirtualServer};
use crate::model::{
    default_netmask, svc_flags, DestKey, DestSettings, Forward, Service, ServiceKey,
    ServiceSettings, Tunnel,
};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// Compiles the whole config.
pub fn desired_table(config: &Config) -> DesiredTable {
    let services = config
        .virtual_servers
        .iter()
        .map(|vs| {
            let dests = vs
                .real_servers
                .iter()
                .map(|rs| {
                    let key = DestKey {
                        addr: rs.address,
                        port: rs.port,
                    };
                    let settings = DestSettings {
                        forward: rs.forwarding,
                        weight: rs.weight,
                        upper_threshold: rs.upper_threshold,
                        lower_threshold: rs.lower_threshold,
                        // The kernel reports IPIP/0/nocsum for every
                        // non-tunnel destination; desire the same so the
                        // comparison with a dump is exact.
                        tunnel: if rs.forwarding == Forward::Tunnel {
                            rs.tunnel
                        } else {
                            Tunnel::default()
                        },
                    };
                    (key, settings)
                })
                .collect();
            let desired = DesiredService {
                name: vs.name.clone(),
                maglev_table_size: vs.maglev_table_size,
                service: Service {
                    key: vs.key,
                    settings: service_settings(vs),
                },
                dests,
            };
            (vs.key, desired)
        })
        .collect();
    DesiredTable { services }
}
