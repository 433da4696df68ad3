//! Message payloads: the owned repr ([`Message`]), zero-copy views of the
//! two batch payloads ([`Upserts`], [`Deletes`]) and in-place batch
//! writers for the hot path ([`UpsertBatch`], [`DeleteBatch`]).
//!
//! Payload of each type (big-endian; "R" = reserved, must be zero):
//!
//! ```text
//! 1 Hello          | role (1) | R (2) | node id len (1) | max payload (4) |
//!                  | nonce (16) | node id (1..=64 bytes, UTF-8) |
//! 2 Heartbeat      (empty)
//! 3 Ack            | cumulative sequence number (8) |
//! 4 Upsert         | count (4) | count entry records (record.rs) |
//! 5 Delete         | count (4) | count key records (record.rs) |
//! 6 BulkStart      | generation (4) | scope (32) |
//! 7 BulkEnd        | generation (4) | entries sent (4) | digest fold (8) |
//! 8 DigestRequest  | id (4) |
//! 9 Digest         | id (4) | buckets = 256 (2) | R (2) |
//!                  | 256 x ( count (4) | sum (8) ) |
//! 10 ResyncRequest | reason (1) | R (3) | scope (32) |
//! 11 Role          | role (1) | flags (1) | R (2) |    flags bit 0: confirm
//! 12 Goodbye       | reason (1) | R (3) |
//!
//! role: 1 master, 2 backup. scope: 256-bit bucket map (digest.rs).
//! ResyncRequest reason: 1 digest mismatch, 2 kernel differs,
//!   3 apply failed. Goodbye reason: 1 shutdown, 2 error.
//! ```
//!
//! Every payload must be consumed exactly: trailing bytes are an error.

use serde::{Deserialize, Serialize};

use super::bytes::Reader;
use super::crypto::{MacKey, Nonce, NONCE_LEN};
use super::frame::FrameBuf;
use super::record::{self, MIN_ENTRY_LEN, MIN_KEY_LEN};
use super::{DecodeError, EncodeError};
use crate::digest::{BucketDigest, Digest, Scope, BUCKETS, SCOPE_LEN};
use crate::entry::{Entry, Key};

/// Message type codes (the header's Type byte).
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const HEARTBEAT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const UPSERT: u8 = 4;
    pub const DELETE: u8 = 5;
    pub const BULK_START: u8 = 6;
    pub const BULK_END: u8 = 7;
    pub const DIGEST_REQUEST: u8 = 8;
    pub const DIGEST: u8 = 9;
    pub const RESYNC_REQUEST: u8 = 10;
    pub const ROLE: u8 = 11;
    pub const GOODBYE: u8 = 12;
}

/// Longest node id in a Hello.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Bytes of a Digest payload.
pub const DIGEST_PAYLOAD_LEN: usize = 8 + BUCKETS * 12;

/// A node's replication role, following its VRRP state: the master sends
/// its conntrack table, the backup writes what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Master,
    Backup,
}

impl Role {
    pub fn code(self) -> u8 {
        match self {
            Role::Master => 1,
            Role::Backup => 2,
        }
    }

    pub fn from_code(code: u8) -> Result<Role, DecodeError> {
        match code {
            1 => Ok(Role::Master),
            2 => Ok(Role::Backup),
            other => Err(DecodeError::BadRole(other)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a receiver asks for buckets again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncReason {
    /// The digests differ in these buckets.
    DigestMismatch,
    /// Entries the receiver holds are gone from its kernel table (expired,
    /// flushed by an operator) or differ there (changes lost while it was
    /// master).
    KernelDiffers,
    /// The receiver's kernel refused entries (table full).
    ApplyFailed,
}

impl ResyncReason {
    pub fn code(self) -> u8 {
        match self {
            ResyncReason::DigestMismatch => 1,
            ResyncReason::KernelDiffers => 2,
            ResyncReason::ApplyFailed => 3,
        }
    }

    pub fn from_code(code: u8) -> Result<ResyncReason, DecodeError> {
        match code {
            1 => Ok(ResyncReason::DigestMismatch),
            2 => Ok(ResyncReason::KernelDiffers),
            3 => Ok(ResyncReason::ApplyFailed),
            other => Err(DecodeError::BadReason(other)),
        }
    }
}

/// Why a peer says goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// The daemon stops.
    Shutdown,
    /// The sender closes after an error it detected.
    Error,
}

impl GoodbyeReason {
    pub fn code(self) -> u8 {
        match self {
            GoodbyeReason::Shutdown => 1,
            GoodbyeReason::Error => 2,
        }
    }

    pub fn from_code(code: u8) -> Result<GoodbyeReason, DecodeError> {
        match code {
            1 => Ok(GoodbyeReason::Shutdown),
            2 => Ok(GoodbyeReason::Error),
            other => Err(DecodeError::BadReason(other)),
        }
    }
}

/// The handshake message, sent first by both sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    pub role: Role,
    /// The largest payload the sender accepts.
    pub max_payload: u32,
    /// Fresh random bytes for this connection (see `crypto`).
    pub nonce: Nonce,
    /// The sender's `router_id`, for logs and `directorctl sync`.
    pub node_id: String,
}

/// One message, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello(Hello),
    Heartbeat,
    /// Every frame up to and including `seq` was processed.
    Ack {
        seq: u64,
    },
    Upsert {
        entries: Vec<Entry>,
    },
    Delete {
        keys: Vec<Key>,
    },
    /// A (partial when `scope` is not every bucket) bulk resync begins: the
    /// receiver notes every key it gets until the matching BulkEnd.
    BulkStart {
        generation: u32,
        scope: Scope,
    },
    /// The bulk is complete: the receiver drops what it holds in `scope`
    /// that it did not get since BulkStart, then compares `digest` (the
    /// sender's [`Digest::fold`] over `scope`).
    BulkEnd {
        generation: u32,
        count: u32,
        digest: u64,
    },
    DigestRequest {
        id: u32,
    },
    Digest {
        id: u32,
        digest: Digest,
    },
    ResyncRequest {
        reason: ResyncReason,
        scope: Scope,
    },
    /// The sender's role changed (or, without `confirm`, the answer to a
    /// Role with `confirm`). Sent only after everything queued under the
    /// previous role: a master stepping down marks the end of its changes
    /// with it. `confirm` asks the peer to answer with its own Role once it
    /// has sent everything it queued: a new master waits for that answer
    /// before acting on its own set, so nothing it decides crosses the old
    /// master's last changes.
    Role {
        role: Role,
        confirm: bool,
    },
    Goodbye {
        reason: GoodbyeReason,
    },
}

impl Message {
    /// The Type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Heartbeat => kind::HEARTBEAT,
            Message::Ack { .. } => kind::ACK,
            Message::Upsert { .. } => kind::UPSERT,
            Message::Delete { .. } => kind::DELETE,
            Message::BulkStart { .. } => kind::BULK_START,
            Message::BulkEnd { .. } => kind::BULK_END,
            Message::DigestRequest { .. } => kind::DIGEST_REQUEST,
            Message::Digest { .. } => kind::DIGEST,
            Message::ResyncRequest { .. } => kind::RESYNC_REQUEST,
            Message::Role { .. } => kind::ROLE,
            Message::Goodbye { .. } => kind::GOODBYE,
        }
    }

    /// Whether the receiver acknowledges it (and the sender counts it
    /// against its window). Handshake, heartbeats, acks and goodbyes are
    /// not: acking an ack would never end.
    pub fn is_ack_eliciting(kind: u8) -> bool {
        !matches!(
            kind,
            kind::HELLO | kind::HEARTBEAT | kind::ACK | kind::GOODBYE
        )
    }

    /// Write the payload into a frame under construction.
    pub fn write_payload(&self, f: &mut FrameBuf) -> Result<(), EncodeError> {
        match self {
            Message::Hello(h) => {
                let id = h.node_id.as_bytes();
                if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
                    return Err(EncodeError::NodeId { len: id.len() });
                }
                f.put_u8(h.role.code());
                f.put(&[0, 0]);
                f.put_u8(id.len() as u8);
                f.put_u32(h.max_payload);
                f.put(&h.nonce.0);
                f.put(id);
            }
            Message::Heartbeat => {}
            Message::Ack { seq } => f.put_u64(*seq),
            Message::Upsert { entries } => {
                let count = u32::try_from(entries.len())
                    .map_err(|_| EncodeError::TooManyRecords(entries.len()))?;
                f.put_u32(count);
                for e in entries {
                    f.put(record::encode_entry(e)?.as_bytes());
                }
            }
            Message::Delete { keys } => {
                let count = u32::try_from(keys.len())
                    .map_err(|_| EncodeError::TooManyRecords(keys.len()))?;
                f.put_u32(count);
                for k in keys {
                    f.put(record::encode_key(k)?.as_bytes());
                }
            }
            Message::BulkStart { generation, scope } => {
                f.put_u32(*generation);
                f.put(&scope.0);
            }
            Message::BulkEnd {
                generation,
                count,
                digest,
            } => {
                f.put_u32(*generation);
                f.put_u32(*count);
                f.put_u64(*digest);
            }
            Message::DigestRequest { id } => f.put_u32(*id),
            Message::Digest { id, digest } => {
                if digest.buckets.len() != BUCKETS {
                    return Err(EncodeError::BucketCount(digest.buckets.len()));
                }
                f.put_u32(*id);
                f.put_u16(BUCKETS as u16);
                f.put_u16(0);
                for b in &digest.buckets {
                    f.put_u32(b.count);
                    f.put_u64(b.sum);
                }
            }
            Message::ResyncRequest { reason, scope } => {
                f.put_u8(reason.code());
                f.put(&[0, 0, 0]);
                f.put(&scope.0);
            }
            Message::Role { role, confirm } => {
                f.put_u8(role.code());
                f.put_u8(u8::from(*confirm));
                f.put(&[0, 0]);
            }
            Message::Goodbye { reason } => {
                f.put_u8(reason.code());
                f.put(&[0, 0, 0]);
            }
        }
        Ok(())
    }

    /// Encode as one sealed frame.
    pub fn encode_frame(&self, seq: u64, key: &MacKey) -> Result<Vec<u8>, EncodeError> {
        let mut f = FrameBuf::new(self.kind(), 64);
        self.write_payload(&mut f)?;
        f.seal(seq, key)
    }

    /// Decode the payload of a frame of type `kind`. Never panics.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(payload);
        let msg = match kind {
            kind::HELLO => {
                let role = Role::from_code(r.u8()?)?;
                r.zeros(2)?;
                let id_len = usize::from(r.u8()?);
                let max_payload = r.u32()?;
                let nonce = Nonce(r.array::<NONCE_LEN>()?);
                if id_len == 0 || id_len > MAX_NODE_ID_LEN {
                    return Err(DecodeError::BadNodeId);
                }
                let node_id = std::str::from_utf8(r.take(id_len)?)
                    .map_err(|_| DecodeError::BadNodeId)?
                    .to_string();
                Message::Hello(Hello {
                    role,
                    max_payload,
                    nonce,
                    node_id,
                })
            }
            kind::HEARTBEAT => Message::Heartbeat,
            kind::ACK => Message::Ack { seq: r.u64()? },
            kind::UPSERT => {
                let mut entries = Vec::new();
                Upserts::parse(payload)?.decode_into(&mut entries)?;
                return Ok(Message::Upsert { entries });
            }
            kind::DELETE => {
                let mut keys = Vec::new();
                Deletes::parse(payload)?.decode_into(&mut keys)?;
                return Ok(Message::Delete { keys });
            }
            kind::BULK_START => Message::BulkStart {
                generation: r.u32()?,
                scope: Scope(r.array::<SCOPE_LEN>()?),
            },
            kind::BULK_END => Message::BulkEnd {
                generation: r.u32()?,
                count: r.u32()?,
                digest: r.u64()?,
            },
            kind::DIGEST_REQUEST => Message::DigestRequest { id: r.u32()? },
            kind::DIGEST => {
                let id = r.u32()?;
                let n = r.u16()?;
                if usize::from(n) != BUCKETS {
                    return Err(DecodeError::BadBucketCount(n));
                }
                r.zeros(2)?;
                let mut buckets = Vec::with_capacity(BUCKETS);
                for _ in 0..BUCKETS {
                    buckets.push(BucketDigest {
                        count: r.u32()?,
                        sum: r.u64()?,
                    });
                }
                Message::Digest {
                    id,
                    digest: Digest { buckets },
                }
            }
            kind::RESYNC_REQUEST => {
                let reason = ResyncReason::from_code(r.u8()?)?;
                r.zeros(3)?;
                Message::ResyncRequest {
                    reason,
                    scope: Scope(r.array::<SCOPE_LEN>()?),
                }
            }
            kind::ROLE => {
                let role = Role::from_code(r.u8()?)?;
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(DecodeError::BadFlags(flags));
                }
                r.zeros(2)?;
                Message::Role {
                    role,
                    confirm: flags & 1 != 0,
                }
            }
            kind::GOODBYE => {
                let reason = GoodbyeReason::from_code(r.u8()?)?;
                r.zeros(3)?;
                Message::Goodbye { reason }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Records of a batch payload must be able to fill `count`; checked
/// before anything is reserved, so a lying count cannot make us allocate.
fn check_count(count: u32, records: usize, min_len: usize) -> Result<usize, DecodeError> {
    let count = count as usize;
    let needed = count.saturating_mul(min_len);
    if needed > records {
        return Err(DecodeError::Truncated {
            needed: needed.saturating_add(4),
            got: records.saturating_add(4),
        });
    }
    Ok(count)
}

/// A view over an Upsert payload.
#[derive(Debug, Clone, Copy)]
pub struct Upserts<'a> {
    count: usize,
    records: &'a [u8],
}

impl<'a> Upserts<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Upserts<'a>, DecodeError> {
        let mut r = Reader::new(payload);
        let count = r.u32()?;
        let records = payload.get(r.position()..).unwrap_or(&[]);
        let count = check_count(count, records.len(), MIN_ENTRY_LEN)?;
        Ok(Upserts { count, records })
    }

    /// The count the payload announces.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The entries, decoded one by one. Stops at the first error.
    pub fn iter(&self) -> Records<'a, Entry> {
        Records {
            reader: Reader::new(self.records),
            left: self.count,
            read: record::read_entry,
            failed: false,
        }
    }

    /// Decode every entry into `out`, all or nothing: on error `out` is
    /// left as it was, so a bad batch never yields a partial one.
    pub fn decode_into(&self, out: &mut Vec<Entry>) -> Result<(), DecodeError> {
        decode_all(self.iter(), self.count, out)
    }
}

/// A view over a Delete payload.
#[derive(Debug, Clone, Copy)]
pub struct Deletes<'a> {
    count: usize,
    records: &'a [u8],
}

impl<'a> Deletes<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Deletes<'a>, DecodeError> {
        let mut r = Reader::new(payload);
        let count = r.u32()?;
        let records = payload.get(r.position()..).unwrap_or(&[]);
        let count = check_count(count, records.len(), MIN_KEY_LEN)?;
        Ok(Deletes { count, records })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn iter(&self) -> Records<'a, Key> {
        Records {
            reader: Reader::new(self.records),
            left: self.count,
            read: record::read_key,
            failed: false,
        }
    }

    /// All or nothing, like [`Upserts::decode_into`].
    pub fn decode_into(&self, out: &mut Vec<Key>) -> Result<(), DecodeError> {
        decode_all(self.iter(), self.count, out)
    }
}

fn decode_all<T>(
    mut it: Records<'_, T>,
    count: usize,
    out: &mut Vec<T>,
) -> Result<(), DecodeError> {
    let start = out.len();
    out.reserve(count);
    for item in it.by_ref() {
        match item {
            Ok(v) => out.push(v),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    if let Err(e) = it.reader.finish() {
        out.truncate(start);
        return Err(e);
    }
    Ok(())
}

/// Iterator over the records of a batch view.
pub struct Records<'a, T> {
    reader: Reader<'a>,
    left: usize,
    read: fn(&mut Reader<'a>) -> Result<T, DecodeError>,
    failed: bool,
}

impl<T> Iterator for Records<'_, T> {
    type Item = Result<T, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let item = (self.read)(&mut self.reader);
        self.failed = item.is_err();
        Some(item)
    }
}

/// An Upsert frame being filled in place: records are encoded straight
/// into the frame buffer (no allocation per entry), the count is patched
/// in at the end.
#[derive(Debug, Clone)]
pub struct UpsertBatch {
    frame: FrameBuf,
    count: u32,
}

impl UpsertBatch {
    pub fn new(payload_capacity: usize) -> UpsertBatch {
        let mut frame = FrameBuf::new(kind::UPSERT, payload_capacity);
        frame.put_u32(0);
        UpsertBatch { frame, count: 0 }
    }

    /// Append one entry.
    pub fn push(&mut self, entry: &Entry) -> Result<(), EncodeError> {
        let rec = record::encode_entry(entry)?;
        self.count = self
            .count
            .checked_add(1)
            .ok_or(EncodeError::TooManyRecords(u32::MAX as usize))?;
        self.frame.put(rec.as_bytes());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn payload_len(&self) -> usize {
        self.frame.payload_len()
    }

    pub fn seal(mut self, seq: u64, key: &MacKey) -> Result<Vec<u8>, EncodeError> {
        self.frame.patch_u32(0, self.count);
        self.frame.seal(seq, key)
    }
}

/// A Delete frame being filled in place.
#[derive(Debug, Clone)]
pub struct DeleteBatch {
    frame: FrameBuf,
    count: u32,
}

impl DeleteBatch {
    pub fn new(payload_capacity: usize) -> DeleteBatch {
        let mut frame = FrameBuf::new(kind::DELETE, payload_capacity);
        frame.put_u32(0);
        DeleteBatch { frame, count: 0 }
    }

    pub fn push(&mut self, key: &Key) -> Result<(), EncodeError> {
        let rec = record::encode_key(key)?;
        self.count = self
            .count
            .checked_add(1)
            .ok_or(EncodeError::TooManyRecords(u32::MAX as usize))?;
        self.frame.put(rec.as_bytes());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn payload_len(&self) -> usize {
        self.frame.payload_len()
    }

    pub fn seal(mut self, seq: u64, key: &MacKey) -> Result<Vec<u8>, EncodeError> {
        self.frame.patch_u32(0, self.count);
        self.frame.seal(seq, key)
    }
}
