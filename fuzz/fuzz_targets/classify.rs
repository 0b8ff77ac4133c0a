//! Payload classification: never a panic; a classified consensus payload reads back its own fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tezos::{classify, Payload};

fuzz_target!(|data: &[u8]| {
    if let Ok(Payload::Consensus(c)) = classify(data) {
        // Level and round are non-negative int32 values, as the protocol encodes them.
        assert!(c.level.0 <= i32::MAX as u32 && c.round.0 <= i32::MAX as u32);
        assert_eq!(c.chain_id.0, [data[1], data[2], data[3], data[4]]);
        assert_eq!(c.kind.magic_byte(), data[0]);
    }
});
