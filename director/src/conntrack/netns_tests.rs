//! The real socket against the running kernel. Each test makes a network
//! namespace of its own (`dct-<pid>-<n>`, deleted on drop, also when the
//! test panics): conntrack tables are per netns, so the host's table is
//! never read or written. The socket is opened in a scoped thread that
//! moved itself into the namespace (setns(2) via rustix); the conntrack CLI
//! runs there through `ip netns exec`. Needs root (skipped, loudly,
//! otherwise) and the `conntrack` CLI.

use super::*;
use crate::test_netns::TestNetns;
use std::net::{IpAddr, TcpListener, TcpStream};

/// A test namespace with `lo` up, plus the conntrack CLI's view of it.
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
        let ns = TestNetns::new("dct", "conntrack")?;
        ns.ip(&["link", "set", "lo", "up"]);
        Some(NetNs(ns))
    }

    fn cli_list(&self) -> Vec<String> {
        self.exec(&["conntrack", "-L", "-o", "extended"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp_entry(src: &str, sport: u16, dst: &str, dport: u16) -> Conntrack {
    let orig = Tuple::ports(6, ip(src), sport, ip(dst), dport);
    let mut ct = Conntrack::new(orig.clone(), orig.inverted());
    ct.timeout = Some(300);
    ct.status = Some(codec::status::SEEN_REPLY | codec::status::ASSURED);
    ct.mark = Some(42);
    ct.tcp = Some(TcpInfo {
        state: TcpState::ESTABLISHED,
        wscale_orig: Some(7),
        wscale_reply: Some(7),
        flags_orig: None,
        flags_reply: None,
        unknown: vec![],
    });
    ct
}

#[test]
fn dump_of_an_empty_netns_is_empty() {
    let Some(ns) = NetNs::new() else { return };
    let got = ns.run(|| ConntrackSocket::open().unwrap().dump(None).unwrap());
    assert_eq!(got, vec![]);
    assert!(ns.cli_list().is_empty());
}

#[test]
fn created_entries_are_listed_by_the_cli_and_our_dump_then_deleted() {
    let Some(ns) = NetNs::new() else { return };
    let v4 = tcp_entry("10.0.0.1", 40000, "10.0.0.2", 80);
    let v6 = tcp_entry("2001:db8::1", 40001, "2001:db8::2", 443);
    let udp_orig = Tuple::ports(17, ip("10.0.0.1"), 5353, ip("10.0.0.9"), 53);
    let mut udp = Conntrack::new(udp_orig.clone(), udp_orig.inverted());
    udp.timeout = Some(30);
    udp.zone = Some(7);
    let all = [v4.clone(), v6.clone(), udp.clone()];
    let dumped = ns.run(|| {
        let mut s = ConntrackSocket::open().unwrap();
        for ct in &all {
            s.create(ct).unwrap();
        }
        // NLM_F_EXCL: the same tuple again is a reconcile signal.
        assert!(matches!(s.create(&v4), Err(ConntrackError::Exists)));
        s.dump(None).unwrap()
    });
    let cli = ns.cli_list();
    assert_eq!(cli.len(), 3, "{cli:#?}");
    assert!(
        cli.iter().any(|l| l
            .contains("ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80")
            && l.contains("mark=42")),
        "{cli:#?}"
    );
    assert!(cli
        .iter()
        .any(|l| l.starts_with("ipv6") && l.contains("sport=40001 dport=443")));
    assert!(
        cli.iter()
            .any(|l| l.contains("udp") && l.contains("zone=7")),
        "{cli:#?}"
    );

    assert_eq!(dumped.len(), 3);
    for want in &all {
        let got = dumped
            .iter()
            .find(|d| d.orig == want.orig)
            .unwrap_or_else(|| panic!("{:?} not dumped: {dumped:#?}", want.orig));
        assert_eq!(got.reply, want.reply);
        assert_eq!(got.zone, want.zone);
        assert_eq!(got.mark.unwrap_or(0), want.mark.unwrap_or(0));
        assert_eq!(
            got.tcp.as_ref().map(|t| t.state),
            want.tcp.as_ref().map(|t| t.state)
        );
        let st = got.status.unwrap();
        assert_eq!(st & want.status.unwrap_or(0), want.status.unwrap_or(0));
        assert!(got.timeout.unwrap() <= want.timeout.unwrap());
        assert!(got.id.is_some());
    }
    // A dump limited to one family.
    let only6 = ns.run(|| {
        ConntrackSocket::open()
            .unwrap()
            .dump(Some(Family::Ipv6))
            .unwrap()
    });
    assert_eq!(only6.len(), 1);
    assert_eq!(only6[0].orig, v6.orig);

    ns.run(|| {
        let mut s = ConntrackSocket::open().unwrap();
        s.delete(&v4.orig, None).unwrap();
        assert!(matches!(
            s.delete(&v4.orig, None),
            Err(ConntrackError::NotFound)
        ));
        // The UDP entry lives in zone 7 only.
        assert!(matches!(
            s.delete(&udp.orig, None),
            Err(ConntrackError::NotFound)
        ));
        s.delete(&udp.orig, Some(7)).unwrap();
        s.delete(&v6.orig, None).unwrap();
        assert_eq!(s.dump(None).unwrap(), vec![]);
    });
    assert!(ns.cli_list().is_empty());
}

#[test]
fn the_kernel_explains_a_refused_entry() {
    let Some(ns) = NetNs::new() else { return };
    let mut bad = tcp_entry("10.0.0.1", 1, "10.0.0.2", 2);
    // TCP without ports: the encoder lets it through (it is valid
    // ctnetlink), the kernel's tcp nlattr_to_tuple refuses it.
    bad.orig.src_port = None;
    bad.reply.dst_port = None;
    let e = ns.run(|| ConntrackSocket::open().unwrap().create(&bad).unwrap_err());
    assert!(
        matches!(e, ConntrackError::Refused { errno, .. } if errno == libc::EINVAL),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("kernel refused creating a conntrack entry"),
        "{e}"
    );
}

#[test]
fn a_dnat_entry_written_from_tuples_keeps_its_translation() {
    let Some(ns) = NetNs::new() else { return };
    // What ctsync will replicate: client -> VIP, answered by a real server.
    let orig = Tuple::ports(6, ip("192.0.2.10"), 50000, ip("192.0.2.100"), 80);
    let reply = Tuple::ports(6, ip("10.0.1.11"), 8080, ip("192.0.2.10"), 50000);
    let mut ct = Conntrack::new(orig, reply.clone()).with_nat_from_tuples();
    ct.timeout = Some(120);
    ct.status = Some(codec::status::SEEN_REPLY | codec::status::ASSURED);
    ct.tcp = tcp_entry("192.0.2.10", 1, "192.0.2.100", 2).tcp;
    let dumped = ns.run(|| {
        let mut s = ConntrackSocket::open().unwrap();
        s.create(&ct).unwrap();
        s.dump(None).unwrap()
    });
    assert_eq!(dumped.len(), 1);
    assert_eq!(dumped[0].orig, ct.orig);
    assert_eq!(dumped[0].reply, reply);
    assert_ne!(
        dumped[0].status.unwrap() & codec::status::DST_NAT,
        0,
        "{dumped:#?}"
    );
    let cli = ns.cli_list();
    assert!(
        cli[0].contains("src=10.0.1.11 dst=192.0.2.10 sport=8080 dport=50000"),
        "{cli:#?}"
    );
    let counts = flow_counts(&dumped);
    assert_eq!(counts[0].reply_src, "10.0.1.11:8080".parse().unwrap());
    assert_eq!((counts[0].active, counts[0].inactive), (1, 0));
}

#[test]
fn real_loopback_traffic_shows_up_established() {
    let Some(ns) = NetNs::new() else { return };
    // Conntrack only tracks a netns once some rule needs it.
    let rules = "table inet dct {\n chain out {\n  type filter hook output priority 0; policy accept;\n  ct state established counter\n }\n}\n";
    let file = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&file, rules).unwrap();
    ns.exec(&["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let (port, dumped) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        let dumped = ConntrackSocket::open()
            .unwrap()
            .dump(Some(Family::Ipv4))
            .unwrap();
        drop((c, s));
        (port, dumped)
    });
    let mine: Vec<_> = dumped
        .iter()
        .filter(|c| c.orig.dst_port == Some(port))
        .collect();
    assert_eq!(mine.len(), 1, "{dumped:#?}");
    assert!(mine[0].is_tcp_established(), "{:#?}", mine[0]);
    let counts = flow_counts(&dumped);
    let c = counts.iter().find(|c| c.orig_dst.port() == port).unwrap();
    assert_eq!((c.active, c.inactive), (1, 0));
}

// ------------------------------------------------------- replication (ctsync)

mod replication {
    use super::*;
    use crate::conntrack::events::EventSocket;
    use crate::ctsync_host::kernel::{self, Filter};
    use crate::ctsync_host::table::{ConntrackTable, EventSource, SourceBatch};
    use ctsync::{Entry, Event, L4};
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    fn filter() -> Filter {
        Filter::new([IpAddr::from(VIP)], [ip("198.51.100.1")], [])
    }

    /// A DNAT entry client:port -> VIP:80 answered by 10.1.0.11:8080.
    fn dnat(client: &str, port: u16) -> Entry {
        let mut e = kernel::synthetic_entries(1, VIP)[0];
        e.original.src = ip(client);
        e.original.l4 = L4::Ports { src: port, dst: 80 };
        e.reply.src = ip("10.1.0.11");
        e.reply.dst = ip(client);
        e.reply.l4 = L4::Ports {
            src: 8080,
            dst: port,
        };
        e
    }

    fn drain(ev: &mut EventSocket) -> Vec<crate::conntrack::CtEvent> {
        let mut out = Vec::new();
        while let Some(b) = ev.next_batch(Duration::from_millis(300)).unwrap() {
            assert!(!b.lost(), "{b:?}");
            out.extend(b.events);
        }
        out
    }

    #[test]
    fn events_of_our_own_writes_carry_our_portid() {
        let Some(ns) = NetNs::new() else { return };
        ns.run(|| {
            let mut raw = EventSocket::open().unwrap();
            let (mut table, mut events) = kernel::open(filter()).unwrap();
            let e = dnat("203.0.113.5", 41000);
            let a = table.upsert(&[e]);
            assert_eq!((a.written, a.failed.len()), (1, 0), "{a:?}");
            // Update (the GET + change path) and delete, too.
            let mut e2 = e;
            e2.timeout = 99;
            assert_eq!(table.upsert(&[e2]).written, 1);
            assert_eq!(table.delete(&[e.key()]).written, 1);

            let got = drain(&mut raw);
            let kinds: Vec<_> = got.iter().map(|e| (e.kind, e.portid)).collect();
            let me = table.portid();
            assert_ne!(me, 0);
            assert_eq!(
                kinds,
                vec![
                    (EventKind::New, me),
                    (EventKind::Update, me),
                    (EventKind::Destroy, me)
                ],
                "ctnetlink events carry the writer's port id"
            );
            assert_eq!(got[0].entry.orig.dst, IpAddr::from(VIP));
            // The table's own event source suppresses all three.
            assert_eq!(events.next_batch(Duration::from_millis(300)).unwrap(), None);
            assert_eq!(events.stats().echoes, 3);
            assert_eq!(events.stats().read, 3);
        });
    }

    #[test]
    fn a_tiny_receive_buffer_and_a_burst_is_an_overrun() {
        let Some(ns) = NetNs::new() else { return };
        ns.run(|| {
            let mut raw = EventSocket::with_rcvbuf(4096).unwrap();
            // Another table's events (port id unknown to them), tiny too.
            let (_, mut events) = kernel::open_with(filter(), 4096).unwrap();
            let (mut table, _) = kernel::open(filter()).unwrap();
            let entries = kernel::synthetic_entries(2000, VIP);
            assert_eq!(table.upsert(&entries).written, 2000);
            let mut overrun = false;
            let mut n = 0;
            while let Some(b) = raw.next_batch(Duration::from_millis(300)).unwrap() {
                overrun |= b.overrun;
                n += b.events.len();
            }
            assert!(overrun, "2000 events into 4 KiB and no overrun ({n} read)");
            assert!(n < 2000);
            // KernelEvents: events before the overrun, then Overrun.
            let mut saw = false;
            while let Some(b) = events.next_batch(Duration::from_millis(300)).unwrap() {
                saw |= b == SourceBatch::Overrun;
            }
            assert!(saw);
            assert!(events.stats().overruns >= 1);
        });
    }

    #[test]
    fn the_kernel_refuses_nat_and_status_changes_on_update() {
        let Some(ns) = NetNs::new() else { return };
        ns.run(|| {
            let mut s = ConntrackSocket::open().unwrap();
            let ct = kernel::to_kernel(&dnat("203.0.113.9", 42000)).unwrap();
            assert!(ct.nat_dst.is_some());
            let a = s.batch(&[Request::Create(&ct), Request::Upsert(&ct)]).unwrap();
            assert!(a[0].is_ok(), "{a:?}");
            // ctnetlink_change_conntrack: NAT only for new conntracks.
            assert_eq!(
                a[1].as_ref().err().and_then(errno_of),
                Some(libc::EOPNOTSUPP),
                "{a:?}"
            );
            // Clearing ASSURED ("can only be set") is EBUSY.
            let mut cleared = ct.clone();
            cleared.status = Some(codec::status::SEEN_REPLY);
            let a = s.batch(&[Request::Update(&cleared)]).unwrap();
            assert_eq!(a[0].as_ref().err().and_then(errno_of), Some(libc::EBUSY));
            // Update of an absent entry without NLM_F_CREATE: ENOENT.
            let other = kernel::to_kernel(&dnat("203.0.113.10", 1)).unwrap();
            let a = s.batch(&[Request::Update(&other)]).unwrap();
            assert!(matches!(a[0], Err(ConntrackError::NotFound)), "{a:?}");
        });
    }
}
