//! The node's storage layer: the [`Store`] trait every backend implements, its key and error
//! types, and [`LogNodes`], which lets a store serve Merkle proofs.
//!
//! Two backends: [`SledStore`] (on disk, the one a node runs) and [`MemoryStore`] (its
//! in-memory twin for tests). Both pass the one shared suite in [`conformance`].
//!
//! Invariants every backend keeps:
//! - an append returns only once its entries are durable, and readers see all of it or none;
//!   a crash before it returns may keep a prefix of its entries (signed, never acknowledged),
//!   never a gap or a half-written entry;
//! - the stored size, entries and Merkle nodes of a log always agree, so the frontier can be
//!   rebuilt from stored nodes at any time;
//! - the store checks positions (log and index) but not signatures: callers verify entries
//!   before they append them (the disk store relies on it: after a crash it keeps unrecorded
//!   entries only while their signatures verify).

pub mod conformance;
mod memory;
mod runs;
mod segment;
mod sled;

pub use self::memory::MemoryStore;
pub use self::sled::SledStore;

use ringlog_protocol::merkle::NodeSource;
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::{sha256, Hash, LogId};

/// Most results [`Store::search`] returns for one key; the first ones in the store's order.
pub const SEARCH_LIMIT: usize = 4096;
/// Largest checkpoint note a store keeps, in bytes (a note with many cosignatures is ~2 KiB).
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Longest meta key, in bytes.
pub const MAX_META_KEY: usize = 256;
/// Largest meta value, in bytes.
pub const MAX_META_VALUE: usize = 1024 * 1024;

/// A key of the secondary index: which hop records mention a fingerprint, body, part or queue id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKey {
    /// The message fingerprint (`HopRecord::mfp1`).
    Mfp1(Hash),
    /// The fingerprint without Message-ID and Date (`HopRecord::mfp1_lite`).
    Mfp1Lite(Hash),
    /// The body hash (`HopRecord::body`).
    Body(Hash),
    /// One body part hash (`HopRecord::parts`).
    Part(Hash),
    /// A queue id in the writer's own log (`HopRecord::queue_id`, when not empty).
    QueueId(LogId, String),
    /// The input fingerprint of a transforming hop (`HopRecord::transform`'s `input`), so a
    /// trace can follow a message through a mailing list from the message as received.
    TransformIn(Hash),
}

impl IndexKey {
    /// The index keys of a stored entry: mfp1, mfp1-lite, body, every part, (its log, queue
    /// id) when the queue id is not empty, and the transform input when the hop transformed the
    /// message. Entries that are not hop records have none.
    pub fn of(entry: &SignedEntry) -> Vec<IndexKey> {
        let Some(hop) = entry.hop() else { return Vec::new() };
        let mut keys = Vec::with_capacity(4 + hop.parts.len());
        keys.push(IndexKey::Mfp1(hop.mfp1));
        keys.push(IndexKey::Mfp1Lite(hop.mfp1_lite));
        keys.push(IndexKey::Body(hop.body));
        keys.extend(hop.parts.iter().map(|p| IndexKey::Part(*p)));
        if !hop.queue_id.is_empty() {
            keys.push(IndexKey::QueueId(entry.entry.log, hop.queue_id.clone()));
        }
        if let Some(t) = &hop.transform {
            keys.push(IndexKey::TransformIn(t.input));
        }
        keys
    }

    /// A one-byte tag per kind, for compact keys.
    fn tag(&self) -> u8 {
        match self {
            IndexKey::Mfp1(_) => 1,
            IndexKey::Mfp1Lite(_) => 2,
            IndexKey::Body(_) => 3,
            IndexKey::Part(_) => 4,
            IndexKey::QueueId(..) => 5,
            IndexKey::TransformIn(_) => 6,
        }
    }

    /// A uniformly spread 8-byte digest of the key: the first bytes of the hash itself, or of
    /// SHA-256(log || queue id). Backends that key on it check each hit against the entry.
    fn digest8(&self) -> [u8; 8] {
        let h = match self {
            IndexKey::Mfp1(h)
            | IndexKey::Mfp1Lite(h)
            | IndexKey::Body(h)
            | IndexKey::Part(h)
            | IndexKey::TransformIn(h) => *h,
            IndexKey::QueueId(log, q) => sha256(&[&log.0 .0, q.as_bytes()]),
        };
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.0[..8]);
        out
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The database reported an error (I/O, lock held by another process, ...).
    #[error("database error: {0}")]
    Sled(String),
    /// Stored data is inconsistent or does not decode; the store refuses to go on.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// An appended entry is not at the next position of the log.
    #[error("entry has index {found}, expected {expected}")]
    NotConsecutive {
        /// The index the entry had to have.
        expected: u64,
        /// The index it has.
        found: u64,
    },
    /// An appended entry belongs to another log.
    #[error("entry belongs to log {found}, not to log {expected}")]
    WrongLog {
        /// The log appended to.
        expected: LogId,
        /// The log named in the entry.
        found: LogId,
    },
    /// A Merkle node that must exist for the requested tree is missing.
    #[error("missing merkle node at level {level}, index {index}")]
    MissingNode {
        /// Level of the node (0 = leaves).
        level: u8,
        /// Index of the node within its level.
        index: u64,
    },
    /// A value is larger than the store accepts.
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store holds more logs than it can number.
    #[error("too many logs")]
    TooManyLogs,
    /// An earlier write failed half-way; the store takes no more writes until it is reopened.
    #[error("store failed earlier and must be reopened")]
    Failed,
}

/// A node's durable state: member logs with their Merkle nodes, checkpoints, a secondary index
/// over hop records, and a small key-value area for node state.
pub trait Store: Send + Sync + 'static {
    /// Appends signed entries to `log` at its current size with their Merkle nodes and index
    /// keys, visible to readers all at once, and makes them durable before returning (see the
    /// module invariants for what a crash may keep). Entries must belong to `log` and
    /// be consecutive from the current size (`entries[i].entry.index == size + i`); otherwise
    /// the call fails and nothing is written. Signatures are not checked here. Returns the new
    /// size.
    fn append(&self, log: &LogId, entries: &[SignedEntry]) -> Result<u64, Error>;
    /// Number of entries in `log` (0 for an unknown log).
    fn size(&self, log: &LogId) -> Result<u64, Error>;
    /// Every log with entries or checkpoints, in ascending order.
    fn logs(&self) -> Result<Vec<LogId>, Error>;
    /// The stored bytes ([`SignedEntry::encode`]) of entry `index`.
    fn entry(&self, log: &LogId, index: u64) -> Result<Option<Vec<u8>>, Error>;
    /// Stored bytes of entries `start..end`, cut at the log's size. The caller bounds the range.
    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error>;
    /// The hash of the perfect subtree at `level`, `index` (see
    /// [`NodeSource`](ringlog_protocol::merkle::NodeSource)); `None` unless it is complete.
    fn node(&self, log: &LogId, level: u8, index: u64) -> Result<Option<Hash>, Error>;
    /// Keeps the checkpoint note of `log` at `size`, replacing any note kept for that size (a
    /// note with more cosignatures supersedes the last). The size need not be stored yet.
    fn put_checkpoint(&self, log: &LogId, size: u64, note: &str) -> Result<(), Error>;
    /// The checkpoint note kept for `log` at `size`.
    fn checkpoint(&self, log: &LogId, size: u64) -> Result<Option<String>, Error>;
    /// The checkpoint of `log` with the largest size.
    fn latest_checkpoint(&self, log: &LogId) -> Result<Option<(u64, String)>, Error>;
    /// Every checkpoint of `log`, by ascending size.
    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, Error>;
    /// Positions of the hop records with this index key: by log in the order the store first
    /// saw the logs, then by index; at most [`SEARCH_LIMIT`] (which ones, when there are more,
    /// is not specified). A disk store keys its index on an
    /// 8-byte digest and checks hits against the entries: if a writer crafted many values that
    /// share that digest with `key`, it may return fewer results than exist.
    fn search(&self, key: &IndexKey) -> Result<Vec<(LogId, u64)>, Error>;
    /// A value of the node's own state.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Sets a value of the node's own state, durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), Error>;
}

/// One log of a store seen as a [`NodeSource`], so proofs can be computed from stored nodes.
pub struct LogNodes<'a, S: ?Sized> {
    store: &'a S,
    log: LogId,
}

impl<'a, S: Store + ?Sized> LogNodes<'a, S> {
    /// The nodes of `log` in `store`.
    pub fn new(store: &'a S, log: LogId) -> Self {
        Self { store, log }
    }
}

impl<S: Store + ?Sized> NodeSource for LogNodes<'_, S> {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        self.store.node(&self.log, level, index)?.ok_or(Error::MissingNode { level, index })
    }
}

/// Checks that `entries` can be appended to `log` at `size`.
fn check_append(log: &LogId, size: u64, entries: &[SignedEntry]) -> Result<(), Error> {
    for (i, e) in entries.iter().enumerate() {
        if e.entry.log != *log {
            return Err(Error::WrongLog { expected: *log, found: e.entry.log });
        }
        let expected = size
            .checked_add(i as u64)
            .ok_or(Error::NotConsecutive { expected: u64::MAX, found: e.entry.index })?;
        if e.entry.index != expected {
            return Err(Error::NotConsecutive { expected, found: e.entry.index });
        }
    }
    Ok(())
}

fn check_note(note: &str) -> Result<(), Error> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(Error::TooLarge {
            what: "checkpoint note",
            len: note.len(),
            max: MAX_NOTE_BYTES,
        });
    }
    Ok(())
}

fn check_meta(key: &str, value: &[u8]) -> Result<(), Error> {
    if key.len() > MAX_META_KEY {
        return Err(Error::TooLarge { what: "meta key", len: key.len(), max: MAX_META_KEY });
    }
    if value.len() > MAX_META_VALUE {
        return Err(Error::TooLarge { what: "meta value", len: value.len(), max: MAX_META_VALUE });
    }
    Ok(())
}

/// A lock was poisoned: a thread panicked half-way through a write.
fn poisoned<T>(_: T) -> Error {
    Error::Failed
}
