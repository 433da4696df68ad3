//! The tokio driver of one [`ctsync::Session`]: the TCP connection to the
//! peer, the clock, and two blocking threads for the kernel.
//!
//! ```text
//!  thread "ctsync" (current-thread runtime, like VRRP: a slow control
//!  request or nft dump elsewhere in the daemon never delays a heartbeat)
//!   └─ run(): one loop, one owner of the Session
//!        listener on [ctsync] local ── accept: source IP must be peer's
//!        dialer (lower address only) ── connect from local's IP, backoff
//!        socket: read -> BytesReceived; write queue -> Writable
//!        next_deadline() -> Timer
//!        commands: RoleChanged, barrier, status, shutdown
//!  thread "ctsync-apply"   owns the ConntrackTable: ApplyUpserts,
//!                          ApplyDeletes, RequestDump, and the loosening
//!                          on becoming backup, strictly in order
//!  thread "ctsync-events"  owns the EventSource: LocalEvents, EventOverrun
//! ```
//!
//! The subscription follows the role: a master joins the kernel's event
//! groups before its session hears `RoleChanged(Master)`, a backup leaves
//! them (it would only read the echoes of its own writes; see
//! [`Subscription`]). Whatever changed in the kernel while a new master
//! was not listening is covered by the dump it makes at the switch
//! (`ctsync::session`, "Roles").
//!
//! ## Who dials
//!
//! Both sides listen on `local`. Only the side whose `local` address sorts
//! lower (IP, then port: `SocketAddr`'s order, which the pair computes the
//! same way because one's `local` is the other's `peer`) dials, from
//! `local`'s IP so that the listener's source check passes; it retries
//! with a doubling backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], reset
//! once a handshake completes. One dialer means two boxes never race two
//! connections against each other. An accepted connection from any other
//! IP is refused (`refused_connections`) before a byte is read.
//!
//! An accepted connection first waits (at most [`CANDIDATE_TIMEOUT`]) for
//! its first frame, the dialer's Hello, which the dialer sends at once.
//! With no connection up it then goes to the session as it is (the
//! session judges and counts it). With one up, it replaces it (the peer
//! restarted, or its side of the old one is dead and ours has not
//! noticed yet; the session closes the old one with `Replaced`) only if
//! the Hello carries a valid MAC under the pair's key and a nonce not seen
//! before ([`SEEN_NONCES`] remembered): anyone else on the peer's
//! address, forging or replaying a Hello, is refused
//! (`refused_replacements`) and the live session goes on untouched.
//!
//! ## "Acked means written"
//!
//! The session's actions are applied in order (`ctsync::Action`): an
//! `ApplyUpserts` followed by the `Send` of an Ack must not put the Ack on
//! the wire before the kernel has the entries. Writes are handed to the
//! apply thread without waiting (the socket keeps being read); every
//! queued frame carries the number of the last write job issued before
//! it, and the writer holds the queue's head until the apply thread has
//! finished that job. Dumps do not raise that number: a frame never waits
//! for a dump it does not depend on.
//!
//! ## Barrier (VRRP ordering)
//!
//! [`Command::Barrier`]: read everything the socket holds now, feed it to
//! the session, and answer once every write job issued so far is done.
//! The caller (the VRRP executor, before it adds VIPs) bounds the wait
//! (`super::BARRIER_TIMEOUT`).
//!
//! ## Bounded memory
//!
//! The session stops producing data frames while the queue holds more
//! than `Limits::driver_queue_bytes` (reported with `Input::Writable`);
//! control frames (acks, heartbeats) still flow. A queue above
//! [`MAX_QUEUE_BYTES`] means the peer stopped reading altogether: the
//! connection is dropped (`queue_overflows`) and the next one resyncs.
//! Event batches wait in a channel of [`EVENT_BATCHES`]; beyond that the
//! event thread blocks and the kernel's socket overruns, which the
//! session repairs with a dump (`EventOverrun`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctsync::session::{CloseReason, DumpReason, Notice};
use ctsync::wire::Nonce;
use ctsync::{Action, Entry, Input, Key, Role, Session, Time};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::table::{Applied, ConntrackTable, EventSource, SourceBatch, Subscription};

/// First reconnect delay of the dialing side.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Reconnect delays double up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A dial that has not connected by then is abandoned (and retried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Hard cap of the write queue (the session's soft limit is 1 MiB).
pub const MAX_QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Event batches waiting for the session before the event thread blocks.
pub const EVENT_BATCHES: usize = 64;
/// How long a closing connection may take to flush (a Goodbye).
pub const LINGER: Duration = Duration::from_millis(500);
/// Bytes read per wake-up before other work gets a turn.
const READ_BUDGET: usize = 1024 * 1024;

/// What the daemon asks of a running driver.
#[derive(Debug)]
pub enum Command {
    /// VRRP changed this box's role.
    Role(Role),
    /// Answer once everything received so far is in the kernel table.
    /// The answer says whether it had to wait for writes.
    Barrier(oneshot::Sender<bool>),
    Status(oneshot::Sender<SyncStatus>),
    /// Say Goodbye, close, stop the threads; answered when done.
    Shutdown(oneshot::Sender<()>),
}

/// The driver's own counters (the session counts the protocol).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverStats {
    /// Connections accepted from an address that is not `peer`.
    pub refused_connections: u64,
    pub accepted: u64,
    pub dials: u64,
    pub dial_failures: u64,
    /// Binding `local` failed (retried).
    pub bind_failures: u64,
    /// Connections from the peer's address that would have replaced the
    /// live one without a fresh, authentic Hello (module doc).
    pub refused_replacements: u64,
    /// Connections dropped because the peer stopped reading.
    pub queue_overflows: u64,
    /// Socket read/write errors that ended a connection.
    pub io_errors: u64,
    /// Bytes queued and not yet written, now.
    pub queued_bytes: u64,
    /// Write jobs (upsert/delete batches) handed to the apply thread and
    /// not finished, now.
    pub apply_backlog: u64,
    pub upserts_written: u64,
    pub deletes_written: u64,
    /// Entries the kernel refused.
    pub apply_refused: u64,
    /// Errors of the event subscription.
    pub event_errors: u64,
    /// Whether this side is subscribed to its kernel's events now (a
    /// master is; a backup is not: see [`Subscription`]).
    pub events_subscribed: bool,
    pub barriers: u64,
    /// Barriers that had to wait for writes.
    pub barriers_waited: u64,
    /// Times the table was loosened (at start and on becoming backup),
    /// and TCP entries whose window tracking that turned off.
    pub loosenings: u64,
    pub entries_loosened: u64,
}

/// `directorctl sync`: the session's status plus the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Whether this side dials (the other listens).
    pub dials: bool,
    /// Remote address of the connection, while there is one.
    pub connected_to: Option<SocketAddr>,
    pub session: ctsync::Status,
    pub driver: DriverStats,
}

/// Everything the driver needs besides the kernel side.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub session: ctsync::Config,
}

/// What the first frame of an accepted connection says: `None` while it
/// is incomplete; the Hello's nonce if it is a Hello (sequence 0) with a
/// valid MAC under `hello_key` and a nonce not in `seen`; else why not.
fn first_frame_verdict(
    bytes: &[u8],
    hello_key: &ctsync::wire::MacKey,
    seen: &VecDeque<Nonce>,
) -> Option<Result<Nonce, &'static str>> {
    let header = match ctsync::wire::frame::parse_header(bytes, CANDIDATE_MAX_PAYLOAD) {
        Ok(h) => h,
        Err(ctsync::wire::DecodeError::Truncated { .. }) => return None,
        Err(_) => return Some(Err("not a ctsync frame, or larger than a Hello")),
    };
    let frame = bytes.get(..header.frame_len())?;
    Some(
        match ctsync::wire::decode_frame(frame, hello_key, CANDIDATE_MAX_PAYLOAD) {
            Ok((0, ctsync::wire::Message::Hello(h))) if seen.contains(&h.nonce) => {
                Err("a replayed Hello (its nonce was seen before)")
            }
            Ok((0, ctsync::wire::Message::Hello(h))) => Ok(h.nonce),
            Ok(_) => Err("the first frame is not a Hello"),
            Err(_) => Err("the Hello failed authentication"),
        },
    )
}

/// Whether the side with `local` dials `peer` (see the module docs).
pub fn dials(local: SocketAddr, peer: SocketAddr) -> bool {
    local < peer
}

enum Job {
    Upsert {
        id: u64,
        entries: Vec<Entry>,
    },
    Delete {
        id: u64,
        keys: Vec<Key>,
    },
    Dump {
        id: u64,
    },
    /// [`ConntrackTable::loosen`]: this box stopped forwarding.
    Loosen {
        id: u64,
        why: &'static str,
    },
}

enum Done {
    Write {
        id: u64,
        written: usize,
        refused: Vec<Key>,
        table_full: bool,
        upsert: bool,
    },
    Dump {
        id: u64,
        result: Result<Vec<Entry>, String>,
    },
    Loosen {
        id: u64,
        why: &'static str,
        result: Result<Applied, String>,
    },
}

enum EventMsg {
    Batch(SourceBatch),
    Error(String),
}

/// One queued frame: written once write job `gate` is done.
struct Queued {
    gate: u64,
    bytes: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    queue: VecDeque<Queued>,
    /// Bytes of the queue's head already written.
    head_written: usize,
    queued: usize,
}

type Dialing = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

enum Wake {
    Command(Option<Command>),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    CandidateReadable,
    CandidateExpired,
    Dialed(io::Result<TcpStream>),
    DialDue,
    BindDue,
    Readable,
    Writable,
    Timer,
    Done(Option<Done>),
    Event(Option<EventMsg>),
}

/// An accepted connection waiting for its first frame (module doc).
struct Candidate {
    stream: TcpStream,
    remote: SocketAddr,
    bytes: Vec<u8>,
    deadline: Instant,
}

/// How long an accepted connection may take to send its Hello.
pub const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest first frame read from a candidate: a Hello is under 128 bytes.
const CANDIDATE_MAX_PAYLOAD: u32 = 4096;
/// Hello nonces remembered against replays (the peer's, newest first).
pub const SEEN_NONCES: usize = 1024;

struct Driver {
    cfg: DriverConfig,
    /// The key of Hello frames, derived once from `cfg.session.key`.
    hello_key: ctsync::wire::MacKey,
    candidate: Option<Candidate>,
    seen_nonces: VecDeque<Nonce>,
    session: Session,
    epoch: Instant,
    dials: bool,
    listener: Option<TcpListener>,
    next_bind: Option<Instant>,
    conn: Option<Conn>,
    dialing: Option<Dialing>,
    next_dial: Option<Instant>,
    backoff: Duration,
    jobs: std::sync::mpsc::Sender<Job>,
    done: mpsc::UnboundedReceiver<Done>,
    events: mpsc::Receiver<EventMsg>,
    subscription: Arc<dyn Subscription>,
    /// Last job issued / finished (all kinds, FIFO), last write job issued.
    issued: u64,
    finished: u64,
    last_write: u64,
    write_jobs_open: u64,
    barriers: Vec<(u64, oneshot::Sender<bool>)>,
    stats: DriverStats,
    stop: Arc<AtomicBool>,
}

fn now_since(epoch: Instant) -> Time {
    Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// A fresh nonce from the OS RNG (getrandom(2)): one per connection.
fn fresh_nonce() -> Result<Nonce, String> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| format!("the OS random generator failed: {e}"))?;
    Ok(Nonce(n))
}

/// Runs a driver until [`Command::Shutdown`] (or every command sender is
/// gone). `table` and `events` move to threads of their own.
pub async fn run<T: ConntrackTable, E: EventSource>(
    cfg: DriverConfig,
    session: Session,
    table: T,
    events: E,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let (ev_tx, ev_rx) = mpsc::channel::<EventMsg>(EVENT_BATCHES);
    if let Err(e) = std::thread::Builder::new()
        .name("ctsync-apply".into())
        .spawn(move || apply_thread(table, job_rx, done_tx))
    {
        error!(event = "ctsync_thread_failed", thread = "ctsync-apply", error = %e);
        return;
    }
    let stop_events = stop.clone();
    let subscription = events.subscription();
    if let Err(e) = std::thread::Builder::new()
        .name("ctsync-events".into())
        .spawn(move || event_thread(events, ev_tx, stop_events))
    {
        error!(event = "ctsync_thread_failed", thread = "ctsync-events", error = %e);
        return;
    }
    let mut d = Driver {
        dials: dials(cfg.local, cfg.peer),
        hello_key: cfg.session.key.hello_key(),
        cfg,
        candidate: None,
        seen_nonces: VecDeque::new(),
        session,
        epoch: Instant::now(),
        listener: None,
        next_bind: Some(Instant::now()),
        conn: None,
        dialing: None,
        next_dial: None,
        backoff: BACKOFF_MIN,
        jobs: job_tx,
        done: done_rx,
        events: ev_rx,
        subscription,
        issued: 0,
        finished: 0,
        last_write: 0,
        write_jobs_open: 0,
        barriers: Vec::new(),
        stats: DriverStats::default(),
        stop,
    };
    if d.dials {
        d.next_dial = Some(Instant::now());
    }
    d.stats.events_subscribed = true;
    if d.session.role() == Role::Backup {
        // Only a master sends its events ([`Subscription`]).
        d.subscribe(false);
        // The kernel may hold entries from this box's time as master (a
        // restart): the peer forwards them now.
        d.loosen("startup");
    }
    info!(
        event = "ctsync_started",
        local = %d.cfg.local,
        peer = %d.cfg.peer,
        dials = d.dials,
        role = d.session.role().as_str()
    );
    d.run(commands).await;
}

impl Driver {
    fn now(&self) -> Time {
        now_since(self.epoch)
    }

    async fn run(&mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.wait(&mut commands).await;
            match wake {
                Wake::Command(None) => {
                    self.shutdown().await;
                    return;
                }
                Wake::Command(Some(Command::Shutdown(reply))) => {
                    self.shutdown().await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Command(Some(Command::Role(role))) => {
                    // Kernel events already read happened under the old
                    // role (a master's last changes): the session takes
                    // them first, or a new backup would drop them as
                    // echoes of its own writes.
                    while let Ok(msg) = self.events.try_recv() {
                        self.on_event(msg);
                    }
                    if role != self.session.role() {
                        // A new master listens before it says so: this
                        // command is handled before the VRRP executor's
                        // barrier, so before the VIPs bring traffic.
                        let joined = role != Role::Master || self.subscribe(true);
                        self.feed(Input::RoleChanged { role });
                        if !joined {
                            // Events will be missing: the session repairs
                            // that like an overrun, with a dump.
                            self.feed(Input::EventOverrun);
                        }
                        if role == Role::Backup {
                            self.subscribe(false);
                            // Our entries' window data goes stale from
                            // now on (kernel.rs, "Loosening").
                            self.loosen("became backup");
                        }
                    }
                }
                Wake::Command(Some(Command::Barrier(reply))) => self.barrier(reply),
                Wake::Command(Some(Command::Status(reply))) => {
                    let _ = reply.send(self.status());
                }
                Wake::Accepted(Ok((stream, remote))) => self.accepted(stream, remote),
                Wake::CandidateReadable => self.read_candidate(),
                Wake::CandidateExpired => {
                    if let Some(c) = self.candidate.take() {
                        self.refuse_candidate(c.remote, "no Hello in time");
                    }
                }
                Wake::Accepted(Err(e)) => {
                    warn!(event = "ctsync_accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Wake::Dialed(r) => {
                    self.dialing = None;
                    match r {
                        Ok(stream) => {
                            let remote = stream.peer_addr().unwrap_or(self.cfg.peer);
                            info!(event = "ctsync_connected", peer = %remote, direction = "dialed");
                            self.connected(stream, remote);
                        }
                        Err(e) => {
                            self.stats.dial_failures += 1;
                            debug!(event = "ctsync_dial_failed", peer = %self.cfg.peer, error = %e, retry_in = ?self.backoff);
                            self.schedule_dial();
                        }
                    }
                }
                Wake::DialDue => self.dial(),
                Wake::BindDue => self.bind(),
                Wake::Readable => self.read(false),
                Wake::Writable => self.write(),
                Wake::Timer => self.feed(Input::Timer),
                Wake::Done(Some(done)) => self.job_done(done),
                Wake::Done(None) => {
                    error!(event = "ctsync_apply_thread_gone");
                    self.shutdown().await;
                    return;
                }
                Wake::Event(Some(msg)) => self.on_event(msg),
                Wake::Event(None) => {
                    // The event thread ended (never on its own); keep
                    // replicating what the peer sends.
                    self.events = mpsc::channel(1).1;
                }
            }
        }
    }

    /// Joins or leaves the kernel's event groups ([`Subscription`]);
    /// false if the kernel refused.
    fn subscribe(&mut self, on: bool) -> bool {
        match self.subscription.set_listening(on) {
            Ok(()) => {
                self.stats.events_subscribed = on;
                true
            }
            Err(e) => {
                self.stats.event_errors += 1;
                error!(event = "ctsync_subscription_failed", listening = on, error = %e);
                false
            }
        }
    }

    fn on_event(&mut self, msg: EventMsg) {
        match msg {
            EventMsg::Batch(SourceBatch::Events(events)) => {
                self.feed(Input::LocalEvents { events })
            }
            EventMsg::Batch(SourceBatch::Overrun) => {
                warn!(
                    event = "ctsync_event_overrun",
                    note = "conntrack events were lost; reconciling against a dump"
                );
                self.feed(Input::EventOverrun)
            }
            EventMsg::Error(e) => {
                self.stats.event_errors += 1;
                // Lost events are repaired like an overrun.
                warn!(event = "ctsync_event_read_failed", error = %e);
                self.feed(Input::EventOverrun)
            }
        }
    }

    /// The next thing to do.
    async fn wait(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Wake {
        let deadline = self
            .session
            .next_deadline()
            .map(|t| self.epoch + Duration::from_millis(t.as_millis()));
        let finished = self.finished;
        let can_write = self
            .conn
            .as_ref()
            .is_some_and(|c| c.queue.front().is_some_and(|q| q.gate <= finished));
        let conn = self.conn.as_ref();
        let has_conn = conn.is_some();
        let listener = self.listener.as_ref();
        let has_listener = listener.is_some();
        let has_dialing = self.dialing.is_some();
        let dialing = self.dialing.as_mut();
        let next_dial = if has_dialing { None } else { self.next_dial };
        let next_bind = self.next_bind;
        let candidate = self.candidate.as_ref();
        let has_candidate = candidate.is_some();
        let candidate_deadline = candidate.map(|c| c.deadline);
        tokio::select! {
            biased;
            c = commands.recv() => Wake::Command(c),
            d = self.done.recv() => Wake::Done(d),
            r = async {
                match conn {
                    Some(c) => c.stream.writable().await,
                    None => std::future::pending().await,
                }
            }, if can_write => match r {
                Ok(()) => Wake::Writable,
                // The read side reports the error.
                Err(_) => Wake::Readable,
            },
            _ = async {
                match conn {
                    Some(c) => c.stream.readable().await,
                    None => std::future::pending().await,
                }
            }, if has_conn => Wake::Readable,
            a = async {
                match listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            }, if has_listener => Wake::Accepted(a),
            _ = async {
                match candidate {
                    Some(c) => c.stream.readable().await,
                    None => std::future::pending().await,
                }
            }, if has_candidate => Wake::CandidateReadable,
            _ = sleep_until_opt(candidate_deadline), if has_candidate => Wake::CandidateExpired,
            r = async {
                match dialing {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            }, if has_dialing => Wake::Dialed(r),
            _ = sleep_until_opt(deadline), if deadline.is_some() => Wake::Timer,
            _ = sleep_until_opt(next_dial), if next_dial.is_some() => Wake::DialDue,
            _ = sleep_until_opt(next_bind), if next_bind.is_some() => Wake::BindDue,
            e = self.events.recv() => Wake::Event(e),
        }
    }

    fn bind(&mut self) {
        self.next_bind = None;
        let result = std::net::TcpListener::bind(self.cfg.local)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std);
        match result {
            Ok(l) => {
                info!(event = "ctsync_listening", local = %self.cfg.local);
                self.listener = Some(l);
            }
            Err(e) => {
                self.stats.bind_failures += 1;
                // The sync address may come up after the daemon (networkd,
                // a VLAN created later): retry, loudly.
                warn!(event = "ctsync_bind_failed", local = %self.cfg.local, error = %e, retry_in = ?BACKOFF_MAX, note = "[ctsync] local must be an address of this box");
                self.next_bind = Some(Instant::now() + BACKOFF_MAX);
            }
        }
    }

    fn schedule_dial(&mut self) {
        if !self.dials {
            return;
        }
        self.next_dial = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn dial(&mut self) {
        self.next_dial = None;
        if !self.dials || self.conn.is_some() || self.dialing.is_some() {
            return;
        }
        self.stats.dials += 1;
        let local = self.cfg.local;
        let peer = self.cfg.peer;
        self.dialing = Some(Box::pin(async move {
            let socket = if peer.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // From local's IP (any port): the peer checks the source IP.
            socket.bind(SocketAddr::new(local.ip(), 0))?;
            match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(peer)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )),
            }
        }));
    }

    fn accepted(&mut self, stream: TcpStream, remote: SocketAddr) {
        if remote.ip() != self.cfg.peer.ip() {
            self.stats.refused_connections += 1;
            // Bounded logging: a scanner must not flood the journal.
            let n = self.stats.refused_connections;
            if n <= 10 || n.is_power_of_two() {
                warn!(event = "ctsync_connection_refused", from = %remote, expected = %self.cfg.peer.ip(), refused_total = n, note = "only [ctsync] peer may connect");
            }
            drop(stream);
            return;
        }
        self.stats.accepted += 1;
        // The newest wins: a peer that reconnects again has given up on
        // the one before.
        self.candidate = Some(Candidate {
            stream,
            remote,
            bytes: Vec::new(),
            deadline: Instant::now() + CANDIDATE_TIMEOUT,
        });
        self.read_candidate();
    }

    /// Reads what the candidate sent; once its first frame is complete
    /// (or it cannot be), decides (module doc).
    fn read_candidate(&mut self) {
        let Some(c) = self.candidate.as_mut() else {
            return;
        };
        // More than the largest Hello frame decides the verdict anyway.
        let enough = CANDIDATE_MAX_PAYLOAD as usize * 2;
        let mut buf = [0u8; 4096];
        while c.bytes.len() < enough {
            let closed = match c.stream.try_read(&mut buf) {
                Ok(0) => Some("closed".to_string()),
                Ok(n) => {
                    c.bytes.extend_from_slice(&buf[..n]);
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = closed {
                debug!(event = "ctsync_candidate_closed", peer = %c.remote, reason = %why);
                self.candidate = None;
                return;
            }
        }
        let Some(verdict) = first_frame_verdict(&c.bytes, &self.hello_key, &self.seen_nonces)
        else {
            return; // not complete yet
        };
        let Some(c) = self.candidate.take() else {
            return;
        };
        match (verdict, self.conn.is_some()) {
            (Ok(nonce), _) => {
                self.seen_nonces.push_front(nonce);
                self.seen_nonces.truncate(SEEN_NONCES);
                self.hand_over(c);
            }
            // Nothing to protect: the session reads it and counts what is
            // wrong with it, as on any connection.
            (Err(_), false) => self.hand_over(c),
            (Err(why), true) => self.refuse_candidate(c.remote, why),
        }
    }

    fn hand_over(&mut self, c: Candidate) {
        info!(event = "ctsync_connected", peer = %c.remote, direction = "accepted", replaces = self.conn.is_some());
        self.connected(c.stream, c.remote);
        if !c.bytes.is_empty() {
            self.feed(Input::BytesReceived {
                bytes: c.bytes.into(),
            });
        }
    }

    fn refuse_candidate(&mut self, remote: SocketAddr, why: &str) {
        self.stats.refused_replacements += 1;
        warn!(event = "ctsync_replacement_refused", from = %remote, reason = why, note = "a connection from the peer's address did not open with a fresh, authentic Hello; the live session goes on");
    }

    fn connected(&mut self, stream: TcpStream, remote: SocketAddr) {
        let nonce = match fresh_nonce() {
            Ok(n) => n,
            Err(e) => {
                error!(event = "ctsync_nonce_failed", error = %e);
                self.schedule_dial();
                return;
            }
        };
        // Small frames (acks, heartbeats) go out at once.
        let _ = stream.set_nodelay(true);
        if let Some(old) = self.conn.take() {
            self.linger(old);
        }
        self.conn = Some(Conn {
            stream,
            remote,
            queue: VecDeque::new(),
            head_written: 0,
            queued: 0,
        });
        self.feed(Input::Connected { nonce });
    }

    /// The connection ended under us (EOF, error).
    fn lost(&mut self, why: &str) {
        if let Some(c) = self.conn.take() {
            info!(event = "ctsync_disconnected", peer = %c.remote, reason = why);
            self.feed(Input::Disconnected);
            self.schedule_dial();
        }
    }

    /// Reads what the socket holds (at most [`READ_BUDGET`]) and feeds it
    /// to the session. `now_in_kernel`: read with a plain recv(2) instead
    /// of tokio's `try_read`, which trusts the readiness the reactor last
    /// saw and would miss bytes that arrived since (the barrier must see
    /// everything received).
    fn read(&mut self, now_in_kernel: bool) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < READ_BUDGET {
            let Some(c) = self.conn.as_ref() else { return };
            let r = if now_in_kernel {
                use std::os::fd::AsFd;
                rustix::io::read(c.stream.as_fd(), &mut buf).map_err(io::Error::from)
            } else {
                c.stream.try_read(&mut buf)
            };
            match r {
                Ok(0) => {
                    self.lost("closed by the peer");
                    return;
                }
                Ok(n) => {
                    total += n;
                    let bytes = buf.get(..n).unwrap_or(&[]);
                    let now = self.now();
                    let actions = self.session.handle(
                        now,
                        Input::BytesReceived {
                            bytes: std::borrow::Cow::Borrowed(bytes),
                        },
                    );
                    self.execute(actions);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.io_errors += 1;
                    self.lost(&format!("read failed: {e}"));
                    return;
                }
            }
        }
    }

    fn write(&mut self) {
        let finished = self.finished;
        let Some(c) = self.conn.as_mut() else { return };
        let before = c.queued;
        let mut failed = None;
        while let Some(head) = c.queue.front() {
            if head.gate > finished {
                break;
            }
            let rest = head.bytes.get(c.head_written..).unwrap_or(&[]);
            match c.stream.try_write(rest) {
                Ok(n) => {
                    c.head_written += n;
                    c.queued = c.queued.saturating_sub(n);
                    if c.head_written >= head.bytes.len() {
                        c.queue.pop_front();
                        c.head_written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let queued = c.queued;
        if let Some(e) = failed {
            self.stats.io_errors += 1;
            self.lost(&format!("write failed: {e}"));
            return;
        }
        if queued != before {
            self.feed(Input::Writable {
                queued_bytes: queued,
            });
        }
    }

    fn feed(&mut self, input: Input<'_>) {
        let now = self.now();
        let actions = self.session.handle(now, input);
        self.execute(actions);
    }

    /// Applies actions in order (see the module docs for the gate).
    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { bytes } => self.enqueue(bytes),
                Action::ApplyUpserts { entries } => {
                    self.issued += 1;
                    self.last_write = self.issued;
                    self.write_jobs_open += 1;
                    let _ = self.jobs.send(Job::Upsert {
                        id: self.issued,
                        entries,
                    });
                }
                Action::ApplyDeletes { keys } => {
                    self.issued += 1;
                    self.last_write = self.issued;
                    self.write_jobs_open += 1;
                    let _ = self.jobs.send(Job::Delete {
                        id: self.issued,
                        keys,
                    });
                }
                Action::RequestDump { reason } => {
                    self.issued += 1;
                    debug!(
                        event = "ctsync_dump_requested",
                        reason = dump_reason(reason)
                    );
                    let _ = self.jobs.send(Job::Dump { id: self.issued });
                }
                // Emitted by `Input::Connected` for the connection it
                // replaces: `connected` already took that one off
                // `self.conn` and let it linger. `self.conn` is the new
                // connection now, whose Hello follows in these actions;
                // closing it here would drop the new peer unread (and
                // leave the session waiting for a Hello on a connection
                // the driver no longer has).
                Action::Close {
                    reason: CloseReason::Replaced,
                } => {
                    info!(
                        event = "ctsync_connection_replaced",
                        peer = ?self.conn.as_ref().map(|c| c.remote)
                    );
                }
                Action::Close { reason } => {
                    log_close(&reason, self.conn.as_ref().map(|c| c.remote));
                    if let Some(c) = self.conn.take() {
                        self.linger(c);
                    }
                    self.schedule_dial();
                }
                Action::Notice { notice } => {
                    if matches!(notice, Notice::Established { .. }) {
                        self.backoff = BACKOFF_MIN;
                    }
                    log_notice(&notice);
                }
            }
        }
    }

    fn enqueue(&mut self, bytes: Vec<u8>) {
        let gate = self.last_write;
        let Some(c) = self.conn.as_mut() else { return };
        c.queued += bytes.len();
        c.queue.push_back(Queued { gate, bytes });
        let (queued, remote) = (c.queued, c.remote);
        if queued > MAX_QUEUE_BYTES {
            self.stats.queue_overflows += 1;
            warn!(event = "ctsync_queue_overflow", peer = %remote, queued, note = "the peer stopped reading; reconnecting");
            self.lost("write queue overflow");
        }
    }

    /// Writes what a closed connection may still say (a Goodbye, acks
    /// for what is already written) for at most [`LINGER`], in the
    /// background, then drops it. Frames gated on writes not done yet are
    /// dropped: their acks would claim too much.
    fn linger(&mut self, mut c: Conn) {
        let finished = self.finished;
        let mut out = Vec::new();
        for (i, q) in c.queue.drain(..).enumerate() {
            if q.gate > finished {
                break;
            }
            let skip = if i == 0 { c.head_written } else { 0 };
            out.extend_from_slice(q.bytes.get(skip..).unwrap_or(&[]));
        }
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::time::timeout(LINGER, async {
                c.stream.write_all(&out).await?;
                c.stream.shutdown().await
            })
            .await;
        });
    }

    fn job_done(&mut self, done: Done) {
        match done {
            Done::Write {
                id,
                written,
                refused,
                table_full,
                upsert,
            } => {
                self.finished = id;
                self.write_jobs_open = self.write_jobs_open.saturating_sub(1);
                if upsert {
                    self.stats.upserts_written += written as u64;
                } else {
                    self.stats.deletes_written += written as u64;
                }
                if !refused.is_empty() {
                    self.stats.apply_refused += refused.len() as u64;
                    warn!(
                        event = "ctsync_apply_refused",
                        entries = refused.len(),
                        table_full,
                        note = if table_full {
                            "nf_conntrack_max reached"
                        } else {
                            "see the kernel's reason at debug level"
                        }
                    );
                    self.feed(Input::ApplyFailed {
                        keys: refused,
                        table_full,
                    });
                }
            }
            Done::Loosen { id, why, result } => {
                self.finished = id;
                self.stats.loosenings += 1;
                match result {
                    Ok(a) => {
                        self.stats.entries_loosened += a.written as u64;
                        if !a.failed.is_empty() {
                            self.stats.apply_refused += a.failed.len() as u64;
                        }
                        info!(
                            event = "ctsync_loosened",
                            reason = why,
                            entries = a.written,
                            refused = a.failed.len(),
                            note = "TCP window tracking off on entries the peer forwards now"
                        );
                    }
                    Err(e) => warn!(event = "ctsync_loosen_failed", reason = why, error = %e),
                }
            }
            Done::Dump { id, result } => {
                self.finished = id;
                match result {
                    Ok(entries) => self.feed(Input::LocalDump { entries }),
                    Err(e) => {
                        warn!(event = "ctsync_dump_failed", error = %e);
                        self.feed(Input::DumpFailed);
                    }
                }
            }
        }
        let finished = self.finished;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.barriers)
            .into_iter()
            .partition(|(target, _)| *target <= finished);
        self.barriers = waiting;
        for (_, reply) in ready {
            let _ = reply.send(true);
        }
    }

    /// Queues a [`Job::Loosen`] behind the writes already issued. Not a
    /// write job for the barrier: a takeover must not wait for it, and no
    /// ack depends on it.
    fn loosen(&mut self, why: &'static str) {
        self.issued += 1;
        let _ = self.jobs.send(Job::Loosen {
            id: self.issued,
            why,
        });
    }

    fn barrier(&mut self, reply: oneshot::Sender<bool>) {
        self.stats.barriers += 1;
        // Bytes already in the socket were received too: take them in, so
        // their writes are issued before the target is fixed.
        if self.conn.is_some() {
            self.read(true);
        }
        let target = self.last_write;
        if target <= self.finished {
            let _ = reply.send(false);
        } else {
            self.stats.barriers_waited += 1;
            self.barriers.push((target, reply));
        }
    }

    fn status(&self) -> SyncStatus {
        let mut driver = self.stats.clone();
        driver.queued_bytes = self.conn.as_ref().map_or(0, |c| c.queued as u64);
        driver.apply_backlog = self.write_jobs_open;
        SyncStatus {
            local: self.cfg.local,
            peer: self.cfg.peer,
            dials: self.dials,
            connected_to: self.conn.as_ref().map(|c| c.remote),
            session: self.session.status(),
            driver,
        }
    }

    async fn shutdown(&mut self) {
        self.feed(Input::Shutdown);
        // `Shutdown` closed the connection (lingering for its Goodbye);
        // one without a handshake is simply dropped.
        if let Some(c) = self.conn.take() {
            self.linger(c);
        }
        self.stop.store(true, Ordering::Relaxed);
        // The apply thread ends when its queue closes; the lingering
        // writes get their time before this thread's runtime goes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        info!(event = "ctsync_stopped");
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn apply_thread<T: ConntrackTable>(
    mut table: T,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Ok(job) = jobs.recv() {
        let out = match job {
            Job::Upsert { id, entries } => {
                let a = table.upsert(&entries);
                for (key, why) in &a.failed {
                    debug!(event = "ctsync_entry_refused", key = ?key, error = %why);
                }
                Done::Write {
                    id,
                    written: a.written,
                    refused: a.failed.into_iter().map(|(k, _)| k).collect(),
                    table_full: a.table_full,
                    upsert: true,
                }
            }
            Job::Delete { id, keys } => {
                let a = table.delete(&keys);
                for (key, why) in &a.failed {
                    debug!(event = "ctsync_delete_refused", key = ?key, error = %why);
                }
                // A refused delete is not fed back: the next reconcile
                // finds the entry again and removes it.
                Done::Write {
                    id,
                    written: a.written,
                    refused: Vec::new(),
                    table_full: false,
                    upsert: false,
                }
            }
            Job::Dump { id } => Done::Dump {
                id,
                result: table.dump().map_err(|e| e.to_string()),
            },
            Job::Loosen { id, why } => {
                let result = table.loosen().map_err(|e| e.to_string());
                if let Ok(a) = &result {
                    for (key, why) in &a.failed {
                        debug!(event = "ctsync_loosen_refused", key = ?key, error = %why);
                    }
                }
                Done::Loosen { id, why, result }
            }
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

fn event_thread<E: EventSource>(mut source: E, tx: mpsc::Sender<EventMsg>, stop: Arc<AtomicBool>) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let msg = match source.next_batch(Duration::from_millis(200)) {
            Ok(None) => continue,
            Ok(Some(b)) => {
                failing = false;
                EventMsg::Batch(b)
            }
            Err(e) => {
                // Reported once per run of failures, then retried slowly.
                let first = !failing;
                failing = true;
                std::thread::sleep(Duration::from_secs(1));
                if !first {
                    continue;
                }
                EventMsg::Error(e.to_string())
            }
        };
        // Blocks while the session is behind: the kernel socket then
        // overruns, which is reported and repaired with a dump.
        if tx.blocking_send(msg).is_err() {
            return;
        }
    }
}

fn dump_reason(r: DumpReason) -> &'static str {
    match r {
        DumpReason::FullResync => "full_resync",
        DumpReason::PartialResync => "partial_resync",
        DumpReason::Reconcile => "reconcile",
        DumpReason::Overrun => "overrun",
        DumpReason::RoleChange => "role_change",
    }
}

/// A close, as one structured event; rejections (someone else's bytes on
/// the link, or a broken peer) are warnings.
fn log_close(reason: &CloseReason, peer: Option<SocketAddr>) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    let detail = serde_json::to_string(reason).unwrap_or_default();
    match reason {
        CloseReason::Shutdown | CloseReason::PeerGoodbye { .. } | CloseReason::Replaced => {
            info!(event = "ctsync_closed", peer = %peer, reason = %detail)
        }
        CloseReason::HandshakeTimeout | CloseReason::PeerTimeout => {
            warn!(event = "ctsync_closed", peer = %peer, reason = %detail)
        }
        CloseReason::Rejected { .. }
        | CloseReason::Replay { .. }
        | CloseReason::Gap { .. }
        | CloseReason::Protocol { .. } => {
            warn!(event = "ctsync_rejected", peer = %peer, reason = %detail, note = "frame failed authentication or sequencing; connection closed, the next one resyncs")
        }
        CloseReason::Internal { .. } => {
            error!(event = "ctsync_closed", peer = %peer, reason = %detail)
        }
    }
}

/// The session's notices as structured events (DESIGN.md principle 6).
fn log_notice(n: &Notice) {
    match n {
        Notice::Established { peer, peer_role } => {
            info!(event = "ctsync_established", peer_node = %peer, peer_role = peer_role.as_str())
        }
        Notice::Disconnected {
            partial_frame_bytes,
        } => info!(event = "ctsync_link_down", partial_frame_bytes),
        Notice::PeerRole { role } => info!(event = "ctsync_peer_role", role = role.as_str()),
        Notice::BulkStarted {
            generation,
            entries,
            full,
        } => info!(event = "ctsync_bulk_started", generation, entries, full),
        Notice::BulkSent {
            generation,
            entries,
        } => info!(event = "ctsync_bulk_sent", generation, entries),
        Notice::BulkReceived {
            generation,
            removed,
            digest_ok,
        } => {
            if *digest_ok {
                info!(
                    event = "ctsync_bulk_received",
                    generation, removed, digest_ok
                )
            } else {
                warn!(
                    event = "ctsync_bulk_received",
                    generation, removed, digest_ok
                )
            }
        }
        Notice::BulkCleanupSkipped {
            generation,
            would_remove,
        } => info!(
            event = "ctsync_bulk_cleanup_skipped",
            generation, would_remove
        ),
        Notice::DigestMismatch { buckets } => {
            warn!(event = "ctsync_digest_mismatch", buckets)
        }
        Notice::StaleRemoved { entries } => info!(event = "ctsync_stale_removed", entries),
        Notice::KernelDiffers { missing, different } => {
            warn!(event = "ctsync_kernel_differs", missing, different)
        }
    }
}
