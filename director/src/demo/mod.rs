//! `director demo`: the whole HA story on one Linux box, in network
//! namespaces (map of the module).
//!
//! - [`topology`]: the network: client, two directors on a shared front
//!   segment, a private sync link, real servers on a back segment, all
//!   in namespaces joined by bridges in a hub namespace.
//! - [`pair`]: the two directors' configs (VRRP sync group of the VIP and
//!   a floating back address, the dataplane the kernel offers, SNAT,
//!   `[ctsync]` with a generated key) and their `director run` processes.
//! - [`server`]: the real servers (echo and HTTP), built into the binary
//!   as the hidden `director demo-server`.
//! - [`client`]: many long-lived connections through the VIP, each checked
//!   by an exchange of data.
//! - [`inject`]: forged and replayed ctsync frames, sent to a director's
//!   sync port as an attacker on the sync link would.
//! - [`sys`]: namespaces, processes, scratch files: Drop guards plus a
//!   registry the Ctrl-C handler empties.
//!
//! `tests/tests/failover.rs` drives the same pieces; there is one
//! topology, here.

pub mod client;
pub mod inject;
pub mod pair;
pub mod server;
pub mod sys;
pub mod topology;

use pair::{Pair, PairOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use topology::Topology;

/// What went wrong, in words that name the step and the thing that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

impl DemoError {
    pub fn new(msg: impl Into<String>) -> DemoError {
        DemoError(msg.into())
    }
}

pub type Result<T> = std::result::Result<T, DemoError>;

/// Options of `director demo`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Long-lived connections held through the failover.
    pub connections: usize,
    pub real_servers: usize,
    pub pair: PairOptions,
    /// After the run, leave everything up until Ctrl-C.
    pub keep: bool,
    /// Directory with `director` and `directorctl`.
    pub bin_dir: PathBuf,
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub takeover: Duration,
    pub before: client::Round,
    pub after: client::Round,
    pub new_ok: usize,
    pub new_tried: usize,
}

impl Outcome {
    /// Nothing lost, and new connections work.
    pub fn success(&self) -> bool {
        self.after.lost_count() == 0 && self.new_ok == self.new_tried && self.after.tried > 0
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Starts one echo/HTTP server per real-server namespace (`director
/// demo-server`) and waits until each listens.
pub fn start_servers(
    t: &Topology,
    bin_dir: &std::path::Path,
    log_dir: &std::path::Path,
) -> Result<Vec<sys::Proc>> {
    let mut out = Vec::new();
    for (j, ns) in t.real_servers().iter().enumerate() {
        let ip = topology::real_server(j);
        let mut cmd = ns.command(bin_dir.join("director"));
        cmd.args([
            "demo-server",
            "--name",
            &format!("rs{j}"),
            "--echo",
            &format!("{ip}:{}", topology::ECHO_PORT),
            "--http",
            &format!("{ip}:{}", topology::HTTP_RS_PORT),
        ]);
        let log = log_dir.join(format!("rs{j}.log"));
        let mut p = sys::Proc::spawn(
            cmd,
            &format!("demo-server rs{j} in {}", ns.name()),
            Some(&log),
        )?;
        p.wait_for_line("ready", Duration::from_secs(10))?;
        out.push(p);
    }
    Ok(out)
}

/// Waits until `n` HTTP GETs in a row through the VIP succeed (health
/// checks have put the real servers in, the master answers ARP for the
/// VIP); returns the bodies.
pub fn wait_service(t: &Topology, n: usize, limit: Duration) -> Result<Vec<String>> {
    let start = Instant::now();
    loop {
        let got: Result<Vec<String>> = (0..n)
            .map(|_| {
                client::http_get(
                    t.client().name(),
                    topology::http_vip(),
                    Duration::from_secs(1),
                )
            })
            .collect();
        match got {
            Ok(bodies) => return Ok(bodies),
            Err(e) if start.elapsed() > limit => {
                return Err(DemoError::new(format!(
                    "the service on {} did not answer within {limit:?}: {e}",
                    topology::http_vip()
                )))
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first number under `key` anywhere in `v` (the `directorctl sync
/// --json` layout nests counters per session).
pub fn find_u64(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .or_else(|| m.values().find_map(|x| find_u64(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

/// Counter `name` of the ctsync session in `directorctl sync --json`
/// (`running.session.stats.<name>`), else the first `name` anywhere.
pub fn sync_stat(v: &serde_json::Value, name: &str) -> Option<u64> {
    v.pointer(&format!("/running/session/stats/{name}"))
        .and_then(serde_json::Value::as_u64)
        .or_else(|| find_u64(v, name))
}

/// Waits until the backup `d` reports at least `want` replicated entries
/// (`directorctl sync --json`, key `entries`). `Ok(None)`: this build
/// has no `directorctl sync` (no replication to wait for).
pub fn wait_replicated(d: &pair::Director, want: u64, limit: Duration) -> Result<Option<u64>> {
    match d.ctl_json(&["sync"]) {
        Err(e) if e.to_string().contains("unrecognized subcommand") => return Ok(None),
        _ => {}
    }
    let start = Instant::now();
    loop {
        let got = d.ctl_json(&["sync"]);
        let have = got
            .as_ref()
            .ok()
            .and_then(|v| sync_stat(v, "entries"))
            .unwrap_or(0);
        if have >= want {
            return Ok(Some(have));
        }
        if start.elapsed() > limit {
            let said = match got {
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            };
            return Err(DemoError::new(format!(
                "{} holds {have} replicated entries after {limit:?}, want {want}: {said}",
                d.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Clock(Instant);

impl Clock {
    fn say(&self, msg: impl AsRef<str>) {
        println!("[{:6.2}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

fn summary(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the demo; see `director demo --help`. Everything created is
/// removed before this returns (or, on Ctrl-C, by the signal handler).
pub fn run(o: &Options) -> Result<Outcome> {
    if !is_root() {
        return Err(DemoError::new(
            "director demo builds network namespaces and must run as root (try: sudo director demo)",
        ));
    }
    sys::install_signal_cleanup()?;
    let clock = Clock(Instant::now());
    let t = Topology::build("demo", o.real_servers)?;
    println!(
        "director demo: a load-balancer pair in network namespaces (names start with {})",
        t.tag()
    );
    println!("  client 192.0.2.2 --[front 192.0.2.0/24, VIP {}]-- d0 .11 / d1 .12 --[back 203.0.113.0/24, floating {}]-- rs0..rs{} .21..", topology::VIP, topology::BACK_VIP, o.real_servers - 1);
    println!(
        "  d0 and d1 also share a private sync link 198.51.100.0/24 (ctsync on port {})",
        topology::SYNC_PORT
    );
    let mut pair_opts = o.pair.clone();
    pair_opts.real_servers = o.real_servers;
    let mut pair = Pair::prepare(&t, pair_opts, &o.bin_dir)?;
    let _servers = start_servers(&t, &o.bin_dir, pair.dir())?;
    clock.say(format!(
        "topology up; {} real servers answer echo on :{} and HTTP on :{}",
        o.real_servers,
        topology::ECHO_PORT,
        topology::HTTP_RS_PORT
    ));

    pair.directors[0].start()?;
    pair.directors[1].start()?;
    let limit = Duration::from_secs(15);
    pair.wait_master(&t, 0, limit)?;
    let status = pair.directors[0].ctl_json(&["status"])?;
    let dataplane = status["dataplane"].as_str().unwrap_or("?").to_owned();
    clock.say(format!(
        "d0 is master (VIP {} and {}), d1 is {}; dataplane: {dataplane}",
        topology::VIP,
        topology::BACK_VIP,
        pair.directors[1].vrrp_state("VI_FRONT")?
    ));
    let bodies = wait_service(&t, o.real_servers, Duration::from_secs(20))?;
    clock.say(format!(
        "service up: GET http://{} -> {}",
        topology::http_vip(),
        bodies.join(" | ")
    ));

    let mut pool = client::Pool::open(
        t.client().name(),
        topology::echo_vip(),
        o.connections,
        Duration::from_secs(5),
    )?;
    let before = pool.exchange("before", Duration::from_secs(10));
    clock.say(format!(
        "{} connections open through {} ({}); exchange: {}",
        o.connections,
        topology::echo_vip(),
        summary(&pool.per_server()),
        before.summary()
    ));
    if o.pair.ctsync {
        match wait_replicated(
            &pair.directors[1],
            o.connections as u64,
            Duration::from_secs(15),
        ) {
            Ok(Some(n)) => clock.say(format!(
                "ctsync: d1 (backup) holds {n} replicated conntrack entries"
            )),
            Ok(None) => clock.say(
                "ctsync: this build has no `directorctl sync`: the backup gets no connection state",
            ),
            Err(e) => clock.say(format!("ctsync: {e}")),
        }
    }

    let pid = pair.directors[0].pid().unwrap_or(0);
    let killed = Instant::now();
    pair.directors[0].kill9();
    clock.say(format!("kill -9 d0 (pid {pid}): a crash, nothing released"));
    let takeover = loop {
        if t.holds_vip(1) {
            break killed.elapsed();
        }
        if killed.elapsed() > limit {
            return Err(DemoError::new(format!(
                "d1 did not take the VIP within {limit:?} after d0 was killed ({})",
                pair.states()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    clock.say(format!(
        "d1 holds the VIP {} ms after the kill",
        takeover.as_millis()
    ));
    pair.wait_state(1, "master", limit)?;

    let after = pool.exchange("after", Duration::from_secs(10));
    clock.say(format!(
        "after the takeover, every connection sends a line: {}",
        after.summary()
    ));

    let new_n = 30.min(o.connections.max(3));
    let (new_ok, new_tried) = match client::Pool::open(
        t.client().name(),
        topology::echo_vip(),
        new_n,
        Duration::from_secs(3),
    ) {
        Ok(mut p) => {
            let r = p.exchange("new", Duration::from_secs(5));
            clock.say(format!(
                "new connections through d1: {} ({})",
                r.summary(),
                summary(&p.per_server())
            ));
            (r.alive, r.tried)
        }
        Err(e) => {
            clock.say(format!("new connections through d1 fail: {e}"));
            (0, new_n)
        }
    };
    let web = wait_service(&t, 1, Duration::from_secs(5))
        .map(|b| b.join(""))
        .unwrap_or_else(|e| e.to_string());
    clock.say(format!("GET http://{} -> {web}", topology::http_vip()));

    println!("\n$ directorctl status        # on d1, the new master");
    match pair.directors[1].ctl(&["status"]) {
        Ok(s) => print!("{s}"),
        Err(e) => println!("{e}"),
    }
    let outcome = Outcome {
        takeover,
        before,
        after,
        new_ok,
        new_tried,
    };
    println!("\nSummary");
    println!(
        "  takeover (kill -9 -> VIP on the backup): {} ms",
        takeover.as_millis()
    );
    println!(
        "  connections alive before: {} of {}",
        outcome.before.alive, outcome.before.tried
    );
    println!("  connections alive after:  {}", outcome.after.summary());
    println!("  new connections after:    {new_ok} of {new_tried}");
    if outcome.after.lost_count() > 0 {
        if o.pair.ctsync {
            println!("  connections were lost (exit status 1); run with --keep and read d1.log in the directory it prints to see what ctsync did");
        } else {
            println!("  connections were lost (exit status 1): ctsync was off, the backup had no connection state");
        }
    }
    if o.keep {
        println!("\n--keep: everything stays up until Ctrl-C. Look around:");
        for name in t.namespace_names() {
            println!("  ip netns exec {name} bash");
        }
        println!(
            "  {} --socket {} status   # d1, the master",
            o.bin_dir.join("directorctl").display(),
            pair.directors[1].socket.display()
        );
        println!(
            "  ip netns exec {} curl -s http://{}/   # which real server answers, and the source it saw",
            t.client().name(),
            topology::VIP
        );
        println!("  configs and logs: {}", pair.dir().display());
        loop {
            std::thread::park();
        }
    }
    pool.close();
    Ok(outcome)
}
