//! Classification of the bytes a baker asks the signer to sign: the magic byte and, for consensus
//! payloads, the chain, level and round the high watermark is kept on.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::base58::{self, Base58Error};
use crate::keys::Curve;

/// A chain id (`Net…`), the 4 bytes after the magic byte of every Tenderbake payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(pub [u8; 4]);

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base58::encode(base58::CHAIN_ID, &self.0))
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({self})")
    }
}

impl FromStr for ChainId {
    type Err = Base58Error;
    fn from_str(s: &str) -> Result<Self, Base58Error> {
        let bytes = base58::decode(base58::CHAIN_ID, s)?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes);
        Ok(ChainId(id))
    }
}

/// A block level. Never negative: the protocol encoding forbids it and so does the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Level(pub u32);

/// A Tenderbake round. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Round(pub u32);

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The three kinds of consensus payload, each with its own high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsensusKind {
    Block,
    Preattestation,
    Attestation,
}

impl ConsensusKind {
    pub const ALL: [ConsensusKind; 3] = [Self::Block, Self::Preattestation, Self::Attestation];

    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Preattestation => "preattestation",
            Self::Attestation => "attestation",
        }
    }

    pub fn magic_byte(self) -> u8 {
        match self {
            Self::Block => 0x11,
            Self::Preattestation => 0x12,
            Self::Attestation => 0x13,
        }
    }
}

impl fmt::Display for ConsensusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConsensusKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(Self::Block),
            "preattestation" | "preendorsement" => Ok(Self::Preattestation),
            "attestation" | "endorsement" => Ok(Self::Attestation),
            _ => Err(format!(
                "unknown consensus kind {s:?} (expected block, preattestation or attestation)"
            )),
        }
    }
}

/// The consensus operation inside a 0x12/0x13 payload, by its tag byte (offset 37).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsensusOperation {
    Block,
    Preattestation { slot: u16 },
    Attestation { slot: u16 },
    AttestationWithDal { slot: u16 },
    BlsModePreattestation,
    BlsModeAttestation,
}

impl ConsensusOperation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Preattestation { .. } => "preattestation",
            Self::Attestation { .. } => "attestation",
            Self::AttestationWithDal { .. } => "attestation_with_dal",
            Self::BlsModePreattestation => "bls_mode_preattestation",
            Self::BlsModeAttestation => "bls_mode_attestation",
        }
    }
}

/// A consensus payload asked of a key whose type cannot sign it: tags 20, 21 and 23 carry a slot and are
/// signed by tz1–tz3 consensus keys, tags 40 and 41 (no slot) by tz4 keys only; blocks by tz1–tz4. Any
/// other key type (tz5) signs no consensus payload: the protocol does not accept it as a consensus or
/// companion key.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error(
    "{name} (magic 0x{magic:02x}, tag {tag}) cannot be signed by a tz{tz} ({curve}) key: {rule}; \
     check that the baker uses this key as its consensus key under the protocol it bakes for"
)]
pub struct WrongKeyType {
    pub name: &'static str,
    pub magic: u8,
    pub tag: u8,
    pub curve: Curve,
    /// The key's address prefix number: 1 for tz1 …
    pub tz: u8,
    pub rule: &'static str,
}

impl ConsensusOperation {
    /// The tag byte of the operation (blocks have none: 0).
    pub fn tag(self) -> u8 {
        match self {
            Self::Block => 0,
            Self::Preattestation { .. } => 20,
            Self::Attestation { .. } => 21,
            Self::AttestationWithDal { .. } => 23,
            Self::BlsModePreattestation => 40,
            Self::BlsModeAttestation => 41,
        }
    }

    /// Whether a key on `curve` may sign this operation, checked before the watermark is touched: a
    /// request Octez would never send must not take the level and round of the real one. An allow-list,
    /// so a key type added later signs no consensus until it is listed here.
    pub fn check_key_type(self, curve: Curve) -> Result<(), WrongKeyType> {
        const NOT_BLS: &[Curve] = &[Curve::Ed25519, Curve::Secp256k1, Curve::P256];
        let (allowed, rule): (&[Curve], &'static str) = match self {
            Self::Block => (
                &[Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls],
                "blocks are signed by tz1, tz2, tz3 and tz4 consensus keys only",
            ),
            Self::Preattestation { .. } => (
                NOT_BLS,
                "tag 20 is for tz1, tz2 and tz3 keys; a tz4 key signs preattestations as tag 40",
            ),
            Self::Attestation { .. } | Self::AttestationWithDal { .. } => (
                NOT_BLS,
                "tags 21 and 23 are for tz1, tz2 and tz3 keys; a tz4 key signs attestations as tag 41",
            ),
            Self::BlsModePreattestation => (
                &[Curve::Bls],
                "tag 40 is for tz4 (BLS) keys only; tz1, tz2 and tz3 keys sign preattestations as tag 20",
            ),
            Self::BlsModeAttestation => (
                &[Curve::Bls],
                "tag 41 is for tz4 (BLS) keys only; tz1, tz2 and tz3 keys sign attestations as tag 21 or 23",
            ),
        };
        if allowed.contains(&curve) {
            return Ok(());
        }
        let kind = match self {
            Self::Block => ConsensusKind::Block,
            Self::Preattestation { .. } | Self::BlsModePreattestation => ConsensusKind::Preattestation,
            _ => ConsensusKind::Attestation,
        };
        Err(WrongKeyType {
            name: self.name(),
            magic: kind.magic_byte(),
            tag: self.tag(),
            curve,
            tz: curve.tag() + 1,
            rule,
        })
    }
}

/// A block, preattestation or attestation, with what its watermark is keyed and ordered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consensus {
    pub kind: ConsensusKind,
    pub operation: ConsensusOperation,
    pub chain_id: ChainId,
    pub level: Level,
    pub round: Round,
}

/// What a payload is, by its magic byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// 0x11, 0x12, 0x13
    Consensus(Consensus),
    /// 0x03: manager operations, votes, reveals… (branch then contents)
    GenericOperation,
    /// 0x05: Michelson `PACK`ed data
    MichelsonData,
    /// 0x01: a pre-Tenderbake (Emmy) block
    LegacyBlock { chain_id: ChainId, level: Level },
    /// 0x02: a pre-Tenderbake endorsement
    LegacyEndorsement { chain_id: ChainId, level: Level },
    /// 0x04: the prefix of authentication requests; never signed by a signing key.
    AuthenticationRequest,
    /// Any other first byte.
    Unknown { magic: u8 },
}

/// What a magic byte announces, for messages.
pub fn magic_byte_name(magic: u8) -> &'static str {
    match magic {
        0x01 => "legacy block",
        0x02 => "legacy endorsement",
        0x03 => "generic operation",
        0x04 => "authentication request",
        0x05 => "michelson data",
        0x11 => "block",
        0x12 => "preattestation",
        0x13 => "attestation",
        _ => "unknown",
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PayloadError {
    #[error("empty payload: nothing to sign")]
    Empty,
    #[error("{what} payload is {got} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        expected: &'static str,
        got: usize,
    },
    #[error("block fitness: {0}")]
    BadFitness(String),
    #[error("operation tag {tag} cannot be signed under magic byte 0x{magic:02x}")]
    UnsupportedTag { magic: u8, tag: u8 },
    #[error("negative {field} {value}")]
    Negative { field: &'static str, value: i32 },
    #[error("attestation_with_dal: malformed DAL bitset")]
    BadDalBitset,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn i32_at(&self, offset: usize) -> i32 {
        i32::from_be_bytes(self.array(offset))
    }
    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_be_bytes(self.array(offset))
    }
    fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[offset..offset + N]);
        out
    }
    fn chain_id(&self) -> ChainId {
        ChainId(self.array(1))
    }
    fn level(&self, offset: usize) -> Result<Level, PayloadError> {
        non_negative("level", self.i32_at(offset)).map(Level)
    }
    fn round(&self, offset: usize) -> Result<Round, PayloadError> {
        non_negative("round", self.i32_at(offset)).map(Round)
    }
}

fn non_negative(field: &'static str, value: i32) -> Result<u32, PayloadError> {
    u32::try_from(value).map_err(|_| PayloadError::Negative { field, value })
}

/// Offset of the fitness length in a 0x11 payload: magic 1, chain 4, level 4, proto 1,
/// predecessor 32, timestamp 8, validation passes 1, operations hash 32.
const FITNESS_OFFSET: usize = 83;
/// Bytes after the fitness up to and including the seed-nonce-hash option tag and the vote byte:
/// context 32, payload hash 32, payload round 4, proof-of-work nonce 8, option tag 1, votes 1.
const AFTER_FITNESS_MIN: usize = 78;

/// Classifies `bytes`. Malformed consensus payloads are errors; other payloads are only classified
/// by their magic byte here.
pub fn classify(bytes: &[u8]) -> Result<Payload, PayloadError> {
    let Some(&magic) = bytes.first() else {
        return Err(PayloadError::Empty);
    };
    let r = Reader { bytes };
    match magic {
        0x11 => classify_block(&r).map(Payload::Consensus),
        0x12 | 0x13 => classify_consensus_operation(&r, magic).map(Payload::Consensus),
        0x03 => Ok(Payload::GenericOperation),
        0x05 => Ok(Payload::MichelsonData),
        0x04 => Ok(Payload::AuthenticationRequest),
        0x01 | 0x02 => {
            if bytes.len() < 9 {
                return Err(PayloadError::BadLength {
                    what: "legacy consensus",
                    expected: "at least 9",
                    got: bytes.len(),
                });
            }
            let chain_id = r.chain_id();
            if magic == 0x01 {
                Ok(Payload::LegacyBlock {
                    chain_id,
                    level: r.level(5)?,
                })
            } else {
                Ok(Payload::LegacyEndorsement {
                    chain_id,
                    level: r.level(bytes.len() - 4)?,
                })
            }
        }
        magic => Ok(Payload::Unknown { magic }),
    }
}

fn classify_block(r: &Reader<'_>) -> Result<Consensus, PayloadError> {
    let len = r.bytes.len();
    if len < FITNESS_OFFSET + 4 {
        return Err(PayloadError::BadLength {
            what: "block",
            expected: "at least 87",
            got: len,
        });
    }
    let fitness_len = r.u32_at(FITNESS_OFFSET) as usize;
    if fitness_len != 33 && fitness_len != 37 {
        return Err(PayloadError::BadFitness(format!(
            "length {fitness_len} is not a Tenderbake fitness (33 or 37 bytes)"
        )));
    }
    let fitness_start = FITNESS_OFFSET + 4;
    let fitness_end = fitness_start + fitness_len;
    if len < fitness_end + AFTER_FITNESS_MIN {
        return Err(PayloadError::BadLength {
            what: "block",
            expected: "the header after the fitness (at least 78 more bytes)",
            got: len,
        });
    }
    let level = r.level(5)?;
    // Walk the fitness elements: version, level, locked round (empty or 4 bytes),
    // predecessor round, round.
    let mut elements = Vec::with_capacity(5);
    let mut at = fitness_start;
    while at < fitness_end {
        if at + 4 > fitness_end {
            return Err(PayloadError::BadFitness("truncated element length".into()));
        }
        let n = r.u32_at(at) as usize;
        at += 4;
        if n > fitness_end - at {
            return Err(PayloadError::BadFitness("element overruns the fitness".into()));
        }
        elements.push(&r.bytes[at..at + n]);
        at += n;
    }
    let [version, fitness_level, locked, _predecessor_round, round_bytes] = elements.as_slice() else {
        return Err(PayloadError::BadFitness(format!(
            "{} elements, expected 5",
            elements.len()
        )));
    };
    if *version != [0x02] {
        return Err(PayloadError::BadFitness("version is not 02 (Tenderbake)".into()));
    }
    if fitness_level.len() != 4 || ![0, 4].contains(&locked.len()) || round_bytes.len() != 4 {
        return Err(PayloadError::BadFitness("element of the wrong size".into()));
    }
    if **fitness_level != level.0.to_be_bytes() {
        return Err(PayloadError::BadFitness(
            "fitness level differs from the header level".into(),
        ));
    }
    Ok(Consensus {
        kind: ConsensusKind::Block,
        operation: ConsensusOperation::Block,
        chain_id: r.chain_id(),
        level,
        round: r.round(fitness_end - 4)?,
    })
}

fn classify_consensus_operation(r: &Reader<'_>, magic: u8) -> Result<Consensus, PayloadError> {
    let len = r.bytes.len();
    let what = if magic == 0x12 {
        "preattestation"
    } else {
        "attestation"
    };
    if len < 38 {
        return Err(PayloadError::BadLength {
            what,
            expected: "at least 38",
            got: len,
        });
    }
    let tag = r.bytes[37];
    let exact = |expected_len: usize, expected: &'static str| {
        if len == expected_len {
            Ok(())
        } else {
            Err(PayloadError::BadLength {
                what,
                expected,
                got: len,
            })
        }
    };
    let slot = || u16::from_be_bytes(r.array(38));
    let (kind, operation, level_at) = match (magic, tag) {
        (0x12, 20) => {
            exact(80, "80")?;
            (
                ConsensusKind::Preattestation,
                ConsensusOperation::Preattestation { slot: slot() },
                40,
            )
        }
        (0x13, 21) => {
            exact(80, "80")?;
            (
                ConsensusKind::Attestation,
                ConsensusOperation::Attestation { slot: slot() },
                40,
            )
        }
        (0x13, 23) => {
            if len <= 80 {
                return Err(PayloadError::BadLength {
                    what: "attestation_with_dal",
                    expected: "more than 80",
                    got: len,
                });
            }
            check_zarith(&r.bytes[80..])?;
            (
                ConsensusKind::Attestation,
                ConsensusOperation::AttestationWithDal { slot: slot() },
                40,
            )
        }
        (0x12, 40) => {
            exact(78, "78")?;
            (
                ConsensusKind::Preattestation,
                ConsensusOperation::BlsModePreattestation,
                38,
            )
        }
        (0x13, 41) => {
            exact(78, "78")?;
            (
                ConsensusKind::Attestation,
                ConsensusOperation::BlsModeAttestation,
                38,
            )
        }
        _ => return Err(PayloadError::UnsupportedTag { magic, tag }),
    };
    Ok(Consensus {
        kind,
        operation,
        chain_id: r.chain_id(),
        level: r.level(level_at)?,
        round: r.round(level_at + 4)?,
    })
}

/// A Data_encoding `z` (zarith) must end exactly at the end of the payload: every byte but the last
/// has its continuation bit set.
fn check_zarith(bytes: &[u8]) -> Result<(), PayloadError> {
    match bytes.split_last() {
        Some((last, init)) if last & 0x80 == 0 && init.iter().all(|b| b & 0x80 != 0) => Ok(()),
        _ => Err(PayloadError::BadDalBitset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ConsensusPayload;

    fn preattestation(level: i32, round: i32) -> Vec<u8> {
        ConsensusPayload::preattestation(level as u32, round as u32)
            .branch([0xaa; 32])
            .slot(5)
            .payload_hash([0xbb; 32])
            .bytes()
    }

    #[test]
    fn preattestation_level_and_round_are_read_at_40_and_44() {
        let Payload::Consensus(c) = classify(&preattestation(7, 3)).unwrap() else {
            panic!("not consensus")
        };
        assert_eq!(
            (c.kind, c.level, c.round),
            (ConsensusKind::Preattestation, Level(7), Round(3))
        );
        assert_eq!(c.operation, ConsensusOperation::Preattestation { slot: 5 });
        assert_eq!(c.chain_id.to_string(), "NetXdQprcVkpaWU");
    }

    #[test]
    fn every_truncation_of_a_consensus_payload_is_an_error() {
        let p = preattestation(7, 3);
        for n in 1..p.len() {
            assert!(classify(&p[..n]).is_err(), "accepted {n} bytes");
        }
    }

    #[test]
    fn negative_level_is_refused() {
        assert_eq!(
            classify(&preattestation(-1, 0)),
            Err(PayloadError::Negative {
                field: "level",
                value: -1
            })
        );
    }

    #[test]
    fn attestation_tag_under_preattestation_magic_is_refused() {
        let mut p = preattestation(1, 0);
        p[37] = 21;
        assert_eq!(
            classify(&p),
            Err(PayloadError::UnsupportedTag { magic: 0x12, tag: 21 })
        );
    }

    fn consensus_operation(bytes: &[u8]) -> ConsensusOperation {
        match classify(bytes) {
            Ok(Payload::Consensus(c)) => c.operation,
            other => panic!("not consensus: {other:?}"),
        }
    }

    fn tenderbake(magic: u8, tag: u8) -> Vec<u8> {
        ConsensusPayload::new(tag, 9, 1)
            .magic(magic)
            .branch([0xaa; 32])
            .slot(5)
            .payload_hash([0xbb; 32])
            .dal(if tag == 23 { &[0x01] } else { &[] })
            .bytes()
    }

    #[test]
    fn each_consensus_tag_is_signed_by_its_key_types_only() {
        use Curve::*;
        let table: [(u8, u8, &[Curve]); 5] = [
            (0x12, 20, &[Ed25519, Secp256k1, P256]),
            (0x13, 21, &[Ed25519, Secp256k1, P256]),
            (0x13, 23, &[Ed25519, Secp256k1, P256]),
            (0x12, 40, &[Bls]),
            (0x13, 41, &[Bls]),
        ];
        for (magic, tag, allowed) in table {
            let op = consensus_operation(&tenderbake(magic, tag));
            assert_eq!(op.tag(), tag);
            for curve in Curve::ALL {
                let result = op.check_key_type(curve);
                assert_eq!(
                    result.is_ok(),
                    allowed.contains(&curve),
                    "tag {tag}, {curve}: {result:?}"
                );
            }
        }
        assert!(Curve::ALL
            .into_iter()
            .all(|c| ConsensusOperation::Block.check_key_type(c).is_ok()));
    }

    #[test]
    fn wrong_key_type_message_names_the_tag_for_each_key_type() {
        let e = ConsensusOperation::Attestation { slot: 0 }
            .check_key_type(Curve::Bls)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("attestation (magic 0x13, tag 21) cannot be signed by a tz4 (bls) key"),
            "{e}"
        );
        assert!(e.contains("a tz4 key signs attestations as tag 41"), "{e}");
        let e = ConsensusOperation::BlsModePreattestation
            .check_key_type(Curve::P256)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bls_mode_preattestation (magic 0x12, tag 40) cannot be signed by a tz3"),
            "{e}"
        );
        assert!(
            e.contains("tz1, tz2 and tz3 keys sign preattestations as tag 20"),
            "{e}"
        );
    }

    /// Consensus classification must keep working when the generic operation decoder falls behind a
    /// protocol: this module reads consensus bytes itself and never calls `crate::operation`.
    #[test]
    fn consensus_classification_does_not_use_the_operation_decoder() {
        let source = include_str!("payload.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for needle in ["crate::operation", "operation::decode", "GenericOperation::"] {
            assert!(
                !code.contains(needle),
                "payload.rs uses the operation decoder ({needle})"
            );
        }
        // And a consensus payload is classified with no decoder involvement: tags the decoder refuses
        // inside 0x03 (here 40 and 41, which it does not know) classify here.
        let attestation = tenderbake(0x13, 41);
        let as_generic: Vec<u8> = [0x03]
            .into_iter()
            .chain(attestation[5..].iter().copied())
            .collect();
        assert!(crate::operation::decode(&as_generic).is_err());
        assert_eq!(
            consensus_operation(&attestation),
            ConsensusOperation::BlsModeAttestation
        );
    }

    #[test]
    fn magic_bytes_without_structure_are_classified() {
        assert_eq!(classify(&[0x03, 1, 2]), Ok(Payload::GenericOperation));
        assert_eq!(classify(&[0x05]), Ok(Payload::MichelsonData));
        assert_eq!(classify(&[0x04, 1]), Ok(Payload::AuthenticationRequest));
        assert_eq!(classify(&[0x42]), Ok(Payload::Unknown { magic: 0x42 }));
        assert_eq!(classify(&[]), Err(PayloadError::Empty));
    }
}
