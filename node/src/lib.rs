//! The ringlog node: the store, the append pipeline, the HTTP API, replication and the milter.
//! It feeds real events into the rules of `ringlog-protocol` and carries out what they return.

pub mod api;
pub mod check;
pub mod client;
pub mod config;
pub mod hop;
pub mod identity;
pub mod net;
pub mod node;
pub mod query;
pub mod store;
pub mod writer;
