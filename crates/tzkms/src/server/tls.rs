//! HTTPS: a rustls server configuration built from PEM files, swapped in place on reload (SIGHUP) so
//! the listeners stay open, and the identity of a client certificate when mTLS is on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::secret::check_private;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {what} {path}: {message}")]
    Read {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS: private key {0}")]
    UnsafeKey(String),
    #[error(
        "TLS: the certificate in {certificate} and the key in {private_key} do not fit together: {message}"
    )]
    Mismatch {
        certificate: PathBuf,
        private_key: PathBuf,
        message: String,
    },
    #[error("TLS: client CA bundle {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// Who a TLS client is (defined with authentication, which the signing path and the policy use).
pub use crate::peer::ClientCertificate;

/// The identity of the verified end-entity certificate of a finished handshake.
pub(crate) fn client_certificate(connection: &ServerConnection) -> Option<ClientCertificate> {
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| ClientCertificate::from_der(der))
}

/// The HTTPS settings and the configuration currently served.
#[derive(Debug)]
pub struct Tls {
    current: RwLock<Loaded>,
}

/// A server configuration built from files, ready to be served.
#[derive(Debug, Clone)]
pub struct Loaded {
    settings: TlsConfig,
    config: Arc<ServerConfig>,
    fingerprint: String,
}

impl Loaded {
    /// SHA-256 of its certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl Tls {
    pub fn load(settings: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let loaded = build(settings)?;
        Ok(Arc::new(Self {
            current: RwLock::new(loaded),
        }))
    }

    /// Re-reads the certificate, key and client CA files. On error the served configuration is kept.
    /// Connections already open keep their session; new handshakes use the new files.
    pub fn reload(&self) -> Result<String, TlsError> {
        let settings = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .settings
            .clone();
        let loaded = Self::prepare(&settings)?;
        Ok(self.install(loaded))
    }

    /// Reads the files of `settings` (which may name other files than the served ones) without serving
    /// them yet, so a reload can check everything before changing anything.
    pub(crate) fn prepare(settings: &TlsConfig) -> Result<Loaded, TlsError> {
        build(settings)
    }

    /// Serves `loaded` to new handshakes; returns its certificate's fingerprint.
    pub fn install(&self, loaded: Loaded) -> String {
        let fingerprint = loaded.fingerprint.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        fingerprint
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.config.clone())
    }

    /// SHA-256 of the served certificate, for logs.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint
            .clone()
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .settings
            .client_ca
            .is_some()
    }
}

fn read<T>(
    what: &'static str,
    path: &Path,
    result: Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, TlsError> {
    result.map_err(|e| TlsError::Read {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn build(settings: &TlsConfig) -> Result<Loaded, TlsError> {
    let certificate = &settings.certificate;
    let chain: Vec<CertificateDer<'static>> = read(
        "certificate",
        certificate,
        CertificateDer::pem_file_iter(certificate).and_then(|it| it.collect()),
    )?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: certificate.clone(),
        });
    };
    let fingerprint = hex::encode(Sha256::digest(leaf));
    check_private(&settings.private_key).map_err(|e| TlsError::UnsafeKey(e.to_string()))?;
    let key = read(
        "private key",
        &settings.private_key,
        PrivateKeyDer::from_pem_file(&settings.private_key),
    )?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::ClientCa {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| TlsError::ClientCa {
                path: path.clone(),
                message,
            };
            let mut roots = RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = read(
                "client CA bundle",
                path,
                CertificateDer::pem_file_iter(path).and_then(|it| it.collect()),
            )?;
            if cas.is_empty() {
                return Err(ca_error("no PEM certificate in the file".into()));
            }
            for ca in cas {
                roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch {
            certificate: certificate.clone(),
            private_key: settings.private_key.clone(),
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        settings: settings.clone(),
        config: Arc::new(config),
        fingerprint,
    })
}

/// Why a TLS handshake failed, as logged: a client whose certificate was refused is an operator's
/// misconfiguration (a warning naming the fix); anything else (a scanner, a client giving up) is noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client presented a certificate that does not verify: the sentence says what is wrong and
    /// how to issue one that works.
    ClientCertificate(String),
    Other(String),
}

/// The recipe for a client certificate rustls accepts.
pub const CLIENT_CERTIFICATE_FIX: &str = "issue an X.509 v3 client certificate from the client_ca with \
     basicConstraints=CA:FALSE, keyUsage=digitalSignature and extendedKeyUsage=clientAuth (docs/security.md, \
     \"Certificates with openssl\")";

/// Classifies the error of a failed server-side handshake.
pub(crate) fn handshake_failure(error: &std::io::Error) -> HandshakeFailure {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error else {
        return HandshakeFailure::Other(error.to_string());
    };
    use rustls::CertificateError as C;
    // webpki's own reasons (a v1 certificate) reach rustls as `Other`: only their debug form names them.
    let detail = format!("{cert:?}");
    let what = if detail.contains("UnsupportedCertVersion") {
        "is an X.509 v1 certificate, and only v3 certificates (with extensions) are accepted".to_owned()
    } else {
        match cert {
            C::UnknownIssuer => "was not issued by a CA in server.tls.client_ca".to_owned(),
            C::BadSignature => "has a signature that does not verify against its issuer".to_owned(),
            C::Expired | C::ExpiredContext { .. } => "has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet (check the clocks)".to_owned(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "lacks extendedKeyUsage=clientAuth".to_owned()
            }
            C::BadEncoding => "cannot be parsed".to_owned(),
            _ => format!("was refused ({cert})"),
        }
    };
    HandshakeFailure::ClientCertificate(format!(
        "mTLS: the client certificate {what}: {CLIENT_CERTIFICATE_FIX}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError as C;

    fn refused(error: rustls::Error) -> HandshakeFailure {
        handshake_failure(&std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn refused_client_certificates_name_the_cause_and_the_fix() {
        for (cert, says) in [
            (C::UnknownIssuer, "was not issued by a CA in server.tls.client_ca"),
            (C::Expired, "has expired"),
            (C::InvalidPurpose, "lacks extendedKeyUsage=clientAuth"),
        ] {
            match refused(rustls::Error::InvalidCertificate(cert)) {
                HandshakeFailure::ClientCertificate(m) => {
                    assert!(m.contains(says) && m.ends_with(CLIENT_CERTIFICATE_FIX), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn other_handshake_failures_are_not_about_the_certificate() {
        assert!(matches!(
            refused(rustls::Error::NoCertificatesPresented),
            HandshakeFailure::Other(_)
        ));
        assert!(matches!(
            handshake_failure(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            HandshakeFailure::Other(_)
        ));
    }
}
