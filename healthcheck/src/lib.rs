#![forbid(unsafe_code)]
//! # healthcheck — real-server health checks for director (map of the crate)
//!
//! Empty until the health-check issue lands. Intended shape:
//!
//! - `hysteresis`: the pure rise/fall state function, time as an input.
//! - `checkers`: TCP, HTTP, HTTPS (rustls) and script (argv, no shell).
//! - `dedup`: identical checks run once and fan out to every user.
//!
//! The director applies results; this crate never touches the kernel.
