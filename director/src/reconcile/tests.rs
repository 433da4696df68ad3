use super::*;
use crate::desired::DesiredService;
use crate::kernel::fake::{Call, FakeIpvs};
use crate::model::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// Small key spaces on purpose: desired and kernel tables must overlap often.
fn arb_service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            0u8..4,
            prop_oneof![Just(0u16), Just(80), Just(443)],
            any::<bool>()
        )
            .prop_map(|(protocol, host, port, v6)| {
                let ip: IpAddr = if v6 {
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host) + 1).into()
                } else {
                    Ipv4Addr::new(192, 0, 2, host + 1).into()
                };
                ServiceKey::Inet {
                    protocol,
                    addr: SocketAddr::new(ip, port),
                }
            }),
        (prop_oneof![Just(Family::V4), Just(Family::V6)], 1u32..4)
            .prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
    ]
}

fn arb_settings(family: Family) -> impl Strategy<Value = ServiceSettings> {
    (
        prop_oneof![Just("rr"), Just("wlc"), Just("mh"), Just("sh")],
        0u32..64,
        0u32..400,
        any::<bool>(),
    )
        .prop_map(move |(sched, flags, timeout, pe)| ServiceSettings {
            scheduler: sched.to_string(),
            flags: flags & svc_flags::USER_MASK,
            timeout,
            netmask: if timeout % 2 == 0 {
                default_netmask(family)
            } else if family == Family::V4 {
                0xffff_ff00
            } else {
                64
            },
            pe_name: pe.then(|| "sip".to_string()),
        })
}

fn arb_dest_settings() -> impl Strategy<Value = DestSettings> {
    (
        prop_oneof![
            Just(Forward::Masq),
            Just(Forward::Route),
            Just(Forward::Tunnel)
        ],
        0i32..4,
        0u32..3,
    )
        .prop_map(|(forward, weight, thr)| DestSettings {
            forward,
            weight,
            upper_threshold: thr * 100,
            lower_threshold: thr * 50,
            tunnel: if forward == Forward::Tunnel && weight % 2 == 1 {
                Tunnel {
                    kind: TunnelType::Gue,
                    port: 6080,
                    csum: TunnelCsum::Csum,
                }
            } else {
                Tunnel::default()
            },
        })
}

fn arb_dests(family: Family) -> impl Strategy<Value = BTreeMap<DestKey, DestSettings>> {
    proptest::collection::btree_map(
        (1u8..6, prop_oneof![Just(0u16), Just(8080)]).prop_map(move |(h, port)| DestKey {
            addr: match family {
                Family::V4 => Ipv4Addr::new(10, 0, 1, h).into(),
                Family::V6 => Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(h)).into(),
            },
            port,
        }),
        arb_dest_settings(),
        0..5,
    )
}

fn arb_service() -> impl Strategy<Value = (Service, BTreeMap<DestKey, DestSettings>)> {
    arb_service_key().prop_flat_map(|key| {
        let fam = key.family();
        (arb_settings(fam), arb_dests(fam))
            .prop_map(move |(settings, dests)| (Service { key, settings }, dests))
    })
}

fn arb_desired() -> impl Strategy<Value = DesiredTable> {
    proptest::collection::vec(arb_service(), 0..6).prop_map(|v| DesiredTable {
        services: v
            .into_iter()
            .enumerate()
            .map(|(i, (service, dests))| {
                (
                    service.key,
                    DesiredService {
                        maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
                        name: format!("vs{i}"),
                        service,
                        dests,
                    },
                )
            })
            .collect(),
    })
}

fn arb_kernel() -> impl Strategy<Value = KernelTable> {
    proptest::collection::vec((arb_service(), 0u64..1000), 0..6).prop_map(|v| {
        let mut services: Vec<KernelService> = Vec::new();
        for ((service, dests), conns) in v {
            if services.iter().any(|s| s.service.key == service.key) {
                continue;
            }
            services.push(KernelService {
                service,
                stats: Stats {
                    conns,
                    ..Stats::default()
                },
                dests: dests
                    .into_iter()
                    .map(|(key, settings)| KernelDest {
                        dest: Destination { key, settings },
                        active_conns: 1,
                        inactive_conns: 2,
                        persist_conns: 0,
                        stats: Stats {
                            conns,
                            ..Stats::default()
                        },
                    })
                    .collect(),
            });
        }
        KernelTable {
            info: IpvsInfo {
                version: 0x010201,
                conn_tab_size: 4096,
            },
            services,
        }
    })
}

/// The owned part of a kernel table, in desired-table terms.
fn as_desired(kernel: &KernelTable, like: &DesiredTable) -> DesiredTable {
    DesiredTable {
        services: kernel
            .services
            .iter()
            .filter_map(|ks| {
                let name = like.services.get(&ks.service.key)?.name.clone();
                let dests = ks
                    .dests
                    .iter()
                    .map(|d| (d.dest.key, d.dest.settings))
                    .collect();
                Some((
                    ks.service.key,
                    DesiredService {
                        maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
                        name,
                        service: ks.service.clone(),
                        dests,
                    },
                ))
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Applying the diff to the dump yields the desired state, with every op
    /// accepted by kernel semantics, and a second diff is empty.
    #[test]
    fn diff_applied_to_dump_yields_desired(desired in arb_desired(), kernel in arb_kernel(), exclusive in any::<bool>()) {
        let ops = diff(&desired, &kernel, exclusive);
        let mut after = kernel.clone();
        for op in &ops {
            prop_assert!(FakeIpvs::apply_one(&mut after, op).is_ok(), "op refused: {op}");
        }
        prop_assert_eq!(as_desired(&after, &desired), desired.clone());
        prop_assert!(desired.services.keys().all(|k| after.services.iter().any(|s| s.service.key == *k)));
        prop_assert!(diff(&desired, &after, exclusive).is_empty());

        for ks in &kernel.services {
            let owned = desired.services.contains_key(&ks.service.key);
            let survivor = after.services.iter().find(|s| s.service.key == ks.service.key);
            match (owned, exclusive) {
                // Not ours and not exclusive: untouched, counters and all.
                (false, false) => prop_assert_eq!(survivor, Some(ks)),
                (false, true) => prop_assert!(survivor.is_none()),
                // Ours: adopted in place, so its counters survive.
                (true, _) => prop_assert_eq!(survivor.map(|s| s.stats), Some(ks.stats)),
            }
        }
    }

    /// Minimality: one op per difference, none for what already matches.
    #[test]
    fn diff_is_minimal(desired in arb_desired(), kernel in arb_kernel()) {
        let ops = diff(&desired, &kernel, false);
        let mut expected = 0;
        for (key, want) in &desired.services {
            match kernel.services.iter().find(|s| s.service.key == *key) {
                None => expected += 1 + want.dests.len(),
                Some(have) => {
                    expected += usize::from(have.service.settings != want.service.settings);
                    for d in &have.dests {
                        match want.dests.get(&d.dest.key) {
                            None => expected += 1,
                            Some(s) => expected += usize::from(*s != d.dest.settings),
                        }
                    }
                    expected += want.dests.keys().filter(|k| !have.dests.iter().any(|d| d.dest.key == **k)).count();
                }
            }
        }
        prop_assert_eq!(ops.len(), expected);
    }
}

fn web_desired() -> DesiredTable {
    let key = ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "192.0.2.100:80".parse().unwrap(),
    };
    let mut dests = BTreeMap::new();
    for h in 11..=13 {
        dests.insert(
            DestKey {
                addr: format!("10.0.1.{h}").parse().unwrap(),
                port: 8080,
            },
            DestSettings::new(Forward::Masq, 1),
        );
    }
    let mut services = BTreeMap::new();
    services.insert(
        key,
        DesiredService {
            maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
            name: "web".into(),
            service: Service {
                key,
                settings: ServiceSettings::new("wlc", Family::V4),
            },
            dests,
        },
    );
    DesiredTable { services }
}

#[test]
fn cold_start_then_steady_state_is_quiet() {
    let desired = web_desired();
    let mut r = Reconciler::new(FakeIpvs::new());
    let first = r.pass(&desired, false, None);
    assert_eq!(first.applied.len(), 4);
    assert!(first.failed.is_empty() && first.conflicts.is_empty());
    let second = r.pass(&desired, false, None);
    assert!(
        second.applied.is_empty(),
        "a pass with nothing to change must emit no op: {:?}",
        second.applied
    );
}

#[test]
fn restart_adopts_without_touching_counters() {
    let desired = web_desired();
    let mut kernel = FakeIpvs::new();
    Reconciler::new(&mut kernel).pass(&desired, false, None);
    kernel.table.services[0].stats.conns = 4242;
    kernel.calls.clear();
    // A new daemon process: a fresh reconciler over the same kernel.
    let report = Reconciler::new(&mut kernel).pass(&desired, false, None);
    assert!(report.applied.is_empty());
    assert_eq!(
        kernel.calls,
        vec![Call::Dump],
        "adoption must not write (no flush, no re-create)"
    );
    assert_eq!(kernel.table.services[0].stats.conns, 4242);
}

#[test]
fn external_flush_and_hand_edit_are_repaired() {
    let desired = web_desired();
    let mut kernel = FakeIpvs::new();
    Reconciler::new(&mut kernel).pass(&desired, false, None);
    // ipvsadm -e -t 192.0.2.100:80 -r 10.0.1.12:8080 -m -w 9
    kernel.table.services[0].dests[1].dest.settings.weight = 9;
    let report = Reconciler::new(&mut kernel).pass(&desired, false, None);
    assert_eq!(report.applied.len(), 1);
    assert!(
        matches!(&report.applied[0], IpvsOp::EditDest { dest, .. } if dest.settings.weight == 1)
    );
    // ipvsadm -C
    kernel.flush().unwrap();
    let report = Reconciler::new(&mut kernel).pass(&desired, false, None);
    assert_eq!(report.applied.len(), 4);
    assert_eq!(as_desired(&kernel.table, &desired), desired);
}

#[test]
fn foreign_services_are_left_alone_unless_exclusive() {
    let desired = web_desired();
    let mut kernel = FakeIpvs::new();
    let foreign = Service {
        key: ServiceKey::Fwmark {
            family: Family::V4,
            mark: 7,
        },
        settings: ServiceSettings::new("rr", Family::V4),
    };
    kernel.apply(&[IpvsOp::AddService(foreign.clone())]);
    Reconciler::new(&mut kernel).pass(&desired, false, None);
    assert_eq!(kernel.table.services.len(), 2);
    let report = Reconciler::new(&mut kernel).pass(&desired, true, None);
    assert_eq!(report.applied, vec![IpvsOp::DelService(foreign.key)]);
    assert_eq!(kernel.table.services.len(), 1);
}

#[test]
fn refused_op_is_named_and_the_rest_still_applies() {
    let mut desired = web_desired();
    let bad_key = ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "192.0.2.100:53".parse().unwrap(),
    };
    desired.services.insert(
        bad_key,
        DesiredService {
            maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
            name: "dns".into(),
            service: Service {
                key: bad_key,
                settings: ServiceSettings::new("nosuchsched", Family::V4),
            },
            dests: BTreeMap::new(),
        },
    );
    let mut r = Reconciler::new(FakeIpvs::new());
    let report = r.pass(&desired, false, None);
    assert!(
        report.conflicts.is_empty(),
        "ENOENT from an unknown scheduler is an error, not a signal"
    );
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].service_name.as_deref(), Some("dns"));
    assert!(
        report.failed[0]
            .error
            .contains("add service UDP 192.0.2.100:53"),
        "{}",
        report.failed[0].error
    );
    assert_eq!(report.applied.len(), 4, "web must still be programmed");
    // The next pass retries it (and fails the same way until the module exists).
    let again = r.pass(&desired, false, None);
    assert_eq!(again.failed.len(), 1);
    assert!(again.applied.is_empty());
}

#[test]
fn invalid_dest_is_an_error_not_a_signal() {
    let mut desired = web_desired();
    let svc = desired.services.values_mut().next().unwrap();
    let first = *svc.dests.keys().next().unwrap();
    svc.dests.get_mut(&first).unwrap().weight = -1;
    let report = Reconciler::new(FakeIpvs::new()).pass(&desired, false, None);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].errno, Some(libc::EINVAL));
    assert_eq!(report.applied.len(), 3);
}

#[test]
fn dump_failure_applies_nothing() {
    let mut fake = FakeIpvs::new();
    fake.available = false;
    let report = Reconciler::new(fake).pass(&web_desired(), false, None);
    assert!(report.dump_error.unwrap().contains("no IPVS"));
    assert!(report.applied.is_empty());
}

#[test]
fn timeouts_are_set_only_when_they_differ() {
    let mut kernel = FakeIpvs::new();
    let want = Timeouts {
        tcp: 900,
        tcp_fin: 30,
        udp: 0,
    };
    let report = Reconciler::new(&mut kernel).pass(&DesiredTable::default(), false, Some(want));
    assert_eq!(report.timeouts_set, Some(want));
    assert_eq!(
        kernel.timeouts,
        Timeouts {
            tcp: 900,
            tcp_fin: 30,
            udp: 300
        }
    );
    let report = Reconciler::new(&mut kernel).pass(&DesiredTable::default(), false, Some(want));
    assert_eq!(report.timeouts_set, None);
}

#[test]
fn new_dests_are_added_before_old_ones_are_removed() {
    let desired = web_desired();
    let mut kernel = FakeIpvs::new();
    Reconciler::new(&mut kernel).pass(&desired, false, None);
    let mut moved = desired.clone();
    let svc = moved.services.values_mut().next().unwrap();
    svc.dests.clear();
    svc.dests.insert(
        DestKey {
            addr: "10.0.2.1".parse().unwrap(),
            port: 8080,
        },
        DestSettings::new(Forward::Masq, 1),
    );
    let ops = diff(&moved, &kernel.table, false);
    let first_del = ops
        .iter()
        .position(|o| matches!(o, IpvsOp::DelDest { .. }))
        .unwrap();
    let add = ops
        .iter()
        .position(|o| matches!(o, IpvsOp::AddDest { .. }))
        .unwrap();
    assert!(add < first_del);
}

#[test]
fn table_moving_under_us_is_a_signal() {
    let desired = web_desired();
    let mut kernel = FakeIpvs::new();
    Reconciler::new(&mut kernel).pass(&desired, false, None);
    let svc = *desired.services.keys().next().unwrap();
    let stale = kernel.table.clone();
    kernel.flush().unwrap();
    // A diff computed from the stale dump, applied to the flushed table.
    let mut moved = desired.clone();
    moved
        .services
        .values_mut()
        .next()
        .unwrap()
        .dests
        .values_mut()
        .for_each(|d| d.weight = 5);
    let ops = diff(&moved, &stale, false);
    let results = kernel.apply(&ops);
    assert!(
        results
            .iter()
            .zip(&ops)
            .all(|(r, op)| is_signal(op, r.as_ref().unwrap_err())),
        "{results:?}"
    );
    assert!(ops.iter().all(|o| o.service_key() == svc));
}
