//! `civkitd example-config` covers every key of every registered component,
//! builds, and matches the committed `civkit.example.toml`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::collections::BTreeSet;

use civkit_framework::BuildContext;
use civkit_node::config::{example_config, AdminSection, NodeSection};
use civkit_node::{components, Config};
use serde_json::Value;

/// Dotted paths of every leaf key.
fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() {
                keys(v, &p, out);
            } else {
                out.insert(p);
            }
        }
    }
}

fn table_keys(v: &Value) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    keys(v, "", &mut s);
    s.remove("type");
    s
}

#[test]
fn example_covers_every_key_and_builds() {
    let registry = components::registry();
    let text = example_config(&registry);
    let parsed: Value = toml::from_str::<toml::Value>(&text)
        .map(|t| serde_json::to_value(t).unwrap())
        .expect("the example parses as TOML");

    assert_eq!(
        table_keys(&parsed["node"]),
        table_keys(&serde_json::to_value(NodeSection::default()).unwrap())
    );
    assert_eq!(
        table_keys(&parsed["admin"]),
        table_keys(&serde_json::to_value(AdminSection::default()).unwrap())
    );
    for (kind, info) in registry.list() {
        let mut table = match kind.section() {
            // One store is live in the example; the others are commented
            // out, so their keys are read from their own example text.
            "persister" if parsed["persister"]["type"] != info.type_name => {
                let mut t =
                    serde_json::to_value(toml::from_str::<toml::Value>(info.example).unwrap())
                        .unwrap();
                t["type"] = info.type_name.into();
                assert!(text.contains(&format!("# type = \"{}\"", info.type_name)));
                t
            }
            "persister" => parsed["persister"].clone(),
            section => parsed[section][civkit_node::config::instance_name(info.type_name)].clone(),
        };
        assert_eq!(table["type"], info.type_name);
        if kind == civkit_framework::ComponentKind::Service {
            let order = table.as_object_mut().unwrap().remove("order");
            assert!(
                order.is_some_and(|o| o.is_i64()),
                "`{}` has no order",
                info.type_name
            );
        }
        let table = &table;
        let want = table_keys(&(info.defaults)().unwrap());
        assert_eq!(
            table_keys(table),
            want,
            "example of `{}` must list every key",
            info.type_name
        );
    }

    // What an operator must fill in: the slot's staychain start.
    let text = text.replace(
        "staychain_start = \"\"",
        &format!("staychain_start = \"{}\"", "ab".repeat(32)),
    );
    let cfg = Config::from_toml(&text).expect("the example is a valid config");
    let dir = tempfile::tempdir().unwrap();
    // Files an operator provides (the Mainstay slot token).
    civkit_framework::keyfile::write_secret(&dir.path().join("mainstay.token"), "token").unwrap();
    let metrics = civkit_framework::Metrics::new();
    let ctx = |name: &str| BuildContext {
        node_metrics: metrics.clone(),
        ..BuildContext::new(dir.path(), name, nostr::Keys::generate())
    };
    let built = civkit_node::daemon::build_components(&cfg, &registry, &ctx)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(built.transports.len(), cfg.transports.len());
    assert_eq!(built.services.len(), cfg.services.len());
    // A node of these parts, with one client that subscribes, publishes an
    // event and a forged one: every family then has a series.
    let exposition = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut node = civkit_framework::NodeBuilder::new(built.persister, nostr::Keys::generate())
            .metrics(metrics.clone());
        for (name, service) in built.services {
            node = node.service(name, service);
        }
        let node = node.build();
        let origin =
            civkit_framework::Origin::new("relay", civkit_framework::Source::Memory { client: 1 });
        let (mut session, _outbox) = node.open_session(origin, Default::default());
        let event = nostr::EventBuilder::text_note("hello")
            .sign_with_keys(&nostr::Keys::generate())
            .unwrap();
        let mut forged = serde_json::to_value(&event).unwrap();
        forged["content"] = "changed".into();
        session.handle_text(r#"["REQ","s",{"kinds":[1]}]"#).await;
        session
            .handle_text(&serde_json::json!(["EVENT", event]).to_string())
            .await;
        session
            .handle_text(&serde_json::json!(["EVENT", forged]).to_string())
            .await;
        node.scrape_metrics().await
    });
    grafana_dashboard_uses_only_metrics_that_exist(&exposition);
}

/// Every metric the dashboard in `docs/grafana/` queries is one a node
/// built from the example (every component) exposes.
fn grafana_dashboard_uses_only_metrics_that_exist(exposition: &str) {
    let families: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/civkit-board.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("civkit_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
                    .unwrap_or(&name);
                assert!(
                    families.contains(family),
                    "the dashboard's panel `{}` uses {name}, which no component exposes; families: {families:?}",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 20, "{used}");
}

#[test]
fn committed_example_is_current() {
    let text = example_config(&components::registry());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../civkit.example.toml");
    let committed =
        std::fs::read_to_string(path).expect("civkit.example.toml at the repository root");
    assert_eq!(
        committed, text,
        "civkit.example.toml is stale: regenerate it with `cargo run --bin civkitd -- example-config > civkit.example.toml`"
    );
}
