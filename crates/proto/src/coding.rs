//! Primitive wire coding: QUIC-style variable-length integers and a bounds-checked reader.
//!
//! Every read is checked and returns [`UnexpectedEnd`] instead of panicking, so the frame and
//! packet decoders built on top can be fed arbitrary bytes from the network.

use thiserror::Error;

/// The largest value a variable-length integer can carry (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// The input ended before a complete value could be read.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("unexpected end of input")]
pub struct UnexpectedEnd;

/// Number of bytes [`put_varint`] uses for `v`.
///
/// Values above [`VARINT_MAX`] are not encodable; callers guarantee they never produce them
/// (offsets and packet numbers are bounded far below 2^62 by construction).
pub const fn varint_len(v: u64) -> usize {
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else {
        8
    }
}

/// `v` as a variable-length integer (RFC 9000 §16): the encoding is the first `.1` bytes of
/// `.0`. The two high bits of the first byte give the length (1, 2, 4 or 8 bytes), the rest
/// is the value in network byte order.
pub fn varint_bytes(v: u64) -> ([u8; 8], usize) {
    debug_assert!(v <= VARINT_MAX, "varint out of range: {v}");
    let mut out = [0u8; 8];
    let len = varint_len(v);
    match len {
        1 => out[0] = v as u8,
        2 => out[..2].copy_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out[..4].copy_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.copy_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
    (out, len)
}

/// Appends `v` as a variable-length integer ([`varint_bytes`]).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let (bytes, len) = varint_bytes(v);
    out.extend_from_slice(&bytes[..len]);
}

/// A cursor over untrusted bytes whose every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything has been consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The unconsumed bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, UnexpectedEnd> {
        let (&b, rest) = self.buf.split_first().ok_or(UnexpectedEnd)?;
        self.buf = rest;
        Ok(b)
    }

    /// Reads `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], UnexpectedEnd> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(UnexpectedEnd)?;
        self.buf = rest;
        Ok(*head)
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, UnexpectedEnd> {
        self.array::<8>().map(u64::from_be_bytes)
    }

    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], UnexpectedEnd> {
        if n > self.buf.len() {
            return Err(UnexpectedEnd);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads a variable-length integer.
    pub fn varint(&mut self) -> Result<u64, UnexpectedEnd> {
        let first = *self.buf.first().ok_or(UnexpectedEnd)?;
        let len = 1usize << (first >> 6);
        let raw = self.bytes(len)?;
        let mut v = u64::from(first & 0x3f);
        for &b in &raw[1..] {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }
}

/// Decodes a varint from the front of an iterator of bytes; `None` if the bytes run out.
///
/// Used by the receive stream, whose bytes live in a ring buffer rather than one slice.
pub fn varint_from_iter(mut it: impl Iterator<Item = u8>) -> Option<(u64, usize)> {
    let first = it.next()?;
    let len = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for _ in 1..len {
        v = (v << 8) | u64::from(it.next()?);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc9000_examples() {
        // The examples of RFC 9000 §A.1.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(Reader::new(bytes).varint(), Ok(value));
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes);
        }
        // A non-minimal encoding is still decodable.
        assert_eq!(Reader::new(&[0x40, 0x25]).varint(), Ok(37));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert_eq!(Reader::new(&[]).varint(), Err(UnexpectedEnd));
        assert_eq!(Reader::new(&[0xc0, 0, 0]).varint(), Err(UnexpectedEnd));
        assert_eq!(Reader::new(&[1, 2]).bytes(3), Err(UnexpectedEnd));
        assert_eq!(Reader::new(&[1]).u64(), Err(UnexpectedEnd));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in 0..=VARINT_MAX) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint(), Ok(v));
            prop_assert!(r.is_empty());
            prop_assert_eq!(varint_from_iter(out.iter().copied()), Some((v, out.len())));
        }
    }
}
