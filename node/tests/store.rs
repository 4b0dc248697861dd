//! Runs the storage conformance suite against both stores, plus checks only a disk store has:
//! data survives closing, a second open of a busy directory fails cleanly.
#![allow(clippy::unwrap_used)] // tests: a failed call is a failed test

use ringlog_node::store::conformance::{self, hop_entry, log_key, Harness, Hop};
use ringlog_node::store::{Error, MemoryStore, SledStore, Store};
use tempfile::TempDir;

struct Sled {
    dir: TempDir,
    store: Option<SledStore>,
    /// Index records held in memory before they are written as a run (`None`: the default).
    table: Option<usize>,
}

impl Sled {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self { dir, store: None, table: None };
        s.reopen();
        s
    }

    /// A store whose index table holds only `table` records, so that index runs are written
    /// and merged in the background within a few appends.
    fn with_table(table: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self { dir, store: None, table: Some(table) };
        s.reopen();
        s
    }

    fn open(&self) -> SledStore {
        match self.table {
            None => SledStore::open(self.dir.path()).unwrap(),
            Some(t) => SledStore::open_with(self.dir.path(), t).unwrap(),
        }
    }
}

impl Harness for Sled {
    type Store = SledStore;

    fn store(&self) -> &SledStore {
        self.store.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        // Close first: sled locks its directory.
        self.store = None;
        self.store = Some(self.open());
    }
}

struct Memory(MemoryStore);

impl Harness for Memory {
    type Store = MemoryStore;

    fn store(&self) -> &MemoryStore {
        &self.0
    }

    fn reopen(&mut self) {
        self.0 = self.0.clone();
    }
}

fn memory() -> Memory {
    Memory(MemoryStore::new())
}

macro_rules! suite {
    ($backend:ident, $new:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn empty() {
                conformance::empty(&mut $new);
            }
            #[test]
            fn append_and_read() {
                conformance::append_and_read(&mut $new);
            }
            #[test]
            fn refuses_bad_appends() {
                conformance::refuses_bad_appends(&mut $new);
            }
            #[test]
            fn merkle_nodes() {
                conformance::merkle_nodes(&mut $new);
            }
            #[test]
            fn checkpoints() {
                conformance::checkpoints(&mut $new);
            }
            #[test]
            fn search() {
                conformance::search(&mut $new);
            }
            #[test]
            fn search_limit() {
                conformance::search_limit(&mut $new);
            }
            #[test]
            fn meta() {
                conformance::meta(&mut $new);
            }
            #[test]
            fn concurrent_appends() {
                conformance::concurrent_appends(&mut $new);
            }
            #[test]
            fn model_seed_1() {
                conformance::model(&mut $new, 1, 300);
            }
            #[test]
            fn model_seed_2() {
                conformance::model(&mut $new, 2, 300);
            }
        }
    };
}

suite!(sled, Sled::new());
suite!(sled_small_index_table, Sled::with_table(64));
suite!(memory, memory());

/// The whole suite in one go, as a new backend would call it.
#[test]
fn run_all_memory() {
    conformance::run_all(memory);
}

/// A directory held by an open store cannot be opened a second time; the error says so.
#[test]
fn sled_refuses_second_open() {
    let h = Sled::new();
    match SledStore::open(h.dir.path()) {
        Err(Error::Sled(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

/// A directory that is not a sled database is refused, not overwritten.
#[test]
fn sled_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), b"not a database at all, just some bytes").unwrap();
    std::fs::write(dir.path().join("conf"), b"garbage").unwrap();
    assert!(SledStore::open(dir.path()).is_err());
}

/// A store that was written, dropped without an explicit flush, and reopened has every
/// acknowledged append.
#[test]
fn sled_acknowledged_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let k = log_key(1);
    {
        let s = SledStore::open(dir.path()).unwrap();
        for i in 0..20 {
            let spec = Hop { mfp: i, body: i, parts: vec![], queue: format!("q{i}") };
            s.append(&k.public(), &[hop_entry(&k, i, &spec)]).unwrap();
        }
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.size(&k.public()).unwrap(), 20);
}

/// A writer killed mid-stream (abort: no destructors, no final flush, the recorded sizes
/// likely never written) loses no acknowledged append. Beyond them it may keep the batch that
/// was in flight, whole or a prefix of it: entries the writer signed, never acknowledged.
#[test]
fn sled_survives_abort() {
    const VAR: &str = "RINGLOG_STORE_ABORT_DIR";
    const BATCH: u64 = 16;
    let k = log_key(1);
    if let Some(dir) = std::env::var_os(VAR) {
        // The child: append until the main thread aborts the process.
        let s = SledStore::open(std::path::Path::new(&dir)).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for b in 0.. {
                    let es: Vec<_> = (b * BATCH..(b + 1) * BATCH)
                        .map(|i| conformance::realistic_hop(&k, i, i))
                        .collect();
                    let size = s.append(&k.public(), &es).unwrap();
                    println!("acked {size}");
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::process::abort();
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sled_survives_abort", "--nocapture", "--test-threads=1"])
        .env(VAR, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must have been aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acked: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("acked "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert!(acked > 0, "the child acknowledged nothing: {stdout}");
    let s = SledStore::open(dir.path()).unwrap();
    let size = s.size(&k.public()).unwrap();
    assert!(size >= acked, "acknowledged {acked} but only {size} survived");
    assert!(size <= acked + BATCH, "{size} entries survived, {acked} acknowledged");
    let entries = s.entries(&k.public(), 0, size).unwrap();
    assert_eq!(entries.len() as u64, size);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e, &conformance::realistic_hop(&k, i as u64, i as u64).encode(), "entry {i}");
    }
    let nodes = ringlog_node::store::LogNodes::new(&s, k.public());
    let root = ringlog_protocol::merkle::root(&nodes, size).unwrap();
    let leaves = entries.iter().map(|e| ringlog_protocol::merkle::leaf_hash(e));
    assert_eq!(root, ringlog_protocol::merkle::MemoryTree::from_leaf_hashes(leaves).root());
    let next = conformance::realistic_hop(&k, size, size);
    assert_eq!(s.append(&k.public(), &[next]).unwrap(), size + 1);
}

/// What a crash can leave past the last synced append: a frame cut short, a whole frame of
/// garbage, an entry signed by another key or one for the wrong index. The open keeps the
/// entries up to the first such frame, cuts the rest, and appends go on from there.
#[test]
fn an_open_cuts_a_torn_or_foreign_tail() {
    use std::io::Write as _;
    let k = log_key(3);
    let other = log_key(4);
    let log = k.public();
    let frame = |bytes: &[u8]| {
        let mut f = (bytes.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(bytes);
        f
    };
    let good = |i: u64| conformance::realistic_hop(&k, i, i).encode();
    let mut foreign = conformance::realistic_hop(&other, 6, 6);
    foreign.entry.log = log; // claims to be ours; the signature is another key's
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("cut short", frame(&good(5))[..40].to_vec()),
        ("garbage", frame(&[0xAB; 300])),
        ("foreign signature", frame(&foreign.encode())),
        ("wrong index", frame(&good(9))),
        ("zeros", vec![0; 4096]),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            let es: Vec<_> = (0..5).map(|i| conformance::realistic_hop(&k, i, i)).collect();
            s.append(&log, &es).unwrap();
            s.flush().unwrap();
        }
        // Entry 5 whole (synced, never recorded in sled), then the bad frame, then a good one.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("logs").join("0.entries"))
            .unwrap();
        f.write_all(&frame(&good(5))).unwrap();
        f.write_all(&tail).unwrap();
        f.write_all(&frame(&good(6))).unwrap();
        drop(f);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.size(&log).unwrap(), 6, "{what}");
        assert_eq!(s.entries(&log, 5, 6).unwrap(), vec![good(5)], "{what}");
        assert_eq!(s.append(&log, &[conformance::realistic_hop(&k, 6, 6)]).unwrap(), 7, "{what}");
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.size(&log).unwrap(), 7, "{what}");
        assert_eq!(s.entries(&log, 6, 7).unwrap(), vec![good(6)], "{what}");
    }
}

#[test]
fn an_open_rereads_a_bounded_tail_and_nothing_after_a_flush() {
    use ringlog_node::store::conformance::update_entry;
    let dir = tempfile::tempdir().unwrap();
    let k = log_key(7);
    let log = k.public();
    let n: u64 = 70_000;
    {
        let store = SledStore::open(dir.path()).unwrap();
        // Governance entries add no index records: only the bound on unsynced entries makes
        // the derived files durable here. Dropped without a flush, as a crash would.
        let mut i = 0;
        while i < n {
            let batch: Vec<_> = (i..(i + 1000).min(n)).map(|j| update_entry(&k, j)).collect();
            store.append(&log, &batch).unwrap();
            i += batch.len() as u64;
        }
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.size(&log).unwrap(), n);
    let reread = store.reread_at_open();
    assert!(reread > 0 && reread < 65_536, "re-read {reread} of {n} entries");
    store.flush().unwrap();
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.size(&log).unwrap(), n);
    assert_eq!(store.reread_at_open(), 0, "a flushed store re-read entries at open");
}
