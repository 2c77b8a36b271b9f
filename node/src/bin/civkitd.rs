//! civkitd: the civkit node daemon.

use std::path::PathBuf;

use anyhow::Result;
use civkit_node::{components, config, migrate, Config, Daemon};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The civkit node: a Nostr relay joined to a Lightning gateway.
///
/// With no arguments it runs on its embedded defaults: a websocket relay on
/// 127.0.0.1:7777 over the LMDB store in ./civkit-data.
#[derive(Parser)]
#[command(name = "civkitd", version)]
struct Args {
    /// TOML config file (layered over the defaults, under CIVKIT_* variables).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Run,
    /// Print an annotated config covering every key of every registered component.
    ExampleConfig,
    /// List registered components, then (with --config, or on the embedded
    /// defaults) the configured transports and the services in admission order.
    List,
    /// Move a store's whole content (events, deletions, service state) into
    /// another, empty store: LMDB or sled into PostgreSQL, and back. Stop
    /// the nodes of the source first.
    Migrate {
        /// Config whose `[persister]` (and `node.data_dir`) is the source.
        #[arg(long)]
        from: PathBuf,
        /// Config whose `[persister]` (and `node.data_dir`) is the target.
        #[arg(long)]
        to: PathBuf,
    },
    /// Print a completion script for this shell (bash, zsh, fish, elvish,
    /// powershell): e.g. `civkitd completions bash > /etc/bash_completion.d/civkitd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("civkitd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let registry = components::registry();
    match args.command.unwrap_or(Command::Run) {
        Command::Completions { shell } => {
            civkit_node::completions::print(shell, <Args as clap::CommandFactory>::command());
            Ok(())
        }
        Command::ExampleConfig => {
            print!("{}", config::example_config(&registry));
            Ok(())
        }
        Command::List => {
            println!("registered components:");
            for (kind, info) in registry.list() {
                println!(
                    "  {:<10} {:<16} {}",
                    kind.section(),
                    info.type_name,
                    info.description
                );
            }
            let cfg = Config::load(args.config.as_deref())?;
            println!("configured transports:");
            for name in cfg.transports.keys() {
                println!("  {name}");
            }
            println!("admission chain (services by ascending `order`):");
            for (i, (name, order, _)) in cfg.services_in_order()?.iter().enumerate() {
                let order = order.map_or("-".to_string(), |o| o.to_string());
                println!("  {}. {name} (order {order})", i + 1);
            }
            Ok(())
        }
        Command::Migrate { from, to } => {
            let (from, to) = (
                Config::load(Some(from.as_path()))?,
                Config::load(Some(to.as_path()))?,
            );
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let source = migrate::open_store(&from, &registry)?;
                    let target = migrate::open_store(&to, &registry)?;
                    println!(
                        "moving the {} store into the {} store",
                        source.backend(),
                        target.backend()
                    );
                    let total = source.stats().await?.events;
                    let bar = civkit_node::progress::bar(total, "events");
                    bar.set_message("moving");
                    let mut shown = 0;
                    let moved = migrate::migrate(source.as_ref(), target.as_ref(), |m| {
                        bar.set_position(m.events);
                        // Without a terminal, a line every 100,000 events.
                        if bar.is_hidden() && m.events >= shown + 100_000 {
                            shown = m.events;
                            println!("  {} events so far", m.events);
                        }
                    })
                    .await;
                    bar.finish_and_clear();
                    let moved = moved?;
                    println!(
                        "moved {} events, {} deletion tombstones and {} service keys",
                        moved.events, moved.tombstones, moved.keys
                    );
                    Ok(())
                })
        }
        Command::Run => {
            let cfg = Config::load(args.config.as_deref())?;
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.node.log));
            let logs = tracing_subscriber::fmt().with_env_filter(filter);
            match cfg.node.log_format {
                civkit_node::config::LogFormat::Text => logs.init(),
                civkit_node::config::LogFormat::Json => logs
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .init(),
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(cfg, registry))
        }
    }
}

async fn run(cfg: Config, registry: civkit_framework::Registry) -> Result<()> {
    let daemon = Daemon::start(&cfg, &registry).await?;
    for (name, url) in daemon.node.endpoints() {
        if url.contains(".onion") {
            // An onion address identifies the board: debug level only.
            tracing::info!(transport = %name, "ready (an onion service)");
            tracing::debug!(transport = %name, %url, "ready");
        } else {
            tracing::info!(transport = %name, %url, "ready");
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        _ = term.recv() => tracing::info!("SIGTERM"),
    }
    daemon.shutdown().await
}
