//! VRRP scenarios on two directors in network namespaces joined by a
//! bridge (the `LbTopology` of `director_tests::netns`): link down on the
//! master, tracked interfaces and scripts (weights, faults, rise/fall),
//! unicast mode, an IPv6 instance, a sync group of two instances, and the
//! split-brain heal. `vrrp_pair.rs` has election, `kill -9`, priority 0
//! and preemption; `vrrp_keepalived.rs` the interop with keepalived.
//!
//! Every test uses 100 ms adverts: Master_Down_Interval is 3 x 100 ms +
//! Skew_Time (RFC 5798 6.1), 360 ms at priority 100. Time limits leave
//! room for a busy machine (1.5 s for a takeover).
//!
//! Needs root; traffic stays inside the namespaces each test creates.

use director_tests::netns::{LbTopology, Netns};
use director_tests::vrrp::{
    addr_line, addresses, has_addr, instance, is_gratuitous_arp, logs, stat, state, wait_addr,
    wait_state, Capture,
};
use director_tests::{wait_for, Daemon};
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_lb-client");
const GLOBAL: &str = "dataplane = \"nftables\"\nreconcile_interval = \"1s\"\n";
const VIP: &str = "192.0.2.100/32";
/// What a takeover after silence may take here: Master_Down_Interval
/// (360 ms) plus a loaded machine's delays.
const TAKEOVER: Duration = Duration::from_millis(1500);
/// Generous limit for things that must happen eventually.
const LIMIT: Duration = Duration::from_secs(5);

/// `assert!` with both daemons' logs in the panic message.
macro_rules! ensure {
    ($a:expr, $b:expr, $cond:expr $(,)?) => {
        ensure!($a, $b, $cond, "{}", stringify!($cond))
    };
    ($a:expr, $b:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic!("{}\n{}", format!($($msg)+), logs(&[("A", $a), ("B", $b)]));
        }
    };
}

/// `assert_eq!` with both daemons' logs in the panic message.
macro_rules! ensure_eq {
    ($a:expr, $b:expr, $left:expr, $right:expr $(, $($msg:tt)+)?) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            panic!(
                "{} == {}{}\n  left: {left:?}\n right: {right:?}\n{}",
                stringify!($left),
                stringify!($right),
                String::new() $(+ ": " + &format!($($msg)+))?,
                logs(&[("A", $a), ("B", $b)])
            );
        }
    }};
}

/// One `[[vrrp_instance]]` with 100 ms adverts.
fn vi(name: &str, dev: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    director_tests::vrrp::instance_config(name, dev, vrid, priority, vip, extra)
}

/// A pair: A (director 0) with priority 150, B (director 1) with 100,
/// both running `VI_1` on eth0 with [`VIP`]; `a_extra`/`b_extra` go into
/// the instances, `a_top` before them (e.g. `[[vrrp_script]]`). Waits
/// until A is master and B backup.
fn pair(t: &LbTopology, a_top: &str, a_extra: &str, b_extra: &str) -> (Daemon, Daemon) {
    let a_body = format!("{a_top}\n{}", vi("VI_1", "eth0", 51, 150, VIP, a_extra));
    let a = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &a_body);
    let b = Daemon::start_in(
        t.director(1),
        "lb-b",
        GLOBAL,
        &vi("VI_1", "eth0", 51, 100, VIP, b_extra),
    );
    settle(t, &a, &b, "VI_1", "eth0", VIP);
    (a, b)
}

/// Waits until A (director 0) is master holding `vip` and B backup
/// without it.
fn settle(t: &LbTopology, a: &Daemon, b: &Daemon, name: &str, dev: &str, vip: &str) {
    let ok = wait_for(LIMIT, || {
        (state(a, name) == "master"
            && state(b, name) == "backup"
            && has_addr(t.director(0), dev, vip)
            && !has_addr(t.director(1), dev, vip))
        .then_some(())
    });
    assert!(
        ok.is_some(),
        "{name}: A never became the only master\n{}",
        logs(&[("A", a), ("B", b)])
    );
}

/// A TCP connection attempt from `ns` to `target` (ADDR:PORT, no one
/// listens): the holder of the address answers with a reset, which needs
/// ARP / Neighbor Discovery to resolve it first. No ping on these hosts.
fn reach(ns: &Netns, target: &str) {
    let out = ns.exec(
        CLIENT,
        &[
            "spread",
            "--target",
            target,
            "--count",
            "1",
            "--timeout-ms",
            "2000",
        ],
    );
    assert!(
        out.contains("refused"),
        "{target} did not answer with a reset: {out}"
    );
}

/// Waits for `what` to hold or panics with both logs.
fn expect<T>(a: &Daemon, b: &Daemon, what: &str, got: Option<T>) -> T {
    got.unwrap_or_else(|| panic!("{what}\n{}", logs(&[("A", a), ("B", b)])))
}

/// Effective priority of instance `name`.
fn priority(d: &Daemon, name: &str) -> u64 {
    instance(d, name)["status"]["effective_priority"]
        .as_u64()
        .unwrap_or_default()
}

fn faults(d: &Daemon, name: &str) -> Vec<String> {
    instance(d, name)["status"]["faults"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A takes the instance back (it has the higher priority and preempts).
fn a_takes_back(t: &LbTopology, a: &Daemon, b: &Daemon, what: &str) {
    let got = wait_for(LIMIT, || {
        (state(a, "VI_1") == "master"
            && state(b, "VI_1") == "backup"
            && has_addr(t.director(0), "eth0", VIP)
            && !has_addr(t.director(1), "eth0", VIP))
        .then_some(())
    });
    expect(a, b, &format!("A did not take VI_1 back after {what}"), got);
}

/// B took over: it holds the VIP within [`TAKEOVER`], A does not.
/// `a_state`: the state A must reach (`None`: A is not running).
fn b_takes_over(t: &LbTopology, a: &Daemon, b: &Daemon, what: &str, a_state: Option<&str>) {
    let took = wait_addr(t.director(1), "eth0", VIP, true, LIMIT);
    let took = expect(a, b, &format!("B did not take the VIP after {what}"), took);
    assert!(
        took < TAKEOVER,
        "B took {took:?} to take over after {what}\n{}",
        logs(&[("A", a), ("B", b)])
    );
    if let Some(a_state) = a_state {
        let got = wait_state(a, "VI_1", a_state, LIMIT);
        expect(a, b, &format!("A not {a_state} after {what}"), got);
    }
    let gone = wait_addr(t.director(0), "eth0", VIP, false, LIMIT);
    expect(a, b, &format!("A kept the VIP after {what}"), gone);
    ensure_eq!(a, b, state(b, "VI_1"), "master");
}

/// The interface an instance runs on goes down on the master, first
/// administratively (`ip link set eth0 down` on A), then by losing its
/// carrier (the hub-side end of A's veth goes down): A goes to Fault and
/// drops the VIP, B takes over; when the link returns A is a backup again
/// and preempts.
#[test]
fn link_down_on_the_master_faults_it_and_the_backup_takes_over() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let (a, b) = pair(&t, "", "", "");

    t.director(0).ip(&["link", "set", "eth0", "down"]);
    b_takes_over(&t, &a, &b, "A's eth0 went down", Some("fault"));
    ensure_eq!(&a, &b, faults(&a, "VI_1"), vec!["interface".to_string()]);
    t.director(0).ip(&["link", "set", "eth0", "up"]);
    a_takes_back(&t, &a, &b, "eth0 came back up");
    ensure!(&a, &b, faults(&a, "VI_1").is_empty());

    // Carrier loss: A's eth0 stays administratively up.
    t.hub().ip(&["link", "set", "d0c", "down"]);
    b_takes_over(&t, &a, &b, "A's eth0 lost its carrier", Some("fault"));
    t.hub().ip(&["link", "set", "d0c", "up"]);
    a_takes_back(&t, &a, &b, "the carrier came back");

    // A (re)starts while its link is down (a box booting with a cable
    // out): it runs, in Fault, and joins when the link comes up.
    let mut a = a;
    ensure!(&a, &b, a.terminate());
    b_takes_over(&t, &a, &b, "A's stop", None);
    t.hub().ip(&["link", "set", "d0c", "down"]);
    a.spawn();
    let got = wait_state(&a, "VI_1", "fault", LIMIT);
    expect(&a, &b, "A did not start in Fault with its link down", got);
    t.hub().ip(&["link", "set", "d0c", "up"]);
    a_takes_back(&t, &a, &b, "A's link came up after its start");
}

/// `track_interfaces` with a weight: A's other interface (eth1) going
/// down lowers its priority 150 - 60 = 90 below B's 100, so B preempts;
/// eth1 back up restores 150 and A preempts back.
#[test]
fn tracked_interface_with_weight_lowers_priority_and_the_peer_preempts() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let track = r#"track_interfaces = [{ name = "eth1", weight = -60 }]"#;
    let (a, b) = pair(&t, "", track, "");
    ensure_eq!(&a, &b, priority(&a, "VI_1"), 150);

    t.director(0).ip(&["link", "set", "eth1", "down"]);
    b_takes_over(&t, &a, &b, "A's tracked eth1 went down", Some("backup"));
    ensure_eq!(&a, &b, priority(&a, "VI_1"), 90);
    ensure!(
        &a,
        &b,
        faults(&a, "VI_1").is_empty(),
        "a weight is not a fault"
    );
    // A, now lower, follows B: it stays backup.
    std::thread::sleep(Duration::from_millis(500));
    ensure_eq!(&a, &b, state(&a, "VI_1"), "backup");
    ensure!(&a, &b, has_addr(t.director(1), "eth0", VIP));

    t.director(0).ip(&["link", "set", "eth1", "up"]);
    a_takes_back(&t, &a, &b, "tracked eth1 came back");
    ensure_eq!(&a, &b, priority(&a, "VI_1"), 150);
}

/// `track_interfaces` without a weight (0): the tracked interface going
/// down faults the instance; A releases (priority 0, so B takes over after
/// Skew_Time) and removes its VIP.
#[test]
fn tracked_interface_without_weight_faults_the_instance() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let (a, b) = pair(&t, "", r#"track_interfaces = [{ name = "eth1" }]"#, "");

    t.director(0).ip(&["link", "set", "eth1", "down"]);
    b_takes_over(&t, &a, &b, "A's tracked eth1 went down", Some("fault"));
    ensure_eq!(
        &a,
        &b,
        faults(&a, "VI_1"),
        vec!["track_interface eth1".to_string()]
    );
    ensure!(
        &a,
        &b,
        stat(&a, "VI_1", "priority_zero_tx") >= 1,
        "A did not release"
    );

    t.director(0).ip(&["link", "set", "eth1", "up"]);
    a_takes_back(&t, &a, &b, "tracked eth1 came back");
}

/// `track_scripts`: a weighted script (interval 200 ms, fall 3, rise 2)
/// that fails while a file exists moves the priority down so B preempts,
/// and back up so A preempts back; a script without weight faults A.
/// Hysteresis: three failures in a row take at least two intervals.
#[test]
fn track_scripts_move_priority_with_rise_and_fall_or_fault() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let dir = tempfile::tempdir().expect("tempdir");
    let lower = dir.path().join("lower");
    let fault = dir.path().join("fault");
    // `test ! -e FILE`: argv, no shell.
    let scripts = format!(
        r#"
[[vrrp_script]]
name = "chk_weight"
script = ["/usr/bin/test", "!", "-e", "{}"]
interval = "200ms"
weight = -60
fall = 3
rise = 2

[[vrrp_script]]
name = "chk_fault"
script = ["/usr/bin/test", "!", "-e", "{}"]
interval = "200ms"
fall = 2
rise = 2
"#,
        lower.display(),
        fault.display()
    );
    let track = r#"track_scripts = [{ name = "chk_weight" }, { name = "chk_fault" }]"#;
    let (a, b) = pair(&t, &scripts, track, "");
    ensure_eq!(&a, &b, priority(&a, "VI_1"), 150);

    let start = Instant::now();
    std::fs::write(&lower, b"").expect("create");
    let got = wait_for(LIMIT, || {
        (priority(&a, "VI_1") == 90).then(|| start.elapsed())
    });
    let took = expect(&a, &b, "chk_weight never lowered A's priority", got);
    // fall = 3: runs at (about) 0, 200 and 400 ms after the file appeared.
    ensure!(
        &a,
        &b,
        took >= Duration::from_millis(300),
        "priority dropped after {took:?}: fall = 3 not honoured"
    );
    b_takes_over(&t, &a, &b, "chk_weight failed", Some("backup"));

    let start = Instant::now();
    std::fs::remove_file(&lower).expect("remove");
    let got = wait_for(LIMIT, || {
        (priority(&a, "VI_1") == 150).then(|| start.elapsed())
    });
    let took = expect(&a, &b, "chk_weight never restored A's priority", got);
    ensure!(
        &a,
        &b,
        took >= Duration::from_millis(100),
        "priority restored after {took:?}: rise = 2 not honoured"
    );
    a_takes_back(&t, &a, &b, "chk_weight recovered");

    std::fs::write(&fault, b"").expect("create");
    b_takes_over(&t, &a, &b, "chk_fault failed", Some("fault"));
    ensure_eq!(
        &a,
        &b,
        faults(&a, "VI_1"),
        vec!["track_script chk_fault".to_string()]
    );
    std::fs::remove_file(&fault).expect("remove");
    a_takes_back(&t, &a, &b, "chk_fault recovered");
}

/// Unicast mode (`unicast_peers` both ways): election, takeover after
/// `kill -9`, preemption on return; and no advert ever goes to the
/// multicast group (captured in the hub, which sees every frame either
/// director sends).
#[test]
fn unicast_pair_elects_and_takes_over_without_multicast() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let mut cap = Capture::start(t.hub(), "any", "ip proto 112");
    let a_peer = r#"unicast_peers = ["198.51.100.11"]"#;
    let b_peer = r#"unicast_peers = ["198.51.100.10"]"#;
    let (mut a, b) = pair(&t, "", a_peer, b_peer);
    let seen = cap.wait_line(cap.started(), LIMIT, |l| {
        l.contains("198.51.100.10 > 198.51.100.11: VRRPv3")
    });
    expect(&a, &b, "no unicast advert from A to B captured", seen);

    a.kill9();
    let since = Instant::now();
    let took = wait_addr(t.director(1), "eth0", VIP, true, LIMIT);
    let took = expect(&a, &b, "B did not take over from the killed A", took);
    ensure!(&a, &b, took < TAKEOVER, "takeover took {took:?}");
    let seen = cap.wait_line(since, LIMIT, |l| {
        l.contains("198.51.100.11 > 198.51.100.10: VRRPv3")
    });
    expect(&a, &b, "no unicast advert from B to A captured", seen);

    a.spawn();
    a_takes_back(&t, &a, &b, "A's restart");
    let text = cap.text();
    ensure!(
        &a,
        &b,
        !text.contains("224.0.0.18"),
        "multicast adverts in unicast mode:\n{text}"
    );
}

/// An IPv6 instance (VRRPv3 over IPv6 to ff02::12 from the link-local
/// address, RFC 5798 5.1.2): election, takeover after `kill -9`, the VIP
/// added without duplicate address detection (DAD is on for eth0 here, and
/// the killed master still holds the VIP: with DAD the new master's VIP
/// would fail it), and the client's neighbour entry moved by the new
/// master's unsolicited Neighbor Advertisement.
#[test]
fn ipv6_instance_takes_over_after_kill_with_nodad_and_unsolicited_na() {
    const VIP6: &str = "2001:db8:c::100/128";
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    for d in t.directors() {
        d.sysctl(&[("net.ipv6.conf.eth0.accept_dad", "1")]);
    }
    let mut a = Daemon::start_in(
        t.director(0),
        "lb-a",
        GLOBAL,
        &vi("VI_6", "eth0", 61, 150, VIP6, ""),
    );
    let b = Daemon::start_in(
        t.director(1),
        "lb-b",
        GLOBAL,
        &vi("VI_6", "eth0", 61, 100, VIP6, ""),
    );
    settle(&t, &a, &b, "VI_6", "eth0", VIP6);
    let primary = instance(&a, "VI_6")["primary_address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(&a, &b, primary.starts_with("fe80::"), "source {primary}");
    let line = addr_line(t.director(0), "eth0", VIP6).unwrap_or_default();
    ensure!(
        &a,
        &b,
        line.contains("nodad") && !line.contains("tentative"),
        "A's VIP: {line}"
    );

    // The client resolves the VIP to A.
    let vip = VIP6.trim_end_matches("/128");
    reach(t.client(), &format!("[{vip}]:9"));
    let a_mac = t.director(0).mac("eth0");
    let b_mac = t.director(1).mac("eth0");
    let neigh = || t.client().ip(&["-6", "neigh", "show", vip, "dev", "eth0"]);
    ensure!(&a, &b, neigh().contains(&a_mac), "client: {}", neigh());

    a.kill9();
    let took = wait_addr(t.director(1), "eth0", VIP6, true, LIMIT);
    let took = expect(&a, &b, "B did not take over the IPv6 VIP", took);
    ensure!(&a, &b, took < TAKEOVER, "IPv6 takeover took {took:?}");
    ensure_eq!(&a, &b, state(&b, "VI_6"), "master");
    let line = addr_line(t.director(1), "eth0", VIP6).unwrap_or_default();
    ensure!(
        &a,
        &b,
        line.contains("nodad") && !line.contains("tentative") && !line.contains("dadfailed"),
        "B's VIP: {line}"
    );
    // The killed A still holds its VIP; B's unsolicited NA (Override set,
    // RFC 4861 7.2.6) must have moved the client's entry anyway.
    ensure!(&a, &b, has_addr(t.director(0), "eth0", VIP6));
    let moved = wait_for(LIMIT, || neigh().contains(&b_mac).then_some(()));
    expect(
        &a,
        &b,
        &format!("client still resolves the VIP to A: {}", neigh()),
        moved,
    );
    reach(t.client(), &format!("[{vip}]:9"));
}

/// A sync group of two instances, one per interface (VI_1 on eth0, VI_2 on
/// eth1): both become master on A together; A's eth1 going down faults
/// VI_2 and, through the group, VI_1 too, so B takes both; when eth1
/// returns A takes both back. Then the same with a failing track script
/// (weight 0, what a group member takes: `director check` refuses
/// weights there) on VI_1 alone.
#[test]
fn sync_group_members_move_together_and_one_fault_faults_both() {
    const VIP2: &str = "203.0.113.100/32";
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let dir = tempfile::tempdir().expect("tempdir");
    let down = dir.path().join("down");
    let script = format!(
        "[[vrrp_script]]\nname = \"chk\"\nscript = [\"/usr/bin/test\", \"!\", \"-e\", \"{}\"]\n\
         interval = \"100ms\"\n",
        down.display()
    );
    let group = "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n";
    let body = |prio: u8, track: &str| {
        format!(
            "{script}{}{}{group}",
            vi("VI_1", "eth0", 51, prio, VIP, track),
            vi("VI_2", "eth1", 52, prio, VIP2, "")
        )
    };
    let track = r#"track_scripts = [{ name = "chk" }]"#;
    let a = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body(150, track));
    let b = Daemon::start_in(t.director(1), "lb-b", GLOBAL, &body(100, ""));
    settle(&t, &a, &b, "VI_1", "eth0", VIP);
    settle(&t, &a, &b, "VI_2", "eth1", VIP2);
    ensure_eq!(&a, &b, instance(&a, "VI_1")["group"], "G1");
    let b_has_both = |start: Instant| {
        wait_for(LIMIT, || {
            (state(&b, "VI_1") == "master"
                && state(&b, "VI_2") == "master"
                && has_addr(t.director(1), "eth0", VIP)
                && has_addr(t.director(1), "eth1", VIP2))
            .then(|| start.elapsed())
        })
    };

    let start = Instant::now();
    t.director(0).ip(&["link", "set", "eth1", "down"]);
    let took = expect(&a, &b, "B did not take both instances", b_has_both(start));
    ensure!(&a, &b, took < TAKEOVER, "group takeover took {took:?}");
    ensure_eq!(&a, &b, state(&a, "VI_1"), "fault");
    ensure_eq!(&a, &b, state(&a, "VI_2"), "fault");
    ensure_eq!(&a, &b, faults(&a, "VI_1"), vec!["sync_group".to_string()]);
    // The member whose own fault faulted the group is held by the group
    // too (it leaves Fault when the whole group does).
    ensure!(
        &a,
        &b,
        faults(&a, "VI_2").contains(&"interface".to_string())
    );
    ensure!(
        &a,
        &b,
        !has_addr(t.director(0), "eth0", VIP),
        "A kept VI_1's VIP"
    );

    t.director(0).ip(&["link", "set", "eth1", "up"]);
    settle(&t, &a, &b, "VI_1", "eth0", VIP);
    settle(&t, &a, &b, "VI_2", "eth1", VIP2);

    let start = Instant::now();
    std::fs::write(&down, b"").expect("create");
    let took = expect(
        &a,
        &b,
        "B did not take both on chk's failure",
        b_has_both(start),
    );
    ensure!(&a, &b, took < TAKEOVER, "group takeover took {took:?}");
    ensure_eq!(&a, &b, state(&a, "VI_2"), "fault");
    ensure_eq!(&a, &b, faults(&a, "VI_2"), vec!["sync_group".to_string()]);
    std::fs::remove_file(&down).expect("remove");
    settle(&t, &a, &b, "VI_1", "eth0", VIP);
    settle(&t, &a, &b, "VI_2", "eth1", VIP2);
}

/// Split brain and its heal: VRRP is dropped between the two directors
/// (an nftables rule on the bridge; ARP still flows), so both become
/// master and B's gratuitous ARP points the client at B. When VRRP flows
/// again exactly one master (A, the higher priority) remains, and A,
/// hearing the lower-priority B, re-sends gratuitous ARP so the client
/// points at A again (keepalived's behaviour; RFC 5798 6.4.3 would
/// discard the advert).
#[test]
fn split_brain_heals_to_one_master_that_reannounces_the_vip() {
    // A VIP on the client's subnet, so the client has a neighbour entry
    // for it that gratuitous ARP moves.
    const LAN_VIP: &str = "198.51.100.100/32";
    let vip = "198.51.100.100";
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    // No second gratuitous burst 5 s after becoming master (keepalived's
    // garp_master_delay): every ARP announcement from A after the heal is
    // the heal's.
    let garp = r#"garp_master_delay = "0s""#;
    let a = Daemon::start_in(
        t.director(0),
        "lb-a",
        GLOBAL,
        &vi("VI_1", "eth0", 51, 150, LAN_VIP, garp),
    );
    let b = Daemon::start_in(
        t.director(1),
        "lb-b",
        GLOBAL,
        &vi("VI_1", "eth0", 51, 100, LAN_VIP, garp),
    );
    settle(&t, &a, &b, "VI_1", "eth0", LAN_VIP);
    let a_mac = t.director(0).mac("eth0");
    let b_mac = t.director(1).mac("eth0");
    let client_entry = || t.client().ip(&["-4", "neigh", "show", vip, "dev", "eth0"]);
    reach(t.client(), &format!("{vip}:9"));
    ensure!(
        &a,
        &b,
        client_entry().contains(&a_mac),
        "{}",
        client_entry()
    );

    let mut cap = Capture::start(t.client(), "eth0", "arp");
    t.hub()
        .exec("nft", &["add", "table", "bridge", "partition"]);
    t.hub().exec(
        "nft",
        &[
            "add",
            "chain",
            "bridge",
            "partition",
            "forward",
            "{ type filter hook forward priority 0; }",
        ],
    );
    t.hub().exec(
        "nft",
        &[
            "add",
            "rule",
            "bridge",
            "partition",
            "forward",
            "ip",
            "protocol",
            "112",
            "drop",
        ],
    );
    let got = wait_for(LIMIT, || {
        (state(&b, "VI_1") == "master" && client_entry().contains(&b_mac)).then_some(())
    });
    expect(&a, &b, "B did not become a second master", got);
    std::thread::sleep(Duration::from_millis(500));
    ensure_eq!(&a, &b, state(&a, "VI_1"), "master", "A must stay master");
    ensure_eq!(&a, &b, state(&b, "VI_1"), "master", "B must stay master");
    let heard_before = stat(&a, "VI_1", "lower_priority_rx_as_master");

    let healed = Instant::now();
    t.hub()
        .exec("nft", &["delete", "table", "bridge", "partition"]);
    let got = wait_state(&b, "VI_1", "backup", LIMIT);
    expect(&a, &b, "B stayed master after the heal", got);
    let gone = wait_addr(t.director(1), "eth0", LAN_VIP, false, LIMIT);
    expect(&a, &b, "B kept the VIP after the heal", gone);
    ensure_eq!(&a, &b, state(&a, "VI_1"), "master");
    ensure!(
        &a,
        &b,
        stat(&a, "VI_1", "lower_priority_rx_as_master") > heard_before
    );
    let garp = cap.wait_line(healed, LIMIT, |l| is_gratuitous_arp(l, &a_mac, vip));
    expect(
        &a,
        &b,
        &format!(
            "A sent no gratuitous ARP after the heal; client saw:\n{}",
            cap.text()
        ),
        garp,
    );
    let back = wait_for(LIMIT, || client_entry().contains(&a_mac).then_some(()));
    expect(
        &a,
        &b,
        &format!("client still points at B: {}", client_entry()),
        back,
    );
    // Stays healed.
    std::thread::sleep(Duration::from_millis(500));
    ensure_eq!(
        &a,
        &b,
        (state(&a, "VI_1"), state(&b, "VI_1")),
        ("master".to_string(), "backup".to_string())
    );
}

/// IPv6 while duplicate address detection runs on the link-local
/// address (RFC 4862 5.4: it is tentative for DupAddrDetectTransmits x
/// RetransTimer, 3 s here), which is what a box sees at boot right after
/// its link came up and after every link flap: the director starts with a
/// tentative link-local, and when it takes the VIP back after a flap, its
/// unsolicited Neighbor Advertisements go out at once (no second burst
/// here, `garp_master_delay = "0s"`), so the client follows it.
#[test]
fn ipv6_starts_and_reannounces_while_the_link_local_is_tentative() {
    const VIP6: &str = "2001:db8:c::100/128";
    let vip = "2001:db8:c::100";
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    for d in t.directors() {
        d.sysctl(&[
            ("net.ipv6.conf.eth0.accept_dad", "1"),
            ("net.ipv6.conf.eth0.dad_transmits", "3"),
        ]);
    }
    let (a_ns, b_ns) = (t.director(0), t.director(1));
    // `ip link set up` after `down`: the kernel flushed A's IPv6
    // addresses on the way down (keep_addr_on_down 0); put back what the
    // interface's configuration would.
    let a_addr = format!("{}/64", t.director_client_v6(0));
    let up = || {
        a_ns.ip(&["link", "set", "eth0", "up"]);
        a_ns.ip(&["addr", "replace", &a_addr, "dev", "eth0", "nodad"]);
    };
    let flap = || {
        a_ns.ip(&["link", "set", "eth0", "down"]);
        up();
        let tentative = wait_for(LIMIT, || {
            addresses(a_ns, "eth0")
                .lines()
                .any(|l| l.contains("fe80::") && l.contains("tentative"))
                .then_some(())
        });
        assert!(
            tentative.is_some(),
            "no tentative link-local: {}",
            addresses(a_ns, "eth0")
        );
    };
    let garp = r#"garp_master_delay = "0s""#;
    flap();
    let a = Daemon::start_in(
        a_ns,
        "lb-a",
        GLOBAL,
        &vi("VI_6", "eth0", 61, 150, VIP6, garp),
    );
    let b = Daemon::start_in(
        b_ns,
        "lb-b",
        GLOBAL,
        &vi("VI_6", "eth0", 61, 100, VIP6, garp),
    );
    settle(&t, &a, &b, "VI_6", "eth0", VIP6);

    reach(t.client(), &format!("[{vip}]:9"));
    let a_mac = a_ns.mac("eth0");
    let b_mac = b_ns.mac("eth0");
    let neigh = || t.client().ip(&["-6", "neigh", "show", vip, "dev", "eth0"]);
    ensure!(&a, &b, neigh().contains(&a_mac), "client: {}", neigh());

    a_ns.ip(&["link", "set", "eth0", "down"]);
    let got = wait_addr(b_ns, "eth0", VIP6, true, LIMIT);
    expect(&a, &b, "B did not take over from A's link down", got);
    let got = wait_for(LIMIT, || neigh().contains(&b_mac).then_some(()));
    expect(
        &a,
        &b,
        &format!("client did not follow B: {}", neigh()),
        got,
    );

    // A's link returns; its link-local is tentative for 3 s, and A, with
    // the higher priority, is master again well before that.
    up();
    let got = wait_state(&a, "VI_6", "master", LIMIT);
    expect(&a, &b, "A did not take the VIP back", got);
    let got = wait_for(LIMIT, || neigh().contains(&a_mac).then_some(()));
    expect(
        &a,
        &b,
        &format!(
            "A's Neighbor Advertisements did not reach the client: {}",
            neigh()
        ),
        got,
    );
    ensure!(
        &a,
        &b,
        !a.log_text().contains("gratuitous_failed"),
        "{}",
        logs(&[("A", &a), ("B", &b)])
    );
    reach(t.client(), &format!("[{vip}]:9"));
}

/// Notify hooks of an instance and of its sync group, run as argv (here a
/// shell appending to a log, to record the order): the group's run once
/// per group state, when all members got there, with "GROUP", its name,
/// the state and 0 for the generic `notify`; the stop hooks run on SIGTERM
/// before the daemon exits.
#[test]
fn notify_hooks_of_instances_and_groups_run_in_order() {
    const VIP2: &str = "203.0.113.100/32";
    let t = LbTopology::builder().directors(1).real_servers(1).build();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("notify.log");
    let sh = |what: &str| format!(r#"["/bin/sh", "-c", "echo {what} >> {}"]"#, log.display());
    let vi1 = format!(
        "notify_master = {}\nnotify_stop = {}\n",
        sh("VI_1 master"),
        sh("VI_1 stop")
    );
    let group = format!(
        "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\nnotify_master = {}\n\
         notify = [\"/bin/sh\", \"-c\", \"echo \\\"$*\\\" >> {}\", \"notify\"]\n",
        sh("G1 master"),
        log.display()
    );
    let body = format!(
        "{}{}{group}",
        vi("VI_1", "eth0", 51, 150, VIP, &vi1),
        vi("VI_2", "eth1", 52, 150, VIP2, "")
    );
    let mut a = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let lines = |n: usize| {
        wait_for(LIMIT, || {
            let text = read();
            (text.lines().count() >= n).then_some(text)
        })
        .unwrap_or_else(|| panic!("notify log:\n{}\n{}", read(), a.log_text()))
    };
    lines(4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(),
        "GROUP G1 BACKUP 0\nVI_1 master\nG1 master\nGROUP G1 MASTER 0\n",
        "{}",
        a.log_text()
    );

    t.director(0).ip(&["link", "set", "eth1", "down"]);
    lines(5);
    t.director(0).ip(&["link", "set", "eth1", "up"]);
    lines(9);
    assert!(a.terminate());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(),
        "GROUP G1 BACKUP 0\nVI_1 master\nG1 master\nGROUP G1 MASTER 0\n\
         GROUP G1 FAULT 0\n\
         GROUP G1 BACKUP 0\nVI_1 master\nG1 master\nGROUP G1 MASTER 0\n\
         VI_1 stop\nGROUP G1 STOP 0\n",
        "{}",
        a.log_text()
    );
}
