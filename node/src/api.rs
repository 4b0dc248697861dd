//! The HTTP JSON API. Reads (logs, checkpoints, entries, proofs, search, `/metrics`,
//! `/healthz`) are open; `POST /v1/append` is served on the Unix socket (access by file
//! permissions) and, on the TCP port, only with the bearer token.

use crate::hop::HopRequest;
use crate::node::Shared;
use crate::store::{IndexKey, LogNodes};
use crate::writer::AppendError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringlog_protocol::merkle;
use ringlog_protocol::record::{Body, SignedEntry};
use ringlog_protocol::{Hash, LogId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most entries returned by one range request.
pub const MAX_RANGE: u64 = 1000;

/// An error answer: a status and a one-line message, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        let status = match e {
            AppendError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            AppendError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppendError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            AppendError::Faulted(_) | AppendError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type Ctx = State<Arc<Shared>>;

/// Which listener a router serves: appends need the token on TCP only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The Unix socket (trusted by file permissions).
    Socket,
    /// The TCP port.
    Tcp,
}

/// The router for one listener.
pub fn router(shared: Arc<Shared>, listener: Listener) -> Router {
    let append = if listener == Listener::Socket { post(append_socket) } else { post(append_tcp) };
    let governance =
        if listener == Listener::Socket { post(governance_socket) } else { post(governance_tcp) };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/postfix-log", get(crate::postfix_log::api))
        .route("/v1/append", append)
        .route("/v1/governance", governance)
        .route("/v1/logs", get(logs))
        .route("/v1/logs/{log}/checkpoint", get(checkpoint))
        .route("/v1/logs/{log}/checkpoints", get(checkpoints))
        .route("/v1/logs/{log}/entries", get(entries))
        .route("/v1/logs/{log}/entries/{index}", get(entry))
        .route("/v1/logs/{log}/proof/inclusion", get(inclusion))
        .route("/v1/logs/{log}/proof/consistency", get(consistency))
        .route("/v1/search", get(search))
        .route("/v1/equivocations", get(equivocations)) // witness.rs
        .route("/v1/roster", get(roster))
        .route("/v1/trust", get(trust))
        .route("/v1/route", get(route))
        .layer(DefaultBodyLimit::max(shared.cfg.api.max_body_bytes))
        .with_state(shared.clone())
        // --- investigation: GET /v1/trace, GET /v1/evidence (see investigate.rs) ---
        .merge(crate::investigate::router(shared))
    // --- end investigation ---
}

async fn healthz(State(s): Ctx) -> Json<Value> {
    Json(
        json!({ "ok": true, "name": s.cfg.name, "log": s.writer.log, "size": s.writer.stats.size.load(Ordering::Relaxed) }),
    )
}

async fn metrics(State(s): Ctx) -> Result<String, ApiError> {
    let st = &s.writer.stats;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
    };
    counter(
        "ringlog_appended_total",
        "Entries appended to the own log.",
        st.appended.load(Ordering::Relaxed),
    );
    counter("ringlog_append_batches_total", "Group commits.", st.batches.load(Ordering::Relaxed));
    counter(
        "ringlog_checkpoints_total",
        "Checkpoints signed.",
        st.checkpoints.load(Ordering::Relaxed),
    );
    counter(
        "ringlog_overloaded_total",
        "Appends refused: queue full.",
        st.overloaded.load(Ordering::Relaxed),
    );
    out.push_str("# HELP ringlog_log_size Entries held per log.\n# TYPE ringlog_log_size gauge\n");
    let store = s.store.clone();
    let sizes =
        tokio::task::spawn_blocking(move || -> Result<Vec<(LogId, u64)>, crate::store::Error> {
            store.logs()?.into_iter().map(|l| Ok((l, store.size(&l)?))).collect()
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
    for (log, size) in sizes {
        out.push_str(&format!(
            "ringlog_log_size{{log=\"{}\",member=\"{}\"}} {size}\n",
            log,
            s.name_of(&log)
        ));
    }
    for (name, value) in s.extra_metrics() {
        out.push_str(&format!("{name} {value}\n"));
    }
    if s.cfg.postfix_log.path.is_some() {
        for (name, value) in s.postfix_log.metrics() {
            out.push_str(&format!("# TYPE {name} counter\n{name} {value}\n"));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AppendBody {
    One(Box<HopRequest>),
    Many(Vec<HopRequest>),
}

#[derive(Serialize)]
struct Appended {
    log: LogId,
    index: u64,
    mfp1: Hash,
}

async fn append_socket(
    State(s): Ctx,
    body: Result<Json<AppendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    do_append(&s, body).await
}

async fn append_tcp(
    State(s): Ctx,
    headers: HeaderMap,
    body: Result<Json<AppendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_token(&s, &headers, "appends")?;
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    do_append(&s, body).await
}

/// Writes on the TCP port need the bearer token from the token file (compared in constant
/// time); without a token file they are refused outright.
fn check_token(s: &Shared, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let Some(token) = &s.token else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{what} over TCP are disabled (no token file); use the unix socket"),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        return Err(ApiError(StatusCode::FORBIDDEN, "wrong bearer token".into()));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn do_append(s: &Shared, body: AppendBody) -> Result<Response, ApiError> {
    let (reqs, many) = match body {
        AppendBody::One(r) => (vec![*r], false),
        AppendBody::Many(v) => (v, true),
    };
    if reqs.is_empty() {
        return Err(bad("no records"));
    }
    let now = crate::node::now_ms();
    let roster = s.roster.roster();
    let mut bodies = Vec::with_capacity(reqs.len());
    for r in &reqs {
        let rec = r
            .to_record(&s.identity.commit_secret, now)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        // A hop to or from a member that the ring does not know is a typo, not a record.
        let named = [
            match &rec.prev {
                ringlog_protocol::record::PrevHop::Member { name } => Some(name),
                _ => None,
            },
            match &rec.next {
                ringlog_protocol::record::NextHop::Member { name } => Some(name),
                _ => None,
            },
        ];
        for name in named.into_iter().flatten() {
            if roster.member(name).is_none() {
                return Err(ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name} is not a member of the ring (see ringlog roster)"),
                ));
            }
        }
        bodies.push(Body::Hop(rec));
    }
    let indexes = s.writer.append(bodies).await?;
    let out: Vec<Appended> = indexes
        .into_iter()
        .zip(&reqs)
        .map(|(index, r)| Appended { log: s.writer.log, index, mfp1: r.mfp1 })
        .collect();
    Ok(if many { Json(out).into_response() } else { Json(&out[0]).into_response() })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

async fn logs(State(s): Ctx) -> Result<Json<Value>, ApiError> {
    let sh = s.clone();
    blocking(move || {
        let mut out = Vec::new();
        for log in sh.store.logs().map_err(internal)? {
            let size = sh.store.size(&log).map_err(internal)?;
            let root = merkle::root(&LogNodes::new(&*sh.store, log), size).map_err(internal)?;
            let cp = sh.store.latest_checkpoint(&log).map_err(internal)?.map(|(s, _)| s);
            out.push(json!({ "log": log, "member": sh.name_of(&log), "size": size, "root": root, "checkpoint_size": cp }));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

fn resolve(s: &Shared, log: &str) -> Result<LogId, ApiError> {
    s.resolve_log(log).ok_or_else(|| not_found(format!("unknown log {log:?}")))
}

async fn checkpoint(State(s): Ctx, Path(log): Path<String>) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let sh = s.clone();
    blocking(move || {
        let (size, note) = sh
            .store
            .latest_checkpoint(&log)
            .map_err(internal)?
            .ok_or_else(|| not_found("no checkpoint yet"))?;
        Ok(Json(json!({ "log": log, "size": size, "note": note })))
    })
    .await
}

async fn checkpoints(State(s): Ctx, Path(log): Path<String>) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let sh = s.clone();
    blocking(move || {
        let all = sh.store.checkpoints(&log).map_err(internal)?;
        Ok(Json(Value::Array(
            all.into_iter().map(|(size, note)| json!({ "size": size, "note": note })).collect(),
        )))
    })
    .await
}

fn entry_json(bytes: &[u8], index: u64) -> Value {
    match SignedEntry::decode(bytes) {
        Ok(e) => {
            json!({ "index": index, "entry": e.entry, "sig": e.sig, "leaf_hash": merkle::leaf_hash(bytes), "bytes": hex::encode(bytes) })
        }
        Err(err) => {
            json!({ "index": index, "error": err.to_string(), "bytes": hex::encode(bytes) })
        }
    }
}

#[derive(Deserialize)]
struct Range {
    start: u64,
    end: Option<u64>,
}

async fn entries(
    State(s): Ctx,
    Path(log): Path<String>,
    Query(r): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let end = r.end.unwrap_or(r.start.saturating_add(MAX_RANGE));
    if end < r.start || end - r.start > MAX_RANGE {
        return Err(bad(format!("range must be start <= end with at most {MAX_RANGE} entries")));
    }
    let sh = s.clone();
    blocking(move || {
        let size = sh.store.size(&log).map_err(internal)?;
        let end = end.min(size);
        let start = r.start.min(end);
        let raw = sh.store.entries(&log, start, end).map_err(internal)?;
        Ok(Json(Value::Array(
            raw.iter().enumerate().map(|(i, b)| entry_json(b, start + i as u64)).collect(),
        )))
    })
    .await
}

async fn entry(
    State(s): Ctx,
    Path((log, index)): Path<(String, u64)>,
) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let sh = s.clone();
    blocking(move || {
        let bytes = sh
            .store
            .entry(&log, index)
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no entry {index}")))?;
        Ok(Json(entry_json(&bytes, index)))
    })
    .await
}

#[derive(Deserialize)]
struct InclusionQ {
    index: u64,
    size: Option<u64>,
}

async fn inclusion(
    State(s): Ctx,
    Path(log): Path<String>,
    Query(q): Query<InclusionQ>,
) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let sh = s.clone();
    blocking(move || {
        let stored = sh.store.size(&log).map_err(internal)?;
        let size = q.size.unwrap_or(stored);
        if size > stored || q.index >= size {
            return Err(bad(format!("need index < size <= {stored}")));
        }
        let nodes = LogNodes::new(&*sh.store, log);
        let proof = merkle::inclusion_proof(&nodes, q.index, size).map_err(internal)?;
        let root = merkle::root(&nodes, size).map_err(internal)?;
        let leaf = sh.store.node(&log, 0, q.index).map_err(internal)?;
        Ok(Json(json!({ "log": log, "index": q.index, "size": size, "leaf_hash": leaf, "root": root, "proof": proof })))
    })
    .await
}

#[derive(Deserialize)]
struct ConsistencyQ {
    from: u64,
    to: Option<u64>,
}

async fn consistency(
    State(s): Ctx,
    Path(log): Path<String>,
    Query(q): Query<ConsistencyQ>,
) -> Result<Json<Value>, ApiError> {
    let log = resolve(&s, &log)?;
    let sh = s.clone();
    blocking(move || {
        let stored = sh.store.size(&log).map_err(internal)?;
        let to = q.to.unwrap_or(stored);
        if to > stored || q.from > to {
            return Err(bad(format!("need from <= to <= {stored}")));
        }
        let nodes = LogNodes::new(&*sh.store, log);
        let proof = merkle::consistency_proof(&nodes, q.from, to).map_err(internal)?;
        let old = merkle::root(&nodes, q.from).map_err(internal)?;
        let new = merkle::root(&nodes, to).map_err(internal)?;
        Ok(Json(json!({ "log": log, "from": q.from, "to": to, "from_root": old, "to_root": new, "proof": proof })))
    })
    .await
}

async fn search(
    State(s): Ctx,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let hash = |k: &str| -> Result<Option<Hash>, ApiError> {
        q.get(k)
            .map(|v| Hash::from_hex(v).ok_or_else(|| bad(format!("{k} must be 64 hex digits"))))
            .transpose()
    };
    let key = if let Some(h) = hash("mfp1")? {
        IndexKey::Mfp1(h)
    } else if let Some(h) = hash("mfp1_lite")? {
        IndexKey::Mfp1Lite(h)
    } else if let Some(h) = hash("body")? {
        IndexKey::Body(h)
    } else if let Some(h) = hash("part")? {
        IndexKey::Part(h)
    } else if let Some(qid) = q.get("queue_id") {
        let log = q.get("log").map(String::as_str).unwrap_or(&s.cfg.name);
        IndexKey::QueueId(resolve(&s, log)?, qid.clone())
    } else {
        return Err(bad("give one of mfp1, mfp1_lite, body, part, queue_id (with log)"));
    };
    let sh = s.clone();
    blocking(move || {
        let found = crate::query::search(&*sh.store, &key).map_err(internal)?;
        Ok(Json(Value::Array(
            found
                .into_iter()
                .map(|(e, bytes)| {
                    let mut v = entry_json(&bytes, e.entry.index);
                    v["log"] = json!(e.entry.log);
                    v["member"] = json!(sh.name_of(&e.entry.log));
                    v
                })
                .collect(),
        )))
    })
    .await
}

async fn roster(State(s): Ctx) -> Json<Value> {
    let r = s.roster.roster();
    let members: Vec<Value> = r.members().map(|m| json!(m)).collect();
    let refused: Vec<Value> = s
        .roster
        .refusals()
        .iter()
        .map(|(log, index, why)| json!({ "log": log, "member": s.name_of(log), "index": index, "reason": why.to_string() }))
        .collect();
    Json(json!({ "ring_id": r.ring_id(), "members": members, "refused": refused }))
}

#[derive(Deserialize)]
struct HostQ {
    host: String,
}

async fn trust(State(s): Ctx, Query(q): Query<HostQ>) -> Json<Value> {
    let v = s.roster.roster().trust(&q.host);
    Json(json!({ "host": q.host, "trust": v.trust, "member": v.member }))
}

#[derive(Deserialize)]
struct DomainQ {
    domain: String,
    from: Option<String>,
}

async fn route(State(s): Ctx, Query(q): Query<DomainQ>) -> Json<Value> {
    let me = q.from.clone().unwrap_or_else(|| s.cfg.name.clone());
    let r = s.roster.roster().route(&me, &q.domain);
    Json(json!({ "from": me, "domain": q.domain, "next": r }))
}

// --- governance: POST /v1/governance (same access rule as /v1/append) ---

/// One governance request at a time: each is checked against the roster that includes the one
/// before it.
static GOVERNANCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a governance request waits for the roster to include the entry it appended.
const GOVERNANCE_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

async fn governance_socket(
    State(s): Ctx,
    body: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    do_governance(&s, body).await
}

async fn governance_tcp(
    State(s): Ctx,
    headers: HeaderMap,
    body: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_token(&s, &headers, "governance requests")?;
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    do_governance(&s, body).await
}

/// Checks a governance entry against the current roster as if this node wrote it at its next
/// index; appends it only if the roster would apply it. A refusal is 422 with the roster's
/// reason (`error`: its message, `reason`: the structured `RosterError`), and nothing stored.
async fn do_governance(s: &Shared, body: Body) -> Result<Response, ApiError> {
    use ringlog_protocol::record::Entry;
    if matches!(body, Body::Hop(_)) {
        return Err(bad("a hop record is not a governance entry: use /v1/append"));
    }
    body.validate().map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let _turn = GOVERNANCE.lock().await;
    let index = s.writer.stats.size.load(Ordering::Relaxed);
    let trial = Entry { log: s.writer.log, index, body: body.clone() }
        .sign(&s.identity.log_key)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let mut roster = (*s.roster.roster()).clone();
    if let Err(why) = roster.apply(&trial) {
        let msg = format!("refused by the roster: {why}");
        tracing::warn!(reason = %why, "governance entry refused before appending");
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": msg, "reason": why })),
        )
            .into_response());
    }
    let written = s.writer.append(vec![body]).await?;
    let Some(&index) = written.first() else { return Err(internal("append returned no index")) };
    // Wait (bounded) until the live roster has folded the entry in, so the next request and the
    // caller's next read see it.
    let mut watch = s.roster.subscribe();
    let log = s.writer.log;
    let applied = |r: &ringlog_protocol::roster::Roster| {
        r.by_log_key(&log).and_then(|m| m.last_index).is_some_and(|l| l >= index)
    };
    let settled = tokio::time::timeout(GOVERNANCE_SETTLE, async {
        loop {
            if applied(&watch.borrow_and_update()) {
                return;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
        && applied(&s.roster.roster());
    let refused = s
        .roster
        .refusals()
        .into_iter()
        .find(|(l, i, _)| *l == log && *i == index)
        .map(|(_, _, why)| why.to_string());
    Ok(Json(json!({
        "log": log,
        "member": s.cfg.name,
        "index": index,
        "applied": settled,
        "refused": refused,
    }))
    .into_response())
}
// --- end governance ---

/// The equivocation proofs this node verified and holds (see `witness.rs`).
async fn equivocations(State(s): Ctx) -> Result<Json<Value>, ApiError> {
    let sh = s.clone();
    blocking(move || {
        let all = crate::witness::stored_proofs(&*sh.store);
        Ok(Json(serde_json::to_value(all).map_err(internal)?))
    })
    .await
}
