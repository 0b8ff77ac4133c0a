//! What a policy rule names: the kind of a signing request (`allow = ["block", …]`) and a TLS client
//! (`tls_clients = ["sha256:…", "cn:…"]`). Parsed here once, from the configuration file, and used by
//! `config` and `policy` alike.

use std::fmt;
use std::str::FromStr;

use tezos::OperationKind;

use crate::peer::ClientCertificate;

/// What a key may be asked to sign, as written in `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// 0x11
    Block,
    /// 0x12
    Preattestation,
    /// 0x13
    Attestation,
    /// 0x05
    MichelsonData,
    /// 0x01
    LegacyBlock,
    /// 0x02
    LegacyEndorsement,
    /// Any 0x03 bytes, not decoded: what octez-signer does. For operations this version cannot decode.
    GenericUnchecked,
    /// Payloads whose magic byte tzkms does not know (still only those in `allowed_magic_bytes`).
    OtherMagicBytes,
    /// One kind of operation inside 0x03 payloads.
    Operation(OperationKind),
}

impl RequestKind {
    pub const CONSENSUS: [RequestKind; 3] = [Self::Block, Self::Preattestation, Self::Attestation];

    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Preattestation => "preattestation",
            Self::Attestation => "attestation",
            Self::MichelsonData => "michelson_data",
            Self::LegacyBlock => "legacy_block",
            Self::LegacyEndorsement => "legacy_endorsement",
            Self::GenericUnchecked => "generic_unchecked",
            Self::OtherMagicBytes => "other_magic_bytes",
            Self::Operation(kind) => kind.name(),
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RequestKind {
    type Err = String;
    /// `preattestation` and `attestation` name the consensus payloads (0x12, 0x13); the generic-operation
    /// forms of those tags, and the other operations no client sends a signer, cannot be allowed.
    fn from_str(s: &str) -> Result<Self, String> {
        let kind = match s {
            "block" => Self::Block,
            "preattestation" | "preendorsement" => Self::Preattestation,
            "attestation" | "endorsement" => Self::Attestation,
            "michelson_data" => Self::MichelsonData,
            "legacy_block" => Self::LegacyBlock,
            "legacy_endorsement" => Self::LegacyEndorsement,
            "generic_unchecked" => Self::GenericUnchecked,
            "other_magic_bytes" => Self::OtherMagicBytes,
            other => Self::Operation(other.parse().map_err(|_| {
                format!(
                    "unknown request kind {other:?}: expected block, preattestation, attestation, \
                     michelson_data, legacy_block, legacy_endorsement, generic_unchecked, \
                     other_magic_bytes or an operation kind ({})",
                    OperationKind::ALL
                        .into_iter()
                        .filter(|k| k.never_signed().is_none())
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?),
        };
        if let Self::Operation(operation) = kind {
            if let Some(reason) = operation.never_signed() {
                return Err(format!(
                    "{s} is never signed by tzkms, whatever the policy says ({reason}); remove it from allow"
                ));
            }
        }
        Ok(kind)
    }
}

/// A TLS client a key may be restricted to: a certificate fingerprint or a subject common name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientPattern {
    /// `sha256:<hex>`: SHA-256 of the DER certificate.
    Fingerprint(String),
    /// `cn:<name>`: the subject's common name (the CA vouches for it).
    CommonName(String),
}

impl ClientPattern {
    pub fn matches(&self, cert: &ClientCertificate) -> bool {
        match self {
            Self::Fingerprint(f) => *f == cert.fingerprint,
            Self::CommonName(cn) => cert.common_name.as_deref() == Some(cn.as_str()),
        }
    }
}

impl fmt::Display for ClientPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fingerprint(hex) => write!(f, "sha256:{hex}"),
            Self::CommonName(cn) => write!(f, "cn:{cn}"),
        }
    }
}

impl FromStr for ClientPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            let hex = hex.to_ascii_lowercase().replace(':', "");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{s:?}: a sha256 fingerprint is 64 hex digits"));
            }
            return Ok(Self::Fingerprint(hex));
        }
        if let Some(cn) = s.strip_prefix("cn:").filter(|cn| !cn.is_empty()) {
            return Ok(Self::CommonName(cn.to_owned()));
        }
        Err(format!(
            "{s:?}: a TLS client is \"sha256:<certificate fingerprint>\" or \"cn:<subject common name>\""
        ))
    }
}
