//! LDK's onion-message peeling, as the gateway uses it, against the BOLT4
//! test vector `blinded-onion-message-onion-test.json` (Alice -> Bob ->
//! Carol -> Dave, with Dave's blinded path starting at Bob).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use civkit_bolt8::LdkTracing;
use lightning::bitcoin::secp256k1::ecdh::SharedSecret;
use lightning::bitcoin::secp256k1::{ecdsa, schnorr, PublicKey, Scalar, Secp256k1, SecretKey};
use lightning::blinded_path::message::NextMessageHop;
use lightning::ln::inbound_payment::ExpandedKey;
use lightning::ln::msgs::{OnionMessage, UnsignedGossipMessage};
use lightning::ln::peer_handler::IgnoringMessageHandler;
use lightning::offers::invoice::UnsignedBolt12Invoice;
use lightning::onion_message::messenger::{peel_onion_message, PeeledOnion};
use lightning::sign::{KeysManager, NodeSigner, PeerStorageKey, ReceiveAuthKey, Recipient};
use lightning::util::ser::{LengthReadable, Writeable};
use lightning_invoice::RawBolt11Invoice;
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/bolt04/blinded-onion-message-onion-test.json"
);

/// A node signer holding one hop's private key from the vector.
struct HopSigner {
    secret: SecretKey,
    other: KeysManager,
}

impl NodeSigner for HopSigner {
    fn get_expanded_key(&self) -> ExpandedKey {
        self.other.get_expanded_key()
    }
    fn get_peer_storage_key(&self) -> PeerStorageKey {
        self.other.get_peer_storage_key()
    }
    fn get_receive_auth_key(&self) -> ReceiveAuthKey {
        self.other.get_receive_auth_key()
    }
    fn get_node_id(&self, _recipient: Recipient) -> Result<PublicKey, ()> {
        Ok(PublicKey::from_secret_key(&Secp256k1::new(), &self.secret))
    }
    fn ecdh(
        &self,
        _recipient: Recipient,
        other_key: &PublicKey,
        tweak: Option<&Scalar>,
    ) -> Result<SharedSecret, ()> {
        let mut other = *other_key;
        if let Some(t) = tweak {
            other = other.mul_tweak(&Secp256k1::new(), t).map_err(|_| ())?;
        }
        Ok(SharedSecret::new(&other, &self.secret))
    }
    fn sign_invoice(
        &self,
        _: &RawBolt11Invoice,
        _: Recipient,
    ) -> Result<ecdsa::RecoverableSignature, ()> {
        Err(())
    }
    fn sign_bolt12_invoice(&self, _: &UnsignedBolt12Invoice) -> Result<schnorr::Signature, ()> {
        Err(())
    }
    fn sign_gossip_message(&self, _: UnsignedGossipMessage) -> Result<ecdsa::Signature, ()> {
        Err(())
    }
    fn sign_message(&self, _: &[u8]) -> Result<String, ()> {
        Err(())
    }
}

/// The `onion_message` wire bytes of a hop, without the 2-byte type (513).
fn message(hex_msg: &str) -> OnionMessage {
    let bytes = hex::decode(hex_msg).unwrap();
    assert_eq!(&bytes[..2], &[0x02, 0x01], "type 513 onion_message");
    let mut rest = &bytes[2..];
    OnionMessage::read_from_fixed_length_buffer(&mut rest).unwrap()
}

#[test]
fn peeling_follows_the_bolt4_vector_hop_by_hop() {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("fixture")).unwrap();
    let hops = v["decrypt"]["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 4);
    let secp = Secp256k1::new();
    for (i, hop) in hops.iter().enumerate() {
        let signer = HopSigner {
            secret: SecretKey::from_slice(&hex::decode(hop["privkey"].as_str().unwrap()).unwrap())
                .unwrap(),
            other: KeysManager::new(&[i as u8; 32], 0, 0, true),
        };
        let msg = message(hop["onion_message"].as_str().unwrap());
        let peeled = peel_onion_message(
            &msg,
            &secp,
            &signer,
            &LdkTracing,
            &IgnoringMessageHandler {},
        );
        match hop["next_node_id"].as_str() {
            Some(next) => {
                // Alice, Bob and Carol forward: to exactly the next node, with
                // exactly the next hop's onion message.
                let Ok(PeeledOnion::Forward(NextMessageHop::NodeId(id), fwd)) = peeled else {
                    panic!("{} did not forward", hop["alias"]);
                };
                assert_eq!(id.to_string(), next, "{}: next node", hop["alias"]);
                let want = &hops[i + 1]["onion_message"].as_str().unwrap()[4..];
                assert_eq!(
                    hex::encode(fwd.encode()),
                    want,
                    "{}: forwarded message",
                    hop["alias"]
                );
            }
            None => {
                // Dave's payload carries only TLV 1 ("hello"), an unknown odd
                // type, and no message TLV (>= 64); and Dave's blinded path
                // was not created by this LDK node, whose received-path data
                // LDK 0.2 authenticates with its own ReceiveAuthKey. Either
                // way LDK delivers nothing (`peel_onion_message` returns a
                // bare `Err(())`, so the test cannot tell which), and a
                // civkit gateway would have no NIP-01 message to act on. The
                // three forwards above already check every layer's keys.
                assert!(peeled.is_err(), "Dave: nothing is delivered");
            }
        }
    }
}
