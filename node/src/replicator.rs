//! Replication driver: runs the permissioned libp2p layer for the ring, feeds what arrives into
//! the replication state machine (`ringlog_protocol::replication::Replica`) and carries out what
//! it returns, publishes the own log's new entries and checkpoints, and serves peers' summary
//! and range requests from the store.
//!
//! # Tasks
//! - the *core* thread owns the state machine and does its store calls (appends, checkpoints,
//!   roots, comparisons) synchronously, off the async runtime; its input queue is bounded;
//! - a forwarder task moves network events into the core queue and answers requests from the
//!   store on blocking threads (at most [`MAX_SERVING`] at once; beyond that: "busy");
//! - a publisher task gossips the writer's new entries (in chunks under the size limit) and
//!   checkpoints;
//! - a ticker asks for summaries every `p2p.sync_interval_ms` (anti-entropy).
//!
//! The set of members comes from one function, [`members`] (the genesis for now; the roster
//! later).

use crate::net::{self, NetConfig, NetEvent, NetHandle, PeerId};
use crate::node::Shared;
use crate::store::{LogNodes, Store};
use crate::writer::LogEvent;
use anyhow::Context as _;
use ringlog_protocol::checkpoint::SignedCheckpoint;
use ringlog_protocol::merkle::{self, Frontier};
use ringlog_protocol::record::MemberInfo;
use ringlog_protocol::replication::{
    self as rep, Action, Event, Gossip, Head, LogState, Replica, Request, Response, Topic,
};
use ringlog_protocol::LogId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// Capacity of the core thread's input queue.
const CORE_QUEUE: usize = 1024;
/// Most inputs taken in one burst before the wait for more (see [`REPLICA_LINGER`]).
const CORE_BURST: usize = 64;
/// How long the publisher waits for more of the own log's commits before it gossips the
/// entries it has (one message for all of them).
const PUBLISH_LINGER: Duration = Duration::from_millis(50);
/// Entries gathered that end the wait at once.
const PUBLISH_LINGER_MAX: usize = 4096;
/// How long verified entries from peers may wait for more before they are written (one sync
/// for all of them). Replicated entries are acknowledged to nobody; this only delays when a
/// peer's entry becomes visible here.
const REPLICA_LINGER: Duration = Duration::from_millis(5);
/// Entries waiting that end the wait at once.
const CORE_LINGER_MAX: usize = 1024;
/// Requests from peers served at once.
pub const MAX_SERVING: usize = 4;
/// Conflicts kept in the store's meta area (the first ones; later ones are only logged).
const MAX_STORED_CONFLICTS: u64 = 1000;

/// The members of the ring: the single source of membership for replication. The roster's
/// members in good standing (at first the genesis members; admissions and expulsions in the
/// logs change it). Expelled members' node keys are refused and their logs no longer followed.
pub fn members(shared: &Shared) -> Vec<MemberInfo> {
    // witness: members proven to equivocate are excluded (see witness.rs).
    crate::witness::without_equivocators(&*shared.store, members_of(&shared.roster.roster()))
}

fn members_of(roster: &ringlog_protocol::roster::Roster) -> Vec<MemberInfo> {
    roster
        .members()
        .filter(|m| matches!(m.status, ringlog_protocol::roster::Status::Active))
        .map(|m| m.info.clone())
        .collect()
}

/// The network's allow-list for a member set (everyone but this node).
fn net_members(all: &[MemberInfo], me: &ringlog_protocol::PublicKey) -> Vec<net::Member> {
    let mut out = Vec::new();
    for m in all.iter().filter(|m| m.node_key != *me) {
        let peer = match net::peer_id_from_ed25519(&m.node_key.0 .0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(member = %m.name, error = %e, "member node key unusable; skipped");
                continue;
            }
        };
        let addrs = m.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        out.push(net::Member { peer, addrs });
    }
    out
}

fn rep_members(shared: &Shared, all: &[MemberInfo]) -> Vec<rep::Member> {
    all.iter()
        .map(|m| rep::Member { log: m.log_key, origin: shared.genesis.origin(&m.name) })
        .collect()
}

/// Gossip topic names of a ring: (entries, checkpoints).
pub fn topics(ring_tag: &str) -> (String, String) {
    (format!("ringlog/{ring_tag}/entries"), format!("ringlog/{ring_tag}/checkpoints"))
}

enum Input {
    Net(NetEvent),
    Members(Vec<rep::Member>),
    Done(Event<PeerId>),
    Tick,
}

/// Starts replication for a node; returns its tasks (the core runs on its own thread and ends
/// when they do).
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<Vec<(&'static str, JoinHandle<()>)>> {
    let (entries_topic, cp_topic) = topics(&shared.genesis.ring_tag());
    let mut cfg = NetConfig::new(shared.identity.node_key.seed());
    for a in &shared.cfg.p2p.listen {
        cfg.listen.push(a.parse().with_context(|| format!("p2p listen address {a:?}"))?);
    }
    cfg.topics = vec![entries_topic.clone(), cp_topic.clone()];
    cfg.redial_min = Duration::from_millis(500);
    cfg.redial_max = Duration::from_secs(30);
    cfg.request_timeout = Duration::from_secs(20);
    let (net, events, swarm) = net::start(cfg).context("starting the p2p network")?;

    let me = shared.identity.node_key.public();
    let all = members(&shared);
    net.set_members(net_members(&all, &me)).await;

    let own = shared.identity.log_id();
    let followed = rep_members(&shared, &all);
    let mut replica: Replica<PeerId> = Replica::new(own, &followed);
    let store = shared.store.clone();
    let logs = replica.logs();
    let states = tokio::task::spawn_blocking(move || {
        logs.into_iter()
            .map(|log| load_state(&*store, &log).map(|s| (log, s)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    for (log, st) in states {
        replica.load(&log, st);
    }

    let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
    let mut tasks = vec![("swarm", swarm)];
    tasks.push((
        "gossip receiver",
        tokio::spawn(forward(shared.clone(), net.clone(), events, core_tx.clone())),
    ));
    tasks.push((
        "publisher",
        tokio::spawn(publish(shared.clone(), net.clone(), entries_topic.clone(), cp_topic.clone())),
    ));
    {
        // Roster changes: new allow-list, new set of followed logs.
        let (tx, sh, net) = (core_tx.clone(), shared.clone(), net.clone());
        let mut watch = shared.roster.subscribe();
        tasks.push((
            "roster watcher",
            tokio::spawn(async move {
                while watch.changed().await.is_ok() {
                    let roster = watch.borrow_and_update().clone();
                    // witness: members proven to equivocate stay excluded.
                    let all = crate::witness::without_equivocators(&*sh.store, members_of(&roster));
                    net.set_members(net_members(&all, &me)).await;
                    if tx.send(Input::Members(rep_members(&sh, &all))).await.is_err() {
                        break;
                    }
                }
            }),
        ));
    }
    {
        let tx = core_tx.clone();
        let every = Duration::from_millis(shared.cfg.p2p.sync_interval_ms.max(50));
        tasks.push((
            "sync ticker",
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    if tx.is_closed() {
                        break;
                    }
                    let _ = tx.try_send(Input::Tick);
                }
            }),
        ));
    }
    // witness: cosigning and equivocation handling run on the core thread (witness.rs).
    let witness = crate::witness::Witness::new(
        shared.clone(),
        net.clone(),
        tokio::runtime::Handle::current(),
        cp_topic.clone(),
    );
    let core = Core {
        shared: shared.clone(),
        witness,
        net,
        replica,
        rt: tokio::runtime::Handle::current(),
        tx: core_tx.downgrade(),
        entries_topic,
        refused_seen: 0,
        last_metrics: Instant::now(),
        deferred: Vec::new(),
    };
    drop(core_tx);
    // If the thread panics the node stops (supervise.rs): without it the node would serve stale
    // copies and witness nothing, while looking alive.
    crate::supervise::thread("replicator", shared.fatal.clone(), move || core.run(core_rx))
        .context("starting the replicator thread")?;
    tracing::info!(member = %shared.cfg.name, "replication started");
    Ok(tasks)
}

/// Reads a log's size, frontier and latest checkpoint from the store.
fn load_state(store: &dyn Store, log: &LogId) -> Result<LogState, crate::store::Error> {
    let size = store.size(log)?;
    let frontier = Frontier::from_source(&LogNodes::new(store, *log), size)?;
    let checkpoint = store
        .latest_checkpoint(log)?
        .and_then(|(_, note)| SignedCheckpoint::parse(&note).ok())
        .map(|c| c.checkpoint().clone());
    Ok(LogState { size, frontier, checkpoint })
}

/// Moves network events to the core; serves requests from the store.
async fn forward(
    shared: Arc<Shared>,
    net: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
    core: mpsc::Sender<Input>,
) {
    let serving = Arc::new(Semaphore::new(MAX_SERVING));
    while let Some(ev) = events.recv().await {
        match ev {
            NetEvent::Request { peer, data, channel } => {
                let Ok(permit) = serving.clone().try_acquire_owned() else {
                    net.respond(channel, Response::Refused("busy".into()).encode()).await;
                    continue;
                };
                let (sh, net) = (shared.clone(), net.clone());
                tokio::spawn(async move {
                    let resp = tokio::task::spawn_blocking(move || serve(&*sh.store, &data))
                        .await
                        .unwrap_or_else(|e| Response::Refused(format!("internal error: {e}")));
                    tracing::trace!(%peer, "request served");
                    net.respond(channel, resp.encode()).await;
                    drop(permit);
                });
            }
            other => {
                if core.send(Input::Net(other)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Answers one request from the store.
pub fn serve(store: &dyn Store, data: &[u8]) -> Response {
    match Request::decode(data) {
        Err(e) => Response::Refused(format!("bad request: {e}")),
        Ok(Request::Summary) => match summary(store) {
            Ok(heads) => Response::Summary(heads),
            Err(e) => Response::Refused(format!("store error: {e}")),
        },
        Ok(Request::Range { log, start, end }) => match range(store, &log, start, end) {
            Ok(r) => r,
            Err(e) => Response::Refused(format!("store error: {e}")),
        },
    }
}

fn summary(store: &dyn Store) -> Result<Vec<Head>, crate::store::Error> {
    let mut heads = Vec::new();
    for log in store.logs()?.into_iter().take(rep::MAX_HEADS) {
        let size = store.size(&log)?;
        let root = merkle::root(&LogNodes::new(store, log), size).map_err(|e| match e {
            merkle::ProofError::Source(e) => e,
            other => crate::store::Error::Corrupt(other.to_string()),
        })?;
        let checkpoint = store.latest_checkpoint(&log)?.map(|(_, n)| n);
        heads.push(Head { log, size, root, checkpoint });
    }
    Ok(heads)
}

fn range(
    store: &dyn Store,
    log: &LogId,
    start: u64,
    end: u64,
) -> Result<Response, crate::store::Error> {
    let end = end.min(start.saturating_add(rep::MAX_RANGE_ENTRIES));
    let mut entries = store.entries(log, start, end)?;
    let mut bytes = 0usize;
    let mut keep = entries.len();
    for (i, e) in entries.iter().enumerate() {
        bytes += e.len() + 8;
        if bytes > rep::MAX_RANGE_BYTES && i > 0 {
            keep = i;
            break;
        }
    }
    entries.truncate(keep);
    let last = start + entries.len() as u64;
    let checkpoint = if entries.is_empty() {
        None
    } else if let Some(note) = store.checkpoint(log, last)? {
        Some(note)
    } else {
        store
            .checkpoints(log)?
            .into_iter()
            .rev()
            .find(|(s, _)| *s > start && *s <= last)
            .map(|(_, n)| n)
    };
    Ok(Response::Range { entries, checkpoint })
}

/// Gossips the own log's new entries and checkpoints.
async fn publish(shared: Arc<Shared>, net: NetHandle, entries_topic: String, cp_topic: String) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = shared.writer.subscribe();
    let log = shared.writer.log;
    let mut published = 0u64;
    loop {
        let mut next = match rx.recv().await {
            Ok(ev) => Some(ev),
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "publisher lagged; peers will pull the rest");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        while let Some(ev) = next.take() {
            match ev {
                LogEvent::Appended(first, entries) => {
                    let (all, after) = gather(&mut rx, first, &entries).await;
                    next = after;
                    for g in Gossip::chunks(log, first, &all) {
                        published +=
                            u64::from(send(&net, &entries_topic, g.encode(), "entries").await);
                    }
                }
                LogEvent::Checkpoint(cp) => {
                    let g = Gossip::Checkpoint { log, note: cp.to_text() };
                    published += u64::from(send(&net, &cp_topic, g.encode(), "checkpoint").await);
                }
            }
        }
        set_gauge(&shared, "ringlog_gossip_published_total", published);
    }
}

/// Publishes one gossip message; whether it went out (no peers is not an error).
async fn send(net: &NetHandle, topic: &str, data: Vec<u8>, what: &str) -> bool {
    match net.publish(topic, data).await {
        Ok(()) => true,
        Err(net::NetError::NoPeers) => false,
        Err(e) => {
            tracing::debug!(error = %e, "{what} not published");
            false
        }
    }
}

/// Entries committed one by one (a message each from the milter) go out together: waits up to
/// [`PUBLISH_LINGER`] for the next contiguous commits after `entries` (from index `first`), so
/// that peers receive, check and store several entries per gossip message. Returns the entries
/// gathered and the event that ended the wait, if it is one to handle next (a checkpoint, or
/// entries that do not follow on because the publisher lagged).
async fn gather(
    rx: &mut tokio::sync::broadcast::Receiver<LogEvent>,
    first: u64,
    entries: &[Vec<u8>],
) -> (Vec<Vec<u8>>, Option<LogEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut all: Vec<Vec<u8>> = entries.to_vec();
    let until = tokio::time::Instant::now() + PUBLISH_LINGER;
    while all.len() < PUBLISH_LINGER_MAX {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(LogEvent::Appended(f, more))) if f == first + all.len() as u64 => {
                all.extend(more.iter().cloned());
            }
            Ok(Ok(other)) => return (all, Some(other)),
            Ok(Err(RecvError::Lagged(n))) => {
                tracing::debug!(missed = n, "publisher lagged; peers will pull the rest");
                break;
            }
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    (all, None)
}

fn set_gauge(shared: &Shared, name: &str, v: u64) {
    if let Ok(mut g) = shared.gauges.write() {
        g.insert(name.to_string(), v);
    }
}

/// An event waiting to be handled, with the gossip message it answers, if any.
type Pending = (Event<PeerId>, Option<(net::MessageId, PeerId)>);

struct Core {
    shared: Arc<Shared>,
    witness: crate::witness::Witness,
    net: NetHandle,
    replica: Replica<PeerId>,
    rt: tokio::runtime::Handle,
    tx: mpsc::WeakSender<Input>,
    entries_topic: String,
    refused_seen: u64,
    last_metrics: Instant,
    /// Verified entries waiting to be written, coalesced per log (one durable write per burst).
    deferred: Vec<(LogId, Vec<ringlog_protocol::record::SignedEntry>)>,
}

impl Core {
    fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(first) = rx.blocking_recv() {
            // Handle what is already waiting too (bounded), then write once.
            let mut burst = vec![first];
            while burst.len() < CORE_BURST {
                match rx.try_recv() {
                    Ok(i) => burst.push(i),
                    Err(_) => break,
                }
            }
            for input in burst {
                self.input(input);
            }
            // Group commit: entries arrive one gossip message at a time; wait a little for
            // more before the durable write, so that one sync covers several of them. Anything
            // that reads the store writes the deferred entries first.
            let until = Instant::now() + REPLICA_LINGER;
            while self.deferred.iter().map(|(_, e)| e.len()).sum::<usize>() < CORE_LINGER_MAX {
                let left = until.saturating_duration_since(Instant::now());
                if self.deferred.is_empty() || left.is_zero() {
                    break;
                }
                // The timer is made inside the runtime (this thread is not one of its own).
                match self.rt.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(Some(input)) => self.input(input),
                    Ok(None) | Err(_) => break,
                }
            }
            self.flush();
            if self.last_metrics.elapsed() >= Duration::from_millis(200) {
                self.metrics();
            }
        }
        self.flush();
        tracing::debug!("replicator stopped");
    }

    /// Writes the deferred appends, in order.
    fn flush(&mut self) {
        let mut failed: Vec<LogId> = Vec::new();
        for (log, entries) in std::mem::take(&mut self.deferred) {
            // Later runs of a log whose append failed cannot apply: the reload reset it.
            if !failed.contains(&log) && !self.append(log, entries) {
                failed.push(log);
            }
        }
    }

    /// Writes one run of verified entries; false (and the log's state reloaded) if it failed.
    fn append(&mut self, log: LogId, entries: Vec<ringlog_protocol::record::SignedEntry>) -> bool {
        let store = &*self.shared.store;
        let n = entries.len();
        if let Err(e) = store.append(&log, &entries) {
            tracing::error!(log = %self.shared.name_of(&log), error = %e, entries = n, "replicated append failed; reloading the log state");
            self.shared.fatal.on_store_error(&e);
            match load_state(store, &log) {
                Ok(st) => self.replica.load(&log, st),
                Err(e) => tracing::error!(error = %e, "cannot reload the log state"),
            }
            false
        } else {
            // Governance entries in replicated logs change the roster.
            let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.encode()).collect();
            self.shared.on_appended(&log, &encoded);
            true
        }
    }

    fn input(&mut self, input: Input) {
        {
            let mut pending = VecDeque::new();
            let mut observe = None;
            match input {
                Input::Tick => {
                    pending.push_back((Event::Tick, None));
                    self.tick();
                }
                Input::Done(ev) => pending.push_back((ev, None)),
                Input::Net(NetEvent::Connected(p)) => {
                    pending.push_back((Event::Connected(p), None))
                }
                Input::Net(NetEvent::Disconnected(p)) => {
                    pending.push_back((Event::Disconnected(p), None))
                }
                Input::Net(NetEvent::Gossip { id, from, topic, data, .. }) => {
                    let topic = if topic == self.entries_topic {
                        Topic::Entries
                    } else {
                        Topic::Checkpoints
                    };
                    // witness: proofs are the witness's; checkpoint notes are met with what
                    // is stored after replication has handled them.
                    if topic == Topic::Checkpoints
                        && crate::witness::Witness::is_witness_message(&data)
                    {
                        let o = self.witness.on_message(from, &data);
                        if let Some(v) = o.verdict {
                            self.rt.block_on(self.net.validation(id, from, v));
                        }
                        self.witness_outcome(o);
                        return;
                    }
                    if topic == Topic::Checkpoints {
                        if let Ok(rep::Gossip::Checkpoint { log, note }) =
                            rep::Gossip::decode(&data)
                        {
                            observe = Some((log, note));
                        }
                    }
                    pending.push_back((Event::Gossip { from, topic, data }, Some((id, from))));
                }
                Input::Net(NetEvent::Request { .. }) => {}
                Input::Members(members) => {
                    let before = self.replica.logs();
                    self.replica.set_members(&members);
                    for log in self.replica.logs().into_iter().filter(|l| !before.contains(l)) {
                        match load_state(&*self.shared.store, &log) {
                            Ok(st) => self.replica.load(&log, st),
                            Err(e) => tracing::error!(error = %e, "cannot load a new member's log"),
                        }
                    }
                    tracing::info!(
                        logs = self.replica.logs().len(),
                        "roster changed: members updated"
                    );
                }
            }
            while let Some((ev, gossip)) = pending.pop_front() {
                for action in self.replica.handle(ev) {
                    self.carry_out(action, gossip.as_ref(), &mut pending);
                }
            }
            if let Some((log, note)) = observe {
                self.flush();
                let o = self.witness.observe(&log, &note);
                self.witness_outcome(o);
            }
        }
    }

    fn carry_out(
        &mut self,
        action: Action<PeerId>,
        gossip: Option<&(net::MessageId, PeerId)>,
        pending: &mut VecDeque<Pending>,
    ) {
        let shared = self.shared.clone();
        let store = &*shared.store;
        match action {
            Action::Verdict(v) => {
                if let Some((id, from)) = gossip {
                    let v = match v {
                        rep::Verdict::Accept => net::Verdict::Accept,
                        rep::Verdict::Reject => net::Verdict::Reject,
                        rep::Verdict::Ignore => net::Verdict::Ignore,
                    };
                    self.rt.block_on(self.net.validation(id.clone(), *from, v));
                }
            }
            Action::Request { peer, request } => {
                let Some(tx) = self.tx.upgrade() else { return };
                let net = self.net.clone();
                self.rt.spawn(async move {
                    let result =
                        net.request(peer, request.encode()).await.map_err(|e| e.to_string());
                    let _ = tx.send(Input::Done(Event::Response { peer, request, result })).await;
                });
            }
            Action::Append { log, entries } => match self.deferred.last_mut() {
                Some((l, run)) if *l == log => run.extend(entries),
                _ => self.deferred.push((log, entries)),
            },
            Action::StoreCheckpoint { log, size, note } => {
                self.flush();
                // witness: merge with the stored note, then cosign and gossip.
                self.witness.store_checked(&log, size, &note);
            }
            Action::RootAt { log, size, note } => {
                self.flush();
                match merkle::root(&LogNodes::new(store, log), size) {
                    Ok(root) => pending.push_back((Event::RootAt { log, note, root }, None)),
                    Err(e) => {
                        tracing::warn!(log = %self.shared.name_of(&log), size, error = %e, "cannot recompute root")
                    }
                }
            }
            Action::Compare { log, first, received } => {
                self.flush();
                let end = first + received.len() as u64;
                match store.entries(&log, first, end) {
                    Ok(stored) => {
                        pending.push_back((Event::Stored { log, first, received, stored }, None))
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read entries to compare"),
                }
            }
            Action::Penalise { peer, why } => {
                tracing::warn!(%peer, reason = %why, "rejected data from peer; penalising it");
                self.rt.block_on(self.net.penalise(peer, &why));
            }
            Action::Conflict(c) => {
                tracing::error!(
                    log = %self.shared.name_of(&c.log),
                    kind = ?c.kind,
                    at = c.at,
                    "conflict: two objects signed by this log cannot both be true; log frozen"
                );
                if self.replica.stats.conflicts <= MAX_STORED_CONFLICTS {
                    let key = format!("conflict/{}/{}", c.log.to_hex(), c.at);
                    let value = serde_json::to_vec(&c).unwrap_or_default();
                    if let Err(e) = store.put_meta(&key, &value) {
                        tracing::warn!(error = %e, "conflict not recorded in the store");
                    }
                }
                // witness: a self-contained proof, if the conflict makes one.
                let o = self.witness.on_conflict(&c);
                self.witness_outcome(o);
            }
        }
    }

    /// witness: excludes a member newly proven to equivocate (log no longer followed, node
    /// refused).
    fn witness_outcome(&mut self, o: crate::witness::Outcome) {
        let Some(bad) = o.equivocator else { return };
        let me = self.shared.identity.node_key.public();
        let all = members(&self.shared);
        self.rt.block_on(self.net.set_members(net_members(&all, &me)));
        self.replica.set_members(&rep_members(&self.shared, &all));
        if let Some(m) = self.shared.roster.roster().by_log_key(&bad) {
            if let Ok(peer) = net::peer_id_from_ed25519(&m.info.node_key.0 .0) {
                self.rt.block_on(self.net.penalise(peer, "equivocation"));
            }
        }
    }

    fn tick(&mut self) {
        let refused = self.net.stats().refused_inbound;
        if refused > self.refused_seen {
            tracing::warn!(
                new = refused - self.refused_seen,
                total = refused,
                "refused inbound connections from peers not in the roster"
            );
            self.refused_seen = refused;
        }
        self.metrics();
    }

    fn metrics(&mut self) {
        self.last_metrics = Instant::now();
        let s = self.replica.stats;
        let ns = self.net.stats();
        let values = [
            ("ringlog_peers_connected", self.replica.n_connected() as u64),
            ("ringlog_replicated_entries_total", s.replicated),
            ("ringlog_rejected_total", s.rejected),
            ("ringlog_conflicts_total", s.conflicts),
            ("ringlog_replicated_checkpoints_total", s.checkpoints),
            ("ringlog_replication_behind_entries", self.replica.behind()),
            ("ringlog_p2p_refused_inbound_total", ns.refused_inbound),
            ("ringlog_p2p_refused_outbound_total", ns.refused_outbound),
            ("ringlog_p2p_dropped_gossip_total", ns.dropped_gossip),
            ("ringlog_p2p_rejected_gossip_total", ns.rejected_gossip),
            // witness
            ("ringlog_witness_cosigned_total", self.witness.stats.cosigned),
            ("ringlog_witness_merged_total", self.witness.stats.merged),
            ("ringlog_witness_faults_total", self.witness.stats.faults),
            ("ringlog_equivocation_proofs_total", self.witness.stats.proofs),
        ];
        if let Ok(mut g) = self.shared.gauges.write() {
            for (k, v) in values {
                g.insert(k.to_string(), v);
            }
        }
    }
}
