//! The live roster of a running node: folded from the genesis and every governance entry the
//! store holds (own log and replicated ones), refolded whenever a new governance entry lands.
//! Other parts watch it: the network allow-list, trust verdicts, routing, member names.

use crate::store::Store;
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::record::{Body, SignedEntry};
use ringlog_protocol::roster::{Refusal, Roster};
use ringlog_protocol::LogId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Entries read per step when scanning a log at start.
const SCAN_CHUNK: u64 = 4096;

/// The roster as of the governance entries this node holds.
pub struct LiveRoster {
    genesis: Genesis,
    gov: Mutex<BTreeMap<LogId, Vec<SignedEntry>>>,
    refusals: Mutex<Vec<Refusal>>,
    current: watch::Sender<Arc<Roster>>,
}

/// Whether an entry is a governance fact (anything but a hop record).
pub(crate) fn is_governance(e: &SignedEntry) -> bool {
    !matches!(e.entry.body, Body::Hop(_))
}

impl LiveRoster {
    /// Folds the roster from `genesis` and every governance entry in `store` (one scan).
    pub fn load(genesis: &Genesis, store: &dyn Store) -> Result<LiveRoster, crate::store::Error> {
        let mut gov: BTreeMap<LogId, Vec<SignedEntry>> = BTreeMap::new();
        for log in store.logs()? {
            let size = store.size(&log)?;
            let mut start = 0;
            while start < size {
                let end = (start + SCAN_CHUNK).min(size);
                for bytes in store.entries(&log, start, end)? {
                    if let Ok(e) = SignedEntry::decode(&bytes) {
                        if is_governance(&e) {
                            gov.entry(log).or_default().push(e);
                        }
                    }
                }
                start = end;
            }
        }
        let (roster, refusals) = Roster::fold(genesis, &gov);
        let (current, _) = watch::channel(Arc::new(roster));
        Ok(LiveRoster {
            genesis: genesis.clone(),
            gov: Mutex::new(gov),
            refusals: Mutex::new(refusals),
            current,
        })
    }

    /// The current roster.
    pub fn roster(&self) -> Arc<Roster> {
        self.current.borrow().clone()
    }

    /// Watches roster changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Roster>> {
        self.current.subscribe()
    }

    /// Governance entries the fold refused, with reasons.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Takes over the state of a freshly loaded roster (after missed events).
    pub fn replace_with(&self, other: LiveRoster) {
        let (Ok(mut gov), Ok(other_gov)) = (self.gov.lock(), other.gov.lock()) else { return };
        *gov = other_gov.clone();
        if let (Ok(mut rf), Ok(orf)) = (self.refusals.lock(), other.refusals.lock()) {
            *rf = orf.clone();
        }
        self.current.send_replace(other.roster());
    }

    /// Tells the roster about entries just made durable in `log`; refolds when any of them is
    /// a governance entry. Returns whether the roster changed.
    pub fn on_appended(&self, log: &LogId, encoded: &[Vec<u8>]) -> bool {
        let new: Vec<SignedEntry> = encoded
            .iter()
            .filter_map(|b| SignedEntry::decode(b).ok())
            .filter(is_governance)
            .collect();
        if new.is_empty() {
            return false;
        }
        let Ok(mut gov) = self.gov.lock() else { return false };
        gov.entry(*log).or_default().extend(new);
        let (roster, refusals) = Roster::fold(&self.genesis, &gov);
        drop(gov);
        for r in &refusals {
            tracing::warn!(refusal = ?r, "governance entry refused");
        }
        if let Ok(mut rf) = self.refusals.lock() {
            *rf = refusals;
        }
        let changed = *self.current.borrow() != Arc::new(roster.clone());
        if changed {
            tracing::info!("roster changed");
            self.current.send_replace(Arc::new(roster));
        }
        changed
    }
}
