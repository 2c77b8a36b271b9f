//! Start civkitd as a real process in a temp dir, on free ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const CIVKITD: &str = env!("CARGO_BIN_EXE_civkitd");
pub const CLI: &str = env!("CARGO_BIN_EXE_civkit-cli");
pub const SAMPLE: &str = env!("CARGO_BIN_EXE_civkit-sample");

pub struct Proc {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on free ports, rate limit off, with extra TOML appended.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = format!(
        "[node]\ndata_dir = \"data\"\nlog = \"warn\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\n\
         [transports.relay.limits]\nevents_per_second = 0.0\n{extra}"
    );
    let path = dir.join("civkit.toml");
    std::fs::write(&path, cfg).expect("write config");
    path
}

/// Start civkitd in `dir` with `civkit.toml` and wait for its admin endpoint.
pub fn start(dir: &Path) -> Proc {
    start_with(dir, Stdio::null())
}

/// [`start`], with its log written to `dir/civkitd.log`.
pub fn start_logged(dir: &Path) -> Proc {
    let log = std::fs::File::create(dir.join("civkitd.log")).expect("create the log file");
    start_with(dir, Stdio::from(log))
}

fn start_with(dir: &Path, log: Stdio) -> Proc {
    let endpoint = dir.join("data").join("admin.endpoint");
    let _ = std::fs::remove_file(&endpoint);
    let child = Command::new(CIVKITD)
        .args(["--config", "civkit.toml"])
        .current_dir(dir)
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn civkitd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoint.exists() {
        assert!(Instant::now() < deadline, "civkitd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc {
        child,
        dir: dir.to_path_buf(),
    }
}

/// Run civkit-cli in `dir`; returns (success, stdout, stderr).
pub fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CLI)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run civkit-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `civkit-cli --config civkit.toml --json status`.
pub fn status(dir: &Path) -> Value {
    let (ok, out, err) = cli(dir, &["--config", "civkit.toml", "--json", "status"]);
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).expect("status json")
}

pub fn relay_url(dir: &Path) -> String {
    status(dir)["endpoints"]["relay"]
        .as_str()
        .expect("relay endpoint")
        .to_string()
}

/// Run civkit-sample without blocking the async runtime; (success, stdout + stderr).
pub async fn sample_async<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    // A run that hangs (seen once over Tor, in CI) is killed after 200 s
    // and reported as failed, so a test's retry loop goes on.
    let run = tokio::process::Command::new(SAMPLE)
        .args(args)
        .kill_on_drop(true)
        .output();
    let Ok(out) = tokio::time::timeout(std::time::Duration::from_secs(200), run).await else {
        return (false, "civkit-sample did not finish within 200 s".into());
    };
    let out = out.expect("run civkit-sample");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Directories for `n` nodes of one board on the PostgreSQL database `db`:
/// each has a config with `extra` and a 1 s board lease, and the same
/// board secrets (the node key and each file of `secrets`), written as an
/// operator copies them to every node (mode 0600).
pub fn board(n: usize, db: &str, extra: &str, secrets: &[&str]) -> Vec<tempfile::TempDir> {
    use std::os::unix::fs::DirBuilderExt;
    let shared: Vec<(&str, String)> = std::iter::once("node.key")
        .chain(secrets.iter().copied())
        .map(|f| (f, nostr::Keys::generate().secret_key().to_secret_hex()))
        .collect();
    (0..n)
        .map(|_| {
            let t = tempfile::tempdir().expect("temp dir");
            let data = t.path().join("data");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&data)
                .expect("data dir");
            for (file, secret) in &shared {
                civkit_framework::keyfile::write_secret(&data.join(file), secret)
                    .expect("write a board secret");
            }
            let path = write_config(
                t.path(),
                &format!("[persister]\ntype = \"postgres\"\nurl = \"{db}\"\n{extra}"),
            );
            let text = std::fs::read_to_string(&path).expect("read config");
            std::fs::write(
                &path,
                text.replacen("[node]\n", "[node]\nlease_ttl_secs = 1\n", 1),
            )
            .expect("write config");
            t
        })
        .collect()
}

/// The node of `procs` that holds the board lease, once exactly one does.
pub fn leader(procs: &[&Proc]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: Vec<usize> = (0..procs.len())
            .filter(|i| status(&procs[*i].dir)["role"] == "leader")
            .collect();
        if let [one] = leaders[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A websocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// The next message other than `AUTH` and `NOTICE`, within 10 s.
pub async fn next_message(c: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("an answer within 10 s")
            .expect("the connection is open")
            .expect("a websocket message");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            if v[0] != "AUTH" && v[0] != "NOTICE" {
                return v;
            }
        }
    }
}

/// Send `event` and wait for its `OK`: (accepted, message).
pub async fn publish(c: &mut Ws, event: &nostr::Event) -> (bool, String) {
    use futures_util::SinkExt;
    let text = serde_json::json!(["EVENT", event]).to_string();
    c.send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .expect("send");
    loop {
        let v = next_message(c).await;
        if v[0] == "OK" && v[1] == event.id.to_hex() {
            return (v[2] == true, v[3].as_str().unwrap_or("").to_string());
        }
    }
}

/// Every stored event matching `filter` (its `limit` must cover them).
pub async fn fetch(c: &mut Ws, filter: nostr::Filter) -> Vec<nostr::Event> {
    use futures_util::SinkExt;
    use nostr::JsonUtil;
    let text = serde_json::json!(["REQ", "fetch", filter]).to_string();
    c.send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .expect("send");
    let mut out = Vec::new();
    loop {
        let v = next_message(c).await;
        match v[0].as_str() {
            Some("EVENT") => out.push(nostr::Event::from_json(v[2].to_string()).expect("event")),
            Some("EOSE") => return out,
            _ => panic!("{v}"),
        }
    }
}

/// `civkit-sample order create`: a sell order of 10 EUR by SEPA, id `id`.
pub async fn sell_order(home: &str, board: &str, id: &str) -> (bool, String) {
    sample_async(&[
        "--home",
        home,
        "--board",
        board,
        "order",
        "create",
        "--side",
        "sell",
        "--currency",
        "EUR",
        "--fiat-amount",
        "10",
        "--payment-method",
        "sepa",
        "--id",
        id,
    ])
    .await
}

/// Install a Python package from PyPI unless `import` already works.
pub fn python_module(import: &str, package: &str) {
    let have = Command::new("python3")
        .args(["-c", &format!("import {import}")])
        .status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", package])
        .status()
        .expect("python3 -m pip");
    assert!(status.success(), "could not install {package} from PyPI");
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
