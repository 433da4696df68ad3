//! The TCP connect probe's socket work, done without the reactor when the
//! outcome is known at once, on sockets that are reused.
//!
//! At 10,000 checks a second the probe itself is most of the checker's
//! CPU, and most of that is the kernel's. What this module cuts:
//!
//! - **No reactor round trip when the answer is already there.** A
//!   non-blocking `connect()` to a nearby server (loopback, a server on the
//!   same host or a fast LAN) usually has its handshake done by the time
//!   the call returns `EINPROGRESS`: the SYN-ACK arrived while the socket
//!   was locked and is processed on the way out of the call. A second
//!   `connect()` then reports the outcome (Linux `__inet_stream_connect`:
//!   0 once established, the socket error such as `ECONNREFUSED` once
//!   closed, `EALREADY` while the handshake is still on its way). Only in
//!   the last case is the socket handed to tokio and waited for
//!   (`epoll_ctl` add, a wake-up, `getsockopt(SO_ERROR)`, `epoll_ctl` del):
//!   exactly what `TcpStream::connect` does for every connection.
//! - **Reused sockets.** A finished probe's socket is not closed: a
//!   `connect()` with `AF_UNSPEC` disconnects it (`tcp_disconnect`, which
//!   sends the RST a zero-linger close would send: no FIN exchange, no
//!   TIME_WAIT) and leaves it unbound and ready for the next probe. That
//!   saves `socket()`, `setsockopt(SO_LINGER)` and `close()` per probe, and
//!   the kernel's socket, file and inode allocation and teardown behind
//!   them. What the server sees is unchanged: SYN, handshake, RST.
//!
//! So a probe of a server that answers at once is three syscalls
//! (`connect`, `connect`, `connect(AF_UNSPEC)`) where tokio's connect and
//! a zero-linger close take seven (`socket`, `connect`, `epoll_ctl`,
//! `getsockopt`, `setsockopt`, `epoll_ctl`, `close`).
//!
//! Idle sockets are kept per thread (a probe takes and returns one within
//! one poll, so no lock), a few per address family. Every socket is created
//! non-blocking, close-on-exec and with `SO_LINGER` 0, so a socket that is
//! closed rather than reused (one handed to tokio, one in an unexpected
//! state) still ends with a RST.

use crate::probe::{Failure, Stage};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Idle sockets kept per thread and address family. Probes on one thread
/// run their synchronous part one after the other, so one is usually
/// enough; a few absorb a burst of failures that close theirs.
const IDLE_PER_FAMILY: usize = 4;

thread_local! {
    /// `[IPv4, IPv6]` idle sockets: unconnected, unbound, zero linger.
    static IDLE: RefCell<[Vec<OwnedFd>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// How a connect started.
#[derive(Debug)]
pub(crate) enum Started {
    /// The outcome was known at once; the socket is already reset and
    /// back in the idle set (or closed).
    Done(Result<(), Failure>),
    /// The handshake is still on its way: wait for the socket to become
    /// writable, then read `SO_ERROR` (dropping it closes it with a RST).
    Pending(OwnedFd),
}

fn family(target: &SocketAddr) -> usize {
    usize::from(target.is_ipv6())
}

/// A fresh socket: non-blocking, close-on-exec, zero linger.
fn fresh(target: &SocketAddr) -> Result<OwnedFd, Errno> {
    let af = if target.is_ipv6() {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let fd = rustix::net::socket_with(
        af,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    // A graceful close would leave one TIME_WAIT socket per probe (60 s
    // each, so 600,000 at 10,000 checks per second), and the server
    // learns nothing more from a FIN than from a RST (HAProxy's TCP
    // checks do the same).
    rustix::net::sockopt::set_socket_linger(&fd, Some(Duration::ZERO))?;
    Ok(fd)
}

/// An idle socket of the target's family if there is one.
fn idle(target: &SocketAddr) -> Option<OwnedFd> {
    IDLE.with(|i| i.borrow_mut()[family(target)].pop())
}

/// Disconnects a finished probe's socket (a RST if it was connected) and
/// keeps it for the next probe; closes it if the disconnect fails or
/// enough are idle.
fn recycle(target: &SocketAddr, fd: OwnedFd) {
    if rustix::net::connect_unspec(&fd).is_err() {
        return;
    }
    IDLE.with(|i| {
        let mut i = i.borrow_mut();
        let v = &mut i[family(target)];
        if v.len() < IDLE_PER_FAMILY {
            v.push(fd);
        }
    });
}

/// The probe failure for a connect error.
pub(crate) fn connect_failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::Refused
    } else {
        Failure::Io {
            stage: Stage::Connect,
            error: e.to_string(),
        }
    }
}

fn errno_failure(e: Errno) -> Failure {
    connect_failure(std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Starts a connect to `target` and finishes it at once when the kernel
/// already knows the outcome.
pub(crate) fn start(target: SocketAddr) -> Started {
    // A reused socket in a state it should not be in (already connected or
    // connecting) is closed and the connect retried on a fresh one.
    let mut reused = idle(&target);
    loop {
        let was_reused = reused.is_some();
        let fd = match reused.take() {
            Some(fd) => fd,
            None => match fresh(&target) {
                Ok(fd) => fd,
                Err(e) => return Started::Done(Err(errno_failure(e))),
            },
        };
        match rustix::net::connect(&fd, &target) {
            Err(Errno::INPROGRESS) => {}
            // Connected in the call (not what Linux does for TCP, but
            // allowed): done.
            Ok(()) => {
                recycle(&target, fd);
                return Started::Done(Ok(()));
            }
            Err(Errno::ISCONN | Errno::ALREADY) if was_reused => continue,
            Err(e) => {
                // Refused, unreachable, no ephemeral port, ...: the socket
                // is unconnected again and can be reused.
                recycle(&target, fd);
                return Started::Done(Err(errno_failure(e)));
            }
        }
        // The handshake's outcome, if it is already known: 0 once
        // established, the socket error once it failed (and the socket is
        // then disconnected), EALREADY while still in progress.
        return match rustix::net::connect(&fd, &target) {
            Ok(()) | Err(Errno::ISCONN) => {
                recycle(&target, fd);
                Started::Done(Ok(()))
            }
            Err(Errno::ALREADY | Errno::INPROGRESS) => Started::Pending(fd),
            Err(e) => {
                recycle(&target, fd);
                Started::Done(Err(errno_failure(e)))
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::net::TcpListener;

    #[test]
    fn a_local_listener_is_connected_at_once_and_sees_a_reset() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for _ in 0..3 {
            match start(addr) {
                Started::Done(Ok(())) => {}
                other => panic!("{other:?}"),
            }
            // The server got a whole connection, ended by a reset (no FIN:
            // a read fails rather than returning 0).
            let (mut conn, _) = l.accept().unwrap();
            let mut buf = [0u8; 1];
            let err = conn.read(&mut buf).expect_err("reset, not EOF");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        }
        // The socket was reused: one idle IPv4 socket on this thread.
        IDLE.with(|i| assert_eq!(i.borrow()[0].len(), 1));
    }

    #[test]
    fn refused_at_once_and_the_socket_is_reused() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for _ in 0..3 {
            match start(addr) {
                Started::Done(Err(Failure::Refused)) => {}
                other => panic!("{other:?}"),
            }
        }
        IDLE.with(|i| assert_eq!(i.borrow()[0].len(), 1));
        // And a reused socket connects again.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            start(l.local_addr().unwrap()),
            Started::Done(Ok(()))
        ));
    }

    #[test]
    fn ipv6_sockets_are_kept_apart() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let v6 = l.local_addr().unwrap();
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v4 = l4.local_addr().unwrap();
        for addr in [v6, v4, v6, v4] {
            assert!(matches!(start(addr), Started::Done(Ok(()))), "{addr}");
        }
        IDLE.with(|i| {
            assert_eq!(i.borrow()[0].len(), 1);
            assert_eq!(i.borrow()[1].len(), 1);
        });
    }
}
