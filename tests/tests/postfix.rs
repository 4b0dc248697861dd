//! Real Postfix: three instances on their own loopback addresses (origin ISP A, backbone B,
//! destination ISP C), each beside its own ringlog node and milter. Mail from the corpus travels
//! A -> B -> C and every hop's record carries the fingerprint of the copy delivered into C's
//! Maildir; mail from outside the ring is marked untrusted; a killed node never stops mail; and
//! the milter's cost in throughput and latency is measured.
//!
//! Needs root, `postfix` and `swaks`; without them the test prints a note and passes, except
//! under CI, where it fails.
#![allow(clippy::unwrap_used)] // test: failing loudly is the point

use ringlog_e2e::{free_port, run_ok, Node};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IP_A: &str = "127.0.0.11";
const IP_B: &str = "127.0.0.12";
const IP_C: &str = "127.0.0.13";
/// A loopback address in no member's mail hosts.
const IP_OUTSIDE: &str = "127.0.0.19";
const SMTP_PORT: u16 = 2525;
/// A second smtpd on A without the milter, for the throughput comparison.
const PLAIN_PORT: u16 = 2526;
/// A third smtpd on A whose milter is the baseline (a milter that records nothing).
const BASELINE_PORT: u16 = 2527;
const DEST: &str = "dest.example";
/// A domain A's transport map sends straight to C, behind the ring's back: the delivery log
/// follower must notice that the real next hop is not the recorded one.
const STRAY: &str = "stray.example";
const NAME_A: &str = "isp-a.example";
const NAME_B: &str = "backbone-b.example";
const NAME_C: &str = "isp-c.example";
/// The local domain at A that takes the real perf mail (into A's Maildir).
const PERF_DOMAIN: &str = "mbox.perf.example";
const PERF_MBOX: &str = "x@mbox.perf.example";

/// What the throughput comparison sends.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Generated messages of about 100 bytes, to `discard:`.
    Tiny,
    /// The corpus's real messages, delivered into a Maildir.
    Real,
}

/// Corpus messages sent through the ring.
const CORPUS: &[&str] = &[
    "debian-spamassassin-sample-nonspam.eml",
    "flanker-bilingual-simple.eml",
    "flanker-apache-message-news-mime.eml",
];

/// A system tool by name, from /usr/sbin or /sbin when PATH lacks them.
fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    name.to_string()
}

fn have(cmd: &str) -> bool {
    if Path::new(&tool(cmd)).is_absolute() {
        return true;
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool(args[0])).args(&args[1..]).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Stops every Postfix instance, removes the loopback addresses and restores the default
/// instance's `alternate_config_directories`, also when the test fails.
#[derive(Default)]
struct Guard {
    addrs: Vec<String>,
    instances: Vec<PathBuf>,
    alt_before: Option<String>,
    created_main_cf: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.instances {
            let _ = sh(&["postfix", "-c", d.to_str().unwrap(), "stop"]);
        }
        for a in &self.addrs {
            let _ = sh(&["ip", "addr", "del", &format!("{a}/32"), "dev", "lo"]);
        }
        if self.created_main_cf {
            let _ = std::fs::remove_file("/etc/postfix/main.cf");
        } else if let Some(v) = &self.alt_before {
            let _ = sh(&["postconf", "-e", &format!("alternate_config_directories = {v}")]);
        }
    }
}

/// One Postfix instance's configuration.
struct Instance {
    dir: PathBuf,
    ip: &'static str,
    host: &'static str,
    milter_port: u16,
    /// The baseline milter behind `BASELINE_PORT`.
    baseline_port: u16,
    transport: Vec<(String, String)>,
    local_domains: &'static [&'static str],
    sasl: bool,
}

impl Instance {
    fn write(&self) {
        let d = &self.dir;
        for sub in ["queue", "data", "mail", "sasl"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        sh(&["chown", "postfix", d.join("data").to_str().unwrap()]);
        sh(&["chown", "nobody:nogroup", d.join("mail").to_str().unwrap()]);
        let dd = d.display();
        let transport = if self.transport.is_empty() {
            String::new()
        } else {
            let t: Vec<String> = self.transport.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("transport_maps = inline:{{{}}}\n", t.join(", "))
        };
        let vdomain = self.local_domains.join(", ");
        let main = format!(
            "compatibility_level = 3.6
queue_directory = {dd}/queue
data_directory = {dd}/data
maillog_file = {dd}/maillog
maillog_file_prefixes = {dd}
myhostname = {host}
myorigin = $myhostname
mydestination =
inet_interfaces = {ip}
inet_protocols = ipv4
smtp_bind_address = {ip}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
{transport}smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
biff = no
append_dot_mydomain = no
smtpd_milters = inet:127.0.0.1:{mp}
milter_default_action = accept
milter_protocol = 6
milter_connect_timeout = 2s
milter_command_timeout = 5s
milter_content_timeout = 10s
milter_end_of_data_macros = i
milter_mail_macros = i {{auth_authen}}
milter_connect_macros =
milter_helo_macros =
milter_rcpt_macros =
milter_data_macros =
milter_end_of_header_macros =
milter_unknown_command_macros =
virtual_mailbox_domains = {vdomain}
virtual_mailbox_base = {dd}/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_sasl_auth_enable = {sasl}
cyrus_sasl_config_path = {dd}/sasl
smtpd_sasl_path = smtpd
",
            host = self.host,
            ip = self.ip,
            mp = self.milter_port,
            sasl = if self.sasl { "yes" } else { "no" },
        );
        std::fs::write(d.join("main.cf"), main).unwrap();
        let (ip, bp) = (self.ip, self.baseline_port);
        let master = format!(
            "{ip}:{SMTP_PORT} inet n - n - - smtpd
{ip}:{PLAIN_PORT} inet n - n - - smtpd -o smtpd_milters=
{ip}:{BASELINE_PORT} inet n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:{bp}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
        );
        std::fs::write(d.join("master.cf"), master).unwrap();
        if self.sasl {
            // Cyrus SASL with a private sasldb: the customer account `alice`.
            let db = d.join("sasldb2");
            std::fs::write(
                d.join("sasl/smtpd.conf"),
                format!(
                    "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
                    db.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(tool("saslpasswd2"))
                .args(["-p", "-c", "-f", db.to_str().unwrap(), "-u", self.host, "alice"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(b"secret").unwrap();
            assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
            sh(&["chown", "postfix", db.to_str().unwrap()]);
        }
    }

    fn start(&self) {
        let (ok, out) = sh(&["postfix", "-c", self.dir.to_str().unwrap(), "start"]);
        assert!(ok, "postfix start {} failed: {out}\n{}", self.host, self.maillog());
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Files delivered into the Maildir.
    fn delivered(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail/maildir/new"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A minimal SMTP client: one transaction per connection; returns the queue id.
struct Smtp<'a> {
    server: String,
    auth: Option<(&'a str, &'a str)>,
}

fn reply(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err(format!("connection closed after {all:?}"));
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    if all.starts_with('2') || all.starts_with('3') {
        Ok(all)
    } else {
        Err(all)
    }
}

fn cmd(w: &mut TcpStream, r: &mut BufReader<TcpStream>, c: &str) -> Result<String, String> {
    w.write_all(format!("{c}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    reply(r)
}

impl Smtp<'_> {
    fn send(&self, from: &str, to: &str, data: &[u8]) -> Result<String, String> {
        let stream = TcpStream::connect(&self.server).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        reply(&mut r)?;
        cmd(&mut w, &mut r, "EHLO client.test")?;
        if let Some((u, p)) = self.auth {
            cmd(&mut w, &mut r, &format!("AUTH PLAIN {}", base64_plain(&format!("\0{u}\0{p}"))))?;
        }
        cmd(&mut w, &mut r, &format!("MAIL FROM:<{from}>"))?;
        cmd(&mut w, &mut r, &format!("RCPT TO:<{to}>"))?;
        cmd(&mut w, &mut r, "DATA")?;
        w.write_all(&dot_stuff(data)).map_err(|e| e.to_string())?;
        let done = cmd(&mut w, &mut r, ".")?;
        let _ = cmd(&mut w, &mut r, "QUIT");
        Ok(done.rsplit("queued as ").next().unwrap_or("").trim().to_string())
    }
}

/// Base64 without a dependency (for AUTH PLAIN only).
fn base64_plain(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// CRLF line ends and dot-stuffing for DATA.
fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let text = data.strip_suffix(b"\n").unwrap_or(data);
    let mut out = Vec::with_capacity(data.len() + 64);
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// (busy, total) CPU time of the whole machine in clock ticks, from /proc/stat: the first eight
/// columns (user to steal; guest time is already counted in user and nice).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The value of the field `name=` in a plain log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The `mfp1` that `ringlog fingerprint --json` gives for a file.
fn cli_mfp1(path: &Path) -> String {
    let out = run_ok(&["fingerprint", "--json", path.to_str().unwrap()]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["mfp1"].as_str().unwrap().to_string()
}

/// The hop records that `member` wrote with fingerprint `mfp1`, as (prev, next) in the JSON of
/// the entries.
fn records(node: &Node, mfp1: &str) -> Vec<(Value, Value)> {
    let v = node.get(&format!("/v1/search?mfp1={mfp1}"));
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["member"] == node.name.as_str())
        .map(|e| {
            let hop = &e["entry"]["body"]["hop"];
            (hop["prev"].clone(), hop["next"].clone())
        })
        .collect()
}

/// Turns on the node's milter on `port` and its follower of the Postfix log `maillog`.
fn set_milter(node: &Node, port: u16, maillog: &Path) {
    let cfg = std::fs::read_to_string(node.config()).unwrap();
    let marker = "[milter]\nlisten = \"\"";
    assert!(cfg.contains(marker), "unexpected config layout:\n{cfg}");
    let mut text = cfg.replace(marker, &format!("[milter]\nlisten = \"127.0.0.1:{port}\""));
    let marker = "[postfix_log]\npoll_ms = 500";
    assert!(text.contains(marker), "unexpected config layout:\n{text}");
    text = text
        .replace(marker, &format!("[postfix_log]\npath = {:?}\npoll_ms = 100", maillog.display()));
    std::fs::write(node.config(), text).unwrap();
}

/// A `ringlog` command against a node's Unix socket, printing JSON.
fn cli(node: &Node, args: &[&str]) -> Value {
    let cfg = node.config();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--config", cfg.to_str().unwrap(), "--json"]);
    let out = run_ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{all:?}: {e}: {out}"))
}

/// The delivery log follower's counter `name` on a node.
fn follower(node: &Node, name: &str) -> u64 {
    node.get("/v1/postfix-log")["counters"][name].as_u64().unwrap()
}

#[test]
fn postfix_ring() {
    let ci = std::env::var_os("CI").is_some();
    let missing: Vec<&str> = ["postfix", "postconf", "swaks", "saslpasswd2", "ip"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !is_root() || !missing.is_empty() {
        assert!(!ci, "under CI the Postfix test needs root and {missing:?}");
        eprintln!("note: skipping the Postfix test (needs root and postfix, swaks, saslpasswd2)");
        return;
    }
    let Some(shared) = ringlog_e2e::shared() else { return };
    let corpus = shared.join("corpus/real");
    let t0 = Instant::now();

    let tmp = tempfile::tempdir().unwrap();
    // Postfix daemons run as `postfix` and must reach their queue directories.
    sh(&["chmod", "755", tmp.path().to_str().unwrap()]);
    let mut guard = Guard::default();

    // --- the ring: backbone B and destination C found it; B admits A as its customer ISP, so
    // ring routing from A goes up through B, as A's transport map does ---
    let (ma, mb, mc) = (free_port(), free_port(), free_port());
    let mut a = Node::init(&tmp.path().join("node-a"), NAME_A, &["--mail-host", IP_A]);
    let mut b = Node::init(&tmp.path().join("node-b"), NAME_B, &["--mail-host", IP_B]);
    let mut c =
        Node::init(&tmp.path().join("node-c"), NAME_C, &["--mail-host", IP_C, "--domain", DEST]);
    let genesis = tmp.path().join("genesis.json");
    run_ok(&[
        "genesis",
        "--ring",
        "postfix-ring",
        "--out",
        genesis.to_str().unwrap(),
        "--member",
        b.dir.to_str().unwrap(),
        "--member",
        c.dir.to_str().unwrap(),
    ]);
    std::fs::copy(&genesis, a.dir.join("genesis.json")).unwrap();
    let maillog = |n: &str| tmp.path().join(n).join("maillog");
    set_milter(&a, ma, &maillog("pf-a"));
    // A delivers the real perf mail itself: its milter records that hop as local.
    let cfg = std::fs::read_to_string(a.config()).unwrap();
    let routes = "[milter.routes]\n";
    assert!(cfg.contains(routes), "unexpected config layout:\n{cfg}");
    let route = format!("{routes}{PERF_DOMAIN:?} = \"local:{PERF_DOMAIN}\"\n");
    std::fs::write(a.config(), cfg.replace(routes, &route)).unwrap();
    set_milter(&b, mb, &maillog("pf-b"));
    set_milter(&c, mc, &maillog("pf-c"));
    b.start();
    c.start();
    let admitted =
        cli(&b, &["member", "admit", "--member-file", a.dir.join("member.json").to_str().unwrap()]);
    assert_eq!(admitted["applied"], Value::Bool(true), "{admitted}");
    a.start();
    // A learns its admission from B's log; then its milter routes DEST up to B.
    wait_until(Duration::from_secs(60), "A's roster to route DEST through B", || {
        cli(&a, &["route", DEST])["next"].to_string().contains(NAME_B)
    });

    // --- three Postfix instances ---
    for ip in [IP_A, IP_B, IP_C] {
        let (ok, out) = sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        assert!(ok || out.contains("File exists"), "ip addr add {ip}: {out}");
        guard.addrs.push(ip.to_string());
    }
    let relay = |ip: &str| format!("smtp:[{ip}]:{SMTP_PORT}");
    let baseline_port = ringlog_e2e::baseline_milter::start();
    let pa = Instance {
        dir: tmp.path().join("pf-a"),
        ip: IP_A,
        host: "mx.isp-a.example",
        milter_port: ma,
        baseline_port,
        transport: vec![
            (DEST.into(), relay(IP_B)),
            (STRAY.into(), relay(IP_C)),
            ("perf.example".into(), "discard:".into()),
        ],
        local_domains: &[PERF_DOMAIN],
        sasl: true,
    };
    let pb = Instance {
        dir: tmp.path().join("pf-b"),
        ip: IP_B,
        host: "mx.backbone-b.example",
        milter_port: mb,
        baseline_port,
        transport: vec![(DEST.into(), relay(IP_C))],
        local_domains: &[],
        sasl: false,
    };
    let pc = Instance {
        dir: tmp.path().join("pf-c"),
        ip: IP_C,
        host: "mx.isp-c.example",
        milter_port: mc,
        baseline_port,
        transport: vec![],
        local_domains: &[DEST, STRAY],
        sasl: false,
    };
    let dirs: Vec<String> = [&pa, &pb, &pc].iter().map(|i| i.dir.display().to_string()).collect();
    if Path::new("/etc/postfix/main.cf").exists() {
        let (_, before) = sh(&["postconf", "-h", "alternate_config_directories"]);
        guard.alt_before = Some(before.trim().to_string());
    } else {
        std::fs::write("/etc/postfix/main.cf", "compatibility_level = 3.6\n").unwrap();
        guard.created_main_cf = true;
    }
    let (ok, out) =
        sh(&["postconf", "-e", &format!("alternate_config_directories = {}", dirs.join(", "))]);
    assert!(ok, "postconf: {out}");
    for i in [&pa, &pb, &pc] {
        i.write();
        guard.instances.push(i.dir.clone());
        i.start();
    }
    eprintln!("setup took {:?}", t0.elapsed());

    // --- corpus mail from an authenticated customer of A to C's domain ---
    let customer = Smtp {
        server: format!("{IP_A}:{SMTP_PORT}"),
        auth: Some(("alice@mx.isp-a.example", "secret")),
    };
    let mut sent = Vec::new();
    for (k, name) in CORPUS.iter().enumerate() {
        let data = std::fs::read(corpus.join(name)).unwrap();
        let qid = customer
            .send("alice@isp-a.example", &format!("user{k}@{DEST}"), &data)
            .unwrap_or_else(|e| panic!("sending {name}: {e}\n{}", pa.maillog()));
        sent.push((name, qid));
    }
    wait_until(Duration::from_secs(30), "corpus mail delivered at C", || {
        pc.delivered().len() >= CORPUS.len()
    });
    let delivered = pc.delivered();
    let original: std::collections::BTreeSet<String> =
        CORPUS.iter().map(|n| cli_mfp1(&corpus.join(n))).collect();
    for file in &delivered {
        let mfp1 = cli_mfp1(file);
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        assert!(
            original.contains(&mfp1),
            "delivered copy {} has a fingerprint no sent message has",
            file.display()
        );
        let tags: Vec<&str> = text.lines().filter(|l| l.starts_with("X-Ringlog: ")).collect();
        assert_eq!(tags.len(), 3, "one X-Ringlog per hop in {text}");
        for t in &tags {
            assert!(t.contains(&mfp1) && t.contains("trust=trusted"), "{t}");
        }
        // A: customer -> B; B: A -> C; C: B -> local.
        let ra = records(&a, &mfp1);
        let rb = records(&b, &mfp1);
        let rc = records(&c, &mfp1);
        assert_eq!(ra.len(), 1, "A's records for {mfp1}: {ra:?}\n{}", a.log());
        assert!(ra[0].0.get("customer").is_some(), "A prev {:?}", ra[0].0);
        assert_eq!(ra[0].1["member"]["name"], NAME_B);
        assert_eq!(rb.len(), 1, "B's records: {rb:?}");
        assert_eq!(rb[0].0["member"]["name"], NAME_A);
        assert_eq!(rb[0].1["member"]["name"], NAME_C);
        assert_eq!(rc.len(), 1, "C's records: {rc:?}");
        assert_eq!(rc[0].0["member"]["name"], NAME_B);
        assert_eq!(rc[0].1["local"]["domain"], DEST);
        // The customer's account is never in the log.
        assert!(!ra[0].0.to_string().contains("alice"));
    }
    // `ringlog trace` on C (once replication brought A's and B's logs there and checkpoints
    // cover the records): origin A, both member-to-member links confirmed.
    let file = delivered[0].clone();
    let mut last = String::new();
    let traced = (0..60).any(|_| {
        let (ok, out, err) =
            ringlog_e2e::run(&["trace", file.to_str().unwrap(), "--json", "--node", &c.http]);
        last = format!("{out}{err}");
        let done = ok
            && serde_json::from_str::<Value>(&out).is_ok_and(|v| {
                v["origin"]["member"] == NAME_A
                    && v["links"]
                        .as_array()
                        .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["confirmed"] == true))
            });
        if !done {
            std::thread::sleep(Duration::from_millis(250));
        }
        done
    });
    assert!(traced, "ringlog trace did not find origin A with confirmed links:\n{last}");
    eprintln!(
        "corpus: {} messages A -> B -> C, records checked ({:?})",
        delivered.len(),
        t0.elapsed()
    );

    // --- the delivery log followers: every corpus hop went where its record said ---
    for n in [&a, &b, &c] {
        wait_until(Duration::from_secs(20), "the follower to check the corpus deliveries", || {
            follower(n, "checked") >= CORPUS.len() as u64
        });
        assert_eq!(follower(n, "mismatches"), 0, "{}: {}", n.name, n.get("/v1/postfix-log"));
    }
    // Mail that A's transport map sends straight to C, while ring routing (and so A's record)
    // says otherwise: the follower at A reports it.
    let stray = |k: u32| {
        let m = format!("From: alice@isp-a.example\r\nTo: u@{STRAY}\r\nSubject: stray {k}\r\nMessage-ID: <stray{k}@isp-a.example>\r\n\r\nstray {k}\r\n");
        let n0 = pc.delivered().len();
        let qid =
            customer.send("alice@isp-a.example", &format!("u{k}@{STRAY}"), m.as_bytes()).unwrap();
        wait_until(Duration::from_secs(20), "stray mail delivered at C", || {
            pc.delivered().len() > n0
        });
        qid
    };
    let qid = stray(1);
    wait_until(Duration::from_secs(20), "A's follower to report the stray delivery", || {
        follower(&a, "mismatches") == 1
    });
    let report = a.get("/v1/postfix-log");
    let m = &report["recent_mismatches"][0];
    assert_eq!(m["queue_id"], qid.as_str(), "{report}");
    assert_eq!(m["relay_member"], NAME_C, "{report}");
    assert_eq!(m["domain"], STRAY, "{report}");
    let recorded = m["recorded"].to_string();
    assert!(!recorded.contains(NAME_C) && recorded.len() > 4, "{report}");
    assert!(a.log().contains("delivery does not match the recorded next hop"));
    // Garbage, an overlong line and a delivery of a queue id A never recorded, written into
    // A's Postfix log: counted, nothing else.
    let unrecorded = follower(&a, "unrecorded");
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(maillog("pf-a")).unwrap();
        let mut junk = b"garbage\n\x00\xff\xfe]: : to=<\n".to_vec();
        junk.extend(std::iter::repeat_n(b'x', 40_000));
        junk.extend_from_slice(b"\nDec  3 00:00:00 mx postfix/smtp[1]: ZZZZZ99999: to=<x@dest.example>, relay=127.0.0.13[127.0.0.13]:2525, status=sent (ok)\n");
        f.write_all(&junk).unwrap();
    }
    wait_until(Duration::from_secs(20), "A's follower to read the junk", || {
        follower(&a, "unrecorded") == unrecorded + 1 && follower(&a, "long_lines") == 1
    });
    assert_eq!(follower(&a, "mismatches"), 1);
    // `postfix logrotate` renames the log and Postfix starts a new one: followed.
    let (ok, out) = sh(&["postfix", "-c", pa.dir.to_str().unwrap(), "logrotate"]);
    assert!(ok, "postfix logrotate: {out}");
    let qid = stray(2);
    wait_until(
        Duration::from_secs(20),
        "A's follower to report a stray delivery after rotation",
        || follower(&a, "mismatches") == 2,
    );
    assert!(follower(&a, "reopened") >= 1);
    assert_eq!(a.get("/v1/postfix-log")["recent_mismatches"][1]["queue_id"], qid.as_str());
    eprintln!("postfix log followers: hops checked, strays reported ({:?})", t0.elapsed());

    // --- mail handed to B from outside the ring ---
    let delivered = pc.delivered();
    let (ok, out) = sh(&[
        "swaks",
        "--server",
        &format!("{IP_B}:{SMTP_PORT}"),
        "--local-interface",
        IP_OUTSIDE,
        "--helo",
        "outsider.test",
        "--from",
        "someone@outsider.test",
        "--to",
        &format!("victim@{DEST}"),
        "--header",
        "Subject: from outside the ring",
        "--body",
        "untrusted hello",
    ]);
    assert!(ok, "swaks: {out}");
    let before = delivered.len();
    wait_until(Duration::from_secs(20), "outsider mail delivered at C", || {
        pc.delivered().len() > before
    });
    let file = pc.delivered().into_iter().find(|f| !delivered.contains(f)).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    let mfp1 = cli_mfp1(&file);
    let b_tag = text
        .lines()
        .find(|l| l.starts_with("X-Ringlog:") && l.contains(NAME_B))
        .unwrap_or_else(|| panic!("no X-Ringlog from B in {text}"));
    assert!(b_tag.contains("trust=untrusted") && b_tag.contains(&mfp1), "{b_tag}");
    assert!(text.contains("X-Ringlog-Spam-Score:"), "{text}");
    let rb = records(&b, &mfp1);
    assert_eq!(rb.len(), 1, "{rb:?}");
    assert_eq!(rb[0].0["external"]["ip"], IP_OUTSIDE);
    assert_eq!(rb[0].0["external"]["helo"], "outsider.test");
    assert_eq!(rb[0].1["member"]["name"], NAME_C);
    eprintln!("outsider: marked untrusted at B ({:?})", t0.elapsed());

    // --- a killed node never stops mail; after a restart it records again ---
    b.kill();
    let plain = Smtp { server: format!("{IP_A}:{SMTP_PORT}"), auth: customer.auth };
    let msg = |s: &str| {
        format!("From: alice@isp-a.example\r\nTo: x@{DEST}\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nSubject: {s}\r\nMessage-ID: <{s}@isp-a.example>\r\n\r\n{s}\r\n")
    };
    let n0 = pc.delivered().len();
    plain
        .send("alice@isp-a.example", &format!("x@{DEST}"), msg("while-b-down").as_bytes())
        .unwrap();
    wait_until(Duration::from_secs(20), "mail delivered while B's node is down", || {
        pc.delivered().len() > n0
    });
    b.start();
    let n1 = pc.delivered().len();
    plain.send("alice@isp-a.example", &format!("x@{DEST}"), msg("after-b-up").as_bytes()).unwrap();
    wait_until(Duration::from_secs(20), "mail delivered after B's restart", || {
        pc.delivered().len() > n1
    });
    let fp = |s: &str| ringlog_protocol::fingerprint::fingerprint(msg(s).as_bytes()).mfp1.to_hex();
    assert_eq!(records(&b, &fp("while-b-down")).len(), 0);
    assert_eq!(records(&c, &fp("while-b-down")).len(), 1);
    assert_eq!(records(&b, &fp("after-b-up")).len(), 1, "B records again after its restart");
    eprintln!("node down/up: mail flowed, records resumed ({:?})", t0.elapsed());

    // --- throughput and latency through A, with and without the milter (same run) ---
    // Two loads: tiny generated messages to `discard:` (the least Postfix can do per message,
    // so the milter's worst case) and the real corpus delivered into a Maildir at A (what a
    // destination ISP does with each message).
    let mut real: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    real.sort();
    let real = &real;
    // Real messages sent (each run sends `n` rounded down to a multiple of `threads`).
    let real_sent = std::cell::Cell::new(0usize);
    let perf = |load: Load, port: u16, n: usize, threads: usize| -> (f64, Duration) {
        let cpu0 = cpu_jiffies();
        let nodes0 = [a.cpu_ticks(), b.cpu_ticks(), c.cpu_ticks()];
        let start = Instant::now();
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let client = Smtp { server: format!("{IP_A}:{port}"), auth: None };
                        let mut lat = Vec::new();
                        for i in 0..n / threads {
                            let (to, m) = match load {
                                Load::Tiny => ("sink@perf.example", format!("From: p@perf.test\r\nTo: sink@perf.example\r\nSubject: perf {port} {t} {i}\r\n\r\nbody {i}\r\n").into_bytes()),
                                Load::Real => (PERF_MBOX, real[(t * 37 + i) % real.len()].clone()),
                            };
                            let t1 = Instant::now();
                            client.send("p@perf.test", to, &m).unwrap();
                            lat.push(t1.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
        let mean = lat.iter().sum::<Duration>() / lat.len().max(1) as u32;
        let cpu1 = cpu_jiffies();
        let (busy, total) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
        let nodes1 = [a.cpu_ticks(), b.cpu_ticks(), c.cpu_ticks()];
        let per = |i: usize| (nodes1[i] - nodes0[i]) as f64 * 10.0 / lat.len() as f64;
        eprintln!(
            "  {load:?} port {port} x{threads}: {rate:.0}/s, machine CPU busy {:.0}%, {:.2} CPU-ms per message (nodes A {:.2}, B {:.2}, C {:.2}; 10 ms ticks)",
            busy as f64 / total.max(1) as f64 * 100.0,
            busy as f64 * 10.0 / lat.len() as f64,
            per(0),
            per(1),
            per(2)
        );
        if matches!(load, Load::Real) {
            real_sent.set(real_sent.get() + lat.len());
        }
        (rate, mean)
    };
    for load in [Load::Tiny, Load::Real] {
        for port in [PLAIN_PORT, BASELINE_PORT, SMTP_PORT] {
            let _ = perf(load, port, 20, 2); // warm up every path
        }
    }
    // RINGLOG_PERF_ROUNDS=N repeats the comparison N times and prints medians.
    let rounds: usize =
        std::env::var("RINGLOG_PERF_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let (appended0, batches0) = (
        ringlog_e2e::metric(&a, "ringlog_appended_total").unwrap_or(0),
        ringlog_e2e::metric(&a, "ringlog_append_batches_total").unwrap_or(0),
    );
    // RINGLOG_PERF_CLIENTS=N sets the concurrent SMTP clients (default 4), 200 messages in all.
    let clients: usize =
        std::env::var("RINGLOG_PERF_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Three smtpd services on A, each run in turn: no milter, the baseline milter (the same
    // protocol steps and one added header field, no work), and the ringlog milter. The order
    // turns by one each round, so that none always runs after the same one (the replicas'
    // work after a ringlog run, say).
    for load in [Load::Tiny, Load::Real] {
        let (mut rates, mut seq) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            let mut ports = [PLAIN_PORT, BASELINE_PORT, SMTP_PORT];
            ports.rotate_left(round % 3);
            // port -> (rate, mean latency) under load, then its sequential latency
            let mut load_runs = std::collections::BTreeMap::new();
            for port in ports {
                load_runs.insert(port, perf(load, port, 200, clients.max(1)));
            }
            let mut seq_runs = std::collections::BTreeMap::new();
            for port in ports {
                seq_runs.insert(port, perf(load, port, 40, 1).1);
            }
            let ((r_plain, l_plain), (r_base, l_base), (r_milter, l_milter)) =
                (load_runs[&PLAIN_PORT], load_runs[&BASELINE_PORT], load_runs[&SMTP_PORT]);
            let (s_plain, s_base, s_milter) =
                (seq_runs[&PLAIN_PORT], seq_runs[&BASELINE_PORT], seq_runs[&SMTP_PORT]);
            eprintln!(
                "perf {load:?} round {round}: without milter {r_plain:.0} msg/s (mean {l_plain:?}), baseline milter {r_base:.0} msg/s (mean {l_base:?}, ratio {:.0}%), ringlog milter {r_milter:.0} msg/s (mean {l_milter:?}), ratio {:.0}%; sequential latency {s_plain:?} -> baseline {s_base:?}, ringlog {s_milter:?} (+{:?})",
                r_base / r_plain * 100.0,
                r_milter / r_plain * 100.0,
                s_milter.saturating_sub(s_plain)
            );
            rates.push((r_plain, r_milter, r_milter / r_plain, r_base / r_plain));
            seq.push((s_plain, s_milter, s_base));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let added: Vec<f64> = seq.iter().map(|(p, m, _)| ms(*m) - ms(*p)).collect();
        let added_base: Vec<f64> = seq.iter().map(|(p, _, b)| ms(*b) - ms(*p)).collect();
        eprintln!(
            "perf {load:?} over {} rounds (medians): without milter {:.0} msg/s, with milter {:.0} msg/s, ratio {:.0}%, added sequential latency {:.2} ms; baseline milter ratio {:.0}%, added latency {:.2} ms",
            rates.len(),
            median(rates.iter().map(|r| r.0).collect()),
            median(rates.iter().map(|r| r.1).collect()),
            median(rates.iter().map(|r| r.2).collect()) * 100.0,
            median(added),
            median(rates.iter().map(|r| r.3).collect()) * 100.0,
            median(added_base)
        );
    }
    // Every real message was delivered into A's Maildir (the warm-up's too).
    wait_until(Duration::from_secs(30), "the real perf mail delivered at A", || {
        pa.delivered().len() >= real_sent.get()
    });
    // The baseline milter really took part: with `milter_default_action = accept`, one that
    // failed would have measured as no milter at all.
    let tag = b"\nX-Baseline-Milter: isp-a.example;";
    let by_baseline = pa
        .delivered()
        .iter()
        .filter(|f| std::fs::read(f).is_ok_and(|m| m.windows(tag.len()).any(|w| w == tag)))
        .count();
    assert!(by_baseline > 0, "no message delivered at A carries the baseline milter's header");
    let appended = ringlog_e2e::metric(&a, "ringlog_appended_total").unwrap_or(0) - appended0;
    let batches = ringlog_e2e::metric(&a, "ringlog_append_batches_total").unwrap_or(0) - batches0;
    eprintln!(
        "perf: A appended {appended} records in {batches} group commits ({:.2} per commit)",
        appended as f64 / batches.max(1) as f64
    );
    // Time the milter spent at end of message (fingerprint + durable append), from A's log.
    let (mut eom, mut fp): (Vec<u64>, Vec<u64>) = a
        .log()
        .lines()
        .filter(|l| l.contains("milter recorded message"))
        .filter_map(|l| {
            let eom: u64 = field(l, "micros")?.parse().ok()?;
            let fp: u64 = field(l, "fingerprint_micros")?.parse().ok()?;
            Some((eom, fp))
        })
        .unzip();
    eom.sort_unstable();
    fp.sort_unstable();
    if !eom.is_empty() && !fp.is_empty() {
        eprintln!(
            "perf: milter end-of-message time at A over {} messages: median {} us, p90 {} us (of which fingerprint: median {} us, p90 {} us)",
            eom.len(),
            eom[eom.len() / 2],
            eom[eom.len() * 9 / 10],
            fp[fp.len() / 2],
            fp[fp.len() * 9 / 10]
        );
    }
    // No bound on the numbers here: timings on a shared machine are reported, not asserted
    // (docs/PERFORMANCE.md). The tiny perf mail went to `discard:`, the real mail into A's
    // Maildir; the follower must not have taken any of it for a stray.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(follower(&a, "mismatches"), 2, "{}", a.get("/v1/postfix-log"));
    assert!(a.log().contains("milter recorded message"));
    eprintln!("postfix test took {:?}", t0.elapsed());
    drop(guard);
}
