//! `directorctl health`: per virtual server its pool (up/total, quorum,
//! sorry server), then one line per real server and check in the shape of
//! an `ipvsadm -Ln` destination line (`  -> ADDRESS:PORT` in 28 columns),
//! so an operator's eye finds the same server in both listings.
//!
//! ```text
//! Health checks: 3 running for 4 real-server checks, 0 stale (dataplane nftables)
//!
//! Virtual server web (TCP 192.0.2.100:80): 2/3 up, 2 serving, quorum 1 met; on_down remove, connections reset
//!   -> RemoteAddress:Port           State    Weight Health Succ Fail Changed  Check / last result
//!   -> 203.0.113.21:80              serving  1      up       12    0 -        tcp 203.0.113.21:80: ok in 0.4ms
//!   -> 203.0.113.22:80              down     -      down      0    4 3s ago   tcp 203.0.113.22:80: timed out after 300ms connecting
//! ```
//!
//! `Weight` is what the kernel is given now (`-`: not in the table);
//! `Changed` is the last up/down change of the check (`-`: none since it
//! started). A real server with several checks gets one line per check.

use crate::health::view::{CheckView, HealthReply, RealServerHealth};
use healthcheck::Health;
use std::fmt::Write;

/// A duration for humans: `850ms`, `3s`, `5m12s`, `2h03m`, `4d01h`.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "0s".into();
    }
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0) as u64);
    }
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn latency(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{seconds:.2}s")
    }
}

fn health_word(h: Option<Health>) -> &'static str {
    match h {
        Some(Health::Up) => "up",
        Some(Health::Down) => "down",
        None => "-",
    }
}

fn check_text(c: &CheckView) -> String {
    let mut t = format!("{}: ", c.check);
    match (&c.error, &c.last_result) {
        (Some(e), _) => {
            let _ = write!(t, "NOT RUNNING: {e}");
        }
        (None, None) => t.push_str("no result yet"),
        (None, Some(r)) if r == "ok" => {
            t.push_str("ok");
            if let Some(l) = c.latency_seconds {
                let _ = write!(t, " in {}", latency(l));
            }
        }
        (None, Some(r)) => t.push_str(r),
    }
    if c.stale {
        let _ = write!(
            t,
            " [STALE: no round completed for too long; restarted {} times]",
            c.restarts
        );
    }
    t
}

fn server_line(
    out: &mut String,
    rs: &RealServerHealth,
    now_unix: f64,
    first: Option<&CheckView>,
    rest: &[CheckView],
) {
    let weight = rs
        .kernel_weight
        .map_or_else(|| "-".to_string(), |w| w.to_string());
    let addr = rs.address.to_string();
    let state = rs.state.as_str();
    match first {
        None => {
            let tail = match &rs.leaving {
                Some(l) => {
                    let conns = l.active_connections.map_or_else(
                        || "not counted yet".to_string(),
                        |n| format!("{n} active connections"),
                    );
                    format!(
                        "removed from the config {} ago; {conns}; deleted in {} at the latest",
                        age(now_unix - l.since_unix),
                        age(l.deadline_unix - now_unix)
                    )
                }
                None => "not checked".to_string(),
            };
            let _ = writeln!(
                out,
                "  -> {addr:<28} {state:<8} {weight:<6} {:<6} {:>4} {:>4} {:<8} {tail}",
                "-", "", "", ""
            );
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "  -> {addr:<28} {state:<8} {weight:<6} {}",
                check_cols(c, now_unix)
            );
        }
    }
    for c in rest {
        let _ = writeln!(
            out,
            "     {:<28} {:<8} {:<6} {}",
            "",
            "",
            "",
            check_cols(c, now_unix)
        );
    }
}

fn check_cols(c: &CheckView, now_unix: f64) -> String {
    let changed = c
        .last_change_unix
        .map_or_else(|| "-".to_string(), |t| format!("{} ago", age(now_unix - t)));
    format!(
        "{:<6} {:>4} {:>4} {:<8} {}",
        health_word(c.state),
        c.consecutive_successes,
        c.consecutive_failures,
        changed,
        check_text(c)
    )
}

/// The text `directorctl health` prints at `now_unix`.
pub fn health(reply: &HealthReply, now_unix: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Health checks: {} running for {} real-server checks, {} stale (dataplane {})",
        reply.checks_running, reply.check_uses, reply.checks_stale, reply.dataplane
    );
    if reply.virtual_servers.is_empty() {
        out.push_str("no virtual_server configured\n");
        return out;
    }
    for vs in &reply.virtual_servers {
        let p = &vs.pool;
        let quorum = if p.quorum_met {
            format!("quorum {} met", p.quorum)
        } else if p.sorry_active {
            format!(
                "quorum {} NOT met: new connections go to the sorry server",
                p.quorum
            )
        } else {
            format!("quorum {} NOT met", p.quorum)
        };
        let conns = match vs.on_down_connections {
            crate::config::OnDownConnections::Reset => "reset",
            crate::config::OnDownConnections::Keep => "kept",
        };
        let on_down = match vs.on_down {
            crate::config::OnDown::Remove => "remove",
            crate::config::OnDown::Inhibit => "inhibit",
        };
        let _ = writeln!(
            out,
            "\nVirtual server {} ({}): {}/{} up, {} serving, {quorum}; on_down {on_down}, connections {conns}",
            vs.name, vs.service, p.up, p.total, p.serving
        );
        let _ = writeln!(
            out,
            "  -> {:<28} {:<8} {:<6} {:<6} {:>4} {:>4} {:<8} Check / last result",
            "RemoteAddress:Port", "State", "Weight", "Health", "Succ", "Fail", "Changed"
        );
        for rs in &vs.real_servers {
            server_line(
                &mut out,
                rs,
                now_unix,
                rs.checks.first(),
                rs.checks.get(1..).unwrap_or(&[]),
            );
        }
        if let (true, Some(sorry)) = (p.sorry_active, vs.sorry_server) {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<8} {:<6} sorry server",
                sorry.to_string(),
                "sorry",
                1
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OnDown, OnDownConnections};
    use crate::desired::PoolStatus;
    use crate::health::view::{LeavingView, ServerState, VirtualServerHealth};

    fn check(state: Health, result: &str, changed: Option<f64>) -> CheckView {
        CheckView {
            kind: "tcp".into(),
            check: "tcp 203.0.113.21:80".into(),
            target: "203.0.113.21:80".parse().unwrap(),
            interval_seconds: 0.5,
            timeout_seconds: 0.3,
            rise: 2,
            fall: 2,
            state: Some(state),
            last_result: Some(result.into()),
            last_failure: None,
            last_failure_kind: None,
            consecutive_successes: if state == Health::Up { 12 } else { 0 },
            consecutive_failures: if state == Health::Up { 0 } else { 4 },
            last_check_unix: Some(999.0),
            last_change_unix: changed,
            latency_seconds: Some(0.0004),
            rounds: 12,
            stale: false,
            restarts: 0,
            error: None,
        }
    }

    #[test]
    fn a_pool_reads_like_ipvsadm_with_health_columns() {
        let mut down = check(
            Health::Down,
            "timed out after 300ms connecting",
            Some(997.0),
        );
        down.check = "tcp 203.0.113.22:80".into();
        let mut http = check(Health::Up, "ok", None);
        http.check = "http 203.0.113.21:80 GET /ready".into();
        http.stale = true;
        http.restarts = 1;
        let reply = HealthReply {
            dataplane: "nftables".into(),
            checks_running: 3,
            check_uses: 3,
            checks_stale: 1,
            virtual_servers: vec![VirtualServerHealth {
                name: "web".into(),
                service: "TCP 192.0.2.100:80".into(),
                on_down: OnDown::Remove,
                on_down_connections: OnDownConnections::Reset,
                sorry_server: Some("203.0.113.99:80".parse().unwrap()),
                pool: PoolStatus {
                    up: 1,
                    total: 2,
                    serving: 1,
                    quorum: 2,
                    quorum_met: false,
                    sorry_active: true,
                },
                real_servers: vec![
                    RealServerHealth {
                        address: "203.0.113.21:80".parse().unwrap(),
                        state: ServerState::Standby,
                        health: Health::Up,
                        weight: 1,
                        kernel_weight: Some(0),
                        drained: false,
                        leaving: None,
                        checks: vec![check(Health::Up, "ok", None), http],
                    },
                    RealServerHealth {
                        address: "203.0.113.22:80".parse().unwrap(),
                        state: ServerState::Down,
                        health: Health::Down,
                        weight: 1,
                        kernel_weight: None,
                        drained: false,
                        leaving: None,
                        checks: vec![down],
                    },
                    RealServerHealth {
                        address: "203.0.113.23:80".parse().unwrap(),
                        state: ServerState::Leaving,
                        health: Health::Up,
                        weight: 1,
                        kernel_weight: Some(0),
                        drained: false,
                        leaving: Some(LeavingView {
                            since_unix: 995.0,
                            deadline_unix: 1295.0,
                            active_connections: Some(2),
                        }),
                        checks: vec![],
                    },
                ],
            }],
        };
        let text = health(&reply, 1000.0);
        let want = "\
Health checks: 3 running for 3 real-server checks, 1 stale (dataplane nftables)

Virtual server web (TCP 192.0.2.100:80): 1/2 up, 1 serving, quorum 2 NOT met: new connections go to the sorry server; on_down remove, connections reset
  -> RemoteAddress:Port           State    Weight Health Succ Fail Changed  Check / last result
  -> 203.0.113.21:80              standby  0      up       12    0 -        tcp 203.0.113.21:80: ok in 0.4ms
                                                  up       12    0 -        http 203.0.113.21:80 GET /ready: ok in 0.4ms [STALE: no round completed for too long; restarted 1 times]
  -> 203.0.113.22:80              down     -      down      0    4 3s ago   tcp 203.0.113.22:80: timed out after 300ms connecting
  -> 203.0.113.23:80              leaving  0      -                         removed from the config 5s ago; 2 active connections; deleted in 4m55s at the latest
  -> 203.0.113.99:80              sorry    1      sorry server
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(0.25), "250ms");
        assert_eq!(age(3.9), "3s");
        assert_eq!(age(312.0), "5m12s");
        assert_eq!(age(7380.0), "2h03m");
        assert_eq!(age(4.0 * 86_400.0 + 3600.0), "4d01h");
        assert_eq!(age(-1.0), "0s");
        assert_eq!(age(f64::NAN), "0s");
        assert_eq!(latency(0.0123), "12ms");
        assert_eq!(latency(1.5), "1.50s");
    }

    #[test]
    fn no_virtual_server_says_so() {
        let reply = HealthReply {
            dataplane: "ipvs".into(),
            checks_running: 0,
            check_uses: 0,
            checks_stale: 0,
            virtual_servers: vec![],
        };
        assert_eq!(
            health(&reply, 0.0),
            "Health checks: 0 running for 0 real-server checks, 0 stale (dataplane ipvs)\nno virtual_server configured\n"
        );
    }
}
