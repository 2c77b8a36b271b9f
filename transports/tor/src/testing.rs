//! A private Tor network for tests (feature `testing`): the repository's
//! `tests/tor/network.sh`, started and stopped around a test, and arti's
//! configuration for it.

use std::path::Path;

use serde_json::{json, Value};

/// The script that builds the network.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/tor/network.sh");

/// The private network; stopped when dropped, whatever happened.
pub struct Network {
    dir: tempfile::TempDir,
    info: Value,
}

impl Network {
    /// Build and start it; panics with the script's output if it fails.
    #[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    pub fn start() -> Network {
        assert!(
            Path::new("/usr/sbin/tor").exists(),
            "Debian's tor is needed: `bash .ci/test` installs it (apt-get install tor)"
        );
        // A port taken between the script's choice and tor's bind fails a
        // start: try again on fresh ports once, saying why.
        let mut attempt = 0;
        let (mut net, out) = loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("bash")
                .args([SCRIPT, "start"])
                .arg(dir.path())
                .output()
                .unwrap();
            let net = Network {
                info: Value::Null,
                dir,
            };
            if out.status.success() || attempt == 2 {
                break (net, out);
            }
            eprintln!(
                "the private Tor network did not come up, trying again: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        assert!(
            out.status.success(),
            "the private Tor network did not come up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        let info = std::fs::read_to_string(net.dir.path().join("network.json")).unwrap();
        net.info = serde_json::from_str(&info).unwrap();
        net
    }

    /// arti's configuration for this network.
    #[allow(clippy::unwrap_used)]
    pub fn arti(&self) -> serde_json::Map<String, Value> {
        let caches: Vec<Value> = self.info["caches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                json!({
                    "rsa_identity": c["rsa_identity"],
                    "ed_identity": c["ed_identity"],
                    "orports": [c["orport"]],
                })
            })
            .collect();
        json!({
            "tor_network": {
                "authorities": { "v3idents": self.info["authorities"] },
                "fallback_caches": caches,
            },
            // Every relay is on 127.0.0.1.
            "address_filter": { "allow_local_addrs": true },
            "path_rules": { "ipv4_subnet_family_prefix": 33, "ipv6_subnet_family_prefix": 129 },
            // C Tor's onion time period on a TestingTorNetwork: 24 voting intervals of 15 s.
            "override_net_params": { "hsdir_interval": 6 },
            // Test directories live under /tmp.
            "storage": { "permissions": { "dangerously_trust_everyone": true } },
        })
        .as_object()
        .unwrap()
        .clone()
    }

    /// Give the C Tor client the key that authorizes it to the restricted
    /// onion service `onion` (`<56 chars>.onion`): `private_key` is the
    /// base32 x25519 secret, written in C Tor's `.auth_private` format, and
    /// the client is told to read it (SIGHUP).
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub fn authorize_c_tor(&self, onion: &str, private_key: &str) {
        let client = self.dir.path().join("client");
        let host = onion.trim_end_matches(".onion");
        let file = client.join("onion-auth").join("board.auth_private");
        std::fs::write(&file, format!("{host}:descriptor:x25519:{private_key}\n")).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let pid = std::fs::read_to_string(client.join("tor.pid")).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "could not signal the C Tor client");
    }

    /// The C Tor client's SOCKS port.
    pub fn socks(&self) -> u16 {
        self.info["socks_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args([SCRIPT, "stop"])
            .arg(self.dir.path())
            .status();
    }
}
