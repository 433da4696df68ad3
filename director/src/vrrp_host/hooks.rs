//! Notify hooks (keepalived's `notify_master` & co), pure: state changes
//! in, the commands to run out, in order: the instance's own, then its
//! sync group's.
//!
//! A sync group's hooks (`[[sync_group]]` `notify_*`, keepalived's
//! `vrrp_sync_group { notify_* }`): the group has a state once all its members agree on one (Backup,
//! Master, Fault; the group logic of `vrrp::group` brings them there in
//! the same driver step), and its hooks run once per change of that state,
//! not once per member: a conntrackd-style `primary-backup.sh primary` must
//! run once when the box takes the group over. Stopping (every member
//! back to Initialize on shutdown) runs `notify_stop`. The generic
//! `notify` gets "GROUP", the group's name, the state and 0 (a group has
//! no priority of its own; keepalived passes 0 too).

use super::{notify_commands, notify_table, NotifyArgs};
use crate::config::Config;
use std::collections::BTreeMap;
use vrrp::machine::State;

#[derive(Debug)]
struct Group {
    name: String,
    members: Vec<String>,
    states: Vec<Option<State>>,
    notified: Option<State>,
    args: NotifyArgs,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Hooks {
    instances: BTreeMap<String, NotifyArgs>,
    groups: Vec<Group>,
}

impl Hooks {
    pub(super) fn new(config: &Config) -> Hooks {
        Hooks {
            instances: notify_table(config),
            groups: config
                .sync_groups
                .iter()
                .map(|g| Group {
                    name: g.name.clone(),
                    members: g.instances.clone(),
                    states: vec![None; g.instances.len()],
                    notified: None,
                    args: NotifyArgs {
                        master: g.notify.master.clone(),
                        backup: g.notify.backup.clone(),
                        fault: g.notify.fault.clone(),
                        stop: g.notify.stop.clone(),
                        generic: g.notify.generic.clone(),
                        priority: 0,
                        group: true,
                    },
                })
                .collect(),
        }
    }

    /// `instance` changed to `new` (`stopping`: on shutdown). The commands
    /// to run now, in order: the instance's, then its group's (none when
    /// the members do not agree yet or the group's state did not change).
    pub(super) fn state_change(
        &mut self,
        instance: &str,
        new: State,
        stopping: bool,
    ) -> Vec<Vec<String>> {
        let mut out = match self.instances.get(instance) {
            Some(args) => notify_commands(args, instance, new, stopping),
            None => Vec::new(),
        };
        out.extend(self.group_change(instance, new, stopping));
        out
    }

    fn group_change(&mut self, instance: &str, new: State, stopping: bool) -> Vec<Vec<String>> {
        let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.members.iter().any(|m| m == instance))
        else {
            return Vec::new();
        };
        for (m, s) in g.members.iter().zip(g.states.iter_mut()) {
            if m == instance {
                *s = Some(new);
            }
        }
        let Some(first) = g.states[0] else {
            return Vec::new();
        };
        if g.states.iter().any(|s| *s != Some(first)) || g.notified == Some(first) {
            return Vec::new();
        }
        g.notified = Some(first);
        match first {
            State::Initialize if !stopping => Vec::new(),
            _ => notify_commands(&g.args, &g.name, first, stopping),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[global]
router_id = "t"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 150
virtual_ipaddresses = ["192.0.2.100/32"]

[[vrrp_instance]]
name = "VI_2"
interface = "eth1"
vrid = 52
priority = 150
virtual_ipaddresses = ["203.0.113.100/32"]

[[vrrp_instance]]
name = "VI_3"
interface = "eth1"
vrid = 53
priority = 150
virtual_ipaddresses = ["203.0.113.101/32"]
notify_master = ["/bin/vi3"]

[[sync_group]]
name = "G1"
instances = ["VI_1", "VI_2"]
notify_master = ["/bin/primary"]
notify_fault = ["/bin/fault"]
notify = ["/bin/log"]
"#;
        crate::config::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hooks_run_once_per_group_state_when_the_members_agree() {
        let mut n = Hooks::new(&config());
        // Startup: both members go to Backup; the group's generic hook runs
        // when the second one gets there.
        assert!(n.state_change("VI_1", State::Backup, false).is_empty());
        assert_eq!(
            n.state_change("VI_2", State::Backup, false),
            vec![argv(&["/bin/log", "GROUP", "G1", "BACKUP", "0"])]
        );
        // Takeover: once, after both.
        assert!(n.state_change("VI_2", State::Master, false).is_empty());
        assert_eq!(
            n.state_change("VI_1", State::Master, false),
            vec![
                argv(&["/bin/primary"]),
                argv(&["/bin/log", "GROUP", "G1", "MASTER", "0"])
            ]
        );
        // A repeated report changes nothing.
        assert!(n.state_change("VI_1", State::Master, false).is_empty());
        // Not a member: its own hook only.
        assert_eq!(
            n.state_change("VI_3", State::Master, false),
            vec![argv(&["/bin/vi3"])]
        );
        // Fault of the group.
        assert!(n.state_change("VI_2", State::Fault, false).is_empty());
        assert_eq!(
            n.state_change("VI_1", State::Fault, false)[0],
            argv(&["/bin/fault"])
        );
        // Shutdown: STOP once, when every member is down.
        assert!(n.state_change("VI_1", State::Initialize, true).is_empty());
        assert_eq!(
            n.state_change("VI_2", State::Initialize, true),
            vec![argv(&["/bin/log", "GROUP", "G1", "STOP", "0"])]
        );
    }
}
