//! The sans-IO replication session: one per node, living across
//! connections to the peer.
//!
//! The driver owns the TCP connection, the conntrack sockets and the
//! clock, and calls:
//!
//! - [`Session::handle`]`(now, input)` for every [`Input`], then applies
//!   the returned [`Action`]s in order;
//! - [`Session::next_deadline`] to know when to send [`Input::Timer`].
//!
//! ## Lifecycle of a connection
//!
//! `Connected{nonce}` sends our Hello. The peer's Hello (MAC under the
//! Hello key, sequence 0) gives its nonce; both frame keys are derived and
//! we send a Heartbeat under ours as key confirmation. The peer's first
//! frame under its key completes the handshake (`Established`). Until then
//! nothing else is accepted, and nothing costly (a dump) is started for a
//! peer that has not proven it holds the key.
//!
//! Then every frame must carry exactly the next sequence number: lower is
//! a replay (`rejected_replay`), higher a gap (`lost`). MAC failures count
//! in `rejected_auth`. Any rejection closes the connection (the stream
//! cannot be trusted after it); the next connection starts over with a
//! full bulk, so nothing is half-applied: a batch is decoded completely
//! before any of it is handed to the kernel.
//!
//! ## Master: events, window, coalescing
//!
//! As master, kernel events go into [`pending`] (one slot per key, latest
//! state wins, a delete of a key the peer never got cancels the upsert)
//! and are drained into Upsert/Delete frames while the window allows:
//! unacknowledged bytes below `Limits::window_bytes` and the driver's
//! queue below `Limits::driver_queue_bytes`. When the window is full,
//! events keep coalescing in place: memory is bounded by the number of
//! distinct connections, never by the event rate. An event that would not
//! change what the peer holds (same content hash, timeout not running out
//! there) is not sent at all.
//!
//! ## Bulk resync
//!
//! On every new connection the master asks the driver for a dump
//! (`RequestDump`), sends `BulkStart{generation, scope}`, streams the dump
//! as Upserts (interleaved with live changes, which go first; a dumped
//! entry whose key saw an event since the dump is skipped, the event being
//! newer) and ends with `BulkEnd{generation, count, digest}`. The receiver
//! marks every key it gets in between; at BulkEnd it deletes what it holds
//! in the scope and did not get: entries destroyed while the link was
//! down disappear too. A partial bulk is the same over some buckets only.
//!
//! ## Reconciliation
//!
//! - Digest (cheap, on the wire): a backup asks for the master's digest
//!   every `digest_interval` and compares it with its own at the same
//!   stream position; differing buckets are asked for again
//!   (`ResyncRequest`) and re-sent as a partial bulk.
//! - Dump (local): every `reconcile_interval` each side compares its
//!   kernel with the replicated set. The master queues what differs
//!   (including entries whose copy on the backup would time out:
//!   refreshes) and deletes what its kernel no longer has; the backup
//!   deletes kernel entries the master never sent (left from before a
//!   restart or from its own time as master) and asks again for entries
//!   its kernel lost.
//! - An event overrun makes the master reconcile at once (conntrackd waits
//!   `NetlinkOverrunResync`, 30 s by default).
//!
//! ## Roles
//!
//! Roles follow VRRP ([`Input::RoleChanged`]). Only a master turns kernel
//! events into messages, but both sides apply whatever the peer sends and
//! both keep the same replicated set, so a switchover on a live
//! connection needs no resync:
//!
//! ```text
//!  old master A                                  new master B
//!  RoleChanged(Backup): stops taking events;     RoleChanged(Master): takes
//!  keeps draining what it queued                 events, sends them; does
//!                                                nothing from its own set yet
//!  Upsert/Delete (queued before) ... -------->   applied, except keys B
//!                                 <--------      changed since (B's newer)
//!                 Role{Master, confirm}
//!  Role{Backup} (after the last  ----------->    the drain marker: B dumps its
//!  queued change)                                kernel, sends what differs,
//!                                 <--------      then DigestRequest; buckets
//!                                                that differ are re-sent
//! ```
//!
//! A Role frame is only sent once everything queued under the previous
//! role is out, so `Role{Backup}` marks the end of the old master's
//! changes; `confirm` makes a peer that has nothing to announce answer
//! anyway. A peer that never steps down (two masters) is waited for at
//! most `dead_interval`. A bulk that arrives while we are master never
//! deletes from our kernel: our own connections live there.
//!
//! The director must not feed back the events of its own kernel writes:
//! ctnetlink stamps an event with the portid of the socket whose request
//! caused it (`nlmsg_pid`), so the event reader drops those of the write
//! socket. If some slip through, the session stays correct (they are
//! deduplicated against the replicated set, and the reconciliation repairs
//! what a late echo got wrong), only slower to converge.
//!
//! [`pending`]: self#master-events-window-coalescing

mod config;
mod pending;
mod table;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

pub use config::{Config, ConfigError, Limits, Timers};
pub use types::{
    Action, BulkProgress, CloseReason, DumpReason, Event, Input, LagHistogram, LinkState, Notice,
    PeerStatus, Stats, Status, Violation,
};

use pending::{Op, OpKind, Pending};
use table::{Slot, Table};

use crate::digest::{bucket_of, content_hash, key_hash, Digest, Scope};
use crate::entry::{Entry, Key};
use crate::time::Time;
use crate::wire::message::kind;
use crate::wire::record::{MAX_ENTRY_LEN, MAX_KEY_LEN};
use crate::wire::{
    DecodeError, DeleteBatch, Frame, FrameReader, GoodbyeReason, Hello, MacKey, Message, Nonce,
    ResyncReason, Role, UpsertBatch, MIN_MAX_PAYLOAD,
};

/// Dumps asked for and not answered yet, at most (older ones are taken as
/// lost).
const MAX_DUMPS_IN_FLIGHT: usize = 16;

type Flow = Result<(), CloseReason>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitConfirm,
    Established,
}

#[derive(Debug, Clone)]
struct PeerInfo {
    node_id: String,
    role: Role,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    len: usize,
    queued_at: Time,
}

#[derive(Debug, Clone)]
struct BulkOut {
    generation: u32,
    scope: Scope,
    entries: Vec<Entry>,
    cursor: usize,
    sent: u32,
    /// Keys with events since the dump: their dumped state is older.
    touched: HashSet<Key>,
    dumped_at: Time,
}

#[derive(Debug, Clone, Copy)]
struct BulkIn {
    generation: u32,
    scope: Scope,
    epoch: u32,
}

/// What the next dump is for.
#[derive(Debug, Clone, Copy, Default)]
struct DumpPlan {
    /// Buckets to send as a bulk.
    scope: Scope,
    reason: Option<DumpReason>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    phase: Phase,
    connected_at: Time,
    our_nonce: Nonce,
    announced_role: Role,
    peer: Option<PeerInfo>,
    tx_key: Option<MacKey>,
    rx_key: Option<MacKey>,
    reader: FrameReader,
    /// Next sequence number to send / expected.
    tx_seq: u64,
    rx_seq: u64,
    /// Highest sequence number the peer acknowledged.
    acked: u64,
    unacked: VecDeque<InFlight>,
    unacked_bytes: usize,
    driver_queued: usize,
    last_rx: Time,
    last_tx: Time,
    ack_due: bool,
    /// Payload size of the batches we send (ours, capped by the peer's).
    send_max: usize,
    in_sync: bool,
    bulk_in: Option<BulkIn>,
    bulk_out: Option<BulkOut>,
    plan: DumpPlan,
    /// While a dump is on its way: the latest local state of every key
    /// that changed since it was asked for (`None`: destroyed). The dump
    /// may predate these changes while their events were already sent
    /// live; laid over the dump, they make it current, so a bulk never
    /// leaves out (and the peer never deletes at BulkEnd) an entry created
    /// after the dump was taken.
    since_dump: Option<HashMap<Key, Option<Entry>>>,
    digest_at: Option<Time>,
    digest_outstanding: Option<u32>,
    next_digest_id: u32,
    deferred_digest: Option<u32>,
    reconcile_at: Option<Time>,
    dump_retry_at: Option<Time>,
    /// We became master while the peer still was: wait for its drain.
    takeover: Option<Takeover>,
    /// The peer asked for our Role (sent once our queue is drained).
    role_reply_due: bool,
    /// Sequence number of the last frame that changed the replicated set
    /// (Upsert, Delete, BulkStart, BulkEnd) and of the last DigestRequest:
    /// a digest answer is only comparable if no change left after it.
    data_seq: u64,
    digest_request_seq: u64,
    /// As new master: compare digests once our first reconciliation is
    /// out (a switchover can leave changes that crossed).
    verify_due: bool,
}

/// A new master waiting for the old one to finish sending what it queued
/// before stepping down (its `Role{Backup}` comes after the last of it).
#[derive(Debug, Clone)]
struct Takeover {
    since: Time,
    /// Keys we changed since: the old master's older state of them is not
    /// applied.
    touched: HashSet<Key>,
}

/// One node's replication state machine.
#[derive(Debug)]
pub struct Session {
    config: Config,
    hello_key: MacKey,
    role: Role,
    now: Time,
    table: Table,
    pending: Pending,
    conn: Option<Conn>,
    next_conn_id: u64,
    /// The connection each unanswered dump was asked for, oldest first.
    dumps_in_flight: VecDeque<u64>,
    generation: u32,
    epoch: u32,
    stats: Stats,
}

fn secs(s: u32) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(s))
}

fn count(n: usize) -> u64 {
    n as u64
}

impl Session {
    /// A session with no connection yet.
    pub fn new(config: Config, now: Time) -> Result<Session, ConfigError> {
        config.validate()?;
        Ok(Session {
            hello_key: config.key.hello_key(),
            role: config.role,
            now,
            table: Table::default(),
            pending: Pending::default(),
            conn: None,
            next_conn_id: 1,
            dumps_in_flight: VecDeque::new(),
            generation: 0,
            epoch: 0,
            stats: Stats::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn link(&self) -> LinkState {
        match &self.conn {
            None => LinkState::Down,
            Some(c) if c.phase == Phase::Established => LinkState::Established,
            Some(_) => LinkState::Handshake,
        }
    }

    /// Whether a bulk completed on the current connection.
    pub fn in_sync(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.in_sync)
    }

    /// Entries in the replicated set.
    pub fn replicated_len(&self) -> usize {
        self.table.len()
    }

    /// The digest of the replicated set.
    pub fn digest(&self) -> &Digest {
        self.table.digest()
    }

    /// Keys held in the pending queue, tombstones included: the memory
    /// bound, at most the number of distinct keys changed.
    pub fn pending_slots(&self) -> usize {
        self.pending.slots().max(self.pending.queue_len())
    }

    /// Counters, with the gauges computed at the time of the last input.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.entries = count(self.table.len());
        s.pending = count(self.pending.live());
        let mut oldest = self.pending.oldest();
        if let Some(c) = &self.conn {
            s.unacked_frames = count(c.unacked.len());
            s.unacked_bytes = count(c.unacked_bytes);
            if let Some(f) = c.unacked.front() {
                oldest = Some(oldest.map_or(f.queued_at, |o| o.min(f.queued_at)));
            }
        }
        s.lag_ms = oldest.map_or(0, |t| {
            u64::try_from((self.now - t).as_millis()).unwrap_or(u64::MAX)
        });
        s
    }

    /// A snapshot for `directorctl sync`.
    pub fn status(&self) -> Status {
        let conn = self.conn.as_ref();
        Status {
            node_id: self.config.node_id.clone(),
            role: self.role,
            link: self.link(),
            peer: conn.and_then(|c| c.peer.as_ref()).map(|p| PeerStatus {
                node_id: p.node_id.clone(),
                role: p.role,
            }),
            in_sync: self.in_sync(),
            bulk_out: conn
                .and_then(|c| c.bulk_out.as_ref())
                .map(|b| BulkProgress {
                    generation: b.generation,
                    sent: count(b.cursor),
                    total: count(b.entries.len()),
                    full: b.scope.is_full(),
                }),
            bulk_in: conn.and_then(|c| c.bulk_in.map(|b| b.generation)),
            stats: self.stats(),
        }
    }

    /// When the driver must next call `handle(now, Input::Timer)`; `None`
    /// without a connection.
    pub fn next_deadline(&self) -> Option<Time> {
        let c = self.conn.as_ref()?;
        let t = &self.config.timers;
        let mut d = vec![c.last_rx + t.dead_interval];
        if c.phase != Phase::Established {
            d.push(c.connected_at + t.handshake_timeout);
        } else {
            d.push(c.last_tx + t.heartbeat_interval);
            if self.digest_due(c) {
                d.extend(c.digest_at);
            }
            if c.in_sync {
                d.extend(c.reconcile_at);
            }
            d.extend(c.dump_retry_at);
            d.extend(c.takeover.as_ref().map(|tk| tk.since + t.dead_interval));
        }
        d.into_iter().min()
    }

    /// Process one input at `now`; returns the actions to apply in order.
    pub fn handle(&mut self, now: Time, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.handle_into(now, input, &mut out);
        out
    }

    /// [`Session::handle`], appending to `out`.
    pub fn handle_into(&mut self, now: Time, input: Input<'_>, out: &mut Vec<Action>) {
        self.now = now;
        match input {
            Input::Connected { nonce } => self.on_connected(now, nonce, out),
            Input::Disconnected => self.on_disconnected(out),
            Input::BytesReceived { bytes } => {
                self.with_conn(now, out, |s, c, out| s.on_bytes(c, now, &bytes, out))
            }
            Input::Timer => self.with_conn(now, out, |s, c, out| s.on_timer(c, now, out)),
            Input::LocalEvents { events } => self.on_events(now, events, out),
            Input::LocalDump { entries } => self.on_dump(now, entries, out),
            Input::DumpFailed => self.on_dump_failed(now),
            Input::EventOverrun => {
                self.stats.overruns += 1;
                if self.role == Role::Master {
                    self.with_conn(now, out, |s, c, out| {
                        if c.phase == Phase::Established {
                            s.request_dump(c, DumpReason::Overrun, out);
                        }
                        Ok(())
                    });
                }
            }
            Input::RoleChanged { role } => self.on_role(now, role, out),
            Input::Writable { queued_bytes } => self.with_conn(now, out, |_, c, _| {
                c.driver_queued = queued_bytes;
                Ok(())
            }),
            Input::ApplyFailed { keys, table_full } => {
                self.stats.apply_failures += count(keys.len());
                if table_full {
                    self.stats.table_full += count(keys.len());
                }
                // Forget them: the next digest shows the difference and
                // asks for them again (at the digest interval, not in a
                // tight loop against a full table).
                for k in &keys {
                    self.table.remove(k);
                }
            }
            Input::Shutdown => self.with_conn(now, out, |s, c, out| {
                if c.tx_key.is_some() {
                    s.send_control(
                        c,
                        now,
                        &Message::Goodbye {
                            reason: GoodbyeReason::Shutdown,
                        },
                        out,
                    )?;
                }
                Err(CloseReason::Shutdown)
            }),
        }
    }

    // ---- connection plumbing -------------------------------------------

    /// Run `f` on the connection, then send what the window allows; close
    /// the connection if either says so.
    fn with_conn(
        &mut self,
        now: Time,
        out: &mut Vec<Action>,
        f: impl FnOnce(&mut Self, &mut Conn, &mut Vec<Action>) -> Flow,
    ) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let result = f(self, &mut conn, out).and_then(|()| self.flush(&mut conn, now, out));
        match result {
            Ok(()) => self.conn = Some(conn),
            Err(reason) => self.close(reason, out),
        }
    }

    /// Forget the connection (already taken out of `self.conn`) and tell
    /// the driver to close it.
    fn close(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        self.stats.disconnects += 1;
        match reason {
            CloseReason::HandshakeTimeout => self.stats.handshake_failures += 1,
            CloseReason::PeerTimeout => self.stats.peer_timeouts += 1,
            CloseReason::PeerGoodbye { .. } => self.stats.peer_goodbyes += 1,
            _ => {}
        }
        // Queued changes were for this connection; the next one starts with
        // a bulk that covers them.
        self.pending.clear();
        out.push(Action::Close { reason });
    }

    fn on_connected(&mut self, now: Time, nonce: Nonce, out: &mut Vec<Action>) {
        if self.conn.take().is_some() {
            self.close(CloseReason::Replaced, out);
        }
        self.stats.connects += 1;
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let limits = self.config.limits;
        let mut conn = Conn {
            id,
            phase: Phase::AwaitHello,
            connected_at: now,
            our_nonce: nonce,
            announced_role: self.role,
            peer: None,
            tx_key: None,
            rx_key: None,
            reader: FrameReader::new(limits.max_payload),
            tx_seq: 0,
            rx_seq: 0,
            acked: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            driver_queued: 0,
            last_rx: now,
            last_tx: now,
            ack_due: false,
            send_max: limits.batch_bytes,
            in_sync: false,
            bulk_in: None,
            bulk_out: None,
            plan: DumpPlan::default(),
            since_dump: None,
            digest_at: None,
            digest_outstanding: None,
            next_digest_id: 1,
            deferred_digest: None,
            reconcile_at: None,
            dump_retry_at: None,
            takeover: None,
            role_reply_due: false,
            data_seq: 0,
            digest_request_seq: 0,
            verify_due: false,
        };
        let hello = Message::Hello(Hello {
            role: self.role,
            max_payload: limits.max_payload,
            nonce,
            node_id: self.config.node_id.clone(),
        });
        match hello.encode_frame(0, &self.hello_key) {
            Ok(bytes) => {
                self.push_frame(&mut conn, now, bytes, false, now, out);
                self.conn = Some(conn);
            }
            Err(error) => self.close(CloseReason::Internal { error }, out),
        }
    }

    fn on_disconnected(&mut self, out: &mut Vec<Action>) {
        if let Some(conn) = self.conn.take() {
            let partial = conn.reader.buffered();
            if partial > 0 {
                self.stats.truncated += 1;
            }
            self.stats.disconnects += 1;
            self.pending.clear();
            out.push(Action::Notice {
                notice: Notice::Disconnected {
                    partial_frame_bytes: partial,
                },
            });
        }
    }

    /// Account for and emit a sealed frame; `conn.tx_seq` must be the
    /// sequence number it was sealed with.
    fn push_frame(
        &mut self,
        conn: &mut Conn,
        now: Time,
        bytes: Vec<u8>,
        eliciting: bool,
        queued_at: Time,
        out: &mut Vec<Action>,
    ) {
        let seq = conn.tx_seq;
        conn.tx_seq += 1;
        conn.last_tx = now;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += count(bytes.len());
        if eliciting {
            conn.unacked.push_back(InFlight {
                seq,
                len: bytes.len(),
                queued_at,
            });
            conn.unacked_bytes += bytes.len();
        }
        out.push(Action::Send { bytes });
    }

    /// Send a control message under the session key.
    fn send_control(
        &mut self,
        conn: &mut Conn,
        now: Time,
        msg: &Message,
        out: &mut Vec<Action>,
    ) -> Flow {
        let Some(key) = conn.tx_key.as_ref() else {
            return Ok(());
        };
        let bytes = msg
            .encode_frame(conn.tx_seq, key)
            .map_err(|error| CloseReason::Internal { error })?;
        match msg {
            Message::Heartbeat => self.stats.heartbeats_sent += 1,
            Message::Ack { .. } => self.stats.acks_sent += 1,
            Message::Digest { .. } => self.stats.digests_sent += 1,
            _ => {}
        }
        let eliciting = Message::is_ack_eliciting(msg.kind());
        self.push_frame(conn, now, bytes, eliciting, now, out);
        Ok(())
    }

    // ---- receiving -----------------------------------------------------

    fn on_bytes(
        &mut self,
        conn: &mut Conn,
        now: Time,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> Flow {
        self.stats.bytes_received += count(bytes.len());
        let mut reader = std::mem::take(&mut conn.reader);
        reader.push(bytes);
        let result = loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(error) => {
                    self.count_rejection(&error);
                    break Err(CloseReason::Rejected { error });
                }
            };
            if let Err(reason) = self.on_frame(conn, now, &frame, out) {
                break Err(reason);
            }
        };
        conn.reader = reader;
        result?;
        if conn.ack_due {
            conn.ack_due = false;
            let seq = conn.rx_seq.saturating_sub(1);
            self.send_control(conn, now, &Message::Ack { seq }, out)?;
        }
        Ok(())
    }

    fn count_rejection(&mut self, error: &DecodeError) {
        match error {
            DecodeError::BadMac => self.stats.rejected_auth += 1,
            DecodeError::Oversized { .. } => self.stats.oversized += 1,
            DecodeError::UnsupportedVersion(_) => self.stats.bad_version += 1,
            DecodeError::UnknownType(_) => self.stats.unknown_type += 1,
            _ => self.stats.malformed += 1,
        }
    }

    fn reject(&mut self, error: DecodeError) -> CloseReason {
        self.count_rejection(&error);
        CloseReason::Rejected { error }
    }

    fn violation(&mut self, violation: Violation) -> CloseReason {
        self.stats.protocol_errors += 1;
        CloseReason::Protocol { violation }
    }

    fn on_frame(
        &mut self,
        conn: &mut Conn,
        now: Time,
        frame: &Frame<&[u8]>,
        out: &mut Vec<Action>,
    ) -> Flow {
        if conn.phase == Phase::AwaitHello {
            return self.on_hello(conn, now, frame, out);
        }
        // Authenticate first: nothing an unauthenticated frame says (its
        // sequence number included) may change our state.
        let verified = match &conn.rx_key {
            Some(key) => frame.verify(key),
            None => Err(DecodeError::BadMac),
        };
        if let Err(error) = verified {
            if conn.phase == Phase::AwaitConfirm {
                self.stats.handshake_failures += 1;
            }
            return Err(self.reject(error));
        }
        let seq = frame.seq();
        if seq < conn.rx_seq {
            self.stats.rejected_replay += 1;
            return Err(CloseReason::Replay {
                expected: conn.rx_seq,
                got: seq,
            });
        }
        if seq > conn.rx_seq {
            self.stats.lost += seq - conn.rx_seq;
            return Err(CloseReason::Gap {
                expected: conn.rx_seq,
                got: seq,
            });
        }
        conn.rx_seq += 1;
        conn.last_rx = now;
        self.stats.frames_received += 1;
        if frame.kind() == kind::HELLO {
            return Err(self.violation(Violation::UnexpectedHello));
        }
        let msg = Message::decode(frame.kind(), frame.payload()).map_err(|e| self.reject(e))?;
        if conn.phase == Phase::AwaitConfirm {
            self.on_established(conn, out)?;
        }
        if Message::is_ack_eliciting(frame.kind()) {
            conn.ack_due = true;
        }
        self.on_message(conn, now, msg, out)
    }

    fn on_hello(
        &mut self,
        conn: &mut Conn,
        now: Time,
        frame: &Frame<&[u8]>,
        out: &mut Vec<Action>,
    ) -> Flow {
        if frame.kind() != kind::HELLO {
            return Err(self.violation(Violation::ExpectedHello { kind: frame.kind() }));
        }
        if let Err(error) = frame.verify(&self.hello_key) {
            self.stats.handshake_failures += 1;
            return Err(self.reject(error));
        }
        if frame.seq() != 0 {
            return Err(self.violation(Violation::HelloSequence { seq: frame.seq() }));
        }
        let hello = match Message::decode(frame.kind(), frame.payload()) {
            Ok(Message::Hello(h)) => h,
            Ok(_) => return Err(self.violation(Violation::UnexpectedHello)),
            Err(e) => return Err(self.reject(e)),
        };
        if hello.nonce == conn.our_nonce {
            return Err(self.violation(Violation::ReflectedHello));
        }
        if hello.node_id == self.config.node_id {
            return Err(self.violation(Violation::SelfConnection));
        }
        if hello.max_payload < MIN_MAX_PAYLOAD {
            return Err(self.violation(Violation::PeerMaxPayload {
                max: hello.max_payload,
            }));
        }
        self.stats.frames_received += 1;
        conn.last_rx = now;
        conn.rx_seq = 1;
        conn.send_max = conn.send_max.min(hello.max_payload as usize);
        conn.tx_key = Some(self.config.key.frame_key(&conn.our_nonce, &hello.nonce));
        conn.rx_key = Some(self.config.key.frame_key(&hello.nonce, &conn.our_nonce));
        conn.peer = Some(PeerInfo {
            node_id: hello.node_id,
            role: hello.role,
        });
        conn.phase = Phase::AwaitConfirm;
        // Key confirmation: our first frame under the session key.
        self.send_control(conn, now, &Message::Heartbeat, out)
    }

    fn on_established(&mut self, conn: &mut Conn, out: &mut Vec<Action>) -> Flow {
        conn.phase = Phase::Established;
        self.stats.established += 1;
        let (peer, peer_role) = conn
            .peer
            .as_ref()
            .map(|p| (p.node_id.clone(), p.role))
            .unwrap_or((String::new(), Role::Backup));
        out.push(Action::Notice {
            notice: Notice::Established { peer, peer_role },
        });
        // A role change during the handshake is announced by `flush`.
        if self.role == Role::Master {
            self.plan_full_resync(conn, out);
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        conn: &mut Conn,
        now: Time,
        msg: Message,
        out: &mut Vec<Action>,
    ) -> Flow {
        match msg {
            Message::Hello(_) => Err(self.violation(Violation::UnexpectedHello)),
            Message::Heartbeat => {
                self.stats.heartbeats_received += 1;
                Ok(())
            }
            Message::Ack { seq } => self.on_ack(conn, now, seq),
            Message::Upsert { entries } => {
                self.on_upserts(conn, now, entries, out);
                Ok(())
            }
            Message::Delete { keys } => {
                self.on_deletes(conn, keys, out);
                Ok(())
            }
            Message::BulkStart { generation, scope } => {
                if conn.bulk_in.is_some() {
                    return Err(self.violation(Violation::NestedBulk { generation }));
                }
                let epoch = self.next_epoch();
                conn.bulk_in = Some(BulkIn {
                    generation,
                    scope,
                    epoch,
                });
                Ok(())
            }
            Message::BulkEnd {
                generation,
                count: _,
                digest,
            } => self.on_bulk_end(conn, now, generation, digest, out),
            Message::DigestRequest { id } => {
                if conn.bulk_out.is_some() {
                    // Our set is being rebuilt: answer once the bulk ends.
                    conn.deferred_digest = Some(id);
                    Ok(())
                } else {
                    let digest = self.table.digest().clone();
                    self.send_control(conn, now, &Message::Digest { id, digest }, out)
                }
            }
            Message::Digest { id, digest } => self.on_digest(conn, now, id, &digest, out),
            Message::ResyncRequest { reason: _, scope } => {
                self.stats.resync_requests_received += 1;
                if self.role != Role::Master {
                    self.stats.resync_requests_ignored += 1;
                    return Ok(());
                }
                conn.plan.scope.union(&scope);
                let reason = if conn.plan.scope.is_full() {
                    DumpReason::FullResync
                } else {
                    DumpReason::PartialResync
                };
                self.request_dump(conn, reason, out);
                Ok(())
            }
            Message::Role { role, confirm } => {
                if let Some(p) = conn.peer.as_mut() {
                    p.role = role;
                }
                if confirm {
                    conn.role_reply_due = true;
                }
                out.push(Action::Notice {
                    notice: Notice::PeerRole { role },
                });
                if role == Role::Backup && conn.takeover.is_some() {
                    // Everything the old master queued is in.
                    self.end_takeover(conn, out);
                }
                Ok(())
            }
            Message::Goodbye { reason } => Err(CloseReason::PeerGoodbye { goodbye: reason }),
        }
    }

    fn on_ack(&mut self, conn: &mut Conn, now: Time, seq: u64) -> Flow {
        if seq < conn.acked || seq >= conn.tx_seq {
            return Err(self.violation(Violation::BadAck {
                ack: seq,
                last_acked: conn.acked,
                next: conn.tx_seq,
            }));
        }
        self.stats.acks_received += 1;
        conn.acked = seq;
        while conn.unacked.front().is_some_and(|f| f.seq <= seq) {
            let Some(f) = conn.unacked.pop_front() else {
                break;
            };
            conn.unacked_bytes = conn.unacked_bytes.saturating_sub(f.len);
            let lag = u64::try_from((now - f.queued_at).as_millis()).unwrap_or(u64::MAX);
            self.stats.lag.record(lag);
            self.stats.max_lag_ms = self.stats.max_lag_ms.max(lag);
        }
        Ok(())
    }

    fn on_upserts(
        &mut self,
        conn: &mut Conn,
        now: Time,
        entries: Vec<Entry>,
        out: &mut Vec<Action>,
    ) {
        let mut entries = entries;
        self.stats.upserts_received += count(entries.len());
        if let Some(t) = &conn.takeover {
            let before = entries.len();
            entries.retain(|e| !t.touched.contains(&e.key()));
            self.stats.superseded += count(before - entries.len());
        }
        let n = count(entries.len());
        let mark = conn.bulk_in.map(|b| (b.scope, b.epoch));
        for e in &entries {
            let key = e.key();
            let Some(hash) = content_hash(e) else {
                continue;
            };
            // The peer's state is newer than a change of ours still
            // waiting (we are an old master draining after a role swap).
            self.pending.cancel(&key);
            match self.table.upsert(key, hash, now + secs(e.timeout), mark) {
                Some(true) => self.stats.created += 1,
                Some(false) => self.stats.updated += 1,
                None => {}
            }
        }
        self.stats.upserts_applied += n;
        if !entries.is_empty() {
            out.push(Action::ApplyUpserts { entries });
        }
    }

    fn on_deletes(&mut self, conn: &Conn, keys: Vec<Key>, out: &mut Vec<Action>) {
        let mut keys = keys;
        self.stats.deletes_received += count(keys.len());
        if let Some(t) = &conn.takeover {
            let before = keys.len();
            keys.retain(|k| !t.touched.contains(k));
            self.stats.superseded += count(before - keys.len());
        }
        let n = count(keys.len());
        for k in &keys {
            self.pending.cancel(k);
            if self.table.remove(k) {
                self.stats.destroyed += 1;
            } else {
                self.stats.deletes_unknown += 1;
            }
        }
        self.stats.deletes_applied += n;
        if !keys.is_empty() {
            out.push(Action::ApplyDeletes { keys });
        }
    }

    fn on_bulk_end(
        &mut self,
        conn: &mut Conn,
        now: Time,
        generation: u32,
        digest: u64,
        out: &mut Vec<Action>,
    ) -> Flow {
        let Some(bulk) = conn.bulk_in.filter(|b| b.generation == generation) else {
            return Err(self.violation(Violation::BulkEnd { generation }));
        };
        conn.bulk_in = None;
        let full = bulk.scope.is_full();
        let stale = self.table.sweep_bulk(&bulk.scope, bulk.epoch);
        let removed = count(stale.len());
        if self.role == Role::Backup {
            if !stale.is_empty() {
                self.stats.bulk_removed += removed;
                self.stats.deletes_applied += removed;
                out.push(Action::ApplyDeletes { keys: stale });
            }
        } else if !stale.is_empty() {
            out.push(Action::Notice {
                notice: Notice::BulkCleanupSkipped {
                    generation,
                    would_remove: removed,
                },
            });
        }
        if full {
            self.stats.bulk_received += 1;
        } else {
            self.stats.partial_bulk_received += 1;
        }
        self.mark_in_sync(conn, now);
        let digest_ok = self.table.digest().fold(&bulk.scope) == digest;
        out.push(Action::Notice {
            notice: Notice::BulkReceived {
                generation,
                removed: if self.role == Role::Backup {
                    removed
                } else {
                    0
                },
                digest_ok,
            },
        });
        if !digest_ok {
            self.stats.digest_mismatches += 1;
            self.send_digest_request(conn, now, out)?;
        }
        if full || conn.plan.reason.is_some() {
            // Compare our kernel with what we now hold at once: as backup
            // this removes what a restart or our own time as master left
            // behind; as master it sends the peer what it lacks. (Or: a
            // dump asked for during the bulk.)
            self.request_dump(conn, DumpReason::Reconcile, out);
        }
        Ok(())
    }

    fn on_digest(
        &mut self,
        conn: &mut Conn,
        now: Time,
        id: u32,
        digest: &Digest,
        out: &mut Vec<Action>,
    ) -> Flow {
        if conn.digest_outstanding != Some(id) {
            return Ok(());
        }
        conn.digest_outstanding = None;
        // Only comparable when neither side is rebuilding, we hold back no
        // change and sent none after the request (the peer's digest does
        // not include it, our set does).
        if !conn.in_sync
            || conn.bulk_in.is_some()
            || conn.bulk_out.is_some()
            || !self.pending.is_empty()
            || conn.data_seq > conn.digest_request_seq
        {
            return Ok(());
        }
        let diff = self.table.digest().diff(digest);
        if diff.is_empty() {
            self.stats.digest_matches += 1;
            return Ok(());
        }
        self.stats.digest_mismatches += 1;
        out.push(Action::Notice {
            notice: Notice::DigestMismatch {
                buckets: u16::try_from(diff.count()).unwrap_or(u16::MAX),
            },
        });
        match self.role {
            // We are the source: send those buckets again.
            Role::Master => {
                conn.plan.scope.union(&diff);
                self.request_dump(conn, DumpReason::PartialResync, out);
                Ok(())
            }
            Role::Backup => {
                self.send_resync_request(conn, now, ResyncReason::DigestMismatch, diff, out)
            }
        }
    }

    fn send_resync_request(
        &mut self,
        conn: &mut Conn,
        now: Time,
        reason: ResyncReason,
        scope: Scope,
        out: &mut Vec<Action>,
    ) -> Flow {
        self.stats.resync_requests_sent += 1;
        self.send_control(conn, now, &Message::ResyncRequest { reason, scope }, out)
    }

    fn send_digest_request(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        let id = conn.next_digest_id;
        conn.next_digest_id = id.wrapping_add(1);
        conn.digest_outstanding = Some(id);
        conn.digest_request_seq = conn.tx_seq;
        conn.digest_at = Some(now + self.config.timers.digest_interval);
        self.stats.digest_requests_sent += 1;
        self.send_control(conn, now, &Message::DigestRequest { id }, out)
    }

    fn mark_in_sync(&mut self, conn: &mut Conn, now: Time) {
        conn.in_sync = true;
        let t = self.config.timers;
        conn.reconcile_at.get_or_insert(now + t.reconcile_interval);
        conn.digest_at.get_or_insert(now + t.digest_interval);
    }

    fn next_epoch(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.epoch = 1;
        }
        self.epoch
    }

    // ---- timers --------------------------------------------------------

    fn digest_due(&self, conn: &Conn) -> bool {
        self.role == Role::Backup && conn.in_sync && conn.bulk_in.is_none()
    }

    fn on_timer(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        let t = self.config.timers;
        if conn.phase != Phase::Established && now >= conn.connected_at + t.handshake_timeout {
            return Err(CloseReason::HandshakeTimeout);
        }
        if now >= conn.last_rx + t.dead_interval {
            return Err(CloseReason::PeerTimeout);
        }
        if conn.phase != Phase::Established {
            return Ok(());
        }
        if now >= conn.last_tx + t.heartbeat_interval {
            self.send_control(conn, now, &Message::Heartbeat, out)?;
        }
        if self.digest_due(conn) && conn.digest_at.is_some_and(|d| now >= d) {
            self.send_digest_request(conn, now, out)?;
        }
        if conn.in_sync && conn.reconcile_at.is_some_and(|d| now >= d) {
            conn.reconcile_at = Some(now + t.reconcile_interval);
            self.request_dump(conn, DumpReason::Reconcile, out);
        }
        if conn.dump_retry_at.is_some_and(|d| now >= d) {
            conn.dump_retry_at = None;
            let reason = conn.plan.reason.unwrap_or(DumpReason::Reconcile);
            self.request_dump(conn, reason, out);
        }
        if conn
            .takeover
            .as_ref()
            .is_some_and(|tk| now >= tk.since + t.dead_interval)
        {
            // The peer never stepped down (two masters): go ahead.
            self.end_takeover(conn, out);
        }
        Ok(())
    }

    // ---- dumps ---------------------------------------------------------

    fn plan_full_resync(&mut self, conn: &mut Conn, out: &mut Vec<Action>) {
        conn.plan.scope = Scope::ALL;
        self.request_dump(conn, DumpReason::FullResync, out);
    }

    /// Ask the driver for a dump unless one for this connection is on its
    /// way (it will serve), a bulk is running (asked again at its end) or
    /// we are a new master waiting for the old one to drain (asked when it
    /// has).
    fn request_dump(&mut self, conn: &mut Conn, reason: DumpReason, out: &mut Vec<Action>) {
        let reason = *conn.plan.reason.get_or_insert(reason);
        if conn.bulk_out.is_some()
            || conn.takeover.is_some()
            || self.dumps_in_flight.contains(&conn.id)
        {
            return;
        }
        if self.dumps_in_flight.len() >= MAX_DUMPS_IN_FLIGHT {
            self.dumps_in_flight.pop_front();
        }
        self.dumps_in_flight.push_back(conn.id);
        conn.dump_retry_at = None;
        conn.since_dump.get_or_insert_with(HashMap::new);
        self.stats.dumps_requested += 1;
        out.push(Action::RequestDump { reason });
    }

    fn on_dump_failed(&mut self, now: Time) {
        self.stats.dump_failures += 1;
        let for_conn = self.dumps_in_flight.pop_front();
        if let Some(c) = self.conn.as_mut() {
            if for_conn.is_none_or(|id| id == c.id) {
                c.dump_retry_at = Some(now + self.config.timers.dump_retry);
            }
        }
    }

    fn on_dump(&mut self, now: Time, entries: Vec<Entry>, out: &mut Vec<Action>) {
        self.stats.dumps_received += 1;
        let for_conn = self.dumps_in_flight.pop_front();
        // Not while a bulk runs (one dump at a time), nor while a new master
        // waits for the old one to drain (it would act on a set that is
        // about to change): both ask again when they end.
        let current = self
            .conn
            .as_ref()
            .filter(|c| {
                c.phase == Phase::Established && c.bulk_out.is_none() && c.takeover.is_none()
            })
            .map(|c| c.id);
        // A dump asked for an earlier connection predates events we did not
        // queue (they were dropped while the link was down): useless.
        match (current, for_conn) {
            (Some(cur), Some(asked)) if cur == asked => {}
            (Some(_), None) => {}
            _ => {
                self.stats.dumps_discarded += 1;
                // Nothing is waiting for a dump any more: stop recording
                // (the next request starts afresh).
                let ids = &self.dumps_in_flight;
                if let Some(c) = self.conn.as_mut().filter(|c| !ids.contains(&c.id)) {
                    c.since_dump = None;
                }
                return;
            }
        }
        self.with_conn(now, out, |s, c, out| match s.role {
            Role::Master => s.master_dump(c, now, entries, out),
            Role::Backup => s.backup_dump(c, now, entries, out),
        });
    }

    /// Master: entries in the planned scope become a bulk; the rest is
    /// compared with the replicated set and only differences are queued.
    fn master_dump(
        &mut self,
        conn: &mut Conn,
        now: Time,
        mut entries: Vec<Entry>,
        out: &mut Vec<Action>,
    ) -> Flow {
        let plan = std::mem::take(&mut conn.plan);
        let scope = plan.scope;
        if let Some(newer) = conn.since_dump.take().filter(|m| !m.is_empty()) {
            entries.retain(|e| !newer.contains_key(&e.key()));
            entries.extend(newer.into_values().flatten());
        }
        let before = entries.len();
        entries.retain(|e| e.validate().is_ok());
        self.stats.dump_invalid += count(before - entries.len());
        if scope.is_full() {
            return self.start_bulk(conn, now, scope, entries, out);
        }
        let epoch = self.next_epoch();
        let mut bulk = Vec::new();
        for e in entries {
            let key = e.key();
            let (Some(kh), Some(hash)) = (key_hash(&key), content_hash(&e)) else {
                continue;
            };
            if scope.contains(bucket_of(kh)) {
                bulk.push(e);
                continue;
            }
            let slot = self.table.mark_dump(&key, epoch);
            if self.pending.has(&key) {
                // A queued event is at least as new as the dump.
                continue;
            }
            match slot {
                Some(s) if s.hash == hash => {
                    if self.needs_refresh(&s, &e, now) {
                        self.stats.refreshes += 1;
                        self.pending.upsert(key, e, hash, now);
                    }
                }
                _ => {
                    self.stats.reconcile_upserts += 1;
                    self.pending.upsert(key, e, hash, now);
                }
            }
        }
        for (key, _) in self.table.not_in_dump(epoch, &scope) {
            if !self.pending.has(&key) {
                self.stats.reconcile_deletes += 1;
                self.pending.delete(key, now);
            }
        }
        if scope.is_empty() {
            Ok(())
        } else {
            self.start_bulk(conn, now, scope, bulk, out)
        }
    }

    /// Whether the peer's copy of an unchanged entry needs its timeout
    /// refreshed: it would expire before our next look, and ours lasts
    /// longer.
    fn needs_refresh(&self, slot: &Slot, e: &Entry, now: Time) -> bool {
        slot.expires < now + self.config.refresh_margin() && now + secs(e.timeout) > slot.expires
    }

    fn start_bulk(
        &mut self,
        conn: &mut Conn,
        now: Time,
        scope: Scope,
        entries: Vec<Entry>,
        out: &mut Vec<Action>,
    ) -> Flow {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let full = scope.is_full();
        if full {
            self.stats.bulk_sent += 1;
        } else {
            self.stats.partial_bulk_sent += 1;
        }
        // The receiver's copy of these buckets is unknown until BulkEnd.
        self.table.clear_scope(&scope);
        out.push(Action::Notice {
            notice: Notice::BulkStarted {
                generation,
                entries: count(entries.len()),
                full,
            },
        });
        conn.data_seq = conn.tx_seq;
        self.send_control(conn, now, &Message::BulkStart { generation, scope }, out)?;
        conn.bulk_out = Some(BulkOut {
            generation,
            scope,
            entries,
            cursor: 0,
            sent: 0,
            touched: HashSet::new(),
            dumped_at: now,
        });
        Ok(())
    }

    /// Backup: remove kernel entries the master never sent, ask again for
    /// held entries the kernel lost or holds differently.
    fn backup_dump(
        &mut self,
        conn: &mut Conn,
        now: Time,
        entries: Vec<Entry>,
        out: &mut Vec<Action>,
    ) -> Flow {
        conn.plan = DumpPlan::default();
        conn.since_dump = None;
        if !conn.in_sync || conn.bulk_in.is_some() {
            // Without a complete picture from the master, delete nothing.
            self.stats.dumps_discarded += 1;
            return Ok(());
        }
        let epoch = self.next_epoch();
        let mut stale = Vec::new();
        let mut scope = Scope::NONE;
        let mut different = 0u64;
        for e in &entries {
            let Some(hash) = e.validate().ok().and_then(|()| content_hash(e)) else {
                self.stats.dump_invalid += 1;
                continue;
            };
            let key = e.key();
            match self.table.mark_dump(&key, epoch) {
                None => stale.push(key),
                Some(slot) if slot.hash != hash => {
                    different += 1;
                    scope.insert(slot.bucket);
                }
                Some(_) => {}
            }
        }
        if !stale.is_empty() {
            let n = count(stale.len());
            self.stats.stale_removed += n;
            self.stats.deletes_applied += n;
            out.push(Action::Notice {
                notice: Notice::StaleRemoved { entries: n },
            });
            out.push(Action::ApplyDeletes { keys: stale });
        }
        let missing = self.table.not_in_dump(epoch, &Scope::NONE);
        for (_, bucket) in &missing {
            scope.insert(*bucket);
        }
        if !scope.is_empty() {
            let missing = count(missing.len());
            self.stats.missing_in_kernel += missing;
            self.stats.different_in_kernel += different;
            out.push(Action::Notice {
                notice: Notice::KernelDiffers { missing, different },
            });
            self.send_resync_request(conn, now, ResyncReason::KernelDiffers, scope, out)?;
        }
        Ok(())
    }

    // ---- local events --------------------------------------------------

    fn on_events(&mut self, now: Time, events: Vec<Event>, out: &mut Vec<Action>) {
        for ev in &events {
            match ev {
                Event::New(_) => self.stats.events_new += 1,
                Event::Update(_) => self.stats.events_update += 1,
                Event::Destroy(_) => self.stats.events_destroy += 1,
            }
        }
        let n = count(events.len());
        if self.role != Role::Master {
            self.stats.events_ignored += n;
            return;
        }
        if self.link() != LinkState::Established {
            self.stats.events_unsent += n;
            return;
        }
        self.with_conn(now, out, |s, c, _| {
            for ev in events {
                match ev {
                    Event::New(e) | Event::Update(e) => s.enqueue_upsert(c, now, e),
                    Event::Destroy(k) => s.enqueue_delete(c, now, k),
                }
            }
            Ok(())
        });
    }

    /// Note that `key` saw an event during a running bulk, so its dumped
    /// state (older) is not sent.
    fn touch_bulk(conn: &mut Conn, key: &Key) {
        if let Some(b) = conn.bulk_out.as_mut() {
            if let Some(kh) = key_hash(key) {
                if b.scope.contains(bucket_of(kh)) {
                    b.touched.insert(*key);
                }
            }
        }
    }

    fn enqueue_upsert(&mut self, conn: &mut Conn, now: Time, e: Entry) {
        let Some(hash) = e.validate().ok().and_then(|()| content_hash(&e)) else {
            self.stats.events_invalid += 1;
            return;
        };
        let key = e.key();
        Self::touch_bulk(conn, &key);
        if let Some(m) = conn.since_dump.as_mut() {
            m.insert(key, Some(e));
        }
        let unchanged = self
            .table
            .get(&key)
            .is_some_and(|s| s.hash == hash && !self.needs_refresh(s, &e, now));
        if unchanged {
            // Nothing new: often the echo of a write of ours.
            self.pending.cancel(&key);
            self.stats.events_deduplicated += 1;
            return;
        }
        if let Some(t) = conn.takeover.as_mut() {
            t.touched.insert(key);
        }
        if self.pending.upsert(key, e, hash, now) {
            self.stats.events_coalesced += 1;
        }
    }

    fn enqueue_delete(&mut self, conn: &mut Conn, now: Time, key: Key) {
        if key.family().is_err() {
            self.stats.events_invalid += 1;
            return;
        }
        Self::touch_bulk(conn, &key);
        if let Some(m) = conn.since_dump.as_mut() {
            m.insert(key, None);
        }
        if !self.table.contains(&key) {
            // The peer never got it: cancelling a waiting upsert is all.
            if self.pending.cancel(&key) {
                self.stats.events_coalesced += 1;
            } else {
                self.stats.events_deduplicated += 1;
            }
        } else {
            if let Some(t) = conn.takeover.as_mut() {
                t.touched.insert(key);
            }
            if self.pending.delete(key, now) {
                self.stats.events_coalesced += 1;
            }
        }
    }

    // ---- sending -------------------------------------------------------

    fn window_open(&self, conn: &Conn) -> bool {
        let l = &self.config.limits;
        conn.unacked_bytes < l.window_bytes && conn.driver_queued <= l.driver_queue_bytes
    }

    /// Fill the window: waiting changes first (they are the newest), then
    /// the running bulk, then its BulkEnd.
    fn flush(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        if conn.phase != Phase::Established {
            return Ok(());
        }
        self.fill_window(conn, now, out)?;
        // A role change is announced once everything queued under the old
        // role is sent: for a master stepping down, the Role frame marks
        // the end of its stream of changes (the new master waits for it).
        if conn.verify_due
            && self.role == Role::Master
            && self.pending.is_empty()
            && conn.bulk_out.is_none()
            && conn.plan.reason.is_none()
            && !self.dumps_in_flight.contains(&conn.id)
        {
            // Our first reconciliation as new master is out: do both sets
            // agree now?
            conn.verify_due = false;
            self.send_digest_request(conn, now, out)?;
        }
        let changed = conn.announced_role != self.role;
        if (changed || conn.role_reply_due) && self.pending.is_empty() && conn.bulk_out.is_none() {
            // A new master asks for the peer's drain marker.
            let confirm = changed && self.role == Role::Master;
            conn.announced_role = self.role;
            conn.role_reply_due = false;
            self.send_control(
                conn,
                now,
                &Message::Role {
                    role: self.role,
                    confirm,
                },
                out,
            )?;
        }
        Ok(())
    }

    fn fill_window(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        while self.window_open(conn) {
            match self.pending.front_kind() {
                Some(OpKind::Upsert) => {
                    self.send_pending_upserts(conn, now, out)?;
                    continue;
                }
                Some(OpKind::Delete) => {
                    self.send_pending_deletes(conn, now, out)?;
                    continue;
                }
                None => {}
            }
            let Some(mut bulk) = conn.bulk_out.take() else {
                break;
            };
            if bulk.cursor < bulk.entries.len() {
                self.send_bulk_frame(conn, &mut bulk, now, out)?;
                conn.bulk_out = Some(bulk);
            } else {
                self.finish_bulk(conn, bulk, now, out)?;
            }
        }
        Ok(())
    }

    fn send_pending_upserts(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        let mut batch = UpsertBatch::new(conn.send_max);
        let mut oldest = now;
        while batch.payload_len() + MAX_ENTRY_LEN <= conn.send_max
            && self.pending.front_kind() == Some(OpKind::Upsert)
        {
            let Some((key, Op::Upsert { entry, hash }, queued_at)) = self.pending.pop() else {
                break;
            };
            batch
                .push(&entry)
                .map_err(|error| CloseReason::Internal { error })?;
            self.table
                .upsert(key, hash, now + secs(entry.timeout), None);
            oldest = oldest.min(queued_at);
            self.stats.upserts_sent += 1;
        }
        let Some(key) = conn.tx_key.as_ref() else {
            return Ok(());
        };
        let bytes = batch
            .seal(conn.tx_seq, key)
            .map_err(|error| CloseReason::Internal { error })?;
        conn.data_seq = conn.tx_seq;
        self.push_frame(conn, now, bytes, true, oldest, out);
        Ok(())
    }

    fn send_pending_deletes(&mut self, conn: &mut Conn, now: Time, out: &mut Vec<Action>) -> Flow {
        let mut batch = DeleteBatch::new(conn.send_max);
        let mut oldest = now;
        while batch.payload_len() + MAX_KEY_LEN <= conn.send_max
            && self.pending.front_kind() == Some(OpKind::Delete)
        {
            let Some((key, Op::Delete, queued_at)) = self.pending.pop() else {
                break;
            };
            batch
                .push(&key)
                .map_err(|error| CloseReason::Internal { error })?;
            self.table.remove(&key);
            oldest = oldest.min(queued_at);
            self.stats.deletes_sent += 1;
        }
        let Some(key) = conn.tx_key.as_ref() else {
            return Ok(());
        };
        let bytes = batch
            .seal(conn.tx_seq, key)
            .map_err(|error| CloseReason::Internal { error })?;
        conn.data_seq = conn.tx_seq;
        self.push_frame(conn, now, bytes, true, oldest, out);
        Ok(())
    }

    fn send_bulk_frame(
        &mut self,
        conn: &mut Conn,
        bulk: &mut BulkOut,
        now: Time,
        out: &mut Vec<Action>,
    ) -> Flow {
        let mut batch = UpsertBatch::new(conn.send_max);
        let partial = !bulk.scope.is_full();
        while batch.payload_len() + MAX_ENTRY_LEN <= conn.send_max {
            let Some(e) = bulk.entries.get(bulk.cursor).copied() else {
                break;
            };
            bulk.cursor += 1;
            let key = e.key();
            if bulk.touched.contains(&key) {
                continue;
            }
            let Some(hash) = content_hash(&e) else {
                continue;
            };
            batch
                .push(&e)
                .map_err(|error| CloseReason::Internal { error })?;
            self.table.upsert(key, hash, now + secs(e.timeout), None);
            bulk.sent = bulk.sent.saturating_add(1);
            self.stats.upserts_sent += 1;
            self.stats.bulk_entries_sent += 1;
            if partial {
                self.stats.resent += 1;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let Some(key) = conn.tx_key.as_ref() else {
            return Ok(());
        };
        let bytes = batch
            .seal(conn.tx_seq, key)
            .map_err(|error| CloseReason::Internal { error })?;
        conn.data_seq = conn.tx_seq;
        self.push_frame(conn, now, bytes, true, bulk.dumped_at, out);
        Ok(())
    }

    fn finish_bulk(
        &mut self,
        conn: &mut Conn,
        bulk: BulkOut,
        now: Time,
        out: &mut Vec<Action>,
    ) -> Flow {
        let digest = self.table.digest().fold(&bulk.scope);
        conn.data_seq = conn.tx_seq;
        self.send_control(
            conn,
            now,
            &Message::BulkEnd {
                generation: bulk.generation,
                count: bulk.sent,
                digest,
            },
            out,
        )?;
        out.push(Action::Notice {
            notice: Notice::BulkSent {
                generation: bulk.generation,
                entries: bulk.sent,
            },
        });
        self.mark_in_sync(conn, now);
        if let Some(id) = conn.deferred_digest.take() {
            let digest = self.table.digest().clone();
            self.send_control(conn, now, &Message::Digest { id, digest }, out)?;
        }
        // Requests that came in during the bulk.
        if let Some(reason) = conn.plan.reason {
            self.request_dump(conn, reason, out);
        }
        Ok(())
    }

    // ---- roles ---------------------------------------------------------

    fn on_role(&mut self, now: Time, role: Role, out: &mut Vec<Action>) {
        if role == self.role {
            return;
        }
        self.stats.role_changes += 1;
        self.role = role;
        self.with_conn(now, out, |s, c, _| {
            if c.phase != Phase::Established {
                // Announced at the end of the handshake.
                return Ok(());
            }
            match role {
                Role::Master => {
                    // The old master may still be sending what it queued
                    // (our picture of its role may be stale too): anything
                    // we decide from our set now could cross it. Our
                    // Role{Master, confirm} makes it answer once drained;
                    // wait for a Role{Backup}.
                    c.takeover = Some(Takeover {
                        since: now,
                        touched: HashSet::new(),
                    });
                }
                Role::Backup => {
                    c.takeover = None;
                    if c.in_sync {
                        c.digest_at
                            .get_or_insert(now + s.config.timers.digest_interval);
                    }
                }
            }
            Ok(())
        });
    }

    /// As new master, with the old master's stream complete: resync if no
    /// bulk ever completed on this connection, otherwise send what our
    /// kernel has beyond the replicated set.
    fn end_takeover(&mut self, conn: &mut Conn, out: &mut Vec<Action>) {
        conn.takeover = None;
        if self.role != Role::Master || conn.bulk_in.is_some() {
            // A running bulk from the peer ends with a reconcile anyway;
            // a dump asked for meanwhile waits for that.
            return;
        }
        if conn.in_sync {
            self.request_dump(conn, DumpReason::RoleChange, out);
            conn.verify_due = true;
        } else {
            self.plan_full_resync(conn, out);
        }
    }
}
