//! The consensus payloads the integration tests sign, built with `tezos::builder` on mainnet; `variant`
//! fills the block payload hash, so two variants at one position are two different payloads.

use tezos::builder::{BlockPayload, ConsensusPayload};

/// A Tenderbake attestation (magic 0x13, tag 21, slot 0) at `level`, round 0.
pub(crate) fn attestation(level: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::attestation(level, 0)
        .payload_hash([variant; 32])
        .bytes()
}

/// An unlocked Tenderbake block header (0x11) at `level`/`round`.
pub(crate) fn block(level: u32, round: u32, variant: u8) -> Vec<u8> {
    BlockPayload::new(level, round)
        .predecessor([0x21; 32])
        .operations_hash([0x22; 32])
        .context([0x23; 32])
        .payload_hash([variant; 32])
        .bytes()
}

/// A preattestation (magic 0x12, tag 20, slot 0) at `level`/`round`.
pub(crate) fn preattestation(level: u32, round: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::preattestation(level, round)
        .payload_hash([variant; 32])
        .bytes()
}

/// A preattestation (`magic` 0x12, tag 20) or attestation (0x13, tag 21) at `level`/`round` with slot 3
/// and branch 0x42…, as the crash and shared-table tests send them.
pub(crate) fn consensus(magic: u8, level: u32, round: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::new(if magic == 0x12 { 20 } else { 21 }, level, round)
        .magic(magic)
        .branch([0x42; 32])
        .slot(3)
        .payload_hash([variant; 32])
        .bytes()
}
