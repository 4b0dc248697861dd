//! Property tests of the Merkle proofs: random trees up to 10,000 leaves, every proof made
//! verifies, any flipped bit in a proof or root is rejected, and hostile inputs to the
//! verifiers never panic.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure report

use proptest::prelude::*;
use ringlog_protocol::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
    MemoryTree,
};
use ringlog_protocol::Hash;
use std::sync::OnceLock;

const MAX: u64 = 10_000;

/// One shared tree of MAX leaves: a prefix of it is the tree of any smaller size.
fn tree() -> &'static MemoryTree {
    static TREE: OnceLock<MemoryTree> = OnceLock::new();
    TREE.get_or_init(|| MemoryTree::from_leaf_hashes((0..MAX).map(leaf)))
}

fn leaf(i: u64) -> Hash {
    leaf_hash(format!("entry {i}").as_bytes())
}

/// Every index for small trees; for big ones the edges plus a stride through the middle.
fn indexes(size: u64, seed: u64) -> Vec<u64> {
    if size <= 300 {
        return (0..size).collect();
    }
    let mut v: Vec<u64> = vec![0, 1, size / 2, size - 2, size - 1];
    let step = size / 100;
    v.extend((0..100).map(|k| (k * step + seed % step) % size));
    v
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out.0[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn inclusion_proofs_verify(size in 1..=MAX, seed in any::<u64>()) {
        let t = tree();
        let r = root(t, size).unwrap();
        for i in indexes(size, seed) {
            let p = inclusion_proof(t, i, size).unwrap();
            prop_assert!(verify_inclusion(&leaf(i), i, size, &p, &r).is_ok(), "size {size} index {i}");
        }
    }

    #[test]
    fn consistency_proofs_verify(a in 1..=MAX, b in 1..=MAX) {
        let (old, new) = if a <= b { (a, b) } else { (b, a) };
        let t = tree();
        let p = consistency_proof(t, old, new).unwrap();
        let (ro, rn) = (root(t, old).unwrap(), root(t, new).unwrap());
        prop_assert!(verify_consistency(old, new, &ro, &rn, &p).is_ok());
        if old != new {
            // The proof does not work with the roots swapped.
            prop_assert!(verify_consistency(old, new, &rn, &ro, &p).is_err());
        }
    }

    #[test]
    fn flipped_bits_in_inclusion_are_rejected(
        size in 1..=MAX, index_seed in any::<u64>(), bit in 0usize..256, which in any::<usize>(),
    ) {
        let t = tree();
        let i = index_seed % size;
        let r = root(t, size).unwrap();
        let mut p = inclusion_proof(t, i, size).unwrap();
        prop_assert!(verify_inclusion(&leaf(i), i, size, &p, &r).is_ok());
        prop_assert!(verify_inclusion(&leaf(i), i, size, &p, &flip(&r, bit)).is_err());
        prop_assert!(verify_inclusion(&flip(&leaf(i), bit), i, size, &p, &r).is_err());
        if !p.is_empty() {
            let k = which % p.len();
            p[k] = flip(&p[k], bit);
            prop_assert!(verify_inclusion(&leaf(i), i, size, &p, &r).is_err());
        }
    }

    #[test]
    fn flipped_bits_in_consistency_are_rejected(
        a in 1..=MAX, b in 1..=MAX, bit in 0usize..256, which in any::<usize>(),
    ) {
        let (old, new) = if a <= b { (a, b) } else { (b, a) };
        let t = tree();
        let mut p = consistency_proof(t, old, new).unwrap();
        let (ro, rn) = (root(t, old).unwrap(), root(t, new).unwrap());
        prop_assert!(verify_consistency(old, new, &flip(&ro, bit), &rn, &p).is_err());
        prop_assert!(verify_consistency(old, new, &ro, &flip(&rn, bit), &p).is_err());
        if !p.is_empty() {
            let k = which % p.len();
            p[k] = flip(&p[k], bit);
            prop_assert!(verify_consistency(old, new, &ro, &rn, &p).is_err());
        }
    }

    #[test]
    fn random_input_never_panics(
        index in any::<u64>(), size in any::<u64>(), other in any::<u64>(),
        proof in prop::collection::vec(any::<[u8; 32]>().prop_map(Hash), 0..80),
        r1 in any::<[u8; 32]>().prop_map(Hash), r2 in any::<[u8; 32]>().prop_map(Hash),
    ) {
        // Random hashes essentially never verify; what matters is no panic and no hang.
        let _ = verify_inclusion(&r1, index, size, &proof, &r2);
        let _ = verify_inclusion(&r1, index % size.max(1), size, &proof, &r2);
        let _ = verify_consistency(other, size, &r1, &r2, &proof);
        let _ = verify_consistency(other % size.max(1), size, &r1, &r2, &proof);
        // Asking a small tree for proofs about sizes it does not have is an error, not a panic.
        let t = tree();
        let _ = inclusion_proof(t, index % (MAX + 50), other % (MAX + 50));
        let _ = consistency_proof(t, index % (MAX + 50), other % (MAX + 50));
    }
}

#[test]
fn proofs_past_the_tree_are_source_errors() {
    let t = MemoryTree::from_leaf_hashes((0..10).map(leaf));
    assert!(inclusion_proof(&t, 3, 11).is_err());
    assert!(consistency_proof(&t, 3, 12).is_err());
    assert!(root(&t, 11).is_err());
}
