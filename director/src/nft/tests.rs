//! Pure tests of the nftables dataplane: golden script, dump parsing of
//! real `nft -j` output captured on Debian 12 (nft 1.0.6, kernel 6.1), the
//! physical diff, selections, and the pass against a recording fake.

use super::compile::{compile, selection, Scope, JHASH_SEED, SH_TABLE_SIZE};
use super::model::Ruleset;
use super::plan::{plan, script, Cmd};
use super::*;
use crate::config::Snat;
use crate::desired::{DesiredService, DesiredTable};
use crate::model::{
    default_netmask, svc_flags, DestKey, DestSettings, Family, Forward, Protocol, Service,
    ServiceSettings,
};
use std::sync::{Arc, Mutex};

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

/// The same table as tests/tests/nft_table.rs: every scheduler, family,
/// protocol, persistence, fwmark, a drained server.
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

fn want() -> Ruleset {
    let c = compile(&full(), &snat(), Scope::Services);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    c.ruleset.unwrap()
}

fn text(cmds: &[Cmd]) -> String {
    script(&cmds.iter().collect::<Vec<_>>())
}

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/nft/testdata");

/// The cold-start script, byte for byte. `UPDATE_GOLDEN=1` rewrites it
/// (then review the diff). testdata/full.json is what the kernel listed
/// after `nft -f testdata/full.nft` in a fresh namespace on this host.
#[test]
fn golden_cold_script() {
    let got = text(&plan(Some(&want()), None));
    let path = format!("{TESTDATA}/full.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert_eq!(got, golden);
}

fn captured() -> Ruleset {
    let json = std::fs::read_to_string(format!("{TESTDATA}/full.json")).unwrap();
    dump::parse(&json).unwrap()
}

#[test]
fn captured_dump_round_trips_to_no_change() {
    let have = captured();
    let cmds = plan(Some(&want()), Some(&have));
    assert!(cmds.is_empty(), "{}", text(&cmds));
}

#[test]
fn status_from_captured_dump_matches_desired() {
    let t = status::table(Some(&captured()), &[]);
    let desired = full();
    assert_eq!(t.services.len(), desired.services.len());
    for ks in &t.services {
        let d = &desired.services[&ks.service.key];
        assert_eq!(ks.service, d.service);
        let dests: std::collections::BTreeMap<_, _> = ks
            .dests
            .iter()
            .map(|x| (x.dest.key, x.dest.settings))
            .collect();
        assert_eq!(dests, d.dests);
    }
    assert!(crate::reconcile::diff(&desired, &t, true).is_empty());
}

#[test]
fn hand_deleted_element_is_exactly_one_add() {
    let mut have = captured();
    let sel = have.sets.get_mut("sel_udp_c0000264_53").unwrap();
    assert!(sel.elements.remove("1").is_some());
    let cmds = plan(Some(&want()), Some(&have));
    assert_eq!(
        text(&cmds),
        "add element inet director sel_udp_c0000264_53 { 1 : 10.0.1.22 . 53 }\n"
    );
    assert_eq!(cmds[0].owner, Owner::Service("udp_c0000264_53".into()));
}

#[test]
fn hand_deleted_rule_rewrites_only_that_chain() {
    let mut have = captured();
    have.chains
        .get_mut("svc_tcp_c0000264_80")
        .map(|c| c.rules.pop());
    let cmds = plan(Some(&want()), Some(&have));
    assert!(cmds.iter().all(|c| c.text.contains("svc_tcp_c0000264_80")));
    assert_eq!(
        cmds[0].text,
        "flush chain inet director svc_tcp_c0000264_80"
    );
}

#[test]
fn drained_dest_leaves_selection_and_stays_in_registry() {
    let mut d = full();
    let key = inet(Protocol::Udp, "192.0.2.100:53");
    let svc = d.services.get_mut(&key).unwrap();
    svc.dests.values_mut().next().unwrap().weight = 0;
    let w = compile(&d, &snat(), Scope::Services).ruleset.unwrap();
    let sel = &w.sets["sel_udp_c0000264_53"];
    assert_eq!(sel.elements.len(), 1);
    assert_eq!(sel.elements["0"].value, "10.0.1.22 . 53");
    assert_eq!(
        w.sets["reg_udp_c0000264_53"].elements["10.0.1.21 . 53"].value,
        "0"
    );
    let cmds = plan(Some(&w), Some(&captured()));
    let t = text(&cmds);
    assert!(
        cmds.iter()
            .all(|c| c.owner == Owner::Service("udp_c0000264_53".into())),
        "{t}"
    );
    assert!(
        t.contains("numgen inc mod 1 map @sel_udp_c0000264_53"),
        "{t}"
    );
    assert!(t.contains("delete element inet director reg_udp_c0000264_53 { 10.0.1.21 . 53 }"));
    assert!(t.contains("add element inet director reg_udp_c0000264_53 { 10.0.1.21 . 53 : 0 }"));
}

#[test]
fn wrr_selection_shares_follow_weights() {
    let s = service(
        "w",
        inet(Protocol::Tcp, "192.0.2.1:80"),
        "wrr",
        &[
            ("10.0.0.1:80", 30),
            ("10.0.0.2:80", 10),
            ("10.0.0.3:80", 20),
            ("10.0.0.4:80", 0),
        ],
        None,
    );
    let sel = selection(&s).unwrap().unwrap();
    assert_eq!(sel.expr, "numgen inc mod 6");
    let count = |a: &str| sel.slots.iter().filter(|d| d.addr.to_string() == a).count();
    assert_eq!(
        (
            count("10.0.0.1"),
            count("10.0.0.2"),
            count("10.0.0.3"),
            count("10.0.0.4")
        ),
        (3, 1, 2, 0)
    );
    // Consecutive connections alternate: never the same server twice in a
    // row when another has weight left in the round.
    assert_ne!(sel.slots[0], sel.slots[1]);
}

#[test]
fn mh_selection_is_maglev_build() {
    let mut s = service(
        "m",
        inet(Protocol::Tcp, "192.0.2.1:80"),
        "mh",
        &[
            ("10.0.0.3:80", 1),
            ("10.0.0.1:80", 2),
            ("10.0.0.2:80", 1),
            ("10.0.0.9:80", 0),
        ],
        None,
    );
    s.maglev_table_size = 1009;
    let sel = selection(&s).unwrap().unwrap();
    assert_eq!(
        sel.expr,
        format!("jhash ip saddr mod 1009 seed {JHASH_SEED:#010x}")
    );
    let backends: Vec<crate::maglev::Backend> = s
        .dests
        .iter()
        .map(|(k, d)| crate::maglev::Backend {
            addr: std::net::SocketAddr::new(k.addr, k.port),
            weight: d.weight as u32,
        })
        .collect();
    let m = crate::maglev::build(&backends, 1009).unwrap();
    let expect: Vec<DestKey> = m
        .slots()
        .iter()
        .map(|i| {
            let b = m.backends()[*i as usize].addr;
            DestKey {
                addr: b.ip(),
                port: b.port(),
            }
        })
        .collect();
    assert_eq!(sel.slots, expect);
    // Config order does not matter (the map is keyed by address).
    let mut rev = s.clone();
    rev.dests = s.dests.iter().rev().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(selection(&rev).unwrap().unwrap(), sel);
    // mh-port hashes the source port too.
    s.service.settings.flags |= svc_flags::SCHED2;
    assert!(selection(&s)
        .unwrap()
        .unwrap()
        .expr
        .starts_with("jhash ip saddr . th sport mod 1009"));
}

#[test]
fn sh_fills_256_buckets_by_weight() {
    let s = service(
        "s",
        inet(Protocol::Tcp, "192.0.2.1:80"),
        "sh",
        &[("10.0.0.1:80", 1), ("10.0.0.2:80", 3)],
        None,
    );
    let sel = selection(&s).unwrap().unwrap();
    assert_eq!(sel.slots.len(), SH_TABLE_SIZE as usize);
    let a = sel
        .slots
        .iter()
        .filter(|d| d.addr.to_string() == "10.0.0.1")
        .count();
    assert_eq!(a, 64);
}

#[test]
fn unsupported_inputs_are_errors_not_panics() {
    let mut d = DesiredTable::default();
    let mut bad = vec![
        service(
            "wlc",
            inet(Protocol::Tcp, "192.0.2.1:80"),
            "wlc",
            &[("10.0.0.1:80", 1)],
            None,
        ),
        service(
            "p0",
            inet(Protocol::Tcp, "192.0.2.2:0"),
            "rr",
            &[("10.0.0.1", 1)],
            None,
        ),
        service(
            "mix",
            inet(Protocol::Tcp, "192.0.2.3:80"),
            "rr",
            &[("10.0.0.1", 1), ("10.0.0.2:80", 1)],
            None,
        ),
        service(
            "fam",
            inet(Protocol::Tcp, "192.0.2.4:80"),
            "rr",
            &[("[2001:db8::1]:80", 1)],
            None,
        ),
        service(
            "mhsize",
            inet(Protocol::Tcp, "192.0.2.5:80"),
            "mh",
            &[("10.0.0.1:80", 1)],
            None,
        ),
        service(
            "dr",
            inet(Protocol::Tcp, "192.0.2.6:80"),
            "rr",
            &[("10.0.0.1:80", 1)],
            None,
        ),
    ];
    bad[4].maglev_table_size = 100;
    bad[5].dests.values_mut().next().unwrap().forward = Forward::Route;
    for s in bad.drain(..) {
        d.services.insert(s.service.key, s);
    }
    let c = compile(&d, &[], Scope::Services);
    assert_eq!(c.errors.len(), 6, "{:#?}", c.errors);
    assert!(c.errors[&inet(Protocol::Tcp, "192.0.2.1:80")].contains("\"wlc\" is not supported"));
    assert!(c.errors[&inet(Protocol::Tcp, "192.0.2.6:80")].contains("Route"));
    assert!(!c
        .ruleset
        .unwrap()
        .chains
        .keys()
        .any(|k| k.starts_with("svc_")));
}

#[test]
fn dump_parser_never_panics_on_odd_input() {
    assert!(dump::parse("not json").is_err());
    assert!(dump::parse("{}").is_err());
    let odd = r#"{"nftables": [1, {"map": {"name": "x"}}, {"rule": {"chain": "nope"}},
        {"set": {"name": "s", "type": ["a", 3], "elem": [{"range": [1, 2]}, {"prefix": {"addr": "10.0.0.0", "len": 8}}]}},
        {"chain": {"name": "svc_tcp_zz_1"}}, {"counter": {"name": "c"}}]}"#;
    let rs = dump::parse(odd).unwrap();
    assert_eq!(rs.sets["s"].elements.len(), 2);
    assert!(rs.sets["s"].elements.contains_key("10.0.0.0/8"));
    let t = status::table(Some(&rs), &[]);
    assert!(t.services.is_empty());
}

/// A recording fake executor: serves a fixed dump, records scripts, and
/// refuses scripts containing a marker, blaming its line.
struct Fake {
    dump: Option<String>,
    scripts: Arc<Mutex<Vec<String>>>,
    refuse: &'static str,
}

impl NftExec for Fake {
    fn apply(&mut self, script: &str) -> Result<(), NftError> {
        self.scripts.lock().unwrap().push(script.to_string());
        if let Some((i, _)) = script
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(self.refuse))
        {
            return Err(NftError::Failed {
                status: "exit status: 1".into(),
                stderr: format!("/dev/stdin:{}:1-3: Error: Could not process rule: Too many open files in system", i + 1),
            });
        }
        Ok(())
    }
    fn list(&mut self) -> Result<Option<String>, NftError> {
        Ok(self.dump.clone())
    }
    fn list_map(&mut self, _name: &str) -> Result<Option<String>, NftError> {
        Ok(None)
    }
}

#[test]
fn refused_line_names_its_service_and_the_rest_is_retried() {
    let scripts = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        dump: None,
        scripts: scripts.clone(),
        refuse: "sel_udp_c0000264_53 {",
    };
    let mut dp = NftDataplane::new(
        Box::new(fake),
        Box::new(FixedFlows::default()),
        Scope::Services,
    );
    let d = full();
    let r = dp.pass(&PassInput {
        desired: &d,
        snat: &snat(),
        exclusive: true,
        timeouts: None,
        sync_daemon: None,
    });
    assert!(!r.failed.is_empty());
    assert!(r
        .failed
        .iter()
        .all(|f| f.service_name.as_deref() == Some("dns")));
    assert!(r.failed[0].error.contains("Too many open files"));
    assert!(r
        .applied
        .iter()
        .all(|op| op.service_key() != inet(Protocol::Udp, "192.0.2.100:53")));
    assert_eq!(
        r.applied
            .iter()
            .filter(|op| matches!(op, IpvsOp::AddService(_)))
            .count(),
        5
    );
    let s = scripts.lock().unwrap();
    assert_eq!(
        s.len(),
        2,
        "one refused batch, one retry without the blamed service"
    );
    assert!(!s[1].contains("udp_c0000264_53"));
}
