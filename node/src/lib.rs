//! # civkit-node
//!
//! The binaries of civkit and the glue they share: `civkitd` (the daemon),
//! `civkit-cli` (the operator's admin client) and `civkit-bench` (the load
//! generator). In `docs/ARCHITECTURE.md` this is the `node/` box: it reads the
//! layered config, registers every component crate explicitly, builds the
//! node and runs its transports, and serves the authenticated admin API.

#![forbid(unsafe_code)]

pub mod admin;
pub mod completions;
pub mod components;
pub mod config;
pub mod daemon;
pub mod files;
pub mod metrics;
pub mod migrate;
pub mod progress;
pub mod serve;

pub use config::Config;
pub use daemon::Daemon;
