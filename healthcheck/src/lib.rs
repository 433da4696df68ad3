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
//!
//! The director applies results; this crate never touches the kernel.

pub mod http1;
pub mod hysteresis;
pub mod probe;
pub mod spec;

pub use hysteresis::{Health, Hysteresis, Transition};
pub use probe::{Failure, Prepared, SpecError, Stage};
pub use spec::{BodyMatch, CheckSpec, HttpProbe, Probe, ScriptProbe, StatusRange, TlsProbe};
