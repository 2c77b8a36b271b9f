//! SIGKILL during writes: an event and its claims land together or not at
//! all, and everything acknowledged is there after the restart.
//!
//! The test re-runs its own binary as a writer child, kills it mid-stream,
//! reopens the store and checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civkit_framework::testing::conformance::events::event;
use civkit_framework::{Claim, Persister, SaveOutcome};
use civkit_sled::{LmdbPersister, SledPersister};
use nostr::{EventId, Filter, Keys, Timestamp};

/// `<engine>:<path>` of the writer child.
const CHILD: &str = "CIVKIT_STORE_CRASH_CHILD";

fn open(engine: &str, path: &std::path::Path) -> Arc<dyn Persister> {
    match engine {
        "lmdb" => Arc::new(LmdbPersister::open(path).unwrap()),
        _ => Arc::new(SledPersister::open(path).unwrap()),
    }
}
const NOW: u64 = 1_700_000_000;

fn claim_for(i: u64, id: &EventId) -> Claim {
    Claim {
        namespace: "cred".into(),
        key: format!("spent:{i}").into_bytes(),
        value: id.to_bytes().to_vec(),
    }
}

/// The writer child: saves events with claims as fast as it can and prints
/// the number of each one acknowledged. Runs only when spawned by the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    let Ok(child) = std::env::var(CHILD) else {
        return;
    };
    let (engine, dir) = child.split_once(':').unwrap();
    let p = open(engine, std::path::Path::new(dir));
    let keys = Keys::generate();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1024);
    for worker in 0..16u64 {
        let (p, keys, tx) = (p.clone(), keys.clone(), tx.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let i = n * 16 + worker;
                let e = event(&keys, 1, NOW + i, &i.to_string(), &[]);
                let c = [claim_for(i, &e.id)];
                if let Ok(SaveOutcome::Stored { .. }) = p.save_event(&e, &c).await {
                    if tx.send(i).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut out = std::io::stdout();
    while let Some(i) = rx.recv().await {
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_keeps_events_and_claims_together_lmdb() {
    sigkill_keeps_events_and_claims_together("lmdb");
}

#[test]
fn sigkill_keeps_events_and_claims_together_sled() {
    sigkill_keeps_events_and_claims_together("sled");
}

fn sigkill_keeps_events_and_claims_together(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{engine}:{}", db.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = HashSet::new();
    let started = Instant::now();
    while acked.len() < 400 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(i) = l.strip_prefix("ack ") {
                    acked.insert(i.parse::<u64>().unwrap());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements already written to the pipe count too.
    for l in lines.map_while(Result::ok) {
        if let Some(i) = l.strip_prefix("ack ") {
            acked.insert(i.parse::<u64>().unwrap());
        }
    }
    assert!(
        acked.len() >= 50,
        "the child acknowledged only {}",
        acked.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = open(engine, &db);
        let stored = p
            .query(&[Filter::new().limit(1_000_000)], Timestamp::from_secs(NOW))
            .await
            .unwrap();
        let stored_n: HashSet<u64> = stored.iter().map(|e| e.content.parse().unwrap()).collect();
        for i in &acked {
            assert!(stored_n.contains(i), "acknowledged event {i} is gone");
        }
        // Every stored event holds its claim, and every claim its event.
        for e in &stored {
            let i: u64 = e.content.parse().unwrap();
            let c = claim_for(i, &e.id);
            assert_eq!(
                p.kv_get("cred", &c.key).await.unwrap(),
                Some(c.value),
                "event {i} without its claim"
            );
        }
        let claims = p.kv_scan("cred", b"spent:").await.unwrap();
        assert_eq!(claims.len(), stored.len(), "a claim without its event");
        assert_eq!(p.stats().await.unwrap().events, stored.len() as u64);
        println!(
            "{engine}: acknowledged {}, stored {} after SIGKILL",
            acked.len(),
            stored.len()
        );
    });
}
