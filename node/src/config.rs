//! civkitd's config: built-in defaults, then a TOML file, then `CIVKIT_*`
//! environment variables (`CIVKIT_NODE__DATA_DIR`,
//! `CIVKIT_TRANSPORTS__RELAY__LISTEN`: `__` separates levels).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use civkit_framework::{ComponentConfig, ComponentKind, NodeInfo, Registry};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Dict;
use figment::Figment;
use serde::{Deserialize, Serialize};

/// `[node]`: the node itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Where the store, the node key and the admin cookie live.
    pub data_dir: PathBuf,
    /// Name shown in NIP-11.
    pub name: String,
    /// Description shown in NIP-11.
    pub description: String,
    /// Operator contact shown in NIP-11 (empty: none).
    pub contact: String,
    /// Public websocket URL of this relay; NIP-42 `relay` tags must name it
    /// (the URL a client dialed is accepted too). Empty: none.
    pub relay_url: String,
    /// Seconds between sweeps of expired events (NIP-40).
    pub sweep_interval_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: PathBuf::from("./civkit-data"),
            name: "civkit board".into(),
            description: "A CivKit market board: a Nostr relay joined to a Lightning gateway."
                .into(),
            contact: String::new(),
            relay_url: String::new(),
            sweep_interval_secs: 60,
            log: "info".into(),
        }
    }
}

/// `[admin]`: the operator's API, on loopback only, authenticated by the
/// cookie file in the data dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Loopback address and port of the admin API.
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 7778)),
        }
    }
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub admin: AdminSection,
    /// `[persister]` with `type` and the persister's keys.
    pub persister: Dict,
    /// `[transports.<name>]` tables.
    #[serde(default)]
    pub transports: BTreeMap<String, Dict>,
    /// `[services.<name>]` tables, in admission order (by name).
    #[serde(default)]
    pub services: BTreeMap<String, Dict>,
}

/// The layout used when no config file is given: a websocket relay on
/// 127.0.0.1:7777 and a market board, over the sled store in `./civkit-data`.
fn embedded_defaults() -> serde_json::Value {
    serde_json::json!({
        "persister": { "type": "sled" },
        "transports": { "relay": { "type": "nostr-ws" } },
        "services": { "board": { "type": "market-board" } },
    })
}

impl Config {
    /// Load: defaults, then `file` (if any), then `CIVKIT_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut fig = Figment::new();
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(anyhow!("config file {} does not exist", path.display()));
                }
                fig = fig
                    .merge(Serialized::defaults(
                        serde_json::json!({ "persister": { "type": "sled" } }),
                    ))
                    .merge(Toml::file_exact(path));
            }
            None => fig = fig.merge(Serialized::defaults(embedded_defaults())),
        }
        Self::extract(fig.merge(Env::prefixed("CIVKIT_").split("__")))
    }

    /// Load from TOML text (tests, example-config).
    pub fn from_toml(text: &str) -> Result<Config> {
        Self::extract(
            Figment::new()
                .merge(Serialized::defaults(
                    serde_json::json!({ "persister": { "type": "sled" } }),
                ))
                .merge(Toml::string(text)),
        )
    }

    fn extract(fig: Figment) -> Result<Config> {
        let cfg: Config = fig.extract().map_err(|e| {
            let key = e.path.join(".");
            anyhow!("config error at `{key}`: {}", e.kind)
        })?;
        if !cfg.admin.listen.ip().is_loopback() {
            return Err(anyhow!(
                "config error at `admin.listen`: the admin API listens on loopback only, not {}",
                cfg.admin.listen
            ));
        }
        Ok(cfg)
    }

    /// NIP-11 description of the node.
    pub fn node_info(&self) -> NodeInfo {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        NodeInfo {
            name: self.node.name.clone(),
            description: self.node.description.clone(),
            contact: opt(&self.node.contact),
            relay_url: opt(&self.node.relay_url),
        }
    }

    /// Every component table with its path, in build order.
    pub fn components(&self) -> Vec<(ComponentKind, String, ComponentConfig)> {
        let mut out = vec![(
            ComponentKind::Persister,
            "persister".to_string(),
            ComponentConfig::new("persister", self.persister.clone()),
        )];
        for (kind, tables) in [
            (ComponentKind::Transport, &self.transports),
            (ComponentKind::Service, &self.services),
        ] {
            for (name, table) in tables {
                let path = format!("{}.{name}", kind.section());
                out.push((
                    kind,
                    name.clone(),
                    ComponentConfig::new(path, table.clone()),
                ));
            }
        }
        out
    }
}

/// The annotated example config: every key of the node and of every
/// registered component, with its default.
pub fn example_config(registry: &Registry) -> String {
    let mut out = String::from(
        "# civkitd example configuration: every key of every registered component,\n\
         # with its default. Remove the tables you do not want. Any key can also be\n\
         # set from the environment: CIVKIT_NODE__DATA_DIR, CIVKIT_TRANSPORTS__RELAY__LISTEN, ...\n\n",
    );
    out.push_str(NODE_EXAMPLE);
    for (kind, info) in registry.list() {
        let table = match kind {
            ComponentKind::Persister => "persister".to_string(),
            ComponentKind::Transport => format!("transports.{}", instance_name(info.type_name)),
            ComponentKind::Service => format!("services.{}", instance_name(info.type_name)),
        };
        out.push_str(&format!(
            "\n# {}\n[{table}]\ntype = \"{}\"\n",
            info.description, info.type_name
        ));
        out.push_str(&info.example.replace("{table}", &table));
    }
    out
}

/// The instance name the example uses for a component type.
pub fn instance_name(type_name: &str) -> &str {
    match type_name {
        "nostr-ws" => "relay",
        "market-board" => "board",
        "bolt8" => "ln",
        "onion-messages" => "onion",
        "mainstay" => "notary",
        other => other,
    }
}

const NODE_EXAMPLE: &str = r#"[node]
# Where the store, the node key and the admin cookie live.
data_dir = "./civkit-data"
# Name shown in NIP-11.
name = "civkit board"
# Description shown in NIP-11.
description = "A CivKit market board: a Nostr relay joined to a Lightning gateway."
# Operator contact shown in NIP-11 (empty: none).
contact = ""
# Public websocket URL of this relay; NIP-42 relay tags must name it (empty: none).
relay_url = ""
# Seconds between sweeps of expired events (NIP-40).
sweep_interval_secs = 60
# Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
log = "info"

[admin]
# Loopback address and port of the admin API (cookie auth, see admin.cookie in data_dir).
listen = "127.0.0.1:7778"
"#;
