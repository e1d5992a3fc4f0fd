//! Packet protection building blocks for the encrypted protocol: AEAD sealing with the packet
//! number as nonce and the header as associated data, a replay window, rekeying, and the
//! stateless address-validation cookie.
//!
//! Everything here is a thin, deterministic layer over vetted primitives (the `chacha20poly1305`
//! and `blake2` crates; the handshake itself is `snow`'s Noise). Nothing is hand-rolled
//! cryptography: the only logic of our own is *which* bytes go into nonce, associated data and
//! MAC input, and that is written down in `docs/PROTOCOL.md`.
//!
//! Keys and plaintext never appear in `Debug` output.
//!
//! Fuzz builds only (the crate feature `fuzzing`, which no crate of the workspace enables):
//! packets are protected by [`fuzzing::FastAead`] instead, a cheap stand-in with the same
//! sizes and the same behaviour towards a receiver (any change to header, payload or tag
//! fails to open; another key or packet number fails to open), so that the fuzzer spends its
//! time in the protocol rather than in ChaCha20-Poly1305 (half of the `pair` target's time
//! before). BoringSSL's fuzzer mode does the same. It protects nothing against an adversary.

use std::fmt;
use std::net::SocketAddr;

use blake2::Blake2sMac256;
use blake2::digest::{FixedOutput as _, Mac as _};
#[cfg(not(feature = "fuzzing"))]
use chacha20poly1305::ChaCha20Poly1305 as Aead;
use chacha20poly1305::aead::{AeadInPlace as _, KeyInit as _};
use chacha20poly1305::{Key, Nonce, Tag};
#[cfg(feature = "fuzzing")]
use fuzzing::FastAead as Aead;
use subtle::ConstantTimeEq as _;

/// BLAKE2s-256 of the concatenated `parts`: every derivation of this crate goes through here,
/// so each is one line that names its label.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    use blake2::Digest as _;
    let mut h = blake2::Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// BLAKE2s-MAC (keyed BLAKE2s-256) of the concatenated `parts` under `key`.
pub(crate) fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always valid for BLAKE2s-MAC (keys up to 32 bytes are).
    let mut m = <Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(key)
        .expect("32-byte key is valid");
    for p in parts {
        m.update(p);
    }
    m.finalize_fixed().into()
}

/// Length of the AEAD tag appended to every protected packet.
pub const TAG_LEN: usize = 16;

/// The packet failed authentication: tampered, damaged, forged, or under another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet authentication failed")]
pub struct AuthError;

/// Noise's nonce encoding for ChaChaPoly: 32 zero bits, then the 64-bit counter little-endian.
/// The packet number is the counter, so a nonce is never reused as long as packet numbers are
/// never reused, which the protocol guarantees.
fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_le_bytes());
    Nonce::from(n)
}

/// One direction's packet key.
#[derive(Clone)]
pub struct PacketKey {
    key: [u8; 32],
    aead: Aead,
}

impl fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

impl PacketKey {
    /// A key from 32 bytes of key material (one half of a Noise split).
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            aead: Aead::new(Key::from_slice(&key)),
            key,
        }
    }

    /// Encrypts `payload` in place and appends the tag. `header` is authenticated, not
    /// encrypted.
    pub fn seal(&self, pn: u64, header: &[u8], payload: &mut Vec<u8>) {
        let tag = self
            .aead
            .encrypt_in_place_detached(&nonce(pn), header, payload)
            // ChaCha20-Poly1305 fails only for messages over 256 GiB; a datagram is < 64 KiB.
            .expect("datagram-sized input is always encryptable");
        payload.extend_from_slice(&tag);
    }

    /// Seals `buf[header_len..]` in place, with `buf[..header_len]` as associated data, and
    /// appends the tag.
    pub fn seal_in_place(&self, pn: u64, buf: &mut Vec<u8>, header_len: usize) {
        let split = header_len.min(buf.len());
        let (header, payload) = buf.split_at_mut(split);
        let tag = self
            .aead
            .encrypt_in_place_detached(&nonce(pn), header, payload)
            // ChaCha20-Poly1305 fails only for messages over 256 GiB; a datagram is < 64 KiB.
            .expect("datagram-sized input is always encryptable");
        buf.extend_from_slice(&tag);
    }

    /// Checks and decrypts `ciphertext || tag` in place, leaving the plaintext in `buf`.
    pub fn open(&self, pn: u64, header: &[u8], buf: &mut Vec<u8>) -> Result<(), AuthError> {
        let split = buf.len().checked_sub(TAG_LEN).ok_or(AuthError)?;
        let tag = Tag::clone_from_slice(&buf[split..]);
        buf.truncate(split);
        self.aead
            .decrypt_in_place_detached(&nonce(pn), header, buf, &tag)
            .map_err(|_| AuthError)
    }

    /// The next key, by Noise's REKEY function: the first 32 bytes of encrypting 32 zero bytes
    /// under nonce 2^64 - 1 with empty associated data. Both sides derive it without talking,
    /// so a key update costs one bit in the header, and old keys cannot be recovered from new.
    pub fn next(&self) -> Self {
        let mut zeros = vec![0u8; 32];
        let _tag = self
            .aead
            .encrypt_in_place_detached(&nonce(u64::MAX), b"", &mut zeros)
            // 32 bytes are always encryptable (see `seal`).
            .expect("32 bytes are always encryptable");
        let mut k = [0u8; 32];
        k.copy_from_slice(&zeros);
        Self::new(k)
    }

    /// Raw key bytes, for test vectors only.
    #[doc(hidden)]
    pub fn raw(&self) -> &[u8; 32] {
        &self.key
    }
}

/// A stand-in for ChaCha20-Poly1305 in fuzz builds (see the module documentation).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use chacha20poly1305::aead::consts::{U0, U12, U16, U32};
    use chacha20poly1305::aead::{self, AeadCore, AeadInPlace, KeyInit, KeySizeUser};

    /// Odd multipliers of a 64-bit multiply-rotate mix (each step is a bijection of the state
    /// for a given input word and of the input word for a given state, so a change to any one
    /// word always changes the result).
    const M: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];

    /// Keystream XOR and a 128-bit keyed tag over nonce, associated data and ciphertext.
    #[derive(Clone)]
    pub struct FastAead {
        k: [u64; 4],
    }

    impl std::fmt::Debug for FastAead {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FastAead(..)")
        }
    }

    impl KeySizeUser for FastAead {
        type KeySize = U32;
    }

    impl KeyInit for FastAead {
        fn new(key: &aead::Key<Self>) -> Self {
            let mut k = [0u64; 4];
            for (k, c) in k.iter_mut().zip(key.chunks_exact(8)) {
                *k = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            }
            Self { k }
        }
    }

    impl AeadCore for FastAead {
        type NonceSize = U12;
        type TagSize = U16;
        type CiphertextOverhead = U0;
    }

    fn mix(x: u64, w: u64, lane: usize) -> u64 {
        (x ^ w).wrapping_mul(M[lane]).rotate_left(29 + lane as u32)
    }

    impl FastAead {
        /// Only the first 32 bytes: enough that REKEY (`PacketKey::next`, which encrypts 32
        /// zero bytes) gives a new key, and that payloads do not travel in clear; the tag
        /// covers the rest. Word by word: under the fuzzer's comparison tracing every loop
        /// iteration costs a callback, so there are as few as possible.
        fn keystream(&self, nonce: &[u8], buf: &mut [u8]) {
            let n = u64::from_le_bytes(nonce[4..12].try_into().expect("12-byte nonce"));
            let ks = |i: usize| mix(mix(self.k[0] ^ n, i as u64, 0), self.k[1], 1);
            let len = buf.len().min(32);
            let mut words = buf[..len].chunks_exact_mut(8);
            let mut i = 0;
            for w in &mut words {
                let x = u64::from_le_bytes((&*w).try_into().expect("8-byte chunk")) ^ ks(i);
                w.copy_from_slice(&x.to_le_bytes());
                i += 1;
            }
            let rest = words.into_remainder();
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            let x = (u64::from_le_bytes(last) ^ ks(i)).to_le_bytes();
            rest.copy_from_slice(&x[..rest.len()]);
        }

        /// One 64-bit lane, spread over the 16 bytes: a random change goes unnoticed with
        /// odds of 2^-64, and a change to any one word never does.
        fn tag(&self, nonce: &[u8], ad: &[u8], ct: &[u8]) -> [u8; 16] {
            let mut h = self.k[2];
            for part in [nonce, ad, ct] {
                h = mix(h, part.len() as u64, 0);
                let mut words = part.chunks_exact(8);
                for w in &mut words {
                    h = mix(
                        h,
                        u64::from_le_bytes(w.try_into().expect("8-byte chunk")),
                        0,
                    );
                }
                let mut last = [0u8; 8];
                last[..words.remainder().len()].copy_from_slice(words.remainder());
                h = mix(h, u64::from_le_bytes(last), 0);
            }
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&mix(h, self.k[3], 1).to_le_bytes());
            t[8..].copy_from_slice(&mix(h, self.k[2], 1).to_le_bytes());
            t
        }
    }

    impl AeadInPlace for FastAead {
        fn encrypt_in_place_detached(
            &self,
            nonce: &aead::Nonce<Self>,
            associated_data: &[u8],
            buffer: &mut [u8],
        ) -> aead::Result<aead::Tag<Self>> {
            self.keystream(nonce, buffer);
            Ok(self.tag(nonce, associated_data, buffer).into())
        }

        fn decrypt_in_place_detached(
            &self,
            nonce: &aead::Nonce<Self>,
            associated_data: &[u8],
            buffer: &mut [u8],
            tag: &aead::Tag<Self>,
        ) -> aead::Result<()> {
            // Folded to one word before the comparison, so that the fuzzer's comparison
            // tracing never shows it the expected tag (it could then forge packets, and a
            // forged packet breaks the targets' checks, not the protocol).
            let expected = self.tag(nonce, associated_data, buffer);
            let word = |t: &[u8], i: usize| {
                u64::from_le_bytes(t[i..i + 8].try_into().expect("16-byte tag"))
            };
            let diff = (word(&expected, 0) ^ word(tag, 0)) | (word(&expected, 8) ^ word(tag, 8));
            if diff != 0 {
                return Err(aead::Error);
            }
            self.keystream(nonce, buffer);
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::PacketKey;

        #[test]
        fn any_change_fails_to_open() {
            let key = PacketKey::new([7; 32]);
            let header = b"header";
            let mut sealed = b"some payload of a few more words than 32".to_vec();
            key.seal(9, header, &mut sealed);
            let mut opened = sealed.clone();
            key.open(9, header, &mut opened).expect("opens");
            assert_eq!(opened, b"some payload of a few more words than 32");
            assert_ne!(
                sealed[..32],
                opened[..32],
                "the payload does not start in clear"
            );
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x40;
                assert!(key.open(9, header, &mut bad).is_err(), "byte {i} changed");
            }
            assert!(
                key.open(10, header, &mut sealed.clone()).is_err(),
                "another number"
            );
            assert!(
                key.open(9, b"headex", &mut sealed.clone()).is_err(),
                "another header"
            );
            let next = key.next();
            assert!(
                next.open(9, header, &mut sealed.clone()).is_err(),
                "another key"
            );
            assert_ne!(next.raw(), key.raw());
        }
    }
}

/// Rejects packet numbers seen before, tolerating reordering up to [`ReplayWindow::SIZE`]
/// packets (the WireGuard / RFC 6479 sliding bitmap). Nothing older is accepted: a replay of an
/// ancient packet is indistinguishable from a very late one, and both are dropped.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest packet number accepted, plus one (0 = none yet).
    top: u64,
    bits: [u64; Self::WORDS],
}

impl ReplayWindow {
    const WORDS: usize = 16;
    /// Packets this far behind the newest are still accepted once. One word of the ring is
    /// slack (RFC 6479): the newest word is partly filled, so the word a full ring behind it
    /// would share its slot.
    pub const SIZE: u64 = (Self::WORDS as u64 - 1) * 64;

    /// A window that has accepted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn bit(pn: u64) -> (usize, u64) {
        (((pn / 64) as usize) % Self::WORDS, 1u64 << (pn % 64))
    }

    /// Would `pn` be accepted? Does not record it: call [`Self::record`] only after the packet
    /// authenticated, so forged packets cannot move the window.
    pub fn check(&self, pn: u64) -> bool {
        if pn >= self.top {
            return true;
        }
        if self.top - pn > Self::SIZE {
            return false;
        }
        let (w, b) = Self::bit(pn);
        self.bits[w] & b == 0
    }

    /// Records an authenticated packet number.
    pub fn record(&mut self, pn: u64) {
        if pn >= self.top {
            // Clear the words the window slides over, then mark.
            let old_word = self.top.div_ceil(64);
            let new_word = (pn / 64) + 1;
            let clear = (new_word.saturating_sub(old_word)).min(Self::WORDS as u64);
            for i in 0..clear {
                self.bits[((old_word + i) as usize) % Self::WORDS] = 0;
            }
            if self.top == 0 || new_word > old_word + Self::WORDS as u64 {
                // Nothing of the old window survives a jump that far.
                self.bits = [0; Self::WORDS];
            }
            self.top = pn + 1;
        }
        let (w, b) = Self::bit(pn);
        self.bits[w] |= b;
    }
}

/// Length of an address-validation cookie on the wire: an 8-byte timestamp and a 16-byte MAC.
pub const COOKIE_LEN: usize = 24;

/// Stateless address validation (QUIC Retry / WireGuard cookie). A server answers a first
/// INITIAL with a cookie binding the client's address and the time, keyed by a secret that
/// rotates; the client repeats its INITIAL with the cookie, proving it receives packets at the
/// address it claims. The server keeps no per-client state until then.
#[derive(Clone)]
pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    rotated_at: u64,
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// Seconds between secret rotations (WireGuard's value). A cookie stays valid for at least
    /// one and at most two rotation periods.
    pub const ROTATE_SECS: u64 = 120;

    /// A jar whose first secret is `secret` (from the OS generator), at time `now_secs`.
    pub fn new(secret: [u8; 32], now_secs: u64) -> Self {
        Self {
            current: secret,
            previous: secret,
            rotated_at: now_secs,
        }
    }

    /// Rotates to `fresh` if the period has passed; the previous secret still verifies.
    pub fn maybe_rotate(&mut self, now_secs: u64, fresh: impl FnOnce() -> [u8; 32]) {
        if now_secs >= self.rotated_at + Self::ROTATE_SECS {
            self.previous = self.current;
            self.current = fresh();
            self.rotated_at = now_secs;
        }
    }

    fn mac(secret: &[u8; 32], addr: &SocketAddr, ts: u64) -> [u8; 16] {
        let (family, ip): (&[u8], Vec<u8>) = match addr {
            SocketAddr::V4(a) => (&[4], a.ip().octets().to_vec()),
            SocketAddr::V6(a) => (&[6], a.ip().octets().to_vec()),
        };
        let full = mac(
            secret,
            &[
                b"chirp cookie v1",
                family,
                &ip,
                &addr.port().to_be_bytes(),
                &ts.to_be_bytes(),
            ],
        );
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A cookie for `addr` at `now_secs`.
    pub fn issue(&self, addr: &SocketAddr, now_secs: u64) -> [u8; COOKIE_LEN] {
        let mut c = [0u8; COOKIE_LEN];
        c[..8].copy_from_slice(&now_secs.to_be_bytes());
        c[8..].copy_from_slice(&Self::mac(&self.current, addr, now_secs));
        c
    }

    /// Is `cookie` one we issued to `addr` within the last `max_age_secs`?
    pub fn verify(
        &self,
        cookie: &[u8],
        addr: &SocketAddr,
        now_secs: u64,
        max_age_secs: u64,
    ) -> bool {
        let Some((ts, mac)) = cookie.split_first_chunk::<8>() else {
            return false;
        };
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let ts = u64::from_be_bytes(*ts);
        if ts > now_secs || now_secs - ts > max_age_secs {
            return false;
        }
        // Constant-time comparison: the MAC must not leak through timing.
        [&self.current, &self.previous]
            .iter()
            .any(|s| bool::from(Self::mac(s, addr, ts).ct_eq(mac)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = PacketKey::new([7; 32]);
        let header = b"\x02\x04header";
        let mut buf = b"hello, world".to_vec();
        k.seal(42, header, &mut buf);
        assert_eq!(buf.len(), 12 + TAG_LEN);
        assert!(!buf.windows(5).any(|w| w == b"hello"), "plaintext visible");
        let sealed = buf.clone();
        k.open(42, header, &mut buf).expect("authentic");
        assert_eq!(buf, b"hello, world");
        // Any flipped bit, a wrong packet number, another header or another key: rejected.
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x01;
            assert_eq!(k.open(42, header, &mut b), Err(AuthError), "byte {i}");
        }
        assert_eq!(k.open(43, header, &mut sealed.clone()), Err(AuthError));
        assert_eq!(
            k.open(42, b"\x02\x04headeR", &mut sealed.clone()),
            Err(AuthError)
        );
        assert_eq!(
            PacketKey::new([8; 32]).open(42, header, &mut sealed.clone()),
            Err(AuthError)
        );
        assert_eq!(
            k.open(42, header, &mut vec![0; 5]),
            Err(AuthError),
            "shorter than a tag"
        );
    }

    #[test]
    fn rekey_is_deterministic_and_changes_the_key() {
        let k = PacketKey::new([1; 32]);
        let a = k.next();
        let b = k.next();
        assert_eq!(a.raw(), b.raw(), "both sides derive the same next key");
        assert_ne!(a.raw(), k.raw());
        let mut buf = b"x".to_vec();
        a.seal(0, b"", &mut buf);
        assert_eq!(
            k.open(0, b"", &mut buf.clone()),
            Err(AuthError),
            "old key cannot open"
        );
        assert!(b.open(0, b"", &mut buf).is_ok());
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check(0));
        w.record(0);
        assert!(!w.check(0), "replay");
        w.record(5);
        assert!(w.check(3), "reordered but new");
        w.record(3);
        assert!(!w.check(3) && !w.check(5) && w.check(4));
        // Jump far ahead: the bitmap slides, old bits do not alias new numbers.
        let far = 5 + ReplayWindow::SIZE * 3 + 17;
        w.record(far);
        assert!(w.check(far - 1), "never seen");
        assert!(!w.check(5), "far behind the window: refused");
        assert!(w.check(far - ReplayWindow::SIZE + 1));
        assert!(!w.check(far - ReplayWindow::SIZE - 1));
        // Model check against a set over a long random-ish sequence.
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pn = (top + 64).saturating_sub(x % 1500);
            let fresh = !seen.contains(&pn) && top.saturating_sub(pn) < ReplayWindow::SIZE;
            if pn >= top || fresh {
                assert!(w.check(pn), "{pn} top {top}");
            }
            if seen.contains(&pn) {
                assert!(!w.check(pn), "replay of {pn} accepted");
            }
            if w.check(pn) {
                w.record(pn);
                seen.insert(pn);
                top = top.max(pn + 1);
            }
        }
    }

    #[test]
    fn cookies_bind_address_and_time() {
        let a: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let b: SocketAddr = "192.0.2.1:5001".parse().expect("addr");
        let mut jar = CookieJar::new([3; 32], 1000);
        let c = jar.issue(&a, 1000);
        assert!(jar.verify(&c, &a, 1005, 30));
        assert!(!jar.verify(&c, &b, 1005, 30), "another port");
        assert!(!jar.verify(&c, &a, 1031, 30), "too old");
        assert!(!jar.verify(&c[..23], &a, 1005, 30), "truncated");
        let mut forged = c;
        forged[0] ^= 1; // claim another time
        assert!(!jar.verify(&forged, &a, 1005, 1 << 40));
        // Survives one rotation, not two.
        jar.maybe_rotate(1000 + CookieJar::ROTATE_SECS, || [4; 32]);
        assert!(jar.verify(&c, &a, 1000 + CookieJar::ROTATE_SECS, 1 << 20));
        jar.maybe_rotate(1000 + 2 * CookieJar::ROTATE_SECS, || [5; 32]);
        assert!(!jar.verify(&c, &a, 1000 + 2 * CookieJar::ROTATE_SECS, 1 << 20));
    }
}

/// The keys of the long-header packets (INITIAL, HANDSHAKE, ACCEPT, RETRY, REFUSE) of one
/// connection attempt, derived from the client's first destination connection ID. Anyone who
/// sees that ID can derive them: they make damage and blind injection detectable, not contents
/// secret. The Noise messages inside carry their own protection.
#[derive(Debug, Clone)]
pub struct InitialKeys {
    /// Seals client → server packets (INITIAL, HANDSHAKE).
    pub client: PacketKey,
    /// Seals server → client packets (ACCEPT).
    pub server: PacketKey,
    /// Authenticates RETRY (empty plaintext, nonce 0).
    pub retry: PacketKey,
    /// Authenticates REFUSE (empty plaintext, nonce 0).
    pub refuse: PacketKey,
}

impl InitialKeys {
    /// The keys for the attempt whose first INITIAL went to `initial_dcid`.
    pub fn new(initial_dcid: u64) -> Self {
        Self {
            client: Self::client_key(initial_dcid),
            server: Self::derive(initial_dcid, b"server"),
            retry: Self::retry_key(initial_dcid),
            refuse: Self::refuse_key(initial_dcid),
        }
    }

    /// [`Self::client`] alone: what a server needs to open an INITIAL, a quarter of the
    /// hashing of [`Self::new`] (it runs for every INITIAL, forged ones included).
    pub fn client_key(initial_dcid: u64) -> PacketKey {
        Self::derive(initial_dcid, b"client")
    }

    /// [`Self::retry`] alone.
    pub fn retry_key(initial_dcid: u64) -> PacketKey {
        Self::derive(initial_dcid, b"retry")
    }

    /// [`Self::refuse`] alone.
    pub fn refuse_key(initial_dcid: u64) -> PacketKey {
        Self::derive(initial_dcid, b"refuse")
    }

    fn derive(initial_dcid: u64, label: &[u8]) -> PacketKey {
        PacketKey::new(hash(&[
            b"chirp v2 initial ",
            label,
            &initial_dcid.to_be_bytes(),
        ]))
    }
}
