//! The permissioned libp2p network layer: moves opaque bytes between ring members only.
//!
//! # What it does
//! - TCP + Noise + Yamux, identify, ping.
//! - Gossipsub with the author's peer id in each message but no libp2p signature
//!   (`MessageAuthenticity::Author`, `ValidationMode::Permissive`): the payloads are signed
//!   entries and checkpoints, checked by the caller, and only members get a connection at all.
//!   Content-addressed message ids (SHA-256 of the data) and manual validation: every
//!   [`NetEvent::Gossip`] must be answered with [`NetHandle::validation`]; nothing is forwarded
//!   before an `Accept`.
//! - Request-response over a length-prefixed bytes codec (`/ringlog/req/1`) capped at
//!   [`NetConfig::max_message_bytes`] in both directions, with a request timeout.
//! - An allow-list enforced at the connection by libp2p's `allow_block_list`: only the peers given
//!   to [`NetHandle::set_members`] may connect, inbound or outbound. A non-member is refused once
//!   the Noise handshake has told us who it is, before any protocol stream is opened. Members with
//!   addresses are dialled and redialled with exponential backoff while not connected.
//!
//! # The size limit is a ring parameter
//! Every member must use the same `max_message_bytes`. Our own publishes and responses over the
//! limit are refused locally, and gossip only forwards what was accepted, so honest members never
//! send an oversize frame. A frame over a receiver's gossipsub limit (payload + 1 KiB envelope) is
//! refused before decoding, and gossipsub then drops the stream it came on: gossip in flight on it
//! is lost until the sender opens a new stream (anti-entropy repairs the gap). A payload over the
//! limit that still fits the frame is rejected by this layer (`Reject`, [`NetStats::rejected_gossip`]).
//!
//! # What it leaves out
//! It knows nothing of logs, rosters or replication rules: the caller (the replication state
//! machine) decides what bytes mean, which gossip to accept, and who the members are.
//!
//! # Queues and back-pressure
//! Every channel is bounded. Commands wait for room (back-pressure on the caller). The swarm task
//! never waits on the event queue, so a slow consumer cannot stall the network:
//! - gossip that finds the event queue full is dropped, reported to gossipsub as `Ignore` (not
//!   forwarded, no penalty for the sender) and counted in [`NetStats::dropped_gossip`]; the
//!   anti-entropy path repairs what was missed;
//! - an inbound request that finds the queue full is dropped (the requester gets an error) and
//!   counted in [`NetStats::dropped_requests`];
//! - `Connected`/`Disconnected` are kept in order in a bounded backlog (4096) that is flushed as
//!   room appears; past that they are dropped and counted ([`NetStats::dropped_conn_events`]), and
//!   the consumer can resynchronise with [`NetHandle::connected`].
//!
//! While the backlog is not empty, gossip and requests are dropped too, so events are never
//! reordered.

mod codec;
mod swarm;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::request_response::ResponseChannel;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::gossipsub::MessageId;
pub use libp2p::{Multiaddr, PeerId};

/// Capacity of the command queue into the swarm task.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the event queue out of the swarm task.
const EVENT_QUEUE: usize = 1024;

/// How a node joins the network.
#[derive(Clone)]
pub struct NetConfig {
    /// Seed of the ed25519 node identity (libp2p `Keypair::ed25519_from_bytes`).
    pub node_seed: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Gossipsub topics to subscribe to; remote subscriptions to other topics are ignored.
    /// Each name must be at most [`MAX_TOPIC_BYTES`] bytes.
    pub topics: Vec<String>,
    /// The largest gossip payload and the largest request or response body, in bytes.
    pub max_message_bytes: usize,
    /// First delay before redialling a member that is not connected.
    pub redial_min: Duration,
    /// Cap of the exponential redial backoff. A connection that stayed up at least this long resets
    /// the backoff to `redial_min` when it closes.
    pub redial_max: Duration,
    /// How long an outbound request waits for its response.
    pub request_timeout: Duration,
    /// How long a peer given to [`NetHandle::penalise`] stays refused.
    pub ban_duration: Duration,
}

impl NetConfig {
    /// A configuration with the usual timings: 1 MiB messages, redial from 1 s up to 5 min,
    /// 30 s request timeout, 10 min bans. No listen address, no topic.
    pub fn new(node_seed: [u8; 32]) -> Self {
        Self {
            node_seed,
            listen: Vec::new(),
            topics: Vec::new(),
            max_message_bytes: 1 << 20,
            redial_min: Duration::from_secs(1),
            redial_max: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            ban_duration: Duration::from_secs(600),
        }
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret: never print it.
        f.debug_struct("NetConfig")
            .field("listen", &self.listen)
            .field("topics", &self.topics)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("redial_min", &self.redial_min)
            .field("redial_max", &self.redial_max)
            .field("request_timeout", &self.request_timeout)
            .field("ban_duration", &self.ban_duration)
            .finish_non_exhaustive()
    }
}

/// The longest topic name accepted by [`spawn`].
pub const MAX_TOPIC_BYTES: usize = 256;

/// A ring member's node: who it is and where to dial it (may be empty: it then dials us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node identity.
    pub peer: PeerId,
    /// Where it listens.
    pub addrs: Vec<Multiaddr>,
}

/// The answer to a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward it.
    Accept,
    /// Invalid: drop it and count it against the peer that sent it.
    Reject,
    /// Neither: drop it without penalty (e.g. already known, or not checkable now).
    Ignore,
}

/// The token to answer one inbound request with [`NetHandle::respond`]. Dropping it makes the
/// request fail on the requester's side.
#[derive(Debug)]
pub struct ResponseToken(ResponseChannel<Vec<u8>>);

/// Something the network tells its user.
#[derive(Debug)]
pub enum NetEvent {
    /// The first connection to this peer is up.
    Connected(PeerId),
    /// The last connection to this peer closed.
    Disconnected(PeerId),
    /// A gossip message; must be answered with [`NetHandle::validation`] (`id`, `from`).
    Gossip {
        /// Content-addressed id: SHA-256 of `data`.
        id: MessageId,
        /// The peer that forwarded it to us (the one a `Reject` counts against).
        from: PeerId,
        /// The peer that says it published it. Messages are not signed by their author (the
        /// payloads are), so this is only a claim made by a member: use `from` for blame.
        author: PeerId,
        /// The topic name.
        topic: String,
        /// The payload, at most `max_message_bytes`.
        data: Vec<u8>,
    },
    /// A request from a member; answer with [`NetHandle::respond`].
    Request {
        /// Who asked.
        peer: PeerId,
        /// The request body, at most `max_message_bytes`.
        data: Vec<u8>,
        /// Where the answer goes.
        channel: ResponseToken,
    },
}

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The node seed or a public key is not a valid ed25519 key.
    #[error("invalid ed25519 key: {0}")]
    InvalidKey(String),
    /// The configuration cannot work (e.g. zero maximum size, over-long topic name).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// Building the transport or behaviours failed.
    #[error("cannot build the network stack: {0}")]
    Build(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The payload is over `max_message_bytes`.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// No connected peer subscribes to the topic (yet); the message was not sent.
    #[error("no peer subscribed to the topic")]
    NoPeers,
    /// Gossipsub refused the message for another reason.
    #[error("cannot publish: {0}")]
    Publish(String),
    /// The peer could not be reached (not connected and the dial failed or was refused, e.g.
    /// because it is not a member or is banned).
    #[error("cannot reach the peer")]
    Unreachable,
    /// No response within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the response arrived, or the peer did not answer.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The peer does not speak the request protocol.
    #[error("the peer does not support the request protocol")]
    Unsupported,
    /// An I/O or framing error on the request stream (e.g. a response over the size limit).
    #[error("request stream failed: {0}")]
    Io(String),
    /// Too many requests are waiting for responses.
    #[error("too many requests in flight")]
    Busy,
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Shutdown,
}

/// Counters of what the network layer dropped or refused, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Gossip dropped because the event queue was full.
    pub dropped_gossip: u64,
    /// Inbound requests dropped because the event queue was full.
    pub dropped_requests: u64,
    /// Connection events dropped because the backlog was full.
    pub dropped_conn_events: u64,
    /// Gossip rejected by this layer: over the size limit or authored by a non-member.
    pub rejected_gossip: u64,
    /// Inbound connections refused by the allow-list.
    pub refused_inbound: u64,
    /// Outbound connections refused by the allow-list after the handshake, and redials this
    /// layer started that the allow-list refused. (The dial behind a request to a non-member is
    /// refused before it starts and is reported only as [`NetError::Unreachable`].)
    pub refused_outbound: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped_gossip: AtomicU64,
    pub(crate) dropped_requests: AtomicU64,
    pub(crate) dropped_conn_events: AtomicU64,
    pub(crate) rejected_gossip: AtomicU64,
    pub(crate) refused_inbound: AtomicU64,
    pub(crate) refused_outbound: AtomicU64,
}

impl Counters {
    /// Adds one; returns the new value.
    pub(crate) fn bump(c: &AtomicU64) -> u64 {
        c.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }
}

/// Commands into the swarm task.
pub(crate) enum Command {
    SetMembers(Vec<Member>, oneshot::Sender<()>),
    Publish { topic: String, data: Vec<u8>, reply: oneshot::Sender<Result<(), NetError>> },
    Validation { id: MessageId, from: PeerId, verdict: Verdict },
    Request { peer: PeerId, data: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, NetError>> },
    Respond { channel: ResponseToken, data: Vec<u8> },
    Penalise { peer: PeerId, why: String, done: oneshot::Sender<()> },
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Connected(oneshot::Sender<Vec<PeerId>>),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable handle on the running network task.
#[derive(Clone)]
pub struct NetHandle {
    cmds: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    local: PeerId,
    request_backstop: Duration,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle").field("local", &self.local).finish_non_exhaustive()
    }
}

/// The libp2p peer id of an ed25519 node public key (as found in the roster).
///
/// Fails if the bytes are not a valid ed25519 point.
pub fn peer_id_from_ed25519(pubkey: &[u8; 32]) -> Result<PeerId, NetError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(pubkey)
        .map_err(|e| NetError::InvalidKey(e.to_string()))?;
    Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// Starts the network task on the current tokio runtime and starts listening.
///
/// Must be called from within a tokio runtime. Returns the handle and the (bounded) event queue.
/// Dropping every handle, or calling [`NetHandle::shutdown`], stops the task.
pub fn spawn(cfg: NetConfig) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let (h, events, _task) = start(cfg)?;
    Ok((h, events))
}

/// [`spawn`], also returning the network task's handle (to watch it: the task ends only when
/// every handle is dropped or on [`NetHandle::shutdown`]).
pub fn start(
    cfg: NetConfig,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>, tokio::task::JoinHandle<()>), NetError> {
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let counters = Arc::new(Counters::default());
    let request_backstop =
        cfg.request_timeout.saturating_mul(2).saturating_add(Duration::from_secs(10));
    let task = swarm::Task::new(cfg, cmd_rx, ev_tx, Arc::clone(&counters))?;
    let local = task.local_peer_id();
    let task = tokio::spawn(task.run());
    Ok((NetHandle { cmds: cmd_tx, counters, local, request_backstop }, ev_rx, task))
}

impl NetHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// What was dropped or refused so far.
    pub fn stats(&self) -> NetStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            dropped_gossip: get(&c.dropped_gossip),
            dropped_requests: get(&c.dropped_requests),
            dropped_conn_events: get(&c.dropped_conn_events),
            rejected_gossip: get(&c.rejected_gossip),
            refused_inbound: get(&c.refused_inbound),
            refused_outbound: get(&c.refused_outbound),
        }
    }

    async fn send(&self, cmd: Command) -> bool {
        if self.cmds.send(cmd).await.is_err() {
            tracing::debug!("network task gone; command dropped");
            return false;
        }
        true
    }

    /// Replaces the allow-list: only these peers may connect (this node itself is skipped).
    /// Newly allowed members are dialled, removed ones disconnected and refused from now on.
    /// Returns once the new list is in force.
    pub async fn set_members(&self, members: Vec<Member>) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::SetMembers(members, tx)).await {
            let _ = rx.await;
        }
    }

    /// Publishes `data` on `topic`. Publishing bytes identical to a message seen in the last
    /// minute is a no-op (`Ok`): message ids are content addresses.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Publish { topic: topic.to_owned(), data, reply: tx };
        if !self.send(cmd).await {
            return Err(NetError::Shutdown);
        }
        rx.await.unwrap_or(Err(NetError::Shutdown))
    }

    /// Answers a [`NetEvent::Gossip`] (`id` and `from` as received).
    pub async fn validation(&self, id: MessageId, from: PeerId, verdict: Verdict) {
        self.send(Command::Validation { id, from, verdict }).await;
    }

    /// Sends a request to a member and waits for its response (bounded by the request timeout).
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Request { peer, data, reply: tx }).await {
            return Err(NetError::Shutdown);
        }
        // libp2p enforces the request timeout; this is only a backstop should a dial hang.
        match tokio::time::timeout(self.request_backstop, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetError::Shutdown),
            Err(_) => Err(NetError::Timeout),
        }
    }

    /// Answers a [`NetEvent::Request`]. A response over the size limit is not sent (the requester
    /// gets an error) and is logged.
    pub async fn respond(&self, channel: ResponseToken, data: Vec<u8>) {
        self.send(Command::Respond { channel, data }).await;
    }

    /// Disconnects `peer` and refuses it for the configured ban duration; logs `why`.
    pub async fn penalise(&self, peer: PeerId, why: &str) {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Penalise { peer, why: why.to_owned(), done: tx };
        if self.send(cmd).await {
            let _ = rx.await;
        }
    }

    /// The addresses this node listens on. Waits (briefly) for the listeners to be bound.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::ListenAddrs(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The peers with at least one open connection.
    pub async fn connected(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Connected(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the task: closes every connection and listener. Returns once they are closed.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).await {
            let _ = rx.await;
        }
    }
}
