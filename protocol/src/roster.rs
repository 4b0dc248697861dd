//! The roster: the ring's membership, folded deterministically from genesis and the governance
//! entries of every log, with the trust verdict and ring routing derived from it.
//!
//! Every governance fact has one rightful writer (docs/GOVERNANCE.md): a sponsor admits, expels
//! and reinstates its own downstream members; a member updates its own hosts, domains and
//! contact; a peering agreement is appended by one party with the other's countersignature; a
//! decision about a backbone member carries a quorum of backbone signatures. [`Roster::apply`]
//! checks one entry against these rules and either applies it or refuses it with a
//! [`RosterError`], leaving the roster unchanged. [`Roster::fold`] derives the roster from a set of
//! logs in a fixed order that does not depend on how or when the logs arrived.

use crate::bytes::Hash;
use crate::genesis::Genesis;
use crate::keys::{LogId, PublicKey};
use crate::record::{
    Admission, Body, Cosign, Expulsion, MemberInfo, MemberUpdate, Peering, Reinstatement,
    SignedEntry, Trust,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How many decisions ahead of the ring's current backbone decision number a quorum may be
/// signed for and still wait in [`Roster::fold`] for its turn (rather than being refused at once).
pub const MAX_DECISIONS_AHEAD: u32 = 8;

/// Whether a member is in good standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Status {
    /// In good standing.
    Active,
    /// Expelled: its node key is refused, its mail untrusted, its entries from `from_index` on
    /// not accepted.
    Expelled {
        /// The member that wrote the expulsion.
        by: String,
        /// Where the expulsion entry is: (log, index).
        at: (LogId, u64),
        /// First index of the expelled member's log that is no longer accepted.
        from_index: u64,
        /// SHA-256 of the evidence bundles cited.
        evidence: Vec<Hash>,
    },
}

/// One member as the roster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberState {
    /// Keys, hosts, domains and contact, as admitted and since updated by the member.
    pub info: MemberInfo,
    /// The member that admitted it; `None` for a backbone member.
    pub sponsor: Option<String>,
    /// Founding member listed in the genesis document.
    pub backbone: bool,
    /// Good standing or expelled.
    pub status: Status,
    /// Peering partners (kept symmetric).
    pub peers: BTreeSet<String>,
    /// Per partner, how many peering starts and ends the pair has made (kept symmetric);
    /// countersignatures commit to it ([`peering_statement`]).
    pub peer_changes: BTreeMap<String, u32>,
    /// Ranges `[from, to)` of its log refused by earlier expulsions that a reinstatement ended.
    pub gaps: Vec<(u64, u64)>,
    /// Number of expulsions and reinstatements of this member so far.
    pub decisions: u32,
    /// Index of the last governance entry of its log that was applied.
    pub last_index: Option<u64>,
}

impl MemberState {
    /// In good standing.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    /// Whether the entry at `index` of this member's log is accepted.
    pub fn accepts(&self, index: u64) -> bool {
        if self.gaps.iter().any(|&(from, to)| (from..to).contains(&index)) {
            return false;
        }
        match &self.status {
            Status::Active => true,
            Status::Expelled { from_index, .. } => index < *from_index,
        }
    }

    /// Refused ranges of this member's log: `(from, Some(to))` for ended expulsions and
    /// `(from, None)` for the current one.
    pub fn cuts(&self) -> Vec<(u64, Option<u64>)> {
        let mut out: Vec<(u64, Option<u64>)> =
            self.gaps.iter().map(|&(from, to)| (from, Some(to))).collect();
        if let Status::Expelled { from_index, .. } = &self.status {
            out.push((*from_index, None));
        }
        out
    }
}

/// Why a governance entry was refused. Nothing in the roster changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "error")]
pub enum RosterError {
    /// The entry's signature does not verify under its log key.
    #[error("bad entry signature")]
    BadSignature,
    /// The entry was handed in under another log than the one it names.
    #[error("entry belongs to log {found}, not to log {expected}")]
    Misfiled {
        /// The log it was filed under.
        expected: LogId,
        /// The log it names.
        found: LogId,
    },
    /// Two different entries at one index of one log (equivocation): neither is used.
    #[error("two different entries at index {index}")]
    Equivocation {
        /// The index.
        index: u64,
    },
    /// The log is not the log of any member (yet).
    #[error("log {0} belongs to no member")]
    UnknownLog(LogId),
    /// The writer is expelled and the entry is at or after its expulsion point (a later
    /// reinstatement may still accept it).
    #[error("{member} is expelled: its entry {index} is not accepted")]
    NotAccepted {
        /// The writer.
        member: String,
        /// The entry's index.
        index: u64,
    },
    /// The entry lies in a range of the writer's log refused by an expulsion that a
    /// reinstatement has since ended.
    #[error("entry {index} of {member} was written while it was expelled")]
    InGap {
        /// The writer.
        member: String,
        /// The entry's index.
        index: u64,
    },
    /// Not after the last governance entry applied from this log (a replay, or out of order).
    #[error("entry {index} of {member} is not after its last applied entry {last}")]
    Stale {
        /// The writer.
        member: String,
        /// The entry's index.
        index: u64,
        /// The last applied index.
        last: u64,
    },
    /// An admission of a name that is already a member.
    #[error("name {0} is already a member")]
    NameTaken(String),
    /// An admission of a key that is already a member's log or node key.
    #[error("key {key} is already in use by {holder}")]
    KeyTaken {
        /// The key.
        key: PublicKey,
        /// The member holding it.
        holder: String,
    },
    /// An admission whose log key equals its node key.
    #[error("log key and node key of {0} are the same")]
    SameKeys(String),
    /// A mail host claimed by another member.
    #[error("mail host {host} belongs to {holder}")]
    HostTaken {
        /// The host (normalised).
        host: String,
        /// The member holding it.
        holder: String,
    },
    /// A domain claimed by another member.
    #[error("domain {domain} is served by {holder}")]
    DomainTaken {
        /// The domain (normalised).
        domain: String,
        /// The member holding it.
        holder: String,
    },
    /// A peering entry that names someone else as the writing party.
    #[error("peering names {named} as its writer, but {writer} wrote it")]
    WrongPeerWriter {
        /// The name in the entry.
        named: String,
        /// The actual writer.
        writer: String,
    },
    /// A peering of a member with itself.
    #[error("{0} cannot peer with itself")]
    SelfPeering(String),
    /// The peering partner is not a member (yet).
    #[error("peering partner {0} is not a member")]
    UnknownPartner(String),
    /// The partner's countersignature does not verify over the peering statement.
    #[error("countersignature of {partner} does not verify")]
    BadCountersignature {
        /// The partner.
        partner: String,
    },
    /// A countersignature for a later change of this pair's peering than the current one.
    #[error("countersignature of {b} is for peering change {signed} with {a}, not {current}")]
    PeeringOutOfTurn {
        /// The writer.
        a: String,
        /// The partner.
        b: String,
        /// The change number the partner signed.
        signed: u32,
        /// The pair's current change number.
        current: u32,
    },
    /// A peering start for a pair that already peers.
    #[error("{a} and {b} already peer")]
    AlreadyPeered {
        /// The writer.
        a: String,
        /// The partner.
        b: String,
    },
    /// A peering end for a pair that does not peer.
    #[error("{a} and {b} do not peer")]
    NotPeered {
        /// The writer.
        a: String,
        /// The partner.
        b: String,
    },
    /// An expulsion or reinstatement of a name that is no member (yet).
    #[error("{0} is not a member")]
    UnknownMember(String),
    /// An expulsion or reinstatement of a downstream member by someone other than its sponsor.
    #[error("{writer} is not the sponsor of {member}")]
    NotSponsor {
        /// The writer.
        writer: String,
        /// The target.
        member: String,
    },
    /// An expulsion that cites no evidence bundle.
    #[error("expulsion of {0} cites no evidence")]
    NoEvidence(String),
    /// A decision about a backbone member written by a member outside the backbone.
    #[error("{writer} is not a backbone member and cannot carry a decision about {member}")]
    NotBackboneWriter {
        /// The writer.
        writer: String,
        /// The target.
        member: String,
    },
    /// A decision about a backbone member without enough valid backbone signatures.
    #[error("decision about {member} has {have} valid backbone signatures, needs {need}")]
    QuorumNotMet {
        /// The target.
        member: String,
        /// Distinct valid signatures (writer included).
        have: u32,
        /// The genesis quorum.
        need: u32,
    },
    /// A quorum signed for a later backbone decision number than the ring's current one.
    #[error("decision about {member} is signed as backbone decision {signed}, not {current}")]
    OutOfTurn {
        /// The target.
        member: String,
        /// The decision number the quorum signed.
        signed: u32,
        /// The ring's current backbone decision number.
        current: u32,
    },
    /// An expulsion of a member already expelled.
    #[error("{0} is already expelled")]
    AlreadyExpelled(String),
    /// A reinstatement of a member in good standing.
    #[error("{0} is not expelled")]
    NotExpelled(String),
    /// A reinstatement that would accept entries the expulsion refused.
    #[error("reinstatement from index {from_index} is before the expulsion point {expelled_from}")]
    BadResumeIndex {
        /// The reinstatement's index.
        from_index: u64,
        /// The expulsion's index.
        expelled_from: u64,
    },
}

impl RosterError {
    /// Whether the entry may become acceptable once other logs' entries are applied: the fold
    /// holds such an entry (and the rest of its log) back instead of refusing it.
    pub fn may_succeed_later(&self) -> bool {
        matches!(
            self,
            RosterError::UnknownLog(_)
                | RosterError::NotAccepted { .. }
                | RosterError::UnknownPartner(_)
                | RosterError::UnknownMember(_)
                | RosterError::HostTaken { .. }
                | RosterError::DomainTaken { .. }
                | RosterError::PeeringOutOfTurn { .. }
                | RosterError::OutOfTurn { .. }
        )
    }
}

/// The trust verdict for a connecting host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustVerdict {
    /// Trusted member, untrusted (outside the ring) or expelled.
    pub trust: Trust,
    /// The member whose mail host it is.
    pub member: Option<String>,
}

/// Next hop by ring policy for a recipient domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "route", content = "member")]
pub enum Route {
    /// We serve the domain: deliver locally.
    Local,
    /// Hand it to this member: our customer (or the customer on the way down to the server), a
    /// peering partner, or for a backbone member the backbone member the server sits under.
    Member(String),
    /// Hand it to our sponsor.
    Upstream(String),
    /// No member in good standing serves the domain: it is not ring mail.
    Outside,
    /// A member serves it but there is no ring path: we are not an active member, or the server
    /// or the next hop is expelled.
    Unroutable,
}

/// The ring's membership state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Roster {
    ring_id: Hash,
    quorum: u32,
    backbone_decisions: u32,
    members: BTreeMap<String, MemberState>,
    #[serde(skip)]
    by_log: BTreeMap<LogId, String>,
    #[serde(skip)]
    by_node: BTreeMap<PublicKey, String>,
    #[serde(skip)]
    hosts: BTreeMap<String, String>,
    #[serde(skip)]
    domains: BTreeMap<String, String>,
}

/// Normal form of a mail host for matching: an IP address in its canonical text, a host name in
/// lower case without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let bare = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.to_string();
    }
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Normal form of a mail domain: lower case, no trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn hex_list(hashes: &[Hash]) -> String {
    hashes.iter().map(Hash::to_hex).collect::<Vec<_>>().join(",")
}

impl Expulsion {
    /// The bytes a backbone quorum signs to expel backbone member `member`: the ring, the
    /// member, the ring's backbone decision number ([`Roster::backbone_decisions`]), the
    /// expulsion point, the evidence hashes and the reason.
    pub fn statement(
        ring: &Hash,
        member: &str,
        decision: u32,
        from_index: u64,
        evidence: &[Hash],
        reason: &str,
    ) -> Vec<u8> {
        format!(
            "ringlog/expel/v1\n{}\n{member}\n{decision}\n{from_index}\n{}\n{reason}\n",
            ring.to_hex(),
            hex_list(evidence)
        )
        .into_bytes()
    }
}

impl Reinstatement {
    /// The bytes a backbone quorum signs to reinstate backbone member `member` (decision number
    /// as for [`Expulsion::statement`]).
    pub fn statement(
        ring: &Hash,
        member: &str,
        decision: u32,
        from_index: u64,
        reason: &str,
    ) -> Vec<u8> {
        format!(
            "ringlog/reinstate/v1\n{}\n{member}\n{decision}\n{from_index}\n{reason}\n",
            ring.to_hex()
        )
        .into_bytes()
    }
}

/// The bytes a peering partner countersigns: [`Peering::statement`] followed by the pair's
/// change number ([`MemberState::peer_changes`]) and a newline, so a countersignature is good
/// for one start or end only and the changes of a pair apply in the order both parties meant.
pub fn peering_statement(ring: &Hash, a: &str, b: &str, end: bool, change: u32) -> Vec<u8> {
    let mut out = Peering::statement(ring, a, b, end);
    out.extend_from_slice(format!("{change}\n").as_bytes());
    out
}

fn expel_statement(ring: &Hash, x: &Expulsion, decision: u32) -> Vec<u8> {
    Expulsion::statement(ring, &x.member, decision, x.from_index, &x.evidence, &x.reason)
}

fn reinstate_statement(ring: &Hash, r: &Reinstatement, decision: u32) -> Vec<u8> {
    Reinstatement::statement(ring, &r.member, decision, r.from_index, &r.reason)
}

/// The governance entries of one log, prepared for the fold.
type Prepared<'a> = BTreeMap<LogId, Vec<&'a SignedEntry>>;
/// Refused ranges per log, as [`MemberState::cuts`].
type Cuts = BTreeMap<LogId, Vec<(u64, Option<u64>)>>;
/// A refused entry: its log, its index, why.
pub type Refusal = (LogId, u64, RosterError);

impl Roster {
    /// The roster a ring starts with: its backbone members, in good standing. The genesis should
    /// have passed [`Genesis::check`]; of duplicate names or keys the first counts.
    pub fn from_genesis(g: &Genesis) -> Roster {
        let mut r = Roster {
            ring_id: g.ring_id(),
            quorum: g.backbone_quorum,
            backbone_decisions: 0,
            members: BTreeMap::new(),
            by_log: BTreeMap::new(),
            by_node: BTreeMap::new(),
            hosts: BTreeMap::new(),
            domains: BTreeMap::new(),
        };
        for m in &g.members {
            if r.members.contains_key(&m.name) || r.key_holder(&m.log_key).is_some() {
                continue;
            }
            r.insert(m.clone(), None);
        }
        r
    }

    /// The ring id (hash of the genesis).
    pub fn ring_id(&self) -> &Hash {
        &self.ring_id
    }

    /// Backbone signatures a decision about a backbone member needs.
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// Decisions about backbone members taken so far. They form one chain across all logs: a
    /// quorum signs the statement for the current number, so each decision applies once, in
    /// the order the quorum meant, and a signer's standing is that after the previous one.
    pub fn backbone_decisions(&self) -> u32 {
        self.backbone_decisions
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&MemberState> {
        self.members.get(name)
    }

    /// The member whose log key is `log`.
    pub fn by_log_key(&self, log: &LogId) -> Option<&MemberState> {
        self.by_log.get(log).and_then(|n| self.members.get(n))
    }

    /// The member whose libp2p node key is `key`.
    pub fn by_node_key(&self, key: &PublicKey) -> Option<&MemberState> {
        self.by_node.get(key).and_then(|n| self.members.get(n))
    }

    /// All members, in name order.
    pub fn members(&self) -> impl Iterator<Item = &MemberState> {
        self.members.values()
    }

    /// Whether the entry at `index` of `log` is accepted: false for logs of no member and for an
    /// expelled member's entries at or after its expulsion point.
    pub fn accepts_entry(&self, log: &LogId, index: u64) -> bool {
        self.by_log_key(log).is_some_and(|m| m.accepts(index))
    }

    /// Refused ranges of every member's log.
    pub fn cuts(&self) -> BTreeMap<LogId, Vec<(u64, Option<u64>)>> {
        self.members
            .values()
            .map(|m| (m.info.log_key, m.cuts()))
            .filter(|(_, c)| !c.is_empty())
            .collect()
    }

    /// The statement a backbone quorum must sign now for `body` (an expulsion or
    /// reinstatement of a backbone member); `None` for other entries.
    pub fn decision_statement(&self, body: &Body) -> Option<Vec<u8>> {
        let d = self.backbone_decisions;
        match body {
            Body::Expel(x) => Some(expel_statement(&self.ring_id, x, d)),
            Body::Reinstate(r) => Some(reinstate_statement(&self.ring_id, r, d)),
            _ => None,
        }
    }

    /// Trust verdict for a connecting host (an IP address or host name), matched against the
    /// members' mail hosts.
    pub fn trust(&self, host: &str) -> TrustVerdict {
        match self.hosts.get(&normalize_host(host)).and_then(|n| self.members.get(n)) {
            Some(m) => TrustVerdict {
                trust: if m.is_active() { Trust::Trusted } else { Trust::Expelled },
                member: Some(m.info.name.clone()),
            },
            None => TrustVerdict { trust: Trust::Untrusted, member: None },
        }
    }

    /// The member that serves `domain`, whatever its standing.
    pub fn server_of(&self, domain: &str) -> Option<&MemberState> {
        self.domains.get(&normalize_domain(domain)).and_then(|n| self.members.get(n))
    }

    /// `name`, its sponsor, its sponsor's sponsor, ... up to a backbone member.
    fn chain(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut cur = self.members.get_key_value(name);
        // Sponsors are admitted before their members, so the chain has no cycle; the bound
        // guards the invariant anyway.
        while let Some((n, m)) = cur {
            if out.len() > self.members.len() {
                break;
            }
            out.push(n.as_str());
            cur = m.sponsor.as_ref().and_then(|s| self.members.get_key_value(s));
        }
        out
    }

    fn active(&self, name: &str) -> bool {
        self.members.get(name).is_some_and(MemberState::is_active)
    }

    /// Next hop by ring policy for mail from member `me` to `domain`: local if `me` serves it;
    /// down the sponsor tree if the server sits under `me`; the peering partner it sits under;
    /// otherwise the sponsor, or for a backbone member the backbone member it sits under.
    pub fn route(&self, me: &str, domain: &str) -> Route {
        let Some(mine) = self.members.get(me) else { return Route::Unroutable };
        let Some(server) = self.server_of(domain) else { return Route::Outside };
        if !mine.is_active() || !server.is_active() {
            return Route::Unroutable;
        }
        let server = server.info.name.as_str();
        if server == me {
            return Route::Local;
        }
        let chain = self.chain(server);
        let hop = |n: &str| {
            if self.active(n) {
                Route::Member(n.to_string())
            } else {
                Route::Unroutable
            }
        };
        if let Some(k) = chain.iter().position(|&n| n == me) {
            // `me` is an ancestor of the server (k > 0): the next hop is my child on the way.
            return match k.checked_sub(1).and_then(|i| chain.get(i)) {
                Some(child) => hop(child),
                None => Route::Unroutable,
            };
        }
        if let Some(p) = chain.iter().find(|&&n| mine.peers.contains(n) && self.active(n)) {
            return Route::Member((*p).to_string());
        }
        match &mine.sponsor {
            Some(s) if self.active(s) => Route::Upstream(s.clone()),
            Some(_) => Route::Unroutable,
            None => match chain.last() {
                Some(top) => hop(top),
                None => Route::Unroutable,
            },
        }
    }

    /// The network allow-list: (name, node key, listen addresses) of every active member.
    pub fn allowed_node_keys(&self) -> Vec<(String, PublicKey, Vec<String>)> {
        self.members
            .values()
            .filter(|m| m.is_active())
            .map(|m| (m.info.name.clone(), m.info.node_key, m.info.addrs.clone()))
            .collect()
    }

    fn key_holder(&self, key: &PublicKey) -> Option<&String> {
        self.by_log.get(key).or_else(|| self.by_node.get(key))
    }

    fn insert(&mut self, info: MemberInfo, sponsor: Option<String>) {
        let name = info.name.clone();
        self.by_log.insert(info.log_key, name.clone());
        self.by_node.insert(info.node_key, name.clone());
        for h in &info.mail_hosts {
            self.hosts.entry(normalize_host(h)).or_insert_with(|| name.clone());
        }
        for d in &info.domains {
            self.domains.entry(normalize_domain(d)).or_insert_with(|| name.clone());
        }
        let backbone = sponsor.is_none();
        self.members.insert(
            name,
            MemberState {
                info,
                sponsor,
                backbone,
                status: Status::Active,
                peers: BTreeSet::new(),
                peer_changes: BTreeMap::new(),
                gaps: Vec::new(),
                decisions: 0,
                last_index: None,
            },
        );
    }

    /// Checks that `hosts` and `domains` are free or already `name`'s.
    fn check_claims(
        &self,
        name: &str,
        hosts: &[String],
        domains: &[String],
    ) -> Result<(), RosterError> {
        for h in hosts {
            let h = normalize_host(h);
            if let Some(holder) = self.hosts.get(&h).filter(|x| *x != name) {
                return Err(RosterError::HostTaken { host: h, holder: holder.clone() });
            }
        }
        for d in domains {
            let d = normalize_domain(d);
            if let Some(holder) = self.domains.get(&d).filter(|x| *x != name) {
                return Err(RosterError::DomainTaken { domain: d, holder: holder.clone() });
            }
        }
        Ok(())
    }

    /// Validates one governance entry (signature, writer, rules) and applies it. On `Err` the
    /// roster is unchanged. Hop entries are accepted as no-ops.
    ///
    /// Entries of one log must come in index order. An expulsion whose point lies before entries
    /// of the expelled member that were already applied does not undo them: a node that may
    /// receive entries out of order derives the roster with [`Roster::fold`].
    pub fn apply(&mut self, e: &SignedEntry) -> Result<(), RosterError> {
        if matches!(e.entry.body, Body::Hop(_)) {
            return Ok(());
        }
        e.verify().map_err(|_| RosterError::BadSignature)?;
        self.apply_verified(e)
    }

    fn apply_verified(&mut self, e: &SignedEntry) -> Result<(), RosterError> {
        let (log, index) = (e.entry.log, e.entry.index);
        let writer = self.by_log.get(&log).cloned().ok_or(RosterError::UnknownLog(log))?;
        let Some(w) = self.members.get(&writer) else { return Err(RosterError::UnknownLog(log)) };
        if w.gaps.iter().any(|&(from, to)| (from..to).contains(&index)) {
            return Err(RosterError::InGap { member: writer, index });
        }
        if !w.accepts(index) {
            return Err(RosterError::NotAccepted { member: writer, index });
        }
        if let Some(last) = w.last_index.filter(|&l| index <= l) {
            return Err(RosterError::Stale { member: writer, index, last });
        }
        match &e.entry.body {
            Body::Hop(_) => return Ok(()),
            Body::Admit(a) => self.admit(&writer, a)?,
            Body::Update(u) => self.update(&writer, u)?,
            Body::Peer(p) => self.peer(&writer, p)?,
            Body::Expel(x) => self.expel(&writer, (log, index), x)?,
            Body::Reinstate(r) => self.reinstate(&writer, r)?,
        }
        if let Some(w) = self.members.get_mut(&writer) {
            w.last_index = Some(index);
        }
        Ok(())
    }

    fn admit(&mut self, writer: &str, a: &Admission) -> Result<(), RosterError> {
        let m = &a.member;
        if self.members.contains_key(&m.name) {
            return Err(RosterError::NameTaken(m.name.clone()));
        }
        if m.log_key == m.node_key {
            return Err(RosterError::SameKeys(m.name.clone()));
        }
        for key in [&m.log_key, &m.node_key] {
            if let Some(holder) = self.key_holder(key) {
                return Err(RosterError::KeyTaken { key: *key, holder: holder.clone() });
            }
        }
        self.check_claims(&m.name, &m.mail_hosts, &m.domains)?;
        self.insert(m.clone(), Some(writer.to_string()));
        Ok(())
    }

    fn update(&mut self, writer: &str, u: &MemberUpdate) -> Result<(), RosterError> {
        self.check_claims(writer, &u.mail_hosts, &u.domains)?;
        self.hosts.retain(|_, holder| holder != writer);
        self.domains.retain(|_, holder| holder != writer);
        for h in &u.mail_hosts {
            self.hosts.insert(normalize_host(h), writer.to_string());
        }
        for d in &u.domains {
            self.domains.insert(normalize_domain(d), writer.to_string());
        }
        if let Some(m) = self.members.get_mut(writer) {
            m.info.addrs = u.addrs.clone();
            m.info.mail_hosts = u.mail_hosts.clone();
            m.info.domains = u.domains.clone();
            m.info.abuse = u.abuse.clone();
        }
        Ok(())
    }

    fn peer(&mut self, writer: &str, p: &Peering) -> Result<(), RosterError> {
        if p.member != writer {
            return Err(RosterError::WrongPeerWriter {
                named: p.member.clone(),
                writer: writer.to_string(),
            });
        }
        if p.partner == writer {
            return Err(RosterError::SelfPeering(writer.to_string()));
        }
        let partner = self
            .members
            .get(&p.partner)
            .ok_or_else(|| RosterError::UnknownPartner(p.partner.clone()))?;
        let current = partner.peer_changes.get(writer).copied().unwrap_or(0);
        let signed_for = |n: u32| {
            let st = peering_statement(&self.ring_id, writer, &p.partner, p.end, n);
            partner.info.log_key.verify(&st, &p.countersig).is_ok()
        };
        let (a, b) = (writer.to_string(), p.partner.clone());
        if !signed_for(current) {
            for ahead in 1..=MAX_DECISIONS_AHEAD {
                let signed = current.saturating_add(ahead);
                if signed_for(signed) {
                    return Err(RosterError::PeeringOutOfTurn { a, b, signed, current });
                }
            }
            return Err(RosterError::BadCountersignature { partner: p.partner.clone() });
        }
        let peered = partner.peers.contains(writer);
        if p.end && !peered {
            return Err(RosterError::NotPeered { a, b });
        }
        if !p.end && peered {
            return Err(RosterError::AlreadyPeered { a, b });
        }
        for (x, y) in [(&a, &b), (&b, &a)] {
            if let Some(m) = self.members.get_mut(x) {
                if p.end {
                    m.peers.remove(y);
                } else {
                    m.peers.insert(y.clone());
                }
                m.peer_changes.insert(y.clone(), current.saturating_add(1));
            }
        }
        Ok(())
    }

    /// Distinct backbone members in good standing (or, with `any_standing`, whatever their
    /// standing) with a valid signature over `statement`; the writer counts as one (its entry
    /// signature binds it).
    fn count_quorum(
        &self,
        writer: &str,
        cosigns: &[Cosign],
        statement: &[u8],
        any_standing: bool,
    ) -> u32 {
        let mut signers: BTreeSet<&str> = BTreeSet::new();
        signers.insert(writer);
        for c in cosigns {
            let Some((name, m)) = self.members.get_key_value(&c.member) else { continue };
            if m.backbone
                && (any_standing || m.is_active())
                && !signers.contains(name.as_str())
                && m.info.log_key.verify(statement, &c.sig).is_ok()
            {
                signers.insert(name.as_str());
            }
        }
        u32::try_from(signers.len()).unwrap_or(u32::MAX)
    }

    /// Checks the authority of `writer` over `target`: its sponsor, or for a backbone target a
    /// backbone writer with a quorum over the statement for the current backbone decision.
    fn check_authority(
        &self,
        writer: &str,
        target: &MemberState,
        cosigns: &[Cosign],
        statement: impl Fn(u32) -> Vec<u8>,
    ) -> Result<(), RosterError> {
        let member = target.info.name.clone();
        if !target.backbone {
            if target.sponsor.as_deref() != Some(writer) {
                return Err(RosterError::NotSponsor { writer: writer.to_string(), member });
            }
            return Ok(());
        }
        if !self.members.get(writer).is_some_and(|w| w.backbone) {
            return Err(RosterError::NotBackboneWriter { writer: writer.to_string(), member });
        }
        let current = self.backbone_decisions;
        let have = self.count_quorum(writer, cosigns, &statement(current), false);
        if have >= self.quorum {
            return Ok(());
        }
        // Signed for a later decision: standings may differ by then, so count every backbone
        // signature; the real count happens when its turn comes.
        for ahead in 1..=MAX_DECISIONS_AHEAD {
            let signed = current.saturating_add(ahead);
            if self.count_quorum(writer, cosigns, &statement(signed), true) >= self.quorum {
                return Err(RosterError::OutOfTurn { member, signed, current });
            }
        }
        Err(RosterError::QuorumNotMet { member, have, need: self.quorum })
    }

    fn expel(&mut self, writer: &str, at: (LogId, u64), x: &Expulsion) -> Result<(), RosterError> {
        let target = self
            .members
            .get(&x.member)
            .ok_or_else(|| RosterError::UnknownMember(x.member.clone()))?;
        if x.evidence.is_empty() {
            return Err(RosterError::NoEvidence(x.member.clone()));
        }
        let ring = self.ring_id;
        self.check_authority(writer, target, &x.quorum, |d| expel_statement(&ring, x, d))?;
        if !target.is_active() {
            return Err(RosterError::AlreadyExpelled(x.member.clone()));
        }
        if let Some(m) = self.members.get_mut(&x.member) {
            m.status = Status::Expelled {
                by: writer.to_string(),
                at,
                from_index: x.from_index,
                evidence: x.evidence.clone(),
            };
            m.decisions = m.decisions.saturating_add(1);
            if m.backbone {
                self.backbone_decisions = self.backbone_decisions.saturating_add(1);
            }
        }
        Ok(())
    }

    fn reinstate(&mut self, writer: &str, r: &Reinstatement) -> Result<(), RosterError> {
        let target = self
            .members
            .get(&r.member)
            .ok_or_else(|| RosterError::UnknownMember(r.member.clone()))?;
        let ring = self.ring_id;
        self.check_authority(writer, target, &r.quorum, |d| reinstate_statement(&ring, r, d))?;
        let Status::Expelled { from_index: expelled_from, .. } = target.status else {
            return Err(RosterError::NotExpelled(r.member.clone()));
        };
        if r.from_index < expelled_from {
            return Err(RosterError::BadResumeIndex { from_index: r.from_index, expelled_from });
        }
        if let Some(m) = self.members.get_mut(&r.member) {
            if r.from_index > expelled_from {
                m.gaps.push((expelled_from, r.from_index));
            }
            m.status = Status::Active;
            m.decisions = m.decisions.saturating_add(1);
            if m.backbone {
                self.backbone_decisions = self.backbone_decisions.saturating_add(1);
            }
        }
        Ok(())
    }

    /// Derives the roster from genesis and the entries of every log, the same whatever order the
    /// logs or their entries arrived in. Returns the refused entries with their reasons, in
    /// (log, index) order. Hop entries are skipped.
    ///
    /// The order rule (docs/GOVERNANCE.md): each log's governance entries are taken in index
    /// order. In passes over the logs in log-id order, every log whose writer is a member
    /// applies entries until one fails with an error that may clear once other logs advance
    /// ([`RosterError::may_succeed_later`]); that entry and the rest of its log wait for the
    /// next pass. When a pass applies nothing, the waiting entry of the lowest log id is
    /// refused and the passes go on. Expulsions reach back (`from_index`): when the refused
    /// ranges found at the end differ from those the run assumed, the fold runs again with the
    /// ranges found, until they agree.
    pub fn fold(g: &Genesis, logs: &BTreeMap<LogId, Vec<SignedEntry>>) -> (Roster, Vec<Refusal>) {
        let mut refused: Vec<Refusal> = Vec::new();
        let mut prepared: Prepared<'_> = BTreeMap::new();
        let mut decisions = 0usize;
        for (id, entries) in logs {
            let mut gov: Vec<&SignedEntry> =
                entries.iter().filter(|e| !matches!(e.entry.body, Body::Hop(_))).collect();
            gov.sort_by_cached_key(|e| (e.entry.index, e.encode()));
            gov.dedup_by(|a, b| a == b);
            let mut kept = Vec::with_capacity(gov.len());
            for (i, e) in gov.iter().enumerate() {
                let index = e.entry.index;
                let twin = |j: Option<usize>| {
                    j.and_then(|j| gov.get(j)).is_some_and(|o| o.entry.index == index)
                };
                if twin(i.checked_sub(1)) || twin(i.checked_add(1)) {
                    refused.push((*id, index, RosterError::Equivocation { index }));
                } else if e.entry.log != *id {
                    let err = RosterError::Misfiled { expected: *id, found: e.entry.log };
                    refused.push((*id, index, err));
                } else if e.verify().is_err() {
                    refused.push((*id, index, RosterError::BadSignature));
                } else {
                    if matches!(e.entry.body, Body::Expel(_) | Body::Reinstate(_)) {
                        decisions += 1;
                    }
                    kept.push(*e);
                }
            }
            prepared.insert(*id, kept);
        }
        let mut assumed: Cuts = BTreeMap::new();
        let mut round = 0usize;
        loop {
            let (roster, mut errs) = Self::run(g, &prepared, &assumed);
            let found = roster.cuts();
            round += 1;
            // Each round that changes the assumption is caused by an expulsion or a
            // reinstatement, so this bound is never reached by consistent histories; it only
            // stops contradictory ones (which then get this deterministic result).
            if found == assumed || round > decisions + 1 {
                refused.append(&mut errs);
                refused.sort_by_key(|r| (r.0, r.1));
                return (roster, refused);
            }
            assumed = found;
        }
    }

    fn run(g: &Genesis, prepared: &Prepared<'_>, assumed: &Cuts) -> (Roster, Vec<Refusal>) {
        let mut r = Roster::from_genesis(g);
        let mut errs = Vec::new();
        let mut pos: BTreeMap<LogId, usize> = prepared.keys().map(|k| (*k, 0)).collect();
        // The assumed range holding `index`, if any: `Some(true)` for a closed gap.
        let cut = |log: &LogId, index: u64| {
            assumed.get(log).and_then(|c| {
                c.iter()
                    .find(|&&(from, to)| index >= from && to.is_none_or(|t| index < t))
                    .map(|(_, to)| to.is_some())
            })
        };
        loop {
            let mut progress = false;
            let mut first_waiting: Option<(LogId, u64, RosterError)> = None;
            for (id, list) in prepared {
                if !r.by_log.contains_key(id) {
                    continue;
                }
                let Some(p) = pos.get_mut(id) else { continue };
                while let Some(e) = list.get(*p) {
                    let index = e.entry.index;
                    let result = match (r.by_log.get(id), cut(id, index)) {
                        (Some(name), Some(true)) => {
                            Err(RosterError::InGap { member: name.clone(), index })
                        }
                        (Some(name), Some(false)) => {
                            Err(RosterError::NotAccepted { member: name.clone(), index })
                        }
                        _ => r.apply_verified(e),
                    };
                    match result {
                        Ok(()) => {}
                        Err(err) if err.may_succeed_later() => {
                            if first_waiting.is_none() {
                                first_waiting = Some((*id, index, err));
                            }
                            break;
                        }
                        Err(err) => errs.push((*id, index, err)),
                    }
                    *p += 1;
                    progress = true;
                }
            }
            if progress {
                continue;
            }
            let Some((id, index, err)) = first_waiting else { break };
            errs.push((id, index, err));
            if let Some(p) = pos.get_mut(&id) {
                *p += 1;
            }
        }
        for (id, list) in prepared {
            let start = pos.get(id).copied().unwrap_or(0);
            for e in list.iter().skip(start) {
                errs.push((*id, e.entry.index, RosterError::UnknownLog(*id)));
            }
        }
        (r, errs)
    }
}
