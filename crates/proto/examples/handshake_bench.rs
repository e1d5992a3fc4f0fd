//! Handshake cost: complete Noise XX handshakes (three messages, both sides, key split) per
//! second on one core; complete connection setups through two `Endpoint`s (INITIAL, RETRY,
//! INITIAL with cookie, ACCEPT, HANDSHAKE, first DATA: everything a server does per client,
//! plus the client's side); and the AEAD cost of sealing plus opening one 100-byte chat packet.
//! Prints the median of several rounds; the machine is noisy, so compare ratios within a run.
//!
//! ```text
//! cargo run --release -p chirp-proto --example handshake_bench
//! ```
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use chirp_proto::handshake::{Handshake, NOISE_PARAMS, StaticSecret};
use chirp_proto::{Endpoint, EndpointConfig, Event};

fn keypair() -> [u8; 32] {
    let params = NOISE_PARAMS.parse().expect("valid Noise parameters");
    let kp = snow::Builder::new(params)
        .generate_keypair()
        .expect("OS randomness");
    kp.private.try_into().expect("32-byte key")
}

fn one_handshake(sa: &[u8; 32], sb: &[u8; 32]) {
    let mut a = Handshake::initiator(sa).expect("initiator");
    let mut b = Handshake::responder(sb).expect("responder");
    let m1 = a.write(b"").expect("m1");
    b.read(&m1).expect("m1");
    let m2 = b.write(b"").expect("m2");
    a.read(&m2).expect("m2");
    let m3 = a.write(b"").expect("m3");
    b.read(&m3).expect("m3");
    let ka = a.finish().expect("keys");
    let kb = b.finish().expect("keys");
    std::hint::black_box((ka, kb));
}

/// One connection set up between two fresh endpoints, datagrams passed in memory.
fn one_connection(sa: &[u8; 32], sb: &[u8; 32], seed: u64, now: Instant) {
    let cfg = |k: &[u8; 32]| EndpointConfig {
        identity: Some(StaticSecret(*k)),
        ..EndpointConfig::default()
    };
    let (a_addr, b_addr) = (([10, 0, 0, 1], 1).into(), ([10, 0, 0, 2], 2).into());
    let mut a = Endpoint::new(cfg(sa), seed);
    let mut b = Endpoint::new(cfg(sb), seed + 1);
    a.connect(now, b_addr).expect("room");
    let (mut a_up, mut b_up) = (false, false);
    // Bounded: the handshake takes 5 flights; 50 rounds mean something is broken.
    for _ in 0..50 {
        while let Some(t) = a.poll_transmit(now) {
            b.handle_datagram(now, a_addr, &t.contents);
        }
        while let Some(t) = b.poll_transmit(now) {
            a.handle_datagram(now, b_addr, &t.contents);
        }
        while let Some(e) = a.poll_event() {
            a_up |= matches!(e, Event::Connected { .. });
        }
        while let Some(e) = b.poll_event() {
            b_up |= matches!(e, Event::Connected { .. });
        }
        if a_up && b_up {
            return;
        }
    }
    panic!("handshake did not complete");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (sa, sb) = (keypair(), keypair());
    let rounds = 7;
    let per_round = 500;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            one_handshake(&sa, &sb);
        }
        rates.push(per_round as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "Noise XX handshakes (both sides) per second, one core: median {:.0} of {rounds} rounds",
        median(rates)
    );

    let now = Instant::now();
    let mut rates = Vec::new();
    for r in 0..rounds {
        let t = Instant::now();
        for i in 0..per_round {
            one_connection(&sa, &sb, (r * per_round + i) as u64 * 2, now);
        }
        rates.push(per_round as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "connection setups through two endpoints (RETRY + XX, both sides) per second, one core: \
         median {:.0} of {rounds} rounds",
        median(rates)
    );

    let key = chirp_proto::crypto::PacketKey::new([7; 32]);
    let header = [0u8; 11];
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let n = 200_000u64;
        let t = Instant::now();
        for pn in 0..n {
            let mut buf = vec![0u8; 100];
            key.seal(pn, &header, &mut buf);
            key.open(pn, &header, &mut buf).expect("authentic");
        }
        rates.push(
            n as f64
                / t.elapsed()
                    .as_secs_f64()
                    .max(Duration::from_nanos(1).as_secs_f64()),
        );
    }
    println!(
        "100-byte packets sealed and opened per second, one core: median {:.0}",
        median(rates)
    );
}
