//! # civkit-plugin-pow
//!
//! A worked example of a civkit service written only against the framework's
//! public API: a NIP-13 proof-of-work gate. It sits in the admission chain
//! (the `services` column of `docs/ARCHITECTURE.md`) and refuses events whose id
//! does not start with enough zero bits, with the NIP-01 `pow:` prefix.
//!
//! Read `README.md` beside this crate for a walk-through of how it is built.

#![forbid(unsafe_code)]

use async_trait::async_trait;
use civkit_framework::{
    Admission, BuildContext, Origin, Registry, Rejection, Service, ServiceContext,
};
use nostr::Event;

/// Config of `[services.<name>] type = "pow"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowConfig {
    /// Leading zero bits the event id must have.
    pub min_difficulty: u8,
    /// Kinds the gate applies to; empty means every kind.
    pub kinds: Vec<u16>,
}

impl Default for PowConfig {
    fn default() -> Self {
        PowConfig {
            min_difficulty: 8,
            kinds: Vec::new(),
        }
    }
}

const EXAMPLE: &str = r#"# Leading zero bits the event id must have (NIP-13).
min_difficulty = 8
# Kinds the gate applies to; empty means every kind.
kinds = []
"#;

/// Register the `pow` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "pow",
        "NIP-13 proof-of-work admission gate (example plugin)",
        EXAMPLE,
        |cfg: PowConfig, _ctx: &BuildContext| {
            Ok(std::sync::Arc::new(PowGate::new(cfg)) as std::sync::Arc<dyn Service>)
        },
    );
}

/// The gate.
#[derive(Debug, Clone)]
pub struct PowGate {
    config: PowConfig,
}

impl PowGate {
    /// A gate with this config.
    pub fn new(config: PowConfig) -> Self {
        PowGate { config }
    }
}

/// Leading zero bits of a 32-byte id.
pub fn leading_zero_bits(id: &[u8; 32]) -> u8 {
    let mut bits = 0u8;
    for b in id {
        if *b == 0 {
            bits += 8;
        } else {
            bits += b.leading_zeros() as u8;
            break;
        }
    }
    bits
}

/// The target committed in the `nonce` tag (`["nonce", n, target]`), if any.
fn committed_target(event: &Event) -> Option<u8> {
    event.tags.iter().find_map(|t| {
        let s = t.as_slice();
        (s.first().map(String::as_str) == Some("nonce"))
            .then(|| s.get(2).and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[async_trait]
impl Service for PowGate {
    fn supported_nips(&self) -> Vec<u16> {
        vec![13]
    }

    fn nip11_limitation(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "min_pow_difficulty".into(),
            self.config.min_difficulty.into(),
        );
        m
    }

    async fn admit_event(
        &self,
        _ctx: &ServiceContext,
        origin: &Origin,
        event: &Event,
    ) -> Admission {
        let want = self.config.min_difficulty;
        let applies =
            self.config.kinds.is_empty() || self.config.kinds.contains(&event.kind.as_u16());
        // The node's own services and the operator are not asked for work.
        if !applies || want == 0 || origin.is_local() {
            return Admission::Accept;
        }
        let have = leading_zero_bits(event.id.as_bytes());
        if have < want {
            return Admission::Reject(Rejection::pow(format!(
                "difficulty {have} is below the required {want}"
            )));
        }
        // NIP-13: a committed target below ours means the work was aimed lower
        // and this id is luck; refuse so spammers cannot farm lucky ids.
        match committed_target(event) {
            Some(target) if target < want => Admission::Reject(Rejection::pow(format!(
                "committed target {target} is below the required {want}"
            ))),
            _ => Admission::Accept,
        }
    }
}
