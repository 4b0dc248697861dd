//! Ring governance from the command line: `member admit|update|countersign|peer|expel|reinstate`
//! (entries the local node checks against its roster before appending, `POST /v1/governance`),
//! and the roster reads `roster`, `trust`, `route`.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ringlog_node::client::{Client, Endpoint};
use ringlog_node::config::{Config, CONFIG_FILE};
use ringlog_node::identity::Identity;
use ringlog_protocol::evidence::Bundle;
use ringlog_protocol::record::{
    Admission, Body, Cosign, Expulsion, MemberInfo, MemberUpdate, Peering, Reinstatement,
};
use ringlog_protocol::roster::peering_statement;
use ringlog_protocol::{Hash, PublicKey, Sig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Largest evidence bundle file read.
const MAX_BUNDLE_FILE: u64 = 64 * 1024 * 1024;

/// How to reach the local node: reads over HTTP, governance writes over its Unix socket (or
/// over HTTP with the bearer token).
#[derive(Args, Clone)]
pub struct Conn {
    /// Node HTTP API address (host:port); default: from the config file. Writes over HTTP need
    /// --token-file.
    #[arg(long, global = true)]
    node: Option<String>,
    /// File with the bearer token, for writes over --node.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Config file of the local node (its socket, HTTP address and keys).
    #[arg(long, short, global = true, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// Print JSON (one object per line).
    #[arg(long, global = true)]
    json: bool,
}

impl Conn {
    fn load_config(&self) -> anyhow::Result<Config> {
        if !self.config.exists() {
            bail!("no config at {} (pass --config or --node)", self.config.display());
        }
        Config::load(&self.config)
    }

    /// The client for reads.
    fn reader(&self) -> anyhow::Result<Client> {
        crate::query::read_client(self.node.as_deref(), &self.config)
    }

    /// The client for governance writes: the socket from the config, or --node with the token.
    fn writer(&self) -> anyhow::Result<Client> {
        if let Some(n) = &self.node {
            let tf = self.token_file.as_ref().context(
                "writing over --node needs --token-file (or use the socket via --config)",
            )?;
            let token =
                std::fs::read_to_string(tf).with_context(|| format!("reading {}", tf.display()))?;
            return Ok(Client {
                token: Some(token.trim().to_string()),
                ..Client::new(Endpoint::Tcp(n.clone()))
            });
        }
        let cfg = self.load_config().context("finding the node's append socket")?;
        Ok(Client::new(Endpoint::Unix(cfg.api.socket)))
    }
}

fn print(json_out: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json_out {
        outln!("{v}");
    } else {
        human(v);
    }
}

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Admit a downstream member (this node becomes its sponsor).
    Admit(AdmitArgs),
    /// Replace this member's addresses, mail hosts, domains or abuse contact (unset: kept).
    Update(UpdateArgs),
    /// As the partner of a peering: sign the statement with this node's log key; prints the
    /// countersignature (hex) for the other party's `member peer`.
    Countersign(CountersignArgs),
    /// Start (or with --end, end) a peering agreement, with the partner's countersignature.
    Peer(PeerArgs),
    /// Expel a member this node sponsors (or a backbone member, with a quorum), citing evidence.
    Expel(ExpelArgs),
    /// Reinstate an expelled member this node sponsors (or a backbone member, with a quorum).
    Reinstate(ReinstateArgs),
    /// As a backbone member: sign the statement of a decision about a backbone member; prints
    /// `NAME:HEX` for the writer's `--quorum-sig`.
    Cosign(CosignArgs),
}

#[derive(Args)]
pub struct AdmitArgs {
    /// The new member's `member.json` as written by `ringlog init` (instead of the fields).
    #[arg(long, conflicts_with_all = ["name", "log_key", "node_key"])]
    member_file: Option<PathBuf>,
    /// Member name (DNS-style).
    #[arg(long, required_unless_present = "member_file")]
    name: Option<String>,
    /// Its log public key (64 hex digits).
    #[arg(long, required_unless_present = "member_file")]
    log_key: Option<String>,
    /// Its node (libp2p) public key (64 hex digits).
    #[arg(long, required_unless_present = "member_file")]
    node_key: Option<String>,
    /// libp2p listen address (multiaddr); repeatable.
    #[arg(long = "addr")]
    addrs: Vec<String>,
    /// Mail server host (IP or name); repeatable.
    #[arg(long = "mail-host")]
    mail_hosts: Vec<String>,
    /// Mail domain it serves; repeatable.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Abuse contact (default abuse@NAME).
    #[arg(long)]
    abuse: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// libp2p listen address; repeatable (replaces the list).
    #[arg(long = "addr")]
    addrs: Vec<String>,
    /// Mail server host; repeatable (replaces the list).
    #[arg(long = "mail-host")]
    mail_hosts: Vec<String>,
    /// Served mail domain; repeatable (replaces the list).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Abuse contact.
    #[arg(long)]
    abuse: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct CountersignArgs {
    /// The member that will write the peering entry.
    #[arg(long)]
    partner: String,
    /// Countersign the end of the agreement instead of its start.
    #[arg(long)]
    end: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct PeerArgs {
    /// The other party.
    #[arg(long)]
    partner: String,
    /// Its countersignature (128 hex digits, from its `member countersign`).
    #[arg(long)]
    countersig: String,
    /// End the agreement instead of starting it.
    #[arg(long)]
    end: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ExpelArgs {
    /// The member to expel.
    member: String,
    /// Evidence bundle file (canonical JSON, e.g. from `ringlog trace --evidence`); repeatable.
    #[arg(long = "evidence", required = true)]
    evidence: Vec<PathBuf>,
    /// Human-readable reason.
    #[arg(long)]
    reason: String,
    /// Expulsion point in its log (default: the size of its log on this node).
    #[arg(long)]
    from_index: Option<u64>,
    /// Backbone quorum signature `NAME:HEX` (decisions about backbone members); repeatable.
    #[arg(long = "quorum-sig")]
    quorum: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ReinstateArgs {
    /// The member to reinstate.
    member: String,
    /// Human-readable reason.
    #[arg(long)]
    reason: String,
    /// First index of its log accepted again, at least the expulsion point. Entries it wrote
    /// from the expulsion point up to here stay refused for good: give the size its log has
    /// now (ask the member) so nothing written while expelled is taken in.
    #[arg(long)]
    from_index: u64,
    /// Backbone quorum signature `NAME:HEX`; repeatable.
    #[arg(long = "quorum-sig")]
    quorum: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct CosignArgs {
    /// `expel` or `reinstate`.
    #[arg(value_parser = ["expel", "reinstate"])]
    decision: String,
    /// The backbone member the decision is about.
    member: String,
    /// The decision's point in its log (as the writer will give it).
    #[arg(long)]
    from_index: u64,
    /// Evidence bundle files (for `expel`); repeatable.
    #[arg(long = "evidence")]
    evidence: Vec<PathBuf>,
    /// The reason, exactly as the writer will give it.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    conn: Conn,
}

/// Runs a `member` subcommand.
pub async fn member(c: MemberCmd) -> anyhow::Result<ExitCode> {
    match c {
        MemberCmd::Admit(a) => admit(a).await,
        MemberCmd::Update(a) => update(a).await,
        MemberCmd::Countersign(a) => countersign(a).await,
        MemberCmd::Peer(a) => peer(a).await,
        MemberCmd::Expel(a) => expel(a).await,
        MemberCmd::Reinstate(a) => reinstate(a).await,
        MemberCmd::Cosign(a) => cosign(a).await,
    }
}

fn key(what: &str, hex: &str) -> anyhow::Result<PublicKey> {
    PublicKey::from_hex(hex.trim()).with_context(|| format!("{what} must be 64 hex digits"))
}

fn parse_quorum(list: &[String]) -> anyhow::Result<Vec<Cosign>> {
    list.iter()
        .map(|q| {
            let (member, sig) =
                q.split_once(':').with_context(|| format!("--quorum-sig {q:?}: want NAME:HEX"))?;
            let sig = Sig::from_hex(sig.trim())
                .with_context(|| format!("--quorum-sig of {member}: want 128 hex digits"))?;
            Ok(Cosign { member: member.to_string(), sig })
        })
        .collect()
}

/// SHA-256 of each evidence bundle file's canonical bytes ([`Bundle::hash`]); a file that is
/// not a canonical bundle is refused.
fn evidence_hashes(files: &[PathBuf]) -> anyhow::Result<Vec<Hash>> {
    use std::io::Read as _;
    files
        .iter()
        .map(|f| {
            let mut bytes = Vec::new();
            std::fs::File::open(f)
                .with_context(|| format!("opening {}", f.display()))?
                .take(MAX_BUNDLE_FILE + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {}", f.display()))?;
            let b = Bundle::from_canonical(&bytes)
                .with_context(|| format!("{} is not an evidence bundle", f.display()))?;
            Ok(b.hash())
        })
        .collect()
}

/// Posts a governance entry to the local node; prints what it appended.
async fn submit(conn: &Conn, body: Body, what: &str) -> anyhow::Result<ExitCode> {
    let v = conn
        .writer()?
        .post("/v1/governance", &serde_json::to_value(&body)?)
        .await
        .with_context(|| what.to_string())?;
    if let Some(why) = v["refused"].as_str() {
        bail!("{what}: appended at index {} but the roster refused it: {why}", v["index"]);
    }
    print(conn.json, &v, |v| {
        outln!(
            "{what}: appended as entry {} of {}'s log{}",
            v["index"],
            v["member"].as_str().unwrap_or("?"),
            if v["applied"] == json!(true) { "; the roster has applied it" } else { "" }
        );
    });
    Ok(ExitCode::SUCCESS)
}

async fn roster_json(conn: &Conn) -> anyhow::Result<Value> {
    conn.reader()?.get("/v1/roster").await.context("reading the node's roster")
}

fn roster_member<'a>(roster: &'a Value, name: &str) -> Option<&'a Value> {
    roster["members"].as_array()?.iter().find(|m| m["info"]["name"] == json!(name))
}

/// The name the node writes under (its `/healthz`).
async fn node_name(conn: &Conn) -> anyhow::Result<String> {
    let v = conn.reader()?.get("/healthz").await.context("asking the node its name")?;
    v["name"].as_str().map(str::to_string).context("the node did not give its name")
}

/// Size of `member`'s log as held by the node.
async fn log_size(conn: &Conn, member: &str) -> anyhow::Result<u64> {
    let logs = conn.reader()?.get("/v1/logs").await.context("listing the node's logs")?;
    Ok(logs
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["member"] == json!(member))
        .and_then(|l| l["size"].as_u64())
        .unwrap_or(0))
}

async fn admit(a: AdmitArgs) -> anyhow::Result<ExitCode> {
    let info = if let Some(f) = &a.member_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut info: MemberInfo = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a member.json", f.display()))?;
        if !a.addrs.is_empty() {
            info.addrs = a.addrs.clone();
        }
        if !a.mail_hosts.is_empty() {
            info.mail_hosts = a.mail_hosts.clone();
        }
        if !a.domains.is_empty() {
            info.domains = a.domains.clone();
        }
        if let Some(abuse) = &a.abuse {
            info.abuse = abuse.clone();
        }
        info
    } else {
        let name = a.name.clone().context("give --name or --member-file")?;
        MemberInfo {
            log_key: key("--log-key", a.log_key.as_deref().unwrap_or_default())?,
            node_key: key("--node-key", a.node_key.as_deref().unwrap_or_default())?,
            addrs: a.addrs.clone(),
            mail_hosts: a.mail_hosts.clone(),
            domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            abuse: a.abuse.clone().unwrap_or_else(|| format!("abuse@{name}")),
            name,
        }
    };
    let what = format!("admission of {}", info.name);
    submit(&a.conn, Body::Admit(Admission { member: info }), &what).await
}

async fn update(a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let me = node_name(&a.conn).await?;
    let roster = roster_json(&a.conn).await?;
    let cur = roster_member(&roster, &me)
        .with_context(|| format!("{me} is not in the node's roster"))?
        .get("info")
        .cloned()
        .context("roster entry without info")?;
    let cur: MemberInfo = serde_json::from_value(cur).context("reading the roster entry")?;
    let pick = |given: &Vec<String>, old: Vec<String>| {
        if given.is_empty() {
            old
        } else {
            given.clone()
        }
    };
    let u = MemberUpdate {
        addrs: pick(&a.addrs, cur.addrs),
        mail_hosts: pick(&a.mail_hosts, cur.mail_hosts),
        domains: pick(&a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(), cur.domains),
        abuse: a.abuse.clone().unwrap_or(cur.abuse),
    };
    submit(&a.conn, Body::Update(u), &format!("update of {me}")).await
}

fn load_identity(conn: &Conn) -> anyhow::Result<(Config, Identity)> {
    let cfg = conn.load_config().context("countersigning needs this member's config and keys")?;
    let id = Identity::load(&cfg.keys_dir)
        .with_context(|| format!("loading keys from {}", cfg.keys_dir.display()))?;
    Ok((cfg, id))
}

/// This member's name: the roster's name for its log key.
fn my_name(roster: &Value, id: &Identity) -> anyhow::Result<String> {
    let hex = id.log_id().to_hex();
    roster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["info"]["log_key"] == json!(hex))
        .and_then(|m| m["info"]["name"].as_str())
        .map(str::to_string)
        .context("this node's log key is not a member of the ring (yet)")
}

fn ring_id(roster: &Value) -> anyhow::Result<Hash> {
    roster["ring_id"].as_str().and_then(Hash::from_hex).context("the roster has no ring id")
}

async fn countersign(a: CountersignArgs) -> anyhow::Result<ExitCode> {
    let (_, id) = load_identity(&a.conn)?;
    let roster = roster_json(&a.conn).await?;
    let me = my_name(&roster, &id)?;
    if roster_member(&roster, &a.partner).is_none() {
        bail!("{} is not a member", a.partner);
    }
    let mine = roster_member(&roster, &me).context("own roster entry missing")?;
    let change = mine["peer_changes"][&a.partner].as_u64().unwrap_or(0);
    let change = u32::try_from(change).context("peering change number out of range")?;
    let ring = ring_id(&roster)?;
    let st = peering_statement(&ring, &a.partner, &me, a.end, change);
    let sig = id.log_key.sign(&st);
    let v = json!({
        "member": me, "partner": a.partner, "end": a.end, "change": change, "countersig": sig,
    });
    print(a.conn.json, &v, |v| outln!("{}", v["countersig"].as_str().unwrap_or("")));
    Ok(ExitCode::SUCCESS)
}

async fn peer(a: PeerArgs) -> anyhow::Result<ExitCode> {
    let me = node_name(&a.conn).await?;
    let countersig =
        Sig::from_hex(a.countersig.trim()).context("--countersig must be 128 hex digits")?;
    let p = Peering { member: me.clone(), partner: a.partner.clone(), end: a.end, countersig };
    let verb = if a.end { "end of peering" } else { "peering" };
    submit(&a.conn, Body::Peer(p), &format!("{verb} of {me} with {}", a.partner)).await
}

async fn expel(a: ExpelArgs) -> anyhow::Result<ExitCode> {
    let evidence = evidence_hashes(&a.evidence)?;
    let from_index = match a.from_index {
        Some(i) => i,
        None => log_size(&a.conn, &a.member).await?,
    };
    let x = Expulsion {
        member: a.member.clone(),
        from_index,
        evidence,
        reason: a.reason.clone(),
        quorum: parse_quorum(&a.quorum)?,
    };
    submit(&a.conn, Body::Expel(x), &format!("expulsion of {} from index {from_index}", a.member))
        .await
}

async fn reinstate(a: ReinstateArgs) -> anyhow::Result<ExitCode> {
    let from_index = a.from_index;
    let r = Reinstatement {
        member: a.member.clone(),
        from_index,
        reason: a.reason.clone(),
        quorum: parse_quorum(&a.quorum)?,
    };
    let what = format!("reinstatement of {} from index {from_index}", a.member);
    submit(&a.conn, Body::Reinstate(r), &what).await
}

async fn cosign(a: CosignArgs) -> anyhow::Result<ExitCode> {
    let (_, id) = load_identity(&a.conn)?;
    let roster = roster_json(&a.conn).await?;
    let me = my_name(&roster, &id)?;
    let ring = ring_id(&roster)?;
    // The decision number is the count of backbone decisions so far: the sum of the
    // backbone members' decisions in the roster.
    let decision: u64 = roster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["backbone"] == json!(true))
        .filter_map(|m| m["decisions"].as_u64())
        .sum();
    let decision = u32::try_from(decision).context("decision number out of range")?;
    let st = if a.decision == "expel" {
        let evidence = evidence_hashes(&a.evidence)?;
        Expulsion::statement(&ring, &a.member, decision, a.from_index, &evidence, &a.reason)
    } else {
        Reinstatement::statement(&ring, &a.member, decision, a.from_index, &a.reason)
    };
    let sig = id.log_key.sign(&st);
    let v = json!({ "member": me, "decision": decision, "sig": sig, "quorum_sig": format!("{me}:{sig}") });
    print(a.conn.json, &v, |v| outln!("{}", v["quorum_sig"].as_str().unwrap_or("")));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// roster reads

#[derive(Args)]
pub struct RosterArgs {
    #[command(flatten)]
    conn: Conn,
}

/// `ringlog roster`: the members as the node's roster has them.
pub async fn roster(a: RosterArgs) -> anyhow::Result<ExitCode> {
    let v = roster_json(&a.conn).await?;
    print(a.conn.json, &v, |v| {
        outln!("ring {}", v["ring_id"].as_str().unwrap_or("?"));
        for m in v["members"].as_array().into_iter().flatten() {
            let i = &m["info"];
            let role = match m["sponsor"].as_str() {
                Some(s) => format!("under {s}"),
                None => "backbone".to_string(),
            };
            let peers: Vec<&str> =
                m["peers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            outln!(
                "{:<24} {:<10} {:<28} hosts {} domains {}{}",
                i["name"].as_str().unwrap_or("?"),
                m["status"]["status"].as_str().unwrap_or("?"),
                role,
                join(&i["mail_hosts"]),
                join(&i["domains"]),
                if peers.is_empty() {
                    String::new()
                } else {
                    format!(" peers {}", peers.join(","))
                }
            );
        }
        for r in v["refused"].as_array().into_iter().flatten() {
            outln!(
                "refused: {} entry {}: {}",
                r["member"].as_str().unwrap_or("?"),
                r["index"],
                r["reason"].as_str().unwrap_or("?")
            );
        }
    });
    Ok(ExitCode::SUCCESS)
}

fn join(v: &Value) -> String {
    let items: Vec<&str> = v.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

#[derive(Args)]
pub struct TrustArgs {
    /// The connecting host: IP address or host name.
    host: String,
    #[command(flatten)]
    conn: Conn,
}

/// `ringlog trust HOST`: trusted, untrusted or expelled.
pub async fn trust(a: TrustArgs) -> anyhow::Result<ExitCode> {
    let q = format!("/v1/trust?host={}", query_escape(&a.host));
    let v = a.conn.reader()?.get(&q).await.context("asking the node")?;
    print(a.conn.json, &v, |v| match v["member"].as_str() {
        Some(m) => outln!("{} ({m})", v["trust"].as_str().unwrap_or("?")),
        None => outln!("{}", v["trust"].as_str().unwrap_or("?")),
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct RouteArgs {
    /// The recipient domain.
    domain: String,
    /// Route as this member (default: the node's own).
    #[arg(long)]
    from: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `ringlog route DOMAIN`: the next hop by ring policy.
pub async fn route(a: RouteArgs) -> anyhow::Result<ExitCode> {
    let mut q = format!("/v1/route?domain={}", query_escape(&a.domain));
    if let Some(f) = &a.from {
        q.push_str(&format!("&from={}", query_escape(f)));
    }
    let v = a.conn.reader()?.get(&q).await.context("asking the node")?;
    print(a.conn.json, &v, |v| {
        let next = &v["next"];
        match next["member"].as_str() {
            Some(m) => outln!("{} {m}", next["route"].as_str().unwrap_or("?")),
            None => outln!("{}", next["route"].as_str().unwrap_or("?")),
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes everything but unreserved characters (RFC 3986) for a query value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
