//! The tokio side: runs every distinct check on its schedule, feeds the
//! hysteresis, reports results and edges, and watches that each check keeps
//! completing rounds.
//!
//! - **Dedup.** Checks are keyed by their [`CheckSpec`]: N virtual servers
//!   that share a real server and a check config hand the runner N equal
//!   specs and get one probe (keepalived runs N). [`Runner::set`] takes the
//!   whole wanted set each time (level-triggered, like the reconcile loop):
//!   new specs start, missing ones stop, the rest keep their state, so a
//!   reload does not reset rise/fall counts.
//! - **Schedule.** See [`crate::schedule`]: stable first offsets, fixed rate.
//! - **Liveness.** A check that has not completed a round for 3 intervals
//!   (a probe future that never finishes, a starved task) is flagged
//!   `stale`, reported ([`Event::Stale`]) and restarted with its hysteresis
//!   intact. Probes bound themselves by their timeout, so this only fires
//!   on a bug or a wedged runtime — which is exactly when nobody would
//!   otherwise notice that the pool stopped being updated.
//!
//! All times are [`Duration`]s since the runner's epoch (tokio's clock, so
//! tests run on a paused virtual clock); [`Runner::unix_time`] converts.

use crate::hysteresis::{Health, Hysteresis, Transition};
use crate::probe::{Failure, Prepared, SpecError};
use crate::schedule;
use crate::spec::CheckSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A check is stale after this many intervals without a completed round.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Runs one probe. The real one is [`RealProber`]; tests substitute probes
/// that fail, or hang, on command.
pub trait Prober: Send + Sync + 'static {
    fn probe<'a>(
        &'a self,
        check: &'a Prepared,
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;
}

/// [`Prepared::run`]: the probe the spec describes, bounded by its timeout.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealProber;

impl Prober for RealProber {
    fn probe<'a>(
        &'a self,
        check: &'a Prepared,
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>> {
        Box::pin(check.run())
    }
}

/// What the runner tells its owner.
#[derive(Debug, Clone)]
pub enum Event {
    /// One probe finished.
    Probed(Box<Probed>),
    /// The check had completed no round for [`STALE_AFTER_INTERVALS`]
    /// intervals and was restarted.
    Stale {
        spec: Arc<CheckSpec>,
        /// Time since its last completed round (or its start).
        silent_for: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Probed {
    pub spec: Arc<CheckSpec>,
    pub result: Result<(), Failure>,
    /// When the probe was due and when it really started (since epoch).
    pub scheduled: Duration,
    pub started: Duration,
    pub latency: Duration,
    /// Set when this result flipped the state.
    pub transition: Option<Transition>,
    /// State after this result.
    pub state: Health,
}

/// One check as `directorctl health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub spec: CheckSpec,
    pub state: Health,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// `None` before the first probe; `Some(None)` for success.
    pub last_failure: Option<Option<Failure>>,
    pub last_latency: Option<Duration>,
    /// Since epoch.
    pub last_completed: Option<Duration>,
    pub last_change: Option<Duration>,
    pub rounds: u64,
    pub stale: bool,
    pub restarts: u64,
}

struct Entry {
    prepared: Arc<Prepared>,
    spec: Arc<CheckSpec>,
    /// [`schedule::first_offset`] of the spec and `interval *`
    /// [`STALE_AFTER_INTERVALS`], kept here: the watchdog needs both for
    /// every check at every tick, and the offset is a SipHash of the spec
    /// (at 10,000 checks: 100,000 hashes and pointer chases a second).
    first_offset: Duration,
    stale_after: Duration,
    hysteresis: Hysteresis,
    last_failure: Option<Option<Failure>>,
    last_latency: Option<Duration>,
    last_completed: Option<Duration>,
    /// Last completed round, or the (re)start of the task.
    last_progress: Duration,
    rounds: u64,
    stale: bool,
    restarts: u64,
    task: AbortHandle,
    /// Bumped on restart, so a result from a superseded task is ignored.
    generation: u64,
}

struct Shared<P> {
    prober: P,
    epoch: Instant,
    epoch_wall: SystemTime,
    checks: Mutex<BTreeMap<CheckSpec, Entry>>,
    events: mpsc::UnboundedSender<Event>,
}

impl<P> Shared<P> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn checks(&self) -> MutexGuard<'_, BTreeMap<CheckSpec, Entry>> {
        // A panic while holding the lock left plain data behind; the
        // runner keeps going with it rather than poisoning every caller.
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The set of running checks. Dropping it stops every check.
pub struct Runner<P: Prober = RealProber> {
    shared: Arc<Shared<P>>,
    watchdog: AbortHandle,
}

impl<P: Prober> Drop for Runner<P> {
    fn drop(&mut self) {
        self.watchdog.abort();
        for entry in self.shared.checks().values() {
            entry.task.abort();
        }
    }
}

impl Runner<RealProber> {
    /// A runner with the real probes. Must be called inside a tokio runtime
    /// (checks are spawned on it).
    pub fn new() -> (Runner<RealProber>, mpsc::UnboundedReceiver<Event>) {
        Runner::with_prober(RealProber)
    }
}

impl<P: Prober> Runner<P> {
    pub fn with_prober(prober: P) -> (Runner<P>, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            prober,
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
            checks: Mutex::new(BTreeMap::new()),
            events,
        });
        let watchdog = tokio::spawn(watchdog(Arc::clone(&shared))).abort_handle();
        (Runner { shared, watchdog }, rx)
    }

    /// Makes the running set exactly `wanted` (duplicates are one check).
    /// New checks start in the state given with them; checks already
    /// running keep theirs. Specs that cannot work are returned and not
    /// started; the rest are applied.
    pub fn set(
        &self,
        wanted: impl IntoIterator<Item = (CheckSpec, Health)>,
    ) -> Vec<(CheckSpec, SpecError)> {
        let mut wanted_map: BTreeMap<CheckSpec, Health> = BTreeMap::new();
        for (spec, initial) in wanted {
            wanted_map.entry(spec).or_insert(initial);
        }
        let mut errors = Vec::new();
        let now = self.shared.now();
        let mut checks = self.shared.checks();
        checks.retain(|spec, entry| {
            let keep = wanted_map.contains_key(spec);
            if !keep {
                entry.task.abort();
            }
            keep
        });
        for (spec, initial) in wanted_map {
            if checks.contains_key(&spec) {
                continue;
            }
            let prepared = match Prepared::new(spec.clone()) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    errors.push((spec, e));
                    continue;
                }
            };
            let first_offset = schedule::first_offset(&spec);
            let first = now + first_offset;
            let shared_spec = Arc::new(spec.clone());
            let task = spawn_check(
                &self.shared,
                Arc::clone(&prepared),
                Arc::clone(&shared_spec),
                first,
                0,
            );
            checks.insert(
                spec.clone(),
                Entry {
                    prepared,
                    spec: shared_spec,
                    first_offset,
                    stale_after: spec.interval * STALE_AFTER_INTERVALS,
                    hysteresis: Hysteresis::new(spec.rise, spec.fall, initial),
                    last_failure: None,
                    last_latency: None,
                    last_completed: None,
                    last_progress: now,
                    rounds: 0,
                    stale: false,
                    restarts: 0,
                    task,
                    generation: 0,
                },
            );
        }
        errors
    }

    /// Current state of one check.
    pub fn health(&self, spec: &CheckSpec) -> Option<Health> {
        self.shared.checks().get(spec).map(|e| e.hysteresis.state())
    }

    /// Every check, in spec order.
    pub fn status(&self) -> Vec<CheckStatus> {
        self.shared
            .checks()
            .values()
            .map(|e| CheckStatus {
                spec: (*e.spec).clone(),
                state: e.hysteresis.state(),
                consecutive_successes: e.hysteresis.consecutive_successes(),
                consecutive_failures: e.hysteresis.consecutive_failures(),
                last_failure: e.last_failure.clone(),
                last_latency: e.last_latency,
                last_completed: e.last_completed,
                last_change: e.hysteresis.last_change(),
                rounds: e.rounds,
                stale: e.stale,
                restarts: e.restarts,
            })
            .collect()
    }

    /// Number of distinct running checks.
    pub fn len(&self) -> usize {
        self.shared.checks().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time since the runner's epoch, on its clock.
    pub fn now(&self) -> Duration {
        self.shared.now()
    }

    /// Wall-clock time of a runner time.
    pub fn unix_time(&self, at: Duration) -> SystemTime {
        self.shared.epoch_wall + at
    }
}

fn spawn_check<P: Prober>(
    shared: &Arc<Shared<P>>,
    prepared: Arc<Prepared>,
    spec: Arc<CheckSpec>,
    first: Duration,
    generation: u64,
) -> AbortHandle {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let interval = spec.interval;
        let mut scheduled = first;
        loop {
            tokio::time::sleep_until(shared.epoch + scheduled).await;
            let started = shared.now();
            let result = shared.prober.probe(&prepared).await;
            let done = shared.now();
            let event = {
                let mut checks = shared.checks();
                let Some(entry) = checks.get_mut(&*spec) else {
                    return;
                };
                if entry.generation != generation {
                    return;
                }
                let transition = entry.hysteresis.record(done, result.is_ok());
                entry.last_failure = Some(result.clone().err());
                entry.last_latency = Some(done - started);
                entry.last_completed = Some(done);
                entry.last_progress = done;
                entry.rounds += 1;
                entry.stale = false;
                Probed {
                    spec: Arc::clone(&spec),
                    result,
                    scheduled,
                    started,
                    latency: done - started,
                    transition,
                    state: entry.hysteresis.state(),
                }
            };
            // The owner went away: nothing to report to, stop.
            if shared.events.send(Event::Probed(Box::new(event))).is_err() {
                return;
            }
            scheduled = schedule::next_start(scheduled, shared.now(), interval);
        }
    })
    .abort_handle()
}

/// Every 100 ms (of the runner's clock), restarts checks silent for
/// [`STALE_AFTER_INTERVALS`] intervals.
async fn watchdog<P: Prober>(shared: Arc<Shared<P>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = shared.now();
        let mut stale = Vec::new();
        {
            let mut checks = shared.checks();
            for entry in checks.values_mut() {
                let limit = if entry.rounds == 0 {
                    entry.stale_after + entry.first_offset
                } else {
                    entry.stale_after
                };
                let silent_for = now.saturating_sub(entry.last_progress);
                if silent_for <= limit {
                    continue;
                }
                entry.task.abort();
                entry.generation += 1;
                entry.stale = true;
                entry.restarts += 1;
                entry.last_progress = now;
                // Restart at the next slot of its phase.
                let first = now + entry.first_offset;
                entry.task = spawn_check(
                    &shared,
                    Arc::clone(&entry.prepared),
                    Arc::clone(&entry.spec),
                    first,
                    entry.generation,
                );
                stale.push(Event::Stale {
                    spec: Arc::clone(&entry.spec),
                    silent_for,
                });
            }
        }
        for e in stale {
            if shared.events.send(e).is_err() {
                return;
            }
        }
    }
}
