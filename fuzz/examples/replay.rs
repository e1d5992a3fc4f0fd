//! Replays every committed seed (and crash regression) in `fuzz/seeds/<target>/` through the
//! exact checks of the fuzz targets, on the stable toolchain, without cargo-fuzz. CI runs it.
//! With arguments, replays the given files through one target instead (to reproduce a crash
//! on stable).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example replay
//! cargo run --manifest-path fuzz/Cargo.toml --example replay -- pair fuzz/artifacts/pair/crash-*
//! ```
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

const TARGETS: [&str; 9] = [
    "packet_decode",
    "file_decode",
    "relay_decode",
    "packet_decode_sealed",
    "endpoint",
    "handshake",
    "pair",
    "chat_decode",
    "bus_decode",
];

fn run(target: &str, data: &[u8]) {
    match target {
        "packet_decode" => {
            chirp_fuzz::check_datagram(data);
        }
        "packet_decode_sealed" => {
            chirp_fuzz::check_datagram(&chirp_fuzz::sealed_datagram(data));
        }
        "endpoint" => {
            chirp_fuzz::endpoint::run(data);
        }
        "handshake" => chirp_fuzz::handshake::run(data),
        "pair" => {
            chirp_fuzz::pair::run(data);
        }
        "chat_decode" => chirp_fuzz::chat::run(data),
        "relay_decode" => chirp_fuzz::relay::run(data),
        "file_decode" => chirp_fuzz::files::run(data),
        "bus_decode" => chirp_fuzz::bus::run(data),
        other => panic!("unknown target {other}; one of {TARGETS:?}"),
    }
}

fn read(f: &Path) -> Vec<u8> {
    std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((target, files)) = args.split_first() {
        for f in files {
            println!("{target}: {f}");
            run(target, &read(Path::new(f)));
        }
        println!(
            "replayed {} inputs: no panic, every check held",
            files.len()
        );
        return;
    }
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut total = 0;
    for target in TARGETS {
        let dir = seeds.join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            run(target, &read(&f));
            total += 1;
        }
    }
    println!("replayed {total} seeds: no panic, every check held");
}
