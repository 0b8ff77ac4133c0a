//! Who is on the other end of a connection, as far as TLS proves it: the client certificate's identity,
//! which the policy can require, the signer passes along and the audit line records.

use sha2::{Digest, Sha256};

/// Who a TLS client is, from its verified certificate (mTLS): what the policy can require of a caller
/// and the audit line records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
}

impl ClientCertificate {
    pub(crate) fn from_der(der: &[u8]) -> Self {
        let common_name = x509_parser::parse_x509_certificate(der)
            .ok()
            .and_then(|(_, cert)| {
                cert.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned)
            });
        Self {
            fingerprint: hex::encode(Sha256::digest(der)),
            common_name,
        }
    }
}

impl std::fmt::Display for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.fingerprint)?;
        if let Some(cn) = &self.common_name {
            write!(f, " (cn:{cn})")?;
        }
        Ok(())
    }
}
