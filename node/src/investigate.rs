//! Investigation on a node: gathers a message's hop records from the store, names their writers
//! from the roster, builds the trace and exports evidence bundles with inclusion proofs; serves
//! `GET /v1/trace` and `GET /v1/evidence`.
//!
//! The roster is folded from genesis and the governance entries of every stored log. Those are
//! found by an incremental scan that remembers how far each log was read, so after the first
//! request a request only reads what was appended since.

use crate::node::Shared;
use crate::query;
use crate::store::{self, IndexKey, LogNodes, Store};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::equivocation::IncludedEntry;
use ringlog_protocol::evidence::{Bundle, Query as BundleQuery, BUNDLE_VERSION};
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::merkle;
use ringlog_protocol::record::{Body, SignedEntry};
use ringlog_protocol::roster::Roster;
use ringlog_protocol::trace::{self, BodyMatch, Lookup, MatchKind, Trace};
use ringlog_protocol::{Hash, LogId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Entries read per store call while scanning for governance entries.
const SCAN_CHUNK: u64 = 1000;

/// Why an investigation request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No hop record carries the fingerprint.
    #[error("no hop record carries this fingerprint")]
    NotFound,
    /// A record is past the latest checkpoint of its log: retry after the next checkpoint.
    #[error("{member} record {index} is not covered by a checkpoint yet (latest size {size}); retry after the next checkpoint")]
    NotCovered {
        /// Writer.
        member: String,
        /// Index of the record.
        index: u64,
        /// Size of the latest checkpoint (0 if none).
        size: u64,
    },
    /// A stored checkpoint does not parse.
    #[error("stored checkpoint of {member} does not parse: {err}")]
    BadCheckpoint {
        /// Writer.
        member: String,
        /// Why.
        err: String,
    },
    /// A member's admission is not in the store, so its key cannot be proven.
    #[error("no admission entry for member {0} in the store")]
    NoAdmission(String),
    /// A log of no known member.
    #[error("log {0} is not a known member's")]
    UnknownLog(LogId),
    /// The proof could not be computed.
    #[error("proof: {0}")]
    Proof(String),
}

/// Governance entries seen so far and the roster folded from them.
#[derive(Default)]
struct GovCache {
    scanned: BTreeMap<LogId, u64>,
    gov: BTreeMap<LogId, Vec<SignedEntry>>,
    roster: Option<Roster>,
}

/// Whether stored entry bytes are a hop record, read from the body's variant tag without
/// decoding the whole entry: version byte, 32-byte log id, varint index, varint body variant
/// (0 is `Body::Hop`). `None` when the bytes are too short to tell.
fn is_hop_bytes(bytes: &[u8]) -> Option<bool> {
    let at = 1 + 32;
    let len = match *bytes.get(at)? {
        b if b < 251 => 1,
        251 => 3,
        252 => 5,
        253 => 9,
        _ => return None,
    };
    Some(*bytes.get(at + len)? == 0)
}

/// The investigation service of one node: the store, the genesis and the governance cache.
pub struct Investigator {
    store: Arc<dyn Store>,
    genesis: Genesis,
    cache: Mutex<GovCache>,
    /// The running node's live roster, when there is one; else the roster is folded here.
    live: Option<Arc<Shared>>,
}

/// A trace with the abuse contacts of the members in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceAnswer {
    /// The trace.
    #[serde(flatten)]
    pub trace: Trace,
    /// Abuse contact of each member in the trace, from the roster.
    pub contacts: BTreeMap<String, String>,
}

impl Investigator {
    /// An investigator over `store` for the ring of `genesis`.
    pub fn new(store: Arc<dyn Store>, genesis: Genesis) -> Investigator {
        Investigator { store, genesis, cache: Mutex::new(GovCache::default()), live: None }
    }

    /// An investigator that names members from a running node's live roster (no scan).
    pub fn for_node(shared: Arc<Shared>) -> Investigator {
        Investigator {
            store: shared.store.clone(),
            genesis: shared.genesis.clone(),
            cache: Mutex::new(GovCache::default()),
            live: Some(shared),
        }
    }

    /// Reads the governance entries appended to `log` since the last scan of it; returns
    /// whether there were any.
    fn scan(&self, c: &mut GovCache, log: &LogId) -> Result<bool, Error> {
        let size = self.store.size(log)?;
        let mut from = c.scanned.get(log).copied().unwrap_or(0);
        let mut found = false;
        while from < size {
            let to = size.min(from + SCAN_CHUNK);
            for bytes in self.store.entries(log, from, to)? {
                if is_hop_bytes(&bytes) == Some(true) {
                    continue;
                }
                let Ok(e) = SignedEntry::decode(&bytes) else { continue };
                if e.hop().is_none() {
                    c.gov.entry(*log).or_default().push(e);
                    found = true;
                }
            }
            from = to;
        }
        c.scanned.insert(*log, size);
        Ok(found)
    }

    /// The roster: the node's live one, or folded from genesis and the governance entries
    /// read since the last call (the first call reads every log).
    pub fn roster(&self) -> Result<Roster, Error> {
        if let Some(sh) = &self.live {
            return Ok((*sh.roster.roster()).clone());
        }
        let mut c = self.cache.lock().map_err(|_| store::Error::Failed)?;
        let mut changed = c.roster.is_none();
        for log in self.store.logs()? {
            changed |= self.scan(&mut c, &log)?;
        }
        if changed {
            let (r, _refused) = Roster::fold(&self.genesis, &c.gov);
            c.roster = Some(r);
        }
        Ok(c.roster.clone().unwrap_or_else(|| Roster::from_genesis(&self.genesis)))
    }

    fn find(&self, l: Lookup) -> Result<Vec<SignedEntry>, Error> {
        let key = match l {
            Lookup::Mfp1(h) => IndexKey::Mfp1(h),
            Lookup::Mfp1Lite(h) => IndexKey::Mfp1Lite(h),
            Lookup::TransformIn(h) => IndexKey::TransformIn(h),
        };
        Ok(query::search(&*self.store, &key)?.into_iter().map(|(e, _)| e).collect())
    }

    /// The records of one message: by `mfp1` (following transforms, falling back to `lite`),
    /// or by `lite` alone.
    pub fn gather(
        &self,
        mfp1: Option<&Hash>,
        lite: Option<&Hash>,
    ) -> Result<(Hash, MatchKind, Vec<SignedEntry>), Error> {
        let (kind, recs) = match (mfp1, lite) {
            (Some(m), l) => trace::gather(m, l, |x| self.find(x))?,
            (None, Some(l)) => (MatchKind::Mfp1Lite, self.find(Lookup::Mfp1Lite(*l))?),
            (None, None) => return Err(Error::NotFound),
        };
        if recs.is_empty() {
            return Err(Error::NotFound);
        }
        let query = match (kind, mfp1, lite) {
            (MatchKind::Mfp1, Some(m), _) => *m,
            (_, _, Some(l)) => *l,
            (_, Some(m), None) => *m,
            (_, None, None) => return Err(Error::NotFound),
        };
        Ok((query, kind, recs))
    }

    /// The trace of a message, with the abuse contacts of its members.
    pub fn trace(&self, mfp1: Option<&Hash>, lite: Option<&Hash>) -> Result<TraceAnswer, Error> {
        let (query, kind, recs) = self.gather(mfp1, lite)?;
        let roster = self.roster()?;
        let t = trace::trace(&query, kind, &recs, &roster);
        let contacts = contacts(&roster, &t);
        Ok(TraceAnswer { trace: t, contacts })
    }

    /// Every message that carried `body` or one of `parts`.
    pub fn by_body(&self, body: &Hash, parts: &[Hash]) -> Result<Vec<BodyMatch>, Error> {
        let mut recs = Vec::new();
        let keys = std::iter::once(IndexKey::Body(*body))
            .chain(std::iter::once(IndexKey::Part(*body)))
            .chain(parts.iter().map(|p| IndexKey::Part(*p)));
        for k in keys {
            recs.extend(query::search(&*self.store, &k)?.into_iter().map(|(e, _)| e));
        }
        let roster = self.roster()?;
        Ok(trace::messages_by_body(body, parts, &recs, &roster))
    }

    /// Entry `index` of `log` with its proof into the latest stored checkpoint.
    fn included(&self, log: &LogId, index: u64, member: &str) -> Result<IncludedEntry, Error> {
        let (size, note) = self.store.latest_checkpoint(log)?.unwrap_or((0, String::new()));
        if size <= index {
            return Err(Error::NotCovered { member: member.to_string(), index, size });
        }
        let checkpoint = SignedCheckpoint::parse(&note)
            .map_err(|e| Error::BadCheckpoint { member: member.to_string(), err: e.to_string() })?;
        let entry = self
            .store
            .entry(log, index)?
            .ok_or_else(|| Error::Proof(format!("entry {index} of {member} is missing")))?;
        let proof = merkle::inclusion_proof(&LogNodes::new(&*self.store, *log), index, size)
            .map_err(|e| Error::Proof(e.to_string()))?;
        Ok(IncludedEntry { entry, proof, checkpoint })
    }

    /// The evidence bundle of a message: its records and the admissions proving their writers'
    /// keys, each proven into the latest stored checkpoint of its log.
    pub fn evidence(&self, mfp1: Option<&Hash>, lite: Option<&Hash>) -> Result<Bundle, Error> {
        let (query, kind, mut recs) = self.gather(mfp1, lite)?;
        let roster = self.roster()?;
        recs.sort_by_key(|e| (e.entry.log, e.entry.index));
        let mut records = Vec::with_capacity(recs.len());
        let mut writers: Vec<String> = Vec::new();
        for e in &recs {
            let m = roster.by_log_key(&e.entry.log).ok_or(Error::UnknownLog(e.entry.log))?;
            records.push(self.included(&e.entry.log, e.entry.index, &m.info.name)?);
            if !writers.contains(&m.info.name) {
                writers.push(m.info.name.clone());
            }
        }
        // Admissions back to genesis: each non-genesis writer's, then its sponsor's, ...
        let mut admissions = Vec::new();
        let mut done: Vec<String> = Vec::new();
        let mut c = self.cache.lock().map_err(|_| store::Error::Failed)?;
        // Every member named on a carried checkpoint (its witnesses) must be provable too, so
        // the bundle's cosignatures can be checked offline: add their admissions as well.
        loop {
            while let Some(name) = writers.pop() {
                if done.contains(&name) || self.genesis.members.iter().any(|m| m.name == name) {
                    continue;
                }
                done.push(name.clone());
                // Only the sponsor's log can hold the admission: read what is new of it.
                let sponsor_log = roster
                    .member(&name)
                    .and_then(|m| m.sponsor.as_deref())
                    .and_then(|s| roster.member(s))
                    .map(|m| m.info.log_key)
                    .ok_or_else(|| Error::NoAdmission(name.clone()))?;
                self.scan(&mut c, &sponsor_log)?;
                let found = c
                    .gov
                    .get(&sponsor_log)
                    .into_iter()
                    .flatten()
                    .find(|e| matches!(&e.entry.body, Body::Admit(a) if a.member.name == name));
                let e = found.ok_or_else(|| Error::NoAdmission(name.clone()))?;
                let sponsor =
                    roster.by_log_key(&e.entry.log).ok_or(Error::UnknownLog(e.entry.log))?;
                admissions.push(self.included(&e.entry.log, e.entry.index, &sponsor.info.name)?);
                writers.push(sponsor.info.name.clone());
            }
            for inc in records.iter().chain(admissions.iter()) {
                for line in inc.checkpoint.signatures() {
                    let name = &line.name;
                    if roster.member(name).is_some()
                        && !done.contains(name)
                        && !writers.contains(name)
                    {
                        writers.push(name.clone());
                    }
                }
            }
            writers.retain(|n| !self.genesis.members.iter().any(|m| &m.name == n));
            if writers.is_empty() {
                break;
            }
        }
        Ok(Bundle {
            version: BUNDLE_VERSION,
            ring_id: self.genesis.ring_id(),
            query: BundleQuery { fingerprint: query, matched_by: kind },
            records,
            admissions,
        })
    }
}

/// Abuse contacts of the members named in a trace.
fn contacts(roster: &Roster, t: &Trace) -> BTreeMap<String, String> {
    let names = t
        .hops
        .iter()
        .map(|h| h.member.clone())
        .chain(t.links.iter().flat_map(|l| [l.from.clone(), l.to.clone()]));
    names.filter_map(|n| roster.member(&n).map(|m| (n, m.info.abuse.clone()))).collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP routes

type Ctx = State<Arc<Investigator>>;

/// The investigation routes (`/v1/trace`, `/v1/evidence`), merged into the node's router.
pub fn router(shared: Arc<Shared>) -> Router {
    let inv = Arc::new(Investigator::for_node(shared));
    Router::new()
        .route("/v1/trace", get(trace_route))
        .route("/v1/evidence", get(evidence_route))
        .with_state(inv)
}

fn answer_error(e: Error) -> Response {
    let status = match &e {
        Error::NotFound => StatusCode::NOT_FOUND,
        Error::NotCovered { .. } => StatusCode::CONFLICT,
        Error::NoAdmission(_) | Error::UnknownLog(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn bad(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": msg }))).into_response()
}

struct Params {
    mfp1: Option<Hash>,
    lite: Option<Hash>,
    body: Option<Hash>,
    parts: Vec<Hash>,
}

fn params(q: &HashMap<String, String>) -> Result<Params, String> {
    let hash = |k: &str| -> Result<Option<Hash>, String> {
        q.get(k)
            .map(|v| Hash::from_hex(v).ok_or_else(|| format!("{k} must be 64 hex digits")))
            .transpose()
    };
    let mut parts = Vec::new();
    if let Some(p) = q.get("parts") {
        for x in p.split(',').filter(|x| !x.is_empty()).take(ringlog_protocol::record::MAX_LIST) {
            parts.push(Hash::from_hex(x).ok_or_else(|| "parts must be hex hashes".to_string())?);
        }
    }
    let p = Params { mfp1: hash("mfp1")?, lite: hash("mfp1_lite")?, body: hash("body")?, parts };
    if p.mfp1.is_none() && p.lite.is_none() && p.body.is_none() {
        return Err("give mfp1 (and optionally mfp1_lite), mfp1_lite, or body".into());
    }
    Ok(p)
}

async fn trace_route(State(inv): Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = match params(&q) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    let r = tokio::task::spawn_blocking(move || -> Result<Response, Error> {
        if let (Some(b), None) = (p.body, p.mfp1) {
            return Ok(Json(inv.by_body(&b, &p.parts)?).into_response());
        }
        Ok(Json(inv.trace(p.mfp1.as_ref(), p.lite.as_ref())?).into_response())
    })
    .await;
    match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => answer_error(e),
        Err(e) => answer_error(Error::Proof(e.to_string())),
    }
}

async fn evidence_route(State(inv): Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = match params(&q) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    if p.mfp1.is_none() && p.lite.is_none() {
        return bad("give mfp1 (and optionally mfp1_lite) or mfp1_lite".into());
    }
    let r =
        tokio::task::spawn_blocking(move || inv.evidence(p.mfp1.as_ref(), p.lite.as_ref())).await;
    match r {
        // The canonical bytes, so the bundle hash is the same for everyone who fetches it.
        Ok(Ok(b)) => {
            ([(header::CONTENT_TYPE, "application/json")], b.to_canonical()).into_response()
        }
        Ok(Err(e)) => answer_error(e),
        Err(e) => answer_error(Error::Proof(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ringlog_protocol::record::{
        Admission, Entry, HopRecord, MemberInfo, NextHop, PrevHop, Verdicts,
    };
    use ringlog_protocol::SecretKey;

    #[test]
    fn hop_tag_is_read_without_decoding() {
        let k = SecretKey::from_seed([3; 32]);
        let hop = Body::Hop(HopRecord {
            time_ms: 1,
            mfp1: Hash([1; 32]),
            mfp1_lite: Hash([2; 32]),
            body: Hash([3; 32]),
            parts: vec![],
            prev: PrevHop::External { ip: [192, 0, 2, 1].into(), helo: "x".into() },
            next: NextHop::Local { domain: "d".into() },
            queue_id: "q".into(),
            rcpt_count: 1,
            verdicts: Verdicts::default(),
            transform: None,
        });
        let admit = Body::Admit(Admission {
            member: MemberInfo {
                name: "m".into(),
                log_key: k.public(),
                node_key: SecretKey::from_seed([4; 32]).public(),
                addrs: vec![],
                mail_hosts: vec![],
                domains: vec![],
                abuse: "a@m".into(),
            },
        });
        for index in [0u64, 250, 251, 70_000, 1 << 40] {
            let h = Entry { log: k.public(), index, body: hop.clone() }.sign(&k).unwrap();
            assert_eq!(is_hop_bytes(&h.encode()), Some(true), "{index}");
            let a = Entry { log: k.public(), index, body: admit.clone() }.sign(&k).unwrap();
            assert_eq!(is_hop_bytes(&a.encode()), Some(false), "{index}");
        }
    }
}
