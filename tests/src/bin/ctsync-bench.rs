//! ctsync-bench: conntrack replication, director's ctsync and conntrackd
//! side by side on the same pair of network namespaces (issue 6's
//! benchmark).
//!
//! ```text
//! sudo target/release/ctsync-bench burst    [--entries N]  [--only IMPL]
//! sudo target/release/ctsync-bench rate     [--rate R] [--seconds S] [--only IMPL]
//! sudo target/release/ctsync-bench takeover [--entries N]  [--only IMPL]
//! sudo target/release/ctsync-bench write    [--entries N]
//! IMPL: director | conntrackd | conntrackd-direct
//! ```
//!
//! `write` is the backup's half alone, without a peer: N entries created
//! and deleted in one namespace through `ConntrackSocket::batch`, with an
//! ACK asked of every message (what one-at-a-time writers do) and only of
//! each send's last message (director's default), interleaved.
//!
//! Topology: two namespaces `m` (master) and `b` (backup) joined by one
//! veth pair, the sync link (10.255.0.1/24, 10.255.0.2/24). Nothing else:
//! the benchmark measures replication, not forwarding.
//!
//! Load: conntrack entries created in the master's kernel over ctnetlink
//! (DNAT client -> 192.0.2.100:80 answered by 203.0.113.21-23:8080, TCP
//! ESTABLISHED, ASSURED, 1 h timeout). Each creation raises the same
//! NEW event a new forwarded connection raises, which is what both
//! replicators consume; creating them directly keeps the generator's own
//! cost (real handshakes through a NAT: tens of microseconds each) out of
//! the figures.
//!
//! Implementations:
//! - `director`: `director run` on each side, a VRRP instance on the sync
//!   link deciding the roles (priority 150 / 100) and `[ctsync]`; the
//!   backup writes entries into its kernel as they arrive.
//! - `conntrackd`: conntrackd 1.4.7 in FTFW mode over UDP (its reliable
//!   mode, Debian's example configuration), external cache on (the
//!   default): entries reach the backup's kernel only with `conntrackd -c`,
//!   which the failover script runs; its time is part of the figure.
//! - `conntrackd-direct`: the same with `DisableExternalCache on`: entries
//!   written into the backup's kernel as they arrive, like director.
//!
//! Measured from outside, the same way for every implementation: the
//! backup's kernel table size (`nf_conntrack_count` read by a thread inside
//! the backup's namespace every millisecond), arrival times of NEW events
//! in the backup's kernel (a ctnetlink event socket there) for the lag,
//! and utime + stime of the daemons (`/proc/PID/stat`) for CPU.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use director::conntrack::events::{EventKind, EventSocket};
use director::conntrack::{
    BatchAcks, Conntrack, ConntrackSocket, Request, TcpInfo, TcpState, Tuple,
};
use director_tests::netns::{Netns, NsChild};
use director_tests::{bin, wait_for, Daemon};

const USAGE: &str = "usage: ctsync-bench burst    [--entries N] [--only IMPL]
       ctsync-bench rate     [--rate R] [--seconds S] [--only IMPL]
       ctsync-bench takeover [--entries N] [--only IMPL]
       ctsync-bench write    [--entries N]
IMPL: director | conntrackd | conntrackd-direct";

const MASTER_SYNC: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const BACKUP_SYNC: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const SYNC_PORT: u16 = 3780;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Impl {
    Director,
    Conntrackd,
    ConntrackdDirect,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Director => "director",
            Impl::Conntrackd => "conntrackd",
            Impl::ConntrackdDirect => "conntrackd-direct",
        }
    }

    fn parse(s: &str) -> Result<Impl, String> {
        match s {
            "director" => Ok(Impl::Director),
            "conntrackd" => Ok(Impl::Conntrackd),
            "conntrackd-direct" => Ok(Impl::ConntrackdDirect),
            v => Err(format!(
                "--only {v}: expected director, conntrackd or conntrackd-direct"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Burst,
    Rate,
    Takeover,
    Write,
}

struct Args {
    mode: Mode,
    entries: u32,
    rate: u32,
    seconds: u32,
    only: Vec<Impl>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("burst") => Mode::Burst,
        Some("rate") => Mode::Rate,
        Some("takeover") => Mode::Takeover,
        Some("write") => Mode::Write,
        Some(other) => return Err(format!("unknown mode {other:?}\n{USAGE}")),
        None => return Err(USAGE.to_owned()),
    };
    let mut a = Args {
        mode,
        entries: if mode == Mode::Takeover {
            1_000_000
        } else {
            100_000
        },
        rate: 50_000,
        seconds: 10,
        only: vec![Impl::Director, Impl::ConntrackdDirect, Impl::Conntrackd],
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} {v}: expected a positive integer"))
        };
        match flag.as_str() {
            "--entries" => a.entries = number("--entries", value("--entries")?)?,
            "--rate" => a.rate = number("--rate", value("--rate")?)?,
            "--seconds" => a.seconds = number("--seconds", value("--seconds")?)?,
            "--only" => a.only = vec![Impl::parse(&value("--only")?)?],
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

// ------------------------------------------------------------------ load

/// Entry `i` of the load: a distinct client address and port per index,
/// DNATed to one of three real servers.
fn entry(i: u32) -> Conntrack {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i / 50_000);
    let port = 10_000 + (i % 50_000) as u16;
    let server = Ipv4Addr::new(203, 0, 113, 21 + (i % 3) as u8);
    let orig = Tuple::ports(6, IpAddr::V4(client), port, IpAddr::V4(VIP), 80);
    let reply = Tuple::ports(6, IpAddr::V4(server), 8080, IpAddr::V4(client), port);
    let mut ct = Conntrack::new(orig, reply);
    // IPS_SEEN_REPLY | IPS_ASSURED (nf_conntrack_common.h): an established
    // forwarded connection.
    ct.status = Some((1 << 1) | (1 << 2));
    ct.timeout = Some(3600);
    ct.tcp = Some(TcpInfo {
        state: TcpState::ESTABLISHED,
        wscale_orig: Some(7),
        wscale_reply: Some(7),
        flags_orig: None,
        flags_reply: None,
        unknown: Vec::new(),
    });
    ct.with_nat_from_tuples()
}

/// Index `i` back from an entry's original tuple (see [`entry`]).
fn index_of(ct: &Conntrack) -> Option<u32> {
    let IpAddr::V4(src) = ct.orig.src else {
        return None;
    };
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let hi = u32::from(src).checked_sub(base)?;
    let lo = u32::from(ct.orig.src_port?.checked_sub(10_000)?);
    (lo < 50_000).then_some(hi * 50_000 + lo)
}

/// Creates entries `range` in the calling thread's namespace; returns how
/// long it took.
fn create_entries(sock: &mut ConntrackSocket, range: std::ops::Range<u32>) -> Result<(), String> {
    // Batches of 1,000 NEWs per sendmsg: the generator's cost stays small
    // beside what it measures.
    let ids: Vec<u32> = range.collect();
    for chunk in ids.chunks(1000) {
        let entries: Vec<Conntrack> = chunk.iter().map(|&i| entry(i)).collect();
        let reqs: Vec<Request<'_>> = entries.iter().map(Request::Create).collect();
        let answers = sock
            .batch(&reqs)
            .map_err(|e| format!("creating entries on the master: {e}"))?;
        if let Some((i, Err(e))) = chunk.iter().zip(answers).find(|(_, a)| a.is_err()) {
            return Err(format!("creating entry {i} on the master: {e}"));
        }
    }
    Ok(())
}

// ------------------------------------------------------- netns threads

/// Moves the calling thread into namespace `ns` for good.
fn enter(ns: &str) -> Result<(), String> {
    director::netlink::enter_netns(ns).map_err(|e| e.to_string())
}

/// The backup's `nf_conntrack_count`, sampled every millisecond by a
/// thread inside its namespace; `wait_until` reports when it first reached
/// a value.
struct CountWatch {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountWatch {
    fn start(ns: &str) -> Result<CountWatch, String> {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.to_owned();
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter(&ns) {
                let _ = tx.send(Err(e));
                return;
            }
            let _ = tx.send(Ok(()));
            let mut buf = String::new();
            while !s.load(Ordering::Relaxed) {
                buf.clear();
                if let Ok(mut f) = std::fs::File::open("/proc/sys/net/netfilter/nf_conntrack_count")
                {
                    if f.read_to_string(&mut buf).is_ok() {
                        if let Ok(n) = buf.trim().parse() {
                            c.store(n, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        rx.recv().map_err(|_| "count watcher died".to_owned())??;
        Ok(CountWatch {
            count,
            stop,
            thread: Some(thread),
        })
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until the count is at least `n`; the moment it saw it.
    fn wait_until(&self, n: u64, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.get() >= n {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }
}

impl Drop for CountWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(ticks as f64 / hz)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("ctsync-bench: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------- the pair

/// The two namespaces and their sync link.
struct Pair {
    master: Netns,
    backup: Netns,
    dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let master = Netns::new("ctm");
        let backup = Netns::new("ctb");
        master.ip(&[
            "link",
            "add",
            "sync0",
            "type",
            "veth",
            "peer",
            "name",
            "sync0",
            "netns",
            backup.name(),
        ]);
        master.ip(&["addr", "add", &format!("{MASTER_SYNC}/24"), "dev", "sync0"]);
        backup.ip(&["addr", "add", &format!("{BACKUP_SYNC}/24"), "dev", "sync0"]);
        master.ip(&["link", "set", "sync0", "up"]);
        backup.ip(&["link", "set", "sync0", "up"]);
        Pair {
            master,
            backup,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

/// A running replicator pair.
enum Running {
    Director {
        master: Daemon,
        backup: Daemon,
    },
    Conntrackd {
        master: NsChild,
        backup: NsChild,
        backup_conf: PathBuf,
    },
}

impl Running {
    fn pids(&self) -> (u32, u32) {
        match self {
            Running::Director { master, backup } => (
                master.child.as_ref().map_or(0, |c| c.id()),
                backup.child.as_ref().map_or(0, |c| c.id()),
            ),
            Running::Conntrackd { master, backup, .. } => (master.pid(), backup.pid()),
        }
    }
}

fn director_config(priority: u8, local: Ipv4Addr, peer: Ipv4Addr, key: &Path) -> String {
    format!(
        r#"[[vrrp_instance]]
name = "VI_SYNC"
interface = "sync0"
vrid = 51
priority = {priority}
advert_interval = "100ms"
virtual_ipaddresses = ["{VIP}/32"]

[ctsync]
local = "{local}:{SYNC_PORT}"
peer = "{peer}:{SYNC_PORT}"
key_file = "{key}"
"#,
        key = key.display()
    )
}

fn conntrackd_config(
    dir: &Path,
    name: &str,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    direct: bool,
) -> PathBuf {
    let direct = if direct {
        "DisableExternalCache on"
    } else {
        ""
    };
    let d = dir.display();
    let text = format!(
        "Sync {{
	Mode FTFW {{
		{direct}
	}}
	UDP {{
		IPv4_address {local}
		IPv4_Destination_Address {peer}
		Port {SYNC_PORT}
		Interface sync0
		SndSocketBuffer 24985600
		RcvSocketBuffer 24985600
		Checksum on
	}}
}}
General {{
	HashSize 262144
	HashLimit 4194304
	LogFile {d}/{name}.log
	Syslog off
	LockFile {d}/{name}.lock
	UNIX {{
		Path {d}/{name}.ctl
	}}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 134217728
	NetlinkOverrunResync on
	Filter From Userspace {{
		Address Ignore {{
			IPv4_address 127.0.0.1
			IPv4_address {MASTER_SYNC}
			IPv4_address {BACKUP_SYNC}
		}}
	}}
}}
"
    );
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, text).expect("write conntrackd config");
    path
}

fn start(pair: &Pair, which: Impl) -> Result<Running, String> {
    match which {
        Impl::Director => {
            let key = pair.dir.path().join("ctsync.key");
            std::fs::write(&key, "6a1c0ffee0ddf00d6a1c0ffee0ddf00d\n")
                .map_err(|e| e.to_string())?;
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            let master = Daemon::start_in(
                &pair.master,
                "ctm",
                "dataplane = \"nftables\"\n",
                &director_config(150, MASTER_SYNC, BACKUP_SYNC, &key),
            );
            let backup = Daemon::start_in(
                &pair.backup,
                "ctb",
                "dataplane = \"nftables\"\n",
                &director_config(100, BACKUP_SYNC, MASTER_SYNC, &key),
            );
            // Settled: the master holds the VIP and the sync link is up.
            let ready = wait_for(Duration::from_secs(20), || {
                let out = backup.ctl(&["sync", "--json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let m: serde_json::Value =
                    serde_json::from_slice(&master.ctl(&["sync", "--json"]).stdout).ok()?;
                let up = |v: &serde_json::Value| {
                    v.pointer("/running/session/link").and_then(|l| l.as_str())
                        == Some("established")
                        && v.pointer("/running/session/in_sync")
                            .and_then(|b| b.as_bool())
                            == Some(true)
                };
                let master_role = m.pointer("/running/session/role").and_then(|r| r.as_str());
                (up(&v) && up(&m) && master_role == Some("master")).then_some(())
            });
            if ready.is_none() {
                return Err(format!(
                    "director pair did not settle; master sync:\n{}\nbackup sync:\n{}\nmaster log:\n{}\nbackup log:\n{}",
                    String::from_utf8_lossy(&master.ctl(&["sync", "--json"]).stdout),
                    String::from_utf8_lossy(&backup.ctl(&["sync", "--json"]).stdout),
                    master.log_text(),
                    backup.log_text()
                ));
            }
            Ok(Running::Director { master, backup })
        }
        Impl::Conntrackd | Impl::ConntrackdDirect => {
            let direct = which == Impl::ConntrackdDirect;
            let dir = pair.dir.path();
            let mc = conntrackd_config(dir, "m", MASTER_SYNC, BACKUP_SYNC, direct);
            let bc = conntrackd_config(dir, "b", BACKUP_SYNC, MASTER_SYNC, direct);
            let mc_s = mc.to_string_lossy().into_owned();
            let bc_s = bc.to_string_lossy().into_owned();
            let master = pair.master.spawn("conntrackd", &["-C", &mc_s]);
            let backup = pair.backup.spawn("conntrackd", &["-C", &bc_s]);
            for log in ["m.log", "b.log"] {
                let path = dir.join(log);
                let up = wait_for(Duration::from_secs(10), || {
                    std::fs::read_to_string(&path)
                        .ok()
                        .filter(|t| t.contains("initialization completed"))
                });
                if up.is_none() {
                    return Err(format!(
                        "conntrackd did not start ({}): {}",
                        path.display(),
                        std::fs::read_to_string(&path).unwrap_or_default()
                    ));
                }
            }
            Ok(Running::Conntrackd {
                master,
                backup,
                backup_conf: bc,
            })
        }
    }
}

/// conntrackd's external cache size on the backup (`conntrackd -s cache`).
fn conntrackd_external(conf: &Path) -> Option<u64> {
    let out = Command::new("conntrackd")
        .arg("-C")
        .arg(conf)
        .args(["-s", "cache"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ext = text.split("cache:external").nth(1)?;
    ext.lines().next()?.split_whitespace().last()?.parse().ok()
}

/// Runs `conntrackd -c` (commit the external cache to the kernel) and
/// waits for the kernel count to reach `want`.
fn conntrackd_commit(conf: &Path, count: &CountWatch, want: u64) -> Result<Duration, String> {
    let t0 = Instant::now();
    let out = Command::new("conntrackd")
        .arg("-C")
        .arg(conf)
        .arg("-c")
        .output()
        .map_err(|e| format!("conntrackd -c: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "conntrackd -c failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    count
        .wait_until(want, Duration::from_secs(120))
        .ok_or_else(|| format!("commit: the backup's table stayed at {}", count.get()))?;
    Ok(t0.elapsed())
}

fn run(args: &Args) -> Result<(), String> {
    if !bin("director").is_file() {
        return Err(format!(
            "{} not found: cargo build --release -p director",
            bin("director").display()
        ));
    }
    // The kernel's table limit is global (init_net only): room for the
    // largest run on both sides.
    let max_path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let old_max = std::fs::read_to_string(max_path).map_err(|e| format!("{max_path}: {e}"))?;
    let load = match args.mode {
        Mode::Rate => u64::from(args.rate) * u64::from(args.seconds),
        _ => u64::from(args.entries),
    };
    let need = load * 2 + 100_000;
    if old_max.trim().parse::<u64>().unwrap_or(0) < need {
        std::fs::write(max_path, need.to_string()).map_err(|e| format!("{max_path}: {e}"))?;
    }
    // And the hash table with it, as the kernel sizes it by default (one
    // bucket per allowed entry: nf_conntrack_max = nf_conntrack_buckets,
    // nf_conntrack_core.c) and as an operator sizes a box meant to hold
    // that many: raising only the limit would leave both sides' lookups
    // walking chains several entries long (they showed as the top kernel
    // symbols of the backup's writes). Resized now, while the table is
    // nearly empty; the global table (init_net) only.
    let buckets_path = "/proc/sys/net/netfilter/nf_conntrack_buckets";
    let old_buckets = std::fs::read_to_string(buckets_path).ok();
    let want_buckets = need.next_power_of_two().min(1 << 22);
    if old_buckets
        .as_deref()
        .and_then(|b| b.trim().parse::<u64>().ok())
        .is_some_and(|b| b < want_buckets)
    {
        if let Err(e) = std::fs::write(buckets_path, want_buckets.to_string()) {
            eprintln!("note: {buckets_path}: {e}; lookups will walk longer chains");
        }
    }
    println!(
        "nf_conntrack_max {}, nf_conntrack_buckets {}",
        std::fs::read_to_string(max_path).unwrap_or_default().trim(),
        std::fs::read_to_string(buckets_path)
            .unwrap_or_default()
            .trim()
    );
    let result = match args.mode {
        Mode::Burst => burst(args),
        Mode::Rate => rate(args),
        Mode::Takeover => takeover(args),
        Mode::Write => write(args),
    };
    if let Some(b) = old_buckets {
        let _ = std::fs::write(buckets_path, b.trim());
    }
    let _ = std::fs::write(max_path, old_max.trim());
    result
}

/// Creates entries `0..n` in the master's namespace on a thread of its
/// own; returns when they are all in (or the first error).
/// The moment the last entry was in the master's kernel.
fn generate(master: &str, n: u32) -> std::thread::JoinHandle<Result<Instant, String>> {
    let ns = master.to_owned();
    std::thread::spawn(move || {
        enter(&ns)?;
        let mut sock = ConntrackSocket::open().map_err(|e| e.to_string())?;
        create_entries(&mut sock, 0..n)?;
        Ok(Instant::now())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One burst: `n` entries created on the master; time until all are in
/// the backup's kernel table.
fn burst_once(which: Impl, n: u32) -> Result<HashMap<&'static str, f64>, String> {
    let pair = Pair::new();
    let running = start(&pair, which)?;
    let watch = CountWatch::start(pair.backup.name())?;
    std::thread::sleep(Duration::from_millis(300));
    let base = watch.get();
    let (mpid, bpid) = running.pids();
    let (mc0, bc0) = (cpu_seconds(mpid), cpu_seconds(bpid));
    let t0 = Instant::now();
    let generator = generate(pair.master.name(), n);
    let mut out = HashMap::new();
    match &running {
        Running::Conntrackd { backup_conf, .. } if which == Impl::Conntrackd => {
            let cached = wait_for(Duration::from_secs(120), || {
                conntrackd_external(backup_conf)
                    .filter(|c| *c >= u64::from(n))
                    .map(|_| Instant::now())
            })
            .ok_or("conntrackd: the backup's external cache never held the whole burst")?;
            out.insert("in backup cache", ms(cached - t0));
            let commit = conntrackd_commit(backup_conf, &watch, base + u64::from(n))?;
            out.insert("commit (conntrackd -c)", ms(commit));
            out.insert("in backup kernel", ms(cached - t0) + ms(commit));
        }
        _ => {
            let done = watch
                .wait_until(base + u64::from(n), Duration::from_secs(120))
                .ok_or_else(|| {
                    format!(
                        "{}: the backup's table reached {} of {}",
                        which.name(),
                        watch.get().saturating_sub(base),
                        n
                    )
                })?;
            out.insert("in backup kernel", ms(done - t0));
        }
    }
    let generated = generator
        .join()
        .map_err(|_| "generator panicked".to_owned())??;
    out.insert("generation", ms(generated - t0));
    // The replicator's own share: from the last entry created on the
    // master to the whole burst in the backup's kernel.
    if let Some(kernel) = out.get("in backup kernel").copied() {
        out.insert(
            "in backup kernel after last created",
            kernel - ms(generated - t0),
        );
    }
    // Let the daemons finish what they were doing before reading CPU.
    std::thread::sleep(Duration::from_millis(200));
    if let (Some(a), Some(b)) = (mc0, cpu_seconds(mpid)) {
        out.insert("master cpu ms per 1k", (b - a) * 1e3 / f64::from(n) * 1e3);
    }
    if let (Some(a), Some(b)) = (bc0, cpu_seconds(bpid)) {
        out.insert("backup cpu ms per 1k", (b - a) * 1e3 / f64::from(n) * 1e3);
    }
    drop(running);
    Ok(out)
}

fn burst(args: &Args) -> Result<(), String> {
    const RUNS: usize = 3;
    let mut all: HashMap<Impl, Vec<HashMap<&'static str, f64>>> = HashMap::new();
    for run in 1..=RUNS {
        for &which in &args.only {
            let r = burst_once(which, args.entries)?;
            let mut keys: Vec<_> = r.keys().copied().collect();
            keys.sort_unstable();
            let line: Vec<String> = keys.iter().map(|k| format!("{k} {:.1}", r[k])).collect();
            println!("run {run}/{RUNS} {:<17} {}", which.name(), line.join(", "));
            all.entry(which).or_default().push(r);
        }
    }
    println!(
        "\nsummary: burst of {} new entries on the master, medians of {RUNS} runs (ms; cpu: ms per 1,000 entries)",
        args.entries
    );
    for &which in &args.only {
        let runs = &all[&which];
        let mut keys: Vec<_> = runs[0].keys().copied().collect();
        keys.sort_unstable();
        let line: Vec<String> = keys
            .iter()
            .map(|k| {
                let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
                format!("{k} {:.1}", median(&mut v))
            })
            .collect();
        println!("  {:<17} {}", which.name(), line.join(", "));
    }
    Ok(())
}

/// Lag samples in ms, sorted; the nearest-rank quantile `q`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Records when each entry's NEW event reached the backup's kernel (a
/// ctnetlink event socket in the backup's namespace).
struct ArrivalWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<Option<Instant>>, u64)>>,
}

impl ArrivalWatch {
    fn start(ns: &str, n: u32) -> Result<ArrivalWatch, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.to_owned();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Option<Instant>> = vec![None; n as usize];
            let mut overruns = 0;
            let sock = enter(&ns).and_then(|()| EventSocket::open().map_err(|e| e.to_string()));
            let mut sock = match sock {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    sock
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return (seen, 0);
                }
            };
            while !s.load(Ordering::Relaxed) {
                let Ok(Some(batch)) = sock.next_batch(Duration::from_millis(50)) else {
                    continue;
                };
                let now = Instant::now();
                if batch.lost() {
                    overruns += 1;
                }
                for ev in batch.events {
                    if ev.kind != EventKind::New {
                        continue;
                    }
                    if let Some(slot) = index_of(&ev.entry).and_then(|i| seen.get_mut(i as usize)) {
                        slot.get_or_insert(now);
                    }
                }
            }
            (seen, overruns)
        });
        rx.recv().map_err(|_| "arrival watcher died".to_owned())??;
        Ok(ArrivalWatch {
            stop,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> (Vec<Option<Instant>>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ArrivalWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A counter of `/proc/net/snmp` or `/proc/net/netstat` (header line and
/// value line per group) inside namespace `ns`: `group` "Tcp" or "TcpExt".
fn net_counter(ns: &Netns, file: &str, group: &str, name: &str) -> Option<u64> {
    let text = ns.exec("cat", &[file]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{group}:")))
        .collect();
    let (head, vals) = (lines.first()?, lines.get(1)?);
    let i = head.split_whitespace().position(|h| h == name)?;
    vals.split_whitespace().nth(i)?.parse().ok()
}

/// TCP retransmitted segments and retransmission timeouts in `ns` (the
/// sync link's TCP for director; conntrackd syncs over UDP).
fn tcp_retrans(ns: &Netns) -> String {
    format!(
        "{} retransmitted segments, {} RTOs",
        net_counter(ns, "/proc/net/snmp", "Tcp", "RetransSegs").unwrap_or(0),
        net_counter(ns, "/proc/net/netstat", "TcpExt", "TCPTimeouts").unwrap_or(0)
    )
}

/// Sustained load: `rate` new entries per second for `seconds`, created
/// on the master in 1 ms steps; per entry, the lag from its creation
/// to its NEW event in the backup's kernel.
fn rate(args: &Args) -> Result<(), String> {
    let n = args.rate.saturating_mul(args.seconds);
    println!(
        "rate: {} new entries/s for {} s ({n} entries), lag = creation on the master -> NEW event in the backup's kernel",
        args.rate, args.seconds
    );
    for &which in &args.only {
        if which == Impl::Conntrackd {
            println!(
                "  conntrackd (external cache): skipped, its entries reach the backup's kernel only at conntrackd -c (see burst); conntrackd-direct is the comparable mode"
            );
            continue;
        }
        let pair = Pair::new();
        let running = start(&pair, which)?;
        let arrivals = ArrivalWatch::start(pair.backup.name(), n)?;
        let watch = CountWatch::start(pair.backup.name())?;
        std::thread::sleep(Duration::from_millis(300));
        let base = watch.get();
        let (mpid, bpid) = running.pids();
        let (mc0, bc0) = (cpu_seconds(mpid), cpu_seconds(bpid));
        let ns = pair.master.name().to_owned();
        let per_second = args.rate;
        let generator = std::thread::spawn(move || -> Result<(Vec<Instant>, Duration), String> {
            enter(&ns)?;
            let mut sock = ConntrackSocket::open().map_err(|e| e.to_string())?;
            let mut created = Vec::with_capacity(n as usize);
            let t0 = Instant::now();
            let mut next = 0u32;
            while next < n {
                let due = ((t0.elapsed().as_secs_f64() * f64::from(per_second)) as u32).min(n);
                if due > next {
                    create_entries(&mut sock, next..due)?;
                    let now = Instant::now();
                    created.extend(std::iter::repeat_n(now, (due - next) as usize));
                    next = due;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok((created, t0.elapsed()))
        });
        let (created, took) = generator
            .join()
            .map_err(|_| "generator panicked".to_owned())??;
        // Stragglers: up to 10 s after the last creation.
        let _ = watch.wait_until(base + u64::from(n), Duration::from_secs(10));
        let (mc1, bc1) = (cpu_seconds(mpid), cpu_seconds(bpid));
        let (seen, overruns) = arrivals.finish();
        let mut lags: Vec<f64> = created
            .iter()
            .zip(&seen)
            .filter_map(|(c, s)| s.map(|s| ms(s.saturating_duration_since(*c))))
            .collect();
        // The worst lag of each second of the run: a lag that grows
        // from second to second is a backlog (the pair cannot keep up),
        // one that does not is a stall.
        let t_first = created.first().copied();
        let mut by_second: Vec<f64> = Vec::new();
        for (c, s) in created.iter().zip(&seen) {
            let (Some(t0), Some(s)) = (t_first, s) else {
                continue;
            };
            let sec = c.duration_since(t0).as_secs() as usize;
            if by_second.len() <= sec {
                by_second.resize(sec + 1, 0.0);
            }
            by_second[sec] = by_second[sec].max(ms(s.saturating_duration_since(*c)));
        }
        lags.sort_by(f64::total_cmp);
        let missing = n as usize - lags.len();
        let per_1k = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e3 / f64::from(n) * 1e3),
            _ => "?".into(),
        };
        println!(
            "  {:<17} achieved {:.0}/s, lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, missing {missing}, watcher overruns {overruns}, cpu ms per 1k events: master {}, backup {}",
            which.name(),
            f64::from(n) / took.as_secs_f64(),
            quantile(&lags, 0.5),
            quantile(&lags, 0.99),
            quantile(&lags, 1.0),
            per_1k(mc0, mc1),
            per_1k(bc0, bc1),
        );
        println!(
            "  {:<17} worst lag per second (ms): {}",
            "",
            by_second
                .iter()
                .map(|l| format!("{l:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "  {:<17} sync link TCP: master {}; backup {}",
            "",
            tcp_retrans(&pair.master),
            tcp_retrans(&pair.backup)
        );
        drop(running);
    }
    Ok(())
}

/// Takeover readiness with `entries` replicated entries: how long until
/// the backup's kernel holds them, and what is left to do at takeover
/// (director: kill -9 the master, time until the VIP is on the backup;
/// conntrackd: the `conntrackd -c` commit a failover script runs).
fn takeover(args: &Args) -> Result<(), String> {
    let n = args.entries;
    println!("takeover readiness with {n} replicated entries");
    for &which in &args.only {
        let pair = Pair::new();
        let running = start(&pair, which)?;
        let watch = CountWatch::start(pair.backup.name())?;
        std::thread::sleep(Duration::from_millis(300));
        let base = watch.get();
        let t0 = Instant::now();
        let last = generate(pair.master.name(), n)
            .join()
            .map_err(|_| "generator panicked".to_owned())??;
        match &running {
            Running::Conntrackd { backup_conf, .. } if which == Impl::Conntrackd => {
                let cached = wait_for(Duration::from_secs(300), || {
                    conntrackd_external(backup_conf)
                        .filter(|c| *c >= u64::from(n))
                        .map(|_| Instant::now())
                })
                .ok_or("conntrackd: the external cache never held every entry")?;
                let in_kernel_before = watch.get().saturating_sub(base);
                let commit = conntrackd_commit(backup_conf, &watch, base + u64::from(n))?;
                println!(
                    "  {:<17} created in {:.0} ms; in the backup's cache {:.0} ms after the last; in its kernel before the commit: {in_kernel_before}; commit step at takeover (conntrackd -c until all in the kernel): {:.0} ms",
                    which.name(),
                    ms(last - t0),
                    ms(cached.saturating_duration_since(last)),
                    ms(commit)
                );
            }
            Running::Conntrackd { .. } => {
                let done = watch
                    .wait_until(base + u64::from(n), Duration::from_secs(300))
                    .ok_or_else(|| {
                        format!(
                            "conntrackd-direct: the backup's kernel reached {} of {n} entries",
                            watch.get().saturating_sub(base)
                        )
                    })?;
                println!(
                    "  {:<17} created in {:.0} ms; all in the backup's kernel {:.0} ms after the last; commit step at takeover: none",
                    which.name(),
                    ms(last - t0),
                    ms(done.saturating_duration_since(last))
                );
            }
            Running::Director { master, backup } => {
                let done = watch
                    .wait_until(base + u64::from(n), Duration::from_secs(300))
                    .ok_or_else(|| {
                        format!(
                            "director: the backup's kernel reached {} of {n}; backup log:\n{}",
                            watch.get().saturating_sub(base),
                            backup.log_text()
                        )
                    })?;
                let in_kernel = watch.get().saturating_sub(base);
                let pid = master.child.as_ref().map_or(0, |c| c.id());
                let vip = format!("{VIP}/32");
                let kill = Instant::now();
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let up = wait_for(Duration::from_secs(5), || {
                    let out = pair.backup.ip(&["-o", "addr", "show", "dev", "sync0"]);
                    out.contains(&vip).then(Instant::now)
                })
                .ok_or("director: the backup never took the VIP over")?;
                println!(
                    "  {:<17} created in {:.0} ms; all in the backup's kernel {:.0} ms after the last; in its kernel at the kill: {in_kernel}; commit step: none; kill -9 -> VIP on the backup: {:.0} ms (Master_Down_Interval 360 ms + polling)",
                    which.name(),
                    ms(last - t0),
                    ms(done.saturating_duration_since(last)),
                    ms(up - kill)
                );
            }
        }
        drop(running);
    }
    Ok(())
}

// ---------------------------------------------------------------- write

/// CPU time (user + system) of the calling thread: the kernel's work on
/// a ctnetlink request runs inside our `sendmsg`, so it is billed here.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The backup's write path alone: `entries` creates, then as many
/// deletes, in batches of 1,000 requests (what one apply job carries),
/// per ACK mode, interleaved over 5 rounds; medians of microseconds per
/// entry, wall and CPU.
fn write(args: &Args) -> Result<(), String> {
    const ROUNDS: usize = 5;
    let n = args.entries;
    println!("write: {n} creates then {n} deletes through ConntrackSocket::batch (1,000 per call), {ROUNDS} rounds, us per entry");
    let ns = Netns::new("ctw");
    let name = ns.name().to_owned();
    let results = std::thread::spawn(move || -> Result<_, String> {
        enter(&name)?;
        let entries: Vec<Conntrack> = (0..n).map(entry).collect();
        let mut sock = ConntrackSocket::open().map_err(|e| e.to_string())?;
        let modes = [
            ("ack every message", BatchAcks::Every),
            ("ack at the fence", BatchAcks::Fence),
        ];
        // [mode][create wall, create cpu, delete wall, delete cpu]
        let mut samples = vec![vec![Vec::new(); 4]; modes.len()];
        for round in 0..ROUNDS {
            for k in 0..modes.len() {
                // Alternate which mode goes first.
                let m = if round % 2 == 0 {
                    k
                } else {
                    modes.len() - 1 - k
                };
                sock.set_batch_acks(modes[m].1);
                for (phase, delete) in [(0, false), (2, true)] {
                    let (t0, c0) = (Instant::now(), thread_cpu());
                    for chunk in entries.chunks(1000) {
                        let reqs: Vec<Request<'_>> = chunk
                            .iter()
                            .map(|ct| {
                                if delete {
                                    Request::Delete {
                                        orig: &ct.orig,
                                        zone: None,
                                    }
                                } else {
                                    Request::Create(ct)
                                }
                            })
                            .collect();
                        let answers = sock.batch(&reqs).map_err(|e| e.to_string())?;
                        if let Some(Err(e)) = answers.into_iter().find(Result::is_err) {
                            return Err(format!("{}: {e}", modes[m].0));
                        }
                    }
                    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
                    samples[m][phase].push(per(t0.elapsed()));
                    samples[m][phase + 1].push(per(thread_cpu() - c0));
                }
            }
        }
        Ok((modes.map(|m| m.0), samples))
    })
    .join()
    .map_err(|_| "writer panicked".to_owned())??;
    let (names, mut samples) = results;
    let mut medians = Vec::new();
    for (name, s) in names.iter().zip(samples.iter_mut()) {
        let m: Vec<f64> = s.iter_mut().map(|v| median(v)).collect();
        println!(
            "  {name:<18} create {:.2} us wall, {:.2} us cpu; delete {:.2} us wall, {:.2} us cpu",
            m[0], m[1], m[2], m[3]
        );
        medians.push(m);
    }
    println!(
        "  fence / every: create cpu {:.2}, delete cpu {:.2}",
        medians[1][1] / medians[0][1],
        medians[1][3] / medians[0][3]
    );
    drop(ns);
    Ok(())
}
