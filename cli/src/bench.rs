//! `ringlog bench ...`: benchmarks that run real nodes (results belong in docs/PERFORMANCE.md).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Durable appends over the Unix socket: sustained rate, ack latency, disk per record, baselines.
    Append {
        /// Length of the sustained phase in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Records per request.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Offered rate of the latency phase (single-record requests per second).
        #[arg(long, default_value_t = 5000)]
        rate: u64,
    },
}

pub async fn bench(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Append { seconds, clients, batch, rate } => {
            let base = std::env::temp_dir().join(format!("ringlog-bench-{}", std::process::id()));
            std::fs::create_dir_all(&base)?;
            let r = ringlog_node::bench::append(&base, seconds, clients, batch, rate).await;
            let _ = std::fs::remove_dir_all(&base);
            outln!("{}", serde_json::to_string_pretty(&r?)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
