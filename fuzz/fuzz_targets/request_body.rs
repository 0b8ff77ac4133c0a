//! The body of `POST /keys/<pkh>`: a JSON string of hex. No panic; accepted bodies are exactly the hex of
//! the bytes returned.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = tzkms::server::decode_body(data) {
        let text: String = serde_json_from(data);
        assert_eq!(hex::decode(text).unwrap(), bytes);
    }
});

fn serde_json_from(data: &[u8]) -> String {
    // The body parsed as the server does, to cross-check the decoded bytes.
    tzkms::server::body_text(data).unwrap()
}
