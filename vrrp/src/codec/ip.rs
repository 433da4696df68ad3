//! The framing around a VRRP message that a raw socket hands over.
//!
//! An `AF_INET` raw socket for protocol 112 (or 51) delivers the IPv4 header
//! too; [`parse_ipv4`] takes the facts the receive checks need out of it and
//! returns the payload. An `AF_INET6` raw socket delivers no IPv6 header
//! (the driver gets source, destination and hop limit from `recvmsg`), so
//! there is no IPv6 counterpart. A VRRPv2 packet authenticated with IPsec AH
//! (RFC 2338 5.3.6.3; keepalived's `auth_type AH`) is IP protocol 51 with
//! an AH header in front of the VRRP message; [`strip_ah`] removes it.
//!
//! IPv4 header, RFC 791 3.1:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! IP Authentication Header, RFC 2402 2 (keepalived: HMAC-MD5-96, so 12
//! bytes of Authentication Data and 24 bytes in all):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Header   |  Payload Len  |          RESERVED             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Security Parameters Index (SPI)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Sequence Number Field                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Authentication Data (variable)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::FramingError;

/// IP protocol number of the Authentication Header.
pub const IPPROTO_AH: u8 = 51;

const IPV4_MIN_HEADER: usize = 20;
const AH_FIXED: usize = 12;

/// What the receive path needs from an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Must be 255 for VRRP over multicast (RFC 5798 5.1.1.3).
    pub ttl: u8,
    /// 112 (VRRP) or 51 (AH, VRRPv2 `auth_type AH`).
    pub protocol: u8,
    /// IHL in bytes, options included.
    pub header_len: usize,
    /// Total Length: header plus payload.
    pub total_len: usize,
}

/// Split an IPv4 packet as delivered by a raw socket into its header facts
/// and its payload. Bytes past Total Length (link padding) are ignored.
/// Never panics.
pub fn parse_ipv4(bytes: &[u8]) -> Result<(Ipv4Header, &[u8]), FramingError> {
    if bytes.len() < IPV4_MIN_HEADER {
        return Err(FramingError::Truncated {
            needed: IPV4_MIN_HEADER,
            got: bytes.len(),
        });
    }
    let version = bytes[0] >> 4;
    if version != 4 {
        return Err(FramingError::NotIpv4 { version });
    }
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER {
        return Err(FramingError::BadHeaderLength { len: header_len });
    }
    let total_len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if total_len < header_len || total_len > bytes.len() {
        return Err(FramingError::BadTotalLength {
            total_len,
            header_len,
            got: bytes.len(),
        });
    }
    // Flags (MF) and Fragment Offset: the kernel reassembles before raw
    // socket delivery, so a fragment here is not a VRRP message.
    let frag = u16::from_be_bytes([bytes[6], bytes[7]]);
    if frag & 0x3fff != 0 {
        return Err(FramingError::Fragment);
    }
    let header = Ipv4Header {
        src: Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]),
        dst: Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]),
        ttl: bytes[8],
        protocol: bytes[9],
        header_len,
        total_len,
    };
    Ok((header, &bytes[header_len..total_len]))
}

/// The fixed fields of an IP Authentication Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AhHeader {
    /// Protocol of what follows: 112 for VRRP.
    pub next_header: u8,
    /// keepalived puts the sender's IPv4 address here.
    pub spi: u32,
    pub sequence: u32,
    /// Length of the whole AH header in bytes.
    pub len: usize,
}

/// Split an AH-protected payload (IP protocol 51) into the AH header and
/// what it protects. The ICV is not verified: this crate does not implement
/// AH authentication, it only lets the machine see (and count) the VRRPv2
/// Auth Type 2 inside. Never panics.
pub fn strip_ah(payload: &[u8]) -> Result<(AhHeader, &[u8]), FramingError> {
    if payload.len() < AH_FIXED {
        return Err(FramingError::Truncated {
            needed: AH_FIXED,
            got: payload.len(),
        });
    }
    // RFC 2402 2.2: Payload Len is the AH length in 32-bit words minus 2.
    let len = (usize::from(payload[1]) + 2) * 4;
    if len < AH_FIXED || len > payload.len() {
        return Err(FramingError::BadAhLength {
            len,
            got: payload.len(),
        });
    }
    let header = AhHeader {
        next_header: payload[0],
        spi: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        sequence: u32::from_be_bytes([payload[8], payload[9], payload[10], payload[11]]),
        len,
    };
    Ok((header, &payload[len..]))
}
