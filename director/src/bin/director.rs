//! `director`: the daemon (`run`), the config checker (`check`) and the
//! self-contained failover demo (`demo`, root only).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "director",
    version,
    about = "HA L4 load balancer: VRRP, IPVS programmer, health checks, conntrack sync"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd Type=notify).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; errors are printed as FILE:LINE:COL: message.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// As root: build a director pair, real servers and a client in network
    /// namespaces, hold connections through the VIP, kill -9 the master and
    /// show what survived. Removes everything it created when it ends.
    /// Exit status 1 if connections were lost.
    Demo {
        /// Long-lived connections held through the failover.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Real servers behind the VIP (1..=20).
        #[arg(long, default_value_t = 3)]
        real_servers: usize,
        /// "auto" (IPVS if the kernel has it, else nftables), "ipvs", "nftables".
        #[arg(long, default_value = "auto")]
        dataplane: String,
        /// VRRP advert interval (a takeover after a crash takes about 3).
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        advert_interval: std::time::Duration,
        /// Run without [ctsync], to see what replication buys.
        #[arg(long)]
        no_ctsync: bool,
        /// Leave everything running afterwards (until Ctrl-C) and print how
        /// to enter the namespaces.
        #[arg(long)]
        keep: bool,
    },
    /// The demo's real server (echo and HTTP); started by `director demo`.
    #[command(hide = true)]
    DemoServer {
        #[arg(long)]
        name: String,
        #[arg(long)]
        echo: std::net::SocketAddr,
        #[arg(long)]
        http: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Demo {
            connections,
            real_servers,
            dataplane,
            advert_interval,
            no_ctsync,
            keep,
        } => demo(
            director::demo::pair::PairOptions {
                dataplane,
                advert_interval,
                ctsync: !no_ctsync,
                real_servers,
                ..Default::default()
            },
            connections,
            keep,
        ),
        Command::DemoServer { name, echo, http } => {
            match director::demo::server::serve(&name, echo, http) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("director: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("director: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn demo(pair: director::demo::pair::PairOptions, connections: usize, keep: bool) -> ExitCode {
    // The daemons and directorctl of the demo are the binaries next to
    // this one, so a demo always runs the build it came with.
    let bin_dir = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(PathBuf::from).unwrap_or_default(),
        Err(e) => {
            eprintln!("director demo: cannot find its own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = director::demo::Options {
        connections,
        real_servers: pair.real_servers,
        pair,
        keep,
        bin_dir,
    };
    match director::demo::run(&opts) {
        Ok(outcome) if outcome.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("director demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match director::config::load(path) {
        Ok(c) => {
            let reals: usize = c.virtual_servers.iter().map(|v| v.real_servers.len()).sum();
            println!(
                "{}: OK ({} virtual servers, {} real servers, {} VRRP instances)",
                path.display(),
                c.virtual_servers.len(),
                reals,
                c.vrrp_instances.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: journald and log files get plain
        // `key=value` lines that grep finds.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let backends = director::daemon::Backends {
            open_ipvs: director::ipvs::IpvsSocket::open,
            open_nft: Box::new(open_nft),
            sysctls: Box::new(director::sysctl::ProcSys::default()),
        };
        director::daemon::run(config, backends, shutdown, notify_ready).await
    })?;
    Ok(())
}

/// The nftables side through the `nft` CLI, with ActiveConn/InActConn
/// counted from conntrack. Fails (with nft's own words) when `nft` is
/// missing or the kernel has no nf_tables.
fn open_nft(
    role: director::daemon::NftRole,
) -> Result<Box<dyn director::dataplane::Dataplane>, String> {
    use director::nft::{NftCli, NftDataplane, Scope};
    let scope = match role {
        director::daemon::NftRole::Services => Scope::Services,
        director::daemon::NftRole::NatOnly => Scope::NatOnly,
    };
    let cli = NftCli::new();
    cli.probe()
        .map_err(|e| format!("cannot drive nftables: {e}"))?;
    Ok(Box::new(NftDataplane::new(
        Box::new(cli),
        Box::new(director::conntrack::summary::ConntrackFlows),
        scope,
    )))
}

/// sd_notify(READY=1) without libsystemd: one datagram to $NOTIFY_SOCKET.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(b"READY=1\nSTATUS=reconciled", &addr);
    }
}
