//! The live order book page, opened in Debian's headless Chromium and
//! driven by Playwright (`tests/browser/orderbook.mjs`): orders published
//! by civkit-sample appear within a second, filters hide them, a cancel
//! removes them, the offer's copy button and QR code carry the offer, an
//! order whose fields are markup is shown as text, and the page logs no
//! error and fetches nothing but the board. `.ci/test` installs Chromium
//! and the npm packages.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::path::Path;
use std::process::Command;

const BROWSER_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser");
const OFFERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/bolt12/offers-test.json"
);

/// A valid offer without an amount, from the BOLT12 test vectors.
fn offer() -> String {
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(OFFERS).unwrap()).unwrap();
    vectors
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["description"] == "with description (but no amount)")
        .and_then(|v| v["bolt12"].as_str())
        .unwrap()
        .to_string()
}

/// Whether Chromium and the npm packages are here; in CI they must be.
fn browser_ready() -> bool {
    let chromium = Path::new("/usr/bin/chromium").exists();
    if chromium && !Path::new(BROWSER_TESTS).join("node_modules").exists() {
        let status = Command::new("npm")
            .args([
                "ci",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                BROWSER_TESTS,
            ])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "npm ci in tests/browser failed"
        );
    }
    if chromium {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "Chromium is missing: .ci/test installs it"
    );
    eprintln!("skipped: /usr/bin/chromium is not installed (bash .ci/test installs it)");
    false
}

/// Wait (30 s at most) until the notary's status satisfies `done`.
fn notary_until(dir: &Path, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, out, err) = common::cli(
            dir,
            &["--config", "civkit.toml", "--json", "notary", "status"],
        );
        let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if ok && done(&status) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "notary: {out}{err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_book_is_live_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    // The board is notarized on a stand-in Mainstay (Mainstay cannot be
    // reached from here), so the page has an attestation to show.
    let (mainstay, mainstay_url) = civkit_mainstay::stand_in::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    civkit_framework::keyfile::write_secret(&dir.path().join("data/mainstay.token"), "test-token")
        .unwrap();
    std::fs::write(
        dir.path().join("civkit.toml"),
        format!(
            "[node]\ndata_dir = \"data\"\nlog = \"warn\"\nname = \"Lagos test board\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\
             [transports.relay.limits]\nevents_per_second = 0.0\n\
             [services.board]\ntype = \"market-board\"\norder = 1\ncurrencies = [\"EUR\", \"NGN\"]\n\
             [services.notary]\ntype = \"mainstay\"\norder = 2\nurl = \"{mainstay_url}\"\nposition = 3\n\
             round_secs = 1\npoll_secs = 1\nmax_backoff_secs = 1\n\
             [services.notary.chain]\nurl = \"{mainstay_url}\"\nstaychain_start = \"{}\"\nmin_confirmations = 1\n",
            civkit_mainstay::stand_in::STAYCHAIN_START
        ),
    )
    .unwrap();
    let _board = common::start(dir.path());
    let ws = common::relay_url(dir.path());
    let http = ws.replacen("ws://", "http://", 1);
    let home = dir.path().join("maker").display().to_string();
    assert!(
        common::sample_async(&["--home", &home, "--board", &ws, "keygen"])
            .await
            .0
    );

    // An order whose name is markup, published before the page opens.
    let hostile = r#"<img src=x onerror="window.__pwned=1">Mallory"#;
    let (ok, out) = common::sample_async(&[
        "--home",
        &home,
        "--board",
        &ws,
        "order",
        "create",
        "--side",
        "buy",
        "--currency",
        "NGN",
        "--fiat-amount",
        "5000",
        "--payment-method",
        "cash",
        "--name",
        hostile,
        "--id",
        "hostile",
    ])
    .await;
    assert!(ok, "{out}");
    // Its round is closed and sent, then attested by the stand-in.
    notary_until(dir.path(), |s| {
        s["last_round"] == 0 && s["last_round_unsent"] == false
    });
    mainstay.attest();
    notary_until(dir.path(), |s| s["last_attested"]["round"] == 0);

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("orderbook.png");
    let out = Command::new("node")
        .arg(Path::new(BROWSER_TESTS).join("orderbook.mjs"))
        .env("BOARD_HTTP", &http)
        .env("BOARD_WS", &ws)
        .env("BOARD_NAME", "Lagos test board")
        .env("SAMPLE", common::SAMPLE)
        .env("SAMPLE_HOME", &home)
        .env("OFFER", offer())
        .env("HOSTILE", hostile)
        .env("SCREENSHOT", &screenshot)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
}

/// Browsers get the page, with a policy that lets nothing in from
/// elsewhere; other clients keep the plain answer and NIP-11.
#[tokio::test]
async fn the_page_is_served_to_browsers_only_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    common::write_config(dir.path(), "");
    let _board = common::start(dir.path());
    let http = common::relay_url(dir.path()).replacen("ws://", "http://", 1);
    let get = |path: &str, accept: &str| {
        let url = format!("{}{}", http.trim_end_matches('/'), path);
        let accept = accept.to_string();
        move || {
            let r = ureq::get(&url).set("Accept", &accept).call().unwrap();
            let csp = r
                .header("content-security-policy")
                .unwrap_or("")
                .to_string();
            (r.content_type().to_string(), csp, r.into_string().unwrap())
        }
    };
    let (kind, csp, body) = tokio::task::spawn_blocking(get("/", "text/html,*/*"))
        .await
        .unwrap();
    assert_eq!(kind, "text/html");
    assert!(body.contains("<script src=\"book.js\""), "{body}");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "the page names another site"
    );
    for asset in ["/book.js", "/qr.js", "/book.css"] {
        let (_, csp, body) = tokio::task::spawn_blocking(get(asset, "*/*"))
            .await
            .unwrap();
        assert!(!csp.is_empty() && body.len() > 100, "{asset}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset} names another site"
        );
    }
    let (kind, _, body) = tokio::task::spawn_blocking(get("/", "application/nostr+json"))
        .await
        .unwrap();
    assert_eq!(kind, "application/nostr+json");
    assert!(body.contains("\"supported_nips\""));
    let (kind, _, _) = tokio::task::spawn_blocking(get("/", "*/*")).await.unwrap();
    assert_eq!(kind, "text/plain");
}
