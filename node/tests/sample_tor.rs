//! civkitd as an onion service and civkit-sample over Tor, on the private
//! Tor network (tests/tor/network.sh): the `.onion` URL in `civkit-cli
//! status`, an order published with `civkit-sample --tor` to the `.onion`
//! board, the same order seen by a clearnet reader of the board, and by a
//! second board that federates with the first over BOLT8 through its
//! `.onion` address only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::{Duration, Instant};

use civkit_tor::testing::Network;
use common::{relay_url, start, start_logged, status, write_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civkit_sample_publishes_to_an_onion_board_over_tor() {
    let net = Network::start();
    let dir = tempfile::tempdir().unwrap();
    let tor = json!({ "transports": {
        "tor": { "type": "tor", "via": "relay", "arti": net.arti(), "ports": { "lightning": 9735 } },
        "lightning": { "type": "bolt8", "listen": "127.0.0.1:0", "stranger_export": [{}] },
    } });
    // A strfry-style policy plugin logs where each event came from.
    let plugin_log = dir.path().join("plugin.log");
    write_config(
        dir.path(),
        &format!(
            "[services.board]\ntype = \"market-board\"\norder = 1\n\
             [services.policy]\ntype = \"process-plugin\"\norder = 2\n\
             command = [\"python3\", \"{}/../plugins/process/tests/plugins/misbehave.py\", \"{}\"]\n{}",
            env!("CARGO_MANIFEST_DIR"),
            plugin_log.display(),
            toml::to_string(&tor).unwrap()
        ),
    );
    let _board = start(dir.path());
    let clearnet = relay_url(dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    let onion = loop {
        if let Some(u) = status(dir.path())["endpoints"]["tor"].as_str() {
            break u.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "civkitd's onion service did not launch in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(onion.ends_with(".onion"), "{onion}");
    // Its BOLT8 side is announced at the onion address too.
    let host = onion.trim_start_matches("ws://");
    let ln_onion = status(dir.path())["endpoints"]["tor.lightning"]
        .as_str()
        .expect("the bolt8 transport's onion endpoint")
        .trim_start_matches("ln://")
        .to_string();
    assert!(ln_onion.ends_with(&format!("@{host}:9735")), "{ln_onion}");

    // A second board imports orders from the first, dialing its onion
    // address through its own Tor client. It reaches out through Tor only:
    // its websocket and BOLT8 ports are never opened.
    let peer_dir = tempfile::tempdir().unwrap();
    let (ws_port, ln_port) = (common::free_port(), common::free_port());
    let peer = json!({ "transports": {
        "tor": { "type": "tor", "via": "relay", "arti": net.arti(), "outbound_only": true },
        "ln": {
            "type": "bolt8",
            "listen": format!("127.0.0.1:{ln_port}"),
            "redial_max_secs": 5,
            "peers": [{ "address": ln_onion, "import": [{ "kinds": [38383] }] }],
        },
    } });
    std::fs::write(
        peer_dir.path().join("civkit.toml"),
        format!(
            "[node]\ndata_dir = \"data\"\nlog = \"info\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:{ws_port}\"\n\
             [services.board]\ntype = \"market-board\"\n{}",
            toml::to_string(&peer).unwrap()
        ),
    )
    .unwrap();
    let _peer_board = start_logged(peer_dir.path());
    let endpoints = status(peer_dir.path())["endpoints"].clone();
    assert!(
        endpoints.get("relay").is_none() && endpoints.get("ln").is_none(),
        "no clearnet endpoint: {endpoints}"
    );
    for port in [ws_port, ln_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port}"
        );
    }

    let arti = dir.path().join("arti.toml");
    std::fs::write(&arti, toml::to_string(&net.arti()).unwrap()).unwrap();
    let home = dir.path().join("maker").display().to_string();
    let arti = arti.display().to_string();
    // The descriptor takes a moment to reach the HSDirs: retry.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (ok, out) = common::sample_async(&[
            "--tor",
            "--tor-config",
            &arti,
            "--home",
            &home,
            "--board",
            &onion,
            "order",
            "create",
            "--side",
            "sell",
            "--currency",
            "NGN",
            "--fiat-amount",
            "1000",
            "--payment-method",
            "sepa",
            "--id",
            "over-tor",
            "--ephemeral-key",
        ])
        .await;
        if ok && out.contains("accepted in") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no order over Tor in 180 s: {out}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (ok, out) = common::sample_async(&["--board", &clearnet, "orders", "list"]).await;
    assert!(ok && out.contains("over-tor"), "{out}");
    // The plugin was asked about it as an event that came through Tor.
    let log = std::fs::read_to_string(&plugin_log).unwrap();
    assert!(log.lines().any(|l| l == "req Tor "), "{log}");

    // The second board got it over BOLT8 through Tor (asked through its
    // admin API: it has no other door on this machine).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (ok, out, _) = common::cli(
            peer_dir.path(),
            &[
                "--config",
                "civkit.toml",
                "events",
                "query",
                r#"{"kinds":[38383]}"#,
            ],
        );
        if ok && out.contains("over-tor") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the federated board did not import the order over Tor in 180 s: {out}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (ok, peers, err) = common::cli(
        peer_dir.path(),
        &["--config", "civkit.toml", "--json", "peers", "list"],
    );
    assert!(ok, "{err}");
    let peers: serde_json::Value = serde_json::from_str(&peers).unwrap();
    let node_id = ln_onion.split('@').next().unwrap();
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == node_id && p["connected"] == true),
        "{peers}"
    );

    // Its info-level log names neither onion address: not its own, not
    // the peer's it dials.
    let own = status(peer_dir.path())["endpoints"]["tor"]
        .as_str()
        .unwrap()
        .trim_start_matches("ws://")
        .trim_end_matches(".onion")
        .to_string();
    let log = std::fs::read_to_string(peer_dir.path().join("civkitd.log")).unwrap();
    assert!(log.contains("onion service launched"), "{log}");
    for secret in [own.as_str(), host.trim_end_matches(".onion")] {
        assert!(
            !log.contains(secret),
            "an onion address is in the log:\n{log}"
        );
    }
}
