//! `ringlog audit`: the offline audit of a stopped node's store (see `ringlog_node::audit`):
//! progress on stderr, a summary or one JSON report on stdout, exit 0 only when clean.

use anyhow::Context as _;
use clap::Args;
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
    #[arg(long, requires = "genesis")]
    data_dir: Option<PathBuf>,
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

pub fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, genesis_path) = match (&a.data_dir, &a.genesis) {
        (Some(d), Some(g)) => (d.clone(), g.clone()),
        _ => {
            let cfg = crate::admin::load_config(&a.config)?;
            (a.data_dir.clone().unwrap_or(cfg.data_dir), a.genesis.clone().unwrap_or(cfg.genesis))
        }
    };
    let genesis = Genesis::from_json(
        &std::fs::read_to_string(&genesis_path)
            .with_context(|| format!("reading {}", genesis_path.display()))?,
    )?;
    let path = data_dir.join("store");
    let store = ringlog_node::store::SledStore::open(&path).with_context(|| {
        format!("opening {} (is the node running? stop it first)", path.display())
    })?;
    let report = ringlog_node::audit::audit(&store, &genesis, &|log, done, size| {
        if done % 100_000 < 4096 || done == size {
            eprintln!("audited {done}/{size} entries of {log}");
        }
    })?;
    if a.bench_raw {
        use ringlog_node::store::Store as _;
        for log in store.logs()? {
            let (n, rate) = ringlog_node::audit::raw_verify_rate(&store, &log)?;
            eprintln!("raw batched verify of {log}: {n} entries, {rate:.0} entries/s");
        }
    }
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
