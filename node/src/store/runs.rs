//! The secondary index of the disk store: a small log-structured merge index of fixed-size
//! records, `(key, position)` with both as big-endian u64.
//!
//! - `key` is the index key's kind (top byte) and 56 bits of its digest: hits are checked
//!   against the entry, so a shared digest costs a lookup, never a wrong answer.
//! - `position` is the log number (top 16 bits) and the entry index (48 bits), so sorting by
//!   position sorts by (log number, index).
//!
//! New records go to an in-memory table. When it is full, it is written out as an immutable
//! sorted *run* file; runs of the same size tier are merged four at a time, so a record is
//! rewritten about log4(records / table size) times and a lookup reads a few dozen runs at
//! most. The list of live runs is kept by the caller (in the sled database) and changes only
//! after the new run file is durable; files not on the list are leftovers of a crash.
//! The in-memory table is not persisted: after a restart the store re-indexes the entries
//! written since the last run.

use super::segment::io_err;
use super::Error;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per record.
const REC: u64 = 16;
/// One fence key is kept in memory for every this many records of a run.
const FENCE: u64 = 256;
/// Records in the in-memory table before it is written as a run (about 64k hop records).
pub(super) const TABLE_RECORDS: usize = 256 * 1024;
/// Runs of one tier merged together.
const MERGE_FAN_IN: usize = 4;

/// One immutable sorted file.
pub(super) struct Run {
    seq: u64,
    count: u64,
    file: File,
    /// Key of record `k * FENCE`, for every `k`.
    fence: Vec<u64>,
}

/// The index: live runs and the in-memory table.
pub(super) struct Index {
    dir: PathBuf,
    runs: Vec<Arc<Run>>,
    table: BTreeSet<(u64, u64)>,
    /// The table being written out as a run: still searched until the run replaces it.
    frozen: Option<Arc<BTreeSet<(u64, u64)>>>,
    /// Size of the table that makes a run.
    table_records: usize,
    next_seq: u64,
}

fn run_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.run"))
}

fn decode_rec(b: &[u8]) -> (u64, u64) {
    let mut k = [0u8; 8];
    let mut p = [0u8; 8];
    k.copy_from_slice(&b[..8]);
    p.copy_from_slice(&b[8..16]);
    (u64::from_be_bytes(k), u64::from_be_bytes(p))
}

impl Run {
    fn open(dir: &Path, seq: u64, count: u64) -> Result<Run, Error> {
        let path = run_path(dir, seq);
        let file =
            File::open(&path).map_err(|e| io_err(&format!("opening {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| io_err("reading run size", e))?.len();
        if len != count * REC {
            return Err(Error::Corrupt(format!(
                "index run {} has {len} bytes, expected {}",
                path.display(),
                count * REC
            )));
        }
        let mut fence = Vec::with_capacity((count / FENCE + 1) as usize);
        let mut k = [0u8; 8];
        let mut i = 0;
        while i < count {
            file.read_exact_at(&mut k, i * REC).map_err(|e| io_err("reading index run", e))?;
            fence.push(u64::from_be_bytes(k));
            i += FENCE;
        }
        Ok(Run { seq, count, file, fence })
    }

    /// Positions recorded under `key`, appended to `out` until it holds `limit`.
    fn lookup(&self, key: u64, out: &mut Vec<u64>, limit: usize) -> Result<(), Error> {
        // The first block whose first key is >= key may be preceded by a block ending in key.
        let mut block = self.fence.partition_point(|k| *k < key).saturating_sub(1) as u64;
        let mut buf = vec![0u8; (FENCE * REC) as usize];
        while block * FENCE < self.count && out.len() < limit {
            let first = block * FENCE;
            let n = (self.count - first).min(FENCE);
            let buf = &mut buf[..(n * REC) as usize];
            self.file
                .read_exact_at(buf, first * REC)
                .map_err(|e| io_err("reading index run", e))?;
            for rec in buf.chunks_exact(REC as usize) {
                let (k, p) = decode_rec(rec);
                if k > key {
                    return Ok(());
                }
                if k == key {
                    out.push(p);
                    if out.len() >= limit {
                        return Ok(());
                    }
                }
            }
            block += 1;
        }
        Ok(())
    }

    fn tier(&self, table_records: usize) -> u32 {
        let mut t = 0;
        let mut c = self.count / table_records.max(1) as u64;
        while c >= MERGE_FAN_IN as u64 {
            c /= MERGE_FAN_IN as u64;
            t += 1;
        }
        t
    }
}

/// Writes sorted records to a new run file, durably; returns its record count.
fn write_run(dir: &Path, seq: u64, recs: impl Iterator<Item = (u64, u64)>) -> Result<u64, Error> {
    let tmp = dir.join(format!("{seq:016x}.tmp"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_err("creating index run", e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut count = 0u64;
    for (k, p) in recs {
        w.write_all(&k.to_be_bytes()).map_err(|e| io_err("writing index run", e))?;
        w.write_all(&p.to_be_bytes()).map_err(|e| io_err("writing index run", e))?;
        count += 1;
    }
    let file = w.into_inner().map_err(|e| io_err("writing index run", e.into_error()))?;
    file.sync_all().map_err(|e| io_err("syncing index run", e))?;
    std::fs::rename(&tmp, run_path(dir, seq)).map_err(|e| io_err("renaming index run", e))?;
    sync_dir(dir)?;
    Ok(count)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("syncing a directory", e))
}

/// Reads a run front to back.
struct RunReader {
    r: BufReader<File>,
    left: u64,
}

impl RunReader {
    fn next(&mut self) -> Result<Option<(u64, u64)>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; REC as usize];
        self.r.read_exact(&mut b).map_err(|e| io_err("reading index run", e))?;
        self.left -= 1;
        Ok(Some(decode_rec(&b)))
    }
}

impl Index {
    /// Opens the runs listed as `(seq, count)` in `dir`, and deletes files not on the list.
    pub(super) fn open(
        dir: &Path,
        list: &[(u64, u64)],
        table_records: usize,
    ) -> Result<Index, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating the index directory", e))?;
        let mut runs = Vec::new();
        for (seq, count) in list {
            runs.push(Arc::new(Run::open(dir, *seq, *count)?));
        }
        let next_seq = list.iter().map(|(s, _)| s + 1).max().unwrap_or(0);
        let live: BTreeSet<PathBuf> = list.iter().map(|(s, _)| run_path(dir, *s)).collect();
        for e in std::fs::read_dir(dir).map_err(|e| io_err("listing the index", e))?.flatten() {
            let p = e.path();
            let ours = p.extension().is_some_and(|x| x == "run" || x == "tmp");
            if ours && !live.contains(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(Index {
            dir: dir.to_path_buf(),
            runs,
            table: BTreeSet::new(),
            frozen: None,
            table_records: table_records.max(1),
            next_seq,
        })
    }

    /// The live runs, as the caller persists them.
    pub(super) fn list(&self) -> Vec<(u64, u64)> {
        self.runs.iter().map(|r| (r.seq, r.count)).collect()
    }

    /// Adds a record to the in-memory table.
    pub(super) fn insert(&mut self, key: u64, pos: u64) {
        self.table.insert((key, pos));
    }

    /// Whether the in-memory table should be written out.
    pub(super) fn table_full(&self) -> bool {
        self.table.len() >= self.table_records
    }

    /// Positions under `key` (unsorted, possibly repeated), at most `limit`: the in-memory
    /// hits now, the runs' when [`Lookup::finish`] reads them, which needs no index lock (a
    /// run's file stays readable after a merge deletes it).
    pub(super) fn lookup(&self, key: u64, limit: usize) -> Lookup {
        let range = (key, 0)..=(key, u64::MAX);
        let mut out: Vec<u64> =
            self.table.range(range.clone()).map(|(_, p)| *p).take(limit).collect();
        if let Some(f) = &self.frozen {
            out.extend(f.range(range).map(|(_, p)| *p).take(limit.saturating_sub(out.len())));
        }
        Lookup { key, limit, out, runs: self.runs.clone() }
    }

    /// The index directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the table out to be written as run `seq` (see [`Frozen::write`]); it stays
    /// searchable until [`Index::install_table`] (or [`Index::thaw`] after a failure).
    pub(super) fn freeze(&mut self) -> Option<Frozen> {
        if self.table.is_empty() || self.frozen.is_some() {
            return None;
        }
        let table = Arc::new(std::mem::take(&mut self.table));
        self.frozen = Some(table.clone());
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Frozen { dir: self.dir.clone(), table, seq })
    }

    /// Replaces the frozen table with the run it was written as.
    pub(super) fn install_table(&mut self, run: Run) {
        self.runs.push(Arc::new(run));
        self.frozen = None;
    }

    /// Puts a frozen table whose run could not be written back into the table.
    pub(super) fn thaw(&mut self) {
        if let Some(f) = self.frozen.take() {
            self.table.extend(f.iter().copied());
        }
    }

    /// The next merge due, if a size tier holds [`MERGE_FAN_IN`] runs: the runs and the
    /// sequence number of the run they become. The merge itself ([`Merge::run`]) needs no
    /// lock; [`Index::install`] then swaps the result in.
    pub(super) fn next_merge(&mut self) -> Option<Merge> {
        let mut tiers: std::collections::BTreeMap<u32, Vec<&Arc<Run>>> = Default::default();
        for r in &self.runs {
            tiers.entry(r.tier(self.table_records)).or_default().push(r);
        }
        let group: Vec<Arc<Run>> = tiers
            .into_values()
            .find(|v| v.len() >= MERGE_FAN_IN)?
            .into_iter()
            .take(MERGE_FAN_IN)
            .cloned()
            .collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Merge { dir: self.dir.clone(), group, seq })
    }

    /// Replaces the merged runs with their merge (run `merge.seq`). Returns the
    /// run files that are no longer live: delete them (with [`Index::remove`]) once the new
    /// list is durable.
    pub(super) fn install(&mut self, merge: &Merge, merged: Run) -> Vec<u64> {
        let dead: Vec<u64> = merge.group.iter().map(|r| r.seq).collect();
        self.runs.retain(|r| !dead.contains(&r.seq));
        self.runs.push(Arc::new(merged));
        dead
    }
}

/// Deletes the files of runs `dead` in index directory `dir`.
pub(super) fn remove(dir: &Path, dead: &[u64]) {
    for seq in dead {
        let _ = std::fs::remove_file(run_path(dir, *seq));
    }
}

/// A lookup begun under the index lock, finished without it.
pub(super) struct Lookup {
    key: u64,
    limit: usize,
    out: Vec<u64>,
    runs: Vec<Arc<Run>>,
}

impl Lookup {
    /// The in-memory hits and then the runs', at most `limit`.
    pub(super) fn finish(mut self) -> Result<Vec<u64>, Error> {
        for run in &self.runs {
            if self.out.len() >= self.limit {
                break;
            }
            run.lookup(self.key, &mut self.out, self.limit)?;
        }
        Ok(self.out)
    }
}

/// A merge of runs of one size tier, taken out of the index so that it runs without a lock.
pub(super) struct Merge {
    dir: PathBuf,
    group: Vec<Arc<Run>>,
    seq: u64,
}

impl Merge {
    /// Merges the runs into a new durable run file, opened (fence keys read) and ready to
    /// install.
    pub(super) fn run(&self) -> Result<Run, Error> {
        let mut readers = Vec::new();
        for r in &self.group {
            let f = r.file.try_clone().map_err(|e| io_err("reading index run", e))?;
            let mut rr = RunReader { r: BufReader::with_capacity(1 << 20, f), left: r.count };
            std::io::Seek::seek(&mut rr.r, std::io::SeekFrom::Start(0))
                .map_err(|e| io_err("reading index run", e))?;
            readers.push(rr);
        }
        let mut heads = Vec::new();
        for r in readers.iter_mut() {
            heads.push(r.next()?);
        }
        let mut err = None;
        let iter = std::iter::from_fn(|| {
            let (i, min) = heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.map(|h| (i, h)))
                .min_by_key(|x| x.1)?;
            match readers[i].next() {
                Ok(next) => heads[i] = next,
                Err(e) => {
                    err = Some(e);
                    return None;
                }
            }
            Some(min)
        });
        let count = write_run(&self.dir, self.seq, iter)?;
        match err {
            Some(e) => Err(e),
            None => Run::open(&self.dir, self.seq, count),
        }
    }
}

/// The in-memory table taken out of the index to be written as a run without a lock.
pub(super) struct Frozen {
    dir: PathBuf,
    table: Arc<BTreeSet<(u64, u64)>>,
    seq: u64,
}

impl Frozen {
    /// Writes the table as a durable run file, opened and ready to install.
    pub(super) fn write(&self) -> Result<Run, Error> {
        let count = write_run(&self.dir, self.seq, self.table.iter().copied())?;
        Run::open(&self.dir, self.seq, count)
    }
}
