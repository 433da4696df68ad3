//! Connection-state replication series, rendered at scrape time from one
//! [`SyncStatus`] of the ctsync driver (like the VRRP series from one
//! snapshot; names here go without the registry's `director_` prefix): the
//! session and the driver own the numbers, nothing is
//! accumulated here. The same figures as `directorctl sync`.
//!
//! - `director_ctsync_up`: 1 while replication runs (0: configured but
//!   not running; absent without `[ctsync]`);
//! - `director_ctsync_role{role}`, `director_ctsync_link{state}`: one
//!   series per value, 1 for the current one;
//! - `director_ctsync_in_sync`, `director_ctsync_entries`, pending and
//!   unacked changes, queued bytes, current lag;
//! - `director_ctsync_changes_total{origin="local|peer",kind="created|updated|destroyed"}`;
//! - `director_ctsync_messages_total{direction}`, `..._bytes_total{direction}`;
//! - resent, lost, rejected (`reason="auth|replay|malformed"`), refused
//!   connections, resyncs (`direction`, `scope`), event overruns, dump
//!   and apply failures, established connections, role changes;
//! - `director_ctsync_ack_lag_seconds`: the session's ack-lag histogram
//!   (buckets 1 ms .. 16.384 s, powers of two).

use super::{family, label, sample};
use crate::ctsync_host::driver::SyncStatus;
use ctsync::session::LinkState;
use ctsync::Role;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use std::sync::{Arc, RwLock};

/// What the next scrape exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtSyncView {
    /// No `[ctsync]`: no series.
    Off,
    /// Configured, not running: `director_ctsync_up 0`.
    Down,
    Running(Box<SyncStatus>),
}

#[derive(Clone)]
pub struct CtSyncCollector {
    last: Arc<RwLock<CtSyncView>>,
    descs: Arc<Vec<Desc>>,
}

impl Default for CtSyncCollector {
    fn default() -> Self {
        // One descriptor tells this collector apart in the registry; the
        // families are built at collect time (see VrrpCollector).
        let descs = Desc::new(
            "ctsync_up".into(),
            "Connection-state replication is running".into(),
            Vec::new(),
            Default::default(),
        )
        .map(|d| vec![d])
        .unwrap_or_default();
        CtSyncCollector {
            last: Arc::new(RwLock::new(CtSyncView::Off)),
            descs: Arc::new(descs),
        }
    }
}

impl CtSyncCollector {
    pub fn update(&self, view: CtSyncView) {
        if let Ok(mut w) = self.last.write() {
            *w = view;
        }
    }
}

impl Collector for CtSyncCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.last.read() {
            Ok(v) => families(&v),
            Err(_) => Vec::new(),
        }
    }
}

fn one(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    family(
        format!("ctsync_{name}"),
        help,
        kind,
        vec![sample(Vec::new(), kind, value)],
    )
}

fn labelled(
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(&[(&str, &str)], u64)],
) -> MetricFamily {
    family(
        format!("ctsync_{name}"),
        help,
        kind,
        rows.iter()
            .map(|(labels, v)| {
                sample(
                    labels.iter().map(|(k, v)| label(k, v)).collect(),
                    kind,
                    *v as f64,
                )
            })
            .collect(),
    )
}

const C: MetricType = MetricType::COUNTER;
const G: MetricType = MetricType::GAUGE;

fn families(view: &CtSyncView) -> Vec<MetricFamily> {
    let st = match view {
        CtSyncView::Off => return Vec::new(),
        CtSyncView::Down => {
            return vec![one(
                "up",
                "1 while connection-state replication runs; 0 when [ctsync] is configured but it is not running (see directorctl sync).",
                G,
                0.0,
            )]
        }
        CtSyncView::Running(st) => st,
    };
    let s = &st.session;
    let n = &s.stats;
    let d = &st.driver;
    let b = |x: bool| u64::from(x);
    let mut out = vec![
        one("up", "1 while connection-state replication runs; 0 when [ctsync] is configured but it is not running (see directorctl sync).", G, 1.0),
        labelled(
            "role",
            "This box's replication role (follows VRRP): 1 for the current one.",
            G,
            &[
                (&[("role", "master")], b(s.role == Role::Master)),
                (&[("role", "backup")], b(s.role == Role::Backup)),
            ],
        ),
        labelled(
            "link",
            "State of the connection to the peer: 1 for the current one.",
            G,
            &[
                (&[("state", "down")], b(s.link == LinkState::Down)),
                (&[("state", "handshake")], b(s.link == LinkState::Handshake)),
                (&[("state", "established")], b(s.link == LinkState::Established)),
            ],
        ),
        one("in_sync", "1 once a bulk resync completed on the current connection (both tables agree).", G, b(s.in_sync) as f64),
        one("entries", "Entries in the replicated set.", G, n.entries as f64),
        one("events_subscribed", "1 while subscribed to the kernel's conntrack events (a master; a backup is not).", G, b(d.events_subscribed) as f64),
        one("pending_changes", "Changes waiting for the send window (coalesced per connection).", G, n.pending as f64),
        one("unacked_bytes", "Bytes sent and not yet acknowledged by the peer.", G, n.unacked_bytes as f64),
        one("queued_bytes", "Bytes queued for the socket and not yet written.", G, d.queued_bytes as f64),
        one("lag_seconds", "Age of the oldest change not yet acknowledged by the peer.", G, n.lag_ms as f64 / 1000.0),
        labelled(
            "changes_total",
            "Connection changes by origin: local = this kernel's conntrack events, peer = received and written here.",
            C,
            &[
                (&[("origin", "local"), ("kind", "created")], n.events_new),
                (&[("origin", "local"), ("kind", "updated")], n.events_update),
                (&[("origin", "local"), ("kind", "destroyed")], n.events_destroy),
                (&[("origin", "peer"), ("kind", "created")], n.created),
                (&[("origin", "peer"), ("kind", "updated")], n.updated),
                (&[("origin", "peer"), ("kind", "destroyed")], n.destroyed),
            ],
        ),
        labelled(
            "messages_total",
            "Frames on the sync connection.",
            C,
            &[(&[("direction", "sent")], n.frames_sent), (&[("direction", "received")], n.frames_received)],
        ),
        labelled(
            "bytes_total",
            "Bytes on the sync connection.",
            C,
            &[(&[("direction", "sent")], n.bytes_sent), (&[("direction", "received")], n.bytes_received)],
        ),
        one("resent_total", "Entries re-sent in partial resyncs the peer asked for.", C, n.resent as f64),
        one("lost_total", "Sequence numbers skipped by the peer's frames (lost or injected; each closes the connection).", C, n.lost as f64),
        labelled(
            "rejected_total",
            "Frames rejected (each closes the connection): auth = bad MAC (wrong key or forgery), replay = sequence number already seen, malformed = framing, size, version or type.",
            C,
            &[
                (&[("reason", "auth")], n.rejected_auth),
                (&[("reason", "replay")], n.rejected_replay),
                (&[("reason", "malformed")], n.malformed + n.oversized + n.bad_version + n.unknown_type + n.truncated),
                (&[("reason", "protocol")], n.protocol_errors),
            ],
        ),
        one("refused_connections_total", "TCP connections refused because they did not come from [ctsync] peer.", C, d.refused_connections as f64),
        one("refused_replacements_total", "Connections from the peer's address refused because they did not open with a fresh, authentic Hello (the live session was kept).", C, d.refused_replacements as f64),
        labelled(
            "resyncs_total",
            "Bulk resyncs by direction and scope (full: every entry; partial: buckets whose digest differed).",
            C,
            &[
                (&[("direction", "sent"), ("scope", "full")], n.bulk_sent),
                (&[("direction", "sent"), ("scope", "partial")], n.partial_bulk_sent),
                (&[("direction", "received"), ("scope", "full")], n.bulk_received),
                (&[("direction", "received"), ("scope", "partial")], n.partial_bulk_received),
            ],
        ),
        one("event_overruns_total", "Conntrack event socket overruns (events lost; repaired with a dump at once).", C, n.overruns as f64),
        one("dump_failures_total", "Conntrack table dumps that failed.", C, n.dump_failures as f64),
        one("apply_refused_total", "Replicated entries the kernel refused to write.", C, d.apply_refused as f64),
        one("table_full_total", "Writes refused because nf_conntrack_max was reached.", C, n.table_full as f64),
        one("connections_established_total", "Connections to the peer that completed the handshake.", C, n.established as f64),
        one("role_changes_total", "Role changes (VRRP transitions that changed the replication role).", C, n.role_changes as f64),
    ];
    out.push(lag_histogram(&n.lag));
    out
}

fn lag_histogram(h: &ctsync::session::LagHistogram) -> MetricFamily {
    let mut hist = Histogram::default();
    let mut cumulative = 0u64;
    let mut buckets = Vec::new();
    // buckets[i]: lag below 2^i ms; the last is open (>= 16.384 s).
    for (i, c) in h.buckets.iter().enumerate().take(15) {
        cumulative += c;
        let mut b = Bucket::default();
        b.set_upper_bound((1u64 << i) as f64 / 1000.0);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    hist.set_bucket(buckets);
    hist.set_sample_count(h.samples());
    // The session keeps counts only: the sum is not known.
    hist.set_sample_sum(0.0);
    let mut m = Metric::default();
    m.set_histogram(hist);
    family(
        "ctsync_ack_lag_seconds".into(),
        "Time from a change being queued to the peer's ack of its frame (upper bounds; the sum is not tracked).",
        MetricType::HISTOGRAM,
        vec![m],
    )
}
