//! civkitd as an onion service and civkit-sample over Tor, on the private
//! Tor network (tests/tor/network.sh): the `.onion` URL in `civkit-cli
//! status`, an order published with `civkit-sample --tor` to the `.onion`
//! board, and the same order seen by a clearnet reader of the board.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::{Duration, Instant};

use civkit_tor::testing::Network;
use common::{relay_url, start, status, write_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civkit_sample_publishes_to_an_onion_board_over_tor() {
    let net = Network::start();
    let dir = tempfile::tempdir().unwrap();
    let tor =
        json!({ "transports": { "tor": { "type": "tor", "via": "relay", "arti": net.arti() } } });
    write_config(
        dir.path(),
        &format!(
            "[services.board]\ntype = \"market-board\"\n{}",
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
}
