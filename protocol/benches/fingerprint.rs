//! Throughput of mfp1 over every message of the shared real-mail corpus (MB/s). Run with
//! `cargo bench -p ringlog-protocol --bench fingerprint`.
#![allow(clippy::unwrap_used)] // benchmarks: a panic is a failure report

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringlog_protocol::fingerprint::fingerprint;
use std::path::PathBuf;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/real");

fn corpus() -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(CORPUS) else {
        eprintln!("note: shared corpus not found at {CORPUS}; nothing to measure");
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn bench(c: &mut Criterion) {
    let msgs = corpus();
    if msgs.is_empty() {
        return;
    }
    let total: usize = msgs.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function(format!("corpus_{}_files", msgs.len()), |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(fingerprint(black_box(m)));
            }
        })
    });
    // One large message: a 4 MiB base64 attachment and a text part.
    let mut big = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while big.len() < 4 << 20 {
        big.extend_from_slice(line);
    }
    big.extend_from_slice(b"--b--\r\n");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("base64_attachment_4mib", |b| {
        b.iter(|| black_box(fingerprint(black_box(&big))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
