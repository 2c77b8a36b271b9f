//! The real Mainstay proof sequences of `../shared/fixtures/mainstay`
//! (from the pymainstay test suite), with that suite's expectations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

use civkit_mainstay::proof::{self, ProofError, SlotProof};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/mainstay/"
);
const LIST: [&str; 3] = [
    "2ec91e4da17e991b2b11d4de76b43fe9a550ce2a59d8b2e0c9dbebc8f5aead5a",
    "2e93d25081d0c14cfe0d556e0c5c0e4b6b109d50e61f0caa16da33b064c3ac87",
    "50270593506e065e127e8abfa05205337163ebdeeb1ae45428af8b02cda761c9",
];

fn sequence(n: u8) -> Vec<SlotProof> {
    let text = std::fs::read_to_string(format!("{DIR}test_sequence_{n}.msp")).expect("fixture");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sequence_1_is_valid_in_order_and_reaches_the_staychain() {
    let s = sequence(1);
    assert!(
        s.iter().all(|p| proof::verify(p).unwrap()),
        "every proof reaches its root"
    );
    let txid = proof::verify_sequence(&s, &LIST).unwrap();
    assert_eq!(
        txid,
        "5222ffe08bfd4ca0db30d261b2d54d0b6e3faed5276be422e5e6ac32c450ccd7"
    );
    let reordered = [LIST[1], LIST[0], LIST[2]];
    assert!(matches!(
        proof::verify_sequence(&s, &reordered),
        Err(ProofError::Commitments { .. })
    ));
    let dropped = [LIST[0], LIST[2]];
    assert!(
        proof::verify_sequence(&s, &dropped).is_err(),
        "a missing commitment is caught"
    );
}

#[test]
fn sequence_2_breaks_at_its_third_proof() {
    let s = sequence(2);
    assert!(!proof::verify(&s[2]).unwrap());
    assert!(matches!(
        proof::verify_sequence(&s, &LIST),
        Err(ProofError::Unreached { index: 2, .. })
    ));
}

#[test]
fn sequence_3_breaks_at_its_second_proof() {
    let s = sequence(3);
    assert!(!proof::verify(&s[1]).unwrap());
    assert!(proof::verify(&s[0]).unwrap());
    assert!(matches!(
        proof::verify_sequence(&s, &LIST),
        Err(ProofError::Unreached { index: 1, .. })
    ));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut p = sequence(1)[0].clone();
    p.ops[0].commitment = "zz".into();
    assert!(matches!(proof::verify(&p), Err(ProofError::BadHex(_))));
    assert!(matches!(
        proof::verify_sequence(&[], &LIST),
        Err(ProofError::Empty)
    ));
}
