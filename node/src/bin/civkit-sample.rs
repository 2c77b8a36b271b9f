//! civkit-sample: a maker/taker client for CivKit boards.
//!
//! Makers publish NIP-69 orders to one or more boards at once and see, per
//! board, whether it was accepted and how long it took; takers list and watch
//! orders merged from several boards without duplicates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use nostr::{Event, EventBuilder, Filter, JsonUtil, Keys, Kind, SecretKey, Tag, Timestamp};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ORDER_KIND: u16 = 38383;
const POLICY_KIND: u16 = 10383;

/// Maker and taker client for CivKit market boards.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Board websocket URL; repeat to use several boards.
    #[arg(long = "board", global = true, default_value = "ws://127.0.0.1:7777")]
    boards: Vec<String>,
    /// Where the key lives (default: $CIVKIT_SAMPLE_HOME or ~/.civkit-sample).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this client's key (mode 0600).
    Keygen {
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Make, update and cancel orders.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Find orders on the boards.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// What a board says about itself.
    Board {
        #[command(subcommand)]
        command: BoardCommand,
    },
    /// Check the first --board's notarized history: rounds chain without
    /// gaps or rewrites, Mainstay proofs verify, and every order seen is in it.
    VerifyHistory {
        /// Extra order ids you saw (one hex id per line), besides the board's current orders.
        #[arg(long)]
        seen: Option<PathBuf>,
        /// Also check every attestation transaction and the staychain through this Esplora API.
        #[arg(long)]
        esplora: Option<String>,
        /// Mainstay base key (hex) for the attestation check.
        #[arg(long, default_value = civkit_mainstay::chain::MAINNET_BASE_KEY)]
        base_key: String,
        /// Chain code of the base key.
        #[arg(long, default_value = civkit_mainstay::chain::MAINNET_CHAIN_CODE)]
        chain_code: String,
    },
    /// Anti-spam credentials of the first --board.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Buy N credentials: shows the invoice, waits for payment, stores them (mode 0600).
    Buy {
        count: usize,
        /// Seconds to wait for the payment.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Credentials held, per board and epoch.
    List,
}

#[derive(Subcommand)]
enum OrderCommand {
    /// Publish a new order to every board.
    Create(Box<CreateArgs>),
    /// Publish a new status for one of your orders (pending, in-progress, success, canceled, expired).
    UpdateStatus { id: String, status: String },
    /// Delete one of your orders (NIP-09) on every board.
    Cancel { id: String },
}

#[derive(ClapArgs)]
struct CreateArgs {
    /// buy or sell (bitcoin).
    #[arg(long)]
    side: String,
    /// ISO 4217 fiat currency, e.g. NGN.
    #[arg(long)]
    currency: String,
    /// Fiat amount.
    #[arg(long, conflicts_with_all = ["fiat_min", "fiat_max"])]
    fiat_amount: Option<f64>,
    /// Smallest fiat amount of a range.
    #[arg(long, requires = "fiat_max")]
    fiat_min: Option<f64>,
    /// Largest fiat amount of a range.
    #[arg(long, requires = "fiat_min")]
    fiat_max: Option<f64>,
    /// Sats; leave out to trade at market price.
    #[arg(long, default_value_t = 0)]
    sats: u64,
    /// Payment method; repeat for several.
    #[arg(long = "payment-method", required = true)]
    payment_methods: Vec<String>,
    /// Premium over market price, in percent.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    premium: f64,
    /// How long the order stays pending: 3600, 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    lifetime: String,
    /// A BOLT12 offer (lno1...) takers can pay.
    #[arg(long)]
    offer: Option<String>,
    /// mainnet, testnet, signet or regtest.
    #[arg(long, default_value = "mainnet")]
    network: String,
    /// onchain, lightning or liquid.
    #[arg(long, default_value = "lightning")]
    layer: String,
    /// A display name.
    #[arg(long)]
    name: Option<String>,
    /// The order id (`d` tag); random by default.
    #[arg(long)]
    id: Option<String>,
    /// Sign with a fresh key used for this order only (not saved), so orders do not link.
    #[arg(long)]
    ephemeral_key: bool,
    /// Send anonymously as an onion message through this entry node
    /// (`<node id>@host:port`) instead of publishing over websocket.
    #[arg(long, value_name = "ENTRY")]
    via_onion: Option<String>,
    /// With --via-onion: the board's blinded path (hex); default: the first
    /// one in the policy event of the first --board.
    #[arg(long, requires = "via_onion")]
    board_path: Option<String>,
}

#[derive(ClapArgs, Clone, Default)]
struct OrderFilter {
    /// buy or sell.
    #[arg(long)]
    side: Option<String>,
    /// ISO 4217 currency.
    #[arg(long)]
    currency: Option<String>,
    /// Order status.
    #[arg(long)]
    status: Option<String>,
    /// Payment method (matched case-insensitively).
    #[arg(long = "payment-method")]
    payment_method: Option<String>,
}

#[derive(Subcommand)]
enum OrdersCommand {
    /// Orders on the boards, merged, as a table.
    List(OrderFilter),
    /// Orders on the boards, then live updates as they arrive.
    Watch {
        #[command(flatten)]
        filter: OrderFilter,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long = "for")]
        for_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum BoardCommand {
    /// NIP-11 document and the board's policy event.
    Info,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("civkit-sample: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("civkit-sample: {e:#}");
        std::process::exit(1);
    }
}

fn home(cli: &Cli) -> Result<PathBuf> {
    if let Some(h) = &cli.home {
        return Ok(h.clone());
    }
    if let Ok(h) = std::env::var("CIVKIT_SAMPLE_HOME") {
        return Ok(PathBuf::from(h));
    }
    let h = std::env::var("HOME").context("HOME is not set; pass --home")?;
    Ok(PathBuf::from(h).join(".civkit-sample"))
}

fn load_keys(cli: &Cli) -> Result<Keys> {
    let path = home(cli)?.join("key");
    let hex = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no key at {}; run `civkit-sample keygen` first",
            path.display()
        )
    })?;
    Ok(Keys::new(
        SecretKey::from_hex(hex.trim()).context("the key file is not a hex secret key")?,
    ))
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Keygen { force } => keygen(&cli, *force),
        Command::Order { command } => match command {
            OrderCommand::Create(a) => create(&cli, a).await,
            OrderCommand::UpdateStatus { id, status } => update_status(&cli, id, status).await,
            OrderCommand::Cancel { id } => cancel(&cli, id).await,
        },
        Command::Orders { command } => match command {
            OrdersCommand::List(f) => list(&cli, f).await,
            OrdersCommand::Watch { filter, for_secs } => watch(&cli, filter, *for_secs).await,
        },
        Command::Board {
            command: BoardCommand::Info,
        } => board_info(&cli).await,
        Command::VerifyHistory {
            seen,
            esplora,
            base_key,
            chain_code,
        } => {
            let chain = esplora
                .as_ref()
                .map(|url| (url.as_str(), base_key.as_str(), chain_code.as_str()));
            verify_history(&cli, seen.as_deref(), chain).await
        }
        Command::Credentials { command } => match command {
            CredentialsCommand::Buy { count, wait } => credentials_buy(&cli, *count, *wait).await,
            CredentialsCommand::List => credentials_list(&cli),
        },
    }
}

fn keygen(cli: &Cli, force: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = home(cli)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join("key");
    if path.exists() && !force {
        let keys = load_keys(cli)?;
        println!(
            "key exists: {} (use --force to replace)",
            keys.public_key().to_hex()
        );
        return Ok(());
    }
    let _ = std::fs::remove_file(&path);
    let keys = Keys::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, keys.secret_key().to_secret_hex().as_bytes())?;
    println!("public key {}", keys.public_key().to_hex());
    println!("saved to {}", path.display());
    Ok(())
}

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

fn tag(parts: &[&str]) -> Result<Tag> {
    Tag::parse(parts.iter().copied()).map_err(|e| anyhow!("building tag {parts:?}: {e}"))
}

/// A random order id (8 bytes, hex).
fn random_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).context("reading the OS random source")?;
    Ok(hex::encode(b))
}

async fn create(cli: &Cli, a: &CreateArgs) -> Result<()> {
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
                let tag_values =
                    civkit_credentials::scheme::spend_tag(c, &binding).map_err(|e| anyhow!(e))?;
                tags.push(Tag::parse(tag_values).map_err(|e| anyhow!("{e}"))?);
            }
            Some((wallet, creds.len()))
        }
        None => None,
    };
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
    let mut c = Conn::open(url).await?;
    let f = Filter::new()
        .kind(Kind::from(POLICY_KIND))
        .author(pk)
        .limit(1);
    let events = c.query(None, "policy", &[f]).await?;
    let content: Value = serde_json::from_str(
        &events
            .first()
            .ok_or_else(|| anyhow!("{url} published no policy"))?
            .content,
    )?;
    content["endpoints"]["onion"][0]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{url} publishes no onion path (no onion-messages transport)"))
}

/// Send the order as an onion message through `entry` to the board's blinded
/// path, with a blinded reply path back through the path's introduction node
/// and the entry node (which must be connected to each other), and wait for
/// the board's answer.
async fn publish_via_onion(
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
        json!(["EVENT", event]).to_string(),
        Some(reply),
    )?;
    let answer = me.reply(Duration::from_secs(30)).await.ok_or_else(|| {
        anyhow!("no answer over the reply path within 30 s (the order may still have arrived)")
    })?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let v: Value = serde_json::from_str(&answer)?;
    match (v[0].as_str(), v[2].as_bool()) {
        (Some("OK"), Some(true)) => {
            println!("onion via {entry_id}: accepted in {ms:.1} ms");
            Ok(())
        }
        (Some("OK"), Some(false)) => bail!(
            "onion via {entry_id}: rejected: {} ({ms:.1} ms)",
            v[3].as_str().unwrap_or("")
        ),
        _ => bail!("unexpected answer over the reply path: {answer}"),
    }
}

/// Publish to every board concurrently; print per-board result and time.
async fn publish_everywhere(cli: &Cli, keys: &Keys, event: &Event) -> Result<()> {
    let tasks: Vec<_> = cli
        .boards
        .iter()
        .map(|url| {
            let (url, keys, event) = (url.clone(), keys.clone(), event.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = publish(&url, &keys, &event).await;
                (url, r, t.elapsed())
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        let (url, r, took) = t.await?;
        let ms = took.as_secs_f64() * 1000.0;
        match r {
            Ok((true, msg)) => {
                accepted += 1;
                let note = if msg.is_empty() {
                    String::new()
                } else {
                    format!(" ({msg})")
                };
                println!("{url:<28} accepted{note} in {ms:.1} ms");
            }
            Ok((false, msg)) => println!("{url:<28} rejected: {msg} ({ms:.1} ms)"),
            Err(e) => println!("{url:<28} failed: {e:#} ({ms:.1} ms)"),
        }
    }
    if accepted == 0 {
        bail!("no board accepted the event");
    }
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One board connection that answers NIP-42 only when a board asks for it.
struct Conn {
    url: String,
    ws: Ws,
    challenge: Option<String>,
}

impl Conn {
    async fn open(url: &str) -> Result<Conn> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| anyhow!("timed out connecting"))?
        .with_context(|| format!("connecting to {url}"))?;
        Ok(Conn {
            url: url.to_string(),
            ws,
            challenge: None,
        })
    }

    async fn send(&mut self, v: Value) -> Result<()> {
        self.ws.send(Message::Text(v.to_string().into())).await?;
        Ok(())
    }

    /// The next relay message (remembering AUTH challenges); `None` on timeout or close.
    async fn next(&mut self, timeout: Duration) -> Result<Option<Value>> {
        loop {
            match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    bail!("the board closed the connection")
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if v[0] == "AUTH" {
                        self.challenge = v[1].as_str().map(str::to_string);
                        continue;
                    }
                    return Ok(Some(v));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Authenticate with the last challenge (NIP-42).
    async fn authenticate(&mut self, keys: &Keys) -> Result<()> {
        let challenge = match &self.challenge {
            Some(c) => c.clone(),
            None => bail!("the board asked for AUTH but sent no challenge"),
        };
        let auth = EventBuilder::new(Kind::from(22242), "")
            .tags([
                tag(&["relay", &self.url])?,
                tag(&["challenge", &challenge])?,
            ])
            .sign_with_keys(keys)?;
        self.send(json!(["AUTH", auth])).await?;
        loop {
            match self.next(Duration::from_secs(10)).await? {
                Some(v) if v[0] == "OK" && v[1] == auth.id.to_hex() => {
                    return if v[2] == true {
                        Ok(())
                    } else {
                        Err(anyhow!("AUTH refused: {}", v[3].as_str().unwrap_or("")))
                    }
                }
                Some(_) => continue,
                None => bail!("no answer to AUTH"),
            }
        }
    }

    /// REQ and collect until EOSE; `Err` with the CLOSED message.
    async fn query(
        &mut self,
        keys: Option<&Keys>,
        sub: &str,
        filters: &[Filter],
    ) -> Result<Vec<Event>> {
        let mut retried = false;
        'again: loop {
            let mut req = vec![json!("REQ"), json!(sub)];
            req.extend(
                filters
                    .iter()
                    .map(|f| serde_json::to_value(f).unwrap_or_default()),
            );
            self.send(Value::Array(req)).await?;
            let mut out = Vec::new();
            loop {
                let v = self
                    .next(Duration::from_secs(15))
                    .await?
                    .ok_or_else(|| anyhow!("no EOSE from {}", self.url))?;
                match (v[0].as_str(), v[1].as_str() == Some(sub)) {
                    (Some("EVENT"), true) => {
                        if let Ok(e) = Event::from_json(v[2].to_string()) {
                            if e.verify().is_ok() {
                                out.push(e);
                            }
                        }
                    }
                    (Some("EOSE"), true) => return Ok(out),
                    (Some("CLOSED"), true) => {
                        let msg = v[2].as_str().unwrap_or("").to_string();
                        if let (Some(k), true, false) =
                            (keys, msg.starts_with("auth-required:"), retried)
                        {
                            self.authenticate(k).await?;
                            retried = true;
                            continue 'again;
                        }
                        bail!("{msg}");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Publish one event, authenticating if the board requires it.
async fn publish(url: &str, keys: &Keys, event: &Event) -> Result<(bool, String)> {
    let mut c = Conn::open(url).await?;
    for attempt in 0..2 {
        c.send(json!(["EVENT", event])).await?;
        loop {
            let v = c
                .next(Duration::from_secs(15))
                .await?
                .ok_or_else(|| anyhow!("no answer"))?;
            if v[0] == "OK" && v[1] == event.id.to_hex() {
                let ok = v[2] == true;
                let msg = v[3].as_str().unwrap_or("").to_string();
                if !ok && msg.starts_with("auth-required:") && attempt == 0 {
                    c.authenticate(keys).await?;
                    break;
                }
                return Ok((ok, msg));
            }
        }
    }
    bail!("the board still asks for authentication")
}

fn order_filters(f: &OrderFilter) -> Filter {
    use nostr::{Alphabet, SingleLetterTag};
    let mut filter = Filter::new().kind(Kind::from(ORDER_KIND));
    if let Some(s) = &f.side {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::K), s.clone());
    }
    if let Some(c) = &f.currency {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::F), c.to_uppercase());
    }
    if let Some(s) = &f.status {
        filter = filter.custom_tag(SingleLetterTag::lowercase(Alphabet::S), s.clone());
    }
    filter
}

fn tag_values(e: &Event, name: &str) -> Vec<String> {
    e.tags
        .iter()
        .find(|t| t.as_slice().first().map(String::as_str) == Some(name))
        .map(|t| t.as_slice()[1..].to_vec())
        .unwrap_or_default()
}

fn first(e: &Event, name: &str) -> String {
    tag_values(e, name).into_iter().next().unwrap_or_default()
}

fn matches_pm(e: &Event, f: &OrderFilter) -> bool {
    match &f.payment_method {
        None => true,
        Some(want) => tag_values(e, "pm")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(want)),
    }
}

/// Orders merged across boards: newest version per (maker, order id), with the boards that have it.
#[derive(Default)]
struct Book {
    orders: BTreeMap<(String, String), (Event, Vec<String>)>,
}

impl Book {
    /// Add an event seen on `board`; `true` if it is new or newer.
    fn add(&mut self, e: Event, board: &str) -> bool {
        let key = (e.pubkey.to_hex(), first(&e, "d"));
        match self.orders.get_mut(&key) {
            Some((old, boards)) if old.id == e.id => {
                if !boards.iter().any(|b| b == board) {
                    boards.push(board.to_string());
                }
                false
            }
            Some((old, _)) if old.created_at >= e.created_at => false,
            _ => {
                self.orders.insert(key, (e, vec![board.to_string()]));
                true
            }
        }
    }
}

fn header() -> String {
    format!(
        "{:<4} {:>16} {:<4} {:>10} {:>7} {:<24} {:<11} {:<17} {:<8} {:<16} {}",
        "SIDE",
        "FIAT",
        "CUR",
        "SATS",
        "PREM%",
        "PAYMENT",
        "STATUS",
        "EXPIRES (UTC)",
        "MAKER",
        "ID",
        "BOARDS"
    )
}

fn row(e: &Event, boards: usize) -> String {
    let fa = tag_values(e, "fa").join("-");
    let sats = match first(e, "amt").as_str() {
        "0" => "market".to_string(),
        s => s.to_string(),
    };
    let expires = first(e, "expires_at")
        .parse::<u64>()
        .map(|t| Timestamp::from_secs(t).to_human_datetime())
        .unwrap_or_default();
    let expires: String = expires.chars().take(16).collect();
    let mut pm = tag_values(e, "pm").join(", ");
    if pm.chars().count() > 24 {
        pm = pm.chars().take(21).collect::<String>() + "...";
    }
    format!(
        "{:<4} {:>16} {:<4} {:>10} {:>7} {:<24} {:<11} {:<17} {:<8} {:<16} {}",
        first(e, "k"),
        fa,
        first(e, "f"),
        sats,
        first(e, "premium"),
        pm,
        first(e, "s"),
        expires,
        &e.pubkey.to_hex()[..8],
        first(e, "d"),
        boards
    )
}

async fn collect(cli: &Cli, filter: &Filter, keys: Option<&Keys>) -> Result<Book> {
    let tasks: Vec<_> = cli
        .boards
        .iter()
        .map(|url| {
            let (url, filter, keys) = (url.clone(), filter.clone(), keys.cloned());
            tokio::spawn(async move {
                let r = async {
                    let mut c = Conn::open(&url).await?;
                    c.query(keys.as_ref(), "orders", &[filter]).await
                }
                .await;
                (url, r)
            })
        })
        .collect();
    let mut book = Book::default();
    for t in tasks {
        let (url, r) = t.await?;
        match r {
            Ok(events) => {
                for e in events {
                    book.add(e, &url);
                }
            }
            Err(e) => eprintln!("{url}: {e:#}"),
        }
    }
    Ok(book)
}

async fn list(cli: &Cli, f: &OrderFilter) -> Result<()> {
    let keys = load_keys(cli).ok();
    let book = collect(cli, &order_filters(f), keys.as_ref()).await?;
    let rows: Vec<_> = book
        .orders
        .values()
        .filter(|(e, _)| matches_pm(e, f))
        .collect();
    println!("{}", header());
    for (e, boards) in &rows {
        println!("{}", row(e, boards.len()));
    }
    println!("{} order(s) from {} board(s)", rows.len(), cli.boards.len());
    Ok(())
}

async fn watch(cli: &Cli, f: &OrderFilter, for_secs: Option<u64>) -> Result<()> {
    let keys = load_keys(cli).ok();
    let filter = order_filters(f);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Event)>(256);
    for url in &cli.boards {
        let (url, filter, keys, tx) = (url.clone(), filter.clone(), keys.clone(), tx.clone());
        tokio::spawn(async move {
            let r: Result<()> = async {
                let mut c = Conn::open(&url).await?;
                for e in c.query(keys.as_ref(), "watch", &[filter]).await? {
                    tx.send((url.clone(), e)).await?;
                }
                while let Some(v) = c.next(Duration::from_secs(3600)).await? {
                    if v[0] == "EVENT" {
                        if let Ok(e) = Event::from_json(v[2].to_string()) {
                            if e.verify().is_ok() {
                                tx.send((url.clone(), e)).await?;
                            }
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                eprintln!("{url}: {e:#}");
            }
        });
    }
    drop(tx);
    println!("{}", header());
    let mut book = Book::default();
    let deadline = for_secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(v) => v,
                Err(_) => break,
            },
            None => tokio::select! {
                v = rx.recv() => v,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        let Some((url, e)) = next else { break };
        if matches_pm(&e, f) && book.add(e.clone(), &url) {
            println!("{}", row(&e, 1));
        }
    }
    Ok(())
}

/// Newest version of one of my orders, from any board.
async fn my_order(cli: &Cli, keys: &Keys, id: &str) -> Result<Event> {
    let filter = Filter::new()
        .kind(Kind::from(ORDER_KIND))
        .author(keys.public_key())
        .identifier(id);
    let book = collect(cli, &filter, Some(keys)).await?;
    book.orders
        .into_values()
        .map(|(e, _)| e)
        .max_by_key(|e| e.created_at)
        .ok_or_else(|| anyhow!("no order `{id}` of yours on these boards"))
}

async fn update_status(cli: &Cli, id: &str, status: &str) -> Result<()> {
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

async fn cancel(cli: &Cli, id: &str) -> Result<()> {
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

async fn board_info(cli: &Cli) -> Result<()> {
    for url in &cli.boards {
        println!("== {url}");
        let doc = match nip11_of(url) {
            Ok(d) => d,
            Err(e) => {
                println!("NIP-11 unavailable: {e:#}");
                continue;
            }
        };
        println!("name            {}", doc["name"].as_str().unwrap_or("-"));
        println!(
            "description     {}",
            doc["description"].as_str().unwrap_or("-")
        );
        println!("board key       {}", doc["pubkey"].as_str().unwrap_or("-"));
        println!("supported NIPs  {}", doc["supported_nips"]);
        println!(
            "software        {} {}",
            doc["software"].as_str().unwrap_or("-"),
            doc["version"].as_str().unwrap_or("")
        );
        println!("limitation      {}", doc["limitation"]);
        if doc.get("civkit_board").is_some() {
            println!("policy (NIP-11) {}", doc["civkit_board"]);
        }
        let Some(pk) = doc["pubkey"]
            .as_str()
            .and_then(|p| nostr::PublicKey::from_hex(p).ok())
        else {
            continue;
        };
        let mut c = Conn::open(url).await?;
        let f = Filter::new()
            .kind(Kind::from(POLICY_KIND))
            .author(pk)
            .limit(1);
        match c.query(None, "policy", &[f]).await {
            Ok(events) => match events.first() {
                Some(e) => {
                    println!(
                        "policy event    {} (kind {POLICY_KIND}, signed by the board key)",
                        e.id
                    );
                    let content: Value = serde_json::from_str(&e.content).unwrap_or_default();
                    println!("policy          {content}");
                    let reach: Vec<String> = e
                        .tags
                        .iter()
                        .filter(|t| t.as_slice().first().map(String::as_str) == Some("r"))
                        .filter_map(|t| t.as_slice().get(1).cloned())
                        .collect();
                    println!("reach it at     {}", reach.join(", "));
                }
                None => println!("policy event    none published"),
            },
            Err(e) => println!("policy event    unavailable: {e:#}"),
        }
    }
    Ok(())
}

/// The board's NIP-11 document (first --board).
fn nip11(cli: &Cli) -> Result<Value> {
    nip11_of(cli.boards.first().ok_or_else(|| anyhow!("give --board"))?)
}

/// The NIP-11 document of the board at websocket URL `url`.
fn nip11_of(url: &str) -> Result<Value> {
    let http = url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    Ok(agent
        .get(&http)
        .set("Accept", "application/nostr+json")
        .call()?
        .into_json()?)
}

/// (board key, credentials per order) when the first board wants credentials on orders.
async fn credentials_needed(cli: &Cli) -> Result<Option<(String, usize)>> {
    let Ok(doc) = nip11(cli) else { return Ok(None) };
    let c = &doc["civkit_credentials"];
    let wants = c["kinds"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k.as_u64() == Some(u64::from(ORDER_KIND))));
    if !wants {
        return Ok(None);
    }
    let board = doc["pubkey"]
        .as_str()
        .ok_or_else(|| anyhow!("the board has no pubkey"))?
        .to_string();
    Ok(Some((board, c["per_event"].as_u64().unwrap_or(1) as usize)))
}

/// Credentials held, by board key; stored in `<home>/credentials.json`, mode 0600.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Wallet {
    boards: BTreeMap<String, Vec<civkit_credentials::scheme::Credential>>,
}

impl Wallet {
    fn path(cli: &Cli) -> Result<PathBuf> {
        Ok(home(cli)?.join("credentials.json"))
    }
    fn load(cli: &Cli) -> Result<Wallet> {
        match std::fs::read_to_string(Self::path(cli)?) {
            Ok(t) => Ok(serde_json::from_str(&t).context("credentials.json is damaged")?),
            Err(_) => Ok(Wallet::default()),
        }
    }
    fn save(&self, cli: &Cli) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let path = Self::path(cli)?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        civkit_framework::keyfile::write_secret(&path, &serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
    fn take(
        &mut self,
        board: &str,
        n: usize,
    ) -> Result<Vec<civkit_credentials::scheme::Credential>> {
        let held = self.boards.entry(board.to_string()).or_default();
        if held.len() < n {
            bail!("this board wants {n} credential(s) per order and you hold {}: run `civkit-sample credentials buy N`", held.len());
        }
        Ok(held.drain(..n).collect())
    }
}

fn credentials_list(cli: &Cli) -> Result<()> {
    let w = Wallet::load(cli)?;
    if w.boards.values().all(Vec::is_empty) {
        println!("no credentials");
    }
    for (board, creds) in &w.boards {
        let mut epochs: BTreeMap<u64, usize> = BTreeMap::new();
        for c in creds {
            *epochs.entry(c.epoch).or_default() += 1;
        }
        let by_epoch: Vec<String> = epochs
            .iter()
            .map(|(e, n)| format!("{n} of epoch {e}"))
            .collect();
        println!(
            "board {board}: {} credential(s) ({})",
            creds.len(),
            by_epoch.join(", ")
        );
    }
    Ok(())
}

/// Wait for the board's encrypted answer to request `id`.
async fn answer_to(c: &mut Conn, keys: &Keys, id: &nostr::EventId) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = c
            .next(left)
            .await?
            .ok_or_else(|| anyhow!("the board did not answer"))?;
        if v[0] != "EVENT" {
            continue;
        }
        let Ok(e) = Event::from_json(v[2].to_string()) else {
            continue;
        };
        if e.verify().is_err() || !e.tags.event_ids().any(|x| x == id) {
            continue;
        }
        return civkit_credentials::wallet::open(keys, &e).map_err(|e| anyhow!(e));
    }
}

async fn credentials_buy(cli: &Cli, count: usize, wait: u64) -> Result<()> {
    use civkit_credentials::{wallet, MINT, QUOTE};
    let keys = load_keys(cli)?;
    let doc = nip11(cli)?;
    let announced = doc["civkit_credentials"]["pubkey"]
        .as_str()
        .ok_or_else(|| {
            anyhow!("this board sells no credentials (no civkit_credentials in NIP-11)")
        })?
        .to_string();
    let board_hex = doc["pubkey"]
        .as_str()
        .ok_or_else(|| anyhow!("the board has no pubkey"))?
        .to_string();
    let board = nostr::PublicKey::from_hex(&board_hex)?;
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let mut c = Conn::open(url).await?;
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .pubkey(keys.public_key());
    c.query(Some(&keys), "answers", &[f]).await?;
    let req = wallet::quote_request(&keys, &board, count).map_err(|e| anyhow!(e))?;
    c.send(json!(["EVENT", req])).await?;
    let quote = answer_to(&mut c, &keys, &req.id).await?;
    if let Some(e) = quote["error"].as_str() {
        bail!("the board refused the quote: {e}");
    }
    println!(
        "pay {} msat for {count} credential(s):",
        quote["amount_msat"]
    );
    println!("{}", quote["invoice"].as_str().unwrap_or(""));
    let qid = quote["quote"].as_str().unwrap_or_default().to_string();
    let pending = wallet::Pending::new(count).map_err(|e| anyhow!(e))?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let req = wallet::mint_request(&keys, &board, &qid, &pending).map_err(|e| anyhow!(e))?;
        c.send(json!(["EVENT", req])).await?;
        let answer = answer_to(&mut c, &keys, &req.id).await?;
        match answer["error"].as_str() {
            Some(e) if e.starts_with("payment-required:") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some(e) => bail!("{e}"),
            None => {
                let creds =
                    wallet::finish(&pending, &answer, &announced).map_err(|e| anyhow!(e))?;
                let mut w = Wallet::load(cli)?;
                w.boards.entry(board_hex.clone()).or_default().extend(creds);
                w.save(cli)?;
                println!(
                    "received {count} credential(s) of epoch {}; DLEQ proofs checked",
                    answer["epoch"]
                );
                return Ok(());
            }
        }
    }
}

async fn verify_history(
    cli: &Cli,
    seen_file: Option<&std::path::Path>,
    chain: Option<(&str, &str, &str)>,
) -> Result<()> {
    use civkit_mainstay::history::{self, OrderStatus, PublishedRound, ROUND_KIND};
    let url = cli.boards.first().ok_or_else(|| anyhow!("give --board"))?;
    let doc = nip11_of(url)?;
    let board = nostr::PublicKey::from_hex(doc["pubkey"].as_str().unwrap_or_default())
        .map_err(|_| anyhow!("{url} has no pubkey in NIP-11"))?;
    let mut c = Conn::open(url).await?;
    let rounds: Vec<PublishedRound> = c
        .query(
            None,
            "rounds",
            &[Filter::new().kind(Kind::from(ROUND_KIND)).author(board)],
        )
        .await?
        .iter()
        .filter_map(|e| serde_json::from_str(&e.content).ok())
        .collect();
    let mut seen: Vec<String> = c
        .query(
            None,
            "orders",
            &[Filter::new().kind(Kind::from(ORDER_KIND))],
        )
        .await?
        .iter()
        .map(|e| e.id.to_hex())
        .collect();
    if let Some(path) = seen_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        seen.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.len() == 64)
                .map(str::to_string),
        );
    }
    seen.sort();
    seen.dedup();
    let report = history::check(rounds.clone(), &seen);
    println!("{} round(s) published by {}", rounds.len(), board.to_hex());
    for e in &report.history_errors {
        println!("HISTORY ERROR: {e}");
    }
    for (id, status) in &report.orders {
        match status {
            OrderStatus::Attested { round, txid } => {
                println!("{id} attested: round {round}, Mainstay txid {txid}")
            }
            OrderStatus::Pending { round } => println!("{id} in round {round}, not attested yet"),
            OrderStatus::Missing => println!("{id} MISSING from the board's history"),
        }
    }
    if let Some((esplora, base_key, chain_code)) = chain {
        use civkit_mainstay::chain as btc;
        let source = btc::Esplora {
            url: esplora.to_string(),
        };
        let mut attested: Vec<(u64, String, String)> = rounds
            .iter()
            .filter_map(|p| {
                p.attestation
                    .as_ref()
                    .map(|a| (p.round.number, a.txid.clone(), a.merkle_root.clone()))
            })
            .collect();
        attested.sort_by_key(|a| std::cmp::Reverse(a.0));
        let mut txids: Vec<String> = Vec::new();
        for (round, txid, root) in &attested {
            btc::check_attestation(&source, base_key, chain_code, txid, root)
                .await
                .map_err(|e| anyhow!("round {round}: {e}"))?;
            if txids.last() != Some(txid) {
                txids.push(txid.clone());
            }
        }
        btc::check_staychain(&source, &txids)
            .await
            .map_err(|e| anyhow!(e))?;
        println!(
            "{} attestation transaction(s) verified on chain, staychain continuous",
            txids.len()
        );
    }
    if report.is_clean() {
        println!("history verified");
        Ok(())
    } else {
        bail!("the board's history does not hold together")
    }
}
