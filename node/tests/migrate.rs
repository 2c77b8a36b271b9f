//! `civkitd migrate` moves a board's store from LMDB into PostgreSQL and
//! from there into sled: every event, and the deletions, which must not
//! come back. Needs the test server of `bash .ci/test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::path::Path;

use common::{connect, fetch, publish, relay_url, start, write_config};
use nostr::{EventBuilder, Filter, Keys, Kind, Tag, Timestamp};

/// A node dir whose config names its data dir by absolute path (the two
/// configs of a migration are read from one working directory).
fn node_dir(persister: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let path = write_config(t.path(), persister);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "data_dir = \"data\"",
        &format!("data_dir = \"{}\"", t.path().join("data").display()),
        1,
    );
    std::fs::write(&path, text).unwrap();
    t
}

fn migrate(from: &Path, to: &Path) -> (bool, String) {
    let out = std::process::Command::new(common::CIVKITD)
        .arg("migrate")
        .arg("--from")
        .arg(from.join("civkit.toml"))
        .arg("--to")
        .arg(to.join("civkit.toml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What a migrated board must serve and refuse.
async fn check(dir: &Path, kept: &[nostr::Event], deleted: &nostr::Event, replaced: &nostr::Event) {
    let _node = start(dir);
    let mut c = connect(&relay_url(dir)).await;
    let author = kept[0].pubkey;
    let mut got: Vec<_> = fetch(&mut c, Filter::new().author(author).limit(1000))
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut want: Vec<_> = kept.iter().map(|e| e.id).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let (ok, msg) = publish(&mut c, deleted).await;
    assert!(
        !ok && msg.contains("deleted"),
        "a deleted event came back: {msg}"
    );
    let (ok, msg) = publish(&mut c, replaced).await;
    assert!(!ok && msg.contains("newer version"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_lmdb_into_postgresql_and_on_into_sled() {
    let lmdb = node_dir("");
    let db = civkit_postgres::testing::fresh_database();
    let pg = node_dir(&format!(
        "[persister]\ntype = \"postgres\"\nurl = \"{db}\"\n"
    ));
    let sled = node_dir("[persister]\ntype = \"sled\"\n");

    let keys = Keys::generate();
    let now = Timestamp::now().as_secs();
    let notes: Vec<nostr::Event> = (0..120)
        .map(|i| {
            EventBuilder::text_note(format!("note {i}"))
                .tags([Tag::hashtag("moved")])
                .custom_created_at(Timestamp::from(now - 1000 + i))
                .sign_with_keys(&keys)
                .unwrap()
        })
        .collect();
    let version = |text: &str, at: u64| {
        EventBuilder::new(Kind::from(30_078), text)
            .tags([Tag::identifier("settings")])
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&keys)
            .unwrap()
    };
    let (v1, v2) = (version("v1", now - 50), version("v2", now - 40));
    let deletion = EventBuilder::new(Kind::from(5), "")
        .tags([Tag::event(notes[7].id)])
        .custom_created_at(Timestamp::from(now - 30))
        .sign_with_keys(&keys)
        .unwrap();
    {
        let _node = start(lmdb.path());
        let mut c = connect(&relay_url(lmdb.path())).await;
        for e in notes.iter().chain([&v1, &v2, &deletion]) {
            let (ok, msg) = publish(&mut c, e).await;
            assert!(ok, "{msg}");
        }
    }
    let mut kept: Vec<nostr::Event> = notes.clone();
    kept.remove(7);
    kept.extend([v2.clone(), deletion.clone()]);

    let (ok, out) = migrate(lmdb.path(), pg.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("moved 121 events, 1 deletion tombstones"),
        "{out}"
    );
    check(pg.path(), &kept, &notes[7], &v1).await;

    // A second run into a store that holds events is refused.
    let (ok, out) = migrate(lmdb.path(), pg.path());
    assert!(!ok && out.contains("already holds 121 events"), "{out}");

    let (ok, out) = migrate(pg.path(), sled.path());
    assert!(ok, "{out}");
    check(sled.path(), &kept, &notes[7], &v1).await;
}

/// On a terminal, `civkitd migrate` draws a progress bar (indicatif) of the
/// events moved out of the source's count; in a pipe (the test above) it
/// prints plain lines only. `script` gives the command a pseudo-terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_shows_a_progress_bar_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let lmdb = node_dir("");
    let sled = node_dir("[persister]\ntype = \"sled\"\n");
    {
        let _node = start(lmdb.path());
        let mut c = connect(&relay_url(lmdb.path())).await;
        let keys = Keys::generate();
        for i in 0..40 {
            let e = EventBuilder::text_note(format!("n{i}"))
                .sign_with_keys(&keys)
                .unwrap();
            assert!(publish(&mut c, &e).await.0);
        }
    }
    let command = format!(
        "{} migrate --from {} --to {}",
        common::CIVKITD,
        lmdb.path().join("civkit.toml").display(),
        sled.path().join("civkit.toml").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("moving ["), "{text}");
    assert!(text.contains("/40 events"), "{text}");
    assert!(text.contains("moved 40 events"), "{text}");
}
