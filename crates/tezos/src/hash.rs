//! BLAKE2b digests Tezos uses: 256 bits for what is signed and watermarked, 160 bits for key hashes.

use blake2::digest::consts::{U20, U32};
use blake2::{Blake2b, Digest};

/// BLAKE2b-256: the digest ed25519/secp256k1/P-256 keys sign, and the payload hash of a watermark.
pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

/// BLAKE2b-160: the hash inside a `tz…` address.
pub fn blake2b_160(data: &[u8]) -> [u8; 20] {
    Blake2b::<U20>::digest(data).into()
}
