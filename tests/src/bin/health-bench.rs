//! Health-check benchmark (issue 5): 10,000 TCP checks per second against
//! local listeners. How much CPU does the checker use (goal: <= 25% of one
//! core), and how evenly are check starts spaced (goal: intervals kept
//! within 10%)?
//!
//! ```text
//! cargo build --release -p director -p director-tests
//! sudo target/release/health-bench [--mode runner|daemon|baseline] [--targets 10000]
//!     [--interval 1s] [--timeout 500ms] [--seconds 30] [--warmup 5]
//!     [--threads 2] [--per-vs 4] [--port-base 20000] [--listener-threads 1]
//! ```
//!
//! - **Targets.** `--targets` distinct TCP listeners (equal checks would be
//!   deduplicated into one probe): 100 ports (`--port-base` ..+99) on each
//!   of 127.1.0.1, 127.1.0.2, ... (the whole 127/8 is local on `lo`). They
//!   live in this process: `--listener-threads` epoll threads, each
//!   accepting, timestamping (monotonic clock) and closing every
//!   connection. Their CPU is reported but is not the checker's.
//! - **`--mode runner`**: the checker is `healthcheck::runner::Runner` with
//!   the real prober, alone in a child process (`health-bench checker ...`,
//!   a tokio runtime with `--threads` workers, 2 by default; 1 is a
//!   current-thread runtime; `director run` has one worker), so its CPU is
//!   its own.
//! - **`--mode daemon`**: the real `director run` (from
//!   `director_tests::bin_dir()`), `dataplane = "nftables"`, in a fresh
//!   network namespace, with `targets / per_vs` virtual servers of
//!   `--per-vs` real servers each, every one a distinct target, and
//!   `health = { kind = "tcp", interval, timeout }` on every virtual
//!   server. The listeners are created inside that namespace (on its `lo`).
//!   A daemon that runs no health checks produces no connections: that is
//!   reported as such, not as numbers.
//! - **`--mode baseline`**: no runner and no runtime, the kernel alone: a
//!   child thread makes the same connections at the same rate with
//!   blocking sockets (socket, SO_LINGER 0, connect, close). Runner CPU
//!   minus this is what the runner adds over the syscalls it cannot avoid.
//! - **Measured** over `--seconds` after `--warmup` seconds: CPU of the
//!   checker process (utime + stime from `/proc/PID/stat`, which the
//!   kernel scales to the scheduler's exact run time, over wall time; per
//!   thread name too; and per accepted connection, which stays comparable
//!   when a busy machine makes the checker fall behind), connections
//!   accepted per second, and per target the
//!   gaps between consecutive connections as a ratio of the configured
//!   interval ("kept within 10%": the ratio in [0.9, 1.1]; goal: >= 99% of
//!   the gaps), and connection starts per 100 ms bucket (max / mean: a
//!   thundering herd would show as a spike). In runner mode the checker
//!   also reports its own view: probe results, how late each probe started
//!   against its schedule, and probe latency. The whole machine's busy
//!   time is printed too: on a shared box, a starved checker starts late.
//!   An accept timestamp is the connect plus the listener's wake-up
//!   (well under a millisecond on an idle machine; 10% of 1 s is 100 ms).
//!
//! Loopback caveat: a connect to a local listener runs the listener's side
//! of the handshake (and of the reset) in the connecting thread's softirq,
//! so the checker's system time includes kernel work that a real server's
//! NIC would take elsewhere: a pessimistic figure.
//!
//! `RLIMIT_NOFILE` is raised (soft and, as root, hard) to what the
//! listeners need; the checker child and the daemon inherit it.

use healthcheck::runner::{Event, Runner};
use healthcheck::{CheckSpec, Health, Probe};
use rustix::event::epoll;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PORTS_PER_ADDR: usize = 100;
const CPU_GOAL_PCT: f64 = 25.0;
const WITHIN_GOAL_PCT: f64 = 99.0;
const TOLERANCE: f64 = 0.10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Runner,
    Daemon,
    Baseline,
}

#[derive(Clone, Debug)]
struct Opts {
    mode: Mode,
    targets: usize,
    interval: Duration,
    timeout: Duration,
    seconds: u64,
    warmup: Option<u64>,
    threads: usize,
    per_vs: usize,
    port_base: u16,
    listener_threads: usize,
}

impl Opts {
    fn warmup(&self) -> u64 {
        // The daemon first programs targets/per_vs services into nftables
        // and needs a few seconds for that on this machine.
        self.warmup.unwrap_or(match self.mode {
            Mode::Runner | Mode::Baseline => 5,
            Mode::Daemon => 15,
        })
    }

    /// Arguments of the child: `checker ...` (runner mode) or
    /// `baseline-loop ...`.
    fn checker_args(&self) -> Vec<String> {
        vec![
            match self.mode {
                Mode::Baseline => "baseline-loop".into(),
                _ => "checker".into(),
            },
            "--targets".into(),
            self.targets.to_string(),
            "--interval".into(),
            format!("{}ms", self.interval.as_millis()),
            "--timeout".into(),
            format!("{}ms", self.timeout.as_millis()),
            "--threads".into(),
            self.threads.to_string(),
            "--port-base".into(),
            self.port_base.to_string(),
        ]
    }
}

const USAGE: &str =
    "usage: health-bench [--mode runner|daemon|baseline] [--targets N] [--interval 1s] \
[--timeout 500ms] [--seconds 30] [--warmup S] [--threads T] [--per-vs M] [--port-base P] \
[--listener-threads L]";

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v > 0.0).then(|| Duration::from_secs_f64(v * mult))
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        mode: Mode::Runner,
        targets: 10_000,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        seconds: 30,
        warmup: None,
        threads: 2,
        per_vs: 4,
        port_base: 20_000,
        listener_threads: 1,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("bad value {value:?} for {flag}\n{USAGE}");
        let num = || value.parse::<u64>().map_err(|_| bad());
        match flag.as_str() {
            "--mode" => {
                o.mode = match value.as_str() {
                    "runner" => Mode::Runner,
                    "daemon" => Mode::Daemon,
                    "baseline" => Mode::Baseline,
                    _ => return Err(bad()),
                }
            }
            "--targets" => o.targets = num()? as usize,
            "--interval" => o.interval = parse_duration(value).ok_or_else(bad)?,
            "--timeout" => o.timeout = parse_duration(value).ok_or_else(bad)?,
            "--seconds" => o.seconds = num()?,
            "--warmup" => o.warmup = Some(num()?),
            "--threads" => o.threads = num()? as usize,
            "--per-vs" => o.per_vs = num()? as usize,
            "--port-base" => o.port_base = u16::try_from(num()?).map_err(|_| bad())?,
            "--listener-threads" => o.listener_threads = num()? as usize,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if o.targets == 0 || o.seconds == 0 || o.threads == 0 || o.per_vs == 0 {
        return Err(format!(
            "--targets, --seconds, --threads and --per-vs must be > 0\n{USAGE}"
        ));
    }
    o.listener_threads = o.listener_threads.max(1);
    if usize::from(o.port_base) + PORTS_PER_ADDR > 65_536 {
        return Err(format!("--port-base too high\n{USAGE}"));
    }
    if o.targets / PORTS_PER_ADDR >= 65_000 {
        return Err(format!("at most {} targets", 65_000 * PORTS_PER_ADDR));
    }
    Ok(o)
}

/// Target `i`: port `base + i % 100` on 127.1.0.(1 + i / 100) (counting
/// on into 127.1.1.x and beyond).
fn target(i: usize, port_base: u16) -> SocketAddr {
    let host = u32::from(Ipv4Addr::new(127, 1, 0, 0)) + (i / PORTS_PER_ADDR) as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(host),
        port_base + (i % PORTS_PER_ADDR) as u16,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = args.first().map(String::as_str);
    if sub == Some("checker") || sub == Some("baseline-loop") {
        match parse_opts(&args[1..]) {
            Ok(o) if sub == Some("checker") => checker_main(&o),
            Ok(o) => baseline_main(&o),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let opts = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    raise_nofile(opts.targets as u64 + 4096);
    let code = match opts.mode {
        Mode::Runner | Mode::Baseline => run_runner(&opts),
        Mode::Daemon => run_daemon(&opts),
    };
    std::process::exit(code);
}

fn raise_nofile(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    if old.current.is_none_or(|c| c >= want) {
        println!("RLIMIT_NOFILE: {:?} (enough)", old.current);
        return;
    }
    let new = Rlimit {
        current: Some(want),
        maximum: match old.maximum {
            Some(m) if m < want => Some(want),
            m => m,
        },
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => println!(
            "RLIMIT_NOFILE raised from {:?}/{:?} (soft/hard) to {want}/{:?}",
            old.current, old.maximum, new.maximum
        ),
        Err(e) => {
            eprintln!(
                "cannot raise RLIMIT_NOFILE to {want} ({e}; soft/hard {:?}/{:?}): run as root or \
                 `ulimit -n {want}` first",
                old.current, old.maximum
            );
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- checker

/// What the checker child reports about its own probes.
#[derive(Default)]
struct CheckerStats {
    ok: u64,
    failed: BTreeMap<String, u64>,
    stale: u64,
    lateness_us: Vec<u64>,
    latency_us: Vec<u64>,
}

impl CheckerStats {
    fn json(&mut self) -> serde_json::Value {
        self.lateness_us.sort_unstable();
        self.latency_us.sort_unstable();
        let q = |v: &[u64], p: f64| -> u64 {
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize]
            }
        };
        serde_json::json!({
            "ok": self.ok,
            "failed": self.failed,
            "stale": self.stale,
            "lateness_us": [q(&self.lateness_us, 0.5), q(&self.lateness_us, 0.99), q(&self.lateness_us, 1.0)],
            "latency_us": [q(&self.latency_us, 0.5), q(&self.latency_us, 0.99), q(&self.latency_us, 1.0)],
        })
    }
}

/// `health-bench checker ...`: the runner with the real prober on
/// `--targets` TCP checks. Prints `ready N` once they are set; stdin
/// commands: `reset` (start counting), `report` (one JSON line of what
/// was counted since); EOF ends it.
fn checker_main(o: &Opts) {
    let rt = if o.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async {
        let (runner, mut events) = Runner::new();
        let specs = (0..o.targets).map(|i| {
            (
                CheckSpec {
                    target: target(i, o.port_base),
                    probe: Probe::Tcp,
                    interval: o.interval,
                    timeout: o.timeout,
                    rise: 2,
                    fall: 3,
                },
                Health::Up,
            )
        });
        let errors = runner.set(specs);
        if let Some((spec, e)) = errors.first() {
            eprintln!("checker: {} refused: {e}", spec.target);
            std::process::exit(1);
        }
        println!("ready {}", runner.len());
        let _ = std::io::stdout().flush();
        let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The events are consumed by a task on the same runtime, as the
        // daemon's owner of the runner would (not by block_on's thread).
        let consumer = tokio::spawn(async move {
            let mut stats = CheckerStats::default();
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(Event::Probed(p)) => {
                            match &p.result {
                                Ok(()) => stats.ok += 1,
                                Err(f) => *stats.failed.entry(f.kind().to_owned()).or_default() += 1,
                            }
                            stats.lateness_us.push(p.started.saturating_sub(p.scheduled).as_micros() as u64);
                            stats.latency_us.push(p.latency.as_micros() as u64);
                        }
                        Some(Event::Stale { .. }) => stats.stale += 1,
                        None => break,
                    },
                    cmd = commands.recv() => match cmd.as_deref().map(str::trim) {
                        Some("reset") => stats = CheckerStats::default(),
                        Some("report") => {
                            println!("{}", stats.json());
                            let _ = std::io::stdout().flush();
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
        });
        let _ = consumer.await;
        drop(runner);
    });
}

/// `health-bench baseline-loop ...`: the same connections with no runtime
/// at all, to tell what the kernel alone costs on this machine: one
/// thread walks the targets in order, each at its even share of the
/// interval, and per target does socket, SO_LINGER 0, a blocking connect
/// (on loopback the handshake completes inside it) and close. It sleeps
/// whenever the next connection is more than 1 ms away. Prints `ready N`;
/// stdin EOF ends it.
fn baseline_main(o: &Opts) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        flag.store(true, Ordering::Relaxed);
    });
    let targets: Vec<SockAddr> = (0..o.targets)
        .map(|i| SockAddr::from(target(i, o.port_base)))
        .collect();
    println!("ready {}", targets.len());
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let step = o.interval.as_secs_f64() / targets.len() as f64;
    let mut k: u64 = 0;
    let mut failed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(k as f64 * step);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
        let addr = &targets[(k % targets.len() as u64) as usize];
        let ok = Socket::new(Domain::IPV4, Type::STREAM, None).and_then(|s| {
            s.set_linger(Some(Duration::ZERO))?;
            s.connect(addr)
        });
        failed += u64::from(ok.is_err());
        k += 1;
    }
    if failed > 0 {
        eprintln!("baseline: {failed} of {k} connects failed");
    }
}

/// A child with piped stdin and stdout read line by line.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    fn stop(&mut self) {
        self.stdin = None;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------- listeners

/// Accept timestamps, nanoseconds since the listeners' epoch.
struct ListenerLog {
    accepts: Vec<(u32, u64)>,
    errors: u64,
}

struct Listeners {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    threads: Vec<JoinHandle<ListenerLog>>,
}

fn bind_all(o: &Opts) -> Result<Vec<Socket>, String> {
    (0..o.targets)
        .map(|i| {
            let addr = target(i, o.port_base);
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
            s.set_reuse_address(true).map_err(|e| e.to_string())?;
            s.bind(&SockAddr::from(addr)).map_err(|e| {
                format!("bind {addr}: {e} (another program on these ports? try --port-base)")
            })?;
            s.listen(1024).map_err(|e| format!("listen {addr}: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(s)
        })
        .collect()
}

impl Listeners {
    /// Binds every target (inside network namespace `netns` if given: a
    /// thread of ours enters it and creates the sockets, which stay in it)
    /// and starts the accept threads.
    fn start(o: &Opts, netns: Option<&str>) -> Result<Listeners, String> {
        let sockets = match netns {
            None => bind_all(o)?,
            Some(ns) => {
                director::netlink::in_netns(ns, || bind_all(o)).map_err(|e| e.to_string())??
            }
        };
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut parts: Vec<Vec<(u32, Socket)>> =
            (0..o.listener_threads).map(|_| Vec::new()).collect();
        for (i, s) in sockets.into_iter().enumerate() {
            parts[i % o.listener_threads].push((i as u32, s));
        }
        let threads = parts
            .into_iter()
            .map(|part| {
                let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
                std::thread::Builder::new()
                    .name("hb-listen".into())
                    .spawn(move || serve(part, &stop, &count, epoch))
                    .expect("listener thread")
            })
            .collect();
        Ok(Listeners {
            epoch,
            stop,
            count,
            threads,
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn finish(self) -> ListenerLog {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = ListenerLog {
            accepts: Vec::new(),
            errors: 0,
        };
        for t in self.threads {
            let log = t.join().expect("listener thread");
            all.accepts.extend(log.accepts);
            all.errors += log.errors;
        }
        all
    }
}

/// One epoll set over a share of the listeners: accept until EAGAIN,
/// timestamp, close.
fn serve(
    listeners: Vec<(u32, Socket)>,
    stop: &AtomicBool,
    count: &AtomicU64,
    epoch: Instant,
) -> ListenerLog {
    let mut log = ListenerLog {
        accepts: Vec::with_capacity(1 << 20),
        errors: 0,
    };
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    for (i, (_, s)) in listeners.iter().enumerate() {
        epoll::add(
            &ep,
            s,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )
        .expect("epoll_ctl");
    }
    let mut events = vec![
        epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        1024
    ];
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        let n = match epoll::wait(&ep, &mut events[..], Some(&tick)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        };
        for ev in &events[..n] {
            let data = ev.data;
            let (id, s) = &listeners[data.u64() as usize];
            loop {
                match s.accept() {
                    Ok((conn, _)) => {
                        log.accepts.push((*id, epoch.elapsed().as_nanos() as u64));
                        count.fetch_add(1, Ordering::Relaxed);
                        drop(conn);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        log.errors += 1;
                        break;
                    }
                }
            }
        }
    }
    log
}

// -------------------------------------------------------------------- CPU

/// utime + stime (clock ticks) of a whole process, and per thread name.
#[derive(Clone, Default)]
struct CpuSample {
    user: u64,
    sys: u64,
    threads: BTreeMap<u32, (String, u64)>,
}

/// `(comm, utime, stime)` from a `/proc/.../stat` line.
fn parse_stat(text: &str) -> Option<(String, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Fields after "comm": state is field 3; utime 14, stime 15.
    let f: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    Some((comm, f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

fn cpu_sample(pid: u32) -> Option<CpuSample> {
    let (_, user, sys) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((comm, u, s)) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                threads.insert(tid, (comm, u + s));
            }
        }
    }
    Some(CpuSample { user, sys, threads })
}

struct CpuUse {
    /// Percent of one core over the window.
    total: f64,
    user: f64,
    sys: f64,
    /// Thread name -> percent of one core.
    by_thread: BTreeMap<String, f64>,
}

fn cpu_use(a: &CpuSample, b: &CpuSample, wall: Duration) -> CpuUse {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let pct = |ticks: u64| ticks as f64 / hz / wall.as_secs_f64() * 100.0;
    let mut by_thread = BTreeMap::new();
    for (tid, (comm, t1)) in &b.threads {
        let t0 = a.threads.get(tid).map_or(0, |(_, t)| *t);
        *by_thread.entry(comm.clone()).or_insert(0.0) += pct(t1.saturating_sub(t0));
    }
    let user = pct(b.user.saturating_sub(a.user));
    let sys = pct(b.sys.saturating_sub(a.sys));
    CpuUse {
        total: user + sys,
        user,
        sys,
        by_thread,
    }
}

// ------------------------------------------------------------ measurement

struct Window {
    t0_ns: u64,
    t1_ns: u64,
    checker: CpuUse,
    listener: CpuUse,
    machine: Machine,
}

/// The whole machine over the window, from `/proc/stat` (to tell a quiet
/// run from one on a busy, shared box).
struct Machine {
    cpus: usize,
    /// Busy time of all CPUs together, percent of one core.
    busy: f64,
    /// Time the hypervisor ran something else, percent of one core.
    steal: f64,
}

/// Sum of all CPUs' `(busy, idle + iowait, steal)` ticks.
fn machine_ticks() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is in user).
    let idle = get(3) + get(4);
    let steal = get(7);
    let busy = (0..8).map(get).sum::<u64>() - idle - steal;
    (busy, idle, steal)
}

fn machine_use(a: (u64, u64, u64), b: (u64, u64, u64), wall: Duration) -> Machine {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let pct = |x: u64, y: u64| y.saturating_sub(x) as f64 / hz / wall.as_secs_f64() * 100.0;
    Machine {
        // /proc/stat's cpuN lines: every CPU, whatever our affinity.
        cpus: std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count()
            .max(1),
        busy: pct(a.0, b.0),
        steal: pct(a.2, b.2),
    }
}

/// Warm-up, then the window; progress every 5 s. `checker_pid`'s CPU is
/// sampled at both ends of the window (and our own, the listeners').
fn measure(
    o: &Opts,
    listeners: &Listeners,
    who: &str,
    checker_pid: u32,
    mut at_start: impl FnMut(),
) -> Option<Window> {
    let me = std::process::id();
    let progress = |label: &str, secs: u64, from_count: u64, from_cpu: &CpuSample| {
        let c = cpu_sample(checker_pid).unwrap_or_default();
        let n = listeners.count.load(Ordering::Relaxed);
        let u = cpu_use(from_cpu, &c, Duration::from_secs(secs));
        println!(
            "  {label}: {:>7.0} connections/s, {who} CPU {:5.1}% of one core",
            (n - from_count) as f64 / secs as f64,
            u.total
        );
        (n, c)
    };
    let step = 5;
    let warmup = o.warmup();
    println!("warm-up {warmup} s, then a {} s window", o.seconds);
    let mut count = listeners.count.load(Ordering::Relaxed);
    let mut cpu = cpu_sample(checker_pid)?;
    let mut done = 0;
    while done < warmup {
        let s = step.min(warmup - done);
        std::thread::sleep(Duration::from_secs(s));
        done += s;
        (count, cpu) = progress(&format!("warm-up  +{done:>3}s"), s, count, &cpu);
    }
    at_start();
    let t0 = Instant::now();
    let t0_ns = listeners.now_ns();
    let c0 = cpu_sample(checker_pid)?;
    let l0 = cpu_sample(me)?;
    let m0 = machine_ticks();
    cpu = c0.clone();
    done = 0;
    while done < o.seconds {
        let s = step.min(o.seconds - done);
        std::thread::sleep(Duration::from_secs(s));
        done += s;
        (count, cpu) = progress(&format!("window   +{done:>3}s"), s, count, &cpu);
    }
    let _ = (count, cpu);
    let c1 = cpu_sample(checker_pid)?;
    let l1 = cpu_sample(me)?;
    let m1 = machine_ticks();
    let t1_ns = listeners.now_ns();
    let wall = t0.elapsed();
    Some(Window {
        t0_ns,
        t1_ns,
        checker: cpu_use(&c0, &c1, wall),
        listener: cpu_use(&l0, &l1, wall),
        machine: machine_use(m0, m1, wall),
    })
}

struct Spread {
    accepted: u64,
    per_second: f64,
    /// Sorted gap / interval ratios.
    ratios: Vec<f64>,
    within: u64,
    silent_targets: usize,
    bucket_max: f64,
    bucket_min: f64,
}

fn analyse(log: &ListenerLog, o: &Opts, w: &Window) -> Spread {
    let mut per_target: Vec<Vec<u64>> = vec![Vec::new(); o.targets];
    let mut accepted = 0u64;
    let bucket_ns = 100_000_000u64;
    let n_buckets = ((w.t1_ns - w.t0_ns) / bucket_ns).max(1) as usize;
    let mut buckets = vec![0u64; n_buckets];
    for &(id, t) in &log.accepts {
        if t < w.t0_ns || t > w.t1_ns {
            continue;
        }
        accepted += 1;
        per_target[id as usize].push(t);
        if let Some(b) = buckets.get_mut(((t - w.t0_ns) / bucket_ns) as usize) {
            *b += 1;
        }
    }
    let interval_ns = o.interval.as_nanos() as f64;
    let mut ratios = Vec::with_capacity(accepted as usize);
    let mut silent_targets = 0;
    for times in &mut per_target {
        if times.is_empty() {
            silent_targets += 1;
        }
        times.sort_unstable();
        ratios.extend(times.windows(2).map(|p| (p[1] - p[0]) as f64 / interval_ns));
    }
    ratios.sort_by(f64::total_cmp);
    let within = ratios
        .iter()
        .filter(|r| (**r - 1.0).abs() <= TOLERANCE)
        .count() as u64;
    let mean = buckets.iter().sum::<u64>() as f64 / n_buckets as f64;
    if std::env::var_os("HEALTH_BENCH_BUCKETS").is_some() {
        // Debugging aid: the connection starts of every 100 ms bucket.
        for (i, n) in buckets.iter().enumerate() {
            println!("bucket {:>6.1} s {n}", i as f64 / 10.0);
        }
    }
    let (bmax, bmin) = (
        buckets.iter().copied().max().unwrap_or(0) as f64,
        buckets.iter().copied().min().unwrap_or(0) as f64,
    );
    Spread {
        accepted,
        per_second: accepted as f64 / ((w.t1_ns - w.t0_ns) as f64 / 1e9),
        ratios,
        within,
        silent_targets,
        bucket_max: if mean > 0.0 { bmax / mean } else { 0.0 },
        bucket_min: if mean > 0.0 { bmin / mean } else { 0.0 },
    }
}

fn q(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn report(
    o: &Opts,
    who: &str,
    w: &Window,
    s: &Spread,
    log: &ListenerLog,
    checker: Option<&serde_json::Value>,
) {
    let expected = o.targets as f64 / o.interval.as_secs_f64();
    let within_pct = if s.ratios.is_empty() {
        0.0
    } else {
        s.within as f64 / s.ratios.len() as f64 * 100.0
    };
    let mode = match o.mode {
        Mode::Runner => "runner",
        Mode::Daemon => "daemon",
        Mode::Baseline => "baseline",
    };
    println!();
    println!(
        "| health-bench --mode {mode}: {} TCP checks, interval {:?}, timeout {:?}, {} s window | value | goal |",
        thousands(o.targets as u64),
        o.interval,
        o.timeout,
        o.seconds
    );
    println!("|---|---|---|");
    println!(
        "| {who} CPU, % of one core (user + sys) | **{:.1}%** ({:.1} + {:.1}) | <= {CPU_GOAL_PCT:.0}%: {} |",
        w.checker.total,
        w.checker.user,
        w.checker.sys,
        verdict(w.checker.total <= CPU_GOAL_PCT)
    );
    println!(
        "| {who} CPU per check (CPU time / connections accepted) | {:.1} us | <= {:.1} us |",
        w.checker.total / 100.0 / s.per_second.max(1e-9) * 1e6,
        CPU_GOAL_PCT / 100.0 / expected * 1e6
    );
    println!(
        "| connections accepted per second (expected {}) | {} | - |",
        thousands(expected.round() as u64),
        thousands(s.per_second.round() as u64)
    );
    println!(
        "| gap between two checks of a target / interval: p1, p50, p99 | {:.3}, {:.3}, {:.3} | - |",
        q(&s.ratios, 0.01),
        q(&s.ratios, 0.5),
        q(&s.ratios, 0.99)
    );
    println!(
        "| gap / interval: min, max | {:.3}, {:.3} | - |",
        q(&s.ratios, 0.0),
        q(&s.ratios, 1.0)
    );
    println!(
        "| gaps within +-{:.0}% of the interval | **{within_pct:.2}%** ({} of {}) | >= {WITHIN_GOAL_PCT:.0}%: {} |",
        TOLERANCE * 100.0,
        thousands(s.within),
        thousands(s.ratios.len() as u64),
        verdict(within_pct >= WITHIN_GOAL_PCT)
    );
    println!(
        "| connection starts per 100 ms bucket: max / mean, min / mean | {:.2}, {:.2} | - |",
        s.bucket_max, s.bucket_min
    );
    println!(
        "| targets with no connection in the window | {} of {} | 0 |",
        s.silent_targets,
        thousands(o.targets as u64)
    );
    if let Some(c) = checker {
        let failed: u64 = c["failed"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
        println!(
            "| probes ok / failed (checker's count) | {} / {} {} | - |",
            thousands(c["ok"].as_u64().unwrap_or(0)),
            thousands(failed),
            if failed > 0 {
                c["failed"].to_string()
            } else {
                String::new()
            }
        );
        let us = |v: &serde_json::Value, i: usize| v[i].as_u64().unwrap_or(0) as f64 / 1e3;
        println!(
            "| probe start - scheduled time: p50, p99, max | {:.2}, {:.2}, {:.2} ms | - |",
            us(&c["lateness_us"], 0),
            us(&c["lateness_us"], 1),
            us(&c["lateness_us"], 2)
        );
        println!(
            "| probe latency (connect + close): p50, p99, max | {:.2}, {:.2}, {:.2} ms | - |",
            us(&c["latency_us"], 0),
            us(&c["latency_us"], 1),
            us(&c["latency_us"], 2)
        );
        println!(
            "| stale-check restarts (watchdog) | {} | 0 |",
            c["stale"].as_u64().unwrap_or(0)
        );
    }
    println!(
        "| listeners (this process, not counted), % of one core | {:.1}% | - |",
        w.listener.total
    );
    println!(
        "| whole machine ({} CPUs) busy during the window, % of one core | {:.0}% (steal {:.0}%) | - |",
        w.machine.cpus, w.machine.busy, w.machine.steal
    );
    if log.errors > 0 {
        println!("| accept errors | {} | 0 |", log.errors);
    }
    let threads: Vec<String> = w
        .checker
        .by_thread
        .iter()
        .filter(|(_, p)| **p >= 0.05)
        .map(|(name, p)| format!("{name} {p:.1}%"))
        .collect();
    println!();
    println!("{who} CPU by thread name: {}", threads.join(", "));
}

// ------------------------------------------------------------------ modes

fn describe(o: &Opts) {
    let addrs = o.targets.div_ceil(PORTS_PER_ADDR);
    println!(
        "targets: {} listeners, ports {}-{} on {} addresses from {} ({} listener thread(s), in this process)",
        thousands(o.targets as u64),
        o.port_base,
        usize::from(o.port_base) + PORTS_PER_ADDR.min(o.targets) - 1,
        addrs,
        target(0, o.port_base).ip(),
        o.listener_threads
    );
}

fn run_runner(o: &Opts) -> i32 {
    if o.mode == Mode::Baseline {
        println!(
            "health-bench --mode baseline: no runner, no runtime: one thread in a child process \
             connects to {} targets in turn, evenly over {:?} (socket, SO_LINGER 0, blocking \
             connect, close): the kernel's share of a check on this machine",
            thousands(o.targets as u64),
            o.interval
        );
    } else {
        println!(
            "health-bench --mode runner: healthcheck::runner::Runner + RealProber in a child \
             process (tokio, {} worker thread(s)), {} TCP checks every {:?} (timeout {:?})",
            o.threads,
            thousands(o.targets as u64),
            o.interval,
            o.timeout
        );
    }
    describe(o);
    let listeners = match Listeners::start(o, None) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listeners: {e}");
            return 1;
        }
    };
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(o.checker_args());
    let mut checker = Proc::spawn(cmd);
    match checker.line(Duration::from_secs(60)) {
        Some(l) if l.starts_with("ready") => println!("checker pid {}: {l}", checker.child.id()),
        other => {
            eprintln!("checker did not start: {other:?}");
            return 1;
        }
    }
    let pid = checker.child.id();
    let who = match o.mode {
        Mode::Baseline => "baseline loop",
        _ => "checker",
    };
    let Some(w) = measure(o, &listeners, who, pid, || checker.send("reset")) else {
        eprintln!("checker process {pid} went away");
        return 1;
    };
    let stats = if o.mode == Mode::Runner {
        checker.send("report");
        checker
            .line(Duration::from_secs(30))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
    } else {
        None
    };
    checker.stop();
    let log = listeners.finish();
    let s = analyse(&log, o, &w);
    report(o, who, &w, &s, &log, stats.as_ref());
    0
}

fn daemon_config(o: &Opts) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let services = o.targets.div_ceil(o.per_vs);
    for v in 0..services {
        // RFC 2544 benchmarking range: not local anywhere.
        let _ = writeln!(
            s,
            "[[virtual_server]]\nname = \"vs{v}\"\naddress = \"198.18.{}.{}:80\"\nscheduler = \"rr\"\n\
             health = {{ kind = \"tcp\", interval = \"{}ms\", timeout = \"{}ms\" }}",
            v / 250,
            v % 250 + 1,
            o.interval.as_millis(),
            o.timeout.as_millis()
        );
        for r in v * o.per_vs..((v + 1) * o.per_vs).min(o.targets) {
            let _ = writeln!(
                s,
                "  [[virtual_server.real_server]]\n  address = \"{}\"",
                target(r, o.port_base)
            );
        }
    }
    s
}

fn run_daemon(o: &Opts) -> i32 {
    let director = director_tests::bin("director");
    if !director.is_file() {
        eprintln!(
            "{} not found: cargo build --release -p director (or set DIRECTOR_BIN_DIR)",
            director.display()
        );
        return 1;
    }
    let services = o.targets.div_ceil(o.per_vs);
    println!(
        "health-bench --mode daemon: {} run, dataplane nftables, {} virtual servers x {} real \
         servers = {} distinct TCP checks every {:?} (timeout {:?})",
        director.display(),
        thousands(services as u64),
        o.per_vs,
        thousands(o.targets as u64),
        o.interval,
        o.timeout
    );
    let ns = director_tests::netns::Netns::new("hbench");
    println!("network namespace {}", ns.name());
    describe(o);
    let listeners = match Listeners::start(o, Some(ns.name())) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("listeners: {e}");
            return 1;
        }
    };
    let started = Instant::now();
    let daemon = director_tests::Daemon::start_in(
        &ns,
        "health-bench",
        "dataplane = \"nftables\"\n",
        &daemon_config(o),
    );
    let Some(child) = daemon.child.as_ref() else {
        eprintln!("director did not start");
        return 1;
    };
    // `ip netns exec` execs the program: the child is the daemon itself.
    // Check, and fall back to looking for it among the namespace's pids.
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let pid = Some(child.id())
        .filter(|p| comm(*p).trim() == "director")
        .or_else(|| {
            ns.pids()
                .into_iter()
                .find(|p| comm(*p).trim() == "director")
        })
        .unwrap_or(child.id());
    println!(
        "director pid {pid} answering its control socket after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let w = measure(o, &listeners, "director", pid, || {});
    let log = listeners.finish();
    let not_active = daemon
        .log_text()
        .lines()
        .any(|l| l.contains("config_section_not_active") && l.contains("health"));
    drop(daemon);
    let Some(w) = w else {
        eprintln!("director process {pid} went away");
        return 1;
    };
    let s = analyse(&log, o, &w);
    if s.accepted == 0 {
        println!();
        println!(
            "no checks observed: is health checking implemented in this daemon build? \
             (the listeners accepted no connection in the {} s window after {} s of warm-up{})",
            o.seconds,
            o.warmup(),
            if not_active {
                "; its log says virtual_server.health is validated but not acted on"
            } else {
                ""
            }
        );
        println!(
            "director CPU over the window, for what it is worth: {:.1}% of one core",
            w.checker.total
        );
        return 2;
    }
    report(o, "director", &w, &s, &log, None);
    0
}
