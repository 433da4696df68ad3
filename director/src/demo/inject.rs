//! Attacks on the sync link, to show (and test) that a director rejects
//! them: each opens its own TCP connection to a director's ctsync port
//! and sends frames built with the `ctsync` wire codec.
//!
//! A director refuses, before reading a byte, a connection from any
//! address but its `[ctsync] peer` (`refused_connections`), so these must
//! come from the peer's address: run them in the peer's namespace with
//! the peer's daemon stopped (a connection from the peer's address
//! replaces the live one, and a running peer would redial and replace the
//! injector's in turn).
//!
//! - [`forged`]: a Hello under a key that is not the pair's (an attacker
//!   without the key file): the MAC check fails (`directorctl sync`
//!   "rejected auth", JSON `rejected_auth`; the session counts it in
//!   `handshake_failures` too).
//! - [`replayed`]: a genuine session (so this one needs the key: it
//!   stands for frames captured inside a session), two sealed Heartbeats
//!   (sequence 1 and 2) that the director accepts, then the recorded
//!   first one again: its sequence number was already seen
//!   (`rejected_replay`).
//!
//! Both report how the director ended the connection. They are sent from
//! the namespace given (the sync link of the other director, so the
//! source address is the one the target expects its peer at: what
//! rejects them is the frame check, not an address filter).

use super::{DemoError, Result};
use ctsync::wire::{kind, FrameReader, Hello, Message, Nonce, Psk, Role, DEFAULT_MAX_PAYLOAD};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| DemoError::new(format!("cannot read /dev/urandom: {e}")))?;
    Ok(b)
}

fn hello(nonce: Nonce) -> Message {
    Message::Hello(Hello {
        role: Role::Backup,
        max_payload: DEFAULT_MAX_PAYLOAD,
        nonce,
        node_id: "demo-intruder".into(),
    })
}

fn connect(from_netns: &str, target: SocketAddr) -> Result<TcpStream> {
    crate::netlink::in_netns(from_netns, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })
    .map_err(|e| DemoError::new(e.to_string()))?
    .map_err(|e| {
        DemoError::new(format!(
            "cannot connect to the ctsync port {target} from {from_netns}: {e}"
        ))
    })
}

/// Reads until the director closes the connection (or `limit` passes):
/// "closed" / "reset" / "still open after ...".
fn wait_closed(s: &mut TcpStream, limit: Duration) -> String {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return format!("still open after {limit:?}");
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => return "closed by the director".into(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return "reset by the director".into()
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return format!("read error: {e}"),
        }
    }
}

/// Sends a Hello sealed under a random key to `target`. How the
/// connection ended.
pub fn forged(from_netns: &str, target: SocketAddr) -> Result<String> {
    let wrong = Psk::from_key_file(&random::<32>()?)
        .map_err(|e| DemoError::new(format!("forged key: {e}")))?;
    let frame = hello(Nonce(random()?))
        .encode_frame(0, &wrong.hello_key())
        .map_err(|e| DemoError::new(format!("cannot encode the forged Hello: {e}")))?;
    let mut s = connect(from_netns, target)?;
    s.write_all(&frame)
        .map_err(|e| DemoError::new(format!("send forged Hello to {target}: {e}")))?;
    Ok(wait_closed(&mut s, Duration::from_secs(5)))
}

/// Handshakes with `target` under `key_file`'s key, sends two sealed
/// Heartbeats (sequence 1, which completes the handshake, and 2), then the
/// recorded frame of sequence 1 again. How the connection ended.
pub fn replayed(
    from_netns: &str,
    target: SocketAddr,
    key_file: &std::path::Path,
) -> Result<String> {
    let key = std::fs::read(key_file)
        .map_err(|e| DemoError::new(format!("cannot read {}: {e}", key_file.display())))?;
    let psk = Psk::from_key_file(&key)
        .map_err(|e| DemoError::new(format!("{}: {e}", key_file.display())))?;
    let ours = Nonce(random()?);
    let mut s = connect(from_netns, target)?;
    let hello_frame = hello(ours)
        .encode_frame(0, &psk.hello_key())
        .map_err(|e| DemoError::new(format!("cannot encode Hello: {e}")))?;
    s.write_all(&hello_frame)
        .map_err(|e| DemoError::new(format!("send Hello to {target}: {e}")))?;
    // The director's Hello carries its nonce, which keys our direction.
    let theirs = read_hello(&mut s, &psk, target)?;
    let tx = psk.frame_key(&ours, &theirs);
    let recorded: Vec<Vec<u8>> = (1..=2)
        .map(|seq| Message::Heartbeat.encode_frame(seq, &tx))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| DemoError::new(format!("cannot encode Heartbeat: {e}")))?;
    for frame in &recorded {
        s.write_all(frame)
            .map_err(|e| DemoError::new(format!("send Heartbeat to {target}: {e}")))?;
    }
    // Let the genuine frames be taken in on their own before the replay
    // (they must be accepted for the replay to be one: same session, a
    // sequence number already seen).
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(&recorded[0])
        .map_err(|e| DemoError::new(format!("replay the Heartbeat to {target}: {e}")))?;
    Ok(wait_closed(&mut s, Duration::from_secs(5)))
}

fn read_hello(s: &mut TcpStream, psk: &Psk, target: SocketAddr) -> Result<Nonce> {
    let mut reader = FrameReader::new(DEFAULT_MAX_PAYLOAD);
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(f) = reader
            .next_frame()
            .map_err(|e| DemoError::new(format!("{target} sent a bad frame: {e}")))?
        {
            f.verify(&psk.hello_key())
                .map_err(|e| DemoError::new(format!("{target}'s Hello fails the MAC: {e}")))?;
            if f.kind() != kind::HELLO {
                return Err(DemoError::new(format!(
                    "{target} sent type {} before its Hello",
                    f.kind()
                )));
            }
            return match Message::decode(f.kind(), f.payload()) {
                Ok(Message::Hello(h)) => Ok(h.nonce),
                Ok(other) => Err(DemoError::new(format!(
                    "{target}: expected Hello, got {other:?}"
                ))),
                Err(e) => Err(DemoError::new(format!("{target}'s Hello: {e}"))),
            };
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DemoError::new(format!("{target} sent no Hello within 5 s")));
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(DemoError::new(format!(
                    "{target} closed the connection before its Hello"
                )))
            }
            Ok(n) => reader.push(&buf[..n]),
            Err(e) => return Err(DemoError::new(format!("waiting for {target}'s Hello: {e}"))),
        }
    }
}
