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
//! - **Delivery.** Results that changed nothing are queued and handed to
//!   the owner's channel in batches, [`DELIVER_EVERY`] after the first of
//!   a batch; a transition or a stale report goes at once (after what is
//!   queued, so each check's events stay in order). At 10,000 probes a
//!   second a send per probe wakes the owner's task, often on another
//!   runtime's thread (the daemon's), up to 10,000 times a second; batches
//!   wake it 100 times.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A check is stale after this many intervals without a completed round.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// How long a result that changed nothing may wait to be delivered with
/// others (see the module docs).
pub const DELIVER_EVERY: Duration = Duration::from_millis(10);

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

/// One running check. What its task writes after every probe is behind
/// a lock of its own, so probes of different checks never wait for each
/// other, nor for the watchdog or a `status()` walking the whole set (at
/// 10,000 checks a second a shared lock would be taken 10,000 times a
/// second, and the watchdog's walk would stall every probe finishing
/// meanwhile).
struct Check {
    prepared: Arc<Prepared>,
    spec: Arc<CheckSpec>,
    /// [`schedule::first_offset`] of the spec and `interval *`
    /// [`STALE_AFTER_INTERVALS`], kept here: the watchdog needs both for
    /// every check at every tick, and the offset is a SipHash of the spec.
    first_offset: Duration,
    stale_after: Duration,
    /// Last completed round, or the (re)start of the task, in nanoseconds
    /// since the epoch; and whether a round was ever completed. Atomics,
    /// so the watchdog's tick reads them without taking the lock.
    last_progress_ns: AtomicU64,
    completed_any: AtomicBool,
    state: Mutex<CheckState>,
}

struct CheckState {
    hysteresis: Hysteresis,
    last_failure: Option<Option<Failure>>,
    last_latency: Option<Duration>,
    last_completed: Option<Duration>,
    rounds: u64,
    stale: bool,
    restarts: u64,
    /// The check's task (set right after it is spawned).
    task: Option<AbortHandle>,
    /// Bumped on restart, so a result from a superseded task is ignored.
    generation: u64,
    /// Set when `set` dropped the check: a result still in flight is
    /// ignored.
    removed: bool,
}

impl Check {
    fn state(&self) -> MutexGuard<'_, CheckState> {
        // A panic while holding the lock left plain data behind; the
        // runner keeps going with it rather than poisoning every caller.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn progress(&self, at: Duration) {
        self.last_progress_ns.store(
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn last_progress(&self) -> Duration {
        Duration::from_nanos(self.last_progress_ns.load(Ordering::Relaxed))
    }
}

struct Shared<P> {
    prober: P,
    epoch: Instant,
    epoch_wall: SystemTime,
    checks: Mutex<BTreeMap<CheckSpec, Arc<Check>>>,
    events: mpsc::UnboundedSender<Event>,
    /// Results waiting for the next batch, and the wake-up of the task
    /// that delivers it (notified when the queue stops being empty).
    queued: Mutex<Vec<Event>>,
    queued_notify: tokio::sync::Notify,
}

impl<P> Shared<P> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn checks(&self) -> MutexGuard<'_, BTreeMap<CheckSpec, Arc<Check>>> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queued(&self) -> MutexGuard<'_, Vec<Event>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `event` to the owner: at once if `now`, else with the next
    /// batch. False when the owner is gone.
    fn report(&self, event: Event, now: bool) -> bool {
        let mut q = self.queued();
        if !now {
            if q.is_empty() {
                self.queued_notify.notify_one();
            }
            q.push(event);
            return !self.events.is_closed();
        }
        q.drain(..).all(|e| self.events.send(e).is_ok()) && self.events.send(event).is_ok()
    }

    /// Delivers the queued batch. False when the owner is gone.
    fn deliver(&self) -> bool {
        let batch = std::mem::take(&mut *self.queued());
        batch.into_iter().all(|e| self.events.send(e).is_ok())
    }
}

/// The set of running checks. Dropping it stops every check.
pub struct Runner<P: Prober = RealProber> {
    shared: Arc<Shared<P>>,
    watchdog: AbortHandle,
    delivery: AbortHandle,
}

impl<P: Prober> Drop for Runner<P> {
    fn drop(&mut self) {
        self.watchdog.abort();
        self.delivery.abort();
        for check in self.shared.checks().values() {
            if let Some(t) = &check.state().task {
                t.abort();
            }
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
            queued: Mutex::new(Vec::new()),
            queued_notify: tokio::sync::Notify::new(),
        });
        let watchdog = tokio::spawn(watchdog(Arc::clone(&shared))).abort_handle();
        let delivery = tokio::spawn(delivery(Arc::clone(&shared))).abort_handle();
        (
            Runner {
                shared,
                watchdog,
                delivery,
            },
            rx,
        )
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
        checks.retain(|spec, check| {
            let keep = wanted_map.contains_key(spec);
            if !keep {
                let mut st = check.state();
                st.removed = true;
                if let Some(t) = &st.task {
                    t.abort();
                }
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
            let check = Arc::new(Check {
                prepared,
                spec: Arc::new(spec.clone()),
                first_offset,
                stale_after: spec.interval * STALE_AFTER_INTERVALS,
                last_progress_ns: AtomicU64::new(0),
                completed_any: AtomicBool::new(false),
                state: Mutex::new(CheckState {
                    hysteresis: Hysteresis::new(spec.rise, spec.fall, initial),
                    last_failure: None,
                    last_latency: None,
                    last_completed: None,
                    rounds: 0,
                    stale: false,
                    restarts: 0,
                    task: None,
                    generation: 0,
                    removed: false,
                }),
            });
            check.progress(now);
            {
                let mut st = check.state();
                st.task = Some(spawn_check(
                    &self.shared,
                    Arc::clone(&check),
                    now + first_offset,
                    0,
                ));
            }
            checks.insert(spec, check);
        }
        errors
    }

    /// Current state of one check.
    pub fn health(&self, spec: &CheckSpec) -> Option<Health> {
        self.shared
            .checks()
            .get(spec)
            .map(|c| c.state().hysteresis.state())
    }

    /// Every check, in spec order.
    pub fn status(&self) -> Vec<CheckStatus> {
        self.shared
            .checks()
            .values()
            .map(|c| {
                let e = c.state();
                CheckStatus {
                    spec: (*c.spec).clone(),
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
                }
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
    check: Arc<Check>,
    first: Duration,
    generation: u64,
) -> AbortHandle {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let interval = check.spec.interval;
        let mut scheduled = first;
        loop {
            tokio::time::sleep_until(shared.epoch + scheduled).await;
            let started = shared.now();
            let result = shared.prober.probe(&check.prepared).await;
            let done = shared.now();
            let event = {
                let mut st = check.state();
                if st.removed || st.generation != generation {
                    return;
                }
                let transition = st.hysteresis.record(done, result.is_ok());
                st.last_failure = Some(result.clone().err());
                st.last_latency = Some(done - started);
                st.last_completed = Some(done);
                st.rounds += 1;
                st.stale = false;
                check.progress(done);
                check.completed_any.store(true, Ordering::Relaxed);
                Probed {
                    spec: Arc::clone(&check.spec),
                    result,
                    scheduled,
                    started,
                    latency: done - started,
                    transition,
                    state: st.hysteresis.state(),
                }
            };
            // The owner went away: nothing to report to, stop.
            let now = event.transition.is_some();
            if !shared.report(Event::Probed(Box::new(event)), now) {
                return;
            }
            scheduled = schedule::next_start(scheduled, done, interval);
        }
    })
    .abort_handle()
}

/// Every 100 ms (of the runner's clock), restarts checks silent for
/// [`STALE_AFTER_INTERVALS`] intervals. A tick reads two atomics per
/// check; only a check found silent is locked.
async fn watchdog<P: Prober>(shared: Arc<Shared<P>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = shared.now();
        let mut stale = Vec::new();
        {
            let checks = shared.checks();
            for check in checks.values() {
                let limit = if check.completed_any.load(Ordering::Relaxed) {
                    check.stale_after
                } else {
                    check.stale_after + check.first_offset
                };
                let silent_for = now.saturating_sub(check.last_progress());
                if silent_for <= limit {
                    continue;
                }
                let mut st = check.state();
                // A round may have completed since the atomics were read.
                let silent_for = now.saturating_sub(check.last_progress());
                if silent_for <= limit || st.removed {
                    continue;
                }
                if let Some(t) = &st.task {
                    t.abort();
                }
                st.generation += 1;
                st.stale = true;
                st.restarts += 1;
                check.progress(now);
                // Restart at the next slot of its phase.
                let first = now + check.first_offset;
                st.task = Some(spawn_check(
                    &shared,
                    Arc::clone(check),
                    first,
                    st.generation,
                ));
                stale.push(Event::Stale {
                    spec: Arc::clone(&check.spec),
                    silent_for,
                });
            }
        }
        for e in stale {
            if !shared.report(e, true) {
                return;
            }
        }
    }
}

/// Delivers the queued results [`DELIVER_EVERY`] after the first of a
/// batch was queued; sleeps while nothing is.
async fn delivery<P: Prober>(shared: Arc<Shared<P>>) {
    loop {
        shared.queued_notify.notified().await;
        tokio::time::sleep(DELIVER_EVERY).await;
        if !shared.deliver() {
            return;
        }
    }
}
