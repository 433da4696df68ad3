//! echo-server — the real server of the netns tests (std only, threads).
//!
//! ```text
//! echo-server --name rs1 [--tcp ADDR:PORT]... [--udp ADDR:PORT]... [--http ADDR:PORT]...
//! ```
//!
//! - TCP: on accept writes `"<name> <peer_ip>:<peer_port>\n"`, then answers
//!   each line received with `"<name> <line>\n"` until EOF.
//! - UDP: answers each datagram with `"<name> <peer_ip>:<peer_port>"`.
//! - HTTP: answers any request with 200, `Connection: close` and body
//!   `"<name> <peer_ip>:<peer_port>\n"`.
//!
//! IPv6 addresses are written `[..]:port`; IPv4-mapped peers are reported
//! as IPv4. Prints `ready` on stdout once every socket listens.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;

const USAGE: &str =
    "usage: echo-server --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]... [--http ADDR:PORT]...";

fn peer_text(peer: SocketAddr) -> String {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        v4 => v4,
    };
    SocketAddr::new(ip, peer.port()).to_string()
}

fn serve_tcp(name: &str, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.write_all(format!("{name} {}\n", peer_text(peer)).as_bytes())?;
    let reader = BufReader::new(stream.try_clone()?);
    for line in reader.lines() {
        let line = line?;
        stream.write_all(format!("{name} {line}\n").as_bytes())?;
    }
    Ok(())
}

fn serve_http(name: &str, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let (status, body) = if request_line.split_whitespace().count() >= 2 {
        ("200 OK", format!("{name} {}\n", peer_text(peer)))
    } else {
        ("400 Bad Request", "bad request\n".to_owned())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes())?;
    stream.flush()
}

fn accept_loop(
    name: String,
    listener: TcpListener,
    serve: fn(&str, TcpStream, SocketAddr) -> std::io::Result<()>,
) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let name = name.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(&name, stream, peer) {
                        eprintln!("echo-server {name}: {peer}: {e}");
                    }
                });
            }
            Err(e) => eprintln!("echo-server {name}: accept: {e}"),
        }
    }
}

fn udp_loop(name: String, sock: UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let reply = format!("{name} {}", peer_text(peer));
                if let Err(e) = sock.send_to(reply.as_bytes(), peer) {
                    eprintln!("echo-server {name}: send to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("echo-server {name}: recv: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let mut name = None;
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut http = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else {
            eprintln!("echo-server: {a} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        let list = match a.as_str() {
            "--name" => {
                name = Some(v);
                continue;
            }
            "--tcp" => &mut tcp,
            "--udp" => &mut udp,
            "--http" => &mut http,
            _ => {
                eprintln!("echo-server: unknown argument {a}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match v.parse::<SocketAddr>() {
            Ok(addr) => list.push(addr),
            Err(e) => {
                eprintln!("echo-server: {a} {v}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("echo-server: --name is required\n{USAGE}");
        return ExitCode::from(2);
    };
    if tcp.is_empty() && udp.is_empty() && http.is_empty() {
        eprintln!("echo-server: nothing to listen on\n{USAGE}");
        return ExitCode::from(2);
    }

    let mut threads = Vec::new();
    for (addrs, serve) in [
        (&tcp, serve_tcp as fn(&str, TcpStream, SocketAddr) -> _),
        (&http, serve_http as fn(&str, TcpStream, SocketAddr) -> _),
    ] {
        for addr in addrs {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("echo-server {name}: listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let name = name.clone();
            threads.push(thread::spawn(move || accept_loop(name, listener, serve)));
        }
    }
    for addr in &udp {
        let sock = match UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("echo-server {name}: bind udp {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = name.clone();
        threads.push(thread::spawn(move || udp_loop(name, sock)));
    }
    let mut out = std::io::stdout();
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}
