//! `ringlog audit`: the audit of a stopped node's store, or of a running node over its
//! read-only HTTP API with `--node` (see `ringlog_node::audit`): progress on stderr, a summary
//! or one JSON report on stdout, exit 0 only when clean.

use anyhow::Context as _;
use clap::Args;
use ringlog_node::audit;
use ringlog_node::config::CONFIG_FILE;
use ringlog_protocol::genesis::Genesis;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct AuditArgs {
    /// Config file of the (stopped) node whose store to audit.
    #[arg(long, short, default_value = CONFIG_FILE)]
    config: PathBuf,
    /// Data directory to audit instead of the config's (needs --genesis).
    #[arg(long, requires = "genesis", conflicts_with = "node")]
    data_dir: Option<PathBuf>,
    /// Audit a running node over its HTTP API at this address (host:port) instead of a store.
    #[arg(long)]
    node: Option<String>,
    /// Genesis file (default: the config's).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Print one JSON report object.
    #[arg(long)]
    json: bool,
    /// Also time batched signature verification alone over each log (benchmark yardstick).
    #[arg(long, hide = true)]
    bench_raw: bool,
}

pub async fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, genesis_path) = match (&a.data_dir, &a.genesis) {
        (Some(d), Some(g)) => (Some(d.clone()), g.clone()),
        (None, Some(g)) if a.node.is_some() => (None, g.clone()),
        _ => {
            let cfg = crate::admin::load_config(&a.config).with_context(|| {
                if a.node.is_some() {
                    "--node needs --genesis (or a config file naming the genesis)"
                } else {
                    "no store to audit"
                }
            })?;
            (
                Some(a.data_dir.clone().unwrap_or(cfg.data_dir)),
                a.genesis.clone().unwrap_or(cfg.genesis),
            )
        }
    };
    let genesis = Genesis::from_json(
        &std::fs::read_to_string(&genesis_path)
            .with_context(|| format!("reading {}", genesis_path.display()))?,
    )
    .with_context(|| format!("{} is not a genesis file", genesis_path.display()))?;
    let progress = |log: &ringlog_protocol::LogId, done: u64, size: u64| {
        if done % 100_000 < 4096 || done == size {
            eprintln!("audited {done}/{size} entries of {log}");
        }
    };
    let report = if let Some(addr) = a.node.clone() {
        let client = crate::query::read_client(Some(&addr), &a.config)?;
        // Fail early and plainly when nothing answers at that address.
        client
            .get_limited("/healthz", 1 << 16)
            .await
            .with_context(|| format!("no ringlog node answers at {addr}"))?;
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let src = ringlog_node::audit_api::ApiSource::new(client, rt);
            ringlog_node::audit::audit_source(&src, &genesis, audit::threads(), &progress)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("auditing the node at {addr}: {e}"))?
    } else {
        let path = data_dir.unwrap_or_default().join("store");
        let store = ringlog_node::store::SledStore::open(&path).with_context(|| {
            format!(
                "opening {} (is the node running? stop it first, or use --node)",
                path.display()
            )
        })?;
        let bench_raw = a.bench_raw;
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let report = audit::audit(&store, &genesis, &progress).map_err(anyhow::Error::msg)?;
            if bench_raw {
                use ringlog_node::store::Store as _;
                for log in store.logs()? {
                    let (n, rate) = audit::raw_verify_rate(&store, &log)?;
                    eprintln!("raw batched verify of {log}: {n} entries, {rate:.0} entries/s");
                }
            }
            Ok(report)
        })
        .await??
    };
    if a.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        for l in &report.logs {
            outln!(
                "log {} ({}): {} entries, {} checkpoints, {} cosignatures, {} witnessed",
                l.log,
                l.member.as_deref().unwrap_or("?"),
                l.entries,
                l.checkpoints,
                l.cosignatures,
                l.witnessed
            );
        }
        for p in &report.problems {
            outln!("PROBLEM log {} {} {}: {}", p.log, p.object, p.at, p.what);
        }
        for r in &report.refusals {
            outln!("REFUSED log {} entry {}: {}", r.log, r.index, r.why);
        }
        for e in &report.equivocations {
            outln!(
                "EQUIVOCATION by {} (log {}), proof {}: {}",
                e.stored.member,
                e.stored.log,
                e.verified,
                serde_json::to_string(&e.stored.proof)?
            );
        }
        let entries: u64 = report.logs.iter().map(|l| l.entries).sum();
        outln!(
            "{} logs, {} entries audited in {:.2} s ({:.0} entries/s): {}",
            report.logs.len(),
            entries,
            report.seconds,
            entries as f64 / report.seconds.max(1e-9),
            if report.clean { "clean" } else { "NOT CLEAN" }
        );
    }
    Ok(if report.clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
