//! Configuration of a session: who we are, the shared key, and the limits
//! and timers (defaults chosen for a LAN sync link between two boxes).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::message::MAX_NODE_ID_LEN;
use crate::wire::record::MAX_ENTRY_LEN;
use crate::wire::{Psk, Role, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD, MIN_MAX_PAYLOAD};

/// Sizes that bound memory and batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest frame payload accepted (announced in Hello; a larger header
    /// is rejected before its payload is read). Default 1 MiB.
    pub max_payload: u32,
    /// Target payload of an Upsert/Delete frame (never above what the
    /// peer accepts). Default 64 KiB: ~1,200 IPv4 TCP entries per frame.
    pub batch_bytes: usize,
    /// Bytes sent and not yet acknowledged before the sender stops and
    /// coalesces instead. Default 4 MiB.
    pub window_bytes: usize,
    /// The sender also stops while the driver reports more than this many
    /// bytes queued and unwritten (`Input::Writable`). Default 1 MiB.
    pub driver_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: DEFAULT_MAX_PAYLOAD,
            batch_bytes: 64 * 1024,
            window_bytes: 4 * 1024 * 1024,
            driver_queue_bytes: 1024 * 1024,
        }
    }
}

/// Timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timers {
    /// From Connected to the peer's key confirmation. Default 5 s.
    pub handshake_timeout: Duration,
    /// A direction idle this long carries a Heartbeat. Default 1 s.
    pub heartbeat_interval: Duration,
    /// Nothing valid received this long: the peer is dead, close.
    /// Default 5 s.
    pub dead_interval: Duration,
    /// How often a backup asks for the master's digest. Default 10 s.
    pub digest_interval: Duration,
    /// How often each side compares its kernel table with the replicated
    /// set (master: sends differences and timeout refreshes; backup:
    /// removes entries the master no longer has). Default 60 s.
    pub reconcile_interval: Duration,
    /// Wait after `Input::DumpFailed` before asking again. Default 1 s.
    pub dump_retry: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            dead_interval: Duration::from_secs(5),
            digest_interval: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(60),
            dump_retry: Duration::from_secs(1),
        }
    }
}

/// Everything a [`super::Session`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's `router_id`, sent in Hello (1..=64 bytes).
    pub node_id: String,
    /// The role at start (VRRP decides; `Input::RoleChanged` follows it).
    pub role: Role,
    /// From `[ctsync] key_file`.
    pub key: Psk,
    pub limits: Limits,
    pub timers: Timers,
}

/// A configuration mistake, found before the session starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id must be 1..=64 bytes, got {0}")]
    NodeId(usize),
    #[error("max_payload {0} outside {MIN_MAX_PAYLOAD}..={HARD_MAX_PAYLOAD}")]
    MaxPayload(u32),
    #[error("batch_bytes {got} must be within {min}..=max_payload ({max})")]
    BatchBytes { got: usize, min: usize, max: u32 },
    #[error("window_bytes {window} below batch_bytes {batch}")]
    Window { window: usize, batch: usize },
    #[error("{0} must not be zero")]
    ZeroDuration(&'static str),
    #[error("heartbeat_interval must be below dead_interval")]
    HeartbeatVsDead,
}

impl Config {
    /// Defaults for limits and timers.
    pub fn new(node_id: impl Into<String>, role: Role, key: Psk) -> Config {
        Config {
            node_id: node_id.into(),
            role,
            key,
            limits: Limits::default(),
            timers: Timers::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = self.node_id.len();
        if id == 0 || id > MAX_NODE_ID_LEN {
            return Err(ConfigError::NodeId(id));
        }
        let l = &self.limits;
        if !(MIN_MAX_PAYLOAD..=HARD_MAX_PAYLOAD).contains(&l.max_payload) {
            return Err(ConfigError::MaxPayload(l.max_payload));
        }
        let min_batch = 4 + MAX_ENTRY_LEN;
        if l.batch_bytes < min_batch || l.batch_bytes > l.max_payload as usize {
            return Err(ConfigError::BatchBytes {
                got: l.batch_bytes,
                min: min_batch,
                max: l.max_payload,
            });
        }
        if l.window_bytes < l.batch_bytes {
            return Err(ConfigError::Window {
                window: l.window_bytes,
                batch: l.batch_bytes,
            });
        }
        let t = &self.timers;
        for (name, d) in [
            ("handshake_timeout", t.handshake_timeout),
            ("heartbeat_interval", t.heartbeat_interval),
            ("dead_interval", t.dead_interval),
            ("digest_interval", t.digest_interval),
            ("reconcile_interval", t.reconcile_interval),
            ("dump_retry", t.dump_retry),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if t.heartbeat_interval >= t.dead_interval {
            return Err(ConfigError::HeartbeatVsDead);
        }
        Ok(())
    }

    /// An entry whose copy on the peer expires within this is re-sent by
    /// the reconciliation (two reconcile intervals: the next look may be
    /// late by one).
    pub(crate) fn refresh_margin(&self) -> Duration {
        self.timers.reconcile_interval.saturating_mul(2)
    }
}
