//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs`
//! (cargo-fuzz, nightly) and the proptests in `tests/fuzz_wire.rs`
//! (stable). Not API.

use std::time::Duration;

use crate::entry::Entry;
use crate::session::{Config, Event, Input, LinkState, Session};
use crate::time::Time;
use crate::wire::{
    self, decode_entry, decode_key, encode_entry, encode_key, FrameBuf, FrameReader, Hello,
    Message, Nonce, Psk, Role, HARD_MAX_PAYLOAD,
};

/// Feed `data` to every decoder: as a frame, as the payload of every
/// message type, as records, and through the stream reassembler split in
/// two. Panics (the fuzz failure) only if a decoder panics or if something
/// that decodes does not re-encode to exactly the same bytes (the
/// encoding is canonical).
pub fn frame(data: &[u8]) {
    let key = wire::MacKey::new(&[0x5a; 32]);
    if let Ok((seq, msg)) = wire::decode_frame_unauthenticated(data, HARD_MAX_PAYLOAD) {
        let again = msg
            .encode_frame(seq, &key)
            .expect("a decoded message encodes");
        let (seq2, msg2) =
            wire::decode_frame(&again, &key, HARD_MAX_PAYLOAD).expect("an encoded frame decodes");
        assert_eq!((seq, &msg), (seq2, &msg2));
        assert_eq!(
            again.get(..again.len() - wire::MAC_LEN),
            data.get(..data.len().saturating_sub(wire::MAC_LEN)),
            "frame re-encodes to other bytes"
        );
    }
    for kind in 0..=14u8 {
        payload(kind, data);
    }
    if let Ok(e) = decode_entry(data) {
        assert_eq!(encode_entry(&e).expect("encodes").as_bytes(), data);
    }
    if let Ok(k) = decode_key(data) {
        assert_eq!(encode_key(&k).expect("encodes").as_bytes(), data);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len() + 1);
    let mut reader = FrameReader::new(1 << 16);
    for piece in [&data[..split], &data[split..]] {
        reader.push(piece);
        while let Ok(Some(f)) = reader.next_frame() {
            let _ = Message::decode(f.kind(), f.payload());
        }
    }
}

/// One payload decoder; a success must re-encode byte for byte.
pub fn payload(kind: u8, data: &[u8]) {
    if let Ok(msg) = Message::decode(kind, data) {
        assert_eq!(msg.kind(), kind);
        let mut f = FrameBuf::new(kind, data.len());
        msg.write_payload(&mut f)
            .expect("a decoded message encodes");
        assert_eq!(
            f.payload(),
            data,
            "payload of type {kind} re-encodes to other bytes"
        );
    }
}

/// The key both scripted peers share.
pub const KEY: &[u8] = b"fuzzing key, not a secret at all";
/// The nonce of the session under test.
pub const NONCE_LOCAL: Nonce = Nonce([1; 16]);
/// The nonce of the scripted peer.
pub const NONCE_PEER: Nonce = Nonce([2; 16]);

/// A byte source that yields zeros when exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An always-valid entry from a few bytes, over a small key space (so
/// that keys collide and coalescing, dedup and sweeps are exercised).
fn gen_entry(src: &mut Bytes<'_>) -> Entry {
    use crate::entry::{TcpInfo, Tuple, L4};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let b = src.u8();
    let port = u16::from(src.u8() % 32);
    let (a, z): (IpAddr, IpAddr) = if b & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, b >> 5)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                u16::from(b >> 5),
            )),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
        )
    };
    let tcp = b & 2 != 0;
    Entry {
        proto: if tcp { 6 } else { 17 },
        original: Tuple {
            src: a,
            dst: z,
            l4: L4::Ports { src: port, dst: 80 },
        },
        reply: Tuple {
            src: z,
            dst: a,
            l4: L4::Ports { src: 80, dst: port },
        },
        status: u32::from(src.u8()),
        timeout: u32::from(src.u8()) * 16,
        mark: u32::from(b & 4),
        zone: 0,
        tcp: tcp.then(|| TcpInfo {
            state: src.u8() % 10,
            ..TcpInfo::default()
        }),
    }
}

fn gen_scope(src: &mut Bytes<'_>) -> crate::digest::Scope {
    match src.u8() % 3 {
        0 => crate::digest::Scope::ALL,
        1 => crate::digest::Scope::NONE,
        _ => {
            let mut s = crate::digest::Scope::NONE;
            for _ in 0..src.u8() % 8 {
                s.insert(src.u8());
            }
            s
        }
    }
}

/// The scripted peer of [`session`].
struct Peer {
    psk: Psk,
    local_nonce: Nonce,
    nonce: Nonce,
    seq: u64,
}

impl Peer {
    fn key(&self) -> wire::MacKey {
        self.psk.frame_key(&self.nonce, &self.local_nonce)
    }

    /// Handshake bytes: Hello and key confirmation.
    fn handshake(&mut self, role: Role) -> Vec<u8> {
        let hello = Message::Hello(Hello {
            role,
            max_payload: 1 << 20,
            nonce: self.nonce,
            node_id: "peer".into(),
        });
        let mut stream = hello
            .encode_frame(0, &self.psk.hello_key())
            .unwrap_or_default();
        stream.extend(
            Message::Heartbeat
                .encode_frame(1, &self.key())
                .unwrap_or_default(),
        );
        self.seq = 2;
        stream
    }

    fn frame(&mut self, msg: &Message) -> Vec<u8> {
        let f = msg.encode_frame(self.seq, &self.key()).unwrap_or_default();
        self.seq += 1;
        f
    }
}

/// Drive a session (backup or master, chosen by the first byte) from a
/// scripted peer: after a valid handshake, `data` decides each step: raw
/// bytes, authenticated frames of any type with arbitrary payloads and a
/// right or wrong sequence number, valid batches and control messages,
/// timers, kernel events, dumps, failures, role changes; a closed
/// connection is reopened (a few times). Nothing may panic, and the memory
/// bounds must hold. Returns the final counters (for coverage checks).
pub fn session(data: &[u8]) -> Option<crate::session::Stats> {
    let mut src = Bytes(data);
    let role = if src.u8() & 1 == 0 {
        Role::Backup
    } else {
        Role::Master
    };
    let Ok(psk) = Psk::from_key_file(KEY) else {
        return None;
    };
    let mut config = Config::new("local", role, psk.clone());
    config.limits.batch_bytes = 4096;
    config.limits.window_bytes = 16 * 1024;
    let Ok(mut s) = Session::new(config, Time::ZERO) else {
        return None;
    };
    let mut now = Time::ZERO;
    let mut peer = Peer {
        psk,
        local_nonce: NONCE_LOCAL,
        nonce: NONCE_PEER,
        seq: 2,
    };
    let mut connections = 0u8;
    let mut distinct = std::collections::HashSet::new();
    while !src.is_empty() {
        if s.link() == LinkState::Down {
            if connections == 8 {
                break;
            }
            connections += 1;
            peer.local_nonce = Nonce([connections; 16]);
            peer.nonce = Nonce([0x80 | connections; 16]);
            s.handle(
                now,
                Input::Connected {
                    nonce: peer.local_nonce,
                },
            );
            let peer_role = if src.u8() & 1 == 0 {
                Role::Master
            } else {
                Role::Backup
            };
            let hs = peer.handshake(peer_role);
            s.handle(now, Input::BytesReceived { bytes: hs.into() });
        }
        let op = src.u8();
        now = now + Duration::from_millis(u64::from(src.u8()) * 40);
        match op % 24 {
            // A complete full bulk, with the right digest half the time.
            12..=14 => {
                let generation = u32::from(src.u8());
                let mut entries: Vec<Entry> =
                    (0..src.u8() % 48).map(|_| gen_entry(&mut src)).collect();
                let mut latest = std::collections::HashMap::new();
                for e in &entries {
                    latest.insert(e.key(), *e);
                }
                let mut digest = crate::digest::Digest::default();
                for (k, e) in &latest {
                    if let (Some(kh), Some(h)) =
                        (crate::digest::key_hash(k), crate::digest::content_hash(e))
                    {
                        if let Some(b) = digest.bucket_mut(crate::digest::bucket_of(kh)) {
                            b.add(h);
                        }
                    }
                }
                let mut fold = digest.fold(&crate::digest::Scope::ALL);
                if src.u8() & 1 == 0 {
                    fold ^= 1;
                }
                let mut f = peer.frame(&Message::BulkStart {
                    generation,
                    scope: crate::digest::Scope::ALL,
                });
                let half = entries.len() / 2;
                f.extend(peer.frame(&Message::Upsert {
                    entries: entries.drain(..half).collect(),
                }));
                f.extend(peer.frame(&Message::Upsert { entries }));
                f.extend(peer.frame(&Message::BulkEnd {
                    generation,
                    count: 0,
                    digest: fold,
                }));
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            15..=16 => {
                s.handle(now, Input::Timer);
            }
            17 => {
                // Answer the last digest request (ids count from 1).
                let f = peer.frame(&Message::Digest {
                    id: u32::from(src.u8() % 3),
                    digest: crate::digest::Digest::default(),
                });
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            18..=19 => {
                let entries = (0..src.u8() % 32).map(|_| gen_entry(&mut src)).collect();
                let f = peer.frame(&Message::Upsert { entries });
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            20..=21 => {
                let events = (0..src.u8() % 64)
                    .map(|_| Event::Update(gen_entry(&mut src)))
                    .collect::<Vec<_>>();
                distinct.extend(events.iter().filter_map(|e| match e {
                    Event::Update(e) => Some(e.key()),
                    _ => None,
                }));
                s.handle(now, Input::LocalEvents { events });
            }
            22..=23 => {
                let entries: Vec<Entry> = (0..src.u8() % 64).map(|_| gen_entry(&mut src)).collect();
                distinct.extend(entries.iter().map(Entry::key));
                s.handle(now, Input::LocalDump { entries });
            }
            0 => {
                let n = usize::from(src.u8());
                let bytes = src.take(n).to_vec();
                s.handle(
                    now,
                    Input::BytesReceived {
                        bytes: bytes.into(),
                    },
                );
            }
            1 => {
                let kind = src.u8() % 14;
                let n = usize::from(src.u8()) * 4;
                let payload = src.take(n).to_vec();
                let mut f = FrameBuf::new(kind, payload.len());
                f.put(&payload);
                let this_seq = match src.u8() % 4 {
                    0 => peer.seq.saturating_sub(1),
                    1 => peer.seq + 1,
                    _ => peer.seq,
                };
                if let Ok(bytes) = f.seal(this_seq, &peer.key()) {
                    peer.seq += 1;
                    let cut = usize::from(src.u8()) % (bytes.len() + 1);
                    s.handle(
                        now,
                        Input::BytesReceived {
                            bytes: bytes[..cut].to_vec().into(),
                        },
                    );
                    s.handle(
                        now,
                        Input::BytesReceived {
                            bytes: bytes[cut..].to_vec().into(),
                        },
                    );
                }
            }
            2 => {
                let entries: Vec<Entry> = (0..src.u8() % 32).map(|_| gen_entry(&mut src)).collect();
                let f = peer.frame(&Message::Upsert { entries });
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            3 => {
                let keys = (0..src.u8() % 32)
                    .map(|_| gen_entry(&mut src).key())
                    .collect();
                let f = peer.frame(&Message::Delete { keys });
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            4 => {
                let msg = match src.u8() % 9 {
                    0 => Message::BulkStart {
                        generation: u32::from(src.u8() % 3),
                        scope: gen_scope(&mut src),
                    },
                    1 => Message::BulkEnd {
                        generation: u32::from(src.u8() % 3),
                        count: 0,
                        digest: u64::from(src.u8()),
                    },
                    2 => Message::DigestRequest {
                        id: u32::from(src.u8()),
                    },
                    3 => Message::Digest {
                        id: u32::from(src.u8() % 4),
                        digest: crate::digest::Digest::default(),
                    },
                    4 => Message::ResyncRequest {
                        reason: wire::ResyncReason::DigestMismatch,
                        scope: gen_scope(&mut src),
                    },
                    5 => {
                        let b = src.u8();
                        Message::Role {
                            role: if b & 1 == 0 {
                                Role::Master
                            } else {
                                Role::Backup
                            },
                            confirm: b & 2 != 0,
                        }
                    }
                    6 => Message::Ack {
                        seq: u64::from(src.u8()),
                    },
                    7 => Message::Heartbeat,
                    _ => Message::Goodbye {
                        reason: wire::GoodbyeReason::Error,
                    },
                };
                let f = peer.frame(&msg);
                s.handle(now, Input::BytesReceived { bytes: f.into() });
            }
            5 => {
                s.handle(now, Input::Timer);
            }
            6 => {
                let events = (0..src.u8() % 64)
                    .map(|_| {
                        let e = gen_entry(&mut src);
                        distinct.insert(e.key());
                        match src.u8() % 3 {
                            0 => Event::New(e),
                            1 => Event::Update(e),
                            _ => Event::Destroy(e.key()),
                        }
                    })
                    .collect();
                s.handle(now, Input::LocalEvents { events });
            }
            7 => {
                let entries: Vec<Entry> = (0..src.u8() % 64).map(|_| gen_entry(&mut src)).collect();
                distinct.extend(entries.iter().map(Entry::key));
                s.handle(now, Input::LocalDump { entries });
            }
            8 => {
                let role = if src.u8() & 1 == 0 {
                    Role::Backup
                } else {
                    Role::Master
                };
                s.handle(now, Input::RoleChanged { role });
            }
            9 => {
                let q = usize::from(src.u8()) << 12;
                s.handle(now, Input::Writable { queued_bytes: q });
            }
            10 => {
                let input = match src.u8() % 4 {
                    0 => Input::DumpFailed,
                    1 => Input::EventOverrun,
                    2 => Input::ApplyFailed {
                        keys: vec![gen_entry(&mut src).key()],
                        table_full: true,
                    },
                    _ => Input::Disconnected,
                };
                s.handle(now, input);
            }
            _ => {
                let bytes = decode_entry(src.take(52))
                    .map(|e| vec![Event::New(e)])
                    .unwrap_or_default();
                s.handle(now, Input::LocalEvents { events: bytes });
            }
        }
        // Memory: pending holds at most one slot per distinct key changed
        // (ours, or the peer's, which a reconciliation may delete).
        let received = usize::try_from(s.stats().upserts_received).unwrap_or(usize::MAX);
        assert!(s.pending_slots() <= distinct.len().saturating_add(received));
        if let Some(d) = s.next_deadline() {
            // A deadline in the past would make a driver spin: the timer
            // must move it.
            if d <= now {
                s.handle(now, Input::Timer);
                assert!(
                    s.next_deadline().is_none_or(|d2| d2 > now),
                    "timer did not advance"
                );
            }
        }
    }
    let _ = s.status();
    Some(s.stats())
}
