//! Publishing an order as an onion message, for a maker who stays anonymous.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use civkit_framework::wire::{ClientMessage, RelayMessage};
use nostr::{Event, JsonUtil};
use serde_json::Value;

use crate::boards::{nip11_of, policy_event};
use crate::Cli;

/// The first blinded path in the policy event of the first board.
async fn board_blinded_path(cli: &Cli) -> Result<String> {
    let url = cli
        .boards
        .first()
        .ok_or_else(|| anyhow!("give --board or --board-path"))?;
    let doc = nip11_of(url)?;
    let pk = doc["pubkey"]
        .as_str()
        .and_then(|p| nostr::PublicKey::from_hex(p).ok())
        .ok_or_else(|| anyhow!("{url} has no pubkey in NIP-11"))?;
    let policy = policy_event(url, pk)
        .await?
        .ok_or_else(|| anyhow!("{url} published no policy"))?;
    let content: Value = serde_json::from_str(&policy.content)?;
    content["endpoints"]["onion"][0]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{url} publishes no onion path (no onion-messages transport)"))
}

/// Send the order as an onion message through `entry` to the board's blinded
/// path, with a blinded reply path back through the path's introduction node
/// and the entry node (which must be connected to each other), and wait for
/// the board's answer.
pub async fn publish_via_onion(
    cli: &Cli,
    entry: &str,
    path: Option<&str>,
    event: &Event,
) -> Result<()> {
    use lightning::blinded_path::IntroductionNode;
    use lightning::onion_message::messenger::Destination;
    let (entry_id, entry_addr) =
        civkit_bolt8::parse_address(entry).map_err(|e| anyhow!("--via-onion: {e}"))?;
    let hex_path = match path {
        Some(p) => p.to_string(),
        None => board_blinded_path(cli).await?,
    };
    let board_path =
        civkit_onion::parse_blinded_path(&hex_path).map_err(|e| anyhow!("board path: {e}"))?;
    let intro = match board_path.introduction_node() {
        IntroductionNode::NodeId(id) => *id,
        IntroductionNode::DirectedShortChannelId(..) => {
            bail!("board paths introduced by a channel id are not supported")
        }
    };
    let (via, reply_hops) = if intro == entry_id {
        (vec![], vec![entry_id])
    } else {
        (vec![entry_id], vec![intro, entry_id])
    };
    let mut me = civkit_onion::client::OnionNode::start(via, None).await?;
    me.connect(entry_id, entry_addr).await?;
    let reply = me.reply_path(&reply_hops)?;
    let t = Instant::now();
    me.send(
        Destination::BlindedPath(board_path),
        ClientMessage::event(event.clone()).as_json(),
        Some(reply),
    )?;
    let answer = me
        .reply_message(Duration::from_secs(30))
        .await
        .ok_or_else(|| {
            anyhow!("no answer over the reply path within 30 s (the order may still have arrived)")
        })??;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    match answer {
        RelayMessage::Ok { status: true, .. } => {
            println!("onion via {entry_id}: accepted in {ms:.1} ms");
            Ok(())
        }
        RelayMessage::Ok { message, .. } => {
            bail!("onion via {entry_id}: rejected: {message} ({ms:.1} ms)")
        }
        other => bail!("unexpected answer over the reply path: {other:?}"),
    }
}
