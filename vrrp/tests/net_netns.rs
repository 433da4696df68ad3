//! `vrrp::net` against the kernel: [`VrrpSocket`], [`Announcer`] and
//! [`interface`] in two network namespaces A and B joined by a veth pair
//! (`va` in A, `vb` in B), and keepalived as the peer.
//!
//! Needs root (network namespaces, raw sockets). Every test creates its own
//! namespaces `vio-<pid>-<n>` and deletes them, after killing whatever
//! still runs in them, when its [`Link`] is dropped, also while a failing
//! test unwinds. Traffic stays inside them. Sockets are opened from a
//! thread that entered the namespace (`setns(2)`); they stay there.
//!
//! ```text
//!   A: va 10.0.0.1/24 2001:db8::1/64 fe80::(auto)  ==veth==  B: vb 10.0.0.2/24 2001:db8::2/64
//! ```

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;
use tokio::time::timeout;
use vrrp::codec::{self, Advert, Version, MULTICAST_V4, MULTICAST_V6};
use vrrp::net::{arp_announcement, interface, Announcer, Incoming, Interface, VrrpSocket};

const A4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(3);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a command; it must succeed. Its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One network namespace of this test process, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = unique("vio");
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: link-local addresses are usable
        // (bindable) the moment the link is up.
        ns.sysctl(&[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn sysctl(&self, settings: &[&str]) {
        let mut args = vec!["-qw"];
        args.extend_from_slice(settings);
        self.exec("sysctl", &args);
    }

    /// Runs `f` on a thread inside this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    fn pids(&self) -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only processes this test started live in its namespaces.
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Namespaces A and B, `va` <-> `vb`, addressed, up, operationally up and
/// with their link-local addresses.
struct Link {
    a: Netns,
    b: Netns,
}

impl Link {
    fn new() -> Link {
        let (a, b) = (Netns::new(), Netns::new());
        a.ip(&[
            "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name,
        ]);
        a.ip(&["addr", "add", "10.0.0.1/24", "dev", "va"]);
        b.ip(&["addr", "add", "10.0.0.2/24", "dev", "vb"]);
        a.ip(&["addr", "add", "2001:db8::1/64", "dev", "va", "nodad"]);
        b.ip(&["addr", "add", "2001:db8::2/64", "dev", "vb", "nodad"]);
        a.ip(&["link", "set", "va", "up"]);
        b.ip(&["link", "set", "vb", "up"]);
        let link = Link { a, b };
        link.wait_ready();
        link
    }

    /// Until both ends are operationally up (linkwatch runs the operstate
    /// change asynchronously) and have a link-local address.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, dev) in [(&self.a, "va"), (&self.b, "vb")] {
            loop {
                let i = ns.enter(|| interface(dev)).unwrap();
                if i.oper_up && i.ipv6_link_local.is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "{dev} never came up: {i:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn iface_a(&self) -> Interface {
        self.a.enter(|| interface("va")).unwrap()
    }

    fn iface_b(&self) -> Interface {
        self.b.enter(|| interface("vb")).unwrap()
    }
}

/// A `VrrpSocket` opened in `ns`, registered with the test's runtime.
fn open(ns: &Netns, iface: &Interface, src: IpAddr, multicast: bool) -> VrrpSocket {
    let rt = Handle::current();
    ns.enter(move || {
        let _guard = rt.enter();
        VrrpSocket::open(iface, src, multicast)
    })
    .unwrap_or_else(|e| panic!("open {src} on {}: {e}", iface.name))
}

fn advert(vrid: u8, priority: u8, addresses: &[IpAddr]) -> Advert {
    Advert {
        version: Version::V3 {
            max_advert_int: 100,
        },
        vrid,
        priority,
        addresses: addresses.to_vec(),
    }
}

/// The next datagram on `sock` within `WAIT`.
async fn recv(sock: &VrrpSocket) -> Incoming {
    timeout(WAIT, sock.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing received on {} within {WAIT:?}", sock.ifname()))
        .expect("recv")
}

/// A sends one v3 advert from `src_a` to `dst`; B, listening on `src_b`,
/// gets it with the right header facts, and it decodes to what was sent.
async fn one_advert(src_a: IpAddr, src_b: IpAddr, multicast: bool) {
    let link = Link::new();
    let sa = open(&link.a, &link.iface_a(), src_a, multicast);
    let sb = open(&link.b, &link.iface_b(), src_b, multicast);
    let dst = match (multicast, src_a) {
        (true, IpAddr::V4(_)) => IpAddr::V4(MULTICAST_V4),
        (true, IpAddr::V6(_)) => IpAddr::V6(MULTICAST_V6),
        (false, _) => src_b,
    };
    let vip = match src_a {
        IpAddr::V4(_) => "192.0.2.100".parse().unwrap(),
        IpAddr::V6(_) => "2001:db8:1::100".parse().unwrap(),
    };
    let sent = advert(51, 150, &[vip]);
    sa.send(&codec::encode(&sent, src_a, dst).unwrap(), dst)
        .await
        .unwrap();
    let got = recv(&sb).await;
    assert_eq!(got.src, src_a);
    assert_eq!(got.dst, dst);
    assert_eq!(got.ttl_or_hop_limit, 255);
    assert_eq!(codec::decode(&got.received()).unwrap(), sent);
}

#[tokio::test]
async fn v3_ipv4_multicast_advert_arrives_with_ttl_255_and_decodes() {
    one_advert(IpAddr::V4(A4), IpAddr::V4(B4), true).await;
}

#[tokio::test]
async fn v3_ipv6_multicast_advert_arrives_from_the_link_local_with_hop_limit_255() {
    let link = Link::new();
    let (ia, ib) = (link.iface_a(), link.iface_b());
    let (lla, llb) = (ia.ipv6_link_local.unwrap(), ib.ipv6_link_local.unwrap());
    let sa = open(&link.a, &ia, IpAddr::V6(lla), true);
    let sb = open(&link.b, &ib, IpAddr::V6(llb), true);
    let dst = IpAddr::V6(MULTICAST_V6);
    let sent = advert(52, 100, &["2001:db8:1::100".parse().unwrap()]);
    sa.send(&codec::encode(&sent, IpAddr::V6(lla), dst).unwrap(), dst)
        .await
        .unwrap();
    let got = recv(&sb).await;
    assert_eq!(got.src, IpAddr::V6(lla));
    assert_eq!(got.dst, dst);
    assert_eq!(got.ttl_or_hop_limit, 255);
    assert_eq!(codec::decode(&got.received()).unwrap(), sent);
}

#[tokio::test]
async fn v3_ipv4_unicast_advert_arrives_at_the_peer_address() {
    one_advert(IpAddr::V4(A4), IpAddr::V4(B4), false).await;
}

#[tokio::test]
async fn v3_ipv6_unicast_advert_arrives_at_the_peer_address() {
    one_advert(IpAddr::V6(A6), IpAddr::V6(B6), false).await;
}

#[tokio::test]
async fn a_socket_does_not_receive_its_own_multicast_advert() {
    let link = Link::new();
    let (ia, ib) = (link.iface_a(), link.iface_b());
    let lla = IpAddr::V6(ia.ipv6_link_local.unwrap());
    let llb = IpAddr::V6(ib.ipv6_link_local.unwrap());
    for (src_a, src_b, group) in [
        (IpAddr::V4(A4), IpAddr::V4(B4), IpAddr::V4(MULTICAST_V4)),
        (lla, llb, IpAddr::V6(MULTICAST_V6)),
    ] {
        let sa = open(&link.a, &ia, src_a, true);
        let sb = open(&link.b, &ib, src_b, true);
        let sent = advert(53, 100, &[src_a]);
        sa.send(&codec::encode(&sent, src_a, group).unwrap(), group)
            .await
            .unwrap();
        // It went out (B has it) ...
        assert_eq!(recv(&sb).await.src, src_a);
        // ... and did not come back.
        let echo = timeout(Duration::from_millis(500), sa.recv()).await;
        assert!(echo.is_err(), "{src_a} received its own advert: {echo:?}");
    }
}

#[tokio::test]
async fn sending_to_the_other_family_is_an_error() {
    let link = Link::new();
    let sa = open(&link.a, &link.iface_a(), IpAddr::V4(A4), true);
    let e = sa
        .send(&[0; 8], IpAddr::V6(MULTICAST_V6))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// A packet socket in `ns` receiving every frame of one EtherType.
fn capture(ns: &Netns, ethertype: u16) -> Socket {
    ns.enter(|| {
        let s = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ethertype.to_be()))),
        )?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok::<_, std::io::Error>(s)
    })
    .expect("capture socket")
}

/// The first captured frame for which `want` is true, within `WAIT`.
fn captured(sock: &Socket, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) = (&*sock).read(&mut buf) {
            if want(&buf[..n]) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no matching frame within {WAIT:?}");
}

#[test]
fn gratuitous_arp_is_seen_in_b_and_b_learns_the_address() {
    let link = Link::new();
    // Let B's kernel create a neighbour entry from a gratuitous ARP for an
    // address of its subnet (ip-sysctl.rst arp_accept), as a switch or
    // router on the link would update its tables.
    link.b.sysctl(&[
        "net.ipv4.conf.all.arp_accept=1",
        "net.ipv4.conf.vb.arp_accept=1",
    ]);
    let ia = link.iface_a();
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let cap = capture(&link.b, 0x0806);
    let ann = link.a.enter(|| Announcer::open(&ia)).unwrap();
    ann.announce(IpAddr::V4(vip)).unwrap();
    let f = captured(&cap, |f| {
        f.len() >= 42 && f[12..14] == [8, 6] && f[28..32] == vip.octets()
    });
    assert_eq!(f[0..6], [0xff; 6], "Ethernet broadcast");
    assert_eq!(f[6..12], ia.mac, "Ethernet source");
    assert_eq!(f[14..16], [0, 1], "hardware type Ethernet");
    assert_eq!(f[16..18], [8, 0], "protocol type IPv4");
    assert_eq!(f[18..20], [6, 4], "address lengths");
    assert_eq!(f[20..22], [0, 1], "request");
    assert_eq!(f[22..28], ia.mac, "sender MAC");
    assert_eq!(f[28..32], vip.octets(), "sender IP");
    assert_eq!(f[32..38], [0; 6], "target MAC");
    assert_eq!(f[38..42], vip.octets(), "target IP");
    assert_eq!(f[..42], arp_announcement(ia.mac, vip));
    let mac = ia
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let neigh = link.b.ip(&["neigh", "show", "10.0.0.100", "dev", "vb"]);
    assert!(neigh.contains(&mac), "B's neighbour table: {neigh:?}");
}

/// RFC 4443 2.3 checksum over the IPv6 pseudo-header (RFC 8200 8.1).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn unsolicited_na_is_seen_in_b_and_overrides_b_neighbour_entry() {
    let link = Link::new();
    let ia = link.iface_a();
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    // The host adds the VIP (without DAD) before announcing it.
    link.a
        .ip(&["addr", "add", "2001:db8::100/128", "dev", "va", "nodad"]);
    // RFC 4861 7.2.5: an unsolicited NA updates an existing entry (and
    // Override replaces its link-layer address); it creates none.
    link.b.ip(&[
        "neigh",
        "add",
        "2001:db8::100",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        "vb",
        "nud",
        "stale",
    ]);
    let cap = capture(&link.b, 0x86dd);
    let ann = link.a.enter(|| Announcer::open(&ia)).unwrap();
    ann.announce(IpAddr::V6(vip)).unwrap();
    // Ethernet (14) + IPv6 (40) + NA (32); next header ICMPv6, type 136.
    let f = captured(&cap, |f| {
        f.len() >= 86 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136
    });
    assert_eq!(f[0..6], [0x33, 0x33, 0, 0, 0, 1], "all-nodes multicast MAC");
    assert_eq!(f[6..12], ia.mac);
    let ip = &f[14..54];
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 32, "payload length");
    assert_eq!(ip[7], 255, "hop limit (RFC 4861 7.1.2)");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    assert_eq!(src, vip, "source: the announced address itself");
    assert_eq!(dst, "ff02::1".parse::<Ipv6Addr>().unwrap());
    let na = &f[54..86];
    assert_eq!(na[1], 0, "code");
    assert_eq!(icmpv6_checksum(src, dst, na), 0, "checksum verifies");
    assert_eq!(na[4], 0x20, "Override only");
    assert_eq!(na[8..24], vip.octets(), "target");
    assert_eq!(na[24..26], [2, 1], "Target Link-Layer Address option");
    assert_eq!(na[26..32], ia.mac);
    let mac = ia
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let deadline = Instant::now() + WAIT;
    loop {
        let neigh = link
            .b
            .ip(&["-6", "neigh", "show", "2001:db8::100", "dev", "vb"]);
        if neigh.contains(&mac) {
            assert!(!neigh.contains("router"), "Router flag clear: {neigh:?}");
            break;
        }
        assert!(Instant::now() < deadline, "B's neighbour table: {neigh:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn announcing_an_ipv6_address_the_interface_does_not_hold_is_an_error() {
    let link = Link::new();
    let ia = link.iface_a();
    let ann = link.a.enter(|| Announcer::open(&ia)).unwrap();
    // The NA's source is the address itself (RFC 4861 4.4: assigned to
    // the interface); the kernel refuses any other.
    let e = ann.announce("2001:db8::100".parse().unwrap()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
}

/// Duplicate address detection on A's link-local (3 probes, 1 s apart:
/// tentative for 3 s, RFC 4862 5.4), as after a link flap or at boot: the
/// VRRP socket opens on the tentative link-local and its adverts reach B,
/// and a nodad VIP is announced, all before DAD ends.
#[tokio::test]
async fn socket_and_announcer_work_while_the_link_local_is_tentative() {
    let link = Link::new();
    link.a.sysctl(&[
        "net.ipv6.conf.va.accept_dad=1",
        "net.ipv6.conf.va.dad_transmits=3",
    ]);
    link.a.ip(&["link", "set", "va", "down"]);
    link.a.ip(&["link", "set", "va", "up"]);
    link.wait_ready();
    let tentative = || {
        link.a
            .ip(&["-6", "addr", "show", "dev", "va", "scope", "link"])
            .contains("tentative")
    };
    assert!(tentative(), "DAD is not running");
    let (ia, ib) = (link.iface_a(), link.iface_b());
    let lla = IpAddr::V6(ia.ipv6_link_local.unwrap());
    let llb = IpAddr::V6(ib.ipv6_link_local.unwrap());
    let a = open(&link.a, &ia, lla, true);
    let b = open(&link.b, &ib, llb, true);
    let dst = IpAddr::V6(MULTICAST_V6);
    let bytes = codec::encode(
        &advert(7, 200, &["2001:db8::100".parse().unwrap()]),
        lla,
        dst,
    )
    .unwrap();
    a.send(&bytes, dst).await.unwrap();
    let got = recv(&b).await;
    assert_eq!(got.src, lla);

    link.a
        .ip(&["addr", "add", "2001:db8::100/128", "dev", "va", "nodad"]);
    let ann = link.a.enter(|| Announcer::open(&ia)).unwrap();
    ann.announce("2001:db8::100".parse().unwrap()).unwrap();
    assert!(
        tentative(),
        "DAD ended before the checks: the test proved nothing"
    );
}

#[test]
fn interface_reports_index_mac_addresses_and_oper_state() {
    let link = Link::new();
    // Two more primaries and a secondary, to check the order `ip` lists.
    link.a.ip(&["addr", "add", "10.0.0.5/24", "dev", "va"]);
    link.a.ip(&["addr", "add", "172.16.0.1/16", "dev", "va"]);
    link.a.ip(&[
        "addr",
        "add",
        "192.0.2.7/32",
        "dev",
        "va",
        "label",
        "va:vip",
    ]);
    let i = link.iface_a();
    assert_eq!(i.name, "va");
    let ip_link = link.a.ip(&["-o", "link", "show", "va"]);
    let index: u32 = ip_link.split(':').next().unwrap().trim().parse().unwrap();
    assert_eq!(i.index, index);
    let mac = link.a.ip(&["-o", "link", "show", "va"]);
    let mac = mac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let ours: Vec<String> = i.mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ours.join(":"), mac);
    let listed: Vec<Ipv4Addr> = link
        .a
        .ip(&["-4", "-o", "addr", "show", "dev", "va"])
        .lines()
        .map(|l| {
            let cidr = l
                .split(" inet ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            cidr.split('/').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(i.ipv4, listed, "same order as ip -4 addr");
    assert_eq!(i.ipv4[0], A4, "primary first");
    assert_eq!(i.ipv4.len(), 4);
    let ll = link
        .a
        .ip(&["-6", "-o", "addr", "show", "dev", "va", "scope", "link"]);
    let ll: Ipv6Addr = ll
        .split(" inet6 ")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(i.ipv6_link_local, Some(ll));
    assert!(i.oper_up);

    // The peer down: va has no carrier, so it is not operationally up.
    link.b.ip(&["link", "set", "vb", "down"]);
    wait_for(|| !link.iface_a().oper_up, "va not oper up with vb down");
    link.b.ip(&["link", "set", "vb", "up"]);
    wait_for(|| link.iface_a().oper_up, "va oper up again");
    // va itself down.
    link.a.ip(&["link", "set", "va", "down"]);
    let down = link.iface_a();
    assert!(!down.oper_up);
    assert_eq!(down.index, index);

    let e = link.a.enter(|| interface("nope0")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// keepalived in A, stopped (SIGTERM, then SIGKILL) on drop; its files in
/// a directory of its own.
struct Keepalived {
    child: Child,
    dir: PathBuf,
}

impl Keepalived {
    fn start(ns: &Netns, conf: &str) -> Keepalived {
        let dir = std::env::temp_dir().join(unique("vio-keepalived"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
        std::fs::write(path("keepalived.conf"), conf).unwrap();
        let log = File::create(path("keepalived.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "/usr/sbin/keepalived"])
            .args(["-n", "-l", "-D", "-P", "-f", &path("keepalived.conf")])
            .args(["-p", &path("keepalived.pid"), "-r", &path("vrrp.pid")])
            .args(["-c", &path("checkers.pid")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start keepalived");
        Keepalived { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // `ip netns exec` execs keepalived: the child is keepalived itself.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keepalived's v2 and v3 IPv4 adverts and its v3 IPv6 adverts reach a
/// `VrrpSocket` in B and decode; and our adverts, with a higher priority,
/// make keepalived's v3 instances step down (it validated TTL, checksum and
/// source of what we sent, RFC 5798 7.1).
#[tokio::test]
async fn keepalived_adverts_arrive_and_decode_and_ours_make_it_back_off() {
    let link = Link::new();
    let conf = "\
global_defs {
    router_id vrrp-net-test
}
vrrp_instance V2 {
    state MASTER
    interface va
    version 2
    virtual_router_id 61
    priority 150
    advert_int 1
    virtual_ipaddress {
        192.0.2.61/32
    }
}
vrrp_instance V3 {
    state MASTER
    interface va
    version 3
    virtual_router_id 62
    priority 150
    advert_int 1
    virtual_ipaddress {
        192.0.2.62/32
    }
}
vrrp_instance V3_V6 {
    state MASTER
    interface va
    version 3
    virtual_router_id 63
    priority 150
    advert_int 1
    virtual_ipaddress {
        2001:db8:1::63/64
    }
}
";
    let (ia, ib) = (link.iface_a(), link.iface_b());
    let lla = IpAddr::V6(ia.ipv6_link_local.unwrap());
    let llb = IpAddr::V6(ib.ipv6_link_local.unwrap());
    let s4 = open(&link.b, &ib, IpAddr::V4(B4), true);
    let s6 = open(&link.b, &ib, llb, true);
    let ka = Keepalived::start(&link.a, conf);

    // Collect one advert per VRID (keepalived becomes master after
    // 3 x advert_int + skew, then advertises every second).
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < 3 {
        let got = tokio::select! {
            r = s4.recv() => r,
            r = s6.recv() => r,
            _ = tokio::time::sleep_until(deadline) => {
                panic!("keepalived adverts seen: {:?}\n{}", seen.keys(), ka.log())
            }
        }
        .expect("recv");
        let adv = codec::decode(&got.received())
            .unwrap_or_else(|e| panic!("keepalived advert {got:?} does not decode: {e}"));
        if adv.priority == 0 {
            continue;
        }
        assert_eq!(got.ttl_or_hop_limit, 255);
        seen.insert(adv.vrid, (got, adv));
    }
    let (v2, a2) = &seen[&61];
    assert_eq!((v2.src, v2.dst), (IpAddr::V4(A4), IpAddr::V4(MULTICAST_V4)));
    assert_eq!(a2.version_number(), 2);
    assert_eq!(a2.addresses, vec!["192.0.2.61".parse::<IpAddr>().unwrap()]);
    let (v3, a3) = &seen[&62];
    assert_eq!((v3.src, v3.dst), (IpAddr::V4(A4), IpAddr::V4(MULTICAST_V4)));
    assert_eq!(a3.version_number(), 3);
    assert_eq!(a3.addresses, vec!["192.0.2.62".parse::<IpAddr>().unwrap()]);
    let (v6, a6) = &seen[&63];
    assert_eq!((v6.src, v6.dst), (lla, IpAddr::V6(MULTICAST_V6)));
    assert_eq!(a6.version_number(), 3);
    assert_eq!(
        a6.addresses,
        vec!["2001:db8:1::63".parse::<IpAddr>().unwrap()]
    );

    // Now B claims VRIDs 62 and 63 with priority 254: keepalived must go
    // BACKUP and remove those VIPs from va.
    let ours = [
        (
            &s4,
            IpAddr::V4(B4),
            IpAddr::V4(MULTICAST_V4),
            advert(62, 254, &a3.addresses),
        ),
        (
            &s6,
            llb,
            IpAddr::V6(MULTICAST_V6),
            advert(63, 254, &a6.addresses),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (sock, src, dst, adv) in &ours {
            sock.send(&codec::encode(adv, *src, *dst).unwrap(), *dst)
                .await
                .unwrap();
        }
        let v4 = link.a.ip(&["-4", "-o", "addr", "show", "dev", "va"]);
        let v6 = link.a.ip(&["-6", "-o", "addr", "show", "dev", "va"]);
        if !v4.contains("192.0.2.62") && !v6.contains("2001:db8:1::63") {
            // The v2 instance, not challenged, keeps its VIP.
            assert!(v4.contains("192.0.2.61"), "{v4}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keepalived kept its VIPs:\n{v4}{v6}\n{}",
            ka.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = ka.log();
    assert!(log.contains("(V3) Entering BACKUP STATE"), "{log}");
    assert!(log.contains("(V3_V6) Entering BACKUP STATE"), "{log}");
}
