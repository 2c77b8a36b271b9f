//! `contrib/civkitd.service`: the unit verifies with `systemd-analyze
//! verify`, and its sandbox scores at most 2.0 ("OK") in `systemd-analyze
//! security`. Skipped, saying so, where systemd-analyze is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::process::Command;

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: the unit is not checked");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/civkitd.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/civkitd "), "{unit}");
    // verify checks that ExecStart's binary exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("civkitd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/civkitd", common::CIVKITD),
    )
    .unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("civkitd.service:"),
        "systemd-analyze has remarks on the unit: {said}"
    );

    // Exposure is scored 0-100 here (1.2 is printed as 1.2, compared as 12).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the sandbox is weaker than 2.0: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The user and the state directory the README promises.
    for line in [
        "User=civkit",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
}
