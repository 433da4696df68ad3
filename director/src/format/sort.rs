//! The order `ipvsadm` lists services and destinations in.
//!
//! `ipvsadm` (unless `--nosort`) hands the kernel's dump to glibc `qsort`
//! with libipvs' comparators `ipvs_cmp_services` / `ipvs_cmp_dests`. Two
//! properties of those comparators matter for byte-exact output:
//!
//! * The fwmark and every 32-bit address word are compared by subtracting
//!   the two *unsigned* values and reading the difference as a signed `int`.
//!   Values more than 2^31 apart therefore compare "backwards": 10.0.0.1
//!   sorts *after* 192.168.0.1, and fwmark services with marks >= 2^31 sort
//!   before the address-keyed services (fwmark 0). Ports, protocols and
//!   families are 16-bit and promoted to `int` first, so they compare
//!   normally.
//! * Because of that wrap the comparison is not transitive (10.x > 192.x >
//!   100.x > 10.x), so the result depends on the sorting algorithm and the
//!   input order. glibc's `qsort` is a top-down merge sort (`msort`, which
//!   glibc kept even in 2.39 when it briefly tried introsort), so we run
//!   exactly that algorithm with exactly that comparator: given the kernel's
//!   dump order we produce `ipvsadm`'s order even for such cycles. For sets
//!   without a cycle the input order does not matter.
//!
//! Destination comparison looks at the family of the *first* argument only:
//! an IPv6 first argument compares all four words, an IPv4 one only the
//! first word (an IPv4 address in the kernel's `nf_inet_addr` union is
//! followed by zeros), then the port.

use crate::model::{Family, KernelDest, ServiceKey};
use std::net::IpAddr;

/// Sort `v` the way glibc's `msort_with_tmp` does: split at `n / 2`, sort
/// both halves, merge taking from the left run while `cmp(left, right) <= 0`.
pub(crate) fn glibc_msort<T: Copy>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    {
        let (left, right) = v.split_at_mut(n1);
        glibc_msort(left, cmp);
        glibc_msort(right, cmp);
    }
    let mut merged: Vec<T> = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            merged.push(v[i]);
            i += 1;
        } else {
            merged.push(v[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    merged.extend_from_slice(&v[j..]);
    v.copy_from_slice(&merged);
}

/// An address as the four host-order 32-bit words libipvs compares.
fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// `(int)(a - b)` on unsigned 32-bit values, as C computes it.
fn wrap_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn cmp_words(first_is_v6: bool, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    if first_is_v6 {
        for i in 0..4 {
            let r = wrap_diff(a[i], b[i]);
            if r != 0 {
                return r;
            }
        }
        0
    } else {
        wrap_diff(a[0], b[0])
    }
}

/// The fields of a service entry the comparator reads. A fwmark service has
/// protocol, address and port zero (the kernel sends none of them).
struct SvcFields {
    fwmark: u32,
    af: u16,
    protocol: u16,
    words: [u32; 4],
    port: u16,
}

fn svc_fields(k: &ServiceKey) -> SvcFields {
    match k {
        ServiceKey::Inet { protocol, addr } => SvcFields {
            fwmark: 0,
            af: Family::of(&addr.ip()).af(),
            protocol: protocol.number(),
            words: words(&addr.ip()),
            port: addr.port(),
        },
        ServiceKey::Fwmark { family, mark } => SvcFields {
            fwmark: *mark,
            af: family.af(),
            protocol: 0,
            words: [0; 4],
            port: 0,
        },
    }
}

/// libipvs `ipvs_cmp_services`: fwmark, family, protocol, address, port.
pub(crate) fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let (a, b) = (svc_fields(a), svc_fields(b));
    let r = wrap_diff(a.fwmark, b.fwmark);
    if r != 0 {
        return r;
    }
    let r = i32::from(a.af) - i32::from(b.af);
    if r != 0 {
        return r;
    }
    let r = i32::from(a.protocol) - i32::from(b.protocol);
    if r != 0 {
        return r;
    }
    let r = cmp_words(a.af == Family::V6.af(), &a.words, &b.words);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// libipvs `ipvs_cmp_dests`: address (by the first entry's family), port.
pub(crate) fn cmp_dests(a: &KernelDest, b: &KernelDest) -> i32 {
    let (ka, kb) = (&a.dest.key, &b.dest.key);
    let r = cmp_words(ka.addr.is_ipv6(), &words(&ka.addr), &words(&kb.addr));
    if r != 0 {
        return r;
    }
    i32::from(ka.port) - i32::from(kb.port)
}
