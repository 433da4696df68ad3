//! Every VRRP decoder on arbitrary bytes: no panic, and a successful decode
//! re-encodes to an equal repr (see `vrrp::fuzzing::advert`).
//! Seed corpus: the keepalived captures, e.g.
//! `for f in ../testdata/*.hex; do grep -v '^#' $f | xxd -r -p > corpus/advert/$(basename $f .hex); done`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vrrp::fuzzing::advert(data);
});
