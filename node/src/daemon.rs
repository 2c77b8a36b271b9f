//! Start and stop a whole node from a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use civkit_framework::board_secrets::BoardSecrets;
use civkit_framework::{
    BuildContext, ComponentKind, Metrics, Node, NodeBuilder, Persister, Registry, Service,
    Shutdown, ShutdownTrigger, Transport,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::files;
use crate::{metrics, serve};

/// A running node: its transports, background work and admin API.
pub struct Daemon {
    pub node: Node,
    trigger: ShutdownTrigger,
    transports: Vec<(String, JoinHandle<civkit_framework::Result<()>>)>,
    background: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    admin_addr: SocketAddr,
    data_dir: PathBuf,
}

/// Limits of the admin and metrics listeners (loopback, few clients).
const API_LIMITS: serve::Limits = serve::Limits {
    connections: 32,
    header_timeout: Duration::from_secs(10),
};

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("admin", &self.admin_addr)
            .finish()
    }
}

impl Daemon {
    /// Build every component, start transports and the admin API. Fails
    /// before anything listens if any config table is wrong, and fails if a
    /// transport cannot start.
    pub async fn start(config: &Config, registry: &Registry) -> Result<Daemon> {
        let data_dir = config.node.data_dir.clone();
        files::ensure_data_dir(&data_dir)?;
        let keys = files::load_or_create_keys(&data_dir)?;
        // The node key is the board's Nostr identity: one per board.
        let secrets = BoardSecrets::default();
        secrets.record(
            "node key",
            &data_dir.join(files::NODE_KEY).display().to_string(),
            &keys.secret_key().secret_bytes(),
        );
        let tor_only = config.tor_only();
        let metrics_token = config.metrics_token()?;
        let metrics = Metrics::new();
        let ctx = |instance: &str| BuildContext {
            board_secrets: secrets.clone(),
            tor_only,
            node_metrics: metrics.clone(),
            ..BuildContext::new(&data_dir, instance, keys.clone())
        };
        let Components {
            persister,
            services,
            transports,
        } = build_components(config, registry, &ctx)?;
        secrets.check(persister.as_ref()).await?;
        let mut builder = NodeBuilder::new(persister, keys)
            .metrics(metrics)
            .info(config.node_info())
            .sweep_interval(Duration::from_secs(config.node.sweep_interval_secs.max(1)))
            .lease_ttl(Duration::from_secs(config.node.lease_ttl_secs.max(1)))
            .fan_out(config.node.fan_out);
        for (name, s) in services {
            builder = builder.service(name, s);
        }
        let node = builder.build();
        let (trigger, shutdown) = Shutdown::new();
        let mut background = node.spawn_background(shutdown.clone());

        let mut handles = Vec::new();
        for (name, t) in transports {
            handles.push((name, tokio::spawn(t.run(node.clone(), shutdown.clone()))));
        }
        wait_for_transports(&node, &mut handles).await?;

        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("admin API cannot listen on {}", config.admin.listen))?;
        let admin_addr = listener.local_addr()?;
        let cookie = files::random_cookie()?;
        let (cookie_path, endpoint_path) = files::admin_files(&data_dir);
        files::write_secret(&cookie_path, &cookie)?;
        std::fs::write(&endpoint_path, admin_addr.to_string())?;
        let state = Arc::new(AdminState {
            node: node.clone(),
            cookie,
        });
        let admin = tokio::spawn(serve::serve(
            listener,
            admin::router(state),
            API_LIMITS,
            shutdown.clone(),
        ));
        info!(%admin_addr, "admin API listening (cookie in data dir)");
        if let Some(listen) = config.metrics.listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("metrics endpoint cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            let app = metrics::router(node.clone(), metrics_token);
            background.push(tokio::spawn(serve::serve(
                listener, app, API_LIMITS, shutdown,
            )));
            info!(%addr, "metrics endpoint listening on /metrics");
        }
        Ok(Daemon {
            node,
            trigger,
            transports: handles,
            background,
            admin,
            admin_addr,
            data_dir,
        })
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The endpoint a transport reported (e.g. `ws://127.0.0.1:7777`).
    pub fn endpoint(&self, transport: &str) -> Option<String> {
        self.node.endpoints().get(transport).cloned()
    }

    /// Stop transports and services, flush the store, remove the admin files.
    pub async fn shutdown(self) -> Result<()> {
        info!("shutting down");
        self.trigger.trigger();
        for (name, h) in self.transports {
            match tokio::time::timeout(Duration::from_secs(10), h).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    warn!(transport = %name, error = %e, "transport stopped with an error")
                }
                Ok(Err(e)) => warn!(transport = %name, error = %e, "transport task failed"),
                Err(_) => warn!(transport = %name, "transport did not stop within 10 s"),
            }
        }
        for h in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin).await;
        self.node.persister().flush().await?;
        // Sessions and transport tasks end asynchronously; wait until ours is
        // the last handle, so the store is closed when this returns.
        for _ in 0..500 {
            if self.node.handle_count() <= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.node.handle_count() > 1 {
            warn!(
                handles = self.node.handle_count(),
                "node still referenced after shutdown"
            );
        }
        let (cookie, endpoint) = files::admin_files(&self.data_dir);
        let _ = std::fs::remove_file(cookie);
        let _ = std::fs::remove_file(endpoint);
        info!("store flushed; bye");
        Ok(())
    }
}

/// Every component a config asks for, built and not yet started.
pub struct Components {
    pub persister: Arc<dyn Persister>,
    /// In admission order.
    pub services: Vec<(String, Arc<dyn Service>)>,
    /// Transports others ride on are built before their riders.
    pub transports: Vec<(String, Box<dyn Transport>)>,
}

/// Build every component of `config`; fails on the first wrong table.
pub fn build_components(
    config: &Config,
    registry: &Registry,
    ctx: &dyn Fn(&str) -> BuildContext,
) -> Result<Components> {
    let mut persister = None;
    let mut services = Vec::new();
    let mut transport_tables = Vec::new();
    for (kind, name, table) in config.components()? {
        match kind {
            ComponentKind::Persister => {
                persister = Some(registry.build_persister(&table, &ctx(&name))?)
            }
            ComponentKind::Service => {
                services.push((name.clone(), registry.build_service(&table, &ctx(&name))?))
            }
            ComponentKind::Transport => transport_tables.push((name, table)),
        }
    }
    Ok(Components {
        persister: persister.ok_or_else(|| anyhow!("config error at `persister`: missing"))?,
        services,
        transports: registry.build_transports(&transport_tables, ctx)?,
    })
}

/// Wait until every transport runs (it reported its endpoint, or that it
/// has none), or fail with the first transport that stopped.
async fn wait_for_transports(
    node: &Node,
    handles: &mut [(String, JoinHandle<civkit_framework::Result<()>>)],
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut ready = true;
        for (name, h) in handles.iter_mut() {
            if h.is_finished() {
                return match h.await {
                    Ok(Err(e)) => Err(anyhow!(e)),
                    Ok(Ok(())) => Err(anyhow!("transport `{name}` stopped at start")),
                    Err(e) => Err(anyhow!("transport `{name}` panicked: {e}")),
                };
            }
            ready &= node.transport_running(name);
        }
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!("transports did not start within 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
