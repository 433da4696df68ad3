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

/// Only the last message of each send asks for an ACK (socket.rs module
/// doc): refusals anywhere, including at the fence and past a send
/// boundary, must still land on their own request, and silent successes
/// must read as done, not as lost.
#[test]
fn a_batch_answers_each_request_with_acks_only_at_the_fence() {
    batch_answers_each_request(BatchAcks::Fence);
}

#[test]
fn a_batch_answers_each_request_with_an_ack_per_message() {
    batch_answers_each_request(BatchAcks::Every);
}

fn batch_answers_each_request(acks: BatchAcks) {
    let Some(ns) = NetNs::new() else { return };
    let a = tcp_entry("10.0.0.1", 1000, "10.0.0.2", 80);
    let b = tcp_entry("10.0.0.1", 1001, "10.0.0.2", 80);
    let gone = tcp_entry("10.0.0.1", 1002, "10.0.0.2", 80);
    // Enough creates to need several sends of BATCH_BYTES.
    let many: Vec<Conntrack> = (0..3000)
        .map(|i| tcp_entry("10.0.1.1", 2000 + i, "10.0.0.2", 80))
        .collect();
    let (first, rest, listed) = ns.run(|| {
        let mut s = ConntrackSocket::open().unwrap();
        s.set_batch_acks(acks);
        let first = s
            .batch(&[
                Request::Create(&a),
                Request::Create(&a),
                Request::Create(&b),
                Request::Delete {
                    orig: &gone.orig,
                    zone: None,
                },
                Request::Get {
                    orig: &a.orig,
                    zone: None,
                },
                // The fence itself refused.
                Request::Create(&b),
            ])
            .unwrap();
        // Refusals spread over the sends: every 700th create is repeated.
        let mut reqs: Vec<Request<'_>> = Vec::new();
        let mut duplicates = Vec::new();
        for (i, ct) in many.iter().enumerate() {
            reqs.push(Request::Create(ct));
            if i % 700 == 0 {
                duplicates.push(reqs.len());
                reqs.push(Request::Create(ct));
            }
        }
        let rest = s.batch(&reqs).unwrap();
        (first, (rest, duplicates), s.dump(None).unwrap().len())
    });
    let (rest, expected) = rest;
    assert!(first[0].as_ref().unwrap().is_none());
    assert!(
        matches!(first[1], Err(ConntrackError::Exists)),
        "{:?}",
        first[1]
    );
    assert!(first[2].as_ref().unwrap().is_none());
    assert!(
        matches!(first[3], Err(ConntrackError::NotFound)),
        "{:?}",
        first[3]
    );
    let got = first[4].as_ref().unwrap().as_ref().unwrap();
    assert_eq!(got.orig, a.orig);
    assert!(
        matches!(first[5], Err(ConntrackError::Exists)),
        "{:?}",
        first[5]
    );
    let refused: Vec<usize> = (0..rest.len()).filter(|&i| rest[i].is_err()).collect();
    assert_eq!(refused, expected);
    for i in &refused {
        assert!(
            matches!(rest[*i], Err(ConntrackError::Exists)),
            "{:?}",
            rest[*i]
        );
    }
    assert_eq!(listed, 2 + many.len());
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
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
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

    /// A backup leaves the groups (ctsync_host::table::Subscription): its
    /// writes must then deliver nothing, and rejoining must deliver again.
    #[test]
    fn a_subscription_switched_off_delivers_nothing_until_switched_on() {
        let Some(ns) = NetNs::new() else { return };
        ns.run(|| {
            let mut raw = EventSocket::open().unwrap();
            let (mut table, mut events) = kernel::open(filter()).unwrap();
            let switch = events.subscription();
            raw.membership().set(false).unwrap();
            switch.set_listening(false).unwrap();
            // Twice: leaving a group already left is not an error.
            switch.set_listening(false).unwrap();
            assert_eq!(table.upsert(&[dnat("203.0.113.5", 41000)]).written, 1);
            assert!(drain(&mut raw).is_empty());
            assert_eq!(events.next_batch(Duration::from_millis(100)).unwrap(), None);
            assert_eq!(events.stats().read, 0);
            raw.membership().set(true).unwrap();
            switch.set_listening(true).unwrap();
            assert_eq!(table.upsert(&[dnat("203.0.113.5", 41001)]).written, 1);
            assert_eq!(drain(&mut raw).len(), 1);
            // The table's echo again, read (and suppressed) by the source.
            assert_eq!(events.next_batch(Duration::from_millis(300)).unwrap(), None);
            assert_eq!(events.stats().echoes, 1);
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
            let a = s
                .batch(&[Request::Create(&ct), Request::Upsert(&ct)])
                .unwrap();
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

    fn nft(ns: &TestNetns, rules: &str) {
        let file = std::env::temp_dir().join(format!("{}.nft", ns.name));
        std::fs::write(&file, rules).unwrap();
        let r = std::panic::catch_unwind(|| ns.exec(&["nft", "-f", file.to_str().unwrap()]));
        let _ = std::fs::remove_file(&file);
        r.unwrap();
    }

    /// Client namespace C (10.9.0.1) -- veth -- director namespace L
    /// (10.9.0.2), C routes the VIP via L. Both deleted on drop.
    fn pair() -> Option<(NetNs, NetNs)> {
        let l = NetNs::new()?;
        let c = NetNs::new()?;
        l.ip(&[
            "link", "add", "l0", "type", "veth", "peer", "name", "c0", "netns", &c.name,
        ]);
        l.ip(&["addr", "add", "10.9.0.2/24", "dev", "l0"]);
        l.ip(&["link", "set", "l0", "up"]);
        c.ip(&["addr", "add", "10.9.0.1/24", "dev", "c0"]);
        c.ip(&["link", "set", "c0", "up"]);
        c.ip(&["route", "add", "192.0.2.100/32", "via", "10.9.0.2"]);
        Some((l, c))
    }

    #[test]
    fn events_arrive_for_a_tcp_connection_through_a_dnat_rule() {
        let Some((l, c)) = pair() else { return };
        nft(
            &l,
            "table ip dct {\n chain pre {\n  type nat hook prerouting priority -100;\n  ip daddr 192.0.2.100 tcp dport 80 dnat to 10.9.0.2:9000\n }\n}\n",
        );
        let (listener, mut events) = l.run(|| {
            (
                TcpListener::bind("10.9.0.2:9000").unwrap(),
                kernel::open(filter()).unwrap().1,
            )
        });
        let client = c.run(|| TcpStream::connect("192.0.2.100:80").unwrap());
        let (server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), ip("10.9.0.1"));
        let cport = client.local_addr().unwrap().port();
        let mut got = Vec::new();
        while let Some(b) = events.next_batch(Duration::from_millis(300)).unwrap() {
            match b {
                SourceBatch::Events(v) => got.extend(v),
                SourceBatch::Overrun => panic!("overrun"),
            }
        }
        drop((client, server));
        let Some(Event::New(new)) = got.first() else {
            panic!("no New event first: {got:#?}")
        };
        assert_eq!(new.original.src, ip("10.9.0.1"));
        assert_eq!(new.original.dst, IpAddr::from(VIP));
        assert_eq!(
            new.original.l4,
            L4::Ports {
                src: cport,
                dst: 80
            }
        );
        assert_eq!(new.reply.src, ip("10.9.0.2"));
        assert_eq!(
            new.reply.l4,
            L4::Ports {
                src: 9000,
                dst: cport
            }
        );
        assert_ne!(new.status & ctsync::entry::status::DST_NAT, 0);
        let established = got.iter().any(|e| {
            matches!(e, Event::Update(u) if u.tcp.map(|t| t.state)
                == Some(ctsync::entry::tcp_state::ESTABLISHED)
                && u.key() == new.key())
        });
        assert!(established, "{got:#?}");
        assert_eq!(events.stats().echoes, 0);
    }

    /// The CLI's line for an entry's original tuple.
    fn cli_line<'a>(cli: &'a [String], e: &Entry) -> &'a str {
        let L4::Ports { src, dst } = e.original.l4 else {
            panic!()
        };
        let pat = format!(
            "src={} dst={} sport={src} dport={dst} ",
            e.original.src, e.original.dst
        );
        cli.iter()
            .find(|l| l.contains(&pat))
            .unwrap_or_else(|| panic!("{pat} not listed"))
    }

    #[test]
    fn ten_thousand_entries_upserted_updated_and_deleted() {
        let Some(ns) = NetNs::new() else { return };
        let mut entries = kernel::synthetic_entries(10_000, VIP);
        for (i, e) in entries.iter_mut().enumerate() {
            if i % 3 == 1 {
                e.zone = 5;
                e.mark = 1000 + i as u32;
            }
        }
        // SNAT + DNAT: client -> VIP, to a real server, from 198.51.100.1.
        let mut both = dnat("203.0.113.77", 43000);
        both.reply.dst = ip("198.51.100.1");
        both.reply.l4 = L4::Ports {
            src: 8080,
            dst: 61000,
        };
        both.status |= ctsync::entry::status::SRC_NAT;
        entries.push(both);
        let n = entries.len();
        let dumped = ns.run(|| {
            let (mut t, _) = kernel::open(filter()).unwrap();
            let a = t.upsert(&entries);
            assert_eq!(
                (a.written, a.failed.len(), a.table_full),
                (n, 0, false),
                "{a:?}"
            );
            t.dump().unwrap()
        });
        assert_eq!(dumped.len(), n);
        let cli = ns.cli_list();
        assert_eq!(cli.len(), n);
        for i in [0, 1, 2, 4_999, 9_998] {
            let e = &entries[i];
            let line = cli_line(&cli, e);
            let L4::Ports { src: cport, .. } = e.original.l4 else {
                panic!()
            };
            assert!(line.contains(" ESTABLISHED "), "{line}");
            assert!(
                line.contains(&format!(
                    "src={} dst={} sport=8080 dport={cport} [ASSURED]",
                    e.reply.src, e.reply.dst
                )),
                "{line}"
            );
            assert!(line.contains(&format!("mark={} ", e.mark)), "{line}");
            assert_eq!(line.contains("zone=5"), e.zone == 5, "{line}");
            let got = dumped.iter().find(|d| d.key() == e.key()).unwrap();
            assert_eq!(
                Entry {
                    timeout: e.timeout,
                    ..*got
                },
                *e,
                "dump round trip of entry {i}"
            );
        }
        let line = cli_line(&cli, &both);
        assert!(
            line.contains("src=10.1.0.11 dst=198.51.100.1 sport=8080 dport=61000"),
            "{line}"
        );
        let got = dumped.iter().find(|d| d.key() == both.key()).unwrap();
        assert_eq!(
            Entry {
                timeout: both.timeout,
                ..*got
            },
            both
        );

        // Update: timeout and TCP state of every entry, the NAT of one
        // (another real server: delete + create), ASSURED cleared on
        // another (EBUSY on change: delete + create).
        let mut updated = entries.clone();
        for e in &mut updated {
            e.timeout = 77;
            if let Some(t) = &mut e.tcp {
                t.state = ctsync::entry::tcp_state::FIN_WAIT;
            }
        }
        updated[0].reply.src = ip("10.1.0.99");
        updated[1].status &= !ctsync::entry::status::ASSURED;
        let dumped = ns.run(|| {
            let (mut t, _) = kernel::open(filter()).unwrap();
            let a = t.upsert(&updated);
            assert_eq!((a.written, a.failed.len()), (n, 0), "{a:?}");
            t.dump().unwrap()
        });
        assert_eq!(dumped.len(), n);
        for d in &dumped {
            assert!((70..=77).contains(&d.timeout), "{d:?}");
            assert_eq!(d.tcp.unwrap().state, ctsync::entry::tcp_state::FIN_WAIT);
        }
        let find = |k| dumped.iter().find(|d| d.key() == k).unwrap();
        assert_eq!(find(updated[0].key()).reply.src, ip("10.1.0.99"));
        assert_eq!(
            find(updated[1].key()).status & ctsync::entry::status::ASSURED,
            0
        );
        let cli = ns.cli_list();
        assert!(cli_line(&cli, &updated[0]).contains("src=10.1.0.99 "));
        assert!(cli_line(&cli, &updated[2]).contains(" FIN_WAIT "));

        // Delete, twice: the second time everything is already gone.
        let keys: Vec<_> = entries.iter().map(Entry::key).collect();
        ns.run(|| {
            let (mut t, _) = kernel::open(filter()).unwrap();
            let a = t.delete(&keys);
            assert_eq!((a.written, a.failed.len()), (n, 0), "{a:?}");
            let a = t.delete(&keys);
            assert_eq!((a.written, a.failed.len()), (n, 0), "ENOENT is fine: {a:?}");
            assert_eq!(t.dump().unwrap(), vec![]);
        });
        assert!(ns.cli_list().is_empty());
    }

    #[test]
    fn a_written_dnat_entry_carries_traffic_without_a_nat_rule() {
        let Some((l, c)) = pair() else { return };
        // NAT hooks without a single NAT rule: the translation can only
        // come from the entry written below. Empty nat chains register
        // the NAT hooks but not conntrack's (nf_ct_netns_get is called by
        // expressions that need conntrack, not by chains), so one rule
        // that only counts established flows turns tracking on, as the
        // dataplane's own rules do on a real backup.
        nft(
            &l,
            "table ip dct {\n chain pre {\n  type nat hook prerouting priority -100;\n }\n chain post {\n  type nat hook postrouting priority 100;\n }\n chain count {\n  type filter hook prerouting priority 0;\n  ct state established counter\n }\n}\n",
        );
        let mut e = dnat("10.9.0.1", 5000);
        e.proto = ctsync::entry::proto::UDP;
        e.tcp = None;
        e.original.l4 = L4::Ports { src: 5000, dst: 53 };
        e.reply.src = ip("10.9.0.2");
        e.reply.l4 = L4::Ports {
            src: 9053,
            dst: 5000,
        };
        e.status = ctsync::entry::status::SEEN_REPLY | ctsync::entry::status::ASSURED;
        let server = l.run(|| {
            let (mut t, _) = kernel::open(filter()).unwrap();
            let a = t.upsert(&[e]);
            assert_eq!(a.written, 1, "{a:?}");
            UdpSocket::bind("10.9.0.2:9053").unwrap()
        });
        let client = c.run(|| UdpSocket::bind("10.9.0.1:5000").unwrap());
        for s in [&server, &client] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        client.send_to(b"ping", "192.0.2.100:53").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server
            .recv_from(&mut buf)
            .expect("the datagram to the VIP was not translated to the real server");
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, "10.9.0.1:5000".parse::<SocketAddr>().unwrap());
        server.send_to(b"pong", from).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        // The reply is translated back: it comes from the VIP.
        assert_eq!(from, "192.0.2.100:53".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn a_full_table_is_reported_as_table_full() {
        let Some(ns) = NetNs::new() else { return };
        // nf_conntrack_max is read-only inside a netns (6.18: mode 0444,
        // only init_net may set it), and the host's must not be touched:
        // fill this namespace's table up to it instead. ASSURED entries
        // cannot be early-dropped, so the next create is ENOMEM.
        let max: usize = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if max > 1_000_000 {
            eprintln!("SKIPPED: nf_conntrack_max {max} is too large to fill in a test");
            return;
        }
        let entries = kernel::synthetic_entries(max + 1, VIP);
        ns.run(|| {
            let (mut t, _) = kernel::open(filter()).unwrap();
            let a = t.upsert(&entries[..max]);
            assert_eq!(a.written, max, "{:?}", a.failed.first());
            let a = t.upsert(&entries[max..]);
            assert!(a.table_full, "{a:?}");
            assert_eq!(a.failed.len(), 1);
            assert!(a.failed[0].1.contains("table full"), "{a:?}");
        });
    }

    /// `cargo test -p director --release --lib measure_replication -- --ignored --nocapture`
    /// (root): the numbers of the issue, in a scratch namespace.
    #[test]
    #[ignore = "benchmark: prints numbers, takes seconds"]
    fn measure_replication() {
        let Some(ns) = NetNs::new() else { return };
        let n: usize = std::env::var("CT_MEASURE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let m = ns
            .run(|| kernel::measure(n, 256 * 1024 * 1024))
            .unwrap_or_else(|e| panic!("{e}"));
        println!("{m}");
        assert_eq!(m.events_read, n as u64, "{m}");
        assert!(!m.events_overrun);
    }
}
