//! The milter endpoint: Postfix (or Sendmail) hands every message it receives to the node, which
//! fingerprints the message as received, classifies the previous hop (ring member, authenticated
//! customer, external host), picks the next hop per recipient domain by ring routing, appends one
//! hop record per distinct next hop, and tags the message with an `X-Ringlog` header.
//!
//! The node never delays or loses mail: anything that goes wrong (oversized message, overloaded
//! or slow writer, protocol garbage, a dropped connection) is logged and the message accepted
//! without a record. Refusing is only done on purpose, for untrusted mail to non-local domains
//! when `refuse_untrusted_relay` is set.

use crate::hop::HopRequest;
use crate::node::Shared;
use bytes::{BufMut as _, BytesMut};
use miltr_common::actions::{Action, Continue, Replycode};
use miltr_common::commands::{Body, Connect, Header, Helo, Macro, Recipient};
use miltr_common::decoding::ClientCommand;
use miltr_common::encoding::{ServerMessage, Writable as _};
use miltr_common::modifications::headers::AddHeader;
use miltr_common::modifications::ModificationResponse;
use miltr_common::optneg::{Capability, MacroStage, OptNeg, Protocol};
use ringlog_protocol::fingerprint::{fingerprint, Fingerprint};
use ringlog_protocol::record::{Body as EntryBody, Trust, Verdicts};
use ringlog_protocol::roster::{normalize_domain, Roster, Route};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Most milter connections served at once; further ones are closed at once (Postfix then applies
/// `milter_default_action`).
pub const MAX_CONNECTIONS: usize = 512;
/// Largest milter packet accepted (Postfix sends body chunks of at most 64 KiB and header fields
/// of at most `header_size_limit`, 100 KiB by default).
pub const MAX_PACKET: usize = 1 << 20;
/// Most recipients remembered per message (further ones are counted, not routed).
pub const MAX_RCPTS: usize = 1000;
/// Longest string kept from the MTA (HELO, account, queue id, domain).
const MAX_FIELD: usize = 255;
/// A milter connection is dropped after this long, whatever it does.
const MAX_CONNECTION_TIME: Duration = Duration::from_secs(3600);
/// Messages up to this size are fingerprinted on the connection's task (at about 160 MiB/s,
/// 64 KiB take some 0.4 ms); larger ones on the blocking pool.
const INLINE_FINGERPRINT_BYTES: usize = 64 * 1024;
/// Spam score (times 1000) the milter adds for mail from outside the ring.
pub const UNTRUSTED_SCORE_MILLI: i32 = 5000;
/// Spam score (times 1000) the milter adds for mail from an expelled member.
pub const EXPELLED_SCORE_MILLI: i32 = 10000;

/// The protocol steps the milter asks Postfix to leave out (it needs neither DATA nor unknown
/// SMTP commands) and the ones it never answers, so that Postfix does not wait for a round trip
/// per header field, recipient or body chunk. Only the end of message is answered (and RCPT when
/// `refuse_untrusted_relay` may refuse a recipient). Steps the MTA does not offer are answered as
/// usual.
pub const QUIET_STEPS: Protocol = Protocol::NO_UNKNOWN
    .union(Protocol::NO_DATA)
    .union(Protocol::NR_CONNECT)
    .union(Protocol::NR_HELO)
    .union(Protocol::NR_MAIL)
    .union(Protocol::NR_DATA)
    .union(Protocol::NR_UNKNOWN)
    .union(Protocol::NR_HEADER)
    .union(Protocol::NR_END_OF_HEADER)
    .union(Protocol::NR_BODY);

/// The roster the milter decides by: the node's live roster, folded from genesis and every
/// governance entry held.
pub fn current_roster(shared: &Shared) -> Arc<Roster> {
    shared.roster.roster()
}

/// Binds the milter listener from `cfg.milter.listen` and serves it in a task.
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    let addr = shared.cfg.milter.listen.clone();
    for (domain, to) in &shared.cfg.milter.routes {
        crate::hop::parse_to(to).with_context(|| format!("milter route for {domain}"))?;
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding milter on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "milter listening");
    Ok(tokio::spawn(serve(shared, listener)))
}

/// Accepts milter connections until the task is aborted.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "milter accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Milter packets are small request/answer pairs: Nagle's algorithm would hold each
        // answer back until the MTA's delayed ACK (about 40 ms per message).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "milter: TCP_NODELAY not set");
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_CONNECTIONS, "milter connection refused: too many connections; the MTA applies its default action");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut session = Session::new(shared);
            match tokio::time::timeout(MAX_CONNECTION_TIME, converse(&mut session, stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "milter connection ended with an error; no record for an unfinished message")
                }
                Err(_) => tracing::warn!(%peer, "milter connection open too long; closed"),
            }
            if session.msg.started() {
                tracing::warn!(
                    %peer,
                    queue_id = %session.msg.queue_id,
                    "milter connection closed mid-message; no record written"
                );
            }
        });
    }
}

/// Why a milter connection ended before the MTA closed it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading or writing the socket failed (including a close in the middle of a packet).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A packet announced more than `MAX_PACKET` bytes.
    #[error("packet of {0} bytes is over the limit of {MAX_PACKET} bytes")]
    TooLarge(usize),
    /// A packet that is not a milter command, or a malformed one.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Appends one milter packet (length, code, payload) to `out`.
fn put(out: &mut BytesMut, m: &ServerMessage) {
    // The payload is at most a header field we built or an option reply: far below u32::MAX.
    let len = u32::try_from(m.len() + 1).unwrap_or(u32::MAX);
    out.put_u32(len);
    out.put_u8(m.code());
    m.write(out);
}

/// Serves one milter connection until the MTA quits or closes it. Commands whose step was
/// negotiated as "no reply" get none: the MTA is not waiting for one.
pub async fn converse<S: AsyncRead + AsyncWrite + Unpin + std::os::fd::AsFd>(
    session: &mut Session,
    stream: S,
) -> Result<(), ConnError> {
    let mut io = tokio::io::BufReader::with_capacity(64 * 1024, stream);
    let mut out = BytesMut::with_capacity(512);
    let mut quickack = true;
    loop {
        // The MTA now sends several commands in a row without waiting for an answer. Postfix
        // leaves Nagle's algorithm on, so each of its small packets waits for our ACK of the
        // previous one, and with nothing to answer the kernel delays that ACK (about 40 ms per
        // message). Quick-ACK mode is not sticky, so it is set again before every read that
        // must go to the socket (what is buffered was acknowledged with the read that
        // brought it).
        let mut arm = |io: &tokio::io::BufReader<S>, want: usize| {
            if quickack && io.buffer().len() < want {
                quickack = socket2::SockRef::from(io.get_ref()).set_tcp_quickack(true).is_ok();
            }
        };
        arm(&io, 4);
        let mut len = [0u8; 4];
        match io.read_exact(&mut len).await {
            Ok(_) => {}
            // Closed between packets: the MTA is done.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_PACKET {
            return Err(ConnError::TooLarge(n));
        }
        arm(&io, n);
        let mut packet = BytesMut::zeroed(n);
        io.read_exact(&mut packet).await?;
        let command =
            ClientCommand::parse(packet).map_err(|e| ConnError::Protocol(e.to_string()))?;
        let p = session.proto;
        let (action, quiet): (Option<Action>, bool) = match command {
            ClientCommand::OptNeg(theirs) => {
                let ours = session.negotiate(&theirs)?;
                put(&mut out, &ServerMessage::from(ours));
                (None, true)
            }
            ClientCommand::Macro(m) => {
                session.take_macros(&m);
                (None, true)
            }
            ClientCommand::Connect(c) => {
                (Some(session.connect(&c)), p.contains(Protocol::NR_CONNECT))
            }
            ClientCommand::Helo(h) => (Some(session.helo(&h)), p.contains(Protocol::NR_HELO)),
            ClientCommand::Mail(_) => (Some(session.mail()), p.contains(Protocol::NR_MAIL)),
            ClientCommand::Recipient(r) => {
                (Some(session.rcpt(&r)), p.contains(Protocol::NR_RECIPIENT))
            }
            ClientCommand::Data(_) => (Some(Continue.into()), p.contains(Protocol::NR_DATA)),
            ClientCommand::Header(h) => (Some(session.header(&h)), p.contains(Protocol::NR_HEADER)),
            ClientCommand::EndOfHeader(_) => {
                (Some(session.end_of_header()), p.contains(Protocol::NR_END_OF_HEADER))
            }
            ClientCommand::Body(b) => (Some(session.body(&b)), p.contains(Protocol::NR_BODY)),
            ClientCommand::Unknown(_) => (Some(Continue.into()), p.contains(Protocol::NR_UNKNOWN)),
            ClientCommand::EndOfBody(_) => {
                let mut resp = session.end_of_body().await;
                resp.filter_mods_by_caps(session.caps);
                let msgs: Vec<ServerMessage> = resp.into();
                for m in &msgs {
                    put(&mut out, m);
                }
                (None, true)
            }
            ClientCommand::Abort(_) => {
                session.abort();
                (None, true)
            }
            ClientCommand::Quit(_) => return Ok(()),
            ClientCommand::QuitNc(_) => {
                // The MTA keeps the connection for a new SMTP session.
                session.reset_connection();
                (None, true)
            }
        };
        if let Some(a) = action {
            if !quiet {
                put(&mut out, &ServerMessage::from(a));
            } else if !matches!(a, Action::Continue(_)) {
                // Cannot happen: a step that may refuse is never negotiated as "no reply".
                tracing::warn!("milter: a verdict for a step the MTA does not wait for is lost");
            }
        }
        if !out.is_empty() {
            io.get_mut().write_all(&out).await?;
            out.clear();
        }
    }
}

/// Why a message got no record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoRecord {
    /// The message was larger than `max_message_bytes`.
    #[error("message over the size limit of {0} bytes")]
    TooLarge(usize),
    /// The writer did not answer in time.
    #[error("the log writer did not answer within {0} ms")]
    Timeout(u64),
    /// The writer refused (overloaded, faulted, closed).
    #[error("the log writer refused: {0}")]
    Writer(String),
    /// A record could not be built (a bad hop from the MTA).
    #[error("bad hop: {0}")]
    Hop(String),
    /// No recipient was given.
    #[error("no recipients")]
    NoRecipients,
}

/// The previous hop as the milter classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prev {
    /// A SASL-authenticated customer (account name).
    Customer(String),
    /// A ring member's mail host.
    Member(String, Trust),
    /// A host outside the ring (or a connection without an address).
    External(Option<IpAddr>, String),
}

impl Prev {
    /// Classifies a connection: authenticated customer first, then the roster's mail hosts.
    pub fn classify(
        roster: &Roster,
        ip: Option<IpAddr>,
        helo: &str,
        auth: Option<&str>,
    ) -> (Prev, Trust) {
        if let Some(account) = auth.filter(|a| !a.trim().is_empty()) {
            return (Prev::Customer(account.trim().to_string()), Trust::Trusted);
        }
        if let Some(ip) = ip {
            let v = roster.trust(&ip.to_string());
            if let Some(name) = v.member {
                if v.trust == Trust::Trusted {
                    return (Prev::Member(name, v.trust), v.trust);
                }
                // An expelled member is recorded as the external host it now is.
                return (Prev::External(Some(ip), helo.to_string()), v.trust);
            }
        }
        (Prev::External(ip, helo.to_string()), Trust::Untrusted)
    }

    /// The `from` of a hop request; `None` for an external host without an IP address.
    pub fn hop_from(&self) -> Option<String> {
        match self {
            Prev::Customer(a) => Some(format!("customer:{a}")),
            Prev::Member(n, _) => Some(format!("member:{n}")),
            Prev::External(Some(ip), helo) => Some(format!("external:{ip},{helo}")),
            Prev::External(None, _) => None,
        }
    }

    /// Short form for the `X-Ringlog` header (no account names).
    pub fn label(&self) -> String {
        match self {
            Prev::Customer(_) => "customer".into(),
            Prev::Member(n, _) => format!("member:{n}"),
            Prev::External(Some(ip), _) => format!("external:{ip}"),
            Prev::External(None, _) => "external:unknown".into(),
        }
    }
}

/// The next hop (`member:NAME`, `local:DOMAIN`, `external:DOMAIN`) for a recipient domain: a
/// configured route for the domain if there is one, otherwise ring routing from member `me`.
pub fn next_hop(
    roster: &Roster,
    routes: &BTreeMap<String, String>,
    me: &str,
    domain: &str,
) -> String {
    let domain = normalize_domain(domain);
    if let Some(r) = routes.get(&domain) {
        return r.clone();
    }
    match roster.route(me, &domain) {
        Route::Local => format!("local:{domain}"),
        Route::Member(m) | Route::Upstream(m) => format!("member:{m}"),
        Route::Outside | Route::Unroutable => format!("external:{domain}"),
    }
}

/// The domain of an envelope address such as `<user@Example.ORG>`; empty when there is none.
pub fn rcpt_domain(addr: &str) -> String {
    let a = addr.trim().trim_start_matches('<').trim_end_matches('>');
    match a.rsplit_once('@') {
        Some((_, d)) => normalize_domain(d),
        None => String::new(),
    }
}

fn bounded(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn trust_word(t: Trust) -> &'static str {
    match t {
        Trust::Trusted => "trusted",
        Trust::Untrusted => "untrusted",
        Trust::Expelled => "expelled",
    }
}

/// One message under way.
#[derive(Default)]
struct Message {
    mail: bool,
    queue_id: String,
    auth: Option<String>,
    rcpts: Vec<String>,
    extra_rcpts: u32,
    raw: Vec<u8>,
    in_body: bool,
    size: usize,
    over: bool,
}

impl Message {
    fn started(&self) -> bool {
        self.mail || !self.raw.is_empty()
    }

    fn push(&mut self, limit: usize, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.over {
            return;
        }
        if self.size > limit {
            self.over = true;
            self.raw = Vec::new();
            return;
        }
        self.raw.extend_from_slice(bytes);
    }
}

/// One milter connection (one SMTP session).
pub struct Session {
    shared: Arc<Shared>,
    roster: Arc<Roster>,
    routes: BTreeMap<String, String>,
    ip: Option<IpAddr>,
    helo: String,
    leadspc: bool,
    /// The protocol steps agreed with the MTA (which ones get no answer).
    proto: Protocol,
    /// The actions agreed with the MTA.
    caps: Capability,
    /// How long the last message's fingerprint took.
    fp_micros: u64,
    msg: Message,
}

impl Session {
    /// A session for a new milter connection.
    pub fn new(shared: Arc<Shared>) -> Session {
        let roster = current_roster(&shared);
        let routes = shared
            .cfg
            .milter
            .routes
            .iter()
            .map(|(d, to)| (normalize_domain(d), to.clone()))
            .collect();
        Session {
            shared,
            roster,
            routes,
            ip: None,
            helo: String::new(),
            leadspc: false,
            proto: Protocol::empty(),
            caps: Capability::SMFIF_ADDHDRS,
            fp_micros: 0,
            msg: Message::default(),
        }
    }

    fn limit(&self) -> usize {
        self.shared.cfg.milter.max_message_bytes
    }

    fn take_macros(&mut self, m: &Macro) {
        for (k, v) in m.macros() {
            let v = String::from_utf8_lossy(v);
            match k {
                b"i" | b"{i}" if !v.trim().is_empty() => self.msg.queue_id = bounded(&v),
                b"{auth_authen}" => {
                    let v = bounded(&v);
                    self.msg.auth = (!v.is_empty()).then_some(v);
                }
                _ => {}
            }
        }
    }

    fn prev(&self) -> (Prev, Trust) {
        Prev::classify(&self.roster, self.ip, &self.helo, self.msg.auth.as_deref())
    }

    fn me(&self) -> &str {
        &self.shared.cfg.name
    }

    /// Writes the records for the finished message; returns the header value.
    async fn record(&mut self) -> Result<(Vec<u64>, Fingerprint), NoRecord> {
        let limit = self.limit();
        if self.msg.over {
            return Err(NoRecord::TooLarge(limit));
        }
        let raw = std::mem::take(&mut self.msg.raw);
        let t0 = std::time::Instant::now();
        // A small message is fingerprinted in place (22 µs for a typical one, at most about
        // 0.4 ms at the limit); handing it to
        // another thread would cost more than the work. Large ones go to the blocking pool so
        // that they do not hold up other connections.
        let fp = if raw.len() <= INLINE_FINGERPRINT_BYTES {
            fingerprint(&raw)
        } else {
            tokio::task::spawn_blocking(move || fingerprint(&raw))
                .await
                .map_err(|e| NoRecord::Hop(e.to_string()))?
        };
        self.fp_micros = t0.elapsed().as_micros() as u64;
        let (prev, trust) = self.prev();
        let from = prev.hop_from().ok_or_else(|| NoRecord::Hop("no client address".into()))?;
        // Distinct next hops and how many recipients each takes, in a stable order.
        let mut hops: BTreeMap<String, u32> = BTreeMap::new();
        for d in &self.msg.rcpts {
            *hops.entry(next_hop(&self.roster, &self.routes, self.me(), d)).or_default() += 1;
        }
        if self.msg.extra_rcpts > 0 {
            tracing::warn!(queue_id = %self.msg.queue_id, extra = self.msg.extra_rcpts, "recipients beyond the milter's limit are not routed");
        }
        if hops.is_empty() {
            return Err(NoRecord::NoRecipients);
        }
        let verdicts = Verdicts { trust: Some(trust), spam_score_milli: score(trust), virus: None };
        let now = crate::node::now_ms();
        let parts = if fp.leaves.len() > 1 {
            fp.leaves.iter().take(ringlog_protocol::record::MAX_LIST).copied().collect()
        } else {
            Vec::new()
        };
        let mut bodies = Vec::with_capacity(hops.len());
        for (to, count) in hops {
            let req = HopRequest {
                mfp1: fp.mfp1,
                mfp1_lite: Some(fp.mfp1_lite),
                body: Some(fp.body),
                parts: Vec::clone(&parts),
                from: from.clone(),
                to,
                queue_id: self.msg.queue_id.clone(),
                rcpt_count: count,
                verdicts: verdicts.clone(),
                transform_from: None,
                time_ms: None,
            };
            let rec = req
                .to_record(&self.shared.identity.commit_secret, now)
                .map_err(|e| NoRecord::Hop(e.to_string()))?;
            bodies.push(EntryBody::Hop(rec));
        }
        let ms = self.shared.cfg.milter.append_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(ms), self.shared.writer.append(bodies))
            .await
        {
            Ok(Ok(indexes)) => Ok((indexes, fp)),
            Ok(Err(e)) => Err(NoRecord::Writer(e.to_string())),
            Err(_) => Err(NoRecord::Timeout(ms)),
        }
    }
}

/// The spam score the milter adds for a trust verdict.
pub fn score(trust: Trust) -> Option<i32> {
    match trust {
        Trust::Trusted => None,
        Trust::Untrusted => Some(UNTRUSTED_SCORE_MILLI),
        Trust::Expelled => Some(EXPELLED_SCORE_MILLI),
    }
}

impl Session {
    /// Option negotiation: what we may do (add header fields), which steps we skip or leave
    /// unanswered, and the macros we need.
    fn negotiate(&mut self, theirs: &OptNeg) -> Result<OptNeg, ConnError> {
        let mut quiet = QUIET_STEPS;
        if !self.shared.cfg.milter.refuse_untrusted_relay {
            // RCPT is only answered when the answer may be a refusal.
            quiet |= Protocol::NR_RECIPIENT;
        }
        let mut ours = OptNeg {
            capabilities: Capability::SMFIF_ADDHDRS,
            protocol: Protocol::SMFIP_HDR_LEADSPC | quiet,
            ..OptNeg::default()
        };
        // Ask for what we need even where the MTA's own macro lists leave it out.
        ours.macro_stages.with_stage(MacroStage::MailFrom, &["i", "{auth_authen}"]);
        ours.macro_stages.with_stage(MacroStage::EndOfBody, &["i"]);
        // Keeps the steps both sides know (an older MTA just answers more often).
        let ours = ours.merge_compatible(theirs).map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.leadspc = ours.protocol.contains(Protocol::SMFIP_HDR_LEADSPC);
        self.proto = ours.protocol;
        self.caps = ours.capabilities;
        Ok(ours)
    }

    fn connect(&mut self, c: &Connect) -> Action {
        self.ip = c.address().trim().trim_start_matches('[').trim_end_matches(']').parse().ok();
        if self.ip.is_none() {
            tracing::debug!(address = %c.address(), "milter connection without an IP address");
        }
        Continue.into()
    }

    fn helo(&mut self, h: &Helo) -> Action {
        self.helo = bounded(&h.helo());
        Continue.into()
    }

    fn mail(&mut self) -> Action {
        // Macros for this stage arrived just before; keep them across the reset.
        let (queue_id, auth) = (self.msg.queue_id.clone(), self.msg.auth.clone());
        self.msg = Message { mail: true, queue_id, auth, ..Message::default() };
        // Each message is decided by the roster as it is now.
        self.roster = current_roster(&self.shared);
        Continue.into()
    }

    fn rcpt(&mut self, r: &Recipient) -> Action {
        let domain = bounded(&rcpt_domain(&r.recipient()));
        if self.shared.cfg.milter.refuse_untrusted_relay {
            let (prev, trust) = self.prev();
            let local =
                next_hop(&self.roster, &self.routes, self.me(), &domain).starts_with("local:");
            if trust != Trust::Trusted && !local {
                tracing::info!(prev = %prev.label(), %domain, "refused: untrusted sender may not relay to a non-local domain");
                return Replycode::new(
                    [5, 5, 0],
                    [5, 7, 1],
                    "ring policy: mail from outside the ring is delivered locally only",
                )
                .into();
            }
        }
        if self.msg.rcpts.len() < MAX_RCPTS {
            self.msg.rcpts.push(domain);
        } else {
            self.msg.extra_rcpts = self.msg.extra_rcpts.saturating_add(1);
        }
        Continue.into()
    }

    fn header(&mut self, h: &Header) -> Action {
        let mut buf = bytes::BytesMut::with_capacity(h.len());
        h.write(&mut buf);
        // name NUL value NUL
        let mut it = buf[..].split(|&b| b == 0);
        let name: &[u8] = it.next().unwrap_or_default();
        let value: &[u8] = it.next().unwrap_or_default();
        let mut line = Vec::with_capacity(name.len() + value.len() + 4);
        line.extend_from_slice(name);
        line.push(b':');
        if !self.leadspc {
            line.push(b' ');
        }
        // Postfix hands folded values with bare LF: write them as CRLF like the rest.
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                line.push(b'\r');
            }
            line.push(b);
            prev = b;
        }
        line.extend_from_slice(b"\r\n");
        let limit = self.limit();
        self.msg.push(limit, &line);
        Continue.into()
    }

    fn end_of_header(&mut self) -> Action {
        let limit = self.limit();
        self.msg.push(limit, b"\r\n");
        self.msg.in_body = true;
        Continue.into()
    }

    fn body(&mut self, b: &Body) -> Action {
        if !self.msg.in_body {
            let limit = self.limit();
            self.msg.push(limit, b"\r\n");
            self.msg.in_body = true;
        }
        let limit = self.limit();
        self.msg.push(limit, b.as_bytes());
        Continue.into()
    }

    async fn end_of_body(&mut self) -> ModificationResponse {
        let started = std::time::Instant::now();
        let (prev, trust) = self.prev();
        let me = self.me().to_string();
        let mut resp = ModificationResponse::builder();
        let value = match self.record().await {
            Ok((indexes, fp)) => {
                let idx: Vec<String> = indexes.iter().map(u64::to_string).collect();
                tracing::info!(
                    queue_id = %self.msg.queue_id,
                    mfp1 = %fp.mfp1.to_hex(),
                    prev = %prev.label(),
                    trust = trust_word(trust),
                    indexes = %idx.join(","),
                    micros = started.elapsed().as_micros() as u64,
                    fingerprint_micros = self.fp_micros,
                    "milter recorded message"
                );
                format!(
                    "{me}; index={}; mfp1={}; trust={}; prev={}",
                    idx.join(","),
                    fp.mfp1.to_hex(),
                    trust_word(trust),
                    prev.label()
                )
            }
            Err(e) => {
                tracing::warn!(
                    queue_id = %self.msg.queue_id,
                    size = self.msg.size,
                    prev = %prev.label(),
                    reason = %e,
                    "milter accepted message without a record"
                );
                format!(
                    "{me}; trust={}; prev={}; record=none ({e})",
                    trust_word(trust),
                    prev.label()
                )
            }
        };
        // With leading spaces negotiated the MTA writes the value right after the colon, so the
        // space a reader expects there is ours to send.
        let sp = if self.leadspc { " " } else { "" };
        resp.push(AddHeader::new(b"X-Ringlog", format!("{sp}{value}").as_bytes()));
        if let Some(s) = score(trust) {
            let v = format!("{sp}{}.{:03} ({})", s / 1000, s % 1000, trust_word(trust));
            resp.push(AddHeader::new(b"X-Ringlog-Spam-Score", v.as_bytes()));
        }
        let (queue_id, auth) = (String::new(), None);
        self.msg = Message { queue_id, auth, ..Message::default() };
        resp.contin()
    }

    fn abort(&mut self) {
        if self.msg.started() && !self.msg.raw.is_empty() {
            tracing::debug!(queue_id = %self.msg.queue_id, "milter message aborted by the MTA; no record");
        }
        self.msg = Message::default();
    }

    /// Forgets the SMTP session (the MTA reuses the connection for another one).
    fn reset_connection(&mut self) {
        self.abort();
        self.ip = None;
        self.helo.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: failing loudly is the point
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(rcpt_domain("<Bob@Example.ORG.>"), "example.org");
        assert_eq!(rcpt_domain("postmaster"), "");
        assert_eq!(bounded(&"é".repeat(300)).len(), 254);
    }

    #[test]
    fn size_limit_drops_buffer() {
        let mut m = Message::default();
        m.push(10, b"12345");
        m.push(10, b"123456");
        assert!(m.over && m.raw.is_empty());
        m.push(10, b"1");
        assert_eq!(m.size, 12);
    }
}
