//! The fuzz targets of `fuzz/fuzz_targets/` run on stable with proptest,
//! plus the codec's properties: arbitrary and mutated bytes never panic a
//! decoder, everything encodable decodes back to itself, what decodes
//! re-encodes byte for byte, and a stream cut anywhere reassembles to the
//! same frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ctsync::digest::{BucketDigest, Digest, Scope, BUCKETS};
use ctsync::entry::{Entry, Family, Key, TcpInfo, Tuple, L4};
use ctsync::wire::{
    self, decode_entry, decode_key, encode_entry, encode_key, FrameReader, GoodbyeReason, Hello,
    MacKey, Message, Nonce, ResyncReason, Role,
};
use proptest::prelude::*;

const GOLDEN: &[&str] = &[
    "hello",
    "heartbeat",
    "ack",
    "upsert_ipv4_tcp",
    "upsert_ipv6",
    "delete",
    "bulk_start",
    "bulk_start_partial",
    "bulk_end",
    "digest_request",
    "digest",
    "resync_request",
    "role",
    "goodbye",
];

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A golden frame with up to 8 byte edits, maybe cut or extended.
fn mutated_golden() -> impl Strategy<Value = Vec<u8>> {
    (
        0..GOLDEN.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(which, edits, cut, tail)| {
            let mut bytes = load(GOLDEN[which]);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend(tail);
            bytes
        })
}

fn addr(family: Family) -> BoxedStrategy<IpAddr> {
    match family {
        Family::Ipv4 => any::<[u8; 4]>()
            .prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .boxed(),
        Family::Ipv6 => any::<[u8; 16]>()
            .prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            .boxed(),
    }
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        Just(L4::None),
        (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| L4::Ports { src, dst }),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(id, icmp_type, icmp_code)| {
            L4::Icmp {
                id,
                icmp_type,
                icmp_code,
            }
        }),
    ]
}

fn tuple(family: Family) -> impl Strategy<Value = Tuple> {
    (addr(family), addr(family), l4()).prop_map(|(src, dst, l4)| Tuple { src, dst, l4 })
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
}

fn entry() -> impl Strategy<Value = Entry> {
    family().prop_flat_map(|f| {
        (
            any::<u8>(),
            tuple(f),
            tuple(f),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            prop::option::of(any::<[u8; 5]>()),
        )
            .prop_map(
                |(proto, original, reply, status, timeout, mark, zone, tcp)| Entry {
                    proto,
                    original,
                    reply,
                    status,
                    timeout,
                    mark,
                    zone,
                    tcp: tcp.map(|b| TcpInfo {
                        state: b[0],
                        wscale_original: b[1],
                        wscale_reply: b[2],
                        flags_original: b[3],
                        flags_reply: b[4],
                    }),
                },
            )
    })
}

fn key() -> impl Strategy<Value = Key> {
    entry().prop_map(|e| e.key())
}

fn scope() -> impl Strategy<Value = Scope> {
    any::<[u8; 32]>().prop_map(Scope)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Master), Just(Role::Backup)]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            role(),
            any::<u32>(),
            any::<[u8; 16]>(),
            "[a-zA-Z0-9_.-]{1,64}"
        )
            .prop_map(|(role, max_payload, n, node_id)| Message::Hello(Hello {
                role,
                max_payload,
                nonce: Nonce(n),
                node_id,
            })),
        Just(Message::Heartbeat),
        any::<u64>().prop_map(|seq| Message::Ack { seq }),
        prop::collection::vec(entry(), 0..40).prop_map(|entries| Message::Upsert { entries }),
        prop::collection::vec(key(), 0..40).prop_map(|keys| Message::Delete { keys }),
        (any::<u32>(), scope())
            .prop_map(|(generation, scope)| Message::BulkStart { generation, scope }),
        (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(generation, count, digest)| {
            Message::BulkEnd {
                generation,
                count,
                digest,
            }
        }),
        any::<u32>().prop_map(|id| Message::DigestRequest { id }),
        (
            any::<u32>(),
            prop::collection::vec((any::<u32>(), any::<u64>()), BUCKETS)
        )
            .prop_map(|(id, b)| Message::Digest {
                id,
                digest: Digest {
                    buckets: b
                        .into_iter()
                        .map(|(count, sum)| BucketDigest { count, sum })
                        .collect(),
                },
            }),
        (
            prop_oneof![
                Just(ResyncReason::DigestMismatch),
                Just(ResyncReason::KernelDiffers),
                Just(ResyncReason::ApplyFailed)
            ],
            scope()
        )
            .prop_map(|(reason, scope)| Message::ResyncRequest { reason, scope }),
        (role(), any::<bool>()).prop_map(|(role, confirm)| Message::Role { role, confirm }),
        prop_oneof![Just(GoodbyeReason::Shutdown), Just(GoodbyeReason::Error)]
            .prop_map(|reason| Message::Goodbye { reason }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        ctsync::fuzzing::frame(&bytes);
    }

    #[test]
    fn mutated_golden_frames_never_panic(bytes in mutated_golden()) {
        ctsync::fuzzing::frame(&bytes);
        // The payload alone too, so that mutations hit the payload fields.
        if bytes.len() > 16 {
            let end = bytes.len().saturating_sub(16).max(16);
            for kind in 0..=13u8 {
                ctsync::fuzzing::payload(kind, &bytes[16..end]);
            }
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(kind in 0u8..16, bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        ctsync::fuzzing::payload(kind, &bytes);
    }

    #[test]
    fn entries_round_trip(e in entry()) {
        let bytes = encode_entry(&e).unwrap();
        prop_assert_eq!(decode_entry(bytes.as_bytes()), Ok(e));
        let k = encode_key(&e.key()).unwrap();
        prop_assert_eq!(decode_key(k.as_bytes()), Ok(e.key()));
    }

    #[test]
    fn messages_round_trip(msg in message(), seq in any::<u64>(), k in any::<[u8; 32]>()) {
        let key = MacKey::new(&k);
        let bytes = msg.encode_frame(seq, &key).unwrap();
        prop_assert_eq!(wire::decode_frame(&bytes, &key, wire::HARD_MAX_PAYLOAD), Ok((seq, msg)));
    }

    /// A stream of frames cut into arbitrary pieces reassembles to the
    /// same frames, in order.
    #[test]
    fn stream_split_anywhere_reassembles(
        msgs in prop::collection::vec(message(), 1..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let key = MacKey::new(&[1; 32]);
        let mut stream = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            stream.extend(m.encode_frame(i as u64, &key).unwrap());
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort();
        let mut reader = FrameReader::new(wire::HARD_MAX_PAYLOAD);
        let mut got = Vec::new();
        for w in points.windows(2) {
            reader.push(&stream[w[0]..w[1]]);
            while let Some(f) = reader.next_frame().unwrap() {
                f.verify(&key).unwrap();
                got.push((f.seq(), Message::decode(f.kind(), f.payload()).unwrap()));
            }
        }
        prop_assert_eq!(reader.buffered(), 0);
        let want: Vec<(u64, Message)> = msgs.into_iter().enumerate().map(|(i, m)| (i as u64, m)).collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The session fuzz target: a scripted peer with valid and invalid
    /// frames, garbage, timers, events, dumps and role changes.
    #[test]
    fn session_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        ctsync::fuzzing::session(&bytes);
    }
}

/// The session fuzz body reaches deep states, not only the first
/// rejection: over a few hundred random inputs every path below is taken.
#[test]
fn session_fuzz_reaches_deep_states() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = ctsync::session::Stats::default();
    for _ in 0..400 {
        let bytes: Vec<u8> = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let s = ctsync::fuzzing::session(&bytes).unwrap();
        total.established += s.established;
        total.upserts_received += s.upserts_received;
        total.bulk_received += s.bulk_received + s.partial_bulk_received;
        total.bulk_sent += s.bulk_sent + s.partial_bulk_sent;
        total.upserts_sent += s.upserts_sent;
        total.digest_mismatches += s.digest_mismatches;
        total.rejected_replay += s.rejected_replay;
        total.lost += s.lost;
        total.malformed += s.malformed;
        total.events_coalesced += s.events_coalesced;
        total.stale_removed += s.stale_removed;
        total.protocol_errors += s.protocol_errors;
        total.role_changes += s.role_changes;
    }
    let t = total;
    for (name, v) in [
        ("established", t.established),
        ("upserts_received", t.upserts_received),
        ("bulk_received", t.bulk_received),
        ("bulk_sent", t.bulk_sent),
        ("upserts_sent", t.upserts_sent),
        ("digest_mismatches", t.digest_mismatches),
        ("rejected_replay", t.rejected_replay),
        ("lost", t.lost),
        ("malformed", t.malformed),
        ("events_coalesced", t.events_coalesced),
        ("stale_removed", t.stale_removed),
        ("protocol_errors", t.protocol_errors),
        ("role_changes", t.role_changes),
    ] {
        assert!(v > 0, "fuzzing never reached {name}: {t:?}");
    }
}
