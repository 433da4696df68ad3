//! The Internet checksum (RFC 1071) and the pseudo-headers VRRPv3 adds to it.
//!
//! - VRRPv2 (RFC 3768 5.3.8): the checksum covers the VRRP message only,
//!   authentication data included.
//! - VRRPv3 (RFC 5798 5.2.8): the checksum covers the VRRP message plus a
//!   pseudo-header: for IPv6 the one of RFC 2460 8.1 (source, destination,
//!   32-bit upper-layer length, 3 zero bytes, next header 112); for IPv4 the
//!   classic one of RFC 768/793 (source, destination, zero, protocol 112,
//!   16-bit length). keepalived >= 1.3.6 computes the IPv4 one with the real
//!   destination, unicast included, and so do we (its `old_unicast_checksum`
//!   compatibility mode, which used 224.0.0.18 for unicast, is not supported).

use std::net::IpAddr;

/// IP protocol number of VRRP (RFC 5798 5.1.1.4 / 5.1.2.4).
pub const IPPROTO_VRRP: u8 = 112;

/// One's complement sum of `data` as big-endian 16-bit words, added to `acc`
/// (not yet folded). An odd trailing byte is padded with a zero byte.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Fold a running sum to 16 bits and complement it (RFC 1071 4.1).
pub(crate) fn finish(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Sum of the pseudo-header for a VRRPv3 message of `len` bytes from `src` to
/// `dst` (RFC 5798 5.2.8). Returns `None` when the two addresses are not of
/// the same family.
pub(crate) fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> Option<u64> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut acc = sum(&s.octets(), 0);
            acc = sum(&d.octets(), acc);
            acc += u64::from(IPPROTO_VRRP);
            acc += len as u64 & 0xffff;
            Some(acc)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut acc = sum(&s.octets(), 0);
            acc = sum(&d.octets(), acc);
            acc = sum(&(len as u32).to_be_bytes(), acc);
            acc += u64::from(IPPROTO_VRRP);
            Some(acc)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2 (before
        // complement).
        let acc = sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0);
        assert_eq!(finish(acc), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12], 0), 0x1200);
    }

    #[test]
    fn mixed_families_have_no_pseudo_header() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(pseudo_header_sum(v4, v6, 8), None);
    }
}
