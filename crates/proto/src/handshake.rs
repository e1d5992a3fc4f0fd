//! The Noise handshake of the encrypted protocol, as a sans-IO state machine: handshake
//! messages in, handshake messages out, packet keys at the end.
//!
//! The cryptography is `snow`'s; this module only fixes the parameters and turns the result
//! into [`PacketKey`]s. Pattern: `Noise_XX_25519_ChaChaPoly_BLAKE2s` for every connection:
//! neither side needs the other's key in advance (first contact is trust-on-first-use), and XX
//! authenticates both sides with ephemeral-static DH, so it is not open to key-compromise
//! impersonation the way IK's first message is. (The full argument goes into `docs/SECURITY.md`
//! when the encrypted protocol is wired in.)
//!
//! The one thing here that does not come in as an argument is the ephemeral key: snow draws it
//! from the OS generator, as it must (only fuzz builds, with the crate feature `fuzzing`, take
//! it from a resettable counter instead: `handshake::fuzzing`). Timing and sizes stay
//! deterministic, so simulations replay the same way.

use std::fmt;

use crate::crypto::PacketKey;

/// Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another protocol or version fails the
/// handshake instead of agreeing on keys for something else.
pub const PROLOGUE: &[u8] = b"chirp encrypted protocol v2";
/// Longest handshake message (XX message 2: e, ee, s, es, plus payload and tags).
const MAX_MESSAGE: usize = 1024;

/// A static X25519 private key: an endpoint's long-term identity. `Debug` never shows it.
#[derive(Clone)]
pub struct StaticSecret(pub [u8; 32]);

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(..)")
    }
}

impl PartialEq for StaticSecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for StaticSecret {}

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The message did not authenticate or decode: forged, damaged, from another protocol
    /// version, or not the message expected now.
    #[error("handshake message rejected")]
    Rejected,
    /// Writing or finishing out of turn.
    #[error("handshake step out of order")]
    OutOfTurn,
    /// A key or parameter snow refused.
    #[error("handshake setup failed: {0}")]
    Setup(String),
}

/// The outcome of a completed handshake.
pub struct HandshakeKeys {
    /// Seals what we send.
    pub send: PacketKey,
    /// Opens what we receive.
    pub recv: PacketKey,
    /// The peer's static public key: its identity, to check against pins and known keys.
    pub remote_static: [u8; 32],
}

impl fmt::Debug for HandshakeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeKeys").finish_non_exhaustive()
    }
}

/// One side of a Noise XX handshake.
pub struct Handshake {
    state: snow::HandshakeState,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .field("finished", &self.state.is_handshake_finished())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    fn build(static_secret: &[u8; 32], initiator: bool) -> Result<Self, HandshakeError> {
        let setup = |e: snow::Error| HandshakeError::Setup(e.to_string());
        let params = NOISE_PARAMS.parse().map_err(setup)?;
        // Fuzz builds only: the same X25519 results, memoised (see `fuzzing`).
        #[cfg(feature = "fuzzing")]
        let builder = snow::Builder::with_resolver(params, Box::new(fuzzing::MemoResolver));
        #[cfg(not(feature = "fuzzing"))]
        let builder = snow::Builder::new(params);
        let builder = builder
            .local_private_key(static_secret)
            .map_err(setup)?
            .prologue(PROLOGUE)
            .map_err(setup)?;
        // Fuzz builds only (feature `fuzzing`, which no crate of the workspace enables): the
        // ephemeral key comes from `fuzzing`'s counter instead of the OS, so a fuzz input
        // replays byte for byte.
        #[cfg(feature = "fuzzing")]
        let ephemeral = fuzzing::next_ephemeral(static_secret, initiator);
        #[cfg(feature = "fuzzing")]
        let builder = builder.fixed_ephemeral_key_for_testing_only(&ephemeral);
        let state = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        };
        Ok(Self {
            state: state.map_err(setup)?,
        })
    }

    /// The side that opens the connection.
    pub fn initiator(static_secret: &[u8; 32]) -> Result<Self, HandshakeError> {
        Self::build(static_secret, true)
    }

    /// The side that accepts it.
    pub fn responder(static_secret: &[u8; 32]) -> Result<Self, HandshakeError> {
        Self::build(static_secret, false)
    }

    /// Is the next step ours to write?
    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn() && !self.state.is_handshake_finished()
    }

    /// Have all messages been exchanged?
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The peer's static public key, once a message carrying it has been read (XX: message 2
    /// for the initiator, message 3 for the responder).
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
    }

    /// Writes our next handshake message, carrying `payload` (encrypted once keys exist).
    pub fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if !self.is_my_turn() {
            return Err(HandshakeError::OutOfTurn);
        }
        let mut out = vec![0u8; MAX_MESSAGE];
        let n = self
            .state
            .write_message(payload, &mut out)
            .map_err(|e| HandshakeError::Setup(e.to_string()))?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the peer's next handshake message and returns its payload. A failure leaves the
    /// handshake unusable (snow's state has advanced): the caller drops the connection attempt,
    /// which is why only packets that passed the cheaper checks should get here.
    pub fn read(&mut self, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if self.is_my_turn() || self.is_finished() {
            return Err(HandshakeError::OutOfTurn);
        }
        let mut out = vec![0u8; MAX_MESSAGE];
        let n = self
            .state
            .read_message(message, &mut out)
            .map_err(|_| HandshakeError::Rejected)?;
        out.truncate(n);
        Ok(out)
    }

    /// The keys, once the handshake is finished.
    pub fn finish(mut self) -> Result<HandshakeKeys, HandshakeError> {
        if !self.state.is_handshake_finished() {
            return Err(HandshakeError::OutOfTurn);
        }
        let remote: [u8; 32] = self
            .state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(HandshakeError::Rejected)?;
        // Noise's split: the first key protects initiator-to-responder traffic.
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        let (send, recv) = if self.state.is_initiator() {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        Ok(HandshakeKeys {
            send: PacketKey::new(send),
            recv: PacketKey::new(recv),
            remote_static: remote,
        })
    }
}

/// Deterministic ephemeral keys, for the fuzz targets only (`fuzz/`, `docs/FUZZING.md`).
///
/// With the crate feature `fuzzing`, every [`Handshake`] takes its ephemeral key from a
/// per-thread counter: BLAKE2s of the static key, the role and the counter, instead of the OS
/// generator. A fuzz target calls [`fuzzing::reset`] at the start of each input, so the same
/// input gives the same handshake messages, the same packet keys and the same datagrams, and
/// a crash reproduces exactly. **Never enable this feature in a build that talks to anyone**:
/// the ephemeral keys, and with them every session key, become predictable.
///
/// Since the keys repeat from one input to the next, so do the X25519 operations: the feature
/// also memoises them ([`MemoResolver`]), with the same results, so that a fuzz target that sets
/// up a connection per input spends its time past the handshake rather than in scalar
/// multiplications (a quarter of the `pair` target's time before).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use snow::params::{CipherChoice, DHChoice, HashChoice};
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    use snow::types::{Cipher, Dh, Hash, Random};

    /// Most memoised results kept; beyond it the memo starts again (inputs may carry any
    /// public key, so the set of results is unbounded).
    const MEMO_MAX: usize = 4096;

    /// Memoised results: a key (or key pair) to 32 bytes.
    type Memo<K> = RefCell<HashMap<K, [u8; 32]>>;

    thread_local! {
        static COUNTER: Cell<u64> = const { Cell::new(0) };
        /// Private key -> public key, and (private key, public key) -> shared secret.
        static PUBLIC: Memo<[u8; 32]> = RefCell::new(HashMap::new());
        static SHARED: Memo<([u8; 32], [u8; 32])> = RefCell::new(HashMap::new());
    }

    fn memo<K: std::hash::Hash + Eq>(
        map: &'static std::thread::LocalKey<Memo<K>>,
        key: K,
        compute: impl FnOnce() -> Result<[u8; 32], snow::Error>,
    ) -> Result<[u8; 32], snow::Error> {
        if let Some(v) = map.with(|m| m.borrow().get(&key).copied()) {
            return Ok(v);
        }
        let v = compute()?;
        map.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MEMO_MAX {
                m.clear();
            }
            m.insert(key, v);
        });
        Ok(v)
    }

    /// snow's default primitives, with X25519 memoised.
    pub(super) struct MemoResolver;

    impl CryptoResolver for MemoResolver {
        fn resolve_rng(&self) -> Option<Box<dyn Random>> {
            DefaultResolver.resolve_rng()
        }

        fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
            match choice {
                DHChoice::Curve25519 => Some(Box::new(MemoDh::default())),
                _ => DefaultResolver.resolve_dh(choice),
            }
        }

        fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
            DefaultResolver.resolve_hash(choice)
        }

        fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
            DefaultResolver.resolve_cipher(choice)
        }
    }

    /// X25519 whose key derivations and exchanges are looked up before they are computed.
    #[derive(Default)]
    struct MemoDh {
        private: [u8; 32],
        public: [u8; 32],
    }

    impl MemoDh {
        /// snow's own X25519, holding `private`.
        fn real(private: &[u8; 32]) -> Result<Box<dyn Dh>, snow::Error> {
            let mut dh = DefaultResolver
                .resolve_dh(&DHChoice::Curve25519)
                .ok_or(snow::Error::Dh)?;
            dh.set(private);
            Ok(dh)
        }
    }

    impl Dh for MemoDh {
        fn name(&self) -> &'static str {
            "25519"
        }

        fn pub_len(&self) -> usize {
            32
        }

        fn priv_len(&self) -> usize {
            32
        }

        fn set(&mut self, privkey: &[u8]) {
            self.private.copy_from_slice(&privkey[..32]);
            let private = self.private;
            // Deriving a public key from 32 bytes cannot fail; `real` only fails if snow was
            // built without X25519, and then no handshake works at all.
            self.public = memo(&PUBLIC, private, || {
                let mut public = [0; 32];
                public.copy_from_slice(Self::real(&private)?.pubkey());
                Ok(public)
            })
            .expect("snow provides X25519");
        }

        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
            let mut private = [0; 32];
            rng.try_fill_bytes(&mut private)?;
            self.set(&private);
            Ok(())
        }

        fn pubkey(&self) -> &[u8] {
            &self.public
        }

        fn privkey(&self) -> &[u8] {
            &self.private
        }

        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let mut public = [0; 32];
            public.copy_from_slice(pubkey.get(..32).ok_or(snow::Error::Dh)?);
            let shared = memo(&SHARED, (self.private, public), || {
                let mut shared = [0; 32];
                Self::real(&self.private)?.dh(&public, &mut shared)?;
                Ok(shared)
            })?;
            out[..32].copy_from_slice(&shared);
            Ok(())
        }
    }

    /// Starts the sequence of ephemeral keys of this thread again.
    pub fn reset() {
        COUNTER.with(|c| c.set(0));
    }

    /// The next ephemeral private key of this thread (any 32 bytes are an X25519 key).
    pub(super) fn next_ephemeral(static_secret: &[u8; 32], initiator: bool) -> [u8; 32] {
        let n = COUNTER.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        crate::crypto::hash(&[
            b"chirp fuzzing ephemeral",
            static_secret,
            &[u8::from(initiator)],
            &n.to_be_bytes(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let kp = snow::Builder::new(NOISE_PARAMS.parse().expect("params"))
            .generate_keypair()
            .expect("keypair");
        (
            kp.private.try_into().expect("32 bytes"),
            kp.public.try_into().expect("32 bytes"),
        )
    }

    fn run(a: &mut Handshake, b: &mut Handshake) -> Result<(), HandshakeError> {
        let m1 = a.write(b"")?;
        b.read(&m1)?;
        let m2 = b.write(b"")?;
        a.read(&m2)?;
        let m3 = a.write(b"hello")?;
        assert_eq!(b.read(&m3)?, b"hello", "message 3 payload is delivered");
        Ok(())
    }

    #[test]
    fn xx_agrees_on_keys_and_identities() {
        let (sa, pa) = keypair();
        let (sb, pb) = keypair();
        let mut a = Handshake::initiator(&sa).expect("a");
        let mut b = Handshake::responder(&sb).expect("b");
        assert!(matches!(b.write(b""), Err(HandshakeError::OutOfTurn)));
        run(&mut a, &mut b).expect("handshake");
        assert!(a.is_finished() && b.is_finished());
        let ka = a.finish().expect("a keys");
        let kb = b.finish().expect("b keys");
        assert_eq!(ka.remote_static, pb, "a learned b's identity");
        assert_eq!(kb.remote_static, pa, "b learned a's identity");
        // a's sealing key is b's opening key, and the other way round; never the same key.
        let mut buf = b"ping".to_vec();
        ka.send.seal(7, b"hdr", &mut buf);
        kb.recv.open(7, b"hdr", &mut buf).expect("b opens a");
        assert_eq!(buf, b"ping");
        let mut buf = b"pong".to_vec();
        kb.send.seal(7, b"hdr", &mut buf);
        kb.recv
            .open(7, b"hdr", &mut buf.clone())
            .expect_err("directions use distinct keys");
        ka.recv.open(7, b"hdr", &mut buf).expect("a opens b");
        assert!(!format!("{ka:?}{kb:?}").contains(&format!("{:?}", ka.send.raw())));
    }

    #[cfg(feature = "fuzzing")]
    #[test]
    fn memoised_x25519_gives_snow_results_on_miss_and_hit() {
        use snow::params::DHChoice;
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let memo = fuzzing::MemoResolver;
        for (a, b) in [([1u8; 32], [2u8; 32]), ([7; 32], [200; 32])] {
            let mut real_a = DefaultResolver
                .resolve_dh(&DHChoice::Curve25519)
                .expect("x25519");
            let mut real_b = DefaultResolver
                .resolve_dh(&DHChoice::Curve25519)
                .expect("x25519");
            real_a.set(&a);
            real_b.set(&b);
            let mut want = [0u8; 32];
            real_a.dh(real_b.pubkey(), &mut want).expect("dh");
            for _ in 0..2 {
                let mut m = memo.resolve_dh(&DHChoice::Curve25519).expect("x25519");
                m.set(&a);
                assert_eq!(m.pubkey(), real_a.pubkey());
                let mut got = [0u8; 32];
                m.dh(real_b.pubkey(), &mut got).expect("dh");
                assert_eq!(got, want);
            }
        }
    }

    #[cfg(feature = "fuzzing")]
    #[test]
    fn fuzzing_hook_replays_handshakes_exactly() {
        let transcript = || {
            fuzzing::reset();
            let mut a = Handshake::initiator(&[1; 32]).expect("a");
            let mut b = Handshake::responder(&[2; 32]).expect("b");
            let m1 = a.write(b"").expect("m1");
            b.read(&m1).expect("read m1");
            let m2 = b.write(b"").expect("m2");
            a.read(&m2).expect("read m2");
            let m3 = a.write(b"").expect("m3");
            b.read(&m3).expect("read m3");
            let k = a.finish().expect("keys");
            (m1, m2, m3, *k.send.raw(), *k.recv.raw())
        };
        let first = transcript();
        assert_eq!(first, transcript(), "same counter, same handshake");
        // Without a reset the next handshake takes new ephemeral keys.
        let mut a = Handshake::initiator(&[1; 32]).expect("a");
        assert_ne!(a.write(b"").expect("m1"), first.0);
    }

    #[test]
    fn tampering_or_another_prologue_fails() {
        let (sa, _) = keypair();
        let (sb, _) = keypair();
        let mut a = Handshake::initiator(&sa).expect("a");
        let mut b = Handshake::responder(&sb).expect("b");
        let m1 = a.write(b"").expect("m1");
        b.read(&m1).expect("m1 ok");
        let mut m2 = b.write(b"").expect("m2");
        let last = m2.len() - 1;
        m2[last] ^= 1;
        assert_eq!(a.read(&m2), Err(HandshakeError::Rejected));

        // A responder speaking another protocol version (another prologue) cannot agree.
        let params = NOISE_PARAMS.parse().expect("params");
        let other = snow::Builder::new(params)
            .local_private_key(&sb)
            .expect("key")
            .prologue(b"chirp encrypted protocol v3")
            .expect("prologue")
            .build_responder()
            .expect("responder");
        let mut b = Handshake { state: other };
        let mut a = Handshake::initiator(&sa).expect("a");
        assert_eq!(run(&mut a, &mut b), Err(HandshakeError::Rejected));
    }
}
