//! Start civkitd as a real process in a temp dir, on free ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const CIVKITD: &str = env!("CARGO_BIN_EXE_civkitd");
pub const CLI: &str = env!("CARGO_BIN_EXE_civkit-cli");
pub const SAMPLE: &str = env!("CARGO_BIN_EXE_civkit-sample");

pub struct Proc {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on free ports, rate limit off, with extra TOML appended.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = format!(
        "[node]\ndata_dir = \"data\"\nlog = \"warn\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n\n\
         [transports.relay.limits]\nevents_per_second = 0.0\n{extra}"
    );
    let path = dir.join("civkit.toml");
    std::fs::write(&path, cfg).expect("write config");
    path
}

/// Start civkitd in `dir` with `civkit.toml` and wait for its admin endpoint.
pub fn start(dir: &Path) -> Proc {
    let endpoint = dir.join("data").join("admin.endpoint");
    let _ = std::fs::remove_file(&endpoint);
    let child = Command::new(CIVKITD)
        .args(["--config", "civkit.toml"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn civkitd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoint.exists() {
        assert!(Instant::now() < deadline, "civkitd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc {
        child,
        dir: dir.to_path_buf(),
    }
}

/// Run civkit-cli in `dir`; returns (success, stdout, stderr).
pub fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CLI)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run civkit-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `civkit-cli --config civkit.toml --json status`.
pub fn status(dir: &Path) -> Value {
    let (ok, out, err) = cli(dir, &["--config", "civkit.toml", "--json", "status"]);
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).expect("status json")
}

pub fn relay_url(dir: &Path) -> String {
    status(dir)["endpoints"]["relay"]
        .as_str()
        .expect("relay endpoint")
        .to_string()
}

/// Run civkit-sample without blocking the async runtime; (success, stdout + stderr).
pub async fn sample_async<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = tokio::process::Command::new(SAMPLE)
        .args(args)
        .output()
        .await
        .expect("run civkit-sample");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
