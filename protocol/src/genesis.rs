//! The genesis document: a ring's founding members (the backbone) and its decision rules.
//! Its hash is the ring id, which every node of the ring starts from.

use crate::bytes::{sha256, Hash};
use crate::record::{to_canonical, MemberInfo};
use serde::{Deserialize, Serialize};

/// Current genesis format version.
pub const GENESIS_VERSION: u32 = 1;

/// The founding document of a ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Format version ([`GENESIS_VERSION`]).
    pub version: u32,
    /// Human-readable ring name, e.g. `demo-ring`.
    pub ring: String,
    /// The backbone members.
    pub members: Vec<MemberInfo>,
    /// Signatures of backbone members needed for a decision about a backbone member.
    pub backbone_quorum: u32,
    /// Cosignatures by other members that make a checkpoint *witnessed*.
    pub witness_k: u32,
}

/// Why a genesis document is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    /// The JSON does not parse.
    #[error("genesis does not parse: {0}")]
    Parse(String),
    /// Unknown version.
    #[error("unknown genesis version {0}")]
    Version(u32),
    /// A rule is broken (no members, duplicate names or keys, a quorum that cannot be met).
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

impl Genesis {
    /// The ring id: SHA-256 over a prefix and the canonical encoding of the document.
    pub fn ring_id(&self) -> Hash {
        sha256(&[b"ringlog/genesis/v1\n", &to_canonical(self)])
    }

    /// Short form of the ring id used in checkpoint origins and topic names (16 hex digits).
    pub fn ring_tag(&self) -> String {
        self.ring_id().to_hex()[..16].to_string()
    }

    /// The checkpoint origin line of `member`'s log in this ring.
    pub fn origin(&self, member: &str) -> String {
        format!("ringlog.{}/{}", self.ring_tag(), member)
    }

    /// Parses and checks a genesis document from JSON.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        let g: Genesis =
            serde_json::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))?;
        g.check()?;
        Ok(g)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data to a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the rules of a genesis document.
    pub fn check(&self) -> Result<(), GenesisError> {
        if self.version != GENESIS_VERSION {
            return Err(GenesisError::Version(self.version));
        }
        if self.members.is_empty() {
            return Err(GenesisError::Invalid("no members".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for m in &self.members {
            crate::record::Body::Admit(crate::record::Admission { member: m.clone() })
                .validate()
                .map_err(|e| GenesisError::Invalid(format!("member {}: {e}", m.name)))?;
            if !names.insert(m.name.clone()) {
                return Err(GenesisError::Invalid(format!("duplicate member {}", m.name)));
            }
            if !keys.insert(m.log_key) || !keys.insert(m.node_key) {
                return Err(GenesisError::Invalid(format!("member {} reuses a key", m.name)));
            }
        }
        let n = self.members.len() as u32;
        if self.backbone_quorum == 0 || self.backbone_quorum > n {
            return Err(GenesisError::Invalid(format!(
                "backbone quorum {} not in 1..={n}",
                self.backbone_quorum
            )));
        }
        if self.witness_k > n - 1 {
            return Err(GenesisError::Invalid(format!(
                "witness k {} needs more than {} other members",
                self.witness_k,
                n - 1
            )));
        }
        Ok(())
    }
}
