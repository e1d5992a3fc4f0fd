//! What the bulk-transfer tests share (`bulk.rs`, `files.rs`): the bad path, chat lines that
//! say their own number and the p99 (payload bytes: `chirp_netsim::noise`).

use std::time::Duration;

use chirp_netsim::LinkConfig;

/// One way of the path.
pub(crate) const ONE_WAY: Duration = Duration::from_millis(20);
/// One chat line every this often, `CHAT_COUNT` of them, while the transfer runs.
pub(crate) const CHAT_EVERY: Duration = Duration::from_millis(10);
pub(crate) const CHAT_COUNT: usize = 300;

/// 10 % loss each way, with reordering and duplication.
pub(crate) fn bad_path() -> LinkConfig {
    LinkConfig::ideal(ONE_WAY)
        .with_loss(0.10)
        .with_reorder(0.05, Duration::from_millis(8))
        .with_duplicate(0.05)
}

/// Chat line `i`: numbered, the size of a typical line (never starts with the file tag).
pub(crate) fn line(i: usize) -> Vec<u8> {
    format!("{i:05} {}", "x".repeat(80)).into_bytes()
}

/// The number of a [`line`].
pub(crate) fn line_index(data: &[u8]) -> usize {
    std::str::from_utf8(&data[..5])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a numbered line")
}

/// The 99th percentile (nearest rank) of a non-empty set.
pub(crate) fn p99(lat: &[Duration]) -> Duration {
    let mut v = lat.to_vec();
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}
