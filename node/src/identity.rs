//! A member's secrets on disk: the log key, the node (libp2p) key and the customer-commitment
//! secret, each a 32-byte seed in hex in its own file, readable only by the owner.

use anyhow::{bail, Context as _};
use ringlog_protocol::{Hash, PublicKey, SecretKey};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The three secrets of a node.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Signs the member's log entries and checkpoints (and its witness cosignatures).
    pub log_key: SecretKey,
    /// Seed of the libp2p identity.
    pub node_key: SecretKey,
    /// Salts customer commitments.
    pub commit_secret: Hash,
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Writes a fresh 32-byte secret from the operating system's generator, mode 0600; refuses to
/// overwrite.
pub fn write_new_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    use rand::RngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    write_secret(path, &seed)?;
    Ok(seed)
}

/// Writes a secret seed as hex, mode 0600; refuses to overwrite.
pub fn write_secret(path: &Path, seed: &[u8; 32]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()?;
    Ok(())
}

/// Reads a hex seed written by [`write_secret`].
pub fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut seed = [0u8; 32];
    if hex::decode_to_slice(text.trim(), &mut seed).is_err() {
        bail!("{} does not hold 64 hex digits", path.display());
    }
    Ok(seed)
}

impl Identity {
    /// Creates the three key files under `dir` (fails if any exists).
    pub fn create(dir: &Path) -> anyhow::Result<Identity> {
        let log = write_new_secret(&key_path(dir, "log"))?;
        let node = write_new_secret(&key_path(dir, "node"))?;
        let commit = write_new_secret(&key_path(dir, "commit"))?;
        Ok(Identity {
            log_key: SecretKey::from_seed(log),
            node_key: SecretKey::from_seed(node),
            commit_secret: Hash(commit),
        })
    }

    /// Loads the key files from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Identity> {
        Ok(Identity {
            log_key: SecretKey::from_seed(read_secret(&key_path(dir, "log"))?),
            node_key: SecretKey::from_seed(read_secret(&key_path(dir, "node"))?),
            commit_secret: Hash(read_secret(&key_path(dir, "commit"))?),
        })
    }

    /// Public log key (the log id).
    pub fn log_id(&self) -> PublicKey {
        self.log_key.public()
    }
}
