//! Property tests: encode/decode round trips, classification of generated consensus payloads at random
//! levels, rounds and tags, and no panic on arbitrary input anywhere a signer parses network bytes.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tezos::builder::{BlockPayload, ConsensusPayload};
use tezos::payload::ConsensusOperation;
use tezos::{base58, classify, ConsensusKind, Level, Payload, PublicKey, PublicKeyHash, Round, Signature};

/// A consensus payload with the given fields, laid out as spec §2.3 says.
fn consensus(magic: u8, tag: u8, chain: [u8; 4], level: u32, round: u32, slot: u16, dal: &[u8]) -> Vec<u8> {
    ConsensusPayload::new(tag, level, round)
        .magic(magic)
        .chain(chain)
        .branch([0x33; 32])
        .slot(slot)
        .payload_hash([0x44; 32])
        .dal(if tag == 40 || tag == 41 { &[] } else { dal })
        .bytes()
}

/// A Tenderbake block header (unlocked or locked fitness) at (level, round).
fn block(level: u32, round: u32, locked: Option<u32>) -> Vec<u8> {
    BlockPayload::new(level, round)
        .chain([1, 2, 3, 4])
        .predecessor([5; 32])
        .timestamp(0)
        .operations_hash([6; 32])
        .locked_round(locked)
        .context([7; 32])
        .payload_hash([8; 32])
        .payload_round(round)
        .proof_of_work_nonce([9; 8])
        .votes(0)
        .bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn base58_round_trips_for_every_prefix(index in 0..base58::ALL.len(), seed in any::<[u8; 96]>()) {
        let prefix = base58::ALL[index];
        let payload = &seed[..prefix.payload_len];
        let text = base58::encode(prefix, payload);
        prop_assert_eq!(base58::decode(prefix, &text).unwrap(), payload.to_vec());
    }

    #[test]
    fn consensus_operations_classify_to_their_fields(
        (magic, tag) in prop_oneof![Just((0x12u8, 20u8)), Just((0x13, 21)), Just((0x13, 23)), Just((0x12, 40)), Just((0x13, 41))],
        chain in any::<[u8; 4]>(),
        level in 0..=i32::MAX as u32,
        round in 0..=i32::MAX as u32,
        slot in any::<u16>(),
        dal in prop::collection::vec(0x80u8..=0xff, 0..4),
        last in 0u8..0x80,
    ) {
        let mut dal = dal;
        dal.push(last);
        let bytes = consensus(magic, tag, chain, level, round, slot, if tag == 23 { &dal } else { &[] });
        let Payload::Consensus(c) = classify(&bytes).unwrap() else { panic!("not consensus") };
        prop_assert_eq!(c.level, Level(level));
        prop_assert_eq!(c.round, Round(round));
        prop_assert_eq!(c.chain_id.0, chain);
        let kind = if magic == 0x12 { ConsensusKind::Preattestation } else { ConsensusKind::Attestation };
        prop_assert_eq!(c.kind, kind);
        match c.operation {
            ConsensusOperation::Preattestation { slot: s }
            | ConsensusOperation::Attestation { slot: s }
            | ConsensusOperation::AttestationWithDal { slot: s } => prop_assert_eq!(s, slot),
            _ => prop_assert!(tag == 40 || tag == 41),
        }
        // Any truncation is an error, never a misread level.
        for n in 1..bytes.len() {
            if tag != 23 || n <= 80 {
                prop_assert!(classify(&bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn blocks_classify_with_the_fitness_round(level in 0..=i32::MAX as u32, round in 0..=i32::MAX as u32, locked in proptest::option::of(0..1000u32)) {
        let Payload::Consensus(c) = classify(&block(level, round, locked)).unwrap() else { panic!("not a block") };
        prop_assert_eq!(c.kind, ConsensusKind::Block);
        prop_assert_eq!((c.level, c.round), (Level(level), Round(round)));
    }

    #[test]
    fn negative_levels_and_rounds_are_refused(level in i32::MIN..0, round in 0..=i32::MAX as u32) {
        let bytes = consensus(0x12, 20, [1; 4], level as u32, round, 0, &[]);
        prop_assert!(classify(&bytes).is_err());
        let bytes = consensus(0x13, 21, [1; 4], round, level as u32, 0, &[]);
        prop_assert!(classify(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(magic in prop_oneof![Just(0x11u8), Just(0x12), Just(0x13), Just(0x01), Just(0x02), any::<u8>()], rest in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = vec![magic];
        bytes.extend(rest);
        let _ = classify(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics_as_keys_or_signatures(text in "\\PC{0,160}") {
        let _ = text.parse::<PublicKeyHash>();
        let _ = text.parse::<PublicKey>();
        let _ = text.parse::<Signature>();
        let _ = text.parse::<tezos::SecretKey>();
        let _ = tezos::encrypted::decrypt(&text, b"x");
        let _ = base58::decode_any(&text);
    }

    #[test]
    fn arbitrary_base58_payloads_never_panic(index in 0..base58::ALL.len(), payload in prop::collection::vec(any::<u8>(), 0..100)) {
        // Well-formed base58check of the wrong length or content for its prefix.
        let prefix = base58::ALL[index];
        let mut data = prefix.bytes.to_vec();
        data.extend(payload);
        let text = bs58::encode(data).with_check().into_string();
        let _ = text.parse::<PublicKeyHash>();
        let _ = text.parse::<PublicKey>();
        let _ = text.parse::<Signature>();
        let _ = text.parse::<tezos::SecretKey>();
        let _ = tezos::encrypted::decrypt(&text, b"x");
    }

    #[test]
    fn arbitrary_key_bytes_never_panic(curve in 0..4usize, bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let curve = tezos::Curve::ALL[curve];
        let _ = PublicKey::from_bytes(curve, &bytes);
        let _ = tezos::SecretKey::from_raw(curve, &bytes);
        let _ = PublicKey::from_affine(curve, &bytes[..bytes.len().min(40)], &bytes[bytes.len() / 2..]);
    }
}
