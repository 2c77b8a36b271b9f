//! civkit-cli: the operator's client for civkitd's admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use civkit_node::{files, Config};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Talk to a running civkitd through its authenticated admin API.
///
/// With no flags it uses the same defaults as civkitd (./civkit-data), so run
/// it from the directory civkitd was started in, or pass --data-dir/--config.
#[derive(Parser)]
#[command(name = "civkit-cli", version)]
struct Args {
    /// The daemon's data directory (holds admin.cookie and admin.endpoint).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The daemon's config file (its node.data_dir is used).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print raw JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Uptime, endpoints, connections per transport, events stored, store size.
    Status,
    /// Every open connection.
    Connections,
    /// Stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Publish a kind-1 note signed by the node key.
    PublishNote { text: String },
    /// Mainstay notarization (the `mainstay` service).
    Notary {
        /// Instance name of the mainstay service.
        #[arg(long, default_value = "notary")]
        service: String,
        #[command(subcommand)]
        command: NotaryCommand,
    },
    /// Lightning peers of a bolt8 transport.
    Peers {
        /// Instance name of the bolt8 transport (default: the only one).
        #[arg(long)]
        transport: Option<String>,
        #[command(subcommand)]
        command: PeersCommand,
    },
    /// Print a completion script for this shell (bash, zsh, fish, elvish,
    /// powershell): e.g. `civkit-cli completions bash > /etc/bash_completion.d/civkit-cli`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum NotaryCommand {
    /// Last round, last attestation, what is pending.
    Status,
    /// A self-contained proof document for an event.
    Proof { event_id: String },
}

#[derive(Subcommand)]
enum PeersCommand {
    /// Connected and configured peers with their counters.
    List,
    /// Dial a peer (and redial it after drops): <node id>@host:port.
    Connect { address: String },
    /// Disconnect a peer and stop redialing it.
    Disconnect { node_id: String },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Events matching a NIP-01 filter (JSON object or array of objects).
    Query { filter: String },
    /// Delete events by id.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

struct Admin {
    base: String,
    cookie: String,
    data_dir: PathBuf,
}

impl Admin {
    fn locate(args: &Args) -> Result<Admin> {
        let data_dir = match (&args.data_dir, &args.config) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => Config::load(Some(c))?.node.data_dir,
            (None, None) => Config::load(None)?.node.data_dir,
        };
        let (cookie_path, endpoint_path) = files::admin_files(&data_dir);
        let endpoint = std::fs::read_to_string(&endpoint_path).map_err(|_| {
            anyhow!(
                "civkitd does not seem to be running with data dir {} (no {}). Start civkitd, \
                 or point --data-dir/--config at its data directory.",
                data_dir.display(),
                files::ADMIN_ENDPOINT
            )
        })?;
        let cookie = std::fs::read_to_string(&cookie_path).with_context(|| {
            format!(
                "reading {} (are you the user civkitd runs as?)",
                cookie_path.display()
            )
        })?;
        Ok(Admin {
            base: format!("http://{}", endpoint.trim()),
            cookie: cookie.trim().to_string(),
            data_dir,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let req = agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.cookie));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => r.into_json().context("reading the daemon's answer"),
            Err(ureq::Error::Status(401, _)) => bail!(
                "the admin cookie in {} was refused: it belongs to another civkitd run. \
                 Point --data-dir at the running daemon's data directory.",
                self.data_dir.display()
            ),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                bail!("the daemon answered {code}: {}", v["error"].as_str().unwrap_or("no detail"))
            }
            Err(ureq::Error::Transport(t)) => bail!(
                "civkitd is not running at {} ({t}); start it, or point --data-dir at the right data directory",
                self.base
            ),
        }
    }
}

/// The instance name of the daemon's one bolt8 transport.
fn only_bolt8(admin: &Admin) -> Result<String> {
    let status = admin.call("GET", "/v1/status", None)?;
    let names: Vec<String> = status["components"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s["kind"] == "bolt8")
        .map(|(name, _)| name.clone())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the daemon runs no bolt8 transport"),
        many => bail!(
            "the daemon runs several bolt8 transports ({}); pick one with --transport",
            many.join(", ")
        ),
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("civkit-cli: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if let Command::Completions { shell } = args.command {
        civkit_node::completions::print(shell, <Args as clap::CommandFactory>::command());
        return Ok(());
    }
    let admin = Admin::locate(&args)?;
    let out = match &args.command {
        Command::Completions { .. } => return Ok(()), // answered above
        Command::Status => admin.call("GET", "/v1/status", None)?,
        Command::Connections => admin.call("GET", "/v1/connections", None)?,
        Command::Events {
            command: EventsCommand::Query { filter },
        } => {
            let f: Value = serde_json::from_str(filter).context("the filter is not valid JSON")?;
            admin.call("POST", "/v1/events/query", Some(f))?
        }
        Command::Events {
            command: EventsCommand::Delete { ids },
        } => admin.call("POST", "/v1/events/delete", Some(json!({ "ids": ids })))?,
        Command::PublishNote { text } => {
            admin.call("POST", "/v1/publish-note", Some(json!({ "text": text })))?
        }
        Command::Notary { service, command } => match command {
            NotaryCommand::Status => {
                admin.call("POST", &format!("/v1/services/{service}/status"), None)?
            }
            NotaryCommand::Proof { event_id } => admin.call(
                "POST",
                &format!("/v1/services/{service}/proof"),
                Some(json!({ "event": event_id })),
            )?,
        },
        Command::Peers { transport, command } => {
            let t = match transport {
                Some(t) => t.clone(),
                None => only_bolt8(&admin)?,
            };
            let (cmd, body) = match command {
                PeersCommand::List => ("list", None),
                PeersCommand::Connect { address } => {
                    ("connect", Some(json!({ "address": address })))
                }
                PeersCommand::Disconnect { node_id } => {
                    ("disconnect", Some(json!({ "node_id": node_id })))
                }
            };
            admin.call("POST", &format!("/v1/control/{t}/{cmd}"), body)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_text(&args.command, &out);
    Ok(())
}

fn print_text(command: &Command, v: &Value) {
    match command {
        Command::Completions { .. } => {}
        Command::Status => {
            println!("version         {}", v["version"].as_str().unwrap_or("?"));
            println!("uptime          {} s", v["uptime_secs"]);
            println!("node pubkey     {}", v["pubkey"].as_str().unwrap_or("?"));
            for (name, url) in v["endpoints"].as_object().into_iter().flatten() {
                println!("endpoint        {name}: {}", url.as_str().unwrap_or("?"));
            }
            let conns = v["connections"].as_object();
            if conns.is_none_or(|c| c.is_empty()) {
                println!("connections     none");
            }
            for (name, n) in conns.into_iter().flatten() {
                println!("connections     {name}: {n}");
            }
            println!("events stored   {}", v["events_stored"]);
            println!(
                "store           {} ({} bytes)",
                v["store_backend"].as_str().unwrap_or("?"),
                v["store_bytes"]
            );
            println!(
                "role            {} (board-wide work runs on the node holding the board lease)",
                v["role"].as_str().unwrap_or("?")
            );
            match v["store_write_error"].as_str() {
                Some(why) => println!("store health    REFUSING WRITES: {why}"),
                None => println!("store health    ok"),
            }
            println!(
                "events in       {} accepted, {} rejected",
                v["events_accepted"], v["events_rejected"]
            );
            let services: Vec<&str> = v["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "admission chain {}",
                if services.is_empty() {
                    "none".to_string()
                } else {
                    services.join(" -> ")
                }
            );
            for (name, s) in v["components"].as_object().into_iter().flatten() {
                println!("{:<15} {s}", name);
            }
        }
        Command::Connections => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no open connections");
            }
            println!(
                "{:<6} {:<10} {:<18} {:<5} {:<12} authenticated",
                "id", "transport", "address", "subs", "since"
            );
            for c in list {
                println!(
                    "{:<6} {:<10} {:<18} {:<5} {:<12} {}",
                    c["id"],
                    c["transport"].as_str().unwrap_or(""),
                    c["address"].as_str().unwrap_or("-"),
                    c["subscriptions"],
                    c["connected_at"],
                    c["authenticated"].as_str().unwrap_or("-"),
                );
            }
        }
        Command::Events {
            command: EventsCommand::Query { .. },
        } => {
            for e in v.as_array().into_iter().flatten() {
                println!("{e}");
            }
        }
        Command::Events {
            command: EventsCommand::Delete { .. },
        } => println!("deleted {} event(s)", v["deleted"]),
        Command::Peers {
            command: PeersCommand::List,
            ..
        } => {
            let peers = v["peers"].as_array().cloned().unwrap_or_default();
            if peers.is_empty() {
                println!("no peers");
            }
            for p in peers {
                let state = if p["connected"] == true {
                    "connected"
                } else {
                    "redialing"
                };
                println!(
                    "{} {} {state} since {} in {} out {} imported {} dropped {} exported {}",
                    p["node_id"].as_str().unwrap_or("?"),
                    p["address"].as_str().unwrap_or("-"),
                    p["connected_since"],
                    p["messages_in"],
                    p["messages_out"],
                    p["events_imported"],
                    p["events_dropped"],
                    p["events_exported"],
                );
            }
            println!("dropped input: {}", v["dropped"]);
        }
        Command::Peers { .. } => println!("{v}"),
        Command::Notary { .. } => {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
        }
        Command::PublishNote { .. } => {
            let ok = v["accepted"].as_bool().unwrap_or(false);
            let msg = v["message"].as_str().unwrap_or("");
            println!(
                "{} {}{}",
                v["id"].as_str().unwrap_or("?"),
                if ok { "accepted" } else { "rejected" },
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            );
        }
    }
}
