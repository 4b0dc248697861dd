//! The storage conformance suite: one set of checks every [`Store`] must pass, run against each
//! backend through a [`Harness`] (after akd's `run_test_cases_for_storage_impl`), plus a
//! model-based check of random operations, restarts included, against plain maps (after sled's
//! `fuzz_model`). Test support: failures panic.
#![allow(clippy::unwrap_used)] // test support: a failed check is a panic with a message

use super::{Error, IndexKey, LogNodes, Store, SEARCH_LIMIT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringlog_protocol::merkle::{self, leaf_hash, Frontier, NodeSource};
use ringlog_protocol::record::{
    Body, Entry, HopRecord, MemberUpdate, NextHop, PrevHop, SignedEntry, Trust, Verdicts,
};
use ringlog_protocol::{sha256, Hash, LogId, SecretKey};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// A store under test that can be restarted.
pub trait Harness {
    /// The backend.
    type Store: Store;
    /// The store as it is now.
    fn store(&self) -> &Self::Store;
    /// Restarts the store on the same data (for a disk store: close and open the directory).
    fn reopen(&mut self);
}

/// Runs every check, each on a fresh harness from `new`.
pub fn run_all<H: Harness>(mut new: impl FnMut() -> H) {
    empty(&mut new());
    append_and_read(&mut new());
    refuses_bad_appends(&mut new());
    merkle_nodes(&mut new());
    checkpoints(&mut new());
    search(&mut new());
    search_limit(&mut new());
    meta(&mut new());
    concurrent_appends(&mut new());
    model(&mut new(), 1, 300);
}

/// The key of test log `n`.
pub fn log_key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// What a test hop record mentions; everything else is derived.
#[derive(Clone, Debug)]
pub struct Hop {
    /// Seed of mfp1 (and of mfp1-lite, which is shared by every third seed).
    pub mfp: u64,
    /// Seed of the body hash.
    pub body: u64,
    /// Seeds of the part hashes.
    pub parts: Vec<u64>,
    /// Queue id.
    pub queue: String,
}

/// A test hash from a label and a number.
pub fn test_hash(label: &str, n: u64) -> Hash {
    sha256(&[label.as_bytes(), &n.to_be_bytes()])
}

impl Hop {
    /// The index keys of a hop with this spec in `log`.
    pub fn keys(&self, log: &LogId) -> Vec<IndexKey> {
        let mut k = vec![
            IndexKey::Mfp1(test_hash("mfp1", self.mfp)),
            IndexKey::Mfp1Lite(test_hash("lite", self.mfp / 3)),
            IndexKey::Body(test_hash("body", self.body)),
        ];
        k.extend(self.parts.iter().map(|p| IndexKey::Part(test_hash("part", *p))));
        if !self.queue.is_empty() {
            k.push(IndexKey::QueueId(*log, self.queue.clone()));
        }
        k
    }
}

/// A hop record of `key`'s log at `index`, shaped like a real one (~250 bytes encoded).
pub fn hop_entry(key: &SecretKey, index: u64, spec: &Hop) -> SignedEntry {
    let n = spec.mfp;
    let hop = HopRecord {
        time_ms: 1_760_000_000_000 + n * 37,
        mfp1: test_hash("mfp1", spec.mfp),
        mfp1_lite: test_hash("lite", spec.mfp / 3),
        body: test_hash("body", spec.body),
        parts: spec.parts.iter().map(|p| test_hash("part", *p)).collect(),
        prev: PrevHop::External {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (n % 250) as u8)),
            helo: format!("mx{}.sender-{}.example", n % 4, n % 97),
        },
        next: NextHop::Member { name: "isp-b.example".into() },
        queue_id: spec.queue.clone(),
        rcpt_count: 1 + (n % 3) as u32,
        verdicts: Verdicts {
            trust: Some(Trust::Untrusted),
            spam_score_milli: Some((n % 9000) as i32),
            virus: None,
        },
        transform: None,
    };
    Entry { log: key.public(), index, body: Body::Hop(hop) }.sign(key).unwrap()
}

/// A realistic hop record number `n` (unique fingerprint, a queue id, two parts in one of four).
pub fn realistic_hop(key: &SecretKey, index: u64, n: u64) -> SignedEntry {
    let parts = if n.is_multiple_of(4) { vec![n, n + 1] } else { Vec::new() };
    let spec = Hop { mfp: n, body: n, parts, queue: format!("4d{:010X}", n) };
    hop_entry(key, index, &spec)
}

/// A governance entry (not indexed).
pub fn update_entry(key: &SecretKey, index: u64) -> SignedEntry {
    let body = Body::Update(MemberUpdate {
        addrs: vec!["/ip4/192.0.2.1/tcp/4001".into()],
        mail_hosts: vec!["mx.isp-a.example".into()],
        domains: vec!["isp-a.example".into()],
        abuse: "abuse@isp-a.example".into(),
    });
    Entry { log: key.public(), index, body }.sign(key).unwrap()
}

fn simple(n: u64) -> Hop {
    Hop { mfp: n, body: n, parts: Vec::new(), queue: format!("Q{n}") }
}

/// Everything observable about a log, for comparing before and after a restart.
#[derive(Debug, PartialEq)]
struct LogView {
    size: u64,
    entries: Vec<Vec<u8>>,
    root: Hash,
    checkpoints: Vec<(u64, String)>,
    latest: Option<(u64, String)>,
}

fn view<S: Store>(s: &S, log: &LogId) -> LogView {
    let size = s.size(log).unwrap();
    LogView {
        size,
        entries: s.entries(log, 0, size).unwrap(),
        root: merkle::root(&LogNodes::new(s, *log), size).unwrap(),
        checkpoints: s.checkpoints(log).unwrap(),
        latest: s.latest_checkpoint(log).unwrap(),
    }
}

/// The root of the tree over these encoded entries, computed from scratch.
fn reference_root(entries: &[Vec<u8>]) -> Hash {
    let mut f = Frontier::new();
    let mut out = Vec::new();
    for e in entries {
        f.push(leaf_hash(e), &mut out);
    }
    f.root()
}

/// A fresh store is empty.
pub fn empty<H: Harness>(h: &mut H) {
    for _ in 0..2 {
        let s = h.store();
        let log = log_key(1).public();
        assert_eq!(s.size(&log).unwrap(), 0);
        assert!(s.logs().unwrap().is_empty());
        assert_eq!(s.entry(&log, 0).unwrap(), None);
        assert!(s.entries(&log, 0, 10).unwrap().is_empty());
        assert_eq!(s.node(&log, 0, 0).unwrap(), None);
        assert_eq!(s.checkpoint(&log, 0).unwrap(), None);
        assert_eq!(s.latest_checkpoint(&log).unwrap(), None);
        assert!(s.checkpoints(&log).unwrap().is_empty());
        assert!(s.search(&IndexKey::Mfp1(test_hash("mfp1", 0))).unwrap().is_empty());
        assert_eq!(s.meta("x").unwrap(), None);
        assert_eq!(merkle::root(&LogNodes::new(s, log), 0).unwrap(), merkle::empty_root());
        s.flush().unwrap();
        h.reopen();
    }
}

/// Entries come back byte for byte, from two logs, across a restart.
pub fn append_and_read<H: Harness>(h: &mut H) {
    let (ka, kb) = (log_key(1), log_key(2));
    let (a, b) = (ka.public(), kb.public());
    let mut want_a = Vec::new();
    let mut want_b = Vec::new();
    let s = h.store();
    for batch in [1u64, 3, 1, 7] {
        let start = want_a.len() as u64;
        let es: Vec<_> = (start..start + batch)
            .map(|i| if i % 5 == 2 { update_entry(&ka, i) } else { hop_entry(&ka, i, &simple(i)) })
            .collect();
        assert_eq!(s.append(&a, &es).unwrap(), start + batch);
        want_a.extend(es.iter().map(SignedEntry::encode));
        let eb = hop_entry(&kb, want_b.len() as u64, &simple(100 + want_b.len() as u64));
        assert_eq!(s.append(&b, std::slice::from_ref(&eb)).unwrap(), want_b.len() as u64 + 1);
        want_b.push(eb.encode());
    }
    assert_eq!(s.append(&a, &[]).unwrap(), 12, "an empty append changes nothing");
    for round in 0..2 {
        let s = h.store();
        let mut logs = vec![a, b];
        logs.sort();
        assert_eq!(s.logs().unwrap(), logs, "round {round}");
        for (log, want) in [(&a, &want_a), (&b, &want_b)] {
            assert_eq!(s.size(log).unwrap(), want.len() as u64);
            for (i, e) in want.iter().enumerate() {
                assert_eq!(s.entry(log, i as u64).unwrap().as_ref(), Some(e));
                assert!(SignedEntry::decode(e).is_ok());
            }
            assert_eq!(s.entry(log, want.len() as u64).unwrap(), None);
            assert_eq!(&s.entries(log, 0, want.len() as u64).unwrap(), want);
            assert_eq!(s.entries(log, 1, 3).unwrap(), want[1..3].to_vec());
            assert_eq!(s.entries(log, 2, 1000).unwrap(), want[2..].to_vec(), "cut at the size");
            assert!(s.entries(log, 3, 3).unwrap().is_empty());
            assert!(s.entries(log, 5, 2).unwrap().is_empty());
            assert!(s.entries(log, 1000, 2000).unwrap().is_empty());
            let root = merkle::root(&LogNodes::new(s, *log), want.len() as u64).unwrap();
            assert_eq!(root, reference_root(want));
        }
        h.reopen();
    }
}

/// Appends at the wrong position or for another log fail and write nothing.
pub fn refuses_bad_appends<H: Harness>(h: &mut H) {
    let (ka, kb) = (log_key(1), log_key(2));
    let (a, b) = (ka.public(), kb.public());
    let s = h.store();
    // The first append must start at 0, and a refused one does not make the log known.
    let e = s.append(&a, &[hop_entry(&ka, 1, &simple(1))]).unwrap_err();
    assert_eq!(e, Error::NotConsecutive { expected: 0, found: 1 });
    assert!(s.logs().unwrap().is_empty());
    let es: Vec<_> = (0..3).map(|i| hop_entry(&ka, i, &simple(i))).collect();
    assert_eq!(s.append(&a, &es).unwrap(), 3);
    for _ in 0..2 {
        let s = h.store();
        let before = view(s, &a);
        // A gap inside the batch.
        let gap = [hop_entry(&ka, 3, &simple(3)), hop_entry(&ka, 5, &simple(5))];
        assert_eq!(
            s.append(&a, &gap).unwrap_err(),
            Error::NotConsecutive { expected: 4, found: 5 }
        );
        // A rewrite of an existing index.
        assert_eq!(
            s.append(&a, &[hop_entry(&ka, 2, &simple(9))]).unwrap_err(),
            Error::NotConsecutive { expected: 3, found: 2 }
        );
        // An entry of another log.
        let mixed = [hop_entry(&ka, 3, &simple(3)), hop_entry(&kb, 4, &simple(4))];
        assert_eq!(s.append(&a, &mixed).unwrap_err(), Error::WrongLog { expected: a, found: b });
        assert_eq!(
            s.append(&b, &[hop_entry(&ka, 0, &simple(7))]).unwrap_err(),
            Error::WrongLog { expected: b, found: a }
        );
        assert_eq!(view(s, &a), before);
        assert_eq!(s.logs().unwrap(), vec![a]);
        assert_eq!(s.entry(&a, 3).unwrap(), None);
        assert_eq!(s.node(&a, 0, 3).unwrap(), None);
        for k in simple(3).keys(&a).iter().chain(&simple(9).keys(&a)) {
            assert!(s.search(k).unwrap().is_empty(), "{k:?} indexed by a refused append");
        }
        h.reopen();
    }
    let s = h.store();
    assert_eq!(s.size(&a).unwrap(), 3);
    assert_eq!(s.append(&a, &[hop_entry(&ka, 3, &simple(3))]).unwrap(), 4);
}

/// Every Merkle node the tree needs is stored and correct, so roots and proofs for every past
/// size verify, before and after a restart.
pub fn merkle_nodes<H: Harness>(h: &mut H) {
    let k = log_key(3);
    let log = k.public();
    let mut reference = Frontier::new();
    let mut roots = vec![reference.root()];
    let mut nodes = Vec::new();
    let mut all_nodes = Vec::new();
    let mut size = 0u64;
    for (round, batch) in [1u64, 1, 2, 3, 1, 8, 5, 13, 1, 21, 16, 1, 2].into_iter().enumerate() {
        let es: Vec<_> = (size..size + batch).map(|i| hop_entry(&k, i, &simple(i))).collect();
        size = h.store().append(&log, &es).unwrap();
        for e in &es {
            nodes.clear();
            reference.push(leaf_hash(&e.encode()), &mut nodes);
            all_nodes.extend_from_slice(&nodes);
            roots.push(reference.root());
        }
        if round % 4 == 3 {
            h.reopen();
        }
        let s = h.store();
        let src = LogNodes::new(s, log);
        for &(level, index, hash) in &all_nodes {
            assert_eq!(s.node(&log, level, index).unwrap(), Some(hash), "node {level}/{index}");
        }
        for level in 0..8u8 {
            // The subtree starting at the right edge is never complete.
            assert_eq!(s.node(&log, level, size >> level).unwrap(), None);
        }
        assert_eq!(src.node(0, size).unwrap_err(), Error::MissingNode { level: 0, index: size });
        for m in 1..=size {
            let root = merkle::root(&src, m).unwrap();
            assert_eq!(root, roots[m as usize], "root at size {m}");
            assert_eq!(Frontier::from_source(&src, m).unwrap().root(), root);
        }
        // Inclusion of a few leaves in a few sizes, and consistency between sizes.
        for m in [1, size / 2 + 1, size] {
            for i in [0, m / 3, m - 1] {
                let leaf = leaf_hash(&s.entry(&log, i).unwrap().unwrap());
                let proof = merkle::inclusion_proof(&src, i, m).unwrap();
                merkle::verify_inclusion(&leaf, i, m, &proof, &roots[m as usize]).unwrap();
            }
            let proof = merkle::consistency_proof(&src, m, size).unwrap();
            merkle::verify_consistency(m, size, &roots[m as usize], &roots[size as usize], &proof)
                .unwrap();
        }
    }
}

/// Checkpoints are kept per (log, size), replaced by a newer note for the same size, listed by
/// ascending size, and survive a restart; a log with only checkpoints is a known log.
pub fn checkpoints<H: Harness>(h: &mut H) {
    let (a, b) = (log_key(1).public(), log_key(2).public());
    let s = h.store();
    s.put_checkpoint(&a, 10, "a 10\n").unwrap();
    s.put_checkpoint(&a, 3, "a 3\n").unwrap();
    s.put_checkpoint(&a, 300, "a 300\n").unwrap();
    s.put_checkpoint(&a, 10, "a 10 cosigned\n").unwrap();
    s.put_checkpoint(&b, 0, "b 0\n").unwrap();
    let big = "x".repeat(super::MAX_NOTE_BYTES + 1);
    assert!(matches!(s.put_checkpoint(&b, 1, &big), Err(Error::TooLarge { .. })));
    for _ in 0..2 {
        let s = h.store();
        let mut logs = vec![a, b];
        logs.sort();
        assert_eq!(s.logs().unwrap(), logs);
        assert_eq!(s.size(&b).unwrap(), 0);
        assert_eq!(s.checkpoint(&a, 10).unwrap().as_deref(), Some("a 10 cosigned\n"));
        assert_eq!(s.checkpoint(&a, 11).unwrap(), None);
        assert_eq!(s.checkpoint(&b, 1).unwrap(), None);
        assert_eq!(s.latest_checkpoint(&a).unwrap(), Some((300, "a 300\n".into())));
        assert_eq!(s.latest_checkpoint(&b).unwrap(), Some((0, "b 0\n".into())));
        assert_eq!(
            s.checkpoints(&a).unwrap(),
            vec![(3, "a 3\n".into()), (10, "a 10 cosigned\n".into()), (300, "a 300\n".into())]
        );
        h.reopen();
    }
    // A log first known by its checkpoints takes entries normally.
    let kb = log_key(2);
    assert_eq!(h.store().append(&b, &[hop_entry(&kb, 0, &simple(0))]).unwrap(), 1);
    h.reopen();
    assert_eq!(h.store().size(&b).unwrap(), 1);
}

/// Every index key finds its hop records, in every log, and nothing else.
pub fn search<H: Harness>(h: &mut H) {
    let (ka, kb) = (log_key(1), log_key(2));
    let (a, b) = (ka.public(), kb.public());
    // Log b is written first, so it comes first in results.
    let s = h.store();
    let shared = Hop { mfp: 7, body: 70, parts: vec![1, 2, 2], queue: "Q7".into() };
    s.append(&b, &[hop_entry(&kb, 0, &shared), update_entry(&kb, 1)]).unwrap();
    let other = Hop { mfp: 8, body: 70, parts: vec![2, 3], queue: String::new() };
    let es = vec![
        hop_entry(&ka, 0, &simple(1)),
        hop_entry(&ka, 1, &shared),
        update_entry(&ka, 2),
        hop_entry(&ka, 3, &other),
    ];
    s.append(&a, &es).unwrap();
    for _ in 0..2 {
        let s = h.store();
        let check = |k: IndexKey, want: Vec<(LogId, u64)>| {
            assert_eq!(s.search(&k).unwrap(), want, "{k:?}");
        };
        check(IndexKey::Mfp1(test_hash("mfp1", 7)), vec![(b, 0), (a, 1)]);
        check(IndexKey::Mfp1(test_hash("mfp1", 8)), vec![(a, 3)]);
        check(IndexKey::Mfp1(test_hash("mfp1", 9)), vec![]);
        // mfp 7 and 8 share mfp1-lite (7 / 3 == 8 / 3 == 2).
        check(IndexKey::Mfp1Lite(test_hash("lite", 2)), vec![(b, 0), (a, 1), (a, 3)]);
        check(IndexKey::Mfp1Lite(test_hash("lite", 0)), vec![(a, 0)]);
        check(IndexKey::Body(test_hash("body", 70)), vec![(b, 0), (a, 1), (a, 3)]);
        check(IndexKey::Body(test_hash("body", 1)), vec![(a, 0)]);
        check(IndexKey::Part(test_hash("part", 1)), vec![(b, 0), (a, 1)]);
        check(IndexKey::Part(test_hash("part", 2)), vec![(b, 0), (a, 1), (a, 3)]);
        check(IndexKey::Part(test_hash("part", 3)), vec![(a, 3)]);
        // A body hash is not a part hash.
        check(IndexKey::Part(test_hash("body", 70)), vec![]);
        check(IndexKey::Body(test_hash("part", 2)), vec![]);
        // Queue ids belong to their log.
        check(IndexKey::QueueId(a, "Q7".into()), vec![(a, 1)]);
        check(IndexKey::QueueId(b, "Q7".into()), vec![(b, 0)]);
        check(IndexKey::QueueId(a, "Q1".into()), vec![(a, 0)]);
        check(IndexKey::QueueId(b, "Q1".into()), vec![]);
        check(IndexKey::QueueId(a, String::new()), vec![]);
        check(IndexKey::QueueId(log_key(9).public(), "Q7".into()), vec![]);
        h.reopen();
    }
}

/// A search returns at most [`SEARCH_LIMIT`] results, the first ones.
pub fn search_limit<H: Harness>(h: &mut H) {
    let k = log_key(4);
    let log = k.public();
    let n = SEARCH_LIMIT as u64 + 3;
    let es: Vec<_> = (0..n)
        .map(|i| hop_entry(&k, i, &Hop { mfp: i, body: 1, parts: Vec::new(), queue: "q".into() }))
        .collect();
    h.store().append(&log, &es).unwrap();
    let want: Vec<_> = (0..SEARCH_LIMIT as u64).map(|i| (log, i)).collect();
    assert_eq!(h.store().search(&IndexKey::Body(test_hash("body", 1))).unwrap(), want);
    assert_eq!(h.store().search(&IndexKey::QueueId(log, "q".into())).unwrap(), want);
}

/// Meta values are kept, replaced and survive a restart.
pub fn meta<H: Harness>(h: &mut H) {
    let s = h.store();
    s.put_meta("a", b"1").unwrap();
    s.put_meta("b", b"").unwrap();
    s.put_meta("a", b"2").unwrap();
    s.put_meta("", &[0, 255]).unwrap();
    let long = "k".repeat(super::MAX_META_KEY + 1);
    assert!(matches!(s.put_meta(&long, b"x"), Err(Error::TooLarge { .. })));
    for _ in 0..2 {
        let s = h.store();
        assert_eq!(s.meta("a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.meta("b").unwrap(), Some(Vec::new()));
        assert_eq!(s.meta("").unwrap(), Some(vec![0, 255]));
        assert_eq!(s.meta("c").unwrap(), None);
        assert_eq!(s.meta(&long).unwrap(), None);
        h.reopen();
    }
}

/// Writers on several threads, each to its own log, do not disturb each other.
pub fn concurrent_appends<H: Harness>(h: &mut H) {
    let s = h.store();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            scope.spawn(move || {
                let k = log_key(10 + t);
                for i in 0..15u64 {
                    let e = hop_entry(&k, i, &simple(u64::from(t) * 1000 + i));
                    assert_eq!(s.append(&k.public(), &[e]).unwrap(), i + 1);
                    if i % 5 == 0 {
                        s.put_checkpoint(&k.public(), i + 1, "note").unwrap();
                    }
                }
            });
        }
    });
    h.reopen();
    let s = h.store();
    assert_eq!(s.logs().unwrap().len(), 4);
    for t in 0..4u8 {
        let k = log_key(10 + t);
        let v = view(s, &k.public());
        assert_eq!(v.size, 15);
        assert_eq!(v.root, reference_root(&v.entries));
        assert_eq!(v.checkpoints.len(), 3);
        let want = vec![(k.public(), 3)];
        assert_eq!(
            s.search(&IndexKey::Mfp1(test_hash("mfp1", u64::from(t) * 1000 + 3))).unwrap(),
            want
        );
    }
}

/// What the model expects of the store.
#[derive(Default)]
struct Model {
    /// Logs in the order they were first written.
    order: Vec<LogId>,
    entries: BTreeMap<LogId, Vec<(Hop, Vec<u8>)>>,
    checkpoints: BTreeMap<LogId, BTreeMap<u64, String>>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn touch(&mut self, log: &LogId) {
        if !self.order.contains(log) {
            self.order.push(*log);
        }
    }

    fn search(&self, key: &IndexKey) -> Vec<(LogId, u64)> {
        let mut out = Vec::new();
        for log in &self.order {
            for (i, (hop, _)) in self.entries.get(log).into_iter().flatten().enumerate() {
                if hop.keys(log).contains(key) {
                    out.push((*log, i as u64));
                }
            }
        }
        out
    }

    fn check<S: Store>(&self, s: &S, logs: &[SecretKey], step: usize) {
        let mut known = self.order.clone();
        known.sort();
        assert_eq!(s.logs().unwrap(), known, "step {step}");
        for k in logs {
            let log = k.public();
            let want: Vec<Vec<u8>> =
                self.entries.get(&log).into_iter().flatten().map(|(_, e)| e.clone()).collect();
            let cps: Vec<(u64, String)> = self
                .checkpoints
                .get(&log)
                .into_iter()
                .flatten()
                .map(|(s, n)| (*s, n.clone()))
                .collect();
            let v = view(s, &log);
            assert_eq!(v.size, want.len() as u64, "step {step}");
            assert_eq!(v.entries, want, "step {step}");
            assert_eq!(v.root, reference_root(&want), "step {step}");
            assert_eq!(v.latest, cps.last().cloned(), "step {step}");
            assert_eq!(v.checkpoints, cps, "step {step}");
        }
        for key in (0..12).map(|m| IndexKey::Mfp1Lite(test_hash("lite", m))) {
            assert_eq!(s.search(&key).unwrap(), self.search(&key), "step {step}: {key:?}");
        }
        for key in (0..8).map(|b| IndexKey::Body(test_hash("body", b))) {
            assert_eq!(s.search(&key).unwrap(), self.search(&key), "step {step}: {key:?}");
        }
        for (key, v) in &self.meta {
            assert_eq!(s.meta(key).unwrap().as_ref(), Some(v), "step {step}");
        }
    }
}

/// Random appends (good and bad), checkpoints, meta writes and restarts, checked against a
/// model after every step.
pub fn model<H: Harness>(h: &mut H, seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let logs: Vec<SecretKey> = (20..23).map(log_key).collect();
    let mut m = Model::default();
    let mut next_mfp = 0u64;
    for step in 0..steps {
        let k = &logs[rng.gen_range(0..logs.len())];
        let log = k.public();
        let size = m.entries.get(&log).map_or(0, Vec::len) as u64;
        let mut full = false;
        match rng.gen_range(0..100) {
            0..=49 => {
                let n = rng.gen_range(0..6u64);
                let mut batch = Vec::new();
                let mut es = Vec::new();
                for i in size..size + n {
                    next_mfp += 1;
                    let spec = Hop {
                        mfp: next_mfp % 36,
                        body: rng.gen_range(0..8),
                        parts: Vec::new(),
                        queue: String::new(),
                    };
                    let e = hop_entry(k, i, &spec);
                    es.push(e.clone());
                    batch.push((spec, e.encode()));
                }
                assert_eq!(h.store().append(&log, &es).unwrap(), size + n, "step {step}");
                if n > 0 {
                    m.touch(&log);
                    m.entries.entry(log).or_default().extend(batch);
                }
            }
            50..=59 => {
                // At a wrong index: refused, nothing changes.
                let wrong = if rng.gen_bool(0.5) { size } else { size + 2 };
                let es = [hop_entry(k, size, &simple(999)), hop_entry(k, wrong, &simple(998))];
                let got = h.store().append(&log, &es);
                assert!(matches!(got, Err(Error::NotConsecutive { .. })), "step {step}");
                full = true;
            }
            60..=74 => {
                let cp = rng.gen_range(0..20u64);
                let note = format!("{step}\n");
                h.store().put_checkpoint(&log, cp, &note).unwrap();
                m.touch(&log);
                m.checkpoints.entry(log).or_default().insert(cp, note);
            }
            75..=84 => {
                let key = format!("key{}", rng.gen_range(0..4));
                let value = step.to_be_bytes().to_vec();
                h.store().put_meta(&key, &value).unwrap();
                m.meta.insert(key, value);
            }
            85..=89 => h.store().flush().unwrap(),
            _ => {
                h.reopen();
                full = true;
            }
        }
        // Everything is compared often and after every restart; the touched log every step.
        if full || step % 8 == 7 || step + 1 == steps {
            m.check(h.store(), &logs, step);
        } else {
            let want = m.entries.get(&log).map_or(0, Vec::len) as u64;
            assert_eq!(h.store().size(&log).unwrap(), want, "step {step}");
        }
    }
}
