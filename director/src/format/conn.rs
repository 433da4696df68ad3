//! `ipvsadm -Lnc`: the connection table, reformatted from the text of
//! `/proc/net/ip_vs_conn`.
//!
//! `ipvsadm` does not ask netlink for connections: `list_conn` opens the proc
//! file, skips its first line (the kernel's column header) and hands every
//! further line to `print_conn`, which splits it on white space into
//! protocol, client address, client port, virtual address, virtual port,
//! destination address, destination port, state, expiry seconds and,
//! optionally, persistence-engine name and data.
//!
//! The kernel (`ip_vs_conn_seq_show`) writes IPv4 addresses as 8 hex digits
//! of the host-order value, IPv6 ones in full `%pI6` form, ports as 4 hex
//! digits, the expiry in seconds, and appends ` PENAME PEDATA` when the
//! connection has persistence-engine data. The destination may be of the
//! other family than client and virtual address (an IPv6 service with IPv4
//! tunnel destinations), so its family is decided on its own.
//!
//! `print_conn` decides the family of client and virtual address from the
//! client field: IPv6 text, dotted IPv4 text, or else hex. Addresses are
//! printed as `inet_ntop` does (IPv6 in brackets) followed by `:port` in
//! decimal; the expiry as `%02d:%02d` minutes and seconds (minutes simply
//! grow past 99); the line as `%-3s %-6s %-11s %-18s %-18s %s`, with
//! `--persistent-conn` adding `%-16s %s` for name and data when both are
//! present.
//!
//! Where `ipvsadm` would print uninitialised memory (a line with fewer than
//! nine fields, an address that does not parse) or exit (an empty line),
//! we return an error naming the line instead. Known divergence: ipvsadm
//! reads with a 256-byte `fgets` buffer, so a line longer than 255 bytes
//! (possible only with long persistence-engine data) is split and its tail
//! printed as a garbage entry; we print the whole line once. We are also
//! stricter than `sscanf` about malformed numbers (ports must be 1-4 hex
//! digits, IPv4 addresses 1-8), which the kernel never writes.
//!
//! `/proc/net/ip_vs_conn_sync` (same columns plus an origin column) is not
//! read by ipvsadm and has no listing here.

use super::{addrport, FormatError};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Options of `ipvsadm -Lnc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnOptions {
    /// `--persistent-conn`: add the persistence-engine columns.
    pub persistent_conn: bool,
}

/// Sizes of `print_conn`'s `sscanf` targets (including the terminating NUL):
/// a longer field would overflow them, so we refuse it.
const PROTO_MAX: usize = 7;
const STATE_MAX: usize = 15;
const PE_NAME_MAX: usize = 16;
const PE_DATA_MAX: usize = 255;

/// Reproduce `ipvsadm -Lnc` (with `--persistent-conn` if asked) from the
/// text of `/proc/net/ip_vs_conn`.
pub fn connections(proc_ip_vs_conn: &str, opts: &ConnOptions) -> Result<String, FormatError> {
    let mut lines = proc_ip_vs_conn.split_inclusive('\n');
    // list_conn: no first line at all is "unexpected input".
    if lines.next().is_none() {
        return Err(FormatError::MissingHeader);
    }
    let mut out = String::from("IPVS connection entries\n");
    if opts.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for (i, line) in lines.enumerate() {
        // Line numbers are 1-based and count the header line.
        conn_line(&mut out, line, i + 2, opts)?;
    }
    Ok(out)
}

/// How an address field parsed (the `inet_pton` / `strtoul` cascade).
#[derive(Clone, Copy)]
enum AddrText {
    V6(Ipv6Addr),
    Dotted(Ipv4Addr),
    Hex(Ipv4Addr),
}

impl AddrText {
    fn parse(s: &str) -> Option<AddrText> {
        if let Ok(a) = s.parse::<Ipv6Addr>() {
            return Some(AddrText::V6(a));
        }
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Some(AddrText::Dotted(a));
        }
        hex_u32(s).map(|v| AddrText::Hex(Ipv4Addr::from(v)))
    }
    fn ip(self) -> IpAddr {
        match self {
            AddrText::V6(a) => IpAddr::V6(a),
            AddrText::Dotted(a) | AddrText::Hex(a) => IpAddr::V4(a),
        }
    }
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn hex_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// `%d` into an `unsigned int`: glibc converts with `strtol` (saturating at
/// `LONG_MAX`) and keeps the low 32 bits.
fn expires(s: &str) -> Option<u32> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = 0;
    for b in digits.bytes() {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    let v = if neg { v.saturating_neg() } else { v };
    Some(v as u32)
}

/// One connection entry of /proc/net/ip_vs_conn (`directorctl conns --json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conn {
    pub protocol: String,
    pub client: std::net::SocketAddr,
    #[serde(rename = "virtual")]
    pub virtual_addr: std::net::SocketAddr,
    pub destination: std::net::SocketAddr,
    pub state: String,
    pub expires_seconds: u32,
    pub pe_name: Option<String>,
    pub pe_data: Option<String>,
}

/// Every entry of /proc/net/ip_vs_conn, with the same line checks as
/// [`connections`].
pub fn parse_connections(proc_ip_vs_conn: &str) -> Result<Vec<Conn>, FormatError> {
    let mut lines = proc_ip_vs_conn.split_inclusive('\n');
    if lines.next().is_none() {
        return Err(FormatError::MissingHeader);
    }
    lines
        .enumerate()
        .map(|(i, line)| parse_line(line, i + 2))
        .collect()
}

fn parse_line(line: &str, lineno: usize) -> Result<Conn, FormatError> {
    let bad = |reason: String| FormatError::BadConnLine {
        line: lineno,
        reason,
    };
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.is_empty() {
        return Err(bad("empty line".into()));
    }
    if f.len() < 9 {
        return Err(bad(format!(
            "expected at least 9 fields (protocol, 3 address:port pairs, state, expiry), found {}",
            f.len()
        )));
    }
    let proto = f[0];
    if proto.len() > PROTO_MAX {
        return Err(bad(format!("protocol name {proto:?} is too long")));
    }
    let field_addr = |i: usize, what: &str| {
        AddrText::parse(f[i])
            .ok_or_else(|| bad(format!("{what} address {:?} does not parse", f[i])))
    };
    let field_port = |i: usize, what: &str| {
        hex_port(f[i]).ok_or_else(|| bad(format!("{what} port {:?} is not 1-4 hex digits", f[i])))
    };
    let caddr = field_addr(1, "client")?;
    let cport = field_port(2, "client")?;
    let vaddr = field_addr(3, "virtual")?;
    let vport = field_port(4, "virtual")?;
    let daddr = field_addr(5, "destination")?;
    let dport = field_port(6, "destination")?;
    // The client field fixes how the virtual one is read.
    let same_kind = matches!(
        (caddr, vaddr),
        (AddrText::V6(_), AddrText::V6(_))
            | (AddrText::Dotted(_), AddrText::Dotted(_))
            | (AddrText::Hex(_), AddrText::Hex(_))
    );
    if !same_kind {
        return Err(bad(format!(
            "virtual address {:?} is not of the client address's form {:?}",
            f[3], f[1]
        )));
    }
    let state = f[7];
    if state.len() > STATE_MAX {
        return Err(bad(format!("state {state:?} is too long")));
    }
    let exp = expires(f[8]).ok_or_else(|| bad(format!("expiry {:?} is not a number", f[8])))?;
    let pe_name = f.get(9).copied();
    let pe_data = f.get(10).copied();
    if pe_name.is_some_and(|s| s.len() > PE_NAME_MAX) {
        return Err(bad("persistence engine name is too long".into()));
    }
    if pe_data.is_some_and(|s| s.len() > PE_DATA_MAX) {
        return Err(bad("persistence engine data is too long".into()));
    }

    Ok(Conn {
        protocol: proto.to_string(),
        client: std::net::SocketAddr::new(caddr.ip(), cport),
        virtual_addr: std::net::SocketAddr::new(vaddr.ip(), vport),
        destination: std::net::SocketAddr::new(daddr.ip(), dport),
        state: state.to_string(),
        expires_seconds: exp,
        pe_name: pe_name.map(str::to_string),
        pe_data: pe_data.map(str::to_string),
    })
}

fn conn_line(
    out: &mut String,
    line: &str,
    lineno: usize,
    opts: &ConnOptions,
) -> Result<(), FormatError> {
    let c = parse_line(line, lineno)?;
    let (proto, state, exp) = (&c.protocol, &c.state, c.expires_seconds);
    let (pe_name, pe_data) = (c.pe_name.as_deref(), c.pe_data.as_deref());
    let expire = format!("{:02}:{:02}", exp / 60, exp % 60);
    let v = addrport(c.virtual_addr.ip(), c.virtual_addr.port());
    let d = addrport(c.destination.ip(), c.destination.port());
    let c = addrport(c.client.ip(), c.client.port());
    match (opts.persistent_conn, pe_name, pe_data) {
        (true, Some(name), Some(data)) => {
            let _ = writeln!(
                out,
                "{proto:<3} {expire:<6} {state:<11} {c:<18} {v:<18} {d:<16} {name:<18} {data}"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "{proto:<3} {expire:<6} {state:<11} {c:<18} {v:<18} {d}"
            );
        }
    }
    Ok(())
}
