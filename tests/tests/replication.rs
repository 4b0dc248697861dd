//! Replication between real node processes on loopback: five nodes converge on every log
//! under load, a SIGKILLed node and a late empty node catch up, an outsider (another genesis)
//! is refused, and forged gossip injected through the real network layer is rejected with the
//! sender penalised. The five-node run ends with an audit of every store (clean, nobody
//! accused).
//!
//! `RINGLOG_E2E_BIG=1` makes the late node catch up on 100,000 entries instead of 20,000, and
//! `RINGLOG_E2E_BIG=N` on N entries.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ringlog_e2e::{hop, metric, run_ok, stop_and_audit, tune, Node, Ring};
use ringlog_protocol::record::{Body, Entry, MemberUpdate};
use ringlog_protocol::replication::Gossip;
use ringlog_protocol::SecretKey;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Appends `n` hop records in batches of `batch`; returns how many were acknowledged.
fn append_n(node: &Node, seed: u64, n: u64, batch: u64) -> u64 {
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let reqs: Vec<Value> =
            (0..k).map(|i| hop(seed + done + i, "customer:alice", "local:x.example")).collect();
        match node.append(&Value::Array(reqs)) {
            Ok(_) => done += k,
            Err(e) if e.contains("overloaded") => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("append on {}: {e}", node.name),
        }
    }
    done
}

/// Waits until every node in `nodes` holds the same (size, root) for every log of `expect`
/// (member -> size), and returns how long that took.
fn wait_converged(nodes: &[&Node], expect: &BTreeMap<String, u64>, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < timeout {
        // Only the logs expected: a node's own empty log may exist on it alone.
        let heads: Vec<BTreeMap<String, (u64, String)>> = nodes
            .iter()
            .map(|n| n.heads().into_iter().filter(|(m, _)| expect.contains_key(m)).collect())
            .collect();
        let sizes_ok = heads
            .iter()
            .all(|h| expect.iter().all(|(m, size)| h.get(m).map(|(s, _)| s) == Some(size)));
        if sizes_ok && heads.windows(2).all(|w| w[0] == w[1]) {
            return t0.elapsed();
        }
        last = format!("{heads:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for n in nodes {
        eprintln!("--- {} log tail:\n{}", n.name, tail(&n.log(), 30));
    }
    panic!("no convergence after {timeout:?}; expected sizes {expect:?}; heads:\n{last}");
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn five_nodes_converge_and_a_killed_node_catches_up() {
    let mut ring = Ring::new(5);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    let names: Vec<String> = ring.nodes.iter().map(|n| n.name.clone()).collect();
    let mut sizes: BTreeMap<String, u64> = names.iter().map(|n| (n.clone(), 0)).collect();

    // Each node appends at its own rate: node i writes 5 * (i + 1) records every 50 ms.
    let phase = |nodes: &[&Node], sizes: &mut BTreeMap<String, u64>, dur: Duration| {
        let got: Vec<(String, u64)> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    s.spawn(move || {
                        let rate = 5 * (i as u64 + 1);
                        let seed = (i as u64) << 40 | Instant::now().elapsed().as_nanos() as u64;
                        let t0 = Instant::now();
                        let mut total = 0;
                        while t0.elapsed() < dur {
                            total += append_n(n, seed + total, rate, rate);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        (n.name.clone(), total)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, n) in got {
            *sizes.get_mut(&name).unwrap() += n;
        }
    };

    let all: Vec<&Node> = ring.nodes.iter().collect();
    phase(&all, &mut sizes, Duration::from_secs(3));
    let t = wait_converged(&all, &sizes, Duration::from_secs(60));
    eprintln!("five nodes converged {t:?} after the load stopped; sizes {sizes:?}");

    // SIGKILL one node; the others go on writing; it restarts and catches up.
    ring.nodes[4].kill();
    let four: Vec<&Node> = ring.nodes[..4].iter().collect();
    phase(&four, &mut sizes, Duration::from_secs(3));
    ring.nodes[4].start();
    let all: Vec<&Node> = ring.nodes.iter().collect();
    phase(&all, &mut sizes, Duration::from_secs(1));
    let t = wait_converged(&all, &sizes, Duration::from_secs(60));
    eprintln!("after kill and restart, converged {t:?} after the load stopped; sizes {sizes:?}");
    for n in &ring.nodes {
        assert_eq!(metric(n, "ringlog_conflicts_total").unwrap_or(0), 0, "{}", n.name);
        assert_eq!(metric(n, "ringlog_rejected_total").unwrap_or(0), 0, "{}", n.name);
    }
    assert!(metric(&ring.nodes[0], "ringlog_replicated_entries_total").unwrap_or(0) > 0);
    // Audited at the end: every store clean, every log complete, nobody accused.
    stop_and_audit(&mut ring.nodes, &sizes);
}

#[test]
fn a_late_empty_node_catches_up_on_a_backlog() {
    // RINGLOG_E2E_BIG=1: 100,000 entries; RINGLOG_E2E_BIG=N (N > 1): N entries.
    let n: u64 = match std::env::var("RINGLOG_E2E_BIG") {
        Ok(v) => v.parse().ok().filter(|&n: &u64| n > 1).unwrap_or(100_000),
        Err(_) => 20_000,
    };
    let mut ring = Ring::new(2);
    ring.nodes.iter().for_each(tune);
    ring.nodes[0].start();
    let t0 = Instant::now();
    append_n(&ring.nodes[0], 1, n, 1000);
    let appended = t0.elapsed();
    let m0 = ring.nodes[0].name.clone();
    Ring::wait_for(
        Duration::from_secs(30 + n / 5000),
        "a checkpoint over the whole backlog",
        || ring.nodes[0].get("/v1/logs")[0]["checkpoint_size"].as_u64() == Some(n),
    );
    ring.nodes[1].start();
    let t0 = Instant::now();
    let expect: BTreeMap<String, u64> = [(m0.clone(), n)].into();
    let nodes: Vec<&Node> = ring.nodes.iter().collect();
    let t = wait_converged(&nodes, &expect, Duration::from_secs(120 + n / 2000));
    let t_total = t0.elapsed();
    eprintln!(
        "backlog of {n} entries appended in {appended:?}; late node caught up in {t_total:?} \
         ({:.0} entries/s, including its start-up and connection)",
        n as f64 / t.as_secs_f64()
    );
    // The late node checked and kept the writer's checkpoint at the backlog's end.
    // (It is kept just after the entries it covers are appended.)
    Ring::wait_for(Duration::from_secs(10), "the late node to keep the last checkpoint", || {
        ring.nodes[1]
            .try_get(&format!("/v1/logs/{m0}/checkpoint"))
            .is_ok_and(|cp| cp["size"].as_u64() == Some(n))
    });
}

#[test]
fn an_outsider_cannot_connect_or_publish() {
    let mut ring = Ring::new(2);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    // An outsider with its own genesis that lists m0 (its node key and address) as a member:
    // it dials m0, which does not know its key.
    let odir = ring.tmp.path().join("outsider");
    let mut outsider = Node::init(&odir, "outsider.example", &["--domain", "o.example"]);
    tune(&outsider);
    let ogen = ring.tmp.path().join("outsider-genesis.json");
    run_ok(&[
        "genesis",
        "--ring",
        "other-ring",
        "--out",
        ogen.to_str().unwrap(),
        "--member",
        odir.to_str().unwrap(),
    ]);
    let mut g: Value = serde_json::from_str(&std::fs::read_to_string(&ogen).unwrap()).unwrap();
    let m0: Value = serde_json::from_str(
        &std::fs::read_to_string(ring.nodes[0].dir.join("member.json")).unwrap(),
    )
    .unwrap();
    g["members"].as_array_mut().unwrap().push(m0);
    std::fs::write(&ogen, g.to_string()).unwrap();
    outsider.start();
    append_n(&outsider, 7, 50, 50);
    append_n(&ring.nodes[0], 9, 10, 10);
    Ring::wait_for(Duration::from_secs(20), "m0 to refuse the outsider", || {
        metric(&ring.nodes[0], "ringlog_p2p_refused_inbound_total").unwrap_or(0) > 0
    });
    Ring::wait_for(Duration::from_secs(10), "m0's log to show the refusal", || {
        ring.nodes[0].log().contains("refused inbound connections from peers not in the roster")
    });
    // The members still replicate between themselves; nothing of the outsider arrived.
    let expect: BTreeMap<String, u64> = [(ring.nodes[0].name.clone(), 10)].into();
    let nodes: Vec<&Node> = ring.nodes.iter().collect();
    wait_converged(&nodes, &expect, Duration::from_secs(30));
    for n in &ring.nodes {
        let heads = n.heads();
        assert!(!heads.contains_key("outsider.example"), "{heads:?}");
        assert!(heads.len() <= 2, "{heads:?}");
    }
    assert_eq!(outsider.heads().len(), 1, "the outsider got nothing either");
}

#[test]
fn forged_gossip_is_rejected_and_the_sender_penalised() {
    // m1's node key is used by this test process: m0 takes it for m1, a member.
    let mut ring = Ring::new(2);
    ring.nodes.iter().for_each(tune);
    ring.nodes[0].start();
    let m1 = &ring.nodes[1];
    let genesis = ringlog_protocol::genesis::Genesis::from_json(
        &std::fs::read_to_string(&ring.genesis).unwrap(),
    )
    .unwrap();
    let node_seed = ringlog_node::identity::read_secret(&m1.dir.join("keys/node.key")).unwrap();
    let log_key = SecretKey::from_seed(
        ringlog_node::identity::read_secret(&m1.dir.join("keys/log.key")).unwrap(),
    );
    let m0_info = genesis.members.iter().find(|m| m.name == ring.nodes[0].name).unwrap();
    let (entries_topic, _) = ringlog_node::replicator::topics(&genesis.ring_tag());

    let rt = tokio::runtime::Runtime::new().unwrap();
    // The handle is kept: dropping it stops the network task.
    let _net = rt.block_on(async {
        use ringlog_node::net;
        let mut cfg = net::NetConfig::new(node_seed);
        cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", m1.p2p_port).parse().unwrap()];
        cfg.topics = vec![entries_topic.clone()];
        let (h, mut events) = net::spawn(cfg).unwrap();
        let peer = net::peer_id_from_ed25519(&m0_info.node_key.0 .0).unwrap();
        let addrs = m0_info.addrs.iter().map(|a| a.parse().unwrap()).collect();
        h.set_members(vec![net::Member { peer, addrs }]).await;
        // Drain events (requests from m0 are left unanswered).
        tokio::spawn(async move { while events.recv().await.is_some() {} });

        // Entries of m1's log signed by m1's key, then one signature broken.
        let entry = |i: u64| {
            let body = Body::Update(MemberUpdate {
                addrs: vec![],
                mail_hosts: vec![format!("h{i}.example")],
                domains: vec![],
                abuse: "abuse@m1.example".into(),
            });
            Entry { log: log_key.public(), index: i, body }.sign(&log_key).unwrap().encode()
        };
        let mut forged = vec![entry(0), entry(1)];
        let last = forged[1].len() - 1;
        forged[1][last] ^= 0x40;
        let msg = Gossip::Entries { log: log_key.public(), first: 0, entries: forged }.encode();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match h.publish(&entries_topic, msg.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "could not publish: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        h
    });
    let m0 = &ring.nodes[0];
    Ring::wait_for(Duration::from_secs(20), "m0 to penalise the forger", || {
        m0.log().contains("penalising it")
    });
    assert!(metric(m0, "ringlog_rejected_total").unwrap_or(0) >= 1);
    let heads = m0.heads();
    assert!(heads.get(&m1.name).is_none_or(|(s, _)| *s == 0), "nothing stored: {heads:?}");
}

/// Benchmark (opt-in: `RINGLOG_E2E_BENCH=1`): five nodes, ~1,000 appends/s each, for
/// `RINGLOG_E2E_BENCH_SECS` (default 10) seconds. Reports p50/p99 of the time from the
/// writer's acknowledgement to availability at every other node (sampled by polling each
/// node's `/v1/logs` every 20 ms, so numbers carry up to ~20 ms of sampling delay).
#[test]
fn bench_replication_latency() {
    if std::env::var_os("RINGLOG_E2E_BENCH").is_none() {
        eprintln!("note: set RINGLOG_E2E_BENCH=1 to run the replication benchmark");
        return;
    }
    let secs: u64 =
        std::env::var("RINGLOG_E2E_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut ring = Ring::new(5);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    std::thread::sleep(Duration::from_secs(2));
    let nodes: Vec<&Node> = ring.nodes.iter().collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    // (writer, last index of the batch, ack time in ms since t0)
    let (acks, seen) = std::thread::scope(|s| {
        let writers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                s.spawn(move || {
                    let mut acks = Vec::new();
                    let mut size = 0u64;
                    let start = Instant::now();
                    let mut k = 0u64;
                    while start.elapsed() < Duration::from_secs(secs) {
                        let reqs: Vec<Value> = (0..50)
                            .map(|j| hop((i as u64) << 40 | (k * 50 + j), "customer:a", "local:x"))
                            .collect();
                        if n.append(&Value::Array(reqs)).is_ok() {
                            size += 50;
                            acks.push((i, size - 1, t0.elapsed().as_secs_f64() * 1e3));
                        }
                        k += 1;
                        // 50 records every 50 ms: ~1,000 appends/s per node.
                        let next = Duration::from_millis(50 * k);
                        if let Some(d) = next.checked_sub(start.elapsed()) {
                            std::thread::sleep(d);
                        }
                    }
                    acks
                })
            })
            .collect();
        // Observers: per node, the time each (log, size) was first seen.
        let observers: Vec<_> = nodes
            .iter()
            .map(|n| {
                let stop = &stop;
                s.spawn(move || {
                    let mut seen: Vec<(String, u64, f64)> = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(v) = n.try_get("/v1/logs") {
                            let t = t0.elapsed().as_secs_f64() * 1e3;
                            for l in v.as_array().into_iter().flatten() {
                                let m = l["member"].as_str().unwrap_or("").to_string();
                                seen.push((m, l["size"].as_u64().unwrap_or(0), t));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    seen
                })
            })
            .collect();
        let acks: Vec<_> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen: Vec<_> = observers.into_iter().map(|h| h.join().unwrap()).collect();
        (acks, seen)
    });
    let total = acks.len() as f64 * 50.0;
    let mut lat = Vec::new();
    let mut missing = 0;
    for (w, idx, at) in &acks {
        let mut worst: f64 = 0.0;
        for (o, obs) in seen.iter().enumerate() {
            if o == *w {
                continue;
            }
            match obs.iter().find(|(m, size, _)| m == &names[*w] && *size > *idx) {
                Some((_, _, t)) => worst = worst.max(t - at),
                None => missing += 1,
            }
        }
        lat.push(worst.max(0.0));
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    eprintln!(
        "bench: {total} appends in {secs} s ({:.0}/s aggregate), acknowledgement -> every other \
         node: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; never seen: {missing}",
        total / secs as f64,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    assert_eq!(missing, 0);
}
