//! Equivocation proofs: two signed statements of one log that cannot both be true.
//!
//! A proof is self-contained: anyone holding the log's key (and key name) can check it
//! offline. Two kinds exist:
//!
//! - **conflicting checkpoints**: two checkpoints signed by the log with the same origin and
//!   size but different roots;
//! - **conflicting entries**: two different signed entries (stored bytes) of the log at one
//!   index, each with an inclusion proof to a checkpoint the log signed. The two trees then
//!   differ at that index, so the log has signed checkpoints that cannot both be honest.
//!
//! A failed or missing consistency proof is a fault to flag, but it is not an equivocation:
//! it proves nothing to a third party, so there is no variant for it.

use crate::bytes::Hash;
use crate::checkpoint::{SignatureError, SignedCheckpoint};
use crate::keys::PublicKey;
use crate::merkle::{self, leaf_hash};
use crate::record::{self, SignedEntry};
use serde::{Deserialize, Serialize};

/// Two signed statements of one log that contradict each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EquivocationProof {
    /// Same origin and size, different roots.
    ConflictingCheckpoints {
        /// One checkpoint.
        first: SignedCheckpoint,
        /// The other.
        second: SignedCheckpoint,
    },
    /// Two different entries at one index, each proven into a signed checkpoint.
    ConflictingEntries {
        /// One entry with its proof.
        first: IncludedEntry,
        /// The other.
        second: IncludedEntry,
    },
}

/// A signed entry, an inclusion proof and the signed checkpoint it leads to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedEntry {
    /// The entry's stored bytes (see [`SignedEntry::encode`]); hex in JSON.
    #[serde(with = "hex_bytes")]
    pub entry: Vec<u8>,
    /// Inclusion proof of the entry's leaf at its index in the checkpoint's tree.
    pub proof: Vec<Hash>,
    /// The checkpoint, signed by the log.
    pub checkpoint: SignedCheckpoint,
}

/// What a verified proof shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Two roots for one tree size.
    ConflictingCheckpoints,
    /// Two entries for one index.
    ConflictingEntries,
}

/// Which of the two statements a failure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first statement.
    First,
    /// The second statement.
    Second,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::First => "first",
            Side::Second => "second",
        })
    }
}

/// Why an equivocation proof does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EquivocationError {
    /// A checkpoint is not signed by the log key.
    #[error("{0} checkpoint: {1}")]
    Signature(Side, SignatureError),
    /// The two checkpoints name different logs.
    #[error("checkpoints have different origins")]
    OriginMismatch,
    /// The two checkpoints have different sizes (that is not a contradiction by itself).
    #[error("checkpoints have different sizes")]
    SizeMismatch,
    /// The two checkpoints agree.
    #[error("checkpoints have the same root")]
    SameRoot,
    /// An entry does not decode or is not validly signed by the log key.
    #[error("{0} entry: {1}")]
    Entry(Side, record::VerifyError),
    /// The entries are at different indexes.
    #[error("entries are at different indexes ({0} and {1})")]
    IndexMismatch(u64, u64),
    /// The two entries are the same bytes.
    #[error("entries are identical")]
    SameEntry,
    /// An inclusion proof does not lead to its checkpoint's root.
    #[error("{0} inclusion proof: {1}")]
    Inclusion(Side, merkle::VerifyError),
}

impl EquivocationProof {
    /// Checks everything against the log's key and key name, and says what the proof shows.
    pub fn verify(&self, log_key: &PublicKey, name: &str) -> Result<Kind, EquivocationError> {
        match self {
            EquivocationProof::ConflictingCheckpoints { first, second } => {
                first
                    .verify(log_key, name)
                    .map_err(|e| EquivocationError::Signature(Side::First, e))?;
                second
                    .verify(log_key, name)
                    .map_err(|e| EquivocationError::Signature(Side::Second, e))?;
                let (a, b) = (first.checkpoint(), second.checkpoint());
                if a.origin != b.origin {
                    return Err(EquivocationError::OriginMismatch);
                }
                if a.size != b.size {
                    return Err(EquivocationError::SizeMismatch);
                }
                if a.root == b.root {
                    return Err(EquivocationError::SameRoot);
                }
                Ok(Kind::ConflictingCheckpoints)
            }
            EquivocationProof::ConflictingEntries { first, second } => {
                let i = first.verify(log_key, name, Side::First)?;
                let j = second.verify(log_key, name, Side::Second)?;
                if i != j {
                    return Err(EquivocationError::IndexMismatch(i, j));
                }
                if first.entry == second.entry {
                    return Err(EquivocationError::SameEntry);
                }
                Ok(Kind::ConflictingEntries)
            }
        }
    }

    /// The proof for two checkpoints, if they conflict on their face (same origin and size,
    /// different roots). Signatures are not checked here; see [`EquivocationProof::verify`].
    pub fn from_checkpoints(a: &SignedCheckpoint, b: &SignedCheckpoint) -> Option<Self> {
        let (x, y) = (a.checkpoint(), b.checkpoint());
        (x.origin == y.origin && x.size == y.size && x.root != y.root).then(|| {
            EquivocationProof::ConflictingCheckpoints { first: a.clone(), second: b.clone() }
        })
    }
}

impl IncludedEntry {
    /// Checks the entry's signature, its log, and its inclusion in the signed checkpoint;
    /// returns its index.
    fn verify(&self, key: &PublicKey, name: &str, side: Side) -> Result<u64, EquivocationError> {
        self.checkpoint.verify(key, name).map_err(|e| EquivocationError::Signature(side, e))?;
        let decoded = SignedEntry::decode(&self.entry)
            .map_err(|e| EquivocationError::Entry(side, e.into()))?;
        if decoded.entry.log != *key {
            let e = record::VerifyError::WrongLog { expected: *key, found: decoded.entry.log };
            return Err(EquivocationError::Entry(side, e));
        }
        decoded.verify().map_err(|e| EquivocationError::Entry(side, e))?;
        let index = decoded.entry.index;
        let cp = self.checkpoint.checkpoint();
        merkle::verify_inclusion(&leaf_hash(&self.entry), index, cp.size, &self.proof, &cp.root)
            .map_err(|e| EquivocationError::Inclusion(side, e))?;
        Ok(index)
    }
}

/// Byte strings as lower-case hex in human-readable formats.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 2 * crate::record::MAX_ENTRY_BYTES {
            return Err(serde::de::Error::custom("entry is over the size limit"));
        }
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
