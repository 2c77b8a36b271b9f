//! Buying and spending credentials against stand-in LND and Core Lightning
//! servers that follow their documented REST APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::sync::Arc;
use std::time::Duration;

use civkit_credentials::payment::{self, PaymentConfig};
use civkit_credentials::scheme::{self, Credential};
use civkit_credentials::stand_in::{stand_in, Ln};
use civkit_credentials::wallet::{self, Pending};
use civkit_credentials::{Credentials, CredentialsConfig, MINT, QUOTE};
use civkit_framework::testing::{MemoryClient, TestNode, WireClient};
use civkit_framework::Persister;
use nostr::{Event, EventBuilder, Filter, Keys, Kind, Tag, Timestamp};

const MASTER: [u8; 32] = [42; 32];

fn service(backend: &str, url: &str, dir: &std::path::Path) -> Credentials {
    std::fs::write(dir.join("mac"), "00ff").unwrap();
    std::fs::write(dir.join("rune"), "test-rune").unwrap();
    let payment = PaymentConfig {
        backend: backend.into(),
        url: url.into(),
        macaroon_file: "mac".into(),
        rune_file: "rune".into(),
    };
    let cfg = CredentialsConfig {
        kinds: vec![1],
        per_event: 1,
        epoch_secs: 3600,
        epochs_valid: 2,
        payment: payment.clone(),
        ..CredentialsConfig::default()
    };
    Credentials::new(
        cfg,
        MASTER,
        payment::from_config(&payment, dir, "services.credentials.payment").unwrap(),
    )
}

fn node_with(c: Credentials, persister: Option<Arc<dyn Persister>>) -> TestNode {
    let mut b = TestNode::builder().service("credentials", Arc::new(c));
    if let Some(p) = persister {
        b = b.persister(p);
    }
    b.build()
}

async fn answer(c: &mut MemoryClient, kind: u16) -> Event {
    c.next_event("answers", Duration::from_secs(10))
        .await
        .filter(|e| e.kind.as_u16() == kind)
        .expect("an answer")
}

/// Buy `n` credentials, paying the stand-in invoice when asked.
async fn buy(tn: &TestNode, ln: &Arc<Ln>, keys: &Keys, n: usize) -> Vec<Credential> {
    let board = tn.node.keys().public_key();
    let mut c = tn.client().await;
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .pubkey(keys.public_key());
    c.req("answers", vec![f]).await;
    assert!(
        c.publish(&wallet::quote_request(keys, &board, n).unwrap())
            .await
            .0
    );
    let quote = wallet::open(keys, &answer(&mut c, QUOTE).await).unwrap();
    assert_eq!(quote["count"], n);
    let qid = quote["quote"].as_str().unwrap().to_string();
    let pending = Pending::new(n).unwrap();
    assert!(
        c.publish(&wallet::mint_request(keys, &board, &qid, &pending).unwrap())
            .await
            .0
    );
    let not_yet = wallet::open(keys, &answer(&mut c, MINT).await).unwrap();
    assert!(
        not_yet["error"]
            .as_str()
            .unwrap()
            .starts_with("payment-required:"),
        "{not_yet}"
    );
    let hash = ln.invoices.lock().unwrap().last().unwrap().clone();
    ln.paid.lock().unwrap().insert(hash);
    assert!(
        c.publish(&wallet::mint_request(keys, &board, &qid, &pending).unwrap())
            .await
            .0
    );
    let minted = wallet::open(keys, &answer(&mut c, MINT).await).unwrap();
    let announced = tn.node.service_nip11()["civkit_credentials"]["pubkey"]
        .as_str()
        .unwrap()
        .to_string();
    wallet::finish(&pending, &minted, &announced).unwrap()
}

/// A kind-1 note spending `creds`.
fn note(keys: &Keys, creds: &[Credential], text: &str, at: u64) -> Event {
    let binding = scheme::binding_for(&keys.public_key(), 1, at, "");
    let tags = creds
        .iter()
        .map(|c| Tag::parse(scheme::spend_tag(c, &binding).unwrap()).unwrap());
    EventBuilder::text_note(text)
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(at))
        .sign_with_keys(keys)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_over_lnd_then_spend_once() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("lnd", &url, dir.path()), None);
    let maker = Keys::generate();
    let creds = buy(&tn, &ln, &maker, 3).await;
    assert_eq!(creds.len(), 3);
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();

    let (ok, msg) = c.publish(&note(&maker, &[], "no credential", now)).await;
    assert!(!ok && msg.starts_with("payment-required:"), "{msg}");
    let first = note(&maker, &creds[..1], "paid for", now);
    assert_eq!(c.publish(&first).await, (true, String::new()));
    let (ok, msg) = c
        .publish(&note(&maker, &creds[..1], "again", now + 1))
        .await;
    assert!(!ok && msg == "blocked: credential already spent", "{msg}");

    // A thief copies the credential tag of a published order into their own event.
    let thief = Keys::generate();
    let stolen: Vec<Tag> = first
        .tags
        .iter()
        .filter(|t| t.as_slice()[0] == "credential")
        .cloned()
        .collect();
    let copy = EventBuilder::text_note("stolen")
        .tags(stolen)
        .sign_with_keys(&thief)
        .unwrap();
    let (ok, msg) = c.publish(&copy).await;
    assert!(!ok && msg.contains("bound to another event"), "{msg}");

    // Two concurrent spends of one credential: exactly one wins.
    let (mut a, mut b) = (tn.client().await, tn.client().await);
    let (ea, eb) = (
        note(&maker, &creds[1..2], "a", now + 2),
        note(&maker, &creds[1..2], "b", now + 3),
    );
    let (ra, rb) = tokio::join!(a.publish(&ea), b.publish(&eb));
    assert_eq!(usize::from(ra.0) + usize::from(rb.0), 1, "{ra:?} {rb:?}");

    // Forged: a credential signed under another master key.
    let forged = Credential {
        signature: scheme::epoch_key(&[1; 32], creds[2].epoch)
            .public_key()
            .to_hex(),
        ..creds[2].clone()
    };
    let (ok, msg) = c.publish(&note(&maker, &[forged], "forged", now + 4)).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    let bad = EventBuilder::text_note("garbage")
        .tag(Tag::parse(["credential", "x", "y", "z", "w"]).unwrap())
        .sign_with_keys(&maker)
        .unwrap();
    let (ok, msg) = c.publish(&bad).await;
    assert!(
        !ok && msg.starts_with("invalid: malformed credential"),
        "{msg}"
    );

    // After the epochs of validity, an unspent credential is refused as expired.
    tn.clock.advance(2 * 3600);
    let later = tn.node.now().as_secs();
    let (ok, msg) = c
        .publish(&note(&maker, &creds[2..3], "too late", later))
        .await;
    assert!(!ok && msg.contains("expired"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_over_core_lightning_and_refuse_bad_requests() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("cln", &url, dir.path()), None);
    let maker = Keys::generate();
    let creds = buy(&tn, &ln, &maker, 1).await;
    let mut c = tn.client().await;
    assert!(
        c.publish(&note(&maker, &creds, "cln-paid", tn.node.now().as_secs()))
            .await
            .0
    );

    // Malformed requests get an error answer, never a crash.
    let board = tn.node.keys().public_key();
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .pubkey(maker.public_key());
    c.req("answers", vec![f]).await;
    let garbage = EventBuilder::new(Kind::from(23383), "{not json")
        .tag(Tag::public_key(board))
        .sign_with_keys(&maker)
        .unwrap();
    assert!(c.publish(&garbage).await.0);
    let err = wallet::open(&maker, &answer(&mut c, MINT).await).unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("invalid:"),
        "{err}"
    );
    let too_many = wallet::quote_request(&maker, &board, 10_000).unwrap();
    assert!(c.publish(&too_many).await.0);
    let err = wallet::open(&maker, &answer(&mut c, QUOTE).await).unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("invalid: count"),
        "{err}"
    );
    // Someone else cannot redeem another key's quote.
    let q = wallet::quote_request(&maker, &board, 1).unwrap();
    assert!(c.publish(&q).await.0);
    let quote_event = answer(&mut c, QUOTE).await;
    let quote = wallet::open(&maker, &quote_event).unwrap();
    let other = Keys::generate();
    let mut oc = tn.client().await;
    let of = Filter::new()
        .kind(Kind::from(MINT))
        .pubkey(other.public_key());
    oc.req("answers", vec![of]).await;
    let steal = wallet::mint_request(
        &other,
        &board,
        quote["quote"].as_str().unwrap(),
        &Pending::new(1).unwrap(),
    )
    .unwrap();
    assert!(oc.publish(&steal).await.0);
    let err = wallet::open(&other, &answer(&mut oc, MINT).await).unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("restricted:"),
        "{err}"
    );
    // Answers are encrypted to the requester: another key cannot read them.
    assert!(wallet::open(&other, &quote_event).is_err());
    assert!(
        !quote_event.content.contains("lnbcrt"),
        "the invoice is not in clear text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spent_set_survives_a_restart() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let maker = Keys::generate();
    let creds;
    {
        let p: Arc<dyn Persister> = Arc::new(civkit_sled::SledPersister::open(&db).unwrap());
        let tn = node_with(service("lnd", &url, dir.path()), Some(p));
        creds = buy(&tn, &ln, &maker, 1).await;
        let mut c = tn.client().await;
        assert!(
            c.publish(&note(
                &maker,
                &creds,
                "before restart",
                tn.node.now().as_secs()
            ))
            .await
            .0
        );
        tn.node.persister().flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p: Arc<dyn Persister> = Arc::new(civkit_sled::SledPersister::open(&db).unwrap());
    let tn = node_with(service("lnd", &url, dir.path()), Some(p));
    let mut c = tn.client().await;
    let (ok, msg) = c
        .publish(&note(
            &maker,
            &creds,
            "after restart",
            tn.node.now().as_secs() + 1,
        ))
        .await;
    assert!(!ok && msg == "blocked: credential already spent", "{msg}");
}

#[test]
fn issuance_requests_carry_only_blinded_points() {
    let keys = Keys::generate();
    let board = Keys::generate().public_key();
    for _ in 0..50 {
        let pending = Pending::new(4).unwrap();
        let req = wallet::mint_request(&keys, &board, "q", &pending).unwrap();
        for (spend, _r, blinded) in &pending.items {
            let spend_pub = spend.public_key().to_hex();
            let x_only = &spend_pub[2..];
            let y = cashu::dhke::hash_to_curve(x_only.as_bytes()).unwrap();
            assert!(
                !req.content.contains(x_only),
                "the spend key never leaves the maker"
            );
            assert!(
                !req.content.contains(&y.to_hex()),
                "the unblinded point never leaves the maker"
            );
            assert!(req.content.contains(&blinded.to_hex()));
            assert!(!req.content.contains(&spend.to_secret_hex()));
        }
    }
}

#[test]
fn free_backend_must_be_chosen_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let none = PaymentConfig::default();
    let err = payment::from_config(&none, dir.path(), "services.credentials.payment")
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("services.credentials.payment.backend"),
        "{err}"
    );
    let lnd_without_url = PaymentConfig {
        backend: "lnd".into(),
        ..PaymentConfig::default()
    };
    let err = payment::from_config(&lnd_without_url, dir.path(), "k")
        .err()
        .unwrap();
    assert!(err.to_string().contains("k.url"), "{err}");
}

/// Epochs follow the node's clock, not the system's: the announced epoch key
/// rotates when a manual clock moves, and a credential of the previous epoch
/// stays spendable for `epochs_valid` epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_rotate_with_the_node_clock() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("lnd", &url, dir.path()), None);
    // The wallet signs its requests at the real time, which the clock starts at.
    let e0 = tn.node.now().as_secs() / 3600;
    let announced = |tn: &TestNode| tn.node.service_nip11()["civkit_credentials"].clone();
    let first = announced(&tn);
    assert_eq!(first["epoch"], e0, "{first}");
    let maker = Keys::generate();
    let creds = buy(&tn, &ln, &maker, 2).await;
    assert_eq!(creds[0].epoch, e0);

    tn.clock.advance(3600);
    let second = announced(&tn);
    assert_eq!(second["epoch"], e0 + 1, "{second}");
    assert_ne!(first["pubkey"], second["pubkey"], "a new epoch key");
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();
    let (ok, msg) = c
        .publish(&note(&maker, &creds[..1], "next epoch", now))
        .await;
    assert!(ok, "still valid one epoch later: {msg}");

    tn.clock.advance(3600);
    let now = tn.node.now().as_secs();
    let (ok, msg) = c
        .publish(&note(&maker, &creds[1..], "two later", now))
        .await;
    assert!(!ok && msg.contains("expired"), "{msg}");
}
