//! The README's two-node deployment, run: two civkitd processes on one
//! PostgreSQL database behind nginx (Debian's `nginx-light`, which
//! `bash .ci/test` installs), with the README's proxy settings. Clients
//! that only know nginx's address land on both nodes and see one board.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{board, connect, publish, relay_url, start};
use futures_util::{SinkExt, StreamExt};
use nostr::{EventBuilder, Filter, Keys};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The `location /` block of the README, verbatim.
const PROXY: &str = r#"
        proxy_pass http://civkit;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Accept $http_accept;   # NIP-11
        proxy_read_timeout 1h;
"#;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run the tests with `bash .ci/test`, which installs it")
}

/// nginx in the foreground on 127.0.0.1:`port`, in front of `upstreams`.
fn nginx(dir: &Path, port: u16, upstreams: &[String]) -> Nginx {
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u};\n"))
        .collect();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             upstream civkit {{\n{servers}    }}\n\
             server {{\n        listen 127.0.0.1:{port};\n        location / {{{PROXY}        }}\n    }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_binary())
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx(child)
}

/// The board's NIP-11 document, through nginx.
async fn nip11(port: u16) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: board.example\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_nginx_serve_one_board() {
    let db = civkit_postgres::testing::fresh_database();
    let dirs = board(2, &db, "", &[]);
    let _nodes: Vec<_> = dirs.iter().map(|d| start(d.path())).collect();
    let upstreams: Vec<String> = dirs
        .iter()
        .map(|d| {
            relay_url(d.path())
                .trim_start_matches("ws://")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    let proxy_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let _nginx = nginx(proxy_dir.path(), port, &upstreams);
    let url = format!("ws://127.0.0.1:{port}");

    // Round robin: consecutive requests reach both nodes, which answer as
    // one board (the same key).
    let (first, second) = (nip11(port).await, nip11(port).await);
    assert!(first["pubkey"].is_string(), "{first}");
    assert_eq!(first["pubkey"], second["pubkey"]);

    // Two takers through nginx (one on each node), then a maker.
    let keys = Keys::generate();
    let mut takers = Vec::new();
    for i in 0..2 {
        let mut t = connect(&url).await;
        let req = json!([
            "REQ",
            format!("t{i}"),
            Filter::new().author(keys.public_key())
        ]);
        t.send(Message::Text(req.to_string().into())).await.unwrap();
        assert_eq!(common::next_message(&mut t).await[0], "EOSE");
        takers.push(t);
    }
    // nginx spread them: one session on each node.
    for d in &dirs {
        assert_eq!(
            common::status(d.path())["connections"]["relay"],
            1,
            "{}",
            d.path().display()
        );
    }
    let mut maker = connect(&url).await;
    let note = EventBuilder::text_note("through the proxy")
        .sign_with_keys(&keys)
        .unwrap();
    let (ok, msg) = publish(&mut maker, &note).await;
    assert!(ok, "{msg}");
    for t in &mut takers {
        let v = common::next_message(t).await;
        assert_eq!(
            (v[0].as_str(), v[2]["id"].as_str()),
            (Some("EVENT"), Some(note.id.to_hex().as_str())),
            "{v}"
        );
    }
    // Nothing more (each taker gets it once).
    for t in &mut takers {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), t.next())
                .await
                .is_err(),
            "a second copy arrived"
        );
    }
}
