//! Checkpoint notes, cosignatures and equivocation proofs: round trips, every bit flip
//! rejected, strict parsing of hostile notes, and the test vectors of
//! docs/format-checkpoint.md regenerated and compared.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure report

use proptest::prelude::*;
use ringlog_protocol::checkpoint::{
    Checkpoint, ConsistencyError, Cosignature, NoteError, NoteSignature, SignatureError,
    SignedCheckpoint, MAX_NOTE_BYTES, MAX_SIGNATURES,
};
use ringlog_protocol::equivocation::{EquivocationError, EquivocationProof, IncludedEntry, Kind};
use ringlog_protocol::keys::ALG_ED25519;
use ringlog_protocol::merkle::{consistency_proof, inclusion_proof, leaf_hash, root, MemoryTree};
use ringlog_protocol::record::{Body, Entry, MemberUpdate};
use ringlog_protocol::{Hash, PublicKey, SecretKey};

const LOG: &str = "isp-a.example";
const WITNESS: &str = "witness.isp-b.example";

fn log_key() -> SecretKey {
    SecretKey::from_seed([0x11; 32])
}

fn witness_key() -> SecretKey {
    SecretKey::from_seed([0x22; 32])
}

fn checkpoint(size: u64, root: Hash) -> Checkpoint {
    Checkpoint { origin: LOG.to_string(), size, root }
}

fn signed(size: u64, root: Hash) -> SignedCheckpoint {
    checkpoint(size, root).sign(&log_key(), LOG).unwrap()
}

fn with_cosignature(size: u64, root: Hash, time: u64) -> SignedCheckpoint {
    let mut s = signed(size, root);
    let c = Cosignature::create(&witness_key(), WITNESS, s.checkpoint(), time).unwrap();
    s.add_cosignature(&c).unwrap();
    s
}

fn witnesses() -> Vec<(String, PublicKey)> {
    vec![(WITNESS.to_string(), witness_key().public())]
}

#[test]
fn sign_parse_verify() {
    let s = with_cosignature(5, Hash([7; 32]), 1_700_000_000);
    let text = s.to_text();
    let back = SignedCheckpoint::parse(&text).unwrap();
    assert_eq!(back, s);
    back.verify(&log_key().public(), LOG).unwrap();
    assert_eq!(back.count_cosignatures(&witnesses()), 1);
    let c = back.cosignature(&witness_key().public(), WITNESS).unwrap().unwrap();
    assert_eq!(c.time, 1_700_000_000);
    // The witness key is no log key, and the log key is no witness.
    assert!(back.verify(&witness_key().public(), WITNESS).is_err());
    assert_eq!(back.count_cosignatures(&[(LOG.to_string(), log_key().public())]), 0);
}

#[test]
fn wrong_key_or_name_finds_no_signature() {
    let s = signed(5, Hash([7; 32]));
    let other = SecretKey::from_seed([0x33; 32]).public();
    assert_eq!(s.verify(&other, LOG), Err(SignatureError::NoSignature(LOG.into())));
    assert_eq!(
        s.verify(&log_key().public(), "isp-z.example"),
        Err(SignatureError::NoSignature("isp-z.example".into()))
    );
    // A line with the right name and key id but a bad signature rejects the note.
    let mut line = s.signatures()[0].clone();
    line.sig[10] ^= 1;
    let bad =
        SignedCheckpoint::parse(&format!("{}\n{}", s.checkpoint().body(), line.to_line())).unwrap();
    assert_eq!(bad.verify(&log_key().public(), LOG), Err(SignatureError::BadSignature(LOG.into())));
    // A known key's line with the wrong key id is ignored, so the note has no signature.
    let mut wrong_id = s.signatures()[0].clone();
    wrong_id.key_id ^= 1;
    let bad =
        SignedCheckpoint::parse(&format!("{}\n{}", s.checkpoint().body(), wrong_id.to_line()))
            .unwrap();
    assert!(matches!(bad.verify(&log_key().public(), LOG), Err(SignatureError::NoSignature(_))));
}

#[test]
fn cosignature_checks() {
    let cp = checkpoint(9, Hash([1; 32]));
    let w = witness_key();
    let c = Cosignature::create(&w, WITNESS, &cp, 42).unwrap();
    c.verify(&w.public(), &cp).unwrap();
    assert!(c.verify(&w.public(), &checkpoint(10, Hash([1; 32]))).is_err());
    assert!(c.verify(&log_key().public(), &cp).is_err());
    let mut later = c.clone();
    later.time += 1;
    assert!(later.verify(&w.public(), &cp).is_err());
    assert!(Cosignature::create(&w, WITNESS, &cp, 1 << 63).is_err());
    assert!(Cosignature::create(&w, "bad name", &cp, 1).is_err());
    // Round trip through a signature line.
    assert_eq!(Cosignature::from_signature(&c.to_signature()).unwrap(), c);
}

#[test]
fn counting_cosignatures() {
    let mut s = signed(3, Hash([2; 32]));
    let keys: Vec<SecretKey> = (0..5u8).map(|i| SecretKey::from_seed([0x40 + i; 32])).collect();
    let set: Vec<(String, PublicKey)> =
        keys.iter().enumerate().map(|(i, k)| (format!("w{i}.example"), k.public())).collect();
    for (i, k) in keys.iter().enumerate().take(3) {
        let c = Cosignature::create(k, &format!("w{i}.example"), s.checkpoint(), 100).unwrap();
        s.add_cosignature(&c).unwrap();
        // The same line twice is refused.
        assert!(s.add_cosignature(&c).is_err());
    }
    // A cosignature on another checkpoint does not count.
    let stray = Cosignature::create(&keys[3], "w3.example", &checkpoint(4, Hash([2; 32])), 100);
    s.add_cosignature(&stray.unwrap()).unwrap();
    let s = SignedCheckpoint::parse(&s.to_text()).unwrap();
    assert_eq!(s.count_cosignatures(&set), 3);
    // A key listed twice (under two names) counts once at most.
    let mut doubled = set.clone();
    doubled.push(("w0-again.example".to_string(), keys[0].public()));
    doubled.push(set[0].clone());
    assert_eq!(s.count_cosignatures(&doubled), 3);
    assert_eq!(s.count_cosignatures(&set[3..]), 0);
    assert!(s.verify(&log_key().public(), LOG).is_ok());
}

#[test]
fn signature_cap_when_adding() {
    let mut s = signed(3, Hash([2; 32]));
    for i in 1..MAX_SIGNATURES {
        let k = SecretKey::from_seed([i as u8; 32]);
        let c = Cosignature::create(&k, &format!("w{i}"), s.checkpoint(), 1).unwrap();
        s.add_cosignature(&c).unwrap();
    }
    let k = SecretKey::from_seed([0xee; 32]);
    let c = Cosignature::create(&k, "one-too-many", s.checkpoint(), 1).unwrap();
    assert!(s.add_cosignature(&c).is_err());
    assert_eq!(SignedCheckpoint::parse(&s.to_text()).unwrap(), s);
}

/// The C2SP tlog-cosignature example note: its layout, read by our parser.
#[test]
fn c2sp_example_layout() {
    let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
    let s = SignedCheckpoint::parse(text).unwrap();
    assert_eq!(s.checkpoint().origin, "example.com/behind-the-sofa");
    assert_eq!(s.checkpoint().size, 20852163);
    assert_eq!(s.signatures().len(), 2);
    let c = Cosignature::from_signature(&s.signatures()[1]).unwrap();
    // The spec's example message says "time 1679315147".
    assert_eq!(c.time, 1679315147);
    assert_eq!(s.to_text(), text);
}

fn reject(text: &str) -> NoteError {
    match SignedCheckpoint::parse(text) {
        Ok(s) => panic!("accepted {text:?} as {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn hostile_notes_are_rejected() {
    let good = signed(12, Hash([3; 32])).to_text();
    let body = checkpoint(12, Hash([3; 32])).body();
    let line = &good[body.len() + 1..];
    assert!(SignedCheckpoint::parse(&good).is_ok());
    // Missing blank line, missing signatures, no final newline.
    assert_eq!(reject(&format!("{body}{line}")), NoteError::NoSeparator);
    assert_eq!(reject(&format!("{body}\n")), NoteError::NoSignatures);
    assert_eq!(reject(body.as_str()), NoteError::NoSeparator);
    assert_eq!(reject(good.trim_end()), NoteError::BadSignatureLine);
    assert_eq!(reject(&format!("{good}\n")), NoteError::LineCount(5));
    // Sizes: non-decimal, leading zeroes, signs, overflow.
    for size in
        ["012", "+12", "-1", "1e3", " 12", "12 ", "0x10", "", "18446744073709551616", "１２"]
    {
        let t = good.replacen("\n12\n", &format!("\n{size}\n"), 1);
        assert_eq!(reject(&t), NoteError::BadSize, "size {size:?}");
    }
    assert!(SignedCheckpoint::parse(&good.replacen("\n12\n", "\n0\n", 1)).is_ok());
    // Roots: not base64, wrong length, non-canonical padding bits.
    let root_line = body.lines().nth(2).unwrap();
    for bad in ["AAAA", "!!!!", "", &root_line[..root_line.len() - 1], &format!("{root_line}=")] {
        let t = good.replacen(root_line, bad, 1);
        assert_eq!(reject(&t), NoteError::BadRoot, "root {bad:?}");
    }
    // The last digit before "=" carries two padding bits, which must be zero.
    assert_eq!(&root_line[42..], "M=");
    let mut noncanonical = root_line.to_string();
    noncanonical.replace_range(42..43, "N");
    assert_eq!(reject(&good.replacen(root_line, &noncanonical, 1)), NoteError::BadRoot);
    // Empty origin, extension lines.
    assert_eq!(reject(&good.replacen(LOG, "", 1)), NoteError::BadOrigin);
    assert_eq!(
        reject(&good.replacen(root_line, &format!("{root_line}\next"), 1)),
        NoteError::LineCount(4)
    );
    // Control characters anywhere.
    for c in ['\r', '\t', '\0', '\u{1b}'] {
        let t = good.replacen(LOG, &format!("isp{c}a"), 1);
        assert!(matches!(reject(&t), NoteError::ControlCharacter(_)), "char {c:?}");
    }
    // Signature lines: hyphen instead of em dash, bad names, bad base64, too short.
    assert_eq!(reject(&good.replacen('\u{2014}', "-", 1)), NoteError::BadSignatureLine);
    let sig_b64 = line.trim_end().rsplit(' ').next().unwrap();
    assert_eq!(reject(&format!("{body}\n\u{2014} a+b {sig_b64}\n")), NoteError::BadKeyName);
    assert_eq!(reject(&format!("{body}\n\u{2014}  {sig_b64}\n")), NoteError::BadKeyName);
    assert_eq!(reject(&format!("{body}\n\u{2014} a {sig_b64} x\n")), NoteError::BadBase64);
    assert_eq!(reject(&format!("{body}\n\u{2014} a *{sig_b64}\n")), NoteError::BadBase64);
    assert_eq!(reject(&format!("{body}\n\u{2014} a AAAA\n")), NoteError::ShortSignature(3));
    assert_eq!(reject(&format!("{body}\n\u{2014} a\n")), NoteError::BadSignatureLine);
    // Too many signatures, too many bytes.
    let many = format!("{body}\n{}", line.repeat(MAX_SIGNATURES + 1));
    assert_eq!(reject(&many), NoteError::TooManySignatures);
    assert!(SignedCheckpoint::parse(&format!("{body}\n{}", line.repeat(MAX_SIGNATURES))).is_ok());
    let huge = format!("{}\n12\n{root_line}\n\n{line}", "o".repeat(MAX_NOTE_BYTES));
    assert!(matches!(reject(&huge), NoteError::TooLarge(_)));
    assert_eq!(SignedCheckpoint::parse_bytes(b"\xff\xfe\n\n"), Err(NoteError::NotUtf8));
}

#[test]
fn signing_refuses_what_cannot_be_parsed() {
    let k = log_key();
    assert!(Checkpoint { origin: "a\nb".into(), size: 1, root: Hash([0; 32]) }
        .sign(&k, LOG)
        .is_err());
    assert!(Checkpoint { origin: String::new(), size: 1, root: Hash([0; 32]) }
        .sign(&k, LOG)
        .is_err());
    assert!(checkpoint(1, Hash([0; 32])).sign(&k, "two words").is_err());
    assert!(checkpoint(1, Hash([0; 32])).sign(&k, "a+b").is_err());
}

/// Which part of a note a byte offset falls in.
enum Part {
    Body,
    LogLine,
    CosigLine,
}

fn part_of(s: &SignedCheckpoint, offset: usize) -> Part {
    let body = s.checkpoint().body().len() + 1;
    let log_line = s.signatures()[0].to_line().len();
    if offset < body {
        Part::Body
    } else if offset < body + log_line {
        Part::LogLine
    } else {
        Part::CosigLine
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_of_text_round_trips(
        origin in "[a-zA-Z0-9./_-]{1,40}( [a-z\u{e9}\u{4e16}]{1,5})?",
        size in any::<u64>(),
        r in any::<[u8; 32]>(),
        names in prop::collection::vec("[a-z0-9./-]{1,30}", 0..5),
        time in 0..=i64::MAX as u64,
    ) {
        let cp = Checkpoint { origin, size, root: Hash(r) };
        prop_assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp.clone());
        let mut s = cp.sign(&log_key(), LOG).unwrap();
        for (i, n) in names.iter().enumerate() {
            let k = SecretKey::from_seed([i as u8 + 1; 32]);
            s.add_cosignature(&Cosignature::create(&k, n, &cp, time).unwrap()).unwrap();
        }
        let back = SignedCheckpoint::parse(&s.to_text()).unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert!(back.verify(&log_key().public(), LOG).is_ok());
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(serde_json::from_str::<SignedCheckpoint>(&json).unwrap(), s);
    }

    #[test]
    fn every_flipped_bit_is_rejected(
        size in any::<u64>(), r in any::<[u8; 32]>(), time in 0..=i64::MAX as u64,
        bit in any::<usize>(),
    ) {
        let s = with_cosignature(size, Hash(r), time);
        let mut bytes = s.to_text().into_bytes();
        let offset = (bit / 8) % bytes.len();
        bytes[offset] ^= 1 << (bit % 8);
        if let Ok(t) = SignedCheckpoint::parse_bytes(&bytes) {
            let log_ok = t.verify(&log_key().public(), LOG).is_ok();
            let cosigned = t.count_cosignatures(&witnesses()) == 1;
            match part_of(&s, offset) {
                Part::Body => prop_assert!(!log_ok && !cosigned, "offset {}", offset),
                Part::LogLine => prop_assert!(!log_ok && cosigned, "offset {}", offset),
                Part::CosigLine => prop_assert!(log_ok && !cosigned, "offset {}", offset),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = SignedCheckpoint::parse_bytes(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Checkpoint::parse_body(text);
            let _ = NoteSignature::parse_line(text);
            let _ = serde_json::from_str::<EquivocationProof>(text);
        }
    }

    #[test]
    fn note_shaped_garbage_never_panics(
        lines in prop::collection::vec("(\u{2014} )?[a-zA-Z0-9+/= .\u{2014}-]{0,30}", 0..8),
        blank in 0usize..8,
    ) {
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            if i == blank {
                text.push('\n');
            }
            text.push_str(l);
            text.push('\n');
        }
        if let Ok(s) = SignedCheckpoint::parse(&text) {
            // Whatever parses prints back to the same text.
            prop_assert_eq!(s.to_text(), text);
            let _ = s.verify(&log_key().public(), LOG);
            let _ = s.count_cosignatures(&witnesses());
        }
    }
}

#[test]
fn extension_between_checkpoints() {
    let leaves: Vec<Hash> = (0..9).map(|i| leaf_hash(&[i])).collect();
    let t = MemoryTree::from_leaf_hashes(leaves);
    let at = |n: u64| checkpoint(n, root(&t, n).unwrap());
    let p = consistency_proof(&t, 3, 9).unwrap();
    assert_eq!(at(3).verify_extension(&at(9), &p), Ok(()));
    assert!(at(3).verify_extension(&at(8), &p).is_err());
    assert!(at(3).verify_extension(&checkpoint(9, Hash([0; 32])), &p).is_err());
    assert_eq!(at(9).verify_extension(&at(9), &[]), Ok(()));
    assert_eq!(
        at(9).verify_extension(&at(3), &p),
        Err(ConsistencyError::Shrunk { old: 9, new: 3 })
    );
    let mut other = at(9);
    other.origin = "isp-z.example".into();
    assert_eq!(at(3).verify_extension(&other, &p), Err(ConsistencyError::OriginMismatch));
    // From the empty tree: only the true empty root, and no proof.
    assert_eq!(at(0).verify_extension(&at(9), &[]), Ok(()));
    assert!(at(0).verify_extension(&at(9), &p).is_err());
    assert_eq!(
        checkpoint(0, Hash([1; 32])).verify_extension(&at(9), &[]),
        Err(ConsistencyError::BadEmptyRoot)
    );
}

fn entry(index: u64, abuse: &str) -> Vec<u8> {
    let e = Entry {
        log: log_key().public(),
        index,
        body: Body::Update(MemberUpdate {
            addrs: vec![],
            mail_hosts: vec!["mx1.isp-a.example".into()],
            domains: vec!["isp-a.example".into()],
            abuse: abuse.into(),
        }),
    };
    e.sign(&log_key()).unwrap().encode()
}

/// A log that forked at index 2: two trees sharing entries 0 and 1.
fn forked() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let a: Vec<Vec<u8>> = (0..4).map(|i| entry(i, "abuse@isp-a.example")).collect();
    let mut b = a.clone();
    b[2] = entry(2, "other@isp-a.example");
    (a, b)
}

fn included(entries: &[Vec<u8>], index: u64) -> IncludedEntry {
    let t = MemoryTree::from_leaf_hashes(entries.iter().map(|e| leaf_hash(e)));
    let size = entries.len() as u64;
    IncludedEntry {
        entry: entries[index as usize].clone(),
        proof: inclusion_proof(&t, index, size).unwrap(),
        checkpoint: signed(size, root(&t, size).unwrap()),
    }
}

#[test]
fn equivocation_of_checkpoints() {
    let (a, b) = (signed(7, Hash([1; 32])), signed(7, Hash([2; 32])));
    let proof = EquivocationProof::from_checkpoints(&a, &b).unwrap();
    let key = log_key().public();
    assert_eq!(proof.verify(&key, LOG), Ok(Kind::ConflictingCheckpoints));
    let json = serde_json::to_string_pretty(&proof).unwrap();
    let back: EquivocationProof = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verify(&key, LOG), Ok(Kind::ConflictingCheckpoints));
    // Not equivocations: same root, different sizes, another key, a forged signature.
    assert!(EquivocationProof::from_checkpoints(&a, &a).is_none());
    let same = EquivocationProof::ConflictingCheckpoints { first: a.clone(), second: a.clone() };
    assert_eq!(same.verify(&key, LOG), Err(EquivocationError::SameRoot));
    let sizes = EquivocationProof::ConflictingCheckpoints {
        first: a.clone(),
        second: signed(8, Hash([2; 32])),
    };
    assert_eq!(sizes.verify(&key, LOG), Err(EquivocationError::SizeMismatch));
    assert!(proof.verify(&witness_key().public(), LOG).is_err());
    let forged = checkpoint(7, Hash([3; 32])).sign(&SecretKey::from_seed([9; 32]), LOG).unwrap();
    let forged = EquivocationProof::ConflictingCheckpoints { first: a, second: forged };
    assert!(matches!(forged.verify(&key, LOG), Err(EquivocationError::Signature(..))));
}

#[test]
fn equivocation_of_entries() {
    let (a, b) = forked();
    let key = log_key().public();
    let proof =
        EquivocationProof::ConflictingEntries { first: included(&a, 2), second: included(&b, 2) };
    assert_eq!(proof.verify(&key, LOG), Ok(Kind::ConflictingEntries));
    let json = serde_json::to_string(&proof).unwrap();
    let back: EquivocationProof = serde_json::from_str(&json).unwrap();
    assert_eq!(back, proof);
    // The same entry twice, entries at different indexes, a bad inclusion proof: rejected.
    let same =
        EquivocationProof::ConflictingEntries { first: included(&a, 2), second: included(&a, 2) };
    assert_eq!(same.verify(&key, LOG), Err(EquivocationError::SameEntry));
    let shared =
        EquivocationProof::ConflictingEntries { first: included(&a, 1), second: included(&b, 2) };
    assert_eq!(shared.verify(&key, LOG), Err(EquivocationError::IndexMismatch(1, 2)));
    let mut bad = included(&b, 2);
    bad.proof[0].0[0] ^= 1;
    let bad = EquivocationProof::ConflictingEntries { first: included(&a, 2), second: bad };
    assert!(matches!(bad.verify(&key, LOG), Err(EquivocationError::Inclusion(..))));
    // An entry whose bytes were altered no longer carries the log's signature.
    let mut altered = included(&b, 2);
    let n = altered.entry.len();
    altered.entry[n - 1] ^= 1;
    let altered = EquivocationProof::ConflictingEntries { first: included(&a, 2), second: altered };
    assert!(matches!(altered.verify(&key, LOG), Err(EquivocationError::Entry(..))));
    // Any flipped bit anywhere in the JSON proof makes it unparsable or unverifiable.
    for i in (0..json.len()).step_by(7) {
        for bit in [0u8, 3, 6] {
            let mut j = json.clone().into_bytes();
            j[i] ^= 1 << bit;
            if let Ok(p) = serde_json::from_slice::<EquivocationProof>(&j) {
                if p != proof {
                    assert!(p.verify(&key, LOG).is_err(), "flip at {i} bit {bit} still verifies");
                }
            }
        }
    }
}

/// Reads the block after `<!-- vector:NAME -->` in docs/format-checkpoint.md.
fn doc_vector<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("<!-- vector:{name} -->\n```text\n");
    let start = doc.find(&marker)? + marker.len();
    let len = doc[start..].find("```\n")?;
    Some(&doc[start..start + len])
}

/// Every vector in the format document, regenerated from fixed keys.
fn generated_vectors() -> Vec<(&'static str, String)> {
    let leaves: Vec<Hash> = (0..5).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect();
    let t = MemoryTree::from_leaf_hashes(leaves.iter().copied());
    let lines = |hs: &[Hash]| hs.iter().map(|h| format!("{h}\n")).collect::<String>();
    let cp = checkpoint(5, t.root());
    let mut note = cp.sign(&log_key(), LOG).unwrap();
    let cosig = Cosignature::create(&witness_key(), WITNESS, &cp, 1_700_000_000).unwrap();
    let msg = Cosignature::signed_message(&cp, 1_700_000_000);
    let signed_only = note.to_text();
    note.add_cosignature(&cosig).unwrap();
    let key_ids = format!(
        "log key id (type 0x01): {:08x}\nwitness key id (type 0x04): {:08x}\n",
        log_key().public().key_id(LOG, ALG_ED25519),
        cosig.key_id,
    );
    let mut fork = leaves.clone();
    fork[4] = leaf_hash(b"entry 4, forked");
    let fork = MemoryTree::from_leaf_hashes(fork);
    let equivocation =
        EquivocationProof::from_checkpoints(&signed(5, t.root()), &signed(5, fork.root())).unwrap();
    vec![
        ("keys", format!(
            "log key seed: {}\nlog public key: {}\nlog vkey: {}\nwitness key seed: {}\nwitness public key: {}\n{key_ids}",
            hex(&log_key().seed()), log_key().public(), log_key().public().vkey(LOG),
            hex(&witness_key().seed()), witness_key().public(),
        )),
        ("leaves", lines(&leaves)),
        ("roots", (0..=5).map(|n| format!("{n} {}\n", root(&t, n).unwrap())).collect()),
        ("inclusion-2-of-5", lines(&inclusion_proof(&t, 2, 5).unwrap())),
        ("consistency-3-to-5", lines(&consistency_proof(&t, 3, 5).unwrap())),
        ("checkpoint-body", cp.body()),
        ("signed-checkpoint", signed_only),
        ("cosignature-message", String::from_utf8(msg).unwrap()),
        ("cosigned-checkpoint", note.to_text()),
        ("equivocation-json", serde_json::to_string_pretty(&equivocation).unwrap() + "\n"),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn format_document_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format-checkpoint.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut mismatches = Vec::new();
    for (name, want) in generated_vectors() {
        match doc_vector(&doc, name) {
            Some(got) if got == want => {}
            _ => mismatches.push(format!("<!-- vector:{name} -->\n```text\n{want}```\n")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "vectors differ from the code; regenerated:\n{}",
        mismatches.join("\n")
    );
    // The documented notes also parse and verify.
    let note = SignedCheckpoint::parse(doc_vector(&doc, "cosigned-checkpoint").unwrap()).unwrap();
    note.verify(&log_key().public(), LOG).unwrap();
    assert_eq!(note.count_cosignatures(&witnesses()), 1);
}
