//! Buy credentials with civkit-sample from a board selling them through a
//! stand-in LND, restart the board, then spend them on orders.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use civkit_credentials::stand_in::stand_in;
use common::{relay_url, start, write_config};

async fn sample<S: AsRef<std::ffi::OsStr>>(home: &str, ws: &str, args: &[S]) -> (bool, String) {
    let mut all: Vec<std::ffi::OsString> = ["--home", home, "--board", ws]
        .iter()
        .map(Into::into)
        .collect();
    all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
    common::sample_async(&all).await
}

fn create(id: &str) -> Vec<String> {
    [
        "order",
        "create",
        "--side",
        "buy",
        "--currency",
        "EUR",
        "--fiat-amount",
        "100",
        "--payment-method",
        "sepa",
        "--id",
        id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A stranger who answers every quote request with a quote of its own,
/// encrypted to the requester as the board's would be.
async fn watcher(ws: &str) -> tokio::task::JoinHandle<()> {
    use nostr_sdk::prelude::*;
    let keys = Keys::generate();
    let client = Client::new(keys.clone());
    client.add_relay(ws).await.unwrap();
    client.connect().await;
    let f = Filter::new().kind(Kind::from(civkit_credentials::QUOTE_REQUEST));
    client.subscribe(f, None).await.unwrap();
    let mut notes = client.notifications();
    tokio::spawn(async move {
        while let Ok(n) = notes.recv().await {
            let RelayPoolNotification::Event { event, .. } = n else {
                continue;
            };
            let forged = serde_json::json!({
                "quote": event.id.to_hex(), "invoice": "lnbc1attacker",
                "amount_msat": 1, "count": 2, "expires_at": u64::MAX,
            });
            let text = nip44::encrypt(
                keys.secret_key(),
                &event.pubkey,
                forged.to_string(),
                nip44::Version::V2,
            )
            .unwrap();
            let answer = EventBuilder::new(Kind::from(civkit_credentials::QUOTE), text)
                .tags([Tag::public_key(event.pubkey), Tag::event(event.id)])
                .sign_with_keys(&keys)
                .unwrap();
            let _ = client.send_event(&answer).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_restart_then_spend_per_order() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    civkit_framework::keyfile::write_secret(&dir.path().join("data/invoice.macaroon"), "00ff")
        .unwrap();
    // The stand-in serves a self-signed certificate, as LND does.
    std::fs::write(dir.path().join("data/tls.cert"), &ln.cert_pem).unwrap();
    write_config(
        dir.path(),
        &format!(
            "[services.board]\ntype = \"market-board\"\norder = 1\n\
             [services.credentials]\ntype = \"credentials\"\norder = 2\nkinds = [38383]\nper_event = 1\nprice_msat = 2000\n\
             [services.credentials.payment]\nbackend = \"lnd\"\nurl = \"{url}\"\nmacaroon_file = \"invoice.macaroon\"\ntls_cert_file = \"tls.cert\"\n"
        ),
    );
    let board = start(dir.path());
    let ws = relay_url(dir.path());
    let home = dir.path().join("maker").display().to_string();
    assert!(sample(&home, &ws, &["keygen"]).await.0);

    let (ok, out) = sample(&home, &ws, &create("unpaid")).await;
    assert!(
        !ok && out.contains("credentials buy"),
        "orders need credentials first: {out}"
    );

    // A watcher answers every quote request at once with its own invoice,
    // while the board's Lightning node is slow. civkit-sample must take only
    // the board's answer.
    let _watcher = watcher(&ws).await;
    ln.delay_ms
        .store(1_500, std::sync::atomic::Ordering::SeqCst);

    // Buy two; the test plays the payer once the invoice exists.
    let buyer = {
        let (home, ws) = (home.clone(), ws.clone());
        tokio::spawn(async move {
            sample(&home, &ws, &["credentials", "buy", "2", "--wait", "30"]).await
        })
    };
    for _ in 0..100 {
        if !ln.invoices.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ln.pay_all();
    let (ok, out) = buyer.await.unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("pay 4000 msat") && out.contains("lnbcrt4000n1standin"),
        "{out}"
    );
    assert!(
        !out.contains("lnbc1attacker"),
        "a forged answer was taken: {out}"
    );
    assert!(
        out.contains("received 2 credential(s)") && out.contains("DLEQ proofs checked"),
        "{out}"
    );
    let wallet = std::path::Path::new(&home).join("credentials.json");
    assert_eq!(
        std::fs::metadata(&wallet).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, out) = sample(&home, &ws, &["credentials", "list"]).await;
    assert!(out.contains("2 credential(s)"), "{out}");

    // A restart between buying and spending: keys and spent set persist.
    drop(board);
    let _board = start(dir.path());
    let ws = relay_url(dir.path());
    let (ok, out) = sample(&home, &ws, &create("paid-1")).await;
    assert!(
        ok && out.contains("spending 1 credential") && out.contains("accepted"),
        "{out}"
    );
    let (ok, out) = sample(&home, &ws, &create("paid-2")).await;
    assert!(ok && out.contains("accepted"), "{out}");
    let (ok, out) = sample(&home, &ws, &create("paid-3")).await;
    assert!(!ok && out.contains("you hold 0"), "{out}");
    let (_, out) = sample(&home, &ws, &["orders", "list"]).await;
    assert!(
        out.contains("paid-1") && out.contains("paid-2") && !out.contains("unpaid"),
        "{out}"
    );
    let (_, out) = sample(&home, &ws, &["board", "info"]).await;
    assert!(
        out.contains("civkit_credentials") && out.contains("price_msat"),
        "announced: {out}"
    );
}
