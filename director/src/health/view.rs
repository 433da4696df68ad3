//! `directorctl health`: what the daemon answers, built by a pure function
//! from the config, the check plan, the runner's check states, the drains
//! and leaving servers, and the desired table (the weights the kernel is
//! given). The JSON shape is the [`HealthReply`] serde form; field names
//! are stable, new fields may be added.

use super::plan::CheckPlan;
use super::pool::Pool;
use crate::config::{Config, OnDown, OnDownConnections};
use crate::desired::{DesiredTable, PoolMember, PoolStatus};
use crate::model::DestKey;
use healthcheck::runner::CheckStatus;
use healthcheck::{CheckSpec, Failure, Health};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    /// "ipvs" or "nftables".
    pub dataplane: String,
    /// Distinct checks running (each probes once per interval).
    pub checks_running: usize,
    /// (real server, check) pairs they serve: what would run without
    /// deduplication.
    pub check_uses: usize,
    /// Checks stale now (see `health::is_stale`).
    pub checks_stale: usize,
    pub virtual_servers: Vec<VirtualServerHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualServerHealth {
    pub name: String,
    /// As `ipvsadm` names it: `TCP 192.0.2.1:80`, `FWM 100`.
    pub service: String,
    pub on_down: OnDown,
    pub on_down_connections: OnDownConnections,
    pub sorry_server: Option<SocketAddr>,
    #[serde(flatten)]
    pub pool: PoolStatus,
    /// Configured real servers in config order, then leaving ones.
    pub real_servers: Vec<RealServerHealth>,
}

/// What a real server is doing now, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Taking new connections.
    Serving,
    /// Its checks failed (removed, or weight 0 with `on_down = inhibit`).
    Down,
    /// Drained by the operator: weight 0, connections kept.
    Drained,
    /// Removed from the config, finishing its connections at weight 0.
    Leaving,
    /// Healthy, but the virtual server is below quorum and new connections
    /// go to the sorry server.
    Standby,
    /// Configured with weight 0.
    Quiesced,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Serving => "serving",
            ServerState::Down => "down",
            ServerState::Drained => "drained",
            ServerState::Leaving => "leaving",
            ServerState::Standby => "standby",
            ServerState::Quiesced => "quiesced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealServerHealth {
    pub address: SocketAddr,
    pub state: ServerState,
    /// What its checks say (`up` when it has none).
    pub health: Health,
    /// Configured weight (for a leaving server: the one it had).
    pub weight: i32,
    /// Weight given to the kernel now; `None`: not in the kernel table.
    pub kernel_weight: Option<i32>,
    pub drained: bool,
    pub leaving: Option<LeavingView>,
    /// Its checks in config order; empty: not checked.
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeavingView {
    pub since_unix: f64,
    /// Deleted then even with connections left (`drain_timeout`).
    pub deadline_unix: f64,
    /// Active connections at the last count; `None` before the first.
    pub active_connections: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    /// `tcp`, `http`, `https`, `script`.
    pub kind: String,
    /// Kind, target and what else tells it apart (`health::describe`).
    pub check: String,
    pub target: SocketAddr,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub rise: u32,
    pub fall: u32,
    /// `None`: the check is not running (see `error`).
    pub state: Option<Health>,
    /// `"ok"` or the failure reason of the last probe; `None` before it.
    pub last_result: Option<String>,
    /// The last failure, structured (`{"failure":"timeout","detail":{..}}`),
    /// if the last probe failed.
    pub last_failure: Option<Failure>,
    /// Its kind as the metrics' `outcome` label names it (`timeout`,
    /// `refused`, `tls_error`, ...).
    pub last_failure_kind: Option<String>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_check_unix: Option<f64>,
    /// Last up/down change; `None`: still in the state it started in.
    pub last_change_unix: Option<f64>,
    pub latency_seconds: Option<f64>,
    /// Probes completed.
    pub rounds: u64,
    pub stale: bool,
    /// Restarts by the watchdog.
    pub restarts: u64,
    /// Why the check is not running.
    pub error: Option<String>,
}

/// Everything [`build`] reads.
pub struct ViewInput<'a> {
    pub dataplane: &'a str,
    pub config: &'a Config,
    pub plan: &'a CheckPlan,
    pub pool: &'a Pool,
    pub down: &'a std::collections::BTreeSet<PoolMember>,
    pub desired: &'a DesiredTable,
    pub pools: &'a BTreeMap<String, PoolStatus>,
    pub checks: &'a [CheckStatus],
    pub spec_errors: &'a BTreeMap<CheckSpec, String>,
    pub leaving_active: &'a BTreeMap<PoolMember, u64>,
    /// Runner clock now, and its mapping to Unix seconds.
    pub now: Duration,
    pub unix: &'a dyn Fn(Duration) -> f64,
}

fn check_view(
    spec: &CheckSpec,
    st: Option<&CheckStatus>,
    error: Option<&String>,
    now: Duration,
    unix: &dyn Fn(Duration) -> f64,
) -> CheckView {
    CheckView {
        kind: spec.probe.kind().to_string(),
        check: super::describe(spec),
        target: spec.target,
        interval_seconds: spec.interval.as_secs_f64(),
        timeout_seconds: spec.timeout.as_secs_f64(),
        rise: spec.rise,
        fall: spec.fall,
        state: st.map(|s| s.state),
        last_result: st.and_then(|s| {
            s.last_failure.as_ref().map(|f| match f {
                None => "ok".to_string(),
                Some(f) => f.to_string(),
            })
        }),
        last_failure: st.and_then(|s| s.last_failure.clone().flatten()),
        last_failure_kind: st
            .and_then(|s| s.last_failure.as_ref())
            .and_then(|f| f.as_ref())
            .map(|f| f.kind().to_string()),
        consecutive_successes: st.map_or(0, |s| s.consecutive_successes),
        consecutive_failures: st.map_or(0, |s| s.consecutive_failures),
        last_check_unix: st.and_then(|s| s.last_completed).map(unix),
        last_change_unix: st.and_then(|s| s.last_change).map(unix),
        latency_seconds: st.and_then(|s| s.last_latency).map(|d| d.as_secs_f64()),
        rounds: st.map_or(0, |s| s.rounds),
        stale: st.is_some_and(|s| super::is_stale(s, now)),
        restarts: st.map_or(0, |s| s.restarts),
        error: error.cloned().or_else(|| {
            st.is_none()
                .then(|| "not running (the daemon is applying a reload)".to_string())
        }),
    }
}

/// The reply for `directorctl health`.
pub fn build(input: &ViewInput<'_>) -> HealthReply {
    let by_spec: BTreeMap<&CheckSpec, &CheckStatus> =
        input.checks.iter().map(|c| (&c.spec, c)).collect();
    let mut vss = Vec::new();
    for vs in &input.config.virtual_servers {
        let pool = input.pools.get(&vs.name).cloned().unwrap_or_default();
        let kernel = input.desired.services.get(&vs.key);
        let kernel_weight = |addr: SocketAddr| {
            kernel
                .and_then(|s| {
                    s.dests.get(&DestKey {
                        addr: addr.ip(),
                        port: addr.port(),
                    })
                })
                .map(|d| d.weight)
        };
        let mut real_servers = Vec::new();
        for rs in &vs.real_servers {
            let address = SocketAddr::new(rs.address, rs.port);
            let member = (vs.name.clone(), address);
            let specs = input.plan.members.get(&member).cloned().unwrap_or_default();
            let checks: Vec<CheckView> = specs
                .iter()
                .map(|s| {
                    check_view(
                        s,
                        by_spec.get(s).copied(),
                        input.spec_errors.get(s),
                        input.now,
                        input.unix,
                    )
                })
                .collect();
            let down = input.down.contains(&member);
            let drained = input.pool.is_drained(&member);
            let state = if down {
                ServerState::Down
            } else if drained {
                ServerState::Drained
            } else if pool.sorry_active {
                ServerState::Standby
            } else if rs.weight == 0 {
                ServerState::Quiesced
            } else {
                ServerState::Serving
            };
            real_servers.push(RealServerHealth {
                address,
                state,
                health: if down { Health::Down } else { Health::Up },
                weight: rs.weight,
                kernel_weight: kernel_weight(address),
                drained,
                leaving: None,
                checks,
            });
        }
        for (member, l) in input.pool.leaving() {
            if member.0 != vs.name {
                continue;
            }
            real_servers.push(RealServerHealth {
                address: member.1,
                state: ServerState::Leaving,
                health: Health::Up,
                weight: l.settings.weight,
                kernel_weight: kernel_weight(member.1),
                drained: false,
                leaving: Some(LeavingView {
                    since_unix: (input.unix)(l.since),
                    deadline_unix: (input.unix)(l.deadline),
                    active_connections: input.leaving_active.get(member).copied(),
                }),
                checks: Vec::new(),
            });
        }
        vss.push(VirtualServerHealth {
            name: vs.name.clone(),
            service: vs.key.to_string(),
            on_down: vs.on_down,
            on_down_connections: vs.on_down_connections,
            sorry_server: vs.sorry_server,
            pool,
            real_servers,
        });
    }
    HealthReply {
        dataplane: input.dataplane.to_string(),
        checks_running: input.checks.len(),
        check_uses: input.plan.uses(),
        checks_stale: input
            .checks
            .iter()
            .filter(|c| super::is_stale(c, input.now))
            .count(),
        virtual_servers: vss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::desired_table_with;
    use std::collections::BTreeSet;

    const CONFIG: &str = r#"[global]
router_id = "lb"
[[virtual_server]]
name = "web"
address = "192.0.2.1:80"
quorum = 2
sorry_server = "10.0.0.99:80"
health = { kind = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 3 }
[[virtual_server.real_server]]
address = "10.0.0.1:80"
weight = 2
[[virtual_server.real_server]]
address = "10.0.0.2:80"
[[virtual_server.real_server]]
address = "10.0.0.3:80"
health = []
"#;

    fn m(rs: &str) -> PoolMember {
        ("web".into(), rs.parse().unwrap())
    }

    #[test]
    fn reply_shows_pools_servers_and_checks() {
        let config = crate::config::parse(CONFIG, "t.toml").unwrap();
        let plan = CheckPlan::new(&config);
        let mut pool = Pool::default();
        pool.drain(m("10.0.0.3:80"));
        let spec1 = plan.members[&m("10.0.0.1:80")][0].clone();
        let spec2 = plan.members[&m("10.0.0.2:80")][0].clone();
        let down: BTreeSet<PoolMember> = [m("10.0.0.2:80")].into();
        let inputs = pool.inputs(down.clone());
        let (desired, pools) = desired_table_with(&config, &inputs);
        let st1 = CheckStatus {
            spec: spec1.clone(),
            state: Health::Up,
            consecutive_successes: 7,
            consecutive_failures: 0,
            last_failure: Some(None),
            last_latency: Some(Duration::from_micros(400)),
            last_completed: Some(Duration::from_secs(100)),
            last_change: None,
            rounds: 7,
            stale: false,
            restarts: 0,
        };
        let st2 = CheckStatus {
            spec: spec2.clone(),
            state: Health::Down,
            consecutive_successes: 0,
            consecutive_failures: 4,
            last_failure: Some(Some(Failure::Refused)),
            last_latency: Some(Duration::from_micros(200)),
            last_completed: Some(Duration::from_secs(100)),
            last_change: Some(Duration::from_secs(98)),
            rounds: 9,
            stale: false,
            restarts: 1,
        };
        let unix = |d: Duration| 1_000_000.0 + d.as_secs_f64();
        let reply = build(&ViewInput {
            dataplane: "nftables",
            config: &config,
            plan: &plan,
            pool: &pool,
            down: &down,
            desired: &desired,
            pools: &pools,
            checks: &[st1, st2],
            spec_errors: &BTreeMap::new(),
            leaving_active: &BTreeMap::new(),
            now: Duration::from_secs(101),
            unix: &unix,
        });
        assert_eq!(
            (reply.checks_running, reply.check_uses, reply.checks_stale),
            (2, 2, 0)
        );
        let vs = &reply.virtual_servers[0];
        assert_eq!(vs.service, "TCP 192.0.2.1:80");
        // .1 up, .2 down, .3 drained: 1 serving < quorum 2 -> sorry server.
        assert_eq!((vs.pool.up, vs.pool.total, vs.pool.serving), (2, 3, 1));
        assert!(vs.pool.sorry_active);
        let states: Vec<ServerState> = vs.real_servers.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                ServerState::Standby,
                ServerState::Down,
                ServerState::Drained
            ]
        );
        let r1 = &vs.real_servers[0];
        assert_eq!((r1.weight, r1.kernel_weight), (2, Some(0)));
        let c1 = &r1.checks[0];
        assert_eq!(c1.check, "tcp 10.0.0.1:80");
        assert_eq!(c1.last_result.as_deref(), Some("ok"));
        assert_eq!(c1.last_change_unix, None);
        let r2 = &vs.real_servers[1];
        assert_eq!(r2.kernel_weight, None, "removed");
        let c2 = &r2.checks[0];
        assert_eq!(c2.last_result.as_deref(), Some("connection refused"));
        assert_eq!(c2.last_failure, Some(Failure::Refused));
        assert_eq!(c2.last_change_unix, Some(1_000_098.0));
        assert_eq!((c2.consecutive_failures, c2.restarts), (4, 1));
        assert!(vs.real_servers[2].checks.is_empty());
        // The JSON names fields as documented.
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["virtual_servers"][0]["quorum_met"], false);
        assert_eq!(
            json["virtual_servers"][0]["real_servers"][1]["state"],
            "down"
        );
        assert_eq!(
            json["virtual_servers"][0]["real_servers"][1]["checks"][0]["last_failure"]["failure"],
            "refused"
        );
        assert_eq!(
            json["virtual_servers"][0]["real_servers"][1]["checks"][0]["last_failure_kind"],
            "refused"
        );
        let back: HealthReply = serde_json::from_value(json).unwrap();
        assert_eq!(back, reply);
    }
}
