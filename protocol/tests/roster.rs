//! The roster: admissions, updates, peering, expulsion and reinstatement as data-driven scenarios;
//! every refusal with its reason and an unchanged roster; trust verdicts and ring routes; and the
//! fold's independence from the order logs and entries arrive in.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure report

use proptest::prelude::*;
use ringlog_protocol::genesis::{Genesis, GENESIS_VERSION};
use ringlog_protocol::record::{
    Admission, Body, Cosign, Entry, Expulsion, HopRecord, MemberInfo, MemberUpdate, NextHop,
    Peering, PrevHop, Reinstatement, SignedEntry, Trust, Verdicts,
};
use ringlog_protocol::roster::{peering_statement, Roster, RosterError, Route, Status};
use ringlog_protocol::{sha256, Hash, LogId, SecretKey};
use std::collections::BTreeMap;

/// A ring under test: genesis, every member's keys, every log.
struct Ring {
    seed: u64,
    g: Genesis,
    logs: BTreeMap<LogId, Vec<SignedEntry>>,
    /// Incrementally applied roster (entries applied in the order they are written).
    live: Roster,
    /// Entries the live roster refused.
    failed: Vec<(LogId, u64)>,
}

fn log_key(seed: u64, name: &str) -> SecretKey {
    SecretKey::from_seed(sha256(&[b"log", &seed.to_le_bytes(), name.as_bytes()]).0)
}

fn node_key(seed: u64, name: &str) -> SecretKey {
    SecretKey::from_seed(sha256(&[b"node", &seed.to_le_bytes(), name.as_bytes()]).0)
}

fn info(seed: u64, name: &str) -> MemberInfo {
    MemberInfo {
        name: name.to_string(),
        log_key: log_key(seed, name).public(),
        node_key: node_key(seed, name).public(),
        addrs: vec![format!("/dns4/{name}/tcp/4001")],
        mail_hosts: vec![format!("mx.{name}")],
        domains: vec![domain(name)],
        abuse: format!("abuse@{name}"),
    }
}

/// The mail domain a test member serves: `isp-a` serves `isp-a.example`.
fn domain(name: &str) -> String {
    format!("{name}.example")
}

fn hop_body() -> Body {
    Body::Hop(HopRecord {
        time_ms: 0,
        mfp1: Hash([1; 32]),
        mfp1_lite: Hash([2; 32]),
        body: Hash([3; 32]),
        parts: vec![],
        prev: PrevHop::Member { name: "x".into() },
        next: NextHop::Local { domain: "y".into() },
        queue_id: "q".into(),
        rcpt_count: 1,
        verdicts: Verdicts::default(),
        transform: None,
    })
}

fn evidence(n: u8) -> Vec<Hash> {
    vec![sha256(&[b"bundle", &[n]])]
}

impl Ring {
    fn new(seed: u64, backbone: &[&str], quorum: u32) -> Ring {
        let g = Genesis {
            version: GENESIS_VERSION,
            ring: "test-ring".into(),
            members: backbone.iter().map(|n| info(seed, n)).collect(),
            backbone_quorum: quorum,
            witness_k: 0,
        };
        g.check().unwrap();
        let live = Roster::from_genesis(&g);
        Ring { seed, g, logs: BTreeMap::new(), live, failed: Vec::new() }
    }

    fn ring_id(&self) -> Hash {
        self.g.ring_id()
    }

    fn len(&self, name: &str) -> u64 {
        let id = log_key(self.seed, name).public();
        self.logs.get(&id).map_or(0, |l| l.len() as u64)
    }

    /// Writes `body` as `writer`'s next entry and applies it to the live roster; an `Err` must
    /// leave the live roster unchanged.
    fn write(&mut self, writer: &str, body: Body) -> Result<(), RosterError> {
        let key = log_key(self.seed, writer);
        let index = self.len(writer);
        let e = Entry { log: key.public(), index, body }.sign(&key).unwrap();
        self.logs.entry(key.public()).or_default().push(e.clone());
        let before = self.live.clone();
        let r = self.live.apply(&e);
        if r.is_err() {
            assert_eq!(self.live, before, "a refused entry changed the roster");
            self.failed.push((key.public(), index));
        }
        r
    }

    fn admit(&mut self, sponsor: &str, name: &str) -> Result<(), RosterError> {
        let member = info(self.seed, name);
        self.write(sponsor, Body::Admit(Admission { member }))
    }

    fn hop(&mut self, writer: &str) {
        self.write(writer, hop_body()).unwrap();
    }

    fn update(&mut self, writer: &str, hosts: &[&str]) -> Result<(), RosterError> {
        let u = MemberUpdate {
            addrs: vec![],
            mail_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            domains: vec![domain(writer)],
            abuse: format!("abuse@{writer}"),
        };
        self.write(writer, Body::Update(u))
    }

    /// A peering entry by `writer` countersigned with `signer`'s log key (the partner's, unless
    /// forging).
    fn peer_signed(
        &mut self,
        writer: &str,
        partner: &str,
        end: bool,
        signer: &str,
    ) -> Result<(), RosterError> {
        let change = self.live.member(writer).and_then(|m| m.peer_changes.get(partner));
        let statement =
            peering_statement(&self.ring_id(), writer, partner, end, change.copied().unwrap_or(0));
        let countersig = log_key(self.seed, signer).sign(&statement);
        let p = Peering { member: writer.into(), partner: partner.into(), end, countersig };
        self.write(writer, Body::Peer(p))
    }

    fn peer(&mut self, writer: &str, partner: &str, end: bool) -> Result<(), RosterError> {
        self.peer_signed(writer, partner, end, partner)
    }

    /// An expulsion by `writer`, cosigned by `signers` over the statement for the target's
    /// current decision.
    fn expel(
        &mut self,
        writer: &str,
        target: &str,
        from_index: u64,
        signers: &[&str],
    ) -> Result<(), RosterError> {
        let mut x = Expulsion {
            member: target.into(),
            from_index,
            evidence: evidence(1),
            reason: "spam run".into(),
            quorum: vec![],
        };
        let decision = self.live.backbone_decisions();
        let st = Expulsion::statement(
            &self.ring_id(),
            target,
            decision,
            from_index,
            &x.evidence,
            &x.reason,
        );
        x.quorum = self.cosigns(signers, &st);
        self.write(writer, Body::Expel(x))
    }

    fn reinstate(
        &mut self,
        writer: &str,
        target: &str,
        from_index: u64,
        signers: &[&str],
    ) -> Result<(), RosterError> {
        let mut r = Reinstatement {
            member: target.into(),
            from_index,
            reason: "cleaned up".into(),
            quorum: vec![],
        };
        let decision = self.live.backbone_decisions();
        let st = Reinstatement::statement(&self.ring_id(), target, decision, from_index, &r.reason);
        r.quorum = self.cosigns(signers, &st);
        self.write(writer, Body::Reinstate(r))
    }

    fn cosigns(&self, signers: &[&str], statement: &[u8]) -> Vec<Cosign> {
        signers
            .iter()
            .map(|s| Cosign { member: s.to_string(), sig: log_key(self.seed, s).sign(statement) })
            .collect()
    }

    /// Folds all logs and checks the fold agrees with the live roster.
    fn folded(&self) -> Roster {
        let (r, _) = Roster::fold(&self.g, &self.logs);
        assert_eq!(r, self.live, "fold and in-order application disagree");
        r
    }
}

/// Two backbone members, three ISPs: isp-a and isp-b under bb-1, isp-c under bb-2; a customer
/// of isp-a.
fn standard_ring() -> Ring {
    let mut ring = Ring::new(1, &["bb-1", "bb-2"], 2);
    ring.admit("bb-1", "isp-a").unwrap();
    ring.admit("bb-1", "isp-b").unwrap();
    ring.admit("bb-2", "isp-c").unwrap();
    ring.admit("isp-a", "cust-a").unwrap();
    ring
}

fn check_routes(roster: &Roster, cases: &[(&str, &str, Route)]) {
    for (me, to, want) in cases {
        assert_eq!(&roster.route(me, &domain(to)), want, "route from {me} to {to}");
    }
}

fn member(n: &str) -> Route {
    Route::Member(n.into())
}

fn up(n: &str) -> Route {
    Route::Upstream(n.into())
}

#[test]
fn genesis_admissions_and_routes() {
    let ring = standard_ring();
    let r = ring.folded();
    assert_eq!(r.members().count(), 6);
    let a = r.member("isp-a").unwrap();
    assert_eq!(a.sponsor.as_deref(), Some("bb-1"));
    assert!(!a.backbone && r.member("bb-2").unwrap().backbone);
    assert_eq!(r.by_log_key(&log_key(1, "isp-c").public()).unwrap().info.name, "isp-c");
    assert_eq!(r.by_node_key(&node_key(1, "isp-c").public()).unwrap().info.name, "isp-c");
    assert!(r.by_log_key(&node_key(1, "isp-c").public()).is_none());
    check_routes(
        &r,
        &[
            ("isp-a", "isp-a", Route::Local),
            ("isp-a", "cust-a", member("cust-a")),
            ("isp-a", "isp-b", up("bb-1")),
            ("isp-a", "isp-c", up("bb-1")),
            ("cust-a", "isp-c", up("isp-a")),
            ("bb-1", "cust-a", member("isp-a")),
            ("bb-1", "isp-b", member("isp-b")),
            ("bb-1", "isp-c", member("bb-2")),
            ("bb-2", "cust-a", member("bb-1")),
            ("bb-2", "isp-c", member("isp-c")),
            ("isp-c", "cust-a", up("bb-2")),
            ("nobody", "isp-a", Route::Unroutable),
        ],
    );
    assert_eq!(r.route("isp-a", "elsewhere.example"), Route::Outside);
    // Domains and hosts match case-insensitively, with or without a trailing dot.
    assert_eq!(r.route("isp-a", "ISP-A.Example."), Route::Local);
    assert_eq!(r.trust("MX.isp-b.").trust, Trust::Trusted);
    let allowed = r.allowed_node_keys();
    assert_eq!(allowed.len(), 6);
    assert!(allowed.iter().any(|(n, k, _)| n == "cust-a" && *k == node_key(1, "cust-a").public()));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["members"]["isp-a"]["status"]["status"], "active");
}

#[test]
fn peering_changes_a_route_and_ending_it_restores_it() {
    let mut ring = standard_ring();
    assert_eq!(ring.live.route("isp-a", &domain("isp-c")), up("bb-1"));
    ring.peer("isp-c", "isp-a", false).unwrap();
    let r = ring.folded();
    assert!(r.member("isp-a").unwrap().peers.contains("isp-c"));
    check_routes(
        &r,
        &[
            ("isp-a", "isp-c", member("isp-c")),
            ("isp-c", "isp-a", member("isp-a")),
            // The partner's customers are reached through the partner.
            ("isp-c", "cust-a", member("isp-a")),
            ("isp-b", "isp-c", up("bb-1")),
        ],
    );
    // A countersignature is good once: replaying the start is refused.
    let start = ring.logs[&log_key(1, "isp-c").public()].last().unwrap().entry.body.clone();
    assert_eq!(
        ring.write("isp-c", start),
        Err(RosterError::BadCountersignature { partner: "isp-a".into() })
    );
    // Either party may end it, with the other's countersignature.
    ring.peer("isp-a", "isp-c", true).unwrap();
    let r = ring.folded();
    assert!(r.member("isp-c").unwrap().peers.is_empty());
    check_routes(&r, &[("isp-a", "isp-c", up("bb-1")), ("isp-c", "cust-a", up("bb-2"))]);
}

#[test]
fn expulsion_makes_hosts_expelled_and_refuses_later_entries() {
    let mut ring = standard_ring();
    ring.hop("isp-b");
    ring.hop("isp-b");
    assert_eq!(ring.live.trust("mx.isp-b").trust, Trust::Trusted);
    // isp-b's sponsor expels it from index 2 of its log.
    ring.expel("bb-1", "isp-b", 2, &[]).unwrap();
    let r = ring.folded();
    let v = r.trust("mx.isp-b");
    assert_eq!((v.trust, v.member.as_deref()), (Trust::Expelled, Some("isp-b")));
    assert_eq!(r.trust("mx.unknown.example").trust, Trust::Untrusted);
    let Status::Expelled { by, from_index, evidence: ev, .. } = &r.member("isp-b").unwrap().status
    else {
        panic!("isp-b is not expelled")
    };
    assert_eq!((by.as_str(), *from_index, ev), ("bb-1", 2, &evidence(1)));
    let b = log_key(1, "isp-b").public();
    assert!(r.accepts_entry(&b, 1));
    assert!(!r.accepts_entry(&b, 2));
    assert!(!r.accepts_entry(&b, 1000));
    assert!(!r.accepts_entry(&log_key(1, "stranger").public(), 0));
    assert!(!r.allowed_node_keys().iter().any(|(n, _, _)| n == "isp-b"));
    assert_eq!(r.route("isp-a", &domain("isp-b")), Route::Unroutable);
    assert_eq!(r.route("isp-b", &domain("isp-a")), Route::Unroutable);
    // Its next entry is at index 2: refused, nothing changed.
    let err = ring.update("isp-b", &["mx2.isp-b"]).unwrap_err();
    assert_eq!(err, RosterError::NotAccepted { member: "isp-b".into(), index: 2 });
    assert!(ring.admit("isp-b", "cust-b").is_err());
    let (r, refused) = Roster::fold(&ring.g, &ring.logs);
    assert_eq!(r, ring.live);
    let at: Vec<(LogId, u64)> = refused.iter().map(|(l, i, _)| (*l, *i)).collect();
    assert_eq!(at, vec![(b, 2), (b, 3)]);
}

#[test]
fn expulsion_reaches_back_over_entries_that_arrived_first() {
    // isp-a admits a customer at index 0 of its log; its sponsor later expels it from index 0.
    // Applied in arrival order the customer got in; the fold does not let it.
    let mut ring = Ring::new(1, &["bb-1", "bb-2"], 2);
    ring.admit("bb-1", "isp-a").unwrap();
    ring.admit("isp-a", "cust-a").unwrap();
    ring.update("cust-a", &["mx.cust-a", "mx2.cust-a"]).unwrap();
    ring.expel("bb-1", "isp-a", 0, &[]).unwrap();
    assert!(ring.live.member("cust-a").is_some());
    let (r, refused) = Roster::fold(&ring.g, &ring.logs);
    assert!(r.member("cust-a").is_none());
    assert_eq!(r.trust("mx.isp-a").trust, Trust::Expelled);
    let a = log_key(1, "isp-a").public();
    let c = log_key(1, "cust-a").public();
    assert!(refused.contains(&(
        a,
        0,
        RosterError::NotAccepted { member: "isp-a".into(), index: 0 }
    )));
    assert!(refused.contains(&(c, 0, RosterError::UnknownLog(c))));
}

#[test]
fn refusals_each_with_its_reason_and_nothing_changed() {
    type Case = (&'static str, fn(&mut Ring) -> Result<(), RosterError>, RosterError);
    let cases: Vec<Case> = vec![
        (
            "expulsion by a member that is not the sponsor",
            |r| r.expel("bb-2", "isp-a", 0, &[]),
            RosterError::NotSponsor { writer: "bb-2".into(), member: "isp-a".into() },
        ),
        (
            "expulsion of oneself",
            |r| r.expel("isp-a", "isp-a", 0, &[]),
            RosterError::NotSponsor { writer: "isp-a".into(), member: "isp-a".into() },
        ),
        (
            "forged countersignature",
            |r| r.peer_signed("isp-a", "isp-c", false, "isp-b"),
            RosterError::BadCountersignature { partner: "isp-c".into() },
        ),
        (
            "countersignature over the end of a peering used to start one",
            |r| {
                let st = peering_statement(&r.ring_id(), "isp-a", "isp-c", true, 0);
                let countersig = log_key(1, "isp-c").sign(&st);
                let p = Peering {
                    member: "isp-a".into(),
                    partner: "isp-c".into(),
                    end: false,
                    countersig,
                };
                r.write("isp-a", Body::Peer(p))
            },
            RosterError::BadCountersignature { partner: "isp-c".into() },
        ),
        (
            "peering appended by someone who is not a party",
            |r| {
                let st = peering_statement(&r.ring_id(), "isp-a", "isp-c", false, 0);
                let countersig = log_key(1, "isp-c").sign(&st);
                let p = Peering {
                    member: "isp-a".into(),
                    partner: "isp-c".into(),
                    end: false,
                    countersig,
                };
                r.write("isp-b", Body::Peer(p))
            },
            RosterError::WrongPeerWriter { named: "isp-a".into(), writer: "isp-b".into() },
        ),
        (
            "peering with oneself",
            |r| r.peer("isp-a", "isp-a", false),
            RosterError::SelfPeering("isp-a".into()),
        ),
        (
            "ending a peering that does not exist",
            |r| r.peer("isp-a", "isp-c", true),
            RosterError::NotPeered { a: "isp-a".into(), b: "isp-c".into() },
        ),
        (
            "a countersignature for a later change of the pair",
            |r| {
                let st = peering_statement(&r.ring_id(), "isp-a", "isp-c", false, 2);
                let countersig = log_key(1, "isp-c").sign(&st);
                let p = Peering {
                    member: "isp-a".into(),
                    partner: "isp-c".into(),
                    end: false,
                    countersig,
                };
                r.write("isp-a", Body::Peer(p))
            },
            RosterError::PeeringOutOfTurn {
                a: "isp-a".into(),
                b: "isp-c".into(),
                signed: 2,
                current: 0,
            },
        ),
        (
            "backbone expulsion without quorum",
            |r| r.expel("bb-1", "bb-2", 0, &[]),
            RosterError::QuorumNotMet { member: "bb-2".into(), have: 1, need: 2 },
        ),
        (
            "backbone expulsion with a signature by a non-backbone member",
            |r| r.expel("bb-1", "bb-2", 0, &["isp-a"]),
            RosterError::QuorumNotMet { member: "bb-2".into(), have: 1, need: 2 },
        ),
        (
            "backbone expulsion carried by a non-backbone member",
            |r| r.expel("isp-a", "bb-2", 0, &["bb-1", "bb-2"]),
            RosterError::NotBackboneWriter { writer: "isp-a".into(), member: "bb-2".into() },
        ),
        (
            "expulsion citing no evidence",
            |r| {
                let x = Expulsion {
                    member: "isp-a".into(),
                    from_index: 0,
                    evidence: vec![],
                    reason: "none".into(),
                    quorum: vec![],
                };
                r.write("bb-1", Body::Expel(x))
            },
            RosterError::NoEvidence("isp-a".into()),
        ),
        (
            "expulsion of a non-member",
            |r| r.expel("bb-1", "ghost", 0, &[]),
            RosterError::UnknownMember("ghost".into()),
        ),
        (
            "admission of a name already taken",
            |r| r.admit("isp-c", "bb-1"),
            RosterError::NameTaken("bb-1".into()),
        ),
        (
            "admission of a name already taken, by the same sponsor",
            |r| r.admit("bb-1", "isp-b"),
            RosterError::NameTaken("isp-b".into()),
        ),
        (
            "admission of a key that is already a member",
            |r| {
                let mut m = info(1, "isp-z");
                m.log_key = log_key(1, "bb-2").public();
                r.write("bb-2", Body::Admit(Admission { member: m }))
            },
            RosterError::KeyTaken { key: log_key(1, "bb-2").public(), holder: "bb-2".into() },
        ),
        (
            "admission of a node key that is another member's log key",
            |r| {
                let mut m = info(1, "isp-z");
                m.node_key = log_key(1, "bb-1").public();
                r.write("bb-2", Body::Admit(Admission { member: m }))
            },
            RosterError::KeyTaken { key: log_key(1, "bb-1").public(), holder: "bb-1".into() },
        ),
        (
            "admission with one key for log and node",
            |r| {
                let mut m = info(1, "isp-z");
                m.node_key = m.log_key;
                r.write("bb-2", Body::Admit(Admission { member: m }))
            },
            RosterError::SameKeys("isp-z".into()),
        ),
        (
            "admission claiming another member's mail host",
            |r| {
                let mut m = info(1, "isp-z");
                m.mail_hosts.push("MX.bb-1.".into());
                r.write("bb-2", Body::Admit(Admission { member: m }))
            },
            RosterError::HostTaken { host: "mx.bb-1".into(), holder: "bb-1".into() },
        ),
        (
            "update claiming another member's domain",
            |r| {
                let u = MemberUpdate {
                    addrs: vec![],
                    mail_hosts: vec![],
                    domains: vec![domain("bb-2")],
                    abuse: String::new(),
                };
                r.write("isp-a", Body::Update(u))
            },
            RosterError::DomainTaken { domain: domain("bb-2"), holder: "bb-2".into() },
        ),
        (
            "entry of a log that belongs to no member",
            |r| r.update("stranger", &[]),
            RosterError::UnknownLog(log_key(1, "stranger").public()),
        ),
        (
            "reinstatement of a member in good standing",
            |r| r.reinstate("bb-1", "isp-a", 0, &[]),
            RosterError::NotExpelled("isp-a".into()),
        ),
        (
            "entry with a bad signature",
            |r| {
                let key = log_key(1, "isp-a");
                let body = Body::Update(MemberUpdate {
                    addrs: vec![],
                    mail_hosts: vec![],
                    domains: vec![],
                    abuse: String::new(),
                });
                let mut e =
                    Entry { log: key.public(), index: r.len("isp-a"), body }.sign(&key).unwrap();
                e.sig.0[0] ^= 1;
                r.live.apply(&e)
            },
            RosterError::BadSignature,
        ),
    ];
    for (what, act, want) in cases {
        let mut ring = standard_ring();
        let before = ring.live.clone();
        let got = act(&mut ring);
        assert_eq!(got, Err(want.clone()), "{what}");
        assert_eq!(ring.live, before, "{what}: roster changed");
        let (folded, refused) = Roster::fold(&ring.g, &ring.logs);
        assert_eq!(folded, before, "{what}: fold changed the roster");
        // The fold refuses the entry too, for the same reason (once nothing else can clear it).
        if !matches!(want, RosterError::BadSignature) {
            assert!(refused.iter().any(|(_, _, e)| *e == want), "{what}: fold gave {refused:?}");
        }
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn two_sponsors_claiming_one_name_the_fold_order_decides() {
    // Logs carry no common clock: of two admissions of one name in two logs, the fold keeps
    // the one it meets first (lower log id within a pass) and refuses the other.
    let mut ring = Ring::new(3, &["bb-1", "bb-2"], 2);
    ring.admit("bb-1", "isp-x").unwrap();
    ring.admit("bb-2", "isp-x").unwrap_err();
    let (r, refused) = Roster::fold(&ring.g, &ring.logs);
    let (b1, b2) = (log_key(3, "bb-1").public(), log_key(3, "bb-2").public());
    let (winner, loser) = if b1 < b2 { ("bb-1", b2) } else { ("bb-2", b1) };
    assert_eq!(r.member("isp-x").unwrap().sponsor.as_deref(), Some(winner));
    assert_eq!(refused, vec![(loser, 0, RosterError::NameTaken("isp-x".into()))]);
}

#[test]
fn replaying_an_applied_entry_is_refused() {
    let mut ring = standard_ring();
    ring.update("isp-a", &["mx.isp-a", "mx2.isp-a"]).unwrap();
    let id = log_key(1, "isp-a").public();
    let last = ring.logs[&id].last().unwrap().clone();
    let err = ring.live.apply(&last).unwrap_err();
    assert_eq!(err, RosterError::Stale { member: "isp-a".into(), index: 1, last: 1 });
    assert_eq!(ring.live.trust("mx2.isp-a").trust, Trust::Trusted);
}

#[test]
fn reinstatement_accepts_the_log_again_after_the_gap() {
    let mut ring = standard_ring();
    ring.hop("isp-b");
    ring.expel("bb-1", "isp-b", 1, &[]).unwrap();
    // Written while expelled (index 1 and 2): refused.
    assert!(ring.update("isp-b", &["mx.isp-b", "bad.isp-b"]).is_err());
    ring.hop("isp-b");
    // Only the sponsor may reinstate, and not before the expulsion point.
    assert_eq!(
        ring.reinstate("bb-2", "isp-b", 3, &[]),
        Err(RosterError::NotSponsor { writer: "bb-2".into(), member: "isp-b".into() })
    );
    assert_eq!(
        ring.reinstate("bb-1", "isp-b", 0, &[]),
        Err(RosterError::BadResumeIndex { from_index: 0, expelled_from: 1 })
    );
    ring.reinstate("bb-1", "isp-b", 3, &[]).unwrap();
    ring.update("isp-b", &["mx.isp-b", "mx3.isp-b"]).unwrap();
    let r = ring.folded();
    let b = r.member("isp-b").unwrap();
    assert!(b.is_active());
    assert_eq!(b.gaps, vec![(1, 3)]);
    assert_eq!(b.decisions, 2);
    let id = b.info.log_key;
    let accepted: Vec<bool> = (0..5).map(|i| r.accepts_entry(&id, i)).collect();
    assert_eq!(accepted, vec![true, false, false, true, true]);
    assert_eq!(r.trust("mx3.isp-b").trust, Trust::Trusted);
    assert_eq!(r.trust("bad.isp-b").trust, Trust::Untrusted);
    assert_eq!(r.route("isp-a", &domain("isp-b")), up("bb-1"));
}

#[test]
fn backbone_decisions_need_the_quorum() {
    let mut ring = Ring::new(2, &["bb-1", "bb-2", "bb-3"], 2);
    ring.admit("bb-3", "isp-c").unwrap();
    ring.hop("bb-3");
    // A signature over another decision number does not count as a quorum for this one.
    let mut x = Expulsion {
        member: "bb-3".into(),
        from_index: 1,
        evidence: evidence(2),
        reason: "open relay".into(),
        quorum: vec![],
    };
    let wrong = Expulsion::statement(&ring.ring_id(), "bb-3", 5, 1, &x.evidence, &x.reason);
    x.quorum = ring.cosigns(&["bb-2"], &wrong);
    assert_eq!(
        ring.write("bb-1", Body::Expel(x)),
        Err(RosterError::OutOfTurn { member: "bb-3".into(), signed: 5, current: 0 })
    );
    // bb-1 carries it, bb-2 cosigns: two of three.
    ring.expel("bb-1", "bb-3", 1, &["bb-2"]).unwrap();
    let r = ring.folded();
    assert_eq!(r.trust("mx.bb-3").trust, Trust::Expelled);
    // bb-3's downstream member stays; its upstream is gone.
    assert_eq!(r.route("isp-c", &domain("bb-1")), Route::Unroutable);
    assert_eq!(r.route("bb-1", &domain("isp-c")), Route::Unroutable);
    assert_eq!(r.route("bb-1", &domain("bb-2")), member("bb-2"));
    // The expelled member's signature no longer counts.
    assert_eq!(
        ring.expel("bb-2", "bb-1", 0, &["bb-3"]),
        Err(RosterError::QuorumNotMet { member: "bb-1".into(), have: 1, need: 2 })
    );
    // Reinstated by a quorum carried in another log.
    ring.reinstate("bb-2", "bb-3", 1, &["bb-1"]).unwrap();
    let r = ring.folded();
    assert!(r.member("bb-3").unwrap().is_active());
    assert_eq!(r.route("bb-1", &domain("isp-c")), member("bb-3"));
}

/// One step of a random governance history, interpreted against the live roster so that it is
/// valid when written (or invalid for a reason that does not depend on timing).
#[derive(Clone, Debug)]
enum Op {
    Admit(u8),
    Update(u8, u8),
    Peer(u8, u8),
    Expel(u8),
    Reinstate(u8),
    Hop(u8),
    ForgedPeer(u8, u8),
    NotSponsorExpel(u8, u8),
    ExpelledWrites(u8),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let b = any::<u8>();
    prop_oneof![
        3 => b.prop_map(Op::Admit),
        2 => (b, b).prop_map(|(x, y)| Op::Update(x, y)),
        3 => (b, b).prop_map(|(x, y)| Op::Peer(x, y)),
        2 => b.prop_map(Op::Expel),
        2 => b.prop_map(Op::Reinstate),
        2 => b.prop_map(Op::Hop),
        1 => (b, b).prop_map(|(x, y)| Op::ForgedPeer(x, y)),
        1 => (b, b).prop_map(|(x, y)| Op::NotSponsorExpel(x, y)),
        1 => b.prop_map(Op::ExpelledWrites),
    ]
}

const BACKBONE: [&str; 3] = ["bb-0", "bb-1", "bb-2"];

fn pick(v: &[String], i: u8) -> Option<&String> {
    (!v.is_empty()).then(|| &v[usize::from(i) % v.len()])
}

/// Plays `ops` on a fresh ring (keys derived from `seed`), writing each step into its writer's
/// log and applying it in that order.
fn play(seed: u64, ops: &[Op]) -> Ring {
    let mut ring = Ring::new(seed, &BACKBONE, 2);
    let mut next_name = 0u32;
    for op in ops {
        let names = |ring: &Ring, active: bool| -> Vec<String> {
            ring.live
                .members()
                .filter(|m| m.is_active() == active)
                .map(|m| m.info.name.clone())
                .collect()
        };
        let active = names(&ring, true);
        let expelled = names(&ring, false);
        let sponsor_of = |ring: &Ring, n: &str| ring.live.member(n).and_then(|m| m.sponsor.clone());
        match op {
            Op::Admit(s) => {
                let Some(s) = pick(&active, *s).cloned() else { continue };
                next_name += 1;
                ring.admit(&s, &format!("m-{next_name}")).unwrap();
            }
            Op::Update(w, k) => {
                let Some(w) = pick(&active, *w).cloned() else { continue };
                ring.update(&w, &[&format!("mx{}.{w}", k % 3), &format!("mx.{w}")]).unwrap();
            }
            Op::Peer(a, b) => {
                let (Some(a), Some(b)) = (pick(&active, *a).cloned(), pick(&active, *b).cloned())
                else {
                    continue;
                };
                if a == b {
                    continue;
                }
                let peered = ring.live.member(&a).unwrap().peers.contains(&b);
                ring.peer(&a, &b, peered).unwrap();
            }
            Op::Expel(t) => {
                let Some(t) = pick(&active, *t).cloned() else { continue };
                let from = ring.len(&t);
                match sponsor_of(&ring, &t) {
                    Some(s) if ring.live.member(&s).unwrap().is_active() => {
                        ring.expel(&s, &t, from, &[]).unwrap();
                    }
                    Some(_) => {}
                    None => {
                        let others: Vec<&str> = BACKBONE
                            .iter()
                            .copied()
                            .filter(|b| *b != t && ring.live.member(b).unwrap().is_active())
                            .collect();
                        if others.len() >= 2 {
                            ring.expel(others[0], &t, from, &[others[1]]).unwrap();
                        }
                    }
                }
            }
            Op::Reinstate(t) => {
                let Some(t) = pick(&expelled, *t).cloned() else { continue };
                let from = ring.len(&t);
                match sponsor_of(&ring, &t) {
                    Some(s) if ring.live.member(&s).unwrap().is_active() => {
                        ring.reinstate(&s, &t, from, &[]).unwrap();
                    }
                    Some(_) => {}
                    None => {
                        let others: Vec<&str> = BACKBONE
                            .iter()
                            .copied()
                            .filter(|b| *b != t && ring.live.member(b).unwrap().is_active())
                            .collect();
                        if let [w, ..] = others[..] {
                            ring.reinstate(w, &t, from, &[&t]).unwrap_err();
                        }
                        if others.len() >= 2 {
                            ring.reinstate(others[1], &t, from, &[others[0]]).unwrap();
                        }
                    }
                }
            }
            Op::Hop(w) => {
                let Some(w) = pick(&active, *w).cloned() else { continue };
                ring.hop(&w);
            }
            Op::ForgedPeer(a, b) => {
                let (Some(a), Some(b)) = (pick(&active, *a).cloned(), pick(&active, *b).cloned())
                else {
                    continue;
                };
                if a != b {
                    let err = ring.peer_signed(&a, &b, false, &a).unwrap_err();
                    assert_eq!(err, RosterError::BadCountersignature { partner: b });
                }
            }
            Op::NotSponsorExpel(w, t) => {
                let (Some(w), Some(t)) = (pick(&active, *w).cloned(), pick(&active, *t).cloned())
                else {
                    continue;
                };
                if sponsor_of(&ring, &t).is_some_and(|s| s != w) {
                    assert!(matches!(
                        ring.expel(&w, &t, 0, &[]),
                        Err(RosterError::NotSponsor { .. })
                    ));
                }
            }
            Op::ExpelledWrites(w) => {
                let Some(w) = pick(&expelled, *w).cloned() else { continue };
                assert!(matches!(
                    ring.update(&w, &[&format!("evil.{w}")]),
                    Err(RosterError::NotAccepted { .. })
                ));
            }
        }
    }
    ring
}

/// Fisher-Yates with a tiny deterministic generator.
fn shuffle<T>(v: &mut [T], mut state: u64) {
    for i in (1..v.len()).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever order the logs are handed in, whatever order each log's entries are in, with
    /// duplicates, and whatever the log ids (which fix the fold's pass order), the fold gives
    /// the roster of applying the history in the order it was written.
    #[test]
    fn fold_is_independent_of_arrival_order(
        seed in 0u64..1_000_000,
        ops in prop::collection::vec(arb_op(), 0..40),
        shuffle_seed in any::<u64>(),
    ) {
        let ring = play(seed, &ops);
        let (folded, refused) = Roster::fold(&ring.g, &ring.logs);
        prop_assert_eq!(&folded, &ring.live);
        // Refused entries are exactly those that failed when written.
        let mut want = ring.failed.clone();
        want.sort();
        let got: Vec<(LogId, u64)> = refused.iter().map(|(l, i, _)| (*l, *i)).collect();
        prop_assert_eq!(&got, &want);

        // Hand the logs over in another order, each shuffled, some entries twice.
        let mut pairs: Vec<(LogId, Vec<SignedEntry>)> =
            ring.logs.iter().map(|(k, v)| (*k, v.clone())).collect();
        shuffle(&mut pairs, shuffle_seed);
        let mut again = BTreeMap::new();
        for (n, (k, mut v)) in pairs.into_iter().enumerate() {
            if let Some(first) = v.first().cloned() {
                if n % 2 == 0 {
                    v.push(first);
                }
            }
            shuffle(&mut v, shuffle_seed ^ n as u64);
            again.insert(k, v);
        }
        let (folded2, refused2) = Roster::fold(&ring.g, &again);
        prop_assert_eq!(&folded2, &folded);
        let got: Vec<(LogId, u64)> = refused2.iter().map(|(l, i, _)| (*l, *i)).collect();
        prop_assert_eq!(got, want);

        // The same history under other keys (another pass order): the same roster by name.
        let other = play(seed.wrapping_add(7_777_777), &ops);
        let (folded3, _) = Roster::fold(&other.g, &other.logs);
        prop_assert_eq!(&folded3, &other.live);
        prop_assert_eq!(summary(&folded3), summary(&folded));
    }
}

/// What a roster says, without keys: name, sponsor, standing, peers, hosts, domains.
fn summary(r: &Roster) -> Vec<String> {
    r.members()
        .map(|m| {
            let standing = match &m.status {
                Status::Active => "active".to_string(),
                Status::Expelled { by, from_index, .. } => {
                    format!("expelled by {by} from {from_index}")
                }
            };
            format!(
                "{} {:?} {standing} {:?} {:?} {:?} {:?} {}",
                m.info.name,
                m.sponsor,
                m.peers,
                m.info.mail_hosts,
                m.info.domains,
                m.gaps,
                m.decisions
            )
        })
        .collect()
}
