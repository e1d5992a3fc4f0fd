//! chirp's file transfer as a sans-IO state machine: [`Transfers`] holds both directions of
//! file transfer with one peer, reads no clock, opens no socket and touches no disk itself
//! (files go through the [`Storage`] trait: [`FsStorage`] for a real download directory,
//! [`MemStorage`] for tests).
//!
//! # The protocol (PROTOCOL.md §12)
//!
//! 1. The sender hashes the file in chunks (32 KiB, larger for files of more than 2^20
//!    chunks) and offers it: OFFER (id, size, chunk size, name, **root hash** = BLAKE3 of the
//!    concatenated BLAKE3 hashes of the chunks, in order).
//! 2. The receiver (the user with `/accept`, or at once for a trusted key) answers ACCEPT, or
//!    DECLINE.
//! 3. The sender sends the chunk-hash list (HASHES). The receiver checks it against the root
//!    hash, then checks every whole chunk of its partial file (`NAME.H.part`, `H` the start
//!    of the root hash, from an earlier attempt) against the list, and answers WANT with the
//!    chunks it lacks. Files in the download directory are opened without following symbolic
//!    links ([`FsStorage`]).
//! 4. The sender sends those chunks (CHUNK). The receiver checks each against its hash before
//!    writing it: the partial file never holds a byte that was not verified, so a resume never
//!    trusts bad data, and a chunk that does not match fails the transfer.
//! 5. Once every chunk is held, the receiver makes `NAME.H.part` durable (fsync), renames it
//!    to a free name (never overwriting: `NAME (1).ext`) and only then says DONE; if that
//!    fails (a full disk at the fsync), it says DECLINE instead and keeps the partial file.
//!    Either side may end a transfer early: the receiver with DECLINE, the sender with
//!    CANCEL ([`Transfers::cancel`]); a receiver deletes the partial file of a cancelled
//!    transfer (no resume will come), while any other failure keeps it.
//!
//! Two steps may block for long on a large file: the check of step 3 on a resume, which reads
//! and hashes the whole partial file (about a second for 1 GB), and the fsync of step 5
//! (seconds). They are a [`Check`] and a [`Finish`], which [`Transfers`] runs inline by
//! default, or hands to its driver ([`Transfers::check_outside`], [`Transfers::poll_check`];
//! [`Transfers::finish_outside`], [`Transfers::poll_finish`]) to run on a thread of its own
//! and answer with [`Transfers::checked`] and [`Transfers::finished`], so that the chat sharing
//! the driver's task goes on meanwhile: WANT waits for the check, DONE for the save. Chunk
//! writes (step 4) stay inline: each is a positioned write of one chunk into the page cache.
//!
//! After the link drops, [`Transfers::connected`] offers every unfinished file again under
//! the same id; a receiver that had accepted it accepts again, and steps 3–5 continue from
//! what the partial file holds. A receiver that restarted finds the same `NAME.H.part` (the
//! same free name is chosen) and does the same. A receiver that had finished it (its DONE was
//! lost with the link) remembers it and answers DONE at once.
//!
//! # Layout
//!
//! - [`wire`]: the messages, their encoding and bounded decoding.
//! - [`name`]: the receiver's naming rules (hostile names, suffixes, `.part`).
//! - [`storage`]: the [`Storage`] trait and its two implementations.
//! - [`transfers`]: the state machine.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod name;
pub mod storage;
pub mod transfers;
pub mod wire;

pub use storage::{FsStorage, MemStorage, Storage};
pub use transfers::{
    Check, Config, DEFAULT_CHUNK_SIZE, Direction, FileEvent, Finish, FinishError, Prepared,
    REMEMBER_FINISHED, REMEMBER_FOR, SendFileError, Transfers, Transmit, hash_hex, prepare,
};
pub use wire::{Hash, Msg, TAG, is_file_msg};

#[cfg(test)]
mod tests;
