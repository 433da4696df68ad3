//! A session driven by a scripted peer: the input picks raw bytes,
//! authenticated frames of any type and payload, valid batches and bulks,
//! timers, kernel events, dumps and role changes. No panic, memory bounded
//! by the distinct keys, no timer that fails to advance (see
//! `ctsync::fuzzing::session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ctsync::fuzzing::session(data);
});
