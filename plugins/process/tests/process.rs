//! The plugin host with real plugins in Python and bash: the examples of
//! `plugins/examples/` and the misbehaving plugin of `tests/plugins/`,
//! with events from every kind of origin the transports make.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use civkit_framework::testing::{TestNode, WireClient};
use civkit_framework::{Clock, LocalOrigin, Node, Origin, Outgoing, SessionLimits, Source};
use civkit_plugin_process::{ProcessConfig, ProcessPlugin};
use nostr::{EventBuilder, Filter, Keys, Kind};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
const MISBEHAVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plugins/misbehave.py");

fn plugin(command: &[&str], adjust: impl FnOnce(&mut ProcessConfig)) -> Arc<ProcessPlugin> {
    let mut cfg = ProcessConfig {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..ProcessConfig::default()
    };
    adjust(&mut cfg);
    Arc::new(ProcessPlugin::new("policy", cfg))
}

fn node_with(p: Arc<ProcessPlugin>) -> TestNode {
    TestNode::builder().service("policy", p).build()
}

/// How often the misbehaving plugin started, by its log.
fn starts_in(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| *l == "start")
        .count()
}

fn note(keys: &Keys, content: &str) -> nostr::Event {
    EventBuilder::text_note(content)
        .sign_with_keys(keys)
        .unwrap()
}

/// Publish `event` in a session of `origin`: (accepted, message).
async fn publish_as(node: &Node, origin: Origin, event: &nostr::Event) -> (bool, String) {
    let (mut session, mut outbox) = node.open_session(origin, SessionLimits::default());
    session
        .handle_text(&serde_json::json!(["EVENT", event]).to_string())
        .await;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .expect("an OK within 10 s");
        if let Some(Outgoing::Message(text)) = next {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v[0] == "OK" {
                return (v[2] == true, v[3].as_str().unwrap_or("").to_string());
            }
        }
    }
}

#[tokio::test]
async fn whitelist_in_python_accepts_listed_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("whitelist.txt");
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    std::fs::write(&list, format!("{}\n", alice.public_key().to_hex())).unwrap();
    let whitelist = format!("{EXAMPLES}/whitelist.py");
    let n = node_with(plugin(
        &["python3", &whitelist, list.to_str().unwrap()],
        |_| {},
    ));
    let mut c = n.client().await;
    assert_eq!(
        c.publish(&note(&alice, "hello")).await,
        (true, String::new())
    );
    let (ok, msg) = c.publish(&note(&mallory, "spam")).await;
    assert!(!ok);
    assert_eq!(msg, "blocked: this key is not on the board's whitelist");
    // The operator's own events are not asked about (local = false).
    let reply = n
        .node
        .submit(LocalOrigin::admin(), note(&mallory, "operator"))
        .await;
    assert!(reply.accepted, "{}", reply.message);
    // Only the listed key's event and the operator's are stored.
    let stored = c.req("s", vec![Filter::new().kind(Kind::TextNote)]).await;
    assert_eq!(stored.len(), 2);
}

#[tokio::test]
async fn rate_limiter_in_bash_keeps_the_plugins_prefix() {
    let script = format!("{EXAMPLES}/rate_limit.sh");
    let n = node_with(plugin(&["bash", &script, "3", "3600"], |_| {}));
    let client = || {
        Origin::new(
            "relay",
            Source::Network {
                ip: Some("198.51.100.9".parse().unwrap()),
                via_tor: false,
            },
        )
    };
    let (busy, calm) = (Keys::generate(), Keys::generate());
    for i in 0..3 {
        let event = note(&busy, &format!("n{i}"));
        assert!(publish_as(&n.node, client(), &event).await.0);
    }
    let (ok, msg) = publish_as(&n.node, client(), &note(&busy, "one too many")).await;
    assert!(!ok);
    assert_eq!(msg, "rate-limited: at most 3 events per 3600 s");
    assert!(publish_as(&n.node, client(), &note(&calm, "hello")).await.0);
    // A federated board's events are not counted.
    let peer = Origin::new(
        "ln",
        Source::LightningPeer {
            node_id: "02bb".into(),
        },
    );
    assert!(publish_as(&n.node, peer, &note(&busy, "relayed")).await.0);
}

#[tokio::test]
async fn every_origin_reaches_the_plugin_with_strfrys_source_names() {
    let n = node_with(plugin(&["python3", MISBEHAVE], |c| c.local = true));
    let keys = Keys::generate();
    let origins = [
        (
            Origin::new(
                "relay",
                Source::Network {
                    ip: Some("203.0.113.7".parse().unwrap()),
                    via_tor: false,
                },
            ),
            ("IP4", "203.0.113.7"),
        ),
        (
            Origin::new(
                "relay",
                Source::Network {
                    ip: Some("2001:db8::7".parse().unwrap()),
                    via_tor: false,
                },
            ),
            ("IP6", "2001:db8::7"),
        ),
        (
            Origin::new(
                "relay",
                Source::Network {
                    ip: Some("127.0.0.1".parse().unwrap()),
                    via_tor: true,
                },
            ),
            ("Tor", ""),
        ),
        (
            Origin::new(
                "ln",
                Source::LightningPeer {
                    node_id: "02aa".into(),
                },
            ),
            ("Stream", "02aa"),
        ),
        (
            Origin::new(
                "onion",
                Source::OnionSender {
                    has_reply_path: true,
                },
            ),
            ("Onion", ""),
        ),
    ];
    for (i, (origin, (kind, info))) in origins.into_iter().enumerate() {
        let event = EventBuilder::text_note("source")
            .tag(nostr::Tag::parse(["n", &i.to_string()]).unwrap())
            .sign_with_keys(&keys)
            .unwrap();
        let (ok, msg) = publish_as(&n.node, origin, &event).await;
        assert!(!ok);
        let now = n.clock.now().as_secs();
        assert_eq!(msg, format!("blocked: {kind} {info} new {now}"));
    }
    let reply = n
        .node
        .submit(LocalOrigin::admin(), note(&keys, "source"))
        .await;
    assert!(
        reply.message.starts_with("blocked: Import admin new"),
        "{}",
        reply.message
    );
}

#[tokio::test]
async fn a_crashing_plugin_is_restarted_and_refusals_say_error() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let n = node_with(plugin(
        &["python3", MISBEHAVE, starts.to_str().unwrap()],
        |_| {},
    ));
    let mut c = n.client().await;
    let keys = Keys::generate();
    assert!(c.publish(&note(&keys, "first")).await.0);
    let (ok, msg) = c.publish(&note(&keys, "crash")).await;
    assert!(!ok);
    assert!(msg.starts_with("error: "), "{msg}");
    // While it restarts, events are refused at once with `error:`; then
    // the new process answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        let (ok, msg) = c.publish(&note(&keys, &format!("after {i}"))).await;
        if ok {
            break;
        }
        assert!(msg.starts_with("error: "), "{msg}");
        assert!(Instant::now() < deadline, "never restarted");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(starts_in(&starts), 2);
    // Output that is not an answer is skipped, not taken for one.
    assert!(c.publish(&note(&keys, "garbage")).await.0);
}

#[tokio::test]
async fn a_hanging_plugin_costs_one_timeout_and_blocks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let n = node_with(plugin(
        &["python3", MISBEHAVE, starts.to_str().unwrap()],
        |c| {
            c.timeout_ms = 500;
            c.kinds = vec![1];
        },
    ));
    let keys = Keys::generate();
    let mut hung = n.client().await;
    assert!(hung.publish(&note(&keys, "warm up")).await.0);
    let hanging = tokio::spawn(async move {
        let started = Instant::now();
        let r = hung.publish(&note(&Keys::generate(), "hang")).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A kind the plugin is not asked about passes at once.
    let mut other = n.client().await;
    let reaction = EventBuilder::new(Kind::Reaction, "+")
        .sign_with_keys(&keys)
        .unwrap();
    let started = Instant::now();
    assert!(other.publish(&reaction).await.0);
    let reaction_took = started.elapsed();
    // An event queued behind the hung one waits at most its own timeout.
    let started = Instant::now();
    let (_, msg) = other.publish(&note(&keys, "behind")).await;
    let behind_took = started.elapsed();
    let ((ok, hang_msg), hang_took) = hanging.await.unwrap();
    assert!(!ok);
    assert_eq!(
        hang_msg,
        "error: the board's policy plugin did not answer within 500 ms"
    );
    // Bounds with a wide margin for a loaded machine: the point is that
    // nothing waits for the hung process beyond the timeout.
    assert!(hang_took < Duration::from_secs(3), "{hang_took:?}");
    assert!(reaction_took < Duration::from_secs(2), "{reaction_took:?}");
    assert!(
        behind_took < Duration::from_secs(3),
        "{behind_took:?}: {msg}"
    );
    // The hung process was replaced.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if other.publish(&note(&keys, "later")).await.0 {
            break;
        }
        assert!(Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(starts_in(&starts), 2);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_rate_limited() {
    let n = node_with(plugin(&["python3", MISBEHAVE], |c| {
        c.timeout_ms = 2_000;
        c.queue = 2;
    }));
    // One hangs in the plugin, two wait; the rest find the queue full.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = n.client().await;
        tasks.push(tokio::spawn(async move {
            let content = if i == 0 {
                "hang".to_string()
            } else {
                format!("n{i}")
            };
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            c.publish(&note(&Keys::generate(), &content)).await
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (ok, msg) = t.await.unwrap();
        if msg == "rate-limited: the board's policy plugin is busy; retry later" {
            busy += 1;
        } else {
            assert!(!ok && msg.starts_with("error: "), "{msg}");
        }
    }
    assert!(busy >= 4, "{busy} refused as busy");
}

#[tokio::test]
async fn shadow_rejected_events_are_acknowledged_but_neither_stored_nor_sent() {
    let n = node_with(plugin(&["python3", MISBEHAVE], |_| {}));
    let mut watcher = n.client().await;
    assert!(watcher
        .req("live", vec![Filter::new().kind(Kind::TextNote)])
        .await
        .is_empty());
    let mut c = n.client().await;
    let keys = Keys::generate();
    assert_eq!(
        c.publish(&note(&keys, "shadow")).await,
        (true, String::new())
    );
    let kept = note(&keys, "kept");
    assert!(c.publish(&kept).await.0);
    // The watcher gets the kept event, and nothing before it.
    let v = watcher.recv_json().await;
    assert_eq!(v[2]["id"], kept.id.to_hex(), "{v}");
    let stored = c.req("s", vec![Filter::new().kind(Kind::TextNote)]).await;
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn a_plugin_that_cannot_start_refuses_with_error_and_the_node_runs() {
    let n = node_with(plugin(&["/nonexistent/plugin"], |c| c.max_backoff_secs = 1));
    let mut c = n.client().await;
    let keys = Keys::generate();
    for _ in 0..3 {
        let (ok, msg) = c.publish(&note(&keys, "x")).await;
        assert!(!ok);
        assert!(msg.starts_with("error: "), "{msg}");
    }
    let reply = n
        .node
        .submit(LocalOrigin::admin(), note(&keys, "operator"))
        .await;
    assert!(reply.accepted);
}

/// A plugin that writes 16 MB to stderr without a newline before it starts
/// answering: civkitd logs it in pieces (never holding the line whole) and
/// the plugin's answers still come through.
#[tokio::test]
async fn a_flood_on_stderr_without_newlines_does_not_stop_the_plugin() {
    let script = "head -c 16000000 /dev/zero | tr '\\0' x >&2; \
        while IFS= read -r line; do \
          [[ $line =~ \\\"id\\\":\\\"([0-9a-f]{64})\\\" ]] && \
          printf '{\"id\":\"%s\",\"action\":\"accept\"}\\n' \"${BASH_REMATCH[1]}\"; \
        done";
    let n = node_with(plugin(&["bash", "-c", script], |c| c.timeout_ms = 10_000));
    let mut c = n.client().await;
    let keys = Keys::generate();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, msg) = c.publish(&note(&keys, "after the flood")).await;
        if ok {
            break;
        }
        assert!(msg.starts_with("error: "), "{msg}");
        assert!(
            Instant::now() < deadline,
            "the plugin never answered: {msg}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
