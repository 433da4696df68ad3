//! Golden frames (testdata/*.hex, written by testdata/make_golden.py, an
//! independent Python implementation of the documented layouts, HKDF and
//! HMAC): each file decodes, under the key the golden session derives, to
//! exactly the message listed here, and that message encodes back to the
//! file's bytes. A change to the encoding, the key derivation or the MAC
//! breaks these.

use ctsync::digest::{BucketDigest, Digest, Scope};
use ctsync::entry::{Entry, Key, TcpInfo, Tuple, L4};
use ctsync::wire::{
    self, decode_frame, kind, GoodbyeReason, Hello, MacKey, Message, Nonce, Psk, ResyncReason,
    Role, DEFAULT_MAX_PAYLOAD,
};

const KEY_FILE: &[u8] = b"ctsync golden test key, not a secret\n";

fn nonce_tx() -> Nonce {
    let mut n = [0u8; 16];
    for (i, b) in n.iter_mut().enumerate() {
        *b = 0x01 + i as u8;
    }
    Nonce(n)
}

fn nonce_rx() -> Nonce {
    let mut n = [0u8; 16];
    for (i, b) in n.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    Nonce(n)
}

/// Hex with '#' comments to the end of the line.
fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn ports(src: u16, dst: u16) -> L4 {
    L4::Ports { src, dst }
}

fn v4_tcp() -> Entry {
    Entry {
        proto: 6,
        original: Tuple {
            src: "198.51.100.7".parse().unwrap(),
            dst: "192.0.2.100".parse().unwrap(),
            l4: ports(40000, 80),
        },
        reply: Tuple {
            src: "10.0.1.11".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            l4: ports(8080, 40000),
        },
        status: 0x2e,
        timeout: 431_999,
        mark: 7,
        zone: 3,
        tcp: Some(TcpInfo {
            state: 3,
            wscale_original: 7,
            wscale_reply: 9,
            flags_original: 0x23,
            flags_reply: 0x33,
        }),
    }
}

fn v6_udp() -> Entry {
    Entry {
        proto: 17,
        original: Tuple {
            src: "2001:db8::7".parse().unwrap(),
            dst: "2001:db8:100::1".parse().unwrap(),
            l4: ports(5353, 53),
        },
        reply: Tuple {
            src: "2001:db8:1::11".parse().unwrap(),
            dst: "2001:db8::7".parse().unwrap(),
            l4: ports(53, 5353),
        },
        status: 0x0a,
        timeout: 120,
        mark: 0,
        zone: 0,
        tcp: None,
    }
}

fn v6_icmp() -> Entry {
    Entry {
        proto: 58,
        original: Tuple {
            src: "2001:db8::7".parse().unwrap(),
            dst: "2001:db8:100::1".parse().unwrap(),
            l4: L4::Icmp {
                id: 77,
                icmp_type: 128,
                icmp_code: 0,
            },
        },
        reply: Tuple {
            src: "2001:db8:100::1".parse().unwrap(),
            dst: "2001:db8::7".parse().unwrap(),
            l4: L4::Icmp {
                id: 77,
                icmp_type: 129,
                icmp_code: 0,
            },
        },
        status: 0x08,
        timeout: 30,
        mark: 0xffff_ffff,
        zone: 65535,
        tcp: None,
    }
}

fn scope(buckets: &[u8]) -> Scope {
    let mut s = Scope::NONE;
    for b in buckets {
        s.insert(*b);
    }
    s
}

/// (file, sequence number, message)
fn cases() -> Vec<(&'static str, u64, Message)> {
    let v6_key: Key = v6_icmp().key();
    vec![
        (
            "hello.hex",
            0,
            Message::Hello(Hello {
                role: Role::Master,
                max_payload: 1 << 20,
                nonce: nonce_tx(),
                node_id: "lb-01".into(),
            }),
        ),
        ("heartbeat.hex", 1, Message::Heartbeat),
        ("ack.hex", 2, Message::Ack { seq: 41 }),
        (
            "upsert_ipv4_tcp.hex",
            3,
            Message::Upsert {
                entries: vec![v4_tcp()],
            },
        ),
        (
            "upsert_ipv6.hex",
            4,
            Message::Upsert {
                entries: vec![v6_udp(), v6_icmp()],
            },
        ),
        (
            "delete.hex",
            5,
            Message::Delete {
                keys: vec![v4_tcp().key(), v6_key],
            },
        ),
        (
            "bulk_start.hex",
            6,
            Message::BulkStart {
                generation: 7,
                scope: Scope::ALL,
            },
        ),
        (
            "bulk_start_partial.hex",
            7,
            Message::BulkStart {
                generation: 8,
                scope: scope(&[0, 9, 255]),
            },
        ),
        (
            "bulk_end.hex",
            8,
            Message::BulkEnd {
                generation: 7,
                count: 1000,
                digest: 0x0123_4567_89ab_cdef,
            },
        ),
        ("digest_request.hex", 9, Message::DigestRequest { id: 3 }),
        (
            "digest.hex",
            10,
            Message::Digest {
                id: 3,
                digest: Digest {
                    buckets: (0..256u64)
                        .map(|i| BucketDigest {
                            count: i as u32,
                            sum: i * 0x0101_0101_0101_0101,
                        })
                        .collect(),
                },
            },
        ),
        (
            "resync_request.hex",
            11,
            Message::ResyncRequest {
                reason: ResyncReason::DigestMismatch,
                scope: scope(&[17, 200]),
            },
        ),
        (
            "role.hex",
            12,
            Message::Role {
                role: Role::Master,
                confirm: true,
            },
        ),
        (
            "goodbye.hex",
            13,
            Message::Goodbye {
                reason: GoodbyeReason::Shutdown,
            },
        ),
    ]
}

fn key_for(msg: &Message) -> MacKey {
    let psk = Psk::from_key_file(KEY_FILE).unwrap();
    if msg.kind() == kind::HELLO {
        psk.hello_key()
    } else {
        psk.frame_key(&nonce_tx(), &nonce_rx())
    }
}

#[test]
fn golden_frames_decode_to_the_expected_messages() {
    for (file, seq, expected) in cases() {
        let bytes = load(file);
        let key = key_for(&expected);
        let (got_seq, got) = decode_frame(&bytes, &key, DEFAULT_MAX_PAYLOAD)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got_seq, seq, "{file}");
        assert_eq!(got, expected, "{file}");
    }
}

#[test]
fn messages_encode_to_the_golden_bytes() {
    for (file, seq, msg) in cases() {
        let bytes = msg.encode_frame(seq, &key_for(&msg)).unwrap();
        assert_eq!(bytes, load(file), "{file}");
    }
}

#[test]
fn every_message_type_has_a_golden_file() {
    let mut kinds: Vec<u8> = cases().iter().map(|(_, _, m)| m.kind()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, (1..=12).collect::<Vec<u8>>());
}

#[test]
fn golden_frames_fail_under_another_key_or_session() {
    let psk = Psk::from_key_file(KEY_FILE).unwrap();
    let bytes = load("upsert_ipv4_tcp.hex");
    // The reverse direction, another session, another key file.
    let wrong = [
        psk.frame_key(&nonce_rx(), &nonce_tx()),
        psk.frame_key(&nonce_tx(), &Nonce([0; 16])),
        Psk::from_key_file(b"ctsync golden test key, not a secreT")
            .unwrap()
            .frame_key(&nonce_tx(), &nonce_rx()),
    ];
    for key in wrong {
        assert_eq!(
            decode_frame(&bytes, &key, DEFAULT_MAX_PAYLOAD),
            Err(wire::DecodeError::BadMac)
        );
    }
}

#[test]
fn record_sizes_match_the_golden_layout() {
    // 4 (count) + 52: IPv4 with TCP protoinfo.
    let up = load("upsert_ipv4_tcp.hex");
    assert_eq!(up.len(), 16 + 4 + 52 + 16);
    // 4 + 92 + 92: two IPv6 entries without protoinfo.
    assert_eq!(load("upsert_ipv6.hex").len(), 16 + 4 + 92 + 92 + 16);
    // 4 + 20 + 44: an IPv4 and an IPv6 key.
    assert_eq!(load("delete.hex").len(), 16 + 4 + 20 + 44 + 16);
    assert_eq!(load("digest.hex").len(), 16 + 8 + 256 * 12 + 16);
}
