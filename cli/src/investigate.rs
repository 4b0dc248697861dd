//! Investigation commands: `trace` (path, origin, evidence, ARF report), `verify` (evidence
//! bundles and equivocation proofs, offline), `reveal` (open a customer commitment) and the
//! hidden `bench-trace`.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;
use ringlog_node::client::Client;
use ringlog_node::config::{Config, CONFIG_FILE};
use ringlog_node::identity::Identity;
use ringlog_node::investigate::TraceAnswer;
use ringlog_protocol::equivocation::EquivocationProof;
use ringlog_protocol::evidence::{self, Bundle, Verdict};
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::record::{customer_commitment, customer_salt, NextHop, PrevHop, SignedEntry};
use ringlog_protocol::trace::{BodyMatch, OriginKind, Trace};
use ringlog_protocol::Hash;
use serde_json::json;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Largest message or bundle file read.
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// How long `--evidence` waits for a checkpoint to cover the records.
const EVIDENCE_WAIT: Duration = Duration::from_secs(10);

/// How to reach a node.
#[derive(Args, Clone)]
pub struct Node {
    /// Node HTTP API address (host:port); default: from the config file, else 127.0.0.1:7480.
    #[arg(long)]
    node: Option<String>,
    /// Config file of the local node.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
}

impl Node {
    fn client(&self) -> anyhow::Result<Client> {
        crate::query::read_client(self.node.as_deref(), &self.config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_FILE + 1).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(MAX_FILE + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() as u64 > MAX_FILE {
        bail!("{} is larger than {MAX_FILE} bytes", path.display());
    }
    Ok(buf)
}

fn hex_hash(what: &str, s: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(s).with_context(|| format!("{what} must be 64 hex digits"))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from milliseconds since the epoch (as trace notes write it).
pub fn rfc3339(ms: u64) -> String {
    ringlog_protocol::trace::utc_ms(ms)
}

/// RFC 5322 date from seconds since the epoch (always UTC).
fn rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s) = civil(secs);
    let wd = DAYS[((secs / 86_400) % 7) as usize];
    let mon = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    format!("{wd}, {d} {mon} {y} {h:02}:{mi:02}:{s:02} +0000")
}

/// (year, month, day, hour, minute, second) in UTC (Howard Hinnant's civil-from-days).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// trace

#[derive(Args)]
pub struct TraceArgs {
    /// The message (.eml, `-` for stdin).
    #[arg(required_unless_present = "fingerprint", conflicts_with = "fingerprint")]
    file: Option<PathBuf>,
    /// Trace by fingerprint (mfp1, 64 hex digits) instead of a message file.
    #[arg(long)]
    fingerprint: Option<String>,
    /// List every message that carried the same body (or one of its parts).
    #[arg(long)]
    body: bool,
    /// Write the evidence bundle (canonical JSON) to this file.
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Write an RFC 5965 abuse report to the origin's abuse contact to this file.
    #[arg(long)]
    arf: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: Node,
}

pub async fn trace(a: TraceArgs) -> anyhow::Result<ExitCode> {
    let client = a.node.client()?;
    let raw = a.file.as_deref().map(read_file).transpose()?;
    let fp = raw.as_deref().map(ringlog_protocol::fingerprint::fingerprint);
    let mfp1 = match (&a.fingerprint, &fp) {
        (Some(h), _) => hex_hash("--fingerprint", h)?,
        (None, Some(f)) => f.mfp1,
        (None, None) => bail!("give a message file or --fingerprint"),
    };
    if a.body {
        let f = fp.as_ref().context("--body needs the message file (its body hash)")?;
        let parts: Vec<String> =
            if f.leaves.len() > 1 { f.leaves.iter().map(Hash::to_hex).collect() } else { vec![] };
        let path = format!("/v1/trace?body={}&parts={}", f.body, parts.join(","));
        let v = client.get(&path).await?;
        let found: Vec<BodyMatch> = serde_json::from_value(v.clone())?;
        if a.json {
            outln!("{v}");
        } else {
            outln!("{} message(s) carried body {}", found.len(), f.body);
            for m in &found {
                outln!(
                    "  {}  {} .. {}  {} record(s)  {}  entered at: {}  via: {}",
                    m.mfp1,
                    rfc3339(m.first_ms),
                    rfc3339(m.last_ms),
                    m.records,
                    if m.whole_body { "whole body" } else { "part" },
                    if m.entered_at.is_empty() { "-".into() } else { m.entered_at.join(", ") },
                    m.members.join(", ")
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut path = format!("/v1/trace?mfp1={mfp1}");
    if let Some(f) = &fp {
        path.push_str(&format!("&mfp1_lite={}", f.mfp1_lite));
    }
    let v = client.get(&path).await?;
    let ans: TraceAnswer = serde_json::from_value(v.clone()).context("decoding the trace")?;
    if a.json {
        outln!("{v}");
    } else {
        print_trace(&ans.trace, Some(&ans.contacts));
    }
    if a.evidence.is_some() || a.arf.is_some() {
        let mut q = format!("mfp1={mfp1}");
        if let Some(f) = &fp {
            q.push_str(&format!("&mfp1_lite={}", f.mfp1_lite));
        }
        let bundle = fetch_evidence(&client, &q).await?;
        let bytes = bundle.to_canonical();
        if let Some(out) = &a.evidence {
            write_file(out, &bytes)?;
            eprintln!("evidence bundle {} written to {}", bundle.hash(), out.display());
        }
        if let Some(out) = &a.arf {
            let report = arf(&ans, &bundle, raw.as_deref(), &mfp1)?;
            write_file(out, report.as_bytes())?;
            eprintln!("abuse report written to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Fetches the bundle, waiting (for up to [`EVIDENCE_WAIT`]) while the node answers 409: the
/// records are not yet covered by a checkpoint.
async fn fetch_evidence(client: &Client, q: &str) -> anyhow::Result<Bundle> {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = client.raw("GET", &format!("/v1/evidence?{q}"), None).await?;
        if status.is_success() {
            let b: Bundle = serde_json::from_slice(&body).context("decoding the bundle")?;
            return Ok(b);
        }
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        if status.as_u16() == 409 && start.elapsed() < EVIDENCE_WAIT {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        bail!("evidence: {msg} ({})", status.as_u16());
    }
}

fn prev_text(p: &PrevHop) -> String {
    match p {
        PrevHop::Member { name } => format!("member {name}"),
        PrevHop::Customer { commitment } => format!("customer (commitment {commitment})"),
        PrevHop::External { ip, helo } => format!("outside host {ip} (HELO {helo})"),
    }
}

fn next_text(n: &NextHop) -> String {
    match n {
        NextHop::Member { name } => format!("member {name}"),
        NextHop::Local { domain } => format!("local delivery for {domain}"),
        NextHop::External { host } => format!("outside host {host}"),
    }
}

/// The trace as a path; `contacts` are the abuse contacts from the node's roster (a bundle
/// verified offline has none, and then none is shown).
fn print_trace(t: &Trace, contacts: Option<&std::collections::BTreeMap<String, String>>) {
    outln!("message {} (matched by {:?})", t.query, t.matched_by);
    match &t.origin {
        Some(o) => {
            let how = match &o.kind {
                OriginKind::Customer { commitment } => format!("customer, commitment {commitment}"),
                OriginKind::External { ip, helo } => format!("outside host {ip}, HELO {helo}"),
            };
            let abuse = match contacts {
                Some(c) => format!(
                    "  [abuse: {}]",
                    c.get(&o.member).map(String::as_str).unwrap_or("unknown")
                ),
                None => String::new(),
            };
            outln!("origin: {} ({how}) at {}{abuse}", o.member, rfc3339(o.time_ms));
        }
        None => outln!("origin: not found (no record shows the message entering the ring)"),
    }
    outln!("path:");
    for (i, h) in t.hops.iter().enumerate() {
        let mut v = Vec::new();
        if let Some(x) = h.verdicts.trust {
            v.push(format!("trust={x:?}").to_lowercase());
        }
        if let Some(x) = h.verdicts.spam_score_milli {
            v.push(format!("spam={:.1}", f64::from(x) / 1000.0));
        }
        if let Some(x) = &h.verdicts.virus {
            v.push(format!("virus={x}"));
        }
        let tr = if h.transform.is_some() { " (changed the message)" } else { "" };
        outln!(
            "  {:>2}. {}  {} #{}: from {} -> {}{tr}{}",
            i + 1,
            rfc3339(h.time_ms),
            h.member,
            h.index,
            prev_text(&h.prev),
            next_text(&h.next),
            if v.is_empty() { String::new() } else { format!("  [{}]", v.join(" ")) }
        );
    }
    if !t.links.is_empty() {
        outln!("links:");
        for l in &t.links {
            if l.confirmed {
                outln!("  {} -> {}: confirmed by both", l.from, l.to);
            } else {
                outln!(
                    "  {} -> {}: NOT CONFIRMED: {} ({}'s duty)",
                    l.from,
                    l.to,
                    l.gap.as_deref().unwrap_or("?"),
                    l.duty.as_deref().unwrap_or("?")
                );
            }
        }
    }
    for d in &t.deliveries {
        outln!("delivery: {} -> {} at {}", d.member, next_text(&d.to), rfc3339(d.time_ms));
    }
    for n in &t.notes {
        outln!("note: {n}");
    }
}

/// An RFC 5965 feedback report (multipart/report) to the origin's abuse contact, with the
/// message (or a header stub when only a fingerprint is known) and the evidence bundle.
fn arf(ans: &TraceAnswer, b: &Bundle, raw: Option<&[u8]>, mfp1: &Hash) -> anyhow::Result<String> {
    let t = &ans.trace;
    let o = t.origin.as_ref().context("the trace found no origin: no one to report to")?;
    let to = ans
        .contacts
        .get(&o.member)
        .filter(|c| !c.is_empty())
        .with_context(|| format!("no abuse contact for {} in the roster", o.member))?;
    let hash = b.hash();
    let boundary = format!("=_ringlog_{}", &hash.to_hex()[..32]);
    let now = now_secs();
    let mut m = String::new();
    m.push_str("From: ringlog abuse reporter <postmaster@localhost>\r\n");
    m.push_str(&format!("To: <{to}>\r\n"));
    m.push_str(&format!(
        "Subject: Abuse report: message {} entered the ring at {}\r\n",
        &mfp1.to_hex()[..16],
        o.member
    ));
    m.push_str(&format!("Date: {}\r\n", rfc5322(now)));
    m.push_str(&format!("Message-ID: <{}.{now}@ringlog.invalid>\r\n", &hash.to_hex()[..24]));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=feedback-report;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a multi-part message in MIME format.\r\n\r\n");
    // Part 1: human-readable.
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    let how = match &o.kind {
        OriginKind::Customer { commitment } => format!(
            "from an authenticated customer of yours (commitment {commitment}; open it with\r\n\
             `ringlog reveal --mfp1 {mfp1} --account NAME`)"
        ),
        OriginKind::External { ip, helo } => {
            format!("from the outside host {ip} (HELO {helo})")
        }
    };
    m.push_str(&format!(
        "The message with fingerprint {mfp1} entered the ring at {} ({}),\r\n{how},\r\n\
         as recorded in your log at index {}.\r\n\r\nPath:\r\n",
        o.member,
        rfc3339(o.time_ms),
        o.index
    ));
    for h in &t.hops {
        m.push_str(&format!(
            "  {} {} #{}: from {} -> {}\r\n",
            rfc3339(h.time_ms),
            h.member,
            h.index,
            prev_text(&h.prev),
            next_text(&h.next)
        ));
    }
    for l in t.links.iter().filter(|l| !l.confirmed) {
        m.push_str(&format!("  not confirmed: {}\r\n", l.gap.as_deref().unwrap_or("?")));
    }
    m.push_str(&format!(
        "\r\nThe attached evidence bundle (SHA-256 {hash}) proves these records;\r\n\
         verify it with `ringlog verify BUNDLE --genesis GENESIS`.\r\n\r\n"
    ));
    // Part 2: machine-readable.
    m.push_str(&format!("--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"));
    m.push_str("Feedback-Type: abuse\r\n");
    m.push_str(&format!("User-Agent: ringlog/{}\r\n", env!("CARGO_PKG_VERSION")));
    m.push_str("Version: 1\r\n");
    if let Some(d) = t.deliveries.first() {
        m.push_str(&format!("Arrival-Date: {}\r\n", rfc5322(d.time_ms / 1000)));
    }
    if let OriginKind::External { ip, .. } = &o.kind {
        m.push_str(&format!("Source-IP: {ip}\r\n"));
    }
    m.push_str(&format!("Reported-Domain: {}\r\n", o.member));
    m.push_str("Incidents: 1\r\n\r\n");
    // Part 3: the message, or its headers.
    match raw {
        Some(raw) => {
            m.push_str(&format!("--{boundary}\r\nContent-Type: message/rfc822\r\n"));
            m.push_str("Content-Disposition: inline\r\n\r\n");
            m.push_str(&String::from_utf8_lossy(raw));
        }
        None => {
            m.push_str(&format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
            m.push_str(&format!("X-Ringlog-Mfp1: {mfp1}\r\n"));
        }
    }
    if !m.ends_with('\n') {
        m.push_str("\r\n");
    }
    // Part 4: the evidence bundle.
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Type: application/json\r\n"));
    m.push_str(&format!(
        "Content-Disposition: attachment; filename=\"evidence-{}.json\"\r\n",
        &hash.to_hex()[..16]
    ));
    m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(b.to_canonical());
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(&String::from_utf8_lossy(chunk));
        m.push_str("\r\n");
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// verify

#[derive(Args)]
pub struct VerifyArgs {
    /// An evidence bundle or an equivocation proof (JSON).
    file: PathBuf,
    /// The ring's genesis file.
    #[arg(long)]
    genesis: PathBuf,
    /// Cosignatures a checkpoint needs to be witnessed (default: the genesis' witness_k).
    #[arg(long)]
    witness_k: Option<u32>,
    /// Accept evidence whose checkpoints are not witnessed (exit 0 and say so).
    #[arg(long)]
    allow_unwitnessed: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let g_text = std::fs::read_to_string(&a.genesis)
        .with_context(|| format!("reading {}", a.genesis.display()))?;
    let g = Genesis::from_json(&g_text)?;
    let bytes = read_file(&a.file)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).context("the file is not JSON")?;
    if v.get("kind").is_some() {
        return verify_equivocation(&a, &g, &bytes);
    }
    let k = a.witness_k.unwrap_or(g.witness_k);
    let verdict = evidence::verify_bytes(&bytes, &g, k).context("evidence does not verify")?;
    if a.json {
        outln!("{}", serde_json::to_string(&verdict)?);
    } else {
        print_verdict(&verdict);
    }
    if !verdict.witnessed && !a.allow_unwitnessed {
        eprintln!(
            "ringlog: evidence is valid but not witnessed (a checkpoint has fewer than {k} cosignatures); \
             pass --allow-unwitnessed to accept it"
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_verdict(v: &Verdict) {
    outln!("evidence bundle {} is valid (ring {})", v.bundle_hash, v.ring_id);
    for c in &v.checkpoints {
        outln!(
            "  checkpoint {} size {}: {} cosignature(s), {}",
            c.member,
            c.size,
            c.cosignatures,
            match (c.witnessed, v.witness_k) {
                (true, 0) => "witnessed (the ring asks for no cosignature)",
                (true, _) => "witnessed",
                (false, _) => "NOT WITNESSED",
            }
        );
    }
    for (m, by) in &v.proven_members {
        if by != "genesis" {
            outln!("  key of {m} proven by its admission by {by}");
        }
    }
    print_trace(&v.trace, None);
    outln!(
        "witnessed: {}",
        if v.witnessed { "yes" } else { "NO (the members could still deny these checkpoints)" }
    );
}

fn verify_equivocation(a: &VerifyArgs, g: &Genesis, bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let p: EquivocationProof =
        serde_json::from_slice(bytes).context("not an equivocation proof")?;
    let log = match &p {
        EquivocationProof::ConflictingCheckpoints { first, .. } => {
            let origin = &first.checkpoint().origin;
            g.members.iter().find(|m| &g.origin(&m.name) == origin)
        }
        EquivocationProof::ConflictingEntries { first, .. } => {
            let e = SignedEntry::decode(&first.entry).context("first entry does not decode")?;
            g.members.iter().find(|m| m.log_key == e.entry.log)
        }
    };
    let m = log.context("the proof is about no member of the genesis")?;
    let kind =
        p.verify(&m.log_key, &g.origin(&m.name)).context("equivocation proof does not verify")?;
    if a.json {
        outln!("{}", json!({ "valid": true, "member": m.name, "kind": kind }));
    } else {
        outln!("equivocation proof is valid: {} signed {:?}", m.name, kind);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// reveal

#[derive(Args)]
pub struct RevealArgs {
    /// The message fingerprint of the record to open.
    #[arg(long)]
    mfp1: String,
    /// The customer account the commitment is claimed to be for.
    #[arg(long)]
    account: String,
    /// Check an opening (needs --salt) instead of making one: anyone can run this.
    #[arg(long)]
    check: bool,
    /// The salt of the opening to check.
    #[arg(long, requires = "check")]
    salt: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: Node,
}

pub async fn reveal(a: RevealArgs) -> anyhow::Result<ExitCode> {
    let mfp1 = hex_hash("--mfp1", &a.mfp1)?;
    let client = a.node.client()?;
    let found = client.get(&format!("/v1/search?mfp1={mfp1}")).await?;
    let mut records = Vec::new();
    for v in found.as_array().into_iter().flatten() {
        let Some(hex) = v.get("bytes").and_then(|b| b.as_str()) else { continue };
        let Ok(bytes) = hex::decode(hex) else { continue };
        let Ok(e) = SignedEntry::decode(&bytes) else { continue };
        if let Some(PrevHop::Customer { commitment }) = e.hop().map(|h| h.prev.clone()) {
            let member = v.get("member").and_then(|m| m.as_str()).unwrap_or("?").to_string();
            records.push((e, commitment, member));
        }
    }
    if records.is_empty() {
        bail!("no record of {mfp1} has a customer commitment");
    }
    if a.check {
        let salt = hex_hash("--salt", a.salt.as_deref().unwrap_or_default())?;
        let c = customer_commitment(&salt, &a.account);
        let hit = records.iter().find(|(_, commitment, _)| *commitment == c);
        let ok = hit.is_some();
        if a.json {
            outln!(
                "{}",
                json!({ "matches": ok, "commitment": c, "member": hit.map(|h| &h.2), "index": hit.map(|h| h.0.entry.index) })
            );
        } else if let Some((e, _, m)) = hit {
            outln!(
                "opening matches: {m} record #{} commits to account {:?}",
                e.entry.index,
                a.account
            );
        } else {
            outln!("opening does NOT match any commitment of {mfp1}");
        }
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let cfg = Config::load(&a.node.config).with_context(|| {
        format!("loading {} (reveal runs on the origin's node)", a.node.config.display())
    })?;
    let id = Identity::load(&cfg.keys_dir)?;
    let own = id.log_id();
    for (e, commitment, member) in &records {
        if e.entry.log != own {
            continue;
        }
        let Some(h) = e.hop() else { continue };
        let salt = customer_salt(&id.commit_secret, &h.mfp1, &h.queue_id, &a.account);
        if customer_commitment(&salt, &a.account) == *commitment {
            if a.json {
                outln!(
                    "{}",
                    json!({ "member": member, "log": e.entry.log, "index": e.entry.index, "mfp1": h.mfp1,
                            "account": a.account, "salt": salt, "commitment": commitment })
                );
            } else {
                outln!("record {member} #{}: account {:?}", e.entry.index, a.account);
                outln!("  salt       {salt}");
                outln!("  commitment {commitment}");
                outln!(
                    "check with: ringlog reveal --check --mfp1 {} --account {:?} --salt {salt}",
                    h.mfp1,
                    a.account
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    bail!("no record of {mfp1} in this node's own log commits to account {:?}", a.account)
}

// ---------------------------------------------------------------------------------------------
// bench-trace

#[derive(Args)]
pub struct BenchArgs {
    /// Hop records to write (spread over five logs).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Traces to time.
    #[arg(long, default_value_t = 2000)]
    traces: usize,
    /// Directory for the store (must not exist; kept for reruns when it does).
    #[arg(long)]
    dir: PathBuf,
}

pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    use ringlog_node::investigate::Investigator;
    use ringlog_node::store::{LogNodes, SledStore, Store};
    use ringlog_protocol::checkpoint::Checkpoint;
    use ringlog_protocol::merkle;
    use ringlog_protocol::record::{Body, Entry, HopRecord, MemberInfo, Verdicts};
    use ringlog_protocol::{sha256, SecretKey};
    use std::sync::Arc;
    use std::time::Instant;

    const LOGS: usize = 5;
    let keys: Vec<SecretKey> = (0..LOGS).map(|i| SecretKey::from_seed([i as u8 + 1; 32])).collect();
    let names: Vec<String> = (0..LOGS).map(|i| format!("m{i}.example")).collect();
    let g = Genesis {
        version: ringlog_protocol::genesis::GENESIS_VERSION,
        ring: "bench".into(),
        members: (0..LOGS)
            .map(|i| MemberInfo {
                name: names[i].clone(),
                log_key: keys[i].public(),
                node_key: SecretKey::from_seed([i as u8 + 101; 32]).public(),
                addrs: vec![],
                mail_hosts: vec![],
                domains: vec![names[i].clone()],
                abuse: format!("abuse@{}", names[i]),
            })
            .collect(),
        backbone_quorum: 1,
        witness_k: 0,
    };
    let messages = a.records / LOGS as u64;
    let mfp = |j: u64| sha256(&[b"bench-mfp1", &j.to_be_bytes()]);
    let fresh = !a.dir.exists();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&a.dir.join("store"))?);
    // The genesis beside the store, so that `ringlog audit --data-dir DIR --genesis
    // DIR/genesis.json` can audit the same million records.
    std::fs::write(a.dir.join("genesis.json"), g.to_json())?;
    if fresh {
        let t0 = Instant::now();
        const BATCH: u64 = 5000;
        let mut j = 0;
        while j < messages {
            let end = (j + BATCH).min(messages);
            for i in 0..LOGS {
                let base = store.size(&keys[i].public())?;
                let entries: Vec<SignedEntry> = (j..end)
                    .map(|m| {
                        let prev = if i == 0 {
                            PrevHop::Customer { commitment: sha256(&[&m.to_be_bytes()]) }
                        } else {
                            PrevHop::Member { name: names[i - 1].clone() }
                        };
                        let next = if i + 1 == LOGS {
                            NextHop::Local { domain: names[i].clone() }
                        } else {
                            NextHop::Member { name: names[i + 1].clone() }
                        };
                        let hop = HopRecord {
                            time_ms: 1_700_000_000_000 + m * 10 + i as u64,
                            mfp1: mfp(m),
                            mfp1_lite: sha256(&[b"lite", &m.to_be_bytes()]),
                            body: sha256(&[b"body", &(m % 1000).to_be_bytes()]),
                            parts: vec![],
                            prev,
                            next,
                            queue_id: format!("Q{m:x}"),
                            rcpt_count: 1,
                            verdicts: Verdicts::default(),
                            transform: None,
                        };
                        let index = base + (m - j);
                        Entry { log: keys[i].public(), index, body: Body::Hop(hop) }.sign(&keys[i])
                    })
                    .collect::<Result<_, _>>()?;
                store.append(&keys[i].public(), &entries)?;
            }
            j = end;
        }
        for (i, k) in keys.iter().enumerate() {
            let size = store.size(&k.public())?;
            let root = merkle::root(&LogNodes::new(&*store, k.public()), size)?;
            let cp = Checkpoint { origin: g.origin(&names[i]), size, root };
            store.put_checkpoint(&k.public(), size, &cp.sign(k, &cp.origin)?.to_text())?;
        }
        store.flush()?;
        eprintln!(
            "filled {} records in {:.1} s",
            messages * LOGS as u64,
            t0.elapsed().as_secs_f64()
        );
    }
    let inv = Investigator::new(store.clone(), g.clone());
    let t0 = Instant::now();
    inv.roster()?;
    let first_scan = t0.elapsed();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut pick = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % messages.max(1)
    };
    let mut lat = Vec::with_capacity(a.traces.max(1));
    for _ in 0..a.traces.max(1) {
        let q = mfp(pick());
        let t = Instant::now();
        let ans = inv.trace(Some(&q), None)?;
        lat.push(t.elapsed());
        if ans.trace.hops.len() != LOGS || !ans.trace.all_confirmed() {
            bail!("bench trace of {q} came out wrong: {} hops", ans.trace.hops.len());
        }
    }
    lat.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let mut ev = Vec::new();
    for _ in 0..(a.traces / 10).max(10) {
        let q = mfp(pick());
        let t = Instant::now();
        let b = inv.evidence(Some(&q), None)?;
        let bytes = b.to_canonical();
        let v = evidence::verify_bytes(&bytes, &g, 0)?;
        ev.push(t.elapsed());
        if v.trace.hops.len() != LOGS {
            bail!("bench evidence of {q} came out wrong");
        }
    }
    ev.sort();
    outln!(
        "records {}  logs {LOGS}  first governance scan {:.2} s\n\
             trace    n={} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             evidence+verify (5 hops)  n={} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        messages * LOGS as u64,
        first_scan.as_secs_f64(),
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
        ev.len(),
        pct(&ev, 0.5).as_secs_f64() * 1e3,
        pct(&ev, 0.99).as_secs_f64() * 1e3,
        ev[ev.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(ExitCode::SUCCESS)
}
