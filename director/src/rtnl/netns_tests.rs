//! The real sockets against the running kernel. Each test makes a network
//! namespace of its own (`drt-<pid>-<n>`, deleted on drop, also when the
//! test panics) holding a veth pair `va` <-> `vb`, both up (the hosts have
//! no `dummy` module), so the host's interfaces are never touched. Sockets
//! are opened on a scoped thread that moved itself into the namespace
//! (setns(2) via rustix), or with `open_in_netns`; `ip` checks the result
//! through `ip -n`. Needs root (skipped, loudly, otherwise).

use super::*;
use crate::test_netns::{run, TestNetns};
use std::time::{Duration, Instant};

/// A test namespace holding the veth pair `va` <-> `vb`, both up.
struct NetNs(TestNetns);

impl std::ops::Deref for NetNs {
    type Target = TestNetns;
    fn deref(&self) -> &TestNetns {
        &self.0
    }
}

impl NetNs {
    /// `None` (and a message) when not root: the tests cannot run.
    fn new() -> Option<NetNs> {
        let ns = TestNetns::new("drt", "rtnl")?;
        ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        ns.ip(&["link", "set", "va", "up"]);
        ns.ip(&["link", "set", "vb", "up"]);
        Some(NetNs(ns))
    }

    /// The interface's index as sysfs in the namespace tells it.
    fn sys_ifindex(&self, dev: &str) -> u32 {
        let path = format!("/sys/class/net/{dev}/ifindex");
        self.exec(&["cat", &path]).trim().parse().unwrap()
    }

    /// `ip -o addr show dev DEV`, one line per address, as
    /// (address/prefix, the rest of the line).
    fn cli_addrs(&self, family: &str, dev: &str) -> Vec<(String, String)> {
        self.ip(&[family, "-o", "addr", "show", "dev", dev])
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace().skip(3);
                let a = w.next()?.to_string();
                Some((a, w.collect::<Vec<_>>().join(" ")))
            })
            .collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The IPv4 ones (the kernel adds an IPv6 link-local address to every
/// link that comes up, which `list` reports too).
fn v4_only(l: Vec<(IpAddr, u8)>) -> Vec<(IpAddr, u8)> {
    l.into_iter().filter(|(a, _)| a.is_ipv4()).collect()
}

#[test]
fn ifindex_by_name_matches_sysfs() {
    let Some(ns) = NetNs::new() else { return };
    let (va, vb, missing) = ns.run(|| (ifindex("va"), ifindex("vb"), ifindex("nosuch0")));
    assert_eq!(va.unwrap(), ns.sys_ifindex("va"));
    assert_eq!(vb.unwrap(), ns.sys_ifindex("vb"));
    let e = missing.unwrap_err();
    assert!(
        matches!(&e, RtnlError::NoSuchInterface { interface, .. } if interface == "nosuch0"),
        "{e:?}"
    );
    // The same through a socket opened from here into the namespace; and
    // the state of a link by index.
    let mut s = RtnlSocket::open_in_netns(&ns.name).unwrap();
    let idx = s.ifindex("va").unwrap();
    assert_eq!(idx, ns.sys_ifindex("va"));
    let l = s.link(idx).unwrap();
    assert_eq!((l.name.as_str(), l.up), ("va", true));
    assert!(matches!(
        s.link(9999),
        Err(RtnlError::NoSuchInterface { .. })
    ));
    assert!(matches!(
        s.ifindex("much-too-long-name"),
        Err(RtnlError::Invalid { .. })
    ));
}

#[test]
fn ipv4_add_list_delete_idempotent() {
    let Some(ns) = NetNs::new() else { return };
    let vip = ip("192.0.2.10");
    let (listed, after) = ns.run(|| {
        let mut s = RtnlSocket::open().unwrap();
        let idx = s.ifindex("va").unwrap();
        assert_eq!(v4_only(s.list(idx).unwrap()), vec![]);
        s.add(idx, vip, 32).unwrap();
        // Already there: success, and still one address.
        s.add(idx, vip, 32).unwrap();
        let listed = v4_only(s.list(idx).unwrap());
        s.delete(idx, vip, 32).unwrap();
        // Not there any more: success.
        s.delete(idx, vip, 32).unwrap();
        (listed, v4_only(s.list(idx).unwrap()))
    });
    assert_eq!(listed, vec![(vip, 32)]);
    assert_eq!(after, vec![]);
    assert!(ns.cli_addrs("-4", "va").is_empty());
}

#[test]
fn ipv4_vip_is_what_ip_shows() {
    let Some(ns) = NetNs::new() else { return };
    let mut s = RtnlSocket::open_in_netns(&ns.name).unwrap();
    let idx = s.ifindex("va").unwrap();
    s.add(idx, ip("192.0.2.10"), 32).unwrap();
    s.add(idx, ip("198.51.100.1"), 24).unwrap();
    let cli = ns.cli_addrs("-4", "va");
    let addrs: Vec<&str> = cli.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(addrs, ["192.0.2.10/32", "198.51.100.1/24"]);
    assert!(cli[0].1.starts_with("scope global va"), "{cli:?}");
    // The kernel's prefix route is there (no IFA_F_NOPREFIXROUTE).
    let routes = ns.ip(&["-4", "route", "show", "dev", "va"]);
    assert!(routes.contains("198.51.100.0/24"), "{routes}");
    let mut listed = v4_only(s.list(idx).unwrap());
    listed.sort();
    assert_eq!(
        listed,
        vec![(ip("192.0.2.10"), 32), (ip("198.51.100.1"), 24)]
    );
    // Another link's addresses are not listed.
    let other = s.ifindex("vb").unwrap();
    assert_eq!(v4_only(s.list(other).unwrap()), vec![]);
}

#[test]
fn ipv6_vip_is_usable_at_once_not_tentative() {
    let Some(ns) = NetNs::new() else { return };
    // DAD is on in a fresh namespace; without NODAD the address would be
    // tentative for about a second (the control below shows it).
    let vip = ip("2001:db8::10");
    let (detailed, listed) = ns.run(|| {
        let mut s = RtnlSocket::open().unwrap();
        let idx = s.ifindex("va").unwrap();
        s.add(idx, vip, 64).unwrap();
        s.add(idx, vip, 64).unwrap();
        (s.list_detailed(idx).unwrap(), s.list(idx).unwrap())
    });
    let cli = ns.cli_addrs("-6", "va");
    let line = cli
        .iter()
        .find(|(a, _)| a == "2001:db8::10/64")
        .unwrap_or_else(|| panic!("not in ip -6 addr: {cli:?}"));
    assert!(!line.1.contains("tentative"), "{line:?}");
    assert!(line.1.contains("nodad"), "{line:?}");
    let ours = detailed.iter().find(|a| a.addr == vip).unwrap();
    assert_eq!(ours.prefix_len, 64);
    assert_eq!(ours.flags & ifa_f::TENTATIVE, 0);
    assert_ne!(ours.flags & ifa_f::NODAD, 0);
    assert_eq!(listed.iter().filter(|(a, _)| *a == vip).count(), 1);
    // The kernel's prefix route is kept.
    let routes = ns.ip(&["-6", "route", "show", "dev", "va"]);
    assert!(routes.contains("2001:db8::/64"), "{routes}");

    // Control: the same without NODAD is tentative right after the add,
    // so the check above can fail.
    ns.ip(&["addr", "add", "2001:db8::99/64", "dev", "va"]);
    let cli = ns.cli_addrs("-6", "va");
    let control = cli.iter().find(|(a, _)| a == "2001:db8::99/64").unwrap();
    assert!(control.1.contains("tentative"), "{control:?}");

    ns.run(|| {
        let mut s = RtnlSocket::open().unwrap();
        let idx = s.ifindex("va").unwrap();
        s.delete(idx, vip, 64).unwrap();
        s.delete(idx, vip, 64).unwrap();
        assert!(s.list(idx).unwrap().iter().all(|(a, _)| *a != vip));
    });
    assert!(ns
        .cli_addrs("-6", "va")
        .iter()
        .all(|(a, _)| a != "2001:db8::10/64"));
}

#[test]
fn missing_interfaces_and_refusals_are_named() {
    let Some(ns) = NetNs::new() else { return };
    let mut s = RtnlSocket::open_in_netns(&ns.name).unwrap();
    let e = s.add(9999, ip("192.0.2.1"), 32).unwrap_err();
    assert!(matches!(e, RtnlError::NoSuchInterface { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "no such interface index 9999 while adding 192.0.2.1/32 to interface index 9999"
    );
    assert!(s.add(9999, ip("2001:db8::1"), 64).is_err());
    // Deleting from a missing interface: nothing there, success.
    s.delete(9999, ip("192.0.2.1"), 32).unwrap();
    s.delete(9999, ip("2001:db8::1"), 64).unwrap();
    // Listing one: the kernel (strict checking) says ENODEV.
    assert!(matches!(
        s.list(9999),
        Err(RtnlError::NoSuchInterface { .. })
    ));
    // A refusal that is not a reconcile signal names the address and the
    // interface by name: IPv6 turned off on va.
    let idx = s.ifindex("va").unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.va.disable_ipv6=1",
        ],
    );
    let e = s.add(idx, ip("2001:db8::1"), 64).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RtnlError::Refused { .. }), "{e:?}");
    assert!(
        msg.starts_with(&format!(
            "kernel refused adding 2001:db8::1/64 to interface va (index {idx}): "
        )),
        "{msg}"
    );
    // A prefix length the family cannot have never reaches the kernel.
    assert!(matches!(
        s.add(idx, ip("192.0.2.1"), 33),
        Err(RtnlError::Invalid { .. })
    ));
}

/// Reads events until `want` holds for one, or 10 s pass.
fn wait_for(
    w: &mut LinkWatch,
    seen: &mut Vec<LinkEvent>,
    want: impl Fn(&LinkEvent) -> bool,
) -> LinkEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(ev) = w.next_timeout(Duration::from_millis(200)).unwrap() {
            seen.push(ev.clone());
            if want(&ev) {
                return ev;
            }
        }
    }
    panic!("no such link event within 10 s; saw {seen:?}");
}

#[test]
fn link_watch_sees_carrier_loss_and_return() {
    let Some(ns) = NetNs::new() else { return };
    let va = ns.sys_ifindex("va");
    let vb = ns.sys_ifindex("vb");
    let mut w = LinkWatch::open_in_netns(&ns.name).unwrap();
    let snap = w.snapshot().unwrap();
    let state: Vec<(u32, &str, bool)> = snap
        .iter()
        .map(|l| (l.index, l.name.as_str(), l.up))
        .collect();
    let mut want = vec![(1, "lo", false), (vb, "vb", true), (va, "va", true)];
    want.sort();
    assert_eq!(state, want, "snapshot in index order");
    let mut seen = Vec::new();
    // vb administratively down: va stays IFF_UP but loses its carrier
    // (IFF_RUNNING), which is "down" for track_interface.
    ns.ip(&["link", "set", "vb", "down"]);
    wait_for(&mut w, &mut seen, |e| e.index == va && !e.up);
    assert!(seen.iter().any(|e| e.index == vb && !e.up), "{seen:?}");
    let flags = ns.ip(&["link", "show", "dev", "va"]);
    assert!(
        flags.contains("NO-CARRIER") && flags.contains(",UP"),
        "{flags}"
    );
    ns.ip(&["link", "set", "vb", "up"]);
    let ev = wait_for(&mut w, &mut seen, |e| e.index == va && e.up);
    assert_eq!(ev.name, "va");
    // Deleting the pair: both go, as "not up".
    ns.ip(&["link", "del", "va"]);
    wait_for(&mut w, &mut seen, |e| e.index == va && !e.up);
    // Nothing more queued for a link that stays gone.
    let snap = w.snapshot().unwrap();
    assert!(
        snap.iter().all(|l| l.index != va && l.index != vb),
        "{snap:?}"
    );
}

#[test]
fn link_watch_next_blocks_on_a_std_thread_and_timeouts_return_none() {
    let Some(ns) = NetNs::new() else { return };
    let va = ns.sys_ifindex("va");
    let mut w = LinkWatch::open_in_netns(&ns.name).unwrap();
    // Nothing happening: a timeout, not an error.
    assert_eq!(w.next_timeout(Duration::from_millis(50)).unwrap(), None);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // What the daemon does: block in next() and forward.
        loop {
            let ev = w.next().unwrap();
            let stop = ev.index == va && !ev.up;
            tx.send(ev).unwrap();
            if stop {
                return w.overruns();
            }
        }
    });
    ns.ip(&["link", "set", "va", "down"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an event for va going down");
        if ev.index == va && !ev.up {
            break;
        }
    }
    assert_eq!(t.join().unwrap(), 0);
}
