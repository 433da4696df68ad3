//! nftables dataplane benchmark: 5,000 services x 4 real servers (by
//! default) in a private network namespace, through the real `nft` CLI and
//! the dataplane's nf_tables netlink socket.
//!
//! ```text
//! cargo build --release -p director-tests --bin nft-bench
//! sudo target/release/nft-bench [SERVICES] [DESTS] [RUNS]
//! ```
//!
//! Prints medians of RUNS runs of: cold apply (empty namespace -> full
//! table, one pass); a reconcile pass with nothing to change, right after a
//! restart (a dump) and in steady state (generation unchanged, no dump); a
//! one-destination change (the transaction alone, as the netlink batch the
//! dataplane sends and as the same commands through `nft -f`; and the
//! whole pass); and the kube-proxy-style alternative (delete the table and
//! re-emit all of it in one transaction).

use director::dataplane::{Dataplane, PassInput};
use director::desired::{DesiredService, DesiredTable};
use director::model::{
    default_netmask, DestKey, DestSettings, Family, Forward, Protocol, Service, ServiceKey,
    ServiceSettings,
};
use director::nft::{compile, dump, plan, FixedFlows, NftCli, NftDataplane, NftExec, Scope};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

fn table(services: usize, dests: usize) -> DesiredTable {
    let mut t = DesiredTable::default();
    for i in 0..services {
        let vip = Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1);
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: SocketAddr::new(IpAddr::V4(vip), 80),
        };
        let mut settings = ServiceSettings::new("rr", Family::V4);
        settings.netmask = default_netmask(Family::V4);
        let ds = (0..dests)
            .map(|d| {
                let rs = Ipv4Addr::from(0xac10_0000u32 + (i * dests + d) as u32 + 1);
                (
                    DestKey {
                        addr: IpAddr::V4(rs),
                        port: 8080,
                    },
                    DestSettings::new(Forward::Masq, 1),
                )
            })
            .collect();
        t.services.insert(
            key,
            DesiredService {
                name: format!("svc{i}"),
                service: Service { key, settings },
                maglev_table_size: 65537,
                dests: ds,
            },
        );
    }
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn pass(dp: &mut NftDataplane, t: &DesiredTable) -> Duration {
    let start = Instant::now();
    let r = dp.pass(&PassInput {
        desired: t,
        snat: &[],
        exclusive: true,
        timeouts: None,
        sync_daemon: None,
    });
    let took = start.elapsed();
    assert!(
        r.failed.is_empty() && r.nat_errors.is_empty() && r.dump_error.is_none(),
        "pass failed: {:?} {:?} {:?}",
        r.dump_error,
        r.nat_errors,
        r.failed.first()
    );
    took
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(5000);
    let dests = args.get(1).copied().unwrap_or(4);
    let runs = args.get(2).copied().unwrap_or(5).max(1);
    let ns = director_tests::netns::Netns::new("nft-bench");
    let mut cli = NftCli::in_netns(ns.name());
    let new_dp = || {
        NftDataplane::new(
            Box::new(NftCli::in_netns(ns.name())),
            Box::new(FixedFlows::default()),
            Scope::Services,
        )
    };
    let mut dp = new_dp();
    let base = table(services, dests);
    println!(
        "nft-bench: {services} services x {dests} real servers (rr), {runs} runs, netns {}",
        ns.name()
    );

    let mut cold = Vec::new();
    for _ in 0..runs.min(3) {
        let _ = cli.apply("delete table inet director\n");
        dp = new_dp();
        cold.push(pass(&mut dp, &base));
    }
    println!(
        "cold apply (one pass, one nft transaction): {}",
        ms(median(cold))
    );

    // A pass right after a restart (or after anyone else's commit) reads
    // the whole table back; later passes see an unchanged nf_tables
    // generation and trust what they know.
    let dumped: Vec<Duration> = (0..runs.min(3))
        .map(|_| pass(&mut new_dp(), &base))
        .collect();
    println!(
        "reconcile pass with nothing to change, first after a restart (dump): {}",
        ms(median(dumped))
    );
    let _ = pass(&mut dp, &base);
    let steady: Vec<Duration> = (0..runs).map(|_| pass(&mut dp, &base)).collect();
    println!(
        "reconcile pass with nothing to change, steady state (generation unchanged): {}",
        ms(median(steady))
    );

    // One destination of service #2500 drained and restored, alternately:
    // an rr service, so its selector rule (`numgen inc mod 4` -> `mod 3`)
    // is replaced along with the element changes.
    let key = *base.services.keys().nth(services / 2).expect("a service");
    let mut drained = base.clone();
    if let Some(s) = drained.services.get_mut(&key) {
        if let Some(d) = s.dests.values_mut().next() {
            d.weight = 0;
        }
    }
    let before = dp.path_counts();
    let mut whole = Vec::new();
    let mut flip = false;
    for _ in 0..runs {
        flip = !flip;
        whole.push(pass(&mut dp, if flip { &drained } else { &base }));
    }
    let after = dp.path_counts();
    assert_eq!(
        after.fast_batches - before.fast_batches,
        runs as u64,
        "every change should be one netlink batch: {after:?}"
    );
    assert_eq!(after.dumps, before.dumps, "no dumps expected: {after:?}");
    if flip {
        let _ = pass(&mut dp, &base);
    }

    // The transaction alone, both ways, side by side: the netlink batch the
    // dataplane sends, and the same commands as one `nft -f` script.
    let mut sock = director::nft::nfnl::Nfnl::open_in_netns(ns.name()).expect("nf_tables socket");
    let mut batch = Vec::new();
    let mut script_txn = Vec::new();
    let mut lines = 0;
    let plan_to = |target: &DesiredTable, cli: &mut NftCli, edits: plan::RuleEdits| {
        let have = dump::parse(&cli.list().expect("list").expect("table")).expect("parse");
        let want = compile::compile(target, &[], Scope::Services)
            .ruleset
            .expect("ruleset");
        plan::plan_with(Some(&want), Some(&have), edits)
    };
    for _ in 0..runs {
        // Drain through netlink, restore through nft -f: the same change
        // each way (one weight, the selector rule and its slots).
        let cmds = plan_to(&drained, &mut cli, plan::RuleEdits::InPlace);
        lines = cmds.len();
        let fast: Vec<_> = cmds
            .iter()
            .map(|c| c.fast.clone().expect("netlink form"))
            .collect();
        let generation = sock.generation().expect("generation");
        let start = Instant::now();
        sock.apply(&fast, generation).expect("netlink batch");
        batch.push(start.elapsed());
        let back = plan_to(&base, &mut cli, plan::RuleEdits::Rewrite);
        let refs: Vec<&plan::Cmd> = back.iter().collect();
        let script = plan::script(&refs);
        let start = Instant::now();
        cli.apply(&script).expect("apply");
        script_txn.push(start.elapsed());
    }
    let t = median(batch);
    println!(
        "one-destination change, the transaction alone ({lines} messages, one netlink batch): {}",
        ms(t)
    );
    println!(
        "one-destination change, the same change as one nft -f transaction: {}",
        ms(median(script_txn))
    );
    println!(
        "one-destination change, whole pass (generation check + compile + diff + batch): {}",
        ms(median(whole))
    );

    // kube-proxy style: flush the table and re-emit everything.
    let mut full = Vec::new();
    for i in 0..runs.min(3) {
        let target = if i % 2 == 0 { &drained } else { &base };
        let want = compile::compile(target, &[], Scope::Services)
            .ruleset
            .expect("ruleset");
        let cmds = plan::plan(Some(&want), None);
        let refs: Vec<&plan::Cmd> = cmds.iter().collect();
        // Objects survive `flush table` (only rules go), so delete the table
        // in the same transaction instead: the same all-or-nothing re-emit.
        let script = format!(
            "add table inet director\ndelete table inet director\n{}",
            plan::script(&refs)
        );
        let start = Instant::now();
        cli.apply(&script).expect("full re-emit");
        full.push(start.elapsed());
    }
    let full = median(full);
    println!(
        "kube-proxy-style full re-emit (one transaction): {}",
        ms(full)
    );
    println!(
        "ratio full re-emit / one-destination transaction: {:.0}x",
        full.as_secs_f64() / t.as_secs_f64().max(1e-9)
    );
}
