//! The demo's client: many long-lived TCP connections to the echo service
//! through the VIP, opened inside the client's namespace (a socket
//! belongs to the namespace it was created in, so only the opening runs
//! on a thread that entered it; the sockets are then used from here).
//!
//! A connection counts as alive only if a fresh line sent on it comes back
//! from the same real server that greeted it: a reset, an EOF, a timeout
//! or an answer from another server all count as lost.

use super::{DemoError, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

struct Conn {
    /// Reads are buffered; writes go to `reader.get_mut()` (one socket,
    /// one file descriptor per connection).
    reader: BufReader<TcpStream>,
    /// The real server's name from the greeting.
    server: String,
}

/// Connections opened together; lost ones are dropped from the pool.
pub struct Pool {
    target: SocketAddr,
    conns: Vec<Option<Conn>>,
}

/// The outcome of one round of [`Pool::exchange`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Connections that were alive before the round.
    pub tried: usize,
    /// Of those, answered correctly.
    pub alive: usize,
    /// Why the others were lost: reason -> count.
    pub lost: BTreeMap<String, usize>,
    pub took: Duration,
}

impl Round {
    pub fn lost_count(&self) -> usize {
        self.tried - self.alive
    }

    /// `"1998 of 2000 alive (lost: 2 reset)"`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} of {} alive", self.alive, self.tried);
        if !self.lost.is_empty() {
            let why: Vec<String> = self.lost.iter().map(|(k, v)| format!("{v} {k}")).collect();
            s += &format!(" (lost: {})", why.join(", "));
        }
        s
    }
}

fn classify(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset => "reset".into(),
        WouldBlock | TimedOut => "no answer in time".into(),
        BrokenPipe => "broken pipe".into(),
        ConnectionRefused => "refused".into(),
        UnexpectedEof => "closed by peer".into(),
        _ => e.to_string(),
    }
}

fn open_one(target: SocketAddr, timeout: Duration) -> std::result::Result<Conn, String> {
    let s = TcpStream::connect_timeout(&target, timeout).map_err(|e| classify(&e))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err("closed by peer".into()),
        Ok(_) => {}
        Err(e) => return Err(classify(&e)),
    }
    let server = line
        .split_whitespace()
        .next()
        .filter(|_| line.ends_with('\n'))
        .ok_or_else(|| format!("malformed greeting {line:?}"))?
        .to_owned();
    Ok(Conn { reader, server })
}

impl Pool {
    /// Opens `n` connections to `target` from namespace `netns`, each
    /// waiting at most `timeout` for its greeting. Fails if any one fails
    /// (the demo measures a failover, not a half-working start).
    pub fn open(netns: &str, target: SocketAddr, n: usize, timeout: Duration) -> Result<Pool> {
        raise_fd_limit(n);
        let opened = crate::netlink::in_netns(netns, || {
            let mut conns = Vec::with_capacity(n);
            for i in 0..n {
                match open_one(target, timeout) {
                    Ok(c) => conns.push(Some(c)),
                    Err(e) => return Err(format!("connection {} of {n} to {target}: {e}", i + 1)),
                }
            }
            Ok(conns)
        })
        .map_err(|e| DemoError::new(e.to_string()))?
        .map_err(DemoError::new)?;
        Ok(Pool {
            target,
            conns: opened,
        })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Connections still alive.
    pub fn alive(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Alive connections per real server.
    pub fn per_server(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in self.conns.iter().flatten() {
            *m.entry(c.server.clone()).or_default() += 1;
        }
        m
    }

    /// Sends one line (`tag` and the connection's index) on every alive
    /// connection, then reads every answer, all within `limit` (sending all
    /// first makes a round cost one timeout, not one per lost connection).
    /// Lost connections are closed and leave the pool.
    ///
    /// The sending order is shuffled: clients do not speak in the order
    /// they connected, and a director that picks real servers round-robin
    /// for connections it never saw would otherwise pick the same ones
    /// again by coincidence, hiding a lost state.
    pub fn exchange(&mut self, tag: &str, limit: Duration) -> Round {
        let start = Instant::now();
        let deadline = start + limit;
        let mut round = Round::default();
        let lose = |slot: &mut Option<Conn>, why: String, round: &mut Round| {
            *round.lost.entry(why).or_default() += 1;
            *slot = None;
        };
        let mut sent = vec![false; self.conns.len()];
        for i in shuffled(self.conns.len()) {
            let slot = &mut self.conns[i];
            let Some(c) = slot else { continue };
            round.tried += 1;
            match c
                .reader
                .get_mut()
                .write_all(format!("{tag} {i}\n").as_bytes())
            {
                Ok(()) => sent[i] = true,
                Err(e) => lose(slot, classify(&e), &mut round),
            }
        }
        let mut line = String::new();
        for (i, slot) in self.conns.iter_mut().enumerate() {
            if !sent[i] {
                continue;
            }
            let Some(c) = slot else { continue };
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if let Err(e) = c.reader.get_ref().set_read_timeout(Some(left)) {
                lose(slot, e.to_string(), &mut round);
                continue;
            }
            line.clear();
            let want = format!("{} {tag} {i}\n", c.server);
            match c.reader.read_line(&mut line) {
                Ok(0) => lose(slot, "closed by peer".into(), &mut round),
                Ok(_) if line == want => round.alive += 1,
                Ok(_) => {
                    let who = line.split_whitespace().next().unwrap_or("?").to_owned();
                    lose(slot, format!("answered by {who} instead"), &mut round)
                }
                Err(e) => lose(slot, classify(&e), &mut round),
            }
        }
        round.took = start.elapsed();
        round
    }

    /// Closes every connection (FIN).
    pub fn close(self) {
        drop(self);
    }
}

/// Thousands of connections need more descriptors than the usual soft
/// limit (1024): raise it towards the hard limit. If that fails, opening
/// fails later with "Too many open files", which says what to change.
fn raise_fd_limit(n: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let want = (n as u64).saturating_mul(2).saturating_add(256);
    if lim.current.is_some_and(|cur| cur < want) {
        lim.current = match lim.maximum {
            Some(max) => Some(want.min(max)),
            None => Some(want),
        };
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// 0..n in a random order (xorshift64 seeded from the clock and the pid:
/// no need for a cryptographic source here, only for a fresh order).
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// One HTTP GET of `/` on `target` from namespace `netns`: the body
/// (`"<server> <source seen>"`).
pub fn http_get(netns: &str, target: SocketAddr, timeout: Duration) -> Result<String> {
    crate::netlink::in_netns(netns, || {
        let mut s = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("connect to {target}: {}", classify(&e)))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let req = format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .map_err(|e| format!("send to {target}: {}", classify(&e)))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .map_err(|e| format!("read from {target}: {}", classify(&e)))?;
        let resp = String::from_utf8_lossy(&resp);
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("malformed HTTP answer from {target}: {resp:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{target} answered {:?}",
                head.lines().next().unwrap_or("")
            ));
        }
        Ok(body.trim().to_owned())
    })
    .map_err(|e| DemoError::new(e.to_string()))?
    .map_err(DemoError::new)
}
