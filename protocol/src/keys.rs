//! Ed25519 log keys, log ids and the C2SP signed-note verifier-key text form.
//!
//! A log is named by its public key: [`LogId`] is the 32-byte Ed25519 public key of the
//! member's log key, so anyone holding an entry can check its signature, and the roster binds
//! that key to a member name.

use crate::bytes::{sha256, Sig};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Signature type byte for Ed25519 in C2SP signed notes.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte for timestamped Ed25519 witness cosignatures (C2SP tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// An Ed25519 public key; also the id of the log it signs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub crate::bytes::Hash);

/// The id of a member log: its log key's public key.
pub type LogId = PublicKey;

/// Errors from key parsing and signature checks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The 32 bytes are not a valid Ed25519 point.
    #[error("not a valid ed25519 public key")]
    BadPoint,
    /// The verifier key text is not `name+keyid+base64`.
    #[error("malformed verifier key: {0}")]
    BadVkey(&'static str),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl PublicKey {
    /// The dalek verifying key; fails on bytes that are not a curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&self.0 .0).map_err(|_| KeyError::BadPoint)
    }

    /// Strict Ed25519 verification (rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, msg: &[u8], sig: &Sig) -> Result<(), KeyError> {
        let vk = self.verifying_key()?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(msg, &sig).map_err(|_| KeyError::BadSignature)
    }

    /// Lower-case hex of the 32 bytes.
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::bytes::Hash::from_hex(s).map(Self)
    }

    /// The C2SP signed-note key id for this key under `name` and signature type `alg`:
    /// the first four bytes of SHA-256(name || "\n" || alg || key), as a big-endian u32.
    pub fn key_id(&self, name: &str, alg: u8) -> u32 {
        let h = sha256(&[name.as_bytes(), b"\n", &[alg], &self.0 .0]);
        u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]])
    }

    /// The C2SP verifier key text: `name+<8 hex key id>+<base64(0x01 || key)>`.
    pub fn vkey(&self, name: &str) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.0 .0);
        format!(
            "{}+{:08x}+{}",
            name,
            self.key_id(name, ALG_ED25519),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Parses a C2SP Ed25519 verifier key, checking its key id. Returns (name, key).
    pub fn parse_vkey(text: &str) -> Result<(String, PublicKey), KeyError> {
        let mut parts = text.trim().splitn(3, '+');
        let name = parts.next().ok_or(KeyError::BadVkey("no name"))?;
        let id = parts.next().ok_or(KeyError::BadVkey("no key id"))?;
        let b64 = parts.next().ok_or(KeyError::BadVkey("no key"))?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(KeyError::BadVkey("bad name"));
        }
        if id.len() != 8 {
            return Err(KeyError::BadVkey("key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| KeyError::BadVkey("key id is not hex"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::BadVkey("key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(KeyError::BadVkey("not an ed25519 key"));
        }
        let key = PublicKey(
            crate::bytes::Hash::from_slice(&raw[1..]).ok_or(KeyError::BadVkey("length"))?,
        );
        key.verifying_key()?;
        if key.key_id(name, ALG_ED25519) != id {
            return Err(KeyError::BadVkey("key id does not match"));
        }
        Ok((name.to_string(), key))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A private Ed25519 signing key (a member's log key or a witness key).
///
/// Made from a 32-byte seed that the caller supplies: this crate draws no randomness.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key for a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(crate::bytes::Hash(self.0.verifying_key().to_bytes()))
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Sig {
        Sig(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

/// Verifies many (key, message, signature) triples at once with Ed25519 batch verification.
///
/// Deterministic (the batch coefficients come from a transcript of the inputs). On failure the
/// caller falls back to single verification to find the bad one.
pub fn verify_batch(items: &[(PublicKey, &[u8], Sig)]) -> Result<(), KeyError> {
    let mut keys = Vec::with_capacity(items.len());
    let mut msgs = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    for (k, m, s) in items {
        keys.push(k.verifying_key()?);
        msgs.push(*m);
        sigs.push(ed25519_dalek::Signature::from_bytes(&s.0));
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vkey_round_trip_and_tamper() {
        let k = SecretKey::from_seed([7; 32]).public();
        let text = k.vkey("isp-a.example");
        let (name, back) = PublicKey::parse_vkey(&text).expect("parses");
        assert_eq!(name, "isp-a.example");
        assert_eq!(back, k);
        let wrong_name = text.replacen("isp-a", "isp-b", 1);
        assert!(PublicKey::parse_vkey(&wrong_name).is_err());
        assert!(PublicKey::parse_vkey("x+0000+AAAA").is_err());
    }

    #[test]
    fn batch_detects_one_bad_signature() {
        let k = SecretKey::from_seed([1; 32]);
        let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut items: Vec<(PublicKey, &[u8], Sig)> =
            msgs.iter().map(|m| (k.public(), m.as_slice(), k.sign(m))).collect();
        assert!(verify_batch(&items).is_ok());
        items[3].2 .0[5] ^= 1;
        assert!(verify_batch(&items).is_err());
    }
}
