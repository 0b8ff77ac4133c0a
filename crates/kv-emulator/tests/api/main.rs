//! The emulator over real loopback sockets (HTTP and HTTPS), one binary with a module per area.

mod control;
mod data_plane;
mod faults;
mod identity;
mod transport;
mod wrap;

use kv_emulator::{Config, Emulator};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const API: &str = "2025-07-01";

/// A running emulator plus a client that trusts it and holds a valid data-plane token.
#[derive(Debug)]
pub struct TestVault {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
    pub fn inner_code(&self) -> &str {
        self.body["error"]["innererror"]["code"]
            .as_str()
            .unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client_for(emu: &Emulator) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = emu.ca_pem() {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM"));
    }
    builder.build().expect("client")
}

impl TestVault {
    pub async fn start() -> TestVault {
        Self::start_with(Config::default()).await
    }

    pub async fn start_tls() -> TestVault {
        Self::start_with(Config {
            tls: true,
            ..Config::default()
        })
        .await
    }

    pub async fn start_with(config: Config) -> TestVault {
        let emu = Emulator::start(config).await.expect("emulator starts");
        let http = client_for(&emu);
        let token = emu.issue_token();
        TestVault { emu, http, token }
    }

    /// `{url}{path}?api-version=2025-07-01` (or with `&` if the path has a query).
    pub fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API}", self.emu.url())
    }

    pub async fn send(&self, method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request answered");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Authenticated data-plane call.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = self.url(path);
        self.send(method, &url, Some(&self.token), body).await
    }

    pub async fn create(&self, name: &str, crv: &str) -> Value {
        let r = self
            .call(
                Method::POST,
                &format!("/keys/{name}/create"),
                Some(serde_json::json!({ "kty": "EC-HSM", "crv": crv })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }

    pub async fn sign(&self, kid_path: &str, alg: &str, digest: &[u8]) -> Reply {
        self.call(
            Method::POST,
            &format!("{kid_path}/sign"),
            Some(serde_json::json!({ "alg": alg, "value": b64(digest) })),
        )
        .await
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .expect("base64url")
}

/// `/keys/{name}/{version}` from a full kid.
pub fn kid_path(kid: &str) -> String {
    let idx = kid.find("/keys/").expect("kid has /keys/");
    kid[idx..].to_owned()
}
