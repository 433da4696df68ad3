//! Health checks driving the nftables dataplane, on the host, in network
//! namespaces: a client, one director running `director run` with
//! `dataplane = "nftables"`, three real servers running `echo-server`.
//!
//! What an operator would check:
//! - a real server whose process dies, or whose link is cut, leaves the
//!   pool within `fall * interval + timeout` (measured, printed) and comes
//!   back after `rise` good probes;
//! - a client streaming to a real server whose link is cut learns it (a
//!   reset) within 2 s of the down decision, because the director deletes
//!   the server's conntrack entries; with `on_down_connections = "keep"`
//!   the same client is still hanging 5 s later (the 15-minute hang of
//!   tcp_retries2 in the making);
//! - `directorctl drain` keeps an established connection working while new
//!   ones go elsewhere, survives a reload, and `undrain` ends it; a real
//!   server removed from the config keeps serving its connection at weight
//!   0 and is deleted when it closes, or at `drain_timeout`; one a reload
//!   adds joins only after `rise` good probes;
//! - an https check against a TLS real server with a self-signed
//!   certificate passes with that certificate as CA and fails, with a
//!   reason, against another one.
//!
//! Timings: interval 500 ms, timeout 300 ms, rise 2, fall 2, so a down
//! decision comes within 1.3 s of the failure. The periodic pass is 30 s:
//! every change seen here is applied by the pass a transition triggers.
//!
//! Needs root (network namespaces); traffic stays inside the namespaces
//! these tests create.

use director_tests::netns::{LbTopology, Netns, NsChild};
use director_tests::{wait_for, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_lb-client");
const T: Duration = Duration::from_secs(5);
const RS_PORT: u16 = 8080;
const TLS_PORT: u16 = 8443;
const VIP: &str = "192.0.2.100:80";
const GLOBAL: &str = "dataplane = \"nftables\"\nreconcile_interval = \"30s\"\n";
const INTERVAL: f64 = 0.5;
const TIMEOUT: f64 = 0.3;
const RISE: f64 = 2.0;
const FALL: f64 = 2.0;
/// A pass, `directorctl status` and the poll step, on a loaded 2-core box.
const SLACK: f64 = 0.7;
const HEALTH: &str =
    "health = { kind = \"tcp\", interval = \"500ms\", timeout = \"300ms\", rise = 2, fall = 2 }\n";

fn sa(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn start_echo(t: &LbTopology, j: usize) -> NsChild {
    let child = t.real_server(j).spawn(
        ECHO,
        &[
            "--name",
            &format!("rs{j}"),
            "--tcp",
            &sa(t.real_server_v4(j), RS_PORT),
        ],
    );
    child.wait_for_line("ready", T);
    child
}

/// One rr virtual server "web" on the VIP with the given real servers.
fn web(t: &LbTopology, extra: &str, servers: &[usize]) -> String {
    let mut s = format!(
        "[[virtual_server]]\nname = \"web\"\naddress = \"{VIP}\"\nscheduler = \"rr\"\n{HEALTH}{extra}"
    );
    for j in servers {
        s += &format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\n",
            sa(t.real_server_v4(*j), RS_PORT)
        );
    }
    s
}

fn rs_addr(t: &LbTopology, j: usize) -> String {
    sa(t.real_server_v4(j), RS_PORT)
}

/// Destinations of the VIP's service in the kernel, address -> weight.
fn kernel_weights(d: &Daemon) -> BTreeMap<String, i64> {
    let status = d.status_json();
    let services = status["table"]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(svc) = services
        .iter()
        .find(|s| s["service"]["key"].to_string().contains(VIP))
    else {
        return BTreeMap::new();
    };
    svc["dests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let key = &k["dest"]["key"];
            (
                format!("{}:{}", key["addr"].as_str().unwrap_or(""), key["port"]),
                k["dest"]["settings"]["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn health(d: &Daemon) -> Value {
    serde_json::from_str(&d.ctl_ok(&["health", "--json"])).expect("health --json is JSON")
}

fn real_server(h: &Value, addr: &str) -> Value {
    h["virtual_servers"][0]["real_servers"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["address"] == addr).cloned())
        .unwrap_or_else(|| panic!("no real server {addr} in {h:#}"))
}

/// Polls (every 20 ms) until `f` holds; the time it took.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<f64> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spread(ns: &Netns, count: usize) -> Value {
    let count = count.to_string();
    let out = ns.exec(CLIENT, &["spread", "--target", VIP, "--count", &count]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb-client output {out:?}: {e}"))
}

fn backends(r: &Value) -> BTreeMap<String, u64> {
    r["backends"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn start(t: &LbTopology, body: &str) -> Daemon {
    Daemon::start_in(t.director(0), "lb-health", GLOBAL, body)
}

/// Leaves within fall * interval + timeout of the failure, comes back
/// within rise * interval (+ one interval of phase) of the repair.
fn assert_leaves_and_returns(
    t: &LbTopology,
    d: &Daemon,
    j: usize,
    what: &str,
    fail: impl FnOnce(),
    repair: impl FnOnce(),
) {
    let addr = rs_addr(t, j);
    assert!(
        kernel_weights(d).contains_key(&addr),
        "{addr} starts in the pool"
    );
    fail();
    let bound = FALL * INTERVAL + TIMEOUT;
    let left = time_until(Duration::from_secs(10), || {
        !kernel_weights(d).contains_key(&addr)
    })
    .unwrap_or_else(|| panic!("{what}: {addr} never left the pool\n{}", d.log_text()));
    println!("{what}: {addr} left the pool {left:.3} s after the failure (bound {bound:.1} s + {SLACK} s slack)");
    assert!(
        left <= bound + SLACK,
        "{what}: left after {left:.3} s\n{}",
        d.log_text()
    );
    // New connections all land on the others, none fails.
    let r = spread(t.client(), 12);
    assert_eq!(r["ok"], 12, "{r}");
    assert!(!backends(&r).contains_key(&format!("rs{j}")), "{r}");
    let h = health(d);
    let rs = real_server(&h, &addr);
    assert_eq!(rs["state"], "down", "{rs:#}");
    assert_eq!(rs["checks"][0]["state"], "down");
    assert!(
        rs["checks"][0]["consecutive_failures"].as_u64() >= Some(2),
        "{rs:#}"
    );
    assert!(rs["checks"][0]["last_change_unix"].as_f64().is_some());

    repair();
    let back_bound = RISE * INTERVAL + INTERVAL;
    let back = time_until(Duration::from_secs(10), || {
        kernel_weights(d).contains_key(&addr)
    })
    .unwrap_or_else(|| panic!("{what}: {addr} never came back\n{}", d.log_text()));
    println!("{what}: {addr} back in the pool {back:.3} s after the repair (bound {back_bound:.1} s + {SLACK} s slack)");
    assert!(back <= back_bound + SLACK, "{what}: back after {back:.3} s");
    let rs = real_server(&health(d), &addr);
    assert_eq!(rs["state"], "serving", "{rs:#}");
}

#[test]
fn a_dead_real_server_leaves_the_pool_in_bounded_time_and_comes_back_after_rise() {
    let t = LbTopology::builder().build();
    let mut rs: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    let d = start(&t, &web(&t, "", &[0, 1, 2]));
    assert_eq!(kernel_weights(&d).len(), 3);
    let r = spread(t.client(), 30);
    assert_eq!(backends(&r).len(), 3, "{r}");

    // The process dies: its kernel refuses the probes at once.
    let mut dead = rs.remove(1);
    let mut restarted = None;
    assert_leaves_and_returns(
        &t,
        &d,
        1,
        "process killed",
        || dead.kill(),
        || restarted = Some(start_echo(&t, 1)),
    );
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("real_server_down")
            && l.contains("virtual_server=web")
            && l.contains(&format!("real_server={}", rs_addr(&t, 1)))
            && l.contains("check=tcp")
            && l.contains("connection refused")),
        "{log}"
    );
    assert!(log.contains("real_server_up"), "{log}");

    // The link is cut: probes time out.
    let ns = t.real_server(2);
    assert_leaves_and_returns(
        &t,
        &d,
        2,
        "link cut",
        || {
            ns.ip(&["link", "set", "eth0", "down"]);
        },
        || {
            ns.ip(&["link", "set", "eth0", "up"]);
        },
    );
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("real_server_down") && l.contains("timed out after 300ms")),
        "{log}"
    );
    // No periodic pass ran: the transitions triggered theirs.
    assert!(
        log.contains("trigger=health") || log.contains("trigger=\"health\""),
        "{log}"
    );
    let text = d.ctl_ok(&["health"]);
    assert!(
        text.contains("Virtual server web (TCP 192.0.2.100:80): 3/3 up"),
        "{text}"
    );
}

/// A client streaming to real server j, whose link is then cut; returns
/// (seconds from the cut to the down decision, seconds from the decision
/// to the client's error, if one came within `wait` of the decision).
fn stream_through_a_cut(t: &LbTopology, d: &Daemon, wait: f64) -> (f64, Option<f64>, String) {
    let client = t
        .client()
        .spawn(CLIENT, &["trickle", "--target", VIP, "--every-ms", "100"]);
    let greeting = client.expect_line(T);
    let name = greeting.split_whitespace().next().unwrap_or("").to_string();
    let j: usize = name
        .strip_prefix("rs")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("greeting {greeting:?}"));
    let addr = rs_addr(t, j);
    std::thread::sleep(Duration::from_millis(300));
    let cut = unix_now();
    t.real_server(j).ip(&["link", "set", "eth0", "down"]);
    let decided = wait_for(Duration::from_secs(10), || {
        real_server(&health(d), &addr)["checks"][0]["last_change_unix"].as_f64()
    })
    .unwrap_or_else(|| panic!("{addr} was never found down\n{}", d.log_text()));
    let left = (decided + wait - unix_now()).max(0.0);
    let error = client.line(Duration::from_secs_f64(left)).and_then(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some("error"))
            .then(|| parts.next()?.parse::<f64>().ok())
            .flatten()
            .map(|ms| ms / 1000.0 - decided)
    });
    (decided - cut, error, addr)
}

#[test]
fn a_client_of_a_dead_server_gets_a_reset_within_2s_of_the_down_decision() {
    let t = LbTopology::builder().build();
    let _rs: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    let d = start(
        &t,
        &web(&t, "on_down_connections = \"reset\"\n", &[0, 1, 2]),
    );
    let (to_decision, error, addr) = stream_through_a_cut(&t, &d, 10.0);
    let after = error.unwrap_or_else(|| {
        panic!(
            "the client never learned that {addr} died (10 s after the down decision)\n{}",
            d.log_text()
        )
    });
    println!(
        "reset: link cut -> down decision {to_decision:.3} s; down decision -> client error {after:.3} s"
    );
    assert!(
        after <= 2.0,
        "client error {after:.3} s after the down decision"
    );
    let log = d.log_text();
    let reset = log
        .lines()
        .find(|l| l.contains("connections_reset"))
        .unwrap_or_else(|| panic!("no connections_reset in\n{log}"));
    assert!(reset.contains("conntrack entries deleted"), "{reset}");
    assert!(reset.contains(&format!("real_server={addr}")), "{reset}");
    println!("{reset}");
}

#[test]
fn with_keep_a_client_of_a_dead_server_is_left_hanging() {
    let t = LbTopology::builder().build();
    let _rs: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    let d = start(&t, &web(&t, "on_down_connections = \"keep\"\n", &[0, 1, 2]));
    let (to_decision, error, addr) = stream_through_a_cut(&t, &d, 5.0);
    println!(
        "keep: link cut -> down decision {to_decision:.3} s; client error after the decision: {error:?} (waited 5 s)"
    );
    assert_eq!(error, None, "with keep the client must not be reset");
    assert!(
        !kernel_weights(&d).contains_key(&addr),
        "but the server left the pool"
    );
    assert!(!d.log_text().contains("connections_reset"));
}

#[test]
fn drain_keeps_established_connections_survives_reload_and_undrain_ends_it() {
    let t = LbTopology::builder().build();
    let _rs: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    let body = web(&t, "", &[0, 1, 2]);
    let d = start(&t, &body);
    let mut session = t.client().spawn(CLIENT, &["session", "--target", VIP]);
    let greeting = session.expect_line(T);
    let name = greeting.split_whitespace().next().unwrap_or("").to_string();
    let j: usize = name[2..].parse().expect("rsN");
    let addr = rs_addr(&t, j);

    let out = d.ctl_ok(&["drain", "web", &addr]);
    assert!(out.contains("drained: weight 0"), "{out}");
    assert_eq!(kernel_weights(&d)[&addr], 0);
    assert_eq!(
        session.request("still-there", T),
        format!("{name} still-there")
    );
    let r = spread(t.client(), 20);
    assert_eq!(r["ok"], 20, "{r}");
    assert!(
        !backends(&r).contains_key(&name),
        "drained {name} got new connections: {r}"
    );
    let again = d.ctl_ok(&["drain", "web", &t.real_server_v4(j).to_string()]);
    assert!(again.contains("already drained"), "{again}");

    // A reload keeps the drain.
    d.rewrite_config(GLOBAL, &body);
    d.ctl_ok(&["reload"]);
    assert_eq!(kernel_weights(&d)[&addr], 0, "drain survives reload");
    let rs = real_server(&health(&d), &addr);
    assert_eq!(
        (rs["state"].as_str(), rs["drained"].as_bool()),
        (Some("drained"), Some(true))
    );
    assert!(d
        .ctl_ok(&["health"])
        .contains(&format!("{addr:<28} drained")));

    // Clear errors for what does not exist.
    let bad = d.ctl(&["drain", "nope", &addr]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no virtual server named \"nope\""), "{err}");
    let bad = d.ctl(&["drain", "web", "203.0.113.99:8080"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("has no real server 203.0.113.99:8080"),
        "{err}"
    );

    let out = d.ctl_ok(&["undrain", "web", &addr]);
    assert!(out.contains("back at weight 1"), "{out}");
    assert_eq!(kernel_weights(&d)[&addr], 1);
    let r = spread(t.client(), 30);
    assert_eq!(backends(&r).get(&name), Some(&10), "{r}");
    assert_eq!(session.request("after", T), format!("{name} after"));
}

#[test]
fn a_server_removed_from_the_config_leaves_when_its_connections_end_or_at_drain_timeout() {
    let t = LbTopology::builder().build();
    let _rs: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    let d = start(&t, &web(&t, "drain_timeout = \"3s\"\n", &[0, 1, 2]));

    // One session on each server; then server 2 leaves the config.
    let mut sessions: BTreeMap<String, NsChild> = BTreeMap::new();
    while sessions.len() < 3 {
        let s = t.client().spawn(CLIENT, &["session", "--target", VIP]);
        let name = s
            .expect_line(T)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        sessions.entry(name).or_insert(s);
    }
    let addr2 = rs_addr(&t, 2);
    d.rewrite_config(GLOBAL, &web(&t, "drain_timeout = \"30s\"\n", &[0, 1]));
    d.ctl_ok(&["reload"]);
    assert_eq!(kernel_weights(&d)[&addr2], 0, "leaving at weight 0");
    let rs = real_server(&health(&d), &addr2);
    assert_eq!(rs["state"], "leaving", "{rs:#}");
    let s2 = sessions.get_mut("rs2").expect("session on rs2");
    assert_eq!(s2.request("in-flight", T), "rs2 in-flight");
    let r = spread(t.client(), 10);
    assert!(!backends(&r).contains_key("rs2"), "{r}");
    // Its connection ends: deleted within a count or two.
    let mut s2 = sessions.remove("rs2").expect("session on rs2");
    s2.close_stdin();
    let gone = time_until(Duration::from_secs(10), || {
        !kernel_weights(&d).contains_key(&addr2)
    })
    .unwrap_or_else(|| panic!("{addr2} was never deleted\n{}", d.log_text()));
    println!("leaving server deleted {gone:.3} s after its last connection closed");
    assert!(d.log_text().contains("no active connections left"));

    // A server the reload adds back starts down and joins after rise.
    d.rewrite_config(GLOBAL, &web(&t, "drain_timeout = \"2s\"\n", &[0, 1, 2]));
    let reloaded = Instant::now();
    d.ctl_ok(&["reload"]);
    assert!(
        !kernel_weights(&d).contains_key(&addr2),
        "a new server waits for rise"
    );
    time_until(Duration::from_secs(10), || {
        kernel_weights(&d).contains_key(&addr2)
    })
    .expect("joins after rise");
    let joined = reloaded.elapsed().as_secs_f64();
    println!("server added by reload joined {joined:.3} s after the reload");
    assert!(d.log_text().contains("added by reload"));

    // drain_timeout: server 1 leaves while its session stays open.
    let addr1 = rs_addr(&t, 1);
    d.rewrite_config(GLOBAL, &web(&t, "drain_timeout = \"2s\"\n", &[0, 2]));
    d.ctl_ok(&["reload"]);
    assert_eq!(kernel_weights(&d)[&addr1], 0);
    let took = time_until(Duration::from_secs(10), || {
        !kernel_weights(&d).contains_key(&addr1)
    })
    .unwrap_or_else(|| panic!("{addr1} was never deleted\n{}", d.log_text()));
    println!("leaving server with an open connection deleted {took:.3} s after the reload (drain_timeout 2 s)");
    assert!((1.5..=4.5).contains(&took), "{took}");
    assert!(d.log_text().contains("drain_timeout passed"));
}

#[test]
fn https_check_against_a_self_signed_tls_server() {
    let t = LbTopology::builder().build();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rs = Vec::new();
    for j in 0..3 {
        let pem = dir.path().join(format!("rs{j}.pem"));
        let child = t.real_server(j).spawn(
            ECHO,
            &[
                "--name",
                &format!("rs{j}"),
                "--tcp",
                &rs_addr(&t, j),
                "--https",
                &sa(t.real_server_v4(j), TLS_PORT),
                "--tls-name",
                &format!("rs{j}.test"),
                "--tls-cert-out",
                pem.to_str().expect("utf-8 path"),
            ],
        );
        child.wait_for_line("ready", T);
        rs.push(child);
    }
    let ca0 = dir.path().join("rs0.pem");
    let ca0 = ca0.to_str().expect("utf-8 path");
    let check = |sni: &str, verify: bool| {
        let ca = if verify {
            format!(", ca_file = \"{ca0}\"")
        } else {
            String::new()
        };
        format!(
            "health = {{ kind = \"https\", port = {TLS_PORT}, path = \"/\", body_regex = \"^rs[0-9] \", sni = \"{sni}\", verify = {verify}{ca}, interval = \"500ms\", timeout = \"300ms\", rise = 2, fall = 2 }}\n"
        )
    };
    // rs0: its own certificate as CA; rs1: checked against rs0's
    // certificate (not its issuer); rs2: verification off.
    let mut body =
        format!("[[virtual_server]]\nname = \"web\"\naddress = \"{VIP}\"\nscheduler = \"rr\"\n");
    for (j, h) in [
        check("rs0.test", true),
        check("rs1.test", true),
        check("rs2.test", false),
    ]
    .iter()
    .enumerate()
    {
        body += &format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\n{h}",
            rs_addr(&t, j)
        );
    }
    let d = start(&t, &body);
    let addr1 = rs_addr(&t, 1);
    time_until(Duration::from_secs(10), || {
        !kernel_weights(&d).contains_key(&addr1)
    })
    .unwrap_or_else(|| panic!("rs1 never failed its check\n{}", d.log_text()));
    let h = health(&d);
    for j in [0, 2] {
        let r = real_server(&h, &rs_addr(&t, j));
        assert_eq!(r["state"], "serving", "{r:#}");
        assert_eq!(r["checks"][0]["last_result"], "ok", "{r:#}");
        assert_eq!(r["checks"][0]["kind"], "https");
    }
    let r1 = real_server(&h, &addr1);
    let why = r1["checks"][0]["last_result"].as_str().unwrap_or("");
    // rcgen names every self-signed certificate alike, so rs1's is taken
    // for one issued by rs0's and fails its signature check.
    assert!(
        why.starts_with("TLS handshake failed: invalid peer certificate"),
        "{r1:#}"
    );
    assert_eq!(r1["checks"][0]["last_failure"]["failure"], "tls");
    assert_eq!(r1["checks"][0]["last_failure_kind"], "tls_error");
    println!("rs1: {why}");
    let text = d.ctl_ok(&["health"]);
    assert!(text.contains("TLS handshake failed"), "{text}");
    let r = spread(t.client(), 10);
    assert_eq!(r["ok"], 10, "{r}");
    assert!(!backends(&r).contains_key("rs1"), "{r}");
}
