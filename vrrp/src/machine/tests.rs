//! Unit tests of the RFC 5798 section 6 rules, one per rule, citing it.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::codec::{encode, Auth, MULTICAST_V4};

const ME: &str = "10.0.0.2";
const VIP: &str = "192.0.2.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn config(priority: u8) -> Config {
    let mut c = Config::new(7, ip(ME), vec![ip(VIP)]);
    c.priority = priority;
    c
}

fn started(c: Config) -> Instance {
    let mut m = Instance::new(c, Time::ZERO).unwrap();
    m.handle(Time::ZERO, Input::Startup);
    m
}

/// Run the timer at the deadline until `state` (at most a few steps).
fn run_until(m: &mut Instance, state: State) -> Time {
    for _ in 0..10 {
        if m.state() == state {
            break;
        }
        let d = m.next_deadline().expect("a deadline");
        m.handle(d, Input::Timer);
    }
    assert_eq!(m.state(), state);
    m.last_transition.unwrap().at
}

/// An advert from `from` as it arrives, valid unless changed.
struct Rx {
    from: &'static str,
    advert: Advert,
    ttl: u8,
    dst: IpAddr,
    corrupt: bool,
}

impl Rx {
    fn v3(from: &'static str, priority: u8) -> Rx {
        Rx {
            from,
            advert: Advert {
                version: Version::V3 {
                    max_advert_int: 100,
                },
                vrid: 7,
                priority,
                addresses: vec![ip(VIP)],
            },
            ttl: 255,
            dst: IpAddr::V4(MULTICAST_V4),
            corrupt: false,
        }
    }

    fn v2(from: &'static str, priority: u8) -> Rx {
        let mut rx = Rx::v3(from, priority);
        rx.advert.version = Version::V2 {
            advert_int: 1,
            auth: Auth::NONE,
        };
        rx
    }

    fn interval(mut self, centis: u16) -> Rx {
        match &mut self.advert.version {
            Version::V3 { max_advert_int } => *max_advert_int = centis,
            Version::V2 { advert_int, .. } => *advert_int = (centis / 100) as u8,
        }
        self
    }

    fn input(&self) -> Input {
        let src = ip(self.from);
        let mut payload = encode(&self.advert, src, self.dst).unwrap();
        if self.corrupt {
            payload[7] ^= 0xff;
        }
        Input::Packet(RxPacket {
            src,
            dst: self.dst,
            ttl: self.ttl,
            payload,
        })
    }
}

fn v2_config(priority: u8) -> Config {
    let mut c = config(priority);
    c.version = 2;
    c
}

fn state_changes(actions: &[Action]) -> Vec<(State, State, Reason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChange { old, new, reason } => Some((*old, *new, *reason)),
            _ => None,
        })
        .collect()
}

fn sent_priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert { advert, .. } => Some(advert.priority),
            _ => None,
        })
        .collect()
}

fn garps(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendGratuitous { repeat, .. } => Some(*repeat),
            _ => None,
        })
        .collect()
}

// ---- timers (RFC 5798 6.1, RFC 3768 6.1) --------------------------------

#[test]
fn timer_formulas() {
    // (version, priority, interval, skew ms, master down interval ms)
    let table: [(u8, u8, Duration, u64, u64); 6] = [
        // RFC 5798 6.1: Skew_Time = ((256 - 100) * 100) / 256 = 60 cs.
        (3, 100, Duration::from_secs(1), 600, 3600),
        // (256 - 254) * 100 / 256 = 0 cs.
        (3, 254, Duration::from_secs(1), 0, 3000),
        (3, 1, Duration::from_secs(1), 990, 3990),
        // (256 - 100) * 50 / 256 = 30 cs.
        (3, 100, Duration::from_millis(500), 300, 1800),
        // RFC 3768 6.1: Skew_Time = (256 - 100) / 256 s = 609 ms.
        (2, 100, Duration::from_secs(1), 609, 3609),
        (2, 200, Duration::from_secs(3), 218, 9218),
    ];
    for (version, priority, interval, skew, mdi) in table {
        let mut c = config(priority);
        c.version = version;
        c.advert_interval = interval;
        let m = Instance::new(c, Time::ZERO).unwrap();
        assert_eq!(
            m.skew_time(),
            Duration::from_millis(skew),
            "v{version} p{priority}"
        );
        assert_eq!(
            m.master_down_interval(),
            Duration::from_millis(mdi),
            "v{version} p{priority}"
        );
    }
}

// ---- 6.4.1 Initialize ---------------------------------------------------

#[test]
fn startup_owner_goes_straight_to_master() {
    // RFC 5798 6.4.1: "If the Priority = 255 ... Send an ADVERTISEMENT ...
    // broadcast a gratuitous ARP ... Set the Adver_Timer ... Transition to
    // the Master state".
    let mut m = Instance::new(config(255), Time::ZERO).unwrap();
    let actions = m.handle(t(0), Input::Startup);
    assert_eq!(
        actions,
        vec![
            Action::StateChange {
                old: State::Initialize,
                new: State::Master,
                reason: Reason::StartupOwner
            },
            Action::AddVips {
                addresses: vec![ip(VIP)],
                accept: true
            },
            Action::SendAdvert {
                advert: m.advert(255),
                src: ip(ME),
                dst: vec![IpAddr::V4(MULTICAST_V4)]
            },
            Action::SendGratuitous {
                addresses: vec![ip(VIP)],
                repeat: 5
            },
        ]
    );
    assert_eq!(m.next_deadline(), Some(t(1000)));
}

#[test]
fn startup_non_owner_goes_to_backup_with_master_down_timer() {
    // RFC 5798 6.4.1: "Set the Master_Down_Timer to Master_Down_Interval;
    // Transition to the Backup state".
    let mut m = Instance::new(config(100), Time::ZERO).unwrap();
    let actions = m.handle(t(0), Input::Startup);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Initialize, State::Backup, Reason::Startup)]
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(m.next_deadline(), Some(t(3600)));
}

#[test]
fn nothing_runs_before_startup() {
    let mut m = Instance::new(config(100), Time::ZERO).unwrap();
    assert_eq!(m.next_deadline(), None);
    assert!(m.handle(t(5), Rx::v3("10.0.0.9", 200).input()).is_empty());
    assert!(m.handle(t(5), Input::Timer).is_empty());
    assert_eq!(m.stats().adverts_rx, 0);
}

// ---- 6.4.2 Backup -------------------------------------------------------

#[test]
fn backup_master_down_timer_fires() {
    // RFC 5798 6.4.2: "If the Master_Down_Timer fires, then: Send an
    // ADVERTISEMENT; ... gratuitous ARP ...; Transition to the Master state".
    let mut m = started(config(100));
    assert!(m.handle(t(3599), Input::Timer).is_empty());
    let actions = m.handle(t(3600), Input::Timer);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Backup, State::Master, Reason::MasterDownTimer)]
    );
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(garps(&actions), vec![5]);
    assert!(matches!(actions[1], Action::AddVips { .. }));
    assert!(m.vips_set());
    assert_eq!(m.stats().became_master, 1);
    assert_eq!(m.status().master, Some(ip(ME)));
}

#[test]
fn backup_follows_higher_or_equal_priority_and_resets_timer() {
    // RFC 5798 6.4.2: "If Preempt_Mode is False, or if the Priority in the
    // ADVERTISEMENT is greater than or equal to the local Priority, then:
    // ... Reset the Master_Down_Timer to Master_Down_Interval".
    for priority in [100, 101, 254, 255] {
        let mut m = started(config(100));
        assert!(m
            .handle(t(2000), Rx::v3("10.0.0.9", priority).input())
            .is_empty());
        assert_eq!(
            m.next_deadline(),
            Some(t(2000 + 3600)),
            "priority {priority}"
        );
        assert_eq!(m.status().master, Some(ip("10.0.0.9")));
        assert_eq!(m.stats().adverts_rx, 1);
    }
}

#[test]
fn backup_learns_master_adver_interval_v3() {
    // RFC 5798 6.4.2: "Set Master_Adver_Interval to Adver Interval contained
    // in the ADVERTISEMENT; Recompute the Master_Down_Interval".
    let mut m = started(config(100));
    m.handle(t(0), Rx::v3("10.0.0.9", 150).interval(200).input());
    // 3 * 200 cs + (156 * 200 / 256 = 121 cs) = 7210 ms.
    assert_eq!(m.next_deadline(), Some(t(7210)));
    assert_eq!(m.status().master_adver_interval_centis, 200);
    // Counted as an interval mismatch (RFC 6527), not discarded.
    assert_eq!(m.stats().interval_errors, 1);
    assert_eq!(m.stats().adverts_rx, 1);
}

#[test]
fn backup_priority_zero_sets_timer_to_skew_time() {
    // RFC 5798 6.4.2: "If the Priority in the ADVERTISEMENT is zero, then:
    // Set the Master_Down_Timer to Skew_Time".
    let mut m = started(config(100));
    m.handle(t(1000), Rx::v3("10.0.0.9", 150).input());
    m.handle(t(1500), Rx::v3("10.0.0.9", 0).input());
    assert_eq!(m.next_deadline(), Some(t(1500 + 600)));
    assert_eq!(m.stats().priority_zero_rx, 1);
    let actions = m.handle(t(2100), Input::Timer);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Backup, State::Master, Reason::PriorityZeroReceived)]
    );
}

#[test]
fn backup_preempts_lower_priority_master() {
    // RFC 5798 6.4.2: with Preempt_Mode True a lower-priority advert is
    // discarded, so the Master_Down_Timer fires.
    let mut m = started(config(150));
    m.handle(t(0), Rx::v3("10.0.0.9", 200).input()); // follow, timer at 3000 + skew
    let deadline = m.next_deadline().unwrap();
    m.handle(t(1000), Rx::v3("10.0.0.9", 100).input()); // master's priority fell
    assert_eq!(
        m.next_deadline(),
        Some(deadline),
        "discarded: timer not reset"
    );
    let actions = m.handle(deadline, Input::Timer);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Backup, State::Master, Reason::Preempt)]
    );
}

#[test]
fn nopreempt_backup_follows_lower_priority_master() {
    // RFC 5798 6.4.2: "If Preempt_Mode is False ... Reset the
    // Master_Down_Timer".
    let mut c = config(150);
    c.preempt = false;
    let mut m = started(c);
    for i in 0..10 {
        let now = t(i * 1000);
        m.handle(now, Rx::v3("10.0.0.9", 100).input());
        assert_eq!(m.next_deadline(), Some(now + m.master_down_interval()));
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn preempt_delay_follows_lower_master_for_the_delay() {
    // keepalived preempt_delay: keep following a lower-priority master for
    // the delay, then preempt as RFC 5798 6.4.2 does.
    let mut c = config(150);
    c.preempt_delay = Duration::from_secs(10);
    let mut m = started(c);
    // Startup waits Master_Down_Interval + preempt_delay.
    assert_eq!(m.next_deadline(), Some(t(3000 + 410 + 10_000)));
    let mut last_followed = Time::ZERO;
    for i in 1..20 {
        let now = t(i * 1000);
        m.handle(now, Rx::v3("10.0.0.9", 100).input());
        if now < t(1000 + 10_000) {
            assert_eq!(
                m.next_deadline(),
                Some(now + m.master_down_interval()),
                "{i}"
            );
            last_followed = now;
        } else {
            assert_eq!(
                m.next_deadline(),
                Some(last_followed + m.master_down_interval()),
                "{i}"
            );
        }
        if m.next_deadline().unwrap() <= t((i + 1) * 1000) {
            break;
        }
    }
    let at = run_until(&mut m, State::Master);
    assert_eq!(at, t(10_000) + m.master_down_interval());
    assert_eq!(m.last_transition.unwrap().reason, Reason::Preempt);
}

// ---- 6.4.3 Master -------------------------------------------------------

fn master(c: Config) -> Instance {
    let mut m = started(c);
    run_until(&mut m, State::Master);
    m
}

#[test]
fn master_adver_timer_sends_periodically() {
    // RFC 5798 6.4.3: "If the Adver_Timer fires, then: Send an
    // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
    let mut c = config(100);
    c.garp.master_delay = Duration::ZERO;
    let mut m = master(c);
    let start = m.last_transition.unwrap().at;
    for i in 1..=5 {
        assert_eq!(m.next_deadline(), Some(start + Duration::from_secs(i)));
        let actions = m.handle(m.next_deadline().unwrap(), Input::Timer);
        assert_eq!(sent_priorities(&actions), vec![100]);
    }
    assert_eq!(m.stats().adverts_tx, 6);
}

#[test]
fn master_answers_priority_zero_at_once() {
    // RFC 5798 6.4.3: "If the Priority in the ADVERTISEMENT is zero, then:
    // Send an ADVERTISEMENT; Reset the Adver_Timer".
    let mut c = config(100);
    c.garp.master_delay = Duration::ZERO;
    let mut m = master(c);
    let now = m.last_transition.unwrap().at + Duration::from_millis(300);
    let actions = m.handle(now, Rx::v3("10.0.0.9", 0).input());
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(m.next_deadline(), Some(now + Duration::from_secs(1)));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn master_steps_down_for_higher_priority_or_address() {
    // RFC 5798 6.4.3: "If the Priority in the ADVERTISEMENT is greater than
    // the local Priority, or the Priority ... is equal to the local Priority
    // and the primary IPvX Address of the sender is greater than the local
    // primary IPvX Address, then: ... Transition to the Backup state".
    let table = [
        ("10.0.0.9", 101, Some(Reason::HigherPriorityAdvert)),
        ("10.0.0.1", 101, Some(Reason::HigherPriorityAdvert)),
        ("10.0.0.9", 100, Some(Reason::HigherAddressAdvert)),
        ("10.0.0.1", 100, None),
        ("10.0.0.9", 99, None),
    ];
    for (from, priority, reason) in table {
        let mut m = master(config(100));
        let now = m.last_transition.unwrap().at + Duration::from_millis(100);
        let actions = m.handle(now, Rx::v3(from, priority).interval(200).input());
        match reason {
            Some(reason) => {
                assert_eq!(
                    state_changes(&actions),
                    vec![(State::Master, State::Backup, reason)],
                    "{from} {priority}"
                );
                assert!(actions.contains(&Action::RemoveVips {
                    addresses: vec![ip(VIP)]
                }));
                // higher_prio_send_advert: one last advert, our priority.
                assert_eq!(sent_priorities(&actions), vec![100]);
                assert!(!m.vips_set());
                // Learned 200 cs: 3 * 2000 + 156 * 200 / 256 cs.
                assert_eq!(m.next_deadline(), Some(now + Duration::from_millis(7210)));
                assert_eq!(m.stats().released_master, 1);
            }
            None => {
                assert_eq!(m.state(), State::Master, "{from} {priority}");
                assert!(state_changes(&actions).is_empty());
            }
        }
    }
}

#[test]
fn master_heals_split_brain_on_lower_priority_advert() {
    // RFC 5798 6.4.3 would discard; keepalived (and we) answer with an
    // advert so the other master steps down, and re-send gratuitous ARP so
    // upstream caches point back at us. GARP bursts are rate-limited.
    let mut c = config(150);
    c.garp.master_delay = Duration::ZERO;
    let mut m = master(c);
    let base = m.last_transition.unwrap().at;
    let actions = m.handle(
        base + Duration::from_millis(100),
        Rx::v3("10.0.0.9", 100).input(),
    );
    assert_eq!(sent_priorities(&actions), vec![150]);
    assert_eq!(garps(&actions), vec![5]);
    assert_eq!(m.next_deadline(), Some(base + Duration::from_millis(1100)));
    // Within lower_prio_delay (5 s): advert only.
    let actions = m.handle(
        base + Duration::from_secs(2),
        Rx::v3("10.0.0.9", 100).input(),
    );
    assert_eq!(sent_priorities(&actions), vec![150]);
    assert!(garps(&actions).is_empty());
    // After it: GARP again.
    let actions = m.handle(
        base + Duration::from_secs(6),
        Rx::v3("10.0.0.9", 100).input(),
    );
    assert_eq!(garps(&actions), vec![5]);
    assert_eq!(m.stats().lower_priority_rx_as_master, 3);

    // Off: plain RFC discard.
    let mut c = config(150);
    c.lower_prio_advert = false;
    let mut m = master(c);
    let now = m.last_transition.unwrap().at + Duration::from_millis(100);
    assert!(m.handle(now, Rx::v3("10.0.0.9", 100).input()).is_empty());
}

#[test]
fn stepping_down_silently_when_asked() {
    let mut c = config(100);
    c.higher_prio_send_advert = false;
    let mut m = master(c);
    let now = m.last_transition.unwrap().at + Duration::from_millis(100);
    let actions = m.handle(now, Rx::v3("10.0.0.9", 200).input());
    assert_eq!(m.state(), State::Backup);
    assert!(sent_priorities(&actions).is_empty());
}

#[test]
fn owner_never_steps_down() {
    // RFC 5798 7.1: the address owner discards adverts; it stays Master
    // even against another 255 with a higher address (a misconfiguration).
    let mut m = started(config(255));
    let actions = m.handle(t(100), Rx::v3("10.0.0.9", 255).input());
    assert_eq!(m.state(), State::Master);
    assert!(state_changes(&actions).is_empty());
}

#[test]
fn shutdown_as_master_releases() {
    // RFC 5798 6.4.3: "If a Shutdown event is received, then: Cancel the
    // Adver_Timer; Send an ADVERTISEMENT with Priority = 0; Transition to
    // the Initialize state".
    let mut m = master(config(100));
    let actions = m.handle(t(10_000), Input::Shutdown);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Master, State::Initialize, Reason::Shutdown)]
    );
    assert_eq!(sent_priorities(&actions), vec![0]);
    assert!(actions.contains(&Action::RemoveVips {
        addresses: vec![ip(VIP)]
    }));
    assert_eq!(m.next_deadline(), None);
    assert_eq!(m.stats().priority_zero_tx, 1);
    assert_eq!(m.stats().released_master, 1);
}

#[test]
fn shutdown_retain_keeps_vips_and_stays_silent() {
    let mut c = config(100);
    c.shutdown = ShutdownMode::Retain;
    let mut m = master(c);
    let actions = m.handle(t(10_000), Input::Shutdown);
    assert_eq!(actions.len(), 1);
    assert!(m.vips_set());
    // Restarted: it comes back as Backup and gives the VIPs up.
    let actions = m.handle(t(11_000), Input::Startup);
    assert!(actions.contains(&Action::RemoveVips {
        addresses: vec![ip(VIP)]
    }));
}

#[test]
fn shutdown_as_backup() {
    // RFC 5798 6.4.2: "If a Shutdown event is received, then: Cancel the
    // Master_Down_Timer; Transition to the Initialize state".
    let mut m = started(config(100));
    let actions = m.handle(t(100), Input::Shutdown);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Backup, State::Initialize, Reason::Shutdown)]
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(m.next_deadline(), None);
}

// ---- gratuitous ARP schedule --------------------------------------------

#[test]
fn garp_schedule_mirrors_keepalived() {
    // keepalived.conf(5): garp_master_repeat messages on becoming master,
    // garp_master_repeat more after garp_master_delay, then
    // garp_master_refresh_repeat every garp_master_refresh.
    let mut c = config(100);
    c.garp.master_delay = Duration::from_millis(5500);
    c.garp.master_refresh = Some(Duration::from_secs(60));
    c.garp.master_refresh_repeat = 2;
    let mut m = started(c);
    let mut log = Vec::new();
    let mut now = Time::ZERO;
    while now < t(3600 + 130_000) {
        now = m.next_deadline().unwrap();
        for r in garps(&m.handle(now, Input::Timer)) {
            log.push((now.as_millis() - 3600, r));
        }
    }
    assert_eq!(log, vec![(0, 5), (5500, 5), (60_000, 2), (120_000, 2)]);
}

// ---- Fault --------------------------------------------------------------

#[test]
fn fault_table() {
    // (start as master?, fault input, reason, priority-0 sent?)
    let table = [
        (true, Input::InterfaceDown, Reason::InterfaceDown, false),
        (
            true,
            Input::Fault {
                source: "chk_nginx".into(),
            },
            Reason::TrackedFault,
            true,
        ),
        (false, Input::InterfaceDown, Reason::InterfaceDown, false),
        (
            false,
            Input::Fault {
                source: "chk_nginx".into(),
            },
            Reason::TrackedFault,
            false,
        ),
    ];
    for (as_master, input, reason, zero) in table {
        let mut m = if as_master {
            master(config(100))
        } else {
            started(config(100))
        };
        let old = m.state();
        let actions = m.handle(t(20_000), input.clone());
        assert_eq!(
            state_changes(&actions),
            vec![(old, State::Fault, reason)],
            "{input:?}"
        );
        assert_eq!(
            sent_priorities(&actions),
            if zero { vec![0] } else { vec![] }
        );
        assert!(!m.vips_set());
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.wanted_state(), State::Backup);
        // In Fault, adverts are counted but change nothing.
        let actions = m.handle(t(20_500), Rx::v3("10.0.0.9", 0).input());
        assert!(actions.is_empty());
        assert_eq!(m.state(), State::Fault);
    }
}

#[test]
fn leaving_fault_needs_every_source_cleared() {
    let mut m = started(config(100));
    m.handle(t(0), Input::InterfaceDown);
    m.handle(
        t(0),
        Input::Fault {
            source: "chk".into(),
        },
    );
    assert_eq!(
        m.status().faults,
        vec!["interface".to_string(), "chk".to_string()]
    );
    assert!(m.handle(t(1), Input::InterfaceUp).is_empty());
    assert_eq!(m.state(), State::Fault);
    let actions = m.handle(
        t(2),
        Input::FaultCleared {
            source: "chk".into(),
        },
    );
    assert_eq!(
        state_changes(&actions),
        vec![(State::Fault, State::Backup, Reason::FaultCleared)]
    );
    assert_eq!(m.next_deadline(), Some(t(2 + 3600)));
}

#[test]
fn owner_leaves_fault_as_master_and_startup_in_fault() {
    let mut m = Instance::new(config(255), Time::ZERO).unwrap();
    m.handle(t(0), Input::InterfaceDown);
    let actions = m.handle(t(0), Input::Startup);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Initialize, State::Fault, Reason::InterfaceDown)]
    );
    assert_eq!(m.wanted_state(), State::Master);
    let actions = m.handle(t(5), Input::InterfaceUp);
    assert_eq!(
        state_changes(&actions),
        vec![(State::Fault, State::Master, Reason::InterfaceUp)]
    );
}

// ---- priority tracking --------------------------------------------------

#[test]
fn priority_delta_clamps_like_keepalived() {
    // (base, delta, effective)
    let table = [
        (100, -60, 40),
        (100, -200, 1),
        (100, 200, 254),
        (100, 0, 100),
        (255, -100, 255),
    ];
    for (base, delta, effective) in table {
        let mut m = started(config(base));
        m.handle(t(1), Input::SetPriorityDelta { delta });
        assert_eq!(m.effective_priority(), effective, "{base} {delta}");
        assert_eq!(m.status().base_priority, base);
    }
}

#[test]
fn master_advertises_priority_change_at_once() {
    let mut m = master(config(100));
    let actions = m.handle(t(10_000), Input::SetPriorityDelta { delta: -50 });
    assert_eq!(sent_priorities(&actions), vec![50]);
    // Same value again: nothing.
    assert!(m
        .handle(t(10_001), Input::SetPriorityDelta { delta: -50 })
        .is_empty());
}

#[test]
fn lowered_priority_lets_preempting_backup_take_over() {
    // The backup (150) follows a 200 master; the master tracks down to 120:
    // the backup discards its adverts and preempts.
    let mut b = started(config(150));
    b.handle(t(0), Rx::v3("10.0.0.9", 200).input());
    b.handle(t(1000), Rx::v3("10.0.0.9", 120).input());
    b.handle(t(2000), Rx::v3("10.0.0.9", 120).input());
    let at = run_until(&mut b, State::Master);
    assert_eq!(at, t(0) + b.master_down_interval());
}

// ---- receive validation (RFC 5798 7.1, RFC 3768 7.1, RFC 6527) ----------

#[test]
fn invalid_packets_are_counted_and_change_nothing() {
    type Case = (&'static str, Config, Rx, fn(&Stats) -> u64);
    let mut corrupt = Rx::v3("10.0.0.9", 200);
    corrupt.corrupt = true;
    let mut ttl = Rx::v3("10.0.0.9", 200);
    ttl.ttl = 254;
    let mut vrid = Rx::v3("10.0.0.9", 200);
    vrid.advert.vrid = 8;
    let mut pass = v2_config(100);
    pass.auth = V2Auth::SimpleText("secret".into());
    let mut wrong_pass = Rx::v2("10.0.0.9", 200);
    wrong_pass.advert.version = Version::V2 {
        advert_int: 1,
        auth: Auth::simple_text(b"guess"),
    };
    let mut addr_v2 = Rx::v2("10.0.0.9", 200);
    addr_v2.advert.addresses = vec![ip("192.0.2.99")];
    let cases: Vec<Case> = vec![
        ("ttl", config(100), ttl, |s| s.ttl_errors),
        ("checksum", config(100), corrupt, |s| s.checksum_errors),
        ("v2 to v3", config(100), Rx::v2("10.0.0.9", 200), |s| {
            s.version_errors
        }),
        ("v3 to v2", v2_config(100), Rx::v3("10.0.0.9", 200), |s| {
            s.version_errors
        }),
        ("vrid", config(100), vrid, |s| s.vrid_errors),
        ("auth type", pass.clone(), Rx::v2("10.0.0.9", 200), |s| {
            s.auth_errors
        }),
        ("password", pass, wrong_pass, |s| s.auth_errors),
        // RFC 3768 7.1: v2 interval mismatch MUST be discarded.
        (
            "v2 interval",
            v2_config(100),
            Rx::v2("10.0.0.9", 200).interval(300),
            |s| s.interval_errors,
        ),
        // RFC 3768 7.1: v2 address mismatch from a non-owner is dropped.
        ("v2 addresses", v2_config(100), addr_v2, |s| {
            s.address_list_errors
        }),
    ];
    for (name, c, rx, counter) in cases {
        let mut m = started(c);
        let deadline = m.next_deadline();
        let actions = m.handle(t(1000), rx.input());
        assert_eq!(actions.len(), 1, "{name}: {actions:?}");
        assert!(
            matches!(
                actions[0],
                Action::Anomaly {
                    discarded: true,
                    ..
                }
            ),
            "{name}: {actions:?}"
        );
        assert_eq!(counter(m.stats()), 1, "{name}");
        assert_eq!(m.stats().adverts_rx, 0, "{name}");
        assert_eq!(m.next_deadline(), deadline, "{name}: timer moved");
        assert_eq!(m.state(), State::Backup, "{name}");
    }
}

#[test]
fn malformed_bytes_are_counted_by_kind() {
    let raw = |payload: Vec<u8>| {
        Input::Packet(RxPacket {
            src: ip("10.0.0.9"),
            dst: IpAddr::V4(MULTICAST_V4),
            ttl: 255,
            payload,
        })
    };
    let good = encode(
        &Rx::v3("10.0.0.9", 200).advert,
        ip("10.0.0.9"),
        IpAddr::V4(MULTICAST_V4),
    )
    .unwrap();
    let mut bad_type = good.clone();
    bad_type[0] = 0x32;
    let mut bad_version = good.clone();
    bad_version[0] = 0x41;
    type Counter = fn(&Stats) -> u64;
    let table: [(Vec<u8>, Counter); 5] = [
        (good[..5].to_vec(), |s| s.packet_length_errors),
        ([good.clone(), vec![0]].concat(), |s| s.packet_length_errors),
        (good[..8].to_vec(), |s| s.packet_length_errors),
        (bad_type, |s| s.invalid_type),
        (bad_version, |s| s.version_errors),
    ];
    for (payload, counter) in table {
        let mut m = started(config(100));
        let actions = m.handle(t(1), raw(payload.clone()));
        assert!(
            matches!(
                actions[..],
                [Action::Anomaly {
                    discarded: true,
                    ..
                }]
            ),
            "{payload:02x?}"
        );
        assert_eq!(counter(m.stats()), 1, "{payload:02x?}");
    }
}

#[test]
fn v3_address_list_mismatch_is_reported_but_processed() {
    // RFC 5798 7.1: "MAY verify that 'Count IPvX Addrs' and the list of
    // IPvX address(es) match ... SHOULD log the event" -- no discard in v3.
    // This is how a VRID clash with a neighbouring cluster shows.
    let mut m = started(config(100));
    let mut rx = Rx::v3("10.0.0.9", 200);
    rx.advert.addresses = vec![ip("192.0.2.99"), ip("192.0.2.98")];
    let actions = m.handle(t(1000), rx.input());
    assert_eq!(
        actions,
        vec![Action::Anomaly {
            from: ip("10.0.0.9"),
            anomaly: Anomaly::AddressListMismatch {
                received: vec![ip("192.0.2.99"), ip("192.0.2.98")]
            },
            discarded: false
        }]
    );
    assert_eq!(m.stats().address_list_errors, 1);
    assert_eq!(m.stats().adverts_rx, 1);
    assert_eq!(m.next_deadline(), Some(t(1000 + 3600)));
}

#[test]
fn v2_owner_address_mismatch_is_processed() {
    // RFC 3768 7.1: "If the packet was not generated by the address owner
    // (Priority does not equal 255 (decimal)), the receiver MUST drop the
    // packet, otherwise continue processing."
    let mut m = started(v2_config(100));
    let mut rx = Rx::v2("10.0.0.9", 255);
    rx.advert.addresses = vec![ip("192.0.2.99")];
    let actions = m.handle(t(1000), rx.input());
    assert!(matches!(
        actions[..],
        [Action::Anomaly {
            discarded: false,
            ..
        }]
    ));
    assert_eq!(m.stats().adverts_rx, 1);
}

#[test]
fn address_order_does_not_matter_and_own_adverts_are_ignored() {
    let mut c = config(100);
    c.vips = vec![ip("192.0.2.1"), ip("192.0.2.2")];
    let mut m = started(c);
    let mut rx = Rx::v3("10.0.0.9", 200);
    rx.advert.addresses = vec![ip("192.0.2.2"), ip("192.0.2.1")];
    assert!(m.handle(t(1), rx.input()).is_empty());
    let before = *m.stats();
    assert!(m.handle(t(2), Rx::v3(ME, 200).input()).is_empty());
    assert_eq!(*m.stats(), before);
}

#[test]
fn unicast_ttl_is_checked_only_when_asked() {
    let mut c = config(100);
    c.unicast_peers = vec![ip("10.0.0.9")];
    let mut rx = Rx::v3("10.0.0.9", 200);
    rx.dst = ip(ME);
    rx.ttl = 64;
    let mut m = started(c.clone());
    assert!(m.handle(t(1), rx.input()).is_empty());
    c.unicast_ttl_check = true;
    let mut m = started(c);
    m.handle(t(1), rx.input());
    assert_eq!(m.stats().ttl_errors, 1);
}

#[test]
fn unicast_adverts_go_to_every_peer() {
    let mut c = config(255);
    c.unicast_peers = vec![ip("10.0.0.9"), ip("10.0.0.10")];
    let mut m = Instance::new(c, Time::ZERO).unwrap();
    let actions = m.handle(t(0), Input::Startup);
    let dst = actions.iter().find_map(|a| match a {
        Action::SendAdvert { dst, .. } => Some(dst.clone()),
        _ => None,
    });
    assert_eq!(dst, Some(vec![ip("10.0.0.9"), ip("10.0.0.10")]));
}

#[test]
fn rfc2787_auth_errors_are_counted_by_kind() {
    // RFC 2787 (VRRPv2 MIB) keeps three counters where RFC 6527 has none:
    // vrrpStatsAuthTypeMismatch, vrrpStatsInvalidAuthType and
    // vrrpStatsAuthFailures; `auth_errors` is their sum.
    let mut pass = v2_config(100);
    pass.auth = V2Auth::SimpleText("secret".into());
    let mut wrong_pass = Rx::v2("10.0.0.9", 200);
    wrong_pass.advert.version = Version::V2 {
        advert_int: 1,
        auth: Auth::simple_text(b"guess"),
    };
    let mut invalid_type = encode(
        &Rx::v2("10.0.0.9", 200).advert,
        ip("10.0.0.9"),
        IpAddr::V4(MULTICAST_V4),
    )
    .unwrap();
    // RFC 3768 5.3.6: Auth Type is octet 4; 3 is undefined.
    invalid_type[4] = 3;
    let mut m = started(pass);
    // A known type that is not ours (none instead of simple text).
    m.handle(t(1), Rx::v2("10.0.0.9", 200).input());
    m.handle(t(2), wrong_pass.input());
    m.handle(t(3), wrong_pass.input());
    m.handle(
        t(4),
        Input::Packet(RxPacket {
            src: ip("10.0.0.9"),
            dst: IpAddr::V4(MULTICAST_V4),
            ttl: 255,
            payload: invalid_type,
        }),
    );
    let s = m.stats();
    assert_eq!(
        (s.auth_type_mismatch, s.auth_failures, s.invalid_auth_type),
        (1, 2, 1)
    );
    assert_eq!(s.auth_errors, 4);
    assert_eq!(s.adverts_rx, 0);
}

#[test]
fn rfc6527_statistics_follow_a_takeover_and_a_release() {
    // One life: backup hears a master (vrrpv3StatisticsRcvdAdvertisements),
    // the master leaves with priority 0
    // (vrrpv3StatisticsRcvdPriZeroPackets, still an advertisement
    // received), we take over after Skew_Time
    // (vrrpv3StatisticsMasterTransitions), advertise, then shut down with
    // priority 0 (vrrpv3StatisticsSentPriZeroPackets).
    let mut c = config(100);
    c.garp.master_delay = Duration::ZERO;
    let mut m = started(c);
    m.handle(t(100), Rx::v3("10.0.0.9", 200).input());
    m.handle(t(1100), Rx::v3("10.0.0.9", 200).input());
    m.handle(t(2100), Rx::v3("10.0.0.9", 0).input());
    let s = *m.stats();
    assert_eq!((s.adverts_rx, s.priority_zero_rx), (3, 1));
    assert_eq!((s.became_master, s.adverts_tx), (0, 0));
    let at = run_until(&mut m, State::Master);
    // RFC 5798 6.4.2: Skew_Time after the priority-0 advert.
    assert_eq!(at, t(2100) + m.skew_time());
    assert_eq!(m.stats().became_master, 1);
    assert_eq!(m.stats().adverts_tx, 1, "the takeover advert");
    // Adver_Timer: one more advert a second later.
    let d = m.next_deadline().unwrap();
    m.handle(d, Input::Timer);
    assert_eq!(m.stats().adverts_tx, 2);
    m.handle(d + Duration::from_millis(10), Input::Shutdown);
    let s = *m.stats();
    assert_eq!(
        (s.adverts_tx, s.priority_zero_tx, s.released_master),
        (3, 1, 1)
    );
    // Our own sends are not receptions.
    assert_eq!((s.adverts_rx, s.priority_zero_rx), (3, 1));
}

// ---- status, serde, config ----------------------------------------------

#[test]
fn status_reports_transition_and_peer() {
    let mut m = started(config(100));
    m.handle(t(500), Rx::v3("10.0.0.9", 200).input());
    let s = m.status();
    assert_eq!(s.state, State::Backup);
    assert_eq!(s.master, Some(ip("10.0.0.9")));
    let heard = s.last_advert.unwrap();
    assert_eq!(
        (heard.address, heard.priority, heard.at),
        (ip("10.0.0.9"), 200, t(500))
    );
    assert_eq!(s.last_transition.unwrap().reason.as_str(), "startup");
    assert!(!s.vips_set);
}

#[test]
fn inputs_and_actions_round_trip_through_json() {
    let inputs = vec![
        Input::Startup,
        Input::Timer,
        Rx::v3("10.0.0.9", 200).input(),
        Input::Fault {
            source: "chk".into(),
        },
        Input::SetPriorityDelta { delta: -20 },
        Input::Group(GroupCommand::Master),
    ];
    for input in inputs {
        let json = serde_json::to_string(&input).unwrap();
        let back: Input = serde_json::from_str(&json).unwrap();
        assert_eq!(back, input, "{json}");
    }
    let json = serde_json::to_string(&Rx::v3("10.0.0.9", 200).input()).unwrap();
    assert!(json.contains(r#""payload":"3107c801"#), "{json}");

    let mut m = Instance::new(config(255), Time::ZERO).unwrap();
    for action in m.handle(t(0), Input::Startup) {
        let json = serde_json::to_string(&action).unwrap();
        let back: Action = serde_json::from_str(&json).unwrap();
        assert_eq!(back, action, "{json}");
    }
    let json = serde_json::to_string(&Action::StateChange {
        old: State::Backup,
        new: State::Master,
        reason: Reason::MasterDownTimer,
    })
    .unwrap();
    assert_eq!(
        json,
        r#"{"action":"state_change","old":"backup","new":"master","reason":"master_down_timer"}"#
    );
}

#[test]
fn config_validation() {
    type Edit = fn(&mut Config);
    let table: Vec<(Edit, ConfigError)> = vec![
        (|c| c.vrid = 0, ConfigError::Vrid),
        (|c| c.priority = 0, ConfigError::Priority),
        (|c| c.version = 4, ConfigError::Version(4)),
        (
            |c| c.advert_interval = Duration::from_millis(1005),
            ConfigError::Interval(Duration::from_millis(1005)),
        ),
        (
            |c| c.advert_interval = Duration::from_secs(41),
            ConfigError::Interval(Duration::from_secs(41)),
        ),
        (
            |c| {
                c.version = 2;
                c.advert_interval = Duration::from_millis(500)
            },
            ConfigError::Interval(Duration::from_millis(500)),
        ),
        (
            |c| c.auth = V2Auth::SimpleText("x".into()),
            ConfigError::AuthOnV3,
        ),
        (|c| c.vips.clear(), ConfigError::NoVips),
        (
            |c| c.vips.push("2001:db8::1".parse().unwrap()),
            ConfigError::VipFamily("2001:db8::1".parse().unwrap()),
        ),
        (
            |c| c.vips.push("192.0.2.1".parse().unwrap()),
            ConfigError::DuplicateVip("192.0.2.1".parse().unwrap()),
        ),
        (
            |c| c.unicast_peers.push("fe80::1".parse().unwrap()),
            ConfigError::PeerFamily("fe80::1".parse().unwrap()),
        ),
        (
            |c| c.garp.master_refresh = Some(Duration::ZERO),
            ConfigError::GarpRefresh,
        ),
    ];
    for (edit, error) in table {
        let mut c = config(100);
        edit(&mut c);
        assert_eq!(c.validate(), Err(error.clone()), "{error}");
    }
    let mut v6 = Config::new(1, ip("fe80::1"), vec![ip("2001:db8::1")]);
    v6.version = 2;
    assert_eq!(v6.validate(), Err(ConfigError::V2OverIpv6));
    assert_eq!(config(100).validate(), Ok(()));
}

#[test]
fn anomaly_names_are_their_serde_tags() {
    let all = [
        Anomaly::Ttl { ttl: 64 },
        Anomaly::Malformed {
            error: DecodeError::BadType { packet_type: 2 },
        },
        Anomaly::VersionMismatch { version: 2 },
        Anomaly::VridMismatch { vrid: 9 },
        Anomaly::AuthTypeMismatch { auth_type: 1 },
        Anomaly::AuthFailure,
        Anomaly::AddressListMismatch { received: vec![] },
        Anomaly::IntervalMismatch { centis: 50 },
    ];
    for a in all {
        let json: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(json["anomaly"], a.as_str(), "{json}");
    }
}
