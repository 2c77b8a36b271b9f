//! # civkit-fuzzing
//!
//! The entry points the coverage-guided fuzz targets (`fuzz/`, cargo-fuzz)
//! and the smoke test (`tests/smoke.rs`, in the normal suite) drive with
//! hostile bytes, one per input surface, and their seed corpora built from
//! the real fixtures in `../shared/fixtures`. None of them may panic,
//! whatever the bytes; each checks the invariants it can.
//!
//! Long runs: `bash fuzz/run.sh [seconds per target]` (see `SECURITY.md`).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use civkit_framework::testing::TestNode;
use civkit_framework::{Origin, SessionLimits, Source};
use nostr::JsonUtil;

/// The input surfaces, one fuzz target each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// NIP-01 client messages, one per line, into a `Session` over the memory persister.
    Session,
    /// A BOLT8 custom message: 2 bytes of type, then the body.
    Bolt8Message,
    /// An onion-message NIP-01 TLV body, and a blinded path as a board publishes it.
    OnionTlv,
    /// An event as JSON, validated as a NIP-69 order (with its BOLT12 offer).
    Order,
    /// A `credential` tag as a JSON array of strings.
    CredentialTag,
    /// Mainstay proofs, sequences, answers and published rounds, as JSON.
    Mainstay,
    /// civkitd's config file (TOML).
    Config,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 7] = [
        Target::Session,
        Target::Bolt8Message,
        Target::OnionTlv,
        Target::Order,
        Target::CredentialTag,
        Target::Mainstay,
        Target::Config,
    ];

    /// The cargo-fuzz target name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Session => "session",
            Target::Bolt8Message => "bolt8_message",
            Target::OnionTlv => "onion_tlv",
            Target::Order => "order",
            Target::CredentialTag => "credential_tag",
            Target::Mainstay => "mainstay",
            Target::Config => "config",
        }
    }

    /// Run one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Session => session(data),
            Target::Bolt8Message => bolt8_message(data),
            Target::OnionTlv => onion_tlv(data),
            Target::Order => order(data),
            Target::CredentialTag => credential_tag(data),
            Target::Mainstay => mainstay(data),
            Target::Config => config(data),
        }
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    node: TestNode,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let node = rt.block_on(async { TestNode::new() });
        World { rt, node }
    })
}

/// NIP-01 client messages, one per line, into one session.
pub fn session(data: &[u8]) {
    let w = world();
    w.rt.block_on(async {
        let origin = Origin::new("fuzz", Source::Memory { client: 0 });
        let (mut s, mut out) = w.node.node.open_session(origin, SessionLimits::default());
        // Drain replies so a full outbox never blocks the session.
        let drain = tokio::spawn(async move { while out.next().await.is_some() {} });
        for line in data.split(|b| *b == b'\n') {
            s.handle_text(&String::from_utf8_lossy(line)).await;
        }
        drop(s);
        let _ = drain.await;
    });
}

/// A BOLT8 custom message body through the transport's decoder, then (if it
/// decodes) through the bounded relay-message parser.
pub fn bolt8_message(data: &[u8]) {
    let (ty, body) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return,
    };
    let counters = civkit_bolt8::wire::WireCounters::default();
    if let Ok(Some(msg)) = civkit_bolt8::wire::decode(ty, &mut &body[..], 65_000, &counters) {
        assert!(msg.json.len() <= 65_000);
        let _ = civkit_framework::wire::parse_relay(&msg.json);
    }
}

/// An onion NIP-01 TLV body (first byte picks client or relay type), and
/// the same bytes as a published blinded path.
pub fn onion_tlv(data: &[u8]) {
    let Some((sel, body)) = data.split_first() else {
        return;
    };
    let ty = if sel % 2 == 0 {
        civkit_onion::messages::CLIENT_TLV
    } else {
        civkit_onion::messages::RELAY_TLV
    };
    if let Some(m) = civkit_onion::messages::read_tlv(ty, &mut &body[..], 30_000) {
        assert!(m.json.len() <= 30_000);
    }
    let _ = civkit_onion::parse_blinded_path(&String::from_utf8_lossy(body));
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    let _ = civkit_onion::parse_blinded_path(&hex);
}

/// An event (JSON) validated as an order, its offer checked.
pub fn order(data: &[u8]) {
    let Ok(event) = nostr::Event::from_json(data) else {
        return;
    };
    if let Ok(o) = civkit_board::order::parse(&event) {
        let policy = civkit_board::policy::BoardConfig::default();
        let _ = policy.check(&o, event.created_at.as_secs());
        if let Some(offer) = o.bolt12.as_deref() {
            let _ = civkit_board::offer::check(&o, offer, event.created_at.as_secs());
        }
    }
    for t in event.tags.iter() {
        let _ = civkit_board::offer::parse(t.content().unwrap_or_default());
    }
}

/// A `credential` tag, parsed and checked against a fixed board key.
pub fn credential_tag(data: &[u8]) {
    let Ok(values) = serde_json::from_slice::<Vec<String>>(data) else {
        return;
    };
    use civkit_credentials::scheme;
    if let Ok(p) = scheme::parse_tag(&values) {
        let key = scheme::epoch_key(&[7; 32], p.epoch);
        let _ = scheme::verify(&key, &p, b"fuzz binding");
        let _ = scheme::spent_id(&p.spend_key);
    }
}

/// Mainstay data from outside, as JSON: one proof, a sequence, an API
/// answer, published rounds, a proof document.
pub fn mainstay(data: &[u8]) {
    use civkit_mainstay::{client, history, proof, rounds};
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(p) = serde_json::from_value::<proof::SlotProof>(v.clone()) {
        let _ = proof::verify(&p);
        let _ = rounds::verify_inclusion(&p);
    }
    if let Ok(seq) = serde_json::from_value::<Vec<proof::SlotProof>>(v.clone()) {
        let commitments: Vec<String> = seq.iter().map(|p| p.commitment.clone()).collect();
        let refs: Vec<&str> = commitments.iter().map(String::as_str).collect();
        let _ = proof::verify_sequence(&seq, &refs);
    }
    let _ = client::proof_from_answer(v.clone());
    if let Ok(published) = serde_json::from_value::<Vec<history::PublishedRound>>(v.clone()) {
        let seen: Vec<history::Seen> = published
            .iter()
            .flat_map(|p| p.round.events.clone())
            .enumerate()
            .map(|(i, id)| history::Seen {
                id,
                served: i % 2 == 0,
                explained_by: (i % 3 == 0).then_some(history::Gone::Expired),
            })
            .collect();
        let _ = history::check(published, &seen);
    }
    if let Ok(r) = serde_json::from_value::<Vec<rounds::Round>>(v.clone()) {
        let _ = rounds::verify_history(&r);
    }
    let _ = civkit_mainstay::verify_document(&v);
}

/// civkitd's config: parsed, validated, and every component table read
/// the way the daemon reads it (without opening anything).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = civkit_node::config::Config::from_toml(text) {
        let _ = cfg.components();
        let _ = cfg.node_info();
    }
}

/// `../shared/fixtures`, from the workspace root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(fixtures().join(rel)).unwrap_or_default()
}

/// Seed inputs for a target, built from the real fixtures and valid
/// messages of each protocol.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    let keys =
        nostr::Keys::parse("0000000000000000000000000000000000000000000000000000000000000003")
            .expect("a fixed test key");
    let order = |offer: Option<&str>| {
        let mut tags = vec![
            vec!["d", "seed-order"],
            vec!["k", "sell"],
            vec!["f", "EUR"],
            vec!["s", "pending"],
            vec!["amt", "0"],
            vec!["fa", "100"],
            vec!["pm", "sepa"],
            vec!["premium", "1"],
            vec!["network", "mainnet"],
            vec!["layer", "lightning"],
            vec!["expiration", "4102444800"],
            vec!["y", "civkit"],
            vec!["z", "order"],
        ];
        if let Some(o) = offer {
            tags.push(vec!["bolt12", o]);
        }
        nostr::EventBuilder::new(nostr::Kind::from(38383), "")
            .tags(tags.into_iter().filter_map(|t| nostr::Tag::parse(t).ok()))
            .sign_with_keys(&keys)
            .map(|e| e.as_json().into_bytes())
            .unwrap_or_default()
    };
    let offers: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&read("bolt12/offers-test.json"))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["bolt12"].as_str().map(str::to_string))
            .collect();
    match target {
        Target::Session => {
            let note = nostr::EventBuilder::text_note("seed")
                .sign_with_keys(&keys)
                .map(|e| e.as_json())
                .unwrap_or_default();
            vec![
                format!("[\"EVENT\",{note}]").into_bytes(),
                b"[\"REQ\",\"s\",{\"kinds\":[1],\"limit\":10}]\n[\"CLOSE\",\"s\"]".to_vec(),
                b"[\"COUNT\",\"c\",{}]".to_vec(),
                format!(
                    "[\"EVENT\",{}]",
                    String::from_utf8_lossy(&order(offers.first().map(String::as_str)))
                )
                .into_bytes(),
                b"[\"AUTH\",{}]".to_vec(),
            ]
        }
        Target::Bolt8Message => vec![
            [
                &32769u16.to_be_bytes()[..],
                b"[\"REQ\",\"civkit-import\",{\"kinds\":[38383]}]",
            ]
            .concat(),
            [&32771u16.to_be_bytes()[..], b"[\"EOSE\",\"civkit-import\"]"].concat(),
            [&32771u16.to_be_bytes()[..], b"[\"OK\",\"00\",true,\"\"]"].concat(),
        ],
        Target::OnionTlv => {
            let mut out = vec![
                [&[0u8][..], b"[\"EVENT\",{}]"].concat(),
                [&[1u8][..], b"[\"OK\",\"x\",true,\"\"]"].concat(),
            ];
            let v: serde_json::Value =
                serde_json::from_str(&read("bolt04/blinded-onion-message-onion-test.json"))
                    .unwrap_or_default();
            collect_hex(&v, &mut out);
            out
        }
        Target::Order => {
            let mut out = vec![order(None)];
            out.extend(offers.iter().take(40).map(|o| order(Some(o))));
            out
        }
        Target::CredentialTag => vec![
            b"[\"credential\",\"1\",\"02aa\",\"02bb\",\"00\"]".to_vec(),
            serde_json::to_vec(&[
                "credential",
                "20000",
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
                &"00".repeat(64),
            ])
            .unwrap_or_default(),
        ],
        Target::Mainstay => {
            let mut out: Vec<Vec<u8>> = (1..=3)
                .map(|i| read(&format!("mainstay/test_sequence_{i}.msp")).into_bytes())
                .collect();
            if let Ok(serde_json::Value::Array(proofs)) =
                serde_json::from_slice::<serde_json::Value>(&out[0])
            {
                out.extend(proofs.iter().map(|p| p.to_string().into_bytes()));
                if let Some(p) = proofs.first() {
                    out.push(
                        serde_json::json!({ "response": p })
                            .to_string()
                            .into_bytes(),
                    );
                }
            }
            let r = civkit_mainstay::rounds::build(
                0,
                civkit_mainstay::rounds::GENESIS,
                vec!["11".repeat(32), "22".repeat(32)],
            );
            if let Ok(r) = r {
                out.push(
                    serde_json::json!([{ "round": r, "attestation": null }])
                        .to_string()
                        .into_bytes(),
                );
            }
            out
        }
        Target::Config => vec![
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../civkit.example.toml"))
                .unwrap_or_default(),
            b"[transports.relay]\ntype = \"nostr-ws\"\n[services.board]\ntype = \"market-board\"\n"
                .to_vec(),
        ],
    }
}

/// Every long hex string in a JSON fixture, as bytes.
fn collect_hex(v: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 66 && s.len() % 2 == 0 => {
            if let Some(bytes) = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
            {
                out.push([&[0u8][..], &bytes].concat());
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_hex(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_hex(x, out)),
        _ => {}
    }
}

/// A small deterministic mutator for the smoke test: bit flips, byte
/// changes, truncations, duplications and splices.
pub fn mutate(input: &[u8], other: &[u8], seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = input.to_vec();
    for _ in 0..=(next() % 4) {
        let len = out.len().max(1) as u64;
        match next() % 6 {
            0 if !out.is_empty() => {
                let i = (next() % len) as usize;
                out[i] ^= 1 << (next() % 8);
            }
            1 if !out.is_empty() => {
                let i = (next() % len) as usize;
                out[i] = [b'"', b'[', b'{', b'}', b']', b',', b'\\', 0, 0xff, b'9']
                    [(next() % 10) as usize];
            }
            2 => out.truncate((next() % len) as usize),
            3 if !out.is_empty() => {
                let i = (next() % len) as usize;
                let chunk = out[i..].to_vec();
                out.extend_from_slice(&chunk);
            }
            4 if !other.is_empty() => {
                let i = (next() % (other.len() as u64)) as usize;
                out.extend_from_slice(&other[i..]);
            }
            _ => {
                let i = (next() % (out.len() as u64 + 1)) as usize;
                out.insert(i, (next() % 256) as u8);
            }
        }
    }
    out
}
