//! Queries over every log the store holds: index search with false positives filtered out.

use crate::store::{self, IndexKey, Store};
use ringlog_protocol::record::SignedEntry;

/// The entries that really match `key` (the store's index may return false positives), with
/// their stored bytes, in (log, index) order.
pub fn search<S: Store + ?Sized>(
    store: &S,
    key: &IndexKey,
) -> Result<Vec<(SignedEntry, Vec<u8>)>, store::Error> {
    let mut out = Vec::new();
    for (log, index) in store.search(key)? {
        let Some(bytes) = store.entry(&log, index)? else { continue };
        let Ok(e) = SignedEntry::decode(&bytes) else { continue };
        let Some(h) = e.hop() else { continue };
        let hit = match key {
            IndexKey::Mfp1(x) => h.mfp1 == *x,
            IndexKey::Mfp1Lite(x) => h.mfp1_lite == *x,
            IndexKey::Body(x) => h.body == *x,
            IndexKey::Part(x) => h.parts.contains(x),
            IndexKey::QueueId(l, q) => e.entry.log == *l && h.queue_id == *q,
            IndexKey::TransformIn(x) => h.transform.as_ref().is_some_and(|t| t.input == *x),
        };
        if hit {
            out.push((e, bytes));
        }
    }
    Ok(out)
}
