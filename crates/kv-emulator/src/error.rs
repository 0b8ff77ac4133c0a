//! Error values: Azure's data-plane error responses, Entra/IMDS OAuth errors, and emulator start-up failures.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A Key Vault / Managed HSM data-plane error, rendered as `{"error":{"code","message","innererror"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub inner_code: Option<&'static str>,
    /// `WWW-Authenticate` value for 401 responses.
    pub challenge: Option<String>,
    /// `Retry-After` seconds for 429 responses.
    pub retry_after: Option<u64>,
}

impl VaultError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        VaultError {
            status,
            code,
            message: message.into(),
            inner_code: None,
            challenge: None,
            retry_after: None,
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    pub fn key_not_found(name: &str, version: Option<&str>) -> Self {
        let id = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_owned(),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!(
                "A key with (name/id) {id} was not found in this key vault. If you recently deleted this key you \
                 may be able to recover it using the correct recovery command. For help resolving this issue, \
                 please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn forbidden(message: impl Into<String>, inner: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message).with_inner(inner)
    }

    pub fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner_code = Some(inner);
        self
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = self.inner_code {
            error["innererror"] = json!({ "code": inner });
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert("www-authenticate", challenge);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// An Entra ID (AADSTS) token endpoint error: `{"error","error_description","error_codes",...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub aadsts: u32,
    pub description: String,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        aadsts: u32,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            error,
            aadsts,
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let trace_id = crate::clock::request_id();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {trace_id} Timestamp: {}",
                self.aadsts,
                self.description,
                crate::clock::rfc3339_now()
            ),
            "error_codes": [self.aadsts],
            "timestamp": crate::clock::rfc3339_now(),
            "trace_id": trace_id,
            "correlation_id": trace_id,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A managed identity endpoint error (IMDS / App Service): `{"error","error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl IdentityError {
    pub(crate) fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        IdentityError {
            status,
            error,
            description: description.into(),
        }
    }
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot generate the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    #[error("persistence directory {path}: {source}")]
    Persist {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {message}")]
    CorruptState {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Why a direct (in-process) key helper call failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {}", .0.code, .0.message)]
    Vault(VaultError),
}

impl From<VaultError> for KeyError {
    fn from(e: VaultError) -> Self {
        KeyError::Vault(e)
    }
}
