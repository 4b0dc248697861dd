//! Witnessing and equivocation handling in every node: cosigns other members' checkpoints
//! (C2SP tlog-cosignature) once they are checked and consistent with the last one cosigned,
//! merges the cosignatures it receives into the stored notes, turns two signed views of one
//! log that cannot both be true into a self-contained [`EquivocationProof`], gossips it, and
//! excludes the equivocating member (its log is no longer followed, its node refused).
//!
//! # Invariants
//! - A cosignature is made only after the (size, root) it covers is durably recorded as the
//!   last one cosigned for that log (meta key `witness/last/<log hex>`), and only for a
//!   checkpoint that extends the previous one (consistency proof from the store).
//! - A stored note holds only the owner's signature lines and valid cosignatures of roster
//!   members other than the owner, each under its member name: anything else is dropped when
//!   notes are merged.
//! - Only verified proofs are stored or gossiped. A failed or missing consistency proof is a
//!   fault (logged, counted in `ringlog_witness_faults_total`), never a proof.
//!
//! Everything here runs on the replicator's core thread (one caller at a time).

use crate::net::{self, NetHandle, PeerId};
use crate::node::Shared;
use crate::store::{LogNodes, Store};
use ringlog_protocol::checkpoint::{Checkpoint, Cosignature, SignedCheckpoint};
use ringlog_protocol::equivocation::EquivocationProof;
use ringlog_protocol::keys::ALG_ED25519;
use ringlog_protocol::merkle;
use ringlog_protocol::replication::{Conflict, ConflictKind, Gossip};
use ringlog_protocol::{Hash, LogId, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// First byte of a witness message on the checkpoints topic (replication tags are 1..=7).
pub const TAG_EQUIVOCATION: u8 = 0x45;
/// Meta key of the stored equivocation proofs (a JSON list).
pub const PROOFS_KEY: &str = "witness/equivocations";
/// Proofs kept (one per log is enough to exclude it).
pub const MAX_PROOFS: usize = 256;
/// Signed notes of other sizes remembered per log, to meet later ones.
const SEEN_PER_LOG: usize = 16;
/// A file in the data directory that makes the node gossip a forged second checkpoint for
/// every checkpoint it signs (fault injection for tests; never create it in production).
pub const DANGER_EQUIVOCATE_FILE: &str = "danger-equivocate";

/// A proof as stored and served by `GET /v1/equivocations`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredProof {
    /// The equivocating member.
    pub member: String,
    /// Its log.
    pub log: LogId,
    /// When this node verified it (ms since the epoch).
    pub at_ms: u64,
    /// The proof.
    pub proof: EquivocationProof,
}

/// Last (size, root) cosigned for a log.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Last {
    size: u64,
    root: Hash,
}

/// What the core must do after a witness step.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The verdict on the gossip message, if the witness handled it.
    pub verdict: Option<net::Verdict>,
    /// A member newly proven to equivocate: exclude it.
    pub equivocator: Option<LogId>,
}

/// Counters for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Checkpoints this node cosigned.
    pub cosigned: u64,
    /// Valid cosignatures of others merged into stored notes.
    pub merged: u64,
    /// Consistency faults (not proofs).
    pub faults: u64,
    /// Equivocation proofs verified and stored.
    pub proofs: u64,
}

/// The witness of one node.
pub struct Witness {
    shared: Arc<Shared>,
    net: NetHandle,
    rt: tokio::runtime::Handle,
    cp_topic: String,
    seen: BTreeMap<LogId, BTreeMap<u64, String>>,
    equivocators: BTreeSet<LogId>,
    /// Counters.
    pub stats: Stats,
}

/// The stored proofs of a store (empty if none or unreadable).
pub fn stored_proofs(store: &dyn Store) -> Vec<StoredProof> {
    store
        .meta(PROOFS_KEY)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

/// Logs with a stored equivocation proof.
pub fn equivocators(store: &dyn Store) -> BTreeSet<LogId> {
    stored_proofs(store).into_iter().map(|p| p.log).collect()
}

/// `members` without those proven to equivocate (read from the store).
pub fn without_equivocators(
    store: &dyn Store,
    members: Vec<ringlog_protocol::record::MemberInfo>,
) -> Vec<ringlog_protocol::record::MemberInfo> {
    let bad = equivocators(store);
    members.into_iter().filter(|m| !bad.contains(&m.log_key)).collect()
}

/// Witness keys of a roster: (member name, log key) of every member but `owner`.
pub fn witness_keys(
    roster: &ringlog_protocol::roster::Roster,
    owner: &LogId,
) -> Vec<(String, PublicKey)> {
    roster
        .members()
        .filter(|m| m.info.log_key != *owner)
        .map(|m| (m.info.name.clone(), m.info.log_key))
        .collect()
}

/// Keeps the owner's signature lines and the valid cosignatures of `witnesses` from `notes`
/// (all of one checkpoint, the first one's signature already checked); drops anything else.
/// Returns the merged note and how many cosignatures it holds.
pub fn merge_notes(
    owner: &LogId,
    notes: &[&SignedCheckpoint],
    witnesses: &[(String, PublicKey)],
) -> Option<(SignedCheckpoint, usize)> {
    let first = notes.first()?;
    let c = first.checkpoint();
    let own_id = owner.key_id(&c.origin, ALG_ED25519);
    let own_line = first.signatures().iter().find(|s| s.name == c.origin && s.key_id == own_id)?;
    let mut out = SignedCheckpoint::parse(&{
        let mut t = c.body();
        t.push('\n');
        t.push_str(&own_line.to_line());
        t
    })
    .ok()?;
    let mut n = 0;
    for (name, key) in witnesses {
        for note in notes.iter().filter(|x| x.checkpoint() == c) {
            if let Some(Ok(cos)) = note.cosignature(key, name) {
                if out.add_cosignature(&cos).is_ok() {
                    n += 1;
                }
                break;
            }
        }
    }
    Some((out, n))
}

fn now_secs() -> u64 {
    crate::node::now_ms() / 1000
}

impl Witness {
    /// A witness publishing on `cp_topic`. Starts the fault injection task if the data
    /// directory holds [`DANGER_EQUIVOCATE_FILE`].
    pub fn new(
        shared: Arc<Shared>,
        net: NetHandle,
        rt: tokio::runtime::Handle,
        cp_topic: String,
    ) -> Witness {
        let equivocators = equivocators(&*shared.store);
        if shared.cfg.data_dir.join(DANGER_EQUIVOCATE_FILE).exists() {
            tracing::error!(
                "DANGER: this node will gossip a forged second checkpoint for each one it signs"
            );
            rt.spawn(danger_equivocate(shared.clone(), net.clone(), cp_topic.clone()));
        }
        Witness {
            shared,
            net,
            rt,
            cp_topic,
            seen: BTreeMap::new(),
            equivocators,
            stats: Stats::default(),
        }
    }

    /// Whether a gossip message is the witness's (not a replication message).
    pub fn is_witness_message(data: &[u8]) -> bool {
        data.first() == Some(&TAG_EQUIVOCATION)
    }

    fn origin_owner(&self, origin: &str) -> Option<(String, LogId)> {
        let roster = self.shared.roster.roster();
        let m = roster.members().find(|m| self.shared.genesis.origin(&m.info.name) == origin)?;
        Some((m.info.name.clone(), m.info.log_key))
    }

    /// Handles a witness message (an equivocation proof) received by gossip.
    pub fn on_message(&mut self, from: PeerId, data: &[u8]) -> Outcome {
        let proof: Result<EquivocationProof, _> = serde_json::from_slice(&data[1..]);
        let Ok(proof) = proof else {
            self.rt.block_on(self.net.penalise(from, "undecodable equivocation proof"));
            return Outcome { verdict: Some(net::Verdict::Reject), equivocator: None };
        };
        match self.accept_proof(proof) {
            Ok(Some(log)) => {
                Outcome { verdict: Some(net::Verdict::Accept), equivocator: Some(log) }
            }
            Ok(None) => Outcome { verdict: Some(net::Verdict::Ignore), equivocator: None },
            Err(why) => {
                tracing::warn!(%from, reason = %why, "invalid equivocation proof; penalising the sender");
                self.rt.block_on(self.net.penalise(from, &why));
                Outcome { verdict: Some(net::Verdict::Reject), equivocator: None }
            }
        }
    }

    /// Verifies a proof; if it is new, stores it and gossips it. Returns the
    /// log newly proven to equivocate.
    fn accept_proof(&mut self, proof: EquivocationProof) -> Result<Option<LogId>, String> {
        let origin = match &proof {
            EquivocationProof::ConflictingCheckpoints { first, .. } => {
                first.checkpoint().origin.clone()
            }
            EquivocationProof::ConflictingEntries { first, .. } => {
                first.checkpoint.checkpoint().origin.clone()
            }
        };
        // An origin we do not know may be a member the sender has seen admitted before us:
        // dropped, not held against the sender (as gossip of a log we do not follow).
        let Some((member, log)) = self.origin_owner(&origin) else {
            tracing::debug!(origin = %origin, "equivocation proof about no member we know; ignored");
            return Ok(None);
        };
        proof.verify(&log, &origin).map_err(|e| format!("equivocation proof: {e}"))?;
        if self.equivocators.contains(&log) {
            return Ok(None);
        }
        let store = &*self.shared.store;
        let mut all = stored_proofs(store);
        if all.len() < MAX_PROOFS {
            all.push(StoredProof {
                member: member.clone(),
                log,
                at_ms: crate::node::now_ms(),
                proof: proof.clone(),
            });
            let bytes = serde_json::to_vec(&all).map_err(|e| e.to_string())?;
            if let Err(e) = store.put_meta(PROOFS_KEY, &bytes).and_then(|()| store.flush()) {
                tracing::error!(error = %e, "equivocation proof not stored");
            }
        }
        self.equivocators.insert(log);
        self.stats.proofs += 1;
        tracing::error!(%member, "EQUIVOCATION: verified proof that this member signed two histories; excluding it");
        {
            // Gossip it whether we built it or received it: peers learn it from us too.
            let mut data = vec![TAG_EQUIVOCATION];
            data.extend(serde_json::to_vec(&proof).map_err(|e| e.to_string())?);
            let (net, topic) = (self.net.clone(), self.cp_topic.clone());
            self.rt.spawn(async move {
                if let Err(e) = net.publish(&topic, data).await {
                    tracing::debug!(error = %e, "equivocation proof not published");
                }
            });
        }
        Ok(Some(log))
    }

    /// Is `log` excluded for equivocation?
    pub fn is_equivocator(&self, log: &LogId) -> bool {
        self.equivocators.contains(log)
    }

    /// A checkpoint note seen on the checkpoints topic (after replication handled it): meets
    /// it with the stored note of its size and recent notes (equivocation), and merges its
    /// cosignatures into the stored note when the roots agree.
    pub fn observe(&mut self, log: &LogId, note: &str) -> Outcome {
        let mut out = Outcome::default();
        let Ok(cp) = SignedCheckpoint::parse(note) else { return out };
        let c = cp.checkpoint().clone();
        let Some((_, owner)) = self.origin_owner(&c.origin) else { return out };
        if owner != *log || cp.verify(log, &c.origin).is_err() || c.size == 0 {
            return out;
        }
        if self.equivocators.contains(log) {
            return out;
        }
        let store = &*self.shared.store;
        let stored = store.checkpoint(log, c.size).ok().flatten();
        let mut other = stored.clone();
        if other
            .as_ref()
            .and_then(|n| SignedCheckpoint::parse(n).ok())
            .is_none_or(|s| s.checkpoint().root == c.root)
        {
            other = self.seen.get(log).and_then(|m| m.get(&c.size)).cloned();
        }
        if let Some(o) = other.and_then(|n| SignedCheckpoint::parse(&n).ok()) {
            if let Some(proof) = EquivocationProof::from_checkpoints(&o, &cp) {
                match self.accept_proof(proof) {
                    Ok(l) => out.equivocator = l,
                    Err(e) => {
                        tracing::warn!(error = %e, "conflicting checkpoints do not make a proof")
                    }
                }
                return out;
            }
        }
        match stored.and_then(|n| SignedCheckpoint::parse(&n).ok()) {
            Some(s) if s.checkpoint().root == c.root => self.merge_into_store(log, &s, &cp),
            _ => {
                let m = self.seen.entry(*log).or_default();
                m.insert(c.size, note.to_string());
                while m.len() > SEEN_PER_LOG {
                    m.pop_first();
                }
            }
        }
        out
    }

    fn merge_into_store(&mut self, log: &LogId, stored: &SignedCheckpoint, new: &SignedCheckpoint) {
        let roster = self.shared.roster.roster();
        let witnesses = witness_keys(&roster, log);
        let before = stored.count_cosignatures(&witnesses);
        let Some((merged, n)) = merge_notes(log, &[stored, new], &witnesses) else { return };
        if n > before || merged.signatures().len() != stored.signatures().len() {
            let size = merged.checkpoint().size;
            if let Err(e) = self.shared.store.put_checkpoint(log, size, &merged.to_text()) {
                tracing::warn!(error = %e, "merged cosignatures not kept");
            } else {
                self.stats.merged += n.saturating_sub(before) as u64;
            }
        }
    }

    /// Keeps a checkpoint that replication checked against the entries (instead of a plain
    /// `put_checkpoint`): merges it with what is stored, then cosigns it and gossips the note.
    pub fn store_checked(&mut self, log: &LogId, size: u64, note: &str) {
        let shared = self.shared.clone();
        let store = &*shared.store;
        let Ok(new) = SignedCheckpoint::parse(note) else { return };
        let roster = self.shared.roster.roster();
        let witnesses = witness_keys(&roster, log);
        let stored = store
            .checkpoint(log, size)
            .ok()
            .flatten()
            .and_then(|n| SignedCheckpoint::parse(&n).ok());
        let notes: Vec<&SignedCheckpoint> = match &stored {
            Some(s) if s.checkpoint() == new.checkpoint() => vec![&new, s],
            _ => vec![&new],
        };
        let Some((mut merged, _)) = merge_notes(log, &notes, &witnesses) else { return };
        if let Err(e) = store.put_checkpoint(log, size, &merged.to_text()) {
            tracing::warn!(log = %self.shared.name_of(log), size, error = %e, "checkpoint not kept");
            return;
        }
        if *log == self.shared.writer.log || self.equivocators.contains(log) {
            return;
        }
        if !roster.by_log_key(&self.shared.identity.log_id()).is_some_and(|m| m.is_active()) {
            return;
        }
        match self.cosign(log, &mut merged) {
            Ok(true) => {
                if let Err(e) = store.put_checkpoint(log, size, &merged.to_text()) {
                    tracing::warn!(error = %e, "cosigned checkpoint not kept");
                }
                self.stats.cosigned += 1;
                let data = Gossip::Checkpoint { log: *log, note: merged.to_text() }.encode();
                let (net, topic) = (self.net.clone(), self.cp_topic.clone());
                self.rt.spawn(async move {
                    match net.publish(&topic, data).await {
                        Ok(()) | Err(net::NetError::NoPeers) => {}
                        Err(e) => tracing::debug!(error = %e, "cosignature not published"),
                    }
                });
            }
            Ok(false) => {}
            Err(why) => {
                self.stats.faults += 1;
                tracing::error!(log = %self.shared.name_of(log), size, reason = %why, "witness fault: not cosigning");
            }
        }
    }

    /// Checks `cp` against the last cosigned checkpoint of `log`, records it, cosigns it.
    /// `Ok(false)`: nothing to do (older or already cosigned).
    fn cosign(&self, log: &LogId, cp: &mut SignedCheckpoint) -> Result<bool, String> {
        let store = &*self.shared.store;
        let key = format!("witness/last/{}", log.to_hex());
        let last: Option<Last> = store
            .meta(&key)
            .map_err(|e| e.to_string())?
            .map(|v| serde_json::from_slice(&v))
            .transpose()
            .map_err(|e| format!("stored last cosigned checkpoint: {e}"))?;
        let c = cp.checkpoint().clone();
        if let Some(last) = last {
            if c.size < last.size {
                return Ok(false);
            }
            if c.size == last.size {
                if c.root == last.root {
                    return Ok(false);
                }
                return Err(format!("root at size {} differs from the one cosigned", c.size));
            }
            if last.size > 0 {
                let proof =
                    merkle::consistency_proof(&LogNodes::new(store, *log), last.size, c.size)
                        .map_err(|e| format!("no consistency proof from {}: {e}", last.size))?;
                let old = Checkpoint { origin: c.origin.clone(), size: last.size, root: last.root };
                old.verify_extension(&c, &proof)
                    .map_err(|e| format!("not consistent with cosigned size {}: {e}", last.size))?;
            }
        }
        let rec =
            serde_json::to_vec(&Last { size: c.size, root: c.root }).map_err(|e| e.to_string())?;
        store.put_meta(&key, &rec).map_err(|e| format!("recording the cosigned size: {e}"))?;
        let cos = Cosignature::create(
            &self.shared.identity.log_key,
            &self.shared.cfg.name,
            &c,
            now_secs(),
        )
        .map_err(|e| e.to_string())?;
        cp.add_cosignature(&cos).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Turns a conflict seen by replication into a proof when it can make a self-contained
    /// one; otherwise records it as a fault.
    pub fn on_conflict(&mut self, c: &Conflict) -> Outcome {
        let mut out = Outcome::default();
        let store = &*self.shared.store;
        let theirs = SignedCheckpoint::parse(&c.theirs).ok();
        let proof = match c.kind {
            ConflictKind::CheckpointCheckpoint => {
                let ours = SignedCheckpoint::parse(&c.ours).ok().or_else(|| {
                    store
                        .checkpoint(&c.log, c.at)
                        .ok()
                        .flatten()
                        .and_then(|n| SignedCheckpoint::parse(&n).ok())
                });
                ours.zip(theirs.clone())
                    .and_then(|(a, b)| EquivocationProof::from_checkpoints(&a, &b))
            }
            ConflictKind::CheckpointEntries => {
                // Remember their note: a signed note of ours at that size makes the proof.
                if let Some(t) = &theirs {
                    let m = self.seen.entry(c.log).or_default();
                    m.insert(t.checkpoint().size, c.theirs.clone());
                    while m.len() > SEEN_PER_LOG {
                        m.pop_first();
                    }
                }
                let ours = store
                    .checkpoint(&c.log, c.at)
                    .ok()
                    .flatten()
                    .and_then(|n| SignedCheckpoint::parse(&n).ok());
                ours.zip(theirs.clone())
                    .and_then(|(a, b)| EquivocationProof::from_checkpoints(&a, &b))
            }
            ConflictKind::EntryEntry => self.entry_proof(c),
        };
        match proof {
            Some(p) => match self.accept_proof(p) {
                Ok(l) => out.equivocator = l,
                Err(e) => {
                    self.stats.faults += 1;
                    tracing::warn!(error = %e, "conflict does not make a valid proof");
                }
            },
            None => {
                self.stats.faults += 1;
                tracing::warn!(log = %self.shared.name_of(&c.log), kind = ?c.kind, at = c.at, "conflict without a self-contained proof yet (fault)");
            }
        }
        out
    }

    /// Two entries at one index. Our entry can be proven into a stored checkpoint, but we
    /// hold none of the other tree's nodes: no self-contained proof from this alone (the
    /// conflicting checkpoints, once they meet, make one).
    fn entry_proof(&self, _c: &Conflict) -> Option<EquivocationProof> {
        None
    }
}

/// Fault injection: for every own checkpoint, gossip a second one of the same size with a
/// different root, signed by the log key.
async fn danger_equivocate(shared: Arc<Shared>, net: NetHandle, cp_topic: String) {
    let mut rx = shared.writer.subscribe();
    let log = shared.writer.log;
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        let crate::writer::LogEvent::Checkpoint(cp) = ev else { continue };
        let real = cp.checkpoint();
        if real.size == 0 {
            continue;
        }
        let forged = Checkpoint {
            origin: real.origin.clone(),
            size: real.size,
            root: ringlog_protocol::sha256(&[b"forged", &real.root.0]),
        };
        let Ok(signed) = forged.sign(&shared.identity.log_key, &real.origin) else { continue };
        // Let the real one go first, so peers hold both.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let data = Gossip::Checkpoint { log, note: signed.to_text() }.encode();
        if let Err(e) = net.publish(&cp_topic, data).await {
            tracing::debug!(error = %e, "forged checkpoint not published");
        }
    }
}
