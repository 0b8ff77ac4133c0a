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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::AzureConfig;
use credential::TokenCache;
use keyvault::KeyVaultClient;

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

/// The one Key Vault / Managed HSM client constructor (serve and the management commands): the token
/// audience discovered from the vault's 401 challenge, a first token in hand, its refresher running, and
/// the configured price for the cost estimate.
pub async fn connect(azure: &AzureConfig) -> anyhow::Result<Arc<KeyVaultClient>> {
    let http = http_client(azure.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let resource = KeyVaultClient::discover_resource(
        &http,
        &azure.vault_url,
        &azure.api_version,
        Duration::from_millis(azure.request_timeout_ms),
    )
    .await
    .map_err(|e| anyhow::anyhow!("azure: {e}"))?;
    let source = credential::from_config(&azure.credential, http.clone())?;
    let tokens = TokenCache::new(source, resource);
    tokens
        .get()
        .await
        .with_context(|| format!("azure: first token for {}", azure.vault_url))?;
    tokens.spawn_refresher();
    let client = Arc::new(KeyVaultClient::new(
        http,
        &azure.vault_url,
        &azure.api_version,
        tokens,
    ));
    if let Some(price) = azure.price_per_10k_operations {
        client.stats().set_price_per_10k(price);
    }
    Ok(client)
}
