//! Entra ID access tokens for the vault: managed identity (IMDS, App Service / Container Apps), workload
//! identity (federated token file), client secret, Azure CLI. A `TokenCache` keeps the current token and
//! refreshes it in the background ahead of expiry, so a signature never waits for a token while the
//! current one is valid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use zeroize::Zeroizing;

use crate::azure::connection;
use crate::config::{CredentialConfig, CredentialKind};
use crate::futures::BoxFuture;

/// Time one token request (Entra ID, IMDS, App Service) may take.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";
/// A token is not used in its last minute (or last tenth, for very short-lived tokens).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Refresh at most this long before expiry (and at half the lifetime for shorter tokens).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, thiserror::Error)]
#[error("azure credential ({source_name}): {message}")]
pub struct CredentialError {
    pub source_name: &'static str,
    pub message: String,
}

fn cred_err(source_name: &'static str, message: impl Into<String>) -> CredentialError {
    CredentialError {
        source_name,
        message: message.into(),
    }
}

/// An access token and when it expires.
#[derive(Clone)]
pub struct AccessToken {
    pub token: Arc<Zeroizing<String>>,
    pub expires_at: SystemTime,
    pub obtained_at: SystemTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    fn usable(&self, now: SystemTime) -> bool {
        let lifetime = self
            .expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default();
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        self.expires_at
            .duration_since(now)
            .is_ok_and(|left| left > margin)
    }

    fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default();
        let ahead = REFRESH_AHEAD.min(lifetime / 2);
        self.expires_at - ahead
    }

    /// Seconds until expiry (for metrics and readiness).
    pub fn seconds_left(&self) -> u64 {
        self.expires_at
            .duration_since(SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Where tokens come from.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// A new token for `resource` (e.g. `https://vault.azure.net`).
    fn fetch<'a>(&'a self, resource: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>>;
}

/// Token endpoint answers: Entra v2 (`expires_in` integer), IMDS and App Service (`expires_in` /
/// `expires_on` as strings), Azure CLI (`accessToken`, `expires_on`).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(alias = "accessToken")]
    access_token: String,
    #[serde(default)]
    expires_in: Option<NumberOrString>,
    #[serde(default)]
    expires_on: Option<NumberOrString>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    Text(String),
}

impl NumberOrString {
    fn value(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::Text(t) => t.trim().parse().ok(),
        }
    }
}

fn parse_token(source: &'static str, body: &str) -> Result<AccessToken, CredentialError> {
    let r: TokenResponse = serde_json::from_str(body)
        .map_err(|e| cred_err(source, format!("unexpected token response: {e}")))?;
    let now = SystemTime::now();
    let expires_at = match (
        r.expires_on.as_ref().and_then(NumberOrString::value),
        r.expires_in.as_ref().and_then(NumberOrString::value),
    ) {
        (Some(on), _) => UNIX_EPOCH + Duration::from_secs(on),
        (None, Some(secs)) => now + Duration::from_secs(secs),
        (None, None) => return Err(cred_err(source, "token response has no expiry")),
    };
    Ok(AccessToken {
        token: Arc::new(Zeroizing::new(r.access_token)),
        expires_at,
        obtained_at: now,
    })
}

async fn read_response(
    source: &'static str,
    response: reqwest::Response,
) -> Result<AccessToken, CredentialError> {
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| cred_err(source, format!("reading the token response: {e}")))?;
    if !status.is_success() {
        // Entra and IMDS error bodies carry no secret; keep them short in logs.
        let snippet: String = body.chars().take(300).collect();
        return Err(cred_err(source, format!("HTTP {status}: {snippet}")));
    }
    parse_token(source, &body)
}

fn scope_of(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// A service principal with a client secret, or a workload identity with a federated token file: both
/// are the Entra v2.0 client-credentials grant.
#[derive(Debug)]
pub struct ClientCredentials {
    http: reqwest::Client,
    authority: String,
    tenant: String,
    client_id: String,
    proof: ClientProof,
}

#[derive(Debug)]
enum ClientProof {
    Secret(crate::secret::Secret<String>),
    /// Re-read at every fetch: the platform rotates it.
    FederatedTokenFile(PathBuf),
}

impl TokenSource for ClientCredentials {
    fn name(&self) -> &'static str {
        match self.proof {
            ClientProof::Secret(_) => "client secret",
            ClientProof::FederatedTokenFile(_) => "workload identity",
        }
    }

    fn fetch<'a>(&'a self, resource: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let name = self.name();
            let url = format!(
                "{}/{}/oauth2/v2.0/token",
                self.authority.trim_end_matches('/'),
                self.tenant
            );
            let scope = scope_of(resource);
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", self.client_id.clone()),
                ("scope", scope),
            ];
            let assertion;
            match &self.proof {
                ClientProof::Secret(secret) => form.push(("client_secret", secret.as_str().to_owned())),
                ClientProof::FederatedTokenFile(path) => {
                    assertion = Zeroizing::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| cred_err(name, format!("{}: {e}", path.display())))?,
                    );
                    form.push((
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                    ));
                    form.push(("client_assertion", assertion.trim().to_owned()));
                }
            }
            let body = Zeroizing::new(
                serde_urlencoded::to_string(&form).map_err(|e| cred_err(name, e.to_string()))?,
            );
            let response = self
                .http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.as_str().to_owned())
                .timeout(TOKEN_REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| {
                    cred_err(
                        name,
                        format!("{url}: {}", connection::explain(&e, TOKEN_REQUEST_TIMEOUT)),
                    )
                })?;
            read_response(name, response).await
        })
    }
}

/// A managed identity: the VM's IMDS endpoint, or the App Service / Container Apps identity endpoint.
#[derive(Debug)]
pub struct ManagedIdentity {
    http: reqwest::Client,
    endpoint: ManagedEndpoint,
    client_id: Option<String>,
    object_id: Option<String>,
    resource_id: Option<String>,
}

#[derive(Debug)]
enum ManagedEndpoint {
    Imds(String),
    AppService {
        url: String,
        header: crate::secret::Secret<String>,
    },
}

impl TokenSource for ManagedIdentity {
    fn name(&self) -> &'static str {
        match self.endpoint {
            ManagedEndpoint::Imds(_) => "managed identity (IMDS)",
            ManagedEndpoint::AppService { .. } => "managed identity (App Service)",
        }
    }

    fn fetch<'a>(&'a self, resource: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let name = self.name();
            let mut query: Vec<(&str, &str)> = vec![("resource", resource)];
            let request = match &self.endpoint {
                ManagedEndpoint::Imds(base) => {
                    query.push(("api-version", "2018-02-01"));
                    if let Some(id) = &self.client_id {
                        query.push(("client_id", id));
                    }
                    if let Some(id) = &self.object_id {
                        query.push(("object_id", id));
                    }
                    if let Some(id) = &self.resource_id {
                        query.push(("msi_res_id", id));
                    }
                    self.http
                        .get(format!(
                            "{}/metadata/identity/oauth2/token",
                            base.trim_end_matches('/')
                        ))
                        .header("Metadata", "true")
                }
                ManagedEndpoint::AppService { url, header } => {
                    query.push(("api-version", "2019-08-01"));
                    if let Some(id) = &self.client_id {
                        query.push(("client_id", id));
                    }
                    if let Some(id) = &self.object_id {
                        query.push(("principal_id", id));
                    }
                    if let Some(id) = &self.resource_id {
                        query.push(("mi_res_id", id));
                    }
                    self.http.get(url).header("X-IDENTITY-HEADER", header.as_str())
                }
            };
            let response = request
                .query(&query)
                .timeout(TOKEN_REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| cred_err(name, connection::explain(&e, TOKEN_REQUEST_TIMEOUT)))?;
            read_response(name, response).await
        })
    }
}

/// `az account get-access-token`, for a developer's machine.
#[derive(Debug)]
pub struct AzureCli {
    tenant: Option<String>,
}

impl TokenSource for AzureCli {
    fn name(&self) -> &'static str {
        "Azure CLI"
    }

    fn fetch<'a>(&'a self, resource: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let mut cmd = tokio::process::Command::new("az");
            cmd.args([
                "account",
                "get-access-token",
                "-o",
                "json",
                "--scope",
                &scope_of(resource),
            ]);
            if let Some(t) = &self.tenant {
                cmd.args(["--tenant", t]);
            }
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .map_err(|_| cred_err("Azure CLI", "az did not answer within 30 s"))?
                .map_err(|e| cred_err("Azure CLI", format!("cannot run az: {e}")))?;
            if !out.status.success() {
                let err: String = String::from_utf8_lossy(&out.stderr).chars().take(300).collect();
                return Err(cred_err("Azure CLI", format!("az failed: {err}")));
            }
            parse_token("Azure CLI", &String::from_utf8_lossy(&out.stdout))
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Picks the token source the configuration (or `auto`) names.
pub fn from_config(
    config: &CredentialConfig,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenSource>, CredentialError> {
    let tenant = config.tenant_id.clone().or_else(|| env("AZURE_TENANT_ID"));
    let client_id = config.client_id.clone().or_else(|| env("AZURE_CLIENT_ID"));
    let authority = config
        .authority_host
        .clone()
        .or_else(|| env("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    let secret = crate::secret::read(
        config.client_secret_file.as_deref(),
        "AZURE_CLIENT_SECRET",
        crate::secret::Trim::Whitespace,
    )
    .map_err(|e| cred_err("client secret", e))?;
    let federated = config
        .federated_token_file
        .clone()
        .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
    // The identity header is a secret: read where every secret is read (None: no file, only the variable).
    let app_service = env("IDENTITY_ENDPOINT").zip(
        crate::secret::read(None, "IDENTITY_HEADER", crate::secret::Trim::Whitespace)
            .ok()
            .flatten(),
    );
    let managed = |endpoint| -> Arc<dyn TokenSource> {
        Arc::new(ManagedIdentity {
            http: http.clone(),
            endpoint,
            client_id: client_id.clone(),
            object_id: config.object_id.clone(),
            resource_id: config.resource_id.clone(),
        })
    };
    let imds = || {
        ManagedEndpoint::Imds(
            config
                .imds_endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_IMDS.into()),
        )
    };
    let client = |proof, what: &'static str| -> Result<Arc<dyn TokenSource>, CredentialError> {
        let (Some(tenant), Some(client_id)) = (tenant.clone(), client_id.clone()) else {
            return Err(cred_err(
                what,
                "needs tenant_id and client_id (or AZURE_TENANT_ID and AZURE_CLIENT_ID)",
            ));
        };
        Ok(Arc::new(ClientCredentials {
            http: http.clone(),
            authority: authority.clone(),
            tenant,
            client_id,
            proof,
        }))
    };
    match config.kind {
        CredentialKind::ClientSecret => {
            let secret = secret.ok_or_else(|| {
                cred_err("client secret", "needs client_secret_file or AZURE_CLIENT_SECRET")
            })?;
            client(ClientProof::Secret(secret), "client secret")
        }
        CredentialKind::WorkloadIdentity => {
            let file = federated.ok_or_else(|| {
                cred_err(
                    "workload identity",
                    "needs federated_token_file or AZURE_FEDERATED_TOKEN_FILE",
                )
            })?;
            client(ClientProof::FederatedTokenFile(file), "workload identity")
        }
        CredentialKind::ManagedIdentity => Ok(match app_service {
            Some((url, header)) => managed(ManagedEndpoint::AppService { url, header }),
            None => managed(imds()),
        }),
        CredentialKind::AzureCli => Ok(Arc::new(AzureCli { tenant })),
        CredentialKind::Auto => {
            if let (Some(secret), true, true) = (secret, tenant.is_some(), client_id.is_some()) {
                return client(ClientProof::Secret(secret), "client secret");
            }
            if let (Some(file), true, true) = (federated, tenant.is_some(), client_id.is_some()) {
                return client(ClientProof::FederatedTokenFile(file), "workload identity");
            }
            if let Some((url, header)) = app_service {
                return Ok(managed(ManagedEndpoint::AppService { url, header }));
            }
            if config.imds_endpoint.is_some() || on_azure_vm() {
                return Ok(managed(imds()));
            }
            Ok(Arc::new(AzureCli { tenant }))
        }
    }
}

/// Azure VMs expose their vendor in DMI; IMDS is only tried where it can exist, so a developer's machine
/// goes straight to the Azure CLI instead of waiting for a link-local timeout.
fn on_azure_vm() -> bool {
    std::fs::read_to_string("/sys/class/dmi/id/sys_vendor")
        .map(|v| v.contains("Microsoft Corporation"))
        .unwrap_or(false)
}

/// The current token for one resource, refreshed ahead of expiry by a background task.
#[derive(Debug)]
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    resource: String,
    current: RwLock<Option<AccessToken>>,
    /// Single flight: one fetch at a time.
    fetching: Mutex<()>,
    /// Token fetches that succeeded and failed, and the current token's expiry (Unix seconds, 0: none),
    /// readable without waiting, for metrics and readiness.
    stats: TokenStats,
}

#[derive(Debug, Default)]
pub struct TokenStats {
    pub fetched: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    expires_at: std::sync::atomic::AtomicU64,
}

impl TokenStats {
    /// Seconds until the cached token expires (negative once it has), `None` before the first token.
    pub(crate) fn seconds_left(&self) -> Option<i64> {
        let at = self.expires_at.load(std::sync::atomic::Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Some(at as i64 - now as i64)
    }
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, resource: String) -> Arc<Self> {
        Arc::new(Self {
            source,
            resource,
            current: RwLock::new(None),
            fetching: Mutex::new(()),
            stats: TokenStats::default(),
        })
    }

    pub(crate) fn source_name(&self) -> &'static str {
        self.source.name()
    }

    pub fn stats(&self) -> &TokenStats {
        &self.stats
    }

    /// A valid token: the cached one, or a fresh one if there is none.
    pub async fn get(&self) -> Result<AccessToken, CredentialError> {
        if let Some(t) = self
            .current
            .read()
            .await
            .as_ref()
            .filter(|t| t.usable(SystemTime::now()))
        {
            return Ok(t.clone());
        }
        self.fetch_if_older_than(SystemTime::now()).await
    }

    /// Drops `rejected` (the vault said 401) and fetches a new token, unless another task already did.
    pub(crate) async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, CredentialError> {
        self.fetch_if_older_than(rejected.obtained_at + Duration::from_nanos(1))
            .await
    }

    /// Fetches unless the cached token was obtained at or after `threshold` and is usable.
    async fn fetch_if_older_than(&self, threshold: SystemTime) -> Result<AccessToken, CredentialError> {
        let _flight = self.fetching.lock().await;
        if let Some(t) = self.current.read().await.as_ref() {
            if t.obtained_at >= threshold && t.usable(SystemTime::now()) {
                return Ok(t.clone());
            }
        }
        use std::sync::atomic::Ordering;
        let token = match self.source.fetch(&self.resource).await {
            Ok(t) => t,
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.stats.fetched.fetch_add(1, Ordering::Relaxed);
        let expires = token
            .expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.stats.expires_at.store(expires.max(1), Ordering::Relaxed);
        *self.current.write().await = Some(token.clone());
        Ok(token)
    }

    /// The cached token, if any (for readiness and metrics).
    pub(crate) async fn peek(&self) -> Option<AccessToken> {
        self.current.read().await.clone()
    }

    /// Keeps the token fresh until the cache is dropped: fetches at the refresh point, and on failure
    /// retries with backoff while the current token stays in use.
    pub(crate) fn spawn_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let Some(cache) = weak.upgrade() else { return };
                let wait = match cache.peek().await {
                    _ if failures > 0 => Duration::from_secs(u64::from(failures.min(5)) * 2),
                    Some(t) => t
                        .refresh_at()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default(),
                    None => Duration::ZERO,
                };
                drop(cache);
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                let Some(cache) = weak.upgrade() else { return };
                match cache.fetch_if_older_than(SystemTime::now()).await {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "token refresh failed; the current token stays in use");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses_of_every_source_parse() {
        let entra = r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"a"}"#;
        let imds = r#"{"access_token":"b","refresh_token":"","expires_in":"3599","expires_on":"4102444800","not_before":"1","resource":"https://vault.azure.net","token_type":"Bearer"}"#;
        let cli = r#"{"accessToken":"c","expiresOn":"2099-12-31 00:00:00.000000","expires_on":4102444800,"tenant":"t","tokenType":"Bearer"}"#;
        let t = parse_token("t", entra).unwrap();
        assert!(t.seconds_left() > 3500);
        let t = parse_token("t", imds).unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(4102444800));
        let t = parse_token("t", cli).unwrap();
        assert_eq!(t.token.as_str(), "c");
        assert!(parse_token("t", r#"{"access_token":"x"}"#).is_err());
    }

    #[test]
    fn refresh_happens_ahead_of_expiry() {
        let now = SystemTime::now();
        let long = AccessToken {
            token: Arc::new(Zeroizing::new(String::new())),
            obtained_at: now,
            expires_at: now + Duration::from_secs(3600),
        };
        assert_eq!(long.refresh_at(), now + Duration::from_secs(3300));
        let short = AccessToken {
            expires_at: now + Duration::from_secs(120),
            ..long.clone()
        };
        assert_eq!(short.refresh_at(), now + Duration::from_secs(60));
        assert!(format!("{short:?}").contains("REDACTED"));
    }
}
