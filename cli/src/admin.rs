//! Setting up and running nodes: `init`, `genesis`, `node run`, `node check`.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ringlog_node::config::{Config, CONFIG_FILE};
use ringlog_node::identity::{write_new_secret, Identity};
use ringlog_protocol::genesis::{Genesis, GENESIS_VERSION};
use ringlog_protocol::record::MemberInfo;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the node (created if missing).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Member name (DNS-style).
    #[arg(long, default_value = "standalone.example")]
    name: String,
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:7480")]
    http: String,
    /// libp2p listen address.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/7481")]
    p2p: String,
    /// Mail server hosts (IP or name) of this member; repeatable.
    #[arg(long = "mail-host")]
    mail_hosts: Vec<String>,
    /// Mail domains this member serves; repeatable.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Abuse contact address.
    #[arg(long)]
    abuse: Option<String>,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Directory for the keys (`DIR/keys/`) and the member description (`DIR/member.json`).
    #[arg(long)]
    dir: PathBuf,
    /// Member name (DNS-style).
    #[arg(long)]
    name: String,
    /// libp2p listen address other members will dial.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/7481")]
    p2p: String,
    /// Mail server hosts (IP or name); repeatable.
    #[arg(long = "mail-host")]
    mail_hosts: Vec<String>,
    /// Mail domains served; repeatable.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Abuse contact address.
    #[arg(long)]
    abuse: Option<String>,
}

/// Makes a member's keys and its `member.json` (what a sponsor admits, or what `genesis`
/// reads), without a node config.
pub fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let keys = a.dir.join("keys");
    let id = Identity::create(&keys)?;
    let info = MemberInfo {
        name: a.name.clone(),
        log_key: id.log_key.public(),
        node_key: id.node_key.public(),
        addrs: vec![a.p2p],
        mail_hosts: a.mail_hosts,
        domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        abuse: a.abuse.unwrap_or_else(|| format!("abuse@{}", a.name)),
    };
    let member = a.dir.join("member.json");
    std::fs::write(&member, serde_json::to_string_pretty(&info)?)?;
    outln!(
        "{}",
        serde_json::json!({ "name": a.name, "log_key": info.log_key, "node_key": info.node_key,
            "vkey": info.log_key.vkey(&a.name), "member_file": member, "keys": keys })
    );
    Ok(ExitCode::SUCCESS)
}

pub fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let cfg_path = a.dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        bail!("{} exists already; refusing to overwrite", cfg_path.display());
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut cfg = Config { name: a.name.clone(), ..Config::default() };
    cfg.api.http = a.http.clone();
    cfg.p2p.listen = vec![a.p2p.clone()];
    let mut abs = cfg.clone();
    abs.rebase(&a.dir);
    let id = Identity::create(&abs.keys_dir)?;
    let token = write_new_secret(&abs.api.token_file)?;
    let _ = token;
    let info = MemberInfo {
        name: a.name.clone(),
        log_key: id.log_key.public(),
        node_key: id.node_key.public(),
        addrs: vec![a.p2p.clone()],
        mail_hosts: a.mail_hosts.clone(),
        domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        abuse: a.abuse.clone().unwrap_or_else(|| format!("abuse@{}", a.name)),
    };
    std::fs::write(a.dir.join("member.json"), serde_json::to_string_pretty(&info)?)?;
    let genesis = Genesis {
        version: GENESIS_VERSION,
        ring: format!("{}-ring", a.name),
        members: vec![info],
        backbone_quorum: 1,
        witness_k: 0,
    };
    genesis.check()?;
    std::fs::write(&abs.genesis, genesis.to_json())?;
    std::fs::write(&cfg_path, cfg.to_toml())?;
    outln!("initialised {} in {}", a.name, a.dir.display());
    outln!("  log key  {}", id.log_key.public());
    outln!("  ring id  {}", genesis.ring_id());
    outln!("run it with: ringlog node run --config {}", cfg_path.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct GenesisArgs {
    /// Ring name.
    #[arg(long, default_value = "ring")]
    ring: String,
    /// A founding (backbone) member's node directory, made by `ringlog init`; repeatable.
    #[arg(long = "member", required = true)]
    members: Vec<PathBuf>,
    /// Backbone signatures needed for decisions about a backbone member (default: majority).
    #[arg(long)]
    quorum: Option<u32>,
    /// Cosignatures that make a checkpoint witnessed (default: half of the others, at least 1).
    #[arg(long)]
    witness_k: Option<u32>,
    /// Write the genesis here, and point every member's config at it.
    #[arg(long)]
    out: PathBuf,
}

pub fn genesis(a: GenesisArgs) -> anyhow::Result<ExitCode> {
    let mut members = Vec::new();
    for dir in &a.members {
        let text = std::fs::read_to_string(dir.join("member.json")).with_context(|| {
            format!("reading {}/member.json (made by ringlog init)", dir.display())
        })?;
        members.push(serde_json::from_str::<MemberInfo>(&text)?);
    }
    let n = members.len() as u32;
    let g = Genesis {
        version: GENESIS_VERSION,
        ring: a.ring,
        members,
        backbone_quorum: a.quorum.unwrap_or(n / 2 + 1),
        witness_k: a
            .witness_k
            .unwrap_or(((n.saturating_sub(1)) / 2).max(1).min(n.saturating_sub(1))),
    };
    g.check()?;
    std::fs::write(&a.out, g.to_json()).with_context(|| format!("writing {}", a.out.display()))?;
    let out_abs = std::fs::canonicalize(&a.out)?;
    for dir in &a.members {
        let p = dir.join(CONFIG_FILE);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        cfg.genesis = out_abs.clone();
        std::fs::write(&p, cfg.to_toml())?;
    }
    outln!("{}", serde_json::json!({ "ring_id": g.ring_id(), "members": n, "out": a.out }));
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Run the node (until SIGTERM/SIGINT).
    Run(ConfigArg),
    /// Verify the node's store end to end (entries, signatures, Merkle nodes, checkpoints).
    Check(CheckArgs),
    /// Fault injection for tests: flip one bit of a stored entry or checkpoint (node stopped).
    #[command(hide = true)]
    DangerFlipBit(FlipArgs),
}

#[derive(Args)]
pub struct FlipArgs {
    /// Config file.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// Member name or log id.
    #[arg(long)]
    log: String,
    /// Flip a bit of this entry.
    #[arg(long, conflicts_with = "checkpoint")]
    entry: Option<u64>,
    /// Flip a bit of the checkpoint stored under this size (an ASCII byte of the note).
    #[arg(long)]
    checkpoint: Option<u64>,
    /// Which bit.
    #[arg(long, default_value_t = 0)]
    bit: usize,
}

#[derive(Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Config file.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    if !path.exists() {
        bail!("no config at {} (run `ringlog init` first, or pass --config)", path.display());
    }
    Config::load(path)
}

pub async fn node(c: NodeCmd) -> anyhow::Result<ExitCode> {
    match c {
        NodeCmd::Run(a) => {
            let cfg = load_config(&a.config)?;
            ringlog_node::node::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCmd::DangerFlipBit(a) => {
            use ringlog_node::store::Store as _;
            let cfg = load_config(&a.config)?;
            let store = ringlog_node::store::SledStore::open(&cfg.data_dir.join("store"))?;
            let genesis = Genesis::from_json(&std::fs::read_to_string(&cfg.genesis)?)?;
            let log = genesis
                .members
                .iter()
                .find(|m| m.name == a.log)
                .map(|m| m.log_key)
                .or_else(|| ringlog_protocol::LogId::from_hex(&a.log))
                .context("unknown log")?;
            if let Some(i) = a.entry {
                store.danger_flip_entry_bit(&log, i, a.bit)?;
            } else if let Some(size) = a.checkpoint {
                let note = store.checkpoint(&log, size)?.context("no checkpoint at that size")?;
                let mut bytes = note.into_bytes();
                let ascii: Vec<usize> =
                    (0..bytes.len()).filter(|&i| bytes[i] < 0x80 && bytes[i] != b'\n').collect();
                let i = ascii[(a.bit / 7) % ascii.len()];
                bytes[i] ^= 1 << (a.bit % 7);
                store.put_checkpoint(&log, size, &String::from_utf8(bytes)?)?;
            } else {
                bail!("give --entry or --checkpoint");
            }
            store.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCmd::Check(a) => {
            let cfg = load_config(&a.config)?;
            let path = cfg.data_dir.join("store");
            let store = ringlog_node::store::SledStore::open(&path).with_context(|| {
                format!("opening {} (is the node running? stop it first)", path.display())
            })?;
            use ringlog_node::store::Store as _;
            let mut all = Vec::new();
            let mut entries = 0;
            let mut checkpoints = 0;
            for log in store.logs()? {
                let size = store.size(&log)?;
                let mut last = 0;
                let report =
                    ringlog_node::check::check_log(&store, &log, Default::default(), &mut |done| {
                        if done - last >= 100_000 || done == size {
                            eprintln!("checked {done}/{size} entries of {log}");
                            last = done;
                        }
                    });
                entries += report.entries;
                checkpoints += report.checkpoints;
                all.extend(report.problems);
            }
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({ "ok": all.is_empty(), "entries": entries, "checkpoints": checkpoints, "problems": all })
                );
            } else {
                for p in &all {
                    outln!("PROBLEM log {} {} {}: {}", p.log, p.object, p.at, p.what);
                }
                outln!(
                    "{} entries, {} checkpoints checked: {}",
                    entries,
                    checkpoints,
                    if all.is_empty() { "ok" } else { "PROBLEMS FOUND" }
                );
            }
            Ok(if all.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
