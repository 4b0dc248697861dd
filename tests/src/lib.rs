//! Harness for the end-to-end tests in `tests/tests/`: makes rings of real `ringlog` node
//! processes in a temporary directory, on loopback ports, and talks to them over their real
//! HTTP API and Unix sockets.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test harness: failing loudly is the point

pub mod baseline_milter;

use ringlog_node::client::{Client, Endpoint};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `ringlog` binary under test: `$RINGLOG_BIN`, else the one cargo built next to this
/// test executable (`cargo test --workspace` builds it).
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("RINGLOG_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("ringlog");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p ringlog` (or cargo test --workspace)",
        p.display()
    );
    p
}

/// The shared test data folder (`../shared` beside the repository), if present. Without it
/// a test returns early, except under CI, where it fails.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if p.join("corpus/real").is_dir() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "../shared is missing under CI");
    eprintln!("note: ../shared not found; skipping the parts of this test that need it");
    None
}

/// A free TCP port on 127.0.0.1 for a node to listen on later. Taken below the kernel's
/// ephemeral range (which starts at 32768), so that the outgoing connections of other tests
/// running at the same time cannot take it between now and the node's start; a counter keeps
/// the tests of one process apart, the process id the test binaries of one run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 60) * 200;
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        let port = if port >= 32_000 { 20_000 + (port - 32_000) } else { port };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `ringlog ARGS` to completion; returns (exit ok, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).env("RINGLOG_LOG", "warn").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ringlog ARGS` and returns stdout, panicking with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    let (ok, out, err) = run(args);
    assert!(ok, "ringlog {args:?} failed:\n{err}\n{out}");
    out
}

/// One node process and its directory.
pub struct Node {
    /// Member name.
    pub name: String,
    /// Its directory (config, keys, data).
    pub dir: PathBuf,
    /// HTTP API address.
    pub http: String,
    /// libp2p port.
    pub p2p_port: u16,
    child: Option<Child>,
}

impl Node {
    /// `ringlog init` in `dir` with fresh ports.
    pub fn init(dir: &Path, name: &str, extra: &[&str]) -> Node {
        let http = format!("127.0.0.1:{}", free_port());
        let p2p_port = free_port();
        let p2p = format!("/ip4/127.0.0.1/tcp/{p2p_port}");
        let mut args = vec![
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--http",
            &http,
            "--p2p",
            &p2p,
        ];
        args.extend_from_slice(extra);
        run_ok(&args);
        Node { name: name.to_string(), dir: dir.to_path_buf(), http, p2p_port, child: None }
    }

    /// CPU time (user + system) the running node process has used, in clock ticks (1/100 s
    /// on Linux), from /proc; 0 when it is not running.
    pub fn cpu_ticks(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(Child::id) else { return 0 };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) are space-separated; utime
        // and stime are the 14th and 15th fields of the line, so the 12th and 13th after the
        // name (counted by position: some fields, such as tpgid, may be -1).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let at = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        at(11) + at(12)
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("ringlog.toml")
    }

    /// Starts the node process and waits until its API answers.
    pub fn start(&mut self) {
        self.start_in(&[]);
    }

    /// Starts the node process through `wrapper` (a command that runs the rest of its arguments
    /// in place, such as `ip netns exec NS`), and waits until its API answers.
    pub fn start_in(&mut self, wrapper: &[&str]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let bin = bin();
        let (program, pre) = match wrapper.split_first() {
            Some((w, rest)) => (std::path::PathBuf::from(w), rest.to_vec()),
            None => (bin.clone(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !wrapper.is_empty() {
            cmd.arg(&bin);
        }
        let child = cmd
            .args(["node", "run", "--config", self.config().to_str().unwrap()])
            .env(
                "RINGLOG_LOG",
                std::env::var("RINGLOG_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_get("/healthz").is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {st} at start; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not come up; log:\n{}", self.name, self.log());
    }

    /// The node's log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY-free: libc::kill with a pid we own.
            let pid = c.id() as i32;
            sigterm(pid);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("{} did not stop on SIGTERM", self.name);
        }
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// GET on the HTTP API.
    pub fn try_get(&self, path: &str) -> Result<Value, String> {
        let c = Client {
            timeout: Duration::from_secs(10),
            ..Client::new(Endpoint::Tcp(self.http.clone()))
        };
        Self::rt().block_on(c.get(path)).map_err(|e| format!("{e:#}"))
    }

    /// GET that must succeed.
    pub fn get(&self, path: &str) -> Value {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.name))
    }

    /// The client for the append socket.
    pub fn socket_client(&self) -> Client {
        Client::new(Endpoint::Unix(self.dir.join("ringlog.sock")))
    }

    /// Appends hop records (JSON requests) over the Unix socket.
    pub fn append(&self, req: &Value) -> Result<Value, String> {
        Self::rt()
            .block_on(self.socket_client().post("/v1/append", req))
            .map_err(|e| format!("{e:#}"))
    }

    /// (size, root) of every log this node holds, by member name.
    pub fn heads(&self) -> std::collections::BTreeMap<String, (u64, String)> {
        self.get("/v1/logs")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["member"].as_str().unwrap().to_string(),
                    (l["size"].as_u64().unwrap(), l["root"].as_str().unwrap().to_string()),
                )
            })
            .collect()
    }
}

fn sigterm(pid: i32) {
    // `kill -TERM` keeps the workspace free of unsafe code.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ring of nodes made by `ringlog init` + `ringlog genesis`, not yet started.
pub struct Ring {
    /// Keeps the temporary directory alive.
    pub tmp: tempfile::TempDir,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Genesis file.
    pub genesis: PathBuf,
}

impl Ring {
    /// `n` founding members named `m0.example` ... with a shared genesis.
    pub fn new(n: usize) -> Ring {
        let tmp = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = tmp.path().join(format!("m{i}"));
            let host = format!("127.0.1.{}", i + 1);
            let domain = format!("m{i}.example");
            nodes.push(Node::init(
                &dir,
                &format!("m{i}.example"),
                &["--mail-host", &host, "--domain", &domain],
            ));
        }
        let genesis = tmp.path().join("genesis.json");
        let mut args = vec![
            "genesis".to_string(),
            "--ring".into(),
            "test-ring".into(),
            "--out".into(),
            genesis.display().to_string(),
        ];
        for nd in &nodes {
            args.push("--member".into());
            args.push(nd.dir.display().to_string());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&a);
        Ring { tmp, nodes, genesis }
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// Waits until `cond` holds, polling; panics with `what` after `timeout`.
    pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Makes a node (before it starts) checkpoint and run anti-entropy every 300 ms instead of the
/// defaults, so multi-node tests settle quickly.
pub fn tune(node: &Node) {
    let p = node.config();
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text
        .replace("sync_interval_ms = 2000", "sync_interval_ms = 300")
        .replace("checkpoint_interval_ms = 1000", "checkpoint_interval_ms = 300");
    std::fs::write(&p, text).unwrap();
}

/// A counter or gauge from the node's `/metrics` (`None` when absent or unreachable).
pub fn metric(node: &Node, name: &str) -> Option<u64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(&node.http).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse::<f64>().ok().map(|v| v as u64)).flatten()
    })
}

/// A hop request with a fresh fingerprint derived from `seed`.
pub fn hop(seed: u64, from: &str, to: &str) -> Value {
    let h = ringlog_protocol::sha256(&[&seed.to_be_bytes()]);
    json!({ "mfp1": h, "mfp1_lite": h, "body": h, "from": from, "to": to, "queue_id": format!("Q{seed:X}") })
}

/// Stops every node, then audits each store with [`audit_clean`]: each holds exactly the logs
/// named in `want`, each with that many entries.
pub fn stop_and_audit(nodes: &mut [Node], want: &std::collections::BTreeMap<String, u64>) {
    for n in nodes.iter_mut() {
        n.stop();
    }
    for n in nodes.iter() {
        let v = audit_clean(n);
        let logs = v["logs"].as_array().unwrap();
        assert_eq!(logs.len(), want.len(), "{}: {v}", n.name);
        for (m, size) in want {
            let l = logs.iter().find(|l| l["member"] == m.as_str());
            assert_eq!(l.map(|l| l["entries"].clone()), Some((*size).into()), "{}: {v}", n.name);
        }
    }
}

/// `ringlog audit --json` on a stopped node's store: asserts that it is clean and holds no
/// equivocation proof (nobody accused), and returns the report.
pub fn audit_clean(node: &Node) -> Value {
    let (ok, out, err) = run(&["audit", "--json", "--config", node.config().to_str().unwrap()]);
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("audit of {}: not json ({e}): {out}\n{err}", node.name));
    assert!(ok && v["clean"] == true, "audit of {} is not clean: {v}\n{err}", node.name);
    // `clean` implies no proof today; this says so on its own should that ever change.
    let accused = v["equivocations"].as_array().map(Vec::len);
    assert_eq!(accused, Some(0), "{} holds equivocation proofs: {v}", node.name);
    v
}
