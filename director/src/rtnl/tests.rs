//! Codec tests against the bytes iproute2 sends and the kernel answers
//! (`testdata/rtnl.txt`, recorded by `testdata/capture.sh`), hostile
//! input, the reconcile mapping of errnos, and the recording fake.

use super::codec::{self, ifa, AddrCmd, AddrEntry};
use super::nl::{self, AttrIter, Msg, MsgIter, Writer};
use super::socket::{self, Answer, Outcome};
use super::*;
use crate::test_captures::{self, Capture};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn captures() -> Vec<Capture> {
    test_captures::parse(include_str!("testdata/rtnl.txt"))
}

/// The `n`th capture of exactly `cmd` (the same command may run twice).
fn capture(cmd: &str, n: usize) -> Capture {
    captures()
        .into_iter()
        .filter(|c| c.cmd == cmd)
        .nth(n)
        .unwrap_or_else(|| panic!("no capture {n} of {cmd}"))
}

fn msg(b: &[u8]) -> Msg<'_> {
    MsgIter::new(b).next().unwrap().unwrap()
}

/// The message `ip` sent of type `kind` (it sends a GETLINK for the device
/// name first).
fn sent_of(c: &Capture, kind: u16) -> Vec<u8> {
    c.sent
        .iter()
        .find(|m| msg(m).header.kind == kind)
        .unwrap_or_else(|| panic!("{}: no message of type {kind} sent", c.cmd))
        .clone()
}

/// `ip`'s index of `va`: whatever the namespace gave it at capture time.
fn va_index() -> u32 {
    let c = capture("ip link show dev va", 0);
    let l = c
        .got
        .iter()
        .map(|m| msg(m))
        .filter(|m| m.header.kind == codec::RTM_NEWLINK)
        .map(|m| codec::decode_link(m.payload).unwrap())
        .find(|l| l.name.as_deref() == Some("va"))
        .unwrap();
    l.index
}

/// Our message for the request, with `ip`'s sequence number so the bytes
/// can be compared whole (both leave nlmsg_pid 0 for the kernel).
fn ours(cmd: AddrCmd, seq: u32, addr: &str, len: u8) -> Vec<u8> {
    let mut w = Writer::new();
    codec::encode_addr(&mut w, cmd, seq, va_index(), addr.parse().unwrap(), len).unwrap();
    w.buf
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

// ------------------------------------------------------------- requests

#[test]
fn ipv4_add_is_byte_identical_to_ip_addr_replace() {
    let c = capture("ip addr replace 192.0.2.10/32 dev va", 0);
    let theirs = sent_of(&c, codec::RTM_NEWADDR);
    let seq = msg(&theirs).header.seq;
    assert_eq!(
        hex(&ours(AddrCmd::Add, seq, "192.0.2.10", 32)),
        hex(&theirs)
    );
    // And spelled out, so a change of the encoder shows what moved:
    // nlmsghdr len 40, RTM_NEWADDR, REQUEST|ACK|REPLACE|CREATE;
    // ifaddrmsg AF_INET /32 flags 0 scope 0 index; IFA_LOCAL; IFA_ADDRESS.
    let idx = hex(&va_index().to_ne_bytes());
    assert_eq!(
        hex(&ours(AddrCmd::Add, 7, "192.0.2.10", 32)),
        format!(
            "28000000{}{}0700000000000000{}{idx}08000200c000020a08000100c000020a",
            "1400", "0505", "02200000"
        )
    );
}

#[test]
fn ipv4_delete_is_byte_identical_to_ip_addr_del() {
    for n in 0..2 {
        let c = capture("ip addr del 192.0.2.10/32 dev va", n);
        let theirs = sent_of(&c, codec::RTM_DELADDR);
        let seq = msg(&theirs).header.seq;
        assert_eq!(
            hex(&ours(AddrCmd::Delete, seq, "192.0.2.10", 32)),
            hex(&theirs)
        );
    }
}

#[test]
fn ipv6_add_has_nodad_in_both_places_and_ip_s_header() {
    let c = capture("ip addr replace 2001:db8::10/64 dev va nodad", 0);
    let theirs = sent_of(&c, codec::RTM_NEWADDR);
    let t = msg(&theirs);
    let b = ours(AddrCmd::Add, t.header.seq, "2001:db8::10", 64);
    let o = msg(&b);
    // Same nlmsghdr type/flags/seq and the same ifaddrmsg: AF_INET6, /64,
    // ifa_flags IFA_F_NODAD, scope 0, index.
    assert_eq!(
        (o.header.kind, o.header.flags, o.header.seq),
        (t.header.kind, t.header.flags, t.header.seq)
    );
    assert_eq!(hex(&o.payload[..8]), hex(&t.payload[..8]));
    assert_eq!(o.payload[2] as u32, ifa_f::NODAD);
    // Attributes: IFA_ADDRESS, then IFA_FLAGS = NODAD (the u32 the kernel
    // prefers over ifa_flags); `ip` sends IFA_LOCAL too, which IPv6 only
    // needs for a peer.
    let attrs: Vec<_> = AttrIter::new(&o.payload[8..]).map(|a| a.unwrap()).collect();
    assert_eq!(attrs.len(), 2);
    assert_eq!(attrs[0].kind, ifa::ADDRESS);
    assert_eq!(hex(attrs[0].value), "20010db8000000000000000000000010");
    assert_eq!(attrs[1].kind, ifa::FLAGS);
    assert_eq!(attrs[1].value, ifa_f::NODAD.to_ne_bytes());
    let idx = hex(&va_index().to_ne_bytes());
    assert_eq!(
        hex(&ours(AddrCmd::Add, 7, "2001:db8::10", 64)),
        [
            "34000000140005050700000000000000",         // nlmsghdr, len 52
            &format!("0a400200{idx}"),                  // ifaddrmsg
            "1400010020010db8000000000000000000000010", // IFA_ADDRESS
            "0800080002000000",                         // IFA_FLAGS NODAD
        ]
        .concat()
    );
}

#[test]
fn ipv6_delete_has_ip_s_header_and_no_nodad() {
    let c = capture("ip addr del 2001:db8::10/64 dev va", 0);
    let theirs = sent_of(&c, codec::RTM_DELADDR);
    let t = msg(&theirs);
    let b = ours(AddrCmd::Delete, t.header.seq, "2001:db8::10", 64);
    let o = msg(&b);
    assert_eq!(
        (o.header.kind, o.header.flags),
        (t.header.kind, t.header.flags)
    );
    assert_eq!(hex(&o.payload[..8]), hex(&t.payload[..8]));
    let attrs: Vec<_> = AttrIter::new(&o.payload[8..]).map(|a| a.unwrap()).collect();
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs[0].kind, ifa::ADDRESS);
}

#[test]
fn address_dump_request_is_byte_identical_to_ip_addr_show() {
    let c = capture("ip -d addr show dev va", 0);
    let theirs = sent_of(&c, codec::RTM_GETADDR);
    let seq = msg(&theirs).header.seq;
    let mut w = Writer::new();
    codec::encode_addr_dump(&mut w, seq, va_index()).unwrap();
    assert_eq!(hex(&w.buf), hex(&theirs));
}

#[test]
fn getlink_requests_are_pinned() {
    // RTM_GETLINK, REQUEST|ACK, ifinfomsg all zero (strict checking
    // refuses anything else), IFLA_IFNAME "va\0", IFLA_EXT_MASK SKIP_STATS.
    let mut w = Writer::new();
    codec::encode_getlink(&mut w, 7, 0, Some("va")).unwrap();
    assert_eq!(
        hex(&w.buf),
        "3000000012000500070000000000000000000000000000000000000000000000\
         070003007661000008001d0008000000"
    );
    // By index: no name.
    let mut w = Writer::new();
    codec::encode_getlink(&mut w, 7, 3, None).unwrap();
    assert_eq!(
        hex(&w.buf),
        "2800000012000500070000000000000000000000030000000000000000000000\
         08001d0008000000"
    );
    // Dump: REQUEST|DUMP (0x300), no index (the kernel refuses a filter by
    // index in link dumps).
    let mut w = Writer::new();
    codec::encode_link_dump(&mut w, 7).unwrap();
    assert_eq!(
        hex(&w.buf),
        "2800000012000103070000000000000000000000000000000000000000000000\
         08001d0008000000"
    );
}

// -------------------------------------------------------------- replies

#[test]
fn address_dump_reply_decodes_as_ip_printed_it() {
    let c = capture("ip -d addr show dev va", 0);
    let addrs: Vec<AddrEntry> = c
        .got
        .iter()
        .map(|m| msg(m))
        .filter(|m| m.header.kind == codec::RTM_NEWADDR)
        .filter_map(|m| codec::decode_addr(m.payload).unwrap())
        .collect();
    let idx = va_index();
    assert!(addrs.iter().all(|a| a.index == idx));
    let shown: Vec<String> = addrs
        .iter()
        .map(|a| {
            let fam = if a.addr.is_ipv4() { "inet" } else { "inet6" };
            let scope = if a.scope == 253 { "link" } else { "global" };
            let mut s = format!("{fam} {}/{} scope {scope}", a.addr, a.prefix_len);
            if let Some(l) = &a.label {
                s.push_str(&format!(" {l}"));
            }
            if a.flags & ifa_f::NODAD != 0 {
                s.push_str(" nodad");
            }
            if a.flags & ifa_f::TENTATIVE != 0 {
                s.push_str(" tentative");
            }
            s
        })
        .collect();
    let printed: Vec<String> = c
        .printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("inet"))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(shown, printed);
    // The IPv4 entry has IFA_LOCAL and IFA_ADDRESS; IPv6 IFA_ADDRESS only.
    assert_eq!(addrs[0].addr, v4("192.0.2.10"));
    assert_eq!(addrs[0].flags, ifa_f::PERMANENT);
    assert_eq!(addrs[1].addr, v6("2001:db8::10"));
    assert_eq!(addrs[1].flags, ifa_f::PERMANENT | ifa_f::NODAD);
}

#[test]
fn link_dump_reply_decodes_as_ip_printed_it() {
    let c = capture("ip link show", 0);
    let links: Vec<LinkEvent> = c
        .got
        .iter()
        .flat_map(|d| MsgIter::new(d).map(|m| m.unwrap()).collect::<Vec<_>>())
        .filter_map(|m| socket::link_event(&m).unwrap())
        .collect();
    let printed: Vec<(u32, String, bool)> = c
        .printed
        .iter()
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            let (idx, rest) = l.split_once(": ").unwrap();
            let name = rest.split([':', '@']).next().unwrap().to_string();
            let flags = rest.split_once('<').unwrap().1.split_once('>').unwrap().0;
            let has = |f: &str| flags.split(',').any(|x| x == f);
            // ip prints IFF_RUNNING as nothing of its own; LOWER_UP plus
            // "state UP" is what it shows for a running link.
            let up = has("UP") && rest.contains("state UP");
            (idx.parse().unwrap(), name, up)
        })
        .collect();
    let ours: Vec<(u32, String, bool)> = links
        .iter()
        .map(|l| (l.index, l.name.clone(), l.up))
        .collect();
    assert_eq!(ours, printed);
    assert_eq!(ours[0], (1, "lo".to_string(), false));
}

#[test]
fn getlink_answer_gives_the_index() {
    let c = capture("ip link show dev va", 0);
    let ev = c
        .got
        .iter()
        .map(|m| msg(m))
        .filter(|m| m.header.kind == codec::RTM_NEWLINK)
        .filter_map(|m| socket::link_event(&m).unwrap())
        .find(|l| l.name == "va")
        .unwrap();
    assert!(ev.up);
    assert!(c.printed[0].starts_with(&format!("{}: va@vb:", ev.index)));
}

#[test]
fn delete_of_a_missing_address_is_refused_by_the_kernel_and_tolerated_by_us() {
    // The second `ip addr del` of the same address: EADDRNOTAVAIL with the
    // kernel's extended-ack text.
    let c = capture("ip addr del 192.0.2.10/32 dev va", 1);
    let nack = c.got.last().unwrap();
    let m = msg(nack);
    let seq = m.header.seq;
    let mut answer = Answer::default();
    let r = answer.absorb(nack, seq, "deleting", "index 3", &mut |_| {}, &mut |_| {});
    let e = r.unwrap_err();
    match &e {
        RtnlError::Refused { errno, message, .. } => {
            assert_eq!(*errno, libc::EADDRNOTAVAIL);
            assert!(
                message.contains("kernel says: ipv4: Address not found"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(socket::tolerate(AddrCmd::Delete, Err(e)).is_ok());
    // The first one was acknowledged.
    let c = capture("ip addr del 192.0.2.10/32 dev va", 0);
    let ack = c.got.last().unwrap();
    let seq = msg(ack).header.seq;
    let mut answer = Answer::default();
    let r = answer.absorb(ack, seq, "deleting", "index 3", &mut |_| {}, &mut |_| {});
    assert_eq!(r.unwrap(), Some(Outcome::Done));
}

fn nack(errno: i32) -> RtnlError {
    socket::refused(
        "adding",
        "index 3",
        &nl::ErrorMsg {
            error: -errno,
            request: None,
            ext_msg: None,
        },
    )
}

#[test]
fn reconcile_signals_are_not_errors_and_real_errors_stay_errors() {
    use AddrCmd::*;
    assert!(socket::tolerate(Add, Err(nack(libc::EEXIST))).is_ok());
    assert!(socket::tolerate(Delete, Err(nack(libc::EADDRNOTAVAIL))).is_ok());
    assert!(socket::tolerate(Delete, Err(nack(libc::ENODEV))).is_ok());
    // Adding to a missing interface is an error that says so.
    let e = socket::tolerate(Add, Err(nack(libc::ENODEV))).unwrap_err();
    assert!(matches!(e, RtnlError::NoSuchInterface { .. }));
    assert_eq!(e.to_string(), "no such interface index 3 while adding");
    assert!(socket::tolerate(Add, Err(nack(libc::EADDRNOTAVAIL))).is_err());
    assert!(socket::tolerate(Delete, Err(nack(libc::EEXIST))).is_err());
    let e = socket::tolerate(Add, Err(nack(libc::EPERM))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel refused adding: Operation not permitted (os error 1) (errno 1)"
    );
}

#[test]
fn requests_the_kernel_cannot_take_are_refused_before_sending() {
    let e = socket::check_prefix("adding 192.0.2.1/33", v4("192.0.2.1"), 33).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid request adding 192.0.2.1/33: prefix length 33 is longer than the 32 bits of 192.0.2.1"
    );
    assert!(socket::check_prefix("x", v6("2001:db8::1"), 128).is_ok());
    assert!(socket::check_prefix("x", v6("2001:db8::1"), 129).is_err());
    assert!(socket::check_ifname("x", "eth0").is_ok());
    assert!(socket::check_ifname("x", "fifteen-chars-x").is_ok());
    for bad in ["", "sixteen-chars-xx", "a/b", "a\0b"] {
        assert!(socket::check_ifname("x", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn multicast_events_are_told_from_answers() {
    // A dump entry as the kernel sends it to a group: seq 0, pid 0.
    let c = capture("ip link show", 0);
    let mut ev = c.got[1].clone();
    ev[8..16].fill(0);
    let one: Vec<_> = MsgIter::new(&ev)
        .map(|m| socket::event_of(&m.unwrap()))
        .collect();
    assert!(one.iter().all(|e| matches!(e, Some(Ok(_)))));
    // Answers to someone (pid != 0) are not events.
    let d = &c.got[1];
    assert!(MsgIter::new(d).all(|m| socket::event_of(&m.unwrap()).is_none()));
    // RTM_DELLINK is "not up"; AF_BRIDGE messages (a port's bridge state)
    // are not link states at all.
    let mut del = ev.clone();
    del[4..6].copy_from_slice(&codec::RTM_DELLINK.to_ne_bytes());
    let e = socket::event_of(&msg(&del)).unwrap().unwrap();
    assert!(!e.up);
    let mut br = ev.clone();
    br[16] = 7; // AF_BRIDGE
    assert!(socket::event_of(&msg(&br)).is_none());
    // An event with a broken attribute is an error, not a panic.
    let mut bad = ev.clone();
    bad[16 + 16] = 0xff; // first attribute's nla_len
    bad[16 + 17] = 0x7f;
    assert!(matches!(socket::event_of(&msg(&bad)), Some(Err(_))));
}

// ----------------------------------------------------- hostile replies

#[test]
fn every_truncation_of_every_reply_is_an_error_or_a_value_never_a_panic() {
    for c in captures() {
        for d in &c.got {
            for m in MsgIter::new(d).flatten() {
                for cut in 0..=m.payload.len() {
                    let p = &m.payload[..cut];
                    let _ = codec::decode_addr(p);
                    let _ = codec::decode_link(p);
                }
            }
            for cut in 0..=d.len() {
                let mut a = Answer::default();
                let _ = a.absorb(&d[..cut], 1, "x", "y", &mut |_| {}, &mut |_| {});
            }
        }
    }
}

#[test]
fn short_headers_and_bad_values_are_decode_errors() {
    assert!(codec::decode_addr(&[2, 32, 0]).is_err());
    assert!(codec::decode_link(&[0; 15]).is_err());
    // Prefix length beyond the family.
    assert!(codec::decode_addr(&[2, 33, 0, 0, 1, 0, 0, 0]).is_err());
    // IFA_LOCAL of 3 bytes for IPv4.
    let mut p = vec![2, 32, 0, 0, 1, 0, 0, 0];
    p.extend_from_slice(&[7, 0, 2, 0, 192, 0, 2, 0]);
    assert!(codec::decode_addr(&p).is_err());
    // IFA_FLAGS of 2 bytes.
    let mut p = vec![10, 64, 0, 0, 1, 0, 0, 0];
    p.extend_from_slice(&[6, 0, 8, 0, 1, 0, 0, 0]);
    assert!(codec::decode_addr(&p).is_err());
    // Unknown family, or no address at all: not ours, not an error.
    assert_eq!(codec::decode_addr(&[45, 0, 0, 0, 1, 0, 0, 0]), Ok(None));
    assert_eq!(codec::decode_addr(&[2, 24, 0, 0, 1, 0, 0, 0]), Ok(None));
}

#[test]
fn an_answer_without_its_final_message_is_not_finished() {
    let c = capture("ip -d addr show dev va", 0);
    // A datagram with the address entries, without NLMSG_DONE (the
    // capture has one line per message).
    let entries: Vec<u8> = c
        .got
        .iter()
        .filter(|d| msg(d).header.kind == codec::RTM_NEWADDR)
        .flatten()
        .copied()
        .collect();
    let entries = &entries;
    let seq = msg(entries).header.seq;
    let mut a = Answer::default();
    let mut n = 0;
    let r = a.absorb(entries, seq, "x", "y", &mut |_| n += 1, &mut |_| {});
    assert_eq!(r.unwrap(), None);
    assert_eq!(n, 3);
    // Then NLMSG_DONE.
    let done = c
        .got
        .iter()
        .find(|d| msg(d).header.kind == nl::NLMSG_DONE && msg(d).header.seq == seq)
        .unwrap();
    let r = a.absorb(done, seq, "x", "y", &mut |_| {}, &mut |_| {});
    assert_eq!(r.unwrap(), Some(Outcome::Done));
    // Someone else's sequence number goes to `other`.
    let mut a = Answer::default();
    let mut others = 0;
    let r = a.absorb(entries, seq + 1, "x", "y", &mut |_| {}, &mut |_| {
        others += 1
    });
    assert_eq!((r.unwrap(), others), (None, 3));
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(p in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = codec::decode_addr(&p);
        let _ = codec::decode_link(&p);
        let mut a = Answer::default();
        let _ = a.absorb(&p, 1, "x", "y", &mut |_| {}, &mut |_| {});
        for m in MsgIter::new(&p).flatten() {
            let _ = socket::link_event(&m);
            let _ = socket::event_of(&m);
        }
    }

    #[test]
    fn encoded_addresses_decode_to_themselves(
        v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), l4 in 0u8..=32, l6 in 0u8..=128, idx in any::<u32>()
    ) {
        for (addr, len) in [(IpAddr::from(v4), l4), (IpAddr::from(v6), l6)] {
            let mut w = Writer::new();
            codec::encode_addr(&mut w, AddrCmd::Add, 1, idx, addr, len).unwrap();
            let m = msg(&w.buf);
            let e = codec::decode_addr(m.payload).unwrap().unwrap();
            prop_assert_eq!((e.addr, e.prefix_len, e.index), (addr, len, idx));
            prop_assert_eq!(e.flags & ifa_f::NODAD != 0, addr.is_ipv6());
        }
    }
}

// ------------------------------------------------------------------ fake

#[test]
fn fake_is_idempotent_like_the_kernel_and_records_every_call() {
    let mut f = RecordingAddresses::new().with_interface(2);
    assert_eq!(f.list(2).unwrap(), vec![]);
    f.add(2, v4("192.0.2.1"), 32).unwrap();
    f.add(2, v4("192.0.2.1"), 32).unwrap();
    // IPv4: another prefix length is another address.
    f.add(2, v4("192.0.2.1"), 24).unwrap();
    f.add(2, v6("2001:db8::1"), 64).unwrap();
    // IPv6: the address alone identifies it; the old length stays.
    f.add(2, v6("2001:db8::1"), 128).unwrap();
    assert_eq!(
        f.list(2).unwrap(),
        vec![
            (v4("192.0.2.1"), 32),
            (v4("192.0.2.1"), 24),
            (v6("2001:db8::1"), 64)
        ]
    );
    // Deleting needs the right length; absent is success.
    f.delete(2, v6("2001:db8::1"), 128).unwrap();
    f.delete(2, v4("192.0.2.1"), 24).unwrap();
    f.delete(2, v4("192.0.2.1"), 24).unwrap();
    f.delete(9, v4("192.0.2.1"), 24).unwrap();
    assert_eq!(
        f.list(2).unwrap(),
        vec![(v4("192.0.2.1"), 32), (v6("2001:db8::1"), 64)]
    );
    assert!(matches!(f.list(9), Err(RtnlError::NoSuchInterface { .. })));
    let ops = f.take_ops();
    assert_eq!(ops.len(), 13);
    assert_eq!(
        serde_json::to_string(&ops[1]).unwrap(),
        r#"{"op":"add","ifindex":2,"addr":"192.0.2.1","prefix_len":32}"#
    );
    assert!(f.ops.is_empty());
}

#[test]
fn fake_fails_on_demand_without_effect() {
    let mut f = RecordingAddresses::new();
    f.fail_next(RtnlError::NoSuchInterface {
        what: "adding".into(),
        interface: "eth9".into(),
    });
    assert!(f.add(4, v4("192.0.2.1"), 32).is_err());
    assert!(!f.state.contains_key(&4));
    f.add(4, v4("192.0.2.1"), 32).unwrap();
    assert!(f.add(4, v4("192.0.2.1"), 33).is_err());
    assert_eq!(f.list(4).unwrap(), vec![(v4("192.0.2.1"), 32)]);
    assert_eq!(f.ops.len(), 4);
}

#[test]
fn the_fake_and_the_socket_are_addresses_and_send() {
    fn takes(_: &mut dyn Addresses) {}
    fn send<T: Send>() {}
    takes(&mut RecordingAddresses::new());
    send::<RtnlSocket>();
    send::<LinkWatch>();
    send::<RtnlError>();
}
