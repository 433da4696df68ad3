//! Root kernel tests of the nftables dataplane (`director::nft`), each in a
//! private network namespace (the harness's `netns::Netns`, deleted on drop, panics
//! included). They never touch the host's own ruleset. Need root, nf_tables
//! and the `ip` and `nft` binaries; without them they fail (not skip).

use director::config::Snat;
use director::dataplane::{Dataplane, PassInput};
use director::desired::{desired_table, DesiredService, DesiredTable};
use director::model::{DestKey, DestSettings, Forward, Protocol, ServiceKey};
use director::nft::{FixedFlows, NftCli, NftDataplane, Scope};
use director::reconcile::PassReport;
use director_tests::netns::Netns;

fn new_netns() -> Netns {
    Netns::new("nft")
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    ns.exec("nft", args)
}

fn dataplane(ns: &Netns, scope: Scope) -> NftDataplane {
    NftDataplane::new(
        Box::new(NftCli::in_netns(ns.name())),
        Box::new(FixedFlows::default()),
        scope,
    )
}

fn inet(protocol: Protocol, addr: &str) -> ServiceKey {
    ServiceKey::Inet {
        protocol,
        addr: addr.parse().unwrap(),
    }
}

/// A config file's desired table and `[[snat]]`, as the daemon compiles it.
fn compiled(body: &str) -> (DesiredTable, Vec<Snat>) {
    let text = format!("[global]\nrouter_id = \"t\"\n{body}");
    let config = director::config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    (desired_table(&config), config.snat)
}

/// The one virtual server of `body`.
fn one(body: &str) -> DesiredService {
    let (d, _) = compiled(body);
    d.services.into_values().next().unwrap()
}

/// Every feature: tcp/udp/sctp, v4/v6, fwmark, rr/wrr/sh/mh, persistence
/// with a mask, sh-port, a drained server, port-0 destinations.
const FULL: &str = r#"
[[virtual_server]]
name = "web"
address = "192.0.2.100:80"
scheduler = "wrr"
persistence_timeout = "360s"
persistence_granularity = "255.255.255.0"
real_server = [
  { address = "10.0.1.11:8080", weight = 1 },
  { address = "10.0.1.12:8080", weight = 3 },
  { address = "10.0.1.13:8080", weight = 0 },
]

[[virtual_server]]
name = "dns"
address = "192.0.2.100:53"
protocol = "udp"
scheduler = "rr"
real_server = [{ address = "10.0.1.21:53" }, { address = "10.0.1.22:53" }]

[[virtual_server]]
name = "maglev"
address = "192.0.2.101:9000"
protocol = "sctp"
scheduler = "mh"
maglev_table_size = 251
real_server = [
  { address = "10.0.1.31:9000" },
  { address = "10.0.1.32:9000" },
  { address = "10.0.1.33:9000", weight = 2 },
]

[[virtual_server]]
name = "sh6"
address = "[2001:db8::100]:443"
scheduler = "sh"
scheduler_flags = ["sh-port"]
real_server = [
  { address = "[2001:db8:1::11]:8443" },
  { address = "[2001:db8:1::12]:8443", weight = 2 },
]

[[virtual_server]]
name = "marked"
fwmark = 100
scheduler = "rr"
persistence_timeout = "60s"
real_server = [{ address = "10.0.2.1:0" }, { address = "10.0.2.2:0" }]

[[virtual_server]]
name = "v6persist"
address = "[2001:db8::100]:80"
scheduler = "rr"
persistence_timeout = "300s"
persistence_granularity = 64
real_server = [{ address = "[2001:db8:1::11]:80" }]

[[snat]]
match_vip = "192.0.2.100"
to_source = "192.0.2.200"
"#;

fn full() -> DesiredTable {
    compiled(FULL).0
}

fn snat() -> Vec<Snat> {
    compiled(FULL).1
}

fn pass(dp: &mut NftDataplane, desired: &DesiredTable, snat: &[Snat]) -> PassReport {
    dp.pass(&PassInput {
        desired,
        snat,
        exclusive: true,
        timeouts: None,
        sync_daemon: None,
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
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
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
    let mut again = dataplane(&ns, Scope::Services);
    assert_noop(&pass(&mut again, &desired, &snat()));
}

#[test]
fn flush_ruleset_is_repaired() {
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    let desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    nft(&ns, &["flush", "ruleset"]);
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert!(r.changed());
    assert_noop(&pass(&mut dp, &desired, &snat()));
    assert_status_matches(&mut dp, &desired);
}

#[test]
fn hand_deleted_element_rule_and_chain_are_repaired() {
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    let desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));

    nft(
        &ns,
        &[
            "delete",
            "element",
            "inet",
            "director",
            "sel_udp_c0000264_53",
            "{ 1 }",
        ],
    );
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

    nft(&ns, &["flush", "chain", "inet", "director", "dispatch"]);
    nft(&ns, &["delete", "chain", "inet", "director", "postnat_out"]);
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
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
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
    let listing = nft(
        &ns,
        &["list", "map", "inet", "director", "sel_sctp_c0000265_9000"],
    );
    assert!(
        !listing.contains("10.0.1.31"),
        "drained server still selectable"
    );
    assert_noop(&pass(&mut dp, &desired, &snat()));
}

#[test]
fn refused_transaction_names_the_service_and_keeps_the_rest() {
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    let mut desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    let before = nft(&ns, &["list", "table", "inet", "director"]);

    // A pre-existing conflicting object: the new service's selection map
    // already exists, same shape, but with room for one element, so the
    // kernel refuses (ENFILE) the batch that puts two in it.
    let bad = one(
        "[[virtual_server]]\nname = \"bad\"\naddress = \"192.0.2.102:80\"\nscheduler = \"rr\"\n\
         real_server = [{ address = \"10.0.3.1:80\" }, { address = \"10.0.3.2:80\" }]\n",
    );
    nft(&ns, &[
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
    let after = nft(&ns, &["list", "table", "inet", "director"]);
    assert!(after.contains("10.0.1.23"));
    assert!(!before.contains("10.0.1.23"));
    assert!(
        !after.contains("svc_tcp_c0000266_80"),
        "bad service half-applied"
    );

    // An input the compiler refuses is named too, and the rest still lands.
    let mut d2 = full();
    let wlc = one(
        "[[virtual_server]]\nname = \"wlc\"\naddress = \"192.0.2.103:80\"\nscheduler = \"wlc\"\n\
         forwarding = \"dr\"\nreal_server = [{ address = \"10.0.4.1:80\" }]\n",
    );
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
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::NatOnly);
    let empty = DesiredTable::default();
    assert_noop(&pass(&mut dp, &empty, &[]));
    assert!(dp.dump().unwrap().is_none());
    let desired = full();
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert!(r.applied.is_empty());
    let listing = nft(&ns, &["list", "table", "inet", "director"]);
    assert!(listing.contains("snat ip to ct original ip daddr map @snat4"));
    assert!(listing.contains("192.0.2.100 : 192.0.2.200"));
    assert!(!listing.contains("chain dispatch"));
    assert_noop(&pass(&mut dp, &desired, &snat()));
    // Nothing to carry: the table goes away.
    assert_clean(&pass(&mut dp, &empty, &[]));
    assert!(dp.dump().unwrap().is_none());
}

/// The path a steady-state daemon takes: passes with nothing to do read no
/// dump (the nf_tables generation did not move), and a destination change
/// is one netlink batch (elements, plus the rr/wrr selector rule replaced
/// in place) that leaves the kernel exactly as nft would have.
#[test]
fn destination_changes_are_netlink_batches_without_dumps() {
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    let mut desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    assert_noop(&pass(&mut dp, &desired, &snat()));
    let before = dp.path_counts();
    assert_eq!(before.cli_applies, 1, "{before:?}");
    assert_noop(&pass(&mut dp, &desired, &snat()));
    let after = dp.path_counts();
    assert_eq!(after.dumps, before.dumps, "a no-op pass dumped: {after:?}");
    assert_eq!(after.cached, before.cached + 1);

    // rr: drain one of two -> `numgen inc mod 1`; wrr with persistence:
    // a weight change; both in one pass, one batch.
    let dns = inet(Protocol::Udp, "192.0.2.100:53");
    let web = inet(Protocol::Tcp, "192.0.2.100:80");
    desired
        .services
        .get_mut(&dns)
        .unwrap()
        .dests
        .values_mut()
        .next()
        .unwrap()
        .weight = 0;
    for d in desired.services.get_mut(&web).unwrap().dests.values_mut() {
        if d.weight == 3 {
            d.weight = 2;
        }
    }
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert_eq!(r.applied.len(), 2, "{:#?}", r.applied);
    assert!(r.repairs.is_empty(), "{:#?}", r.repairs);
    let paths = dp.path_counts();
    assert_eq!(paths.fast_batches, 1, "{paths:?}");
    assert_eq!(paths.cli_applies, 1, "{paths:?}");
    assert_eq!(paths.dumps, after.dumps, "{paths:?}");
    let chain = nft(
        &ns,
        &["list", "chain", "inet", "director", "svc_udp_c0000264_53"],
    );
    assert!(
        chain.contains("numgen inc mod 1 map @sel_udp_c0000264_53")
            && chain.contains("comment \"sel numgen inc mod 1\""),
        "{chain}"
    );
    // nft's own view of what we wrote: a fresh dataplane (a dump) finds
    // nothing to change, and status reads the new weights back.
    let mut fresh = dataplane(&ns, Scope::Services);
    assert_noop(&pass(&mut fresh, &desired, &snat()));
    assert_status_matches(&mut fresh, &desired);
    // The cache followed the batch (new rule handles included): the next
    // passes, and undraining again, need no dump and no nft either.
    assert_noop(&pass(&mut dp, &desired, &snat()));
    let restored = full();
    let r = pass(&mut dp, &restored, &snat());
    assert_clean(&r);
    assert_eq!(r.applied.len(), 2, "{:#?}", r.applied);
    let paths = dp.path_counts();
    assert_eq!((paths.fast_batches, paths.cli_applies), (2, 1), "{paths:?}");
    assert_eq!(paths.dumps, after.dumps, "{paths:?}");
    assert_noop(&pass(
        &mut dataplane(&ns, Scope::Services),
        &restored,
        &snat(),
    ));
}

/// Anyone else's commit moves the generation: the next pass dumps again
/// and repairs what was changed behind its back.
#[test]
fn a_foreign_commit_makes_the_next_pass_dump_and_repair() {
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    let desired = full();
    assert_clean(&pass(&mut dp, &desired, &snat()));
    assert_noop(&pass(&mut dp, &desired, &snat()));
    let before = dp.path_counts();
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "director",
            "vip4",
            "{ 198.51.100.77 }",
        ],
    );
    let r = pass(&mut dp, &desired, &snat());
    assert_clean(&r);
    assert_eq!(dp.path_counts().dumps, before.dumps + 1);
    assert_eq!(
        r.repairs,
        vec!["deleted 1 element(s) of vip4: 198.51.100.77".to_string()]
    );
    assert_noop(&pass(&mut dp, &desired, &snat()));
}

/// The batch guard itself: a batch planned against an old generation is
/// refused whole, and a batch with one bad message applies nothing.
#[test]
fn netlink_batches_are_guarded_and_atomic() {
    use director::nft::nfnl::{ElemOp, FastCmd, Nfnl, NfnlError};
    let ns = new_netns();
    let mut dp = dataplane(&ns, Scope::Services);
    assert_clean(&pass(&mut dp, &full(), &snat()));
    let mut sock = Nfnl::open_in_netns(ns.name()).expect("nf_tables socket");
    let add = |set: &str, v: &str| FastCmd::Elements {
        op: ElemOp::Add,
        set: set.into(),
        key_type: "ipv4_addr".into(),
        data_type: None,
        elems: vec![(v.into(), String::new())],
    };
    let vip4 = || nft(&ns, &["list", "set", "inet", "director", "vip4"]);

    let stale = sock.generation().unwrap();
    nft(
        &ns,
        &[
            "add",
            "element",
            "inet",
            "director",
            "vip4",
            "{ 198.51.100.1 }",
        ],
    );
    let r = sock.apply(&[add("vip4", "198.51.100.2")], stale);
    assert_eq!(r, Err(NfnlError::GenerationChanged));
    assert!(!vip4().contains("198.51.100.2"), "{}", vip4());

    let now = sock.generation().unwrap();
    assert_eq!(now, stale.wrapping_add(1));
    let r = sock.apply(
        &[
            add("vip4", "198.51.100.3"),
            add("no_such_set", "198.51.100.4"),
        ],
        now,
    );
    match r {
        Err(NfnlError::Refused { index, errno, .. }) => {
            assert_eq!(index, 1);
            assert_eq!(errno, libc::ENOENT);
        }
        other => panic!("{other:?}"),
    }
    assert!(!vip4().contains("198.51.100.3"), "half-applied: {}", vip4());
    assert_eq!(
        sock.generation().unwrap(),
        now,
        "a refused batch commits nothing"
    );

    let applied = sock.apply(&[add("vip4", "198.51.100.5")], now);
    assert!(applied.is_ok(), "{applied:?}");
    assert!(vip4().contains("198.51.100.5"));
    assert_eq!(sock.generation().unwrap(), now.wrapping_add(1));
}
