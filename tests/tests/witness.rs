//! End-to-end witnessing: checkpoints of every member get cosigned by the others (time from
//! publication to the k-th cosignature), and a member that shows its peers two histories is
//! proven to equivocate by every honest node, the proof verifies offline, and it is cut off.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use ringlog_e2e::{hop, metric, run, tune, Node, Ring};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn append(node: &Node, seed: u64, n: u64) {
    let reqs: Vec<Value> =
        (0..n).map(|i| hop(seed + i, "customer:alice", "local:x.example")).collect();
    node.append(&json!(reqs)).unwrap();
}

/// Cosignature lines of a note (every signature line but the log's own).
fn cosignatures(note: &str) -> usize {
    note.lines().filter(|l| l.starts_with('\u{2014}')).count().saturating_sub(1)
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Five nodes: every checkpoint of m0 reaches witness_k cosignatures of other members, in the
/// owner's own store (so its evidence bundles carry them). Reports p50/p99 of the time from
/// the checkpoint's first appearance at the owner to its k-th cosignature there (sampled every
/// 20 ms).
#[test]
fn checkpoints_get_witnessed() {
    let mut ring = Ring::new(5);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&ring.genesis).unwrap()).unwrap();
    let k = g["witness_k"].as_u64().unwrap() as usize;
    assert!(k >= 1);
    let m0 = &ring.nodes[0];
    std::thread::sleep(Duration::from_secs(2));
    let path = format!("/v1/logs/{}/checkpoint", m0.name);
    // size -> (first seen, k-th cosignature seen)
    let mut seen: std::collections::BTreeMap<u64, (Instant, Option<Instant>)> = Default::default();
    let t0 = Instant::now();
    let mut seed = 0;
    let mut last_append = Instant::now() - Duration::from_secs(1);
    while t0.elapsed() < Duration::from_secs(25) {
        if seen.len() < 20 && last_append.elapsed() >= Duration::from_millis(700) {
            append(m0, seed, 3);
            seed += 3;
            last_append = Instant::now();
        }
        if let Ok(cp) = m0.try_get(&path) {
            let size = cp["size"].as_u64().unwrap();
            let n = cosignatures(cp["note"].as_str().unwrap());
            let e = seen.entry(size).or_insert((Instant::now(), None));
            if n >= k && e.1.is_none() {
                e.1 = Some(Instant::now());
            }
        }
        if seen.len() >= 20 && seen.values().all(|(_, w)| w.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat: Vec<u64> = seen
        .iter()
        .filter_map(|(_, (a, b))| b.map(|b| b.duration_since(*a).as_millis() as u64))
        .collect();
    let total = seen.len();
    assert!(total >= 5, "too few checkpoints seen: {total}");
    assert!(lat.len() + 1 >= total, "only {} of {total} checkpoints witnessed", lat.len());
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    eprintln!(
        "witness latency (publication -> {k}th cosignature at the owner, 5 nodes, {} checkpoints): p50 {p50} ms, p99 {p99} ms",
        lat.len()
    );
    // Every stored checkpoint of m0 at another node carries that node's own cosignature.
    for n in &ring.nodes[1..] {
        let cps = n.get(&format!("/v1/logs/{}/checkpoints", m0.name));
        let notes: Vec<&str> =
            cps.as_array().unwrap().iter().map(|c| c["note"].as_str().unwrap()).collect();
        assert!(!notes.is_empty());
        assert!(
            notes.iter().any(|t| t.contains(&format!("\u{2014} {} ", n.name))),
            "{} cosigned nothing of m0: {notes:?}",
            n.name
        );
        assert_eq!(metric(n, "ringlog_witness_faults_total").unwrap_or(0), 0, "{}", n.log());
    }
}

/// Four nodes; m3 gossips a second, forged checkpoint for every size it signs. Every honest
/// node holds a verified proof within 30 s, the proof verifies offline, and m3 is cut off.
#[test]
fn equivocation_is_proven_and_the_equivocator_cut_off() {
    let mut ring = Ring::new(4);
    ring.nodes.iter().for_each(tune);
    let data = ring.nodes[3].dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("danger-equivocate"), "").unwrap();
    ring.start_all();
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    append(&ring.nodes[3], 1, 5);
    let honest = &ring.nodes[..3];
    Ring::wait_for(Duration::from_secs(30), "every honest node to hold a proof", || {
        honest.iter().all(|n| n.get("/v1/equivocations").as_array().is_some_and(|a| !a.is_empty()))
    });
    eprintln!("every honest node held a verified proof after {:?}", t0.elapsed());
    for n in honest {
        let all = n.get("/v1/equivocations");
        let p = &all[0];
        assert_eq!(p["member"], "m3.example", "{all}");
        let file = ring.tmp.path().join(format!("proof-{}.json", n.name));
        std::fs::write(&file, p["proof"].to_string()).unwrap();
        let (ok, out, err) =
            run(&["verify", file.to_str().unwrap(), "--genesis", ring.genesis.to_str().unwrap()]);
        assert!(ok, "offline verification failed: {out}\n{err}");
    }
    // The equivocator is refused: no honest node stays connected to it.
    Ring::wait_for(Duration::from_secs(15), "the equivocator to be disconnected", || {
        metric(&ring.nodes[3], "ringlog_peers_connected").unwrap_or(0) == 0
            && honest.iter().all(|n| metric(n, "ringlog_peers_connected").unwrap_or(0) == 2)
    });
    // Honest nodes still replicate among themselves.
    append(&ring.nodes[0], 100, 2);
    Ring::wait_for(Duration::from_secs(15), "honest replication after the cut", || {
        honest.iter().all(|n| n.heads().get("m0.example").is_some_and(|(s, _)| *s >= 2))
    });
}
