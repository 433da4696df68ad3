//! Phase two: the semantic pass. Walks the raw (spanned) structs, checks
//! every value and every cross-reference, and collects *all* errors, each at
//! the span of the value at fault (or of the table header when something is
//! missing). Only when no error was found is the typed [`Config`] returned.

use super::raw::*;
use super::types::*;
use crate::model::{
    svc_flags, Family, Forward, Protocol, ServiceKey, Timeouts, Tunnel, TunnelCsum, TunnelType,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// Collected semantic errors: byte span and message.
pub(crate) type Errors = Vec<(Range<usize>, String)>;

struct Ctx<'a> {
    text: &'a str,
    errs: Errors,
    /// Byte offsets of every '\n' in `text`, so `line()` is a binary search:
    /// a config with 5,000 virtual servers asks for tens of thousands of
    /// lines, and scanning from the start each time made that quadratic.
    newlines: Vec<usize>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errs.push((span, msg.into()));
    }

    /// 1-based line of a byte offset, for "first at line N" references.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.newlines.partition_point(|&nl| nl < end) + 1
    }

    /// The header as written (`[[virtual_server]]`), or `fallback` for an
    /// inline table.
    fn table_name(&self, span: &Range<usize>, fallback: &str) -> String {
        match self.text.get(span.clone()) {
            Some(h) if h.starts_with('[') => h.chars().filter(|c| !c.is_whitespace()).collect(),
            _ => fallback.to_string(),
        }
    }

    fn require<'v, T>(
        &mut self,
        v: &'v Opt<T>,
        header: &Range<usize>,
        table: &str,
        key: &str,
    ) -> Option<&'v S<T>> {
        if v.is_none() {
            self.err(
                header.clone(),
                format!("missing required key \"{key}\" in {table}"),
            );
        }
        v.as_ref()
    }

    /// The required, non-empty `name` of a table, checked to be unique
    /// among `seen` (name -> line of its first table).
    fn unique_name(
        &mut self,
        raw: &Opt<String>,
        header: &Range<usize>,
        table: &str,
        what: &str,
        seen: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let name = self
            .require(raw, header, table, "name")
            .and_then(|v| self.nonempty(v, "name"));
        if let (Some(n), Some(v)) = (&name, raw) {
            if let Some(line) = seen.get(n) {
                self.err(
                    v.span(),
                    format!("duplicate {what} name \"{n}\" (first at line {line})"),
                );
            } else {
                let line = self.line(header);
                seen.insert(n.clone(), line);
            }
        }
        name
    }

    fn nonempty(&mut self, v: &S<String>, key: &str) -> Option<String> {
        if v.get_ref().trim().is_empty() {
            self.err(v.span(), format!("{key} must not be empty"));
            None
        } else {
            Some(v.get_ref().clone())
        }
    }

    fn int(&mut self, v: &S<i64>, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.err(v.span(), format!("{key} {n} out of range {lo}..={hi}"));
            None
        } else {
            Some(n)
        }
    }

    /// An integer in `lo..=hi`, the message naming its owner
    /// (`vrrp_instance "VI_1"`).
    fn int_in(&mut self, v: &S<i64>, key: &str, owner: &str, lo: i64, hi: i64) -> Option<i64> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.err(
                v.span(),
                format!("{key} {n} out of range {lo}..={hi} in {owner}"),
            );
            None
        } else {
            Some(n)
        }
    }

    /// A duration in `owner`, optionally required to be more than zero.
    fn duration_in(
        &mut self,
        v: &S<RawDuration>,
        key: &str,
        owner: &str,
        positive: bool,
    ) -> Option<Duration> {
        let d = self.duration(v, &format!("{key} in {owner}"))?;
        if positive && d.is_zero() {
            self.err(v.span(), format!("{key} in {owner} must be greater than 0"));
            return None;
        }
        Some(d)
    }

    /// A program to run: an argv array whose first element is an absolute
    /// path. Run without a shell and without a PATH search (the director
    /// runs as root; what runs must be exactly what the file says).
    fn argv(&mut self, v: &S<RawArgv>, key: &str, owner: &str) -> Option<Vec<String>> {
        let items = match v.get_ref() {
            RawArgv::Shell(s) => {
                self.err(v.span(), format!("{key} in {owner} is a string, but director runs programs without a shell: write an argv array, [\"/path\", \"arg\"]{}", argv_hint(s)));
                return None;
            }
            RawArgv::Argv(items) => items,
        };
        let Some(first) = items.first() else {
            self.err(
                v.span(),
                format!("{key} in {owner} must not be empty: write [\"/path\", \"arg\"]"),
            );
            return None;
        };
        let mut ok = true;
        if !first.get_ref().starts_with('/') {
            self.err(first.span(), format!("{key} in {owner}: the program \"{}\" must be an absolute path (there is no PATH search)", first.get_ref()));
            ok = false;
        }
        for a in items {
            if a.get_ref().contains('\0') {
                self.err(
                    a.span(),
                    format!("{key} in {owner}: an argument contains a NUL character"),
                );
                ok = false;
            }
        }
        ok.then(|| items.iter().map(|a| a.get_ref().clone()).collect())
    }

    /// The notify hooks of an instance or a sync group.
    fn notify(&mut self, owner: &str, hooks: [&Opt<RawArgv>; 5]) -> Option<Notify> {
        const KEYS: [&str; 5] = [
            "notify_master",
            "notify_backup",
            "notify_fault",
            "notify_stop",
            "notify",
        ];
        let mut out: [Option<Vec<String>>; 5] = Default::default();
        let mut ok = true;
        for ((slot, key), raw) in out.iter_mut().zip(KEYS).zip(hooks) {
            if let Some(v) = raw {
                *slot = self.argv(v, key, owner);
                ok &= slot.is_some();
            }
        }
        let [master, backup, fault, stop, generic] = out;
        ok.then_some(Notify {
            master,
            backup,
            fault,
            stop,
            generic,
        })
    }

    fn choice(&mut self, v: &S<String>, key: &str, options: &[&str]) -> Option<usize> {
        let s = v.get_ref();
        if let Some(i) = options.iter().position(|o| o == s) {
            return Some(i);
        }
        let hint = if options.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            " (values are lowercase)"
        } else {
            ""
        };
        self.err(
            v.span(),
            format!("bad {key} \"{s}\": expected {}{hint}", one_of(options)),
        );
        None
    }

    fn duration(&mut self, v: &S<RawDuration>, key: &str) -> Option<Duration> {
        let s = &v.get_ref().0;
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.span(), format!("invalid duration \"{s}\" for {key}: {e}"));
                None
            }
        }
    }

    /// A duration that must be whole seconds in `lo..=hi`.
    fn whole_secs(&mut self, v: &S<RawDuration>, key: &str, lo: u64, hi: u64) -> Option<u32> {
        let d = self.duration(v, key)?;
        let s = &v.get_ref().0;
        if d.subsec_nanos() != 0 {
            self.err(v.span(), format!("{key} \"{s}\" must be whole seconds"));
            return None;
        }
        let secs = d.as_secs();
        if secs < lo {
            self.err(
                v.span(),
                format!("{key} \"{s}\" is too short: the minimum is {lo}s"),
            );
            return None;
        }
        if secs > hi {
            self.err(
                v.span(),
                format!("{key} \"{s}\" is too long: the maximum is {hi}s"),
            );
            return None;
        }
        u32::try_from(secs).ok()
    }

    fn ip(&mut self, v: &S<String>, key: &str) -> Option<IpAddr> {
        match v.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "bad address \"{}\" for {key}: invalid IP address",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn sockaddr(&mut self, v: &S<String>, key: &str) -> Option<SocketAddr> {
        match parse_sockaddr(v.get_ref()) {
            Ok(a) => Some(a),
            Err(why) => {
                self.err(
                    v.span(),
                    format!("bad address \"{}\" for {key}: {why}", v.get_ref()),
                );
                None
            }
        }
    }
}

/// For a shell string that is only words (`/path/x.sh primary`), the
/// array it means: ` (here: ["/path/x.sh", "primary"])`. Nothing when it
/// uses shell syntax, whose meaning we do not guess.
fn argv_hint(s: &str) -> String {
    const SHELL: &[char] = &[
        '"', '\'', '\\', '$', '`', '|', '&', ';', '<', '>', '(', ')', '{', '}', '*', '?', '[', ']',
        '~', '#', '!', '\n',
    ];
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() || s.contains(SHELL) {
        return String::new();
    }
    let mut q: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    // The program needs its full path (no PATH search): say so rather
    // than suggest an array that the next check refuses.
    if let Some(p) = words.first().filter(|p| !p.starts_with('/')) {
        q[0] = format!("\"/full/path/of/{p}\"");
    }
    format!(" (here: [{}])", q.join(", "))
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn one_of(options: &[&str]) -> String {
    let q: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
    match q.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// `ip:port`, IPv6 as `[ip]:port`. Our own parser (not `SocketAddr`'s) so the
/// message says which part is wrong.
pub(crate) fn parse_sockaddr(s: &str) -> Result<SocketAddr, String> {
    let (ip, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing \"]\" after the IPv6 address")?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| "invalid IPv6 address".to_string())?;
        let port = after
            .strip_prefix(':')
            .ok_or("missing \":port\" after \"]\"")?;
        (IpAddr::V6(ip), port)
    } else {
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err(format!(
                "missing port; write IPv6 with brackets, e.g. \"[{s}]:80\""
            ));
        }
        if s.parse::<Ipv4Addr>().is_ok() {
            return Err(format!("missing port, e.g. \"{s}:80\""));
        }
        let (host, port) = s.rsplit_once(':').ok_or("expected \"ip:port\"")?;
        if host.contains(':') {
            return Err("IPv6 addresses need brackets, e.g. \"[2001:db8::1]:80\"".to_string());
        }
        let ip: Ipv4Addr = host.parse().map_err(|_| "invalid IP address".to_string())?;
        (IpAddr::V4(ip), port)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port \"{port}\" (expected 0..=65535)"))?;
    Ok(SocketAddr::new(ip, port))
}

/// `ip/prefix` or a bare ip (host route).
fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip_s, len_s) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = ip_s.parse().map_err(|_| "invalid IP address".to_string())?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len_s {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "invalid prefix length \"{l}\" (expected 0..={max})"
                ))
            }
        },
    };
    Ok((ip, len))
}

const DATAPLANES: &[&str] = &["auto", "ipvs", "nftables"];
const PROTOCOLS: &[&str] = &["tcp", "udp", "sctp"];
const FAMILIES: &[&str] = &["ipv4", "ipv6"];
const FORWARDINGS: &[&str] = &["nat", "dr", "tun"];
const TUNNEL_TYPES: &[&str] = &["ipip", "gue", "gre"];
const TUNNEL_CSUMS: &[&str] = &["nocsum", "csum", "remcsum"];
const HEALTH_KINDS: &[&str] = &["tcp", "http", "https", "script"];
const SCHED_FLAGS: &[&str] = &[
    "sh-fallback",
    "sh-port",
    "mh-fallback",
    "mh-port",
    "flag-1",
    "flag-2",
    "flag-3",
];

fn forward_of(i: usize) -> Forward {
    match i {
        0 => Forward::Masq,
        1 => Forward::Route,
        _ => Forward::Tunnel,
    }
}

fn protocol_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn forward_word(f: Forward) -> &'static str {
    match f {
        Forward::Masq => "nat",
        Forward::Route => "dr",
        Forward::Tunnel => "tun",
        Forward::Local => "local",
        Forward::Bypass => "bypass",
    }
}

/// Run the semantic pass.
/// `force_dataplane`: check the config as if `global.dataplane` said this
/// (the daemon re-checks with the dataplane `auto` resolved to).
pub(crate) fn validate(
    text: &str,
    raw: &RawConfig,
    force_dataplane: Option<DataplaneChoice>,
) -> Result<Config, Errors> {
    let mut cx = Ctx {
        text,
        errs: Vec::new(),
        newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
    };
    let global = global(&mut cx, raw.global.as_ref());
    let vrrp_scripts = vrrp_scripts(&mut cx, raw.vrrp_script.as_deref().unwrap_or(&[]));
    let vrrp_instances = vrrp(
        &mut cx,
        raw.vrrp_instance.as_deref().unwrap_or(&[]),
        raw.vrrp_script.as_deref().unwrap_or(&[]),
        &vrrp_scripts,
    );
    let sync_groups = sync_groups(
        &mut cx,
        raw.sync_group.as_deref().unwrap_or(&[]),
        raw.vrrp_instance.as_deref().unwrap_or(&[]),
    );
    sync_group_weights(
        &mut cx,
        &sync_groups,
        raw.vrrp_instance.as_deref().unwrap_or(&[]),
        raw.vrrp_script.as_deref().unwrap_or(&[]),
    );
    let virtual_servers = virtual_servers(&mut cx, raw.virtual_server.as_deref().unwrap_or(&[]));
    let snat = snats(&mut cx, raw.snat.as_deref().unwrap_or(&[]));
    let ctsync = raw
        .ctsync
        .as_ref()
        .and_then(|c| ctsync(&mut cx, c, &vrrp_instances, &sync_groups));
    // The dataplane as written, not as forced: `auto` that lands on
    // nftables ignores the keys with a warning (the daemon logs it), so
    // one config serves boxes with and without IPVS.
    let ipvs_sync = raw
        .ctsync
        .as_ref()
        .and_then(|c| ipvs_sync(&mut cx, c, global.dataplane));
    match force_dataplane.unwrap_or(global.dataplane) {
        DataplaneChoice::Nftables => {
            nftables_limits(&mut cx, raw.virtual_server.as_deref().unwrap_or(&[]))
        }
        DataplaneChoice::Ipvs => ipvs_limits(&mut cx, raw.virtual_server.as_deref().unwrap_or(&[])),
        DataplaneChoice::Auto => {}
    }
    if !cx.errs.is_empty() {
        return Err(cx.errs);
    }
    Ok(Config {
        global,
        vrrp_instances,
        vrrp_scripts,
        sync_groups,
        virtual_servers,
        snat,
        ctsync,
        ipvs_sync,
    })
}

fn global(cx: &mut Ctx<'_>, g: Option<&S<RawGlobal>>) -> Global {
    let mut out = Global {
        router_id: String::new(),
        control_socket: PathBuf::from("/run/director/director.sock"),
        metrics_listen: None,
        dataplane: DataplaneChoice::Auto,
        ipvs_exclusive: false,
        reconcile_interval: Duration::from_secs(5),
        ipvs_timeouts: None,
    };
    let Some(g) = g else {
        cx.err(0..0, "missing [global] table (it needs at least router_id)");
        return out;
    };
    let h = g.span();
    let table = cx.table_name(&h, "global");
    let r = g.get_ref();
    if let Some(v) = cx.require(&r.router_id, &h, &table, "router_id") {
        if let Some(s) = cx.nonempty(v, "router_id") {
            out.router_id = s;
        }
    }
    if let Some(v) = &r.control_socket {
        if let Some(s) = cx.nonempty(v, "control_socket") {
            out.control_socket = PathBuf::from(s);
        }
    }
    if let Some(v) = &r.metrics_listen {
        out.metrics_listen = cx.sockaddr(v, "metrics_listen");
    }
    if let Some(v) = &r.dataplane {
        if let Some(i) = cx.choice(v, "dataplane", DATAPLANES) {
            out.dataplane = [
                DataplaneChoice::Auto,
                DataplaneChoice::Ipvs,
                DataplaneChoice::Nftables,
            ][i];
        }
    }
    if let Some(v) = &r.ipvs_exclusive {
        out.ipvs_exclusive = *v.get_ref();
    }
    if let Some(v) = &r.reconcile_interval {
        if let Some(d) = cx.duration(v, "reconcile_interval") {
            if d < Duration::from_millis(100) {
                cx.err(
                    v.span(),
                    format!(
                        "reconcile_interval \"{}\" is too short: the minimum is 100ms",
                        v.get_ref().0
                    ),
                );
            } else {
                out.reconcile_interval = d;
            }
        }
    }
    if let Some(t) = &r.ipvs_timeouts {
        let t = t.get_ref();
        let mut to = Timeouts::default();
        let max = u64::from(u32::MAX);
        if let Some(v) = &t.tcp {
            to.tcp = cx.whole_secs(v, "ipvs_timeouts.tcp", 1, max).unwrap_or(0);
        }
        if let Some(v) = &t.tcp_fin {
            to.tcp_fin = cx
                .whole_secs(v, "ipvs_timeouts.tcp_fin", 1, max)
                .unwrap_or(0);
        }
        if let Some(v) = &t.udp {
            to.udp = cx.whole_secs(v, "ipvs_timeouts.udp", 1, max).unwrap_or(0);
        }
        out.ipvs_timeouts = Some(to);
    }
    out
}

/// VRRP weights (track_interfaces, vrrp_script, track_scripts): keepalived's
/// range. A weight moves the priority, which stays within 1..=254 (0 is
/// "releasing", RFC 5798 6.4.3, and 255 the address owner, 5.2.4).
const WEIGHT_MIN: i64 = -253;
const WEIGHT_MAX: i64 = 253;

fn vrrp(
    cx: &mut Ctx<'_>,
    raws: &[S<RawVrrp>],
    raw_scripts: &[S<RawVrrpScript>],
    scripts: &[VrrpScript],
) -> Vec<VrrpInstance> {
    let known_scripts: Vec<&str> = raw_scripts
        .iter()
        .filter_map(|s| s.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut vrids: HashMap<(String, Family, u8), (String, usize)> = HashMap::new();
    let mut vips: HashMap<IpAddr, (String, usize)> = HashMap::new();
    for inst in raws {
        let h = inst.span();
        let table = cx.table_name(&h, "vrrp_instance");
        let r = inst.get_ref();
        let name = cx.unique_name(&r.name, &h, &table, "vrrp_instance", &mut names);
        let label = name.clone().unwrap_or_default();
        let owner = format!("vrrp_instance \"{label}\"");
        let interface = cx
            .require(&r.interface, &h, &table, "interface")
            .and_then(|v| cx.nonempty(v, "interface"));
        let vrid = cx
            .require(&r.vrid, &h, &table, "vrid")
            .and_then(|v| cx.int(v, "vrid", 1, 255));
        let priority = cx
            .require(&r.priority, &h, &table, "priority")
            .and_then(|v| cx.int(v, "priority", 1, 255));
        let version = match &r.version {
            None => Some(3u8),
            Some(v) => match *v.get_ref() {
                2 => Some(2),
                3 => Some(3),
                n => {
                    cx.err(
                        v.span(),
                        format!("version {n} is not a VRRP version: expected 2 or 3"),
                    );
                    None
                }
            },
        };
        let advert = match &r.advert_interval {
            None => Some(Duration::from_secs(1)),
            Some(v) => cx.duration(v, "advert_interval").and_then(|d| {
                let s = &v.get_ref().0;
                match version {
                    Some(2) if d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs()) => {
                        cx.err(v.span(), format!("advert_interval \"{s}\" is not valid for VRRP version 2: expected whole seconds 1s..=255s"));
                        None
                    }
                    Some(3) if d.as_nanos() % 10_000_000 != 0 || !(1..=4095).contains(&(d.as_millis() / 10)) => {
                        cx.err(v.span(), format!("advert_interval \"{s}\" is not valid for VRRP version 3: expected a multiple of 10ms in 10ms..=40.95s"));
                        None
                    }
                    _ => Some(d),
                }
            }),
        };
        let preempt = r.preempt.as_ref().map(|v| *v.get_ref()).unwrap_or(true);
        let preempt_delay = match &r.preempt_delay {
            None => Some(Duration::ZERO),
            Some(v) => cx.duration(v, "preempt_delay"),
        };

        // Virtual IPs: one family per instance (a VRRP instance advertises
        // over IPv4 or IPv6, RFC 5798 section 5.2.9).
        let mut family: Option<Family> = None;
        let mut addrs = Vec::new();
        match cx.require(&r.virtual_ipaddresses, &h, &table, "virtual_ipaddresses") {
            Some(list) if list.get_ref().is_empty() => {
                cx.err(list.span(), "virtual_ipaddresses must not be empty");
            }
            Some(list) => {
                for v in list.get_ref() {
                    match parse_prefix(v.get_ref()) {
                        Err(why) => cx.err(
                            v.span(),
                            format!(
                                "bad address \"{}\" for virtual_ipaddresses: {why}",
                                v.get_ref()
                            ),
                        ),
                        Ok((ip, len)) => {
                            let f = Family::of(&ip);
                            match family {
                                None => family = Some(f),
                                Some(first) if first != f => {
                                    cx.err(v.span(), format!("virtual IP {ip} is {} but vrrp_instance \"{label}\" is {} (one instance carries one address family)", family_name(f), family_name(first)));
                                    continue;
                                }
                                _ => {}
                            }
                            if f == Family::V6 && version == Some(2) {
                                cx.err(v.span(), format!("virtual IP {ip} is IPv6 but VRRP version 2 is IPv4-only (RFC 3768); use version = 3"));
                            }
                            if let Some((other, line)) = vips.get(&ip) {
                                cx.err(v.span(), format!("virtual IP {ip} is already in vrrp_instance \"{other}\" (line {line})"));
                            } else {
                                let line = cx.line(&v.span());
                                vips.insert(ip, (label.clone(), line));
                            }
                            addrs.push((ip, len));
                        }
                    }
                }
            }
            None => {}
        }

        let mut peers = Vec::new();
        if let Some(list) = &r.unicast_peers {
            for v in list.get_ref() {
                if let Some(ip) = cx.ip(v, "unicast_peers") {
                    if let Some(f) = family {
                        if Family::of(&ip) != f {
                            cx.err(
                                v.span(),
                                format!(
                                    "unicast peer {ip} is {} but vrrp_instance \"{label}\" is {}",
                                    family_name(Family::of(&ip)),
                                    family_name(f)
                                ),
                            );
                            continue;
                        }
                    }
                    peers.push(ip);
                }
            }
        }

        let mut tracks = Vec::new();
        if let Some(list) = &r.track_interfaces {
            for t in list.get_ref() {
                let th = t.span();
                let tr = t.get_ref();
                let tname = cx
                    .require(&tr.name, &th, "vrrp_instance.track_interfaces", "name")
                    .and_then(|v| cx.nonempty(v, "track_interfaces name"));
                let weight = match &tr.weight {
                    None => Some(0),
                    Some(v) => {
                        cx.int_in(v, "track_interfaces weight", &owner, WEIGHT_MIN, WEIGHT_MAX)
                    }
                };
                if let (Some(name), Some(weight)) = (tname, weight) {
                    tracks.push(TrackInterface {
                        name,
                        weight: weight as i32,
                    });
                }
            }
        }

        let accept = r.accept.as_ref().map(|v| *v.get_ref()).unwrap_or(true);
        // Accept_Mode off (RFC 5798 6.4.3: a non-owner master "MUST NOT
        // accept packets addressed to the IPvX address(es)") would have to
        // drop the very traffic a load balancer exists for: IPVS takes VIP
        // packets at LOCAL_IN, after local acceptance. keepalived users
        // meet it as vrrp_strict breaking LVS. Refused rather than ignored.
        if let (Some(v), false) = (&r.accept, accept) {
            cx.err(
                v.span(),
                format!("accept = false in vrrp_instance \"{}\" is not supported: director's VIPs carry load-balanced traffic, which Accept_Mode off (RFC 5798 6.4.3) would drop; remove the key", r.name.as_ref().map(|n| n.get_ref().as_str()).unwrap_or("")),
            );
        }
        let shutdown_priority_zero = r
            .shutdown_priority_zero
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(true);
        let garp = garp(cx, r, &owner);
        let unicast_src_ip = unicast_src_ip(cx, r, family, &peers, &label, &owner);
        let authentication = match &r.authentication {
            None => Some(None),
            Some(a) => authentication(cx, a, version, &owner).map(Some),
        };
        let track_scripts = track_scripts(cx, r, &known_scripts, scripts, &owner);
        let notify = cx.notify(
            &owner,
            [
                &r.notify_master,
                &r.notify_backup,
                &r.notify_fault,
                &r.notify_stop,
                &r.notify,
            ],
        );

        if let (Some(ifc), Some(f), Some(id), Some(v)) = (&interface, family, vrid, &r.vrid) {
            let key = (ifc.clone(), f, id as u8);
            if let Some((other, line)) = vrids.get(&key) {
                cx.err(v.span(), format!("vrid {id} on {ifc} ({}) is already used by vrrp_instance \"{other}\" (line {line})", family_name(f)));
            } else {
                let line = cx.line(&v.span());
                vrids.insert(key, (label.clone(), line));
            }
        }

        if let (
            Some(name),
            Some(interface),
            Some(vrid),
            Some(priority),
            Some(version),
            Some(advert_interval),
            Some(preempt_delay),
            Some(garp),
            Some(unicast_src_ip),
            Some(authentication),
            Some(track_scripts),
            Some(notify),
        ) = (
            name,
            interface,
            vrid,
            priority,
            version,
            advert,
            preempt_delay,
            garp,
            unicast_src_ip,
            authentication,
            track_scripts,
            notify,
        ) {
            out.push(VrrpInstance {
                name,
                interface,
                vrid: vrid as u8,
                priority: priority as u8,
                advert_interval,
                version,
                preempt,
                preempt_delay,
                unicast_peers: peers,
                virtual_ipaddresses: addrs,
                track_interfaces: tracks,
                accept,
                garp,
                unicast_src_ip,
                authentication,
                track_scripts,
                notify,
                shutdown_priority_zero,
            });
        }
    }
    out
}

/// keepalived's `garp_*` schedule (keepalived.conf(5) defaults).
fn garp(cx: &mut Ctx<'_>, r: &RawVrrp, owner: &str) -> Option<Garp> {
    let d = Garp::default();
    let mut ok = true;
    let mut dur = |cx: &mut Ctx<'_>, v: &Opt<RawDuration>, key: &str| -> Option<Duration> {
        let got = v.as_ref().map(|v| cx.duration_in(v, key, owner, false));
        ok &= !matches!(got, Some(None));
        got.flatten()
    };
    let master_delay = dur(cx, &r.garp_master_delay, "garp_master_delay");
    // "0s" is keepalived's spelling of "off" (its default, 0).
    let master_refresh =
        dur(cx, &r.garp_master_refresh, "garp_master_refresh").filter(|d| !d.is_zero());
    let lower_prio_delay = dur(cx, &r.garp_lower_prio_delay, "garp_lower_prio_delay");
    let mut count = |cx: &mut Ctx<'_>, v: &Opt<i64>, key: &str, lo: i64| -> Option<u32> {
        let got = v.as_ref().map(|v| cx.int_in(v, key, owner, lo, 255));
        ok &= !matches!(got, Some(None));
        got.flatten().map(|n| n as u32)
    };
    // A master must announce itself at least once: until switches and
    // neighbours hear a gratuitous ARP/NA they keep sending to the old one.
    let master_repeat = count(cx, &r.garp_master_repeat, "garp_master_repeat", 1);
    let master_refresh_repeat = count(
        cx,
        &r.garp_master_refresh_repeat,
        "garp_master_refresh_repeat",
        1,
    );
    let lower_prio_repeat = count(cx, &r.garp_lower_prio_repeat, "garp_lower_prio_repeat", 0);
    if let (Some(v), None) = (&r.garp_master_refresh_repeat, &r.garp_master_refresh) {
        cx.err(
            v.span(),
            format!("garp_master_refresh_repeat in {owner} needs garp_master_refresh (refresh bursts are off by default)"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let master_delay = master_delay.unwrap_or(d.master_delay);
    let master_repeat = master_repeat.unwrap_or(d.master_repeat);
    Some(Garp {
        master_delay,
        master_repeat,
        master_refresh,
        master_refresh_repeat: master_refresh_repeat.unwrap_or(d.master_refresh_repeat),
        // keepalived: the lower-priority answers default to the master
        // schedule.
        lower_prio_delay: lower_prio_delay.unwrap_or(master_delay),
        lower_prio_repeat: lower_prio_repeat.unwrap_or(master_repeat),
    })
}

/// `unicast_src_ip`: `Some(None)` when absent.
fn unicast_src_ip(
    cx: &mut Ctx<'_>,
    r: &RawVrrp,
    family: Option<Family>,
    peers: &[IpAddr],
    label: &str,
    owner: &str,
) -> Option<Option<IpAddr>> {
    let Some(v) = &r.unicast_src_ip else {
        return Some(None);
    };
    let ip = cx.ip(v, "unicast_src_ip")?;
    let no_peers = r
        .unicast_peers
        .as_ref()
        .is_none_or(|p| p.get_ref().is_empty());
    if no_peers {
        cx.err(v.span(), format!("unicast_src_ip needs unicast_peers: {owner} sends multicast adverts, from the interface's primary address"));
        return None;
    }
    if let Some(f) = family {
        if Family::of(&ip) != f {
            cx.err(
                v.span(),
                format!(
                    "unicast_src_ip {ip} is {} but vrrp_instance \"{label}\" is {}",
                    family_name(Family::of(&ip)),
                    family_name(f)
                ),
            );
            return None;
        }
    }
    if peers.contains(&ip) {
        cx.err(
            v.span(),
            format!("unicast_src_ip {ip} is also one of the unicast_peers of {owner}: the source is this box, the peers the others"),
        );
        return None;
    }
    Some(Some(ip))
}

/// VRRPv2 only; the Authentication Data field holds 8 bytes (RFC 2338
/// 5.3.10).
fn authentication(
    cx: &mut Ctx<'_>,
    a: &S<RawAuth>,
    version: Option<u8>,
    owner: &str,
) -> Option<VrrpAuth> {
    let h = a.span();
    let r = a.get_ref();
    if version == Some(3) {
        cx.err(h, format!("authentication is VRRPv2 only (RFC 5798 removed it from VRRPv3), and {owner} is version 3: remove authentication, or set version = 2 to talk to a keepalived peer that uses it"));
        return None;
    }
    let table = format!("authentication of {owner}");
    let kind = cx.require(&r.auth_type, &h, &table, "auth_type")?;
    match kind.get_ref().as_str() {
        "PASS" => {}
        "AH" => {
            cx.err(kind.span(), format!("auth_type \"AH\" (IPsec Authentication Header) in {owner} is not supported: use \"PASS\", or no authentication"));
            return None;
        }
        other => {
            let hint = if other.eq_ignore_ascii_case("pass") || other.eq_ignore_ascii_case("ah") {
                " (uppercase, as keepalived writes it)"
            } else {
                ""
            };
            cx.err(
                kind.span(),
                format!("bad auth_type \"{other}\" in {owner}: expected \"PASS\"{hint}"),
            );
            return None;
        }
    }
    let pass = cx.require(&r.auth_pass, &h, &table, "auth_pass")?;
    let n = pass.get_ref().len();
    if n == 0 {
        cx.err(
            pass.span(),
            format!("auth_pass in {owner} must not be empty"),
        );
        return None;
    }
    if n > 8 {
        cx.err(pass.span(), format!("auth_pass in {owner} is {n} bytes, but VRRPv2 carries at most 8 (keepalived silently uses the first 8; write those)"));
        return None;
    }
    Some(VrrpAuth::Pass {
        auth_pass: Secret::new(pass.get_ref().clone()),
    })
}

/// `track_scripts`: each names a `[[vrrp_script]]`; its weight overrides
/// the script's.
fn track_scripts(
    cx: &mut Ctx<'_>,
    r: &RawVrrp,
    known: &[&str],
    scripts: &[VrrpScript],
    owner: &str,
) -> Option<Vec<TrackScript>> {
    let Some(list) = &r.track_scripts else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: Vec<String> = Vec::new();
    for t in list.get_ref() {
        let th = t.span();
        let tr = t.get_ref();
        let table = format!("track_scripts of {owner}");
        let name = cx
            .require(&tr.name, &th, &table, "name")
            .and_then(|v| cx.nonempty(v, "track_scripts name"));
        let weight = match &tr.weight {
            None => Some(None),
            Some(v) => cx
                .int_in(v, "track_scripts weight", owner, WEIGHT_MIN, WEIGHT_MAX)
                .map(Some),
        };
        let name = match (name, &tr.name) {
            (Some(name), Some(nv)) if !known.contains(&name.as_str()) => {
                cx.err(
                    nv.span(),
                    format!("track_scripts of {owner} names vrrp_script \"{name}\", which does not exist"),
                );
                None
            }
            (Some(name), Some(nv)) if seen.contains(&name) => {
                cx.err(
                    nv.span(),
                    format!("vrrp_script \"{name}\" is tracked twice by {owner}"),
                );
                None
            }
            (Some(name), _) => {
                seen.push(name.clone());
                Some(name)
            }
            (None, _) => None,
        };
        let (Some(name), Some(weight)) = (name, weight) else {
            ok = false;
            continue;
        };
        // A script that failed its own checks has no weight; its error is
        // reported there and the config is refused anyway.
        let default = scripts
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.weight)
            .unwrap_or(0);
        out.push(TrackScript {
            name,
            weight: weight.map(|w| w as i32).unwrap_or(default),
        });
    }
    ok.then_some(out)
}

/// `[[vrrp_script]]` tables.
fn vrrp_scripts(cx: &mut Ctx<'_>, raws: &[S<RawVrrpScript>]) -> Vec<VrrpScript> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for sc in raws {
        let h = sc.span();
        let table = cx.table_name(&h, "vrrp_script");
        let r = sc.get_ref();
        let name = cx.unique_name(&r.name, &h, &table, "vrrp_script", &mut names);
        let owner = format!("vrrp_script \"{}\"", name.clone().unwrap_or_default());
        let script = cx
            .require(&r.script, &h, &table, "script")
            .and_then(|v| cx.argv(v, "script", &owner));
        let interval = match &r.interval {
            None => Some(Duration::from_secs(1)),
            Some(v) => cx.duration_in(v, "interval", &owner, true),
        };
        let timeout = match &r.timeout {
            None => interval,
            Some(v) => cx.duration_in(v, "timeout", &owner, true),
        };
        if let (Some(i), Some(t), Some(tv)) = (interval, timeout, &r.timeout) {
            if t > i {
                cx.err(tv.span(), format!("timeout {} of {owner} is longer than its interval {}: a run must end before the next one starts", humantime::format_duration(t), humantime::format_duration(i)));
            }
        }
        let weight = match &r.weight {
            None => Some(0),
            Some(v) => cx.int_in(v, "weight", &owner, WEIGHT_MIN, WEIGHT_MAX),
        };
        let max = i64::from(u32::MAX);
        let rise = match &r.rise {
            None => Some(1),
            Some(v) => cx.int_in(v, "rise", &owner, 1, max),
        };
        let fall = match &r.fall {
            None => Some(1),
            Some(v) => cx.int_in(v, "fall", &owner, 1, max),
        };
        if let (
            Some(name),
            Some(script),
            Some(interval),
            Some(timeout),
            Some(w),
            Some(rise),
            Some(fall),
        ) = (name, script, interval, timeout, weight, rise, fall)
        {
            out.push(VrrpScript {
                name,
                script,
                interval,
                timeout,
                weight: w as i32,
                rise: rise as u32,
                fall: fall as u32,
            });
        }
    }
    out
}

fn sync_groups(
    cx: &mut Ctx<'_>,
    raws: &[S<RawSyncGroup>],
    instances: &[S<RawVrrp>],
) -> Vec<SyncGroup> {
    let known: Vec<&str> = instances
        .iter()
        .filter_map(|i| i.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut member_of: HashMap<String, (String, usize)> = HashMap::new();
    for g in raws {
        let h = g.span();
        let table = cx.table_name(&h, "sync_group");
        let r = g.get_ref();
        let name = cx.unique_name(&r.name, &h, &table, "sync_group", &mut names);
        let label = name.clone().unwrap_or_default();
        let mut members = Vec::new();
        match cx.require(&r.instances, &h, &table, "instances") {
            Some(list) if list.get_ref().is_empty() => {
                cx.err(list.span(), "instances must not be empty")
            }
            Some(list) => {
                for v in list.get_ref() {
                    let i = v.get_ref();
                    if !known.contains(&i.as_str()) {
                        cx.err(v.span(), format!("sync_group \"{label}\" names vrrp_instance \"{i}\", which does not exist"));
                        continue;
                    }
                    if let Some((other, line)) = member_of.get(i) {
                        cx.err(v.span(), format!("vrrp_instance \"{i}\" is already in sync_group \"{other}\" (line {line}); an instance can be in one group only"));
                        continue;
                    }
                    let line = cx.line(&v.span());
                    member_of.insert(i.clone(), (label.clone(), line));
                    members.push(i.clone());
                }
            }
            None => {}
        }
        let notify = cx.notify(
            &format!("sync_group \"{label}\""),
            [
                &r.notify_master,
                &r.notify_backup,
                &r.notify_fault,
                &r.notify_stop,
                &r.notify,
            ],
        );
        if let (Some(name), Some(notify)) = (name, notify) {
            out.push(SyncGroup {
                name,
                instances: members,
                notify,
            });
        }
    }
    out
}

/// No tracking weights on the members of a sync group (of two or more).
///
/// A weight moves the priority of one member; the members' VRIDs are
/// elected one by one on the wire, so the peer wins that member alone, its
/// group drags its other members to master, ours drags ours to backup, and
/// our higher-priority members preempt them back: the whole group flaps
/// between the boxes every few adverts (seen in the netns tests, and why
/// keepalived ignores such weights unless told `sync_group_tracking_weight`,
/// "this probably WON'T WORK"). A weight of 0 faults the member, and with
/// it the group (crate::vrrp_host and vrrp::group): the peer takes over
/// every member at once.
fn sync_group_weights(
    cx: &mut Ctx<'_>,
    groups: &[SyncGroup],
    instances: &[S<RawVrrp>],
    scripts: &[S<RawVrrpScript>],
) {
    let named = |v: &Opt<String>, want: &str| v.as_ref().is_some_and(|n| n.get_ref() == want);
    for g in groups.iter().filter(|g| g.instances.len() > 1) {
        let why = format!("a member of sync_group \"{}\": a weight moves one member's priority alone and the group then flaps between the boxes (keepalived ignores such weights); use weight 0 (the default), so that a failure faults the whole group and the peer takes over every member", g.name);
        for member in &g.instances {
            let Some(inst) = instances.iter().find(|i| named(&i.get_ref().name, member)) else {
                continue;
            };
            let r = inst.get_ref();
            for t in r.track_interfaces.iter().flat_map(|l| l.get_ref()) {
                let t = t.get_ref();
                if let Some(w) = t.weight.as_ref().filter(|w| *w.get_ref() != 0) {
                    let name = t.name.as_ref().map(|n| n.get_ref().as_str()).unwrap_or("");
                    cx.err(w.span(), format!("weight {} of track_interfaces \"{name}\" in vrrp_instance \"{member}\", {why}", w.get_ref()));
                }
            }
            for t in r.track_scripts.iter().flat_map(|l| l.get_ref()) {
                let t = t.get_ref();
                let Some(name) = &t.name else { continue };
                let script = name.get_ref();
                match &t.weight {
                    Some(w) if *w.get_ref() != 0 => {
                        cx.err(w.span(), format!("weight {} of track_scripts \"{script}\" in vrrp_instance \"{member}\", {why}", w.get_ref()));
                    }
                    Some(_) => {}
                    None => {
                        let default = scripts
                            .iter()
                            .find(|s| named(&s.get_ref().name, script))
                            .and_then(|s| s.get_ref().weight.as_ref())
                            .filter(|w| *w.get_ref() != 0);
                        if let Some(w) = default {
                            let line = cx.line(&w.span());
                            cx.err(name.span(), format!("vrrp_script \"{script}\" has weight {} (line {line}), tracked by vrrp_instance \"{member}\", {why}; or give it weight = 0 here", w.get_ref()));
                        }
                    }
                }
            }
        }
    }
}

fn tunnel(cx: &mut Ctx<'_>, t: &S<RawTunnel>) -> Option<Tunnel> {
    let h = t.span();
    let r = t.get_ref();
    let kind = match &r.kind {
        None => Some(TunnelType::Ipip),
        Some(v) => cx
            .choice(v, "tunnel type", TUNNEL_TYPES)
            .map(|i| [TunnelType::Ipip, TunnelType::Gue, TunnelType::Gre][i]),
    };
    let csum = match &r.csum {
        None => Some(TunnelCsum::NoCsum),
        Some(v) => cx
            .choice(v, "tunnel csum", TUNNEL_CSUMS)
            .map(|i| [TunnelCsum::NoCsum, TunnelCsum::Csum, TunnelCsum::RemCsum][i]),
    };
    let port = match (kind, &r.port) {
        (Some(TunnelType::Gue), None) => {
            cx.err(
                h,
                "tunnel type \"gue\" needs a port (the UDP port of the GUE receiver)",
            );
            None
        }
        (Some(TunnelType::Gue), Some(v)) => cx.int(v, "tunnel port", 1, 65535).map(|p| p as u16),
        (Some(k), Some(v)) => {
            let k = TUNNEL_TYPES[k.code() as usize];
            cx.err(
                v.span(),
                format!("tunnel port is only for type \"gue\", not \"{k}\""),
            );
            None
        }
        (_, _) => Some(0),
    };
    Some(Tunnel {
        kind: kind?,
        port: port?,
        csum: csum?,
    })
}

/// `health` of a virtual server or a real server: one table or an array of
/// them. `None` if any check is bad (errors recorded).
fn health_list(
    cx: &mut Ctx<'_>,
    hl: &S<RawHealthList>,
    path: &str,
    owner: &str,
) -> Option<Vec<HealthSpec>> {
    match hl.get_ref() {
        RawHealthList::One(h) => Some(vec![health(cx, h, hl.span(), path, owner)?]),
        RawHealthList::Many(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for h in items {
                match health(cx, h.get_ref(), h.span(), path, owner) {
                    Some(spec) => out.push(spec),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    }
}

fn health(
    cx: &mut Ctx<'_>,
    r: &RawHealth,
    h: Range<usize>,
    path: &str,
    owner: &str,
) -> Option<HealthSpec> {
    let table = cx.table_name(&h, path);
    let kind = cx
        .require(&r.kind, &h, &table, "kind")
        .and_then(|v| cx.choice(v, "health kind", HEALTH_KINDS));
    let positive =
        |cx: &mut Ctx<'_>, v: &Opt<RawDuration>, key: &str, default: u64| -> Option<Duration> {
            match v {
                None => Some(Duration::from_secs(default)),
                Some(v) => {
                    let d = cx.duration(v, key)?;
                    if d.is_zero() {
                        cx.err(v.span(), format!("{key} must be greater than 0"));
                        return None;
                    }
                    Some(d)
                }
            }
        };
    let interval = positive(cx, &r.interval, "health interval", 2);
    let timeout = positive(cx, &r.timeout, "health timeout", 1);
    if let (Some(i), Some(t)) = (interval, timeout) {
        if t > i {
            let span = r.timeout.as_ref().map(|v| v.span()).unwrap_or(h.clone());
            cx.err(span, format!("health timeout {} is longer than interval {}: a check must finish before the next one starts", humantime::format_duration(t), humantime::format_duration(i)));
        }
    }
    let max = i64::from(u32::MAX);
    let rise = match &r.rise {
        None => Some(2),
        Some(v) => cx.int(v, "health rise", 1, max),
    };
    let fall = match &r.fall {
        None => Some(3),
        Some(v) => cx.int(v, "health fall", 1, max),
    };
    let port = match &r.port {
        None => Some(None),
        Some(v) => cx.int(v, "health port", 1, 65535).map(|p| Some(p as u16)),
    };
    let address = match &r.address {
        None => Some(None),
        Some(v) => cx.ip(v, "health address").map(Some),
    };

    // Keys that belong to other kinds are mistakes, not options to ignore:
    // `path` on a tcp check means the operator thinks it checks HTTP.
    let kind_name = kind.map(|i| HEALTH_KINDS[i]);
    let http_keys: [(&str, Option<Range<usize>>); 6] = [
        ("method", r.method.as_ref().map(|v| v.span())),
        ("path", r.path.as_ref().map(|v| v.span())),
        ("host", r.host.as_ref().map(|v| v.span())),
        ("expect_status", r.expect_status.as_ref().map(|v| v.span())),
        ("body_regex", r.body_regex.as_ref().map(|v| v.span())),
        ("digest", r.digest.as_ref().map(|v| v.span())),
    ];
    let tls_keys: [(&str, Option<Range<usize>>); 3] = [
        ("sni", r.sni.as_ref().map(|v| v.span())),
        ("verify", r.verify.as_ref().map(|v| v.span())),
        ("ca_file", r.ca_file.as_ref().map(|v| v.span())),
    ];
    let mut misplaced = |keys: &[(&str, Option<Range<usize>>)], for_kinds: &str| {
        for (key, span) in keys {
            if let (Some(span), Some(k)) = (span, kind_name) {
                cx.err(
                    span.clone(),
                    format!("{key} applies to {for_kinds} checks only, not \"{k}\""),
                );
            }
        }
    };
    match kind_name {
        Some("http") => misplaced(&tls_keys, "https"),
        Some("https") => {}
        _ => {
            misplaced(&http_keys, "http and https");
            misplaced(&tls_keys, "https");
        }
    }
    if let (Some(v), Some(k)) = (&r.command, kind_name) {
        if k != "script" {
            cx.err(
                v.span(),
                format!("command applies to script checks only, not \"{k}\""),
            );
        }
    }

    let probe = match kind_name? {
        "tcp" => Some(healthcheck::Probe::Tcp),
        "script" => cx
            .require(&r.command, &h, &table, "command")
            .and_then(|v| cx.argv(v, "command", owner))
            .map(|argv| healthcheck::Probe::Script(healthcheck::ScriptProbe { argv })),
        kind => {
            let http = http_probe(cx, r);
            if kind == "http" {
                http.map(healthcheck::Probe::Http)
            } else {
                let tls = healthcheck::TlsProbe {
                    sni: r.sni.as_ref().map(|v| v.get_ref().clone()),
                    verify: r.verify.as_ref().is_some_and(|v| *v.get_ref()),
                    ca_file: r.ca_file.as_ref().map(|v| PathBuf::from(v.get_ref())),
                };
                if let (Some(v), false) = (&r.ca_file, tls.verify) {
                    cx.err(v.span(), "ca_file is only used with verify = true");
                }
                http.map(|http| healthcheck::Probe::Https { http, tls })
            }
        }
    };
    let spec = HealthSpec {
        probe: probe?,
        interval: interval?,
        timeout: timeout?,
        rise: rise? as u32,
        fall: fall? as u32,
        port: port?,
        address: address?,
    };
    // What only building the check finds (a regex that does not compile,
    // an unreadable ca_file, a bad server name), at the key that caused it.
    let probe_target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 1);
    if let Err(e) = healthcheck::Prepared::new(spec.check_for(probe_target.ip(), 1)) {
        let span = match &e {
            healthcheck::SpecError::Regex { .. } => r.body_regex.as_ref().map(|v| v.span()),
            healthcheck::SpecError::CaFile { .. } | healthcheck::SpecError::Tls(_) => {
                r.ca_file.as_ref().map(|v| v.span())
            }
            healthcheck::SpecError::ServerName(_) => {
                r.sni.as_ref().or(r.host.as_ref()).map(|v| v.span())
            }
            healthcheck::SpecError::Method(_) => r.method.as_ref().map(|v| v.span()),
            healthcheck::SpecError::Path(_) => r.path.as_ref().map(|v| v.span()),
            healthcheck::SpecError::Host(_) => r.host.as_ref().map(|v| v.span()),
            _ => None,
        };
        cx.err(span.unwrap_or(h), format!("health check: {e}"));
        return None;
    }
    Some(spec)
}

/// The HTTP part of an http/https check, with keepalived's defaults
/// (`GET /`, any 2xx).
fn http_probe(cx: &mut Ctx<'_>, r: &RawHealth) -> Option<healthcheck::HttpProbe> {
    let mut ok = true;
    let mut expect_status = Vec::new();
    match &r.expect_status {
        None => expect_status.push(healthcheck::StatusRange {
            low: 200,
            high: 299,
        }),
        Some(list) => {
            if list.get_ref().is_empty() {
                cx.err(list.span(), "expect_status must not be empty");
                ok = false;
            }
            for item in list.get_ref() {
                let text = match item.get_ref() {
                    StrOrInt::Str(s) => s.clone(),
                    StrOrInt::Int(i) => i.to_string(),
                };
                match healthcheck::StatusRange::parse(&text) {
                    Some(range) => expect_status.push(range),
                    None => {
                        cx.err(item.span(), format!("bad expect_status \"{text}\": expected a status code 100-599 or a range like \"200-399\""));
                        ok = false;
                    }
                }
            }
        }
    }
    let body = match (&r.body_regex, &r.digest) {
        (Some(re), Some(d)) => {
            cx.err(d.span(), "use body_regex or digest, not both");
            let _ = re;
            ok = false;
            None
        }
        (Some(re), None) => Some(healthcheck::BodyMatch::Regex(re.get_ref().clone())),
        (None, Some(d)) => match healthcheck::BodyMatch::digest_from_hex(d.get_ref()) {
            Some(m) => Some(m),
            None => {
                cx.err(d.span(), format!("bad digest \"{}\": expected 32 hex digits (MD5, as keepalived's genhash prints) or 64 (SHA-256)", d.get_ref()));
                ok = false;
                None
            }
        },
        (None, None) => None,
    };
    ok.then(|| healthcheck::HttpProbe {
        method: r
            .method
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_else(|| "GET".into()),
        path: r
            .path
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_else(|| "/".into()),
        host: r.host.as_ref().map(|v| v.get_ref().clone()),
        expect_status,
        body,
    })
}

/// Schedulers the nftables dataplane compiles (`crate::nft`): rr and wrr
/// by `numgen`, sh and mh (Maglev) by `jhash` of the client address.
pub const NFTABLES_SCHEDULERS: &[&str] = &["rr", "wrr", "sh", "mh"];

/// What the nftables dataplane cannot express, each at its key. IPVS
/// features with no nftables equivalent are refused rather than silently
/// approximated: an operator moving a keepalived config over must learn
/// that `wlc` is not least-connection here.
/// What IPVS cannot do that the config can say.
fn ipvs_limits(cx: &mut Ctx<'_>, raws: &[S<RawVirtualServer>]) {
    for vs in raws {
        let r = vs.get_ref();
        // On IPVS the connections of a failed real server follow from how
        // it leaves, not from a separate choice: IPVS has no netlink
        // command to delete connection entries, and
        // net.ipv4.vs.expire_nodest_conn (one switch for the whole
        // kernel, which the director sets to 1) expires those of a removed
        // destination and only those: a weight-0 one is still available
        // (ipvs-sysctl.rst; ip_vs_core.c checks IP_VS_DEST_F_AVAILABLE).
        // So remove = reset and inhibit = keep; the crossed pairs are
        // promises IPVS cannot keep.
        let on_down = r.on_down.as_ref().map(|v| v.get_ref().as_str());
        let Some(conns) = r.on_down_connections.as_ref() else {
            continue;
        };
        match (on_down.unwrap_or("remove"), conns.get_ref().as_str()) {
            ("inhibit", "reset") => cx.err(
                conns.span(),
                "on_down_connections = \"reset\" with on_down = \"inhibit\" is not possible on the IPVS dataplane: IPVS expires a failed real server's connections only when the server is removed (net.ipv4.vs.expire_nodest_conn), not at weight 0; use on_down = \"remove\", or on_down_connections = \"keep\"",
            ),
            ("remove", "keep") => cx.err(
                conns.span(),
                "on_down_connections = \"keep\" with on_down = \"remove\" is not possible on the IPVS dataplane: the kernel expires the connections of a removed real server (net.ipv4.vs.expire_nodest_conn = 1, which the director sets for every service; without it their packets would be dropped until they time out); use on_down = \"inhibit\" to keep them at weight 0",
            ),
            _ => {}
        }
    }
}

fn nftables_limits(cx: &mut Ctx<'_>, raws: &[S<RawVirtualServer>]) {
    const WHY: &str = "on the nftables dataplane";
    const HINT: &str = "use dataplane = \"ipvs\" on a kernel with IPVS";
    for vs in raws {
        let r = vs.get_ref();
        match &r.scheduler {
            Some(s) => {
                let name = s.get_ref();
                let well_formed = !name.is_empty() && name.len() <= 15;
                if well_formed && !NFTABLES_SCHEDULERS.contains(&name.as_str()) {
                    cx.err(s.span(), format!("scheduler \"{name}\" is not available {WHY} (it has rr, wrr, sh, mh); {HINT}"));
                }
            }
            None => {
                let h = vs.span();
                let at = cx.table_name(&h, "virtual_server");
                cx.err(h, format!("{at}: the default scheduler wlc is not available {WHY}; set scheduler = \"rr\", \"wrr\", \"sh\" or \"mh\""));
            }
        }
        if let Some(flags) = &r.scheduler_flags {
            for f in flags.get_ref() {
                let flag = f.get_ref();
                if !matches!(
                    flag.as_str(),
                    "sh-port" | "mh-port" | "sh-fallback" | "mh-fallback"
                ) {
                    cx.err(f.span(), format!("scheduler flag \"{flag}\" has no meaning {WHY} (it has sh-port, mh-port, sh-fallback, mh-fallback)"));
                }
            }
        }
        if let Some(a) = &r.address {
            if parse_sockaddr(a.get_ref()).is_ok_and(|s| s.port() == 0) {
                cx.err(a.span(), format!("port 0 (all ports) services are not available {WHY} (a service there is one address, protocol and port); {HINT}"));
            }
        }
        if let Some(e) = &r.persistence_engine {
            cx.err(e.span(), format!("persistence_engine is not available {WHY} (persistence there is by client address only); {HINT}"));
        }
        if let Some(v) = &r.one_packet {
            if *v.get_ref() {
                cx.err(
                    v.span(),
                    format!("one_packet is not available {WHY}; {HINT}"),
                );
            }
        }
        if let Some(f) = &r.forwarding {
            if f.get_ref() != "nat" {
                cx.err(f.span(), format!("forwarding \"{}\" is not available {WHY} (it forwards by NAT only); {HINT}", f.get_ref()));
            }
        }
        if let Some(t) = &r.tunnel {
            cx.err(
                t.span(),
                format!("tunnel is not available {WHY} (it forwards by NAT only); {HINT}"),
            );
        }
        for rs in r.real_server.as_deref().unwrap_or(&[]) {
            let rs = rs.get_ref();
            if let Some(f) = &rs.forwarding {
                if f.get_ref() != "nat" {
                    cx.err(f.span(), format!("forwarding \"{}\" is not available {WHY} (it forwards by NAT only); {HINT}", f.get_ref()));
                }
            }
            if let Some(t) = &rs.tunnel {
                cx.err(
                    t.span(),
                    format!("tunnel is not available {WHY} (it forwards by NAT only); {HINT}"),
                );
            }
            for th in [&rs.upper_threshold, &rs.lower_threshold]
                .into_iter()
                .flatten()
            {
                if *th.get_ref() != 0 {
                    cx.err(th.span(), format!("connection thresholds are not available {WHY} (nftables does not count connections per real server while scheduling); {HINT}"));
                }
            }
        }
    }
}

fn virtual_servers(cx: &mut Ctx<'_>, raws: &[S<RawVirtualServer>]) -> Vec<VirtualServer> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<ServiceKey, (String, usize)> = HashMap::new();
    for vs in raws {
        if let Some(v) = virtual_server(cx, vs, &mut names, &mut keys) {
            out.push(v);
        }
    }
    out
}

fn virtual_server(
    cx: &mut Ctx<'_>,
    vs: &S<RawVirtualServer>,
    names: &mut HashMap<String, usize>,
    keys: &mut HashMap<ServiceKey, (String, usize)>,
) -> Option<VirtualServer> {
    let h = vs.span();
    let table = cx.table_name(&h, "virtual_server");
    let r = vs.get_ref();
    let name = cx.unique_name(&r.name, &h, &table, "virtual server", names);
    let label = name.clone().unwrap_or_default();

    // The key: address + protocol, or fwmark + family.
    let key: Option<ServiceKey> = match (&r.address, &r.fwmark) {
        (Some(_), Some(m)) => {
            cx.err(m.span(), "address and fwmark are exclusive: a virtual server is either an address (with protocol) or a firewall mark (with family)");
            None
        }
        (None, None) => {
            cx.err(
                h.clone(),
                format!("virtual server \"{label}\" needs either address (\"ip:port\") or fwmark"),
            );
            None
        }
        (Some(a), None) => {
            if let Some(f) = &r.family {
                cx.err(
                    f.span(),
                    "family is only for fwmark services (an address has its own family)",
                );
            }
            let protocol = match &r.protocol {
                None => Some(Protocol::Tcp),
                Some(p) => cx
                    .choice(p, "protocol", PROTOCOLS)
                    .map(|i| [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i]),
            };
            let addr = cx.sockaddr(a, "address");
            match (protocol, addr) {
                (Some(protocol), Some(addr)) => Some(ServiceKey::Inet { protocol, addr }),
                _ => None,
            }
        }
        (None, Some(m)) => {
            if let Some(p) = &r.protocol {
                cx.err(p.span(), "protocol is only for address services (a fwmark service takes whatever the mark selects)");
            }
            let family = match &r.family {
                None => Some(Family::V4),
                Some(f) => cx
                    .choice(f, "family", FAMILIES)
                    .map(|i| [Family::V4, Family::V6][i]),
            };
            let mark = cx.int(m, "fwmark", 1, i64::from(u32::MAX));
            match (family, mark) {
                (Some(family), Some(mark)) => Some(ServiceKey::Fwmark {
                    family,
                    mark: mark as u32,
                }),
                _ => None,
            }
        }
    };
    if let Some(k) = &key {
        let span = r
            .address
            .as_ref()
            .map(|a| a.span())
            .or_else(|| r.fwmark.as_ref().map(|m| m.span()))
            .unwrap_or(h.clone());
        if let Some((other, line)) = keys.get(k) {
            cx.err(span, format!("virtual server \"{label}\" duplicates {k} of virtual server \"{other}\" (line {line})"));
        } else {
            let line = cx.line(&h);
            keys.insert(*k, (label.clone(), line));
        }
    }
    let family = key.map(|k| k.family());
    // Port of the service; fwmark services behave like port 0 ("any").
    let vport = key.map(|k| match k {
        ServiceKey::Inet { addr, .. } => addr.port(),
        ServiceKey::Fwmark { .. } => 0,
    });

    // Scheduler: any IPVS module name (ip_vs_<name>), so custom schedulers
    // work; IP_VS_SCHEDNAME_MAXLEN is 16 including the NUL.
    let scheduler = match &r.scheduler {
        None => Some("wlc".to_string()),
        Some(v) => {
            let s = v.get_ref();
            if !s.is_empty()
                && s.len() <= 15
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                Some(s.clone())
            } else {
                cx.err(v.span(), format!("bad scheduler \"{s}\": expected an IPVS scheduler name of 1 to 15 characters a-z, 0-9, _ (rr, wrr, lc, wlc, sh, dh, mh, ...)"));
                None
            }
        }
    };
    let mut flags = 0u32;
    if let Some(list) = &r.scheduler_flags {
        let mut seen: Vec<&str> = Vec::new();
        for v in list.get_ref() {
            let Some(i) = cx.choice(v, "scheduler flag", SCHED_FLAGS) else {
                continue;
            };
            let f = SCHED_FLAGS[i];
            if seen.contains(&f) {
                cx.err(v.span(), format!("duplicate scheduler flag \"{f}\""));
                continue;
            }
            seen.push(f);
            for prefix in ["sh", "mh"] {
                if f.starts_with(prefix) && f.as_bytes()[2] == b'-' {
                    if let Some(s) = &scheduler {
                        if s != prefix {
                            cx.err(v.span(), format!("scheduler flag \"{f}\" is only for scheduler \"{prefix}\", not \"{s}\""));
                        }
                    }
                }
            }
            flags |= match f {
                "sh-fallback" | "mh-fallback" | "flag-1" => svc_flags::SCHED1,
                "sh-port" | "mh-port" | "flag-2" => svc_flags::SCHED2,
                _ => svc_flags::SCHED3,
            };
        }
    }

    let persistence_timeout = r
        .persistence_timeout
        .as_ref()
        .map(|v| cx.whole_secs(v, "persistence_timeout", 1, u64::from(u32::MAX)));
    let netmask: Option<u32> = match (&r.persistence_granularity, family) {
        (None, Some(f)) => Some(crate::model::default_netmask(f)),
        (None, None) => None,
        (Some(g), _) if r.persistence_timeout.is_none() => {
            cx.err(
                g.span(),
                "persistence_granularity needs persistence_timeout",
            );
            None
        }
        (Some(_), None) => None,
        (Some(g), Some(f)) => granularity(cx, g, f),
    };
    if let Some(e) = &r.persistence_engine {
        if r.persistence_timeout.is_none() {
            cx.err(e.span(), "persistence_engine needs persistence_timeout");
        } else {
            cx.nonempty(e, "persistence_engine");
        }
    }
    let persistence = match (persistence_timeout, netmask) {
        (Some(Some(t)), Some(m)) => Some(Persistence {
            timeout: Duration::from_secs(u64::from(t)),
            netmask: m,
        }),
        _ => None,
    };
    // A port-0 service only matches traffic when persistent: the kernel
    // looks port-0 services up only for persistent ones (nullsvc_counter),
    // and ipvsadm refuses "Zero port specified for non-persistent service".
    if let (Some(ServiceKey::Inet { .. }), Some(0), None) = (key, vport, &r.persistence_timeout) {
        if let Some(a) = &r.address {
            cx.err(a.span(), "port 0 (all ports) needs persistence_timeout: IPVS matches port-0 services only for persistent connections");
        }
    }

    let one_packet = r.one_packet.as_ref().map(|v| *v.get_ref()).unwrap_or(false);
    if let (true, Some(ServiceKey::Inet { protocol, .. })) = (one_packet, key) {
        if protocol != Protocol::Udp {
            let span = r.one_packet.as_ref().map(|v| v.span()).unwrap_or(h.clone());
            cx.err(span, format!("one_packet is only for UDP services (the kernel applies one-packet scheduling to UDP only), not {}", protocol_word(protocol)));
        }
    }

    // Maglev (NSDI 2016, section 3.4): the table size must be prime so every
    // backend's permutation visits every slot; >= 100 x backends keeps each
    // share within 1%.
    let maglev_table_size = match &r.maglev_table_size {
        None => Some(crate::maglev::DEFAULT_TABLE_SIZE),
        Some(v) => cx
            .int(v, "maglev_table_size", 2, i64::from(crate::maglev::MAX_TABLE_SIZE))
            .and_then(|n| {
                let n = u32::try_from(n).ok()?;
                if crate::maglev::is_prime(n) {
                    Some(n)
                } else {
                    cx.err(v.span(), format!("maglev_table_size {n} is not prime (a prime size makes every backend's permutation visit every slot; the default is {})", crate::maglev::DEFAULT_TABLE_SIZE));
                    None
                }
            }),
    };

    let forwarding = match &r.forwarding {
        None => Some(Forward::Masq),
        Some(v) => cx.choice(v, "forwarding", FORWARDINGS).map(forward_of),
    };
    let vs_tunnel = match &r.tunnel {
        None => Some(None),
        Some(t) => {
            if forwarding.is_some() && forwarding != Some(Forward::Tunnel) {
                cx.err(
                    t.span(),
                    format!(
                        "tunnel is only for forwarding = \"tun\", not \"{}\"",
                        forward_word(forwarding.unwrap_or(Forward::Masq))
                    ),
                );
                None
            } else {
                tunnel(cx, t).map(Some)
            }
        }
    };
    let vs_owner = format!("virtual server \"{label}\"");
    let health = match &r.health {
        None => Some(Vec::new()),
        Some(hl) => health_list(
            cx,
            hl,
            "virtual_server.health",
            &format!("health of {vs_owner}"),
        ),
    };
    let on_down = match &r.on_down {
        None => Some(OnDown::Remove),
        Some(v) => cx
            .choice(v, "on_down", &["remove", "inhibit"])
            .map(|i| [OnDown::Remove, OnDown::Inhibit][i]),
    };
    // Removing a server promises its clients nothing, so their
    // connections are reset at once; inhibiting (weight 0) is the gentle
    // mode, so they are kept (keepalived's inhibit_on_failure semantics).
    let on_down_connections = match (&r.on_down_connections, on_down) {
        (None, Some(OnDown::Inhibit)) => Some(OnDownConnections::Keep),
        (None, _) => Some(OnDownConnections::Reset),
        (Some(v), _) => cx
            .choice(v, "on_down_connections", &["reset", "keep"])
            .map(|i| [OnDownConnections::Reset, OnDownConnections::Keep][i]),
    };
    let quorum = match &r.quorum {
        None => Some(1),
        Some(v) => cx.int(v, "quorum", 1, 65535),
    };
    let sorry_server = match &r.sorry_server {
        None => Some(None),
        Some(v) => cx.sockaddr(v, "sorry_server").map(Some),
    };
    let drain_timeout = match &r.drain_timeout {
        None => Some(Duration::from_secs(300)),
        Some(v) => cx.duration(v, "drain_timeout"),
    };

    // Real servers.
    let mut reals = Vec::new();
    let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut ok = true;
    let mut reported_port0 = false;
    for rs in r.real_server.as_deref().unwrap_or(&[]) {
        let rh = rs.span();
        let rtable = cx.table_name(&rh, "real_server");
        let rr = rs.get_ref();
        let addr = cx
            .require(&rr.address, &rh, &rtable, "address")
            .and_then(|a| cx.sockaddr(a, "address"));
        let weight = match &rr.weight {
            None => Some(1),
            Some(v) => cx.int(v, "weight", 0, 65535),
        };
        let fwd = match &rr.forwarding {
            None => forwarding,
            Some(v) => cx.choice(v, "forwarding", FORWARDINGS).map(forward_of),
        };
        let rtunnel = match (&rr.tunnel, fwd) {
            (Some(t), Some(f)) if f != Forward::Tunnel => {
                cx.err(
                    t.span(),
                    format!(
                        "tunnel is only for forwarding = \"tun\", not \"{}\"",
                        forward_word(f)
                    ),
                );
                None
            }
            (Some(t), _) => tunnel(cx, t),
            (None, Some(Forward::Tunnel)) => vs_tunnel.map(|t| t.unwrap_or_default()),
            (None, _) => Some(Tunnel::default()),
        };
        let max = i64::from(u32::MAX);
        let upper = match &rr.upper_threshold {
            None => Some(0),
            Some(v) => cx.int(v, "upper_threshold", 0, max),
        };
        let lower = match &rr.lower_threshold {
            None => Some(0),
            Some(v) => cx.int(v, "lower_threshold", 0, max),
        };
        if let (Some(u), Some(l), Some(lv)) = (upper, lower, &rr.lower_threshold) {
            if u != 0 && l > u {
                cx.err(
                    lv.span(),
                    format!("lower_threshold {l} is above upper_threshold {u}"),
                );
            }
        }
        if let (Some(a), Some(av)) = (addr, &rr.address) {
            let span = av.span();
            if let Some(line) = seen.get(&(a.ip(), a.port())) {
                cx.err(span.clone(), format!("duplicate real server {a} in virtual server \"{label}\" (first at line {line})"));
            } else {
                let line = cx.line(&span);
                seen.insert((a.ip(), a.port()), line);
            }
            let rf = Family::of(&a.ip());
            if let Some(vf) = family {
                // The kernel supports mixed families only for tunnelling
                // (IPv6 real servers behind an IPv4 VIP and vice versa).
                if rf != vf && fwd != Some(Forward::Tunnel) {
                    cx.err(
                        span.clone(),
                        format!(
                            "real server {} is {} but virtual server \"{label}\" is {}",
                            a.ip(),
                            family_name(rf),
                            family_name(vf)
                        ),
                    );
                }
            }
            if let (Some(f @ (Forward::Route | Forward::Tunnel)), Some(vp)) = (fwd, vport) {
                if vp != 0 && a.port() != vp {
                    cx.err(span.clone(), format!("real server {a} uses {} forwarding, which cannot change the destination port: its port must be {vp} like virtual server \"{label}\" (ipvsadm would silently use {vp})", forward_word(f)));
                }
            }
        }
        let rs_health = match &rr.health {
            None => Some(None),
            Some(hl) => {
                let owner = match addr {
                    Some(a) => format!("health of real server {a} in {vs_owner}"),
                    None => format!("health of a real server in {vs_owner}"),
                };
                health_list(cx, hl, "virtual_server.real_server.health", &owner).map(Some)
            }
        };
        // A port-0 real server has nothing to connect to unless the check
        // names a port (keepalived's connect_port); scripts need none.
        if let (Some(a), Some(rs_checks)) = (addr, &rs_health) {
            let (checks, span) = match (rs_checks, &rr.health, &health, &r.health) {
                (Some(own), Some(hv), _, _) => (own.as_slice(), hv.span()),
                (None, _, Some(vs_checks), Some(hv)) => (vs_checks.as_slice(), hv.span()),
                _ => (&[][..], 0..0),
            };
            let portless = checks
                .iter()
                .any(|c| c.port.is_none() && !matches!(c.probe, healthcheck::Probe::Script(_)));
            if a.port() == 0 && portless && !reported_port0 {
                reported_port0 = true;
                cx.err(
                    span,
                    format!("health of virtual server \"{label}\" needs a port: real server {a} has port 0, so there is no port to check"),
                );
            }
        }
        match (addr, weight, fwd, rtunnel, upper, lower, rs_health) {
            (Some(a), Some(w), Some(f), Some(t), Some(u), Some(l), Some(h)) => {
                reals.push(RealServer {
                    address: a.ip(),
                    port: a.port(),
                    weight: w as i32,
                    forwarding: f,
                    tunnel: t,
                    upper_threshold: u as u32,
                    lower_threshold: l as u32,
                    health: h,
                })
            }
            _ => ok = false,
        }
    }

    if let (Some(q), Some(qv)) = (quorum, &r.quorum) {
        if q as usize > reals.len() && ok {
            cx.err(
                qv.span(),
                format!(
                    "quorum {q} of virtual server \"{label}\" can never be met: it has {} real servers",
                    reals.len()
                ),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(VirtualServer {
        name: name?,
        key: key?,
        scheduler: scheduler?,
        scheduler_flags: flags,
        persistence,
        persistence_engine: r.persistence_engine.as_ref().map(|e| e.get_ref().clone()),
        one_packet,
        maglev_table_size: maglev_table_size?,
        forwarding: forwarding?,
        health: health?,
        on_down: on_down?,
        on_down_connections: on_down_connections?,
        quorum: quorum? as u32,
        sorry_server: sorry_server?,
        drain_timeout: drain_timeout?,
        real_servers: reals,
    })
}

/// `persistence_granularity`: an IPv4 netmask (contiguous, dotted quad) or
/// an IPv6 prefix length (`64` or `"/64"`).
fn granularity(cx: &mut Ctx<'_>, g: &S<StrOrInt>, f: Family) -> Option<u32> {
    match (f, g.get_ref()) {
        (Family::V4, StrOrInt::Str(s)) => {
            let Ok(m) = s.parse::<Ipv4Addr>() else {
                cx.err(g.span(), format!("bad persistence_granularity \"{s}\": expected an IPv4 netmask like \"255.255.255.0\""));
                return None;
            };
            let m = u32::from(m);
            // Contiguous: ones then zeros. The kernel would accept any
            // value and AND client addresses with it bit by bit, which is
            // never what was meant.
            if m.leading_ones() + m.trailing_zeros() != 32 {
                cx.err(g.span(), format!("persistence_granularity \"{s}\" is not a contiguous netmask (like \"255.255.255.0\"); the kernel would AND client addresses with it bit by bit"));
                return None;
            }
            if m == 0 {
                cx.err(g.span(), format!("persistence_granularity \"{s}\" would put every client in one group: use at least \"128.0.0.0\""));
                return None;
            }
            Some(m)
        }
        (Family::V4, StrOrInt::Int(n)) => {
            cx.err(g.span(), format!("persistence_granularity {n} for an IPv4 service: write the netmask, e.g. \"255.255.255.0\""));
            None
        }
        (Family::V6, v) => {
            let n: Option<i64> = match v {
                StrOrInt::Int(n) => Some(*n),
                StrOrInt::Str(s) => s.strip_prefix('/').and_then(|d| d.parse().ok()),
            };
            match n {
                Some(n) if (1..=128).contains(&n) => Some(n as u32),
                _ => {
                    let shown = match v {
                        StrOrInt::Int(n) => n.to_string(),
                        StrOrInt::Str(s) => format!("\"{s}\""),
                    };
                    cx.err(g.span(), format!("bad persistence_granularity {shown} for an IPv6 service: expected a prefix length 1..=128, like 64 or \"/64\""));
                    None
                }
            }
        }
    }
}

fn snats(cx: &mut Ctx<'_>, raws: &[S<RawSnat>]) -> Vec<Snat> {
    let mut out = Vec::new();
    for s in raws {
        let h = s.span();
        let table = cx.table_name(&h, "snat");
        let r = s.get_ref();
        let m = cx
            .require(&r.match_vip, &h, &table, "match_vip")
            .and_then(|v| cx.ip(v, "match_vip"));
        let t = cx
            .require(&r.to_source, &h, &table, "to_source")
            .and_then(|v| cx.ip(v, "to_source"));
        if let (Some(m), Some(t)) = (m, t) {
            if Family::of(&m) != Family::of(&t) {
                let span = r.to_source.as_ref().map(|v| v.span()).unwrap_or(h.clone());
                cx.err(
                    span,
                    format!(
                        "to_source {t} is {} but match_vip {m} is {}",
                        family_name(Family::of(&t)),
                        family_name(Family::of(&m))
                    ),
                );
                continue;
            }
            out.push(Snat {
                match_vip: m,
                to_source: t,
            });
        }
    }
    out
}

fn ctsync(
    cx: &mut Ctx<'_>,
    c: &S<RawCtSync>,
    instances: &[VrrpInstance],
    groups: &[SyncGroup],
) -> Option<CtSync> {
    let h = c.span();
    let table = cx.table_name(&h, "ctsync");
    let r = c.get_ref();
    let local = cx
        .require(&r.local, &h, &table, "local")
        .and_then(|v| cx.sockaddr(v, "local"));
    let peer = cx
        .require(&r.peer, &h, &table, "peer")
        .and_then(|v| cx.sockaddr(v, "peer"));
    let key_file = cx
        .require(&r.key_file, &h, &table, "key_file")
        .and_then(|v| cx.nonempty(v, "key_file"));
    let mut ignore = Vec::new();
    let mut ignore_ok = true;
    for v in r
        .ignore
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or(&[])
    {
        match parse_prefix(v.get_ref()) {
            Err(why) => {
                ignore_ok = false;
                cx.err(
                    v.span(),
                    format!("bad prefix \"{}\" for ignore: {why}", v.get_ref()),
                );
            }
            Ok((ip, len)) => match Cidr::new(ip, len) {
                Some(c) if ignore.contains(&c) => {
                    ignore_ok = false;
                    cx.err(v.span(), format!("ignore lists {c} twice"));
                }
                Some(c) => ignore.push(c),
                None => {
                    ignore_ok = false;
                    let net = Cidr {
                        addr: ip,
                        prefix: len,
                    }
                    .network();
                    cx.err(
                        v.span(),
                        format!(
                            "ignore \"{}\" has host bits set: did you mean \"{net}/{len}\"?",
                            v.get_ref()
                        ),
                    );
                }
            },
        }
    }
    // The role follows one instance or sync group; an unknown name would
    // leave the box backup for ever, so it is refused here.
    let mut follow = None;
    let mut follow_ok = true;
    if let Some(f) = &r.follow {
        let name = f.get_ref();
        if instances.iter().any(|i| &i.name == name) || groups.iter().any(|g| &g.name == name) {
            follow = Some(name.clone());
        } else {
            follow_ok = false;
            let known: Vec<&str> = instances
                .iter()
                .map(|i| i.name.as_str())
                .chain(groups.iter().map(|g| g.name.as_str()))
                .collect();
            cx.err(
                f.span(),
                if known.is_empty() {
                    format!("follow \"{name}\": there is no vrrp_instance or sync_group to follow")
                } else {
                    format!(
                        "follow \"{name}\" is not a vrrp_instance or sync_group (known: {})",
                        known.join(", ")
                    )
                },
            );
        }
    }
    if let (Some(l), Some(p), Some(pv)) = (local, peer, &r.peer) {
        if l.ip() == p.ip() {
            cx.err(
                pv.span(),
                format!(
                    "peer {p} is the same host as local {l}: peer is the other box of the pair"
                ),
            );
            return None;
        }
        if Family::of(&l.ip()) != Family::of(&p.ip()) {
            cx.err(
                pv.span(),
                format!(
                    "peer {p} is {} but local {l} is {}",
                    family_name(Family::of(&p.ip())),
                    family_name(Family::of(&l.ip()))
                ),
            );
            return None;
        }
    }
    if !ignore_ok || !follow_ok {
        return None;
    }
    Some(CtSync {
        local: local?,
        peer: peer?,
        key_file: PathBuf::from(key_file?),
        ignore,
        follow,
    })
}

/// `[ctsync] ipvs_sync_interface` / `ipvs_syncid` (see [`IpvsSync`]).
fn ipvs_sync(cx: &mut Ctx<'_>, c: &S<RawCtSync>, dataplane: DataplaneChoice) -> Option<IpvsSync> {
    let r = c.get_ref();
    let syncid = r
        .ipvs_syncid
        .as_ref()
        .and_then(|v| cx.int(v, "ipvs_syncid", 0, 255))
        .map(|n| n as u8);
    let Some(ifv) = &r.ipvs_sync_interface else {
        if let Some(v) = &r.ipvs_syncid {
            cx.err(
                v.span(),
                "ipvs_syncid needs ipvs_sync_interface (the interface the IPVS sync daemons use)",
            );
        }
        return None;
    };
    let name = ifv.get_ref();
    // net/core/dev.c dev_valid_name(): 1..IFNAMSIZ-1 (15) bytes, not "."
    // or "..", no '/', ':' or whitespace; ip_vs.h IP_VS_IFNAME_MAXLEN is
    // the same 16 with the NUL.
    let bad = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes (IFNAMSIZ 16 with the NUL)")
    } else if name == "."
        || name == ".."
        || name.contains(['/', ':', '\0'])
        || name.contains(char::is_whitespace)
    {
        Some("is not a valid interface name (no '/', ':' or whitespace)")
    } else {
        None
    };
    if let Some(why) = bad {
        cx.err(ifv.span(), format!("ipvs_sync_interface \"{name}\" {why}"));
        return None;
    }
    if dataplane == DataplaneChoice::Nftables {
        cx.err(
            ifv.span(),
            "ipvs_sync_interface starts the kernel's IPVS sync daemons, which have nothing to sync on the nftables dataplane (ctsync alone moves the connections there); remove it, or use dataplane = \"ipvs\" (or \"auto\", which ignores it where IPVS is absent)",
        );
        return None;
    }
    Some(IpvsSync {
        interface: name.clone(),
        syncid: syncid.unwrap_or(0),
    })
}
