//! VRRP in the daemon: the host side of [`vrrp::driver`].
//!
//! ```text
//!  thread "vrrp" (its own current-thread runtime: nothing else the daemon
//!  does, no nft dump and no conntrack walk, can delay a VRRP timer)
//!   ├─ Driver task            all instances (vrrp::driver)
//!   ├─ one reader per port    VrrpSocket::recv -> Command::Packet
//!   ├─ executor               HostEvent, strictly in order:
//!   │                           StateChange -> ctsync role (RoleLink)
//!   │                           AddVips    -> ctsync barrier (<= 50 ms), then
//!   │                                         rtnetlink RTM_NEWADDR (IPv6: nodad)
//!   │                           RemoveVips -> RTM_DELADDR
//!   │                           SendGratuitous -> ARP announcement / unsolicited NA
//!   │                           StateChange -> log, notify queue
//!   │                         then every event -> journal (followers)
//!   ├─ notify runner          argv commands one after the other (never a shell)
//!   └─ track scripts          argv commands every interval, rise/fall
//!  thread "vrrp-links"        RTNLGRP_LINK events -> InterfaceDown/Up, tracking
//! ```
//!
//! Ordering at takeover is the executor's order: the driver emits AddVips
//! before SendGratuitous, and the executor finishes the address change
//! before it announces it (RFC 5798 6.4.1 (master): "broadcast a
//! gratuitous ARP request containing the virtual router MAC address for
//! each IP address associated with the virtual router" — for addresses the
//! host answers for).
//!
//! With `[ctsync]`, every StateChange goes to the ctsync role link first,
//! and AddVips waits (at most `ctsync_host::BARRIER_TIMEOUT`) until the
//! connection state received from the peer is in the kernel: entries,
//! then VIPs, then gratuitous ARP (see `crate::ctsync_host`).
//!
//! Followers (`directorctl vrrp --follow`) read the [`follow::Journal`]:
//! each event once it was executed, in `seq` order, losses reported.

use crate::config::{Config, VrrpInstance};
use crate::ctsync_host::role::{BarrierOutcome, RoleLink};
use crate::ctsync_host::BARRIER_TIMEOUT;
use crate::rtnl;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};
use vrrp::driver::{AdvertSink, Command, Driver, GroupSpec, HostEvent, InstanceSpec, Snapshot};
use vrrp::machine::{self, Action, State};
use vrrp::net::{Announcer, Interface, VrrpSocket};

pub mod anomaly;
pub mod follow;
mod hooks;
pub mod track;

/// Why VRRP could not start.
#[derive(Debug, thiserror::Error)]
pub enum VrrpStartError {
    #[error("vrrp_instance {instance}: interface {interface}: {detail}")]
    Interface {
        instance: String,
        interface: String,
        detail: String,
    },
    #[error("vrrp_instance {instance}: {detail}")]
    Instance { instance: String, detail: String },
    #[error("vrrp: {0}")]
    Runtime(String),
}

/// A running VRRP side, as the daemon holds it.
pub struct VrrpHandle {
    commands: mpsc::Sender<Command>,
    journal: follow::Journal,
    /// Wall-clock time of the driver's epoch ([`vrrp::Time::ZERO`]).
    epoch: SystemTime,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The port key: one raw socket per interface, source address and mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    interface: String,
    src: IpAddr,
    multicast: bool,
}

struct Prepared {
    specs: Vec<InstanceSpec>,
    groups: Vec<GroupSpec>,
    ports: Vec<(PortKey, Interface)>,
    /// instance -> (interface index, VIP -> prefix length)
    vips: BTreeMap<String, (u32, BTreeMap<IpAddr, u8>)>,
}

/// The machine config of one instance on `iface`.
fn machine_config(inst: &VrrpInstance, iface: &Interface) -> Result<machine::Config, String> {
    let vips: Vec<IpAddr> = inst.virtual_ipaddresses.iter().map(|(a, _)| *a).collect();
    let v6 = vips.first().is_some_and(IpAddr::is_ipv6);
    let primary = match (inst.unicast_src_ip, v6) {
        (Some(src), _) => src,
        (None, false) => iface
            .ipv4
            .first()
            .copied()
            .map(IpAddr::V4)
            .ok_or("has no IPv4 address to send adverts from (RFC 5798 5.1.1.1)")?,
        (None, true) => iface
            .ipv6_link_local
            .map(IpAddr::V6)
            .ok_or("has no IPv6 link-local address to send adverts from (RFC 5798 5.1.2.1)")?,
    };
    let mut c = machine::Config::new(inst.vrid, primary, vips);
    c.version = inst.version;
    c.priority = inst.priority;
    c.advert_interval = inst.advert_interval;
    c.preempt = inst.preempt;
    c.preempt_delay = inst.preempt_delay;
    c.accept_mode = inst.accept;
    c.unicast_peers = inst.unicast_peers.clone();
    c.garp = inst.garp.clone();
    if let Some(crate::config::VrrpAuth::Pass { auth_pass }) = &inst.authentication {
        c.auth = machine::V2Auth::SimpleText(auth_pass.expose().to_string());
    }
    c.shutdown = if inst.shutdown_priority_zero {
        machine::ShutdownMode::Release
    } else {
        machine::ShutdownMode::Retain
    };
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn prepare(config: &Config) -> Result<Prepared, VrrpStartError> {
    let mut p = Prepared {
        specs: Vec::new(),
        groups: Vec::new(),
        ports: Vec::new(),
        vips: BTreeMap::new(),
    };
    for inst in &config.vrrp_instances {
        let iface =
            vrrp::net::interface(&inst.interface).map_err(|e| VrrpStartError::Interface {
                instance: inst.name.clone(),
                interface: inst.interface.clone(),
                detail: e.to_string(),
            })?;
        let mc = machine_config(inst, &iface).map_err(|detail| VrrpStartError::Interface {
            instance: inst.name.clone(),
            interface: inst.interface.clone(),
            detail,
        })?;
        let key = PortKey {
            interface: inst.interface.clone(),
            src: mc.primary_address,
            multicast: inst.unicast_peers.is_empty(),
        };
        let port = match p.ports.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                p.ports.push((key, iface.clone()));
                p.ports.len() - 1
            }
        };
        p.vips.insert(
            inst.name.clone(),
            (
                iface.index,
                inst.virtual_ipaddresses.iter().copied().collect(),
            ),
        );
        p.specs.push(InstanceSpec {
            name: inst.name.clone(),
            interface: inst.interface.clone(),
            port,
            config: mc,
        });
    }
    for g in &config.sync_groups {
        p.groups.push(GroupSpec {
            name: g.name.clone(),
            members: g.instances.clone(),
        });
    }
    Ok(p)
}

/// A port's socket as the driver's sink. Sends are non-blocking: a full
/// socket buffer drops the advert (counted by the driver), it never
/// stalls the timers.
struct SocketSink(Arc<VrrpSocket>);

impl AdvertSink for SocketSink {
    fn send(&self, payload: &[u8], dst: IpAddr) -> std::io::Result<()> {
        self.0.try_send(payload, dst)
    }
}

impl VrrpHandle {
    /// Starts VRRP for `config` (`None` when it has no instance). Fails
    /// before anything is sent or configured if an interface, address or
    /// socket is missing.
    /// `ctsync`: told every state change, and asked before each takeover
    /// to let received connection state reach the kernel first (see
    /// `crate::ctsync_host` for the order).
    pub fn start(
        config: &Config,
        ctsync: Arc<RoleLink>,
    ) -> Result<Option<VrrpHandle>, VrrpStartError> {
        if config.vrrp_instances.is_empty() {
            return Ok(None);
        }
        let prepared = prepare(config)?;
        let hooks = hooks::Hooks::new(config);
        let tracker = track::Tracker::new(config);
        let tracked = tracker.scripts();
        let scripts: Vec<crate::config::VrrpScript> = config
            .vrrp_scripts
            .iter()
            .filter(|s| tracked.contains(&s.name))
            .cloned()
            .collect();
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(4096);
        let journal = follow::Journal::new(follow::JOURNAL_EVENTS);
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<SystemTime, String>>();
        let journal_for_thread = journal.clone();
        let cmd_for_readers = cmd_tx.clone();
        let thread = std::thread::Builder::new()
            .name("vrrp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(run_thread(
                    prepared,
                    ctsync,
                    hooks,
                    tracker,
                    scripts,
                    cmd_rx,
                    cmd_for_readers,
                    journal_for_thread,
                    started_tx,
                ));
            })
            .map_err(|e| VrrpStartError::Runtime(e.to_string()))?;
        let epoch = match started_rx.recv() {
            Ok(Ok(epoch)) => epoch,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(VrrpStartError::Runtime(e));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(VrrpStartError::Runtime("the vrrp thread died".into()));
            }
        };
        Ok(Some(VrrpHandle {
            commands: cmd_tx,
            journal,
            epoch,
            thread: std::sync::Mutex::new(Some(thread)),
        }))
    }

    /// Every instance, now.
    pub async fn status(&self) -> Result<Snapshot, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status(tx))
            .await
            .map_err(|_| "vrrp is not running".to_string())?;
        rx.await.map_err(|_| "vrrp is not running".to_string())
    }

    /// The raw event stream from now on: executed events, in order; a
    /// receiver that falls behind gets `Lagged`. `directorctl vrrp
    /// --follow` uses [`VrrpHandle::follow`] instead, which reports losses.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.journal.live()
    }

    /// A follower's subscription (see [`follow`]): call
    /// [`follow::Subscription::start_after`] once the starting snapshot
    /// is taken.
    pub fn follow(&self) -> follow::Subscription {
        self.journal.subscribe()
    }

    /// Followers connected now.
    pub fn followers(&self) -> usize {
        self.journal.followers()
    }

    /// Wall-clock time of a driver [`vrrp::Time`]: the driver's clock is
    /// monotonic milliseconds since its start, mapped through the wall
    /// clock read at that start (a later clock step does not move it).
    pub fn wall_clock(&self, t: vrrp::Time) -> SystemTime {
        // Checked: a `Time` that far out is a bug, not a reason to panic.
        self.epoch
            .checked_add(Duration::from_millis(t.as_millis()))
            .unwrap_or(self.epoch)
    }

    /// When the driver started: every counter of the snapshot counts from
    /// then (RFC 6527 vrrpv3StatisticsRowDiscontinuityTime).
    pub fn started_at(&self) -> SystemTime {
        self.epoch
    }

    /// Releases: priority-0 adverts (RFC 5798 6.4.3 "Shutdown"), VIPs
    /// removed, notify_stop; returns when that is done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // The executor has published the releases: followers get them,
        // then the end of their stream.
        self.journal.close();
    }
}

/// Notify argv per instance: `notify_master` & co and the generic
/// `notify` (keepalived's: INSTANCE|GROUP name state priority appended).
#[derive(Debug, Clone, Default)]
struct NotifyArgs {
    master: Option<Vec<String>>,
    backup: Option<Vec<String>>,
    fault: Option<Vec<String>>,
    stop: Option<Vec<String>>,
    generic: Option<Vec<String>>,
    priority: u8,
    /// A sync group's hooks: the generic `notify` gets "GROUP".
    group: bool,
}

fn notify_table(config: &Config) -> BTreeMap<String, NotifyArgs> {
    config
        .vrrp_instances
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                NotifyArgs {
                    master: i.notify.master.clone(),
                    backup: i.notify.backup.clone(),
                    fault: i.notify.fault.clone(),
                    stop: i.notify.stop.clone(),
                    generic: i.notify.generic.clone(),
                    priority: i.priority,
                    group: false,
                },
            )
        })
        .collect()
}

/// The commands one state change runs, in order.
fn notify_commands(
    args: &NotifyArgs,
    instance: &str,
    new: State,
    stopping: bool,
) -> Vec<Vec<String>> {
    let (specific, word) = match (new, stopping) {
        (_, true) => (&args.stop, "STOP"),
        (State::Master, _) => (&args.master, "MASTER"),
        (State::Backup, _) => (&args.backup, "BACKUP"),
        (State::Fault, _) => (&args.fault, "FAULT"),
        (State::Initialize, _) => (&None, "INIT"),
    };
    let mut out = Vec::new();
    if let Some(argv) = specific {
        out.push(argv.clone());
    }
    if let Some(argv) = &args.generic {
        let mut a = argv.clone();
        a.extend([
            if args.group { "GROUP" } else { "INSTANCE" }.to_string(),
            instance.to_string(),
            word.to_string(),
            args.priority.to_string(),
        ]);
        out.push(a);
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_thread(
    prepared: Prepared,
    ctsync: Arc<RoleLink>,
    hooks: hooks::Hooks,
    tracker: track::Tracker,
    scripts: Vec<crate::config::VrrpScript>,
    commands: mpsc::Receiver<Command>,
    cmd_tx: mpsc::Sender<Command>,
    journal: follow::Journal,
    started: std::sync::mpsc::Sender<Result<SystemTime, String>>,
) {
    // Everything that can fail for want of a socket or privilege fails
    // here, before the driver starts.
    let mut sockets = Vec::new();
    let mut announcers: BTreeMap<String, Announcer> = BTreeMap::new();
    for (key, iface) in &prepared.ports {
        match VrrpSocket::open(iface, key.src, key.multicast) {
            Ok(s) => sockets.push(Arc::new(s)),
            Err(e) => {
                let _ = started.send(Err(format!(
                    "opening the VRRP socket on {} from {}: {e}",
                    key.interface, key.src
                )));
                return;
            }
        }
        if !announcers.contains_key(&key.interface) {
            match Announcer::open(iface) {
                Ok(a) => {
                    announcers.insert(key.interface.clone(), a);
                }
                Err(e) => {
                    let _ = started.send(Err(format!(
                        "opening the gratuitous ARP/NA socket on {}: {e}",
                        key.interface
                    )));
                    return;
                }
            }
        }
    }
    let mut addresses = match rtnl::RtnlSocket::open() {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(format!("opening rtnetlink: {e}")));
            return;
        }
    };
    // Start clean: VIPs a previous run left behind (a `kill -9` releases
    // nothing) would make this box answer for them while backup. They
    // come back when, and only when, this box becomes master.
    {
        use rtnl::Addresses;
        for (instance, (index, vips)) in &prepared.vips {
            let present = addresses.list(*index).unwrap_or_default();
            for (vip, prefix) in vips {
                if present.contains(&(*vip, *prefix)) {
                    match addresses.delete(*index, *vip, *prefix) {
                        Ok(()) => {
                            info!(event = "vip_stale_removed", instance = %instance, address = %vip)
                        }
                        Err(e) => {
                            warn!(event = "vip_remove_failed", instance = %instance, address = %vip, error = %e)
                        }
                    }
                }
            }
        }
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel::<HostEvent>();
    let sinks: Vec<Arc<dyn AdvertSink>> = sockets
        .iter()
        .map(|s| Arc::new(SocketSink(s.clone())) as Arc<dyn AdvertSink>)
        .collect();
    // The driver's clock starts in `Driver::new`; this is its wall-clock
    // reading for followers and metrics (to the millisecond).
    let epoch = SystemTime::now();
    let driver = match Driver::new(prepared.specs, prepared.groups, sinks, events_tx) {
        // This thread is the driver's alone: it may block for the last
        // 2 ms of a timer to fire it on time (see with_precise_timers).
        Ok(d) => d.with_precise_timers(),
        Err(e) => {
            let _ = started.send(Err(e.to_string()));
            return;
        }
    };
    for (port, socket) in sockets.iter().enumerate() {
        let socket = socket.clone();
        let tx = cmd_tx.clone();
        tokio::spawn(async move {
            loop {
                match socket.recv().await {
                    Ok(inc) => {
                        let packet = machine::RxPacket {
                            src: inc.src,
                            dst: inc.dst,
                            ttl: inc.ttl_or_hop_limit,
                            payload: inc.payload,
                        };
                        if tx.send(Command::Packet { port, packet }).await.is_err() {
                            return;
                        }
                    }
                    // A malformed IPv4 header or a transient error: the
                    // next packet is independent.
                    Err(e) => tracing::debug!(event = "vrrp_recv_error", error = %e),
                }
            }
        });
    }
    let (notify_tx, notify_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let notifier = tokio::spawn(notify_runner(notify_rx));
    let executor = tokio::spawn(execute(
        events_rx,
        ctsync,
        addresses,
        announcers,
        prepared.vips,
        hooks,
        notify_tx,
        journal,
    ));
    start_tracking(tracker, scripts, cmd_tx.clone());
    let _ = started.send(Ok(epoch));
    driver.run(commands).await;
    // The driver dropped its event sender: the executor finishes the
    // queue (the releases of a shutdown) and ends.
    let _ = executor.await;
    // Its notify sender is gone with it: the runner works through what is
    // queued (notify_stop of every instance and group) and ends. Without
    // this wait the runtime, dropped when this returns, cancelled the
    // runner and the stop hooks never ran. Bounded, so that a hanging hook
    // cannot hold up the daemon's exit (systemd's stop timeout).
    if tokio::time::timeout(NOTIFY_DRAIN, notifier).await.is_err() {
        warn!(event = "notify_drain_timeout", after = ?NOTIFY_DRAIN);
    }
}

/// How long a stopping daemon waits for its queued notify commands.
const NOTIFY_DRAIN: Duration = Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
async fn execute(
    mut events: mpsc::UnboundedReceiver<HostEvent>,
    ctsync: Arc<RoleLink>,
    mut addresses: rtnl::RtnlSocket,
    announcers: BTreeMap<String, Announcer>,
    vips: BTreeMap<String, (u32, BTreeMap<IpAddr, u8>)>,
    mut hooks: hooks::Hooks,
    notify_tx: mpsc::UnboundedSender<Vec<String>>,
    journal: follow::Journal,
) {
    use rtnl::Addresses;
    let mut anomalies = anomaly::AnomalyLog::default();
    while let Some(ev) = events.recv().await {
        'execute: {
            // prepare() made this table and the driver's instances from
            // the same config; should one be missing, the event is not
            // executed but still reaches the followers (no gap in `seq`).
            let Some((index, prefixes)) = vips.get(&ev.instance) else {
                warn!(event = "vrrp_event_for_unknown_instance", instance = %ev.instance, seq = ev.seq);
                break 'execute;
            };
            let index = *index;
            // The configured prefix length (the machine only names configured
            // VIPs; a host route otherwise).
            let prefix_of = |a: &IpAddr| {
                prefixes
                    .get(a)
                    .copied()
                    .unwrap_or(if a.is_ipv4() { 32 } else { 128 })
            };
            match &ev.action {
                Action::AddVips {
                    addresses: list, ..
                } => {
                    // Takeover order: replicated connection state in the
                    // kernel, then the VIPs, then the gratuitous ARP/NA.
                    // The backup writes entries as they arrive, so this
                    // waits only for bytes received and not yet applied,
                    // and never longer than BARRIER_TIMEOUT.
                    match ctsync.barrier(BARRIER_TIMEOUT).await {
                        BarrierOutcome::Applied(waited) => {
                            info!(event = "ctsync_barrier_applied", instance = %ev.instance, waited = ?waited)
                        }
                        BarrierOutcome::Expired(after) => {
                            warn!(event = "ctsync_barrier_expired", instance = %ev.instance, after = ?after)
                        }
                        BarrierOutcome::Clear | BarrierOutcome::NoSync => {}
                    }
                    for a in list {
                        let prefix = prefix_of(a);
                        match addresses.add(index, *a, prefix) {
                            Ok(()) => {
                                info!(event = "vip_added", instance = %ev.instance, address = %a, prefix)
                            }
                            Err(e) => {
                                warn!(event = "vip_add_failed", instance = %ev.instance, address = %a, error = %e)
                            }
                        }
                    }
                }
                Action::RemoveVips { addresses: list } => {
                    for a in list {
                        let prefix = prefix_of(a);
                        match addresses.delete(index, *a, prefix) {
                            Ok(()) => {
                                info!(event = "vip_removed", instance = %ev.instance, address = %a)
                            }
                            Err(e) => {
                                warn!(event = "vip_remove_failed", instance = %ev.instance, address = %a, error = %e)
                            }
                        }
                    }
                }
                Action::SendGratuitous {
                    addresses: list,
                    repeat,
                } => {
                    if let Some(ann) = announcers.get(&ev.interface) {
                        for _ in 0..*repeat {
                            for a in list {
                                if let Err(e) = ann.announce(*a) {
                                    warn!(event = "gratuitous_failed", instance = %ev.instance, address = %a, error = %e);
                                }
                            }
                        }
                    }
                }
                Action::StateChange { old, new, reason } => {
                    // Before this takeover's AddVips (the machine emits
                    // StateChange first): the session is master by then.
                    ctsync.vrrp_state(&ev.instance, *new);
                    info!(
                        event = "vrrp_state_change",
                        instance = %ev.instance,
                        old = %old,
                        new = %new,
                        reason = %reason,
                        seq = ev.seq
                    );
                    let stopping = matches!(reason, machine::Reason::Shutdown);
                    for argv in hooks.state_change(&ev.instance, *new, stopping) {
                        let _ = notify_tx.send(argv);
                    }
                }
                Action::Anomaly {
                    from,
                    anomaly,
                    discarded,
                } => {
                    // RFC 5798 7.1 / RFC 3768 7.1: "SHOULD log the event";
                    // rate-limited per sender and kind (see anomaly.rs).
                    match anomalies.admit(&ev.instance, *from, anomaly, ev.at) {
                        Some(suppressed) => {
                            warn!(event = "vrrp_anomaly", instance = %ev.instance, from = %from, kind = anomaly.as_str(), anomaly = ?anomaly, discarded, suppressed)
                        }
                        None => {
                            tracing::debug!(event = "vrrp_anomaly", instance = %ev.instance, from = %from, kind = anomaly.as_str(), anomaly = ?anomaly, discarded)
                        }
                    }
                }
                Action::SendAdvert { .. } => {}
            }
        }
        // After execution: a follower reading "VIPs added" can rely on
        // them being there. Slow followers are overtaken, never waited for.
        journal.publish(ev);
    }
}

/// What the tracker hears.
enum TrackMsg {
    Link { name: String, up: bool },
    Script { name: String, ok: bool },
}

/// Link events (a thread on RTNLGRP_LINK), script runs (a task each) and
/// the tracker that turns them into instance inputs.
fn start_tracking(
    mut tracker: track::Tracker,
    scripts: Vec<crate::config::VrrpScript>,
    commands: mpsc::Sender<Command>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<TrackMsg>();
    let links = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("vrrp-links".into())
        .spawn(move || {
            let mut watch = match rtnl::LinkWatch::open() {
                Ok(w) => w,
                Err(e) => {
                    warn!(event = "link_watch_failed", error = %e);
                    return;
                }
            };
            match watch.snapshot() {
                Ok(all) => {
                    for l in all {
                        let _ = links.send(TrackMsg::Link {
                            name: l.name,
                            up: l.up,
                        });
                    }
                }
                Err(e) => warn!(event = "link_watch_failed", error = %e),
            }
            loop {
                match watch.next_timeout(Duration::from_secs(1)) {
                    Ok(Some(l)) => {
                        if links
                            .send(TrackMsg::Link {
                                name: l.name,
                                up: l.up,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    // Idle: stop once the tracker is gone.
                    Ok(None) if links.is_closed() => return,
                    Ok(None) => {}
                    Err(e) => {
                        warn!(event = "link_watch_failed", error = %e);
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(event = "link_watch_failed", error = %e);
    }
    for s in scripts {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut state = track::ScriptState::new(s.rise, s.fall);
            let mut tick = tokio::time::interval(s.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ok = run_argv(&s.script, s.timeout).await.is_ok();
                if let Some(now_ok) = state.result(ok) {
                    info!(event = "track_script_state", script = %s.name, ok = now_ok);
                    if tx
                        .send(TrackMsg::Script {
                            name: s.name.clone(),
                            ok: now_ok,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let inputs = match msg {
                TrackMsg::Link { name, up } => tracker.link(&name, up),
                TrackMsg::Script { name, ok } => tracker.script(&name, ok),
            };
            for (instance, input) in inputs {
                if commands
                    .send(Command::Input { instance, input })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
}

/// Runs `argv` (no shell) and waits at most `timeout`; Ok on exit 0. A
/// timeout kills the command's whole process group
/// ([`healthcheck::probe::run_command`]).
async fn run_argv(argv: &[String], timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, healthcheck::probe::run_command(argv, &[])).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// Runs notify commands one at a time, in the order the state changes
/// happened; each gets 60 s before it is killed.
async fn notify_runner(mut queue: mpsc::UnboundedReceiver<Vec<String>>) {
    while let Some(argv) = queue.recv().await {
        let outcome = run_argv(&argv, Duration::from_secs(60)).await;
        match outcome {
            Ok(()) => info!(event = "notify_ran", command = ?argv),
            Err(e) => warn!(event = "notify_failed", command = ?argv, error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_runs_the_specific_command_then_the_generic_one() {
        let args = NotifyArgs {
            master: Some(vec!["/bin/m".into()]),
            generic: Some(vec!["/bin/n".into(), "x".into()]),
            priority: 150,
            ..NotifyArgs::default()
        };
        assert_eq!(
            notify_commands(&args, "VI_1", State::Master, false),
            vec![
                vec!["/bin/m".to_string()],
                vec!["/bin/n", "x", "INSTANCE", "VI_1", "MASTER", "150"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>()
            ]
        );
        assert_eq!(
            notify_commands(&args, "VI_1", State::Backup, true)[0][4],
            "STOP"
        );
        assert!(notify_commands(&NotifyArgs::default(), "VI_1", State::Fault, false).is_empty());
    }
}
