//! Changes waiting for the send window, coalesced by key.
//!
//! A key appears at most once: a newer change replaces the older one in
//! place (latest state wins, the position in the queue and the time it was
//! first queued are kept, so lag stays honest), a delete of a key the
//! receiver never got cancels the pending upsert. A cancelled slot stays
//! as a tombstone until it reaches the front, so that re-adding the key
//! does not queue it twice: the map and the queue both hold at most one
//! item per distinct key, whatever the event rate.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};

use crate::entry::{Entry, Key};
use crate::time::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Upsert { entry: Entry, hash: u64 },
    Delete,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Upsert,
    Delete,
}

#[derive(Debug, Clone)]
struct Slot {
    op: Op,
    queued_at: Time,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    map: HashMap<Key, Slot>,
    order: VecDeque<Key>,
    live: usize,
}

impl Pending {
    /// Changes waiting.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Keys held, tombstones included (the memory bound: at most the
    /// number of distinct keys).
    pub fn slots(&self) -> usize {
        self.map.len()
    }

    pub fn queue_len(&self) -> usize {
        self.order.len()
    }

    pub fn has(&self, key: &Key) -> bool {
        self.map
            .get(key)
            .is_some_and(|s| !matches!(s.op, Op::Cancelled))
    }

    /// Queue `op` for `key`; returns whether it replaced a waiting change
    /// (coalesced).
    fn set(&mut self, key: Key, op: Op, now: Time) -> bool {
        match self.map.entry(key) {
            MapEntry::Occupied(mut o) => {
                let slot = o.get_mut();
                let was_live = !matches!(slot.op, Op::Cancelled);
                if !was_live {
                    self.live += 1;
                    slot.queued_at = now;
                }
                slot.op = op;
                was_live
            }
            MapEntry::Vacant(v) => {
                v.insert(Slot { op, queued_at: now });
                self.order.push_back(key);
                self.live += 1;
                false
            }
        }
    }

    pub fn upsert(&mut self, key: Key, entry: Entry, hash: u64, now: Time) -> bool {
        self.set(key, Op::Upsert { entry, hash }, now)
    }

    pub fn delete(&mut self, key: Key, now: Time) -> bool {
        self.set(key, Op::Delete, now)
    }

    /// Drop a waiting change; whether there was one.
    pub fn cancel(&mut self, key: &Key) -> bool {
        match self.map.get_mut(key) {
            Some(slot) if !matches!(slot.op, Op::Cancelled) => {
                slot.op = Op::Cancelled;
                self.live = self.live.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// The kind of the next change, dropping tombstones in front of it.
    pub fn front_kind(&mut self) -> Option<OpKind> {
        while let Some(key) = self.order.front() {
            match self.map.get(key).map(|s| s.op) {
                Some(Op::Upsert { .. }) => return Some(OpKind::Upsert),
                Some(Op::Delete) => return Some(OpKind::Delete),
                Some(Op::Cancelled) | None => {
                    if let Some(k) = self.order.pop_front() {
                        self.map.remove(&k);
                    }
                }
            }
        }
        None
    }

    /// Take the next change.
    pub fn pop(&mut self) -> Option<(Key, Op, Time)> {
        while let Some(key) = self.order.pop_front() {
            if let Some(slot) = self.map.remove(&key) {
                if !matches!(slot.op, Op::Cancelled) {
                    self.live = self.live.saturating_sub(1);
                    return Some((key, slot.op, slot.queued_at));
                }
            }
        }
        None
    }

    /// When the oldest waiting change was queued.
    pub fn oldest(&self) -> Option<Time> {
        self.order.iter().find_map(|k| {
            self.map
                .get(k)
                .filter(|s| !matches!(s.op, Op::Cancelled))
                .map(|s| s.queued_at)
        })
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Tuple, L4};

    fn entry(port: u16, mark: u32) -> Entry {
        let t = Tuple {
            src: "198.51.100.1".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            l4: L4::Ports { src: port, dst: 80 },
        };
        Entry {
            proto: 6,
            original: t,
            reply: t,
            status: 0,
            timeout: 10,
            mark,
            zone: 0,
            tcp: None,
        }
    }

    #[test]
    fn latest_wins_and_position_kept() {
        let mut p = Pending::default();
        let t0 = Time::from_millis(1);
        let t1 = Time::from_millis(2);
        assert!(!p.upsert(entry(1, 0).key(), entry(1, 0), 0, t0));
        assert!(!p.upsert(entry(2, 0).key(), entry(2, 0), 0, t1));
        assert!(p.upsert(entry(1, 9).key(), entry(1, 9), 9, t1));
        assert_eq!(p.live(), 2);
        assert_eq!(p.oldest(), Some(t0));
        let (k, op, at) = p.pop().unwrap();
        assert_eq!(k, entry(1, 0).key());
        assert_eq!(at, t0);
        assert!(matches!(op, Op::Upsert { entry, .. } if entry.mark == 9));
    }

    #[test]
    fn cancel_then_readd_queues_once() {
        let mut p = Pending::default();
        let k = entry(1, 0).key();
        for i in 0..1000 {
            p.upsert(k, entry(1, i), 0, Time::ZERO);
            p.cancel(&k);
        }
        assert_eq!(p.slots(), 1);
        assert_eq!(p.queue_len(), 1);
        assert!(p.is_empty());
        assert_eq!(p.front_kind(), None);
        assert_eq!(p.slots(), 0);
        p.delete(k, Time::ZERO);
        assert_eq!(p.front_kind(), Some(OpKind::Delete));
        assert!(matches!(p.pop(), Some((_, Op::Delete, _))));
        assert_eq!(p.pop(), None);
    }
}
