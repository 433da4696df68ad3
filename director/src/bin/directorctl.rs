//! `directorctl`: talks to a running `director` over its control socket.
//!
//! `status` prints exactly what `ipvsadm -Ln` prints for the same kernel
//! table (the daemon dumps, this side formats with `director::format`).
//! `vrrp --follow` is the one streaming command: it reads lines until the
//! daemon ends the stream or the user interrupts it.

use clap::{Parser, Subcommand};
use director::control::{self, Request, Response};
use director::format::{ListMode, ListOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "directorctl",
    version,
    about = "Query and steer a running director"
)]
struct Cli {
    /// Control socket of the daemon (`global.control_socket`).
    #[arg(
        long,
        global = true,
        env = "DIRECTOR_SOCKET",
        default_value = "/run/director/director.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The load-balancing table, as `ipvsadm -Ln` prints it.
    Status {
        /// Traffic counters (`ipvsadm -Ln --stats`).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Rates (`ipvsadm -Ln --rate`).
        #[arg(long)]
        rate: bool,
        /// Upper/lower thresholds and persistent connections (`--thresholds`).
        #[arg(long, conflicts_with_all = ["stats", "rate"])]
        thresholds: bool,
        /// Persistent-connection counts (`--persistent-conn`).
        #[arg(long, conflicts_with_all = ["stats", "rate", "thresholds"])]
        persistent_conn: bool,
        /// Tunnel type/port/checksum of tunnel destinations (`--tun-info`).
        #[arg(long, conflicts_with_all = ["stats", "rate", "thresholds", "persistent_conn"])]
        tun_info: bool,
        /// Exact numbers, no K/M/G (`--exact`).
        #[arg(long)]
        exact: bool,
        /// Kernel order instead of ipvsadm's sort (`--nosort`).
        #[arg(long)]
        nosort: bool,
        /// Connection timeouts (`ipvsadm -L --timeout`).
        #[arg(long, conflicts_with_all = ["stats", "rate", "thresholds", "persistent_conn", "tun_info", "daemon"])]
        timeout: bool,
        /// Kernel connection-sync daemons (`ipvsadm -L --daemon`).
        #[arg(long, conflicts_with_all = ["stats", "rate", "thresholds", "persistent_conn", "tun_info"])]
        daemon: bool,
        /// Machine-readable status: table, owned services, last pass.
        #[arg(long)]
        json: bool,
    },
    /// Connection entries, as `ipvsadm -Lnc` prints them.
    Conns {
        /// Persistence-engine columns (`ipvsadm -Lnc --persistent-conn`).
        #[arg(long)]
        persistent_conn: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config file and apply only the difference.
    Reload,
    /// VRRP instances: state, priorities, master heard, VIPs, counters.
    Vrrp {
        /// JSON; with --follow, the daemon's JSON lines as they come.
        #[arg(long)]
        json: bool,
        /// Then keep printing every VRRP event (state changes, VIPs
        /// added/removed, gratuitous ARP/NA, bad packets heard) as the
        /// daemon executes it, in order, until interrupted. Exits 1 when
        /// the daemon has no VRRP instance or ends the stream.
        #[arg(long)]
        follow: bool,
        /// With --follow: start after this event sequence number instead
        /// of now (the daemon keeps the last 1024 events; 0 = all it has).
        #[arg(long, requires = "follow", value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Health checks: per virtual server its pool (up/total, quorum, sorry
    /// server), per real server its state and weight, per check its state,
    /// last result, consecutive counts and last change.
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Connection-state replication, like `conntrackd -s`: entries,
    /// changes by origin (local kernel vs peer), messages and bytes,
    /// rejected frames, resyncs, overruns, ack lag, link, role, peer.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// Weight 0 for a real server: established connections are kept, new
    /// ones go to the others (`ipvsadm -e ... -w 0`, but kept across
    /// reloads until `undrain`).
    Drain {
        /// Virtual server name (`virtual_server.name`).
        #[arg(value_name = "VS")]
        virtual_server: String,
        /// Real server as IP:PORT (or IP when unique in the virtual server).
        #[arg(value_name = "RS")]
        real_server: String,
    },
    /// Ends a drain: the real server is back at its configured weight
    /// (if its health checks pass).
    Undrain {
        #[arg(value_name = "VS")]
        virtual_server: String,
        #[arg(value_name = "RS")]
        real_server: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Vrrp {
        json,
        follow: true,
        since,
    } = cli.command
    {
        return follow_vrrp(&cli.socket, since, json);
    }
    let req = match &cli.command {
        Command::Status { .. } => Request::Status,
        Command::Conns { .. } => Request::Conns,
        Command::Reload => Request::Reload,
        Command::Vrrp { .. } => Request::Vrrp,
        Command::Health { .. } => Request::Health,
        Command::Sync { .. } => Request::Sync,
        Command::Drain {
            virtual_server,
            real_server,
        } => Request::Drain {
            virtual_server: virtual_server.clone(),
            real_server: real_server.clone(),
        },
        Command::Undrain {
            virtual_server,
            real_server,
        } => Request::Undrain {
            virtual_server: virtual_server.clone(),
            real_server: real_server.clone(),
        },
    };
    let timeout = match req {
        Request::Reload | Request::Drain { .. } | Request::Undrain { .. } => {
            Duration::from_secs(600)
        }
        _ => Duration::from_secs(60),
    };
    let response = match control::request(&cli.socket, &req, timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("directorctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match (cli.command, response) {
        (_, Response::Error { message }) => {
            eprintln!("directorctl: {message}");
            ExitCode::FAILURE
        }
        (
            Command::Status {
                stats,
                rate,
                thresholds,
                persistent_conn,
                tun_info,
                exact,
                nosort,
                timeout,
                daemon,
                json,
            },
            Response::Status(reply),
        ) => {
            if timeout && !json {
                let Some(t) = reply.timeouts else {
                    eprintln!("directorctl: the kernel did not report its timeouts");
                    return ExitCode::FAILURE;
                };
                print!("{}", director::format::timeouts(&t));
            } else if daemon && !json {
                print!("{}", director::format::daemons(&reply.sync_daemons));
            } else if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).unwrap_or_default()
                );
            } else {
                let mode = match (stats, rate, thresholds, persistent_conn, tun_info) {
                    (true, ..) => ListMode::Stats,
                    (_, true, ..) => ListMode::Rate,
                    (_, _, true, ..) => ListMode::Thresholds,
                    (_, _, _, true, _) => ListMode::PersistentConn,
                    (.., true) => ListMode::TunInfo,
                    _ => ListMode::Plain,
                };
                let text = director::format::list(
                    &reply.table,
                    &ListOptions {
                        mode,
                        exact,
                        nosort,
                    },
                );
                // The nftables dataplane has no IPVS version or connection
                // table size: name what is really running instead, keep
                // every line after the banner in ipvsadm's layout.
                match (reply.dataplane.as_str(), text.split_once('\n')) {
                    ("nftables", Some((_, rest))) => {
                        print!("{}\n{rest}", director::format::NFTABLES_BANNER)
                    }
                    _ => print!("{text}"),
                }
            }
            ExitCode::SUCCESS
        }
        (
            Command::Conns {
                persistent_conn,
                json,
            },
            Response::Conns { proc_ip_vs_conn },
        ) => {
            let result = if json {
                director::format::parse_connections(&proc_ip_vs_conn)
                    .map(|c| serde_json::to_string_pretty(&c).unwrap_or_default() + "\n")
            } else {
                director::format::connections(
                    &proc_ip_vs_conn,
                    &director::format::ConnOptions { persistent_conn },
                )
            };
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("directorctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Command::Vrrp { json, .. }, Response::Vrrp(snap)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&snap).unwrap_or_default()
                );
            } else {
                print!("{}", director::format::vrrp(&snap));
            }
            ExitCode::SUCCESS
        }
        (Command::Health { json }, Response::Health(reply)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).unwrap_or_default()
                );
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                print!("{}", director::format::health(&reply, now));
            }
            ExitCode::SUCCESS
        }
        (Command::Sync { json }, Response::Sync(reply)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).unwrap_or_default()
                );
            } else {
                print!("{}", director::format::sync(&reply));
            }
            ExitCode::SUCCESS
        }
        (Command::Drain { .. } | Command::Undrain { .. }, Response::Drain(r)) => {
            println!("{}", r.message);
            match r.last_pass {
                Some(p) if !p.errors.is_empty() => {
                    println!(
                        "the pass that applied it reported {} errors:",
                        p.errors.len()
                    );
                    for e in &p.errors {
                        println!("  {e}");
                    }
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        (Command::Reload, Response::Reload(r)) => {
            if !r.rejected.is_empty() {
                eprintln!("directorctl: new config rejected; the running config is unchanged:");
                for line in &r.rejected {
                    eprintln!("{line}");
                }
                return ExitCode::FAILURE;
            }
            match r.last_pass {
                Some(p) if p.errors.is_empty() => {
                    println!(
                        "reloaded: {} kernel ops applied in {:.3}s",
                        p.ops_applied, p.duration_seconds
                    );
                    ExitCode::SUCCESS
                }
                Some(p) => {
                    println!(
                        "reloaded: {} kernel ops applied; {} refused:",
                        p.ops_applied,
                        p.errors.len()
                    );
                    for e in &p.errors {
                        println!("  {e}");
                    }
                    ExitCode::FAILURE
                }
                None => {
                    println!("reloaded");
                    ExitCode::SUCCESS
                }
            }
        }
        (_, other) => {
            eprintln!("directorctl: unexpected reply from the daemon: {other:?}");
            ExitCode::FAILURE
        }
    }
}

/// `directorctl vrrp --follow`: the snapshot, then one line per event.
fn follow_vrrp(socket: &Path, since: Option<u64>, json: bool) -> ExitCode {
    let mut stream = match control::open_stream(socket, &Request::VrrpFollow { since }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("directorctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut first = true;
    loop {
        let line = match stream.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                eprintln!(
                    "directorctl: the daemon ended the stream (it stopped or restarted; the VRRP state is now unknown here)"
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("directorctl: {e}");
                return ExitCode::FAILURE;
            }
        };
        let text = match (&line.response, first) {
            (Response::Error { message }, _) => {
                eprintln!("directorctl: {message}");
                return ExitCode::FAILURE;
            }
            (_, _) if json => format!("{}\n", line.raw),
            (Response::Vrrp(snap), true) => {
                let after = since.unwrap_or(snap.last_event_seq);
                director::format::vrrp(snap) + &director::format::vrrp_follow_banner(after)
            }
            (Response::VrrpEvent(e), false) => director::format::vrrp_event(e.unix_time, &e.event),
            (
                Response::VrrpLost {
                    first_seq,
                    last_seq,
                    ..
                },
                false,
            ) => director::format::vrrp_lost(*first_seq, *last_seq),
            (other, _) => {
                eprintln!("directorctl: unexpected line in the VRRP stream: {other:?}");
                return ExitCode::FAILURE;
            }
        };
        first = false;
        // The reader went away (`| head`): done, like `tail -f` would be.
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
    }
}
