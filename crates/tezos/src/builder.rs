//! Consensus payloads built from their fields, to the layouts of the protocol notes (§2.2 blocks, §2.3
//! preattestations and attestations): the one encoder the tests, the benches and the load tool share, so
//! each names the fields it cares about (level, round, payload hash) and none lays out bytes by hand.

use crate::{ConsensusKind, Curve};

/// Mainnet's chain id (`NetXdQprcVkpaWU`), the default chain of every builder.
pub const MAINNET: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];

/// A preattestation or attestation (magic `0x12`/`0x13`). Tags 20, 21 and 23 carry a slot (tag 23 a DAL
/// bitset after the payload hash); tz4 tags 40 and 41 carry none.
///
/// ```
/// use tezos::builder::ConsensusPayload;
/// let bytes = ConsensusPayload::attestation(120, 0).payload_hash([7; 32]).bytes();
/// assert_eq!(bytes.len(), 80);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusPayload {
    magic: u8,
    chain: [u8; 4],
    branch: [u8; 32],
    tag: u8,
    slot: u16,
    level: u32,
    round: u32,
    payload_hash: [u8; 32],
    dal: Vec<u8>,
}

impl ConsensusPayload {
    /// Tag `tag` at `level`/`round` under the magic byte its kind uses (`0x12` for 20 and 40, else `0x13`),
    /// on mainnet, slot 0, branch `[0x11; 32]`, payload hash zero, no DAL bitset.
    pub fn new(tag: u8, level: u32, round: u32) -> Self {
        Self {
            magic: if tag == 20 || tag == 40 { 0x12 } else { 0x13 },
            chain: MAINNET,
            branch: [0x11; 32],
            tag,
            slot: 0,
            level,
            round,
            payload_hash: [0; 32],
            dal: Vec::new(),
        }
    }

    /// A preattestation (tag 20).
    pub fn preattestation(level: u32, round: u32) -> Self {
        Self::new(20, level, round)
    }

    /// An attestation (tag 21).
    pub fn attestation(level: u32, round: u32) -> Self {
        Self::new(21, level, round)
    }

    /// A preattestation or attestation as a key of `curve` signs it: BLS keys use tags 40/41, the others
    /// 20/21. `kind` must not be `Block`.
    pub fn of(kind: ConsensusKind, curve: Curve, level: u32, round: u32) -> Self {
        let pre = matches!(kind, ConsensusKind::Preattestation);
        debug_assert!(!matches!(kind, ConsensusKind::Block), "a block is a BlockPayload");
        let tag = match (pre, curve == Curve::Bls) {
            (true, false) => 20,
            (false, false) => 21,
            (true, true) => 40,
            (false, true) => 41,
        };
        Self::new(tag, level, round)
    }

    /// Another magic byte (for payloads a signer must refuse).
    pub fn magic(mut self, magic: u8) -> Self {
        self.magic = magic;
        self
    }

    pub fn chain(mut self, chain: [u8; 4]) -> Self {
        self.chain = chain;
        self
    }

    pub fn branch(mut self, branch: [u8; 32]) -> Self {
        self.branch = branch;
        self
    }

    /// The slot; not encoded under tags 40 and 41.
    pub fn slot(mut self, slot: u16) -> Self {
        self.slot = slot;
        self
    }

    pub fn payload_hash(mut self, hash: [u8; 32]) -> Self {
        self.payload_hash = hash;
        self
    }

    /// Bytes appended after the payload hash: the DAL bitset of tag 23.
    pub fn dal(mut self, dal: &[u8]) -> Self {
        self.dal = dal.to_vec();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(80 + self.dal.len());
        p.push(self.magic);
        p.extend_from_slice(&self.chain);
        p.extend_from_slice(&self.branch);
        p.push(self.tag);
        if self.tag != 40 && self.tag != 41 {
            p.extend_from_slice(&self.slot.to_be_bytes());
        }
        p.extend_from_slice(&self.level.to_be_bytes());
        p.extend_from_slice(&self.round.to_be_bytes());
        p.extend_from_slice(&self.payload_hash);
        p.extend_from_slice(&self.dal);
        p
    }
}

/// A Tenderbake block header (magic `0x11`) whose fitness says `round` and a predecessor at round 0.
///
/// ```
/// use tezos::builder::BlockPayload;
/// let bytes = BlockPayload::new(99, 3).bytes();
/// assert!(matches!(tezos::classify(&bytes), Ok(tezos::Payload::Consensus(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPayload {
    chain: [u8; 4],
    level: u32,
    round: u32,
    predecessor: [u8; 32],
    timestamp: i64,
    operations_hash: [u8; 32],
    locked_round: Option<u32>,
    context: [u8; 32],
    payload_hash: [u8; 32],
    payload_round: u32,
    proof_of_work_nonce: [u8; 8],
    votes: u8,
}

impl BlockPayload {
    /// An unlocked block at `level`/`round` on mainnet: protocol level 1, four validation passes, hashes
    /// zero, timestamp 1 700 000 000, payload round 0, no seed nonce hash, votes `pass` (2).
    pub fn new(level: u32, round: u32) -> Self {
        Self {
            chain: MAINNET,
            level,
            round,
            predecessor: [0; 32],
            timestamp: 1_700_000_000,
            operations_hash: [0; 32],
            locked_round: None,
            context: [0; 32],
            payload_hash: [0; 32],
            payload_round: 0,
            proof_of_work_nonce: [0; 8],
            votes: 2,
        }
    }

    pub fn chain(mut self, chain: [u8; 4]) -> Self {
        self.chain = chain;
        self
    }

    pub fn predecessor(mut self, hash: [u8; 32]) -> Self {
        self.predecessor = hash;
        self
    }

    pub fn timestamp(mut self, seconds: i64) -> Self {
        self.timestamp = seconds;
        self
    }

    pub fn operations_hash(mut self, hash: [u8; 32]) -> Self {
        self.operations_hash = hash;
        self
    }

    /// A locked fitness (37 bytes) at `round` instead of the unlocked one (33 bytes).
    pub fn locked_round(mut self, round: Option<u32>) -> Self {
        self.locked_round = round;
        self
    }

    pub fn context(mut self, hash: [u8; 32]) -> Self {
        self.context = hash;
        self
    }

    pub fn payload_hash(mut self, hash: [u8; 32]) -> Self {
        self.payload_hash = hash;
        self
    }

    pub fn payload_round(mut self, round: u32) -> Self {
        self.payload_round = round;
        self
    }

    pub fn proof_of_work_nonce(mut self, nonce: [u8; 8]) -> Self {
        self.proof_of_work_nonce = nonce;
        self
    }

    /// The per-block votes byte (liquidity baking and adaptive issuance toggles).
    pub fn votes(mut self, votes: u8) -> Self {
        self.votes = votes;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut fitness = Vec::with_capacity(37);
        fitness.extend_from_slice(&[0, 0, 0, 1, 2]); // version
        fitness.extend_from_slice(&[0, 0, 0, 4]);
        fitness.extend_from_slice(&self.level.to_be_bytes());
        match self.locked_round {
            Some(r) => {
                fitness.extend_from_slice(&[0, 0, 0, 4]);
                fitness.extend_from_slice(&r.to_be_bytes());
            }
            None => fitness.extend_from_slice(&[0, 0, 0, 0]),
        }
        fitness.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]); // predecessor round 0
        fitness.extend_from_slice(&[0, 0, 0, 4]);
        fitness.extend_from_slice(&self.round.to_be_bytes());

        let mut b = Vec::with_capacity(200);
        b.push(0x11);
        b.extend_from_slice(&self.chain);
        b.extend_from_slice(&self.level.to_be_bytes());
        b.push(1); // protocol level
        b.extend_from_slice(&self.predecessor);
        b.extend_from_slice(&self.timestamp.to_be_bytes());
        b.push(4); // validation passes
        b.extend_from_slice(&self.operations_hash);
        b.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
        b.extend_from_slice(&fitness);
        b.extend_from_slice(&self.context);
        b.extend_from_slice(&self.payload_hash);
        b.extend_from_slice(&self.payload_round.to_be_bytes());
        b.extend_from_slice(&self.proof_of_work_nonce);
        b.push(0); // no seed nonce hash
        b.push(self.votes);
        b
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{classify, Consensus, ConsensusOperation, Level, Payload, Round};

    /// The bytes the tests built by hand before this builder, pinned so that moving to it changed no
    /// signed payload.
    #[test]
    fn consensus_bytes_match_the_hand_built_layouts() {
        // tests/api helpers' attestation(120, 9): mainnet, branch 0x11…, tag 21, slot 0.
        let mut want = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[21, 0, 0, 0, 0, 0, 120, 0, 0, 0, 0]);
        want.extend_from_slice(&[9; 32]);
        assert_eq!(
            ConsensusPayload::attestation(120, 0)
                .payload_hash([9; 32])
                .bytes(),
            want
        );
        // consensus_keys.rs's tag 23 at (5, 1), slot 3, DAL bitset 0x05.
        let mut want = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[23, 0, 3, 0, 0, 0, 5, 0, 0, 0, 1]);
        want.extend_from_slice(&[4; 32]);
        want.push(0x05);
        let got = ConsensusPayload::new(23, 5, 1)
            .slot(3)
            .payload_hash([4; 32])
            .dal(&[0x05])
            .bytes();
        assert_eq!(got, want);
        // A tz4 preattestation (tag 40): no slot, 78 bytes.
        let mut want = vec![0x12, 0x7a, 0x06, 0xa7, 0x70];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[40, 0, 0, 0, 5, 0, 0, 0, 1]);
        want.extend_from_slice(&[4; 32]);
        let got = ConsensusPayload::of(ConsensusKind::Preattestation, Curve::Bls, 5, 1)
            .slot(3)
            .payload_hash([4; 32])
            .bytes();
        assert_eq!(got, want);
    }

    #[test]
    fn the_tezt_attestation_vector_is_built_from_its_fields() {
        // ../shared/vectors/payloads.json, id tezt-attestation.
        let branch = "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8";
        let mut want = hex::decode(format!("137a06a770{branch}15000000000533")).unwrap();
        want.extend_from_slice(&[0; 36]);
        let got = ConsensusPayload::attestation(1331, 0)
            .branch(hex::decode(branch).unwrap().try_into().unwrap())
            .bytes();
        assert_eq!(got, want);
    }

    #[test]
    fn the_signatory_block_vector_is_built_from_its_fields() {
        // ../shared/vectors/payloads.json, id sig-req-block.
        let want = hex::decode(
            "11ed9d217c0000518e0118425847ac255b6d7c30ce8fec23b8eaf13b741de7d18509ac2ef83c741209630000000061947af5\
             04805682ea5d089837764b3efcc90b91db24294ff9ddb66019f332ccba17cc4741000000210000000102000000040000518e\
             0000000000000004ffffffff0000000400000000eb1320a71e8bf8b0162a3ec315461e9153a38b70d00d5dde2df85eb92748\
             f8d068d776e356683a9e23c186ccfb72ddc6c9857bb1704487972922e7c89a7121f800000000a8e1dd3c000000000000",
        )
        .unwrap();
        let h = |s: &str| -> [u8; 32] { hex::decode(s).unwrap().try_into().unwrap() };
        let got = BlockPayload::new(20878, 0)
            .chain([0xed, 0x9d, 0x21, 0x7c])
            .predecessor(h(
                "18425847ac255b6d7c30ce8fec23b8eaf13b741de7d18509ac2ef83c74120963",
            ))
            .timestamp(1637120757)
            .operations_hash(h(
                "805682ea5d089837764b3efcc90b91db24294ff9ddb66019f332ccba17cc4741",
            ))
            .context(h(
                "eb1320a71e8bf8b0162a3ec315461e9153a38b70d00d5dde2df85eb92748f8d0",
            ))
            .payload_hash(h(
                "68d776e356683a9e23c186ccfb72ddc6c9857bb1704487972922e7c89a7121f8",
            ))
            .proof_of_work_nonce([0xa8, 0xe1, 0xdd, 0x3c, 0, 0, 0, 0])
            .votes(0)
            .bytes();
        assert_eq!(hex::encode(got), hex::encode(want));
    }

    #[test]
    fn built_payloads_classify_at_their_fields() {
        for (tag, curve) in [
            (20, Curve::P256),
            (21, Curve::Ed25519),
            (40, Curve::Bls),
            (41, Curve::Bls),
        ] {
            let bytes = ConsensusPayload::new(tag, 1234, 2).slot(7).bytes();
            let Ok(Payload::Consensus(c)) = classify(&bytes) else {
                panic!("tag {tag} does not classify")
            };
            assert_eq!(
                (c.level, c.round, c.operation.tag()),
                (Level(1234), Round(2), tag)
            );
            assert!(c.operation.check_key_type(curve).is_ok());
        }
        for locked in [None, Some(1)] {
            let bytes = BlockPayload::new(99, 3).locked_round(locked).bytes();
            assert!(matches!(
                classify(&bytes),
                Ok(Payload::Consensus(Consensus {
                    operation: ConsensusOperation::Block,
                    level: Level(99),
                    round: Round(3),
                    ..
                }))
            ));
        }
    }
}
