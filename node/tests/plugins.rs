//! A strfry-style policy plugin (Python) in a running civkitd, with
//! traffic from a websocket client, a federated board over BOLT8 and the
//! operator; one request crashes it and one hangs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::{Duration, Instant};

use nostr::{EventBuilder, Keys};

const MISBEHAVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../plugins/process/tests/plugins/misbehave.py"
);

fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait until the plugin's log has `line`.
fn wait_for(path: &std::path::Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_lines(path).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "no `{line}` in {:?}",
            log_lines(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publish until the plugin, restarted, accepts again; until then every
/// refusal is `error:`.
async fn accepted_again(ws: &mut common::Ws, note: &impl Fn(&str) -> nostr::Event) {
    static TRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = TRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Unique, so that it is never a duplicate, which skips the plugin.
        let (ok, msg) = common::publish(ws, &note(&format!("after {n}"))).await;
        if ok {
            return;
        }
        assert!(msg.starts_with("error: "), "{msg}");
        assert!(Instant::now() < deadline, "the plugin never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_every_transport_and_survives_crashes_and_hangs() {
    let ln = "[transports.ln]\ntype = \"bolt8\"\nlisten = \"127.0.0.1:0\"\n";
    let a_dir = tempfile::tempdir().unwrap();
    common::write_config(
        a_dir.path(),
        &format!("{ln}stranger_export = [{{ kinds = [1] }}]\n"),
    );
    let _a = common::start(a_dir.path());
    let a_ln = common::status(a_dir.path())["endpoints"]["ln"]
        .as_str()
        .unwrap()
        .trim_start_matches("ln://")
        .to_string();
    let a_id = a_ln.split('@').next().unwrap().to_string();

    let b_dir = tempfile::tempdir().unwrap();
    let log = b_dir.path().join("plugin.log");
    common::write_config(
        b_dir.path(),
        &format!(
            "{ln}[[transports.ln.peers]]\naddress = \"{a_ln}\"\nimport = [{{ kinds = [1] }}]\n\n\
             [services.policy]\ntype = \"process-plugin\"\ncommand = [\"python3\", \"{MISBEHAVE}\", \"{}\"]\n\
             timeout_ms = 1000\nlocal = true\n",
            log.display()
        ),
    );
    let _b = common::start(b_dir.path());
    let keys = Keys::generate();
    let note = |text: &str| EventBuilder::text_note(text).sign_with_keys(&keys).unwrap();

    // A websocket client of B.
    let mut ws = common::connect(&common::relay_url(b_dir.path())).await;
    assert_eq!(
        common::publish(&mut ws, &note("hello")).await,
        (true, String::new())
    );
    wait_for(&log, "req IP4 127.0.0.1");

    // An event published on A reaches B over BOLT8, through the plugin.
    let mut on_a = common::connect(&common::relay_url(a_dir.path())).await;
    let federated = note("from a");
    assert!(common::publish(&mut on_a, &federated).await.0);
    wait_for(&log, &format!("req Stream {a_id}"));

    // The operator's note, through the admin API.
    let (ok, out, err) = common::cli(
        b_dir.path(),
        &["--config", "civkit.toml", "publish-note", "operator"],
    );
    assert!(ok, "{out}{err}");
    wait_for(&log, "req Import admin");

    // A crash: that event is refused with error:, the plugin restarts.
    let (ok, msg) = common::publish(&mut ws, &note("crash")).await;
    assert!(!ok && msg.starts_with("error: "), "{msg}");
    accepted_again(&mut ws, &note).await;
    // A hang: refused when the timeout ends; the node answers others meanwhile.
    let hanging = {
        let url = common::relay_url(b_dir.path());
        let event = note("hang");
        tokio::spawn(async move {
            let mut c = common::connect(&url).await;
            common::publish(&mut c, &event).await
        })
    };
    let stored = common::fetch(&mut ws, nostr::Filter::new().kind(nostr::Kind::TextNote)).await;
    assert!(stored.iter().any(|e| e.content == "hello"));
    let (ok, msg) = hanging.await.unwrap();
    assert!(!ok);
    assert_eq!(
        msg,
        "error: the board's policy plugin did not answer within 1000 ms"
    );
    accepted_again(&mut ws, &note).await;
    let starts = log_lines(&log).iter().filter(|l| *l == "start").count();
    assert_eq!(starts, 3, "{:?}", log_lines(&log));
    // B holds the federated event, which the plugin accepted.
    // (A fresh connection: the first one's subscription is still live.)
    let mut fresh = common::connect(&common::relay_url(b_dir.path())).await;
    let stored = common::fetch(&mut fresh, nostr::Filter::new().id(federated.id)).await;
    assert_eq!(stored.len(), 1);
}
