//! Prometheus metrics and the `/metrics` endpoint.
//!
//! Three kinds of series live here:
//! - the director's own counters (reconcile passes, ops by kind, errors,
//!   pass duration, owned services/destinations), updated by the daemon;
//! - the kernel's IPVS counters per service and per destination, exported
//!   by [`IpvsTableCollector`] straight from the last dump as real counters
//!   (the kernel owns the values; we never accumulate them ourselves, so a
//!   daemon restart does not reset them);
//! - VRRP: state, priorities, the RFC 6527 statistics and timer lateness,
//!   exported by [`VrrpCollector`] from a snapshot of the VRRP driver taken
//!   at each scrape (see [`vrrp`] for the list);
//! - conntrack replication: role, link, entries, changes by origin,
//!   traffic, rejected frames, resyncs, ack lag ([`CtSyncCollector`], see
//!   [`ctsync`] for the list);
//! - health checks: probe results and latency, stale checks, pools per
//!   virtual server ([`HealthMetrics`], see [`health`] for the list).
//!
//! The HTTP side is deliberately tiny: `GET /metrics` only, request head
//! capped at 8 KiB, one request per connection.

use crate::desired::DesiredTable;
use crate::model::{KernelTable, ServiceKey, Stats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod ctsync;
pub mod health;
#[cfg(test)]
mod promtext;
pub mod vrrp;
pub use ctsync::{CtSyncCollector, CtSyncView};
pub use health::HealthMetrics;
pub use vrrp::VrrpCollector;

/// The director's own metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_passes: IntCounterVec,
    pub ops_applied: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_conflicts: IntCounter,
    pub reconcile_duration: Histogram,
    pub services_owned: IntGauge,
    pub destinations_owned: IntGauge,
    pub config_reloads: IntCounterVec,
    pub table: IpvsTableCollector,
    pub vrrp: VrrpCollector,
    pub ctsync: CtSyncCollector,
    pub health: HealthMetrics,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error
    // caught by the unit test below, never input-dependent.
    r.unwrap_or_else(|e| panic!("static metric definition rejected: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("director".into()), None).unwrap_or_default();
        let reconcile_passes = must(IntCounterVec::new(
            Opts::new(
                "reconcile_passes_total",
                "Reconcile passes run, by what triggered them.",
            ),
            &["trigger"],
        ));
        let ops_applied = must(IntCounterVec::new(
            Opts::new(
                "reconcile_ops_applied_total",
                "IPVS ops the kernel accepted, by kind.",
            ),
            &["kind"],
        ));
        let reconcile_errors = must(IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Refused IPVS ops and failed dumps, by kind.",
            ),
            &["kind"],
        ));
        let reconcile_conflicts = must(IntCounter::new(
            "reconcile_conflicts_total",
            "Ops answered EEXIST/ENOENT/ESRCH: the table changed under a pass (re-run at once).",
        ));
        let reconcile_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Wall time of one dump+diff+apply pass.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()),
        ));
        let services_owned = must(IntGauge::new(
            "services_owned",
            "Virtual services the config owns.",
        ));
        let destinations_owned = must(IntGauge::new(
            "destinations_owned",
            "Real servers the config owns.",
        ));
        let config_reloads = must(IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "Config reloads, by result (applied|rejected).",
            ),
            &["result"],
        ));
        let table = IpvsTableCollector::default();
        let vrrp = VrrpCollector::default();
        let ctsync = CtSyncCollector::default();
        let health = HealthMetrics::new();
        for c in [
            Box::new(reconcile_passes.clone()) as Box<dyn Collector>,
            Box::new(ops_applied.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_conflicts.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(services_owned.clone()),
            Box::new(destinations_owned.clone()),
            Box::new(config_reloads.clone()),
            Box::new(table.clone()),
            Box::new(vrrp.clone()),
            Box::new(ctsync.clone()),
        ]
        .into_iter()
        .chain(health.collectors())
        {
            must(registry.register(c));
        }
        Metrics {
            registry,
            reconcile_passes,
            ops_applied,
            reconcile_errors,
            reconcile_conflicts,
            reconcile_duration,
            services_owned,
            destinations_owned,
            config_reloads,
            table,
            vrrp,
            ctsync,
            health,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding metrics failed: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A dump and the config names of the services in it.
type LastDump = (KernelTable, BTreeMap<ServiceKey, String>);

/// Kernel counters from the last dump, exported per service / destination.
#[derive(Clone, Default)]
pub struct IpvsTableCollector {
    last: Arc<RwLock<Option<LastDump>>>,
    descs: Arc<Vec<Desc>>,
}

/// (metric suffix, help, type, getter)
type Field = (
    &'static str,
    &'static str,
    MetricType,
    fn(&Stats, u32, u32) -> f64,
);

const SERVICE_FIELDS: &[Field] = &[
    (
        "connections_total",
        "Connections scheduled (kernel IPVS counter).",
        MetricType::COUNTER,
        |s, _, _| s.conns as f64,
    ),
    (
        "packets_in_total",
        "Incoming packets (kernel IPVS counter).",
        MetricType::COUNTER,
        |s, _, _| s.inpkts as f64,
    ),
    (
        "packets_out_total",
        "Outgoing packets (kernel IPVS counter).",
        MetricType::COUNTER,
        |s, _, _| s.outpkts as f64,
    ),
    (
        "bytes_in_total",
        "Incoming bytes (kernel IPVS counter).",
        MetricType::COUNTER,
        |s, _, _| s.inbytes as f64,
    ),
    (
        "bytes_out_total",
        "Outgoing bytes (kernel IPVS counter).",
        MetricType::COUNTER,
        |s, _, _| s.outbytes as f64,
    ),
];

const DEST_EXTRA: &[Field] = &[
    (
        "active_connections",
        "Active connections (ipvsadm ActiveConn).",
        MetricType::GAUGE,
        |_, a, _| f64::from(a),
    ),
    (
        "inactive_connections",
        "Inactive connections (ipvsadm InActConn).",
        MetricType::GAUGE,
        |_, _, i| f64::from(i),
    ),
];

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn sample(labels: Vec<LabelPair>, kind: MetricType, value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn family(name: String, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name);
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl IpvsTableCollector {
    /// Records the latest dump and the config names of owned services.
    pub fn update(&self, table: &KernelTable, desired: &DesiredTable) {
        let names = desired
            .services
            .iter()
            .map(|(k, s)| (*k, s.name.clone()))
            .collect();
        if let Ok(mut w) = self.last.write() {
            *w = Some((table.clone(), names));
        }
    }

    fn service_labels(key: &ServiceKey, names: &BTreeMap<ServiceKey, String>) -> Vec<LabelPair> {
        vec![
            label("name", names.get(key).map(String::as_str).unwrap_or("")),
            label("service", &key.to_string()),
        ]
    }
}

impl Collector for IpvsTableCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked collector: the label sets depend on the kernel table.
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(guard) = self.last.read() else {
            return Vec::new();
        };
        let Some((table, names)) = guard.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (suffix, help, kind, get) in SERVICE_FIELDS {
            let metrics = table
                .services
                .iter()
                .map(|s| {
                    sample(
                        Self::service_labels(&s.service.key, names),
                        *kind,
                        get(&s.stats, 0, 0),
                    )
                })
                .collect();
            out.push(family(
                format!("ipvs_service_{suffix}"),
                help,
                *kind,
                metrics,
            ));
        }
        for (suffix, help, kind, get) in SERVICE_FIELDS.iter().chain(DEST_EXTRA) {
            let mut metrics = Vec::new();
            for s in &table.services {
                for d in &s.dests {
                    let mut labels = Self::service_labels(&s.service.key, names);
                    labels.push(label("destination", &d.dest.key.to_string()));
                    metrics.push(sample(
                        labels,
                        *kind,
                        get(&d.stats, d.active_conns, d.inactive_conns),
                    ));
                }
            }
            out.push(family(
                format!("ipvs_destination_{suffix}"),
                help,
                *kind,
                metrics,
            ));
        }
        out
    }
}

/// Serves `GET /metrics` until the listener fails. `refresh` runs before
/// each scrape so the kernel counters are those of that moment (one dump,
/// the same one `directorctl status --stats` would print), not of the last
/// reconcile pass.
pub async fn serve<R, Fut>(listener: TcpListener, metrics: Metrics, refresh: R)
where
    R: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    loop {
        let Ok((mut stream, _peer)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            if head.starts_with(b"GET /metrics ") {
                refresh().await;
            }
            let (status, ctype, body) = route(&head, &metrics);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => {
            ("200 OK", "text/plain; version=0.0.4", metrics.render())
        }
        (Some("GET"), Some(_)) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".into(),
        ),
        _ => (
            "400 Bad Request",
            "text/plain",
            "expected: GET /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn renders_own_and_kernel_series() {
        let m = Metrics::new();
        m.reconcile_passes.with_label_values(&["periodic"]).inc();
        m.ops_applied.with_label_values(&["add_service"]).inc_by(2);
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1:80".parse().unwrap(),
        };
        let table = KernelTable {
            info: IpvsInfo {
                version: 0x010201,
                conn_tab_size: 4096,
            },
            services: vec![KernelService {
                service: Service {
                    key,
                    settings: ServiceSettings::new("wlc", Family::V4),
                },
                stats: Stats {
                    conns: 7,
                    inbytes: 1000,
                    ..Stats::default()
                },
                dests: vec![KernelDest {
                    dest: Destination {
                        key: DestKey {
                            addr: "10.0.0.1".parse().unwrap(),
                            port: 80,
                        },
                        settings: DestSettings::new(Forward::Masq, 1),
                    },
                    active_conns: 3,
                    inactive_conns: 4,
                    persist_conns: 0,
                    stats: Stats {
                        conns: 5,
                        ..Stats::default()
                    },
                }],
            }],
        };
        let mut desired = DesiredTable::default();
        desired.services.insert(
            key,
            crate::desired::DesiredService {
                maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
                name: "web".into(),
                service: table.services[0].service.clone(),
                dests: Default::default(),
            },
        );
        m.table.update(&table, &desired);
        let text = m.render();
        assert!(
            text.contains(r#"director_reconcile_passes_total{trigger="periodic"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"director_reconcile_ops_applied_total{kind="add_service"} 2"#));
        assert!(text.contains("# TYPE director_ipvs_service_connections_total counter"));
        assert!(text.contains(r#"director_ipvs_service_connections_total{name="web",service="TCP 192.0.2.1:80"} 7"#), "{text}");
        assert!(text.contains(
            r#"director_ipvs_destination_active_connections{name="web",service="TCP 192.0.2.1:80",destination="10.0.0.1:80"} 3"#
        ));
        assert!(text.contains("director_reconcile_duration_seconds_bucket"));
        // The whole scrape, as Prometheus will read it.
        promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn ctsync_series_follow_the_driver_status() {
        use crate::ctsync_host::driver::{DriverStats, SyncStatus};
        use ::ctsync::session::{LinkState, Status};
        let m = Metrics::new();
        assert!(!m.render().contains("director_ctsync_"));
        m.ctsync.update(CtSyncView::Down);
        let text = m.render();
        let exp = promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(exp.value("director_ctsync_up", &[]), Some(0.0));
        let mut stats = ::ctsync::Stats {
            entries: 42,
            events_new: 5,
            created: 7,
            bytes_sent: 1000,
            rejected_auth: 2,
            bulk_received: 1,
            ..::ctsync::Stats::default()
        };
        stats.lag.record(3);
        stats.lag.record(3);
        stats.lag.record(100);
        m.ctsync.update(CtSyncView::Running(Box::new(SyncStatus {
            local: "10.1.0.1:3780".parse().unwrap(),
            peer: "10.1.0.2:3780".parse().unwrap(),
            dials: true,
            connected_to: None,
            session: Status {
                node_id: "lb-01".into(),
                role: ::ctsync::Role::Master,
                link: LinkState::Established,
                peer: None,
                in_sync: true,
                bulk_out: None,
                bulk_in: None,
                stats,
            },
            driver: DriverStats {
                refused_connections: 3,
                ..DriverStats::default()
            },
        })));
        let text = m.render();
        let exp = promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(exp.value("director_ctsync_up", &[]), Some(1.0));
        assert_eq!(exp.value("director_ctsync_entries", &[]), Some(42.0));
        assert_eq!(
            exp.value("director_ctsync_role", &[("role", "master")]),
            Some(1.0)
        );
        assert_eq!(
            exp.value("director_ctsync_role", &[("role", "backup")]),
            Some(0.0)
        );
        assert_eq!(
            exp.value("director_ctsync_link", &[("state", "established")]),
            Some(1.0)
        );
        assert_eq!(
            exp.value(
                "director_ctsync_changes_total",
                &[("origin", "local"), ("kind", "created")]
            ),
            Some(5.0)
        );
        assert_eq!(
            exp.value(
                "director_ctsync_changes_total",
                &[("origin", "peer"), ("kind", "created")]
            ),
            Some(7.0)
        );
        assert_eq!(
            exp.value("director_ctsync_bytes_total", &[("direction", "sent")]),
            Some(1000.0)
        );
        assert_eq!(
            exp.value("director_ctsync_rejected_total", &[("reason", "auth")]),
            Some(2.0)
        );
        assert_eq!(
            exp.value("director_ctsync_refused_connections_total", &[]),
            Some(3.0)
        );
        assert_eq!(
            exp.value(
                "director_ctsync_resyncs_total",
                &[("direction", "received"), ("scope", "full")]
            ),
            Some(1.0)
        );
        assert!(text.contains("# HELP director_ctsync_rejected_total Frames rejected"));
        assert!(text.contains("# TYPE director_ctsync_ack_lag_seconds histogram"));
        assert!(
            text.contains(r#"director_ctsync_ack_lag_seconds_bucket{le="0.004"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"director_ctsync_ack_lag_seconds_bucket{le="+Inf"} 3"#),
            "{text}"
        );
        m.ctsync.update(CtSyncView::Off);
        assert!(!m.render().contains("director_ctsync_"));
    }

    #[test]
    fn vrrp_series_join_the_scrape_and_leave_it_when_cleared() {
        let m = Metrics::new();
        assert!(!m.render().contains("director_vrrp_"));
        let mut snap = ::vrrp::driver::Snapshot::empty();
        snap.unknown_vrid = 4;
        m.vrrp.update(snap, std::time::SystemTime::UNIX_EPOCH);
        let text = m.render();
        let exp = promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            exp.value("director_vrrp_router_vrid_errors_total", &[]),
            Some(4.0)
        );
        // Beside the director's own families, not instead of them.
        assert!(exp.types.contains_key("director_reconcile_conflicts_total"));
        m.vrrp.clear();
        assert!(!m.render().contains("director_vrrp_"));
    }

    #[test]
    fn http_routes() {
        let m = Metrics::new();
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(route(b"\x00\xff garbage", &m).0, "400 Bad Request");
        assert_eq!(route(b"", &m).0, "400 Bad Request");
    }
}
