//! Secrets that every node of one board must hold alike.
//!
//! Several nodes that share a store serve one board: they sign as one Nostr
//! key, and a credential one node issued must verify on the others. Each
//! node reads those secrets from its own files (they never go into the
//! store). What goes into the store is a fingerprint of each, so that a
//! node whose file differs from the board's refuses to start instead of
//! serving as a second board on the same data.
//!
//! Components record their secrets while they are built
//! ([`BuildContext::board_secret`](crate::BuildContext::board_secret)); the
//! node checks them all against the store once it is open
//! ([`BoardSecrets::check`]). A store that one node owns is not checked.

use std::sync::{Arc, Mutex};

use nostr::hashes::{sha256, Hash};

use crate::{Error, Persister, Result};

/// The framework's own key-value namespace. Service instance names cannot
/// start with `_`, so no service shares it.
pub const NAMESPACE: &str = "_board";

#[derive(Debug, Clone)]
struct Recorded {
    label: String,
    /// Where an operator finds the secret, for the error message.
    source: String,
    fingerprint: [u8; 32],
}

/// The secrets recorded while a node's components are built.
#[derive(Debug, Clone, Default)]
pub struct BoardSecrets(Arc<Mutex<Vec<Recorded>>>);

fn fingerprint(label: &str, secret: &[u8]) -> [u8; 32] {
    let mut data = b"civkit/board-secret/v1\0".to_vec();
    data.extend_from_slice(label.as_bytes());
    data.push(0);
    data.extend_from_slice(secret);
    sha256::Hash::hash(&data).to_byte_array()
}

impl BoardSecrets {
    /// Record `secret` under `label` (unique per secret: the node key,
    /// `services.<instance>.key_file`); `source` says where it is read from.
    pub fn record(&self, label: &str, source: &str, secret: &[u8]) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|r| r.label != label);
        all.push(Recorded {
            label: label.to_string(),
            source: source.to_string(),
            fingerprint: fingerprint(label, secret),
        });
    }

    /// With a store that several nodes share: the first node to start
    /// records each secret's fingerprint; every later node must hold the
    /// same secrets. Fails, naming the file to copy, when one differs.
    pub async fn check(&self, persister: &dyn Persister) -> Result<()> {
        if !persister.shared() {
            return Ok(());
        }
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for r in all {
            let key = format!("secret:{}", r.label);
            if persister
                .kv_insert_new(NAMESPACE, key.as_bytes(), &r.fingerprint)
                .await?
            {
                continue;
            }
            let held = persister.kv_get(NAMESPACE, key.as_bytes()).await?;
            if held.as_deref() != Some(r.fingerprint.as_slice()) {
                return Err(Error::Invalid(format!(
                    "this store is shared by the nodes of one board, and its {} differs from \
                     this node's ({}): copy that file from a node of the board (mode 0600)",
                    r.label, r.source
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_labels_and_secrets() {
        assert_ne!(fingerprint("a", b"s"), fingerprint("b", b"s"));
        assert_ne!(fingerprint("a", b"s"), fingerprint("a", b"t"));
        // The label cannot run into the secret.
        assert_ne!(fingerprint("ab", b"c"), fingerprint("a", b"bc"));
    }
}
