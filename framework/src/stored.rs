//! Stored events as a store hands them back: their JSON text, decoded into
//! an [`Event`] only when something asks.
//!
//! A `REQ` answer needs each event's JSON, and usually nothing else: the
//! store's index already decided that the event matches. Decoding every
//! result into an `Event` (tag vectors, strings, hex) was the largest cost
//! of a `REQ` after the index reads, so [`StoredEvent`] decodes lazily, and
//! its [`StoredEvent::kind`] is read from the JSON's fixed prefix without a
//! decode.

use std::sync::OnceLock;

use nostr::secp256k1::schnorr::Signature;
use nostr::{Event, EventId, Kind, PublicKey, Tag, Timestamp};

use crate::{Error, Result};

/// A stored event: the JSON the store wrote (nostr's own serialization of
/// an event whose id and signature were checked before it was stored), and
/// the [`Event`] it decodes to, decoded once on first use.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    json: String,
    event: OnceLock<std::result::Result<Event, String>>,
}

impl StoredEvent {
    /// An event from its stored JSON. The text is trusted to be what the
    /// store wrote: [`Self::event`] does not check its id or signature again.
    pub fn from_json(json: String) -> Self {
        StoredEvent {
            json,
            event: OnceLock::new(),
        }
    }

    /// The JSON text, as stored.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The decoded event (decoded on the first call); an error when the
    /// stored text is not an event.
    pub fn event(&self) -> Result<&Event> {
        self.event
            .get_or_init(|| decode(&self.json).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|m| bad(m.clone()))
    }

    /// The decoded event, taken out.
    pub fn into_event(self) -> Result<Event> {
        match self.event.into_inner() {
            Some(decoded) => decoded.map_err(bad),
            None => decode(&self.json),
        }
    }

    /// The event's id, read from the JSON's first field without decoding
    /// the event when the JSON has nostr's field order; `None` when the
    /// stored text is not an event.
    pub fn id(&self) -> Option<EventId> {
        if let Some(decoded) = self.event.get() {
            return decoded.as_ref().ok().map(|e| e.id);
        }
        let peeked = self
            .json
            .strip_prefix("{\"id\":\"")
            .and_then(|rest| rest.get(..64))
            .and_then(|hex| unhex::<32>(hex).ok())
            .map(EventId::from_byte_array);
        peeked.or_else(|| self.event().ok().map(|e| e.id))
    }

    /// The event's kind, read without decoding the event when the JSON has
    /// nostr's field order (it always has when the store wrote it); `None`
    /// when the stored text is not an event.
    pub fn kind(&self) -> Option<Kind> {
        if let Some(decoded) = self.event.get() {
            return decoded.as_ref().ok().map(|e| e.kind);
        }
        peek_kind(&self.json).or_else(|| self.event().ok().map(|e| e.kind))
    }
}

impl From<Event> for StoredEvent {
    fn from(event: Event) -> Self {
        let json = crate::canonical::event_json(&event);
        StoredEvent {
            json,
            event: OnceLock::from(Ok(event)),
        }
    }
}

impl PartialEq for StoredEvent {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Eq for StoredEvent {}

fn bad(message: String) -> Error {
    Error::Store {
        backend: "stored event",
        message,
    }
}

/// The kind of an event serialized by nostr (`{"id":"<64 hex>","pubkey":"<64
/// hex>","created_at":<digits>,"kind":<digits>,...`); `None` for any text
/// that does not start exactly so.
fn peek_kind(json: &str) -> Option<Kind> {
    let rest = json.strip_prefix("{\"id\":\"")?;
    let rest = rest.get(64..)?.strip_prefix("\",\"pubkey\":\"")?;
    let rest = rest.get(64..)?.strip_prefix("\",\"created_at\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = rest[digits..].strip_prefix(",\"kind\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || !rest[digits..].starts_with(',') {
        return None;
    }
    rest[..digits].parse::<u16>().ok().map(Kind::from_u16)
}

/// An event as a store wrote it, fields borrowed where JSON allows.
#[derive(serde::Deserialize)]
struct StoredJson<'a> {
    id: &'a str,
    pubkey: &'a str,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: std::borrow::Cow<'a, str>,
    sig: &'a str,
}

/// The value of each hex digit (either case), 0xff for any other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        t[b"0123456789abcdef"[i] as usize] = i as u8;
        t[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// `N` bytes from `2N` hex digits. A table lookup per digit: the `hex`
/// crate's digit-by-digit decoding was half of `decode`, and a sixth of a
/// REQ's CPU.
fn unhex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return Err(bad(
            "a stored event has a hex field of the wrong length".into()
        ));
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (HEX_DIGITS[pair[0] as usize], HEX_DIGITS[pair[1] as usize]);
        if (hi | lo) > 0x0f {
            return Err(bad("a stored event has a non-hex digit".into()));
        }
        *byte = hi << 4 | lo;
    }
    Ok(out)
}

/// An event a store wrote. Its id and signature were checked before it was
/// stored, so they are decoded from hex without being checked again
/// (`Event::from_json` re-validates every field; that was a fifth of a
/// REQ's CPU).
pub fn decode(json: &str) -> Result<Event> {
    let j: StoredJson = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let tags = j
        .tags
        .into_iter()
        .map(Tag::parse)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let sig = Signature::from_slice(&unhex::<64>(j.sig)?).map_err(|e| bad(e.to_string()))?;
    Ok(Event::new(
        EventId::from_byte_array(unhex(j.id)?),
        PublicKey::from_byte_array(unhex(j.pubkey)?),
        Timestamp::from_secs(j.created_at),
        Kind::from_u16(j.kind),
        tags,
        j.content,
        sig,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, JsonUtil, Keys};

    fn event(keys: &Keys, kind: u16, content: &str, tags: &[&[&str]]) -> Event {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        EventBuilder::new(Kind::from_u16(kind), content)
            .tags(tags)
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn stored_events_decode_as_nostr_parses_them() {
        let k = Keys::generate();
        let events = [
            event(&k, 1, "plain", &[]),
            event(
                &k,
                30_402,
                "quote \" slash \\ newline \n tab \t é ✓ \u{1F600}",
                &[
                    &["d", "order-1"],
                    &["t", "btc"],
                    &["expiration", "1900000000"],
                    &["p", &k.public_key().to_hex(), "wss://r.example", "x"],
                    &["e", &"ab".repeat(32)],
                    &["custom"],
                ],
            ),
            event(&k, 65_535, "", &[]),
            event(&k, 0, "{\"kind\":7}", &[]),
        ];
        for e in events {
            let json = e.as_json();
            let decoded = decode(&json).unwrap();
            assert_eq!(decoded, e);
            assert!(decoded.verify().is_ok());
            let stored = StoredEvent::from_json(json.clone());
            assert_eq!(peek_kind(&json), Some(e.kind), "{json}");
            assert_eq!(stored.kind(), Some(e.kind));
            assert_eq!(stored.id(), Some(e.id));
            assert_eq!(stored.event().unwrap(), &e);
            assert_eq!(stored.into_event().unwrap(), e);
            assert_eq!(StoredEvent::from(e.clone()).json(), json);
        }
        // Text that is not a stored event is an error, not a panic, and
        // has no kind.
        for bad in [
            "{}",
            "not json",
            "",
            "{\"id\":\"é",
            r#"{"id":"zz","pubkey":"","created_at":1,"kind":1,"tags":[],"content":"","sig":""}"#,
        ] {
            assert!(decode(bad).is_err());
            let stored = StoredEvent::from_json(bad.to_string());
            assert!(stored.event().is_err());
            assert_eq!(stored.kind(), None);
            assert_eq!(stored.id(), None);
            assert!(stored.into_event().is_err());
        }
        // Every hex field: wrong length or a non-digit is an error; either
        // case decodes.
        let good = event(&k, 1, "x", &[]);
        let json = good.as_json();
        for field in [good.id.to_hex(), good.pubkey.to_hex(), good.sig.to_string()] {
            let short = json.replacen(&field, &field[2..], 1);
            assert!(decode(&short).is_err());
            let bad_digit = json.replacen(&field, &format!("g{}", &field[1..]), 1);
            assert!(decode(&bad_digit).is_err());
            let upper = json.replacen(&field, &field.to_uppercase(), 1);
            assert_eq!(decode(&upper).unwrap(), good);
        }
    }

    #[test]
    fn the_kind_is_peeked_only_from_the_exact_prefix() {
        let k = Keys::generate();
        let e = event(&k, 30_402, "x", &[]);
        let json = e.as_json();
        // Out of range, or in another field order: not peeked, but still
        // the decoded event's kind when the text decodes.
        let big = json.replacen("\"kind\":30402", "\"kind\":99999", 1);
        assert_eq!(peek_kind(&big), None);
        assert_eq!(StoredEvent::from_json(big).kind(), None);
        let spaced = json.replacen("\"kind\":30402", "\"kind\": 30402", 1);
        assert_eq!(peek_kind(&spaced), None);
        assert_eq!(StoredEvent::from_json(spaced).kind(), Some(e.kind));
        let reordered = serde_json::to_string(&serde_json::json!({
            "kind": 30402, "id": e.id, "pubkey": e.pubkey, "created_at": e.created_at,
            "tags": e.tags, "content": e.content, "sig": e.sig,
        }))
        .unwrap();
        assert_eq!(peek_kind(&reordered), None);
        assert_eq!(StoredEvent::from_json(reordered).kind(), Some(e.kind));
        // Cut anywhere before the comma after the kind: never a kind, never
        // a panic.
        let end = json.find(",\"tags\"").unwrap();
        for cut in 0..=end {
            if let Some(kind) = peek_kind(&json[..cut]) {
                panic!("a kind {kind} from {cut} bytes");
            }
        }
    }
}
