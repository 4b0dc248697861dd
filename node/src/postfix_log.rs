//! Follows Postfix's delivery log and checks each message's real next hop against the hop
//! records the milter wrote for it.
//!
//! Postfix logs every delivery attempt as a line such as
//! `postfix/smtp[812]: 4F1A2B3C: to=<bob@dest.example>, relay=mx.b[192.0.2.2]:25, ...,
//! status=sent (250 ok)`. For each `status=sent` line the follower finds the records of the
//! queue id in the own log (the milter stores Postfix's queue id in every record) and checks the
//! relay: mail handed to a ring member's mail host must have a record naming that member as next
//! hop, and mail that went anywhere else (local delivery, a host outside the ring) must have a
//! record saying it left the ring (`local:` or `external:` for the recipient's domain). Anything
//! else is a mismatch: logged as a warning, counted in `/metrics`, and kept (the last
//! [`RECENT`]) for `GET /v1/postfix-log`.
//!
//! The follower holds no per-message state: records are looked up in the store, so memory stays
//! bounded whatever the log holds, and it survives node restarts. It follows the file by path
//! like `tail -F`: a rotated file is read to its end before the new one is opened, a truncated
//! one is read again from the start, lines over [`MAX_LINE`] bytes are skipped.

use crate::node::Shared;
use crate::store::IndexKey;
use ringlog_protocol::record::NextHop;
use ringlog_protocol::roster::{normalize_domain, Roster};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest log line considered; longer ones are skipped whole.
pub const MAX_LINE: usize = 16 * 1024;
/// Most bytes read from the log per poll.
const MAX_READ: usize = 1 << 20;
/// Mismatches kept for the API.
pub const RECENT: usize = 100;

/// One delivery attempt, from one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Postfix's queue id.
    pub queue_id: String,
    /// The recipient as first given (`orig_to` when Postfix rewrote it, else `to`).
    pub rcpt: String,
    /// Where Postfix handed the message.
    pub relay: Relay,
    /// `sent`, `deferred`, `bounced`, `expired`, ...
    pub status: String,
}

/// The `relay=` field of a delivery line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    /// `relay=none`: no host was reached (or the `discard` transport).
    None,
    /// A delivery agent without a host, such as `local` or `virtual`.
    Transport(String),
    /// `NAME[ADDRESS]:PORT`: a host (the address may also be a Unix socket path).
    Host {
        /// The host name Postfix used.
        name: String,
        /// The address in brackets.
        addr: String,
    },
}

/// Parses one line of a Postfix log; `None` for anything that is not a delivery line.
pub fn parse_line(line: &str) -> Option<Delivery> {
    // `... postfix/smtp[812]: QUEUEID: to=<...>, ...`; the program name may carry an instance
    // prefix (`postfix-b/smtp`).
    let (head, rest) = line.split_once("]: ")?;
    let program = head.rsplit_once(' ').map_or(head, |(_, p)| p);
    let (program, pid) = program.split_once('[')?;
    if !program.contains("postfix") || !program.contains('/') || pid.parse::<u32>().is_err() {
        return None;
    }
    let (queue_id, rest) = rest.split_once(": ")?;
    if !(5..=32).contains(&queue_id.len()) || !queue_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let rest = rest.strip_prefix("to=<")?;
    let (to, rest) = rest.split_once('>')?;
    let mut rcpt = to.to_string();
    let (mut relay, mut status) = (None, None);
    for field in rest.split(", ") {
        if let Some(v) = field.strip_prefix("orig_to=<") {
            rcpt = v.trim_end_matches('>').to_string();
        } else if let Some(v) = field.strip_prefix("relay=") {
            relay = Some(parse_relay(v));
        } else if let Some(v) = field.strip_prefix("status=") {
            status = Some(v.split(' ').next().unwrap_or_default().to_string());
            break;
        }
    }
    let status = status.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()))?;
    Some(Delivery { queue_id: queue_id.to_string(), rcpt, relay: relay?, status })
}

fn parse_relay(v: &str) -> Relay {
    if v == "none" {
        return Relay::None;
    }
    match v.split_once('[') {
        Some((name, rest)) => match rest.rsplit_once(']') {
            Some((addr, _port)) => Relay::Host { name: name.to_string(), addr: addr.to_string() },
            None => Relay::Transport(v.to_string()),
        },
        None => Relay::Transport(v.to_string()),
    }
}

/// The domain of a recipient address; empty when there is none.
pub fn domain_of(rcpt: &str) -> String {
    rcpt.rsplit_once('@').map(|(_, d)| normalize_domain(d)).unwrap_or_default()
}

/// The ring member whose mail host Postfix handed the message to, if any.
pub fn relay_member(roster: &Roster, relay: &Relay) -> Option<String> {
    match relay {
        Relay::Host { name, addr } => {
            roster.trust(addr).member.or_else(|| roster.trust(name).member)
        }
        Relay::None | Relay::Transport(_) => None,
    }
}

/// Whether the recorded next hops `recorded` account for a delivery to `rcpt_domain` that went
/// to ring member `member` (or out of the ring when `None`).
pub fn consistent(recorded: &[NextHop], rcpt_domain: &str, member: Option<&str>) -> bool {
    recorded.iter().any(|hop| match (hop, member) {
        (NextHop::Member { name }, Some(m)) => name == m,
        (NextHop::Local { domain }, None) => normalize_domain(domain) == rcpt_domain,
        (NextHop::External { host }, None) => normalize_domain(host) == rcpt_domain,
        _ => false,
    })
}

/// A delivery that did not go where the record said.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// Postfix's queue id.
    pub queue_id: String,
    /// The recipient's domain.
    pub domain: String,
    /// The `relay=` field as logged.
    pub relay: String,
    /// The member the relay belongs to, if any.
    pub relay_member: Option<String>,
    /// The next hops recorded (`member:NAME`, `local:DOMAIN`, `external:HOST`).
    pub recorded: Vec<String>,
    /// The indexes of those records in the own log.
    pub indexes: Vec<u64>,
}

/// Counters and recent mismatches, shared with the API.
#[derive(Default)]
pub struct Status {
    /// Lines read.
    pub lines: AtomicU64,
    /// Lines skipped for being longer than [`MAX_LINE`].
    pub long_lines: AtomicU64,
    /// Delivery lines (any status).
    pub deliveries: AtomicU64,
    /// `status=sent` lines checked against records.
    pub checked: AtomicU64,
    /// Checked deliveries that did not match the records.
    pub mismatches: AtomicU64,
    /// `status=sent` lines for queue ids without a record in the own log.
    pub unrecorded: AtomicU64,
    /// Times the file was found rotated or truncated.
    pub reopened: AtomicU64,
    recent: Mutex<VecDeque<Mismatch>>,
}

impl Status {
    /// The counters as (metric name, value).
    pub fn metrics(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("ringlog_postfix_log_lines_total", g(&self.lines)),
            ("ringlog_postfix_log_long_lines_total", g(&self.long_lines)),
            ("ringlog_postfix_log_deliveries_total", g(&self.deliveries)),
            ("ringlog_postfix_log_checked_total", g(&self.checked)),
            ("ringlog_postfix_log_mismatches_total", g(&self.mismatches)),
            ("ringlog_postfix_log_unrecorded_total", g(&self.unrecorded)),
            ("ringlog_postfix_log_reopened_total", g(&self.reopened)),
        ]
    }

    /// The last mismatches, oldest first.
    pub fn recent(&self) -> Vec<Mismatch> {
        self.recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    fn push(&self, m: Mismatch) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= RECENT {
                r.pop_front();
            }
            r.push_back(m);
        }
    }
}

/// Follows a file by path, returning whole new lines.
pub struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
    skipping: bool,
    seen_once: bool,
}

/// What one poll of a [`Tail`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Complete lines (lossy UTF-8, without the newline).
    pub lines: Vec<String>,
    /// Lines skipped for length.
    pub long_lines: u64,
    /// Whether the file was found rotated or truncated.
    pub reopened: bool,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (m.dev(), m.ino())
}

impl Tail {
    /// Follows `path`. With `from_end`, a file that exists now is read from its current end
    /// (lines logged before are not looked at); a file created or replaced later is read whole.
    pub fn new(path: &Path, from_end: bool) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            id: (0, 0),
            pos: 0,
            partial: Vec::new(),
            skipping: false,
            seen_once: !from_end,
        }
    }

    /// Reads what was appended since the last poll (at most about 1 MiB).
    pub fn poll(&mut self) -> std::io::Result<Polled> {
        let mut out = Polled::default();
        if self.file.is_none() {
            let Ok(f) = std::fs::File::open(&self.path) else { return Ok(out) };
            let meta = f.metadata()?;
            self.id = file_id(&meta);
            self.pos = if self.seen_once { 0 } else { meta.len() };
            self.seen_once = true;
            self.file = Some(f);
        }
        // Replaced (rotated by rename)? Finish the old file first, then switch.
        let replaced = std::fs::metadata(&self.path).is_ok_and(|m| file_id(&m) != self.id);
        self.read_some(&mut out)?;
        if replaced && out.lines.is_empty() && self.partial.is_empty() {
            self.file = None;
            self.skipping = false;
            out.reopened = true;
            let more = self.poll()?;
            out.lines.extend(more.lines);
            out.long_lines += more.long_lines;
        }
        Ok(out)
    }

    fn read_some(&mut self, out: &mut Polled) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        let len = f.metadata()?.len();
        if len < self.pos {
            // Truncated (copytruncate rotation): start again from the top.
            self.pos = 0;
            self.partial.clear();
            self.skipping = false;
            out.reopened = true;
        }
        if len == self.pos {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.pos))?;
        let want = (len - self.pos).min(MAX_READ as u64) as usize;
        let mut buf = vec![0u8; want];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        self.pos += n as u64;
        for chunk in buf.split_inclusive(|&b| b == b'\n') {
            let complete = chunk.last() == Some(&b'\n');
            let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            if !self.skipping {
                if self.partial.len() + body.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                    out.long_lines += 1;
                } else {
                    self.partial.extend_from_slice(body);
                }
            }
            if complete {
                if !self.skipping {
                    out.lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                }
                self.partial.clear();
                self.skipping = false;
            }
        }
        Ok(())
    }
}

/// Starts following `cfg.postfix_log.path` in a task, if it is set.
pub fn start(shared: Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let cfg = &shared.cfg.postfix_log;
    let path = cfg.path.as_ref()?;
    let tail = Tail::new(path, !cfg.from_start);
    let every = Duration::from_millis(cfg.poll_ms.max(10));
    tracing::info!(path = %path.display(), "following the Postfix delivery log");
    Some(tokio::spawn(follow(shared, tail, every)))
}

/// `GET /v1/postfix-log`: the follower's counters and its last mismatches.
pub async fn api(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
) -> axum::Json<serde_json::Value> {
    let counters: serde_json::Map<String, serde_json::Value> = s
        .postfix_log
        .metrics()
        .into_iter()
        .map(|(k, v)| {
            let k = k.trim_start_matches("ringlog_postfix_log_").trim_end_matches("_total");
            (k.to_string(), v.into())
        })
        .collect();
    axum::Json(serde_json::json!({
        "path": s.cfg.postfix_log.path,
        "counters": counters,
        "recent_mismatches": s.postfix_log.recent(),
    }))
}

async fn follow(shared: Arc<Shared>, tail: Tail, every: Duration) {
    let mut tail = Some(tail);
    let mut warned = false;
    loop {
        let Some(mut t) = tail.take() else { return };
        let r = tokio::task::spawn_blocking(move || {
            let p = t.poll();
            (t, p)
        })
        .await;
        let Ok((t, polled)) = r else { return };
        tail = Some(t);
        match polled {
            Ok(p) => {
                warned = false;
                let more = p.lines.len() >= 1000;
                handle(&shared, p).await;
                if more {
                    continue;
                }
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "reading the Postfix delivery log failed; retrying");
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

async fn handle(shared: &Arc<Shared>, p: Polled) {
    let st = &shared.postfix_log;
    st.lines.fetch_add(p.lines.len() as u64, Ordering::Relaxed);
    st.long_lines.fetch_add(p.long_lines, Ordering::Relaxed);
    if p.reopened {
        st.reopened.fetch_add(1, Ordering::Relaxed);
        tracing::info!("the Postfix delivery log was rotated or truncated; following the new one");
    }
    let mut sent = Vec::new();
    for line in p.lines {
        let Some(d) = parse_line(&line) else { continue };
        st.deliveries.fetch_add(1, Ordering::Relaxed);
        if d.status == "sent" {
            sent.push(d);
        }
    }
    if sent.is_empty() {
        return;
    }
    // One hand-over to the blocking pool for the whole poll's lookups, not one per delivery.
    let sh = shared.clone();
    // A message with several recipients has a line each: one lookup per queue id.
    let n = sent.len();
    let looked_up = tokio::task::spawn_blocking(move || {
        let mut seen: HashMap<String, Result<Vec<(u64, NextHop)>, String>> = HashMap::new();
        sent.into_iter()
            .map(|d| {
                let r =
                    seen.entry(d.queue_id.clone()).or_insert_with(|| recorded(&sh, &d.queue_id));
                let r = r.clone();
                (d, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match looked_up {
        Ok(all) => {
            for (d, found) in all {
                check(shared, d, found);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, deliveries = n, "postfix log: lookup task failed; these deliveries are not checked")
        }
    }
}

/// The next hops (with indexes) the own log recorded for a queue id: those of its latest
/// message, since Postfix reuses short queue ids after a while.
fn recorded(shared: &Shared, queue_id: &str) -> Result<Vec<(u64, NextHop)>, String> {
    let key = IndexKey::QueueId(shared.writer.log, queue_id.to_string());
    let found = crate::query::search(&*shared.store, &key).map_err(|e| e.to_string())?;
    let hops: Vec<(u64, ringlog_protocol::record::HopRecord)> =
        found.into_iter().filter_map(|(e, _)| Some((e.entry.index, e.hop()?.clone()))).collect();
    let Some((_, last)) = hops.iter().max_by_key(|(i, _)| *i) else { return Ok(Vec::new()) };
    let mfp1 = last.mfp1;
    Ok(hops.into_iter().filter(|(_, h)| h.mfp1 == mfp1).map(|(i, h)| (i, h.next)).collect())
}

fn hop_text(h: &NextHop) -> String {
    match h {
        NextHop::Member { name } => format!("member:{name}"),
        NextHop::Local { domain } => format!("local:{domain}"),
        NextHop::External { host } => format!("external:{host}"),
    }
}

fn relay_text(r: &Relay) -> String {
    match r {
        Relay::None => "none".into(),
        Relay::Transport(t) => t.clone(),
        Relay::Host { name, addr } => format!("{name}[{addr}]"),
    }
}

/// Checks one delivery against what the own log recorded for its queue id.
fn check(shared: &Shared, d: Delivery, found: Result<Vec<(u64, NextHop)>, String>) {
    let st = &shared.postfix_log;
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(queue_id = %d.queue_id, error = %e, "postfix log: looking up records failed");
            return;
        }
    };
    if found.is_empty() {
        st.unrecorded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(queue_id = %d.queue_id, "postfix log: delivery of a message without a record");
        return;
    }
    st.checked.fetch_add(1, Ordering::Relaxed);
    let roster = shared.roster.roster();
    let member = relay_member(&roster, &d.relay);
    let domain = domain_of(&d.rcpt);
    let hops: Vec<NextHop> = found.iter().map(|(_, h)| h.clone()).collect();
    if consistent(&hops, &domain, member.as_deref()) {
        return;
    }
    st.mismatches.fetch_add(1, Ordering::Relaxed);
    let m = Mismatch {
        queue_id: d.queue_id,
        domain,
        relay: relay_text(&d.relay),
        relay_member: member,
        recorded: hops.iter().map(hop_text).collect(),
        indexes: found.iter().map(|(i, _)| *i).collect(),
    };
    tracing::warn!(
        queue_id = %m.queue_id,
        domain = %m.domain,
        relay = %m.relay,
        relay_member = m.relay_member.as_deref().unwrap_or("none (outside the ring)"),
        recorded = %m.recorded.join(","),
        indexes = ?m.indexes,
        "postfix log: delivery does not match the recorded next hop"
    );
    st.push(m);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: failing loudly is the point
    use super::*;
    use std::io::Write as _;

    const SENT: &str = "Dec  3 21:40:01 mx postfix/smtp[812]: 4F1A2B3C9D: to=<bob@Dest.Example>, relay=127.0.0.12[127.0.0.12]:2525, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 122DC99A0E7)";

    #[test]
    fn parses_delivery_lines() {
        let d = parse_line(SENT).unwrap();
        assert_eq!(d.queue_id, "4F1A2B3C9D");
        assert_eq!(d.rcpt, "bob@Dest.Example");
        assert_eq!(domain_of(&d.rcpt), "dest.example");
        assert_eq!(d.relay, Relay::Host { name: "127.0.0.12".into(), addr: "127.0.0.12".into() });
        assert_eq!(d.status, "sent");
        let local = "2026-12-03T21:40:01.1+00:00 mx postfix-c/virtual[99]: 4Ab9xYz1Q2w: to=<x@dest.example>, orig_to=<alias@Other.example>, relay=virtual, delay=0.01, dsn=2.0.0, status=sent (delivered to maildir)";
        let d = parse_line(local).unwrap();
        assert_eq!(d.relay, Relay::Transport("virtual".into()));
        assert_eq!(domain_of(&d.rcpt), "other.example");
        let deferred = "Dec 3 mx postfix/smtp[1]: ABCDE12345: to=<a@b.example>, relay=none, delay=5, status=deferred (connect to b.example[192.0.2.1]:25: Connection refused)";
        let d = parse_line(deferred).unwrap();
        assert_eq!((d.relay, d.status.as_str()), (Relay::None, "deferred"));
        let lmtp = "x postfix/lmtp[5]: ABCDE12345: to=<a@b.example>, relay=mail.b[private/dovecot-lmtp], status=sent (ok)";
        assert_eq!(
            parse_line(lmtp).unwrap().relay,
            Relay::Host { name: "mail.b".into(), addr: "private/dovecot-lmtp".into() }
        );
    }

    #[test]
    fn garbage_is_not_a_delivery() {
        for line in [
            "",
            "garbage",
            "]: : to=<",
            "Dec  3 mx postfix/smtpd[1]: connect from unknown[127.0.0.1]",
            "Dec  3 mx postfix/qmgr[1]: 4F1A2B3C9D: from=<a@b>, size=300, nrcpt=1 (queue active)",
            "Dec  3 mx postfix/cleanup[1]: 4F1A2B3C9D: message-id=<x@y>",
            "Dec  3 mx postfix/smtp[1]: 4F1A2B3C9D: to=<a@b.example>, relay=x[1.2.3.4]:25",
            "Dec  3 mx postfix/smtp[1]: 4F1A2B3C9D: to=<a@b.example>, status=sent (no relay)",
            "Dec  3 mx postfix/smtp[x]: 4F1A2B3C9D: to=<a@b>, relay=none, status=sent",
            "Dec  3 mx sshd/x[1]: 4F1A2B3C9D: to=<a@b>, relay=none, status=sent",
            "Dec  3 mx postfix/smtp[1]: 4F1A-2B3C: to=<a@b>, relay=none, status=sent",
            "Dec  3 mx postfix/smtp[1]: 4F1A2B3C9D: to=<a@b>, relay=none, status=",
            "\u{0}\u{ff}postfix/smtp[1]: \u{fffd}: to=<",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        // Arbitrary bytes never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut s = SENT.as_bytes().to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % s.len();
                s[i] = (x >> 32) as u8;
            }
            let _ = parse_line(&String::from_utf8_lossy(&s));
            s.truncate((x as usize) % s.len());
            let _ = parse_line(&String::from_utf8_lossy(&s));
        }
    }

    #[test]
    fn checks_relay_against_records() {
        let b = NextHop::Member { name: "b.example".into() };
        let local = NextHop::Local { domain: "dest.example".into() };
        let ext = NextHop::External { host: "far.example".into() };
        assert!(consistent(std::slice::from_ref(&b), "dest.example", Some("b.example")));
        assert!(!consistent(std::slice::from_ref(&b), "dest.example", Some("c.example")));
        assert!(
            !consistent(std::slice::from_ref(&b), "dest.example", None),
            "recorded to B, went outside"
        );
        assert!(consistent(std::slice::from_ref(&local), "dest.example", None));
        assert!(!consistent(std::slice::from_ref(&local), "other.example", None));
        assert!(!consistent(&[local.clone(), ext.clone()], "dest.example", Some("c.example")));
        assert!(consistent(&[b, ext.clone()], "far.example", None));
        assert!(!consistent(&[], "far.example", None));
    }

    #[test]
    fn follows_growth_rotation_truncation_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        std::fs::write(&path, "old line\n").unwrap();
        let mut t = Tail::new(&path, true);
        assert_eq!(t.poll().unwrap().lines, Vec::<String>::new(), "starts at the end");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        assert_eq!(t.poll().unwrap().lines, vec!["one"]);
        f.write_all(b"o\n").unwrap();
        assert_eq!(t.poll().unwrap().lines, vec!["two"], "a partial line waits for its end");
        // Too long: skipped whole, the next line is intact.
        f.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        f.write_all(b"\nthree\n").unwrap();
        let p = t.poll().unwrap();
        assert_eq!((p.lines, p.long_lines), (vec!["three".to_string()], 1));
        // Rotation by rename: the rest of the old file, then the new one from its start.
        f.write_all(b"last of old\n").unwrap();
        std::fs::rename(&path, dir.path().join("maillog.1")).unwrap();
        std::fs::write(&path, "first of new\n").unwrap();
        let mut got = t.poll().unwrap().lines;
        got.extend(t.poll().unwrap().lines);
        assert_eq!(got, vec!["last of old", "first of new"]);
        // Truncation in place: read again from the top.
        std::fs::write(&path, "").unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"a\n").unwrap();
        let p = t.poll().unwrap();
        assert!(p.reopened);
        assert_eq!(p.lines, vec!["a"]);
        // Gone: nothing, no error; back: read whole.
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(dir.path().join("maillog.1")).unwrap();
        assert!(t.poll().unwrap().lines.is_empty());
        std::fs::write(&path, "back\n").unwrap();
        let mut got = t.poll().unwrap().lines;
        got.extend(t.poll().unwrap().lines);
        assert_eq!(got, vec!["back"]);
    }
}
