//! Operator drains and real servers leaving the config: the bookkeeping
//! behind [`PoolInputs::drained`] and [`PoolInputs::leaving`], pure (time
//! is an input: the daemon's monotonic clock as a [`Duration`]).
//!
//! - **Drain** (`directorctl drain VS RS`, keepalived users' `ipvsadm -e
//!   -w 0`): weight 0, established connections kept, new ones elsewhere.
//!   Keyed by virtual server name and real server address, it lives in
//!   the daemon, not in the config, and survives reloads for as long as
//!   the real server stays configured; removing the server from the config
//!   ends its drain (it then leaves, below, at weight 0 all the same).
//! - **Leaving**: a reload that removes a real server from a virtual server
//!   does not delete it at once (that would cut its in-flight requests):
//!   it stays at weight 0 until its active connections reach 0 or the
//!   virtual server's `drain_timeout` passes, then it is deleted. Only a
//!   server that is in the kernel leaves (one that was down and removed
//!   is already out). A reload that lists it again takes it back at its
//!   configured settings. When the virtual server itself is removed or
//!   changes its address, its service is deleted or replaced as a whole,
//!   and its leaving servers with it.

use crate::config::{Config, VirtualServer};
use crate::desired::{DesiredTable, PoolInputs, PoolMember};
use crate::model::{DestKey, DestSettings, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A real server removed from the config that is finishing its
/// connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    /// The service it is leaving.
    pub service: ServiceKey,
    /// Its kernel settings when it was removed (desired sets weight 0).
    pub settings: DestSettings,
    /// When the reload removed it, and when it is deleted regardless of
    /// its connections (daemon clock).
    pub since: Duration,
    pub deadline: Duration,
}

/// Why a leaving server was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Its active connections reached 0.
    NoConnections,
    /// `drain_timeout` passed with this many still active.
    Timeout { active: Option<u64> },
}

/// What a reload did to drains and leaving servers (for the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadChanges {
    /// Removed from the config, now leaving.
    pub started_leaving: Vec<PoolMember>,
    /// Were leaving; the new config has them again.
    pub returned: Vec<PoolMember>,
    /// Were leaving; their virtual server is gone or has a new address.
    pub dropped_leaving: Vec<PoolMember>,
    /// Drains of real servers the new config no longer has.
    pub forgotten_drains: Vec<PoolMember>,
}

/// Why `drain`/`undrain` cannot name a real server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("no virtual server named {name:?} (configured: {known})")]
    NoVirtualServer { name: String, known: String },
    #[error("{text:?} is not a real server address: write IP:PORT (or just IP when the virtual server has one real server with that IP)")]
    BadAddress { text: String },
    #[error("virtual server {vs:?} has no real server {rs} (it has: {known})")]
    NoRealServer {
        vs: String,
        rs: String,
        known: String,
    },
    #[error(
        "virtual server {vs:?} has several real servers on {ip}: name one with its port ({known})"
    )]
    Ambiguous {
        vs: String,
        ip: IpAddr,
        known: String,
    },
}

/// The drains and leaving servers of the running daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    drained: BTreeSet<PoolMember>,
    leaving: BTreeMap<PoolMember, Leaving>,
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The configured real server `rs` (`IP:PORT`, `[IPv6]:PORT`, or a bare IP
/// that is unique in the virtual server) of virtual server `vs`.
pub fn resolve(config: &Config, vs: &str, rs: &str) -> Result<PoolMember, MemberError> {
    let Some(v) = config.virtual_servers.iter().find(|v| v.name == vs) else {
        return Err(MemberError::NoVirtualServer {
            name: vs.to_string(),
            known: list(
                config
                    .virtual_servers
                    .iter()
                    .map(|v| format!("{:?}", v.name)),
            ),
        });
    };
    let addrs: Vec<SocketAddr> = v
        .real_servers
        .iter()
        .map(|r| SocketAddr::new(r.address, r.port))
        .collect();
    let text = rs.trim();
    let wanted: Vec<SocketAddr> = if let Ok(a) = text.parse::<SocketAddr>() {
        addrs.iter().copied().filter(|x| *x == a).collect()
    } else if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let on_ip: Vec<SocketAddr> = addrs.iter().copied().filter(|x| x.ip() == ip).collect();
        if on_ip.len() > 1 {
            return Err(MemberError::Ambiguous {
                vs: vs.to_string(),
                ip,
                known: list(on_ip),
            });
        }
        on_ip
    } else {
        return Err(MemberError::BadAddress {
            text: text.to_string(),
        });
    };
    match wanted.first() {
        Some(a) => Ok((v.name.clone(), *a)),
        None => Err(MemberError::NoRealServer {
            vs: vs.to_string(),
            rs: text.to_string(),
            known: list(addrs),
        }),
    }
}

fn configured(vs: &VirtualServer, addr: SocketAddr) -> bool {
    vs.real_servers
        .iter()
        .any(|r| SocketAddr::new(r.address, r.port) == addr)
}

impl Pool {
    /// Drains `member`; false if it was drained already.
    pub fn drain(&mut self, member: PoolMember) -> bool {
        self.drained.insert(member)
    }

    /// Ends the drain of `member`; false if it was not drained.
    pub fn undrain(&mut self, member: &PoolMember) -> bool {
        self.drained.remove(member)
    }

    pub fn is_drained(&self, member: &PoolMember) -> bool {
        self.drained.contains(member)
    }

    pub fn drained(&self) -> &BTreeSet<PoolMember> {
        &self.drained
    }

    pub fn leaving(&self) -> &BTreeMap<PoolMember, Leaving> {
        &self.leaving
    }

    /// What the desired table is narrowed by, with `down` from the checks.
    pub fn inputs(&self, down: BTreeSet<PoolMember>) -> PoolInputs {
        PoolInputs {
            down,
            drained: self.drained.clone(),
            leaving: self
                .leaving
                .iter()
                .map(|(m, l)| (m.clone(), l.settings))
                .collect(),
        }
    }

    /// The (service, destination) of each leaving server, whose active
    /// connections decide when it goes.
    pub fn leaving_targets(&self) -> Vec<(PoolMember, ServiceKey, DestKey)> {
        self.leaving
            .iter()
            .map(|(m, l)| {
                (
                    m.clone(),
                    l.service,
                    DestKey {
                        addr: m.1.ip(),
                        port: m.1.port(),
                    },
                )
            })
            .collect()
    }

    /// A reload from `old` (whose pools compiled to `old_desired`) to
    /// `new`, at `now`.
    pub fn reload(
        &mut self,
        old: &Config,
        old_desired: &DesiredTable,
        new: &Config,
        now: Duration,
    ) -> ReloadChanges {
        let mut changes = ReloadChanges::default();
        let new_vs = |name: &str| new.virtual_servers.iter().find(|v| v.name == name);

        // Leaving servers the new config lists again, or whose service
        // goes away as a whole.
        self.leaving.retain(|member, l| match new_vs(&member.0) {
            Some(v) if v.key == l.service && configured(v, member.1) => {
                changes.returned.push(member.clone());
                false
            }
            Some(v) if v.key == l.service => true,
            _ => {
                changes.dropped_leaving.push(member.clone());
                false
            }
        });

        // Real servers the reload removes from a virtual server that
        // stays (same name, same address).
        for ov in &old.virtual_servers {
            let Some(nv) = new_vs(&ov.name) else { continue };
            if nv.key != ov.key {
                continue;
            }
            let Some(in_kernel) = old_desired.services.get(&ov.key) else {
                continue;
            };
            for rs in &ov.real_servers {
                let addr = SocketAddr::new(rs.address, rs.port);
                if configured(nv, addr) {
                    continue;
                }
                let key = DestKey {
                    addr: rs.address,
                    port: rs.port,
                };
                let Some(settings) = in_kernel.dests.get(&key) else {
                    continue;
                };
                let member = (ov.name.clone(), addr);
                if self.leaving.contains_key(&member) {
                    continue;
                }
                self.leaving.insert(
                    member.clone(),
                    Leaving {
                        service: ov.key,
                        settings: *settings,
                        since: now,
                        deadline: now.saturating_add(nv.drain_timeout),
                    },
                );
                changes.started_leaving.push(member);
            }
        }

        self.drained.retain(|member| {
            let keep = new_vs(&member.0).is_some_and(|v| configured(v, member.1));
            if !keep {
                changes.forgotten_drains.push(member.clone());
            }
            keep
        });
        changes
    }

    /// Deletes the leaving servers that are done at `now`: no active
    /// connection left (`active` has a 0 for them), or past their
    /// deadline. A server missing from `active` (its count could not be
    /// read) goes only at its deadline.
    pub fn finish(
        &mut self,
        now: Duration,
        active: &BTreeMap<PoolMember, u64>,
    ) -> Vec<(PoolMember, Finished)> {
        let mut done = Vec::new();
        self.leaving.retain(|member, l| {
            let count = active.get(member).copied();
            let finished = match count {
                Some(0) => Some(Finished::NoConnections),
                _ if now >= l.deadline => Some(Finished::Timeout { active: count }),
                _ => None,
            };
            match finished {
                Some(f) => {
                    done.push((member.clone(), f));
                    false
                }
                None => true,
            }
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::desired_table_with;

    fn config(servers: &[&str], extra: &str) -> Config {
        let mut text = format!(
            "[global]\nrouter_id = \"lb\"\n[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.1:80\"\ndrain_timeout = \"30s\"\n{extra}\n"
        );
        for s in servers {
            text.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{s}\"\nweight = 3\n"
            ));
        }
        crate::config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn m(rs: &str) -> PoolMember {
        ("web".into(), rs.parse().unwrap())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn drain_names_a_configured_real_server_or_says_why_not() {
        let c = config(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.2:81"], "");
        assert_eq!(resolve(&c, "web", "10.0.0.1:80"), Ok(m("10.0.0.1:80")));
        assert_eq!(resolve(&c, "web", "10.0.0.1"), Ok(m("10.0.0.1:80")));
        let e = resolve(&c, "api", "10.0.0.1:80").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no virtual server named \"api\" (configured: \"web\")"
        );
        let e = resolve(&c, "web", "10.0.0.9:80").unwrap_err();
        assert_eq!(
            e.to_string(),
            "virtual server \"web\" has no real server 10.0.0.9:80 (it has: 10.0.0.1:80, 10.0.0.2:80, 10.0.0.2:81)"
        );
        assert!(matches!(
            resolve(&c, "web", "10.0.0.2"),
            Err(MemberError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve(&c, "web", "not-an-address"),
            Err(MemberError::BadAddress { .. })
        ));
        assert!(resolve(&c, "web", "").is_err());
    }

    #[test]
    fn drains_survive_reloads_while_the_server_is_configured() {
        let c1 = config(&["10.0.0.1:80", "10.0.0.2:80"], "");
        let mut pool = Pool::default();
        assert!(pool.drain(m("10.0.0.1:80")));
        assert!(!pool.drain(m("10.0.0.1:80")), "already drained");
        let (t, _) = desired_table_with(&c1, &pool.inputs(BTreeSet::new()));
        // Same servers, another setting changed: the drain stays.
        let c2 = config(&["10.0.0.1:80", "10.0.0.2:80"], "scheduler = \"rr\"");
        let ch = pool.reload(&c1, &t, &c2, secs(10));
        assert_eq!(ch, ReloadChanges::default());
        assert!(pool.is_drained(&m("10.0.0.1:80")));
        let (t2, _) = desired_table_with(&c2, &pool.inputs(BTreeSet::new()));
        let w: Vec<i32> = t2
            .services
            .values()
            .next()
            .unwrap()
            .dests
            .values()
            .map(|d| d.weight)
            .collect();
        assert_eq!(w, [0, 3]);
        assert!(pool.undrain(&m("10.0.0.1:80")));
        assert!(!pool.undrain(&m("10.0.0.1:80")));
    }

    #[test]
    fn a_removed_server_leaves_at_weight_zero_until_its_connections_end() {
        let c1 = config(&["10.0.0.1:80", "10.0.0.2:80"], "");
        let mut pool = Pool::default();
        pool.drain(m("10.0.0.2:80"));
        let (t1, _) = desired_table_with(&c1, &pool.inputs(BTreeSet::new()));
        let c2 = config(&["10.0.0.1:80"], "");
        let ch = pool.reload(&c1, &t1, &c2, secs(100));
        assert_eq!(ch.started_leaving, [m("10.0.0.2:80")]);
        assert_eq!(ch.forgotten_drains, [m("10.0.0.2:80")]);
        let l = &pool.leaving()[&m("10.0.0.2:80")];
        assert_eq!((l.since, l.deadline), (secs(100), secs(130)));
        assert_eq!(
            l.settings.weight, 0,
            "it was drained: the kernel held weight 0"
        );
        let (t2, _) = desired_table_with(&c2, &pool.inputs(BTreeSet::new()));
        let dests: Vec<String> = t2
            .services
            .values()
            .next()
            .unwrap()
            .dests
            .iter()
            .map(|(k, d)| format!("{}:{}={}", k.addr, k.port, d.weight))
            .collect();
        assert_eq!(dests, ["10.0.0.1:80=3", "10.0.0.2:80=0"]);
        assert_eq!(
            pool.leaving_targets(),
            [(
                m("10.0.0.2:80"),
                c1.virtual_servers[0].key,
                DestKey {
                    addr: "10.0.0.2".parse().unwrap(),
                    port: 80
                }
            )]
        );

        // Still 2 active connections: stays. Unknown count: stays.
        let active: BTreeMap<PoolMember, u64> = [(m("10.0.0.2:80"), 2)].into();
        assert!(pool.finish(secs(110), &active).is_empty());
        assert!(pool.finish(secs(111), &BTreeMap::new()).is_empty());
        // Connections done: deleted.
        let active: BTreeMap<PoolMember, u64> = [(m("10.0.0.2:80"), 0)].into();
        assert_eq!(
            pool.finish(secs(112), &active),
            [(m("10.0.0.2:80"), Finished::NoConnections)]
        );
        assert!(pool.leaving().is_empty());
        let (t3, _) = desired_table_with(&c2, &pool.inputs(BTreeSet::new()));
        assert_eq!(t3.dest_count(), 1);
    }

    #[test]
    fn drain_timeout_ends_a_leaving_server_with_connections() {
        let c1 = config(&["10.0.0.1:80", "10.0.0.2:80"], "");
        let mut pool = Pool::default();
        let (t1, _) = desired_table_with(&c1, &PoolInputs::default());
        let c2 = config(&["10.0.0.1:80"], "");
        pool.reload(&c1, &t1, &c2, secs(0));
        let active: BTreeMap<PoolMember, u64> = [(m("10.0.0.2:80"), 5)].into();
        assert!(pool.finish(secs(29), &active).is_empty());
        assert_eq!(
            pool.finish(secs(30), &active),
            [(m("10.0.0.2:80"), Finished::Timeout { active: Some(5) })]
        );
    }

    #[test]
    fn leaving_ends_when_the_server_returns_or_its_service_goes() {
        let c1 = config(&["10.0.0.1:80", "10.0.0.2:80"], "");
        let (t1, _) = desired_table_with(&c1, &PoolInputs::default());
        let c2 = config(&["10.0.0.1:80"], "");
        let mut pool = Pool::default();
        pool.reload(&c1, &t1, &c2, secs(0));
        let (t2, _) = desired_table_with(&c2, &pool.inputs(BTreeSet::new()));
        // Listed again: back at its configured weight.
        let ch = pool.reload(&c2, &t2, &c1, secs(1));
        assert_eq!(ch.returned, [m("10.0.0.2:80")]);
        assert!(pool.leaving().is_empty());

        // The virtual server moves to another address: its service is
        // replaced as a whole, nothing leaves from it.
        pool.reload(&c1, &t1, &c2, secs(2));
        assert_eq!(pool.leaving().len(), 1);
        let (t2, _) = desired_table_with(&c2, &pool.inputs(BTreeSet::new()));
        let moved = crate::config::parse(
            "[global]\nrouter_id = \"lb\"\n[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.7:80\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n",
            "t.toml",
        )
        .unwrap();
        let ch = pool.reload(&c2, &t2, &moved, secs(3));
        assert_eq!(ch.dropped_leaving, [m("10.0.0.2:80")]);
        assert!(ch.started_leaving.is_empty());
        assert!(pool.leaving().is_empty());
    }

    #[test]
    fn a_server_that_was_down_and_removed_does_not_come_back_to_leave() {
        let c1 = config(&["10.0.0.1:80", "10.0.0.2:80"], "");
        let down: BTreeSet<PoolMember> = [m("10.0.0.2:80")].into();
        let (t1, _) = desired_table_with(
            &c1,
            &PoolInputs {
                down,
                ..PoolInputs::default()
            },
        );
        let c2 = config(&["10.0.0.1:80"], "");
        let mut pool = Pool::default();
        let ch = pool.reload(&c1, &t1, &c2, secs(0));
        assert!(ch.started_leaving.is_empty());
        assert!(pool.leaving().is_empty());
    }
}
