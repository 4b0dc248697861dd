//! `ringlog bench append`: sustained durable appends against a running node over its Unix
//! socket, ack latency at a fixed rate, disk bytes per record, and, in the same run, the
//! baselines (raw Ed25519 signatures on one core, raw sled inserts with the same flush policy).

use crate::client::{Client, Endpoint};
use crate::node::start;
use anyhow::Context as _;
use ringlog_protocol::{sha256, SecretKey};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Results of one run.
#[derive(Debug, Serialize)]
pub struct AppendBench {
    /// Length of the sustained phase.
    pub seconds: f64,
    /// Concurrent clients and records per request in the sustained phase.
    pub clients: usize,
    /// Records per request.
    pub batch: usize,
    /// Durable, signed, indexed appends per second, sustained.
    pub appends_per_s: f64,
    /// Offered rate of the latency phase.
    pub latency_rate: u64,
    /// Ack latency percentiles at that rate, single-record requests (ms).
    pub ack_p50_ms: f64,
    /// 99th percentile (ms).
    pub ack_p99_ms: f64,
    /// Bytes on disk per record (store directory after the run / records).
    pub disk_bytes_per_record: f64,
    /// Baseline: Ed25519 signatures per second on one core.
    pub raw_sign_per_s: f64,
    /// Baseline: sled inserts per second of records the same size, flushed per batch of `batch`.
    pub raw_sled_inserts_per_s: f64,
}

fn hop(i: u64) -> Value {
    let h = sha256(&[&i.to_be_bytes()]);
    let b = sha256(&[b"body", &i.to_be_bytes()]);
    json!({ "mfp1": h, "mfp1_lite": h, "body": b, "from": "external:192.0.2.1,mx.sender.example",
            "to": "external:mx.next.example", "queue_id": format!("{:010X}", i) })
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() {
                dir_size(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Runs the append benchmark in a fresh directory under `base`.
pub async fn append(
    base: &std::path::Path,
    seconds: u64,
    clients: usize,
    batch: usize,
    rate: u64,
) -> anyhow::Result<AppendBench> {
    // Baselines first, on an idle machine state.
    let key = SecretKey::from_seed([3; 32]);
    let msg = [7u8; 300];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        for _ in 0..100 {
            std::hint::black_box(key.sign(&msg));
        }
        n += 100;
    }
    let raw_sign_per_s = n as f64 / t.elapsed().as_secs_f64();
    let raw_sled_inserts_per_s = {
        let dir = base.join("raw-sled");
        let db = sled::Config::new().path(&dir).open()?;
        let t = Instant::now();
        let mut i = 0u64;
        while t.elapsed() < Duration::from_secs(3) {
            let mut b = sled::Batch::default();
            for _ in 0..batch {
                b.insert(&i.to_be_bytes(), &msg[..]);
                i += 1;
            }
            db.apply_batch(b)?;
            db.flush()?;
        }
        i as f64 / t.elapsed().as_secs_f64()
    };

    let dir = base.join("node");
    let cfg = crate::node::solo_ring(&dir, "bench.example")?;
    let node = start(cfg.clone()).await.context("starting the node")?;
    let client = Client::new(Endpoint::Unix(cfg.api.socket.clone()));

    // Sustained phase: `clients` connections, each sending `batch` records per request.
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, done, next) = (client.clone(), done.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                let reqs: Vec<Value> = (first..first + batch as u64).map(hop).collect();
                if client.post("/v1/append", &Value::Array(reqs)).await.is_ok() {
                    done.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let sustained = done.load(Ordering::Relaxed);

    // Latency phase: single-record requests at a fixed rate for 10 s.
    let mut lat = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<f64>(65536);
    let t = Instant::now();
    let mut k = 0u64;
    while t.elapsed() < Duration::from_secs(10) {
        let due = t + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, tx) = (client.clone(), tx.clone());
        let i = 1_000_000_000 + k;
        tokio::spawn(async move {
            let s = Instant::now();
            if client.post("/v1/append", &hop(i)).await.is_ok() {
                let _ = tx.send(s.elapsed().as_secs_f64() * 1000.0).await;
            }
        });
        k += 1;
    }
    drop(tx);
    while let Some(ms) = rx.recv().await {
        lat.push(ms);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let records = node.shared.writer.stats.size.load(Ordering::Relaxed);
    node.stop().await?;
    let disk = dir_size(&dir.join("data"));
    Ok(AppendBench {
        seconds: elapsed,
        clients,
        batch,
        appends_per_s: sustained as f64 / elapsed,
        latency_rate: rate,
        ack_p50_ms: pct(0.50),
        ack_p99_ms: pct(0.99),
        disk_bytes_per_record: disk as f64 / records.max(1) as f64,
        raw_sign_per_s,
        raw_sled_inserts_per_s,
    })
}
