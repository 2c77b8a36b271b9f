//! The explicit [`Registry`] of component constructors.
//!
//! Each component crate exports a `register(&mut Registry)` function; the node
//! binary calls each one. A config table `[transports.relay]` with
//! `type = "nostr-ws"` is built by the constructor registered under
//! `nostr-ws`, from the rest of that table.
//!
//! A transport can ride on another one (the onion-message gateway on a bolt8
//! transport). The one it rides on is registered with
//! [`Registry::register_transport_providing`] and returns a typed handle
//! when it is built; the rider is registered with
//! [`Registry::register_transport_on`], names the instance it rides on in its
//! config, and its constructor receives that instance's handle, with its
//! type. [`Registry::build_transports`] builds the providers first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use figment::value::{Dict, Value};
use nostr::Keys;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::board_secrets::BoardSecrets;
use crate::{Error, Persister, Result, Service, Transport};

/// What a constructor may use besides its own config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The instance name (`relay` in `[transports.relay]`).
    pub instance: String,
    /// The node's keys.
    pub keys: Keys,
    /// Secrets every node of the board must hold alike (see
    /// [`crate::board_secrets`]); shared by all of one node's contexts.
    pub board_secrets: BoardSecrets,
    /// The node reaches out through Tor only (a `tor` transport with
    /// `outbound_only = true`): transports open no clearnet listener and
    /// dial peers through [`crate::Node::dialer`].
    pub tor_only: bool,
    /// The node's metrics registry; make a component's metrics with
    /// [`Self::metrics`].
    pub node_metrics: crate::Metrics,
}

impl BuildContext {
    /// A context for `instance`, with a fresh set of board secrets.
    pub fn new(data_dir: impl Into<PathBuf>, instance: &str, keys: Keys) -> Self {
        BuildContext {
            data_dir: data_dir.into(),
            instance: instance.to_string(),
            keys,
            board_secrets: BoardSecrets::default(),
            tor_only: false,
            node_metrics: crate::Metrics::new(),
        }
    }

    /// This instance's metrics: each carries `instance="<name>"`.
    pub fn metrics(&self) -> crate::ScopedMetrics {
        self.node_metrics.scoped(&self.instance)
    }

    /// Record a secret that every node of the board must hold alike, read
    /// from `file` (named in the error when a node's copy differs). The
    /// label is this instance's `key`, as in `services.<instance>.key_file`.
    pub fn board_secret(&self, kind: &str, key: &str, file: &std::path::Path, secret: &[u8]) {
        self.board_secrets.record(
            &format!("{kind}.{}.{key}", self.instance),
            &file.display().to_string(),
            secret,
        );
    }
}

/// One component's config table, with its dotted path for error messages.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    path: String,
    table: Dict,
}

impl ComponentConfig {
    /// A config table found at `path` (e.g. `transports.relay`).
    pub fn new(path: impl Into<String>, table: Dict) -> Self {
        ComponentConfig {
            path: path.into(),
            table,
        }
    }
    /// The dotted path of this table.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The `type` key.
    pub fn type_name(&self) -> Result<String> {
        match self.table.get("type") {
            Some(Value::String(_, s)) => Ok(s.clone()),
            Some(_) => Err(Error::config(
                format!("{}.type", self.path),
                "must be a string",
            )),
            None => Err(Error::config(
                format!("{}.type", self.path),
                "missing key `type`",
            )),
        }
    }
    /// Deserialize the table, without `type`, into the component's config
    /// struct. Errors name the full key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let mut table = self.table.clone();
        table.remove("type");
        Value::from(table).deserialize::<T>().map_err(|e| {
            let mut key = self.path.clone();
            for p in &e.path {
                key.push('.');
                key.push_str(p);
            }
            Error::config(key, e.kind)
        })
    }
}

/// Describes a registered component for `civkitd list` and `example-config`.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// The `type = "..."` name.
    pub type_name: &'static str,
    /// One line on what it is.
    pub description: &'static str,
    /// An annotated TOML snippet of the table's keys (without the table header
    /// and `type`), every key present with its default value. `{table}` stands
    /// for the table's dotted path, for nested tables such as `[{table}.limits]`.
    pub example: &'static str,
    /// Every key of the config, with its default, for checking `example`.
    pub defaults: fn() -> Result<serde_json::Value>,
}

type Ctor<T> = Arc<dyn Fn(&ComponentConfig, &BuildContext) -> Result<T> + Send + Sync>;

/// The handle a providing transport returns, type-erased only inside the
/// registry: the registration of provider and rider both name its type.
type Handle = Arc<dyn std::any::Any + Send + Sync>;

/// Reads the instance a rider names (`via`) from its config.
type ViaFn = Arc<dyn Fn(&ComponentConfig) -> Result<String> + Send + Sync>;
/// Builds a rider with the handle of the instance it rides on.
type RiderCtor = Arc<
    dyn Fn(&ComponentConfig, &BuildContext, &Handle) -> Result<Box<dyn Transport>> + Send + Sync,
>;

/// How a transport type is built.
enum TransportCtor {
    /// On its own, with the handle it offers riders, if any.
    Plain(Ctor<(Box<dyn Transport>, Option<Handle>)>),
    /// On an instance of the transport type `base`, named by `via`.
    Rider {
        base: &'static str,
        via: ViaFn,
        ctor: RiderCtor,
    },
}

struct Entry<T> {
    info: ComponentInfo,
    ctor: Ctor<T>,
}

/// What kind of component an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentKind {
    Persister,
    Transport,
    Service,
}

impl ComponentKind {
    /// The config section name.
    pub fn section(self) -> &'static str {
        match self {
            ComponentKind::Persister => "persister",
            ComponentKind::Transport => "transports",
            ComponentKind::Service => "services",
        }
    }
}

/// Constructors by type name.
#[derive(Default)]
pub struct Registry {
    persisters: BTreeMap<&'static str, Entry<Arc<dyn Persister>>>,
    transports: BTreeMap<&'static str, (ComponentInfo, TransportCtor)>,
    services: BTreeMap<&'static str, Entry<Arc<dyn Service>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list().iter().map(|(k, i)| (k, i.type_name)))
            .finish()
    }
}

fn defaults_of<C: Serialize + Default>() -> Result<serde_json::Value> {
    serde_json::to_value(C::default()).map_err(|e| Error::Invalid(e.to_string()))
}

fn typed<C, T>(f: impl Fn(C, &BuildContext) -> Result<T> + Send + Sync + 'static) -> Ctor<T>
where
    C: DeserializeOwned,
{
    Arc::new(move |cfg: &ComponentConfig, ctx: &BuildContext| f(cfg.parse::<C>()?, ctx))
}

fn info<C: Serialize + Default>(
    type_name: &'static str,
    description: &'static str,
    example: &'static str,
) -> ComponentInfo {
    ComponentInfo {
        type_name,
        description,
        example,
        defaults: defaults_of::<C>,
    }
}

macro_rules! register_fn {
    ($fn_name:ident, $field:ident, $t:ty) => {
        /// Register a constructor taking the component's typed config.
        pub fn $fn_name<C>(
            &mut self,
            type_name: &'static str,
            description: &'static str,
            example: &'static str,
            ctor: impl Fn(C, &BuildContext) -> Result<$t> + Send + Sync + 'static,
        ) where
            C: DeserializeOwned + Serialize + Default,
        {
            let info = info::<C>(type_name, description, example);
            self.$field.insert(
                type_name,
                Entry {
                    info,
                    ctor: typed(ctor),
                },
            );
        }
    };
}

macro_rules! build_fn {
    ($fn_name:ident, $field:ident, $t:ty, $what:literal) => {
        /// Build the component a config table asks for.
        pub fn $fn_name(&self, cfg: &ComponentConfig, ctx: &BuildContext) -> Result<$t> {
            let ty = cfg.type_name()?;
            let entry = self.$field.get(ty.as_str()).ok_or_else(|| {
                let known: Vec<&str> = self.$field.keys().copied().collect();
                Error::config(
                    format!("{}.type", cfg.path()),
                    format!(
                        concat!("unknown ", $what, " type `{}`; registered: {}"),
                        ty,
                        known.join(", ")
                    ),
                )
            })?;
            (entry.ctor)(cfg, ctx)
        }
    };
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    register_fn!(register_persister, persisters, Arc<dyn Persister>);
    register_fn!(register_service, services, Arc<dyn Service>);

    build_fn!(build_persister, persisters, Arc<dyn Persister>, "persister");
    build_fn!(build_service, services, Arc<dyn Service>, "service");

    /// Register a transport that stands on its own.
    pub fn register_transport<C>(
        &mut self,
        type_name: &'static str,
        description: &'static str,
        example: &'static str,
        ctor: impl Fn(C, &BuildContext) -> Result<Box<dyn Transport>> + Send + Sync + 'static,
    ) where
        C: DeserializeOwned + Serialize + Default,
    {
        let ctor = typed(move |c: C, ctx: &BuildContext| Ok((ctor(c, ctx)?, None)));
        let info = info::<C>(type_name, description, example);
        self.transports
            .insert(type_name, (info, TransportCtor::Plain(ctor)));
    }

    /// Register a transport others can ride on: its constructor also returns
    /// the handle a rider's constructor gets (see [`Self::register_transport_on`]).
    pub fn register_transport_providing<C, H>(
        &mut self,
        type_name: &'static str,
        description: &'static str,
        example: &'static str,
        ctor: impl Fn(C, &BuildContext) -> Result<(Box<dyn Transport>, Arc<H>)> + Send + Sync + 'static,
    ) where
        C: DeserializeOwned + Serialize + Default,
        H: Send + Sync + 'static,
    {
        let ctor = typed(move |c: C, ctx: &BuildContext| {
            let (t, h) = ctor(c, ctx)?;
            Ok((t, Some(h as Handle)))
        });
        let info = info::<C>(type_name, description, example);
        self.transports
            .insert(type_name, (info, TransportCtor::Plain(ctor)));
    }

    /// Register a transport that rides on an instance of the transport type
    /// `base`, which must have been registered with
    /// [`Self::register_transport_providing`] and handle type `H`. `via`
    /// reads the instance name from the rider's config.
    pub fn register_transport_on<C, H>(
        &mut self,
        type_name: &'static str,
        description: &'static str,
        example: &'static str,
        base: &'static str,
        via: fn(&C) -> &str,
        ctor: impl Fn(C, &BuildContext, Arc<H>) -> Result<Box<dyn Transport>> + Send + Sync + 'static,
    ) where
        C: DeserializeOwned + Serialize + Default + 'static,
        H: Send + Sync + 'static,
    {
        let via = Arc::new(move |cfg: &ComponentConfig| Ok(via(&cfg.parse::<C>()?).to_string()));
        let ctor = Arc::new(
            move |cfg: &ComponentConfig, ctx: &BuildContext, handle: &Handle| {
                let handle = handle.clone().downcast::<H>().map_err(|_| {
                    Error::config(
                        format!("{}.via", cfg.path()),
                        format!("names a transport whose handle is not the one `{base}` provides"),
                    )
                })?;
                ctor(cfg.parse::<C>()?, ctx, handle)
            },
        );
        self.transports.insert(
            type_name,
            (
                info::<C>(type_name, description, example),
                TransportCtor::Rider { base, via, ctor },
            ),
        );
    }

    /// Build every transport table, `(instance name, table)`: those that
    /// stand on their own first, then those that ride on them. Returns them
    /// in the order given.
    pub fn build_transports(
        &self,
        tables: &[(String, ComponentConfig)],
        ctx: &dyn Fn(&str) -> BuildContext,
    ) -> Result<Vec<(String, Box<dyn Transport>)>> {
        let entry = |cfg: &ComponentConfig| {
            let ty = cfg.type_name()?;
            self.transports
                .get_key_value(ty.as_str())
                .map(|(name, (_, ctor))| (*name, ctor))
                .ok_or_else(|| {
                    let known: Vec<&str> = self.transports.keys().copied().collect();
                    Error::config(
                        format!("{}.type", cfg.path()),
                        format!(
                            "unknown transport type `{ty}`; registered: {}",
                            known.join(", ")
                        ),
                    )
                })
        };
        let mut built: Vec<Option<Box<dyn Transport>>> = Vec::new();
        // Every instance that stands on its own: its type, and its handle if it offers one.
        let mut handles: BTreeMap<&str, (&'static str, Option<Handle>)> = BTreeMap::new();
        for (name, cfg) in tables {
            let (ty, ctor) = entry(cfg)?;
            built.push(match ctor {
                TransportCtor::Plain(ctor) => {
                    let (t, h) = ctor(cfg, &ctx(name))?;
                    handles.insert(name, (ty, h));
                    Some(t)
                }
                TransportCtor::Rider { .. } => None,
            });
        }
        for ((name, cfg), slot) in tables.iter().zip(built.iter_mut()) {
            let (_, TransportCtor::Rider { base, via, ctor }) = entry(cfg)? else {
                continue;
            };
            let target = via(cfg)?;
            let handle = match handles.get(target.as_str()) {
                Some((ty, Some(h))) if ty == base => h,
                Some((ty, _)) => {
                    return Err(Error::config(
                        format!("{}.via", cfg.path()),
                        format!("`{target}` is a {ty} transport, not {base}"),
                    ))
                }
                None => {
                    return Err(Error::config(
                        format!("{}.via", cfg.path()),
                        format!("no {base} transport named `{target}`"),
                    ))
                }
            };
            *slot = Some(ctor(cfg, &ctx(name), handle)?);
        }
        Ok(tables
            .iter()
            .zip(built)
            .filter_map(|((name, _), t)| t.map(|t| (name.clone(), t)))
            .collect())
    }

    /// Every registered component.
    pub fn list(&self) -> Vec<(ComponentKind, &ComponentInfo)> {
        let p = self
            .persisters
            .values()
            .map(|e| (ComponentKind::Persister, &e.info));
        let t = self
            .transports
            .values()
            .map(|(i, _)| (ComponentKind::Transport, i));
        let s = self
            .services
            .values()
            .map(|e| (ComponentKind::Service, &e.info));
        p.chain(t).chain(s).collect()
    }
}
