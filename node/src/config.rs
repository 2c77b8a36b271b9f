//! civkitd's config: built-in defaults, then a TOML file, then `CIVKIT_*`
//! environment variables (`CIVKIT_NODE__DATA_DIR`,
//! `CIVKIT_TRANSPORTS__RELAY__LISTEN`: `__` separates levels).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use civkit_framework::{ComponentConfig, ComponentKind, FanOut, NodeInfo, Registry};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Dict;
use figment::Figment;
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

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
    /// Seconds the board lease lasts unrenewed: with a store several nodes
    /// share, the board-wide work moves to another node within about this
    /// long after the node doing it dies.
    pub lease_ttl_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// Log lines as `text` (for people) or `json` (one object per line,
    /// with the fields of the spans it happened in, for journald, Loki and
    /// the like).
    pub log_format: LogFormat,
    /// How fan-out finds the subscriptions a new event matches: `indexed`, or
    /// `linear` (tests every subscription; kept as the benchmark reference).
    pub fan_out: FanOut,
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
            lease_ttl_secs: 10,
            log: "info".into(),
            log_format: LogFormat::Text,
            fan_out: FanOut::Indexed,
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

/// `[metrics]`: the Prometheus endpoint (`GET /metrics`). Off unless
/// `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address and port of the endpoint; loopback unless `allow_remote`.
    pub listen: Option<SocketAddr>,
    /// Let `listen` be an address other hosts reach (a scraper elsewhere).
    pub allow_remote: bool,
    /// A file holding the token scrapers send as `Authorization: Bearer
    /// <token>` (at least 16 characters; the file readable by its owner
    /// only). No token is asked for when unset.
    pub token_file: Option<PathBuf>,
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[persister]` with `type` and the persister's keys.
    pub persister: Dict,
    /// `[transports.<name>]` tables.
    #[serde(default)]
    pub transports: BTreeMap<String, Dict>,
    /// `[services.<name>]` tables; admission runs by their `order` key.
    #[serde(default)]
    pub services: BTreeMap<String, Dict>,
}

/// The store used when the config names none.
pub const DEFAULT_PERSISTER: &str = "lmdb";

/// The layout used when no config file is given: a websocket relay on
/// 127.0.0.1:7777 and a market board, over the LMDB store in `./civkit-data`.
fn embedded_defaults() -> serde_json::Value {
    serde_json::json!({
        "persister": { "type": DEFAULT_PERSISTER },
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
                        serde_json::json!({ "persister": { "type": DEFAULT_PERSISTER } }),
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
                    serde_json::json!({ "persister": { "type": DEFAULT_PERSISTER } }),
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
        if let Some(listen) = cfg.metrics.listen {
            if !listen.ip().is_loopback() && !cfg.metrics.allow_remote {
                return Err(anyhow!(
                    "config error at `metrics.listen`: {listen} is not a loopback address; set metrics.allow_remote = true to serve metrics to other hosts"
                ));
            }
            if !listen.ip().is_loopback() && cfg.tor_only() {
                return Err(anyhow!(
                    "config error at `metrics.listen`: a tor transport has outbound_only = true, so the node opens no clearnet listener; use a loopback address"
                ));
            }
        }
        Ok(cfg)
    }

    /// The metrics endpoint's bearer token, read from `metrics.token_file`.
    pub fn metrics_token(&self) -> Result<Option<String>> {
        let Some(path) = &self.metrics.token_file else {
            return Ok(None);
        };
        let key = "config error at `metrics.token_file`";
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .with_context(|| format!("{key}: cannot read {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(anyhow!(
                    "{key}: {} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ));
            }
        }
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("{key}: cannot read {}", path.display()))?
            .trim()
            .to_string();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(anyhow!(
                "{key}: the token must be at least 16 printable characters without spaces"
            ));
        }
        Ok(Some(token))
    }

    /// Whether a `tor` transport has `outbound_only = true`: then the
    /// node opens no clearnet listener but the admin API and dials every
    /// peer through Tor.
    pub fn tor_only(&self) -> bool {
        use figment::value::Value;
        self.transports.values().any(|t| {
            matches!(t.get("type"), Some(Value::String(_, s)) if s == "tor")
                && matches!(t.get("outbound_only"), Some(Value::Bool(_, true)))
        })
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

    /// Every component table with its path, in build order: the persister,
    /// the transports, then the services in admission order (see
    /// [`Config::services_in_order`]).
    pub fn components(&self) -> Result<Vec<(ComponentKind, String, ComponentConfig)>> {
        let mut out = vec![(
            ComponentKind::Persister,
            "persister".to_string(),
            ComponentConfig::new("persister", self.persister.clone()),
        )];
        for (name, table) in &self.transports {
            out.push((
                ComponentKind::Transport,
                name.clone(),
                ComponentConfig::new(format!("transports.{name}"), table.clone()),
            ));
        }
        for (name, _, table) in self.services_in_order()? {
            out.push((
                ComponentKind::Service,
                name.clone(),
                ComponentConfig::new(format!("services.{name}"), table),
            ));
        }
        Ok(out)
    }

    /// The services in admission order, with their `order` key (removed from
    /// the table). Services run by ascending `order`. The key is required as
    /// soon as two services are configured, and two services cannot share a
    /// value: TOML tables are maps, and the file is merged with `CIVKIT_*`
    /// variables, so the position of a table in the file is not something
    /// the merged config keeps. An explicit number is.
    pub fn services_in_order(&self) -> Result<Vec<(String, Option<i64>, Dict)>> {
        let mut out = Vec::new();
        for (name, table) in &self.services {
            // The name is the service's key-value namespace; `_` names are
            // the framework's own.
            if !civkit_framework::persister::valid_namespace(name) || name.starts_with('_') {
                return Err(anyhow!(
                    "config error at `services.{name}`: a service name is 1 to 64 lowercase \
                     letters, digits, `-` and `_`, and does not start with `_`"
                ));
            }
            let mut table = table.clone();
            let order = match table.remove("order") {
                None => None,
                Some(v) => Some(v.to_i128().and_then(|n| i64::try_from(n).ok()).ok_or_else(
                    || anyhow!("config error at `services.{name}.order`: must be an integer"),
                )?),
            };
            out.push((name.clone(), order, table));
        }
        if out.len() > 1 {
            if let Some((name, _, _)) = out.iter().find(|(_, o, _)| o.is_none()) {
                return Err(anyhow!(
                    "config error at `services.{name}.order`: missing; with more than one \
                     service, each needs `order = <integer>` (admission runs by ascending order)"
                ));
            }
        }
        out.sort_by_key(|(_, o, _)| *o);
        if let Some(w) = out.windows(2).find(|w| w[0].1 == w[1].1) {
            return Err(anyhow!(
                "config error at `services.{}.order`: same order as `services.{}`; \
                 admission order must be unambiguous",
                w[1].0,
                w[0].0
            ));
        }
        Ok(out)
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
        let mut block = format!("[{table}]\ntype = \"{}\"\n", info.type_name);
        if kind == ComponentKind::Service {
            block.push_str(&format!(
                "# Place in the admission chain (ascending; required with two or more services).\norder = {}\n",
                example_order(info.type_name)
            ));
        }
        block.push_str(&info.example.replace("{table}", &table));
        // One store at a time: the others are shown commented out.
        if kind == ComponentKind::Persister && info.type_name != DEFAULT_PERSISTER {
            block = block.lines().map(|l| format!("# {l}\n")).collect();
        }
        out.push_str(&format!("\n# {}\n{block}", info.description));
    }
    out
}

/// The admission order the example gives a service type: cheap checks of
/// the order itself first, then proof of work, then a process plugin's
/// policy, then the credential spend,
/// then notarization, which only records what all the others accepted.
fn example_order(type_name: &str) -> u32 {
    match type_name {
        "market-board" => 10,
        "pow" => 20,
        "process-plugin" => 25,
        "credentials" => 30,
        "mainstay" => 40,
        _ => 50,
    }
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
# Seconds the board lease lasts unrenewed: with a store several nodes share,
# the board-wide work moves to another node within about this long after
# the node doing it dies.
lease_ttl_secs = 10
# Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
log = "info"
# Log lines as "text", or "json": one object per line with the fields of its
# spans (journald, Loki and the like).
log_format = "text"
# How fan-out finds the subscriptions a new event matches: "indexed", or
# "linear" (tests every subscription; kept as the benchmark reference).
fan_out = "indexed"

[admin]
# Loopback address and port of the admin API (cookie auth, see admin.cookie in data_dir).
listen = "127.0.0.1:7778"

[metrics]
# The Prometheus endpoint (GET /metrics, OpenMetrics text): off unless listen is set.
# listen = "127.0.0.1:9477"
# Let listen be an address other hosts reach.
allow_remote = false
# A file (mode 600) holding the bearer token scrapers must send; none asked for when unset.
# token_file = "/etc/civkit/metrics.token"
"#;
