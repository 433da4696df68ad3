//! Two directors on one segment (network namespaces joined by a bridge)
//! running VRRP: election, takeover after `kill -9`, release with priority
//! 0 on a clean stop, preemption when the higher priority comes back.

use director_tests::netns::{LbTopology, Netns};
use director_tests::vrrp;
use director_tests::{wait_for, Daemon};
use std::time::{Duration, Instant};

const GLOBAL: &str = "dataplane = \"nftables\"\nreconcile_interval = \"1s\"\n";
const VIP: &str = "192.0.2.100";

fn instance(priority: u8, extra: &str) -> String {
    vrrp::instance_config("VI_1", "eth0", 51, priority, &format!("{VIP}/32"), extra)
}

fn has_vip(ns: &Netns) -> bool {
    vrrp::has_addr(ns, "eth0", &format!("{VIP}/32"))
}

fn state(d: &Daemon) -> String {
    vrrp::state(d, "VI_1")
}

fn wait_vip(ns: &Netns, want: bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_for(limit, || (has_vip(ns) == want).then(|| start.elapsed()))
}

#[test]
fn pair_elects_one_master_and_moves_the_vip_on_kill_stop_and_preempt() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let (a_ns, b_ns) = (t.director(0), t.director(1));
    let mut a = Daemon::start_in(a_ns, "lb-a", GLOBAL, &instance(150, ""));
    let b = Daemon::start_in(b_ns, "lb-b", GLOBAL, &instance(100, ""));

    wait_vip(a_ns, true, Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "A never took the VIP\nA:\n{}\nB:\n{}",
            a.log_text(),
            b.log_text()
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(has_vip(a_ns) && !has_vip(b_ns), "exactly one holder");
    assert_eq!(state(&a), "master");
    assert_eq!(state(&b), "backup");
    let text = b.ctl_ok(&["vrrp"]);
    assert!(text.contains("VI_1") && text.contains("BACKUP"), "{text}");
    assert!(text.contains("198.51.100.10 (150"), "master heard: {text}");

    // kill -9: nothing is released; B waits Master_Down_Interval
    // (3 x 100 ms + Skew_Time 60 ms).
    a.kill9();
    let took = wait_vip(b_ns, true, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("B never took over\n{}", b.log_text()));
    assert!(took < Duration::from_millis(1500), "takeover took {took:?}");
    assert_eq!(state(&b), "master");
    // The killed A still has the VIP configured (nobody removed it). A
    // restart as a backup clears it up instead of answering for it.
    assert!(has_vip(a_ns));
    a.rewrite_config(GLOBAL, &instance(50, ""));
    a.spawn();
    wait_vip(a_ns, false, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("A kept a stale VIP as backup\n{}", a.log_text()));
    assert_eq!(state(&a), "backup");
    assert!(has_vip(b_ns));
    a.kill9();
    a.rewrite_config(GLOBAL, &instance(150, ""));

    // A comes back with the higher priority and preempts.
    a.spawn();
    wait_vip(b_ns, false, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("B kept the VIP after A's return\n{}", b.log_text()));
    assert!(has_vip(a_ns));
    assert_eq!(state(&a), "master");

    // A clean stop releases at once: priority 0, B takes over after
    // Skew_Time, A removes its VIP.
    let start = Instant::now();
    assert!(a.terminate(), "A did not exit on SIGTERM");
    wait_vip(b_ns, true, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("B did not take over after A's stop\n{}", b.log_text()));
    let took = start.elapsed();
    assert!(!has_vip(a_ns), "A left its VIP behind");
    assert!(took < Duration::from_millis(1000), "release took {took:?}");
}

#[test]
fn nopreempt_backup_keeps_a_lower_priority_master() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let (a_ns, b_ns) = (t.director(0), t.director(1));
    let _b = Daemon::start_in(b_ns, "lb-b", GLOBAL, &instance(100, ""));
    wait_vip(b_ns, true, Duration::from_secs(5)).expect("B master alone");
    let a = Daemon::start_in(a_ns, "lb-a", GLOBAL, &instance(150, "preempt = false"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(has_vip(b_ns) && !has_vip(a_ns), "nopreempt A took over");
    assert_eq!(state(&a), "backup");
}
