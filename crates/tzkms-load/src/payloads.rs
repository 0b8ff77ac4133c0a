//! The bytes a baker asks its signer to sign, built to the layouts of the protocol notes (§2.2 blocks,
//! §2.3 preattestations and attestations) and a well-formed generic transaction, so that any signer that
//! parses what it signs accepts them.

use tezos::builder::{BlockPayload, ConsensusPayload};
use tezos::{blake2b_256, ConsensusKind, Curve, PublicKeyHash};

pub use tezos::builder::MAINNET;

/// A 32-byte hash that differs per level (branches, payload hashes), so payloads of different levels differ.
fn hash32(label: &[u8], level: u32) -> [u8; 32] {
    let mut input = label.to_vec();
    input.extend_from_slice(&level.to_be_bytes());
    blake2b_256(&input)
}

/// A preattestation (`0x12`) or attestation (`0x13`) at `level`/`round`. tz4 keys get the BLS-mode encoding
/// (tags 40/41, no slot, 78 bytes); the others tags 20/21 with a slot (80 bytes).
pub fn consensus(
    kind: ConsensusKind,
    curve: Curve,
    chain: [u8; 4],
    level: u32,
    round: u32,
    slot: u16,
) -> Vec<u8> {
    ConsensusPayload::of(kind, curve, level, round)
        .chain(chain)
        .branch(hash32(b"branch", level))
        .slot(slot)
        .payload_hash(hash32(b"payload", level))
        .bytes()
}

/// An unlocked Tenderbake block header (`0x11`) at `level`/`round` whose predecessor was at round 0.
pub fn block(chain: [u8; 4], level: u32, round: u32) -> Vec<u8> {
    BlockPayload::new(level, round)
        .chain(chain)
        .predecessor(hash32(b"predecessor", level))
        .timestamp(1_700_000_000i64 + 6 * i64::from(level))
        .operations_hash(hash32(b"operations", level))
        .context(hash32(b"context", level))
        .payload_hash(hash32(b"payload", level))
        .bytes()
}

fn zarith(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A generic operation (`0x03`): one transaction of 1 mutez from `source` to itself, the counter `seq`
/// making every payload distinct.
pub fn transaction(source: &PublicKeyHash, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(100);
    b.push(0x03);
    b.extend_from_slice(&hash32(b"branch", (seq % u64::from(u32::MAX)) as u32));
    b.push(0x6c);
    b.extend_from_slice(&source.to_binary());
    zarith(1_000, &mut b); // fee
    zarith(seq + 1, &mut b); // counter
    zarith(1_500, &mut b); // gas limit
    zarith(0, &mut b); // storage limit
    zarith(1, &mut b); // amount
    b.push(0x00); // implicit destination
    b.extend_from_slice(&source.to_binary());
    b.push(0x00); // no parameters
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use tezos::{classify, Consensus, ConsensusOperation, Level, Payload, Round, SecretKey};

    fn position(bytes: &[u8]) -> (ConsensusKind, u32, u32) {
        match classify(bytes).expect("classifies") {
            Payload::Consensus(Consensus {
                kind,
                level: Level(l),
                round: Round(r),
                ..
            }) => (kind, l, r),
            other => panic!("not consensus: {other:?}"),
        }
    }

    #[test]
    fn consensus_payloads_classify_at_their_level_and_round() {
        for curve in [Curve::P256, Curve::Bls] {
            for kind in [ConsensusKind::Preattestation, ConsensusKind::Attestation] {
                let bytes = consensus(kind, curve, MAINNET, 1234, 2, 7);
                assert_eq!(bytes.len(), if curve == Curve::Bls { 78 } else { 80 });
                assert_eq!(position(&bytes), (kind, 1234, 2));
            }
        }
    }

    #[test]
    fn blocks_classify_at_the_fitness_round() {
        let bytes = block(MAINNET, 99, 3);
        assert_eq!(position(&bytes), (ConsensusKind::Block, 99, 3));
        assert!(matches!(
            classify(&bytes),
            Ok(Payload::Consensus(Consensus {
                operation: ConsensusOperation::Block,
                ..
            }))
        ));
    }

    #[test]
    fn transactions_are_generic_operations_and_differ_by_counter() {
        let pkh = SecretKey::generate(Curve::P256).public_key().hash();
        let (a, b) = (transaction(&pkh, 1), transaction(&pkh, 2));
        assert_eq!(classify(&a), Ok(Payload::GenericOperation));
        assert_ne!(a, b);
    }
}
