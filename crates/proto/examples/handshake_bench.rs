//! Handshake cost: complete Noise XX handshakes (three messages, both sides, key split) per
//! second on one core, and the AEAD cost of sealing plus opening one 100-byte chat packet.
//! Prints the median of several rounds; the machine is noisy, so compare ratios within a run.
//!
//! ```text
//! cargo run --release -p chirp-proto --example handshake_bench
//! ```
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use chirp_proto::handshake::{Handshake, NOISE_PARAMS};

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
