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
pub use service::{verify_document, MainstayConfig, Notary};

/// Register the `mainstay` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "mainstay",
        "Mainstay notarization: rounds of accepted events committed to a Mainstay slot",
        service::EXAMPLE,
        |cfg: MainstayConfig, ctx: &BuildContext| {
            let path = ctx.data_dir.join(&cfg.token_file);
            let token = std::fs::read_to_string(&path).map_err(|e| {
                civkit_framework::Error::config(
                    format!("services.{}.token_file", ctx.instance),
                    format!("{}: {e} (the slot token from Mainstay)", path.display()),
                )
            })?;
            let api = client::Mainstay {
                url: cfg.url.trim_end_matches('/').to_string(),
                position: cfg.position,
                token: token.trim().to_string(),
            };
            Ok(Arc::new(Notary::new(cfg, api)) as Arc<dyn Service>)
        },
    );
}
