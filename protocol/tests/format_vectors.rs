//! The entry and genesis test vectors of docs/FORMAT.md, recomputed and compared: the doc and
//! the code cannot drift apart.
#![allow(clippy::unwrap_used)] // tests

use ringlog_protocol::merkle::leaf_hash;
use ringlog_protocol::record::*;
use ringlog_protocol::{Hash, SecretKey};

/// Reads the value of a `name: value` line inside the doc's vector blocks.
fn doc_value(doc: &str, name: &str) -> String {
    let prefix = format!("{name}: ");
    doc.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("docs/FORMAT.md has no `{name}:` line"))
}

fn vector_entry() -> SignedEntry {
    let key = SecretKey::from_seed([1; 32]);
    let hop = HopRecord {
        time_ms: 1_764_547_200_000,
        mfp1: Hash([0x11; 32]),
        mfp1_lite: Hash([0x22; 32]),
        body: Hash([0x33; 32]),
        parts: vec![],
        prev: PrevHop::External { ip: "192.0.2.7".parse().unwrap(), helo: "mx.example".into() },
        next: NextHop::Member { name: "backbone-1.example".into() },
        queue_id: "4AB12C".into(),
        rcpt_count: 1,
        verdicts: Verdicts {
            trust: Some(Trust::Untrusted),
            spam_score_milli: Some(5000),
            virus: None,
        },
        transform: None,
    };
    Entry { log: key.public(), index: 7, body: Body::Hop(hop) }.sign(&key).unwrap()
}

#[test]
fn entry_vector_matches_the_doc() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).unwrap();
    let e = vector_entry();
    let signing = e.entry.signing_bytes();
    let encoded = e.encode();
    let got = [
        ("log-key", e.entry.log.to_hex()),
        ("signed-bytes", hex::encode(&signing)),
        ("signature", e.sig.to_hex()),
        ("entry-bytes", hex::encode(&encoded)),
        ("leaf-hash", leaf_hash(&encoded).to_hex()),
    ];
    for (name, value) in got {
        assert_eq!(doc_value(&doc, name), value, "vector {name} differs from docs/FORMAT.md");
    }
    // And the stored bytes decode back to the same entry, with a valid signature.
    let back = SignedEntry::decode(&encoded).unwrap();
    assert_eq!(back, e);
    back.verify().unwrap();
}
