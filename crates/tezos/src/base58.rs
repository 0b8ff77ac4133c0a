//! Base58check encoding with Tezos's typed prefixes (`tz1…`, `edpk…`, `p2sig…`, `Net…`, …).

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A Tezos base58check prefix: the bytes prepended to the payload and the payload length they go with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub payload_len: usize,
}

macro_rules! prefixes {
    ($($id:ident = $name:literal, [$($b:literal),*], $len:literal;)*) => {
        $(pub const $id: Prefix = Prefix { name: $name, bytes: &[$($b),*], payload_len: $len };)*
        /// Every prefix this crate knows, for `decode_any`.
        pub const ALL: &[Prefix] = &[$($id),*];
    };
}

prefixes! {
    TZ1 = "tz1", [0x06, 0xa1, 0x9f], 20;
    TZ2 = "tz2", [0x06, 0xa1, 0xa1], 20;
    TZ3 = "tz3", [0x06, 0xa1, 0xa4], 20;
    TZ4 = "tz4", [0x06, 0xa1, 0xa6], 20;
    TZ5 = "tz5", [0x06, 0xa1, 0xa9], 20;
    EDPK = "edpk", [0x0d, 0x0f, 0x25, 0xd9], 32;
    SPPK = "sppk", [0x03, 0xfe, 0xe2, 0x56], 33;
    P2PK = "p2pk", [0x03, 0xb2, 0x8b, 0x7f], 33;
    BLPK = "BLpk", [0x06, 0x95, 0x87, 0xcc], 48;
    EDSK_SEED = "edsk", [0x0d, 0x0f, 0x3a, 0x07], 32;
    EDSK_64 = "edsk", [0x2b, 0xf6, 0x4e, 0x07], 64;
    SPSK = "spsk", [0x11, 0xa2, 0xe0, 0xc9], 32;
    P2SK = "p2sk", [0x10, 0x51, 0xee, 0xbd], 32;
    BLSK = "BLsk", [0x03, 0x96, 0xc0, 0x28], 32;
    EDESK = "edesk", [0x07, 0x5a, 0x3c, 0xb3, 0x29], 56;
    SPESK = "spesk", [0x09, 0xed, 0xf1, 0xae, 0x96], 56;
    P2ESK = "p2esk", [0x09, 0x30, 0x39, 0x73, 0xab], 56;
    BLESK = "BLesk", [0x02, 0x05, 0x1e, 0x35, 0x19], 56;
    EDSIG = "edsig", [0x09, 0xf5, 0xcd, 0x86, 0x12], 64;
    SPSIG = "spsig1", [0x0d, 0x73, 0x65, 0x13, 0x3f], 64;
    P2SIG = "p2sig", [0x36, 0xf0, 0x2c, 0x34], 64;
    SIG = "sig", [0x04, 0x82, 0x2b], 64;
    BLSIG = "BLsig", [0x28, 0xab, 0x40, 0xcf], 96;
    KT1 = "KT1", [0x02, 0x5a, 0x79], 20;
    // Octez `Base58.Prefix.smart_rollup_address` = "\006\124\117"
    SR1 = "sr1", [0x06, 0x7c, 0x75], 20;
    CHAIN_ID = "Net", [0x57, 0x52, 0x00], 4;
    BLOCK_HASH = "B", [0x01, 0x34], 32;
    PAYLOAD_HASH = "vh", [0x01, 0x6a, 0xf2], 32;
}

// ML-DSA-44 (tz5) key and signature forms, outside `ALL`: nothing decodes them yet (their text is longer
// than the 200 characters `decode_raw` reads). Bytes from pytezos's encoding table, checked in the tests
// against the text prefixes and lengths Octez's src/lib_crypto/mldsa44.ml asserts.
pub const MDPK: Prefix = Prefix {
    name: "mdpk",
    bytes: &[0x0d, 0x07, 0xed, 0x43],
    payload_len: 1312,
};
pub const MDSK: Prefix = Prefix {
    name: "mdsk",
    bytes: &[0x09, 0x39, 0x74, 0x39],
    payload_len: 3872,
};
pub const MDSIG: Prefix = Prefix {
    name: "mdsig",
    bytes: &[0x01, 0x9c, 0x2d, 0xd2, 0x03],
    payload_len: 2420,
};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Base58Error {
    #[error("not valid base58check: {0}")]
    Invalid(String),
    #[error("expected a {expected} value")]
    WrongPrefix { expected: &'static str },
    #[error("unknown base58check prefix")]
    UnknownPrefix,
}

/// Encodes `payload` under `prefix`. The payload length is the caller's contract.
pub fn encode(prefix: Prefix, payload: &[u8]) -> String {
    debug_assert_eq!(payload.len(), prefix.payload_len, "{}", prefix.name);
    let mut data = Vec::with_capacity(prefix.bytes.len() + payload.len() + 4);
    data.extend_from_slice(prefix.bytes);
    data.extend_from_slice(payload);
    let check = Sha256::digest(Sha256::digest(&data));
    data.extend_from_slice(&check[..4]);
    to_base58(&data)
}

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// 58^5, the largest power of 58 below 2^32: the number is divided by it, five digits at a time.
const FIVE_DIGITS: u64 = 58 * 58 * 58 * 58 * 58;

/// Plain base58 (Bitcoin alphabet, a `1` per leading zero byte). Every signature the signer returns
/// is encoded at least twice (the answer, the watermark's stored copy); dividing 32-bit limbs by 58^5
/// encodes a `p2sig` in 0.6 µs where `bs58`'s digit-by-digit carry took 5.0 µs (benches/formats.rs).
fn to_base58(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let rest = &bytes[zeros..];
    // Big-endian 32-bit limbs; the first takes the bytes left over from whole limbs.
    let mut limbs: Vec<u32> = Vec::with_capacity(rest.len().div_ceil(4));
    let head = rest.len() % 4;
    if head > 0 {
        limbs.push(rest[..head].iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)));
    }
    limbs.extend(
        rest[head..]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    );
    // Base-58 digits, least significant first.
    let mut digits: Vec<u8> = Vec::with_capacity(rest.len() * 138 / 100 + 5);
    let mut start = 0;
    while start < limbs.len() {
        let mut remainder: u64 = 0;
        for limb in &mut limbs[start..] {
            let current = (remainder << 32) | u64::from(*limb);
            // current < 58^5 * 2^32, so the quotient fits in 32 bits.
            *limb = (current / FIVE_DIGITS) as u32;
            remainder = current % FIVE_DIGITS;
        }
        while start < limbs.len() && limbs[start] == 0 {
            start += 1;
        }
        for _ in 0..5 {
            digits.push((remainder % 58) as u8);
            remainder /= 58;
        }
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut text = String::with_capacity(zeros + digits.len());
    text.extend(std::iter::repeat_n('1', zeros));
    text.extend(digits.iter().rev().map(|&d| char::from(ALPHABET[usize::from(d)])));
    text
}

fn decode_raw(text: &str) -> Result<Vec<u8>, Base58Error> {
    // The longest Tezos value we accept (a BLS signature) is 142 characters; refuse anything much
    // longer before spending time on it.
    if text.len() > 200 {
        return Err(Base58Error::Invalid("too long".into()));
    }
    bs58::decode(text).with_check(None).into_vec().map_err(|e| {
        Base58Error::Invalid(match e {
            bs58::decode::Error::InvalidChecksum { .. } => "checksum mismatch".into(),
            bs58::decode::Error::InvalidCharacter { character, .. } => {
                format!("invalid character {character:?}")
            }
            bs58::decode::Error::NoChecksum => "too short".into(),
            other => other.to_string(),
        })
    })
}

/// Decodes `text`, requiring `prefix` and its payload length.
pub fn decode(prefix: Prefix, text: &str) -> Result<Vec<u8>, Base58Error> {
    let raw = decode_raw(text)?;
    strip(prefix, &raw).ok_or(Base58Error::WrongPrefix {
        expected: prefix.name,
    })
}

fn strip(prefix: Prefix, raw: &[u8]) -> Option<Vec<u8>> {
    (raw.len() == prefix.bytes.len() + prefix.payload_len && raw.starts_with(prefix.bytes))
        .then(|| raw[prefix.bytes.len()..].to_vec())
}

/// Decodes `text` under whichever of `candidates` matches.
pub fn decode_one_of(candidates: &[Prefix], text: &str) -> Result<(Prefix, Vec<u8>), Base58Error> {
    let raw = decode_raw(text)?;
    candidates
        .iter()
        .find_map(|p| strip(*p, &raw).map(|payload| (*p, payload)))
        .ok_or(Base58Error::UnknownPrefix)
}

/// Decodes `text` under any known prefix.
pub fn decode_any(text: &str) -> Result<(Prefix, Vec<u8>), Base58Error> {
    decode_one_of(ALL, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_round_trips_zero_and_ff_payloads() {
        for p in ALL {
            for byte in [0u8, 0xff] {
                let payload = vec![byte; p.payload_len];
                let text = encode(*p, &payload);
                assert!(text.starts_with(p.name), "{} -> {text}", p.name);
                assert_eq!(decode(*p, &text).unwrap(), payload);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn encoding_matches_bs58_on_any_bytes(
            zeros in 0usize..4,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..130),
        ) {
            let mut data = vec![0u8; zeros];
            data.extend(bytes);
            proptest::prop_assert_eq!(to_base58(&data), bs58::encode(&data).into_string());
        }
    }

    #[test]
    fn encoding_matches_bs58_at_the_edges() {
        for data in [
            vec![],
            vec![0],
            vec![0, 0, 0],
            vec![57],
            vec![58],
            vec![0xff; 4],
            vec![0xff; 5],
            vec![0, 0xff, 0xff, 0xff, 0xff],
            vec![0xff; 104],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(to_base58(&data), bs58::encode(&data).into_string(), "{data:?}");
        }
        for p in ALL {
            let payload = vec![0x5a; p.payload_len];
            let mut data = p.bytes.to_vec();
            data.extend(&payload);
            assert_eq!(
                encode(*p, &payload),
                bs58::encode(&data).with_check().into_string()
            );
        }
    }

    #[test]
    fn ml_dsa_44_prefixes_give_octez_text_prefixes_and_lengths() {
        // Octez's `Base58.check_encoded_prefix` lines in src/lib_crypto/mldsa44.ml.
        for (p, length) in [(TZ5, 36), (MDPK, 1802), (MDSK, 5298), (MDSIG, 3316)] {
            for byte in [0u8, 0xff] {
                let text = encode(p, &vec![byte; p.payload_len]);
                assert!(text.starts_with(p.name), "{} -> {}", p.name, &text[..8]);
                assert_eq!(text.len(), length, "{}", p.name);
            }
        }
    }

    #[test]
    fn corrupted_checksum_is_rejected() {
        let text = encode(TZ1, &[7; 20]);
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        let bad: String = chars.into_iter().collect();
        assert!(matches!(decode(TZ1, &bad), Err(Base58Error::Invalid(_))));
    }

    #[test]
    fn wrong_prefix_is_rejected() {
        let text = encode(TZ2, &[7; 20]);
        assert_eq!(
            decode(TZ1, &text),
            Err(Base58Error::WrongPrefix { expected: "tz1" })
        );
    }
}
