//! The ringlog node.
