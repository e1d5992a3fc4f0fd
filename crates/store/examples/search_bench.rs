//! Full-text search over a large history: how long one `/search` takes in the store.
//!
//! `cargo run --release -p chirp-store --example search_bench [MESSAGES] [RUNS]`
//!
//! Writes MESSAGES (default 100,000) messages to one room of a fresh SQLite database (plus a
//! tenth as many to another room, which the search must skip), each a line of 8 to 16 words
//! drawn from a 2,000-word vocabulary (a seeded generator: every run writes the same texts).
//! Then, RUNS times (default 5), times each query 20 times through [`Reader`] (what the
//! server's read path calls) and keeps the median:
//! - `fts rare`: a word in about 0.5 % of the messages, first page (20) newest first;
//! - `fts common`: a word in about 5 %, first page;
//! - `fts two words`: two common words together, first page;
//! - `fts deep page`: the common word, the page below the 1,000th newest match;
//! - reference `id lookup`: one message by id (`history` with `before`, limit 1);
//! - reference `LIKE scan`: the rare word by `text LIKE '%word%'` over the room, first page
//!   (what a search costs without the index).
//!
//! The figure reported for each is the median of the RUNS medians.

#![allow(clippy::print_stdout)] // a benchmark prints its results

use std::time::{Duration, Instant};

use chirp_store::{NewMessage, Op, Reader, Sqlite, StoreConfig, search_terms};

const ROOM: &str = "#bench";
const OTHER: &str = "#other";
const VOCABULARY: usize = 2000;
const PAGE: usize = 20;
const REPEAT: usize = 20;

/// xorshift64*: the same texts every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn word(i: usize) -> String {
    format!("w{i:04}")
}

/// A line of 8 to 16 words; `rare` in 1 of 200 lines, `common` and `also` in 1 of 20 each.
fn line(rng: &mut Rng) -> String {
    let n = 8 + (rng.next() % 9) as usize;
    let mut words: Vec<String> = (0..n)
        .map(|_| word(10 + (rng.next() as usize % (VOCABULARY - 10))))
        .collect();
    if rng.next() % 200 == 0 {
        words.push("rare".into());
    }
    if rng.next() % 20 == 0 {
        words.push("common".into());
    }
    if rng.next() % 20 == 0 {
        words.push("also".into());
    }
    words.join(" ")
}

fn message(conv: &str, i: u64, text: String) -> Op {
    Op::Message(NewMessage {
        conv: conv.into(),
        ts_ms: 1_764_650_000_000 + i as i64,
        from_key: [7; 32],
        from_nick: "bench".into(),
        to_key: None,
        to_nick: None,
        kind: 0,
        text,
        client_ref: Some((1, i)),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of REPEAT timings of `f` (which must find something: `f` returns how much).
fn time(mut f: impl FnMut() -> usize) -> Duration {
    let mut t = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        let start = Instant::now();
        let n = f();
        t.push(start.elapsed());
        assert!(
            n > 0,
            "the query found nothing: the bench would measure nothing"
        );
    }
    median(t)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let messages: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("search.db");
    let db = Sqlite::open(&path, StoreConfig::default())?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..messages + messages / 10 {
        let conv = if i % 11 == 10 { OTHER } else { ROOM };
        batch.push(message(conv, i, line(&mut rng)));
        if batch.len() == 4096 {
            db.write(std::mem::take(&mut batch)).blocking_recv()??;
        }
    }
    db.write(batch).blocking_recv()??;
    let reader: Reader = db.reader()?;
    let in_room = reader.count(ROOM)?;
    println!(
        "{in_room} messages in {ROOM} (+{} in {OTHER}), written in {:.1} s",
        reader.count(OTHER)?,
        started.elapsed().as_secs_f64()
    );
    let like = rusqlite::Connection::open(&path)?;
    let terms = |q: &str| search_terms(q).unwrap_or_default();
    let deep_before = reader
        .search(ROOM, &terms("common"), None, 1000)?
        .last()
        .map(|r| r.id);
    let last = reader.last_id(ROOM)?;
    type Query<'a> = (&'a str, Box<dyn FnMut() -> usize + 'a>);
    let mut queries: Vec<Query<'_>> = vec![
        (
            "fts rare",
            Box::new(|| {
                reader
                    .search(ROOM, &terms("rare"), None, PAGE)
                    .map_or(0, |v| v.len())
            }),
        ),
        (
            "fts common",
            Box::new(|| {
                reader
                    .search(ROOM, &terms("common"), None, PAGE)
                    .map_or(0, |v| v.len())
            }),
        ),
        (
            "fts two words",
            Box::new(|| {
                reader
                    .search(ROOM, &terms("common also"), None, PAGE)
                    .map_or(0, |v| v.len())
            }),
        ),
        (
            "fts deep page",
            Box::new(|| {
                reader
                    .search(ROOM, &terms("common"), deep_before, PAGE)
                    .map_or(0, |v| v.len())
            }),
        ),
        (
            "id lookup (reference)",
            Box::new(|| {
                reader
                    .history(ROOM, Some(last / 2), 1)
                    .map_or(0, |v| v.len())
            }),
        ),
        (
            "LIKE scan (reference)",
            Box::new(|| {
                let mut st = like
                    .prepare_cached(
                        "SELECT id, text FROM messages WHERE conv = ?1 AND text LIKE '%rare%'
                     ORDER BY id DESC LIMIT ?2",
                    )
                    .expect("prepare");
                st.query_map(rusqlite::params![ROOM, PAGE as i64], |r| r.get::<_, i64>(0))
                    .expect("query")
                    .count()
            }),
        ),
    ];
    let mut results: Vec<Vec<Duration>> = vec![Vec::new(); queries.len()];
    for run in 1..=runs {
        let mut line = format!("run {run}:");
        for (i, (name, q)) in queries.iter_mut().enumerate() {
            let t = time(q);
            results[i].push(t);
            line.push_str(&format!(" {name} {:.3} ms;", t.as_secs_f64() * 1e3));
        }
        println!("{line}");
    }
    println!("median of {runs} runs (each the median of {REPEAT} queries):");
    for ((name, _), r) in queries.iter().zip(results) {
        println!("  {name:<24} {:>9.3} ms", median(r).as_secs_f64() * 1e3);
    }
    db.shutdown();
    Ok(())
}
