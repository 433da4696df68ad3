//! Golden tests against real ipvsadm 1.31 output captured from a real IPVS
//! kernel by `testdata/make-golden.sh` (see there for what is captured).
//!
//! The `KernelTable` input is rebuilt from the `--nosort` listings, which
//! show the kernel's dump order and (with `--exact`) every counter: the plain
//! one for services and destinations, `--tun-info` for tunnel settings,
//! `--thresholds` and `--persistent-conn` for the remaining destination
//! fields. The sorted and abbreviated listings, `-Lnc` and the
//! `--nosort` listings themselves are then what our printers must reproduce
//! byte for byte.

use super::*;
use crate::model::{
    default_netmask, DestKey, DestSettings, Destination, IpvsInfo, Protocol, Service,
    ServiceSettings, Stats, Tunnel,
};
use std::net::SocketAddr;
use std::path::PathBuf;

fn testdata(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src/format/testdata", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run make-golden.sh)", path.display()))
}

/// Lines of a listing after the banner and the two title lines, split into
/// service lines and destination lines (without the `  -> ` prefix).
fn body(text: &str) -> Vec<(bool, Vec<String>)> {
    text.lines()
        .skip(3)
        .map(|l| match l.strip_prefix("  -> ") {
            Some(d) => (true, d.split_whitespace().map(str::to_string).collect()),
            None => (false, l.split_whitespace().map(str::to_string).collect()),
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| panic!("not a number in golden file: {s:?}"))
}

fn parse_service_line(t: &[String]) -> Service {
    let (key, rest) = if t[0] == "FWM" {
        let mark = num::<i32>(&t[1]) as u32;
        if t[2] == "IPv6" {
            (
                ServiceKey::Fwmark {
                    family: Family::V6,
                    mark,
                },
                &t[3..],
            )
        } else {
            (
                ServiceKey::Fwmark {
                    family: Family::V4,
                    mark,
                },
                &t[2..],
            )
        }
    } else {
        let protocol = match t[0].as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => panic!("unknown protocol {other}"),
        };
        let addr: SocketAddr = num(&t[1]);
        (ServiceKey::Inet { protocol, addr }, &t[2..])
    };
    let family = key.family();
    let mut settings = ServiceSettings::new(&rest[0], family);
    let mut i = 1;
    while i < rest.len() {
        let w = rest[i].as_str();
        if let Some(flags) = w.strip_prefix('(').and_then(|f| f.strip_suffix(')')) {
            for f in flags.split(',').filter(|f| !f.is_empty()) {
                settings.flags |= match f {
                    "sh-fallback" | "mh-fallback" | "flag-1" => svc_flags::SCHED1,
                    "sh-port" | "mh-port" | "flag-2" => svc_flags::SCHED2,
                    "flag-3" => svc_flags::SCHED3,
                    other => panic!("unknown scheduler flag {other}"),
                };
            }
            i += 1;
            continue;
        }
        match w {
            "persistent" => {
                settings.flags |= svc_flags::PERSISTENT;
                settings.timeout = num(&rest[i + 1]);
                i += 2;
            }
            "mask" => {
                settings.netmask = match family {
                    Family::V4 => u32::from(num::<Ipv4Addr>(&rest[i + 1])),
                    Family::V6 => num(&rest[i + 1]),
                };
                i += 2;
            }
            "pe" => {
                settings.pe_name = Some(rest[i + 1].clone());
                i += 2;
            }
            "ops" => {
                settings.flags |= svc_flags::ONEPACKET;
                i += 1;
            }
            other => panic!("unexpected word {other:?} in service line"),
        }
    }
    if settings.netmask == 0 {
        settings.netmask = default_netmask(family);
    }
    Service { key, settings }
}

fn forward(label: &str) -> Forward {
    match label {
        "Masq" => Forward::Masq,
        "Local" => Forward::Local,
        "Tunnel" => Forward::Tunnel,
        "Route" => Forward::Route,
        other => panic!("unknown forward {other}"),
    }
}

fn tunnel(info: &str) -> Tunnel {
    let csum = |f: &str| match f {
        "-c" => TunnelCsum::NoCsum,
        "+c" => TunnelCsum::Csum,
        "r+c" => TunnelCsum::RemCsum,
        other => panic!("unknown tunnel flag {other}"),
    };
    let parts: Vec<&str> = info.split(':').collect();
    match parts.as_slice() {
        ["n/a"] | ["ipip"] => Tunnel::default(),
        ["gue", port, flag] => Tunnel {
            kind: TunnelType::Gue,
            port: num(port),
            csum: csum(flag),
        },
        ["gre", flag] => Tunnel {
            kind: TunnelType::Gre,
            port: 0,
            csum: csum(flag),
        },
        _ => panic!("unknown tunnel info {info}"),
    }
}

/// The last `n` words as numbers.
fn tail_nums(t: &[String], n: usize) -> Vec<u64> {
    t[t.len() - n..].iter().map(|s| num(s)).collect()
}

fn stats_from(s: &[u64], r: &[u64]) -> Stats {
    Stats {
        conns: s[0],
        inpkts: s[1],
        outpkts: s[2],
        inbytes: s[3],
        outbytes: s[4],
        cps: r[0],
        inpps: r[1],
        outpps: r[2],
        inbps: r[3],
        outbps: r[4],
    }
}

/// Rebuild the kernel table, in kernel dump order, from the --nosort files.
fn golden_table() -> KernelTable {
    let plain = testdata("nosort-list.txt");
    let banner = plain.lines().next().expect("banner");
    let v = banner
        .strip_prefix("IP Virtual Server version ")
        .expect("banner text");
    let (ver, size) = v.split_once(" (size=").expect("banner size");
    let ver: Vec<u32> = ver.split('.').map(num).collect();
    let info = IpvsInfo {
        version: (ver[0] << 16) | (ver[1] << 8) | ver[2],
        conn_tab_size: num::<i32>(size.trim_end_matches(')')) as u32,
    };
    let plain = body(&plain);
    let tun = body(&testdata("nosort-tun-info.txt"));
    let thr = body(&testdata("nosort-thresholds.txt"));
    let pc = body(&testdata("nosort-persistent-conn.txt"));
    let st = body(&testdata("nosort-stats-exact.txt"));
    let rt = body(&testdata("nosort-rate-exact.txt"));
    for other in [&tun, &thr, &pc, &st, &rt] {
        assert_eq!(other.len(), plain.len(), "the --nosort files disagree");
    }
    let mut services: Vec<KernelService> = Vec::new();
    for i in 0..plain.len() {
        let (is_dest, t) = &plain[i];
        if !is_dest {
            services.push(KernelService {
                service: parse_service_line(t),
                stats: stats_from(&tail_nums(&st[i].1, 5), &tail_nums(&rt[i].1, 5)),
                dests: Vec::new(),
            });
            continue;
        }
        let sa: SocketAddr = num(&t[0]);
        let fwd = forward(&t[1]);
        let mut settings = DestSettings::new(fwd, num(&t[2]));
        settings.tunnel = tunnel(&tun[i].1[2]);
        settings.upper_threshold = num(&thr[i].1[1]);
        settings.lower_threshold = num(&thr[i].1[2]);
        let d = KernelDest {
            dest: Destination {
                key: DestKey {
                    addr: sa.ip(),
                    port: sa.port(),
                },
                settings,
            },
            active_conns: num(&t[3]),
            inactive_conns: num(&t[4]),
            persist_conns: num(&pc[i].1[2]),
            stats: stats_from(&tail_nums(&st[i].1, 5), &tail_nums(&rt[i].1, 5)),
        };
        services
            .last_mut()
            .expect("destination before any service")
            .dests
            .push(d);
    }
    KernelTable { info, services }
}

fn check(file: &str, mode: ListMode, exact: bool, nosort: bool) {
    let want = testdata(file);
    let got = list(
        &golden_table(),
        &ListOptions {
            mode,
            exact,
            nosort,
        },
    );
    assert!(
        got == want,
        "{file} differs\n--- ipvsadm\n{want}\n--- ours\n{got}"
    );
}

#[test]
fn golden_list_plain() {
    check("list.txt", ListMode::Plain, false, false);
}

#[test]
fn golden_list_stats() {
    check("list-stats.txt", ListMode::Stats, false, false);
    check("list-stats-exact.txt", ListMode::Stats, true, false);
}

#[test]
fn golden_list_rate() {
    check("list-rate.txt", ListMode::Rate, false, false);
    check("list-rate-exact.txt", ListMode::Rate, true, false);
}

#[test]
fn golden_list_other_modes() {
    check("list-thresholds.txt", ListMode::Thresholds, false, false);
    check(
        "list-persistent-conn.txt",
        ListMode::PersistentConn,
        false,
        false,
    );
    check("list-tun-info.txt", ListMode::TunInfo, false, false);
}

#[test]
fn golden_list_nosort() {
    check("nosort-list.txt", ListMode::Plain, false, true);
    check("nosort-stats-exact.txt", ListMode::Stats, true, true);
    check("nosort-rate-exact.txt", ListMode::Rate, true, true);
    check("nosort-thresholds.txt", ListMode::Thresholds, false, true);
    check(
        "nosort-persistent-conn.txt",
        ListMode::PersistentConn,
        false,
        true,
    );
    check("nosort-tun-info.txt", ListMode::TunInfo, false, true);
}

#[test]
fn golden_connections() {
    let proc_text = testdata("ip_vs_conn.txt");
    assert!(proc_text.lines().count() > 1, "no connections captured");
    let got = connections(&proc_text, &ConnOptions::default()).expect("kernel text parses");
    assert_eq!(got, testdata("conn.txt"));
    let got = connections(
        &proc_text,
        &ConnOptions {
            persistent_conn: true,
        },
    )
    .expect("kernel text parses");
    assert_eq!(got, testdata("conn-persistent.txt"));
}

#[test]
fn golden_timeout() {
    let want = testdata("timeout.txt");
    let n: Vec<u32> = want
        .trim_end()
        .rsplit(' ')
        .take(3)
        .map(num)
        .collect::<Vec<_>>();
    let t = Timeouts {
        tcp: n[2],
        tcp_fin: n[1],
        udp: n[0],
    };
    assert_eq!(timeouts(&t), want);
}

#[test]
fn golden_daemon() {
    let want = testdata("daemon.txt");
    let mut ds = Vec::new();
    for line in want.lines() {
        let (role, rest) = line.split_once(" sync daemon (").expect("daemon line");
        let mut d = SyncDaemon {
            role: if role == "master" {
                SyncRole::Master
            } else {
                SyncRole::Backup
            },
            mcast_ifn: String::new(),
            syncid: 0,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        };
        for kv in rest.trim_end_matches(')').split(", ") {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "mcast" => d.mcast_ifn = v.to_string(),
                "syncid" => d.syncid = num(v),
                "maxlen" => d.sync_maxlen = num(v),
                "group" => d.mcast_group = Some(num(v)),
                "port" => d.mcast_port = num(v),
                "ttl" => d.mcast_ttl = num(v),
                other => panic!("unknown daemon field {other}"),
            }
        }
        ds.push(d);
    }
    assert_eq!(ds.len(), 2);
    assert_eq!(daemons(&ds), want);
}

/// The golden table contains comparator cycles (10.x > 192.x > 172.x > 10.x
/// among the destinations of 192.168.10.1:80; 100.64.x > 255.255.255.254 >
/// 192.168.x > 100.64.x among services), so the order depends on the dump
/// (see `sort`): feeding the same table in another order may legitimately
/// give another listing. What must hold for any order: the same lines.
#[test]
fn golden_other_input_orders_give_the_same_lines() {
    let kernel_order = golden_table();
    let mut reversed = kernel_order.clone();
    reversed.services.reverse();
    for s in &mut reversed.services {
        s.dests.reverse();
    }
    let o = ListOptions::default();
    let mut a: Vec<String> = list(&kernel_order, &o)
        .lines()
        .map(str::to_string)
        .collect();
    let mut b: Vec<String> = list(&reversed, &o).lines().map(str::to_string).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// ... and with this table it does: the reversed dump lists the services in
/// another order, exactly as ipvsadm would (its comparator is not a total
/// order), which is why the netlink dump must keep the kernel's order.
#[test]
fn golden_kernel_order_matters() {
    let kernel_order = golden_table();
    let mut reversed = kernel_order.clone();
    reversed.services.reverse();
    let o = ListOptions::default();
    assert_ne!(list(&kernel_order, &o), list(&reversed, &o));
}
