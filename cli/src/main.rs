//! The `ringlog` binary: thin clap commands over the node API, or over `ringlog-protocol`
//! directly for offline work.

/// `println!` that never panics: a closed pipe (`ringlog ... | head`) ends the output quietly.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

mod admin;
mod audit;
mod bench;
mod demo;
mod investigate;
mod member;
mod query;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// ringlog: accountable mail. Signed hop records in replicated Merkle logs.
#[derive(Parser)]
#[command(name = "ringlog", version, about, propagate_version = true)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmarks against real nodes (see docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// The whole system on one machine: a five-member ring, mail, traces, evidence, audit, expulsion.
    Demo(demo::DemoArgs),
    /// Create keys, a config and a one-member genesis for a standalone node.
    Init(admin::InitArgs),
    /// Create a member's keys and member.json only (for a genesis or an admission).
    Keygen(admin::KeygenArgs),
    /// Build a ring's genesis from the directories of its founding members.
    Genesis(admin::GenesisArgs),
    /// Run or check a node.
    #[command(subcommand)]
    Node(admin::NodeCmd),
    /// Fingerprint messages (mfp1, mfp1-lite, body, parts, defects).
    Fingerprint(query::FingerprintArgs),
    /// Append a hop record to the local node's log.
    Append(query::AppendArgs),
    /// List the logs a node holds.
    Logs(query::NodeArgs),
    /// Show a log's latest signed checkpoint.
    Checkpoint(query::LogArgs),
    /// Show entries of a log.
    Entries(query::EntriesArgs),
    /// Inclusion or consistency proofs.
    #[command(subcommand)]
    Proof(query::ProofCmd),
    /// Find hop records by fingerprint, body, part or queue id.
    Search(query::SearchArgs),
    /// Trace a message to where it entered the ring; export evidence or an abuse report.
    Trace(investigate::TraceArgs),
    /// Audit a stopped node's store, or a running node with --node: signatures, roots, checkpoints, cosignatures, roster, equivocations.
    Audit(audit::AuditArgs),
    /// Verify an evidence bundle or an equivocation proof offline against the genesis.
    Verify(investigate::VerifyArgs),
    /// Open (or check the opening of) a customer commitment in a hop record.
    Reveal(investigate::RevealArgs),
    /// Ring governance: admit, update, countersign, peer, expel, reinstate, cosign.
    #[command(subcommand)]
    Member(member::MemberCmd),
    /// Show the ring's roster as the node derives it.
    Roster(member::RosterArgs),
    /// Trust verdict for a connecting host: trusted, untrusted or expelled.
    Trust(member::TrustArgs),
    /// Next hop by ring policy for a recipient domain.
    Route(member::RouteArgs),
    /// Benchmark trace and evidence over a store of many hop records.
    #[command(hide = true)]
    BenchTrace(investigate::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on its own; its nodes' logs are for when something goes wrong.
    let quiet = matches!(cli.cmd, Cmd::Demo(_));
    init_tracing(cli.log_json, quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringlog: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Demo(a) => demo::demo(a).await,
            Cmd::Bench(c) => bench::bench(c).await,
            Cmd::Init(a) => admin::init(a),
            Cmd::Keygen(a) => admin::keygen(a),
            Cmd::Genesis(a) => admin::genesis(a),
            Cmd::Node(c) => admin::node(c).await,
            Cmd::Fingerprint(a) => query::fingerprint(a),
            Cmd::Append(a) => query::append(a).await,
            Cmd::Logs(a) => query::logs(a).await,
            Cmd::Checkpoint(a) => query::checkpoint(a).await,
            Cmd::Entries(a) => query::entries(a).await,
            Cmd::Proof(c) => query::proof(c).await,
            Cmd::Search(a) => query::search(a).await,
            Cmd::Trace(a) => investigate::trace(a).await,
            Cmd::Audit(a) => audit::audit(a).await,
            Cmd::Verify(a) => investigate::verify(a),
            Cmd::Reveal(a) => investigate::reveal(a).await,
            Cmd::Member(c) => member::member(c).await,
            Cmd::Roster(a) => member::roster(a).await,
            Cmd::Trust(a) => member::trust(a).await,
            Cmd::Route(a) => member::route(a).await,
            Cmd::BenchTrace(a) => investigate::bench(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "error" } else { "info,libp2p=warn,sled=warn" };
    let filter = EnvFilter::try_from_env("RINGLOG_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a log redirected to a file stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
