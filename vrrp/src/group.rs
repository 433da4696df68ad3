//! Sync groups: instances that must change state together (keepalived's
//! `vrrp_sync_group`, director's `[[sync_group]]`), e.g. the external VIP
//! and the internal gateway VIP of a NAT load balancer.
//!
//! keepalived semantics:
//! - if one member is in Fault (its own fault: link, tracked object), every
//!   member goes to Fault; when none is, they all leave Fault together;
//! - if one member becomes Master, every member in Backup becomes Master;
//! - if one member drops from Master to Backup, every Master member steps
//!   down to Backup (sending priority 0, so the peer's group follows fast).
//!
//! This is pure logic over the members' states. [`SyncGroup::plan`] says
//! which [`GroupCommand`] each member needs; [`SyncGroup::reconcile`] feeds
//! them as [`Input::Group`] and returns the members' actions. The driver
//! calls `reconcile` after every `handle` on any member (it is cheap and
//! idempotent), and applies the actions like any other.

use serde::{Deserialize, Serialize};

use crate::machine::{Action, GroupCommand, Input, Instance, State};
use crate::time::Time;

/// What the group needs to know about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub state: State,
    /// In Fault for a reason of its own.
    pub own_fault: bool,
    /// Held in Fault by the group.
    pub group_fault: bool,
}

impl From<&Instance> for Member {
    fn from(instance: &Instance) -> Member {
        Member {
            state: instance.state(),
            own_fault: instance.has_own_fault(),
            group_fault: instance.has_group_fault(),
        }
    }
}

/// The state of one sync group: the member states seen at the previous
/// reconcile, to tell which member moved first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGroup {
    seen: Vec<State>,
}

impl SyncGroup {
    /// A group of `members` instances, all in Initialize.
    pub fn new(members: usize) -> SyncGroup {
        SyncGroup {
            seen: vec![State::Initialize; members],
        }
    }

    /// The commands that bring `members` (in group order) back in line, and
    /// remember their states. Pure.
    pub fn plan(&mut self, members: &[Member]) -> Vec<(usize, GroupCommand)> {
        self.seen.resize(members.len(), State::Initialize);
        let mut commands = Vec::new();
        if members.iter().any(|m| m.own_fault) {
            // One faulted member faults the group.
            for (i, m) in members.iter().enumerate() {
                if !m.group_fault {
                    commands.push((i, GroupCommand::Fault));
                }
            }
        } else if members.iter().any(|m| m.group_fault) {
            // No member has a fault of its own any more: release them all.
            for (i, m) in members.iter().enumerate() {
                if m.group_fault {
                    commands.push((i, GroupCommand::FaultCleared));
                }
            }
        } else {
            let moved = |to: State, from: Option<State>| {
                members.iter().enumerate().any(|(i, m)| {
                    m.state == to && self.seen[i] != to && from.is_none_or(|f| self.seen[i] == f)
                })
            };
            // A member that became Master wins over one that dropped to
            // Backup in the same round: it did so because its peer went
            // silent or released, so the peer side is not master.
            let follow = if moved(State::Master, None) {
                Some((State::Backup, GroupCommand::Master))
            } else if moved(State::Backup, Some(State::Master)) {
                Some((State::Master, GroupCommand::Backup))
            } else {
                None
            };
            if let Some((from, command)) = follow {
                for (i, m) in members.iter().enumerate() {
                    if m.state == from {
                        commands.push((i, command));
                    }
                }
            }
        }
        for (seen, m) in self.seen.iter_mut().zip(members) {
            *seen = m.state;
        }
        commands
    }

    /// Plan and apply until the group is consistent. Returns each member's
    /// actions, tagged with its index in `members`.
    pub fn reconcile(&mut self, members: &mut [&mut Instance], now: Time) -> Vec<(usize, Action)> {
        let mut out = Vec::new();
        // Fault, then release, then follow: three rounds settle any
        // starting point; one more to be safe.
        for _ in 0..4 {
            let views: Vec<Member> = members.iter().map(|m| Member::from(&**m)).collect();
            let commands = self.plan(&views);
            if commands.is_empty() {
                break;
            }
            for (i, command) in commands {
                let Some(member) = members.get_mut(i) else {
                    continue;
                };
                for action in member.handle(now, Input::Group(command)) {
                    out.push((i, action));
                }
                // A member that followed did not move on its own: record its
                // new state so the next round does not propagate it back.
                // A member released from Fault did move on its own rules
                // (an owner goes to Master): the next round propagates that.
                if matches!(command, GroupCommand::Master | GroupCommand::Backup) {
                    if let Some(seen) = self.seen.get_mut(i) {
                        *seen = member.state();
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::codec::{encode, Advert, Version, MULTICAST_V4};
    use crate::machine::{Config, Reason, RxPacket};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn member(vrid: u8, priority: u8) -> Instance {
        let mut c = Config::new(vrid, ip("10.0.0.2"), vec![ip(&format!("192.0.2.{vrid}"))]);
        c.priority = priority;
        Instance::new(c, Time::ZERO).unwrap()
    }

    fn advert(vrid: u8, priority: u8) -> Input {
        let advert = Advert {
            version: Version::V3 {
                max_advert_int: 100,
            },
            vrid,
            priority,
            addresses: vec![ip(&format!("192.0.2.{vrid}"))],
        };
        let src = ip("10.0.0.9");
        let dst = IpAddr::V4(MULTICAST_V4);
        Input::Packet(RxPacket {
            src,
            dst,
            ttl: 255,
            payload: encode(&advert, src, dst).unwrap(),
        })
    }

    fn m(state: State) -> Member {
        Member {
            state,
            own_fault: state == State::Fault,
            group_fault: false,
        }
    }

    #[test]
    fn plan_table() {
        use GroupCommand as G;
        use State::*;
        // (previous states, current members, expected commands)
        type Row = (Vec<State>, Vec<Member>, Vec<(usize, GroupCommand)>);
        let table: Vec<Row> = vec![
            // One member faults: the others follow.
            (
                vec![Master, Master],
                vec![m(Fault), m(Master)],
                vec![(0, G::Fault), (1, G::Fault)],
            ),
            // Still faulted: members already held by the group get nothing.
            (
                vec![Fault, Fault],
                vec![
                    m(Fault),
                    Member {
                        state: Fault,
                        own_fault: false,
                        group_fault: true,
                    },
                ],
                vec![(0, G::Fault)],
            ),
            // The fault cleared: release the members the group holds.
            (
                vec![Fault, Fault],
                vec![
                    Member {
                        state: Backup,
                        own_fault: false,
                        group_fault: true,
                    },
                    Member {
                        state: Fault,
                        own_fault: false,
                        group_fault: true,
                    },
                ],
                vec![(0, G::FaultCleared), (1, G::FaultCleared)],
            ),
            // One became master: the backups follow.
            (
                vec![Backup, Backup, Backup],
                vec![m(Master), m(Backup), m(Backup)],
                vec![(1, G::Master), (2, G::Master)],
            ),
            // One dropped to backup: the masters follow.
            (
                vec![Master, Master],
                vec![m(Backup), m(Master)],
                vec![(1, G::Backup)],
            ),
            // Both moves at once: master wins.
            (
                vec![Backup, Master, Master],
                vec![m(Master), m(Backup), m(Master)],
                vec![(1, G::Master)],
            ),
            // Steady state: nothing.
            (vec![Master, Master], vec![m(Master), m(Master)], vec![]),
            (vec![Backup, Backup], vec![m(Backup), m(Backup)], vec![]),
        ];
        for (seen, members, expected) in table {
            let mut g = SyncGroup { seen: seen.clone() };
            assert_eq!(g.plan(&members), expected, "{seen:?} -> {members:?}");
        }
    }

    #[test]
    fn members_become_master_together() {
        let (mut a, mut b) = (member(1, 100), member(2, 100));
        let mut g = SyncGroup::new(2);
        a.handle(Time::ZERO, Input::Startup);
        b.handle(Time::ZERO, Input::Startup);
        // b hears a master for its VRID, a does not: a's timer fires first.
        b.handle(Time::from_millis(1000), advert(2, 200));
        assert!(g.reconcile(&mut [&mut a, &mut b], Time::ZERO).is_empty());
        let at = a.next_deadline().unwrap();
        a.handle(at, Input::Timer);
        assert_eq!(a.state(), State::Master);
        let actions = g.reconcile(&mut [&mut a, &mut b], at);
        assert_eq!(b.state(), State::Master);
        assert_eq!(
            b.status().last_transition.unwrap().reason,
            Reason::SyncGroup
        );
        assert!(actions.iter().all(|(i, _)| *i == 1));
        assert!(actions
            .iter()
            .any(|(_, a)| matches!(a, Action::AddVips { .. })));
    }

    #[test]
    fn one_stepping_down_takes_the_group_to_backup() {
        let (mut a, mut b) = (member(1, 100), member(2, 100));
        let mut g = SyncGroup::new(2);
        for x in [&mut a, &mut b] {
            x.handle(Time::ZERO, Input::Startup);
            let d = x.next_deadline().unwrap();
            x.handle(d, Input::Timer);
        }
        g.reconcile(&mut [&mut a, &mut b], Time::from_millis(4000));
        let now = Time::from_millis(5000);
        a.handle(now, advert(1, 200));
        assert_eq!(a.state(), State::Backup);
        let actions = g.reconcile(&mut [&mut a, &mut b], now);
        assert_eq!(b.state(), State::Backup);
        // b released with priority 0 so its peer follows quickly.
        assert!(actions.iter().any(|(i, a)| *i == 1
            && matches!(a, Action::SendAdvert { advert, .. } if advert.priority == 0)));
    }

    #[test]
    fn a_fault_holds_the_whole_group() {
        let (mut a, mut b) = (member(1, 100), member(2, 255));
        let mut g = SyncGroup::new(2);
        a.handle(Time::ZERO, Input::Startup);
        b.handle(Time::ZERO, Input::Startup);
        g.reconcile(&mut [&mut a, &mut b], Time::ZERO);
        assert_eq!(a.state(), State::Master, "follows the owner");

        let now = Time::from_millis(100);
        a.handle(now, Input::InterfaceDown);
        g.reconcile(&mut [&mut a, &mut b], now);
        assert_eq!((a.state(), b.state()), (State::Fault, State::Fault));
        assert!(!b.vips_set());
        assert_eq!(b.status().faults, vec!["sync_group".to_string()]);

        let now = Time::from_millis(200);
        a.handle(now, Input::InterfaceUp);
        g.reconcile(&mut [&mut a, &mut b], now);
        // The owner comes back as Master and pulls a along.
        assert_eq!((a.state(), b.state()), (State::Master, State::Master));
        assert!(!a.has_group_fault() && !b.has_group_fault());
    }
}
