//! The fuzz target of `fuzz/fuzz_targets/advert.rs`, run on stable with
//! proptest: arbitrary bytes, mutated keepalived captures and generated
//! adverts go through every decoder. Nothing may panic, and whatever
//! decodes must re-encode to an equal repr.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vrrp::codec::{self, Advert, Auth, AuthType, Received, Version};
use vrrp::machine::{Config, Input, Instance, RxPacket};
use vrrp::Time;

const CAPTURES: &[&str] = &[
    "v2_ipv4_ah",
    "v2_ipv4_multi_vip",
    "v2_ipv4_noauth",
    "v2_ipv4_pass",
    "v2_ipv4_priority0",
    "v3_ipv4_multi_vip",
    "v3_ipv4_multicast",
    "v3_ipv4_priority0",
    "v3_ipv4_unicast",
    "v3_ipv6_multicast",
    "v3_ipv6_priority0",
    "v3_ipv6_unicast",
];

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A capture with up to 8 byte edits, maybe truncated or extended.
fn mutated_capture() -> impl Strategy<Value = Vec<u8>> {
    (
        0..CAPTURES.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(which, edits, cut, tail)| {
            let mut bytes = load(CAPTURES[which]);
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

/// The same, without the IP header (for IPv6 captures the driver strips
/// it), so mutations hit the VRRP fields more often.
fn mutated_payload() -> impl Strategy<Value = Vec<u8>> {
    mutated_capture().prop_map(|bytes| match bytes.first().map(|b| b >> 4) {
        Some(6) if bytes.len() > 40 => bytes[40..].to_vec(),
        Some(4) if bytes.len() > 20 => bytes[20..].to_vec(),
        _ => bytes,
    })
}

fn any_advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    let v4 = (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        prop::collection::vec(any::<[u8; 4]>(), 1..20),
    )
        .prop_map(|(s, d, a)| {
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                a.into_iter()
                    .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
                    .collect::<Vec<_>>(),
            )
        });
    let v6 = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        prop::collection::vec(any::<[u8; 16]>(), 1..8),
    )
        .prop_map(|(s, d, a)| {
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                a.into_iter()
                    .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
                    .collect::<Vec<_>>(),
            )
        });
    let auth = (0u8..3, any::<[u8; 8]>()).prop_map(|(k, data)| Auth {
        kind: AuthType::from_code(k).unwrap(),
        data,
    });
    (
        prop_oneof![v4, v6],
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        0u16..0x1000,
        any::<u8>(),
        auth,
    )
        .prop_map(
            |((src, dst, addresses), vrid, priority, v2, centis, secs, auth)| {
                let v2 = v2 && matches!(src, IpAddr::V4(_));
                let version = if v2 {
                    Version::V2 {
                        advert_int: secs,
                        auth,
                    }
                } else {
                    Version::V3 {
                        max_advert_int: centis,
                    }
                };
                (
                    Advert {
                        version,
                        vrid,
                        priority,
                        addresses,
                    },
                    src,
                    dst,
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        vrrp::fuzzing::advert(&bytes);
    }

    #[test]
    fn mutated_captures(bytes in mutated_capture()) {
        vrrp::fuzzing::advert(&bytes);
    }

    #[test]
    fn mutated_payloads(bytes in mutated_payload()) {
        vrrp::fuzzing::advert(&bytes);
    }

    /// Every encodable advert decodes back to itself.
    #[test]
    fn encode_decode((advert, src, dst) in any_advert()) {
        let bytes = codec::encode(&advert, src, dst).unwrap();
        prop_assert_eq!(bytes.len(), advert.buffer_len(codec::Family::of(src)));
        let rx = Received { src, dst, ttl_or_hop_limit: 255, payload: &bytes };
        prop_assert_eq!(codec::decode(&rx), Ok(advert));
    }

    /// RFC 5798 7.1: an invalid packet changes nothing in the machine.
    #[test]
    fn machine_ignores_garbage(payload in mutated_payload(), ttl in prop_oneof![Just(255u8), any::<u8>()]) {
        let config = Config::new(51, "10.99.0.2".parse().unwrap(), vec!["192.0.2.100".parse().unwrap()]);
        let mut m = Instance::new(config, Time::ZERO).unwrap();
        m.handle(Time::ZERO, Input::Startup);
        let rx = RxPacket {
            src: "10.99.0.1".parse().unwrap(),
            dst: IpAddr::V4(codec::MULTICAST_V4),
            ttl,
            payload,
        };
        let valid = ttl == 255 && codec::decode(&rx.as_received()).is_ok();
        let deadline = m.next_deadline();
        let actions = m.handle(Time::from_millis(100), Input::Packet(rx));
        if !valid {
            prop_assert_eq!(m.next_deadline(), deadline);
            prop_assert_eq!(m.state(), vrrp::State::Backup);
            prop_assert_eq!(m.stats().adverts_rx, 0);
            prop_assert_eq!(actions.len(), 1);
        }
    }
}
