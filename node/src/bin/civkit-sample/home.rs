//! The client's key, in `--home` (default `$CIVKIT_SAMPLE_HOME` or
//! `~/.civkit-sample`), mode 0600.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use nostr::{Keys, SecretKey};

use crate::Cli;

pub fn home(cli: &Cli) -> Result<PathBuf> {
    if let Some(h) = &cli.home {
        return Ok(h.clone());
    }
    if let Ok(h) = std::env::var("CIVKIT_SAMPLE_HOME") {
        return Ok(PathBuf::from(h));
    }
    let h = std::env::var("HOME").context("HOME is not set; pass --home")?;
    Ok(PathBuf::from(h).join(".civkit-sample"))
}

pub fn load_keys(cli: &Cli) -> Result<Keys> {
    let path = home(cli)?.join("key");
    let hex = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no key at {}; run `civkit-sample keygen` first",
            path.display()
        )
    })?;
    Ok(Keys::new(
        SecretKey::from_hex(hex.trim()).context("the key file is not a hex secret key")?,
    ))
}

pub fn keygen(cli: &Cli, force: bool) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = home(cli)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join("key");
    if path.exists() && !force {
        let keys = load_keys(cli)?;
        println!(
            "key exists: {} (use --force to replace)",
            keys.public_key().to_hex()
        );
        return Ok(());
    }
    let _ = std::fs::remove_file(&path);
    let keys = create_key(&path)?;
    println!("public key {}", keys.public_key().to_hex());
    println!("saved to {}", path.display());
    Ok(())
}

/// A new key written to `path` (its directory created mode 0700, the file
/// mode 0600; an existing file is not overwritten).
pub fn create_key(path: &std::path::Path) -> Result<Keys> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let keys = Keys::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, keys.secret_key().to_secret_hex().as_bytes())?;
    Ok(keys)
}
