//! Root kernel tests of the nftables dataplane (`director::nft`), each in a
//! private network namespace (`dnft-<pid>-<n>`, deleted on drop, panics
//! included). They never touch the host's own ruleset. Need root, nf_tables
//! and the `ip` and `nft` binaries; without them they fail (not skip).

use director::config::Snat;
use director::dataplane::{Dataplane, PassInput};
use director::desired::{DesiredService, DesiredTable};
use director::model::{
    default_netmask, svc_flags, DestKey, DestSettings, Family, Forward, Protocol, Service,
    ServiceKey, ServiceSettings,
};
use director::nft::{FixedFlows, NftCli, NftDataplane, Scope};
use director::reconcile::PassReport;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that exists for the test's lifetime.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "dnft-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add")
            .success();
        assert!(ok, "ip netns add {name} failed (root needed)");
        Netns(name)
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dataplane(&self, scope: Scope) -> NftDataplane {
        NftDataplane::new(
            Box::new(NftCli::in_netns(&self.0)),
            Box::new(FixedFlows::default()),
            scope,
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn inet(protocol: Protocol, addr: &str) -> ServiceKey {
    ServiceKey::Inet {
        protocol,
        addr: addr.parse().unwrap(),
    }
}

fn service(
    name: &str,
    key: ServiceKey,
    sched: &str,
    dests: &[(&str, i32)],
    persistent: Option<(u32, u32)>,
) -> DesiredService {
    let family = key.family();
    let mut settings = ServiceSettings::new(sched, family);
    if let Some((timeout, mask)) = persistent {
        settings.flags |= svc_flags::PERSISTENT;
        settings.timeout = timeout;
        settings.netmask = mask;
    } else {
        settings.netmask = default_netmask(family);
    }
    DesiredService {
        name: name.to_string(),
        service: Service { key, settings },
        maglev_table_size: 251,
        dests: dests
            .iter()
            .map(|(a, w)| {
                let sa: std::net::SocketAddr = a
                    .parse()
                    .unwrap_or_else(|_| std::net::SocketAddr::new(a.parse().unwrap(), 0));
                (
                    DestKey {
                        addr: sa.ip(),
                        port: sa.port(),
                    },
                    DestSettings::new(Forward::Masq, *w),
                )
            })
            .collect(),
    }
}

/// Every feature: tcp/udp/sctp, v4/v6, fwmark, rr/wrr/sh/mh, persistence
/// with a mask, sh-port, a drained server, port-0 destinations.
fn full() -> DesiredTable {
    let mut sh = service(
        "sh6",
        inet(Protocol::Tcp, "[2001:db8::100]:443"),
        "sh",
        &[("[2001:db8:1::11]:8443", 1), ("[2001:db8:1::12]:8443", 2)],
        None,
    );
    sh.service.settings.flags |= svc_flags::SCHED2;
    let svcs = vec![
        service(
            "web",
            inet(Protocol::Tcp, "192.0.2.100:80"),
            "wrr",
            &[
                ("10.0.1.11:8080", 1),
                ("10.0.1.12:8080", 3),
                ("10.0.1.13:8080", 0),
            ],
            Some((360, 0xffff_ff00)),
        ),
        service(
            "dns",
            inet(Protocol::Udp, "192.0.2.100:53"),
            "rr",
            &[("10.0.1.21:53", 1), ("10.0.1.22:53", 1)],
            None,
        ),
        service(
            "maglev",
            inet(Protocol::Sctp, "192.0.2.101:9000"),
            "mh",
            &[
                ("10.0.1.31:9000", 1),
                ("10.0.1.32:9000", 1),
                ("10.0.1.33:9000", 2),
            ],
            None,
        ),
        sh,
        service(
            "marked",
            ServiceKey::Fwmark {
                family: Family::V4,
                mark: 100,
            },
            "rr",
            &[("10.0.2.1", 1), ("10.0.2.2", 1)],
            Some((60, 0xffff_ffff)),
        ),
        service(
            "v6persist",
            inet(Protocol::Tcp, "[2001:db8::100]:80"),
            "rr",
            &[("[2001:db8:1::11]:80", 1)],
            Some((300, 64)),
        ),
    ];
    DesiredTable {
        services: svcs.into_iter().map(|s| (s.service.key, s)).collect(),
    }
}

fn snat() -> Vec<Snat> {
    vec![Snat {
        match_vip: "192.0.2.100".parse().unwrap(),
        to_source: "192.0.2.200".parse().unwrap(),
    }]
}

fn pass(dp: &mut NftDataplane, desired: &DesiredTable, snat: &[Snat]) -> PassReport {
    dp.pass(&PassInput {
        desired,
        snat,
        exclusive: true,
        timeouts: None,
    })
}

fn assert_clean(r: &PassReport) {
    assert!(r.dump_error.is_none(), "{:?}", r.dump_error);
    assert!(r.failed.is_empty(), "{:#?}", r.failed);
    assert!(r.nat_errors.is_empty(), "{:#?}", r.nat_errors);
}

fn assert_noop(r: &PassReport) {
    assert_clean(r);
    assert!(r.applied.is_empty(), "{:#?}", r.applied);
    assert!(r.repairs.is_empty(), "{:#?}", r.repairs);
}

/// The table rebuilt from the dump equals the desired one.
fn assert_status_matches(dp: &mut NftDataplane, desired: &DesiredTable) {
    let table = dp.table().expect("status");
    assert_eq!(table.services.len(), desired.services.len());
    for ks in &table.services {
        let want = &desired.services[&ks.service.key];
        assert_eq!(ks.service, want.service);
        let dests: std::collections::BTreeMap<_, _> = ks
            .dests
            .iter()
            .map(|d| (d.dest.key, d.dest.settings))
            .collect();
        assert_eq!(dests, want.dests, "{}", want.name);
    }
}

#[test]
fn cold_apply_then_second_pass_is_a_noop_and_status_matches() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::Services);
    let desired = full();
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert_eq!(
        r.applied
            .iter()
            .filter(|op| matches!(op, director::model::IpvsOp::AddService(_)))
            .count(),
        desired.services.len()
    );
    assert_noop(&pass(&mut dp, &desired, &snat()));
    assert_status_matches(&mut dp, &desired);

    // A second daemon (restart) adopts the table: nothing to do.
    let mut again = ns.dataplane(Scope::Services);
    assert_noop(&pass(&mut again, &desired, &snat()));
}

#[test]
fn flush_ruleset_is_repaired() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::Services);
    let desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    ns.nft(&["flush", "ruleset"]);
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert!(r.changed());
    assert_noop(&pass(&mut dp, &desired, &snat()));
    assert_status_matches(&mut dp, &desired);
}

#[test]
fn hand_deleted_element_rule_and_chain_are_repaired() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::Services);
    let desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));

    ns.nft(&[
        "delete",
        "element",
        "inet",
        "director",
        "sel_udp_c0000264_53",
        "{ 1 }",
    ]);
    let r = pass(&mut dp, &desired, &snat());
    assert_noop(&PassReport {
        repairs: Vec::new(),
        ..r.clone()
    });
    assert_eq!(
        r.repairs,
        vec!["added 1 element(s) to sel_udp_c0000264_53: 1".to_string()]
    );
    assert_noop(&pass(&mut dp, &desired, &snat()));

    ns.nft(&["flush", "chain", "inet", "director", "dispatch"]);
    ns.nft(&["delete", "chain", "inet", "director", "postnat_out"]);
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert!(
        r.repairs.iter().any(|l| l.contains("chain postnat_out")),
        "{:#?}",
        r.repairs
    );
    assert!(r.repairs.iter().any(|l| l.contains("of chain dispatch")));
    assert_noop(&pass(&mut dp, &desired, &snat()));
}

#[test]
fn one_destination_change_touches_only_its_service() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::Services);
    let mut desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    let key = inet(Protocol::Sctp, "192.0.2.101:9000");
    let svc = desired.services.get_mut(&key).unwrap();
    svc.dests.values_mut().next().unwrap().weight = 0; // drain 10.0.1.31
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert_eq!(r.applied.len(), 1, "{:#?}", r.applied);
    assert!(r.repairs.is_empty(), "{:#?}", r.repairs);
    let table = dp.table().unwrap();
    let ks = table
        .services
        .iter()
        .find(|s| s.service.key == key)
        .unwrap();
    assert_eq!(ks.dests.len(), 3, "drained server stays in the registry");
    let listing = ns.nft(&["list", "map", "inet", "director", "sel_sctp_c0000265_9000"]);
    assert!(
        !listing.contains("10.0.1.31"),
        "drained server still selectable"
    );
    assert_noop(&pass(&mut dp, &desired, &snat()));
}

#[test]
fn refused_transaction_names_the_service_and_keeps_the_rest() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::Services);
    let mut desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    let before = ns.nft(&["list", "table", "inet", "director"]);

    // A pre-existing conflicting object: the new service's selection map
    // already exists, same shape, but with room for one element, so the
    // kernel refuses (ENFILE) the batch that puts two in it.
    let bad = service(
        "bad",
        inet(Protocol::Tcp, "192.0.2.102:80"),
        "rr",
        &[("10.0.3.1:80", 1), ("10.0.3.2:80", 1)],
        None,
    );
    ns.nft(&[
        "add map inet director sel_tcp_c0000266_80 { typeof numgen inc mod 2 : ip daddr . tcp dport; size 1; }",
    ]);
    desired.services.insert(bad.service.key, bad);
    // ... and a good change in the same pass.
    let web = inet(Protocol::Udp, "192.0.2.100:53");
    desired.services.get_mut(&web).unwrap().dests.insert(
        DestKey {
            addr: "10.0.1.23".parse().unwrap(),
            port: 53,
        },
        DestSettings::new(Forward::Masq, 1),
    );
    let r = pass(&mut dp, &desired, &snat());
    assert!(!r.failed.is_empty(), "{r:#?}");
    assert!(
        r.failed
            .iter()
            .all(|f| f.service_name.as_deref() == Some("bad")),
        "{:#?}",
        r.failed
            .iter()
            .map(|f| (&f.service_name, &f.error))
            .collect::<Vec<_>>()
    );
    assert!(r.applied.iter().all(|op| op.service_key() == web), "{r:#?}");
    assert_eq!(r.applied.len(), 1);
    let after = ns.nft(&["list", "table", "inet", "director"]);
    assert!(after.contains("10.0.1.23"));
    assert!(!before.contains("10.0.1.23"));
    assert!(
        !after.contains("svc_tcp_c0000266_80"),
        "bad service half-applied"
    );

    // An input the compiler refuses is named too, and the rest still lands.
    let mut d2 = full();
    let mut wlc = service(
        "wlc",
        inet(Protocol::Tcp, "192.0.2.103:80"),
        "wlc",
        &[("10.0.4.1:80", 1)],
        None,
    );
    wlc.dests.values_mut().next().unwrap().forward = Forward::Route;
    d2.services.insert(wlc.service.key, wlc);
    let r = pass(&mut dp, &d2, &snat());
    assert_eq!(r.failed.len(), 2, "{r:#?}"); // AddService + AddDest
    assert!(r
        .failed
        .iter()
        .all(|f| f.service_name.as_deref() == Some("wlc") && f.error.contains("not supported")));
}

#[test]
fn nat_only_scope_owns_just_snat_and_forward() {
    let ns = Netns::new();
    let mut dp = ns.dataplane(Scope::NatOnly);
    let empty = DesiredTable::default();
    assert_noop(&pass(&mut dp, &empty, &[]));
    assert!(dp.dump().unwrap().is_none());
    let desired = full();
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert!(r.applied.is_empty());
    let listing = ns.nft(&["list", "table", "inet", "director"]);
    assert!(listing.contains("snat ip to ct original ip daddr map @snat4"));
    assert!(listing.contains("192.0.2.100 : 192.0.2.200"));
    assert!(!listing.contains("chain dispatch"));
    assert_noop(&pass(&mut dp, &desired, &snat()));
    // Nothing to carry: the table goes away.
    assert_clean(&pass(&mut dp, &empty, &[]));
    assert!(dp.dump().unwrap().is_none());
}
