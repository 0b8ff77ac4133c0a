//! A thin Key Vault / Managed HSM REST client for EC keys: list, get, sign, create, import, backup,
//! restore, update. Every call has a time budget; throttling (429 with Retry-After), 5xx and connection
//! errors are retried inside it with jittered backoff, a 401 triggers one token refresh and one retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::retry::RetryPolicy;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::credential::{CredentialError, TokenCache};
use super::stats::{AttemptResult, KvStats};

/// Why a Key Vault call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    Credential(#[from] CredentialError),
    #[error("key vault: {operation}: HTTP {status} {code}: {message}")]
    Azure {
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("key vault: {operation}: throttled (429, {}) and the wait does not fit the remaining budget", retry_after_text(.retry_after))]
    Throttled {
        operation: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("key vault: {operation}: no answer within the budget of {budget:?} ({last})")]
    Timeout {
        operation: &'static str,
        budget: Duration,
        last: String,
    },
    #[error("key vault: {operation}: {message}")]
    Invalid {
        operation: &'static str,
        message: String,
    },
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("Retry-After {}s", d.as_secs()),
        None => "no Retry-After".into(),
    }
}

impl KvError {
    pub fn status(&self) -> Option<u16> {
        match self {
            KvError::Azure { status, .. } => Some(*status),
            KvError::Throttled { .. } => Some(429),
            _ => None,
        }
    }
}

/// Elliptic curves Key Vault holds that Tezos uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCurve {
    P256,
    P256K,
}

impl KvCurve {
    pub fn from_crv(crv: &str) -> Option<Self> {
        match crv {
            "P-256" => Some(KvCurve::P256),
            // Keys created in the preview days report SECP256K1.
            "P-256K" | "SECP256K1" => Some(KvCurve::P256K),
            _ => None,
        }
    }
    pub fn crv(self) -> &'static str {
        match self {
            KvCurve::P256 => "P-256",
            KvCurve::P256K => "P-256K",
        }
    }
    pub fn alg(self) -> &'static str {
        match self {
            KvCurve::P256 => "ES256",
            KvCurve::P256K => "ES256K",
        }
    }
    pub fn tezos(self) -> tezos::Curve {
        match self {
            KvCurve::P256 => tezos::Curve::P256,
            KvCurve::P256K => tezos::Curve::Secp256k1,
        }
    }
}

/// The public half of a key version, as `get key` returns it.
#[derive(Debug, Clone)]
pub struct KeyBundle {
    pub name: String,
    pub version: String,
    pub kty: String,
    pub crv: Option<String>,
    pub x: Vec<u8>,
    pub y: Vec<u8>,
    pub enabled: bool,
    /// Seconds since the Unix epoch.
    pub created: Option<u64>,
    pub not_before: Option<u64>,
    pub expires: Option<u64>,
}

impl KeyBundle {
    /// Whether Key Vault would sign with it now.
    pub fn usable_now(&self) -> Result<(), &'static str> {
        usable_now(self.enabled, self.not_before, self.expires)
    }
}

/// Whether Key Vault would sign with a version of these attributes now.
fn usable_now(enabled: bool, not_before: Option<u64>, expires: Option<u64>) -> Result<(), &'static str> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if !enabled {
        return Err("disabled");
    }
    if expires.is_some_and(|exp| exp <= now) {
        return Err("expired");
    }
    if not_before.is_some_and(|nbf| nbf > now) {
        return Err("not yet valid");
    }
    Ok(())
}

/// A key listed by `list keys`: its name and enabled flag.
#[derive(Debug, Clone)]
pub struct KeyItem {
    pub name: String,
    pub enabled: bool,
}

/// A version listed by `list versions`: its version id and attributes (no public key: that needs a get).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionItem {
    pub version: String,
    pub enabled: bool,
    /// Seconds since the Unix epoch.
    pub created: Option<u64>,
    pub not_before: Option<u64>,
    pub expires: Option<u64>,
}

impl KeyVersionItem {
    /// Whether Key Vault would sign with this version now.
    pub fn usable_now(&self) -> Result<(), &'static str> {
        usable_now(self.enabled, self.not_before, self.expires)
    }
}

#[derive(Debug)]
pub struct KeyVaultClient {
    http: reqwest::Client,
    base: String,
    api_version: String,
    tokens: Arc<TokenCache>,
    stats: KvStats,
}

/// Splits `https://v.vault.azure.net/keys/name/version` into (name, version).
pub(crate) fn parse_kid(kid: &str) -> Option<(String, String)> {
    let rest = kid.split("/keys/").nth(1)?;
    let mut parts = rest.split('/');
    let name = parts.next()?.to_owned();
    let version = parts.next().unwrap_or("").to_owned();
    Some((name, version))
}

pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.ends_with('=') {
        URL_SAFE.decode(text)
    } else {
        URL_SAFE_NO_PAD.decode(text)
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Resource (token audience) named by a 401 challenge's `WWW-Authenticate` header.
pub(crate) fn resource_from_challenge(header: &str) -> Option<String> {
    let find = |key: &str| {
        header.split(',').find_map(|part| {
            let part = part.trim().trim_start_matches("Bearer").trim();
            let (k, v) = part.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    if let Some(resource) = find("resource") {
        return Some(resource);
    }
    find("scope").map(|s| s.trim_end_matches("/.default").to_owned())
}

impl KeyVaultClient {
    pub fn new(http: reqwest::Client, vault_url: &str, api_version: &str, tokens: Arc<TokenCache>) -> Self {
        Self {
            http,
            base: vault_url.trim_end_matches('/').to_owned(),
            api_version: api_version.to_owned(),
            tokens,
            stats: KvStats::new(vault_url),
        }
    }

    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// Reads one key the signer serves (`GET /keys/{name}/{version}`) to learn whether the vault answers,
    /// for readiness: what a key-scoped "Crypto User" role allows.
    pub(crate) async fn probe_key(&self, name: &str, version: &str, budget: Duration) -> Result<(), KvError> {
        let path = format!("/keys/{name}/{version}");
        self.call("probe", Method::GET, &path, &[], None, budget)
            .await
            .map(|_| ())
    }

    /// One cheap read (the first key of the list) to learn whether the vault answers, for readiness when
    /// no key is served yet.
    pub async fn probe(&self, budget: Duration) -> Result<(), KvError> {
        self.call(
            "probe",
            Method::GET,
            "/keys",
            &[("maxresults", "1".to_owned())],
            None,
            budget,
        )
        .await
        .map(|_| ())
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Asks the vault, unauthenticated, which token audience it wants (the 401 challenge).
    pub(crate) async fn discover_resource(
        http: &reqwest::Client,
        vault_url: &str,
        api_version: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let url = format!(
            "{}/keys?api-version={api_version}&maxresults=1",
            vault_url.trim_end_matches('/')
        );
        let response = http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", crate::azure::connection::explain(&e, timeout)))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Err(format!(
                "{url}: expected a 401 challenge, got HTTP {}",
                response.status()
            ));
        }
        let header = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("{url}: 401 without a WWW-Authenticate challenge"))?;
        let resource = resource_from_challenge(header)
            .ok_or_else(|| format!("{url}: unreadable challenge {header:?}"))?;
        verify_challenge_resource(vault_url, &resource)?;
        Ok(resource)
    }

    /// One REST call with retries inside `budget`.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        extra_query: &[(&str, String)],
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<Value, KvError> {
        let url = if path.starts_with("https://") || path.starts_with("http://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let deadline = Instant::now() + budget;
        let mut token = self.tokens.get().await.inspect_err(|e| {
            self.stats.failed(operation, &e.to_string());
        })?;
        let mut refreshed = false;
        let mut attempt: u32 = 0;
        let mut last = String::from("no attempt");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(KvError::Timeout {
                    operation,
                    budget,
                    last,
                });
            }
            // One attempt may use two thirds of the budget, so a stalled connection leaves time for a retry.
            let attempt_timeout = remaining.min((budget * 2 / 3).max(Duration::from_millis(100)));
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.token.as_str())
                .timeout(attempt_timeout);
            if !url.contains("api-version=") {
                request = request.query(&[("api-version", self.api_version.as_str())]);
            }
            if !extra_query.is_empty() {
                request = request.query(extra_query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            attempt += 1;
            let sent = Instant::now();
            let retry_cause: &'static str;
            let retry_wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    self.stats.attempt(
                        operation,
                        AttemptResult::from_status(status.as_u16()),
                        sent.elapsed(),
                        &format!("HTTP {status}"),
                    );
                    if status.is_success() {
                        let text = response.text().await.map_err(|e| KvError::Invalid {
                            operation,
                            message: format!("reading the answer: {e}"),
                        })?;
                        if text.is_empty() {
                            return Ok(Value::Null);
                        }
                        return serde_json::from_str(&text).map_err(|e| KvError::Invalid {
                            operation,
                            message: format!("answer is not JSON: {e}"),
                        });
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                        Ok(e) => (e.error.code, e.error.message),
                        Err(_) => (String::new(), text.chars().take(200).collect()),
                    };
                    last = format!("HTTP {status} {code}");
                    match status {
                        StatusCode::UNAUTHORIZED if !refreshed => {
                            refreshed = true;
                            self.stats.retry("token");
                            token = self
                                .tokens
                                .refresh_after_rejection(&token)
                                .await
                                .inspect_err(|e| {
                                    self.stats.failed(operation, &e.to_string());
                                })?;
                            continue;
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            let wait = RetryPolicy::AZURE.wait(attempt, retry_after);
                            if Instant::now() + wait >= deadline {
                                return Err(KvError::Throttled {
                                    operation,
                                    retry_after,
                                });
                            }
                            retry_cause = "throttled";
                            wait
                        }
                        s if s.is_server_error() => {
                            retry_cause = "server_error";
                            RetryPolicy::AZURE.wait(attempt, None)
                        }
                        _ => {
                            if status == StatusCode::UNAUTHORIZED {
                                self.stats
                                    .failed(operation, &format!("HTTP 401 after a token refresh: {code}"));
                            }
                            return Err(KvError::Azure {
                                operation,
                                status: status.as_u16(),
                                code,
                                message,
                            });
                        }
                    }
                }
                Err(e) => {
                    let (result, cause) = if e.is_timeout() {
                        (AttemptResult::Timeout, "timeout")
                    } else {
                        (AttemptResult::Connection, "connection")
                    };
                    last = crate::azure::connection::explain(&e, attempt_timeout);
                    self.stats.attempt(operation, result, sent.elapsed(), &last);
                    retry_cause = cause;
                    RetryPolicy::AZURE.wait(attempt, None)
                }
            };
            if !RetryPolicy::AZURE.fits(retry_wait, deadline) {
                return Err(KvError::Timeout {
                    operation,
                    budget,
                    last,
                });
            }
            self.stats.retry(retry_cause);
            tracing::debug!(operation, attempt, wait_ms = retry_wait.as_millis() as u64, %last, "retrying");
            tokio::time::sleep(retry_wait).await;
        }
    }

    /// Signs a 32-byte digest; returns the raw 64-byte `r‖s` exactly as Key Vault gave it.
    pub async fn sign(
        &self,
        name: &str,
        version: &str,
        curve: KvCurve,
        digest: &[u8; 32],
        budget: Duration,
    ) -> Result<[u8; 64], KvError> {
        let body = json!({ "alg": curve.alg(), "value": b64url(digest) });
        let path = format!("/keys/{name}/{version}/sign");
        let answer = self
            .call("sign", Method::POST, &path, &[], Some(&body), budget)
            .await?;
        let value = answer["value"].as_str().ok_or(KvError::Invalid {
            operation: "sign",
            message: "no value in the answer".into(),
        })?;
        let bytes = b64url_decode(value).map_err(|e| KvError::Invalid {
            operation: "sign",
            message: format!("signature is not base64url: {e}"),
        })?;
        bytes.try_into().map_err(|b: Vec<u8>| KvError::Invalid {
            operation: "sign",
            message: format!("signature is {} bytes, expected 64 (r‖s)", b.len()),
        })
    }

    /// Wraps `plain` with the vault key `name`/`version` (`wrapkey`); returns the versioned kid the vault
    /// used (so an unwrap names the same version after a rotation) and the wrapped bytes.
    pub async fn wrap_key(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        plain: &[u8],
        budget: Duration,
    ) -> Result<(String, Vec<u8>), KvError> {
        let mut body = json!({ "alg": alg, "value": b64url(plain) });
        let path = format!("/keys/{name}/{version}/wrapkey");
        let answer = self
            .call("wrap key", Method::POST, &path, &[], Some(&body), budget)
            .await;
        scrub_value(&mut body);
        let answer = answer?;
        let kid = answer["kid"].as_str().unwrap_or_default().to_owned();
        let value = answer_bytes("wrap key", &answer)?;
        Ok((kid, value))
    }

    /// Unwraps `wrapped` with the vault key `name`/`version` (`unwrapkey`); the plaintext is zeroized on drop.
    pub async fn unwrap_key(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        wrapped: &[u8],
        budget: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, KvError> {
        let body = json!({ "alg": alg, "value": b64url(wrapped) });
        let path = format!("/keys/{name}/{version}/unwrapkey");
        let mut answer = self
            .call("unwrap key", Method::POST, &path, &[], Some(&body), budget)
            .await?;
        let plain = answer_bytes("unwrap key", &answer).map(Zeroizing::new);
        scrub_value(&mut answer);
        plain
    }

    /// Every key of the vault (following `nextLink`).
    pub async fn list_keys(&self, budget: Duration) -> Result<Vec<KeyItem>, KvError> {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = match &next {
                Some(link) => {
                    self.call("list keys", Method::GET, link, &[], None, budget)
                        .await?
                }
                None => {
                    self.call(
                        "list keys",
                        Method::GET,
                        "/keys",
                        &[("maxresults", "25".into())],
                        None,
                        budget,
                    )
                    .await?
                }
            };
            for item in page["value"].as_array().into_iter().flatten() {
                let Some((name, _)) = item["kid"].as_str().and_then(parse_kid) else {
                    continue;
                };
                let enabled = item["attributes"]["enabled"].as_bool().unwrap_or(true);
                items.push(KeyItem { name, enabled });
            }
            match page["nextLink"].as_str().filter(|l| !l.is_empty()) {
                Some(link) => next = Some(link.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The versions of one key (following `nextLink`), in the vault's order.
    pub async fn list_versions(&self, name: &str, budget: Duration) -> Result<Vec<KeyVersionItem>, KvError> {
        let mut versions = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = match &next {
                Some(link) => {
                    self.call("list versions", Method::GET, link, &[], None, budget)
                        .await?
                }
                None => {
                    let path = format!("/keys/{name}/versions");
                    self.call(
                        "list versions",
                        Method::GET,
                        &path,
                        &[("maxresults", "25".into())],
                        None,
                        budget,
                    )
                    .await?
                }
            };
            for item in page["value"].as_array().into_iter().flatten() {
                let Some((_, version)) = item["kid"].as_str().and_then(parse_kid) else {
                    continue;
                };
                if version.is_empty() {
                    continue;
                }
                let attributes = &item["attributes"];
                versions.push(KeyVersionItem {
                    version,
                    enabled: attributes["enabled"].as_bool().unwrap_or(true),
                    created: attributes["created"].as_u64(),
                    not_before: attributes["nbf"].as_u64(),
                    expires: attributes["exp"].as_u64(),
                });
            }
            match page["nextLink"].as_str().filter(|l| !l.is_empty()) {
                Some(link) => next = Some(link.to_owned()),
                None => return Ok(versions),
            }
        }
    }

    /// A key version's public half (`version` empty: the latest).
    pub async fn get_key(&self, name: &str, version: &str, budget: Duration) -> Result<KeyBundle, KvError> {
        let path = format!("/keys/{name}/{version}");
        let answer = self
            .call("get key", Method::GET, &path, &[], None, budget)
            .await?;
        bundle("get key", &answer)
    }

    /// Creates a non-exportable HSM key.
    pub async fn create_key(
        &self,
        name: &str,
        curve: KvCurve,
        budget: Duration,
    ) -> Result<KeyBundle, KvError> {
        let body = json!({ "kty": "EC-HSM", "crv": curve.crv(), "key_ops": ["sign", "verify"],
                           "attributes": { "enabled": true, "exportable": false } });
        let path = format!("/keys/{name}/create");
        let answer = self
            .call("create key", Method::POST, &path, &[], Some(&body), budget)
            .await?;
        bundle("create key", &answer)
    }

    /// Imports a private scalar as an HSM-protected key (a new version if the name exists).
    pub async fn import_key(
        &self,
        name: &str,
        curve: KvCurve,
        d: &[u8; 32],
        x: &[u8; 32],
        y: &[u8; 32],
        budget: Duration,
    ) -> Result<KeyBundle, KvError> {
        // The scalar is in this request body for the time of one call (a one-off CLI import).
        let body = json!({
            "Hsm": true,
            "key": { "kty": "EC-HSM", "crv": curve.crv(), "key_ops": ["sign", "verify"],
                     "d": b64url(d), "x": b64url(x), "y": b64url(y) },
            "attributes": { "enabled": true }
        });
        let path = format!("/keys/{name}");
        let answer = self
            .call("import key", Method::PUT, &path, &[], Some(&body), budget)
            .await?;
        bundle("import key", &answer)
    }

    /// The opaque backup blob of a key (all its versions).
    pub async fn backup_key(&self, name: &str, budget: Duration) -> Result<String, KvError> {
        let path = format!("/keys/{name}/backup");
        let answer = self
            .call("backup key", Method::POST, &path, &[], None, budget)
            .await?;
        answer["value"]
            .as_str()
            .map(str::to_owned)
            .ok_or(KvError::Invalid {
                operation: "backup key",
                message: "no value in the answer".into(),
            })
    }

    pub async fn restore_key(&self, blob: &str, budget: Duration) -> Result<KeyBundle, KvError> {
        let body = json!({ "value": blob });
        let answer = self
            .call(
                "restore key",
                Method::POST,
                "/keys/restore",
                &[],
                Some(&body),
                budget,
            )
            .await?;
        bundle("restore key", &answer)
    }

    /// Enables or disables a key version.
    pub async fn set_enabled(
        &self,
        name: &str,
        version: &str,
        enabled: bool,
        budget: Duration,
    ) -> Result<KeyBundle, KvError> {
        let body = json!({ "attributes": { "enabled": enabled } });
        let path = format!("/keys/{name}/{version}");
        let answer = self
            .call("update key", Method::PATCH, &path, &[], Some(&body), budget)
            .await?;
        bundle("update key", &answer)
    }
}

/// Refuses to send a token for `resource` to a host that does not belong to it (a rogue endpoint harvesting
/// tokens), except for loopback hosts used in tests.
fn verify_challenge_resource(vault_url: &str, resource: &str) -> Result<(), String> {
    let host_of = |url: &str| {
        url.split("://")
            .nth(1)
            .unwrap_or(url)
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let vault_host = host_of(vault_url);
    let resource_host = host_of(resource);
    if vault_host == "localhost"
        || vault_host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return Ok(());
    }
    if vault_host.ends_with(&format!(".{resource_host}")) {
        Ok(())
    } else {
        Err(format!(
            "the vault {vault_host} asks for tokens for {resource}, which is not its own domain; refusing"
        ))
    }
}

/// Overwrites the `value` string of a request or answer that carried a plaintext key. (reqwest's own copy
/// of the serialized body is freed, not overwritten: a limit of sending it at all.)
fn scrub_value(v: &mut Value) {
    use zeroize::Zeroize as _;
    if let Some(Value::String(text)) = v.get_mut("value") {
        text.zeroize();
    }
}

/// The base64url `value` of a key operation's answer.
fn answer_bytes(operation: &'static str, answer: &Value) -> Result<Vec<u8>, KvError> {
    let value = answer["value"].as_str().ok_or(KvError::Invalid {
        operation,
        message: "no value in the answer".into(),
    })?;
    b64url_decode(value).map_err(|e| KvError::Invalid {
        operation,
        message: format!("value is not base64url: {e}"),
    })
}

fn bundle(operation: &'static str, answer: &Value) -> Result<KeyBundle, KvError> {
    let invalid = |message: String| KvError::Invalid { operation, message };
    let key = &answer["key"];
    let (name, version) = key["kid"]
        .as_str()
        .and_then(parse_kid)
        .ok_or_else(|| invalid("no kid".into()))?;
    let coord = |field: &str| -> Result<Vec<u8>, KvError> {
        match key[field].as_str() {
            Some(text) => b64url_decode(text).map_err(|e| invalid(format!("{field}: {e}"))),
            None => Ok(Vec::new()),
        }
    };
    let attributes = &answer["attributes"];
    Ok(KeyBundle {
        name,
        version,
        kty: key["kty"].as_str().unwrap_or("").to_owned(),
        crv: key["crv"].as_str().map(str::to_owned),
        x: coord("x")?,
        y: coord("y")?,
        enabled: attributes["enabled"].as_bool().unwrap_or(true),
        created: attributes["created"].as_u64(),
        not_before: attributes["nbf"].as_u64(),
        expires: attributes["exp"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_the_resource() {
        let vault =
            r#"Bearer authorization="https://login.windows.net/t", resource="https://vault.azure.net""#;
        assert_eq!(resource_from_challenge(vault).unwrap(), "https://vault.azure.net");
        let scoped = r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://managedhsm.azure.net/.default""#;
        assert_eq!(
            resource_from_challenge(scoped).unwrap(),
            "https://managedhsm.azure.net"
        );
    }

    #[test]
    fn tokens_go_only_to_the_resource_domain() {
        assert!(verify_challenge_resource("https://v.vault.azure.net", "https://vault.azure.net").is_ok());
        assert!(
            verify_challenge_resource("https://h.managedhsm.azure.net/", "https://managedhsm.azure.net")
                .is_ok()
        );
        assert!(verify_challenge_resource("https://evil.example.com", "https://vault.azure.net").is_err());
        assert!(verify_challenge_resource("https://127.0.0.1:8443", "https://vault.azure.net").is_ok());
    }

    #[test]
    fn kids_split_into_name_and_version() {
        assert_eq!(
            parse_kid("https://v.vault.azure.net/keys/baker/0123abcd").unwrap(),
            ("baker".into(), "0123abcd".into())
        );
        assert_eq!(b64url_decode("AQI=").unwrap(), vec![1, 2]);
        assert_eq!(b64url_decode("AQI").unwrap(), vec![1, 2]);
    }
}
