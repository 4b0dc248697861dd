//! Investigation end to end: a message relayed through four nodes of a ring, each appending its
//! own record for the message as it stood at that hop; `ringlog trace` finds the origin and
//! confirms every link, exports evidence that `ringlog verify` accepts offline, writes an
//! RFC 5965 report that parses, and `ringlog reveal` opens the customer commitment. A hop that
//! wrote nothing shows up as an unconfirmed link with its duty.
#![allow(clippy::unwrap_used)] // tests

use ringlog_e2e::{run, tune, Node, Ring};
use serde_json::{json, Value};
use std::time::Duration;

const BASE: &str = "From: Alice <alice@m0.example>\r\n\
To: Bob <bob@m3.example>\r\n\
Subject: cheap watches {N}\r\n\
Message-ID: <msg-{N}@m0.example>\r\n\
Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Buy now, message {N}.\r\n";

/// The message as it stands after `hops` relays, each having prepended a Received field.
fn at_hop(n: u32, hops: usize) -> Vec<u8> {
    let mut m = String::new();
    for i in (0..hops).rev() {
        m.push_str(&format!(
            "Received: from m{}.example by m{i}.example with ESMTP id Q{n}x{i};\r\n\
             \tMon, 1 Dec 2025 10:00:0{i} +0000\r\n",
            i.saturating_sub(1)
        ));
    }
    m.push_str(&BASE.replace("{N}", &n.to_string()));
    m.into_bytes()
}

/// Each node of `path` appends its record for message `n`, fingerprinted from its own copy.
fn relay(ring: &Ring, n: u32, path: &[usize], skip: Option<usize>) -> String {
    let mut mfp1 = String::new();
    for (k, &i) in path.iter().enumerate() {
        let fp = ringlog_protocol::fingerprint::fingerprint(&at_hop(n, k + 1));
        mfp1 = fp.mfp1.to_hex();
        if Some(i) == skip {
            continue;
        }
        let from = if k == 0 {
            "customer:alice".to_string()
        } else {
            format!("member:m{}.example", path[k - 1])
        };
        let to = match path.get(k + 1) {
            Some(j) => format!("member:m{j}.example"),
            None => format!("local:m{i}.example"),
        };
        let req = json!({ "mfp1": fp.mfp1, "mfp1_lite": fp.mfp1_lite, "body": fp.body,
                          "from": from, "to": to, "queue_id": format!("Q{n}x{k}") });
        ring.nodes[i].append(&req).unwrap();
    }
    mfp1
}

fn trace_json(node: &Node, mfp1: &str) -> Value {
    let out = run(&["trace", "--node", &node.http, "--fingerprint", mfp1, "--json"]);
    assert!(out.0, "trace failed: {}", out.2);
    serde_json::from_str(&out.1).unwrap()
}

#[test]
fn trace_evidence_verify_arf_and_reveal_across_a_ring() {
    let mut ring = Ring::new(4);
    ring.nodes.iter().for_each(tune);
    ring.start_all();
    let path = [0usize, 1, 2, 3];
    let mfp1 = relay(&ring, 1, &path, None);
    let gap = relay(&ring, 2, &path, Some(2));
    let viewer = &ring.nodes[3];

    // Wait for replication: m3 sees the four records of message 1.
    Ring::wait_for(Duration::from_secs(60), "m3 to hold every hop of message 1", || {
        let out = run(&["trace", "--node", &viewer.http, "--fingerprint", &mfp1, "--json"]);
        out.0
            && serde_json::from_str::<Value>(&out.1)
                .is_ok_and(|v| v["hops"].as_array().is_some_and(|h| h.len() == 4))
    });
    let t = trace_json(viewer, &mfp1);
    assert_eq!(t["origin"]["member"], "m0.example", "{t:#}");
    assert!(t["origin"]["kind"]["customer"]["commitment"].is_string(), "{t:#}");
    let members: Vec<&str> =
        t["hops"].as_array().unwrap().iter().map(|h| h["member"].as_str().unwrap()).collect();
    assert_eq!(members, ["m0.example", "m1.example", "m2.example", "m3.example"]);
    let links = t["links"].as_array().unwrap();
    assert_eq!(links.len(), 3);
    assert!(links.iter().all(|l| l["confirmed"] == true), "{t:#}");
    assert_eq!(t["deliveries"][0]["to"]["local"]["domain"], "m3.example");
    assert_eq!(t["contacts"]["m0.example"].as_str().map(|s| s.contains('@')), Some(true), "{t:#}");

    // Human output names the path.
    let out = run(&["trace", "--node", &viewer.http, "--fingerprint", &mfp1]);
    assert!(out.0 && out.1.contains("origin: m0.example"), "{}", out.1);

    // Evidence and ARF, from the message file itself (the copy the recipient holds).
    let dir = ring.tmp.path();
    let eml = dir.join("received.eml");
    std::fs::write(&eml, at_hop(1, 4)).unwrap();
    let bundle = dir.join("evidence.json");
    let report = dir.join("report.eml");
    let (ok, _, err) = run(&[
        "trace",
        eml.to_str().unwrap(),
        "--node",
        &viewer.http,
        "--evidence",
        bundle.to_str().unwrap(),
        "--arf",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "trace --evidence --arf: {err}");

    // Offline verification: valid but not witnessed (no witnesses yet) -> non-zero unless
    // allowed; a flipped byte fails with a reason.
    let g = ring.genesis.to_str().unwrap();
    let genesis: Value =
        serde_json::from_str(&std::fs::read_to_string(&ring.genesis).unwrap()).unwrap();
    let (ok, out, err) =
        run(&["verify", bundle.to_str().unwrap(), "--genesis", g, "--json", "--allow-unwitnessed"]);
    assert!(ok, "verify: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["trace"]["origin"]["member"], "m0.example");
    assert_eq!(v["trace"]["links"].as_array().unwrap().len(), 3);
    let (ok, _, err) = run(&["verify", bundle.to_str().unwrap(), "--genesis", g]);
    if genesis["witness_k"].as_u64().unwrap_or(0) > 0 && v["witnessed"] == false {
        assert!(!ok && err.contains("not witnessed"), "{err}");
    } else {
        assert!(ok, "{err}");
    }
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let flipped = dir.join("flipped.json");
    std::fs::write(&flipped, &bytes).unwrap();
    let (ok, _, err) =
        run(&["verify", flipped.to_str().unwrap(), "--genesis", g, "--allow-unwitnessed"]);
    assert!(!ok && err.contains("ringlog:"), "{err}");

    // The ARF report parses as RFC 5965.
    check_arf(&std::fs::read(&report).unwrap(), &std::fs::read(&bundle).unwrap(), &t);

    // The origin ISP opens the commitment; anyone checks it.
    let m0 = &ring.nodes[0];
    let cfg = m0.config();
    let (ok, out, err) = run(&[
        "reveal",
        "--mfp1",
        &mfp1,
        "--account",
        "alice",
        "--config",
        cfg.to_str().unwrap(),
        "--node",
        &m0.http,
        "--json",
    ]);
    assert!(ok, "reveal: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["commitment"], t["origin"]["kind"]["customer"]["commitment"]);
    let salt = r["salt"].as_str().unwrap();
    let check = |account: &str| {
        run(&[
            "reveal",
            "--check",
            "--mfp1",
            &mfp1,
            "--account",
            account,
            "--salt",
            salt,
            "--node",
            &viewer.http,
        ])
        .0
    };
    assert!(check("alice"));
    assert!(!check("mallory"));

    // Message 2: m2 relayed it but wrote nothing.
    Ring::wait_for(Duration::from_secs(60), "m3 to hold the three records of message 2", || {
        let out = run(&["trace", "--node", &viewer.http, "--fingerprint", &gap, "--json"]);
        out.0
            && serde_json::from_str::<Value>(&out.1)
                .is_ok_and(|v| v["hops"].as_array().is_some_and(|h| h.len() == 3))
    });
    let t = trace_json(viewer, &gap);
    assert_eq!(t["origin"]["member"], "m0.example");
    let open: Vec<&Value> =
        t["links"].as_array().unwrap().iter().filter(|l| l["confirmed"] == false).collect();
    assert_eq!(open.len(), 2, "{t:#}");
    assert!(open.iter().all(|l| l["duty"] == "m2.example"), "{t:#}");
}

fn check_arf(raw: &[u8], bundle: &[u8], t: &Value) {
    use mail_parser::{MessageParser, MimeHeaders as _};
    let msg = MessageParser::default().parse(raw).expect("report parses");
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("feedback-report"));
    let to = msg.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap();
    assert_eq!(Some(to), t["contacts"]["m0.example"].as_str());
    let types: Vec<String> = msg
        .parts
        .iter()
        .skip(1)
        .filter_map(|p| {
            p.content_type().map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        })
        .collect();
    for want in ["text/plain", "message/feedback-report", "message/rfc822", "application/json"] {
        assert!(types.iter().any(|t| t.eq_ignore_ascii_case(want)), "{want} in {types:?}");
    }
    let text = String::from_utf8_lossy(raw);
    for field in [
        "Feedback-Type: abuse",
        "User-Agent: ringlog/",
        "Version: 1",
        "Reported-Domain: m0.example",
    ] {
        assert!(text.contains(field), "{field}");
    }
    let att = msg
        .attachments()
        .find(|a| a.content_type().is_some_and(|c| c.subtype() == Some("json")))
        .expect("evidence attachment");
    let got = att.contents();
    let want = bundle.strip_suffix(b"\n").unwrap_or(bundle);
    assert_eq!(got, want, "the attached bundle is intact");
}
