//! Peers at Tor v3 onion addresses (BOLT7's address descriptor type 4),
//! dialed through the node's Tor transport, and BOLT8 connections that
//! arrive through the board's own onion service.
//!
//! LDK's tokio glue (lightning-net-tokio) runs a connection on a
//! `std::net::TcpStream` only. A stream from Tor is therefore joined to one
//! end of a loopback TCP pair made for that stream alone, and LDK gets the
//! other end; nothing listens on a port for longer than it takes to make
//! the pair, and the pair is checked to be ours.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use civkit_framework::stream::{Dialer, Io, StreamSink};
use lightning::ln::msgs::{SocketAddress, SocketAddressParseError};
use sha3::{Digest, Sha3_256};
use tokio::net::{TcpListener, TcpStream};

use crate::PeerMgr;

/// How long a stream through Tor may take to open.
const TOR_CONNECT: Duration = Duration::from_secs(60);

/// Where a peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// An IP address and port, dialed directly.
    Ip(SocketAddr),
    /// A DNS name and port: resolved when dialed directly, or by the exit
    /// when dialed through Tor.
    Name {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
    /// A Tor v3 onion service (`<56 base32 chars>.onion`) and port, dialed
    /// through the node's Tor transport.
    Onion {
        /// The `.onion` host name, lower case.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Name { host, port } | PeerAddr::Onion { host, port } => {
                write!(f, "{host}:{port}")
            }
        }
    }
}

/// `host:port` as a Tor v3 onion address, checked as rend-spec-v3 says
/// (version 3, and the checksum over the key); `Ok(None)` when `addr` is
/// not an onion address at all.
pub(crate) fn parse_onion(addr: &str) -> Result<Option<PeerAddr>, String> {
    let lower = addr.to_ascii_lowercase();
    let Some((host, _)) = lower.rsplit_once(':') else {
        return Ok(None);
    };
    if !host.ends_with(".onion") {
        return Ok(None);
    }
    let bad =
        || format!("`{addr}` is not a Tor v3 onion address (<56 base32 characters>.onion:port)");
    match lower.parse::<SocketAddress>() {
        Ok(SocketAddress::OnionV3 {
            ed25519_pubkey,
            checksum,
            version,
            port,
        }) => {
            if version != 3 || checksum != onion_checksum(&ed25519_pubkey, version) {
                return Err(bad());
            }
            Ok(Some(PeerAddr::Onion {
                host: host.to_string(),
                port,
            }))
        }
        Err(SocketAddressParseError::InvalidPort) => Err(format!("`{addr}` has no valid port")),
        _ => Err(bad()),
    }
}

/// rend-spec-v3: `SHA3-256(".onion checksum" | PUBKEY | VERSION)[..2]`.
fn onion_checksum(key: &[u8; 32], version: u8) -> u16 {
    let mut h = Sha3_256::new();
    h.update(b".onion checksum");
    h.update(key);
    h.update([version]);
    let d = h.finalize();
    u16::from_be_bytes([d[0], d[1]])
}

/// A stream to the onion peer through `dialer`, as a TCP stream for LDK.
pub(crate) async fn dial(
    dialer: Option<Arc<dyn Dialer>>,
    host: &str,
    port: u16,
) -> Result<std::net::TcpStream, String> {
    let dialer = dialer.ok_or("an onion peer needs a running tor transport on this node")?;
    let io = tokio::time::timeout(TOR_CONNECT, dialer.connect(host, port))
        .await
        .map_err(|_| format!("no stream through Tor within {} s", TOR_CONNECT.as_secs()))?
        .map_err(|e| format!("through Tor: {e}"))?;
    bridge(io)
        .await
        .map_err(|e| format!("loopback bridge: {e}"))
}

/// Join `io` to one end of a fresh loopback TCP pair; the other end, for
/// LDK. The copying ends, and both ends close, as soon as either side ends.
pub(crate) async fn bridge(io: Box<dyn Io>) -> std::io::Result<std::net::TcpStream> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let ours = TcpStream::connect(listener.local_addr()?).await?;
    let (theirs, from) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await??;
    drop(listener);
    // Another local process could have connected first: the pair must be ours.
    if from != ours.local_addr()? {
        return Err(std::io::Error::other(
            "the loopback pair was taken by another connection",
        ));
    }
    ours.set_nodelay(true)?;
    theirs.set_nodelay(true)?;
    tokio::spawn(async move {
        let (mut io_read, mut io_write) = tokio::io::split(io);
        let (mut tcp_read, mut tcp_write) = theirs.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut io_read, &mut tcp_write) => {}
            _ = tokio::io::copy(&mut tcp_read, &mut io_write) => {}
        }
    });
    ours.into_std()
}

/// BOLT8 connections that arrive through the board's onion service: each
/// is bridged to LDK as an inbound connection. The onion service's stream
/// budget bounds how many are open; `max_inbound_peers` bounds the
/// strangers among them once they say who they are.
pub(crate) struct TorInbound {
    /// Weak: the node holds the sink, and must not keep a stopped
    /// transport's peer manager alive.
    pub pm: std::sync::Weak<PeerMgr>,
    pub node_id: lightning::bitcoin::secp256k1::PublicKey,
}

impl StreamSink for TorInbound {
    fn serve(&self, io: Box<dyn Io>) -> bool {
        let Some(pm) = self.pm.upgrade() else {
            return false;
        };
        tokio::spawn(async move {
            match bridge(io).await {
                Ok(std) => {
                    tracing::debug!("inbound BOLT8 connection through Tor");
                    lightning_net_tokio::setup_inbound(pm, std).await;
                }
                Err(e) => tracing::debug!(error = %e, "could not bridge a Tor stream"),
            }
        });
        true
    }
    fn endpoint(&self, host: &str, port: u16) -> String {
        format!("ln://{}@{host}:{port}", self.node_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // The onion service of the Tor Project's website (a real v3 address).
    const TORPROJECT: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    #[test]
    fn v3_onion_addresses_are_checked() {
        let ok = parse_onion(&format!("{TORPROJECT}:9735")).unwrap().unwrap();
        assert_eq!(
            ok,
            PeerAddr::Onion {
                host: TORPROJECT.into(),
                port: 9735
            }
        );
        let upper = parse_onion(&format!("{}:9735", TORPROJECT.to_uppercase()))
            .unwrap()
            .unwrap();
        assert_eq!(upper, ok, "base32 is read in either case");
        assert_eq!(parse_onion("127.0.0.1:9735").unwrap(), None);
        assert_eq!(parse_onion("example.com:9735").unwrap(), None);

        // One character changed: the checksum no longer matches.
        let mut forged = TORPROJECT.to_string();
        forged.replace_range(0..1, "3");
        assert!(parse_onion(&format!("{forged}:9735")).is_err());
        // A v2 address, a short one, no port, a bad port.
        assert!(parse_onion("expyuzz4wqqyqhjn.onion:80").is_err());
        assert!(parse_onion("abc.onion:80").is_err());
        assert!(parse_onion(&format!("{TORPROJECT}:")).is_err());
        assert!(parse_onion(&format!("{TORPROJECT}:99999")).is_err());
        // Not base32.
        let mut garbage = TORPROJECT.to_string();
        garbage.replace_range(0..1, "1");
        assert!(parse_onion(&format!("{garbage}:80")).is_err());
    }

    #[tokio::test]
    async fn a_bridged_stream_carries_both_ways_and_closes_with_either_side() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut far, near) = tokio::io::duplex(1024);
        let std = bridge(Box::new(near)).await.unwrap();
        std.set_nonblocking(true).unwrap();
        let mut tcp = TcpStream::from_std(std).unwrap();
        tcp.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        far.write_all(b"pong").await.unwrap();
        tcp.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // The Tor side ends: the TCP side is closed.
        drop(far);
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }
}
