//! End-to-end verification of a stored log: every entry decodes canonically at its index, every
//! signature verifies (batched), every stored Merkle node matches the entries, and every stored
//! checkpoint is signed by the log and has the root recomputed from the entries at its size.
//! Used by `ringlog node check`, by `ringlog audit`, and by the writer before it signs.

use crate::store::{LogNodes, Store};
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::keys::verify_batch;
use ringlog_protocol::merkle::{self, Frontier};
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::{LogId, Sig};
use serde::Serialize;
use std::collections::BTreeSet;

/// Entries read and checked per step.
const CHUNK: u64 = 4096;

/// One thing wrong in a log, naming the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The log.
    pub log: LogId,
    /// `entry`, `node`, `checkpoint` or `store`.
    pub object: &'static str,
    /// Index of the entry, node index, or checkpoint size.
    pub at: u64,
    /// What is wrong.
    pub what: String,
}

/// What a check covered.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

/// Options of a check.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Verify entry signatures (the expensive part).
    pub signatures: bool,
    /// First entry to check; the Merkle state before it is trusted from stored nodes.
    pub from: u64,
    /// Stop after this many problems.
    pub max_problems: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { signatures: true, from: 0, max_problems: 100 }
    }
}

/// Checks log `log` in `store`; `progress` is called with the number of entries done.
pub fn check_log<S: Store + ?Sized>(
    store: &S,
    log: &LogId,
    opts: Options,
    progress: &mut dyn FnMut(u64),
) -> Report {
    let mut report = Report::default();
    let problem = |r: &mut Report, object: &'static str, at: u64, what: String| {
        if r.problems.len() < opts.max_problems {
            r.problems.push(Problem { log: *log, object, at, what });
        }
    };
    let size = match store.size(log) {
        Ok(s) => s,
        Err(e) => {
            problem(&mut report, "store", 0, e.to_string());
            return report;
        }
    };
    let checkpoints = store.checkpoints(log).unwrap_or_else(|e| {
        problem(&mut report, "store", 0, format!("reading checkpoints: {e}"));
        Vec::new()
    });
    let mut cps = checkpoints.iter().filter(|(s, _)| *s >= opts.from).peekable();
    let nodes = LogNodes::new(store, *log);
    let from = opts.from.min(size);
    let mut frontier = match Frontier::from_source(&nodes, from) {
        Ok(f) => f,
        Err(e) => {
            problem(&mut report, "node", from, format!("cannot rebuild tree edge: {e}"));
            return report;
        }
    };
    // A checkpoint at exactly `from` is checked before any entry is pushed.
    let mut check_cps = |r: &mut Report, frontier: &Frontier, bad: &BTreeSet<u64>| {
        while let Some((cp_size, note)) = cps.peek() {
            if *cp_size > frontier.size() {
                break;
            }
            let (cp_size, note) = (*cp_size, note.clone());
            cps.next();
            r.checkpoints += 1;
            match SignedCheckpoint::parse(&note) {
                Err(e) => problem(r, "checkpoint", cp_size, format!("does not parse: {e}")),
                Ok(cp) => {
                    let c = cp.checkpoint();
                    if let Err(e) = cp.verify(log, &c.origin) {
                        problem(r, "checkpoint", cp_size, format!("signature: {e}"));
                    } else if c.size != cp_size {
                        problem(
                            r,
                            "checkpoint",
                            cp_size,
                            format!("stored under size {cp_size} but says {}", c.size),
                        );
                    } else if c.root != frontier.root() && bad.range(..cp_size).next().is_none() {
                        problem(r, "checkpoint", cp_size, "root does not match the entries".into());
                    }
                }
            }
        }
    };
    let mut bad: BTreeSet<u64> = BTreeSet::new();
    check_cps(&mut report, &frontier, &bad);
    let mut emitted = Vec::new();
    let mut start = from;
    while start < size {
        let end = (start + CHUNK).min(size);
        let raw = match store.entries(log, start, end) {
            Ok(r) if r.len() as u64 == end - start => r,
            Ok(r) => {
                problem(
                    &mut report,
                    "store",
                    start,
                    format!("{} entries missing", end - start - r.len() as u64),
                );
                return report;
            }
            Err(e) => {
                problem(&mut report, "store", start, e.to_string());
                return report;
            }
        };
        // First the entries themselves, so that a bad entry is named once, as the entry, and
        // not again through every tree node and checkpoint above it.
        let mut decoded: Vec<(u64, SignedEntry)> = Vec::with_capacity(raw.len());
        for (i, bytes) in raw.iter().enumerate() {
            let index = start + i as u64;
            match SignedEntry::decode(bytes) {
                Err(e) => {
                    bad.insert(index);
                    problem(&mut report, "entry", index, format!("does not decode: {e}"))
                }
                Ok(e) if e.entry.log != *log || e.entry.index != index => {
                    bad.insert(index);
                    problem(
                        &mut report,
                        "entry",
                        index,
                        format!("claims log {} index {}", e.entry.log, e.entry.index),
                    )
                }
                Ok(e) => decoded.push((index, e)),
            }
        }
        if opts.signatures {
            let msgs: Vec<(Vec<u8>, Sig)> =
                decoded.iter().map(|(_, e)| (e.entry.signing_bytes(), e.sig)).collect();
            let items: Vec<_> = msgs.iter().map(|(m, s)| (*log, m.as_slice(), *s)).collect();
            if verify_batch(&items).is_err() {
                for (index, e) in &decoded {
                    if let Err(err) = e.verify() {
                        bad.insert(*index);
                        problem(&mut report, "entry", *index, err.to_string());
                    }
                }
            }
        }
        // Then the tree: every node the entries make must be the stored one.
        for bytes in &raw {
            emitted.clear();
            frontier.push(merkle::leaf_hash(bytes), &mut emitted);
            for (level, idx, hash) in &emitted {
                let (lo, hi) = (idx << level, (idx + 1) << level);
                match store.node(log, *level, *idx) {
                    Ok(Some(h)) if h == *hash => {}
                    Ok(Some(_)) if bad.range(lo..hi).next().is_some() => {}
                    Ok(Some(_)) => problem(
                        &mut report,
                        "entry",
                        lo,
                        format!("entries {lo}..{hi} do not match the stored tree (level {level} node {idx})"),
                    ),
                    Ok(None) => problem(&mut report, "node", *idx, format!("level {level} missing")),
                    Err(e) => problem(&mut report, "store", *idx, e.to_string()),
                }
            }
            check_cps(&mut report, &frontier, &bad);
        }
        report.entries += end - start;
        progress(end);
        start = end;
    }
    // Checkpoints beyond the stored entries cannot be backed.
    for (cp_size, _) in cps {
        report.checkpoints += 1;
        problem(&mut report, "checkpoint", *cp_size, format!("beyond the {size} stored entries"));
    }
    report
}
