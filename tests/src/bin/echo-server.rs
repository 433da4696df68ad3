//! echo-server — the real server of the netns tests (std only, threads).
//!
//! ```text
//! echo-server --name rs1 [--tcp ADDR:PORT]... [--udp ADDR:PORT]... [--http ADDR:PORT]...
//!             [--https ADDR:PORT --tls-name DNSNAME --tls-cert-out FILE]
//! ```
//!
//! - TCP: on accept writes `"<name> <peer_ip>:<peer_port>\n"`, then answers
//!   each line received with `"<name> <line>\n"` until EOF.
//! - UDP: answers each datagram with `"<name> <peer_ip>:<peer_port>"`.
//! - HTTP: answers any request with 200, `Connection: close` and body
//!   `"<name> <peer_ip>:<peer_port>\n"`.
//! - HTTPS: the same over TLS (rustls), with a self-signed certificate for
//!   `--tls-name` made at startup (rcgen) and written as PEM to
//!   `--tls-cert-out`, so a client can trust exactly it.
//!
//! IPv6 addresses are written `[..]:port`; IPv4-mapped peers are reported
//! as IPv4. Prints `ready` on stdout once every socket listens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

const USAGE: &str =
    "usage: echo-server --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]... [--http ADDR:PORT]... [--https ADDR:PORT --tls-name DNSNAME --tls-cert-out FILE]";

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

fn serve_http(name: &str, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    http_exchange(name, stream, peer).map(|_| ())
}

/// Reads one request, answers it; returns the stream.
fn http_exchange<S: Read + Write>(name: &str, stream: S, peer: SocketAddr) -> std::io::Result<S> {
    let mut reader = BufReader::new(stream);
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
    let mut stream = reader.into_inner();
    stream.write_all(resp.as_bytes())?;
    stream.flush()?;
    Ok(stream)
}

/// The HTTP exchange over TLS, then close_notify.
fn serve_https(
    name: &str,
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    // A client that never finishes its handshake or request must not
    // hold the thread forever.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let tls = rustls::StreamOwned::new(conn, stream);
    let mut tls = http_exchange(name, tls, peer)?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// A self-signed certificate for `dns_name`, its PEM written to `pem_out`.
fn tls_config(dns_name: &str, pem_out: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec![dns_name.to_string()])
        .map_err(|e| format!("certificate for {dns_name}: {e}"))?;
    std::fs::write(pem_out, ck.cert.pem()).map_err(|e| format!("write {pem_out}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(ck.cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der())),
    )
    .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(Arc::new(config))
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
    let mut https = Vec::new();
    let mut tls_name = None;
    let mut tls_out = None;
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
            "--tls-name" => {
                tls_name = Some(v);
                continue;
            }
            "--tls-cert-out" => {
                tls_out = Some(v);
                continue;
            }
            "--https" => &mut https,
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
    if tcp.is_empty() && udp.is_empty() && http.is_empty() && https.is_empty() {
        eprintln!("echo-server: nothing to listen on\n{USAGE}");
        return ExitCode::from(2);
    }

    let mut threads = Vec::new();
    if !https.is_empty() {
        let (Some(dns), Some(out)) = (&tls_name, &tls_out) else {
            eprintln!("echo-server: --https needs --tls-name and --tls-cert-out\n{USAGE}");
            return ExitCode::from(2);
        };
        let config = match tls_config(dns, out) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("echo-server {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for addr in &https {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("echo-server {name}: listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let name = name.clone();
            let config = Arc::clone(&config);
            threads.push(thread::spawn(move || loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let name = name.clone();
                        let config = Arc::clone(&config);
                        thread::spawn(move || {
                            if let Err(e) = serve_https(&name, stream, peer, config) {
                                eprintln!("echo-server {name}: {peer}: {e}");
                            }
                        });
                    }
                    Err(e) => eprintln!("echo-server {name}: accept: {e}"),
                }
            }));
        }
    }
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
