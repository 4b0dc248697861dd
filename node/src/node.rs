//! A running node: loads config, genesis and keys, opens the store, starts the writer, the
//! HTTP API (TCP and Unix socket) and replication, and shuts down cleanly on SIGTERM/SIGINT
//! (final checkpoint, flush).

use crate::api::{self, Listener};
use crate::config::Config;
use crate::identity::Identity;
use crate::store::{SledStore, Store};
use crate::supervise::{self, Fatal};
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
    /// Raised when a part the node cannot run without ends; the node then stops.
    pub fatal: Fatal,
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

/// Starts a node from `cfg` and runs until SIGTERM or SIGINT, or until a part it cannot run
/// without fails (then it stops as cleanly as it can and returns the reason as an error, so
/// that the process exits non-zero and a supervisor restarts it).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    serve_until(start(cfg).await?, wait_for_signal()).await
}

/// Serves until `stop` resolves (an orderly stop) or a part of the node fails.
pub async fn serve_until(
    node: Running,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let fatal = node.shared.fatal.clone();
    tokio::select! {
        _ = stop => {
            tracing::info!("shutting down");
            node.stop().await
        }
        why = fatal.wait() => {
            // Bounded: after a failure a part may hang; the exit must not.
            match tokio::time::timeout(Duration::from_secs(30), node.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "stopping after the failure"),
                Err(_) => tracing::warn!("stopping after the failure took over 30 s; exiting"),
            }
            Err(anyhow::anyhow!("node stopped: {why}"))
        }
    }
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
    /// The watched tasks (see [`crate::supervise`]).
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Running {
    /// Final checkpoint, flush, stop serving.
    pub async fn stop(self) -> anyhow::Result<()> {
        // Parts that end from here on end because the node stops.
        self.shared.fatal.stand_down();
        match self.shared.writer.checkpoint().await {
            Ok(Some(cp)) => tracing::info!(size = cp.checkpoint().size, "final checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "no final checkpoint"),
        }
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await??;
        for t in &self.tasks {
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
    let fatal = Fatal::default();
    let writer = Writer::start(
        store.clone(),
        identity.log_key.clone(),
        WriterConfig {
            origin: genesis.origin(&cfg.name),
            checkpoint_interval: Duration::from_millis(cfg.log.checkpoint_interval_ms.max(10)),
            max_batch: cfg.log.max_batch.max(1),
            queue: cfg.log.queue.max(1),
        },
        fatal.clone(),
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
        fatal,
    });
    let mut tasks = Vec::new();
    let watch = |name: &str, h| supervise::task(name, shared.fatal.clone(), h);
    // The own log's governance entries reach the roster as soon as they are durable.
    {
        let sh = shared.clone();
        let log = shared.writer.log;
        tasks.push(supervise::spawn("roster", shared.fatal.clone(), async move {
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
    tasks.push(supervise::spawn("HTTP API", shared.fatal.clone(), async move {
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
    tasks.push(supervise::spawn("append socket", shared.fatal.clone(), async move {
        if let Err(e) = axum::serve(sock, app).await {
            tracing::error!(error = %e, "append socket stopped");
        }
    }));

    // --- replication (owned by the replication work; see replicator.rs) ---
    if shared.cfg.p2p.enabled {
        for (name, h) in crate::replicator::start(shared.clone()).await? {
            tasks.push(watch(name, h));
        }
    }
    // --- end replication ---

    // --- milter (owned by the milter work; see milter.rs) ---
    if !shared.cfg.milter.listen.is_empty() {
        tasks.push(watch("milter", crate::milter::start(shared.clone()).await?));
    }
    if let Some(h) = crate::postfix_log::start(shared.clone()) {
        tasks.push(watch("Postfix log follower", h));
    }
    // --- end milter ---

    tracing::info!(
        member = %shared.cfg.name,
        log = %shared.writer.log,
        size = shared.writer.stats.size.load(std::sync::atomic::Ordering::Relaxed),
        "node started"
    );
    Ok(Running { shared, tasks })
}

/// The configuration of node `name` in `dir`, without networking and with its HTTP API on a
/// free port (for `ringlog bench` and tests).
pub(crate) fn solo_config(dir: &std::path::Path, name: &str) -> Config {
    let mut cfg = Config { name: name.into(), ..Config::default() };
    cfg.api.http = "127.0.0.1:0".into();
    cfg.p2p.enabled = false;
    cfg.rebase(dir);
    cfg
}

/// Creates the keys of [`solo_config`]'s node and a genesis in which it is the only member.
pub(crate) fn solo_ring(dir: &std::path::Path, name: &str) -> anyhow::Result<Config> {
    let cfg = solo_config(dir, name);
    let id = Identity::create(&cfg.keys_dir)?;
    let ring = name.split('.').next().unwrap_or(name).to_string();
    let g = Genesis {
        version: ringlog_protocol::genesis::GENESIS_VERSION,
        ring,
        members: vec![ringlog_protocol::record::MemberInfo {
            name: cfg.name.clone(),
            log_key: id.log_key.public(),
            node_key: id.node_key.public(),
            addrs: vec![],
            mail_hosts: vec![],
            domains: vec![],
            abuse: format!("abuse@{name}"),
        }],
        backbone_quorum: 1,
        witness_k: 0,
    };
    std::fs::write(&cfg.genesis, g.to_json())?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: failing loudly is the point
    use super::*;

    /// A new one-member ring and its node in `dir`.
    async fn single(dir: &std::path::Path) -> Running {
        start(solo_ring(dir, "solo.example").unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_failed_part_stops_the_node_with_its_reason_and_a_signal_stops_it_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let node = single(tmp.path()).await;
        let fatal = node.shared.fatal.clone();
        let socket = node.shared.cfg.api.socket.clone();
        tokio::spawn(async move { fatal.raise("the test part broke".into()) });
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            serve_until(node, std::future::pending()),
        )
        .await
        .expect("the node stopped on its own");
        let e = r.expect_err("a failure is an error");
        assert!(e.to_string().contains("the test part broke"), "{e}");
        assert!(!socket.exists(), "the node stopped serving");

        // The store was closed: the node starts again from it, and stops cleanly on a signal.
        let node = start(solo_config(tmp.path(), "solo.example")).await.unwrap();
        assert_eq!(node.shared.fatal.get(), None);
        serve_until(node, async {}).await.expect("an orderly stop is not an error");
    }
}
