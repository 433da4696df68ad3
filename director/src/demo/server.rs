//! The real servers of the demo, built into the `director` binary (hidden
//! subcommand `director demo-server`) so the demo needs nothing else
//! installed.
//!
//! - echo (TCP): on accept writes `"<name> <peer_ip>:<peer_port>\n"`, then
//!   answers every line with `"<name> <line>\n"` until EOF. The name in
//!   each answer proves a connection still reaches the server it started
//!   on.
//! - HTTP: any request gets `200 OK` and the body
//!   `"<name> <peer_ip>:<peer_port>\n"` (so `curl` from the client
//!   namespace shows who served it and which source it saw: the SNAT
//!   address); `Connection: close`.
//!
//! Prints `ready` on stdout once both listen. One thread per connection
//! (with a small stack): thousands of mostly idle connections is exactly
//! what the demo holds open.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

const STACK: usize = 64 * 1024;

/// Listens on `echo` and `http`, serves forever. Errors: a socket that
/// cannot be bound.
pub fn serve(name: &str, echo: SocketAddr, http: SocketAddr) -> super::Result<()> {
    let bind = |addr: SocketAddr| {
        TcpListener::bind(addr).map_err(|e| {
            super::DemoError::new(format!("demo-server {name}: listen on {addr}: {e}"))
        })
    };
    let echo_l = bind(echo)?;
    let http_l = bind(http)?;
    let n = name.to_owned();
    std::thread::spawn(move || accept_loop(&n, &http_l, serve_http));
    let mut out = std::io::stdout();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| super::DemoError::new(format!("demo-server {name}: stdout: {e}")))?;
    accept_loop(name, &echo_l, serve_echo);
    Ok(())
}

fn accept_loop(
    name: &str,
    l: &TcpListener,
    serve: fn(&str, TcpStream, SocketAddr) -> std::io::Result<()>,
) {
    loop {
        match l.accept() {
            Ok((stream, peer)) => {
                let owned = name.to_owned();
                let spawned = std::thread::Builder::new()
                    .stack_size(STACK)
                    .spawn(move || {
                        // A client that vanishes (reset, failover without
                        // state) is normal here: nothing to report.
                        let _ = serve(&owned, stream, peer);
                    });
                if let Err(e) = spawned {
                    eprintln!("demo-server {name}: no thread for {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("demo-server {name}: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn serve_echo(name: &str, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.write_all(format!("{name} {peer}\n").as_bytes())?;
    let reader = BufReader::new(stream.try_clone()?);
    for line in reader.lines() {
        let line = line?;
        stream.write_all(format!("{name} {line}\n").as_bytes())?;
    }
    Ok(())
}

fn serve_http(name: &str, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let body = format!("{name} {peer}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(resp.as_bytes())?;
    stream.flush()
}
