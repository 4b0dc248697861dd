//! Benchmarks of the crypto hot paths: raw Ed25519, entry signing and (batch) verification,
//! Merkle append and proofs on a 1M-leaf tree. Run with
//! `cargo bench -p ringlog-protocol --bench crypto`.
#![allow(clippy::unwrap_used)] // benchmarks: a panic is a failure report

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringlog_protocol::keys::verify_batch;
use ringlog_protocol::merkle::{
    inclusion_proof, leaf_hash, verify_inclusion, Frontier, MemoryTree,
};
use ringlog_protocol::record::{
    Body, Entry, HopRecord, NextHop, PrevHop, SignedEntry, Trust, Verdicts,
};
use ringlog_protocol::{sha256, Hash, PublicKey, SecretKey, Sig};

fn key() -> SecretKey {
    SecretKey::from_seed([0x5a; 32])
}

/// A typical hop record: a message from an outside host passed on to another member.
fn hop(index: u64) -> Entry {
    Entry {
        log: key().public(),
        index,
        body: Body::Hop(HopRecord {
            time_ms: 1_700_000_000_000 + index,
            mfp1: sha256(&[b"mfp1", &index.to_be_bytes()]),
            mfp1_lite: sha256(&[b"lite", &index.to_be_bytes()]),
            body: sha256(&[b"body", &index.to_be_bytes()]),
            parts: vec![],
            prev: PrevHop::External {
                ip: "192.0.2.7".parse().unwrap(),
                helo: "mail.sender.example".into(),
            },
            next: NextHop::Member { name: "isp-b.example".into() },
            queue_id: format!("4Xk9Q{index:08}"),
            rcpt_count: 2,
            verdicts: Verdicts {
                trust: Some(Trust::Untrusted),
                spam_score_milli: Some(1500),
                virus: None,
            },
            transform: None,
        }),
    }
}

fn ed25519(c: &mut Criterion) {
    let k = key();
    let pk = k.public();
    let msg = hop(0).signing_bytes();
    let sig = k.sign(&msg);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| k.sign(black_box(&msg))));
    g.bench_function("verify", |b| b.iter(|| pk.verify(black_box(&msg), &sig).unwrap()));
    g.finish();
}

fn entries(c: &mut Criterion) {
    let k = key();
    let mut g = c.benchmark_group("entry");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter_batched(|| hop(7), |e| e.sign(&k).unwrap(), BatchSize::SmallInput)
    });
    let one = hop(7).sign(&k).unwrap();
    g.bench_function("verify", |b| b.iter(|| black_box(&one).verify().unwrap()));
    let stored = one.encode();
    g.bench_function("decode_verify", |b| {
        b.iter(|| SignedEntry::decode_verified(black_box(&stored), &k.public(), 7).unwrap())
    });
    for n in [64u64, 256] {
        let signed: Vec<SignedEntry> = (0..n).map(|i| hop(i).sign(&k).unwrap()).collect();
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("verify_batch_{n}"), |b| {
            b.iter(|| {
                // The signed bytes are rebuilt from the entries, as a verifier must.
                let msgs: Vec<Vec<u8>> = signed.iter().map(|s| s.entry.signing_bytes()).collect();
                let items: Vec<(PublicKey, &[u8], Sig)> = signed
                    .iter()
                    .zip(&msgs)
                    .map(|(s, m)| (s.entry.log, m.as_slice(), s.sig))
                    .collect();
                verify_batch(&items).unwrap()
            })
        });
    }
    g.finish();
}

fn merkle(c: &mut Criterion) {
    const BATCH: u64 = 4096;
    let leaves: Vec<Hash> = (0..BATCH).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("frontier_append", |b| {
        let mut f = Frontier::new();
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            for l in &leaves {
                out.clear();
                f.push(*l, &mut out);
            }
            black_box(f.size())
        })
    });

    const SIZE: u64 = 1 << 20;
    let tree = MemoryTree::from_leaf_hashes((0..SIZE).map(|i| leaf_hash(&i.to_be_bytes())));
    let root = tree.root();
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("inclusion_proof_1m", |b| {
        b.iter(|| {
            i = (i + 104_729) % SIZE;
            inclusion_proof(&tree, i, SIZE).unwrap()
        })
    });
    // A size that is not a power of two exercises the ragged right edge.
    let odd = SIZE - 12_345;
    g.bench_function("inclusion_proof_1m_ragged", |b| {
        b.iter(|| {
            i = (i + 104_729) % odd;
            inclusion_proof(&tree, i, odd).unwrap()
        })
    });
    let proofs: Vec<(u64, Vec<Hash>)> =
        (0..256u64).map(|k| (k * 4093, inclusion_proof(&tree, k * 4093, SIZE).unwrap())).collect();
    let mut k = 0usize;
    g.bench_function("verify_inclusion_1m", |b| {
        b.iter(|| {
            k = (k + 1) % proofs.len();
            let (idx, p) = &proofs[k];
            verify_inclusion(&leaf_hash(&idx.to_be_bytes()), *idx, SIZE, p, &root).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, ed25519, entries, merkle);
criterion_main!(benches);
