//! The node's TOML configuration. Every field has a default, so a node made by `ringlog init`
//! runs with no flags from its directory.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the config file `ringlog init` writes.
pub const CONFIG_FILE: &str = "ringlog.toml";

/// The whole configuration. Relative paths are relative to the config file's directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This member's name in the genesis/roster.
    pub name: String,
    /// The ring's genesis file.
    pub genesis: PathBuf,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Where the key files live.
    pub keys_dir: PathBuf,
    /// The HTTP API.
    pub api: ApiConfig,
    /// The append pipeline.
    pub log: LogConfig,
    /// Peer-to-peer replication.
    pub p2p: P2pConfig,
    /// The milter endpoint.
    pub milter: MilterConfig,
    /// Following Postfix's delivery log (see `postfix_log.rs`).
    pub postfix_log: PostfixLogConfig,
}

/// HTTP API settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Read-only HTTP listener (appends need the bearer token here).
    pub http: String,
    /// Unix socket that accepts appends; access is by file permissions.
    pub socket: PathBuf,
    /// File holding the bearer token that allows appends over HTTP.
    pub token_file: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// Append pipeline settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Sign a checkpoint at least this often while the log grows.
    pub checkpoint_interval_ms: u64,
    /// Most entries written in one group commit.
    pub max_batch: usize,
    /// Most appends waiting; beyond this the node answers "overloaded".
    pub queue: usize,
}

/// Replication settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Turn replication on.
    pub enabled: bool,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// How often to exchange log summaries with peers.
    pub sync_interval_ms: u64,
}

/// Milter settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilterConfig {
    /// `host:port` to listen on; empty turns the milter off.
    pub listen: String,
    /// Refuse to relay mail from untrusted senders to non-local domains.
    pub refuse_untrusted_relay: bool,
    /// Largest message the milter fingerprints.
    pub max_message_bytes: usize,
    /// How long the milter waits for the log writer before it accepts a message without record.
    pub append_timeout_ms: u64,
    /// Next hops by recipient domain that take precedence over ring routing (`member:NAME`,
    /// `local:DOMAIN`, `external:HOST`): for an MTA whose transport map sends a domain elsewhere
    /// than the roster would, e.g. while the roster does not yet hold an admission.
    pub routes: std::collections::BTreeMap<String, String>,
}

/// Postfix delivery log follower settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostfixLogConfig {
    /// The log file Postfix writes (`maillog_file`, or syslog's mail log); unset: off.
    pub path: Option<PathBuf>,
    /// How often to look for new lines.
    pub poll_ms: u64,
    /// Read a file that exists at start from its beginning rather than from its end.
    pub from_start: bool,
}

impl Default for PostfixLogConfig {
    fn default() -> Self {
        PostfixLogConfig { path: None, poll_ms: 500, from_start: false }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            genesis: "genesis.json".into(),
            data_dir: "data".into(),
            keys_dir: "keys".into(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            p2p: P2pConfig::default(),
            milter: MilterConfig::default(),
            postfix_log: PostfixLogConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http: "127.0.0.1:7480".into(),
            socket: "ringlog.sock".into(),
            token_file: "keys/api.token".into(),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { checkpoint_interval_ms: 1000, max_batch: 2048, queue: 16384 }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            enabled: true,
            listen: vec!["/ip4/127.0.0.1/tcp/7481".into()],
            sync_interval_ms: 2000,
        }
    }
}

impl Default for MilterConfig {
    fn default() -> Self {
        MilterConfig {
            listen: String::new(),
            refuse_untrusted_relay: false,
            max_message_bytes: 32 * 1024 * 1024,
            append_timeout_ms: 2000,
            routes: std::collections::BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads a config file and makes its relative paths relative to the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.rebase(base);
        Ok(cfg)
    }

    /// Makes relative paths relative to `base`.
    pub fn rebase(&mut self, base: &Path) {
        for p in [
            &mut self.genesis,
            &mut self.data_dir,
            &mut self.keys_dir,
            &mut self.api.socket,
            &mut self.api.token_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(p) = self.postfix_log.path.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
