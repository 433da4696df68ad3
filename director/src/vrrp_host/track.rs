//! Tracking (keepalived's `track_interface` and `track_script`) as a pure
//! state machine: link and script results in, instance inputs out.
//!
//! Per instance, each tracked object has a weight:
//! - 0: the instance goes to Fault while the object is down / failing
//!   (`Input::Fault { source }`, cleared with `FaultCleared`);
//! - w > 0: priority + w while the object is up / succeeding;
//! - w < 0: priority + w (lower) while it is down / failing.
//!
//! The weighted part is summed into one `SetPriorityDelta` (the machine
//! clamps the result to 1..=254; an owner stays 255). The instance's own
//! interface is not a tracked object: its state goes in as
//! `InterfaceDown`/`InterfaceUp` (RFC 5798 has no word for it; keepalived
//! faults the instance).

use crate::config::Config;
use std::collections::{BTreeMap, BTreeSet};
use vrrp::machine::Input;

#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    own_interface: String,
    interfaces: Vec<(String, i32)>,
    scripts: Vec<(String, i32)>,
    delta: i32,
    faults: BTreeSet<String>,
    own_up: Option<bool>,
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    instances: Vec<Tracked>,
    links: BTreeMap<String, bool>,
    scripts: BTreeMap<String, bool>,
}

impl Tracker {
    pub fn new(config: &Config) -> Tracker {
        Tracker {
            instances: config
                .vrrp_instances
                .iter()
                .map(|i| Tracked {
                    name: i.name.clone(),
                    own_interface: i.interface.clone(),
                    interfaces: i
                        .track_interfaces
                        .iter()
                        .map(|t| (t.name.clone(), t.weight))
                        .collect(),
                    scripts: i
                        .track_scripts
                        .iter()
                        .map(|t| (t.name.clone(), t.weight))
                        .collect(),
                    delta: 0,
                    faults: BTreeSet::new(),
                    own_up: None,
                })
                .collect(),
            links: BTreeMap::new(),
            scripts: BTreeMap::new(),
        }
    }

    /// Interfaces and scripts anything tracks (what to watch and run).
    pub fn scripts(&self) -> BTreeSet<String> {
        self.instances
            .iter()
            .flat_map(|t| t.scripts.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    /// A link's state (from a snapshot or an event).
    pub fn link(&mut self, name: &str, up: bool) -> Vec<(String, Input)> {
        self.links.insert(name.to_string(), up);
        self.recompute()
    }

    /// A script's state after its rise/fall hysteresis.
    pub fn script(&mut self, name: &str, ok: bool) -> Vec<(String, Input)> {
        self.scripts.insert(name.to_string(), ok);
        self.recompute()
    }

    fn recompute(&mut self) -> Vec<(String, Input)> {
        let mut out = Vec::new();
        for t in &mut self.instances {
            if let Some(&up) = self.links.get(&t.own_interface) {
                if t.own_up != Some(up) {
                    // The first report only matters when it says down.
                    if t.own_up.is_some() || !up {
                        let input = if up {
                            Input::InterfaceUp
                        } else {
                            Input::InterfaceDown
                        };
                        out.push((t.name.clone(), input));
                    }
                    t.own_up = Some(up);
                }
            }
            let mut delta = 0i32;
            let mut faults = BTreeSet::new();
            let objects = t
                .interfaces
                .iter()
                .map(|(n, w)| {
                    (
                        format!("track_interface {n}"),
                        *w,
                        self.links.get(n).copied(),
                    )
                })
                .chain(t.scripts.iter().map(|(n, w)| {
                    (
                        format!("track_script {n}"),
                        *w,
                        self.scripts.get(n).copied(),
                    )
                }));
            for (source, weight, state) in objects {
                // Unknown yet (no report): neither fault nor weight.
                let Some(up) = state else { continue };
                match (weight, up) {
                    (0, false) => {
                        faults.insert(source);
                    }
                    (w, true) if w > 0 => delta += w,
                    (w, false) if w < 0 => delta += w,
                    _ => {}
                }
            }
            for gone in t.faults.difference(&faults) {
                out.push((
                    t.name.clone(),
                    Input::FaultCleared {
                        source: gone.clone(),
                    },
                ));
            }
            for new in faults.difference(&t.faults) {
                out.push((
                    t.name.clone(),
                    Input::Fault {
                        source: new.clone(),
                    },
                ));
            }
            t.faults = faults;
            if delta != t.delta {
                t.delta = delta;
                out.push((t.name.clone(), Input::SetPriorityDelta { delta }));
            }
        }
        out
    }
}

/// Consecutive-result hysteresis of one script (`rise`/`fall`).
#[derive(Debug, Clone)]
pub struct ScriptState {
    rise: u32,
    fall: u32,
    ok: Option<bool>,
    run: u32,
    run_ok: bool,
}

impl ScriptState {
    pub fn new(rise: u32, fall: u32) -> ScriptState {
        ScriptState {
            rise: rise.max(1),
            fall: fall.max(1),
            ok: None,
            run: 0,
            run_ok: true,
        }
    }

    /// One result; `Some(state)` when the script's state is (re)decided.
    /// The first result decides at once (keepalived starts scripts in an
    /// undetermined state and takes the first result).
    pub fn result(&mut self, success: bool) -> Option<bool> {
        if success == self.run_ok {
            self.run = self.run.saturating_add(1);
        } else {
            self.run_ok = success;
            self.run = 1;
        }
        let need = if success { self.rise } else { self.fall };
        let decided = match self.ok {
            None => Some(success),
            Some(cur) if cur != success && self.run >= need => Some(success),
            _ => None,
        };
        if decided.is_some() {
            self.ok = decided;
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: &str) -> Config {
        let text = format!("[global]\nrouter_id = \"t\"\n{body}");
        crate::config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    const BODY: &str = r#"
[[vrrp_script]]
name = "chk"
script = ["/bin/true"]
weight = -20

[[vrrp_script]]
name = "must"
script = ["/bin/true"]

[[vrrp_instance]]
name = "VI_1"
interface = "eth1"
vrid = 51
priority = 150
virtual_ipaddresses = ["192.0.2.100/32"]
track_interfaces = [{ name = "eth0", weight = -60 }, { name = "eth2" }, { name = "eth3", weight = 10 }]
track_scripts = [{ name = "chk" }, { name = "must" }]
"#;

    #[test]
    fn weights_sum_and_zero_weights_fault() {
        let mut t = Tracker::new(&config(BODY));
        assert!(
            t.link("eth1", true).is_empty(),
            "own link up at start: nothing"
        );
        assert_eq!(
            t.link("eth0", false),
            vec![("VI_1".into(), Input::SetPriorityDelta { delta: -60 })]
        );
        assert_eq!(
            t.link("eth3", true),
            vec![("VI_1".into(), Input::SetPriorityDelta { delta: -50 })]
        );
        assert_eq!(
            t.link("eth2", false),
            vec![(
                "VI_1".into(),
                Input::Fault {
                    source: "track_interface eth2".into()
                }
            )]
        );
        assert_eq!(
            t.script("chk", false),
            vec![("VI_1".into(), Input::SetPriorityDelta { delta: -70 })]
        );
        assert_eq!(
            t.link("eth2", true),
            vec![(
                "VI_1".into(),
                Input::FaultCleared {
                    source: "track_interface eth2".into()
                }
            )]
        );
        assert_eq!(
            t.link("eth1", false),
            vec![("VI_1".into(), Input::InterfaceDown)]
        );
        assert_eq!(
            t.link("eth1", true),
            vec![("VI_1".into(), Input::InterfaceUp)]
        );
        // Repeated reports change nothing.
        assert!(t.link("eth1", true).is_empty());
        assert!(t.script("chk", false).is_empty());
        assert_eq!(
            t.scripts().into_iter().collect::<Vec<_>>(),
            vec!["chk".to_string(), "must".to_string()]
        );
    }

    #[test]
    fn script_hysteresis_flips_only_after_rise_or_fall_in_a_row() {
        let mut s = ScriptState::new(2, 3);
        assert_eq!(s.result(true), Some(true), "first result decides");
        assert_eq!(s.result(false), None);
        assert_eq!(s.result(false), None);
        assert_eq!(s.result(true), None, "a success resets the failure run");
        assert_eq!(s.result(false), None);
        assert_eq!(s.result(false), None);
        assert_eq!(s.result(false), Some(false));
        assert_eq!(s.result(false), None);
        assert_eq!(s.result(true), None);
        assert_eq!(s.result(true), Some(true));
    }
}
