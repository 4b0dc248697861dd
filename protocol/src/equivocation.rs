//! Equivocation proofs: two signed statements of one log that cannot both be true.
