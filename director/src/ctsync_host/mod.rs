//! Conntrack replication in the daemon (map of the module):
//!
//! - [`table`]: the kernel side as traits ([`table::ConntrackTable`],
//!   [`table::EventSource`]) so the driver is tested against an
//!   in-memory table.
pub mod kernel;
pub mod table;
