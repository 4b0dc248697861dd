//! The replication rules: what a node accepts from its peers, what it pulls, and what it records
//! as a conflict, as a state machine over events with no I/O ([`Replica`]), plus the wire
//! messages peers exchange ([`Gossip`], [`Request`], [`Response`]).
//!
//! # Shape
//! A driver (the node) feeds [`Event`]s into [`Replica::handle`] and carries out the
//! [`Action`]s it returns: answer a gossip message, send a request, append verified entries,
//! keep a checkpoint, penalise a peer, record a conflict, or read something back from the store
//! (a root at an old size, stored entries to compare) and feed the answer in as another event.
//! The replica's view of each log (size, Merkle frontier, last checkpoint it matched) moves
//! forward when it emits an [`Action::Append`]; if the driver cannot carry one out it reloads
//! the log's state with [`Replica::load`].
//!
//! # Rules
//! - An entry is accepted only at exactly the next index of its log, decoded canonically, for
//!   that log, with a valid signature by the log key. Fast-path entries (gossip) are accepted
//!   one batch at a time under this rule.
//! - A checkpoint is considered only with a valid signature by the log key under the log's
//!   origin. One at a size we hold is checked against the root recomputed from our entries;
//!   one beyond our size becomes a pull target and is checked when our log reaches its size.
//! - A pulled range that carries a checkpoint is appended only if the root at the
//!   checkpoint's size, recomputed from our entries plus the range, equals the signed root.
//!   Since both the earlier checkpoint we hold and the new one are checked against roots
//!   recomputed from the same stored leaves, the new one necessarily extends the old one (this
//!   is stronger than checking a consistency proof supplied by a peer).
//! - Bad signatures, entries at the wrong index or of the wrong log, a range that does not
//!   match its checkpoint, and gossip about logs of non-members are rejected and the peer that
//!   sent them is penalised. Duplicates and out-of-order gossip are ignored (the pull repairs
//!   gaps).
//! - A checkpoint whose root disagrees with our entries at its size, two checkpoints of one
//!   size with different roots, and two different signed entries at one index are conflicts:
//!   both objects are signed by the log key, so they are evidence against the log's writer.
//!   The replica reports them ([`Action::Conflict`]) and stops replicating that log (frozen).
//!
//! # Bounds
//! Requests in flight are bounded per log ([`PIPELINE`]) and in total ([`MAX_IN_FLIGHT`]);
//! pulled ranges are at most [`MAX_RANGE_ENTRIES`] entries and [`MAX_RANGE_BYTES`] bytes;
//! checkpoints waiting for our log to reach their size are at most [`MAX_AHEAD`] per log.

use crate::bytes::Hash;
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::keys::verify_batch;
use crate::merkle::{leaf_hash, Frontier};
use crate::record::{SignedEntry, ENTRY_SIG_PREFIX};
use crate::{LogId, Sig};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Most entries asked for in one range request.
pub const MAX_RANGE_ENTRIES: u64 = 2000;
/// Most entry bytes a range response carries (it is cut short past this).
pub const MAX_RANGE_BYTES: usize = 512 * 1024;
/// Most entry bytes in one gossip message; larger batches are split.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Range requests in flight (or answered and waiting to be applied) per log.
pub const PIPELINE: usize = 4;
/// Range requests in flight in total.
pub const MAX_IN_FLIGHT: usize = 12;
/// Checkpoints beyond our size remembered per log.
pub const MAX_AHEAD: usize = 32;
/// Most log heads in one summary.
pub const MAX_HEADS: usize = 4096;
/// Largest encoded message accepted by the decoders.
pub const MAX_WIRE_BYTES: usize = 2 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Wire messages
// ---------------------------------------------------------------------------------------------

/// A gossip message (fast path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gossip {
    /// New entries of a log, from index `first` on (encoded [`SignedEntry`]s).
    Entries {
        /// The log.
        log: LogId,
        /// Index of the first entry.
        first: u64,
        /// The encoded entries.
        entries: Vec<Vec<u8>>,
    },
    /// A signed checkpoint note of a log.
    Checkpoint {
        /// The log.
        log: LogId,
        /// The note text.
        note: String,
    },
}

/// A request (repair path).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Request {
    /// "What do you hold?": answered with [`Response::Summary`].
    Summary,
    /// Entries `start..end` of `log`: answered with [`Response::Range`].
    Range {
        /// The log.
        log: LogId,
        /// First index.
        start: u64,
        /// One past the last index; at most [`MAX_RANGE_ENTRIES`] after `start`.
        end: u64,
    },
}

/// What a node holds of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The log.
    pub log: LogId,
    /// Entries held.
    pub size: u64,
    /// Root at `size` (unsigned: informative only).
    pub root: Hash,
    /// The latest signed checkpoint held, as note text.
    pub checkpoint: Option<String>,
}

/// An answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Heads of every log held.
    Summary(Vec<Head>),
    /// A prefix of the asked range (possibly cut short by size), with the latest checkpoint
    /// the responder holds whose size falls within the entries sent, if any.
    Range {
        /// The encoded entries, from the asked `start`.
        entries: Vec<Vec<u8>>,
        /// A checkpoint note of size in `start + 1 ..= start + entries.len()`.
        checkpoint: Option<String>,
    },
    /// The request was not served.
    Refused(String),
}

/// Why bytes are not a valid wire message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Larger than [`MAX_WIRE_BYTES`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Ended early.
    #[error("message is truncated")]
    Truncated,
    /// Unknown message tag.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A text field is not UTF-8.
    #[error("text field is not utf-8")]
    NotUtf8,
    /// A list is longer than allowed.
    #[error("list of {0} items is over the limit")]
    TooMany(u64),
    /// Bytes after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

const TAG_ENTRIES: u8 = 1;
const TAG_CHECKPOINT: u8 = 2;
const TAG_SUMMARY_REQ: u8 = 3;
const TAG_RANGE_REQ: u8 = 4;
const TAG_SUMMARY: u8 = 5;
const TAG_RANGE: u8 = 6;
const TAG_REFUSED: u8 = 7;

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn hash(&mut self, h: &Hash) {
        self.0.extend_from_slice(&h.0);
    }
    fn opt_text(&mut self, t: &Option<String>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.bytes(t.as_bytes());
            }
        }
    }
    fn list(&mut self, items: &[Vec<u8>]) {
        self.u64(items.len() as u64);
        for i in items {
            self.bytes(i);
        }
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        self.take(n)
    }
    fn hash(&mut self) -> Result<Hash, WireError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(Hash(h))
    }
    fn log(&mut self) -> Result<LogId, WireError> {
        Ok(crate::PublicKey(self.hash()?))
    }
    fn text(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| WireError::NotUtf8)
    }
    fn opt_text(&mut self) -> Result<Option<String>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.text()?)),
        }
    }
    /// A count, checked against `max` and against the bytes left (each item takes at least
    /// `min_item` bytes), so a forged count cannot make us allocate.
    fn count(&mut self, max: u64, min_item: usize) -> Result<usize, WireError> {
        let n = self.u64()?;
        let fits = (self.0.len() / min_item.max(1)) as u64;
        if n > max || n > fits {
            return Err(WireError::TooMany(n));
        }
        Ok(n as usize)
    }
    fn list(&mut self, max: u64) -> Result<Vec<Vec<u8>>, WireError> {
        let n = self.count(max, 8)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.bytes()?.to_vec());
        }
        Ok(v)
    }
    fn end(self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.0.len()))
        }
    }
}

fn start_decode(bytes: &[u8]) -> Result<(u8, In<'_>), WireError> {
    if bytes.len() > MAX_WIRE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let mut r = In(bytes);
    let tag = r.u8()?;
    Ok((tag, r))
}

impl Gossip {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out(Vec::new());
        match self {
            Gossip::Entries { log, first, entries } => {
                o.u8(TAG_ENTRIES);
                o.hash(&log.0);
                o.u64(*first);
                o.list(entries);
            }
            Gossip::Checkpoint { log, note } => {
                o.u8(TAG_CHECKPOINT);
                o.hash(&log.0);
                o.bytes(note.as_bytes());
            }
        }
        o.0
    }

    /// Decodes the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Gossip, WireError> {
        let (tag, mut r) = start_decode(bytes)?;
        let g = match tag {
            TAG_ENTRIES => {
                let log = r.log()?;
                let first = r.u64()?;
                let entries = r.list(u64::MAX)?;
                Gossip::Entries { log, first, entries }
            }
            TAG_CHECKPOINT => Gossip::Checkpoint { log: r.log()?, note: r.text()? },
            t => return Err(WireError::UnknownTag(t)),
        };
        r.end()?;
        Ok(g)
    }

    /// Splits a run of encoded entries of `log` starting at `first` into gossip messages of at
    /// most [`MAX_GOSSIP_BYTES`] of entries each (an entry larger than that goes alone).
    pub fn chunks(log: LogId, first: u64, entries: &[Vec<u8>]) -> Vec<Gossip> {
        let mut out = Vec::new();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut cur_first = first;
        let mut bytes = 0usize;
        for (i, e) in entries.iter().enumerate() {
            if !cur.is_empty() && bytes + e.len() > MAX_GOSSIP_BYTES {
                out.push(Gossip::Entries {
                    log,
                    first: cur_first,
                    entries: std::mem::take(&mut cur),
                });
                cur_first = first + i as u64;
                bytes = 0;
            }
            bytes += e.len();
            cur.push(e.clone());
        }
        if !cur.is_empty() {
            out.push(Gossip::Entries { log, first: cur_first, entries: cur });
        }
        out
    }
}

impl Request {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out(Vec::new());
        match self {
            Request::Summary => o.u8(TAG_SUMMARY_REQ),
            Request::Range { log, start, end } => {
                o.u8(TAG_RANGE_REQ);
                o.hash(&log.0);
                o.u64(*start);
                o.u64(*end);
            }
        }
        o.0
    }

    /// Decodes the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        let (tag, mut r) = start_decode(bytes)?;
        let q = match tag {
            TAG_SUMMARY_REQ => Request::Summary,
            TAG_RANGE_REQ => Request::Range { log: r.log()?, start: r.u64()?, end: r.u64()? },
            t => return Err(WireError::UnknownTag(t)),
        };
        r.end()?;
        Ok(q)
    }
}

impl Response {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out(Vec::new());
        match self {
            Response::Summary(heads) => {
                o.u8(TAG_SUMMARY);
                o.u64(heads.len() as u64);
                for h in heads {
                    o.hash(&h.log.0);
                    o.u64(h.size);
                    o.hash(&h.root);
                    o.opt_text(&h.checkpoint);
                }
            }
            Response::Range { entries, checkpoint } => {
                o.u8(TAG_RANGE);
                o.list(entries);
                o.opt_text(checkpoint);
            }
            Response::Refused(why) => {
                o.u8(TAG_REFUSED);
                o.bytes(why.as_bytes());
            }
        }
        o.0
    }

    /// Decodes the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Response, WireError> {
        let (tag, mut r) = start_decode(bytes)?;
        let resp = match tag {
            TAG_SUMMARY => {
                let n = r.count(MAX_HEADS as u64, 32 + 8 + 32 + 1)?;
                let mut heads = Vec::with_capacity(n);
                for _ in 0..n {
                    heads.push(Head {
                        log: r.log()?,
                        size: r.u64()?,
                        root: r.hash()?,
                        checkpoint: r.opt_text()?,
                    });
                }
                Response::Summary(heads)
            }
            TAG_RANGE => {
                let entries = r.list(MAX_RANGE_ENTRIES)?;
                Response::Range { entries, checkpoint: r.opt_text()? }
            }
            TAG_REFUSED => Response::Refused(r.text()?),
            t => return Err(WireError::UnknownTag(t)),
        };
        r.end()?;
        Ok(resp)
    }
}

// ---------------------------------------------------------------------------------------------
// Checking entries
// ---------------------------------------------------------------------------------------------

/// Why a run of entries is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntriesError {
    /// An entry does not decode, or is for another log or index (see the inner error).
    #[error("entry {index}: {error}")]
    Entry {
        /// The index it was expected at.
        index: u64,
        /// What is wrong.
        error: crate::record::VerifyError,
    },
    /// At least one signature does not verify under the log key.
    #[error("bad entry signature in the run")]
    Signature,
    /// The run is empty or its indexes overflow.
    #[error("empty or overflowing run of entries")]
    Empty,
}

/// Decodes `entries` as entries `first..` of `log` and verifies every signature (batched).
/// Returns the decoded entries and their Merkle leaf hashes.
pub fn verify_entries(
    log: &LogId,
    first: u64,
    entries: &[Vec<u8>],
) -> Result<(Vec<SignedEntry>, Vec<Hash>), EntriesError> {
    if entries.is_empty() || first.checked_add(entries.len() as u64).is_none() {
        return Err(EntriesError::Empty);
    }
    let mut decoded = Vec::with_capacity(entries.len());
    let mut msgs = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        let index = first + i as u64;
        let e = SignedEntry::decode(bytes)
            .map_err(|e| EntriesError::Entry { index, error: e.into() })?;
        if &e.entry.log != log {
            let error = crate::record::VerifyError::WrongLog { expected: *log, found: e.entry.log };
            return Err(EntriesError::Entry { index, error });
        }
        if e.entry.index != index {
            let error =
                crate::record::VerifyError::WrongIndex { expected: index, found: e.entry.index };
            return Err(EntriesError::Entry { index, error });
        }
        // The canonical entry bytes sit between the version byte and the signature (decode
        // checked the encoding is canonical), so the signed message is prefix || those bytes.
        let body = &bytes[1..bytes.len() - Sig::LEN];
        let mut m = Vec::with_capacity(ENTRY_SIG_PREFIX.len() + body.len());
        m.extend_from_slice(ENTRY_SIG_PREFIX);
        m.extend_from_slice(body);
        msgs.push(m);
        decoded.push(e);
    }
    let items: Vec<_> =
        decoded.iter().zip(&msgs).map(|(e, m)| (*log, m.as_slice(), e.sig)).collect();
    verify_batch(&items).map_err(|_| EntriesError::Signature)?;
    let leaves = entries.iter().map(|b| leaf_hash(b)).collect();
    Ok((decoded, leaves))
}

// ---------------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------------

/// A member log the replica follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The log id (its writer's key).
    pub log: LogId,
    /// Its checkpoint origin (also the signature key name).
    pub origin: String,
}

/// The stored state of a log, loaded by the driver.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    /// Entries stored.
    pub size: u64,
    /// The Merkle frontier at `size`.
    pub frontier: Frontier,
    /// The latest stored checkpoint (already checked when it was stored).
    pub checkpoint: Option<Checkpoint>,
}

/// Which gossip topic a message came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// New entries.
    Entries,
    /// Signed checkpoints.
    Checkpoints,
}

/// The answer to a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: deliver and forward.
    Accept,
    /// Invalid: drop and count against the sender.
    Reject,
    /// Valid but not useful now (duplicate, out of order, frozen log): drop quietly.
    Ignore,
}

/// Something that happened, fed into [`Replica::handle`].
#[derive(Clone, Debug)]
pub enum Event<P> {
    /// A peer connected.
    Connected(P),
    /// A peer disconnected.
    Disconnected(P),
    /// Time to exchange summaries with every connected peer.
    Tick,
    /// A gossip message forwarded by `from`. The actions returned hold exactly one
    /// [`Action::Verdict`].
    Gossip {
        /// The forwarding peer.
        from: P,
        /// The topic.
        topic: Topic,
        /// The payload.
        data: Vec<u8>,
    },
    /// The outcome of an [`Action::Request`]: the response bytes, or why there is none.
    Response {
        /// The peer asked.
        peer: P,
        /// The request as sent.
        request: Request,
        /// The response bytes or an error.
        result: Result<Vec<u8>, String>,
    },
    /// The answer to [`Action::RootAt`]: our root at the checkpoint's size.
    RootAt {
        /// The log.
        log: LogId,
        /// The checkpoint note to check.
        note: String,
        /// Our root at its size, recomputed from stored entries.
        root: Hash,
    },
    /// The answer to [`Action::Compare`]: the stored bytes of the same entries.
    Stored {
        /// The log.
        log: LogId,
        /// Index of the first entry.
        first: u64,
        /// The entries we were sent (signatures verified).
        received: Vec<Vec<u8>>,
        /// The stored entries at the same indexes.
        stored: Vec<Vec<u8>>,
    },
}

/// What kind of conflict was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Two signed checkpoints of one size with different roots.
    CheckpointCheckpoint,
    /// A signed checkpoint whose root differs from the one our signed entries give.
    CheckpointEntries,
    /// Two different signed entries at one index.
    EntryEntry,
}

/// A conflict: two objects signed by one log key that cannot both be true.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The log.
    pub log: LogId,
    /// What kind.
    pub kind: ConflictKind,
    /// Size of the checkpoint, or index of the entry.
    pub at: u64,
    /// What we hold: a checkpoint note, hex of an encoded entry, or `root <hex>` recomputed
    /// from our stored (signed) entries.
    pub ours: String,
    /// What we were sent: a checkpoint note or hex of an encoded entry.
    pub theirs: String,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Answer the gossip message being handled.
    Verdict(Verdict),
    /// Send a request; report the outcome as [`Event::Response`] (always, even on failure).
    Request {
        /// To whom.
        peer: P,
        /// What.
        request: Request,
    },
    /// Append these verified entries at the log's current end.
    Append {
        /// The log.
        log: LogId,
        /// The entries, consecutive from the stored size.
        entries: Vec<SignedEntry>,
    },
    /// Keep a checked checkpoint note.
    StoreCheckpoint {
        /// The log.
        log: LogId,
        /// Its size.
        size: u64,
        /// The note.
        note: String,
    },
    /// Recompute the root of `log` at the note's size from the store and report it as
    /// [`Event::RootAt`].
    RootAt {
        /// The log.
        log: LogId,
        /// Its size.
        size: u64,
        /// The signed note to check.
        note: String,
    },
    /// Read stored entries `first..first + received.len()` and report them as
    /// [`Event::Stored`].
    Compare {
        /// The log.
        log: LogId,
        /// First index.
        first: u64,
        /// The verified entries we were sent.
        received: Vec<Vec<u8>>,
    },
    /// Disconnect and refuse the peer for a while.
    Penalise {
        /// Who.
        peer: P,
        /// Why.
        why: String,
    },
    /// Record a conflict (evidence against a log's writer).
    Conflict(Conflict),
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries appended to other members' logs.
    pub replicated: u64,
    /// Messages and responses rejected as invalid.
    pub rejected: u64,
    /// Conflicts recorded.
    pub conflicts: u64,
    /// Checkpoints checked and kept.
    pub checkpoints: u64,
}

/// A pulled range waiting to be applied.
struct Ready<P> {
    peer: P,
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    decoded: Vec<SignedEntry>,
    checkpoint: Option<(Checkpoint, String)>,
}

struct Log<P> {
    origin: String,
    size: u64,
    frontier: Frontier,
    held: Option<Checkpoint>,
    /// Signature-checked checkpoints beyond `size`, by size.
    ahead: BTreeMap<u64, (Checkpoint, String)>,
    /// Range requests in flight: start -> (peer, end).
    inflight: BTreeMap<u64, (P, u64)>,
    /// Answered ranges waiting for their turn: start -> range.
    ready: BTreeMap<u64, Ready<P>>,
    /// The largest checkpoint size each peer has shown us a valid checkpoint for.
    have: BTreeMap<P, u64>,
    frozen: bool,
}

impl<P> Log<P> {
    fn new(origin: String) -> Self {
        Log {
            origin,
            size: 0,
            frontier: Frontier::new(),
            held: None,
            ahead: BTreeMap::new(),
            inflight: BTreeMap::new(),
            ready: BTreeMap::new(),
            have: BTreeMap::new(),
            frozen: false,
        }
    }
    fn target(&self) -> u64 {
        self.ahead.keys().next_back().copied().unwrap_or(0).max(self.size)
    }
}

/// The replication state machine of one node. `P` names peers.
pub struct Replica<P> {
    own: LogId,
    logs: BTreeMap<LogId, Log<P>>,
    connected: BTreeSet<P>,
    in_flight: usize,
    /// Counters.
    pub stats: Stats,
}

impl<P: Clone + Ord + std::fmt::Debug> Replica<P> {
    /// A replica of node whose own log is `own` (never replicated into), following `members`.
    pub fn new(own: LogId, members: &[Member]) -> Self {
        let mut r = Replica {
            own,
            logs: BTreeMap::new(),
            connected: BTreeSet::new(),
            in_flight: 0,
            stats: Stats::default(),
        };
        r.set_members(members);
        r
    }

    /// Replaces the set of followed logs; logs no longer listed are forgotten (their stored
    /// data stays where it is), new ones start empty until [`Replica::load`]ed.
    pub fn set_members(&mut self, members: &[Member]) {
        let keep: BTreeSet<LogId> = members.iter().map(|m| m.log).collect();
        let dropped: Vec<LogId> = self.logs.keys().filter(|l| !keep.contains(l)).copied().collect();
        for l in dropped {
            if let Some(st) = self.logs.remove(&l) {
                self.in_flight = self.in_flight.saturating_sub(st.inflight.len());
            }
        }
        for m in members {
            if m.log == self.own {
                continue;
            }
            self.logs.entry(m.log).or_insert_with(|| Log::new(m.origin.clone())).origin =
                m.origin.clone();
        }
    }

    /// Sets a log's state from the store (at start, or after a failed append).
    pub fn load(&mut self, log: &LogId, state: LogState) {
        if let Some(l) = self.logs.get_mut(log) {
            l.size = state.size;
            l.frontier = state.frontier;
            l.held = state.checkpoint;
            let size = l.size;
            l.ahead.retain(|s, _| *s > size);
            l.ready.clear();
        }
    }

    /// The logs followed.
    pub fn logs(&self) -> Vec<LogId> {
        self.logs.keys().copied().collect()
    }

    /// (size, highest known checkpoint size, frozen) of a followed log.
    pub fn progress(&self, log: &LogId) -> Option<(u64, u64, bool)> {
        self.logs.get(log).map(|l| (l.size, l.target(), l.frozen))
    }

    /// Entries known to exist (by signed checkpoints) that we do not hold yet, over all logs.
    pub fn behind(&self) -> u64 {
        self.logs.values().map(|l| l.target() - l.size).sum()
    }

    /// Peers currently connected.
    pub fn n_connected(&self) -> usize {
        self.connected.len()
    }

    /// Handles one event.
    pub fn handle(&mut self, ev: Event<P>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        match ev {
            Event::Connected(p) => {
                self.connected.insert(p.clone());
                out.push(Action::Request { peer: p, request: Request::Summary });
            }
            Event::Disconnected(p) => {
                self.connected.remove(&p);
                for l in self.logs.values_mut() {
                    l.have.remove(&p);
                }
            }
            Event::Tick => {
                for p in &self.connected {
                    out.push(Action::Request { peer: p.clone(), request: Request::Summary });
                }
                let logs = self.logs();
                for log in logs {
                    self.schedule(&log, &mut out);
                }
            }
            Event::Gossip { from, topic, data } => self.on_gossip(from, topic, &data, &mut out),
            Event::Response { peer, request, result } => match request {
                Request::Summary => self.on_summary(peer, result, &mut out),
                Request::Range { log, start, end } => {
                    self.on_range(peer, log, start, end, result, &mut out)
                }
            },
            Event::RootAt { log, note, root } => self.on_root_at(log, note, root, &mut out),
            Event::Stored { log, first, received, stored } => {
                for (i, (r, s)) in received.iter().zip(&stored).enumerate() {
                    if r != s {
                        let at = first + i as u64;
                        self.conflict(
                            &log,
                            ConflictKind::EntryEntry,
                            at,
                            hex::encode(s),
                            hex::encode(r),
                            &mut out,
                        );
                        break;
                    }
                }
            }
        }
        out
    }

    fn reject(&mut self, peer: P, why: String, out: &mut Vec<Action<P>>) {
        self.stats.rejected += 1;
        out.push(Action::Penalise { peer, why });
    }

    fn conflict(
        &mut self,
        log: &LogId,
        kind: ConflictKind,
        at: u64,
        ours: String,
        theirs: String,
        out: &mut Vec<Action<P>>,
    ) {
        self.stats.conflicts += 1;
        if let Some(l) = self.logs.get_mut(log) {
            l.frozen = true;
            l.ready.clear();
        }
        out.push(Action::Conflict(Conflict { log: *log, kind, at, ours, theirs }));
    }

    fn on_gossip(&mut self, from: P, topic: Topic, data: &[u8], out: &mut Vec<Action<P>>) {
        let verdict = match Gossip::decode(data) {
            Err(e) => {
                self.reject(from, format!("undecodable gossip: {e}"), out);
                Verdict::Reject
            }
            Ok(Gossip::Entries { .. }) if topic != Topic::Entries => {
                self.reject(from, "entries on the checkpoint topic".into(), out);
                Verdict::Reject
            }
            Ok(Gossip::Checkpoint { .. }) if topic != Topic::Checkpoints => {
                self.reject(from, "checkpoint on the entries topic".into(), out);
                Verdict::Reject
            }
            Ok(Gossip::Entries { log, first, entries }) => {
                self.on_gossip_entries(from, log, first, entries, out)
            }
            Ok(Gossip::Checkpoint { log, note }) => {
                if log == self.own {
                    Verdict::Ignore
                } else {
                    match self.consider_checkpoint(&log, &note, out) {
                        Err(why) => {
                            self.reject(from, why, out);
                            Verdict::Reject
                        }
                        Ok(Some(_)) => {
                            self.schedule(&log, out);
                            Verdict::Accept
                        }
                        Ok(None) => Verdict::Ignore,
                    }
                }
            }
        };
        out.push(Action::Verdict(verdict));
    }

    fn on_gossip_entries(
        &mut self,
        from: P,
        log: LogId,
        first: u64,
        entries: Vec<Vec<u8>>,
        out: &mut Vec<Action<P>>,
    ) -> Verdict {
        if log == self.own {
            return Verdict::Ignore;
        }
        // A log we do not follow: not proof of anything. Members learn roster changes at
        // different moments, so an honest peer may be ahead of us (a member just admitted or
        // reinstated); penalising it would cut us off from the very entries that would bring us
        // level. Dropped, and not forwarded.
        let Some(l) = self.logs.get(&log) else {
            return Verdict::Ignore;
        };
        if l.frozen || first > l.size {
            // Out of order (or a frozen log): the pull fills the gap.
            return Verdict::Ignore;
        }
        let (decoded, leaves) = match verify_entries(&log, first, &entries) {
            Ok(v) => v,
            Err(e) => {
                self.reject(from, format!("bad gossip entries: {e}"), out);
                return Verdict::Reject;
            }
        };
        let size = l.size;
        let end = first + entries.len() as u64;
        let overlap = (size.min(end) - first) as usize;
        if overlap > 0 {
            out.push(Action::Compare { log, first, received: entries[..overlap].to_vec() });
        }
        if end <= size {
            return Verdict::Ignore;
        }
        let ready = Ready {
            peer: from,
            entries: entries[overlap..].to_vec(),
            leaves: leaves[overlap..].to_vec(),
            decoded: decoded[overlap..].to_vec(),
            checkpoint: None,
        };
        match self.apply(&log, size, ready, out) {
            Ok(()) => {
                self.schedule(&log, out);
                Verdict::Accept
            }
            Err(()) => Verdict::Ignore,
        }
    }

    /// Checks a checkpoint's form, log and signature; then, if new, either checks it against
    /// our entries (now, or through [`Action::RootAt`]) or remembers it as a target.
    /// Returns `Ok(Some(size))` if it told us something new, `Ok(None)` if not, `Err` if it
    /// is invalid.
    fn consider_checkpoint(
        &mut self,
        log: &LogId,
        note: &str,
        out: &mut Vec<Action<P>>,
    ) -> Result<Option<u64>, String> {
        // A log we do not follow (yet, or any more): ignored, not held against the sender (see
        // `on_gossip_entries`).
        let Some(l) = self.logs.get(log) else {
            return Ok(None);
        };
        let cp = SignedCheckpoint::parse(note).map_err(|e| format!("bad checkpoint: {e}"))?;
        let c = cp.checkpoint().clone();
        if c.origin != l.origin {
            return Err(format!("checkpoint origin {:?} is not the log's", c.origin));
        }
        cp.verify(log, &l.origin).map_err(|e| format!("bad checkpoint signature: {e}"))?;
        if l.frozen || c.size == 0 {
            return Ok(None);
        }
        let held = l.held.clone();
        let size = l.size;
        let root_now = l.frontier.root();
        let known_ahead = l.ahead.get(&c.size).cloned();
        let held_size = held.as_ref().map_or(0, |h| h.size);
        if let Some(h) = held.as_ref().filter(|h| h.size == c.size) {
            if h.root == c.root {
                return Ok(None);
            }
            let ours = format!("checkpoint {} root {}", h.size, h.root.to_hex());
            let kind = ConflictKind::CheckpointCheckpoint;
            self.conflict(log, kind, c.size, ours, note.to_string(), out);
            return Ok(Some(c.size));
        }
        if c.size <= size {
            if c.size < held_size {
                // Older than what we checked already: nothing new.
                return Ok(None);
            }
            if c.size == size {
                self.check_root(log, &c, note, root_now, out);
            } else {
                out.push(Action::RootAt { log: *log, size: c.size, note: note.to_string() });
            }
            return Ok(Some(c.size));
        }
        // Beyond our size: a target, checked when we reach it.
        if let Some((known, known_note)) = known_ahead {
            if known.root == c.root {
                return Ok(None);
            }
            let kind = ConflictKind::CheckpointCheckpoint;
            self.conflict(log, kind, c.size, known_note, note.to_string(), out);
            return Ok(Some(c.size));
        }
        if let Some(l) = self.logs.get_mut(log) {
            l.ahead.insert(c.size, (c.clone(), note.to_string()));
            while l.ahead.len() > MAX_AHEAD {
                // Keep the largest (the target); drop the smallest.
                l.ahead.pop_first();
            }
        }
        Ok(Some(c.size))
    }

    fn check_root(
        &mut self,
        log: &LogId,
        c: &Checkpoint,
        note: &str,
        root: Hash,
        out: &mut Vec<Action<P>>,
    ) {
        if root == c.root {
            self.held_checkpoint(log, c, note, out);
        } else {
            let ours = format!("root {} at size {} from stored entries", root.to_hex(), c.size);
            self.conflict(
                log,
                ConflictKind::CheckpointEntries,
                c.size,
                ours,
                note.to_string(),
                out,
            );
        }
    }

    fn held_checkpoint(
        &mut self,
        log: &LogId,
        c: &Checkpoint,
        note: &str,
        out: &mut Vec<Action<P>>,
    ) {
        if let Some(l) = self.logs.get_mut(log) {
            if l.held.as_ref().is_none_or(|h| h.size < c.size) {
                l.held = Some(c.clone());
            }
        }
        self.stats.checkpoints += 1;
        out.push(Action::StoreCheckpoint { log: *log, size: c.size, note: note.to_string() });
    }

    fn on_root_at(&mut self, log: LogId, note: String, root: Hash, out: &mut Vec<Action<P>>) {
        let Ok(cp) = SignedCheckpoint::parse(&note) else { return };
        if self.logs.get(&log).is_none_or(|l| l.frozen) {
            return;
        }
        let c = cp.checkpoint().clone();
        self.check_root(&log, &c, &note, root, out);
    }

    fn on_summary(&mut self, peer: P, result: Result<Vec<u8>, String>, out: &mut Vec<Action<P>>) {
        let Ok(bytes) = result else { return };
        let heads = match Response::decode(&bytes) {
            Ok(Response::Summary(h)) => h,
            Ok(Response::Refused(_)) => return,
            Ok(_) => return self.reject(peer, "summary answered with a range".into(), out),
            Err(e) => return self.reject(peer, format!("undecodable summary: {e}"), out),
        };
        for h in heads {
            if h.log == self.own || !self.logs.contains_key(&h.log) {
                continue;
            }
            let Some(note) = h.checkpoint else { continue };
            match self.consider_checkpoint(&h.log, &note, out) {
                Err(why) => return self.reject(peer, why, out),
                Ok(_) => {
                    // The note parsed and verified: the peer holds at least its size.
                    let size =
                        SignedCheckpoint::parse(&note).map(|c| c.checkpoint().size).unwrap_or(0);
                    if let Some(l) = self.logs.get_mut(&h.log) {
                        let e = l.have.entry(peer.clone()).or_insert(0);
                        *e = (*e).max(size);
                    }
                    self.schedule(&h.log, out);
                }
            }
        }
    }

    fn on_range(
        &mut self,
        peer: P,
        log: LogId,
        start: u64,
        end: u64,
        result: Result<Vec<u8>, String>,
        out: &mut Vec<Action<P>>,
    ) {
        let Some(l) = self.logs.get_mut(&log) else { return };
        if l.inflight.remove(&start).is_some() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let failed = |s: &mut Self, out: &mut Vec<Action<P>>| {
            // Do not ask this peer again for this log until its next summary.
            if let Some(l) = s.logs.get_mut(&log) {
                l.have.remove(&peer);
            }
            s.schedule(&log, out);
        };
        let bytes = match result {
            Ok(b) => b,
            Err(_) => return failed(self, out),
        };
        let (entries, note) = match Response::decode(&bytes) {
            Ok(Response::Range { entries, checkpoint }) => (entries, checkpoint),
            Ok(Response::Refused(_)) => return failed(self, out),
            Ok(_) => {
                self.reject(peer.clone(), "range answered with a summary".into(), out);
                return failed(self, out);
            }
            Err(e) => {
                self.reject(peer.clone(), format!("undecodable range: {e}"), out);
                return failed(self, out);
            }
        };
        if entries.is_empty() {
            return failed(self, out);
        }
        if entries.len() as u64 > end.saturating_sub(start) {
            self.reject(peer.clone(), "range response longer than asked".into(), out);
            return failed(self, out);
        }
        let (decoded, leaves) = match verify_entries(&log, start, &entries) {
            Ok(v) => v,
            Err(e) => {
                self.reject(peer.clone(), format!("bad range entries: {e}"), out);
                return failed(self, out);
            }
        };
        let checkpoint = match note {
            None => None,
            Some(note) => match self.check_range_checkpoint(&log, start, entries.len(), &note) {
                Ok(c) => Some((c, note)),
                Err(why) => {
                    self.reject(peer.clone(), why, out);
                    return failed(self, out);
                }
            },
        };
        if let Some(l) = self.logs.get_mut(&log) {
            if !l.frozen && start + entries.len() as u64 > l.size {
                l.ready.insert(start, Ready { peer, entries, leaves, decoded, checkpoint });
            }
        }
        self.drain(&log, out);
        self.schedule(&log, out);
    }

    fn check_range_checkpoint(
        &self,
        log: &LogId,
        start: u64,
        n: usize,
        note: &str,
    ) -> Result<Checkpoint, String> {
        let l = self.logs.get(log).ok_or("not a member's log")?;
        let cp = SignedCheckpoint::parse(note).map_err(|e| format!("bad checkpoint: {e}"))?;
        let c = cp.checkpoint().clone();
        if c.origin != l.origin {
            return Err("range checkpoint of another origin".into());
        }
        cp.verify(log, &l.origin).map_err(|e| format!("bad checkpoint signature: {e}"))?;
        if c.size <= start || c.size > start + n as u64 {
            return Err(format!("range checkpoint size {} outside the range", c.size));
        }
        Ok(c)
    }

    /// Applies ready ranges that start at or before our size, in order.
    fn drain(&mut self, log: &LogId, out: &mut Vec<Action<P>>) {
        loop {
            let Some(l) = self.logs.get_mut(log) else { return };
            if l.frozen {
                l.ready.clear();
                return;
            }
            let size = l.size;
            let Some((&start, _)) = l.ready.first_key_value() else { return };
            if start > size {
                return;
            }
            let Some((_, mut r)) = l.ready.pop_first() else { return };
            let end = start + r.entries.len() as u64;
            if end <= size {
                continue;
            }
            let skip = (size - start) as usize;
            if skip > 0 {
                out.push(Action::Compare {
                    log: *log,
                    first: start,
                    received: r.entries[..skip].to_vec(),
                });
                r.entries.drain(..skip);
                r.leaves.drain(..skip);
                r.decoded.drain(..skip);
            }
            let _ = self.apply(log, size, r, out);
        }
    }

    /// Appends verified entries starting at `first == size`, checking every checkpoint we
    /// know of (and the range's own) whose size they reach. On a mismatch nothing is
    /// appended, the conflict is recorded, and a peer that sent the mismatching checkpoint
    /// with the range is penalised.
    fn apply(
        &mut self,
        log: &LogId,
        first: u64,
        r: Ready<P>,
        out: &mut Vec<Action<P>>,
    ) -> Result<(), ()> {
        let Some(l) = self.logs.get(log) else { return Err(()) };
        if first != l.size {
            return Err(());
        }
        let mut frontier = l.frontier.clone();
        let mut scratch = Vec::new();
        let mut matched: Vec<(Checkpoint, String)> = Vec::new();
        // (size, our root, their note, whether the note came with the range)
        let mut mismatch: Option<(u64, Hash, String, bool)> = None;
        'leaves: for leaf in &r.leaves {
            scratch.clear();
            frontier.push(*leaf, &mut scratch);
            let size = frontier.size();
            // The range's own checkpoint first, so a mismatch is blamed on the sender.
            let from_ahead = l.ahead.get(&size).map(|(c, n)| (c, n, false));
            let from_range =
                r.checkpoint.as_ref().filter(|(c, _)| c.size == size).map(|(c, n)| (c, n, true));
            for (c, note, with_range) in from_range.into_iter().chain(from_ahead) {
                let root = frontier.root();
                if c.root != root {
                    mismatch = Some((size, root, note.clone(), with_range));
                    break 'leaves;
                }
                matched.push((c.clone(), note.clone()));
            }
        }
        if let Some((size, root, note, with_range)) = mismatch {
            if with_range {
                let why = format!("range does not match its checkpoint at size {size}");
                self.reject(r.peer.clone(), why, out);
            }
            let ours = format!("root {} at size {size} from signed entries", root.to_hex());
            self.conflict(log, ConflictKind::CheckpointEntries, size, ours, note, out);
            return Err(());
        }
        let n = r.decoded.len() as u64;
        out.push(Action::Append { log: *log, entries: r.decoded });
        self.stats.replicated += n;
        if let Some(l) = self.logs.get_mut(log) {
            l.size = frontier.size();
            l.frontier = frontier;
            let size = l.size;
            l.ahead.retain(|s, _| *s > size);
        }
        for (c, note) in matched {
            self.held_checkpoint(log, &c, &note, out);
        }
        Ok(())
    }

    /// Sends range requests towards the log's target while there is room.
    fn schedule(&mut self, log: &LogId, out: &mut Vec<Action<P>>) {
        let Some(l) = self.logs.get_mut(log) else { return };
        if l.frozen {
            return;
        }
        let target = l.target();
        while self.in_flight < MAX_IN_FLIGHT && l.inflight.len() + l.ready.len() < PIPELINE {
            // The first index at or past our size covered by no request in flight or range
            // waiting.
            let mut from = l.size;
            let mut next_covered = u64::MAX;
            let mut covered: Vec<(u64, u64)> = l
                .inflight
                .iter()
                .map(|(s, (_, e))| (*s, *e))
                .chain(l.ready.iter().map(|(s, r)| (*s, s + r.entries.len() as u64)))
                .collect();
            covered.sort_unstable();
            for (s, e) in covered {
                if s <= from {
                    from = from.max(e);
                } else {
                    next_covered = s;
                    break;
                }
            }
            if from >= target {
                return;
            }
            let want = target.min(next_covered).min(from + MAX_RANGE_ENTRIES);
            let candidates: Vec<(&P, u64)> = l
                .have
                .iter()
                .filter(|(p, h)| **h > from && self.connected.contains(*p))
                .map(|(p, h)| (p, *h))
                .collect();
            if candidates.is_empty() {
                return;
            }
            let pick = ((from / MAX_RANGE_ENTRIES) as usize) % candidates.len();
            let (peer, has) = candidates[pick];
            let peer = peer.clone();
            let end = want.min(has);
            l.inflight.insert(from, (peer.clone(), end));
            self.in_flight += 1;
            out.push(Action::Request {
                peer,
                request: Request::Range { log: *log, start: from, end },
            });
        }
    }
}

#[cfg(test)]
mod tests;
