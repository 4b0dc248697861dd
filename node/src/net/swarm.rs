//! The swarm task: owns the libp2p `Swarm`, carries out commands, turns swarm events into
//! `NetEvent`s, and keeps the members connected (allow-list, redial with backoff, bans).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    allow_block_list, connection_limits, identify, noise, ping, tcp, yamux, Multiaddr, PeerId,
    Swarm, SwarmBuilder,
};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::codec::{BytesCodec, PROTOCOL};
use super::{
    Command, Counters, Member, NetConfig, NetError, NetEvent, ResponseToken, Verdict,
    MAX_TOPIC_BYTES,
};

/// Room for the gossipsub envelope around the payload (signature, key, author, sequence number,
/// topic of at most `MAX_TOPIC_BYTES`, protobuf framing).
const GOSSIP_ENVELOPE_BYTES: usize = 1024;
/// Idle connections stay up this long: ring links are long-lived.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connection events kept while the event queue is full.
const BACKLOG_MAX: usize = 4096;
/// Outbound requests waiting for a response.
const MAX_PENDING_REQUESTS: usize = 1024;
/// Callers of `listen_addrs` waiting for the listeners to be bound.
const MAX_LISTEN_WAITERS: usize = 64;
/// Handshakes in progress from unknown peers (bounds the cost of non-members knocking).
const MAX_PENDING_INCOMING: u32 = 64;
/// Connections per peer (a simultaneous dial from both sides makes two).
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Concurrent request streams per connection.
const MAX_CONCURRENT_STREAMS: usize = 64;
/// Protocol version announced by identify.
const IDENTIFY_PROTOCOL: &str = "/ringlog/1.0.0";

type Gossipsub =
    gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>;

/// The combined behaviour. The allow-list comes first so that a refused connection is refused
/// before the other behaviours build handlers for it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: Gossipsub,
    rr: request_response::Behaviour<BytesCodec>,
}

/// Redial state of one member.
struct MemberState {
    addrs: Vec<Multiaddr>,
    backoff: Duration,
    next_dial: Instant,
    dialing: bool,
    connected_since: Option<Instant>,
}

pub(crate) struct Task {
    swarm: Swarm<Behaviour>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    counters: Arc<Counters>,
    backlog: VecDeque<NetEvent>,
    members: HashMap<PeerId, MemberState>,
    banned: HashMap<PeerId, Instant>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    listeners_pending: usize,
    max_bytes: usize,
    redial_min: Duration,
    redial_max: Duration,
    ban_duration: Duration,
}

fn build_swarm(cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let mut seed = cfg.node_seed;
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| NetError::InvalidKey(e.to_string()))?;
    let max = cfg.max_message_bytes;
    let topics: HashSet<TopicHash> =
        cfg.topics.iter().map(|t| IdentTopic::new(t.as_str()).hash()).collect();
    let request_timeout = cfg.request_timeout;

    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|key| {
            let gossip_cfg = gossipsub::ConfigBuilder::default()
                // Messages carry their author but no libp2p signature: every payload is signed
                // by its log's key already and checked by the replication layer, and only
                // members can connect (Noise authenticates each peer). Signing each message
                // again cost a signature per publish and a verification per copy received.
                .validation_mode(gossipsub::ValidationMode::Permissive)
                .validate_messages()
                .message_id_fn(|m: &gossipsub::Message| {
                    MessageId::new(ringlog_protocol::bytes::sha256(&[&m.data]).as_bytes())
                })
                .max_transmit_size(max.saturating_add(GOSSIP_ENVELOPE_BYTES))
                .build()?;
            let gossipsub = Gossipsub::new_with_subscription_filter(
                gossipsub::MessageAuthenticity::Author(key.public().to_peer_id()),
                gossip_cfg,
                gossipsub::WhitelistSubscriptionFilter(topics),
            )?;
            let rr = request_response::Behaviour::with_codec(
                BytesCodec::new(max),
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
            );
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
            Ok(Behaviour {
                allow: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_push_listen_addr_updates(false),
                ),
                ping: ping::Behaviour::default(),
                gossipsub,
                rr,
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

fn check_config(cfg: &NetConfig) -> Result<(), NetError> {
    if cfg.max_message_bytes == 0 || u32::try_from(cfg.max_message_bytes).is_err() {
        return Err(NetError::Config(format!(
            "max_message_bytes must be between 1 and {}",
            u32::MAX
        )));
    }
    if cfg.redial_min.is_zero() || cfg.redial_max < cfg.redial_min {
        return Err(NetError::Config("redial_min must be positive and at most redial_max".into()));
    }
    if cfg.request_timeout.is_zero() {
        return Err(NetError::Config("request_timeout must be positive".into()));
    }
    if let Some(t) = cfg.topics.iter().find(|t| t.len() > MAX_TOPIC_BYTES) {
        return Err(NetError::Config(format!(
            "topic of {} bytes exceeds {MAX_TOPIC_BYTES}",
            t.len()
        )));
    }
    Ok(())
}

fn map_outbound_failure(e: OutboundFailure) -> NetError {
    match e {
        OutboundFailure::DialFailure => NetError::Unreachable,
        OutboundFailure::Timeout => NetError::Timeout,
        OutboundFailure::ConnectionClosed => NetError::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => NetError::Unsupported,
        OutboundFailure::Io(e) => NetError::Io(e.to_string()),
    }
}

impl Task {
    pub(crate) fn new(
        cfg: NetConfig,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        counters: Arc<Counters>,
    ) -> Result<Self, NetError> {
        check_config(&cfg)?;
        let mut swarm = build_swarm(&cfg)?;
        for t in &cfg.topics {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(t.as_str()))
                .map_err(|e| NetError::Config(format!("cannot subscribe to {t}: {e}")))?;
        }
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        }
        tracing::info!(peer = %swarm.local_peer_id(), "network layer started");
        Ok(Self {
            swarm,
            cmds,
            events,
            counters,
            backlog: VecDeque::new(),
            members: HashMap::new(),
            banned: HashMap::new(),
            pending: HashMap::new(),
            listen_waiters: Vec::new(),
            listeners_pending: cfg.listen.len(),
            max_bytes: cfg.max_message_bytes,
            redial_min: cfg.redial_min,
            redial_max: cfg.redial_max,
            ban_duration: cfg.ban_duration,
        })
    }

    pub(crate) fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    pub(crate) async fn run(mut self) {
        let period = (self.redial_min / 2).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown_ack = None;
        // A second sender, so that a reservation does not borrow `self`.
        let events = self.events.clone();
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.cmds.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(ack)) => {
                        shutdown_ack = Some(ack);
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
                _ = tick.tick() => self.on_tick(),
                permit = events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.backlog.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => self.backlog.clear(),
                },
            }
        }
        let local = self.local_peer_id();
        // Dropping the swarm closes every connection and listener.
        drop(self);
        tracing::info!(peer = %local, "network layer stopped");
        if let Some(ack) = shutdown_ack {
            let _ = ack.send(());
        }
    }

    /// Queues a connection event in order, behind any backlog.
    fn emit_conn_event(&mut self, ev: NetEvent) {
        if self.backlog.is_empty() {
            if let Err(mpsc::error::TrySendError::Full(ev)) = self.events.try_send(ev) {
                self.backlog.push_back(ev);
            }
        } else if self.backlog.len() < BACKLOG_MAX {
            self.backlog.push_back(ev);
        } else {
            let n = Counters::bump(&self.counters.dropped_conn_events);
            tracing::warn!(dropped = n, "event backlog full: connection event dropped");
        }
    }

    /// Tries to hand an event to the consumer without waiting; gives it back if there is no room.
    fn try_emit(&mut self, ev: NetEvent) -> Option<NetEvent> {
        if !self.backlog.is_empty() {
            return Some(ev);
        }
        match self.events.try_send(ev) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev)) => {
                Some(ev)
            }
        }
    }

    fn is_allowed(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer) && !self.banned.contains_key(peer)
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::SetMembers(members, done) => {
                self.set_members(members);
                let _ = done.send(());
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::Validation { id, from, verdict } => {
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Reject => MessageAcceptance::Reject,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                };
                let known = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, acceptance);
                if !known {
                    tracing::debug!(%id, "validation for a message no longer in the cache");
                }
            }
            Command::Request { peer, data, reply } => {
                if data.len() > self.max_bytes {
                    let _ = reply
                        .send(Err(NetError::TooLarge { len: data.len(), max: self.max_bytes }));
                } else if self.pending.len() >= MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err(NetError::Busy));
                } else {
                    // Deliberately no membership check here: for a non-member or banned peer the
                    // allow-list refuses the dial and the request fails with `Unreachable`.
                    let id = self.swarm.behaviour_mut().rr.send_request(&peer, data);
                    self.pending.insert(id, reply);
                }
            }
            Command::Respond { channel, data } => {
                if data.len() > self.max_bytes {
                    tracing::warn!(
                        len = data.len(),
                        max = self.max_bytes,
                        "response over the size limit not sent"
                    );
                    return;
                }
                if self.swarm.behaviour_mut().rr.send_response(channel.0, data).is_err() {
                    tracing::debug!("response not sent: the request is gone");
                }
            }
            Command::Penalise { peer, why, done } => {
                self.penalise(peer, &why);
                let _ = done.send(());
            }
            Command::ListenAddrs(reply) => {
                let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                if addrs.is_empty()
                    && self.listeners_pending > 0
                    && self.listen_waiters.len() < MAX_LISTEN_WAITERS
                {
                    self.listen_waiters.push(reply);
                } else {
                    let _ = reply.send(addrs);
                }
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.swarm.connected_peers().cloned().collect());
            }
            // Handled by the loop.
            Command::Shutdown(_) => {}
        }
    }

    fn publish(&mut self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.max_bytes {
            return Err(NetError::TooLarge { len: data.len(), max: self.max_bytes });
        }
        match self.swarm.behaviour_mut().gossipsub.publish(IdentTopic::new(topic), data) {
            Ok(id) => {
                tracing::trace!(%id, topic, "published");
                Ok(())
            }
            // Same bytes, same id: already on its way.
            Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(NetError::NoPeers),
            Err(gossipsub::PublishError::MessageTooLarge) => {
                Err(NetError::TooLarge { len: 0, max: self.max_bytes })
            }
            Err(e) => Err(NetError::Publish(e.to_string())),
        }
    }

    fn set_members(&mut self, members: Vec<Member>) {
        let local = self.local_peer_id();
        let now = Instant::now();
        let new: HashMap<PeerId, Vec<Multiaddr>> =
            members.into_iter().filter(|m| m.peer != local).map(|m| (m.peer, m.addrs)).collect();

        let removed: Vec<PeerId> =
            self.members.keys().filter(|p| !new.contains_key(p)).copied().collect();
        for peer in removed {
            self.members.remove(&peer);
            // Closes its connections and refuses new ones.
            self.swarm.behaviour_mut().allow.disallow_peer(peer);
            tracing::info!(%peer, "member removed: disconnecting");
        }

        for (peer, addrs) in new {
            for a in &addrs {
                self.swarm.add_peer_address(peer, a.clone());
            }
            match self.members.get_mut(&peer) {
                Some(state) => {
                    if state.addrs != addrs {
                        state.addrs = addrs;
                        state.backoff = self.redial_min;
                        state.next_dial = now;
                    }
                }
                None => {
                    tracing::info!(%peer, "member added");
                    self.members.insert(
                        peer,
                        MemberState {
                            addrs,
                            backoff: self.redial_min,
                            next_dial: now,
                            dialing: false,
                            connected_since: None,
                        },
                    );
                    if !self.banned.contains_key(&peer) {
                        self.swarm.behaviour_mut().allow.allow_peer(peer);
                    }
                }
            }
        }
        self.dial_due(now);
    }

    fn penalise(&mut self, peer: PeerId, why: &str) {
        tracing::warn!(%peer, reason = why, ban = ?self.ban_duration, "peer penalised: disconnecting and refusing it");
        self.banned.insert(peer, Instant::now() + self.ban_duration);
        self.swarm.behaviour_mut().allow.disallow_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> =
            self.banned.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            self.banned.remove(&peer);
            if let Some(state) = self.members.get_mut(&peer) {
                tracing::info!(%peer, "ban over: member allowed again");
                state.next_dial = now;
                self.swarm.behaviour_mut().allow.allow_peer(peer);
            }
        }
        self.dial_due(now);
    }

    /// Dials every allowed member that is due, not connected and not being dialled.
    fn dial_due(&mut self, now: Instant) {
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .members
            .iter()
            .filter(|(p, s)| {
                !s.dialing
                    && !s.addrs.is_empty()
                    && s.next_dial <= now
                    && !self.banned.contains_key(p)
                    && !self.swarm.is_connected(p)
            })
            .map(|(p, s)| (*p, s.addrs.clone()))
            .collect();
        for (peer, addrs) in due {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%peer, "dialling member");
                    if let Some(s) = self.members.get_mut(&peer) {
                        s.dialing = true;
                    }
                }
                Err(e) => {
                    if matches!(e, DialError::Denied { .. }) {
                        Counters::bump(&self.counters.refused_outbound);
                    }
                    tracing::debug!(%peer, error = %e, "cannot dial member");
                    self.schedule_redial(peer, true);
                }
            }
        }
    }

    /// Schedules the next dial of a member after its backoff; doubles the backoff if `grow`.
    fn schedule_redial(&mut self, peer: PeerId, grow: bool) {
        let (min, max) = (self.redial_min, self.redial_max);
        if let Some(s) = self.members.get_mut(&peer) {
            s.dialing = false;
            // Jitter of up to a quarter keeps members from redialling in lock-step.
            let jitter = rand::thread_rng().gen_range(1.0..1.25);
            s.next_dial = Instant::now() + s.backoff.mul_f64(jitter).min(max);
            if grow {
                s.backoff = s.backoff.saturating_mul(2).clamp(min, max);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                if let Some(s) = self.members.get_mut(&peer_id) {
                    s.dialing = false;
                    s.connected_since.get_or_insert_with(Instant::now);
                }
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                    self.emit_conn_event(NetEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "disconnected");
                self.emit_conn_event(NetEvent::Disconnected(peer_id));
                let (min, max) = (self.redial_min, self.redial_max);
                if let Some(s) = self.members.get_mut(&peer_id) {
                    // A link that held for a while resets the backoff; a flapping one does not.
                    if s.connected_since.take().is_some_and(|t| t.elapsed() >= max) {
                        s.backoff = min;
                    }
                }
                if self.is_allowed(&peer_id) {
                    self.schedule_redial(peer_id, true);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let DialError::Denied { cause } = &error {
                    let n = Counters::bump(&self.counters.refused_outbound);
                    tracing::debug!(peer = ?peer_id, %cause, refused = n, "outbound connection refused");
                } else {
                    tracing::debug!(peer = ?peer_id, %error, "dial failed");
                }
                if let Some(peer) = peer_id {
                    if !self.swarm.is_connected(&peer) {
                        self.schedule_redial(peer, true);
                    } else if let Some(s) = self.members.get_mut(&peer) {
                        s.dialing = false;
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { peer_id, error, send_back_addr, .. } => {
                if let ListenError::Denied { cause } = &error {
                    let n = Counters::bump(&self.counters.refused_inbound);
                    tracing::debug!(peer = ?peer_id, addr = %send_back_addr, %cause, refused = n, "inbound connection refused");
                } else {
                    tracing::debug!(peer = ?peer_id, addr = %send_back_addr, %error, "inbound connection failed");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                for w in self.listen_waiters.drain(..) {
                    let _ = w.send(addrs.clone());
                }
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                tracing::warn!(?addresses, ?reason, "listener closed");
                self.listener_gone();
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            _ => {}
        }
    }

    fn listener_gone(&mut self) {
        self.listeners_pending = self.listeners_pending.saturating_sub(1);
        if self.listeners_pending == 0 || self.swarm.listeners().next().is_some() {
            let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
            for w in self.listen_waiters.drain(..) {
                let _ = w.send(addrs.clone());
            }
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer { peer_id, failed_messages }) => {
                tracing::debug!(peer = %peer_id, ?failed_messages, "slow gossip peer");
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Rr(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let ev = NetEvent::Request {
                            peer,
                            data: request,
                            channel: ResponseToken(channel),
                        };
                        if let Some(ev) = self.try_emit(ev) {
                            // Dropping the channel makes the request fail at the requester.
                            drop(ev);
                            let n = Counters::bump(&self.counters.dropped_requests);
                            if n.is_power_of_two() {
                                tracing::warn!(
                                    dropped = n,
                                    "event queue full: inbound request dropped"
                                );
                            }
                        }
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some(reply) = self.pending.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                }
            }
            BehaviourEvent::Rr(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "request failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(map_outbound_failure(error)));
                }
            }
            BehaviourEvent::Rr(request_response::Event::InboundFailure { peer, error, .. }) => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            BehaviourEvent::Rr(request_response::Event::ResponseSent { .. }) => {}
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
            }
            BehaviourEvent::Identify(_) | BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Allow(never) => match never {},
            BehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_gossip(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        let author = message.source;
        let verdict = if message.data.len() > self.max_bytes {
            Some("over the size limit")
        } else if !author.is_some_and(|a| self.members.contains_key(&a)) {
            Some("authored by a non-member")
        } else {
            None
        };
        let reject = |task: &mut Self, why: &str| {
            let n = Counters::bump(&task.counters.rejected_gossip);
            tracing::debug!(%id, peer = %from, reason = why, rejected = n, "gossip rejected");
            task.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                &id,
                &from,
                MessageAcceptance::Reject,
            );
        };
        let (Some(author), None) = (author, verdict) else {
            reject(self, verdict.unwrap_or("no author"));
            return;
        };
        let ev = NetEvent::Gossip {
            id: id.clone(),
            from,
            author,
            topic: message.topic.into_string(),
            data: message.data,
        };
        if self.try_emit(ev).is_some() {
            // Not the sender's fault: ignore (no forwarding, no penalty); anti-entropy repairs it.
            self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                &id,
                &from,
                MessageAcceptance::Ignore,
            );
            let n = Counters::bump(&self.counters.dropped_gossip);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "event queue full: gossip dropped");
            }
        }
    }
}
