//! civkitd as a process: crash safety, identity, graceful shutdown, civkit-cli.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cli, relay_url, start, status, write_config};
use futures_util::{SinkExt, StreamExt};
use nostr::{EventBuilder, EventId, Filter, JsonUtil, Keys};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Every id that was answered `OK true` before the SIGKILL is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    let mut proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let acked: Arc<Mutex<HashSet<EventId>>> = Arc::default();

    // Pre-sign events so the clients keep the relay busy.
    let writers = 4;
    let per_writer = 1500;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let keys = Keys::generate();
        let events: Vec<_> = (0..per_writer)
            .map(|i| {
                EventBuilder::text_note(format!("w{w} #{i}"))
                    .sign_with_keys(&keys)
                    .unwrap()
            })
            .collect();
        let url = url.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let c = ws(&url).await;
            let (mut tx, mut rx) = c.split();
            let sender = tokio::spawn(async move {
                for e in events {
                    if tx
                        .send(Message::Text(json!(["EVENT", e]).to_string().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if v[0] == "OK" && v[2] == true {
                        if let Ok(id) = EventId::from_hex(v[1].as_str().unwrap_or("")) {
                            acked.lock().unwrap().insert(id);
                        }
                    }
                }
            }
            sender.abort();
        }));
    }
    // Kill in the middle of the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = acked.lock().unwrap().len();
        if n >= 1000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest too slow: {n} acked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proc.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    proc.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acked: Vec<EventId> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() < writers * per_writer,
        "the kill must land mid-ingest"
    );

    drop(proc);
    let _proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let mut c = ws(&url).await;
    let mut found = HashSet::new();
    for (n, chunk) in acked.chunks(400).enumerate() {
        let f = Filter::new().ids(chunk.iter().copied()).limit(500);
        let sub = format!("check{n}");
        c.send(Message::Text(json!(["REQ", sub, f]).to_string().into()))
            .await
            .unwrap();
        loop {
            let v = next_json(&mut c).await.expect("reply");
            if v[0] == "EVENT" {
                found.insert(EventId::from_hex(v[2]["id"].as_str().unwrap()).unwrap());
            } else if v[0] == "EOSE" && v[1] == sub.as_str() {
                break;
            }
        }
    }
    let lost: Vec<_> = acked.iter().filter(|id| !found.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "SIGKILL test: {} acknowledged events all present after restart",
        acked.len()
    );
}

#[test]
fn node_key_is_created_0600_kept_across_restarts_and_shutdown_is_graceful() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    let first = start(tmp.path());
    let data = tmp.path().join("data");
    let mode = |p: &str| {
        std::fs::metadata(data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("node.key"), 0o600);
    assert_eq!(mode("admin.cookie"), 0o600);
    let pubkey = status(tmp.path())["pubkey"].as_str().unwrap().to_string();

    // SIGTERM: clean exit, admin files removed.
    let pid = first.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut first = first;
    let code = first.child.wait().unwrap();
    assert!(code.success(), "civkitd exited with {code}");
    assert!(!data.join("admin.cookie").exists());
    let (ok, _, err) = cli(tmp.path(), &["--config", "civkit.toml", "status"]);
    assert!(!ok && err.contains("does not seem to be running"), "{err}");

    let _second = start(tmp.path());
    assert_eq!(
        status(tmp.path())["pubkey"].as_str().unwrap(),
        pubkey,
        "same identity"
    );
}

#[test]
fn refuses_a_node_key_readable_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    drop(start(tmp.path()));
    let key = tmp.path().join("data/node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(common::CIVKITD)
        .args(["--config", "civkit.toml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_connections_query_delete_and_publish() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    let _proc = start(tmp.path());
    let dir = tmp.path();
    let url = relay_url(dir);
    let mut c = ws(&url).await;
    let _auth = next_json(&mut c).await;
    let e = EventBuilder::text_note("from a client")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    c.send(Message::Text(json!(["EVENT", e]).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut c).await.unwrap()[2], true);

    let st = status(dir);
    assert_eq!(st["connections"]["relay"], 1);
    assert_eq!(st["events_stored"], 1);
    assert!(st["store_bytes"].as_u64().unwrap() > 0);

    let (ok, out, _) = cli(dir, &["--config", "civkit.toml", "connections"]);
    assert!(
        ok && out.contains("relay") && out.contains("127.0.0.1"),
        "{out}"
    );

    let (ok, out, _) = cli(
        dir,
        &[
            "--config",
            "civkit.toml",
            "publish-note",
            "hello from the operator",
        ],
    );
    assert!(ok && out.contains("accepted"), "{out}");
    let (ok, out, _) = cli(
        dir,
        &[
            "--config",
            "civkit.toml",
            "events",
            "query",
            r#"{"kinds":[1]}"#,
        ],
    );
    assert!(ok);
    let events: Vec<nostr::Event> = out
        .lines()
        .map(|l| nostr::Event::from_json(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    let note = events
        .iter()
        .find(|x| x.content == "hello from the operator")
        .unwrap();
    assert_eq!(
        note.pubkey.to_hex(),
        st["pubkey"].as_str().unwrap(),
        "signed by the node key"
    );

    let (ok, out, _) = cli(
        dir,
        &[
            "--config",
            "civkit.toml",
            "events",
            "delete",
            &e.id.to_hex(),
        ],
    );
    assert!(ok && out.contains("deleted 1"), "{out}");
    assert_eq!(status(dir)["events_stored"], 1);

    let (ok, _, err) = cli(
        dir,
        &["--config", "civkit.toml", "events", "query", "{nope"],
    );
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    let (ok, _, err) = cli(dir, &["--config", "civkit.toml", "events", "delete", "xyz"]);
    assert!(!ok && err.contains("bad event id"), "{err}");

    // With no flags it finds the daemon by the defaults, from the right directory.
    let (ok, _, err) = cli(dir, &["status"]);
    assert!(
        !ok && err.contains("./civkit-data"),
        "defaults point at ./civkit-data: {err}"
    );
    let (ok, out, _) = cli(dir, &["--data-dir", "data", "status"]);
    assert!(ok && out.contains("events stored"), "{out}");

    std::fs::write(dir.join("data/admin.cookie"), "forged").unwrap();
    let (ok, _, err) = cli(dir, &["--data-dir", "data", "status"]);
    assert!(!ok && err.contains("cookie"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |cfg: &str, env: &[(&str, &str)]| {
        std::fs::write(tmp.path().join("bad.toml"), cfg).unwrap();
        let out = std::process::Command::new(common::CIVKITD)
            .args(["--config", "bad.toml"])
            .envs(env.iter().copied())
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let base = "[node]\ndata_dir = \"d\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let err = run(
        &format!("{base}[transports.relay]\ntype = \"nostr-ws\"\nlisen = \"x\"\n"),
        &[],
    );
    assert!(err.contains("transports.relay.lisen"), "{err}");
    let err = run(
        &format!("{base}[transports.relay]\ntype = \"nostr-ws\"\nlisten = 5\n"),
        &[],
    );
    assert!(err.contains("transports.relay.listen"), "{err}");
    let err = run(
        &format!("{base}[transports.relay]\ntype = \"websocket\"\n"),
        &[],
    );
    assert!(
        err.contains("transports.relay.type") && err.contains("nostr-ws"),
        "{err}"
    );
    let err = run(&format!("{base}[nodes]\nx = 1\n"), &[]);
    assert!(err.contains("nodes"), "{err}");
    let err = run(
        &format!("{base}[services.spam]\ntype = \"pow\"\nmin_difficulty = 999\n"),
        &[],
    );
    assert!(err.contains("services.spam.min_difficulty"), "{err}");
    let ok_cfg = format!("{base}[transports.relay]\ntype = \"nostr-ws\"\n");
    let err = run(&ok_cfg, &[("CIVKIT_TRANSPORTS__RELAY__LISTEN", "nope")]);
    assert!(
        err.contains("transports.relay.listen"),
        "environment layer: {err}"
    );
    let err = run(&ok_cfg, &[("CIVKIT_ADMIN__LISTEN", "0.0.0.0:7778")]);
    assert!(
        err.contains("admin.listen") && err.contains("loopback"),
        "{err}"
    );
}

#[test]
fn cli_manages_lightning_peers_and_the_ln_identity_survives_restart() {
    let ln = "[transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n";
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_config(a_dir.path(), ln);
    write_config(b_dir.path(), ln);
    let a = start(a_dir.path());
    let _b = start(b_dir.path());
    let ln_of = |dir: &std::path::Path| {
        status(dir)["endpoints"]["ln"]
            .as_str()
            .unwrap()
            .trim_start_matches("ln://")
            .to_string()
    };
    let (a_ln, b_ln) = (ln_of(a_dir.path()), ln_of(b_dir.path()));
    assert_eq!(
        std::fs::metadata(a_dir.path().join("data/ln_node.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let (ok, out, err) = cli(
        a_dir.path(),
        &["--config", "civkit.toml", "peers", "connect", &b_ln],
    );
    assert!(ok && out.contains("\"connected\":true"), "{out}{err}");
    let (ok, out, _) = cli(a_dir.path(), &["--config", "civkit.toml", "peers", "list"]);
    let b_id = b_ln.split('@').next().unwrap();
    assert!(
        ok && out.contains(b_id) && out.contains("connected"),
        "{out}"
    );
    let (ok, out, _) = cli(b_dir.path(), &["--config", "civkit.toml", "peers", "list"]);
    assert!(
        ok && out.contains(a_ln.split('@').next().unwrap()),
        "the other side sees it too: {out}"
    );
    let (ok, out, err) = cli(
        a_dir.path(),
        &["--config", "civkit.toml", "peers", "connect", "nonsense"],
    );
    assert!(!ok && err.contains("node id"), "{out}{err}");
    let (ok, out, _) = cli(
        a_dir.path(),
        &["--config", "civkit.toml", "peers", "disconnect", b_id],
    );
    assert!(ok && out.contains("\"was_connected\":true"), "{out}");

    drop(a);
    let _a = start(a_dir.path());
    assert_eq!(
        ln_of(a_dir.path()).split('@').next(),
        a_ln.split('@').next(),
        "the Lightning node id is kept across restarts"
    );
}
