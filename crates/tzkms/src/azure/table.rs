//! A thin Azure Table Storage REST client for single entities: read, insert (409 if it exists), and
//! replace with `If-Match` (412 if someone else changed it). Never an unconditional upsert. Shared Key
//! (account key) or Entra ID bearer tokens; path-style endpoints (Azurite) work too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::credential::TokenCache;
use super::retry::{Attempts, RetryPolicy};

const STORAGE_VERSION: &str = "2019-02-02";
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";

#[derive(Debug)]
pub enum TableAuth {
    SharedKey {
        account: String,
        key: crate::secret::Secret<Vec<u8>>,
    },
    Bearer(Arc<TokenCache>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TableError {
    #[error("table storage: {operation}: HTTP {status} {code}")]
    Http {
        operation: &'static str,
        status: u16,
        code: String,
    },
    #[error("table storage: {operation}: no answer within {budget:?} ({last})")]
    Unreachable {
        operation: &'static str,
        budget: Duration,
        last: String,
    },
    #[error("table storage: {0}")]
    Invalid(String),
}

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the entity's new ETag.
    Written(String),
    /// Insert: the entity exists. Replace: it changed (412) or is gone (404).
    Conflict,
}

/// An entity and its ETag.
#[derive(Debug, Clone)]
pub struct Entity {
    pub etag: String,
    pub properties: Map<String, Value>,
}

/// The parts of one REST request.
struct Request<'a> {
    operation: &'static str,
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    headers: &'a [(&'a str, String)],
    body: Option<&'a Value>,
}

impl<'a> Request<'a> {
    /// `operation` (its name in metrics and errors) as `method path`, with no query, extra header or body.
    fn new(operation: &'static str, method: Method, path: &'a str) -> Self {
        Self {
            operation,
            method,
            path,
            query: &[],
            headers: &[],
            body: None,
        }
    }
}

#[derive(Debug)]
pub struct TableClient {
    http: reqwest::Client,
    /// `https://<account>.table.core.windows.net` or `http://127.0.0.1:10002/devstoreaccount1`.
    endpoint: String,
    /// The path part of the endpoint (`/devstoreaccount1` for path-style URLs, else empty).
    path_prefix: String,
    table: String,
    auth: TableAuth,
    /// Requests sent (attempts included), for metrics and tests.
    requests: std::sync::atomic::AtomicU64,
    /// (operation, result) -> attempts, and retries by cause, for metrics.
    results: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    retries: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The `result` label of one Table attempt. 404, 409 and 412 are how the store learns that an entity
/// is missing or changed: ordinary answers, not errors.
fn result_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        404 => "not_found",
        409 | 412 => "conflict",
        401 => "unauthorized",
        403 => "forbidden",
        429 => "throttled",
        500..=599 => "server_error",
        _ => "client_error",
    }
}

/// Escapes a key for an OData literal (`'` doubles) and for a URL path.
fn key_literal(key: &str) -> String {
    key.replace('\'', "''")
}

impl TableClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        table: &str,
        auth: TableAuth,
    ) -> Result<Self, TableError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let after_scheme = endpoint
            .split_once("://")
            .map(|(_, rest)| rest)
            .ok_or_else(|| TableError::Invalid(format!("endpoint {endpoint:?} is not a URL")))?;
        let path_prefix = after_scheme
            .find('/')
            .map(|i| after_scheme[i..].to_owned())
            .unwrap_or_default();
        if !table.chars().all(|c| c.is_ascii_alphanumeric()) || table.len() < 3 || table.len() > 63 {
            return Err(TableError::Invalid(format!(
                "table name {table:?}: 3 to 63 letters and digits"
            )));
        }
        Ok(Self {
            http,
            endpoint,
            path_prefix,
            table: table.to_owned(),
            auth,
            requests: Default::default(),
            results: Default::default(),
            retries: Default::default(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, operation: &'static str, result: &'static str) {
        *self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((operation, result))
            .or_default() += 1;
    }

    /// The client's metric families: attempts by operation and result, retries by cause, and the
    /// token's expiry when it authenticates with Entra ID.
    pub fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        out.family(
            "tzkms_table_requests_total",
            "counter",
            "Requests to the shared watermark table (retries included), by operation and result.",
        );
        for ((operation, result), n) in self.results.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.sample(
                "tzkms_table_requests_total",
                &[("operation", &operation.replace(' ', "_")), ("result", result)],
                n,
            );
        }
        out.family(
            "tzkms_table_retries_total",
            "counter",
            "Table requests retried, by cause (server_error, timeout, connection).",
        );
        for (cause, n) in self.retries.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.sample("tzkms_table_retries_total", &[("cause", cause)], n);
        }
        if let TableAuth::Bearer(tokens) = &self.auth {
            out.family(
                "tzkms_table_token_expiry_seconds",
                "gauge",
                "Seconds until the table's Entra ID token expires (refreshed ahead of time).",
            );
            if let Some(left) = tokens.stats().seconds_left() {
                out.sample("tzkms_table_token_expiry_seconds", &[], left);
            }
        }
    }

    fn entity_path(&self, pk: &str, rk: &str) -> String {
        format!(
            "/{}(PartitionKey='{}',RowKey='{}')",
            self.table,
            key_literal(pk),
            key_literal(rk)
        )
    }

    /// One request with retries of 5xx/connection errors inside `budget`.
    async fn send(&self, req: Request<'_>, budget: Duration) -> Result<reqwest::Response, TableError> {
        let Request {
            operation,
            method,
            path,
            query,
            headers,
            body,
        } = req;
        let body = body.map(|b| b.to_string());
        let mut attempts = Attempts::new(RetryPolicy::AZURE, budget);
        let unreachable = |last| TableError::Unreachable {
            operation,
            budget,
            last,
        };
        loop {
            let remaining = attempts.start().map_err(unreachable)?;
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let date = httpdate::fmt_http_date(SystemTime::now());
            let content_type = if body.is_some() { "application/json" } else { "" };
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoint))
                .timeout(remaining)
                .query(query)
                .header("x-ms-version", STORAGE_VERSION)
                .header("x-ms-date", &date)
                .header("Accept", "application/json;odata=nometadata")
                .header("DataServiceVersion", "3.0;NetFx")
                .header("MaxDataServiceVersion", "3.0;NetFx");
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some(b) = &body {
                request = request.header("Content-Type", content_type).body(b.clone());
            }
            request = match &self.auth {
                TableAuth::SharedKey { account, key } => {
                    // Shared Key for the Table service: VERB, Content-MD5 (empty), Content-Type, Date,
                    // canonicalized resource (/account + URI path, path-style endpoints included).
                    let resource = format!("/{account}{}{path}", self.path_prefix);
                    let resource = resource.split('?').next().unwrap_or("").to_owned();
                    let to_sign = format!("{}\n\n{content_type}\n{date}\n{resource}", method.as_str());
                    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)
                        .map_err(|e| TableError::Invalid(e.to_string()))?;
                    mac.update(to_sign.as_bytes());
                    let signature = STANDARD.encode(mac.finalize().into_bytes());
                    request.header("Authorization", format!("SharedKey {account}:{signature}"))
                }
                TableAuth::Bearer(tokens) => {
                    let token = tokens
                        .get()
                        .await
                        .map_err(|e| TableError::Invalid(e.to_string()))?;
                    request.bearer_auth(token.token.as_str())
                }
            };
            let cause = match request.send().await {
                Ok(r) => {
                    let result = result_label(r.status());
                    self.count(operation, result);
                    if !r.status().is_server_error() {
                        return Ok(r);
                    }
                    attempts.last = format!("HTTP {}", r.status());
                    result
                }
                Err(e) => {
                    let result = if e.is_timeout() { "timeout" } else { "connection" };
                    self.count(operation, result);
                    attempts.last = crate::azure::connection::explain(&e, remaining);
                    result
                }
            };
            let wait = attempts.back_off(None).map_err(unreachable)?;
            *self
                .retries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(cause)
                .or_default() += 1;
            tokio::time::sleep(wait).await;
        }
    }

    async fn fail(operation: &'static str, r: reqwest::Response) -> TableError {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["odata.error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(120).collect());
        TableError::Http {
            operation,
            status,
            code,
        }
    }

    /// A write's answer: `Conflict` on one of `conflicts`, the entity's new ETag on success, else the error.
    async fn written(
        operation: &'static str,
        r: reqwest::Response,
        conflicts: &[StatusCode],
    ) -> Result<WriteOutcome, TableError> {
        match r.status() {
            s if conflicts.contains(&s) => Ok(WriteOutcome::Conflict),
            s if s.is_success() => Ok(WriteOutcome::Written(Self::etag_of(&r)?)),
            _ => Err(Self::fail(operation, r).await),
        }
    }

    fn etag_of(r: &reqwest::Response) -> Result<String, TableError> {
        r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| TableError::Invalid("answer without an ETag".into()))
    }

    /// Creates the table if it does not exist.
    pub async fn ensure_table(&self, budget: Duration) -> Result<(), TableError> {
        let body = serde_json::json!({ "TableName": self.table });
        let headers = [("Prefer", "return-no-content".to_owned())];
        let r = self
            .send(
                Request {
                    headers: &headers,
                    body: Some(&body),
                    ..Request::new("create table", Method::POST, "/Tables")
                },
                budget,
            )
            .await?;
        match r.status() {
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            _ => Err(Self::fail("create table", r).await),
        }
    }

    pub async fn get(&self, pk: &str, rk: &str, budget: Duration) -> Result<Option<Entity>, TableError> {
        let r = self
            .send(
                Request::new("read", Method::GET, &self.entity_path(pk, rk)),
                budget,
            )
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let etag = Self::etag_of(&r)?;
                let properties: Map<String, Value> = r
                    .json()
                    .await
                    .map_err(|e| TableError::Invalid(format!("entity is not JSON: {e}")))?;
                Ok(Some(Entity { etag, properties }))
            }
            _ => Err(Self::fail("read", r).await),
        }
    }

    /// Inserts a new entity; `Conflict` if it already exists.
    pub async fn insert(
        &self,
        properties: &Map<String, Value>,
        budget: Duration,
    ) -> Result<WriteOutcome, TableError> {
        let headers = [("Prefer", "return-no-content".to_owned())];
        let path = format!("/{}", self.table);
        let body = Value::Object(properties.clone());
        let r = self
            .send(
                Request {
                    headers: &headers,
                    body: Some(&body),
                    ..Request::new("insert", Method::POST, &path)
                },
                budget,
            )
            .await?;
        Self::written("insert", r, &[StatusCode::CONFLICT]).await
    }

    /// Inserts or replaces an entity whatever it holds (for readiness probes, never for marks).
    pub async fn upsert(
        &self,
        pk: &str,
        rk: &str,
        properties: &Map<String, Value>,
        budget: Duration,
    ) -> Result<(), TableError> {
        let body = Value::Object(properties.clone());
        let r = self
            .send(
                Request {
                    body: Some(&body),
                    ..Request::new("upsert", Method::PUT, &self.entity_path(pk, rk))
                },
                budget,
            )
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Self::fail("upsert", r).await)
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Replaces the entity if its ETag is still `etag`; `Conflict` if it changed or is gone.
    pub async fn replace(
        &self,
        pk: &str,
        rk: &str,
        etag: &str,
        properties: &Map<String, Value>,
        budget: Duration,
    ) -> Result<WriteOutcome, TableError> {
        let headers = [("If-Match", etag.to_owned())];
        let body = Value::Object(properties.clone());
        let r = self
            .send(
                Request {
                    headers: &headers,
                    body: Some(&body),
                    ..Request::new("conditional update", Method::PUT, &self.entity_path(pk, rk))
                },
                budget,
            )
            .await?;
        Self::written(
            "conditional update",
            r,
            &[StatusCode::PRECONDITION_FAILED, StatusCode::NOT_FOUND],
        )
        .await
    }

    /// Deletes the entity if its ETag is still `etag`; `Conflict` if it changed or is gone.
    pub async fn delete(
        &self,
        pk: &str,
        rk: &str,
        etag: &str,
        budget: Duration,
    ) -> Result<WriteOutcome, TableError> {
        let headers = [("If-Match", etag.to_owned())];
        let r = self
            .send(
                Request {
                    headers: &headers,
                    ..Request::new("conditional delete", Method::DELETE, &self.entity_path(pk, rk))
                },
                budget,
            )
            .await?;
        match r.status() {
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => Ok(WriteOutcome::Conflict),
            s if s.is_success() => Ok(WriteOutcome::Written(String::new())),
            _ => Err(Self::fail("conditional delete", r).await),
        }
    }

    /// Whether partition `pk` holds at least one entity (one query, at most one row returned).
    pub async fn partition_has_rows(&self, pk: &str, budget: Duration) -> Result<bool, TableError> {
        let query = [
            ("$filter", format!("PartitionKey eq '{}'", key_literal(pk))),
            ("$top", "1".to_owned()),
            ("$select", "RowKey".to_owned()),
        ];
        let r = self.query(&query, budget).await?;
        let page: Value = r.json().await.map_err(|e| TableError::Invalid(e.to_string()))?;
        Ok(page["value"].as_array().is_some_and(|rows| !rows.is_empty()))
    }

    /// One page of a query over the table's entities; an error unless it succeeded.
    async fn query(
        &self,
        query: &[(&str, String)],
        budget: Duration,
    ) -> Result<reqwest::Response, TableError> {
        let path = format!("/{}()", self.table);
        let r = self
            .send(
                Request {
                    operation: "query",
                    method: Method::GET,
                    path: &path,
                    query,
                    headers: &[],
                    body: None,
                },
                budget,
            )
            .await?;
        if !r.status().is_success() {
            return Err(Self::fail("query", r).await);
        }
        Ok(r)
    }

    /// Every entity of the table (following continuation headers).
    pub async fn scan(&self, budget: Duration) -> Result<Vec<Entity>, TableError> {
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let mut query = Vec::new();
            if let Some((pk, rk)) = &next {
                query.push(("NextPartitionKey", pk.clone()));
                query.push(("NextRowKey", rk.clone()));
            }
            let r = self.query(&query, budget).await?;
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            next = header("x-ms-continuation-NextPartitionKey").zip(header("x-ms-continuation-NextRowKey"));
            let page: Value = r.json().await.map_err(|e| TableError::Invalid(e.to_string()))?;
            for item in page["value"].as_array().into_iter().flatten() {
                if let Some(properties) = item.as_object() {
                    out.push(Entity {
                        etag: properties
                            .get("odata.etag")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        properties: properties.clone(),
                    });
                }
            }
            if next.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_shared_key_auth_never_shows_the_key() {
        let auth = TableAuth::SharedKey {
            account: "acct".into(),
            key: crate::secret::Secret::new(b"0123456789abcdef".to_vec()),
        };
        let text = format!("{auth:?}");
        assert!(text.contains("[REDACTED]") && text.contains("acct"), "{text}");
        assert!(!text.contains("48, 49"), "key bytes in {text}");
    }

    #[test]
    fn keys_are_quoted_for_odata() {
        assert_eq!(key_literal("a'b"), "a''b");
        let c = TableClient::new(
            reqwest::Client::new(),
            "http://127.0.0.1:10002/devstoreaccount1/",
            "tzkms",
            TableAuth::SharedKey {
                account: "devstoreaccount1".into(),
                key: crate::secret::Secret::new(vec![1]),
            },
        )
        .unwrap();
        assert_eq!(c.path_prefix, "/devstoreaccount1");
        assert_eq!(
            c.entity_path("tz1", "Net-block"),
            "/tzkms(PartitionKey='tz1',RowKey='Net-block')"
        );
        assert!(TableClient::new(
            reqwest::Client::new(),
            "x",
            "t",
            TableAuth::SharedKey {
                account: "a".into(),
                key: crate::secret::Secret::new(vec![])
            }
        )
        .is_err());
    }
}
