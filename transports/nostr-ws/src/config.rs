//! Config of `[transports.<name>] type = "nostr-ws"`.

use std::net::SocketAddr;

use civkit_framework::SessionLimits;

/// Websocket transport settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NostrWsConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest client message in bytes; bigger ones get a NOTICE and are dropped.
    pub max_message_bytes: usize,
    /// Send a NIP-42 `AUTH` challenge when a client connects.
    pub auth_challenge: bool,
    /// Seconds between websocket pings (0: never). A client that has not
    /// answered the previous ping by the next one is disconnected.
    pub ping_interval_secs: u64,
    /// Seconds one write to a client may take before the client is
    /// disconnected (it stopped reading).
    pub write_timeout_secs: u64,
    /// Open connections (websocket, or HTTP waiting for its request) in
    /// total; more are refused at once (503).
    pub max_connections: usize,
    /// Open connections from one IP address; more are refused at once
    /// (429). 0: no per-address bound (behind a reverse proxy every client
    /// has the proxy's address).
    pub max_connections_per_ip: usize,
    /// Seconds a connection has to send a whole HTTP request head (the
    /// websocket upgrade or a NIP-11 request), and to start the next one on
    /// a kept-alive connection; then it is closed. 0 is refused.
    pub header_timeout_secs: u64,
    /// Serve the live order book page to browsers at `/` (and its three
    /// assets); `false`: browsers get a line of text, as other clients.
    pub order_book: bool,
    /// Open connections that arrived through Tor (an onion service hands
    /// them over), all together: Tor hides addresses, so this budget takes
    /// the place of the per-address bound. 0: no bound but the total.
    pub max_tor_connections: usize,
    /// Per-connection limits, enforced by the node's session. Keys left out
    /// keep this transport's defaults.
    #[serde(deserialize_with = "limits_over_defaults")]
    pub limits: SessionLimits,
}

fn limits_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SessionLimits, D::Error> {
    SessionLimits::deserialize_over(d, NostrWsConfig::default().limits)
}

impl Default for NostrWsConfig {
    fn default() -> Self {
        NostrWsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
            max_message_bytes: 128 * 1024,
            auth_challenge: true,
            ping_interval_secs: 30,
            write_timeout_secs: 10,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_tor_connections: 1_000,
            header_timeout_secs: 10,
            order_book: true,
            limits: SessionLimits {
                events_per_second: 50.0,
                event_burst: 200,
                queries_per_second: 10.0,
                query_burst: 50,
                events_in_flight: 32,
                ..SessionLimits::default()
            },
        }
    }
}

pub(crate) const EXAMPLE: &str = r#"# Address and port to listen on.
listen = "127.0.0.1:7777"
# Largest client message in bytes; bigger ones get a NOTICE and are dropped.
max_message_bytes = 131072
# Send a NIP-42 AUTH challenge when a client connects.
auth_challenge = true
# Seconds between websocket pings (0: never). A client that has not answered
# the previous ping by the next one is disconnected.
ping_interval_secs = 30
# Seconds one write to a client may take before it is disconnected.
write_timeout_secs = 10
# Open connections (websocket, or HTTP before its request) in total; more
# are refused at once (503).
max_connections = 10000
# Open connections from one IP address; more are refused (429).
# 0: no per-address bound (behind a reverse proxy).
max_connections_per_ip = 100
# Open connections that arrived through Tor, all together (they have no
# address to bound them by). 0: no bound but max_connections.
max_tor_connections = 1000
# Seconds a connection has to send its HTTP request head (the websocket
# upgrade or a NIP-11 request); a silent or slow one is closed.
header_timeout_secs = 10
# Serve the live order book page to browsers at / (the assets are in the binary).
order_book = true

# Per-connection limits, enforced by the node for this transport's sessions.
[{table}.limits]
# Open subscriptions per connection.
max_subscriptions = 20
# Filters in one REQ or COUNT.
max_filters = 10
# Largest `limit` honoured; bigger ones are lowered to this.
max_limit = 500
# `limit` used when a filter has none.
default_limit = 500
# Longest subscription id.
max_subid_length = 64
# Oldest accepted created_at, in seconds before now (0: no bound).
created_at_lower_limit = 0
# Newest accepted created_at, in seconds after now (0: no bound).
created_at_upper_limit = 900
# Sustained EVENTs per second per connection (0: unlimited).
events_per_second = 50.0
# Burst of EVENTs allowed above the sustained rate.
event_burst = 200
# Require NIP-42 authentication before EVENT, REQ and COUNT.
auth_required = false
# Largest event, in bytes of its JSON (0: no bound beyond max_message_bytes).
max_event_bytes = 65536
# Most values in one filter's ids, authors, kinds or any one tag list.
max_filter_values = 1000
# Sustained REQs and COUNTs per second per connection (0: unlimited).
queries_per_second = 10.0
# Burst of REQs and COUNTs allowed above the sustained rate.
query_burst = 50
# EVENTs of one connection checked and stored at once (pipelining; their OKs
# may come back out of order). 1: one at a time, in order.
events_in_flight = 32
"#;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests assert by panicking

    use super::*;

    #[test]
    fn a_partial_limits_table_keeps_the_transport_defaults() {
        let cfg: NostrWsConfig =
            serde_json::from_value(serde_json::json!({"limits": {"events_per_second": 5.0}}))
                .unwrap();
        let want = SessionLimits {
            events_per_second: 5.0,
            ..NostrWsConfig::default().limits
        };
        // Tightening one limit does not lift the query rate or pipelining
        // back to the framework's defaults (unlimited, one at a time).
        assert_eq!(cfg.limits, want);
        assert_eq!(cfg.limits.queries_per_second, 10.0);
        assert_eq!(cfg.limits.events_in_flight, 32);
    }

    #[test]
    fn an_unknown_limit_is_still_refused() {
        let err = serde_json::from_value::<NostrWsConfig>(serde_json::json!({
            "limits": {"events_per_secnd": 5.0}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("events_per_secnd"), "{err}");
    }
}
