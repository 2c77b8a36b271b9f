//! civkitd as a process: crash safety, identity, graceful shutdown, civkit-cli.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cli, connect as ws, fetch, relay_url, start, status, write_config, Ws};
use futures_util::{SinkExt, StreamExt};
use nostr::{EventBuilder, EventId, Filter, JsonUtil, Keys};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Stream each list of events on its own connection, collect the ids
/// answered `OK true`, and SIGKILL the node once `kill_after` are in.
async fn ingest_then_kill(
    proc: &mut common::Proc,
    url: &str,
    streams: Vec<Vec<nostr::Event>>,
    kill_after: usize,
) -> HashSet<EventId> {
    let total: usize = streams.iter().map(Vec::len).sum();
    let acked: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let mut tasks = Vec::new();
    for events in streams {
        let url = url.to_string();
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
        if n >= kill_after {
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
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < total, "the kill must land mid-ingest");
    acked
}

/// Four writers' notes, pre-signed so that the clients keep the relay busy.
fn note_streams() -> Vec<Vec<nostr::Event>> {
    (0..4)
        .map(|w| {
            let keys = Keys::generate();
            (0..1500)
                .map(|i| {
                    EventBuilder::text_note(format!("w{w} #{i}"))
                        .sign_with_keys(&keys)
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

/// How many of `ids` the relay at `url` does not serve.
async fn missing(url: &str, ids: &[EventId]) -> usize {
    let mut c = ws(url).await;
    let mut found = HashSet::new();
    for chunk in ids.chunks(400) {
        let f = Filter::new().ids(chunk.iter().copied()).limit(500);
        for e in fetch(&mut c, f).await {
            found.insert(e.id);
        }
    }
    ids.iter().filter(|id| !found.contains(id)).count()
}

/// Every id that was answered `OK true` before the SIGKILL is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    let mut proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let streams = note_streams();
    let acked: Vec<EventId> = ingest_then_kill(&mut proc, &url, streams, 1000)
        .await
        .into_iter()
        .collect();

    drop(proc);
    let _proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let lost = missing(&url, &acked).await;
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged events lost",
        acked.len()
    );
    eprintln!(
        "SIGKILL test: {} acknowledged events all present after restart",
        acked.len()
    );
}

/// Two civkitd processes on one PostgreSQL database: SIGKILL one during
/// ingest, and the other serves every event the killed one acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_node_loses_nothing_it_acknowledged_on_a_shared_store() {
    let db = civkit_postgres::testing::fresh_database();
    let dirs = common::board(2, &db, "", &[]);
    let (ta, tb) = (&dirs[0], &dirs[1]);
    let mut a = start(ta.path());
    let _b = start(tb.path());
    let streams = note_streams();
    let acked: Vec<EventId> = ingest_then_kill(&mut a, &relay_url(ta.path()), streams, 1000)
        .await
        .into_iter()
        .collect();
    let lost = missing(&relay_url(tb.path()), &acked).await;
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged events lost",
        acked.len()
    );
    eprintln!(
        "shared-store SIGKILL test: {} acknowledged events all served by the other node",
        acked.len()
    );
}

/// SIGKILL during replaceable, addressable and deletion traffic: every
/// acknowledged address holds its newest acknowledged version or a newer
/// one (never none), and nothing acknowledged as deleted comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_replacement_and_deletion_keeps_the_newest() {
    use nostr::{Kind, Tag, Timestamp};
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "");
    let mut proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let base = Timestamp::now().as_secs() - 3_000;
    let writers: Vec<Keys> = (0..4).map(|_| Keys::generate()).collect();
    // Per writer, in created_at order: a replaceable version, an addressable
    // version of one of three slots, a note, and a deletion (of the note
    // just sent, or of a slot's address).
    let slot = |i: u64| format!("slot{}", (i / 4) % 3);
    let mut sent = Vec::new();
    let streams: Vec<Vec<nostr::Event>> = writers
        .iter()
        .map(|k| {
            let mut out: Vec<nostr::Event> = Vec::new();
            for i in 0..1_200u64 {
                let at = Timestamp::from_secs(base + i);
                let b = match i % 4 {
                    0 => EventBuilder::new(Kind::from(10_002), format!("v{i}")),
                    1 => EventBuilder::new(Kind::from(30_078), format!("v{i}"))
                        .tag(Tag::identifier(slot(i))),
                    2 => EventBuilder::text_note(format!("n{i}")),
                    _ if i % 8 == 3 => {
                        let note = out.last().unwrap().id;
                        EventBuilder::new(Kind::EventDeletion, "").tag(Tag::event(note))
                    }
                    _ => {
                        let a = format!("30078:{}:{}", k.public_key(), slot(i - 2));
                        EventBuilder::new(Kind::EventDeletion, "")
                            .tag(Tag::parse(["a", a.as_str()]).unwrap())
                    }
                };
                out.push(b.custom_created_at(at).sign_with_keys(k).unwrap());
            }
            sent.extend(out.clone());
            out
        })
        .collect();
    let acked = ingest_then_kill(&mut proc, &url, streams, 1_500).await;

    drop(proc);
    let _proc = start(tmp.path());
    let url = relay_url(tmp.path());
    let mut c = ws(&url).await;
    let mut stored = Vec::new();
    for k in writers {
        for kind in [10_002u16, 30_078, 1, 5] {
            let f = Filter::new()
                .author(k.public_key())
                .kind(Kind::from(kind))
                .limit(500);
            stored.extend(fetch(&mut c, f).await);
        }
    }
    let stored_ids: HashSet<EventId> = stored.iter().map(|e| e.id).collect();
    let address = |e: &nostr::Event| {
        let d = e.tags.identifier().unwrap_or_default().to_string();
        (e.pubkey, e.kind.as_u16(), d)
    };
    let acked_events: Vec<&nostr::Event> = sent.iter().filter(|e| acked.contains(&e.id)).collect();
    // Newest address deletion per address, among those acknowledged and
    // among all sent (an unacknowledged one may still have been stored).
    let deletions_until = |events: &mut dyn Iterator<Item = &nostr::Event>| {
        let mut until = std::collections::HashMap::new();
        for e in events.filter(|e| e.kind == Kind::EventDeletion) {
            for t in e.tags.iter().filter(|t| t.as_slice()[0] == "a") {
                let d = t.as_slice()[1].splitn(3, ':').nth(2).unwrap().to_string();
                let at = until
                    .entry((e.pubkey, 30_078u16, d))
                    .or_insert(e.created_at);
                *at = (*at).max(e.created_at);
            }
        }
        until
    };
    let acked_until = deletions_until(&mut acked_events.iter().copied());
    let sent_until = deletions_until(&mut sent.iter());
    let mut checked = 0;
    for v in acked_events
        .iter()
        .filter(|e| [10_002, 30_078].contains(&e.kind.as_u16()))
    {
        let addr = address(v);
        let held: Vec<_> = stored.iter().filter(|e| address(e) == addr).collect();
        assert!(held.len() <= 1, "two versions at one address: {held:?}");
        if let Some(t) = acked_until.get(&addr) {
            assert!(
                held.iter().all(|h| h.created_at > *t),
                "a version deleted by an acknowledged deletion came back"
            );
        }
        if sent_until.get(&addr).is_some_and(|t| *t >= v.created_at) {
            continue; // may be deleted since
        }
        let h = held
            .first()
            .unwrap_or_else(|| panic!("acknowledged address {addr:?} is empty"));
        assert!(
            h.created_at >= v.created_at,
            "an older version than acknowledged"
        );
        checked += 1;
    }
    // Notes deleted by an acknowledged deletion stay deleted; other
    // acknowledged notes are there.
    let targeted: HashSet<EventId> = sent
        .iter()
        .filter(|e| e.kind == Kind::EventDeletion)
        .flat_map(|e| e.tags.event_ids().copied().collect::<Vec<_>>())
        .collect();
    for d in acked_events
        .iter()
        .filter(|e| e.kind == Kind::EventDeletion)
    {
        for id in d.tags.event_ids() {
            assert!(
                !stored_ids.contains(id),
                "an acknowledged deletion was undone"
            );
        }
    }
    for n in acked_events.iter().filter(|e| e.kind == Kind::TextNote) {
        if !targeted.contains(&n.id) {
            assert!(stored_ids.contains(&n.id), "acknowledged note lost");
        }
    }
    assert!(checked > 100, "too few live addresses checked: {checked}");
    eprintln!(
        "SIGKILL replacement test: {} acknowledged, {checked} address versions checked",
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
