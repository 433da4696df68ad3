//! Unit tests of the session rules against a scripted peer that builds
//! its frames by hand (so it can lie: wrong keys, replays, gaps, garbage).

use std::time::Duration;

use super::*;
use crate::entry::{proto, status, tcp_state, TcpInfo, Tuple, L4};
use crate::wire::{decode_frame, FrameBuf, Psk, HEADER_LEN};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const LOCAL: Nonce = Nonce([0x11; 16]);
const PEER: Nonce = Nonce([0x22; 16]);

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn psk() -> Psk {
    Psk::from_key_file(KEY).unwrap()
}

fn config(role: Role) -> Config {
    Config::new("lb-local", role, psk())
}

fn entry(port: u16) -> Entry {
    Entry {
        proto: proto::TCP,
        original: Tuple {
            src: "198.51.100.7".parse().unwrap(),
            dst: "192.0.2.100".parse().unwrap(),
            l4: L4::Ports { src: port, dst: 80 },
        },
        reply: Tuple {
            src: "10.0.1.11".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            l4: L4::Ports {
                src: 8080,
                dst: port,
            },
        },
        status: status::CONFIRMED | status::ASSURED | status::SEEN_REPLY | status::DST_NAT,
        timeout: 3600,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
            state: tcp_state::ESTABLISHED,
            ..TcpInfo::default()
        }),
    }
}

/// The other end, played by hand.
struct Peer {
    psk: Psk,
    nonce: Nonce,
    local_nonce: Nonce,
    tx_seq: u64,
    rx_seq: u64,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            psk: psk(),
            nonce: PEER,
            local_nonce: LOCAL,
            tx_seq: 1,
            rx_seq: 1,
        }
    }

    fn hello(&self, role: Role) -> Vec<u8> {
        Message::Hello(Hello {
            role,
            max_payload: 1 << 20,
            nonce: self.nonce,
            node_id: "lb-peer".into(),
        })
        .encode_frame(0, &self.psk.hello_key())
        .unwrap()
    }

    fn tx_key(&self) -> MacKey {
        self.psk.frame_key(&self.nonce, &self.local_nonce)
    }

    fn rx_key(&self) -> MacKey {
        self.psk.frame_key(&self.local_nonce, &self.nonce)
    }

    /// A frame with the next sequence number.
    fn frame(&mut self, msg: &Message) -> Vec<u8> {
        let f = msg.encode_frame(self.tx_seq, &self.tx_key()).unwrap();
        self.tx_seq += 1;
        f
    }

    /// The messages in the session's Send actions (after the Hello).
    fn read(&mut self, actions: &[Action]) -> Vec<Message> {
        let mut out = Vec::new();
        for a in actions {
            if let Action::Send { bytes } = a {
                if bytes[3] == kind::HELLO {
                    let (seq, msg) = decode_frame(bytes, &self.psk.hello_key(), 1 << 24).unwrap();
                    assert_eq!(seq, 0);
                    out.push(msg);
                    continue;
                }
                let (seq, msg) = decode_frame(bytes, &self.rx_key(), 1 << 24).unwrap();
                assert_eq!(seq, self.rx_seq, "session sent sequence numbers in order");
                self.rx_seq += 1;
                out.push(msg);
            }
        }
        out
    }
}

fn bytes(b: Vec<u8>) -> Input<'static> {
    Input::BytesReceived { bytes: b.into() }
}

/// A session of `role` with a completed handshake, and the peer.
fn established(role: Role, peer_role: Role) -> (Session, Peer, Vec<Action>) {
    let mut s = Session::new(config(role), t(0)).unwrap();
    let mut p = Peer::new();
    let a = s.handle(t(0), Input::Connected { nonce: LOCAL });
    let msgs = p.read(&a);
    assert!(
        matches!(&msgs[..], [Message::Hello(h)] if h.nonce == LOCAL && h.node_id == "lb-local" && h.role == role)
    );
    let mut stream = p.hello(peer_role);
    stream.extend(p.frame(&Message::Heartbeat));
    let a = s.handle(t(1), bytes(stream));
    assert_eq!(s.link(), LinkState::Established);
    // Our key confirmation (and a Role if it changed).
    assert_eq!(p.read(&a)[0], Message::Heartbeat);
    (s, p, a)
}

fn closed_with(actions: &[Action]) -> Option<&CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close { reason } => Some(reason),
        _ => None,
    })
}

fn dump_requests(actions: &[Action]) -> Vec<DumpReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestDump { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The entries of every Upsert in `msgs`.
fn upserted(msgs: &[Message]) -> Vec<Entry> {
    msgs.iter()
        .flat_map(|m| match m {
            Message::Upsert { entries } => entries.clone(),
            _ => vec![],
        })
        .collect()
}

/// The peer asks master `s` to resync the buckets of `scope` (a digest
/// mismatch); `s` asks its driver for a dump.
fn ask_partial_resync(s: &mut Session, p: &mut Peer, scope: Scope) {
    let a = s.handle(
        t(10),
        bytes(p.frame(&Message::ResyncRequest {
            reason: ResyncReason::DigestMismatch,
            scope,
        })),
    );
    assert_eq!(dump_requests(&a), vec![DumpReason::PartialResync]);
    p.read(&a);
}

#[test]
fn config_is_validated() {
    let mut c = config(Role::Master);
    c.node_id = String::new();
    assert_eq!(Session::new(c, t(0)).err(), Some(ConfigError::NodeId(0)));
    let mut c = config(Role::Master);
    c.limits.batch_bytes = 10;
    assert!(matches!(
        Session::new(c, t(0)).err(),
        Some(ConfigError::BatchBytes { .. })
    ));
    let mut c = config(Role::Master);
    c.timers.heartbeat_interval = Duration::from_secs(10);
    assert_eq!(
        Session::new(c, t(0)).err(),
        Some(ConfigError::HeartbeatVsDead)
    );
}

#[test]
fn handshake_confirms_keys_before_anything_else() {
    let mut s = Session::new(config(Role::Master), t(0)).unwrap();
    let mut p = Peer::new();
    let a = s.handle(t(0), Input::Connected { nonce: LOCAL });
    assert_eq!(p.read(&a).len(), 1);
    assert_eq!(s.link(), LinkState::Handshake);
    // The peer's Hello alone: we answer with our key confirmation, but
    // the peer has proven nothing yet, so no dump is asked for.
    let a = s.handle(t(1), bytes(p.hello(Role::Backup)));
    assert_eq!(p.read(&a), vec![Message::Heartbeat]);
    assert!(dump_requests(&a).is_empty());
    assert_eq!(s.link(), LinkState::Handshake);
    // Its confirmation completes the handshake; as master we want a dump.
    let a = s.handle(t(2), bytes(p.frame(&Message::Heartbeat)));
    assert_eq!(s.link(), LinkState::Established);
    assert_eq!(dump_requests(&a), vec![DumpReason::FullResync]);
    assert!(a.iter().any(|x| matches!(x, Action::Notice { notice: Notice::Established { peer, peer_role: Role::Backup } } if peer == "lb-peer")));
    let st = s.status();
    assert_eq!(st.peer.unwrap().node_id, "lb-peer");
    assert_eq!(s.stats().established, 1);
}

#[test]
fn handshake_rejections() {
    // (name, stream after our Hello, expected close, counter check)
    type Check = fn(&Stats) -> bool;
    let other_key = Psk::from_key_file(b"another key file of 32 bytes....").unwrap();
    let mut peer = Peer::new();
    let cases: Vec<(&str, Vec<u8>, CloseReason, Check)> = vec![
        (
            "hello under another key_file",
            Message::Hello(Hello {
                role: Role::Backup,
                max_payload: 1 << 20,
                nonce: PEER,
                node_id: "lb-peer".into(),
            })
            .encode_frame(0, &other_key.hello_key())
            .unwrap(),
            CloseReason::Rejected {
                error: DecodeError::BadMac,
            },
            |s| s.rejected_auth == 1 && s.handshake_failures == 1,
        ),
        (
            "first frame not a hello",
            peer.frame(&Message::Heartbeat),
            CloseReason::Protocol {
                violation: Violation::ExpectedHello {
                    kind: kind::HEARTBEAT,
                },
            },
            |s| s.protocol_errors == 1,
        ),
        (
            "our own hello reflected",
            Message::Hello(Hello {
                role: Role::Master,
                max_payload: 1 << 20,
                nonce: LOCAL,
                node_id: "lb-peer".into(),
            })
            .encode_frame(0, &psk().hello_key())
            .unwrap(),
            CloseReason::Protocol {
                violation: Violation::ReflectedHello,
            },
            |s| s.protocol_errors == 1,
        ),
        (
            "connected to ourselves",
            Message::Hello(Hello {
                role: Role::Master,
                max_payload: 1 << 20,
                nonce: PEER,
                node_id: "lb-local".into(),
            })
            .encode_frame(0, &psk().hello_key())
            .unwrap(),
            CloseReason::Protocol {
                violation: Violation::SelfConnection,
            },
            |s| s.protocol_errors == 1,
        ),
        (
            "peer accepts too little",
            Message::Hello(Hello {
                role: Role::Master,
                max_payload: 100,
                nonce: PEER,
                node_id: "lb-peer".into(),
            })
            .encode_frame(0, &psk().hello_key())
            .unwrap(),
            CloseReason::Protocol {
                violation: Violation::PeerMaxPayload { max: 100 },
            },
            |s| s.protocol_errors == 1,
        ),
        (
            "key confirmation under the wrong key",
            {
                let mut b = Peer::new().hello(Role::Master);
                b.extend(
                    Message::Heartbeat
                        .encode_frame(1, &MacKey::new(&[9; 32]))
                        .unwrap(),
                );
                b
            },
            CloseReason::Rejected {
                error: DecodeError::BadMac,
            },
            |s| s.rejected_auth == 1 && s.handshake_failures == 1,
        ),
    ];
    for (name, stream, expected, check) in cases {
        let mut s = Session::new(config(Role::Backup), t(0)).unwrap();
        s.handle(t(0), Input::Connected { nonce: LOCAL });
        let a = s.handle(t(1), bytes(stream));
        assert_eq!(closed_with(&a), Some(&expected), "{name}");
        assert_eq!(s.link(), LinkState::Down, "{name}");
        let st = s.stats();
        assert!(check(&st), "{name}: {st:?}");
        assert_eq!(st.disconnects, 1, "{name}");
    }
}

#[test]
fn handshake_timeout() {
    let mut s = Session::new(config(Role::Backup), t(0)).unwrap();
    s.handle(t(0), Input::Connected { nonce: LOCAL });
    assert_eq!(s.next_deadline(), Some(t(5000)));
    assert!(s.handle(t(4999), Input::Timer).is_empty());
    let a = s.handle(t(5000), Input::Timer);
    assert_eq!(closed_with(&a), Some(&CloseReason::HandshakeTimeout));
    assert_eq!(s.stats().handshake_failures, 1);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn backup_applies_then_acks_once_per_read() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let mut stream = p.frame(&Message::Upsert {
        entries: vec![entry(1), entry(2)],
    });
    stream.extend(p.frame(&Message::Upsert {
        entries: vec![entry(3)],
    }));
    stream.extend(p.frame(&Message::Delete {
        keys: vec![entry(2).key(), entry(9).key()],
    }));
    let a = s.handle(t(10), bytes(stream));
    // Kernel writes first, in stream order, then one cumulative ack.
    assert!(matches!(&a[0], Action::ApplyUpserts { entries } if entries.len() == 2));
    assert!(matches!(&a[1], Action::ApplyUpserts { entries } if entries.len() == 1));
    assert!(matches!(&a[2], Action::ApplyDeletes { keys } if keys.len() == 2));
    let msgs = p.read(&a[3..]);
    assert_eq!(msgs, vec![Message::Ack { seq: 4 }]);
    let st = s.stats();
    assert_eq!((st.created, st.destroyed, st.deletes_unknown), (3, 1, 1));
    assert_eq!(st.entries, 2);
    assert_eq!(s.replicated_len(), 2);
}

#[test]
fn rejected_frames_close_and_count() {
    type Make = fn(&mut Peer) -> Vec<u8>;
    type Check = fn(&Stats) -> bool;
    let cases: Vec<(&str, Make, Check)> = vec![
        (
            "forged: MAC under another key",
            |p| {
                let f = Message::Upsert {
                    entries: vec![entry(66)],
                }
                .encode_frame(p.tx_seq, &MacKey::new(&[3; 32]))
                .unwrap();
                p.tx_seq += 1;
                f
            },
            |s| s.rejected_auth == 1,
        ),
        (
            "altered: one payload bit flipped",
            |p| {
                let mut f = p.frame(&Message::Upsert {
                    entries: vec![entry(66)],
                });
                f[HEADER_LEN + 30] ^= 1;
                f
            },
            |s| s.rejected_auth == 1,
        ),
        (
            "replayed: same sequence number again",
            |p| {
                let mut f = p.frame(&Message::Upsert {
                    entries: vec![entry(66)],
                });
                f.extend(f.clone());
                f
            },
            |s| s.rejected_replay == 1 && s.upserts_received == 1,
        ),
        (
            "gap: a sequence number skipped",
            |p| {
                p.tx_seq += 2;
                p.frame(&Message::Heartbeat)
            },
            |s| s.lost == 2,
        ),
        (
            "oversized: header announces 16 MiB",
            |_| {
                let mut h = vec![0x43, 0x54, 1, kind::UPSERT];
                h.extend((16u32 << 20).to_be_bytes());
                h.extend(5u64.to_be_bytes());
                h
            },
            |s| s.oversized == 1,
        ),
        (
            "bad magic",
            |_| {
                vec![
                    0x47, 0x45, 0x54, 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e,
                    0x31, 0x0d, 0x0a,
                ]
            },
            |s| s.malformed == 1,
        ),
        (
            "future version",
            |p| {
                let mut f = p.frame(&Message::Heartbeat);
                f[2] = 2;
                f
            },
            |s| s.bad_version == 1,
        ),
        (
            "unknown type, valid MAC",
            |p| {
                let f = FrameBuf::new(99, 0).seal(p.tx_seq, &p.tx_key()).unwrap();
                p.tx_seq += 1;
                f
            },
            |s| s.unknown_type == 1,
        ),
        (
            "malformed batch, valid MAC: second record has a bad family",
            |p| {
                let mut f = FrameBuf::new(kind::UPSERT, 0);
                f.put_u32(2);
                f.put(crate::wire::encode_entry(&entry(1)).unwrap().as_bytes());
                let mut bad = crate::wire::encode_entry(&entry(2))
                    .unwrap()
                    .as_bytes()
                    .to_vec();
                bad[0] = 5;
                f.put(&bad);
                let b = f.seal(p.tx_seq, &p.tx_key()).unwrap();
                p.tx_seq += 1;
                b
            },
            |s| s.malformed == 1 && s.upserts_received == 0,
        ),
        (
            "count larger than the records",
            |p| {
                let mut f = FrameBuf::new(kind::DELETE, 0);
                f.put_u32(1_000_000);
                let b = f.seal(p.tx_seq, &p.tx_key()).unwrap();
                p.tx_seq += 1;
                b
            },
            |s| s.malformed == 1,
        ),
    ];
    for (name, make, check) in cases {
        let (mut s, mut p, _) = established(Role::Backup, Role::Master);
        let stream = make(&mut p);
        let a = s.handle(t(10), bytes(stream));
        assert!(closed_with(&a).is_some(), "{name}: {a:?}");
        assert_eq!(s.link(), LinkState::Down, "{name}");
        let st = s.stats();
        assert!(check(&st), "{name}: {st:?}");
        // Never a partial write: nothing but what fully verified before.
        let applied: usize = a
            .iter()
            .map(|x| match x {
                Action::ApplyUpserts { entries } => entries.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(applied as u64, st.upserts_received, "{name}");
    }
}

#[test]
fn frame_of_an_old_session_fails_the_mac_in_a_new_one() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let recorded = p.frame(&Message::Upsert {
        entries: vec![entry(1)],
    });
    s.handle(t(10), bytes(recorded.clone()));
    s.handle(t(11), Input::Disconnected);
    // New connection, new nonces; the recorded frame carries the right
    // next sequence number for the new session (2) but the old key.
    s.handle(
        t(20),
        Input::Connected {
            nonce: Nonce([0x33; 16]),
        },
    );
    let mut p2 = Peer::new();
    p2.local_nonce = Nonce([0x33; 16]);
    p2.nonce = Nonce([0x44; 16]);
    let mut stream = p2.hello(Role::Master);
    stream.extend(p2.frame(&Message::Heartbeat));
    s.handle(t(21), bytes(stream));
    assert_eq!(s.link(), LinkState::Established);
    let a = s.handle(t(22), bytes(recorded));
    assert_eq!(
        closed_with(&a),
        Some(&CloseReason::Rejected {
            error: DecodeError::BadMac
        })
    );
    assert_eq!(s.stats().rejected_auth, 1);
}

#[test]
fn truncated_frame_at_disconnect_is_counted() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let f = p.frame(&Message::Upsert {
        entries: vec![entry(1)],
    });
    let a = s.handle(t(10), bytes(f[..f.len() - 3].to_vec()));
    assert!(a.is_empty(), "nothing applied from a partial frame");
    let a = s.handle(t(11), Input::Disconnected);
    assert!(
        matches!(&a[..], [Action::Notice { notice: Notice::Disconnected { partial_frame_bytes } }] if *partial_frame_bytes == f.len() - 3)
    );
    let st = s.stats();
    assert_eq!((st.truncated, st.upserts_received), (1, 0));
}

#[test]
fn heartbeats_and_dead_peer() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    // Last frame sent at 1 (the key confirmation): heartbeat due at 1001.
    assert_eq!(s.next_deadline(), Some(t(1001)));
    let a = s.handle(t(1001), Input::Timer);
    assert_eq!(p.read(&a), vec![Message::Heartbeat]);
    s.handle(t(3000), bytes(p.frame(&Message::Heartbeat)));
    // Silent peer: dead 5 s after its last frame.
    let mut now;
    loop {
        now = s.next_deadline().unwrap();
        let a = s.handle(now, Input::Timer);
        if let Some(reason) = closed_with(&a) {
            assert_eq!(reason, &CloseReason::PeerTimeout);
            break;
        }
        p.read(&a);
    }
    assert_eq!(now, t(8000));
    assert_eq!(s.stats().peer_timeouts, 1);
}

#[test]
fn bad_acks_are_violations() {
    let (mut s, mut p, _) = established(Role::Master, Role::Backup);
    let a = s.handle(t(10), bytes(p.frame(&Message::Ack { seq: 50 })));
    assert!(matches!(
        closed_with(&a),
        Some(CloseReason::Protocol {
            violation: Violation::BadAck { ack: 50, .. }
        })
    ));
}

/// Master with a bulk of `n` entries done and acked.
fn synced_master(n: u16) -> (Session, Peer) {
    let (mut s, mut p, a) = established(Role::Master, Role::Backup);
    assert_eq!(dump_requests(&a), vec![DumpReason::FullResync]);
    let entries: Vec<Entry> = (1..=n).map(entry).collect();
    let a = s.handle(t(2), Input::LocalDump { entries });
    let msgs = p.read(&a);
    assert!(matches!(&msgs[0], Message::BulkStart { scope, .. } if scope.is_full()));
    assert!(matches!(msgs.last(), Some(Message::BulkEnd { count, .. }) if *count == u32::from(n)));
    let ack = p.rx_seq - 1;
    s.handle(t(3), bytes(p.frame(&Message::Ack { seq: ack })));
    assert!(s.in_sync());
    (s, p)
}

#[test]
fn events_are_batched_deduplicated_and_coalesced() {
    let (mut s, mut p) = synced_master(3);
    // Entry 1 unchanged (dedup), 4 new, 5 new then destroyed before the
    // flush (cancelled), 2 destroyed.
    let events = vec![
        Event::Update(entry(1)),
        Event::New(entry(4)),
        Event::New(entry(5)),
        Event::Destroy(entry(5).key()),
        Event::Destroy(entry(2).key()),
    ];
    // All in one input: the flush runs after it, so 5 never leaves.
    let a = s.handle(t(10), Input::LocalEvents { events });
    let msgs = p.read(&a);
    assert_eq!(
        msgs,
        vec![
            Message::Upsert {
                entries: vec![entry(4)]
            },
            Message::Delete {
                keys: vec![entry(2).key()]
            }
        ]
    );
    let st = s.stats();
    assert_eq!(st.events_deduplicated, 1);
    assert_eq!(st.events_coalesced, 1);
    assert_eq!(s.replicated_len(), 3);
}

#[test]
fn backup_ignores_events_and_master_without_peer_drops_them() {
    let mut s = Session::new(config(Role::Backup), t(0)).unwrap();
    s.handle(
        t(0),
        Input::LocalEvents {
            events: vec![Event::New(entry(1))],
        },
    );
    assert_eq!(s.stats().events_ignored, 1);
    let mut m = Session::new(config(Role::Master), t(0)).unwrap();
    let a = m.handle(
        t(0),
        Input::LocalEvents {
            events: vec![Event::New(entry(1))],
        },
    );
    assert!(a.is_empty());
    assert_eq!(m.stats().events_unsent, 1);
    assert_eq!(m.pending_slots(), 0);
}

#[test]
fn window_full_coalesces_by_key() {
    let (mut s, mut p) = synced_master(0);
    let window = s.config().limits.window_bytes as u64;
    // 200,000 updates to 100 keys, never acked.
    for round in 0..2000u32 {
        let events = (1..=100u16)
            .map(|port| {
                let mut e = entry(port);
                e.mark = round;
                Event::Update(e)
            })
            .collect();
        let a = s.handle(t(10), Input::LocalEvents { events });
        p.read(&a);
        assert!(s.pending_slots() <= 100);
    }
    let st = s.stats();
    assert!(st.unacked_bytes <= window + 64 * 1024, "{st:?}");
    assert!(st.events_coalesced > 100_000, "{st:?}");
    // Acks open the window: the latest marks go out, once per key.
    let ack = p.rx_seq - 1;
    let a = s.handle(t(20), bytes(p.frame(&Message::Ack { seq: ack })));
    let sent = upserted(&p.read(&a));
    assert_eq!(sent.len(), 100);
    assert!(sent.iter().all(|e| e.mark == 1999));
    assert_eq!(s.stats().pending, 0);
}

#[test]
fn driver_queue_backpressure() {
    let (mut s, mut p) = synced_master(0);
    s.handle(
        t(5),
        Input::Writable {
            queued_bytes: 10 << 20,
        },
    );
    let a = s.handle(
        t(10),
        Input::LocalEvents {
            events: vec![Event::New(entry(1))],
        },
    );
    assert!(p.read(&a).is_empty());
    assert_eq!(s.stats().pending, 1);
    let a = s.handle(t(11), Input::Writable { queued_bytes: 0 });
    assert_eq!(p.read(&a).len(), 1);
}

#[test]
fn overrun_reconciles_at_once_and_sends_only_differences() {
    let (mut s, mut p) = synced_master(10);
    let a = s.handle(t(10), Input::EventOverrun);
    assert_eq!(dump_requests(&a), vec![DumpReason::Overrun]);
    // Kernel now: 1..=8 (9 and 10 destroyed unseen), 11 new, 3 changed.
    let mut dump: Vec<Entry> = (1..=8).map(entry).collect();
    dump.push(entry(11));
    dump[2].status |= status::SRC_NAT;
    let a = s.handle(t(11), Input::LocalDump { entries: dump });
    let msgs = p.read(&a);
    let mut upserts: Vec<u16> = Vec::new();
    let mut deletes = 0;
    for m in msgs {
        match m {
            Message::Upsert { entries } => {
                upserts.extend(entries.iter().map(|e| match e.original.l4 {
                    L4::Ports { src, .. } => src,
                    _ => 0,
                }))
            }
            Message::Delete { keys } => deletes += keys.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    upserts.sort();
    assert_eq!(upserts, vec![3, 11]);
    assert_eq!(deletes, 2);
    let st = s.stats();
    assert_eq!(
        (st.overruns, st.reconcile_upserts, st.reconcile_deletes),
        (1, 2, 2)
    );
}

#[test]
fn digest_mismatch_asks_for_the_differing_buckets() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let entries: Vec<Entry> = (1..=20).map(entry).collect();
    let mut stream = p.frame(&Message::BulkStart {
        generation: 1,
        scope: Scope::ALL,
    });
    stream.extend(p.frame(&Message::Upsert {
        entries: entries.clone(),
    }));
    let mut master = Table::default();
    for e in &entries {
        master.upsert(e.key(), content_hash(e).unwrap(), t(0), None);
    }
    stream.extend(p.frame(&Message::BulkEnd {
        generation: 1,
        count: 20,
        digest: master.digest().fold(&Scope::ALL),
    }));
    let a = s.handle(t(10), bytes(stream));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Notice {
            notice: Notice::BulkReceived {
                digest_ok: true,
                ..
            }
        }
    )));
    assert!(s.in_sync());
    p.read(&a);
    // The kernel refused entry 7 (table full): forgotten here.
    s.handle(
        t(11),
        Input::ApplyFailed {
            keys: vec![entry(7).key()],
            table_full: true,
        },
    );
    assert_eq!(s.stats().table_full, 1);
    // At the digest interval the backup asks; the master's digest differs
    // in entry 7's bucket only.
    let mut due;
    let id = loop {
        due = s.next_deadline().unwrap();
        let a = s.handle(due, Input::Timer);
        let found = p.read(&a).into_iter().find_map(|m| match m {
            Message::DigestRequest { id } => Some(id),
            _ => None,
        });
        // Keep the session alive while the clock runs.
        s.handle(due, bytes(p.frame(&Message::Heartbeat)));
        if let Some(id) = found {
            break id;
        }
    };
    assert_eq!(due, t(10_010));
    let a = s.handle(
        due,
        bytes(p.frame(&Message::Digest {
            id,
            digest: master.digest().clone(),
        })),
    );
    let want = {
        let mut sc = Scope::NONE;
        sc.insert(bucket_of(key_hash(&entry(7).key()).unwrap()));
        sc
    };
    assert!(p.read(&a).contains(&Message::ResyncRequest {
        reason: ResyncReason::DigestMismatch,
        scope: want
    }));
    assert_eq!(s.stats().digest_mismatches, 1);
}

#[test]
fn master_answers_resync_requests_with_a_partial_bulk() {
    let (mut s, mut p) = synced_master(50);
    let b = bucket_of(key_hash(&entry(7).key()).unwrap());
    let mut scope = Scope::NONE;
    scope.insert(b);
    ask_partial_resync(&mut s, &mut p, scope);
    let dump: Vec<Entry> = (1..=50).map(entry).collect();
    let a = s.handle(t(11), Input::LocalDump { entries: dump });
    let msgs = p.read(&a);
    assert!(matches!(&msgs[0], Message::BulkStart { scope: sc, .. } if *sc == scope));
    let resent = upserted(&msgs);
    assert!(resent.contains(&entry(7)));
    assert!(resent
        .iter()
        .all(|e| bucket_of(key_hash(&e.key()).unwrap()) == b));
    assert_eq!(s.stats().resent, resent.len() as u64);
    assert_eq!(s.replicated_len(), 50);
}

/// The race the failover test found: an entry created after the dump was
/// taken, whose event was sent live before the dump came back, must be in
/// the bulk; otherwise the peer deletes it at BulkEnd (it holds the key in
/// scope and did not get it during the bulk) and nobody resends it.
#[test]
fn an_entry_created_while_the_dump_is_on_its_way_is_in_the_bulk() {
    let (mut s, mut p) = synced_master(50);
    // A new entry and the bucket it falls in.
    let late = entry(500);
    let b = bucket_of(key_hash(&late.key()).unwrap());
    let mut scope = Scope::NONE;
    scope.insert(b);
    ask_partial_resync(&mut s, &mut p, scope);
    // The driver dumps (without `late`), then the kernel creates `late` and
    // its event reaches the session before the dump does: sent live.
    let a = s.handle(
        t(11),
        Input::LocalEvents {
            events: vec![Event::New(late)],
        },
    );
    let live = upserted(&p.read(&a));
    assert!(live.contains(&late), "the event goes out at once");
    // Meanwhile another entry of the dump was destroyed.
    let gone = (1..=50)
        .map(entry)
        .find(|e| bucket_of(key_hash(&e.key()).unwrap()) != b)
        .unwrap();
    let a = s.handle(
        t(11),
        Input::LocalEvents {
            events: vec![Event::Destroy(gone.key())],
        },
    );
    p.read(&a);
    let dump: Vec<Entry> = (1..=50).map(entry).collect();
    let a = s.handle(t(12), Input::LocalDump { entries: dump });
    let msgs = p.read(&a);
    assert!(matches!(&msgs[0], Message::BulkStart { scope: sc, .. } if *sc == scope));
    let bulk = upserted(&msgs);
    assert!(
        bulk.contains(&late),
        "the bulk must carry the entry the dump predates"
    );
    // The destroyed entry (outside the scope) is not resurrected by the
    // reconcile part of the dump.
    assert_eq!(s.stats().reconcile_upserts, 0);
}

#[test]
fn resync_requests_to_a_backup_are_ignored() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let a = s.handle(
        t(10),
        bytes(p.frame(&Message::ResyncRequest {
            reason: ResyncReason::KernelDiffers,
            scope: Scope::ALL,
        })),
    );
    assert!(dump_requests(&a).is_empty());
    assert_eq!(s.stats().resync_requests_ignored, 1);
}

#[test]
fn dump_failure_is_retried() {
    let (mut s, _p, a) = established(Role::Master, Role::Backup);
    assert_eq!(dump_requests(&a), vec![DumpReason::FullResync]);
    s.handle(t(2), Input::DumpFailed);
    assert_eq!(s.stats().dump_failures, 1);
    assert_eq!(s.next_deadline(), Some(t(1001)));
    let a = s.handle(t(1002), Input::Timer);
    assert_eq!(dump_requests(&a), vec![DumpReason::FullResync]);
}

#[test]
fn stale_dump_from_a_previous_connection_is_discarded() {
    let (mut s, _p, _) = established(Role::Master, Role::Backup);
    s.handle(t(5), Input::Disconnected);
    let (mut s2, _, _) = (s, (), ());
    s2.handle(
        t(6),
        Input::Connected {
            nonce: Nonce([0x55; 16]),
        },
    );
    let mut p = Peer::new();
    p.local_nonce = Nonce([0x55; 16]);
    let mut stream = p.hello(Role::Backup);
    stream.extend(p.frame(&Message::Heartbeat));
    let a = s2.handle(t(7), bytes(stream));
    assert_eq!(dump_requests(&a), vec![DumpReason::FullResync]);
    p.read(&a);
    // The answer to the first connection's request arrives first.
    let a = s2.handle(
        t(8),
        Input::LocalDump {
            entries: vec![entry(1)],
        },
    );
    assert!(p.read(&a).is_empty());
    assert_eq!(s2.stats().dumps_discarded, 1);
    let a = s2.handle(
        t(9),
        Input::LocalDump {
            entries: vec![entry(1)],
        },
    );
    assert!(matches!(p.read(&a)[0], Message::BulkStart { .. }));
}

#[test]
fn shutdown_says_goodbye() {
    let (mut s, mut p, _) = established(Role::Master, Role::Backup);
    let a = s.handle(t(10), Input::Shutdown);
    assert_eq!(
        p.read(&a),
        vec![Message::Goodbye {
            reason: GoodbyeReason::Shutdown
        }]
    );
    assert_eq!(closed_with(&a), Some(&CloseReason::Shutdown));
    // And the peer's goodbye closes us.
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let a = s.handle(
        t(10),
        bytes(p.frame(&Message::Goodbye {
            reason: GoodbyeReason::Shutdown,
        })),
    );
    assert!(matches!(
        closed_with(&a),
        Some(CloseReason::PeerGoodbye { .. })
    ));
    assert_eq!(s.stats().peer_goodbyes, 1);
}

#[test]
fn backup_reconcile_removes_stale_and_asks_for_missing() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let entries: Vec<Entry> = (1..=5).map(entry).collect();
    let mut stream = p.frame(&Message::BulkStart {
        generation: 1,
        scope: Scope::ALL,
    });
    stream.extend(p.frame(&Message::Upsert {
        entries: entries.clone(),
    }));
    stream.extend(p.frame(&Message::BulkEnd {
        generation: 1,
        count: 5,
        digest: 0,
    }));
    let a = s.handle(t(10), bytes(stream));
    // A full bulk is followed by a look at our own kernel.
    assert_eq!(dump_requests(&a), vec![DumpReason::Reconcile]);
    p.read(&a);
    // Our kernel: 1..=4 (5 expired) and 99 (left from before a restart).
    let mut dump: Vec<Entry> = (1..=4).map(entry).collect();
    dump.push(entry(99));
    let a = s.handle(t(11), Input::LocalDump { entries: dump });
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::ApplyDeletes { keys } if keys == &vec![entry(99).key()])));
    let msgs = p.read(&a);
    assert!(msgs.iter().any(|m| matches!(
        m,
        Message::ResyncRequest {
            reason: ResyncReason::KernelDiffers,
            ..
        }
    )));
    let st = s.stats();
    assert_eq!((st.stale_removed, st.missing_in_kernel), (1, 1));
    // Next look: entry 2 differs in our kernel (changes lost while we were
    // master, say): its bucket is asked for again too.
    let mut dump: Vec<Entry> = (1..=5).map(entry).collect();
    dump[1].mark = 77;
    let a = s.handle(t(12), Input::LocalDump { entries: dump });
    let want = {
        let mut sc = Scope::NONE;
        sc.insert(bucket_of(key_hash(&entry(2).key()).unwrap()));
        sc
    };
    assert!(p.read(&a).contains(&Message::ResyncRequest {
        reason: ResyncReason::KernelDiffers,
        scope: want
    }));
    assert_eq!(s.stats().different_in_kernel, 1);
}

#[test]
fn bulk_received_as_master_deletes_nothing() {
    let (mut s, mut p, _) = established(Role::Master, Role::Master);
    let a = s.handle(
        t(2),
        Input::LocalDump {
            entries: vec![entry(1)],
        },
    );
    p.read(&a);
    // The peer (also master, split brain) bulks us without entry 1.
    let mut stream = p.frame(&Message::BulkStart {
        generation: 1,
        scope: Scope::ALL,
    });
    stream.extend(p.frame(&Message::Upsert {
        entries: vec![entry(2)],
    }));
    stream.extend(p.frame(&Message::BulkEnd {
        generation: 1,
        count: 1,
        digest: 0,
    }));
    let a = s.handle(t(3), bytes(stream));
    assert!(!a.iter().any(|x| matches!(x, Action::ApplyDeletes { .. })));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Notice {
            notice: Notice::BulkCleanupSkipped {
                would_remove: 1,
                ..
            }
        }
    )));
}

#[test]
fn bulk_end_without_start_is_a_violation() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let a = s.handle(
        t(10),
        bytes(p.frame(&Message::BulkEnd {
            generation: 3,
            count: 0,
            digest: 0,
        })),
    );
    assert_eq!(
        closed_with(&a),
        Some(&CloseReason::Protocol {
            violation: Violation::BulkEnd { generation: 3 }
        })
    );
}

#[test]
fn role_change_announced_and_new_master_reconciles() {
    let (mut s, mut p, _) = established(Role::Backup, Role::Master);
    let mut stream = p.frame(&Message::BulkStart {
        generation: 1,
        scope: Scope::ALL,
    });
    stream.extend(p.frame(&Message::BulkEnd {
        generation: 1,
        count: 0,
        digest: Digest::default().fold(&Scope::ALL),
    }));
    let a = s.handle(t(10), bytes(stream));
    p.read(&a);
    s.handle(t(11), Input::LocalDump { entries: vec![] });
    let a = s.handle(t(12), Input::RoleChanged { role: Role::Master });
    assert_eq!(
        p.read(&a),
        vec![Message::Role {
            role: Role::Master,
            confirm: true
        }]
    );
    // Nothing from our own set until the old master confirms it drained.
    assert!(dump_requests(&a).is_empty());
    let a = s.handle(
        t(12),
        bytes(p.frame(&Message::Role {
            role: Role::Backup,
            confirm: false,
        })),
    );
    assert_eq!(dump_requests(&a), vec![DumpReason::RoleChange]);
    p.read(&a);
    let a = s.handle(
        t(13),
        Input::LocalDump {
            entries: vec![entry(1)],
        },
    );
    // What our kernel has beyond the set goes out, then we check that
    // both sets agree (changes may have crossed during the switchover).
    assert_eq!(
        p.read(&a),
        vec![
            Message::Upsert {
                entries: vec![entry(1)]
            },
            Message::DigestRequest { id: 1 }
        ]
    );
    // The old master's set lacks entry 1 and has entry 9: the buckets that
    // differ are sent again, from a fresh dump.
    let mut theirs = Table::default();
    theirs.upsert(entry(9).key(), content_hash(&entry(9)).unwrap(), t(0), None);
    let a = s.handle(
        t(14),
        bytes(p.frame(&Message::Digest {
            id: 1,
            digest: theirs.digest().clone(),
        })),
    );
    assert_eq!(dump_requests(&a), vec![DumpReason::PartialResync]);
    p.read(&a);
    let a = s.handle(
        t(15),
        Input::LocalDump {
            entries: vec![entry(1)],
        },
    );
    let msgs = p.read(&a);
    let mut want = Scope::NONE;
    for port in [1, 9] {
        want.insert(bucket_of(key_hash(&entry(port).key()).unwrap()));
    }
    assert!(matches!(&msgs[0], Message::BulkStart { scope, .. } if *scope == want));
    assert!(msgs.contains(&Message::Upsert {
        entries: vec![entry(1)]
    }));
    assert_eq!(s.stats().role_changes, 1);
    assert_eq!(s.stats().digest_mismatches, 1);
}

#[test]
fn status_serialises() {
    let (s, _p) = synced_master(2);
    let st = s.status();
    assert_eq!(st.link, LinkState::Established);
    assert!(st.in_sync);
    let json = serde_json::to_string(&st).unwrap();
    let back: Status = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
}
