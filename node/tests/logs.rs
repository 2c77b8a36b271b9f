//! `node.log_format = "json"`: civkitd writes one JSON object per line,
//! with the fields of the spans each line happened in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use serde_json::Value;

#[test]
fn json_logs_are_one_object_per_line_with_span_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("civkit.toml"),
        "[node]\ndata_dir = \"data\"\nlog = \"info\"\nlog_format = \"json\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [transports.relay]\ntype = \"nostr-ws\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let node = common::start_logged(dir.path());
    drop(node);
    let text = std::fs::read_to_string(dir.path().join("civkitd.log")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "websocket relay listening")
        .unwrap_or_else(|| panic!("no listening line: {text}"));
    assert_eq!(listening["span"]["name"], "transport", "{listening}");
    assert_eq!(listening["span"]["instance"], "relay", "{listening}");
    assert_eq!(listening["span"]["kind"], "nostr-ws", "{listening}");
}

#[test]
fn an_unknown_log_format_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("civkit.toml"),
        "[node]\ndata_dir = \"data\"\nlog_format = \"xml\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::CIVKITD)
        .args(["--config", "civkit.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_format"), "{err}");
}
