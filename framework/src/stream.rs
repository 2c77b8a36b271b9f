//! Byte streams that cross transports: an onion service hands its streams
//! to the transport that serves them ([`StreamSink`]), and a transport that
//! dials peers by name can dial through Tor ([`Dialer`]).
//!
//! A transport that runs an onion service registers its [`Dialer`] with
//! [`crate::Node::set_dialer`] once it can dial; a transport that can serve
//! streams from elsewhere registers a [`StreamSink`] under its instance
//! name with [`crate::Node::set_stream_sink`].

use async_trait::async_trait;

/// A byte stream (an onion service's stream, a connection through Tor).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Serves streams that arrived through an onion service: they have no
/// address, and whoever serves them must treat them as Tor's.
pub trait StreamSink: Send + Sync + 'static {
    /// Serve `io`; `false` when the sink is full or stopped (the caller
    /// drops the stream). Must not block.
    fn serve(&self, io: Box<dyn Io>) -> bool;
    /// The URL a client uses to reach this sink at `host:port` (an onion
    /// service's name and virtual port), as the transport writes its own
    /// endpoints.
    fn endpoint(&self, host: &str, port: u16) -> String;
}

/// Opens streams to `host:port` through an anonymizing network, which
/// resolves `host` itself (a `.onion` name, or a DNS name resolved at the
/// exit, never locally).
#[async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// A stream to `host:port`; the error says why not.
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Box<dyn Io>>;
}
