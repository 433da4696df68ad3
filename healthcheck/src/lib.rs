#![forbid(unsafe_code)]
//! # healthcheck — real-server health checks for director (map of the crate)
//!
//! - [`spec`]: what a check is (`CheckSpec`: target, probe kind, interval,
//!   timeout, rise, fall), plain hashable data: equal specs are one check.
//! - [`hysteresis`]: the pure rise/fall function, time as an input; a state
//!   flips only on the edge.
//! - [`http1`]: a pure, bounded HTTP/1.x response parser for the HTTP(S)
//!   probes (garbage, endless headers and enormous bodies are errors).
//! - [`probe`]: the probes (TCP connect, HTTP, HTTPS over rustls, script as
//!   argv in its own process group), each bounded by its timeout and failing
//!   with a reason that names the stage.
//! - `tcp`: the TCP probe's sockets: the outcome read at once when the
//!   kernel already has it (no reactor round trip), sockets reused through
//!   `connect(AF_UNSPEC)` (no socket/close per probe).
//! - [`schedule`]: stable first offsets (no thundering herd) and the
//!   fixed-rate next start, pure.
//! - [`runner`]: the tokio side. Runs each distinct spec once (dedup),
//!   feeds the hysteresis, reports results and edges as events, restarts a
//!   check that stopped completing rounds (the watchdog).
//!
//! The director applies results; this crate never touches the kernel.

pub mod http1;
pub mod hysteresis;
pub mod probe;
pub mod runner;
pub mod schedule;
pub mod spec;
mod tcp;

pub use hysteresis::{Health, Hysteresis, Transition};
pub use probe::{Failure, Prepared, SpecError, Stage};
pub use spec::{BodyMatch, CheckSpec, HttpProbe, Probe, ScriptProbe, StatusRange, TlsProbe};
