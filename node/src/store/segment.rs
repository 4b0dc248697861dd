//! One log's entries and Merkle nodes in append-only files, read with positional reads.
//!
//! Files of log number `n` (in the store's `logs/` directory):
//!
//! | file            | content                                                              |
//! |-----------------|----------------------------------------------------------------------|
//! | `n.entries`     | frames: entry length (u32, little-endian), then the entry bytes      |
//! | `n.offsets`     | for entry `i`, at byte `8 i`: where its frame ends (u64, little-endian) |
//! | `n.l<level>`    | Merkle nodes of one level (1 and up), 32 bytes each, node `i` at `32 i` |
//!
//! Leaf hashes are not stored: they are recomputed from the entry. The entries file is synced
//! before an append commits: that sync is the commit point. The log size kept in the sled
//! database is a lower bound, recorded lazily; on opening, the store keeps the whole, validly
//! signed entries past it and cuts the rest. The offsets and node files are derived from the
//! entries and synced lazily too: on opening, the store rebuilds them from the entries file
//! past the last size at which they were known to be synced.

use super::Error;
use ringlog_protocol::merkle::{leaf_hash, Frontier};
use ringlog_protocol::Hash;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Largest frame the store writes or reads (an entry is at most 64 KiB; see `MAX_ENTRY_BYTES`).
const MAX_FRAME: u32 = 1 << 20;

pub(super) fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Sled(format!("{what}: {e}"))
}

/// An entry re-read on recovery: its index and stored bytes.
pub(super) type Reread = (u64, Vec<u8>);

/// The files of one log, shared by the writer and any number of readers.
pub(super) struct LogFiles {
    dir: PathBuf,
    n: u32,
    entries: File,
    offsets: File,
    /// `levels[l - 1]` holds the nodes of level `l`; grows as the tree does.
    levels: RwLock<Vec<File>>,
    /// Committed number of entries: readers never look past it.
    size: AtomicU64,
    /// Committed length of the entries file.
    seg_len: AtomicU64,
}

/// Opens (creating if needed) a file for reading and writing. A file that had to be created is
/// made durable in its directory before this returns, so a synced write to it survives a crash.
fn open_rw(path: &Path) -> Result<File, Error> {
    let existed = path.exists();
    let f = open_rw_plain(path)?;
    if !existed {
        if let Some(dir) = path.parent() {
            super::runs::sync_dir(dir)?;
        }
    }
    Ok(f)
}

fn open_rw_plain(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_err(&format!("opening {}", path.display()), e))
}

fn read_exact_at(f: &File, buf: &mut [u8], at: u64, what: &str) -> Result<(), Error> {
    f.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Corrupt(format!("{what} is cut short"))
        } else {
            io_err(what, e)
        }
    })
}

impl LogFiles {
    /// Opens (creating if needed) the files of log number `n` in `dir`, as empty until
    /// [`LogFiles::recover`] sets the committed size.
    pub(super) fn open(dir: &Path, n: u32) -> Result<Self, Error> {
        Ok(Self {
            dir: dir.to_path_buf(),
            n,
            entries: open_rw(&dir.join(format!("{n}.entries")))?,
            offsets: open_rw(&dir.join(format!("{n}.offsets")))?,
            levels: RwLock::new(Vec::new()),
            size: AtomicU64::new(0),
            seg_len: AtomicU64::new(0),
        })
    }

    /// Committed size.
    pub(super) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Committed length of the entries file.
    pub(super) fn seg_len(&self) -> u64 {
        self.seg_len.load(Ordering::Acquire)
    }

    /// Where frame `i` ends (`i` below the size the offsets are valid for).
    fn end_of(&self, i: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        read_exact_at(&self.offsets, &mut b, i * 8, "offsets file")?;
        Ok(u64::from_le_bytes(b))
    }

    /// Where frame `i` starts.
    fn start_of(&self, i: u64) -> Result<u64, Error> {
        if i == 0 {
            Ok(0)
        } else {
            self.end_of(i - 1)
        }
    }

    /// Entries `start..end` (already cut at the committed size), as stored.
    pub(super) fn read_range(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
        let end = end.min(self.size());
        if start >= end {
            return Ok(Vec::new());
        }
        let from = self.start_of(start)?;
        let mut ends = vec![0u8; ((end - start) * 8) as usize];
        read_exact_at(&self.offsets, &mut ends, start * 8, "offsets file")?;
        let to = u64::from_le_bytes(ends[ends.len() - 8..].try_into().unwrap_or([0; 8]));
        if to < from || to > self.seg_len() || to - from > u64::from(MAX_FRAME) * (end - start) {
            return Err(Error::Corrupt(format!(
                "log {}: offsets of {start}..{end} are wrong",
                self.n
            )));
        }
        let mut buf = vec![0u8; (to - from) as usize];
        read_exact_at(&self.entries, &mut buf, from, "entries file")?;
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut at = from;
        for (k, chunk) in ends.chunks_exact(8).enumerate() {
            let stop = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            let i = start + k as u64;
            let frame = stop
                .checked_sub(from)
                .and_then(|s| buf.get((at - from) as usize..s as usize))
                .ok_or_else(|| {
                    Error::Corrupt(format!("log {}: offset of entry {i} is wrong", self.n))
                })?;
            out.push(unframe(frame).ok_or_else(|| {
                Error::Corrupt(format!("log {}: frame of entry {i} is malformed", self.n))
            })?);
            at = stop;
        }
        Ok(out)
    }

    /// Entry `i`, if committed.
    pub(super) fn read(&self, i: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.read_range(i, i.saturating_add(1))?.pop())
    }

    /// The node at `level`, `index`, if the committed tree has it complete.
    pub(super) fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        if level >= 64 {
            return Ok(None);
        }
        let covered = index.checked_add(1).and_then(|i| i.checked_mul(1u64 << level));
        if covered.is_none_or(|c| c > self.size()) {
            return Ok(None);
        }
        if level == 0 {
            return Ok(self.read(index)?.map(|e| leaf_hash(&e)));
        }
        let levels = self.levels.read().map_err(super::poisoned)?;
        let f = match levels.get(level as usize - 1) {
            Some(f) => f,
            None => {
                return Err(Error::Corrupt(format!("log {}: no file for level {level}", self.n)))
            }
        };
        let mut b = [0u8; 32];
        read_exact_at(f, &mut b, index * 32, "merkle node file")?;
        Ok(Some(Hash(b)))
    }

    /// Opens the node files of levels `1..=level`.
    fn ensure_levels(&self, level: u8) -> Result<(), Error> {
        let have = self.levels.read().map_err(super::poisoned)?.len();
        if have >= level as usize {
            return Ok(());
        }
        let mut levels = self.levels.write().map_err(super::poisoned)?;
        while levels.len() < level as usize {
            let l = levels.len() + 1;
            levels.push(open_rw(&self.dir.join(format!("{}.l{l}", self.n)))?);
        }
        Ok(())
    }

    /// Opens every node file a tree of `size` leaves has.
    fn open_levels_for(&self, size: u64) -> Result<(), Error> {
        // A tree of `size` leaves has complete nodes up to level floor(log2(size)).
        self.ensure_levels((64 - size.leading_zeros() as u8).saturating_sub(1))
    }

    /// Writes encoded entries after the committed end and syncs the entries file; then writes
    /// their end offsets and the new Merkle nodes (not synced). The sync makes the entries
    /// durable; readers see them once the caller calls [`LogFiles::commit`].
    pub(super) fn write(
        &self,
        first: u64,
        encoded: &[Vec<u8>],
        nodes: &[(u8, u64, Hash)],
    ) -> Result<u64, Error> {
        let start = self.seg_len();
        let total: usize = encoded.iter().map(|e| e.len() + 4).sum();
        let mut frames = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(encoded.len() * 8);
        for e in encoded {
            let len = u32::try_from(e.len())
                .ok()
                .filter(|l| *l <= MAX_FRAME)
                .ok_or(Error::TooLarge { what: "entry", len: e.len(), max: MAX_FRAME as usize })?;
            frames.extend_from_slice(&len.to_le_bytes());
            frames.extend_from_slice(e);
            ends.extend_from_slice(&(start + frames.len() as u64).to_le_bytes());
        }
        self.entries.write_all_at(&frames, start).map_err(|e| io_err("writing entries", e))?;
        self.entries.sync_data().map_err(|e| io_err("syncing entries", e))?;
        self.offsets.write_all_at(&ends, first * 8).map_err(|e| io_err("writing offsets", e))?;
        self.write_nodes(nodes)?;
        Ok(start + frames.len() as u64)
    }

    /// Writes nodes of levels 1 and up; a batch's nodes of one level have consecutive indexes.
    fn write_nodes(&self, nodes: &[(u8, u64, Hash)]) -> Result<(), Error> {
        let top = nodes.iter().map(|(l, _, _)| *l).max().unwrap_or(0);
        if top == 0 {
            return Ok(());
        }
        self.ensure_levels(top)?;
        let levels = self.levels.read().map_err(super::poisoned)?;
        for level in 1..=top {
            let mut run: Option<(u64, Vec<u8>)> = None;
            let flush = |run: &mut Option<(u64, Vec<u8>)>| -> Result<(), Error> {
                if let Some((first, buf)) = run.take() {
                    let f = &levels[level as usize - 1];
                    f.write_all_at(&buf, first * 32).map_err(|e| io_err("writing nodes", e))?;
                }
                Ok(())
            };
            for (_, i, h) in nodes.iter().filter(|(l, _, _)| *l == level) {
                match &mut run {
                    Some((first, buf)) if *first + (buf.len() / 32) as u64 == *i => {
                        buf.extend_from_slice(&h.0)
                    }
                    _ => {
                        flush(&mut run)?;
                        run = Some((*i, h.0.to_vec()));
                    }
                }
            }
            flush(&mut run)?;
        }
        Ok(())
    }

    /// Makes written data visible to readers: `size` entries ending at `seg_len`.
    pub(super) fn commit(&self, size: u64, seg_len: u64) {
        self.seg_len.store(seg_len, Ordering::Release);
        self.size.store(size, Ordering::Release);
    }

    /// Syncs the offsets and node files.
    pub(super) fn sync_derived(&self) -> Result<(), Error> {
        self.offsets.sync_data().map_err(|e| io_err("syncing offsets", e))?;
        for f in self.levels.read().map_err(super::poisoned)?.iter() {
            f.sync_data().map_err(|e| io_err("syncing nodes", e))?;
        }
        Ok(())
    }

    /// Brings the files to the committed `size`, trusting offsets and nodes only below
    /// `synced` (the last size at which they were synced): rebuilds them from the entries
    /// file, and returns the frontier with the entries it re-read (for re-indexing).
    ///
    /// Complete frames past `size` are kept while `accept(index, bytes)` takes them: the
    /// recorded size may lag the entries file (see [`super::sled`]), and an entry that decodes
    /// as the next entry of the log with a valid signature was written by this store (synced,
    /// or part of the one append in flight at a crash). The first frame it refuses, and
    /// everything after it, is cut.
    pub(super) fn recover(
        &self,
        size: u64,
        synced: u64,
        accept: &dyn Fn(u64, &[u8]) -> bool,
    ) -> Result<(Frontier, Vec<Reread>), Error> {
        let synced = synced.min(size);
        self.open_levels_for(size)?;
        let entries_len =
            self.entries.metadata().map_err(|e| io_err("reading entries file size", e))?.len();
        let start = self.start_of(synced)?;
        // Readers use the committed size; set it to what is certain while rebuilding.
        self.commit(synced, start);
        let mut frontier = Frontier::from_source(&Nodes(self), synced)?;
        let mut reader = BufReader::with_capacity(1 << 20, &self.entries);
        reader.seek(SeekFrom::Start(start)).map_err(|e| io_err("seeking entries", e))?;
        let mut at = start;
        let mut ends = Vec::new();
        let mut nodes = Vec::new();
        let mut reread = Vec::new();
        // Entries below the recorded size must all be there; past it, whole frames that
        // `accept` takes are kept.
        let recorded = size;
        let mut size = synced;
        loop {
            let i = size;
            let e = match next_frame(&mut reader, at, entries_len)? {
                Some(e) if i < recorded || accept(i, &e) => e,
                _ if i < recorded => {
                    return Err(Error::Corrupt(format!(
                        "log {}: size is {recorded} but the entries file ends in entry {i}",
                        self.n
                    )))
                }
                _ => break,
            };
            at += 4 + e.len() as u64;
            ends.extend_from_slice(&at.to_le_bytes());
            let mut out = Vec::new();
            frontier.push(leaf_hash(&e), &mut out);
            nodes.extend(out.into_iter().filter(|(l, _, _)| *l > 0));
            reread.push((i, e));
            size += 1;
            if nodes.len() > 65536 {
                self.write_nodes(&nodes)?;
                nodes.clear();
            }
        }
        self.open_levels_for(size)?;
        self.offsets.write_all_at(&ends, synced * 8).map_err(|e| io_err("rewriting offsets", e))?;
        self.write_nodes(&nodes)?;
        // Cut everything from the first frame not kept.
        self.entries.set_len(at).map_err(|e| io_err("truncating entries", e))?;
        self.offsets.set_len(size * 8).map_err(|e| io_err("truncating offsets", e))?;
        {
            let levels = self.levels.read().map_err(super::poisoned)?;
            for (k, f) in levels.iter().enumerate() {
                let complete = size >> (k + 1);
                f.set_len(complete * 32).map_err(|e| io_err("truncating nodes", e))?;
            }
        }
        self.entries.sync_data().map_err(|e| io_err("syncing entries", e))?;
        self.sync_derived()?;
        self.commit(size, at);
        Ok((frontier, reread))
    }

    /// Fault injection: flips bit `bit` (modulo the length) of entry `index` in place.
    pub(super) fn flip_bit(&self, index: u64, bit: usize) -> Result<(), Error> {
        if index >= self.size() {
            return Err(Error::Corrupt("no such entry".into()));
        }
        let from = self.start_of(index)? + 4;
        let to = self.end_of(index)?;
        let len = to.saturating_sub(from).max(1);
        let at = from + ((bit / 8) as u64 % len);
        let mut b = [0u8; 1];
        read_exact_at(&self.entries, &mut b, at, "entries file")?;
        b[0] ^= 1 << (bit % 8);
        self.entries.write_all_at(&b, at).map_err(|e| io_err("writing entries", e))?;
        self.entries.sync_data().map_err(|e| io_err("syncing entries", e))
    }
}

/// The entry of the frame at `at` (the reader's position), if the file holds it whole. A read
/// that fails inside the file's length is an I/O error, not a torn frame: it is returned, so
/// that recovery never cuts entries it merely could not read.
fn next_frame(reader: &mut impl Read, at: u64, entries_len: u64) -> Result<Option<Vec<u8>>, Error> {
    let mut len = [0u8; 4];
    if at + 4 > entries_len {
        return Ok(None);
    }
    reader.read_exact(&mut len).map_err(|e| io_err("reading entries", e))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME || at + 4 + u64::from(len) > entries_len {
        return Ok(None);
    }
    let mut e = vec![0u8; len as usize];
    reader.read_exact(&mut e).map_err(|e| io_err("reading entries", e))?;
    Ok(Some(e))
}

/// The entry inside a frame, if the frame's length prefix matches it.
fn unframe(frame: &[u8]) -> Option<Vec<u8>> {
    let (len, rest) = frame.split_first_chunk::<4>()?;
    (u32::from_le_bytes(*len) as usize == rest.len()).then(|| rest.to_vec())
}

/// A log's stored nodes as a proof source.
pub(super) struct Nodes<'a>(pub(super) &'a LogFiles);

impl ringlog_protocol::merkle::NodeSource for Nodes<'_> {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        self.0.node(level, index)?.ok_or(Error::MissingNode { level, index })
    }
}
