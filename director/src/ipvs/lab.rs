//! The real socket against a real IPVS kernel. Needs root and IPVS, so these
//! are `#[ignore]`d and run inside the kernel lab:
//!
//! ```text
//! cargo test -p director --lib --no-run     # note the test binary path
//! tests/lab/run -- target/debug/deps/director-<hash> ipvs::lab --ignored --test-threads 1 --nocapture
//! ```
//!
//! They fail (not skip) when IPVS is absent. Each test flushes the table.

use super::{AckMode, IpvsSocket};
use crate::kernel::{IpvsKernel, KernelError};
use crate::model::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

fn open() -> IpvsSocket {
    match IpvsSocket::open() {
        Ok(s) => s,
        Err(e) => panic!("IPVS must be available for the lab tests: {e}"),
    }
}

fn ipvsadm(args: &str) {
    let st = Command::new("ipvsadm")
        .args(args.split_whitespace())
        .status()
        .expect("run ipvsadm");
    assert!(st.success(), "ipvsadm {args}");
}

fn tcp(a: &str) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: a.parse::<SocketAddr>().unwrap(),
    }
}

#[test]
#[ignore = "needs IPVS: run in the kernel lab"]
fn lab_dump_decodes_a_table_made_by_ipvsadm() {
    let mut s = open();
    s.flush().unwrap();
    ipvsadm("-A -t 192.0.2.1:80 -s wlc -p 360 -M 255.255.255.0");
    ipvsadm("-a -t 192.0.2.1:80 -r 10.0.0.1:8080 -m -w 3 -x 100 -y 10");
    ipvsadm("-a -t 192.0.2.1:80 -r 10.0.0.3 -i --tun-type gue --tun-port 6080 --tun-csum");
    ipvsadm("-A -u [2001:db8::1]:53 -s sh -b sh-fallback,sh-port");
    ipvsadm("-a -u [2001:db8::1]:53 -r [2001:db8::10]:5353 -m -w 2");
    ipvsadm("-A -f 200 -6 -s lc -p 60 -M 64");
    ipvsadm("-A --sctp-service 192.0.2.2:3868 -s mh -b mh-fallback,mh-port");
    ipvsadm("-A -u 192.0.2.4:5060 -s rr -p 60 --pe sip");
    ipvsadm("-A -f 100 -s wrr -o");
    ipvsadm("-a -f 100 -r 10.0.0.6 -g -w 0");
    let t = s.dump().unwrap();
    assert_eq!(t.info.version, 0x010201);
    let find = |k: ServiceKey| {
        t.services
            .iter()
            .find(|x| x.service.key == k)
            .unwrap_or_else(|| panic!("{k}"))
    };
    let web = find(tcp("192.0.2.1:80"));
    assert_eq!(
        web.service.settings,
        ServiceSettings {
            scheduler: "wlc".into(),
            flags: svc_flags::PERSISTENT,
            timeout: 360,
            netmask: 0xffff_ff00,
            pe_name: None
        }
    );
    assert_eq!(web.dests.len(), 2);
    // ip_vs_ctl.c lists destinations newest first.
    let d1 = &web.dests[1].dest;
    assert_eq!(
        d1.key,
        DestKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 8080
        }
    );
    assert_eq!(d1.settings.forward, Forward::Masq);
    assert_eq!(
        (
            d1.settings.weight,
            d1.settings.upper_threshold,
            d1.settings.lower_threshold
        ),
        (3, 100, 10)
    );
    let d2 = &web.dests[0].dest;
    assert_eq!(d2.settings.forward, Forward::Tunnel);
    assert_eq!(
        d2.settings.tunnel,
        Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            csum: TunnelCsum::Csum
        }
    );
    let dns = find(ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "[2001:db8::1]:53".parse().unwrap(),
    });
    assert_eq!(
        dns.service.settings.flags,
        svc_flags::SCHED1 | svc_flags::SCHED2
    );
    assert_eq!(dns.service.settings.netmask, 128);
    assert_eq!(
        dns.dests[0].dest.key.addr,
        IpAddr::V6("2001:db8::10".parse::<Ipv6Addr>().unwrap())
    );
    let f6 = find(ServiceKey::Fwmark {
        family: Family::V6,
        mark: 200,
    });
    assert_eq!(
        (f6.service.settings.netmask, f6.service.settings.timeout),
        (64, 60)
    );
    let sip = find(ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "192.0.2.4:5060".parse().unwrap(),
    });
    assert_eq!(sip.service.settings.pe_name.as_deref(), Some("sip"));
    let f4 = find(ServiceKey::Fwmark {
        family: Family::V4,
        mark: 100,
    });
    assert_eq!(f4.service.settings.flags, svc_flags::ONEPACKET);
    assert_eq!(f4.dests[0].dest.settings.weight, 0);
    s.flush().unwrap();
}

#[test]
#[ignore = "needs IPVS: run in the kernel lab"]
fn lab_apply_maps_errors_to_their_ops() {
    let mut s = open();
    s.flush().unwrap();
    let svc = Service {
        key: tcp("192.0.2.9:80"),
        settings: ServiceSettings::new("rr", Family::V4),
    };
    let d = Destination {
        key: DestKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            port: 80,
        },
        settings: DestSettings::new(Forward::Masq, 1),
    };
    let bad_sched = Service {
        key: tcp("192.0.2.9:81"),
        settings: ServiceSettings::new("nosuch", Family::V4),
    };
    let ops = vec![
        IpvsOp::AddService(svc.clone()),
        IpvsOp::AddService(svc.clone()),
        IpvsOp::AddDest {
            service: svc.key,
            dest: d,
        },
        IpvsOp::AddService(bad_sched),
        IpvsOp::DelDest {
            service: svc.key,
            dest: DestKey {
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
                port: 80,
            },
        },
        IpvsOp::AddDest {
            service: tcp("192.0.2.9:99"),
            dest: d,
        },
        IpvsOp::EditDest {
            service: svc.key,
            dest: Destination {
                settings: DestSettings::new(Forward::Masq, 9),
                ..d
            },
        },
    ];
    for mode in [AckMode::Last, AckMode::Every] {
        s.flush().unwrap();
        s.set_ack_mode(mode);
        let r = s.apply(&ops);
        eprintln!("{mode:?}: {r:?}");
        assert_eq!(r.len(), ops.len());
        assert!(r[0].is_ok());
        assert_eq!(r[1].as_ref().unwrap_err().errno(), Some(libc::EEXIST));
        assert!(
            matches!(&r[1], Err(KernelError::Refused { what, .. }) if what == &ops[1].to_string())
        );
        assert!(r[2].is_ok());
        assert_eq!(r[3].as_ref().unwrap_err().errno(), Some(libc::ENOENT));
        assert_eq!(r[4].as_ref().unwrap_err().errno(), Some(libc::ENOENT));
        assert_eq!(r[5].as_ref().unwrap_err().errno(), Some(libc::ESRCH));
        assert!(r[6].is_ok());
        let t = s.dump().unwrap();
        assert_eq!(t.services.len(), 1);
        assert_eq!(t.services[0].dests[0].dest.settings.weight, 9);
    }
    s.flush().unwrap();
}

#[test]
#[ignore = "needs IPVS: run in the kernel lab"]
fn lab_timeouts_and_daemons() {
    let mut s = open();
    s.set_timeouts(Timeouts {
        tcp: 901,
        tcp_fin: 121,
        udp: 301,
    })
    .unwrap();
    assert_eq!(
        s.timeouts().unwrap(),
        Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 301
        }
    );
    s.set_timeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 302,
    })
    .unwrap();
    assert_eq!(
        s.timeouts().unwrap(),
        Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 302
        }
    );
    // A multicast-capable link with an address: on `lo` the 6.1 kernel
    // refuses the master daemon ("You probably need to specify IP address
    // on multicast interface") and once hung the VM in that error path.
    for args in [
        &[
            "link", "add", "dsync0", "type", "veth", "peer", "name", "dsync1",
        ][..],
        &["addr", "add", "10.99.9.1/24", "dev", "dsync0"],
        &["link", "set", "dsync0", "up"],
        &["link", "set", "dsync1", "up"],
    ] {
        let st = Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?}");
    }
    let d = SyncDaemon {
        role: SyncRole::Master,
        mcast_ifn: "dsync0".into(),
        syncid: 7,
        sync_maxlen: 1400,
        mcast_group: Some(IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3))),
        mcast_port: 8849,
        mcast_ttl: 2,
    };
    s.start_sync_daemon(&d).unwrap();
    let ds = s.sync_daemons().unwrap();
    eprintln!("daemons: {ds:?}");
    assert_eq!(ds, vec![d.clone()]);
    s.stop_sync_daemon(&d).unwrap();
    assert!(s.sync_daemons().unwrap().is_empty());
    let e = s.stop_sync_daemon(&d).unwrap_err();
    eprintln!("stop absent daemon: {e}");
    assert!(e.errno().is_some());
    let _ = Command::new("ip").args(["link", "del", "dsync0"]).status();
}

fn big_table(n_svc: u32, n_dest: u8) -> Vec<IpvsOp> {
    let mut ops = Vec::new();
    for i in 0..n_svc {
        let ip = Ipv4Addr::from(0x0a64_0000 + i);
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: SocketAddr::new(IpAddr::V4(ip), 80),
        };
        ops.push(IpvsOp::AddService(Service {
            key,
            settings: ServiceSettings::new("wlc", Family::V4),
        }));
        for j in 0..n_dest {
            let d = Destination {
                key: DestKey {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 200, (i % 250) as u8, j + 1)),
                    port: 8080,
                },
                settings: DestSettings::new(Forward::Masq, 1),
            };
            ops.push(IpvsOp::AddDest {
                service: key,
                dest: d,
            });
        }
    }
    ops
}

/// Many windows' worth of ops (2,000 services x 4 destinations): every op
/// applied and the dump shows all of it; applying it all again is refused
/// op by op (EEXIST for each, none lost across windows). Timing against
/// `ipvsadm -R` is the benchmark's job (`tests/lab/bench`), not a test's.
#[test]
#[ignore = "needs IPVS: run in the kernel lab"]
fn lab_many_windows_apply_and_refuse_every_op() {
    let mut s = open();
    s.flush().unwrap();
    let ops = big_table(2000, 4);
    assert!(
        ops.len() > 4 * s.window(),
        "the test must span several windows"
    );
    let r = s.apply(&ops);
    assert!(
        r.iter().all(|x| x.is_ok()),
        "{:?}",
        r.iter().find(|x| x.is_err())
    );
    let table = s.dump().unwrap();
    assert_eq!(table.services.len(), 2000);
    assert!(table.services.iter().all(|x| x.dests.len() == 4));
    let again = s.apply(&ops);
    assert_eq!(again.len(), ops.len());
    assert!(again
        .iter()
        .all(|x| x.as_ref().err().and_then(|e| e.errno()) == Some(libc::EEXIST)));
    s.flush().unwrap();
}

/// A window far larger than the receive buffer: the kernel drops answers
/// (ENOBUFS). Every op still gets a result, none is claimed to have
/// succeeded without proof, the window shrinks, and the socket stays usable.
#[test]
#[ignore = "needs IPVS: run in the kernel lab"]
fn lab_receive_overrun_is_reported_not_hidden() {
    let mut s = open();
    s.flush().unwrap();
    let svc = Service {
        key: tcp("192.0.2.10:80"),
        settings: ServiceSettings::new("rr", Family::V4),
    };
    assert!(s.apply(&[IpvsOp::AddService(svc.clone())])[0].is_ok());
    let small = s.set_rcvbuf(4096).unwrap();
    s.set_window(400);
    let ops = vec![IpvsOp::AddService(svc.clone()); 400];
    let r = s.apply(&ops);
    let refused = r
        .iter()
        .filter(|x| x.as_ref().err().and_then(|e| e.errno()) == Some(libc::EEXIST))
        .count();
    let unknown = r
        .iter()
        .filter(|x| matches!(x, Err(KernelError::Io { .. })))
        .count();
    eprintln!(
        "window for a 4 KiB buffer: {small}; refused {refused}, unknown {unknown}, window now {}",
        s.window()
    );
    assert_eq!(r.len(), 400);
    assert_eq!(refused + unknown, 400, "no op may be reported as applied");
    assert!(unknown > 0, "the overrun should have happened");
    assert!(s.window() < 400);
    // Still in sync: a dump works and sees the one service.
    assert_eq!(s.dump().unwrap().services.len(), 1);
    s.flush().unwrap();
}
