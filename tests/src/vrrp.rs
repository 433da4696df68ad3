//! Helpers of the VRRP host tests (`tests/vrrp_*.rs`): what a director's
//! `directorctl vrrp --json` says, which addresses a namespace holds, and
//! packet captures with tcpdump inside a namespace.

use crate::netns::{Netns, NsChild};
use crate::{wait_for, Daemon};
use std::time::{Duration, Instant};

/// One `[[vrrp_instance]]` table with 100 ms adverts, `extra` keys last.
pub fn instance_config(
    name: &str,
    dev: &str,
    vrid: u8,
    priority: u8,
    vip: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[[vrrp_instance]]
name = "{name}"
interface = "{dev}"
vrid = {vrid}
priority = {priority}
advert_interval = "100ms"
virtual_ipaddresses = ["{vip}"]
{extra}
"#
    )
}

/// `directorctl vrrp --json` of `d`.
pub fn snapshot(d: &Daemon) -> serde_json::Value {
    let out = d.ctl_ok(&["vrrp", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vrrp --json: {e}: {out}"))
}

/// The `InstanceView` of instance `name` (panics if there is none).
pub fn instance(d: &Daemon, name: &str) -> serde_json::Value {
    let snap = snapshot(d);
    snap["instances"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no instance {name} in {snap:#}"))
}

/// State of instance `name`: "backup", "master", "fault", ...
pub fn state(d: &Daemon, name: &str) -> String {
    instance(d, name)["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One counter of `status.stats` of instance `name`.
pub fn stat(d: &Daemon, name: &str, counter: &str) -> u64 {
    instance(d, name)["status"]["stats"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {counter}"))
}

/// Waits until instance `name` of `d` is in `want`; how long that took.
pub fn wait_state(d: &Daemon, name: &str, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_for(limit, || (state(d, name) == want).then(|| start.elapsed()))
}

/// `ip -o addr show dev DEV` of `ns`: one line per address.
pub fn addresses(ns: &Netns, dev: &str) -> String {
    ns.ip(&["-o", "addr", "show", "dev", dev])
}

/// The `ip -o addr` line of `addr` (`"192.0.2.100/32"`, `"2001:db8::1/128"`)
/// on `dev`, if `ns` holds it. A deleted interface holds nothing.
pub fn addr_line(ns: &Netns, dev: &str, addr: &str) -> Option<String> {
    let out = ns.output("ip", &["-o", "addr", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            words.any(|w| w == "inet" || w == "inet6") && words.next() == Some(addr)
        })
        .map(str::to_owned)
}

pub fn has_addr(ns: &Netns, dev: &str, addr: &str) -> bool {
    addr_line(ns, dev, addr).is_some()
}

/// Waits until `ns` holds (`want`) or does not hold `addr` on `dev`; how
/// long that took.
pub fn wait_addr(
    ns: &Netns,
    dev: &str,
    addr: &str,
    want: bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    wait_for(limit, || {
        (has_addr(ns, dev, addr) == want).then(|| start.elapsed())
    })
}

/// The daemons' logs, for panic messages.
pub fn logs(daemons: &[(&str, &Daemon)]) -> String {
    daemons
        .iter()
        .map(|(label, d)| {
            format!(
                "---- {label} log ----\n{}\n---- {label} vrrp ----\n{}",
                d.log_text(),
                String::from_utf8_lossy(&d.ctl(&["vrrp"]).stdout)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tcpdump -l -n -t -e` in a namespace: every packet matching a filter,
/// one line each (source MAC first), with the time this process read it.
pub struct Capture {
    child: NsChild,
    started: Instant,
    lines: Vec<(Instant, String)>,
}

impl Capture {
    /// Starts tcpdump on `dev` in `ns` with the pcap `filter` and waits until
    /// it listens (so nothing sent after this returns is missed).
    pub fn start(ns: &Netns, dev: &str, filter: &str) -> Capture {
        // -l: line-buffered, -n: no name lookups, -t: no timestamp (the
        // source MAC comes first), -e: link-level header, -p: no
        // promiscuous mode (the bridge floods what we look for anyway).
        let mut args = vec!["-l", "-n", "-t", "-e", "-p", "-i", dev];
        args.extend(filter.split_whitespace());
        let child = ns.spawn("tcpdump", &args);
        let listening = wait_for(Duration::from_secs(10), || {
            child.stderr_text().contains("listening on").then_some(())
        });
        assert!(
            listening.is_some(),
            "tcpdump {args:?} in {} did not start: {}",
            ns.name(),
            child.stderr_text()
        );
        Capture {
            child,
            started: Instant::now(),
            lines: Vec::new(),
        }
    }

    /// When the capture began listening.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Everything captured so far.
    pub fn lines(&mut self) -> &[(Instant, String)] {
        while let Some(l) = self.child.line(Duration::ZERO) {
            self.lines.push((Instant::now(), l));
        }
        &self.lines
    }

    /// The captured lines as text (for panic messages).
    pub fn text(&mut self) -> String {
        self.lines()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a line read after `since` satisfies `pred`; that line.
    pub fn wait_line(
        &mut self,
        since: Instant,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        wait_for(limit, || {
            self.lines()
                .iter()
                .find(|(at, l)| *at >= since && pred(l))
                .map(|(_, l)| l.clone())
        })
    }
}

/// Whether a `tcpdump -e -t` line is a gratuitous ARP (an ARP
/// announcement, RFC 5227 3: a request whose sender and target protocol
/// addresses are both `addr`) sent from `mac`.
pub fn is_gratuitous_arp(line: &str, mac: &str, addr: &str) -> bool {
    line.starts_with(mac)
        && (line.contains(&format!("who-has {addr} tell {addr}"))
            || line.contains(&format!("Announcement {addr}")))
}
