//! # director-tests — cross-crate integration tests (map of the crate)
//!
//! - `tests/lab/`: the kernel lab (qemu + Debian's stock kernel with IPVS).
