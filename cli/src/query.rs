//! Commands that read from a node's API or compute offline: fingerprint, append, logs,
//! checkpoint, entries, proofs, search.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ringlog_node::client::{Client, Endpoint};
use ringlog_node::config::CONFIG_FILE;
use ringlog_protocol::fingerprint::fingerprint as fp;
use ringlog_protocol::Hash;
use serde_json::{json, Value};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Largest message file read.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// How to reach a node.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Node HTTP API address (host:port); default: from the config file, else 127.0.0.1:7480.
    #[arg(long, global = true)]
    node: Option<String>,
    /// Config file of the local node.
    #[arg(long, short, global = true, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

impl NodeArgs {
    fn http(&self) -> anyhow::Result<Client> {
        read_client(self.node.as_deref(), &self.config)
    }
}

/// The client for a node's read-only API: `--node` (a `host:port`, an `http://` prefix
/// tolerated), else the API address of the config file, else 127.0.0.1:7480 when no config
/// file is in the current directory. A `--config` that names a missing file is an error, never
/// a silent fall back to another node.
pub fn read_client(node: Option<&str>, config: &std::path::Path) -> anyhow::Result<Client> {
    if let Some(n) = node {
        let n = n.trim_start_matches("http://").trim_end_matches('/');
        return Ok(Client::new(Endpoint::Tcp(n.to_string())));
    }
    if config.exists() {
        let cfg = ringlog_node::config::Config::load(config)?;
        return Ok(Client::new(Endpoint::Tcp(cfg.api.http)));
    }
    if config != std::path::Path::new(CONFIG_FILE) {
        anyhow::bail!(
            "no config file at {} (pass an existing --config, or --node)",
            config.display()
        );
    }
    Ok(Client::new(Endpoint::Tcp("127.0.0.1:7480".into())))
}

fn print(json_out: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json_out {
        outln!("{v}");
    } else {
        human(v);
    }
}

fn read_message(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_MESSAGE + 1).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(MAX_MESSAGE + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() as u64 > MAX_MESSAGE {
        bail!("{} is larger than {} bytes", path.display(), MAX_MESSAGE);
    }
    Ok(buf)
}

#[derive(Args)]
pub struct FingerprintArgs {
    /// Message files, `-` for stdin, or directories (each file in them).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON object per message per line.
    #[arg(long)]
    json: bool,
}

pub fn fingerprint(a: FingerprintArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in &a.paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    let mut failed = false;
    for f in files {
        let raw = match read_message(&f) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ringlog: {e:#}");
                failed = true;
                continue;
            }
        };
        let x = fp(&raw);
        if a.json {
            let v = json!({
                "file": f.display().to_string(),
                "mfp1": x.mfp1, "mfp1_lite": x.mfp1_lite, "body": x.body,
                "leaves": x.leaves, "defects": x.defects.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            });
            outln!("{v}");
        } else {
            outln!("{}  {}", x.mfp1, f.display());
            outln!("  mfp1-lite {}", x.mfp1_lite);
            outln!("  body      {}", x.body);
            if x.leaves.len() > 1 {
                for l in &x.leaves {
                    outln!("  part      {l}");
                }
            }
            for d in &x.defects {
                outln!("  defect    {d}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

#[derive(Args)]
pub struct AppendArgs {
    /// The message (.eml, or `-` for stdin); or give --fingerprint.
    file: Option<PathBuf>,
    /// mfp1 in hex, instead of a message file.
    #[arg(long, conflicts_with = "file")]
    fingerprint: Option<String>,
    /// Previous hop: member:NAME | customer:ACCOUNT | external:IP[,HELO].
    #[arg(long)]
    from: String,
    /// Next hop: member:NAME | local:DOMAIN | external:HOST.
    #[arg(long)]
    to: String,
    /// The relay's queue id.
    #[arg(long, default_value = "")]
    queue_id: String,
    /// Recipients on this hop.
    #[arg(long, default_value_t = 1)]
    rcpt_count: u32,
    /// Append socket of the local node; default: from the config file.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Use the HTTP API at this address with the bearer token from --token-file instead.
    #[arg(long, requires = "token_file")]
    node: Option<String>,
    /// File with the bearer token (for --node).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Config file of the local node.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
}

pub async fn append(a: AppendArgs) -> anyhow::Result<ExitCode> {
    let mut req =
        json!({ "from": a.from, "to": a.to, "queue_id": a.queue_id, "rcpt_count": a.rcpt_count });
    match (&a.file, &a.fingerprint) {
        (Some(f), _) => {
            let raw = read_message(f)?;
            if raw.iter().all(u8::is_ascii_whitespace) {
                bail!("{} is empty: not a message", f.display());
            }
            let x = fp(&raw);
            req["mfp1"] = json!(x.mfp1);
            req["mfp1_lite"] = json!(x.mfp1_lite);
            req["body"] = json!(x.body);
            if x.leaves.len() > 1 {
                req["parts"] = json!(x.leaves);
            }
        }
        (None, Some(h)) => {
            let h = Hash::from_hex(h).context("--fingerprint must be 64 hex digits")?;
            req["mfp1"] = json!(h);
        }
        (None, None) => bail!("give a message file or --fingerprint"),
    }
    let client = if let Some(n) = &a.node {
        let tf = a.token_file.as_ref().context("--node needs --token-file")?;
        let token =
            std::fs::read_to_string(tf).with_context(|| format!("reading {}", tf.display()))?;
        Client { token: Some(token.trim().to_string()), ..Client::new(Endpoint::Tcp(n.clone())) }
    } else if let Some(s) = &a.socket {
        Client::new(Endpoint::Unix(s.clone()))
    } else {
        let cfg = ringlog_node::config::Config::load(&a.config)
            .context("no --socket given and no config file to find the node's socket")?;
        Client::new(Endpoint::Unix(cfg.api.socket))
    };
    let v = client.post("/v1/append", &req).await?;
    outln!("{v}");
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(a: NodeArgs) -> anyhow::Result<ExitCode> {
    let v = a.http()?.get("/v1/logs").await?;
    print(a.json, &v, |v| {
        for l in v.as_array().into_iter().flatten() {
            outln!(
                "{:<28} size {:>10}  checkpoint {:>10}  root {}",
                l["member"].as_str().unwrap_or("?"),
                l["size"],
                l["checkpoint_size"],
                l["root"].as_str().unwrap_or("?")
            );
        }
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct LogArgs {
    /// Member name or log id (hex).
    log: String,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn checkpoint(a: LogArgs) -> anyhow::Result<ExitCode> {
    let v = a.node.http()?.get(&format!("/v1/logs/{}/checkpoint", a.log)).await?;
    print(a.node.json, &v, |v| out!("{}", v["note"].as_str().unwrap_or("")));
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct EntriesArgs {
    /// Member name or log id (hex).
    log: String,
    /// First index.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// One past the last index (at most 1000 entries per call).
    #[arg(long)]
    end: Option<u64>,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn entries(a: EntriesArgs) -> anyhow::Result<ExitCode> {
    let end = a.end.unwrap_or(a.start + 20);
    let v = a
        .node
        .http()?
        .get(&format!("/v1/logs/{}/entries?start={}&end={}", a.log, a.start, end))
        .await?;
    print(a.node.json, &v, |v| {
        for e in v.as_array().into_iter().flatten() {
            outln!("{}", serde_json::to_string(&e["entry"]).unwrap_or_default());
        }
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum ProofCmd {
    /// Inclusion proof of entry INDEX in the tree of SIZE entries (default: current size).
    Inclusion {
        /// Member name or log id.
        log: String,
        /// Entry index.
        index: u64,
        /// Tree size.
        #[arg(long)]
        size: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Consistency proof between two tree sizes (default TO: current size).
    Consistency {
        /// Member name or log id.
        log: String,
        /// Older size.
        from: u64,
        /// Newer size.
        to: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
}

pub async fn proof(c: ProofCmd) -> anyhow::Result<ExitCode> {
    let (node, path) = match &c {
        ProofCmd::Inclusion { log, index, size, node } => {
            let s = size.map(|s| format!("&size={s}")).unwrap_or_default();
            (node, format!("/v1/logs/{log}/proof/inclusion?index={index}{s}"))
        }
        ProofCmd::Consistency { log, from, to, node } => {
            let t = to.map(|t| format!("&to={t}")).unwrap_or_default();
            (node, format!("/v1/logs/{log}/proof/consistency?from={from}{t}"))
        }
    };
    let v = node.http()?.get(&path).await?;
    // Check the proof before showing it: a node could serve garbage.
    let hashes = |k: &str| -> anyhow::Result<Vec<Hash>> {
        v[k].as_array()
            .context("no proof")?
            .iter()
            .map(|h| h.as_str().and_then(Hash::from_hex).context("bad hash"))
            .collect()
    };
    let hash = |k: &str| v[k].as_str().and_then(Hash::from_hex).context("bad hash");
    let ok = match &c {
        ProofCmd::Inclusion { .. } => ringlog_protocol::merkle::verify_inclusion(
            &hash("leaf_hash")?,
            v["index"].as_u64().unwrap_or(0),
            v["size"].as_u64().unwrap_or(0),
            &hashes("proof")?,
            &hash("root")?,
        )
        .map_err(|e| e.to_string()),
        ProofCmd::Consistency { .. } => ringlog_protocol::merkle::verify_consistency(
            v["from"].as_u64().unwrap_or(0),
            v["to"].as_u64().unwrap_or(0),
            &hash("from_root")?,
            &hash("to_root")?,
            &hashes("proof")?,
        )
        .map_err(|e| e.to_string()),
    };
    let mut v = v.clone();
    v["verified"] = json!(ok.is_ok());
    print(node.json, &v, |v| outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default()));
    if let Err(e) = ok {
        bail!("the node's proof does not verify: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct SearchArgs {
    /// By message fingerprint.
    #[arg(long)]
    mfp1: Option<String>,
    /// By mfp1-lite.
    #[arg(long)]
    mfp1_lite: Option<String>,
    /// By body hash.
    #[arg(long)]
    body: Option<String>,
    /// By part (attachment) hash.
    #[arg(long)]
    part: Option<String>,
    /// By queue id (with --log, default the node's own).
    #[arg(long)]
    queue_id: Option<String>,
    /// Log for --queue-id.
    #[arg(long)]
    log: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn search(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut q = Vec::new();
    for (k, v) in [
        ("mfp1", &a.mfp1),
        ("mfp1_lite", &a.mfp1_lite),
        ("body", &a.body),
        ("part", &a.part),
        ("queue_id", &a.queue_id),
        ("log", &a.log),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={v}"));
        }
    }
    if q.is_empty() {
        bail!("give --mfp1, --mfp1-lite, --body, --part or --queue-id");
    }
    let v = a.node.http()?.get(&format!("/v1/search?{}", q.join("&"))).await?;
    print(a.node.json, &v, |v| {
        for e in v.as_array().into_iter().flatten() {
            outln!(
                "{} #{}: {}",
                e["member"].as_str().unwrap_or("?"),
                e["index"],
                serde_json::to_string(&e["entry"]["body"]).unwrap_or_default()
            );
        }
    });
    Ok(ExitCode::SUCCESS)
}
