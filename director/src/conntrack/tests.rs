//! Codec tests: real bytes of the conntrack CLI and the kernel
//! (`testdata/conntrack.txt`), round trips, hostile input.

use super::codec::{self, cta, msg, status, AttrSet};
use super::nl::{AttrIter, MsgIter, Writer};
use super::*;
use crate::test_captures::{self, Capture};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn captures() -> Vec<Capture> {
    test_captures::parse(include_str!("testdata/conntrack.txt"))
}

fn capture(prefix: &str) -> Capture {
    captures()
        .into_iter()
        .find(|c| c.cmd.starts_with(prefix))
        .unwrap_or_else(|| panic!("no capture of {prefix}"))
}

/// The entries of the kernel's replies (message type NEW, i.e. dump
/// entries), decoded.
fn entries(c: &Capture) -> Vec<Conntrack> {
    c.got
        .iter()
        .filter_map(|m| {
            let msg = MsgIter::new(m).next().unwrap().unwrap();
            (msg.header.kind == codec::msg_type(msg::NEW))
                .then(|| codec::decode(msg.payload).unwrap())
        })
        .collect()
}

/// What `conntrack -L -o extended` prints for an entry (the fields we
/// model), so decoded entries can be compared with the CLI's own lines.
fn cli_line(ct: &Conntrack) -> String {
    let fam = match ct.family {
        Family::Ipv4 => "ipv4     2",
        Family::Ipv6 => "ipv6     10",
    };
    let pname = match ct.orig.protocol {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "?",
    };
    let mut s = format!(
        "{fam} {pname:<8} {} {}",
        ct.orig.protocol,
        ct.timeout.unwrap()
    );
    if let Some(t) = &ct.tcp {
        s += &format!(" {}", t.state);
    }
    let st = ct.status.unwrap();
    let tuple = |t: &Tuple, c: Option<Counters>| {
        let mut s = format!(" src={} dst={}", t.src, t.dst);
        if let Some(i) = t.icmp {
            s += &format!(" type={} code={} id={}", i.kind, i.code, i.id);
        } else {
            s += &format!(
                " sport={} dport={}",
                t.src_port.unwrap(),
                t.dst_port.unwrap()
            );
        }
        if let Some(c) = c {
            s += &format!(" packets={} bytes={}", c.packets, c.bytes);
        }
        s
    };
    s += &tuple(&ct.orig, ct.counters_orig);
    if st & status::SEEN_REPLY == 0 {
        s += " [UNREPLIED]";
    }
    s += &tuple(&ct.reply, ct.counters_reply);
    if st & status::ASSURED != 0 {
        s += " [ASSURED]";
    }
    s += &format!(" mark={}", ct.mark.unwrap());
    if let Some(z) = ct.zone {
        s += &format!(" zone={z}");
    }
    s += &format!(" use={}", ct.use_count.unwrap());
    s
}

#[test]
fn dump_replies_decode_to_what_the_cli_printed() {
    let mut checked = 0;
    for c in captures().iter().filter(|c| c.cmd.contains(" -L ")) {
        let ours: Vec<String> = entries(c).iter().map(cli_line).collect();
        // `-L -w 3` and `-L -p tcp` filter in the CLI, so every printed
        // line must be one of ours, and unfiltered dumps must match 1:1.
        for p in &c.printed {
            assert!(
                ours.contains(p),
                "{}: CLI printed\n{p}\nours:\n{ours:#?}",
                c.cmd
            );
            checked += 1;
        }
        if c.cmd == "conntrack -L -o extended" {
            let mut a = ours.clone();
            let mut b = c.printed.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
    }
    assert!(checked >= 12, "only {checked} lines compared");
}

#[test]
fn real_traffic_decodes_established_with_counters() {
    let c = capture("conntrack -L -p tcp");
    let es: Vec<_> = entries(&c)
        .into_iter()
        .filter(|e| e.orig.dst_port == Some(8080))
        .collect();
    assert_eq!(es.len(), 2, "{es:#?}");
    let est = es
        .iter()
        .find(|e| e.is_tcp_established())
        .expect("ESTABLISHED");
    assert_eq!(est.orig.src, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(est.counters_orig.unwrap().bytes, 1164);
    assert_eq!(est.status.unwrap() & status::ASSURED, status::ASSURED);
    let tcp = est.tcp.as_ref().unwrap();
    assert!(tcp.wscale_orig.is_some() && tcp.flags_orig.is_some());
    let tw = es.iter().find(|e| !e.is_tcp_established()).unwrap();
    assert_eq!(tw.tcp.as_ref().unwrap().state, TcpState::TIME_WAIT);
}

#[test]
fn kernel_entries_reencode_byte_for_byte() {
    let mut n = 0;
    for c in captures() {
        for m in &c.got {
            let msg = MsgIter::new(m).next().unwrap().unwrap();
            if msg.header.kind != codec::msg_type(msg::NEW) {
                continue;
            }
            let ct = codec::decode(msg.payload).unwrap();
            // Something we do not model is kept (CTA_SYNPROXY here) and
            // written back where the kernel put it (last).
            let mut w = Writer::new();
            let h = msg.header;
            codec::encode_entry(&mut w, msg::NEW, h.flags, h.seq, &ct, AttrSet::All).unwrap();
            // The kernel fills nlmsg_pid with our port id; we send 0.
            let mut want = m.clone();
            want[12..16].copy_from_slice(&0u32.to_ne_bytes());
            assert_eq!(hex(&w.buf), hex(&want), "{}", c.cmd);
            n += 1;
        }
    }
    assert!(n >= 20, "{n}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The CLI's own NEW requests decode with our decoder, and what our
/// encoder makes of them decodes to the same entry.
#[test]
fn cli_new_requests_decode_and_our_encoding_agrees() {
    let mut n = 0;
    for c in captures()
        .iter()
        .filter(|c| c.cmd.starts_with("conntrack -I"))
    {
        let m = MsgIter::new(&c.sent[0]).next().unwrap().unwrap();
        assert_eq!(m.header.kind, codec::msg_type(msg::NEW));
        let cli = codec::decode(m.payload).unwrap();
        let mut w = Writer::new();
        codec::encode_new(&mut w, 1, &cli).unwrap();
        let ours = MsgIter::new(&w.buf).next().unwrap().unwrap();
        assert_eq!(ours.header.flags, m.header.flags, "{}", c.cmd);
        let mut back = codec::decode(ours.payload).unwrap();
        // We add CONFIRMED to a status (the kernel wants it); the CLI sends
        // it too whenever it sends a status, so nothing changes here.
        back.status = back
            .status
            .map(|s| s | (cli.status.unwrap_or(0) & status::CONFIRMED));
        assert_eq!(back, cli, "{}", c.cmd);
        n += 1;
    }
    assert_eq!(n, 5);
    let tw = codec::decode(
        MsgIter::new(&capture("conntrack -I -p tcp -s 192.0.2.10").sent[0])
            .next()
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(tw.zone, Some(3));
    assert_eq!(tw.tcp.unwrap().state, TcpState::TIME_WAIT);
    assert_eq!(tw.reply.src, "10.0.1.11".parse::<IpAddr>().unwrap());
    assert_eq!(tw.reply.src_port, Some(8080));
}

#[test]
fn dump_and_delete_requests_match_the_cli_bytes() {
    for (cmd, fam) in [
        ("conntrack -L -o extended", None),
        ("conntrack -L -f ipv6", Some(Family::Ipv6)),
    ] {
        let c = capture(cmd);
        let m = MsgIter::new(&c.sent[0]).next().unwrap().unwrap();
        let mut w = Writer::new();
        codec::encode_dump(&mut w, m.header.seq, fam).unwrap();
        assert_eq!(hex(&w.buf), hex(&c.sent[0]), "{cmd}");
    }
    // `conntrack -D` dumps, then deletes by the whole entry; the kernel
    // only needs the original tuple, which must be the same bytes as ours.
    let c = capture("conntrack -D");
    let m = MsgIter::new(&c.sent[1]).next().unwrap().unwrap();
    assert_eq!(m.header.kind, codec::msg_type(msg::DELETE));
    let cli = codec::decode(m.payload).unwrap();
    let mut w = Writer::new();
    codec::encode_delete(&mut w, 1, &cli.orig, None).unwrap();
    let ours = MsgIter::new(&w.buf).next().unwrap().unwrap();
    let first = |p: &[u8]| {
        AttrIter::new(&p[4..])
            .next()
            .unwrap()
            .unwrap()
            .value
            .to_vec()
    };
    assert_eq!(first(ours.payload), first(m.payload));
    assert_eq!(ours.header.flags, m.header.flags);
}

// ------------------------------------------------------------ hostile input

fn sample() -> Conntrack {
    let c = capture("conntrack -L -p tcp");
    // The loopback connection of traffic.py: real protoinfo and counters.
    entries(&c)
        .into_iter()
        .find(|e| e.is_tcp_established() && e.orig.src == IpAddr::V4(Ipv4Addr::LOCALHOST))
        .unwrap()
}

fn sample_bytes() -> Vec<u8> {
    let mut w = Writer::new();
    codec::encode_entry(&mut w, msg::NEW, 0, 1, &sample(), AttrSet::All).unwrap();
    w.buf
}

#[test]
fn truncation_is_an_error_never_a_panic() {
    let b = sample_bytes();
    let payload = &b[16..];
    for n in 0..payload.len() {
        // Any prefix either fails with a clear error or (cut between
        // attributes after both tuples) decodes to fewer attributes.
        match codec::decode(&payload[..n]) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(ct) => assert_eq!(ct.orig, sample().orig),
        }
    }
}

#[test]
fn attribute_lengths_past_the_end_or_below_the_header_are_rejected() {
    let b = sample_bytes();
    let mut p = b[16..].to_vec();
    // First attribute (CTA_TUPLE_ORIG) claims more than the message holds.
    p[4..6].copy_from_slice(&4000u16.to_ne_bytes());
    let e = codec::decode(&p).unwrap_err();
    assert!(e.detail.contains("claims length 4000"), "{e}");
    // A length below the 4-byte header.
    p[4..6].copy_from_slice(&2u16.to_ne_bytes());
    assert!(codec::decode(&p).unwrap_err().detail.contains("length 2"));
    // A nested address of the wrong size: CTA_IP_V4_SRC inside ORIG/IP
    // is at payload offset 4 (nfgenmsg) + 4 (ORIG) + 4 (IP) = 12.
    let mut p = b[16..].to_vec();
    p[12..14].copy_from_slice(&7u16.to_ne_bytes());
    let e = codec::decode(&p).unwrap_err();
    assert!(e.path.contains("CTA_TUPLE_ORIG/CTA_TUPLE_IP"), "{e}");
    assert!(e.detail.contains("3 bytes, expected 4"), "{e}");
}

#[test]
fn missing_and_inconsistent_attributes_are_rejected() {
    // No tuples at all.
    let e = codec::decode(&[2, 0, 0, 0]).unwrap_err();
    assert_eq!(e.detail, "no CTA_TUPLE_ORIG");
    // Unknown family.
    assert!(codec::decode(&[7, 0, 0, 0]).is_err());
    // IPv6 addresses in an AF_INET message.
    let mut ct = sample();
    ct.family = Family::Ipv6;
    let mut w = Writer::new();
    assert!(codec::encode_entry(&mut w, msg::NEW, 0, 1, &ct, AttrSet::All).is_err());
    assert!(w.buf.is_empty(), "a failed encode leaves nothing behind");
    let mut b = sample_bytes();
    b[16] = libc::AF_INET6 as u8;
    let e = codec::decode(&b[16..]).unwrap_err();
    assert!(e.detail.contains("does not match family"), "{e}");
}

#[test]
fn create_needs_a_timeout_and_drops_kernel_only_state() {
    let mut ct = sample();
    ct.timeout = None;
    let mut w = Writer::new();
    let e = codec::encode_new(&mut w, 1, &ct).unwrap_err();
    assert!(e.to_string().contains("timeout"));
    let ct = sample();
    codec::encode_new(&mut w, 1, &ct).unwrap();
    let m = MsgIter::new(&w.buf).next().unwrap().unwrap();
    let kinds: Vec<u16> = AttrIter::new(&m.payload[4..])
        .map(|a| a.unwrap().kind)
        .collect();
    for k in [cta::ID, cta::USE, cta::COUNTERS_ORIG, cta::COUNTERS_REPLY] {
        assert!(!kinds.contains(&k), "{k} in {kinds:?}");
    }
    let back = codec::decode(m.payload).unwrap();
    assert_eq!(
        back.status,
        Some(status::SEEN_REPLY | status::ASSURED | status::CONFIRMED)
    );
}

#[test]
fn nat_from_tuples() {
    let c: IpAddr = "192.0.2.10".parse().unwrap();
    let vip: IpAddr = "192.0.2.100".parse().unwrap();
    let rs: IpAddr = "10.0.1.11".parse().unwrap();
    let orig = Tuple::ports(6, c, 50000, vip, 80);
    let plain = Conntrack::new(orig.clone(), orig.inverted()).with_nat_from_tuples();
    assert_eq!((plain.nat_src, plain.nat_dst), (None, None));
    let dnat = Conntrack::new(orig.clone(), Tuple::ports(6, rs, 8080, c, 50000));
    let dnat = dnat.with_nat_from_tuples();
    assert_eq!(dnat.nat_src, None);
    let n = dnat.nat_dst.clone().unwrap();
    assert_eq!((n.min_ip, n.min_port), (rs, Some(8080)));
    assert_eq!(dnat.reply, dnat.orig.inverted());
    // Round trip through the request encoding.
    let mut d = dnat;
    d.timeout = Some(60);
    let mut w = Writer::new();
    codec::encode_new(&mut w, 1, &d).unwrap();
    let m = MsgIter::new(&w.buf).next().unwrap().unwrap();
    assert_eq!(codec::decode(m.payload).unwrap(), d);
}

#[test]
fn summary_counts_established_as_active() {
    let c = capture("conntrack -L -p tcp");
    let all = entries(&c);
    let s = flow_summary(&all);
    // The ICMP entry has no ports and is left out.
    assert_eq!(
        s.len(),
        all.iter().filter(|e| e.orig.dst_port.is_some()).count()
    );
    let counts = flow_counts(&all);
    let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let c8080 = counts.iter().find(|c| c.orig_dst == lo).unwrap();
    assert_eq!((c8080.active, c8080.inactive), (1, 1));
    let dnat = counts
        .iter()
        .find(|c| c.orig_dst.port() == 80 && c.reply_src.port() == 8080)
        .unwrap();
    assert_eq!(dnat.reply_src, "10.0.1.11:8080".parse().unwrap());
    assert_eq!((dnat.active, dnat.inactive), (0, 1));
}

// ---------------------------------------------------------------- proptest

fn ip(v6: bool) -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
    .prop_filter("family", move |a| a.is_ipv6() == v6)
}

fn raw_attrs(base: u16) -> impl Strategy<Value = Vec<RawAttr>> {
    // Unknown types above what the decoder models at every level.
    proptest::collection::vec(
        (0u16..8, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(move |(k, value)| {
            RawAttr {
                kind: base + k,
                value,
            }
        }),
        0..2,
    )
}

fn tuple(v6: bool) -> impl Strategy<Value = Tuple> {
    (
        ip(v6),
        ip(v6),
        prop_oneof![Just(6u8), Just(17), Just(132), Just(1), Just(58), Just(47)],
        any::<(u16, u16, u8, u8)>(),
        proptest::option::of(any::<u16>()),
        raw_attrs(10),
        raw_attrs(10),
        raw_attrs(20),
    )
        .prop_map(
            move |(src, dst, p, (a, b, c, d), zone, unknown, ip_unknown, proto_unknown)| {
                let icmpish = p == 1 || p == 58;
                Tuple {
                    src,
                    dst,
                    protocol: if icmpish && v6 {
                        58
                    } else if icmpish {
                        1
                    } else {
                        p
                    },
                    src_port: (!icmpish).then_some(a),
                    dst_port: (!icmpish).then_some(b),
                    icmp: icmpish.then_some(Icmp {
                        id: a,
                        kind: c,
                        code: d,
                    }),
                    zone,
                    unknown,
                    ip_unknown,
                    proto_unknown,
                }
            },
        )
}

fn conntrack() -> impl Strategy<Value = Conntrack> {
    any::<bool>().prop_flat_map(|v6| {
        (
            (tuple(v6), tuple(v6)),
            proptest::option::of(any::<u16>()),
            proptest::array::uniform5(proptest::option::of(any::<u32>())),
            proptest::option::of((
                0u8..12,
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<[u8; 2]>()),
            )),
            proptest::option::of(any::<(u64, u64)>()),
            proptest::option::of("[a-z]{1,8}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 16)),
            proptest::option::of(any::<(u32, u32, u32)>()),
            proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>()))),
            proptest::option::of((ip(v6), proptest::option::of(any::<u16>()))),
            raw_attrs(30),
        )
            .prop_map(
                move |(
                    (orig, reply),
                    zone,
                    [st, to, mark, id, use_count],
                    tcp,
                    ctr,
                    helper,
                    labels,
                    seq,
                    ts,
                    nat,
                    unknown,
                )| {
                    let mut ct = Conntrack::new(orig, reply);
                    ct.zone = zone;
                    ct.status = st;
                    ct.timeout = to;
                    ct.mark = mark;
                    ct.id = id;
                    ct.use_count = use_count;
                    ct.tcp = tcp.map(|(s, ws, fl)| TcpInfo {
                        state: TcpState(s),
                        wscale_orig: ws,
                        wscale_reply: ws.map(|w| w ^ 1),
                        flags_orig: fl.map(|f| TcpFlags {
                            flags: f[0],
                            mask: f[1],
                        }),
                        flags_reply: None,
                        unknown: vec![],
                    });
                    ct.counters_orig = ctr.map(|(packets, bytes)| Counters { packets, bytes });
                    ct.counters_reply = ct.counters_orig;
                    ct.helper = helper.clone();
                    ct.secctx = helper;
                    ct.labels = labels;
                    ct.seq_adj_orig = seq.map(|(a, b, c)| SeqAdj {
                        correction_pos: a,
                        offset_before: b,
                        offset_after: c,
                    });
                    ct.timestamp = ts.map(|(start, stop)| Timestamp { start, stop });
                    ct.nat_dst = nat.map(|(ip, port)| NatRange {
                        min_ip: ip,
                        max_ip: Some(ip),
                        min_port: port,
                        max_port: port,
                    });
                    ct.unknown = unknown;
                    ct
                },
            )
    })
}

proptest! {
    #[test]
    fn repr_round_trips(ct in conntrack()) {
        let mut w = Writer::new();
        codec::encode_entry(&mut w, msg::NEW, 0, 9, &ct, AttrSet::All).unwrap();
        let m = MsgIter::new(&w.buf).next().unwrap().unwrap();
        prop_assert_eq!(codec::decode(m.payload).unwrap(), ct);
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&b);
        for m in MsgIter::new(&b).flatten() {
            let _ = codec::decode(m.payload);
        }
    }

    #[test]
    fn mutated_real_entries_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut b = sample_bytes();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        let _ = codec::decode(&b[16..]);
    }
}

#[test]
fn ip_vs_conn_text_lists_only_the_services_dnat_entries_in_ipvsadm_form() {
    let c = capture("conntrack -L -p tcp");
    let all = entries(&c);
    let config = crate::config::parse(
        "[global]\nrouter_id = \"t\"\n[[virtual_server]]\nname = \"w\"\naddress = \"192.0.2.100:80\"\n\
         scheduler = \"rr\"\n[[virtual_server.real_server]]\naddress = \"10.0.1.11:8080\"\n",
        "t.toml",
    )
    .unwrap();
    let desired = crate::desired::desired_table(&config);
    let text = super::summary::ip_vs_conn_text(&all, &desired);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "header + the one DNAT entry of 192.0.2.100:80:\n{text}"
    );
    assert!(
        lines[1].starts_with("TCP C000020A C350 C0000264 0050 0A00010B 1F90 TIME_WAIT   "),
        "{text}"
    );
    let listed = crate::format::connections(&text, &Default::default()).unwrap();
    let row = listed.lines().last().unwrap();
    assert!(
        row.starts_with("TCP 01:5")
            && row.ends_with("TIME_WAIT   192.0.2.10:50000   192.0.2.100:80     10.0.1.11:8080"),
        "{listed}"
    );
    // No service, no rows.
    let empty = crate::desired::DesiredTable::default();
    assert_eq!(
        super::summary::ip_vs_conn_text(&all, &empty)
            .lines()
            .count(),
        1
    );
}
