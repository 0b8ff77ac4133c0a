//! Base58check decoding of every key and signature type: no panic, and whatever decodes re-encodes to
//! the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tezos::{base58, PublicKey, PublicKeyHash, Signature};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((prefix, payload)) = base58::decode_any(text) {
        assert_eq!(base58::encode(prefix, &payload), text);
    }
    if let Ok(pkh) = text.parse::<PublicKeyHash>() {
        assert_eq!(pkh.to_string(), text);
    }
    if let Ok(pk) = text.parse::<PublicKey>() {
        assert_eq!(pk.hash(), pk.to_string().parse::<PublicKey>().unwrap().hash());
    }
    if let Ok(sig) = text.parse::<Signature>() {
        assert_eq!(sig.to_string(), text);
    }
    let _ = text.parse::<tezos::SecretKey>();
    let _ = tezos::encrypted::decrypt(text, b"fuzz");
});
