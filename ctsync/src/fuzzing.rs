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

/// Drive a session (backup or master, chosen by the first byte) from a
/// scripted peer: after a valid handshake, `data` decides each step: raw
/// bytes, authenticated frames of any type with arbitrary payloads and a
/// right or wrong sequence number, timers, kernel events, dumps and role
/// changes. Nothing may panic, and the memory bounds must hold.
pub fn session(data: &[u8]) {
    let mut src = Bytes(data);
    let role = if src.u8() & 1 == 0 {
        Role::Backup
    } else {
        Role::Master
    };
    let psk = match Psk::from_key_file(KEY) {
        Ok(p) => p,
        Err(_) => return,
    };
    let mut config = Config::new("local", role, psk.clone());
    config.limits.batch_bytes = 4096;
    config.limits.window_bytes = 16 * 1024;
    let Ok(mut s) = Session::new(config, Time::ZERO) else {
        return;
    };
    let mut now = Time::ZERO;
    s.handle(now, Input::Connected { nonce: NONCE_LOCAL });
    let hello = Message::Hello(Hello {
        role: Role::Master,
        max_payload: 1 << 20,
        nonce: NONCE_PEER,
        node_id: "peer".into(),
    });
    let peer_key = psk.frame_key(&NONCE_PEER, &NONCE_LOCAL);
    let mut stream = hello.encode_frame(0, &psk.hello_key()).unwrap_or_default();
    stream.extend(
        Message::Heartbeat
            .encode_frame(1, &peer_key)
            .unwrap_or_default(),
    );
    s.handle(
        now,
        Input::BytesReceived {
            bytes: stream.into(),
        },
    );
    let mut seq = 2u64;
    let mut distinct = std::collections::HashSet::new();
    while !src.is_empty() && s.link() != LinkState::Down {
        let op = src.u8();
        now = now + Duration::from_millis(u64::from(src.u8()) * 40);
        match op % 8 {
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
            1 | 2 => {
                let kind = src.u8() % 14;
                let n = usize::from(src.u8()) * 4;
                let payload = src.take(n).to_vec();
                let mut f = FrameBuf::new(kind, payload.len());
                f.put(&payload);
                let this_seq = match src.u8() {
                    0 => seq.saturating_sub(1),
                    1 => seq + 1,
                    _ => seq,
                };
                if let Ok(bytes) = f.seal(this_seq, &peer_key) {
                    seq += 1;
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
            3 => {
                s.handle(now, Input::Timer);
            }
            4 => {
                let mut events = Vec::new();
                for _ in 0..src.u8() % 16 {
                    let bytes = src.take(52).to_vec();
                    if let Ok(e) = decode_entry(&bytes) {
                        distinct.insert(e.key());
                        events.push(match src.u8() % 3 {
                            0 => Event::New(e),
                            1 => Event::Update(e),
                            _ => Event::Destroy(e.key()),
                        });
                    }
                }
                s.handle(now, Input::LocalEvents { events });
            }
            5 => {
                let entries: Vec<Entry> = (0..src.u8() % 16)
                    .filter_map(|_| decode_entry(src.take(52)).ok())
                    .collect();
                distinct.extend(entries.iter().map(Entry::key));
                s.handle(now, Input::LocalDump { entries });
            }
            6 => {
                let role = if src.u8() & 1 == 0 {
                    Role::Backup
                } else {
                    Role::Master
                };
                s.handle(now, Input::RoleChanged { role });
            }
            _ => {
                let q = usize::from(src.u8()) << 12;
                s.handle(now, Input::Writable { queued_bytes: q });
            }
        }
        assert!(s.pending_slots() <= distinct.len() + s.stats().upserts_received as usize);
        if let Some(d) = s.next_deadline() {
            assert!(d >= Time::ZERO);
        }
    }
    let _ = s.status();
}
