//! The chain source as an operator configures it: one table shape for
//! every service that reads the chain (`[services.<name>.chain]`).

use std::path::Path;
use std::sync::Arc;

use crate::{BitcoindRpc, ChainSource, Esplora};

/// Which backend, where, and with which credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `esplora`, `bitcoind`, or `none` (no chain: only where a service
    /// allows it, for tests).
    pub backend: String,
    /// Esplora base URL, or bitcoind's RPC URL (bitcoind needs `-txindex`).
    pub url: String,
    /// bitcoind RPC user.
    pub user: String,
    /// File with the bitcoind RPC password, relative to the data dir; it
    /// must be readable by its owner only.
    pub password_file: String,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            backend: "esplora".into(),
            url: "https://blockstream.info/api".into(),
            user: String::new(),
            password_file: String::new(),
        }
    }
}

impl SourceConfig {
    /// The configured source (`None` for `backend = "none"`). A refusal
    /// names the field at fault and why.
    pub fn build(
        &self,
        data_dir: &Path,
    ) -> Result<Option<Arc<dyn ChainSource>>, (&'static str, String)> {
        let need = |v: &str, what: &'static str| {
            if v.is_empty() {
                Err((what, "is required".to_string()))
            } else {
                Ok(())
            }
        };
        match self.backend.as_str() {
            "esplora" => {
                need(&self.url, "url")?;
                Ok(Some(Arc::new(Esplora {
                    url: self.url.clone(),
                })))
            }
            "bitcoind" => {
                need(&self.url, "url")?;
                need(&self.password_file, "password_file")?;
                let path = data_dir.join(&self.password_file);
                let password = civkit_framework::keyfile::read_private(&path)
                    .map_err(|e| ("password_file", e.to_string()))?;
                Ok(Some(Arc::new(BitcoindRpc {
                    url: self.url.clone(),
                    user: self.user.clone(),
                    password: password.trim().to_string(),
                })))
            }
            "none" => Ok(None),
            other => Err((
                "backend",
                format!("`{other}`: choose esplora, bitcoind or none"),
            )),
        }
    }
}
