//! Ring governance with the real binaries: a ring founded by two backbone members admits three
//! ISPs with `ringlog member admit`; a new member's node joins and replicates; a peering
//! agreement (countersign + peer) changes `ringlog route`; a sponsor's expulsion disconnects
//! the member, stops its log at the expulsion point everywhere and makes its mail host
//! `expelled`. Refused with a reason and nothing stored: an expulsion by a non-sponsor, a forged
//! countersignature, a backbone expulsion without quorum, an admission of a key in use.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ringlog_e2e::{hop, metric, run, run_ok, tune, Node, Ring};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `ringlog ARGS --config NODE --json`, parsed.
fn cli(node: &Node, args: &[&str]) -> Value {
    let cfg = node.config();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--config", cfg.to_str().unwrap(), "--json"]);
    serde_json::from_str(run_ok(&all).trim()).unwrap()
}

/// `ringlog ARGS --config NODE --json` that must fail; returns its one-line error.
fn cli_refused(node: &Node, args: &[&str]) -> String {
    let cfg = node.config();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--config", cfg.to_str().unwrap(), "--json"]);
    let (ok, out, err) = run(&all);
    assert!(!ok, "ringlog {all:?} should have been refused, printed {out}");
    let err = err.trim().to_string();
    assert_eq!(err.lines().count(), 1, "error must be one line: {err}");
    err
}

fn roster_names(node: &Node) -> Vec<String> {
    node.get("/v1/roster")["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["info"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn own_size(node: &Node) -> u64 {
    node.get("/healthz")["size"].as_u64().unwrap()
}

fn head_of(node: &Node, member: &str) -> Option<(u64, String)> {
    node.heads().get(member).cloned()
}

fn trust(node: &Node, host: &str) -> String {
    cli(node, &["trust", host])["trust"].as_str().unwrap().to_string()
}

fn route(node: &Node, domain: &str) -> Value {
    cli(node, &["route", domain])["next"].clone()
}

#[test]
fn governance_from_the_command_line() {
    let t0 = Instant::now();
    let mut ring = Ring::new(2);
    for n in &ring.nodes {
        tune(n);
    }
    // Three ISPs, made by `ringlog init` like any member, then given the ring's genesis.
    let isps = [("isp-a", "m0"), ("isp-b", "m0"), ("isp-c", "m1")];
    let mut members: Vec<Node> = ring.nodes.drain(..).collect();
    for (i, (name, _)) in isps.iter().enumerate() {
        let dir = ring.tmp.path().join(name);
        let host = format!("127.0.2.{}", i + 1);
        let domain = format!("{name}.example");
        let n = Node::init(
            &dir,
            &format!("{name}.example"),
            &["--mail-host", &host, "--domain", &domain],
        );
        std::fs::copy(&ring.genesis, dir.join("genesis.json")).unwrap();
        tune(&n);
        members.push(n);
    }
    let [m0, m1, a, b, c] = &mut members[..] else { unreachable!() };
    m0.start();
    m1.start();

    // Admissions: from member.json (isp-a, isp-c) and from the fields (isp-b).
    let v =
        cli(m0, &["member", "admit", "--member-file", a.dir.join("member.json").to_str().unwrap()]);
    assert_eq!(v["applied"], Value::Bool(true), "{v}");
    let info_b: Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.join("member.json")).unwrap()).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    cli(
        m0,
        &[
            "member",
            "admit",
            "--name",
            &s(&info_b["name"]),
            "--log-key",
            &s(&info_b["log_key"]),
            "--node-key",
            &s(&info_b["node_key"]),
            "--addr",
            &s(&info_b["addrs"][0]),
            "--mail-host",
            &s(&info_b["mail_hosts"][0]),
            "--domain",
            &s(&info_b["domains"][0]),
            "--abuse",
            "abuse@isp-b.example",
        ],
    );
    cli(m1, &["member", "admit", "--member-file", c.dir.join("member.json").to_str().unwrap()]);

    // Refused: an admission of a key that is already a member's.
    let m0_size = own_size(m0);
    let info_a: Value =
        serde_json::from_str(&std::fs::read_to_string(a.dir.join("member.json")).unwrap()).unwrap();
    let other_key = "11".repeat(32);
    let err = cli_refused(
        m0,
        &[
            "member",
            "admit",
            "--name",
            "dup.example",
            "--log-key",
            &s(&info_a["log_key"]),
            "--node-key",
            &other_key,
            "--domain",
            "dup.example",
        ],
    );
    assert!(err.contains("is already in use by isp-a.example"), "{err}");
    assert_eq!(own_size(m0), m0_size, "a refused admission must store nothing");
    eprintln!("refused (key in use): {err}");
    let m1_size = own_size(m1);

    // The new members' nodes start, join and replicate.
    for n in [&mut *a, &mut *b, &mut *c] {
        n.start();
    }
    let (m0, m1, a, b, c) = (&*m0, &*m1, &*a, &*b, &*c);
    let all: Vec<&Node> = vec![m0, m1, a, b, c];
    Ring::wait_for(Duration::from_secs(60), "every node to know the five members", || {
        all.iter().all(|n| roster_names(n).len() == 5)
    });
    for (i, n) in [a, b, c].iter().enumerate() {
        n.append(&hop(1000 + i as u64, "customer:alice", "local:x.example")).unwrap();
    }
    let joined = Instant::now();
    Ring::wait_for(Duration::from_secs(60), "every log on every node with equal heads", || {
        let own: Vec<(String, Option<(u64, String)>)> =
            all.iter().map(|n| (n.name.clone(), head_of(n, &n.name))).collect();
        own.iter().all(|(name, head)| {
            head.as_ref().is_some_and(|h| h.0 > 0) && all.iter().all(|n| head_of(n, name) == *head)
        })
    });
    eprintln!("new members' logs replicated everywhere in {:?}", joined.elapsed());

    // Governance over TCP needs the bearer token; with it, an update goes through.
    let tcp =
        ringlog_node::client::Client::new(ringlog_node::client::Endpoint::Tcp(a.http.clone()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = serde_json::json!({ "update": { "addrs": [], "mail_hosts": [], "domains": [], "abuse": "x@y" } });
    let err = rt.block_on(tcp.post("/v1/governance", &body)).unwrap_err().to_string();
    assert!(err.contains("missing bearer token"), "{err}");
    let token = a.dir.join("keys/api.token");
    let (ok, out, err) = run(&[
        "member",
        "update",
        "--abuse",
        "noc@isp-a.example",
        "--node",
        &a.http,
        "--token-file",
        token.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "update over TCP: {err}{out}");
    Ring::wait_for(Duration::from_secs(30), "isp-a's new abuse contact on m1", || {
        m1.get("/v1/roster")["members"].as_array().unwrap().iter().any(|m| {
            m["info"]["name"] == "isp-a.example" && m["info"]["abuse"] == "noc@isp-a.example"
        })
    });
    // The update kept what it did not name: isp-a's host is still trusted.
    assert_eq!(trust(m1, "127.0.2.1"), "trusted");

    // Peering: isp-c countersigns, isp-a writes; isp-a's route to isp-c changes.
    assert_eq!(route(a, "isp-c.example")["route"], "upstream");
    assert_eq!(route(a, "isp-c.example")["member"], "m0.example");
    let cs = cli(c, &["member", "countersign", "--partner", "isp-a.example"]);
    let countersig = s(&cs["countersig"]);
    // Refused: a forged countersignature (isp-c's signature over another pair's statement).
    let b_size = own_size(b);
    let err = cli_refused(
        b,
        &["member", "peer", "--partner", "isp-c.example", "--countersig", &countersig],
    );
    assert!(err.contains("countersignature of isp-c.example does not verify"), "{err}");
    assert_eq!(own_size(b), b_size, "a refused peering must store nothing");
    eprintln!("refused (forged countersignature): {err}");
    cli(a, &["member", "peer", "--partner", "isp-c.example", "--countersig", &countersig]);
    let r = route(a, "isp-c.example");
    assert_eq!(
        (r["route"].as_str(), r["member"].as_str()),
        (Some("member"), Some("isp-c.example"))
    );
    Ring::wait_for(Duration::from_secs(30), "isp-c to route to isp-a directly", || {
        route(c, "isp-a.example")["member"] == "isp-a.example"
    });

    // Evidence against isp-b: a spam record of its own, traced and exported.
    let spam = hop(4242, "customer:spammer", "external:victim.example");
    b.append(&spam).unwrap();
    let bundle = ring.tmp.path().join("isp-b-spam.json");
    let mfp1 = s(&spam["mfp1"]);
    let mut exported = false;
    for _ in 0..100 {
        let (ok, _, _) = run(&[
            "trace",
            "--node",
            &b.http,
            "--fingerprint",
            &mfp1,
            "--evidence",
            bundle.to_str().unwrap(),
        ]);
        if ok {
            exported = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(exported, "no evidence bundle for the spam record");
    let ev = bundle.to_str().unwrap();

    // Refused: an expulsion by a member that is not the sponsor.
    let err = cli_refused(
        m1,
        &["member", "expel", "isp-b.example", "--evidence", ev, "--reason", "spam"],
    );
    assert!(err.contains("m1.example is not the sponsor of isp-b.example"), "{err}");
    assert_eq!(own_size(m1), m1_size, "a refused expulsion must store nothing");
    eprintln!("refused (not the sponsor): {err}");
    // Refused: a backbone expulsion without quorum (the genesis asks for 2 of 2).
    let m0_size = own_size(m0);
    let err =
        cli_refused(m0, &["member", "expel", "m1.example", "--evidence", ev, "--reason", "spam"]);
    assert!(err.contains("has 1 valid backbone signatures, needs 2"), "{err}");
    assert_eq!(own_size(m0), m0_size, "a refused expulsion must store nothing");
    eprintln!("refused (no quorum): {err}");

    // The sponsor expels isp-b once every node holds all of its log.
    Ring::wait_for(Duration::from_secs(30), "isp-b's log to be the same everywhere", || {
        let h = head_of(b, &b.name);
        all.iter().all(|n| head_of(n, &b.name) == h)
    });
    let point = head_of(b, &b.name).unwrap();
    Ring::wait_for(Duration::from_secs(30), "isp-b and m0 connected to all four others", || {
        metric(b, "ringlog_peers_connected") == Some(4)
            && metric(m0, "ringlog_peers_connected") == Some(4)
    });
    let started = Instant::now();
    let v = cli(m0, &["member", "expel", "isp-b.example", "--evidence", ev, "--reason", "spam"]);
    assert_eq!(v["applied"], Value::Bool(true), "{v}");
    let others: Vec<&Node> = vec![m0, m1, a, c];
    Ring::wait_for(Duration::from_secs(30), "isp-b's mail host to be expelled everywhere", || {
        others.iter().all(|n| trust(n, "127.0.2.2") == "expelled")
    });
    let verdict = started.elapsed();
    Ring::wait_for(Duration::from_secs(30), "isp-b to be disconnected", || {
        metric(b, "ringlog_peers_connected") == Some(0)
            && others.iter().all(|n| metric(n, "ringlog_peers_connected") == Some(3))
    });
    let cut_off = started.elapsed();
    eprintln!(
        "expulsion: expelled everywhere after {verdict:?}, isp-b disconnected after {cut_off:?}"
    );
    assert!(cut_off < Duration::from_secs(20), "disconnect took {cut_off:?}");
    let status = &cli(m1, &["roster"])["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["info"]["name"] == "isp-b.example")
        .unwrap()["status"]
        .clone();
    assert_eq!(status["status"], "expelled");
    assert_eq!(status["from_index"].as_u64(), Some(point.0));

    // The expelled node writes on; nobody accepts it: its log stays at the expulsion point.
    for i in 0..5 {
        b.append(&hop(9000 + i, "customer:spammer", "external:victim.example")).unwrap();
    }
    assert!(head_of(b, &b.name).unwrap().0 > point.0);
    std::thread::sleep(Duration::from_secs(3)); // ten anti-entropy rounds
    for n in &others {
        assert_eq!(
            head_of(n, &b.name),
            Some(point.clone()),
            "{} took isp-b's later entries",
            n.name
        );
        assert_eq!(trust(n, "127.0.2.2"), "expelled");
    }
    eprintln!("isp-b's own view of its host: {}", trust(b, "127.0.2.2"));
    // Routes through it are gone; the peering still routes isp-a to isp-c.
    assert_eq!(route(m0, "isp-b.example")["route"], "unroutable");
    assert_eq!(route(a, "isp-c.example")["member"], "isp-c.example");

    // The sponsor reinstates isp-b from its current head: what it wrote while expelled stays
    // refused for good, its host is trusted again.
    let resume = head_of(b, &b.name).unwrap().0.to_string();
    let v = cli(
        m0,
        &[
            "member",
            "reinstate",
            "isp-b.example",
            "--reason",
            "cleaned up",
            "--from-index",
            &resume,
        ],
    );
    assert_eq!(v["applied"], Value::Bool(true), "{v}");
    Ring::wait_for(Duration::from_secs(30), "isp-b to be trusted again", || {
        [m0, m1].iter().all(|n| trust(n, "127.0.2.2") == "trusted")
    });

    // A backbone expulsion with a quorum: m1's signature (from `member cosign`) and m0's own.
    let m1_point = own_size(m1).to_string();
    let q = cli(
        m1,
        &[
            "member",
            "cosign",
            "expel",
            "m1.example",
            "--from-index",
            &m1_point,
            "--evidence",
            ev,
            "--reason",
            "quorum test",
        ],
    );
    let quorum_sig = s(&q["quorum_sig"]);
    let v = cli(
        m0,
        &[
            "member",
            "expel",
            "m1.example",
            "--from-index",
            &m1_point,
            "--evidence",
            ev,
            "--reason",
            "quorum test",
            "--quorum-sig",
            &quorum_sig,
        ],
    );
    assert_eq!(v["applied"], Value::Bool(true), "{v}");
    assert_eq!(trust(m0, "127.0.1.2"), "expelled");
    eprintln!("governance test done in {:?}", t0.elapsed());
}
