//! One board, several civkitd processes on one PostgreSQL database: live
//! delivery across nodes, races on one address and on one credential, the
//! board's work moving when its leader is SIGKILLed, and a node holding
//! another board's keys refused. Needs the test server of `bash .ci/test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::time::{Duration, Instant};

use common::{
    board, connect as ws, leader, publish, relay_url, sample_async, sell_order, start, status, Proc,
};
use nostr::{EventBuilder, Filter, Keys, Kind, Tag, Timestamp};
use nostr_sdk::{Client, RelayPoolNotification};
use serde_json::Value;

/// Every stored event matching `filter`, from the relay at `url`.
async fn fetch(url: &str, filter: Filter) -> Vec<nostr::Event> {
    common::fetch(&mut ws(url).await, filter).await
}

fn start_all(dirs: &[tempfile::TempDir]) -> Vec<Proc> {
    dirs.iter().map(|d| start(d.path())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maker_on_one_node_reaches_takers_on_the_others_once() {
    let db = civkit_postgres::testing::fresh_database();
    let dirs = board(3, &db, "", &[]);
    let procs = start_all(&dirs);
    let urls: Vec<String> = dirs.iter().map(|d| relay_url(d.path())).collect();

    let maker_keys = Keys::generate();
    let filter = Filter::new().author(maker_keys.public_key());
    let mut takers = Vec::new();
    for url in &urls {
        let t = Client::new(Keys::generate());
        t.add_relay(url).await.unwrap();
        t.connect().await;
        let notes = t.notifications();
        t.subscribe(filter.clone(), None).await.unwrap();
        takers.push((t, notes));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stored = EventBuilder::text_note("on node A")
        .sign_with_keys(&maker_keys)
        .unwrap();
    let ephemeral = EventBuilder::new(Kind::from(20_001), "passing through")
        .sign_with_keys(&maker_keys)
        .unwrap();
    let mut maker = ws(&urls[0]).await;
    for e in [&stored, &ephemeral] {
        let (ok, msg) = publish(&mut maker, e).await;
        assert!(ok, "{msg}");
    }

    // Each taker, on every node, gets each event exactly once.
    for (i, (_, notes)) in takers.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(RelayPoolNotification::Event { event, .. })) =
                tokio::time::timeout(left, notes.recv()).await
            {
                seen.push(event.id);
            }
        }
        seen.sort();
        let mut want = vec![stored.id, ephemeral.id];
        want.sort();
        assert_eq!(seen, want, "taker on node {i}");
    }
    for url in &urls[1..] {
        assert_eq!(fetch(url, filter.clone()).await.len(), 1);
    }
    drop(procs);
}

/// Two makers' versions of one address, sent at once to two nodes, many
/// times over: both nodes then serve the same one version, the newest
/// (NIP-01: the later `created_at`, then the lower id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_one_address_converge_on_the_newest() {
    let db = civkit_postgres::testing::fresh_database();
    let dirs = board(2, &db, "", &[]);
    let _procs = start_all(&dirs);
    let urls: Vec<String> = dirs.iter().map(|d| relay_url(d.path())).collect();
    let (mut a, mut b) = (ws(&urls[0]).await, ws(&urls[1]).await);
    let keys = Keys::generate();
    let base = Timestamp::now().as_secs();
    let version = |round: u64, tie: bool, text: &str| {
        // In half of the rounds both versions have the same created_at.
        let at = base + 2 * round + u64::from(!tie && text == "b");
        EventBuilder::new(Kind::from(30_078), text)
            .tags([Tag::identifier("the-address")])
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&keys)
            .unwrap()
    };
    let mut newest = None;
    for round in 0..20 {
        let tie = round % 2 == 0;
        let (va, vb) = (version(round, tie, "a"), version(round, tie, "b"));
        let ((ok_a, msg_a), (ok_b, msg_b)) =
            tokio::join!(publish(&mut a, &va), publish(&mut b, &vb));
        // The older one may be refused (it lost the race) or accepted and
        // then replaced; the newer one is always accepted.
        let winner = if vb.created_at > va.created_at || (tie && vb.id < va.id) {
            assert!(ok_b, "{msg_b}");
            vb
        } else {
            assert!(ok_a, "{msg_a}");
            va
        };
        newest = Some(winner);
    }
    let newest = newest.unwrap();
    let filter = Filter::new()
        .author(keys.public_key())
        .kind(Kind::from(30_078));
    for url in &urls {
        let got = fetch(url, filter.clone()).await;
        assert_eq!(
            got.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![newest.id],
            "{url} serves another version"
        );
    }
}

/// A maker bought credentials on node A; each is then presented twice at
/// once, on two events sent to the two nodes. Exactly one of each pair is
/// accepted, and the other is refused as spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_one_credential_accept_it_once() {
    let db = civkit_postgres::testing::fresh_database();
    let dirs = board(
        2,
        &db,
        "[services.credentials]\ntype = \"credentials\"\nkinds = [1]\n\
         [services.credentials.payment]\nbackend = \"free\"\n",
        &["credentials.key"],
    );
    let _procs = start_all(&dirs);
    let urls: Vec<String> = dirs.iter().map(|d| relay_url(d.path())).collect();
    let home = dirs[0].path().join("maker").display().to_string();
    assert!(sample_async(&["--home", &home, "keygen"]).await.0);
    let (ok, out) = sample_async(&[
        "--home",
        &home,
        "--board",
        &urls[0],
        "credentials",
        "buy",
        "10",
        "--wait",
        "30",
    ])
    .await;
    assert!(ok, "{out}");
    let wallet: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{home}/credentials.json")).unwrap())
            .unwrap();
    let creds: Vec<civkit_credentials::scheme::Credential> = serde_json::from_value(
        wallet["boards"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone(),
    )
    .unwrap();
    assert_eq!(creds.len(), 10);

    let (mut a, mut b) = (ws(&urls[0]).await, ws(&urls[1]).await);
    let author = Keys::generate();
    let spending = |cred: &civkit_credentials::scheme::Credential, text: &str, at: u64| {
        let binding = civkit_credentials::scheme::binding_for(&author.public_key(), 1, at, "");
        let tag = civkit_credentials::scheme::spend_tag(cred, &binding).unwrap();
        EventBuilder::text_note(text)
            .tags([Tag::parse(tag).unwrap()])
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&author)
            .unwrap()
    };
    let at = Timestamp::now().as_secs();
    for cred in &creds {
        let (x, y) = (spending(cred, "on A", at), spending(cred, "on B", at));
        let ((ok_x, msg_x), (ok_y, msg_y)) = tokio::join!(publish(&mut a, &x), publish(&mut b, &y));
        assert!(
            ok_x != ok_y,
            "accepted on A: {ok_x} ({msg_x}), on B: {ok_y} ({msg_y})"
        );
        let refused = if ok_x { msg_y } else { msg_x };
        assert!(
            refused.starts_with("blocked: credential already spent"),
            "{refused}"
        );
    }
    let stored = fetch(&urls[1], Filter::new().author(author.public_key())).await;
    assert_eq!(stored.len(), creds.len());
}

/// Two nodes run a notarized board. Orders come in on both; the node that
/// holds the board lease closes every round. It is SIGKILLed: the other
/// takes the lease within a bounded time and closes the next rounds, and
/// the whole published history, checked by civkit-sample, holds every
/// order once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_the_rounds_and_the_history_stays_whole() {
    use civkit_mainstay::stand_in;
    let (mainstay, url) = stand_in::start().await;
    let db = civkit_postgres::testing::fresh_database();
    let dirs = board(
        2,
        &db,
        &format!(
            "[services.board]\ntype = \"market-board\"\norder = 1\n\
             [services.notary]\ntype = \"mainstay\"\norder = 2\nurl = \"{url}\"\nposition = 3\n\
             kinds = [38383]\nround_secs = 1\npoll_secs = 1\nmax_backoff_secs = 1\n\
             [services.notary.chain]\nurl = \"{url}\"\nstaychain_start = \"{}\"\nmin_confirmations = 1\n",
            stand_in::STAYCHAIN_START
        ),
        &[],
    );
    for d in &dirs {
        civkit_framework::keyfile::write_secret(
            &d.path().join("data/mainstay.token"),
            "test-token",
        )
        .unwrap();
    }
    let mut procs = start_all(&dirs);
    let urls: Vec<String> = dirs.iter().map(|d| relay_url(d.path())).collect();
    let home = dirs[0].path().join("maker").display().to_string();
    assert!(sample_async(&["--home", &home, "keygen"]).await.0);
    for n in 0..6 {
        let (ok, out) = sell_order(&home, &urls[n % 2], &format!("order-{n}")).await;
        assert!(ok, "{out}");
    }
    let notary = |p: &Proc| {
        let (ok, out, err) = common::cli(
            &p.dir,
            &["--config", "civkit.toml", "--json", "notary", "status"],
        );
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let wait_rounded = |p: &Proc| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = notary(p);
            if s["pending_events"] == 0
                && s["last_round"].is_u64()
                && s["last_round_unsent"] == false
            {
                return s["last_round"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "rounds stalled: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = leader(&procs.iter().collect::<Vec<_>>());
    let before = wait_rounded(&procs[first]);
    mainstay.attest();

    // SIGKILL the leader: the lease it held lapses, and the other node takes it.
    let mut dead = procs.remove(first);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(leader(&procs.iter().collect::<Vec<_>>()), 0);
    eprintln!(
        "the board lease moved {} ms after its holder was SIGKILLed (lease 1 s)",
        killed.elapsed().as_millis()
    );
    let survivor = &procs[0];
    let url = relay_url(&survivor.dir);
    for n in 6..9 {
        let (ok, out) = sell_order(&home, &url, &format!("order-{n}")).await;
        assert!(ok, "{out}");
    }
    let after = wait_rounded(survivor);
    assert!(
        after > before,
        "no round after the failover: {before} then {after}"
    );

    // Every round, from both leaders, chains; every order is in one.
    let (ok, out) = sample_async(&["--board", &url, "verify-history"]).await;
    assert!(ok && out.contains("history verified"), "{out}");
    let published = fetch(&url, Filter::new().kind(Kind::from(30_384))).await;
    let rounds: Vec<Value> = published
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.content).unwrap()["round"].clone())
        .collect();
    assert_eq!(rounds.len() as u64, after + 1, "one round event per round");
    let mut ids: Vec<&str> = rounds
        .iter()
        .flat_map(|r| {
            r["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
        })
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((all, ids.len()), (9, 9), "{rounds:?}");
    let orders = fetch(&url, Filter::new().kind(Kind::from(38383))).await;
    assert_eq!(orders.len(), 9);
    for o in &orders {
        assert!(
            ids.contains(&o.id.to_hex().as_str()),
            "{} is in no round",
            o.id
        );
    }
}

/// A node whose node key, or credentials key, is not the board's refuses
/// to start on the board's store, and says which file to copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_boards_keys_refuses_to_start() {
    let db = civkit_postgres::testing::fresh_database();
    let extra = "[services.credentials]\ntype = \"credentials\"\nkinds = [1]\n\
                 [services.credentials.payment]\nbackend = \"free\"\n";
    let dirs = board(2, &db, extra, &["credentials.key"]);
    let _first = start(dirs[0].path());
    let refused = |dir: &std::path::Path| {
        let out = std::process::Command::new(common::CIVKITD)
            .args(["--config", "civkit.toml"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    for (file, what) in [
        ("node.key", "node key"),
        ("credentials.key", "services.credentials.key_file"),
    ] {
        let other = tempfile::tempdir().unwrap();
        let data = other.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for f in ["node.key", "credentials.key"] {
            std::fs::copy(dirs[1].path().join("data").join(f), data.join(f)).unwrap();
        }
        civkit_framework::keyfile::write_secret(
            &data.join(file),
            &Keys::generate().secret_key().to_secret_hex(),
        )
        .unwrap();
        std::fs::copy(
            dirs[1].path().join("civkit.toml"),
            other.path().join("civkit.toml"),
        )
        .unwrap();
        let err = refused(other.path());
        assert!(err.contains(what) && err.contains(file), "{err}");
    }
    // With the board's files, it starts.
    let second = start(dirs[1].path());
    assert_eq!(status(&second.dir)["store_backend"], "postgres");
}
