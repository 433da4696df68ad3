//! What an operator watches during a failover, end to end: two directors
//! on one segment (network namespaces joined by a bridge), `directorctl
//! vrrp --follow` on the backup while the master is killed, and the
//! Prometheus VRRP series of both.
//!
//! Needs root (network namespaces). Run `cargo build -p director` first:
//! these tests run the built `director` and `directorctl` binaries.

use director_tests::netns::{LbTopology, Netns, NsChild};
use director_tests::vrrp;
use director_tests::{bin, wait_for, Daemon};
use serde_json::Value;
use std::time::{Duration, Instant};

const VIP: &str = "192.0.2.100";
/// Each daemon listens in its own namespace: the same port on both.
const METRICS: &str = "127.0.0.1:9588";

fn global() -> String {
    format!(
        "dataplane = \"nftables\"\nreconcile_interval = \"1s\"\nmetrics_listen = \"{METRICS}\"\n"
    )
}

fn instance(priority: u8) -> String {
    vrrp::instance_config("VI_1", "eth0", 51, priority, &format!("{VIP}/32"), "")
}

fn has_vip(ns: &Netns) -> bool {
    vrrp::has_addr(ns, "eth0", &format!("{VIP}/32"))
}

fn state(d: &Daemon) -> String {
    vrrp::state(d, "VI_1")
}

/// `GET /metrics` from inside the daemon's namespace.
fn scrape(ns: &Netns) -> String {
    ns.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{METRICS}/metrics"),
        ],
    )
}

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"` strings).
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let (series, value) = rest.rsplit_once(' ')?;
        labels
            .iter()
            .all(|l| series.contains(l))
            .then(|| value.parse().ok())?
    })
}

const VI_1: &str = r#"vrrp_instance="VI_1""#;

/// `directorctl vrrp --follow ARGS` against `d`, run in `ns`.
fn follow(ns: &Netns, d: &Daemon, args: &[&str]) -> NsChild {
    let socket = d.socket.to_str().unwrap_or_default().to_string();
    let mut all = vec!["--socket", socket.as_str(), "vrrp", "--follow"];
    all.extend_from_slice(args);
    ns.spawn(bin("directorctl"), &all)
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
}

#[test]
fn backup_stream_shows_the_takeover_in_order_and_metrics_follow() {
    let t = LbTopology::builder().directors(2).real_servers(1).build();
    let (a_ns, b_ns) = (t.director(0), t.director(1));
    let mut a = Daemon::start_in(a_ns, "lb-a", &global(), &instance(150));
    let b = Daemon::start_in(b_ns, "lb-b", &global(), &instance(100));
    wait_for(Duration::from_secs(5), || has_vip(a_ns).then_some(()))
        .unwrap_or_else(|| panic!("A never took the VIP\nA:\n{}", a.log_text()));
    wait_for(Duration::from_secs(5), || {
        (state(&b) == "backup").then_some(())
    })
    .unwrap_or_else(|| panic!("B never became backup\n{}", b.log_text()));

    // Metrics on the master: state one-hot, adverts sent growing; on the
    // backup: adverts received growing.
    let a1 = scrape(a_ns);
    let master = [
        VI_1,
        r#"vrid="51""#,
        r#"interface="eth0""#,
        r#"state="master""#,
    ];
    assert_eq!(
        metric(&a1, "director_vrrp_state", &master),
        Some(1.0),
        "{a1}"
    );
    let backup_state = [VI_1, r#"state="backup""#];
    assert_eq!(metric(&a1, "director_vrrp_state", &backup_state), Some(0.0));
    assert_eq!(
        metric(&a1, "director_vrrp_effective_priority", &[VI_1]),
        Some(150.0)
    );
    let b1 = scrape(b_ns);
    assert_eq!(metric(&b1, "director_vrrp_state", &backup_state), Some(1.0));
    std::thread::sleep(Duration::from_millis(600));
    let (a2, b2) = (scrape(a_ns), scrape(b_ns));
    let sent = |text: &str| metric(text, "director_vrrp_adverts_sent_total", &[VI_1]);
    let received = |text: &str| metric(text, "director_vrrp_adverts_received_total", &[VI_1]);
    assert!(
        sent(&a2).unwrap_or(0.0) >= sent(&a1).unwrap_or(f64::MAX) + 3.0,
        "adverts sent: {:?} -> {:?}",
        sent(&a1),
        sent(&a2)
    );
    assert!(
        received(&b2).unwrap_or(0.0) >= received(&b1).unwrap_or(f64::MAX) + 3.0,
        "adverts received: {:?} -> {:?}",
        received(&b1),
        received(&b2)
    );
    assert_eq!(
        metric(&a2, "director_vrrp_master_transitions_total", &[VI_1]),
        Some(1.0)
    );
    // The master's Adver_Timer fires every 100 ms, each firing measured
    // (a backup's Master_Down_Timer keeps being reset, never fires).
    assert!(
        metric(&a2, "director_vrrp_timer_lateness_seconds_count", &[]).unwrap_or(0.0) >= 5.0,
        "{a2}"
    );
    assert!(a2.contains("director_vrrp_timer_lateness_seconds_bucket{le=\"+Inf\"}"));

    // Two followers on the backup: JSON and text.
    let json_follower = follow(b_ns, &b, &["--json"]);
    let text_follower = follow(b_ns, &b, &[]);
    let snap = json(&json_follower.expect_line(Duration::from_secs(10)));
    assert_eq!(snap["result"], "vrrp", "{snap}");
    assert_eq!(snap["instances"][0]["status"]["state"], "backup", "{snap}");
    let start_seq = snap["last_event_seq"].as_u64().expect("last_event_seq");
    assert!(
        start_seq >= 1,
        "the startup transition was an event: {snap}"
    );
    // The text follower prints the table, then the banner.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = text_follower.expect_line(deadline.saturating_duration_since(Instant::now()));
        if line.starts_with("--- events after seq") {
            break;
        }
    }

    // kill -9: B takes over after Master_Down_Interval, and its stream
    // says so, in execution order.
    a.kill9();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events
        .iter()
        .any(|e: &Value| e["action"]["action"] == "send_gratuitous")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = json_follower.line(left).unwrap_or_else(|| {
            panic!(
                "stream stopped before the GARP; got {events:?}\nstderr: {}\nB:\n{}",
                json_follower.stderr_text(),
                b.log_text()
            )
        });
        let v = json(&line);
        assert_eq!(v["result"], "vrrp_event", "no loss, no other line: {v}");
        events.push(v);
    }
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), events.len(), "{events:?}");
    let expected: Vec<u64> = (start_seq + 1..=start_seq + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "strictly increasing, no gap: {events:?}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["action"]["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["state_change", "add_vips", "send_gratuitous"],
        "{events:?}"
    );
    let change = &events[0]["action"];
    assert_eq!(
        (&change["old"], &change["new"], &change["reason"]),
        (
            &Value::from("backup"),
            &Value::from("master"),
            &Value::from("master_down_timer")
        ),
        "{events:?}"
    );
    assert_eq!(events[1]["action"]["addresses"][0], VIP);
    assert_eq!(events[2]["action"]["addresses"][0], VIP);
    for e in &events {
        assert_eq!(
            (&e["instance"], &e["interface"]),
            (&Value::from("VI_1"), &Value::from("eth0"))
        );
        assert!(e["unix_time"].as_f64().unwrap_or(0.0) > 1.6e9, "{e}");
    }
    // Executed before it was streamed: the VIP is there.
    assert!(has_vip(b_ns));

    // The same three, as text lines.
    let mut text = Vec::new();
    while text.len() < 3 {
        text.push(text_follower.expect_line(Duration::from_secs(5)));
    }
    let s = start_seq + 1;
    assert!(
        text[0].contains(&format!(
            "seq={s} VI_1 eth0: BACKUP -> MASTER (master_down_timer)"
        )),
        "{text:?}"
    );
    assert!(
        text[1].contains(&format!("seq={} VI_1 eth0: VIPs added: {VIP}", s + 1)),
        "{text:?}"
    );
    assert!(
        text[2].contains(&format!("seq={} VI_1 eth0: gratuitous ARP sent x", s + 2)),
        "{text:?}"
    );

    // `--since 0` replays the history the daemon kept, from seq 1.
    let replay = follow(b_ns, &b, &["--json", "--since", "0"]);
    assert_eq!(
        json(&replay.expect_line(Duration::from_secs(10)))["result"],
        "vrrp"
    );
    let first = json(&replay.expect_line(Duration::from_secs(5)));
    assert_eq!(first["seq"], 1, "{first}");
    assert_eq!(first["action"]["old"], "initialize", "{first}");
    assert_eq!(first["action"]["reason"], "startup", "{first}");
    drop(replay);

    // Metrics on the new master.
    let b3 = scrape(b_ns);
    assert_eq!(
        metric(&b3, "director_vrrp_state", &master),
        Some(1.0),
        "{b3}"
    );
    assert_eq!(
        metric(&b3, "director_vrrp_master_transitions_total", &[VI_1]),
        Some(1.0)
    );
    assert_eq!(metric(&b3, "director_vrrp_vips_held", &[VI_1]), Some(1.0));
    assert_eq!(state(&b), "master");

    // Followers that leave end their task on the daemon (it logs each).
    drop(json_follower);
    drop(text_follower);
    wait_for(Duration::from_secs(5), || {
        (b.log_text().matches("vrrp_follower_gone").count() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("follower tasks did not end\n{}", b.log_text()));
}

#[test]
fn clean_stop_ends_the_stream_after_the_release() {
    let t = LbTopology::builder().directors(1).real_servers(1).build();
    let ns = t.director(0);
    let mut d = Daemon::start_in(ns, "lb-a", &global(), &instance(150));
    wait_for(Duration::from_secs(5), || has_vip(ns).then_some(()))
        .unwrap_or_else(|| panic!("never master\n{}", d.log_text()));
    let mut f = follow(ns, &d, &["--json"]);
    assert_eq!(
        json(&f.expect_line(Duration::from_secs(10)))["result"],
        "vrrp"
    );
    // SIGTERM: priority 0, VIPs removed (RFC 5798 6.4.3 Shutdown), and the
    // follower sees both before its stream ends.
    assert!(d.terminate(), "director did not exit on SIGTERM");
    let mut kinds = Vec::new();
    while let Some(line) = f.line(Duration::from_secs(5)) {
        let v = json(&line);
        kinds.push(format!(
            "{}:{}",
            v["action"]["action"].as_str().unwrap_or_default(),
            v["action"]["new"].as_str().unwrap_or_default()
        ));
    }
    assert_eq!(
        kinds,
        ["state_change:initialize", "remove_vips:"],
        "{kinds:?}"
    );
    let status = f
        .wait_timeout(Duration::from_secs(5))
        .expect("follower exited");
    assert_eq!(status.code(), Some(1), "{}", f.stderr_text());
    assert!(
        f.stderr_text().contains("ended the stream"),
        "{}",
        f.stderr_text()
    );
}

#[test]
fn follow_without_vrrp_says_so_and_fails() {
    let t = LbTopology::builder().directors(1).real_servers(1).build();
    let ns = t.director(0);
    let d = Daemon::start_in(ns, "lb-a", &global(), "");
    let mut f = follow(ns, &d, &[]);
    let status = f.wait_timeout(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        f.stderr_text().contains("no vrrp_instance is running"),
        "{}",
        f.stderr_text()
    );
    // And no VRRP series in the scrape.
    assert!(!scrape(ns).contains("director_vrrp_"));
}
