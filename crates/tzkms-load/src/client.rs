//! The signer's client, shaped like octez-client's HTTP backend: for each signature `GET /authorized_keys`,
//! an authentication signature when the signer asks for one, then `POST /keys/<pkh>?version=3`; over a kept
//! connection or a new connection per request; HTTP or HTTPS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tezos::{BlsScheme, PublicKey, PublicKeyHash, SecretKey, Signature};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The `version` query parameter sent with every signing request (Ushuaia and later clients).
pub const SIGNATURE_VERSION: &str = "3";

/// The BLS scheme that [`SIGNATURE_VERSION`] selects, for verifying tz4 signatures.
pub const SCHEME: BlsScheme = BlsScheme::ProofOfPossession;

/// How the client uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// One kept-alive connection per simulated client.
    Reuse,
    /// A new connection for every HTTP request, as octez-client does.
    PerRequest,
}

/// The key the client authenticates its requests with, as octez-client does with a wallet key whose hash
/// is in the signer's `authorized_keys`.
#[derive(Debug)]
pub struct AuthKey {
    key: SecretKey,
}

impl AuthKey {
    pub fn new(key: SecretKey) -> Self {
        Self { key }
    }

    /// Reads a secret key file: bare base58 or octez-client's `unencrypted:` form.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = text.trim().trim_matches('"');
        let b58 = text.strip_prefix("unencrypted:").unwrap_or(text);
        let key: SecretKey = b58
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: not an unencrypted Tezos secret key: {e}", path.display()))?;
        Ok(Self::new(key))
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    pub fn pkh(&self) -> PublicKeyHash {
        self.key.public_key().hash()
    }

    /// The `authentication` query value: a signature of `0x04 0x01 ‖ pkh(21 bytes) ‖ payload`.
    pub fn authenticate(&self, pkh: &PublicKeyHash, payload: &[u8]) -> anyhow::Result<Signature> {
        let bytes = authentication_bytes(pkh, payload);
        self.key
            .sign(&bytes, BlsScheme::default())
            .map_err(|e| anyhow::anyhow!("authentication signature: {e}"))
    }
}

/// The bytes an authentication signature covers (protocol notes §1.6).
pub fn authentication_bytes(pkh: &PublicKeyHash, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(23 + payload.len());
    bytes.extend_from_slice(&[0x04, 0x01]);
    bytes.extend_from_slice(&pkh.to_binary());
    bytes.extend_from_slice(payload);
    bytes
}

/// What one signing attempt came to.
#[derive(Debug)]
pub enum Outcome {
    Signed(Signature),
    /// The signer answered with this status (of the GET or the POST).
    Status(u16),
    /// Connection, TLS or timeout failure, or an answer that is not what the protocol says.
    Failed(String),
}

impl Outcome {
    /// The label errors are counted under.
    pub fn label(&self) -> String {
        match self {
            Outcome::Signed(_) => "200".into(),
            Outcome::Status(s) => s.to_string(),
            Outcome::Failed(e) => {
                let kind = e.split(':').next().unwrap_or("failed");
                format!("failed ({kind})")
            }
        }
    }
}

/// Where the signer is and how to talk to it. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    pub connections: Connections,
    pub authorized_keys_get: bool,
    auth: Option<Arc<AuthKey>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// A simulated client's connection, kept between requests when connections are reused.
#[derive(Debug, Default)]
pub struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// `url` is `http://host:port` or `https://host:port` (a trailing `/` is ignored).
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        connections: Connections,
        authorized_keys_get: bool,
        auth: Option<Arc<AuthKey>>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("signer URL {url}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("signer URL {url}: expected http:// or https://"),
        };
        if uri.path().len() > 1 {
            anyhow::bail!("signer URL {url}: give the server's base URL, without a path");
        }
        let host = uri
            .host()
            .context("signer URL without a host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut roots = RootCertStore::empty();
            let path =
                ca_file.context("an https:// signer needs --ca-file (the CA that signed its certificate)")?;
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.with_context(|| format!("{}: bad PEM", path.display()))?)?;
            }
            let config = ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).context("server name")?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            tls,
            connections,
            authorized_keys_get,
            auth,
            timeout,
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .context("connect")?;
        tcp.set_nodelay(true).context("connect")?;
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .context("handshake")?;
                tokio::spawn(conn);
                Ok(sender)
            }
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.context("tls")?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .context("handshake")?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }

    /// One HTTP exchange. A kept connection that the server closed meanwhile is replaced once.
    async fn exchange(
        &self,
        conn: &mut Conn,
        method: hyper::Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let build = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(hyper::header::HOST, format!("{}:{}", self.host, self.port));
            if self.connections == Connections::PerRequest {
                request = request.header(hyper::header::CONNECTION, "close");
            }
            let body = match &body {
                Some(text) => {
                    request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                    Full::new(Bytes::from(text.clone()))
                }
                None => Full::new(Bytes::new()),
            };
            request.body(body).context("request")
        };
        let reused = conn.sender.as_ref().is_some_and(|s| !s.is_closed());
        let mut sender = match conn.sender.take().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => self.connect().await?,
        };
        let response = match ready_and_send(&mut sender, build()?).await {
            Ok(r) => r,
            Err(_) if reused => {
                sender = self.connect().await?;
                ready_and_send(&mut sender, build()?).await.context("send")?
            }
            Err(e) => return Err(e).context("send"),
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("receive")?
            .to_bytes();
        if self.connections == Connections::Reuse {
            conn.sender = Some(sender);
        }
        Ok((status, bytes))
    }

    /// `GET /keys/<pkh>`: the public key, checked against its hash.
    pub async fn public_key(&self, pkh: &PublicKeyHash) -> anyhow::Result<PublicKey> {
        let mut conn = Conn::default();
        let (status, body) = self
            .exchange(&mut conn, hyper::Method::GET, &format!("/keys/{pkh}"), None)
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "GET /keys/{pkh}: status {status}");
        let value: serde_json::Value = serde_json::from_slice(&body).context("GET /keys: not JSON")?;
        let text = value["public_key"].as_str().context("GET /keys: no public_key")?;
        let pk: PublicKey = text
            .parse()
            .map_err(|e| anyhow::anyhow!("GET /keys/{pkh}: bad public key {text}: {e}"))?;
        anyhow::ensure!(
            pk.hash() == *pkh,
            "GET /keys/{pkh} answered the key of {}",
            pk.hash()
        );
        Ok(pk)
    }

    /// One signature as octez-client asks for it. The whole exchange is bounded by the client's timeout.
    pub async fn sign(&self, conn: &mut Conn, pkh: &PublicKeyHash, payload: &[u8]) -> Outcome {
        match tokio::time::timeout(self.timeout, self.sign_inner(conn, pkh, payload)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                conn.sender = None;
                Outcome::Failed(format!("{e:#}"))
            }
            Err(_) => {
                conn.sender = None;
                Outcome::Failed("timeout".into())
            }
        }
    }

    async fn sign_inner(
        &self,
        conn: &mut Conn,
        pkh: &PublicKeyHash,
        payload: &[u8],
    ) -> anyhow::Result<Outcome> {
        let mut authenticate = self.auth.is_some() && !self.authorized_keys_get;
        if self.authorized_keys_get {
            let (status, body) = self
                .exchange(conn, hyper::Method::GET, "/authorized_keys", None)
                .await?;
            if status != StatusCode::OK {
                return Ok(Outcome::Status(status.as_u16()));
            }
            let value: serde_json::Value =
                serde_json::from_slice(&body).context("protocol: /authorized_keys is not JSON")?;
            if let Some(list) = value.get("authorized_keys").and_then(|v| v.as_array()) {
                let Some(auth) = &self.auth else {
                    anyhow::bail!("auth: the signer requires authentication; give --auth-key");
                };
                let ours = auth.pkh().to_string();
                if !list.iter().any(|k| k.as_str() == Some(ours.as_str())) {
                    anyhow::bail!("auth: {ours} is not among the signer's authorized keys");
                }
                authenticate = true;
            }
        }
        let mut query = format!("/keys/{pkh}?version={SIGNATURE_VERSION}");
        if authenticate {
            if let Some(auth) = &self.auth {
                query.push_str(&format!("&authentication={}", auth.authenticate(pkh, payload)?));
            }
        }
        let body = format!("\"{}\"", hex::encode(payload));
        let (status, body) = self
            .exchange(conn, hyper::Method::POST, &query, Some(body))
            .await?;
        if status != StatusCode::OK {
            return Ok(Outcome::Status(status.as_u16()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).context("protocol: answer is not JSON")?;
        let text = value["signature"]
            .as_str()
            .context("protocol: answer has no signature")?;
        let signature: Signature = text
            .parse()
            .map_err(|e| anyhow::anyhow!("protocol: bad signature {text}: {e}"))?;
        Ok(Outcome::Signed(signature))
    }
}

async fn ready_and_send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    sender.ready().await?;
    Ok(sender.send_request(request).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_signs_the_shared_vector_bytes() {
        let path = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../../shared/vectors/signatures.json");
        let text = std::fs::read_to_string(path).expect("vectors");
        let vectors: serde_json::Value = serde_json::from_str(&text).expect("json");
        let v = &vectors["authentication"][0];
        let key: SecretKey = v["authorized_key"]["sk"]
            .as_str()
            .expect("sk")
            .parse()
            .expect("sk");
        let pkh: PublicKeyHash = v["signer_pkh"].as_str().expect("pkh").parse().expect("pkh");
        let data = hex::decode(v["data_hex"].as_str().expect("data")).expect("hex");
        assert_eq!(
            hex::encode(authentication_bytes(&pkh, &data)),
            v["auth_bytes_hex"].as_str().expect("bytes")
        );
        let signature = AuthKey::new(key).authenticate(&pkh, &data).expect("sign");
        assert_eq!(signature.to_string(), v["signature"].as_str().expect("signature"));
    }
}
