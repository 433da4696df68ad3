//! N routers on a virtual clock sharing a lossy, delaying medium that can be
//! partitioned. Every advert goes through the real encoder and decoder.
//! Nothing sleeps: a minute of protocol time takes microseconds.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use proptest::prelude::*;
use vrrp::codec;
use vrrp::machine::{Action, Config, Input, Instance, Reason, RxPacket, State};
use vrrp::Time;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// splitmix64: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone)]
struct Spec {
    priority: u8,
    preempt: bool,
    preempt_delay: Duration,
}

fn spec(priority: u8) -> Spec {
    Spec {
        priority,
        preempt: true,
        preempt_delay: Duration::ZERO,
    }
}

struct Router {
    m: Instance,
    addr: IpAddr,
    alive: bool,
    log: Vec<(Time, Action)>,
}

struct Pending {
    at: Time,
    seq: u64,
    to: usize,
    rx: RxPacket,
}

struct Sim {
    now: Time,
    routers: Vec<Router>,
    wire: Vec<Pending>,
    seq: u64,
    rng: Rng,
    /// Per-mille chance that a packet is lost.
    loss_per_mille: u64,
    /// Delays are uniform in [0, max_delay).
    max_delay: Duration,
    /// Partition label per router: packets only flow between equal labels.
    side: Vec<u8>,
    /// Every change of the set of masters.
    history: Vec<(Time, Vec<usize>)>,
}

impl Sim {
    fn new(specs: &[Spec], seed: u64) -> Sim {
        let routers = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1));
                let mut c = Config::new(1, addr, vec![IpAddr::V4(VIP)]);
                c.priority = s.priority;
                c.preempt = s.preempt;
                c.preempt_delay = s.preempt_delay;
                Router {
                    m: Instance::new(c, Time::ZERO).unwrap(),
                    addr,
                    alive: false,
                    log: Vec::new(),
                }
            })
            .collect();
        Sim {
            now: Time::ZERO,
            routers,
            wire: Vec::new(),
            seq: 0,
            rng: Rng(seed),
            loss_per_mille: 0,
            max_delay: Duration::ZERO,
            side: vec![0; specs.len()],
            history: Vec::new(),
        }
    }

    fn start_all(&mut self) {
        for i in 0..self.routers.len() {
            self.start(i);
        }
    }

    fn start(&mut self, i: usize) {
        self.routers[i].alive = true;
        self.input(i, Input::Startup);
    }

    /// Power off: no more processing, no priority-0 advert.
    fn kill(&mut self, i: usize) {
        self.routers[i].alive = false;
        self.observe();
    }

    /// Orderly stop: Shutdown (priority 0 if master), then off.
    fn shutdown(&mut self, i: usize) {
        self.input(i, Input::Shutdown);
        self.routers[i].alive = false;
        self.observe();
    }

    fn input(&mut self, i: usize, input: Input) {
        let actions = self.routers[i].m.handle(self.now, input);
        for action in actions {
            if let Action::SendAdvert { advert, src, dst } = &action {
                for d in dst {
                    let payload = codec::encode(advert, *src, *d).unwrap();
                    self.transmit(i, *src, *d, payload);
                }
            }
            self.routers[i].log.push((self.now, action));
        }
        self.observe();
    }

    fn transmit(&mut self, from: usize, src: IpAddr, dst: IpAddr, payload: Vec<u8>) {
        for to in 0..self.routers.len() {
            let addressed = dst.is_multicast() || dst == self.routers[to].addr;
            if to == from || !addressed || self.side[to] != self.side[from] {
                continue;
            }
            if self.rng.below(1000) < self.loss_per_mille {
                continue;
            }
            let delay = self.rng.below(self.max_delay.as_millis() as u64);
            self.seq += 1;
            self.wire.push(Pending {
                at: self.now + Duration::from_millis(delay),
                seq: self.seq,
                to,
                rx: RxPacket {
                    src,
                    dst,
                    ttl: codec::TTL,
                    payload: payload.clone(),
                },
            });
        }
    }

    fn observe(&mut self) {
        let masters = self.masters();
        if self.history.last().map(|(_, m)| m) != Some(&masters) {
            self.history.push((self.now, masters));
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.routers[i].alive && self.routers[i].m.state() == State::Master)
            .collect()
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    fn run_until(&mut self, end: Time) {
        for _ in 0..1_000_000 {
            let next_packet = self.wire.iter().map(|p| p.at).min();
            let next_timer = self
                .routers
                .iter()
                .filter(|r| r.alive)
                .filter_map(|r| r.m.next_deadline())
                .min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end),
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            // Packets due now, in send order.
            while let Some(idx) = self
                .wire
                .iter()
                .enumerate()
                .filter(|(_, p)| p.at <= self.now)
                .min_by_key(|(_, p)| (p.at, p.seq))
                .map(|(i, _)| i)
            {
                let p = self.wire.swap_remove(idx);
                if self.routers[p.to].alive {
                    self.input(p.to, Input::Packet(p.rx));
                }
            }
            for i in 0..self.routers.len() {
                let due = self.routers[i].alive
                    && self.routers[i]
                        .m
                        .next_deadline()
                        .is_some_and(|d| d <= self.now);
                if due {
                    self.input(i, Input::Timer);
                }
            }
        }
        self.now = end;
    }

    /// The first time at or after `from` when exactly `who` was master.
    fn first_sole_master(&self, who: usize, from: Time) -> Option<Time> {
        let sole = |m: &Vec<usize>| *m == [who];
        // The set in effect at `from`, then every later change.
        let at_from = self.history.iter().rev().find(|(t, _)| *t <= from);
        if at_from.is_some_and(|(_, m)| sole(m)) {
            return Some(from);
        }
        self.history
            .iter()
            .find(|(t, m)| *t > from && sole(m))
            .map(|(t, _)| *t)
    }

    /// Largest number of simultaneous masters at or after `from`.
    fn max_masters_since(&self, from: Time) -> usize {
        let before = self
            .history
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(0, |(_, m)| m.len());
        self.history
            .iter()
            .filter(|(t, _)| *t > from)
            .map(|(_, m)| m.len())
            .chain([before])
            .max()
            .unwrap_or(0)
    }

    fn became_master_at(&self, i: usize, after: Time) -> Option<(Time, Reason)> {
        self.routers[i].log.iter().find_map(|(t, a)| match a {
            Action::StateChange {
                new: State::Master,
                reason,
                ..
            } if *t >= after => Some((*t, *reason)),
            _ => None,
        })
    }

    fn gratuitous_since(&self, i: usize, after: Time) -> usize {
        self.routers[i]
            .log
            .iter()
            .filter(|(t, a)| *t >= after && matches!(a, Action::SendGratuitous { .. }))
            .count()
    }
}

/// The expected winner: highest priority, then highest primary address.
fn winner(specs: &[Spec], among: &[usize]) -> usize {
    *among
        .iter()
        .max_by_key(|&&i| (specs[i].priority, i))
        .unwrap()
}

fn mdi(priority: u8) -> Duration {
    // v3, 1 s: 3 s + ((256 - p) * 100 / 256) cs.
    Duration::from_millis(3000 + (256 - u64::from(priority)) * 100 / 256 * 10)
}

fn skew(priority: u8) -> Duration {
    Duration::from_millis((256 - u64::from(priority)) * 100 / 256 * 10)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// (a) Convergence to one master, the highest priority.
#[test]
fn converges_to_highest_priority() {
    let specs = [spec(100), spec(200), spec(150), spec(50)];
    let mut sim = Sim::new(&specs, 1);
    sim.max_delay = Duration::from_millis(50);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![1]);
    // Never more than one master, from the start.
    assert_eq!(sim.max_masters_since(Time::ZERO), 1, "{:?}", sim.history);
    sim.run_for(secs(60));
    assert_eq!(sim.history.len(), 2, "stable: {:?}", sim.history);
    for (i, r) in sim.routers.iter().enumerate() {
        assert_eq!(
            r.m.stats().ttl_errors + r.m.stats().checksum_errors,
            0,
            "{i}"
        );
    }
}

// (a) Equal priorities: the higher primary address wins the tie.
#[test]
fn equal_priority_tie_breaks_on_address() {
    let specs = [spec(100), spec(100), spec(100)];
    let mut sim = Sim::new(&specs, 2);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![2]);
    let lost = sim.routers[0].log.iter().any(|(_, a)| {
        matches!(
            a,
            Action::StateChange {
                reason: Reason::HigherAddressAdvert,
                ..
            }
        )
    });
    assert!(
        lost,
        "all started together, the lower addresses stepped down"
    );
    sim.run_for(secs(30));
    assert_eq!(sim.masters(), vec![2]);
}

// (b) Kill the master: the highest remaining priority takes over within
// Master_Down_Interval of the last advert it heard.
#[test]
fn master_failure_takeover_within_master_down_interval() {
    let specs = [spec(100), spec(200), spec(150), spec(50)];
    let mut sim = Sim::new(&specs, 3);
    sim.max_delay = Duration::from_millis(20);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![1]);
    let killed_at = sim.now;
    sim.kill(1);
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![2]);
    let (at, reason) = sim.became_master_at(2, killed_at).unwrap();
    assert_eq!(reason, Reason::MasterDownTimer);
    // The last advert was at most one interval (+ delay) before the kill.
    let latest = killed_at + mdi(150);
    let earliest = killed_at + mdi(150) - secs(1) - Duration::from_millis(20);
    assert!(
        at >= earliest && at <= latest,
        "took over at {at:?}, killed at {killed_at:?}"
    );
    assert_eq!(sim.max_masters_since(killed_at), 1);
}

// (c) Priority-0 shutdown: takeover after Skew_Time, not Master_Down_Interval.
#[test]
fn priority_zero_shutdown_takeover_after_skew_time() {
    let specs = [spec(100), spec(200), spec(150)];
    let mut sim = Sim::new(&specs, 4);
    sim.max_delay = Duration::from_millis(5);
    sim.start_all();
    sim.run_for(secs(10));
    let stopped_at = sim.now;
    sim.shutdown(1);
    assert_eq!(sim.routers[1].m.stats().priority_zero_tx, 1);
    sim.run_for(secs(5));
    assert_eq!(sim.masters(), vec![2]);
    let (at, reason) = sim.became_master_at(2, stopped_at).unwrap();
    assert_eq!(reason, Reason::PriorityZeroReceived);
    let took = at - stopped_at;
    assert!(
        took >= skew(150) && took <= skew(150) + Duration::from_millis(5),
        "{took:?}"
    );
    assert!(took < mdi(150));
    // The 100 router, whose Skew_Time is longer, stayed backup.
    assert_eq!(sim.routers[0].m.state(), State::Backup);
}

// (d) Partition: two masters; heal: back to one, the highest, without any
// restart, and the survivor re-announces the VIPs.
#[test]
fn partition_then_heal_converges_without_restart() {
    let specs = [spec(100), spec(200), spec(150), spec(50)];
    let mut sim = Sim::new(&specs, 5);
    sim.max_delay = Duration::from_millis(30);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![1]);

    sim.side = vec![0, 0, 1, 1];
    sim.run_for(secs(10));
    assert_eq!(
        sim.masters(),
        vec![1, 2],
        "split brain inside the partition"
    );

    let healed_at = sim.now;
    sim.side = vec![0; 4];
    sim.run_for(secs(5));
    assert_eq!(sim.masters(), vec![1]);
    let converged = sim.first_sole_master(1, healed_at).unwrap();
    assert!(
        converged - healed_at <= secs(1) + Duration::from_millis(60),
        "{:?}",
        converged - healed_at
    );
    // 2 stepped down on hearing 1; nobody restarted.
    assert!(sim.routers[2].log.iter().any(|(t, a)| *t >= healed_at
        && matches!(
            a,
            Action::StateChange {
                old: State::Master,
                new: State::Backup,
                reason: Reason::HigherPriorityAdvert
            }
        )));
    assert!(sim
        .routers
        .iter()
        .all(|r| !r.log.iter().any(|(t, a)| *t >= healed_at
            && matches!(
                a,
                Action::StateChange {
                    new: State::Initialize,
                    ..
                }
            ))));
    // The survivor heard the lower master and re-sent gratuitous ARP.
    assert!(sim.gratuitous_since(1, healed_at) >= 1);
    assert!(sim.routers[1].m.stats().lower_priority_rx_as_master >= 1);
    sim.run_for(secs(60));
    assert_eq!(sim.max_masters_since(converged), 1);
}

// (f) nopreempt: a higher-priority router that starts later stays backup.
#[test]
fn nopreempt_does_not_take_over() {
    let mut high = spec(200);
    high.preempt = false;
    let specs = [spec(100), high];
    let mut sim = Sim::new(&specs, 6);
    sim.start(0);
    sim.run_for(secs(10));
    sim.start(1);
    sim.run_for(secs(60));
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.routers[1].m.stats().became_master, 0);
}

// (f) preempt: the same router with preemption takes over after its
// Master_Down_Interval; preempt_delay adds the delay.
#[test]
fn preempt_and_preempt_delay() {
    for delay in [0, 5] {
        let mut high = spec(200);
        high.preempt_delay = secs(delay);
        let specs = [spec(100), high];
        let mut sim = Sim::new(&specs, 7);
        sim.start(0);
        sim.run_for(Duration::from_millis(10_500));
        let started = sim.now;
        sim.start(1);
        sim.run_for(secs(30));
        assert_eq!(sim.masters(), vec![1], "delay {delay}");
        let (at, reason) = sim.became_master_at(1, started).unwrap();
        assert_eq!(reason, Reason::Preempt, "delay {delay}");
        let took = at - started;
        let expected = secs(delay) + mdi(200);
        assert!(
            took + secs(1) >= expected && took <= expected + secs(1),
            "delay {delay}: took {took:?}, expected about {expected:?}"
        );
        // The old master stepped down on hearing the new one.
        assert_eq!(sim.routers[0].m.state(), State::Backup);
    }
}

// The same scenario over unicast: adverts reach only the listed peers.
#[test]
fn unicast_peers_converge() {
    let specs = [spec(100), spec(200), spec(150)];
    let mut sim = Sim::new(&specs, 8);
    for i in 0..3 {
        let peers: Vec<IpAddr> = (0..3)
            .filter(|&j| j != i)
            .map(|j| sim.routers[j].addr)
            .collect();
        let mut c = sim.routers[i].m.config().clone();
        c.unicast_peers = peers;
        sim.routers[i].m = Instance::new(c, Time::ZERO).unwrap();
    }
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![1]);
    sim.kill(1);
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![2]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // (e) Loss up to 30 %, delays below one interval, a partition, a heal:
    // exactly one master, the right one, within a bounded time; once the
    // loss stops, it stays that way.
    #[test]
    fn lossy_partition_heals(
        seed in any::<u64>(),
        loss in 0u64..=300,
        max_delay in 1u64..1000,
        priorities in prop::collection::hash_set(1u8..=254, 2..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let specs: Vec<Spec> = priorities.into_iter().map(spec).collect();
        let n = specs.len();
        let mut sim = Sim::new(&specs, seed);
        sim.loss_per_mille = loss;
        sim.max_delay = Duration::from_millis(max_delay);
        sim.start_all();
        sim.run_for(secs(10));

        // Partition at a random cut, for a while.
        let cut = 1 + cut.index(n - 1);
        sim.side = (0..n).map(|i| u8::from(i >= cut)).collect();
        sim.run_for(secs(15));

        let healed_at = sim.now;
        sim.side = vec![0; n];
        let all: Vec<usize> = (0..n).collect();
        let expected = winner(&specs, &all);
        sim.run_for(secs(30));
        let first = sim.first_sole_master(expected, healed_at);
        prop_assert!(
            first.is_some_and(|t| t - healed_at <= secs(20)),
            "no sole master {} within 20 s of the heal: {:?}",
            expected,
            sim.history.iter().filter(|(t, _)| *t >= healed_at).collect::<Vec<_>>()
        );

        // Loss stops: one master, the expected one, and it stays.
        sim.loss_per_mille = 0;
        sim.run_for(secs(10));
        prop_assert_eq!(sim.masters(), vec![expected]);
        let settled = sim.now;
        sim.run_for(secs(60));
        prop_assert_eq!(sim.max_masters_since(settled), 1);
        prop_assert_eq!(sim.masters(), vec![expected]);
    }
}
