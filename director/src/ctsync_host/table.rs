//! The kernel side of conntrack replication as the ctsync driver sees it:
//! a table it can write to and dump ([`ConntrackTable`]) and a stream of
//! change events ([`EventSource`]). DESIGN.md principle 2: the driver is
//! generic over these, so its logic runs against an in-memory table in
//! unit tests, and against ctnetlink (`super::kernel`) in the daemon and
//! the netns tests.
//!
//! Both are blocking: the driver runs each on a thread of its own, so a
//! slow kernel write never stalls the sync socket, and vice versa.

use std::sync::Arc;
use std::time::Duration;

use ctsync::{Entry, Event, Key};

use crate::conntrack::ConntrackError;

/// What became of one batch of writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries written (created or updated; for deletes: deleted or
    /// already absent, ENOENT being the state we wanted).
    pub written: usize,
    /// Entries the kernel refused, with its reason.
    pub failed: Vec<(Key, String)>,
    /// At least one refusal was the table being full (ENOMEM:
    /// `nf_conntrack_max` reached), reported as such rather than as a
    /// generic failure.
    pub table_full: bool,
}

/// The local kernel conntrack table, restricted to the replicated flows.
pub trait ConntrackTable: Send + 'static {
    /// Create or update each entry (both tuples, NAT from the tuples,
    /// status, timeout, TCP protoinfo, mark, zone), many per `sendmsg`.
    /// Never writes part of an entry: an entry is one netlink message.
    fn upsert(&mut self, entries: &[Entry]) -> Applied;
    /// Delete each entry; an entry already gone counts as written.
    fn delete(&mut self, keys: &[Key]) -> Applied;
    /// Every replicated entry the kernel holds (the filter applied).
    fn dump(&mut self) -> Result<Vec<Entry>, ConntrackError>;
    /// Turns off TCP window tracking (IP_CT_TCP_FLAG_BE_LIBERAL, both
    /// directions) on every replicated TCP entry that still has it,
    /// changing nothing else. For entries this box created while it
    /// forwarded them: once the peer forwards those connections, their
    /// sequence numbers move on without us, and the window data of our
    /// entries goes stale (see `super::kernel`, "Loosening").
    fn loosen(&mut self) -> Result<Applied, ConntrackError>;
}

/// One read from the event subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceBatch {
    /// Changes, in kernel order, already filtered to the replicated flows.
    Events(Vec<Event>),
    /// The socket overran (ENOBUFS): events were lost since the last
    /// batch; the session reconciles against a dump at once.
    Overrun,
}

/// The kernel's conntrack NEW / UPDATE / DESTROY events.
pub trait EventSource: Send + 'static {
    /// Waits up to `timeout` for events; `Ok(None)` if none came (so the
    /// thread can notice a shutdown).
    fn next_batch(&mut self, timeout: Duration) -> Result<Option<SourceBatch>, ConntrackError>;
    /// The switch of this source's subscription, used by the driver's
    /// thread while the event thread reads.
    fn subscription(&self) -> Arc<dyn Subscription>;
}

/// Turns the event subscription on and off. Only a master sends its
/// events; a backup that stayed subscribed would be sent an event for
/// every entry it writes, only to drop it (at 50,000 writes/s a thread
/// woken tens of thousands of times a second, on a box already busy
/// writing).
pub trait Subscription: Send + Sync + 'static {
    /// On: events from now on are delivered. Off: none are, from now on
    /// (events already delivered may still be read).
    fn set_listening(&self, on: bool) -> Result<(), ConntrackError>;
}
