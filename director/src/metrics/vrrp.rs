//! VRRP series, rendered at scrape time from one [`Snapshot`] of the
//! driver (`VrrpHandle::status()`), like the IPVS counters come from one
//! dump: nothing is accumulated here, the machines own the numbers.
//!
//! Per instance (labels `vrrp_instance`, `interface`, `vrid`, `family`;
//! not `instance`, which Prometheus sets on every scraped series to name
//! the target and would rename ours to `exported_instance`):
//!
//! - `director_vrrp_state{state=...}` and `director_vrrp_wanted_state`:
//!   one series per state (`initialize`, `backup`, `master`, `fault`), 1
//!   for the current one, so `director_vrrp_state{state="master"} == 1`
//!   is the question keepalived's SNMP `vrrpInstanceState == 2` answered;
//! - base and effective priority, whether the VIPs are held, the learned
//!   Master_Adver_Interval, the time of the last transition;
//! - every RFC 6527 statistics counter (each family's HELP names its MIB
//!   object), the v2 authentication errors of RFC 2787, and director's own
//!   (adverts sent, master releases, split-brain heals).
//!
//! Router-wide: RFC 6527 vrrpv3RouterChecksumErrors, vrrpv3RouterVersionErrors
//! and vrrpv3RouterVrIdErrors (each the sum of the instances' shares; VRID
//! errors also count packets for VRIDs no instance runs), advert send
//! errors, the timer lateness histogram (timer starvation, the cause of
//! keepalived's flaps under load), and the counters' start time
//! (vrrpv3StatisticsRowDiscontinuityTime; they restart with the daemon).
//! vrrpv3StatisticsRefreshRate has no series: the counters are read live
//! at each scrape, so the scrape interval is the refresh rate.

use super::{family, label, sample};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use vrrp::driver::{InstanceView, Snapshot, LATENESS_BUCKETS_MS};
use vrrp::machine::{State, Stats};

/// The last snapshot and the wall-clock time its counters count from.
#[derive(Clone)]
pub struct VrrpCollector {
    last: Arc<RwLock<Option<(Snapshot, SystemTime)>>>,
    descs: Arc<Vec<Desc>>,
}

impl Default for VrrpCollector {
    fn default() -> Self {
        // The registry tells collectors apart by their descriptors; two
        // without any (like the IPVS table collector) would collide. One
        // is enough: the families themselves are built at collect time.
        let descs = Desc::new(
            "vrrp_state".into(),
            "VRRP instance state".into(),
            vec![
                "vrrp_instance".into(),
                "interface".into(),
                "vrid".into(),
                "family".into(),
                "state".into(),
            ],
            Default::default(),
        )
        .map(|d| vec![d])
        .unwrap_or_default();
        VrrpCollector {
            last: Arc::default(),
            descs: Arc::new(descs),
        }
    }
}

impl VrrpCollector {
    /// Records the snapshot to export; `started` is when the driver (and
    /// so every counter) started.
    pub fn update(&self, snap: Snapshot, started: SystemTime) {
        if let Ok(mut w) = self.last.write() {
            *w = Some((snap, started));
        }
    }

    /// No VRRP to export (not running, or it did not answer): the series
    /// disappear rather than freeze at old values.
    pub fn clear(&self) {
        if let Ok(mut w) = self.last.write() {
            *w = None;
        }
    }
}

impl Collector for VrrpCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked collector: the label sets depend on the config.
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.last.read() {
            Ok(guard) => match guard.as_ref() {
                Some((snap, started)) => families(snap, *started),
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}

const STATES: [State; 4] = [
    State::Initialize,
    State::Backup,
    State::Master,
    State::Fault,
];

/// (name without `director_`, help, getter)
type CounterField = (&'static str, &'static str, fn(&Stats) -> u64);
/// (name without `director_`, help, getter)
type GaugeField = (&'static str, &'static str, fn(&InstanceView) -> f64);
/// (`kind` label, getter)
type AuthField = (&'static str, fn(&Stats) -> u64);

const COUNTERS: &[CounterField] = &[
    (
        "vrrp_adverts_received_total",
        "Valid advertisements received (RFC 6527 vrrpv3StatisticsRcvdAdvertisements, RFC 2787 vrrpStatsAdvertiseRcvd).",
        |s| s.adverts_rx,
    ),
    (
        "vrrp_adverts_sent_total",
        "Advertisements sent, priority 0 included (no RFC 6527 object).",
        |s| s.adverts_tx,
    ),
    (
        "vrrp_master_transitions_total",
        "Transitions to Master (RFC 6527 vrrpv3StatisticsMasterTransitions, RFC 2787 vrrpStatsBecomeMaster).",
        |s| s.became_master,
    ),
    (
        "vrrp_master_releases_total",
        "Transitions out of Master, to Backup, Fault or Initialize (keepalived's release_master; no RFC 6527 object).",
        |s| s.released_master,
    ),
    (
        "vrrp_priority_zero_received_total",
        "Advertisements received with priority 0: the master is leaving (RFC 6527 vrrpv3StatisticsRcvdPriZeroPackets).",
        |s| s.priority_zero_rx,
    ),
    (
        "vrrp_priority_zero_sent_total",
        "Advertisements sent with priority 0 on leaving Master (RFC 6527 vrrpv3StatisticsSentPriZeroPackets).",
        |s| s.priority_zero_tx,
    ),
    (
        "vrrp_lower_priority_adverts_as_master_total",
        "Advertisements from a lower-priority master heard while Master: a split brain being healed (no RFC 6527 object).",
        |s| s.lower_priority_rx_as_master,
    ),
    (
        "vrrp_advert_interval_errors_total",
        "Advertisements whose interval differs from the configured one (RFC 6527 vrrpv3StatisticsAdvIntervalErrors).",
        |s| s.interval_errors,
    ),
    (
        "vrrp_ip_ttl_errors_total",
        "Packets whose IPv4 TTL or IPv6 Hop Limit was not 255 (RFC 6527 vrrpv3StatisticsIpTtlErrors).",
        |s| s.ttl_errors,
    ),
    (
        "vrrp_invalid_type_received_total",
        "Packets with an unknown VRRP packet type (RFC 6527 vrrpv3StatisticsRcvdInvalidTypePackets).",
        |s| s.invalid_type,
    ),
    (
        "vrrp_address_list_errors_total",
        "Advertisements whose address list differs from the configured VIPs (RFC 6527 vrrpv3StatisticsAddressListErrors).",
        |s| s.address_list_errors,
    ),
    (
        "vrrp_packet_length_errors_total",
        "Packets too short or inconsistent with their address count (RFC 6527 vrrpv3StatisticsPacketLengthErrors).",
        |s| s.packet_length_errors,
    ),
    (
        "vrrp_checksum_errors_total",
        "Packets for this instance with a bad VRRP checksum (its share of RFC 6527 vrrpv3RouterChecksumErrors).",
        |s| s.checksum_errors,
    ),
    (
        "vrrp_version_errors_total",
        "Packets for this instance of another or an unknown VRRP version (its share of RFC 6527 vrrpv3RouterVersionErrors).",
        |s| s.version_errors,
    ),
    (
        "vrrp_vrid_errors_total",
        "Packets that reached this instance for another VRID or address family (its share of RFC 6527 vrrpv3RouterVrIdErrors).",
        |s| s.vrid_errors,
    ),
];

fn family_name(i: &InstanceView) -> &'static str {
    if i.primary_address.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

fn labels(i: &InstanceView) -> Vec<LabelPair> {
    vec![
        label("vrrp_instance", &i.name),
        label("interface", &i.interface),
        label("vrid", &i.status.vrid.to_string()),
        label("family", family_name(i)),
    ]
}

fn with(mut base: Vec<LabelPair>, name: &str, value: &str) -> Vec<LabelPair> {
    base.push(label(name, value));
    base
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ms_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Every VRRP family for one snapshot (names without the registry's
/// `director_` prefix).
pub fn families(snap: &Snapshot, started: SystemTime) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let per_instance = |get: &dyn Fn(&InstanceView) -> Vec<Metric>| -> Vec<Metric> {
        snap.instances.iter().flat_map(get).collect()
    };
    let one_hot = |of: fn(&InstanceView) -> State| {
        per_instance(&|i| {
            STATES
                .iter()
                .map(|s| {
                    sample(
                        with(labels(i), "state", s.as_str()),
                        MetricType::GAUGE,
                        if of(i) == *s { 1.0 } else { 0.0 },
                    )
                })
                .collect()
        })
    };
    out.push(family(
        "vrrp_state".into(),
        "1 for the state the VRRP instance is in, 0 for the others (RFC 5798 6.4 Initialize/Backup/Master, plus Fault; keepalived's vrrpInstanceState).",
        MetricType::GAUGE,
        one_hot(|i| i.status.state),
    ));
    out.push(family(
        "vrrp_wanted_state".into(),
        "1 for the state the instance would be in without faults (keepalived's vrrpInstanceWantedState).",
        MetricType::GAUGE,
        one_hot(|i| i.status.wanted_state),
    ));
    let gauges: [GaugeField; 4] = [
        (
            "vrrp_base_priority",
            "Configured priority (RFC 5798 5.2.4 Priority).",
            |i| f64::from(i.status.base_priority),
        ),
        (
            "vrrp_effective_priority",
            "Priority advertised now: the configured one moved by tracked interfaces and scripts.",
            |i| f64::from(i.status.effective_priority),
        ),
        (
            "vrrp_vips_held",
            "1 while this box has the instance's VIPs on its interface.",
            |i| if i.status.vips_set { 1.0 } else { 0.0 },
        ),
        (
            "vrrp_master_advert_interval_seconds",
            "Master_Adver_Interval: the master's advertisement interval as learned from its adverts (RFC 5798 6.1; v2: the configured one).",
            |i| f64::from(i.status.master_adver_interval_centis) / 100.0,
        ),
    ];
    for (name, help, get) in gauges {
        out.push(family(
            name.into(),
            help,
            MetricType::GAUGE,
            per_instance(&|i| vec![sample(labels(i), MetricType::GAUGE, get(i))]),
        ));
    }
    out.push(family(
        "vrrp_last_transition_timestamp_seconds".into(),
        "Unix time of the instance's last state change (its reason: directorctl vrrp).",
        MetricType::GAUGE,
        per_instance(&|i| {
            i.status
                .last_transition
                .iter()
                .map(|t| {
                    // The driver's clock runs from `started`.
                    let at = started
                        .checked_add(std::time::Duration::from_millis(t.at.as_millis()))
                        .unwrap_or(started);
                    sample(labels(i), MetricType::GAUGE, unix_seconds(at))
                })
                .collect()
        }),
    ));
    for (name, help, get) in COUNTERS {
        out.push(family(
            (*name).into(),
            help,
            MetricType::COUNTER,
            per_instance(&|i| {
                vec![sample(
                    labels(i),
                    MetricType::COUNTER,
                    get(&i.status.stats) as f64,
                )]
            }),
        ));
    }
    let auth: [AuthField; 3] = [
        ("type_mismatch", |s| s.auth_type_mismatch),
        ("invalid_type", |s| s.invalid_auth_type),
        ("failure", |s| s.auth_failures),
    ];
    out.push(family(
        "vrrp_auth_errors_total".into(),
        "VRRPv2 authentication errors by kind (RFC 2787 vrrpStatsAuthTypeMismatch, vrrpStatsInvalidAuthType, vrrpStatsAuthFailures).",
        MetricType::COUNTER,
        per_instance(&|i| {
            auth.iter()
                .map(|(kind, get)| {
                    sample(
                        with(labels(i), "kind", kind),
                        MetricType::COUNTER,
                        get(&i.status.stats) as f64,
                    )
                })
                .collect()
        }),
    ));

    // Router-wide.
    let sum = |get: fn(&Stats) -> u64| -> u64 {
        snap.instances
            .iter()
            .map(|i| get(&i.status.stats))
            .fold(0, u64::saturating_add)
    };
    let globals = [
        (
            "vrrp_router_checksum_errors_total",
            "VRRP packets received with a bad checksum (RFC 6527 vrrpv3RouterChecksumErrors).",
            MetricType::COUNTER,
            sum(|s| s.checksum_errors) as f64,
        ),
        (
            "vrrp_router_version_errors_total",
            "VRRP packets received of an unknown or unconfigured version (RFC 6527 vrrpv3RouterVersionErrors).",
            MetricType::COUNTER,
            sum(|s| s.version_errors) as f64,
        ),
        (
            "vrrp_router_vrid_errors_total",
            "VRRP packets received for a VRID no instance runs on that interface and family: typically a neighbouring cluster using the same segment (RFC 6527 vrrpv3RouterVrIdErrors).",
            MetricType::COUNTER,
            sum(|s| s.vrid_errors).saturating_add(snap.unknown_vrid) as f64,
        ),
        (
            "vrrp_advert_send_errors_total",
            "Advertisements the socket refused (full buffer, link down): each one a missed heartbeat for the backups.",
            MetricType::COUNTER,
            snap.advert_send_errors as f64,
        ),
        (
            "vrrp_statistics_discontinuity_timestamp_seconds",
            "Unix time the VRRP counters count from: they restart with the daemon (RFC 6527 vrrpv3StatisticsRowDiscontinuityTime).",
            MetricType::GAUGE,
            unix_seconds(started),
        ),
        (
            "vrrp_timer_lateness_max_seconds",
            "Longest a VRRP timer fired after its deadline since the start.",
            MetricType::GAUGE,
            ms_to_seconds(snap.lateness.max_ms),
        ),
    ];
    for (name, help, kind, value) in globals {
        out.push(family(
            name.into(),
            help,
            kind,
            vec![sample(Vec::new(), kind, value)],
        ));
    }
    out.push(family(
        "vrrp_timer_lateness_seconds".into(),
        "How long after its deadline each VRRP timer was handled: timer starvation, which makes a backup miss adverts and flap.",
        MetricType::HISTOGRAM,
        vec![lateness_histogram(snap)],
    ));
    out
}

/// `Lateness` as a Prometheus histogram: its buckets are per-bucket counts
/// (the last one the overflow), Prometheus' are cumulative with `le` in
/// seconds and `+Inf` equal to `_count`.
fn lateness_histogram(snap: &Snapshot) -> Metric {
    let l = &snap.lateness;
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(LATENESS_BUCKETS_MS.len());
    for (i, bound) in LATENESS_BUCKETS_MS.iter().enumerate() {
        // A snapshot taken before the first timer has no buckets yet.
        cumulative = cumulative.saturating_add(l.buckets.get(i).copied().unwrap_or(0));
        let mut b = Bucket::default();
        b.set_upper_bound(ms_to_seconds(*bound));
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let total = l.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b));
    // `_count` (and the `+Inf` bucket the encoder adds from it) never
    // below a finite bucket, whatever the snapshot says.
    let count = l.fired.max(total);
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(count);
    h.set_sample_sum(ms_to_seconds(l.sum_ms));
    let mut m = Metric::default();
    m.set_histogram(h);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::promtext;
    use prometheus::{Encoder, Registry, TextEncoder};
    use std::time::Duration;
    use vrrp::driver::Lateness;
    use vrrp::machine::{Heard, Reason, Status, Transition};
    use vrrp::Time;

    /// 2023-11-14T22:13:20Z
    fn started() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn instance(name: &str, vrid: u8, primary: &str, state: State, wanted: State) -> InstanceView {
        InstanceView {
            name: name.into(),
            interface: "eth0".into(),
            group: None,
            vips: vec!["192.0.2.100".parse().unwrap()],
            primary_address: primary.parse().unwrap(),
            advert_interval_ms: 1000,
            preempt: true,
            status: Status {
                vrid,
                version: 3,
                state,
                wanted_state: wanted,
                base_priority: 150,
                effective_priority: 90,
                master: None,
                last_advert: None,
                master_adver_interval_centis: 100,
                vips_set: state == State::Master,
                faults: Vec::new(),
                last_transition: None,
                stats: Stats::default(),
            },
        }
    }

    fn snapshot() -> Snapshot {
        let mut master = instance("VI_1", 51, "10.0.0.1", State::Master, State::Master);
        master.status.last_transition = Some(Transition {
            old: State::Backup,
            new: State::Master,
            reason: Reason::MasterDownTimer,
            at: Time::from_millis(2500),
        });
        master.status.last_advert = Some(Heard {
            address: "10.0.0.2".parse().unwrap(),
            priority: 100,
            interval_centis: 100,
            at: Time::from_millis(2000),
        });
        master.status.stats = Stats {
            adverts_rx: 12,
            adverts_tx: 340,
            became_master: 1,
            released_master: 0,
            priority_zero_rx: 1,
            priority_zero_tx: 0,
            lower_priority_rx_as_master: 2,
            checksum_errors: 3,
            ttl_errors: 4,
            version_errors: 5,
            vrid_errors: 6,
            interval_errors: 7,
            address_list_errors: 8,
            auth_errors: 0,
            auth_type_mismatch: 0,
            invalid_auth_type: 0,
            auth_failures: 0,
            packet_length_errors: 9,
            invalid_type: 10,
        };
        let mut v6 = instance("VI_6", 52, "fe80::1", State::Fault, State::Backup);
        v6.interface = "eth\"1".into();
        v6.status.version = 2;
        v6.status.stats.checksum_errors = 100;
        v6.status.stats.auth_errors = 3;
        v6.status.stats.auth_type_mismatch = 1;
        v6.status.stats.auth_failures = 2;
        Snapshot {
            now: Time::from_millis(60_000),
            instances: vec![master, v6],
            lateness: Lateness {
                fired: 6,
                max_ms: 700,
                last_ms: 0,
                // 0 ms x2, 2 ms, 7 ms, 150 ms, 700 ms (overflow).
                buckets: vec![2, 1, 0, 1, 0, 0, 0, 1, 0, 1],
                sum_ms: 859,
            },
            unknown_vrid: 1000,
            advert_send_errors: 2,
            last_event_seq: 17,
        }
    }

    fn render(c: &VrrpCollector) -> String {
        let registry = Registry::new_custom(Some("director".into()), None).unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_exactly_the_golden_exposition() {
        let c = VrrpCollector::default();
        c.update(snapshot(), started());
        let text = render(&c);
        let golden = include_str!("testdata/vrrp.prom");
        if text != golden {
            let first = text
                .lines()
                .zip(golden.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "differs from testdata/vrrp.prom at line {}:\n{}\n--- whole output ---\n{text}",
                first + 1,
                text.lines().nth(first).unwrap_or("<end>")
            );
        }
    }

    #[test]
    fn the_exposition_parses_and_says_what_the_snapshot_says() {
        let c = VrrpCollector::default();
        c.update(snapshot(), started());
        let exp = promtext::parse(&render(&c)).unwrap_or_else(|e| panic!("{e}"));
        let vi1 = [
            ("vrrp_instance", "VI_1"),
            ("interface", "eth0"),
            ("vrid", "51"),
            ("family", "ipv4"),
        ];
        let at = |extra: (&'static str, &'static str)| {
            let mut l = vi1.to_vec();
            l.push(extra);
            l
        };
        // One-hot state: master 1, every other state 0.
        assert_eq!(
            exp.value("director_vrrp_state", &at(("state", "master"))),
            Some(1.0)
        );
        for s in ["initialize", "backup", "fault"] {
            assert_eq!(
                exp.value("director_vrrp_state", &at(("state", s))),
                Some(0.0)
            );
        }
        let vi6_fault = [
            ("vrrp_instance", "VI_6"),
            ("interface", "eth\"1"),
            ("vrid", "52"),
            ("family", "ipv6"),
            ("state", "fault"),
        ];
        assert_eq!(exp.value("director_vrrp_state", &vi6_fault), Some(1.0));
        assert_eq!(
            exp.value("director_vrrp_adverts_received_total", &vi1),
            Some(12.0)
        );
        assert_eq!(
            exp.value("director_vrrp_adverts_sent_total", &vi1),
            Some(340.0)
        );
        assert_eq!(
            exp.value("director_vrrp_effective_priority", &vi1),
            Some(90.0)
        );
        assert_eq!(exp.value("director_vrrp_base_priority", &vi1), Some(150.0));
        assert_eq!(
            exp.value("director_vrrp_last_transition_timestamp_seconds", &vi1),
            Some(1_700_000_002.5)
        );
        // Router-wide: sums of the instances' shares, plus foreign VRIDs.
        assert_eq!(
            exp.value("director_vrrp_router_checksum_errors_total", &[]),
            Some(103.0)
        );
        assert_eq!(
            exp.value("director_vrrp_router_vrid_errors_total", &[]),
            Some(1006.0)
        );
        // Lateness: cumulative, in seconds, +Inf = _count.
        let bucket = |le| exp.value("director_vrrp_timer_lateness_seconds_bucket", &[("le", le)]);
        assert_eq!(bucket("0.001"), Some(2.0));
        assert_eq!(bucket("0.002"), Some(3.0));
        assert_eq!(bucket("0.01"), Some(4.0));
        assert_eq!(bucket("0.2"), Some(5.0));
        assert_eq!(bucket("0.5"), Some(5.0));
        assert_eq!(bucket("+Inf"), Some(6.0));
        assert_eq!(
            exp.value("director_vrrp_timer_lateness_seconds_sum", &[]),
            Some(0.859)
        );
        assert_eq!(
            exp.value("director_vrrp_timer_lateness_seconds_count", &[]),
            Some(6.0)
        );
        assert_eq!(
            exp.value(
                "director_vrrp_statistics_discontinuity_timestamp_seconds",
                &[]
            ),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn a_fresh_or_odd_snapshot_still_renders_a_valid_exposition() {
        // Before the first timer: no buckets at all.
        let c = VrrpCollector::default();
        let mut snap = snapshot();
        snap.lateness = Lateness::default();
        c.update(snap, started());
        let exp = promtext::parse(&render(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            exp.value(
                "director_vrrp_timer_lateness_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(0.0)
        );
        // A lateness whose counts disagree (more buckets than bounds,
        // `fired` behind them) still gives cumulative buckets <= _count.
        let mut snap = snapshot();
        snap.lateness.buckets = vec![1; 20];
        snap.lateness.fired = 3;
        c.update(snap, started());
        let exp = promtext::parse(&render(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            exp.value("director_vrrp_timer_lateness_seconds_count", &[]),
            Some(20.0)
        );
        // No instance: only the router-wide series.
        let mut snap = snapshot();
        snap.instances.clear();
        c.update(snap, started());
        let exp = promtext::parse(&render(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!exp.types.contains_key("director_vrrp_state"));
        assert!(exp
            .types
            .contains_key("director_vrrp_router_vrid_errors_total"));
        // Cleared: nothing.
        c.clear();
        assert_eq!(render(&c), "");
    }
}
