//! The watermark store / interchange format: no panic, and what decodes re-encodes to an equal document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tzkms::watermark::interchange;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(marks) = interchange::decode(text) {
        let again = interchange::decode(&interchange::encode(&marks)).unwrap();
        assert_eq!(again, marks);
    }
});
