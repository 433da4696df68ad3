//! The async driver: clock, timers and packet routing around the sans-IO
//! machines ([`crate::machine::Instance`]), and nothing else.
//!
//! ```text
//!   host (director)                       Driver task (one, for all instances)
//!   ───────────────                       ─────────────────────────────────────
//!   socket readers ── Command::Packet ──> demux by (port, VRID) ─> Instance::handle
//!   link watch,    ── Command::Input  ──> Instance::handle           │
//!   track scripts                                                    │ Actions
//!   control        ── Command::Status ──> snapshot                   ▼
//!   SIGTERM        ── Command::Shutdown > priority 0, VIPs released  SendAdvert ─> AdvertSink (socket)
//!                                                                    everything else ─> HostEvent (ordered,
//!                  <──────────── HostEvent { seq, action } ────────  sequence-numbered) ─> the host
//! ```
//!
//! The driver owns no socket and touches no address: it encodes adverts
//! and hands them to an [`AdvertSink`] per port (one raw socket per
//! interface and family, opened by the host), and it turns every other
//! action (VIPs to add or remove, gratuitous ARP/NA to send, state
//! changes, anomalies) into a [`HostEvent`] on one ordered channel. The
//! host executes them strictly in order, so "VIPs added -> gratuitous ARP"
//! holds by construction (RFC 5798 6.4.1: the gratuitous messages announce
//! addresses that are already configured).
//!
//! Time: [`Time`] is milliseconds since the driver's start (`epoch`).
//! Timers fire from one `sleep_until(min(next_deadline))`; every firing
//! records its lateness ([`Lateness`]): the measure of timer starvation
//! that keepalived's flaps under load came from. The host runs the driver
//! on a dedicated thread so the kernel workers never delay it.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::{self, peek};
use crate::group::SyncGroup;
use crate::machine::{Action, Config, ConfigError, Input, Instance, RxPacket, Status};
use crate::time::Time;

/// Where a port's adverts go out (a raw IPPROTO 112 socket bound to the
/// interface and the source address).
pub trait AdvertSink: Send + Sync {
    fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()>;
}

/// One instance to run.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub name: String,
    pub interface: String,
    /// Index into the ports given to [`Driver::new`].
    pub port: usize,
    pub config: Config,
}

/// One sync group: instance names, in group order.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub members: Vec<String>,
}

/// What the host feeds the driver.
#[derive(Debug)]
pub enum Command {
    /// A packet received on port `port`.
    Packet { port: usize, packet: RxPacket },
    /// An input for one instance (link state, tracking, faults).
    Input { instance: String, input: Input },
    /// Snapshot of every instance.
    Status(oneshot::Sender<Snapshot>),
    /// Release everything (priority 0 adverts, VIPs removed) and stop; the
    /// reply comes after the last action was handed over.
    Shutdown(oneshot::Sender<()>),
}

/// An action for the host, in the order the machines produced them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    /// 1, 2, 3, ... over the driver's life: gaps never happen, so a
    /// consumer (`directorctl vrrp --follow`) can tell it missed nothing.
    pub seq: u64,
    pub at: Time,
    pub instance: String,
    pub interface: String,
    pub action: Action,
}

/// Timer lateness: how long after its deadline a timer was handled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lateness {
    pub fired: u64,
    pub max_ms: u64,
    pub last_ms: u64,
    /// Counts per upper bound in ms ([`LATENESS_BUCKETS_MS`]), plus one
    /// overflow bucket.
    pub buckets: Vec<u64>,
    pub sum_ms: u64,
}

/// Upper bounds of the lateness histogram buckets, in milliseconds.
pub const LATENESS_BUCKETS_MS: [u64; 9] = [1, 2, 5, 10, 20, 50, 100, 200, 500];

impl Lateness {
    fn record(&mut self, ms: u64) {
        if self.buckets.len() != LATENESS_BUCKETS_MS.len() + 1 {
            self.buckets = vec![0; LATENESS_BUCKETS_MS.len() + 1];
        }
        let i = LATENESS_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENESS_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.fired += 1;
        self.max_ms = self.max_ms.max(ms);
        self.last_ms = ms;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }
}

/// One instance as `directorctl vrrp` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub name: String,
    pub interface: String,
    pub group: Option<String>,
    pub vips: Vec<IpAddr>,
    pub primary_address: IpAddr,
    pub advert_interval_ms: u64,
    pub preempt: bool,
    pub status: Status,
}

/// Every instance plus the driver's own counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub now: Time,
    pub instances: Vec<InstanceView>,
    pub lateness: Lateness,
    /// Packets for a VRID no instance on that port runs (another cluster
    /// on the segment), and packets too short to carry a VRID.
    pub unknown_vrid: u64,
    pub advert_send_errors: u64,
    pub last_event_seq: u64,
}

impl Snapshot {
    /// No instance configured.
    pub fn empty() -> Snapshot {
        Snapshot {
            now: Time::ZERO,
            instances: Vec::new(),
            lateness: Lateness::default(),
            unknown_vrid: 0,
            advert_send_errors: 0,
            last_event_seq: 0,
        }
    }
}

/// Why the driver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("vrrp_instance {name}: {source}")]
    Config { name: String, source: ConfigError },
    #[error("vrrp_instance {name}: port {port} does not exist")]
    NoPort { name: String, port: usize },
    #[error("sync group {group}: no instance named {member}")]
    UnknownMember { group: String, member: String },
}

struct Slot {
    name: String,
    interface: String,
    port: usize,
    group: Option<usize>,
    instance: Instance,
}

struct Group {
    name: String,
    members: Vec<usize>,
    logic: SyncGroup,
}

/// The driver (see the module docs). Build with [`Driver::new`], run with
/// [`Driver::run`] on its own task.
pub struct Driver {
    epoch: Instant,
    slots: Vec<Slot>,
    groups: Vec<Group>,
    ports: Vec<Arc<dyn AdvertSink>>,
    /// (port, vrid) -> slot.
    demux: BTreeMap<(usize, u8), usize>,
    events: mpsc::UnboundedSender<HostEvent>,
    seq: u64,
    lateness: Lateness,
    unknown_vrid: u64,
    advert_send_errors: u64,
    /// See [`Driver::with_precise_timers`].
    precise_timers: bool,
}

/// How long before a deadline the driver stops relying on tokio's timer
/// when timers are precise.
const PRECISE_MARGIN: Duration = Duration::from_millis(2);

impl Driver {
    pub fn new(
        specs: Vec<InstanceSpec>,
        groups: Vec<GroupSpec>,
        ports: Vec<Arc<dyn AdvertSink>>,
        events: mpsc::UnboundedSender<HostEvent>,
    ) -> Result<Driver, DriverError> {
        let mut slots = Vec::new();
        let mut demux = BTreeMap::new();
        for spec in specs {
            if spec.port >= ports.len() {
                return Err(DriverError::NoPort {
                    name: spec.name,
                    port: spec.port,
                });
            }
            let vrid = spec.config.vrid;
            let instance =
                Instance::new(spec.config, Time::ZERO).map_err(|source| DriverError::Config {
                    name: spec.name.clone(),
                    source,
                })?;
            demux.insert((spec.port, vrid), slots.len());
            slots.push(Slot {
                name: spec.name,
                interface: spec.interface,
                port: spec.port,
                group: None,
                instance,
            });
        }
        let mut out_groups = Vec::new();
        for g in groups {
            let mut members = Vec::new();
            for m in &g.members {
                let Some(i) = slots.iter().position(|s| &s.name == m) else {
                    return Err(DriverError::UnknownMember {
                        group: g.name,
                        member: m.clone(),
                    });
                };
                slots[i].group = Some(out_groups.len());
                members.push(i);
            }
            out_groups.push(Group {
                logic: SyncGroup::new(members.len()),
                name: g.name,
                members,
            });
        }
        Ok(Driver {
            epoch: Instant::now(),
            slots,
            groups: out_groups,
            ports,
            demux,
            events,
            seq: 0,
            lateness: Lateness::default(),
            unknown_vrid: 0,
            advert_send_errors: 0,
            precise_timers: false,
        })
    }

    /// Wake for deadlines to the tens of microseconds instead of tokio's
    /// millisecond slots. tokio's timer wheel wakes at the first 1 ms slot
    /// at or after a deadline (epoll_wait's timeout is in milliseconds),
    /// so a Master_Down timer (RFC 5798 6.4.2) fired on average about a
    /// millisecond late — measured: 361.3 ms from the master's last advert
    /// for a 360 ms Master_Down_Interval. With this, the driver sleeps on
    /// tokio until 2 ms before the deadline and then blocks its thread
    /// (`nanosleep`) for the rest. Only for a driver that has its thread to
    /// itself (the daemon's "vrrp" thread); off by default, and off on
    /// tokio's paused test clock, where real sleeping would not move it.
    pub fn with_precise_timers(mut self) -> Driver {
        self.precise_timers = true;
        self
    }

    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_millis(t.as_millis())
    }

    /// Runs until [`Command::Shutdown`] or until every command sender is
    /// gone (then it releases like a shutdown).
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let now = self.now();
        for i in 0..self.slots.len() {
            self.feed(i, now, Input::Startup);
        }
        loop {
            let next = self
                .slots
                .iter()
                .filter_map(|s| s.instance.next_deadline())
                .min();
            let precise = self.precise_timers;
            let sleep = async {
                match next {
                    Some(t) => {
                        let at = self.instant(t);
                        if precise {
                            if let Some(early) = at.checked_sub(PRECISE_MARGIN) {
                                tokio::time::sleep_until(early).await;
                            }
                            let left = at.saturating_duration_since(Instant::now());
                            if left <= PRECISE_MARGIN {
                                std::thread::sleep(left);
                                // `at` has passed: done. Not a final
                                // `sleep_until(at)`: tokio rounds a deadline
                                // up to its next 1 ms tick (counted from its
                                // own start, not our epoch) and would wait
                                // for that tick, losing up to 1 ms again.
                                return;
                            }
                        }
                        tokio::time::sleep_until(at).await
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown();
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown();
                        return;
                    }
                    Some(other) => self.command(other),
                },
                () = sleep => {
                    // Commands that came in while the thread slept the
                    // last stretch of a precise timer (an advert that
                    // arrived just before Master_Down) are handled first,
                    // as the biased select does between timers.
                    while let Ok(cmd) = commands.try_recv() {
                        if let Command::Shutdown(done) = cmd {
                            self.shutdown();
                            let _ = done.send(());
                            return;
                        }
                        self.command(cmd);
                    }
                    self.timers()
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let now = self.now();
        for i in 0..self.slots.len() {
            let actions = self.slots[i].instance.handle(now, Input::Shutdown);
            self.dispatch(i, now, actions);
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Packet { port, packet } => {
                let slot =
                    peek(&packet.payload).and_then(|(_, vrid)| self.demux.get(&(port, vrid)));
                match slot.copied() {
                    Some(i) => self.feed(i, now, Input::Packet(packet)),
                    None => self.unknown_vrid += 1,
                }
            }
            Command::Input { instance, input } => {
                if let Some(i) = self.slots.iter().position(|s| s.name == instance) {
                    self.feed(i, now, input);
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Shutdown(_) => {}
        }
    }

    fn timers(&mut self) {
        let now = self.now();
        for i in 0..self.slots.len() {
            let Some(due) = self.slots[i].instance.next_deadline() else {
                continue;
            };
            if due <= now {
                self.lateness.record((now - due).as_millis() as u64);
                self.feed(i, now, Input::Timer);
            }
        }
    }

    /// One input to one instance, then its sync group brought in line.
    fn feed(&mut self, i: usize, now: Time, input: Input) {
        let actions = self.slots[i].instance.handle(now, input);
        self.dispatch(i, now, actions);
        let Some(g) = self.slots[i].group else {
            return;
        };
        let members = self.groups[g].members.clone();
        // The members' instances, mutably and in group order.
        let mut by_pos: Vec<(usize, &mut Instance)> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(idx, s)| {
                let pos = members.iter().position(|m| *m == idx)?;
                Some((pos, &mut s.instance))
            })
            .collect();
        by_pos.sort_by_key(|(pos, _)| *pos);
        let mut refs: Vec<&mut Instance> = by_pos.into_iter().map(|(_, inst)| inst).collect();
        let group_actions = self.groups[g].logic.reconcile(&mut refs, now);
        for (pos, action) in group_actions {
            if let Some(&slot) = members.get(pos) {
                self.dispatch(slot, now, vec![action]);
            }
        }
    }

    fn dispatch(&mut self, i: usize, now: Time, actions: Vec<Action>) {
        for action in actions {
            if let Action::SendAdvert { advert, src, dst } = &action {
                let port = self.slots[i].port;
                for d in dst {
                    let sent = codec::encode(advert, *src, *d)
                        .map_err(|e| io::Error::other(e.to_string()))
                        .and_then(|bytes| self.ports[port].send(&bytes, *d));
                    if sent.is_err() {
                        self.advert_send_errors += 1;
                    }
                }
                continue;
            }
            self.seq += 1;
            let event = HostEvent {
                seq: self.seq,
                at: now,
                instance: self.slots[i].name.clone(),
                interface: self.slots[i].interface.clone(),
                action,
            };
            // The host went away: nothing left to act on.
            let _ = self.events.send(event);
        }
    }

    fn snapshot(&self, now: Time) -> Snapshot {
        Snapshot {
            now,
            instances: self
                .slots
                .iter()
                .map(|s| {
                    let c = s.instance.config();
                    InstanceView {
                        name: s.name.clone(),
                        interface: s.interface.clone(),
                        group: s.group.map(|g| self.groups[g].name.clone()),
                        vips: c.vips.clone(),
                        primary_address: c.primary_address,
                        advert_interval_ms: u64::try_from(c.advert_interval.as_millis())
                            .unwrap_or(u64::MAX),
                        preempt: c.preempt,
                        status: s.instance.status(),
                    }
                })
                .collect(),
            lateness: self.lateness.clone(),
            unknown_vrid: self.unknown_vrid,
            advert_send_errors: self.advert_send_errors,
            last_event_seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests;
