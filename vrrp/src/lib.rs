//! # vrrp — VRRP v2/v3 for director (map of the crate)
//!
//! This crate will hold the Virtual Router Redundancy Protocol side of the
//! director. It is empty until the VRRP issue lands; this map records the
//! intended shape so that the other crates can be written against it.
//!
//! - `codec`: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) adverts over IPv4 and
//!   IPv6, as a view over received bytes plus a validated repr, checksums
//!   included (v3 over IPv4 uses the pseudo-header, RFC 5798 5.2.8).
//! - `machine`: the sans-IO state machine of RFC 5798 section 6
//!   (Initialize/Backup/Master plus Fault) with `handle(now, input) ->
//!   actions` and `next_deadline()`; time is an input.
//! - `driver`: the tokio driver that owns the raw IPPROTO 112 sockets and the
//!   timers, and hands VIP changes to the director's kernel layer as data.
