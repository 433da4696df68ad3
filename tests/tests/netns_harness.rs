//! Self-tests of the host netns harness (`director_tests::netns`) with plain
//! routing, no load balancer: the topology forwards v4 and v6 through the
//! directors, `echo-server` and `lb-client` say what they should, a live
//! session survives moving the routes between directors, and no namespace
//! or process outlives its topology, also when a test panics.
//!
//! Needs root (network namespaces); traffic stays inside the namespaces
//! created here.

use director_tests::netns::{list_namespaces, LbTopology, Netns, NsChild};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_lb-client");
const TCP: u16 = 7000;
const UDP: u16 = 7001;
const HTTP: u16 = 8080;
const T: Duration = Duration::from_secs(5);

fn sa(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// An echo server named `rs<j>` on real server j's v4 and v6 addresses.
fn start_echo(t: &LbTopology, j: usize) -> NsChild {
    let name = format!("rs{j}");
    let mut args = vec!["--name".to_owned(), name];
    for ip in [t.real_server_v4(j), t.real_server_v6(j)] {
        for (flag, port) in [("--tcp", TCP), ("--udp", UDP), ("--http", HTTP)] {
            args.push(flag.to_owned());
            args.push(sa(ip, port));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = t.real_server(j).spawn(ECHO, &args);
    child.wait_for_line("ready", T);
    child
}

fn spread(ns: &Netns, target: &str, count: usize, extra: &[&str]) -> Value {
    let count = count.to_string();
    let mut args = vec!["spread", "--target", target, "--count", &count];
    args.extend_from_slice(extra);
    let out = ns.exec(CLIENT, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb-client output {out:?}: {e}"))
}

#[test]
fn client_reaches_every_real_server_through_a_director_v4_v6_tcp_udp_http() {
    let t = LbTopology::builder().directors(2).build();
    let _servers: Vec<NsChild> = (0..3).map(|j| start_echo(&t, j)).collect();
    for j in 0..3 {
        for (ip, client_ip) in [
            (t.real_server_v4(j), t.client_v4()),
            (t.real_server_v6(j), t.client_v6()),
        ] {
            for (mode, port) in [("tcp", TCP), ("udp", UDP), ("http", HTTP)] {
                let target = sa(ip, port);
                let flag = match mode {
                    "udp" => vec!["--udp"],
                    "http" => vec!["--http"],
                    _ => vec![],
                };
                let r = spread(t.client(), &target, 4, &flag);
                let what = format!("{mode} {target}: {r}");
                assert_eq!(r["mode"], mode, "{what}");
                assert_eq!(r["ok"], 4, "{what}");
                assert_eq!(r["failed"], 0, "{what}");
                assert_eq!(
                    r["backends"],
                    serde_json::json!({ format!("rs{j}"): 4 }),
                    "{what}"
                );
                // Plain routing: the server sees the client's own address,
                // from 4 different source ports.
                assert_eq!(
                    r["peer_ips"],
                    serde_json::json!({ format!("rs{j}"): [client_ip.to_string()] }),
                    "{what}"
                );
                let peers = r["peers"][format!("rs{j}")].as_array().expect("peers");
                let mut ports: Vec<u16> = peers
                    .iter()
                    .map(|p| {
                        p.as_str()
                            .and_then(|p| p.parse::<SocketAddr>().ok())
                            .expect("peer is ADDR:PORT")
                            .port()
                    })
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                assert_eq!(ports.len(), 4, "fresh source port each time: {what}");
            }
        }
    }
    // The path is routed through director 0 (the session test shows that
    // the traffic stops when the directors stop forwarding).
    for (ip, via) in [
        (t.real_server_v4(0), t.director_client_v4(0)),
        (t.real_server_v6(0), t.director_client_v6(0)),
    ] {
        let route = t.exec_in_client("ip", &["route", "get", &ip.to_string()]);
        assert!(route.contains(&format!("via {via} ")), "{route}");
    }
    let back = t.exec_in_real_server(2, "ip", &["route", "get", &t.client_v6().to_string()]);
    assert!(back.contains(&format!("via {} ", t.gateway_v6())), "{back}");
}

#[test]
fn spread_counts_failures_and_honours_bind() {
    let t = LbTopology::builder().build();
    let _rs0 = start_echo(&t, 0);
    // Nobody listens on port 7999: every connection is refused and counted.
    let r = spread(
        t.client(),
        &sa(t.real_server_v4(0), 7999),
        3,
        &["--timeout-ms", "1000"],
    );
    assert_eq!(
        (r["ok"].clone(), r["failed"].clone()),
        (0.into(), 3.into()),
        "{r}"
    );
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["backends"], serde_json::json!({}), "{r}");
    // UDP to a silent port times out.
    let r = spread(
        t.client(),
        &sa(t.real_server_v6(0), 7999),
        2,
        &["--udp", "--timeout-ms", "300"],
    );
    assert_eq!(
        (r["ok"].clone(), r["failed"].clone()),
        (0.into(), 2.into()),
        "{r}"
    );
    // A real server with no echo server: refused too.
    let r = spread(t.client(), &sa(t.real_server_v4(1), TCP), 2, &[]);
    assert_eq!(r["failed"], 2, "{r}");
    // --bind IP:PORT fixes the source the server sees (UDP: no TIME_WAIT).
    let bind = format!("{}:40123", t.client_v4());
    let r = spread(
        t.client(),
        &sa(t.real_server_v4(0), UDP),
        3,
        &["--udp", "--bind", &bind],
    );
    assert_eq!(
        r["peers"]["rs0"],
        serde_json::json!([bind, bind, bind]),
        "{r}"
    );
    let r = spread(
        t.client(),
        &sa(t.real_server_v6(0), TCP),
        1,
        &["--bind", &format!("[{}]:40124", t.client_v6())],
    );
    assert_eq!(
        r["peers"]["rs0"],
        serde_json::json!([format!("[{}]:40124", t.client_v6())]),
        "{r}"
    );
}

#[test]
fn session_survives_moving_gateway_and_client_route_to_another_director() {
    let t = LbTopology::builder().directors(2).build();
    let mut rs0 = start_echo(&t, 0);
    let mut s4 = t.client().spawn(
        CLIENT,
        &["session", "--target", &sa(t.real_server_v4(0), TCP)],
    );
    let mut s6 = t.client().spawn(
        CLIENT,
        &["session", "--target", &sa(t.real_server_v6(0), TCP)],
    );
    let g4 = s4.expect_line(T);
    assert!(g4.starts_with(&format!("rs0 {}:", t.client_v4())), "{g4}");
    let g6 = s6.expect_line(T);
    assert!(g6.starts_with(&format!("rs0 [{}]:", t.client_v6())), "{g6}");
    assert_eq!(s4.request("one", T), "rs0 one");
    assert_eq!(s6.request("one", T), "rs0 one");

    t.move_gateway_to(1);
    t.route_vips_via(1);
    assert_eq!((t.gateway_director(), t.vip_director()), (1, 1));
    // Director 0 stops forwarding: from now on only director 1 can carry it.
    t.director(0).sysctl(&[
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv6.conf.all.forwarding", "0"),
    ]);
    assert_eq!(s4.request("two", T), "rs0 two");
    assert_eq!(s6.request("two", T), "rs0 two");
    assert!(t
        .exec_in_director(1, "ip", &["addr", "show", "dev", "eth1"])
        .contains("203.0.113.1/24"));
    assert!(!t
        .exec_in_director(0, "ip", &["addr", "show", "dev", "eth1"])
        .contains("203.0.113.1/24"));

    // And back again.
    t.director(0).sysctl(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
    ]);
    t.move_gateway_to(0);
    t.route_vips_via(0);
    t.director(1).sysctl(&[
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv6.conf.all.forwarding", "0"),
    ]);
    assert_eq!(s4.request("three", T), "rs0 three");
    assert_eq!(s6.request("three", T), "rs0 three");

    // Proof that the directors do forward: with neither forwarding, a new
    // connection fails.
    t.director(0).sysctl(&[("net.ipv4.ip_forward", "0")]);
    let r = spread(
        t.client(),
        &sa(t.real_server_v4(0), TCP),
        1,
        &["--timeout-ms", "300"],
    );
    assert_eq!(r["failed"], 1, "{r}");

    // A broken connection is reported, with a non-zero exit.
    t.director(0).sysctl(&[("net.ipv4.ip_forward", "1")]);
    rs0.kill();
    s4.send_line("four").expect("session stdin");
    let err = s4.expect_line(T);
    assert!(err.starts_with("error: "), "{err}");
    let status = s4.wait_timeout(T).expect("session exits");
    assert!(!status.success(), "{status}");
    // A clean end: EOF on stdin, exit 0 (the v6 session's server is gone
    // too, so end it before it is asked anything).
    s6.close_stdin();
    assert!(s6.wait_timeout(T).expect("session exits").success());
}

#[test]
fn dropped_topology_leaves_no_namespace_and_no_process() {
    let t = LbTopology::builder().directors(2).build();
    let names = t.namespace_names();
    assert_eq!(names.len(), 1 + 1 + 2 + 3);
    let listed = list_namespaces();
    for n in &names {
        assert!(listed.contains(n), "{n} not in {listed:?}");
    }
    // A child the harness does not own: dropping the namespace kills it.
    let mut stray = t
        .real_server(1)
        .command("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let _echo = start_echo(&t, 0);
    assert_eq!(t.real_server(1).pids(), vec![stray.id()]);
    drop(t);
    let listed = list_namespaces();
    for n in &names {
        assert!(!listed.contains(n), "{n} survived the drop: {listed:?}");
    }
    let gone = director_tests::wait_for(T, || stray.try_wait().ok().flatten());
    assert!(gone.is_some(), "process in a dropped namespace still runs");
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let t = LbTopology::builder().directors(2).real_servers(1).build();
        let _echo = start_echo(&t, 0);
        *names.lock().expect("names") = t.namespace_names();
        panic!("deliberate panic with a topology alive");
    });
    assert!(result.is_err());
    let names = names.into_inner().expect("names");
    assert_eq!(names.len(), 5);
    let listed = list_namespaces();
    for n in &names {
        assert!(!listed.contains(n), "{n} survived the panic: {listed:?}");
    }
}

#[test]
fn netns_basics_unique_names_sysctl_exec() {
    let a = Netns::new("x");
    let b = Netns::new("x");
    assert_ne!(a.name(), b.name());
    assert!(a.name().contains(&std::process::id().to_string()));
    a.sysctl(&[("net.ipv4.ip_forward", "1")]);
    assert_eq!(a.sysctl_get("net.ipv4.ip_forward"), "1");
    assert_eq!(b.sysctl_get("net.ipv4.ip_forward"), "0");
    // Only loopback inside.
    let links = a.exec("ip", &["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(!a.output("false", &[]).status.success());
    let name = a.name().to_owned();
    drop(a);
    assert!(!list_namespaces().contains(&name));
}
