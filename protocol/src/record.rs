//! Log entries: the hop record, the governance records, and their signed, canonical binary form.
//!
//! Every entry is written by exactly one log and signed by that log's key over
//! `"ringlog/entry/v1\n" || bincode(Entry)`, where `Entry` carries the log id and the index, so a
//! signature cannot be replayed at another position or in another log. The bytes stored in the log
//! (and hashed as the Merkle leaf) are `0x01 || bincode(Entry) || signature`.

use crate::bytes::{sha256, Hash, Sig};
use crate::keys::{KeyError, LogId, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The version byte that starts every encoded entry.
pub const ENTRY_VERSION: u8 = 1;
/// Domain-separation prefix of the bytes an entry signature covers.
pub const ENTRY_SIG_PREFIX: &[u8] = b"ringlog/entry/v1\n";
/// Largest encoded entry accepted anywhere.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;
/// Longest string field (names, hosts, queue ids, reasons) in bytes.
pub const MAX_STR: usize = 512;
/// Most items in any list field.
pub const MAX_LIST: usize = 64;

/// How a previous hop handed us the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrevHop {
    /// Another ring member's mail server.
    Member {
        /// The member's name.
        name: String,
    },
    /// An authenticated customer of the writer, stored only as a salted commitment
    /// (see [`customer_commitment`]).
    Customer {
        /// SHA-256 commitment to (salt, account).
        commitment: Hash,
    },
    /// A host outside the ring.
    External {
        /// The connecting IP address.
        ip: IpAddr,
        /// The name it gave in HELO/EHLO.
        helo: String,
    },
}

/// Where the writer passed the message on to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextHop {
    /// Another ring member.
    Member {
        /// The member's name.
        name: String,
    },
    /// Delivered locally, for a recipient domain the writer serves.
    Local {
        /// The recipient domain.
        domain: String,
    },
    /// A host outside the ring.
    External {
        /// Host name or address.
        host: String,
    },
}

/// The trust verdict for a connecting host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// A member in good standing.
    Trusted,
    /// Outside the ring.
    Untrusted,
    /// An expelled member.
    Expelled,
}

/// Local verdicts the writer had on the message, where known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Trust verdict on the previous hop.
    pub trust: Option<Trust>,
    /// Spam score times 1000 (so 5.5 is 5500).
    pub spam_score_milli: Option<i32>,
    /// Name of a virus found.
    pub virus: Option<String>,
}

/// A hop that changed the message (a mailing list): fingerprint in and out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transform {
    /// mfp1 of the message as received.
    pub input: Hash,
    /// mfp1 of the message as sent on (equal to the record's `mfp1`).
    pub output: Hash,
}

/// "I received message M from `prev` and passed it to `next`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRecord {
    /// Writer's clock, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The message fingerprint.
    pub mfp1: Hash,
    /// The fingerprint without Message-ID and Date.
    pub mfp1_lite: Hash,
    /// Root of the body tree.
    pub body: Hash,
    /// Leaf hashes of the body parts when there is more than one (attachments).
    pub parts: Vec<Hash>,
    /// Previous hop.
    pub prev: PrevHop,
    /// Next hop.
    pub next: NextHop,
    /// Writer's queue id (joins with its own mail logs).
    pub queue_id: String,
    /// Number of recipients on this hop.
    pub rcpt_count: u32,
    /// Local verdicts.
    pub verdicts: Verdicts,
    /// Set when this hop changed the message.
    pub transform: Option<Transform>,
}

/// What the ring knows about a member; set by its admission and by its own updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// DNS-style name, e.g. `isp-a.example`.
    pub name: String,
    /// The Ed25519 key of its log (also its log id).
    pub log_key: PublicKey,
    /// The Ed25519 public key of its libp2p node identity.
    pub node_key: PublicKey,
    /// libp2p listen addresses (multiaddr text).
    pub addrs: Vec<String>,
    /// IP addresses or host names of its mail servers.
    pub mail_hosts: Vec<String>,
    /// Mail domains it serves.
    pub domains: Vec<String>,
    /// Abuse contact (an address of the organisation, never a person's).
    pub abuse: String,
}

/// A sponsor admits a downstream member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// The new member.
    pub member: MemberInfo,
}

/// A member's self-declared update of its hosts, domains, addresses and contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// New libp2p addresses.
    pub addrs: Vec<String>,
    /// New mail hosts.
    pub mail_hosts: Vec<String>,
    /// New served domains.
    pub domains: Vec<String>,
    /// New abuse contact.
    pub abuse: String,
}

/// A direct mail exchange agreement between the writer and `partner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peering {
    /// The writer's member name.
    pub member: String,
    /// The other party.
    pub partner: String,
    /// `true` to end an agreement.
    pub end: bool,
    /// The partner's log-key signature over [`crate::roster::peering_statement`]
    /// ([`Peering::statement`] plus the pair's change number).
    pub countersig: Sig,
}

impl Peering {
    /// The bytes both parties agree to: the pair, sorted, and whether it starts or ends.
    pub fn statement(ring: &Hash, a: &str, b: &str, end: bool) -> Vec<u8> {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let verb = if end { "end" } else { "start" };
        format!("ringlog/peering/v1\n{}\n{x}\n{y}\n{verb}\n", ring.to_hex()).into_bytes()
    }
}

/// A signature by another member, for decisions that need a quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosign {
    /// Signing member.
    pub member: String,
    /// Its log-key signature over the decision statement.
    pub sig: Sig,
}

/// Expulsion of a member by its sponsor (or by the quorum, for a backbone member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expulsion {
    /// The expelled member.
    pub member: String,
    /// Entries the member wrote at or past this index of its log are not accepted.
    pub from_index: u64,
    /// SHA-256 of each evidence bundle cited.
    pub evidence: Vec<Hash>,
    /// Human-readable reason.
    pub reason: String,
    /// Quorum signatures (backbone members only).
    pub quorum: Vec<Cosign>,
}

/// Reinstatement of an expelled member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reinstatement {
    /// The reinstated member.
    pub member: String,
    /// The member's entries at or past this index of its log are accepted again; those from the
    /// expulsion's `from_index` up to here stay refused. At least the expulsion's `from_index`.
    pub from_index: u64,
    /// Human-readable reason.
    pub reason: String,
    /// Quorum signatures (backbone members only).
    pub quorum: Vec<Cosign>,
}

/// What an entry says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A hop record.
    Hop(HopRecord),
    /// Admission of a downstream member.
    Admit(Admission),
    /// Self-declared update.
    Update(MemberUpdate),
    /// Peering agreement with countersignature.
    Peer(Peering),
    /// Expulsion.
    Expel(Expulsion),
    /// Reinstatement.
    Reinstate(Reinstatement),
}

/// An entry at a position in a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The log it belongs to.
    pub log: LogId,
    /// Its index in that log (0-based).
    pub index: u64,
    /// Content.
    pub body: Body,
}

/// An entry with its writer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The entry.
    pub entry: Entry,
    /// Signature by `entry.log` over [`Entry::signing_bytes`].
    pub sig: Sig,
}

/// Why bytes are not a valid encoded entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Empty input.
    #[error("empty input")]
    Empty,
    /// Larger than [`MAX_ENTRY_BYTES`].
    #[error("entry of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The version byte is not one we know.
    #[error("unknown entry version {0}")]
    UnknownVersion(u8),
    /// bincode could not decode it.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// Bytes after the signature.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Decodes, but not from its one canonical encoding.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// A field is over its limits.
    #[error("invalid field: {0}")]
    Invalid(String),
}

/// Why a signed entry is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The signature does not verify under the log's key.
    #[error("bad entry signature: {0}")]
    Signature(#[from] KeyError),
    /// Entry is for a different log than expected.
    #[error("entry belongs to log {found}, expected {expected}")]
    WrongLog {
        /// Expected log.
        expected: LogId,
        /// Log in the entry.
        found: LogId,
    },
    /// Entry is at a different index than expected.
    #[error("entry has index {found}, expected {expected}")]
    WrongIndex {
        /// Expected index.
        expected: u64,
        /// Index in the entry.
        found: u64,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ENTRY_BYTES>()
}

/// Canonical bincode encoding of any value (bincode 2, standard config: little-endian varints).
pub fn to_canonical<T: Serialize>(v: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our plain data types except by the size limit,
    // which `validate` keeps far away; an empty vec then fails decoding downstream.
    bincode::serde::encode_to_vec(v, config()).unwrap_or_default()
}

/// Decodes exactly one canonical value from `bytes`: trailing bytes and non-canonical forms
/// are rejected.
pub fn from_canonical<T: Serialize + for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (v, used): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    if to_canonical(&v) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(v)
}

fn check_str(what: &str, s: &str) -> Result<(), DecodeError> {
    if s.len() > MAX_STR {
        return Err(DecodeError::Invalid(format!("{what} longer than {MAX_STR} bytes")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(DecodeError::Invalid(format!("{what} has control characters")));
    }
    Ok(())
}

fn check_list<T>(what: &str, l: &[T]) -> Result<(), DecodeError> {
    if l.len() > MAX_LIST {
        return Err(DecodeError::Invalid(format!("{what} has more than {MAX_LIST} items")));
    }
    Ok(())
}

fn check_strs(what: &str, l: &[String]) -> Result<(), DecodeError> {
    check_list(what, l)?;
    l.iter().try_for_each(|s| check_str(what, s))
}

impl MemberInfo {
    fn validate(&self) -> Result<(), DecodeError> {
        check_str("name", &self.name)?;
        if self.name.is_empty() {
            return Err(DecodeError::Invalid("empty member name".into()));
        }
        check_strs("addrs", &self.addrs)?;
        check_strs("mail_hosts", &self.mail_hosts)?;
        check_strs("domains", &self.domains)?;
        check_str("abuse", &self.abuse)
    }
}

impl Body {
    /// Checks every field against its limits.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Body::Hop(h) => {
                check_list("parts", &h.parts)?;
                check_str("queue_id", &h.queue_id)?;
                match &h.prev {
                    PrevHop::Member { name } => check_str("prev member", name)?,
                    PrevHop::Customer { .. } => {}
                    PrevHop::External { helo, .. } => check_str("helo", helo)?,
                }
                match &h.next {
                    NextHop::Member { name } => check_str("next member", name)?,
                    NextHop::Local { domain } => check_str("domain", domain)?,
                    NextHop::External { host } => check_str("host", host)?,
                }
                if let Some(v) = &h.verdicts.virus {
                    check_str("virus", v)?;
                }
                Ok(())
            }
            Body::Admit(a) => a.member.validate(),
            Body::Update(u) => {
                check_strs("addrs", &u.addrs)?;
                check_strs("mail_hosts", &u.mail_hosts)?;
                check_strs("domains", &u.domains)?;
                check_str("abuse", &u.abuse)
            }
            Body::Peer(p) => {
                check_str("member", &p.member)?;
                check_str("partner", &p.partner)
            }
            Body::Expel(e) => {
                check_str("member", &e.member)?;
                check_list("evidence", &e.evidence)?;
                check_str("reason", &e.reason)?;
                check_list("quorum", &e.quorum)
            }
            Body::Reinstate(r) => {
                check_str("member", &r.member)?;
                check_str("reason", &r.reason)?;
                check_list("quorum", &r.quorum)
            }
        }
    }
}

impl Entry {
    /// The bytes the writer signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = ENTRY_SIG_PREFIX.to_vec();
        out.extend_from_slice(&to_canonical(self));
        out
    }

    /// Signs the entry with `key`, which must be the key of `self.log`.
    pub fn sign(self, key: &SecretKey) -> Result<SignedEntry, DecodeError> {
        self.body.validate()?;
        let sig = key.sign(&self.signing_bytes());
        Ok(SignedEntry { entry: self, sig })
    }
}

impl SignedEntry {
    /// The stored form: version byte, canonical entry, signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_VERSION];
        out.extend_from_slice(&to_canonical(&self.entry));
        out.extend_from_slice(&self.sig.0);
        out
    }

    /// Decodes the stored form, rejecting anything but the one canonical encoding of a valid
    /// entry. Does not check the signature (see [`SignedEntry::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedEntry, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        if version != ENTRY_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        if rest.len() < Sig::LEN {
            return Err(DecodeError::Malformed("shorter than a signature".into()));
        }
        let (body, sig) = rest.split_at(rest.len() - Sig::LEN);
        let entry: Entry = from_canonical(body)?;
        entry.body.validate()?;
        let sig = Sig::from_slice(sig).ok_or(DecodeError::Malformed("signature".into()))?;
        Ok(SignedEntry { entry, sig })
    }

    /// Checks the signature under the entry's own log key.
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.entry.log.verify(&self.entry.signing_bytes(), &self.sig)?;
        Ok(())
    }

    /// Decodes, checks it is entry `index` of `log`, and verifies its signature.
    pub fn decode_verified(
        bytes: &[u8],
        log: &LogId,
        index: u64,
    ) -> Result<SignedEntry, VerifyError> {
        let e = Self::decode(bytes)?;
        if &e.entry.log != log {
            return Err(VerifyError::WrongLog { expected: *log, found: e.entry.log });
        }
        if e.entry.index != index {
            return Err(VerifyError::WrongIndex { expected: index, found: e.entry.index });
        }
        e.verify()?;
        Ok(e)
    }

    /// The hop record, if this entry is one.
    pub fn hop(&self) -> Option<&HopRecord> {
        match &self.entry.body {
            Body::Hop(h) => Some(h),
            _ => None,
        }
    }
}

/// Commitment to an authenticated customer account: SHA-256("ringlog/customer/v1\n" || salt ||
/// account). Reveals nothing without the salt; the ISP opens it by handing out (account, salt).
pub fn customer_commitment(salt: &Hash, account: &str) -> Hash {
    sha256(&[b"ringlog/customer/v1\n", &salt.0, account.as_bytes()])
}

/// The salt an ISP uses for a customer commitment, derived from its private commitment secret
/// and the message, so that it can be regenerated for an opening without being stored.
pub fn customer_salt(secret: &Hash, mfp1: &Hash, queue_id: &str, account: &str) -> Hash {
    sha256(&[
        b"ringlog/salt/v1\n",
        &secret.0,
        &mfp1.0,
        queue_id.as_bytes(),
        b"\n",
        account.as_bytes(),
    ])
}
