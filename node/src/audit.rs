//! Audit of a node's logs, read from its store (offline) or from its read-only HTTP API
//! (`crate::audit_api`): every log checked end to end (`check::check_source`:
//! entries, batched signatures, Merkle nodes, checkpoints against the recomputed roots, which
//! makes every checkpoint consistent with every earlier one), every cosignature line checked
//! (valid, by a roster member other than the owner, under its member name), witnessed
//! checkpoints counted, roster fold refusals listed, stored equivocation proofs re-verified.

use crate::check::{self, LogSource, Problem};
use crate::store::Store;
use crate::witness::{self, StoredProof};
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::keys::ALG_ED25519;
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::roster::Roster;
use ringlog_protocol::LogId;
use serde::Serialize;
use std::collections::BTreeMap;

/// One log's audit.
#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    /// The log.
    pub log: LogId,
    /// Its member name, if known.
    pub member: Option<String>,
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Valid cosignatures seen.
    pub cosignatures: u64,
    /// Checkpoints with at least `witness_k` valid cosignatures.
    pub witnessed: u64,
}

/// A roster rule the logs break (an entry the fold refused).
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    /// The log.
    pub log: LogId,
    /// The refused entry.
    pub index: u64,
    /// Why.
    pub why: String,
}

/// A stored equivocation proof and whether it verifies.
#[derive(Clone, Debug, Serialize)]
pub struct Equivocation {
    /// The proof as stored.
    #[serde(flatten)]
    pub stored: StoredProof,
    /// Verification result: `ok` or the error.
    pub verified: String,
}

/// The whole audit.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nothing wrong: no problem, no refusal, no equivocation.
    pub clean: bool,
    /// Cosignatures needed for a checkpoint to count as witnessed.
    pub witness_k: u32,
    /// Per log.
    pub logs: Vec<LogReport>,
    /// Every problem, naming the object (`entry`, `node`, `checkpoint`, `cosignature`, `store`).
    pub problems: Vec<Problem>,
    /// Roster refusals.
    pub refusals: Vec<Refusal>,
    /// Equivocation proofs held.
    pub equivocations: Vec<Equivocation>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Where an audit reads a node's state: its logs (see [`LogSource`]), the list of them and the
/// equivocation proofs it holds.
pub trait Source: LogSource {
    /// Every log held.
    fn logs(&self) -> Result<Vec<LogId>, String>;
    /// The equivocation proofs held.
    fn proofs(&self) -> Result<Vec<StoredProof>, String>;
}

impl<S: Store + ?Sized> Source for check::StoreSource<'_, S> {
    fn logs(&self) -> Result<Vec<LogId>, String> {
        self.0.logs().map_err(|e| e.to_string())
    }
    fn proofs(&self) -> Result<Vec<StoredProof>, String> {
        let raw = self.0.meta(witness::PROOFS_KEY).map_err(|e| e.to_string())?;
        match raw {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| format!("stored proofs: {e}")),
        }
    }
}

/// Threads used: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).max(1)
}

/// Audits `store` against `genesis`; `progress(log, done, size)` reports entries checked.
pub fn audit(
    store: &dyn Store,
    genesis: &Genesis,
    progress: &(dyn Fn(&LogId, u64, u64) + Sync),
) -> Result<Report, String> {
    audit_source(&check::StoreSource(store), genesis, threads(), progress)
}

/// Audits what `src` serves against `genesis`. Logs are checked one after the other, each
/// with `threads` workers reading and batch-verifying its entries (so one big log uses every
/// core), while this thread rebuilds the tree; memory is bounded by a few chunks per log plus
/// its checkpoint notes and governance entries.
pub fn audit_source(
    src: &dyn Source,
    genesis: &Genesis,
    threads: usize,
    progress: &(dyn Fn(&LogId, u64, u64) + Sync),
) -> Result<Report, String> {
    let t0 = std::time::Instant::now();
    let all = src.logs()?;
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    let mut gov: BTreeMap<LogId, Vec<SignedEntry>> = BTreeMap::new();
    for log in &all {
        let c = check::check_source(
            src,
            log,
            check::Options::default(),
            threads,
            &crate::governance::is_governance,
            &mut |done, size| progress(log, done, size),
        );
        problems.extend(c.report.problems);
        if !c.kept.is_empty() {
            gov.insert(*log, c.kept);
        }
        checked.push((*log, c.report.entries, c.report.checkpoints, c.checkpoints));
    }
    // The roster as the logs make it, folded as a node folds it.
    let (roster, refusals) = Roster::fold(genesis, &gov);
    let mut logs = Vec::new();
    for (log, entries, checkpoints, notes) in checked {
        let (r, p) = cosignatures(genesis, &roster, log, entries, checkpoints, &notes);
        logs.push(r);
        problems.extend(p);
    }
    let refusals: Vec<Refusal> = refusals
        .into_iter()
        .map(|(log, index, e)| Refusal { log, index, why: e.to_string() })
        .collect();
    let equivocations: Vec<Equivocation> = src
        .proofs()?
        .into_iter()
        .map(|p| {
            let verified = match genesis
                .members
                .iter()
                .chain(roster.members().map(|m| &m.info))
                .find(|m| m.log_key == p.log)
            {
                None => "unknown member".to_string(),
                Some(m) => match p.proof.verify(&m.log_key, &genesis.origin(&m.name)) {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.to_string(),
                },
            };
            Equivocation { stored: p, verified }
        })
        .collect();
    Ok(Report {
        clean: problems.is_empty() && refusals.is_empty() && equivocations.is_empty(),
        witness_k: genesis.witness_k,
        logs,
        problems,
        refusals,
        equivocations,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Entries per second of batched Ed25519 verification alone over `log`'s stored entries (decode
/// and verify, nothing else): the yardstick for the audit's rate.
pub fn raw_verify_rate(store: &dyn Store, log: &LogId) -> Result<(u64, f64), crate::store::Error> {
    use ringlog_protocol::keys::verify_batch;
    use ringlog_protocol::record::SignedEntry;
    let size = store.size(log)?;
    let mut raw = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + 4096).min(size);
        raw.push(store.entries(log, start, end)?);
        start = end;
    }
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    for chunk in &raw {
        let decoded: Vec<SignedEntry> =
            chunk.iter().filter_map(|b| SignedEntry::decode(b).ok()).collect();
        let msgs: Vec<(Vec<u8>, ringlog_protocol::Sig)> =
            decoded.iter().map(|e| (e.entry.signing_bytes(), e.sig)).collect();
        let items: Vec<_> = msgs.iter().map(|(m, s)| (*log, m.as_slice(), *s)).collect();
        if verify_batch(&items).is_err() {
            return Err(crate::store::Error::Corrupt("a signature does not verify".into()));
        }
        n += decoded.len() as u64;
    }
    Ok((n, n as f64 / t0.elapsed().as_secs_f64().max(1e-9)))
}

/// One log's cosignature lines: every line other than the owner's must be a valid cosignature
/// of a roster member other than the owner, under its member name.
fn cosignatures(
    genesis: &Genesis,
    roster: &Roster,
    log: LogId,
    entries: u64,
    checkpoints: u64,
    notes: &[(u64, String)],
) -> (LogReport, Vec<Problem>) {
    let mut problems = Vec::new();
    let member = roster.by_log_key(&log).map(|m| m.info.name.clone());
    let witnesses = witness::witness_keys(roster, &log);
    let (mut cosignatures, mut witnessed) = (0u64, 0u64);
    for (cp_size, note) in notes {
        let cp_size = *cp_size;
        let Ok(cp) = SignedCheckpoint::parse(note) else { continue };
        let origin = cp.checkpoint().origin.clone();
        let own_id = log.key_id(&origin, ALG_ED25519);
        for line in cp.signatures() {
            if line.name == origin && line.key_id == own_id {
                continue;
            }
            let key = witnesses.iter().find(|(n, _)| *n == line.name).map(|(_, k)| *k);
            let what = match key.map(|k| cp.cosignature(&k, &line.name)) {
                None => format!("line by {:?}: not a witness member of the roster", line.name),
                Some(None) => format!("cosignature by {}: wrong key id", line.name),
                Some(Some(Err(e))) => format!("cosignature by {}: {e}", line.name),
                Some(Some(Ok(_))) => {
                    cosignatures += 1;
                    continue;
                }
            };
            problems.push(Problem { log, object: "cosignature", at: cp_size, what });
        }
        if cp.count_cosignatures(&witnesses) >= genesis.witness_k as usize {
            witnessed += 1;
        }
    }
    (LogReport { log, member, entries, checkpoints, cosignatures, witnessed }, problems)
}
