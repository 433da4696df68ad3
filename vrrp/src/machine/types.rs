//! The machine's vocabulary: inputs, actions, states, reasons, counters and
//! status. All serde (DESIGN.md principle 5): a recorded JSONL of
//! `(now, Input)` replays to the same `Action`s.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::codec::{Advert, DecodeError, Received};
use crate::time::Time;

/// RFC 5798 6.4 states, plus Fault (keepalived's FAULT: the instance is
/// unable to work, sends nothing and holds no VIPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// Short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a state change happened. `as_str` is stable: logs, metrics labels and
/// `directorctl vrrp` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Initialize -> Backup on Startup (RFC 5798 6.4.1).
    Startup,
    /// Initialize -> Master on Startup with priority 255 (RFC 5798 6.4.1).
    StartupOwner,
    /// Backup -> Master: no advert for Master_Down_Interval (6.4.2).
    MasterDownTimer,
    /// Backup -> Master: Skew_Time after the master's priority-0 advert
    /// (6.4.2).
    PriorityZeroReceived,
    /// Backup -> Master: we discarded a lower-priority master's adverts
    /// (Preempt_Mode, 6.4.2) until the down timer fired.
    Preempt,
    /// Master -> Backup: an advert with a higher priority (6.4.3).
    HigherPriorityAdvert,
    /// Master -> Backup: an advert with our priority from a higher primary
    /// address (6.4.3).
    HigherAddressAdvert,
    /// Any -> Initialize on Shutdown (6.4.2, 6.4.3).
    Shutdown,
    /// -> Fault: the interface went down.
    InterfaceDown,
    /// Fault -> Backup/Master: the interface came back.
    InterfaceUp,
    /// -> Fault: a tracked object without weight failed.
    TrackedFault,
    /// Fault -> Backup/Master: the last tracked fault cleared.
    FaultCleared,
    /// Forced by the instance's sync group.
    SyncGroup,
}

impl Reason {
    /// Short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::StartupOwner => "startup_owner",
            Reason::MasterDownTimer => "master_down_timer",
            Reason::PriorityZeroReceived => "priority_zero_received",
            Reason::Preempt => "preempt",
            Reason::HigherPriorityAdvert => "higher_priority_advert",
            Reason::HigherAddressAdvert => "higher_address_advert",
            Reason::Shutdown => "shutdown",
            Reason::InterfaceDown => "interface_down",
            Reason::InterfaceUp => "interface_up",
            Reason::TrackedFault => "tracked_fault",
            Reason::FaultCleared => "fault_cleared",
            Reason::SyncGroup => "sync_group",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A received VRRP message, owned (see [`Received`] for the fields). The
/// payload serialises as a hex string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 Hop Limit.
    pub ttl: u8,
    /// The VRRP message (after the IPv4 and AH headers).
    #[serde(with = "hex")]
    pub payload: Vec<u8>,
}

impl RxPacket {
    pub fn as_received(&self) -> Received<'_> {
        Received {
            src: self.src,
            dst: self.dst,
            ttl_or_hop_limit: self.ttl,
            payload: &self.payload,
        }
    }
}

impl From<Received<'_>> for RxPacket {
    fn from(rx: Received<'_>) -> Self {
        RxPacket {
            src: rx.src,
            dst: rx.dst,
            ttl: rx.ttl_or_hop_limit,
            payload: rx.payload.to_vec(),
        }
    }
}

/// What a sync group tells a member (see [`crate::group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupCommand {
    /// Another member is in Fault: go to Fault too.
    Fault,
    /// No member is in Fault any more.
    FaultCleared,
    /// Another member became Master: become Master too (from Backup).
    Master,
    /// Another member left Master for Backup: do the same.
    Backup,
}

/// Everything that can happen to an instance. Time comes separately, as the
/// `now` argument of [`super::Instance::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// RFC 5798 6.4.1 Startup event: leave Initialize.
    Startup,
    /// RFC 5798 Shutdown event: back to Initialize (a master releases per
    /// `Config::shutdown`).
    Shutdown,
    /// `next_deadline()` has passed: run the due timers.
    Timer,
    /// A VRRP message for this instance's VRID and family (the driver may
    /// hand foreign VRIDs too: they are counted).
    Packet(RxPacket),
    /// The interface lost its link or went down: Fault.
    InterfaceDown,
    InterfaceUp,
    /// A tracked object without weight failed: Fault while any is failed.
    Fault {
        source: String,
    },
    FaultCleared {
        source: String,
    },
    /// Sum of the weights of tracked objects currently applying
    /// (track_interfaces / track_scripts with weight); replaces the previous
    /// sum. The effective priority is the configured one plus this, clamped
    /// to 1..=254 (an owner stays at 255), as keepalived does.
    SetPriorityDelta {
        delta: i32,
    },
    /// From the instance's sync group.
    Group(GroupCommand),
}

/// Something wrong with a received packet: the driver logs it (RFC 5798
/// 7.1: "SHOULD log the event"); the matching counter in [`Stats`] has
/// already been bumped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "anomaly", rename_all = "snake_case")]
pub enum Anomaly {
    /// TTL / Hop Limit not 255.
    Ttl { ttl: u8 },
    /// The codec rejected it.
    Malformed { error: DecodeError },
    /// A valid advert of the other VRRP version.
    VersionMismatch { version: u8 },
    /// Another VRID (or the other address family's VRID space).
    VridMismatch { vrid: u8 },
    /// v2 Auth Type other than ours.
    AuthTypeMismatch { auth_type: u8 },
    /// v2 simple text password other than ours.
    AuthFailure,
    /// The advert's address list is not our VIP list: a misconfiguration,
    /// or a neighbouring cluster using the same VRID.
    AddressListMismatch { received: Vec<IpAddr> },
    /// Advertisement interval other than ours (centiseconds).
    IntervalMismatch { centis: u32 },
}

impl Anomaly {
    /// Short stable name (the serde tag) for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Anomaly::Ttl { .. } => "ttl",
            Anomaly::Malformed { .. } => "malformed",
            Anomaly::VersionMismatch { .. } => "version_mismatch",
            Anomaly::VridMismatch { .. } => "vrid_mismatch",
            Anomaly::AuthTypeMismatch { .. } => "auth_type_mismatch",
            Anomaly::AuthFailure => "auth_failure",
            Anomaly::AddressListMismatch { .. } => "address_list_mismatch",
            Anomaly::IntervalMismatch { .. } => "interval_mismatch",
        }
    }
}

/// What the driver must do. Apply in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Log it (DESIGN.md principle 6: `old`, `new`, `reason`).
    StateChange {
        old: State,
        new: State,
        reason: Reason,
    },
    /// Encode `advert` with [`crate::codec::encode`] once per destination
    /// and send it from `src` with TTL / Hop Limit 255.
    SendAdvert {
        advert: Advert,
        src: IpAddr,
        /// The multicast group, or every unicast peer.
        dst: Vec<IpAddr>,
    },
    /// Add the VIPs to the interface. `accept`: whether local delivery to
    /// them is allowed (Accept_Mode, or we are the owner); when false the
    /// director drops traffic to them, as keepalived's `no_accept` does.
    AddVips {
        addresses: Vec<IpAddr>,
        accept: bool,
    },
    /// Remove the VIPs from the interface.
    RemoveVips { addresses: Vec<IpAddr> },
    /// Send `repeat` gratuitous ARPs (IPv4) / unsolicited Neighbour
    /// Advertisements with the Router flag (IPv6) for each address.
    SendGratuitous { addresses: Vec<IpAddr>, repeat: u32 },
    /// A received packet had a problem; `discarded` says whether it was
    /// ignored (otherwise it was still processed, e.g. a v3 address-list
    /// mismatch).
    Anomaly {
        from: IpAddr,
        anomaly: Anomaly,
        discarded: bool,
    },
}

/// Counters, RFC 6527 (VRRPv3 MIB) and RFC 2787 (VRRPv2 MIB) style. They
/// only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Valid adverts received (vrrpv3StatisticsRcvdAdvertisements).
    pub adverts_rx: u64,
    /// Adverts sent, priority 0 included.
    pub adverts_tx: u64,
    /// Transitions to Master (vrrpv3StatisticsMasterTransitions).
    pub became_master: u64,
    /// Transitions out of Master (to Backup, Fault or Initialize).
    pub released_master: u64,
    /// vrrpv3StatisticsRcvdPriZeroPackets.
    pub priority_zero_rx: u64,
    /// vrrpv3StatisticsSentPriZeroPackets.
    pub priority_zero_tx: u64,
    /// Adverts from a lower-priority master heard while Master: a split
    /// brain being healed (keepalived's `notify_master_rx_lower_pri`).
    pub lower_priority_rx_as_master: u64,
    /// vrrpv3RouterChecksumErrors.
    pub checksum_errors: u64,
    /// vrrpv3StatisticsIpTtlErrors.
    pub ttl_errors: u64,
    /// vrrpv3RouterVersionErrors.
    pub version_errors: u64,
    /// vrrpv3RouterVrIdErrors.
    pub vrid_errors: u64,
    /// vrrpv3StatisticsAdvIntervalErrors.
    pub interval_errors: u64,
    /// vrrpv3StatisticsAddressListErrors.
    pub address_list_errors: u64,
    /// v2 auth type mismatch, unknown auth type or wrong password (RFC 2787
    /// vrrpStatsAuthTypeMismatch + vrrpStatsInvalidAuthType +
    /// vrrpStatsAuthFailures): the sum of the three below.
    pub auth_errors: u64,
    /// RFC 2787 vrrpStatsAuthTypeMismatch: a known Auth Type other than the
    /// one configured. `serde(default)`: snapshots of older daemons lack it.
    #[serde(default)]
    pub auth_type_mismatch: u64,
    /// RFC 2787 vrrpStatsInvalidAuthType: an Auth Type RFC 2338 does not
    /// define (3..=255).
    #[serde(default)]
    pub invalid_auth_type: u64,
    /// RFC 2787 vrrpStatsAuthFailures: the simple text password differs.
    #[serde(default)]
    pub auth_failures: u64,
    /// vrrpv3StatisticsPacketLengthErrors.
    pub packet_length_errors: u64,
    /// vrrpv3StatisticsRcvdInvalidTypePackets.
    pub invalid_type: u64,
}

/// The last valid advert heard from another router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    pub address: IpAddr,
    pub priority: u8,
    /// Its advertisement interval, centiseconds.
    pub interval_centis: u32,
    pub at: Time,
}

/// The last state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub old: State,
    pub new: State,
    pub reason: Reason,
    pub at: Time,
}

/// A snapshot for `directorctl vrrp` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub vrid: u8,
    pub version: u8,
    pub state: State,
    /// The state without faults (Fault shows what we would be otherwise).
    pub wanted_state: State,
    /// Configured priority.
    pub base_priority: u8,
    /// Priority after tracking weights, the one we advertise.
    pub effective_priority: u8,
    /// Who we believe is master: us when Master, the sender of the adverts
    /// we follow when Backup.
    pub master: Option<IpAddr>,
    pub last_advert: Option<Heard>,
    /// Master_Adver_Interval in centiseconds (learned from the master in
    /// v3, RFC 5798 6.4.2).
    pub master_adver_interval_centis: u32,
    /// Whether we hold the VIPs.
    pub vips_set: bool,
    /// Active fault sources ("interface", "sync_group", tracked names).
    pub faults: Vec<String>,
    pub last_transition: Option<Transition>,
    pub stats: Stats,
}

/// Hex (de)serialisation of packet bytes, so recorded inputs stay readable.
mod hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("odd number of hex digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| D::Error::custom("invalid hex digit"))
            })
            .collect()
    }
}
