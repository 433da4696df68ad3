#![forbid(unsafe_code)]
//! # director — the daemon's library (map of the crate)
//!
//! Data flows one way (see DESIGN.md):
//! `config` -> `desired` (pure) -> `reconcile` (pure diff against a dump) ->
//! `IpvsOp`s -> `kernel::IpvsKernel` executor (`ipvs` over generic netlink).
//!
//! - [`model`]: the IPVS table as data (services, destinations, stats, ops).
//! - [`config`]: TOML -> validated model, errors as `FILE:LINE:COL: message`.
//! - [`desired`]: config -> desired table (pure function).
//! - [`reconcile`]: desired vs one kernel dump -> minimal ops (pure function).
//! - [`kernel`]: the `IpvsKernel` trait, its errors, and a recording fake.
//! - [`maglev`]: Maglev consistent hashing (NSDI 2016), shared by both directors.
//! - [`netlink`]: netlink framing shared by `ipvs` and `conntrack`.
//! - [`ipvs`]: the generic-netlink codec and socket for the "IPVS" family.
//! - [`conntrack`]: ctnetlink codec and socket (dump/create/delete entries).
//! - [`format`]: byte-exact `ipvsadm -Ln` / `-Lnc` printers.
//! - [`control`]: the control-socket protocol (JSON lines).
//! - [`metrics`]: Prometheus registry and `/metrics` endpoint (director's
//!   own series, the kernel's IPVS counters, VRRP state and RFC 6527
//!   counters).
//! - [`genl_watch`]: generic-netlink family events (ip_vs module reloads).
//! - [`dataplane`]: the `Dataplane` trait (IPVS or nftables) and `auto` choice.
//! - [`sysctl`]: the kernel settings each dataplane depends on, set and reported.
//! - [`rtnl`]: rtnetlink: VIPs on interfaces (`Addresses`, with a recording
//!   fake), interface indexes, link up/down events (`LinkWatch`).
//! - [`ipvs_sync`]: the kernel's IPVS sync daemons (IPVS connection
//!   entries to the peer): master while VRRP master, backup otherwise,
//!   repaired at every pass.
//! - [`nft`]: the nftables dataplane (`inet director` table via the nft CLI).
//! - [`vrrp_host`]: VRRP in the daemon: runs `vrrp::driver` on its own
//!   thread and executes its events in order (VIPs via `rtnl`, then
//!   gratuitous ARP/NA, notify commands, link tracking), then journals
//!   them for `directorctl vrrp --follow` (`vrrp_host::follow`).
//! - [`health`]: health checks in the daemon: the `healthcheck` runner on
//!   its own runtime, the check plan and its fan-out (`health::plan`),
//!   drains and real servers leaving the config (`health::pool`), the
//!   `directorctl health` view (`health::view`).
//! - [`ctsync_host`]: conntrack replication in the daemon: the `ctsync`
//!   session driven over TCP (`ctsync_host::driver`), ctnetlink events
//!   in, entries written out; the role follows VRRP and a takeover waits
//!   (bounded) for received entries before the VIPs (`ctsync_host::role`).
//! - [`demo`]: `director demo`: the pair, real servers and a client in
//!   network namespaces, a `kill -9` of the master, what survived.
//! - [`daemon`]: `director run`: reconcile loop, triggers, control socket,
//!   health transitions applied at once, dead-backend connection cleanup,
//!   the ctsync driver (started before VRRP, restarted by a reload that
//!   changes `[ctsync]`).
//!
//! Only `ipvs`, `nft`, `sysctl`, `conntrack` and `rtnl` write to the kernel
//! (`demo` builds its throw-away namespaces with the `ip` tool, never
//! touching an existing interface).

pub mod config;
pub mod conntrack;
pub mod control;
pub mod ctsync_host;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod desired;
pub mod format;
pub mod genl_watch;
pub mod health;
pub mod ipvs;
pub mod ipvs_sync;
pub mod kernel;
pub mod maglev;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod reconcile;
pub mod rtnl;
pub mod sysctl;
pub mod vrrp_host;

#[cfg(test)]
mod test_captures;
#[cfg(test)]
mod test_netns;
