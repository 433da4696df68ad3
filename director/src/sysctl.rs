//! The kernel settings the dataplanes depend on, set and reported.
//!
//! keepalived leaves these to the operator (the runbook's "check
//! `net.ipv4.vs.conntrack`" step); the director sets them at every pass
//! (level-triggered, like the tables) and `directorctl status --json` shows
//! what it wanted, what the kernel holds, and any write that failed.
//!
//! - `net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding`: NAT forwarding
//!   routes client traffic through the director (both dataplanes).
//! - `net.ipv4.vs.conntrack` (IPVS): keep conntrack entries for IPVS
//!   connections, so nftables SNAT (`[[snat]]`) and stateful forward rules see
//!   them (Documentation/networking/ipvs-sysctl.rst, "conntrack").
//! - `net.ipv4.vs.expire_nodest_conn` (IPVS): drop a connection's entry when
//!   its real server is removed, so clients reconnect elsewhere at once
//!   instead of timing out.
//! - `net.ipv4.vs.expire_quiescent_template` (IPVS): persistence templates
//!   to a weight-0 (drained) server expire, so a persistent client's next
//!   connection goes to a live server; the nftables dataplane does the same
//!   by deleting the drained server's affinity entries.
//! - `net.netfilter.nf_conntrack_tcp_loose` (nftables): pick up connections
//!   mid-stream, which is what lets a connection that moves to the other
//!   director (failover, path churn) be re-tracked and sent to the same real
//!   server by Maglev.
//!
//! All of these are per network namespace (`/proc/sys/net` follows the
//! reading process's netns).

use crate::config::Snat;
use crate::dataplane::DataplaneKind;
use crate::desired::DesiredTable;
use crate::model::Family;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One setting the director wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Dotted name, as `sysctl` takes it.
    pub name: &'static str,
    pub value: &'static str,
}

/// What status reports for one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlState {
    pub name: String,
    pub want: String,
    /// What the kernel holds after the pass; `None` if it could not be read
    /// (the key does not exist: module not loaded).
    pub have: Option<String>,
    pub error: Option<String>,
}

/// Reads and writes `/proc/sys` (a trait so tests never touch the host).
pub trait Sysctls: Send {
    fn read(&mut self, name: &str) -> std::io::Result<String>;
    fn write(&mut self, name: &str, value: &str) -> std::io::Result<()>;
}

/// The real `/proc/sys`.
#[derive(Debug, Clone)]
pub struct ProcSys {
    root: PathBuf,
}

impl Default for ProcSys {
    fn default() -> Self {
        ProcSys {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl ProcSys {
    /// A different root (tests point it at a temporary directory).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        ProcSys { root: root.into() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name.replace('.', "/"))
    }
}

impl Sysctls for ProcSys {
    fn read(&mut self, name: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.path(name)).map(|s| s.trim().to_string())
    }
    fn write(&mut self, name: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.path(name), format!("{value}\n"))
    }
}

/// Settings that are never written: for daemons run in tests on a shared
/// host, or by operators who manage sysctls elsewhere. Reads still work.
#[derive(Debug, Clone, Default)]
pub struct ReadOnly<S>(pub S);

impl<S: Sysctls> Sysctls for ReadOnly<S> {
    fn read(&mut self, name: &str) -> std::io::Result<String> {
        self.0.read(name)
    }
    fn write(&mut self, name: &str, _value: &str) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{name}: sysctl writes are disabled for this daemon"),
        ))
    }
}

/// What a dataplane carrying `desired` and `snat` depends on.
pub fn wanted(kind: DataplaneKind, desired: &DesiredTable, snat: &[Snat]) -> Vec<Wanted> {
    let has_v6 = desired.services.keys().any(|k| k.family() == Family::V6)
        || snat.iter().any(|s| s.match_vip.is_ipv6());
    let has_v4 = desired.services.keys().any(|k| k.family() == Family::V4)
        || snat.iter().any(|s| s.match_vip.is_ipv4());
    let mut v = Vec::new();
    if has_v4 {
        v.push(Wanted {
            name: "net.ipv4.ip_forward",
            value: "1",
        });
    }
    if has_v6 {
        v.push(Wanted {
            name: "net.ipv6.conf.all.forwarding",
            value: "1",
        });
    }
    if desired.services.is_empty() && snat.is_empty() {
        return v;
    }
    match kind {
        DataplaneKind::Ipvs => {
            v.push(Wanted {
                name: "net.ipv4.vs.conntrack",
                value: "1",
            });
            v.push(Wanted {
                name: "net.ipv4.vs.expire_nodest_conn",
                value: "1",
            });
            v.push(Wanted {
                name: "net.ipv4.vs.expire_quiescent_template",
                value: "1",
            });
        }
        DataplaneKind::Nftables => v.push(Wanted {
            name: "net.netfilter.nf_conntrack_tcp_loose",
            value: "1",
        }),
    }
    v
}

/// Brings every wanted setting to its value; returns the state of each and
/// the names it changed. Never fails as a whole: one unwritable key is
/// reported and the others are still set.
pub fn ensure(sys: &mut dyn Sysctls, wanted: &[Wanted]) -> (Vec<SysctlState>, Vec<String>) {
    let mut states = Vec::with_capacity(wanted.len());
    let mut changed = Vec::new();
    for w in wanted {
        let mut state = SysctlState {
            name: w.name.to_string(),
            want: w.value.to_string(),
            have: None,
            error: None,
        };
        match sys.read(w.name) {
            Ok(have) if have == w.value => state.have = Some(have),
            Ok(have) => match sys.write(w.name, w.value) {
                Ok(()) => {
                    state.have = sys.read(w.name).ok();
                    changed.push(format!("sysctl {} {} -> {}", w.name, have, w.value));
                }
                Err(e) => {
                    state.have = Some(have);
                    state.error = Some(format!("cannot set {} = {}: {e}", w.name, w.value));
                }
            },
            Err(e) => {
                state.error = Some(format!(
                    "cannot read {}: {e} (is the module that provides it loaded?)",
                    w.name
                ))
            }
        }
        states.push(state);
    }
    (states, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn table(text: &str) -> (DesiredTable, Vec<Snat>) {
        let c = config::parse(text, "t.toml").expect("valid config");
        (crate::desired::desired_table(&c), c.snat)
    }

    const V4: &str = "[global]\nrouter_id = \"a\"\n[[virtual_server]]\nname = \"w\"\naddress = \"192.0.2.1:80\"\nprotocol = \"tcp\"\nscheduler = \"rr\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n";
    const V6_SNAT: &str = "[global]\nrouter_id = \"a\"\n[[snat]]\nmatch_vip = \"2001:db8::1\"\nto_source = \"2001:db8::2\"\n";

    fn names(w: &[Wanted]) -> Vec<&str> {
        w.iter().map(|w| w.name).collect()
    }

    #[test]
    fn ipvs_wants_forwarding_and_the_ipvs_conntrack_settings() {
        let (d, s) = table(V4);
        assert_eq!(
            names(&wanted(DataplaneKind::Ipvs, &d, &s)),
            [
                "net.ipv4.ip_forward",
                "net.ipv4.vs.conntrack",
                "net.ipv4.vs.expire_nodest_conn",
                "net.ipv4.vs.expire_quiescent_template"
            ]
        );
        assert_eq!(
            names(&wanted(DataplaneKind::Nftables, &d, &s)),
            [
                "net.ipv4.ip_forward",
                "net.netfilter.nf_conntrack_tcp_loose"
            ]
        );
    }

    #[test]
    fn ipv6_only_config_wants_ipv6_forwarding_only() {
        let (d, s) = table(V6_SNAT);
        assert_eq!(
            names(&wanted(DataplaneKind::Nftables, &d, &s)),
            [
                "net.ipv6.conf.all.forwarding",
                "net.netfilter.nf_conntrack_tcp_loose"
            ]
        );
    }

    #[test]
    fn nothing_configured_wants_nothing() {
        let (d, s) = table("[global]\nrouter_id = \"a\"\n");
        assert!(wanted(DataplaneKind::Ipvs, &d, &s).is_empty());
    }

    #[test]
    fn ensure_writes_only_what_differs_and_reports_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4/vs")).unwrap();
        std::fs::write(dir.path().join("net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(dir.path().join("net/ipv4/vs/conntrack"), "1\n").unwrap();
        let mut sys = ProcSys::at(dir.path());
        let want = [
            Wanted {
                name: "net.ipv4.ip_forward",
                value: "1",
            },
            Wanted {
                name: "net.ipv4.vs.conntrack",
                value: "1",
            },
            Wanted {
                name: "net.ipv4.vs.expire_nodest_conn",
                value: "1",
            },
        ];
        let (states, changed) = ensure(&mut sys, &want);
        assert_eq!(changed, ["sysctl net.ipv4.ip_forward 0 -> 1"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        assert_eq!(states[0].have.as_deref(), Some("1"));
        assert_eq!(states[1].error, None);
        let missing = states[2].error.as_deref().unwrap();
        assert!(
            missing.starts_with("cannot read net.ipv4.vs.expire_nodest_conn"),
            "{missing}"
        );
        // Second run: nothing to change.
        let (_, changed) = ensure(&mut sys, &want);
        assert!(changed.is_empty());
    }

    #[test]
    fn read_only_never_writes_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(dir.path().join("net/ipv4/ip_forward"), "0\n").unwrap();
        let mut sys = ReadOnly(ProcSys::at(dir.path()));
        let (states, changed) = ensure(
            &mut sys,
            &[Wanted {
                name: "net.ipv4.ip_forward",
                value: "1",
            }],
        );
        assert!(changed.is_empty());
        assert_eq!(states[0].have.as_deref(), Some("0"));
        assert!(states[0].error.as_deref().unwrap().contains("disabled"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap(),
            "0\n"
        );
    }
}
