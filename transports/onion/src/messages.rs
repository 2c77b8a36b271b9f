//! The onion-message TLVs that carry NIP-01.
//!
//! | TLV type | payload |
//! |---|---|
//! | 74001 | one NIP-01 client message, UTF-8 JSON (maker to board) |
//! | 74003 | one NIP-01 relay message, UTF-8 JSON (board's reply, over the reply path) |
//!
//! Both are odd, so nodes that do not know them ignore them.

use lightning::onion_message::packet::OnionMessageContents;
use lightning::util::ser::{Writeable, Writer};

/// TLV type of a NIP-01 client message in an onion message.
pub const CLIENT_TLV: u64 = 74001;
/// TLV type of a NIP-01 relay message in an onion message.
pub const RELAY_TLV: u64 = 74003;

/// One NIP-01 message inside an onion message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NostrOnion {
    pub tlv_type: u64,
    pub json: String,
}

impl NostrOnion {
    /// A client message (maker to board).
    pub fn client(json: impl Into<String>) -> Self {
        NostrOnion {
            tlv_type: CLIENT_TLV,
            json: json.into(),
        }
    }
    /// A relay message (board to maker).
    pub fn relay(json: impl Into<String>) -> Self {
        NostrOnion {
            tlv_type: RELAY_TLV,
            json: json.into(),
        }
    }
}

impl Writeable for NostrOnion {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), lightning::io::Error> {
        w.write_all(self.json.as_bytes())
    }
}

impl OnionMessageContents for NostrOnion {
    fn tlv_type(&self) -> u64 {
        self.tlv_type
    }
    fn msg_type(&self) -> &'static str {
        if self.tlv_type == CLIENT_TLV {
            "civkit nostr client message"
        } else {
            "civkit nostr relay message"
        }
    }
}

/// Read a NIP-01 TLV of `tlv_type`: at most `max` bytes of UTF-8, or `None`.
pub fn read_tlv<R: lightning::io::Read>(
    tlv_type: u64,
    buffer: &mut R,
    max: usize,
) -> Option<NostrOnion> {
    let json = civkit_bolt8::wire::read_text(buffer, max).ok()?;
    Some(NostrOnion { tlv_type, json })
}
