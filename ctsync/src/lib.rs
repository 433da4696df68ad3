#![forbid(unsafe_code)]
//! # ctsync — conntrack replication for director (map of the crate)
//!
//! Empty until the conntrack-sync issue lands. Intended shape:
//!
//! - `wire`: the authenticated, sequenced stream protocol between the pair.
//! - `session`: sans-IO master/backup sessions (bulk resync, heartbeats,
//!   backpressure), `handle(now, input) -> actions`.
//! - `driver`: the tokio driver; conntrack is read and written only through a
//!   trait that the director implements over ctnetlink.
