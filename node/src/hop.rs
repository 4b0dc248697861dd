//! Hop requests as relays and the CLI send them, and how the node turns them into hop records:
//! the `member:NAME | customer:ACCOUNT | external:IP[,HELO]` and
//! `member:NAME | local:DOMAIN | external:HOST` hop syntax, and customer commitments.

use ringlog_protocol::record::{
    customer_commitment, customer_salt, HopRecord, NextHop, PrevHop, Transform, Verdicts,
};
use ringlog_protocol::Hash;
use serde::{Deserialize, Serialize};

/// One hop to record, as sent to `POST /v1/append`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopRequest {
    /// The message fingerprint.
    pub mfp1: Hash,
    /// mfp1-lite; defaults to all zeroes when unknown.
    #[serde(default)]
    pub mfp1_lite: Option<Hash>,
    /// Body hash; defaults to all zeroes when unknown.
    #[serde(default)]
    pub body: Option<Hash>,
    /// Leaf hashes of the body parts (only when there is more than one).
    #[serde(default)]
    pub parts: Vec<Hash>,
    /// Previous hop: `member:NAME`, `customer:ACCOUNT` or `external:IP[,HELO]`.
    pub from: String,
    /// Next hop: `member:NAME`, `local:DOMAIN` or `external:HOST`.
    pub to: String,
    /// The relay's queue id.
    #[serde(default)]
    pub queue_id: String,
    /// Recipients on this hop.
    #[serde(default = "one")]
    pub rcpt_count: u32,
    /// Verdicts the relay had.
    #[serde(default)]
    pub verdicts: Verdicts,
    /// For a hop that changed the message: the fingerprint it had when received.
    #[serde(default)]
    pub transform_from: Option<Hash>,
    /// Time of the hop; the node's clock when absent.
    #[serde(default)]
    pub time_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

/// Why a hop request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HopError {
    /// The `from` field does not parse.
    #[error(
        "bad previous hop {0:?}: expected member:NAME, customer:ACCOUNT or external:IP[,HELO]"
    )]
    From(String),
    /// The `to` field does not parse.
    #[error("bad next hop {0:?}: expected member:NAME, local:DOMAIN or external:HOST")]
    To(String),
}

fn nonempty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

impl HopRequest {
    /// Builds the hop record; a customer account becomes a commitment salted with
    /// `commit_secret`, so the account name never reaches the log.
    pub fn to_record(&self, commit_secret: &Hash, now_ms: u64) -> Result<HopRecord, HopError> {
        let prev = parse_from(&self.from, |account| {
            let salt = customer_salt(commit_secret, &self.mfp1, &self.queue_id, account);
            customer_commitment(&salt, account)
        })?;
        let next = parse_to(&self.to)?;
        Ok(HopRecord {
            time_ms: self.time_ms.unwrap_or(now_ms),
            mfp1: self.mfp1,
            mfp1_lite: self.mfp1_lite.unwrap_or(Hash([0; 32])),
            body: self.body.unwrap_or(Hash([0; 32])),
            parts: self.parts.clone(),
            prev,
            next,
            queue_id: self.queue_id.clone(),
            rcpt_count: self.rcpt_count,
            verdicts: self.verdicts.clone(),
            transform: self.transform_from.map(|input| Transform { input, output: self.mfp1 }),
        })
    }
}

/// Parses `member:NAME | customer:ACCOUNT | external:IP[,HELO]`; `commit` turns an account
/// into its commitment.
pub fn parse_from(s: &str, commit: impl FnOnce(&str) -> Hash) -> Result<PrevHop, HopError> {
    let err = || HopError::From(s.to_string());
    let (kind, rest) = s.split_once(':').ok_or_else(err)?;
    match kind {
        "member" => Ok(PrevHop::Member { name: nonempty(rest).ok_or_else(err)?.to_string() }),
        "customer" => Ok(PrevHop::Customer { commitment: commit(nonempty(rest).ok_or_else(err)?) }),
        "external" => {
            let (ip, helo) = rest.split_once(',').unwrap_or((rest, ""));
            let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
            Ok(PrevHop::External {
                ip: ip.parse().map_err(|_| err())?,
                helo: helo.trim().to_string(),
            })
        }
        _ => Err(err()),
    }
}

/// Parses `member:NAME | local:DOMAIN | external:HOST`.
pub fn parse_to(s: &str) -> Result<NextHop, HopError> {
    let err = || HopError::To(s.to_string());
    let (kind, rest) = s.split_once(':').ok_or_else(err)?;
    let rest = nonempty(rest).ok_or_else(err)?.to_string();
    match kind {
        "member" => Ok(NextHop::Member { name: rest }),
        "local" => Ok(NextHop::Local { domain: rest.to_ascii_lowercase() }),
        "external" => Ok(NextHop::External { host: rest }),
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_syntax() {
        let c = |_: &str| Hash([9; 32]);
        assert_eq!(
            parse_from("external:192.0.2.1,mx.example", c),
            Ok(PrevHop::External {
                ip: "192.0.2.1".parse().unwrap_or_else(|_| unreachable!()),
                helo: "mx.example".into()
            })
        );
        assert!(matches!(parse_from("external:[2001:db8::1]", c), Ok(PrevHop::External { .. })));
        assert_eq!(
            parse_from("customer:alice", c),
            Ok(PrevHop::Customer { commitment: Hash([9; 32]) })
        );
        assert!(parse_from("customer:", c).is_err());
        assert!(parse_from("external:not-an-ip", c).is_err());
        assert!(parse_from("bogus:x", c).is_err());
        assert_eq!(
            parse_to("local:Example.ORG"),
            Ok(NextHop::Local { domain: "example.org".into() })
        );
        assert!(parse_to("member:").is_err());
    }
}
