//! The pure core of ringlog: every rule of the system as data types, functions and state
//! machines.
//!
//! Architecture invariant: this crate does no I/O. It reads no clock and draws no randomness
//! (time and seeds are arguments), and it depends on no async runtime, network stack or
//! database. It is what an independent verifier links.

pub mod bytes;
pub mod checkpoint;
pub mod equivocation;
pub mod evidence;
pub mod fingerprint;
pub mod genesis;
pub mod keys;
pub mod merkle;
pub mod record;
pub mod replication;
pub mod roster;
pub mod trace;

pub use bytes::{sha256, Hash, Sig};
pub use keys::{LogId, PublicKey, SecretKey};
