//! Writes the qlog traces of one simulated connection (virtual time) into a directory: A sends
//! chat lines to B over a 20 ms link that loses some of the datagrams, then closes. Load the
//! files into qvis to see what the congestion and RTT graphs of a chirp connection look like.
//!
//! ```text
//! cargo run -p chirp-qlog --example netsim_trace -- /tmp/chirp-qlog-sample 0.05
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use chirp_netsim::{LinkConfig, Pair};
use chirp_proto::EndpointConfig;
use chirp_qlog::QlogDir;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), loss) = (args.next(), args.next().and_then(|l| l.parse::<f64>().ok())) else {
        eprintln!("usage: netsim_trace DIR [LOSS]");
        std::process::exit(2);
    };
    let loss = loss.unwrap_or(0.05);
    let cfg = EndpointConfig {
        trace: true,
        ..EndpointConfig::default()
    };
    let link = LinkConfig::ideal(Duration::from_millis(20)).with_loss(loss);
    let mut p = Pair::new(cfg, link, 1);
    let mut dirs = [
        QlogDir::new(std::path::Path::new(&dir).join("a").as_path(), None).expect("dir"),
        QlogDir::new(std::path::Path::new(&dir).join("b").as_path(), None).expect("dir"),
    ];
    let drain = |p: &mut Pair, dirs: &mut [QlogDir; 2]| {
        for (node, q) in [&mut p.a, &mut p.b].into_iter().zip(dirs.iter_mut()) {
            while let Some(r) = node.endpoint.poll_trace() {
                q.record(&r).expect("write");
            }
        }
    };
    let (ca, _) = p.connect().expect("handshake");
    drain(&mut p, &mut dirs);
    for i in 0..200usize {
        let len = if i % 40 == 7 { 6000 } else { 80 };
        p.a.endpoint.send(ca, &vec![b'x'; len]).expect("room");
        p.advance_to(p.now + Duration::from_millis(20))
            .expect("no busy loop");
        drain(&mut p, &mut dirs);
    }
    p.a.endpoint.close(p.now, ca, 0x100, "done");
    p.drive_to_idle(Duration::from_secs(60)).expect("idle");
    drain(&mut p, &mut dirs);
    for q in &mut dirs {
        q.flush().expect("flush");
    }
    println!("traces in {dir}/a (client) and {dir}/b (server)");
}
