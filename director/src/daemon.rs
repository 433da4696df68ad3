//! `director run`: the long-running daemon.
//!
//! Shape (one owner per resource):
//! - a **kernel worker thread** owns the [`Dataplane`] (IPVS over generic
//!   netlink, or nftables; both blocking and single-owner) and the sysctl
//!   writer, and runs passes and dumps on request;
//! - the **reconcile loop** (async) decides *when* to pass: every
//!   `reconcile_interval` (level-triggered repair of `ipvsadm -C` and hand
//!   edits), on reload, on a kernel event (the "IPVS" generic-netlink family
//!   being registered again after a module reload, which empties the table),
//!   and at once again after a pass that hit a conflict;
//! - the **control socket** task answers `directorctl` (one task per
//!   client; a `vrrp --follow` client keeps its task until it disconnects);
//! - the optional **metrics** task serves `/metrics`;
//! - **health checks** ([`health`], `crate::health`): the checks run on a
//!   runtime of their own; each transition narrows or widens the pools at
//!   once (a pass is triggered, not left to the next `reconcile_interval`),
//!   and a real server that went down with `on_down_connections = "reset"`
//!   has its established connections cleaned up right after the pass that
//!   took it out. Drains and real servers leaving the config are kept
//!   here too and survive reloads.
//! - **conntrack replication** (`crate::ctsync_host`): its driver on a
//!   thread of its own, started before VRRP (as backup) so the VRRP
//!   executor can hand it roles and wait on it at takeover; a reload that
//!   changes `[ctsync]` restarts it; stopped after VRRP released the VIPs.
//! - the kernel's **IPVS sync daemons** (`crate::ipvs_sync`, IPVS
//!   dataplane with `[ctsync] ipvs_sync_interface`): a task follows the
//!   VRRP host events and triggers a pass on each state change; every
//!   pass checks GET_DAEMON and runs the master daemon while master, the
//!   backup daemon otherwise.
//!
//! Shutdown (SIGTERM/SIGINT) leaves the kernel table as it is: connections
//! survive a restart and the next daemon adopts the table in place.

use crate::config::{self, Config};
use crate::control::{
    self, LastPass, OwnedService, ReloadReply, Request, Response, StatusReply, SyncReply,
};
use crate::ctsync_host::role::{RoleLink, RoleRule};
use crate::ctsync_host::StartError;
use crate::dataplane::{
    self, ConnectionReset, Dataplane, DataplaneKind, DataplaneStatus, IpvsDataplane, PassInput,
};
use crate::desired::{desired_table, DesiredTable, PoolInputs, PoolMember, PoolStatus};
use crate::health::plan::{Before, CheckPlan};
use crate::health::pool::Pool;
use crate::health::HealthRunner;
use crate::kernel::{IpvsKernel, KernelError};
use crate::metrics::Metrics;
use crate::model::{DestKey, KernelTable, ServiceKey, SyncDaemon, Timeouts};
use crate::reconcile::PassReport;
use crate::sysctl::{self, SysctlState, Sysctls};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc as amsc, oneshot};
use tracing::{error, info, warn};

mod health;
use health::PendingReset;

/// Where the daemon can fail before it is up. Each says who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("{0}\nhint: dataplane = \"ipvs\" needs a kernel with IPVS; \"auto\" or \"nftables\" runs the services in nftables instead")]
    NoIpvs(KernelError),
    #[error("kernel: {0}")]
    Kernel(KernelError),
    #[error("the nftables dataplane cannot start: {detail}")]
    NftablesUnavailable { detail: String },
    #[error("control socket {path}: {detail}")]
    ControlSocket { path: String, detail: String },
    #[error("metrics_listen {addr}: {detail}")]
    Metrics { addr: String, detail: String },
    #[error("{0}")]
    Vrrp(String),
    #[error("{0}")]
    Health(String),
    #[error("{0}")]
    CtSync(crate::ctsync_host::StartError),
}

/// Which part of the nftables table a dataplane asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftRole {
    /// The whole service table (the nftables dataplane).
    Services,
    /// Only `[[snat]]` and forward rules (beside IPVS).
    NatOnly,
}

/// Opens the nftables side in a role; `Err` says why it cannot be driven.
pub type OpenNft = Box<dyn FnMut(NftRole) -> Result<Box<dyn Dataplane>, String> + Send>;

/// How the daemon reaches the kernel: `director run` passes the real
/// openers, tests pass fakes (and never write the host's sysctls).
pub struct Backends<F> {
    /// Opens IPVS; `Err(KernelError::Unavailable)` when the kernel has none.
    /// Called again when the "IPVS" family is registered again.
    pub open_ipvs: F,
    pub open_nft: OpenNft,
    pub sysctls: Box<dyn Sysctls>,
}

enum KernelCmd {
    Pass {
        desired: Arc<DesiredTable>,
        snat: Arc<Vec<config::Snat>>,
        exclusive: bool,
        timeouts: Option<Timeouts>,
        /// The IPVS sync daemon to run (`crate::ipvs_sync`).
        sync_daemon: Option<SyncDaemon>,
        /// Dead real servers whose connections are cleaned up right
        /// after the pass took them out.
        resets: Vec<PendingReset>,
        reply: oneshot::Sender<PassDone>,
    },
    /// Active connections of (service, destination)s (leaving servers).
    ActiveConnections {
        targets: Vec<(ServiceKey, DestKey)>,
        reply: oneshot::Sender<Result<Vec<u64>, KernelError>>,
    },
    Dump {
        reply: oneshot::Sender<Result<KernelTable, KernelError>>,
    },
    /// Table plus timeouts and sync daemons, for `directorctl status`.
    Status {
        reply: oneshot::Sender<Result<DataplaneStatus, KernelError>>,
    },
    Reopen,
}

/// One pass as the worker ran it.
struct PassDone {
    report: PassReport,
    took: Duration,
    sysctls: Vec<SysctlState>,
    resets: Vec<(PendingReset, Result<ConnectionReset, String>)>,
}

/// A pass request: why, and who (if anyone) waits for its summary.
struct Trigger {
    reason: &'static str,
    done: Option<oneshot::Sender<LastPass>>,
}

struct State {
    config_path: PathBuf,
    config: Config,
    desired: Arc<DesiredTable>,
    snat: Arc<Vec<config::Snat>>,
    last_pass: Option<LastPass>,
    sysctls: Vec<SysctlState>,
    /// Which checks decide which real servers.
    plan: CheckPlan,
    /// Operator drains and real servers leaving the config.
    pool: Pool,
    /// What narrows the pools now (down, drained, leaving).
    inputs: PoolInputs,
    /// Each virtual server's pool, as `desired` was compiled.
    pools: BTreeMap<String, PoolStatus>,
    /// Checks the runner refused to run.
    spec_errors: BTreeMap<healthcheck::CheckSpec, String>,
    /// Dead servers whose connections the next pass cleans up.
    pending_resets: Vec<PendingReset>,
    /// Active connections of leaving servers at the last count.
    leaving_active: BTreeMap<PoolMember, u64>,
}

/// Handles shared by the daemon's tasks.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    kernel: mpsc::Sender<KernelCmd>,
    triggers: amsc::Sender<Trigger>,
    metrics: Metrics,
    kind: DataplaneKind,
    /// VRRP, once started (after the first pass: the dataplane is
    /// programmed before this box can become master).
    vrrp: Arc<std::sync::OnceLock<Arc<crate::vrrp_host::VrrpHandle>>>,
    /// Becomes true once VRRP was started, or found to have no instance:
    /// followers that connect during the first pass wait for it.
    vrrp_settled: Arc<tokio::sync::watch::Sender<bool>>,
    /// The health checks (their own runtime).
    health: Arc<HealthRunner>,
    /// Connection-state replication, if configured and running.
    ctsync: Arc<Mutex<CtSyncState>>,
    /// VRRP -> ctsync: roles and the takeover barrier (outlives drivers).
    role_link: Arc<RoleLink>,
    /// VRRP -> the IPVS sync daemons: each instance's state
    /// (`crate::ipvs_sync::follow`).
    vrrp_states: crate::ipvs_sync::VrrpStates,
}

/// The replication driver and why it is not running, if it is not.
#[derive(Default)]
struct CtSyncState {
    handle: Option<Arc<crate::ctsync_host::Handle>>,
    error: Option<String>,
}

/// Runs the kernel worker: owns the dataplane and the sysctls, serves
/// passes and dumps. `reopen` rebuilds the dataplane (the IPVS family was
/// registered again, so the old socket's family id may be stale).
fn spawn_kernel_worker(
    mut dp: Box<dyn Dataplane>,
    mut sysctls: Box<dyn Sysctls>,
    mut reopen: Box<dyn FnMut() -> Option<Box<dyn Dataplane>> + Send>,
) -> mpsc::Sender<KernelCmd> {
    let (tx, rx) = mpsc::channel::<KernelCmd>();
    std::thread::Builder::new()
        .name("kernel".into())
        .spawn(move || {
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    KernelCmd::Pass {
                        desired,
                        snat,
                        exclusive,
                        timeouts,
                        sync_daemon,
                        resets,
                        reply,
                    } => {
                        let started = Instant::now();
                        let wanted = sysctl::wanted(dp.kind(), &desired, &snat);
                        let (states, changed) = sysctl::ensure(sysctls.as_mut(), &wanted);
                        let mut report = dp.pass(&PassInput {
                            desired: &desired,
                            snat: &snat,
                            exclusive,
                            timeouts,
                            sync_daemon: sync_daemon.as_ref(),
                        });
                        report.repairs.extend(changed);
                        let took = started.elapsed();
                        // After the pass: the servers are out of the
                        // selection, so a client segment that finds no
                        // state now is sent to a live one.
                        let resets = reset_connections(dp.as_mut(), resets);
                        let _ = reply.send(PassDone {
                            report,
                            took,
                            sysctls: states,
                            resets,
                        });
                    }
                    KernelCmd::ActiveConnections { targets, reply } => {
                        let _ = reply.send(dp.active_connections(&targets));
                    }
                    KernelCmd::Dump { reply } => {
                        let _ = reply.send(dp.table());
                    }
                    KernelCmd::Status { reply } => {
                        let _ = reply.send(dp.status());
                    }
                    KernelCmd::Reopen => match reopen() {
                        Some(new) => dp = new,
                        None => warn!(event = "kernel_reopen_failed"),
                    },
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| error!(event = "kernel_worker_spawn_failed", error = %e));
    tx
}

/// Runs the connection cleanups of one pass.
fn reset_connections(
    dp: &mut dyn Dataplane,
    resets: Vec<PendingReset>,
) -> Vec<(PendingReset, Result<ConnectionReset, String>)> {
    if resets.is_empty() {
        return Vec::new();
    }
    let targets: Vec<(ServiceKey, DestKey)> = resets.iter().map(|r| (r.service, r.dest)).collect();
    match dp.reset_connections(&targets) {
        Ok(done) if done.len() == resets.len() => {
            resets.into_iter().zip(done.into_iter().map(Ok)).collect()
        }
        Ok(done) => {
            let e = format!(
                "the dataplane answered {} results for {} servers",
                done.len(),
                resets.len()
            );
            resets.into_iter().map(|r| (r, Err(e.clone()))).collect()
        }
        Err(e) => resets
            .into_iter()
            .map(|r| (r, Err(e.to_string())))
            .collect(),
    }
}

/// Picks the dataplane (`auto`: IPVS when the kernel has it) and opens it.
/// The config is re-checked for the dataplane actually chosen.
#[allow(clippy::type_complexity)]
fn open_dataplane<K, F>(
    config_path: &Path,
    config: Config,
    backends: Backends<F>,
) -> Result<
    (
        Config,
        DataplaneKind,
        Box<dyn Dataplane>,
        Box<dyn Sysctls>,
        Box<dyn FnMut() -> Option<Box<dyn Dataplane>> + Send>,
    ),
    DaemonError,
>
where
    K: IpvsKernel + Send + 'static,
    F: FnMut() -> Result<K, KernelError> + Send + 'static,
{
    let Backends {
        mut open_ipvs,
        mut open_nft,
        sysctls,
    } = backends;
    let choice = config.global.dataplane;
    let ipvs = match choice {
        config::DataplaneChoice::Nftables => None,
        config::DataplaneChoice::Ipvs => Some(open_ipvs().map_err(|e| match e {
            KernelError::Unavailable => DaemonError::NoIpvs(e),
            e => DaemonError::Kernel(e),
        })?),
        config::DataplaneChoice::Auto => match open_ipvs() {
            Ok(k) => Some(k),
            Err(KernelError::Unavailable) => None,
            Err(e) => return Err(DaemonError::Kernel(e)),
        },
    };
    let kind = dataplane::choose(choice, ipvs.is_some());
    info!(event = "dataplane_chosen", dataplane = %kind, configured = ?choice);
    match ipvs {
        Some(kernel) => {
            // Re-check: `auto` may have landed on IPVS with a config only
            // nftables can carry out (inhibit with a connection reset).
            let config = match choice {
                config::DataplaneChoice::Auto => {
                    config::load_for(config_path, Some(config::DataplaneChoice::Ipvs))
                        .map_err(DaemonError::Config)?
                }
                _ => config,
            };
            let nat = open_nat_rules(&mut open_nft);
            let dp: Box<dyn Dataplane> = Box::new(IpvsDataplane::new(kernel, nat));
            let reopen = Box::new(move || match open_ipvs() {
                Ok(k) => Some(
                    Box::new(IpvsDataplane::new(k, open_nat_rules(&mut open_nft)))
                        as Box<dyn Dataplane>,
                ),
                Err(e) => {
                    warn!(event = "kernel_reopen_failed", error = %e);
                    None
                }
            });
            Ok((config, kind, dp, sysctls, reopen))
        }
        None => {
            // Re-check: `auto` may have landed on a dataplane that cannot
            // express this config (a wlc service, DR forwarding).
            let config = config::load_for(config_path, Some(config::DataplaneChoice::Nftables))
                .map_err(DaemonError::Config)?;
            let dp = open_nft(NftRole::Services)
                .map_err(|detail| DaemonError::NftablesUnavailable { detail })?;
            Ok((config, kind, dp, sysctls, Box::new(|| None)))
        }
    }
}

fn open_nat_rules(open_nft: &mut OpenNft) -> Option<Box<dyn Dataplane>> {
    match open_nft(NftRole::NatOnly) {
        Ok(n) => Some(n),
        Err(e) => {
            warn!(event = "nftables_unavailable", error = %e, note = "[[snat]] rules cannot be installed");
            None
        }
    }
}

/// Loads and validates the config (no kernel access).
pub fn load_config(path: &Path) -> Result<Config, DaemonError> {
    config::load(path).map_err(DaemonError::Config)
}

/// Runs the daemon until `shutdown` resolves. `backends` opens the kernel
/// (real IPVS and nftables in `director run`, fakes in tests). `ready` is
/// called once the control socket is listening and the first pass is done
/// (systemd `READY=1`).
pub async fn run<K, F>(
    config_path: PathBuf,
    backends: Backends<F>,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError>
where
    K: IpvsKernel + Send + 'static,
    F: FnMut() -> Result<K, KernelError> + Send + 'static,
{
    let config = load_config(&config_path)?;
    let (config, kind, dp, sysctls, reopen) = open_dataplane(&config_path, config, backends)?;
    let metrics = Metrics::new();
    let desired = Arc::new(desired_table(&config));
    let (health_runner, health_events) = HealthRunner::start().map_err(DaemonError::Health)?;
    let plan = CheckPlan::new(&config);
    // At startup every check starts up: the pools the kernel holds are
    // adopted as they are, not emptied while `rise` probes run.
    let spec_errors = health::spec_errors(health_runner.set(plan.wanted(&Before::default())));
    info!(
        event = "health_checks_started",
        checks = plan.len(),
        uses = plan.uses(),
        not_running = spec_errors.len()
    );
    info!(
        event = "starting",
        config = %config_path.display(),
        services = desired.services.len(),
        destinations = desired.dest_count(),
        dataplane = %kind
    );
    let socket_path = config.global.control_socket.clone();
    let metrics_listen = config.global.metrics_listen;
    let (trig_tx, mut trig_rx) = amsc::channel::<Trigger>(64);
    let shared = Shared {
        state: Arc::new(Mutex::new(State {
            config_path,
            snat: Arc::new(config.snat.clone()),
            config,
            desired,
            last_pass: None,
            sysctls: Vec::new(),
            plan,
            pool: Pool::default(),
            inputs: PoolInputs::default(),
            pools: BTreeMap::new(),
            spec_errors,
            pending_resets: Vec::new(),
            leaving_active: BTreeMap::new(),
        })),
        kernel: spawn_kernel_worker(dp, sysctls, reopen),
        triggers: trig_tx,
        metrics,
        kind,
        vrrp: Arc::new(std::sync::OnceLock::new()),
        vrrp_settled: Arc::new(tokio::sync::watch::Sender::new(false)),
        health: Arc::new(health_runner),
        ctsync: Arc::default(),
        role_link: Arc::new(RoleLink::new(RoleRule::default())),
        vrrp_states: Arc::default(),
    };
    if let Ok(mut s) = shared.state.lock() {
        health::recompute(&mut s, &shared.health, &shared.metrics);
    }

    let listener = bind_control_socket(&socket_path)?;
    if let Some(addr) = metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DaemonError::Metrics {
                addr: addr.to_string(),
                detail: e.to_string(),
            })?;
        let for_scrape = shared.clone();
        let refresh = move || {
            let shared = for_scrape.clone();
            async move {
                refresh_vrrp_metrics(&shared).await;
                refresh_ctsync_metrics(&shared).await;
                health::refresh_metrics(&shared);
                if let Ok(table) = dump(&shared).await {
                    let desired = shared
                        .state
                        .lock()
                        .ok()
                        .map(|s| s.desired.clone())
                        .unwrap_or_default();
                    shared.metrics.table.update(&table, &desired);
                }
            }
        };
        tokio::spawn(crate::metrics::serve(l, shared.metrics.clone(), refresh));
    }
    tokio::spawn(control_server(listener, shared.clone()));
    tokio::spawn(health::health_events(shared.clone(), health_events));
    tokio::spawn(health::watch_leaving(shared.clone()));
    spawn_family_watch(shared.clone());
    spawn_sighup_reload(shared.clone());

    // First pass before READY: adopt what is there, add what is missing.
    run_pass(&shared, "startup").await;
    // Then replication (as backup until VRRP says otherwise), then VRRP:
    // the table is in place before this box can take the VIPs.
    let vrrp_config = shared.state.lock().ok().map(|s| s.config.clone());
    if let Some(cfg) = &vrrp_config {
        if let Err(e) = start_ctsync(&shared, cfg) {
            let _ = std::fs::remove_file(&socket_path);
            return Err(DaemonError::CtSync(e));
        }
    }
    if let Some(cfg) = vrrp_config {
        match crate::vrrp_host::VrrpHandle::start(&cfg, shared.role_link.clone()) {
            Ok(Some(h)) => {
                info!(event = "vrrp_started", instances = cfg.vrrp_instances.len());
                let _ = shared.vrrp.set(Arc::new(h));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&socket_path);
                return Err(DaemonError::Vrrp(e.to_string()));
            }
        }
    }
    shared.vrrp_settled.send_replace(true);
    spawn_ipvs_sync_follow(&shared);
    ready();

    let mut shutdown = std::pin::pin!(shutdown);
    let interval = shared
        .state
        .lock()
        .map(|s| s.config.global.reconcile_interval)
        .unwrap_or(Duration::from_secs(5));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let trigger = tokio::select! {
            _ = ticker.tick() => Trigger { reason: "periodic", done: None },
            Some(t) = trig_rx.recv() => t,
            _ = &mut shutdown => break,
        };
        let summary = run_pass(&shared, trigger.reason).await;
        if let Some(done) = trigger.done {
            let _ = done.send(summary);
        }
    }
    if let Some(v) = shared.vrrp.get() {
        // RFC 5798 6.4.3 Shutdown: priority 0, VIPs released, so the
        // backup takes over after Skew_Time.
        v.shutdown().await;
        info!(event = "vrrp_stopped");
        // Their streams end after the shutdown transitions: give the
        // follower tasks a moment to write those before the runtime goes.
        let deadline = Instant::now() + Duration::from_secs(1);
        while v.followers() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // After VRRP released the VIPs: the peer is taking over; say Goodbye.
    stop_ctsync(&shared).await;
    info!(
        event = "stopping",
        note = "kernel table left in place for the next daemon to adopt"
    );
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// The IPVS sync daemons follow VRRP: every state change triggers a pass
/// (which starts/stops the daemons, `crate::ipvs_sync`); the periodic
/// passes repair them in between. Without VRRP the box stays backup.
fn spawn_ipvs_sync_follow(shared: &Shared) {
    let configured = shared
        .state
        .lock()
        .map(|s| s.config.ipvs_sync.is_some())
        .unwrap_or(false);
    if configured && shared.kind == DataplaneKind::Nftables {
        // `auto` landed on nftables (validation refuses the keys with
        // an explicit dataplane = "nftables").
        warn!(event = "ipvs_sync_ignored", reason = "dataplane is nftables (no IPVS in this kernel)", note = "[ctsync] ipvs_sync_interface / ipvs_syncid have no effect; ctsync still replicates conntrack");
    }
    // Followed even when not configured now: a reload may add the keys.
    let (Some(v), DataplaneKind::Ipvs) = (shared.vrrp.get().cloned(), shared.kind) else {
        return;
    };
    let triggers = shared.triggers.clone();
    let states = shared.vrrp_states.clone();
    tokio::spawn(crate::ipvs_sync::follow(v, states, move || {
        // A full queue already holds a pass that will see the new state.
        let _ = triggers.try_send(Trigger {
            reason: "vrrp",
            done: None,
        });
    }));
}

/// Starts replication for `config` (nothing without `[ctsync]`). A bad
/// key file or session setting is the operator's mistake and fails the
/// start; a kernel that cannot be opened (no ctnetlink) leaves the load
/// balancer running without replication, loudly (`directorctl sync`
/// shows the reason).
fn start_ctsync(shared: &Shared, config: &Config) -> Result<(), StartError> {
    let rule = RoleRule::from_config(config);
    let result = crate::ctsync_host::start_kernel(config, shared.role_link.role());
    let mut state = CtSyncState::default();
    let outcome = match result {
        Ok(None) => Ok(()),
        Ok(Some(h)) => {
            shared.role_link.attach(h.commands(), rule);
            state.handle = Some(Arc::new(h));
            Ok(())
        }
        Err(e @ (StartError::Kernel(_) | StartError::Thread(_))) => {
            error!(event = "ctsync_not_running", error = %e, note = "load balancing continues without connection-state replication");
            state.error = Some(e.to_string());
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let Ok(mut s) = shared.ctsync.lock() {
        *s = state;
    }
    outcome
}

/// Goodbye to the peer and the driver's threads stopped.
async fn stop_ctsync(shared: &Shared) {
    let handle = shared.ctsync.lock().ok().and_then(|mut s| s.handle.take());
    if let Some(h) = handle {
        shared.role_link.detach();
        h.shutdown().await;
    }
}

/// A reload that changes `[ctsync]` (or removes or adds it) restarts the
/// driver: Goodbye on the old connection, a new session, a full resync.
async fn reload_ctsync(shared: &Shared, new: &Config) {
    let running = shared.ctsync.lock().ok().map(|s| {
        (
            s.handle.as_ref().map(|h| h.config.clone()),
            s.error.is_some(),
        )
    });
    let Some((running, failed)) = running else {
        return;
    };
    if running == new.ctsync && !failed {
        // The section is the same; `follow` is part of it, so the rule is too.
        return;
    }
    if running.is_none() && new.ctsync.is_none() {
        return;
    }
    info!(event = "ctsync_restart", reason = "reload changed [ctsync]");
    stop_ctsync(shared).await;
    if let Err(e) = start_ctsync(shared, new) {
        error!(event = "ctsync_not_running", error = %e);
        if let Ok(mut s) = shared.ctsync.lock() {
            s.error = Some(e.to_string());
        }
    }
}

/// The ctsync series of this scrape: the same reply as `directorctl sync`.
async fn refresh_ctsync_metrics(shared: &Shared) {
    use crate::metrics::CtSyncView;
    let view = match sync_reply(shared).await {
        Response::Sync(r) => match (r.configured, r.running) {
            (_, Some(st)) => CtSyncView::Running(Box::new(st)),
            (true, None) => CtSyncView::Down,
            (false, None) => CtSyncView::Off,
        },
        _ => CtSyncView::Off,
    };
    shared.metrics.ctsync.update(view);
}

/// `directorctl sync`.
async fn sync_reply(shared: &Shared) -> Response {
    let configured = shared
        .state
        .lock()
        .map(|s| s.config.ctsync.is_some())
        .unwrap_or(false);
    let (handle, error) = match shared.ctsync.lock() {
        Ok(s) => (s.handle.clone(), s.error.clone()),
        Err(_) => (None, Some("state poisoned".into())),
    };
    let (running, error) = match handle {
        None => (None, error),
        Some(h) => match tokio::time::timeout(Duration::from_secs(2), h.status()).await {
            Ok(Ok(st)) => (Some(st), None),
            Ok(Err(e)) => (None, Some(e)),
            Err(_) => (
                None,
                Some("the ctsync driver did not answer within 2 s".into()),
            ),
        },
    };
    Response::Sync(Box::new(SyncReply {
        configured,
        running,
        error,
    }))
}

/// The VRRP series of this scrape: one snapshot of the driver. A driver
/// that does not answer within 2 s (it never should: it runs on its own
/// thread) makes the series disappear rather than freeze at old values.
async fn refresh_vrrp_metrics(shared: &Shared) {
    let Some(v) = shared.vrrp.get() else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(2), v.status()).await {
        Ok(Ok(snap)) => shared.metrics.vrrp.update(snap, v.started_at()),
        Ok(Err(e)) => {
            warn!(event = "vrrp_status_failed", error = %e);
            shared.metrics.vrrp.clear();
        }
        Err(_) => {
            warn!(event = "vrrp_status_failed", error = "no answer within 2 s");
            shared.metrics.vrrp.clear();
        }
    }
}

/// One pass, plus immediate re-runs (at most 3) while the table keeps
/// moving under us.
async fn run_pass(shared: &Shared, reason: &'static str) -> LastPass {
    let mut reason = reason;
    let mut rerun = 0;
    loop {
        // The desired table and the cleanups it makes safe, in one lock.
        let (desired, snat, exclusive, timeouts, sync_daemon, resets) = {
            let Ok(mut s) = shared.state.lock() else {
                return LastPass::default();
            };
            let resets = health::take_resets(&mut s);
            let sync_daemon = match shared.kind {
                DataplaneKind::Ipvs => shared
                    .vrrp_states
                    .lock()
                    .ok()
                    .and_then(|st| crate::ipvs_sync::wanted_now(&s.config, &st)),
                DataplaneKind::Nftables => None,
            };
            (
                s.desired.clone(),
                s.snat.clone(),
                s.config.global.ipvs_exclusive,
                s.config.global.ipvs_timeouts,
                sync_daemon,
                resets,
            )
        };
        let (tx, rx) = oneshot::channel();
        let sent = shared.kernel.send(KernelCmd::Pass {
            desired: desired.clone(),
            snat,
            exclusive,
            timeouts,
            sync_daemon,
            resets,
            reply: tx,
        });
        let Ok(done) = (match sent {
            Ok(()) => rx.await.map_err(|_| ()),
            Err(_) => Err(()),
        }) else {
            error!(event = "kernel_worker_gone");
            return LastPass::default();
        };
        let PassDone {
            report,
            took,
            sysctls,
            resets,
        } = done;
        health::record_resets(shared, &resets);
        for s in sysctls.iter().filter(|s| s.error.is_some()) {
            shared
                .metrics
                .reconcile_errors
                .with_label_values(&["sysctl"])
                .inc();
            warn!(event = "sysctl_not_set", name = %s.name, error = s.error.as_deref().unwrap_or(""));
        }
        if let Ok(mut s) = shared.state.lock() {
            s.sysctls = sysctls;
        }
        let summary = record_pass(shared, reason, &desired, &report, took);
        if report.wants_rerun() && rerun < 3 {
            rerun += 1;
            reason = "conflict";
            continue;
        }
        return summary;
    }
}

fn record_pass(
    shared: &Shared,
    reason: &'static str,
    desired: &DesiredTable,
    report: &PassReport,
    took: Duration,
) -> LastPass {
    let m = &shared.metrics;
    m.reconcile_passes.with_label_values(&[reason]).inc();
    m.reconcile_duration.observe(took.as_secs_f64());
    m.services_owned.set(desired.services.len() as i64);
    m.destinations_owned.set(desired.dest_count() as i64);
    for op in &report.applied {
        m.ops_applied.with_label_values(&[op.kind()]).inc();
        info!(event = "kernel_op_applied", op = %op, trigger = reason);
    }
    for f in &report.failed {
        m.reconcile_errors.with_label_values(&[f.op.kind()]).inc();
        error!(event = "kernel_op_refused", virtual_server = f.service_name.as_deref().unwrap_or("-"), op = %f.op, error = %f.error);
    }
    for f in &report.conflicts {
        m.reconcile_conflicts.inc();
        info!(event = "kernel_table_moved", op = %f.op, error = %f.error, note = "re-running the pass");
    }
    if let Some(e) = &report.dump_error {
        m.reconcile_errors.with_label_values(&["dump"]).inc();
        error!(event = "kernel_dump_failed", error = %e);
    }
    for r in &report.repairs {
        m.ops_applied.with_label_values(&["repair"]).inc();
        info!(event = "kernel_repaired", change = %r, trigger = reason);
    }
    for e in &report.nat_errors {
        m.reconcile_errors.with_label_values(&["nftables"]).inc();
        error!(event = "nftables_failed", error = %e);
    }
    for e in &report.sync_daemon_errors {
        m.reconcile_errors.with_label_values(&["sync_daemon"]).inc();
        error!(event = "ipvs_sync_daemon_failed", error = %e);
    }
    if let Some(e) = &report.timeouts_error {
        m.reconcile_errors
            .with_label_values(&["set_timeouts"])
            .inc();
        error!(event = "kernel_timeouts_failed", error = %e);
    }
    if let Some(dump) = &report.dump {
        m.table.update(dump, desired);
    }
    let mut errors = LastPass::errors_from(&report.failed, report.dump_error.as_deref());
    errors.extend(report.timeouts_error.iter().cloned());
    errors.extend(report.nat_errors.iter().cloned());
    errors.extend(report.sync_daemon_errors.iter().cloned());
    let summary = LastPass {
        at_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        trigger: reason.to_string(),
        duration_seconds: took.as_secs_f64(),
        ops_applied: report.applied.len() + report.repairs.len(),
        errors,
        conflicts: report.conflicts.len(),
    };
    if let Ok(mut s) = shared.state.lock() {
        s.last_pass = Some(summary.clone());
    }
    summary
}

/// Binds the control socket 0600. A live socket (another daemon answering)
/// is an error; a stale file from a crash is removed (no lockfile dance).
fn bind_control_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |detail: String| DaemonError::ControlSocket {
        path: path.display().to_string(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another director is already listening there".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

async fn control_server(listener: UnixListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, shared.clone()));
            }
            Err(e) => {
                warn!(event = "control_accept_failed", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type ClientReader = BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>;

async fn serve_client(stream: UnixStream, shared: Shared) {
    let (read, mut write) = stream.into_split();
    // The cap also bounds what a follower may send after its request
    // (ignored; reaching the cap reads as EOF and ends the stream).
    let mut reader = BufReader::new(read.take(control::MAX_REQUEST_BYTES as u64 + 1));
    let mut line = Vec::new();
    let response =
        match tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut line))
            .await
        {
            Err(_) => Response::Error {
                message: "timed out waiting for a request line".into(),
            },
            Ok(Err(e)) => Response::Error {
                message: format!("read failed: {e}"),
            },
            Ok(Ok(_)) if line.len() > control::MAX_REQUEST_BYTES => Response::Error {
                message: format!("request longer than {} bytes", control::MAX_REQUEST_BYTES),
            },
            Ok(Ok(_)) => match control::parse_request(line.strip_suffix(b"\n").unwrap_or(&line)) {
                Err(message) => Response::Error { message },
                Ok(Request::VrrpFollow { since }) => {
                    follow_vrrp(&mut reader, &mut write, &shared, since).await;
                    let _ = write.shutdown().await;
                    return;
                }
                Ok(req) => handle(req, &shared).await,
            },
        };
    let _ = send_line(&mut write, &response).await;
    let _ = write.shutdown().await;
}

/// Writes one response line.
async fn send_line(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"encoding reply: {e}\"}}").into_bytes()
    });
    out.push(b'\n');
    write.write_all(&out).await
}

/// Resolves when the client has closed its side (EOF or error); bytes it
/// sends meanwhile are read and dropped. Cancel-safe.
async fn client_gone(reader: &mut ClientReader) {
    let mut sink = [0u8; 512];
    loop {
        match reader.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// `vrrp_follow` (see [`control`] for the lines): the snapshot, then every
/// executed event, until the client leaves or VRRP stops. The task holds a
/// journal subscription and this socket, nothing that grows: a reader
/// slower than the events is overtaken and told what it lost.
async fn follow_vrrp(
    reader: &mut ClientReader,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
    since: Option<u64>,
) {
    // A follower may connect while the first pass runs, before VRRP is
    // up: wait for it (an operator starting `--follow` next to a restart
    // wants the startup transitions too), unless the client leaves first.
    let mut settled = shared.vrrp_settled.subscribe();
    tokio::select! {
        r = settled.wait_for(|s| *s) => if r.is_err() { return },
        () = client_gone(reader) => return,
    }
    let Some(v) = shared.vrrp.get() else {
        let message = "no vrrp_instance is running: nothing to follow (VRRP instances added by a reload start at the next restart)".to_string();
        let _ = send_line(write, &Response::Error { message }).await;
        return;
    };
    // Subscribe before the snapshot: every event after it is then
    // delivered (see vrrp_host::follow).
    let mut sub = v.follow();
    let snap = match v.status().await {
        Ok(snap) => snap,
        Err(message) => {
            let _ = send_line(write, &Response::Error { message }).await;
            return;
        }
    };
    let after = match since {
        None => snap.last_event_seq,
        Some(s) if s <= snap.last_event_seq => s,
        Some(s) => {
            let message = format!(
                "since {s} is after the last event, {}: that sequence number is from an earlier run of the daemon",
                snap.last_event_seq
            );
            let _ = send_line(write, &Response::Error { message }).await;
            return;
        }
    };
    sub.start_after(after);
    info!(
        event = "vrrp_follower_connected",
        after,
        followers = v.followers()
    );
    if send_line(write, &Response::Vrrp(Box::new(snap)))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let item = tokio::select! {
            item = sub.next() => item,
            () = client_gone(reader) => break,
        };
        let line = match item {
            None => break,
            Some(crate::vrrp_host::follow::Item::Event(event)) => {
                let unix_time = v
                    .wall_clock(event.at)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                Response::VrrpEvent(Box::new(control::FollowedEvent { unix_time, event }))
            }
            Some(crate::vrrp_host::follow::Item::Lost {
                first_seq,
                last_seq,
            }) => {
                warn!(event = "vrrp_follower_lagged", first_seq, last_seq);
                Response::vrrp_lost(first_seq, last_seq)
            }
        };
        // A client that stopped reading blocks only this task; the
        // journal overtakes it meanwhile.
        if send_line(write, &line).await.is_err() {
            break;
        }
    }
    info!(event = "vrrp_follower_gone");
}

/// Sends one request to the kernel worker and awaits its answer.
async fn ask_kernel<T>(
    shared: &Shared,
    cmd: impl FnOnce(oneshot::Sender<Result<T, KernelError>>) -> KernelCmd,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    let gone = || "kernel worker is gone".to_string();
    shared.kernel.send(cmd(tx)).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?.map_err(|e| e.to_string())
}

async fn dump(shared: &Shared) -> Result<KernelTable, String> {
    ask_kernel(shared, |reply| KernelCmd::Dump { reply }).await
}

async fn kernel_status(shared: &Shared) -> Result<DataplaneStatus, String> {
    ask_kernel(shared, |reply| KernelCmd::Status { reply }).await
}

async fn handle(req: Request, shared: &Shared) -> Response {
    match req {
        Request::Status => match kernel_status(shared).await {
            Err(message) => Response::Error { message },
            Ok(DataplaneStatus {
                table,
                timeouts,
                sync_daemons,
            }) => {
                let Ok(s) = shared.state.lock() else {
                    return Response::Error {
                        message: "state poisoned".into(),
                    };
                };
                Response::Status(Box::new(StatusReply {
                    dataplane: shared.kind.to_string(),
                    dataplane_configured: s.config.global.dataplane,
                    sysctls: s.sysctls.clone(),
                    snat: s.snat.as_ref().clone(),
                    config_file: s.config_path.display().to_string(),
                    router_id: s.config.global.router_id.clone(),
                    table,
                    timeouts,
                    sync_daemons,
                    owned: s
                        .desired
                        .services
                        .values()
                        .map(|d| OwnedService {
                            name: d.name.clone(),
                            key: d.service.key,
                        })
                        .collect(),
                    exclusive: s.config.global.ipvs_exclusive,
                    reconcile_interval_seconds: s.config.global.reconcile_interval.as_secs_f64(),
                    last_pass: s.last_pass.clone(),
                }))
            }
        },
        // No IPVS connection table: the same listing built from conntrack.
        // The services are the ones the director programs (no table dump:
        // at thousands of services that takes seconds).
        Request::Conns if shared.kind == DataplaneKind::Nftables => {
            let Some(desired) = shared.state.lock().ok().map(|s| s.desired.clone()) else {
                return Response::Error {
                    message: "state poisoned".into(),
                };
            };
            let entries = tokio::task::spawn_blocking(|| {
                crate::conntrack::ConntrackSocket::open().and_then(|mut s| s.dump(None))
            })
            .await;
            match entries {
                Ok(Ok(entries)) => Response::Conns {
                    proc_ip_vs_conn: crate::conntrack::summary::ip_vs_conn_text(&entries, &desired),
                },
                Ok(Err(e)) => Response::Error {
                    message: format!("cannot read the conntrack table: {e}"),
                },
                Err(e) => Response::Error {
                    message: format!("conntrack task failed: {e}"),
                },
            }
        }
        Request::Conns => match tokio::fs::read_to_string("/proc/net/ip_vs_conn").await {
            Ok(text) => Response::Conns {
                proc_ip_vs_conn: text,
            },
            Err(e) => Response::Error {
                message: format!(
                    "cannot read /proc/net/ip_vs_conn: {e} (does this kernel have IPVS?)"
                ),
            },
        },
        Request::Reload => reload(shared).await,
        Request::Vrrp => match shared.vrrp.get() {
            Some(v) => match v.status().await {
                Ok(snap) => Response::Vrrp(Box::new(snap)),
                Err(message) => Response::Error { message },
            },
            None => Response::Vrrp(Box::new(vrrp::driver::Snapshot::empty())),
        },
        Request::Health => health::health_reply(shared),
        Request::Sync => sync_reply(shared).await,
        Request::Drain {
            virtual_server,
            real_server,
        } => health::drain(shared, &virtual_server, &real_server, true).await,
        Request::Undrain {
            virtual_server,
            real_server,
        } => health::drain(shared, &virtual_server, &real_server, false).await,
        // serve_client streams it; never answered as one line.
        Request::VrrpFollow { .. } => Response::Error {
            message: "vrrp_follow is a stream and cannot be answered as one reply".into(),
        },
    }
}

/// Re-reads the config. A rejected config changes nothing; an accepted one
/// is swapped in and one pass applies only the difference.
async fn reload(shared: &Shared) -> Response {
    let Some(path) = shared.state.lock().ok().map(|s| s.config_path.clone()) else {
        return Response::Error {
            message: "state poisoned".into(),
        };
    };
    // Checked for the dataplane this daemon runs, not the one the file
    // names: a reload cannot switch dataplanes (that needs a restart).
    let running = Some(match shared.kind {
        DataplaneKind::Ipvs => config::DataplaneChoice::Ipvs,
        DataplaneKind::Nftables => config::DataplaneChoice::Nftables,
    });
    let loaded = tokio::task::spawn_blocking(move || config::load_for(&path, running)).await;
    let new = match loaded {
        Err(e) => {
            return Response::Error {
                message: format!("reload task failed: {e}"),
            }
        }
        Ok(Err(errors)) => {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["rejected"])
                .inc();
            let rejected: Vec<String> = errors.to_string().lines().map(str::to_string).collect();
            warn!(
                event = "reload_rejected",
                errors = rejected.len(),
                first = rejected.first().map(String::as_str).unwrap_or("")
            );
            return Response::Reload(ReloadReply {
                rejected,
                last_pass: None,
            });
        }
        Ok(Ok(c)) => c,
    };
    let mut ctsync_new = None;
    if let Ok(mut s) = shared.state.lock() {
        if new.global.control_socket != s.config.global.control_socket
            || new.global.metrics_listen != s.config.global.metrics_listen
            || new.global.dataplane != s.config.global.dataplane
        {
            warn!(
                event = "reload_partial",
                note = "control_socket, metrics_listen and dataplane changes take effect at the next restart"
            );
        }
        if new.vrrp_instances != s.config.vrrp_instances
            || new.sync_groups != s.config.sync_groups
            || new.vrrp_scripts != s.config.vrrp_scripts
        {
            warn!(
                event = "reload_partial",
                note = "VRRP changes (vrrp_instance, sync_group, vrrp_script) take effect at the next restart; the running instances keep their settings"
            );
        }
        s.snat = Arc::new(new.snat.clone());
        ctsync_new = Some(new.clone());
        // Health checks, drains and leaving servers follow the new config,
        // and the desired table is compiled from all of it.
        health::reload(&mut s, new, shared);
    }
    if let Some(new) = &ctsync_new {
        reload_ctsync(shared, new).await;
    }
    shared
        .metrics
        .config_reloads
        .with_label_values(&["applied"])
        .inc();
    let (tx, rx) = oneshot::channel();
    if shared
        .triggers
        .send(Trigger {
            reason: "reload",
            done: Some(tx),
        })
        .await
        .is_err()
    {
        return Response::Error {
            message: "reconcile loop is gone".into(),
        };
    }
    let last_pass = rx.await.ok();
    info!(
        event = "reloaded",
        ops_applied = last_pass.as_ref().map(|p| p.ops_applied).unwrap_or(0)
    );
    Response::Reload(ReloadReply {
        rejected: Vec::new(),
        last_pass,
    })
}

/// Watches generic-netlink control notifications: when the "IPVS" family is
/// registered again (ip_vs module reloaded, table empty), reopen the kernel
/// socket (the family id may have changed) and repair at once instead of
/// waiting for the next periodic pass. IPVS itself emits no change events,
/// so hand edits are caught by the periodic pass.
fn spawn_family_watch(shared: Shared) {
    let handle = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new().name("genl-watch".into()).spawn(move || {
        let sock = match crate::genl_watch::FamilyWatch::open() {
            Ok(s) => s,
            Err(e) => {
                warn!(event = "genl_watch_unavailable", error = %e, note = "module reloads are repaired by the periodic pass");
                return;
            }
        };
        loop {
            match sock.next_event() {
                Ok(ev) if ev.family == "IPVS" => {
                    info!(event = "ipvs_family_changed", registered = ev.registered);
                    if ev.registered {
                        let _ = shared.kernel.send(KernelCmd::Reopen);
                        let tx = shared.triggers.clone();
                        handle.spawn(async move {
                            let _ = tx.send(Trigger { reason: "kernel_event", done: None }).await;
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(event = "genl_watch_failed", error = %e);
                    return;
                }
            }
        }
    });
    if let Err(e) = spawned {
        warn!(event = "genl_watch_unavailable", error = %e);
    }
}

/// `systemctl reload director` sends SIGHUP: same as `directorctl reload`.
fn spawn_sighup_reload(shared: Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!(event = "sighup", note = "reloading config");
                    if let Response::Reload(r) = reload(&shared).await {
                        for line in r.rejected {
                            error!(event = "reload_rejected", error = %line);
                        }
                    }
                }
            });
        }
        Err(e) => warn!(event = "sighup_unavailable", error = %e),
    }
}
