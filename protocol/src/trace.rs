//! Trace: from the hop records of one message, the path it took through the ring, its origin,
//! and which member-to-member links both ends recorded.
//!
//! Pure: the caller gathers the records (by mfp1, following transform links, falling back to
//! mfp1-lite) and names the logs; [`trace`] only reasons over them. The origin is the first
//! member that accepted the message from a customer or from outside the ring. A link from A to
//! B is *confirmed* when A recorded sending to B and B recorded receiving from A; otherwise it
//! carries what is missing and whose duty the missing record was.

use crate::bytes::Hash;
use crate::keys::LogId;
use crate::record::{HopRecord, NextHop, PrevHop, SignedEntry, Transform, Verdicts};
use crate::roster::Roster;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Most records one trace reasons over; more are cut (and noted).
pub const MAX_RECORDS: usize = 4096;

/// Which fingerprint joined the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// The full message fingerprint (and transform links).
    Mfp1,
    /// The fingerprint without Message-ID and Date (fallback when mfp1 finds nothing).
    Mfp1Lite,
}

/// Names the writer of a log.
pub trait Directory {
    /// The member name of the log, if it is a member's.
    fn name_of(&self, log: &LogId) -> Option<String>;
}

impl Directory for Roster {
    fn name_of(&self, log: &LogId) -> Option<String> {
        self.by_log_key(log).map(|m| m.info.name.clone())
    }
}

impl Directory for BTreeMap<LogId, String> {
    fn name_of(&self, log: &LogId) -> Option<String> {
        self.get(log).cloned()
    }
}

/// How the message entered the ring at its origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    /// From an authenticated customer of the origin member (opened by `ringlog reveal`).
    Customer {
        /// The salted commitment to the customer account.
        commitment: Hash,
    },
    /// From a host outside the ring.
    External {
        /// The connecting IP address.
        ip: IpAddr,
        /// Its HELO name.
        helo: String,
    },
}

/// Where the message entered the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The member that accepted it.
    pub member: String,
    /// Its log.
    pub log: LogId,
    /// The record's index in that log.
    pub index: u64,
    /// The record's time (writer's clock, ms since the epoch).
    pub time_ms: u64,
    /// From whom.
    pub kind: OriginKind,
}

/// One hop record, as a step of the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The writer's member name (the log id in hex when the log is no known member's).
    pub member: String,
    /// The writer's log.
    pub log: LogId,
    /// Index of the record in that log.
    pub index: u64,
    /// Writer's clock, ms since the epoch.
    pub time_ms: u64,
    /// The fingerprint of the message as sent on.
    pub mfp1: Hash,
    /// Previous hop.
    pub prev: PrevHop,
    /// Next hop.
    pub next: NextHop,
    /// Writer's queue id.
    pub queue_id: String,
    /// Recipients on this hop.
    pub rcpt_count: u32,
    /// The writer's verdicts.
    pub verdicts: Verdicts,
    /// Set when this hop changed the message.
    pub transform: Option<Transform>,
}

/// A member-to-member hand-over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The sending member.
    pub from: String,
    /// The receiving member.
    pub to: String,
    /// The sender's record (log, index), if it has one.
    pub sent: Option<(LogId, u64)>,
    /// The receiver's record (log, index), if it has one.
    pub received: Option<(LogId, u64)>,
    /// Both ends recorded it.
    pub confirmed: bool,
    /// What is missing, when not confirmed.
    pub gap: Option<String>,
    /// The member whose record is missing.
    pub duty: Option<String>,
}

/// Where the message left the ring's record: local delivery or an outside host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivering member.
    pub member: String,
    /// Its record (log, index).
    pub record: (LogId, u64),
    /// Writer's clock, ms since the epoch.
    pub time_ms: u64,
    /// `Local` (recipient domain) or `External` (host).
    pub to: NextHop,
}

/// The answer to "where did this message come from".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The fingerprint asked about.
    pub query: Hash,
    /// How records were joined.
    pub matched_by: MatchKind,
    /// Every message fingerprint on the path (more than one when a hop transformed it).
    pub fingerprints: Vec<Hash>,
    /// Where it entered the ring, if a record says so.
    pub origin: Option<Origin>,
    /// The hops, in path order (from the origin along the links, then the rest by time).
    pub hops: Vec<Hop>,
    /// Member-to-member links.
    pub links: Vec<Link>,
    /// Local deliveries and hand-overs to outside hosts.
    pub deliveries: Vec<Delivery>,
    /// Anomalies: more than one entry point, logs of no known member, records cut.
    pub notes: Vec<String>,
}

impl Trace {
    /// Whether every member-to-member link is confirmed.
    pub fn all_confirmed(&self) -> bool {
        self.links.iter().all(|l| l.confirmed)
    }
}

struct Rec<'a> {
    log: LogId,
    index: u64,
    member: String,
    hop: &'a HopRecord,
}

impl Rec<'_> {
    /// Fingerprint of the message as received.
    fn fp_in(&self, by: MatchKind) -> Hash {
        match (by, &self.hop.transform) {
            (MatchKind::Mfp1Lite, _) => self.hop.mfp1_lite,
            (MatchKind::Mfp1, Some(t)) => t.input,
            (MatchKind::Mfp1, None) => self.hop.mfp1,
        }
    }

    /// Fingerprint of the message as sent.
    fn fp_out(&self, by: MatchKind) -> Hash {
        match by {
            MatchKind::Mfp1Lite => self.hop.mfp1_lite,
            MatchKind::Mfp1 => self.hop.mfp1,
        }
    }

    fn key(&self) -> (LogId, u64) {
        (self.log, self.index)
    }
}

/// Whether `s` (by the receiver) records receiving what `r` (by the sender) recorded sending.
fn joins(r: &Rec<'_>, s: &Rec<'_>, by: MatchKind) -> bool {
    let sent_to = matches!(&r.hop.next, NextHop::Member { name } if *name == s.member);
    let got_from = matches!(&s.hop.prev, PrevHop::Member { name } if *name == r.member);
    // In lite mode a transforming hop's input has an unknown lite fingerprint: join on names.
    let fp_ok =
        r.fp_out(by) == s.fp_in(by) || (by == MatchKind::Mfp1Lite && s.hop.transform.is_some());
    sent_to && got_from && fp_ok
}

/// Builds the trace of the message `query` from its hop records. Entries that are not hop
/// records are ignored; duplicates (same log and index) count once. Signatures are not
/// checked here (the store and [`crate::evidence::verify`] do that).
pub fn trace(
    query: &Hash,
    matched_by: MatchKind,
    records: &[SignedEntry],
    names: &dyn Directory,
) -> Trace {
    let mut notes = Vec::new();
    let mut seen = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut recs: Vec<Rec<'_>> = Vec::new();
    for e in records {
        let Some(hop) = e.hop() else { continue };
        if !seen.insert((e.entry.log, e.entry.index)) {
            continue;
        }
        if recs.len() == MAX_RECORDS {
            notes.push(format!("more than {MAX_RECORDS} records: the rest were left out"));
            break;
        }
        let member = names.name_of(&e.entry.log).unwrap_or_else(|| {
            unknown.insert(e.entry.log);
            e.entry.log.to_hex()
        });
        recs.push(Rec { log: e.entry.log, index: e.entry.index, member, hop });
    }
    for log in unknown {
        notes.push(format!("log {log} is not a known member's"));
    }
    // Stable base order: time, then position.
    recs.sort_by_key(|r| (r.hop.time_ms, r.log, r.index));

    // Sender side: each record that says "next = member B".
    let mut links = Vec::new();
    let mut incoming: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut outgoing: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        let NextHop::Member { name: to } = &r.hop.next else { continue };
        let got: Vec<usize> = recs
            .iter()
            .enumerate()
            .filter(|(_, s)| joins(r, s, matched_by))
            .map(|(j, _)| j)
            .collect();
        for &j in &got {
            incoming.entry(j).or_default().push(i);
            outgoing.entry(i).or_default().push(j);
        }
        match got.first() {
            Some(&j) => links.push(Link {
                from: r.member.clone(),
                to: to.clone(),
                sent: Some(r.key()),
                received: Some(recs[j].key()),
                confirmed: true,
                gap: None,
                duty: None,
            }),
            None => links.push(Link {
                from: r.member.clone(),
                to: to.clone(),
                sent: Some(r.key()),
                received: None,
                confirmed: false,
                gap: Some(format!(
                    "{} recorded sending to {to}, but {to} has no record of receiving from {}",
                    r.member, r.member
                )),
                duty: Some(to.clone()),
            }),
        }
    }
    // Receiver side: records that say "prev = member A" with no matching record by A.
    for (j, s) in recs.iter().enumerate() {
        let PrevHop::Member { name: from } = &s.hop.prev else { continue };
        if incoming.contains_key(&j) {
            continue;
        }
        links.push(Link {
            from: from.clone(),
            to: s.member.clone(),
            sent: None,
            received: Some(s.key()),
            confirmed: false,
            gap: Some(format!(
                "{} recorded receiving from {from}, but {from} has no record of sending to {}",
                s.member, s.member
            )),
            duty: Some(from.clone()),
        });
    }

    // Entry points: records whose previous hop is a customer or an outside host.
    let entries: Vec<(usize, OriginKind)> = recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.hop.prev {
            PrevHop::Customer { commitment } => {
                Some((i, OriginKind::Customer { commitment: *commitment }))
            }
            PrevHop::External { ip, helo } => {
                Some((i, OriginKind::External { ip: *ip, helo: helo.clone() }))
            }
            PrevHop::Member { .. } => None,
        })
        .collect();
    let origin = entries.first().map(|(i, kind)| {
        let r = &recs[*i];
        Origin {
            member: r.member.clone(),
            log: r.log,
            index: r.index,
            time_ms: r.hop.time_ms,
            kind: kind.clone(),
        }
    });
    for (i, _) in entries.iter().skip(1) {
        let r = &recs[*i];
        notes.push(format!(
            "{} also recorded the message entering the ring (record {}) at {}",
            r.member,
            r.index,
            utc_ms(r.hop.time_ms)
        ));
    }

    // Path order: depth-first from the entry points along joined links, then from any other
    // record with no recorded sender, then the rest; each group in time order.
    let mut order = Vec::with_capacity(recs.len());
    let mut visited = vec![false; recs.len()];
    let roots = entries
        .iter()
        .map(|(i, _)| *i)
        .chain((0..recs.len()).filter(|i| !incoming.contains_key(i)))
        .chain(0..recs.len());
    for root in roots {
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            order.push(i);
            if let Some(next) = outgoing.get(&i) {
                stack.extend(next.iter().rev().copied());
            }
        }
    }

    let mut fingerprints: Vec<Hash> = Vec::new();
    let mut hops = Vec::with_capacity(recs.len());
    let mut deliveries = Vec::new();
    for &i in &order {
        let r = &recs[i];
        for fp in r.hop.transform.iter().map(|t| t.input).chain([r.hop.mfp1]) {
            if !fingerprints.contains(&fp) {
                fingerprints.push(fp);
            }
        }
        if matches!(r.hop.next, NextHop::Local { .. } | NextHop::External { .. }) {
            deliveries.push(Delivery {
                member: r.member.clone(),
                record: r.key(),
                time_ms: r.hop.time_ms,
                to: r.hop.next.clone(),
            });
        }
        hops.push(Hop {
            member: r.member.clone(),
            log: r.log,
            index: r.index,
            time_ms: r.hop.time_ms,
            mfp1: r.hop.mfp1,
            prev: r.hop.prev.clone(),
            next: r.hop.next.clone(),
            queue_id: r.hop.queue_id.clone(),
            rcpt_count: r.hop.rcpt_count,
            verdicts: r.hop.verdicts.clone(),
            transform: r.hop.transform.clone(),
        });
    }
    // Links in path order of their first record.
    let pos: BTreeMap<(LogId, u64), usize> =
        order.iter().enumerate().map(|(p, &i)| (recs[i].key(), p)).collect();
    links.sort_by_key(|l| {
        l.sent.or(l.received).and_then(|k| pos.get(&k).copied()).unwrap_or(usize::MAX)
    });
    if origin.is_none() && !hops.is_empty() {
        notes.push("no record shows where the message entered the ring".into());
    }
    Trace { query: *query, matched_by, fingerprints, origin, hops, links, deliveries, notes }
}

/// One message that carried a body (or a part) asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyMatch {
    /// The message's fingerprint.
    pub mfp1: Hash,
    /// Whether the whole body matched (else only a part).
    pub whole_body: bool,
    /// Earliest record time, ms since the epoch.
    pub first_ms: u64,
    /// Latest record time.
    pub last_ms: u64,
    /// Number of hop records.
    pub records: usize,
    /// Members that recorded it, sorted.
    pub members: Vec<String>,
    /// Members that recorded it entering the ring, sorted.
    pub entered_at: Vec<String>,
}

/// Groups hop records that carry body `body` or any of `parts` by message (distinct mfp1),
/// earliest first.
pub fn messages_by_body(
    body: &Hash,
    parts: &[Hash],
    records: &[SignedEntry],
    names: &dyn Directory,
) -> Vec<BodyMatch> {
    let mut by: BTreeMap<Hash, BodyMatch> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in records {
        let Some(h) = e.hop() else { continue };
        let whole = h.body == *body;
        if !whole && !h.parts.iter().any(|p| parts.contains(p) || p == body) {
            continue;
        }
        if !seen.insert((e.entry.log, e.entry.index)) {
            continue;
        }
        let member = names.name_of(&e.entry.log).unwrap_or_else(|| e.entry.log.to_hex());
        let m = by.entry(h.mfp1).or_insert_with(|| BodyMatch {
            mfp1: h.mfp1,
            whole_body: false,
            first_ms: h.time_ms,
            last_ms: h.time_ms,
            records: 0,
            members: Vec::new(),
            entered_at: Vec::new(),
        });
        m.whole_body |= whole;
        m.first_ms = m.first_ms.min(h.time_ms);
        m.last_ms = m.last_ms.max(h.time_ms);
        m.records += 1;
        if matches!(h.prev, PrevHop::Customer { .. } | PrevHop::External { .. })
            && !m.entered_at.contains(&member)
        {
            m.entered_at.push(member.clone());
        }
        if !m.members.contains(&member) {
            m.members.push(member);
        }
    }
    let mut out: Vec<BodyMatch> = by.into_values().collect();
    for m in &mut out {
        m.members.sort();
        m.entered_at.sort();
    }
    out.sort_by_key(|m| (m.first_ms, m.mfp1));
    out
}

/// A lookup the gatherer asks of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Hop records with this mfp1.
    Mfp1(Hash),
    /// Hop records with this mfp1-lite.
    Mfp1Lite(Hash),
    /// Hop records whose transform input is this mfp1 (the message as a transforming hop,
    /// such as a mailing list, received it).
    TransformIn(Hash),
}

/// Most distinct fingerprints [`gather`] follows through transform links.
pub const MAX_FINGERPRINTS: usize = 64;

/// Gathers the records of one message: those with mfp1 `query`, then, following transform links
/// both ways (out to in: a record's transform input; in to out: records whose transform input
/// is a fingerprint found), those of every linked fingerprint; when mfp1 finds nothing and
/// `lite` is given, the records with that mfp1-lite. Bounded by [`MAX_FINGERPRINTS`] and
/// [`MAX_RECORDS`]. `find` answers the lookups (a store query).
pub fn gather<E>(
    query: &Hash,
    lite: Option<&Hash>,
    mut find: impl FnMut(Lookup) -> Result<Vec<SignedEntry>, E>,
) -> Result<(MatchKind, Vec<SignedEntry>), E> {
    let mut out: Vec<SignedEntry> = Vec::new();
    let mut seen_pos = BTreeSet::new();
    let mut seen_fp = BTreeSet::new();
    let mut todo = vec![*query];
    seen_fp.insert(*query);
    let mut add = |found: Vec<SignedEntry>, out: &mut Vec<SignedEntry>, todo: &mut Vec<Hash>| {
        for e in found {
            if out.len() >= MAX_RECORDS {
                return;
            }
            let Some(h) = e.hop() else { continue };
            if !seen_pos.insert((e.entry.log, e.entry.index)) {
                continue;
            }
            let linked = h.transform.iter().flat_map(|t| [t.input, t.output]).chain([h.mfp1]);
            for fp in linked {
                if seen_fp.len() < MAX_FINGERPRINTS && seen_fp.insert(fp) {
                    todo.push(fp);
                }
            }
            out.push(e);
        }
    };
    while let Some(fp) = todo.pop() {
        let found = find(Lookup::Mfp1(fp))?;
        add(found, &mut out, &mut todo);
        let found = find(Lookup::TransformIn(fp))?;
        add(found, &mut out, &mut todo);
    }
    if out.is_empty() {
        if let Some(l) = lite {
            let found = find(Lookup::Mfp1Lite(*l))?;
            let mut none = Vec::new();
            let mut recs = Vec::new();
            add(found, &mut recs, &mut none);
            return Ok((MatchKind::Mfp1Lite, recs));
        }
    }
    Ok((MatchKind::Mfp1, out))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for a writer's time in milliseconds since the epoch: the
/// one way records' times are written for people.
pub fn utc_ms(ms: u64) -> String {
    let u = mail_parser::DateTime::from_timestamp(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year,
        u.month,
        u.day,
        u.hour,
        u.minute,
        u.second,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn writer_times_read_as_utc() {
        assert_eq!(super::utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
