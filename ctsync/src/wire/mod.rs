//! The ctsync wire protocol: authenticated, sequenced frames on a TCP
//! stream between the two directors.
//!
//! - [`frame`]: the 16-byte header, the MAC trailer, [`Frame`] (a checked
//!   view), [`FrameBuf`] (in-place builder) and [`FrameReader`] (stream
//!   reassembly across reads).
//! - [`message`]: the twelve message types, their payloads as an owned
//!   [`Message`], zero-copy batch views ([`Upserts`], [`Deletes`]) and
//!   batch writers ([`UpsertBatch`], [`DeleteBatch`]).
//! - [`record`]: entry and key records inside batches.
//! - [`crypto`]: key file -> PRK -> Hello key and per-session,
//!   per-direction frame keys (HKDF-SHA256); HMAC-SHA-256-128 tags.
//!
//! A connection, as the two [`crate::session::Session`]s drive it:
//!
//! ```text
//!  A (master)                                               B (backup)
//!  Hello{role, nonce_A, node id, max payload}  seq 0  ---->  (MAC: Hello key)
//!        (MAC: Hello key)  <----  seq 0  Hello{role, nonce_B, ...}
//!  Heartbeat  seq 1  (MAC: key(A->B))  ---->                 key confirmation:
//!             <----  seq 1  Heartbeat (MAC: key(B->A))       the first frame
//!                                                            under the session
//!  BulkStart{gen, scope=all}  seq 2  ---->                   key proves the peer
//!  Upsert{n entries}          seq 3  ---->                   holds the key file
//!  ...   (live Upsert/Delete interleave with the bulk)
//!             <----  Ack{seq}  (cumulative, one per read)
//!  BulkEnd{gen, count, digest}  ---->   B drops what it holds that the
//!                                       bulk did not mention
//!  Upsert / Delete ...  ---->           steady state
//!             <----  DigestRequest{id}   (every digest interval)
//!  Digest{id, 256 buckets}  ---->
//!             <----  ResyncRequest{buckets}   (only if buckets differ)
//!  BulkStart{gen, scope=those buckets} ... BulkEnd  ---->
//!  Heartbeat  <--->  when a direction was idle for the heartbeat interval
//!  Role{role, confirm}  <--->  after a role change, once everything queued
//!                              under the old role is sent (see session)
//! ```
//!
//! Every frame after the Hello carries the next sequence number of its
//! direction (1, 2, 3, ...) and a MAC under that direction's session key.
//! A receiver checks, in this order: header (magic, version, length
//! within its maximum: an oversized frame is refused before its payload is
//! read), MAC (constant time), sequence number (exactly the next one), type
//! and payload. Any failure closes the connection; the next connection
//! starts with a full bulk resync.
//!
//! Why 16 bytes of MAC: HMAC-SHA-256-128 is the IPsec choice (RFC 4868);
//! a forger has one guess per connection (any failure closes it and costs
//! a new handshake), so 2^-128 per guess is far beyond need, and frames
//! stay 16 bytes shorter than with the full tag. Why no session id in the
//! header: the session is the key; a frame from another session fails the
//! MAC.

mod bytes;
pub mod crypto;
pub mod frame;
pub mod message;
pub mod record;

use serde::{Deserialize, Serialize};

pub use crypto::{KeyError, MacKey, Nonce, Psk, MAC_LEN, NONCE_LEN};
pub use frame::{
    parse_header, Frame, FrameBuf, FrameReader, Header, DEFAULT_MAX_PAYLOAD, HARD_MAX_PAYLOAD,
    HEADER_LEN, MAGIC, MIN_MAX_PAYLOAD, OVERHEAD, VERSION,
};
pub use message::{
    kind, DeleteBatch, Deletes, GoodbyeReason, Hello, Message, ResyncReason, Role, UpsertBatch,
    Upserts,
};
pub use record::{decode_entry, decode_key, encode_entry, encode_key, EncodedEntry, EncodedKey};

use crate::entry::EntryError;

/// Why received bytes were rejected. Every variant is the peer's fault
/// (or an attacker's, or the network's): count it, close the connection,
/// never panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DecodeError {
    /// Fewer bytes than a field or a record needs.
    #[error("truncated: {got} bytes, need {needed}")]
    Truncated { needed: usize, got: usize },
    /// More bytes than the structure describes.
    #[error("{extra} trailing bytes")]
    TrailingBytes { extra: usize },
    /// Not a ctsync stream (or framing was lost).
    #[error("bad magic {0:#06x}, expected 0x4354")]
    BadMagic(u16),
    #[error("unsupported protocol version {0}, this node speaks {VERSION}")]
    UnsupportedVersion(u8),
    /// The header announces a payload above the receiver's maximum;
    /// rejected before reading it.
    #[error("frame payload of {length} bytes exceeds the maximum of {max}")]
    Oversized { length: u32, max: u32 },
    /// The MAC does not verify: wrong key_file on one side, a forged or
    /// altered frame, or a frame from another session.
    #[error("MAC verification failed")]
    BadMac,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("unknown address family {0}")]
    BadFamily(u8),
    #[error("unknown L4 kind {0}")]
    BadL4Kind(u8),
    #[error("unknown record flags {0:#04x}")]
    BadFlags(u8),
    #[error("reserved bytes not zero")]
    ReservedNotZero,
    #[error("unknown role {0}")]
    BadRole(u8),
    #[error("node id empty, longer than 64 bytes or not UTF-8")]
    BadNodeId,
    #[error("unknown reason code {0}")]
    BadReason(u8),
    #[error("digest of {0} buckets, expected 256")]
    BadBucketCount(u16),
}

impl DecodeError {
    /// Short stable name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::BadMagic(_) => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::BadMac => "bad_mac",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::BadFamily(_) => "bad_family",
            DecodeError::BadL4Kind(_) => "bad_l4_kind",
            DecodeError::BadFlags(_) => "bad_flags",
            DecodeError::ReservedNotZero => "reserved_not_zero",
            DecodeError::BadRole(_) => "bad_role",
            DecodeError::BadNodeId => "bad_node_id",
            DecodeError::BadReason(_) => "bad_reason",
            DecodeError::BadBucketCount(_) => "bad_bucket_count",
        }
    }
}

/// Why a message could not be encoded: our own mistake (the session
/// validates entries and configuration before they get here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum EncodeError {
    #[error("payload of {length} bytes exceeds {max}")]
    PayloadTooLarge { length: usize, max: u32 },
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("node id of {len} bytes (1..=64 allowed)")]
    NodeId { len: usize },
    #[error("{0} records do not fit a 32-bit count")]
    TooManyRecords(usize),
    #[error("digest of {0} buckets, expected 256")]
    BucketCount(usize),
}

/// Check a complete frame (header, exact length, MAC with `key`) and
/// decode its message. Returns the sequence number and the message. The
/// session does the same steps one by one so that it can count each
/// failure; this is the one-call form for tests and tools.
pub fn decode_frame(
    bytes: &[u8],
    key: &MacKey,
    max_payload: u32,
) -> Result<(u64, Message), DecodeError> {
    let frame = Frame::new_checked(bytes, max_payload)?;
    frame.verify(key)?;
    let msg = Message::decode(frame.kind(), frame.payload())?;
    Ok((frame.seq(), msg))
}

/// Decode a frame's message without checking its MAC: for the fuzz
/// targets and for tools that inspect captures without the key.
pub fn decode_frame_unauthenticated(
    bytes: &[u8],
    max_payload: u32,
) -> Result<(u64, Message), DecodeError> {
    let frame = Frame::new_checked(bytes, max_payload)?;
    let msg = Message::decode(frame.kind(), frame.payload())?;
    Ok((frame.seq(), msg))
}
