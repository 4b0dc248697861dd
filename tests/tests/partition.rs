//! A network partition made with Linux network namespaces: five nodes, two on the host side of
//! a veth pair and three in their own namespace on the other side. Every node writes while the
//! link is down; when it comes back up all five hold all five logs, identical, nothing lost, and
//! an audit of every store at the end is clean with no equivocation proof (nobody falsely
//! accused). Runs only as root with `ip` available (CI is root); elsewhere it prints a note and
//! passes.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ringlog_e2e::{hop, metric, run_ok, stop_and_audit, tune, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).status().map(|s| s.success()).unwrap_or(false)
}

fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {args:?}");
}

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    root && sh(&["ip", "-V"])
}

/// A namespace with a veth pair to the host, and a fallback route that keeps the test's
/// subnet on this machine while the link is down; all removed on drop.
struct Netns {
    ns: String,
    host_if: String,
    subnet: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "route", "del", "unreachable", &self.subnet, "metric", "4000"]);
    }
}

fn append(node: &Node, seed: u64, n: u64) {
    let reqs: Vec<Value> = (0..n).map(|i| hop(seed + i, "customer:a", "local:x.example")).collect();
    node.append(&Value::Array(reqs)).unwrap();
}

fn size_of(node: &Node, member: &str) -> u64 {
    node.heads().get(member).map_or(0, |h| h.0)
}

#[test]
fn a_partition_heals_and_both_sides_converge() {
    if !can_run() {
        eprintln!("note: not root or no `ip`: skipping the network-namespace partition test");
        return;
    }
    let id = std::process::id();
    let net = format!("10.{}.{}", 200 + (id % 50), (id / 50) % 250);
    let (host_ip, ns_ip) = (format!("{net}.1"), format!("{net}.2"));
    let guard = Netns {
        ns: format!("rlpart{id}"),
        host_if: format!("rlh{}", id % 100_000),
        subnet: format!("{net}.0/24"),
    };
    let ns_if = format!("rln{}", id % 100_000);
    // While the link is down its connected route is gone: without this fallback, dials to the
    // namespace would follow the default route off the machine.
    must(&["ip", "route", "add", "unreachable", &guard.subnet, "metric", "4000"]);
    must(&["ip", "netns", "add", &guard.ns]);
    must(&["ip", "link", "add", &guard.host_if, "type", "veth", "peer", "name", &ns_if]);
    must(&["ip", "link", "set", &ns_if, "netns", &guard.ns]);
    must(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &guard.host_if]);
    must(&["ip", "link", "set", &guard.host_if, "up"]);
    let in_ns = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", guard.ns.as_str()];
        v.extend_from_slice(args);
        must(&v);
    };
    in_ns(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if]);
    in_ns(&["ip", "link", "set", &ns_if, "up"]);
    in_ns(&["ip", "link", "set", "lo", "up"]);

    // Nodes 0 and 1 on the host side of the veth, 2, 3 and 4 in the namespace (their HTTP API
    // too, so that this process can reach it while the link is up).
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("p{i}.example")).collect();
    let mut nodes: Vec<Node> =
        names.iter().map(|n| Node::init(&tmp.path().join(n), n, &["--domain", n])).collect();
    let in_namespace = |i: usize| i >= 2;
    for (i, node) in nodes.iter_mut().enumerate() {
        let ip = if in_namespace(i) { &ns_ip } else { &host_ip };
        for f in ["ringlog.toml", "member.json"] {
            let p = node.dir.join(f);
            let mut text = std::fs::read_to_string(&p).unwrap();
            text = text.replace("/ip4/127.0.0.1/", &format!("/ip4/{ip}/"));
            if in_namespace(i) && f == "ringlog.toml" {
                text = text.replace("127.0.0.1:", &format!("{ip}:"));
            }
            std::fs::write(&p, text).unwrap();
        }
        tune(node);
        if in_namespace(i) {
            node.http = node.http.replace("127.0.0.1", &ns_ip);
        }
    }
    let genesis = tmp.path().join("genesis.json");
    let mut args = vec!["genesis", "--ring", "partition-ring", "--out", genesis.to_str().unwrap()];
    let dirs: Vec<String> = nodes.iter().map(|n| n.dir.to_str().unwrap().to_string()).collect();
    for d in &dirs {
        args.extend(["--member", d.as_str()]);
    }
    run_ok(&args);
    let wrapper = ["ip", "netns", "exec", guard.ns.as_str()];
    for (i, node) in nodes.iter_mut().enumerate() {
        node.start_in(if in_namespace(i) { &wrapper } else { &[] });
    }

    let converged = |nodes: &[Node], want: &BTreeMap<String, u64>, timeout: Duration| {
        let t0 = Instant::now();
        loop {
            let heads: Vec<_> = nodes.iter().map(|n| n.heads()).collect();
            let ok = want.iter().all(|(m, size)| {
                heads.iter().all(|h| h.get(m).map(|x| x.0) == Some(*size))
                    && heads.iter().all(|h| h.get(m) == heads[0].get(m))
            });
            if ok {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < timeout, "no convergence on {want:?}: {heads:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        append(node, (i as u64) << 40, 100);
        want.insert(node.name.clone(), 100);
    }
    converged(&nodes, &want, Duration::from_secs(30));

    // Partition 2|3: every node goes on writing (appends go over each node's Unix socket).
    must(&["ip", "link", "set", &guard.host_if, "down"]);
    for round in 0..5u64 {
        for (i, node) in nodes.iter().enumerate() {
            append(node, ((i as u64) << 40) + 1000 + round * 100, 100);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    // Each side replicated within itself and nothing crossed the cut (only the host side's
    // API is reachable now).
    for host_side in &nodes[..2] {
        for (i, m) in names.iter().enumerate() {
            let expect = if in_namespace(i) { 100 } else { 600 };
            assert_eq!(
                size_of(host_side, m),
                expect,
                "{} holds {m} across the cut",
                host_side.name
            );
        }
    }

    // Heal: all five converge on all five logs.
    must(&["ip", "link", "set", &guard.host_if, "up"]);
    for v in want.values_mut() {
        *v = 600;
    }
    let t = converged(&nodes, &want, Duration::from_secs(90));
    eprintln!("partition healed: all five converged {t:?} after the link came back");
    for node in &nodes {
        assert_eq!(metric(node, "ringlog_conflicts_total").unwrap_or(0), 0, "{}", node.name);
        assert_eq!(metric(node, "ringlog_rejected_total").unwrap_or(0), 0, "{}", node.name);
        let accused = node.get("/v1/equivocations");
        assert!(
            accused.as_array().is_some_and(Vec::is_empty),
            "{} accuses someone: {accused}",
            node.name
        );
    }
    // The audit of every store: clean, every entry of all five logs, no equivocation proof.
    assert_eq!(want.len(), 5);
    stop_and_audit(&mut nodes, &want);
    drop(guard);
}
