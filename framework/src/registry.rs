//! The explicit [`Registry`] of component constructors.
//!
//! Each component crate exports a `register(&mut Registry)` function; the node
//! binary calls each one. A config table `[transports.relay]` with
//! `type = "nostr-ws"` is built by the constructor registered under
//! `nostr-ws`, from the rest of that table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use figment::value::{Dict, Value};
use nostr::Keys;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Persister, Result, Service, Transport};

/// Objects components of one node hand each other while they are built
/// (for example the onion-message transport offering its handler to the
/// bolt8 transport it rides on). Keys are documented by the component that
/// reads them.
#[derive(Clone, Default)]
pub struct Shared(
    Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<dyn std::any::Any + Send + Sync>>>>,
);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Shared {
    /// Offer an object under `key`.
    pub fn put<T: std::any::Any + Send + Sync>(&self, key: &str, value: Arc<T>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value);
    }
    /// The object under `key`, if one of type `T` was offered.
    pub fn get<T: std::any::Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let any = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        any.downcast::<T>().ok()
    }
}

/// What a constructor may use besides its own config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The instance name (`relay` in `[transports.relay]`).
    pub instance: String,
    /// The node's keys.
    pub keys: Keys,
    /// Objects shared between the components of this node.
    pub shared: Shared,
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
    transports: BTreeMap<&'static str, Entry<Box<dyn Transport>>>,
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
            let info = ComponentInfo {
                type_name,
                description,
                example,
                defaults: defaults_of::<C>,
            };
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
    register_fn!(register_transport, transports, Box<dyn Transport>);
    register_fn!(register_service, services, Arc<dyn Service>);

    build_fn!(build_persister, persisters, Arc<dyn Persister>, "persister");
    build_fn!(build_transport, transports, Box<dyn Transport>, "transport");
    build_fn!(build_service, services, Arc<dyn Service>, "service");

    /// Every registered component.
    pub fn list(&self) -> Vec<(ComponentKind, &ComponentInfo)> {
        let p = self
            .persisters
            .values()
            .map(|e| (ComponentKind::Persister, &e.info));
        let t = self
            .transports
            .values()
            .map(|e| (ComponentKind::Transport, &e.info));
        let s = self
            .services
            .values()
            .map(|e| (ComponentKind::Service, &e.info));
        p.chain(t).chain(s).collect()
    }
}
