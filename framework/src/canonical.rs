//! An event's two NIP-01 serializations, written straight from its fields,
//! and its signature check with the author's key parsed once.
//!
//! nostr's `Event::verify_id` builds a `serde_json::Value` tree of the
//! commitment `[0,pubkey,created_at,kind,tags,content]` and then a string,
//! and `as_json` prints the id, key and signature through `Display` one hex
//! digit at a time. Both are on every event's ingest path. Here the
//! commitment streams into SHA-256 and the stored JSON into one buffer, with
//! serde_json's own string escaping (so the bytes are the same) and hex
//! from a table.
//!
//! Parsing an author's x-only key takes a square root, about a sixth of a
//! BIP-340 check; [`verify_signature`] keeps the last keys it parsed in a
//! small direct-mapped cache, so an author who posts again is not parsed
//! again. A key that collides with another only costs a parse.

use std::io;
use std::sync::Mutex;

use nostr::hashes::sha256::{self, Hash as Sha256Hash};
use nostr::hashes::{Hash, HashEngine};
use nostr::secp256k1::{Message, XOnlyPublicKey, SECP256K1};
use nostr::{Event, EventId, PublicKey};
use serde::ser::{Serialize, SerializeStruct, SerializeTuple, Serializer};

/// The event's id as NIP-01 defines it: the SHA-256 of its commitment.
pub fn event_id(event: &Event) -> EventId {
    let mut writer = HashWriter(sha256::HashEngine::default());
    let commitment = Commitment(event);
    // Writing into a hash engine cannot fail, and every field serializes.
    if serde_json::to_writer(&mut writer, &commitment).is_err() {
        return EventId::all_zeros();
    }
    EventId::from_byte_array(Sha256Hash::from_engine(writer.0).to_byte_array())
}

/// Whether the event's id is the hash of its commitment.
pub fn verify_id(event: &Event) -> bool {
    event_id(event) == event.id
}

/// The event as JSON, byte for byte what nostr's `as_json` gives.
pub fn event_json(event: &Event) -> String {
    let mut out = Vec::with_capacity(300 + event.content.len());
    if serde_json::to_writer(&mut out, &Stored(event)).is_err() {
        return nostr::JsonUtil::as_json(event);
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether the event's BIP-340 signature over its id is valid for its author.
pub fn verify_signature(event: &Event) -> bool {
    let Some(key) = xonly(&event.pubkey) else {
        return false;
    };
    let message = Message::from_digest(event.id.to_bytes());
    SECP256K1.verify_schnorr(&event.sig, &message, &key).is_ok()
}

const KEY_SLOTS: usize = 1024;

type Slot = Mutex<Option<([u8; 32], XOnlyPublicKey)>>;

static KEYS: [Slot; KEY_SLOTS] = [const { Mutex::new(None) }; KEY_SLOTS];

/// The author's parsed key, from the cache when it was parsed lately.
fn xonly(pubkey: &PublicKey) -> Option<XOnlyPublicKey> {
    let bytes = pubkey.to_bytes();
    let slot = &KEYS[usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % KEY_SLOTS];
    if let Ok(held) = slot.lock() {
        if let Some((b, key)) = held.as_ref() {
            if *b == bytes {
                return Some(*key);
            }
        }
    }
    let key = XOnlyPublicKey::from_slice(&bytes).ok()?;
    if let Ok(mut held) = slot.lock() {
        *held = Some((bytes, key));
    }
    Some(key)
}

struct HashWriter(sha256::HashEngine);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.input(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `N` bytes as `2N` lowercase hex digits.
struct Hex<const N: usize>([u8; N]);

const DIGITS: &[u8; 16] = b"0123456789abcdef";

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // At most 64 bytes (a signature), so 128 digits.
        let mut buf = [0u8; 128];
        for (pair, byte) in buf.chunks_exact_mut(2).zip(self.0.iter()) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        let digits = buf.get(..2 * N).unwrap_or(&[]);
        // Only ASCII digits were written.
        s.serialize_str(std::str::from_utf8(digits).unwrap_or_default())
    }
}

struct Commitment<'a>(&'a Event);

impl Serialize for Commitment<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(&0u8)?;
        t.serialize_element(&Hex(e.pubkey.to_bytes()))?;
        t.serialize_element(&e.created_at.as_secs())?;
        t.serialize_element(&e.kind.as_u16())?;
        t.serialize_element(&e.tags)?;
        t.serialize_element(&e.content)?;
        t.end()
    }
}

struct Stored<'a>(&'a Event);

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut t = s.serialize_struct("Event", 7)?;
        t.serialize_field("id", &Hex(e.id.to_bytes()))?;
        t.serialize_field("pubkey", &Hex(e.pubkey.to_bytes()))?;
        t.serialize_field("created_at", &e.created_at.as_secs())?;
        t.serialize_field("kind", &e.kind.as_u16())?;
        t.serialize_field("tags", &e.tags)?;
        t.serialize_field("content", &e.content)?;
        t.serialize_field("sig", &Hex(e.sig.serialize()))?;
        t.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nostr::{EventBuilder, JsonUtil, Keys, Kind, Tag, Timestamp};

    /// Text that exercises every escaping rule: quotes, backslashes, each
    /// control character, DEL, the JSON-legal line separators, non-BMP
    /// characters and a lone surrogate's neighbours.
    fn hostile_texts() -> Vec<String> {
        let mut texts: Vec<String> = (0u8..0x20).map(|c| format!("a{}b", c as char)).collect();
        texts.extend(
            [
                "",
                "\"quoted\" \\ back\\slash /",
                "\u{7f}\u{80}\u{2028}\u{2029}\u{feff}",
                "emoji 🧅 and 𝄞, CJK 市場, RTL \u{202e}",
                "\\u0000 written out",
            ]
            .map(String::from),
        );
        texts
    }

    fn events() -> Vec<Event> {
        let keys = Keys::generate();
        let mut out = Vec::new();
        for (i, text) in hostile_texts().into_iter().enumerate() {
            let tags = [
                Tag::parse(["t", &text]).unwrap(),
                Tag::parse(["e", &"ab".repeat(32), &text, "root"]).unwrap(),
                Tag::parse([text.as_str()]).unwrap(),
            ];
            let e = EventBuilder::new(Kind::from(i as u16 * 997), text)
                .tags(tags)
                .custom_created_at(Timestamp::from(u64::from(u32::MAX) + i as u64))
                .sign_with_keys(&keys)
                .unwrap();
            out.push(e);
        }
        out
    }

    #[test]
    fn the_stored_json_is_nostrs_byte_for_byte() {
        for e in events() {
            assert_eq!(event_json(&e), e.as_json());
            assert_eq!(Event::from_json(event_json(&e)).unwrap(), e);
        }
    }

    #[test]
    fn the_id_is_the_hash_nostr_computes() {
        for e in events() {
            assert_eq!(event_id(&e), e.id);
            assert!(verify_id(&e));
            assert!(verify_signature(&e));
        }
    }

    #[test]
    fn a_changed_field_or_a_foreign_signature_fails() {
        let other = events().pop().unwrap();
        for mut e in events() {
            let signed = e.clone();
            e.content.push(' ');
            assert!(!verify_id(&e), "content changed");
            let mut e = signed.clone();
            e.created_at = Timestamp::from(e.created_at.as_secs() + 1);
            assert!(!verify_id(&e), "created_at changed");
            let mut e = signed.clone();
            e.sig = other.sig;
            assert!(!verify_signature(&e), "another event's signature");
            // The same key is now cached: a forged signature still fails.
            assert!(verify_signature(&signed));
            let mut e = signed.clone();
            e.pubkey = Keys::generate().public_key();
            assert!(!verify_signature(&e), "another author");
        }
    }

    #[test]
    fn an_author_key_that_is_not_on_the_curve_fails_without_panicking() {
        let e = events().pop().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&e.as_json()).unwrap();
        // x = 5 is not the x-coordinate of any point on secp256k1.
        json["pubkey"] = format!("{}05", "0".repeat(62)).into();
        let Ok(forged) = Event::from_json(json.to_string()) else {
            return; // nostr refused it at parse time: nothing reaches us.
        };
        assert!(!verify_signature(&forged));
        assert!(!verify_signature(&forged), "a refused key is not cached");
    }
}
