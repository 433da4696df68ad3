//! IPVS integration tests: real kernel, real `ipvsadm`, real daemon.
//!
//! They need root and a kernel with IPVS, so on the host they are ignored;
//! `tests/lab/suite` runs them inside one boot of the kernel lab, serially
//! (`--test-threads=1`: the IPVS table is global). Without IPVS they fail.
//! Each test starts from an empty table (`ipvsadm -C`).

use director_tests::*;
use std::time::Duration;

const LAB: &str = "kernel lab: needs root + IPVS; run by tests/lab/suite";

/// Every IPVS feature of the programmer: v4/v6, tcp/udp/sctp/fwmark,
/// schedulers and their flags, persistence + mask, pe, ops, NAT/DR/TUN with
/// GUE/GRE options, weights, thresholds.
const FULL: &str = r#"
[[virtual_server]]
name = "web"
address = "192.0.2.100:80"
protocol = "tcp"
scheduler = "wlc"
persistence_timeout = "360s"
persistence_granularity = "255.255.255.0"
forwarding = "nat"
  [[virtual_server.real_server]]
  address = "10.0.1.11:8080"
  weight = 1
  [[virtual_server.real_server]]
  address = "10.0.1.12:8080"
  weight = 3
  upper_threshold = 100
  lower_threshold = 50
  [[virtual_server.real_server]]
  address = "10.0.1.13:8080"
  weight = 0

[[virtual_server]]
name = "maglev"
address = "192.0.2.100:443"
scheduler = "mh"
scheduler_flags = ["mh-fallback", "mh-port"]
forwarding = "dr"
  [[virtual_server.real_server]]
  address = "10.0.1.21:443"
  [[virtual_server.real_server]]
  address = "10.0.1.22:443"
  weight = 2

[[virtual_server]]
name = "dns"
address = "192.0.2.101:53"
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-fallback", "sh-port"]
one_packet = true
  [[virtual_server.real_server]]
  address = "10.0.1.31:53"
  [[virtual_server.real_server]]
  address = "10.0.1.32:5353"

[[virtual_server]]
name = "sip"
address = "192.0.2.102:5060"
protocol = "udp"
scheduler = "rr"
persistence_timeout = "60s"
persistence_engine = "sip"
  [[virtual_server.real_server]]
  address = "10.0.1.41:5060"

[[virtual_server]]
name = "sctp"
address = "192.0.2.103:3868"
protocol = "sctp"
scheduler = "lc"
  [[virtual_server.real_server]]
  address = "10.0.1.51:3868"

[[virtual_server]]
name = "tunnels"
address = "192.0.2.104:80"
scheduler = "wrr"
forwarding = "tun"
  [[virtual_server.real_server]]
  address = "10.0.2.1:80"
  tunnel = { type = "gue", port = 6080, csum = "csum" }
  [[virtual_server.real_server]]
  address = "10.0.2.2:80"
  tunnel = { type = "gre", csum = "remcsum" }
  [[virtual_server.real_server]]
  address = "10.0.2.3:80"

[[virtual_server]]
name = "mark-v4"
fwmark = 100
scheduler = "sed"
persistence_timeout = "300s"
  [[virtual_server.real_server]]
  address = "10.0.3.1:0"
  [[virtual_server.real_server]]
  address = "10.0.3.2:0"
  forwarding = "dr"

[[virtual_server]]
name = "mark-v6"
fwmark = 200
family = "ipv6"
scheduler = "nq"
persistence_timeout = "120s"
persistence_granularity = 64
  [[virtual_server.real_server]]
  address = "[2001:db8:1::1]:0"

[[virtual_server]]
name = "web-v6"
address = "[2001:db8::100]:80"
scheduler = "lblcr"
  [[virtual_server.real_server]]
  address = "[2001:db8:1::11]:80"
  [[virtual_server.real_server]]
  address = "[2001:db8:1:ffff:ffff:ffff:ffff:12]:8080"
  weight = 65535

[[virtual_server]]
name = "others"
address = "192.0.2.105:25"
scheduler = "ovf"
  [[virtual_server.real_server]]
  address = "10.0.1.61:25"
"#;

/// Empty table, plus a dummy link holding the VIPs and a route towards the
/// real servers, so connections from this box to a VIP are scheduled by
/// IPVS (LOCAL_OUT) and leave traffic in the counters and the connection
/// table. Packets to the real servers vanish into the dummy link: nothing
/// leaves the VM (it has no NIC at all).
fn fresh() {
    ipvsadm(&["-C"]);
    let _ = run("ip", &["link", "add", "lab0", "type", "dummy"]);
    let _ = run("ip", &["link", "set", "lab0", "up"]);
    for vip in ["192.0.2.100/32", "192.0.2.101/32", "192.0.2.104/32"] {
        let _ = run("ip", &["addr", "add", vip, "dev", "lab0"]);
    }
    let _ = run("ip", &["route", "add", "10.0.0.0/8", "dev", "lab0"]);
}

/// A few TCP connection attempts to `vip` (each one is scheduled).
fn knock(vip: &str, times: usize) {
    for _ in 0..times {
        let _ =
            std::net::TcpStream::connect_timeout(&vip.parse().unwrap(), Duration::from_millis(100));
    }
}

/// Runs `a` and `b` until they print the same thing (up to 10 tries: the
/// kernel's timers and rate estimator tick between two reads).
fn same_output(mut a: impl FnMut() -> String, mut b: impl FnMut() -> String) -> (String, String) {
    let mut last = (String::new(), String::new());
    for _ in 0..10 {
        let (x, y) = (a(), b());
        if x == y {
            return (x, y);
        }
        last = (x, y);
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}

fn plain_listing() -> String {
    ipvsadm(&["-Ln"])
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn full_feature_config_matches_ipvsadm_byte_for_byte() {
    let _ = LAB;
    fresh();
    let d = Daemon::start("reconcile_interval = \"1s\"", FULL);
    knock("192.0.2.100:80", 3);
    knock("192.0.2.104:80", 2);
    ipvsadm(&[
        "--start-daemon",
        "master",
        "--mcast-interface",
        "lo",
        "--syncid",
        "7",
    ]);
    let status = d.status_json();
    let last = &status["last_pass"];
    assert_eq!(
        last["errors"],
        serde_json::json!([]),
        "status: {status:#}\nlog:\n{}",
        d.log_text()
    );

    for (ours, theirs) in [
        (vec!["status"], vec!["-Ln"]),
        (vec!["status", "--stats"], vec!["-Ln", "--stats"]),
        (vec!["status", "--rate"], vec!["-Ln", "--rate"]),
        (vec!["status", "--exact"], vec!["-Ln", "--exact"]),
        (
            vec!["status", "--stats", "--exact"],
            vec!["-Ln", "--stats", "--exact"],
        ),
        (vec!["status", "--thresholds"], vec!["-Ln", "--thresholds"]),
        (
            vec!["status", "--persistent-conn"],
            vec!["-Ln", "--persistent-conn"],
        ),
        (vec!["status", "--tun-info"], vec!["-Ln", "--tun-info"]),
        (vec!["status", "--nosort"], vec!["-Ln", "--nosort"]),
        (vec!["status", "--timeout"], vec!["-Ln", "--timeout"]),
        (vec!["status", "--daemon"], vec!["-Ln", "--daemon"]),
        (vec!["conns"], vec!["-Lnc"]),
        (
            vec!["conns", "--persistent-conn"],
            vec!["-Lnc", "--persistent-conn"],
        ),
    ] {
        let (a, b) = same_output(|| d.ctl_ok(&ours), || ipvsadm(&theirs));
        assert_eq!(a, b, "directorctl {ours:?} differs from ipvsadm {theirs:?}");
    }
    let conns = ipvsadm(&["-Lnc"]);
    assert!(
        conns.lines().count() > 2,
        "the test should have produced connection entries:\n{conns}"
    );
    let listing = plain_listing();
    for needle in [
        "TCP  192.0.2.100:80 wlc persistent 360 mask 255.255.255.0",
        "UDP  192.0.2.101:53 sh (sh-fallback,sh-port) ops",
        "pe sip",
        "FWM  200 IPv6 nq persistent 120 mask 64",
        "Tunnel",
        "Route",
    ] {
        assert!(
            listing.contains(needle),
            "ipvsadm -Ln lacks {needle:?}:\n{listing}"
        );
    }
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn manual_flush_is_repaired_within_one_pass() {
    fresh();
    let d = Daemon::start("reconcile_interval = \"1s\"", FULL);
    let before = plain_listing();
    ipvsadm(&["-C"]);
    assert!(!plain_listing().contains("192.0.2.100"));
    let repaired = wait_for(Duration::from_millis(2500), || {
        (plain_listing() == before).then_some(())
    });
    assert!(
        repaired.is_some(),
        "table not repaired within one 1s pass:\n{}\nlog:\n{}",
        plain_listing(),
        d.log_text()
    );
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn hand_edited_weight_is_set_back() {
    fresh();
    let d = Daemon::start("reconcile_interval = \"1s\"", FULL);
    ipvsadm(&[
        "-e",
        "-t",
        "192.0.2.100:80",
        "-r",
        "10.0.1.12:8080",
        "-m",
        "-w",
        "9",
        "-x",
        "100",
        "-y",
        "50",
    ]);
    assert!(plain_listing().contains("10.0.1.12:8080               Masq    9"));
    let fixed = wait_for(Duration::from_millis(2500), || {
        plain_listing()
            .contains("10.0.1.12:8080               Masq    3")
            .then_some(())
    });
    assert!(
        fixed.is_some(),
        "weight not set back:\n{}\nlog:\n{}",
        plain_listing(),
        d.log_text()
    );
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn kill9_and_restart_adopts_services_and_keeps_counters() {
    fresh();
    let mut d = Daemon::start("reconcile_interval = \"1s\"", FULL);
    // Give the kernel some counters to lose.
    knock("192.0.2.100:80", 5);
    let stats_before = settled_stats();
    assert!(
        stats_before
            .lines()
            .any(|l| l.starts_with("TCP  192.0.2.100:80")
                && !l.split_whitespace().nth(2).unwrap_or("0").eq("0")),
        "expected non-zero connection counter:\n{stats_before}"
    );
    d.kill9();
    d.spawn();
    let status = d.status_json();
    assert_eq!(
        status["last_pass"]["ops_applied"], 0,
        "restart must adopt, not re-create: {status:#}"
    );
    assert_eq!(
        ipvsadm(&["-Ln", "--stats", "--exact"]),
        stats_before,
        "counters lost across kill -9 + restart"
    );
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn foreign_services_survive_unless_exclusive() {
    fresh();
    ipvsadm(&["-A", "-t", "198.51.100.1:22", "-s", "rr"]);
    let d = Daemon::start("reconcile_interval = \"1s\"", FULL);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        plain_listing().contains("198.51.100.1:22"),
        "a service we do not own was touched"
    );
    assert!(
        d.ctl_ok(&["status"]).contains("198.51.100.1:22"),
        "status must show the whole table"
    );
    d.rewrite_config("reconcile_interval = \"1s\"\nipvs_exclusive = true", FULL);
    d.ctl_ok(&["reload"]);
    assert!(
        !plain_listing().contains("198.51.100.1:22"),
        "exclusive mode must remove foreign services"
    );
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn refused_op_is_named_counted_and_the_rest_applies() {
    fresh();
    let body = format!(
        "{FULL}\n[[virtual_server]]\nname = \"broken\"\naddress = \"192.0.2.200:80\"\nscheduler = \"nosuchsched\"\n"
    );
    let d = Daemon::start(
        "reconcile_interval = \"1s\"\nmetrics_listen = \"127.0.0.1:9588\"",
        &body,
    );
    let status = d.status_json();
    let errors = status["last_pass"]["errors"].to_string();
    assert!(
        errors.contains("broken") && errors.contains("192.0.2.200:80"),
        "{status:#}"
    );
    assert!(
        plain_listing().contains("192.0.2.100:80"),
        "the rest of the diff must still be applied"
    );
    let metrics = http_get("127.0.0.1:9588", "/metrics");
    assert!(
        metrics.contains("director_reconcile_errors_total{kind=\"add_service\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("director_ipvs_service_connections_total"),
        "{metrics}"
    );
}

#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn reload_applies_only_the_difference_and_rejects_bad_config() {
    fresh();
    let d = Daemon::start("reconcile_interval = \"1h\"", FULL);
    let changed = FULL.replacen(
        "address = \"10.0.1.11:8080\"\n  weight = 1",
        "address = \"10.0.1.11:8080\"\n  weight = 7",
        1,
    );
    d.rewrite_config("reconcile_interval = \"1h\"", &changed);
    let out = d.ctl_ok(&["reload"]);
    assert!(out.contains("1 kernel ops applied"), "{out}");
    assert!(plain_listing().contains("10.0.1.11:8080               Masq    7"));

    d.rewrite_config(
        "reconcile_interval = \"1h\"",
        &changed.replace("scheduler = \"wlc\"", "scheduler = 5"),
    );
    let bad = d.ctl(&["reload"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("director.toml:") && err.contains("scheduler"),
        "{err}"
    );
    assert!(
        plain_listing().contains("10.0.1.11:8080               Masq    7"),
        "running state must be kept"
    );
}

/// `ipvsadm -Ln --stats --exact` once the kernel's counters have settled:
/// IPVS folds its per-CPU counters into what it reports from the 2-second
/// estimator timer (net/netfilter/ipvs/ip_vs_est.c), so a read right after
/// traffic can lag.
fn settled_stats() -> String {
    let mut last = ipvsadm(&["-Ln", "--stats", "--exact"]);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(2500));
        let now = ipvsadm(&["-Ln", "--stats", "--exact"]);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("IPVS counters never settled:\n{last}");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `[[snat]]` on the IPVS dataplane: the nftables side carries the SNAT
/// rule (by conntrack's original destination, which IPVS keeps when
/// `net.ipv4.vs.conntrack = 1`), the director sets that sysctl and the
/// others IPVS NAT depends on and reports them; a flushed ruleset is
/// restored, and the SNAT rule goes when `[[snat]]` does.
#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn snat_on_ipvs_is_installed_with_its_sysctls_and_follows_the_config() {
    fresh();
    let _ = run("sysctl", &["-w", "net.ipv4.vs.conntrack=0"]);
    let snat = "[[snat]]\nmatch_vip = \"192.0.2.100\"\nto_source = \"10.0.0.1\"\n";
    let web =
        "[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.100:80\"\nscheduler = \"rr\"\n\
               [[virtual_server.real_server]]\naddress = \"10.0.1.11:8080\"\n";
    let d = Daemon::start("reconcile_interval = \"1s\"", &format!("{web}{snat}"));
    let status = d.status_json();
    assert_eq!(status["dataplane"], "ipvs", "{status}");
    let sysctl = |name: &str| {
        status["sysctls"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} not reported: {status}"))
    };
    for name in [
        "net.ipv4.ip_forward",
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.expire_quiescent_template",
    ] {
        let s = sysctl(name);
        assert_eq!(
            (s["want"].as_str(), s["have"].as_str()),
            (Some("1"), Some("1")),
            "{s}"
        );
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/vs/conntrack")
            .unwrap()
            .trim(),
        "1"
    );
    let rules = ok("nft", &["list", "table", "inet", "director"]);
    assert!(
        rules.contains("10.0.0.1"),
        "no SNAT to 10.0.0.1 in:\n{rules}"
    );
    assert!(rules.contains("192.0.2.100"), "{rules}");
    // A hand flush of the ruleset is repaired like the IPVS table.
    ok("nft", &["flush", "ruleset"]);
    let back = wait_for(Duration::from_millis(3000), || {
        let r = run("nft", &["list", "table", "inet", "director"]);
        (r.status.success() && String::from_utf8_lossy(&r.stdout).contains("10.0.0.1"))
            .then_some(())
    });
    assert!(
        back.is_some(),
        "SNAT table not restored after nft flush ruleset"
    );
    // Config without [[snat]]: the SNAT rule goes away (the forward accepts
    // for the VIPs stay while there are services).
    d.rewrite_config("reconcile_interval = \"1s\"", web);
    d.ctl_ok(&["reload"]);
    let gone = wait_for(Duration::from_millis(3000), || {
        let r = run("nft", &["list", "table", "inet", "director"]);
        (!String::from_utf8_lossy(&r.stdout).contains("10.0.0.1")).then_some(())
    });
    assert!(gone.is_some(), "SNAT rule left behind without [[snat]]");
}

/// Health checks on IPVS, in network namespaces inside the lab VM (the
/// same topology as the host's netns tests, with the director's namespace
/// running the IPVS dataplane; IPVS tables are per namespace). Two virtual
/// servers share the real servers and their check (one probe each):
/// `web` (port 80, `on_down = "remove"`, connections reset) and `keep`
/// (port 81, `on_down = "inhibit"`, connections kept).
///
/// A real server whose link is cut leaves `web` within fall * interval +
/// timeout and stays in `keep` at weight 0; its IPVS connection entries of
/// `web` expire at once (the director removed the destination with
/// `net.ipv4.vs.expire_nodest_conn = 1`; since Linux 5.9 that sweeps them
/// right away), and a client streaming through `web` gets a reset (its
/// next segment finds no IPVS connection, is no SYN, and reaches the
/// director's own stack), while one through `keep` keeps its entry and
/// hangs. The link back, it returns after rise.
#[test]
#[ignore = "kernel lab: needs root + IPVS; run by tests/lab/suite"]
fn a_dead_real_server_leaves_ipvs_and_its_connections_expire() {
    use director_tests::netns::LbTopology;
    const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
    const CLIENT: &str = env!("CARGO_BIN_EXE_lb-client");
    let t = LbTopology::builder().real_servers(2).build();
    let d0 = t.director(0);
    // IPVS takes the VIP's packets on LOCAL_IN: the VIP is local.
    d0.ip(&["addr", "add", "192.0.2.100/32", "dev", "lo"]);
    let _rs: Vec<_> = (0..2)
        .map(|j| {
            let c = t.real_server(j).spawn(
                ECHO,
                &[
                    "--name",
                    &format!("rs{j}"),
                    "--tcp",
                    &format!("{}:8080", t.real_server_v4(j)),
                ],
            );
            c.wait_for_line("ready", Duration::from_secs(20));
            c
        })
        .collect();
    let health =
        "health = { kind = \"tcp\", interval = \"1s\", timeout = \"500ms\", rise = 2, fall = 2 }\n";
    let mut body = String::new();
    for (name, port, extra) in [("web", 80, ""), ("keep", 81, "on_down = \"inhibit\"\n")] {
        body += &format!(
            "[[virtual_server]]\nname = \"{name}\"\naddress = \"192.0.2.100:{port}\"\nscheduler = \"rr\"\n{health}{extra}"
        );
        for j in 0..2 {
            body += &format!(
                "[[virtual_server.real_server]]\naddress = \"{}:8080\"\n",
                t.real_server_v4(j)
            );
        }
    }
    let d = Daemon::start_in(
        d0,
        "lab-health",
        "dataplane = \"ipvs\"\nreconcile_interval = \"30s\"",
        &body,
    );
    let h: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["health", "--json"])).unwrap();
    assert_eq!(h["dataplane"], "ipvs");
    assert_eq!(
        (h["checks_running"].as_u64(), h["check_uses"].as_u64()),
        (Some(2), Some(4))
    );

    // One streaming client per virtual server, both on real server `dead`.
    let trickle = |port: u16, want: Option<&str>| loop {
        let c = t.client().spawn(
            CLIENT,
            &[
                "trickle",
                "--target",
                &format!("192.0.2.100:{port}"),
                "--every-ms",
                "100",
            ],
        );
        let greeting = c.expect_line(Duration::from_secs(20));
        let name = greeting.split_whitespace().next().unwrap_or("").to_string();
        if want.is_none_or(|w| w == name) {
            return (c, name);
        }
    };
    let (web_client, dead) = trickle(80, None);
    let (keep_client, _) = trickle(81, Some(&dead));
    let j: usize = dead[2..].parse().expect("rsN");
    let addr = format!("{}:8080", t.real_server_v4(j));
    let conns_to_dead = |port: u16| {
        d0.exec("ipvsadm", &["-Lnc"])
            .lines()
            .filter(|l| l.contains(&format!("192.0.2.100:{port}")) && l.contains(&addr))
            .count()
    };
    assert_eq!((conns_to_dead(80), conns_to_dead(81)), (1, 1));
    std::thread::sleep(Duration::from_millis(300));

    let cut = std::time::Instant::now();
    t.real_server(j).ip(&["link", "set", "eth0", "down"]);
    let in_web = || {
        d0.exec("ipvsadm", &["-Ln", "-t", "192.0.2.100:80"])
            .contains(&addr)
    };
    wait_for(Duration::from_secs(20), || (!in_web()).then_some(()))
        .unwrap_or_else(|| panic!("{addr} never left web\n{}", d.log_text()));
    let left = cut.elapsed().as_secs_f64();
    println!("ipvs: {addr} left web {left:.3} s after its link was cut (bound 2.5 s; TCG VM)");
    assert!(left <= 2.5 + 2.0, "left after {left:.3} s");
    let keep_listing = d0.exec("ipvsadm", &["-Ln", "-t", "192.0.2.100:81"]);
    assert!(
        keep_listing
            .lines()
            .any(|l| l.contains(&addr) && l.split_whitespace().nth(3) == Some("0")),
        "inhibit keeps it at weight 0:\n{keep_listing}"
    );
    // Its connection entries of `web` are gone at once; `keep`'s stays.
    let expired = wait_for(Duration::from_secs(2), || {
        (conns_to_dead(80) == 0).then_some(())
    });
    assert!(
        expired.is_some(),
        "web's connection to {addr} did not expire:\n{}",
        d0.exec("ipvsadm", &["-Lnc"])
    );
    println!(
        "ipvs: web's connection entry to {addr} gone {:.3} s after the cut",
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(conns_to_dead(81), 1, "keep's entry stays");
    let error = web_client
        .line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the web client never learned\n{}", d.log_text()));
    println!(
        "ipvs: web client: {error:?} {:.3} s after the cut",
        cut.elapsed().as_secs_f64()
    );
    assert!(
        error.starts_with("error ") && error.contains("reset"),
        "{error}"
    );
    assert_eq!(
        keep_client.line(Duration::from_secs(2)),
        None,
        "keep's client hangs"
    );
    let log = d.log_text();
    assert!(
        log.contains("connections_reset") && log.contains("expired by IPVS"),
        "{log}"
    );

    // Back after rise, in both.
    t.real_server(j).ip(&["link", "set", "eth0", "up"]);
    wait_for(Duration::from_secs(20), || in_web().then_some(()))
        .unwrap_or_else(|| panic!("{addr} never came back\n{}", d.log_text()));
    println!(
        "ipvs: {addr} back in web {:.3} s after the cut",
        cut.elapsed().as_secs_f64()
    );
}
