//! Replays every committed seed (and crash regression) in `fuzz/seeds/<target>/` through the
//! exact checks of the fuzz targets, on the stable toolchain, without cargo-fuzz. CI runs it.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example replay
//! ```
#![allow(clippy::print_stdout)]

use std::path::Path;

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut total = 0;
    for target in [
        "packet_decode",
        "packet_decode_sealed",
        "endpoint",
        "handshake",
    ] {
        let dir = seeds.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            match target {
                "packet_decode" => {
                    chirp_fuzz::check_datagram(&data);
                }
                "packet_decode_sealed" => {
                    chirp_fuzz::check_datagram(&chirp_fuzz::sealed_datagram(&data));
                }
                "endpoint" => {
                    chirp_fuzz::endpoint::run(&data);
                }
                _ => {
                    chirp_fuzz::handshake::run(&data);
                }
            }
            total += 1;
        }
    }
    println!("replayed {total} seeds: no panic, every check held");
}
