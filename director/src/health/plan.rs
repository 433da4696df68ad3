//! Config -> the checks to run, and check states -> the real servers that
//! are down. Pure functions, no runner, no clock.
//!
//! - **Fan-out.** Every real server of every virtual server (a
//!   [`PoolMember`]) has a list of [`CheckSpec`]s (its own `health`, else
//!   its virtual server's; all must pass). Equal specs are one running
//!   check (the runner dedups them), so [`CheckPlan::users`] maps each
//!   distinct spec back to every member whose health it decides: N virtual
//!   servers sharing a real server and a check run one probe, and one
//!   transition of it moves that server in all N pools.
//! - **Down.** A member is down when ANY of its checks is down
//!   ([`CheckPlan::down`]). A check that is not running (the runner refused
//!   its spec, e.g. a `ca_file` that vanished after validation) counts as
//!   down: a check that cannot run cannot vouch for the server.
//! - **Where a new check starts** ([`CheckPlan::wanted`]). At daemon start
//!   every check starts up: the servers are already in the kernel table the
//!   daemon adopts, and a restart must not empty the pools while `rise`
//!   probes run (keepalived's default too). At a reload a check the runner
//!   does not run yet starts up only if one of its members was configured
//!   and up before the reload (its check config changed, or it joined
//!   another virtual server); a real server the reload adds starts down, so
//!   it must pass `rise` probes before it takes traffic. Checks already
//!   running keep their state and counts (the runner's `set`).

use crate::config::Config;
use crate::desired::PoolMember;
use healthcheck::{CheckSpec, Health};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Which checks decide which real servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckPlan {
    /// Every configured real server and its checks, in config order
    /// (empty: not checked, always up).
    pub members: BTreeMap<PoolMember, Vec<CheckSpec>>,
    /// Each distinct check and the members it decides, sorted.
    pub users: BTreeMap<CheckSpec, Vec<PoolMember>>,
}

/// How the reload that builds a new plan found the pools, for
/// [`CheckPlan::wanted`]. `None` there means daemon start.
#[derive(Debug, Clone, Default)]
pub struct Before<'a> {
    /// The previous plan.
    pub plan: Option<&'a CheckPlan>,
    /// Members down before the reload.
    pub down: Option<&'a BTreeSet<PoolMember>>,
}

impl CheckPlan {
    pub fn new(config: &Config) -> CheckPlan {
        let mut plan = CheckPlan::default();
        for vs in &config.virtual_servers {
            for rs in &vs.real_servers {
                let member = (vs.name.clone(), SocketAddr::new(rs.address, rs.port));
                let checks: Vec<CheckSpec> = rs
                    .checks(vs)
                    .iter()
                    .map(|h| h.check_for(rs.address, rs.port))
                    .collect();
                for spec in &checks {
                    let users = plan.users.entry(spec.clone()).or_default();
                    if !users.contains(&member) {
                        users.push(member.clone());
                    }
                }
                plan.members.insert(member, checks);
            }
        }
        for users in plan.users.values_mut() {
            users.sort();
        }
        plan
    }

    /// Distinct checks.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check uses: one per (member, check) pair, what keepalived would run.
    pub fn uses(&self) -> usize {
        self.members.values().map(Vec::len).sum()
    }

    /// The members a transition of `spec` can move.
    pub fn users_of(&self, spec: &CheckSpec) -> &[PoolMember] {
        self.users.get(spec).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The set for `Runner::set`: every distinct check with the state it
    /// starts in if the runner does not run it yet (see the module docs).
    pub fn wanted(&self, before: &Before<'_>) -> Vec<(CheckSpec, Health)> {
        self.users
            .iter()
            .map(|(spec, users)| {
                let initial = match before.plan {
                    None => Health::Up,
                    Some(old) => {
                        let was_up = |m: &PoolMember| {
                            old.members.contains_key(m)
                                && !before.down.is_some_and(|d| d.contains(m))
                        };
                        if users.iter().any(was_up) {
                            Health::Up
                        } else {
                            Health::Down
                        }
                    }
                };
                (spec.clone(), initial)
            })
            .collect()
    }

    /// Members with at least one check down (or not running: `state`
    /// answers `None`).
    pub fn down(&self, state: impl Fn(&CheckSpec) -> Option<Health>) -> BTreeSet<PoolMember> {
        let mut down = BTreeSet::new();
        let states: BTreeMap<&CheckSpec, Health> = self
            .users
            .keys()
            .map(|s| (s, state(s).unwrap_or(Health::Down)))
            .collect();
        for (member, checks) in &self.members {
            if checks
                .iter()
                .any(|c| states.get(c).copied().unwrap_or(Health::Down) == Health::Down)
            {
                down.insert(member.clone());
            }
        }
        down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(&format!("[global]\nrouter_id = \"lb\"\n{text}"), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn m(vs: &str, rs: &str) -> PoolMember {
        (vs.to_string(), rs.parse().unwrap())
    }

    /// Two virtual servers share real server .1 with the same check; .2
    /// has its own port override; .3 is unchecked; .4 has two checks.
    const TWO_VS: &str = r#"
[[virtual_server]]
name = "web"
address = "192.0.2.1:80"
health = { kind = "tcp", interval = "1s", timeout = "500ms" }
[[virtual_server.real_server]]
address = "10.0.0.1:80"
[[virtual_server.real_server]]
address = "10.0.0.2:80"
health = { kind = "tcp", port = 8080, interval = "1s", timeout = "500ms" }
[[virtual_server.real_server]]
address = "10.0.0.3:80"
health = []
[[virtual_server.real_server]]
address = "10.0.0.4:80"
health = [{ kind = "tcp", interval = "1s", timeout = "500ms" }, { kind = "http", path = "/ready", interval = "1s", timeout = "500ms" }]

[[virtual_server]]
name = "web2"
address = "192.0.2.2:80"
health = { kind = "tcp", interval = "1s", timeout = "500ms" }
[[virtual_server.real_server]]
address = "10.0.0.1:80"
"#;

    #[test]
    fn identical_checks_run_once_and_fan_out() {
        let plan = CheckPlan::new(&config(TWO_VS));
        assert_eq!(plan.members.len(), 5);
        // .1 (shared by web and web2), .2:8080, .4 tcp, .4 http.
        assert_eq!(plan.len(), 4);
        assert_eq!(plan.uses(), 5);
        let shared = &plan.members[&m("web", "10.0.0.1:80")][0];
        assert_eq!(shared, &plan.members[&m("web2", "10.0.0.1:80")][0]);
        assert_eq!(
            plan.users_of(shared),
            [m("web", "10.0.0.1:80"), m("web2", "10.0.0.1:80")]
        );
        let own = &plan.members[&m("web", "10.0.0.2:80")][0];
        assert_eq!(own.target, "10.0.0.2:8080".parse().unwrap());
        assert!(plan.members[&m("web", "10.0.0.3:80")].is_empty());
        assert_eq!(plan.members[&m("web", "10.0.0.4:80")].len(), 2);
    }

    #[test]
    fn any_down_check_takes_its_members_down() {
        let plan = CheckPlan::new(&config(TWO_VS));
        let all_up = plan.down(|_| Some(Health::Up));
        assert!(all_up.is_empty());
        // The shared check down: .1 leaves both pools.
        let shared = plan.members[&m("web", "10.0.0.1:80")][0].clone();
        let down = plan.down(|s| {
            Some(if *s == shared {
                Health::Down
            } else {
                Health::Up
            })
        });
        assert_eq!(
            down.into_iter().collect::<Vec<_>>(),
            [m("web", "10.0.0.1:80"), m("web2", "10.0.0.1:80")]
        );
        // One of .4's two checks down is enough.
        let http = plan.members[&m("web", "10.0.0.4:80")][1].clone();
        let down = plan.down(|s| Some(if *s == http { Health::Down } else { Health::Up }));
        assert_eq!(
            down.into_iter().collect::<Vec<_>>(),
            [m("web", "10.0.0.4:80")]
        );
        // A check that is not running counts as down; unchecked .3 never is.
        let down = plan.down(|_| None);
        assert_eq!(down.len(), 4);
        assert!(!down.contains(&m("web", "10.0.0.3:80")));
    }

    #[test]
    fn checks_start_up_at_startup_and_down_for_servers_a_reload_adds() {
        let old = CheckPlan::new(&config(TWO_VS));
        let start = old.wanted(&Before::default());
        assert!(start.iter().all(|(_, h)| *h == Health::Up));
        assert_eq!(start.len(), 4);

        // Reload: .2's check changed (same member, new spec), while .4
        // was down before.
        let text = TWO_VS.replace("port = 8080,", "port = 8081,");
        let new = CheckPlan::new(&config(&text));
        let down_before: BTreeSet<PoolMember> = [m("web", "10.0.0.4:80")].into();
        let wanted: BTreeMap<CheckSpec, Health> = new
            .wanted(&Before {
                plan: Some(&old),
                down: Some(&down_before),
            })
            .into_iter()
            .collect();
        let state_of = |vs: &str, rs: &str, i: usize| {
            let spec = &new.members[&m(vs, rs)][i];
            wanted[spec]
        };
        assert_eq!(
            state_of("web", "10.0.0.2:80", 0),
            Health::Up,
            "changed check of an up server"
        );
        assert_eq!(
            state_of("web", "10.0.0.4:80", 1),
            Health::Down,
            "a server that was down"
        );
        assert_eq!(state_of("web", "10.0.0.1:80", 0), Health::Up);
        // web2's .1 check is the one web's .1 uses: running already, up.
        assert_eq!(state_of("web2", "10.0.0.1:80", 0), Health::Up);
    }

    #[test]
    fn a_real_server_added_by_reload_starts_down() {
        let old = CheckPlan::new(&config(TWO_VS));
        let text = format!(
            "{TWO_VS}\n[[virtual_server]]\nname = \"new\"\naddress = \"192.0.2.9:80\"\nhealth = {{ kind = \"tcp\", interval = \"2s\", timeout = \"1s\" }}\n[[virtual_server.real_server]]\naddress = \"10.0.0.9:80\"\n"
        );
        let new = CheckPlan::new(&config(&text));
        let wanted: BTreeMap<CheckSpec, Health> = new
            .wanted(&Before {
                plan: Some(&old),
                down: None,
            })
            .into_iter()
            .collect();
        let spec = &new.members[&m("new", "10.0.0.9:80")][0];
        assert_eq!(wanted[spec], Health::Down);
    }
}
