//! The append pipeline of the node's own log: one task, on a thread of its own, owns the log's
//! right edge; requests are batched (group commit): sign, sequence, write and sync in place,
//! then acknowledge. It signs a
//! checkpoint at least once per interval while the log grows, and only after recomputing the
//! new root from the stored entries and checking it extends the previous checkpoint.

use crate::check::{check_log, Options};
use crate::store::{LogNodes, Store};
use ringlog_protocol::checkpoint::{Checkpoint, SignedCheckpoint};
use ringlog_protocol::merkle::{self, Frontier};
use ringlog_protocol::record::{Body, Entry, SignedEntry};
use ringlog_protocol::{LogId, SecretKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Why an append was not acknowledged. Nothing was stored in any of these cases.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// The queue is full: the caller should retry later.
    #[error("node overloaded: append queue is full")]
    Overloaded,
    /// The record is not acceptable.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// The log failed a check; the node refuses to write or sign until an operator repairs it.
    #[error("log is faulted: {0}")]
    Faulted(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Closed,
}

/// What the writer tells the rest of the node.
#[derive(Clone, Debug)]
pub enum LogEvent {
    /// Entries were made durable: `(first index, encoded entries)`.
    Appended(u64, Arc<Vec<Vec<u8>>>),
    /// A checkpoint was signed and stored.
    Checkpoint(Arc<SignedCheckpoint>),
}

enum Request {
    Append(Vec<Body>, oneshot::Sender<Result<Vec<u64>, AppendError>>),
    Checkpoint(oneshot::Sender<Result<Option<SignedCheckpoint>, AppendError>>),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries appended since start.
    pub appended: AtomicU64,
    /// Group commits since start.
    pub batches: AtomicU64,
    /// Checkpoints signed since start.
    pub checkpoints: AtomicU64,
    /// Appends refused because the queue was full.
    pub overloaded: AtomicU64,
    /// Current log size.
    pub size: AtomicU64,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    /// Counters.
    pub stats: Arc<Stats>,
    events: broadcast::Sender<LogEvent>,
    /// This log's id.
    pub log: LogId,
}

/// Settings of the writer.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Checkpoint origin (and signature key name).
    pub origin: String,
    /// Checkpoint interval while the log grows.
    pub checkpoint_interval: Duration,
    /// Most entries per group commit.
    pub max_batch: usize,
    /// Queue capacity in requests.
    pub queue: usize,
}

struct State {
    store: Arc<dyn Store>,
    key: SecretKey,
    log: LogId,
    cfg: WriterConfig,
    frontier: Frontier,
    last_cp: Option<Checkpoint>,
    checked_to: u64,
    faulted: Option<String>,
    stats: Arc<Stats>,
    events: broadcast::Sender<LogEvent>,
    fatal: crate::supervise::Fatal,
}

impl Writer {
    /// Starts the writer of `key`'s log over `store`. Checks the stored log first (hashes and
    /// checkpoints, not signatures); a log that fails is opened read-only (faulted).
    pub async fn start(
        store: Arc<dyn Store>,
        key: SecretKey,
        cfg: WriterConfig,
        fatal: crate::supervise::Fatal,
    ) -> Result<Writer, AppendError> {
        let log = key.public();
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let (events, _) = broadcast::channel(1024);
        let stats = Arc::new(Stats::default());
        let st = store.clone();
        let (frontier, last_cp, faulted) = tokio::task::spawn_blocking(move || {
            let report = check_log(
                &*st,
                &log,
                Options { signatures: false, from: 0, max_problems: 5 },
                &mut |_| {},
            );
            let faulted = report.problems.first().map(|p| {
                tracing::error!(problems = ?report.problems, "own log failed its check; refusing to write");
                format!("{} {}: {}", p.object, p.at, p.what)
            });
            let size = st.size(&log).map_err(|e| AppendError::Store(e.to_string()))?;
            let frontier = Frontier::from_source(&LogNodes::new(&*st, log), size)
                .map_err(|e| AppendError::Store(e.to_string()))?;
            let last_cp = st
                .latest_checkpoint(&log)
                .map_err(|e| AppendError::Store(e.to_string()))?
                .and_then(|(_, note)| SignedCheckpoint::parse(&note).ok())
                .map(|c| c.checkpoint().clone());
            Ok::<_, AppendError>((frontier, last_cp, faulted))
        })
        .await
        .map_err(|e| AppendError::Store(e.to_string()))??;
        stats.size.store(frontier.size(), Ordering::Relaxed);
        let checked_to = frontier.size();
        let state = State {
            store,
            key,
            log,
            cfg,
            frontier,
            last_cp,
            checked_to,
            faulted,
            stats: stats.clone(),
            events: events.clone(),
            fatal: fatal.clone(),
        };
        // The writer has a thread of its own: a group commit signs and syncs in place, with no
        // hand-over to the blocking pool and back (two thread wake-ups per commit saved).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| AppendError::Store(format!("starting the writer: {e}")))?;
        // If the thread panics the node stops (supervise.rs): without its writer it could only
        // refuse appends.
        crate::supervise::thread("log writer", fatal, move || rt.block_on(run(state, rx)))
            .map_err(|e| AppendError::Store(format!("starting the writer thread: {e}")))?;
        Ok(Writer { tx, stats, events, log })
    }

    /// Appends entries (one group); resolves with their indexes once they are durable.
    pub async fn append(&self, bodies: Vec<Body>) -> Result<Vec<u64>, AppendError> {
        for b in &bodies {
            b.validate().map_err(|e| AppendError::Invalid(e.to_string()))?;
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Request::Append(bodies, reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                return Err(AppendError::Overloaded);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(AppendError::Closed),
        }
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Signs a checkpoint now if the log grew since the last one (used on shutdown).
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Checkpoint(reply)).await.map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Subscribes to appended entries and new checkpoints.
    pub fn subscribe(&self) -> broadcast::Receiver<LogEvent> {
        self.events.subscribe()
    }
}

/// A checkpoint being checked and signed off the write path: its size and the blocking task.
type CheckpointJob = (u64, tokio::task::JoinHandle<Result<SignedCheckpoint, AppendError>>);

/// The result of a checkpoint task (a task that panicked is a store error).
async fn joined(
    h: &mut tokio::task::JoinHandle<Result<SignedCheckpoint, AppendError>>,
) -> Result<SignedCheckpoint, AppendError> {
    h.await.unwrap_or_else(|e| Err(AppendError::Store(e.to_string())))
}

/// The result of the checkpoint in flight (pending forever when there is none).
async fn job_done(job: &mut Option<CheckpointJob>) -> Result<SignedCheckpoint, AppendError> {
    match job {
        Some((_, h)) => joined(h).await,
        None => std::future::pending().await,
    }
}

async fn run(mut st: State, mut rx: mpsc::Receiver<Request>) {
    let mut tick = tokio::time::interval(st.cfg.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cp_at = Instant::now();
    // At most one checkpoint is in flight; appends go on while it re-reads and signs.
    let mut job: Option<CheckpointJob> = None;
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = tick.tick(), if job.is_none() => {
                job = st.begin_checkpoint();
                last_cp_at = Instant::now();
                continue;
            }
            r = job_done(&mut job), if job.is_some() => {
                if let Some((size, _)) = job.take() {
                    let _ = st.finish_checkpoint(size, r);
                }
                continue;
            }
        };
        // Gather a group: the first request and whatever else is already waiting.
        let mut appends = Vec::new();
        let mut n = 0usize;
        let mut pending = Some(first);
        loop {
            match pending.take() {
                Some(Request::Append(b, r)) => {
                    n += b.len();
                    appends.push((b, r));
                }
                Some(Request::Checkpoint(r)) => {
                    st.settle(&mut job).await;
                    let _ = r.send(st.checkpoint_now().await);
                    last_cp_at = Instant::now();
                }
                None => {}
            }
            if n >= st.cfg.max_batch {
                break;
            }
            match rx.try_recv() {
                Ok(r) => pending = Some(r),
                Err(_) => break,
            }
        }
        if !appends.is_empty() {
            st.commit(appends).await;
        }
        if job.is_none() && last_cp_at.elapsed() >= st.cfg.checkpoint_interval {
            job = st.begin_checkpoint();
            last_cp_at = Instant::now();
        }
    }
    // Channel closed: the node is stopping. Leave a final checkpoint behind.
    st.settle(&mut job).await;
    let _ = st.checkpoint_now().await;
}

type Reply = oneshot::Sender<Result<Vec<u64>, AppendError>>;

impl State {
    async fn commit(&mut self, appends: Vec<(Vec<Body>, Reply)>) {
        if let Some(f) = &self.faulted {
            for (_, r) in appends {
                let _ = r.send(Err(AppendError::Faulted(f.clone())));
            }
            return;
        }
        let start = self.frontier.size();
        let mut entries = Vec::new();
        let mut spans = Vec::new();
        for (bodies, reply) in appends {
            let first = start + entries.len() as u64;
            let count = bodies.len();
            for (i, body) in bodies.into_iter().enumerate() {
                entries.push(Entry { log: self.log, index: first + i as u64, body });
            }
            spans.push((first, count, reply));
        }
        // On the writer's own thread: blocking here holds up nothing else.
        let result = sign_all(entries, &self.key).and_then(|signed| {
            let encoded: Vec<Vec<u8>> = signed.iter().map(SignedEntry::encode).collect();
            self.store.append(&self.log, &signed).map_err(|e| {
                self.fatal.on_store_error(&e);
                AppendError::Store(e.to_string())
            })?;
            Ok(encoded)
        });
        match result {
            Ok(encoded) => {
                let mut out = Vec::new();
                for bytes in encoded.iter() {
                    out.clear();
                    self.frontier.push(merkle::leaf_hash(bytes), &mut out);
                }
                let n = encoded.len() as u64;
                self.stats.appended.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.size.store(self.frontier.size(), Ordering::Relaxed);
                for (first, count, reply) in spans {
                    let _ = reply.send(Ok((first..first + count as u64).collect()));
                }
                let _ = self.events.send(LogEvent::Appended(start, Arc::new(encoded)));
            }
            Err(e) => {
                tracing::error!(error = %e, "append failed; nothing acknowledged");
                // The store may or may not hold the batch; re-read the edge before going on.
                self.resync();
                for (_, _, reply) in spans {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn resync(&mut self) {
        // In place, like a commit: this is the writer's own thread.
        let r = self.store.size(&self.log).map_err(|e| e.to_string()).and_then(|size| {
            Frontier::from_source(&LogNodes::new(&*self.store, self.log), size)
                .map_err(|e| e.to_string())
        });
        match r {
            Ok(f) => self.frontier = f,
            Err(e) => self.faulted = Some(format!("cannot re-read log edge: {e}")),
        }
    }

    /// Waits for the checkpoint in flight, if any, and takes in its result.
    async fn settle(&mut self, job: &mut Option<CheckpointJob>) {
        if let Some((size, mut h)) = job.take() {
            let r = joined(&mut h).await;
            let _ = self.finish_checkpoint(size, r);
        }
    }

    /// Signs a checkpoint over the current size now, if it grew (on request and on shutdown).
    async fn checkpoint_now(&mut self) -> Result<Option<SignedCheckpoint>, AppendError> {
        if let Some(f) = &self.faulted {
            return Err(AppendError::Faulted(f.clone()));
        }
        let Some((size, mut h)) = self.begin_checkpoint() else { return Ok(None) };
        let r = joined(&mut h).await;
        self.finish_checkpoint(size, r).map(Some)
    }

    /// Starts checking and signing a checkpoint over the current size, if the log grew and is
    /// not faulted: never over a root it cannot back. The check reads committed (durable)
    /// entries only, so appends may go on meanwhile; it may see some committed after it
    /// started, and the next check reads those again.
    fn begin_checkpoint(&self) -> Option<CheckpointJob> {
        if self.faulted.is_some() {
            return None;
        }
        let size = self.frontier.size();
        let prev_size = self.last_cp.as_ref().map_or(0, |c| c.size);
        if size == prev_size && self.last_cp.is_some() {
            return None;
        }
        let store = self.store.clone();
        let log = self.log;
        let from = self.checked_to.min(prev_size);
        let expected_root = self.frontier.root();
        let prev = self.last_cp.clone();
        let key = self.key.clone();
        let origin = self.cfg.origin.clone();
        let h = tokio::task::spawn_blocking(move || -> Result<SignedCheckpoint, AppendError> {
            // 1. The entries since the last check hash to the stored tree and to our edge.
            let report = check_log(
                &*store,
                &log,
                Options { signatures: false, from, max_problems: 5 },
                &mut |_| {},
            );
            if let Some(p) = report.problems.first() {
                return Err(AppendError::Faulted(format!("{} {}: {}", p.object, p.at, p.what)));
            }
            let nodes = LogNodes::new(&*store, log);
            let root = merkle::root(&nodes, size).map_err(|e| AppendError::Store(e.to_string()))?;
            if root != expected_root {
                return Err(AppendError::Faulted("stored root differs from the writer's".into()));
            }
            // 2. It extends the previous checkpoint.
            // (Every tree extends the empty one; RFC 9162 has no proof from size 0.)
            if let Some(prev) = prev.as_ref().filter(|p| p.size > 0) {
                let proof = merkle::consistency_proof(&nodes, prev.size, size)
                    .map_err(|e| AppendError::Store(e.to_string()))?;
                merkle::verify_consistency(prev.size, size, &prev.root, &root, &proof).map_err(
                    |e| {
                        AppendError::Faulted(format!(
                            "new root does not extend checkpoint {}: {e}",
                            prev.size
                        ))
                    },
                )?;
            }
            let cp = Checkpoint { origin: origin.clone(), size, root };
            let signed = cp.sign(&key, &origin).map_err(|e| AppendError::Invalid(e.to_string()))?;
            store
                .put_checkpoint(&log, size, &signed.to_text())
                .map_err(|e| AppendError::Store(e.to_string()))?;
            Ok(signed)
        });
        Some((size, h))
    }

    /// Takes in the result of a checkpoint over `size`: publishes it, or faults the log.
    fn finish_checkpoint(
        &mut self,
        size: u64,
        r: Result<SignedCheckpoint, AppendError>,
    ) -> Result<SignedCheckpoint, AppendError> {
        match r {
            Ok(signed) => {
                self.checked_to = size;
                self.last_cp = Some(signed.checkpoint().clone());
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.send(LogEvent::Checkpoint(Arc::new(signed.clone())));
                Ok(signed)
            }
            Err(e) => {
                if let AppendError::Faulted(f) = &e {
                    tracing::error!(reason = %f, "refusing to sign a checkpoint");
                    self.faulted = Some(f.clone());
                }
                Err(e)
            }
        }
    }
}

/// Signs entries, on two threads when there are many.
fn sign_all(entries: Vec<Entry>, key: &SecretKey) -> Result<Vec<SignedEntry>, AppendError> {
    let sign = |chunk: Vec<Entry>| -> Result<Vec<SignedEntry>, AppendError> {
        chunk
            .into_iter()
            .map(|e| e.sign(key).map_err(|e| AppendError::Invalid(e.to_string())))
            .collect()
    };
    if entries.len() < 256 {
        return sign(entries);
    }
    let mut entries = entries;
    let tail = entries.split_off(entries.len() / 2);
    std::thread::scope(|s| {
        let h = s.spawn(|| sign(tail));
        let mut head = sign(entries)?;
        let tail = h.join().map_err(|_| AppendError::Invalid("signing thread failed".into()))??;
        head.extend(tail);
        Ok(head)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: failing loudly is the point
    use super::*;
    use crate::store::{Error, IndexKey, MemoryStore};
    use crate::supervise::Fatal;
    use ringlog_protocol::record::{HopRecord, NextHop, PrevHop, Verdicts};
    use ringlog_protocol::Hash;

    /// A memory store whose appends panic once `panics` is set (a bug in the write path), or
    /// fail with `Error::Failed` once `fails` is set (a store that must be reopened).
    #[derive(Default)]
    struct PanickyStore {
        inner: MemoryStore,
        panics: std::sync::atomic::AtomicBool,
        fails: std::sync::atomic::AtomicBool,
    }

    impl Store for PanickyStore {
        fn append(&self, log: &LogId, entries: &[SignedEntry]) -> Result<u64, Error> {
            if self.panics.load(Ordering::SeqCst) {
                panic!("a bug in the store");
            }
            if self.fails.load(Ordering::SeqCst) {
                return Err(Error::Failed);
            }
            self.inner.append(log, entries)
        }
        fn size(&self, log: &LogId) -> Result<u64, Error> {
            self.inner.size(log)
        }
        fn logs(&self) -> Result<Vec<LogId>, Error> {
            self.inner.logs()
        }
        fn entry(&self, log: &LogId, index: u64) -> Result<Option<Vec<u8>>, Error> {
            self.inner.entry(log, index)
        }
        fn entries(&self, log: &LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
            self.inner.entries(log, start, end)
        }
        fn node(&self, log: &LogId, level: u8, index: u64) -> Result<Option<Hash>, Error> {
            self.inner.node(log, level, index)
        }
        fn put_checkpoint(&self, log: &LogId, size: u64, note: &str) -> Result<(), Error> {
            self.inner.put_checkpoint(log, size, note)
        }
        fn checkpoint(&self, log: &LogId, size: u64) -> Result<Option<String>, Error> {
            self.inner.checkpoint(log, size)
        }
        fn latest_checkpoint(&self, log: &LogId) -> Result<Option<(u64, String)>, Error> {
            self.inner.latest_checkpoint(log)
        }
        fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, String)>, Error> {
            self.inner.checkpoints(log)
        }
        fn search(&self, key: &IndexKey) -> Result<Vec<(LogId, u64)>, Error> {
            self.inner.search(key)
        }
        fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.inner.meta(key)
        }
        fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            self.inner.put_meta(key, value)
        }
        fn flush(&self) -> Result<(), Error> {
            self.inner.flush()
        }
    }

    fn hop(n: u8) -> Body {
        Body::Hop(HopRecord {
            time_ms: 1,
            mfp1: Hash([n; 32]),
            mfp1_lite: Hash([n; 32]),
            body: Hash([n; 32]),
            parts: vec![],
            prev: PrevHop::External { ip: [192, 0, 2, 1].into(), helo: "x".into() },
            next: NextHop::Local { domain: "d.example".into() },
            queue_id: "q".into(),
            rcpt_count: 1,
            verdicts: Verdicts::default(),
            transform: None,
        })
    }

    async fn writer(store: Arc<PanickyStore>, fatal: &Fatal) -> Writer {
        let cfg = WriterConfig {
            origin: "test".into(),
            checkpoint_interval: Duration::from_secs(3600),
            max_batch: 16,
            queue: 16,
        };
        Writer::start(store, SecretKey::from_seed([7; 32]), cfg, fatal.clone()).await.unwrap()
    }

    #[tokio::test]
    async fn a_store_that_must_be_reopened_raises_fatal() {
        let store = Arc::new(PanickyStore::default());
        let fatal = Fatal::default();
        let w = writer(store.clone(), &fatal).await;
        assert_eq!(w.append(vec![hop(1)]).await.unwrap(), vec![0]);
        store.fails.store(true, Ordering::SeqCst);
        assert!(matches!(w.append(vec![hop(2)]).await, Err(AppendError::Store(_))));
        let why =
            tokio::time::timeout(Duration::from_secs(5), fatal.wait()).await.expect("fatal raised");
        assert!(why.contains("store failed"), "{why}");
    }

    #[tokio::test]
    async fn a_panic_in_the_writer_thread_raises_fatal_and_appends_fail_closed() {
        let store = Arc::new(PanickyStore::default());
        let fatal = Fatal::default();
        let w = writer(store.clone(), &fatal).await;
        assert_eq!(w.append(vec![hop(1)]).await.unwrap(), vec![0]);
        assert_eq!(fatal.get(), None);

        store.panics.store(true, Ordering::SeqCst);
        assert_eq!(w.append(vec![hop(2)]).await, Err(AppendError::Closed));
        let why =
            tokio::time::timeout(Duration::from_secs(5), fatal.wait()).await.expect("fatal raised");
        assert!(why.contains("log writer") && why.contains("a bug in the store"), "{why}");
        // Nothing was acknowledged beyond the first entry, and later appends fail at once.
        assert_eq!(store.size(&w.log).unwrap(), 1);
        assert_eq!(w.append(vec![hop(3)]).await, Err(AppendError::Closed));
    }
}
