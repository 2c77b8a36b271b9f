//! `stake prove` and `stake show`: Web-of-Stakes for makers. The stake key
//! lives in `--home` as `stake.key` (mode 0600), apart from the Nostr key,
//! so orders signed by ephemeral keys can still show one maker's weight.
//! Channel and UTXO keys sign on this machine and are never sent.

use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::key::XOnlyPublicKey;
use bitcoin::{Amount, Network, OutPoint, TxOut};
use civkit_rank::bip322::{self, KeyScript};
use civkit_rank::certificate::{self, UtxoCertificate};
use civkit_rank::statement::StakeStatement;
use civkit_rank::tier::{stake_tag, Attestation};
use nostr::{Event, Keys, Kind, PublicKey, Tag, Timestamp};

use crate::boards::{nip11, Boards};
use crate::{Cli, ProveArgs};

/// This client's stake key, created (mode 0600) on first use.
pub fn stake_keys(cli: &Cli) -> Result<Keys> {
    let path = crate::home::home(cli)?.join("stake.key");
    if let Ok(hex) = std::fs::read_to_string(&path) {
        return Ok(Keys::new(
            nostr::SecretKey::from_hex(hex.trim()).context("stake.key is not a hex secret key")?,
        ));
    }
    crate::home::create_key(&path)
}

fn xonly(k: &PublicKey) -> Result<XOnlyPublicKey> {
    XOnlyPublicKey::from_slice(&k.to_bytes()).map_err(|e| anyhow!("{e}"))
}

/// The first board's rank service: its key and network (NIP-11 `civkit_rank`).
fn rank_service(cli: &Cli) -> Result<(PublicKey, Network)> {
    let doc = nip11(cli)?;
    let rank = doc.get("civkit_rank").ok_or_else(|| {
        anyhow!("the first --board runs no rank service (no civkit_rank in NIP-11)")
    })?;
    let key = PublicKey::from_hex(doc["pubkey"].as_str().unwrap_or_default())
        .context("the board's NIP-11 pubkey")?;
    let network = Network::from_core_arg(rank["network"].as_str().unwrap_or_default())
        .context("the rank service's network")?;
    Ok((key, network))
}

/// The rank key whose attestations the first board trusts, from its policy.
pub fn board_rank_key(cli: &Cli) -> Result<Option<PublicKey>> {
    let doc = nip11(cli)?;
    Ok(doc["civkit_board"]["stake"]["rank_key"]
        .as_str()
        .and_then(|k| PublicKey::from_hex(k).ok()))
}

/// A WIF key, given as is or as the path of a file holding it (which must
/// be private to its owner).
fn read_key(arg: &str) -> Result<bitcoin::PrivateKey> {
    if let Ok(k) = bitcoin::PrivateKey::from_wif(arg) {
        return Ok(k);
    }
    let text = civkit_framework::keyfile::read_private(std::path::Path::new(arg))
        .map_err(|e| anyhow!("--key is neither a WIF key nor a readable private file: {e}"))?;
    bitcoin::PrivateKey::from_wif(text.trim()).context("the key file does not hold a WIF key")
}

pub async fn prove(cli: &Cli, a: &ProveArgs) -> Result<()> {
    let (rank, network) = rank_service(cli)?;
    let stake = stake_keys(cli)?;
    let statement = StakeStatement {
        stake_key: xonly(&stake.public_key())?,
        rank_key: xonly(&rank)?,
        expiry_height: a.expiry_height,
        network,
    };
    let key = read_key(&a.key)?;
    let body = match (&a.channel, a.utxo.is_empty()) {
        (Some(announcement), true) => {
            certificate::channel_certificate(announcement, a.side, &key.inner, &statement)
        }
        (None, false) => {
            let kind = match a.script.as_str() {
                "p2wpkh" => KeyScript::P2wpkh,
                "p2tr" => KeyScript::P2tr,
                other => bail!("--script `{other}`: p2wpkh or p2tr"),
            };
            let script = bip322::output_script(kind, &key.inner);
            let funds = a
                .utxo
                .iter()
                .map(|u| {
                    let (outpoint, sats) = u
                        .rsplit_once(':')
                        .ok_or_else(|| anyhow!("--utxo `{u}`: txid:vout:sats"))?;
                    Ok((
                        OutPoint::from_str(outpoint).map_err(|e| anyhow!("--utxo `{u}`: {e}"))?,
                        TxOut {
                            value: Amount::from_sat(
                                sats.parse().map_err(|_| anyhow!("--utxo `{u}`: sats"))?,
                            ),
                            script_pubkey: script.clone(),
                        },
                        key.inner,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let message = UtxoCertificate::message(&statement);
            let signature =
                bip322::sign_proof_of_funds(message.as_bytes(), (&script, &key.inner), &funds)?;
            let address = bitcoin::Address::from_script(&script, network)?.to_string();
            certificate::utxo_certificate(&UtxoCertificate { address, signature })
        }
        _ => bail!("give --channel <announcement hex> or one or more --utxo txid:vout:sats"),
    };
    let event = certificate::certificate_event(&stake, &rank, &statement, body)
        .map_err(|e| anyhow!("{e}"))?;
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let boards = Boards::connect(std::slice::from_ref(url), None).await?;
    let sent = boards.publish(url, &event).await;
    boards.close().await;
    match sent {
        Ok(()) => {
            println!(
                "certificate counted for stake key {}",
                stake.public_key().to_hex()
            );
            show(cli).await
        }
        Err(r) => bail!("refused: {r}"),
    }
}

/// The tier of each stake key in `keys` by `rank`, from the first board.
pub async fn tiers(
    cli: &Cli,
    rank: &PublicKey,
    keys: &[XOnlyPublicKey],
) -> Result<Vec<Attestation>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let boards = Boards::connect(std::slice::from_ref(url), None).await?;
    let filter = nostr::Filter::new()
        .kind(Kind::from(civkit_rank::tier::ATTESTATION_KIND))
        .author(*rank)
        .identifiers(keys.iter().map(|k| k.to_string()));
    let events = boards.fetch(url, filter).await;
    boards.close().await;
    let now = Timestamp::now().as_secs();
    Ok(events?
        .iter()
        .filter_map(|e| Attestation::from_event(e, rank, now).ok())
        .collect())
}

pub async fn show(cli: &Cli) -> Result<()> {
    let stake = stake_keys(cli)?;
    println!("stake key {}", stake.public_key().to_hex());
    let (rank, _) = rank_service(cli)?;
    match tiers(cli, &rank, &[xonly(&stake.public_key())?]).await?.first() {
        None => println!("no attestation from the rank service {}", rank.to_hex()),
        Some(a) => println!(
            "tier {} (score {}): {} sats in {} output(s), {} blocks old on average; {} order(s), {} settled; valid until {}",
            a.tier,
            a.score,
            a.inputs.value_sat,
            a.inputs.certificates,
            a.inputs.age_blocks,
            a.inputs.orders,
            a.inputs.settled,
            Timestamp::from_secs(a.expires_at).to_human_datetime()
        ),
    }
    Ok(())
}

/// The `stake` tag for an order about to be signed by `author`.
pub fn tag_for(
    cli: &Cli,
    author: &Keys,
    created_at: Timestamp,
    kind: Kind,
    tags: &[Tag],
    content: &str,
) -> Result<Tag> {
    let stake = stake_keys(cli)?;
    let pair = stake
        .secret_key()
        .keypair(&bitcoin::secp256k1::Secp256k1::new());
    Ok(stake_tag(
        &pair,
        &author.public_key(),
        created_at,
        kind,
        tags,
        content,
    ))
}

/// The stake key an order carries (checked), if any.
pub fn stake_of(e: &Event) -> Option<XOnlyPublicKey> {
    civkit_rank::tier::stake_of(e).ok().flatten()
}
