//! A network partition made with Linux network namespaces: one node in its own namespace,
//! joined to the host by a veth pair. Both sides write while the link is down; when it comes
//! back up both hold both logs, identical. Runs only as root with `ip` available (CI is root);
//! elsewhere it prints a note and passes.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ringlog_e2e::{bin, hop, run_ok, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
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

/// A namespace with a veth pair to the host; removed on drop.
struct Netns {
    ns: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let guard = Netns { ns: format!("rlpart{id}"), host_if: format!("rlh{}", id % 100_000) };
    let ns_if = format!("rln{}", id % 100_000);
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

    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::init(&tmp.path().join("a"), "a.example", &["--domain", "a.example"]);
    let mut b = Node::init(&tmp.path().join("b"), "b.example", &["--domain", "b.example"]);
    // a listens for peers on the host side of the veth; b, in the namespace, on its side
    // (HTTP too, so this process can reach it).
    for (node, ip, http) in [(&a, &host_ip, false), (&b, &ns_ip, true)] {
        for f in ["ringlog.toml", "member.json"] {
            let p = node.dir.join(f);
            let mut text = std::fs::read_to_string(&p).unwrap();
            text = text.replace("/ip4/127.0.0.1/", &format!("/ip4/{ip}/"));
            if http && f == "ringlog.toml" {
                text = text.replace("127.0.0.1:", &format!("{ip}:"));
            }
            text = text
                .replace("sync_interval_ms = 2000", "sync_interval_ms = 300")
                .replace("checkpoint_interval_ms = 1000", "checkpoint_interval_ms = 300");
            std::fs::write(&p, text).unwrap();
        }
    }
    b.http = b.http.replace("127.0.0.1", &ns_ip);
    let genesis = tmp.path().join("genesis.json");
    run_ok(&[
        "genesis",
        "--ring",
        "partition-ring",
        "--out",
        genesis.to_str().unwrap(),
        "--member",
        a.dir.to_str().unwrap(),
        "--member",
        b.dir.to_str().unwrap(),
    ]);
    a.start();
    let log = std::fs::File::create(b.dir.join("node.log")).unwrap();
    let b_proc = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &guard.ns])
            .arg(bin())
            .args(["node", "run", "--config", b.config().to_str().unwrap()])
            .env("RINGLOG_LOG", "info,libp2p=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while b.try_get("/healthz").is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "b did not start:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let converged = |want: &BTreeMap<&str, u64>, timeout: Duration| {
        let t0 = Instant::now();
        loop {
            let ok = want.iter().all(|(m, n)| size_of(&a, m) == *n && size_of(&b, m) == *n)
                && want.keys().all(|m| a.heads().get(*m) == b.heads().get(*m));
            if ok {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "no convergence on {want:?}: a {:?} b {:?}\nb log:\n{}",
                a.heads(),
                b.heads(),
                b.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    append(&a, 1, 100);
    append(&b, 1 << 40, 100);
    converged(&[("a.example", 100), ("b.example", 100)].into(), Duration::from_secs(30));

    // Partition: both sides go on writing.
    must(&["ip", "link", "set", &guard.host_if, "down"]);
    for i in 0..5 {
        append(&a, 1000 + i * 100, 100);
        append(&b, (1 << 40) + 1000 + i * 100, 100);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(size_of(&a, "b.example"), 100, "the partition let b's entries through");
    // (b's HTTP API is reachable only over the veth; its appends go over its Unix socket.)

    // Heal.
    must(&["ip", "link", "set", &guard.host_if, "up"]);
    let t = converged(&[("a.example", 600), ("b.example", 600)].into(), Duration::from_secs(90));
    eprintln!("partition healed: both sides converged {t:?} after the link came back");

    drop(b_proc);
    a.kill();
    drop(guard);
}
