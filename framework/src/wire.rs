//! The one NIP-01 message type of the workspace, in both directions.
//!
//! It is the `nostr` crate's [`RelayMessage`] and [`ClientMessage`]; this
//! module adds what every transport and client needs around them: a bounded
//! parser with the framework's error type, and the `EVENT` message built
//! from an event that was serialized once for all its subscribers. Every
//! component that reads relay messages (the bolt8 import, the onion client,
//! `civkit-sample`, `civkit-bench`, the testing client) goes through
//! [`parse_relay`]; none parses NIP-01 arrays by hand.

pub use nostr::{ClientMessage, RelayMessage};

use nostr::JsonUtil;

use crate::{Error, Result};

/// Largest relay message [`parse_relay`] reads (1 MiB); longer text is refused
/// before it is parsed.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Parse a relay-to-client message (`EVENT`, `OK`, `EOSE`, `CLOSED`,
/// `NOTICE`, `AUTH`, `COUNT`). Events are decoded, not verified: whoever
/// acts on one checks it (the node does, for imports).
pub fn parse_relay(text: &str) -> Result<RelayMessage<'static>> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Invalid(format!(
            "relay message of {} bytes (at most {MAX_MESSAGE_BYTES})",
            text.len()
        )));
    }
    RelayMessage::from_json(text).map_err(|e| Error::Invalid(format!("relay message: {e}")))
}

/// `["EVENT", <sub>, <event json>]` from an event serialized once.
pub fn event_message(sub: &str, event_json: &str) -> String {
    let sub = serde_json::to_string(sub).unwrap_or_else(|_| "\"\"".to_string());
    let mut s = String::with_capacity(event_json.len() + sub.len() + 12);
    s.push_str("[\"EVENT\",");
    s.push_str(&sub);
    s.push(',');
    s.push_str(event_json);
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, SubscriptionId};

    #[test]
    fn event_message_round_trips_through_the_parser() {
        let e = EventBuilder::text_note("hi \"quoted\"")
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let text = event_message("sub\"1", &e.as_json());
        match parse_relay(&text).unwrap() {
            RelayMessage::Event {
                subscription_id,
                event,
            } => {
                assert_eq!(subscription_id.as_str(), "sub\"1");
                assert_eq!(*event, e);
            }
            other => panic!("parsed as {other:?}"),
        }
        let ok = RelayMessage::ok(e.id, false, "blocked: no").as_json();
        assert!(matches!(
            parse_relay(&ok).unwrap(),
            RelayMessage::Ok { status: false, .. }
        ));
        let eose = RelayMessage::eose(SubscriptionId::new("x")).as_json();
        assert!(matches!(
            parse_relay(&eose).unwrap(),
            RelayMessage::EndOfStoredEvents(_)
        ));
    }

    #[test]
    fn hostile_relay_messages_are_errors() {
        for bad in [
            "",
            "{}",
            "[]",
            "[\"EVENT\"]",
            "[\"EVENT\",\"s\",{}]",
            "[\"OK\",\"zz\",true,\"\"]",
            "[1,2]",
        ] {
            assert!(parse_relay(bad).is_err(), "{bad} parsed");
        }
        let huge = format!("[\"NOTICE\",\"{}\"]", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(parse_relay(&huge).is_err());
    }
}
