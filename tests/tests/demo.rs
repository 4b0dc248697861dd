//! The main job, as a test: `ringlog demo` on generated mail and on the real corpus.
#![allow(clippy::unwrap_used)] // tests

use ringlog_e2e::{run, shared};
use serde_json::Value;

fn summary(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("no output")).expect("last line is JSON")
}

#[test]
fn demo_on_generated_mail() {
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("ring");
    let (ok, out, err) = run(&[
        "demo",
        "--json",
        "--messages",
        "60",
        "--spam",
        "15",
        "--keep",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "demo failed:\n{err}\n{out}");
    let s = summary(&out);
    assert_eq!(s["messages"], 75);
    assert!(s["records"].as_u64().unwrap() >= 150, "{s}");
    assert_eq!(s["replicated"], true, "{s}");
    assert_eq!(s["traced_correct"], s["traced_total"], "{s}");
    assert!(s["evidence_verified"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["evidence_witnessed"], s["evidence_verified"], "unwitnessed evidence: {s}");
    assert_eq!(s["audit_clean"], true, "{s}");
    assert_eq!(s["expelled"], true, "{s}");
    // --keep leaves the genesis, each member's data and the evidence bundles.
    assert!(dir.join("genesis.json").is_file());
    for m in [
        "backbone-1.example",
        "backbone-2.example",
        "isp-a.example",
        "isp-b.example",
        "isp-c.example",
    ] {
        assert!(dir.join(m).join("ringlog.toml").is_file(), "{m} missing");
    }
    let bundles = std::fs::read_dir(dir.join("evidence")).unwrap().count();
    assert!(bundles > 0);
    // A kept bundle verifies offline with only the genesis file.
    let b = std::fs::read_dir(dir.join("evidence")).unwrap().next().unwrap().unwrap().path();
    let (ok, out, err) = run(&[
        "verify",
        b.to_str().unwrap(),
        "--genesis",
        dir.join("genesis.json").to_str().unwrap(),
        "--allow-unwitnessed",
        "--json",
    ]);
    assert!(ok, "kept bundle does not verify:\n{err}\n{out}");
}

#[test]
fn demo_on_the_real_corpus_traces_every_message() {
    let Some(shared) = shared() else { return };
    let corpus = shared.join("corpus/real");
    let (ok, out, err) = run(&["demo", "--json", "--corpus", corpus.to_str().unwrap()]);
    assert!(ok, "demo --corpus failed:\n{err}\n{out}");
    let s = summary(&out);
    let files = std::fs::read_dir(&corpus)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
        .count() as u64;
    // Every message is accounted for: replayed, or a copy of one that was.
    let dups = s["duplicates"].as_array().unwrap().len() as u64;
    assert_eq!(s["messages"].as_u64().unwrap() + dups, files, "{s}");
    assert_eq!(s["unmapped"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["traced_correct"], s["traced_total"], "{s}");
    assert_eq!(s["replicated"], true, "{s}");
    assert_eq!(s["audit_clean"], true, "{s}");
}

#[test]
fn demo_refuses_a_corpus_without_messages_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&["demo", "--corpus", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no messages found"), "{err}");
    assert!(!err.contains("founded"), "the ring started before the input was checked: {err}");
}

#[test]
fn demo_refuses_a_corpus_that_is_not_mail() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "just some notes\nnot a message\n").unwrap();
    let (ok, out, err) = run(&["demo", "--corpus", notes.to_str().unwrap()]);
    assert!(!ok, "a corpus with no mappable message passed: {out}");
    assert!(err.contains("has a Received chain that can be mapped"), "{err}");
    assert!(!err.contains("founded"), "the ring started before the input was checked: {err}");
}
