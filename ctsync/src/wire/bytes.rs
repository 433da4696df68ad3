//! Bounds-checked big-endian cursors: every read says how many bytes it
//! needed, every write goes into a buffer sized beforehand. Nothing here
//! indexes out of range, so nothing here panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;
use crate::entry::Family;

/// Reads fields in order from a byte slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated {
            needed: usize::MAX,
            got: self.bytes.len(),
        })?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated {
                needed: end,
                got: self.bytes.len(),
            })?;
        self.pos = end;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Bytes that must be zero (reserved fields keep the encoding
    /// canonical: one repr, one byte string).
    pub(crate) fn zeros(&mut self, n: usize) -> Result<(), DecodeError> {
        if self.take(n)?.iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(DecodeError::ReservedNotZero)
        }
    }

    pub(crate) fn addr(&mut self, family: Family) -> Result<IpAddr, DecodeError> {
        Ok(match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
        })
    }

    /// Everything must have been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

/// Writes fields in order into a fixed buffer the caller sized for them.
/// Writes past the end are dropped and remembered, so a sizing mistake is
/// an error the caller sees ([`Writer::finish`]), not a panic.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos = end;
            }
            None => self.overflow = true,
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    pub(crate) fn addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.put(&a.octets()),
            IpAddr::V6(a) => self.put(&a.octets()),
        }
    }

    /// Bytes written, or `None` if the buffer was too small.
    pub(crate) fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.pos)
    }
}
