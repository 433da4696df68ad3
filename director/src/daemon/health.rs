//! The daemon side of health checks: results in, pools out.
//!
//! - [`health_events`] reads every probe result of the runner (its own
//!   runtime, `crate::health`): metrics for each, and on a transition the
//!   pools are recomputed ([`recompute`]: check states -> down real servers
//!   -> `desired_table_with`), the real servers that went down get their
//!   connections queued for cleanup, and a pass is triggered at once.
//! - The pass takes the queued cleanups with the desired table, in one
//!   lock: the kernel worker removes the server from the selection first,
//!   then resets its connections, so no new connection can land on it
//!   between the two. A queued cleanup of a server that came back up
//!   before its pass is dropped.
//! - [`watch_leaving`] counts the active connections of real servers a
//!   reload removed and deletes them when done or at `drain_timeout`.
//! - [`drain`] and [`health_reply`] answer `directorctl drain|undrain` and
//!   `directorctl health`.

use super::{ask_kernel, KernelCmd, Shared, State, Trigger};
use crate::config::OnDownConnections;
use crate::control::{DrainReply, Response};
use crate::dataplane::ConnectionReset;
use crate::desired::{desired_table_with, PoolMember};
use crate::health::{self, describe, pool, view};
use crate::metrics::Metrics;
use crate::model::{DestKey, ServiceKey};
use healthcheck::runner::{Event, Probed};
use healthcheck::Transition;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// A dead real server whose established connections the next pass cleans
/// up (`on_down_connections = "reset"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingReset {
    pub member: PoolMember,
    pub service: ServiceKey,
    pub dest: DestKey,
    /// The check whose transition took it down.
    pub check: String,
    /// When the down decision was made (runner clock).
    pub decided: Duration,
}

/// What [`recompute`] changed about the down set.
pub(super) struct Recomputed {
    pub went_down: Vec<PoolMember>,
    pub came_up: Vec<PoolMember>,
}

/// Re-derives the down set, the pool inputs, the desired table and the
/// pool status from the current check states, drains and leaving servers.
pub(super) fn recompute(
    s: &mut State,
    runner: &health::HealthRunner,
    metrics: &Metrics,
) -> Recomputed {
    let errors = &s.spec_errors;
    let down = s.plan.down(|spec| {
        if errors.contains_key(spec) {
            None
        } else {
            runner.health(spec)
        }
    });
    let old_down = std::mem::take(&mut s.inputs.down);
    s.inputs = s.pool.inputs(down);
    let (desired, pools) = desired_table_with(&s.config, &s.inputs);
    for (name, p) in &pools {
        let Some(old) = s.pools.get(name) else {
            continue;
        };
        if old.quorum_met != p.quorum_met {
            let (event, level_warn) = if p.quorum_met {
                ("virtual_server_quorum_met", false)
            } else {
                ("virtual_server_quorum_lost", true)
            };
            if level_warn {
                warn!(event, virtual_server = %name, serving = p.serving, quorum = p.quorum, sorry_active = p.sorry_active);
            } else {
                info!(event, virtual_server = %name, serving = p.serving, quorum = p.quorum, sorry_active = p.sorry_active);
            }
        }
    }
    s.desired = Arc::new(desired);
    s.pools = pools;
    metrics.health.pools(&s.pools);
    metrics
        .health
        .checks
        .set(i64::try_from(s.plan.len()).unwrap_or(i64::MAX));
    Recomputed {
        went_down: s.inputs.down.difference(&old_down).cloned().collect(),
        came_up: old_down.difference(&s.inputs.down).cloned().collect(),
    }
}

/// Asks for a pass without waiting for it. A full queue already holds a
/// pass that will read the state just written.
pub(super) fn request_pass(shared: &Shared, reason: &'static str) {
    if let Err(mpsc::error::TrySendError::Closed(_)) =
        shared.triggers.try_send(Trigger { reason, done: None })
    {
        warn!(event = "reconcile_loop_gone", trigger = reason);
    }
}

/// Asks for a pass and waits for its summary.
pub(super) async fn pass_now(
    shared: &Shared,
    reason: &'static str,
) -> Option<crate::control::LastPass> {
    let (tx, rx) = oneshot::channel();
    shared
        .triggers
        .send(Trigger {
            reason,
            done: Some(tx),
        })
        .await
        .ok()?;
    rx.await.ok()
}

/// Every event of the runner, until it stops.
pub(super) async fn health_events(shared: Shared, mut events: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Probed(p) => {
                let outcome = match &p.result {
                    Ok(()) => "ok",
                    Err(f) => f.kind(),
                };
                shared
                    .metrics
                    .health
                    .probed(p.spec.probe.kind(), outcome, p.latency);
                // Every probe, for RUST_LOG=director::daemon::health=debug.
                tracing::debug!(event = "health_probed", check = %describe(&p.spec), outcome, latency = ?p.latency, state = %p.state);
                if let Some(t) = p.transition {
                    on_transition(&shared, &p, t);
                }
            }
            Event::Stale { spec, silent_for } => {
                shared
                    .metrics
                    .health
                    .restarts
                    .with_label_values(&[spec.probe.kind()])
                    .inc();
                warn!(
                    event = "health_check_stale",
                    check = %describe(&spec),
                    silent_for = ?silent_for,
                    note = "no round completed for 3 intervals; restarted"
                );
            }
        }
    }
}

fn on_transition(shared: &Shared, p: &Probed, t: Transition) {
    let check = describe(&p.spec);
    let reason = match (&p.result, t.to) {
        (Err(f), _) => format!("{} consecutive failures, last: {f}", p.spec.fall),
        (Ok(()), _) => format!("{} consecutive successes", p.spec.rise),
    };
    info!(event = "health_check_changed", check = %check, old = %t.from, new = %t.to, reason = %reason);
    let Ok(mut s) = shared.state.lock() else {
        return;
    };
    let changed = recompute(&mut s, &shared.health, &shared.metrics);
    let users: BTreeSet<&PoolMember> = s.plan.users_of(&p.spec).iter().collect();
    let mut resets = Vec::new();
    for member in changed.went_down.iter().filter(|m| users.contains(m)) {
        warn!(event = "real_server_down", virtual_server = %member.0, real_server = %member.1, check = %check, reason = %reason);
        let Some(vs) = s.config.virtual_servers.iter().find(|v| v.name == member.0) else {
            continue;
        };
        if vs.on_down_connections == OnDownConnections::Reset {
            resets.push(PendingReset {
                member: member.clone(),
                service: vs.key,
                dest: DestKey {
                    addr: member.1.ip(),
                    port: member.1.port(),
                },
                check: check.clone(),
                decided: t.at,
            });
        }
    }
    for member in changed.came_up.iter().filter(|m| users.contains(m)) {
        info!(event = "real_server_up", virtual_server = %member.0, real_server = %member.1, check = %check, reason = %reason);
    }
    s.pending_resets.extend(resets);
    drop(s);
    request_pass(shared, "health");
}

/// The resets a pass carries out: queued ones whose server is still down.
pub(super) fn take_resets(s: &mut State) -> Vec<PendingReset> {
    let mut out: Vec<PendingReset> = Vec::new();
    for r in std::mem::take(&mut s.pending_resets) {
        if s.inputs.down.contains(&r.member) && !out.iter().any(|o| o.member == r.member) {
            out.push(r);
        }
    }
    out
}

/// Logs what the kernel worker did with a pass's resets.
pub(super) fn record_resets(
    shared: &Shared,
    done: &[(PendingReset, Result<ConnectionReset, String>)],
) {
    let now = shared.health.now();
    for (r, outcome) in done {
        let since_down_ms = now.saturating_sub(r.decided).as_millis() as u64;
        match outcome {
            Ok(o) => {
                shared
                    .metrics
                    .health
                    .resets
                    .with_label_values(&[r.member.0.as_str()])
                    .inc();
                info!(event = "connections_reset", virtual_server = %r.member.0, real_server = %r.member.1, check = %r.check, result = %o, since_down_ms);
            }
            Err(e) => {
                error!(event = "connections_reset_failed", virtual_server = %r.member.0, real_server = %r.member.1, error = %e, since_down_ms);
            }
        }
    }
}

/// Every second while real servers are leaving: count their active
/// connections; delete those with none left or past `drain_timeout`.
pub(super) async fn watch_leaving(shared: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets = match shared.state.lock() {
            Ok(s) => s.pool.leaving_targets(),
            Err(_) => return,
        };
        if targets.is_empty() {
            continue;
        }
        let keys: Vec<(ServiceKey, DestKey)> = targets.iter().map(|(_, s, d)| (*s, *d)).collect();
        let active: BTreeMap<PoolMember, u64> = match ask_kernel(&shared, |reply| {
            KernelCmd::ActiveConnections {
                targets: keys,
                reply,
            }
        })
        .await
        {
            Ok(counts) => targets.into_iter().map(|(m, _, _)| m).zip(counts).collect(),
            Err(e) => {
                warn!(event = "connection_count_failed", error = %e, note = "leaving real servers go at their drain_timeout");
                BTreeMap::new()
            }
        };
        let now = shared.health.now();
        let finished = {
            let Ok(mut s) = shared.state.lock() else {
                return;
            };
            s.leaving_active = active.clone();
            let finished = s.pool.finish(now, &active);
            if !finished.is_empty() {
                recompute(&mut s, &shared.health, &shared.metrics);
            }
            finished
        };
        for (member, how) in &finished {
            match how {
                pool::Finished::NoConnections => {
                    info!(event = "real_server_removed", virtual_server = %member.0, real_server = %member.1, reason = "no active connections left")
                }
                pool::Finished::Timeout { active } => {
                    warn!(event = "real_server_removed", virtual_server = %member.0, real_server = %member.1, reason = "drain_timeout passed", active_connections = ?active)
                }
            }
        }
        if !finished.is_empty() {
            request_pass(&shared, "drain_finished");
        }
    }
}

/// `directorctl drain` (`on`) / `undrain`.
pub(super) async fn drain(shared: &Shared, vs: &str, rs: &str, on: bool) -> Response {
    let outcome = {
        let Ok(mut s) = shared.state.lock() else {
            return Response::Error {
                message: "state poisoned".into(),
            };
        };
        match pool::resolve(&s.config, vs, rs) {
            Err(e) => Err(e.to_string()),
            Ok(member) => {
                let changed = if on {
                    s.pool.drain(member.clone())
                } else {
                    s.pool.undrain(&member)
                };
                if changed {
                    recompute(&mut s, &shared.health, &shared.metrics);
                }
                let weight = s
                    .config
                    .virtual_servers
                    .iter()
                    .find(|v| v.name == member.0)
                    .and_then(|v| {
                        v.real_servers
                            .iter()
                            .find(|r| SocketAddr::new(r.address, r.port) == member.1)
                    })
                    .map_or(0, |r| r.weight);
                let down = s.inputs.down.contains(&member);
                Ok((member, changed, weight, down))
            }
        }
    };
    let (member, changed, weight, down) = match outcome {
        Ok(o) => o,
        Err(message) => return Response::Error { message },
    };
    let (event, message) = match (on, changed) {
        (true, true) => (
            "real_server_drained",
            format!(
                "{} {} drained: weight 0, established connections kept, new connections go to the other real servers",
                member.0, member.1
            ),
        ),
        (true, false) => ("", format!("{} {} is already drained", member.0, member.1)),
        (false, true) => (
            "real_server_undrained",
            if down {
                format!(
                    "{} {} undrained; its health checks fail, so it stays out of the pool until they pass",
                    member.0, member.1
                )
            } else {
                format!("{} {} undrained: back at weight {weight}", member.0, member.1)
            },
        ),
        (false, false) => ("", format!("{} {} was not drained", member.0, member.1)),
    };
    let last_pass = if changed {
        info!(event, virtual_server = %member.0, real_server = %member.1);
        pass_now(shared, if on { "drain" } else { "undrain" }).await
    } else {
        None
    };
    Response::Drain(DrainReply {
        virtual_server: member.0,
        real_server: member.1,
        changed,
        message,
        last_pass,
    })
}

/// `directorctl health`.
pub(super) fn health_reply(shared: &Shared) -> Response {
    let checks = shared.health.status();
    let now = shared.health.now();
    let unix = |d: Duration| shared.health.unix_seconds(d);
    let Ok(s) = shared.state.lock() else {
        return Response::Error {
            message: "state poisoned".into(),
        };
    };
    let reply = view::build(&view::ViewInput {
        dataplane: &shared.kind.to_string(),
        config: &s.config,
        plan: &s.plan,
        pool: &s.pool,
        down: &s.inputs.down,
        desired: &s.desired,
        pools: &s.pools,
        checks: &checks,
        spec_errors: &s.spec_errors,
        leaving_active: &s.leaving_active,
        now,
        unix: &unix,
    });
    Response::Health(Box::new(reply))
}

/// The stale-checks gauge, at scrape time.
pub(super) fn refresh_metrics(shared: &Shared) {
    let now = shared.health.now();
    let stale = shared
        .health
        .status()
        .iter()
        .filter(|c| health::is_stale(c, now))
        .count();
    shared
        .metrics
        .health
        .stale
        .set(i64::try_from(stale).unwrap_or(i64::MAX));
}

/// Applies a new config's checks (reload): the runner keeps unchanged
/// checks and their counts, starts new ones (down for real servers the
/// reload adds, see `health::plan`), stops the rest; drains and leaving
/// servers follow. Called with the state locked, before `s.config` is
/// replaced.
pub(super) fn reload(s: &mut State, new: crate::config::Config, shared: &Shared) {
    let new_plan = health::plan::CheckPlan::new(&new);
    let wanted = new_plan.wanted(&health::plan::Before {
        plan: Some(&s.plan),
        down: Some(&s.inputs.down),
    });
    let errors = shared.health.set(wanted);
    s.spec_errors = spec_errors(errors);
    let changes = s
        .pool
        .reload(&s.config, &s.desired, &new, shared.health.now());
    for m in &changes.started_leaving {
        let deadline = new
            .virtual_servers
            .iter()
            .find(|v| v.name == m.0)
            .map(|v| v.drain_timeout)
            .unwrap_or_default();
        info!(event = "real_server_leaving", virtual_server = %m.0, real_server = %m.1, drain_timeout = ?deadline, note = "removed from the config: weight 0 until its connections end");
    }
    for m in &changes.returned {
        info!(event = "real_server_returned", virtual_server = %m.0, real_server = %m.1, note = "was leaving; the config has it again");
    }
    for m in &changes.dropped_leaving {
        info!(event = "real_server_removed", virtual_server = %m.0, real_server = %m.1, reason = "its virtual server was removed or changed address");
    }
    for m in &changes.forgotten_drains {
        info!(event = "real_server_undrained", virtual_server = %m.0, real_server = %m.1, reason = "removed from the config");
    }
    s.config = new;
    let old_plan = std::mem::replace(&mut s.plan, new_plan);
    let changed = recompute(s, &shared.health, &shared.metrics);
    for m in &changed.went_down {
        if !old_plan.members.contains_key(m) {
            let rise = s
                .plan
                .members
                .get(m)
                .and_then(|c| c.iter().map(|c| c.rise).max())
                .unwrap_or(1);
            info!(event = "real_server_down", virtual_server = %m.0, real_server = %m.1, reason = %format!("added by reload: joins the pool after {rise} successful checks"));
        }
    }
    s.leaving_active
        .retain(|m, _| s.pool.leaving().contains_key(m));
    info!(
        event = "health_checks_applied",
        checks = s.plan.len(),
        uses = s.plan.uses(),
        not_running = s.spec_errors.len()
    );
}

/// The runner's refusals, logged and kept for `directorctl health`.
pub(super) fn spec_errors(
    errors: Vec<(healthcheck::CheckSpec, healthcheck::SpecError)>,
) -> BTreeMap<healthcheck::CheckSpec, String> {
    errors
        .into_iter()
        .map(|(spec, e)| {
            error!(event = "health_check_not_running", check = %describe(&spec), error = %e, note = "its real servers count as down");
            (spec, e.to_string())
        })
        .collect()
}
