//! lb-client — the client of the netns tests, talking to `echo-server`s.
//!
//! ```text
//! lb-client spread  --target ADDR:PORT --count N [--udp | --http] [--bind IP[:PORT]] [--timeout-ms T]
//! lb-client session --target ADDR:PORT [--bind IP[:PORT]] [--timeout-ms T]
//! ```
//!
//! `spread` opens N fresh TCP connections (or sends N datagrams, each from
//! a fresh socket, or makes N HTTP GETs), reads each greeting
//! `"<name> <peer_ip>:<peer_port>"`, and prints one JSON object:
//!
//! ```json
//! {"mode":"tcp","target":"192.0.2.100:80","count":N,"ok":K,"failed":F,
//!  "backends":{"rs1":3,...},            // answers per backend name
//!  "peers":{"rs1":["198.51.100.2:40000",...]}, // the source each backend saw
//!  "peer_ips":{"rs1":["198.51.100.2"]},  // distinct source IPs per backend
//!  "errors":["..."]}                     // one entry per failure (first 50)
//! ```
//!
//! Exit status 0 even with failures (the JSON says how many); 2 on usage.
//!
//! `session` opens one TCP connection, prints the greeting, then for each
//! line on stdin sends it and prints the reply line. If the connection
//! breaks (error, EOF, or no reply within the timeout) it prints
//! `error: ...` and exits 1; at EOF on stdin it exits 0.
//!
//! `trickle` opens one TCP connection, prints the greeting, then writes a
//! line every `--every-ms` (default 100) without waiting for replies (a
//! thread reads them), like a client streaming to a server that may die.
//! The first failure of either direction (reset, EOF, send error) prints
//! `error <unix_ms> <what>` and exits 1: the moment the client learned.
//! It never gives up by itself; the caller kills it.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: lb-client spread --target ADDR:PORT --count N [--udp | --http] [--bind IP[:PORT]] [--timeout-ms T]\n       lb-client session --target ADDR:PORT [--bind IP[:PORT]] [--timeout-ms T]\n       lb-client trickle --target ADDR:PORT [--every-ms N] [--bind IP[:PORT]] [--timeout-ms T]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tcp,
    Udp,
    Http,
}

struct Opts {
    target: SocketAddr,
    count: usize,
    mode: Mode,
    bind: Option<SocketAddr>,
    timeout: Duration,
    every: Duration,
}

fn parse_bind(v: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e| format!("--bind {v}: {e}"))?;
    Ok(SocketAddr::new(ip, 0))
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut target = None;
    let mut count = 1;
    let mut mode = Mode::Tcp;
    let mut bind = None;
    let mut timeout = Duration::from_millis(2000);
    let mut every = Duration::from_millis(100);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--target" => {
                let v = val()?;
                target = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--target {v}: {e}"))?,
                );
            }
            "--count" => {
                let v = val()?;
                count = v.parse().map_err(|e| format!("--count {v}: {e}"))?;
            }
            "--bind" => bind = Some(parse_bind(val()?)?),
            "--timeout-ms" => {
                let v = val()?;
                timeout =
                    Duration::from_millis(v.parse().map_err(|e| format!("--timeout-ms {v}: {e}"))?);
            }
            "--every-ms" => {
                let v = val()?;
                every =
                    Duration::from_millis(v.parse().map_err(|e| format!("--every-ms {v}: {e}"))?);
            }
            "--udp" => mode = Mode::Udp,
            "--http" => mode = Mode::Http,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let target = target.ok_or("--target is required")?;
    if let Some(b) = bind {
        if b.is_ipv4() != target.is_ipv4() {
            return Err("--bind and --target must be the same address family".into());
        }
    }
    Ok(Opts {
        target,
        count,
        mode,
        bind,
        timeout,
        every,
    })
}

fn connect(o: &Opts) -> std::io::Result<TcpStream> {
    let stream = match o.bind {
        None => TcpStream::connect_timeout(&o.target, o.timeout)?,
        Some(b) => {
            let s = Socket::new(Domain::for_address(b), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.bind(&SockAddr::from(b))?;
            s.connect_timeout(&SockAddr::from(o.target), o.timeout)?;
            s.into()
        }
    };
    stream.set_read_timeout(Some(o.timeout))?;
    stream.set_write_timeout(Some(o.timeout))?;
    Ok(stream)
}

/// Splits `"<name> <peer>"` into its two words.
fn greeting(text: &str) -> Result<(String, String), String> {
    let t = text.trim_end();
    match t.split_once(' ') {
        Some((n, p)) if !n.is_empty() && !p.contains(' ') => Ok((n.to_owned(), p.to_owned())),
        _ => Err(format!("malformed greeting {t:?}")),
    }
}

fn one_tcp(o: &Opts) -> Result<(String, String), String> {
    let s = connect(o).map_err(|e| format!("connect: {e}"))?;
    let mut line = String::new();
    let n = BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("read greeting: {e}"))?;
    if n == 0 {
        return Err("connection closed before the greeting".into());
    }
    greeting(&line)
}

fn one_http(o: &Opts) -> Result<(String, String), String> {
    let mut s = connect(o).map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-client\r\nConnection: close\r\n\r\n",
        o.target
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("read response: {e}"))?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP response {resp:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status:?}"));
    }
    greeting(body)
}

fn one_udp(o: &Opts) -> Result<(String, String), String> {
    let local = o.bind.unwrap_or_else(|| match o.target {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    });
    let s = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    s.connect(o.target).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(o.timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    s.send(b"spread").map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
    greeting(&String::from_utf8_lossy(&buf[..n]))
}

fn spread(o: &Opts) -> serde_json::Value {
    let mut backends: BTreeMap<String, u64> = BTreeMap::new();
    let mut peers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut peer_ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut failed = 0u64;
    for _ in 0..o.count {
        let r = match o.mode {
            Mode::Tcp => one_tcp(o),
            Mode::Udp => one_udp(o),
            Mode::Http => one_http(o),
        };
        match r {
            Ok((name, peer)) => {
                *backends.entry(name.clone()).or_default() += 1;
                let ip = peer
                    .parse::<SocketAddr>()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|_| peer.clone());
                let ips = peer_ips.entry(name.clone()).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
                peers.entry(name).or_default().push(peer);
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 50 {
                    errors.push(e);
                }
            }
        }
    }
    let mode = match o.mode {
        Mode::Tcp => "tcp",
        Mode::Udp => "udp",
        Mode::Http => "http",
    };
    serde_json::json!({
        "mode": mode,
        "target": o.target.to_string(),
        "count": o.count,
        "ok": o.count as u64 - failed,
        "failed": failed,
        "backends": backends,
        "peers": peers,
        "peer_ips": peer_ips,
        "errors": errors,
    })
}

fn session(o: &Opts) -> Result<(), String> {
    let s = connect(o).map_err(|e| format!("connect to {}: {e}", o.target))?;
    let mut writer = s.try_clone().map_err(|e| format!("socket: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut out = std::io::stdout();
    let mut line = String::new();
    let timeout_ms = o.timeout.as_millis();
    let read_reply = |reader: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        match reader.read_line(line) {
            Ok(0) => Err("connection closed by peer".to_owned()),
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "connection broken: no reply within {timeout_ms} ms"
                ))
            }
            Err(e) => Err(format!("connection broken: {e}")),
        }
    };
    read_reply(&mut reader, &mut line).map_err(|e| format!("greeting: {e}"))?;
    write!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    for input in std::io::stdin().lock().lines() {
        let input = input.map_err(|e| format!("stdin: {e}"))?;
        writer
            .write_all(format!("{input}\n").as_bytes())
            .map_err(|e| format!("connection broken: send: {e}"))?;
        read_reply(&mut reader, &mut line)?;
        write!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// See the module docs: never returns Ok while the connection works.
fn trickle(o: &Opts) -> Result<(), String> {
    let s = connect(o).map_err(|e| format!("connect to {}: {e}", o.target))?;
    let mut writer = s.try_clone().map_err(|e| format!("socket: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err("greeting: connection closed by peer".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("greeting: {e}")),
    }
    let mut out = std::io::stdout();
    write!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    // Replies may stop coming at any time: the reader blocks for as long
    // as the kernel keeps the connection.
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| format!("socket: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                let _ = tx.send(format!(
                    "error {} read: connection closed by peer",
                    unix_ms()
                ));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(format!("error {} read: {e}", unix_ms()));
                return;
            }
        }
    });
    let mut n: u64 = 0;
    loop {
        if let Ok(e) = rx.try_recv() {
            return Err(e);
        }
        n += 1;
        if let Err(e) = writer.write_all(format!("tick {n}\n").as_bytes()) {
            // A reset seen by the reader first says more: prefer it. But
            // a socket reports a reset (sk_err) to one call only: when it
            // was this write, the reader then reads end-of-file, and the
            // reset is ours to report.
            let send = format!("error {} send: {e}", unix_ms());
            return Err(match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(read) if !read.ends_with("closed by peer") => read,
                _ => send,
            });
        }
        std::thread::sleep(o.every);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lb-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd.as_str() {
        "spread" => {
            println!("{}", spread(&opts));
            ExitCode::SUCCESS
        }
        "trickle" if opts.mode == Mode::Tcp => match trickle(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("{e}");
                ExitCode::FAILURE
            }
        },
        "session" if opts.mode == Mode::Tcp => match session(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error: {e}");
                eprintln!("lb-client: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
