//! Tezos formats a remote signer needs: base58check, keys and signatures on the four curves,
//! encrypted secret keys, classification of the payloads bakers send. Pure: no I/O, no async.

pub mod base58;
pub mod builder;
pub mod encrypted;
pub mod hash;
pub mod keys;
pub mod operation;
mod p256_openssl;
pub mod payload;
pub mod signature;
pub mod threshold;

pub use hash::{blake2b_160, blake2b_256};
pub use keys::{Curve, KeyError, PublicKey, PublicKeyHash, SecretKey};
pub use operation::{
    Address, Ballot, GenericOperation, Operation, OperationError, OperationKind, SmartRollupAddress,
};
pub use payload::{
    classify, ChainId, Consensus, ConsensusKind, ConsensusOperation, Level, Payload, PayloadError, Round,
    WrongKeyType,
};
pub use signature::{BlsScheme, Signature, SignatureVersion};
