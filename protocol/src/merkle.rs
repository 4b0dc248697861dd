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
