//! [`MemoryStore`]: the in-memory twin of the sled store, for tests. Same behaviour, no disk.

use super::{check_append, check_meta, check_note, poisoned, Error, IndexKey, Store, SEARCH_LIMIT};
use ringlog_protocol::merkle::{leaf_hash, Frontier};
use ringlog_protocol::record::SignedEntry;
use ringlog_protocol::{Hash, LogId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A [`Store`] in BTreeMaps behind one mutex. Clones share the same state, so a clone is what
/// "reopening" a memory store means.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    logs: BTreeMap<LogId, Log>,
    /// Logs in the order they were first written, as numbered by the sled store.
    order: Vec<LogId>,
    index: BTreeMap<IndexKey, BTreeSet<(u32, u64)>>,
    meta: BTreeMap<String, Vec<u8>>,
}

struct Log {
    num: u32,
    entries: Vec<Vec<u8>>,
    nodes: HashMap<(u8, u64), Hash>,
    frontier: Frontier,
    checkpoints: BTreeMap<u64, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T, Error>) -> Result<T, Error> {
        let mut inner = self.inner.lock().map_err(poisoned)?;
        f(&mut inner)
    }
}

impl Inner {
    fn log_mut(&mut self, log: &LogId) -> Result<&mut Log, Error> {
        if !self.logs.contains_key(log) {
            let num = u32::try_from(self.order.len()).map_err(|_| Error::TooManyLogs)?;
            self.order.push(*log);
            self.logs.insert(
                *log,
                Log {
                    num,
                    entries: Vec::new(),
                    nodes: HashMap::new(),
                    frontier: Frontier::new(),
                    checkpoints: BTreeMap::new(),
                },
            );
        }
        self.logs.get_mut(log).ok_or(Error::Failed)
    }
}

impl Store for MemoryStore {
    fn append(&self, log: &LogId, entries: &[SignedEntry]) -> Result<u64, Error> {
        self.with(|inner| {
            let size = inner.logs.get(log).map_or(0, |l| l.entries.len() as u64);
            check_append(log, size, entries)?;
            if entries.is_empty() {
                return Ok(size);
            }
            let l = inner.log_mut(log)?;
            let num = l.num;
            let mut keys = Vec::new();
            let mut nodes = Vec::new();
            for e in entries {
                let bytes = e.encode();
                nodes.clear();
                l.frontier.push(leaf_hash(&bytes), &mut nodes);
                l.nodes.extend(nodes.iter().map(|(level, i, h)| ((*level, *i), *h)));
                l.entries.push(bytes);
                keys.extend(IndexKey::of(e).into_iter().map(|k| (k, e.entry.index)));
            }
            let new_size = l.entries.len() as u64;
            for (k, index) in keys {
                inner.index.entry(k).or_default().insert((num, index));
            }
            Ok(new_size)
        })
    }

    fn size(&self, log: &LogId) -> Result<u64, Error> {
        self.with(|inner| Ok(inner.logs.get(log).map_or(0, |l| l.entries.len() as u64)))
    }

    fn logs(&self) -> Result<Vec<LogId>, Error> {
        self.with(|inner| Ok(inner.logs.keys().copied().collect()))
    }

    fn entry(&self, log: &LogId, index: u64) -> Result<Option<Vec<u8>>, Error> {
        self.with(|inner| {
            Ok(inner
                .logs
                .get(log)
                .and_then(|l| usize::try_from(index).ok().and_then(|i| l.entries.get(i)).cloned()))
        })
    }

    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
        self.with(|inner| {
            let Some(l) = inner.logs.get(log) else { return Ok(Vec::new()) };
            let len = l.entries.len() as u64;
            let (start, end) = (start.min(len) as usize, end.min(len) as usize);
            Ok(l.entries.get(start..end).map(<[_]>::to_vec).unwrap_or_default())
        })
    }

    fn node(&self, log: &LogId, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        self.with(|inner| {
            Ok(inner.logs.get(log).and_then(|l| l.nodes.get(&(level, index)).copied()))
        })
    }

    fn put_checkpoint(&self, log: &LogId, size: u64, note: &str) -> Result<(), Error> {
        check_note(note)?;
        self.with(|inner| {
            inner.log_mut(log)?.checkpoints.insert(size, note.to_owned());
            Ok(())
        })
    }

    fn checkpoint(&self, log: &LogId, size: u64) -> Result<Option<String>, Error> {
        self.with(|inner| Ok(inner.logs.get(log).and_then(|l| l.checkpoints.get(&size).cloned())))
    }

    fn latest_checkpoint(&self, log: &LogId) -> Result<Option<(u64, String)>, Error> {
        self.with(|inner| {
            Ok(inner
                .logs
                .get(log)
                .and_then(|l| l.checkpoints.last_key_value())
                .map(|(s, n)| (*s, n.clone())))
        })
    }

    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, Error> {
        self.with(|inner| {
            Ok(inner
                .logs
                .get(log)
                .map(|l| l.checkpoints.iter().map(|(s, n)| (*s, n.clone())).collect())
                .unwrap_or_default())
        })
    }

    fn search(&self, key: &IndexKey) -> Result<Vec<(LogId, u64)>, Error> {
        self.with(|inner| {
            let Some(hits) = inner.index.get(key) else { return Ok(Vec::new()) };
            hits.iter()
                .take(SEARCH_LIMIT)
                .map(|(num, index)| {
                    let log = inner.order.get(*num as usize).ok_or(Error::Failed)?; // numbered on insert
                    Ok((*log, *index))
                })
                .collect()
        })
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|inner| Ok(inner.meta.get(key).cloned()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        check_meta(key, value)?;
        self.with(|inner| {
            inner.meta.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}
