//! RFC 6962 / RFC 9162 Merkle trees: leaf and node hashing, incremental append, and
//! inclusion and consistency proofs served from any [`NodeSource`].
//!
//! Proof generation reads only perfect subtree hashes from the source: every other subtree
//! hash a proof needs (the ragged right edge of a tree) is combined from perfect ones.
//! Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2; every loop is bounded by the proof
//! length or by the 64 bits of a tree size.

use crate::bytes::{sha256, Hash};

/// Longest proof any tree of at most 2^64 - 1 leaves can need.
pub const MAX_PROOF_LEN: usize = 64;

/// Leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0u8], data])
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], &left.0, &right.0])
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Where proofs get their hashes from: the hash of the perfect subtree at `level` and `index`,
/// i.e. over leaves `[index << level, (index + 1) << level)`. Level 0 is the leaf hashes.
/// A store keeps these for every complete subtree, so it can serve proofs for any past size.
pub trait NodeSource {
    /// The source's own error (a store's I/O error).
    type Error;
    /// The perfect subtree hash; asked only for subtrees that are complete in the tree size
    /// the caller works on.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// The right edge of a growing tree: the roots of the perfect subtrees whose sizes are the
/// binary digits of the tree size, largest first. Enough to append and to compute the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the tree of `size` leaves whose perfect subtrees `src` holds.
    pub fn from_source<S: NodeSource>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                peaks.push(src.node(level, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash. Every perfect subtree this completes, the leaf itself (level 0)
    /// first, is pushed onto `out` as `(level, index, hash)`, for a store to keep.
    pub fn push(&mut self, leaf: Hash, out: &mut Vec<(u8, u64, Hash)>) {
        let index = self.size;
        out.push((0, index, leaf));
        let mut hash = leaf;
        let mut level = 0u8;
        // Each trailing one bit of the old size is a peak that merges with the new subtree.
        while (index >> level) & 1 == 1 {
            // A set bit of `size` always has a peak on the stack.
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            out.push((level, index >> level, hash));
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 root hash (SHA-256 of the empty string for the empty tree).
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, peak| node_hash(peak, &acc)),
        }
    }
}

/// Why a proof (or root) could not be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError<E> {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Requested leaf.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// A consistency proof was asked from an empty tree (it would prove nothing) or from a
    /// larger tree to a smaller one.
    #[error("no consistency proof from size {old_size} to size {new_size}")]
    BadSizes {
        /// The earlier size.
        old_size: u64,
        /// The later size.
        new_size: u64,
    },
    /// The node source failed.
    #[error("node source: {0}")]
    Source(E),
}

/// Why a proof does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The earlier size is zero (nothing to prove) or larger than the later size.
    #[error("no consistency proof from size {old_size} to size {new_size}")]
    BadSizes {
        /// The earlier size.
        old_size: u64,
        /// The later size.
        new_size: u64,
    },
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("proof has the wrong number of hashes ({0})")]
    WrongLength(usize),
    /// The proof hashes to a different root than the one claimed (for a consistency proof:
    /// the later root).
    #[error("proof does not lead to the claimed root")]
    RootMismatch,
    /// A consistency proof does not lead to the claimed earlier root.
    #[error("proof does not lead to the claimed earlier root")]
    OldRootMismatch,
}

/// Largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The hash of the RFC 6962 subtree over leaves `[start, end)`, where `start` is a multiple
/// of a power of two at least `end - start` (every subtree the RFC recursion visits is such),
/// combined from the perfect subtrees that tile it.
fn subtree_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    // Tile [start, end) with perfect subtrees, largest first: the binary digits of the width.
    let width = end - start;
    let mut acc: Option<Hash> = None;
    // Fold from the right edge inwards so each step is node_hash(left_peak, acc).
    let mut right = end;
    for level in 0..64u8 {
        if width & (1u64 << level) != 0 {
            let left = right - (1u64 << level);
            let h = src.node(level, left >> level)?;
            acc = Some(match acc {
                None => h,
                Some(r) => node_hash(&h, &r),
            });
            right = left;
        }
    }
    debug_assert_eq!(right, start);
    Ok(acc.unwrap_or_else(empty_root))
}

/// The RFC 6962 root of the first `size` leaves of `src`.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, ProofError<S::Error>> {
    subtree_hash(src, 0, size).map_err(ProofError::Source)
}

/// The RFC 9162 inclusion proof (audit path) of leaf `index` in the tree of `size` leaves,
/// nearest sibling first.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, noting the sibling at each split; the proof lists them
    // bottom-up.
    let (mut start, mut end) = (0u64, size);
    let mut path = Vec::new();
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if index < mid {
            path.push(subtree_hash(src, mid, end).map_err(ProofError::Source)?);
            end = mid;
        } else {
            path.push(subtree_hash(src, start, mid).map_err(ProofError::Source)?);
            start = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// The RFC 9162 consistency proof from the tree of `old_size` leaves to the tree of
/// `new_size` leaves. Empty when the sizes are equal; `old_size` must not be zero.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes { old_size, new_size });
    }
    // SUBPROOF(m, D[start:end], complete), unrolled; `m` counts leaves of the old tree inside
    // [start, end).
    let (mut start, mut end) = (0u64, new_size);
    let mut m = old_size;
    let mut complete = true;
    let mut path = Vec::new();
    while m != end - start {
        let k = split_point(end - start);
        if m <= k {
            path.push(subtree_hash(src, start + k, end).map_err(ProofError::Source)?);
            end = start + k;
        } else {
            path.push(subtree_hash(src, start, start + k).map_err(ProofError::Source)?);
            start += k;
            m -= k;
            complete = false;
        }
    }
    if !complete {
        path.push(subtree_hash(src, start, end).map_err(ProofError::Source)?);
    }
    path.reverse();
    Ok(path)
}

/// Checks that `leaf` (a leaf hash) is entry `index` of the tree of `size` leaves with root
/// `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(VerifyError::WrongLength(proof.len()));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(VerifyError::WrongLength(proof.len()));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // At most 64 shifts: fnode reaches 0.
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::WrongLength(proof.len()));
    }
    if &r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots. An old size of zero is rejected: every
/// tree extends the empty tree, so such a "proof" would prove nothing.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if old_size == 0 || old_size > new_size {
        return Err(VerifyError::BadSizes { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength(proof.len()));
        }
        if old_root != new_root {
            return Err(VerifyError::RootMismatch);
        }
        return Ok(());
    }
    if proof.is_empty() || proof.len() > MAX_PROOF_LEN {
        return Err(VerifyError::WrongLength(proof.len()));
    }
    // When the old tree is a perfect subtree, its root is the first node of the path.
    let old_is_perfect = old_size.is_power_of_two();
    let mut items = proof.iter();
    let first = if old_is_perfect {
        old_root
    } else {
        match items.next() {
            Some(h) => h,
            None => return Err(VerifyError::WrongLength(proof.len())),
        }
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in items {
        if snode == 0 {
            return Err(VerifyError::WrongLength(proof.len()));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::WrongLength(proof.len()));
    }
    if &fr != old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if &sr != new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// A node the [`MemoryTree`] does not hold (the subtree is not complete yet).
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("no complete subtree at level {level}, index {index}")]
pub struct MissingNode {
    /// Level asked for.
    pub level: u8,
    /// Index asked for.
    pub index: u64,
}

/// A whole Merkle tree in memory: every perfect subtree hash, level by level. For tests,
/// benchmarks and small users; a node's store keeps the same hashes on disk.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
    scratch: Vec<(u8, u64, Hash)>,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree holding these leaf hashes, in order.
    pub fn from_leaf_hashes<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let mut t = Self::new();
        for l in leaves {
            t.append(l);
        }
        t
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The right edge of the tree.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Appends a leaf hash (see [`leaf_hash`]); returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        let index = self.frontier.size();
        self.scratch.clear();
        self.frontier.push(leaf, &mut self.scratch);
        for &(level, _index, hash) in &self.scratch {
            let level = usize::from(level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            // Frontier::push completes subtrees in index order, so `_index` is the length.
            self.levels[level].push(hash);
        }
        index
    }
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;

    fn node(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(level))?.get(i))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure report

    use super::*;

    /// RFC 6962 MTH computed straight from the definition.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn roots_match_the_definition() {
        let all = leaves(70);
        let mut t = MemoryTree::new();
        assert_eq!(root(&t, 0).unwrap(), empty_root());
        for (i, l) in all.iter().enumerate() {
            t.append(*l);
            let want = reference_root(&all[..=i]);
            assert_eq!(t.root(), want);
            assert_eq!(root(&t, i as u64 + 1).unwrap(), want);
        }
        for size in 0..=70 {
            assert_eq!(root(&t, size).unwrap(), reference_root(&all[..size as usize]));
        }
    }

    #[test]
    fn every_small_proof_verifies() {
        let all = leaves(40);
        let t = MemoryTree::from_leaf_hashes(all.iter().copied());
        for size in 1..=40u64 {
            let r = root(&t, size).unwrap();
            for i in 0..size {
                let p = inclusion_proof(&t, i, size).unwrap();
                verify_inclusion(&all[i as usize], i, size, &p, &r).unwrap();
                assert!(verify_inclusion(&all[i as usize], i, size, &p, &empty_root()).is_err());
            }
            for old in 1..=size {
                let p = consistency_proof(&t, old, size).unwrap();
                let or = root(&t, old).unwrap();
                verify_consistency(old, size, &or, &r, &p).unwrap();
            }
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let t = MemoryTree::from_leaf_hashes(leaves(5));
        assert!(matches!(inclusion_proof(&t, 5, 5), Err(ProofError::IndexOutOfRange { .. })));
        assert!(matches!(consistency_proof(&t, 0, 5), Err(ProofError::BadSizes { .. })));
        assert!(matches!(consistency_proof(&t, 4, 3), Err(ProofError::BadSizes { .. })));
        assert!(matches!(root(&t, 6), Err(ProofError::Source(_))));
        assert!(matches!(inclusion_proof(&t, 0, 9), Err(ProofError::Source(_))));
    }
}
