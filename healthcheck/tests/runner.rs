//! The runner on tokio's paused clock with a scripted prober: dedup, the
//! fixed-rate schedule, rise/fall edges with their timing, reload keeping
//! state, and the watchdog restarting a check that stopped completing.

use healthcheck::runner::{Event, Prober, Runner, DELIVER_EVERY, STALE_AFTER_INTERVALS};
use healthcheck::{CheckSpec, Failure, Health, Prepared, Probe};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Up,
    Down,
    /// Never completes (ignores its timeout): a frozen checker.
    Hang,
}

#[derive(Default)]
struct Fake {
    behaviour: Mutex<HashMap<SocketAddr, Behaviour>>,
    calls: Mutex<HashMap<SocketAddr, u32>>,
}

impl Fake {
    fn set(&self, target: SocketAddr, b: Behaviour) {
        self.behaviour.lock().unwrap().insert(target, b);
    }
    fn calls(&self, target: SocketAddr) -> u32 {
        self.calls
            .lock()
            .unwrap()
            .get(&target)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Fake>);

impl Prober for Shared {
    fn probe<'a>(
        &'a self,
        check: &'a Prepared,
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>> {
        let target = check.spec().target;
        *self.0.calls.lock().unwrap().entry(target).or_default() += 1;
        let b = self
            .0
            .behaviour
            .lock()
            .unwrap()
            .get(&target)
            .copied()
            .unwrap_or(Behaviour::Up);
        Box::pin(async move {
            // Every probe takes 10 ms of (virtual) time.
            tokio::time::sleep(Duration::from_millis(10)).await;
            match b {
                Behaviour::Up => Ok(()),
                Behaviour::Down => Err(Failure::Refused),
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }
}

fn target(n: u16) -> SocketAddr {
    format!("10.0.0.{}:80", n).parse().unwrap()
}

fn spec(n: u16) -> CheckSpec {
    CheckSpec {
        target: target(n),
        probe: Probe::Tcp,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
    }
}

/// Collects events for `d` of virtual time.
async fn collect(rx: &mut UnboundedReceiver<Event>, d: Duration) -> Vec<Event> {
    let end = tokio::time::Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn equal_specs_share_one_probe() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    // Three virtual servers use 10.0.0.1 with the same check, one uses a
    // different interval: two distinct checks.
    let mut other = spec(1);
    other.interval = Duration::from_secs(2);
    let errors = runner.set([
        (spec(1), Health::Up),
        (spec(1), Health::Up),
        (spec(1), Health::Up),
        (other, Health::Up),
    ]);
    assert!(errors.is_empty());
    assert_eq!(runner.len(), 2);
    collect(&mut rx, Duration::from_secs(10)).await;
    // 1 s interval: 10 probes in 10 s (plus the phase offset), 2 s: 5.
    let calls = fake.0.calls(target(1));
    assert!((14..=15).contains(&calls), "{calls} probes, want 10 + 5");
}

#[tokio::test(start_paused = true)]
async fn probes_run_at_a_fixed_rate_from_a_stable_phase() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    runner.set((1..=50).map(|n| (spec(n), Health::Up)));
    let events = collect(&mut rx, Duration::from_secs(5)).await;
    let mut starts: HashMap<SocketAddr, Vec<Duration>> = HashMap::new();
    for e in &events {
        let Event::Probed(p) = e else { panic!("{e:?}") };
        // On a clock nobody starves, every probe starts when due (tokio's
        // timer wheel has 1 ms slots).
        let late = p.started.checked_sub(p.scheduled).expect("started early");
        assert!(late <= Duration::from_millis(1), "{late:?} late");
        starts.entry(p.spec.target).or_default().push(p.scheduled);
    }
    assert_eq!(starts.len(), 50);
    let mut phases = Vec::new();
    for (t, s) in &starts {
        for w in s.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_secs(1), "{t}");
        }
        phases.push(s[0].as_millis());
    }
    // The first probes are spread, not all at once.
    phases.sort();
    phases.dedup();
    assert!(phases.len() > 40, "first starts: {phases:?}");
}

#[tokio::test(start_paused = true)]
async fn down_after_fall_failures_up_after_rise_successes() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    runner.set([(spec(1), Health::Up)]);
    collect(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(runner.health(&spec(1)), Some(Health::Up));

    fake.0.set(target(1), Behaviour::Down);
    let killed = runner.now();
    let events = collect(&mut rx, Duration::from_secs(5)).await;
    let edges: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Probed(p) => p.transition,
            _ => None,
        })
        .collect();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].to, Health::Down);
    // Within fall * interval (+ the probe's own time).
    let took = edges[0].at - killed;
    assert!(took <= Duration::from_millis(3010), "down after {took:?}");
    assert!(
        took > Duration::from_secs(2),
        "down after {took:?}: before 3 failures"
    );
    let status = &runner.status()[0];
    assert_eq!(status.state, Health::Down);
    assert_eq!(status.last_failure, Some(Some(Failure::Refused)));
    assert!(status.consecutive_failures >= 3);

    fake.0.set(target(1), Behaviour::Up);
    let events = collect(&mut rx, Duration::from_secs(3)).await;
    let up = events.iter().find_map(|e| match e {
        Event::Probed(p) => p.transition,
        _ => None,
    });
    assert_eq!(up.map(|t| t.to), Some(Health::Up));
}

#[tokio::test(start_paused = true)]
async fn set_keeps_running_checks_and_stops_removed_ones() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    fake.0.set(target(1), Behaviour::Down);
    runner.set([(spec(1), Health::Up), (spec(2), Health::Up)]);
    collect(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(runner.health(&spec(1)), Some(Health::Down));
    let rounds = runner.status()[0].rounds;

    // A reload that keeps check 1, drops 2 and adds 3 (new: starts down).
    runner.set([(spec(1), Health::Up), (spec(3), Health::Down)]);
    assert_eq!(runner.health(&spec(1)), Some(Health::Down), "state kept");
    assert_eq!(runner.health(&spec(2)), None);
    assert_eq!(runner.health(&spec(3)), Some(Health::Down));
    let calls_2 = fake.0.calls(target(2));
    collect(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(
        fake.0.calls(target(2)),
        calls_2,
        "removed check still probed"
    );
    assert!(runner.status()[0].rounds > rounds);
    assert_eq!(runner.health(&spec(3)), Some(Health::Up), "rise 2 reached");
}

#[tokio::test(start_paused = true)]
async fn a_frozen_check_is_reported_stale_and_restarted() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    runner.set([(spec(1), Health::Up), (spec(2), Health::Up)]);
    collect(&mut rx, Duration::from_secs(3)).await;
    fake.0.set(target(1), Behaviour::Hang);
    let frozen = runner.now();
    let events = collect(&mut rx, Duration::from_secs(6)).await;
    let stale: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Stale { spec, silent_for } => Some((spec.target, *silent_for)),
            _ => None,
        })
        .collect();
    assert!(!stale.is_empty(), "no stale report");
    assert_eq!(stale[0].0, target(1));
    let limit = Duration::from_secs(1) * STALE_AFTER_INTERVALS;
    assert!(stale[0].1 > limit && stale[0].1 < limit + Duration::from_millis(1200));
    // The other check went on completing rounds the whole time.
    let others = events
        .iter()
        .filter(|e| matches!(e, Event::Probed(p) if p.spec.target == target(2)))
        .count();
    assert!(others >= 5, "check 2 completed {others} rounds");
    let s1 = runner
        .status()
        .into_iter()
        .find(|s| s.spec.target == target(1))
        .unwrap();
    assert!(s1.stale && s1.restarts >= 1, "{s1:?}");
    assert!(fake.0.calls(target(1)) > 3, "restarted task probes again");

    // Unfrozen: the restarted check completes rounds and is no longer stale.
    fake.0.set(target(1), Behaviour::Up);
    collect(&mut rx, Duration::from_secs(3)).await;
    let s1 = runner
        .status()
        .into_iter()
        .find(|s| s.spec.target == target(1))
        .unwrap();
    assert!(!s1.stale, "{s1:?}");
    let _ = frozen;
}

#[tokio::test(start_paused = true)]
async fn bad_specs_come_back_and_the_rest_runs() {
    let (runner, _rx) = Runner::with_prober(Shared::default());
    let mut bad = spec(9);
    bad.timeout = Duration::from_secs(5);
    let errors = runner.set([(spec(1), Health::Up), (bad.clone(), Health::Up)]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, bad);
    assert_eq!(runner.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn results_come_in_batches_and_transitions_at_once_in_order() {
    let fake = Shared::default();
    let (runner, mut rx) = Runner::with_prober(fake.clone());
    fake.0.set(target(1), Behaviour::Down);
    runner.set((1..=20).map(|n| (spec(n), Health::Up)));
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last_start: HashMap<SocketAddr, Duration> = HashMap::new();
    let (mut edges, mut batched) = (0, 0);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, rx.recv()).await {
        let Event::Probed(p) = e else { panic!("{e:?}") };
        let waited = runner.now() - (p.started + p.latency);
        if p.transition.is_some() {
            // The pools must follow an edge at once.
            assert_eq!(waited, Duration::ZERO, "edge delivered late");
            edges += 1;
        } else {
            // Timer slots are 1 ms.
            assert!(
                waited <= DELIVER_EVERY + Duration::from_millis(1),
                "{waited:?}"
            );
            batched += usize::from(waited > Duration::ZERO);
        }
        // Each check's results arrive in the order they were taken.
        if let Some(prev) = last_start.insert(p.spec.target, p.started) {
            assert!(prev < p.started, "{} out of order", p.spec.target);
        }
    }
    assert_eq!(edges, 1, "check 1 went down once");
    assert!(batched > 50, "{batched} results waited for a batch");
    assert_eq!(last_start.len(), 20);
}
