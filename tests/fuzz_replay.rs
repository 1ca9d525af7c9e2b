//! The fuzz targets on the stable toolchain, bounded in time (issue 11): every file of
//! the committed corpus (`fuzz/corpus-seed/<target>/`) is replayed through the target's
//! check (`fuzz/checks.rs`, the same code libFuzzer runs), then proptest mutates corpus
//! entries (byte flips, inserts, deletes, splices of two entries) for `FUZZ_CASES` cases
//! per target (default 10,000), stopping early after `FUZZ_SECS` seconds (default 60).
//!
//! Run: `FUZZ_CASES=20000 cargo test --release --test fuzz_replay`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus-seed")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(out.len() >= 5, "{}: corpus too small", dir.display());
    out
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Splice(usize, usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let interesting = prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        b"\r".to_vec(),
        b":".to_vec(),
        b";".to_vec(),
        b" ".to_vec(),
        b"0\r\n\r\n".to_vec(),
        b"ffffffffffffffffff".to_vec(),
        b"Transfer-Encoding: chunked\r\n".to_vec(),
        b"Content-Length: 5\r\n".to_vec(),
        vec![0],
        vec![0xff],
    ]);
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![interesting, prop::collection::vec(any::<u8>(), 1..8)]
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, b, c)| Edit::Splice(a, b, c)),
    ];
    prop::collection::vec(edit, 1..6)
}

fn mutate(corpus: &[Vec<u8>], pick: usize, edits: &[Edit]) -> Vec<u8> {
    let mut v = corpus[pick % corpus.len()].clone();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, b) if !v.is_empty() => {
                let i = i % v.len();
                v[i] ^= b | 1;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(*i, v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Splice(other, from, to) => {
                let o = &corpus[other % corpus.len()];
                let from = at(*from, o.len());
                let i = at(*to, v.len());
                v.truncate(i);
                v.extend_from_slice(&o[from..]);
            }
        }
    }
    v
}

fn run(target: &str, check: fn(&[u8])) {
    let seeds = corpus(target);
    for (i, s) in seeds.iter().enumerate() {
        check(s);
        assert!(i < 10_000);
    }
    let cases = env_or("FUZZ_CASES", 10_000) as u32;
    let deadline = Instant::now() + Duration::from_secs(env_or("FUZZ_SECS", 60));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = std::cell::Cell::new(0u32);
    let result = runner.run(&(any::<usize>(), edits()), |(pick, e)| {
        if Instant::now() < deadline {
            check(&mutate(&seeds, pick, &e));
            ran.set(ran.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
    println!(
        "{target}: {} corpus files, {} mutations",
        seeds.len(),
        ran.get()
    );
    assert!(ran.get() > 0);
}

#[test]
fn request_head_corpus_and_mutations() {
    run("request_head", checks::request_head);
}

#[test]
fn chunked_corpus_and_mutations() {
    run("chunked", checks::chunked);
}
