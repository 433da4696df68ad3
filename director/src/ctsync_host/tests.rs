//! The driver over real loopback TCP against the in-memory table: two
//! drivers replicating, restarts, role switches, and a hand-driven peer
//! (a bare `ctsync::Session` on a std socket) for what two honest drivers
//! never do: forged and replayed frames, a peer that drops the link.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ctsync::entry::{proto, status, tcp_state};
use ctsync::session::{LinkState, Timers};
use ctsync::wire::Nonce;
use ctsync::{Action, Entry, Event, Input, Psk, Role, Session, TcpInfo, Time, Tuple, L4};

use super::driver::{DriverConfig, SyncStatus};
use super::fake::{FakeEvents, FakeEventsTx, FakeTable, FakeView};
use super::role::{BarrierOutcome, RoleLink, RoleRule};
use super::table::SourceBatch;
use super::{spawn, Handle};
use crate::config::CtSync;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef\n";

fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn entry(n: u16) -> Entry {
    let client: std::net::IpAddr = format!("198.51.100.{}", n % 250 + 1).parse().unwrap();
    Entry {
        proto: proto::TCP,
        original: Tuple {
            src: client,
            dst: "192.0.2.100".parse().unwrap(),
            l4: L4::Ports {
                src: 10000 + n,
                dst: 80,
            },
        },
        reply: Tuple {
            src: "10.0.1.11".parse().unwrap(),
            dst: client,
            l4: L4::Ports {
                src: 8080,
                dst: 10000 + n,
            },
        },
        status: status::CONFIRMED | status::SEEN_REPLY | status::ASSURED | status::DST_NAT,
        timeout: 432000,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
            state: tcp_state::ESTABLISHED,
            ..TcpInfo::default()
        }),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Two ports, the lower first (its owner dials).
fn ports() -> (u16, u16) {
    let (a, b) = (free_port(), free_port());
    (a.min(b), a.max(b).max(a.min(b) + 1))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn timers() -> Timers {
    Timers {
        handshake_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(200),
        dead_interval: Duration::from_secs(2),
        digest_interval: Duration::from_millis(500),
        reconcile_interval: Duration::from_secs(1),
        dump_retry: Duration::from_millis(200),
    }
}

fn session_config(node: &str, role: Role) -> ctsync::Config {
    let mut c = ctsync::Config::new(node, role, Psk::from_key_file(KEY).unwrap());
    c.timers = timers();
    c
}

fn section(local: u16, peer: u16) -> CtSync {
    CtSync {
        local: addr(local),
        peer: addr(peer),
        key_file: PathBuf::from("/nonexistent"),
        ignore: Vec::new(),
        follow: None,
    }
}

struct Node {
    handle: Handle,
    view: FakeView,
    table: FakeTable,
    events: FakeEventsTx,
}

fn node(name: &str, local: u16, peer: u16, role: Role, table: FakeTable) -> Node {
    let (events, tx) = FakeEvents::new();
    let view = table.view();
    let handle = spawn(
        DriverConfig {
            local: addr(local),
            peer: addr(peer),
            session: session_config(name, role),
        },
        section(local, peer),
        table.clone(),
        events,
    )
    .expect("driver starts");
    Node {
        handle,
        view,
        table,
        events: tx,
    }
}

fn status(h: &Handle) -> SyncStatus {
    block(h.status()).expect("status")
}

/// Polls `cond` every 10 ms for up to 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn established(h: &Handle) -> bool {
    status(h).session.link == LinkState::Established
}

fn role(h: &Handle, role: Role) {
    h.commands()
        .send(super::driver::Command::Role(role))
        .expect("driver running");
}

#[test]
fn dialing_side_is_the_lower_address() {
    assert!(super::driver::dials(addr(1000), addr(2000)));
    assert!(!super::driver::dials(addr(2000), addr(1000)));
    let a: SocketAddr = "10.1.0.1:3780".parse().unwrap();
    let b: SocketAddr = "10.1.0.2:3780".parse().unwrap();
    assert!(super::driver::dials(a, b) && !super::driver::dials(b, a));
}

#[test]
fn events_on_the_master_reach_the_backup_table() {
    let (pa, pb) = ports();
    let a = node("lb-a", pa, pb, Role::Master, FakeTable::new());
    let b = node("lb-b", pb, pa, Role::Backup, FakeTable::new());
    wait_until("the handshake", || {
        established(&a.handle) && established(&b.handle)
    });
    let entries: Vec<Entry> = (0..200).map(entry).collect();
    for e in &entries {
        a.view.insert(*e);
    }
    a.events.send(SourceBatch::Events(
        entries.iter().copied().map(Event::New).collect(),
    ));
    wait_until("200 entries on the backup", || b.view.len() == 200);
    for e in &entries {
        assert_eq!(b.view.get(&e.key()), Some(*e));
    }
    // Updates and deletes follow.
    // (A change of the timeout alone is not sent: the session refreshes
    // timeouts through its reconciliation.)
    let mut changed = entries[0];
    changed.mark = 7;
    a.view.insert(changed);
    a.view.remove(&entries[1].key());
    a.events.send(SourceBatch::Events(vec![
        Event::Update(changed),
        Event::Destroy(entries[1].key()),
    ]));
    wait_until("the update and the delete", || {
        b.view.get(&changed.key()) == Some(changed) && b.view.get(&entries[1].key()).is_none()
    });
    let sa = status(&a.handle);
    let sb = status(&b.handle);
    assert_eq!(sa.session.role, Role::Master);
    assert_eq!(sb.session.role, Role::Backup);
    assert!(sa.dials && !sb.dials);
    assert_eq!(sa.session.stats.events_new, 200);
    assert_eq!(sb.session.stats.created, 200);
    assert_eq!(sb.session.stats.destroyed, 1);
    assert!(sb.driver.upserts_written >= 200);
    assert_eq!(sb.driver.apply_backlog, 0);
    // Events on the backup would be the echo of its writes: it is not
    // subscribed, and nothing reaches its session or the master.
    assert!(a.events.listening());
    assert!(!b.events.listening());
    assert!(sa.driver.events_subscribed && !sb.driver.events_subscribed);
    b.events
        .send(SourceBatch::Events(vec![Event::New(entry(999))]));
    wait_until("the backup's source to drop the event", || {
        b.events.dropped() == 1
    });
    let sb = status(&b.handle);
    assert_eq!(sb.session.stats.events_new, 0);
    assert!(a.view.get(&entry(999).key()).is_none());
    block(a.handle.shutdown());
    block(b.handle.shutdown());
}

/// Master "lb-a" holding entries `0..n`, backup "lb-b", once the first
/// bulk brought them all to b; and their ports.
fn pair_after_the_first_bulk(n: u16) -> (Node, Node, (u16, u16)) {
    let (pa, pb) = ports();
    let a = node(
        "lb-a",
        pa,
        pb,
        Role::Master,
        FakeTable::with((0..n).map(entry)),
    );
    let b = node("lb-b", pb, pa, Role::Backup, FakeTable::new());
    wait_until("the first bulk", || b.view.len() == usize::from(n));
    (a, b, (pa, pb))
}

#[test]
fn a_restarted_backup_gets_a_bulk_resync_that_also_removes_stale_entries() {
    let (a, b, (pa, pb)) = pair_after_the_first_bulk(50);
    block(b.handle.shutdown());
    // While the backup is away: one connection ends, one starts.
    a.view.insert(entry(500));
    a.view.remove(&entry(0).key());
    a.events.send(SourceBatch::Events(vec![
        Event::Destroy(entry(0).key()),
        Event::New(entry(500)),
    ]));
    // The restarted backup's kernel still has what it had, plus an entry
    // the master never had.
    let mut stale = b.view.entries().into_values().collect::<Vec<_>>();
    stale.push(entry(777));
    let b2 = node("lb-b", pb, pa, Role::Backup, FakeTable::with(stale));
    wait_until("the resync", || {
        let s = status(&b2.handle).session;
        s.in_sync && s.stats.bulk_received >= 1
    });
    wait_until("the tables to agree", || {
        b2.view.get(&entry(500).key()).is_some()
            && b2.view.get(&entry(0).key()).is_none()
            && b2.view.get(&entry(777).key()).is_none()
    });
    assert_eq!(b2.view.len(), 50);
    // The master dialled again (it is the lower address).
    assert!(status(&a.handle).driver.dials >= 2);
    block(a.handle.shutdown());
    block(b2.handle.shutdown());
}

#[test]
fn role_switch_both_ways_with_changes_in_flight_loses_nothing() {
    let (pa, pb) = ports();
    let a = node("lb-a", pa, pb, Role::Master, FakeTable::new());
    let b = node("lb-b", pb, pa, Role::Backup, FakeTable::new());
    wait_until("the handshake", || {
        established(&a.handle) && established(&b.handle)
    });
    // Changes on A, and the switch right behind them (A's kernel has
    // them: it is the master's table).
    let first: Vec<Entry> = (0..300).map(entry).collect();
    for e in &first {
        a.view.insert(*e);
    }
    a.events.send(SourceBatch::Events(
        first.iter().copied().map(Event::New).collect(),
    ));
    // The event thread hands the batch over asynchronously: once A's
    // session has it, its frames are on their way while the roles switch.
    wait_until("A to take the events", || {
        status(&a.handle).session.stats.events_new == 300
    });
    role(&a.handle, Role::Backup);
    role(&b.handle, Role::Master);
    // New connections reach B once VRRP moved the VIPs, which is after the
    // driver took the role (the barrier), so after it joined the event
    // groups; a test that injects events has to wait for that too.
    wait_until("B to listen", || b.events.listening());
    // B is master now: its new connections go to A.
    let second: Vec<Entry> = (300..400).map(entry).collect();
    for e in &second {
        b.view.insert(*e);
    }
    b.events.send(SourceBatch::Events(
        second.iter().copied().map(Event::New).collect(),
    ));
    wait_until("all 400 on both", || {
        a.view.len() == 400 && b.view.len() == 400
    });
    // And back, again with changes in flight.
    let third: Vec<Entry> = (400..450).map(entry).collect();
    for e in &third {
        b.view.insert(*e);
    }
    b.events.send(SourceBatch::Events(
        third.iter().copied().map(Event::New).collect(),
    ));
    wait_until("B to take the events", || {
        status(&b.handle).session.stats.events_new == 150
    });
    role(&b.handle, Role::Backup);
    role(&a.handle, Role::Master);
    wait_until("A to listen", || a.events.listening());
    a.events
        .send(SourceBatch::Events(vec![Event::Destroy(first[0].key())]));
    a.view.remove(&first[0].key());
    wait_until("the second switch to settle", || {
        a.view.len() == 449 && b.view.len() == 449
    });
    assert_eq!(a.view.entries(), b.view.entries());
    let sa = status(&a.handle).session;
    let sb = status(&b.handle).session;
    assert_eq!((sa.role, sb.role), (Role::Master, Role::Backup));
    assert_eq!(sa.stats.role_changes, 2);
    assert_eq!(sb.stats.role_changes, 2);
    // One connection throughout: no resync was needed.
    assert_eq!(sa.stats.established, 1);
    block(a.handle.shutdown());
    block(b.handle.shutdown());
}

// ----------------------------------------------- a hand-driven peer

/// The other side played by the test: a bare session on a std socket.
struct Peer {
    session: Session,
    stream: TcpStream,
    now: Time,
    /// Every data frame this peer wrote, as bytes.
    sent: Vec<Vec<u8>>,
}

impl Peer {
    fn over(stream: TcpStream, role: Role) -> Peer {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let session = Session::new(session_config("test-peer", role), Time::ZERO).unwrap();
        let mut p = Peer {
            session,
            stream,
            now: Time::ZERO,
            sent: Vec::new(),
        };
        p.input(Input::Connected {
            nonce: Nonce([9; 16]),
        });
        p
    }

    fn connect(to: u16, role: Role) -> Peer {
        Peer::over(TcpStream::connect(addr(to)).unwrap(), role)
    }

    fn input(&mut self, input: Input<'_>) {
        self.now = self.now + Duration::from_millis(1);
        for a in self.session.handle(self.now, input) {
            match a {
                Action::Send { bytes } => {
                    let _ = self.stream.write_all(&bytes);
                    self.sent.push(bytes);
                }
                Action::RequestDump { .. } => self.input(Input::LocalDump {
                    entries: Vec::new(),
                }),
                _ => {}
            }
        }
    }

    /// Reads and answers for a while; false once the connection closed.
    fn pump(&mut self, for_: Duration) -> bool {
        let until = Instant::now() + for_;
        let mut buf = [0u8; 65536];
        while Instant::now() < until {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.input(Input::BytesReceived {
                    bytes: std::borrow::Cow::Owned(buf[..n].to_vec()),
                }),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn establish(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.session.link() != LinkState::Established {
            assert!(Instant::now() < deadline, "handshake with the driver");
            assert!(self.pump(Duration::from_millis(20)), "driver closed");
        }
    }

    /// Reads until the driver closes the connection (or 5 s).
    fn closed_by_driver(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// A listening driver (higher port) and the port the test peer uses.
fn listening_driver(table: FakeTable) -> (Node, u16, u16) {
    let (low, high) = ports();
    (node("lb-b", high, low, Role::Backup, table), high, low)
}

#[test]
fn a_connection_from_another_address_is_refused_and_counted() {
    let (n, port, _) = listening_driver(FakeTable::new());
    wait_until("the listener", || TcpStream::connect(addr(port)).is_ok());
    // The connect above came from 127.0.0.1, the configured peer's IP: it
    // was accepted. Now one from 127.0.0.2 (all of 127/8 is loopback).
    let before = status(&n.handle).driver;
    let s = block(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::from(([127, 0, 0, 2], 0)))?;
        sock.connect(addr(port)).await?.into_std()
    });
    let mut stranger = s.expect("a socket from 127.0.0.2");
    stranger.set_nonblocking(false).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stranger.write_all(b"CT\x01\x01 anything");
    let mut buf = [0u8; 64];
    // Closed without a byte in answer (no Hello for strangers).
    assert!(matches!(stranger.read(&mut buf), Ok(0) | Err(_)));
    wait_until("the refusal to be counted", || {
        status(&n.handle).driver.refused_connections == before.refused_connections + 1
    });
    let s = status(&n.handle);
    assert_eq!(s.session.stats.bytes_received, 0);
    block(n.handle.shutdown());
}

#[test]
fn a_forged_frame_closes_the_connection_and_is_counted() {
    let (n, port, _) = listening_driver(FakeTable::new());
    wait_until("the listener", || TcpStream::connect(addr(port)).is_ok());
    let mut peer = Peer::connect(port, Role::Master);
    peer.establish();
    // A genuine Upsert, then the same frame with one bit of its MAC
    // flipped.
    let before = peer.sent.len();
    peer.input(Input::LocalEvents {
        events: vec![Event::New(entry(1))],
    });
    assert!(peer.sent.len() > before, "the peer sent an upsert");
    wait_until("the genuine entry", || n.view.len() == 1);
    let mut probe = Session::new(session_config("forger", Role::Master), Time::ZERO).unwrap();
    let _ = probe.handle(
        Time::ZERO,
        Input::Connected {
            nonce: Nonce([1; 16]),
        },
    );
    let mut frame = peer.sent.last().cloned().unwrap();
    if let Some(last) = frame.last_mut() {
        *last ^= 0x01;
    }
    peer.stream.write_all(&frame).unwrap();
    assert!(peer.closed_by_driver(), "the driver closes on a bad MAC");
    wait_until("the rejection to be counted", || {
        status(&n.handle).session.stats.rejected_auth == 1
    });
    assert_eq!(n.view.len(), 1, "nothing of the forged frame was applied");
    assert_eq!(status(&n.handle).session.link, LinkState::Down);

    // A replay: a genuine frame of this connection sent a second time.
    let mut peer = Peer::connect(port, Role::Master);
    peer.establish();
    peer.input(Input::LocalEvents {
        events: vec![Event::New(entry(3))],
    });
    wait_until("the second genuine entry", || {
        n.view.get(&entry(3).key()).is_some()
    });
    let replayed = peer.sent.last().cloned().unwrap();
    peer.stream.write_all(&replayed).unwrap();
    assert!(peer.closed_by_driver(), "the driver closes on a replay");
    wait_until("the replay to be counted", || {
        status(&n.handle).session.stats.rejected_replay == 1
    });
    // Garbage that is not even a frame: closed too, no panic.
    let mut junk = TcpStream::connect(addr(port)).unwrap();
    junk.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    junk.write_all(&[0xff; 64]).unwrap();
    let mut p = Peer {
        session: probe,
        stream: junk,
        now: Time::ZERO,
        sent: Vec::new(),
    };
    assert!(p.closed_by_driver(), "the driver closes on garbage");
    let s = status(&n.handle);
    assert!(s.session.stats.bad_version + s.session.stats.malformed >= 1);
    block(n.handle.shutdown());
}

#[test]
fn the_dialing_side_reconnects_after_the_link_drops() {
    let (low, high) = ports();
    let listener = TcpListener::bind(addr(high)).unwrap();
    let n = node("lb-a", low, high, Role::Master, FakeTable::new());
    let (s1, from) = listener.accept().unwrap();
    // From local's IP (it binds before dialing).
    assert_eq!(from.ip(), addr(low).ip());
    let mut p1 = Peer::over(s1, Role::Backup);
    p1.establish();
    // The link drops (the peer's box goes away).
    drop(p1);
    let started = Instant::now();
    let (s2, _) = listener.accept().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "redialled with backoff"
    );
    let mut p2 = Peer::over(s2, Role::Backup);
    p2.establish();
    let s = status(&n.handle);
    assert_eq!(s.session.link, LinkState::Established);
    assert!(s.driver.dials >= 2);
    assert_eq!(s.session.stats.established, 2);
    block(n.handle.shutdown());
    // A clean shutdown says Goodbye.
    let _ = p2.pump(Duration::from_millis(300));
    assert_eq!(p2.session.link(), LinkState::Down);
    assert_eq!(p2.session.stats().peer_goodbyes, 1);
}

// ------------------------------------------------------- the barrier

#[test]
fn barrier_waits_for_received_entries_to_be_written_bounded() {
    let (n, port, _) = listening_driver(FakeTable::new());
    wait_until("the listener", || TcpStream::connect(addr(port)).is_ok());
    let link = RoleLink::new(RoleRule::default());
    link.attach(n.handle.commands(), RoleRule::default());
    let mut peer = Peer::connect(port, Role::Master);
    peer.establish();
    // Let the handshake's own writes (the empty bulk) finish.
    let _ = peer.pump(Duration::from_millis(100));
    assert_eq!(
        block(link.barrier(Duration::from_millis(50))),
        BarrierOutcome::Clear
    );

    // A slow kernel: each batch takes 30 ms. Received means in the
    // driver's socket: loopback may hand the bytes over a little after
    // the write returns (softirq), so give them 5 ms. Whether the driver
    // read them already or the barrier reads them, it waits for them.
    n.table.set_delay(Duration::from_millis(30));
    peer.input(Input::LocalEvents {
        events: vec![Event::New(entry(1))],
    });
    std::thread::sleep(Duration::from_millis(5));
    let outcome = block(link.barrier(Duration::from_millis(500)));
    assert!(
        matches!(outcome, BarrierOutcome::Applied(w) if w >= Duration::from_millis(20)),
        "{outcome:?}"
    );
    assert!(
        n.view.get(&entry(1).key()).is_some(),
        "written when the barrier returned"
    );

    // Slower than the bound: the barrier gives up at 50 ms.
    n.table.set_delay(Duration::from_millis(400));
    peer.input(Input::LocalEvents {
        events: vec![Event::New(entry(2))],
    });
    std::thread::sleep(Duration::from_millis(5));
    let started = Instant::now();
    let outcome = block(link.barrier(super::BARRIER_TIMEOUT));
    let took = started.elapsed();
    assert_eq!(outcome, BarrierOutcome::Expired(super::BARRIER_TIMEOUT));
    assert!(took < Duration::from_millis(150), "bounded: {took:?}");
    assert!(n.view.get(&entry(2).key()).is_none());
    wait_until("the slow write", || n.view.get(&entry(2).key()).is_some());
    n.table.set_delay(Duration::ZERO);
    link.detach();
    assert_eq!(
        block(link.barrier(Duration::from_millis(50))),
        BarrierOutcome::NoSync
    );
    block(n.handle.shutdown());
}

#[test]
fn an_ack_is_sent_only_after_its_entries_are_written() {
    let (n, port, _) = listening_driver(FakeTable::new());
    wait_until("the listener", || TcpStream::connect(addr(port)).is_ok());
    let mut peer = Peer::connect(port, Role::Master);
    peer.establish();
    let _ = peer.pump(Duration::from_millis(100));
    n.table.set_delay(Duration::from_millis(300));
    let acked_before = peer.session.stats().acks_received;
    peer.input(Input::LocalEvents {
        events: vec![Event::New(entry(7))],
    });
    let sent_at = Instant::now();
    while peer.session.stats().acks_received == acked_before {
        assert!(sent_at.elapsed() < Duration::from_secs(5), "no ack");
        assert!(peer.pump(Duration::from_millis(10)));
    }
    // The ack came after the slow write, and the entry is there.
    assert!(sent_at.elapsed() >= Duration::from_millis(250));
    assert!(n.view.get(&entry(7).key()).is_some());
    block(n.handle.shutdown());
}

#[test]
fn role_rule_follows_any_instance_an_instance_or_a_group() {
    use vrrp::machine::State;
    let text = "[global]\nrouter_id = \"lb\"\n\
        [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.100/32\"]\n\
        [[vrrp_instance]]\nname = \"VI_2\"\ninterface = \"eth1\"\nvrid = 52\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.101/32\"]\n\
        [[vrrp_instance]]\nname = \"VI_3\"\ninterface = \"eth1\"\nvrid = 53\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.102/32\"]\n\
        [[sync_group]]\nname = \"G1\"\ninstances = [\"VI_2\", \"VI_3\"]\n\
        [ctsync]\nlocal = \"10.1.0.1:3780\"\npeer = \"10.1.0.2:3780\"\nkey_file = \"k\"\n";
    let any = RoleRule::from_config(&crate::config::parse(text, "t.toml").unwrap());
    let one = RoleRule::from_config(
        &crate::config::parse(&format!("{text}follow = \"VI_1\"\n"), "t.toml").unwrap(),
    );
    let group = RoleRule::from_config(
        &crate::config::parse(&format!("{text}follow = \"G1\"\n"), "t.toml").unwrap(),
    );
    let states = |v: &[(&str, State)]| {
        v.iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let vi3_master = states(&[
        ("VI_1", State::Backup),
        ("VI_2", State::Backup),
        ("VI_3", State::Master),
    ]);
    assert_eq!(any.role(&vi3_master), Role::Master);
    assert_eq!(one.role(&vi3_master), Role::Backup);
    assert_eq!(group.role(&vi3_master), Role::Master);
    let vi1_master = states(&[("VI_1", State::Master), ("VI_2", State::Fault)]);
    assert_eq!(one.role(&vi1_master), Role::Master);
    assert_eq!(group.role(&vi1_master), Role::Backup);
    assert_eq!(any.role(&states(&[])), Role::Backup);

    // The link reports changes once, and tells an attached driver.
    let link = RoleLink::new(one);
    assert_eq!(link.vrrp_state("VI_2", State::Master), None);
    assert_eq!(link.vrrp_state("VI_1", State::Master), Some(Role::Master));
    assert_eq!(link.vrrp_state("VI_1", State::Master), None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    link.attach(
        tx,
        RoleRule::from_config(&crate::config::parse(text, "t.toml").unwrap()),
    );
    assert!(matches!(
        rx.try_recv(),
        Ok(super::driver::Command::Role(Role::Master))
    ));
    assert_eq!(
        link.vrrp_state("VI_1", State::Fault),
        None,
        "VI_2 is still master"
    );
    assert_eq!(link.vrrp_state("VI_2", State::Backup), Some(Role::Backup));
    assert!(matches!(
        rx.try_recv(),
        Ok(super::driver::Command::Role(Role::Backup))
    ));
}

#[test]
fn key_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "tooshort\n").unwrap();
    let e = super::load_key(&short).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "[ctsync] key_file {}: ctsync key is 8 bytes",
            short.display()
        )),
        "{e}"
    );
    let missing = dir.path().join("missing.key");
    let e = super::load_key(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "[ctsync] key_file {}: No such file",
            missing.display()
        )),
        "{e}"
    );
    let good = dir.path().join("good.key");
    std::fs::write(&good, KEY).unwrap();
    assert!(super::load_key(&good).is_ok());
}

#[test]
fn a_master_that_steps_down_loosens_the_entries_it_forwarded() {
    let (a, b, _) = pair_after_the_first_bulk(50);
    // The master's own entries track windows; what the backup wrote not.
    assert_eq!(a.view.tracked().len(), 50);
    assert!(b.view.tracked().is_empty());
    // A fault: a steps down with its session up, b takes over. Nothing is
    // re-sent to a (its kernel already equals the replicated set), so
    // only the loosening makes its entries fit for the failback.
    role(&a.handle, Role::Backup);
    role(&b.handle, Role::Master);
    wait_until("a's entries to be loosened", || a.view.tracked().is_empty());
    // The subscription follows the role.
    wait_until("b to listen, a not", || {
        b.events.listening() && !a.events.listening()
    });
    // The apply thread loosens the table first and reports afterwards, so
    // the counters trail the table by one message.
    wait_until("the loosening to be counted", || {
        status(&a.handle).driver.entries_loosened > 0
    });
    let s = status(&a.handle).driver;
    assert_eq!(s.entries_loosened, 50);
    assert!(s.loosenings >= 1);
    assert_eq!(a.view.len(), 50);
    block(a.handle.shutdown());
    block(b.handle.shutdown());
}

/// A Hello frame from `node_id` with `nonce`, under `key`.
fn hello_frame(key: &Psk, nonce: [u8; 16]) -> Vec<u8> {
    ctsync::wire::Message::Hello(ctsync::wire::Hello {
        role: Role::Backup,
        max_payload: ctsync::wire::DEFAULT_MAX_PAYLOAD,
        nonce: Nonce(nonce),
        node_id: "intruder".into(),
    })
    .encode_frame(0, &key.hello_key())
    .unwrap()
}

#[test]
fn a_connection_from_the_peers_address_replaces_the_live_one_only_with_a_fresh_authentic_hello() {
    let (a, b, (_, pb)) = pair_after_the_first_bulk(10);
    wait_until("the session", || established(&b.handle));
    let sessions = |h: &Handle| status(h).session.stats.established;
    assert_eq!(sessions(&b.handle), 1);
    // From the peer's address (127.0.0.1) with a Hello under another key:
    // refused before it reaches the session, which stays up.
    let wrong = Psk::from_key_file(b"not the pair's key, not at all\n").unwrap();
    let mut forged = TcpStream::connect(addr(pb)).unwrap();
    forged.write_all(&hello_frame(&wrong, [7; 16])).unwrap();
    wait_until("the forged Hello to be refused", || {
        status(&b.handle).driver.refused_replacements == 1
    });
    // Garbage, and silence, are refused the same way (the silent one
    // when the next connection takes its place).
    let mut garbage = TcpStream::connect(addr(pb)).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();
    wait_until("the garbage to be refused", || {
        status(&b.handle).driver.refused_replacements == 2
    });
    let s = status(&b.handle);
    assert!(established(&b.handle));
    assert_eq!(s.session.stats.established, 1, "the live session was kept");
    assert_eq!(
        s.session.stats.rejected_auth, 0,
        "nothing reached the session"
    );
    // An authentic Hello with a fresh nonce does replace it (the peer
    // restarted); a's redial then takes the place of this one, which
    // never finishes its handshake.
    let genuine = hello_frame(&Psk::from_key_file(KEY).unwrap(), [9; 16]);
    let mut first = TcpStream::connect(addr(pb)).unwrap();
    first.write_all(&genuine).unwrap();
    wait_until("a's session to come back after the replacement", || {
        established(&b.handle) && sessions(&b.handle) >= 2
    });
    let before = status(&b.handle);
    // The same Hello again, replayed: refused, the session stays.
    let mut replay = TcpStream::connect(addr(pb)).unwrap();
    replay.write_all(&genuine).unwrap();
    wait_until("the replayed Hello to be refused", || {
        status(&b.handle).driver.refused_replacements == before.driver.refused_replacements + 1
    });
    assert_eq!(sessions(&b.handle), before.session.stats.established);
    assert!(established(&b.handle));
    a.view.insert(entry(100));
    a.events
        .send(SourceBatch::Events(vec![Event::New(entry(100))]));
    wait_until("replication after the attacks", || {
        b.view.get(&entry(100).key()).is_some()
    });
    drop((forged, garbage, first, replay));
    block(a.handle.shutdown());
    block(b.handle.shutdown());
}
