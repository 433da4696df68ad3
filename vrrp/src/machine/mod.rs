//! The sans-IO VRRP state machine of RFC 5798 section 6 (and RFC 3768
//! section 6 for v2), plus keepalived's Fault state.
//!
//! One [`Instance`] is one VRID on one interface in one address family. The
//! driver owns sockets and timers and calls:
//!
//! - [`Instance::handle`]`(now, input)` for every [`Input`] (startup, received
//!   packets, timer expiry, link and tracking events) and applies the
//!   returned [`Action`]s in order;
//! - [`Instance::next_deadline`] to know when to send [`Input::Timer`].
//!
//! Time is a [`Time`] the driver maps from its clock. The machine never
//! changes state on an invalid packet: it counts it in [`Stats`] and reports
//! it as [`Action::Anomaly`].
//!
//! Rules (each `// RFC ...` comment below cites the one it implements):
//!
//! - Timers (RFC 5798 6.1): Skew_Time = ((256 - Priority) *
//!   Master_Adver_Interval) / 256 centiseconds, Master_Down_Interval = 3 *
//!   Master_Adver_Interval + Skew_Time; a v3 backup learns
//!   Master_Adver_Interval from the master's adverts (6.4.2). v2 (RFC 3768
//!   6.1): Skew_Time = (256 - Priority) / 256 seconds, intervals fixed.
//! - Election: higher priority wins, then higher primary address (6.4.3).
//!   Without preemption a backup follows any master (6.4.2).
//! - Deviations, all keepalived's behaviour and all configurable: a master
//!   hearing a lower-priority master answers at once and re-sends
//!   gratuitous ARP/NA (split-brain heal, rate-limited by
//!   `garp.lower_prio_delay`), and a master stepping down sends one last
//!   advert so that the winner always hears it (`higher_prio_send_advert`,
//!   on by default here); `preempt_delay`; the GARP schedule; no TTL
//!   check on unicast by default; an owner (priority 255) processes adverts
//!   for that heal but never steps down, where RFC 5798 7.1 has it discard
//!   them all.

mod config;
mod types;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

pub use config::{Config, ConfigError, GarpConfig, ShutdownMode, V2Auth};
pub use types::{
    Action, Anomaly, GroupCommand, Heard, Input, Reason, RxPacket, State, Stats, Status, Transition,
};

use crate::codec::{self, Advert, AuthType, DecodeError, Family, Version};
use crate::time::Time;

/// Why the instance is in Fault; several can hold at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum FaultSource {
    Interface,
    SyncGroup,
    Tracked(String),
}

impl FaultSource {
    fn name(&self) -> String {
        match self {
            FaultSource::Interface => "interface".to_string(),
            FaultSource::SyncGroup => "sync_group".to_string(),
            FaultSource::Tracked(name) => name.clone(),
        }
    }
}

/// What will have happened when the Master_Down_Timer fires, for the
/// transition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownCause {
    /// No advert for Master_Down_Interval.
    Silence,
    /// The master sent priority 0; the timer was set to Skew_Time.
    PriorityZero,
    /// We are discarding a lower-priority master's adverts.
    Preempt,
}

/// One VRRP instance.
#[derive(Debug, Clone)]
pub struct Instance {
    config: Config,
    family: Family,
    /// Advertisement_Interval, centiseconds (v2: seconds * 100).
    advert_centis: u16,
    /// Master_Adver_Interval, centiseconds (RFC 5798 6.1).
    master_adver_centis: u16,
    state: State,
    priority: u8,
    priority_delta: i32,
    master_down_at: Option<Time>,
    adver_at: Option<Time>,
    garp_repeat_at: Option<Time>,
    garp_refresh_at: Option<Time>,
    last_heal_garp: Option<Time>,
    preempt_since: Option<Time>,
    down_cause: DownCause,
    faults: BTreeSet<FaultSource>,
    vips_set: bool,
    master: Option<IpAddr>,
    last_advert: Option<Heard>,
    last_transition: Option<Transition>,
    stats: Stats,
}

impl Instance {
    /// A new instance in Initialize; feed it [`Input::Startup`] to start.
    /// `_now` is taken for symmetry with `handle`: nothing is scheduled
    /// before Startup.
    pub fn new(config: Config, _now: Time) -> Result<Instance, ConfigError> {
        config.validate()?;
        let advert_centis = config.advert_centis();
        Ok(Instance {
            family: config.family(),
            advert_centis,
            master_adver_centis: advert_centis,
            state: State::Initialize,
            priority: config.priority,
            priority_delta: 0,
            master_down_at: None,
            adver_at: None,
            garp_repeat_at: None,
            garp_refresh_at: None,
            last_heal_garp: None,
            preempt_since: None,
            down_cause: DownCause::Silence,
            faults: BTreeSet::new(),
            vips_set: false,
            master: None,
            last_advert: None,
            last_transition: None,
            stats: Stats::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The priority we advertise now.
    pub fn effective_priority(&self) -> u8 {
        self.priority
    }

    /// Whether we hold the VIPs.
    pub fn vips_set(&self) -> bool {
        self.vips_set
    }

    /// Whether a fault other than the sync group's own holds us in Fault
    /// (what [`crate::group::SyncGroup`] propagates).
    pub fn has_own_fault(&self) -> bool {
        self.faults.iter().any(|f| *f != FaultSource::SyncGroup)
    }

    /// Whether the sync group put us in Fault.
    pub fn has_group_fault(&self) -> bool {
        self.faults.contains(&FaultSource::SyncGroup)
    }

    fn is_owner(&self) -> bool {
        self.config.priority == 255
    }

    /// The state we would be in without faults.
    pub fn wanted_state(&self) -> State {
        match self.state {
            State::Fault if self.is_owner() => State::Master,
            State::Fault => State::Backup,
            s => s,
        }
    }

    /// A snapshot for status output.
    pub fn status(&self) -> Status {
        Status {
            vrid: self.config.vrid,
            version: self.config.version,
            state: self.state,
            wanted_state: self.wanted_state(),
            base_priority: self.config.priority,
            effective_priority: self.priority,
            master: self.master,
            last_advert: self.last_advert,
            master_adver_interval_centis: u32::from(self.master_adver_centis),
            vips_set: self.vips_set,
            faults: self.faults.iter().map(FaultSource::name).collect(),
            last_transition: self.last_transition,
            stats: self.stats,
        }
    }

    /// When the driver must next call `handle(now, Input::Timer)`; `None`
    /// when no timer runs (Initialize, Fault).
    pub fn next_deadline(&self) -> Option<Time> {
        match self.state {
            State::Backup => self.master_down_at,
            State::Master => [self.adver_at, self.garp_repeat_at, self.garp_refresh_at]
                .into_iter()
                .flatten()
                .min(),
            State::Initialize | State::Fault => None,
        }
    }

    /// Process one input at `now`; returns the actions to apply in order.
    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.handle_into(now, input, &mut out);
        out
    }

    /// [`Instance::handle`], appending to `out`.
    pub fn handle_into(&mut self, now: Time, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Startup => self.on_startup(now, out),
            Input::Shutdown => self.on_shutdown(now, out),
            Input::Timer => self.on_timer(now, out),
            Input::Packet(rx) => self.on_packet(now, &rx, out),
            Input::InterfaceDown => self.add_fault(now, FaultSource::Interface, out),
            Input::InterfaceUp => self.clear_fault(now, &FaultSource::Interface, out),
            Input::Fault { source } => self.add_fault(now, FaultSource::Tracked(source), out),
            Input::FaultCleared { source } => {
                self.clear_fault(now, &FaultSource::Tracked(source), out)
            }
            Input::SetPriorityDelta { delta } => self.on_priority_delta(now, delta, out),
            Input::Group(cmd) => self.on_group(now, cmd, out),
        }
    }

    // ---- timers -------------------------------------------------------

    fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.advert_centis) * 10)
    }

    /// Skew_Time for our current priority.
    pub fn skew_time(&self) -> Duration {
        let p = 256 - u64::from(self.priority);
        if self.config.version == 2 {
            // RFC 3768 6.1: Skew_Time = ((256 - Priority) / 256) seconds.
            Duration::from_millis(p * 1000 / 256)
        } else {
            // RFC 5798 6.1: Skew_Time = (((256 - priority) *
            // Master_Adver_Interval) / 256), in centiseconds.
            Duration::from_millis(p * u64::from(self.master_adver_centis) / 256 * 10)
        }
    }

    /// Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time
    /// (RFC 5798 6.1; RFC 3768 6.1 with Advertisement_Interval).
    pub fn master_down_interval(&self) -> Duration {
        Duration::from_millis(3 * u64::from(self.master_adver_centis) * 10) + self.skew_time()
    }

    /// keepalived's preempt_delay at startup and after a fault.
    fn startup_delay(&self) -> Duration {
        if self.config.preempt {
            self.config.preempt_delay
        } else {
            Duration::ZERO
        }
    }

    fn on_timer(&mut self, now: Time, out: &mut Vec<Action>) {
        match self.state {
            State::Backup => {
                if self.master_down_at.is_some_and(|t| t <= now) {
                    // RFC 5798 6.4.2: "If the Master_Down_Timer fires, then"
                    // become Master.
                    let reason = match self.down_cause {
                        DownCause::Silence => Reason::MasterDownTimer,
                        DownCause::PriorityZero => Reason::PriorityZeroReceived,
                        DownCause::Preempt => Reason::Preempt,
                    };
                    self.become_master(now, reason, out);
                }
            }
            State::Master => {
                if self.adver_at.is_some_and(|t| t <= now) {
                    // RFC 5798 6.4.3: "If the Adver_Timer fires, then: Send
                    // an ADVERTISEMENT; Reset the Adver_Timer".
                    self.send_advert(now, out);
                }
                if self.garp_repeat_at.is_some_and(|t| t <= now) {
                    // keepalived garp_master_delay: the second burst.
                    self.garp_repeat_at = None;
                    self.gratuitous(self.config.garp.master_repeat, out);
                }
                if let (Some(t), Some(period)) =
                    (self.garp_refresh_at, self.config.garp.master_refresh)
                {
                    if t <= now {
                        // keepalived garp_master_refresh.
                        self.garp_refresh_at = Some(now + period);
                        self.gratuitous(self.config.garp.master_refresh_repeat, out);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    // ---- transitions --------------------------------------------------

    fn transition(&mut self, now: Time, new: State, reason: Reason, out: &mut Vec<Action>) {
        let old = self.state;
        self.state = new;
        self.last_transition = Some(Transition {
            old,
            new,
            reason,
            at: now,
        });
        out.push(Action::StateChange { old, new, reason });
    }

    fn advert(&self, priority: u8) -> Advert {
        let version = if self.config.version == 2 {
            Version::V2 {
                advert_int: (self.advert_centis / 100) as u8,
                auth: self.config.auth.to_wire(),
            }
        } else {
            Version::V3 {
                max_advert_int: self.advert_centis,
            }
        };
        Advert {
            version,
            vrid: self.config.vrid,
            priority,
            addresses: self.config.vips.clone(),
        }
    }

    fn destinations(&self) -> Vec<IpAddr> {
        if self.config.unicast_peers.is_empty() {
            vec![self.family.multicast_group()]
        } else {
            self.config.unicast_peers.clone()
        }
    }

    fn push_advert(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.stats.adverts_tx += 1;
        if priority == 0 {
            self.stats.priority_zero_tx += 1;
        }
        out.push(Action::SendAdvert {
            advert: self.advert(priority),
            src: self.config.primary_address,
            dst: self.destinations(),
        });
    }

    /// Send an advert with our priority and restart the Adver_Timer.
    fn send_advert(&mut self, now: Time, out: &mut Vec<Action>) {
        self.push_advert(self.priority, out);
        self.adver_at = Some(now + self.advert_interval());
    }

    fn gratuitous(&self, repeat: u32, out: &mut Vec<Action>) {
        if repeat > 0 {
            out.push(Action::SendGratuitous {
                addresses: self.config.vips.clone(),
                repeat,
            });
        }
    }

    fn become_master(&mut self, now: Time, reason: Reason, out: &mut Vec<Action>) {
        self.transition(now, State::Master, reason, out);
        self.stats.became_master += 1;
        self.master_down_at = None;
        self.preempt_since = None;
        self.master = Some(self.config.primary_address);
        // RFC 5798 6.4.1 / 6.4.2: send an ADVERTISEMENT, then gratuitous
        // ARP (IPv4) / unsolicited NA (IPv6) for each VIP; the VIPs must be
        // up before the ARPs.
        self.vips_set = true;
        out.push(Action::AddVips {
            addresses: self.config.vips.clone(),
            // RFC 5798 6.4.3: the owner always accepts; others per
            // Accept_Mode.
            accept: self.config.accept_mode || self.is_owner(),
        });
        self.send_advert(now, out);
        self.gratuitous(self.config.garp.master_repeat, out);
        self.garp_repeat_at =
            (!self.config.garp.master_delay.is_zero()).then(|| now + self.config.garp.master_delay);
        self.garp_refresh_at = self.config.garp.master_refresh.map(|p| now + p);
        self.last_heal_garp = None;
    }

    /// Effects of leaving Master (after the StateChange was pushed).
    fn release_master(
        &mut self,
        send_priority_zero: bool,
        remove_vips: bool,
        out: &mut Vec<Action>,
    ) {
        self.stats.released_master += 1;
        if send_priority_zero {
            self.push_advert(0, out);
        }
        if remove_vips && self.vips_set {
            self.vips_set = false;
            out.push(Action::RemoveVips {
                addresses: self.config.vips.clone(),
            });
        }
        self.adver_at = None;
        self.garp_repeat_at = None;
        self.garp_refresh_at = None;
    }

    /// Go to Backup with the Master_Down_Timer at `now + down_in`.
    fn enter_backup(
        &mut self,
        now: Time,
        reason: Reason,
        down_in: Duration,
        out: &mut Vec<Action>,
    ) {
        let was_master = self.state == State::Master;
        self.transition(now, State::Backup, reason, out);
        if was_master {
            self.release_master(false, true, out);
        } else if self.vips_set {
            // After a Retain shutdown and restart.
            self.vips_set = false;
            out.push(Action::RemoveVips {
                addresses: self.config.vips.clone(),
            });
        }
        self.master_down_at = Some(now + down_in);
        self.down_cause = DownCause::Silence;
    }

    fn on_startup(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        // RFC 5798 6.4.1: Master_Adver_Interval starts as our own.
        self.master_adver_centis = self.advert_centis;
        if let Some(first) = self.faults.iter().next() {
            let reason = fault_reason(first);
            self.transition(now, State::Fault, reason, out);
        } else if self.is_owner() {
            // RFC 5798 6.4.1: "If the Priority = 255 ... transition to the
            // Master state".
            self.become_master(now, Reason::StartupOwner, out);
        } else {
            // RFC 5798 6.4.1: "Set the Master_Down_Timer to
            // Master_Down_Interval; Transition to the Backup state".
            let down = self.master_down_interval() + self.startup_delay();
            self.enter_backup(now, Reason::Startup, down, out);
        }
    }

    fn on_shutdown(&mut self, now: Time, out: &mut Vec<Action>) {
        match self.state {
            State::Initialize => return,
            State::Master => {
                self.transition(now, State::Initialize, Reason::Shutdown, out);
                // RFC 5798 6.4.3: "If a Shutdown event is received, then:
                // Cancel the Adver_Timer; Send an ADVERTISEMENT with
                // Priority = 0; Transition to the Initialize state".
                let release = self.config.shutdown == ShutdownMode::Release;
                self.release_master(release, release, out);
            }
            State::Backup | State::Fault => {
                // RFC 5798 6.4.2: "Cancel the Master_Down_Timer; Transition
                // to the Initialize state".
                self.transition(now, State::Initialize, Reason::Shutdown, out);
            }
        }
        self.master_down_at = None;
        self.preempt_since = None;
        self.master = None;
    }

    // ---- faults, priority, groups ----------------------------------------

    fn add_fault(&mut self, now: Time, source: FaultSource, out: &mut Vec<Action>) {
        let reason = fault_reason(&source);
        if !self.faults.insert(source) {
            return;
        }
        if matches!(self.state, State::Backup | State::Master) {
            let was_master = self.state == State::Master;
            self.transition(now, State::Fault, reason, out);
            if was_master {
                // A priority-0 advert lets a backup take over after
                // Skew_Time instead of Master_Down_Interval; pointless when
                // the link itself is gone.
                self.release_master(reason != Reason::InterfaceDown, true, out);
            }
            self.master_down_at = None;
            self.preempt_since = None;
            self.master = None;
        }
    }

    fn clear_fault(&mut self, now: Time, source: &FaultSource, out: &mut Vec<Action>) {
        if !self.faults.remove(source) || !self.faults.is_empty() || self.state != State::Fault {
            return;
        }
        let reason = match source {
            FaultSource::Interface => Reason::InterfaceUp,
            FaultSource::SyncGroup => Reason::SyncGroup,
            FaultSource::Tracked(_) => Reason::FaultCleared,
        };
        // Leaving Fault is a restart: RFC 5798 6.4.1 again.
        self.master_adver_centis = self.advert_centis;
        if self.is_owner() {
            self.become_master(now, reason, out);
        } else {
            let down = self.master_down_interval() + self.startup_delay();
            self.enter_backup(now, reason, down, out);
        }
    }

    fn on_priority_delta(&mut self, now: Time, delta: i32, out: &mut Vec<Action>) {
        self.priority_delta = delta;
        let new = if self.is_owner() {
            // keepalived: an owner's priority cannot be reduced by tracking.
            255
        } else {
            // ... and tracking cannot raise anyone else to 255.
            (i32::from(self.config.priority) + delta).clamp(1, 254) as u8
        };
        if new == self.priority {
            return;
        }
        self.priority = new;
        if self.state == State::Master {
            // Tell the backups now rather than at the next Adver_Timer, so a
            // preempting backup starts discarding our adverts at once.
            self.send_advert(now, out);
        }
    }

    fn on_group(&mut self, now: Time, cmd: GroupCommand, out: &mut Vec<Action>) {
        match cmd {
            GroupCommand::Fault => self.add_fault(now, FaultSource::SyncGroup, out),
            GroupCommand::FaultCleared => self.clear_fault(now, &FaultSource::SyncGroup, out),
            GroupCommand::Master => {
                if self.state == State::Backup {
                    self.become_master(now, Reason::SyncGroup, out);
                }
            }
            GroupCommand::Backup => {
                if self.state == State::Master {
                    self.transition(now, State::Backup, Reason::SyncGroup, out);
                    // Priority 0 so that the peer's backup for this VRID
                    // follows after Skew_Time, keeping the group together.
                    self.release_master(true, true, out);
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.down_cause = DownCause::Silence;
                    self.master = None;
                }
            }
        }
    }

    // ---- receiving ------------------------------------------------------

    fn anomaly(&self, from: IpAddr, anomaly: Anomaly, discarded: bool, out: &mut Vec<Action>) {
        out.push(Action::Anomaly {
            from,
            anomaly,
            discarded,
        });
    }

    fn on_packet(&mut self, now: Time, rx: &RxPacket, out: &mut Vec<Action>) {
        if self.state == State::Initialize {
            // Not running: the driver has no socket open for us.
            return;
        }
        if rx.src == self.config.primary_address {
            // Our own advert looped back (IP_MULTICAST_LOOP).
            return;
        }
        let from = rx.src;
        // RFC 5798 7.1: "MUST verify that the IPv4 TTL/IPv6 Hop Limit is
        // 255". keepalived skips it for unicast (see Config).
        let multicast = rx.dst.is_multicast();
        if (multicast || self.config.unicast_ttl_check) && rx.ttl != codec::TTL {
            self.stats.ttl_errors += 1;
            self.anomaly(from, Anomaly::Ttl { ttl: rx.ttl }, true, out);
            return;
        }
        // RFC 5798 7.1: version, complete packet, checksum.
        let advert = match codec::decode(&rx.as_received()) {
            Ok(advert) => advert,
            Err(error) => {
                let counter = match error {
                    DecodeError::Truncated { .. } | DecodeError::LengthMismatch { .. } => {
                        &mut self.stats.packet_length_errors
                    }
                    DecodeError::BadVersion { .. } | DecodeError::V2OverIpv6 => {
                        &mut self.stats.version_errors
                    }
                    DecodeError::BadType { .. } => &mut self.stats.invalid_type,
                    DecodeError::BadChecksum { .. } => &mut self.stats.checksum_errors,
                    DecodeError::NoAddresses => &mut self.stats.address_list_errors,
                    DecodeError::BadAuthType { .. } => {
                        // RFC 2787 vrrpStatsInvalidAuthType, also in the
                        // auth_errors sum.
                        self.stats.auth_errors += 1;
                        &mut self.stats.invalid_auth_type
                    }
                    // Not for a VRID configured here: the driver mixed
                    // families.
                    DecodeError::FamilyMismatch => &mut self.stats.vrid_errors,
                };
                *counter += 1;
                self.anomaly(from, Anomaly::Malformed { error }, true, out);
                return;
            }
        };
        if advert.version_number() != self.config.version {
            self.stats.version_errors += 1;
            let version = advert.version_number();
            self.anomaly(from, Anomaly::VersionMismatch { version }, true, out);
            return;
        }
        // RFC 5798 7.1: "MUST verify that the VRID is configured on the
        // receiving interface". VRIDs are per address family (RFC 5798 1).
        if advert.vrid != self.config.vrid || Family::of(from) != self.family {
            self.stats.vrid_errors += 1;
            let vrid = advert.vrid;
            self.anomaly(from, Anomaly::VridMismatch { vrid }, true, out);
            return;
        }
        if let Version::V2 { auth, .. } = advert.version {
            // RFC 3768 7.1 / RFC 2338 7.1: "MUST verify that the Auth Type
            // matches the locally configured authentication method".
            let ours = self.config.auth.to_wire();
            if auth.kind != ours.kind {
                self.stats.auth_errors += 1;
                self.stats.auth_type_mismatch += 1;
                let auth_type = auth.kind.code();
                self.anomaly(from, Anomaly::AuthTypeMismatch { auth_type }, true, out);
                return;
            }
            // RFC 2338 7.1: "MUST perform authentication specified by Auth
            // Type".
            if auth.kind == AuthType::SimpleText && auth.data != ours.data {
                self.stats.auth_errors += 1;
                self.stats.auth_failures += 1;
                self.anomaly(from, Anomaly::AuthFailure, true, out);
                return;
            }
        }
        // RFC 5798 7.1 / RFC 3768 7.1: "MAY verify that the IP Address(es)
        // associated with the VRID are valid ... SHOULD log the event".
        // v2 then drops unless the sender is the owner; v3 carries on.
        if !same_addresses(&advert.addresses, &self.config.vips) {
            self.stats.address_list_errors += 1;
            let discard = self.config.version == 2 && advert.priority != 255;
            let received = advert.addresses.clone();
            self.anomaly(
                from,
                Anomaly::AddressListMismatch { received },
                discard,
                out,
            );
            if discard {
                return;
            }
        }
        let centis = advert.interval_centis();
        match advert.version {
            Version::V2 { .. } if centis != u32::from(self.advert_centis) => {
                // RFC 3768 7.1: "MUST verify that the Adver Interval in the
                // packet is the same as the locally configured ... MUST
                // discard the packet".
                self.stats.interval_errors += 1;
                self.anomaly(from, Anomaly::IntervalMismatch { centis }, true, out);
                return;
            }
            Version::V3 { .. } if centis == 0 => {
                // A zero Master_Adver_Interval would make Master_Down_Interval
                // zero: refuse to learn it.
                self.stats.interval_errors += 1;
                self.anomaly(from, Anomaly::IntervalMismatch { centis }, true, out);
                return;
            }
            Version::V3 { .. } if centis != u32::from(self.advert_centis) => {
                // RFC 6527 vrrpv3StatisticsAdvIntervalErrors; RFC 5798 6.4.2
                // still accepts and learns the master's interval.
                self.stats.interval_errors += 1;
                self.anomaly(from, Anomaly::IntervalMismatch { centis }, false, out);
            }
            _ => {}
        }

        self.stats.adverts_rx += 1;
        if advert.priority == 0 {
            self.stats.priority_zero_rx += 1;
        }
        self.last_advert = Some(Heard {
            address: from,
            priority: advert.priority,
            interval_centis: centis,
            at: now,
        });
        match self.state {
            State::Backup => self.backup_rx(now, from, &advert),
            State::Master => self.master_rx(now, from, &advert, out),
            // Counted above; a faulted instance does not take part.
            State::Fault | State::Initialize => {}
        }
    }

    fn learn_interval(&mut self, advert: &Advert) {
        if let Version::V3 { max_advert_int } = advert.version {
            // RFC 5798 6.4.2: "Set Master_Adver_Interval to Adver Interval
            // contained in the ADVERTISEMENT".
            self.master_adver_centis = max_advert_int;
        }
    }

    fn backup_rx(&mut self, now: Time, from: IpAddr, advert: &Advert) {
        if advert.priority == 0 {
            // RFC 5798 6.4.2: "If the Priority in the ADVERTISEMENT is zero,
            // then: Set the Master_Down_Timer to Skew_Time".
            self.master_down_at = Some(now + self.skew_time());
            self.down_cause = DownCause::PriorityZero;
            self.master = None;
            return;
        }
        let lower = advert.priority < self.priority;
        // RFC 5798 6.4.2: "If Preempt_Mode is False, or if the Priority in
        // the ADVERTISEMENT is greater than or equal to the local Priority,
        // then" follow this master. keepalived's preempt_delay keeps
        // following a lower-priority master for that long before
        // preempting.
        let follow = if !self.config.preempt || !lower {
            self.preempt_since = None;
            true
        } else if self.config.preempt_delay.is_zero() {
            false
        } else {
            let since = *self.preempt_since.get_or_insert(now);
            now < since + self.config.preempt_delay
        };
        if follow {
            self.learn_interval(advert);
            // RFC 5798 6.4.2: "Recompute the Master_Down_Interval; Reset the
            // Master_Down_Timer to Master_Down_Interval".
            self.master_down_at = Some(now + self.master_down_interval());
            self.down_cause = DownCause::Silence;
        } else {
            // RFC 5798 6.4.2: "Discard the ADVERTISEMENT"; the
            // Master_Down_Timer will fire and we take over.
            self.down_cause = DownCause::Preempt;
        }
        self.master = Some(from);
    }

    fn master_rx(&mut self, now: Time, from: IpAddr, advert: &Advert, out: &mut Vec<Action>) {
        if advert.priority == 0 {
            // RFC 5798 6.4.3: "If the Priority in the ADVERTISEMENT is zero,
            // then: Send an ADVERTISEMENT; Reset the Adver_Timer".
            self.send_advert(now, out);
            return;
        }
        let higher_priority = advert.priority > self.priority;
        let higher_address = advert.priority == self.priority && from > self.config.primary_address;
        // RFC 5798 7.1: the owner discards adverts (keeps Master); we still
        // let it heal a split brain below.
        if (higher_priority || higher_address) && !self.is_owner() {
            // RFC 5798 6.4.3: "Cancel Adver_Timer; Set Master_Adver_Interval
            // to Adver Interval contained in the ADVERTISEMENT; Recompute
            // the Skew_Time; Recompute the Master_Down_Interval; Set
            // Master_Down_Timer to Master_Down_Interval; Transition to the
            // Backup state".
            self.learn_interval(advert);
            let reason = if higher_priority {
                Reason::HigherPriorityAdvert
            } else {
                Reason::HigherAddressAdvert
            };
            let down = self.master_down_interval();
            self.enter_backup(now, reason, down, out);
            if self.config.higher_prio_send_advert {
                // keepalived higher_prio_send_advert: our last advert makes
                // the winner re-announce the VIPs (split-brain heal).
                self.push_advert(self.priority, out);
            }
            self.master = Some(from);
            return;
        }
        // RFC 5798 6.4.3 says discard. But another master is active (a
        // healed partition, or a peer that missed our adverts) and upstream
        // ARP/ND caches may point at it: answer at once so it steps down, and
        // re-announce the VIPs (keepalived does both by default).
        self.stats.lower_priority_rx_as_master += 1;
        if self.config.lower_prio_advert {
            self.send_advert(now, out);
            let due = self
                .last_heal_garp
                .is_none_or(|t| now >= t + self.config.garp.lower_prio_delay);
            if due {
                self.last_heal_garp = Some(now);
                self.gratuitous(self.config.garp.lower_prio_repeat, out);
            }
        }
    }
}

fn fault_reason(source: &FaultSource) -> Reason {
    match source {
        FaultSource::Interface => Reason::InterfaceDown,
        FaultSource::SyncGroup => Reason::SyncGroup,
        FaultSource::Tracked(_) => Reason::TrackedFault,
    }
}

/// Address lists compared as sets: keepalived and others may order them
/// differently.
fn same_addresses(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let a: BTreeSet<_> = a.iter().collect();
    let b: BTreeSet<_> = b.iter().collect();
    a == b
}

#[cfg(test)]
mod tests;
