//! `order create`, `order update-status` and `order cancel`: a maker's
//! orders, published to every board at once.

use anyhow::{anyhow, bail, Context, Result};
use nostr::{Event, EventBuilder, Filter, Keys, Kind, Tag, Timestamp};

use crate::boards::publish_everywhere;
use crate::book::first;
use crate::credentials::{credentials_needed, Wallet};
use crate::home::load_keys;
use crate::onion::publish_via_onion;
use crate::{Cli, CreateArgs, ORDER_KIND};

fn parse_lifetime(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--lifetime `{s}`: use seconds or 90m, 24h, 7d"))?;
    Ok(n * mult)
}

pub fn tag(parts: &[&str]) -> Result<Tag> {
    Tag::parse(parts.iter().copied()).map_err(|e| anyhow!("building tag {parts:?}: {e}"))
}

/// A random order id (8 bytes, hex).
fn random_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).context("reading the OS random source")?;
    Ok(hex::encode(b))
}

pub async fn create(cli: &Cli, a: &CreateArgs) -> Result<()> {
    let keys = if a.ephemeral_key {
        Keys::generate()
    } else {
        load_keys(cli)?
    };
    if a.side != "buy" && a.side != "sell" {
        bail!("--side must be buy or sell");
    }
    let now = Timestamp::now().as_secs();
    let lifetime = parse_lifetime(&a.lifetime)?;
    let id = match &a.id {
        Some(id) => id.clone(),
        None => random_id()?,
    };
    let mut tags = vec![
        tag(&["d", &id])?,
        tag(&["k", &a.side])?,
        tag(&["f", &a.currency.to_uppercase()])?,
        tag(&["s", "pending"])?,
        tag(&["amt", &a.sats.to_string()])?,
    ];
    match (a.fiat_amount, a.fiat_min, a.fiat_max) {
        (Some(x), _, _) => tags.push(tag(&["fa", &x.to_string()])?),
        (None, Some(lo), Some(hi)) => tags.push(tag(&["fa", &lo.to_string(), &hi.to_string()])?),
        _ => bail!("give --fiat-amount, or --fiat-min and --fiat-max"),
    }
    let mut pm = vec!["pm".to_string()];
    pm.extend(a.payment_methods.iter().cloned());
    tags.push(Tag::parse(pm).map_err(|e| anyhow!("{e}"))?);
    tags.extend([
        tag(&["premium", &a.premium.to_string()])?,
        tag(&["network", &a.network])?,
        tag(&["layer", &a.layer])?,
        tag(&["expires_at", &(now + lifetime).to_string()])?,
        tag(&["expiration", &(now + lifetime + 86400).to_string()])?,
        tag(&["y", "civkit"])?,
        tag(&["z", "order"])?,
    ]);
    if let Some(n) = &a.name {
        tags.push(tag(&["name", n])?);
    }
    if let Some(o) = &a.offer {
        tags.push(tag(&["bolt12", o])?);
    }
    // Spend credentials when the board asks for them on orders.
    let spent = match credentials_needed(cli).await? {
        Some((board_pk, per_event)) => {
            if cli.boards.len() > 1 {
                bail!("credentials belong to one board: publish a paying order to one --board at a time");
            }
            let mut wallet = Wallet::load(cli)?;
            let creds = wallet.take(&board_pk, per_event)?;
            let binding =
                civkit_credentials::scheme::binding_for(&keys.public_key(), ORDER_KIND, now, &id);
            for c in &creds {
                let tag_values = civkit_credentials::scheme::spend_tag(c, &binding)?;
                tags.push(Tag::parse(tag_values).map_err(|e| anyhow!("{e}"))?);
            }
            Some((wallet, creds.len()))
        }
        None => None,
    };
    if a.stake {
        let at = Timestamp::from_secs(now);
        tags.push(crate::stake::tag_for(
            cli,
            &keys,
            at,
            Kind::from(ORDER_KIND),
            &tags,
            "",
        )?);
    }
    let event = EventBuilder::new(Kind::from(ORDER_KIND), "")
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(now))
        .sign_with_keys(&keys)?;
    if let Some((wallet, n)) = spent {
        // Spent or not, a credential shown on the wire is not reused.
        wallet.save(cli)?;
        println!("spending {n} credential(s)");
    }
    println!(
        "order {id} (event {}, maker {})",
        event.id,
        keys.public_key().to_hex()
    );
    match &a.via_onion {
        Some(entry) => publish_via_onion(cli, entry, a.board_path.as_deref(), &event).await,
        None => publish_everywhere(cli, &keys, &event).await,
    }
}

/// Newest version of one of my orders, from any board.
async fn my_order(cli: &Cli, keys: &Keys, id: &str) -> Result<Event> {
    let filter = Filter::new()
        .kind(Kind::from(ORDER_KIND))
        .author(keys.public_key())
        .identifier(id);
    let book = crate::book::collect(cli, &filter, Some(keys)).await?;
    book.orders
        .into_values()
        .map(|(e, _)| e)
        .max_by_key(|e| e.created_at)
        .ok_or_else(|| anyhow!("no order `{id}` of yours on these boards"))
}

pub async fn update_status(cli: &Cli, id: &str, status: &str) -> Result<()> {
    const STATUSES: &[&str] = &["pending", "canceled", "in-progress", "success", "expired"];
    if !STATUSES.contains(&status) {
        bail!("status must be one of {}", STATUSES.join(", "));
    }
    let keys = load_keys(cli)?;
    let old = my_order(cli, &keys, id).await?;
    let tags: Vec<Tag> = old
        .tags
        .iter()
        .map(|t| {
            if t.as_slice().first().map(String::as_str) == Some("s") {
                tag(&["s", status])
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<_>>()?;
    let at = Timestamp::now().as_secs().max(old.created_at.as_secs() + 1);
    let event = EventBuilder::new(Kind::from(ORDER_KIND), old.content.clone())
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(at))
        .sign_with_keys(&keys)?;
    println!("order {id}: status {} -> {status}", first(&old, "s"));
    publish_everywhere(cli, &keys, &event).await
}

pub async fn cancel(cli: &Cli, id: &str) -> Result<()> {
    let keys = load_keys(cli)?;
    let address = format!("{ORDER_KIND}:{}:{id}", keys.public_key().to_hex());
    let mut tags = vec![
        tag(&["a", &address])?,
        tag(&["k", &ORDER_KIND.to_string()])?,
    ];
    if let Ok(current) = my_order(cli, &keys, id).await {
        tags.push(tag(&["e", &current.id.to_hex()])?);
    }
    let event = EventBuilder::new(Kind::from(5), "order canceled")
        .tags(tags)
        .sign_with_keys(&keys)?;
    println!("canceling order {id}");
    publish_everywhere(cli, &keys, &event).await
}
