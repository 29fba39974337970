//! Little-endian encoding helpers shared by every on-disk and on-wire format.
//!
//! Writers append to a `Vec<u8>`; [`Reader`] is a bounds-checked cursor whose every read returns
//! a [`RaftError::Decode`] on short input. Nothing here panics on any input, and a length read
//! from input is checked against the bytes that remain before anything is allocated for it.

use byteorder::{ByteOrder, LittleEndian};

use crate::error::{RaftError, Result};

/// Appends a `u8`.
pub fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}

/// Appends a little-endian `u16`.
pub fn put_u16(buf: &mut Vec<u8>, v: u16) {
    let mut b = [0u8; 2];
    LittleEndian::write_u16(&mut b, v);
    buf.extend_from_slice(&b);
}

/// Appends a little-endian `u32`.
pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    let mut b = [0u8; 4];
    LittleEndian::write_u32(&mut b, v);
    buf.extend_from_slice(&b);
}

/// Appends a little-endian `u64`.
pub fn put_u64(buf: &mut Vec<u8>, v: u64) {
    let mut b = [0u8; 8];
    LittleEndian::write_u64(&mut b, v);
    buf.extend_from_slice(&b);
}

/// Appends `bytes` prefixed by their length as a `u32`.
///
/// # Panics
/// If `bytes` is longer than `u32::MAX`; callers bound their payloads far below that.
pub fn put_bytes32(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("invariant: encoded field longer than 4 GiB");
    put_u32(buf, len);
    buf.extend_from_slice(bytes);
}

/// A bounds-checked little-endian cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the structure in error messages.
    pub fn new(what: &'static str, buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// A decode error for this reader's structure.
    pub fn error(&self, reason: impl Into<String>) -> RaftError {
        RaftError::decode(self.what, reason)
    }

    /// The next `n` bytes, borrowed.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.error(format!(
                "truncated: need {n} bytes at offset {}, have {}",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `u8`.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(LittleEndian::read_u16(self.bytes(2)?))
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(LittleEndian::read_u32(self.bytes(4)?))
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(LittleEndian::read_u64(self.bytes(8)?))
    }

    /// A `u32` length followed by that many bytes, as written by [`put_bytes32`].
    pub fn bytes32(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// A count of items that each take at least `min_item_len` bytes; refused when the
    /// remaining input cannot hold that many, so a forged count never drives an allocation.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(self.error(format!(
                "count {n} cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_little_endian() {
        let mut buf = Vec::new();
        put_u8(&mut buf, 7);
        put_u16(&mut buf, 0x0102);
        put_u32(&mut buf, 0x0304_0506);
        put_u64(&mut buf, u64::MAX - 1);
        put_bytes32(&mut buf, b"abc");
        assert_eq!(&buf[1..3], &[0x02, 0x01]);
        let mut r = Reader::new("test", &buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u32().unwrap(), 0x0304_0506);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.bytes32().unwrap(), b"abc");
        r.finish().unwrap();
    }

    #[test]
    fn short_input_is_a_decode_error() {
        let mut r = Reader::new("thing", &[1, 2, 3]);
        let err = r.u32().unwrap_err();
        assert!(
            matches!(err, RaftError::Decode { what: "thing", .. }),
            "{err}"
        );
        let mut r = Reader::new("thing", &[0xff, 0xff, 0xff, 0xff]);
        assert!(r.bytes32().is_err());
        let mut r = Reader::new("thing", &[0xff, 0xff, 0xff, 0x7f, 0]);
        assert!(r.count(1).is_err());
    }
}
