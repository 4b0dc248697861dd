//! `ringlog demo` and the roster queries (`roster`, `trust`, `route`).

use clap::Args;
use ringlog_node::demo::{run, DemoOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {
    /// Replay real mail: a directory of .eml files, an mbox file or a Maildir.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Keep the ring's files here (genesis, each member's data, evidence bundles).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// End with a one-line JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// Generated ordinary messages.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Generated spam campaign messages.
    #[arg(long, default_value_t = 40)]
    spam: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let s = run(DemoOptions {
        corpus: a.corpus.clone(),
        keep: a.keep,
        messages: a.messages,
        spam: a.spam,
        seed: a.seed,
    })
    .await?;
    let ok = s.replicated
        && s.traced_total > 0
        && s.traced_correct == s.traced_total
        && s.evidence_verified > 0
        && s.audit_clean
        && (a.corpus.is_some() || s.expelled);
    if a.json {
        outln!("{}", serde_json::to_string(&s)?);
    } else {
        outln!();
        outln!("messages relayed      {}", s.messages);
        outln!("hop records           {}", s.records);
        outln!("replicated everywhere {}", s.replicated);
        outln!("traced to origin      {}/{}", s.traced_correct, s.traced_total);
        if !s.duplicates.is_empty() {
            outln!(
                "same message again    {} (replayed once; --json lists them)",
                s.duplicates.len()
            );
        }
        if !s.unmapped.is_empty() {
            outln!("no usable Received:   {} ({})", s.unmapped.len(), s.unmapped.join(", "));
        }
        outln!(
            "evidence verified     {} ({} witnessed)",
            s.evidence_verified,
            s.evidence_witnessed
        );
        outln!("audit clean           {}", s.audit_clean);
        if a.corpus.is_none() {
            outln!("spammer expelled      {}", s.expelled);
        }
        match &s.dir {
            Some(d) => outln!("files kept in         {d}"),
            None => {
                outln!("files                 removed at exit (use --keep DIR to inspect them)")
            }
        }
        if ok {
            outln!("demo OK");
        } else {
            let mut why = Vec::new();
            if !s.replicated {
                why.push("logs did not converge on every node".to_string());
            }
            if s.traced_correct != s.traced_total || s.traced_total == 0 {
                why.push(format!("traced {}/{} correctly", s.traced_correct, s.traced_total));
            }
            if s.evidence_verified == 0 {
                why.push("no evidence bundle verified".into());
            }
            if !s.audit_clean {
                why.push("audit found problems".into());
            }
            if a.corpus.is_none() && !s.expelled {
                why.push("spammer not expelled".into());
            }
            outln!("demo FAILED: {}", why.join("; "));
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
