//! Signed checkpoints (C2SP signed-note + tlog-checkpoint) and witness cosignatures
//! (C2SP tlog-cosignature, Ed25519 type 0x04).
//!
//! A checkpoint is the note text `origin\nsize\nbase64(root)\n` (ringlog writes no extension
//! lines and accepts none), then a blank line, then one or more signature lines
//! `— <key name> base64(key id || signature)`. The log signs the note text with Ed25519
//! (signature type 0x01); witnesses add timestamped cosignatures (type 0x04) over
//! `"cosignature/v1\ntime <t>\n" || note text`. Parsing is strict and bounded: at most
//! [`MAX_NOTE_BYTES`] bytes and [`MAX_SIGNATURES`] signature lines.

use crate::bytes::{Hash, Sig};
use crate::keys::{PublicKey, SecretKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Largest note accepted, signatures included.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Most signature lines accepted in one note (the signed-note spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 32;
/// First line of the message a v1 cosignature signs.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// The latest cosignature time the spec allows (2^63 - 1).
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

/// The em dash and space that start every signature line.
const SIG_LINE_PREFIX: &str = "\u{2014} ";
/// Bytes of an Ed25519 note signature after the key id.
const ED25519_SIG_LEN: usize = 64;
/// Bytes of a v1 cosignature after the key id: timestamp, signature.
const COSIG_LEN: usize = 8 + 64;

/// A log's statement "my tree has `size` leaves and root `root`".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log's origin line: a unique name of the log.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
}

/// One signature line of a note, of any key (unknown ones are carried, not checked).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id: first four bytes of SHA-256(name || "\n" || type || key), big-endian.
    pub key_id: u32,
    /// The signature bytes after the key id (algorithm-specific).
    pub sig: Vec<u8>,
}

/// A checkpoint with its signature lines (the log's, and any witnesses').
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    signatures: Vec<NoteSignature>,
}

/// A witness's timestamped statement that it saw the checkpoint and that it is consistent
/// with everything it saw before (tlog-cosignature/v1, Ed25519).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's key name.
    pub name: String,
    /// Key id under signature type 0x04.
    pub key_id: u32,
    /// When it was made, seconds since the Unix epoch.
    pub time: u64,
    /// Ed25519 signature over [`Cosignature::signed_message`].
    pub sig: Sig,
}

/// Why text is not an acceptable checkpoint note (or a checkpoint cannot be written as one).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_BYTES`].
    #[error("note of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("note is not utf-8")]
    NotUtf8,
    /// Holds a control character other than newline.
    #[error("note holds control character {0:#04x}")]
    ControlCharacter(u32),
    /// No blank line separates the text from the signatures.
    #[error("no blank line before the signatures")]
    NoSeparator,
    /// The text is not exactly origin, size and root lines.
    #[error("checkpoint text must be three lines, found {0}")]
    LineCount(usize),
    /// The origin line is empty.
    #[error("empty origin")]
    BadOrigin,
    /// The size line is not a decimal u64 without leading zeroes.
    #[error("size is not a canonical decimal number")]
    BadSize,
    /// The root line is not canonical base64 of 32 bytes.
    #[error("root is not base64 of 32 bytes")]
    BadRoot,
    /// No signature lines.
    #[error("note has no signatures")]
    NoSignatures,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A signature line does not start with an em dash and a space, or does not end in a
    /// newline.
    #[error("malformed signature line")]
    BadSignatureLine,
    /// A key name is empty or holds a space or a plus sign.
    #[error("invalid key name")]
    BadKeyName,
    /// A signature is not canonical base64.
    #[error("signature is not base64")]
    BadBase64,
    /// A signature is too short to hold a key id and a signature.
    #[error("signature of {0} bytes is too short")]
    ShortSignature(usize),
}

/// Why a note's signature by a given key does not check out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature line carries this key's name and key id.
    #[error("no signature by {0}")]
    NoSignature(String),
    /// A line with this key's name and key id does not verify.
    #[error("bad signature by {0}")]
    BadSignature(String),
    /// The public key is not a valid Ed25519 key.
    #[error("invalid public key")]
    BadKey,
}

/// Why a signature line cannot be added to a note.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    /// The note already has [`MAX_SIGNATURES`] lines.
    #[error("note already has {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// The note would grow past [`MAX_NOTE_BYTES`].
    #[error("note would be over {MAX_NOTE_BYTES} bytes")]
    TooLarge,
    /// A line with the same key name and key id is already there.
    #[error("already signed by {0}")]
    Duplicate(String),
    /// The key name is empty or holds a space or a plus sign.
    #[error("invalid key name")]
    BadKeyName,
}

/// Why a cosignature is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CosignatureError {
    /// The signature line is not key id, 8-byte time and 64-byte signature.
    #[error("cosignature of {0} bytes has the wrong length")]
    WrongLength(usize),
    /// The time is past 2^63 - 1.
    #[error("cosignature time {0} is out of range")]
    TimeOutOfRange(u64),
    /// The key name or key id is not the witness key's.
    #[error("cosignature is not by this witness key")]
    WrongKey,
    /// The key name is empty or holds a space or a plus sign.
    #[error("invalid key name")]
    BadKeyName,
    /// The public key is not a valid Ed25519 key.
    #[error("invalid public key")]
    BadKey,
    /// The signature does not verify.
    #[error("bad cosignature")]
    BadSignature,
}

/// Why a newer checkpoint does not extend an older one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsistencyError {
    /// The checkpoints are of different logs.
    #[error("checkpoints have different origins")]
    OriginMismatch,
    /// The newer checkpoint is smaller.
    #[error("tree shrank from {old} to {new} leaves")]
    Shrunk {
        /// Older size.
        old: u64,
        /// Newer size.
        new: u64,
    },
    /// The older checkpoint is of the empty tree but its root is not the empty root.
    #[error("empty tree with a root other than sha-256 of nothing")]
    BadEmptyRoot,
    /// The consistency proof does not verify.
    #[error("consistency proof: {0}")]
    Proof(#[from] crate::merkle::VerifyError),
}

/// A key name per signed-note: non-empty, no Unicode space, no plus sign, no control
/// character.
fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn key_id_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each ending in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root.0))
    }

    /// Parses note text (without signatures) back into a checkpoint.
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        check_chars(text)?;
        let Some(text) = text.strip_suffix('\n') else {
            return Err(NoteError::LineCount(text.split('\n').count()));
        };
        let lines: Vec<&str> = text.splitn(4, '\n').collect();
        let [origin, size, root] = lines[..] else {
            return Err(NoteError::LineCount(text.split('\n').count()));
        };
        if origin.is_empty() {
            return Err(NoteError::BadOrigin);
        }
        let size = parse_size(size).ok_or(NoteError::BadSize)?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|raw| Hash::from_slice(&raw))
            .ok_or(NoteError::BadRoot)?;
        Ok(Checkpoint { origin: origin.to_string(), size, root })
    }

    /// Signs the checkpoint with the log key under `key_name` (by convention the origin).
    pub fn sign(&self, key: &SecretKey, key_name: &str) -> Result<SignedCheckpoint, NoteError> {
        let body = self.body();
        // Only what parses may be signed: a checkpoint that cannot round-trip is refused.
        if Checkpoint::parse_body(&body)? != *self {
            return Err(NoteError::BadOrigin);
        }
        if !valid_key_name(key_name) {
            return Err(NoteError::BadKeyName);
        }
        let sig = key.sign(body.as_bytes());
        Ok(SignedCheckpoint {
            checkpoint: self.clone(),
            signatures: vec![NoteSignature {
                name: key_name.to_string(),
                key_id: key.public().key_id(key_name, ALG_ED25519),
                sig: sig.0.to_vec(),
            }],
        })
    }
}

impl Checkpoint {
    /// Checks that `newer` extends this checkpoint's tree, with a consistency proof from this
    /// size to the newer size (what a witness does before cosigning). Signatures are not
    /// looked at. Every tree extends the empty tree, so from size 0 the proof must be empty.
    pub fn verify_extension(
        &self,
        newer: &Checkpoint,
        proof: &[Hash],
    ) -> Result<(), ConsistencyError> {
        if self.origin != newer.origin {
            return Err(ConsistencyError::OriginMismatch);
        }
        if newer.size < self.size {
            return Err(ConsistencyError::Shrunk { old: self.size, new: newer.size });
        }
        if self.size == 0 {
            if self.root != crate::merkle::empty_root() {
                return Err(ConsistencyError::BadEmptyRoot);
            }
            if !proof.is_empty() {
                return Err(crate::merkle::VerifyError::WrongLength(proof.len()).into());
            }
            return Ok(());
        }
        crate::merkle::verify_consistency(self.size, newer.size, &self.root, &newer.root, proof)?;
        Ok(())
    }
}

/// ASCII decimal with no leading zeroes ("0" alone for zero), within u64.
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Rejects control characters other than newline (signed-note requirement).
fn check_chars(text: &str) -> Result<(), NoteError> {
    match text.chars().find(|&c| c != '\n' && (c as u32) < 0x20) {
        Some(c) => Err(NoteError::ControlCharacter(c as u32)),
        None => Ok(()),
    }
}

impl NoteSignature {
    /// The signature line, newline included.
    pub fn to_line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.sig);
        format!("{SIG_LINE_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }

    /// Parses one signature line (without its newline).
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let rest = line.strip_prefix(SIG_LINE_PREFIX).ok_or(NoteError::BadSignatureLine)?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::BadSignatureLine)?;
        if !valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let raw = B64.decode(b64).map_err(|_| NoteError::BadBase64)?;
        if raw.len() < 5 {
            return Err(NoteError::ShortSignature(raw.len()));
        }
        let key_id = key_id_of(&raw).ok_or(NoteError::ShortSignature(raw.len()))?;
        Ok(NoteSignature { name: name.to_string(), key_id, sig: raw[4..].to_vec() })
    }
}

impl SignedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// All signature lines, in note order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Parses a note given as bytes (checks the size before anything else).
    pub fn parse_bytes(bytes: &[u8]) -> Result<SignedCheckpoint, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses a signed checkpoint note. Checks its form only; see [`SignedCheckpoint::verify`].
    pub fn parse(text: &str) -> Result<SignedCheckpoint, NoteError> {
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(text.len()));
        }
        check_chars(text)?;
        // The text ends at the last blank line; signature lines hold no blank lines.
        let split = text.rfind("\n\n").ok_or(NoteError::NoSeparator)?;
        let (body, sigs) = (&text[..=split], &text[split + 2..]);
        let checkpoint = Checkpoint::parse_body(body)?;
        if sigs.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let sigs = sigs.strip_suffix('\n').ok_or(NoteError::BadSignatureLine)?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(SignedCheckpoint { checkpoint, signatures })
    }

    /// The note text: checkpoint body, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.checkpoint.body();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Checks the signature of `key` under `name` (signature type 0x01). Lines of other keys
    /// are ignored; every line with this key's name and key id must verify, and there must be
    /// at least one.
    pub fn verify(&self, key: &PublicKey, name: &str) -> Result<(), SignatureError> {
        let vk = key.verifying_key().map_err(|_| SignatureError::BadKey)?;
        let id = key.key_id(name, ALG_ED25519);
        let body = self.checkpoint.body();
        let mut found = false;
        for s in self.signatures.iter().filter(|s| s.name == name && s.key_id == id) {
            let sig = <[u8; ED25519_SIG_LEN]>::try_from(s.sig.as_slice())
                .map_err(|_| SignatureError::BadSignature(name.to_string()))?;
            vk.verify_strict(body.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|_| SignatureError::BadSignature(name.to_string()))?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(SignatureError::NoSignature(name.to_string()))
        }
    }

    /// Adds a signature line (the log's second key, or a witness's cosignature).
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<(), AddError> {
        if !valid_key_name(&sig.name) {
            return Err(AddError::BadKeyName);
        }
        if self.signatures.iter().any(|s| s.name == sig.name && s.key_id == sig.key_id) {
            return Err(AddError::Duplicate(sig.name));
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(AddError::TooManySignatures);
        }
        if self.to_text().len() + sig.to_line().len() > MAX_NOTE_BYTES {
            return Err(AddError::TooLarge);
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// Adds a witness cosignature line.
    pub fn add_cosignature(&mut self, c: &Cosignature) -> Result<(), AddError> {
        self.add_signature(c.to_signature())
    }

    /// The cosignature of witness `name` with `key`, if the note has a line with that name and
    /// key id and it verifies.
    pub fn cosignature(
        &self,
        key: &PublicKey,
        name: &str,
    ) -> Option<Result<Cosignature, CosignatureError>> {
        let id = key.key_id(name, ALG_COSIGNATURE_V1);
        let line = self.signatures.iter().find(|s| s.name == name && s.key_id == id)?;
        Some(Cosignature::from_signature(line).and_then(|c| {
            c.verify(key, &self.checkpoint)?;
            Ok(c)
        }))
    }

    /// How many distinct witnesses of `witnesses` (name, key) have a valid cosignature on
    /// this checkpoint. A key listed twice counts once.
    pub fn count_cosignatures(&self, witnesses: &[(String, PublicKey)]) -> usize {
        let mut seen: Vec<&PublicKey> = Vec::new();
        for (name, key) in witnesses {
            if seen.contains(&key) {
                continue;
            }
            if matches!(self.cosignature(key, name), Some(Ok(_))) {
                seen.push(key);
            }
        }
        seen.len()
    }
}

impl fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// In JSON (and any serde format) a signed checkpoint is its note text.
impl Serialize for SignedCheckpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for SignedCheckpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SignedCheckpoint::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Cosignature {
    /// The bytes a v1 cosignature signs: header line, time line, checkpoint note text.
    pub fn signed_message(checkpoint: &Checkpoint, time: u64) -> Vec<u8> {
        format!("{COSIGNATURE_HEADER}time {time}\n{}", checkpoint.body()).into_bytes()
    }

    /// Cosigns `checkpoint` as witness `name` at `time` (seconds since the epoch; the caller
    /// reads the clock).
    pub fn create(
        key: &SecretKey,
        name: &str,
        checkpoint: &Checkpoint,
        time: u64,
    ) -> Result<Cosignature, CosignatureError> {
        if time > MAX_COSIGNATURE_TIME {
            return Err(CosignatureError::TimeOutOfRange(time));
        }
        if !valid_key_name(name) {
            return Err(CosignatureError::BadKeyName);
        }
        Ok(Cosignature {
            name: name.to_string(),
            key_id: key.public().key_id(name, ALG_COSIGNATURE_V1),
            time,
            sig: key.sign(&Self::signed_message(checkpoint, time)),
        })
    }

    /// Checks that this is `key`'s cosignature on `checkpoint`.
    pub fn verify(&self, key: &PublicKey, checkpoint: &Checkpoint) -> Result<(), CosignatureError> {
        if self.key_id != key.key_id(&self.name, ALG_COSIGNATURE_V1) {
            return Err(CosignatureError::WrongKey);
        }
        if self.time > MAX_COSIGNATURE_TIME {
            return Err(CosignatureError::TimeOutOfRange(self.time));
        }
        let vk = key.verifying_key().map_err(|_| CosignatureError::BadKey)?;
        let msg = Self::signed_message(checkpoint, self.time);
        vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&self.sig.0))
            .map_err(|_| CosignatureError::BadSignature)
    }

    /// As a note signature line: key id, big-endian time, signature.
    pub fn to_signature(&self) -> NoteSignature {
        let mut sig = self.time.to_be_bytes().to_vec();
        sig.extend_from_slice(&self.sig.0);
        NoteSignature { name: self.name.clone(), key_id: self.key_id, sig }
    }

    /// Reads a note signature line as a cosignature (form only; see [`Cosignature::verify`]).
    pub fn from_signature(s: &NoteSignature) -> Result<Cosignature, CosignatureError> {
        if s.sig.len() != COSIG_LEN {
            return Err(CosignatureError::WrongLength(4 + s.sig.len()));
        }
        let (time, sig) = s.sig.split_at(8);
        let time = u64::from_be_bytes(
            time.try_into().map_err(|_| CosignatureError::WrongLength(4 + s.sig.len()))?,
        );
        if time > MAX_COSIGNATURE_TIME {
            return Err(CosignatureError::TimeOutOfRange(time));
        }
        let sig = Sig::from_slice(sig).ok_or(CosignatureError::WrongLength(4 + s.sig.len()))?;
        Ok(Cosignature { name: s.name.clone(), key_id: s.key_id, time, sig })
    }
}
