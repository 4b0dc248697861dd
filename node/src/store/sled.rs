//! [`SledStore`]: the on-disk [`Store`], one sled tree with prefixed, big-endian keys.
//!
//! Every write is one `apply_batch` followed by `Db::flush`, so a crash never leaves part of an
//! append, and an acknowledged write is on disk. Key layout (`n` = the 4-byte number the store
//! gives each log, all integers big-endian so ranges sort):
//!
//! | key                                            | value                       |
//! |------------------------------------------------|-----------------------------|
//! | `V`                                            | format version (u32)        |
//! | `L` log id (32)                                | `n`                         |
//! | `S` n                                          | size (u64)                  |
//! | `E` n index(8)                                 | entry bytes                 |
//! | `H` n level(1) index(8)                        | node hash (levels 1 and up) |
//! | `C` n size(8)                                  | checkpoint note             |
//! | `I` tag(1) digest(8) n index(8)                | empty                       |
//! | `M` key                                        | meta value                  |
//!
//! Leaf hashes (level 0) are not stored: they are recomputed from the entry. Index keys carry
//! an 8-byte digest of the searched value, and every hit is checked against the entry itself.

use super::{check_append, check_meta, check_note, poisoned, Error, IndexKey, Store, SEARCH_LIMIT};
use ringlog_protocol::merkle::{leaf_hash, Frontier, NodeSource};
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::{Hash, LogId, PublicKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

/// Version of the key layout above; a store with another version is refused.
const FORMAT_VERSION: u32 = 1;
/// Most index keys one search reads (see [`Store::search`] on digest collisions).
const SEARCH_SCAN_LIMIT: usize = 4 * SEARCH_LIMIT;
/// sled's page cache: enough for the hot right edge of every log and the index.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The store a node runs: a sled database in one directory.
pub struct SledStore {
    db: ::sled::Db,
    /// Log numbers; grows only after the write that assigns a number is durable.
    table: RwLock<Table>,
    /// Serialises writers; holds each log's frontier as of its durable size.
    writer: Mutex<HashMap<u32, Frontier>>,
    /// Set when a write failed half-way; cleared only by reopening.
    failed: AtomicBool,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<LogId, u32>,
    by_num: Vec<LogId>,
}

fn db_err(e: ::sled::Error) -> Error {
    Error::Sled(e.to_string())
}

fn key_l(log: &LogId) -> Vec<u8> {
    [&b"L"[..], &log.0 .0].concat()
}

fn key_s(n: u32) -> Vec<u8> {
    [&b"S"[..], &n.to_be_bytes()].concat()
}

fn key_e(n: u32, index: u64) -> Vec<u8> {
    [&b"E"[..], &n.to_be_bytes(), &index.to_be_bytes()].concat()
}

fn key_h(n: u32, level: u8, index: u64) -> Vec<u8> {
    [&b"H"[..], &n.to_be_bytes(), &[level], &index.to_be_bytes()].concat()
}

fn prefix_c(n: u32) -> Vec<u8> {
    [&b"C"[..], &n.to_be_bytes()].concat()
}

fn key_c(n: u32, size: u64) -> Vec<u8> {
    [&prefix_c(n)[..], &size.to_be_bytes()].concat()
}

fn prefix_i(key: &IndexKey) -> Vec<u8> {
    [&b"I"[..], &[key.tag()], &key.digest8()].concat()
}

fn key_i(key: &IndexKey, n: u32, index: u64) -> Vec<u8> {
    [&prefix_i(key)[..], &n.to_be_bytes(), &index.to_be_bytes()].concat()
}

fn key_m(key: &str) -> Vec<u8> {
    [&b"M"[..], key.as_bytes()].concat()
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, Error> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("{what} is not 8 bytes")))
}

fn be_u32(bytes: &[u8], what: &str) -> Result<u32, Error> {
    <[u8; 4]>::try_from(bytes)
        .map(u32::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("{what} is not 4 bytes")))
}

/// The Merkle nodes of log number `n`, read straight from the database.
struct Nodes<'a> {
    store: &'a SledStore,
    n: u32,
}

impl NodeSource for Nodes<'_> {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        self.store.node_of(self.n, level, index)?.ok_or(Error::MissingNode { level, index })
    }
}

/// Opens the database, waiting a little for its file lock: sled releases the lock from a
/// background thread after the last handle is dropped, so a reopen in the same process can
/// race it. A lock held by another process still fails, after about a second.
fn open_db(path: &Path) -> Result<::sled::Db, Error> {
    let mut tries = 0;
    loop {
        let opened = ::sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .mode(::sled::Mode::LowSpace)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if tries < 50 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(db_err(e)),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in directory `path` and checks every log's size, last entry
    /// and right edge of the tree; a store that fails the check is refused with
    /// [`Error::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        // sled silently starts afresh on a data file it cannot recover: remember whether there
        // was one, so that an existing store never comes back empty.
        let existed = std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0);
        let db = open_db(path)?;
        match db.get(b"V").map_err(db_err)? {
            None => {
                if existed || db.iter().next().is_some() {
                    return Err(Error::Corrupt(format!(
                        "{} holds a database without a ringlog format version (unreadable, \
                         or another program's); remove it only if it holds nothing of value",
                        path.display()
                    )));
                }
                db.insert(b"V", &FORMAT_VERSION.to_be_bytes()).map_err(db_err)?;
                db.flush().map_err(db_err)?;
            }
            Some(v) => {
                let v = be_u32(&v, "format version")?;
                if v != FORMAT_VERSION {
                    return Err(Error::Corrupt(format!(
                        "format version {v}, this build reads {FORMAT_VERSION}"
                    )));
                }
            }
        }
        let store = Self {
            db,
            table: RwLock::new(Table::default()),
            writer: Mutex::new(HashMap::new()),
            failed: AtomicBool::new(false),
        };
        store.load()?;
        Ok(store)
    }

    /// Reads the log table and checks every log.
    fn load(&self) -> Result<(), Error> {
        let mut nums = Vec::new();
        for kv in self.db.scan_prefix(b"L") {
            let (k, v) = kv.map_err(db_err)?;
            let log = Hash::from_slice(&k[1..])
                .map(PublicKey)
                .ok_or_else(|| Error::Corrupt("log key is not 32 bytes".into()))?;
            nums.push((be_u32(&v, "log number")?, log));
        }
        nums.sort();
        let mut table = Table::default();
        for (i, (n, log)) in nums.into_iter().enumerate() {
            if n as usize != i {
                return Err(Error::Corrupt(format!("log numbers are not dense at {n}")));
            }
            table.by_id.insert(log, n);
            table.by_num.push(log);
        }
        let mut frontiers = HashMap::new();
        for (n, log) in table.by_num.iter().enumerate() {
            let n = n as u32;
            let size = self.size_of(n)?;
            let last =
                self.db.scan_prefix(&key_e(n, 0)[..5]).next_back().transpose().map_err(db_err)?;
            match (size, last) {
                (0, None) => {}
                (0, Some(_)) => {
                    return Err(Error::Corrupt(format!("log {log} has entries but size 0")))
                }
                (_, None) => {
                    return Err(Error::Corrupt(format!("log {log} has size {size} but no entries")))
                }
                (size, Some((k, v))) => {
                    let index = be_u64(&k[5..], "entry key")?;
                    if index != size - 1 {
                        return Err(Error::Corrupt(format!(
                            "log {log} has size {size} but its last entry is {index}"
                        )));
                    }
                    let e = SignedEntry::decode(&v)
                        .map_err(|e| Error::Corrupt(format!("entry {index} of {log}: {e}")))?;
                    if e.entry.log != *log || e.entry.index != index {
                        return Err(Error::Corrupt(format!(
                            "entry {index} of {log} is stored at the wrong place"
                        )));
                    }
                }
            }
            let f = Frontier::from_source(&Nodes { store: self, n }, size)
                .map_err(|e| Error::Corrupt(format!("log {log}: {e}")))?;
            frontiers.insert(n, f);
        }
        *self.table.write().map_err(poisoned)? = table;
        *self.writer.lock().map_err(poisoned)? = frontiers;
        Ok(())
    }

    fn num(&self, log: &LogId) -> Result<Option<u32>, Error> {
        Ok(self.table.read().map_err(poisoned)?.by_id.get(log).copied())
    }

    fn size_of(&self, n: u32) -> Result<u64, Error> {
        match self.db.get(key_s(n)).map_err(db_err)? {
            None => Ok(0),
            Some(v) => be_u64(&v, "log size"),
        }
    }

    fn node_of(&self, n: u32, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        if level == 0 {
            return Ok(self.db.get(key_e(n, index)).map_err(db_err)?.map(|v| leaf_hash(&v)));
        }
        match self.db.get(key_h(n, level, index)).map_err(db_err)? {
            None => Ok(None),
            Some(v) => Hash::from_slice(&v)
                .map(Some)
                .ok_or_else(|| Error::Corrupt("merkle node is not 32 bytes".into())),
        }
    }

    /// The number of `log`, or the number a first write to it would take.
    fn num_for_write(&self, log: &LogId) -> Result<(u32, bool), Error> {
        let table = self.table.read().map_err(poisoned)?;
        match table.by_id.get(log) {
            Some(n) => Ok((*n, false)),
            None => {
                u32::try_from(table.by_num.len()).map(|n| (n, true)).map_err(|_| Error::TooManyLogs)
            }
        }
    }

    /// Applies `batch` atomically and flushes. After an error here the store refuses further
    /// writes: the in-memory state of the database may be ahead of the disk.
    fn write(&self, batch: ::sled::Batch) -> Result<(), Error> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Failed);
        }
        let res = self.db.apply_batch(batch).and_then(|()| self.db.flush().map(|_| ()));
        res.map_err(|e| {
            self.failed.store(true, Ordering::SeqCst);
            db_err(e)
        })
    }

    /// Records a newly numbered log, once the write that numbered it is durable.
    fn register(&self, log: &LogId, n: u32) -> Result<(), Error> {
        let mut table = self.table.write().map_err(poisoned)?;
        table.by_id.insert(*log, n);
        table.by_num.push(*log);
        Ok(())
    }
}

impl Store for SledStore {
    fn append(&self, log: &LogId, entries: &[SignedEntry]) -> Result<u64, Error> {
        let mut frontiers = self.writer.lock().map_err(poisoned)?;
        let (n, new) = self.num_for_write(log)?;
        let size = if new { 0 } else { self.size_of(n)? };
        check_append(log, size, entries)?;
        if entries.is_empty() {
            return Ok(size);
        }
        // Work on a copy: the cached frontier moves only once the batch is durable.
        let mut frontier = match frontiers.get(&n) {
            Some(f) if f.size() == size => f.clone(),
            _ => Frontier::from_source(&Nodes { store: self, n }, size)?,
        };
        let mut batch = ::sled::Batch::default();
        if new {
            batch.insert(key_l(log), &n.to_be_bytes());
        }
        let mut nodes = Vec::new();
        for e in entries {
            let index = e.entry.index;
            let bytes = e.encode();
            nodes.clear();
            frontier.push(leaf_hash(&bytes), &mut nodes);
            for (level, i, h) in &nodes {
                if *level > 0 {
                    batch.insert(key_h(n, *level, *i), &h.0);
                }
            }
            for k in IndexKey::of(e) {
                batch.insert(key_i(&k, n, index), &[]);
            }
            batch.insert(key_e(n, index), bytes);
        }
        let new_size = frontier.size();
        batch.insert(key_s(n), &new_size.to_be_bytes());
        self.write(batch)?;
        if new {
            self.register(log, n)?;
        }
        frontiers.insert(n, frontier);
        Ok(new_size)
    }

    fn size(&self, log: &LogId) -> Result<u64, Error> {
        match self.num(log)? {
            None => Ok(0),
            Some(n) => self.size_of(n),
        }
    }

    fn logs(&self) -> Result<Vec<LogId>, Error> {
        let mut logs = self.table.read().map_err(poisoned)?.by_num.clone();
        logs.sort();
        Ok(logs)
    }

    fn entry(&self, log: &LogId, index: u64) -> Result<Option<Vec<u8>>, Error> {
        let Some(n) = self.num(log)? else { return Ok(None) };
        Ok(self.db.get(key_e(n, index)).map_err(db_err)?.map(|v| v.to_vec()))
    }

    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
        let Some(n) = self.num(log)? else { return Ok(Vec::new()) };
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (expected, kv) in (start..).zip(self.db.range(key_e(n, start)..key_e(n, end))) {
            let (k, v) = kv.map_err(db_err)?;
            if be_u64(&k[5..], "entry key")? != expected {
                return Err(Error::Corrupt(format!("entry {expected} of {log} is missing")));
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    fn node(&self, log: &LogId, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        match self.num(log)? {
            None => Ok(None),
            Some(n) => self.node_of(n, level, index),
        }
    }

    fn put_checkpoint(&self, log: &LogId, size: u64, note: &str) -> Result<(), Error> {
        check_note(note)?;
        let _writer = self.writer.lock().map_err(poisoned)?;
        let (n, new) = self.num_for_write(log)?;
        let mut batch = ::sled::Batch::default();
        if new {
            batch.insert(key_l(log), &n.to_be_bytes());
        }
        batch.insert(key_c(n, size), note.as_bytes());
        self.write(batch)?;
        if new {
            self.register(log, n)?;
        }
        Ok(())
    }

    fn checkpoint(&self, log: &LogId, size: u64) -> Result<Option<String>, Error> {
        let Some(n) = self.num(log)? else { return Ok(None) };
        match self.db.get(key_c(n, size)).map_err(db_err)? {
            None => Ok(None),
            Some(v) => note_text(&v).map(Some),
        }
    }

    fn latest_checkpoint(&self, log: &LogId) -> Result<Option<(u64, String)>, Error> {
        let Some(n) = self.num(log)? else { return Ok(None) };
        match self.db.scan_prefix(prefix_c(n)).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(db_err)?;
                Ok(Some((be_u64(&k[5..], "checkpoint key")?, note_text(&v)?)))
            }
        }
    }

    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, Error> {
        let Some(n) = self.num(log)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix_c(n)) {
            let (k, v) = kv.map_err(db_err)?;
            out.push((be_u64(&k[5..], "checkpoint key")?, note_text(&v)?));
        }
        Ok(out)
    }

    fn search(&self, key: &IndexKey) -> Result<Vec<(LogId, u64)>, Error> {
        let prefix = prefix_i(key);
        let mut out = Vec::new();
        // A hostile writer can fill a log with values that share a digest with another value
        // but differ after it: bound the hits checked, not just the ones returned.
        for kv in self.db.scan_prefix(&prefix).take(SEARCH_SCAN_LIMIT) {
            if out.len() >= SEARCH_LIMIT {
                break;
            }
            let (k, _) = kv.map_err(db_err)?;
            let rest = &k[prefix.len()..];
            if rest.len() != 12 {
                return Err(Error::Corrupt("index key of the wrong length".into()));
            }
            let n = be_u32(&rest[..4], "index key")?;
            let index = be_u64(&rest[4..], "index key")?;
            let log = self
                .table
                .read()
                .map_err(poisoned)?
                .by_num
                .get(n as usize)
                .copied()
                .ok_or_else(|| Error::Corrupt(format!("index names unknown log number {n}")))?;
            let bytes = self
                .db
                .get(key_e(n, index))
                .map_err(db_err)?
                .ok_or_else(|| Error::Corrupt(format!("index names missing entry {index}")))?;
            let e = SignedEntry::decode(&bytes)
                .map_err(|e| Error::Corrupt(format!("entry {index} of {log}: {e}")))?;
            // The key holds only a digest: keep the hit only if the entry really has the key.
            if IndexKey::of(&e).contains(key) {
                out.push((log, index));
            }
        }
        Ok(out)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(key_m(key)).map_err(db_err)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        check_meta(key, value)?;
        let _writer = self.writer.lock().map_err(poisoned)?;
        let mut batch = ::sled::Batch::default();
        batch.insert(key_m(key), value);
        self.write(batch)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }
}

fn note_text(v: &[u8]) -> Result<String, Error> {
    String::from_utf8(v.to_vec()).map_err(|_| Error::Corrupt("checkpoint note is not utf-8".into()))
}

impl SledStore {
    /// Fault injection for the tests of `ringlog node check` and `ringlog audit`: flips bit
    /// `bit` (modulo the length) of a stored entry in place, bypassing every check. The node
    /// itself never calls this.
    pub fn danger_flip_entry_bit(&self, log: &LogId, index: u64, bit: usize) -> Result<(), Error> {
        let n = self.num(log)?.ok_or_else(|| Error::Corrupt("no such log".into()))?;
        let key = key_e(n, index);
        let mut v = self
            .db
            .get(&key)
            .map_err(db_err)?
            .ok_or_else(|| Error::Corrupt("no such entry".into()))?
            .to_vec();
        let i = (bit / 8) % v.len().max(1);
        if let Some(b) = v.get_mut(i) {
            *b ^= 1 << (bit % 8);
        }
        self.db.insert(key, v).map_err(db_err)?;
        self.db.flush().map_err(db_err)?;
        Ok(())
    }
}
