//! Nothing acknowledged is ever lost: a node under sustained append load is killed with
//! SIGKILL at random moments, 20 times; after each restart every acknowledged append is at the
//! index it was acknowledged with, the log matches every checkpoint the node ever published, and
//! every checkpoint is consistent with the earlier ones.
#![allow(clippy::unwrap_used)] // tests

use ringlog_e2e::{hop, Node, Ring};
use ringlog_node::client::Client;
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::merkle::verify_consistency;
use ringlog_protocol::Hash;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Acknowledged appends: index -> mfp1.
type Acked = Arc<Mutex<BTreeMap<u64, String>>>;

fn load(client: Client, acked: Acked, seed_base: u64, stop: Arc<std::sync::atomic::AtomicBool>) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let client = client.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Single appends and small batches, as relays would send them.
                    let n = if i.is_multiple_of(3) { 5 } else { 1 };
                    let reqs: Vec<Value> = (0..n)
                        .map(|k| {
                            hop(
                                seed_base + w * 1_000_000 + i * 10 + k,
                                "external:192.0.2.1,x",
                                "local:example.org",
                            )
                        })
                        .collect();
                    i += 1;
                    let body = if n == 1 { reqs[0].clone() } else { Value::Array(reqs.clone()) };
                    match client.post("/v1/append", &body).await {
                        Ok(v) => {
                            let answers =
                                if n == 1 { vec![v] } else { v.as_array().unwrap().clone() };
                            let mut a = acked.lock().unwrap();
                            for (ans, req) in answers.iter().zip(&reqs) {
                                a.insert(
                                    ans["index"].as_u64().unwrap(),
                                    req["mfp1"].as_str().unwrap().to_string(),
                                );
                            }
                        }
                        Err(_) => break, // killed
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let mut ring = Ring::new(1);
    let node = &mut ring.nodes[0];
    node.start();
    let name = node.name.clone();
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut notes: BTreeMap<u64, String> = BTreeMap::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    for round in 0..20u64 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loader = {
            let (acked, stop) = (acked.clone(), stop.clone());
            let client = node.socket_client();
            std::thread::spawn(move || load(client, acked, round << 40, stop))
        };
        // Let it run a random while, watching the published checkpoints.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(300 + rng % 1200);
        let t0 = Instant::now();
        while t0.elapsed() < run_for {
            if let Ok(v) = node.try_get(&format!("/v1/logs/{name}/checkpoint")) {
                notes.insert(v["size"].as_u64().unwrap(), v["note"].as_str().unwrap().to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        node.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        loader.join().unwrap();
        node.start();
        verify(node, &name, &acked.lock().unwrap(), &notes);
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 1000, "too little load to mean anything: {total} acknowledged appends");
    eprintln!("{total} acknowledged appends over 20 kills; {} checkpoints observed", notes.len());
    node.stop();
    let (ok, out, err) =
        ringlog_e2e::run(&["node", "check", "--config", node.config().to_str().unwrap()]);
    assert!(ok, "node check failed after the crashes:\n{out}\n{err}");
}

fn verify(node: &Node, name: &str, acked: &BTreeMap<u64, String>, notes: &BTreeMap<u64, String>) {
    let heads = node.heads();
    let (size, root) = heads.get(name).cloned().unwrap();
    // Every acknowledged append is at its index.
    let mut start = 0;
    while start < size {
        let end = (start + 1000).min(size);
        let entries = node.get(&format!("/v1/logs/{name}/entries?start={start}&end={end}"));
        for e in entries.as_array().unwrap() {
            let index = e["index"].as_u64().unwrap();
            if let Some(want) = acked.get(&index) {
                assert_eq!(
                    e["entry"]["body"]["hop"]["mfp1"].as_str().unwrap(),
                    want,
                    "entry {index} changed"
                );
            }
        }
        start = end;
    }
    if let Some((&last, _)) = acked.iter().next_back() {
        assert!(last < size, "acknowledged index {last} lost: log has {size} entries");
    }
    // Every published checkpoint matches the log and extends the earlier ones.
    let root = Hash::from_hex(&root).unwrap();
    let mut prev: Option<(u64, Hash)> = None;
    for (&cp_size, note) in notes {
        let cp = SignedCheckpoint::parse(note).unwrap();
        let c = cp.checkpoint();
        assert!(cp_size <= size, "checkpoint {cp_size} is beyond the log ({size})");
        if cp_size > 0 {
            let v =
                node.get(&format!("/v1/logs/{name}/proof/consistency?from={cp_size}&to={size}"));
            let from_root = Hash::from_hex(v["from_root"].as_str().unwrap()).unwrap();
            assert_eq!(from_root, c.root, "log no longer matches checkpoint {cp_size}");
            let proof: Vec<Hash> = v["proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| Hash::from_hex(h.as_str().unwrap()).unwrap())
                .collect();
            verify_consistency(cp_size, size, &c.root, &root, &proof).unwrap();
            if let Some((ps, pr)) = prev {
                if ps > 0 && ps < cp_size {
                    let v = node
                        .get(&format!("/v1/logs/{name}/proof/consistency?from={ps}&to={cp_size}"));
                    let proof: Vec<Hash> = v["proof"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| Hash::from_hex(h.as_str().unwrap()).unwrap())
                        .collect();
                    verify_consistency(ps, cp_size, &pr, &c.root, &proof).unwrap();
                }
            }
        }
        prev = Some((cp_size, c.root));
    }
}
