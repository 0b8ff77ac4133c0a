//! Decoding of generic operations (magic byte 0x03): the branch and the contents list of the current
//! protocol (025 Ushuaia and alpha share these tags and layouts). Every operation is named and its fields
//! are walked exactly, so that nothing can hide behind a field the decoder skipped. A tag the decoder
//! does not know, or knows but does not decode, is an error: a signer refuses what it cannot read.
//!
//! Layouts follow `src/proto_025_PsUshuai/lib_protocol/operation_repr.ml` (`Encoding`), with the
//! Data_encoding rules: `bytes`/`string`/`list` fields carry a 4-byte big-endian length; options a
//! `00`/`ff` flag; naturals and integers are zarith (7 bits per byte, continuation bit 0x80).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::base58::{self, Base58Error};
use crate::keys::{Curve, PublicKeyHash};

/// The magic byte of generic operations.
pub const GENERIC_MAGIC: u8 = 0x03;
const BRANCH_LEN: usize = 32;

/// What a signer may be asked to sign under 0x03, by name. Besides the protocol's operations this
/// names the staking pseudo-operations: a transaction from an implicit account to itself calling
/// `stake`, `unstake`, `finalize_unstake` or `set_delegate_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationKind {
    SeedNonceRevelation,
    DoubleConsensusOperationEvidence,
    ActivateAccount,
    Proposals,
    Ballot,
    DrainDelegate,
    FailingNoop,
    Preattestation,
    Attestation,
    AttestationWithDal,
    PreattestationsAggregate,
    AttestationsAggregate,
    Reveal,
    Transaction,
    Stake,
    Unstake,
    FinalizeUnstake,
    SetDelegateParameters,
    Origination,
    Delegation,
    RegisterGlobalConstant,
    SetDepositsLimit,
    IncreasePaidStorage,
    UpdateConsensusKey,
    UpdateCompanionKey,
    TransferTicket,
    SmartRollupOriginate,
    SmartRollupAddMessages,
    SmartRollupCement,
    SmartRollupPublish,
    SmartRollupRefute,
    SmartRollupTimeout,
    SmartRollupExecuteOutboxMessage,
    SmartRollupRecoverBond,
    DalPublishCommitment,
}

impl OperationKind {
    /// Every kind, for listings and configuration errors.
    pub const ALL: [OperationKind; 35] = [
        Self::SeedNonceRevelation,
        Self::DoubleConsensusOperationEvidence,
        Self::ActivateAccount,
        Self::Proposals,
        Self::Ballot,
        Self::DrainDelegate,
        Self::FailingNoop,
        Self::Preattestation,
        Self::Attestation,
        Self::AttestationWithDal,
        Self::PreattestationsAggregate,
        Self::AttestationsAggregate,
        Self::Reveal,
        Self::Transaction,
        Self::Stake,
        Self::Unstake,
        Self::FinalizeUnstake,
        Self::SetDelegateParameters,
        Self::Origination,
        Self::Delegation,
        Self::RegisterGlobalConstant,
        Self::SetDepositsLimit,
        Self::IncreasePaidStorage,
        Self::UpdateConsensusKey,
        Self::UpdateCompanionKey,
        Self::TransferTicket,
        Self::SmartRollupOriginate,
        Self::SmartRollupAddMessages,
        Self::SmartRollupCement,
        Self::SmartRollupPublish,
        Self::SmartRollupRefute,
        Self::SmartRollupTimeout,
        Self::SmartRollupExecuteOutboxMessage,
        Self::SmartRollupRecoverBond,
        Self::DalPublishCommitment,
    ];

    /// The protocol's name for the operation (Octez's JSON `kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SeedNonceRevelation => "seed_nonce_revelation",
            Self::DoubleConsensusOperationEvidence => "double_consensus_operation_evidence",
            Self::ActivateAccount => "activate_account",
            Self::Proposals => "proposals",
            Self::Ballot => "ballot",
            Self::DrainDelegate => "drain_delegate",
            Self::FailingNoop => "failing_noop",
            Self::Preattestation => "preattestation",
            Self::Attestation => "attestation",
            Self::AttestationWithDal => "attestation_with_dal",
            Self::PreattestationsAggregate => "preattestations_aggregate",
            Self::AttestationsAggregate => "attestations_aggregate",
            Self::Reveal => "reveal",
            Self::Transaction => "transaction",
            Self::Stake => "stake",
            Self::Unstake => "unstake",
            Self::FinalizeUnstake => "finalize_unstake",
            Self::SetDelegateParameters => "set_delegate_parameters",
            Self::Origination => "origination",
            Self::Delegation => "delegation",
            Self::RegisterGlobalConstant => "register_global_constant",
            Self::SetDepositsLimit => "set_deposits_limit",
            Self::IncreasePaidStorage => "increase_paid_storage",
            Self::UpdateConsensusKey => "update_consensus_key",
            Self::UpdateCompanionKey => "update_companion_key",
            Self::TransferTicket => "transfer_ticket",
            Self::SmartRollupOriginate => "smart_rollup_originate",
            Self::SmartRollupAddMessages => "smart_rollup_add_messages",
            Self::SmartRollupCement => "smart_rollup_cement",
            Self::SmartRollupPublish => "smart_rollup_publish",
            Self::SmartRollupRefute => "smart_rollup_refute",
            Self::SmartRollupTimeout => "smart_rollup_timeout",
            Self::SmartRollupExecuteOutboxMessage => "smart_rollup_execute_outbox_message",
            Self::SmartRollupRecoverBond => "smart_rollup_recover_bond",
            Self::DalPublishCommitment => "dal_publish_commitment",
        }
    }

    /// Manager operations carry a source, fee and counter and may be batched.
    pub fn is_manager(self) -> bool {
        matches!(
            self,
            Self::Reveal
                | Self::Transaction
                | Self::Stake
                | Self::Unstake
                | Self::FinalizeUnstake
                | Self::SetDelegateParameters
                | Self::Origination
                | Self::Delegation
                | Self::RegisterGlobalConstant
                | Self::SetDepositsLimit
                | Self::IncreasePaidStorage
                | Self::UpdateConsensusKey
                | Self::UpdateCompanionKey
                | Self::TransferTicket
                | Self::SmartRollupOriginate
                | Self::SmartRollupAddMessages
                | Self::SmartRollupCement
                | Self::SmartRollupPublish
                | Self::SmartRollupRefute
                | Self::SmartRollupTimeout
                | Self::SmartRollupExecuteOutboxMessage
                | Self::SmartRollupRecoverBond
                | Self::DalPublishCommitment
        )
    }

    /// Why no client ever sends this kind to a signer, for the kinds tzkms refuses whatever the
    /// configuration says (see [`never_signed`]). `None` for the kinds a policy may allow.
    pub fn never_signed(self) -> Option<&'static str> {
        never_signed(kind_tag(self)?).map(|n| n.reason)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OperationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown operation kind {s:?}"))
    }
}

/// Tags the current protocol defines but tzkms does not decode: named in refusals, never signed.
const NOT_DECODED: &[(u8, &str)] = &[
    (3, "double_baking_evidence"),
    (8, "vdf_revelation"),
    (24, "dal_entrapment_evidence"),
    (250, "zk_rollup_origination"),
    (251, "zk_rollup_publish"),
    (252, "zk_rollup_update"),
];

/// An operation inside a 0x03 payload that no client ever asks a signer for, refused whatever the
/// policy says (even under `generic_unchecked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeverSigned {
    pub tag: u8,
    pub name: &'static str,
    pub reason: &'static str,
}

const CONSENSUS_REASON: &str = "consensus operations are signed as 0x11/0x12/0x13 payloads under the high \
     watermark, never as a generic operation (0x03), which has none";
const AGGREGATE_REASON: &str =
    "aggregates are assembled by the block producer from signatures already made; \
     no client asks a signer for one";
const ANONYMOUS_REASON: &str = "anonymous operations are included without any signature; no client asks a \
     signer for one";

/// Tags that are never signed inside a 0x03 payload: consensus contents (tags 20, 21, 23 and the tz4
/// forms 40, 41 of `operation_repr.ml`'s `Bls_mode`), the aggregates 30/31, and the anonymous operations
/// nobody signs. `drain_delegate` (tag 9) is anonymous too, but its consensus key signs it: not listed.
const NEVER_SIGNED: &[NeverSigned] = &[
    NeverSigned {
        tag: 1,
        name: "seed_nonce_revelation",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 2,
        name: "double_consensus_operation_evidence",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 3,
        name: "double_baking_evidence",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 4,
        name: "activate_account",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 8,
        name: "vdf_revelation",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 20,
        name: "preattestation",
        reason: CONSENSUS_REASON,
    },
    NeverSigned {
        tag: 21,
        name: "attestation",
        reason: CONSENSUS_REASON,
    },
    NeverSigned {
        tag: 23,
        name: "attestation_with_dal",
        reason: CONSENSUS_REASON,
    },
    NeverSigned {
        tag: 24,
        name: "dal_entrapment_evidence",
        reason: ANONYMOUS_REASON,
    },
    NeverSigned {
        tag: 30,
        name: "preattestations_aggregate",
        reason: AGGREGATE_REASON,
    },
    NeverSigned {
        tag: 31,
        name: "attestations_aggregate",
        reason: AGGREGATE_REASON,
    },
    NeverSigned {
        tag: 40,
        name: "bls_mode_preattestation",
        reason: CONSENSUS_REASON,
    },
    NeverSigned {
        tag: 41,
        name: "bls_mode_attestation",
        reason: CONSENSUS_REASON,
    },
];

/// The never-signed operation a tag announces, if it is one.
pub fn never_signed(tag: u8) -> Option<NeverSigned> {
    NEVER_SIGNED.iter().find(|n| n.tag == tag).copied()
}

/// The first operation of a 0x03 payload (magic byte included) that is never signed, with its index.
/// Works on bytes the full decoder would refuse too: operations are walked as long as their tags are
/// known and their bytes decode, so the first operation's tag is always looked at. Used for
/// `generic_unchecked`, which otherwise reads nothing.
pub fn find_never_signed(bytes: &[u8]) -> Option<(usize, NeverSigned)> {
    let mut r = Reader {
        bytes,
        at: 1 + BRANCH_LEN,
    };
    if bytes.first() != Some(&GENERIC_MAGIC) || bytes.len() < r.at {
        return None;
    }
    let mut index = 0;
    while !r.is_empty() {
        let tag = r.u8().ok()?;
        if let Some(found) = never_signed(tag) {
            return Some((index, found));
        }
        let kind = kind_of_tag(tag)?;
        decode_one(&mut r, kind, tag).ok()?;
        index += 1;
    }
    None
}

/// A ballot's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ballot {
    Yay,
    Nay,
    Pass,
}

impl Ballot {
    pub fn name(self) -> &'static str {
        match self {
            Self::Yay => "yay",
            Self::Nay => "nay",
            Self::Pass => "pass",
        }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Ballot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yay" => Ok(Self::Yay),
            "nay" => Ok(Self::Nay),
            "pass" => Ok(Self::Pass),
            _ => Err(format!("unknown ballot {s:?} (expected yay, nay or pass)")),
        }
    }
}

/// A contract address: an implicit account (`tz1…`–`tz5…`) or an originated contract (`KT1…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Implicit(PublicKeyHash),
    Originated([u8; 20]),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Implicit(pkh) => pkh.fmt(f),
            Self::Originated(hash) => f.write_str(&base58::encode(base58::KT1, hash)),
        }
    }
}

impl FromStr for Address {
    type Err = Base58Error;
    fn from_str(s: &str) -> Result<Self, Base58Error> {
        if s.starts_with("KT1") {
            let bytes = base58::decode(base58::KT1, s)?;
            let mut hash = [0u8; 20];
            hash.copy_from_slice(&bytes);
            return Ok(Self::Originated(hash));
        }
        s.parse()
            .map(Self::Implicit)
            .map_err(|_| Base58Error::WrongPrefix {
                expected: "tz1, tz2, tz3, tz4, tz5 or KT1",
            })
    }
}

/// A smart rollup's address (`sr1…`): 20 bytes, `Sc_rollup_repr.Address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SmartRollupAddress(pub [u8; 20]);

impl fmt::Display for SmartRollupAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base58::encode(base58::SR1, &self.0))
    }
}

impl FromStr for SmartRollupAddress {
    type Err = Base58Error;
    fn from_str(s: &str) -> Result<Self, Base58Error> {
        let bytes = base58::decode(base58::SR1, s)?;
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&bytes);
        Ok(Self(hash))
    }
}

/// One decoded operation of a contents list, with the fields a policy can look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    /// The operation's tag byte.
    pub tag: u8,
    /// The manager (manager operations) or the voting delegate (ballot, proposals).
    pub source: Option<PublicKeyHash>,
    /// Where value goes: a transaction's or ticket transfer's destination, a drain's destination.
    pub destination: Option<Address>,
    /// The entrypoint a transaction or ticket transfer calls, when not the default one.
    pub entrypoint: Option<String>,
    /// A transaction's amount in mutez (None when it does not fit 64 bits, which the protocol refuses).
    pub amount: Option<u64>,
    /// A ballot's vote.
    pub ballot: Option<Ballot>,
    /// The new delegate of a delegation (None withdraws the delegation).
    pub delegate: Option<PublicKeyHash>,
    /// The rollup a smart-rollup operation acts on (`smart_rollup_originate` and
    /// `smart_rollup_add_messages` name none).
    pub smart_rollup: Option<SmartRollupAddress>,
}

impl Operation {
    fn new(kind: OperationKind, tag: u8) -> Self {
        Self {
            kind,
            tag,
            source: None,
            destination: None,
            entrypoint: None,
            amount: None,
            ballot: None,
            delegate: None,
            smart_rollup: None,
        }
    }
}

/// A decoded 0x03 payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericOperation {
    pub branch: [u8; 32],
    pub operations: Vec<Operation>,
}

impl GenericOperation {
    /// The operation kinds in order, for logs (`transaction,transaction`).
    pub fn kinds(&self) -> Vec<OperationKind> {
        self.operations.iter().map(|o| o.kind).collect()
    }
}

/// Why a 0x03 payload was not decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OperationError {
    #[error("not a generic operation (magic byte 0x{0:02x}, expected 0x03)")]
    NotGeneric(u8),
    #[error("generic operation of {0} bytes is too short for a branch (33 bytes with the magic byte)")]
    TooShort(usize),
    #[error("generic operation without any operation after its branch")]
    Empty,
    #[error("operation {index}: unknown tag {tag}; tzkms refuses operations it cannot decode")]
    UnknownTag { index: usize, tag: u8 },
    #[error("operation {index}: {name} (tag {tag}) is not decoded by tzkms and is refused")]
    NotDecoded {
        index: usize,
        tag: u8,
        name: &'static str,
    },
    #[error("operation {index} ({kind}): truncated")]
    Truncated { index: usize, kind: OperationKind },
    #[error("operation {index} ({kind}): {message}")]
    Invalid {
        index: usize,
        kind: OperationKind,
        message: String,
    },
    #[error("a batch of several operations may only hold manager operations; operation {index} is {kind}")]
    MixedBatch { index: usize, kind: OperationKind },
}

impl OperationError {
    /// Whether the bytes are well-formed but name something tzkms will not sign (as opposed to
    /// malformed bytes).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::UnknownTag { .. } | Self::NotDecoded { .. })
    }
}

/// A field-level failure, before it is given its operation's index and kind.
#[derive(Debug)]
enum FieldError {
    Truncated,
    Invalid(String),
}

type Field<T> = Result<T, FieldError>;

fn invalid<T>(message: impl Into<String>) -> Field<T> {
    Err(FieldError::Invalid(message.into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Field<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or(FieldError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(FieldError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Field<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Field<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Field<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Field<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Field<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Field<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Raw_level_repr: an int32 that is not negative.
    fn level(&mut self) -> Field<i32> {
        match self.i32()? {
            level if level < 0 => invalid(format!("negative level {level}")),
            level => Ok(level),
        }
    }

    fn smart_rollup(&mut self) -> Field<SmartRollupAddress> {
        Ok(SmartRollupAddress(self.array()?))
    }

    /// Sc_rollup_game_repr.refutation: `00` start (player and opponent commitment hashes), or `01` move:
    /// a tick (`n`), then `00` a dissection (a list of optional state hash and tick) or `01` a proof
    /// (bytes, opaque to the signer as to the protocol's encoding).
    fn refutation(&mut self) -> Field<()> {
        match self.u8()? {
            0 => self.take(32 + 32).map(|_| ()),
            1 => {
                self.n(None)?; // choice
                match self.u8()? {
                    0 => {
                        let chunks = self.sized()?;
                        let mut list = Reader { bytes: chunks, at: 0 };
                        while !list.is_empty() {
                            if list.bool()? {
                                list.take(32)?; // state hash (srs1)
                            }
                            list.n(None)?; // tick
                        }
                        Ok(())
                    }
                    1 => self.sized().map(|_| ()),
                    t => invalid(format!("unknown refutation step tag {t}")),
                }
            }
            t => invalid(format!("unknown refutation tag {t}")),
        }
    }

    /// Data_encoding `bool`: exactly `00` or `ff`.
    fn bool(&mut self) -> Field<bool> {
        match self.u8()? {
            0x00 => Ok(false),
            0xff => Ok(true),
            b => invalid(format!("boolean byte 0x{b:02x} is neither 00 nor ff")),
        }
    }

    /// A field with a 4-byte length prefix (`bytes`, `string`, `dynamic_size`, `list`): the content.
    fn sized(&mut self) -> Field<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Zarith natural (`n`): returns the value when it fits 64 bits. `max_bytes` mirrors `check_size`.
    fn n(&mut self, max_bytes: Option<usize>) -> Field<Option<u64>> {
        self.zarith(false, max_bytes)
    }

    /// Zarith integer (`z`): the sign bit is 0x40 of the first byte; the value is skipped only.
    fn z(&mut self) -> Field<()> {
        self.zarith(true, None).map(|_| ())
    }

    fn zarith(&mut self, signed: bool, max_bytes: Option<usize>) -> Field<Option<u64>> {
        let mut value: Option<u64> = Some(0);
        let mut shift = 0u32;
        let mut count = 0usize;
        loop {
            let byte = self.u8()?;
            count += 1;
            if max_bytes.is_some_and(|m| count > m) {
                return invalid(format!("number longer than {} bytes", max_bytes.unwrap_or(0)));
            }
            let (bits, width) = if signed && count == 1 {
                (u64::from(byte & 0x3f), 6)
            } else {
                (u64::from(byte & 0x7f), 7)
            };
            value = value.and_then(|v| {
                let part = bits.checked_shl(shift)?;
                (part >> shift == bits).then_some(v | part)
            });
            shift = shift.saturating_add(width);
            if byte & 0x80 == 0 {
                // Data_encoding refuses a trailing zero byte: every number has one encoding.
                if byte == 0 && count > 1 {
                    return invalid("non-canonical number (trailing zero byte)");
                }
                return Ok(value);
            }
        }
    }

    /// Signature.Public_key_hash: a curve tag and 20 bytes.
    fn pkh(&mut self) -> Field<PublicKeyHash> {
        let tag = self.u8()?;
        let curve = match tag {
            0 => Curve::Ed25519,
            1 => Curve::Secp256k1,
            2 => Curve::P256,
            3 => Curve::Bls,
            4 => Curve::MlDsa44,
            t => return invalid(format!("unknown public key hash tag {t}")),
        };
        Ok(PublicKeyHash::new(curve, self.array()?))
    }

    /// Signature.Public_key: a curve tag and the key's bytes.
    fn public_key(&mut self) -> Field<()> {
        let len = match self.u8()? {
            0 => 32,
            1 | 2 => 33,
            3 => 48,
            4 => 1312, // ML-DSA-44 (tz5)
            t => return invalid(format!("unknown public key tag {t}")),
        };
        self.take(len).map(|_| ())
    }

    /// Contract_repr: `00` + public key hash, or `01` + contract hash + one padding byte.
    fn address(&mut self) -> Field<Address> {
        match self.u8()? {
            0 => Ok(Address::Implicit(self.pkh()?)),
            1 => {
                let hash = self.array()?;
                self.padding()?;
                Ok(Address::Originated(hash))
            }
            t => invalid(format!("unknown contract tag {t}")),
        }
    }

    fn padding(&mut self) -> Field<()> {
        match self.u8()? {
            0 => Ok(()),
            b => invalid(format!("padding byte 0x{b:02x} is not zero")),
        }
    }

    /// An optional BLS proof of possession: flag, then a 4-byte length that must be 96, then the proof.
    fn optional_bls_proof(&mut self) -> Field<()> {
        if self.bool()? {
            let proof = self.sized()?;
            if proof.len() != 96 {
                return invalid(format!("BLS proof of {} bytes, expected 96", proof.len()));
            }
        }
        Ok(())
    }

    /// Entrypoint_repr.smart_encoding: a reserved name by tag, or `ff` + 1-byte length + name.
    fn entrypoint(&mut self) -> Field<String> {
        const RESERVED: [&str; 10] = [
            "default",
            "root",
            "do",
            "set_delegate",
            "remove_delegate",
            "deposit",
            "stake",
            "unstake",
            "finalize_unstake",
            "set_delegate_parameters",
        ];
        match self.u8()? {
            tag @ 0..=9 => Ok(RESERVED[tag as usize].to_owned()),
            0xff => {
                let n = self.u8()? as usize;
                let name = self.take(n)?;
                if n == 0 || n > 31 {
                    return invalid(format!("entrypoint name of {n} bytes (1 to 31 allowed)"));
                }
                if !name
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'%' | b'@'))
                {
                    return invalid("entrypoint name with characters outside [a-zA-Z0-9_.%@]");
                }
                Ok(String::from_utf8_lossy(name).into_owned())
            }
            t => invalid(format!("unknown entrypoint tag {t}")),
        }
    }

    /// A `list` whose elements are all `width` bytes.
    fn fixed_list(&mut self, width: usize, max: Option<usize>) -> Field<usize> {
        let body = self.sized()?;
        if body.len() % width != 0 {
            return invalid(format!(
                "list of {} bytes is not a whole number of {width}-byte elements",
                body.len()
            ));
        }
        let count = body.len() / width;
        if max.is_some_and(|m| count > m) {
            return invalid(format!(
                "list of {count} elements (at most {} allowed)",
                max.unwrap_or(0)
            ));
        }
        Ok(count)
    }
}

/// Decodes a whole 0x03 payload (magic byte included).
pub fn decode(bytes: &[u8]) -> Result<GenericOperation, OperationError> {
    match bytes.first() {
        Some(&GENERIC_MAGIC) => {}
        Some(&magic) => return Err(OperationError::NotGeneric(magic)),
        None => return Err(OperationError::TooShort(0)),
    }
    if bytes.len() < 1 + BRANCH_LEN {
        return Err(OperationError::TooShort(bytes.len()));
    }
    let mut branch = [0u8; BRANCH_LEN];
    branch.copy_from_slice(&bytes[1..1 + BRANCH_LEN]);
    let mut r = Reader {
        bytes,
        at: 1 + BRANCH_LEN,
    };
    let mut operations = Vec::new();
    while !r.is_empty() {
        let index = operations.len();
        let tag = r.bytes[r.at];
        r.at += 1;
        let Some(kind) = kind_of_tag(tag) else {
            return Err(match NOT_DECODED.iter().find(|(t, _)| *t == tag) {
                Some(&(tag, name)) => OperationError::NotDecoded { index, tag, name },
                None => OperationError::UnknownTag { index, tag },
            });
        };
        let operation = decode_one(&mut r, kind, tag).map_err(|e| match e {
            FieldError::Truncated => OperationError::Truncated { index, kind },
            FieldError::Invalid(message) => OperationError::Invalid { index, kind, message },
        })?;
        operations.push(operation);
    }
    if operations.is_empty() {
        return Err(OperationError::Empty);
    }
    if operations.len() > 1 {
        if let Some((index, op)) = operations.iter().enumerate().find(|(_, o)| !o.kind.is_manager()) {
            return Err(OperationError::MixedBatch { index, kind: op.kind });
        }
    }
    Ok(GenericOperation { branch, operations })
}

/// The kind a tag announces (staking pseudo-operations are transactions until decoded).
fn kind_of_tag(tag: u8) -> Option<OperationKind> {
    use OperationKind::*;
    Some(match tag {
        1 => SeedNonceRevelation,
        2 => DoubleConsensusOperationEvidence,
        4 => ActivateAccount,
        5 => Proposals,
        6 => Ballot,
        9 => DrainDelegate,
        17 => FailingNoop,
        20 => Preattestation,
        21 => Attestation,
        23 => AttestationWithDal,
        30 => PreattestationsAggregate,
        31 => AttestationsAggregate,
        107 => Reveal,
        108 => Transaction,
        109 => Origination,
        110 => Delegation,
        111 => RegisterGlobalConstant,
        112 => SetDepositsLimit,
        113 => IncreasePaidStorage,
        114 => UpdateConsensusKey,
        115 => UpdateCompanionKey,
        158 => TransferTicket,
        200 => SmartRollupOriginate,
        201 => SmartRollupAddMessages,
        202 => SmartRollupCement,
        203 => SmartRollupPublish,
        204 => SmartRollupRefute,
        205 => SmartRollupTimeout,
        206 => SmartRollupExecuteOutboxMessage,
        207 => SmartRollupRecoverBond,
        230 => DalPublishCommitment,
        _ => return None,
    })
}

/// The tag of a kind (`None` for the staking pseudo-operations, which are transactions).
fn kind_tag(kind: OperationKind) -> Option<u8> {
    (0..=u8::MAX).find(|&tag| kind_of_tag(tag) == Some(kind))
}

/// Block payload hash, level and round of aggregated and plain consensus contents.
const CONSENSUS_AGGREGATE_CONTENT: usize = 4 + 4 + 32;

fn decode_one(r: &mut Reader<'_>, kind: OperationKind, tag: u8) -> Field<Operation> {
    use OperationKind as K;
    let mut op = Operation::new(kind, tag);
    if kind.is_manager() {
        op.source = Some(r.pkh()?);
        r.n(None)?; // fee
        r.n(None)?; // counter
        r.n(Some(10))?; // gas_limit
        r.n(Some(10))?; // storage_limit
    }
    match kind {
        K::SeedNonceRevelation => {
            r.i32()?;
            r.take(32)?;
        }
        K::DoubleConsensusOperationEvidence => {
            r.u16()?;
            r.sized()?;
            r.sized()?;
        }
        K::ActivateAccount => {
            r.take(20 + 20)?;
        }
        K::Proposals => {
            op.source = Some(r.pkh()?);
            r.i32()?;
            // Constants_repr.max_proposals_per_delegate
            if r.fixed_list(32, Some(20))? == 0 {
                return invalid("proposals without any protocol");
            }
        }
        K::Ballot => {
            op.source = Some(r.pkh()?);
            r.i32()?;
            r.take(32)?;
            op.ballot = Some(match r.u8()? {
                0 => Ballot::Yay,
                1 => Ballot::Nay,
                2 => Ballot::Pass,
                b => return invalid(format!("unknown ballot value {b}")),
            });
        }
        K::DrainDelegate => {
            r.pkh()?; // consensus key
            op.source = Some(r.pkh()?); // the delegate being drained
            op.destination = Some(Address::Implicit(r.pkh()?));
        }
        K::FailingNoop => {
            r.sized()?;
        }
        K::Preattestation | K::Attestation => {
            r.take(2 + CONSENSUS_AGGREGATE_CONTENT)?;
        }
        K::AttestationWithDal => {
            r.take(2 + CONSENSUS_AGGREGATE_CONTENT)?;
            r.z()?;
        }
        K::PreattestationsAggregate => {
            r.take(CONSENSUS_AGGREGATE_CONTENT)?;
            r.fixed_list(2, None)?;
        }
        K::AttestationsAggregate => {
            r.take(CONSENSUS_AGGREGATE_CONTENT)?;
            let committee = r.sized()?;
            let mut members = Reader {
                bytes: committee,
                at: 0,
            };
            while !members.is_empty() {
                members.u16()?;
                if members.bool()? {
                    members.z()?;
                }
            }
        }
        K::Reveal | K::UpdateConsensusKey | K::UpdateCompanionKey => {
            r.public_key()?;
            r.optional_bls_proof()?;
        }
        K::Transaction => {
            op.amount = r.n(None)?;
            let destination = r.address()?;
            op.destination = Some(destination);
            if r.bool()? {
                let entrypoint = r.entrypoint()?;
                r.sized()?; // the Michelson argument
                op.kind = staking_pseudo_operation(&entrypoint)
                    .filter(|_| op.source.map(Address::Implicit) == Some(destination))
                    .unwrap_or(K::Transaction);
                op.entrypoint = Some(entrypoint);
            }
        }
        K::Origination => {
            op.amount = r.n(None)?;
            if r.bool()? {
                op.delegate = Some(r.pkh()?);
            }
            r.sized()?; // code
            r.sized()?; // storage
        }
        K::Delegation => {
            if r.bool()? {
                op.delegate = Some(r.pkh()?);
            }
        }
        K::RegisterGlobalConstant => {
            r.sized()?;
        }
        K::SetDepositsLimit => {
            if r.bool()? {
                r.n(None)?;
            }
        }
        K::IncreasePaidStorage => {
            r.z()?;
            // Contract_repr.originated_encoding: the originated case of a contract, tag included.
            let destination = r.address()?;
            if !matches!(destination, Address::Originated(_)) {
                return invalid("the destination must be an originated contract (KT1)");
            }
            op.destination = Some(destination);
        }
        K::TransferTicket => {
            r.sized()?; // ticket contents
            r.sized()?; // ticket type
            r.address()?; // ticketer
            r.n(None)?; // ticket amount
            op.destination = Some(r.address()?);
            let entrypoint = r.sized()?;
            op.entrypoint = Some(String::from_utf8_lossy(entrypoint).into_owned());
        }
        K::SmartRollupOriginate => {
            match r.u8()? {
                0..=2 => {} // arith, wasm_2_0_0, riscv
                k => return invalid(format!("unknown PVM kind {k}")),
            }
            r.sized()?; // kernel
            r.sized()?; // parameters type
            if r.bool()? {
                r.fixed_list(21, None)?; // whitelist of public key hashes
            }
        }
        K::SmartRollupAddMessages => {
            let messages = r.sized()?;
            let mut list = Reader {
                bytes: messages,
                at: 0,
            };
            while !list.is_empty() {
                list.sized()?;
            }
        }
        K::SmartRollupCement => {
            op.smart_rollup = Some(r.smart_rollup()?);
        }
        K::SmartRollupPublish => {
            op.smart_rollup = Some(r.smart_rollup()?);
            // Sc_rollup_commitment_repr: compressed state (srs1), inbox level, predecessor (src1),
            // number of ticks (int64, at least 0).
            r.take(32)?;
            r.level()?;
            r.take(32)?;
            if r.i64()? < 0 {
                return invalid("negative number of ticks");
            }
        }
        K::SmartRollupRefute => {
            op.smart_rollup = Some(r.smart_rollup()?);
            r.pkh()?; // opponent
            r.refutation()?;
        }
        K::SmartRollupTimeout => {
            op.smart_rollup = Some(r.smart_rollup()?);
            r.pkh()?; // alice
            r.pkh()?; // bob
        }
        K::SmartRollupExecuteOutboxMessage => {
            op.smart_rollup = Some(r.smart_rollup()?);
            r.take(32)?; // cemented commitment hash (src1)
            r.sized()?; // output proof
        }
        K::SmartRollupRecoverBond => {
            op.smart_rollup = Some(r.smart_rollup()?);
            r.pkh()?; // the staker whose bond is given back
        }
        K::DalPublishCommitment => {
            r.take(1 + 48 + 96)?; // slot index, commitment, commitment proof
        }
        // Pseudo-operations are only produced from transactions above.
        K::Stake | K::Unstake | K::FinalizeUnstake | K::SetDelegateParameters => {
            return invalid("pseudo-operation without a tag");
        }
    }
    Ok(op)
}

fn staking_pseudo_operation(entrypoint: &str) -> Option<OperationKind> {
    match entrypoint {
        "stake" => Some(OperationKind::Stake),
        "unstake" => Some(OperationKind::Unstake),
        "finalize_unstake" => Some(OperationKind::FinalizeUnstake),
        "set_delegate_parameters" => Some(OperationKind::SetDelegateParameters),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
    const OTHER: &str = "tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN";

    fn pkh(text: &str) -> Vec<u8> {
        text.parse::<PublicKeyHash>().unwrap().to_binary().to_vec()
    }

    fn sized(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// tag ‖ source ‖ fee 1000 ‖ counter 7 ‖ gas 10300 ‖ storage 257
    fn manager(tag: u8) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(pkh(SOURCE));
        out.extend([0xe8, 0x07, 0x07, 0xbc, 0x50, 0x81, 0x02]);
        out
    }

    fn generic(contents: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0x03];
        out.extend([0xab; 32]);
        for c in contents {
            out.extend(c);
        }
        out
    }

    fn transaction(destination: &str, parameters: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut out = manager(108);
        out.extend([0xc0, 0x84, 0x3d]); // 1 tez
        out.push(0);
        out.extend(pkh(destination));
        match parameters {
            None => out.push(0x00),
            Some((entrypoint, value)) => {
                out.push(0xff);
                out.extend(entrypoint);
                out.extend(sized(value));
            }
        }
        out
    }

    fn one(contents: Vec<u8>) -> Result<Operation, OperationError> {
        decode(&generic(&[contents])).map(|g| g.operations[0].clone())
    }

    #[test]
    fn every_decoded_kind_is_named_and_read_to_its_last_byte() {
        let bls_proof = {
            let mut p = vec![0xff];
            p.extend(sized(&[0x11; 96]));
            p
        };
        let ed_pk = {
            let mut p = vec![0x00];
            p.extend([0x22; 32]);
            p
        };
        let table: Vec<(OperationKind, Vec<u8>)> = vec![
            (
                OperationKind::SeedNonceRevelation,
                [vec![1], vec![0, 0, 0, 9], vec![7; 32]].concat(),
            ),
            (
                OperationKind::DoubleConsensusOperationEvidence,
                [vec![2, 0, 1], sized(&[1, 2, 3]), sized(&[4, 5])].concat(),
            ),
            (OperationKind::ActivateAccount, [vec![4], vec![9; 40]].concat()),
            (
                OperationKind::Proposals,
                [vec![5], pkh(SOURCE), vec![0, 0, 0, 3], sized(&[6; 64])].concat(),
            ),
            (
                OperationKind::Ballot,
                [vec![6], pkh(SOURCE), vec![0, 0, 0, 3], vec![6; 32], vec![2]].concat(),
            ),
            (
                OperationKind::DrainDelegate,
                [vec![9], pkh(OTHER), pkh(SOURCE), pkh(OTHER)].concat(),
            ),
            (OperationKind::FailingNoop, [vec![17], sized(b"hello")].concat()),
            (OperationKind::Preattestation, [vec![20], vec![0; 42]].concat()),
            (OperationKind::Attestation, [vec![21], vec![0; 42]].concat()),
            (
                OperationKind::AttestationWithDal,
                [vec![23], vec![0; 42], vec![0x80, 0x20]].concat(),
            ),
            (
                OperationKind::PreattestationsAggregate,
                [vec![30], vec![0; 40], sized(&[0, 1, 0, 2])].concat(),
            ),
            (
                OperationKind::AttestationsAggregate,
                [vec![31], vec![0; 40], sized(&[0, 1, 0x00, 0, 2, 0xff, 0x05])].concat(),
            ),
            (
                OperationKind::Reveal,
                [manager(107), ed_pk.clone(), vec![0]].concat(),
            ),
            (OperationKind::Transaction, transaction(OTHER, None)),
            (
                OperationKind::Origination,
                [manager(109), vec![0, 0], sized(b"code"), sized(b"st")].concat(),
            ),
            (
                OperationKind::Delegation,
                [manager(110), vec![0xff], pkh(OTHER)].concat(),
            ),
            (
                OperationKind::RegisterGlobalConstant,
                [manager(111), sized(&[3, 4])].concat(),
            ),
            (
                OperationKind::SetDepositsLimit,
                [manager(112), vec![0xff, 0x80, 0x01]].concat(),
            ),
            (
                OperationKind::IncreasePaidStorage,
                [manager(113), vec![0x45], vec![1], vec![1; 20], vec![0]].concat(),
            ),
            (
                OperationKind::UpdateConsensusKey,
                [manager(114), ed_pk.clone(), vec![0]].concat(),
            ),
            (
                OperationKind::UpdateCompanionKey,
                [manager(115), vec![3], vec![0x33; 48], bls_proof].concat(),
            ),
            (
                OperationKind::TransferTicket,
                [
                    manager(158),
                    sized(b"c"),
                    sized(b"t"),
                    vec![1],
                    vec![5; 20],
                    vec![0],
                    vec![0x0a],
                    vec![0],
                    pkh(OTHER),
                    sized(b"default"),
                ]
                .concat(),
            ),
            (
                OperationKind::SmartRollupOriginate,
                [
                    manager(200),
                    vec![1],
                    sized(b"kernel"),
                    sized(b"ty"),
                    vec![0xff],
                    sized(&pkh(OTHER)),
                ]
                .concat(),
            ),
            (
                OperationKind::SmartRollupAddMessages,
                [manager(201), sized(&[sized(b"a"), sized(b"bc")].concat())].concat(),
            ),
            (
                OperationKind::SmartRollupExecuteOutboxMessage,
                [manager(206), vec![8; 52], sized(b"proof")].concat(),
            ),
            (
                OperationKind::SmartRollupCement,
                [manager(202), vec![8; 20]].concat(),
            ),
            (
                OperationKind::SmartRollupPublish,
                [
                    manager(203),
                    vec![8; 20],
                    vec![1; 32],
                    vec![0, 0, 0, 5],
                    vec![2; 32],
                    vec![0; 8],
                ]
                .concat(),
            ),
            (
                OperationKind::SmartRollupRefute,
                [manager(204), vec![8; 20], pkh(OTHER), vec![0], vec![3; 64]].concat(),
            ),
            (
                OperationKind::SmartRollupTimeout,
                [manager(205), vec![8; 20], pkh(OTHER), pkh(SOURCE)].concat(),
            ),
            (
                OperationKind::SmartRollupRecoverBond,
                [manager(207), vec![8; 20], pkh(SOURCE)].concat(),
            ),
            (
                OperationKind::DalPublishCommitment,
                [manager(230), vec![1; 145]].concat(),
            ),
        ];
        for (kind, bytes) in &table {
            let decoded = one(bytes.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(decoded.kind, *kind);
            // One byte less is always an error: nothing is read past the end or guessed.
            let payload = generic(std::slice::from_ref(bytes));
            assert!(decode(&payload[..payload.len() - 1]).is_err(), "{kind} truncated");
            // One byte more is read as the start of another operation and refused.
            let mut longer = payload.clone();
            longer.push(0xee);
            assert!(decode(&longer).is_err(), "{kind} with a trailing byte");
        }
    }

    #[test]
    fn transactions_expose_destination_amount_and_entrypoint() {
        let op = one(transaction(
            OTHER,
            Some((&[0xff, 3, b'b', b'u', b'y'], &[0x03, 0x0b])),
        ))
        .unwrap();
        assert_eq!(op.kind, OperationKind::Transaction);
        assert_eq!(op.source.unwrap().to_string(), SOURCE);
        assert_eq!(op.destination.unwrap().to_string(), OTHER);
        assert_eq!(op.amount, Some(1_000_000));
        assert_eq!(op.entrypoint.as_deref(), Some("buy"));
    }

    #[test]
    fn staking_calls_to_oneself_are_named_as_pseudo_operations() {
        for (tag, kind) in [
            (6u8, OperationKind::Stake),
            (7, OperationKind::Unstake),
            (8, OperationKind::FinalizeUnstake),
            (9, OperationKind::SetDelegateParameters),
        ] {
            let to_self = one(transaction(SOURCE, Some((&[tag], &[0x03, 0x0b])))).unwrap();
            assert_eq!(to_self.kind, kind);
            // The same call to someone else stays a transaction, under the transaction rules.
            let elsewhere = one(transaction(OTHER, Some((&[tag], &[0x03, 0x0b])))).unwrap();
            assert_eq!(elsewhere.kind, OperationKind::Transaction);
        }
    }

    #[test]
    fn batches_of_manager_operations_are_all_named() {
        let batch = decode(&generic(&[
            [manager(107), vec![0], vec![0x44; 32], vec![0]].concat(),
            transaction(OTHER, None),
            transaction(SOURCE, None),
        ]))
        .unwrap();
        assert_eq!(
            batch.kinds(),
            [
                OperationKind::Reveal,
                OperationKind::Transaction,
                OperationKind::Transaction
            ]
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(Vec<u8>, OperationError)> = vec![
            (vec![0x03; 10], OperationError::TooShort(10)),
            (generic(&[]), OperationError::Empty),
            (
                generic(&[vec![0x99]]),
                OperationError::UnknownTag { index: 0, tag: 0x99 },
            ),
            (
                generic(&[transaction(OTHER, None), vec![250, 1, 2]]),
                OperationError::NotDecoded {
                    index: 1,
                    tag: 250,
                    name: "zk_rollup_origination",
                },
            ),
            (
                generic(&[
                    transaction(OTHER, None),
                    [vec![6], pkh(SOURCE), vec![0; 36], vec![0]].concat(),
                ]),
                OperationError::MixedBatch {
                    index: 1,
                    kind: OperationKind::Ballot,
                },
            ),
            (
                generic(&[[vec![6], pkh(SOURCE), vec![0; 36], vec![3]].concat()]),
                OperationError::Invalid {
                    index: 0,
                    kind: OperationKind::Ballot,
                    message: "unknown ballot value 3".into(),
                },
            ),
            (
                generic(&[[manager(110), vec![0x01]].concat()]),
                OperationError::Invalid {
                    index: 0,
                    kind: OperationKind::Delegation,
                    message: "boolean byte 0x01 is neither 00 nor ff".into(),
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(&bytes), Err(expected));
        }
    }

    #[test]
    fn zarith_numbers_must_be_canonical_and_bounded() {
        // fee 0x80 0x00: a trailing zero byte.
        let mut op = vec![108];
        op.extend(pkh(SOURCE));
        op.extend([0x80, 0x00]);
        assert!(matches!(
            decode(&generic(&[op])),
            Err(OperationError::Invalid { message, .. }) if message.contains("non-canonical")
        ));
        // an 11-byte gas limit
        let mut op = vec![110];
        op.extend(pkh(SOURCE));
        op.extend([0x01, 0x01]);
        op.extend([0x80; 10]);
        op.push(0x01);
        assert!(matches!(
            decode(&generic(&[op])),
            Err(OperationError::Invalid { message, .. }) if message.contains("longer than 10")
        ));
    }

    #[test]
    fn the_vector_operation_decodes_as_a_transaction() {
        // payloads.json "sig-req-operation"
        let hex = "03a60703a9567bf69ec66b368c3d8562eba4cbf29278c2c10447a684e3aa1436856c00a0c7a9b0bcd6a48ee0c13094327f215ba2adeaa7d40dabc1af25e36fde02c096b10201f525eabd8b0eeace1494233ea0230d2c9ad6619b00ffff0b66756c66696c6c5f61736b0000000907070088f0f6010306";
        let g = decode(&hex::decode(hex).unwrap()).unwrap();
        assert_eq!(g.kinds(), [OperationKind::Transaction]);
        assert_eq!(g.operations[0].entrypoint.as_deref(), Some("fulfill_ask"));
        assert!(matches!(
            g.operations[0].destination,
            Some(Address::Originated(_))
        ));
    }

    /// Hex pieces, concatenated: each vector below is written field by field.
    fn bytes_of(parts: &[&str]) -> Vec<u8> {
        hex::decode(parts.concat()).unwrap()
    }

    /// Etherlink mainnet's rollup.
    const ETHERLINK: &str = "sr1Ghq66tYK9y3r8CC1Tf8i8m5nxh8nTvZEf";
    const ETHERLINK_HEX: &str = "74f8952e7a287d78e8dceec67547bd00a278abbf";
    /// The manager header after the tag: source tz1KqTp… (`00` ed25519 ‖ hash), fee 1000 (`e807`),
    /// counter 7 (`07`), gas limit 10300 (`bc50`), storage limit 257 (`8102`).
    const HEADER: &str = "0002298c03ed7d454a101eb7022bc95f7e5f41ac78e80707bc508102";
    /// tz1gjaF8… as a Signature.Public_key_hash: `00` ed25519 ‖ hash.
    const OTHER_HEX: &str = "00e7670f32038107a59a2b9cfefae36ea21f5aa63c";

    /// Vectors built by hand from the encodings of `src/proto_025_PsUshuai/lib_protocol/operation_repr.ml`
    /// (tezos/tezos-mirror at 09d888de87d4513e933bfe0b1a43de0e63936ef0): the five rollup operations no
    /// client library forges. Commitment (`Sc_rollup_commitment_repr`): state hash 32, inbox level
    /// int32, predecessor 32, number of ticks int64. Refutation (`Sc_rollup_game_repr`): `00` start ‖
    /// two commitment hashes, or `01` move ‖ tick `n` ‖ `00` dissection (list of `opt state ‖ n`) or `01`
    /// proof (bytes). Stakers are public key hashes.
    #[test]
    fn smart_rollup_operator_operations_decode_with_their_rollup() {
        let vectors: Vec<(OperationKind, Vec<u8>)> = vec![
            (
                OperationKind::SmartRollupCement,
                // tag 202 ‖ header ‖ rollup
                bytes_of(&["ca", HEADER, ETHERLINK_HEX]),
            ),
            (
                OperationKind::SmartRollupPublish,
                bytes_of(&[
                    "cb",
                    HEADER,
                    ETHERLINK_HEX,
                    &"11".repeat(32),   // compressed_state (srs1…)
                    "000a5e7c",         // inbox_level 679548
                    &"22".repeat(32),   // predecessor (src1…)
                    "0000000000000fa0", // number_of_ticks 4000
                ]),
            ),
            (
                OperationKind::SmartRollupRefute,
                bytes_of(&[
                    "cc",
                    HEADER,
                    ETHERLINK_HEX,
                    OTHER_HEX,        // opponent
                    "00",             // start
                    &"33".repeat(32), // player_commitment_hash
                    &"44".repeat(32), // opponent_commitment_hash
                ]),
            ),
            (
                OperationKind::SmartRollupRefute,
                bytes_of(&[
                    "cc",
                    HEADER,
                    ETHERLINK_HEX,
                    OTHER_HEX,
                    "01",       // move
                    "a01f",     // choice: tick 4000
                    "00",       // dissection
                    "00000026", // 38 bytes of chunks
                    "ff",       // state present
                    &"55".repeat(32),
                    "a01f", // tick 4000
                    "00",   // no state
                    "c03e", // tick 8000
                ]),
            ),
            (
                OperationKind::SmartRollupRefute,
                bytes_of(&[
                    "cc",
                    HEADER,
                    ETHERLINK_HEX,
                    OTHER_HEX,
                    "01",       // move
                    "00",       // choice: tick 0
                    "01",       // proof
                    "00000003", // 3 bytes
                    "0a0b0c",   // the serialized proof, opaque
                ]),
            ),
            (
                OperationKind::SmartRollupTimeout,
                // tag 205 ‖ header ‖ rollup ‖ alice ‖ bob
                bytes_of(&[
                    "cd",
                    HEADER,
                    ETHERLINK_HEX,
                    OTHER_HEX,
                    "0002298c03ed7d454a101eb7022bc95f7e5f41ac78",
                ]),
            ),
            (
                OperationKind::SmartRollupRecoverBond,
                // tag 207 ‖ header ‖ rollup ‖ staker
                bytes_of(&["cf", HEADER, ETHERLINK_HEX, OTHER_HEX]),
            ),
        ];
        for (kind, bytes) in vectors {
            let op = one(bytes.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(op.kind, kind);
            assert_eq!(op.source.unwrap().to_string(), SOURCE);
            assert_eq!(op.smart_rollup.unwrap().to_string(), ETHERLINK, "{kind}");
            let payload = generic(&[bytes]);
            assert!(decode(&payload[..payload.len() - 1]).is_err(), "{kind} truncated");
        }
        // A negative tick count or level, an unknown refutation tag: refused, not skipped.
        let bad_ticks = bytes_of(&[
            "cb",
            HEADER,
            ETHERLINK_HEX,
            &"11".repeat(32),
            "000a5e7c",
            &"22".repeat(32),
            "8000000000000000",
        ]);
        assert!(
            matches!(one(bad_ticks), Err(OperationError::Invalid { message, .. }) if message.contains("ticks"))
        );
        let bad_level = bytes_of(&[
            "cb",
            HEADER,
            ETHERLINK_HEX,
            &"11".repeat(32),
            "ffffffff",
            &"22".repeat(32),
            "00",
        ]);
        assert!(
            matches!(one(bad_level), Err(OperationError::Invalid { message, .. }) if message.contains("negative level"))
        );
        let bad_refutation = bytes_of(&["cc", HEADER, ETHERLINK_HEX, OTHER_HEX, "02"]);
        assert!(
            matches!(one(bad_refutation), Err(OperationError::Invalid { message, .. }) if message.contains("refutation tag 2"))
        );
        // The two smart-rollup operations that name no rollup.
        let add = one([manager(201), sized(&sized(b"msg"))].concat()).unwrap();
        assert_eq!(add.smart_rollup, None);
    }

    #[test]
    fn never_signed_operations_are_found_wherever_they_sit() {
        let consensus_content = vec![0u8; 2 + CONSENSUS_AGGREGATE_CONTENT];
        for never in NEVER_SIGNED {
            // Alone, with nothing after the tag that the walk would need to read.
            let alone = generic(&[vec![never.tag]]);
            assert_eq!(find_never_signed(&alone), Some((0, *never)), "{}", never.name);
            // After a well-formed transaction.
            let second = generic(&[
                transaction(OTHER, None),
                vec![never.tag],
                consensus_content.clone(),
            ]);
            assert_eq!(find_never_signed(&second), Some((1, *never)), "{}", never.name);
            // Kinds the decoder reads are named so by OperationKind too.
            if let Ok(kind) = never.name.parse::<OperationKind>() {
                assert_eq!(kind.never_signed(), Some(never.reason));
            }
        }
        // drain_delegate is anonymous but signed by the consensus key: not on the list.
        assert_eq!(OperationKind::DrainDelegate.never_signed(), None);
        let drain = generic(&[[vec![9], pkh(OTHER), pkh(SOURCE), pkh(OTHER)].concat()]);
        assert_eq!(find_never_signed(&drain), None);
        // What the walk cannot read past ends it: an unknown tag, a truncated operation, short bytes.
        assert_eq!(find_never_signed(&generic(&[vec![0x99], vec![21]])), None);
        assert_eq!(find_never_signed(&[0x03, 0x12, 0x34]), None);
        assert_eq!(find_never_signed(&[0x11; 60]), None);
        // The decoder itself still reads an attestation: it is the policy that refuses it.
        let attestation = generic(&[[vec![21], consensus_content].concat()]);
        assert_eq!(
            decode(&attestation).unwrap().kinds(),
            [OperationKind::Attestation]
        );
    }

    #[test]
    fn tz5_addresses_and_public_keys_inside_operations_are_decoded() {
        // A tz5 address: tag 4 ‖ 20-byte hash (Octez prefix 06 a1 a9 in base58).
        let tz5 = PublicKeyHash::new(Curve::MlDsa44, [0x5b; 20]);
        let text = tz5.to_string();
        assert!(text.starts_with("tz5"), "{text}");
        assert_eq!(text.parse::<PublicKeyHash>().unwrap(), tz5);
        assert_eq!(text.parse::<Address>().unwrap(), Address::Implicit(tz5));
        // As a transaction's destination.
        let op = one(transaction(&text, None)).unwrap();
        assert_eq!(op.destination, Some(Address::Implicit(tz5)));
        // As a manager operation's source, revealing its ML-DSA-44 public key (tag 4 ‖ 1312 bytes).
        let mut reveal = vec![107, 4];
        reveal.extend([0x5b; 20]);
        reveal.extend([0xe8, 0x07, 0x07, 0xbc, 0x50, 0x81, 0x02]);
        reveal.push(4);
        reveal.extend(vec![0x77; 1312]);
        reveal.push(0); // no proof
        let op = one(reveal.clone()).unwrap();
        assert_eq!((op.kind, op.source), (OperationKind::Reveal, Some(tz5)));
        // A key one byte short is truncated, not read as something else.
        let mut short = reveal[..reveal.len() - 2].to_vec();
        short.push(0);
        assert!(matches!(
            one(short),
            Err(OperationError::Truncated { .. } | OperationError::Invalid { .. })
        ));
    }

    #[test]
    fn addresses_and_kinds_parse_from_their_names() {
        for kind in OperationKind::ALL {
            assert_eq!(kind.name().parse::<OperationKind>(), Ok(kind));
        }
        let kt1 = Address::Originated([5; 20]).to_string();
        assert!(kt1.starts_with("KT1"));
        assert_eq!(kt1.parse::<Address>().unwrap(), Address::Originated([5; 20]));
        assert!("edpkfoo".parse::<Address>().is_err());
        let rollup: SmartRollupAddress = ETHERLINK.parse().unwrap();
        assert_eq!(hex::encode(rollup.0), ETHERLINK_HEX);
        assert_eq!(rollup.to_string(), ETHERLINK);
        assert!(OTHER.parse::<SmartRollupAddress>().is_err());
    }
}
