//! Which VRRP states make this box the ctsync master, and the link the
//! VRRP executor drives.
//!
//! ## The rule
//!
//! The box is ctsync **master while at least one followed VRRP instance
//! is MASTER**, backup otherwise. Followed instances:
//!
//! - without `[ctsync] follow`: every `vrrp_instance` of the config. Right
//!   for the usual active/backup pair (one instance, or several in a
//!   sync group: they move together). With instances split between the
//!   boxes (active/active), both would be master; name one with `follow`.
//! - `follow = "VI_1"` (an instance): that instance;
//! - `follow = "G1"` (a sync group): the group's instances (they are
//!   master together; during the group's transition the first one to
//!   become MASTER makes the box master).
//!
//! Fault, Backup and Initialize are all "not master": an instance in
//! Fault has released its VIPs, so the connections are the peer's.
//! Without any VRRP instance the box stays backup (it still writes what a
//! peer sends, so a manual setup can be master on the other side).
//!
//! ## The link
//!
//! [`RoleLink`] outlives drivers: the VRRP executor holds one for the
//! daemon's life, and a config reload that restarts the ctsync driver
//! re-attaches the new one, which is told the current role at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ctsync::Role;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use vrrp::machine::State;

use super::driver::Command;
use crate::config::Config;

/// The followed instances (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleRule {
    followed: BTreeSet<String>,
}

impl RoleRule {
    pub fn from_config(config: &Config) -> RoleRule {
        let follow = config.ctsync.as_ref().and_then(|c| c.follow.as_deref());
        let followed = match follow {
            None => config
                .vrrp_instances
                .iter()
                .map(|i| i.name.clone())
                .collect(),
            Some(name) => match config.sync_groups.iter().find(|g| g.name == name) {
                Some(g) => g.instances.iter().cloned().collect(),
                None => [name.to_string()].into_iter().collect(),
            },
        };
        RoleRule { followed }
    }

    pub fn follows(&self, instance: &str) -> bool {
        self.followed.contains(instance)
    }

    /// The role for these instance states.
    pub fn role(&self, states: &BTreeMap<String, State>) -> Role {
        let master = states
            .iter()
            .any(|(name, s)| *s == State::Master && self.follows(name));
        if master {
            Role::Master
        } else {
            Role::Backup
        }
    }
}

/// What a barrier found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierOutcome {
    /// Nothing received was waiting to be written.
    Clear,
    /// Waited this long for received entries to be written.
    Applied(Duration),
    /// The bound expired: the VIPs go up with writes still queued.
    Expired(Duration),
    /// No replication running (not configured, or it failed to start).
    NoSync,
}

#[derive(Debug)]
struct Inner {
    rule: RoleRule,
    states: BTreeMap<String, State>,
    role: Role,
    driver: Option<mpsc::UnboundedSender<Command>>,
}

/// Between the VRRP executor and the ctsync driver.
#[derive(Debug)]
pub struct RoleLink {
    inner: Mutex<Inner>,
}

impl RoleLink {
    pub fn new(rule: RoleRule) -> RoleLink {
        RoleLink {
            inner: Mutex::new(Inner {
                rule,
                states: BTreeMap::new(),
                role: Role::Backup,
                driver: None,
            }),
        }
    }

    /// The role VRRP gives the box now.
    pub fn role(&self) -> Role {
        self.inner.lock().map(|i| i.role).unwrap_or(Role::Backup)
    }

    /// A (new) driver: it gets the current role at once.
    pub fn attach(&self, driver: mpsc::UnboundedSender<Command>, rule: RoleRule) {
        if let Ok(mut i) = self.inner.lock() {
            i.rule = rule;
            i.role = i.rule.role(&i.states);
            let _ = driver.send(Command::Role(i.role));
            i.driver = Some(driver);
        }
    }

    /// The driver stopped (reload without `[ctsync]`).
    pub fn detach(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.driver = None;
        }
    }

    /// An instance changed state (the executor's `StateChange`, before
    /// the VIPs of a takeover are added). Returns the new role if it
    /// changed; the driver is told through the same queue as everything
    /// else, so the change is ordered after every input already queued.
    pub fn vrrp_state(&self, instance: &str, state: State) -> Option<Role> {
        let mut i = self.inner.lock().ok()?;
        i.states.insert(instance.to_string(), state);
        let role = i.rule.role(&i.states);
        if role == i.role {
            return None;
        }
        let old = i.role;
        i.role = role;
        info!(event = "ctsync_role_change", old = old.as_str(), new = role.as_str(), reason = "vrrp", instance = %instance, vrrp_state = %state);
        if let Some(d) = &i.driver {
            let _ = d.send(Command::Role(role));
        }
        Some(role)
    }

    /// Waits, at most `timeout`, until everything received from the
    /// peer so far is in the kernel table. Logs an expiry.
    pub async fn barrier(&self, timeout: Duration) -> BarrierOutcome {
        let driver = self.inner.lock().ok().and_then(|i| i.driver.clone());
        let Some(driver) = driver else {
            return BarrierOutcome::NoSync;
        };
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if driver.send(Command::Barrier(tx)).is_err() {
            return BarrierOutcome::NoSync;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(false)) => BarrierOutcome::Clear,
            Ok(Ok(true)) => BarrierOutcome::Applied(started.elapsed()),
            Ok(Err(_)) => BarrierOutcome::NoSync,
            Err(_) => {
                warn!(event = "ctsync_barrier_expired", after = ?timeout, note = "adding the VIPs with replicated entries still being written; connections among them may be reset");
                BarrierOutcome::Expired(timeout)
            }
        }
    }
}
