//! The file layer's messages (PROTOCOL.md §12): encoding and checked decoding.
//!
//! Every message starts with [`TAG`] (`0xff`, a byte that never occurs in UTF-8, so a peer-mode
//! chat message cannot be mistaken for one), then a type byte, then its fields. Integers are
//! the wire's variable-length integers (§1.2). [`Msg::decode`] never panics and bounds every
//! count and length before allocating anything.

use bytes::{BufMut as _, Bytes, BytesMut};
use thiserror::Error;

/// The first byte of every file-layer message.
pub const TAG: u8 = 0xff;

/// Largest chunk a sender may use: a CHUNK message (tag, type, id, index, data) stays within
/// the transport's 64 KiB message limit.
pub const MAX_CHUNK_SIZE: u32 = 60 * 1024;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Most chunks a file may have (so the chunk-hash list a receiver holds is at most 32 MiB).
pub const MAX_CHUNKS: u64 = 1 << 20;
/// Longest offered name, in bytes (longer offers are refused).
pub const MAX_NAME_LEN: usize = 1024;
/// Longest reason in DECLINE and CANCEL, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Most chunk hashes in one HASHES message (64 000 bytes of hashes).
pub const MAX_HASHES_PER_MSG: u64 = 2000;
/// Most ranges in one WANT message.
pub const MAX_RANGES: u64 = 1024;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Message types (the byte after [`TAG`]).
mod kind {
    pub(super) const OFFER: u8 = 0x01;
    pub(super) const ACCEPT: u8 = 0x02;
    pub(super) const DECLINE: u8 = 0x03;
    pub(super) const HASHES: u8 = 0x04;
    pub(super) const WANT: u8 = 0x05;
    pub(super) const CHUNK: u8 = 0x06;
    pub(super) const DONE: u8 = 0x07;
    pub(super) const CANCEL: u8 = 0x08;
}

/// One file-layer message. (No `Debug` of chunk data: it is the user's file.)
#[derive(Clone, PartialEq, Eq)]
pub enum Msg {
    /// The sender offers a file.
    Offer {
        /// The sender's id for the transfer.
        id: u64,
        /// Size in bytes.
        size: u64,
        /// Chunk size in bytes (every chunk but the last is this long).
        chunk_size: u32,
        /// BLAKE3 of the concatenated chunk hashes (see [`root_hash`]).
        root: Hash,
        /// The name as the sender gives it: hostile until sanitised.
        name: Vec<u8>,
    },
    /// The receiver accepts: send the chunk-hash list.
    Accept {
        /// The transfer.
        id: u64,
    },
    /// The receiver declines.
    Decline {
        /// The transfer.
        id: u64,
        /// Why (hostile text).
        reason: Vec<u8>,
    },
    /// Part of the chunk-hash list, in order.
    Hashes {
        /// The transfer.
        id: u64,
        /// Index of the first hash here.
        first: u64,
        /// The hashes.
        hashes: Vec<Hash>,
    },
    /// The receiver checked the list and wants these chunks (half-open index ranges, in
    /// increasing order, not overlapping); an empty list: it has them all.
    Want {
        /// The transfer.
        id: u64,
        /// `[start, end)` chunk indexes.
        ranges: Vec<(u64, u64)>,
    },
    /// One chunk.
    Chunk {
        /// The transfer.
        id: u64,
        /// Its index.
        index: u64,
        /// Its bytes.
        data: Bytes,
    },
    /// The receiver verified the whole file and saved it.
    Done {
        /// The transfer.
        id: u64,
    },
    /// Either side ends the transfer (an error, or the user).
    Cancel {
        /// The transfer.
        id: u64,
        /// Why (hostile text).
        reason: Vec<u8>,
    },
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Offer { id, size, .. } => write!(f, "Offer({id}, {size} bytes)"),
            Msg::Accept { id } => write!(f, "Accept({id})"),
            Msg::Decline { id, .. } => write!(f, "Decline({id})"),
            Msg::Hashes { id, first, hashes } => {
                write!(f, "Hashes({id}, {first}+{})", hashes.len())
            }
            Msg::Want { id, ranges } => write!(f, "Want({id}, {} ranges)", ranges.len()),
            Msg::Chunk { id, index, data } => {
                write!(f, "Chunk({id}, #{index}, {} bytes)", data.len())
            }
            Msg::Done { id } => write!(f, "Done({id})"),
            Msg::Cancel { id, .. } => write!(f, "Cancel({id})"),
        }
    }
}

/// Why bytes are not a valid file-layer message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The message ends inside a field.
    #[error("truncated")]
    UnexpectedEnd,
    /// Not a file-layer message (no [`TAG`]).
    #[error("not a file-layer message")]
    NotFile,
    /// An unknown message type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A field is out of its bounds.
    #[error("{0} out of bounds")]
    Bounds(&'static str),
    /// Bytes after the last field.
    #[error("trailing bytes")]
    Trailing,
}

/// Whether `data` is a file-layer message (starts with [`TAG`]).
pub fn is_file_msg(data: &[u8]) -> bool {
    data.first() == Some(&TAG)
}

/// The hash of one chunk.
pub fn chunk_hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// The root hash of a file from its chunk hashes: BLAKE3 of their concatenation, in order.
/// (The empty file has no chunks: its root is BLAKE3 of nothing.)
pub fn root_hash(hashes: &[Hash]) -> Hash {
    let mut h = blake3::Hasher::new();
    for c in hashes {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

/// How many chunks a file of `size` bytes has with `chunk_size` (0 for the empty file).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

/// Length of chunk `index` of a file of `size` bytes.
pub fn chunk_len(size: u64, chunk_size: u32, index: u64) -> u64 {
    let start = index.saturating_mul(u64::from(chunk_size));
    size.saturating_sub(start).min(u64::from(chunk_size))
}

impl Msg {
    /// The transfer id the message is about.
    pub fn id(&self) -> u64 {
        match self {
            Msg::Offer { id, .. }
            | Msg::Accept { id }
            | Msg::Decline { id, .. }
            | Msg::Hashes { id, .. }
            | Msg::Want { id, .. }
            | Msg::Chunk { id, .. }
            | Msg::Done { id }
            | Msg::Cancel { id, .. } => *id,
        }
    }

    /// The message's bytes, [`TAG`] first.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(match self {
            Msg::Chunk { data, .. } => data.len() + 20,
            Msg::Hashes { hashes, .. } => hashes.len() * 32 + 20,
            _ => 64,
        });
        b.put_u8(TAG);
        match self {
            Msg::Offer {
                id,
                size,
                chunk_size,
                root,
                name,
            } => {
                b.put_u8(kind::OFFER);
                put_varint(&mut b, *id);
                put_varint(&mut b, *size);
                put_varint(&mut b, u64::from(*chunk_size));
                b.put_slice(root);
                put_bytes(&mut b, name);
            }
            Msg::Accept { id } => {
                b.put_u8(kind::ACCEPT);
                put_varint(&mut b, *id);
            }
            Msg::Decline { id, reason } => {
                b.put_u8(kind::DECLINE);
                put_varint(&mut b, *id);
                put_bytes(&mut b, reason);
            }
            Msg::Hashes { id, first, hashes } => {
                b.put_u8(kind::HASHES);
                put_varint(&mut b, *id);
                put_varint(&mut b, *first);
                put_varint(&mut b, hashes.len() as u64);
                for h in hashes {
                    b.put_slice(h);
                }
            }
            Msg::Want { id, ranges } => {
                b.put_u8(kind::WANT);
                put_varint(&mut b, *id);
                put_varint(&mut b, ranges.len() as u64);
                for &(start, end) in ranges {
                    put_varint(&mut b, start);
                    put_varint(&mut b, end);
                }
            }
            Msg::Chunk { id, index, data } => {
                b.put_u8(kind::CHUNK);
                put_varint(&mut b, *id);
                put_varint(&mut b, *index);
                b.put_slice(data);
            }
            Msg::Done { id } => {
                b.put_u8(kind::DONE);
                put_varint(&mut b, *id);
            }
            Msg::Cancel { id, reason } => {
                b.put_u8(kind::CANCEL);
                put_varint(&mut b, *id);
                put_bytes(&mut b, reason);
            }
        }
        b.freeze()
    }

    /// Decodes one message. Never panics; every count and length is bounded (the constants of
    /// this module) before anything is allocated for it.
    pub fn decode(data: &Bytes) -> Result<Msg, DecodeError> {
        let mut r = Reader { data, pos: 0 };
        if r.u8()? != TAG {
            return Err(DecodeError::NotFile);
        }
        let ty = r.u8()?;
        let id = r.varint()?;
        let msg = match ty {
            kind::OFFER => {
                let size = r.varint()?;
                let chunk_size = r.varint()?;
                let chunk_size = u32::try_from(chunk_size)
                    .ok()
                    .filter(|c| (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(c))
                    .ok_or(DecodeError::Bounds("chunk size"))?;
                if chunk_count(size, chunk_size) > MAX_CHUNKS {
                    return Err(DecodeError::Bounds("chunk count"));
                }
                let root = r.hash()?;
                let name = r.bytes(MAX_NAME_LEN, "name")?;
                Msg::Offer {
                    id,
                    size,
                    chunk_size,
                    root,
                    name,
                }
            }
            kind::ACCEPT => Msg::Accept { id },
            kind::DECLINE => Msg::Decline {
                id,
                reason: r.bytes(MAX_REASON_LEN, "reason")?,
            },
            kind::HASHES => {
                let first = r.varint()?;
                let n = r.varint()?;
                if n > MAX_HASHES_PER_MSG || first.checked_add(n).is_none_or(|e| e > MAX_CHUNKS) {
                    return Err(DecodeError::Bounds("hash count"));
                }
                // `n` is bounded above: this allocation is at most 64 000 bytes.
                let mut hashes = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    hashes.push(r.hash()?);
                }
                Msg::Hashes { id, first, hashes }
            }
            kind::WANT => {
                let n = r.varint()?;
                if n > MAX_RANGES {
                    return Err(DecodeError::Bounds("range count"));
                }
                let mut ranges = Vec::with_capacity(n as usize);
                let mut prev_end = 0;
                for _ in 0..n {
                    let (start, end) = (r.varint()?, r.varint()?);
                    if start < prev_end || end <= start || end > MAX_CHUNKS {
                        return Err(DecodeError::Bounds("range"));
                    }
                    prev_end = end;
                    ranges.push((start, end));
                }
                Msg::Want { id, ranges }
            }
            kind::CHUNK => {
                let index = r.varint()?;
                if index >= MAX_CHUNKS {
                    return Err(DecodeError::Bounds("chunk index"));
                }
                let rest = r.rest();
                if rest.len() > MAX_CHUNK_SIZE as usize {
                    return Err(DecodeError::Bounds("chunk length"));
                }
                return Ok(Msg::Chunk {
                    id,
                    index,
                    data: rest,
                });
            }
            kind::DONE => Msg::Done { id },
            kind::CANCEL => Msg::Cancel {
                id,
                reason: r.bytes(MAX_REASON_LEN, "reason")?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        if r.pos != data.len() {
            return Err(DecodeError::Trailing);
        }
        Ok(msg)
    }
}

/// Appends a QUIC-style variable-length integer (PROTOCOL.md §1.2). Values above 2^62 - 1
/// never occur here (ids, sizes and indexes are all bounded far below it); they are clamped.
fn put_varint(b: &mut BytesMut, v: u64) {
    if v < 1 << 6 {
        b.put_u8(v as u8);
    } else if v < 1 << 14 {
        b.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        b.put_u32(0x8000_0000 | v as u32);
    } else {
        b.put_u64(0xc000_0000_0000_0000 | v.min((1 << 62) - 1));
    }
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.put_slice(s);
}

/// A bounds-checked reader over one message.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(DecodeError::UnexpectedEnd)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }

    fn hash(&mut self) -> Result<Hash, DecodeError> {
        let mut h = [0; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(h)
    }

    fn bytes(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or(DecodeError::Bounds(what))?;
        Ok(self.take(n)?.to_vec())
    }

    fn rest(&mut self) -> Bytes {
        let rest = self.data.slice(self.pos..);
        self.pos = self.data.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The examples of PROTOCOL.md §12.3, byte for byte.
    #[test]
    fn protocol_vectors() {
        let offer = Msg::Offer {
            id: 1,
            size: 100_000,
            chunk_size: 32768,
            root: [0xab; 32],
            name: b"a.txt".to_vec(),
        };
        assert_eq!(
            hex(&offer.encode()),
            format!(
                "ff0101800186a0{}{}05612e747874",
                "80008000",
                "ab".repeat(32)
            )
        );
        assert_eq!(hex(&Msg::Accept { id: 1 }.encode()), "ff0201");
        let decline = Msg::Decline {
            id: 1,
            reason: b"no".to_vec(),
        };
        assert_eq!(hex(&decline.encode()), "ff0301026e6f");
        let hashes = Msg::Hashes {
            id: 1,
            first: 0,
            hashes: vec![[0x11; 32]],
        };
        assert_eq!(
            hex(&hashes.encode()),
            format!("ff04010001{}", "11".repeat(32))
        );
        let want = Msg::Want {
            id: 1,
            ranges: vec![(0, 2), (3, 4)],
        };
        assert_eq!(hex(&want.encode()), "ff05010200020304");
        let chunk = Msg::Chunk {
            id: 1,
            index: 2,
            data: Bytes::from_static(b"hi"),
        };
        assert_eq!(hex(&chunk.encode()), "ff0601026869");
        assert_eq!(hex(&Msg::Done { id: 1 }.encode()), "ff0701");
        let cancel = Msg::Cancel {
            id: 64,
            reason: b"x".to_vec(),
        };
        assert_eq!(hex(&cancel.encode()), "ff0840400178");
        // PROTOCOL.md §12.5 shows each of them (long runs of one byte abbreviated `ab`×32).
        const DOC: &str = include_str!("../../../docs/PROTOCOL.md");
        let section = DOC
            .split("### 12.5 Examples")
            .nth(1)
            .expect("PROTOCOL.md has §12.5");
        for shown in [
            "`ff0101800186a080008000` `ab`×32 `05612e747874`",
            "`ff0201`",
            "`ff0301026e6f`",
            "`ff04010001` `11`×32",
            "`ff05010200020304`",
            "`ff0601026869`",
            "`ff0701`",
            "`ff0840400178`",
        ] {
            assert!(section.contains(shown), "PROTOCOL.md §12.5 lacks {shown}");
        }
        for m in [offer, decline, hashes, want, chunk, cancel] {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
        // The root is BLAKE3 of the concatenated chunk hashes (§12.1).
        let hs = [chunk_hash(b"a"), chunk_hash(b"b")];
        let mut cat = Vec::new();
        cat.extend_from_slice(&hs[0]);
        cat.extend_from_slice(&hs[1]);
        assert_eq!(root_hash(&hs), *blake3::hash(&cat).as_bytes());
        assert_eq!(
            hex(&root_hash(&[])),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn bounds_are_checked() {
        let bad_chunk_size = Msg::Offer {
            id: 1,
            size: 10,
            chunk_size: 100,
            root: [0; 32],
            name: b"a".to_vec(),
        };
        assert_eq!(
            Msg::decode(&bad_chunk_size.encode()),
            Err(DecodeError::Bounds("chunk size"))
        );
        let too_many = Msg::Offer {
            id: 1,
            size: (MAX_CHUNKS + 1) * 1024,
            chunk_size: 1024,
            root: [0; 32],
            name: b"a".to_vec(),
        };
        assert_eq!(
            Msg::decode(&too_many.encode()),
            Err(DecodeError::Bounds("chunk count"))
        );
        let long_name = Msg::Offer {
            id: 1,
            size: 1,
            chunk_size: 1024,
            root: [0; 32],
            name: vec![b'a'; MAX_NAME_LEN + 1],
        };
        assert_eq!(
            Msg::decode(&long_name.encode()),
            Err(DecodeError::Bounds("name"))
        );
        // A hash count far beyond the bytes present: refused before allocating.
        let mut b = BytesMut::new();
        b.put_slice(&[TAG, kind::HASHES, 1, 0]);
        put_varint(&mut b, 1 << 40);
        assert_eq!(
            Msg::decode(&b.freeze()),
            Err(DecodeError::Bounds("hash count"))
        );
        // Overlapping ranges.
        let want = Msg::Want {
            id: 1,
            ranges: vec![(0, 5), (3, 6)],
        };
        assert_eq!(
            Msg::decode(&want.encode()),
            Err(DecodeError::Bounds("range"))
        );
        assert_eq!(
            Msg::decode(&Bytes::from_static(b"hello")),
            Err(DecodeError::NotFile)
        );
        assert_eq!(
            Msg::decode(&Bytes::from_static(&[TAG, 0x07, 1, 0])),
            Err(DecodeError::Trailing)
        );
        assert_eq!(
            Msg::decode(&Bytes::from_static(&[TAG, 0x99, 1])),
            Err(DecodeError::UnknownType(0x99))
        );
    }

    proptest! {
        /// Any bytes: an error or a message that encodes back to the same bytes.
        #[test]
        fn decode_never_panics_and_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = data;
            if let Some(b) = data.first_mut() { *b = TAG; }
            let bytes = Bytes::from(data);
            if let Ok(m) = Msg::decode(&bytes) {
                prop_assert_eq!(Msg::decode(&m.encode()), Ok(m));
            }
        }
    }
}
