//! Frames: the unit of the byte stream. A view over received bytes
//! ([`Frame`], length checked once, smoltcp style), a builder that writes
//! payloads in place and seals them with the MAC ([`FrameBuf`]), and the
//! stream reassembler ([`FrameReader`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |       Magic 0x43 0x54 "CT"    |  Version (1)  |     Type      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Length (payload bytes)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                    Sequence number (64)                       +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Payload (Length bytes)                     |
//! ~                                                               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +     MAC: HMAC-SHA256(key, header | payload), first 16 bytes   +
//! |                                                               |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header is checked as soon as its 16 bytes are in: a wrong magic or
//! version, or a length above the receiver's maximum, fails there, before
//! a single byte of the payload is buffered.

use super::crypto::{MacKey, MAC_LEN};
use super::{DecodeError, EncodeError};

/// "CT".
pub const MAGIC: u16 = 0x4354;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 16;
/// Bytes a frame adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// Default largest payload accepted (and announced in Hello).
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;
/// No configuration may go above this.
pub const HARD_MAX_PAYLOAD: u32 = 16 << 20;
/// No peer may announce less than this (a Digest must fit).
pub const MIN_MAX_PAYLOAD: u32 = 4096;

/// Byte offsets of the header fields.
pub(crate) mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const LENGTH: Range<usize> = 4..8;
    pub const SEQ: Range<usize> = 8..16;
}

/// The fixed header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub length: u32,
    pub seq: u64,
}

impl Header {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        OVERHEAD.saturating_add(self.length as usize)
    }
}

fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(..2) {
        a.copy_from_slice(s);
    }
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(..4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(..8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Parse and check the header at the front of `bytes` (which may hold
/// more): magic, version, and `length <= max_payload`. The type is checked
/// later, after the MAC: an unknown type from an authenticated peer is a
/// version skew to report, not noise.
pub fn parse_header(bytes: &[u8], max_payload: u32) -> Result<Header, DecodeError> {
    let h = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
        needed: HEADER_LEN,
        got: bytes.len(),
    })?;
    let magic = be_u16(&h[field::MAGIC]);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = h[field::VERSION];
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let length = be_u32(&h[field::LENGTH]);
    if length > max_payload {
        return Err(DecodeError::Oversized {
            length,
            max: max_payload,
        });
    }
    Ok(Header {
        kind: h[field::TYPE],
        length,
        seq: be_u64(&h[field::SEQ]),
    })
}

/// A view over exactly one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    header: Header,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Check the header and that `buffer` is exactly one frame.
    pub fn new_checked(buffer: T, max_payload: u32) -> Result<Frame<T>, DecodeError> {
        let header = parse_header(buffer.as_ref(), max_payload)?;
        let got = buffer.as_ref().len();
        let expected = header.frame_len();
        if got < expected {
            return Err(DecodeError::Truncated {
                needed: expected,
                got,
            });
        }
        if got > expected {
            return Err(DecodeError::TrailingBytes {
                extra: got - expected,
            });
        }
        Ok(Frame { buffer, header })
    }

    pub fn header(&self) -> Header {
        self.header
    }

    pub fn kind(&self) -> u8 {
        self.header.kind
    }

    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Header and payload: what the MAC covers.
    pub fn signed(&self) -> &[u8] {
        let end = HEADER_LEN + self.header.length as usize;
        self.buffer.as_ref().get(..end).unwrap_or(&[])
    }

    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + self.header.length as usize;
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    pub fn mac(&self) -> &[u8] {
        let start = HEADER_LEN + self.header.length as usize;
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }

    /// Check the MAC with `key` (constant time).
    pub fn verify(&self, key: &MacKey) -> Result<(), DecodeError> {
        key.verify(&[self.signed()], self.mac())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A frame under construction: the payload is written in place after a
/// header placeholder, then [`FrameBuf::seal`] fills the header and
/// appends the MAC. One allocation per frame, none per record.
#[derive(Debug, Clone)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// A frame of type `kind` with room for `payload_capacity` bytes.
    pub fn new(kind: u8, payload_capacity: usize) -> FrameBuf {
        let mut buf = Vec::with_capacity(OVERHEAD.saturating_add(payload_capacity));
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.push(VERSION);
        buf.push(kind);
        buf.extend_from_slice(&[0; 12]);
        FrameBuf { buf }
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len().saturating_sub(HEADER_LEN)
    }

    pub fn payload(&self) -> &[u8] {
        self.buf.get(HEADER_LEN..).unwrap_or(&[])
    }

    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn put_u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    pub fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    pub fn put_u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }

    /// Overwrite 4 bytes of the payload at `offset` (a count written after
    /// the records).
    pub fn patch_u32(&mut self, offset: usize, v: u32) {
        let at = HEADER_LEN + offset;
        if let Some(dst) = self.buf.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Fill in length and sequence number and append the MAC.
    pub fn seal(mut self, seq: u64, key: &MacKey) -> Result<Vec<u8>, EncodeError> {
        let length = self.payload_len();
        let len32 = u32::try_from(length)
            .ok()
            .filter(|l| *l <= HARD_MAX_PAYLOAD)
            .ok_or(EncodeError::PayloadTooLarge {
                length,
                max: HARD_MAX_PAYLOAD,
            })?;
        if let Some(dst) = self.buf.get_mut(field::LENGTH) {
            dst.copy_from_slice(&len32.to_be_bytes());
        }
        if let Some(dst) = self.buf.get_mut(field::SEQ) {
            dst.copy_from_slice(&seq.to_be_bytes());
        }
        let tag = key.tag(&[&self.buf]);
        self.buf.extend_from_slice(&tag);
        Ok(self.buf)
    }
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
///
/// Holds at most one incomplete frame plus the last piece pushed: the
/// header is checked as soon as it is complete, so an oversized length is
/// rejected before its payload arrives. After an error the stream is
/// unusable (framing is lost) and the caller closes the connection.
#[derive(Debug, Clone, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    max_payload: u32,
}

impl FrameReader {
    pub fn new(max_payload: u32) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            max_payload,
        }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a complete frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<&[u8]>>, DecodeError> {
        let avail = self.buf.get(self.start..).unwrap_or(&[]);
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = parse_header(avail, self.max_payload)?;
        let total = header.frame_len();
        if avail.len() < total {
            return Ok(None);
        }
        let begin = self.start;
        self.start = begin + total;
        let bytes = self.buf.get(begin..begin + total).unwrap_or(&[]);
        Frame::new_checked(bytes, self.max_payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MacKey {
        MacKey::new(&[7; 32])
    }

    fn frame(kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut f = FrameBuf::new(kind, payload.len());
        f.put(payload);
        f.seal(seq, &key()).unwrap()
    }

    #[test]
    fn layout() {
        let bytes = frame(4, 0x0102_0304_0506_0708, b"abc");
        assert_eq!(bytes.len(), 16 + 3 + 16);
        assert_eq!(
            &bytes[..16],
            &[0x43, 0x54, 1, 4, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(&bytes[16..19], b"abc");
        let f = Frame::new_checked(&bytes[..], DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(f.kind(), 4);
        assert_eq!(f.seq(), 0x0102_0304_0506_0708);
        assert_eq!(f.payload(), b"abc");
        assert_eq!(f.verify(&key()), Ok(()));
        assert_eq!(f.verify(&MacKey::new(&[8; 32])), Err(DecodeError::BadMac));
    }

    #[test]
    fn header_errors() {
        let good = frame(2, 1, b"");
        let mut b = good.clone();
        b[0] = 0;
        assert_eq!(
            Frame::new_checked(&b[..], DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::BadMagic(0x0054))
        );
        let mut b = good.clone();
        b[2] = 2;
        assert_eq!(
            Frame::new_checked(&b[..], DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut b = good.clone();
        b[4..8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(
            parse_header(&b, DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::Oversized {
                length: 0x7fff_ffff,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
        assert_eq!(
            Frame::new_checked(&good[..20], DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::Truncated {
                needed: 32,
                got: 20
            })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            Frame::new_checked(&b[..], DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn reader_reassembles_any_split() {
        let mut stream = frame(2, 1, b"");
        stream.extend(frame(4, 2, &[9; 100]));
        stream.extend(frame(3, 3, &[1, 2, 3, 4, 5, 6, 7, 8]));
        for split in 0..stream.len() {
            let mut r = FrameReader::new(DEFAULT_MAX_PAYLOAD);
            let mut seqs = Vec::new();
            for piece in [&stream[..split], &stream[split..]] {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    assert_eq!(f.verify(&key()), Ok(()));
                    seqs.push(f.seq());
                }
            }
            assert_eq!(seqs, vec![1, 2, 3]);
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn reader_rejects_oversized_from_the_header_alone() {
        let mut r = FrameReader::new(1000);
        let mut header = frame(4, 1, &[0; 1001]);
        header.truncate(16);
        r.push(&header);
        assert_eq!(
            r.next_frame(),
            Err(DecodeError::Oversized {
                length: 1001,
                max: 1000
            })
        );
        // Nothing of the payload was waited for or buffered.
        assert_eq!(r.buffered(), 16);
    }
}
