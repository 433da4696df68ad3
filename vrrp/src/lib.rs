//! # vrrp — VRRP v2/v3 for director (map of the crate)
//!
//! The Virtual Router Redundancy Protocol side of the director: deciding
//! which box holds the VIPs. Everything here is pure (sans-IO, DESIGN.md
//! principle 1): bytes and time go in, data comes out.
//!
//! - [`codec`]: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) adverts over IPv4
//!   and IPv6, as a view over received bytes ([`codec::Packet`]) plus a
//!   validated repr ([`codec::Advert`]); [`codec::decode`] /
//!   [`codec::encode`], checksums included (v3 with the IPv4/IPv6
//!   pseudo-header, RFC 5798 5.2.8); [`codec::parse_ipv4`] and
//!   [`codec::strip_ah`] for the headers a raw socket hands over.
//!   Round-trip tested against keepalived captures in `testdata/`
//!   (regenerate with `testdata/capture.sh`).
//! - [`machine`]: the state machine of RFC 5798 section 6 (Initialize,
//!   Backup, Master, plus keepalived's Fault) as [`machine::Instance`] with
//!   `handle(now, Input) -> Vec<Action>` and `next_deadline()`; receive
//!   validation and RFC 6527-style counters; split-brain heal; gratuitous
//!   ARP/NA schedule; status for `directorctl vrrp`.
//! - [`group`]: sync groups (keepalived `vrrp_sync_group` semantics) as pure
//!   logic over member states.
//! - [`time`]: [`time::Time`], the milliseconds clock the driver feeds.
//! - `fuzz/` (not a workspace member): `cargo fuzz run advert`, the same
//!   check the proptests in `tests/fuzz_codec.rs` run on stable.
//! - [`driver`]: the async driver: one task for all instances, timers from
//!   their deadlines (lateness measured), packets demultiplexed by port and
//!   VRID, adverts out through an [`driver::AdvertSink`] per port, every
//!   other action handed to the host as an ordered, sequence-numbered
//!   [`driver::HostEvent`] (the director adds the VIPs, then announces them).
//! - [`net`]: the I/O under the driver (Linux): [`net::interface`] facts,
//!   [`net::VrrpSocket`] (raw IP protocol 112 per interface and family,
//!   tokio-async, TTL/Hop Limit 255, multicast join, IPv6 packet info) and
//!   [`net::Announcer`] (gratuitous ARP, unsolicited NA); every socket
//!   option documented with its RFC in the module docs.

pub mod codec;
pub mod driver;
pub mod group;
pub mod machine;
pub mod net;
pub mod time;

#[doc(hidden)]
pub mod fuzzing;

pub use codec::{decode, encode, Advert, DecodeError, Received};
pub use group::SyncGroup;
pub use machine::{Action, Config, Input, Instance, State};
pub use time::Time;
