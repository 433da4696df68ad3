//! Entry and key records, the units inside Upsert and Delete payloads.
//!
//! Entry record (Upsert). `A` is the address length of the family: 4 for
//! IPv4, 16 for IPv6. Big-endian throughout.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Family (4|6) |   L4 proto    |OrigL4 |ReplL4 |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Zone              |         Reserved (0)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Status (IPS_* bits)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Timeout (seconds)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             Mark                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Original source address (A bytes)                   |
//! |           Original destination address (A bytes)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Original L4 (4 bytes, see below)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Reply source address (A bytes)                      |
//! |           Reply destination address (A bytes)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Reply L4 (4 bytes)                                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   TCP state   | WScale orig   | WScale reply  | TCP flags orig|  only if
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  Flags
//! | TCP flags repl|             Reserved (0)                      |  bit 0
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! OrigL4 / ReplL4 (4 bits each): 0 none, 1 ports, 2 ICMP.
//! Flags: bit 0 = TCP protoinfo follows; bits 1-7 are zero.
//!
//! L4 (4 bytes):  none:  0 0 0 0
//!                ports: source port (16) | destination port (16)
//!                ICMP:  id (16) | type (8) | code (8)
//! ```
//!
//! Sizes: IPv4 44 bytes (52 with TCP protoinfo), IPv6 92 (100).
//!
//! Key record (Delete): the first bytes of an entry record without the
//! state, and only the original tuple:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Family (4|6) |   L4 proto    |OrigL4 |  0    | Reserved (0)  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Zone              |         Reserved (0)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Original source, destination (A bytes each), L4 (4 bytes)   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Sizes: IPv4 20 bytes, IPv6 44.
//!
//! Every reserved bit must be zero and every length is implied by the
//! family, so a record has exactly one encoding: the stable hashes of
//! [`crate::digest`] are taken over these bytes, and both peers compute
//! the same ones.
//!
//! Encoding writes into a fixed stack buffer ([`EncodedEntry`],
//! [`EncodedKey`]): no allocation per entry.

use super::bytes::{Reader, Writer};
use super::DecodeError;
use crate::entry::{Entry, EntryError, Family, Key, TcpInfo, Tuple, L4};

/// Family byte for IPv4.
pub const FAMILY_IPV4: u8 = 4;
/// Family byte for IPv6.
pub const FAMILY_IPV6: u8 = 6;

/// L4 kind nibbles.
pub const L4_NONE: u8 = 0;
pub const L4_PORTS: u8 = 1;
pub const L4_ICMP: u8 = 2;

/// Flags bit 0: TCP protoinfo follows.
pub const FLAG_TCP: u8 = 0x01;

/// Fixed part of an entry record.
pub const ENTRY_FIXED_LEN: usize = 20;
/// Fixed part of a key record.
pub const KEY_FIXED_LEN: usize = 8;
/// An L4 part.
pub const L4_LEN: usize = 4;
/// TCP protoinfo.
pub const TCP_INFO_LEN: usize = 8;
/// Largest entry record (IPv6 with TCP protoinfo).
pub const MAX_ENTRY_LEN: usize = ENTRY_FIXED_LEN + 2 * (2 * 16 + L4_LEN) + TCP_INFO_LEN;
/// Smallest entry record (IPv4 without TCP protoinfo).
pub const MIN_ENTRY_LEN: usize = ENTRY_FIXED_LEN + 2 * (2 * 4 + L4_LEN);
/// Largest key record (IPv6).
pub const MAX_KEY_LEN: usize = KEY_FIXED_LEN + 2 * 16 + L4_LEN;
/// Smallest key record (IPv4).
pub const MIN_KEY_LEN: usize = KEY_FIXED_LEN + 2 * 4 + L4_LEN;
/// Byte range of the timeout in an entry record (left out of the content
/// hash, see [`crate::digest`]).
pub const TIMEOUT_RANGE: std::ops::Range<usize> = 12..16;
/// Byte range of the status in an entry record (its volatile bits are
/// left out of the content hash).
pub const STATUS_RANGE: std::ops::Range<usize> = 8..12;

fn family_code(f: Family) -> u8 {
    match f {
        Family::Ipv4 => FAMILY_IPV4,
        Family::Ipv6 => FAMILY_IPV6,
    }
}

fn family_from(code: u8) -> Result<Family, DecodeError> {
    match code {
        FAMILY_IPV4 => Ok(Family::Ipv4),
        FAMILY_IPV6 => Ok(Family::Ipv6),
        other => Err(DecodeError::BadFamily(other)),
    }
}

fn l4_kind(l4: &L4) -> u8 {
    match l4 {
        L4::None => L4_NONE,
        L4::Ports { .. } => L4_PORTS,
        L4::Icmp { .. } => L4_ICMP,
    }
}

fn put_l4(w: &mut Writer<'_>, l4: &L4) {
    match *l4 {
        L4::None => w.u32(0),
        L4::Ports { src, dst } => {
            w.u16(src);
            w.u16(dst);
        }
        L4::Icmp {
            id,
            icmp_type,
            icmp_code,
        } => {
            w.u16(id);
            w.u8(icmp_type);
            w.u8(icmp_code);
        }
    }
}

fn get_l4(r: &mut Reader<'_>, kind: u8) -> Result<L4, DecodeError> {
    match kind {
        L4_NONE => {
            r.zeros(L4_LEN)?;
            Ok(L4::None)
        }
        L4_PORTS => Ok(L4::Ports {
            src: r.u16()?,
            dst: r.u16()?,
        }),
        L4_ICMP => Ok(L4::Icmp {
            id: r.u16()?,
            icmp_type: r.u8()?,
            icmp_code: r.u8()?,
        }),
        other => Err(DecodeError::BadL4Kind(other)),
    }
}

fn put_tuple(w: &mut Writer<'_>, t: &Tuple) {
    w.addr(t.src);
    w.addr(t.dst);
    put_l4(w, &t.l4);
}

fn get_tuple(r: &mut Reader<'_>, family: Family, kind: u8) -> Result<Tuple, DecodeError> {
    Ok(Tuple {
        src: r.addr(family)?,
        dst: r.addr(family)?,
        l4: get_l4(r, kind)?,
    })
}

/// The record length of an entry of this family, with or without TCP
/// protoinfo.
pub const fn entry_len(family: Family, tcp: bool) -> usize {
    ENTRY_FIXED_LEN + 2 * (2 * family.addr_len() + L4_LEN) + if tcp { TCP_INFO_LEN } else { 0 }
}

/// The record length of a key of this family.
pub const fn key_len(family: Family) -> usize {
    KEY_FIXED_LEN + 2 * family.addr_len() + L4_LEN
}

/// An encoded entry record on the stack.
#[derive(Clone, Copy)]
pub struct EncodedEntry {
    buf: [u8; MAX_ENTRY_LEN],
    len: usize,
}

impl EncodedEntry {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl std::fmt::Debug for EncodedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedEntry({:02x?})", self.as_bytes())
    }
}

/// An encoded key record on the stack.
#[derive(Clone, Copy)]
pub struct EncodedKey {
    buf: [u8; MAX_KEY_LEN],
    len: usize,
}

impl EncodedKey {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl std::fmt::Debug for EncodedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedKey({:02x?})", self.as_bytes())
    }
}

/// Encode one entry record. Fails only for an entry whose addresses are
/// not all of one family.
pub fn encode_entry(e: &Entry) -> Result<EncodedEntry, EntryError> {
    let family = e.family()?;
    let mut buf = [0u8; MAX_ENTRY_LEN];
    let mut w = Writer::new(&mut buf);
    w.u8(family_code(family));
    w.u8(e.proto);
    w.u8((l4_kind(&e.original.l4) << 4) | l4_kind(&e.reply.l4));
    w.u8(if e.tcp.is_some() { FLAG_TCP } else { 0 });
    w.u16(e.zone);
    w.u16(0);
    w.u32(e.status);
    w.u32(e.timeout);
    w.u32(e.mark);
    put_tuple(&mut w, &e.original);
    put_tuple(&mut w, &e.reply);
    if let Some(tcp) = &e.tcp {
        w.u8(tcp.state);
        w.u8(tcp.wscale_original);
        w.u8(tcp.wscale_reply);
        w.u8(tcp.flags_original);
        w.u8(tcp.flags_reply);
        w.put(&[0, 0, 0]);
    }
    // MAX_ENTRY_LEN covers the largest record, so this never overflows.
    let len = w.finish().ok_or(EntryError::MixedFamily)?;
    Ok(EncodedEntry { buf, len })
}

/// Encode one key record.
pub fn encode_key(k: &Key) -> Result<EncodedKey, EntryError> {
    let family = k.family()?;
    let mut buf = [0u8; MAX_KEY_LEN];
    let mut w = Writer::new(&mut buf);
    w.u8(family_code(family));
    w.u8(k.proto);
    w.u8(l4_kind(&k.original.l4) << 4);
    w.u8(0);
    w.u16(k.zone);
    w.u16(0);
    put_tuple(&mut w, &k.original);
    let len = w.finish().ok_or(EntryError::MixedFamily)?;
    Ok(EncodedKey { buf, len })
}

/// Decode one entry record from the front of `r`.
pub(crate) fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let family = family_from(r.u8()?)?;
    let proto = r.u8()?;
    let kinds = r.u8()?;
    let flags = r.u8()?;
    if flags & !FLAG_TCP != 0 {
        return Err(DecodeError::BadFlags(flags));
    }
    let zone = r.u16()?;
    r.zeros(2)?;
    let status = r.u32()?;
    let timeout = r.u32()?;
    let mark = r.u32()?;
    let original = get_tuple(r, family, kinds >> 4)?;
    let reply = get_tuple(r, family, kinds & 0x0f)?;
    let tcp = if flags & FLAG_TCP != 0 {
        let info = TcpInfo {
            state: r.u8()?,
            wscale_original: r.u8()?,
            wscale_reply: r.u8()?,
            flags_original: r.u8()?,
            flags_reply: r.u8()?,
        };
        r.zeros(3)?;
        Some(info)
    } else {
        None
    };
    Ok(Entry {
        proto,
        original,
        reply,
        status,
        timeout,
        mark,
        zone,
        tcp,
    })
}

/// Decode one key record from the front of `r`.
pub(crate) fn read_key(r: &mut Reader<'_>) -> Result<Key, DecodeError> {
    let family = family_from(r.u8()?)?;
    let proto = r.u8()?;
    let kinds = r.u8()?;
    if kinds & 0x0f != 0 {
        return Err(DecodeError::BadL4Kind(kinds & 0x0f));
    }
    r.zeros(1)?;
    let zone = r.u16()?;
    r.zeros(2)?;
    let original = get_tuple(r, family, kinds >> 4)?;
    Ok(Key {
        proto,
        zone,
        original,
    })
}

/// Decode exactly one entry record (no trailing bytes).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader::new(bytes);
    let e = read_entry(&mut r)?;
    r.finish()?;
    Ok(e)
}

/// Decode exactly one key record (no trailing bytes).
pub fn decode_key(bytes: &[u8]) -> Result<Key, DecodeError> {
    let mut r = Reader::new(bytes);
    let k = read_key(&mut r)?;
    r.finish()?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{proto, status, tcp_state};

    fn v4_tcp() -> Entry {
        Entry {
            proto: proto::TCP,
            original: Tuple {
                src: "198.51.100.7".parse().unwrap(),
                dst: "192.0.2.100".parse().unwrap(),
                l4: L4::Ports {
                    src: 40000,
                    dst: 80,
                },
            },
            reply: Tuple {
                src: "10.0.1.11".parse().unwrap(),
                dst: "198.51.100.7".parse().unwrap(),
                l4: L4::Ports {
                    src: 8080,
                    dst: 40000,
                },
            },
            status: status::CONFIRMED | status::ASSURED | status::SEEN_REPLY | status::DST_NAT,
            timeout: 431999,
            mark: 7,
            zone: 3,
            tcp: Some(TcpInfo {
                state: tcp_state::ESTABLISHED,
                wscale_original: 7,
                wscale_reply: 9,
                flags_original: 0x23,
                flags_reply: 0x33,
            }),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(MAX_ENTRY_LEN, 100);
        assert_eq!(MIN_ENTRY_LEN, 44);
        assert_eq!(MAX_KEY_LEN, 44);
        assert_eq!(MIN_KEY_LEN, 20);
        assert_eq!(entry_len(Family::Ipv4, true), 52);
        assert_eq!(entry_len(Family::Ipv6, false), 92);
        let e = v4_tcp();
        assert_eq!(encode_entry(&e).unwrap().as_bytes().len(), 52);
        assert_eq!(encode_key(&e.key()).unwrap().as_bytes().len(), 20);
    }

    /// The layout of the diagram, field by field.
    #[test]
    fn entry_layout() {
        let bytes = encode_entry(&v4_tcp()).unwrap();
        let expected: Vec<u8> = [
            &[4u8, 6, 0x11, 0x01][..],
            &[0, 3, 0, 0],
            &0x0000_002eu32.to_be_bytes(),
            &431999u32.to_be_bytes(),
            &7u32.to_be_bytes(),
            &[198, 51, 100, 7, 192, 0, 2, 100],
            &[0x9c, 0x40, 0, 80],
            &[10, 0, 1, 11, 198, 51, 100, 7],
            &[0x1f, 0x90, 0x9c, 0x40],
            &[3, 7, 9, 0x23, 0x33, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes.as_bytes(), &expected[..]);
        assert_eq!(decode_entry(&expected).unwrap(), v4_tcp());
    }

    #[test]
    fn key_layout() {
        let bytes = encode_key(&v4_tcp().key()).unwrap();
        let expected: Vec<u8> = [
            &[4u8, 6, 0x10, 0][..],
            &[0, 3, 0, 0],
            &[198, 51, 100, 7, 192, 0, 2, 100],
            &[0x9c, 0x40, 0, 80],
        ]
        .concat();
        assert_eq!(bytes.as_bytes(), &expected[..]);
        assert_eq!(decode_key(&expected).unwrap(), v4_tcp().key());
    }

    #[test]
    fn ipv6_icmp_and_none() {
        let e = Entry {
            proto: proto::ICMPV6,
            original: Tuple {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::100".parse().unwrap(),
                l4: L4::Icmp {
                    id: 77,
                    icmp_type: 128,
                    icmp_code: 0,
                },
            },
            reply: Tuple {
                src: "2001:db8::100".parse().unwrap(),
                dst: "2001:db8::1".parse().unwrap(),
                l4: L4::None,
            },
            status: status::CONFIRMED,
            timeout: 30,
            mark: 0,
            zone: 0,
            tcp: None,
        };
        let bytes = encode_entry(&e).unwrap();
        assert_eq!(bytes.as_bytes().len(), 92);
        assert_eq!(bytes.as_bytes()[2], 0x20);
        assert_eq!(decode_entry(bytes.as_bytes()).unwrap(), e);
        let key = encode_key(&e.key()).unwrap();
        assert_eq!(key.as_bytes().len(), 44);
        assert_eq!(decode_key(key.as_bytes()).unwrap(), e.key());
    }

    #[test]
    fn rejects() {
        let good = encode_entry(&v4_tcp()).unwrap().as_bytes().to_vec();
        let mut b = good.clone();
        b[0] = 5;
        assert_eq!(decode_entry(&b), Err(DecodeError::BadFamily(5)));
        let mut b = good.clone();
        b[2] = 0x31;
        assert_eq!(decode_entry(&b), Err(DecodeError::BadL4Kind(3)));
        let mut b = good.clone();
        b[3] = 0x03;
        assert_eq!(decode_entry(&b), Err(DecodeError::BadFlags(3)));
        let mut b = good.clone();
        b[7] = 1;
        assert_eq!(decode_entry(&b), Err(DecodeError::ReservedNotZero));
        let mut b = good.clone();
        b[51] = 1;
        assert_eq!(decode_entry(&b), Err(DecodeError::ReservedNotZero));
        assert!(matches!(
            decode_entry(&good[..51]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            decode_entry(&b),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        let mixed = Entry {
            reply: Tuple {
                src: "2001:db8::1".parse().unwrap(),
                ..v4_tcp().reply
            },
            ..v4_tcp()
        };
        assert_eq!(encode_entry(&mixed).err(), Some(EntryError::MixedFamily));
    }
}
