//! The replicated conntrack entry, as plain data.
//!
//! Independent of the director's ctnetlink codec: the director maps a
//! kernel entry (`CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`, `CTA_STATUS`,
//! `CTA_TIMEOUT`, `CTA_MARK`, `CTA_ZONE`, `CTA_PROTOINFO_TCP`) to an
//! [`Entry`] and back. NAT is not a separate field: it is implied by the
//! two tuples (a DNAT entry's reply source is the real server, an SNAT
//! entry's reply destination is the translated source), and the director
//! derives `CTA_NAT_SRC` / `CTA_NAT_DST` from them together with the
//! `IPS_SRC_NAT` / `IPS_DST_NAT` status bits.
//!
//! An entry is identified by its [`Key`]: the original tuple, the L4
//! protocol and the zone, which is what the kernel looks an entry up by
//! (`nf_conntrack_find_get(net, zone, tuple)`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Address family of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Bytes of one address of this family.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }
}

/// IP protocol numbers the director replicates most (IANA "Assigned
/// Internet Protocol Numbers"); any other number is carried as is.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// Conntrack status bits (`enum ip_conntrack_status`,
/// include/uapi/linux/netfilter/nf_conntrack_common.h). [`Entry::status`]
/// carries the kernel's `CTA_STATUS` value unchanged; these name the bits
/// the director cares about.
pub mod status {
    /// IPS_EXPECTED: the connection is an expectation's child.
    pub const EXPECTED: u32 = 1 << 0;
    /// IPS_SEEN_REPLY: packets were seen in both directions.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// IPS_ASSURED: never early-dropped.
    pub const ASSURED: u32 = 1 << 2;
    /// IPS_CONFIRMED: the entry is in the hash table (every entry a dump
    /// or an event shows has it).
    pub const CONFIRMED: u32 = 1 << 3;
    /// IPS_SRC_NAT: source NAT applies (the reply destination differs).
    pub const SRC_NAT: u32 = 1 << 4;
    /// IPS_DST_NAT: destination NAT applies (the reply source differs).
    pub const DST_NAT: u32 = 1 << 5;
    pub const SEQ_ADJUST: u32 = 1 << 6;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// IPS_DYING: being destroyed.
    pub const DYING: u32 = 1 << 9;
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    pub const TEMPLATE: u32 = 1 << 11;
    pub const HELPER: u32 = 1 << 13;
    /// IPS_OFFLOAD: flowtable offload (software).
    pub const OFFLOAD: u32 = 1 << 14;
    pub const HW_OFFLOAD: u32 = 1 << 15;
    /// Bits that describe this node's handling of the entry, not the
    /// connection: left out of the content hash, so that a flow offloaded
    /// on one node only, or being destroyed, does not look different.
    pub const VOLATILE: u32 = DYING | OFFLOAD | HW_OFFLOAD;
}

/// TCP conntrack states (`enum tcp_conntrack`,
/// include/uapi/linux/netfilter/nf_conntrack_tcp.h).
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const LAST_ACK: u8 = 6;
    pub const TIME_WAIT: u8 = 7;
    pub const CLOSE: u8 = 8;
    pub const SYN_SENT2: u8 = 9;
}

/// The layer 4 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L4 {
    /// Protocols conntrack tracks by address only (generic).
    None,
    /// TCP, UDP, UDP-Lite, SCTP, DCCP (`CTA_PROTO_SRC_PORT` /
    /// `CTA_PROTO_DST_PORT`); also GRE keys.
    Ports { src: u16, dst: u16 },
    /// ICMP / ICMPv6 (`CTA_PROTO_ICMP_ID`, `_TYPE`, `_CODE`).
    Icmp {
        id: u16,
        icmp_type: u8,
        icmp_code: u8,
    },
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

/// TCP protocol state (`CTA_PROTOINFO_TCP`). The flag bytes are the
/// `flags` half of `struct nf_ct_tcp_flags` (IP_CT_TCP_FLAG_*); the
/// director sets the mask to the bits it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TcpInfo {
    /// One of [`tcp_state`].
    pub state: u8,
    pub wscale_original: u8,
    pub wscale_reply: u8,
    pub flags_original: u8,
    pub flags_reply: u8,
}

/// A replicated conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// IP protocol number (see [`proto`]).
    pub proto: u8,
    /// The tuple of the first packet (client -> VIP for a load-balanced
    /// flow).
    pub original: Tuple,
    /// The tuple replies match (real server -> client after DNAT).
    pub reply: Tuple,
    /// `CTA_STATUS`, the kernel's IPS_* bits (see [`status`]).
    pub status: u32,
    /// Seconds until the entry expires, as the kernel reported it.
    pub timeout: u32,
    /// `CTA_MARK`.
    pub mark: u32,
    /// `CTA_ZONE` (0: the default zone).
    pub zone: u16,
    /// `CTA_PROTOINFO_TCP`, for TCP entries.
    pub tcp: Option<TcpInfo>,
}

/// What identifies an entry: the original tuple, protocol and zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub proto: u8,
    pub zone: u16,
    pub original: Tuple,
}

/// Why an entry cannot be replicated. These are the local side's fault
/// (the director built a bad entry): counted, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum EntryError {
    /// The four addresses are not all of one family.
    #[error("addresses of different families in one entry")]
    MixedFamily,
}

impl Tuple {
    /// The family of both addresses, if they agree.
    pub fn family(&self) -> Option<Family> {
        let f = Family::of(self.src);
        (Family::of(self.dst) == f).then_some(f)
    }
}

impl Key {
    pub fn family(&self) -> Result<Family, EntryError> {
        self.original.family().ok_or(EntryError::MixedFamily)
    }
}

impl Entry {
    /// The key the kernel (and the peer) finds this entry by.
    pub fn key(&self) -> Key {
        Key {
            proto: self.proto,
            zone: self.zone,
            original: self.original,
        }
    }

    /// The family of all four addresses, or why there is none.
    pub fn family(&self) -> Result<Family, EntryError> {
        match (self.original.family(), self.reply.family()) {
            (Some(a), Some(b)) if a == b => Ok(a),
            _ => Err(EntryError::MixedFamily),
        }
    }

    /// Whether this entry can be put on the wire.
    pub fn validate(&self) -> Result<(), EntryError> {
        self.family().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_entry() -> Entry {
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
            status: status::CONFIRMED | status::SEEN_REPLY | status::ASSURED | status::DST_NAT,
            timeout: 432000,
            mark: 0,
            zone: 0,
            tcp: Some(TcpInfo {
                state: tcp_state::ESTABLISHED,
                ..TcpInfo::default()
            }),
        }
    }

    #[test]
    fn key_is_original_tuple_proto_and_zone() {
        let e = tcp_entry();
        let k = e.key();
        assert_eq!(k.original, e.original);
        assert_eq!(k.proto, 6);
        assert_eq!(k.zone, 0);
        // The reply tuple and the state are not part of the identity.
        let mut other = e;
        other.reply.src = "10.0.1.12".parse().unwrap();
        other.timeout = 1;
        assert_eq!(other.key(), k);
    }

    #[test]
    fn family_must_agree() {
        let mut e = tcp_entry();
        assert_eq!(e.family(), Ok(Family::Ipv4));
        e.reply.src = "2001:db8::1".parse().unwrap();
        assert_eq!(e.family(), Err(EntryError::MixedFamily));
        assert!(e.validate().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let e = tcp_entry();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
    }
}
