//! The milter endpoint driven by a raw milter client over TCP, as Postfix would drive it:
//! records for customers, members and outsiders, the headers it adds, the optional refusal of
//! untrusted relaying, and bad input (garbage, oversize, a connection dropped mid-message) that
//! must leave no record and no crash.
#![allow(clippy::unwrap_used)] // tests: failing loudly is the point

use ringlog_node::config::Config;
use ringlog_node::identity::Identity;
use ringlog_node::node::{start, Running};
use ringlog_node::store::IndexKey;
use ringlog_protocol::fingerprint::fingerprint;
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::record::{MemberInfo, NextHop, PrevHop, Trust};
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ME: &str = "me.example";
const PEER: &str = "peer.example";
const PEER_HOST: &str = "10.0.0.2";

fn member(name: &str, id: &Identity, host: &str, domain: &str) -> MemberInfo {
    MemberInfo {
        name: name.into(),
        log_key: id.log_key.public(),
        node_key: id.node_key.public(),
        addrs: vec![],
        mail_hosts: vec![host.into()],
        domains: vec![domain.into()],
        abuse: format!("abuse@{name}"),
    }
}

async fn node(tmp: &std::path::Path, max: usize, refuse: bool) -> (Running, String) {
    let me = Identity::create(&tmp.join("keys")).unwrap();
    let peer = Identity::create(&tmp.join("peer-keys")).unwrap();
    let genesis = Genesis {
        version: ringlog_protocol::genesis::GENESIS_VERSION,
        ring: "milter-test".into(),
        members: vec![member(ME, &me, "10.0.0.1", ME), member(PEER, &peer, PEER_HOST, PEER)],
        backbone_quorum: 1,
        witness_k: 0,
    };
    std::fs::write(tmp.join("genesis.json"), genesis.to_json()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = Config { name: ME.into(), ..Config::default() };
    cfg.api.http = "127.0.0.1:0".into();
    cfg.p2p.enabled = false;
    cfg.milter.listen = format!("127.0.0.1:{port}");
    cfg.milter.max_message_bytes = max;
    cfg.milter.refuse_untrusted_relay = refuse;
    cfg.rebase(tmp);
    (start(cfg).await.unwrap(), format!("127.0.0.1:{port}"))
}

/// A raw milter client (the MTA side of the protocol).
struct Mta {
    s: TcpStream,
    /// The protocol steps agreed (`SMFIP_*` bits from the milter's option reply).
    proto: u32,
}

/// Every protocol step flag of milter protocol version 6, as Postfix offers them.
const ALL_STEPS: u32 = 0x001f_ffff;
/// `SMFIP_NR_*`: the steps a milter may leave unanswered, by command code.
const NO_REPLY: &[(u8, u32)] = &[
    (b'C', 0x1000),
    (b'H', 0x2000),
    (b'M', 0x4000),
    (b'R', 0x8000),
    (b'T', 0x1_0000),
    (b'U', 0x2_0000),
    (b'N', 0x4_0000),
    (b'B', 0x8_0000),
    (b'L', 0x80),
];
/// `SMFIP_NODATA`, `SMFIP_NOUNKNOWN`: steps the milter may ask the MTA to leave out.
const NO_SEND: &[(u8, u32)] = &[(b'T', 0x200), (b'U', 0x100)];

impl Mta {
    async fn connect(addr: &str) -> Mta {
        Mta::connect_offering(addr, ALL_STEPS).await
    }

    /// Connects as an MTA of milter version 6 offering the protocol steps `offer`.
    async fn connect_offering(addr: &str, offer: u32) -> Mta {
        let mut m = Mta { s: TcpStream::connect(addr).await.unwrap(), proto: 0 };
        let mut o = Vec::new();
        o.extend_from_slice(&6u32.to_be_bytes());
        o.extend_from_slice(&0x1ffu32.to_be_bytes());
        o.extend_from_slice(&offer.to_be_bytes());
        m.send(b'O', &o).await;
        let (c, d) = m.read().await.unwrap();
        assert_eq!(c, b'O');
        m.proto = u32::from_be_bytes(d[8..12].try_into().unwrap());
        assert_eq!(m.proto & !offer, 0, "the milter took steps the MTA did not offer");
        m
    }

    fn flag(table: &[(u8, u32)], cmd: u8) -> u32 {
        table.iter().find(|(c, _)| *c == cmd).map_or(0, |(_, f)| *f)
    }

    /// Whether the milter answers `cmd`.
    fn answers(&self, cmd: u8) -> bool {
        self.proto & Mta::flag(NO_REPLY, cmd) == 0
    }

    async fn send(&mut self, cmd: u8, data: &[u8]) {
        let len = (data.len() + 1) as u32;
        let mut p = len.to_be_bytes().to_vec();
        p.push(cmd);
        p.extend_from_slice(data);
        self.s.write_all(&p).await.unwrap();
    }

    async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).await.ok()?;
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut p).await.ok()?;
        let c = *p.first()?;
        Some((c, p[1..].to_vec()))
    }

    /// Sends a command (unless the milter asked not to get it) and returns the reply code;
    /// `c` (continue) for a step the milter does not answer, as the protocol means it.
    async fn step(&mut self, cmd: u8, data: &[u8]) -> u8 {
        if self.proto & Mta::flag(NO_SEND, cmd) != 0 {
            return b'c';
        }
        self.send(cmd, data).await;
        if !self.answers(cmd) {
            return b'c';
        }
        self.read().await.unwrap().0
    }

    async fn macros(&mut self, stage: u8, kv: &[(&str, &str)]) {
        let mut d = vec![stage];
        for (k, v) in kv {
            d.extend_from_slice(k.as_bytes());
            d.push(0);
            d.extend_from_slice(v.as_bytes());
            d.push(0);
        }
        self.send(b'D', &d).await;
    }

    /// One whole message; returns the headers the milter added (name, value) and the final
    /// reply code.
    async fn message(
        &mut self,
        ip: &str,
        auth: Option<&str>,
        rcpts: &[&str],
        raw: &[u8],
    ) -> (Vec<(String, String)>, u8) {
        let mut c = b"client.test\0".to_vec();
        c.push(b'4');
        c.extend_from_slice(&25u16.to_be_bytes());
        c.extend_from_slice(ip.as_bytes());
        c.push(0);
        assert_eq!(self.step(b'C', &c).await, b'c');
        assert_eq!(self.step(b'H', b"client.test\0").await, b'c');
        if let Some(a) = auth {
            self.macros(b'M', &[("{auth_authen}", a)]).await;
        }
        assert_eq!(self.step(b'M', b"<s@client.test>\0").await, b'c');
        for r in rcpts {
            let code = self.step(b'R', format!("<{r}>\0").as_bytes()).await;
            if code != b'c' {
                return (vec![], code);
            }
        }
        assert_eq!(self.step(b'T', b"").await, b'c');
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let (head, body) = (&raw[..split + 2], &raw[split + 4..]);
        for line in String::from_utf8_lossy(head).split("\r\n").filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':').unwrap();
            // Without SMFIP_HDR_LEADSPC the MTA drops the space after the colon.
            let v = if self.proto & 0x10_0000 == 0 { v.strip_prefix(' ').unwrap_or(v) } else { v };
            assert_eq!(self.step(b'L', format!("{n}\0{v}\0").as_bytes()).await, b'c');
        }
        assert_eq!(self.step(b'N', b"").await, b'c');
        for chunk in body.chunks(65535) {
            assert_eq!(self.step(b'B', chunk).await, b'c');
        }
        self.macros(b'E', &[("i", "QID123")]).await;
        self.send(b'E', b"").await;
        let mut added = Vec::new();
        loop {
            let (c, d) = self.read().await.unwrap();
            if c == b'h' {
                let mut it = d.split(|&b| b == 0);
                let n = String::from_utf8_lossy(it.next().unwrap()).into_owned();
                let v = String::from_utf8_lossy(it.next().unwrap()).into_owned();
                added.push((n, v));
            } else {
                return (added, c);
            }
        }
    }
}

fn msg(subject: &str, body_lines: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@me.example>\r\nTo: bob@peer.example\r\nSubject: {subject}\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{subject}@me.example>\r\n\r\n"
    )
    .into_bytes();
    for i in 0..body_lines {
        m.extend_from_slice(format!("line {i} of the body\r\n").as_bytes());
    }
    m
}

fn hops(r: &Running, raw: &[u8]) -> Vec<(PrevHop, NextHop, u32, Option<Trust>)> {
    let key = IndexKey::Mfp1(fingerprint(raw).mfp1);
    ringlog_node::query::search(&*r.shared.store, &key)
        .unwrap()
        .into_iter()
        .filter_map(|(e, _)| {
            e.hop().map(|h| (h.prev.clone(), h.next.clone(), h.rcpt_count, h.verdicts.trust))
        })
        .collect()
}

fn size(r: &Running) -> u64 {
    r.shared.writer.stats.size.load(Ordering::Relaxed)
}

fn header<'a>(added: &'a [(String, String)], name: &str) -> Option<&'a str> {
    added.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_customers_members_and_outsiders() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, addr) = node(tmp.path(), 1 << 20, false).await;

    // An authenticated customer writing to a local and a member's domain: two records.
    let raw = msg("customer", 3);
    let mut mta = Mta::connect(&addr).await;
    let (added, code) = mta
        .message(
            "192.0.2.7",
            Some("alice"),
            &["bob@peer.example", "x@me.example", "y@me.example"],
            &raw,
        )
        .await;
    assert_eq!(code, b'c');
    let fp = fingerprint(&raw).mfp1.to_hex();
    let tag = header(&added, "X-Ringlog").unwrap();
    assert!(tag.contains(&fp) && tag.contains("trust=trusted") && tag.contains("prev=customer"));
    // Leading spaces were negotiated: the MTA puts the value right after the colon, so the
    // milter sends the space itself.
    assert!(tag.starts_with(' '), "{tag:?}");
    assert!(header(&added, "X-Ringlog-Spam-Score").is_none());
    let mut h = hops(&r, &raw);
    h.sort_by_key(|x| format!("{:?}", x.1));
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(matches!(h[0].0, PrevHop::Customer { .. }));
    assert_eq!(h[0].1, NextHop::Local { domain: ME.into() });
    assert_eq!(h[0].2, 2);
    assert_eq!(h[1].1, NextHop::Member { name: PEER.into() });
    assert_eq!(h[1].3, Some(Trust::Trusted));

    // A member's mail host on the same connection (the MTA reuses it after an abort).
    mta.send(b'A', b"").await;
    let raw = msg("member", 2);
    let (added, _) = mta.message(PEER_HOST, None, &["z@me.example"], &raw).await;
    assert!(header(&added, "X-Ringlog").unwrap().contains(&format!("prev=member:{PEER}")));
    let h = hops(&r, &raw);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, PrevHop::Member { name: PEER.into() });

    // Outside the ring: untrusted, a spam score, the IP and HELO in the record.
    let raw = msg("outsider", 2);
    let mut mta = Mta::connect(&addr).await;
    let (added, _) = mta.message("198.51.100.5", None, &["z@me.example"], &raw).await;
    assert!(header(&added, "X-Ringlog").unwrap().contains("trust=untrusted"));
    assert!(header(&added, "X-Ringlog-Spam-Score").unwrap().starts_with(" 5.000"));
    let h = hops(&r, &raw);
    assert_eq!(
        h[0].0,
        PrevHop::External { ip: "198.51.100.5".parse().unwrap(), helo: "client.test".into() }
    );
    assert_eq!(h[0].3, Some(Trust::Untrusted));
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaves_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, addr) = node(tmp.path(), 4096, false).await;
    let before = size(&r);

    // Garbage: the milter closes the connection; nothing is written.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"\x00\x00\x00\x05Zjunk\xff\xff\xff\xffgarbage garbage").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "garbage must end the connection: {n:?}");

    // A huge length prefix is refused without allocating it.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&0xffff_fff0u32.to_be_bytes()).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "oversize packet must end the connection");

    // Over the size limit: accepted, tagged, no record.
    let raw = msg("big", 400);
    let mut mta = Mta::connect(&addr).await;
    let (added, code) = mta.message("192.0.2.7", Some("alice"), &["x@me.example"], &raw).await;
    assert_eq!(code, b'c', "an oversized message is still accepted");
    assert!(header(&added, "X-Ringlog").unwrap().contains("record=none"), "{added:?}");
    assert!(hops(&r, &raw).is_empty());

    // Dropped mid-message: headers and some body, then the connection closes.
    let mut mta = Mta::connect(&addr).await;
    let raw = msg("dropped", 3);
    let mut c = b"client.test\0".to_vec();
    c.push(b'4');
    c.extend_from_slice(&25u16.to_be_bytes());
    c.extend_from_slice(b"192.0.2.7\0");
    assert_eq!(mta.step(b'C', &c).await, b'c');
    assert_eq!(mta.step(b'M', b"<s@client.test>\0").await, b'c');
    assert_eq!(mta.step(b'R', b"<x@me.example>\0").await, b'c');
    assert_eq!(mta.step(b'L', b"Subject\0 dropped\0").await, b'c');
    assert_eq!(mta.step(b'N', b"").await, b'c');
    assert_eq!(mta.step(b'B', b"partial body\r\n").await, b'c');
    drop(mta);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(size(&r), before, "no record for garbage, oversize or a dropped message");
    assert!(hops(&r, &raw).is_empty());

    // Still serving.
    let raw = msg("after", 2);
    let mut mta = Mta::connect(&addr).await;
    let (added, _) = mta.message("192.0.2.7", None, &["x@me.example"], &raw).await;
    assert!(header(&added, "X-Ringlog").unwrap().contains("index="));
    assert_eq!(size(&r), before + 1);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_untrusted_relay_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, addr) = node(tmp.path(), 1 << 20, true).await;
    let raw = msg("relay", 1);
    // Outside the ring, to a member's domain: refused at RCPT.
    let mut mta = Mta::connect(&addr).await;
    assert!(mta.answers(b'R'), "RCPT must be answered when it may be refused");
    let (_, code) = mta.message("198.51.100.5", None, &["bob@peer.example"], &raw).await;
    assert_eq!(code, b'y', "a reply code (550) for the recipient");
    // Outside the ring, to a local domain: accepted.
    let mut mta = Mta::connect(&addr).await;
    let (_, code) = mta.message("198.51.100.5", None, &["x@me.example"], &raw).await;
    assert_eq!(code, b'c');
    // A customer may relay.
    let mut mta = Mta::connect(&addr).await;
    let (_, code) = mta.message("198.51.100.5", Some("alice"), &["bob@peer.example"], &raw).await;
    assert_eq!(code, b'c');
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_only_what_the_mta_waits_for() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, addr) = node(tmp.path(), 1 << 20, false).await;
    // Postfix offers every step: only the end of message is answered, DATA and unknown
    // commands are not even sent.
    let mta = Mta::connect(&addr).await;
    for cmd in [b'C', b'H', b'M', b'R', b'L', b'N', b'B', b'T', b'U'] {
        assert!(!mta.answers(cmd), "the milter still answers {}", cmd as char);
    }
    assert_eq!(mta.proto & 0x300, 0x300, "SMFIP_NODATA and SMFIP_NOUNKNOWN");
    // Pipelined without waiting, as Postfix does: the record and the header still come.
    let raw = msg("quiet", 3);
    let mut mta = mta;
    let (added, code) = mta.message("192.0.2.7", Some("alice"), &["x@me.example"], &raw).await;
    assert_eq!(code, b'c');
    assert!(header(&added, "X-Ringlog").unwrap().contains("index="), "{added:?}");
    assert_eq!(hops(&r, &raw).len(), 1);

    // An MTA that offers no "no reply" steps gets an answer to every command (a stray or
    // missing answer would desynchronise the exchange and fail the message below).
    let mut old = Mta::connect_offering(&addr, 0x7f).await;
    for cmd in [b'C', b'H', b'M', b'R', b'L', b'N', b'B', b'T'] {
        assert!(old.answers(cmd));
    }
    let raw = msg("chatty", 3);
    let (added, code) = old.message("192.0.2.7", None, &["x@me.example"], &raw).await;
    assert_eq!(code, b'c');
    assert!(header(&added, "X-Ringlog").unwrap().contains("index="), "{added:?}");
    assert_eq!(hops(&r, &raw).len(), 1);
    r.stop().await.unwrap();
}
