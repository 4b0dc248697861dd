//! The message fingerprint `mfp1` (see docs/FORMAT.md).
