//! Known-answer tests: every RFC 6962 inclusion and consistency case of the shared vectors
//! (transparency-dev/merkle test data). Happy paths verify; every `wantErr` case is rejected.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure report

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ringlog_protocol::merkle::{verify_consistency, verify_inclusion};
use ringlog_protocol::{sha256, Hash};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn vectors_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/rfc6962"));
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    assert!(std::env::var_os("CI").is_none(), "shared vectors missing at {}", dir.display());
    eprintln!("note: {} is missing; skipping the RFC 6962 vectors", dir.display());
    None
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

/// A proof hash: anything not 32 bytes cannot be one, so the case is rejected before
/// verification even starts.
/// A `null` proof is the empty proof.
fn proof(v: &Value) -> Option<Vec<Hash>> {
    if v.is_null() {
        return Some(Vec::new());
    }
    v.as_array().unwrap().iter().map(|h| Hash::from_slice(&bytes(h))).collect()
}

/// A claimed root. Some cases use short placeholders ("don't care") where only the equality
/// of two roots matters; those map to the SHA-256 of the placeholder, which keeps equal values
/// equal, makes unequal ones differ, and never equals a root computed from a proof.
fn hash_or_placeholder(v: &Value) -> Hash {
    let b = bytes(v);
    Hash::from_slice(&b).unwrap_or_else(|| sha256(&[b"placeholder:", &b]))
}

struct Tally {
    ok: usize,
    rejected: usize,
    failures: Vec<String>,
}

fn check(tally: &mut Tally, path: &Path, want_err: bool, result: Result<(), String>) {
    match (want_err, result) {
        (false, Ok(())) => tally.ok += 1,
        (true, Err(_)) => tally.rejected += 1,
        (false, Err(e)) => tally.failures.push(format!("{}: rejected: {e}", path.display())),
        (true, Ok(())) => tally.failures.push(format!("{}: accepted a bad proof", path.display())),
    }
}

#[test]
fn inclusion_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let mut files = Vec::new();
    json_files(&dir.join("inclusion"), &mut files);
    assert!(files.len() > 50, "too few inclusion cases: {}", files.len());
    let mut tally = Tally { ok: 0, rejected: 0, failures: Vec::new() };
    for path in &files {
        let c: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let want_err = c["wantErr"].as_bool().unwrap();
        let leaf = Hash::from_slice(&bytes(&c["leafHash"]));
        let result = match (proof(&c["proof"]), leaf) {
            (None, _) => Err("proof hash is not 32 bytes".to_string()),
            (_, None) => Err("leaf hash is not 32 bytes".to_string()),
            (Some(p), Some(leaf)) => verify_inclusion(
                &leaf,
                c["leafIdx"].as_u64().unwrap(),
                c["treeSize"].as_u64().unwrap(),
                &p,
                &hash_or_placeholder(&c["root"]),
            )
            .map_err(|e| e.to_string()),
        };
        check(&mut tally, path, want_err, result);
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.ok >= 5 && tally.rejected >= 40, "{} ok, {} rejected", tally.ok, tally.rejected);
}

#[test]
fn consistency_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let mut files = Vec::new();
    json_files(&dir.join("consistency"), &mut files);
    assert!(files.len() > 50, "too few consistency cases: {}", files.len());
    let mut tally = Tally { ok: 0, rejected: 0, failures: Vec::new() };
    for path in &files {
        let c: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let want_err = c["wantErr"].as_bool().unwrap();
        let result = match proof(&c["proof"]) {
            None => Err("proof hash is not 32 bytes".to_string()),
            Some(p) => verify_consistency(
                c["size1"].as_u64().unwrap(),
                c["size2"].as_u64().unwrap(),
                &hash_or_placeholder(&c["root1"]),
                &hash_or_placeholder(&c["root2"]),
                &p,
            )
            .map_err(|e| e.to_string()),
        };
        check(&mut tally, path, want_err, result);
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.ok >= 5 && tally.rejected >= 40, "{} ok, {} rejected", tally.ok, tally.rejected);
}
