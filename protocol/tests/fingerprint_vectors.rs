//! Recomputes every test vector in docs/fingerprint.md and compares it with the document.
#![allow(clippy::unwrap_used)] // reason: test code; a failure should stop the test loudly

use ringlog_protocol::fingerprint::{fingerprint, header_set};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/fingerprint.md");

/// Undoes the escapes of an `input:` line: `\r`, `\n`, `\t`, `\\`, `\xHH`.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 4;
                    continue;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The block this implementation produces for `name` and the escaped `input` lines.
fn render(name: &str, inputs: &[String]) -> String {
    let raw: Vec<u8> = inputs.iter().flat_map(|l| unescape(l)).collect();
    let fp = fingerprint(&raw);
    let set = header_set(&raw);
    let mut s = format!("name: {name}\n");
    for l in inputs {
        s.push_str(&format!("input: {l}\n"));
    }
    for l in set.full.lines() {
        s.push_str(&format!("header-set: {l}\n"));
    }
    s.push_str(&format!("body: {}\n", fp.body));
    s.push_str(&format!("mfp1: {}\n", fp.mfp1));
    s.push_str(&format!("mfp1-lite: {}\n", fp.mfp1_lite));
    let defects: Vec<String> = fp
        .defects
        .iter()
        .map(|d| serde_json::to_string(d).unwrap().trim_matches('"').to_string())
        .collect();
    let defects = if defects.is_empty() { "none".to_string() } else { defects.join(",") };
    s.push_str(&format!("defects: {defects}\n"));
    s
}

#[test]
fn documented_vectors_match() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match (&mut cur, line) {
            (None, "```mfp1-vector") => cur = Some(String::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 6, "only {} vectors in the document", blocks.len());
    let mut failures = Vec::new();
    for b in &blocks {
        let name = b.lines().find_map(|l| l.strip_prefix("name: ")).unwrap().to_string();
        let inputs: Vec<String> =
            b.lines().filter_map(|l| l.strip_prefix("input: ")).map(str::to_string).collect();
        let want = render(&name, &inputs);
        if &want != b {
            failures.push(format!("```mfp1-vector\n{want}```"));
        }
    }
    assert!(
        failures.is_empty(),
        "vectors differ; this implementation gives:\n{}",
        failures.join("\n")
    );
}
