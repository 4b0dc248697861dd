//! The ringlog node: the store, the append pipeline, the HTTP API, replication and the milter.
//! It feeds real events into the rules of `ringlog-protocol` and carries out what they return.

pub mod api;
pub mod audit;
pub mod audit_api;
pub mod bench;
pub mod check;
pub mod client;
pub mod config;
pub mod demo;
pub mod governance;
pub mod hop;
pub mod identity;
pub mod investigate;
pub mod milter;
pub mod net;
pub mod node;
pub mod postfix_log;
pub mod query;
pub mod replicator;
pub mod store;
pub mod supervise;
pub mod witness;
pub mod writer;
