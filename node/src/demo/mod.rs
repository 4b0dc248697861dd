//! `ringlog demo`: a ring of five real nodes on one machine (two backbone providers, three
//! ISPs), each with its own on-disk store and libp2p over loopback; mail relayed through them
//! hop by hop, then traced, evidenced, audited, and the spamming ISP expelled.

pub mod mail;

use crate::check::{check_log, Options};
use crate::client::{Client, Endpoint};
use crate::config::Config;
use crate::identity::Identity;
use crate::node::{start, Running};
use anyhow::{bail, Context as _};
use mail::{generate, prepare, read_corpus, received, Generated, Replay};
use ringlog_protocol::evidence::{verify, Bundle};
use ringlog_protocol::fingerprint::fingerprint;
use ringlog_protocol::genesis::{Genesis, GENESIS_VERSION};
use ringlog_protocol::record::{Admission, Body, Expulsion, MemberInfo};
use ringlog_protocol::roster::Route;
use ringlog_protocol::{sha256, Hash};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Replay real mail from here instead of the generator.
    pub corpus: Option<PathBuf>,
    /// Leave everything in this directory.
    pub keep: Option<PathBuf>,
    /// Generated ordinary messages.
    pub messages: usize,
    /// Generated spam campaign messages.
    pub spam: usize,
    /// Generator seed.
    pub seed: u64,
}

/// The demo's result; printed as one JSON line with `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Messages relayed.
    pub messages: usize,
    /// Hop records appended.
    pub records: usize,
    /// Every node holds every log at the same (size, root).
    pub replicated: bool,
    /// Traces that named the expected origin with every link confirmed.
    pub traced_correct: usize,
    /// Traces run.
    pub traced_total: usize,
    /// Messages whose Received chain could not be mapped (corpus mode), by file.
    pub unmapped: Vec<String>,
    /// Corpus files that are another file's message again (same fingerprint), replayed once.
    pub duplicates: Vec<String>,
    /// Messages whose trace did not name the expected origin with every link confirmed.
    pub mistraced: Vec<String>,
    /// Evidence bundles exported and verified offline.
    pub evidence_verified: usize,
    /// Of those, bundles whose checkpoints all carry the ring's witness cosignatures.
    pub evidence_witnessed: usize,
    /// Every log on every node passed the audit.
    pub audit_clean: bool,
    /// The spamming ISP was expelled: refused by the roster everywhere, its mail hosts `expelled`.
    pub expelled: bool,
    /// Where the files are (with --keep).
    pub dir: Option<String>,
}

struct Member {
    name: String,
    domain: String,
    mail_host: String,
    sponsor: Option<String>,
    cfg: Config,
    info: MemberInfo,
    node: Option<Running>,
}

impl Member {
    fn http(&self) -> Client {
        Client::new(Endpoint::Tcp(self.cfg.api.http.clone()))
    }
    fn socket(&self) -> Client {
        Client::new(Endpoint::Unix(self.cfg.api.socket.clone()))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[demo] {}", msg.as_ref());
}

/// Runs the whole demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let (base, keep) = match &opts.keep {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("{} exists and is not empty", d.display());
            }
            std::fs::create_dir_all(d)?;
            (d.clone(), true)
        }
        None => {
            let d = std::env::temp_dir().join(format!("ringlog-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            (d, false)
        }
    };
    let base =
        std::fs::canonicalize(&base).with_context(|| format!("resolving {}", base.display()))?;
    let result = run_in(&opts, &base).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&base);
    }
    let mut summary = result?;
    summary.dir = keep.then(|| base.display().to_string());
    say(format!("done in {:.1} s", t0.elapsed().as_secs_f64()));
    Ok(summary)
}

async fn run_in(opts: &DemoOptions, base: &Path) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    // Read real mail first: a wrong path should fail before any node starts.
    let corpus = match &opts.corpus {
        Some(p) => {
            let msgs = read_corpus(p)?;
            if msgs.is_empty() {
                bail!(
                    "no messages found in {} (looked for .eml files, an mbox file or a Maildir)",
                    p.display()
                );
            }
            if !msgs.iter().any(|(file, raw)| prepare(file, raw).is_some()) {
                bail!(
                    "none of the {} message(s) read from {} has a Received chain that can be \
                     mapped onto the ring (is it mail?)",
                    msgs.len(),
                    p.display()
                );
            }
            Some(msgs)
        }
        None => None,
    };
    // 1. The ring: two backbone members found it, three ISPs are admitted by their sponsors.
    let plan: [(&str, Option<&str>); 5] = [
        ("backbone-1.example", None),
        ("backbone-2.example", None),
        ("isp-a.example", Some("backbone-1.example")),
        ("isp-b.example", Some("backbone-1.example")),
        ("isp-c.example", Some("backbone-2.example")),
    ];
    let mut members = Vec::new();
    for (i, (name, sponsor)) in plan.iter().enumerate() {
        let dir = base.join(name);
        let mut cfg = Config { name: name.to_string(), ..Config::default() };
        cfg.api.http = format!("127.0.0.1:{}", free_port()?);
        let p2p = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
        cfg.p2p.listen = vec![p2p.clone()];
        cfg.p2p.sync_interval_ms = 500;
        cfg.log.checkpoint_interval_ms = 250;
        cfg.genesis = base.join("genesis.json");
        cfg.rebase(&dir);
        let id = Identity::create(&cfg.keys_dir)?;
        std::fs::write(dir.join("ringlog.toml"), cfg.to_toml())?;
        let domain = name.to_string();
        let mail_host = format!("192.0.2.{}", 10 + i);
        let info = MemberInfo {
            name: name.to_string(),
            log_key: id.log_key.public(),
            node_key: id.node_key.public(),
            addrs: vec![p2p],
            mail_hosts: vec![mail_host.clone()],
            domains: vec![domain.clone()],
            abuse: format!("abuse@{name}"),
        };
        members.push(Member {
            name: name.to_string(),
            domain,
            mail_host,
            sponsor: sponsor.map(str::to_string),
            cfg,
            info,
            node: None,
        });
    }
    let genesis = Genesis {
        version: GENESIS_VERSION,
        ring: "demo-ring".into(),
        members: members.iter().filter(|m| m.sponsor.is_none()).map(|m| m.info.clone()).collect(),
        backbone_quorum: 2,
        witness_k: 1,
    };
    genesis.check()?;
    std::fs::write(base.join("genesis.json"), genesis.to_json())?;
    say(format!(
        "ring {} founded by backbone-1 and backbone-2 in {}",
        genesis.ring_tag(),
        base.display()
    ));
    for m in members.iter_mut().filter(|m| m.sponsor.is_none()) {
        m.node = Some(start(m.cfg.clone()).await.with_context(|| format!("starting {}", m.name))?);
    }
    for i in 0..members.len() {
        let Some(sponsor) = members[i].sponsor.clone() else { continue };
        let info = members[i].info.clone();
        let sp = members
            .iter()
            .find(|m| m.name == sponsor)
            .and_then(|m| m.node.as_ref())
            .context("sponsor not running")?;
        sp.shared.writer.append(vec![Body::Admit(Admission { member: info })]).await?;
        say(format!("{sponsor} admits {}", members[i].name));
    }
    for m in members.iter_mut().filter(|m| m.sponsor.is_some()) {
        m.node = Some(start(m.cfg.clone()).await.with_context(|| format!("starting {}", m.name))?);
    }
    // Every node must see the admissions before mail flows.
    wait(Duration::from_secs(60), "every node to know all five members", || async {
        for m in &members {
            let Ok(v) = m.http().get("/v1/roster").await else { return false };
            if v["members"].as_array().map_or(0, |a| a.len()) < 5 {
                return false;
            }
        }
        true
    })
    .await?;
    say("all five nodes up and agreeing on the roster");

    // 2. Mail, hop by hop: each hop's node records the message as it stood there.
    let isps: Vec<(String, String)> = members
        .iter()
        .filter(|m| m.sponsor.is_some())
        .map(|m| (m.name.clone(), m.domain.clone()))
        .collect();
    let roster = members[0].node.as_ref().context("node")?.shared.roster.roster();
    let mut batches: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut expected: Vec<(Hash, String, String)> = Vec::new(); // (mfp1 at delivery, expected origin, label)
    let mut spam_fp = None;
    if let (Some(corpus), Some(msgs)) = (&opts.corpus, corpus) {
        say(format!(
            "replaying {} real message files from {} (copies of one message are replayed once)",
            msgs.len(),
            corpus.display()
        ));
        let mut seen_fp: BTreeMap<Hash, String> = BTreeMap::new();
        for (file, raw) in msgs {
            let Some(replay) = prepare(&file, &raw) else {
                summary.unmapped.push(file);
                continue;
            };
            // The same message stored twice (another hop's copy, other line ends) is one
            // message to the ring: replaying it again would give it two entry points.
            let delivered = fingerprint(&raw).mfp1;
            if let Some(first) = seen_fp.get(&delivered) {
                summary.duplicates.push(format!("{file} = {first}"));
                continue;
            }
            seen_fp.insert(delivered, file.clone());
            let origin = pick(&isps, &replay.orgs[0]);
            let dest = pick(&isps, replay.orgs.last().map_or("", String::as_str));
            let path = ring_path(&roster, &origin.0, &dest.1)?;
            let exp = record_corpus(&replay, &path, &dest.1, &mut batches, summary.messages);
            expected.push((exp, origin.0.clone(), replay.file.clone()));
            summary.messages += 1;
        }
    } else {
        let spammer = 2;
        let msgs = generate(opts.seed, opts.messages, opts.spam, spammer, &isps);
        say(format!(
            "relaying {} messages ({} from a spam campaign at {})",
            msgs.len(),
            opts.spam,
            isps[spammer].0
        ));
        for (k, g) in msgs.iter().enumerate() {
            let origin = &isps[g.from_isp].0;
            let path = ring_path(&roster, origin, &g.to_domain)?;
            let fp = record_generated(g, &path, &members, &mut batches, k);
            if g.spam && spam_fp.is_none() {
                spam_fp = Some(fp);
            }
            expected.push((fp, origin.clone(), format!("message {k}")));
            summary.messages += 1;
        }
    }
    for (name, reqs) in &batches {
        let m = members.iter().find(|m| &m.name == name).context("member")?;
        for chunk in reqs.chunks(500) {
            m.socket()
                .post("/v1/append", &Value::Array(chunk.to_vec()))
                .await
                .with_context(|| format!("appending at {name}"))?;
        }
        summary.records += reqs.len();
    }
    say(format!("{} hop records appended across {} logs", summary.records, batches.len()));

    // 3. Replication: every node holds every log at the same (size, root).
    let t = Instant::now();
    summary.replicated = wait(Duration::from_secs(120), "replication", || async {
        let mut seen: Option<BTreeMap<String, (u64, String)>> = None;
        for m in &members {
            let Ok(v) = m.http().get("/v1/logs").await else { return false };
            let heads: BTreeMap<String, (u64, String)> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["size"].as_u64().unwrap_or(0) > 0)
                .map(|l| {
                    (
                        l["member"].as_str().unwrap_or("").to_string(),
                        (
                            l["size"].as_u64().unwrap_or(0),
                            l["root"].as_str().unwrap_or("").to_string(),
                        ),
                    )
                })
                .collect();
            // Every member's own log must be there at its writer's size.
            for w in &members {
                let Some(node) = w.node.as_ref() else { return false };
                let own = node.shared.writer.stats.size.load(std::sync::atomic::Ordering::Relaxed);
                if heads.get(&w.name).map_or(0, |h| h.0) != own {
                    return false;
                }
            }
            if let Some(s) = &seen {
                if s != &heads {
                    return false;
                }
            }
            seen = Some(heads);
        }
        true
    })
    .await
    .is_ok();
    say(format!("replicated: {} ({:.1} s)", summary.replicated, t.elapsed().as_secs_f64()));

    // 4. Trace from a node that is not on the path's start.
    let investigator = &members[1];
    for (fp, origin, label) in &expected {
        summary.traced_total += 1;
        let ok = match investigator.http().get(&format!("/v1/trace?mfp1={fp}")).await {
            Ok(v) => {
                v["origin"]["member"].as_str() == Some(origin.as_str())
                    && v["links"]
                        .as_array()
                        .is_some_and(|l| l.iter().all(|x| x["confirmed"] == json!(true)))
            }
            Err(_) => false,
        };
        if ok {
            summary.traced_correct += 1;
        } else {
            summary.mistraced.push(label.clone());
        }
    }
    say(format!(
        "traced {}/{} messages to the member that let them into the ring",
        summary.traced_correct, summary.traced_total
    ));
    if let Some((fp, origin, _)) = expected.first() {
        if let Ok(v) = investigator.http().get(&format!("/v1/trace?mfp1={fp}")).await {
            let hops: Vec<String> = v["hops"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| h["member"].as_str().unwrap_or("?").to_string())
                .collect();
            say(format!(
                "  e.g. {}: origin {origin}, path {}",
                &fp.to_hex()[..16],
                hops.join(" -> ")
            ));
        }
    }

    // 5. Evidence: exported, written to disk, verified offline with only the genesis.
    let ev_dir = base.join("evidence");
    std::fs::create_dir_all(&ev_dir)?;
    let mut samples: Vec<Hash> = expected.iter().take(5).map(|e| e.0).collect();
    if let Some(s) = spam_fp {
        samples.push(s);
    }
    let mut spam_bundle: Option<Hash> = None;
    for fp in &samples {
        let bundle = fetch_evidence(investigator, fp).await;
        let Ok(bundle) = bundle else { continue };
        let bytes = bundle.to_canonical();
        std::fs::write(ev_dir.join(format!("{}.json", &fp.to_hex()[..16])), &bytes)?;
        let back = Bundle::from_canonical(&bytes)?;
        match verify(&back, &genesis, genesis.witness_k) {
            Ok(v) => {
                summary.evidence_verified += 1;
                if v.witnessed {
                    summary.evidence_witnessed += 1;
                }
                if Some(*fp) == spam_fp {
                    spam_bundle = Some(v.bundle_hash);
                }
            }
            Err(e) => say(format!("evidence for {} failed to verify: {e}", &fp.to_hex()[..16])),
        }
    }
    let kept = if opts.keep.is_some() {
        format!("in {}", ev_dir.display())
    } else {
        "(removed at exit: --keep DIR keeps them)".to_string()
    };
    say(format!(
        "evidence: {} bundles verified offline ({} witnessed) {kept}",
        summary.evidence_verified, summary.evidence_witnessed,
    ));

    // 6. Audit every log on every node.
    let mut problems = 0;
    for m in &members {
        let node = m.node.as_ref().context("node")?;
        let store = node.shared.store.clone();
        let n = tokio::task::spawn_blocking(move || -> usize {
            store
                .logs()
                .unwrap_or_default()
                .iter()
                .map(|l| check_log(&*store, l, Options::default(), &mut |_| {}).problems.len())
                .sum()
        })
        .await?;
        problems += n;
    }
    summary.audit_clean = problems == 0;
    say(format!(
        "audit of every log on every node: {}",
        if summary.audit_clean { "clean".to_string() } else { format!("{problems} problems") }
    ));

    // 7. The spamming ISP's sponsor expels it, citing the evidence.
    if opts.corpus.is_none() && spam_bundle.is_none() {
        say("no verified evidence against the spamming ISP: not expelling it");
    } else if opts.corpus.is_none() {
        let spammer = &members[4];
        let sponsor = &members[1];
        let size = spammer
            .node
            .as_ref()
            .context("node")?
            .shared
            .writer
            .stats
            .size
            .load(std::sync::atomic::Ordering::Relaxed);
        let expel = Expulsion {
            member: spammer.name.clone(),
            from_index: size,
            evidence: spam_bundle.into_iter().collect(),
            reason: "customer spam campaign".into(),
            quorum: vec![],
        };
        sponsor
            .node
            .as_ref()
            .context("node")?
            .shared
            .writer
            .append(vec![Body::Expel(expel)])
            .await?;
        say(format!(
            "{} expels {} citing {} evidence bundle(s)",
            sponsor.name,
            spammer.name,
            spam_bundle.iter().count()
        ));
        let host = spammer.mail_host.clone();
        summary.expelled =
            wait(Duration::from_secs(60), "the expulsion to reach every node", || async {
                for m in members.iter().filter(|m| m.name != spammer.name) {
                    let Ok(v) = m.http().get(&format!("/v1/trust?host={host}")).await else {
                        return false;
                    };
                    if v["trust"] != json!("expelled") {
                        return false;
                    }
                }
                true
            })
            .await
            .is_ok();
        say(format!(
            "{} is expelled everywhere: its mail hosts are 'expelled' ({})",
            spammer.name, summary.expelled
        ));
    } else {
        summary.expelled = false;
    }

    for m in members.iter_mut() {
        if let Some(n) = m.node.take() {
            n.stop().await?;
        }
    }
    Ok(summary)
}

/// The member that stands for organisation `org`, chosen by hash.
fn pick<'a>(isps: &'a [(String, String)], org: &str) -> &'a (String, String) {
    let h = sha256(&[org.as_bytes()]);
    &isps[(h.0[0] as usize) % isps.len()]
}

/// Members a message passes from `origin` to the member serving `domain`, by ring routing.
fn ring_path(
    roster: &ringlog_protocol::roster::Roster,
    origin: &str,
    domain: &str,
) -> anyhow::Result<Vec<String>> {
    let mut path = vec![origin.to_string()];
    for _ in 0..8 {
        let me = path.last().cloned().unwrap_or_default();
        match roster.route(&me, domain) {
            Route::Local => return Ok(path),
            Route::Member(n) | Route::Upstream(n) => path.push(n),
            other => bail!("no ring route from {me} to {domain}: {other:?}"),
        }
    }
    bail!("routing loop from {origin} to {domain}")
}

fn hop_request(raw: &[u8], from: String, to: String, queue_id: String) -> (Value, Hash) {
    let fp = fingerprint(raw);
    let mut v = json!({ "mfp1": fp.mfp1, "mfp1_lite": fp.mfp1_lite, "body": fp.body, "from": from, "to": to, "queue_id": queue_id });
    if fp.leaves.len() > 1 {
        v["parts"] = json!(fp.leaves.iter().take(64).collect::<Vec<_>>());
    }
    (v, fp.mfp1)
}

fn queue_id(k: usize, hop: usize) -> String {
    format!("{:05X}{:02X}", k, hop)
}

/// Records a generated message along `path`; returns the fingerprint of the delivered copy.
fn record_generated(
    g: &Generated,
    path: &[String],
    members: &[Member],
    batches: &mut BTreeMap<String, Vec<Value>>,
    k: usize,
) -> Hash {
    let mut raw = g.raw.clone();
    let mut prev_host = format!(
        "client-{}.{}",
        g.account,
        members.iter().find(|m| m.name == path[0]).map_or("", |m| m.domain.as_str())
    );
    let mut last = Hash([0; 32]);
    for (i, name) in path.iter().enumerate() {
        let by = format!("mx.{name}");
        let qid = queue_id(k, i);
        let mut next_raw =
            received(&prev_host, &by, &qid, "Tue, 01 Dec 2026 12:00:00 +0000").into_bytes();
        next_raw.extend_from_slice(&raw);
        raw = next_raw;
        let from = if i == 0 {
            format!("customer:{}", g.account)
        } else {
            format!("member:{}", path[i - 1])
        };
        let to = match path.get(i + 1) {
            Some(n) => format!("member:{n}"),
            None => format!("local:{}", g.to_domain),
        };
        let (req, fp) = hop_request(&raw, from, to, qid);
        batches.entry(name.clone()).or_default().push(req);
        last = fp;
        prev_host = by;
    }
    last
}

/// Records a real message along `path`, each member seeing the copy its place in the
/// Received chain implies; returns the fingerprint of the last copy.
fn record_corpus(
    r: &Replay,
    path: &[String],
    domain: &str,
    batches: &mut BTreeMap<String, Vec<Value>>,
    k: usize,
) -> Hash {
    let n = r.at_org.len();
    let p = path.len();
    let mut last = Hash([0; 32]);
    for (i, name) in path.iter().enumerate() {
        let copy = if p == 1 { n - 1 } else { i * (n - 1) / (p - 1) };
        let from = if i == 0 {
            "customer:corpus-sender".to_string()
        } else {
            format!("member:{}", path[i - 1])
        };
        let to = match path.get(i + 1) {
            Some(m) => format!("member:{m}"),
            None => format!("local:{domain}"),
        };
        let (req, fp) = hop_request(&r.at_org[copy], from, to, queue_id(k, i));
        batches.entry(name.clone()).or_default().push(req);
        last = fp;
    }
    last
}

async fn fetch_evidence(m: &Member, fp: &Hash) -> anyhow::Result<Bundle> {
    // A record newer than the last checkpoint cannot be proven yet: retry briefly.
    let mut last_err = None;
    for _ in 0..20 {
        match m.http().get(&format!("/v1/evidence?mfp1={fp}")).await {
            Ok(v) => return Ok(serde_json::from_value(v)?),
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no evidence")))
}

async fn wait<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(format!("timed out waiting for {what}"));
    bail!("timed out after {timeout:?} waiting for {what}")
}
