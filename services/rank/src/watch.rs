//! Pruning: a certificate counts while its output is unspent. A
//! [`SpendWatch`] holds the outputs of the certificates a service counts,
//! and at each new tip ([`civkit_chain::follow`]) asks the chain about each
//! of them; the spent ones are pruned, within one block of the spend.

use std::collections::BTreeMap;

use bitcoin::OutPoint;
use civkit_chain::ChainSource;

/// Outputs watched for a spend, each with the certificates it backs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpendWatch<C: Ord + Clone> {
    outputs: BTreeMap<OutPoint, Vec<C>>,
}

impl<C: Ord + Clone> SpendWatch<C> {
    pub fn new() -> Self {
        SpendWatch {
            outputs: BTreeMap::new(),
        }
    }

    /// Watch `outpoint` for certificate `cert` (several certificates may
    /// rest on one output: they are pruned together).
    pub fn watch(&mut self, outpoint: OutPoint, cert: C) {
        let certs = self.outputs.entry(outpoint).or_default();
        if !certs.contains(&cert) {
            certs.push(cert);
        }
    }

    /// Outputs watched.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Ask the chain about every watched output; stop watching the spent
    /// ones and return their certificates. An output the chain could not
    /// be asked about stays watched (asked again at the next block), and
    /// the first such error is returned beside the pruned certificates.
    pub async fn prune_spent(
        &mut self,
        chain: &dyn ChainSource,
    ) -> (Vec<C>, Option<civkit_chain::Error>) {
        let mut pruned = Vec::new();
        let mut failure = None;
        let mut spent = Vec::new();
        for outpoint in self.outputs.keys() {
            match chain.unspent_output(outpoint).await {
                Ok(Some(_)) => {}
                Ok(None) => spent.push(*outpoint),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        for outpoint in spent {
            pruned.extend(self.outputs.remove(&outpoint).unwrap_or_default());
        }
        (pruned, failure)
    }
}
