//! Mail for the demo: a deterministic generator of realistic messages (with one ISP's
//! customer sending a spam campaign), and readers for real mail (.eml directory, mbox file,
//! Maildir) whose `Received:` chains are mapped onto ring members.

use std::path::{Path, PathBuf};

/// A tiny deterministic generator (xorshift64*): the demo is the same on every run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One item of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "quarterly",
    "report",
    "meeting",
    "invoice",
    "draft",
    "schedule",
    "review",
    "budget",
    "notes",
    "project",
    "update",
    "agenda",
    "minutes",
    "proposal",
    "contract",
    "summary",
    "release",
    "backup",
    "server",
    "migration",
    "holiday",
    "lunch",
    "team",
    "customer",
    "order",
    "ticket",
];

/// One generated message, before any relay touched it.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The message as the customer submitted it.
    pub raw: Vec<u8>,
    /// Index (into the ISP list) of the sender's ISP.
    pub from_isp: usize,
    /// The sender's account at its ISP.
    pub account: String,
    /// Recipient domain.
    pub to_domain: String,
    /// Part of the spam campaign.
    pub spam: bool,
}

/// `n` ordinary messages between customers of the ISPs, plus `spam` campaign messages sent by
/// one customer of ISP `spammer` (same body, many recipients). `isps` are (name, domain).
pub fn generate(
    seed: u64,
    n: usize,
    spam: usize,
    spammer: usize,
    isps: &[(String, String)],
) -> Vec<Generated> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + spam);
    let date = |i: usize| {
        let minute = i % 60;
        let hour = 8 + (i / 60) % 10;
        format!("Tue, 01 Dec 2026 {hour:02}:{minute:02}:00 +0000")
    };
    for i in 0..n {
        let from = rng.below(isps.len());
        let to = rng.below(isps.len());
        let account = format!("user{}", rng.below(40));
        let rcpt = format!("user{}", rng.below(40));
        let subject: Vec<&str> = (0..3).map(|_| *rng.pick(WORDS)).collect();
        let body: Vec<String> = (0..4)
            .map(|_| (0..10).map(|_| *rng.pick(WORDS)).collect::<Vec<_>>().join(" "))
            .collect();
        let raw = format!(
            "From: {account}@{fd}\r\nTo: {rcpt}@{td}\r\nSubject: {s}\r\nDate: {d}\r\nMessage-ID: <{i}.{seed}@{fd}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{b}\r\n",
            fd = isps[from].1,
            td = isps[to].1,
            s = subject.join(" "),
            d = date(i),
            b = body.join("\r\n"),
        );
        out.push(Generated {
            raw: raw.into_bytes(),
            from_isp: from,
            account,
            to_domain: isps[to].1.clone(),
            spam: false,
        });
    }
    for i in 0..spam {
        let to = (spammer + 1 + i % (isps.len() - 1).max(1)) % isps.len();
        let rcpt = format!("user{}", i % 40);
        let raw = format!(
            "From: deals@{fd}\r\nTo: {rcpt}@{td}\r\nSubject: You have WON a luxury watch\r\nDate: {d}\r\nMessage-ID: <spam{i}.{seed}@{fd}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nClaim your prize today at http://watches.invalid/claim\r\nReply with your bank details.\r\n",
            fd = isps[spammer].1,
            td = isps[to].1,
            d = date(n + i),
        );
        out.push(Generated {
            raw: raw.into_bytes(),
            from_isp: spammer,
            account: "deals".into(),
            to_domain: isps[to].1.clone(),
            spam: true,
        });
    }
    out
}

/// A `Received:` line a relay of `member` adds.
pub fn received(from_host: &str, by_host: &str, queue_id: &str, date: &str) -> String {
    format!("Received: from {from_host} by {by_host} with ESMTPS id {queue_id};\r\n\t{date}\r\n")
}

/// Splits a message into its header fields (each with its folded continuation lines) and
/// the rest (blank line and body). Works on raw bytes; any line ending.
pub fn split_fields(raw: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0;
    // An mbox "From " line is kept as a field of its own so the bytes survive.
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let blank = line.iter().all(|b| *b == b'\r' || *b == b'\n');
        if blank {
            break;
        }
        if (line[0] == b' ' || line[0] == b'\t') && !fields.is_empty() {
            if let Some(last) = fields.last_mut() {
                last.extend_from_slice(line);
            }
        } else {
            fields.push(line.to_vec());
        }
        pos = end;
    }
    (fields, raw[pos..].to_vec())
}

fn is_received(field: &[u8]) -> bool {
    field.len() >= 9 && field[..9].eq_ignore_ascii_case(b"received:")
}

/// A real message prepared for replay: its Received chain (oldest first) mapped to relay
/// organisations, and the message as it stood after each organisation's relays.
#[derive(Clone, Debug)]
pub struct Replay {
    /// File it came from.
    pub file: String,
    /// Organisations (registrable domain of the relays' "by" host), oldest first, consecutive
    /// duplicates merged.
    pub orgs: Vec<String>,
    /// For each organisation: the message with only the Received fields added up to and
    /// including that organisation's relays.
    pub at_org: Vec<Vec<u8>>,
}

/// The organisation of a Received field: the registrable domain (last two labels) of its
/// `by` host, lower-cased; `None` when there is no usable `by` clause.
pub fn received_org(field: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(field).replace(['\r', '\n', '\t'], " ");
    let lower = text.to_ascii_lowercase();
    let idx = lower.find(" by ")?;
    let host: String = lower[idx + 4..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let host = host.trim_matches('.');
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return None;
    }
    // An address literal or a single-label host stands for itself.
    if labels.len() < 2 || labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Some(host.to_string());
    }
    Some(labels[labels.len() - 2..].join("."))
}

/// Prepares a real message: `None` when its chain cannot be mapped (no Received field with a
/// `by` host).
pub fn prepare(file: &str, raw: &[u8]) -> Option<Replay> {
    let (fields, rest) = split_fields(raw);
    // Received fields sit newest first; index them from the top.
    let rec: Vec<usize> =
        fields.iter().enumerate().filter(|(_, f)| is_received(f)).map(|(i, _)| i).collect();
    if rec.is_empty() {
        return None;
    }
    // Walk oldest (bottom) to newest (top), grouping by organisation.
    let mut orgs: Vec<String> = Vec::new();
    let mut cut_after: Vec<usize> = Vec::new(); // how many Received fields (from the bottom) each org's copy keeps
    for (k, &fi) in rec.iter().rev().enumerate() {
        let Some(org) = received_org(&fields[fi]) else { continue };
        if orgs.last() == Some(&org) {
            if let Some(c) = cut_after.last_mut() {
                *c = k + 1;
            }
        } else {
            orgs.push(org);
            cut_after.push(k + 1);
        }
    }
    if orgs.is_empty() {
        return None;
    }
    let total = rec.len();
    let at_org = cut_after
        .iter()
        .map(|&keep| {
            // Drop the newest (total - keep) Received fields: those later hops added.
            let drop: Vec<usize> = rec.iter().take(total - keep).copied().collect();
            let mut out = Vec::with_capacity(raw.len());
            for (i, f) in fields.iter().enumerate() {
                if !drop.contains(&i) {
                    out.extend_from_slice(f);
                }
            }
            out.extend_from_slice(&rest);
            out
        })
        .collect();
    Some(Replay { file: file.to_string(), orgs, at_org })
}

/// Reads real mail from a directory of files, a Maildir (`cur/` and `new/`) or an mbox file.
/// Returns (name, bytes) pairs, sorted by name.
pub fn read_corpus(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use anyhow::Context as _;
    let mut out = Vec::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = Vec::new();
        let subdirs: Vec<PathBuf> =
            ["cur", "new"].iter().map(|d| path.join(d)).filter(|d| d.is_dir()).collect();
        let dirs = if subdirs.is_empty() { vec![path.to_path_buf()] } else { subdirs };
        for d in dirs {
            for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                let p = e?.path();
                let hidden_or_doc = p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with('.') || n.ends_with(".md")
                });
                if p.is_file() && !hidden_or_doc {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            out.push((
                f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                bytes,
            ));
        }
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        // mbox: messages start at lines beginning with "From ".
        let mut starts = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            if bytes[pos..].starts_with(b"From ") && (pos == 0 || bytes[pos - 1] == b'\n') {
                starts.push(pos);
            }
            pos =
                bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| pos + i + 1);
        }
        if starts.is_empty() {
            starts.push(0);
        }
        for (k, &s) in starts.iter().enumerate() {
            let e = starts.get(k + 1).copied().unwrap_or(bytes.len());
            out.push((format!("{}#{}", path.display(), k + 1), bytes[s..e].to_vec()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_only_earlier_received_fields() {
        let raw = b"Received: from b.example by mx.c-org.example; x\r\nReceived: from a by relay.b-org.example; y\r\nReceived: from pc by smtp.a-org.example; z\r\nFrom: x@a-org.example\r\n\r\nhi\r\n";
        let r = prepare("t", raw).unwrap_or_else(|| unreachable!());
        assert_eq!(r.orgs, ["a-org.example", "b-org.example", "c-org.example"]);
        assert_eq!(r.at_org[0].windows(9).filter(|w| w == b"Received:").count(), 1);
        assert_eq!(r.at_org[2], raw.to_vec());
        assert!(
            String::from_utf8_lossy(&r.at_org[1]).starts_with("Received: from a by relay.b-org")
        );
    }

    #[test]
    fn generator_is_deterministic() {
        let isps = vec![
            ("a".to_string(), "a.example".to_string()),
            ("b".to_string(), "b.example".to_string()),
        ];
        let x = generate(7, 10, 5, 0, &isps);
        let y = generate(7, 10, 5, 0, &isps);
        assert_eq!(x.len(), 15);
        assert!(x.iter().zip(&y).all(|(a, b)| a.raw == b.raw));
    }
}
