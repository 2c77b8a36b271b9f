//! Files in the data directory: the node key, the admin cookie and endpoint.
//! Secrets are created with mode 0600 and never logged.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nostr::{Keys, SecretKey};

/// File name of the node's Nostr secret key (hex).
pub const NODE_KEY: &str = "node.key";
/// File name of the admin API cookie.
pub const ADMIN_COOKIE: &str = "admin.cookie";
/// File name holding the admin API's `host:port`.
pub const ADMIN_ENDPOINT: &str = "admin.endpoint";

/// Create the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode of {}", dir.display()))?;
    }
    Ok(())
}

/// Write a secret file with mode 0600, replacing any old one.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    Ok(civkit_framework::keyfile::write_secret(path, contents)?)
}

/// Load the node's Nostr key, creating it once (mode 0600) on first start.
pub fn load_or_create_keys(data_dir: &Path) -> Result<Keys> {
    let (secret, created) = civkit_framework::keyfile::load_or_create(&data_dir.join(NODE_KEY))?;
    let keys = Keys::new(
        SecretKey::from_slice(&secret).context("the node key is not a valid secret key")?,
    );
    if created {
        tracing::info!(pubkey = %keys.public_key().to_hex(), "created node key");
    }
    Ok(keys)
}

/// A fresh random cookie (hex of 32 bytes).
pub fn random_cookie() -> Result<String> {
    let mut buf = [0u8; 32];
    getrandom::getrandom(&mut buf).context("reading the OS random source")?;
    Ok(hex::encode(buf))
}

/// Where the admin files of a data dir are.
pub fn admin_files(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join(ADMIN_COOKIE), data_dir.join(ADMIN_ENDPOINT))
}
