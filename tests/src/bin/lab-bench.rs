//! The IPVS benchmark of the foundation issue, run inside the kernel lab
//! (`tests/lab/bench`): 5,000 virtual services x 4 destinations.
//!
//! Measured side by side in one run, alternating, medians of `--rounds`:
//! 1. cold apply: `director`'s startup pass (dump + diff + pipelined apply
//!    on an empty table) vs `ipvsadm -R` of the same rules;
//! 2. one reconcile pass with nothing to change;
//! 3. one pass that changes one destination's weight;
//! 4. `directorctl status` vs `ipvsadm -Ln` on that table (daemon running).
//!
//! Before timing, both paths are checked to produce the same table.

use director::config::{self, Config};
use director::desired::{desired_table, DesiredTable};
use director::ipvs::IpvsSocket;
use director::reconcile::Reconciler;
use director_tests::{bin, ipvsadm, Daemon};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vip(i: usize) -> String {
    // RFC 2544 benchmarking range 198.18.0.0/15.
    format!("198.18.{}.{}", i / 250, i % 250 + 1)
}
fn rip(i: usize, j: usize) -> String {
    let n = i * 4 + j;
    format!("198.19.{}.{}", n / 250, n % 250 + 1)
}

fn config_body(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let _ = writeln!(
            s,
            "[[virtual_server]]\nname = \"vs{i}\"\naddress = \"{}:80\"\nscheduler = \"wlc\"",
            vip(i)
        );
        for j in 0..4 {
            let _ = writeln!(
                s,
                "  [[virtual_server.real_server]]\n  address = \"{}:8080\"",
                rip(i, j)
            );
        }
    }
    s
}

fn ipvsadm_rules(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let _ = writeln!(s, "-A -t {}:80 -s wlc", vip(i));
        for j in 0..4 {
            let _ = writeln!(s, "-a -t {}:80 -r {}:8080 -m -w 1", vip(i), rip(i, j));
        }
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn time_cmd(cmd: &str, args: &[&str], stdin: Option<&str>) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let status = child.wait().expect("wait");
    let took = start.elapsed();
    assert!(status.success(), "{cmd} {args:?} failed");
    took
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let services = arg("--services", 5000);
    let rounds = arg("--rounds", 5);
    eprintln!("bench: {services} services x 4 destinations, {rounds} rounds");

    let body = config_body(services);
    let text = format!("[global]\nrouter_id = \"bench\"\n{body}");
    let config: Config = config::parse(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    let desired: DesiredTable = desired_table(&config);
    let rules = ipvsadm_rules(services);

    // Same table either way?
    ipvsadm(&["-C"]);
    time_cmd("ipvsadm", &["-R"], Some(&rules));
    let by_ipvsadm = ipvsadm(&["-Ln"]);
    ipvsadm(&["-C"]);
    let mut rec = Reconciler::new(IpvsSocket::open().expect("IPVS"));
    let report = rec.pass(&desired, false, None);
    assert!(
        report.failed.is_empty() && report.dump_error.is_none(),
        "cold apply failed: {:?}",
        report.failed.first()
    );
    assert_eq!(
        ipvsadm(&["-Ln"]),
        by_ipvsadm,
        "director and ipvsadm -R built different tables"
    );

    let (mut cold_dir, mut cold_adm, mut noop, mut one) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        ipvsadm(&["-C"]);
        cold_adm.push(time_cmd("ipvsadm", &["-R"], Some(&rules)));
        ipvsadm(&["-C"]);
        let start = Instant::now();
        let r = rec.pass(&desired, false, None);
        cold_dir.push(start.elapsed());
        assert_eq!(r.applied.len(), services * 5);

        let start = Instant::now();
        let r = rec.pass(&desired, false, None);
        noop.push(start.elapsed());
        assert!(r.applied.is_empty());

        let mut changed = desired.clone();
        if let Some(svc) = changed.services.values_mut().nth(services / 2) {
            if let Some(d) = svc.dests.values_mut().next() {
                d.weight = 2 + round as i32;
            }
        }
        let start = Instant::now();
        let r = rec.pass(&changed, false, None);
        one.push(start.elapsed());
        assert_eq!(r.applied.len(), 1);
        rec.pass(&desired, false, None);
        eprintln!("bench: round {} done", round + 1);
    }

    // directorctl status vs ipvsadm -Ln, with the daemon holding the table.
    let daemon = Daemon::start("reconcile_interval = \"1h\"", &body);
    assert_eq!(
        daemon.ctl_ok(&["status"]),
        ipvsadm(&["-Ln"]),
        "status differs from ipvsadm -Ln"
    );
    let sock = daemon.socket.to_string_lossy().into_owned();
    let ctl = bin("directorctl").to_string_lossy().into_owned();
    let (mut st_dir, mut st_adm) = (vec![], vec![]);
    for _ in 0..rounds.max(5) {
        st_adm.push(time_cmd("ipvsadm", &["-Ln"], None));
        st_dir.push(time_cmd(&ctl, &["--socket", &sock, "status"], None));
    }
    drop(daemon);

    let (cd, ca) = (median(cold_dir), median(cold_adm));
    let (sd, sa) = (median(st_dir), median(st_adm));
    println!("| measurement ({services} services x 4 destinations, median of {rounds}) | director | ipvsadm | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cold apply (empty table -> full) | {} | {} (`ipvsadm -R`) | {:.2} |",
        ms(cd),
        ms(ca),
        cd.as_secs_f64() / ca.as_secs_f64()
    );
    println!(
        "| reconcile pass, nothing to change | {} | - | - |",
        ms(median(noop))
    );
    println!(
        "| reconcile pass, one destination changed | {} | - | - |",
        ms(median(one))
    );
    println!(
        "| `directorctl status` vs `ipvsadm -Ln` | {} | {} | {:.2} |",
        ms(sd),
        ms(sa),
        sd.as_secs_f64() / sa.as_secs_f64()
    );
    ipvsadm(&["-C"]);
}
