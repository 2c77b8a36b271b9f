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

fn service(backend: &str, ln: &Ln, url: &str, dir: &std::path::Path) -> Credentials {
    service_with(backend, ln, url, dir, |_| {})
}

fn service_with(
    backend: &str,
    ln: &Ln,
    url: &str,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut CredentialsConfig),
) -> Credentials {
    civkit_framework::keyfile::write_secret(&dir.join("mac"), "00ff").unwrap();
    civkit_framework::keyfile::write_secret(&dir.join("rune"), "test-rune").unwrap();
    // The stand-in's self-signed certificate, as an operator copies tls.cert.
    std::fs::write(dir.join("tls.cert"), &ln.cert_pem).unwrap();
    let payment = PaymentConfig {
        backend: backend.into(),
        url: url.into(),
        macaroon_file: "mac".into(),
        rune_file: "rune".into(),
        tls_cert_file: "tls.cert".into(),
    };
    let mut cfg = CredentialsConfig {
        kinds: vec![1],
        per_event: 1,
        epoch_secs: 3600,
        epochs_valid: 2,
        payment: payment.clone(),
        ..CredentialsConfig::default()
    };
    tune(&mut cfg);
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

/// The credential tags that spend `creds` on a kind-1 note at `at`.
fn spend_tags(keys: &Keys, creds: &[Credential], at: u64) -> Vec<Tag> {
    let binding = scheme::binding_for(&keys.public_key(), 1, at, "");
    creds
        .iter()
        .map(|c| Tag::parse(scheme::spend_tag(c, &binding).unwrap()).unwrap())
        .collect()
}

/// A kind-1 note spending `creds`.
fn note(keys: &Keys, creds: &[Credential], text: &str, at: u64) -> Event {
    note_with(keys, spend_tags(keys, creds, at), text, at)
}

fn note_with(keys: &Keys, tags: Vec<Tag>, text: &str, at: u64) -> Event {
    EventBuilder::text_note(text)
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(at))
        .sign_with_keys(keys)
        .unwrap()
}

/// The same tag with the spend key's other parity (`02‖x` ↔ `03‖x`): the
/// x-only binding signature still verifies.
fn flip_parity(tag: &Tag) -> Tag {
    let mut v = tag.as_slice().to_vec();
    let flipped = if v[2].starts_with("02") { "03" } else { "02" };
    v[2] = format!("{flipped}{}", &v[2][2..]);
    Tag::parse(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_over_lnd_then_spend_once() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("lnd", &ln, &url, dir.path()), None);
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
    let tn = node_with(service("cln", &ln, &url, dir.path()), None);
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
        let p: Arc<dyn Persister> = Arc::new(civkit_sled::LmdbPersister::open(&db).unwrap());
        let tn = node_with(service("lnd", &ln, &url, dir.path()), Some(p));
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
    let p: Arc<dyn Persister> = Arc::new(
        civkit_sled::LmdbPersister::open_when_free(&db, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let tn = node_with(service("lnd", &ln, &url, dir.path()), Some(p));
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
    let tn = node_with(service("lnd", &ln, &url, dir.path()), None);
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

/// The spent set is keyed on what the board signed (the x-coordinate), so
/// the other parity of a spent key is the same, spent credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_cannot_be_spent_twice_by_flipping_its_parity() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("lnd", &ln, &url, dir.path()), None);
    let maker = Keys::generate();
    let creds = buy(&tn, &ln, &maker, 2).await;
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();
    // On two orders.
    assert!(c.publish(&note(&maker, &creds[..1], "first", now)).await.0);
    let tags: Vec<Tag> = spend_tags(&maker, &creds[..1], now + 1)
        .iter()
        .map(flip_parity)
        .collect();
    let (ok, msg) = c.publish(&note_with(&maker, tags, "again", now + 1)).await;
    assert!(!ok && msg == "blocked: credential already spent", "{msg}");

    // Twice in one order that needs two.
    let dir2 = tempfile::tempdir().unwrap();
    let tn2 = node_with(
        service_with("lnd", &ln, &url, dir2.path(), |c| c.per_event = 2),
        None,
    );
    let creds = buy(&tn2, &ln, &maker, 1).await;
    let mut c2 = tn2.client().await;
    let now = tn2.node.now().as_secs();
    let tag = spend_tags(&maker, &creds, now).remove(0);
    let twice = vec![tag.clone(), flip_parity(&tag)];
    let (ok, msg) = c2.publish(&note_with(&maker, twice, "one paid", now)).await;
    assert!(
        !ok && msg == "invalid: the same credential is presented twice",
        "{msg}"
    );
}

/// A credential is spent only with the event's durable write: an order that
/// a later service refuses, or a save that stores nothing, burns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_burns_no_credential() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = TestNode::builder()
        .service(
            "credentials",
            Arc::new(service("lnd", &ln, &url, dir.path())),
        )
        .service(
            "pow",
            Arc::new(civkit_plugin_pow::PowGate::new(
                civkit_plugin_pow::PowConfig {
                    min_difficulty: 8,
                    kinds: vec![1],
                },
            )),
        )
        .build();
    let maker = Keys::generate();
    let creds = buy(&tn, &ln, &maker, 1).await;
    let mut c = tn.client().await;
    let now = tn.node.now().as_secs();
    // Admitted by the credentials service, refused by the next one.
    let mut lazy = note(&maker, &creds, "no work", now);
    for at in now + 1..now + 500 {
        if civkit_plugin_pow::leading_zero_bits(lazy.id.as_bytes()) < 8 {
            break;
        }
        lazy = note(&maker, &creds, "no work", at);
    }
    let (ok, msg) = c.publish(&lazy).await;
    assert!(!ok && msg.starts_with("pow:"), "{msg}");
    // The same credential still pays for an order with the work done.
    let worked = EventBuilder::text_note("with work")
        .tags(spend_tags(&maker, &creds, now + 600))
        .custom_created_at(Timestamp::from_secs(now + 600))
        .pow(8)
        .sign_with_keys(&maker)
        .unwrap();
    assert_eq!(c.publish(&worked).await, (true, String::new()));
    let (ok, msg) = c
        .publish(
            &EventBuilder::text_note("third")
                .tags(spend_tags(&maker, &creds, now + 601))
                .custom_created_at(Timestamp::from_secs(now + 601))
                .pow(8)
                .sign_with_keys(&maker)
                .unwrap(),
        )
        .await;
    assert!(!ok && msg == "blocked: credential already spent", "{msg}");
}

/// A maker who missed the board's answer asks again and gets the same
/// signatures; other blinded messages on the same paid quote get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_issuance_is_sent_again() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(service("lnd", &ln, &url, dir.path()), None);
    let board = tn.node.keys().public_key();
    let maker = Keys::generate();
    let mut c = tn.client().await;
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .pubkey(maker.public_key());
    c.req("answers", vec![f]).await;
    assert!(
        c.publish(&wallet::quote_request(&maker, &board, 2).unwrap())
            .await
            .0
    );
    let quote = wallet::open(&maker, &answer(&mut c, QUOTE).await).unwrap();
    let qid = quote["quote"].as_str().unwrap().to_string();
    ln.pay_all();
    let pending = Pending::new(2).unwrap();
    let mint = wallet::mint_request(&maker, &board, &qid, &pending).unwrap();
    assert!(c.publish(&mint).await.0);
    let first = wallet::open(&maker, &answer(&mut c, MINT).await).unwrap();
    // The retry is a new event (the first was seen), with the same content.
    let retry = wallet::mint_request(&maker, &board, &qid, &pending).unwrap();
    assert_ne!(retry.id, mint.id);
    assert!(c.publish(&retry).await.0);
    let again = wallet::open(&maker, &answer(&mut c, MINT).await).unwrap();
    assert_eq!(first, again, "the stored answer is re-sent");
    let announced = tn.node.service_nip11()["civkit_credentials"]["pubkey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wallet::finish(&pending, &again, &announced).unwrap().len(),
        2
    );
    // Someone with other blinded messages cannot mint on the paid quote.
    let other = wallet::mint_request(&maker, &board, &qid, &Pending::new(2).unwrap()).unwrap();
    assert!(c.publish(&other).await.0);
    let err = wallet::open(&maker, &answer(&mut c, MINT).await).unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("blocked:"),
        "{err}"
    );
}

/// Quote requests are bounded per key and in total, backend calls are
/// capped, and unpaid quotes are forgotten once their invoice expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_spam_is_bounded() {
    let (ln, url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let tn = node_with(
        service_with("lnd", &ln, &url, dir.path(), |c| {
            c.max_open_quotes_per_author = 2;
            c.max_open_quotes = 3;
            c.max_backend_calls = 2;
            c.invoice_expiry_secs = 1;
        }),
        None,
    );
    let board = tn.node.keys().public_key();
    let spammer = Keys::generate();
    let mut c = tn.client().await;
    let f = Filter::new()
        .kinds([Kind::from(QUOTE), Kind::from(MINT)])
        .pubkey(spammer.public_key());
    c.req("answers", vec![f]).await;
    for _ in 0..2 {
        assert!(
            c.publish(&wallet::quote_request(&spammer, &board, 1).unwrap())
                .await
                .0
        );
        assert!(
            wallet::open(&spammer, &answer(&mut c, QUOTE).await).unwrap()["invoice"].is_string()
        );
    }
    let (ok, msg) = c
        .publish(&wallet::quote_request(&spammer, &board, 1).unwrap())
        .await;
    assert!(!ok && msg.starts_with("rate-limited:"), "{msg}");
    // Another key gets one more, then the board-wide bound holds.
    let other = Keys::generate();
    let mut oc = tn.client().await;
    let of = Filter::new()
        .kind(Kind::from(QUOTE))
        .pubkey(other.public_key());
    oc.req("answers", vec![of]).await;
    assert!(
        oc.publish(&wallet::quote_request(&other, &board, 1).unwrap())
            .await
            .0
    );
    answer(&mut oc, QUOTE).await;
    let (ok, msg) = oc
        .publish(&wallet::quote_request(&other, &board, 1).unwrap())
        .await;
    assert!(!ok && msg.starts_with("rate-limited:"), "{msg}");

    // The unpaid quotes expire; the sweep forgets them and the keys may ask again.
    tn.clock.advance(5);
    let record_count = || async {
        tn.node
            .persister()
            .kv_scan("credentials", b"quote:")
            .await
            .unwrap()
            .len()
    };
    for _ in 0..50 {
        if record_count().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(record_count().await, 0, "expired unpaid quotes are deleted");

    // A slow backend: at most two calls in flight, the rest told to retry.
    ln.delay_ms
        .store(1_000, std::sync::atomic::Ordering::SeqCst);
    let makers: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let mut clients = Vec::new();
    for m in &makers {
        let mut mc = tn.client().await;
        let f = Filter::new().kind(Kind::from(QUOTE)).pubkey(m.public_key());
        mc.req("answers", vec![f]).await;
        assert!(
            mc.publish(&wallet::quote_request(m, &board, 1).unwrap())
                .await
                .0
        );
        clients.push(mc);
    }
    let mut busy = 0;
    for (m, mc) in makers.iter().zip(clients.iter_mut()) {
        let a = wallet::open(m, &answer(mc, QUOTE).await).unwrap();
        if a["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("rate-limited: the board is busy"))
        {
            busy += 1;
        }
    }
    assert_eq!(busy, 1, "two calls in flight, the third refused");
}

/// A macaroon or rune that other users may read is refused at start, with
/// the key and the fix named; at mode 0600 it is taken.
#[test]
fn payment_credentials_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (backend, file) in [("lnd", "mac"), ("cln", "rune")] {
        let path = dir.path().join(file);
        civkit_framework::keyfile::write_secret(&path, "00ff").unwrap();
        let cfg = PaymentConfig {
            backend: backend.into(),
            url: "http://127.0.0.1:1".into(),
            macaroon_file: "mac".into(),
            rune_file: "rune".into(),
            ..PaymentConfig::default()
        };
        assert!(
            payment::from_config(&cfg, dir.path(), "p").is_ok(),
            "{backend}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = payment::from_config(&cfg, dir.path(), "p")
            .err()
            .unwrap_or_else(|| panic!("{backend}: a world-readable {file} was taken"))
            .to_string();
        assert!(
            err.contains("readable by other users") && err.contains("chmod 600"),
            "{err}"
        );
    }
}

/// The node's self-signed certificate is trusted for its backend alone:
/// the stand-in's own certificate works for LND and CLN; a node presenting
/// another certificate (a second stand-in, a man in the middle) is refused,
/// and so is the same node without `tls_cert_file` (no public root signs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_certificate_is_trusted() {
    let (real, real_url) = stand_in().await;
    let (other, other_url) = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    civkit_framework::keyfile::write_secret(&dir.path().join("mac"), "00ff").unwrap();
    civkit_framework::keyfile::write_secret(&dir.path().join("rune"), "test-rune").unwrap();
    std::fs::write(dir.path().join("tls.cert"), &real.cert_pem).unwrap();
    let backend = |kind: &str, url: &str, cert: &str| {
        let cfg = PaymentConfig {
            backend: kind.into(),
            url: url.into(),
            macaroon_file: "mac".into(),
            rune_file: "rune".into(),
            tls_cert_file: cert.into(),
        };
        payment::from_config(&cfg, dir.path(), "p").unwrap()
    };
    for kind in ["lnd", "cln"] {
        let good = backend(kind, &real_url, "tls.cert");
        let invoice = good.create_invoice(1_000, "m", 60).await.unwrap();
        assert!(!good.is_paid(&invoice.payment_hash).await.unwrap());
        real.pay_all();
        assert!(good.is_paid(&invoice.payment_hash).await.unwrap());

        // The other node presents its own certificate: refused, and it
        // never sees the request (nor the macaroon or rune).
        let err = backend(kind, &other_url, "tls.cert")
            .create_invoice(1_000, "m", 60)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("other than tls_cert_file"), "{kind}: {err}");
        assert!(other.invoices.lock().unwrap().is_empty());

        // Without tls_cert_file, a self-signed certificate is refused.
        let err = backend(kind, &real_url, "")
            .create_invoice(1_000, "m", 60)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.to_lowercase().contains("certificate"), "{kind}: {err}");
    }
}

#[test]
fn a_tls_cert_file_that_is_wrong_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    civkit_framework::keyfile::write_secret(&dir.path().join("mac"), "00ff").unwrap();
    std::fs::write(dir.path().join("garbage.cert"), "not a certificate").unwrap();
    let cases = [
        ("https://127.0.0.1:1", "missing.cert", "cannot read"),
        ("https://127.0.0.1:1", "garbage.cert", "no PEM certificate"),
        ("http://127.0.0.1:1", "garbage.cert", "https://"),
    ];
    for (url, cert, want) in cases {
        let cfg = PaymentConfig {
            backend: "lnd".into(),
            url: url.into(),
            macaroon_file: "mac".into(),
            tls_cert_file: cert.into(),
            ..PaymentConfig::default()
        };
        let err = payment::from_config(&cfg, dir.path(), "p")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("p.tls_cert_file") && err.contains(want),
            "{err}"
        );
    }
}
