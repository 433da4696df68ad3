//! VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) advertisements on the wire.
//!
//! - [`Packet`]: a view over received or outgoing bytes, length checked once
//!   (`packet.rs`, with the RFC diagrams).
//! - [`Advert`]: the validated representation; [`decode`] turns a
//!   [`Received`] message (payload plus IP header facts) into one, [`encode`]
//!   does the reverse and computes the checksum.
//! - [`parse_ipv4`] / [`strip_ah`]: the IPv4 header that `AF_INET` raw
//!   sockets deliver, and the IPsec AH header of keepalived's VRRPv2
//!   `auth_type AH`.
//! - Checksums (`checksum.rs`): v2 over the message only, v3 with the IPv4 or
//!   IPv6 pseudo-header (RFC 5798 5.2.8).
//!
//! Nothing here panics on any input; every rejection is a [`DecodeError`] or
//! [`FramingError`] variant naming what is wrong. Checks that depend on the
//! local configuration (TTL, VRID, interval, address list, password) belong
//! to [`crate::machine`], which counts them.

mod advert;
mod checksum;
mod ip;
mod packet;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use advert::{decode, encode, peek, Advert, Auth, AuthType, Received, Version};
pub use checksum::IPPROTO_VRRP;
pub use ip::{parse_ipv4, strip_ah, AhHeader, Ipv4Header, IPPROTO_AH};
pub use packet::{Packet, AUTH_DATA_LEN, HEADER_LEN, TYPE_ADVERTISEMENT};

/// IPv4 multicast group for VRRP (RFC 5798 5.1.1.2).
pub const MULTICAST_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP (RFC 5798 5.1.2.2).
pub const MULTICAST_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / Hop Limit every VRRP packet is sent with (RFC 5798 5.1.1.3,
/// 5.1.2.3).
pub const TTL: u8 = 255;

/// Address family of a VRRP message, given by the IP header carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The VRRP multicast group of this family.
    pub fn multicast_group(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(MULTICAST_V4),
            Family::V6 => IpAddr::V6(MULTICAST_V6),
        }
    }
}

/// Why a received VRRP message was rejected. Every variant is the peer's
/// fault (or the network's), never ours: log and count, do not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DecodeError {
    /// Shorter than its header says (or than the fixed header).
    #[error("truncated VRRP message: {got} bytes, need {needed}")]
    Truncated { needed: usize, got: usize },
    /// Longer than Count IPvX Addr says (RFC 5798 7.1: the complete packet,
    /// and nothing else; keepalived rejects this too).
    #[error("VRRP message length {got} does not match its address count (expected {expected})")]
    LengthMismatch { expected: usize, got: usize },
    /// Version nibble other than 2 or 3.
    #[error("unknown VRRP version {version}")]
    BadVersion { version: u8 },
    /// Type nibble other than 1 (ADVERTISEMENT).
    #[error("unknown VRRP packet type {packet_type}")]
    BadType { packet_type: u8 },
    /// Checksum field wrong (for v3 with this source/destination pair).
    #[error("bad VRRP checksum {received:#06x}, computed {computed:#06x}")]
    BadChecksum { received: u16, computed: u16 },
    /// Count IPvX Addr of zero (RFC 5798 5.2.5: minimum 1).
    #[error("VRRP advertisement carries no address")]
    NoAddresses,
    /// v2 Auth Type other than 0, 1, 2.
    #[error("unknown VRRPv2 auth type {auth_type}")]
    BadAuthType { auth_type: u8 },
    /// A version 2 message over IPv6 (RFC 3768 is IPv4 only).
    #[error("VRRPv2 message over IPv6")]
    V2OverIpv6,
    /// Source and destination of different families.
    #[error("source and destination addresses of different families")]
    FamilyMismatch,
}

/// Why an advert could not be encoded. These are our own (configuration)
/// mistakes: `Config::validate` rules them out for adverts the machine makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum EncodeError {
    #[error("an advertisement needs at least one address")]
    NoAddresses,
    #[error("{count} addresses do not fit the 8-bit count")]
    TooManyAddresses { count: usize },
    #[error("address {address} is not of the family of the source address")]
    AddressFamily { address: IpAddr },
    #[error("source and destination addresses of different families")]
    FamilyMismatch,
    #[error("VRRPv2 cannot be sent over IPv6")]
    V2OverIpv6,
    #[error("max advert interval {centis} centiseconds does not fit 12 bits")]
    IntervalTooLong { centis: u16 },
    #[error("buffer of {got} bytes for a message of {needed}")]
    BufferSize { needed: usize, got: usize },
}

/// Why the IPv4 or AH framing around a VRRP message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum FramingError {
    #[error("truncated header: {got} bytes, need {needed}")]
    Truncated { needed: usize, got: usize },
    #[error("IP version {version}, expected 4")]
    NotIpv4 { version: u8 },
    #[error("IPv4 header length {len} below 20")]
    BadHeaderLength { len: usize },
    #[error("IPv4 total length {total_len} inconsistent with header length {header_len} and {got} bytes received")]
    BadTotalLength {
        total_len: usize,
        header_len: usize,
        got: usize,
    },
    #[error("IPv4 fragment")]
    Fragment,
    #[error("AH length {len} inconsistent with {got} bytes of payload")]
    BadAhLength { len: usize, got: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant of each error, through JSON and back. They travel in
    /// `Action::Anomaly` (the host's event stream, recorded inputs and
    /// outputs, DESIGN.md principle 5), so serialising must never fail:
    /// an internally tagged enum (`tag = "error"`) cannot serialise a
    /// tuple variant holding a number or a string, hence named fields.
    fn round_trip<T>(all: &[T])
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        for e in all {
            let json = serde_json::to_string(e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
            let back: T = serde_json::from_str(&json).unwrap_or_else(|err| panic!("{json}: {err}"));
            assert_eq!(&back, e, "{json}");
        }
    }

    #[test]
    fn errors_round_trip_through_json() {
        round_trip(&[
            DecodeError::Truncated { needed: 8, got: 3 },
            DecodeError::LengthMismatch {
                expected: 12,
                got: 16,
            },
            DecodeError::BadVersion { version: 4 },
            DecodeError::BadType { packet_type: 2 },
            DecodeError::BadChecksum {
                received: 1,
                computed: 2,
            },
            DecodeError::NoAddresses,
            DecodeError::BadAuthType { auth_type: 3 },
            DecodeError::V2OverIpv6,
            DecodeError::FamilyMismatch,
        ]);
        round_trip(&[
            EncodeError::NoAddresses,
            EncodeError::TooManyAddresses { count: 256 },
            EncodeError::AddressFamily {
                address: "2001:db8::1".parse().unwrap(),
            },
            EncodeError::FamilyMismatch,
            EncodeError::V2OverIpv6,
            EncodeError::IntervalTooLong { centis: 5000 },
            EncodeError::BufferSize { needed: 20, got: 8 },
        ]);
        round_trip(&[
            FramingError::Truncated { needed: 20, got: 3 },
            FramingError::NotIpv4 { version: 6 },
            FramingError::BadHeaderLength { len: 16 },
            FramingError::BadTotalLength {
                total_len: 99,
                header_len: 20,
                got: 40,
            },
            FramingError::Fragment,
            FramingError::BadAhLength { len: 9, got: 4 },
        ]);
        let json = serde_json::to_string(&DecodeError::BadType { packet_type: 2 }).unwrap();
        assert_eq!(json, r#"{"error":"bad_type","packet_type":2}"#);
    }
}
