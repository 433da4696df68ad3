//! # Maglev consistent hashing, shared by both directors
//!
//! Reference: D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4 ("Consistent Hashing") and
//! its Pseudocode 1 ("Populate Maglev hashing lookup table").
//!
//! ## Why it exists
//!
//! When a connection's packets reach a director that holds no state for it
//! (after a failover, or when the upstream ECMP path changes), the connection
//! survives only if that director picks the same real server as the one that
//! saw the SYN. Both directors therefore compute the lookup table from the
//! configuration alone, and the computation must give the identical table on
//! every machine, endianness, process and Rust version. The table is what the
//! nftables `mh` scheduler is compiled from (`slots()` + `backends()`).
//!
//! ## Algorithm (paper, section 3.4)
//!
//! For a prime table size `M` and each backend `i`, two hashes of the
//! backend's name give (paper, section 3.4):
//!
//! ```text
//! offset_i = h1(name_i) mod M
//! skip_i   = h2(name_i) mod (M - 1) + 1
//! permutation_i[j] = (offset_i + j * skip_i) mod M      for j in 0..M
//! ```
//!
//! Because `M` is prime and `1 <= skip_i < M`, every row is a permutation of
//! `0..M`. Pseudocode 1 then lets the backends take turns: on its turn a
//! backend walks its own permutation to the first empty slot and claims it;
//! the loop stops as soon as all `M` slots are filled. Each backend thus gets
//! `floor(M/N)` or `ceil(M/N)` slots, and removing one backend mostly moves
//! only that backend's slots (Maglev is close to, but not exactly,
//! minimally disruptive: a few other slots move too; see the tests).
//!
//! ### Weights
//!
//! A backend of weight `w` gets `w` turns per round relative to the others
//! (as Linux's `ip_vs_mh` does); weights are first divided by their gcd, and
//! weight 0 (drained) means no turns at all: the backend is not in the table.
//! Unlike `ip_vs_mh`, which gives a backend its `w` turns back to back (and
//! scales weights down so a round fits the table), turns are interleaved:
//! backend `i`'s `k`-th turn is due at virtual time `(k + 1/2) / w_i`, and the
//! earliest due turn goes next (lowest address on ties). Each backend still
//! gets exactly `w` turns per round, and the table, which usually fills in
//! the middle of a round, stays proportional to within one turn per backend,
//! so no weight scaling is needed. With equal weights this is plain round
//! robin in address order, exactly the paper's Pseudocode 1.
//!
//! ## Why the backends are sorted
//!
//! The turn order decides who wins a contested slot, so the table depends on
//! the order of the backends. Sorting them by address (family, address bytes,
//! port) first makes the table a function of the *set* of backends: two
//! directors whose configs list the same real servers in a different order
//! still agree. Duplicate addresses are an error (they would be one backend
//! with two turns, which is what a weight is for).
//!
//! ## Why a hash implemented here
//!
//! `std`'s `DefaultHasher` is explicitly unspecified and may change between
//! Rust releases; a hash from a crate may change with a crate update. Any
//! change would silently make the two directors (or a director before and
//! after an upgrade) build different tables. This module therefore carries
//! its own SipHash-2-4 (Aumasson and Bernstein, 2012; checked against the
//! reference test vector) with three fixed keys, written down below and
//! frozen forever: [`OFFSET_KEY`] (h1), [`SKIP_KEY`] (h2) and [`FLOW_KEY`]
//! ([`flow_hash`]). The golden-value tests fail if either the hash or the
//! algorithm ever changes.
//!
//! The canonical byte encoding of a backend (the "name" hashed) is
//! `family byte (4 or 6) || address bytes (network order) || port (big-endian)`;
//! an IPv6 flow label or scope id is not part of it.
//!
//! ## Complexity
//!
//! Hashing is O(N). Population is O(M log M) expected for equal weights
//! (paper, section 3.4: the walk to an empty slot is a coupon-collector
//! process), plus O(M log N) with unequal weights (the turn scheduler is a
//! binary heap); worst case O(M * N) slot probes
//! since each backend's walk only moves forward. Memory is O(M + N): the
//! permutation rows are generated on the fly, never stored.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;

/// Default table size: a prime, and 655 slots per backend at 100 backends,
/// which keeps every backend's share within 1% of ideal (paper, section 3.4
/// recommends M > 100 * N).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Largest accepted table size (a bound on memory: 4 bytes per slot).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// SipHash-2-4 key of h1 (offset): the 16 ASCII bytes `"maglev offset v1"`,
/// read as two little-endian u64 words (the SipHash key convention). Frozen.
pub const OFFSET_KEY: [u8; 16] = *b"maglev offset v1";
/// SipHash-2-4 key of h2 (skip): the 16 ASCII bytes `"maglev skip   v1"`. Frozen.
pub const SKIP_KEY: [u8; 16] = *b"maglev skip   v1";
/// SipHash-2-4 key of [`flow_hash`]: the 16 ASCII bytes `"maglev flow   v1"`. Frozen.
pub const FLOW_KEY: [u8; 16] = *b"maglev flow   v1";

/// One real server as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Relative number of turns per round; 0 = drained (not in the table).
    pub weight: u32,
}

/// Why a table could not be built. Every variant is a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error(
        "maglev table size {size} is not prime (a prime size makes every permutation \
         visit every slot; the default is {DEFAULT_TABLE_SIZE})"
    )]
    NotPrime { size: u32 },
    #[error(
        "maglev table size {size} must be larger than the number of backends ({backends}); \
         a prime of at least 100 x backends keeps shares within 1%"
    )]
    TooSmall { size: u32, backends: usize },
    #[error("maglev table size {size} exceeds the maximum {max}")]
    TooLarge { size: u32, max: u32 },
    #[error("duplicate maglev backend {addr}")]
    Duplicate { addr: SocketAddr },
}

/// A populated Maglev lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    table_size: u32,
    /// Either empty (no backend with a non-zero weight) or exactly
    /// `table_size` entries, each an index into `backends`.
    slots: Vec<u32>,
    /// The backends with a non-zero weight, sorted by address.
    backends: Vec<Backend>,
}

impl MaglevTable {
    /// The backend for a flow: slot `flow_hash mod M` (paper, section 3.4).
    /// `None` if every backend is drained.
    pub fn lookup(&self, flow_hash: u64) -> Option<SocketAddr> {
        let slot = usize::try_from(flow_hash % u64::from(self.table_size)).ok()?;
        let index = usize::try_from(*self.slots.get(slot)?).ok()?;
        self.backends.get(index).map(|b| b.addr)
    }

    /// The lookup table: empty, or `table_size()` indexes into `backends()`.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The backends in the table (weight > 0), sorted by address.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// M, the (prime) table size.
    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// True when no backend has a non-zero weight (every lookup is `None`).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Builds the table for `backends` (any order) with `table_size` slots.
///
/// Errors: `table_size` not prime, not larger than `backends.len()` (drained
/// ones included, so draining never invalidates a config), above
/// [`MAX_TABLE_SIZE`], or two backends with the same address.
pub fn build(backends: &[Backend], table_size: u32) -> Result<MaglevTable, MaglevError> {
    if table_size > MAX_TABLE_SIZE {
        return Err(MaglevError::TooLarge {
            size: table_size,
            max: MAX_TABLE_SIZE,
        });
    }
    if !is_prime(table_size) {
        return Err(MaglevError::NotPrime { size: table_size });
    }
    if usize::try_from(table_size).map_or(true, |m| m <= backends.len()) {
        return Err(MaglevError::TooSmall {
            size: table_size,
            backends: backends.len(),
        });
    }

    // Sort by canonical address first: the table must depend on the set of
    // backends, not on their order in the config.
    let mut keyed: Vec<(Vec<u8>, Backend)> =
        backends.iter().map(|b| (canonical(&b.addr), *b)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(dup) = keyed.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(MaglevError::Duplicate {
            addr: dup[1].1.addr,
        });
    }

    let active: Vec<(Vec<u8>, Backend)> = keyed.into_iter().filter(|(_, b)| b.weight > 0).collect();
    let perms: Vec<Permutation> = active
        .iter()
        .map(|(name, _)| Permutation::of(name, table_size))
        .collect();
    let weights: Vec<u32> = active.iter().map(|(_, b)| b.weight).collect();
    let slots = populate(table_size, &perms, &weights);
    Ok(MaglevTable {
        table_size,
        slots,
        backends: active.into_iter().map(|(_, b)| b).collect(),
    })
}

/// Hash of a flow's bytes (e.g. protocol || canonical source || canonical
/// destination, see [`flow_key`]) for [`MaglevTable::lookup`]: SipHash-2-4
/// keyed with [`FLOW_KEY`], identical on every machine and forever. The
/// kernel dataplane hashes packets itself (nftables `jhash` with a fixed
/// seed); this is the userspace equivalent, used by tests and tools.
pub fn flow_hash(five_tuple: &[u8]) -> u64 {
    let (k0, k1) = key_words(&FLOW_KEY);
    siphash24(k0, k1, five_tuple)
}

/// The canonical bytes of a 5-tuple for [`flow_hash`]:
/// `protocol || canonical(src) || canonical(dst)`.
pub fn flow_key(protocol: u8, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = vec![protocol];
    out.extend_from_slice(&canonical(&src));
    out.extend_from_slice(&canonical(&dst));
    out
}

/// A backend's permutation row, generated on the fly (paper, section 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Permutation {
    offset: u32,
    skip: u32,
}

impl Permutation {
    /// offset = h1(name) mod M, skip = h2(name) mod (M - 1) + 1.
    fn of(name: &[u8], m: u32) -> Self {
        let (o0, o1) = key_words(&OFFSET_KEY);
        let (s0, s1) = key_words(&SKIP_KEY);
        let m64 = u64::from(m);
        // Both results are < m <= u32::MAX, so the conversions cannot fail;
        // fall back to the smallest valid values rather than panic.
        let offset = u32::try_from(siphash24(o0, o1, name) % m64).unwrap_or(0);
        let skip = u32::try_from(siphash24(s0, s1, name) % (m64 - 1) + 1).unwrap_or(1);
        Permutation { offset, skip }
    }
}

/// Pseudocode 1 of the paper with weighted turns. `m` is prime and larger
/// than `perms.len()`; `weights` are all > 0. Returns an empty vector when
/// there is no backend.
fn populate(m: u32, perms: &[Permutation], weights: &[u32]) -> Vec<u32> {
    const EMPTY: u32 = u32::MAX;
    let n = perms.len().min(weights.len());
    if n == 0 {
        return Vec::new();
    }
    let size = usize::try_from(m).unwrap_or(0);
    let mut entry = vec![EMPTY; size];
    // next[i]: the current position in row i, i.e. permutation[i][j].
    let mut next: Vec<u64> = perms.iter().map(|p| u64::from(p.offset)).collect();
    let mut turns = Turns::new(&weights[..n]);
    let mut filled = 0usize;
    while filled < size {
        let i = turns.next_backend();
        let skip = u64::from(perms[i].skip);
        let mut c = next[i];
        // Walk row i to its first empty slot: M is prime and 1 <= skip < M,
        // so the row visits every slot and an empty one exists.
        while entry[c as usize] != EMPTY {
            c += skip;
            if c >= u64::from(m) {
                c -= u64::from(m);
            }
        }
        entry[c as usize] = i as u32;
        next[i] = c;
        filled += 1;
    }
    entry
}

/// Whose turn it is: round robin for equal weights (the paper), otherwise
/// the backend whose next turn is due earliest. Backend `i` with reduced
/// weight `w_i` has its `k`-th turn (k = 0, 1, ...) due at virtual time
/// `(k + 1/2) / w_i` (the Sainte-Lague sequence); ties go to the lowest
/// (address-sorted) index. Round `r` holds exactly the times in `[r, r + 1)`,
/// so each backend gets exactly `w_i` turns per round, interleaved, and at
/// every step its turn count is within one of its proportional share.
/// Times are compared exactly as fractions (no floating point), so the
/// order is the same on every machine.
struct Turns {
    equal: bool,
    n: usize,
    step: usize,
    heap: BinaryHeap<Reverse<Due>>,
}

/// Backend `index`'s next turn, due at `(2k + 1) / (2 w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    twice_k_plus_1: u64,
    weight: u64,
    index: usize,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // a/b < c/d  <=>  a*d < c*b (all positive; u128 cannot overflow).
        let lhs = u128::from(self.twice_k_plus_1) * u128::from(other.weight);
        let rhs = u128::from(other.twice_k_plus_1) * u128::from(self.weight);
        lhs.cmp(&rhs).then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Turns {
    fn new(weights: &[u32]) -> Self {
        let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let heap = if equal {
            BinaryHeap::new()
        } else {
            weights
                .iter()
                .enumerate()
                .map(|(index, &w)| {
                    Reverse(Due {
                        twice_k_plus_1: 1,
                        weight: u64::from((w / g).max(1)),
                        index,
                    })
                })
                .collect()
        };
        Turns {
            equal,
            n: weights.len(),
            step: 0,
            heap,
        }
    }

    fn next_backend(&mut self) -> usize {
        if self.equal || self.heap.is_empty() {
            let i = self.step % self.n.max(1);
            self.step = self.step.wrapping_add(1);
            return i;
        }
        match self.heap.peek_mut() {
            Some(mut top) => {
                let i = top.0.index;
                top.0.twice_k_plus_1 += 2;
                i
            }
            None => 0,
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Deterministic trial division; at most ~2,000 odd divisors below 2^24.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Canonical bytes of an address: family (4 or 6) || address || port (BE).
/// Their lexicographic order is the sort order of the backends.
fn canonical(addr: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

fn key_words(key: &[u8; 16]) -> (u64, u64) {
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&key[..8]);
    k1.copy_from_slice(&key[8..]);
    (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
}

/// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
/// 2012): 2 compression rounds per 8-byte little-endian word, 4 finalization
/// rounds. Byte-order independent: words are always read little-endian.
fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let chunks = msg.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(&mut v, u64::from_le_bytes(word));
    }
    // Last word: remaining bytes, and the message length mod 256 in the top byte.
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    last[7] = msg.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn v4(a: u8, b: u8, port: u16, weight: u32) -> Backend {
        Backend {
            addr: SocketAddr::from(([10, 0, a, b], port)),
            weight,
        }
    }

    fn many(n: usize, weight: impl Fn(usize) -> u32) -> Vec<Backend> {
        (0..n)
            .map(|i| v4((i / 250) as u8, (i % 250 + 1) as u8, 80, weight(i)))
            .collect()
    }

    fn counts(t: &MaglevTable) -> Vec<usize> {
        let mut c = vec![0; t.backends().len()];
        for &s in t.slots() {
            c[s as usize] += 1;
        }
        c
    }

    /// The paper's literal Pseudocode 1, with the full permutation matrix:
    /// an independent reference for `populate` (equal weights).
    fn paper_pseudocode_1(permutation: &[Vec<u32>], m: usize) -> Vec<i64> {
        let n = permutation.len();
        let mut next = vec![0usize; n];
        let mut entry = vec![-1i64; m];
        let mut filled = 0;
        loop {
            for i in 0..n {
                let mut c = permutation[i][next[i]] as usize;
                while entry[c] >= 0 {
                    next[i] += 1;
                    c = permutation[i][next[i]] as usize;
                }
                entry[c] = i as i64;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return entry;
                }
            }
        }
    }

    fn rows(offsets_skips: &[(u32, u32)], m: u32) -> Vec<Vec<u32>> {
        offsets_skips
            .iter()
            .map(|&(o, s)| (0..m).map(|j| (o + j * s) % m).collect())
            .collect()
    }

    #[test]
    fn siphash_reference_vectors() {
        // SipHash paper, Appendix A: key 00..0f, message 00..0e.
        let key: Vec<u8> = (0u8..16).collect();
        let mut k = [0u8; 16];
        k.copy_from_slice(&key);
        let (k0, k1) = key_words(&k);
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
        // Reference implementation's vectors.h, entry 0 (empty message).
        assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        // Every length 0..64 agrees with std's (deprecated) SipHasher.
        #[allow(deprecated)]
        for len in 0..64u8 {
            use std::hash::Hasher;
            let m: Vec<u8> = (0..len).collect();
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(&m);
            assert_eq!(siphash24(k0, k1, &m), h.finish(), "len {len}");
        }
    }

    #[test]
    fn paper_table_1_example() {
        // Paper, Table 1: M = 7, B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1).
        let perms = [(3, 4), (0, 2), (3, 1)];
        let r = rows(&perms, 7);
        assert_eq!(r[0], [3, 0, 4, 1, 5, 2, 6]);
        assert_eq!(r[1], [0, 2, 4, 6, 1, 3, 5]);
        assert_eq!(r[2], [3, 4, 5, 6, 0, 1, 2]);
        // By hand: round 1 B0->3, B1->0, B2->4 (3 taken); round 2 B0->1
        // (0, 4 taken), B1->2, B2->5; round 3 B0->6 (5, 2 taken). Full.
        let expected = [1, 0, 1, 0, 2, 2, 0];
        let p: Vec<Permutation> = perms
            .iter()
            .map(|&(offset, skip)| Permutation { offset, skip })
            .collect();
        assert_eq!(populate(7, &p, &[1, 1, 1]), expected);
        let reference: Vec<u32> = paper_pseudocode_1(&r, 7)
            .iter()
            .map(|&e| e as u32)
            .collect();
        assert_eq!(reference, expected);
        // B1 removed (by hand): B0->3, B2->4, B0->0, B2->5, B0->1, B2->6, B0->2.
        assert_eq!(populate(7, &[p[0], p[2]], &[1, 1]), [0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn tiny_table_from_our_hash() {
        // Three backends, given out of order; sorted they are .1, .2, .3.
        let backends = [v4(0, 3, 80, 1), v4(0, 1, 80, 1), v4(0, 2, 80, 1)];
        let sorted = [v4(0, 1, 80, 1), v4(0, 2, 80, 1), v4(0, 3, 80, 1)];
        // Offsets and skips computed independently from the frozen hash.
        let (o0, o1) = key_words(&OFFSET_KEY);
        let (s0, s1) = key_words(&SKIP_KEY);
        let derived: Vec<(u32, u32)> = sorted
            .iter()
            .map(|b| {
                let name = canonical(&b.addr);
                assert_eq!(name[..4], [4, 10, 0, 0]);
                assert_eq!(name[5..], [0, 80]);
                (
                    (siphash24(o0, o1, &name) % 7) as u32,
                    (siphash24(s0, s1, &name) % 6 + 1) as u32,
                )
            })
            .collect();
        let expected_perms: [(u32, u32); 3] = [(3, 2), (2, 4), (3, 4)];
        let expected_rows: [[u32; 7]; 3] = [
            [3, 5, 0, 2, 4, 6, 1],
            [2, 6, 3, 0, 4, 1, 5],
            [3, 0, 4, 1, 5, 2, 6],
        ];
        // By hand from the rows: round 1 B0->3, B1->2, B2->0 (3 taken);
        // round 2 B0->5, B1->6, B2->4 (0 taken); round 3 B0 walks past
        // 0, 2, 4, 6 (taken) to 1. Full after 7 turns.
        let expected_table: [u32; 7] = [2, 0, 1, 0, 2, 0, 1];
        assert_eq!(derived, expected_perms);
        assert_eq!(
            rows(&derived, 7),
            expected_rows.map(|r| r.to_vec()).to_vec()
        );
        let reference: Vec<u32> = paper_pseudocode_1(&rows(&derived, 7), 7)
            .iter()
            .map(|&e| e as u32)
            .collect();
        assert_eq!(reference, expected_table);
        let t = build(&backends, 7).expect("valid");
        assert_eq!(t.slots(), expected_table);
        assert_eq!(t.backends(), sorted);
    }

    /// Largest relative deviation of a backend's slot count from its ideal.
    fn worst_spread(t: &MaglevTable) -> f64 {
        let total: u64 = t.backends().iter().map(|b| u64::from(b.weight)).sum();
        let m = f64::from(t.table_size());
        counts(t)
            .iter()
            .zip(t.backends())
            .map(|(&c, b)| {
                let ideal = m * f64::from(b.weight) / total as f64;
                (c as f64 - ideal).abs() / ideal
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn every_slot_filled_and_spread_within_one_percent() {
        for n in [10, 100] {
            let t = build(&many(n, |_| 1), DEFAULT_TABLE_SIZE).expect("valid");
            assert_eq!(t.slots().len(), DEFAULT_TABLE_SIZE as usize);
            assert!(t.slots().iter().all(|&s| (s as usize) < n));
            let spread = worst_spread(&t);
            eprintln!("maglev spread N={n} M=65537: worst {:.4}%", spread * 100.0);
            assert!(spread <= 0.01, "N={n}: {spread}");
        }
    }

    #[test]
    fn weighted_shares_follow_weights() {
        // Weights 1 and 2 alternate: shares 1:2 within 1% of ideal.
        for n in [10, 100] {
            let t = build(&many(n, |i| 1 + (i % 2) as u32), DEFAULT_TABLE_SIZE).expect("valid");
            let spread = worst_spread(&t);
            eprintln!(
                "maglev weighted 1:2 spread N={n}: worst {:.4}%",
                spread * 100.0
            );
            assert!(spread <= 0.01, "N={n}: {spread}");
        }
        // Same shares whatever the common factor (gcd reduction), and a
        // table that fills mid-round stays proportional.
        let a = build(&many(10, |i| 1 + (i % 2) as u32), DEFAULT_TABLE_SIZE).expect("valid");
        let b = build(
            &many(10, |i| 100 + 100 * (i % 2) as u32),
            DEFAULT_TABLE_SIZE,
        )
        .expect("valid");
        assert_eq!(a.slots(), b.slots());
        let odd = build(&many(50, |i| 1000 + i as u32), DEFAULT_TABLE_SIZE).expect("valid");
        assert!(worst_spread(&odd) <= 0.01, "{}", worst_spread(&odd));
        // Drained backends are not in the table.
        let d = build(
            &many(10, |i| if i == 3 { 0 } else { 1 }),
            DEFAULT_TABLE_SIZE,
        )
        .expect("valid");
        assert_eq!(d.backends().len(), 9);
        assert!(!d
            .backends()
            .iter()
            .any(|b| b.addr == many(10, |_| 1)[3].addr));
    }

    #[test]
    fn all_drained_is_empty() {
        let t = build(&many(5, |_| 0), 7).expect("valid");
        assert!(t.is_empty());
        assert_eq!(t.lookup(12345), None);
        let t = build(&[], 7).expect("valid");
        assert_eq!(t.lookup(0), None);
    }

    #[test]
    fn removing_one_of_100_backends_moves_about_one_percent() {
        let all = many(100, |_| 1);
        let before = build(&all, DEFAULT_TABLE_SIZE).expect("valid");
        let removed = all[42].addr;
        let rest: Vec<Backend> = all.iter().filter(|b| b.addr != removed).copied().collect();
        let after = build(&rest, DEFAULT_TABLE_SIZE).expect("valid");
        let addr = |t: &MaglevTable, s: u32| t.backends()[s as usize].addr;
        let (mut changed, mut on_survivors, mut survivors_moved) = (0usize, 0usize, 0usize);
        for (&b, &a) in before.slots().iter().zip(after.slots()) {
            let (b, a) = (addr(&before, b), addr(&after, a));
            if b != a {
                changed += 1;
            }
            if b != removed {
                on_survivors += 1;
                if b != a {
                    survivors_moved += 1;
                }
            }
        }
        let m = f64::from(DEFAULT_TABLE_SIZE);
        let changed_frac = changed as f64 / m;
        let extra = survivors_moved as f64 / on_survivors as f64;
        eprintln!(
            "maglev disruption 100 -> 99 backends, M=65537: {:.3}% of slots changed \
             ({changed}; ideal 1.000%), {:.3}% of surviving backends' slots moved",
            changed_frac * 100.0,
            extra * 100.0
        );
        assert!(changed_frac < 0.02, "{changed_frac}");
        assert!(
            changed_frac >= 0.0099,
            "the removed backend's slots must all move"
        );
        assert!(extra < 0.01, "{extra}");
    }

    #[test]
    fn config_order_does_not_matter() {
        let mut list = many(100, |i| 1 + (i % 3) as u32);
        list.push(Backend {
            addr: "[2001:db8::1]:443".parse().expect("literal"),
            weight: 2,
        });
        let a = build(&list, DEFAULT_TABLE_SIZE).expect("valid");
        // Deterministic shuffle: reverse, then interleave halves.
        list.reverse();
        let (x, y) = list.split_at(list.len() / 2);
        let shuffled: Vec<Backend> = x
            .iter()
            .zip(y)
            .flat_map(|(p, q)| [*q, *p])
            .chain(y.get(x.len()..).unwrap_or(&[]).iter().copied())
            .collect();
        assert_eq!(shuffled.len(), list.len());
        let b = build(&shuffled, DEFAULT_TABLE_SIZE).expect("valid");
        assert_eq!(a, b);
        // Sorted by address: IPv4 before IPv6, then bytes, then port.
        assert!(a
            .backends()
            .windows(2)
            .all(|w| canonical(&w[0].addr) < canonical(&w[1].addr)));
    }

    #[test]
    fn golden_values() {
        // Frozen forever: a change here breaks agreement between directors
        // running different versions. Never update these to make a test pass.
        let backends = [
            v4(0, 5, 80, 1),
            v4(0, 1, 80, 1),
            v4(0, 4, 8080, 2),
            v4(0, 2, 80, 1),
            Backend {
                addr: "[2001:db8::10]:80".parse().expect("literal"),
                weight: 1,
            },
        ];
        let t = build(&backends, 251).expect("valid");
        let flow = flow_key(
            6,
            "192.0.2.1:40000".parse().expect("literal"),
            "198.51.100.1:80".parse().expect("literal"),
        );
        assert_eq!(
            t.slots()[..16],
            [0, 1, 3, 2, 3, 3, 2, 1, 3, 3, 4, 3, 3, 0, 2, 2]
        );
        let d = build(&backends, DEFAULT_TABLE_SIZE).expect("valid");
        assert_eq!(
            d.slots()[..16],
            [3, 2, 0, 2, 2, 4, 4, 4, 0, 3, 1, 2, 2, 2, 0, 4]
        );
        assert_eq!(flow_hash(&flow), 0x09ee_fedb_975e_e6c4);
        assert_eq!(
            d.lookup(flow_hash(&flow)),
            Some(
                d.backends()[d.slots()[(0x09ee_fedb_975e_e6c4u64 % 65537) as usize] as usize].addr
            )
        );
    }

    #[test]
    fn errors() {
        let three = many(3, |_| 1);
        for size in [0, 1, 4, 9, 65535, 65536] {
            assert_eq!(build(&three, size), Err(MaglevError::NotPrime { size }));
        }
        assert_eq!(
            build(&three, 3),
            Err(MaglevError::TooSmall {
                size: 3,
                backends: 3
            })
        );
        // Drained backends count: draining never invalidates a config.
        assert_eq!(
            build(&many(3, |_| 0), 2),
            Err(MaglevError::TooSmall {
                size: 2,
                backends: 3
            })
        );
        assert!(matches!(
            build(&three, u32::MAX),
            Err(MaglevError::TooLarge { .. })
        ));
        let mut dup = three.clone();
        dup.push(Backend {
            weight: 5,
            ..three[1]
        });
        assert_eq!(
            build(&dup, 7),
            Err(MaglevError::Duplicate {
                addr: three[1].addr
            })
        );
        let msg = build(&three, 65536).expect_err("not prime").to_string();
        assert!(msg.contains("65536") && msg.contains("not prime"), "{msg}");
        assert!(is_prime(2) && is_prime(7) && is_prime(65537) && is_prime(16_777_213));
        assert!(!is_prime(16_777_215) && !is_prime(65539 * 3));
    }

    #[test]
    fn build_time_100_backends() {
        let list = many(100, |_| 1);
        let start = Instant::now();
        let t = build(&list, DEFAULT_TABLE_SIZE).expect("valid");
        let equal = start.elapsed();
        let weighted = many(100, |i| 1 + (i % 7) as u32);
        let start = Instant::now();
        let w = build(&weighted, DEFAULT_TABLE_SIZE).expect("valid");
        eprintln!(
            "maglev build M=65537 N=100: {equal:?} (equal weights), {:?} (weights 1..7)",
            start.elapsed()
        );
        assert_eq!(
            t.slots().len() + w.slots().len(),
            2 * DEFAULT_TABLE_SIZE as usize
        );
    }

    #[test]
    fn lookup_follows_slots() {
        let t = build(&many(5, |_| 1), 251).expect("valid");
        for h in [0u64, 1, 250, 251, u64::MAX] {
            let slot = (h % 251) as usize;
            assert_eq!(
                t.lookup(h),
                Some(t.backends()[t.slots()[slot] as usize].addr)
            );
        }
    }

    #[test]
    fn weighted_turn_order() {
        // Due times (k + 1/2) / w: B1 1/4, B0 1/2, B1 3/4 | B1 5/4, B0 3/2, B1 7/4.
        let mut t = Turns::new(&[1, 2]);
        let seq: Vec<usize> = (0..6).map(|_| t.next_backend()).collect();
        assert_eq!(seq, [1, 0, 1, 1, 0, 1]);
        // gcd reduction; exactly w turns per round of 2 + 3 = 5.
        let mut t = Turns::new(&[20, 30]);
        let seq: Vec<usize> = (0..5).map(|_| t.next_backend()).collect();
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 2);
    }

    proptest! {
        #[test]
        fn random_backend_sets_fill_every_slot(
            raw in proptest::collection::vec((any::<u32>(), 0u16..4, 0u32..5, any::<bool>()), 0..60),
            size_pick in 0usize..6,
        ) {
            let size = [2u32, 7, 61, 251, 1021, 4093][size_pick];
            let mut set = BTreeMap::new();
            for (ip, port, weight, v6) in raw {
                let addr: SocketAddr = if v6 {
                    (std::net::Ipv6Addr::from(u128::from(ip)), port).into()
                } else {
                    (std::net::Ipv4Addr::from(ip), port).into()
                };
                set.insert(addr, weight);
            }
            let list: Vec<Backend> = set.iter().map(|(&addr, &weight)| Backend { addr, weight }).collect();
            match build(&list, size) {
                Ok(t) => {
                    let active = list.iter().filter(|b| b.weight > 0).count();
                    prop_assert_eq!(t.backends().len(), active);
                    if active == 0 {
                        prop_assert!(t.slots().is_empty());
                    } else {
                        prop_assert_eq!(t.slots().len(), size as usize);
                        prop_assert!(t.slots().iter().all(|&s| (s as usize) < active));
                        // Every active backend gets a slot once the table
                        // holds a full round of (gcd-reduced) turns.
                        let w: Vec<u32> = t.backends().iter().map(|b| b.weight).collect();
                        let g = w.iter().fold(0, |g, &x| gcd(g, x));
                        let round: u32 = w.iter().map(|&x| x / g).sum();
                        if round <= size {
                            prop_assert!(counts(&t).iter().all(|&k| k > 0));
                        }
                    }
                    let mut rev = list.clone();
                    rev.reverse();
                    prop_assert_eq!(build(&rev, size), Ok(t));
                }
                Err(e) => prop_assert_eq!(e, MaglevError::TooSmall { size, backends: list.len() }),
            }
        }
    }
}
