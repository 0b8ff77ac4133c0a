//! base64url as Key Vault speaks it: unpadded on the way out, padded or unpadded accepted on the way in.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

const OUT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

const IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encode without padding.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    OUT.encode(bytes)
}

/// Decode padded or unpadded base64url.
pub(crate) fn from_b64url(text: &str) -> Option<Vec<u8>> {
    IN.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::{b64url, from_b64url};

    #[test]
    fn output_is_unpadded_and_input_accepts_both() {
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(from_b64url("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(from_b64url("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(from_b64url("+/8="), None);
    }
}
