//! civkit-sample: a maker/taker client for CivKit boards.
//!
//! Makers publish NIP-69 orders to one or more boards at once and see, per
//! board, whether it was accepted and how long it took; takers list and watch
//! orders merged from several boards without duplicates. It talks to boards
//! through nostr-sdk ([`boards`]), which also answers NIP-42 when a board asks.
//!
//! | module | what |
//! |---|---|
//! | [`home`] | the key and its directory |
//! | [`boards`] | the nostr-sdk client over every `--board`, publishing, NIP-11, `board info` |
//! | [`orders`] | `order create`, `update-status`, `cancel` |
//! | [`book`] | `orders list` and `orders watch`: orders merged across boards |
//! | [`onion`] | publishing an order as an onion message |
//! | [`credentials`] | buying, holding and spending credentials |
//! | [`history`] | `verify-history` against Mainstay and the chain |

mod boards;
mod book;
mod credentials;
mod discover;
mod history;
mod home;
mod onion;
mod orders;
mod stake;
mod tor;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args as ClapArgs, Parser, Subcommand};

/// Kind of NIP-69 orders.
pub const ORDER_KIND: u16 = 38383;
/// Kind of a board's policy event.
pub const POLICY_KIND: u16 = 10383;

/// Maker and taker client for CivKit market boards.
#[derive(Parser)]
#[command(name = "civkit-sample", version)]
pub struct Cli {
    /// Board websocket URL; repeat to use several boards.
    #[arg(long = "board", global = true, default_value = "ws://127.0.0.1:7777")]
    pub boards: Vec<String>,
    /// Where the key lives (default: $CIVKIT_SAMPLE_HOME or ~/.civkit-sample).
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// Reach the boards through Tor (arti, in this process): needed for
    /// `.onion` boards, and it hides this machine's address from clearnet ones.
    #[arg(long, global = true)]
    pub tor: bool,
    /// With --tor: more of arti's configuration, as TOML (for example a
    /// private network's `[tor_network]`).
    #[arg(long, global = true, requires = "tor")]
    pub tor_config: Option<PathBuf>,
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
    /// Boards learned from Lightning gossip.
    Boards {
        #[command(subcommand)]
        command: BoardsCommand,
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
        /// The first transaction of the board's slot staychain (from Mainstay);
        /// every attestation must lead back to it. Required with --esplora.
        #[arg(long, requires = "esplora")]
        staychain_start: Option<String>,
        /// Confirmations each attestation needs.
        #[arg(long, default_value_t = 3)]
        min_confirmations: u64,
    },
    /// Web-of-Stakes: prove channels or UTXOs to the first --board's rank
    /// service, and see your tier.
    Stake {
        #[command(subcommand)]
        command: StakeCommand,
    },
    /// Anti-spam credentials of the first --board.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Print a completion script for this shell (bash, zsh, fish, elvish,
    /// powershell): e.g. `civkit-sample completions bash > /etc/bash_completion.d/civkit-sample`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum StakeCommand {
    /// Send a stake certificate for this client's stake key (created in
    /// --home on first use). The channel or UTXO key signs here; it is
    /// never sent.
    Prove(ProveArgs),
    /// This client's stake key and its tier.
    Show,
}

#[derive(ClapArgs)]
pub struct ProveArgs {
    /// A channel: its BOLT7 channel_announcement, hex, without the message type.
    #[arg(long, conflicts_with = "utxo")]
    pub channel: Option<String>,
    /// With --channel: your side, 1 or 2 (bitcoin_key_1 or bitcoin_key_2).
    #[arg(long, default_value_t = 1)]
    pub side: u8,
    /// An output of --key's address, txid:vout:sats; repeat for several.
    #[arg(long)]
    pub utxo: Vec<String>,
    /// With --utxo: the address type of --key, p2wpkh or p2tr.
    #[arg(long, default_value = "p2wpkh")]
    pub script: String,
    /// The funding key (--channel) or the outputs' key (--utxo): WIF, or a
    /// file (mode 0600) holding it.
    #[arg(long)]
    pub key: String,
    /// The certificate counts until the chain reaches this height.
    #[arg(long)]
    pub expiry_height: u32,
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
pub struct CreateArgs {
    /// buy or sell (bitcoin).
    #[arg(long)]
    pub side: String,
    /// ISO 4217 fiat currency, e.g. NGN.
    #[arg(long)]
    pub currency: String,
    /// Fiat amount.
    #[arg(long, conflicts_with_all = ["fiat_min", "fiat_max"])]
    pub fiat_amount: Option<f64>,
    /// Smallest fiat amount of a range.
    #[arg(long, requires = "fiat_max")]
    pub fiat_min: Option<f64>,
    /// Largest fiat amount of a range.
    #[arg(long, requires = "fiat_min")]
    pub fiat_max: Option<f64>,
    /// Sats; leave out to trade at market price.
    #[arg(long, default_value_t = 0)]
    pub sats: u64,
    /// Payment method; repeat for several.
    #[arg(long = "payment-method", required = true)]
    pub payment_methods: Vec<String>,
    /// Premium over market price, in percent.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub premium: f64,
    /// How long the order stays pending: 3600, 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub lifetime: String,
    /// A BOLT12 offer (lno1...) takers can pay.
    #[arg(long)]
    pub offer: Option<String>,
    /// mainnet, testnet, signet or regtest.
    #[arg(long, default_value = "mainnet")]
    pub network: String,
    /// onchain, lightning or liquid.
    #[arg(long, default_value = "lightning")]
    pub layer: String,
    /// A display name.
    #[arg(long)]
    pub name: Option<String>,
    /// The order id (`d` tag); random by default.
    #[arg(long)]
    pub id: Option<String>,
    /// Sign with a fresh key used for this order only (not saved), so orders do not link.
    #[arg(long)]
    pub ephemeral_key: bool,
    /// Send anonymously as an onion message through this entry node
    /// (`<node id>@host:port`) instead of publishing over websocket.
    #[arg(long, value_name = "ENTRY")]
    pub via_onion: Option<String>,
    /// With --via-onion: the board's blinded path (hex); default: the first
    /// one in the policy event of the first --board.
    #[arg(long, requires = "via_onion")]
    pub board_path: Option<String>,
    /// Vouch for the order with this client's stake key (`stake` tag), so
    /// boards rank it by the stake key's tier, even with --ephemeral-key.
    #[arg(long)]
    pub stake: bool,
}

#[derive(ClapArgs, Clone, Default)]
pub struct OrderFilter {
    /// buy or sell.
    #[arg(long)]
    pub side: Option<String>,
    /// ISO 4217 currency.
    #[arg(long)]
    pub currency: Option<String>,
    /// Order status.
    #[arg(long)]
    pub status: Option<String>,
    /// Payment method (matched case-insensitively).
    #[arg(long = "payment-method")]
    pub payment_method: Option<String>,
    /// Only orders whose stake key has at least this tier (from the rank
    /// service the first --board trusts).
    #[arg(long)]
    pub min_tier: Option<u8>,
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
enum BoardsCommand {
    /// Connect to a Lightning node over BOLT8 and list the boards whose
    /// credential and service policies it relays.
    Discover {
        /// `<node id>@host:port` of a board or any node that relays the policies.
        #[arg(long)]
        via: String,
        /// Seconds to listen.
        #[arg(long, default_value_t = 5)]
        wait: u64,
    },
}

#[derive(Subcommand)]
enum BoardCommand {
    /// NIP-11 document and the board's policy event.
    Info,
}

fn main() {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        civkit_node::completions::print(shell, <Cli as clap::CommandFactory>::command());
        return;
    }
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

async fn run(cli: Cli) -> Result<()> {
    tor::start(&cli).await?;
    match &cli.command {
        Command::Completions { .. } => Ok(()), // answered in main
        Command::Keygen { force } => home::keygen(&cli, *force),
        Command::Order { command } => match command {
            OrderCommand::Create(a) => orders::create(&cli, a).await,
            OrderCommand::UpdateStatus { id, status } => {
                orders::update_status(&cli, id, status).await
            }
            OrderCommand::Cancel { id } => orders::cancel(&cli, id).await,
        },
        Command::Orders { command } => match command {
            OrdersCommand::List(f) => book::list(&cli, f).await,
            OrdersCommand::Watch { filter, for_secs } => book::watch(&cli, filter, *for_secs).await,
        },
        Command::Board {
            command: BoardCommand::Info,
        } => boards::info(&cli).await,
        Command::Boards {
            command: BoardsCommand::Discover { via, wait },
        } => discover::discover(via, *wait).await,
        Command::VerifyHistory {
            seen,
            esplora,
            base_key,
            chain_code,
            staychain_start,
            min_confirmations,
        } => {
            let chain = match (esplora, staychain_start) {
                (Some(url), Some(start)) => Some(history::OnChain {
                    esplora: url,
                    base_key,
                    chain_code,
                    staychain_start: start,
                    min_confirmations: *min_confirmations,
                }),
                (Some(_), None) => anyhow::bail!(
                    "--esplora needs --staychain-start: the first transaction of the board's Mainstay slot"
                ),
                _ => None,
            };
            history::verify(&cli, seen.as_deref(), chain.as_ref()).await
        }
        Command::Stake { command } => match command {
            StakeCommand::Prove(a) => stake::prove(&cli, a).await,
            StakeCommand::Show => stake::show(&cli).await,
        },
        Command::Credentials { command } => match command {
            CredentialsCommand::Buy { count, wait } => credentials::buy(&cli, *count, *wait).await,
            CredentialsCommand::List => credentials::list(&cli),
        },
    }
}
