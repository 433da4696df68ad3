//! Conntrack replication in the daemon (map of the module):
//!
//! - [`table`]: the kernel side as traits ([`table::ConntrackTable`],
//!   [`table::EventSource`], [`table::Subscription`]: only a master is
//!   subscribed to its kernel's events) so the driver is tested against
//!   an in-memory table.
//! - [`driver`]: the tokio driver of the `ctsync` session: TCP to the
//!   peer (who dials, reconnects), nonces, timers, the write queue, the
//!   apply and event threads, the barrier.
//! - [`role`]: which VRRP states make this box the ctsync master
//!   ([`role::RoleRule`]), and the [`role::RoleLink`] the VRRP executor
//!   drives (role changes, the takeover barrier).
//! - [`kernel`]: the real kernel side over ctnetlink: the filter (VIPs,
//!   SNAT sources, `ignore`), `Entry` <-> kernel entry mapping, the
//!   batched upserts (create / verify / update / replace) and the event
//!   source that drops echoes of our own writes by netlink port id.
//! - [`fake`]: the in-memory table and event source of the tests.
//! - this file: [`start`] (key file, session config, the driver's thread)
//!   and [`open_kernel`], the ONE place that builds the real ctnetlink
//!   table and event source.
//!
//! ## Roles and the takeover order
//!
//! The box is ctsync master while VRRP makes it master (see [`role`] for
//! several instances and sync groups). When it becomes master, the VRRP
//! executor (`vrrp_host::execute`) does, in order:
//!
//! 1. `StateChange` -> [`role::RoleLink::vrrp_state`] -> the driver
//!    joins the kernel's event groups, then `RoleChanged` to the session
//!    (queued behind everything already received, so no in-flight
//!    message is lost);
//! 2. `AddVips` waits first for [`role::RoleLink::barrier`]: everything
//!    received from the peer so far is in the kernel table. The backup
//!    writes entries as they arrive, so this is only the bytes received
//!    and not yet applied; the wait is bounded by [`BARRIER_TIMEOUT`] and
//!    logged (`ctsync_barrier_expired`) when it expires: failover never
//!    waits longer on the sync layer;
//! 3. the VIPs are added, then the gratuitous ARP/NA is sent.

pub mod driver;
pub mod fake;
pub mod kernel;
pub mod role;
pub mod table;

use std::path::Path;
use std::time::Duration;

use ctsync::{Psk, Role, Session, Time};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::config::{self, CtSync};
use driver::{Command, DriverConfig, SyncStatus};
use table::{ConntrackTable, EventSource};

/// Longest wait of a takeover for received entries to reach the kernel.
/// Applying is ~10 us per entry, so 50 ms covers several thousand entries
/// in flight; beyond that the VIPs go up anyway (connections whose entry
/// is still queued are the only ones at risk, as with no sync at all).
pub const BARRIER_TIMEOUT: Duration = Duration::from_millis(50);

/// Why replication could not start. The operator's fault in each case;
/// each names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("[ctsync] key_file {path}: {detail}")]
    Key { path: String, detail: String },
    #[error("[ctsync]: {0}")]
    Session(String),
    #[error("[ctsync]: cannot open the conntrack table: {0}")]
    Kernel(String),
    #[error("[ctsync]: cannot start the ctsync thread: {0}")]
    Thread(String),
}

/// Reads `[ctsync] key_file` into the session's key (see
/// [`ctsync::Psk::from_key_file`] for the format: any bytes, at least 16
/// after trimming whitespace). A key readable by group or others is
/// accepted with a warning, like ssh would not.
pub fn load_key(path: &Path) -> Result<Psk, StartError> {
    let err = |detail: String| StartError::Key {
        path: path.display().to_string(),
        detail,
    };
    let content = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(event = "ctsync_key_file_readable", path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), note = "anyone who can read it can inject conntrack entries; chmod 600");
        }
    }
    Psk::from_key_file(&content).map_err(|e| err(e.to_string()))
}

/// The session config of a `[ctsync]` section (`node_id` = `router_id`).
pub fn session_config(
    config: &CtSync,
    router_id: &str,
    role: Role,
) -> Result<ctsync::Config, StartError> {
    let key = load_key(&config.key_file)?;
    let c = ctsync::Config::new(router_id, role, key);
    c.validate()
        .map_err(|e| StartError::Session(format!("router_id {router_id:?}: {e}")))?;
    Ok(c)
}

/// A running driver, as the daemon holds it.
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The section it runs, to tell whether a reload changes it.
    pub config: CtSync,
}

impl Handle {
    /// The sender [`role::RoleLink::attach`] takes.
    pub fn commands(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
    }

    pub async fn status(&self) -> Result<SyncStatus, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status(tx))
            .map_err(|_| "the ctsync driver is not running".to_string())?;
        rx.await
            .map_err(|_| "the ctsync driver is not running".to_string())
    }

    /// Goodbye to the peer, threads stopped; returns when done (at most
    /// about a second).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts replication for `config` against `table` and `events` on a
/// thread of its own (current-thread runtime), in `role` until VRRP says
/// otherwise. Fails before anything is opened if the key file or the
/// session config is wrong.
pub fn start<T: ConntrackTable, E: EventSource>(
    config: &CtSync,
    router_id: &str,
    role: Role,
    table: T,
    events: E,
) -> Result<Handle, StartError> {
    let session_cfg = session_config(config, router_id, role)?;
    spawn(
        DriverConfig {
            local: config.local,
            peer: config.peer,
            session: session_cfg,
        },
        config.clone(),
        table,
        events,
    )
}

/// [`start`] with the session config given (tests shorten the timers).
pub fn spawn<T: ConntrackTable, E: EventSource>(
    cfg: DriverConfig,
    section: CtSync,
    table: T,
    events: E,
) -> Result<Handle, StartError> {
    let session = Session::new(cfg.session.clone(), Time::ZERO)
        .map_err(|e| StartError::Session(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("ctsync".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(driver::run(cfg, session, table, events, rx)),
                Err(e) => tracing::error!(event = "ctsync_runtime_failed", error = %e),
            }
        })
        .map_err(|e| StartError::Thread(e.to_string()))?;
    Ok(Handle {
        commands: tx,
        thread: std::sync::Mutex::new(Some(thread)),
        config: section,
    })
}

/// The real kernel side: ctnetlink's table and event subscription,
/// filtered to the replicated flows minus `[ctsync] ignore`. The one
/// function that names the ctnetlink adapter; everything else is generic
/// over [`ConntrackTable`] / [`EventSource`].
pub fn open_kernel(
    config: &config::Config,
) -> Result<(impl ConntrackTable, impl EventSource), StartError> {
    let ignore: Vec<config::Cidr> = config
        .ctsync
        .as_ref()
        .map(|c| c.ignore.clone())
        .unwrap_or_default();
    kernel::open(kernel::Filter::from_config(config, &ignore))
        .map_err(|e| StartError::Kernel(e.to_string()))
}

/// Starts replication with the real kernel table; `Ok(None)` without a
/// `[ctsync]` section.
pub fn start_kernel(config: &config::Config, role: Role) -> Result<Option<Handle>, StartError> {
    let Some(ct) = &config.ctsync else {
        return Ok(None);
    };
    // The key first: a typo in key_file is reported before ctnetlink is
    // touched.
    session_config(ct, &config.global.router_id, role)?;
    let (table, events) = open_kernel(config)?;
    start(ct, &config.global.router_id, role, table, events).map(Some)
}

#[cfg(test)]
mod tests;
