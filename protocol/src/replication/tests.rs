//! Unit tests of the replication state machine: one replica, a scripted writer, and peers
//! named by numbers.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::*;
use crate::checkpoint::Checkpoint;
use crate::merkle::MemoryTree;
use crate::record::{Body, Entry, MemberUpdate};
use crate::SecretKey;

const ORIGIN: &str = "ringlog.test/w.example";

/// A log writer: signs entries and checkpoints.
struct W {
    key: SecretKey,
    entries: Vec<Vec<u8>>,
    tree: MemoryTree,
}

impl W {
    fn new(seed: u8) -> W {
        W { key: SecretKey::from_seed([seed; 32]), entries: Vec::new(), tree: MemoryTree::new() }
    }
    fn log(&self) -> LogId {
        self.key.public()
    }
    fn entry(&self, index: u64, tag: &str) -> Vec<u8> {
        let body = Body::Update(MemberUpdate {
            addrs: vec![],
            mail_hosts: vec![format!("{tag}{index}.example")],
            domains: vec![],
            abuse: "abuse@w.example".into(),
        });
        Entry { log: self.log(), index, body }.sign(&self.key).unwrap().encode()
    }
    fn grow(&mut self, n: u64) {
        for _ in 0..n {
            let e = self.entry(self.entries.len() as u64, "h");
            self.tree.append(leaf_hash(&e));
            self.entries.push(e);
        }
    }
    fn range(&self, a: u64, b: u64) -> Vec<Vec<u8>> {
        self.entries[a as usize..b as usize].to_vec()
    }
    fn checkpoint(&self, size: u64) -> String {
        let t = MemoryTree::from_leaf_hashes(
            self.entries[..size as usize].iter().map(|e| leaf_hash(e)),
        );
        Checkpoint { origin: ORIGIN.into(), size, root: t.root() }
            .sign(&self.key, ORIGIN)
            .unwrap()
            .to_text()
    }
    fn member(&self) -> Member {
        Member { log: self.log(), origin: ORIGIN.into() }
    }
}

fn own() -> LogId {
    SecretKey::from_seed([99; 32]).public()
}

fn replica(w: &W) -> Replica<u32> {
    let mut r = Replica::new(own(), &[w.member(), Member { log: own(), origin: "own".into() }]);
    r.handle(Event::Connected(1));
    r.handle(Event::Connected(2));
    r
}

fn gossip_entries(w: &W, first: u64, entries: Vec<Vec<u8>>) -> Event<u32> {
    let data = Gossip::Entries { log: w.log(), first, entries }.encode();
    Event::Gossip { from: 1, topic: Topic::Entries, data }
}

fn verdict(actions: &[Action<u32>]) -> Verdict {
    let v: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Verdict(v) => Some(*v),
            _ => None,
        })
        .collect();
    assert_eq!(v.len(), 1, "exactly one verdict in {actions:?}");
    v[0]
}

fn appended(actions: &[Action<u32>]) -> Vec<(u64, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Append { entries, .. } => Some((entries[0].entry.index, entries.len())),
            _ => None,
        })
        .collect()
}

fn penalised(actions: &[Action<u32>]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Penalise { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn conflicts(actions: &[Action<u32>]) -> Vec<ConflictKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Conflict(c) => Some(c.kind),
            _ => None,
        })
        .collect()
}

fn ranges(actions: &[Action<u32>]) -> Vec<(u32, u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { peer, request: Request::Range { start, end, .. } } => {
                Some((*peer, *start, *end))
            }
            _ => None,
        })
        .collect()
}

fn summary(w: &W, size: u64) -> Vec<u8> {
    Response::Summary(vec![Head {
        log: w.log(),
        size,
        root: Hash([0; 32]),
        checkpoint: Some(w.checkpoint(size)),
    }])
    .encode()
}

fn range_response(entries: Vec<Vec<u8>>, cp: Option<String>) -> Result<Vec<u8>, String> {
    Ok(Response::Range { entries, checkpoint: cp }.encode())
}

#[test]
fn wire_round_trips_and_rejects_garbage() {
    let mut w = W::new(1);
    w.grow(3);
    let msgs = [
        Gossip::Entries { log: w.log(), first: 0, entries: w.range(0, 3) },
        Gossip::Checkpoint { log: w.log(), note: w.checkpoint(3) },
    ];
    for m in msgs {
        let b = m.encode();
        assert_eq!(Gossip::decode(&b).unwrap(), m);
        for cut in 0..b.len() {
            assert!(Gossip::decode(&b[..cut]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(Gossip::decode(&long), Err(WireError::Trailing(1))));
    }
    let reqs = [Request::Summary, Request::Range { log: w.log(), start: 5, end: 10 }];
    for q in reqs {
        assert_eq!(Request::decode(&q.encode()).unwrap(), q);
    }
    let resps = [
        Response::Summary(vec![Head {
            log: w.log(),
            size: 3,
            root: Hash([7; 32]),
            checkpoint: None,
        }]),
        Response::Range { entries: w.range(0, 2), checkpoint: Some(w.checkpoint(2)) },
        Response::Refused("no".into()),
    ];
    for r in resps {
        assert_eq!(Response::decode(&r.encode()).unwrap(), r);
    }
    // A forged count cannot make the decoder allocate.
    let mut forged = vec![TAG_RANGE];
    forged.extend_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(Response::decode(&forged), Err(WireError::TooMany(_))));
    assert!(Response::decode(&[42]).is_err());
    assert!(Response::decode(&[]).is_err());
}

#[test]
fn gossip_chunks_stay_under_the_size_limit() {
    let mut w = W::new(1);
    w.grow(3000);
    let chunks = Gossip::chunks(w.log(), 0, &w.entries);
    assert!(chunks.len() > 1);
    let mut next = 0;
    for c in chunks {
        let Gossip::Entries { first, entries, .. } = c else { panic!() };
        assert_eq!(first, next);
        assert!(entries.iter().map(Vec::len).sum::<usize>() <= MAX_GOSSIP_BYTES);
        next += entries.len() as u64;
    }
    assert_eq!(next, 3000);
}

#[test]
fn gossip_in_order_is_appended_out_of_order_and_duplicates_ignored() {
    let mut w = W::new(1);
    w.grow(10);
    let mut r = replica(&w);
    let a = r.handle(gossip_entries(&w, 0, w.range(0, 4)));
    assert_eq!(verdict(&a), Verdict::Accept);
    assert_eq!(appended(&a), vec![(0, 4)]);
    // A gap: ignored, nothing stored, nobody penalised.
    let a = r.handle(gossip_entries(&w, 6, w.range(6, 8)));
    assert_eq!(verdict(&a), Verdict::Ignore);
    assert!(appended(&a).is_empty() && penalised(&a).is_empty());
    // Overlapping: the new part is appended, the old part compared with the store.
    let a = r.handle(gossip_entries(&w, 2, w.range(2, 6)));
    assert_eq!(verdict(&a), Verdict::Accept);
    assert_eq!(appended(&a), vec![(4, 2)]);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Compare { first: 2, received, .. } if received.len() == 2)));
    // A pure duplicate.
    let a = r.handle(gossip_entries(&w, 0, w.range(0, 2)));
    assert_eq!(verdict(&a), Verdict::Ignore);
    assert!(appended(&a).is_empty());
    assert_eq!(r.progress(&w.log()), Some((6, 6, false)));
    assert_eq!(r.stats.replicated, 6);
}

#[test]
fn bad_gossip_is_rejected_and_penalised_with_nothing_stored() {
    let mut w = W::new(1);
    w.grow(4);
    let mut r = replica(&w);
    // Bad signature.
    let mut bad = w.range(0, 2);
    let last = bad[1].len() - 1;
    bad[1][last] ^= 1;
    let a = r.handle(gossip_entries(&w, 0, bad));
    assert_eq!(verdict(&a), Verdict::Reject);
    assert_eq!(penalised(&a), vec![1]);
    assert!(appended(&a).is_empty());
    // Wrong index: entries 1..3 announced as 0..2.
    let a = r.handle(gossip_entries(&w, 0, w.range(1, 3)));
    assert_eq!(verdict(&a), Verdict::Reject);
    assert_eq!(penalised(&a), vec![1]);
    // Entries of another log under this log's id.
    let mut other = W::new(2);
    other.grow(1);
    let a = r.handle(gossip_entries(&w, 0, other.range(0, 1)));
    assert_eq!(verdict(&a), Verdict::Reject);
    // A log we do not follow: dropped, not penalised (see the test below).
    let a = r.handle(gossip_entries(&other, 0, other.range(0, 1)));
    assert_eq!(verdict(&a), Verdict::Ignore);
    assert!(penalised(&a).is_empty());
    // Garbage, and a message on the wrong topic.
    let a = r.handle(Event::Gossip { from: 2, topic: Topic::Entries, data: vec![1, 2, 3] });
    assert_eq!(verdict(&a), Verdict::Reject);
    let data = Gossip::Entries { log: w.log(), first: 0, entries: w.range(0, 1) }.encode();
    let a = r.handle(Event::Gossip { from: 2, topic: Topic::Checkpoints, data });
    assert_eq!(verdict(&a), Verdict::Reject);
    // Our own log: never written by replication.
    let a = r.handle(Event::Gossip {
        from: 2,
        topic: Topic::Entries,
        data: Gossip::Entries { log: own(), first: 0, entries: w.range(0, 1) }.encode(),
    });
    assert_eq!(verdict(&a), Verdict::Ignore);
    assert_eq!(r.progress(&w.log()), Some((0, 0, false)));
    assert_eq!(r.stats.replicated, 0);
    assert!(r.stats.rejected >= 5);
}

#[test]
fn checkpoints_by_gossip_are_checked() {
    let mut w = W::new(1);
    w.grow(6);
    let mut r = replica(&w);
    r.handle(gossip_entries(&w, 0, w.range(0, 4)));
    let cp = |note: String| Event::Gossip {
        from: 2,
        topic: Topic::Checkpoints,
        data: Gossip::Checkpoint { log: w.log(), note }.encode(),
    };
    // At our size: checked at once and kept.
    let a = r.handle(cp(w.checkpoint(4)));
    assert_eq!(verdict(&a), Verdict::Accept);
    assert!(a.iter().any(|x| matches!(x, Action::StoreCheckpoint { size: 4, .. })));
    // Again: a duplicate.
    assert_eq!(verdict(&r.handle(cp(w.checkpoint(4)))), Verdict::Ignore);
    // Below our size: the driver recomputes the root.
    let a = r.handle(cp(w.checkpoint(3)));
    assert_eq!(verdict(&a), Verdict::Ignore, "older than the checkpoint held");
    assert!(!a.iter().any(|x| matches!(x, Action::RootAt { .. })));
    // Forged signature (by another key under the same name): rejected.
    let forged = Checkpoint { origin: ORIGIN.into(), size: 5, root: Hash([1; 32]) }
        .sign(&SecretKey::from_seed([7; 32]), ORIGIN)
        .unwrap()
        .to_text();
    let a = r.handle(cp(forged));
    assert_eq!(verdict(&a), Verdict::Reject);
    assert_eq!(penalised(&a), vec![2]);
    // Beyond our size: a target; a range is asked of a peer that showed it has it.
    let a = r.handle(cp(w.checkpoint(6)));
    assert_eq!(verdict(&a), Verdict::Accept);
    assert_eq!(r.progress(&w.log()), Some((4, 6, false)));
    // The fast path delivers the rest: the target is checked as the entries reach it.
    let a = r.handle(gossip_entries(&w, 4, w.range(4, 6)));
    assert_eq!(appended(&a), vec![(4, 2)]);
    assert!(a.iter().any(|x| matches!(x, Action::StoreCheckpoint { size: 6, .. })));
}

#[test]
fn past_checkpoint_with_another_root_is_a_conflict() {
    let mut w = W::new(1);
    w.grow(6);
    let mut r = replica(&w);
    r.handle(gossip_entries(&w, 0, w.range(0, 6)));
    let a = r.handle(Event::Gossip {
        from: 2,
        topic: Topic::Checkpoints,
        data: Gossip::Checkpoint { log: w.log(), note: w.checkpoint(5) }.encode(),
    });
    let Some(Action::RootAt { size: 5, note, .. }) =
        a.iter().find(|x| matches!(x, Action::RootAt { .. })).cloned()
    else {
        panic!("no RootAt in {a:?}")
    };
    // The store says another root: conflict, the log freezes.
    let a = r.handle(Event::RootAt { log: w.log(), note: note.clone(), root: Hash([3; 32]) });
    assert_eq!(conflicts(&a), vec![ConflictKind::CheckpointEntries]);
    assert_eq!(r.progress(&w.log()), Some((6, 6, true)));
    assert_eq!(verdict(&r.handle(gossip_entries(&w, 6, vec![w.entry(6, "h")]))), Verdict::Ignore);
}

#[test]
fn two_checkpoints_of_one_size_and_two_entries_at_one_index_are_conflicts() {
    let mut w = W::new(1);
    w.grow(4);
    let mut r = replica(&w);
    r.handle(gossip_entries(&w, 0, w.range(0, 4)));
    r.handle(Event::Response { peer: 1, request: Request::Summary, result: Ok(summary(&w, 4)) });
    // The same key signs another history of size 4.
    let mut fork = W::new(1);
    fork.entries = w.range(0, 3);
    fork.entries.push(w.entry(3, "fork"));
    let a = r.handle(Event::Gossip {
        from: 2,
        topic: Topic::Checkpoints,
        data: Gossip::Checkpoint { log: w.log(), note: fork.checkpoint(4) }.encode(),
    });
    assert_eq!(conflicts(&a), vec![ConflictKind::CheckpointCheckpoint]);

    let mut r = replica(&w);
    r.handle(gossip_entries(&w, 0, w.range(0, 4)));
    let a = r.handle(Event::Gossip {
        from: 2,
        topic: Topic::Entries,
        data: Gossip::Entries { log: w.log(), first: 3, entries: vec![fork.entries[3].clone()] }
            .encode(),
    });
    let Some(Action::Compare { first: 3, received, .. }) =
        a.iter().find(|x| matches!(x, Action::Compare { .. })).cloned()
    else {
        panic!("no Compare in {a:?}")
    };
    let a = r.handle(Event::Stored { log: w.log(), first: 3, received, stored: w.range(3, 4) });
    assert_eq!(conflicts(&a), vec![ConflictKind::EntryEntry]);
}

#[test]
fn repair_pulls_in_bounded_chunks_and_checks_the_checkpoint() {
    let mut w = W::new(1);
    w.grow(9000);
    let mut r = replica(&w);
    let a = r.handle(Event::Response {
        peer: 2,
        request: Request::Summary,
        result: Ok(summary(&w, 9000)),
    });
    let asked = ranges(&a);
    assert_eq!(asked.len(), PIPELINE);
    for (i, (peer, s, e)) in asked.iter().enumerate() {
        assert_eq!(*peer, 2);
        assert_eq!(*s, i as u64 * MAX_RANGE_ENTRIES);
        assert_eq!(*e, *s + MAX_RANGE_ENTRIES);
    }
    // Answer out of order: nothing is applied until the first chunk arrives.
    let resp = |r: &mut Replica<u32>, s: u64, e: u64, cp: Option<String>| {
        r.handle(Event::Response {
            peer: 2,
            request: Request::Range { log: w.log(), start: s, end: e },
            result: range_response(w.range(s, e), cp),
        })
    };
    let a = resp(&mut r, 2000, 4000, None);
    assert!(appended(&a).is_empty());
    let a = resp(&mut r, 0, 2000, Some(w.checkpoint(1500)));
    assert_eq!(appended(&a), vec![(0, 2000), (2000, 2000)]);
    assert!(a.iter().any(|x| matches!(x, Action::StoreCheckpoint { size: 1500, .. })));
    // Two more ranges were asked to refill the pipeline; the last one ends at the target.
    let mut more = ranges(&a);
    more.sort();
    assert_eq!(more, vec![(2, 8000, 9000)]);
    resp(&mut r, 4000, 6000, None);
    resp(&mut r, 6000, 8000, None);
    let a = resp(&mut r, 8000, 9000, Some(w.checkpoint(9000)));
    assert!(a.iter().any(|x| matches!(x, Action::StoreCheckpoint { size: 9000, .. })));
    assert_eq!(r.progress(&w.log()), Some((9000, 9000, false)));
    assert_eq!(r.stats.replicated, 9000);
}

#[test]
fn a_range_that_does_not_match_its_checkpoint_is_rejected() {
    let mut w = W::new(1);
    w.grow(10);
    let mut r = replica(&w);
    r.handle(Event::Response { peer: 2, request: Request::Summary, result: Ok(summary(&w, 10)) });
    // The peer answers with validly signed entries of another history: nothing is stored,
    // the peer is penalised, and the conflict recorded.
    let mut fork = W::new(1);
    fork.entries = w.range(0, 5);
    for i in 5..10 {
        fork.entries.push(w.entry(i, "fork"));
    }
    let a = r.handle(Event::Response {
        peer: 2,
        request: Request::Range { log: w.log(), start: 0, end: 10 },
        result: range_response(fork.range(0, 10), Some(w.checkpoint(10))),
    });
    assert!(appended(&a).is_empty());
    assert_eq!(penalised(&a), vec![2]);
    assert_eq!(conflicts(&a), vec![ConflictKind::CheckpointEntries]);
    assert_eq!(r.progress(&w.log()).map(|p| p.0), Some(0));
}

#[test]
fn bad_ranges_are_rejected_and_asked_again_elsewhere() {
    let mut w = W::new(1);
    w.grow(10);
    let mut r = replica(&w);
    r.handle(Event::Response { peer: 1, request: Request::Summary, result: Ok(summary(&w, 10)) });
    r.handle(Event::Response { peer: 2, request: Request::Summary, result: Ok(summary(&w, 10)) });
    let mut bad = w.range(0, 10);
    bad[7][20] ^= 1;
    // Whoever was asked, answer with a bad signature.
    let a = r.handle(Event::Response {
        peer: 1,
        request: Request::Range { log: w.log(), start: 0, end: 10 },
        result: range_response(bad, None),
    });
    assert!(appended(&a).is_empty());
    assert_eq!(penalised(&a), vec![1]);
    // Asked again, of the other peer.
    assert_eq!(ranges(&a), vec![(2, 0, 10)]);
    // Wrong indexes, a checkpoint outside the range, a longer answer than asked: all rejected.
    for (entries, cp) in
        [(w.range(1, 10), None), (w.range(0, 5), Some(w.checkpoint(8))), (w.range(0, 10), None)]
    {
        let a = r.handle(Event::Response {
            peer: 2,
            request: Request::Range { log: w.log(), start: 0, end: 9 },
            result: range_response(entries, cp),
        });
        assert!(appended(&a).is_empty(), "{a:?}");
        assert_eq!(penalised(&a), vec![2]);
    }
    // A failed request is no fault: no penalty.
    let a = r.handle(Event::Response {
        peer: 2,
        request: Request::Range { log: w.log(), start: 0, end: 10 },
        result: Err("timeout".into()),
    });
    assert!(penalised(&a).is_empty());
    assert_eq!(r.progress(&w.log()).map(|p| p.0), Some(0));
}

#[test]
fn a_summary_with_a_bad_checkpoint_penalises_the_peer() {
    let mut w = W::new(1);
    w.grow(3);
    let mut r = replica(&w);
    let mut note = w.checkpoint(3);
    note = note.replacen("\n3\n", "\n4\n", 1);
    let bytes = Response::Summary(vec![Head {
        log: w.log(),
        size: 4,
        root: Hash([0; 32]),
        checkpoint: Some(note),
    }])
    .encode();
    let a = r.handle(Event::Response { peer: 1, request: Request::Summary, result: Ok(bytes) });
    assert_eq!(penalised(&a), vec![1]);
    assert!(ranges(&a).is_empty());
}

#[test]
fn in_flight_requests_are_bounded() {
    let ws: Vec<W> = (1..=6u8)
        .map(|i| {
            let mut w = W::new(i);
            w.grow(1);
            w
        })
        .collect();
    let members: Vec<Member> =
        ws.iter().map(|w| Member { log: w.log(), origin: ORIGIN.into() }).collect();
    let mut r: Replica<u32> = Replica::new(own(), &members);
    r.handle(Event::Connected(1));
    let mut heads = Vec::new();
    for w in &ws {
        // Claim large checkpoints: fine for scheduling (entries are checked when they come).
        heads.push(Head {
            log: w.log(),
            size: 1,
            root: Hash([0; 32]),
            checkpoint: Some(w.checkpoint(1)),
        });
    }
    let a = r.handle(Event::Response {
        peer: 1,
        request: Request::Summary,
        result: Ok(Response::Summary(heads).encode()),
    });
    assert_eq!(ranges(&a).len(), 6);
    assert!(ranges(&a).len() <= MAX_IN_FLIGHT);
}

#[test]
fn gossip_of_a_log_not_followed_is_ignored_not_penalised() {
    // A peer that learned of a new (or reinstated) member before we did gossips its log: we
    // drop it without holding it against the peer, who may be the only way its entries reach us.
    let followed = W::new(1);
    let mut stranger = W::new(2);
    stranger.grow(3);
    let mut r = replica(&followed);
    let out = r.handle(gossip_entries(&stranger, 0, stranger.range(0, 3)));
    assert_eq!(verdict(&out), Verdict::Ignore);
    assert!(penalised(&out).is_empty(), "{out:?}");
    assert!(appended(&out).is_empty());
    let data = Gossip::Checkpoint { log: stranger.log(), note: stranger.checkpoint(3) }.encode();
    let out = r.handle(Event::Gossip { from: 1, topic: Topic::Checkpoints, data });
    assert_eq!(verdict(&out), Verdict::Ignore);
    assert!(penalised(&out).is_empty(), "{out:?}");
    // Forged data of a followed log is still penalised.
    let mut forged = followed.range(0, 0);
    forged.push(stranger.entry(0, "x"));
    let out = r.handle(gossip_entries(&followed, 0, forged));
    assert_eq!(penalised(&out), vec![1]);
}
