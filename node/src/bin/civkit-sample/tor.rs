//! `--tor`: reach boards through Tor, on arti in this process. A SOCKS5
//! front on loopback (civkit_tor::socks_proxy) carries nostr-sdk's
//! websockets and the NIP-11 requests, so names (`.onion` or not) are
//! resolved by Tor, never by this machine. arti keeps its state under
//! `--home`/tor; `--tor-config` adds arti's own TOML (a private network's
//! authorities and fallback caches, for example).

use std::net::SocketAddr;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

use crate::Cli;

static PROXY: OnceLock<SocketAddr> = OnceLock::new();

/// How long arti may take to bootstrap before the command gives up.
const BOOTSTRAP: std::time::Duration = std::time::Duration::from_secs(180);

/// The SOCKS5 front, once `--tor` started it.
pub fn proxy() -> Option<SocketAddr> {
    PROXY.get().copied()
}

/// Bootstrap arti and open the SOCKS5 front, when `--tor` is given.
pub async fn start(cli: &Cli) -> Result<()> {
    if !cli.tor {
        return Ok(());
    }
    let arti = match &cli.tor_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text).context("--tor-config is not TOML")?;
            match serde_json::to_value(table)? {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            }
        }
        None => serde_json::Map::new(),
    };
    let cfg = civkit_tor::TorConfig {
        arti,
        ..civkit_tor::TorConfig::default()
    };
    let home = crate::home::home(cli)?;
    let config = civkit_tor::arti_config(&cfg, &home).map_err(|e| anyhow!("Tor config: {e}"))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    eprintln!("connecting to Tor...");
    let client = tokio::time::timeout(
        BOOTSTRAP,
        arti_client::TorClient::create_bootstrapped(config),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "Tor did not bootstrap within {} s (is the network reachable? see --tor-config)",
            BOOTSTRAP.as_secs()
        )
    })?
    .context("bootstrapping Tor")?;
    let addr = civkit_tor::socks_proxy(client).await?;
    let _ = PROXY.set(addr);
    Ok(())
}
