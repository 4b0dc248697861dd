//! The audit's [`Source`] over a running node's read-only HTTP API: the log list with each
//! log's size and the root the node serves for it, checkpoint notes, entries in ranges of at
//! most [`api::MAX_RANGE`], and the equivocation proofs the node holds.
//!
//! The audited node is not trusted: every answer is size-capped, entries are taken as the raw
//! stored bytes the API serves (`bytes`) and decoded here, and an answer that does not have
//! the expected shape is an error naming the request. Calls block on the given runtime, so
//! they must come from threads outside it (the audit runs on blocking threads).

use crate::api;
use crate::audit::Source;
use crate::check::LogSource;
use crate::client::Client;
use crate::witness::StoredProof;
use ringlog_protocol::merkle::Frontier;
use ringlog_protocol::record::MAX_ENTRY_BYTES;
use ringlog_protocol::{Hash, LogId};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Largest answer accepted (a range of the largest entries, hex and decoded, fits).
pub const MAX_ANSWER: usize = 96 << 20;

/// A running node, seen through its API.
pub struct ApiSource {
    client: Client,
    rt: tokio::runtime::Handle,
    /// The root the node served with each log's size.
    roots: Mutex<BTreeMap<LogId, Hash>>,
}

impl ApiSource {
    /// The node `client` talks to; requests run on `rt`.
    pub fn new(client: Client, rt: tokio::runtime::Handle) -> ApiSource {
        ApiSource { client, rt, roots: Mutex::new(BTreeMap::new()) }
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        self.rt
            .block_on(self.client.get_limited(path, MAX_ANSWER))
            .map_err(|e| format!("GET {path}: {e:#}"))
    }

    /// (log, size, root) of every log the node holds.
    pub fn heads(&self) -> Result<Vec<(LogId, u64, Hash)>, String> {
        let v = self.get("/v1/logs")?;
        let bad = |what: &str| format!("GET /v1/logs: not a log list ({what})");
        let mut out = Vec::new();
        for l in v.as_array().ok_or_else(|| bad("not an array"))? {
            let log = l["log"].as_str().and_then(LogId::from_hex).ok_or_else(|| bad("log"))?;
            let size = l["size"].as_u64().ok_or_else(|| bad("size"))?;
            let root = l["root"].as_str().and_then(Hash::from_hex).ok_or_else(|| bad("root"))?;
            out.push((log, size, root));
        }
        Ok(out)
    }
}

impl LogSource for ApiSource {
    fn size(&self, log: &LogId) -> Result<u64, String> {
        let (_, size, root) = self
            .heads()?
            .into_iter()
            .find(|(l, _, _)| l == log)
            .ok_or_else(|| format!("the node no longer lists log {log}"))?;
        if let Ok(mut r) = self.roots.lock() {
            r.insert(*log, root);
        }
        Ok(size)
    }

    fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, String> {
        let path = format!("/v1/logs/{}/checkpoints", log.to_hex());
        let v = self.get(&path)?;
        let bad = || format!("GET {path}: not a checkpoint list");
        let mut out: Vec<(u64, String)> = Vec::new();
        for c in v.as_array().ok_or_else(bad)? {
            let size = c["size"].as_u64().ok_or_else(bad)?;
            let note = c["note"].as_str().ok_or_else(bad)?;
            out.push((size, note.to_string()));
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        let mut a = start;
        while a < end {
            let b = (a + api::MAX_RANGE).min(end);
            let path = format!("/v1/logs/{}/entries?start={a}&end={b}", log.to_hex());
            let v = self.get(&path)?;
            let list = v.as_array().ok_or_else(|| format!("GET {path}: not an entry list"))?;
            if list.len() as u64 > b - a {
                return Err(format!("GET {path}: {} entries for {} asked", list.len(), b - a));
            }
            for (i, e) in list.iter().enumerate() {
                let want = a + i as u64;
                if e["index"].as_u64() != Some(want) {
                    return Err(format!("GET {path}: entry {i} is not index {want}"));
                }
                let hex = e["bytes"].as_str().unwrap_or("");
                if hex.len() > 2 * MAX_ENTRY_BYTES {
                    return Err(format!("GET {path}: entry {want} is over the size limit"));
                }
                out.push(
                    hex::decode(hex).map_err(|e| format!("GET {path}: entry {want} bytes: {e}"))?,
                );
            }
            if (list.len() as u64) < b - a {
                break;
            }
            a = b;
        }
        Ok(out)
    }

    fn node(&self, _: &LogId, _: u8, _: u64) -> Option<Result<Option<Hash>, String>> {
        None
    }

    fn frontier(&self, _: &LogId, size: u64) -> Result<Frontier, String> {
        if size == 0 {
            Ok(Frontier::new())
        } else {
            Err("a node's API serves no tree edge: check from entry 0".into())
        }
    }

    fn root(&self, log: &LogId) -> Option<Hash> {
        self.roots.lock().ok()?.get(log).copied()
    }

    fn chunk(&self) -> u64 {
        api::MAX_RANGE
    }
}

impl Source for ApiSource {
    fn logs(&self) -> Result<Vec<LogId>, String> {
        Ok(self.heads()?.into_iter().map(|(l, _, _)| l).collect())
    }

    fn proofs(&self) -> Result<Vec<StoredProof>, String> {
        let v = self.get("/v1/equivocations")?;
        serde_json::from_value(v).map_err(|e| format!("GET /v1/equivocations: {e}"))
    }
}
