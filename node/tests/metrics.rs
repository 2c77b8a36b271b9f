//! The Prometheus endpoint, scraped while clients publish, and every scrape
//! parsed by an independent parser: the `prometheus_client` package from
//! PyPI (its OpenMetrics parser).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nostr::{EventBuilder, Keys, Kind};
use serde_json::{json, Value};

const TOKEN: &str = "scrape-token-0123456789abcdef";

const PARSER: &str = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [
        [s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
        for s in f.samples]}
print(json.dumps(out))
"#;

/// The families of `text`, as the Python parser reads them (it raises on
/// anything that is not valid OpenMetrics).
fn parse(text: &str) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// GET /metrics with `token`: (status, content type, body).
async fn scrape(port: u16, token: Option<&str>) -> (u16, String, String) {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::get(&url).timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(r) => (
                r.status(),
                r.content_type().to_string(),
                r.into_string().unwrap(),
            ),
            Err(ureq::Error::Status(code, r)) => (code, String::new(), r.into_string().unwrap()),
            Err(e) => (0, String::new(), e.to_string()),
        }
    })
    .await
    .unwrap()
}

/// The value of the sample `name` with exactly `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: Value) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}: {families}"))
        .iter()
        .find(|s| s[0] == name && s[1] == labels)
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name}{labels}: {}", families[family]))
}

fn token_file(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("metrics.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_under_load_and_parsed_by_prometheus_client() {
    common::python_module("prometheus_client", "prometheus-client");
    let dir = tempfile::tempdir().unwrap();
    token_file(dir.path(), 0o600);
    let port = common::free_port();
    common::write_config(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"metrics.token\"\n"),
    );
    let _node = common::start(dir.path());
    let url = common::relay_url(dir.path());

    // No token, a wrong one, a token without the scheme: refused.
    for token in [None, Some("scrape-token-0123456789abcdeX"), Some("")] {
        let (status, _, body) = scrape(port, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(!body.contains("civkit_"), "{body}");
    }

    // Four clients publish 150 events each, every tenth one forged, while
    // the endpoint is scraped; every scrape must parse.
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut ws = common::connect(&url).await;
                let keys = Keys::generate();
                let mut refused = 0;
                for i in 0..150 {
                    let event = EventBuilder::text_note(format!("note {i}"))
                        .sign_with_keys(&keys)
                        .unwrap();
                    let (ok, msg) = if i % 10 == 9 {
                        let mut forged = serde_json::to_value(&event).unwrap();
                        forged["content"] = "forged".into();
                        let forged: nostr::Event = serde_json::from_value(forged).unwrap();
                        common::publish(&mut ws, &forged).await
                    } else {
                        common::publish(&mut ws, &event).await
                    };
                    if !ok {
                        assert!(msg.starts_with("invalid:"), "{msg}");
                        refused += 1;
                    }
                }
                (refused, ws)
            })
        })
        .collect();
    let mut scrapes = 0;
    while !publishers.iter().all(|p| p.is_finished()) {
        let (status, content_type, body) = scrape(port, Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        parse(&body);
        scrapes += 1;
    }
    let mut held = Vec::new();
    for p in publishers {
        let (refused, ws) = p.await.unwrap();
        assert_eq!(refused, 15);
        held.push(ws);
    }
    // An ephemeral event and a message that is not an event.
    let mut ws = common::connect(&url).await;
    let ephemeral = EventBuilder::new(Kind::Custom(20_001), "live")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    assert!(common::publish(&mut ws, &ephemeral).await.0);
    {
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            r#"["EVENT",{"id":"00"}]"#.into(),
        ))
        .await
        .unwrap();
        // A subscription that stays open.
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            r#"["REQ","open",{"kinds":[30402]}]"#.into(),
        ))
        .await
        .unwrap();
    }
    // The malformed event's NOTICE and the REQ's EOSE come back in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = common::next_message(&mut ws).await;
        if v[0] == "EOSE" || Instant::now() > deadline {
            break;
        }
    }

    let (status, _, body) = scrape(port, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let f = parse(&body);
    eprintln!("{scrapes} scrapes during the load");
    let relay = |class: &str| json!({"transport": "relay", "kind_class": class});
    assert_eq!(
        sample(
            &f,
            "civkit_events_received",
            "civkit_events_received_total",
            relay("regular")
        ),
        600.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_events_accepted",
            "civkit_events_accepted_total",
            relay("regular")
        ),
        540.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_events_rejected",
            "civkit_events_rejected_total",
            json!({"transport": "relay", "kind_class": "regular", "reason": "invalid"})
        ),
        60.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_events_accepted",
            "civkit_events_accepted_total",
            relay("ephemeral")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_events_rejected",
            "civkit_events_rejected_total",
            json!({"transport": "relay", "kind_class": "unknown", "reason": "invalid"})
        ),
        1.0
    );
    assert_eq!(f["civkit_ingest_seconds"]["type"], "histogram");
    assert_eq!(
        sample(
            &f,
            "civkit_ingest_seconds",
            "civkit_ingest_seconds_count",
            json!({})
        ),
        601.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_fanout_seconds",
            "civkit_fanout_seconds_count",
            json!({})
        ),
        541.0
    );
    assert_eq!(
        sample(&f, "civkit_store_events", "civkit_store_events", json!({})),
        540.0
    );
    assert!(
        sample(
            &f,
            "civkit_store_size_bytes",
            "civkit_store_size_bytes",
            json!({})
        ) > 0.0
    );
    let persister = json!({"instance": "persister"});
    let batches = sample(
        &f,
        "civkit_store_write_batch_size",
        "civkit_store_write_batch_size_count",
        persister.clone(),
    );
    let writes = sample(
        &f,
        "civkit_store_write_batch_size",
        "civkit_store_write_batch_size_sum",
        persister.clone(),
    );
    assert!(
        batches >= 1.0 && writes >= 540.0,
        "{batches} batches, {writes} writes"
    );
    assert!(
        sample(
            &f,
            "civkit_store_fsync_seconds",
            "civkit_store_fsync_seconds_count",
            persister
        ) >= 1.0
    );
    let transport = json!({"transport": "relay"});
    assert_eq!(
        sample(
            &f,
            "civkit_connections",
            "civkit_connections",
            transport.clone()
        ),
        5.0
    );
    assert_eq!(
        sample(
            &f,
            "civkit_subscriptions",
            "civkit_subscriptions",
            transport
        ),
        1.0
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_keep_scrapers_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    common::write_config(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _node = common::start(dir.path());
    // More silent connections than the endpoint serves at once.
    let mut silent = Vec::new();
    for _ in 0..64 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            silent.push(s);
        }
    }
    // They are closed after the 10 s header deadline; a scraper is served.
    let started = Instant::now();
    loop {
        let (status, _, body) = scrape(port, None).await;
        if status == 200 {
            assert!(body.contains("civkit_ingest_seconds"), "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never served: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(silent);
}

#[test]
fn unsafe_metrics_settings_are_refused_at_start() {
    let cases: [(&str, u32, &str); 3] = [
        // Another host could scrape without the operator saying so.
        ("listen = \"0.0.0.0:0\"\n", 0o600, "allow_remote"),
        // A token others can read.
        (
            "listen = \"127.0.0.1:0\"\ntoken_file = \"metrics.token\"\n",
            0o644,
            "chmod 600",
        ),
        // A token file that is not there.
        (
            "listen = \"127.0.0.1:0\"\ntoken_file = \"missing.token\"\n",
            0o600,
            "token_file",
        ),
    ];
    for (section, mode, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        token_file(dir.path(), mode);
        common::write_config(dir.path(), &format!("[metrics]\n{section}"));
        let out = Command::new(common::CIVKITD)
            .args(["--config", "civkit.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{section}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains("metrics"),
            "{section}: {err}"
        );
    }
}
