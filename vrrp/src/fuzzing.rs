//! The body of the fuzz target, shared by `fuzz/fuzz_targets/advert.rs`
//! (cargo-fuzz, nightly) and the proptests in `tests/fuzz_codec.rs`
//! (stable). Not API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{self, Received};

/// Feed `data` to every decoder, as IPv4 and IPv6 payloads and as a raw
/// IPv4 packet. Panics (the fuzz failure) only if a decoder panics or if a
/// successful decode does not re-encode to bytes that decode to an equal
/// repr.
pub fn advert(data: &[u8]) {
    let v4 = (
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(codec::MULTICAST_V4),
    );
    let v6 = (
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(codec::MULTICAST_V6),
    );
    for (src, dst) in [v4, v6] {
        roundtrip(src, dst, data);
    }
    if let Ok((ip, payload)) = codec::parse_ipv4(data) {
        roundtrip(IpAddr::V4(ip.src), IpAddr::V4(ip.dst), payload);
        if ip.protocol == codec::IPPROTO_AH {
            if let Ok((_, inner)) = codec::strip_ah(payload) {
                roundtrip(IpAddr::V4(ip.src), IpAddr::V4(ip.dst), inner);
            }
        }
    }
    let _ = codec::peek(data);
}

fn roundtrip(src: IpAddr, dst: IpAddr, payload: &[u8]) {
    let rx = Received {
        src,
        dst,
        ttl_or_hop_limit: codec::TTL,
        payload,
    };
    let Ok(advert) = codec::decode(&rx) else {
        return;
    };
    let bytes = codec::encode(&advert, src, dst).expect("a decoded advert must encode");
    let again = codec::decode(&Received {
        payload: &bytes,
        ..rx
    })
    .expect("an encoded advert must decode");
    assert_eq!(advert, again, "decode(encode(decode(x))) != decode(x)");
}
