//! The validated representation of an advertisement, and the two entry
//! points [`decode`] and [`encode`].

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::packet::{Packet, AUTH_DATA_LEN, HEADER_LEN, TYPE_ADVERTISEMENT};
use super::{DecodeError, EncodeError, Family};

/// v2 authentication type (RFC 2338 5.3.6; RFC 3768 5.3.6 removed
/// authentication and reserved 1 and 2, but keepalived still sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// 0: no authentication.
    None,
    /// 1: simple text password in the 8 bytes of Authentication Data.
    SimpleText,
    /// 2: IPsec AH (RFC 2402) in front of the VRRP message; the
    /// Authentication Data field is unused.
    IpAh,
}

impl AuthType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            AuthType::None => 0,
            AuthType::SimpleText => 1,
            AuthType::IpAh => 2,
        }
    }

    /// From the wire value; `None` for the undefined 3..=255.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(AuthType::None),
            1 => Some(AuthType::SimpleText),
            2 => Some(AuthType::IpAh),
            _ => None,
        }
    }
}

/// v2 authentication: the type and the 8 bytes of Authentication Data as
/// received (kept even for type 0, where senders should zero them, so that a
/// decoded packet re-encodes byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Auth {
    pub kind: AuthType,
    pub data: [u8; AUTH_DATA_LEN],
}

impl Auth {
    /// No authentication, zeroed data.
    pub const NONE: Auth = Auth {
        kind: AuthType::None,
        data: [0; AUTH_DATA_LEN],
    };

    /// Simple text password: the first 8 bytes of `password`, zero padded
    /// (keepalived: "Only the first eight (8) characters are used").
    pub fn simple_text(password: &[u8]) -> Auth {
        let mut data = [0u8; AUTH_DATA_LEN];
        let n = password.len().min(AUTH_DATA_LEN);
        data[..n].copy_from_slice(&password[..n]);
        Auth {
            kind: AuthType::SimpleText,
            data,
        }
    }
}

/// The fields that differ between the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "snake_case")]
pub enum Version {
    /// VRRPv2, RFC 3768 (IPv4 only).
    V2 {
        /// Adver Int, whole seconds (RFC 3768 5.3.7).
        advert_int: u8,
        /// Auth Type and Authentication Data (RFC 2338 5.3.6, 5.3.10).
        auth: Auth,
    },
    /// VRRPv3, RFC 5798.
    V3 {
        /// Max Adver Int, centiseconds, 12 bits (RFC 5798 5.2.7).
        max_advert_int: u16,
    },
}

/// One VRRP advertisement, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Advert {
    /// Version-specific fields.
    pub version: Version,
    /// Virtual Router Identifier, 1..=255 (0 is decoded but never valid for
    /// an instance).
    pub vrid: u8,
    /// 0 = master stopping (RFC 5798 5.2.4), 255 = address owner.
    pub priority: u8,
    /// The virtual addresses, all of the family of the IP header carrying
    /// the message (RFC 5798 5.2.9).
    pub addresses: Vec<IpAddr>,
}

impl Advert {
    /// 2 or 3.
    pub fn version_number(&self) -> u8 {
        match self.version {
            Version::V2 { .. } => 2,
            Version::V3 { .. } => 3,
        }
    }

    /// The advertisement interval the sender announces, in centiseconds
    /// (v2's seconds scaled, so both versions compare in one unit).
    pub fn interval_centis(&self) -> u32 {
        match self.version {
            Version::V2 { advert_int, .. } => u32::from(advert_int) * 100,
            Version::V3 { max_advert_int } => u32::from(max_advert_int),
        }
    }

    /// The advertisement interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_centis()) * 10)
    }

    /// Bytes the message takes on the wire in `family` (no IP header).
    pub fn buffer_len(&self, family: Family) -> usize {
        let addr_len = match family {
            Family::V4 => 4,
            Family::V6 => 16,
        };
        let trailer = match self.version {
            Version::V2 { .. } => AUTH_DATA_LEN,
            Version::V3 { .. } => 0,
        };
        HEADER_LEN + addr_len * self.addresses.len() + trailer
    }

    /// Parse a checked view, verifying the checksum against `src`/`dst` and
    /// the fields RFC 5798 7.1 / RFC 3768 7.1 say a receiver MUST verify
    /// without knowing its own configuration (type, auth type, address
    /// count, checksum).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Advert, DecodeError> {
        if packet.kind() != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType {
                packet_type: packet.kind(),
            });
        }
        // RFC 5798 5.2.5: "The minimum value is 1."
        if packet.count() == 0 {
            return Err(DecodeError::NoAddresses);
        }
        let version = match packet.version() {
            2 => {
                let code = packet.auth_type();
                let kind = AuthType::from_code(code)
                    .ok_or(DecodeError::BadAuthType { auth_type: code })?;
                Version::V2 {
                    advert_int: packet.adver_int(),
                    auth: Auth {
                        kind,
                        data: packet.auth_data(),
                    },
                }
            }
            3 => Version::V3 {
                max_advert_int: packet.max_adver_int(),
            },
            v => return Err(DecodeError::BadVersion { version: v }),
        };
        let computed = packet
            .compute_checksum(src, dst)
            .ok_or(DecodeError::FamilyMismatch)?;
        if computed != packet.checksum() {
            return Err(DecodeError::BadChecksum {
                received: packet.checksum(),
                computed,
            });
        }
        Ok(Advert {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            addresses: packet.addresses().collect(),
        })
    }

    /// Check that this advert can be put on the wire from `src` to `dst`.
    pub fn check_encodable(&self, src: IpAddr, dst: IpAddr) -> Result<Family, EncodeError> {
        let family = Family::of(src);
        if Family::of(dst) != family {
            return Err(EncodeError::FamilyMismatch);
        }
        if self.addresses.is_empty() {
            return Err(EncodeError::NoAddresses);
        }
        if self.addresses.len() > usize::from(u8::MAX) {
            return Err(EncodeError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        if let Some(bad) = self.addresses.iter().find(|a| Family::of(**a) != family) {
            return Err(EncodeError::AddressFamily { address: *bad });
        }
        match self.version {
            Version::V2 { .. } if family == Family::V6 => Err(EncodeError::V2OverIpv6),
            Version::V3 { max_advert_int } if max_advert_int > 0x0fff => {
                Err(EncodeError::IntervalTooLong {
                    centis: max_advert_int,
                })
            }
            _ => Ok(family),
        }
    }

    /// Write this advert into `packet` (sized with [`Advert::buffer_len`])
    /// and fill in the checksum for `src` -> `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(), EncodeError> {
        let family = self.check_encodable(src, dst)?;
        if packet.family() != family {
            return Err(EncodeError::FamilyMismatch);
        }
        let needed = self.buffer_len(family);
        let got = packet.as_bytes().len();
        if got != needed {
            return Err(EncodeError::BufferSize { needed, got });
        }
        packet.set_version_kind(self.version_number(), TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_count(self.addresses.len() as u8);
        match self.version {
            Version::V2 { advert_int, auth } => {
                packet.set_auth_type(auth.kind.code());
                packet.set_adver_int(advert_int);
                packet.set_auth_data(auth.data);
            }
            Version::V3 { max_advert_int } => packet.set_max_adver_int(max_advert_int),
        }
        for (i, addr) in self.addresses.iter().enumerate() {
            packet.set_address(i, *addr);
        }
        packet.set_checksum(0);
        packet.fill_checksum(src, dst);
        Ok(())
    }
}

/// A VRRP message as a receiving socket hands it over, with the IP header
/// facts the checks need. For IPv4 [`super::parse_ipv4`] gets them from the
/// header a raw socket delivers; for IPv6 the driver takes them from the
/// `recvmsg` address and the `IPV6_HOPLIMIT`/`IPV6_PKTINFO` cmsgs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// Source address of the IP header: the sender's primary address, which
    /// breaks priority ties (RFC 5798 6.4.3).
    pub src: IpAddr,
    /// Destination address of the IP header: 224.0.0.18 / ff02::12 or the
    /// receiver's unicast address. Part of the v3 pseudo-header.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 Hop Limit; must be 255 for multicast (RFC 5798
    /// 5.1.1.3 / 5.1.2.3). Not checked here: the state machine checks and
    /// counts it.
    pub ttl_or_hop_limit: u8,
    /// The VRRP message: what follows the IP header (and the AH header, see
    /// [`super::strip_ah`]).
    pub payload: &'a [u8],
}

/// Decode and validate one received advertisement. Never panics.
///
/// Checks, in order: the source and destination families agree; the
/// message is complete and of a known version (v2 only over IPv4); Type is
/// ADVERTISEMENT; at least one address; a known v2 Auth Type; the checksum
/// (with the pseudo-header for v3). TTL, VRID, interval, address list and
/// authentication data are configuration-dependent and left to
/// [`crate::machine`].
pub fn decode(rx: &Received<'_>) -> Result<Advert, DecodeError> {
    let family = Family::of(rx.src);
    if Family::of(rx.dst) != family {
        return Err(DecodeError::FamilyMismatch);
    }
    let packet = Packet::new_checked(rx.payload, family)?;
    Advert::parse(&packet, rx.src, rx.dst)
}

/// Encode `advert` as sent from `src` to `dst` (the v3 checksum depends on
/// both; with unicast peers encode once per peer). Returns the VRRP message
/// only: the driver sends it on a raw socket with TTL/Hop Limit 255 and lets
/// the kernel build the IP header.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
    let family = advert.check_encodable(src, dst)?;
    let mut buffer = vec![0u8; advert.buffer_len(family)];
    advert.emit(
        &mut Packet::new_unchecked(&mut buffer[..], family),
        src,
        dst,
    )?;
    Ok(buffer)
}

/// Version and VRID of a message without validating anything else, for
/// a driver that demultiplexes one socket to several instances.
pub fn peek(payload: &[u8]) -> Option<(u8, u8)> {
    match payload {
        [ver_type, vrid, ..] => Some((ver_type >> 4, *vrid)),
        _ => None,
    }
}
