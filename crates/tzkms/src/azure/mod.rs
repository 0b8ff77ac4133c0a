//! Azure: Entra ID credentials and the Key Vault / Managed HSM REST client. The backend that serves keys
//! from a vault is `backend::azure`.

pub mod connection;
pub mod credential;
pub mod import;
pub mod keyvault;
pub mod observed;
pub mod retry;
pub mod stats;
pub mod table;

use std::time::Duration;

/// The HTTP client for every Azure endpoint: rustls, connections kept open (TCP keep-alive stops load
/// balancers from dropping idle ones), so a steady-state call pays no new handshake.
pub fn http_client(extra_ca: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("tzkms/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    // The built-in roots are compiled in (webpki-roots), so the usual variable for a TLS-re-signing
    // proxy's CA is read here.
    if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(path);
        let pem = std::fs::read(&path).map_err(|e| format!("SSL_CERT_FILE {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("SSL_CERT_FILE {}: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}
