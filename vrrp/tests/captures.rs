//! Round trip of real keepalived v2.2.7 adverts (testdata/*.hex, made by
//! testdata/capture.sh): decode every field, check the checksum, re-encode
//! byte for byte, and feed them to a machine configured as keepalived's peer.

use std::net::{IpAddr, Ipv6Addr};

use vrrp::codec::{self, Advert, Auth, AuthType, Received, Version};
use vrrp::machine::{Action, Config, Input, Instance, RxPacket, State, V2Auth};
use vrrp::Time;

/// The whole IP packet of a capture file: hex, '#' lines are comments.
fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Split a captured packet like the driver will: IPv4 through
/// `codec::parse_ipv4` (raw sockets deliver the header), IPv6 by hand (the
/// driver gets these from recvmsg and cmsgs).
fn frame(bytes: &[u8]) -> (Received<'_>, u8) {
    match bytes[0] >> 4 {
        4 => {
            let (ip, payload) = codec::parse_ipv4(bytes).unwrap();
            (
                Received {
                    src: IpAddr::V4(ip.src),
                    dst: IpAddr::V4(ip.dst),
                    ttl_or_hop_limit: ip.ttl,
                    payload,
                },
                ip.protocol,
            )
        }
        6 => {
            let addr = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&bytes[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let payload_len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            assert_eq!(bytes.len(), 40 + payload_len);
            (
                Received {
                    src: addr(8),
                    dst: addr(24),
                    ttl_or_hop_limit: bytes[7],
                    payload: &bytes[40..],
                },
                bytes[6],
            )
        }
        v => panic!("IP version {v}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

struct Expect {
    src: &'static str,
    dst: &'static str,
    ttl: u8,
    advert: Advert,
}

/// Decode, compare with `expect`, re-encode and compare bytes.
fn check(name: &str, expect: Expect) -> (Received<'static>, Advert) {
    let bytes: &'static [u8] = Box::leak(load(name).into_boxed_slice());
    let (rx, protocol) = frame(bytes);
    let rx = if protocol == codec::IPPROTO_AH {
        let (ah, inner) = codec::strip_ah(rx.payload).unwrap();
        assert_eq!(ah.next_header, codec::IPPROTO_VRRP, "{name}");
        Received {
            payload: inner,
            ..rx
        }
    } else {
        assert_eq!(protocol, codec::IPPROTO_VRRP, "{name}");
        rx
    };
    assert_eq!(rx.src, ip(expect.src), "{name}: src");
    assert_eq!(rx.dst, ip(expect.dst), "{name}: dst");
    assert_eq!(rx.ttl_or_hop_limit, expect.ttl, "{name}: ttl");

    let view = codec::Packet::new_checked(rx.payload, codec::Family::of(rx.src)).unwrap();
    assert!(view.verify_checksum(rx.src, rx.dst), "{name}: checksum");
    let advert = codec::decode(&rx).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(advert, expect.advert, "{name}");

    let encoded = codec::encode(&advert, rx.src, rx.dst).unwrap();
    assert_eq!(encoded, rx.payload, "{name}: re-encoding differs");
    (rx, advert)
}

fn v3(vrid: u8, priority: u8, centis: u16, addrs: &[&str]) -> Advert {
    Advert {
        version: Version::V3 {
            max_advert_int: centis,
        },
        vrid,
        priority,
        addresses: ips(addrs),
    }
}

fn v2(vrid: u8, priority: u8, secs: u8, auth: Auth, addrs: &[&str]) -> Advert {
    Advert {
        version: Version::V2 {
            advert_int: secs,
            auth,
        },
        vrid,
        priority,
        addresses: ips(addrs),
    }
}

const MCAST4: &str = "224.0.0.18";
const MCAST6: &str = "ff02::12";

#[test]
fn v3_ipv4_multicast() {
    check(
        "v3_ipv4_multicast",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v3(51, 150, 100, &["192.0.2.100"]),
        },
    );
}

#[test]
fn v3_ipv6_multicast() {
    check(
        "v3_ipv6_multicast",
        Expect {
            src: "fe80::a",
            dst: MCAST6,
            ttl: 255,
            // keepalived warns "the first IPv6 VIP address should be link
            // local" (RFC 5798 5.2.9) but sends the global one: accept it.
            advert: v3(52, 150, 100, &["2001:db8::100"]),
        },
    );
}

#[test]
fn v2_ipv4_noauth() {
    check(
        "v2_ipv4_noauth",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v2(53, 100, 1, Auth::NONE, &["192.0.2.101"]),
        },
    );
}

#[test]
fn v2_ipv4_pass() {
    let (_, advert) = check(
        "v2_ipv4_pass",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v2(54, 100, 1, Auth::simple_text(b"secret"), &["192.0.2.102"]),
        },
    );
    let Version::V2 { auth, .. } = advert.version else {
        panic!()
    };
    assert_eq!(&auth.data, b"secret\0\0");
}

#[test]
fn v3_ipv4_unicast() {
    check(
        "v3_ipv4_unicast",
        Expect {
            src: "10.99.0.1",
            dst: "10.99.0.2",
            ttl: 255,
            advert: v3(55, 120, 100, &["192.0.2.103"]),
        },
    );
}

#[test]
fn v3_ipv4_multi_vip() {
    check(
        "v3_ipv4_multi_vip",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v3(
                56,
                200,
                250,
                &[
                    "192.0.2.110",
                    "192.0.2.111",
                    "198.51.100.7",
                    "203.0.113.200",
                ],
            ),
        },
    );
}

#[test]
fn v2_ipv4_multi_vip() {
    check(
        "v2_ipv4_multi_vip",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v2(
                57,
                90,
                3,
                Auth::NONE,
                &["192.0.2.120", "192.0.2.121", "192.0.2.122"],
            ),
        },
    );
}

#[test]
fn v2_ipv4_ah() {
    let bytes = load("v2_ipv4_ah");
    let (ip_hdr, payload) = codec::parse_ipv4(&bytes).unwrap();
    assert_eq!(ip_hdr.protocol, codec::IPPROTO_AH);
    let (ah, _) = codec::strip_ah(payload).unwrap();
    // keepalived uses HMAC-MD5-96 (24-byte AH) and its own address as SPI.
    assert_eq!(ah.len, 24);
    assert_eq!(ah.spi, u32::from_be_bytes([10, 99, 0, 1]));
    let advert = Auth {
        kind: AuthType::IpAh,
        data: [0; 8],
    };
    check(
        "v2_ipv4_ah",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v2(58, 100, 1, advert, &["192.0.2.130"]),
        },
    );
}

#[test]
fn v3_ipv6_unicast() {
    check(
        "v3_ipv6_unicast",
        Expect {
            src: "2001:db8:99::1",
            dst: "2001:db8:99::2",
            // keepalived does not set the unicast hop limit for IPv6: the
            // kernel default (64) goes out, not RFC 5798's 255.
            ttl: 64,
            advert: v3(59, 130, 100, &["2001:db8::159", "2001:db8::160"]),
        },
    );
}

#[test]
fn priority_zero_on_sigterm() {
    check(
        "v3_ipv4_priority0",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v3(51, 0, 100, &["192.0.2.100"]),
        },
    );
    check(
        "v3_ipv6_priority0",
        Expect {
            src: "fe80::a",
            dst: MCAST6,
            ttl: 255,
            advert: v3(52, 0, 100, &["2001:db8::100"]),
        },
    );
    check(
        "v2_ipv4_priority0",
        Expect {
            src: "10.99.0.1",
            dst: MCAST4,
            ttl: 255,
            advert: v2(53, 0, 1, Auth::NONE, &["192.0.2.101"]),
        },
    );
}

#[test]
fn a_flipped_bit_fails_the_checksum() {
    for name in ["v3_ipv4_multicast", "v3_ipv6_multicast", "v2_ipv4_noauth"] {
        let bytes = load(name);
        let (rx, _) = frame(&bytes);
        let mut payload = rx.payload.to_vec();
        payload[2] ^= 0x01; // priority
        let bad = Received {
            payload: &payload,
            ..rx
        };
        assert!(
            matches!(
                codec::decode(&bad),
                Err(codec::DecodeError::BadChecksum { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn v3_checksum_covers_the_pseudo_header() {
    // The same bytes to another destination do not verify: keepalived
    // includes the real destination, unicast too (RFC 5798 5.2.8).
    let bytes = load("v3_ipv4_unicast");
    let (rx, _) = frame(&bytes);
    let moved = Received {
        dst: ip(MCAST4),
        ..rx
    };
    assert!(matches!(
        codec::decode(&moved),
        Err(codec::DecodeError::BadChecksum { .. })
    ));
}

/// A director backup configured as keepalived's peer accepts its adverts
/// and follows the master; priority 0 brings the takeover to Skew_Time.
#[test]
fn machine_follows_keepalived_master() {
    let cases: [(&str, &str, Config); 4] = [
        ("v3_ipv4_multicast", "v3_ipv4_priority0", {
            Config::new(51, ip("10.99.0.2"), ips(&["192.0.2.100"]))
        }),
        ("v3_ipv6_multicast", "v3_ipv6_priority0", {
            Config::new(52, ip("fe80::b"), ips(&["2001:db8::100"]))
        }),
        ("v2_ipv4_noauth", "v2_ipv4_priority0", {
            let mut c = Config::new(53, ip("10.99.0.2"), ips(&["192.0.2.101"]));
            c.version = 2;
            c
        }),
        ("v2_ipv4_pass", "v2_ipv4_pass", {
            let mut c = Config::new(54, ip("10.99.0.2"), ips(&["192.0.2.102"]));
            c.version = 2;
            c.auth = V2Auth::SimpleText("secret".into());
            c
        }),
    ];
    for (advert_file, zero_file, config) in cases {
        let mut m = Instance::new(config, Time::ZERO).unwrap();
        m.handle(Time::ZERO, Input::Startup);
        let bytes = load(advert_file);
        let (rx, _) = frame(&bytes);
        let now = Time::from_millis(1000);
        let actions = m.handle(now, Input::Packet(RxPacket::from(rx)));
        assert_eq!(actions, vec![], "{advert_file}");
        assert_eq!(m.stats().adverts_rx, 1, "{advert_file}");
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.status().master, Some(rx.src));
        assert_eq!(m.next_deadline(), Some(now + m.master_down_interval()));

        if zero_file != advert_file {
            let bytes = load(zero_file);
            let (rx, _) = frame(&bytes);
            let later = Time::from_millis(1500);
            m.handle(later, Input::Packet(RxPacket::from(rx)));
            assert_eq!(m.stats().priority_zero_rx, 1, "{zero_file}");
            assert_eq!(
                m.next_deadline(),
                Some(later + m.skew_time()),
                "{zero_file}"
            );
            let actions = m.handle(later + m.skew_time(), Input::Timer);
            assert!(matches!(
                actions[0],
                Action::StateChange {
                    new: State::Master,
                    ..
                }
            ));
        }
    }
}

/// keepalived's IPv6 unicast adverts (hop limit 64) are accepted by default,
/// as keepalived accepts them, and refused with `unicast_ttl_check`.
#[test]
fn ipv6_unicast_hop_limit_interop() {
    let bytes = load("v3_ipv6_unicast");
    let (rx, _) = frame(&bytes);
    let mut config = Config::new(
        59,
        ip("2001:db8:99::2"),
        ips(&["2001:db8::159", "2001:db8::160"]),
    );
    config.unicast_peers = vec![ip("2001:db8:99::1")];
    let mut m = Instance::new(config.clone(), Time::ZERO).unwrap();
    m.handle(Time::ZERO, Input::Startup);
    m.handle(Time::ZERO, Input::Packet(RxPacket::from(rx)));
    assert_eq!(m.stats().adverts_rx, 1);

    config.unicast_ttl_check = true;
    let mut strict = Instance::new(config, Time::ZERO).unwrap();
    strict.handle(Time::ZERO, Input::Startup);
    strict.handle(Time::ZERO, Input::Packet(RxPacket::from(rx)));
    assert_eq!(strict.stats().adverts_rx, 0);
    assert_eq!(strict.stats().ttl_errors, 1);
}

/// Our own encoder produces what keepalived produces for the same advert.
#[test]
fn machine_adverts_match_keepalived_bytes() {
    let bytes = load("v3_ipv4_multicast");
    let (rx, _) = frame(&bytes);
    let mut config = Config::new(51, ip("10.99.0.1"), ips(&["192.0.2.100"]));
    config.priority = 150;
    let mut m = Instance::new(config, Time::ZERO).unwrap();
    m.handle(Time::ZERO, Input::Startup);
    let deadline = m.next_deadline().unwrap();
    let actions = m.handle(deadline, Input::Timer);
    let sent = actions
        .iter()
        .find_map(|a| match a {
            Action::SendAdvert { advert, src, dst } => {
                Some(codec::encode(advert, *src, dst[0]).unwrap())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(sent, rx.payload);
}
