//! A running node: loads config, genesis and keys, opens the store, starts the writer, the
//! HTTP API (TCP and Unix socket) and replication, and shuts down cleanly on SIGTERM/SIGINT
//! (final checkpoint, flush).

use crate::api::{self, Listener};
use crate::config::Config;
use crate::identity::Identity;
use crate::store::{SledStore, Store};
use crate::writer::{Writer, WriterConfig};
use anyhow::Context as _;
use ringlog_protocol::genesis::Genesis;
use ringlog_protocol::LogId;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What every part of a running node shares.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// The ring's genesis.
    pub genesis: Genesis,
    /// Keys.
    pub identity: Identity,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The own log's writer.
    pub writer: Writer,
    /// Bearer token for appends over TCP, if configured.
    pub token: Option<String>,
    /// Member names by log id.
    pub names: RwLock<BTreeMap<LogId, String>>,
    /// Extra gauges and counters from other parts (replication), name -> value.
    pub gauges: RwLock<BTreeMap<String, u64>>,
    /// The roster, folded from genesis and every governance entry held.
    pub roster: crate::governance::LiveRoster,
    /// What the Postfix delivery log follower found.
    pub postfix_log: crate::postfix_log::Status,
}

impl Shared {
    /// The member name of a log, or its hex id when unknown.
    pub fn name_of(&self, log: &LogId) -> String {
        if let Some(m) = self.roster.roster().by_log_key(log) {
            return m.info.name.clone();
        }
        self.names.read().ok().and_then(|n| n.get(log).cloned()).unwrap_or_else(|| log.to_hex())
    }

    /// Records entries just made durable in `log` (own or replicated): the roster refolds
    /// when governance entries arrive.
    pub fn on_appended(&self, log: &LogId, encoded: &[Vec<u8>]) {
        self.roster.on_appended(log, encoded);
    }

    /// A log named by member name or hex id.
    pub fn resolve_log(&self, s: &str) -> Option<LogId> {
        if let Some(id) = LogId::from_hex(s) {
            return Some(id);
        }
        if let Some(m) = self.roster.roster().member(s) {
            return Some(m.info.log_key);
        }
        let names = self.names.read().ok()?;
        names.iter().find(|(_, n)| n.as_str() == s).map(|(id, _)| *id)
    }

    /// Snapshot of the extra metrics.
    pub fn extra_metrics(&self) -> Vec<(String, u64)> {
        self.gauges
            .read()
            .map(|g| g.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// Starts a node from `cfg` and runs until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let node = start(cfg).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.stop().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A started node.
pub struct Running {
    /// Shared state.
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Final checkpoint, flush, stop serving.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.shared.writer.checkpoint().await {
            Ok(Some(cp)) => tracing::info!(size = cp.checkpoint().size, "final checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "no final checkpoint"),
        }
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await??;
        for t in self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.shared.cfg.api.socket);
        Ok(())
    }
}

/// Starts every part of the node and returns once it serves.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let genesis_text = std::fs::read_to_string(&cfg.genesis)
        .with_context(|| format!("reading genesis {}", cfg.genesis.display()))?;
    let genesis = Genesis::from_json(&genesis_text)?;
    let identity = Identity::load(&cfg.keys_dir)?;
    let me =
        genesis.members.iter().find(|m| m.log_key == identity.log_id()).map(|m| m.name.clone());
    if let Some(me) = &me {
        if !cfg.name.is_empty() && &cfg.name != me {
            anyhow::bail!(
                "config names this node {:?} but the genesis calls its key {:?}",
                cfg.name,
                me
            );
        }
    }
    let mut cfg = cfg;
    if cfg.name.is_empty() {
        cfg.name =
            me.clone().context("the log key is not in the genesis and no name is configured")?;
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("store");
    let store: Arc<dyn Store> = {
        let p = path.clone();
        Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&p)).await?.with_context(
            || {
                format!(
                    "opening store {} (is another node running from this directory?)",
                    path.display()
                )
            },
        )?)
    };
    let writer = Writer::start(
        store.clone(),
        identity.log_key.clone(),
        WriterConfig {
            origin: genesis.origin(&cfg.name),
            checkpoint_interval: Duration::from_millis(cfg.log.checkpoint_interval_ms.max(10)),
            max_batch: cfg.log.max_batch.max(1),
            queue: cfg.log.queue.max(1),
        },
    )
    .await?;
    let token = match std::fs::read_to_string(&cfg.api.token_file) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let names = genesis.members.iter().map(|m| (m.log_key, m.name.clone())).collect();
    let roster = {
        let (g, st) = (genesis.clone(), store.clone());
        tokio::task::spawn_blocking(move || crate::governance::LiveRoster::load(&g, &*st))
            .await?
            .context("folding the roster from the store")?
    };
    let mut own_events = writer.subscribe();
    let shared = Arc::new(Shared {
        cfg,
        genesis,
        identity,
        store,
        writer,
        token,
        names: RwLock::new(names),
        gauges: RwLock::new(BTreeMap::new()),
        roster,
        postfix_log: Default::default(),
    });
    let mut tasks = Vec::new();
    // The own log's governance entries reach the roster as soon as they are durable.
    {
        let sh = shared.clone();
        let log = shared.writer.log;
        tasks.push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match own_events.recv().await {
                    Ok(crate::writer::LogEvent::Appended(_, entries)) => {
                        sh.on_appended(&log, &entries)
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        tracing::warn!("roster missed own-log events; refolding from the store");
                        let st = sh.store.clone();
                        let g = sh.genesis.clone();
                        if let Ok(Ok(r)) = tokio::task::spawn_blocking(move || {
                            crate::governance::LiveRoster::load(&g, &*st)
                        })
                        .await
                        {
                            sh.roster.replace_with(r);
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
    }

    let tcp = tokio::net::TcpListener::bind(&shared.cfg.api.http)
        .await
        .with_context(|| format!("binding HTTP API on {}", shared.cfg.api.http))?;
    tracing::info!(addr = %tcp.local_addr()?, "HTTP API listening");
    let app = api::router(shared.clone(), Listener::Tcp);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    }));

    let sock_path = shared.cfg.api.socket.clone();
    let _ = std::fs::remove_file(&sock_path);
    let sock = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding append socket {}", sock_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o660))?;
    }
    tracing::info!(path = %sock_path.display(), "append socket listening");
    let app = api::router(shared.clone(), Listener::Socket);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(sock, app).await {
            tracing::error!(error = %e, "append socket stopped");
        }
    }));

    // --- replication (owned by the replication work; see replicator.rs) ---
    if shared.cfg.p2p.enabled {
        tasks.extend(crate::replicator::start(shared.clone()).await?);
    }
    // --- end replication ---

    // --- milter (owned by the milter work; see milter.rs) ---
    if !shared.cfg.milter.listen.is_empty() {
        tasks.push(crate::milter::start(shared.clone()).await?);
    }
    tasks.extend(crate::postfix_log::start(shared.clone()));
    // --- end milter ---

    tracing::info!(
        member = %shared.cfg.name,
        log = %shared.writer.log,
        size = shared.writer.stats.size.load(std::sync::atomic::Ordering::Relaxed),
        "node started"
    );
    Ok(Running { shared, tasks })
}
