//! Store throughput and disk use: realistic hop records appended in batches of 256 with one
//! flush per batch, then bytes on disk per record, search and proof latency.
//!
//! `cargo bench -p ringlog-node --bench store` runs 100,000 records; under `cargo test` (no
//! `--bench` argument) it runs a small smoke size.
#![allow(clippy::unwrap_used)] // benchmark: a failure aborts the run

use ringlog_node::store::conformance::{log_key, realistic_hop, test_hash};
use ringlog_node::store::{IndexKey, LogNodes, SledStore, Store};
use ringlog_protocol::merkle;
use std::path::Path;
use std::time::Instant;

const BATCH: u64 = 256;

/// (apparent bytes, allocated bytes) of every file under `dir`, like `du -b` and `du`.
fn disk_use(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (a, b) = disk_use(&e.path());
            total = (total.0 + a, total.1 + b);
        } else {
            total = (total.0 + m.len(), total.1 + m.blocks() * 512);
        }
    }
    total
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 100_000 } else { 2 * BATCH };
    let k = log_key(1);
    let log = k.public();

    let t = Instant::now();
    let entries: Vec<_> = (0..n).map(|i| realistic_hop(&k, i, i)).collect();
    let encoded: u64 = entries.iter().map(|e| e.encode().len() as u64).sum();
    println!("signed {n} records in {:.2?}; {} bytes encoded on average", t.elapsed(), encoded / n);

    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let t = Instant::now();
    for chunk in entries.chunks(BATCH as usize) {
        store.append(&log, chunk).unwrap();
    }
    store.flush().unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "appended {n} records in batches of {BATCH}, flushed per batch: {:.2}s, {:.0} records/s, {:.1} ms per batch",
        secs,
        n as f64 / secs,
        secs * 1000.0 / (n / BATCH).max(1) as f64
    );
    let (apparent, allocated) = disk_use(dir.path());
    println!(
        "on disk (open, flushed): {apparent} bytes apparent, {allocated} allocated: {} / {} bytes per record",
        apparent / n,
        allocated / n
    );

    let t = Instant::now();
    let probes = 1000u64;
    for i in 0..probes {
        let hits = store.search(&IndexKey::Mfp1(test_hash("mfp1", i * (n / probes)))).unwrap();
        assert_eq!(hits.len(), 1);
    }
    println!("search by mfp1: {:.1} µs each", t.elapsed().as_secs_f64() * 1e6 / probes as f64);

    let t = Instant::now();
    let nodes = LogNodes::new(&store, log);
    for i in 0..probes {
        let proof = merkle::inclusion_proof(&nodes, i * (n / probes), n).unwrap();
        assert!(!proof.is_empty());
    }
    println!("inclusion proof: {:.1} µs each", t.elapsed().as_secs_f64() * 1e6 / probes as f64);

    drop(store);
    let (apparent, allocated) = disk_use(dir.path());
    println!(
        "on disk (closed): {apparent} bytes apparent, {allocated} allocated: {} / {} bytes per record",
        apparent / n,
        allocated / n
    );
    let t = Instant::now();
    let store = SledStore::open(dir.path()).unwrap();
    println!("reopen with consistency check: {:.2?}", t.elapsed());
    assert_eq!(store.size(&log).unwrap(), n);
}
