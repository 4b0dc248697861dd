//! mfp1 never panics: random octets, random mutations of corpus messages, and hostile MIME
//! shapes (deep nesting, many parts, huge headers) all get a fingerprint.
#![allow(clippy::unwrap_used)] // reason: test code; a failure should stop the test loudly

use proptest::prelude::*;
use ringlog_protocol::fingerprint::{fingerprint, Defect, MAX_LEAVES};
use std::path::PathBuf;
use std::sync::OnceLock;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/real");

/// Corpus messages as seeds (plus one built-in message, so the test also runs without them).
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = vec![b"From: a@b.example\r\nSubject: =?utf-8?q?x?=\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhi=\r\n=3D\r\n--q--\r\n".to_vec()];
        let dir = PathBuf::from(CORPUS);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "eml") {
                    out.push(std::fs::read(p).unwrap());
                }
            }
        } else {
            assert!(std::env::var_os("CI").is_none(), "shared corpus missing");
        }
        out
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b"\r".to_vec(),
        b"\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"--".to_vec(),
        b"=?utf-8?b?".to_vec(),
        b"?=".to_vec(),
        b"=".to_vec(),
        b"\"".to_vec(),
        b"(".to_vec(),
        b"<".to_vec(),
        b":".to_vec(),
        b"\xff\xc3".to_vec(),
        b"Content-Type: multipart/mixed; boundary=x\r\n".to_vec(),
        b"\r\n--x\r\n".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop_oneof![interesting, prop::collection::vec(any::<u8>(), 0..16)])
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 0usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 0usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(msg: &mut Vec<u8>, m: &Mutation) {
    let len = msg.len();
    let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, b) => {
            if len > 0 {
                msg[i % len] = *b;
            }
        }
        Mutation::Insert(i, v) => {
            let p = at(*i);
            msg.splice(p..p, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let p = at(*i);
            let e = (p + n).min(len);
            msg.drain(p..e);
        }
        Mutation::Duplicate(i, n) => {
            let p = at(*i);
            let e = (p + n).min(len);
            let copy = msg[p..e].to_vec();
            msg.splice(e..e, copy);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_octets_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let a = fingerprint(&raw);
        prop_assert!(a.leaves.len() <= MAX_LEAVES);
        prop_assert_eq!(a, fingerprint(&raw));
    }

    #[test]
    fn mutated_corpus_never_panics(
        seed in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let seeds = seeds();
        let mut msg = seeds[seed.index(seeds.len())].clone();
        for m in &muts {
            apply(&mut msg, m);
        }
        let a = fingerprint(&msg);
        prop_assert!(a.leaves.len() <= MAX_LEAVES);
        prop_assert_eq!(a, fingerprint(&msg));
    }
}

#[test]
fn deep_nesting_is_capped() {
    let depth = 5000;
    let mut msg = Vec::new();
    msg.extend_from_slice(b"From: a@b.example\r\n");
    for i in 0..depth {
        msg.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    msg.extend_from_slice(b"\r\ninnermost\r\n");
    let fp = fingerprint(&msg);
    assert!(fp.defects.contains(&Defect::MimeTooDeep), "{:?}", fp.defects);
}

#[test]
fn many_parts_are_capped_and_leaves_listed_up_to_the_cap() {
    let mut msg = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n".to_vec();
    for i in 0..10_000 {
        msg.extend_from_slice(format!("--z\r\n\r\npart {i}\r\n").as_bytes());
    }
    msg.extend_from_slice(b"--z--\r\n");
    let fp = fingerprint(&msg);
    assert!(fp.defects.contains(&Defect::TooManyParts));
    assert_eq!(fp.leaves.len(), MAX_LEAVES);
    // A change past the part cap still changes the body hash.
    let mut other = msg.clone();
    let n = other.len();
    other[n - 12] = b'X';
    assert_ne!(fingerprint(&other).body, fp.body);
}

#[test]
fn oversized_headers_are_flagged() {
    let mut msg = Vec::new();
    for i in 0..1500 {
        msg.extend_from_slice(
            format!("Received: from h{i} by x; {}\r\n", "p".repeat(700)).as_bytes(),
        );
    }
    msg.extend_from_slice(b"From: a@b.example\r\nFrom: c@d.example\r\n\r\nbody\r\n");
    let fp = fingerprint(&msg);
    for d in [Defect::TooManyReceived, Defect::HeaderTooLarge, Defect::DuplicateFrom] {
        assert!(fp.defects.contains(&d), "{d}: {:?}", fp.defects);
    }
    let json = serde_json::to_string(&fp.defects).unwrap();
    assert!(json.contains("too_many_received"), "{json}");
}
