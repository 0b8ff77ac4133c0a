//! The generic (0x03) operation decoder: no panic on any bytes; a decoded payload names at least one
//! operation and its branch is the 32 bytes after the magic byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = vec![0x03];
    bytes.extend_from_slice(data);
    if let Ok(op) = tezos::operation::decode(&bytes) {
        assert!(!op.operations.is_empty());
        assert_eq!(&op.branch[..], &bytes[1..33]);
        let _ = op.kinds();
    }
});
