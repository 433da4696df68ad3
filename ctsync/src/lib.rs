#![forbid(unsafe_code)]
//! # ctsync — conntrack replication for director (map of the crate)
//!
//! The master of the pair streams its connection-tracking table to the
//! backup, which writes every entry straight into its own kernel table, so
//! that a failover keeps established (and NATed) connections alive. This
//! crate is the pure core (DESIGN.md principle 1): bytes, kernel events
//! and time go in, bytes and kernel writes come out as data. The director
//! owns the TCP socket, ctnetlink and the clock.
//!
//! - [`entry`]: the replicated entry as plain data ([`Entry`], [`Key`]):
//!   both tuples, status bits, timeout, mark, zone, TCP protoinfo; NAT is
//!   implied by the tuples.
//! - [`wire`]: the protocol on the byte stream: framing, HMAC, key
//!   derivation, the twelve messages, record layouts (diagrams in
//!   [`wire::frame`], [`wire::message`], [`wire::record`],
//!   [`wire::crypto`]). View + validated repr; nothing panics on any
//!   input.
//! - [`digest`]: stable hashes, the 256 buckets and digests behind cheap
//!   reconciliation.
//! - [`session`]: the sans-IO [`Session`]: handshake, sequencing, acks,
//!   window and coalescing, bulk resync, digest and dump reconciliation,
//!   role changes, counters ([`session::Stats`]) for `directorctl sync`.
//! - [`time`]: [`Time`], the milliseconds clock the driver feeds.
//! - `fuzz/` (not a workspace member): `cargo +nightly fuzz run frame` and
//!   `... run session`; the same bodies ([`fuzzing`]) run on stable as the
//!   proptests of `tests/fuzz_wire.rs`.
//!
//! ## The protocol in one picture
//!
//! ```text
//!  frame = header (16) | payload (Length) | MAC (16)
//!
//!  +--------+--------+--------+--------+
//!  |  'C'   |  'T'   | ver 1  |  type  |   type: 1 Hello 2 Heartbeat 3 Ack
//!  +--------+--------+--------+--------+         4 Upsert 5 Delete
//!  |      payload length (32)          |         6 BulkStart 7 BulkEnd
//!  +--------+--------+--------+--------+         8 DigestRequest 9 Digest
//!  |      sequence number (64)         |         10 ResyncRequest 11 Role
//!  |                                   |         12 Goodbye
//!  +--------+--------+--------+--------+
//!  |      payload ...                  |
//!  +--------+--------+--------+--------+
//!  | HMAC-SHA256(direction key,        |
//!  |   header | payload), 16 bytes     |
//!  +--------+--------+--------+--------+
//!
//!  master                                         backup
//!    Hello{nonce_m}  ------------------------------>
//!    <------------------------------  Hello{nonce_b}
//!    Heartbeat (key m->b)  ------------------------>   key confirmation
//!    <------------------------  Heartbeat (key b->m)
//!    BulkStart, Upsert*, BulkEnd{digest}  --------->   full resync
//!    <------------------------------------  Ack{seq}
//!    Upsert / Delete (live, batched)  ------------->   written to the kernel
//!    <--------------------------  DigestRequest{id}    as they arrive
//!    Digest{256 buckets}  ------------------------->
//!    <----------------  ResyncRequest{buckets} (if they differ)
//!
//!  switchover on a live connection (no resync):
//!    (old master drains its queue)       <---  Role{Master, confirm}
//!    Role{Backup}  --------------------------->   the drain marker: the new
//!                                                 master now reconciles and
//!                                                 compares digests
//! ```
//!
//! ## Why it is built this way
//!
//! Each choice answers a known failure of conntrackd + keepalived (facts
//! from conntrackd.conf(5) and the issue's measurements):
//!
//! - **No commit step.** In conntrackd's default FTFW mode the backup
//!   keeps received entries in a userspace "external cache" and the
//!   failover script must run `conntrackd -c` to write them into the
//!   kernel; keepalived brings the VIPs up before that commit finishes
//!   (about 11 us per entry), so connections arriving in that window are
//!   reset. Here the backup writes every entry to its kernel table as it
//!   arrives ([`session::Action::ApplyUpserts`]): at takeover there is
//!   nothing left to do, and nothing to race.
//! - **A reliable ordered stream plus a MAC on every frame.** conntrackd's
//!   sync messages carry at most a checksum (`Checksum on`), not a MAC:
//!   anyone on the sync link can inject conntrack entries. Here every frame is
//!   authenticated with HMAC-SHA-256-128 (RFC 4868) under a key derived
//!   from the shared key file; TCP gives order and retransmission, so the
//!   protocol needs no resend queue of its own, and a sequence number that
//!   is not exactly the next one is a replay or an injection, counted and
//!   fatal to the connection.
//! - **Session nonces.** Both sides send a fresh nonce in their Hello and
//!   the frame keys are derived from the key file and both nonces (HKDF,
//!   RFC 5869), one key per direction. A recorded session cannot be
//!   replayed into a new one, frames cannot be reflected, and a
//!   connection costs nothing (no dump) until the peer proved it holds the
//!   key.
//! - **Resync without waiting.** conntrackd requests a resync at startup
//!   only with `StartupResync` (off by default), and the kernel's IPVS
//!   sync daemon only learns connections again as their packets arrive
//!   (and skips those shorter than its packet threshold). Here every new
//!   connection between the pair starts with a full bulk from the master,
//!   and the bulk also removes what the backup holds that the master no
//!   longer has.
//! - **Overruns repaired at once.** conntrackd schedules a resync 30 s
//!   after a netlink event overrun (`NetlinkOverrunResync`); until then
//!   lost state stays lost. Here an overrun makes the master dump and send
//!   the differences immediately.
//! - **Bounded memory under load.** When the peer or the link is slow,
//!   changes coalesce per connection (latest state wins) instead of
//!   queueing per event, so memory follows the number of connections,
//!   never the event rate.
//! - **Cheap reconciliation.** Digests over 256 buckets (3 KiB) find
//!   divergence; only differing buckets are re-sent.
//! - **Switchover without a resync and without crossed updates.** Both
//!   sides keep the same replicated set, so the new master continues from
//!   it; the old master marks the end of its queued changes with a Role
//!   frame, and the new master acts on its own set only after that marker
//!   (see [`session`]).
//! - **No lock file, no separate daemon.** The session is a value inside
//!   the director; a crash leaves nothing behind that blocks a restart.

pub mod digest;
pub mod entry;
pub mod session;
pub mod time;
pub mod wire;

#[doc(hidden)]
pub mod fuzzing;

pub use entry::{Entry, Family, Key, TcpInfo, Tuple, L4};
pub use session::{Action, Config, Event, Input, Session, Stats, Status};
pub use time::Time;
pub use wire::{DecodeError, EncodeError, Message, Psk, Role};
