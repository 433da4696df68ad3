//! The VRRP benchmark of issue 4: takeover time after `kill -9` of the
//! master, and stability under CPU saturation; director and keepalived
//! side by side, through the same harness code, in one invocation.
//!
//! ```text
//! cargo build --release -p director -p director-tests
//! sudo target/release/vrrp-bench takeover  [--runs N]    [--only director|keepalived]
//! sudo target/release/vrrp-bench stability [--seconds S] [--only director|keepalived]
//! ```
//!
//! `director` and `directorctl` come from [`bin_dir`] (`$DIRECTOR_BIN_DIR`,
//! else `target/release`, also for a debug build of this benchmark),
//! keepalived from `$KEEPALIVED` or `/usr/sbin/keepalived`.
//!
//! Each implementation gets its own [`LbTopology`] (two director
//! namespaces and a client on one bridged LAN), so the two pairs never
//! hear each other. Both pairs run the same instance: VRRPv3, VRID 51,
//! `eth0`, advert interval 100 ms, master priority 150, backup priority
//! 100, preempt on, VIP 192.0.2.100/32, gratuitous ARP at the defaults
//! both share (keepalived's `garp_master_delay 5`, `garp_master_repeat 5`,
//! no refresh; director's `garp_*` keys default to the same values).
//!
//! What is observed, identically for both, by threads of this process:
//! - the VIP on each box: an rtnetlink socket subscribed to
//!   RTNLGRP_IPV4_IFADDR inside the box's namespace; an RTM_NEWADDR /
//!   RTM_DELADDR naming the VIP is stamped (`Instant`, CLOCK_MONOTONIC) as
//!   the thread wakes up with it: event driven, no polling interval, so
//!   the resolution is the thread's wake-up latency (netlink has no
//!   kernel timestamps), kept to microseconds by running the watchers at
//!   SCHED_FIFO priority 10 (the daemons are SCHED_OTHER);
//! - the wire: an AF_PACKET socket (ETH_P_ALL) in the client's namespace
//!   with kernel receive timestamps (SO_TIMESTAMPNS, ns): gratuitous ARPs
//!   for the VIP (sender IP = target IP = VIP) with their Ethernet source
//!   and ARP sender MACs, and VRRP advertisements with their source MAC.
//!   The master's last advert before the kill gives the kill's phase in
//!   the advert cycle: takeover measured from it is Master_Down_Interval
//!   plus the implementation's own delay, without the phase's 100 ms of
//!   spread.
//!
//! `takeover`: per run, per implementation (interleaved: director run i,
//! keepalived run i): wait until the master holds the VIP, the backup does
//! not, and only the master sends adverts on the wire, for 1 s, and at
//! least 6 s have passed since the backup last became master (its
//! second, delayed GARP burst at 5 s would otherwise land in the next
//! run); wait for one of the master's adverts on the wire and sleep until
//! the run's phase after it (run i of N: (i - 0.5)/N x 100 ms, the same
//! for both implementations: the phases cover the advert cycle evenly, as
//! random kills would on average, without 20 random draws deciding the
//! comparison of two p50s); take `t0`, SIGKILL the master; `t_vip` = the VIP appearing on
//! the backup, `t_garp` = the first gratuitous ARP for the VIP from the
//! backup's MAC. Takeover = max(t_vip, t_garp) - t0. Then the killed
//! master is restarted (it preempts; the next run waits for the pair to
//! settle again).
//!
//! The kill: director is a direct child (`Daemon::kill9`, one kill(2));
//! keepalived's VRRP child and parent get SIGKILL by kill(2) from here
//! (pids from their pid files) before `Keepalived::kill9` reaps, so both
//! die within microseconds of `t0` (the harness's `kill` command would add
//! a fork and exec, several ms on a busy box, to keepalived's time only).
//!
//! `stability`: both pairs settle, then 2 x CPUs busy-loop processes (this
//! binary, `spin` mode; they exit by themselves if this process dies) run
//! for S seconds. Counted in the window: state changes each daemon reports
//! (director: `vrrp_state_change` log lines and the became/released master
//! counters of `directorctl vrrp --json`; keepalived: its `Entering ...
//! STATE` log lines), and, identically for both, VIP adds/removes on either
//! box, gratuitous ARPs and adverts from the backup on the wire, and the
//! intervals between the master's adverts on the wire. Also director's
//! timer lateness (the driver's histogram, over the window).

use director_tests::keepalived::{self, Keepalived};
use director_tests::netns::{LbTopology, Netns};
use director_tests::{bin, bin_dir, Daemon};
use std::net::Ipv4Addr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: vrrp-bench takeover  [--runs N]    [--only director|keepalived]
       vrrp-bench stability [--seconds S] [--only director|keepalived]";

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VRID: u8 = 51;
const MASTER_PRIORITY: u8 = 150;
const BACKUP_PRIORITY: u8 = 100;
const ADVERT_MS: u64 = 100;
/// `garp_master_delay` of both (their default): a new master's second
/// burst comes this long after the first.
const GARP_MASTER_DELAY: Duration = Duration::from_secs(5);
/// How long the pair must look settled before a kill.
const SETTLED_FOR: Duration = Duration::from_secs(1);
/// Give up on a takeover (the run fails) after this long.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);
/// Give up waiting for a pair to settle after this long.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

const DIRECTOR_GLOBAL: &str = "dataplane = \"nftables\"\nreconcile_interval = \"1s\"\n";

fn director_instance(priority: u8) -> String {
    format!(
        r#"
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = {VRID}
priority = {priority}
version = 3
advert_interval = "{ADVERT_MS}ms"
virtual_ipaddresses = ["{VIP}/32"]
"#
    )
}

fn keepalived_conf(router_id: &str, priority: u8) -> String {
    format!(
        r#"global_defs {{
    router_id {router_id}
}}

vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {priority}
    version 3
    advert_int {advert}
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
}}
"#,
        advert = ADVERT_MS as f64 / 1000.0
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Director,
    Keepalived,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Director => "director",
            Kind::Keepalived => "keepalived",
        }
    }
}

#[derive(Debug)]
enum Mode {
    Takeover { runs: usize, only: Option<Kind> },
    Stability { seconds: u64, only: Option<Kind> },
    Spin,
}

fn parse_args(args: &[String]) -> Result<Mode, String> {
    let Some((mode, rest)) = args.split_first() else {
        return Err("missing mode".into());
    };
    if mode == "spin" {
        return Ok(Mode::Spin);
    }
    let (mut runs, mut seconds, mut only) = (20usize, 60u64, None);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match (mode.as_str(), flag.as_str()) {
            ("takeover", "--runs") => {
                let v = value()?;
                runs = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--runs {v}: expected a positive integer"))?;
            }
            ("stability", "--seconds") => {
                let v = value()?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--seconds {v}: expected a positive integer"))?;
            }
            (_, "--only") => {
                only = Some(match value()? {
                    "director" => Kind::Director,
                    "keepalived" => Kind::Keepalived,
                    v => return Err(format!("--only {v}: expected director or keepalived")),
                });
            }
            _ => return Err(format!("unknown argument {flag} for {mode}")),
        }
    }
    match mode.as_str() {
        "takeover" => Ok(Mode::Takeover { runs, only }),
        "stability" => Ok(Mode::Stability { seconds, only }),
        m => Err(format!("unknown mode {m}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse_args(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vrrp-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let kinds = |only: Option<Kind>| match only {
        Some(k) => vec![k],
        None => vec![Kind::Director, Kind::Keepalived],
    };
    let outcome = match mode {
        Mode::Spin => spin(),
        Mode::Takeover { runs, only } => preflight(&kinds(only)).and_then(|()| {
            // Everything (namespaces, daemons, watcher threads) is owned
            // inside and dropped before the process exits.
            takeover(runs, &kinds(only))
        }),
        Mode::Stability { seconds, only } => {
            preflight(&kinds(only)).and_then(|()| stability(seconds, &kinds(only)))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrrp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses early, with the reason, what would fail later in a panic.
fn preflight(kinds: &[Kind]) -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (network namespaces, raw sockets)".into());
    }
    if kinds.contains(&Kind::Director) {
        for b in ["director", "directorctl"] {
            if !bin(b).is_file() {
                return Err(format!(
                    "{} not found (set DIRECTOR_BIN_DIR, or build it: \
                     cargo build --release -p director -p director-tests)",
                    bin(b).display()
                ));
            }
        }
    }
    if kinds.contains(&Kind::Keepalived) && !keepalived::binary().is_file() {
        return Err(format!(
            "keepalived not found at {} (install Debian's keepalived, set $KEEPALIVED, \
             or run with --only director)",
            keepalived::binary().display()
        ));
    }
    Ok(())
}

fn describe(kinds: &[Kind]) {
    for k in kinds {
        match k {
            Kind::Director => println!("  director:   {}", bin_dir().join("director").display()),
            Kind::Keepalived => {
                let v = Command::new(keepalived::binary())
                    .arg("--version")
                    .output()
                    .map(|o| {
                        let text = format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stderr),
                            String::from_utf8_lossy(&o.stdout)
                        );
                        text.lines().next().unwrap_or_default().to_owned()
                    })
                    .unwrap_or_default();
                println!("  keepalived: {} ({v})", keepalived::binary().display());
            }
        }
    }
    println!(
        "  instance:   VRRPv3, VRID {VRID}, eth0, advert interval {ADVERT_MS} ms, priorities \
         {MASTER_PRIORITY} (master) / {BACKUP_PRIORITY} (backup), preempt, VIP {VIP}/32; \
         gratuitous ARP at both defaults (5 at once, 5 more after 5 s, no refresh)"
    );
}

/// Master_Down_Interval in RFC 5798's integer centiseconds.
fn master_down_centis() -> u64 {
    let adv = ADVERT_MS / 10;
    3 * adv + (256 - u64::from(BACKUP_PRIORITY)) * adv / 256
}

fn warn_not_realtime() {
    let n = WATCHERS_NOT_REALTIME.load(Ordering::Relaxed);
    if n > 0 {
        println!(
            "  WARNING: {n} watcher thread(s) could not get SCHED_FIFO (chrt -f -p 10 TID \
             failed): VIP stamps include their wake-up latency on a busy box"
        );
    }
}

/// Run `run` of `runs` kills the master this long after one of its
/// adverts: the advert cycle cut into `runs` equal strata, the middle of
/// stratum `run` (so the phases cover the cycle evenly, as random kills
/// would on average, and each implementation gets the same ones).
fn kill_phase(run: usize, runs: usize) -> Duration {
    Duration::from_secs_f64((run as f64 - 0.5) / runs as f64 * ADVERT_MS as f64 / 1000.0)
}

/// RFC 5798 6.1: Master_Down_Interval = 3 x Master_Adver_Interval +
/// Skew_Time, Skew_Time = ((256 - Priority) x Master_Adver_Interval) / 256.
fn master_down_ms() -> f64 {
    let adv = ADVERT_MS as f64;
    3.0 * adv + (256.0 - f64::from(BACKUP_PRIORITY)) * adv / 256.0
}

// ---------------------------------------------------------------------
// Observation: VIP events per box, gratuitous ARPs on the wire.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Master,
    Backup,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Vip {
        side: Side,
        added: bool,
    },
    Garp {
        eth_src: [u8; 6],
        sender: [u8; 6],
    },
    /// A VRRP advertisement (IPv4 protocol 112) on the wire.
    Advert {
        eth_src: [u8; 6],
    },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: Instant,
    what: What,
}

const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFADDRMSG_LEN: usize = 8;
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
/// IANA protocol number of VRRP (RFC 5798 5.1.1.4).
const IPPROTO_VRRP: u8 = 112;
/// How often a blocked watcher looks at its stop flag.
const WATCH_TICK: Duration = Duration::from_millis(100);

fn io_context(what: &str, ns: &str) -> impl Fn(std::io::Error) -> String {
    let (what, ns) = (what.to_owned(), ns.to_owned());
    move |e| format!("{what} in {ns}: {e}")
}

/// Watcher threads that could not get real-time priority (see
/// [`realtime_watcher`]).
static WATCHERS_NOT_REALTIME: AtomicUsize = AtomicUsize::new(0);

/// Puts the calling watcher thread on SCHED_FIFO (priority 10, through
/// `chrt -p`: there is no safe wrapper for sched_setscheduler(2)). The
/// VIP stamp is taken when this thread wakes up (netlink has no kernel
/// timestamps); as a normal thread it would wait for a CPU while the
/// daemon that just added the VIP keeps running (keepalived logs a dozen
/// lines at takeover) and the other CPU is busy, which would add that wait
/// to the daemon's time. At real-time priority it preempts both daemons,
/// which are SCHED_OTHER, at once. It sleeps almost all the time, so it
/// costs the daemons nothing measurable.
fn realtime_watcher() {
    let tid = rustix::thread::gettid().as_raw_nonzero().get().to_string();
    let ok = Command::new("chrt")
        .args(["-f", "-p", "10", &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        WATCHERS_NOT_REALTIME.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether an RTM_NEWADDR/RTM_DELADDR payload (after `struct nlmsghdr`)
/// names [`VIP`].
fn names_vip(payload: &[u8]) -> bool {
    if payload.first() != Some(&(libc::AF_INET as u8)) {
        return false;
    }
    director::netlink::AttrIter::new(payload.get(IFADDRMSG_LEN..).unwrap_or_default())
        .filter_map(Result::ok)
        .any(|a| (a.kind == IFA_LOCAL || a.kind == IFA_ADDRESS) && a.value == VIP.octets())
}

/// VIP added to / removed from any interface of namespace `ns`.
fn watch_vip(
    ns: &Netns,
    side: Side,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let name = ns.name();
    let ctx = io_context("rtnetlink address subscription", name);
    let sock = director::netlink::in_netns(name, || {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        s.bind_auto()?;
        s.add_membership(RTNLGRP_IPV4_IFADDR)?;
        socket2::SockRef::from(&s).set_read_timeout(Some(WATCH_TICK))?;
        Ok::<_, std::io::Error>(s)
    })
    .map_err(&ctx)?
    .map_err(&ctx)?;
    std::thread::Builder::new()
        .name(format!("vip-{side:?}"))
        .spawn(move || {
            realtime_watcher();
            let mut buf = Vec::with_capacity(8192);
            while !stop.load(Ordering::Relaxed) {
                match director::netlink::recv_datagram(&sock, &mut buf, 0) {
                    Ok(()) => {}
                    // Timeout (EAGAIN), or ENOBUFS: an overrun cannot
                    // happen at these rates, and we would rather keep
                    // watching than stop.
                    Err(_) => continue,
                }
                let at = Instant::now();
                for m in director::netlink::MsgIter::new(&buf).filter_map(Result::ok) {
                    let added = match m.header.kind {
                        RTM_NEWADDR => true,
                        RTM_DELADDR => false,
                        _ => continue,
                    };
                    if names_vip(m.payload) {
                        let what = What::Vip { side, added };
                        if tx.send(Event { at, what }).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map_err(|e| format!("starting the VIP watcher: {e}"))
}

/// What an Ethernet frame on the client LAN is to us: a gratuitous ARP
/// for [`VIP`] (sender IP = target IP = VIP; request or reply), a VRRP
/// advertisement, or nothing.
fn classify(frame: &[u8]) -> Option<What> {
    let eth_src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        ETH_P_ARP => {
            let sender = gratuitous_for_vip(frame)?;
            Some(What::Garp { eth_src, sender })
        }
        // IPv4 header byte 9: protocol.
        ETH_P_IP if frame.get(14 + 9) == Some(&IPPROTO_VRRP) => Some(What::Advert { eth_src }),
        _ => None,
    }
}

/// The ARP sender hardware address of a gratuitous ARP for [`VIP`].
fn gratuitous_for_vip(frame: &[u8]) -> Option<[u8; 6]> {
    // RFC 826 over Ethernet: dst(6) src(6) type(2) | htype(2) ptype(2)
    // hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4).
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let arp = frame.get(14..42)?;
    let sender_ip = &arp[14..18];
    let target_ip = &arp[24..28];
    if ethertype != ETH_P_ARP
        || arp[0..2] != [0, 1]
        || arp[2..4] != [0x08, 0x00]
        || arp[4] != 6
        || arp[5] != 4
        || sender_ip != VIP.octets()
        || target_ip != VIP.octets()
    {
        return None;
    }
    arp[8..14].try_into().ok()
}

/// Gratuitous ARPs for the VIP and VRRP adverts seen in namespace `ns`
/// (the client's).
fn watch_wire(
    ns: &Netns,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let name = ns.name();
    let ctx = io_context("AF_PACKET socket", name);
    let sock = director::netlink::in_netns(name, || {
        // packet(7): the protocol in network byte order; ETH_P_ALL: ARP
        // and IPv4 alike (the client's LAN is quiet otherwise).
        let proto = Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let s = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
        s.set_read_timeout(Some(WATCH_TICK))?;
        // socket(7) SO_TIMESTAMPNS: the kernel stamps each frame as it
        // arrives, so a late wake-up of this thread (the box is busy,
        // on purpose in `stability`) does not move the stamp.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)?;
        Ok::<_, std::io::Error>(s)
    })
    .map_err(&ctx)?
    .map_err(&ctx)?;
    std::thread::Builder::new()
        .name("wire".into())
        .spawn(move || {
            realtime_watcher();
            let mut frame = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Some((n, at)) = recv_stamped(&sock, &mut frame) else {
                    continue;
                };
                if let Some(what) = classify(&frame[..n]) {
                    if tx.send(Event { at, what }).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("starting the wire watcher: {e}"))
}

/// One frame and when it arrived: the kernel's SO_TIMESTAMPNS stamp
/// (CLOCK_REALTIME) turned into an `Instant` by subtracting how long ago
/// it was, read from both clocks at once (no mapping between the clocks,
/// only a difference of a few ms, during which a clock step is unlikely).
/// Without a stamp, the time of the read. `None`: nothing within
/// [`WATCH_TICK`], or an error.
fn recv_stamped(sock: &socket2::Socket, buf: &mut [u8]) -> Option<(usize, Instant)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .ok()?;
    let (now, wall) = (Instant::now(), std::time::SystemTime::now());
    let stamp = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => Some(
            std::time::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(ts.tv_sec()).ok()?,
                    u32::try_from(ts.tv_nsec()).ok()?,
                ),
        ),
        _ => None,
    });
    let ago = stamp
        .and_then(|s| wall.duration_since(s).ok())
        .unwrap_or_default();
    Some((msg.bytes, now.checked_sub(ago).unwrap_or(now)))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("MAC {s:?}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("MAC {s:?}: not 6 bytes"))
}

// ---------------------------------------------------------------------
// One box of a pair.

enum Node {
    Director(Daemon),
    Keepalived(Keepalived),
}

impl Node {
    fn start(kind: Kind, ns: &Netns, router_id: &str, priority: u8) -> Node {
        match kind {
            Kind::Director => Node::Director(Daemon::start_in(
                ns,
                router_id,
                DIRECTOR_GLOBAL,
                &director_instance(priority),
            )),
            Kind::Keepalived => Node::Keepalived(Keepalived::start_in(
                ns,
                &keepalived_conf(router_id, priority),
            )),
        }
    }

    /// SIGKILL, as directly as the harness allows (see the module docs).
    fn kill9(&mut self) {
        match self {
            Node::Director(d) => d.kill9(),
            Node::Keepalived(k) => {
                for file in ["vrrp.pid", "keepalived.pid"] {
                    // The harness removes pid files before each start, so
                    // these are this instance's; still, never signal a
                    // pid that is not a keepalived (now).
                    let pid = std::fs::read_to_string(k.dir().join(file))
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                        .filter(|p| {
                            std::fs::read_to_string(format!("/proc/{p}/comm"))
                                .is_ok_and(|c| c.trim() == "keepalived")
                        })
                        .and_then(rustix::process::Pid::from_raw);
                    if let Some(pid) = pid {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                // Reaps the parent; its own kill of the VRRP child is now
                // a no-op.
                k.kill9();
            }
        }
    }

    fn respawn(&mut self) {
        match self {
            Node::Director(d) => d.spawn(),
            Node::Keepalived(k) => k.spawn(),
        }
    }

    fn log(&self) -> String {
        match self {
            Node::Director(d) => d.log_text(),
            Node::Keepalived(k) => k.log(),
        }
    }

    /// The state the daemon itself reports: director's `directorctl vrrp
    /// --json`, keepalived's last `Entering ... STATE` log line.
    fn state(&self) -> Option<String> {
        match self {
            Node::Director(d) => {
                let out = d.ctl(&["vrrp", "--json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                v["instances"][0]["status"]["state"]
                    .as_str()
                    .map(str::to_owned)
            }
            Node::Keepalived(k) => {
                let log = k.log();
                log.lines().rev().find_map(|l| {
                    let rest = &l[l.find("Entering ")? + "Entering ".len()..];
                    let word = rest.split_whitespace().next()?;
                    rest.contains("STATE").then(|| word.to_lowercase())
                })
            }
        }
    }

    /// State changes the daemon logged so far.
    fn logged_transitions(&self) -> usize {
        let log = self.log();
        match self {
            Node::Director(_) => log.matches("vrrp_state_change").count(),
            Node::Keepalived(_) => log
                .lines()
                .filter(|l| l.contains("Entering ") && l.contains(" STATE"))
                .count(),
        }
    }

    /// director only: `directorctl vrrp --json`.
    fn snapshot(&self) -> Option<serde_json::Value> {
        match self {
            Node::Director(d) => serde_json::from_slice(&d.ctl(&["vrrp", "--json"]).stdout).ok(),
            Node::Keepalived(_) => None,
        }
    }
}

fn log_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The processes in `ns`: pid, name and state (from /proc/PID/stat).
fn processes(ns: &Netns) -> String {
    let list: Vec<String> = ns
        .pids()
        .into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "PID (comm) S ...": the state follows the last ')'.
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map_or("?", |(c, _)| c);
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("?");
            format!("{pid} {comm} {state}")
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn has_vip(ns: &Netns) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .contains(&format!("inet {VIP}/32"))
}

// ---------------------------------------------------------------------
// A pair in its own topology.

struct Pair {
    kind: Kind,
    master: Node,
    backup: Node,
    backup_mac: [u8; 6],
    master_mac: [u8; 6],
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    watchers: Vec<JoinHandle<()>>,
    /// When the backup last (may have) become master: its delayed second
    /// GARP burst follows `GARP_MASTER_DELAY` later.
    backup_was_master_at: Instant,
    /// Dropped last: deleting the namespaces kills whatever is left.
    topo: LbTopology,
}

impl Pair {
    fn new(kind: Kind) -> Result<Pair, String> {
        let topo = LbTopology::builder().directors(2).real_servers(1).build();
        let (tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        // Watchers first: they must already listen when anything happens.
        let mut watchers = Vec::new();
        let mut started = || -> Result<(), String> {
            watchers.push(watch_vip(
                topo.director(0),
                Side::Master,
                tx.clone(),
                stop.clone(),
            )?);
            watchers.push(watch_vip(
                topo.director(1),
                Side::Backup,
                tx.clone(),
                stop.clone(),
            )?);
            watchers.push(watch_wire(topo.client(), tx.clone(), stop.clone())?);
            Ok(())
        };
        if let Err(e) = started() {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        let master_mac = parse_mac(&topo.director(0).mac("eth0"))?;
        let backup_mac = parse_mac(&topo.director(1).mac("eth0"))?;
        let master = Node::start(kind, topo.director(0), "lb-a", MASTER_PRIORITY);
        let backup = Node::start(kind, topo.director(1), "lb-b", BACKUP_PRIORITY);
        Ok(Pair {
            kind,
            master,
            backup,
            backup_mac,
            master_mac,
            events,
            stop,
            watchers,
            backup_was_master_at: Instant::now(),
            topo,
        })
    }

    fn logs(&self) -> String {
        format!(
            "master ({}; processes: {}) log, last lines:\n{}\nbackup ({}; processes: {}) log, \
             last lines:\n{}",
            self.topo.director(0).name(),
            processes(self.topo.director(0)),
            log_tail(&self.master.log(), 15),
            self.topo.director(1).name(),
            processes(self.topo.director(1)),
            log_tail(&self.backup.log(), 15)
        )
    }

    /// Waits until, for [`SETTLED_FOR`], the master holds the VIP and the
    /// backup does not, and on the wire only the master sends adverts (at
    /// least half the nominal rate); and until the backup's delayed GARP
    /// burst (if it was master lately) is over. The same criterion for
    /// both implementations, from outside: the kernel's addresses and the
    /// wire, not what a daemon says about itself.
    fn settle(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let cooldown = self.backup_was_master_at + GARP_MASTER_DELAY + Duration::from_secs(1);
        let mut since: Option<Instant> = None;
        let mut master_adverts: Vec<Instant> = Vec::new();
        let mut backup_advert: Option<Instant> = None;
        loop {
            while let Ok(ev) = self.events.try_recv() {
                if let What::Advert { eth_src } = ev.what {
                    if eth_src == self.master_mac {
                        master_adverts.push(ev.at);
                    } else if eth_src == self.backup_mac {
                        backup_advert = Some(ev.at);
                    }
                }
            }
            let now = Instant::now();
            let (vip_master, vip_backup) = (
                has_vip(self.topo.director(0)),
                has_vip(self.topo.director(1)),
            );
            since = if vip_master && !vip_backup {
                since.or(Some(now))
            } else {
                None
            };
            let window = now.checked_sub(SETTLED_FOR).unwrap_or(start);
            master_adverts.retain(|a| *a >= window);
            let needed = (SETTLED_FOR.as_millis() / u128::from(ADVERT_MS) / 2) as usize;
            let wire_ok =
                master_adverts.len() >= needed && backup_advert.is_none_or(|b| b < window);
            if since.is_some_and(|s| now - s >= SETTLED_FOR) && wire_ok && now >= cooldown {
                return Ok(());
            }
            if start.elapsed() > SETTLE_LIMIT {
                return Err(format!(
                    "{}: the pair did not settle within {SETTLE_LIMIT:?}: VIP on master {vip_master}, \
                     on backup {vip_backup}; adverts in the last {SETTLED_FOR:?}: {} from the \
                     master, last from the backup {}; the daemons say {:?} / {:?}\n{}",
                    self.kind.name(),
                    master_adverts.len(),
                    backup_advert.map_or("never".to_string(), |b| format!(
                        "{} ago",
                        ms(now - b)
                    )),
                    self.master.state(),
                    self.backup.state(),
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Discards the events so far; returns when the master's last advert
    /// among them was seen.
    fn drain(&self) -> Option<Instant> {
        let mut last_advert = None;
        while let Ok(ev) = self.events.try_recv() {
            if matches!(ev.what, What::Advert { eth_src } if eth_src == self.master_mac) {
                last_advert = Some(ev.at);
            }
        }
        last_advert
    }

    /// Waits for the master's next advert on the wire; when it was sent.
    fn next_master_advert(&self) -> Result<Instant, String> {
        let limit = Instant::now() + Duration::from_secs(2);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event {
                    at,
                    what: What::Advert { eth_src },
                }) if eth_src == self.master_mac => return Ok(at),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{}: no advert from the master on the wire within 2 s\n{}",
                        self.kind.name(),
                        self.logs()
                    ))
                }
            }
        }
    }

    /// One kill -9 of the master, `phase` after one of its adverts went
    /// out; restarts it afterwards.
    fn takeover_once(&mut self, phase: Duration) -> Result<Sample, String> {
        self.settle()?;
        let _ = self.drain();
        let advert = self.next_master_advert()?;
        if let Some(left) = (advert + phase).checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        let mut last_advert = self.drain().max(Some(advert));
        let t0 = Instant::now();
        self.master.kill9();
        let deadline = t0 + TAKEOVER_LIMIT;
        let (mut vip, mut garps) = (None::<Instant>, Vec::<Instant>::new());
        let mut foreign_garps = 0usize;
        loop {
            let now = Instant::now();
            // After the first GARP, keep listening briefly to count the
            // burst it starts.
            let done = vip.is_some()
                && garps
                    .first()
                    .is_some_and(|g| now > *g + Duration::from_millis(300));
            if done || now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            let ev = match self.events.recv_timeout(wait) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the watcher threads died".into())
                }
            };
            if let What::Advert { eth_src } = ev.what {
                // Queued before the kill, or sent in the microseconds
                // between t0 and the signal.
                if eth_src == self.master_mac {
                    last_advert = last_advert.max(Some(ev.at));
                }
            }
            if ev.at < t0 {
                continue;
            }
            match ev.what {
                What::Vip {
                    side: Side::Backup,
                    added: true,
                } => {
                    vip.get_or_insert(ev.at);
                }
                What::Garp { eth_src, sender } => {
                    if eth_src == self.backup_mac && sender == self.backup_mac {
                        garps.push(ev.at);
                    } else {
                        foreign_garps += 1;
                    }
                }
                What::Vip { .. } | What::Advert { .. } => {}
            }
        }
        self.backup_was_master_at = Instant::now();
        let sample = match (vip, garps.first()) {
            (Some(v), Some(g)) => Ok(Sample {
                vip: v - t0,
                garp: *g - t0,
                burst: garps.len(),
                burst_span: garps.last().map(|l| *l - *g).unwrap_or_default(),
                foreign_garps,
                since_advert: last_advert.map(|a| v.max(*g).saturating_duration_since(a)),
                phase: last_advert.map(|a| t0.saturating_duration_since(a)),
            }),
            _ => Err(format!(
                "{}: no takeover within {TAKEOVER_LIMIT:?} (VIP on backup: {}, GARPs from the \
                 backup's MAC: {}, other GARPs for the VIP: {foreign_garps})\n{}",
                self.kind.name(),
                vip.map_or("no".to_string(), |v| format!("after {}", ms(v - t0))),
                garps.len(),
                self.logs()
            )),
        };
        self.master.respawn();
        sample
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.watchers.drain(..) {
            let _ = w.join();
        }
        // Then the fields: the daemons (stopped), the topology (deleted).
    }
}

// ---------------------------------------------------------------------
// takeover

struct Sample {
    vip: Duration,
    garp: Duration,
    burst: usize,
    burst_span: Duration,
    foreign_garps: usize,
    /// Takeover measured from the master's last advert on the wire: the
    /// phase of the kill taken out, so Master_Down_Interval + the
    /// implementation's own delay.
    since_advert: Option<Duration>,
    /// The kill's actual phase: t0 - the master's last advert.
    phase: Option<Duration>,
}

impl Sample {
    fn takeover(&self) -> Duration {
        self.vip.max(self.garp)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Nearest-rank percentile (`q` in 0..=1) of a sorted, non-empty slice.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Stats {
    n: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn stats(values: impl Iterator<Item = Duration>) -> Option<Stats> {
    let mut v: Vec<f64> = values.map(|d| d.as_secs_f64() * 1e3).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Stats {
        n: v.len(),
        min: v[0],
        p50: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
        p99: percentile(&v, 0.99),
        max: v[v.len() - 1],
    })
}

fn stats_row(label: &str, s: Option<&Stats>) -> String {
    match s {
        Some(s) => format!(
            "{label:<28} {:>4} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s.n, s.min, s.p50, s.p90, s.max
        ),
        None => format!(
            "{label:<28} {:>4} {:>8} {:>8} {:>8} {:>8}",
            0, "-", "-", "-", "-"
        ),
    }
}

fn takeover(runs: usize, kinds: &[Kind]) -> Result<(), String> {
    println!(
        "vrrp-bench takeover: {runs} runs per implementation, interleaved, kill -9 of the master"
    );
    describe(kinds);
    let mdi = master_down_ms();
    println!(
        "  Master_Down_Interval = 3 x {ADVERT_MS} ms + (256-{BACKUP_PRIORITY})/256 x {ADVERT_MS} ms \
         = {mdi:.1} ms; run i of {runs} kills the master (i - 0.5)/{runs} x {ADVERT_MS} ms \
         after one of its adverts (the same phases for both), so expect {:.0}..{mdi:.0} ms \
         plus the time to add the VIP and send",
        mdi - ADVERT_MS as f64
    );
    println!(
        "  measured: t0 just before kill(2); VIP = RTM_NEWADDR on the backup (rtnetlink \
         subscription); GARP = first gratuitous ARP for the VIP from the backup's MAC on the \
         client LAN (AF_PACKET, kernel timestamps); takeover = max(VIP, GARP) - t0"
    );
    let mut pairs = Vec::new();
    for k in kinds {
        pairs.push(Pair::new(*k)?);
    }
    warn_not_realtime();
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    let mut failures: Vec<Vec<String>> = kinds.iter().map(|_| Vec::new()).collect();
    // director's takeover minus keepalived's, per run (same phase).
    let mut paired = Vec::new();
    for run in 1..=runs {
        let mut this_run = [None, None];
        let phase = kill_phase(run, runs);
        for (i, pair) in pairs.iter_mut().enumerate() {
            let name = pair.kind.name();
            match pair.takeover_once(phase) {
                Ok(s) => {
                    println!(
                        "run {run:>2}/{runs} {name:<10} takeover {:>8} (VIP {:>8}, GARP {:>8}, \
                         GARP-VIP {:+.1} ms, {} GARPs within {}; killed {} after an advert, \
                         takeover {} after it{})",
                        ms(s.takeover()),
                        ms(s.vip),
                        ms(s.garp),
                        (s.garp.as_secs_f64() - s.vip.as_secs_f64()) * 1e3,
                        s.burst,
                        ms(s.burst_span),
                        s.phase.map_or("-".to_string(), ms),
                        s.since_advert.map_or("-".to_string(), ms),
                        if s.foreign_garps > 0 {
                            format!(", {} GARPs for the VIP from other MACs", s.foreign_garps)
                        } else {
                            String::new()
                        }
                    );
                    this_run[usize::from(pair.kind == Kind::Keepalived)] = Some(s.takeover());
                    samples[i].push(s);
                }
                Err(e) => {
                    println!("run {run:>2}/{runs} {name:<10} FAILED: {e}");
                    failures[i].push(e);
                }
            }
        }
        if let [Some(d), Some(k)] = this_run {
            paired.push((d.as_secs_f64() - k.as_secs_f64()) * 1e3);
        }
    }

    println!();
    println!("summary: takeover after kill -9, ms (nearest-rank percentiles)");
    println!(
        "{:<28} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "", "runs", "min", "p50", "p90", "max"
    );
    let mut p50 = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let s = stats(samples[i].iter().map(Sample::takeover));
        println!("{}", stats_row(k.name(), s.as_ref()));
        p50.push(s.map(|s| s.p50));
    }
    for (i, k) in kinds.iter().enumerate() {
        let vip = stats(samples[i].iter().map(|s| s.vip));
        let garp = stats(samples[i].iter().map(|s| s.garp));
        println!(
            "{}",
            stats_row(&format!("  {} VIP on backup", k.name()), vip.as_ref())
        );
        println!(
            "{}",
            stats_row(&format!("  {} first GARP", k.name()), garp.as_ref())
        );
        let since = stats(samples[i].iter().filter_map(|s| s.since_advert));
        println!(
            "{}",
            stats_row(&format!("  {} from last advert", k.name()), since.as_ref())
        );
        let bursts: Vec<usize> = samples[i].iter().map(|s| s.burst).collect();
        if let (Some(lo), Some(hi)) = (bursts.iter().min(), bursts.iter().max()) {
            println!(
                "  {} GARPs in the first 300 ms after the first: {lo}..{hi}",
                k.name()
            );
        }
        // Both add the VIP before they announce it, so a VIP stamp after
        // the (kernel-stamped) GARP is the VIP watcher waking up late.
        let late: Vec<f64> = samples[i]
            .iter()
            // A wake-up takes microseconds; count what is not that.
            .filter(|s| s.vip > s.garp + Duration::from_millis(1))
            .map(|s| (s.vip - s.garp).as_secs_f64() * 1e3)
            .collect();
        if let Some(worst) = late.iter().copied().reduce(f64::max) {
            println!(
                "  {} VIP event stamped after the GARP in {} of {} runs (by up to {worst:.1} ms): \
                 both add the VIP before announcing it, so that is the VIP watcher waking up late \
                 (netlink has no kernel timestamps)",
                k.name(),
                late.len(),
                samples[i].len()
            );
        }
    }
    for (i, k) in kinds.iter().enumerate() {
        if !failures[i].is_empty() {
            println!("{}: {} of {runs} runs FAILED", k.name(), failures[i].len());
        }
    }
    println!(
        "Master_Down_Interval (RFC 5798 6.1): {mdi:.1} ms exactly; {:.0} ms in the RFC's integer \
         centiseconds (Skew_Time {} cs), which director computes in; keepalived computes in \
         microseconds ({mdi:.1} ms). \"from last advert\" = takeover measured from the master's \
         last advert seen on the wire (the kill's phase taken out): Master_Down_Interval + the \
         implementation's own delay",
        master_down_centis() * 10,
        master_down_centis() - 3 * ADVERT_MS / 10
    );
    if let Some(Some(d)) = kinds
        .iter()
        .position(|k| *k == Kind::Director)
        .map(|i| p50[i])
    {
        println!(
            "director p50 {d:.1} ms (goal <= 400 ms: {})",
            if d <= 400.0 { "met" } else { "NOT met" }
        );
        if let Some(Some(k)) = kinds
            .iter()
            .position(|k| *k == Kind::Keepalived)
            .map(|i| p50[i])
        {
            let ratio = d / k;
            println!(
                "p50 ratio director / keepalived: {ratio:.3} (goal <= 1: {})",
                if ratio <= 1.0 { "met" } else { "NOT met" }
            );
            if !paired.is_empty() {
                let faster = paired.iter().filter(|d| **d < 0.0).count();
                paired.sort_by(f64::total_cmp);
                println!(
                    "paired by phase, director - keepalived per run: p50 {:+.1} ms, min {:+.1} ms, \
                     max {:+.1} ms; director faster in {faster} of {} runs",
                    percentile(&paired, 0.5),
                    paired[0],
                    paired[paired.len() - 1],
                    paired.len()
                );
            }
        }
    }
    let failed: usize = failures.iter().map(Vec::len).sum();
    drop(pairs);
    if failed > 0 {
        return Err(format!("{failed} run(s) failed, see above"));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// stability

/// `vrrp-bench spin`: burns one CPU until killed, or until its parent
/// (the benchmark) is gone, so no spinner outlives a killed benchmark.
fn spin() -> Result<(), String> {
    let parent = std::os::unix::process::parent_id();
    let mut x = 0u64;
    loop {
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
    }
}

/// Busy-loop processes, killed on drop.
struct Spinners(Vec<Child>);

impl Spinners {
    fn start(n: usize) -> Result<Spinners, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
        let mut s = Spinners(Vec::new());
        for _ in 0..n {
            let c = Command::new(&exe)
                .arg("spin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting a busy loop ({}): {e}", exe.display()))?;
            s.0.push(c);
        }
        Ok(s)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (busy, total) jiffies of all CPUs, from the first line of /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn lateness_buckets(snap: &serde_json::Value) -> Vec<u64> {
    snap["lateness"]["buckets"]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

fn master_counters(snap: &serde_json::Value) -> u64 {
    let s = &snap["instances"][0]["status"]["stats"];
    s["became_master"].as_u64().unwrap_or(0) + s["released_master"].as_u64().unwrap_or(0)
}

/// Upper bounds of director's lateness buckets (vrrp::driver::LATENESS_BUCKETS_MS).
const LATENESS_BOUNDS: [&str; 10] = [
    "<=1", "<=2", "<=5", "<=10", "<=20", "<=50", "<=100", "<=200", "<=500", ">500",
];

struct Baseline {
    logged: [usize; 2],
    counters: [u64; 2],
    buckets: [Vec<u64>; 2],
}

fn stability(seconds: u64, kinds: &[Kind]) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners_n = 2 * cpus;
    println!(
        "vrrp-bench stability: {seconds} s with {spinners_n} busy-loop processes on {cpus} CPUs, \
         pairs side by side"
    );
    describe(kinds);
    let mut pairs = Vec::new();
    for k in kinds {
        pairs.push(Pair::new(*k)?);
    }
    for p in &mut pairs {
        p.settle()?;
    }
    warn_not_realtime();
    let baselines: Vec<Baseline> = pairs
        .iter()
        .map(|p| {
            let snaps = [p.master.snapshot(), p.backup.snapshot()];
            Baseline {
                logged: [p.master.logged_transitions(), p.backup.logged_transitions()],
                counters: [
                    snaps[0].as_ref().map_or(0, master_counters),
                    snaps[1].as_ref().map_or(0, master_counters),
                ],
                buckets: [
                    snaps[0].as_ref().map(lateness_buckets).unwrap_or_default(),
                    snaps[1].as_ref().map(lateness_buckets).unwrap_or_default(),
                ],
            }
        })
        .collect();
    for p in &pairs {
        p.drain();
    }
    let cpu0 = cpu_jiffies();
    let t0 = Instant::now();
    let spinners = Spinners::start(spinners_n)?;
    let end = t0 + Duration::from_secs(seconds);
    while Instant::now() < end {
        let left = end - Instant::now();
        std::thread::sleep(left.min(Duration::from_secs(10)));
        let now = Instant::now();
        if now < end {
            println!(
                "  {:>3.0} s of {seconds} s under load",
                (now - t0).as_secs_f64()
            );
        }
    }
    let cpu1 = cpu_jiffies();
    drop(spinners);
    let t1 = Instant::now();
    if let (Some((b0, a0)), Some((b1, a1))) = (cpu0, cpu1) {
        let busy = (b1 - b0) as f64 * 100.0 / (a1 - a0).max(1) as f64;
        println!("  CPU busy during the window (all CPUs, /proc/stat): {busy:.1}%");
    }

    println!();
    println!(
        "{:<11}  {:<18} {:<22} {:<19} {:<16} verdict",
        "", "state changes", "VIP adds/removes seen", "GARPs master/other", "master has VIP",
    );
    let mut spurious_total = 0usize;
    let mut director_report = Vec::new();
    let mut wire_report = Vec::new();
    for (p, base) in pairs.iter().zip(&baselines) {
        let mut vip_moves = 0usize;
        // From the master's MAC / from anyone else (the backup claiming
        // the VIP).
        let (mut garps_master, mut garps_other) = (0usize, 0usize);
        let (mut adverts_master, mut adverts_other) = (Vec::new(), 0usize);
        while let Ok(ev) = p.events.try_recv() {
            if ev.at < t0 || ev.at > t1 {
                continue;
            }
            match ev.what {
                What::Vip { .. } => vip_moves += 1,
                What::Garp { eth_src, sender }
                    if eth_src == p.master_mac && sender == p.master_mac =>
                {
                    garps_master += 1
                }
                What::Garp { .. } => garps_other += 1,
                What::Advert { eth_src } if eth_src == p.master_mac => adverts_master.push(ev.at),
                What::Advert { .. } => adverts_other += 1,
            }
        }
        let gaps = stats(adverts_master.windows(2).map(|w| w[1] - w[0]));
        wire_report.push(format!(
            "  {:<10} master adverts {:>4} (expected ~{}), interval between them ms: {}; adverts \
             from the backup: {adverts_other}",
            p.kind.name(),
            adverts_master.len(),
            (t1 - t0).as_millis() / u128::from(ADVERT_MS),
            gaps.map_or("-".to_string(), |g| format!(
                "min {:.1}, p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
                g.min, g.p50, g.p90, g.p99, g.max
            ))
        ));
        let logged = p.master.logged_transitions() + p.backup.logged_transitions()
            - base.logged[0]
            - base.logged[1];
        let snaps = [p.master.snapshot(), p.backup.snapshot()];
        let counters: u64 = snaps
            .iter()
            .zip(base.counters)
            .map(|(s, b)| s.as_ref().map_or(0, master_counters).saturating_sub(b))
            .sum();
        let holds = has_vip(p.topo.director(0)) && !has_vip(p.topo.director(1));
        let spurious = logged
            .max(counters as usize)
            .max(vip_moves)
            .max(garps_other)
            .max(adverts_other);
        spurious_total += spurious;
        let changes = match p.kind {
            Kind::Director => format!("{logged} (counters {counters})"),
            Kind::Keepalived => logged.to_string(),
        };
        println!(
            "{:<11}  {:<18} {:<22} {:<19} {:<16} {}",
            p.kind.name(),
            changes,
            vip_moves,
            format!("{garps_master} / {garps_other}"),
            if holds { "yes, backup not" } else { "NO" },
            if spurious == 0 && holds {
                "0 spurious"
            } else {
                "SPURIOUS"
            }
        );
        if p.kind == Kind::Director {
            for (role, (snap, before)) in ["master", "backup"]
                .iter()
                .zip(snaps.iter().zip(&base.buckets))
            {
                let Some(snap) = snap else { continue };
                let now = lateness_buckets(snap);
                let window: Vec<u64> = now
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
                    .collect();
                let fired: u64 = window.iter().sum();
                let hist: Vec<String> = window
                    .iter()
                    .zip(LATENESS_BOUNDS)
                    .filter(|(n, _)| **n > 0)
                    .map(|(n, b)| format!("{b} ms: {n}"))
                    .collect();
                let l = &snap["lateness"];
                director_report.push(format!(
                    "  director {role}: timers fired in the window {fired} ({}); since start: \
                     max {} ms, last {} ms, mean {:.2} ms",
                    if hist.is_empty() {
                        "none".to_string()
                    } else {
                        hist.join(", ")
                    },
                    l["max_ms"].as_u64().unwrap_or(0),
                    l["last_ms"].as_u64().unwrap_or(0),
                    l["sum_ms"].as_u64().unwrap_or(0) as f64
                        / l["fired"].as_u64().unwrap_or(0).max(1) as f64
                ));
            }
        }
    }
    println!(
        "on the wire (client LAN; the backup takes over after {:.1} ms without an advert):",
        master_down_ms()
    );
    for l in wire_report {
        println!("{l}");
    }
    if !director_report.is_empty() {
        println!("director timer lateness (how long after its deadline a VRRP timer ran):");
        for l in director_report {
            println!("{l}");
        }
    }
    drop(pairs);
    if spurious_total > 0 {
        return Err(format!(
            "{spurious_total} spurious transition(s) or VIP move(s) under load"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// An ARP announcement as director's `vrrp::net::arp_announcement`
    /// and keepalived build it: request, sender IP = target IP.
    fn garp(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(MAC);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend(MAC);
        f.extend(sender_ip.octets());
        f.extend([0; 6]);
        f.extend(target_ip.octets());
        f
    }

    #[test]
    fn classifies_gratuitous_arp_for_the_vip_only() {
        assert!(matches!(
            classify(&garp(VIP, VIP)),
            Some(What::Garp {
                eth_src: MAC,
                sender: MAC
            })
        ));
        // An ordinary request for the VIP is not an announcement.
        assert!(classify(&garp(Ipv4Addr::new(198, 51, 100, 2), VIP)).is_none());
        let other = Ipv4Addr::new(192, 0, 2, 101);
        assert!(classify(&garp(other, other)).is_none());
        assert!(classify(&garp(VIP, VIP)[..41]).is_none());
    }

    #[test]
    fn classifies_vrrp_adverts() {
        let mut f = vec![0x01, 0, 0x5e, 0, 0, 0x12];
        f.extend(MAC);
        f.extend([0x08, 0x00, 0x45, 0, 0, 32, 0, 0, 0, 0, 255, IPPROTO_VRRP]);
        assert!(matches!(classify(&f), Some(What::Advert { eth_src: MAC })));
        f[14 + 9] = 17;
        assert!(classify(&f).is_none());
    }

    #[test]
    fn address_messages_naming_the_vip() {
        // struct ifaddrmsg (AF_INET, /32, index 2) + IFA_LOCAL + IFA_ADDRESS.
        let mut p = vec![libc::AF_INET as u8, 32, 0, 0, 2, 0, 0, 0];
        for kind in [IFA_LOCAL, IFA_ADDRESS] {
            p.extend(8u16.to_ne_bytes());
            p.extend(kind.to_ne_bytes());
            p.extend(VIP.octets());
        }
        assert!(names_vip(&p));
        p[0] = libc::AF_INET6 as u8;
        assert!(!names_vip(&p));
        assert!(!names_vip(&[]));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.9), 18.0);
        assert_eq!(percentile(&v, 1.0), 20.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn arguments() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(matches!(
            parse_args(&args("takeover")),
            Ok(Mode::Takeover {
                runs: 20,
                only: None
            })
        ));
        assert!(matches!(
            parse_args(&args("takeover --runs 2 --only keepalived")),
            Ok(Mode::Takeover {
                runs: 2,
                only: Some(Kind::Keepalived)
            })
        ));
        assert!(matches!(
            parse_args(&args("stability --seconds 5 --only director")),
            Ok(Mode::Stability {
                seconds: 5,
                only: Some(Kind::Director)
            })
        ));
        for bad in [
            "",
            "takeover --runs 0",
            "takeover --seconds 5",
            "stability --only ipvs",
            "stability --seconds",
            "bench",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn master_down_interval_of_the_backup() {
        assert!((master_down_ms() - 360.9375).abs() < 1e-9);
        assert_eq!(master_down_centis(), 36);
    }
}
