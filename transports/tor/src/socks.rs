//! A SOCKS5 front for an arti client, on loopback: tools whose websocket or
//! HTTP libraries speak SOCKS (nostr-sdk, ureq) reach `.onion` boards
//! through it. CONNECT only, no authentication, names resolved by Tor (the
//! client never resolves them itself).

use std::net::SocketAddr;
use std::sync::Arc;

use arti_client::TorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tor_rtcompat::PreferredRuntime;
use tracing::debug;

/// Most connections the proxy holds open at once; more are refused.
const MAX_OPEN: usize = 256;

/// Serve SOCKS5 on `127.0.0.1:0` through `client`; the address it listens on.
pub async fn socks_proxy(client: Arc<TorClient<PreferredRuntime>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let Ok(permit) = open.clone().try_acquire_owned() else {
                continue; // dropped: too many at once
            };
            let client = client.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve(conn, &client).await {
                    debug!(error = %e, "SOCKS connection ended");
                }
            });
        }
    });
    Ok(addr)
}

/// The target of a CONNECT request: a name or an address, and a port.
fn target(kind: u8, body: &[u8]) -> Option<(String, u16)> {
    let (host, rest) = match kind {
        1 if body.len() >= 4 => (
            std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]).to_string(),
            &body[4..],
        ),
        4 if body.len() >= 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            (std::net::Ipv6Addr::from(a).to_string(), &body[16..])
        }
        3 => {
            let n = usize::from(*body.first()?);
            let name = std::str::from_utf8(body.get(1..1 + n)?).ok()?.to_string();
            (name, body.get(1 + n..)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    Some((host, port))
}

async fn serve(mut conn: TcpStream, client: &TorClient<PreferredRuntime>) -> std::io::Result<()> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    // Greeting: version 5, methods; we take "no authentication".
    let mut head = [0u8; 2];
    conn.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(bad("not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    conn.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        conn.write_all(&[5, 0xff]).await?;
        return Err(bad("no acceptable method"));
    }
    conn.write_all(&[5, 0]).await?;
    // Request: version, command, reserved, address type, address, port.
    let mut req = [0u8; 4];
    conn.read_exact(&mut req).await?;
    let body_len = match req[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            conn.read_exact(&mut n).await?;
            let mut rest = vec![0u8; usize::from(n[0]) + 2];
            conn.read_exact(&mut rest).await?;
            let mut body = n.to_vec();
            body.extend(rest);
            return connect(conn, client, req[1], 3, &body).await;
        }
        _ => 0,
    };
    let mut body = vec![0u8; body_len];
    conn.read_exact(&mut body).await?;
    connect(conn, client, req[1], req[3], &body).await
}

async fn connect(
    mut conn: TcpStream,
    client: &TorClient<PreferredRuntime>,
    command: u8,
    kind: u8,
    body: &[u8],
) -> std::io::Result<()> {
    // Reply: version, code, reserved, an IPv4 0.0.0.0:0 bound address.
    let reply = |code: u8| [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    if command != 1 {
        conn.write_all(&reply(7)).await?; // command not supported
        return Ok(());
    }
    let Some((host, port)) = target(kind, body) else {
        conn.write_all(&reply(8)).await?; // address type not supported
        return Ok(());
    };
    match client.connect((host.as_str(), port)).await {
        Ok(mut tor) => {
            conn.write_all(&reply(0)).await?;
            tokio::io::copy_bidirectional(&mut conn, &mut tor).await?;
            Ok(())
        }
        Err(e) => {
            conn.write_all(&reply(4)).await?; // host unreachable
            debug!(error = %e, "Tor connection failed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn targets_parse_and_garbage_does_not() {
        assert_eq!(
            target(1, &[127, 0, 0, 1, 0, 80]),
            Some(("127.0.0.1".into(), 80))
        );
        let mut name = vec![9u8];
        name.extend(b"abc.onion");
        name.extend([0x1f, 0x90]);
        assert_eq!(target(3, &name), Some(("abc.onion".into(), 8080)));
        assert_eq!(target(3, &[20, b'a']), None);
        assert_eq!(target(3, &[]), None);
        assert_eq!(target(1, &[1, 2]), None);
        assert_eq!(target(9, &[0; 10]), None);
    }
}
