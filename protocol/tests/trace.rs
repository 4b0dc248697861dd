//! Trace and evidence: path building, gaps and their duty, transform following, mfp1-lite
//! fallback, and offline verification of evidence bundles (including every single-byte flip).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use ringlog_protocol::checkpoint::{Checkpoint, Cosignature};
use ringlog_protocol::equivocation::IncludedEntry;
use ringlog_protocol::evidence::{self, Bundle, EvidenceError, Query};
use ringlog_protocol::genesis::{Genesis, GENESIS_VERSION};
use ringlog_protocol::merkle::{inclusion_proof, leaf_hash, MemoryTree};
use ringlog_protocol::record::{
    Admission, Body, Entry, HopRecord, MemberInfo, NextHop, PrevHop, SignedEntry, Transform,
    Verdicts,
};
use ringlog_protocol::trace::{self, gather, Lookup, MatchKind};
use ringlog_protocol::{sha256, Hash, LogId, SecretKey};
use std::collections::BTreeMap;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn info(name: &str, n: u8) -> MemberInfo {
    MemberInfo {
        name: name.into(),
        log_key: key(n).public(),
        node_key: key(n + 100).public(),
        addrs: vec![],
        mail_hosts: vec![format!("mx.{name}")],
        domains: vec![name.into()],
        abuse: format!("abuse@{name}"),
    }
}

fn h(label: &str) -> Hash {
    sha256(&[label.as_bytes()])
}

/// A ring of a, b, c (genesis) and d (admitted by c), each with an in-memory log.
struct World {
    g: Genesis,
    keys: BTreeMap<String, SecretKey>,
    logs: BTreeMap<String, Vec<SignedEntry>>,
}

impl World {
    fn new() -> World {
        let g = Genesis {
            version: GENESIS_VERSION,
            ring: "test-ring".into(),
            members: vec![info("a.example", 1), info("b.example", 2), info("c.example", 3)],
            backbone_quorum: 2,
            witness_k: 1,
        };
        let mut keys = BTreeMap::new();
        for (n, name) in ["a.example", "b.example", "c.example", "d.example"].iter().enumerate() {
            keys.insert(name.to_string(), key(n as u8 + 1));
        }
        let mut w = World { g, keys, logs: BTreeMap::new() };
        w.append("c.example", Body::Admit(Admission { member: info("d.example", 4) }));
        w
    }

    fn append(&mut self, member: &str, body: Body) -> (LogId, u64) {
        let k = &self.keys[member];
        let log = self.logs.entry(member.to_string()).or_default();
        let e = Entry { log: k.public(), index: log.len() as u64, body }.sign(k).unwrap();
        log.push(e);
        (k.public(), log.len() as u64 - 1)
    }

    fn hop(
        &mut self,
        member: &str,
        t: u64,
        mfp: &str,
        prev: PrevHop,
        next: NextHop,
    ) -> SignedEntry {
        self.hop_t(member, t, mfp, prev, next, None)
    }

    fn hop_t(
        &mut self,
        member: &str,
        t: u64,
        mfp: &str,
        prev: PrevHop,
        next: NextHop,
        transform: Option<Transform>,
    ) -> SignedEntry {
        let rec = HopRecord {
            time_ms: t,
            mfp1: h(mfp),
            mfp1_lite: h("lite"),
            body: h("body"),
            parts: vec![h("part1"), h("part2")],
            prev,
            next,
            queue_id: format!("Q{t}"),
            rcpt_count: 1,
            verdicts: Verdicts::default(),
            transform,
        };
        let (_, i) = self.append(member, Body::Hop(rec));
        self.logs[member][i as usize].clone()
    }

    fn names(&self) -> BTreeMap<LogId, String> {
        self.keys.iter().map(|(n, k)| (k.public(), n.clone())).collect()
    }

    /// Entry `index` of `member`'s log with its proof to a checkpoint of the whole log, signed
    /// by the log and cosigned by `cosigners`.
    fn included(&self, member: &str, index: u64, cosigners: &[&str]) -> IncludedEntry {
        let log = &self.logs[member];
        let bytes: Vec<Vec<u8>> = log.iter().map(SignedEntry::encode).collect();
        let tree = MemoryTree::from_leaf_hashes(bytes.iter().map(|b| leaf_hash(b)));
        let cp = Checkpoint { origin: self.g.origin(member), size: tree.size(), root: tree.root() };
        let mut signed = cp.sign(&self.keys[member], &cp.origin).unwrap();
        for w in cosigners {
            let c = Cosignature::create(&self.keys[*w], w, &cp, 1_700_000_000).unwrap();
            signed.add_cosignature(&c).unwrap();
        }
        IncludedEntry {
            entry: bytes[index as usize].clone(),
            proof: inclusion_proof(&tree, index, tree.size()).unwrap(),
            checkpoint: signed,
        }
    }
}

fn member(name: &str) -> NextHop {
    NextHop::Member { name: name.into() }
}

fn from(name: &str) -> PrevHop {
    PrevHop::Member { name: name.into() }
}

fn customer() -> PrevHop {
    PrevHop::Customer { commitment: h("commit") }
}

/// d (customer) -> c -> a -> b -> local.
fn path(w: &mut World) -> Vec<SignedEntry> {
    vec![
        w.hop("d.example", 10, "m", customer(), member("c.example")),
        w.hop("c.example", 20, "m", from("d.example"), member("a.example")),
        w.hop("a.example", 30, "m", from("c.example"), member("b.example")),
        w.hop(
            "b.example",
            40,
            "m",
            from("a.example"),
            NextHop::Local { domain: "b.example".into() },
        ),
    ]
}

#[test]
fn confirmed_path_names_origin_and_delivery() {
    let mut w = World::new();
    let mut recs = path(&mut w);
    recs.reverse(); // input order must not matter
    let t = trace::trace(&h("m"), MatchKind::Mfp1, &recs, &w.names());
    let o = t.origin.as_ref().unwrap();
    assert_eq!(o.member, "d.example");
    assert_eq!(o.kind, trace::OriginKind::Customer { commitment: h("commit") });
    let order: Vec<&str> = t.hops.iter().map(|x| x.member.as_str()).collect();
    assert_eq!(order, ["d.example", "c.example", "a.example", "b.example"]);
    assert_eq!(t.links.len(), 3);
    assert!(t.all_confirmed(), "{:?}", t.links);
    assert_eq!(t.deliveries.len(), 1);
    assert_eq!(t.deliveries[0].member, "b.example");
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn missing_record_is_a_gap_with_its_duty() {
    let mut w = World::new();
    let mut recs = path(&mut w);
    recs.remove(2); // a.example wrote nothing
    let t = trace::trace(&h("m"), MatchKind::Mfp1, &recs, &w.names());
    assert_eq!(t.origin.unwrap().member, "d.example");
    let gaps: Vec<_> = t.links.iter().filter(|l| !l.confirmed).collect();
    assert_eq!(gaps.len(), 2, "{:?}", t.links);
    assert!(gaps.iter().all(|l| l.duty.as_deref() == Some("a.example")));
    let text: Vec<&str> = gaps.iter().filter_map(|l| l.gap.as_deref()).collect();
    assert!(text.contains(
        &"c.example recorded sending to a.example, but a.example has no record of receiving from c.example"
    ));
    assert!(text.contains(
        &"b.example recorded receiving from a.example, but a.example has no record of sending to b.example"
    ));
    // The sender's missing side is the sender's duty.
    let mut w = World::new();
    let mut recs = path(&mut w);
    recs.remove(1); // c.example wrote nothing
    let t = trace::trace(&h("m"), MatchKind::Mfp1, &recs, &w.names());
    let gaps: Vec<_> = t.links.iter().filter(|l| !l.confirmed).collect();
    assert!(gaps.iter().all(|l| l.duty.as_deref() == Some("c.example")), "{gaps:?}");
}

#[test]
fn no_entry_record_means_no_origin() {
    let mut w = World::new();
    let mut recs = path(&mut w);
    recs.remove(0);
    let t = trace::trace(&h("m"), MatchKind::Mfp1, &recs, &w.names());
    assert!(t.origin.is_none());
    assert!(t.notes.iter().any(|n| n.contains("entered the ring")));
    let gap = t.links.iter().find(|l| !l.confirmed).unwrap();
    assert_eq!(gap.duty.as_deref(), Some("d.example"));
}

/// A store of records answering the gatherer's lookups.
fn finder(recs: &[SignedEntry]) -> impl FnMut(Lookup) -> Result<Vec<SignedEntry>, ()> + '_ {
    move |l| {
        Ok(recs
            .iter()
            .filter(|e| {
                let x = e.hop().unwrap();
                match l {
                    Lookup::Mfp1(f) => x.mfp1 == f,
                    Lookup::Mfp1Lite(f) => x.mfp1_lite == f,
                    Lookup::TransformIn(f) => x.transform.as_ref().is_some_and(|t| t.input == f),
                }
            })
            .cloned()
            .collect())
    }
}

#[test]
fn transform_links_are_followed_both_ways() {
    let mut w = World::new();
    let tr = Transform { input: h("x"), output: h("y") };
    let recs = vec![
        w.hop("d.example", 10, "x", customer(), member("c.example")),
        w.hop("c.example", 20, "x", from("d.example"), member("a.example")),
        // a.example is a mailing list: it receives x and sends y.
        w.hop_t("a.example", 30, "y", from("c.example"), member("b.example"), Some(tr)),
        w.hop("b.example", 40, "y", from("a.example"), NextHop::Local { domain: "b".into() }),
        w.hop(
            "b.example",
            50,
            "unrelated",
            from("a.example"),
            NextHop::Local { domain: "b".into() },
        ),
    ];
    for q in ["x", "y"] {
        let (kind, got) = gather(&h(q), None, finder(&recs)).unwrap();
        assert_eq!(kind, MatchKind::Mfp1);
        assert_eq!(got.len(), 4, "from {q}");
        let t = trace::trace(&h(q), kind, &got, &w.names());
        assert_eq!(t.origin.as_ref().unwrap().member, "d.example");
        assert!(t.all_confirmed(), "{:?}", t.links);
        assert_eq!(t.fingerprints.len(), 2);
        assert_eq!(t.hops.last().unwrap().member, "b.example");
    }
}

#[test]
fn mfp1_lite_is_the_fallback() {
    let mut w = World::new();
    // Each hop rewrote the Message-ID: mfp1 differs, mfp1-lite is the same.
    let recs = vec![
        w.hop("d.example", 10, "m1", customer(), member("c.example")),
        w.hop(
            "c.example",
            20,
            "m2",
            from("d.example"),
            NextHop::External { host: "mx.out".into() },
        ),
    ];
    let (kind, got) = gather(&h("m9"), Some(&h("lite")), finder(&recs)).unwrap();
    assert_eq!(kind, MatchKind::Mfp1Lite);
    assert_eq!(got.len(), 2);
    let t = trace::trace(&h("lite"), kind, &got, &w.names());
    assert_eq!(t.origin.as_ref().unwrap().member, "d.example");
    assert!(t.all_confirmed());
    // With an mfp1 that matches, no fallback.
    let (kind, got) = gather(&h("m1"), Some(&h("lite")), finder(&recs)).unwrap();
    assert_eq!((kind, got.len()), (MatchKind::Mfp1, 1));
}

#[test]
fn body_search_groups_by_message() {
    let mut w = World::new();
    let mut recs = path(&mut w);
    recs.push(w.hop("a.example", 70, "other", customer(), member("b.example")));
    let found = trace::messages_by_body(&h("nothing"), &[h("part2")], &recs, &w.names());
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].mfp1, h("m"));
    assert_eq!(found[0].records, 4);
    assert_eq!(found[0].entered_at, ["d.example"]);
    assert_eq!(found[1].entered_at, ["a.example"]);
}

/// The bundle for the full path, cosigned by `cosigners` (names of other members).
fn bundle(w: &mut World, cosign: bool) -> Bundle {
    path(w);
    let mut records = Vec::new();
    for m in ["d.example", "c.example", "a.example", "b.example"] {
        let idx = w.logs[m].iter().position(|e| e.hop().is_some()).unwrap() as u64;
        let cos: Vec<&str> = if cosign {
            ["a.example", "b.example"].into_iter().filter(|x| *x != m).collect()
        } else {
            vec![]
        };
        records.push(w.included(m, idx, &cos));
    }
    Bundle {
        version: evidence::BUNDLE_VERSION,
        ring_id: w.g.ring_id(),
        query: Query { fingerprint: h("m"), matched_by: MatchKind::Mfp1 },
        records,
        admissions: vec![w.included("c.example", 0, &[])],
    }
}

#[test]
fn valid_bundle_verifies_with_the_trace() {
    let mut w = World::new();
    let b = bundle(&mut w, true);
    let v = evidence::verify_bytes(&b.to_canonical(), &w.g, 1).unwrap();
    assert_eq!(v.trace.origin.as_ref().unwrap().member, "d.example");
    assert!(v.trace.all_confirmed());
    assert_eq!(v.proven_members["d.example"], "c.example");
    // c.example's admission and hop record are proven into the same checkpoint (one copy
    // cosigned): every checkpoint has its two cosignatures.
    assert!(v.witnessed, "{:?}", v.checkpoints);
    let d = v.checkpoints.iter().find(|c| c.member == "d.example").unwrap();
    assert!(d.witnessed && d.cosignatures == 2, "{d:?}");
    assert!(!evidence::verify(&b, &w.g, 3).unwrap().witnessed);
    assert_eq!(v.bundle_hash, sha256(&[&b.to_canonical()]));
}

#[test]
fn checkpoint_without_k_cosignatures_is_not_witnessed() {
    let mut w = World::new();
    let b = bundle(&mut w, false);
    let v = evidence::verify(&b, &w.g, 1).unwrap();
    assert!(!v.witnessed);
    assert!(v.checkpoints.iter().all(|c| !c.witnessed && c.cosignatures == 0));
    let v = evidence::verify(&b, &w.g, 0).unwrap();
    assert!(v.witnessed);
}

#[test]
fn missing_admission_or_wrong_ring_fails() {
    let mut w = World::new();
    let mut b = bundle(&mut w, false);
    let mut no_adm = b.clone();
    no_adm.admissions.clear();
    assert!(matches!(
        evidence::verify(&no_adm, &w.g, 0),
        Err(EvidenceError::UnprovenLog { what: "record", .. })
    ));
    let mut other = w.g.clone();
    other.ring = "other".into();
    assert!(matches!(evidence::verify(&b, &other, 0), Err(EvidenceError::WrongRing { .. })));
    b.query.fingerprint = h("not there");
    assert!(matches!(evidence::verify(&b, &w.g, 0), Err(EvidenceError::QueryNotFound(_))));
}

#[test]
fn every_single_byte_flip_fails_with_a_reason() {
    let mut w = World::new();
    let b = bundle(&mut w, true);
    let bytes = b.to_canonical();
    assert!(evidence::verify_bytes(&bytes, &w.g, 0).is_ok());
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x20] {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            match evidence::verify_bytes(&bad, &w.g, 0) {
                Err(e) => assert!(!e.to_string().is_empty()),
                Ok(_) => panic!(
                    "flip {mask:#x} at byte {i} of {} verified: ...{}...",
                    bytes.len(),
                    String::from_utf8_lossy(
                        &bytes[i.saturating_sub(40)..(i + 40).min(bytes.len())]
                    )
                ),
            }
        }
    }
}
