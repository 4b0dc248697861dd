//! The node API under bad input: every malformed or unauthorised request gets a 4xx with a
//! message and stores nothing; a corrupted store is named by `node check` and the node refuses
//! to sign over it.
#![allow(clippy::unwrap_used)] // tests

use ringlog_e2e::{hop, run, Node, Ring};
use ringlog_node::client::{Client, Endpoint};
use serde_json::{json, Value};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn size(node: &Node) -> u64 {
    node.heads().get(&node.name).map(|h| h.0).unwrap_or(0)
}

/// Sends raw bytes; returns (status, parsed error message).
fn raw(client: &Client, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
    let (status, bytes) = rt().block_on(client.raw(method, path, body)).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status.as_u16(), v["error"].as_str().unwrap_or("").to_string())
}

#[test]
fn bad_input_gets_4xx_and_stores_nothing() {
    let mut ring = Ring::new(1);
    let node = &mut ring.nodes[0];
    node.start();
    node.append(&hop(1, "customer:alice", "local:example.org")).unwrap();
    let before = size(node);
    let sock = node.socket_client();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed json", b"{\"mfp1\": ".to_vec(), 400),
        ("not json at all", vec![0xff, 0x00, 0x13, 0x37], 400),
        (
            "unknown field",
            serde_json::to_vec(
                &json!({"mfp1": "00".repeat(32), "from": "customer:a", "to": "local:x", "evil": 1}),
            )
            .unwrap(),
            422,
        ),
        (
            "bad hash",
            serde_json::to_vec(&json!({"mfp1": "xyz", "from": "customer:a", "to": "local:x"}))
                .unwrap(),
            422,
        ),
        ("bad from", serde_json::to_vec(&hop(2, "nobody", "local:x")).unwrap(), 422),
        ("bad to", serde_json::to_vec(&hop(3, "customer:a", "elsewhere")).unwrap(), 422),
        ("bad ip", serde_json::to_vec(&hop(4, "external:999.1.1.1", "local:x")).unwrap(), 422),
        (
            "unknown member",
            serde_json::to_vec(&hop(5, "member:nosuch.example", "local:x")).unwrap(),
            422,
        ),
        ("empty batch", b"[]".to_vec(), 400),
    ];
    for (what, body, want) in cases {
        let (status, msg) = raw(&sock, "POST", "/v1/append", Some(body));
        assert_eq!(status, want, "{what}: got {status} {msg}");
        assert!(!msg.is_empty(), "{what}: no error message");
    }
    // An oversized body is refused once the limit is reached: the server answers 413 and
    // closes while the client may still be sending, so the client writes from a thread and
    // ignores a broken pipe, and the answer is read on its own.
    {
        use std::io::{Read as _, Write as _};
        let mut conn =
            std::os::unix::net::UnixStream::connect(node.dir.join("ringlog.sock")).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let len = 5 * 1024 * 1024;
        let sender = std::thread::spawn(move || {
            let head = format!(
                "POST /v1/append HTTP/1.1\r\nHost: ringlog\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&vec![b' '; len]);
        });
        let mut answer = [0u8; 64];
        let n = conn.read(&mut answer).unwrap();
        let line = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(line.starts_with("HTTP/1.1 413"), "oversized body: {line}");
        drop(conn);
        let _ = sender.join();
    }
    // A batch with one bad record stores none of them.
    let batch = json!([hop(10, "customer:a", "local:x"), hop(11, "bogus", "local:x")]);
    let (status, _) = raw(&sock, "POST", "/v1/append", Some(serde_json::to_vec(&batch).unwrap()));
    assert_eq!(status, 422);

    // The TCP port refuses appends without the right token, and takes them with it.
    let tcp = Client::new(Endpoint::Tcp(node.http.clone()));
    let body = serde_json::to_vec(&hop(20, "customer:a", "local:x")).unwrap();
    assert_eq!(raw(&tcp, "POST", "/v1/append", Some(body.clone())).0, 401);
    let wrong = Client { token: Some("not-the-token".into()), ..tcp.clone() };
    assert_eq!(raw(&wrong, "POST", "/v1/append", Some(body.clone())).0, 403);
    assert_eq!(size(node), before, "a refused request stored something");
    let token = std::fs::read_to_string(node.dir.join("keys/api.token")).unwrap();
    let right = Client { token: Some(token.trim().into()), ..tcp.clone() };
    assert_eq!(raw(&right, "POST", "/v1/append", Some(body)).0, 200);
    assert_eq!(size(node), before + 1);

    // Reads: unknown log, missing entry, bad ranges and proofs, bad search keys.
    let name = node.name.clone();
    for (path, want) in [
        ("/v1/logs/nobody.example/checkpoint".to_string(), 404),
        (format!("/v1/logs/{name}/entries/999999"), 404),
        (format!("/v1/logs/{name}/entries?start=10&end=5"), 400),
        (format!("/v1/logs/{name}/entries?start=0&end=5000"), 400),
        (format!("/v1/logs/{name}/proof/inclusion?index=99&size=5"), 400),
        (format!("/v1/logs/{name}/proof/consistency?from=9&to=2"), 400),
        ("/v1/search?mfp1=zz".to_string(), 400),
        ("/v1/search".to_string(), 400),
    ] {
        let (status, msg) = raw(&tcp, "GET", &path, None);
        assert_eq!(status, want, "GET {path}: {status} {msg}");
    }
    // A malformed .eml: the CLI refuses an empty message before anything is sent.
    let empty = node.dir.join("empty.eml");
    std::fs::write(&empty, b"").unwrap();
    let (ok, _, err) = run(&[
        "append",
        empty.to_str().unwrap(),
        "--from",
        "customer:a",
        "--to",
        "local:x",
        "--config",
        node.config().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("empty"), "empty message accepted: {err}");
    assert_eq!(size(node), before + 1);
}

#[test]
fn flipped_bit_is_named_and_never_signed_over() {
    let mut ring = Ring::new(1);
    let node = &mut ring.nodes[0];
    node.start();
    let batch: Vec<Value> = (0..50).map(|i| hop(i, "customer:a", "local:x")).collect();
    node.append(&Value::Array(batch)).unwrap();
    node.stop();
    let cfg = node.config();
    let cfg = cfg.to_str().unwrap();
    let (ok, out, err) = run(&["node", "check", "--config", cfg]);
    assert!(ok, "clean store fails its check: {out}{err}");
    let (ok, _, err) = run(&[
        "node",
        "danger-flip-bit",
        "--config",
        cfg,
        "--log",
        "m0.example",
        "--entry",
        "17",
        "--bit",
        "901",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["node", "check", "--config", cfg, "--json"]);
    assert!(!ok, "corrupt store passes its check");
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["object"] == "entry" && p["at"] == 17),
        "entry 17 not named: {report}"
    );
    assert_eq!(problems.len(), 1, "exactly the flipped entry, once: {report}");
    // The node starts (reads still work) but refuses to append or sign over the bad entry.
    node.start();
    let cp_before = node.get("/v1/logs/m0.example/checkpoint")["size"].as_u64().unwrap();
    let err = node.append(&hop(99, "customer:a", "local:x")).unwrap_err();
    assert!(err.contains("faulted"), "{err}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(node.get("/v1/logs/m0.example/checkpoint")["size"].as_u64().unwrap(), cp_before);
    assert!(node.log().contains("refusing to write"), "no clear log line");
}
