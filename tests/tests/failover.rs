//! Failover with live connections, end to end on the host: the
//! `director demo` topology (director::demo::topology: client, two
//! directors on a front bridge, a private sync link, three real servers on
//! a back bridge, all in network namespaces named `fo-<pid>-<n>-*`), two
//! `director run` with VRRP (the VIP and a floating back address in one
//! sync group), the dataplane the kernel offers, SNAT to the floating
//! address and `[ctsync]`.
//!
//! Each test holds many TCP connections through the VIP, breaks the
//! master (SIGKILL, pulled cables, a cut sync link), and counts the
//! connections that still exchange data afterwards (the goal: all of them),
//! then checks that new connections work and that the preferred master
//! takes over again (preempt) or does not (nopreempt). Forged and
//! replayed sync frames are sent to a director's ctsync port and must be
//! counted as rejected by `directorctl sync --json`.
//!
//! Each test collects its checks and fails at the end listing every one
//! that failed (so one run shows the whole picture), printing progress and
//! timings as it goes (`cargo test -- --nocapture`). The tests run one at
//! a time: each holds thousands of connections and VRRP timers on a
//! shared machine. Needs root; `cargo build -p director` first (these
//! tests run the built `director` and `directorctl`).

use director::demo::client::{Pool, Round};
use director::demo::pair::{Pair, PairOptions};
use director::demo::sys::Proc;
use director::demo::topology::{self, Link, Topology};
use director::demo::{inject, start_servers, sync_stat, wait_replicated, wait_service};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());
/// IP_CT_TCP_FLAG_BE_LIBERAL, include/uapi/linux/netfilter/nf_conntrack_tcp.h.
const BE_LIBERAL: u8 = 0x08;
const LIMIT: Duration = Duration::from_secs(20);
/// How long a round of exchanges may take: long enough for TCP to
/// retransmit into the new master after a takeover.
const ROUND: Duration = Duration::from_secs(15);

/// Progress lines with a clock, and the checks that failed.
struct Checks {
    start: Instant,
    name: &'static str,
    failed: Vec<String>,
}

impl Checks {
    fn new(name: &'static str) -> Checks {
        Checks {
            start: Instant::now(),
            name,
            failed: Vec::new(),
        }
    }
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{} {:6.2}s] {}",
            self.name,
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
    /// A round in which every connection must survive.
    fn all_alive(&mut self, r: &Round, when: &str) {
        self.check(
            r.tried > 0 && r.lost_count() == 0,
            format!("{when}: {} (took {:?})", r.summary(), r.took),
        );
    }
    fn finish(self, lab: &Lab) {
        if !self.failed.is_empty() {
            panic!(
                "{} check(s) failed:\n  {}\n---- d0 log ----\n{}\n---- d1 log ----\n{}",
                self.failed.len(),
                self.failed.join("\n  "),
                tail(&lab.pair.directors[0].log_text()),
                tail(&lab.pair.directors[1].log_text()),
            );
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The running topology: network, real servers, the pair (d0 master).
struct Lab {
    // Drop order: daemons and servers before the namespaces go.
    pair: Pair,
    _servers: Vec<Proc>,
    t: Topology,
}

impl Lab {
    fn start(c: &Checks, options: PairOptions) -> Lab {
        let t = Topology::build("fo", options.real_servers).expect("topology");
        let bin_dir = director_tests::bin_dir();
        let mut pair = Pair::prepare(&t, options, &bin_dir).expect("configs");
        let servers = start_servers(&t, &bin_dir, pair.dir()).expect("real servers");
        pair.directors[0].start().expect("d0 starts");
        // d0 alone first, so it is master before d1 exists (no election
        // race to wait out with preempt = false).
        pair.wait_state(0, "master", LIMIT).expect("d0 master");
        pair.directors[1].start().expect("d1 starts");
        pair.wait_state(1, "backup", LIMIT).expect("d1 backup");
        wait_service(&t, 3, LIMIT).expect("service through the VIP");
        let dataplane = pair.directors[0]
            .ctl_json(&["status"])
            .map(|s| s["dataplane"].to_string())
            .unwrap_or_default();
        c.say(format!(
            "topology {} up: d0 master, d1 backup, dataplane {dataplane}",
            t.tag()
        ));
        Lab {
            pair,
            _servers: servers,
            t,
        }
    }

    fn open(&self, c: &Checks, n: usize) -> Pool {
        let start = Instant::now();
        let pool = Pool::open(
            self.t.client().name(),
            topology::echo_vip(),
            n,
            Duration::from_secs(5),
        )
        .expect("open connections through the VIP");
        c.say(format!(
            "{n} connections open in {:?}: {:?}",
            start.elapsed(),
            pool.per_server()
        ));
        pool
    }

    /// Waits until director `i` (a backup) holds at least `n` replicated
    /// entries, and its kernel at least `n` established echo entries; a
    /// check. The session's count alone includes other flows (the
    /// service probes, closed connections), so it could reach `n` with
    /// some of the connections under test still missing.
    fn replicated(&self, c: &mut Checks, i: usize, n: usize) {
        let start = Instant::now();
        match wait_replicated(&self.pair.directors[i], n as u64, LIMIT) {
            Ok(Some(have)) => {
                let mut kernel = Err("not read yet".to_string());
                let ok = director_tests::wait_for(LIMIT, || {
                    kernel = self.echo_entries(i);
                    matches!(kernel, Ok((k, _)) if k >= n).then_some(())
                });
                c.check(
                    ok.is_some(),
                    format!(
                        "d{i} holds {have} replicated entries, its kernel (established echo entries, window-tracked) = {kernel:?} (want >= {n}), after {:?}",
                        start.elapsed()
                    ),
                )
            }
            Ok(None) => c.check(
                false,
                "`directorctl sync` does not exist: ctsync is not in this build",
            ),
            Err(e) => c.check(false, format!("replication to d{i}: {e}")),
        }
    }

    /// Director `i`'s kernel entries of established connections to the
    /// echo VIP, and
    /// how many of them still have TCP window tracking on in some
    /// direction (no IP_CT_TCP_FLAG_BE_LIBERAL): such an entry judges the
    /// packets of a connection another box forwarded meanwhile invalid
    /// ("ACK is over upper bound", nf_conntrack_proto_tcp.c), so they
    /// are neither tracked nor translated.
    fn echo_entries(&self, i: usize) -> Result<(usize, usize), String> {
        use director::conntrack::{ConntrackSocket, TcpFlags, TcpState};
        let mut sock =
            director::netlink::in_netns(self.t.director(i).name(), ConntrackSocket::open)
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let all = sock.dump(None).map_err(|e| e.to_string())?;
        let liberal = |f: Option<TcpFlags>| f.is_some_and(|f| f.flags & BE_LIBERAL != 0);
        let echo: Vec<_> = all
            .iter()
            .filter(|ct| {
                ct.orig.dst == std::net::IpAddr::V4(topology::VIP)
                    && ct.orig.dst_port == Some(topology::ECHO_PORT)
                    && ct.tcp.as_ref().map(|t| t.state) == Some(TcpState::ESTABLISHED)
            })
            .collect();
        let tracked = echo
            .iter()
            .filter(|ct| {
                ct.tcp
                    .as_ref()
                    .is_none_or(|t| !liberal(t.flags_orig) || !liberal(t.flags_reply))
            })
            .count();
        Ok((echo.len(), tracked))
    }

    /// Waits until director `i` holds at least `n` echo entries, none
    /// window-tracked; a check.
    fn ready_to_take_over(&self, c: &mut Checks, i: usize, n: usize) {
        let start = Instant::now();
        let mut last = Err("not read yet".to_string());
        let ok = director_tests::wait_for(LIMIT, || {
            last = self.echo_entries(i);
            matches!(last, Ok((have, 0)) if have >= n).then_some(())
        });
        c.check(
            ok.is_some(),
            format!(
                "d{i}'s kernel: (echo entries, window-tracked ones) = {last:?}, want (>= {n}, 0), after {:?}",
                start.elapsed()
            ),
        );
    }

    /// `n` fresh connections work (one exchange each).
    fn new_connections(&self, c: &mut Checks, n: usize, when: &str) {
        match Pool::open(
            self.t.client().name(),
            topology::echo_vip(),
            n,
            Duration::from_secs(3),
        ) {
            Ok(mut p) => {
                let r = p.exchange("new", ROUND);
                c.all_alive(&r, &format!("{n} new connections {when}"));
            }
            Err(e) => c.check(false, format!("new connections {when}: {e}")),
        }
    }

    /// Waits until `d<i>` is master; a check with the time it took.
    fn becomes_master(&self, c: &mut Checks, i: usize, since: Instant, what: &str) {
        let r = self.pair.wait_state(i, "master", LIMIT);
        c.check(
            r.is_ok(),
            format!(
                "{what}: d{i} master {:?} after the event{}",
                since.elapsed(),
                r.err().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        );
    }
}

fn options(preempt: bool) -> PairOptions {
    PairOptions {
        dataplane: "nftables".into(),
        preempt,
        ..PairOptions::default()
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// kill -9 of the master with 2,000 connections, then the preferred master
/// returns and takes over again after its preempt delay (replication back
/// to it first).
#[test]
fn kill9_of_the_master_keeps_2000_connections_and_preempt_fails_back() {
    let _serial = lock();
    let mut c = Checks::new("kill9+preempt");
    let mut lab = Lab::start(&c, options(true));
    let mut pool = lab.open(&c, 2000);
    let r = pool.exchange("before", ROUND);
    c.all_alive(&r, "before the kill");
    lab.replicated(&mut c, 1, 2000);

    let killed = Instant::now();
    lab.pair.directors[0].kill9();
    let took = director_tests::wait_for(LIMIT, || lab.t.holds_vip(1).then(|| killed.elapsed()));
    c.check(
        took.is_some(),
        format!("kill -9 d0: d1 holds the VIP after {took:?}"),
    );
    lab.becomes_master(&mut c, 1, killed, "kill -9 d0");
    let r = pool.exchange("after-kill", ROUND);
    c.all_alive(&r, "after kill -9 of the master");
    lab.new_connections(&mut c, 50, "through d1");

    // The preferred master returns as backup (a restart clears the VIPs
    // the crash left behind), gets the table from d1, then preempts.
    let back = Instant::now();
    lab.pair.directors[0].start().expect("d0 restarts");
    lab.replicated(&mut c, 0, pool.alive());
    lab.becomes_master(&mut c, 0, back, "d0 returns (preempt, delay 3s)");
    let r = pool.exchange("after-failback", ROUND);
    c.all_alive(&r, "after the failback to d0");
    c.check(
        lab.pair.vip_holder(&lab.t) == Some(0),
        "the VIP is on d0 only after the failback",
    );
    lab.new_connections(&mut c, 50, "through d0 again");
    c.finish(&lab);
}

/// nopreempt: the returning preferred master stays backup while d1 works;
/// a clean stop of d1 (priority 0) hands everything back.
#[test]
fn nopreempt_keeps_the_new_master_until_it_stops() {
    let _serial = lock();
    let mut c = Checks::new("nopreempt");
    let mut lab = Lab::start(&c, options(false));
    let mut pool = lab.open(&c, 500);
    c.all_alive(&pool.exchange("before", ROUND), "before the kill");
    lab.replicated(&mut c, 1, 500);
    let killed = Instant::now();
    lab.pair.directors[0].kill9();
    lab.becomes_master(&mut c, 1, killed, "kill -9 d0");
    c.all_alive(
        &pool.exchange("after-kill", ROUND),
        "after kill -9 of the master",
    );

    lab.pair.directors[0].start().expect("d0 restarts");
    lab.replicated(&mut c, 0, pool.alive());
    // Longer than the preempt delay the preempt variant waits.
    std::thread::sleep(Duration::from_secs(5));
    let states = lab.pair.states();
    c.check(
        lab.pair.directors[0].vrrp_state("VI_FRONT").ok().as_deref() == Some("backup")
            && lab.pair.vip_holder(&lab.t) == Some(1),
        format!("nopreempt: d0 stays backup, d1 keeps the VIP ({states})"),
    );
    c.all_alive(&pool.exchange("d0-back", ROUND), "with d0 back as backup");

    let stopped = Instant::now();
    let clean = lab.pair.directors[1].stop();
    c.check(clean, "d1 exits on SIGTERM");
    lab.becomes_master(&mut c, 0, stopped, "clean stop of d1 (priority 0)");
    c.all_alive(
        &pool.exchange("after-stop", ROUND),
        "after the failback to d0",
    );
    lab.new_connections(&mut c, 50, "through d0");
    c.finish(&lab);
}

/// Pulling the master's front and back cables faults it (tracked
/// interfaces): the backup takes over every connection; plugging them
/// back in returns the VIPs to d0 (preempt) without loss.
#[test]
fn cutting_the_masters_links_moves_2000_connections_to_the_backup() {
    let _serial = lock();
    let mut c = Checks::new("links");
    let lab = Lab::start(&c, options(true));
    let mut pool = lab.open(&c, 2000);
    c.all_alive(&pool.exchange("before", ROUND), "before the cut");
    lab.replicated(&mut c, 1, 2000);
    // d0 forwards these connections itself: its entries track windows.
    c.say(format!(
        "d0's kernel before the cut: (echo entries, window-tracked) = {:?}",
        lab.echo_entries(0)
    ));

    let cut = Instant::now();
    for link in [Link::Front, Link::Back] {
        lab.t.set_link(0, link, false).expect("pull d0's cable");
    }
    lab.becomes_master(&mut c, 1, cut, "d0's front and back cables pulled");
    let d0 = lab.pair.directors[0]
        .vrrp_state("VI_FRONT")
        .unwrap_or_default();
    c.check(
        d0 == "fault",
        format!("d0 with its cables pulled is in fault (is {d0})"),
    );
    c.all_alive(&pool.exchange("after-cut", ROUND), "after the cut");
    lab.new_connections(&mut c, 50, "through d1");

    let plugged = Instant::now();
    for link in [Link::Front, Link::Back] {
        lab.t.set_link(0, link, true).expect("plug d0's cable");
    }
    lab.replicated(&mut c, 0, pool.alive());
    // d0 never restarted and its sync session stayed up: the entries it
    // holds are the ones it created as master. They must not judge the
    // connections by windows d1 moved on from.
    lab.ready_to_take_over(&mut c, 0, pool.alive());
    lab.becomes_master(&mut c, 0, plugged, "cables plugged back (preempt)");
    c.all_alive(
        &pool.exchange("after-plug", ROUND),
        "after d0 took over again",
    );
    c.finish(&lab);
}

/// Connections opened while the sync link is down reach the backup when
/// it comes back (resync), so a failover after that loses none.
#[test]
fn a_cut_sync_link_resyncs_when_restored_and_nothing_is_lost() {
    let _serial = lock();
    let mut c = Checks::new("sync-link");
    let mut lab = Lab::start(&c, options(true));
    let mut first = lab.open(&c, 300);
    lab.replicated(&mut c, 1, 300);

    lab.t
        .set_link(0, Link::Sync, false)
        .expect("cut the sync link");
    c.say("sync link cut");
    let mut second = lab.open(&c, 300);
    c.all_alive(
        &second.exchange("during-cut", ROUND),
        "connections opened during the cut",
    );
    // Still both in VRRP terms: the sync link carries no adverts.
    c.check(
        lab.pair.vip_holder(&lab.t) == Some(0),
        "a cut sync link moves no VIP",
    );

    let restored = Instant::now();
    lab.t
        .set_link(0, Link::Sync, true)
        .expect("restore the sync link");
    lab.replicated(&mut c, 1, 600);
    c.say(format!(
        "resync after restore took {:?}",
        restored.elapsed()
    ));

    let killed = Instant::now();
    lab.pair.directors[0].kill9();
    lab.becomes_master(&mut c, 1, killed, "kill -9 d0");
    c.all_alive(
        &first.exchange("after-kill", ROUND),
        "connections from before the cut, after kill -9",
    );
    c.all_alive(
        &second.exchange("after-kill", ROUND),
        "connections from during the cut, after kill -9",
    );
    c.finish(&lab);
}

/// A Hello under a wrong key, and a genuine frame replayed inside a live
/// session: the master counts both as rejected, and replication and the
/// connections go on.
///
/// A director reads nothing from a connection that does not come from its
/// `[ctsync] peer` address, so the frames are sent from d1's namespace
/// (d1's sync address) while d1's daemon is stopped: d1 is the backup, so
/// nothing moves; d0 keeps forwarding and keeps dialing d1.
#[test]
fn forged_and_replayed_sync_frames_are_rejected() {
    let _serial = lock();
    let mut c = Checks::new("inject");
    let mut lab = Lab::start(&c, options(true));
    let mut pool = lab.open(&c, 100);
    lab.replicated(&mut c, 1, 100);

    let clean = lab.pair.directors[1].stop();
    c.check(
        clean && lab.pair.vip_holder(&lab.t) == Some(0),
        format!(
            "d1 (backup) stopped to free its sync address (clean exit {clean}); the VIP stays on d0"
        ),
    );
    let d0 = &lab.pair.directors[0];
    let counter = |key: &str| d0.ctl_json(&["sync"]).ok().and_then(|v| sync_stat(&v, key));
    let target = SocketAddr::from((topology::director_sync(0), topology::SYNC_PORT));
    let from = lab.t.director(1).name();
    let wait_above = |key: &str, before: Option<u64>| {
        director_tests::wait_for(Duration::from_secs(5), || {
            let now = counter(key)?;
            (now > before.unwrap_or(0)).then_some(now)
        })
    };

    let auth_before = counter("rejected_auth");
    let how = inject::forged(from, target);
    c.say(format!("forged Hello: {how:?}"));
    let auth_after = wait_above("rejected_auth", auth_before);
    c.check(
        auth_before.is_some() && auth_after.is_some(),
        format!("forged Hello counted: rejected_auth {auth_before:?} -> {auth_after:?}"),
    );

    let replay_before = counter("rejected_replay");
    let beats_before = counter("heartbeats_received");
    let how = inject::replayed(from, target, &lab.pair.key_file);
    c.say(format!(
        "genuine session, then a replayed Heartbeat: {how:?}"
    ));
    let replay_after = wait_above("rejected_replay", replay_before);
    let beats_after = counter("heartbeats_received");
    // Both genuine frames were taken: the replay hit a live session, and
    // only the sequence rule could refuse it.
    c.check(
        matches!((beats_before, beats_after), (Some(b), Some(a)) if a >= b + 2),
        format!("genuine frames accepted: heartbeats_received {beats_before:?} -> {beats_after:?}"),
    );
    c.check(
        replay_before.is_some() && replay_after.is_some(),
        format!("replayed frame counted: rejected_replay {replay_before:?} -> {replay_after:?}"),
    );
    c.check(
        counter("rejected_auth") == auth_after,
        "the replay failed on its sequence number, not its MAC",
    );
    c.all_alive(
        &pool.exchange("during", ROUND),
        "connections through d0 after the attacks",
    );

    // The real peer returns: d0 dials it, resyncs, and replicates again.
    let back = Instant::now();
    lab.pair.directors[1].start().expect("d1 restarts");
    lab.replicated(&mut c, 1, 100);
    c.say(format!("d1 back and resynced after {:?}", back.elapsed()));
    let mut more = lab.open(&c, 100);
    lab.replicated(&mut c, 1, 200);
    let killed = Instant::now();
    lab.pair.directors[0].kill9();
    lab.becomes_master(&mut c, 1, killed, "kill -9 d0 after the attacks");
    c.all_alive(
        &pool.exchange("after-kill", ROUND),
        "connections from before the attacks, through d1",
    );
    c.all_alive(
        &more.exchange("after-kill", ROUND),
        "connections opened after the attacks, through d1",
    );
    c.finish(&lab);
}
