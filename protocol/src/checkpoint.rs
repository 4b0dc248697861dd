//! Signed checkpoints (C2SP signed-note + tlog-checkpoint) and witness cosignatures
//! (C2SP tlog-cosignature).
