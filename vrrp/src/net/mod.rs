//! The I/O layer under the VRRP driver: interface facts, the raw VRRP
//! socket, and gratuitous ARP / unsolicited NA. Linux only.
//!
//! The protocol logic stays in [`crate::codec`] and [`crate::machine`];
//! this module only moves bytes. Everything here acts on the network
//! namespace of the thread that calls it (`open`, [`interface`]); sockets
//! stay in the namespace they were created in, whichever thread later uses
//! them.
//!
//! - [`interface`] / [`Interface`] (`iface.rs`): index, MAC, IPv4
//!   addresses (primary first), IPv6 link-local, operational state, from
//!   `getifaddrs(3)` (rtnetlink in the caller's namespace; not sysfs, which
//!   shows the namespace it was mounted in).
//! - [`VrrpSocket`] (`socket.rs`): raw IP protocol 112, one per
//!   (interface, family), tokio-async `recv` / `send`; [`Incoming`] is what
//!   the driver turns into a [`crate::codec::Received`].
//! - [`Announcer`] (`announce.rs`): gratuitous ARP request (RFC 5227 3) on
//!   an `AF_PACKET` socket and unsolicited Neighbor Advertisement (RFC 4861
//!   7.2.6) on a raw ICMPv6 socket; the frames come from the pure builders
//!   [`arp_announcement`] and [`unsolicited_na`].
//! - `sys.rs`: the calls that need C structs or control messages
//!   (`recvmsg`/`sendmsg` with `IP_PKTINFO` / `IPV6_PKTINFO` /
//!   `IPV6_HOPLIMIT`, `getifaddrs`, `bind` with a `sockaddr_ll`), through
//!   the safe APIs of `nix`, and the registration with tokio's reactor: the
//!   crate's only module allowed `unsafe`, for its one block (tokio's
//!   `AsyncFd::register`, whose safe predecessor is deprecated as unsound).
//!
//! # Socket options of [`VrrpSocket`], and why
//!
//! Both families:
//!
//! - `socket(AF_INET[6], SOCK_RAW, 112)`: VRRP is IP protocol 112 (RFC
//!   5798 5.1.1.4 / 5.1.2.4). Raw sockets need `CAP_NET_RAW`.
//! - `SO_BINDTODEVICE` (socket(7)): receive only what arrives on this
//!   interface, and send out of it. VRRP is link-local: an advert from
//!   another link must not count (RFC 5798 7.1 "MUST verify that the
//!   received packet ... arrived on the interface").
//! - `SO_RCVBUF` 1 MiB (capped by `net.core.rmem_max`): every VRID of the
//!   link shares this queue.
//! - Queue drained after set-up: a raw socket receives from the moment it
//!   exists, before `SO_BINDTODEVICE` applies.
//! - Non-blocking, registered with tokio's reactor (`AsyncFd`).
//!
//! IPv4:
//!
//! - `IP_TTL` 255 and `IP_MULTICAST_TTL` 255 (ip(7)): "The TTL MUST be set
//!   to 255" (RFC 5798 5.1.1.3), and receivers discard anything else (RFC
//!   5798 7.1), which is what makes an advert provably from the link. Both
//!   options, since unicast peers (keepalived's `unicast_peer`) need it as
//!   much as multicast.
//! - `IP_MULTICAST_LOOP` off: our own adverts must not come back to us as
//!   if a peer had sent them (a master hearing itself would compare
//!   priorities with itself).
//! - `IP_MULTICAST_ALL` off (Linux >= 2.6.31, ip(7)): receive only the
//!   groups this socket joined, not every group any socket of the host
//!   joined; a unicast-mode socket then sees no multicast adverts.
//! - `IP_MULTICAST_IF` = the source address: multicast leaves from it.
//! - `IP_ADD_MEMBERSHIP` 224.0.0.18 with `ip_mreqn.imr_ifindex` (RFC 5798
//!   5.1.1.2), multicast mode only: the interface by index, not by address.
//! - Source address: `IP_PKTINFO` with `ipi_spec_dst` = source and
//!   `ipi_ifindex` on every `sendmsg` (ip(7)), so adverts leave from the
//!   primary address (RFC 5798 5.1.1.1). In unicast mode the socket is also
//!   `bind`-ed to it, which limits reception to adverts addressed to it. In
//!   multicast mode it cannot be: a raw IPv4 socket bound to an address
//!   only receives datagrams *to* that address (`raw_v4_match()` in
//!   net/ipv4/raw.c), so it would never see 224.0.0.18.
//! - Receive: an `AF_INET` raw socket delivers the IPv4 header (raw(7));
//!   [`crate::codec::parse_ipv4`] takes source, destination and TTL from it.
//!
//! IPv6:
//!
//! - `IPV6_UNICAST_HOPS` 255 and `IPV6_MULTICAST_HOPS` 255 (ipv6(7), RFC
//!   3493 5.1 / 5.2): "The Hop Limit MUST be set to 255" (RFC 5798 5.1.2.3).
//! - `IPV6_MULTICAST_LOOP` off, `IPV6_MULTICAST_ALL` off (Linux >= 4.20),
//!   `IPV6_MULTICAST_IF` = the interface index: as for IPv4.
//! - `IPV6_JOIN_GROUP` ff02::12 on the interface index (RFC 5798 5.1.2.2),
//!   multicast mode only.
//! - `bind` to the source address (the link-local one, RFC 5798 5.1.2.1,
//!   with the interface as scope): adverts leave from it. A bound IPv6 raw
//!   socket still receives the groups it joined (`raw_v6_match()` in
//!   net/ipv6/raw.c). `IPV6_FREEBIND` first: the link-local address is
//!   tentative while duplicate address detection runs (RFC 4862 5.4, about
//!   a second after the link comes up), and a raw socket may not bind a
//!   tentative address without it (`EADDRNOTAVAIL`), so a daemon started
//!   right after boot would fail.
//! - `IPV6_RECVPKTINFO` and `IPV6_RECVHOPLIMIT` (RFC 3542 6.1 / 6.3): an
//!   `AF_INET6` raw socket never delivers the IPv6 header (RFC 3542 3), yet
//!   the receiver needs the destination (the v3 checksum covers the
//!   pseudo-header, RFC 5798 5.2.8) and the hop limit (must be 255, RFC
//!   5798 7.1). Each datagram then carries `IPV6_PKTINFO` and
//!   `IPV6_HOPLIMIT` control messages.
//! - No `IPV6_CHECKSUM`: the VRRP checksum is computed by
//!   [`crate::codec::encode`] (the kernel only checksums raw ICMPv6 by
//!   default).
//!
//! # Sockets of [`Announcer`]
//!
//! - `socket(AF_PACKET, SOCK_RAW, 0)` bound (`sockaddr_ll`, protocol 0) to
//!   the interface: sends whole Ethernet frames, receives nothing (no
//!   protocol, no receive hook; packet(7)).
//! - `socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)`, `SO_BINDTODEVICE`, hop
//!   limits 255 (RFC 4861 7.1.2 drops NDs with any other), multicast loop
//!   off, a drop-everything socket filter (`SO_ATTACH_FILTER`, `ret #0`)
//!   since it only sends; the source, the announced address itself (see
//!   `announce.rs`: never the possibly tentative link-local), is set per
//!   message with `IPV6_PKTINFO`. The kernel fills in the ICMPv6 checksum
//!   (RFC 3542 3.1).

mod announce;
mod iface;
mod socket;
mod sys;

use std::io;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::codec::FramingError;

pub use announce::{arp_announcement, unsolicited_na, Announcer, ALL_NODES, ARP_FRAME_LEN, NA_LEN};
pub use iface::{interface, Interface};
pub use socket::VrrpSocket;

/// One VRRP datagram as received: the IP header facts the codec needs,
/// and the VRRP message. Build a [`crate::codec::Received`] from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// IP source address (IPv4 header, or `msg_name` for IPv6).
    pub src: IpAddr,
    /// IP destination address: the multicast group or one of ours (IPv4
    /// header, or `IPV6_PKTINFO`).
    pub dst: IpAddr,
    /// TTL (IPv4) or Hop Limit (IPv6, `IPV6_HOPLIMIT`) on arrival.
    pub ttl_or_hop_limit: u8,
    /// The VRRP message (IP header stripped).
    pub payload: Vec<u8>,
}

impl Incoming {
    /// The view [`crate::codec::decode`] and the state machine take.
    pub fn received(&self) -> crate::codec::Received<'_> {
        crate::codec::Received {
            src: self.src,
            dst: self.dst,
            ttl_or_hop_limit: self.ttl_or_hop_limit,
            payload: &self.payload,
        }
    }
}

/// Why a received datagram could not be taken apart. The sender's (or the
/// network's) fault: count, log, keep receiving. [`VrrpSocket::recv`]
/// returns it inside an [`io::ErrorKind::InvalidData`] error; get it back
/// with [`RecvError::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RecvError {
    /// The IPv4 header around the message is malformed.
    #[error("malformed IPv4 header: {framing}")]
    Framing {
        #[from]
        framing: FramingError,
    },
    /// Longer than any valid VRRP message (the buffer size given).
    #[error("datagram longer than {limit} bytes")]
    TooLong { limit: usize },
    /// An IPv6 datagram arrived without its source address (`msg_name`).
    #[error("IPv6 datagram without a source address")]
    MissingSource,
    /// An IPv6 datagram arrived without the `IPV6_PKTINFO` control message
    /// the socket asked for (the kernel's doing rather than the peer's).
    #[error("IPv6 datagram without IPV6_PKTINFO")]
    MissingPktInfo,
    /// An IPv6 datagram arrived without the `IPV6_HOPLIMIT` control
    /// message the socket asked for.
    #[error("IPv6 datagram without IPV6_HOPLIMIT")]
    MissingHopLimit,
    /// An `IPV6_HOPLIMIT` outside 0..=255.
    #[error("IPv6 hop limit {hop_limit} out of range")]
    BadHopLimit { hop_limit: i32 },
}

impl RecvError {
    /// The [`RecvError`] inside an error from [`VrrpSocket::recv`], if it
    /// is one (otherwise the error came from the kernel).
    pub fn of(err: &io::Error) -> Option<&RecvError> {
        err.get_ref()?.downcast_ref::<RecvError>()
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_errors_round_trip_through_json() {
        for e in [
            RecvError::Framing {
                framing: FramingError::NotIpv4 { version: 6 },
            },
            RecvError::TooLong { limit: 4160 },
            RecvError::MissingSource,
            RecvError::MissingPktInfo,
            RecvError::MissingHopLimit,
            RecvError::BadHopLimit { hop_limit: 256 },
        ] {
            let json = serde_json::to_string(&e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
            let back: RecvError = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e, "{json}");
        }
    }
}
