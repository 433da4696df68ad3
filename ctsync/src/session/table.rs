//! The replicated set: the entries both peers agree the receiver holds,
//! as key -> content hash, with per-bucket digests kept up to date on
//! every change (so a Digest costs O(buckets), not O(entries)).
//!
//! The sender adds an entry when it puts it in a frame, the receiver when
//! it takes it out of one; after the stream drains both tables are equal.
//! That is why a role swap on a live connection needs no resync: the new
//! master's table is exactly what the new backup holds.
//!
//! Two marks per slot support the two sweeps without extra sets: the
//! bulk mark (keys received since BulkStart) and the dump mark (keys seen
//! in the last kernel dump).
//!
//! The keys live in one hash map per digest bucket, not in one map: a
//! map that outgrows its capacity moves every entry at once, and at a
//! few hundred thousand entries one such move held the session (master
//! and backup alike, at the same count) for tens of milliseconds, the
//! spikes of `ctsync-bench rate`'s worst lag per second. A shard grows
//! with 1/256 of the set.

use std::collections::HashMap;

use crate::digest::{bucket_of, key_hash, Digest, Scope, BUCKETS};
use crate::entry::Key;
use crate::time::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Content hash (timeout excluded).
    pub hash: u64,
    /// When the receiver's copy expires if nothing refreshes it.
    pub expires: Time,
    pub bucket: u8,
    bulk_mark: u32,
    dump_mark: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// `shards[b]`: the keys of digest bucket `b`.
    shards: Vec<HashMap<Key, Slot>>,
    len: usize,
    digest: Digest,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            // Empty maps allocate nothing.
            shards: (0..BUCKETS).map(|_| HashMap::new()).collect(),
            len: 0,
            digest: Digest::default(),
        }
    }
}

/// The shard (digest bucket) of `key`; `None` if it cannot be encoded,
/// and then it was never inserted either.
fn shard_of(key: &Key) -> Option<usize> {
    key_hash(key).map(|h| usize::from(bucket_of(h)))
}

impl Table {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, key: &Key) -> Option<&Slot> {
        self.shards.get(shard_of(key)?)?.get(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    fn slots(&self) -> impl Iterator<Item = (&Key, &Slot)> {
        self.shards.iter().flat_map(|m| m.iter())
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Insert or replace; `bulk_mark` marks the key as received in the
    /// current bulk. Returns whether the key is new, `None` if the key is
    /// not encodable (mixed families: never reaches here).
    pub fn upsert(
        &mut self,
        key: Key,
        hash: u64,
        expires: Time,
        bulk_mark: Option<(Scope, u32)>,
    ) -> Option<bool> {
        let bucket = bucket_of(key_hash(&key)?);
        let mark = match bulk_mark {
            Some((scope, epoch)) if scope.contains(bucket) => epoch,
            _ => 0,
        };
        let shard = self.shards.get_mut(usize::from(bucket))?;
        let created = match shard.get_mut(&key) {
            Some(slot) => {
                if let Some(b) = self.digest.bucket_mut(bucket) {
                    b.remove(slot.hash);
                    b.add(hash);
                }
                slot.hash = hash;
                slot.expires = expires;
                if mark != 0 {
                    slot.bulk_mark = mark;
                }
                false
            }
            None => {
                if let Some(b) = self.digest.bucket_mut(bucket) {
                    b.add(hash);
                }
                shard.insert(
                    key,
                    Slot {
                        hash,
                        expires,
                        bucket,
                        bulk_mark: mark,
                        dump_mark: 0,
                    },
                );
                self.len += 1;
                true
            }
        };
        Some(created)
    }

    /// Remove; whether it was there.
    pub fn remove(&mut self, key: &Key) -> bool {
        let removed = shard_of(key)
            .and_then(|b| self.shards.get_mut(b))
            .and_then(|m| m.remove(key));
        match removed {
            Some(slot) => {
                self.len -= 1;
                if let Some(b) = self.digest.bucket_mut(slot.bucket) {
                    b.remove(slot.hash);
                }
                true
            }
            None => false,
        }
    }

    /// Forget every key in `scope` (a sender starting a bulk of those
    /// buckets: the receiver's copy is unknown until BulkEnd).
    pub fn clear_scope(&mut self, scope: &Scope) {
        if scope.is_full() {
            *self = Table::default();
            return;
        }
        for b in scope.buckets() {
            if let Some(m) = self.shards.get_mut(usize::from(b)) {
                self.len -= m.len();
                // Its memory goes too: a bulk refills it.
                *m = HashMap::new();
            }
            if let Some(d) = self.digest.bucket_mut(b) {
                *d = Default::default();
            }
        }
    }

    /// Remove and return the keys in `scope` not marked with `epoch` since
    /// the bulk began (the receiver's BulkEnd sweep). Sorted, so that the
    /// session's output does not depend on hash order (record/replay).
    pub fn sweep_bulk(&mut self, scope: &Scope, epoch: u32) -> Vec<Key> {
        let mut stale: Vec<Key> = scope
            .buckets()
            .filter_map(|b| self.shards.get(usize::from(b)))
            .flat_map(|m| m.iter())
            .filter(|(_, s)| s.bulk_mark != epoch)
            .map(|(k, _)| *k)
            .collect();
        stale.sort_unstable();
        for k in &stale {
            self.remove(k);
        }
        stale
    }

    /// Mark `key` as present in the dump of `epoch`; its slot if held.
    pub fn mark_dump(&mut self, key: &Key, epoch: u32) -> Option<Slot> {
        let slot = self.shards.get_mut(shard_of(key)?)?.get_mut(key)?;
        slot.dump_mark = epoch;
        Some(*slot)
    }

    /// Keys held but not in the dump of `epoch`, outside `exclude`;
    /// sorted.
    pub fn not_in_dump(&self, epoch: u32, exclude: &Scope) -> Vec<(Key, u8)> {
        let mut keys: Vec<(Key, u8)> = self
            .slots()
            .filter(|(_, s)| s.dump_mark != epoch && !exclude.contains(s.bucket))
            .map(|(k, s)| (*k, s.bucket))
            .collect();
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Tuple, L4};

    fn key(port: u16) -> Key {
        Key {
            proto: 6,
            zone: 0,
            original: Tuple {
                src: "198.51.100.1".parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                l4: L4::Ports { src: port, dst: 80 },
            },
        }
    }

    #[test]
    fn digest_follows_changes() {
        let mut t = Table::default();
        assert_eq!(t.upsert(key(1), 10, Time::ZERO, None), Some(true));
        assert_eq!(t.upsert(key(2), 20, Time::ZERO, None), Some(true));
        assert_eq!(t.upsert(key(1), 11, Time::ZERO, None), Some(false));
        assert_eq!(t.digest().total(), 2);
        let mut fresh = Table::default();
        fresh.upsert(key(2), 20, Time::ZERO, None);
        fresh.upsert(key(1), 11, Time::ZERO, None);
        assert_eq!(t.digest(), fresh.digest());
        assert!(t.remove(&key(1)));
        assert!(!t.remove(&key(1)));
        fresh.remove(&key(1));
        assert_eq!(t.digest(), fresh.digest());
    }

    /// The shards must add up to one table: length, lookups, partial
    /// clears and sweeps see every key exactly once.
    #[test]
    fn shards_add_up_to_one_table() {
        let mut t = Table::default();
        for p in 0..2000 {
            t.upsert(key(p), u64::from(p), Time::ZERO, None);
        }
        assert_eq!(t.len(), 2000);
        let used: std::collections::BTreeSet<usize> =
            (0..2000).filter_map(|p| shard_of(&key(p))).collect();
        assert!(
            used.len() > 200,
            "keys spread over the shards: {}",
            used.len()
        );
        assert!((0..2000).all(|p| t.get(&key(p)).map(|s| s.hash) == Some(u64::from(p))));
        // Clear the buckets of the first 10 ports.
        let mut scope = Scope::NONE;
        for p in 0..10 {
            scope.insert(bucket_of(key_hash(&key(p)).unwrap()));
        }
        let in_scope = (0..2000)
            .filter(|p| scope.contains(bucket_of(key_hash(&key(*p)).unwrap())))
            .count();
        t.clear_scope(&scope);
        assert_eq!(t.len(), 2000 - in_scope);
        assert!((0..10).all(|p| !t.contains(&key(p))));
        let mut fresh = Table::default();
        for p in (0..2000).filter(|p| t.contains(&key(*p))) {
            fresh.upsert(key(p), u64::from(p), Time::ZERO, None);
        }
        assert_eq!(t.digest(), fresh.digest());
        // A bulk over the whole set that re-sent nothing: everything left
        // is swept, once.
        let swept = t.sweep_bulk(&Scope::ALL, 9);
        assert_eq!(swept.len(), 2000 - in_scope);
        assert_eq!(t.len(), 0);
        assert!(t.not_in_dump(1, &Scope::NONE).is_empty());
    }

    #[test]
    fn sweeps() {
        let mut t = Table::default();
        for p in 0..100 {
            t.upsert(key(p), u64::from(p), Time::ZERO, None);
        }
        // A full bulk that re-sent the even ports only.
        for p in (0..100).step_by(2) {
            t.upsert(key(p), u64::from(p), Time::ZERO, Some((Scope::ALL, 7)));
        }
        let mut stale = t.sweep_bulk(&Scope::ALL, 7);
        stale.sort();
        assert_eq!(stale, (1..100).step_by(2).map(key).collect::<Vec<_>>());
        assert_eq!(t.len(), 50);
        // A dump that shows ports 0..10.
        for p in 0..10 {
            t.mark_dump(&key(p), 3);
        }
        assert_eq!(t.not_in_dump(3, &Scope::NONE).len(), 45);
        assert_eq!(t.not_in_dump(3, &Scope::ALL).len(), 0);
        t.clear_scope(&Scope::ALL);
        assert_eq!(t.len(), 0);
        assert_eq!(t.digest(), &Digest::default());
    }
}
