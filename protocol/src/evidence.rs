//! Evidence bundles: the hop records of one message with their inclusion proofs, signed
//! checkpoints and the admissions that prove each writer's log key back to genesis, and their
//! offline verification (docs/evidence.md).
//!
//! A bundle is JSON; its canonical bytes are the compact serde_json encoding of [`Bundle`]
//! (fields in declaration order, no whitespace). [`verify_bytes`] accepts only those bytes
//! (one trailing newline allowed), so every byte of a bundle file matters and the bundle hash
//! ([`Bundle::hash`], SHA-256 of the canonical bytes) names exactly one bundle: it is what
//! expulsions cite.

use crate::bytes::{sha256, Hash};
use crate::equivocation::IncludedEntry;
use crate::genesis::Genesis;
use crate::keys::{LogId, PublicKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use crate::merkle::{self, leaf_hash};
use crate::record::{Body, SignedEntry};
use crate::trace::{self, MatchKind, Trace};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Current bundle format version.
pub const BUNDLE_VERSION: u32 = 1;
/// Most records (hop records plus admissions) a bundle may hold.
pub const MAX_BUNDLE_ENTRIES: usize = 1024;
/// Largest bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;

/// What the investigator asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The fingerprint asked about (an mfp1, or an mfp1-lite when `matched_by` says so).
    pub fingerprint: Hash,
    /// How the records were joined.
    pub matched_by: MatchKind,
}

/// An evidence bundle (format version [`BUNDLE_VERSION`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version.
    pub version: u32,
    /// The ring id (genesis hash).
    pub ring_id: Hash,
    /// What was asked.
    pub query: Query,
    /// The hop records, each with its inclusion proof into a checkpoint signed by its log.
    pub records: Vec<IncludedEntry>,
    /// Admission entries proving the log keys of members not in the genesis, each with its
    /// inclusion proof into a checkpoint signed by the sponsor's log.
    pub admissions: Vec<IncludedEntry>,
}

/// How one checkpoint of the bundle is witnessed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// The log's member.
    pub member: String,
    /// Checkpoint size.
    pub size: u64,
    /// Valid cosignatures by other members.
    pub cosignatures: usize,
    /// At least `witness_k` of them.
    pub witnessed: bool,
}

/// What a verified bundle shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// SHA-256 of the canonical bundle bytes.
    pub bundle_hash: Hash,
    /// The ring.
    pub ring_id: Hash,
    /// Cosignatures needed for a checkpoint to count as witnessed.
    pub witness_k: u32,
    /// Every checkpoint of the bundle is witnessed. When false, the members could still deny
    /// the checkpoints their records are proven into: the evidence is "not witnessed".
    pub witnessed: bool,
    /// Each distinct checkpoint (by member and size).
    pub checkpoints: Vec<CheckpointStatus>,
    /// Members whose log key was proven, by name: `genesis` or the sponsor that admitted it.
    pub proven_members: BTreeMap<String, String>,
    /// The trace recomputed from the bundle's records.
    pub trace: Trace,
}

/// Why a bundle does not verify. Each variant names the first failed check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("bundle of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not JSON of the bundle shape.
    #[error("bundle does not parse: {0}")]
    Parse(String),
    /// Parses, but is not in its canonical byte form.
    #[error("bundle is not in canonical form (re-encode it with the canonical encoder)")]
    NonCanonical,
    /// Unknown format version.
    #[error("unknown bundle version {0}")]
    Version(u32),
    /// Made for another ring.
    #[error("bundle is for ring {found}, the genesis is ring {expected}")]
    WrongRing {
        /// The genesis ring id.
        expected: Hash,
        /// The bundle's.
        found: Hash,
    },
    /// Too many entries.
    #[error("bundle has more than {MAX_BUNDLE_ENTRIES} entries")]
    TooManyEntries,
    /// No hop records at all.
    #[error("bundle holds no hop records")]
    Empty,
    /// An entry does not decode.
    #[error("{what} {n}: entry does not decode: {err}")]
    Decode {
        /// `record` or `admission`.
        what: &'static str,
        /// Position in its list.
        n: usize,
        /// Why.
        err: String,
    },
    /// An entry's log is not a member's whose key the bundle proves.
    #[error("{what} {n}: log {log} is not proven to belong to a member")]
    UnprovenLog {
        /// `record` or `admission`.
        what: &'static str,
        /// Position in its list.
        n: usize,
        /// The log.
        log: LogId,
    },
    /// The entry's signature does not verify under its log key.
    #[error("{what} {n} ({member} #{index}): bad entry signature")]
    EntrySignature {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
        /// Writer.
        member: String,
        /// Index in its log.
        index: u64,
    },
    /// The checkpoint is not the writer's, or its signature does not verify.
    #[error("{what} {n} ({member} #{index}): checkpoint: {err}")]
    Checkpoint {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
        /// Writer.
        member: String,
        /// Index in its log.
        index: u64,
        /// Why.
        err: String,
    },
    /// A checkpoint carries a signature line that claims a proven member's key but is
    /// neither the log's signature nor a valid cosignature of another member.
    #[error("{what} {n} ({member} #{index}): signature line of {key} does not verify")]
    UnverifiedLine {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
        /// Writer.
        member: String,
        /// Index in its log.
        index: u64,
        /// The line's key name.
        key: String,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("{what} {n} ({member} #{index}): inclusion proof: {err}")]
    Inclusion {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
        /// Writer.
        member: String,
        /// Index in its log.
        index: u64,
        /// Why.
        err: merkle::VerifyError,
    },
    /// A record is not a hop record, or an admission not an admission.
    #[error("{what} {n}: wrong kind of entry")]
    WrongKind {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
    },
    /// The same entry position appears twice.
    #[error("{what} {n}: duplicate of an earlier entry")]
    Duplicate {
        /// `record` or `admission`.
        what: &'static str,
        /// Position.
        n: usize,
    },
    /// An admission names a member or key already bound otherwise.
    #[error("admission {n}: {why}")]
    Conflict {
        /// Position.
        n: usize,
        /// What conflicts.
        why: String,
    },
    /// No record matches the queried fingerprint.
    #[error("no record carries the queried fingerprint {0}")]
    QueryNotFound(Hash),
}

impl Bundle {
    /// The canonical bytes: compact JSON.
    pub fn to_canonical(&self) -> Vec<u8> {
        // Serialising plain data (strings, numbers, hex) to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes.
    pub fn hash(&self) -> Hash {
        sha256(&[&self.to_canonical()])
    }

    /// Parses canonical bundle bytes (one trailing newline allowed), refusing any other form.
    pub fn from_canonical(bytes: &[u8]) -> Result<Bundle, EvidenceError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(EvidenceError::TooLarge(bytes.len()));
        }
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let b: Bundle =
            serde_json::from_slice(body).map_err(|e| EvidenceError::Parse(e.to_string()))?;
        if b.to_canonical() != body {
            return Err(EvidenceError::NonCanonical);
        }
        Ok(b)
    }
}

/// The key names a witness may cosign under: its member name and its log's origin line.
fn witness_names(g: &Genesis, name: &str) -> [String; 2] {
    [name.to_string(), g.origin(name)]
}

struct Proven {
    by_key: BTreeMap<LogId, String>,
    by_name: BTreeMap<String, LogId>,
    sponsor: BTreeMap<String, String>,
}

struct Checked {
    entry: SignedEntry,
    member: String,
    status: CheckpointStatus,
}

/// Checks one included entry: decodes, log proven, signature, checkpoint signed by that log
/// under its origin, every other signature line a valid cosignature, inclusion proof.
fn check_included(
    g: &Genesis,
    proven: &Proven,
    witness_k: u32,
    strict: bool,
    what: &'static str,
    n: usize,
    inc: &IncludedEntry,
) -> Result<Checked, EvidenceError> {
    let e = SignedEntry::decode(&inc.entry).map_err(|err| EvidenceError::Decode {
        what,
        n,
        err: err.to_string(),
    })?;
    let log = e.entry.log;
    let index = e.entry.index;
    let member =
        proven.by_key.get(&log).cloned().ok_or(EvidenceError::UnprovenLog { what, n, log })?;
    e.verify().map_err(|_| EvidenceError::EntrySignature {
        what,
        n,
        member: member.clone(),
        index,
    })?;
    let origin = g.origin(&member);
    let cp = inc.checkpoint.checkpoint();
    let cp_err =
        |err: String| EvidenceError::Checkpoint { what, n, member: member.clone(), index, err };
    if cp.origin != origin {
        return Err(cp_err(format!("origin {:?} is not {origin:?}", cp.origin)));
    }
    inc.checkpoint.verify(&log, &origin).map_err(|err| cp_err(err.to_string()))?;
    // Every other line must be a valid cosignature of another proven member.
    let own_id = log.key_id(&origin, ALG_ED25519);
    let mut witnesses: Vec<(String, PublicKey)> = Vec::new();
    for line in inc.checkpoint.signatures() {
        if line.name == origin && line.key_id == own_id {
            continue;
        }
        let found =
            proven.by_name.iter().filter(|(name, _)| **name != member).find_map(|(name, key)| {
                witness_names(g, name)
                    .into_iter()
                    .find(|wn| {
                        *wn == line.name
                            && key.key_id(wn, ALG_COSIGNATURE_V1) == line.key_id
                            && matches!(inc.checkpoint.cosignature(key, wn), Some(Ok(_)))
                    })
                    .map(|wn| (wn, *key))
            });
        // A line of a key the bundle does not prove (say, a witness admitted later, whose
        // admission the bundle has no reason to carry) is ignored and not counted, as
        // signed-note asks of unknown keys; a line claiming a proven member's key must verify.
        let claims_proven = proven.by_name.iter().any(|(name, key)| {
            witness_names(g, name)
                .iter()
                .any(|wn| *wn == line.name && key.key_id(wn, ALG_COSIGNATURE_V1) == line.key_id)
        });
        // While members are still being proven (admissions in any order), a line of a key
        // not proven yet is passed over; the final, strict pass over every checkpoint, once
        // all admissions are in, requires every line to verify, so no byte of a bundle is
        // without effect.
        match found {
            Some(w) => witnesses.push(w),
            None if !claims_proven && !strict => {}
            None => {
                return Err(EvidenceError::UnverifiedLine {
                    what,
                    n,
                    member: member.clone(),
                    index,
                    key: line.name.clone(),
                })
            }
        }
    }
    let cosignatures = inc.checkpoint.count_cosignatures(&witnesses);
    merkle::verify_inclusion(&leaf_hash(&inc.entry), index, cp.size, &inc.proof, &cp.root)
        .map_err(|err| EvidenceError::Inclusion { what, n, member: member.clone(), index, err })?;
    Ok(Checked {
        entry: e,
        member: member.clone(),
        status: CheckpointStatus {
            member,
            size: cp.size,
            cosignatures,
            witnessed: cosignatures >= witness_k as usize,
        },
    })
}

/// Proves the log keys of admitted members: repeatedly accepts admissions written by an
/// already proven log, until none is left or none can be accepted.
fn prove_members(
    g: &Genesis,
    witness_k: u32,
    admissions: &[IncludedEntry],
    statuses: &mut Vec<CheckpointStatus>,
) -> Result<Proven, EvidenceError> {
    let mut proven =
        Proven { by_key: BTreeMap::new(), by_name: BTreeMap::new(), sponsor: BTreeMap::new() };
    for m in &g.members {
        proven.by_key.insert(m.log_key, m.name.clone());
        proven.by_name.insert(m.name.clone(), m.log_key);
        proven.sponsor.insert(m.name.clone(), "genesis".into());
    }
    let mut positions = BTreeSet::new();
    let mut pending: Vec<usize> = (0..admissions.len()).collect();
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        for n in pending {
            let inc = &admissions[n];
            let c = match check_included(g, &proven, witness_k, false, "admission", n, inc) {
                Ok(c) => c,
                Err(EvidenceError::UnprovenLog { .. }) => {
                    waiting.push(n);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !positions.insert((c.entry.entry.log, c.entry.entry.index)) {
                return Err(EvidenceError::Duplicate { what: "admission", n });
            }
            let Body::Admit(a) = &c.entry.entry.body else {
                return Err(EvidenceError::WrongKind { what: "admission", n });
            };
            let m = &a.member;
            if let Some(holder) = proven.by_key.get(&m.log_key) {
                return Err(EvidenceError::Conflict {
                    n,
                    why: format!("log key of {} is already {holder}'s", m.name),
                });
            }
            if proven.by_name.contains_key(&m.name) {
                return Err(EvidenceError::Conflict {
                    n,
                    why: format!("member {} is already bound to another key", m.name),
                });
            }
            proven.by_key.insert(m.log_key, m.name.clone());
            proven.by_name.insert(m.name.clone(), m.log_key);
            proven.sponsor.insert(m.name.clone(), c.member.clone());
            statuses.push(c.status);
            progress = true;
        }
        if waiting.is_empty() {
            return Ok(proven);
        }
        if !progress {
            let n = waiting[0];
            // Re-run the check to report the unproven log of the first stuck admission.
            return match check_included(
                g,
                &proven,
                witness_k,
                false,
                "admission",
                n,
                &admissions[n],
            ) {
                Err(e) => Err(e),
                Ok(_) => Err(EvidenceError::Conflict { n, why: "could not be ordered".into() }),
            };
        }
        pending = waiting;
    }
}

/// Verifies canonical bundle bytes offline against `genesis`; see [`verify`].
pub fn verify_bytes(
    bytes: &[u8],
    genesis: &Genesis,
    witness_k: u32,
) -> Result<Verdict, EvidenceError> {
    let b = Bundle::from_canonical(bytes)?;
    verify(&b, genesis, witness_k)
}

/// Verifies a bundle offline with only the genesis: ring id, every entry's decoding and
/// signature under the log key proven for its member (genesis, or a chain of admissions back to
/// it), every inclusion proof into a checkpoint signed by that log, every other signature line
/// a valid cosignature of another member (counted: witnessed iff at least `witness_k`); then
/// recomputes the trace from the records. An unwitnessed checkpoint is not an error: the
/// verdict says so ([`Verdict::witnessed`]) and the caller decides.
pub fn verify(b: &Bundle, genesis: &Genesis, witness_k: u32) -> Result<Verdict, EvidenceError> {
    if b.version != BUNDLE_VERSION {
        return Err(EvidenceError::Version(b.version));
    }
    let ring = genesis.ring_id();
    if b.ring_id != ring {
        return Err(EvidenceError::WrongRing { expected: ring, found: b.ring_id });
    }
    if b.records.len().saturating_add(b.admissions.len()) > MAX_BUNDLE_ENTRIES {
        return Err(EvidenceError::TooManyEntries);
    }
    if b.records.is_empty() {
        return Err(EvidenceError::Empty);
    }
    let mut statuses = Vec::new();
    let proven = prove_members(genesis, witness_k, &b.admissions, &mut statuses)?;
    for (n, inc) in b.admissions.iter().enumerate() {
        check_included(genesis, &proven, witness_k, true, "admission", n, inc)?;
    }
    let mut positions = BTreeSet::new();
    let mut entries = Vec::with_capacity(b.records.len());
    for (n, inc) in b.records.iter().enumerate() {
        let c = check_included(genesis, &proven, witness_k, true, "record", n, inc)?;
        if c.entry.hop().is_none() {
            return Err(EvidenceError::WrongKind { what: "record", n });
        }
        if !positions.insert((c.entry.entry.log, c.entry.entry.index)) {
            return Err(EvidenceError::Duplicate { what: "record", n });
        }
        statuses.push(c.status);
        entries.push(c.entry);
    }
    let q = &b.query;
    let hit = entries.iter().filter_map(SignedEntry::hop).any(|h| match q.matched_by {
        MatchKind::Mfp1 => h.mfp1 == q.fingerprint,
        MatchKind::Mfp1Lite => h.mfp1_lite == q.fingerprint,
    });
    if !hit {
        return Err(EvidenceError::QueryNotFound(q.fingerprint));
    }
    statuses.sort_by(|a, b| (&a.member, a.size).cmp(&(&b.member, b.size)));
    // Same member and size means the same checkpoint (a log signs one root per size, or it
    // equivocated); keep the best-witnessed copy.
    statuses.dedup_by(|later, kept| {
        if later.member == kept.member && later.size == kept.size {
            kept.cosignatures = kept.cosignatures.max(later.cosignatures);
            kept.witnessed |= later.witnessed;
            true
        } else {
            false
        }
    });
    let names = proven.by_key.clone();
    let t = trace::trace(&q.fingerprint, q.matched_by, &entries, &names);
    Ok(Verdict {
        bundle_hash: b.hash(),
        ring_id: ring,
        witness_k,
        witnessed: statuses.iter().all(|s| s.witnessed),
        checkpoints: statuses,
        proven_members: proven.sponsor,
        trace: t,
    })
}
