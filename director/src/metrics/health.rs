//! Health-check series. Labels name config objects the way the VRRP series
//! do (`virtual_server`, like `vrrp_instance`): never `instance`, which
//! Prometheus sets on every scraped series.
//!
//! - `director_health_check_results_total{kind,outcome}`: every probe, by
//!   check kind (`tcp`, `http`, `https`, `script`) and outcome (`ok`, or
//!   the failure kind: `timeout`, `refused`, `io_error`, `tls_error`,
//!   `bad_response`, `bad_status`, `body_mismatch`, `script_failed`,
//!   `script_error`);
//! - `director_health_check_latency_seconds{kind}`: probe duration;
//! - `director_health_checks`: distinct checks running (deduplicated);
//! - `director_health_checks_stale`: checks that completed no round for
//!   too long (see `crate::health::is_stale`), `..._restarts_total{kind}`
//!   the watchdog's restarts;
//! - per virtual server: `director_real_servers_up`, `_total`,
//!   `director_virtual_server_quorum_met`, `_sorry_active` (0/1), and
//!   `director_dead_server_resets_total`: failed real servers whose
//!   established connections were cleaned up.

use super::must;
use crate::desired::PoolStatus;
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone)]
pub struct HealthMetrics {
    pub results: IntCounterVec,
    pub latency: HistogramVec,
    pub restarts: IntCounterVec,
    pub checks: IntGauge,
    pub stale: IntGauge,
    pub servers_up: IntGaugeVec,
    pub servers_total: IntGaugeVec,
    pub quorum_met: IntGaugeVec,
    pub sorry_active: IntGaugeVec,
    pub resets: IntCounterVec,
}

impl HealthMetrics {
    pub fn new() -> HealthMetrics {
        let per_vs = |name: &str, help: &str| {
            must(IntGaugeVec::new(Opts::new(name, help), &["virtual_server"]))
        };
        HealthMetrics {
            results: must(IntCounterVec::new(
                Opts::new(
                    "health_check_results_total",
                    "Health probes completed, by check kind and outcome (ok or the failure kind).",
                ),
                &["kind", "outcome"],
            )),
            latency: must(HistogramVec::new(
                HistogramOpts::new(
                    "health_check_latency_seconds",
                    "Duration of one health probe (connect to verdict), by check kind.",
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()),
                &["kind"],
            )),
            restarts: must(IntCounterVec::new(
                Opts::new(
                    "health_check_restarts_total",
                    "Checks restarted by the watchdog after completing no round for 3 intervals, by kind.",
                ),
                &["kind"],
            )),
            checks: must(IntGauge::new(
                "health_checks",
                "Distinct health checks running (identical checks of several virtual servers run once).",
            )),
            stale: must(IntGauge::new(
                "health_checks_stale",
                "Health checks that completed no round for too long (restarted, or their runtime is wedged).",
            )),
            servers_up: per_vs(
                "real_servers_up",
                "Configured real servers whose health checks pass.",
            ),
            servers_total: per_vs("real_servers_total", "Configured real servers."),
            quorum_met: per_vs(
                "virtual_server_quorum_met",
                "1 while at least quorum real servers are up and taking connections.",
            ),
            sorry_active: per_vs(
                "virtual_server_sorry_active",
                "1 while new connections go to the sorry server (quorum not met).",
            ),
            resets: must(IntCounterVec::new(
                Opts::new(
                    "dead_server_resets_total",
                    "Failed real servers whose established connections were cleaned up (on_down_connections = reset).",
                ),
                &["virtual_server"],
            )),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.results.clone()),
            Box::new(self.latency.clone()),
            Box::new(self.restarts.clone()),
            Box::new(self.checks.clone()),
            Box::new(self.stale.clone()),
            Box::new(self.servers_up.clone()),
            Box::new(self.servers_total.clone()),
            Box::new(self.quorum_met.clone()),
            Box::new(self.sorry_active.clone()),
            Box::new(self.resets.clone()),
        ]
    }

    /// One probe result.
    pub fn probed(&self, kind: &str, outcome: &str, latency: Duration) {
        self.results.with_label_values(&[kind, outcome]).inc();
        self.latency
            .with_label_values(&[kind])
            .observe(latency.as_secs_f64());
    }

    /// The pools as of now: every virtual server's series replaced (one
    /// a reload removed disappears).
    pub fn pools(&self, pools: &BTreeMap<String, PoolStatus>) {
        for g in [
            &self.servers_up,
            &self.servers_total,
            &self.quorum_met,
            &self.sorry_active,
        ] {
            g.reset();
        }
        for (name, p) in pools {
            let l = [name.as_str()];
            self.servers_up
                .with_label_values(&l)
                .set(i64::try_from(p.up).unwrap_or(i64::MAX));
            self.servers_total
                .with_label_values(&l)
                .set(i64::try_from(p.total).unwrap_or(i64::MAX));
            self.quorum_met
                .with_label_values(&l)
                .set(i64::from(p.quorum_met));
            self.sorry_active
                .with_label_values(&l)
                .set(i64::from(p.sorry_active));
        }
    }
}

impl Default for HealthMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{promtext, Metrics};
    use super::*;

    #[test]
    fn health_series_render_exactly() {
        let m = Metrics::new();
        let h = &m.health;
        h.probed("tcp", "ok", Duration::from_micros(300));
        h.probed("tcp", "ok", Duration::from_micros(700));
        h.probed("http", "timeout", Duration::from_millis(1000));
        h.restarts.with_label_values(&["http"]).inc();
        h.checks.set(3);
        h.stale.set(1);
        h.resets.with_label_values(&["web"]).inc();
        let mut pools = BTreeMap::new();
        pools.insert(
            "web".to_string(),
            PoolStatus {
                up: 2,
                total: 3,
                serving: 2,
                quorum: 1,
                quorum_met: true,
                sorry_active: false,
            },
        );
        pools.insert(
            "dns".to_string(),
            PoolStatus {
                up: 0,
                total: 2,
                serving: 0,
                quorum: 1,
                quorum_met: false,
                sorry_active: true,
            },
        );
        h.pools(&pools);
        let text = m.render();
        let want = "\
# HELP director_real_servers_up Configured real servers whose health checks pass.
# TYPE director_real_servers_up gauge
director_real_servers_up{virtual_server=\"dns\"} 0
director_real_servers_up{virtual_server=\"web\"} 2
";
        assert!(text.contains(want), "{text}");
        for line in [
            "director_real_servers_total{virtual_server=\"web\"} 3",
            "director_virtual_server_quorum_met{virtual_server=\"dns\"} 0",
            "director_virtual_server_quorum_met{virtual_server=\"web\"} 1",
            "director_virtual_server_sorry_active{virtual_server=\"dns\"} 1",
            "director_health_check_results_total{kind=\"tcp\",outcome=\"ok\"} 2",
            "director_health_check_results_total{kind=\"http\",outcome=\"timeout\"} 1",
            "director_health_check_latency_seconds_bucket{kind=\"tcp\",le=\"0.0005\"} 1",
            "director_health_check_latency_seconds_bucket{kind=\"tcp\",le=\"0.001\"} 2",
            "director_health_check_latency_seconds_count{kind=\"http\"} 1",
            "director_health_check_restarts_total{kind=\"http\"} 1",
            "director_health_checks 3",
            "director_health_checks_stale 1",
            "director_dead_server_resets_total{virtual_server=\"web\"} 1",
            "# TYPE director_health_check_latency_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let exp = promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            exp.value("director_real_servers_up", &[("virtual_server", "web")]),
            Some(2.0)
        );
        // A reload that drops a virtual server drops its series.
        pools.remove("dns");
        h.pools(&pools);
        let text = m.render();
        assert!(!text.contains("virtual_server=\"dns\""), "{text}");
        promtext::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
