//! civkit-sample as a subprocess: a maker and two takers across two boards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{relay_url, start, write_config, SAMPLE};

fn sample(home: &Path, boards: &[&str], args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(SAMPLE);
    cmd.arg("--home").arg(home);
    for b in boards {
        cmd.args(["--board", b]);
    }
    let out = cmd.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn rows_with(out: &str, needle: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn maker_publishes_to_two_boards_and_takers_merge_and_watch() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    write_config(a_dir.path(), "[services.board]\ntype = \"market-board\"\n");
    write_config(
        b_dir.path(),
        "[services.board]\ntype = \"market-board\"\ncurrencies = [\"NGN\"]\n",
    );
    let _a = start(a_dir.path());
    let _b = start(b_dir.path());
    let (ua, ub) = (relay_url(a_dir.path()), relay_url(b_dir.path()));
    let both = [ua.as_str(), ub.as_str()];
    let people = tempfile::tempdir().unwrap();
    let (maker, taker1, taker2) = (
        people.path().join("maker"),
        people.path().join("t1"),
        people.path().join("t2"),
    );

    let (ok, out) = sample(&maker, &both, &["keygen"]);
    assert!(ok, "{out}");
    let mode = std::fs::metadata(maker.join("key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Taker 2 is watching before the order exists.
    let watcher = Command::new(SAMPLE)
        .arg("--home")
        .arg(&taker2)
        .args([
            "--board",
            &ua,
            "--board",
            &ub,
            "orders",
            "watch",
            "--currency",
            "NGN",
            "--for",
            "6",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let (ok, out) = sample(
        &maker,
        &both,
        &[
            "order",
            "create",
            "--side",
            "sell",
            "--currency",
            "NGN",
            "--fiat-amount",
            "100000",
            "--payment-method",
            "bank-transfer",
            "--premium",
            "1",
            "--id",
            "ngn-1",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        rows_with(&out, "accepted in").len(),
        2,
        "accepted by both boards, with timing: {out}"
    );
    assert!(out.contains(" ms"), "{out}");

    let (ok, out) = sample(
        &maker,
        &both,
        &[
            "order",
            "create",
            "--side",
            "buy",
            "--currency",
            "USD",
            "--fiat-min",
            "50",
            "--fiat-max",
            "200",
            "--payment-method",
            "zelle",
            "--id",
            "usd-1",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(rows_with(&out, "accepted in").len(), 1, "{out}");
    assert!(
        out.contains("rejected: restricted: currency USD is not accepted here"),
        "{out}"
    );

    let (ok, out) = sample(&taker1, &both, &["orders", "list"]);
    assert!(ok, "{out}");
    let ngn = rows_with(&out, "ngn-1");
    assert_eq!(ngn.len(), 1, "merged without duplicates: {out}");
    assert!(
        ngn[0].trim_end().ends_with(" 2"),
        "seen on both boards: {}",
        ngn[0]
    );
    assert!(out.contains("2 order(s) from 2 board(s)"), "{out}");
    let (_, out) = sample(&taker1, &both, &["orders", "list", "--currency", "ngn"]);
    assert!(out.contains("1 order(s)") && out.contains("ngn-1"), "{out}");
    let (_, out) = sample(
        &taker1,
        &both,
        &["orders", "list", "--payment-method", "ZELLE"],
    );
    assert!(out.contains("1 order(s)") && out.contains("usd-1"), "{out}");

    let (ok, out) = sample(
        &maker,
        &both,
        &["order", "update-status", "ngn-1", "in-progress"],
    );
    assert!(ok && out.contains("pending -> in-progress"), "{out}");
    let (_, out) = sample(
        &taker1,
        &both,
        &["orders", "list", "--status", "in-progress"],
    );
    assert!(out.contains("ngn-1") && out.contains("1 order(s)"), "{out}");

    // A taker cannot cancel the maker's order; the maker can.
    sample(&taker1, &both, &["keygen"]);
    // The taker has no order ngn-1 of its own: its request names only its own address.
    sample(&taker1, &both, &["order", "cancel", "ngn-1"]);
    let (_, out) = sample(&taker2, &both, &["orders", "list", "--currency", "NGN"]);
    assert!(out.contains("ngn-1"), "still there: {out}");
    let (ok, out) = sample(&maker, &both, &["order", "cancel", "ngn-1"]);
    assert!(ok, "{out}");
    let (_, out) = sample(&taker2, &both, &["orders", "list"]);
    assert!(!out.contains("ngn-1") && out.contains("usd-1"), "{out}");

    let (ok, out) = sample(&taker1, &[ub.as_str()], &["board", "info"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("\"currencies\":[\"NGN\"]") && out.contains("kind 10383"),
        "{out}"
    );
    assert!(out.contains(&format!("reach it at     {ub}")), "{out}");

    let watched = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(
        rows_with(&text, "ngn-1").len(),
        2,
        "live: the new order, then its update: {text}"
    );
    assert!(!text.contains("usd-1"), "the watch filter holds: {text}");
}

#[test]
fn maker_without_a_key_is_told_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = sample(
        home.path(),
        &["ws://127.0.0.1:1"],
        &["order", "cancel", "x"],
    );
    assert!(!ok && out.contains("civkit-sample keygen"), "{out}");
    sample(home.path(), &[], &["keygen"]);
    let (ok, out) = sample(
        home.path(),
        &["ws://127.0.0.1:1"],
        &[
            "order",
            "create",
            "--side",
            "sell",
            "--currency",
            "NGN",
            "--fiat-amount",
            "1",
            "--payment-method",
            "x",
        ],
    );
    assert!(
        !ok && out.contains("failed") && out.contains("no board accepted"),
        "{out}"
    );
}
