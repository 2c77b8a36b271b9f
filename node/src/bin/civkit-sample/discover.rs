//! `boards discover --via <node id>@host:port`: the boards a Lightning
//! node knows from the staking-credentials policy gossip, with their
//! credential and service policies. Each message's signature is checked
//! against the node id it names; expiry heights are shown, not checked
//! (this client has no chain).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use civkit_bolt8::client::Bolt8Client;
use civkit_bolt8::gossip::{bits_of, Policy, SignedPolicy};

pub async fn discover(via: &str, wait: u64) -> Result<()> {
    let (id, addr) = civkit_bolt8::parse_address(via).map_err(|e| anyhow!("--via: {e}"))?;
    let mut client = Bolt8Client::new()?;
    let mut policies = client
        .take_policies()
        .ok_or_else(|| anyhow!("policy channel already taken"))?;
    client.connect(id, addr).await?;
    let mut boards: BTreeMap<String, BTreeMap<u16, SignedPolicy>> = BTreeMap::new();
    let mut forged = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    while let Ok(Some((_, m))) = tokio::time::timeout_at(deadline, policies.recv()).await {
        if m.verify().is_err() {
            forged += 1;
            continue;
        }
        let slot = boards.entry(m.node_id.to_string()).or_default();
        let newer = slot
            .get(&m.type_id())
            .is_none_or(|old| old.timestamp < m.timestamp);
        if newer {
            slot.insert(m.type_id(), m);
        }
    }
    client.disconnect(id).await;
    if boards.is_empty() {
        println!("no policies heard from {via} in {wait} s");
    }
    for (node, msgs) in &boards {
        println!("board {node}");
        for m in msgs.values() {
            match &m.policy {
                Policy::Credential {
                    issuance_pubkey,
                    assetproof_features,
                    credentials_features,
                    asset_to_credential,
                } => println!(
                    "  credential_policy: issuance key {issuance_pubkey}, assets {:?}, credentials {:?}, {asset_to_credential} msat per credential, until height {}",
                    bits_of(assetproof_features),
                    bits_of(credentials_features),
                    m.expiration_height
                ),
                Policy::Service {
                    pubkeys,
                    service_ids,
                    credentials_to_service,
                } => println!(
                    "  service_policy: kinds {service_ids:?} for {credentials_to_service} credential(s) each, issuers {}, until height {}",
                    pubkeys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
                    m.expiration_height
                ),
            }
        }
    }
    if forged > 0 {
        println!("{forged} message(s) with a bad signature ignored");
    }
    Ok(())
}
