//! Byte-exact `ipvsadm` (1.31) listings: what `directorctl status` and
//! `directorctl conns` print, so that operators can `diff` our output against
//! `ipvsadm`'s for the same kernel table.
//!
//! Everything here is a pure function of data; the rules below were read
//! from ipvsadm 1.31 (`ipvsadm.c`, `libipvs/libipvs.c`) and the kernel's
//! `net/netfilter/ipvs/ip_vs_conn.c`, and checked against real output (see
//! "Verification").
//!
//! # `list`: `ipvsadm -Ln [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact] [--nosort]`
//!
//! * Banner (`list_all`): `IP Virtual Server version MAJ.MIN.PATCH (size=N)`,
//!   the version split from `(maj << 16) | (min << 8) | patch`, the size as a
//!   signed `int`.
//! * Two title lines per mode (`print_title`). Plain mode has the fixed text
//!   `Prot LocalAddress:Port Scheduler Flags` /
//!   `  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn`;
//!   `--stats`/`--rate` put `Prot LocalAddress:Port` in 33 columns and five
//!   right-aligned 8-column headings; `--thresholds`/`--persistent-conn`
//!   left-align theirs.
//! * Service name (`print_service_entry`): `FWM  <mark>` (mark printed as a
//!   *signed* `int`, so marks >= 2^31 come out negative), `FWM  <mark> IPv6`,
//!   or the protocol left-aligned in 4 columns, a space, and `addr:port`
//!   (IPv6 in brackets, `inet_ntop` spelling). Non-IPv6 names are clipped to
//!   33 bytes (never reached in practice).
//! * Plain service line: `NAME SCHED`, then ` (FLAGS)` if any scheduler flag
//!   bit is set (`print_sched_flags`: `sh-fallback,sh-port` for `sh`,
//!   `mh-fallback,mh-port` for `mh`, else `flag-1,flag-2,flag-3`; a bit with
//!   no name for that scheduler prints nothing, so `sh` with only flag-3 shows
//!   ` ()`), then for persistent services ` persistent T`, ` mask M` (IPv4
//!   dotted, unless 255.255.255.255; IPv6 prefix length, unless 128) and
//!   ` pe NAME` -- the engine is only shown for persistent services -- and
//!   finally ` ops` for one-packet scheduling.
//! * `--stats`/`--rate` service line: the name left-aligned in 33 columns,
//!   then five numbers through `print_largenum` (below); no scheduler.
//! * Destination lines: `  -> ` and `addr:port` left-aligned in 28 columns,
//!   then per mode: plain `%-7s %-6d %-10u %-10u` (forward method, weight,
//!   active, inactive -- hence the trailing spaces); `--stats` five
//!   `print_largenum`s; `--rate` CPS, InPPS and OutPPS as plain `%8llu` and
//!   only InBPS/OutBPS through `print_largenum`; `--thresholds` four
//!   `%-10u`; `--persistent-conn` `%-9u %-11u %-10u %-10u`; `--tun-info` adds
//!   a 13-column tunnel field (`ipip`, `gue:PORT:FLAG`, `gre:FLAG` with FLAG
//!   `-c`/`+c`/`r+c`, else `n/a`). Forward labels come from `fwd_name`:
//!   Masq, Local, Tunnel, Route; the bypass method has no label and glibc
//!   prints `(null)`.
//! * `print_largenum`: below 10^8 the exact value in 9 columns; below 10^9
//!   `value/10^3` in 8 columns plus `K`; below 10^11 `/10^6` and `M`; below
//!   10^14 `/10^9` and `G`; else `/10^12` and `T` (integer division, so
//!   truncation, not rounding). With `--exact` the value is printed in
//!   `max(9, digits + 1)` columns: always at least one separating space.
//! * Destination counters: libipvs parses a destination's 64-bit stats
//!   attribute with its 32-bit reader for everything but the byte counts
//!   (`ipvs_dests_parse_cb` calls `ipvs_parse_stats`, not
//!   `ipvs_parse_stats64`), so ipvsadm shows destination conns, packets and
//!   all rates modulo 2^32. We do the same; service counters are full width.
//! * Order: see `format::sort` (private) -- libipvs' comparators (with their unsigned
//!   wrap-around) under glibc's merge sort, fed in the order given, which
//!   should be the kernel's dump order. `--nosort` keeps the given order.
//!
//! # `connections`: `ipvsadm -Lnc [--persistent-conn]`
//!
//! A reformatting of `/proc/net/ip_vs_conn`; see `format::conn` (private).
//!
//! # `timeouts`, `daemons`: `ipvsadm -L --timeout`, `ipvsadm -L --daemon`
//!
//! `Timeout (tcp tcpfin udp): T F U` (`list_timeout`, signed `%d`);
//! `ROLE sync daemon (mcast=IFN, syncid=N[, maxlen=N][, group=ADDR][, port=N][, ttl=N])`
//! per running daemon (`list_daemon`), each optional part only when non-zero
//! / present.
//!
//! # Verification
//!
//! `testdata/make-golden.sh` builds a rich table in the kernel lab VM (Debian
//! 6.1 kernel, the host's ipvsadm 1.31), passes traffic through it, and
//! captures every listing above; the `golden` tests rebuild the
//! `KernelTable` from the `--nosort` listings (kernel dump order, exact
//! counters) and compare all our listings byte for byte, sorted and not.
//! `ipvsadm -S -n` of the same table is kept in `save.txt` for reference.
//! What the VM cannot produce is covered by unit tests derived from the
//! source: the `G`/`T` suffixes (and `M` unless the bulk transfer is large
//! enough), the `Local` and bypass labels (the kernel keeps the method the
//! user gave, and ipvsadm cannot ask for either), the destination 32-bit
//! truncation, `sh` with an unnamed flag, and the runbook's real outputs.
//!
//! The caller must keep the kernel's dump order in [`KernelTable`]: the
//! golden table shows that ipvsadm's listing changes when the same services
//! arrive in another order (see `format::sort` (private)).

mod conn;
mod health;
mod sort;
mod sync;
mod vrrp;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use conn::{connections, parse_connections, Conn, ConnOptions};
pub use health::{age, health};
pub use sync::sync;
pub use vrrp::{vrrp, vrrp_event, vrrp_follow_banner, vrrp_lost};

use crate::model::{
    svc_flags, Family, Forward, KernelDest, KernelService, KernelTable, ServiceKey, SyncDaemon,
    SyncRole, Timeouts, TunnelCsum, TunnelType,
};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which `ipvsadm -Ln` listing to produce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListMode {
    /// `ipvsadm -Ln`
    #[default]
    Plain,
    /// `ipvsadm -Ln --stats`
    Stats,
    /// `ipvsadm -Ln --rate`
    Rate,
    /// `ipvsadm -Ln --thresholds`
    Thresholds,
    /// `ipvsadm -Ln --persistent-conn`
    PersistentConn,
    /// `ipvsadm -Ln --tun-info`
    TunInfo,
}

/// First line of `directorctl status` on the nftables dataplane, in place
/// of IPVS's `IP Virtual Server version ... (size=...)`.
pub const NFTABLES_BANNER: &str = "director nftables dataplane (table inet director)";

/// Options of [`list`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub mode: ListMode,
    /// `--exact`: no K/M/G/T abbreviation (only affects `Stats` and `Rate`).
    pub exact: bool,
    /// `--nosort`: print services and destinations in the given order.
    pub nosort: bool,
}

/// Errors of [`connections`]: the input is not what the kernel writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The text has no first (header) line at all.
    #[error("ip_vs_conn: empty input, expected the kernel's header line")]
    MissingHeader,
    /// A connection line ipvsadm could not have printed meaningfully.
    #[error("ip_vs_conn line {line}: {reason}")]
    BadConnLine { line: usize, reason: String },
}

// IP_VS_SCHEDNAME_MAXLEN - 1: libipvs copies at most this much of the name.
const SCHED_NAME_MAX: usize = 15;

/// Reproduce `ipvsadm -Ln` (and its `--stats`, `--rate`, ... variants) for
/// `table`. Pass services and destinations in the kernel's dump order for
/// byte-exact sorting in all cases (see `format::sort` (private)).
pub fn list(table: &KernelTable, opts: &ListOptions) -> String {
    let mut out = String::new();
    let v = table.info.version;
    let _ = writeln!(
        out,
        "IP Virtual Server version {}.{}.{} (size={})",
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff,
        table.info.conn_tab_size as i32
    );
    title(&mut out, opts.mode);
    let mut services: Vec<&KernelService> = table.services.iter().collect();
    if !opts.nosort {
        sort::glibc_msort(&mut services, &|a: &&KernelService, b: &&KernelService| {
            sort::cmp_services(&a.service.key, &b.service.key)
        });
    }
    for s in services {
        service_entry(&mut out, s, opts);
    }
    out
}

/// `ipvsadm -L --timeout`.
pub fn timeouts(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp as i32, t.tcp_fin as i32, t.udp as i32
    )
}

/// `ipvsadm -L --daemon`, one line per daemon in the order given (the
/// kernel reports the master before the backup).
pub fn daemons(daemons: &[SyncDaemon]) -> String {
    let mut out = String::new();
    for d in daemons {
        let role = match d.role {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        };
        let _ = write!(
            out,
            "{role} sync daemon (mcast={}, syncid={}",
            d.mcast_ifn, d.syncid
        );
        if d.sync_maxlen != 0 {
            let _ = write!(out, ", maxlen={}", d.sync_maxlen);
        }
        if let Some(g) = d.mcast_group {
            let _ = write!(out, ", group={}", ntop(g));
        }
        if d.mcast_port != 0 {
            let _ = write!(out, ", port={}", d.mcast_port);
        }
        if d.mcast_ttl != 0 {
            let _ = write!(out, ", ttl={}", d.mcast_ttl);
        }
        out.push_str(")\n");
    }
    out
}

fn title(out: &mut String, mode: ListMode) {
    const PROT: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port";
    let _ = match mode {
        ListMode::Stats => writeln!(
            out,
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        ListMode::Rate => writeln!(
            out,
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        ListMode::Thresholds => writeln!(
            out,
            "{PROT:<33} {:<10} {:<10} {:<10} {:<10}\n{REMOTE}",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        ListMode::PersistentConn => writeln!(
            out,
            "{PROT:<33} {:<9} {:<11} {:<10} {:<10}\n{REMOTE}",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        ListMode::TunInfo => writeln!(
            out,
            "{PROT} Scheduler Flags\n{REMOTE}           Forward TunnelInfo    Weight ActiveConn InActConn"
        ),
        ListMode::Plain => writeln!(
            out,
            "{PROT} Scheduler Flags\n{REMOTE}           Forward Weight ActiveConn InActConn"
        ),
    };
}

/// Cut `s` to at most `n` bytes (ipvsadm writes a NUL into its buffer).
fn clip(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Fwmark { family, mark } => match family {
            Family::V4 => format!("FWM  {}", *mark as i32),
            Family::V6 => format!("FWM  {} IPv6", *mark as i32),
        },
        ServiceKey::Inet { protocol, addr } => {
            let name = format!(
                "{:<4} {}",
                protocol.ipvsadm_label(),
                addrport(addr.ip(), addr.port())
            );
            if addr.is_ipv6() {
                name
            } else {
                clip(name, 33)
            }
        }
    }
}

fn sched_flags(sched: &str, flags: u32) -> String {
    let names: [(u32, &str); 3] = match sched {
        "sh" => [
            (svc_flags::SCHED1, "sh-fallback"),
            (svc_flags::SCHED2, "sh-port"),
            (0, ""),
        ],
        "mh" => [
            (svc_flags::SCHED1, "mh-fallback"),
            (svc_flags::SCHED2, "mh-port"),
            (0, ""),
        ],
        _ => [
            (svc_flags::SCHED1, "flag-1"),
            (svc_flags::SCHED2, "flag-2"),
            (svc_flags::SCHED3, "flag-3"),
        ],
    };
    names
        .iter()
        .filter(|(bit, _)| *bit != 0 && flags & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

fn service_entry(out: &mut String, ks: &KernelService, opts: &ListOptions) {
    let svc = &ks.service;
    let set = &svc.settings;
    let name = service_name(&svc.key);
    let st = &ks.stats;
    match opts.mode {
        ListMode::Stats => {
            let _ = write!(out, "{name:<33}");
            for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
                largenum(out, v, opts.exact);
            }
        }
        ListMode::Rate => {
            let _ = write!(out, "{name:<33}");
            for v in [st.cps, st.inpps, st.outpps, st.inbps, st.outbps] {
                largenum(out, v, opts.exact);
            }
        }
        _ => {
            let sched = clip(set.scheduler.clone(), SCHED_NAME_MAX);
            let _ = write!(out, "{name} {sched}");
            let any_sched = svc_flags::SCHED1 | svc_flags::SCHED2 | svc_flags::SCHED3;
            if set.flags & any_sched != 0 {
                let _ = write!(out, " ({})", sched_flags(&sched, set.flags));
            }
            if set.flags & svc_flags::PERSISTENT != 0 {
                let _ = write!(out, " persistent {}", set.timeout);
                match svc.key.family() {
                    Family::V4 if set.netmask != 0xffff_ffff => {
                        let _ = write!(out, " mask {}", Ipv4Addr::from(set.netmask));
                    }
                    Family::V6 if set.netmask != 128 => {
                        let _ = write!(out, " mask {}", set.netmask as i32);
                    }
                    _ => {}
                }
                if let Some(pe) = set.pe_name.as_deref().filter(|p| !p.is_empty()) {
                    let _ = write!(out, " pe {pe}");
                }
            }
            if set.flags & svc_flags::ONEPACKET != 0 {
                out.push_str(" ops");
            }
        }
    }
    out.push('\n');

    let mut dests: Vec<&KernelDest> = ks.dests.iter().collect();
    if !opts.nosort {
        sort::glibc_msort(&mut dests, &|a: &&KernelDest, b: &&KernelDest| {
            sort::cmp_dests(a, b)
        });
    }
    for d in dests {
        dest_entry(out, d, opts);
    }
}

/// The low 32 bits: what libipvs' 32-bit attribute reader keeps.
fn low32(v: u64) -> u64 {
    u64::from(v as u32)
}

fn fwd_name(f: Forward) -> &'static str {
    match f {
        Forward::Masq | Forward::Local | Forward::Tunnel | Forward::Route => f.ipvsadm_label(),
        // fwd_name() returns NULL and glibc's printf shows that as "(null)".
        Forward::Bypass => "(null)",
    }
}

fn csum_flag(c: TunnelCsum) -> &'static str {
    match c {
        TunnelCsum::NoCsum => "-c",
        TunnelCsum::Csum => "+c",
        TunnelCsum::RemCsum => "r+c",
    }
}

fn tun_info(d: &KernelDest) -> String {
    let s = &d.dest.settings;
    if s.forward != Forward::Tunnel {
        return "n/a".into();
    }
    match s.tunnel.kind {
        TunnelType::Ipip => "ipip".into(),
        TunnelType::Gue => format!("gue:{}:{}", s.tunnel.port, csum_flag(s.tunnel.csum)),
        TunnelType::Gre => format!("gre:{}", csum_flag(s.tunnel.csum)),
    }
}

fn dest_entry(out: &mut String, d: &KernelDest, opts: &ListOptions) {
    let key = &d.dest.key;
    let s = &d.dest.settings;
    let mut dname = addrport(key.addr, key.port);
    if !key.addr.is_ipv6() {
        dname = clip(dname, 28);
    }
    let st = &d.stats;
    let _ = match opts.mode {
        ListMode::Stats => {
            let _ = write!(out, "  -> {dname:<28}");
            for v in [
                low32(st.conns),
                low32(st.inpkts),
                low32(st.outpkts),
                st.inbytes,
                st.outbytes,
            ] {
                largenum(out, v, opts.exact);
            }
            writeln!(out)
        }
        ListMode::Rate => {
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                low32(st.cps),
                low32(st.inpps),
                low32(st.outpps)
            );
            largenum(out, low32(st.inbps), opts.exact);
            largenum(out, low32(st.outbps), opts.exact);
            writeln!(out)
        }
        ListMode::Thresholds => writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            s.upper_threshold, s.lower_threshold, d.active_conns, d.inactive_conns
        ),
        ListMode::PersistentConn => writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            s.weight as u32, d.persist_conns, d.active_conns, d.inactive_conns
        ),
        ListMode::TunInfo => writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
            fwd_name(s.forward),
            tun_info(d),
            s.weight,
            d.active_conns,
            d.inactive_conns
        ),
        ListMode::Plain => writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
            fwd_name(s.forward),
            s.weight,
            d.active_conns,
            d.inactive_conns
        ),
    };
}

/// `print_largenum`.
fn largenum(out: &mut String, v: u64, exact: bool) {
    let _ = if exact {
        let digits = v.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        write!(out, "{digits:>width$}")
    } else if v < 100_000_000 {
        write!(out, "{v:>9}")
    } else if v < 1_000_000_000 {
        write!(out, "{:>8}K", v / 1_000)
    } else if v < 100_000_000_000 {
        write!(out, "{:>8}M", v / 1_000_000)
    } else if v < 100_000_000_000_000 {
        write!(out, "{:>8}G", v / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", v / 1_000_000_000_000)
    };
}

/// `addrport_to_anyname` with `-n`: `a.b.c.d:port` or `[v6]:port`.
pub(crate) fn addrport(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{}]:{port}", ntop6(&a)),
    }
}

fn ntop(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => ntop6(&a),
    }
}

/// glibc `inet_ntop(AF_INET6)`: the first longest run of two or more zero
/// words becomes `::`; `::a.b.c.d` (IPv4-compatible, first 96 bits zero and
/// the next word not) and `::ffff:a.b.c.d` (IPv4-mapped) end in dotted
/// IPv4.
pub(crate) fn ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    // (start, len) of the first longest zero run.
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &word) in w.iter().enumerate() {
        if word == 0 {
            cur = Some(match cur {
                None => (i, 1),
                Some((b, l)) => (b, l + 1),
            });
        } else if let Some(c) = cur.take() {
            if best.is_none_or(|b| c.1 > b.1) {
                best = Some(c);
            }
        }
    }
    if let Some(c) = cur {
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut s = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best {
            if i >= b && i < b + l {
                if i == b {
                    s.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            s.push(':');
        }
        if i == 6 {
            if let Some((0, l)) = best {
                if l == 6 || (l == 5 && w[5] == 0xffff) {
                    let o = a.octets();
                    let _ = write!(s, "{}", Ipv4Addr::new(o[12], o[13], o[14], o[15]));
                    return s;
                }
            }
        }
        let _ = write!(s, "{:x}", w[i]);
        i += 1;
    }
    if let Some((b, l)) = best {
        if b + l == 8 {
            s.push(':');
        }
    }
    s
}
