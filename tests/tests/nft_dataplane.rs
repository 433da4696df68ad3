//! The nftables dataplane end to end, on the host, in network namespaces:
//! a client, one or two directors running `director run` with
//! `dataplane = "nftables"`, three real servers running `echo-server`.
//!
//! Each test checks what an operator would: connections spread as the
//! scheduler and weights say; weight 0 drains without cutting established
//! connections; persistence holds a client; `[[snat]]` makes real servers
//! see `to_source`; IPv6 works; two directors with the same config pick the
//! same real server for the same flow under `mh`, so a connection whose
//! packets move from one director to the other (path churn, failover
//! before sync) survives with no state shared; `directorctl status`
//! prints the `ipvsadm -Ln` layout with counts from conntrack.
//!
//! Needs root (network namespaces); traffic stays inside the namespaces
//! these tests create.

use director_tests::netns::{LbTopology, Netns, NsChild};
use director_tests::{wait_for, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_lb-client");
const T: Duration = Duration::from_secs(5);
const RS_PORT: u16 = 8080;
const RS_UDP: u16 = 5353;
const GLOBAL: &str = "dataplane = \"nftables\"\nreconcile_interval = \"500ms\"\n";

fn sa(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `rs<j>` answering TCP and UDP on real server j's v4 and v6 addresses.
fn start_echo(t: &LbTopology, j: usize) -> NsChild {
    let mut args = vec!["--name".to_owned(), format!("rs{j}")];
    for ip in [t.real_server_v4(j), t.real_server_v6(j)] {
        args.extend(["--tcp".to_owned(), sa(ip, RS_PORT)]);
        args.extend(["--udp".to_owned(), sa(ip, RS_UDP)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = t.real_server(j).spawn(ECHO, &args);
    child.wait_for_line("ready", T);
    child
}

fn servers(t: &LbTopology) -> Vec<NsChild> {
    (0..3).map(|j| start_echo(t, j)).collect()
}

/// `[[virtual_server]]` with the three real servers and their weights.
fn service(name: &str, vip: &str, sched: &str, extra: &str, t: &LbTopology, w: [u32; 3]) -> String {
    let mut s = format!(
        "[[virtual_server]]\nname = \"{name}\"\naddress = \"{vip}\"\nscheduler = \"{sched}\"\n{extra}"
    );
    let udp = extra.contains("protocol = \"udp\"");
    let port = if udp { RS_UDP } else { RS_PORT };
    let v6 = vip.starts_with('[');
    for (j, weight) in w.iter().enumerate() {
        let ip = if v6 {
            t.real_server_v6(j)
        } else {
            t.real_server_v4(j)
        };
        s += &format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\nweight = {weight}\n",
            sa(ip, port)
        );
    }
    s
}

fn spread(ns: &Netns, target: &str, count: usize, extra: &[&str]) -> Value {
    let count = count.to_string();
    let mut args = vec!["spread", "--target", target, "--count", &count];
    args.extend_from_slice(extra);
    let out = ns.exec(CLIENT, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb-client output {out:?}: {e}"))
}

/// Connections per backend name.
fn counts(r: &Value) -> BTreeMap<String, u64> {
    r["backends"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The status table's destinations of service `vip` as (address, weight,
/// active, inactive, conns).
fn dests(d: &Daemon, vip: &str) -> Vec<(String, i64, u64, u64, u64)> {
    let status = d.status_json();
    let services = status["table"]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let svc = services
        .iter()
        .find(|s| s["service"]["key"].to_string().contains(vip))
        .unwrap_or_else(|| panic!("no service {vip} in {status}"));
    svc["dests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let key = &k["dest"]["key"];
            (
                format!("{}:{}", key["addr"].as_str().unwrap_or(""), key["port"]),
                k["dest"]["settings"]["weight"].as_i64().unwrap_or(-1),
                k["active_conns"].as_u64().unwrap_or(0),
                k["inactive_conns"].as_u64().unwrap_or(0),
                k["stats"]["conns"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn schedulers_spread_by_weight_and_status_shows_the_ipvsadm_layout() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let body = [
        service("rr", "192.0.2.100:80", "rr", "", &t, [1, 1, 1]),
        service("wrr", "192.0.2.100:81", "wrr", "", &t, [1, 2, 3]),
        service("sh", "192.0.2.100:82", "sh", "", &t, [1, 1, 1]),
        service(
            "mh",
            "192.0.2.100:83",
            "mh",
            "scheduler_flags = [\"mh-port\"]\n",
            &t,
            [1, 1, 1],
        ),
    ]
    .concat();
    let d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let c = t.client();

    // rr: strict rotation.
    let r = spread(c, "192.0.2.100:80", 30, &[]);
    assert_eq!(
        counts(&r),
        map(&[("rs0", 10), ("rs1", 10), ("rs2", 10)]),
        "{r}"
    );
    // No SNAT configured: real servers see the client itself.
    assert_eq!(
        r["peer_ips"]["rs0"],
        serde_json::json!([t.client_v4().to_string()]),
        "{r}"
    );
    // wrr 1:2:3 over whole rounds is exact.
    let r = spread(c, "192.0.2.100:81", 60, &[]);
    assert_eq!(
        counts(&r),
        map(&[("rs0", 10), ("rs1", 20), ("rs2", 30)]),
        "{r}"
    );
    // sh: one client address, one real server.
    let r = spread(c, "192.0.2.100:82", 20, &[]);
    assert_eq!(counts(&r).len(), 1, "{r}");
    assert_eq!(r["ok"], 20, "{r}");
    // mh with mh-port: flows spread over all three (Maglev shares 1/3 each).
    let r = spread(c, "192.0.2.100:83", 300, &[]);
    let mh = counts(&r);
    assert_eq!(mh.values().sum::<u64>(), 300, "{r}");
    assert!(
        mh.len() == 3 && mh.values().all(|n| *n >= 60),
        "mh spread too uneven: {r}"
    );

    // Status: the ipvsadm -Ln layout, counts from conntrack (closed
    // connections linger in TIME_WAIT: inactive), Conns from counters.
    let rr = dests(&d, "192.0.2.100:80");
    assert_eq!(rr.len(), 3);
    for (addr, weight, active, inactive, conns) in &rr {
        assert_eq!(
            (*weight, *active, *inactive, *conns),
            (1, 0, 10, 10),
            "{addr}: {rr:?}"
        );
    }
    let text = d.ctl_ok(&["status"]);
    let want_head = "director nftables dataplane (table inet director)\n\
                     Prot LocalAddress:Port Scheduler Flags\n  \
                     -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                     TCP  192.0.2.100:80 rr\n  \
                     -> 203.0.113.21:8080            Masq    1      0          10        \n";
    assert!(text.starts_with(want_head), "status:\n{text}");
    assert!(
        text.contains("TCP  192.0.2.100:83 mh (mh-port)\n"),
        "{text}"
    );
    let stats = d.ctl_ok(&["status", "--stats"]);
    assert!(stats.contains("TCP  192.0.2.100:81"), "{stats}");
    let json = d.status_json();
    assert_eq!(json["dataplane"], "nftables", "{json}");
    let sysctls = json["sysctls"].to_string();
    assert!(sysctls.contains("net.ipv4.ip_forward"), "{sysctls}");
    // `conns` is the ipvsadm -Lnc listing, built from conntrack.
    let conns = d.ctl_ok(&["conns"]);
    assert!(conns.starts_with("IPVS connection entries\n"), "{conns}");
    assert!(conns.contains("192.0.2.100:80"), "{conns}");
}

#[test]
fn weight_zero_drains_new_connections_and_keeps_established_ones() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let body = service("web", "192.0.2.100:80", "rr", "", &t, [1, 1, 1]);
    let d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let mut session = t
        .client()
        .spawn(CLIENT, &["session", "--target", "192.0.2.100:80"]);
    let greeting = session.expect_line(T);
    let held = greeting.split_whitespace().next().unwrap().to_string();
    let j: usize = held.trim_start_matches("rs").parse().unwrap();
    let mut w = [1, 1, 1];
    w[j] = 0;
    d.rewrite_config(GLOBAL, &service("web", "192.0.2.100:80", "rr", "", &t, w));
    d.ctl_ok(&["reload"]);
    let r = spread(t.client(), "192.0.2.100:80", 20, &[]);
    assert_eq!(r["ok"], 20, "{r}");
    assert!(
        !counts(&r).contains_key(&held),
        "drained {held} got new connections: {r}"
    );
    // The established connection still goes to the drained server.
    assert_eq!(
        session.request("still-there", T),
        format!("{held} still-there")
    );
    let rows = dests(&d, "192.0.2.100:80");
    let drained = rows
        .iter()
        .find(|r| r.0.starts_with(&t.real_server_v4(j).to_string()))
        .unwrap();
    assert_eq!(
        (drained.1, drained.2),
        (0, 1),
        "weight 0, one active: {rows:?}"
    );
}

#[test]
fn persistence_holds_a_client_to_one_real_server() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let body = service(
        "web",
        "192.0.2.100:80",
        "rr",
        "persistence_timeout = \"60s\"\n",
        &t,
        [1, 1, 1],
    );
    let _d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let r = spread(t.client(), "192.0.2.100:80", 20, &[]);
    assert_eq!(r["ok"], 20, "{r}");
    assert_eq!(
        counts(&r).len(),
        1,
        "persistent client spread over servers: {r}"
    );
}

/// Draining the server a persistent client sticks to moves the client's
/// new connections (IPVS with `expire_quiescent_template = 1`), even when
/// the client's established connection to it keeps refreshing the affinity
/// entry after the drain: the pass deletes it again until it stays gone,
/// although such passes read no dump (the entry comes from the packet path,
/// which commits no transaction).
#[test]
fn draining_a_persistent_clients_server_moves_its_new_connections() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let persistent = "persistence_timeout = \"60s\"\n";
    let body = service("web", "192.0.2.100:80", "rr", persistent, &t, [1, 1, 1]);
    let d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let mut session = t
        .client()
        .spawn(CLIENT, &["session", "--target", "192.0.2.100:80"]);
    let greeting = session.expect_line(T);
    let held = greeting.split_whitespace().next().unwrap().to_string();
    let j: usize = held.trim_start_matches("rs").parse().unwrap();
    let r = spread(t.client(), "192.0.2.100:80", 5, &[]);
    assert_eq!(counts(&r), map(&[(&held, 5)]), "{r}");

    let mut w = [1, 1, 1];
    w[j] = 0;
    d.rewrite_config(
        GLOBAL,
        &service("web", "192.0.2.100:80", "rr", persistent, &t, w),
    );
    d.ctl_ok(&["reload"]);
    let drained_ip = t.real_server_v4(j).to_string();
    wait_for(T, || {
        dests(&d, "192.0.2.100:80")
            .iter()
            .any(|r| r.0.starts_with(&drained_ip) && r.1 == 0)
            .then_some(())
    })
    .expect("drain applied");
    // The established connection goes on, and its packets re-create the
    // client's affinity entry, pointing at the drained server.
    assert_eq!(
        session.request("after-drain", T),
        format!("{held} after-drain")
    );
    std::thread::sleep(Duration::from_millis(2000));
    let r = spread(t.client(), "192.0.2.100:80", 10, &[]);
    assert_eq!(r["ok"], 10, "{r}");
    let c = counts(&r);
    assert!(
        !c.contains_key(&held),
        "drained {held} still gets the client: {r}\n{}",
        d.log_text()
    );
    assert_eq!(c.len(), 1, "the client sticks to one new server: {r}");
    assert_eq!(
        session.request("still-there", T),
        format!("{held} still-there")
    );
}

#[test]
fn snat_makes_real_servers_see_to_source() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let to_source = t.director_server_v4(0).to_string();
    let body = format!(
        "{}[[snat]]\nmatch_vip = \"192.0.2.100\"\nto_source = \"{to_source}\"\n",
        service("web", "192.0.2.100:80", "rr", "", &t, [1, 1, 1])
    );
    let d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let r = spread(t.client(), "192.0.2.100:80", 9, &[]);
    assert_eq!(r["ok"], 9, "{r}");
    for j in 0..3 {
        assert_eq!(
            r["peer_ips"][format!("rs{j}")],
            serde_json::json!([to_source]),
            "{r}"
        );
    }
    let json = d.status_json();
    assert_eq!(json["snat"][0]["to_source"], to_source.as_str(), "{json}");
}

#[test]
fn ipv6_service_spreads_like_ipv4() {
    let t = LbTopology::builder().build();
    let _rs = servers(&t);
    let body = service("web6", "[2001:db8:f::100]:80", "rr", "", &t, [1, 1, 1]);
    let d = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let r = spread(t.client(), "[2001:db8:f::100]:80", 30, &[]);
    assert_eq!(
        counts(&r),
        map(&[("rs0", 10), ("rs1", 10), ("rs2", 10)]),
        "{r}"
    );
    assert_eq!(
        r["peer_ips"]["rs1"],
        serde_json::json!([t.client_v6().to_string()]),
        "{r}"
    );
    let text = d.ctl_ok(&["status"]);
    assert!(text.contains("TCP  [2001:db8:f::100]:80 rr\n"), "{text}");
}

#[test]
fn two_directors_agree_under_maglev_and_a_connection_survives_path_churn() {
    let t = LbTopology::builder().directors(2).build();
    let _rs = servers(&t);
    let body = [
        service(
            "tcp",
            "192.0.2.100:80",
            "mh",
            "scheduler_flags = [\"mh-port\"]\n",
            &t,
            [1, 1, 1],
        ),
        service(
            "udp",
            "192.0.2.100:53",
            "mh",
            "protocol = \"udp\"\nscheduler_flags = [\"mh-port\"]\n",
            &t,
            [1, 1, 1],
        ),
    ]
    .concat();
    // Same config, independent daemons, no state shared between them.
    let _a = Daemon::start_in(t.director(0), "lb-a", GLOBAL, &body);
    let b = Daemon::start_in(t.director(1), "lb-b", GLOBAL, &body);

    // The same 5-tuples through A and then through B land on the same real
    // server (UDP: a source port can be reused at once).
    let client = t.client_v4().to_string();
    let pick = |port: u16| {
        let bind = format!("{client}:{port}");
        let r = spread(t.client(), "192.0.2.100:53", 1, &["--udp", "--bind", &bind]);
        assert_eq!(r["ok"], 1, "{r}");
        counts(&r).into_keys().next().unwrap()
    };
    let ports: Vec<u16> = (41000..41012).collect();
    let via_a: Vec<String> = ports.iter().map(|p| pick(*p)).collect();
    t.route_vips_via(1);
    t.move_gateway_to(1);
    let via_b: Vec<String> = ports.iter().map(|p| pick(*p)).collect();
    assert_eq!(
        via_a, via_b,
        "directors disagree on flows from ports {ports:?}"
    );
    let distinct: std::collections::BTreeSet<_> = via_a.iter().collect();
    assert!(distinct.len() > 1, "12 flows all on one server: {via_a:?}");

    // Path churn: a TCP connection starts through A, continues through B.
    t.route_vips_via(0);
    t.move_gateway_to(0);
    let mut session = t
        .client()
        .spawn(CLIENT, &["session", "--target", "192.0.2.100:80"]);
    let greeting = session.expect_line(T);
    let server = greeting.split_whitespace().next().unwrap().to_string();
    assert_eq!(session.request("via-a", T), format!("{server} via-a"));
    t.route_vips_via(1);
    t.move_gateway_to(1);
    assert_eq!(session.request("via-b", T), format!("{server} via-b"));
    assert_eq!(session.request("again", T), format!("{server} again"));
    // B really carried it: its conntrack has the connection, picked up
    // mid-stream and sent to the same real server.
    let seen = wait_for(T, || {
        let conns = b.ctl_ok(&["conns"]);
        conns.contains("ESTABLISHED").then_some(conns)
    });
    assert!(
        seen.is_some(),
        "director B never tracked the moved connection"
    );
}
