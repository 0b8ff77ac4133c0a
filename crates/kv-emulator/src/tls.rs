//! The emulator's certificate authority: a self-signed CA (reused from the persist dir when present) and a leaf
//! certificate for 127.0.0.1 / ::1 / localhost, turned into a rustls server configuration.

use crate::error::StartError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

/// CA certificate (PEM, for clients to trust) and the server's TLS configuration.
#[derive(Debug)]
pub(crate) struct Certificates {
    pub ca_pem: String,
    pub server_config: Arc<ServerConfig>,
}

const CA_KEY_FILE: &str = "ca-key.pem";

/// Generate the CA and leaf. With a persist dir, the CA key is kept there so clients that trusted an earlier
/// `ca.pem` keep trusting the restarted emulator (same subject, same key).
pub(crate) fn generate(persist_dir: Option<&Path>) -> Result<Certificates, StartError> {
    let ca_key = match persist_dir {
        Some(dir) => load_or_create_ca_key(dir)?,
        None => KeyPair::generate()?,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kv-emulator local test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "tzkms");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.is_ca = IsCa::NoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}

fn load_or_create_ca_key(dir: &Path) -> Result<KeyPair, StartError> {
    let path = dir.join(CA_KEY_FILE);
    let persist_err = |source| StartError::Persist {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => Ok(KeyPair::from_pem(&pem)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(persist_err)?;
            let key = KeyPair::generate()?;
            write_private(&path, key.serialize_pem().as_bytes()).map_err(persist_err)?;
            Ok(key)
        }
        Err(e) => Err(persist_err(e)),
    }
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::generate;

    #[test]
    fn persisted_ca_key_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = generate(Some(dir.path())).expect("first");
        let key_file = dir.path().join("ca-key.pem");
        let key_before = std::fs::read(&key_file).expect("CA key written");
        let b = generate(Some(dir.path())).expect("second");
        assert_eq!(std::fs::read(&key_file).expect("CA key kept"), key_before);
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "CA key readable by others");
        }
    }
}
