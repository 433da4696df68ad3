//! [`VrrpSocket`]: the raw IP protocol 112 socket of one (interface,
//! family), tokio-async. See the module docs of [`crate::net`] for why each
//! option is set.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::iface::Interface;
use super::sys;
use super::{Incoming, RecvError};
use crate::codec::{self, IPPROTO_VRRP, MULTICAST_V4, MULTICAST_V6, TTL};

/// Receive buffer per datagram. The longest valid VRRP message is v3 over
/// IPv6 with 255 addresses, 8 + 255 * 16 = 4088 bytes; over IPv4 the
/// longest is 60 (header with options) + 8 + 255 * 4 = 1088. Anything
/// longer is reported as [`RecvError::TooLong`].
const RECV_BUF: usize = 4096 + 64;

/// Socket receive buffer asked for (`SO_RCVBUF`; the kernel caps it at
/// `net.core.rmem_max`): a burst of adverts from many VRIDs on one
/// interface, while the driver is busy, must not be dropped.
const SO_RCVBUF: usize = 1 << 20;

/// A raw IP protocol 112 socket on one interface for one address family.
///
/// Opened by the VRRP driver once per (interface, family); it receives the
/// adverts of every VRID on that link and demultiplexes them itself.
#[derive(Debug)]
pub struct VrrpSocket {
    io: AsyncFd<Socket>,
    src: IpAddr,
    ifindex: u32,
    ifname: String,
    multicast: bool,
}

impl VrrpSocket {
    /// Opens the socket of `src`'s family on `iface`, sending from `src`
    /// (the interface's primary IPv4 address or its IPv6 link-local
    /// address, RFC 5798 5.1.1.1 / 5.1.2.1). With `multicast`, joins
    /// 224.0.0.18 or ff02::12 on the interface; without, expects unicast
    /// adverts addressed to `src`.
    ///
    /// Must be called within a tokio runtime (the socket registers with its
    /// reactor) from a thread in the network namespace of `iface`; the
    /// socket stays in that namespace.
    pub fn open(iface: &Interface, src: IpAddr, multicast: bool) -> io::Result<VrrpSocket> {
        let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let sock = match src {
            IpAddr::V4(src) => open_v4(iface, src, multicast, proto)?,
            IpAddr::V6(src) => open_v6(iface, src, multicast, proto)?,
        };
        sock.set_recv_buffer_size(SO_RCVBUF)?;
        sock.set_nonblocking(true)?;
        sys::drain(&sock);
        Ok(VrrpSocket {
            io: sys::async_fd(sock)?,
            src,
            ifindex: iface.index,
            ifname: iface.name.clone(),
            multicast,
        })
    }

    /// The address adverts leave from.
    pub fn local_addr(&self) -> IpAddr {
        self.src
    }

    /// Index of the interface the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Name of the interface the socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether the socket joined the VRRP multicast group.
    pub fn is_multicast(&self) -> bool {
        self.multicast
    }

    /// The next VRRP datagram received on the interface.
    ///
    /// A datagram that cannot be taken apart (malformed IPv4 header, too
    /// long, IPv6 control message missing) is an
    /// [`io::ErrorKind::InvalidData`] error wrapping a [`RecvError`] (see
    /// [`RecvError::of`]): the sender's fault, to be counted and logged;
    /// the socket stays usable. Other errors are the kernel's.
    pub async fn recv(&self) -> io::Result<Incoming> {
        let mut buf = vec![0u8; RECV_BUF];
        match self.src {
            IpAddr::V4(_) => {
                let got = self
                    .io
                    .async_io(Interest::READABLE, |s| sys::recv_v4(s, &mut buf))
                    .await?;
                incoming_v4(&buf, got).map_err(RecvError::into_io)
            }
            IpAddr::V6(_) => {
                let got = self
                    .io
                    .async_io(Interest::READABLE, |s| sys::recv_v6(s, &mut buf))
                    .await?;
                buf.truncate(got.len);
                incoming_v6(buf, got).map_err(RecvError::into_io)
            }
        }
    }

    /// Sends one VRRP message (from [`codec::encode`], with `dst` in its
    /// checksum) to `dst`: the multicast group or a unicast peer. The
    /// kernel adds the IP header: source [`local_addr`](Self::local_addr),
    /// TTL / Hop Limit 255, protocol 112.
    pub async fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        let n = self
            .io
            .async_io(Interest::WRITABLE, |s| self.send_on(s, payload, dst))
            .await?;
        self.check_len(n, payload.len())
    }

    /// [`send`](Self::send) without waiting for room in the socket buffer:
    /// a full buffer is `WouldBlock`. The driver uses this, so a stuck
    /// interface costs an advert (counted), never a late timer.
    pub fn try_send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        let n = self.send_on(self.io.get_ref(), payload, dst)?;
        self.check_len(n, payload.len())
    }

    fn send_on(&self, s: &Socket, payload: &[u8], dst: IpAddr) -> io::Result<usize> {
        match (self.src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => sys::send_v4(s, payload, src, self.ifindex, dst),
            (IpAddr::V6(_), IpAddr::V6(dst)) => {
                // Bound to the source address already (see open_v6).
                let to = SocketAddr::V6(SocketAddrV6::new(dst, 0, 0, self.ifindex));
                s.send_to(payload, &to.into())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} destination {dst} on the {} VRRP socket of {}",
                    sys::family_name(dst),
                    sys::family_name(self.src),
                    self.ifname
                ),
            )),
        }
    }

    fn check_len(&self, n: usize, want: usize) -> io::Result<()> {
        if n != want {
            return Err(io::Error::other(format!(
                "short VRRP send on {}: {n} of {want} bytes",
                self.ifname
            )));
        }
        Ok(())
    }
}

fn open_v4(
    iface: &Interface,
    src: Ipv4Addr,
    multicast: bool,
    proto: Option<Protocol>,
) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, proto)?;
    sock.bind_device(Some(iface.name.as_bytes()))?;
    // TTL 255 for unicast and multicast alike (RFC 5798 5.1.1.3).
    sock.set_ttl_v4(u32::from(TTL))?;
    sock.set_multicast_ttl_v4(u32::from(TTL))?;
    sock.set_multicast_loop_v4(false)?;
    sock.set_multicast_all_v4(false)?;
    // Fails with EADDRNOTAVAIL when src is not a local address, and EINVAL
    // when it is on another interface than the one bound to.
    sock.set_multicast_if_v4(&src)?;
    // The source of every send is pinned with IP_PKTINFO (sys::send_v4).
    // Binding to src would pin it too, but a raw IPv4 socket bound to an
    // address receives only datagrams addressed to it (raw_v4_match() in
    // net/ipv4/raw.c): bound, it would never see 224.0.0.18. So bind in
    // unicast mode only, where that filter is what we want.
    if multicast {
        sock.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(iface.index))?;
    } else {
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    }
    Ok(sock)
}

fn open_v6(
    iface: &Interface,
    src: Ipv6Addr,
    multicast: bool,
    proto: Option<Protocol>,
) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV6, Type::RAW, proto)?;
    sock.bind_device(Some(iface.name.as_bytes()))?;
    // Hop Limit 255 for unicast and multicast alike (RFC 5798 5.1.2.3).
    sock.set_unicast_hops_v6(u32::from(TTL))?;
    sock.set_multicast_hops_v6(u32::from(TTL))?;
    sock.set_multicast_loop_v6(false)?;
    sock.set_multicast_all_v6(false)?;
    sock.set_multicast_if_v6(iface.index)?;
    sys::set_recv_pktinfo_v6(&sock)?;
    sock.set_recv_hoplimit_v6(true)?;
    if multicast {
        sock.join_multicast_v6(&MULTICAST_V6, iface.index)?;
    }
    // A bound IPv6 raw socket still receives the groups it joined
    // (raw_v6_match() in net/ipv6/raw.c checks inet6_mc_check()), unlike
    // IPv4. Link-local needs its scope.
    //
    // IPV6_FREEBIND: the link-local address is tentative for
    // DupAddrDetectTransmits x RetransTimer after the link comes up (RFC
    // 4862 5.4; 1 s by default), and binding a tentative address fails
    // with EADDRNOTAVAIL (rawv6_bind() -> ipv6_chk_addr() in
    // net/ipv6/raw.c) unless the socket may bind non-local addresses. A
    // daemon started at boot right after its link came up would then not
    // start at all. The kernel sends from a bound tentative address (a
    // socket bound before a link flap keeps sending while DAD re-runs),
    // so adverts flow during DAD either way; a link-local derived from the
    // MAC only fails DAD on a MAC collision. The address must still exist:
    // `interface` found it.
    sock.set_freebind_v6(true)?;
    let scope = if src.is_unicast_link_local() {
        iface.index
    } else {
        0
    };
    sock.bind(&SocketAddr::V6(SocketAddrV6::new(src, 0, 0, scope)).into())?;
    Ok(sock)
}

/// Take apart what an `AF_INET` raw socket delivered: the IPv4 header
/// (RFC 791 3.1) and the VRRP message.
fn incoming_v4(buf: &[u8], got: sys::Received) -> Result<Incoming, RecvError> {
    if got.truncated {
        return Err(RecvError::TooLong { limit: buf.len() });
    }
    let (header, payload) = codec::parse_ipv4(&buf[..got.len.min(buf.len())])?;
    Ok(Incoming {
        src: IpAddr::V4(header.src),
        dst: IpAddr::V4(header.dst),
        ttl_or_hop_limit: header.ttl,
        payload: payload.to_vec(),
    })
}

/// Assemble what an `AF_INET6` raw socket delivered: the payload, the
/// source from `msg_name`, destination and hop limit from the control
/// messages.
fn incoming_v6(payload: Vec<u8>, got: sys::Received) -> Result<Incoming, RecvError> {
    if got.truncated {
        return Err(RecvError::TooLong { limit: RECV_BUF });
    }
    let src = got.src.ok_or(RecvError::MissingSource)?;
    let dst = got.dst.ok_or(RecvError::MissingPktInfo)?;
    let hop = got.hop_limit.ok_or(RecvError::MissingHopLimit)?;
    let hop = u8::try_from(hop).map_err(|_| RecvError::BadHopLimit { hop_limit: hop })?;
    Ok(Incoming {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        ttl_or_hop_limit: hop,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FramingError;

    fn got(len: usize) -> sys::Received {
        sys::Received {
            len,
            truncated: false,
            src: None,
            dst: None,
            hop_limit: None,
        }
    }

    #[test]
    fn ipv4_header_is_stripped_and_its_facts_kept() {
        // 20-byte header, TTL 255, protocol 112, 10.0.0.1 -> 224.0.0.18,
        // then 4 bytes of payload and 2 bytes of link padding.
        let mut b = vec![
            0x45, 0, 0, 24, 0, 0, 0, 0, 255, 112, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18,
        ];
        b.extend_from_slice(&[1, 2, 3, 4, 0, 0]);
        let i = incoming_v4(&b, got(b.len())).unwrap();
        assert_eq!(i.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(i.dst, IpAddr::V4(MULTICAST_V4));
        assert_eq!(i.ttl_or_hop_limit, 255);
        assert_eq!(i.payload, vec![1, 2, 3, 4]);
    }

    #[test]
    fn malformed_ipv4_is_an_error_value() {
        for b in [
            &[][..],
            &[0x45; 19][..],
            &[
                0x65, 0, 0, 20, 0, 0, 0, 0, 255, 112, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
            ][..],
            &[
                0x45, 0, 0, 99, 0, 0, 0, 0, 255, 112, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
            ][..],
        ] {
            let e = incoming_v4(b, got(b.len())).unwrap_err();
            assert!(matches!(e, RecvError::Framing { .. }), "{e:?}");
        }
        let e = incoming_v4(&[0x46; 20], got(20)).unwrap_err();
        assert!(matches!(
            e,
            RecvError::Framing {
                framing: FramingError::BadTotalLength { .. }
            }
        ));
        let mut t = got(10);
        t.truncated = true;
        assert!(matches!(
            incoming_v4(&[0; 10], t).unwrap_err(),
            RecvError::TooLong { .. }
        ));
        let io = RecvError::TooLong { limit: 1 }.into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert_eq!(RecvError::of(&io), Some(&RecvError::TooLong { limit: 1 }));
    }

    #[test]
    fn ipv6_needs_both_control_messages() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let full = sys::Received {
            len: 3,
            truncated: false,
            src: Some(ll),
            dst: Some(MULTICAST_V6),
            hop_limit: Some(255),
        };
        let i = incoming_v6(vec![1, 2, 3], full).unwrap();
        assert_eq!(
            (i.src, i.dst, i.ttl_or_hop_limit),
            (IpAddr::V6(ll), IpAddr::V6(MULTICAST_V6), 255)
        );
        let mut r = full;
        r.dst = None;
        assert_eq!(
            incoming_v6(vec![], r).unwrap_err(),
            RecvError::MissingPktInfo
        );
        let mut r = full;
        r.hop_limit = None;
        assert_eq!(
            incoming_v6(vec![], r).unwrap_err(),
            RecvError::MissingHopLimit
        );
        let mut r = full;
        r.hop_limit = Some(256);
        assert_eq!(
            incoming_v6(vec![], r).unwrap_err(),
            RecvError::BadHopLimit { hop_limit: 256 }
        );
    }
}
