//! A view over the bytes of one VRRP message (no IP header), smoltcp style:
//! the length is checked once in [`Packet::new_checked`], after which every
//! accessor stays in bounds.
//!
//! VRRPv3, RFC 5798 5.1 (the IPv4 or IPv6 header in front is not part of
//! this view):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                       IPvX Address(es)                        |
//! +                  (4 bytes each for IPv4,                      +
//! |                   16 bytes each for IPv6)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! VRRPv2, RFC 3768 5.1 (IPv4 only; the Auth Type / Authentication Data
//! fields come from RFC 2338 5.3.6 and 5.3.10):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Adver Int   |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         IP Address (1)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            .                                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         IP Address (n)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (1)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (2)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{DecodeError, Family};

/// Byte offsets of the fixed fields.
pub(crate) mod field {
    use std::ops::Range;
    /// Version (high nibble) and Type (low nibble).
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2: Auth Type.
    pub const AUTH_TYPE: usize = 4;
    /// v2: Adver Int, whole seconds.
    pub const ADVER_INT: usize = 5;
    /// v3: 4 reserved bits, then 12 bits of Max Adver Int (centiseconds).
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Length of the fixed header, common to v2 and v3.
pub const HEADER_LEN: usize = 8;
/// Length of the v2 Authentication Data trailer (RFC 2338 5.3.10).
pub const AUTH_DATA_LEN: usize = 8;
/// The only VRRP packet type (RFC 5798 5.2.2, RFC 3768 5.3.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;

/// Read-only and read-write view over a VRRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    family: Family,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap `buffer` without checking it. Accessors may panic on a buffer
    /// that [`Packet::check_len`] would reject; use this only on buffers
    /// sized with [`super::Advert::buffer_len`] for writing.
    pub fn new_unchecked(buffer: T, family: Family) -> Self {
        Packet { buffer, family }
    }

    /// Wrap `buffer` after checking that it holds exactly one complete
    /// message of a known version (RFC 5798 7.1 / RFC 3768 7.1: "MUST verify
    /// that the received packet contains the complete VRRP packet").
    pub fn new_checked(buffer: T, family: Family) -> Result<Self, DecodeError> {
        let packet = Self::new_unchecked(buffer, family);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the buffer is exactly as long as the header says.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: data.len(),
            });
        }
        let version = data[field::VER_TYPE] >> 4;
        let count = usize::from(data[field::COUNT]);
        let expected = match (version, self.family) {
            (2, Family::V4) => HEADER_LEN + 4 * count + AUTH_DATA_LEN,
            // RFC 3768 is IPv4 only; RFC 5798 5.1 carries IPv6.
            (2, Family::V6) => return Err(DecodeError::V2OverIpv6),
            (3, Family::V4) => HEADER_LEN + 4 * count,
            (3, Family::V6) => HEADER_LEN + 16 * count,
            (v, _) => return Err(DecodeError::BadVersion { version: v }),
        };
        match data.len() {
            n if n < expected => Err(DecodeError::Truncated {
                needed: expected,
                got: n,
            }),
            n if n > expected => Err(DecodeError::LengthMismatch { expected, got: n }),
            _ => Ok(()),
        }
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Address family the addresses are read in.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Version nibble: 2 or 3 after [`Packet::new_checked`].
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// Type nibble: 1 is ADVERTISEMENT, the only type defined.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// Virtual Router Identifier.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority: 0 = master stopping, 255 = address owner.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IPvX Addr.
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v2 only: Auth Type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// v2 only: Adver Int, whole seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// v3 only: the 4 reserved bits (RFC 5798 5.2.6: sent as zero, ignored
    /// on receipt).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::MAX_ADVER_INT.start] >> 4
    }

    /// v3 only: Max Adver Int, 12 bits of centiseconds (RFC 5798 5.2.7).
    pub fn max_adver_int(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::MAX_ADVER_INT];
        u16::from_be_bytes([d[0], d[1]]) & 0x0fff
    }

    /// Checksum field as received.
    pub fn checksum(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([d[0], d[1]])
    }

    fn address_len(&self) -> usize {
        match self.family {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// The `index`th address, `None` past Count IPvX Addr.
    pub fn address(&self, index: usize) -> Option<IpAddr> {
        if index >= usize::from(self.count()) {
            return None;
        }
        let len = self.address_len();
        let start = field::ADDRESSES + index * len;
        let bytes = self.buffer.as_ref().get(start..start + len)?;
        Some(match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            Family::V6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        })
    }

    /// Every address, in packet order.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        (0..usize::from(self.count())).filter_map(|i| self.address(i))
    }

    /// v2 only: the 8 bytes of Authentication Data.
    pub fn auth_data(&self) -> [u8; AUTH_DATA_LEN] {
        let data = self.buffer.as_ref();
        let mut out = [0u8; AUTH_DATA_LEN];
        if let Some(tail) = data.get(data.len().saturating_sub(AUTH_DATA_LEN)..) {
            if tail.len() == AUTH_DATA_LEN {
                out.copy_from_slice(tail);
            }
        }
        out
    }

    /// The checksum this message should carry, computed with the checksum
    /// field taken as zero. `src`/`dst` feed the v3 pseudo-header and are
    /// ignored for v2 (RFC 3768 5.3.8). `None` if v3 and the two addresses
    /// are of different families.
    pub fn compute_checksum(&self, src: IpAddr, dst: IpAddr) -> Option<u16> {
        let data = self.buffer.as_ref();
        let mut acc = if self.version() == 3 {
            checksum::pseudo_header_sum(src, dst, data.len())?
        } else {
            0
        };
        acc = checksum::sum(&data[..field::CHECKSUM.start], acc);
        acc = checksum::sum(&data[field::CHECKSUM.end..], acc);
        Some(checksum::finish(acc))
    }

    /// Whether the checksum field is right (RFC 5798 7.1 / RFC 3768 7.1:
    /// "MUST verify the VRRP checksum").
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.compute_checksum(src, dst) == Some(self.checksum())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set Version and Type.
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        self.bytes_mut()[field::VER_TYPE] = (version << 4) | (kind & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.bytes_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.bytes_mut()[field::PRIORITY] = priority;
    }

    pub fn set_count(&mut self, count: u8) {
        self.bytes_mut()[field::COUNT] = count;
    }

    /// v2 only.
    pub fn set_auth_type(&mut self, auth_type: u8) {
        self.bytes_mut()[field::AUTH_TYPE] = auth_type;
    }

    /// v2 only.
    pub fn set_adver_int(&mut self, seconds: u8) {
        self.bytes_mut()[field::ADVER_INT] = seconds;
    }

    /// v3 only: Max Adver Int (12 bits, higher bits dropped); the reserved
    /// bits are written as zero (RFC 5798 5.2.6).
    pub fn set_max_adver_int(&mut self, centiseconds: u16) {
        let bytes = (centiseconds & 0x0fff).to_be_bytes();
        self.bytes_mut()[field::MAX_ADVER_INT].copy_from_slice(&bytes);
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.bytes_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Write the `index`th address; the caller keeps `addr` in the view's
    /// family (other families are ignored).
    pub fn set_address(&mut self, index: usize, addr: IpAddr) {
        let len = self.address_len();
        let start = field::ADDRESSES + index * len;
        match (addr, self.family) {
            (IpAddr::V4(a), Family::V4) => {
                self.bytes_mut()[start..start + 4].copy_from_slice(&a.octets())
            }
            (IpAddr::V6(a), Family::V6) => {
                self.bytes_mut()[start..start + 16].copy_from_slice(&a.octets())
            }
            _ => {}
        }
    }

    /// v2 only: write the trailing 8 bytes of Authentication Data.
    pub fn set_auth_data(&mut self, data: [u8; AUTH_DATA_LEN]) {
        let bytes = self.bytes_mut();
        let start = bytes.len() - AUTH_DATA_LEN;
        bytes[start..].copy_from_slice(&data);
    }

    /// Compute and store the checksum (see [`Packet::compute_checksum`]).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        let value = self.compute_checksum(src, dst).unwrap_or(0);
        self.set_checksum(value);
    }
}
