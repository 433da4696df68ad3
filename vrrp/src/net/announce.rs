//! [`Announcer`]: tell the link that a virtual address now lives here, with
//! a gratuitous ARP (IPv4) or an unsolicited Neighbor Advertisement (IPv6),
//! as a new master must (RFC 5798 6.4.1 / 6.4.2: "broadcast a gratuitous
//! ARP request ... for each IPv4 address", "send an unsolicited ND Neighbor
//! Advertisement with the Router Flag (R) set ... for each IPv6 address").
//!
//! The Router flag: RFC 5798 sets it because a VRRP address is a router's.
//! A director's VIPs are mostly service addresses, and a neighbour that
//! sees R go from set to clear for an address in its Default Router List
//! drops that router (RFC 4861 7.2.5), so R must say what the box really
//! is. Clear by default; [`Announcer::set_router`] sets it (keepalived and
//! the kernel's own NAs set it when the interface forwards IPv6).
//!
//! The source of an NA is the address it announces, as the kernel's own
//! NAs do (`ndisc_send_na()` in net/ipv6/ndisc.c uses the target when it
//! is an address of the interface): RFC 4861 4.4 asks for "an address
//! assigned to the interface", and a VIP is one by the time it is
//! announced (the host adds it first, without DAD). The link-local
//! address would do too, except while it is tentative (RFC 4862 5.4), and
//! it is exactly after a link flap, when a master takes its VIPs back,
//! that duplicate address detection runs on it: the kernel then refuses
//! it as a source (`EINVAL`) and the takeover would go unannounced.
//!
//! The bytes come from two pure builders, [`arp_announcement`] and
//! [`unsolicited_na`]; the sockets only carry them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::iface::Interface;
use super::sys;

/// Length of the frame [`arp_announcement`] builds: 14 bytes of Ethernet
/// header and 28 of ARP. Ethernet drivers pad it to the 60-byte minimum.
pub const ARP_FRAME_LEN: usize = 42;

/// Length of the ICMPv6 message [`unsolicited_na`] builds: 24 bytes of
/// Neighbor Advertisement and one 8-byte Target Link-Layer Address option.
pub const NA_LEN: usize = 32;

/// EtherType of ARP (IEEE 802 numbers; RFC 826 "ether_type$ADDRESS_RESOLUTION").
const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4, the ARP protocol type being resolved.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP hardware type Ethernet (RFC 826 "ares_hrd$Ethernet").
const ARPHRD_ETHER: u16 = 1;
/// ARP opcode request (RFC 826 "ares_op$REQUEST").
const ARPOP_REQUEST: u16 = 1;
/// ICMPv6 type Neighbor Advertisement (RFC 4861 4.4).
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Neighbor Advertisement Router flag (RFC 4861 4.4), in the first byte of
/// the flags word: R = 0x80, S = 0x40, O = 0x20.
const ND_NA_FLAG_ROUTER: u8 = 0x80;
/// Neighbor Advertisement Override flag (RFC 4861 4.4).
const ND_NA_FLAG_OVERRIDE: u8 = 0x20;
/// ND option type Target Link-Layer Address (RFC 4861 4.6.1).
const ND_OPT_TARGET_LINKADDR: u8 = 2;
/// All-nodes multicast address (RFC 4291 2.7.1), the destination of an
/// unsolicited NA (RFC 4861 7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Hop limit of every Neighbor Discovery message; receivers drop any other
/// (RFC 4861 7.1.2).
const ND_HOP_LIMIT: u32 = 255;

/// The gratuitous ARP request announcing `addr` at `mac`, as an Ethernet
/// frame: the "ARP Announcement" of RFC 5227 3 (an ARP request with sender
/// and target protocol address both `addr`, target hardware address zero),
/// broadcast. This is what keepalived sends by default (`garp_*`
/// settings aside), and what Linux's own `arp_notify` sends.
///
/// Ethernet II header (IEEE 802.3 / RFC 894), then the ARP packet of RFC
/// 826 for Ethernet and IPv4:
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |       Destination MAC ff:ff:ff:ff:ff:ff (broadcast)           |
/// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                               |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
/// |                 Source MAC (interface MAC)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     EtherType 0x0806 (ARP)    |   Hardware Type 1 (Ethernet)  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Protocol Type 0x0800 (IPv4)  |  HLEN = 6     |  PLEN = 4     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Operation 1 (request)     |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
/// |           Sender Hardware Address (interface MAC)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Sender Protocol Address (addr)                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Target Hardware Address 00:00:00:00:00:00           |
/// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                               |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
/// |           Target Protocol Address (addr)                      |
/// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
pub fn arp_announcement(mac: [u8; 6], addr: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    // Ethernet header.
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // ARP packet.
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // f[32..38]: Target Hardware Address, zero (RFC 5227 2.1.1: "SHOULD be
    // set to all zeroes"; receivers ignore it in a request).
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// The unsolicited Neighbor Advertisement for `target` at `mac` (RFC 4861
/// 7.2.6): Override set so neighbours replace the cached link-layer
/// address, Solicited clear (nobody asked), Router as `router` (see the
/// module docs), and the Target Link-Layer Address option. The checksum is
/// left zero: on a raw ICMPv6 socket the kernel computes it over the IPv6
/// pseudo-header (RFC 3542 3.1), which needs the source address.
///
/// Neighbor Advertisement, RFC 4861 4.4, then the Target Link-Layer Address
/// option, RFC 4861 4.6.1 (Length in units of 8 octets; for Ethernet the
/// option is 8 octets, RFC 2464 8):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 136  |   Code = 0    |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |R|S|O|                     Reserved                            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                                                               |
/// +                   Target Address (target)                     +
/// |                                                               |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 2    |  Length = 1   |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
/// |                 Link-Layer Address (interface MAC)            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr, router: bool) -> [u8; NA_LEN] {
    let mut m = [0u8; NA_LEN];
    m[0] = ND_NEIGHBOR_ADVERT;
    // m[1] Code 0, m[2..4] Checksum (kernel).
    m[4] = ND_NA_FLAG_OVERRIDE | if router { ND_NA_FLAG_ROUTER } else { 0 };
    m[8..24].copy_from_slice(&target.octets());
    m[24] = ND_OPT_TARGET_LINKADDR;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// Sends gratuitous ARPs and unsolicited NAs on one interface.
///
/// Sending only: the `AF_PACKET` socket has protocol 0, so the kernel hands
/// it nothing, and the ICMPv6 socket carries a filter that drops every
/// packet. Both are non-blocking; a full device queue is an
/// [`io::ErrorKind::WouldBlock`] error (the announcement is repeated
/// anyway).
#[derive(Debug)]
pub struct Announcer {
    name: String,
    index: u32,
    mac: [u8; 6],
    router: bool,
    packet: Socket,
    icmp6: Option<Socket>,
}

impl Announcer {
    /// Opens the sockets for `iface`, from a thread in its network
    /// namespace. Without IPv6 in the kernel (`EAFNOSUPPORT`) there is no
    /// ICMPv6 socket, and announcing an IPv6 address is an error.
    pub fn open(iface: &Interface) -> io::Result<Announcer> {
        // packet(7): SOCK_RAW, we write the Ethernet header ourselves.
        // Protocol 0: no receive hook, nothing is ever queued.
        let packet = Socket::new(Domain::PACKET, Type::RAW, None)?;
        sys::bind_packet(&packet, &sys::link_addr(iface.index)?)?;
        packet.set_nonblocking(true)?;
        let icmp6 = match open_icmp6(iface) {
            Ok(s) => Some(s),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
            Err(e) => return Err(e),
        };
        Ok(Announcer {
            name: iface.name.clone(),
            index: iface.index,
            mac: iface.mac,
            router: false,
            packet,
            icmp6,
        })
    }

    /// Announces `addr` once: a gratuitous ARP for IPv4, an unsolicited NA
    /// from `addr` itself for IPv6 (see the module docs), so `addr` must be
    /// configured on the interface already: `EINVAL` from the kernel
    /// otherwise. [`io::ErrorKind::Unsupported`] for IPv6 when the kernel
    /// has no IPv6.
    pub fn announce(&self, addr: IpAddr) -> io::Result<()> {
        match addr {
            IpAddr::V4(a) => {
                let frame = arp_announcement(self.mac, a);
                let n = self.packet.send(&frame)?;
                self.check_len(n, frame.len())
            }
            IpAddr::V6(a) => {
                let Some(sock) = &self.icmp6 else {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("no IPv6 to announce {a} on {}", self.name),
                    ));
                };
                let msg = unsolicited_na(self.mac, a, self.router);
                let n = sys::send_v6(sock, &msg, a, self.index, ALL_NODES)?;
                self.check_len(n, msg.len())
            }
        }
    }

    /// Whether NAs carry the Router flag from now on (default: clear). Set
    /// it when the virtual addresses are the gateway of the link (the
    /// interface forwards IPv6), as RFC 5798 6.4.2 assumes.
    pub fn set_router(&mut self, router: bool) {
        self.router = router;
    }

    /// The interface this announcer sends on.
    pub fn ifname(&self) -> &str {
        &self.name
    }

    fn check_len(&self, n: usize, want: usize) -> io::Result<()> {
        if n == want {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short announcement on {}: {n} of {want} bytes",
                self.name
            )))
        }
    }
}

fn open_icmp6(iface: &Interface) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    // A raw ICMPv6 socket receives every ICMPv6 packet of the namespace;
    // this one only sends. Classic BPF "ret #0" (linux/filter.h BPF_RET |
    // BPF_K, accept 0 bytes) drops everything before it is queued.
    const BPF_RET_K: u16 = 0x06;
    sock.attach_filter(&[SockFilter::new(BPF_RET_K, 0, 0, 0)])?;
    sock.bind_device(Some(iface.name.as_bytes()))?;
    // RFC 4861 7.1.2: an NA with a hop limit other than 255 is dropped.
    sock.set_unicast_hops_v6(ND_HOP_LIMIT)?;
    sock.set_multicast_hops_v6(ND_HOP_LIMIT)?;
    // Our own stack must not see its own NA for an address it holds (it
    // would log "NA: ... advertised our address").
    sock.set_multicast_loop_v6(false)?;
    sock.set_multicast_if_v6(iface.index)?;
    sock.set_nonblocking(true)?;
    sys::drain(&sock);
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn arp_announcement_is_byte_exact() {
        let f = arp_announcement(MAC, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want: [u8; ARP_FRAME_LEN] = [
            // Ethernet: broadcast, our MAC, ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x08, 0x06,
            // ARP: Ethernet, IPv4, 6, 4, request.
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // Sender: our MAC, the VIP.
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 192, 0, 2, 100,
            // Target: zero MAC, the VIP.
            0, 0, 0, 0, 0, 0, 192, 0, 2, 100,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn unsolicited_na_is_byte_exact() {
        let m = unsolicited_na(MAC, "2001:db8::100".parse().unwrap(), false);
        #[rustfmt::skip]
        let want: [u8; NA_LEN] = [
            // Type 136, Code 0, Checksum left to the kernel.
            136, 0, 0, 0,
            // R=0 S=0 O=1, Reserved.
            0x20, 0, 0, 0,
            // Target Address.
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            // Target Link-Layer Address option, 1 x 8 octets.
            2, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
        ];
        assert_eq!(m, want);
        let r = unsolicited_na(MAC, "2001:db8::100".parse().unwrap(), true);
        assert_eq!(r[4], 0xa0, "R and O");
        assert_eq!((&r[..4], &r[5..]), (&want[..4], &want[5..]));
    }
}
