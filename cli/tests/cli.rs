//! Smoke tests of the binary's offline commands (these also make cargo build the binary that
//! the end-to-end tests in `tests/` run).
#![allow(clippy::unwrap_used)] // tests

use std::process::Command;

fn ringlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringlog")).args(args).output().unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = ringlog(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["init", "node", "append", "fingerprint", "search"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn fingerprint_json_is_stable_across_line_endings() {
    let dir = tempfile::tempdir().unwrap();
    let lf = "From: a@example.org\nTo: b@example.net\nSubject: hi\n\nbody line\n";
    let crlf = lf.replace('\n', "\r\n");
    std::fs::write(dir.path().join("a.eml"), lf).unwrap();
    std::fs::write(dir.path().join("b.eml"), crlf).unwrap();
    let out = ringlog(&["fingerprint", "--json", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for k in ["file", "mfp1", "mfp1_lite", "body", "leaves", "defects"] {
        assert!(lines[0].get(k).is_some(), "missing {k}");
    }
    assert_eq!(lines[0]["mfp1"], lines[1]["mfp1"]);
    assert_eq!(lines[0]["mfp1"].as_str().unwrap().len(), 64);
}

#[test]
fn missing_file_fails_with_a_reason() {
    let out = ringlog(&["fingerprint", "/nonexistent/x.eml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.eml"));
}

#[test]
fn keygen_writes_keys_and_a_member_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("m");
    let out = ringlog(&[
        "keygen",
        "--dir",
        d.to_str().unwrap(),
        "--name",
        "isp-x.example",
        "--domain",
        "X.example",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let member: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("member.json")).unwrap()).unwrap();
    assert_eq!(member["log_key"], v["log_key"]);
    assert_eq!(member["domains"][0], "x.example");
    assert!(v["vkey"].as_str().unwrap().starts_with("isp-x.example+"));
    let again = ringlog(&["keygen", "--dir", d.to_str().unwrap(), "--name", "isp-x.example"]);
    assert!(!again.status.success(), "overwrote existing keys");
}

#[test]
fn a_closed_pipe_ends_output_without_a_panic() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(
            dir.path().join(format!("m{i:03}.eml")),
            format!("From: a@x.org\nSubject: {i}\n\nbody\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join(".hidden"), "not mail").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["fingerprint", "--json", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take()); // the reader goes away, like `| head -c 16`
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let _ = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let out = ringlog(&["fingerprint", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        200,
        "hidden files are not messages"
    );
}

#[test]
fn a_missing_config_file_is_an_error_not_another_node() {
    // A typo in --config must not quietly query whatever node listens on the default port.
    for cmd in [&["logs"][..], &["roster"][..], &["trace", "--fingerprint", &"ab".repeat(32)][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--config", "no-such-dir/ringlog.tom"]);
        let out = ringlog(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no config file at no-such-dir/ringlog.tom"), "{args:?}: {err}");
    }
}
