//! The system calls below `socket2`: everything that needs a `libc` struct
//! or a control message, and the registration with tokio's reactor. This is
//! the one module of the workspace allowed `unsafe` (DESIGN.md principle 8;
//! the workspace denies it, the other crate roots forbid it).
//!
//! It holds exactly one `unsafe` block, [`async_fd`]: tokio (1.54, as locked)
//! deprecates the safe `AsyncFd::new` as unsound and offers only the
//! `unsafe fn AsyncFd::register`, whose contract (the descriptor stays open
//! and the same while registered) the caller must vouch for. Everything
//! else goes through the safe APIs of `nix` (`getifaddrs`,
//! `recvmsg`/`sendmsg` with control messages, `bind` with a `sockaddr_ll`
//! taken from `getifaddrs`) and `socket2`.
//!
//! Every function here is a thin, non-blocking wrapper: `EAGAIN` comes back
//! as [`io::ErrorKind::WouldBlock`] for tokio's `AsyncFd::async_io` to
//! re-arm readiness.

#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    self as nsock, sockopt, ControlMessage, ControlMessageOwned, LinkAddr, MsgFlags, SockaddrIn,
    SockaddrIn6,
};
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Hands `sock` (non-blocking) to the current tokio runtime's reactor for
/// read and write readiness. An error, not tokio's panic, outside a
/// runtime.
pub(crate) fn async_fd(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "VRRP socket opened outside a tokio runtime",
        ));
    }
    // SAFETY: `AsyncFd::register_with_interest` requires that
    // `sock.as_raw_fd()` be an open descriptor that stays open, refers to
    // the same file description and is returned unchanged by every
    // `as_raw_fd()` call for as long as the `AsyncFd` owns `sock`.
    // `socket2::Socket` owns its descriptor (an `OwnedFd` from a successful
    // `socket(2)`), closes it only when dropped, and `as_raw_fd()` returns
    // that one descriptor. The `AsyncFd` takes `sock` by value, so nothing
    // else can close or replace it; our callers only borrow it (`&Socket`
    // in `async_io`) and never call `into_inner`.
    let fd =
        unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE) }?;
    Ok(fd)
}

/// One row of `getifaddrs(3)`: glibc builds the list from an rtnetlink
/// `RTM_GETLINK` + `RTM_GETADDR` dump on a socket of the calling thread's
/// network namespace (unlike `/sys/class/net`, which shows the namespace
/// sysfs was mounted in), in dump order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The link itself (`AF_PACKET` row, one per device).
    Link {
        name: String,
        index: u32,
        /// `None` when the hardware address is not 6 bytes long.
        mac: Option<[u8; 6]>,
        /// `IFF_UP`: administratively up.
        up: bool,
        /// `IFF_RUNNING`: operationally up (RFC 2863 `up`, or `unknown`
        /// for drivers without operstate; `dev_get_flags()` in
        /// net/core/dev.c).
        running: bool,
    },
    /// An IPv4 address. `name` is the address *label* (`eth0`, or an alias
    /// like `eth0:1`), which is what glibc puts in `ifa_name`.
    V4 { name: String, addr: Ipv4Addr },
    /// An IPv6 address; `name` is the device name.
    V6 { name: String, addr: Ipv6Addr },
}

/// All links and addresses of the calling thread's network namespace.
pub(crate) fn entries() -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for ifa in getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            let mac = (link.halen() == 6).then(|| link.addr()).flatten();
            out.push(Entry::Link {
                name: ifa.interface_name,
                index: u32::try_from(link.ifindex()).unwrap_or(0),
                mac,
                up: ifa.flags.contains(InterfaceFlags::IFF_UP),
                running: ifa.flags.contains(InterfaceFlags::IFF_RUNNING),
            });
        } else if let Some(sin) = addr.as_sockaddr_in() {
            out.push(Entry::V4 {
                name: ifa.interface_name,
                addr: sin.ip(),
            });
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            out.push(Entry::V6 {
                name: ifa.interface_name,
                addr: sin6.ip(),
            });
        }
    }
    Ok(out)
}

/// The `sockaddr_ll` of the link with this index, as `getifaddrs` reports
/// it: `sll_family = AF_PACKET`, `sll_ifindex`, `sll_halen` and `sll_addr`
/// set, `sll_protocol = 0`. Binding an `AF_PACKET` socket to it attaches the
/// socket to the device for sending (packet(7): "only sll_protocol and
/// sll_ifindex are used" by bind) without registering a receive hook,
/// since the protocol is 0 (`packet_do_bind()` in net/packet/af_packet.c).
pub(crate) fn link_addr(index: u32) -> io::Result<LinkAddr> {
    for ifa in getifaddrs()? {
        if let Some(link) = ifa.address.as_ref().and_then(|a| a.as_link_addr()) {
            if u32::try_from(link.ifindex()).ok() == Some(index) {
                return Ok(*link);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no link with index {index}"),
    ))
}

/// `bind(2)` an `AF_PACKET` socket to a link (see [`link_addr`]).
pub(crate) fn bind_packet(sock: &Socket, link: &LinkAddr) -> io::Result<()> {
    nsock::bind(sock.as_raw_fd(), link)?;
    Ok(())
}

/// `IPV6_RECVPKTINFO` (RFC 3542 6.1): each received datagram carries an
/// `IPV6_PKTINFO` control message with its destination address and
/// arrival interface. socket2 has no setter for it.
pub(crate) fn set_recv_pktinfo_v6(sock: &Socket) -> io::Result<()> {
    nsock::setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true)?;
    Ok(())
}

/// What `recvmsg(2)` said about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written to the buffer.
    pub len: usize,
    /// `MSG_TRUNC`: the datagram was longer than the buffer.
    pub truncated: bool,
    /// Source address (`msg_name`); IPv6 only.
    pub src: Option<Ipv6Addr>,
    /// Destination address from `IPV6_PKTINFO`; IPv6 only.
    pub dst: Option<Ipv6Addr>,
    /// Hop limit from `IPV6_HOPLIMIT` (an `int`, RFC 3542 6.3); IPv6 only.
    pub hop_limit: Option<i32>,
}

/// One datagram from an `AF_INET` raw socket (the IPv4 header included).
pub(crate) fn recv_v4(sock: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nsock::recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, None, MsgFlags::empty())?;
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        src: None,
        dst: None,
        hop_limit: None,
    })
}

/// One datagram from an `AF_INET6` raw socket with `IPV6_RECVPKTINFO` and
/// `IPV6_RECVHOPLIMIT` on: the payload only (an IPv6 raw socket never hands
/// over the IPv6 header, RFC 3542 3), the header facts from `msg_name` and
/// the control messages.
pub(crate) fn recv_v6(sock: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nsock::recvmsg::<SockaddrIn6>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let mut out = Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        src: msg.address.map(|a| a.ip()),
        dst: None,
        hop_limit: None,
    };
    // MSG_CTRUNC (cmsg buffer too small) comes back as an error here; the
    // buffer is sized for exactly the two messages we asked for.
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                out.dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            ControlMessageOwned::Ipv6HopLimit(h) => out.hop_limit = Some(h),
            _ => {}
        }
    }
    Ok(out)
}

/// `sendmsg(2)` on an `AF_INET` raw socket with an `IP_PKTINFO` control
/// message (ip(7)): `ipi_spec_dst` is the source address and `ipi_ifindex`
/// the outgoing interface of this one datagram (`ip_cmsg_send()` then
/// `raw_sendmsg()` in net/ipv4/raw.c use them for the route lookup).
pub(crate) fn send_v4(
    sock: &Socket,
    payload: &[u8],
    src: Ipv4Addr,
    ifindex: u32,
    dst: Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).map_err(|_| bad_index(ifindex))?,
        // in_addr holds the address in network byte order: the octets as
        // they are, read as a native integer.
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from_ne_bytes(src.octets()),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dst = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let n = nsock::sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&dst),
    )?;
    Ok(n)
}

/// `sendmsg(2)` on an `AF_INET6` socket with an `IPV6_PKTINFO` control
/// message (RFC 3542 6.1): `ipi6_addr` is the source address and
/// `ipi6_ifindex` the outgoing interface of this one datagram. `dst` gets
/// `ifindex` as its scope (ignored by the kernel for global addresses,
/// required for link-local and ff02::/16 ones).
pub(crate) fn send_v6(
    sock: &Socket,
    payload: &[u8],
    src: Ipv6Addr,
    ifindex: u32,
    dst: Ipv6Addr,
) -> io::Result<usize> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let dst = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, ifindex));
    let n = nsock::sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::Ipv6PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&dst),
    )?;
    Ok(n)
}

/// Read and drop whatever a freshly set up socket queued before its
/// options (`SO_BINDTODEVICE`, filters, bind) took effect: a raw socket
/// receives from the moment `socket(2)` returns.
pub(crate) fn drain(sock: &Socket) {
    let mut scratch = [0u8; 64];
    // A datagram longer than the scratch buffer is truncated, and still
    // removed from the queue. Any error (EAGAIN: empty) ends the loop.
    while nsock::recv(sock.as_raw_fd(), &mut scratch, MsgFlags::MSG_DONTWAIT).is_ok() {}
}

fn bad_index(ifindex: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("interface index {ifindex} out of range"),
    )
}

/// The family of an address, for error messages.
pub(crate) fn family_name(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}
