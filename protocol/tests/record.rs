//! Entries: canonical encoding round trips, signatures, and rejection of every tampered byte.
#![allow(clippy::unwrap_used)] // tests

use proptest::prelude::*;
use ringlog_protocol::record::*;
use ringlog_protocol::{Hash, SecretKey};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{0,40}"
}

fn arb_prev() -> impl Strategy<Value = PrevHop> {
    prop_oneof![
        arb_name().prop_map(|name| PrevHop::Member { name }),
        arb_hash().prop_map(|commitment| PrevHop::Customer { commitment }),
        (any::<[u8; 4]>(), arb_name())
            .prop_map(|(ip, helo)| PrevHop::External { ip: IpAddr::V4(Ipv4Addr::from(ip)), helo }),
        (any::<[u8; 16]>(), arb_name())
            .prop_map(|(ip, helo)| PrevHop::External { ip: IpAddr::V6(Ipv6Addr::from(ip)), helo }),
    ]
}

fn arb_next() -> impl Strategy<Value = NextHop> {
    prop_oneof![
        arb_name().prop_map(|name| NextHop::Member { name }),
        arb_name().prop_map(|domain| NextHop::Local { domain }),
        arb_name().prop_map(|host| NextHop::External { host }),
    ]
}

prop_compose! {
    fn arb_hop()(time_ms in any::<u64>(), mfp1 in arb_hash(), lite in arb_hash(), body in arb_hash(),
                 parts in proptest::collection::vec(arb_hash(), 0..4), prev in arb_prev(), next in arb_next(),
                 queue_id in "[A-F0-9]{0,12}", rcpt_count in any::<u32>(),
                 spam in proptest::option::of(any::<i32>()), transform in proptest::option::of((arb_hash(), arb_hash())))
        -> HopRecord {
        HopRecord {
            time_ms, mfp1, mfp1_lite: lite, body, parts, prev, next, queue_id, rcpt_count,
            verdicts: Verdicts { trust: Some(Trust::Untrusted), spam_score_milli: spam, virus: None },
            transform: transform.map(|(input, output)| Transform { input, output }),
        }
    }
}

fn signed(index: u64, hop: HopRecord) -> SignedEntry {
    Entry { log: key().public(), index, body: Body::Hop(hop) }.sign(&key()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn encode_decode_round_trip(index in any::<u64>(), hop in arb_hop()) {
        let e = signed(index, hop);
        let bytes = e.encode();
        let back = SignedEntry::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &e);
        prop_assert!(back.verify().is_ok());
        let again = SignedEntry::decode_verified(&bytes, &key().public(), index).unwrap();
        prop_assert_eq!(again, e);
    }

    #[test]
    fn any_flipped_bit_is_rejected(hop in arb_hop(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let e = signed(7, hop);
        let mut bytes = e.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let r = SignedEntry::decode_verified(&bytes, &key().public(), 7);
        prop_assert!(r.is_err(), "tampered entry accepted: {:?}", r);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedEntry::decode(&bytes);
        let mut v = vec![ENTRY_VERSION];
        v.extend_from_slice(&bytes);
        let _ = SignedEntry::decode(&v);
    }

    #[test]
    fn trailing_bytes_are_rejected(hop in arb_hop(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let e = signed(1, hop);
        let good = e.encode();
        // Extra bytes between the entry and its signature.
        let (body, sig) = good.split_at(good.len() - 64);
        let mut bad = body.to_vec();
        bad.extend_from_slice(&extra);
        bad.extend_from_slice(sig);
        prop_assert!(SignedEntry::decode(&bad).is_err());
    }
}

fn sample() -> HopRecord {
    HopRecord {
        time_ms: 1_700_000_000_000,
        mfp1: Hash([1; 32]),
        mfp1_lite: Hash([2; 32]),
        body: Hash([3; 32]),
        parts: vec![],
        prev: PrevHop::External { ip: "192.0.2.7".parse().unwrap(), helo: "mx.example".into() },
        next: NextHop::Member { name: "backbone-1.example".into() },
        queue_id: "4AB12C".into(),
        rcpt_count: 1,
        verdicts: Verdicts::default(),
        transform: None,
    }
}

#[test]
fn wrong_index_or_log_is_rejected() {
    let e = signed(5, sample());
    let bytes = e.encode();
    assert!(matches!(
        SignedEntry::decode_verified(&bytes, &key().public(), 6),
        Err(VerifyError::WrongIndex { expected: 6, found: 5 })
    ));
    let other = SecretKey::from_seed([9; 32]).public();
    assert!(matches!(
        SignedEntry::decode_verified(&bytes, &other, 5),
        Err(VerifyError::WrongLog { .. })
    ));
}

#[test]
fn unknown_version_and_non_canonical_are_rejected() {
    let mut bytes = signed(5, sample()).encode();
    bytes[0] = 2;
    assert_eq!(SignedEntry::decode(&bytes), Err(DecodeError::UnknownVersion(2)));
    // The index written as a longer varint than needed (0xFB = u16 form) decodes to the same
    // value but is not the canonical encoding.
    let good = signed(5, sample()).encode();
    let pos = 1 + 32; // version byte, log id; then the index varint
    assert_eq!(good[pos], 5);
    let mut long = good[..pos].to_vec();
    long.extend_from_slice(&[0xFB, 5, 0]);
    long.extend_from_slice(&good[pos + 1..]);
    assert!(SignedEntry::decode(&long).is_err());
}

#[test]
fn oversized_fields_are_refused_at_signing() {
    let mut h = sample();
    h.queue_id = "x".repeat(MAX_STR + 1);
    let r = Entry { log: key().public(), index: 0, body: Body::Hop(h) }.sign(&key());
    assert!(matches!(r, Err(DecodeError::Invalid(_))));
}

#[test]
fn commitment_opens_only_with_its_salt() {
    let secret = Hash([5; 32]);
    let salt = customer_salt(&secret, &Hash([1; 32]), "Q1", "alice");
    let c = customer_commitment(&salt, "alice");
    assert_eq!(c, customer_commitment(&salt, "alice"));
    assert_ne!(c, customer_commitment(&salt, "bob"));
    assert_ne!(c, customer_commitment(&Hash([0; 32]), "alice"));
}
