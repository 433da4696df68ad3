//! The session's vocabulary: inputs, actions, notices, close reasons,
//! counters and status. All serde (DESIGN.md principle 5): a recorded
//! JSONL of `(now, Input)` replays to the same `Action`s.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Key};
use crate::wire::{DecodeError, EncodeError, GoodbyeReason, Nonce, Role};

/// A change the master's kernel reported (ctnetlink NEW / UPDATE /
/// DESTROY events), already filtered to the replicated flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    New(Entry),
    Update(Entry),
    Destroy(Key),
}

/// Everything that can happen to a session. Time comes separately, as the
/// `now` argument of [`super::Session::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input<'a> {
    /// A TCP connection to the peer is up (either side dialled). `nonce`:
    /// 16 fresh random bytes from the driver, for this connection only.
    Connected { nonce: Nonce },
    /// The connection is gone (EOF, reset, or after an `Action::Close`).
    Disconnected,
    /// Bytes read from the connection, in any pieces.
    BytesReceived {
        #[serde(with = "hex_cow")]
        bytes: Cow<'a, [u8]>,
    },
    /// `next_deadline()` has passed.
    Timer,
    /// Kernel events (acted on as master; counted and ignored as backup,
    /// where they are the echo of our own writes).
    LocalEvents { events: Vec<Event> },
    /// A filtered dump of the local kernel table, answering
    /// `Action::RequestDump`.
    LocalDump { entries: Vec<Entry> },
    /// The dump asked for failed (e.g. ENOBUFS); retried after
    /// `Timers::dump_retry`.
    DumpFailed,
    /// The event socket overran (ENOBUFS): events were lost. Counted, and
    /// a master reconciles against a dump at once.
    EventOverrun,
    /// VRRP changed our role.
    RoleChanged { role: Role },
    /// The driver's count of bytes queued and not yet written to the
    /// socket. Above `Limits::driver_queue_bytes` the session stops
    /// producing data frames until told the queue drained.
    Writable { queued_bytes: usize },
    /// The kernel refused entries of an `ApplyUpserts` (`table_full`:
    /// ENOMEM / nf_conntrack_max reached). They are dropped from the
    /// replicated set so that the next digest asks for them again.
    ApplyFailed { keys: Vec<Key>, table_full: bool },
    /// The daemon stops: say goodbye and close.
    Shutdown,
}

/// Why the driver is asked for a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpReason {
    /// A full bulk resync for a new connection (or a new master).
    FullResync,
    /// Buckets the peer asked for again.
    PartialResync,
    /// The periodic comparison of kernel and replicated set.
    Reconcile,
    /// Events were lost.
    Overrun,
    /// We became master on a live connection.
    RoleChange,
}

/// A protocol rule the peer broke (with a valid MAC: a bug or a version
/// skew, not an attack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// The first frame was not a Hello.
    ExpectedHello { kind: u8 },
    /// A Hello after the handshake.
    UnexpectedHello,
    /// A Hello with a sequence number other than 0.
    HelloSequence { seq: u64 },
    /// The peer's Hello carries our own nonce: our Hello reflected back.
    ReflectedHello,
    /// The peer has our node id: we connected to ourselves.
    SelfConnection,
    /// The peer accepts payloads too small for the protocol.
    PeerMaxPayload { max: u32 },
    /// An Ack for a frame never sent, or going backwards.
    BadAck {
        ack: u64,
        last_acked: u64,
        next: u64,
    },
    /// BulkStart while a bulk is running.
    NestedBulk { generation: u32 },
    /// BulkEnd with no bulk or the wrong generation.
    BulkEnd { generation: u32 },
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CloseReason {
    /// No key confirmation within `Timers::handshake_timeout`.
    HandshakeTimeout,
    /// Nothing valid received within `Timers::dead_interval`.
    PeerTimeout,
    /// A frame failed a check (framing, MAC, payload).
    Rejected {
        error: DecodeError,
    },
    /// A valid MAC on a sequence number already seen: a replay.
    Replay {
        expected: u64,
        got: u64,
    },
    /// A sequence number beyond the next: frames were lost or injected.
    Gap {
        expected: u64,
        got: u64,
    },
    Protocol {
        violation: Violation,
    },
    /// The peer said goodbye.
    PeerGoodbye {
        goodbye: GoodbyeReason,
    },
    /// `Input::Shutdown`.
    Shutdown,
    /// A new `Input::Connected` replaced this connection.
    Replaced,
    /// We could not encode a frame (a bug: entries are validated first).
    Internal {
        error: EncodeError,
    },
}

/// Something to log (DESIGN.md principle 6: a closed vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The handshake completed.
    Established { peer: String, peer_role: Role },
    /// The connection went away under us (`Input::Disconnected`);
    /// `partial_frame_bytes` of an incomplete frame were dropped.
    Disconnected { partial_frame_bytes: usize },
    /// The peer announced a role change.
    PeerRole { role: Role },
    /// We started sending a bulk of `entries` (`full`: every bucket).
    BulkStarted {
        generation: u32,
        entries: u64,
        full: bool,
    },
    /// Our bulk is complete.
    BulkSent { generation: u32, entries: u32 },
    /// A bulk from the peer is complete: `removed` entries it no longer
    /// has were deleted here; `digest_ok`: both sides agree.
    BulkReceived {
        generation: u32,
        removed: u64,
        digest_ok: bool,
    },
    /// A bulk arrived while we are master: nothing was deleted from our
    /// kernel (our own connections live there); the peer gets what it
    /// lacks from our next reconciliation.
    BulkCleanupSkipped { generation: u32, would_remove: u64 },
    /// Digests differ in `buckets` buckets: asked for them again.
    DigestMismatch { buckets: u16 },
    /// Entries in our kernel the master no longer has were removed.
    StaleRemoved { entries: u64 },
    /// Entries we should hold are gone from our kernel, or differ there:
    /// asked again.
    KernelDiffers { missing: u64, different: u64 },
}

/// What the driver must do. Apply in order: an `ApplyUpserts` before the
/// `Send` of the Ack that follows it means "acked = written".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Write these bytes to the connection.
    Send {
        #[serde(with = "hex_vec")]
        bytes: Vec<u8>,
    },
    /// Create-or-update these entries in the kernel table (both tuples,
    /// NAT from the tuples, status, timeout, protoinfo, mark, zone).
    ApplyUpserts { entries: Vec<Entry> },
    /// Delete these entries from the kernel table (ENOENT is fine).
    ApplyDeletes { keys: Vec<Key> },
    /// Dump the (filtered) kernel table and answer with
    /// `Input::LocalDump` (or `Input::DumpFailed`).
    RequestDump { reason: DumpReason },
    /// Close the connection; the session has already forgotten it.
    Close { reason: CloseReason },
    /// Log this.
    Notice { notice: Notice },
}

/// State of the link to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Down,
    /// Connected, handshake not complete.
    Handshake,
    Established,
}

/// Lag of acknowledged frames: `buckets[i]` counts frames whose lag (from
/// the oldest change in the frame being queued to its ack) was below
/// 2^i ms; the last bucket takes the rest (>= 16.384 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LagHistogram {
    pub buckets: [u64; 16],
}

impl LagHistogram {
    pub fn record(&mut self, ms: u64) {
        let i = if ms == 0 {
            0
        } else {
            (64 - ms.leading_zeros()) as usize
        };
        if let Some(b) = self.buckets.get_mut(i.min(15)) {
            *b += 1;
        }
    }

    pub fn samples(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound in ms of the bucket holding quantile `q` (0..=1), e.g.
    /// 0.99 for p99; `None` without samples or for the open last bucket.
    pub fn quantile_upper_ms(&self, q: f64) -> Option<u64> {
        let n = self.samples();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (i < 15).then(|| 1u64 << i);
            }
        }
        None
    }
}

/// Counters, `conntrackd -s` style. Counters only grow; the gauges at the
/// top are computed when [`super::Session::stats`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    // ---- gauges
    /// Entries in the replicated set.
    pub entries: u64,
    /// Changes waiting for the send window (coalesced by key).
    pub pending: u64,
    pub unacked_frames: u64,
    pub unacked_bytes: u64,
    /// Age of the oldest change not yet acknowledged (master), ms.
    pub lag_ms: u64,

    // ---- local kernel events (origin: this node)
    pub events_new: u64,
    pub events_update: u64,
    pub events_destroy: u64,
    /// Received as backup (our own writes echoed): ignored.
    pub events_ignored: u64,
    /// Received with no established connection: the next bulk covers them.
    pub events_unsent: u64,
    /// Entries the director built wrong (mixed families).
    pub events_invalid: u64,
    /// Replaced a change still waiting (backpressure at work).
    pub events_coalesced: u64,
    /// Already what the peer holds: nothing to send.
    pub events_deduplicated: u64,

    // ---- sent
    pub upserts_sent: u64,
    pub deletes_sent: u64,
    /// Of `upserts_sent`, in bulks.
    pub bulk_entries_sent: u64,
    /// Of `bulk_entries_sent`, in partial bulks the peer asked for.
    pub resent: u64,
    /// Reconciliation found these to differ and queued them.
    pub reconcile_upserts: u64,
    pub reconcile_deletes: u64,
    /// Unchanged entries re-sent so the peer's copy does not time out.
    pub refreshes: u64,

    // ---- received (origin: the peer)
    pub upserts_received: u64,
    pub created: u64,
    pub updated: u64,
    pub deletes_received: u64,
    pub destroyed: u64,
    /// Deletes of keys we did not hold (applied anyway: the kernel may).
    pub deletes_unknown: u64,
    /// Changes from an old master still draining after a switchover, for
    /// keys we (the new master) had already changed: not applied, ours
    /// are newer.
    pub superseded: u64,

    // ---- handed to the kernel
    pub upserts_applied: u64,
    pub deletes_applied: u64,
    /// Of `deletes_applied`: swept after a bulk.
    pub bulk_removed: u64,
    /// Of `deletes_applied`: in our kernel, not held from the peer.
    pub stale_removed: u64,

    // ---- wire
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,

    // ---- rejected (each closes the connection)
    /// MAC failures: wrong key, forgery, or a frame of another session.
    pub rejected_auth: u64,
    /// Valid MAC, sequence number already seen.
    pub rejected_replay: u64,
    /// Sequence numbers skipped (frames lost or injected).
    pub lost: u64,
    pub malformed: u64,
    pub oversized: u64,
    /// Connections that ended inside a frame.
    pub truncated: u64,
    pub unknown_type: u64,
    pub bad_version: u64,
    pub protocol_errors: u64,

    // ---- resync and reconciliation
    pub bulk_sent: u64,
    pub partial_bulk_sent: u64,
    pub bulk_received: u64,
    pub partial_bulk_received: u64,
    pub resync_requests_sent: u64,
    pub resync_requests_received: u64,
    /// Received while not master: only a master answers.
    pub resync_requests_ignored: u64,
    pub digest_requests_sent: u64,
    pub digests_sent: u64,
    pub digest_matches: u64,
    pub digest_mismatches: u64,
    /// Held from the peer but gone from our kernel.
    pub missing_in_kernel: u64,
    /// Held from the peer but different in our kernel.
    pub different_in_kernel: u64,

    // ---- kernel side, fed by the driver
    pub overruns: u64,
    pub dumps_requested: u64,
    pub dumps_received: u64,
    /// Dumps that arrived when no longer useful (connection changed).
    pub dumps_discarded: u64,
    pub dump_failures: u64,
    /// Entries in a dump the director built wrong.
    pub dump_invalid: u64,
    pub apply_failures: u64,
    pub table_full: u64,

    // ---- connection
    pub connects: u64,
    pub established: u64,
    pub disconnects: u64,
    pub handshake_failures: u64,
    pub peer_timeouts: u64,
    pub peer_goodbyes: u64,
    pub role_changes: u64,

    /// Ack lag of data frames.
    pub lag: LagHistogram,
    pub max_lag_ms: u64,
}

/// The peer as its Hello and Role messages describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node_id: String,
    pub role: Role,
}

/// Progress of a bulk we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkProgress {
    pub generation: u32,
    pub sent: u64,
    pub total: u64,
    pub full: bool,
}

/// A snapshot for `directorctl sync` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub role: Role,
    pub link: LinkState,
    pub peer: Option<PeerStatus>,
    /// A bulk completed on this connection: both tables agree.
    pub in_sync: bool,
    pub bulk_out: Option<BulkProgress>,
    /// Generation of a bulk being received.
    pub bulk_in: Option<u32>,
    pub stats: Stats,
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Result<Vec<u8>, &'static str> {
    if text.len() % 2 != 0 {
        return Err("odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or("invalid hex digit")
        })
        .collect()
}

/// Hex (de)serialisation of bytes, so recorded inputs stay readable.
mod hex_vec {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text).map_err(D::Error::custom)
    }
}

mod hex_cow {
    use std::borrow::Cow;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes.as_ref()))
    }

    pub fn deserialize<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, [u8]>, D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text)
            .map(Cow::Owned)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_histogram() {
        let mut h = LagHistogram::default();
        assert_eq!(h.quantile_upper_ms(0.99), None);
        h.record(0);
        h.record(1);
        h.record(3);
        h.record(1000);
        h.record(u64::MAX);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.buckets[10], 1);
        assert_eq!(h.buckets[15], 1);
        assert_eq!(h.quantile_upper_ms(0.5), Some(4));
        assert_eq!(h.quantile_upper_ms(0.8), Some(1024));
        assert_eq!(h.quantile_upper_ms(1.0), None);
    }

    #[test]
    fn inputs_and_actions_serde() {
        let input = Input::BytesReceived {
            bytes: Cow::Borrowed(&[0x43, 0x54, 0x01]),
        };
        let json = serde_json::to_string(&input).unwrap();
        assert_eq!(json, r#"{"input":"bytes_received","bytes":"435401"}"#);
        let back: Input<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, input);
        let action = Action::Close {
            reason: CloseReason::Rejected {
                error: DecodeError::BadMac,
            },
        };
        let json = serde_json::to_string(&action).unwrap();
        assert_eq!(
            json,
            r#"{"action":"close","reason":{"reason":"rejected","error":{"error":"bad_mac"}}}"#
        );
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), action);
        let roundtrip = |i: Input<'static>| {
            let j = serde_json::to_string(&i).unwrap();
            assert_eq!(
                serde_json::from_str::<Input<'static>>(&j).unwrap(),
                i,
                "{j}"
            );
        };
        roundtrip(Input::Connected {
            nonce: Nonce([7; 16]),
        });
        roundtrip(Input::RoleChanged { role: Role::Master });
        roundtrip(Input::Writable { queued_bytes: 10 });
        roundtrip(Input::Timer);
    }
}
