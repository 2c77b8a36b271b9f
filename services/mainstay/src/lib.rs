//! # civkit-mainstay
//!
//! Mainstay notarization for civkit boards, in the `services` column of
//! `docs/ARCHITECTURE.md`: a board's history that anyone can verify and the board
//! cannot rewrite.
//!
//! - [`proof`]: Mainstay slot proofs and sequences (verified against the
//!   real pymainstay sequences);
//! - [`rounds`]: the board's rounds, a Merkle tree of event ids chained to
//!   the previous round, with inclusion proofs in Mainstay's format;
//! - [`client`]: the Mainstay API;
//! - [`service`]: the notary service that commits rounds and stores proofs;
//! - [`history`]: what a taker checks about a board's published rounds.

#![forbid(unsafe_code)]

pub mod chain;
pub mod client;
pub mod error;
pub mod history;
pub mod proof;
pub mod rounds;
pub mod service;
#[cfg(feature = "testing")]
pub mod stand_in;

use std::sync::Arc;

use civkit_framework::{BuildContext, Registry, Service};

pub use error::{Error, ErrorKind};
pub use service::{verify_document, ChainConfig, MainstayConfig, Notary};

/// The chain source of a `[services.<name>.chain]` table (`None` for
/// `backend = "none"`); `key` is the table's path for errors.
pub fn chain_source(
    cfg: &ChainConfig,
    data_dir: &std::path::Path,
    key: &str,
) -> civkit_framework::Result<Option<Arc<dyn chain::ChainSource>>> {
    use civkit_framework::Error;
    let need = |v: &str, what: &str| {
        if v.is_empty() {
            Err(Error::config(format!("{key}.{what}"), "is required"))
        } else {
            Ok(())
        }
    };
    if cfg.backend != "none" {
        need(&cfg.url, "url")?;
        need(&cfg.staychain_start, "staychain_start")?;
        if cfg.staychain_start.parse::<bitcoin::Txid>().is_err() {
            return Err(Error::config(
                format!("{key}.staychain_start"),
                "is not a txid",
            ));
        }
        chain::tweaked_key(&cfg.base_key, &cfg.chain_code, &"00".repeat(32))
            .map_err(|e| Error::config(format!("{key}.base_key"), e))?;
    }
    civkit_chain::SourceConfig {
        backend: cfg.backend.clone(),
        url: cfg.url.clone(),
        user: cfg.user.clone(),
        password_file: cfg.password_file.clone(),
    }
    .build(data_dir)
    .map_err(|(field, e)| Error::config(format!("{key}.{field}"), e))
}

/// Register the `mainstay` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "mainstay",
        "Mainstay notarization: rounds of accepted events committed to a Mainstay slot",
        service::EXAMPLE,
        |cfg: MainstayConfig, ctx: &BuildContext| {
            // The slot token lets anyone write the board's slot: a secret.
            let path = ctx.data_dir.join(&cfg.token_file);
            let token = civkit_framework::keyfile::read_private(&path).map_err(|e| {
                civkit_framework::Error::config(
                    format!("services.{}.token_file", ctx.instance),
                    format!("{e} (the slot token from Mainstay)"),
                )
            })?;
            let api = client::Mainstay {
                url: cfg.url.trim_end_matches('/').to_string(),
                position: cfg.position,
                token: token.trim().to_string(),
            };
            let chain = chain_source(
                &cfg.chain,
                &ctx.data_dir,
                &format!("services.{}.chain", ctx.instance),
            )?;
            let notary = Notary::new(cfg, api, chain).with_metrics(&ctx.metrics());
            Ok(Arc::new(notary) as Arc<dyn Service>)
        },
    );
}
