//! nftables dataplane benchmark: 5,000 services x 4 real servers (by
//! default) in a private network namespace, through the real `nft` CLI.
//!
//! ```text
//! cargo build --release -p director-tests --bin nft-bench
//! sudo target/release/nft-bench [SERVICES] [DESTS] [RUNS]
//! ```
//!
//! Prints medians of RUNS runs of: cold apply (empty namespace -> full
//! table, one pass), a full reconcile pass with nothing to change, a
//! one-destination change (whole pass: dump + parse + diff + transaction;
//! and the transaction alone), and the kube-proxy-style alternative (flush
//! the table and re-emit all of it in one transaction) for the same change.

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
    let mut dp = NftDataplane::new(
        Box::new(cli.clone()),
        Box::new(FixedFlows::default()),
        Scope::Services,
    );
    let base = table(services, dests);
    println!(
        "nft-bench: {services} services x {dests} real servers (rr), {runs} runs, netns {}",
        ns.name()
    );

    let mut cold = Vec::new();
    for _ in 0..runs.min(3) {
        let _ = cli.apply("delete table inet director\n");
        cold.push(pass(&mut dp, &base));
    }
    println!(
        "cold apply (one pass, one transaction): {}",
        ms(median(cold))
    );

    let noop: Vec<Duration> = (0..runs).map(|_| pass(&mut dp, &base)).collect();
    println!(
        "full reconcile pass, nothing to change: {}",
        ms(median(noop))
    );

    // One destination drained and restored, alternately, in service #2500.
    let key = *base.services.keys().nth(services / 2).expect("a service");
    let mut drained = base.clone();
    if let Some(s) = drained.services.get_mut(&key) {
        if let Some(d) = s.dests.values_mut().next() {
            d.weight = 0;
        }
    }
    let mut whole = Vec::new();
    let mut txn = Vec::new();
    let mut lines = 0;
    let mut flip = false;
    for _ in 0..runs {
        flip = !flip;
        let target = if flip { &drained } else { &base };
        // The transaction alone: dump, diff, then time only `nft -f`.
        let have = dump::parse(&cli.list().expect("list").expect("table")).expect("parse");
        let want = compile::compile(target, &[], Scope::Services)
            .ruleset
            .expect("ruleset");
        let cmds = plan::plan(Some(&want), Some(&have));
        lines = cmds.len();
        let refs: Vec<&plan::Cmd> = cmds.iter().collect();
        let script = plan::script(&refs);
        let start = Instant::now();
        cli.apply(&script).expect("apply");
        txn.push(start.elapsed());
        // Back, as a whole pass (dump + parse + diff + transaction).
        flip = !flip;
        let back = if flip { &drained } else { &base };
        whole.push(pass(&mut dp, back));
    }
    println!(
        "one-destination change, transaction alone ({lines} commands): {}",
        ms(median(txn.clone()))
    );
    println!(
        "one-destination change, whole pass (dump+parse+diff+apply): {}",
        ms(median(whole.clone()))
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
        let script = format!("flush table inet director\n{}", plan::script(&refs));
        // Objects survive `flush table` (only rules go), so delete the table
        // in the same transaction instead: the same all-or-nothing re-emit.
        let script = script.replacen(
            "flush table inet director\nadd table inet director\n",
            "add table inet director\ndelete table inet director\nadd table inet director\n",
            1,
        );
        let start = Instant::now();
        cli.apply(&script).expect("full re-emit");
        full.push(start.elapsed());
    }
    let full = median(full);
    let t = median(txn);
    println!(
        "kube-proxy-style full re-emit (one transaction): {}",
        ms(full)
    );
    println!(
        "ratio full re-emit / one-destination transaction: {:.0}x",
        full.as_secs_f64() / t.as_secs_f64().max(1e-9)
    );
}
