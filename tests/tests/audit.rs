//! End-to-end `ringlog audit` on a stopped node's store: clean after a witnessed run, and one
//! flipped bit in a stored entry, checkpoint or cosignature is reported as exactly that object
//! with a non-zero exit. The same over a running node's API (`--node`), and a clear error for
//! an address where no node answers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use ringlog_e2e::{hop, run, tune, Ring};
use serde_json::{json, Value};
use std::time::Duration;

fn audit(cfg: &str) -> (bool, Value) {
    let (ok, out, err) = run(&["audit", "--json", "--config", cfg]);
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("audit output is not json ({e}): {out}\n{err}"));
    (ok, v)
}

fn audit_node(addr: &str, genesis: &str) -> (bool, Value, String) {
    let (ok, out, err) = run(&["audit", "--json", "--node", addr, "--genesis", genesis]);
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("audit output is not json ({e}): {out}\n{err}"));
    (ok, v, err)
}

fn flip(cfg: &str, log: &str, what: &str, at: u64, bit: usize) {
    let (ok, out, err) = run(&[
        "node",
        "danger-flip-bit",
        "--config",
        cfg,
        "--log",
        log,
        what,
        &at.to_string(),
        "--bit",
        &bit.to_string(),
    ]);
    assert!(ok, "flip failed: {out}\n{err}");
}

/// The `--bit` value that flips bit 0 of byte `pos` of `note` (danger-flip-bit counts bits
/// over the note's ASCII bytes other than newlines, seven per byte).
fn bit_at(note: &str, pos: usize) -> usize {
    let b = note.as_bytes();
    (0..pos).filter(|&i| b[i] < 0x80 && b[i] != b'\n').count() * 7
}

/// A byte of the base64 on signature line `line` (0-based over the signature lines) that
/// stays base64 when its bit 0 flips, in the middle of the signature.
fn sig_byte(note: &str, line: usize) -> usize {
    let start = note.find("\n\n").unwrap() + 2;
    let mut off = start;
    for l in note[start..].split('\n').take(line) {
        off += l.len() + 1;
    }
    let l = note[off..].split('\n').next().unwrap();
    let b64 = off + l.rfind(' ').unwrap() + 1;
    (b64 + 40..b64 + 80)
        .find(|&i| matches!(note.as_bytes()[i], b'B'..=b'Y' | b'b'..=b'y' | b'0'..=b'8'))
        .unwrap()
}

/// A ring of three tuned nodes, started and given two seconds to connect.
fn started_ring() -> Ring {
    let mut ring = Ring::new(3);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    std::thread::sleep(Duration::from_secs(2));
    ring
}

/// Waits until node 0 holds `member`'s checkpoint at `size` with at least two cosignatures
/// (the note's signature lines start with an em dash); returns that note.
fn cosigned_at_node0(ring: &Ring, member: &str, size: u64, timeout: Duration) -> String {
    let path = format!("/v1/logs/{member}/checkpoint");
    Ring::wait_for(timeout, &format!("a cosigned checkpoint of {member} at size {size}"), || {
        ring.nodes[0].try_get(&path).is_ok_and(|c| {
            c["size"] == size && c["note"].as_str().unwrap().matches('\u{2014}').count() >= 2
        })
    });
    ring.nodes[0].get(&path)["note"].as_str().unwrap().to_string()
}

#[test]
fn audit_names_exactly_the_flipped_object() {
    let mut ring = started_ring();
    let reqs: Vec<Value> = (0..20).map(|i| hop(i, "customer:alice", "local:x.example")).collect();
    ring.nodes[1].append(&json!(reqs)).unwrap();
    let m1 = ring.nodes[1].name.clone();
    let note = cosigned_at_node0(&ring, &m1, 20, Duration::from_secs(20));
    for n in &mut ring.nodes {
        n.stop();
    }
    let cfg = ring.nodes[0].config();
    let cfg = cfg.to_str().unwrap();
    let (ok, v) = audit(cfg);
    assert!(ok, "audit of an untouched store is not clean: {v}");
    assert_eq!(v["clean"], true);
    let l = v["logs"].as_array().unwrap().iter().find(|l| l["member"] == m1.as_str()).unwrap();
    assert!(l["witnessed"].as_u64().unwrap() >= 1, "{v}");

    // (flag, at, bit, expected object)
    let cases = [
        ("--entry", 7u64, 100usize, "entry"),
        ("--checkpoint", 20, bit_at(&note, sig_byte(&note, 0)), "checkpoint"),
        ("--checkpoint", 20, bit_at(&note, sig_byte(&note, 1)), "cosignature"),
    ];
    for (flag, at, bit, object) in cases {
        flip(cfg, &m1, flag, at, bit);
        let (ok, v) = audit(cfg);
        assert!(!ok, "audit passed with a flipped bit ({flag} {at})");
        let problems = v["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{flag} {at}: {v}");
        assert_eq!(problems[0]["object"], object, "{v}");
        assert_eq!(problems[0]["at"], at, "{v}");
        // Flip it back: clean again.
        flip(cfg, &m1, flag, at, bit);
        let (ok, v) = audit(cfg);
        assert!(ok, "not clean after flipping back: {v}");
    }
}

#[test]
fn audit_of_a_running_node_over_its_api() {
    let mut ring = started_ring();
    // More entries than one API range, so the audit has to page through them.
    let m1 = ring.nodes[1].name.clone();
    for k in 0..3u64 {
        let reqs: Vec<Value> =
            (0..500).map(|i| hop(k * 500 + i, "customer:alice", "local:x.example")).collect();
        ring.nodes[1].append(&json!(reqs)).unwrap();
    }
    cosigned_at_node0(&ring, &m1, 1500, Duration::from_secs(30));
    let genesis = ring.genesis.to_str().unwrap().to_string();
    let addr = ring.nodes[0].http.clone();
    let (ok, v, err) = audit_node(&addr, &genesis);
    assert!(ok, "audit of a healthy running node is not clean: {v}\n{err}");
    assert_eq!(v["clean"], true);
    assert!(err.contains("audited"), "no progress on stderr: {err}");
    let l = v["logs"].as_array().unwrap().iter().find(|l| l["member"] == m1.as_str()).unwrap();
    assert!(l["entries"].as_u64().unwrap() >= 1500, "{v}");
    assert!(l["witnessed"].as_u64().unwrap() >= 1, "{v}");

    // One flipped bit in m1's entry 1234 as node 0 stores it: the audit over node 0's API
    // names that entry and nothing else.
    ring.nodes[0].stop();
    let cfg = ring.nodes[0].config();
    let cfg = cfg.to_str().unwrap().to_string();
    flip(&cfg, &m1, "--entry", 1234, 100);
    ring.nodes[0].start();
    let (ok, v, err) = audit_node(&addr, &genesis);
    assert!(!ok, "audit passed over a corrupted entry: {v}\n{err}");
    assert_eq!(v["clean"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["object"], "entry", "{v}");
    assert_eq!(problems[0]["at"], 1234, "{v}");
    for n in &mut ring.nodes {
        n.stop();
    }
}

#[test]
fn audit_of_an_address_without_a_node_is_a_clear_error() {
    let ring = Ring::new(1);
    let genesis = ring.genesis.to_str().unwrap();
    // Something that talks HTTP but is no ringlog node.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!");
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for (addr, says) in [
        (closed.as_str(), "no ringlog node answers at"),
        ("no-such-host.invalid:7480", "no ringlog node answers at"),
        ("not an address", "no ringlog node answers at"),
        (garbage.as_str(), "not a log list"),
    ] {
        let (ok, out, err) = run(&["audit", "--node", addr, "--genesis", genesis]);
        assert!(!ok, "audit of {addr} succeeded: {out}");
        assert!(err.contains(says), "audit of {addr}: no clear error: {err}");
        assert!(!err.contains("panicked"), "audit of {addr} panicked: {err}");
    }
}
