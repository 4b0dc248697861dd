//! [`SledStore`]: the on-disk [`Store`]. Entries and Merkle nodes live in append-only files
//! per log ([`segment`](super::segment)), the secondary index in sorted run files
//! ([`runs`](super::runs)), and a sled database holds the rest: the log table, each log's
//! committed size (a lower bound, recorded lazily: the commit point is the entries file's
//! sync), checkpoints, node state, and the list of index runs. Layout of a store directory:
//!
//! | path          | what                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | `db`, `conf`, `blobs/`, `snap.*` | the sled database                                  |
//! | `logs/`       | `n.entries`, `n.offsets`, `n.l1`, `n.l2`, ... per log number `n`      |
//! | `index/`      | `*.run`: immutable sorted index runs                                 |
//!
//! Keys in sled (`n` = the 4-byte number the store gives each log; integers big-endian):
//!
//! | key                 | value                                                          |
//! |---------------------|----------------------------------------------------------------|
//! | `V`                 | format version (u32)                                           |
//! | `L` log id (32)     | `n`                                                            |
//! | `S` n               | committed size (u64), recorded lazily: at most the real size   |
//! | `X` n               | size up to which offsets, nodes and index runs are durable     |
//! | `C` n size(8)       | checkpoint note                                                |
//! | `R`                 | live index runs: (sequence, record count) pairs of u64         |
//! | `M` key             | meta value                                                     |
//!
//! An append: write the frames to the entries file and sync it (the commit point: one sync per
//! group commit), write offsets and nodes, then record `S` in sled without waiting for it to
//! reach the disk (sled writes it within half a second, or with the next flush). `S` is thus a
//! lower bound of the committed size: on open, the entries past it are re-read and kept while
//! each is a whole frame holding the log's next entry with a valid signature (callers append
//! only verified entries); the first that is not, a frame cut short by a crash, and
//! everything after it, is cut off. A frame missing below `S` is corruption: the open refuses
//! the store (an entry there that does not decode is logged and left to `node check`). The first append to a new log records its number
//! in sled and flushes before it is acknowledged. Offsets, nodes and the in-memory part of the
//! index are rebuilt on open from the entries past `X`.

use super::runs::Index;
use super::segment::{io_err, LogFiles, Nodes};
use super::{check_append, check_meta, check_note, poisoned, Error, IndexKey, Store, SEARCH_LIMIT};
use ringlog_protocol::merkle::{leaf_hash, Frontier};
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::{Hash, LogId, PublicKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Version of the layout above; a store with another version is refused.
const FORMAT_VERSION: u32 = 2;
/// Most index hits one search checks (see [`Store::search`] on digest collisions).
const SEARCH_SCAN_LIMIT: usize = 4 * SEARCH_LIMIT;
/// sled's page cache: the database holds only small values.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Most entries committed before the derived files are synced and `X` recorded, so that an
/// open re-reads at most this many entries.
const MAX_UNSYNCED: u64 = 65_536;
/// Index positions keep the log number in 16 bits and the entry index in 48.
const MAX_LOGS: u32 = 1 << 16;
const INDEX_BITS: u32 = 48;

/// The store a node runs, in one directory.
pub struct SledStore {
    db: ::sled::Db,
    dir: PathBuf,
    /// Log numbers and files; grows only after the write that assigns a number is durable.
    table: RwLock<Table>,
    /// Serialises writers; holds each log's frontier as of its committed size.
    writer: Mutex<HashMap<u32, Frontier>>,
    index: Arc<RwLock<Index>>,
    /// The thread merging index runs; merges never hold up an append.
    merges: Arc<Merges>,
    /// Entries committed since the derived files were last synced and `X` recorded: bounds
    /// what an open must re-read, whatever the entries are (governance entries add no index
    /// records, so the index table alone would never trigger the sync).
    unsynced: std::sync::atomic::AtomicU64,
    /// Entries re-read from the entries files when the store was opened.
    reread_at_open: std::sync::atomic::AtomicU64,
    /// Set when a write failed half-way; cleared only by reopening.
    failed: AtomicBool,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<LogId, u32>,
    by_num: Vec<LogId>,
    files: Vec<Arc<LogFiles>>,
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

fn key_x(n: u32) -> Vec<u8> {
    [&b"X"[..], &n.to_be_bytes()].concat()
}

fn prefix_c(n: u32) -> Vec<u8> {
    [&b"C"[..], &n.to_be_bytes()].concat()
}

fn key_c(n: u32, size: u64) -> Vec<u8> {
    [&prefix_c(n)[..], &size.to_be_bytes()].concat()
}

fn key_m(key: &str) -> Vec<u8> {
    [&b"M"[..], key.as_bytes()].concat()
}

/// The 64-bit index key: the kind in the top byte, 56 bits of the digest below.
fn index_key(key: &IndexKey) -> u64 {
    (u64::from(key.tag()) << 56) | (u64::from_be_bytes(key.digest8()) >> 8)
}

fn position(n: u32, index: u64) -> u64 {
    (u64::from(n) << INDEX_BITS) | (index & ((1 << INDEX_BITS) - 1))
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

fn decode_runs(v: &[u8]) -> Result<Vec<(u64, u64)>, Error> {
    if !v.len().is_multiple_of(16) {
        return Err(Error::Corrupt("index run list has a ragged length".into()));
    }
    v.chunks_exact(16)
        .map(|c| Ok((be_u64(&c[..8], "run sequence")?, be_u64(&c[8..], "run count")?)))
        .collect()
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`, cuts anything written past each
    /// log's committed end, rebuilds what is derived from the entries since the last sync, and
    /// checks every log's last entry and right edge; a store that fails is refused with
    /// [`Error::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, super::runs::TABLE_RECORDS)
    }

    /// [`SledStore::open`] with another size of the in-memory index table (records before it
    /// is written as a run); tests use a tiny one so that runs and merges happen often.
    pub fn open_with(path: &Path, index_table_records: usize) -> Result<Self, Error> {
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
                        "store format version {v}, this build reads {FORMAT_VERSION}: move the \
                         old store aside and let the node fetch its logs from the ring again"
                    )));
                }
            }
        }
        for d in ["logs", "index"] {
            let sub = path.join(d);
            if !sub.is_dir() {
                std::fs::create_dir_all(&sub).map_err(|e| io_err("creating a directory", e))?;
                super::runs::sync_dir(path)?;
            }
        }
        let list = match db.get(b"R").map_err(db_err)? {
            None => Vec::new(),
            Some(v) => decode_runs(&v)?,
        };
        let index = Index::open(&path.join("index"), &list, index_table_records)?;
        let store = Self {
            db,
            dir: path.to_path_buf(),
            table: RwLock::new(Table::default()),
            writer: Mutex::new(HashMap::new()),
            index: Arc::new(RwLock::new(index)),
            merges: Arc::new(Merges::default()),
            unsynced: std::sync::atomic::AtomicU64::new(0),
            reread_at_open: std::sync::atomic::AtomicU64::new(0),
            failed: AtomicBool::new(false),
        };
        store.load()?;
        Ok(store)
    }

    /// Reads the log table, brings every log's files to its committed size and re-indexes the
    /// entries past the last index run.
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
        let mut frontiers = HashMap::new();
        let mut index = self.index.write().map_err(poisoned)?;
        for (i, (n, log)) in nums.into_iter().enumerate() {
            if n as usize != i {
                return Err(Error::Corrupt(format!("log numbers are not dense at {n}")));
            }
            let files = LogFiles::open(&self.dir.join("logs"), n)?;
            let size = self.get_u64(&key_s(n))?;
            let synced = self.get_u64(&key_x(n))?;
            let accept =
                |i: u64, bytes: &[u8]| SignedEntry::decode_verified(bytes, &log, i).is_ok();
            let (frontier, reread) = files
                .recover(size, synced, &accept)
                .map_err(|e| Error::Corrupt(format!("log {log}: {e}")))?;
            let recorded = size;
            let size = files.size();
            if size > recorded {
                // Entries kept past the recorded size: record it (lazily, like an append).
                self.db.insert(key_s(n), &size.to_be_bytes()).map_err(db_err)?;
            }
            if size > 0 {
                let last = files.read(size - 1)?.ok_or_else(|| {
                    Error::Corrupt(format!("log {log} has size {size} but no entries"))
                })?;
                let e = SignedEntry::decode(&last)
                    .map_err(|e| Error::Corrupt(format!("entry {} of {log}: {e}", size - 1)))?;
                if e.entry.log != log || e.entry.index != size - 1 {
                    return Err(Error::Corrupt(format!(
                        "entry {} of {log} is stored at the wrong place",
                        size - 1
                    )));
                }
            }
            self.reread_at_open.fetch_add(reread.len() as u64, Ordering::Relaxed);
            for (i, bytes) in reread {
                // An entry that does not decode is left to `ringlog node check` to name.
                match SignedEntry::decode(&bytes) {
                    Ok(e) => {
                        for k in IndexKey::of(&e) {
                            index.insert(index_key(&k), position(n, i));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%log, index = i, error = %e, "stored entry does not decode; not indexed")
                    }
                }
            }
            table.by_id.insert(log, n);
            table.by_num.push(log);
            table.files.push(Arc::new(files));
            frontiers.insert(n, frontier);
        }
        drop(index);
        *self.table.write().map_err(poisoned)? = table;
        *self.writer.lock().map_err(poisoned)? = frontiers;
        Ok(())
    }

    fn get_u64(&self, key: &[u8]) -> Result<u64, Error> {
        match self.db.get(key).map_err(db_err)? {
            None => Ok(0),
            Some(v) => be_u64(&v, "stored size"),
        }
    }

    fn files(&self, log: &LogId) -> Result<Option<Arc<LogFiles>>, Error> {
        let t = self.table.read().map_err(poisoned)?;
        Ok(t.by_id.get(log).and_then(|n| t.files.get(*n as usize)).cloned())
    }

    fn num(&self, log: &LogId) -> Result<Option<u32>, Error> {
        Ok(self.table.read().map_err(poisoned)?.by_id.get(log).copied())
    }

    /// The number of `log`, or the number a first write to it would take.
    fn num_for_write(&self, log: &LogId) -> Result<(u32, bool), Error> {
        let table = self.table.read().map_err(poisoned)?;
        match table.by_id.get(log) {
            Some(n) => Ok((*n, false)),
            None => u32::try_from(table.by_num.len())
                .ok()
                .filter(|n| *n < MAX_LOGS)
                .map(|n| (n, true))
                .ok_or(Error::TooManyLogs),
        }
    }

    /// Applies `batch` atomically and flushes. After an error here the store refuses further
    /// writes: the in-memory state of the database may be ahead of the disk.
    fn write(&self, batch: ::sled::Batch) -> Result<(), Error> {
        self.check_failed()?;
        let res = self.db.apply_batch(batch).and_then(|()| self.db.flush().map(|_| ()));
        res.map_err(|e| {
            self.failed.store(true, Ordering::SeqCst);
            db_err(e)
        })
    }

    fn check_failed(&self) -> Result<(), Error> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Failed);
        }
        Ok(())
    }

    /// Records a newly numbered log, once the write that numbered it is durable.
    fn register(&self, log: &LogId, n: u32, files: Arc<LogFiles>) -> Result<(), Error> {
        let mut table = self.table.write().map_err(poisoned)?;
        table.by_id.insert(*log, n);
        table.by_num.push(*log);
        table.files.push(files);
        Ok(())
    }

    /// Writes the in-memory index as a run, syncs every log's derived files, and records both
    /// in sled; then lets the merge thread merge full tiers. Called with the writer lock
    /// held, so every committed entry is indexed.
    fn write_index(&self) -> Result<(), Error> {
        let files = self.table.read().map_err(poisoned)?.files.clone();
        let mut batch = ::sled::Batch::default();
        for (n, f) in files.iter().enumerate() {
            f.sync_derived()?;
            batch.insert(key_x(n as u32), &f.size().to_be_bytes());
        }
        // The list of runs changes and is persisted under `merges.list`, so that the merge
        // thread's writes of it and ours land in the order it changed; the index lock itself
        // is held only to swap tables and runs, never over I/O.
        let list_guard = self.merges.list.lock().map_err(poisoned)?;
        let frozen = self.index.write().map_err(poisoned)?.freeze();
        if let Some(frozen) = frozen {
            match frozen.write() {
                Ok(run) => self.index.write().map_err(poisoned)?.install_table(run),
                Err(e) => {
                    self.index.write().map_err(poisoned)?.thaw();
                    return Err(e);
                }
            }
        }
        let list = self.index.read().map_err(poisoned)?.list();
        batch.insert(&b"R"[..], encode_runs(&list));
        self.write(batch)?;
        // Only now: after a failure the next append tries again.
        self.unsynced.store(0, Ordering::Relaxed);
        drop(list_guard);
        self.start_merges();
        Ok(())
    }

    /// Makes sure the merge thread runs (again) now that the runs changed.
    fn start_merges(&self) {
        let m = &self.merges;
        let Ok(mut state) = m.state.lock() else { return };
        if state.running {
            // The thread looks once more before it stops.
            state.again = true;
            return;
        }
        if let Ok(mut slot) = m.thread.lock() {
            if let Some(h) = slot.take() {
                let _ = h.join();
            }
            let (index, db, merges) = (self.index.clone(), self.db.clone(), m.clone());
            let spawned = std::thread::Builder::new().name("index-merge".into()).spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| merges.run(&index, &db));
                if let Err(p) = std::panic::catch_unwind(run) {
                    // A bug: say so, and let the next change of the runs start a new thread
                    // (the runs on disk are unchanged until a merge's rename). If it held the
                    // index lock, that lock is poisoned: every write then fails with
                    // `Error::Failed`, on which the node stops for a restart (supervise.rs).
                    tracing::error!(
                        panic = %crate::supervise::panic_text(&*p),
                        "the index merge thread panicked; merges resume at the next append"
                    );
                    if let Ok(mut st) = merges.state.lock() {
                        st.running = false;
                    }
                }
            });
            match spawned {
                Ok(h) => {
                    state.running = true;
                    *slot = Some(h);
                }
                Err(e) => tracing::warn!(error = %e, "cannot start the index merge thread"),
            }
        }
    }
}

/// The merge thread's state, shared with the store.
#[derive(Default)]
struct Merges {
    /// Whether the thread runs, and whether it must look again before it stops.
    state: Mutex<MergeState>,
    /// Held while the list of runs changes and is persisted.
    list: Mutex<()>,
    /// Set when the store closes: the thread stops after the merge in hand.
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct MergeState {
    running: bool,
    again: bool,
}

impl Merges {
    /// The merge thread: merges until no tier is full and nobody asked again, or the store
    /// closes. A failed merge is logged and tried again at the next change of the runs.
    fn run(&self, index: &RwLock<Index>, db: &::sled::Db) {
        loop {
            if let Err(e) = self.merge_all(index, db) {
                tracing::warn!(error = %e, "merging index runs failed; will retry");
            }
            let Ok(mut state) = self.state.lock() else { return };
            if state.again && !self.stop.load(Ordering::SeqCst) {
                state.again = false;
                continue;
            }
            state.running = false;
            return;
        }
    }

    /// Merges index runs until no size tier is full. Each merge reads and writes files
    /// without a lock; only the swap takes the index lock. The old files are deleted after the
    /// new list is durable.
    fn merge_all(&self, index: &RwLock<Index>, db: &::sled::Db) -> Result<(), Error> {
        while !self.stop.load(Ordering::SeqCst) {
            let Some(merge) = index.write().map_err(poisoned)?.next_merge() else { return Ok(()) };
            let run = merge.run()?;
            let dead = {
                let _list = self.list.lock().map_err(poisoned)?;
                let (dead, list) = {
                    let mut ix = index.write().map_err(poisoned)?;
                    let dead = ix.install(&merge, run);
                    (dead, ix.list())
                };
                db.insert(b"R", encode_runs(&list)).map_err(db_err)?;
                db.flush().map_err(db_err)?;
                dead
            };
            // Deleted without the lock: searches still reading these runs keep their files.
            let dir = index.read().map_err(poisoned)?.dir().to_path_buf();
            super::runs::remove(&dir, &dead);
        }
        Ok(())
    }
}

fn encode_runs(list: &[(u64, u64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(list.len() * 16);
    for (seq, count) in list {
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
    }
    v
}

impl SledStore {
    /// How many entries the last open re-read to rebuild offsets, nodes and index (at most
    /// about 65,536 per log since the last sync of the derived files; none after a flush).
    pub fn reread_at_open(&self) -> u64 {
        self.reread_at_open.load(Ordering::Relaxed)
    }
}

impl Drop for SledStore {
    /// Stops the merge thread after the merge in hand, so that the database is closed when
    /// the store is.
    fn drop(&mut self) {
        self.merges.stop.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.merges.thread.lock() {
            if let Some(h) = slot.take() {
                let _ = h.join();
            }
        }
    }
}

impl Store for SledStore {
    fn append(&self, log: &LogId, entries: &[SignedEntry]) -> Result<u64, Error> {
        let mut frontiers = self.writer.lock().map_err(poisoned)?;
        self.check_failed()?;
        let (n, new) = self.num_for_write(log)?;
        let files = match self.files(log)? {
            Some(f) => f,
            None => {
                // A number no commit has used: clear whatever a failed attempt left behind.
                let f = LogFiles::open(&self.dir.join("logs"), n)?;
                f.recover(0, 0, &|_, _| false)?;
                Arc::new(f)
            }
        };
        let size = files.size();
        check_append(log, size, entries)?;
        if entries.is_empty() {
            return Ok(size);
        }
        // Work on a copy: the cached frontier moves only once the batch is committed.
        let mut frontier = match frontiers.get(&n) {
            Some(f) if f.size() == size => f.clone(),
            _ => Frontier::from_source(&Nodes(&files), size)?,
        };
        let mut encoded = Vec::with_capacity(entries.len());
        let mut nodes = Vec::new();
        let mut keys = Vec::new();
        let mut out = Vec::new();
        for e in entries {
            let bytes = e.encode();
            out.clear();
            frontier.push(leaf_hash(&bytes), &mut out);
            nodes.extend(out.iter().filter(|(l, _, _)| *l > 0).copied());
            for k in IndexKey::of(e) {
                keys.push((index_key(&k), position(n, e.entry.index)));
            }
            encoded.push(bytes);
        }
        let new_size = frontier.size();
        let seg_len = files.write(size, &encoded, &nodes).inspect_err(|_| {
            self.failed.store(true, Ordering::SeqCst);
        })?;
        if new {
            // The log's number must be durable before anything in its files counts.
            let mut batch = ::sled::Batch::default();
            batch.insert(key_l(log), &n.to_be_bytes());
            batch.insert(key_s(n), &new_size.to_be_bytes());
            self.write(batch)?;
        } else {
            // Committed already (the entries file is synced); the recorded size may lag.
            self.db.insert(key_s(n), &new_size.to_be_bytes()).map_err(|e| {
                self.failed.store(true, Ordering::SeqCst);
                db_err(e)
            })?;
        }
        files.commit(new_size, seg_len);
        if new {
            self.register(log, n, files)?;
        }
        frontiers.insert(n, frontier);
        let full = {
            let mut index = self.index.write().map_err(poisoned)?;
            for (k, p) in keys {
                index.insert(k, p);
            }
            index.table_full()
        };
        let unsynced =
            self.unsynced.fetch_add(entries.len() as u64, Ordering::Relaxed) + entries.len() as u64;
        if full || unsynced >= MAX_UNSYNCED {
            // The append is durable already; a failure here only delays the index run.
            if let Err(e) = self.write_index() {
                tracing::warn!(error = %e, "writing an index run failed; will retry");
            }
        }
        Ok(new_size)
    }

    fn size(&self, log: &LogId) -> Result<u64, Error> {
        Ok(self.files(log)?.map_or(0, |f| f.size()))
    }

    fn logs(&self) -> Result<Vec<LogId>, Error> {
        let mut logs = self.table.read().map_err(poisoned)?.by_num.clone();
        logs.sort();
        Ok(logs)
    }

    fn entry(&self, log: &LogId, index: u64) -> Result<Option<Vec<u8>>, Error> {
        match self.files(log)? {
            None => Ok(None),
            Some(f) => f.read(index),
        }
    }

    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
        match self.files(log)? {
            None => Ok(Vec::new()),
            Some(f) => f.read_range(start, end),
        }
    }

    fn node(&self, log: &LogId, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        match self.files(log)? {
            None => Ok(None),
            Some(f) => f.node(level, index),
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
        // Files first, so a registered log always has them.
        let files = if new {
            let f = LogFiles::open(&self.dir.join("logs"), n)?;
            f.recover(0, 0, &|_, _| false)?;
            Some(Arc::new(f))
        } else {
            None
        };
        self.write(batch)?;
        if let Some(files) = files {
            self.register(log, n, files)?;
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
        // A hostile writer can fill a log with values that share a digest with another value
        // but differ after it: bound the hits checked, not just the ones returned.
        // The runs are read after the index lock is released: a search never holds up an
        // append (which takes that lock to index its entries).
        let lookup = self.index.read().map_err(poisoned)?.lookup(index_key(key), SEARCH_SCAN_LIMIT);
        let mut hits = lookup.finish()?;
        hits.sort_unstable();
        hits.dedup();
        let (by_num, files) = {
            let t = self.table.read().map_err(poisoned)?;
            (t.by_num.clone(), t.files.clone())
        };
        let mut out = Vec::new();
        for pos in hits {
            if out.len() >= SEARCH_LIMIT {
                break;
            }
            let n = (pos >> INDEX_BITS) as usize;
            let index = pos & ((1 << INDEX_BITS) - 1);
            let (Some(log), Some(f)) = (by_num.get(n), files.get(n)) else {
                return Err(Error::Corrupt(format!("index names unknown log number {n}")));
            };
            let bytes = f
                .read(index)?
                .ok_or_else(|| Error::Corrupt(format!("index names missing entry {index}")))?;
            let e = SignedEntry::decode(&bytes)
                .map_err(|e| Error::Corrupt(format!("entry {index} of {log}: {e}")))?;
            // The key holds only a digest: keep the hit only if the entry really has the key.
            if IndexKey::of(&e).contains(key) {
                out.push((*log, index));
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
        // With the writer lock, so that the index run and `X` cover every committed entry:
        // the next open then re-reads nothing.
        let _writer = self.writer.lock().map_err(poisoned)?;
        self.check_failed()?;
        // Its sled write flushes, which makes the lazily recorded sizes durable too.
        self.write_index()
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
        let f = self.files(log)?.ok_or_else(|| Error::Corrupt("no such log".into()))?;
        f.flip_bit(index, bit)
    }

    /// Bytes the store takes on disk: the sled database, the log files and the index runs.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}
