//! Every ctsync decoder on arbitrary bytes: frame header and view, the
//! payload decoder of every message type, entry and key records, and the
//! stream reassembler. No panic, and whatever decodes re-encodes to the
//! same bytes (see `ctsync::fuzzing::frame`).
//! Seed corpus: the golden frames, e.g.
//! `for f in ../testdata/*.hex; do sed 's/#.*//' $f | xxd -r -p > corpus/frame/$(basename $f .hex); done`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ctsync::fuzzing::frame(data);
});
