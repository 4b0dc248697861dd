//! End-to-end verification of a stored log: every entry decodes canonically at its index, every
//! signature verifies (batched), every stored Merkle node matches the entries, and every stored
//! checkpoint is signed by the log and has the root recomputed from the entries at its size.
//! Used by `ringlog node check`, by `ringlog audit` (over a store or a running node's API, see
//! [`LogSource`]), and by the writer before it signs.
//!
//! With more than one thread, workers read, decode and batch-verify chunks of entries in
//! parallel while the calling thread rebuilds the tree from them in order; at most
//! `threads + 2` chunks are held at a time, so memory stays bounded whatever the log's size.

use crate::store::{LogNodes, Store};
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::keys::verify_batch;
use ringlog_protocol::merkle::{self, Frontier};
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::Hash;
use ringlog_protocol::{LogId, Sig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex};

/// Entries read and checked per step.
const CHUNK: u64 = 4096;

/// One thing wrong in a log, naming the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The log.
    pub log: LogId,
    /// `entry`, `node`, `checkpoint`, `cosignature` or `store` (the store, or the node's API,
    /// failed to answer).
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

/// Where a check reads one log from: a store, or a running node's read-only API.
pub trait LogSource: Sync {
    /// Entries held.
    fn size(&self, log: &LogId) -> Result<u64, String>;
    /// Every checkpoint note held, by ascending size.
    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, String>;
    /// Stored bytes of entries `start..end` (fewer if the log is shorter).
    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String>;
    /// The stored Merkle node; `None` when the source has no node store to check (then only
    /// the recomputed roots are checked, against the checkpoints and [`LogSource::root`]).
    fn node(&self, log: &LogId, level: u8, index: u64) -> Option<Result<Option<Hash>, String>>;
    /// The tree edge at `size` from stored nodes (only needed to start past entry 0).
    fn frontier(&self, log: &LogId, size: u64) -> Result<Frontier, String>;
    /// The root the source itself claims for the `size` it reported, if it serves one.
    fn root(&self, _log: &LogId) -> Option<Hash> {
        None
    }
    /// Entries read per step.
    fn chunk(&self) -> u64 {
        CHUNK
    }
}

/// A store as a [`LogSource`].
pub struct StoreSource<'a, S: ?Sized>(pub &'a S);

impl<S: Store + ?Sized> LogSource for StoreSource<'_, S> {
    fn size(&self, log: &LogId) -> Result<u64, String> {
        self.0.size(log).map_err(|e| e.to_string())
    }
    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, String> {
        self.0.checkpoints(log).map_err(|e| e.to_string())
    }
    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String> {
        self.0.entries(log, start, end).map_err(|e| e.to_string())
    }
    fn node(&self, log: &LogId, level: u8, index: u64) -> Option<Result<Option<Hash>, String>> {
        Some(self.0.node(log, level, index).map_err(|e| e.to_string()))
    }
    fn frontier(&self, log: &LogId, size: u64) -> Result<Frontier, String> {
        Frontier::from_source(&LogNodes::new(self.0, *log), size).map_err(|e| e.to_string())
    }
}

/// Checks log `log` in `store` on the calling thread; `progress` is called with the number of
/// entries done.
pub fn check_log<S: Store + ?Sized>(
    store: &S,
    log: &LogId,
    opts: Options,
    progress: &mut dyn FnMut(u64),
) -> Report {
    check_source(&StoreSource(store), log, opts, 1, &|_| false, &mut |done, _| progress(done))
        .report
}

/// What [`check_source`] returns besides the report.
#[derive(Debug, Default)]
pub struct Checked {
    /// The report.
    pub report: Report,
    /// The decodable entries `keep` selected, in index order.
    pub kept: Vec<SignedEntry>,
    /// The checkpoint notes read (by ascending size).
    pub checkpoints: Vec<(u64, String)>,
}

/// One chunk as read, decoded and signature-checked by a worker.
enum Chunk {
    Read {
        raw: Vec<Vec<u8>>,
        /// (index, problem) for entries that do not decode, claim another position or fail
        /// their signature, in index order.
        bad: Vec<(u64, String)>,
        kept: Vec<SignedEntry>,
    },
    Failed(&'static str, String),
}

/// Reads entries `start..end`, decodes them and batch-verifies their signatures.
fn read_chunk(
    src: &dyn LogSource,
    log: &LogId,
    start: u64,
    end: u64,
    signatures: bool,
    keep: &(dyn Fn(&SignedEntry) -> bool + Sync),
) -> Chunk {
    let raw = match src.entries(log, start, end) {
        Ok(r) if r.len() as u64 == end - start => r,
        Ok(r) => {
            return Chunk::Failed(
                "store",
                format!("{} entries missing", end - start - r.len() as u64),
            )
        }
        Err(e) => return Chunk::Failed("store", e),
    };
    let mut bad = Vec::new();
    let mut kept = Vec::new();
    let mut decoded: Vec<(u64, SignedEntry)> = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let index = start + i as u64;
        match SignedEntry::decode(bytes) {
            Err(e) => bad.push((index, format!("does not decode: {e}"))),
            Ok(e) if e.entry.log != *log || e.entry.index != index => {
                bad.push((index, format!("claims log {} index {}", e.entry.log, e.entry.index)))
            }
            Ok(e) => {
                if keep(&e) {
                    kept.push(e.clone());
                }
                decoded.push((index, e))
            }
        }
    }
    if signatures {
        let msgs: Vec<(Vec<u8>, Sig)> =
            decoded.iter().map(|(_, e)| (e.entry.signing_bytes(), e.sig)).collect();
        let items: Vec<_> = msgs.iter().map(|(m, s)| (*log, m.as_slice(), *s)).collect();
        if verify_batch(&items).is_err() {
            for (index, e) in &decoded {
                if let Err(err) = e.verify() {
                    bad.push((*index, err.to_string()));
                }
            }
            bad.sort_by_key(|(i, _)| *i);
        }
    }
    Chunk::Read { raw, bad, kept }
}

/// Chunks handed from the workers to the thread that rebuilds the tree.
struct Pipe {
    state: Mutex<PipeState>,
    ready: Condvar,
    space: Condvar,
}

#[derive(Default)]
struct PipeState {
    /// Next chunk number a worker takes.
    next: u64,
    /// Chunks the tree thread has taken.
    taken: u64,
    /// Finished chunks not yet taken.
    done: BTreeMap<u64, Chunk>,
    /// The tree thread stopped (or a worker died): workers end.
    stop: bool,
}

/// Marks the pipe stopped if a worker unwinds, so the tree thread does not wait forever.
struct StopOnPanic<'a>(&'a Pipe);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut st) = self.0.state.lock() {
                st.stop = true;
            }
            self.0.ready.notify_all();
        }
    }
}

/// Checks log `log` read from `src` with `threads` reading and verifying workers (1: all on
/// the calling thread). Entries for which `keep` is true are returned (governance entries for
/// the audit's roster fold). `progress` is called with the entries done and the size.
pub fn check_source(
    src: &dyn LogSource,
    log: &LogId,
    opts: Options,
    threads: usize,
    keep: &(dyn Fn(&SignedEntry) -> bool + Sync),
    progress: &mut dyn FnMut(u64, u64),
) -> Checked {
    let mut out = Checked::default();
    let mut report = Report::default();
    let problem = |r: &mut Report, object: &'static str, at: u64, what: String| {
        if r.problems.len() < opts.max_problems {
            r.problems.push(Problem { log: *log, object, at, what });
        }
    };
    // Checkpoints before the size: a running source only grows, so every checkpoint read
    // must be backed by the entries counted after it.
    let checkpoints = src.checkpoints(log).unwrap_or_else(|e| {
        problem(&mut report, "store", 0, format!("reading checkpoints: {e}"));
        Vec::new()
    });
    let size = match src.size(log) {
        Ok(s) => s,
        Err(e) => {
            problem(&mut report, "store", 0, e);
            out.report = report;
            return out;
        }
    };
    let mut cps = checkpoints.iter().filter(|(s, _)| *s >= opts.from).peekable();
    let from = opts.from.min(size);
    let mut frontier = if from == 0 {
        Frontier::new()
    } else {
        match src.frontier(log, from) {
            Ok(f) => f,
            Err(e) => {
                problem(&mut report, "node", from, format!("cannot rebuild tree edge: {e}"));
                out.report = report;
                return out;
            }
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
    let chunk = src.chunk().max(1);
    let chunks = (size - from).div_ceil(chunk);
    let range = |k: u64| (from + k * chunk, (from + (k + 1) * chunk).min(size));
    let threads = threads.max(1);
    let window = threads as u64 + 2;
    let pipe = Pipe {
        state: Mutex::new(PipeState::default()),
        ready: Condvar::new(),
        space: Condvar::new(),
    };
    let sigs = opts.signatures;
    std::thread::scope(|s| {
        if threads > 1 {
            for _ in 0..threads.min(chunks as usize) {
                s.spawn(|| {
                    let _guard = StopOnPanic(&pipe);
                    loop {
                        let k = {
                            let Ok(mut st) = pipe.state.lock() else { return };
                            while !st.stop && st.next < chunks && st.next >= st.taken + window {
                                st = match pipe.space.wait(st) {
                                    Ok(g) => g,
                                    Err(_) => return,
                                };
                            }
                            if st.stop || st.next >= chunks {
                                return;
                            }
                            st.next += 1;
                            st.next - 1
                        };
                        let (a, b) = range(k);
                        let c = read_chunk(src, log, a, b, sigs, keep);
                        let Ok(mut st) = pipe.state.lock() else { return };
                        st.done.insert(k, c);
                        drop(st);
                        pipe.ready.notify_all();
                    }
                });
            }
        }
        let mut bad: BTreeSet<u64> = BTreeSet::new();
        check_cps(&mut report, &frontier, &bad);
        let mut emitted = Vec::new();
        for k in 0..chunks {
            let (start, end) = range(k);
            let got = if threads > 1 {
                let Ok(mut st) = pipe.state.lock() else { break };
                loop {
                    if let Some(c) = st.done.remove(&k) {
                        st.taken = k + 1;
                        break Some(c);
                    }
                    if st.stop {
                        break None;
                    }
                    st = match pipe.ready.wait(st) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            } else {
                Some(read_chunk(src, log, start, end, sigs, keep))
            };
            pipe.space.notify_all();
            let (raw, bad_here, kept) = match got {
                Some(Chunk::Read { raw, bad, kept }) => (raw, bad, kept),
                Some(Chunk::Failed(object, what)) => {
                    problem(&mut report, object, start, what);
                    break;
                }
                None => {
                    problem(&mut report, "store", start, "a checking thread failed".into());
                    break;
                }
            };
            // First the entries themselves, so that a bad entry is named once, as the entry,
            // and not again through every tree node and checkpoint above it.
            for (index, what) in bad_here {
                if bad.insert(index) {
                    problem(&mut report, "entry", index, what);
                }
            }
            out.kept.extend(kept);
            // Then the tree: every node the entries make must be the stored one.
            for bytes in &raw {
                emitted.clear();
                frontier.push(merkle::leaf_hash(bytes), &mut emitted);
                for (level, idx, hash) in &emitted {
                    let (lo, hi) = (idx << level, (idx + 1) << level);
                    match src.node(log, *level, *idx) {
                        None => {}
                        Some(Ok(Some(h))) if h == *hash => {}
                        Some(Ok(Some(_))) if bad.range(lo..hi).next().is_some() => {}
                        Some(Ok(Some(_))) => problem(
                            &mut report,
                            "entry",
                            lo,
                            format!("entries {lo}..{hi} do not match the stored tree (level {level} node {idx})"),
                        ),
                        Some(Ok(None)) => problem(&mut report, "node", *idx, format!("level {level} missing")),
                        Some(Err(e)) => problem(&mut report, "store", *idx, e),
                    }
                }
                check_cps(&mut report, &frontier, &bad);
            }
            report.entries += end - start;
            progress(end, size);
            if k + 1 == chunks {
                // The root the source serves for its size must be the one its entries make.
                if let Some(root) = src.root(log) {
                    if root != frontier.root() && bad.is_empty() {
                        problem(
                            &mut report,
                            "node",
                            size,
                            "the tree root served for this size is not the one the entries make"
                                .into(),
                        );
                    }
                }
            }
        }
        if let Ok(mut st) = pipe.state.lock() {
            st.stop = true;
        }
        pipe.space.notify_all();
    });
    // Checkpoints beyond the entries cannot be backed (only when all entries were read).
    if report.entries == size - from {
        for (cp_size, _) in cps {
            report.checkpoints += 1;
            problem(
                &mut report,
                "checkpoint",
                *cp_size,
                format!("beyond the {size} stored entries"),
            );
        }
    }
    out.report = report;
    out.checkpoints = checkpoints;
    out
}
