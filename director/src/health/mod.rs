//! Health checks in the daemon: the `healthcheck` runner on its own runtime,
//! and what turns its results into pools.
//!
//! ```text
//!  runtime "health" (1 worker thread, owned by HealthRunner)
//!   └─ healthcheck::runner: one task per distinct check + its watchdog
//!        │ Event::Probed / Event::Stale (unbounded channel; results
//!        │ in 10 ms batches, transitions and stale reports at once)
//!        v
//!  daemon runtime: health event task (daemon.rs)
//!   ├─ metrics (results by outcome, latency)
//!   └─ on a transition: plan.down() -> desired_table_with() -> State,
//!      dead-backend resets queued, reconcile pass triggered at once
//! ```
//!
//! Why a runtime of its own: probe timing and the runner's watchdog must
//! not wait behind what the daemon runtime does (control-socket clients,
//! metrics scrapes, a reload parsing a large file), and thousands of probes
//! a second (TLS handshakes, script spawns) must not delay a `directorctl`
//! answer or a reconcile trigger. The runner's own watchdog restarts a
//! check that stopped completing rounds; a runtime that is wedged as a
//! whole (watchdog included) is seen from the daemon side, which marks
//! checks silent for [`WEDGED_AFTER_INTERVALS`] intervals stale in
//! `directorctl health` and the metrics.
//!
//! Why one worker: probes wait on the network, they do not compute. With
//! two workers, every batch of timers one worker fired woke the other to
//! steal from it (a futex wake and a context switch each time, at 1,000
//! timer ticks a second with 10,000 checks); one worker runs the same
//! probes with none of that (health-bench, see the README). HTTPS probes
//! do compute (a TLS handshake each); should they ever need more than
//! one core, this is the number to raise.
//!
//! Map:
//! - [`plan`]: config -> checks and their fan-out, check states -> down
//!   real servers (pure).
//! - [`pool`]: operator drains and real servers leaving the config (pure).
//! - [`view`]: the `directorctl health` reply, built from all of the above
//!   (pure).

pub mod plan;
pub mod pool;
pub mod view;

use healthcheck::runner::{CheckStatus, Event, Runner};
use healthcheck::{CheckSpec, Health, Probe, SpecError};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The daemon side calls a check stale when it has completed no round for
/// this many intervals: one more than the runner's own watchdog waits
/// (`healthcheck::runner::STALE_AFTER_INTERVALS`) before it restarts it,
/// so this only fires when the restart did not help (a wedged runtime).
pub const WEDGED_AFTER_INTERVALS: u32 = healthcheck::runner::STALE_AFTER_INTERVALS + 1;

/// The running checks: a [`Runner`] on a runtime of its own (see the module
/// docs). Dropping it stops every check.
pub struct HealthRunner {
    runner: Option<Runner>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HealthRunner {
    /// Starts the runtime and an empty runner; the receiver gets every
    /// probe result and stale report.
    pub fn start() -> Result<(HealthRunner, mpsc::UnboundedReceiver<Event>), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("health")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the health-check runtime: {e}"))?;
        let (runner, events) = {
            let _in = runtime.enter();
            Runner::new()
        };
        Ok((
            HealthRunner {
                runner: Some(runner),
                runtime: Some(runtime),
            },
            events,
        ))
    }

    fn runner(&self) -> Option<&Runner> {
        self.runner.as_ref()
    }

    /// Makes the running checks exactly `wanted` (see `Runner::set`);
    /// returns the specs that cannot run.
    pub fn set(&self, wanted: Vec<(CheckSpec, Health)>) -> Vec<(CheckSpec, SpecError)> {
        let (Some(runner), Some(rt)) = (self.runner(), self.runtime.as_ref()) else {
            return Vec::new();
        };
        // The runner spawns the new checks' tasks on the current runtime.
        let _in = rt.enter();
        runner.set(wanted)
    }

    pub fn health(&self, spec: &CheckSpec) -> Option<Health> {
        self.runner().and_then(|r| r.health(spec))
    }

    pub fn status(&self) -> Vec<CheckStatus> {
        self.runner().map(Runner::status).unwrap_or_default()
    }

    /// The runner's clock (monotonic, since it started): the daemon's
    /// clock for everything health-related.
    pub fn now(&self) -> Duration {
        self.runner().map(Runner::now).unwrap_or_default()
    }

    /// Wall-clock time of a runner time, as seconds since the Unix epoch.
    pub fn unix_seconds(&self, at: Duration) -> f64 {
        self.runner()
            .map(|r| r.unix_time(at))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

impl Drop for HealthRunner {
    fn drop(&mut self) {
        // The runner aborts its tasks; the runtime's threads then go in
        // the background (a runtime dropped inside another runtime's
        // async context would panic).
        drop(self.runner.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a check is stale as the daemon sees it at runner time `now`:
/// flagged by the runner's watchdog (restarted, no round since), or silent
/// for [`WEDGED_AFTER_INTERVALS`] intervals.
pub fn is_stale(st: &CheckStatus, now: Duration) -> bool {
    st.stale
        || st.last_completed.is_some_and(|t| {
            now.saturating_sub(t) > st.spec.interval.saturating_mul(WEDGED_AFTER_INTERVALS)
        })
}

/// A check as logs and `directorctl health` name it: kind and target,
/// plus what makes two checks of one target differ.
pub fn describe(spec: &CheckSpec) -> String {
    match &spec.probe {
        Probe::Tcp => format!("tcp {}", spec.target),
        Probe::Http(h) => format!("http {} {} {}", spec.target, h.method, h.path),
        Probe::Https { http: h, .. } => format!("https {} {} {}", spec.target, h.method, h.path),
        Probe::Script(s) => format!("script {}", s.argv.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(probe: Probe) -> CheckSpec {
        CheckSpec {
            target: "10.0.0.1:80".parse().unwrap(),
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn checks_are_named_by_kind_target_and_what_differs() {
        assert_eq!(describe(&spec(Probe::Tcp)), "tcp 10.0.0.1:80");
        let http = healthcheck::HttpProbe {
            method: "GET".into(),
            path: "/ready".into(),
            host: None,
            expect_status: vec![],
            body: None,
        };
        assert_eq!(
            describe(&spec(Probe::Http(http.clone()))),
            "http 10.0.0.1:80 GET /ready"
        );
        let tls = healthcheck::TlsProbe {
            sni: None,
            verify: true,
            ca_file: None,
        };
        assert_eq!(
            describe(&spec(Probe::Https { http, tls })),
            "https 10.0.0.1:80 GET /ready"
        );
        let script = healthcheck::ScriptProbe {
            argv: vec!["/bin/check".into(), "-q".into()],
        };
        assert_eq!(
            describe(&spec(Probe::Script(script))),
            "script /bin/check -q"
        );
    }

    #[test]
    fn a_check_silent_past_the_watchdog_is_stale() {
        let mut st = CheckStatus {
            spec: spec(Probe::Tcp),
            state: Health::Up,
            consecutive_successes: 1,
            consecutive_failures: 0,
            last_failure: Some(None),
            last_latency: None,
            last_completed: Some(Duration::from_secs(10)),
            last_change: None,
            rounds: 1,
            stale: false,
            restarts: 0,
        };
        assert!(!is_stale(&st, Duration::from_secs(14)));
        assert!(is_stale(&st, Duration::from_millis(14_001)));
        st.stale = true;
        assert!(is_stale(&st, Duration::from_secs(10)));
    }

    /// The runner lives on its own runtime; the daemon (itself async)
    /// drives it from its runtime and drops it there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runner_runs_beside_the_daemon_runtime() {
        let (runner, mut events) = HealthRunner::start().expect("runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut s = spec(Probe::Tcp);
        s.target = listener.local_addr().expect("addr");
        s.interval = Duration::from_millis(100);
        s.timeout = Duration::from_millis(50);
        assert!(runner.set(vec![(s.clone(), Health::Down)]).is_empty());
        assert_eq!(runner.health(&s), Some(Health::Down));
        let mut ok = 0;
        while ok < 2 {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Some(Event::Probed(p))) if p.result.is_ok() => ok += 1,
                Ok(Some(_)) => {}
                other => panic!("no probe result: {other:?}"),
            }
        }
        assert_eq!(runner.health(&s), Some(Health::Up), "rise = 2 reached");
        assert!(runner.now() > Duration::ZERO);
        assert!(runner.unix_seconds(runner.now()) > 1.0e9);
        drop(runner);
    }
}
