//! `director run`: the long-running daemon.
//!
//! Shape (one owner per resource):
//! - a **kernel worker thread** owns the `IpvsKernel` (netlink sockets are
//!   blocking and single-owner) and runs passes and dumps on request;
//! - the **reconcile loop** (async) decides *when* to pass: every
//!   `reconcile_interval` (level-triggered repair of `ipvsadm -C` and hand
//!   edits), on reload, on a kernel event (the "IPVS" generic-netlink family
//!   being registered again after a module reload, which empties the table),
//!   and at once again after a pass that hit a conflict;
//! - the **control socket** task answers `directorctl`;
//! - the optional **metrics** task serves `/metrics`.
//!
//! Shutdown (SIGTERM/SIGINT) leaves the kernel table as it is: connections
//! survive a restart and the next daemon adopts the table in place.

use crate::config::{self, Config};
use crate::control::{self, LastPass, OwnedService, ReloadReply, Request, Response, StatusReply};
use crate::desired::{desired_table, DesiredTable};
use crate::kernel::{IpvsKernel, KernelError};
use crate::metrics::Metrics;
use crate::model::{KernelTable, Timeouts};
use crate::reconcile::{PassReport, Reconciler};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc as amsc, oneshot};
use tracing::{error, info, warn};

/// Where the daemon can fail before it is up. Each says who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("{0}\nhint: this kernel cannot run the IPVS dataplane; `dataplane = \"nftables\"` arrives in a later release")]
    NoIpvs(KernelError),
    #[error("kernel: {0}")]
    Kernel(KernelError),
    #[error("{file}: dataplane = \"nftables\" is not available in this release; use \"ipvs\" or \"auto\" on a kernel with IPVS")]
    DataplaneUnavailable { file: String },
    #[error("control socket {path}: {detail}")]
    ControlSocket { path: String, detail: String },
    #[error("metrics_listen {addr}: {detail}")]
    Metrics { addr: String, detail: String },
}

enum KernelCmd {
    Pass {
        desired: Arc<DesiredTable>,
        exclusive: bool,
        timeouts: Option<Timeouts>,
        reply: oneshot::Sender<(PassReport, Duration)>,
    },
    Dump {
        reply: oneshot::Sender<Result<KernelTable, KernelError>>,
    },
    /// Table plus timeouts and sync daemons, for `directorctl status`.
    Status {
        reply: oneshot::Sender<Result<KernelStatus, KernelError>>,
    },
    Reopen,
}

/// What `directorctl status` shows of the kernel.
struct KernelStatus {
    table: KernelTable,
    timeouts: Option<Timeouts>,
    sync_daemons: Vec<crate::model::SyncDaemon>,
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
    last_pass: Option<LastPass>,
}

/// Handles shared by the daemon's tasks.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    kernel: mpsc::Sender<KernelCmd>,
    triggers: amsc::Sender<Trigger>,
    metrics: Metrics,
}

/// Runs the kernel worker: owns the kernel, serves passes and dumps.
fn spawn_kernel_worker<K, F>(mut open: F, first: K) -> mpsc::Sender<KernelCmd>
where
    K: IpvsKernel + Send + 'static,
    F: FnMut() -> Result<K, KernelError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<KernelCmd>();
    std::thread::Builder::new()
        .name("kernel".into())
        .spawn(move || {
            let mut reconciler = Reconciler::new(first);
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    KernelCmd::Pass {
                        desired,
                        exclusive,
                        timeouts,
                        reply,
                    } => {
                        let started = Instant::now();
                        let report = reconciler.pass(&desired, exclusive, timeouts);
                        let _ = reply.send((report, started.elapsed()));
                    }
                    KernelCmd::Dump { reply } => {
                        let _ = reply.send(reconciler.kernel.dump());
                    }
                    KernelCmd::Status { reply } => {
                        let k = &mut reconciler.kernel;
                        let status = k.dump().map(|table| KernelStatus {
                            table,
                            timeouts: k.timeouts().ok(),
                            sync_daemons: k.sync_daemons().unwrap_or_default(),
                        });
                        let _ = reply.send(status);
                    }
                    KernelCmd::Reopen => match open() {
                        Ok(k) => reconciler = Reconciler::new(k),
                        Err(e) => warn!(event = "kernel_reopen_failed", error = %e),
                    },
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| error!(event = "kernel_worker_spawn_failed", error = %e));
    tx
}

/// Loads and validates the config (no kernel access).
pub fn load_config(path: &Path) -> Result<Config, DaemonError> {
    config::load(path).map_err(DaemonError::Config)
}

/// Runs the daemon until `shutdown` resolves. `open` opens the kernel (the
/// real IPVS socket in `director run`, a fake in tests); it is called again
/// when the IPVS family is re-registered. `ready` is called once the control
/// socket is listening and the first pass is done (systemd `READY=1`).
pub async fn run<K, F>(
    config_path: PathBuf,
    mut open: F,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError>
where
    K: IpvsKernel + Send + 'static,
    F: FnMut() -> Result<K, KernelError> + Send + 'static,
{
    let config = load_config(&config_path)?;
    if config.global.dataplane == config::DataplaneChoice::Nftables {
        return Err(DaemonError::DataplaneUnavailable {
            file: config_path.display().to_string(),
        });
    }
    let kernel = open().map_err(|e| match e {
        KernelError::Unavailable => DaemonError::NoIpvs(e),
        e => DaemonError::Kernel(e),
    })?;
    let metrics = Metrics::new();
    let desired = Arc::new(desired_table(&config));
    info!(
        event = "starting",
        config = %config_path.display(),
        services = desired.services.len(),
        destinations = desired.dest_count(),
        dataplane = "ipvs"
    );
    warn_unbuilt_sections(&config);
    let socket_path = config.global.control_socket.clone();
    let metrics_listen = config.global.metrics_listen;
    let (trig_tx, mut trig_rx) = amsc::channel::<Trigger>(64);
    let shared = Shared {
        state: Arc::new(Mutex::new(State {
            config_path,
            config,
            desired,
            last_pass: None,
        })),
        kernel: spawn_kernel_worker(open, kernel),
        triggers: trig_tx,
        metrics,
    };

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
    spawn_family_watch(shared.clone());
    spawn_sighup_reload(shared.clone());

    // First pass before READY: adopt what is there, add what is missing.
    run_pass(&shared, "startup").await;
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
    info!(
        event = "stopping",
        note = "kernel table left in place for the next daemon to adopt"
    );
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// One pass, plus immediate re-runs (at most 3) while the table keeps
/// moving under us.
async fn run_pass(shared: &Shared, reason: &'static str) -> LastPass {
    let mut reason = reason;
    let mut rerun = 0;
    loop {
        let (desired, exclusive, timeouts) = {
            let Ok(s) = shared.state.lock() else {
                return LastPass::default();
            };
            (
                s.desired.clone(),
                s.config.global.ipvs_exclusive,
                s.config.global.ipvs_timeouts,
            )
        };
        let (tx, rx) = oneshot::channel();
        let sent = shared.kernel.send(KernelCmd::Pass {
            desired: desired.clone(),
            exclusive,
            timeouts,
            reply: tx,
        });
        let Ok((report, took)) = (match sent {
            Ok(()) => rx.await.map_err(|_| ()),
            Err(_) => Err(()),
        }) else {
            error!(event = "kernel_worker_gone");
            return LastPass::default();
        };
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
    let summary = LastPass {
        at_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        trigger: reason.to_string(),
        duration_seconds: took.as_secs_f64(),
        ops_applied: report.applied.len(),
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

async fn serve_client(stream: UnixStream, shared: Shared) {
    let (read, mut write) = stream.into_split();
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
                Ok(req) => handle(req, &shared).await,
            },
        };
    let mut out = serde_json::to_vec(&response).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"encoding reply: {e}\"}}").into_bytes()
    });
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
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

async fn kernel_status(shared: &Shared) -> Result<KernelStatus, String> {
    ask_kernel(shared, |reply| KernelCmd::Status { reply }).await
}

async fn handle(req: Request, shared: &Shared) -> Response {
    match req {
        Request::Status => match kernel_status(shared).await {
            Err(message) => Response::Error { message },
            Ok(KernelStatus {
                table,
                timeouts,
                sync_daemons,
            }) => {
                let Ok(s) = shared.state.lock() else {
                    return Response::Error {
                        message: "state poisoned".into(),
                    };
                };
                Response::Status(StatusReply {
                    dataplane: "ipvs".into(),
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
                })
            }
        },
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
    let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
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
    if let Ok(mut s) = shared.state.lock() {
        if new.global.control_socket != s.config.global.control_socket
            || new.global.metrics_listen != s.config.global.metrics_listen
        {
            warn!(
                event = "reload_partial",
                note = "control_socket and metrics_listen changes take effect at the next restart"
            );
        }
        s.desired = Arc::new(desired_table(&new));
        s.config = new;
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

/// Sections that validate today but whose machinery arrives with later
/// issues: say so at startup instead of silently ignoring them.
fn warn_unbuilt_sections(config: &Config) {
    let mut idle = Vec::new();
    if !config.vrrp_instances.is_empty() {
        idle.push("[[vrrp_instance]] (VIPs are not managed: keep keepalived's VRRP for now)");
    }
    if config.virtual_servers.iter().any(|v| v.health.is_some()) {
        idle.push(
            "virtual_server.health (no health checks run: every real server stays in the pool)",
        );
    }
    if !config.snat.is_empty() {
        idle.push("[[snat]] (no SNAT rules are installed)");
    }
    if config.ctsync.is_some() {
        idle.push("[ctsync] (connection state is not replicated)");
    }
    for section in idle {
        warn!(
            event = "config_section_not_active",
            section,
            note = "validated, but not acted on by this release"
        );
    }
}
