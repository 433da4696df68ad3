//! Failover with live connections on the IPVS dataplane, in the kernel lab
//! (`tests/lab/suite`; `#[ignore]`d on the host, which has no IPVS).
//!
//! The `director demo` topology (director::demo::topology: client, two
//! directors, a private sync link, three real servers, all in network
//! namespaces inside the VM), two `director run` with `dataplane =
//! "ipvs"`, NAT forwarding, SNAT to the floating back address, `[ctsync]`
//! for conntrack and the kernel's IPVS sync daemons on the sync link
//! (`ipvs_sync_interface = "eth2"`, `ipvs_syncid = 51`).
//!
//! IPVS state is per network namespace, so each director has its own
//! table, connection entries and sync daemons; `ipvsadm` runs inside the
//! director's namespace to see them. The checks:
//! - d0 (master) runs the master sync daemon, d1 (backup) the backup one;
//! - every connection opened through d0 reaches d1 twice: as a conntrack
//!   entry (ctsync) and as an IPVS connection entry (`ipvsadm -Lnc` in
//!   d1's namespace), before the kill;
//! - after `kill -9` of d0, d1 takes over, switches to the master sync
//!   daemon, every connection keeps exchanging data and new ones work.
//!
//! Sized for TCG emulation (a few hundred connections, generous limits);
//! progress is printed with a clock (`--nocapture` is not needed: eprintln).

use director::demo::client::{Pool, Round};
use director::demo::pair::{Pair, PairOptions};
use director::demo::sys::Proc;
use director::demo::topology::{self, Topology};
use director::demo::{start_servers, wait_replicated, wait_service};
use std::time::{Duration, Instant};

/// Connections held through the failover.
const CONNS: usize = 300;
/// Limits for steps that take a few seconds natively: the VM emulates the
/// CPU (TCG), often 10-50x slower.
const LIMIT: Duration = Duration::from_secs(90);
const ROUND: Duration = Duration::from_secs(40);

struct Checks {
    start: Instant,
    failed: Vec<String>,
}

impl Checks {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[lab-failover {:7.2}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        let what = what.as_ref();
        self.say(format!("{} {what}", if ok { "PASS" } else { "FAIL" }));
        if !ok {
            self.failed.push(what.to_owned());
        }
    }
    fn all_alive(&mut self, r: &Round, when: &str) {
        self.check(
            r.tried > 0 && r.lost_count() == 0,
            format!("{when}: {} (took {:?})", r.summary(), r.took),
        );
    }
}

/// `ipvsadm ARGS` inside director `i`'s namespace.
fn ipvsadm_in(t: &Topology, i: usize, args: &[&str]) -> Result<String, String> {
    t.director(i)
        .exec("ipvsadm", args)
        .map_err(|e| e.to_string())
}

/// IPVS connection entries of the echo service in ESTABLISHED state
/// (`ipvsadm -Lnc`: `TCP 14:59 ESTABLISHED client vip:port rs:port`).
fn established_entries(t: &Topology, i: usize) -> usize {
    let vip = topology::echo_vip().to_string();
    ipvsadm_in(t, i, &["-Lnc"])
        .map(|out| {
            out.lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() >= 6 && f[0] == "TCP" && f[2] == "ESTABLISHED" && f[4] == vip
                })
                .count()
        })
        .unwrap_or(0)
}

/// The sync daemons `ipvsadm -L --daemon` lists in director `i`'s
/// namespace, one line each (`master sync daemon (mcast=eth2, syncid=51,
/// ...)`).
fn daemons(t: &Topology, i: usize) -> String {
    ipvsadm_in(t, i, &["-L", "--daemon"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

/// Waits until director `i` runs exactly the `role` sync daemon on eth2
/// with syncid 51; a check.
fn runs_daemon(c: &mut Checks, t: &Topology, i: usize, role: &str, limit: Duration) {
    let want = format!("{role} sync daemon (mcast={}, syncid=51", topology::SYNC_IF);
    let start = Instant::now();
    let got = director_tests::wait_for(limit, || {
        let d = daemons(t, i);
        (d.lines().count() == 1 && d.starts_with(&want)).then_some(d)
    });
    c.check(
        got.is_some(),
        format!(
            "d{i} runs only the {role} sync daemon on {} after {:?} (`ipvsadm -L --daemon`: {:?})",
            topology::SYNC_IF,
            start.elapsed(),
            got.unwrap_or_else(|| daemons(t, i))
        ),
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
#[ignore = "kernel lab only (needs IPVS): run by tests/lab/suite"]
fn lab_kill9_of_the_ipvs_master_keeps_every_connection() {
    let mut c = Checks {
        start: Instant::now(),
        failed: Vec::new(),
    };
    assert!(
        std::path::Path::new("/proc/net/ip_vs").exists(),
        "no IPVS in this kernel: this test runs in the kernel lab (tests/lab/suite)"
    );
    let options = PairOptions {
        dataplane: "ipvs".into(),
        // Slower adverts than on the host: TCG must not miss three in a
        // row while busy (a spurious takeover would fail the test).
        advert_interval: Duration::from_millis(500),
        preempt: false,
        ctsync: true,
        ipvs_sync: true,
        real_servers: 3,
        ..PairOptions::default()
    };
    let t = Topology::build("lf", options.real_servers).expect("topology");
    let bin_dir = director_tests::bin_dir();
    let mut pair = Pair::prepare(&t, options, &bin_dir).expect("configs");
    let _servers: Vec<Proc> = start_servers(&t, &bin_dir, pair.dir()).expect("real servers");
    c.say(format!("topology {} and 3 real servers up", t.tag()));
    pair.directors[0].start().expect("d0 starts");
    pair.wait_state(0, "master", LIMIT).expect("d0 master");
    pair.directors[1].start().expect("d1 starts");
    pair.wait_state(1, "backup", LIMIT).expect("d1 backup");
    wait_service(&t, 3, LIMIT).expect("service through the VIP");
    let dataplane = pair.directors[0]
        .ctl_json(&["status"])
        .map(|s| s["dataplane"].to_string())
        .unwrap_or_default();
    c.check(
        dataplane == "\"ipvs\"",
        format!("d0 master, d1 backup, service answers; dataplane {dataplane}"),
    );
    runs_daemon(&mut c, &t, 0, "master", LIMIT);
    runs_daemon(&mut c, &t, 1, "backup", LIMIT);

    let opened = Instant::now();
    let mut pool = Pool::open(
        t.client().name(),
        topology::echo_vip(),
        CONNS,
        Duration::from_secs(20),
    )
    .expect("open connections through the VIP");
    c.say(format!(
        "{CONNS} connections open in {:?}: {:?}",
        opened.elapsed(),
        pool.per_server()
    ));
    // The exchange is each connection's 3rd packet from the client (SYN,
    // ACK, data): ip_vs_sync.c syncs a connection when its packet count
    // reaches sync_threshold (3 by default).
    c.all_alive(&pool.exchange("before", ROUND), "before the kill");
    let on_d0 = established_entries(&t, 0);
    c.check(
        on_d0 >= CONNS,
        format!("d0 holds {on_d0} ESTABLISHED IPVS entries for the echo VIP (>= {CONNS})"),
    );
    let waited = Instant::now();
    let on_d1 = director_tests::wait_for(LIMIT, || {
        let n = established_entries(&t, 1);
        (n >= CONNS).then_some(n)
    });
    c.check(
        on_d1.is_some(),
        format!(
            "IPVS sync: d1 (backup) holds {} ESTABLISHED IPVS entries for the echo VIP (want >= {CONNS}) after {:?}",
            on_d1.unwrap_or_else(|| established_entries(&t, 1)),
            waited.elapsed()
        ),
    );
    match wait_replicated(&pair.directors[1], CONNS as u64, LIMIT) {
        Ok(Some(n)) => c.check(
            true,
            format!("ctsync: d1 holds {n} replicated conntrack entries"),
        ),
        Ok(None) => c.check(false, "`directorctl sync` is missing from this build"),
        Err(e) => c.check(false, format!("ctsync to d1: {e}")),
    }

    let killed = Instant::now();
    pair.directors[0].kill9();
    let took = director_tests::wait_for(LIMIT, || t.holds_vip(1).then(|| killed.elapsed()));
    c.check(
        took.is_some(),
        format!("kill -9 d0: d1 holds the VIP after {took:?}"),
    );
    let r = pair.wait_state(1, "master", LIMIT);
    c.check(
        r.is_ok(),
        format!("d1 master {:?} after the kill {r:?}", killed.elapsed()),
    );
    runs_daemon(&mut c, &t, 1, "master", LIMIT);
    c.all_alive(
        &pool.exchange("after-kill", ROUND),
        "after kill -9 of the master",
    );
    match Pool::open(
        t.client().name(),
        topology::echo_vip(),
        30,
        Duration::from_secs(20),
    ) {
        Ok(mut p) => c.all_alive(&p.exchange("new", ROUND), "30 new connections through d1"),
        Err(e) => c.check(false, format!("new connections through d1: {e}")),
    }
    pool.close();
    c.say(format!("done in {:?}", c.start.elapsed()));
    if !c.failed.is_empty() {
        panic!(
            "{} check(s) failed:\n  {}\n---- d0 log ----\n{}\n---- d1 log ----\n{}",
            c.failed.len(),
            c.failed.join("\n  "),
            tail(&pair.directors[0].log_text()),
            tail(&pair.directors[1].log_text()),
        );
    }
}
