//! RFC 6962 / RFC 9162 Merkle trees: leaf and node hashing, incremental append, and
//! inclusion and consistency proofs served from any [`NodeSource`].
//!
//! (Interface fixed; the implementation is being filled in.)

use crate::bytes::{sha256, Hash};

/// Leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0u8], data])
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], &left.0, &right.0])
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
            None => sha256(&[]),
            Some(last) => iter.fold(*last, |acc, peak| node_hash(peak, &acc)),
        }
    }
}
