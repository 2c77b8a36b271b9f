//! NIP-01 kind semantics, NIP-09 deletion targets and NIP-40 expiration, as pure functions.
//!
//! Persisters and the node pipeline share these so the rules live in one place.

use nostr::{Event, EventId, Kind, PublicKey, Timestamp};

/// How a kind is stored (NIP-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    /// Stored as is.
    Regular,
    /// 0, 3 and 10000-19999: one event per (pubkey, kind).
    Replaceable,
    /// 20000-29999: delivered live, never stored.
    Ephemeral,
    /// 30000-39999: one event per (pubkey, kind, `d` tag).
    Addressable,
}

impl KindClass {
    /// The class's name, as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            KindClass::Regular => "regular",
            KindClass::Replaceable => "replaceable",
            KindClass::Ephemeral => "ephemeral",
            KindClass::Addressable => "addressable",
        }
    }
}

/// The class of a kind.
pub fn classify(kind: Kind) -> KindClass {
    match kind.as_u16() {
        0 | 3 | 10_000..=19_999 => KindClass::Replaceable,
        20_000..=29_999 => KindClass::Ephemeral,
        30_000..=39_999 => KindClass::Addressable,
        _ => KindClass::Regular,
    }
}

/// The NIP-09 deletion kind.
pub const DELETION: u16 = 5;
/// The NIP-42 client authentication kind.
pub const CLIENT_AUTH: u16 = 22242;

/// The slot a replaceable or addressable event occupies: newer events at the
/// same address replace older ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub kind: u16,
    pub pubkey: PublicKey,
    /// The `d` tag's first value for addressable kinds; empty for replaceable kinds.
    pub d: String,
}

impl Address {
    /// Parse a NIP-01 `a` tag value `<kind>:<pubkey hex>:<d>`.
    pub fn parse(value: &str) -> Option<Address> {
        let mut parts = value.splitn(3, ':');
        let kind: u16 = parts.next()?.parse().ok()?;
        let pubkey = PublicKey::from_hex(parts.next()?).ok()?;
        let d = parts.next().unwrap_or("").to_string();
        match classify(Kind::from(kind)) {
            KindClass::Replaceable | KindClass::Addressable => Some(Address { kind, pubkey, d }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.pubkey.to_hex(), self.d)
    }
}

/// First value of the first tag named `name`.
pub fn tag_value<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event.tags.iter().find_map(|t| {
        let s = t.as_slice();
        (s.first().map(String::as_str) == Some(name))
            .then(|| s.get(1).map(String::as_str))
            .flatten()
    })
}

/// The address of a replaceable or addressable event, `None` for other kinds.
pub fn address_of(event: &Event) -> Option<Address> {
    let kind = event.kind.as_u16();
    match classify(event.kind) {
        KindClass::Replaceable => Some(Address {
            kind,
            pubkey: event.pubkey,
            d: String::new(),
        }),
        KindClass::Addressable => Some(Address {
            kind,
            pubkey: event.pubkey,
            d: tag_value(event, "d").unwrap_or("").to_string(),
        }),
        _ => None,
    }
}

/// True when `new` replaces `old` at the same address: newer `created_at`, or
/// the same `created_at` and the lower id (NIP-01).
pub fn supersedes(new: &Event, old: &Event) -> bool {
    (new.created_at, std::cmp::Reverse(new.id)) > (old.created_at, std::cmp::Reverse(old.id))
}

/// NIP-40 expiration timestamp, if the event carries a well-formed one.
pub fn expiration_of(event: &Event) -> Option<Timestamp> {
    tag_value(event, "expiration")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Timestamp::from_secs)
}

/// True when the event has expired at `now`.
pub fn is_expired(event: &Event, now: Timestamp) -> bool {
    expiration_of(event).is_some_and(|exp| exp <= now)
}

/// What a NIP-09 deletion request asks to delete. Only targets owned by the
/// request's author are kept: nobody can delete someone else's events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeletionTargets {
    pub ids: Vec<EventId>,
    pub addresses: Vec<Address>,
}

/// The targets of a kind-5 event (`e` and `a` tags).
pub fn deletion_targets(event: &Event) -> DeletionTargets {
    let mut out = DeletionTargets::default();
    for tag in event.tags.iter() {
        let s = tag.as_slice();
        match (s.first().map(String::as_str), s.get(1)) {
            (Some("e"), Some(v)) => {
                if let Ok(id) = EventId::from_hex(v) {
                    out.ids.push(id);
                }
            }
            (Some("a"), Some(v)) => {
                if let Some(addr) = Address::parse(v).filter(|a| a.pubkey == event.pubkey) {
                    out.addresses.push(addr);
                }
            }
            _ => {}
        }
    }
    out
}

/// The NIP-01 result order: newest first, ties broken by lowest id.
pub fn result_order(a: &Event, b: &Event) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Tag};

    #[test]
    fn classes_follow_nip01_ranges() {
        assert_eq!(classify(Kind::from(0)), KindClass::Replaceable);
        assert_eq!(classify(Kind::from(1)), KindClass::Regular);
        assert_eq!(classify(Kind::from(3)), KindClass::Replaceable);
        assert_eq!(classify(Kind::from(41)), KindClass::Regular);
        assert_eq!(classify(Kind::from(10_002)), KindClass::Replaceable);
        assert_eq!(classify(Kind::from(20_001)), KindClass::Ephemeral);
        assert_eq!(classify(Kind::from(38_383)), KindClass::Addressable);
    }

    #[test]
    fn deletion_keeps_only_own_addresses() {
        let me = Keys::generate();
        let other = Keys::generate();
        let ev = EventBuilder::new(Kind::from(5), "")
            .tag(Tag::parse(["a", &format!("30000:{}:x", other.public_key().to_hex())]).unwrap())
            .tag(Tag::parse(["a", &format!("30000:{}:y", me.public_key().to_hex())]).unwrap())
            .tag(Tag::parse(["e", "zz"]).unwrap())
            .sign_with_keys(&me)
            .unwrap();
        let t = deletion_targets(&ev);
        assert_eq!(t.ids.len(), 0);
        assert_eq!(t.addresses.len(), 1);
        assert_eq!(t.addresses[0].d, "y");
    }
}
