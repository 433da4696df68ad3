//! Stable hashes, buckets and digests for cheap reconciliation.
//!
//! Both peers keep the set of replicated entries (the session's table) and
//! summarise it per bucket: the key's hash picks one of [`BUCKETS`]
//! buckets, and each bucket holds the number of entries and the wrapping
//! sum of their content hashes. Comparing two digests (3 KiB on the wire)
//! names the buckets that differ, and only those are re-sent: a
//! reconciliation costs one digest plus the differing buckets, never a
//! full re-send.
//!
//! The hashes are FNV-1a 64 over the canonical wire records
//! ([`crate::wire::record`]) finished with the splitmix64 mixer (so the
//! top byte, the bucket, is well spread). They are not secret and need not
//! be collision-resistant against an attacker: digests travel inside
//! authenticated frames. They must only be identical on both peers and
//! across releases, which is why they are defined here over bytes and not
//! with `std::hash` (whose algorithms may change).
//!
//! The content hash leaves out the timeout: it ticks down on the master
//! between two looks at the same entry and would make every entry differ
//! (timeouts are refreshed by the session's reconciliation instead), and
//! the status bits in [`crate::entry::status::VOLATILE`] (local handling:
//! dying, flowtable offload).

use serde::{Deserialize, Serialize};

use crate::entry::status;
use crate::entry::{Entry, Key};
use crate::wire::record::{encode_entry, encode_key, STATUS_RANGE, TIMEOUT_RANGE};

/// Number of digest buckets.
pub const BUCKETS: usize = 256;
/// Bytes of a [`Scope`] bitmap.
pub const SCOPE_LEN: usize = BUCKETS / 8;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, then the splitmix64 finaliser.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a key's record; its top byte is the key's bucket. `None` for a
/// key with mixed address families (never valid).
pub fn key_hash(key: &Key) -> Option<u64> {
    encode_key(key).ok().map(|k| stable_hash(k.as_bytes()))
}

/// The bucket of a key hash.
pub fn bucket_of(key_hash: u64) -> u8 {
    (key_hash >> 56) as u8
}

/// Hash of an entry's record with the timeout zeroed: equal for two
/// states of a connection that differ only in the time left.
pub fn content_hash(entry: &Entry) -> Option<u64> {
    let encoded = encode_entry(entry).ok()?;
    let mut bytes = [0u8; crate::wire::record::MAX_ENTRY_LEN];
    let src = encoded.as_bytes();
    let dst = bytes.get_mut(..src.len())?;
    dst.copy_from_slice(src);
    if let Some(t) = dst.get_mut(TIMEOUT_RANGE) {
        t.fill(0);
    }
    if let Some(s) = dst.get_mut(STATUS_RANGE) {
        let bits = entry.status & !status::VOLATILE;
        s.copy_from_slice(&bits.to_be_bytes());
    }
    Some(stable_hash(dst))
}

/// A set of buckets, as a 256-bit map: bucket `i` is bit `i % 8` (least
/// significant first) of byte `i / 8`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Scope(pub [u8; SCOPE_LEN]);

impl Scope {
    /// No bucket.
    pub const NONE: Scope = Scope([0; SCOPE_LEN]);
    /// Every bucket: a full resync.
    pub const ALL: Scope = Scope([0xff; SCOPE_LEN]);

    pub fn contains(&self, bucket: u8) -> bool {
        let i = usize::from(bucket);
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub fn insert(&mut self, bucket: u8) {
        let i = usize::from(bucket);
        if let Some(b) = self.0.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    pub fn union(&mut self, other: &Scope) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    pub fn is_full(&self) -> bool {
        self.0.iter().all(|b| *b == 0xff)
    }

    /// Number of buckets in the set.
    pub fn count(&self) -> usize {
        self.0.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The buckets in the set, ascending.
    pub fn buckets(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|b| self.contains(*b))
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_full() {
            f.write_str("Scope(all)")
        } else {
            f.debug_set().entries(self.buckets()).finish()
        }
    }
}

/// One bucket's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BucketDigest {
    /// Entries in the bucket.
    pub count: u32,
    /// Wrapping sum of their content hashes.
    pub sum: u64,
}

impl BucketDigest {
    pub fn add(&mut self, content: u64) {
        self.count = self.count.wrapping_add(1);
        self.sum = self.sum.wrapping_add(content);
    }

    pub fn remove(&mut self, content: u64) {
        self.count = self.count.wrapping_sub(1);
        self.sum = self.sum.wrapping_sub(content);
    }
}

/// The summary of a whole table: one [`BucketDigest`] per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// Exactly [`BUCKETS`] entries (a `Vec` so that serde takes it).
    pub buckets: Vec<BucketDigest>,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            buckets: vec![BucketDigest::default(); BUCKETS],
        }
    }
}

impl Digest {
    pub fn bucket(&self, b: u8) -> BucketDigest {
        self.buckets
            .get(usize::from(b))
            .copied()
            .unwrap_or_default()
    }

    pub fn bucket_mut(&mut self, b: u8) -> Option<&mut BucketDigest> {
        self.buckets.get_mut(usize::from(b))
    }

    /// The buckets in which `self` and `other` differ.
    pub fn diff(&self, other: &Digest) -> Scope {
        let mut out = Scope::NONE;
        for b in 0..=u8::MAX {
            if self.bucket(b) != other.bucket(b) {
                out.insert(b);
            }
        }
        out
    }

    /// One number for the buckets in `scope` (BulkEnd carries it): the
    /// stable hash of their (index, count, sum) triples.
    pub fn fold(&self, scope: &Scope) -> u64 {
        let mut h = FNV_OFFSET;
        for b in scope.buckets() {
            let d = self.bucket(b);
            let mut bytes = [0u8; 13];
            bytes[0] = b;
            bytes[1..5].copy_from_slice(&d.count.to_be_bytes());
            bytes[5..13].copy_from_slice(&d.sum.to_be_bytes());
            for x in bytes {
                h ^= u64::from(x);
                h = h.wrapping_mul(FNV_PRIME);
            }
        }
        mix(h)
    }

    /// Entries summarised.
    pub fn total(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.count)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: these hashes are part of the protocol (both peers
    /// must compute the same), so a change here is a protocol change.
    #[test]
    fn stable_hash_is_pinned() {
        assert_eq!(stable_hash(b""), mix(FNV_OFFSET));
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test
        // vector); the finaliser is applied on top.
        let mut h = FNV_OFFSET;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn scope_bits() {
        let mut s = Scope::NONE;
        assert!(s.is_empty());
        s.insert(0);
        s.insert(9);
        s.insert(255);
        assert_eq!(s.0[0], 0x01);
        assert_eq!(s.0[1], 0x02);
        assert_eq!(s.0[31], 0x80);
        assert_eq!(s.buckets().collect::<Vec<_>>(), vec![0, 9, 255]);
        assert_eq!(s.count(), 3);
        assert!(Scope::ALL.is_full());
        assert_eq!(Scope::ALL.count(), 256);
        let mut u = Scope::NONE;
        u.union(&s);
        assert_eq!(u, s);
    }

    #[test]
    fn digest_diff_and_fold() {
        let mut a = Digest::default();
        let b = Digest::default();
        assert!(a.diff(&b).is_empty());
        assert_eq!(a.fold(&Scope::ALL), b.fold(&Scope::ALL));
        a.bucket_mut(17).unwrap().add(42);
        let d = a.diff(&b);
        assert_eq!(d.buckets().collect::<Vec<_>>(), vec![17]);
        assert_ne!(a.fold(&Scope::ALL), b.fold(&Scope::ALL));
        // Outside the scope the difference does not show.
        let mut other = Scope::NONE;
        other.insert(3);
        assert_eq!(a.fold(&other), b.fold(&other));
        a.bucket_mut(17).unwrap().remove(42);
        assert_eq!(a, b);
    }

    #[test]
    fn content_hash_ignores_timeout_and_volatile_bits() {
        use crate::entry::{Tuple, L4};
        let t = Tuple {
            src: "198.51.100.1".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            l4: L4::Ports { src: 1, dst: 80 },
        };
        let e = Entry {
            proto: 6,
            original: t,
            reply: t,
            status: status::CONFIRMED,
            timeout: 100,
            mark: 0,
            zone: 0,
            tcp: None,
        };
        let h = content_hash(&e);
        assert_eq!(content_hash(&Entry { timeout: 5, ..e }), h);
        let offloaded = Entry {
            status: status::CONFIRMED | status::OFFLOAD | status::DYING,
            ..e
        };
        assert_eq!(content_hash(&offloaded), h);
        let assured = Entry {
            status: status::CONFIRMED | status::ASSURED,
            ..e
        };
        assert_ne!(content_hash(&assured), h);
        assert_ne!(content_hash(&Entry { mark: 1, ..e }), h);
    }
}
